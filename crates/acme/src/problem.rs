//! ACME problem documents (RFC 8555 §6.7, RFC 7807): the one place where errors reach the wire.

use serde::Serialize;

/// An ACME error type (`urn:ietf:params:acme:error:<name>`), with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemType {
    /// The request is malformed.
    Malformed,
    /// The nonce is unknown, used or missing.
    BadNonce,
    /// The JWS algorithm is not accepted.
    BadSignatureAlgorithm,
    /// The account key is not accepted.
    BadPublicKey,
    /// No such account.
    AccountDoesNotExist,
    /// A new account needs External Account Binding.
    ExternalAccountRequired,
    /// Not allowed.
    Unauthorized,
    /// The CSR is not acceptable.
    BadCsr,
    /// The order is not ready to finalize.
    OrderNotReady,
    /// Too many requests.
    RateLimited,
    /// The identifier is not of a supported type.
    UnsupportedIdentifier,
    /// The server will not issue for this identifier.
    RejectedIdentifier,
    /// The challenge response was wrong.
    IncorrectResponse,
    /// The certificate is revoked already.
    AlreadyRevoked,
    /// The revocation reason is not allowed.
    BadRevocationReason,
    /// The contact is not acceptable.
    UnsupportedContact,
    /// The server failed.
    ServerInternal,
}

impl ProblemType {
    /// Its name in the URN.
    pub fn name(self) -> &'static str {
        match self {
            ProblemType::Malformed => "malformed",
            ProblemType::BadNonce => "badNonce",
            ProblemType::BadSignatureAlgorithm => "badSignatureAlgorithm",
            ProblemType::BadPublicKey => "badPublicKey",
            ProblemType::AccountDoesNotExist => "accountDoesNotExist",
            ProblemType::ExternalAccountRequired => "externalAccountRequired",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::BadCsr => "badCSR",
            ProblemType::OrderNotReady => "orderNotReady",
            ProblemType::RateLimited => "rateLimited",
            ProblemType::UnsupportedIdentifier => "unsupportedIdentifier",
            ProblemType::RejectedIdentifier => "rejectedIdentifier",
            ProblemType::IncorrectResponse => "incorrectResponse",
            ProblemType::AlreadyRevoked => "alreadyRevoked",
            ProblemType::BadRevocationReason => "badRevocationReason",
            ProblemType::UnsupportedContact => "unsupportedContact",
            ProblemType::ServerInternal => "serverInternal",
        }
    }

    /// The HTTP status it is sent with.
    pub fn status(self) -> u16 {
        match self {
            ProblemType::Unauthorized | ProblemType::OrderNotReady => 403,
            ProblemType::RateLimited => 429,
            ProblemType::ServerInternal => 500,
            _ => 400,
        }
    }
}

/// A problem document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The type.
    pub kind: ProblemType,
    /// What went wrong, for the client's operator.
    pub detail: String,
    /// An HTTP status other than the type's (404 for unknown URLs, 405, 413, 415).
    pub status: Option<u16>,
    /// Seconds to wait (rate limits).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: String,
    detail: &'a str,
    status: u16,
}

macro_rules! ctor {
    ($($f:ident => $k:ident),* $(,)?) => {
        impl Problem {
            $(
                #[doc = concat!("A `", stringify!($k), "` problem.")]
                pub fn $f(detail: String) -> Problem {
                    Problem { kind: ProblemType::$k, detail, status: None, retry_after: None }
                }
            )*
        }
    };
}

ctor! {
    malformed => Malformed,
    bad_nonce => BadNonce,
    bad_signature_algorithm => BadSignatureAlgorithm,
    bad_public_key => BadPublicKey,
    account_does_not_exist => AccountDoesNotExist,
    external_account_required => ExternalAccountRequired,
    unauthorized => Unauthorized,
    bad_csr => BadCsr,
    order_not_ready => OrderNotReady,
    unsupported_identifier => UnsupportedIdentifier,
    rejected_identifier => RejectedIdentifier,
    incorrect_response => IncorrectResponse,
    already_revoked => AlreadyRevoked,
    bad_revocation_reason => BadRevocationReason,
    unsupported_contact => UnsupportedContact,
    server_internal => ServerInternal,
}

impl Problem {
    /// With another HTTP status.
    pub fn with_status(mut self, status: u16) -> Problem {
        self.status = Some(status);
        self
    }

    /// The CA cannot do this now, for a reason the client may read (503, `serverInternal`): its
    /// issuing CA revoked by `pki ca compromise`, say.
    pub fn unavailable(detail: String) -> Problem {
        Problem { kind: ProblemType::ServerInternal, detail, status: Some(503), retry_after: None }
    }

    /// Not found (404, `malformed`).
    pub fn not_found(what: &str) -> Problem {
        Problem::malformed(format!("no such {what}")).with_status(404)
    }

    /// The server failed: `what` is logged, the client reads a generic detail.
    pub fn internal(what: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %what, "ACME request failed");
        Problem::server_internal("the server failed; the error is logged".into())
    }

    /// Too many requests.
    pub fn rate_limited(detail: String, retry_after: u64) -> Problem {
        Problem { kind: ProblemType::RateLimited, detail, status: None, retry_after: Some(retry_after) }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or(self.kind.status())
    }

    /// The JSON body; a detail quoting a value of thousands of characters is cut in the middle
    /// (`cerdb::text::cut_middle`).
    pub fn body(&self) -> String {
        let wire = Wire {
            kind: format!("urn:ietf:params:acme:error:{}", self.kind.name()),
            detail: &cerdb::text::cut_middle(&self.detail, cerdb::text::MAX_ERROR_CHARS),
            status: self.http_status(),
        };
        serde_json::to_string(&wire).unwrap_or_else(|_| "{}".into())
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}
