//! # tsa — RFC 3161 / RFC 5816 timestamp authority
//!
//! **Owns:** parsing and checking `TimeStampReq`s, building `TSTInfo` (RFC 3161 §2.4.2, profiled
//! by ETSI EN 319 422), signing it as a CMS `SignedData` token (RFC 5652) with the TSA key held in
//! `hsm-sim` and the `signing-certificate-v2` attribute (RFC 5816), the `TimeStampResp` with its
//! `PKIStatusInfo` for every refusal, the record of issued tokens (kept by `cerdb`), auditors'
//! verification of tokens, and the HTTP scopes `/tsa` and `/api/v1/timestamps/verify`.
//!
//! **Must not:** depend on the CA's issuance code (`ca-core`) — the TSA certificate and its
//! chain are handed in as DER; hold private key bytes (it signs through [`hsm_sim::Signer`]);
//! touch the database other than through [`cerdb::tsa_store`]; read the clock other than
//! through the injected [`Clock`].
//!
//! ## Wiring
//!
//! ```text
//! let store  = cerdb::tsa_store::TsaStore::open(&cert_db)?;
//! let tsa    = TimestampAuthority::new(signer, tsa_cert_der, chain_ders, store.clone(), TsaConfig::default())?;
//! let verify = Verifier::new(root_der, tsa.certificates(), Arc::new(store))?;
//! App::new().service(tsa::scope(web::Data::new(tsa)))
//!           .service(tsa::verify_scope(web::Data::new(verify)))
//! ```
//!
//! ## Choices where the standards leave room
//!
//! * Default policy: [`DEFAULT_POLICY`] = `1.3.6.1.4.1.32473.1`, under the private enterprise
//!   number that RFC 5612 reserves for documentation. (The X.660 `example` arc 2.999 cannot be
//!   used: `const-oid` 0.9 refuses second arcs above 39 under root 2.) A deployment configures
//!   an OID under its own arc.
//! * genTime is the clock truncated (never rounded up) to as many fractional digits as the
//!   declared accuracy needs (100 ms → 1 digit, 1 ms → 3, 1 s → none), encoded in DER without
//!   trailing zeros. The accuracy must cover the clock's error plus that truncation.
//! * A hash algorithm with parameters other than absent or NULL, or an unknown one, gets `badAlg`;
//!   a digest of the wrong length gets `badDataFormat` (as OpenSSL's TSA does).
//! * The token carries the `tsa` field (the TSA certificate's subject) and no `signing-time`.
//! * Serials are reserved durably in blocks ([`TsaConfig::serial_block`]); a restart skips the
//!   rest of a block. Every token's record is on disk (an append-only ledger file, synced)
//!   before the token is returned; the records of concurrent requests share writes and syncs
//!   (group commit with a 1 ms window while other tokens are in flight, [`cerdb::tsa_store`]),
//!   and the HTTP scope awaits the sync instead of holding a thread
//!   ([`TimestampAuthority::respond_async`]). A token's policy OID may have at most
//!   [`cerdb::tsa_store::MAX_POLICY_TEXT`] characters in dotted form (the record's slot).
//! * Granted tokens are framed by hand around parts encoded once (`frame.rs`); refusals use the
//!   typed encoders.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod asn1;
mod crypto;
mod frame;
mod gentime;
mod http;
pub mod oids;
mod request;
mod token;
mod verify;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use cerdb::tsa_store::{TokenLedger, TokenRecord, TsaSerial, TsaStore};
pub use crypto::DataDigests;
pub use der::oid::ObjectIdentifier;
pub use gentime::GenTime;
pub use http::{scope, system_failure_response, verify_scope, MAX_QUERY_BYTES, MAX_VERIFY_DATA_BYTES};
pub use request::sha256_query;
pub use token::{IssuedToken, TimestampAuthority, TokenOnDisk};
pub use verify::{verify, MoreCertificates, Timestamped, VerifiedToken, Verifier};

/// The default TSA policy: `1.3.6.1.4.1.32473.1`, under the enterprise number RFC 5612 reserves
/// for documentation. A deployment configures an OID under its own arc.
pub const DEFAULT_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.1");

/// Where the TSA gets the time from (the workspace's clock, from cerdb). Injected so that tests
/// can use fixed instants.
pub use cerdb::{Clock, SystemClock};

/// How the TSA runs.
#[derive(Debug, Clone)]
pub struct TsaConfig {
    /// The policy of tokens whose request names none.
    pub default_policy: ObjectIdentifier,
    /// Further policies a requester may ask for (the default is always accepted).
    pub accepted_policies: Vec<ObjectIdentifier>,
    /// The declared accuracy of genTime (`Accuracy` in TSTInfo); also fixes genTime's precision.
    /// Between 1 µs and 1 hour, in whole microseconds.
    pub accuracy: Duration,
    /// Whether SHA-1 message imprints are accepted (refused with `badAlg` by default).
    pub allow_sha1: bool,
    /// How many serials are reserved durably at a time (at least 1). Default 4,096: a
    /// reservation flushes the database while no other token can take a serial, so at full load
    /// (about 18,000 tokens/s here) it happens about 4 times a second rather than 70; a restart
    /// skips the rest of a block (serials stay unique and increasing, with a gap).
    pub serial_block: u64,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for TsaConfig {
    fn default() -> Self {
        TsaConfig {
            default_policy: DEFAULT_POLICY,
            accepted_policies: Vec::new(),
            accuracy: Duration::from_millis(100),
            allow_sha1: false,
            serial_block: 4096,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The checks of auditors' verification, in the order they run; a failure names the first one
/// that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// The input is a TimeStampResp (granted) or a TimeStampToken with a TSTInfo.
    Format,
    /// The CMS signature: content-type and message-digest attributes, and the signature of the
    /// signed attributes by the signer certificate's key.
    Signature,
    /// The signer certificate chains to the trusted root, every certificate valid at genTime, and
    /// the signer certificate is a TSA certificate (critical EKU id-kp-timeStamping only).
    Chain,
    /// The signing-certificate-v2 attribute (ESSCertIDv2) names the signer certificate.
    SigningCertificate,
    /// The message imprint matches the data or digest given.
    Imprint,
    /// The serial is in this TSA's record with the same token hash.
    Record,
}

impl Check {
    /// A short stable name (used in JSON).
    pub fn name(self) -> &'static str {
        match self {
            Check::Format => "format",
            Check::Signature => "signature",
            Check::Chain => "chain",
            Check::SigningCertificate => "signing_certificate",
            Check::Imprint => "imprint",
            Check::Record => "record",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in the TSA.
///
/// Refusals of a request reach the client only as a `PKIStatusInfo`, built in one place
/// ([`TimestampAuthority::respond`]); HTTP-level errors and verification results reach it in one
/// JSON/HTTP mapping function.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is not a DER TimeStampReq.
    #[error("the request is not a DER-encoded TimeStampReq: {0}")]
    BadDataFormat(String),
    /// The message imprint's hash algorithm is unknown or not accepted.
    #[error("hash algorithm {0} is not accepted; use SHA-256, SHA-384 or SHA-512")]
    HashAlgorithmRefused(String),
    /// A SHA-1 message imprint, and SHA-1 is not allowed.
    #[error("SHA-1 message imprints are refused by this TSA; use SHA-256, SHA-384 or SHA-512")]
    Sha1Refused,
    /// The message imprint's hash algorithm has parameters other than absent or NULL.
    #[error("hash algorithm {oid} has unexpected parameters")]
    HashParameters {
        /// The algorithm, dotted.
        oid: String,
    },
    /// The hashed message has the wrong length for its algorithm.
    #[error("the {algorithm} message imprint has {actual} bytes; expected {expected}")]
    ImprintLength {
        /// The algorithm's name.
        algorithm: &'static str,
        /// Its digest length.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// The requested policy is not offered.
    #[error("policy {0} is not offered by this TSA")]
    UnacceptedPolicy(String),
    /// The request carries an extension (none is supported).
    #[error("extension {0} is not supported")]
    UnacceptedExtension(String),
    /// The clock gave a time that cannot be encoded.
    #[error("the time source is not available: {0}")]
    TimeNotAvailable(String),
    /// Storage failed.
    #[error("TSA storage failed: {0}")]
    Store(#[from] cerdb::Error),
    /// The key store failed to sign.
    #[error("signing failed: {0}")]
    Signing(#[from] hsm_sim::Error),
    /// Encoding a structure failed.
    #[error("DER encoding failed: {0}")]
    Encoding(String),
    /// An internal failure (such as a worker thread that died).
    #[error("internal error: {0}")]
    Internal(String),
    /// The configuration is not usable.
    #[error("invalid TSA configuration: {0}")]
    Config(String),
    /// The TSA certificate is not usable with this key or profile.
    #[error("unusable TSA certificate: {0}")]
    TsaCertificate(String),
    /// A certificate (chain or root) cannot be decoded.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A verification check failed.
    #[error("verification failed at the {check} check: {reason}")]
    Verification {
        /// The first check that failed.
        check: Check,
        /// Why.
        reason: String,
    },
    /// A malformed verification request (HTTP).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A request body over the limit (HTTP).
    #[error("the request body is over {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A request with the wrong content type (HTTP).
    #[error("expected content type {expected}")]
    UnsupportedMediaType {
        /// The content type the endpoint takes.
        expected: &'static str,
    },
}

impl Error {
    pub(crate) fn verification(check: Check, reason: impl Into<String>) -> Self {
        Error::Verification { check, reason: reason.into() }
    }
}

impl From<der::Error> for Error {
    fn from(e: der::Error) -> Self {
        Error::Encoding(e.to_string())
    }
}
