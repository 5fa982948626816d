"""ACME client of the end-to-end tests (crates/pki-tests/tests/acme.rs), on certbot's `acme`
library from PyPI: an independent implementation of RFC 8555 talking to `pki serve`.

    client.py enrol BASE KID HMAC EMAIL SIGN_CSR ENC_CSR OUTDIR
        account with External Account Binding (ES256 key), two orders for EMAIL finalized with the
        signing and the encryption CSR, both certificates downloaded to OUTDIR/{signing,encryption}.pem
    client.py refusals BASE KID HMAC EMAIL OTHER_CSR BOTH_CSR OUTSIDE_EMAIL
        every refusal the server must give, as one JSON object: case -> problem type
    client.py order-only BASE KID HMAC EMAIL
    client.py mta-enrol BASE KID HMAC EMAIL MTA MAILDIR DKIM_KEY SIGN_CSR ENC_CSR OUTDIR
        RFC 8823 through a real MTA: account with EAB, an order for EMAIL, the challenge mail read
        from the Maildir MAILDIR, the reply built from it and the challenge object, DKIM-signed with
        DKIM_KEY for EMAIL's domain (selector pki-test) and sent through the MTA (host:port), the
        order polled until ready, finalized with the signing CSR; a second order, for encryption,
        on the validation just made; both chains in OUTDIR; the times taken (seconds)
        account and one order; prints the order's and its authorization's status

Each command prints one JSON object on its last line.
"""
import base64
import datetime
import json
import sys

import josepy as jose
import requests
from acme import client, errors, messages
from cryptography.hazmat.primitives.asymmetric import ec, rsa

EMAIL = messages.IdentifierType("email")


def network(key, alg):
    return client.ClientNetwork(key, alg=alg, user_agent="pki-tests-acme", verify_ssl=False)


def account(base, kid, hmac, key=None, alg=jose.ES256, eab=True):
    key = key or jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = network(key, alg)
    directory = client.ClientV2.get_directory(base + "/acme/directory", net)
    acme = client.ClientV2(directory, net)
    binding = (
        messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(), kid=kid, hmac_key=hmac, directory=directory
        )
        if eab
        else None
    )
    reg = messages.NewRegistration.from_data(
        email="agent@example.com", terms_of_service_agreed=True, external_account_binding=binding
    )
    regr = acme.new_account(reg)
    return acme, regr, key


def order(acme, email, csr_pem):
    new = messages.NewOrder(identifiers=[messages.Identifier(typ=EMAIL, value=email)])
    resp = acme._post(acme.directory["newOrder"], new)
    body = messages.Order.from_json(resp.json())
    authzs = [acme._authzr_from_response(acme._post_as_get(u), uri=u) for u in body.authorizations]
    return messages.OrderResource(
        body=body, uri=resp.headers.get("Location"), authorizations=authzs, csr_pem=csr_pem
    )


def finalize(acme, orderr):
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
    return acme.finalize_order(orderr, deadline)


def problem(fn):
    """The ACME problem type a call fails with (or 'no error')."""
    try:
        fn()
    except messages.Error as e:
        return e.typ.rsplit(":", 1)[-1]
    except errors.Error as e:
        return "client error: " + str(e)
    return "no error"


def raw_post(url, body, ctype="application/jose+json"):
    r = requests.post(url, data=body, headers={"Content-Type": ctype}, timeout=30)
    kind = r.headers.get("Content-Type", "")
    try:
        typ = r.json().get("type", "").rsplit(":", 1)[-1]
    except ValueError:
        typ = "not json"
    return {"status": r.status_code, "content_type": kind, "type": typ}


def enrol(base, kid, hmac, email, sign_csr, enc_csr, outdir):
    acme, regr, _ = account(base, kid, hmac)
    out = {"account": regr.uri}
    for usage, path in (("signing", sign_csr), ("encryption", enc_csr)):
        csr = open(path, "rb").read()
        o = order(acme, email, csr)
        out[usage + "_authz"] = [a.body.status.name for a in o.authorizations]
        done = finalize(acme, o)
        with open(f"{outdir}/{usage}.pem", "w") as f:
            f.write(done.fullchain_pem)
        out[usage] = done.body.status.name
    return out


def refusals(base, kid, hmac, email, other_csr, both_csr, outside):
    out = {}
    # No External Account Binding.
    out["no eab"] = problem(lambda: account(base, kid, hmac, eab=False))
    acme, regr, key = account(base, kid, hmac)
    # The same EAB key a second time, for another account key.
    out["eab reused"] = problem(lambda: account(base, kid, hmac))
    # A reused nonce: one nonce, two requests.
    net = acme.net
    nonce = net._get_nonce(acme.directory["newOrder"], acme.directory["newNonce"])
    new = messages.NewOrder(identifiers=[messages.Identifier(typ=EMAIL, value=email)])
    first = raw_post(acme.directory["newOrder"], net._wrap_in_jws(new, nonce, acme.directory["newOrder"]))
    out["first use of a nonce"] = first["status"]
    out["reused nonce"] = raw_post(
        acme.directory["newOrder"], net._wrap_in_jws(new, nonce, acme.directory["newOrder"])
    )["type"]
    # A bad signature: the last bytes of the signature changed.
    nonce = net._get_nonce(acme.directory["newOrder"], acme.directory["newNonce"])
    jws = json.loads(net._wrap_in_jws(new, nonce, acme.directory["newOrder"]))
    sig = jose.b64.b64decode(jws["signature"])
    jws["signature"] = jose.b64.b64encode(sig[:-1] + bytes([sig[-1] ^ 1])).decode()
    bad = raw_post(acme.directory["newOrder"], json.dumps(jws))
    out["bad signature"] = bad["type"]
    out["bad signature status"] = bad["status"]
    # A CSR for another address, a CSR asking for both usages.
    out["csr for another address"] = problem(lambda: finalize(acme, order(acme, email, open(other_csr, "rb").read())))
    out["csr with both usages"] = problem(lambda: finalize(acme, order(acme, email, open(both_csr, "rb").read())))
    # An address outside the enterprise domains has no valid authorization yet: not ready.
    o = order(acme, outside, open(other_csr, "rb").read())
    out["outside authz"] = [a.body.status.name for a in o.authorizations]
    out["outside challenges"] = [
        c["type"] for a in o.authorizations for c in acme._post_as_get(a.uri).json()["challenges"]
    ]
    out["outside finalize"] = problem(lambda: acme.begin_finalization(o))
    # Another identifier type.
    dns = messages.NewOrder(identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="example.com")])
    out["dns identifier"] = problem(lambda: acme._post(acme.directory["newOrder"], dns))
    # Garbage, truncated and oversized bodies, wrong content types, unknown URLs.
    url = acme.directory["newOrder"]
    out["garbage"] = raw_post(url, b"\x00\xff garbage")
    out["truncated"] = raw_post(url, net._wrap_in_jws(new, b"\x00" * 16, url)[:40])
    out["oversized"] = raw_post(url, b"{" + b" " * (2 << 20) + b"}")
    out["wrong content type"] = raw_post(url, b"{}", ctype="application/json")
    out["unknown url"] = raw_post(base + "/acme/no-such-thing", b"{}")
    # A protected header whose alg is 9,000 characters: the problem quotes it cut in the middle.
    nonce = requests.head(acme.directory["newNonce"], timeout=30).headers["Replay-Nonce"]
    header = {"alg": "X" * 9000, "nonce": nonce, "url": url, "jwk": {"kty": "EC"}}
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    jws = {"protected": b64(json.dumps(header).encode()), "payload": "", "signature": "AA"}
    r = requests.post(url, data=json.dumps(jws), headers={"Content-Type": "application/jose+json"}, timeout=30)
    out["long alg"] = {"status": r.status_code, "length": len(r.content), "detail": r.json().get("detail", "")}
    r = requests.get(base + "/acme/new-order", timeout=30)
    out["get on a POST resource"] = {
        "status": r.status_code,
        "content_type": r.headers.get("Content-Type", ""),
        "allow": r.headers.get("Allow", ""),
    }
    r = requests.put(acme.directory["newNonce"], timeout=30)
    out["put on the nonce resource"] = {"status": r.status_code, "allow": r.headers.get("Allow", "")}
    # A POST to a GET resource, with a JWS body: refused by its method, before its body is read.
    r = requests.post(acme.directory["newNonce"], data=b"{}", headers={"Content-Type": "application/jose+json"}, timeout=30)
    out["post on the nonce resource"] = {"status": r.status_code, "allow": r.headers.get("Allow", "")}
    r = requests.post(base + "/acme/directory", data=b"\x00" * 100, headers={"Content-Type": "text/plain"}, timeout=30)
    out["post on the directory"] = {"status": r.status_code, "allow": r.headers.get("Allow", "")}
    # Still serving: a new nonce and the directory.
    out["still serving"] = requests.head(acme.directory["newNonce"], timeout=30).status_code
    return out


def lifecycle(base, kid, hmac, email, csr_path, key_path):
    """Revocation by the account and by the certificate's key, key rollover, deactivation, the
    per-account rate limit."""
    from acme import jws as acme_jws
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    out = {}
    acme, regr, old_key = account(base, kid, hmac)
    csr = open(csr_path, "rb").read()
    first = finalize(acme, order(acme, email, csr))
    cert = x509.load_pem_x509_certificate(first.fullchain_pem.encode())
    out["revoke by account"] = problem(lambda: acme.revoke(cert, 4))
    out["revoke twice"] = problem(lambda: acme.revoke(cert, 4))
    second = finalize(acme, order(acme, email, csr))
    cert2 = x509.load_pem_x509_certificate(second.fullchain_pem.encode())
    cert_key = jose.JWKEC(key=load_pem_private_key(open(key_path, "rb").read(), None))
    by_key = client.ClientV2(acme.directory, network(cert_key, jose.ES256))
    stranger = client.ClientV2(acme.directory, network(jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1())), jose.ES256))
    out["revoke by another key"] = problem(lambda: stranger.revoke(cert2, 1))
    out["revoke by the certificate key"] = problem(lambda: by_key.revoke(cert2, 1))
    out["bad reason"] = problem(lambda: acme.revoke(cert2, 7))
    # Key rollover: the inner JWS by the new key over the account URL and the old key.
    new_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    url = acme.directory["keyChange"]
    inner_payload = json.dumps({"account": regr.uri, "oldKey": old_key.public_key().to_partial_json()}).encode()
    inner = acme_jws.JWS.sign(inner_payload, new_key, jose.ES256, None, url=url)
    out["key change"] = acme.net.post(url, inner).status_code
    out["old key after rollover"] = problem(lambda: acme._post_as_get(regr.uri))
    acme.net.key = new_key
    out["new key after rollover"] = acme._post_as_get(regr.uri).status_code
    # The per-account rate limit ([acme] orders_per_minute).
    limited = "no error"
    for n in range(20):
        limited = problem(lambda: order(acme, email, csr))
        if limited != "no error":
            out["orders before the limit"] = n
            break
    out["rate limit"] = limited
    # Deactivation: the account can do nothing afterwards.
    acme.deactivate_registration(regr)
    out["after deactivation"] = problem(lambda: order(acme, email, csr))
    return out


def expiry_start(base, kid, hmac, email, key_file):
    acme, regr, key = account(base, kid, hmac)
    open(key_file, "w").write(json.dumps(key.to_json()))
    o = order(acme, email, b"")
    return {"order": o.uri, "account": regr.uri, "authz": [a.body.status.name for a in o.authorizations]}


def expiry_check(base, key_file, order_url, csr_path):
    acme, key = existing(base, key_file)
    body = messages.Order.from_json(acme._post_as_get(order_url).json())
    authz = acme._post_as_get(body.authorizations[0]).json()
    out = {"order": body.status.name, "authz": authz["status"]}
    out["challenge"] = [c["status"] for c in authz["challenges"]]
    orderr = messages.OrderResource(body=body, uri=order_url, csr_pem=open(csr_path, "rb").read())
    out["finalize"] = problem(lambda: acme.begin_finalization(orderr))
    return out


def reply(smtp, sender, to, token1, response, key_file, domain, top_headers=""):
    """Sends a reply to a challenge mail, DKIM-signed by key_file for domain (selector pki-test)
    unless key_file is `none`, through SMTP to smtp (host:port), with top_headers (lines separated
    by newlines, say Authentication-Results) above everything; prints the server's answer."""
    import smtplib
    import dkim

    msg = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Re: ACME: {token1}\r\n"
        f"Message-ID: <{token1[:8]}.reply@{domain}>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"-----BEGIN ACME RESPONSE-----\r\n{response}\r\n-----END ACME RESPONSE-----\r\n"
    ).encode()
    if key_file != "none":
        sig = dkim.sign(msg, b"pki-test", domain.encode(), open(key_file, "rb").read(),
                        include_headers=[b"from", b"to", b"subject", b"message-id", b"date"])
        msg = sig + msg
    if top_headers:
        msg = "".join(h + "\r\n" for h in top_headers.split("\n")).encode() + msg
    host, port = smtp.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as s:
        code, text = s.ehlo()
        s.sendmail(sender, [to], msg)
    return {"sent": True}


class EmptyObject:
    """The payload `{}` (RFC 8555 §7.5.1: the client says it is ready for the challenge)."""

    def json_dumps(self, **_kwargs):
        return "{}"

    def __bool__(self):
        return True


def challenge_mail(maildir, address, seen, deadline):
    """The first message in the Maildir delivered to `address` whose subject is `ACME: ...`."""
    import email.parser
    import email.policy
    import os
    import time

    while time.monotonic() < deadline:
        for sub in ("new", "cur"):
            d = os.path.join(maildir, sub)
            for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                path = os.path.join(d, name)
                if path in seen:
                    continue
                with open(path, "rb") as f:
                    m = email.parser.BytesParser(policy=email.policy.default).parse(f)
                if m.get("Delivered-To", "").lower() == address.lower() and str(m.get("Subject", "")).startswith("ACME: "):
                    seen.add(path)
                    return m
        time.sleep(0.02)
    raise SystemExit(f"no challenge mail for {address} in {maildir}")


def signed_reply(challenge, address, response, key_file):
    """The RFC 8823 §3.2 reply to the challenge mail, DKIM-signed for the domain of `address`."""
    import email.utils
    import dkim

    domain = address.rsplit("@", 1)[1]
    subject = str(challenge["Subject"])
    msg = (
        f"From: {address}\r\nTo: {challenge['From']}\r\nSubject: Re: {subject}\r\n"
        f"In-Reply-To: {challenge['Message-ID']}\r\nReferences: {challenge['Message-ID']}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain=domain)}\r\nDate: {email.utils.formatdate()}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"-----BEGIN ACME RESPONSE-----\r\n{response}\r\n-----END ACME RESPONSE-----\r\n"
    ).encode()
    sig = dkim.sign(msg, b"pki-test", domain.encode(), open(key_file, "rb").read(),
                    include_headers=[b"from", b"to", b"subject", b"message-id", b"date", b"in-reply-to"])
    return sig + msg


def mta_enrol(base, kid, hmac, address, mta, maildir, key_file, sign_csr, enc_csr, outdir):
    import hashlib
    import smtplib
    import time

    acme, regr, key = account(base, kid, hmac)
    out = {}
    seen = set()
    started = time.monotonic()

    def step(what):
        # On stderr, so that a run stopped by the test's timeout shows how far it got.
        print(f"[{time.monotonic() - started:7.2f} s] {what}", file=sys.stderr, flush=True)

    # Before the order: the CA mails the challenge while it makes the order.
    t_order = time.monotonic()
    o = order(acme, address, open(sign_csr, "rb").read())
    t_created = time.monotonic()
    authz = o.authorizations[0]
    out["authz before"] = authz.body.status.name
    challenge = acme._post_as_get(authz.uri).json()["challenges"][0]
    m = challenge_mail(maildir, address, seen, time.monotonic() + 60)
    t_arrived = time.monotonic()
    step("challenge mail in the mailbox")
    token1 = str(m["Subject"])[len("ACME: "):].strip()
    out["challenge mail"] = {
        "from": str(m["From"]),
        "auto-submitted": str(m.get("Auto-Submitted", "")),
        "challenge from": challenge.get("from"),
    }
    # RFC 8823 §3.1: the key authorization of token-part1 || token-part2, its SHA-256 in base64url.
    thumb = jose.b64.b64encode(key.thumbprint()).decode()
    key_authz = f"{token1}{challenge['token']}.{thumb}"
    response = jose.b64.b64encode(hashlib.sha256(key_authz.encode()).digest()).decode()
    reply_to = str(m.get("Reply-To") or m["From"])
    host, port = mta.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as s:
        s.sendmail(address, [reply_to], signed_reply(m, address, response, key_file))
    t_replied = time.monotonic()
    step("reply handed to the MTA")
    # The client says it replied (RFC 8823 §3: a POST of {} to the challenge).
    acme._post(challenge["url"], EmptyObject())
    deadline = time.monotonic() + 60
    while True:
        body = acme._post_as_get(o.uri).json()
        if body["status"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    t_ready = time.monotonic()
    out["order after reply"] = body["status"]
    out["authz after reply"] = acme._post_as_get(authz.uri).json()["status"]
    step(f"order {body['status']}, authorization {out['authz after reply']}")
    o = messages.OrderResource(body=messages.Order.from_json(body), uri=o.uri, csr_pem=o.csr_pem)
    done = finalize(acme, o)
    t_valid = time.monotonic()
    step("signing certificate issued")
    with open(f"{outdir}/signing.pem", "w") as f:
        f.write(done.fullchain_pem)
    out["signing"] = done.body.status.name
    # The encryption certificate: a new order, its authorization valid on the validation just made.
    o2 = order(acme, address, open(enc_csr, "rb").read())
    out["encryption authz"] = [a.body.status.name for a in o2.authorizations]
    done2 = finalize(acme, o2)
    with open(f"{outdir}/encryption.pem", "w") as f:
        f.write(done2.fullchain_pem)
    out["encryption"] = done2.body.status.name
    out["seconds"] = {
        "order request to order created (mail handed to the MTA)": round(t_created - t_order, 4),
        "order request to challenge in the mailbox": round(t_arrived - t_order, 4),
        "reply sent to order ready": round(t_ready - t_replied, 4),
        "order request to order ready": round(t_ready - t_order, 4),
        "order request to order valid": round(t_valid - t_order, 4),
    }
    return out


def existing(base, key_file):
    """The client of the account whose key is in key_file."""
    key = jose.JWKEC.from_json(json.loads(open(key_file).read()))
    net = network(key, jose.ES256)
    directory = client.ClientV2.get_directory(base + "/acme/directory", net)
    acme = client.ClientV2(directory, net)
    try:
        acme.new_account(messages.NewRegistration(only_return_existing=True))
    except errors.ConflictError as e:
        net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
    return acme, key


def mail_responses(base, key_file, maildir, orders_json):
    """For each address -> order URL of orders_json: the challenge mail read from the Maildir and
    the challenge object; prints address -> [token-part1, the RFC 8823 response]."""
    import hashlib
    import time

    acme, key = existing(base, key_file)
    thumb = jose.b64.b64encode(key.thumbprint()).decode()
    out, seen = {}, set()
    for address, url in json.loads(orders_json).items():
        body = acme._post_as_get(url).json()
        challenge = acme._post_as_get(body["authorizations"][0]).json()["challenges"][0]
        m = challenge_mail(maildir, address, seen, time.monotonic() + 60)
        token1 = str(m["Subject"])[len("ACME: "):].strip()
        key_authz = f"{token1}{challenge['token']}.{thumb}"
        out[address] = [token1, jose.b64.b64encode(hashlib.sha256(key_authz.encode()).digest()).decode()]
    return out


def raw_smtp(smtp, to, data_hex):
    """Sends arbitrary bytes as a message; the server's answer to the end of DATA."""
    import smtplib
    host, port = smtp.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as s:
        s.ehlo()
        s.mail("someone@example.net")
        s.rcpt(to)
        try:
            code, text = s.data(bytes.fromhex(data_hex) if data_hex != "huge" else (b"x" * 78 + b"\r\n") * 4000)
        except smtplib.SMTPDataError as e:
            code = e.smtp_code
    return {"code": code}


def status(base, key_file, order_url):
    acme, key = existing(base, key_file)
    body = acme._post_as_get(order_url).json()
    authz = acme._post_as_get(body["authorizations"][0]).json()
    ch = authz["challenges"][0] if authz["challenges"] else {}
    return {
        "order": body["status"],
        "authz": authz["status"],
        "challenge": ch.get("status"),
        "error": ch.get("error", {}).get("type", "").rsplit(":", 1)[-1],
    }


def orders(base, kid, hmac, key_file, *emails):
    acme, regr, key = account(base, kid, hmac)
    open(key_file, "w").write(json.dumps(key.to_json()))
    return {e: order(acme, e, b"").uri for e in emails}


def order_refused(base, key_file, email):
    """A new order for email on the account whose key is in key_file: its problem's type and
    detail (or 'no error')."""
    acme, key = existing(base, key_file)
    try:
        order(acme, email, b"")
    except messages.Error as e:
        return {"type": e.typ.rsplit(":", 1)[-1], "detail": e.detail}
    return {"type": "no error"}


def finalize_existing(base, key_file, order_url, csr_path, out):
    acme, key = existing(base, key_file)
    body = messages.Order.from_json(acme._post_as_get(order_url).json())
    orderr = messages.OrderResource(body=body, uri=order_url, csr_pem=open(csr_path, "rb").read())
    done = finalize(acme, orderr)
    open(out, "w").write(done.fullchain_pem)
    return {"order": done.body.status.name}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "enrol":
        result = enrol(*args)
    elif cmd == "refusals":
        result = refusals(*args)
    elif cmd == "lifecycle":
        result = lifecycle(*args)
    elif cmd == "expiry-start":
        result = expiry_start(*args)
    elif cmd == "expiry-check":
        result = expiry_check(*args)
    elif cmd == "reply":
        result = reply(*args)
    elif cmd == "mail-responses":
        result = mail_responses(*args)
    elif cmd == "mta-enrol":
        result = mta_enrol(*args)
    elif cmd == "raw-smtp":
        result = raw_smtp(*args)
    elif cmd == "status":
        result = status(*args)
    elif cmd == "orders":
        result = orders(*args)
    elif cmd == "finalize-existing":
        result = finalize_existing(*args)
    elif cmd == "order-refused":
        result = order_refused(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
