//! Issue 18 (key custody on a PKCS#11 token), end to end on SoftHSM2 tokens made per test:
//! the CA-side keys are on the token, sensitive and never extractable (`pkcs11-tool`); a wrong
//! PIN, a missing module and a missing token each give one `error:` line; a running server
//! reports degraded while its token is away and recovers when it returns; `pki hsm import` moves a
//! soft store onto a token, after which certificates, OCSP and timestamps verify with the same
//! CA certificates, an officer passes the TOTP step with the seed enrolled before the move and an
//! EAB key made before it binds an ACME account. (The other end-to-end suites run on this backend
//! with `PKI_TESTS_HSM=pkcs11`.)
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The CA-side keys `pki init` makes.
const CA_KEYS: [&str; 5] = ["ca/root", "ca/issuing", "ocsp/signer", "tsa/signer", "tls/server"];

/// The `Access:` line of each private key `pkcs11-tool` lists, by label.
fn access_by_label(listing: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut label = None;
    for line in listing.lines() {
        let line = line.trim();
        if let Some(l) = line.strip_prefix("label:") {
            label = Some(l.trim().to_string());
        } else if let Some(a) = line.strip_prefix("Access:") {
            out.push((label.take().unwrap_or_default(), a.trim().to_string()));
        }
    }
    out
}

/// Each of `labels` is a private key on the token, sensitive and not extractable; `generated`:
/// made there, so also never extractable (an imported key was extractable once, elsewhere).
fn assert_on_token_sensitive_not_extractable(token: &SoftToken, labels: &[&str], generated: bool) {
    let listing = token.list_private_keys();
    let access = access_by_label(&listing);
    for label in labels {
        let (_, a) = access
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("{label} is not a private key on the token:\n{listing}"));
        let flags: Vec<&str> = a.split(", ").collect();
        assert!(flags.contains(&"sensitive"), "{label}: {a}");
        assert!(!flags.contains(&"extractable"), "{label} is extractable: {a}");
        if generated {
            assert!(flags.contains(&"never extractable") && flags.contains(&"local"), "{label}: {a}");
        }
    }
}

fn issue_signing(env: &Env, who: &str) -> std::path::PathBuf {
    let key = gen_key(env.dir(), &format!("{who}.key"), KeySpec::P256);
    let csr = make_csr(&key, &env.path(&format!("{who}.csr")), &format!("/CN={who}@example.com"), &[]);
    let pem = env
        .pki(["issue", "--email", &format!("{who}@example.com"), "--usage", "signing", "--csr", &p(&csr)])
        .stdout;
    env.write(&format!("{who}.pem"), pem)
}

fn verify_chain(ca: &CaFiles, leaf: &Path) {
    let out = openssl([
        "verify",
        "-CAfile",
        &p(&ca.root),
        "-untrusted",
        &p(&ca.issuing),
        "-purpose",
        "smimesign",
        &p(leaf),
    ]);
    assert!(out.stdout.contains(": OK"), "{}{}", out.stdout, out.stderr);
}

fn ocsp_good(server: &Server, ca: &CaFiles, leaf: &Path) {
    let text = openssl_ocsp(ca, leaf, server.port);
    assert!(text.contains("Response verify OK") && text.contains(": good"), "{text}");
}

fn tsa_verifies(env: &Env, server: &Server, root: &Path) {
    let out = openssl_ts_verify(env, server.port, root);
    assert!(out.contains("Verification: OK"), "{out}");
}

#[test]
fn ca_keys_are_made_on_the_token_sensitive_and_never_extractable_and_escrow_recovers() {
    let env = Env::with_backend(HsmBackend::Pkcs11, "");
    env.init();
    let token = env.token.clone().unwrap();
    assert_on_token_sensitive_not_extractable(&token, &CA_KEYS, true);
    // The data directory holds no key file of a CA-side key.
    let names: Vec<String> =
        files_under(&env.data.join("keys")).iter().map(|f| f.display().to_string()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".key")), "soft key files on the token backend: {names:?}");

    // An escrowed key is stored wrapped by the token and recovered through it as PKCS#12.
    let pw = env.write("p12.pass", "a long p12 password\n");
    let p12 = env.path("dave.p12");
    env.pki([
        "issue",
        "--email",
        "dave@example.com",
        "--usage",
        "encryption",
        "--generate",
        "--p12",
        &p(&p12),
        "--p12-password-file",
        &p(&pw),
    ]);
    assert!(files_under(&env.data.join("keys")).iter().any(|f| p(f).ends_with(".p11wrap")));
    let out =
        openssl(["pkcs12", "-in", &p(&p12), "-passin", &format!("file:{}", p(&pw)), "-nocerts", "-noenc"]);
    assert!(out.stdout.contains("BEGIN PRIVATE KEY"), "{}", out.stderr);
    // Without the token (another SoftHSM2 configuration, an empty one) nothing escrowed opens.
    let other = SoftToken::create(&env.path("other-hsm"), "pki");
    let serial = parse_list(&env.pki(["list"]).stdout)
        .into_iter()
        .find(|r| r.email == "dave@example.com")
        .unwrap()
        .serial;
    // The operator requests and a second officer approves through the running server; the
    // operator then downloads with the data directory opened on the wrong token.
    let server = env.serve();
    let id = env.pki_as("root", ["escrow", "request", "--serial", &serial]).stdout.trim().to_string();
    env.pki_as("oscar", ["escrow", "approve", &id]);
    server.stop();
    let mut cmd = env.command(["escrow", "recover", &id, "--out", &p(&env.path("x.p12"))]);
    cmd.arg("--p12-password-file").arg(&pw).env("SOFTHSM2_CONF", &other.conf);
    let line = run(&mut cmd).one_error_line();
    assert!(!env.path("x.p12").exists(), "{line}");
}

#[test]
fn wrong_pin_missing_module_and_missing_token_each_give_one_error_line() {
    let env = Env::with_backend(HsmBackend::Pkcs11, "");
    let token = env.token.clone().unwrap();
    let good = std::fs::read_to_string(&env.config).unwrap();

    std::fs::write(&token.pin_file, "not-the-pin\n").unwrap();
    env.pki_fails(["init"], &["PIN", "wrong", "\"pki\""]);
    std::fs::write(&token.pin_file, format!("{}\n", token.pin)).unwrap();

    std::fs::write(&env.config, good.replace(SOFTHSM_MODULE, "/usr/lib/no-such-pkcs11.so")).unwrap();
    env.pki_fails(["init"], &["/usr/lib/no-such-pkcs11.so", "does not exist"]);

    std::fs::write(&env.config, good.replace("token_label = \"pki\"", "token_label = \"absent\"")).unwrap();
    env.pki_fails(["init"], &["\"absent\"", "no token"]);

    std::fs::write(&env.config, good.replace(&format!("pin_file = {:?}\n", p(&token.pin_file)), "")).unwrap();
    env.pki_fails(["init"], &["PKI_HSM_PIN", "pin_file"]);

    // The PIN from the environment variable works; nothing was created by the failed runs.
    let mut cmd = env.command(["init"]);
    cmd.env("PKI_HSM_PIN", &token.pin);
    let out = run(&mut cmd).ok();
    assert!(out.stdout.starts_with("CA initialised\n"), "{}", out.stdout);
}

fn wait_health(server: &Server, want: u16) -> String {
    let start = Instant::now();
    loop {
        if let Some((code, body)) = http_get(server.port, "/healthz") {
            if code == want {
                return String::from_utf8_lossy(&body).into_owned();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "/healthz never answered {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_server_reports_degraded_while_the_token_is_away_and_recovers_when_it_returns() {
    let env = Env::with_backend(HsmBackend::Pkcs11, "");
    env.init();
    let token = env.token.clone().unwrap();
    let mut server = env.serve();
    let ca = env.ca_files();
    let before = issue_signing(&env, "erin");
    // An escrowed key uses (and caches the handle of) the token's wrapping key: the health check
    // must still see the token go.
    let pw = env.write("p12.pass", "a long p12 password\n");
    env.pki([
        "issue",
        "--email",
        "erin@example.com",
        "--usage",
        "encryption",
        "--generate",
        "--p12",
        &p(&env.path("erin.p12")),
        "--p12-password-file",
        &p(&pw),
    ]);

    let away = env.path("tokens-away");
    std::fs::rename(&token.tokens, &away).unwrap();
    let body = wait_health(&server, 503);
    assert!(body.contains("\"degraded\"") && body.contains("pki"), "{body}");
    let key = gen_key(env.dir(), "frank.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("frank.csr"), "/CN=frank@example.com", &[]);
    let line = env.pki_fails(
        ["issue", "--email", "frank@example.com", "--usage", "signing", "--csr", &p(&csr)],
        &["token"],
    );
    assert!(line.contains("\"pki\""), "{line}");
    assert!(server.is_running(), "the server must keep running without its token");

    std::fs::rename(&away, &token.tokens).unwrap();
    let body = wait_health(&server, 200);
    assert!(body.contains("\"ok\""), "{body}");
    let after = issue_signing(&env, "frank");
    verify_chain(&ca, &before);
    verify_chain(&ca, &after);
    ocsp_good(&server, &ca, &after);
    assert!(server.is_running());
}

#[test]
fn a_soft_store_moved_onto_a_token_answers_with_the_same_ca_certificates() {
    let mut env = Env::with_backend(
        HsmBackend::Soft,
        "[acme]\nenterprise_preauthorized = true\nchallenge_from = \"acme-challenge@example.com\"\n",
    );
    env.init();
    // Secrets the soft store sealed: an officer's TOTP seed and an EAB key's HMAC key.
    let server = env.serve();
    let (_, mut officer) = console_support::console_user(&env, "olga", "officer", "Correct-Horse-Battery-9");
    let (kid, hmac) = acme_eab(&env, "device agent of judy");
    server.stop();
    let ca = env.ca_files();
    let root_before = env.pki(["ca-cert", "root"]).stdout;
    let issuing_before = env.pki(["ca-cert", "issuing"]).stdout;
    let old_leaf = issue_signing(&env, "grace");
    let pw = env.write("p12.pass", "a long p12 password\n");
    env.pki([
        "issue",
        "--email",
        "heidi@example.com",
        "--usage",
        "encryption",
        "--generate",
        "--p12",
        &p(&env.path("heidi.p12")),
        "--p12-password-file",
        &p(&pw),
    ]);

    // Import refuses without a PKCS#11 backend configured.
    env.pki_fails(["hsm", "import"], &["backend = \"pkcs11\""]);

    let token = SoftToken::create(&env.path("softhsm"), "pki");
    env.append_config(&token.hsm_table());
    env.token = Some(token.clone());
    let out = env.pki(["hsm", "import"]).stdout;
    for k in CA_KEYS {
        assert!(out.contains(&format!("moved {k} ")), "{out}");
    }
    assert!(out.contains("escrow"), "{out}");
    assert!(out.contains("sealed the audit log's key by the token"), "{out}");
    assert!(out.contains("sealed 1 console TOTP seed(s) by the token"), "{out}");
    assert!(out.contains("sealed 1 ACME EAB key(s) by the token"), "{out}");
    assert_on_token_sensitive_not_extractable(&token, &CA_KEYS, false);
    // The audit log's key opens on the token: every keyed entry still verifies.
    let verified = env.pki(["audit", "verify"]);
    assert!(verified.stdout.contains("intact"), "{}", verified.stdout);
    let left: Vec<_> = files_under(&env.data.join("keys"))
        .into_iter()
        .filter(|f| p(f).ends_with(".key") && !p(f).ends_with("master.key"))
        .collect();
    assert!(left.is_empty(), "soft key files left after the move: {left:?}");
    if let Some(url) = &env.database_url {
        // On PostgreSQL the soft store's sealed keys were records of the database: none is left,
        // only the master key's derivation parameters.
        let names = psql_rows(url, "SELECT name FROM custody_records ORDER BY name");
        assert!(!names.is_empty() && names.iter().all(|n| n.starts_with("master")), "{names:?}");
    }

    // A second run finds nothing left to move and changes nothing.
    let again = env.pki(["hsm", "import"]).stdout;
    assert_eq!(again.trim(), "0 keys moved onto the token \"pki\"", "{again}");

    // The same CA certificates; new answers verify with them.
    let server = env.serve();
    // The officer passes the TOTP step with the seed enrolled before the move, and the EAB key
    // binds an ACME account whose orders are issued.
    let mut client = console_support::Client::new(env.port);
    console_support::login(&mut client, "olga", "Correct-Horse-Battery-9", &mut officer);
    let sign = mailbox_csr(&env, "sign", KeySpec::P256, "judy@example.com", "digitalSignature");
    let enc = mailbox_csr(&env, "enc", KeySpec::Rsa(2048), "judy@example.com", "keyEncipherment");
    let dir = env.dir().display().to_string();
    let enrolled =
        acme_client(&["enrol", &server.url(""), &kid, &hmac, "judy@example.com", &sign, &enc, &dir]);
    assert_eq!(
        (&enrolled["signing"], &enrolled["encryption"]),
        (&"valid".into(), &"valid".into()),
        "{enrolled}"
    );
    assert_eq!(env.pki(["ca-cert", "root"]).stdout, root_before);
    assert_eq!(env.pki(["ca-cert", "issuing"]).stdout, issuing_before);
    let new_leaf = issue_signing(&env, "ivan");
    verify_chain(&ca, &new_leaf);
    verify_chain(&ca, &old_leaf);
    ocsp_good(&server, &ca, &new_leaf);
    ocsp_good(&server, &ca, &old_leaf);
    tsa_verifies(&env, &server, &ca.root);
    // The escrowed key moved too: recovery works through the token.
    let serial = parse_list(&env.pki(["list"]).stdout)
        .into_iter()
        .find(|r| r.email == "heidi@example.com")
        .unwrap()
        .serial;
    let rec = env.path("heidi-recovered.p12");
    env.escrow_recover(&serial, &rec, &pw);
    let out =
        openssl(["pkcs12", "-in", &p(&rec), "-passin", &format!("file:{}", p(&pw)), "-nocerts", "-noenc"]);
    assert!(out.stdout.contains("BEGIN PRIVATE KEY"), "{}", out.stderr);
}
