"""ACME client of the end-to-end tests (crates/pki-tests/tests/acme.rs), on certbot's `acme`
library from PyPI: an independent implementation of RFC 8555 talking to `pki serve`.

    client.py enrol BASE KID HMAC EMAIL SIGN_CSR ENC_CSR OUTDIR
        account with External Account Binding (ES256 key), two orders for EMAIL finalized with the
        signing and the encryption CSR, both certificates downloaded to OUTDIR/{signing,encryption}.pem
    client.py refusals BASE KID HMAC EMAIL OTHER_CSR BOTH_CSR OUTSIDE_EMAIL
        every refusal the server must give, as one JSON object: case -> problem type
    client.py order-only BASE KID HMAC EMAIL
        account and one order; prints the order's and its authorization's status

Each command prints one JSON object on its last line.
"""
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
    r = requests.get(base + "/acme/new-order", timeout=30)
    out["get on a POST resource"] = {"status": r.status_code, "content_type": r.headers.get("Content-Type", "")}
    # Still serving: a new nonce and the directory.
    out["still serving"] = requests.head(acme.directory["newNonce"], timeout=30).status_code
    return out


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "enrol":
        result = enrol(*args)
    elif cmd == "refusals":
        result = refusals(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
