//! # admin-web — the console for PKI officers, auditors and administrators
//!
//! **Owns:** console accounts (argon2id passwords, one-time passwords, RFC 6238 TOTP with
//! enrolment by QR code), roles and their permissions, server-side sessions (idle and absolute
//! timeouts, failed logins throttled per client address ([`throttle`]) and an account lock that
//! refuses new logins but keeps open sessions), step-up for high-risk actions, CSRF tokens, the
//! security headers, and the HTML pages under `/admin` (templates compiled at build time with
//! maud; no JavaScript, no external resources).
//!
//! **Must not:** contain the CA's business rules: issuing, revoking, escrow recovery, the audit
//! chain and timestamp verification are calls into `ca-core` and `tsa`; storage goes through
//! [`cerdb::console_store`]. Time comes from the CA's injected clock ([`ca_core::Ca::now`]).
//!
//! ## Routes and roles
//!
//! | route | who |
//! |---|---|
//! | `GET/POST /admin/login`, `/admin/login/totp`, `/admin/password`, `/admin/totp/enrol`, `POST /admin/logout` | anyone / the session's own user |
//! | `GET /admin/`, `/admin/certificates[/{serial}[/pem]]`, `/admin/audit`, `GET/POST /admin/timestamps` | every role |
//! | `GET /admin/validations` (each address's mailbox evidence) | every role |
//! | `POST /admin/validations/send`, `/admin/validations/confirm` (mail a value, enter it back) | officer |
//! | `GET/POST /admin/issue[/csr,/generate]`, `POST /admin/certificates/{serial}/revoke`, `GET /admin/escrow`, `POST /admin/escrow/request`, `/admin/escrow/{id}/approve`, `/admin/escrow/{id}/release` | officer |
//! | `GET/POST /admin/users[/...]`, `GET /admin/settings`, `POST /admin/ca/compromise`, `POST /admin/ca/rekey` | admin |
//!
//! Revocation, every step of an escrow recovery (request, approval by a second officer, release
//! to the requester: [`ca_core::Ca::request_recovery`]), revoking one of the CA's own certificates
//! for a compromised key or putting a new key in use for one, and adding, resetting or confirming the reset of an account need a TOTP
//! code entered within [`ConsoleConfig::step_up_secs`] (step-up). Every POST carries the hidden
//! `csrf_token`.
//!
//! A reset never shows the account's one-time password to the administrator who made it: it is
//! written to a file only the server's operator reads ([`otp_file`]), and the account takes no
//! part in escrow recovery until a second administrator confirms the reset
//! ([`Accounts::confirm_reset`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accounts;
mod auth;
mod forms;
mod live_views;
pub mod otp_file;
mod pages;
pub mod password;
mod qr;
pub mod throttle;
pub mod totp;
mod views;

use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{Service as _, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError, Scope};
use ca_core::Ca;
use cerdb::console_store::{ConsoleStore, UserName};
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};

pub use accounts::Accounts;

/// The console's settings (`[console]` in `pki.toml`). Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A session unused this long is over (seconds; default 15 minutes).
    pub idle_timeout_secs: u64,
    /// A session is over this long after login whatever happens (seconds; default 8 hours).
    pub absolute_timeout_secs: u64,
    /// This many failed logins in a row lock the account (default 5).
    pub max_failed_logins: u32,
    /// For this long (seconds; default 15 minutes): new logins to the account are refused, its
    /// open sessions go on.
    pub lockout_secs: u64,
    /// Failed logins (any account, or none) one client address may make at once before it gets
    /// `429` (default 10) ...
    pub max_failed_logins_per_address: u32,
    /// ... and it gets one attempt back every this many seconds (default 60).
    pub address_refill_secs: u64,
    /// A TOTP code entered this recently allows high-risk actions (seconds; default 5 minutes).
    pub step_up_secs: u64,
    /// The issuer name shown in authenticator apps.
    pub totp_issuer: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            idle_timeout_secs: 15 * 60,
            absolute_timeout_secs: 8 * 3600,
            max_failed_logins: 5,
            lockout_secs: 15 * 60,
            max_failed_logins_per_address: 10,
            address_refill_secs: 60,
            step_up_secs: 5 * 60,
            totp_issuer: "PKI Console".into(),
        }
    }
}

impl ConsoleConfig {
    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.into()));
        if self.idle_timeout_secs == 0 || self.idle_timeout_secs > self.absolute_timeout_secs {
            return bad(
                "console.idle_timeout_secs must be positive and at most console.absolute_timeout_secs",
            );
        }
        if self.max_failed_logins == 0 {
            return bad("console.max_failed_logins must be positive");
        }
        if self.max_failed_logins_per_address == 0 || self.address_refill_secs == 0 {
            return bad(
                "console.max_failed_logins_per_address and console.address_refill_secs must be positive",
            );
        }
        if self.lockout_secs == 0 || self.step_up_secs == 0 {
            return bad("console.lockout_secs and console.step_up_secs must be positive");
        }
        if self.totp_issuer.trim().is_empty() || self.totp_issuer.contains(':') {
            return bad("console.totp_issuer must be non-empty and without ':'");
        }
        Ok(())
    }
}

/// Everything the console can refuse or fail at. Reaches the browser only through
/// [`Error::error_response`]: an HTML page with a status code; internal details are logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// No session, or one past its timeouts: to the login page.
    #[error("please log in")]
    NotLoggedIn {
        /// The session timed out (rather than never existed).
        expired: bool,
    },
    /// The session has a login step left (new password, TOTP): to that page.
    #[error("finish logging in first")]
    LoginIncomplete {
        /// The page of the step.
        next: &'static str,
    },
    /// The role does not allow this.
    #[error("your role ({role}) may not {action}")]
    Forbidden {
        /// The user's role.
        role: &'static str,
        /// What was refused.
        action: &'static str,
    },
    /// The form's CSRF token is missing or wrong.
    #[error("the form is out of date or was not sent by this console (CSRF check failed); reload the page and try again")]
    Csrf,
    /// A high-risk action without a recent TOTP code.
    #[error("this action needs a current TOTP code (step-up): enter the code from your authenticator app")]
    StepUpRequired,
    /// A TOTP code that does not match.
    #[error("the TOTP code is wrong or was used before")]
    InvalidTotp,
    /// A new password that the policy refuses.
    #[error("password refused: {0}")]
    WeakPassword(String),
    /// A malformed request.
    #[error("bad request: {0}")]
    BadRequest(String),

    /// A request body that is no form this console reads: too large (413), of another media
    /// type (415), or cut short or malformed (400).
    #[error("{message}")]
    Unreadable {
        /// The status it is answered with.
        status: StatusCode,
        /// What was wrong.
        message: String,
    },
    /// A page asked with a method it does not take (answered 405 with `Allow`).
    #[error("method not allowed: use {allow}")]
    MethodNotAllowed {
        /// The methods it takes, as `Allow` lists them.
        allow: &'static str,
    },
    /// Nothing here.
    #[error("not found: {0}")]
    NotFound(String),
    /// No such account.
    #[error("no console user {0}")]
    UnknownUser(UserName),
    /// The name is taken.
    #[error("console user {0} exists already")]
    UserExists(UserName),
    /// A reset confirmed by the administrator who made it, or by the account itself.
    #[error("{0}")]
    SecondAdminRequired(String),
    /// A confirmation for an account with no unconfirmed reset.
    #[error("console user {0} has no reset waiting for confirmation")]
    NothingToConfirm(UserName),
    /// The console is only served over HTTPS on this listener.
    #[error("the console is served over HTTPS only on this address")]
    HttpsRequired,
    /// The CA refused or failed.
    #[error(transparent)]
    Ca(#[from] ca_core::Error),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] cerdb::Error),
    /// An internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Equality of secrets in time independent of where they differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl From<actix_web::error::BlockingError> for Error {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Error::Internal(format!("worker thread: {e}"))
    }
}

/// Whether a CA error is the user's to fix (its message is shown) rather than an internal one.
fn ca_error_status(e: &ca_core::Error) -> Option<StatusCode> {
    use ca_core::Error as E;
    Some(match e {
        e if e.is_csr_refusal() => StatusCode::BAD_REQUEST,
        E::MailboxNotValidated { .. } | E::ValidationValue(_) => StatusCode::FORBIDDEN,
        E::SigningKeyNotEscrowable
        | E::Lint(_)
        | E::ReasonNotAllowed { .. }
        | E::ConfirmationMismatch { .. } => StatusCode::BAD_REQUEST,
        E::RecoveryReason(_) => StatusCode::BAD_REQUEST,
        E::UnknownSerial(_) | E::UnknownRecovery(_) => StatusCode::NOT_FOUND,
        E::RecoveryOwnRequest { .. } | E::RecoveryNotRequester { .. } | E::RecoveryHold { .. } => {
            StatusCode::FORBIDDEN
        }
        E::RecoveryExpired { .. }
        | E::RecoveryAlreadyApproved { .. }
        | E::RecoveryFullyApproved { .. }
        | E::RecoveryReleased { .. }
        | E::RecoveryNotApproved { .. } => StatusCode::CONFLICT,
        E::RootNotRevocable
        | E::NotEscrowed(_)
        | E::OwnCertNotRevocable { .. }
        | E::Compromised { .. }
        | E::NotReKeyable { .. }
        | E::NothingToReKey { .. }
        | E::ReplacedMeanwhile { .. } => StatusCode::CONFLICT,
        E::Storage(s) => return storage_error_status(s),
        E::Hsm(hsm_sim::Error::WeakPkcs12Password { .. }) => StatusCode::BAD_REQUEST,
        _ => return None,
    })
}

fn storage_error_status(e: &cerdb::Error) -> Option<StatusCode> {
    use cerdb::Error as E;
    Some(match e {
        E::InvalidSerial(_)
        | E::InvalidFingerprint(_)
        | E::InvalidEmail(_)
        | E::InvalidUsage(_)
        | E::InvalidReason(_)
        | E::InvalidRecoveryId(_) => StatusCode::BAD_REQUEST,
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::AlreadyRevoked { .. } => StatusCode::CONFLICT,
        E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => return None,
    })
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::NotLoggedIn { .. } | Error::LoginIncomplete { .. } => StatusCode::SEE_OTHER,
            Error::Forbidden { .. }
            | Error::Csrf
            | Error::StepUpRequired
            | Error::HttpsRequired
            | Error::SecondAdminRequired(_) => StatusCode::FORBIDDEN,
            Error::InvalidTotp | Error::WeakPassword(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unreadable { status, .. } => *status,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotFound(_) | Error::UnknownUser(_) => StatusCode::NOT_FOUND,
            Error::UserExists(_) | Error::NothingToConfirm(_) => StatusCode::CONFLICT,
            Error::Ca(e) => ca_error_status(e).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Error::Storage(e) => storage_error_status(e).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Error::Config(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The one place where console errors become responses.
    fn error_response(&self) -> HttpResponse<BoxBody> {
        let status = self.status_code();
        match self {
            Error::NotLoggedIn { expired } => {
                let to = if *expired { "/admin/login?expired=1" } else { "/admin/login" };
                return HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish();
            }
            Error::LoginIncomplete { next } => {
                return HttpResponse::SeeOther().insert_header((header::LOCATION, *next)).finish();
            }
            _ => {}
        }
        let unavailable = status == StatusCode::SERVICE_UNAVAILABLE;
        let message = if unavailable {
            tracing::warn!(error = %self, "console request: the database is unavailable");
            "The CA's database cannot be reached just now: nothing was changed. The console works again by itself once the database is back; try again in a few seconds.".to_string()
        } else if status.is_server_error() {
            tracing::error!(error = %self, "console request failed");
            "Something went wrong on the server; the details are in its log.".to_string()
        } else {
            // A value of thousands of characters quoted in full would bury the reason.
            cerdb::text::cut_middle(&self.to_string(), cerdb::text::MAX_ERROR_CHARS).into_owned()
        };
        let mut res = HttpResponse::build(status);
        if let Error::MethodNotAllowed { allow } = self {
            res.insert_header((header::ALLOW, *allow));
        }
        if unavailable {
            res.insert_header((
                header::RETRY_AFTER,
                cerdb::directory::UNAVAILABLE_RETRY_AFTER_SECS.to_string(),
            ));
        }
        res.content_type("text/html; charset=utf-8").body(views::error_page(status, &message).into_string())
    }
}

/// The largest urlencoded form the console reads (its multipart forms have limits per part).
const FORM_LIMIT: usize = 64 * 1024;

/// What the console answers a request body actix-web could not read as a urlencoded form: the
/// status actix-web gives each case, with a message that says what was wrong.
fn form_error(e: &actix_web::error::UrlencodedError, req: &actix_web::HttpRequest) -> Error {
    use actix_web::error::UrlencodedError as U;
    let bad = |message: String| Error::Unreadable { status: StatusCode::BAD_REQUEST, message };
    match e {
        U::Overflow { size, limit } => Error::Unreadable {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the form is {size} bytes, over the console's limit of {limit}"),
        },
        U::ContentType => {
            let sent = req.headers().get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()));
            Error::Unreadable {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: match sent {
                    Some(t) => format!("this form is sent as application/x-www-form-urlencoded, not {t}"),
                    None => "this form is sent as application/x-www-form-urlencoded; the request had no Content-Type".into(),
                },
            }
        }
        U::Parse(e) => bad(format!("the form: {e}")),
        U::Encoding => bad("the form's charset is not UTF-8".into()),
        U::Payload(p) => bad(cerdb::directory::body_error_text(p)),
        other => bad(format!("the form: {other}")),
    }
}

/// The console: its state, shared by every worker.
pub struct Console {
    ca: Arc<Ca>,
    store: Arc<dyn ConsoleStore>,
    cfg: ConsoleConfig,
    verifier: tsa::Verifier,
    login_key: ring::hmac::Key,
    cache: live_views::Cache,
    throttle: throttle::LoginThrottle,
    /// Where a console reset leaves the account's one-time password for the server's operator
    /// ([`otp_file`]); without it the console refuses resets.
    resets_dir: Option<std::path::PathBuf>,
    /// Mails a mailbox validation value (the `[mail.relay]` of the server); without it the
    /// console's validation button says what to configure.
    validation_mailer: Option<ValidationMailer>,
}

/// Sends a validation value to an address: `(address, value, hours valid)`.
pub type ValidationMailer = Arc<dyn Fn(&cerdb::EmailAddress, &str, u32) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Console {
    /// The console of `ca`, verifying timestamps with `verifier`.
    pub fn new(ca: Arc<Ca>, cfg: ConsoleConfig, verifier: tsa::Verifier) -> Result<Console, Error> {
        use ring::rand::SecureRandom;
        cfg.validate()?;
        let store = ca.db().console();
        let mut fresh = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut fresh)
            .map_err(|_| Error::Internal("no randomness".into()))?;
        let key = store.meta_get_or_init("login_csrf_key", &fresh)?;
        Ok(Console {
            throttle: throttle::LoginThrottle::new(&cfg),
            login_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            store,
            cfg,
            verifier,
            ca,
            cache: live_views::Cache::default(),
            resets_dir: None,
            validation_mailer: None,
        })
    }

    /// Resets made in the console leave the one-time password in `dir` (`console-resets/` of the
    /// data directory), never on a page ([`otp_file`]).
    pub fn with_resets_dir(mut self, dir: std::path::PathBuf) -> Console {
        self.resets_dir = Some(dir);
        self
    }

    /// The console's "send a validation value" button mails through `mailer`.
    pub fn with_validation_mailer(mut self, mailer: ValidationMailer) -> Console {
        self.validation_mailer = Some(mailer);
        self
    }

    /// The accounts.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts::with_store(&self.ca, self.store.clone())
    }

    /// The settings.
    pub fn config(&self) -> &ConsoleConfig {
        &self.cfg
    }
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The headers every console response carries.
fn add_security_headers(res: &mut ServiceResponse<BoxBody>, secure: bool) {
    let h = res.headers_mut();
    let set = |h: &mut header::HeaderMap, name: header::HeaderName, v: &'static str| {
        h.insert(name, HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::HeaderName::from_static("cross-origin-opener-policy"), "same-origin");
    set(h, header::HeaderName::from_static("cross-origin-resource-policy"), "same-origin");
    if secure {
        set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
}

/// The console's routes under `/admin`, with the security headers on every response and plain
/// HTTP refused unless the listener is on a loopback address.
pub fn scope(
    console: web::Data<Console>,
) -> Scope<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let form_cfg =
        web::FormConfig::default().limit(FORM_LIMIT).error_handler(|e, req| form_error(&e, req).into());
    let query_cfg = web::QueryConfig::default().error_handler(|e, _| {
        let actix_web::error::QueryPayloadError::Deserialize(e) = e else {
            return Error::BadRequest(e.to_string()).into();
        };
        Error::BadRequest(format!("the address's query: {e}")).into()
    });
    let path_cfg = web::PathConfig::default().error_handler(|e, _| Error::BadRequest(e.to_string()).into());
    pages::routes(
        web::scope("/admin").app_data(console).app_data(form_cfg).app_data(query_cfg).app_data(path_cfg),
    )
    .wrap_fn(
        |req: ServiceRequest,
         srv|
         -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>> {
            let secure = req.app_config().secure();
            if !secure && !req.app_config().local_addr().ip().is_loopback() {
                let mut res = req.into_response(Error::HttpsRequired.error_response());
                add_security_headers(&mut res, secure);
                return Box::pin(async move { Ok(res) });
            }
            let fut = srv.call(req);
            Box::pin(async move {
                let mut res = fut.await?;
                add_security_headers(&mut res, secure);
                Ok(res)
            })
        },
    )
}
