//! # The certificate lookup directory: CerDB over HTTP
//!
//! Client applications ask "does this mailbox have a valid encryption certificate?" and "give it
//! to me". Only certificates valid *now* count: revoked, expired and not-yet-valid ones are never
//! returned by `exists`, fetch or bulk lookup; the by-fingerprint and by-serial endpoints return any
//! certificate with its status.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/v1/certificates/exists?email=E` or `?email_sha256=H`, `&usage=U` | `{"email", "usage", "exists"}` |
//! | GET | `/api/v1/certificates?email=E` or `?email_sha256=H`, `&usage=U` | the newest valid certificate: PEM chain (leaf, then issuing CA) or JSON |
//! | GET | `/api/v1/certificates/{sha256}` | any certificate by SHA-256 fingerprint, with its status (JSON or PEM) |
//! | GET | `/api/v1/certificates/by-serial/{hex}` | any certificate by serial, with its status |
//! | POST | `/api/v1/certificates/lookup` | bulk: up to [`MAX_BULK`] addresses, an API key is required |
//! | GET | `/api/v1/openapi.json` | the OpenAPI 3.0 document of exactly these endpoints |
//!
//! ## Parts
//!
//! * [`Directory`]: the state behind the routes (lookups, the hashed-address index, API keys,
//!   rate limiter, the issuing CA certificates for the chain, an injected [`Clock`]).
//! * [`configure`]: mounts the routes into an actix-web `App` (used by `pki serve` and by the
//!   in-process tests).
//! * [`ApiKeyStore`]: client applications' keys. A key is 256 random bits shown once; only its
//!   SHA-256 is stored. A fast hash is right here: a preimage search over 2^256 keys is hopeless
//!   whatever the hash costs, and slow password hashes exist to protect *low-entropy* secrets;
//!   SHA-256 keeps checking a key on every request at about a microsecond.
//! * [`RateLimiter`]: token buckets in memory, one per API key and one per anonymous client IP
//!   (IPv6 grouped by /64). See its documentation for the exact rule.
//! * [`DirectoryError`]: everything that can go wrong; [`DirectoryError::http_response`] is the one
//!   place where an error becomes an HTTP answer (`{"error": "..."}` and a status).
//!
//! ## Storage
//!
//! Through the storage contract: certificates and the hashed-address index through
//! [`CertReader`] (the index is written with each certificate, so a stored certificate is found
//! by `email_sha256` at once), API keys and the anonymous policy through [`ApiKeyRecords`].
//! On PostgreSQL, `exists` and fetch await the engine's pipelined reads
//! ([`crate::AsyncReads`]) instead of blocking their worker on the synchronous
//! client: the same queries, so the same answers.
//!
//! ## Privacy
//!
//! Nothing here logs an address that was looked up, in clear or hashed; errors are mapped to
//! responses without passing through actix-web's error logging.
//!
//! **Must not:** sign anything or write certificates; it only reads them.

mod apikeys;
mod error;
mod http;
mod lookup;
mod openapi;
mod ratelimit;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use apikeys::{
    AnonymousPolicy, ApiKeyHash, ApiKeyName, ApiKeyRecord, ApiKeyRecords, ApiKeySecret, ApiKeyStore,
    ApiPermission,
};
pub use error::{DirectoryError, UNAVAILABLE_RETRY_AFTER_SECS};
pub use http::{body_error_text, configure, get_only, get_or_head, not_allowed, post_only, read_limited};
pub use lookup::{parse_address, AddressQuery, EMAIL_MAX_LEN, EMAIL_PATTERN};
pub use openapi::{documented_operations, openapi_document};
pub use ratelimit::{Admission, ClientId, RateLimiter};

use crate::{CaId, CertDb, CertReader};

/// The most addresses one bulk lookup may carry.
pub const MAX_BULK: usize = 1_000;

/// The largest request body accepted (1 MiB); larger bodies get HTTP 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

pub use crate::clock::{Clock, FixedClock, SystemClock};

/// A CA certificate that issues the certificates the directory serves: it is sent after the
/// leaf in PEM chains.
#[derive(Debug, Clone)]
pub struct IssuerCert {
    /// Which CA.
    pub ca: CaId,
    /// Its certificate, DER.
    pub der: Vec<u8>,
}

/// The directory's state: what the routes read.
pub struct Directory {
    db: CertDb,
    reader: Arc<dyn CertReader>,
    /// The engine's lookups for async callers, where it has them (PostgreSQL).
    pipelined: Option<Arc<dyn crate::AsyncReads>>,
    keys: ApiKeyStore,
    limiter: RateLimiter,
    issuers: Vec<(CaId, String)>,
    clock: Arc<dyn Clock>,
    /// Lookups (exists and fetch) that found a valid certificate, and that did not, since start.
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl Directory {
    /// Opens the directory over `db`.
    ///
    /// 1. take the reader (and the pipelined reads, where the engine has them) and the API keys
    ///    of `db`;
    /// 2. keep the PEM of each issuer for the chains.
    pub fn open(
        db: CertDb,
        issuers: &[IssuerCert],
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, DirectoryError> {
        let keys = ApiKeyStore::open(&db)?;
        let issuers = issuers.iter().map(|i| (i.ca, pem_certificate(&i.der))).collect();
        Ok(Arc::new(Directory {
            reader: db.reader(),
            pipelined: db.pipelined_reads(),
            db,
            keys,
            limiter: RateLimiter::new(),
            issuers,
            clock,
            hits: Default::default(),
            misses: Default::default(),
        }))
    }

    /// The API keys.
    pub fn keys(&self) -> &ApiKeyStore {
        &self.keys
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// Now, by the injected clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The database.
    pub fn db(&self) -> &CertDb {
        &self.db
    }

    fn issuer_pem(&self, ca: CaId) -> Option<&str> {
        self.issuers.iter().find(|(id, _)| *id == ca).map(|(_, pem)| pem.as_str())
    }
}

/// PEM of a certificate: base64 in lines of 64 characters, LF line endings.
pub fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    s.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

#[cfg(test)]
mod tests;
