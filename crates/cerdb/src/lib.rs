//! # cerdb — certificate storage and the lookup directory
//!
//! **Owns:** the one sled database of a data directory: certificates (DER) and their metadata,
//! the indexes by serial, SHA-256 fingerprint and normalised e-mail address, revocation status,
//! the latest CRLs, the serials of certificates signed but never stored, and the raw audit-log
//! records. Every write that
//! acknowledges something (an issuance, a revocation) is flushed to disk before it returns.
//!
//! **Must not:** sign anything. It stores what `ca-core` produced, and serves reads to the OCSP
//! responder and the directory through the read-only [`CertReader`] view.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
pub mod console_store;
pub mod directory;
mod record;
mod store;
pub mod tsa_store;
mod types;

pub use clock::{Clock, FixedClock, SystemClock};
pub use record::{AuditRecord, CertRecord, CertState, CertStatus, CrlRecord, Revocation};
pub use store::{CertDb, CertReader, CheckedIssue, WarmStats};
pub use types::{CaId, CertKind, EmailAddress, Fingerprint, KeyDigest, RevocationReason, Serial, Usage};

/// Errors of storage and of the identifier types.
#[derive(Debug, thiserror::Error)]
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
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Db(e.to_string())
    }
}
