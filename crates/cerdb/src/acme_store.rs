//! Durable storage of enrolment state — ACME accounts, orders, authorizations, External Account
//! Binding keys — and of mailbox validations, whatever the engine keeps them in
//! (`sled_engine/acme.rs`, `pg_engine/acme.rs`).
//!
//! The records are opaque bytes here (the `acme` crate and `ca-core` own their shape, as JSON);
//! this module keys them by [`AcmeKind`] and an id, stores a record once per id, and swaps a record
//! only if it is still the one read, so that two requests racing over one order (two finalizes, a
//! challenge answered twice) cannot both win.

use chrono::{DateTime, Utc};

use crate::Error;

/// What a record is; each kind has its own id space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcmeKind {
    /// An ACME account (id: its URL id).
    Account,
    /// The index of an account by the thumbprint of its key (RFC 7638).
    AccountKey,
    /// An order.
    Order,
    /// An authorization with its challenges.
    Authorization,
    /// An External Account Binding key (id: its key id).
    EabKey,
    /// A completed mailbox validation (id: the normalised address).
    Validation,
    /// A pending e-mailed validation code (id: the normalised address).
    ValidationCode,
    /// The ACME account a certificate was issued to (id: the serial).
    IssuedCert,
    /// The authorization an `email-reply-00` challenge mail belongs to (id: its token-part1).
    ChallengeToken,
}

impl AcmeKind {
    /// Every kind.
    pub const ALL: [AcmeKind; 9] = [
        AcmeKind::Account,
        AcmeKind::AccountKey,
        AcmeKind::Order,
        AcmeKind::Authorization,
        AcmeKind::EabKey,
        AcmeKind::Validation,
        AcmeKind::ValidationCode,
        AcmeKind::IssuedCert,
        AcmeKind::ChallengeToken,
    ];

    /// The name stored with the record.
    pub fn name(self) -> &'static str {
        match self {
            AcmeKind::Account => "account",
            AcmeKind::AccountKey => "account-key",
            AcmeKind::Order => "order",
            AcmeKind::Authorization => "authz",
            AcmeKind::EabKey => "eab",
            AcmeKind::Validation => "validation",
            AcmeKind::ValidationCode => "validation-code",
            AcmeKind::IssuedCert => "issued-cert",
            AcmeKind::ChallengeToken => "challenge-token",
        }
    }

    /// One byte for keys of engines that order bytes.
    pub fn tag(self) -> u8 {
        match self {
            AcmeKind::Account => 1,
            AcmeKind::AccountKey => 2,
            AcmeKind::Order => 3,
            AcmeKind::Authorization => 4,
            AcmeKind::EabKey => 5,
            AcmeKind::Validation => 6,
            AcmeKind::ValidationCode => 7,
            AcmeKind::IssuedCert => 8,
            AcmeKind::ChallengeToken => 9,
        }
    }
}

/// The longest id accepted (ids are random tokens, thumbprints or addresses).
pub const MAX_ACME_ID_BYTES: usize = 512;

/// Refuses an empty or oversized id.
pub(crate) fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_ACME_ID_BYTES {
        return Err(Error::Inconsistent(format!("an enrolment record id of {} bytes", id.len())));
    }
    Ok(())
}

/// The enrolment records. Every write is durable when it returns.
pub trait AcmeRecords: Send + Sync {
    /// Stores a new record; `false` (and nothing written) when the id of this kind is taken.
    fn insert_acme(
        &self,
        kind: AcmeKind,
        id: &str,
        created_at: DateTime<Utc>,
        record: &[u8],
    ) -> Result<bool, Error>;

    /// One record.
    fn acme(&self, kind: AcmeKind, id: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Replaces the record `old` by `new` if the stored one is still exactly `old` (byte for
    /// byte: callers pass what they read); `false` (and nothing written) when it changed or is
    /// gone.
    fn replace_acme(&self, kind: AcmeKind, id: &str, old: &[u8], new: &[u8]) -> Result<bool, Error>;

    /// Stores `record` whether or not the id was taken (a validation renewed).
    fn put_acme(
        &self,
        kind: AcmeKind,
        id: &str,
        created_at: DateTime<Utc>,
        record: &[u8],
    ) -> Result<(), Error>;

    /// Removes a record; whether it was there.
    fn remove_acme(&self, kind: AcmeKind, id: &str) -> Result<bool, Error>;

    /// Every record of a kind with its id, oldest first.
    fn acme_records(&self, kind: AcmeKind) -> Result<Vec<(String, Vec<u8>)>, Error>;

    /// [`insert_acme`](Self::insert_acme) whose durability may wait for the next
    /// [`sync_acme`](Self::sync_acme): for records acknowledged together, made durable by one
    /// write to disk. Visible to readers at once. Engines whose every write commits on its own
    /// keep this default.
    fn insert_acme_deferred(
        &self,
        kind: AcmeKind,
        id: &str,
        created_at: DateTime<Utc>,
        record: &[u8],
    ) -> Result<bool, Error> {
        self.insert_acme(kind, id, created_at, record)
    }

    /// [`replace_acme`](Self::replace_acme) whose durability may wait for the next
    /// [`sync_acme`](Self::sync_acme).
    fn replace_acme_deferred(&self, kind: AcmeKind, id: &str, old: &[u8], new: &[u8]) -> Result<bool, Error> {
        self.replace_acme(kind, id, old, new)
    }

    /// Makes every deferred write before it durable.
    fn sync_acme(&self) -> Result<(), Error> {
        Ok(())
    }
}
