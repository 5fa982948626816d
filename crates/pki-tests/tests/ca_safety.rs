//! Issue 16, acceptance 1 and the last two parts of 7, against the real `pki` binary and
//! `pki serve`: the CA's own certificates are refused by `pki revoke` (locally, through the
//! admin socket, and in the console) naming `pki ca compromise`; subscriber revocations with
//! cACompromise are refused; `pki ca compromise --ca issuing` stops issuance at once and after a
//! restart, OpenSSL's OCSP client no longer gets a good answer from a revoked signer, and the
//! root's CRL lists the issuing CA; CSR text with a terminal escape is shown escaped; the data
//! directory is forced owner-only.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pki_tests::console_support::*;
use pki_tests::*;

const PW: &str = "Correct-Horse-Battery-9";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The serial of the (first) certificate of `kind` in `pki list`.
fn serial_of_kind(env: &Env, kind: &str) -> String {
    parse_list(&env.pki(["list"]).stdout)
        .into_iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} certificate in pki list"))
        .serial
}

fn status_of(env: &Env, serial: &str) -> String {
    let show = env.pki(["show", "--serial", serial]).stdout;
    show.lines().find_map(|l| l.strip_prefix("status:")).unwrap().trim().to_string()
}

/// A timestamp of a new document `NAME.txt` from the running server's TSA, asked without the TSA
/// certificate in the token: (the reply, the document).
fn stamp_without_certificate(env: &Env, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let doc = env.write(&format!("{name}.txt"), format!("statement {name}\n"));
    let q = env.path(&format!("{name}.tsq"));
    openssl(["ts", "-query", "-data", &p(&doc), "-sha256", "-out", &p(&q)]);
    let (code, _, body) = curl_post(&format!("{}/tsa", env.base_url()), "application/timestamp-query", &q);
    assert_eq!(code, 200);
    (env.write(&format!("{name}.tsr"), body), doc)
}

/// A signing CSR for `email`; its path.
fn csr_for(env: &Env, email: &str) -> std::path::PathBuf {
    let key = gen_key(env.dir(), &format!("{email}.key"), KeySpec::P256);
    make_csr(&key, &env.path(&format!("{email}.csr")), &format!("/CN={email}"), &[])
}

fn issue(env: &Env, email: &str) -> (String, std::path::PathBuf) {
    let csr = csr_for(env, email);
    let pem = env.pki(["issue", "--email", email, "--usage", "signing", "--csr", &p(&csr)]).stdout;
    let serial = cert_serial(&pem_der(&pem));
    (serial, env.write(&format!("{email}.pem"), pem))
}

const OWN: [(&str, &str); 5] = [
    ("issuing-ca", "issuing"),
    ("ocsp-signer", "ocsp"),
    ("tsa", "tsa"),
    ("tls-server", "tls"),
    ("audit-signer", "audit"),
];

/// Every own certificate refused by `pki revoke` with every reason, naming the procedure; a
/// subscriber's cACompromise refused naming the BR.
fn revocations_refused(env: &Env, subscriber: &str) {
    for (kind, name) in OWN {
        let serial = serial_of_kind(env, kind);
        for reason in ["keyCompromise", "cACompromise", "superseded"] {
            env.pki_fails(
                ["revoke", "--serial", &serial, "--reason", reason],
                &[&serial, &format!("pki ca compromise --ca {name}")],
            );
        }
        assert_eq!(status_of(env, &serial), "valid", "{kind} stays valid");
    }
    env.pki_fails(
        ["revoke", "--serial", subscriber, "--reason", "cACompromise"],
        &["cACompromise", "S/MIME BR 7.2.2", "keyCompromise"],
    );
    assert_eq!(status_of(env, subscriber), "valid");
}

#[test]
fn own_certificates_are_refused_by_revoke_through_cli_socket_and_console() {
    let env = Env::new();
    let admin_otp = one_time_password(&env.init().stdout);
    let (leaf, _) = issue(&env, "carol@example.com");
    // The audit signer is issued with the first checkpoint.
    env.pki(["audit", "checkpoint", "--out", &p(&env.path("checkpoint.cms"))]);
    // The CLI on the data directory itself,
    revocations_refused(&env, &leaf);
    // and through the running server's admin socket (the database is the server's now).
    let server = env.serve();
    revocations_refused(&env, &leaf);
    let officer_otp =
        one_time_password(&env.pki(["user", "add", "--name", "olivia", "--role", "officer"]).stdout);

    // The console: no revoke form on an own certificate, and a direct POST is refused.
    let mut officer = Client::new(env.port);
    let mut auth = first_login(&mut officer, "olivia", &officer_otp, PW);
    // One step-up covers the requests that follow within its window: a code for the first only,
    // so the test waits for no further TOTP step.
    let mut code = Some(auth.next_code());
    for (kind, name) in OWN {
        let serial = serial_of_kind(&env, kind);
        let page = officer.get(&format!("/admin/certificates/{serial}")).text();
        assert!(!page.contains("id=\"revoke\"") && !page.contains("report-compromise"), "{kind}: {page}");
        let token = form_value(&page, "csrf_token").unwrap();
        let r = officer.post_form(
            &format!("/admin/certificates/{serial}/revoke"),
            &[
                ("csrf_token", &token),
                ("reason", "keyCompromise"),
                ("totp_code", &code.take().unwrap_or_default()),
            ],
        );
        assert_eq!(r.status, 409, "{kind}: {}", r.text());
        assert!(html_unescape(&r.text()).contains(&format!("pki ca compromise --ca {name}")), "{}", r.text());
        assert_eq!(status_of(&env, &serial), "valid", "{kind} stays valid");
    }
    let root = serial_of_kind(&env, "root-ca");
    let page = officer.get(&format!("/admin/certificates/{root}")).text();
    assert!(!page.contains("id=\"revoke\""), "{page}");
    let token = form_value(&page, "csrf_token").unwrap();
    let r = officer.post_form(
        &format!("/admin/certificates/{leaf}/revoke"),
        &[("csrf_token", &token), ("reason", "cACompromise"), ("totp_code", "")],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("S/MIME BR 7.2.2"), "{}", r.text());
    assert_eq!(status_of(&env, &leaf), "valid");
    // Only an administrator may start the compromise procedure in the console.
    let r = officer.post_form(
        "/admin/ca/compromise",
        &[("csrf_token", &token), ("ca", "issuing"), ("confirm", "compromise issuing"), ("totp_code", "")],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let mut admin = Client::new(env.port);
    let mut admin_auth = first_login(&mut admin, "admin", &admin_otp, PW);
    let page = admin.get("/admin/settings").text();
    assert!(page.contains("id=\"compromise\""), "{page}");
    let token = form_value(&page, "csrf_token").unwrap();
    let mut code = Some(admin_auth.next_code());
    for wrong in ["", "yes", "compromise tsa", "compromise  issuing x"] {
        let r = admin.post_form(
            "/admin/ca/compromise",
            &[
                ("csrf_token", &token),
                ("ca", "issuing"),
                ("confirm", wrong),
                ("totp_code", &code.take().unwrap_or_default()),
            ],
        );
        assert_eq!(r.status, 400, "confirmation {wrong:?}: {}", r.text());
        assert!(html_unescape(&r.text()).contains("\"compromise issuing\""), "{}", r.text());
    }
    assert_eq!(status_of(&env, &serial_of_kind(&env, "issuing-ca")), "valid");
    server.stop();
}

#[test]
fn compromise_of_the_issuing_ca_stops_issuance_ocsp_and_lists_it_on_the_root_crl() {
    let env = Env::new();
    let admin_otp = one_time_password(&env.init().stdout);
    let server = env.serve();
    let ca = env.ca_files();
    let (leaf, leaf_pem) = issue(&env, "dora@example.com");
    let ocsp = |env: &Env| openssl_ocsp(&ca, &leaf_pem, env.port);
    let before = ocsp(&env);
    assert!(before.contains(": good") && before.contains("Response verify OK"), "{before}");
    let issuing = serial_of_kind(&env, "issuing-ca");
    // An encryption certificate in the directory, and a sender identity sealing mail to it.
    let csr = csr_for(&env, "dora.enc@example.com");
    env.pki(["issue", "--email", "dora.enc@example.com", "--usage", "encryption", "--csr", &p(&csr)]);
    env.pki(["mail", "sender", "add", "--name", "statements", "--email", "statements@example.com"]);
    let mailer = env.pki(["apikey", "create", "--name", "mailer", "--permission", "mail"]).stdout;
    let mailer = mailer.trim();
    env.pki(["mail", "sender", "allow", "--name", "statements", "--key", "mailer"]);
    let seal = || {
        let body = serde_json::json!({"to": "dora.enc@example.com", "sender": "statements",
            "subject": "Your statement", "text": "Dear customer", "fallback": "invitation"});
        let auth = format!("Bearer {mailer}");
        directory_support::http(
            env.port,
            "POST",
            "/api/v1/mail/seal",
            &[("Content-Type", "application/json"), ("Accept", "application/json"), ("Authorization", &auth)],
            Some(body.to_string().as_bytes()),
        )
    };
    let fetch = || {
        directory_support::get(
            env.port,
            "/api/v1/certificates?email=dora.enc%40example.com&usage=encryption",
            Some(mailer),
        )
    };
    // The certificate by itself (by serial), as an application that kept its serial asks.
    let by_serial = |serial: &str| {
        let r = directory_support::get(
            env.port,
            &format!("/api/v1/certificates/by-serial/{serial}"),
            Some(mailer),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    assert_eq!(by_serial(&leaf)["status"], "valid");
    assert!(by_serial(&leaf)["revocation"].is_null());
    assert!(directory_support::exists(env.port, "dora.enc@example.com", "encryption", Some(mailer)));
    assert_eq!(fetch().status, 200);
    let sealed = seal();
    assert_eq!(sealed.status, 200, "{}", sealed.text());

    // A confirmation that is not exactly the typed words is refused; nothing changes.
    for wrong in ["compromise ocsp", "yes", "compromise"] {
        env.pki_fails(
            ["ca", "compromise", "--ca", "issuing", "--confirm", wrong],
            &["\"compromise issuing\""],
        );
    }
    env.pki_fails(
        ["ca", "compromise", "--ca", "root", "--confirm", "compromise root"],
        &["issuing, ocsp, tsa, tls or audit"],
    );
    assert_eq!(status_of(&env, &issuing), "valid");
    issue(&env, "erin@example.com");

    let out = env.pki(["ca", "compromise", "--ca", "issuing", "--confirm", "compromise issuing"]);
    assert!(
        out.stdout.contains(&format!("revoked the issuing certificate {issuing} (cACompromise)")),
        "{}",
        out.stdout
    );
    assert_eq!(status_of(&env, &issuing), "revoked");

    // `pki issue` is refused at once (through the socket), and in the console.
    let csr = csr_for(&env, "frank@example.com");
    env.pki_fails(
        ["issue", "--email", "frank@example.com", "--usage", "signing", "--csr", &p(&csr)],
        &["issuing certificate was revoked by `pki ca compromise`"],
    );
    let officer_otp =
        one_time_password(&env.pki(["user", "add", "--name", "olivia", "--role", "officer"]).stdout);
    let mut officer = Client::new(env.port);
    first_login(&mut officer, "olivia", &officer_otp, PW);
    let token = officer.csrf("/admin/issue");
    let r = officer.post_multipart(
        "/admin/issue/csr",
        &[
            ("csrf_token", None, token.as_bytes()),
            ("email", None, b"frank@example.com"),
            ("usage", None, b"signing"),
            ("csr", Some("req.csr"), &std::fs::read(&csr).unwrap()),
        ],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(html_unescape(&r.text()).contains("pki ca compromise"), "{}", r.text());

    // The directory hands out no certificate of the revoked issuing CA: the address has none
    // valid (no client gets a chain its relying parties refuse); sealed mail neither encrypts to
    // one nor signs with a sender identity it issued, and says why.
    assert!(!directory_support::exists(env.port, "dora.enc@example.com", "encryption", Some(mailer)));
    let r = fetch();
    assert_eq!(r.status, 404, "{}", r.text());
    let r = seal();
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("the issuing CA, which `pki ca compromise` revoked"), "{}", r.text());
    // Asked by itself, a certificate of the revoked issuing CA is revoked for cACompromise from
    // the time the issuing CA was revoked: in the directory, `pki show` and the console.
    let issuing_revoked = by_serial(&issuing)["revocation"]["revoked_at"].clone();
    assert!(issuing_revoked.is_string(), "{}", by_serial(&issuing));
    let shown = by_serial(&leaf);
    assert_eq!(shown["status"], "revoked", "{shown}");
    assert_eq!(shown["revocation"]["reason"], "cACompromise", "{shown}");
    assert_eq!(shown["revocation"]["revoked_at"], issuing_revoked, "{shown}");
    let show = env.pki(["show", "--serial", &leaf]).stdout;
    assert!(show.contains("its issuer, the issuing CA, was compromised"), "{show}");
    assert_eq!(status_of(&env, &leaf), "revoked");
    let page = html_unescape(&officer.get(&format!("/admin/certificates/{leaf}")).text());
    let status_cell = page.split("id=\"status\"").nth(1).unwrap_or_default();
    assert!(status_cell[..status_cell.find("</td>").unwrap_or(0)].contains("revoked"), "{page}");
    assert!(page.contains("cACompromise: its issuer, the issuing CA, was compromised"), "{page}");

    // OCSP: no good answer signed by the revoked CA's signer, but `unauthorized` (RFC 6960 §2.3).
    let after = ocsp(&env);
    assert!(!after.contains(": good") && after.contains("unauthorized"), "{after}");

    // The root's CRL lists the issuing CA with reason cACompromise, and verifies.
    let crl = env.write("root.crl", env.pki(["crl", "--ca", "root"]).stdout);
    let text = openssl(["crl", "-in", &p(&crl), "-text", "-noout", "-CAfile", &p(&ca.root)]);
    let listed = text.stdout.to_ascii_uppercase();
    assert!(listed.contains(&format!("SERIAL NUMBER: {issuing}")), "{}", text.stdout);
    assert!(text.stdout.contains("CA Compromise"), "{}", text.stdout);
    assert!(
        text.stderr.contains("verify OK") || text.stdout.contains("verify OK"),
        "{}{}",
        text.stdout,
        text.stderr
    );
    env.pki(["audit", "verify"]);
    // The audit log is still anchored: the root certifies the audit signer, and its checkpoints
    // verify.
    let checkpoint = env.path("after-compromise.cms");
    env.pki(["audit", "checkpoint", "--out", &p(&checkpoint)]);
    let verified = env.pki(["audit", "verify", "--checkpoint", &p(&checkpoint)]).stdout;
    assert!(verified.starts_with("audit log verified: "), "{verified}");
    drop(admin_otp);

    // After a restart, still refused.
    server.stop();
    env.pki_fails(
        ["issue", "--email", "frank@example.com", "--usage", "signing", "--csr", &p(&csr)],
        &["pki ca compromise"],
    );
    let _server = env.serve();
    let again = ocsp(&env);
    assert!(!again.contains(": good") && again.contains("unauthorized"), "{again}");
    assert!(!directory_support::exists(env.port, "dora.enc@example.com", "encryption", Some(mailer)));
    assert_eq!(seal().status, 409);
    env.pki_fails(
        ["issue", "--email", "frank@example.com", "--usage", "signing", "--csr", &p(&csr)],
        &["pki ca compromise"],
    );
    assert_eq!(status_of(&env, &leaf), "revoked");
    assert_eq!(by_serial(&leaf)["revocation"]["revoked_at"], issuing_revoked);
}

#[test]
fn a_compromised_ocsp_signer_and_tsa_are_replaced_by_a_rekey_and_verify_again() {
    let env = Env::new();
    env.init();
    let server = env.serve();
    let ca = env.ca_files();
    let (_, leaf_pem) = issue(&env, "ruth@example.com");
    let before = openssl_ocsp(&ca, &leaf_pem, env.port);
    assert!(before.contains(": good") && before.contains("Response verify OK"), "{before}");
    let old = serial_of_kind(&env, "ocsp-signer");

    // The issuing CA is not re-keyed here: one line saying what is.
    env.pki_fails(["ca", "rekey", "--ca", "issuing"], &["replaces the OCSP signer, the TSA, the TLS"]);
    env.pki_fails(["ca", "rekey", "--ca", "root"], &["issuing, ocsp, tsa, tls or audit"]);

    let out = env.pki(["ca", "compromise", "--ca", "ocsp", "--confirm", "compromise ocsp"]).stdout;
    assert!(out.contains("(keyCompromise)") && out.contains("pki ca rekey --ca ocsp"), "{out}");
    let during = openssl_ocsp(&ca, &leaf_pem, env.port);
    assert!(!during.contains(": good"), "a good answer from the compromised signer: {during}");

    // Through the running server's admin socket: its responder takes the new signer up at once.
    let out = env.pki(["ca", "rekey", "--ca", "ocsp"]).stdout;
    let new = out
        .strip_prefix("the OCSP signer is now certificate ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert_ne!(new, old);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let answer = openssl_ocsp(&ca, &leaf_pem, env.port);
        if answer.contains(": good") || std::time::Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(after.contains(": good") && after.contains("Response verify OK"), "{after}");
    assert_eq!(status_of(&env, &old), "revoked");
    assert_eq!(status_of(&env, &new), "valid");

    // The TSA the same way: compromised, it gives no timestamp; re-keyed (a new key, certified
    // by the root), its timestamps verify with OpenSSL again.
    assert!(openssl_ts_verify(&env, env.port, &ca.root).contains("Verification: OK"));
    let before = stamp_without_certificate(&env, "before");
    let old_tsa = serial_of_kind(&env, "tsa");
    let out = env.pki(["ca", "compromise", "--ca", "tsa", "--confirm", "compromise tsa"]).stdout;
    assert!(out.contains("pki ca rekey --ca tsa"), "{out}");
    let during = openssl_ts_verify(&env, env.port, &ca.root);
    assert!(!during.contains("Verification: OK"), "a timestamp from the compromised TSA: {during}");
    let out = env.pki(["ca", "rekey", "--ca", "tsa"]).stdout;
    assert!(out.starts_with("the TSA is now certificate "), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stamped = loop {
        let verified = openssl_ts_verify(&env, env.port, &ca.root);
        if verified.contains("Verification: OK") || std::time::Instant::now() > deadline {
            break verified;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(stamped.contains("Verification: OK"), "{stamped}");
    assert_eq!(status_of(&env, &old_tsa), "revoked");
    // Tokens that carry no certificate, from before the compromise and after the re-key, verify
    // through the verify endpoint of the server that ran through both: it knows both TSA
    // certificates.
    let after = stamp_without_certificate(&env, "after");
    for (token, doc) in [&before, &after] {
        let (code, body) = curl_post_form(
            &format!("{}/api/v1/timestamps/verify", env.base_url()),
            &[format!("token=@{}", p(token)), format!("data=@{}", p(doc))],
        );
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"verified\":true"), "{body}");
    }
    // `pki ca-cert tsa` gives the new certificate.
    let tsa_now = cert_serial(&pem_der(&env.pki(["ca-cert", "tsa"]).stdout));
    assert_ne!(tsa_now, old_tsa);
    assert_eq!(status_of(&env, &tsa_now), "valid");

    // After a restart the new signers answer, the old ones stay revoked, the log verifies.
    server.stop();
    let _server = env.serve();
    let restarted = openssl_ocsp(&ca, &leaf_pem, env.port);
    assert!(restarted.contains(": good") && restarted.contains("Response verify OK"), "{restarted}");
    let restarted = openssl_ts_verify(&env, env.port, &ca.root);
    assert!(restarted.contains("Verification: OK"), "{restarted}");
    let audit = env.pki(["audit", "verify"]).stdout;
    assert!(audit.contains("intact"), "{audit}");
}

#[test]
fn an_administrator_revokes_the_tsa_in_the_console_with_step_up() {
    let env = Env::with_config("[console]\nstep_up_secs = 2\n");
    let admin_otp = one_time_password(&env.init().stdout);
    let _server = env.serve();
    let data = env.write("data.txt", "to be stamped\n");
    env.pki(["ts", "stamp", &p(&data)]);
    let tsa = serial_of_kind(&env, "tsa");
    let mut admin = Client::new(env.port);
    let mut auth = first_login(&mut admin, "admin", &admin_otp, PW);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let token = admin.csrf("/admin/settings");
    let fields = |code: &str| {
        vec![
            ("csrf_token".to_string(), token.clone()),
            ("ca".to_string(), "tsa".to_string()),
            ("confirm".to_string(), "compromise tsa".to_string()),
            ("totp_code".to_string(), code.to_string()),
        ]
    };
    let post = |admin: &mut Client, f: Vec<(String, String)>| {
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        admin.post_form("/admin/ca/compromise", &f)
    };
    let r = post(&mut admin, fields(""));
    assert_eq!(r.status, 403, "step-up is required: {}", r.text());
    assert_eq!(status_of(&env, &tsa), "valid");
    let r = post(&mut admin, fields(&auth.next_code()));
    assert_eq!(
        (r.status, r.location()),
        (303, "/admin/settings?compromised=tsa".to_string()),
        "{}",
        r.text()
    );
    assert_eq!(status_of(&env, &tsa), "revoked");
    let page = admin.get("/admin/settings?compromised=tsa").text();
    assert!(page.contains("revoked: key compromised"), "{page}");
    let show = env.pki(["show", "--serial", &tsa]).stdout;
    assert!(show.contains("(keyCompromise)"), "{show}");
    // The TSA signs no more; the issuing CA still issues.
    env.pki_fails(
        ["ts", "stamp", &p(&data), "--out", &p(&env.path("after.tsr"))],
        &["the TSA refused", "its certificate is revoked"],
    );
    // Over HTTP too: a rejection, no token.
    env.pki_fails(
        ["ts", "stamp", &p(&data), "--server", &env.base_url(), "--out", &p(&env.path("http.tsr"))],
        &["the TSA refused", "its certificate is revoked"],
    );
    issue(&env, "gina@example.com");
    // The root's CRL lists the TSA.
    let crl = env.write("root.crl", env.pki(["crl", "--ca", "root"]).stdout);
    let text = openssl(["crl", "-in", &p(&crl), "-text", "-noout"]).stdout;
    assert!(text.to_ascii_uppercase().contains(&format!("SERIAL NUMBER: {tsa}")), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");

    // A new key for the TSA from the console, with step-up too: timestamps are given again.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let token = admin.csrf("/admin/settings");
    let rekey = |admin: &mut Client, ca: &str, code: &str| {
        admin.post_form("/admin/ca/rekey", &[("csrf_token", token.as_str()), ("ca", ca), ("totp_code", code)])
    };
    let r = rekey(&mut admin, "root", "");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = rekey(&mut admin, "tsa", "");
    assert_eq!(r.status, 403, "step-up is required: {}", r.text());
    let r = rekey(&mut admin, "tsa", &auth.next_code());
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.location();
    let new_tsa =
        location.strip_prefix("/admin/settings?rekeyed=tsa:").unwrap_or_else(|| panic!("{location}"));
    assert_eq!(status_of(&env, new_tsa), "valid");
    assert_eq!(status_of(&env, &tsa), "revoked");
    // Within the step-up window: the issuing CA is not re-keyed here, said as a conflict.
    let r = rekey(&mut admin, "issuing", "");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("cannot be re-keyed here"), "{}", r.text());
    let page = admin.get(&location).text();
    assert!(page.contains("id=\"rekeyed\"") && page.contains(new_tsa), "{page}");
    // The running TSA takes the new key up within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stamped = loop {
        let out = env.pki_try([
            "ts",
            "stamp",
            &p(&data),
            "--server",
            &env.base_url(),
            "--out",
            &p(&env.path("new.tsr")),
        ]);
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(stamped.status.success(), "{}", stamped.stderr);
}

#[test]
fn a_terminal_escape_in_a_csr_is_shown_escaped() {
    let env = Env::new();
    env.init();
    let key = gen_key(env.dir(), "esc.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("esc.csr"), "/CN=\x1b[2Jmallory@example.com", &[]);
    let args = ["issue", "--email", "alice@example.com", "--usage", "signing", "--csr", &p(&csr)];
    let check = |out: Out| {
        let line = out.one_error_line();
        assert!(line.contains("\\u{1b}[2Jmallory@example.com"), "{line}");
        assert!(
            !out.stderr.contains('\x1b') && !out.stdout.contains('\x1b'),
            "a raw escape: {:?}",
            out.stderr
        );
    };
    check(env.pki_try(args));
    let server = env.serve();
    check(env.pki_try(args));
    server.stop();
}

/// Every directory under `dir` 0700 and every file 0600 (sockets aside).
fn assert_owner_only(dir: &Path) {
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let mut files = 0;
    for path in files_under(dir) {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_file() {
            files += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(files > 3, "the database and key store files were looked at");
    for entry in walk_dirs(dir) {
        assert_eq!(mode(&entry), 0o700, "{}", entry.display());
    }
}

fn walk_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                pending.push(e.path());
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn the_data_directory_is_forced_owner_only_on_every_open() {
    // On the embedded engine, whatever PKI_TESTS_BACKEND says: that is the layout whose database
    // and key store live in the data directory. On PostgreSQL both are in the database and the
    // data directory holds none of the CA's files.
    let env = Env::on_sled("");
    std::fs::create_dir(&env.data).unwrap();
    std::fs::set_permissions(&env.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(env.data.join("notes.txt"), "left here before").unwrap();
    std::fs::set_permissions(env.data.join("notes.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    env.init();
    assert_owner_only(&env.data);
    assert!(!walk_dirs(&env.data).is_empty(), "the database and key store have directories");
    // Loosened again behind the CA's back: the next command that opens it tightens everything.
    for d in walk_dirs(&env.data) {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in files_under(&env.data) {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&env.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.pki(["list"]);
    assert_owner_only(&env.data);
    let server = env.serve();
    server.stop();
    for f in files_under(&env.data) {
        if std::fs::symlink_metadata(&f).unwrap().is_file() {
            assert_eq!(
                std::fs::metadata(&f).unwrap().permissions().mode() & 0o077,
                0,
                "{} after pki serve",
                f.display()
            );
        }
    }
}

#[test]
fn compromised_tls_and_audit_signers_stop_at_once_and_a_rekey_brings_https_and_checkpoints_back() {
    let env = Env::new();
    env.init();
    let tls_port = free_port();
    let tls_args = |env: &Env| {
        vec![
            "serve".to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{}", env.port),
            "--tls-listen".to_string(),
            format!("127.0.0.1:{tls_port}"),
        ]
    };
    let serve_tls = |env: &Env| Server::start(&mut env.command(tls_args(env)), env.port, env.dir());
    let server = serve_tls(&env);
    let ca = env.ca_files();
    let curl = || {
        run(std::process::Command::new(curl_bin())
            .args(["-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca.root)
            .arg(format!("https://localhost:{tls_port}/admin/login")))
    };
    let served_within_seconds = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = curl();
            if out.status.success() || std::time::Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    assert_eq!(curl().ok().stdout, "200");
    let tls = serial_of_kind(&env, "tls-server");
    env.pki_fails(["revoke", "--serial", &tls, "--reason", "keyCompromise"], &["pki ca compromise --ca tls"]);
    let out = env.pki(["ca", "compromise", "--ca", "tls", "--confirm", "compromise tls"]);
    assert!(out.stdout.contains("(keyCompromise)"), "{}", out.stdout);
    assert!(out.stdout.contains("pki ca rekey --ca tls"), "{}", out.stdout);
    // The running server's key signs no handshake any more.
    let out = curl();
    assert!(!out.status.success(), "a handshake with the compromised key: {}", out.stdout);
    // The root's CRL lists it.
    let crl = env.write("root.crl", env.pki(["crl", "--ca", "root"]).stdout);
    let text = openssl(["crl", "-in", &p(&crl), "-text", "-noout"]).stdout;
    assert!(text.to_ascii_uppercase().contains(&format!("SERIAL NUMBER: {tls}")), "{text}");
    server.stop();
    // The next start refuses to serve HTTPS with it, saying why.
    let out = env.pki_try(tls_args(&env));
    assert!(!out.status.success());
    assert!(out.stderr.contains("tls certificate was revoked by `pki ca compromise`"), "{}", out.stderr);

    // `pki ca rekey --ca tls` with no server running: a new key, certified by the root; the next
    // start serves HTTPS with it, and curl trusts it through the root.
    let out = env.pki(["ca", "rekey", "--ca", "tls"]).stdout;
    assert!(out.starts_with("the TLS certificate is now certificate "), "{out}");
    let server = serve_tls(&env);
    assert_eq!(served_within_seconds().ok().stdout, "200");
    assert_eq!(status_of(&env, &tls), "revoked");

    // Compromised again while the server runs, and re-keyed through its admin socket: the running
    // server serves the new certificate within seconds, without a restart.
    let list = parse_list(&env.pki(["list"]).stdout);
    let second = list.iter().find(|r| r.kind == "tls-server" && r.status == "valid").unwrap().serial.clone();
    env.pki(["ca", "compromise", "--ca", "tls", "--confirm", "compromise tls"]);
    assert!(!curl().status.success(), "a handshake with the compromised key");
    env.pki(["ca", "rekey", "--ca", "tls"]);
    assert_eq!(served_within_seconds().ok().stdout, "200");
    assert_eq!(status_of(&env, &second), "revoked");

    // The audit signer: a checkpoint before; compromised, no checkpoint is signed; re-keyed (a new
    // key, certified by the issuing CA), checkpoints are signed and verify again, the one from
    // before the compromise too.
    let before = env.path("before.cms");
    env.pki(["audit", "checkpoint", "--out", &p(&before)]);
    let audit = serial_of_kind(&env, "audit-signer");
    // Revocation times are whole seconds: one in the second of the checkpoint's timestamp would
    // (rightly) count as before it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = env.pki(["ca", "compromise", "--ca", "audit", "--confirm", "compromise audit"]).stdout;
    assert!(out.contains("pki ca rekey --ca audit"), "{out}");
    let refused = env.path("refused.cms");
    env.pki_fails(["audit", "checkpoint", "--out", &p(&refused)], &["audit certificate was revoked"]);
    let out = env.pki(["ca", "rekey", "--ca", "audit"]).stdout;
    assert!(out.starts_with("the audit signer is now certificate "), "{out}");
    let after = env.path("after.cms");
    env.pki(["audit", "checkpoint", "--out", &p(&after)]);
    for file in [&before, &after] {
        let ok = env.pki(["audit", "verify", "--checkpoint", &p(file)]).stdout;
        assert!(ok.starts_with("audit log verified: "), "{ok}");
    }
    assert_eq!(status_of(&env, &audit), "revoked");
    let signers: Vec<_> = parse_list(&env.pki(["list"]).stdout)
        .into_iter()
        .filter(|r| r.kind == "audit-signer" && r.status == "valid")
        .collect();
    assert_eq!(signers.len(), 1, "{signers:?}");

    // After a restart, both answer with the re-keyed certificates.
    server.stop();
    let _server = serve_tls(&env);
    assert_eq!(served_within_seconds().ok().stdout, "200");
    let again = env.path("again.cms");
    env.pki(["audit", "checkpoint", "--out", &p(&again)]);
    let ok = env.pki(["audit", "verify", "--checkpoint", &p(&again)]).stdout;
    assert!(ok.starts_with("audit log verified: "), "{ok}");
}
