//! The reads the HTTP workers await instead of calling the synchronous [`crate::CertReader`]:
//! the directory's lookups and the OCSP responder's statuses, on engines whose reads would block
//! a worker (PostgreSQL's pipelined connections, [`crate::pg_engine::PipelinedReads`]). Engines
//! that read from memory have none ([`crate::Engine::pipelined_reads`] is `None`), and their
//! callers use the synchronous reads. Each method answers as its synchronous counterpart does.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::{CertKind, CertRecord, CertState, EmailAddress, Error, Serial};

/// The future of one awaited read.
pub type ReadFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Reads awaited on an async runtime; see the module documentation.
pub trait AsyncReads: Send + Sync + std::fmt::Debug {
    /// [`crate::CertReader::email_by_hash`].
    fn email_by_hash<'a>(&'a self, hash: &'a [u8; 32]) -> ReadFuture<'a, Option<EmailAddress>>;

    /// [`crate::CertReader::states_by_email`].
    fn states_by_email<'a>(
        &'a self,
        email: &'a EmailAddress,
        kind: CertKind,
    ) -> ReadFuture<'a, Vec<(Serial, CertState)>>;

    /// [`crate::CertReader::state`].
    fn state<'a>(&'a self, serial: &'a Serial) -> ReadFuture<'a, Option<CertState>>;

    /// [`crate::ChangeFeed::last_change`].
    fn last_change(&self) -> ReadFuture<'_, u64>;

    /// [`crate::CertReader::newest_valid`].
    fn newest_valid<'a>(
        &'a self,
        email: &'a EmailAddress,
        kind: CertKind,
        now: DateTime<Utc>,
    ) -> ReadFuture<'a, Option<CertRecord>>;

    /// How many statements (or requests) the reads so far were sent in, and how many reads they
    /// answered: how well reads that came together were gathered.
    fn statement_counts(&self) -> (u64, u64);
}
