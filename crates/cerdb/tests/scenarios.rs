//! The storage scenario suite on every engine: plain, then with a fault injected at each write.
//!
//! The PostgreSQL engine runs on the server of `PKI_TEST_DATABASE_URL` (a user that may create
//! databases: each store of the suite is a database of its own, dropped afterwards).
//! `scripts/test.sh` starts a private server and sets it; so does
//! `bash scripts/with-postgres.sh cargo test -p cerdb`. Without it these tests fail: the
//! PostgreSQL engine is never skipped in silence.

use cerdb::scenarios::{self, Backend, PgBackend, SledBackend};

/// The variable naming the test server.
const URL_VAR: &str = "PKI_TEST_DATABASE_URL";

/// The PostgreSQL backend on the test server, or a panic saying how to provide one.
fn postgres() -> PgBackend {
    let url = std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: the PostgreSQL engine's tests need a server. Run `bash scripts/test.sh`, \
             or `bash scripts/with-postgres.sh cargo test -p cerdb` (it starts a private PostgreSQL for the \
             command), or set {URL_VAR}=postgres://USER:PASSWORD@HOST:PORT/postgres for a user that may \
             create databases"
        )
    });
    PgBackend::connect(&url).unwrap_or_else(|e| panic!("{URL_VAR}: {e}"))
}

/// Every engine the project has.
fn backends() -> Vec<Box<dyn Backend>> {
    vec![Box::new(SledBackend), Box::new(postgres())]
}

#[test]
fn every_scenario_holds_on_every_engine() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = scenarios::run(backend.as_ref(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, scenarios::all().len());
    }
}

#[test]
fn a_fault_at_any_write_leaves_nothing_half_written() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let injected =
            scenarios::run_with_faults(backend.as_ref(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        // Every scenario writes: each contributes faults.
        assert!(injected >= scenarios::all().len() as u64 * 3, "{} faults injected", injected);
        eprintln!("{}: {injected} faults injected, none left anything half-written", backend.name());
    }
}
