//! The embedded engine: one sled database in the data directory, and the TSA's ledger file beside
//! it. Every `sled` name of the workspace is in this module; the rest of the workspace sees the
//! traits of the storage contract ([`crate::CertStore`] and the others).
//!
//! sled admits one process per database: while `pki serve` holds it, other `pki` commands talk
//! to the server over its admin socket. Within the process every handle shares one
//! [`SledEngine`], which keeps the audit log's last record and the change feed's position in
//! memory — read from the trees when the database is opened, advanced under one lock by the
//! writes that append to them, so nothing outside the engine holds a chain head.
//!
//! Trees (the layout of each concern is documented in its file):
//!
//! | tree | file |
//! |---|---|
//! | `cert_meta`, `cert_der`, `by_fp`, `by_email`, `dir_email_sha256`, `serials`, `revoked`, `compromised_keys`, `crls`, `audit`, `changes`, `meta` | `certs.rs` |
//! | `pending` (intents of batches being stored) | `batch.rs` |
//! | `console_users`, `console_sessions`, `console_meta` | `console.rs` |
//! | `escrow_recoveries` | `recovery.rs` |
//! | `dir_apikeys`, `dir_apikey_names`, `dir_settings` | `apikeys.rs` |
//! | `acme`, `acme_ids` | `acme.rs` |
//! | `tsa_meta` (and the ledger file `tsa-tokens.ledger`) | `tsa.rs` |

mod acme;
mod apikeys;
mod batch;
mod certs;
mod console;
mod group_flush;
mod raw;
mod recovery;
mod transfer;
mod tsa;

pub use raw::{RawEntry, RawTrees};

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Db, Tree};

use crate::{AuditRecord, Error, Faults};

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Db(e.to_string())
    }
}

impl From<sled::Error> for crate::directory::DirectoryError {
    fn from(e: sled::Error) -> Self {
        crate::directory::DirectoryError::Storage(e.into())
    }
}

fn tx_error(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

/// The engine of one data directory.
pub struct SledEngine {
    db: Db,
    cert_meta: Tree,
    cert_der: Tree,
    by_fp: Tree,
    by_email: Tree,
    email_hash: Tree,
    serials: Tree,
    revoked: Tree,
    compromised_keys: Tree,
    crls: Tree,
    audit: Tree,
    changes: Tree,
    meta: Tree,
    /// Intents of batches being stored (`batch.rs`).
    pending: Tree,
    /// The number of the next batch's intent.
    next_batch: AtomicU64,
    console_users: Tree,
    console_sessions: Tree,
    console_meta: Tree,
    recoveries: Tree,
    acme: Tree,
    acme_ids: Tree,
    api_keys: Tree,
    api_key_names: Tree,
    dir_settings: Tree,
    /// The audit log's last record; held while a write that appends to the log runs.
    audit_head: Mutex<Option<AuditRecord>>,
    /// The change feed's last position (written under `audit_head`'s lock).
    last_change: AtomicU64,
    /// The TSA's serials and ledger file.
    tsa: tsa::TsaParts,
    /// The database directory.
    path: PathBuf,
    /// sled's page cache capacity, in bytes.
    cache_bytes: u64,
    /// Fault injection for the scenario suite: the N-th write fails.
    faults: Option<Arc<Faults>>,
    /// Concurrent writers share flushes (`group_flush.rs`).
    flushes: group_flush::GroupFlush,
    /// The planted loss of a test build: set until the first revocation, which is then
    /// acknowledged without being written (`certs.rs`).
    #[cfg(feature = "planted-loss")]
    planted: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SledEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledEngine").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Runs `open` on the database at `path` until it is not locked by another handle, for at most
/// [`crate::CertDb::LOCK_WAIT`]; then [`Error::Locked`].
pub(crate) fn open_waiting(
    path: &Path,
    open: impl Fn() -> sled::Result<sled::Db>,
) -> Result<sled::Db, Error> {
    let deadline = std::time::Instant::now() + crate::CertDb::LOCK_WAIT;
    loop {
        match open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(ref io))
                if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
            {
                if std::time::Instant::now() >= deadline {
                    return Err(Error::Locked(path.display().to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(other) => return Err(other.into()),
        }
    }
}

impl SledEngine {
    /// Opens (creating) the database at `path` with a page cache of at most `cache_bytes`, and
    /// brings databases written by earlier versions up to the current layout (see
    /// [`SledEngine::upgrade`]). A database locked by another handle is retried for
    /// [`crate::CertDb::LOCK_WAIT`] before [`Error::Locked`]: sled releases its file lock only when
    /// its last background task has ended, a moment after the handle that held it was dropped.
    pub fn open(path: &Path, cache_bytes: u64, faults: Option<Arc<Faults>>) -> Result<Self, Error> {
        let db = open_waiting(path, || sled::Config::new().path(path).cache_capacity(cache_bytes).open())?;
        let t = |name: &str| db.open_tree(name);
        let tsa = tsa::TsaParts::open(&db, path)?;
        let engine = SledEngine {
            cert_meta: t("cert_meta")?,
            cert_der: t("cert_der")?,
            by_fp: t("by_fp")?,
            by_email: t("by_email")?,
            email_hash: t("dir_email_sha256")?,
            serials: t("serials")?,
            revoked: t("revoked")?,
            compromised_keys: t("compromised_keys")?,
            crls: t("crls")?,
            meta: t("meta")?,
            console_users: t("console_users")?,
            console_sessions: t("console_sessions")?,
            console_meta: t("console_meta")?,
            recoveries: t("escrow_recoveries")?,
            acme: t("acme")?,
            acme_ids: t("acme_ids")?,
            api_keys: t("dir_apikeys")?,
            api_key_names: t("dir_apikey_names")?,
            dir_settings: t("dir_settings")?,
            audit: t("audit")?,
            changes: t("changes")?,
            pending: t("pending")?,
            next_batch: AtomicU64::new(1),
            audit_head: Mutex::new(None),
            last_change: AtomicU64::new(0),
            tsa,
            db,
            path: path.to_path_buf(),
            cache_bytes,
            faults,
            flushes: group_flush::GroupFlush::default(),
            #[cfg(feature = "planted-loss")]
            planted: std::sync::atomic::AtomicBool::new(true),
        };
        // Before anything reads: batches a crash interrupted go, then the heads are read.
        engine.roll_back_pending()?;
        *engine.lock_audit() = certs::last_audit_of(&engine.audit)?;
        engine
            .last_change
            .store(certs::last_change_of(&engine.changes)?, std::sync::atomic::Ordering::SeqCst);
        engine.upgrade()?;
        Ok(engine)
    }

    /// Brings a database written by an earlier version to the current layout, once each:
    ///
    /// 1. the hashed-address index, kept by a directory thread before it was written with the
    ///    certificates, gets every address of the e-mail index;
    /// 2. the change feed, which did not exist, gets one change per revoked certificate.
    fn upgrade(&self) -> Result<(), Error> {
        self.catch_up_email_hashes()?;
        self.feed_earlier_revocations()?;
        Ok(())
    }

    /// One write of the fault plan: an error once the planned write is reached.
    fn fault(&self) -> Result<(), Error> {
        match &self.faults {
            Some(f) => f.write(),
            None => Ok(()),
        }
    }

    /// [`SledEngine::fault`] inside a transaction.
    fn tx_fault(&self) -> Result<(), ConflictableTransactionError<Error>> {
        self.fault().map_err(ConflictableTransactionError::Abort)
    }

    fn flush_db(&self) -> Result<(), Error> {
        self.fault()?;
        self.flushes.flush(|| self.db.flush().map(drop).map_err(Error::from))
    }

    fn lock_audit(&self) -> std::sync::MutexGuard<'_, Option<AuditRecord>> {
        self.audit_head.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl crate::Engine for SledEngine {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn raw_trees(&self) -> Option<RawTrees> {
        Some(RawTrees::of(self.db.clone()))
    }
}
