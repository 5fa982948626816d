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
