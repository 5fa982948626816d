//! The directory's error type, and the one place where an error becomes an HTTP answer.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;

/// Everything the directory can refuse or fail at.
///
/// Messages name the problem and may quote the client's own input back to it; they never name
/// storage internals (those are logged, and the client gets "internal error").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// A required query parameter is absent.
    #[error("missing query parameter: give {0}")]
    MissingParameter(&'static str),
    /// A parameter (query, path or JSON field) is malformed.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter, as the API names it (`email`, `usage`, `emails[3]`, ...).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Two parameters that exclude each other were both given, or one was given twice.
    #[error("{0}")]
    ConflictingParameters(String),
    /// The request body is not the JSON the endpoint expects.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// A bulk lookup names too many addresses.
    #[error("too many addresses: {count} given, at most {max} per request")]
    TooManyAddresses {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The request body is over the limit.
    #[error("request body over {max} bytes")]
    BodyTooLarge {
        /// The limit.
        max: usize,
    },
    /// The body could not be read.
    #[error("cannot read the request body: {0}")]
    BodyUnreadable(String),
    /// Nothing matches.
    #[error("{0}")]
    NotFound(String),
    /// The `Authorization` header is malformed, or names an unknown or revoked key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The endpoint needs an API key and none was sent.
    #[error("{0} needs an API key: send Authorization: Bearer KEY")]
    KeyRequired(&'static str),
    /// Anonymous access is switched off.
    #[error("anonymous access is disabled: send Authorization: Bearer KEY")]
    AnonymousDisabled,
    /// The client is over its quota.
    #[error("rate limit exceeded: retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the request would be admitted.
        retry_after_secs: u64,
    },
    /// The client accepts none of the representations the endpoint offers.
    #[error("not acceptable: this endpoint answers {offered}")]
    NotAcceptable {
        /// The media types offered.
        offered: &'static str,
    },
    /// The method is not offered on this path.
    #[error("method not allowed: use {allow}")]
    MethodNotAllowed {
        /// The methods that are.
        allow: &'static str,
    },
    /// No endpoint at this path.
    #[error("no such endpoint; see /api/v1/openapi.json")]
    NoSuchEndpoint,
    /// An API-key name is taken.
    #[error("an API key named {0:?} exists already")]
    KeyNameTaken(String),
    /// No API key with this name.
    #[error("no API key named {0:?}")]
    UnknownKey(String),
    /// The key was revoked before.
    #[error("the API key {0:?} is already revoked")]
    KeyAlreadyRevoked(String),
    /// Storage failed or holds something undecodable.
    #[error(transparent)]
    Storage(#[from] crate::Error),
}

/// `Retry-After` of a 503 while the database is unavailable: a connection is tried again on the
/// next request, so a few seconds.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

impl DirectoryError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            DirectoryError::MissingParameter(_)
            | DirectoryError::InvalidParameter { .. }
            | DirectoryError::ConflictingParameters(_)
            | DirectoryError::InvalidJson(_)
            | DirectoryError::TooManyAddresses { .. }
            | DirectoryError::BodyUnreadable(_)
            | DirectoryError::KeyNameTaken(_)
            | DirectoryError::KeyAlreadyRevoked(_) => StatusCode::BAD_REQUEST,
            DirectoryError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DirectoryError::NotFound(_) | DirectoryError::NoSuchEndpoint | DirectoryError::UnknownKey(_) => {
                StatusCode::NOT_FOUND
            }
            DirectoryError::Unauthorized(_)
            | DirectoryError::KeyRequired(_)
            | DirectoryError::AnonymousDisabled => StatusCode::UNAUTHORIZED,
            DirectoryError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            DirectoryError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            DirectoryError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            DirectoryError::Storage(crate::Error::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            DirectoryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The one mapping from an error to the wire: `{"error": "..."}` with the status of
    /// [`DirectoryError::status`], plus `Retry-After` (429), `WWW-Authenticate` (401) or `Allow`
    /// (405). Storage failures are logged here and answered with "internal error" only.
    pub fn http_response(&self) -> HttpResponse {
        let status = self.status();
        let message = match self {
            DirectoryError::Storage(e @ crate::Error::Unavailable(_)) => {
                tracing::warn!(error = %e, "directory: the database is unavailable");
                "the database is unavailable; retry later".to_string()
            }
            DirectoryError::Storage(e) => {
                tracing::error!(error = %e, "directory storage failure");
                "internal error".to_string()
            }
            other => crate::text::cut_middle(&other.to_string(), crate::text::MAX_ERROR_CHARS).into_owned(),
        };
        let mut res = HttpResponse::build(status);
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            DirectoryError::RateLimited { retry_after_secs } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            DirectoryError::Unauthorized(_) => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""));
            }
            DirectoryError::KeyRequired(_) | DirectoryError::AnonymousDisabled => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            DirectoryError::MethodNotAllowed { allow } => {
                res.insert_header((header::ALLOW, *allow));
            }
            DirectoryError::Storage(crate::Error::Unavailable(_)) => {
                res.insert_header((header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER_SECS.to_string()));
            }
            _ => {}
        }
        res.content_type("application/json").body(serde_json::json!({ "error": message }).to_string())
    }
}
