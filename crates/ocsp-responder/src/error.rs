//! The one public error type of this crate, and the one place where an error becomes an OCSP
//! response status.

use std::fmt;

/// Everything that can go wrong in building a responder, answering a request or pre-signing.
///
/// Messages may name serials and file paths; they never reach an OCSP client (see
/// [`Error::response_status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate handed to the constructor cannot be used.
    #[error("the {which} certificate cannot be used: {reason}")]
    Certificate {
        /// Which certificate: `issuing CA` or `OCSP signer`.
        which: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The signer's key is not the key of the OCSP signer certificate.
    #[error("the OCSP signing key {handle} does not match the public key of the OCSP signer certificate")]
    SignerKeyMismatch {
        /// The key-store handle of the signer.
        handle: String,
    },
    /// The signer's key signs with a scheme this responder does not offer.
    #[error("the OCSP signing key signs with {scheme}; OCSP responses are signed with a SHA-256 scheme (RSA or ECDSA P-256)")]
    UnsupportedSignatureScheme {
        /// The scheme, as hsm-sim names it.
        scheme: String,
    },
    /// A configuration value is out of range.
    #[error("invalid OCSP responder configuration: {0}")]
    InvalidConfig(String),
    /// The request is longer than the configured limit.
    #[error("OCSP request of {len} octets is over the limit of {max}")]
    RequestTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The request cannot be decoded or breaks RFC 6960.
    #[error("malformed OCSP request: {0}")]
    Malformed(String),
    /// The nonce is empty or longer than RFC 9654 allows.
    #[error("OCSP nonce of {len} octets; 1 to 128 are accepted")]
    NonceLength {
        /// The nonce's length.
        len: usize,
    },
    /// A critical extension this responder does not know.
    #[error("unsupported critical extension {oid} in the OCSP request")]
    UnsupportedCriticalExtension {
        /// Its OID, dotted.
        oid: String,
    },
    /// A CertID names an issuer (or a hash algorithm) this responder does not serve.
    #[error("the request names an issuer this responder does not serve (hash algorithm {hash_algorithm})")]
    IssuerNotServed {
        /// The CertID's hash algorithm OID, dotted.
        hash_algorithm: String,
    },
    /// The OCSP signer's certificate, or the issuing CA's, is revoked: no response is signed
    /// with that signer any more.
    #[error("the {which} certificate is revoked; the responder no longer signs with its signer")]
    SignerRevoked {
        /// `OCSP signer` or `issuing CA`.
        which: &'static str,
    },
    /// Now is outside the OCSP signer certificate's validity (its renewal is late): no response
    /// is signed with an expired or not yet valid signer.
    #[error("the OCSP signer certificate is valid from {not_before} to {not_after} only")]
    SignerNotValid {
        /// Its notBefore.
        not_before: chrono::DateTime<chrono::Utc>,
        /// Its notAfter.
        not_after: chrono::DateTime<chrono::Utc>,
    },
    /// The certificate store failed.
    #[error("certificate store: {0}")]
    Storage(#[from] cerdb::Error),
    /// The key store failed to sign.
    #[error("OCSP signing: {0}")]
    Signing(#[from] hsm_sim::Error),
    /// A value could not be DER-encoded (a date out of range, a length over the limits).
    #[error("DER encoding: {0}")]
    Encoding(String),
    /// File system error while pre-signing.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.display().to_string(), source }
    }

    pub(crate) fn encoding(e: impl fmt::Display) -> Self {
        Error::Encoding(e.to_string())
    }

    /// The `OCSPResponseStatus` an error is answered with. The only place where an error
    /// reaches the wire (RFC 6960 §2.3, §4.2.1):
    ///
    /// * anything wrong with the request itself → `malformedRequest`;
    /// * an issuer (or CertID hash) not served here → `unauthorized` (RFC 5019 §2.2.3);
    /// * a revoked signer or issuing CA → `unauthorized`: the responder can no longer answer
    ///   authoritatively (RFC 6960 §2.3), and nothing changes by asking again, as `tryLater` would
    ///   suggest;
    /// * a store that cannot be read or a sealed key store → `tryLater`, both pass;
    /// * every other failure of ours → `internalError`.
    pub fn response_status(&self) -> ResponseStatus {
        match self {
            Error::RequestTooLarge { .. }
            | Error::Malformed(_)
            | Error::NonceLength { .. }
            | Error::UnsupportedCriticalExtension { .. } => ResponseStatus::MalformedRequest,
            Error::IssuerNotServed { .. } | Error::SignerRevoked { .. } => ResponseStatus::Unauthorized,
            Error::Storage(_) | Error::Signing(hsm_sim::Error::Sealed) | Error::SignerNotValid { .. } => {
                ResponseStatus::TryLater
            }
            Error::Certificate { .. }
            | Error::SignerKeyMismatch { .. }
            | Error::UnsupportedSignatureScheme { .. }
            | Error::InvalidConfig(_)
            | Error::Signing(_)
            | Error::Encoding(_)
            | Error::Io { .. } => ResponseStatus::InternalError,
        }
    }
}

/// RFC 6960 §4.2.1 `OCSPResponseStatus`.
///
/// ```text
/// OCSPResponseStatus ::= ENUMERATED {
///     successful            (0),  -- Response has valid confirmations
///     malformedRequest      (1),  -- Illegal confirmation request
///     internalError         (2),  -- Internal error in issuer
///     tryLater              (3),  -- Try again later
///                                 -- (4) is not used
///     sigRequired           (5),  -- Must sign the request
///     unauthorized          (6)   -- Request unauthorized
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseStatus {
    /// successful (0)
    Successful,
    /// malformedRequest (1)
    MalformedRequest,
    /// internalError (2)
    InternalError,
    /// tryLater (3)
    TryLater,
    /// sigRequired (5); never sent by this responder, listed for completeness.
    SigRequired,
    /// unauthorized (6)
    Unauthorized,
}

impl ResponseStatus {
    /// The ENUMERATED value.
    pub fn code(self) -> u8 {
        match self {
            ResponseStatus::Successful => 0,
            ResponseStatus::MalformedRequest => 1,
            ResponseStatus::InternalError => 2,
            ResponseStatus::TryLater => 3,
            ResponseStatus::SigRequired => 5,
            ResponseStatus::Unauthorized => 6,
        }
    }

    #[cfg(test)]
    pub(crate) fn to_asn1(self) -> x509_ocsp::OcspResponseStatus {
        use x509_ocsp::OcspResponseStatus as S;
        match self {
            ResponseStatus::Successful => S::Successful,
            ResponseStatus::MalformedRequest => S::MalformedRequest,
            ResponseStatus::InternalError => S::InternalError,
            ResponseStatus::TryLater => S::TryLater,
            ResponseStatus::SigRequired => S::SigRequired,
            ResponseStatus::Unauthorized => S::Unauthorized,
        }
    }
}

impl fmt::Display for ResponseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseStatus::Successful => "successful",
            ResponseStatus::MalformedRequest => "malformedRequest",
            ResponseStatus::InternalError => "internalError",
            ResponseStatus::TryLater => "tryLater",
            ResponseStatus::SigRequired => "sigRequired",
            ResponseStatus::Unauthorized => "unauthorized",
        })
    }
}
