//! The scenario suite: written once against the storage contract, run on every engine
//! (`tests/scenarios.rs` runs it on each [`Backend`]).
//!
//! A scenario is a list of steps, each one operation of the contract and the checks of its
//! outcome. [`run`] plays every scenario on a fresh store and calls
//! [`CertStore::check_consistency`] after every step. [`run_with_faults`] plays every scenario
//! again once per write the scenario makes, with a store whose N-th write fails: the scenario
//! stops at the failed step, the store is closed and opened again without faults, it must be
//! consistent, and what it holds must be exactly what it held before the failed step or after
//! it — nothing half-written survives.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::acme_store::AcmeKind;
use crate::console_store::{ConsoleRole, ConsoleSession, ConsoleUser, SessionId, SessionStage, UserName};
use crate::directory::{ApiKeyName, ApiKeyStore, DirectoryError};
use crate::recovery_store::{RecoveryId, RecoveryRequest, RecoveryStep};
use crate::tsa_store::{TokenRecord, TsaSerial, TsaStore};
use crate::{
    AuditChain, AuditRecord, CaId, CertDb, CertKind, CertRecord, ChangeKind, CrlRecord, EmailAddress, Error,
    Faults, Fingerprint, KeyDigest, Revocation, RevocationReason, Serial,
};

/// An engine the suite runs on.
pub trait Backend {
    /// Its name, for messages.
    fn name(&self) -> &str;
    /// Opens (creating) the store kept in `dir`, with `faults` injected when given.
    fn open(&self, dir: &Path, faults: Option<Arc<Faults>>) -> Result<CertDb, Error>;
    /// The store kept in `dir` is no longer needed (every handle on it is dropped).
    fn discard(&self, _dir: &Path) {}
}

/// The embedded engine.
#[derive(Debug, Clone, Copy)]
pub struct SledBackend;

impl Backend for SledBackend {
    fn name(&self) -> &str {
        "sled"
    }
    fn open(&self, dir: &Path, faults: Option<Arc<Faults>>) -> Result<CertDb, Error> {
        let engine = crate::sled_engine::SledEngine::open(&dir.join("db"), 64 << 20, faults)?;
        Ok(CertDb::from_engine(Arc::new(engine)))
    }
}

/// The PostgreSQL engine: each store directory of the suite is a database of its own on the
/// server at the maintenance URL (`pki_scn_`, a random name of this backend, a number), so tests
/// may run in parallel on one server. A discarded store's database is emptied (its schema
/// dropped) and given to the next store — `DROP DATABASE` waits for a checkpoint, 0.7 s each on
/// the test machine, longer than the suite's work on it — and the backend's databases are
/// dropped with it.
pub struct PgBackend {
    /// The URL of a database to run `CREATE DATABASE` from.
    url: String,
    /// The prefix of this backend's database names.
    prefix: String,
    admin: std::sync::Mutex<postgres::Client>,
    /// The number of the next database.
    next: std::sync::atomic::AtomicUsize,
    /// Store directory → database name.
    dbs: std::sync::Mutex<Vec<(std::path::PathBuf, String)>>,
    /// Databases emptied for the next store.
    free: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl PgBackend {
    /// Connects to the server of `url` (a user that may create databases).
    pub fn connect(url: &str) -> Result<Self, Error> {
        let config: postgres::Config =
            url.parse().map_err(|e| Error::Db(format!("invalid database URL: {e}")))?;
        let admin = config.connect(postgres::NoTls)?;
        use ring::rand::SecureRandom as _;
        let mut r = [0u8; 5];
        ring::rand::SystemRandom::new().fill(&mut r).map_err(|_| Error::Db("no randomness".into()))?;
        Ok(PgBackend {
            url: url.to_string(),
            prefix: format!("pki_scn_{}", hex::encode(r)),
            admin: std::sync::Mutex::new(admin),
            next: std::sync::atomic::AtomicUsize::new(1),
            dbs: Default::default(),
            free: Default::default(),
        })
    }

    fn admin(&self) -> std::sync::MutexGuard<'_, postgres::Client> {
        self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection string of the database of the store `dir`, created on first use (for
    /// tests that reach past the engine).
    pub fn database_url(&self, dir: &Path) -> Result<String, Error> {
        let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
        let name = match dbs.iter().find(|(d, _)| d == dir) {
            Some((_, name)) => name.clone(),
            None => {
                let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let name = match reused {
                    Some(name) => name,
                    None => {
                        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let name = format!("{}_{n}", self.prefix);
                        self.admin().batch_execute(&format!("CREATE DATABASE {name}"))?;
                        name
                    }
                };
                dbs.push((dir.to_path_buf(), name.clone()));
                name
            }
        };
        Ok(self.url_of_db(&name))
    }

    /// The key=value connection string of database `name` on the server (`postgres::Config`
    /// has no URL form), values quoted.
    fn url_of_db(&self, name: &str) -> String {
        let config: postgres::Config = self.url.parse().unwrap_or_default();
        // `postgres::Config` has no URL form: the key=value form of libpq, values quoted.
        let mut url = format!("dbname='{name}'");
        if let Some(user) = config.get_user() {
            url.push_str(&format!(" user='{user}'"));
        }
        if let Some(pw) = config.get_password() {
            url.push_str(&format!(
                " password='{}'",
                String::from_utf8_lossy(pw).replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
        match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => url.push_str(&format!(" host='{h}'")),
            Some(postgres::config::Host::Unix(p)) => url.push_str(&format!(" host='{}'", p.display())),
            None => {}
        }
        if let Some(port) = config.get_ports().first() {
            url.push_str(&format!(" port={port}"));
        }
        url
    }

    /// Empties database `name` for the next store; dropped instead when that fails.
    fn empty_db(&self, name: &str) {
        let emptied = postgres::Client::connect(&self.url_of_db(name), postgres::NoTls)
            .and_then(|mut c| c.batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public"));
        match emptied {
            Ok(()) => self.free.lock().unwrap_or_else(|p| p.into_inner()).push(name.to_string()),
            Err(e) => {
                eprintln!("cannot empty the scenario database {name} ({e}): dropping it");
                self.drop_db(name);
            }
        }
    }

    fn drop_db(&self, name: &str) {
        if let Err(e) = self.admin().batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")) {
            eprintln!("cannot drop the scenario database {name}: {e}");
        }
    }
}

impl Backend for PgBackend {
    fn name(&self) -> &str {
        "postgresql"
    }
    fn open(&self, dir: &Path, faults: Option<Arc<Faults>>) -> Result<CertDb, Error> {
        let engine = crate::pg_engine::PgEngine::open(&self.database_url(dir)?, faults)?;
        Ok(CertDb::from_engine(Arc::new(engine)))
    }
    fn discard(&self, dir: &Path) {
        let found = {
            let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
            dbs.iter().position(|(d, _)| d == dir).map(|i| dbs.swap_remove(i).1)
        };
        if let Some(name) = found {
            self.empty_db(&name);
        }
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        let mut names: Vec<String> =
            self.dbs.lock().unwrap_or_else(|p| p.into_inner()).drain(..).map(|(_, n)| n).collect();
        names.append(&mut self.free.lock().unwrap_or_else(|p| p.into_inner()));
        for name in names {
            self.drop_db(&name);
        }
    }
}

/// What a step works on: the store, and how to close and open it again.
pub struct Ctx<'a> {
    backend: &'a dyn Backend,
    dir: &'a Path,
    faults: Option<Arc<Faults>>,
    db: Option<CertDb>,
}

impl Ctx<'_> {
    /// The store.
    pub fn db(&self) -> &CertDb {
        // A context always holds a store between steps; `reopen` replaces it.
        self.db.as_ref().expect("the scenario's store is open")
    }

    /// Closes the store and opens it again (a restart).
    pub fn reopen(&mut self) -> Result<(), Error> {
        self.db = None;
        self.db = Some(self.backend.open(self.dir, self.faults.clone())?);
        Ok(())
    }
}

type StepFn = fn(&mut Ctx<'_>) -> Result<(), Error>;

/// One scenario: its name and its steps.
pub struct Scenario {
    /// What it shows.
    pub name: &'static str,
    /// Its steps, in order.
    pub steps: Vec<(&'static str, StepFn)>,
}

/// A failed check inside a step.
fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::Inconsistent(format!("scenario check failed: {}", what())))
    }
}

/// An operation that must be refused with an error matching `want`.
fn refused<T: std::fmt::Debug>(
    got: Result<T, Error>,
    what: &str,
    want: impl Fn(&Error) -> bool,
) -> Result<(), Error> {
    match got {
        Err(e) if want(&e) => Ok(()),
        Err(e @ Error::Db(_)) => Err(e),
        other => Err(Error::Inconsistent(format!("scenario check failed: {what} gave {other:?}"))),
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).single().unwrap_or_default()
}

/// A certificate record whose DER is `tag` and some bytes (its serial is `serial`).
fn cert(serial: u64, email: &str, kind: CertKind, days_after_t0: i64) -> CertRecord {
    let der = format!("certificate {serial} of {email}").into_bytes();
    let nb = t0() + Duration::days(days_after_t0);
    CertRecord {
        serial: Serial::from_bytes(&serial.to_be_bytes()).unwrap_or_else(|_| unreachable!("nonzero serial")),
        fingerprint: Fingerprint::of(&der),
        kind,
        email: Some(email.parse().unwrap_or_else(|_| unreachable!("a valid address"))),
        subject: format!("CN={email}"),
        issuer: CaId::Issuing,
        not_before: nb,
        not_after: nb + Duration::days(365),
        issued_at: nb,
        key_type: "p256".into(),
        escrow_key: None,
        revocation: None,
        der,
    }
}

fn serial(n: u64) -> Serial {
    Serial::from_bytes(&n.to_be_bytes()).unwrap_or_else(|_| unreachable!("nonzero serial"))
}

fn email(s: &str) -> EmailAddress {
    s.parse().unwrap_or_else(|_| unreachable!("a valid address"))
}

/// A hash chain of the suite's own: each record names the previous record's bytes' SHA-256, so
/// a fork or a gap shows in [`chain_is_continuous`].
struct TestChain(Vec<&'static str>);

fn digest(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

impl AuditChain for TestChain {
    fn records_after(&self, last: Option<&AuditRecord>) -> Result<Vec<AuditRecord>, Error> {
        let mut seq = last.map(|r| r.seq).unwrap_or(0);
        let mut prev = last.map(|r| digest(&r.bytes)).unwrap_or_default();
        Ok(self
            .0
            .iter()
            .map(|what| {
                seq += 1;
                let bytes = format!("{seq} {what} after {prev}").into_bytes();
                prev = digest(&bytes);
                AuditRecord { seq, bytes }
            })
            .collect())
    }
}

fn audit(what: &'static str) -> TestChain {
    TestChain(vec![what])
}

fn chain_is_continuous(db: &CertDb) -> Result<(), Error> {
    let mut prev = String::new();
    for (i, r) in db.audit_records().enumerate() {
        let r = r?;
        let text = String::from_utf8_lossy(&r.bytes).to_string();
        check(r.seq == i as u64 + 1, || format!("audit entry {} at position {}", r.seq, i + 1))?;
        check(text.starts_with(&format!("{} ", r.seq)) && text.ends_with(&format!("after {prev}")), || {
            format!("audit entry {} does not follow the one before: {text}", r.seq)
        })?;
        prev = digest(&r.bytes);
    }
    Ok(())
}

fn user(name: &str) -> ConsoleUser {
    ConsoleUser {
        name: name.parse().unwrap_or_else(|_| unreachable!("a valid name")),
        role: ConsoleRole::Officer,
        password_hash: "$argon2id$x".into(),
        must_change_password: true,
        totp_sealed: None,
        totp_secret: None,
        totp_last_step: 0,
        disabled: false,
        failed_logins: 0,
        locked_until: None,
        created_at: t0(),
        last_login: None,
        recovery_hold: None,
    }
}

fn recovery(n: u8) -> RecoveryRequest {
    RecoveryRequest {
        id: RecoveryId::from_bytes([n; 16]),
        serial: serial(u64::from(n)),
        requester: "console:alice".into(),
        reason: format!("mailbox {n} lost its key"),
        required: 2,
        created_at: t0() + Duration::seconds(i64::from(n)),
        expires_at: t0() + Duration::hours(24),
        approvals: vec![],
        released: None,
    }
}

fn step(actor: &str) -> RecoveryStep {
    RecoveryStep { actor: actor.into(), at: t0() + Duration::minutes(5) }
}

fn session(name: &str, last_seen: DateTime<Utc>) -> ConsoleSession {
    ConsoleSession {
        user: name.parse().unwrap_or_else(|_| unreachable!("a valid name")),
        stage: SessionStage::Active,
        created_at: t0(),
        last_seen,
        csrf_token: "00".into(),
        step_up_at: None,
        pending_totp_sealed: Some(vec![1, 2, 3]),
    }
}

fn token(serial: TsaSerial) -> TokenRecord {
    TokenRecord {
        serial,
        gen_time: t0(),
        hash_algorithm: "2.16.840.1.101.3.4.2.1".into(),
        imprint: vec![7; 32],
        policy: "1.3.6.1.4.1.32473.1".into(),
        token_sha256: [serial.value() as u8; 32],
    }
}

fn dir_err(e: DirectoryError) -> Error {
    match e {
        DirectoryError::Storage(e) => e,
        other => Error::Inconsistent(format!("scenario check failed: {other}")),
    }
}

fn key_name(s: &str) -> ApiKeyName {
    s.parse().unwrap_or_else(|_| unreachable!("a valid key name"))
}

fn revoke_with<const I: usize>(c: &mut Ctx<'_>) -> Result<(), Error> {
    let reason = RevocationReason::ALL[I];
    let key = (reason == RevocationReason::KeyCompromise).then(|| KeyDigest::of(b"key r1"));
    let rev = Revocation { at: t0() + Duration::hours(I as i64), reason };
    let rec = c.db().revoke(&serial(20 + I as u64), rev.clone(), key.as_ref(), &audit("revoke"))?;
    check(rec.revocation == Some(rev), || format!("{reason} recorded"))
}

fn revoke_serial<const S: u64>(c: &mut Ctx<'_>) -> Result<(), Error> {
    let rev = Revocation { at: t0(), reason: RevocationReason::Superseded };
    c.db().revoke(&serial(S), rev, None, &audit("revoke")).map(drop)
}

fn put_crl<const N: u64>(c: &mut Ctx<'_>) -> Result<(), Error> {
    let crl = CrlRecord {
        ca: CaId::Issuing,
        number: N,
        this_update: t0(),
        next_update: t0() + Duration::days(1),
        der: vec![N as u8],
    };
    c.db().put_crl(&crl, &audit("crl"))
}

/// Every scenario of the suite. Each step makes at most one atomic write of the contract (the
/// TSA's `record_next` two: a block reservation and a record), so that a fault leaves the store
/// as it was before the step or as it is after it.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "a batch is stored atomically or not at all",
            steps: vec![
                ("store a batch of three", |c| {
                    let batch = [
                        cert(1, "Alice@Example.com", CertKind::Encryption, 0),
                        cert(2, "alice@example.com", CertKind::Signing, 0),
                        cert(3, "bob@example.com", CertKind::Encryption, 1),
                    ];
                    c.db().store_issued(&batch, &TestChain(vec!["issue 1", "issue 2", "issue 3"]))
                }),
                ("find them by serial, fingerprint, address and hashed address", |c| {
                    let db = c.db();
                    let a = email("ALICE@example.com");
                    check(db.count()? == 3, || "three stored".into())?;
                    check(db.by_email(&a, None)?.len() == 2, || "two of alice".into())?;
                    let enc = db.newest_valid(&a, CertKind::Encryption, t0() + Duration::days(1))?;
                    check(enc.is_some_and(|r| r.serial == serial(1) && !r.der.is_empty()), || {
                        "alice's".into()
                    })?;
                    let hash: [u8; 32] =
                        ring::digest::digest(&ring::digest::SHA256, a.lookup_key().as_bytes())
                            .as_ref()
                            .try_into()
                            .unwrap_or_default();
                    check(db.email_by_hash(&hash)?.map(|e| e.lookup_key()) == Some(a.lookup_key()), || {
                        "by hash".into()
                    })?;
                    let fp = cert(3, "bob@example.com", CertKind::Encryption, 1).fingerprint;
                    check(db.by_fingerprint(&fp)?.is_some_and(|r| r.serial == serial(3)), || "by fp".into())
                }),
                ("a batch with a serial stored before is refused whole", |c| {
                    let batch = [
                        cert(4, "carol@example.com", CertKind::Signing, 0),
                        cert(2, "dave@example.com", CertKind::Signing, 0),
                    ];
                    refused(
                        c.db().store_issued(&batch, &TestChain(vec!["issue 4", "issue 2 again"])),
                        "dup batch",
                        |e| matches!(e, Error::SerialInUse(s) if *s == serial(2)),
                    )?;
                    check(c.db().get(&serial(4))?.is_none(), || "nothing of the batch".into())?;
                    check(c.db().by_email(&email("carol@example.com"), None)?.is_empty(), || {
                        "no index".into()
                    })
                }),
                ("a serial twice within one batch is refused", |c| {
                    let twice = [
                        cert(5, "erin@example.com", CertKind::Signing, 0),
                        cert(5, "erin@example.com", CertKind::Signing, 0),
                    ];
                    refused(c.db().store_issued(&twice, &TestChain(vec!["a", "b"])), "twice", |e| {
                        matches!(e, Error::SerialInUse(_))
                    })?;
                    check(c.db().count()? == 3, || "still three".into())
                }),
            ],
        },
        Scenario {
            name: "a serial stored or retired is never used again",
            steps: vec![
                ("store one", |c| {
                    c.db()
                        .store_issued(&[cert(10, "a@example.com", CertKind::Signing, 0)], &audit("issue 10"))
                }),
                ("retire two serials signed into certificates never stored", |c| {
                    c.db().retire_serials(&[serial(11), serial(12)])
                }),
                ("the retired and the stored are used; a fresh one is not", |c| {
                    let db = c.db();
                    check(db.serial_used(&serial(10))? && db.serial_used(&serial(11))?, || "used".into())?;
                    check(!db.serial_used(&serial(13))?, || "13 unused".into())?;
                    let mut retired = db.retired_serials()?;
                    retired.sort();
                    check(retired == vec![serial(11), serial(12)], || format!("retired {retired:?}"))
                }),
                ("storing a retired serial is refused", |c| {
                    refused(
                        c.db().store_issued(
                            &[cert(11, "b@example.com", CertKind::Signing, 0)],
                            &audit("issue 11"),
                        ),
                        "retired",
                        |e| matches!(e, Error::SerialInUse(_)),
                    )
                }),
                ("after a restart too", |c| {
                    c.reopen()?;
                    refused(
                        c.db().store_issued(
                            &[cert(12, "b@example.com", CertKind::Signing, 0)],
                            &audit("issue 12"),
                        ),
                        "retired",
                        |e| matches!(e, Error::SerialInUse(_)),
                    )?;
                    check(c.db().serial_used(&serial(12))?, || "12 used".into())
                }),
            ],
        },
        Scenario {
            name: "revocation with each reason, keyCompromise propagation and the compromised-key record",
            steps: vec![
                ("store one certificate per reason and two of one key", |c| {
                    let mut batch: Vec<CertRecord> = (0..RevocationReason::ALL.len() as u64)
                        .map(|i| cert(20 + i, &format!("r{i}@example.com"), CertKind::Signing, 0))
                        .collect();
                    batch.push(cert(30, "k@example.com", CertKind::Signing, 0));
                    batch.push(cert(31, "k@example.com", CertKind::Encryption, 0));
                    c.db().store_issued(&batch, &audit("issue batch"))
                }),
                ("revoke with unspecified", revoke_with::<0>),
                ("revoke with keyCompromise", revoke_with::<1>),
                ("revoke with cACompromise", revoke_with::<2>),
                ("revoke with affiliationChanged", revoke_with::<3>),
                ("revoke with superseded", revoke_with::<4>),
                ("revoke with cessationOfOperation", revoke_with::<5>),
                ("revoke with privilegeWithdrawn", revoke_with::<6>),
                ("a second revocation is refused, a digest goes with keyCompromise only", |c| {
                    let rev = Revocation { at: t0(), reason: RevocationReason::Superseded };
                    refused(c.db().revoke(&serial(20), rev.clone(), None, &audit("again")), "again", |e| {
                        matches!(e, Error::AlreadyRevoked { .. })
                    })?;
                    refused(
                        c.db().revoke(&serial(30), rev, Some(&KeyDigest::of(b"x")), &audit("digest")),
                        "digest",
                        |e| matches!(e, Error::Inconsistent(_)),
                    )?;
                    refused(
                        c.db().revoke(
                            &serial(99),
                            Revocation { at: t0(), reason: RevocationReason::Unspecified },
                            None,
                            &audit("none"),
                        ),
                        "unknown",
                        |e| matches!(e, Error::NotFound(_)),
                    )
                }),
                ("revoke as superseded", |c| {
                    let first =
                        Revocation { at: t0() + Duration::hours(1), reason: RevocationReason::Superseded };
                    c.db().revoke(&serial(30), first, None, &audit("superseded")).map(drop)
                }),
                ("then found compromised: the reason changes, the time stays", |c| {
                    let later =
                        Revocation { at: t0() + Duration::hours(5), reason: RevocationReason::KeyCompromise };
                    let rec = c.db().revoke(
                        &serial(30),
                        later,
                        Some(&KeyDigest::of(b"key k")),
                        &audit("keyCompromise"),
                    )?;
                    let want =
                        Revocation { at: t0() + Duration::hours(1), reason: RevocationReason::KeyCompromise };
                    check(rec.revocation == Some(want), || "changed".into())
                }),
                ("the other certificate of the key", |c| {
                    let rev =
                        Revocation { at: t0() + Duration::hours(6), reason: RevocationReason::KeyCompromise };
                    c.db()
                        .revoke(&serial(31), rev, Some(&KeyDigest::of(b"key k")), &audit("same key"))
                        .map(drop)
                }),
                ("the compromised keys name the first report", |c| {
                    let keys = c.db().compromised_keys()?;
                    check(keys.contains(&(KeyDigest::of(b"key k"), serial(30))), || format!("{keys:?}"))?;
                    check(keys.contains(&(KeyDigest::of(b"key r1"), serial(21))), || format!("{keys:?}"))?;
                    check(keys.len() == 2, || format!("{keys:?}"))
                }),
                ("recording again keeps the first report", |c| {
                    let again =
                        [(KeyDigest::of(b"key k"), serial(31)), (KeyDigest::of(b"key z"), serial(31))];
                    c.db().record_compromised(&again)?;
                    let keys = c.db().compromised_keys()?;
                    check(keys.contains(&(KeyDigest::of(b"key k"), serial(30))) && keys.len() == 3, || {
                        format!("{keys:?}")
                    })
                }),
                ("revoked certificates are listed per CA and no longer valid", |c| {
                    check(
                        c.db().revoked_by(CaId::Issuing)?.len() == RevocationReason::ALL.len() + 2,
                        || "revoked list".into(),
                    )?;
                    check(
                        c.db()
                            .newest_valid(
                                &email("k@example.com"),
                                CertKind::Signing,
                                t0() + Duration::days(1),
                            )?
                            .is_none(),
                        || "none valid".into(),
                    )
                }),
            ],
        },
        Scenario {
            name: "CRL numbers strictly increase",
            steps: vec![
                ("CRL 1", put_crl::<1>),
                ("CRL 2", put_crl::<2>),
                ("2 again and 1 are refused", |c| {
                    for number in [2, 1] {
                        let crl = CrlRecord {
                            ca: CaId::Issuing,
                            number,
                            this_update: t0(),
                            next_update: t0(),
                            der: vec![9],
                        };
                        refused(c.db().put_crl(&crl, &audit("crl")), "old number", |e| {
                            matches!(e, Error::Inconsistent(_))
                        })?;
                    }
                    check(
                        c.db().crl(CaId::Issuing)?.is_some_and(|c| c.number == 2 && c.der == vec![2]),
                        || "CRL 2 kept".into(),
                    )?;
                    check(c.db().crl(CaId::Root)?.is_none(), || "no root CRL".into())
                }),
                ("another CA counts on its own", |c| {
                    let crl = CrlRecord {
                        ca: CaId::Root,
                        number: 1,
                        this_update: t0(),
                        next_update: t0(),
                        der: vec![1],
                    };
                    c.db().put_crl(&crl, &audit("root crl"))
                }),
            ],
        },
        Scenario {
            name: "the audit chain is continuous across reopening and across two handles",
            steps: vec![
                ("two entries at once", |c| c.db().append_audit(&TestChain(vec!["one", "two"]))),
                ("an issuance with its entry", |c| {
                    c.db()
                        .store_issued(&[cert(40, "x@example.com", CertKind::Signing, 0)], &audit("issue 40"))
                }),
                ("after a restart", |c| {
                    c.reopen()?;
                    check(c.db().last_audit()?.is_some_and(|r| r.seq == 3), || "head read back".into())?;
                    c.db().append_audit(&audit("three"))
                }),
                ("a second handle", |c| c.db().clone().append_audit(&audit("turn"))),
                ("the first handle again", |c| c.db().append_audit(&audit("turn"))),
                ("a third handle", |c| {
                    let other = c.db().clone();
                    other.append_audit(&audit("turn"))?;
                    chain_is_continuous(&other)
                }),
                ("and the first", |c| {
                    c.db().append_audit(&audit("turn"))?;
                    chain_is_continuous(c.db())
                }),
                ("records are read from any position", |c| {
                    let from = c.db().audit_records_from(5)?;
                    check(from.first().is_some_and(|r| r.seq == 5) && from.len() == 4, || {
                        format!("{} from 5", from.len())
                    })
                }),
                ("numbers that do not follow the log are refused", |c| {
                    let stray = AuditRecord { seq: 100, bytes: b"stray".to_vec() };
                    refused(c.db().append_audit(&stray), "stray", |e| matches!(e, Error::Inconsistent(_)))?;
                    chain_is_continuous(c.db())
                }),
            ],
        },
        Scenario {
            name: "the change feed sees every revocation once, in order",
            steps: vec![
                ("store five", |c| {
                    let batch: Vec<CertRecord> = (50..55)
                        .map(|i| cert(i, &format!("f{i}@example.com"), CertKind::Signing, 0))
                        .collect();
                    c.db().store_issued(&batch, &audit("issue"))?;
                    check(c.db().last_change()? == 0, || "no change yet".into())
                }),
                ("revoke 52", revoke_serial::<52>),
                ("revoke 50", revoke_serial::<50>),
                ("50 again is refused", |c| {
                    let rev = Revocation { at: t0(), reason: RevocationReason::Unspecified };
                    refused(c.db().revoke(&serial(50), rev, None, &audit("again")), "again", |e| {
                        matches!(e, Error::AlreadyRevoked { .. })
                    })
                }),
                ("revoke 54", revoke_serial::<54>),
                ("read from the start and from the middle", |c| {
                    let all = c.db().changes_since(0)?;
                    let serials: Vec<(u64, Serial)> = all
                        .iter()
                        .map(|ch| match &ch.kind {
                            ChangeKind::Revoked(s) => (ch.seq, s.clone()),
                        })
                        .collect();
                    check(serials == vec![(1, serial(52)), (2, serial(50)), (3, serial(54))], || {
                        format!("{serials:?}")
                    })?;
                    check(c.db().changes_since(2)?.len() == 1 && c.db().last_change()? == 3, || {
                        "from 2".into()
                    })
                }),
                ("after a restart the feed goes on", |c| {
                    c.reopen()?;
                    check(c.db().last_change()? == 3, || "position kept".into())?;
                    c.db().revoke(
                        &serial(53),
                        Revocation { at: t0(), reason: RevocationReason::KeyCompromise },
                        Some(&KeyDigest::of(b"k53")),
                        &audit("revoke"),
                    )?;
                    check(c.db().changes_since(3)?.len() == 1, || "one more".into())
                }),
            ],
        },
        Scenario {
            name: "TSA serials are never reused across a crash",
            steps: vec![
                ("reserve a block and record a token", |c| {
                    let store = TsaStore::open(c.db())?;
                    store.record_next(10, token)?;
                    check(store.high_water_mark()? == 10, || "block of 10".into())
                }),
                ("and another from the same block", |c| {
                    // The block lives in the store while it is held: a second store object of
                    // the same handle shares it.
                    let first = TsaStore::open(c.db())?;
                    let next = first.record_next(10, token)?;
                    check(next.serial.value() >= 2, || format!("serial {}", next.serial))
                }),
                ("restart: the rest of the block is skipped", |c| {
                    c.reopen()?;
                    let store = TsaStore::open(c.db())?;
                    let before = store.high_water_mark()?;
                    let next = store.record_next(10, token)?;
                    check(next.serial.value() == before + 1, || {
                        format!("next serial {} after {before}", next.serial)
                    })?;
                    check(store.token_count() == 3, || "three recorded".into())?;
                    store.check_consistency()
                }),
                ("blocks reserved directly are disjoint", |c| {
                    let store = TsaStore::open(c.db())?;
                    let mut a = store.reserve_serials(3)?;
                    let mut b = store.reserve_serials(3)?;
                    let (x, y) = (a.next_serial(), b.next_serial());
                    check(x.is_some() && y.is_some() && x != y, || format!("{x:?} {y:?}"))
                }),
            ],
        },
        Scenario {
            name: "console accounts and sessions, expiring",
            steps: vec![
                ("add an account", |c| {
                    let console = c.db().console();
                    check(console.has_no_users()?, || "empty".into())?;
                    check(console.insert_user(&user("alice"))?, || "alice".into())
                }),
                ("a name once", |c| {
                    check(!c.db().console().insert_user(&user("ALICE"))?, || "alice again".into())
                }),
                ("another", |c| check(c.db().console().insert_user(&user("bob"))?, || "bob".into())),
                ("change an account", |c| {
                    let console = c.db().console();
                    let alice: UserName = "alice".parse().map_err(Error::Inconsistent)?;
                    let u = console.update_user(&alice, &|u| u.failed_logins += 1)?;
                    check(u.is_some_and(|u| u.failed_logins == 1), || "updated".into())?;
                    check(
                        console
                            .update_user(&"nobody".parse().map_err(Error::Inconsistent)?, &|_| {})?
                            .is_none(),
                        || "no such".into(),
                    )
                }),
                ("a session", |c| {
                    c.db().console().put_session(&SessionId::from_bytes([1; 32]), &session("alice", t0()))
                }),
                ("another session", |c| {
                    c.db().console().put_session(&SessionId::from_bytes([2; 32]), &session("bob", t0()))
                }),
                ("a fresh one", |c| {
                    let fresh = session("alice", t0() + Duration::minutes(10));
                    c.db().console().put_session(&SessionId::from_bytes([3; 32]), &fresh)
                }),
                ("a secret of the console's", |c| {
                    c.db().console().meta_get_or_init("csrf", b"first").map(drop)
                }),
                ("set once", |c| {
                    let kept = c.db().console().meta_get_or_init("csrf", b"second")?;
                    check(kept == b"first", || "meta kept".into())
                }),
                ("expire", |c| {
                    let console = c.db().console();
                    let gone =
                        console.remove_sessions_where(&|s| s.last_seen < t0() + Duration::minutes(5))?;
                    check(gone == 2, || format!("{gone} expired"))?;
                    check(console.session(&SessionId::from_bytes([3; 32]))?.is_some(), || {
                        "the fresh one".into()
                    })
                }),
                ("log out", |c| {
                    let console = c.db().console();
                    console.remove_session(&SessionId::from_bytes([3; 32]))?;
                    check(console.session_count()? == 0, || "none left".into())
                }),
            ],
        },
        Scenario {
            name: "escrow recovery requests: an id once, each change only over the request read",
            steps: vec![
                ("request", |c| check(c.db().recoveries().insert_recovery(&recovery(2))?, || "new".into())),
                ("an id once", |c| {
                    check(!c.db().recoveries().insert_recovery(&recovery(2))?, || "taken".into())
                }),
                ("an earlier one", |c| {
                    check(c.db().recoveries().insert_recovery(&recovery(1))?, || "new".into())
                }),
                ("approve", |c| {
                    let store = c.db().recoveries();
                    let old = store.recovery(&recovery(2).id)?.ok_or(Error::NotFound(serial(2)))?;
                    let mut new = old.clone();
                    new.approvals.push(step("console:bob"));
                    check(store.replace_recovery(&old, &new)?, || "approved".into())
                }),
                ("a second change over the same read is refused", |c| {
                    let store = c.db().recoveries();
                    let stale = recovery(2);
                    let mut new = stale.clone();
                    new.approvals.push(step("console:carol"));
                    check(!store.replace_recovery(&stale, &new)?, || "stale read replaced".into())?;
                    let stored = store.recovery(&stale.id)?.ok_or(Error::NotFound(serial(2)))?;
                    check(stored.approvals == vec![step("console:bob")], || format!("{stored:?}"))
                }),
                ("release, after a restart", |c| {
                    c.reopen()?;
                    let store = c.db().recoveries();
                    let old = store.recovery(&recovery(2).id)?.ok_or(Error::NotFound(serial(2)))?;
                    let mut new = old.clone();
                    new.released = Some(step("console:alice"));
                    check(store.replace_recovery(&old, &new)?, || "released".into())
                }),
                ("listed oldest first; an unknown id is none", |c| {
                    let store = c.db().recoveries();
                    let all = store.recoveries()?;
                    check(all.len() == 2 && all[0].id == recovery(1).id, || format!("{all:?}"))?;
                    check(all[1].released.is_some(), || "released kept".into())?;
                    let missing = RecoveryId::from_bytes([9; 16]);
                    check(store.recovery(&missing)?.is_none(), || "unknown".into())?;
                    check(!store.replace_recovery(&recovery(9), &recovery(9))?, || "unknown replaced".into())
                }),
            ],
        },
        Scenario {
            name: "enrolment records: an id once per kind, each change only over the record read",
            steps: vec![
                ("insert", |c| {
                    let acme = c.db().acme_records();
                    check(
                        acme.insert_acme(AcmeKind::Order, "o2", t0() + Duration::seconds(2), b"pending")?,
                        || "new".into(),
                    )?;
                    check(acme.insert_acme(AcmeKind::Order, "o1", t0(), b"ready")?, || "new".into())?;
                    check(!acme.insert_acme(AcmeKind::Order, "o1", t0(), b"other")?, || "taken".into())?;
                    // The same id in another kind is another record.
                    check(acme.insert_acme(AcmeKind::Account, "o1", t0(), b"account")?, || "kind".into())
                }),
                ("replace over the read, after a restart", |c| {
                    c.reopen()?;
                    let acme = c.db().acme_records();
                    check(acme.replace_acme(AcmeKind::Order, "o2", b"pending", b"valid")?, || {
                        "swapped".into()
                    })?;
                    check(!acme.replace_acme(AcmeKind::Order, "o2", b"pending", b"invalid")?, || {
                        "stale read replaced".into()
                    })?;
                    check(!acme.replace_acme(AcmeKind::Order, "o9", b"x", b"y")?, || {
                        "unknown replaced".into()
                    })?;
                    let got = acme.acme(AcmeKind::Order, "o2")?;
                    check(got.as_deref() == Some(&b"valid"[..]), || format!("{got:?}"))
                }),
                ("deferred writes are seen at once and kept after a sync", |c| {
                    let acme = c.db().acme_records();
                    let at = t0() + Duration::seconds(5);
                    check(acme.insert_acme_deferred(AcmeKind::Order, "o3", at, b"ready")?, || "new".into())?;
                    check(!acme.insert_acme_deferred(AcmeKind::Order, "o3", at, b"x")?, || "taken".into())?;
                    check(
                        acme.replace_acme_deferred(AcmeKind::Order, "o3", b"ready", b"processing")?,
                        || "swapped".into(),
                    )?;
                    check(!acme.replace_acme_deferred(AcmeKind::Order, "o3", b"ready", b"valid")?, || {
                        "stale read replaced".into()
                    })?;
                    acme.sync_acme()?;
                    drop(acme);
                    c.reopen()?;
                    let got = c.db().acme_records().acme(AcmeKind::Order, "o3")?;
                    check(got.as_deref() == Some(&b"processing"[..]), || format!("{got:?}"))?;
                    check(c.db().acme_records().remove_acme(AcmeKind::Order, "o3")?, || "removed".into())
                }),
                ("put, list oldest first, remove", |c| {
                    let acme = c.db().acme_records();
                    acme.put_acme(AcmeKind::Validation, "bob@example.net", t0(), b"v1")?;
                    acme.put_acme(AcmeKind::Validation, "bob@example.net", t0(), b"v2")?;
                    let all = acme.acme_records(AcmeKind::Order)?;
                    let ids: Vec<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
                    check(ids == ["o1", "o2"], || format!("{ids:?}"))?;
                    let v = acme.acme_records(AcmeKind::Validation)?;
                    check(v == vec![("bob@example.net".to_string(), b"v2".to_vec())], || format!("{v:?}"))?;
                    check(acme.remove_acme(AcmeKind::Order, "o1")?, || "removed".into())?;
                    check(!acme.remove_acme(AcmeKind::Order, "o1")?, || "removed twice".into())?;
                    check(acme.acme(AcmeKind::Order, "o1")?.is_none(), || "gone".into())?;
                    check(acme.insert_acme(AcmeKind::Order, "", t0(), b"x").is_err(), || "empty id".into())
                }),
            ],
        },
        Scenario {
            name: "CA settings: set, created once, and replaced only over the value read",
            steps: vec![
                ("set", |c| c.db().meta_put("ca.scenario.serial", "01")),
                ("replaced over the value read, after a restart", |c| {
                    c.reopen()?;
                    check(c.db().meta_replace("ca.scenario.serial", "01", "02")?, || "swapped".into())?;
                    check(!c.db().meta_replace("ca.scenario.serial", "01", "03")?, || {
                        "a stale read replaced".into()
                    })?;
                    check(!c.db().meta_replace("ca.scenario.none", "01", "02")?, || {
                        "a missing key set".into()
                    })?;
                    check(!c.db().meta_insert("ca.scenario.serial", "04")?, || {
                        "a set key inserted over".into()
                    })?;
                    check(c.db().meta_insert("ca.scenario.new", "01")?, || "a new key not inserted".into())?;
                    check(!c.db().meta_insert("ca.scenario.new", "02")?, || "inserted twice".into())?;
                    let new = c.db().meta_get("ca.scenario.new")?;
                    check(new.as_deref() == Some("01"), || format!("{new:?}"))?;
                    let got = c.db().meta_get("ca.scenario.serial")?;
                    check(got.as_deref() == Some("02"), || format!("{got:?}"))
                }),
                ("kept after a restart", |c| {
                    c.reopen()?;
                    let got = c.db().meta_get("ca.scenario.serial")?;
                    check(got.as_deref() == Some("02"), || format!("{got:?}"))?;
                    let new = c.db().meta_get("ca.scenario.new")?;
                    check(new.as_deref() == Some("01"), || format!("{new:?}"))?;
                    check(c.db().meta_get("ca.scenario.none")?.is_none(), || "a missing key appeared".into())
                }),
            ],
        },
        Scenario {
            name: "API keys: created once per name, revoked for good",
            steps: vec![
                ("create one", |c| {
                    let keys = ApiKeyStore::open(c.db()).map_err(dir_err)?;
                    keys.create(&key_name("mailer"), Some(10.0), None, t0()).map_err(dir_err).map(drop)
                }),
                ("and another", |c| {
                    let keys = ApiKeyStore::open(c.db()).map_err(dir_err)?;
                    let at = t0() + Duration::seconds(1);
                    keys.create(&key_name("statements"), None, None, at).map_err(dir_err).map(drop)
                }),
                ("a key name once", |c| {
                    let keys = ApiKeyStore::open(c.db()).map_err(dir_err)?;
                    match keys.create(&key_name("mailer"), None, None, t0()) {
                        Err(DirectoryError::KeyNameTaken(_)) => Ok(()),
                        Err(e) => Err(dir_err(e)),
                        Ok(_) => Err(Error::Inconsistent("scenario check failed: a name twice".into())),
                    }
                }),
                ("revoke one", |c| {
                    let keys = ApiKeyStore::open(c.db()).map_err(dir_err)?;
                    let rec = keys.revoke(&key_name("mailer"), t0() + Duration::hours(1)).map_err(dir_err)?;
                    check(rec.revoked_at.is_some(), || "revoked".into())
                }),
                ("once", |c| {
                    let keys = ApiKeyStore::open(c.db()).map_err(dir_err)?;
                    for (name, ok) in [("mailer", "again"), ("nobody", "unknown")] {
                        match keys.revoke(&key_name(name), t0()) {
                            Err(DirectoryError::KeyAlreadyRevoked(_)) if ok == "again" => {}
                            Err(DirectoryError::UnknownKey(_)) if ok == "unknown" => {}
                            Err(e) => return Err(dir_err(e)),
                            Ok(_) => {
                                return Err(Error::Inconsistent(format!(
                                    "scenario check failed: revoke {name}"
                                )))
                            }
                        }
                    }
                    let list = keys.list().map_err(dir_err)?;
                    check(list.len() == 2 && list[0].name.as_str() == "mailer", || format!("{list:?}"))
                }),
                ("the anonymous policy", |c| {
                    let keys = ApiKeyStore::open(c.db()).map_err(dir_err)?;
                    let mut p = keys.anonymous().map_err(dir_err)?;
                    p.enabled = false;
                    keys.set_anonymous(&p).map_err(dir_err)?;
                    check(!keys.anonymous().map_err(dir_err)?.enabled, || "disabled".into())
                }),
            ],
        },
    ]
}

/// What a store holds, as text: two stores hold the same exactly when their snapshots are equal.
pub fn snapshot(db: &CertDb) -> Result<String, Error> {
    let mut s = String::new();
    let w = |s: &mut String, line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    for r in db.list(None)? {
        let full = db.get(&r.serial)?.map(|f| Fingerprint::of(&f.der));
        w(&mut s, format!("cert {} {:?} {:?} {:?} {:?}", r.serial, r.email, r.kind, r.revocation, full));
    }
    let mut retired = db.retired_serials()?;
    retired.sort();
    w(&mut s, format!("retired {retired:?}"));
    let mut keys = db.compromised_keys()?;
    keys.sort_by_key(|k| k.0 .0);
    w(&mut s, format!("compromised {keys:?}"));
    for ca in [CaId::Root, CaId::Issuing] {
        w(&mut s, format!("crl {ca} {:?}", db.crl(ca)?.map(|c| (c.number, c.der))));
    }
    for r in db.audit_records() {
        let r = r?;
        w(&mut s, format!("audit {} {}", r.seq, String::from_utf8_lossy(&r.bytes)));
    }
    for ch in db.changes_since(0)? {
        w(&mut s, format!("change {ch:?}"));
    }
    let console = db.console();
    for u in console.users()? {
        w(&mut s, format!("user {u:?}"));
    }
    w(&mut s, format!("sessions {}", console.session_count()?));
    for r in db.recoveries().recoveries()? {
        w(&mut s, format!("recovery {r:?}"));
    }
    let keys = ApiKeyStore::open(db).map_err(dir_err)?;
    for k in keys.list().map_err(dir_err)? {
        w(&mut s, format!("key {} {} {:?}", k.name, k.rate, k.revoked_at));
    }
    w(&mut s, format!("anonymous {:?}", keys.anonymous().map_err(dir_err)?));
    // The TSA's high-water mark is left out: a token's record follows its block's reservation,
    // two writes; that serials are never reused is the TSA scenario's own check.
    let tsa = TsaStore::open(db)?;
    for t in tsa.tokens() {
        w(&mut s, format!("token {:?}", t?));
    }
    Ok(s)
}

/// Plays `scenario` on a fresh store in `dir`, checking consistency after every step; returns
/// the snapshot before the first step and after each step, and the writes it made.
fn play(backend: &dyn Backend, dir: &Path, scenario: &Scenario) -> Result<(Vec<String>, u64), String> {
    let faults = Arc::new(Faults::count_only());
    let db = backend.open(dir, Some(faults.clone())).map_err(|e| format!("open: {e}"))?;
    let mut ctx = Ctx { backend, dir, faults: Some(faults.clone()), db: Some(db) };
    let mut snaps = vec![snapshot(ctx.db()).map_err(|e| format!("snapshot: {e}"))?];
    for (name, step) in &scenario.steps {
        step(&mut ctx).map_err(|e| format!("step {name:?}: {e}"))?;
        ctx.db().check_consistency().map_err(|e| format!("after step {name:?}: {e}"))?;
        snaps.push(snapshot(ctx.db()).map_err(|e| format!("snapshot: {e}"))?);
    }
    Ok((snaps, faults.writes()))
}

/// Runs every scenario on `backend`, each in a fresh directory under `root`. The first failure,
/// named by scenario and step.
pub fn run(backend: &dyn Backend, root: &Path) -> Result<usize, String> {
    let scenarios = all();
    for (i, sc) in scenarios.iter().enumerate() {
        let dir = root.join(format!("plain-{i}"));
        let played = play(backend, &dir, sc);
        backend.discard(&dir);
        played.map_err(|e| format!("{} / {}: {e}", backend.name(), sc.name))?;
    }
    Ok(scenarios.len())
}

/// Runs every scenario once per write it makes, with that write failing (see the module
/// documentation), and once more per write with every write from it on failing (a crash);
/// returns how many faults were injected.
pub fn run_with_faults(backend: &dyn Backend, root: &Path) -> Result<u64, String> {
    let mut injected = 0;
    for crash in [false, true] {
        injected += run_with_plan(backend, root, crash)?;
    }
    Ok(injected)
}

fn run_with_plan(backend: &dyn Backend, root: &Path, crash: bool) -> Result<u64, String> {
    let mut injected = 0;
    for (i, sc) in all().iter().enumerate() {
        let counted = root.join(format!("count-{crash}-{i}"));
        let played = play(backend, &counted, sc);
        backend.discard(&counted);
        let (snaps, writes) = played.map_err(|e| format!("{} / {}: {e}", backend.name(), sc.name))?;
        for n in 1..=writes {
            let dir = root.join(format!("fault-{crash}-{i}-{n}"));
            let replayed = replay_with_fault(backend, &dir, sc, &snaps, n, crash);
            backend.discard(&dir);
            replayed?;
            injected += 1;
        }
    }
    Ok(injected)
}

/// One replay of [`run_with_plan`]: `sc` in a fresh store in `dir` whose `n`-th write fails
/// (with every one after it, for a `crash`), then the checks after a restart.
fn replay_with_fault(
    backend: &dyn Backend,
    dir: &Path,
    sc: &Scenario,
    snaps: &[String],
    n: u64,
    crash: bool,
) -> Result<(), String> {
    let faults = Arc::new(if crash { Faults::crash_at(n) } else { Faults::fail_write(n) });
    let what = if crash { "crash" } else { "fault" };
    let fail = |e: String| format!("{} / {} / {what} at write {n}: {e}", backend.name(), sc.name);
    let db = match backend.open(dir, Some(faults.clone())) {
        Ok(db) => Some(db),
        Err(e) if faults.fired() => {
            drop(e);
            None
        }
        Err(e) => return Err(fail(format!("open: {e}"))),
    };
    let mut stopped_at = 0;
    if let Some(db) = db {
        let mut ctx = Ctx { backend, dir, faults: Some(faults.clone()), db: Some(db) };
        for (k, (name, step)) in sc.steps.iter().enumerate() {
            match step(&mut ctx) {
                Ok(()) => stopped_at = k + 1,
                Err(_) if faults.fired() => break,
                Err(e) => return Err(fail(format!("step {name:?} failed without the fault: {e}"))),
            }
        }
    }
    if !faults.fired() {
        return Err(fail(format!("the scenario made fewer writes than {n}")));
    }
    // A restart without faults: consistent, and exactly before or after the failed step.
    drop(faults);
    let db = backend.open(dir, None).map_err(|e| fail(format!("reopen: {e}")))?;
    db.check_consistency().map_err(|e| fail(format!("inconsistent after the fault: {e}")))?;
    let now = snapshot(&db).map_err(|e| fail(format!("snapshot: {e}")))?;
    let before = &snaps[stopped_at];
    let after = snaps.get(stopped_at + 1);
    if &now != before && Some(&now) != after {
        let differs = |other: &str| {
            now.lines()
                .zip(other.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("{a}\n  instead of\n{b}"))
        };
        return Err(fail(format!(
            "half-written: the store holds neither the state before step {} nor after it; first difference from before: {:?}; from after: {:?}",
            stopped_at + 1,
            differs(before),
            after.map(|a| differs(a))
        )));
    }
    Ok(())
}
