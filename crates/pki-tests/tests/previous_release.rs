//! Issue 14, acceptance 3: a data directory written by the previous release opens with the binary
//! under test, which gives the same answers the previous release gave about it.
//!
//! The fixture, `tests/data/previous-release/`, was made once by `make.sh` with the `pki` binary
//! of an earlier release (its README.md names the commit): `pki-data/` (init, certificates of both
//! usages, an escrowed key, a keyCompromise revocation, a timestamp, an API key, a console user
//! enrolled in TOTP) and `expected/`, that release's answers. Each test copies `pki-data/` into
//! a temporary directory (the fixture itself is never opened) and compares exactly; the only
//! adjustment is a certificate whose notAfter has passed since the fixture was made, which every
//! release shows as `expired` instead of `valid`.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use pki_tests::console_support::{form_value, Authenticator, Client};
use pki_tests::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/previous-release")
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A file of the fixture, as text.
fn fixture_text(name: &str) -> String {
    let path = fixture().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture file {}: {e}", path.display()))
}

/// What the previous release answered, from `expected/NAME`.
fn expected(name: &str) -> String {
    fixture_text(&format!("expected/{name}"))
}

/// Panics unless the answer is the previous release's, naming the command and the file.
fn same(what: &str, file: &str, got: &str, want: &str) {
    assert!(
        got == want,
        "`{what}` answers differently from the previous release (expected/{file}):\n--- previous release\n{want}\n--- this binary\n{got}"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read_dir {}: {e}", from.display())) {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

/// A row of the recorded `pki list`.
struct Row {
    serial: String,
    kind: String,
    not_after: DateTime<Utc>,
    email: String,
}

fn recorded_rows() -> Vec<Row> {
    expected("list.txt")
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "a row of expected/list.txt: {l}");
            Row {
                serial: f[0].to_string(),
                kind: f[1].to_string(),
                not_after: DateTime::parse_from_rfc3339(f[3]).expect("NOT AFTER").with_timezone(&Utc),
                email: f[4].to_string(),
            }
        })
        .collect()
}

/// The serial of the recorded certificate of `email` of `kind` (the only one).
fn serial_of(email: &str, kind: &str) -> String {
    let rows: Vec<Row> = recorded_rows().into_iter().filter(|r| r.email == email && r.kind == kind).collect();
    assert_eq!(rows.len(), 1, "expected/list.txt has one {kind} certificate of {email}");
    rows[0].serial.clone()
}

/// A copy of the fixture's data directory with the fixture's settings, in a temporary directory.
/// Fails, naming the remedy, once a subscriber certificate of the fixture has expired: from then
/// on lookups and statuses legitimately differ from the recorded ones.
fn open() -> Env {
    let now = Utc::now();
    let rows = recorded_rows();
    assert!(!rows.is_empty(), "expected/list.txt lists no certificate");
    if let Some(r) = rows
        .iter()
        .filter(|r| r.kind == "signing" || r.kind == "encryption")
        .min_by_key(|r| r.not_after)
        .filter(|r| r.not_after <= now)
    {
        panic!(
            "the previous-release fixture has expired: certificate {} ended {}. Remake it with \
             tests/data/previous-release/make.sh and the previous release's binary (README.md there)",
            r.serial, r.not_after
        );
    }
    let env = Env::new();
    copy_tree(&fixture().join("pki-data"), &env.data);
    // Since mailbox validation (issue 17) an upgraded installation names the organisation's
    // domains in [validation]: without it, every address needs a recorded validation.
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_group = \"{OFFICERS_GROUP}\"\n\n{}\n[hsm]\npassphrase_file = \"{}\"\n\n{TEST_ENTERPRISE_DOMAINS}",
        env.port,
        fixture_text("pki.toml"),
        p(&fixture().join("passphrase.txt"))
    );
    std::fs::write(&env.config, config).unwrap();
    env
}

/// A recorded `pki list` or `pki show` as it reads now: a certificate whose notAfter has passed
/// since it was recorded is `expired` (a revoked one stays `revoked`).
fn as_of_now(recorded: &str) -> String {
    let now = Utc::now();
    let ended = |t: &str| DateTime::parse_from_rfc3339(t.trim()).is_ok_and(|t| t <= now);
    if let Some(line) = recorded.lines().find_map(|l| l.strip_prefix("not after:")) {
        // `pki show`
        if ended(line) {
            return recorded.replacen("status:       valid\n", "status:       expired\n", 1);
        }
        return recorded.to_string();
    }
    let mut out = String::new();
    for (i, l) in recorded.lines().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if i > 0 && f.len() == 5 && f[2] == "valid" && ended(f[3]) {
            out.push_str(&l.replacen(&format!("{:<13}", "valid"), &format!("{:<13}", "expired"), 1));
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    out
}

/// The revoked entries of a CRL as `openssl crl -text` prints them, trimmed (make.sh does the
/// same).
fn crl_revoked(crl_pem: &Path) -> String {
    let text = openssl([
        OsStr::new("crl"),
        "-in".as_ref(),
        crl_pem.as_os_str(),
        "-noout".as_ref(),
        "-text".as_ref(),
    ])
    .stdout;
    let mut out = String::new();
    let mut inside = false;
    for l in text.lines() {
        if l.starts_with("Revoked Certificates:") {
            inside = true;
        } else if l.trim_start().starts_with("Signature Algorithm:") {
            inside = false;
        } else if inside {
            out.push_str(l.trim_start());
            out.push('\n');
        }
    }
    out
}

/// The SubjectPublicKeyInfo (PEM) of the private key in a PKCS#12, per OpenSSL.
fn p12_public_key(p12: &Path, password_file: &Path) -> String {
    let key = openssl([
        OsStr::new("pkcs12"),
        "-in".as_ref(),
        p12.as_os_str(),
        "-nocerts".as_ref(),
        "-nodes".as_ref(),
        "-passin".as_ref(),
        format!("file:{}", p(password_file)).as_ref(),
    ])
    .stdout;
    run_with_input(Command::new(openssl_bin()).args(["pkey", "-pubout"]), Some(key.as_bytes())).ok().stdout
}

/// Everything asked of the data directory itself, no server running: `pki audit verify` first
/// (before anything this binary writes), then list, show, lookup, the other read-only commands,
/// the compromised key's refusal, and the escrowed key's recovery.
#[test]
fn the_previous_releases_data_directory_gives_the_same_answers() {
    let env = open();

    let audit_verified = env.pki(["audit", "verify"]);
    let audit = audit_verified.stdout.clone();
    same("pki audit verify", "audit-verify.txt", &audit, &expected("audit-verify.txt"));
    // Its entries were written before the log was keyed: legacy, said on standard error.
    assert_eq!(audit_verified.stderr, "21 legacy unkeyed entries, covered only by the hash chain\n");

    same("pki list", "list.txt", &env.pki(["list"]).stdout, &as_of_now(&expected("list.txt")));
    let rows = recorded_rows();
    for r in &rows {
        let file = format!("show/{}.txt", r.serial);
        let got = env.pki(["show", "--serial", &r.serial]).stdout;
        same(&format!("pki show --serial {}", r.serial), &file, &got, &as_of_now(&expected(&file)));
    }
    for who in ["alice", "bob", "carol", "dave"] {
        for usage in ["signing", "encryption"] {
            let file = format!("lookup/{who}-{usage}.txt");
            let email = format!("{who}@example.com");
            let got = env.pki(["lookup", "--email", &email, "--usage", usage]).stdout;
            same(&format!("pki lookup --email {email} --usage {usage}"), &file, &got, &expected(&file));
        }
    }
    same(
        "pki apikey list",
        "apikey-list.txt",
        &env.pki(["apikey", "list"]).stdout,
        &expected("apikey-list.txt"),
    );
    same("pki user list", "user-list.txt", &env.pki(["user", "list"]).stdout, &expected("user-list.txt"));
    let anonymous = env.pki(["cerdb", "anonymous"]).stdout;
    same("pki cerdb anonymous", "anonymous.txt", &anonymous, &expected("anonymous.txt"));
    let ts = fixture().join("ts");
    let verified = env
        .pki([
            "ts",
            "verify",
            "--token",
            &p(&ts.join("document.tsr")),
            "--data",
            &p(&ts.join("document.txt")),
        ])
        .stdout;
    same("pki ts verify", "ts-verify.txt", &verified, &expected("ts-verify.txt"));
    for which in ["root", "issuing", "ocsp", "tsa"] {
        let file = format!("ca-{which}.pem");
        same(&format!("pki ca-cert {which}"), &file, &env.pki(["ca-cert", which]).stdout, &expected(&file));
    }
    same("pki init (again)", "init-again.txt", &env.pki(["init"]).stdout, &expected("init-again.txt"));
    let crl = env.write("crl.pem", env.pki(["crl"]).stdout);
    same("pki crl (revoked entries)", "crl-revoked.txt", &crl_revoked(&crl), &expected("crl-revoked.txt"));

    // carol's key was reported compromised: a new request with it is still refused.
    let refused = env.pki_try([
        "issue",
        "--email",
        "carol@example.com",
        "--usage",
        "signing",
        "--csr",
        &p(&fixture().join("carol-compromised.csr")),
    ]);
    same(
        "pki issue with carol's compromised key",
        "issue-compromised.txt",
        &format!("{}\n", refused.one_error_line()),
        &expected("issue-compromised.txt"),
    );

    // bob's escrowed key: recovered as PKCS#12 that OpenSSL reads, its key the one escrowed, its
    // certificate bob's.
    let bob = serial_of("bob@example.com", "encryption");
    let password = fixture().join("p12-password.txt");
    let recovered = env.escrow_recover(&bob, std::path::Path::new("recovered.p12"), &password);
    same("pki escrow recover", "escrow-recover.txt", &recovered.stdout, &expected("escrow-recover.txt"));
    let p12 = env.path("recovered.p12");
    same(
        "the public key of the recovered private key",
        "escrow-pubkey.pem",
        &p12_public_key(&p12, &password),
        &expected("escrow-pubkey.pem"),
    );
    let cert = openssl([
        OsStr::new("pkcs12"),
        "-in".as_ref(),
        p12.as_os_str(),
        "-nokeys".as_ref(),
        "-clcerts".as_ref(),
        "-passin".as_ref(),
        format!("file:{}", p(&password)).as_ref(),
    ])
    .stdout;
    let shown = expected(&format!("show/{bob}.txt"));
    assert_eq!(
        pem_der(&cert),
        pem_der(&shown[shown.find("-----BEGIN").unwrap()..]),
        "the PKCS#12 holds bob's certificate"
    );

    // This binary appended to the previous release's audit chain (the recovery, the refusal), and
    // the chain still verifies.
    let count = |s: &str| -> u64 {
        s.strip_prefix("audit log verified: ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected pki audit verify output: {s}"))
    };
    let after = env.pki(["audit", "verify"]);
    assert!(count(&after.stdout) > count(&audit), "the recovery is audited: {audit} then {}", after.stdout);
    // The entries this binary appended are keyed; the previous release's stay legacy.
    assert_eq!(after.stderr, audit_verified.stderr, "{}", after.stderr);
    // A checkpoint of the mixed log verifies (its audit signer issued now, on first use).
    let checkpoint = env.path("checkpoint.cms");
    env.pki(["audit", "checkpoint", "--out", &p(&checkpoint)]);
    let out = env.pki(["audit", "verify", "--checkpoint", &p(&checkpoint)]).stdout;
    assert!(
        out.contains("checkpoint verified: entry ") && out.contains("21 legacy unkeyed entries"),
        "{out}"
    );
}

/// GET or POST with curl (a real client); `HTTP CODE`, the body and a newline, as make.sh
/// recorded it.
fn curl_record(url: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let out = run(Command::new(curl_bin())
        .args(["-sS", "--max-time", "20", "-w", "%{http_code}", "-o"])
        .arg(&body)
        .args(extra)
        .arg(url))
    .ok();
    format!("HTTP {}\n{}\n", out.stdout, std::fs::read_to_string(&body).unwrap_or_default())
}

/// Everything asked of `pki serve` on the data directory: OCSP statuses with `openssl ocsp`,
/// the directory over HTTP (exists, fetch, by serial, hashed addresses, the bulk lookup with the
/// fixture's API key and with a wrong one, `pki lookup --server`), and a console login by the
/// fixture's officer with the password and TOTP secret enrolled with the previous release.
#[test]
fn the_previous_releases_data_directory_is_served_the_same() {
    let env = open();
    let server = env.serve();
    let base = server.url("");
    let root = env.write("root.pem", env.pki(["ca-cert", "root"]).stdout);
    let issuing = env.write("issuing.pem", env.pki(["ca-cert", "issuing"]).stdout);

    let leaves: Vec<Row> =
        recorded_rows().into_iter().filter(|r| r.kind == "signing" || r.kind == "encryption").collect();
    assert!(leaves.len() >= 4, "the fixture has subscriber certificates of both usages");
    for r in &leaves {
        let out = openssl_try([
            "ocsp",
            "-issuer",
            &p(&issuing),
            "-CAfile",
            &p(&root),
            "-url",
            &server.url("/ocsp"),
            "-serial",
            &format!("0x{}", r.serial),
        ]);
        let prefix = format!("0x{}: ", r.serial);
        let kept: String = format!("{}{}", out.stdout, out.stderr)
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                l.starts_with(&prefix)
                    || t.starts_with("Reason:")
                    || t.starts_with("Revocation Time:")
                    || l.starts_with("Response verify")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let file = format!("ocsp/{}.txt", r.serial);
        same(&format!("openssl ocsp -serial 0x{}", r.serial), &file, &kept, &expected(&file));
    }

    let json = ["-H", "Accept: application/json"];
    for who in ["alice", "bob", "carol", "dave"] {
        for usage in ["signing", "encryption"] {
            let q = format!("email={who}@example.com&usage={usage}");
            let file = format!("directory/exists-{who}-{usage}.txt");
            let got = curl_record(&format!("{base}/api/v1/certificates/exists?{q}"), &[]);
            same(&format!("GET /api/v1/certificates/exists?{q}"), &file, &got, &expected(&file));
            let file = format!("directory/fetch-{who}-{usage}.txt");
            let got = curl_record(&format!("{base}/api/v1/certificates?{q}"), &json);
            same(&format!("GET /api/v1/certificates?{q}"), &file, &got, &expected(&file));
        }
    }
    let hash = directory_support::email_sha256("alice@example.com");
    let got =
        curl_record(&format!("{base}/api/v1/certificates/exists?email_sha256={hash}&usage=encryption"), &[]);
    let file = "directory/exists-sha256-alice-encryption.txt";
    same("GET /api/v1/certificates/exists?email_sha256=...", file, &got, &expected(file));
    let got = curl_record(&format!("{base}/api/v1/certificates?email_sha256={hash}&usage=encryption"), &json);
    let file = "directory/fetch-sha256-alice-encryption.txt";
    same("GET /api/v1/certificates?email_sha256=...", file, &got, &expected(file));
    for r in &leaves {
        let file = format!("directory/by-serial-{}.txt", r.serial);
        let got = curl_record(&format!("{base}/api/v1/certificates/by-serial/{}", r.serial), &json);
        same(&format!("GET /api/v1/certificates/by-serial/{}", r.serial), &file, &got, &expected(&file));
    }

    let key = fixture_text("apikey.txt").lines().next().expect("apikey.txt: the key").to_string();
    let bulk = r#"{"emails":["alice@example.com","bob@example.com","carol@example.com","dave@example.com"],"usage":"encryption"}"#;
    // A well-formed key that was never issued: the last character changed (as make.sh does).
    let wrong = format!("{}{}", &key[..key.len() - 1], if key.ends_with('A') { 'B' } else { 'A' });
    for (file, bearer) in
        [("directory/bulk-with-api-key.txt", &key), ("directory/bulk-with-wrong-key.txt", &wrong)]
    {
        let auth = format!("Authorization: Bearer {bearer}");
        let got = curl_record(
            &format!("{base}/api/v1/certificates/lookup"),
            &["-H", &auth, "-H", "Content-Type: application/json", "--data-binary", bulk],
        );
        same("POST /api/v1/certificates/lookup", file, &got, &expected(file));
    }
    let got = env
        .pki([
            "lookup",
            "--server",
            &base,
            "--api-key",
            &key,
            "--email",
            "alice@example.com",
            "--usage",
            "encryption",
        ])
        .stdout;
    let file = "lookup/server-alice-encryption.txt";
    same("pki lookup --server", file, &got, &expected(file));

    // The console: olivia's password and TOTP secret, both set with the previous release.
    let password = fixture_text("console-password.txt").lines().next().expect("password").to_string();
    let mut auth = Authenticator::from_base32(fixture_text("console-totp-secret.txt").trim());
    let mut c = Client::new(server.port);
    let step =
        |r: &console_support::Resp| format!("{} {}", r.status, r.header("location").unwrap_or_default());
    let token = c.csrf("/admin/login");
    let r = c.post_form(
        "/admin/login",
        &[("csrf_token", &token), ("username", "olivia"), ("password", &password)],
    );
    let mut got = format!("password step: {}\n", step(&r));
    let page = c.get("/admin/login/totp");
    let token = form_value(&page.text(), "csrf_token").unwrap_or_default();
    let r = c.post_form("/admin/login/totp", &[("csrf_token", &token), ("code", &auth.next_code())]);
    got.push_str(&format!("totp step: {}\n", step(&r)));
    got.push_str(&format!("home page: {}\n", c.get("/admin/").status));
    same("console login of olivia", "console-login.txt", &got, &expected("console-login.txt"));
    server.stop();
}

/// The one adjustment of recorded answers: a certificate whose notAfter has passed reads
/// `expired`, in `pki list` (column widths kept) and in `pki show`; revoked ones stay revoked.
#[test]
fn a_recorded_certificate_that_has_ended_since_reads_expired() {
    let row = |serial: &str, kind: &str, status: &str, end: &str, email: &str| {
        format!("{serial:<34} {kind:<11} {status:<13} {end:<20} {email}\n")
    };
    let header = row("SERIAL", "KIND", "STATUS", "NOT AFTER", "E-MAIL");
    let list = format!(
        "{header}{}{}{}",
        row("AA", "tls-server", "valid", "2001-01-01T00:00:00Z", "-"),
        row("BB", "signing", "valid", "2999-01-01T00:00:00Z", "a@example.com"),
        row("CC", "signing", "revoked", "2001-01-01T00:00:00Z", "c@example.com"),
    );
    let want = format!(
        "{header}{}{}{}",
        row("AA", "tls-server", "expired", "2001-01-01T00:00:00Z", "-"),
        row("BB", "signing", "valid", "2999-01-01T00:00:00Z", "a@example.com"),
        row("CC", "signing", "revoked", "2001-01-01T00:00:00Z", "c@example.com"),
    );
    assert_eq!(as_of_now(&list), want);

    let show = |status: &str, end: &str| {
        format!("serial:       AA\nkind:         tls-server\nstatus:       {status}\nnot after:    {end}\n")
    };
    assert_eq!(
        as_of_now(&show("valid", "2001-01-01T00:00:00+00:00")),
        show("expired", "2001-01-01T00:00:00+00:00")
    );
    assert_eq!(
        as_of_now(&show("valid", "2999-01-01T00:00:00+00:00")),
        show("valid", "2999-01-01T00:00:00+00:00")
    );
    assert_eq!(
        as_of_now(&show("revoked", "2001-01-01T00:00:00+00:00")),
        show("revoked", "2001-01-01T00:00:00+00:00")
    );
}
