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

/// Officers' commands changing the sender identities of sealed mail at once (on several nodes, or
/// over one node's admin socket) each change one JSON document: every change must be kept, none
/// written over by another made from an older read.
#[test]
fn sender_identity_changes_made_at_once_are_all_kept() {
    use cerdb::directory::ApiKeyName;
    use cerdb::mail_senders::{MailSender, MailSenders, SenderName};

    const THREADS: usize = 8;
    const EACH: usize = 6;
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = backend.open(dir.path(), None).expect("open");
        let name: SenderName = "statements".parse().expect("name");
        let key = |t: usize, i: usize| -> ApiKeyName { format!("mailer-{t}-{i}").parse().expect("key") };
        MailSenders::open(&db)
            .insert(MailSender {
                name: name.clone(),
                email: "statements@bank.example".parse().expect("email"),
                key_handle: "mail/sender/01".into(),
                serial: "01".parse().expect("serial"),
                created_at: chrono::Utc::now(),
                // Each thread withdraws its key 0, allowed here.
                allowed_keys: (0..THREADS).map(|t| key(t, 0)).collect(),
            })
            .expect("insert");
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (db, name) = (db.clone(), name.clone());
                s.spawn(move || {
                    let senders = MailSenders::open(&db);
                    senders.disallow(&name, &key(t, 0)).expect("disallow");
                    for i in 1..=EACH {
                        senders.allow(&name, &key(t, i)).expect("allow");
                    }
                    // Another sender made while the others change this one.
                    let other = MailSender {
                        name: format!("otp-{t}").parse().expect("name"),
                        email: "otp@bank.example".parse().expect("email"),
                        key_handle: format!("mail/sender/{t}"),
                        serial: "02".parse().expect("serial"),
                        created_at: chrono::Utc::now(),
                        allowed_keys: vec![],
                    };
                    senders.insert(other).expect("insert another");
                });
            }
        });
        let senders = MailSenders::open(&db);
        let s = senders.get(&name).expect("get").expect("present");
        let want: Vec<ApiKeyName> = {
            let mut v: Vec<_> = (0..THREADS).flat_map(|t| (1..=EACH).map(move |i| key(t, i))).collect();
            v.sort();
            v
        };
        assert_eq!(s.allowed_keys, want, "{}: changes lost", backend.name());
        assert_eq!(senders.list().expect("list").len(), THREADS + 1, "{}: senders lost", backend.name());
        drop(db);
        backend.discard(dir.path());
    }
}
