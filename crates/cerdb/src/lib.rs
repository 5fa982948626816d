//! # cerdb — certificate storage and the lookup directory
//!
//! **Owns:** the storage contract — one trait per concern: certificates with their indexes,
//! revocations, CRLs, retired serials, compromised keys, the audit log and the change feed
//! ([`CertStore`], [`CertReader`], [`ChangeFeed`]), the console's accounts and sessions
//! ([`console_store::ConsoleStore`]), escrow recovery requests
//! ([`recovery_store::RecoveryRequests`]), enrolment records (ACME and mailbox validations,
//! [`acme_store::AcmeRecords`]), the directory's API keys ([`directory::ApiKeyRecords`]) and
//! the TSA's ledger ([`tsa_store::TsaLedger`]) — and its engines: the embedded sled engine
//! ([`sled_engine`], the only module that names sled) and the PostgreSQL engine ([`pg_engine`],
//! the only one that names PostgreSQL's client). [`CertDb`] is the handle every other crate
//! holds. Every write that acknowledges something (an issuance, a revocation) is durable before it
//! returns. One scenario suite ([`scenarios`]) checks every engine against the contract.
//!
//! **Must not:** sign anything. It stores what `ca-core` produced, and serves reads to the OCSP
//! responder and the directory through the read-only [`CertReader`] view.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acme_store;
mod async_reads;
mod clock;
pub mod console_store;
pub mod copy;
pub mod custody_store;
pub mod directory;
mod faults;
pub mod mail_senders;
pub mod pg_engine;
mod record;
pub mod recovery_store;
pub mod scenarios;
pub mod sled_engine;
mod store;
pub mod text;
pub mod tsa_store;
mod types;
mod withdrawn;

pub use async_reads::{AsyncReads, ReadFuture};
pub use clock::{Clock, FixedClock, SystemClock};
pub use faults::Faults;
pub use record::{AuditRecord, CertRecord, CertState, CertStatus, CrlRecord, Revocation};
pub use store::{
    AuditChain, CertDb, CertReader, CertStore, Change, ChangeFeed, ChangeKind, CheckedIssue, WarmStats,
};

/// A storage engine: one implementation of every trait of the contract.
pub trait Engine:
    CertStore
    + console_store::ConsoleStore
    + recovery_store::RecoveryRequests
    + acme_store::AcmeRecords
    + directory::ApiKeyRecords
    + tsa_store::TsaLedger
    + copy::Transfer
    + Send
    + Sync
{
    /// Where the database is (a directory, or a URL without its password), for messages.
    fn location(&self) -> String;

    /// Raw access to the embedded engine's trees, for tests that act as someone with access to
    /// the files; `None` for engines without such trees.
    fn raw_trees(&self) -> Option<sled_engine::RawTrees> {
        None
    }

    /// The version of the database's schema, for engines that migrate one (`None`: the
    /// embedded engine, whose layout is brought up to date on open without a version).
    fn schema_version(&self) -> Option<u32> {
        None
    }

    /// The reads for callers on an async runtime ([`AsyncReads`]), where the engine has them
    /// (PostgreSQL's pipelined connections); `None` where the synchronous reads serve async
    /// callers as well (the embedded engine reads from memory).
    fn pipelined_reads(&self) -> Option<std::sync::Arc<dyn AsyncReads>> {
        None
    }
}

/// Audit records already numbered: appended as they are (the store checks that they continue
/// the log). For tests and tools; the CA chains its entries through `ca-core`'s audit log.
impl AuditChain for [AuditRecord] {
    fn records_after(&self, _last: Option<&AuditRecord>) -> Result<Vec<AuditRecord>, Error> {
        Ok(self.to_vec())
    }
}

impl<const N: usize> AuditChain for [AuditRecord; N] {
    fn records_after(&self, _last: Option<&AuditRecord>) -> Result<Vec<AuditRecord>, Error> {
        Ok(self.to_vec())
    }
}

impl AuditChain for AuditRecord {
    fn records_after(&self, _last: Option<&AuditRecord>) -> Result<Vec<AuditRecord>, Error> {
        Ok(vec![self.clone()])
    }
}
pub use types::{CaId, CertKind, EmailAddress, Fingerprint, KeyDigest, RevocationReason, Serial, Usage};
pub use withdrawn::WithdrawnIssuers;

/// Errors of storage and of the identifier types.
#[derive(Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A serial number that cannot be parsed or is out of range.
    #[error("invalid serial number: {0}")]
    InvalidSerial(String),
    /// A fingerprint that cannot be parsed.
    #[error("invalid fingerprint: {0}")]
    InvalidFingerprint(String),
    /// An e-mail address that is not acceptable.
    #[error("invalid e-mail address {0}")]
    InvalidEmail(String),
    /// An unknown certificate usage.
    #[error("invalid usage {0:?}: expected signing or encryption")]
    InvalidUsage(String),
    /// An unknown or forbidden revocation reason.
    #[error("invalid revocation reason {0}")]
    InvalidReason(String),
    /// A recovery request id that cannot be parsed.
    #[error("invalid recovery request id {0:?}: an id is 32 hex digits, as `pki escrow list` shows it")]
    InvalidRecoveryId(String),
    /// A mail sender name that cannot be parsed.
    #[error("invalid sender name {0:?}: use 1 to 64 lower-case letters, digits, '.', '_' and '-', starting with a letter or digit")]
    InvalidSenderName(String),
    /// A mail sender of this name exists.
    #[error("a mail sender named {0:?} exists already")]
    SenderExists(String),
    /// No mail sender of this name.
    #[error("no mail sender named {0:?}")]
    UnknownSender(String),
    /// No certificate with this serial.
    #[error("no certificate with serial {0}")]
    NotFound(Serial),
    /// The certificate was revoked before.
    #[error("certificate {serial} is already revoked ({reason} at {at})")]
    AlreadyRevoked {
        /// The certificate.
        serial: Serial,
        /// The earlier reason.
        reason: RevocationReason,
        /// The earlier time.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// The serial was used before (by a stored certificate, or one signed and never stored).
    #[error("serial number {0} was used before")]
    SerialInUse(Serial),
    /// Another process holds the database.
    #[error("the database in {0} is in use by another process")]
    Locked(String),
    /// A stored value cannot be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A consistency check failed.
    #[error("inconsistent storage: {0}")]
    Inconsistent(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(String),
    /// The database cannot be reached now (refused, closed, shutting down, starting): nothing
    /// was done, and the same call may succeed later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database's schema is newer than this program knows: it was migrated by a later
    /// version.
    #[error("the database's schema is version {database}, newer than this program's {engine}: use a release of pki that knows schema version {database}")]
    SchemaTooNew {
        /// The database's schema version.
        database: u32,
        /// The newest schema version this program knows.
        engine: u32,
    },
}
