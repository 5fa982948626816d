//! What only the PostgreSQL engine has: many writers on one database, schema versions. On the
//! server of `PKI_TEST_DATABASE_URL`, as `tests/scenarios.rs` (which fails without it, saying how
//! to start one; so do these).

use std::path::Path;
use std::sync::Arc;

use cerdb::pg_engine::{PgEngine, SCHEMA_VERSION};
use cerdb::scenarios::{Backend, PgBackend};
use cerdb::{
    AuditChain, AuditRecord, CaId, CertDb, CertKind, CertRecord, Error, Fingerprint, Revocation,
    RevocationReason, Serial,
};
use chrono::{TimeZone, Utc};

fn backend() -> PgBackend {
    let url = std::env::var("PKI_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "PKI_TEST_DATABASE_URL is not set: run `bash scripts/test.sh`, or `bash scripts/with-postgres.sh \
             cargo test -p cerdb` (it starts a private PostgreSQL for the command)"
        )
    });
    PgBackend::connect(&url).unwrap_or_else(|e| panic!("PKI_TEST_DATABASE_URL: {e}"))
}

/// Records that name the SHA-256 of the record before them, so a fork shows.
struct Linked(&'static str);

fn digest(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

impl AuditChain for Linked {
    fn records_after(&self, last: Option<&AuditRecord>) -> Result<Vec<AuditRecord>, Error> {
        let seq = last.map_or(0, |r| r.seq) + 1;
        let prev = last.map(|r| digest(&r.bytes)).unwrap_or_default();
        Ok(vec![AuditRecord { seq, bytes: format!("{seq} {} after {prev}", self.0).into_bytes() }])
    }
}

fn cert(serial: u64) -> CertRecord {
    let der = format!("certificate {serial}").into_bytes();
    let t = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).single().expect("time");
    CertRecord {
        serial: Serial::from_bytes(&serial.to_be_bytes()).expect("serial"),
        fingerprint: Fingerprint::of(&der),
        kind: CertKind::Signing,
        email: Some(format!("u{}@example.com", serial % 7).parse().expect("email")),
        subject: String::new(),
        issuer: CaId::Issuing,
        not_before: t,
        not_after: t + chrono::Duration::days(365),
        issued_at: t,
        key_type: "p256".into(),
        escrow_key: None,
        revocation: None,
        der,
    }
}

#[test]
fn writers_on_two_engines_append_one_linear_audit_chain_and_a_feed_without_gaps() {
    let backend = backend();
    let dir = Path::new("two-writers");
    let url = backend.database_url(dir).expect("database");
    // Two engines: two pools, as two processes would have.
    let a = CertDb::from_engine(Arc::new(PgEngine::open(&url, None).expect("open a")));
    let b = CertDb::from_engine(Arc::new(PgEngine::open(&url, None).expect("open b")));
    std::thread::scope(|s| {
        for (w, db) in [&a, &b, &a, &b].into_iter().enumerate() {
            s.spawn(move || {
                for i in 0..15u64 {
                    let serial = 1000 * (w as u64 + 1) + i;
                    db.store_issued(&[cert(serial)], &Linked("issue")).expect("store");
                    db.append_audit(&Linked("note")).expect("append");
                    if i % 3 == 0 {
                        let rev = Revocation { at: Utc::now(), reason: RevocationReason::Superseded };
                        db.revoke(&cert(serial).serial, rev, None, &Linked("revoke")).expect("revoke");
                    }
                }
            });
        }
    });
    a.check_consistency().expect("consistent");
    let mut prev = String::new();
    let mut n = 0;
    for (i, r) in b.audit_records().enumerate() {
        let r = r.expect("record");
        let text = String::from_utf8(r.bytes.clone()).expect("text");
        assert_eq!(r.seq, i as u64 + 1);
        assert!(text.ends_with(&format!("after {prev}")), "record {} forks the chain: {text}", r.seq);
        prev = digest(&r.bytes);
        n += 1;
    }
    assert_eq!(n, 4 * (15 * 2 + 5));
    let changes = a.changes_since(0).expect("feed");
    assert_eq!(changes.len(), 4 * 5);
    assert!(changes.iter().enumerate().all(|(i, c)| c.seq == i as u64 + 1));
    assert_eq!(b.last_change().expect("last"), 20);
    // A serial stored by one engine is refused by the other.
    assert!(matches!(b.store_issued(&[cert(1000)], &Linked("again")), Err(Error::SerialInUse(_))));
    drop((a, b));
    backend.discard(dir);
}

#[test]
fn a_database_with_a_newer_schema_is_refused_naming_both_versions() {
    let backend = backend();
    let dir = Path::new("newer");
    let db = backend.open(dir, None).expect("open");
    assert_eq!(db.schema_version(), Some(SCHEMA_VERSION));
    assert!(db.location().starts_with("postgres://") && !db.location().contains("password"));
    drop(db);
    let url = backend.database_url(dir).expect("url");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let newer = SCHEMA_VERSION as i32 + 1;
    client
        .execute("INSERT INTO schema_version (version, name) VALUES ($1, 'later')", &[&newer])
        .expect("insert");
    let e = PgEngine::open(&url, None).expect_err("newer schema");
    assert_eq!(e, Error::SchemaTooNew { database: newer as u32, engine: SCHEMA_VERSION });
    let m = e.to_string();
    assert!(m.contains(&newer.to_string()) && m.contains(&SCHEMA_VERSION.to_string()), "{m}");
    // The same version opens again without migrating.
    client.execute("DELETE FROM schema_version WHERE version = $1", &[&newer]).expect("delete");
    assert_eq!(PgEngine::open(&url, None).expect("reopen").schema_version(), SCHEMA_VERSION);
    drop(client);
    backend.discard(dir);
}

/// Terminates every other session on the database of `url`; how many there were.
fn terminate_sessions(url: &str) -> i64 {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .expect("terminate")
        .get(0)
}

/// The awaited lookups run on an actix-web worker's runtime, as in `pki serve`; the synchronous
/// client (opening an engine, the admin session) outside it.
#[test]
fn the_pipelined_lookups_answer_as_the_synchronous_ones_and_outlive_their_connections() {
    use actix_web::{test, App};
    use cerdb::directory::{configure, parse_address, AddressQuery, Directory, FixedClock};
    use cerdb::{EmailAddress, Usage};

    let backend = backend();
    let dir = Path::new("pipelined");
    // Addresses u0..u6 (serial % 7): most with a valid certificate, u1 with a revoked one
    // beside it, u3 with revoked ones only.
    let (url, db, revoked) = twelve_certificates(&backend, dir, RevocationReason::Superseded);
    assert!(db.pipelined_reads().is_some(), "the PostgreSQL engine has pipelined reads");
    let now = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).single().expect("time");
    let directory = Directory::open(db.clone(), &[], Arc::new(FixedClock::new(now))).expect("directory");
    let (secret, _) =
        directory.keys().create(&"pipelined".parse().expect("name"), Some(1e6), Some(1e6), now).expect("key");
    let bearer = format!("Bearer {}", secret.expose());
    let get = |uri: &str| {
        test::TestRequest::get().uri(uri).insert_header(("Authorization", bearer.clone())).to_request()
    };
    let u2: AddressQuery = parse_address("u2@example.com").expect("address");
    let u4 = parse_address("u4@example.com").expect("address");
    let worker = actix_web::rt::System::new();

    worker.block_on(async {
        // Every way of naming an address, both usages, an address without certificates, a
        // hash nobody has: the awaited answers are the synchronous ones, and count alike.
        let mut queries = Vec::new();
        for i in 0..8 {
            let email: EmailAddress = format!("u{i}@example.com").parse().expect("email");
            let hash: [u8; 32] = hex::decode(email.lookup_hash()).expect("hex").try_into().expect("32 bytes");
            queries.push(parse_address(&format!("U{i}@Example.com")).expect("address"));
            queries.push(AddressQuery::Sha256(hash));
        }
        queries.push(AddressQuery::Sha256([7; 32]));
        let mut found = 0;
        let mut expected = Vec::new();
        for q in &queries {
            for usage in [Usage::Signing, Usage::Encryption] {
                let before = directory.lookup_counts();
                let sync = directory.exists(q, usage, now).expect("exists");
                let after_sync = directory.lookup_counts();
                assert_eq!(
                    directory.exists_awaited(q, usage, now).await.expect("exists awaited"),
                    sync,
                    "{q:?}"
                );
                let after_awaited = directory.lookup_counts();
                assert_eq!(
                    (after_awaited.0 - after_sync.0, after_awaited.1 - after_sync.1),
                    (after_sync.0 - before.0, after_sync.1 - before.1),
                    "{q:?}"
                );
                let newest = directory.newest_valid(q, usage, now).expect("newest");
                let awaited = directory.newest_valid_awaited(q, usage, now).await.expect("newest awaited");
                assert_eq!(
                    awaited.as_ref().map(|r| (&r.serial, &r.der)),
                    newest.as_ref().map(|r| (&r.serial, &r.der))
                );
                assert_eq!(newest.is_some(), sync);
                found += usize::from(sync);
                expected.push((q.clone(), usage, sync, newest.map(|r| (r.serial, r.der))));
            }
        }
        // u0, u1, u2, u4, u5, u6 for signing (u3's certificates, serials 3 and 10, are revoked;
        // u7 has none; nobody has one for encryption), each named in clear and hashed.
        assert_eq!(found, 2 * 6, "the fixture's valid addresses");

        // All of them at once, several times over: lookups that arrive together are asked for
        // in one statement, and each still gets its own answer.
        let reads = db.pipelined_reads().expect("pipelined reads");
        let (statements_before, lookups_before) = reads.statement_counts();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            for (q, usage, exists, newest) in expected.iter().cloned() {
                let directory = directory.clone();
                tasks.push(actix_web::rt::spawn(async move {
                    let got = directory.exists_awaited(&q, usage, now).await.expect("exists at once");
                    assert_eq!(got, exists, "{q:?} {usage:?}");
                    let got = directory.newest_valid_awaited(&q, usage, now).await.expect("newest at once");
                    assert_eq!(got.map(|r| (r.serial, r.der)), newest, "{q:?} {usage:?}");
                }));
            }
        }
        for task in tasks {
            task.await.expect("a lookup's task");
        }
        let (statements, lookups) = reads.statement_counts();
        let (statements, lookups) = (statements - statements_before, lookups - lookups_before);
        // Exists and fetch of each query, per usage: 8 addresses named in clear, 1 lookup each;
        // 7 hashes of addresses with certificates, 2 each (the hash resolved first); 2 hashes
        // of none, 1 each.
        assert_eq!(lookups, 10 * 2 * 2 * (8 + 7 * 2 + 2), "every lookup asked the database");
        assert!(statements < lookups / 2, "{lookups} lookups arriving together took {statements} statements");

        // Over HTTP: the handlers' answers.
        let app = test::init_service(App::new().configure(configure(directory.clone()))).await;
        let res =
            test::call_service(&app, get("/api/v1/certificates/exists?email=u2@example.com&usage=signing"))
                .await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).expect("json");
        assert_eq!(body["exists"], true);
        let res =
            test::call_service(&app, get("/api/v1/certificates?email=u3@example.com&usage=signing")).await;
        assert_eq!(res.status(), 404);
        assert!(directory.exists_awaited(&u2, Usage::Signing, now).await.expect("exists"));
    });

    // A revocation written through another engine (another process) is seen by the next lookup.
    let other = CertDb::from_engine(Arc::new(PgEngine::open(&url, None).expect("open other")));
    for serial in [2u64, 9] {
        other.revoke(&cert(serial).serial, revoked.clone(), None, &Linked("revoke")).expect("revoke");
    }
    drop(other);
    worker.block_on(async {
        assert!(!directory.exists_awaited(&u2, Usage::Signing, now).await.expect("exists"));
    });

    // The server ends every session (as a restart does): the next lookups open new connections.
    assert!(terminate_sessions(&url) >= 2, "the pipelined reads' connections were open");
    worker.block_on(async {
        for _ in 0..4 {
            assert!(directory
                .exists_awaited(&u4, Usage::Signing, now)
                .await
                .expect("exists after termination"));
            assert!(directory
                .newest_valid_awaited(&u4, Usage::Signing, now)
                .await
                .expect("newest")
                .is_some());
        }
        let app = test::init_service(App::new().configure(configure(directory.clone()))).await;
        let res =
            test::call_service(&app, get("/api/v1/certificates/exists?email=u4@example.com&usage=signing"))
                .await;
        assert_eq!(res.status(), 200);
    });
    drop((directory, db));
    backend.discard(dir);
}

/// A new database of `backend` at `dir` with the certificates of serials 1 to 12, those of 1, 3
/// and 10 revoked for `reason`: its URL, the store, and the revocation.
fn twelve_certificates(
    backend: &PgBackend,
    dir: &Path,
    reason: RevocationReason,
) -> (String, CertDb, Revocation) {
    let url = backend.database_url(dir).expect("database");
    let db = CertDb::from_engine(Arc::new(PgEngine::open(&url, None).expect("open")));
    for serial in 1..=12u64 {
        db.store_issued(&[cert(serial)], &Linked("issue")).expect("store");
    }
    let revoked =
        Revocation { at: Utc.with_ymd_and_hms(2026, 6, 2, 0, 0, 0).single().expect("time"), reason };
    for serial in [1u64, 3, 10] {
        db.revoke(&cert(serial).serial, revoked.clone(), None, &Linked("revoke")).expect("revoke");
    }
    (url, db, revoked)
}

/// The OCSP responder's reads, pipelined: a certificate's state by serial and the change feed's
/// newest entry answer as the synchronous reads do, alone and when many arrive together (then in
/// fewer statements), and see a revocation written through another engine at once.
#[test]
fn the_pipelined_states_and_feed_end_answer_as_the_synchronous_ones() {
    let backend = backend();
    let dir = Path::new("pipelined-states");
    let (url, db, revoked) = twelve_certificates(&backend, dir, RevocationReason::CessationOfOperation);
    let (reader, feed) = (db.reader(), db.feed());
    let reads = db.pipelined_reads().expect("pipelined reads");
    // Serials 1..=12 stored, 13 and 14 never issued.
    let serials: Vec<Serial> = (1..=14u64).map(|n| cert(n).serial).collect();
    let expected: Vec<_> = serials.iter().map(|s| reader.state(s).expect("state")).collect();
    assert_eq!(expected.iter().filter(|s| s.as_ref().is_some_and(|s| s.revocation.is_some())).count(), 3);
    assert!(expected[12].is_none() && expected[13].is_none());
    let last = feed.last_change().expect("last change");
    assert!(last >= 3, "three revocations in the feed: {last}");
    let worker = actix_web::rt::System::new();
    worker.block_on(async {
        for (serial, want) in serials.iter().zip(&expected) {
            assert_eq!(&reads.state(serial).await.expect("state awaited"), want, "{serial}");
        }
        assert_eq!(reads.last_change().await.expect("last change awaited"), last);

        // Many at once: each its own answer, in fewer statements than lookups.
        let (statements_before, lookups_before) = reads.statement_counts();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            for (serial, want) in serials.iter().cloned().zip(expected.iter().cloned()) {
                let reads = reads.clone();
                tasks.push(actix_web::rt::spawn(async move {
                    assert_eq!(reads.state(&serial).await.expect("state at once"), want, "{serial}");
                    assert_eq!(reads.last_change().await.expect("last change at once"), last);
                }));
            }
        }
        for task in tasks {
            task.await.expect("a lookup's task");
        }
        let (statements, lookups) = reads.statement_counts();
        let (statements, lookups) = (statements - statements_before, lookups - lookups_before);
        assert_eq!(lookups, 10 * 14 * 2, "every lookup asked the database");
        assert!(statements < lookups / 2, "{lookups} lookups arriving together took {statements} statements");
    });

    // A revocation through another engine (another process): the next reads see it.
    let other = CertDb::from_engine(Arc::new(PgEngine::open(&url, None).expect("open other")));
    other.revoke(&serials[1], revoked.clone(), None, &Linked("revoke")).expect("revoke");
    drop(other);
    worker.block_on(async {
        assert!(reads.last_change().await.expect("last change") > last);
        let state = reads.state(&serials[1]).await.expect("state").expect("stored");
        assert_eq!(state.revocation.map(|r| r.reason), Some(RevocationReason::CessationOfOperation));
    });
    drop((reads, reader, feed, db));
    backend.discard(dir);
}

/// Sends `signal` (`STOP`, `CONT`) to the server processes of the sessions of `url`'s database
/// (but the one asking).
fn signal_sessions(url: &str, signal: &str) -> Vec<i32> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    let pids: Vec<i32> = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .expect("sessions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    for pid in &pids {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }
    pids
}

/// A server that stops answering (its processes stopped, their connections open): a lookup
/// waiting on it fails as unavailable after the read timeout instead of hanging its request, and
/// the next lookup opens a new connection.
#[test]
fn a_lookup_the_database_does_not_answer_fails_after_the_timeout_and_the_next_one_reconnects() {
    use cerdb::directory::{parse_address, Directory, FixedClock};
    use cerdb::pg_engine::ReadSettings;
    use cerdb::Usage;
    use std::time::{Duration, Instant};

    let backend = backend();
    let dir = Path::new("read-timeout");
    let url = backend.database_url(dir).expect("database");
    let settings = ReadSettings { connections: 1, timeout: Duration::from_secs(2) };
    let db = CertDb::from_engine(Arc::new(PgEngine::open_with(&url, None, settings).expect("open")));
    db.store_issued(&[cert(1)], &Linked("issue")).expect("store");
    let now = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).single().expect("time");
    let directory = Directory::open(db.clone(), &[], Arc::new(FixedClock::new(now))).expect("directory");
    let u1 = parse_address("u1@example.com").expect("address");
    let worker = actix_web::rt::System::new();
    assert!(worker.block_on(directory.exists_awaited(&u1, Usage::Signing, now)).expect("exists"));

    /// Lets the stopped processes go on, whatever the test's end.
    struct Resume<'a>(&'a str);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            signal_sessions(self.0, "CONT");
        }
    }
    let resume = Resume(&url);
    assert!(!signal_sessions(&url, "STOP").is_empty(), "the engine's sessions");
    let started = Instant::now();
    let err = worker
        .block_on(directory.exists_awaited(&u1, Usage::Signing, now))
        .expect_err("a lookup nobody answers");
    let waited = started.elapsed();
    assert!(
        err.to_string().contains("did not answer a lookup within 2 s"),
        "the error names the timeout: {err}"
    );
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(8), "waited {waited:?}");
    // The stopped processes are still stopped: the next lookup is answered on a new connection.
    assert!(worker
        .block_on(directory.newest_valid_awaited(&u1, Usage::Signing, now))
        .expect("a lookup on a new connection")
        .is_some());
    drop(resume);
    drop((directory, db));
    backend.discard(dir);
}
