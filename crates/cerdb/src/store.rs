//! The storage contract for certificates, the audit log and the change feed, and [`CertDb`], the
//! handle every other crate holds.
//!
//! An engine ([`crate::sled_engine`], [`crate::pg_engine`]) implements [`CertReader`], [`CertStore`] and
//! [`ChangeFeed`] here, [`crate::console_store::ConsoleStore`],
//! [`crate::directory::ApiKeyRecords`] and [`crate::tsa_store::TsaLedger`]. What each promises —
//! atomicity, ordering, durability on return — is written on the trait and in
//! `docs/storage-layout.md`; the scenario suite ([`crate::scenarios`]) checks it on every engine.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::{
    AuditRecord, CaId, CertKind, CertRecord, CertState, CrlRecord, EmailAddress, Error, Fingerprint,
    KeyDigest, Revocation, RevocationReason, Serial,
};

/// The read-only view used by the OCSP responder and the directory (Boulder's
/// `StorageAuthorityReadOnly`). Reads see every write that returned before they started.
pub trait CertReader: Send + Sync {
    /// The certificate with this serial, DER included.
    fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, Error>;
    /// The metadata only (the DER is left empty): the cheap read for status checks.
    fn get_meta(&self, serial: &Serial) -> Result<Option<CertRecord>, Error>;
    /// The certificate with this SHA-256 fingerprint, DER included.
    fn by_fingerprint(&self, fp: &Fingerprint) -> Result<Option<CertRecord>, Error>;
    /// Metadata of the certificates of an address (case-insensitive), of one kind or all, newest
    /// notBefore first.
    fn by_email(&self, email: &EmailAddress, kind: Option<CertKind>) -> Result<Vec<CertRecord>, Error>;
    /// The address whose lookup key ([`EmailAddress::lookup_key`]) has this SHA-256, if any
    /// certificate was ever stored for it: the directory's `email_sha256` queries. Written in the
    /// same atomic write as the certificate, so a stored certificate is found by hash at once.
    fn email_by_hash(&self, hash: &[u8; 32]) -> Result<Option<EmailAddress>, Error>;
    /// The current CRL of a CA.
    fn crl(&self, ca: CaId) -> Result<Option<CrlRecord>, Error>;

    /// The status view of the certificate with this serial: issuer, validity and revocation,
    /// without decoding the rest of its metadata.
    fn state(&self, serial: &Serial) -> Result<Option<CertState>, Error> {
        Ok(self.get_meta(serial)?.map(|r| r.state()))
    }

    /// Serials and status views of an address's certificates of one kind, newest notBefore
    /// first.
    fn states_by_email(
        &self,
        email: &EmailAddress,
        kind: CertKind,
    ) -> Result<Vec<(Serial, CertState)>, Error> {
        Ok(self.by_email(email, Some(kind))?.into_iter().map(|r| (r.serial.clone(), r.state())).collect())
    }

    /// The newest certificate of an address and kind that is valid at `now`, DER included.
    ///
    /// 1. list the status views of the address's certificates of that kind, newest notBefore first;
    /// 2. take the first whose status at `now` is valid;
    /// 3. load its DER.
    fn newest_valid(
        &self,
        email: &EmailAddress,
        kind: CertKind,
        now: DateTime<Utc>,
    ) -> Result<Option<CertRecord>, Error> {
        for (serial, state) in self.states_by_email(email, kind)? {
            if state.status_at(now) == crate::CertStatus::Valid {
                return self.get(&serial);
            }
        }
        Ok(None)
    }
}

/// Continues the audit chain. The store calls it inside the atomic write that records a change,
/// with the last record of the log as the store reads it there (`None`: the log is empty), and
/// appends what it returns — numbered from the last record's `seq + 1` on, contiguously — in
/// that same write. So the chain head is read and advanced by the store, never kept by a
/// process, and two writers can never fork the chain. It may be called more than once for one
/// write (an engine may retry a transaction); it must not have effects.
pub trait AuditChain: Sync {
    /// The records that follow `last`.
    fn records_after(&self, last: Option<&AuditRecord>) -> Result<Vec<AuditRecord>, Error>;
}

/// The records `chain` appends after `last`, checked to continue it: numbered from
/// `last.seq + 1` on without gaps.
pub(crate) fn chained(chain: &dyn AuditChain, last: Option<&AuditRecord>) -> Result<Vec<AuditRecord>, Error> {
    let records = chain.records_after(last)?;
    let first = last.map(|r| r.seq).unwrap_or(0) + 1;
    for (expected, r) in (first..).zip(&records) {
        if r.seq != expected {
            return Err(Error::Inconsistent(format!(
                "audit entry {} does not follow the log's last entry {}",
                r.seq,
                expected - 1
            )));
        }
    }
    Ok(records)
}

/// Refuses a key digest without keyCompromise, or keyCompromise without one
/// ([`CertStore::revoke`]).
pub(crate) fn check_compromised_arg(
    revocation: &Revocation,
    compromised: Option<&KeyDigest>,
) -> Result<(), Error> {
    if compromised.is_some() != (revocation.reason == RevocationReason::KeyCompromise) {
        return Err(Error::Inconsistent(format!(
            "revocation for {}: a key digest is given exactly when the reason is keyCompromise",
            revocation.reason
        )));
    }
    Ok(())
}

/// The revocation a certificate has after `new` is recorded on it, given the one it has
/// (`current`): `new` when it had none; keyCompromise at the earlier time when it was revoked for
/// another reason and `new` is keyCompromise; else [`Error::AlreadyRevoked`].
pub(crate) fn revised(
    serial: &Serial,
    current: Option<&Revocation>,
    new: &Revocation,
) -> Result<Revocation, Error> {
    match current {
        None => Ok(new.clone()),
        Some(r)
            if r.reason != RevocationReason::KeyCompromise
                && new.reason == RevocationReason::KeyCompromise =>
        {
            Ok(Revocation { at: r.at, reason: RevocationReason::KeyCompromise })
        }
        Some(r) => Err(Error::AlreadyRevoked { serial: serial.clone(), reason: r.reason, at: r.at }),
    }
}

/// Certificates checked and encoded for storing ([`CertStore::check_issued`]), not stored yet.
#[derive(Debug)]
pub struct CheckedIssue<'a> {
    pub(crate) certs: &'a [CertRecord],
    /// Each certificate in the engine's own stored form.
    pub(crate) encoded: Vec<Vec<u8>>,
}

impl CheckedIssue<'_> {
    /// The certificates.
    pub fn certs(&self) -> &[CertRecord] {
        self.certs
    }
}

/// What [`CertStore::warm_cache`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmStats {
    /// Index entries and records read.
    pub entries: u64,
    /// Their keys and values, in bytes.
    pub bytes: u64,
    /// Every tree was read (false: it stopped at half the page cache).
    pub complete: bool,
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its position: strictly increasing, from 1, without gaps.
    pub seq: u64,
    /// What changed.
    pub kind: ChangeKind,
}

/// What a [`Change`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A certificate's revocation was recorded or changed (its reason became keyCompromise).
    Revoked(Serial),
}

/// The change feed: what caches (the OCSP responder's, a directory replica's) read to learn
/// about revocations made by any writer, in order, each once.
pub trait ChangeFeed: Send + Sync {
    /// The position of the newest change (0 when there was none). Cheap: callers ask before
    /// every cached answer.
    fn last_change(&self) -> Result<u64, Error>;
    /// The changes after `seq`, oldest first.
    fn changes_since(&self, seq: u64) -> Result<Vec<Change>, Error>;
}

/// The certificates, their indexes, revocations, CRLs, retired serials, compromised keys, the
/// audit log and the CA's own settings. Every method that changes something is atomic — all of
/// it or nothing — and durable when it returns, except where its name says `unflushed`.
pub trait CertStore: CertReader + ChangeFeed {
    /// Step 1 of [`CertStore::store_issued`], for callers that let other work run before the
    /// write: refuses a retired serial ([`CertStore::retire_serials`]) and encodes the records.
    /// Whether a serial is stored already is checked inside the write itself: a check here and a
    /// write there would let two batches with the same serial both pass.
    fn check_issued<'a>(&self, certs: &'a [CertRecord]) -> Result<CheckedIssue<'a>, Error>;

    /// Step 2 of [`CertStore::store_issued`]: in one atomic write, refuses a serial stored already
    /// ([`Error::SerialInUse`], nothing written), writes the records and their indexes (serial,
    /// fingerprint, address, hashed address), and appends the audit records `audit` returns after
    /// the log's last record. Not yet durable: call [`CertStore::flush`] before acknowledging.
    fn store_checked_unflushed(
        &self,
        checked: &CheckedIssue<'_>,
        audit: &dyn AuditChain,
    ) -> Result<(), Error>;

    /// Stores issued certificates and their audit entries, then makes them durable.
    ///
    /// 1. [`CertStore::check_issued`];
    /// 2. [`CertStore::store_checked_unflushed`];
    /// 3. [`CertStore::flush`] — only then is the issuance acknowledged.
    fn store_issued(&self, certs: &[CertRecord], audit: &dyn AuditChain) -> Result<(), Error> {
        self.store_checked_unflushed(&self.check_issued(certs)?, audit)?;
        self.flush()
    }

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), Error>;

    /// Records serials signed into certificates never stored (a refused batch), durably: with the
    /// serials of stored certificates they are every serial ever used, and
    /// [`CertStore::check_issued`] refuses both.
    fn retire_serials(&self, serials: &[Serial]) -> Result<(), Error>;

    /// Whether `serial` was used: stored, or retired.
    fn serial_used(&self, serial: &Serial) -> Result<bool, Error>;

    /// The serials retired by [`CertStore::retire_serials`] (and, in databases written before
    /// serials were checked at storing, those of stored certificates), in no particular order.
    fn retired_serials(&self) -> Result<Vec<Serial>, Error>;

    /// Records a revocation, its change-feed entry and its audit entry in one atomic write,
    /// durably. Returns the updated record (metadata only). A revocation for keyCompromise passes
    /// the digest of the certificate's key, which the same write records as compromised unless
    /// an earlier revocation reported it; other reasons pass `None` (anything else is
    /// [`Error::Inconsistent`]).
    ///
    /// A certificate is revoked once, with one exception: one revoked for another reason whose key
    /// is then found compromised has its reason changed to keyCompromise, its revocation time
    /// kept. Anything else is [`Error::AlreadyRevoked`]; an unknown serial [`Error::NotFound`].
    fn revoke(
        &self,
        serial: &Serial,
        revocation: Revocation,
        compromised: Option<&KeyDigest>,
        audit: &dyn AuditChain,
    ) -> Result<CertRecord, Error>;

    /// Every key reported compromised, with the serial of the certificate whose revocation for
    /// keyCompromise reported it.
    fn compromised_keys(&self) -> Result<Vec<(KeyDigest, Serial)>, Error>;

    /// Records keys as compromised (an entry already there is kept), durably: for databases whose
    /// revocations were recorded before keys were.
    fn record_compromised(&self, keys: &[(KeyDigest, Serial)]) -> Result<(), Error>;

    /// Stores a CA's new CRL (replacing the previous one) with its audit entries, atomically and
    /// durably; a CRL number not above the stored one is [`Error::Inconsistent`].
    fn put_crl(&self, crl: &CrlRecord, audit: &dyn AuditChain) -> Result<(), Error>;

    /// Appends audit records on their own (after the log's last record), durably.
    fn append_audit(&self, audit: &dyn AuditChain) -> Result<(), Error>;

    /// The last audit record.
    fn last_audit(&self) -> Result<Option<AuditRecord>, Error>;

    /// Audit records from sequence number `first` on, oldest first.
    fn audit_records_from(&self, first: u64) -> Result<Vec<AuditRecord>, Error>;

    /// Every audit record, oldest first.
    fn audit_records(&self) -> Box<dyn Iterator<Item = Result<AuditRecord, Error>> + '_>;

    /// A setting of the CA (`ca.root.serial`, ...).
    fn meta_get(&self, key: &str) -> Result<Option<String>, Error>;

    /// Sets a setting of the CA, durably.
    fn meta_put(&self, key: &str, value: &str) -> Result<(), Error>;

    /// Sets a setting of the CA to `new` if it is still `old`, durably; `false` (nothing written)
    /// when it changed or is gone: for a setting that two processes may change at once.
    fn meta_replace(&self, key: &str, old: &str, new: &str) -> Result<bool, Error>;

    /// Sets a setting of the CA that is not set yet, durably; `false` (nothing written) when it
    /// is: with [`CertStore::meta_replace`], a setting two processes may create or change at once.
    fn meta_insert(&self, key: &str, value: &str) -> Result<bool, Error>;

    /// Metadata of every certificate (or of one address), oldest issuance first.
    fn list(&self, email: Option<&EmailAddress>) -> Result<Vec<CertRecord>, Error>;

    /// Metadata of every revoked certificate issued by `ca`.
    fn revoked_by(&self, ca: CaId) -> Result<Vec<CertRecord>, Error>;

    /// Number of stored certificates.
    fn count(&self) -> Result<u64, Error>;

    /// Reads what lookups use into the engine's cache, so that the first lookups after opening a
    /// large database are not slow; safe while the database is in use.
    fn warm_cache(&self) -> Result<WarmStats, Error>;

    /// Checks that every index entry points at a stored certificate and every certificate is
    /// indexed, that fingerprints match the DER, that every compromised key names a certificate
    /// revoked for keyCompromise, that the audit log and the change feed have no gaps, and that
    /// every revoked certificate has its change.
    fn check_consistency(&self) -> Result<(), Error>;
}

/// The storage of one installation, whatever the engine: the certificate store (what `CertDb`
/// dereferences to), the console's accounts, the API keys and the TSA's ledger. Clones share one
/// engine.
#[derive(Clone)]
pub struct CertDb {
    certs: Arc<dyn CertStore>,
    console: Arc<dyn crate::console_store::ConsoleStore>,
    recoveries: Arc<dyn crate::recovery_store::RecoveryRequests>,
    acme: Arc<dyn crate::acme_store::AcmeRecords>,
    api_keys: Arc<dyn crate::directory::ApiKeyRecords>,
    tsa: Arc<dyn crate::tsa_store::TsaLedger>,
    /// What a copy between engines needs beyond the contract.
    transfer: Arc<dyn crate::copy::Transfer>,
    /// The TSA store while anyone holds it ([`crate::tsa_store::TsaStore::open`]).
    tsa_cell: crate::tsa_store::StoreCell,
    /// What `pki` shows as the database's place.
    location: Arc<str>,
    /// Raw access to the embedded engine's trees (tests only).
    raw: Option<Arc<crate::sled_engine::RawTrees>>,
    /// The database's schema version, for engines that have one.
    schema_version: Option<u32>,
    /// Key custody's sealed records, on engines that share them between nodes.
    custody: Option<Arc<dyn crate::custody_store::CustodyRecords>>,
    /// The directory's lookups for async callers, on engines that have them.
    pipelined: Option<Arc<dyn crate::AsyncReads>>,
    /// The issuers withdrawn from use, as this process's CA last read them.
    withdrawn: Arc<crate::WithdrawnIssuers>,
}

impl std::fmt::Debug for CertDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertDb").field("location", &self.location).finish_non_exhaustive()
    }
}

impl std::ops::Deref for CertDb {
    type Target = dyn CertStore;
    fn deref(&self) -> &Self::Target {
        &*self.certs
    }
}

impl CertDb {
    /// The engine's page cache unless configured: 1 GiB.
    pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

    /// How long opening waits for an embedded database another handle holds.
    pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

    /// Opens (creating) the embedded database at `path`.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        Self::open_with_cache(path, Self::DEFAULT_CACHE_BYTES)
    }

    /// Opens (creating) the embedded database at `path` with a page cache of at most
    /// `cache_bytes`. A database locked by another handle is retried for [`CertDb::LOCK_WAIT`]
    /// before [`Error::Locked`].
    pub fn open_with_cache(path: impl AsRef<std::path::Path>, cache_bytes: u64) -> Result<Self, Error> {
        let engine = crate::sled_engine::SledEngine::open(path.as_ref(), cache_bytes, None)?;
        Ok(Self::from_engine(Arc::new(engine)))
    }

    /// Connects to the PostgreSQL database at `url` and migrates its schema to this program's
    /// version ([`crate::pg_engine::PgEngine::open`]).
    pub fn open_postgres(url: &str) -> Result<Self, Error> {
        let engine = Arc::new(crate::pg_engine::PgEngine::open(url, None)?);
        Ok(CertDb { custody: Some(engine.clone()), ..Self::from_engine(engine) })
    }

    /// A handle on an engine that implements every trait of the contract.
    pub fn from_engine<E: crate::Engine + 'static>(engine: Arc<E>) -> Self {
        CertDb {
            location: engine.location().into(),
            raw: engine.raw_trees().map(Arc::new),
            schema_version: engine.schema_version(),
            pipelined: engine.pipelined_reads(),
            certs: engine.clone(),
            console: engine.clone(),
            recoveries: engine.clone(),
            acme: engine.clone(),
            api_keys: engine.clone(),
            transfer: engine.clone(),
            tsa: engine,
            tsa_cell: Default::default(),
            custody: None,
            withdrawn: Default::default(),
        }
    }

    /// The issuers withdrawn from use ([`crate::WithdrawnIssuers`]), shared by every clone of
    /// this handle: set by the CA, read by the directory, LDAP and sealed mail.
    pub fn withdrawn_issuers(&self) -> &Arc<crate::WithdrawnIssuers> {
        &self.withdrawn
    }

    /// Key custody's sealed records when this database keeps them for every node (PostgreSQL);
    /// `None` on the embedded engine, whose key store keeps them in files.
    pub fn custody_records(&self) -> Option<Arc<dyn crate::custody_store::CustodyRecords>> {
        self.custody.clone()
    }

    /// The read-only view, for the OCSP responder and the directory.
    pub fn reader(&self) -> Arc<dyn CertReader> {
        self.certs.clone()
    }

    /// The directory's lookups for callers on an async runtime, on engines that have them
    /// ([`crate::Engine::pipelined_reads`]).
    pub fn pipelined_reads(&self) -> Option<Arc<dyn crate::AsyncReads>> {
        self.pipelined.clone()
    }

    /// The change feed.
    pub fn feed(&self) -> Arc<dyn ChangeFeed> {
        self.certs.clone()
    }

    /// The console's accounts and sessions.
    pub fn console(&self) -> Arc<dyn crate::console_store::ConsoleStore> {
        self.console.clone()
    }

    /// The escrow recovery requests.
    pub fn recoveries(&self) -> Arc<dyn crate::recovery_store::RecoveryRequests> {
        self.recoveries.clone()
    }

    /// The enrolment records: ACME state and mailbox validations.
    pub fn acme_records(&self) -> Arc<dyn crate::acme_store::AcmeRecords> {
        self.acme.clone()
    }

    /// The directory's API keys and anonymous policy.
    pub fn api_key_records(&self) -> Arc<dyn crate::directory::ApiKeyRecords> {
        self.api_keys.clone()
    }

    /// What a copy between engines reads and writes beyond the contract ([`crate::copy`]).
    pub fn transfer(&self) -> Arc<dyn crate::copy::Transfer> {
        self.transfer.clone()
    }

    /// The TSA's serials and token records.
    pub(crate) fn tsa_ledger(&self) -> Arc<dyn crate::tsa_store::TsaLedger> {
        self.tsa.clone()
    }

    /// Where the TSA store of this database is kept while held.
    pub(crate) fn tsa_cell(&self) -> &crate::tsa_store::StoreCell {
        &self.tsa_cell
    }

    /// Raw access to the trees of the embedded engine, bypassing every check: for tests that act
    /// as someone with access to the files. `None` on other engines.
    pub fn raw_trees(&self) -> Option<&crate::sled_engine::RawTrees> {
        self.raw.as_deref()
    }

    /// Whether this is the embedded engine: its reads are served from this process's memory and
    /// may run on an async worker thread. A network database's client blocks its thread, so its
    /// calls belong on a blocking thread.
    pub fn is_embedded(&self) -> bool {
        self.raw.is_some()
    }

    /// Where the database is (a directory, or a URL without its password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The version of the database's schema (PostgreSQL); `None` for the embedded engine.
    pub fn schema_version(&self) -> Option<u32> {
        self.schema_version
    }
}

/// The handle reads as its certificate store does, so it can stand where a reader is wanted.
impl CertReader for CertDb {
    fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, Error> {
        self.certs.get(serial)
    }
    fn get_meta(&self, serial: &Serial) -> Result<Option<CertRecord>, Error> {
        self.certs.get_meta(serial)
    }
    fn by_fingerprint(&self, fp: &Fingerprint) -> Result<Option<CertRecord>, Error> {
        self.certs.by_fingerprint(fp)
    }
    fn by_email(&self, email: &EmailAddress, kind: Option<CertKind>) -> Result<Vec<CertRecord>, Error> {
        self.certs.by_email(email, kind)
    }
    fn email_by_hash(&self, hash: &[u8; 32]) -> Result<Option<EmailAddress>, Error> {
        self.certs.email_by_hash(hash)
    }
    fn crl(&self, ca: CaId) -> Result<Option<CrlRecord>, Error> {
        self.certs.crl(ca)
    }
    fn state(&self, serial: &Serial) -> Result<Option<CertState>, Error> {
        self.certs.state(serial)
    }
    fn states_by_email(
        &self,
        email: &EmailAddress,
        kind: CertKind,
    ) -> Result<Vec<(Serial, CertState)>, Error> {
        self.certs.states_by_email(email, kind)
    }
    fn newest_valid(
        &self,
        email: &EmailAddress,
        kind: CertKind,
        now: DateTime<Utc>,
    ) -> Result<Option<CertRecord>, Error> {
        self.certs.newest_valid(email, kind, now)
    }
}
