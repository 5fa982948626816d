//! ACME enrolment (issue 17), driven by certbot's `acme` library from PyPI against the real
//! `pki serve`, and mailbox validation on `pki issue`.
//!
//! What runs here: an account with External Account Binding, orders for an `email` identifier,
//! finalization with a signing and an encryption CSR, the certificates downloaded and checked by
//! `openssl verify -purpose smimesign`, the encryption certificate found by the directory at once;
//! the refusals, each with its ACME problem type; garbage, truncated and oversized bodies, wrong
//! content types and unknown URLs answered with problem documents while the server keeps serving.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use pki_tests::*;

/// The address of `case` in this test: of this run only, as the Maildir is shared by the tests
/// of the run.
fn case_address(env: &Env, case: &str) -> String {
    format!("{case}.{}@customer.test", env.port)
}

/// Orders made by one account for the addresses of some cases, and their challenges as read from
/// the mailbox Postfix delivered the challenge mails to.
struct MailedOrders {
    /// The account's key file.
    keyfile: String,
    /// The server's base URL.
    base: String,
    /// Order URL by address.
    orders: serde_json::Value,
    /// Token part 1 and the expected response by address, from the challenge mails.
    responses: serde_json::Value,
}

/// A new account (External Account Binding key `label`) orders [`case_address`] of each case;
/// the challenge mails are read from `maildir`.
fn order_and_read_challenges(
    env: &Env,
    server: &Server,
    maildir: &std::path::Path,
    label: &str,
    cases: &[&str],
) -> MailedOrders {
    let (kid, hmac) = acme_eab(env, label);
    let keyfile = env.path("account.json").display().to_string();
    let emails: Vec<String> = cases.iter().map(|c| case_address(env, c)).collect();
    let base = server.url("");
    let mut args = vec!["orders", base.as_str(), kid.as_str(), hmac.as_str(), keyfile.as_str()];
    args.extend(emails.iter().map(String::as_str));
    let orders = acme_client(&args);
    let responses = acme_client(&[
        "mail-responses",
        &base,
        &keyfile,
        &maildir.display().to_string(),
        &orders.to_string(),
    ]);
    MailedOrders { keyfile, base, orders, responses }
}

const ACME_CONFIG: &str =
    "[acme]\nenterprise_preauthorized = true\nchallenge_from = \"acme-challenge@example.com\"\n";

#[test]
fn an_independent_client_enrols_a_mailbox_for_signing_and_encryption() {
    let env = Env::with_config(ACME_CONFIG);
    env.init();
    let server = env.serve();
    let (kid, hmac) = acme_eab(&env, "device agent of alice");
    let sign = mailbox_csr(&env, "sign", KeySpec::P256, "alice@example.com", "digitalSignature");
    let enc = mailbox_csr(&env, "enc", KeySpec::Rsa(2048), "alice@example.com", "keyEncipherment");
    let out = env.dir().display().to_string();
    let result =
        acme_client(&["enrol", &server.url(""), &kid, &hmac, "alice@example.com", &sign, &enc, &out]);
    assert_eq!(result["signing"], "valid", "{result}");
    assert_eq!(result["encryption"], "valid", "{result}");
    assert_eq!(result["signing_authz"], serde_json::json!(["valid"]), "{result}");

    // Both certificates chain to the root; the signing one is fit for S/MIME signing.
    let files = env.ca_files();
    for usage in ["signing", "encryption"] {
        let chain = std::fs::read_to_string(env.path(&format!("{usage}.pem"))).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "leaf and issuing CA: {chain}");
    }
    for (usage, purpose) in [("signing", "smimesign"), ("encryption", "smimeencrypt")] {
        let v = openssl_try([
            "verify".to_string(),
            "-purpose".into(),
            purpose.into(),
            "-CAfile".into(),
            files.root.display().to_string(),
            "-untrusted".into(),
            files.issuing.display().to_string(),
            env.path(&format!("{usage}.pem")).display().to_string(),
        ]);
        assert!(v.status.success() && v.stdout.contains(": OK"), "{usage}: {} {}", v.stdout, v.stderr);
    }

    // The directory finds the encryption certificate at once.
    let (status, body) =
        http_get(env.port, "/api/v1/certificates?email=alice%40example.com&usage=encryption")
            .expect("directory answers");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let enc_pem = std::fs::read_to_string(env.path("encryption.pem")).unwrap();
    let leaf = pem_der(&enc_pem);
    assert!(
        contains_bytes(&body, &leaf) || String::from_utf8_lossy(&body).contains(&enc_pem[..200]),
        "the directory's answer is the certificate downloaded"
    );

    // The EAB key is used up by the account it bound.
    let list = env.pki(["acme", "eab", "list"]).stdout;
    assert!(
        list.contains(&kid) && list.contains("bound account") && list.contains("device agent of alice"),
        "{list}"
    );
    server.stop();
}

#[test]
fn refusals_carry_their_problem_types_and_the_server_keeps_serving() {
    let env = Env::with_config(ACME_CONFIG);
    env.init();
    let server = env.serve();
    let (kid, hmac) = acme_eab(&env, "refusals");
    let other = mailbox_csr(&env, "other", KeySpec::P256, "mallory@example.com", "digitalSignature");
    let both =
        mailbox_csr(&env, "both", KeySpec::Rsa(2048), "bob@example.com", "digitalSignature,keyEncipherment");
    let before = env.list_serials().len();
    let r = acme_client(&[
        "refusals",
        &server.url(""),
        &kid,
        &hmac,
        "bob@example.com",
        &other,
        &both,
        "carol@customer.test",
    ]);
    assert_eq!(r["no eab"], "externalAccountRequired", "{r}");
    assert_eq!(r["eab reused"], "unauthorized", "{r}");
    assert_eq!(r["first use of a nonce"], 201, "{r}");
    assert_eq!(r["reused nonce"], "badNonce", "{r}");
    assert_eq!(r["bad signature"], "malformed", "{r}");
    assert_eq!(r["bad signature status"], 400, "{r}");
    assert_eq!(r["csr for another address"], "badCSR", "{r}");
    assert_eq!(r["csr with both usages"], "badCSR", "{r}");
    assert_eq!(r["outside authz"], serde_json::json!(["pending"]), "{r}");
    assert_eq!(r["outside challenges"], serde_json::json!(["email-reply-00"]), "{r}");
    assert_eq!(r["outside finalize"], "orderNotReady", "{r}");
    assert_eq!(r["dns identifier"], "unsupportedIdentifier", "{r}");
    for (case, status) in [
        ("garbage", 400),
        ("truncated", 400),
        ("oversized", 413),
        ("wrong content type", 415),
        ("unknown url", 404),
    ] {
        assert_eq!(r[case]["status"], status, "{case}: {r}");
        assert_eq!(r[case]["content_type"], "application/problem+json", "{case}: {r}");
        assert!(!r[case]["type"].as_str().unwrap_or_default().is_empty(), "{case}: {r}");
    }
    assert_eq!(r["long alg"]["status"], 400, "{r}");
    let detail = r["long alg"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("characters left out)…") && detail.ends_with("accepted are ES256, RS256, EdDSA"),
        "{r}"
    );
    assert!(r["long alg"]["length"].as_u64().unwrap_or(u64::MAX) < 1200, "{r}");
    assert_eq!(r["get on a POST resource"]["status"], 405, "{r}");
    assert_eq!(r["get on a POST resource"]["content_type"], "application/problem+json", "{r}");
    assert_eq!(r["get on a POST resource"]["allow"], "POST", "{r}");
    assert_eq!(r["put on the nonce resource"]["status"], 405, "{r}");
    assert_eq!(r["put on the nonce resource"]["allow"], "GET, HEAD", "{r}");
    for case in ["post on the nonce resource", "post on the directory"] {
        assert_eq!(
            (&r[case]["status"], &r[case]["allow"]),
            (&serde_json::json!(405), &serde_json::json!("GET, HEAD")),
            "{case}: {r}"
        );
    }
    assert_eq!(r["still serving"], 200, "{r}");
    // Nothing was issued.
    assert_eq!(env.list_serials().len(), before, "no certificate issued by a refused request");
    server.stop();
}

/// With the issuing CA compromised, the ACME server takes no new order (it could not finish it):
/// `serverInternal` with status 503 and a detail naming the compromise, not a bare internal error.
#[test]
fn a_compromised_issuing_ca_takes_no_new_order() {
    let env = Env::with_config(ACME_CONFIG);
    env.init();
    let server = env.serve();
    let (kid, hmac) = acme_eab(&env, "orders");
    let keyfile = env.path("account.json").display().to_string();
    let base = server.url("");
    let orders = acme_client(&["orders", &base, &kid, &hmac, &keyfile, "ann@example.com"]);
    assert!(orders["ann@example.com"].is_string(), "{orders}");
    env.pki(["ca", "compromise", "--ca", "issuing", "--confirm", "compromise issuing"]);
    let r = acme_client(&["order-refused", &base, &keyfile, "ann@example.com"]);
    assert_eq!(r["type"], "serverInternal", "{r}");
    assert!(r["detail"].as_str().unwrap_or_default().contains("pki ca compromise"), "{r}");
    server.stop();
}

#[test]
fn a_revoked_eab_key_binds_no_account() {
    let env = Env::with_config(ACME_CONFIG);
    env.init();
    let server = env.serve();
    let (kid, hmac) = acme_eab(&env, "lost laptop");
    env.pki(["acme", "eab", "revoke", "--kid", &kid]);
    let list = env.pki(["acme", "eab", "list"]).stdout;
    assert!(list.contains(&kid) && list.contains("revoked"), "{list}");
    let sign = mailbox_csr(&env, "sign", KeySpec::P256, "alice@example.com", "digitalSignature");
    let py = require_tool("python3", "apt-get install -y python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/acme/client.py");
    let dir = env.dir().display().to_string();
    let out = run(Command::new(py).arg(script).args([
        "enrol",
        &server.url(""),
        &kid,
        &hmac,
        "alice@example.com",
        &sign,
        &sign,
        &dir,
    ]));
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stderr.contains("unauthorized") && out.stderr.contains("revoked"), "{}", out.stderr);
    server.stop();
}

#[test]
fn pki_issue_needs_a_validated_mailbox_outside_the_enterprise_domains() {
    let env = Env::with_config("[validation]\nenterprise_domains = [\"example.com\"]\n");
    env.init();
    let key = gen_key(env.dir(), "k", KeySpec::P256);
    let outside = make_csr(&key, &env.path("out.csr"), "/CN=carol@customer.test", &[]);
    let line = env.pki_fails(
        [
            "issue",
            "--email",
            "carol@customer.test",
            "--usage",
            "signing",
            "--csr",
            &outside.display().to_string(),
        ],
        &["carol@customer.test", "not validated", "pki validate send"],
    );
    assert!(line.contains("never validated"), "{line}");
    // A wrong value is refused and validates nothing.
    let bad = env.pki_fails(
        [
            "validate",
            "confirm",
            "--email",
            "carol@customer.test",
            "--code",
            "00000000000000000000000000000000",
        ],
        &["no value is pending"],
    );
    assert!(bad.contains("pki validate send"), "{bad}");
    // Without a relay, sending says what to configure.
    env.pki_fails(["validate", "send", "--email", "carol@customer.test"], &["[mail.relay] host"]);
    // Inside the enterprise domain: issued, and the audit entry names the rule.
    let inside = make_csr(&key, &env.path("in.csr"), "/CN=alice@example.com", &[]);
    env.pki([
        "issue",
        "--email",
        "alice@example.com",
        "--usage",
        "signing",
        "--csr",
        &inside.display().to_string(),
    ]);
    let list = env.pki(["validations", "list"]).stdout;
    assert!(list.contains("*@example.com  enterprise-domain"), "{list}");
    let entries = audit_entries(&env);
    assert!(
        entries.iter().any(|e| e.contains("alice@example.com signing")
            && e.contains("mailbox: enterprise domain example.com (S/MIME BR 3.2.2.1)")),
        "{entries:#?}"
    );
    assert!(
        entries.iter().any(|e| e.contains("carol@customer.test signing") && e.contains("refused")),
        "the refusal is in the audit log: {entries:#?}"
    );
}

/// A relay that does not take the mail: `pki validate send` fails in one line naming the address,
/// no value stays pending (nothing undelivered could be confirmed), and the audit entry says the
/// value was not sent.
#[test]
fn a_value_the_relay_does_not_take_is_withdrawn_and_audited_as_not_sent() {
    // A loopback port with nothing listening: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = Env::with_config(&format!(
        "[validation]\nenterprise_domains = [\"example.com\"]\n\n\
         [mail.relay]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"pki@example.com\"\n"
    ));
    env.init();
    let line = env.pki_fails(
        ["validate", "send", "--email", "dave@customer.test"],
        &["could not be mailed to dave@customer.test"],
    );
    assert_eq!(line.lines().count(), 1, "{line}");
    env.pki_fails(
        [
            "validate",
            "confirm",
            "--email",
            "dave@customer.test",
            "--code",
            "00000000000000000000000000000000",
        ],
        &["no value is pending"],
    );
    let entries = audit_entries(&env);
    assert!(
        entries.iter().any(|e| e.contains("dave@customer.test value not sent") && e.contains("refused")),
        "{entries:#?}"
    );
    assert!(!entries.iter().any(|e| e.contains("dave@customer.test value sent")), "{entries:#?}");

    // A relay that takes the connection and never answers: refused after `timeout_secs`, named so
    // (it said "network error: Resource temporarily unavailable (os error 11)").
    let silent_port = pki_tests::raw_tcp::silent_port();
    let env = Env::with_config(&format!(
        "[validation]\nenterprise_domains = [\"example.com\"]\n\n\
         [mail.relay]\nhost = \"127.0.0.1\"\nport = {silent_port}\ntls = \"none\"\ntimeout_secs = 1\n"
    ));
    env.init();
    let start = std::time::Instant::now();
    env.pki_fails(
        ["validate", "send", "--email", "erin@customer.test"],
        &[
            "could not be mailed to erin@customer.test",
            "did not answer within 1 s ([mail.relay] timeout_secs)",
        ],
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", start.elapsed());
}

#[test]
fn revocation_rollover_deactivation_and_the_rate_limit() {
    let env = Env::with_config(&format!("{ACME_CONFIG}orders_per_minute = 6\n"));
    env.init();
    let server = env.serve();
    let (kid, hmac) = acme_eab(&env, "lifecycle");
    let sign = mailbox_csr(&env, "sign", KeySpec::P256, "dave@example.com", "digitalSignature");
    let key = env.path("sign").display().to_string();
    let r = acme_client(&["lifecycle", &server.url(""), &kid, &hmac, "dave@example.com", &sign, &key]);
    assert_eq!(r["revoke by account"], "no error", "{r}");
    assert_eq!(r["revoke twice"], "alreadyRevoked", "{r}");
    assert_eq!(r["revoke by another key"], "unauthorized", "{r}");
    assert_eq!(r["revoke by the certificate key"], "no error", "{r}");
    assert_eq!(r["bad reason"], "badRevocationReason", "{r}");
    assert_eq!(r["key change"], 200, "{r}");
    assert_eq!(r["old key after rollover"], "malformed", "{r}");
    assert_eq!(r["new key after rollover"], 200, "{r}");
    assert_eq!(r["rate limit"], "rateLimited", "{r}");
    // Two orders and two finalizations before: six a minute, refilled as the seconds pass.
    let before = r["orders before the limit"].as_u64().unwrap();
    assert!((2..=3).contains(&before), "{r}");
    assert_eq!(r["after deactivation"], "unauthorized", "{r}");
    // Both certificates are revoked, as `pki list` shows.
    let list = env.pki(["list", "--email", "dave@example.com"]).stdout;
    assert_eq!(list.matches("revoked").count(), 2, "{list}");
    server.stop();
}

#[test]
fn an_authorization_left_pending_expires_after_24_hours() {
    let env = Env::with_config(ACME_CONFIG);
    env.init();
    let server = env.serve();
    let (kid, hmac) = acme_eab(&env, "slow replier");
    let keyfile = env.path("account.json").display().to_string();
    let start = acme_client(&["expiry-start", &server.url(""), &kid, &hmac, "erin@customer.test", &keyfile]);
    assert_eq!(start["authz"], serde_json::json!(["pending"]), "{start}");
    let order = start["order"].as_str().unwrap().to_string();
    server.stop();
    // The same server a day and an hour later.
    let later = faketime("+25h", &env.command(["serve"]));
    let server = Server::start(&mut { later }, env.port, env.dir());
    let csr_path = mailbox_csr(&env, "late", KeySpec::P256, "erin@customer.test", "digitalSignature");
    let r = acme_client(&["expiry-check", &server.url(""), &keyfile, &order, &csr_path]);
    assert_eq!(r["order"], "invalid", "{r}");
    assert_eq!(r["authz"], "expired", "{r}");
    assert_eq!(r["challenge"], serde_json::json!(["invalid"]), "{r}");
    assert_eq!(r["finalize"], "orderNotReady", "{r}");
    server.stop();
}

#[test]
fn the_console_refuses_an_unvalidated_mailbox_naming_the_command() {
    use pki_tests::console_support::*;
    let env = Env::with_config("[validation]\nenterprise_domains = [\"example.com\"]\n");
    env.init();
    let otp = one_time_password(&env.pki(["user", "add", "--name", "olivia", "--role", "officer"]).stdout);
    let server = env.serve();
    let mut officer = Client::new(env.port);
    let _auth = first_login(&mut officer, "olivia", &otp, "Correct-Horse-Battery-9");
    let key = gen_key(env.dir(), "k", KeySpec::P256);
    let issue = |officer: &mut Client, email: &str| {
        let csr = std::fs::read(make_csr(&key, &env.path("c.csr"), &format!("/CN={email}"), &[])).unwrap();
        let token = officer.csrf("/admin/issue");
        officer.post_multipart(
            "/admin/issue/csr",
            &[
                ("csrf_token", None, token.as_bytes()),
                ("email", None, email.as_bytes()),
                ("usage", None, b"signing"),
                ("csr", Some("req.csr"), &csr),
            ],
        )
    };
    // The officer's request for an address of another organisation: refused, saying how to validate.
    let r = issue(&mut officer, "ceo@some-other-bank.example");
    assert_eq!(r.status, 403, "{}", r.text());
    let text = html_unescape(&r.text());
    assert!(text.contains("not validated") && text.contains("pki validate send"), "{text}");
    // An address of the enterprise domain is issued.
    let r = issue(&mut officer, "alice@example.com");
    assert_eq!(r.status, 303, "{}", r.text());
    let list = env.pki(["list"]).stdout;
    assert!(!list.contains("some-other-bank") && list.contains("alice@example.com"), "{list}");
    server.stop();
}

/// The private DNS server of scripts/with-dns.sh and its DKIM keys.
fn test_dns() -> (String, std::path::PathBuf) {
    let py = require_tool("python3", "apt-get install -y python3");
    let check = run(Command::new(&py).args(["-c", "import dkim"]));
    assert!(
        check.status.success(),
        "the ACME reply tests sign with dkimpy: install it with `python3 -m pip install dkimpy==1.1.8`"
    );
    let dns = std::env::var("PKI_TEST_DNS").unwrap_or_else(|_| {
        panic!(
            "PKI_TEST_DNS is not set: run `bash scripts/test.sh`, or `bash scripts/with-dns.sh cargo test -p pki-tests --test acme` \
             (a private dnsmasq serving the test domains' DKIM keys)"
        )
    });
    let dir = std::path::PathBuf::from(
        std::env::var("PKI_TEST_DKIM_DIR").expect("PKI_TEST_DKIM_DIR with PKI_TEST_DNS"),
    );
    (dns, dir)
}

/// The audit log's entries as text, on either backend (sled: the server stopped).
fn audit_entries(env: &Env) -> Vec<String> {
    match &env.database_url {
        None => {
            let db = cerdb::sled_engine::RawTrees::open(&env.data.join("db")).expect("open the database");
            db.entries("audit")
                .unwrap()
                .into_iter()
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
                .collect()
        }
        Some(url) => psql_rows(url, "SELECT encode(entry, 'hex') FROM audit ORDER BY seq")
            .iter()
            .map(|l| String::from_utf8_lossy(&hex::decode(l.trim()).unwrap()).into_owned())
            .collect(),
    }
}

#[test]
fn email_reply_challenges_need_the_address_dkim_and_the_digest() {
    let (dns, dkim) = test_dns();
    let (mta, maildir, _, _) = test_mta();
    let (host, port) = mta.rsplit_once(':').unwrap();
    let smtp_port = free_port();
    let smtp = format!("127.0.0.1:{smtp_port}");
    let env = Env::with_config(&format!(
        "[mail.relay]\nhost = \"{host}\"\nport = {port}\ntls = \"none\"\n\n\
         [acme]\nchallenge_from = \"acme-challenge@example.com\"\ndns_resolver = \"{dns}\"\n\n[acme.smtp]\nlisten = \"{smtp}\"\n"
    ));
    env.init();
    let server = env.serve();
    assert!(
        server.stdout().contains(&format!("ACME challenge replies on smtp://{smtp}")),
        "{}",
        server.stdout()
    );
    let cases = ["valid", "digest", "other", "unsigned", "badkey", "late"];
    let MailedOrders { keyfile, base, orders, responses } =
        order_and_read_challenges(&env, &server, &maildir, "replies", &cases);
    let addr = |case: &str| case_address(&env, case);
    let emails: Vec<String> = cases.iter().map(|c| addr(c)).collect();
    let ch: std::collections::HashMap<String, (String, String)> = emails
        .iter()
        .map(|e| {
            let r = &responses[e];
            (e.clone(), (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string()))
        })
        .collect();
    assert_eq!(ch.len(), cases.len(), "{ch:?}");
    let key = |d: &str| dkim.join(d).display().to_string();
    let send = |from: &str, case: &str, response: &str, keyfile: &str| {
        let (t1, _) = &ch[&addr(case)];
        acme_client(&[
            "reply",
            &smtp,
            from,
            "acme-challenge@example.com",
            t1,
            response,
            keyfile,
            "customer.test",
        ]);
    };
    let right = |case: &str| ch[&addr(case)].1.clone();
    send(&addr("valid"), "valid", &right("valid"), &key("customer.test.key"));
    send(&addr("digest"), "digest", &right("valid"), &key("customer.test.key"));
    send(&addr("mallory"), "other", &right("other"), &key("customer.test.key"));
    send(&addr("unsigned"), "unsigned", &right("unsigned"), "none");
    send(&addr("badkey"), "badkey", &right("badkey"), &key("unpublished.key"));
    // Garbage, a mail without a token, a huge one: dropped; the listener goes on.
    let garbage = acme_client(&[
        "raw-smtp",
        &smtp,
        "acme-challenge@example.com",
        &hex::encode(b"\x00\xff\xfe garbage\r\n"),
    ]);
    assert_eq!(garbage["code"], 250, "{garbage}");
    let huge = acme_client(&["raw-smtp", &smtp, "acme-challenge@example.com", "huge"]);
    assert_eq!(huge["code"], 552, "{huge}");
    let status = |case: &str| {
        let url = orders[&addr(case)].as_str().unwrap().to_string();
        acme_client(&["status", &base, &keyfile, &url])
    };
    let v = status("valid");
    assert_eq!(
        (v["authz"].as_str(), v["challenge"].as_str(), v["order"].as_str()),
        (Some("valid"), Some("valid"), Some("ready")),
        "{v}"
    );
    for (case, error) in [
        ("digest", "incorrectResponse"),
        ("other", "unauthorized"),
        ("unsigned", "unauthorized"),
        ("badkey", "unauthorized"),
    ] {
        let s = status(case);
        assert_eq!((s["authz"].as_str(), s["error"].as_str()), (Some("invalid"), Some(error)), "{case}: {s}");
    }
    // The valid one finalizes; the validation is on record for the account.
    let sign = mailbox_csr(&env, "sign", KeySpec::P256, &addr("valid"), "digitalSignature");
    let url = orders[&addr("valid")].as_str().unwrap().to_string();
    let out = env.path("valid.pem").display().to_string();
    let fin = acme_client(&["finalize-existing", &server.url(""), &keyfile, &url, &sign, &out]);
    assert_eq!(fin["order"], "valid", "{fin}");
    let list = env.pki(["validations", "list"]).stdout;
    assert!(list.contains(&format!("{}  acme-email-reply-00", addr("valid"))), "{list}");
    assert!(!list.contains(&addr("digest")), "{list}");
    // No address in clear in the log of the dropped mails.
    assert!(!server.stderr().contains("customer.test"), "{}", server.stderr());
    server.stop();

    // A reply a day and an hour after the challenge.
    let later = faketime("+25h", &env.command(["serve"]));
    let server = Server::start(&mut { later }, env.port, env.dir());
    send(&addr("late"), "late", &right("late"), &key("customer.test.key"));
    let s = status("late");
    assert_eq!(s["error"], "incorrectResponse", "{s}");
    server.stop();
}

/// The private Postfix of scripts/with-mail.sh: its SMTP address, its Maildir, and the loopback
/// address it relays the challenge address's domain to (the CA's `[acme.smtp] listen`).
fn test_mta() -> (String, std::path::PathBuf, String, String) {
    let get = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run `bash scripts/test.sh`, or `bash scripts/with-mail.sh cargo test -p pki-tests \
                 --test acme` (a private Postfix on loopback; installs Debian's postfix when missing)"
            )
        })
    };
    (
        get("PKI_TEST_SMTP"),
        std::path::PathBuf::from(get("PKI_TEST_MAILDIR")),
        get("PKI_TEST_ACME_SMTP"),
        get("PKI_TEST_ACME_DOMAIN"),
    )
}

/// Acceptance 1 through the real MTA: the challenge mail goes from the CA through Postfix into
/// the mailbox, the client reads it there, and its DKIM-signed reply goes through Postfix to the
/// CA's own SMTP listener; signing and encryption certificates for an address outside the
/// enterprise domains. Prints the time from the order (whose request hands the challenge mail
/// to the MTA) to the order being ready and valid (BENCHMARKS.md, ACME).
#[test]
fn an_independent_client_enrols_an_outside_address_through_the_real_mta() {
    let (dns, dkim) = test_dns();
    let (smtp, maildir, acme_listen, acme_domain) = test_mta();
    let (host, port) = smtp.rsplit_once(':').unwrap();
    let env = Env::with_config(&format!(
        "[validation]\nenterprise_domains = [\"example.com\"]\n\n\
         [mail.relay]\nhost = \"{host}\"\nport = {port}\ntls = \"none\"\n\n\
         [acme]\nchallenge_from = \"acme-challenge@{acme_domain}\"\ndns_resolver = \"{dns}\"\n\n\
         [acme.smtp]\nlisten = \"{acme_listen}\"\n"
    ));
    env.init();
    let server = env.serve();
    let (kid, hmac) = acme_eab(&env, "device agent of frank");
    // A fresh address per run: the Maildir is shared by the tests of the run.
    let address = format!("frank.{}@customer.test", env.port);
    let sign = mailbox_csr(&env, "sign", KeySpec::P256, &address, "digitalSignature");
    let enc = mailbox_csr(&env, "enc", KeySpec::Rsa(2048), &address, "keyEncipherment");
    let out = env.dir().display().to_string();
    let key = dkim.join("customer.test.key").display().to_string();
    let r = acme_client(&[
        "mta-enrol",
        &server.url(""),
        &kid,
        &hmac,
        &address,
        &smtp,
        &maildir.display().to_string(),
        &key,
        &sign,
        &enc,
        &out,
    ]);
    assert_eq!(r["authz before"], "pending", "outside the enterprise domains: a challenge first: {r}");
    let from = format!("acme-challenge@{acme_domain}");
    assert_eq!(r["challenge mail"]["from"], from, "{r}");
    assert_eq!(r["challenge mail"]["challenge from"], from, "{r}");
    assert!(r["challenge mail"]["auto-submitted"].as_str().unwrap().starts_with("auto-generated"), "{r}");
    assert_eq!(r["authz after reply"], "valid", "{r}\n{}", server.stderr());
    assert_eq!(r["order after reply"], "ready", "{r}");
    assert_eq!(r["signing"], "valid", "{r}");
    assert_eq!(r["encryption authz"], serde_json::json!(["valid"]), "{r}");
    assert_eq!(r["encryption"], "valid", "{r}");

    // The reply came through Postfix: its log shows the relay to the CA's listener.
    let log =
        std::fs::read_to_string(Path::new(&std::env::var("PKI_TEST_MAIL_DIR").unwrap()).join("postfix.log"))
            .unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains(&format!("to=<{from}>"))
            && l.contains(&format!(
                "relay=127.0.0.1[127.0.0.1]:{}",
                acme_listen.rsplit_once(':').unwrap().1
            ))
            && l.contains("status=sent")),
        "no relay of the reply to the CA in the Postfix log"
    );

    let files = env.ca_files();
    let v = openssl_try([
        "verify".to_string(),
        "-purpose".into(),
        "smimesign".into(),
        "-CAfile".into(),
        files.root.display().to_string(),
        "-untrusted".into(),
        files.issuing.display().to_string(),
        env.path("signing.pem").display().to_string(),
    ]);
    assert!(v.status.success() && v.stdout.contains(": OK"), "{} {}", v.stdout, v.stderr);
    let (status, body) = http_get(
        env.port,
        &format!("/api/v1/certificates?email={}&usage=encryption", address.replace('@', "%40")),
    )
    .expect("directory answers");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let enc_pem = std::fs::read_to_string(env.path("encryption.pem")).unwrap();
    assert!(
        contains_bytes(&body, &pem_der(&enc_pem)) || String::from_utf8_lossy(&body).contains(&enc_pem[..200]),
        "the directory's answer is the certificate downloaded"
    );
    let list = env.pki(["validations", "list"]).stdout;
    assert!(list.contains(&format!("{address}  acme-email-reply-00")), "{list}");
    println!("ACME through the MTA, seconds: {}", r["seconds"]);
    server.stop();
}

/// The validation value of a mail of `pki validate send` (its body quoted-printable: soft line
/// breaks undone).
fn mailed_value(mail: &str) -> String {
    let body = mail.replace("=\r\n", "").replace("=\n", "");
    body.split("--code ")
        .nth(1)
        .map(|rest| rest.chars().take_while(char::is_ascii_hexdigit).collect::<String>())
        .unwrap_or_else(|| panic!("no value in the mail: {mail}"))
}

/// The message delivered to `to` whose subject starts with `subject`, waited for in the Maildir.
fn mail_to(maildir: &Path, to: &str, subject: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(maildir.join(sub)).into_iter().flatten().flatten() {
                let text = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).into_owned();
                let head = text.split("\n\n").next().unwrap_or_default();
                if head.lines().any(|l| l.eq_ignore_ascii_case(&format!("Delivered-To: {to}")))
                    && head.lines().any(|l| l.starts_with(&format!("Subject: {subject}")))
                {
                    return text;
                }
            }
        }
        assert!(std::time::Instant::now() < deadline, "no mail to {to} in {}", maildir.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Acceptance 3 on `pki issue`: an address outside the enterprise domains is refused naming `pki
/// validate send`; the value `pki validate send` mails through the real Postfix is read from the
/// mailbox and confirmed; the address is issued; a second confirmation with the same value is
/// refused (single use); 31 days later (libfaketime) the validation is no longer reused.
#[test]
fn a_mailed_value_validates_an_outside_address_until_the_reuse_period_ends() {
    let (smtp, maildir, _, _) = test_mta();
    let (host, port) = smtp.rsplit_once(':').unwrap();
    let env = Env::with_config(&format!(
        "[validation]\nenterprise_domains = [\"example.com\"]\n\n[mail.relay]\nhost = \"{host}\"\nport = {port}\ntls = \"none\"\nfrom = \"pki@example.com\"\n"
    ));
    env.init();
    let address = format!("carol.{}@customer.test", env.port);
    let key = gen_key(env.dir(), "k", KeySpec::P256);
    let csr = make_csr(&key, &env.path("c.csr"), &format!("/CN={address}"), &[]).display().to_string();
    let issue = ["issue", "--email", &address, "--usage", "signing", "--csr", &csr];
    env.pki_fails(issue, &[&address, "not validated", "pki validate send"]);

    let sent = env.pki(["validate", "send", "--email", &address]);
    assert!(sent.stderr.contains("mailed a validation value"), "{}", sent.stderr);
    let mail = mail_to(&maildir, &address, "Confirm your mailbox");
    assert!(mail.contains("Auto-Submitted: auto-generated"), "{mail}");
    let value = mailed_value(&mail);
    assert_eq!(value.len(), 32, "128 bits in hex: {mail}");
    // The value is in the mail only: the database holds its digest.
    env.pki(["validate", "confirm", "--email", &address, "--code", &value]);
    env.pki_fails(["validate", "confirm", "--email", &address, "--code", &value], &["no value is pending"]);
    let issued = env.pki(issue);
    assert!(issued.status.success());
    let list = env.pki(["validations", "list"]).stdout;
    assert!(list.contains(&format!("{address}  emailed-value")) && list.contains("current"), "{list}");

    // Past the reuse period of 30 days: refused again, naming the command.
    let mut later = faketime("+31d", &env.command(issue));
    let out = run(&mut later);
    assert!(!out.status.success(), "issued 31 days after the validation: {}", out.stdout);
    assert!(
        out.stderr.contains("not validated")
            && out.stderr.contains("older than 30 days")
            && out.stderr.contains("pki validate send"),
        "{}",
        out.stderr
    );
    let mut later = faketime("+31d", &env.command(["validations", "list"]));
    let list = run(&mut later).stdout;
    assert!(list.contains(&format!("{address}  emailed-value")) && list.contains("expired"), "{list}");
}

/// Acceptance 3 in the console: the officer's issuance for an outside address is refused naming
/// `pki validate send`; the console's button mails the value through the real Postfix; the value
/// read from the mailbox is entered back in the console; the address is issued and the evidence
/// page shows it. An auditor sees the evidence but has no button; a form without the CSRF token
/// is refused; a wrong value validates nothing.
#[test]
fn the_console_validates_a_mailbox_with_a_mailed_value_and_shows_the_evidence() {
    use pki_tests::console_support::*;
    let (smtp, maildir, _, _) = test_mta();
    let (host, port) = smtp.rsplit_once(':').unwrap();
    let env = Env::with_config(&format!(
        "[validation]\nenterprise_domains = [\"example.com\"]\n\n[mail.relay]\nhost = \"{host}\"\nport = {port}\ntls = \"none\"\nfrom = \"pki@example.com\"\n"
    ));
    env.init();
    let otp = one_time_password(&env.pki(["user", "add", "--name", "olivia", "--role", "officer"]).stdout);
    let audit_otp =
        one_time_password(&env.pki(["user", "add", "--name", "arthur", "--role", "auditor"]).stdout);
    let server = env.serve();
    let mut officer = Client::new(env.port);
    let _auth = first_login(&mut officer, "olivia", &otp, "Correct-Horse-Battery-9");
    let address = format!("dora.{}@customer.test", env.port);
    let key = gen_key(env.dir(), "k", KeySpec::P256);
    let issue = |officer: &mut Client, email: &str| {
        let csr = std::fs::read(make_csr(&key, &env.path("c.csr"), &format!("/CN={email}"), &[])).unwrap();
        let token = officer.csrf("/admin/issue");
        officer.post_multipart(
            "/admin/issue/csr",
            &[
                ("csrf_token", None, token.as_bytes()),
                ("email", None, email.as_bytes()),
                ("usage", None, b"signing"),
                ("csr", Some("req.csr"), &csr),
            ],
        )
    };
    let r = issue(&mut officer, &address);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(html_unescape(&r.text()).contains("pki validate send"), "{}", r.text());

    // The page: enterprise domains, no validation yet, both forms for an officer.
    let r = officer.get("/admin/validations");
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    assert!(
        page.contains("*@example.com") && page.contains("validate-send") && !page.contains(&address),
        "{page}"
    );
    // Without the CSRF token: refused, nothing mailed.
    let r = officer.post_form("/admin/validations/send", &[("email", &address)]);
    assert_eq!(r.status, 403, "{}", r.text());
    let token = officer.csrf("/admin/validations");
    let r = officer.post_form("/admin/validations/send", &[("csrf_token", &token), ("email", &address)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        element_text(&r.text(), "outcome").unwrap_or_default().contains("Mailed a validation value"),
        "{}",
        r.text()
    );
    let mail = mail_to(&maildir, &address, "Confirm your mailbox");
    let value = mailed_value(&mail);
    assert_eq!(value.len(), 32, "{mail}");
    // A wrong value: refused, the address stays unvalidated.
    let wrong = "0".repeat(32);
    let r = officer.post_form(
        "/admin/validations/confirm",
        &[("csrf_token", &token), ("email", &address), ("code", &wrong)],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(html_unescape(&r.text()).contains("does not match"), "{}", r.text());
    let r = officer.post_form(
        "/admin/validations/confirm",
        &[("csrf_token", &token), ("email", &address), ("code", &value)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(element_text(&r.text(), "outcome").unwrap_or_default().contains("validated at"), "{}", r.text());

    // Now issued; the evidence page shows the address, its method and who asked.
    let r = issue(&mut officer, &address);
    assert_eq!(r.status, 303, "{}", r.text());
    let page = html_unescape(&officer.get("/admin/validations").text());
    let row = page
        .split("<tr>")
        .find(|row| row.contains(&address))
        .unwrap_or_else(|| panic!("no row for {address}: {page}"));
    assert!(row.contains("emailed-value") && row.contains("current") && row.contains("olivia"), "{row}");

    // An auditor reads the evidence, but may not send or confirm.
    let mut auditor = Client::new(env.port);
    let _a = first_login(&mut auditor, "arthur", &audit_otp, "Correct-Horse-Battery-8");
    let r = auditor.get("/admin/validations");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&address) && !r.text().contains("validate-send"), "{}", r.text());
    let t = auditor.csrf("/admin/validations");
    let r = auditor.post_form("/admin/validations/send", &[("csrf_token", &t), ("email", &address)]);
    assert_eq!(r.status, 403, "{}", r.text());
    // Garbage in the form: a clear 400, the console goes on.
    let r =
        officer.post_form("/admin/validations/send", &[("csrf_token", &token), ("email", "not an address")]);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = officer.post_form(
        "/admin/validations/confirm",
        &[("csrf_token", &token), ("email", &address), ("code", &"x".repeat(10_000))],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(officer.get("/admin/validations").status, 200);
    server.stop();
}

/// `[[acme.trusted_relays]]`: a reply without a DKIM signature the CA could verify is accepted on
/// the `Authentication-Results` of a configured relay, delivered from the relay's address and
/// only on the relay's topmost header; the same header from an address that is not the relay's,
/// a pass under the relay's own fail, or a header of a relay not configured validates nothing.
#[test]
fn a_trusted_relays_authentication_results_stand_for_dkim_only_from_that_relay() {
    let (dns, _) = test_dns();
    let (mta, maildir, _, _) = test_mta();
    let (host, port) = mta.rsplit_once(':').unwrap();
    let smtp = format!("127.0.0.1:{}", free_port());
    let env = Env::with_config(&format!(
        "[mail.relay]\nhost = \"{host}\"\nport = {port}\ntls = \"none\"\n\n\
         [acme]\nchallenge_from = \"acme-challenge@example.com\"\ndns_resolver = \"{dns}\"\n\n\
         [acme.smtp]\nlisten = \"{smtp}\"\n\n\
         [[acme.trusted_relays]]\nauthserv_id = \"mx1.bank.example\"\naddresses = [\"127.0.0.1\"]\n\n\
         [[acme.trusted_relays]]\nauthserv_id = \"mx2.bank.example\"\naddresses = [\"192.0.2.25\"]\n"
    ));
    env.init();
    let server = env.serve();
    let cases = ["relayed", "elsewhere", "under", "unknown"];
    let MailedOrders { keyfile, base, orders, responses } =
        order_and_read_challenges(&env, &server, &maildir, "relayed replies", &cases);
    let addr = |case: &str| case_address(&env, case);
    let send = |case: &str, headers: &str| {
        let r = &responses[&addr(case)];
        acme_client(&[
            "reply",
            &smtp,
            &addr(case),
            "acme-challenge@example.com",
            r[0].as_str().unwrap(),
            r[1].as_str().unwrap(),
            "none",
            "customer.test",
            headers,
        ]);
    };
    let pass = |relay: &str| {
        format!("Authentication-Results: {relay}; dkim=pass header.d=customer.test header.s=pki-test")
    };
    send("relayed", &pass("mx1.bank.example"));
    // mx2's header, but the message comes from 127.0.0.1, which is mx1's address only.
    send("elsewhere", &pass("mx2.bank.example"));
    // mx1's own (topmost) header says fail; the pass below it came with the message.
    send(
        "under",
        &format!(
            "Authentication-Results: mx1.bank.example; dkim=fail header.d=customer.test\n{}",
            pass("mx1.bank.example")
        ),
    );
    send("unknown", &pass("mx.elsewhere.example"));
    let status = |case: &str| {
        let url = orders[&addr(case)].as_str().unwrap().to_string();
        acme_client(&["status", &base, &keyfile, &url])
    };
    let s = status("relayed");
    assert_eq!(
        (s["authz"].as_str(), s["order"].as_str()),
        (Some("valid"), Some("ready")),
        "{s}\n{}",
        server.stderr()
    );
    for case in ["elsewhere", "under", "unknown"] {
        let s = status(case);
        assert_eq!(
            (s["authz"].as_str(), s["error"].as_str()),
            (Some("invalid"), Some("unauthorized")),
            "{case}: {s}"
        );
    }
    server.stop();

    // A relay without addresses, or with a name that is not one, is a configuration error.
    let bad = Env::with_config(
        "[acme]\n\n[[acme.trusted_relays]]\nauthserv_id = \"mx1.bank.example\"\naddresses = []\n",
    );
    bad.pki_fails(["init"], &["trusted_relays", "addresses"]);
}

/// The challenge-reply listener keeps SMTP's order (RFC 5321 4.1.4): RCPT needs MAIL, MAIL needs
/// no open transaction, DATA needs a recipient, each refused with its 5xx and the session going
/// on; malformed MAIL and RCPT get 501; a session that only errs is closed after 20 refusals
/// with 421, and a line over 1,000 bytes closes it with 500.
#[test]
fn the_challenge_reply_listener_keeps_smtps_order_and_closes_a_session_that_only_errs() {
    use std::io::{BufRead, BufReader, Write};
    let smtp = format!("127.0.0.1:{}", free_port());
    let env = Env::with_config(&format!(
        "[acme]\nchallenge_from = \"acme-challenge@example.com\"\ndns_resolver = \"127.0.0.1:53\"\n\n\
         [acme.smtp]\nlisten = \"{smtp}\"\n"
    ));
    env.init();
    let server = env.serve();
    // Sends each line and reads its reply (the last line of a multi-line one); the replies, and
    // whether the server then closed the connection.
    let talk = |lines: &[&[u8]]| -> (Vec<String>, bool) {
        let stream = std::net::TcpStream::connect(&smtp).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut rd = BufReader::new(stream.try_clone().unwrap());
        let mut wr = stream;
        let mut reply = || loop {
            let mut l = String::new();
            if rd.read_line(&mut l).unwrap() == 0 {
                return None;
            }
            if l.as_bytes().get(3) != Some(&b'-') {
                return Some(l.trim_end().to_string());
            }
        };
        assert!(reply().unwrap().starts_with("220 "));
        let mut replies = Vec::new();
        for l in lines {
            if wr.write_all(l).and_then(|()| wr.write_all(b"\r\n")).is_err() {
                return (replies, true);
            }
            match reply() {
                Some(r) => replies.push(r),
                None => return (replies, true),
            }
        }
        (replies, reply().is_none())
    };
    let codes = |replies: &[String]| replies.iter().map(|r| r[..3].to_string()).collect::<Vec<_>>();

    let (r, closed) = talk(&[
        b"EHLO client.example",
        b"RCPT TO:<acme-challenge@example.com>",
        b"DATA",
        b"MAIL <a@example.org>",
        b"mail from:<a@example.org>",
        b"MAIL FROM:<a@example.org>",
        b"RCPT <acme-challenge@example.com>",
        b"RCPT TO:<root@example.com>",
        b"DATA",
        b"rcpt to:<ACME-challenge@example.com>",
        b"RSET",
        b"DATA",
        b"QUIT",
    ]);
    assert_eq!(
        codes(&r),
        ["250", "503", "503", "501", "250", "503", "501", "550", "503", "250", "250", "503", "221"],
        "{r:?}"
    );
    assert!(r[1].contains("MAIL first") && r[5].contains("RSET first"), "{r:?}");
    assert!(closed);

    // Twenty refusals and the session is closed.
    let junk: Vec<&[u8]> = vec![b"\x00\xff garbage"; 25];
    let (r, closed) = talk(&junk);
    assert_eq!(r.len(), 20, "{r:?}");
    assert!(r[..19].iter().all(|l| l.starts_with("502 ")), "{r:?}");
    assert!(r[19].starts_with("421 ") && r[19].contains("too many errors"), "{r:?}");
    assert!(closed);

    // A line over the limit.
    let long = vec![b'a'; 5_000];
    let (r, closed) = talk(&[b"HELO x", &long]);
    assert_eq!(codes(&r), ["250", "500"], "{r:?}");
    assert!(closed);

    // The listener still takes a session.
    let (r, _) = talk(&[b"HELO x", b"NOOP", b"QUIT"]);
    assert_eq!(codes(&r), ["250", "250", "221"], "{r:?}");
    server.stop();
}
