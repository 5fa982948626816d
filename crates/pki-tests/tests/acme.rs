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

/// certbot's ACME library, pinned by scripts/test.sh.
fn acme_client(args: &[&str]) -> serde_json::Value {
    let py = require_tool("python3", "apt-get install -y python3");
    let check =
        run(Command::new(&py).args(["-c", "import importlib.metadata as m; print(m.version('acme'))"]));
    assert!(
        check.status.success() && check.stdout.trim() == "5.9.0",
        "the ACME tests need certbot's acme library 5.9.0: install it with `python3 -m pip install acme==5.9.0` (found {:?})\n{}",
        check.stdout.trim(),
        check.stderr
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/acme/client.py");
    let out = run(Command::new(&py).arg(script).args(args));
    assert!(out.status.success(), "client.py {}: {}\n{}", args.join(" "), out.stdout, out.stderr);
    let last = out.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("client.py printed {last:?}: {e}\n{}", out.stderr))
}

/// `pki acme eab create`: (key id, HMAC key).
fn eab(env: &Env, name: &str) -> (String, String) {
    let out = env.pki(["acme", "eab", "create", "--name", name]);
    let field = |label: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label} in {}", out.stdout))
    };
    (field("key id:"), field("hmac key:"))
}

fn csr(env: &Env, name: &str, spec: KeySpec, email: &str, key_usage: &str) -> String {
    let key = gen_key(env.dir(), name, spec);
    let san = format!("subjectAltName=email:{email}");
    let ku = format!("keyUsage=critical,{key_usage}");
    make_csr(
        &key,
        &env.path(&format!("{name}.csr")),
        &format!("/CN={email}"),
        &["-addext", &san, "-addext", &ku],
    )
    .display()
    .to_string()
}

const ACME_CONFIG: &str =
    "[acme]\nenterprise_preauthorized = true\nchallenge_from = \"acme-challenge@example.com\"\n";

#[test]
fn an_independent_client_enrols_a_mailbox_for_signing_and_encryption() {
    let env = Env::with_config(ACME_CONFIG);
    env.init();
    let server = env.serve();
    let (kid, hmac) = eab(&env, "device agent of alice");
    let sign = csr(&env, "sign", KeySpec::P256, "alice@example.com", "digitalSignature");
    let enc = csr(&env, "enc", KeySpec::Rsa(2048), "alice@example.com", "keyEncipherment");
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
    let (kid, hmac) = eab(&env, "refusals");
    let other = csr(&env, "other", KeySpec::P256, "mallory@example.com", "digitalSignature");
    let both = csr(&env, "both", KeySpec::Rsa(2048), "bob@example.com", "digitalSignature,keyEncipherment");
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
    assert_eq!(r["get on a POST resource"]["status"], 405, "{r}");
    assert_eq!(r["still serving"], 200, "{r}");
    // Nothing was issued.
    assert_eq!(env.list_serials().len(), before, "no certificate issued by a refused request");
    server.stop();
}

#[test]
fn a_revoked_eab_key_binds_no_account() {
    let env = Env::with_config(ACME_CONFIG);
    env.init();
    let server = env.serve();
    let (kid, hmac) = eab(&env, "lost laptop");
    env.pki(["acme", "eab", "revoke", "--kid", &kid]);
    let list = env.pki(["acme", "eab", "list"]).stdout;
    assert!(list.contains(&kid) && list.contains("revoked"), "{list}");
    let sign = csr(&env, "sign", KeySpec::P256, "alice@example.com", "digitalSignature");
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
    let db = cerdb::sled_engine::RawTrees::open(&env.data.join("db")).expect("open the database");
    let entries: Vec<String> = db
        .entries("audit")
        .unwrap()
        .into_iter()
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
        .collect();
    drop(db);
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

#[test]
fn revocation_rollover_deactivation_and_the_rate_limit() {
    let env = Env::with_config(&format!("{ACME_CONFIG}orders_per_minute = 6\n"));
    env.init();
    let server = env.serve();
    let (kid, hmac) = eab(&env, "lifecycle");
    let sign = csr(&env, "sign", KeySpec::P256, "dave@example.com", "digitalSignature");
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
    let (kid, hmac) = eab(&env, "slow replier");
    let keyfile = env.path("account.json").display().to_string();
    let start = acme_client(&["expiry-start", &server.url(""), &kid, &hmac, "erin@customer.test", &keyfile]);
    assert_eq!(start["authz"], serde_json::json!(["pending"]), "{start}");
    let order = start["order"].as_str().unwrap().to_string();
    server.stop();
    // The same server a day and an hour later.
    let later = faketime("+25h", &env.command(["serve"]));
    let server = Server::start(&mut { later }, env.port, env.dir());
    let csr_path = csr(&env, "late", KeySpec::P256, "erin@customer.test", "digitalSignature");
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

/// Challenges of the database (server stopped): address -> (token-part1, expected response).
/// The challenge mail itself needs an MTA's mailbox, which these tests read the token instead of.
fn challenges(env: &Env) -> std::collections::HashMap<String, (String, String)> {
    use base64::Engine as _;
    let db =
        cerdb::sled_engine::RawTrees::open(&env.data.join("db")).expect("open the database (server stopped)");
    let records: Vec<serde_json::Value> = db
        .entries("acme")
        .unwrap()
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    drop(db);
    let thumb = |account: &str| {
        records
            .iter()
            .find(|r| r["id"] == account && r.get("thumbprint").is_some())
            .and_then(|r| r["thumbprint"].as_str())
            .unwrap()
            .to_string()
    };
    records
        .iter()
        .filter(|r| r.get("challenge").is_some_and(|c| !c.is_null()))
        .map(|r| {
            let c = &r["challenge"];
            let (t1, t2) = (c["token_part1"].as_str().unwrap(), c["token_part2"].as_str().unwrap());
            let key_authz = format!("{t1}{t2}.{}", thumb(r["account"].as_str().unwrap()));
            let digest = ring::digest::digest(&ring::digest::SHA256, key_authz.as_bytes());
            let response = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
            (r["email"].as_str().unwrap().to_string(), (t1.to_string(), response))
        })
        .collect()
}

#[test]
fn email_reply_challenges_need_the_address_dkim_and_the_digest() {
    let (dns, dkim) = test_dns();
    let smtp_port = free_port();
    let smtp = format!("127.0.0.1:{smtp_port}");
    let env = Env::with_config(&format!(
        "[acme]\nchallenge_from = \"acme-challenge@example.com\"\ndns_resolver = \"{dns}\"\n\n[acme.smtp]\nlisten = \"{smtp}\"\n"
    ));
    env.init();
    let server = env.serve();
    assert!(
        server.stdout().contains(&format!("ACME challenge replies on smtp://{smtp}")),
        "{}",
        server.stdout()
    );
    let (kid, hmac) = eab(&env, "replies");
    let keyfile = env.path("account.json").display().to_string();
    let cases = ["valid", "digest", "other", "unsigned", "badkey", "late"];
    let emails: Vec<String> = cases.iter().map(|c| format!("{c}@customer.test")).collect();
    let base = server.url("");
    let mut args = vec!["orders", base.as_str(), kid.as_str(), hmac.as_str(), keyfile.as_str()];
    args.extend(emails.iter().map(String::as_str));
    let orders = acme_client(&args);
    server.stop();
    let ch = challenges(&env);
    assert_eq!(ch.len(), cases.len(), "{ch:?}");
    let server = env.serve();
    let key = |d: &str| dkim.join(d).display().to_string();
    let send = |from: &str, case: &str, response: &str, keyfile: &str| {
        let (t1, _) = &ch[&format!("{case}@customer.test")];
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
    let right = |case: &str| ch[&format!("{case}@customer.test")].1.clone();
    send("valid@customer.test", "valid", &right("valid"), &key("customer.test.key"));
    send("digest@customer.test", "digest", &right("valid"), &key("customer.test.key"));
    send("mallory@customer.test", "other", &right("other"), &key("customer.test.key"));
    send("unsigned@customer.test", "unsigned", &right("unsigned"), "none");
    send("badkey@customer.test", "badkey", &right("badkey"), &key("unpublished.key"));
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
        let url = orders[&format!("{case}@customer.test")].as_str().unwrap().to_string();
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
    let sign = csr(&env, "sign", KeySpec::P256, "valid@customer.test", "digitalSignature");
    let url = orders["valid@customer.test"].as_str().unwrap().to_string();
    let out = env.path("valid.pem").display().to_string();
    let fin = acme_client(&["finalize-existing", &server.url(""), &keyfile, &url, &sign, &out]);
    assert_eq!(fin["order"], "valid", "{fin}");
    let list = env.pki(["validations", "list"]).stdout;
    assert!(list.contains("valid@customer.test  acme-email-reply-00"), "{list}");
    assert!(!list.contains("digest@customer.test"), "{list}");
    // No address in clear in the log of the dropped mails.
    assert!(!server.stderr().contains("customer.test"), "{}", server.stderr());
    server.stop();

    // A reply a day and an hour after the challenge.
    let later = faketime("+25h", &env.command(["serve"]));
    let server = Server::start(&mut { later }, env.port, env.dir());
    send("late@customer.test", "late", &right("late"), &key("customer.test.key"));
    let s = status("late");
    assert_eq!(s["error"], "incorrectResponse", "{s}");
    server.stop();
}
