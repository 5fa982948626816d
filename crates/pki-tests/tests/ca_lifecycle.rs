//! Issue 16, acceptance 2 and the first two parts of 7, against the real `pki` binary and
//! `pki serve`: with the clock moved past its renewal window (libfaketime), the OCSP signer is
//! replaced by a new one, which OpenSSL's OCSP client verifies; an OCSP signer that cannot be
//! renewed is never used after its notAfter; `pki status`, `/healthz` and the console's dashboard
//! show the CA-side certificates within their warning window; pkilint's CA profiles find no error
//! in the default root and issuing CA; a `[ca.root]` table with only `subject` works.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use pki_tests::console_support::*;
use pki_tests::*;

const PW: &str = "Correct-Horse-Battery-9";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A signing certificate for `email` from a CSR; its PEM file.
fn issue(env: &Env, email: &str) -> std::path::PathBuf {
    let key = gen_key(env.dir(), &format!("{email}.key"), KeySpec::P256);
    let csr = make_csr(&key, &env.path(&format!("{email}.csr")), &format!("/CN={email}"), &[]);
    let pem = env.pki(["issue", "--email", email, "--usage", "signing", "--csr", &p(&csr)]).stdout;
    env.write(&format!("{email}.pem"), pem)
}

/// The rows of `pki status`: (cert, serial, days left, state).
fn status_rows(stdout: &str) -> Vec<(String, String, i64, String)> {
    stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("attention:"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 7, "a pki status row has 7 fields: {l}");
            (f[0].to_string(), f[1].to_string(), f[4].parse().unwrap(), f[6].to_string())
        })
        .collect()
}

fn row<'a>(rows: &'a [(String, String, i64, String)], name: &str) -> &'a (String, String, i64, String) {
    rows.iter().find(|r| r.0 == name).unwrap_or_else(|| panic!("no {name} row in pki status"))
}

/// `openssl ocsp` for `leaf`, run `offset` in the future like the server; stdout and stderr, and
/// the DER response.
fn ocsp_at(env: &Env, offset: &str, leaf: &Path, ca: &CaFiles, name: &str) -> (String, Vec<u8>) {
    let resp = env.path(&format!("{name}.der"));
    let mut cmd = std::process::Command::new(openssl_bin());
    cmd.args(["ocsp", "-issuer", &p(&ca.issuing), "-cert", &p(leaf), "-CAfile", &p(&ca.root)]).args([
        "-url",
        &format!("{}/ocsp", env.base_url()),
        "-respout",
        &p(&resp),
    ]);
    let out = run(&mut faketime(offset, &cmd));
    (format!("{}{}", out.stdout, out.stderr), std::fs::read(&resp).unwrap_or_default())
}

/// The serial (upper-case hex) of the signer certificate a DER OCSP response carries.
fn responder_serial(env: &Env, resp: &[u8]) -> String {
    let file = env.write("resp-text.der", resp);
    let text = openssl(["ocsp", "-respin", &p(&file), "-resp_text", "-noverify"]).stdout;
    // After the responses' CertIDs (which name the leaf's serial), the signer certificate.
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != "Certificate:")
        .skip_while(|l| !l.trim_start().starts_with("Serial Number:"));
    let first = lines.next().expect("the response carries the signer certificate");
    let inline = first.trim_start().trim_start_matches("Serial Number:").trim();
    let hex = if inline.is_empty() { lines.next().unwrap().trim().to_string() } else { inline.to_string() };
    hex.split(' ').next().unwrap().replace(':', "").to_ascii_uppercase()
}

#[test]
fn the_ocsp_signer_is_replaced_before_its_window_and_openssl_verifies_the_new_one() {
    let env = Env::with_config("[ca.ocsp_signer]\nvalidity_days = 60\n");
    env.init();
    let ca = env.ca_files();
    let leaf = issue(&env, "ada@example.com");
    let old = cert_serial(&pem_der(&env.pki(["ca-cert", "ocsp"]).stdout));
    let rows = status_rows(&env.pki(["status"]).stdout);
    assert_eq!(row(&rows, "ocsp").1, old);
    assert_eq!(row(&rows, "ocsp").3, "valid");
    assert!((58..=60).contains(&row(&rows, "ocsp").2), "{rows:?}");

    // 45 days on, 15 days are left: within the 30-day window, so `pki serve` re-issues it.
    let serve = env.command(["serve", "--listen", &format!("127.0.0.1:{}", env.port)]);
    let server = Server::start(&mut faketime("+45d", &serve), env.port, env.dir());
    let mut status = env.command(["status"]);
    let now = run(&mut faketime("+45d", &status)).ok().stdout;
    let rows = status_rows(&now);
    let (_, new, days, state) = row(&rows, "ocsp").clone();
    assert_ne!(new, old, "a new OCSP signer certificate is in use:\n{now}");
    assert_eq!(state, "valid", "{now}");
    assert!((58..=60).contains(&days), "the new signer has its full validity: {now}");
    let new_pem = run(&mut faketime("+45d", &env.command(["ca-cert", "ocsp"]))).ok().stdout;
    assert_eq!(cert_serial(&pem_der(&new_pem)), new);
    // A new key in custody, too.
    let key_of = |pem: &str| {
        let f = env.write("signer.pem", pem);
        openssl(["x509", "-in", &p(&f), "-noout", "-pubkey"]).stdout
    };
    let old_pem = env.pki(["show", "--serial", &old]).stdout;
    let old_pem = &old_pem[old_pem.find("-----BEGIN CERTIFICATE-----").unwrap()..];
    assert_ne!(key_of(&new_pem), key_of(old_pem), "the new signer has a new key");

    let (text, resp) = ocsp_at(&env, "+45d", &leaf, &ca, "renewed");
    assert!(text.contains("Response verify OK") && text.contains(": good"), "{text}");
    assert_eq!(responder_serial(&env, &resp), new, "the answer is signed by the new signer");
    let list = parse_list(&run(&mut faketime("+45d", &env.command(["list"]))).ok().stdout);
    assert_eq!(list.iter().filter(|r| r.kind == "ocsp-signer").count(), 2, "both signers are on record");
    let audit = run(&mut faketime("+45d", &env.command(["audit", "verify"]))).ok();
    assert!(audit.stdout.contains("hash chain intact"), "{}", audit.stdout);
    server.stop();

    // Past the old signer's notAfter, after a restart: the new one, and only it, answers.
    let server = Server::start(&mut faketime("+61d", &serve), env.port, env.dir());
    let (text, resp) = ocsp_at(&env, "+61d", &leaf, &ca, "later");
    assert!(text.contains("Response verify OK") && text.contains(": good"), "{text}");
    assert_eq!(responder_serial(&env, &resp), new);
    status = env.command(["status"]);
    let rows = status_rows(&run(&mut faketime("+61d", &status)).ok().stdout);
    assert_eq!(row(&rows, "ocsp").1, new, "no further renewal was due");
    server.stop();
}

#[test]
fn an_ocsp_signer_that_cannot_be_renewed_is_not_used_after_its_not_after() {
    // The issuing CA ends with the signer: a new signer could not outlive it, so none is made.
    let env = Env::with_config("[ca.issuing]\nvalidity_days = 40\n\n[ca.ocsp_signer]\nvalidity_days = 40\n");
    env.init();
    let ca = env.ca_files();
    let leaf = issue(&env, "bo@example.com");
    let old = cert_serial(&pem_der(&env.pki(["ca-cert", "ocsp"]).stdout));
    let serve = env.command(["serve", "--listen", &format!("127.0.0.1:{}", env.port)]);

    // Within the window but still valid: it answers (nothing better exists) and is reported.
    let server = Server::start(&mut faketime("+20d", &serve), env.port, env.dir());
    let (text, resp) = ocsp_at(&env, "+20d", &leaf, &ca, "window");
    assert!(text.contains("Response verify OK") && text.contains(": good"), "{text}");
    assert_eq!(responder_serial(&env, &resp), old);
    let (code, _, body) = curl_get_status(&format!("{}/healthz", env.base_url()));
    let health = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "{health}");
    assert!(
        health.contains(r#""status":"degraded""#) && health.contains(r#""certificate":"ocsp""#),
        "{health}"
    );
    server.stop();

    // Past its notAfter: no answer is signed with it (tryLater), and the state says why.
    let server = Server::start(&mut faketime("+41d", &serve), env.port, env.dir());
    let (text, resp) = ocsp_at(&env, "+41d", &leaf, &ca, "expired");
    assert!(text.contains("trylater"), "an expired signer must not sign: {text}");
    assert_eq!(resp, [0x30, 0x03, 0x0a, 0x01, 0x03], "a bare tryLater response");
    let now = run(&mut faketime("+41d", &env.command(["status"]))).ok().stdout;
    assert_eq!(row(&status_rows(&now), "ocsp").3, "expired", "{now}");
    assert!(now.contains(&format!("attention: the ocsp certificate {old} expired on")), "{now}");
    server.stop();
}

#[test]
fn status_healthz_and_the_dashboard_show_certificates_within_their_warning_window() {
    // The TSA certificate (1826 days) is within a 2000-day warning window from the start.
    let env = Env::with_config("[ca.expiry]\nwarning_days = 2000\n");
    let admin_otp = one_time_password(&env.init().stdout);
    let tsa = cert_serial(&pem_der(&env.pki(["ca-cert", "tsa"]).stdout));
    let out = env.pki(["status"]).stdout;
    let rows = status_rows(&out);
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["root", "issuing", "ocsp", "tsa", "tls"]
    );
    assert_eq!(row(&rows, "tsa").1, tsa);
    assert_eq!(row(&rows, "tsa").3, "expiring", "{out}");
    for other in ["root", "issuing", "ocsp", "tls"] {
        assert_eq!(row(&rows, other).3, "valid", "{out}");
    }
    assert!(
        out.contains(&format!("attention: the tsa certificate {tsa} ends in 18"))
            && out.contains("2000-day warning window"),
        "{out}"
    );

    let _server = env.serve();
    let (code, _, body) = curl_get_status(&format!("{}/healthz", env.base_url()));
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "an expiring certificate does not take the node out of service");
    assert_eq!(health["status"], "degraded");
    let certs = health["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{health}");
    assert_eq!(certs[0]["certificate"], "tsa");
    assert_eq!(certs[0]["serial"], tsa.as_str());
    assert_eq!(certs[0]["state"], "expiring");
    assert!(certs[0]["reason"].as_str().unwrap().contains("within its 2000-day warning window"));

    let mut admin = Client::new(env.port);
    first_login(&mut admin, "admin", &admin_otp, PW);
    let page = admin.get("/admin/");
    assert_eq!(page.status, 200);
    let own =
        element_text(&page.text(), "own-certificates").expect("the dashboard lists the CA certificates");
    assert!(own.contains("1 of the CA's own certificates need attention"), "{own}");
    assert!(own.contains(&tsa) && own.contains("expiring"), "{own}");
}

/// `pki.toml` of `env` with `public_base_url` on a public name, as a deployment has it (pkilint
/// reports a loopback address in a CA certificate's URLs as an internal name).
fn with_public_base_url(env: &Env) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replace(
        &format!("public_base_url = \"{}\"", env.base_url()),
        "public_base_url = \"http://pki.examplebank.com\"",
    );
    std::fs::write(&env.config, text).unwrap();
}

#[test]
fn pkilint_ca_profiles_find_no_error_in_the_default_root_and_issuing_ca() {
    let lint = require_tool("lint_cabf_serverauth_cert", "python3 -m pip install pkilint==0.13.3");
    let env = Env::new();
    with_public_base_url(&env);
    env.init();
    let ca = env.ca_files();
    for (file, profile) in [(&ca.root, "ROOT-CA"), (&ca.issuing, "NON-TLS-CA")] {
        let out = run(std::process::Command::new(&lint).args(["lint", "-t", profile, &p(file)]));
        let report = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !report.contains("(ERROR)") && !report.contains("(FATAL)") && !report.contains("Traceback"),
            "pkilint {profile}:\n{report}"
        );
        let subject = openssl(["x509", "-in", &p(file), "-noout", "-subject", "-nameopt", "RFC2253"]).stdout;
        assert!(subject.contains("C=US") && subject.contains("O=Example Bank"), "{subject}");
    }
}

#[test]
fn a_root_table_with_only_its_subject_works_and_a_new_ca_needs_a_country() {
    let env = Env::with_config(
        "[ca.root]\nsubject = { common_name = \"Acme Root\", organization = \"Acme Bank\", country = \"DE\" }\n",
    );
    env.init();
    let root = env.ca_files().root;
    let text = openssl(["x509", "-in", &p(&root), "-noout", "-text", "-nameopt", "RFC2253"]).stdout;
    assert!(text.contains("Subject: CN=Acme Root,O=Acme Bank,C=DE"), "{text}");
    assert!(text.contains("NIST CURVE: P-384"), "the default key type is kept: {text}");
    let days = openssl(["x509", "-in", &p(&root), "-noout", "-startdate", "-enddate"]).stdout;
    assert!(days.contains("notAfter="), "{days}");

    let env = Env::with_config(
        "[ca.issuing]\nsubject = { common_name = \"Acme Issuing\", organization = \"Acme\" }\n",
    );
    env.pki_fails(["init"], &["ca.issuing.subject.country is required", "7.1.4.3"]);
    assert!(!env.data.join("db").exists() || env.pki_try(["status"]).stderr.contains("not initialised"));
}
