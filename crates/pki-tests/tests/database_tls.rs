//! Issue 15: TLS to PostgreSQL. A `pki serve` whose database URL says `sslmode=verify-full` with
//! the CA of the test cluster's certificate connects over TLS only (PostgreSQL's own view,
//! `pg_stat_ssl`, says so for each of its connections) and serves. A CA that did not issue the
//! server's certificate, a URL naming no CA, and the modes that do not check the server
//! (`require`, `verify-ca`) are each refused in one line naming the fix.

use pki_tests::directory_support::get;
use pki_tests::*;

/// The CA of the test cluster's server certificate (scripts/with-postgres.sh makes both).
fn cluster_ca() -> String {
    std::env::var("PKI_TEST_PG_CA").unwrap_or_else(|_| {
        panic!(
            "PKI_TEST_PG_CA is not set: run the tests under scripts/with-postgres.sh, which starts the test \
             PostgreSQL with TLS (scripts/test.sh does)"
        )
    })
}

/// `(TLS connections, plain connections)` of the `pki` application to the database `name`.
fn connections(url: &str, name: &str) -> (usize, usize) {
    let rows = psql_rows(
        url,
        &format!(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{name}' AND a.application_name = 'pki'"
        ),
    );
    (rows.iter().filter(|r| *r == "t").count(), rows.iter().filter(|r| *r == "f").count())
}

#[test]
fn a_verified_tls_connection_serves_and_weaker_or_wrong_settings_are_refused() {
    let url = create_test_database();
    let name = url.rsplit('/').next().unwrap().to_string();
    let ca = cluster_ca();

    let env = Env::on_database(&format!("{url}?sslmode=verify-full&sslrootcert={ca}"), "");
    env.init();
    let server = env.serve();
    let key = gen_key(env.dir(), "alice.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("alice.csr"), "/CN=alice@example.com", &[]);
    env.pki(["issue", "--email", "alice@example.com", "--usage", "encryption", "--csr", &p(&csr)]);
    let apikey = env.pki(["apikey", "create", "--name", "tls"]).stdout.trim().to_string();
    let r = get(server.port, "/api/v1/certificates/exists?email=alice@example.com", Some(&apikey));
    assert_eq!(r.json()["exists"], true, "{}", r.text());
    let (tls, plain) = connections(&url, &name);
    assert!(tls >= 1 && plain == 0, "pki's connections: {tls} over TLS, {plain} without");
    server.stop();

    // A CA that did not issue the server's certificate: refused, nothing written.
    let other = env.path("other-ca.pem");
    let other_key = env.path("other-ca.key");
    self_signed_p256(&other_key, &other, "/CN=another CA", &[]);
    let wrong = Env::on_database(&format!("{url}?sslmode=verify-full&sslrootcert={}", p(&other)), "");
    let line = wrong.pki_fails(["list"], &["cannot connect"]);
    assert!(line.to_lowercase().contains("certificate"), "{line}");

    // No CA named, or a mode that does not check who answers: refused naming verify-full.
    let no_root = Env::on_database(&format!("{url}?sslmode=verify-full"), "");
    no_root.pki_fails(["list"], &["sslrootcert=FILE"]);
    for mode in ["require", "verify-ca"] {
        let weak = Env::on_database(&format!("{url}?sslmode={mode}&sslrootcert={ca}"), "");
        weak.pki_fails(["list"], &[&format!("sslmode={mode}"), "sslmode=verify-full"]);
    }
    let missing = Env::on_database(&format!("{url}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"), "");
    missing.pki_fails(["list"], &["sslrootcert /nonexistent/ca.pem"]);
    drop_test_database(&url);
}

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}
