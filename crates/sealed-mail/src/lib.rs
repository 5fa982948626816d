//! # sealed-mail — signed, timestamped, encrypted S/MIME messages in one API call
//!
//! **Owns:** turning a statement or a one-time code into a complete S/MIME message: the
//! recipient's newest valid encryption certificate from CerDB (status checked at that moment),
//! the MIME entity ([`mime`]), its CMS `SignedData` by a sender identity's key in custody with
//! signing time, S/MIME capabilities and the sender's chain, an RFC 3161 timestamp of the
//! signature from the installation's own TSA ([`signed`]), the `EnvelopedData` to the recipient
//! and an optional archive certificate — RSA key transport ([`keytrans`]), or ECDH on P-256
//! ([`ecdh`], RFC 5753) — with AES-256-CBC ([`envelope`]); the signed plain invitation for addresses without a
//! certificate ([`seal`]); and the HTTP scope `/api/v1/mail` ([`configure`]).
//!
//! **Must not:** hold private key bytes (senders sign through [`hsm_sim::Signer`]); issue
//! certificates (sender identities are issued by `ca-core`, kept by `cerdb::mail_senders`); log or
//! store anything of a message body — the audit record ([`SealRecord`]) names the sender, the
//! recipient's address hash, the certificate serial, the Message-ID and the timestamp serial.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod commit;
pub mod ecdh;
pub mod envelope;
mod http;
pub mod keytrans;
pub mod mime;
pub mod oids;
pub mod openapi;
pub mod seal;
pub mod signed;

pub use http::{configure, Delivery, DeliverySession, MailLimits, MailService, MAX_BULK};
pub use openapi::openapi_document;
pub use seal::{
    DeliveryRecord, InProcessTsa, Invitation, Made, MailAudit, MessageKind, SealRecord, SealRequest, Sealed,
    Sealer, SealerParts, SenderKeys,
};
pub use signed::{IssuedTimestamp, OnDisk, SenderKey, SignatureTimestamp, Timestamper};

/// Everything that can go wrong; [`Error::status`] and [`Error::body`] are the one place where an
/// error becomes an HTTP answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field of the request is not acceptable.
    #[error("{field} {reason}")]
    BadInput {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The body is not the JSON expected.
    #[error("the body is not a valid request: {0}")]
    BadJson(String),
    /// The body is larger than allowed.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// No valid API key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The API key lacks the mail permission.
    #[error("this API key has no mail permission")]
    NoMailPermission,
    /// The API key may not send as this sender (or it does not exist).
    #[error(
        "this API key may not send as {0:?}: there is no such sender, or the key is not allowed to use it"
    )]
    SenderNotAllowed(String),
    /// The sender identity exists and the key may use it, but its certificate cannot sign now:
    /// revoked, expired, not yet valid, or gone from the store.
    #[error("sender {sender} cannot sign: {reason}")]
    SenderUnusable {
        /// The sender's name.
        sender: String,
        /// Why, for the operator: the certificate's serial and its status.
        reason: String,
    },
    /// The recipient has no valid encryption certificate.
    #[error("the recipient has no valid encryption certificate")]
    NoCertificate,
    /// The client is over its quota.
    #[error("over quota: retry in {retry_after_secs} s")]
    RateLimited {
        /// When to retry.
        retry_after_secs: u64,
    },
    /// As many bulk requests as allowed at a time are being handled.
    #[error("{limit} bulk requests are being handled, the most at a time: retry in {retry_after_secs} s")]
    Busy {
        /// The most bulk requests at a time (`[mail] max_bulk_at_once`).
        limit: usize,
        /// When to retry.
        retry_after_secs: u64,
    },
    /// The recipient's certificate holds a key this crate cannot encrypt to.
    #[error("the recipient's certificate holds a key that cannot be encrypted to: {0}")]
    RecipientKey(String),
    /// What should be a certificate to encrypt to is none (DER that does not parse as X.509).
    #[error("not an X.509 certificate: {0}")]
    NotACertificate(String),
    /// A timestamp was asked for and no TSA is configured.
    #[error("timestamps are not available on this server")]
    TimestampUnavailable,
    /// Delivery was asked for and no relay is configured.
    #[error("delivery is not configured on this server ([mail.relay])")]
    DeliveryUnavailable,
    /// The relay refused the message (an SMTP reply; another message may still go).
    #[error("the mail relay refused the message: {0}")]
    Delivery(String),
    /// The relay could not be reached or stopped answering (connection, TLS, timeout): a bulk
    /// request tries no further message.
    #[error("the mail relay cannot be reached: {0}")]
    RelayUnreachable(String),
    /// The relay refused the login of `[mail.relay]`: a bulk request tries no further message
    /// (each would be one more failed login, which a relay may answer by locking the account).
    #[error("the mail relay refused the login ([mail.relay] username, password_file): {0}")]
    RelayLogin(String),
    /// A message sealed (its audit entry written) and then not delivered: the answer is the
    /// `cause`'s, with the message, so that the caller can send it later or another way without
    /// sealing it again.
    #[error("{cause}")]
    NotDelivered {
        /// Why: [`Error::Delivery`], [`Error::RelayUnreachable`], [`Error::RelayLogin`] or
        /// [`Error::DeliveryUnavailable`].
        cause: Box<Error>,
        /// The message's JSON description, `message_base64` included.
        sealed: Box<serde_json::Value>,
    },
    /// The TSA refused to stamp (its PKIStatusInfo's text): it is not usable now, say after
    /// `pki ca compromise --ca tsa`.
    #[error("the timestamp authority refused to stamp: {0}")]
    TimestampRefused(String),
    /// Signing failed in custody.
    #[error("signing: {0}")]
    Signing(String),
    /// A CMS builder failed.
    #[error("CMS: {0}")]
    Cms(String),
    /// DER encoding or decoding failed.
    #[error("encoding: {0}")]
    Encoding(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] cerdb::Error),
    /// Anything else that is not the client's fault.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn encoding(e: impl std::fmt::Display) -> Self {
        Error::Encoding(e.to_string())
    }

    pub(crate) fn cms(e: impl std::fmt::Display) -> Self {
        Error::Cms(e.to_string())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::NotDelivered { cause, .. } => cause.status(),
            Error::BadInput { .. } | Error::BadJson(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::NoMailPermission | Error::SenderNotAllowed(_) => 403,
            Error::NoCertificate => 404,
            Error::TooLarge { .. } => 413,
            Error::SenderUnusable { .. } => 409,
            Error::RecipientKey(_) | Error::NotACertificate(_) => 422,
            Error::RateLimited { .. } => 429,
            Error::Delivery(_) | Error::RelayUnreachable(_) | Error::RelayLogin(_) => 502,
            Error::TimestampUnavailable
            | Error::TimestampRefused(_)
            | Error::DeliveryUnavailable
            | Error::Busy { .. } => 503,
            _ => 500,
        }
    }

    /// The JSON body of the answer: `{"exists": false}` for a recipient without certificate,
    /// `{"error": ...}` otherwise — for server-side failures without their internal detail.
    pub fn body(&self) -> serde_json::Value {
        match self {
            Error::NoCertificate => serde_json::json!({"exists": false}),
            Error::NotDelivered { cause, sealed } => {
                let mut v = cause.body();
                if let (Some(answer), Some(message)) = (v.as_object_mut(), sealed.as_object()) {
                    answer.extend(message.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                v
            }
            e if e.status() >= 500
                && !matches!(
                    e,
                    Error::TimestampUnavailable
                        | Error::TimestampRefused(_)
                        | Error::DeliveryUnavailable
                        | Error::Delivery(_)
                        | Error::RelayUnreachable(_)
                        | Error::RelayLogin(_)
                        | Error::Busy { .. }
                ) =>
            {
                serde_json::json!({"error": "internal error"})
            }
            e => {
                let text = e.to_string();
                serde_json::json!({"error": cerdb::text::cut_middle(&text, cerdb::text::MAX_ERROR_CHARS)})
            }
        }
    }
}
