//! `pki db copy` (issue 15, acceptance 7): a sled data directory with 10,000 certificates,
//! revocations, timestamps, API keys, console users and enrolment records copied into an empty
//! PostgreSQL database, and back; each copy answers exists, fetch, OCSP status, `pki show` and
//! `pki audit verify` exactly as the original. Needs the PostgreSQL test server
//! (`PKI_TEST_DATABASE_URL`, started by scripts/with-postgres.sh) whatever `PKI_TESTS_BACKEND`
//! says.

use std::path::Path;

use pki_tests::directory_support::{exists, get, q};
use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The sled installation every copy starts from: its keys sealed under the passphrase the
/// PostgreSQL environments of the tests use.
fn sled_installation() -> Env {
    let env = Env::on_sled("");
    let pass = env.write("passphrase", format!("{PG_MASTER_PASSPHRASE}\n"));
    env.append_config(&format!("[hsm]\npassphrase_file = {:?}\n", p(&pass)));
    env.init();
    env
}

/// What a client and an officer see of one installation, read through `pki serve` and `pki`.
#[derive(Debug, PartialEq)]
struct Seen {
    count: usize,
    exists: Vec<bool>,
    fetched: Vec<String>,
    ocsp: Vec<String>,
    shown: Vec<String>,
    key_works: u16,
    users: String,
    timestamp: String,
}

fn ocsp_line(ca: &CaFiles, cert: &Path, port: u16) -> String {
    let text = openssl_ocsp(ca, cert, port);
    // The line naming the certificate's status, and the reason when revoked.
    text.lines()
        .filter(|l| l.contains(": good") || l.contains(": revoked") || l.contains("Reason:"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" | ")
}

fn seen(
    env: &Env,
    ca: &CaFiles,
    leaves: &[(String, std::path::PathBuf)],
    api_key: &str,
    tsr: &Path,
    stamped: &Path,
) -> Seen {
    let serials = env.list_serials();
    let server = env.serve();
    let port = server.port;
    let addresses: Vec<String> = ["ann@bank.example".to_string(), "bob@bank.example".to_string()]
        .into_iter()
        .chain([0u64, 17, 4_999, 9_999].iter().map(|i| format!("load-{i}@loadtest.example")))
        .collect();
    let exists: Vec<bool> = addresses.iter().map(|a| exists(port, a, "encryption", Some(api_key))).collect();
    let fetched: Vec<String> = addresses
        .iter()
        .map(|a| {
            let r =
                get(port, &format!("/api/v1/certificates?email={}&usage=encryption", q(a)), Some(api_key));
            format!("{} {}", r.status, r.text())
        })
        .collect();
    let ocsp: Vec<String> = leaves.iter().map(|(_, pem)| ocsp_line(ca, pem, port)).collect();
    let key_works = get(port, "/api/v1/certificates/exists?email=ann@bank.example", Some(api_key)).status;
    let shown: Vec<String> = leaves
        .iter()
        .map(|(s, _)| s.clone())
        .chain(serials.iter().step_by(997).cloned())
        .map(|s| env.pki(["show", "--serial", &s]).stdout)
        .collect();
    let users = env.pki(["user", "list"]).stdout;
    let timestamp = env.pki(["ts", "verify", "--token", &p(tsr), "--data", &p(stamped)]).stdout;
    server.stop();
    Seen { count: serials.len(), exists, fetched, ocsp, shown, key_works, users, timestamp }
}

/// Acceptance 7, both directions, and the refusals.
#[test]
fn a_sled_installation_moves_to_postgresql_and_back_answering_exactly_as_before() {
    let original = sled_installation();
    let ca = original.ca_files();
    original.pki(["cerdb", "load-test-data", "--count", "10000", "--batch", "2000"]);

    // Two certificates from CSRs, one revoked for keyCompromise, a load-test one revoked too.
    let mut leaves = Vec::new();
    for (name, email) in [("ann", "ann@bank.example"), ("bob", "bob@bank.example")] {
        let key = gen_key(original.dir(), &format!("{name}.key"), KeySpec::P256);
        let csr = make_csr(&key, &original.path(&format!("{name}.csr")), &format!("/CN={name}"), &[]);
        let pem =
            original.pki(["issue", "--email", email, "--usage", "encryption", "--csr", &p(&csr)]).stdout;
        let file = original.write(&format!("{name}.pem"), &pem);
        leaves.push((cert_serial(&pem_der(&pem)), file));
    }
    original.pki(["revoke", "--serial", &leaves[1].0, "--reason", "keyCompromise"]);
    let serials = original.list_serials();
    original.pki(["revoke", "--serial", &serials[17], "--reason", "superseded"]);
    // A timestamp, an API key, a console officer, an ACME account binding key.
    let stamped = original.write("statement.txt", "statement of November");
    original.pki(["ts", "stamp", &p(&stamped)]);
    let tsr = original.path("statement.txt.tsr");
    let api_key = original.pki(["apikey", "create", "--name", "mailer"]).stdout.trim().to_string();
    original.pki(["user", "add", "--name", "olga", "--role", "officer"]);
    original.pki(["acme", "eab", "create", "--name", "mail-app"]);
    let before = seen(&original, &ca, &leaves, &api_key, &tsr, &stamped);
    // 10,002 issued here and the five CA-side certificates (root, issuing, OCSP, TSA, console TLS).
    assert_eq!(before.count, 10_007);
    assert!(before.ocsp[1].contains("revoked"), "{:?}", before.ocsp);
    let audit_before = original.pki(["audit", "verify"]).stdout;
    let list_before = original.pki(["list"]).stdout;

    // Into PostgreSQL.
    let url = create_test_database();
    let out = original.pki(["db", "copy", "--from", &p(&original.data), "--to", &url]).stdout;
    assert!(out.contains("verified: every count equal"), "{out}");
    assert!(out.contains("hash chain intact"), "{out}");
    let node = Env::on_database(&url, "");
    assert_eq!(node.pki(["audit", "verify"]).stdout, audit_before, "the same audit log, verified");
    assert_eq!(node.pki(["list"]).stdout, list_before);
    let after = seen(&node, &ca, &leaves, &api_key, &tsr, &stamped);
    assert_eq!(after, before, "the PostgreSQL copy answers as the original");
    let audit_pg = node.pki(["audit", "verify"]).stdout;

    // A second copy into the same database is refused: it is not empty.
    let again = original.pki_try(["db", "copy", "--from", &p(&original.data), "--to", &url]);
    assert!(!again.status.success());
    assert!(again.one_error_line().contains("not empty"), "{}", again.stderr);

    // And back, into a new data directory.
    let back = Env::on_sled("");
    let pass = back.write("passphrase", format!("{PG_MASTER_PASSPHRASE}\n"));
    back.append_config(&format!("[hsm]\npassphrase_file = {:?}\n", p(&pass)));
    let out = node.pki(["db", "copy", "--from", &url, "--to", &p(&back.data)]).stdout;
    assert!(out.contains("verified: every count equal"), "{out}");
    assert_eq!(back.pki(["audit", "verify"]).stdout, audit_pg, "the same audit log, verified");
    assert_eq!(back.pki(["list"]).stdout, list_before);
    assert_eq!(
        seen(&back, &ca, &leaves, &api_key, &tsr, &stamped),
        before,
        "the copy back answers as the original"
    );
    drop_test_database(&url);
}

/// What cannot be copied is refused with one line, and nothing is written.
#[test]
fn copies_that_cannot_be_made_are_refused_with_one_line() {
    let env = Env::on_sled("");
    // No database at the source.
    let missing = env.path("nothing-here");
    let url = create_test_database();
    let out = env.pki_try(["db", "copy", "--from", &p(&missing), "--to", &url]);
    assert!(!out.status.success());
    assert!(out.one_error_line().contains("holds no database"), "{}", out.stderr);
    // A malformed URL on either side.
    let out = env.pki_try(["db", "copy", "--from", "postgres://u@host:notaport/db", "--to", &p(&missing)]);
    assert!(!out.status.success());
    assert!(out.one_error_line().contains("invalid database URL"), "{}", out.stderr);
    // Keys under a random master key file cannot go where nodes share a passphrase.
    env.init();
    let out = env.pki_try(["db", "copy", "--from", &p(&env.data), "--to", &url]);
    assert!(!out.status.success());
    assert!(out.one_error_line().contains("random master key file"), "{}", out.stderr);
    // A destination data directory that holds a database.
    let other = sled_installation();
    let out = env.pki_try(["db", "copy", "--from", &p(&other.data), "--to", &p(&env.data)]);
    assert!(!out.status.success());
    assert!(out.one_error_line().contains("holds a database already"), "{}", out.stderr);
    // The same place on both sides.
    let out = env.pki_try(["db", "copy", "--from", &p(&env.data), "--to", &p(&env.data)]);
    assert!(out.one_error_line().contains("same data directory"), "{}", out.stderr);
    drop_test_database(&url);
}
