//! # ocsp-responder — certificate status over OCSP
//!
//! **Owns:** RFC 6960 / RFC 5019 request parsing (through RustCrypto's `x509-ocsp` types), the
//! building and signing of `BasicOCSPResponse`s by the delegated OCSP signer key held in
//! `hsm-sim`, the RFC 9654 nonce, the cache of signed responses, the HTTP scope (`POST /ocsp`,
//! `GET /ocsp/{base64 request}` with RFC 5019 caching headers) and the pre-signing of one response
//! file per certificate for a static web server or CDN.
//!
//! **Must not:** keep its own copy of certificate status — every status comes from `cerdb`
//! through the read-only [`cerdb::CertReader`], and a cached response is re-checked against it
//! on every hit; hold private key bytes — it signs through an [`hsm_sim::Signer`]; answer for a
//! CA other than the issuing CA it was built for (requests naming another issuer get
//! `unauthorized`); read the clock on its own inside the core logic — `now` is passed in (the
//! HTTP scope reads the injected [`Clock`]).
//!
//! ## Use
//!
//! ```text
//! let responder = Arc::new(OcspResponder::new(reader, &issuing_ca_der, &signer_cert_der,
//!                                             signer, OcspConfig::default(), Arc::new(SystemClock))?);
//! App::new().service(ocsp_responder::scope(responder.clone()))   // serves /ocsp
//! // the CA's revoke path, after cerdb has recorded the revocation:
//! responder.invalidate(&serial);
//! ```
//!
//! ## Errors on the wire
//!
//! Every failure to answer becomes an `OCSPResponse` with no `responseBytes` and the status
//! chosen by [`Error::response_status`], the one mapping function; details go to the log only.
//! HTTP-level errors are limited to `413` with a JSON `{"error"}` for a POST body over
//! [`OcspConfig::max_request_bytes`] (default [`MAX_REQUEST_BYTES`]).
//!
//! `README.md` beside this crate lists the choices made where the standards leave one, the
//! layout of pre-signed files, and why `x509-ocsp` is used rather than the `ocsp` crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod config;
mod error;
mod http;
mod issuer;
mod presign;
mod request;
mod responder;

pub use config::{Clock, OcspConfig, SystemClock};
pub use error::{Error, ResponseStatus};
pub use http::{internal_error_response, scope, MAX_REQUEST_BYTES};
pub use presign::{issued_serials, PresignReport, PRESIGN_INDEX_FILE};
pub use responder::{Freshness, OcspReply, OcspResponder};
