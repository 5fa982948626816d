//! The HTTP scopes: `POST /tsa` (RFC 3161 §3.4) and `POST /api/v1/timestamps/verify`.

use actix_multipart::{Multipart, MultipartError};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, Scope};
use cerdb::directory::post_only;
use futures_util::{Stream, StreamExt};
use serde_json::json;

use crate::crypto::DataDigests;
use crate::verify::{Timestamped, Verifier};
use crate::{Error, TimestampAuthority};

/// The largest TimeStampReq accepted (bigger bodies get 413).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// The largest `data` part of a verification request; send the digest for bigger files.
pub const MAX_VERIFY_DATA_BYTES: usize = 16 * 1024 * 1024;
/// The largest `token` part of a verification request.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// The largest `digest` part (hex) of a verification request.
const MAX_DIGEST_TEXT_BYTES: usize = 1024;

const QUERY_TYPE: &str = "application/timestamp-query";
const REPLY_TYPE: &str = "application/timestamp-reply";
const MULTIPART_TYPE: &str = "multipart/form-data";

/// The timestamp service: `POST /tsa` with a DER TimeStampReq (`application/timestamp-query`,
/// at most [`MAX_QUERY_BYTES`]) → `200` with a DER TimeStampResp (`application/timestamp-reply`),
/// refusals included. Other content types get `415`, bigger bodies `413`.
pub fn scope(tsa: web::Data<TimestampAuthority>) -> Scope {
    web::scope("/tsa").app_data(tsa).service(post_only("", timestamp)).service(post_only("/", timestamp))
}

/// The answer of `/tsa` when its handler fails outright (it panicked): a `TimeStampResp` with
/// status rejection and failInfo systemFailure, HTTP 200 like every other TimeStampResp.
pub fn system_failure_response() -> HttpResponse {
    HttpResponse::Ok().content_type(REPLY_TYPE).body(crate::token::SYSTEM_FAILURE_RESPONSE.to_vec())
}

/// Auditors' verification: `POST /api/v1/timestamps/verify`, `multipart/form-data` with a
/// `token` part (DER TimeStampResp or TimeStampToken) and either a `data` part (at most
/// [`MAX_VERIFY_DATA_BYTES`], hashed as it arrives: never held in memory) or a `digest` part (hex). Answers JSON: `200` with
/// `{"verified": true, "serial", "gen_time", "policy", "tsa", "hash_algorithm"}`, `422` with
/// `{"verified": false, "failed_check", "error"}`, or `400`/`413`/`415` with `{"error"}`.
pub fn verify_scope(verifier: web::Data<Verifier>) -> Scope {
    web::scope("/api/v1/timestamps").app_data(verifier).service(post_only("/verify", verify_timestamp))
}

/// The one mapping from errors to HTTP responses (JSON bodies); internal details are logged,
/// not sent.
fn http_error(err: &Error) -> HttpResponse {
    let (status, body) = match err {
        Error::Verification { check, reason } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "verified": false, "failed_check": check.name(), "error": reason }),
        ),
        Error::BadRequest(_) => {
            let text = err.to_string();
            (
                StatusCode::BAD_REQUEST,
                json!({ "error": cerdb::text::cut_middle(&text, cerdb::text::MAX_ERROR_CHARS) }),
            )
        }
        Error::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, json!({ "error": err.to_string() })),
        Error::UnsupportedMediaType { .. } => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, json!({ "error": err.to_string() }))
        }
        _ => {
            tracing::error!(error = %err, "TSA HTTP request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": "internal error" }))
        }
    };
    HttpResponse::build(status).json(body)
}

/// Whether the request's media type (parameters ignored, case-insensitive) is `expected`.
fn has_media_type(req: &HttpRequest, expected: &str) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

/// An error of the stream a body or part is read from, told to the client in one line.
trait ReadError {
    fn text(&self) -> String;
}

impl ReadError for PayloadError {
    fn text(&self) -> String {
        cerdb::directory::body_error_text(self)
    }
}

impl ReadError for MultipartError {
    fn text(&self) -> String {
        match self {
            MultipartError::Payload(e) => e.text(),
            other => other.to_string(),
        }
    }
}

/// Reads a body or part into memory, refusing more than `limit` bytes.
async fn read_limited<S, E>(mut stream: S, limit: usize) -> Result<Vec<u8>, Error>
where
    S: Stream<Item = Result<web::Bytes, E>> + Unpin,
    E: ReadError,
{
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::BadRequest(format!("reading the body: {}", e.text())))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers().get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

async fn timestamp(
    req: HttpRequest,
    payload: web::Payload,
    tsa: web::Data<TimestampAuthority>,
) -> HttpResponse {
    if !has_media_type(&req, QUERY_TYPE) {
        return http_error(&Error::UnsupportedMediaType { expected: QUERY_TYPE });
    }
    if declared_length(&req).is_some_and(|n| n > MAX_QUERY_BYTES) {
        return http_error(&Error::PayloadTooLarge { limit: MAX_QUERY_BYTES });
    }
    let body = match read_limited(payload, MAX_QUERY_BYTES).await {
        Ok(b) => b,
        Err(e) => return http_error(&e),
    };
    // Signed on this worker (tens of microseconds with hsm-sim); the durable write of the record
    // is awaited, not waited for, so the worker serves other requests meanwhile and one flush
    // covers every token written during the previous one. Measured in BENCHMARKS.md (issue 5):
    // this beats running `respond` on the blocking pool, whose thread hand-offs cost more CPU
    // per token than the signature.
    let der = tsa.respond_async(&body).await;
    HttpResponse::Ok().content_type(REPLY_TYPE).body(der)
}

/// The parts of a verification request; the data part only as its digests (it is hashed as it
/// arrives, never held).
#[derive(Default)]
struct VerifyForm {
    token: Option<Vec<u8>>,
    data: Option<DataDigests>,
    digest: Option<Vec<u8>>,
}

/// Feeds a part into the digests as it arrives, refusing more than `limit` bytes.
async fn digest_limited<S, E>(mut stream: S, limit: usize) -> Result<DataDigests, Error>
where
    S: Stream<Item = Result<web::Bytes, E>> + Unpin,
    E: ReadError,
{
    let mut digests = DataDigests::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::BadRequest(format!("reading the body: {}", e.text())))?;
        if digests.len().saturating_add(chunk.len() as u64) > limit as u64 {
            return Err(Error::PayloadTooLarge { limit });
        }
        digests.update(&chunk);
    }
    Ok(digests)
}

async fn read_verify_form(req: &HttpRequest, payload: web::Payload) -> Result<VerifyForm, Error> {
    if !has_media_type(req, MULTIPART_TYPE) {
        return Err(Error::UnsupportedMediaType { expected: MULTIPART_TYPE });
    }
    let mut form = VerifyForm::default();
    let mut parts = Multipart::new(req.headers(), payload);
    while let Some(field) = parts.next().await {
        let field = field.map_err(|e| Error::BadRequest(format!("multipart body: {}", e.text())))?;
        let name = field.name().unwrap_or_default().to_string();
        if name == "data" {
            if form.data.is_some() {
                return Err(Error::BadRequest(format!("part {name:?} given twice")));
            }
            form.data = Some(digest_limited(field, MAX_VERIFY_DATA_BYTES).await?);
            continue;
        }
        let (slot, limit) = match name.as_str() {
            "token" => (&mut form.token, MAX_TOKEN_BYTES),
            "digest" => (&mut form.digest, MAX_DIGEST_TEXT_BYTES),
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown part {other:?}; expected token and data or digest"
                )))
            }
        };
        if slot.is_some() {
            return Err(Error::BadRequest(format!("part {name:?} given twice")));
        }
        *slot = Some(read_limited(field, limit).await?);
    }
    Ok(form)
}

async fn verify_timestamp(
    req: HttpRequest,
    payload: web::Payload,
    verifier: web::Data<Verifier>,
) -> HttpResponse {
    let form = match read_verify_form(&req, payload).await {
        Ok(f) => f,
        Err(e) => return http_error(&e),
    };
    let Some(token) = form.token else {
        return http_error(&Error::BadRequest("the token part is missing".into()));
    };
    let digest = match form.digest {
        Some(text) => {
            let text = String::from_utf8_lossy(&text);
            match hex::decode(text.trim()) {
                Ok(d) => Some(d),
                Err(e) => return http_error(&Error::BadRequest(format!("the digest is not hex: {e}"))),
            }
        }
        None => None,
    };
    let result = web::block(move || {
        let subject = match (&form.data, &digest) {
            (Some(d), None) => Timestamped::Streamed(d),
            (None, Some(d)) => Timestamped::Digest(d),
            _ => return Err(Error::BadRequest("give exactly one of the data and digest parts".into())),
        };
        verifier.verify(&token, subject)
    })
    .await;
    match result {
        Ok(Ok(v)) => HttpResponse::Ok().json(json!({
            "verified": true,
            "serial": v.serial.to_string(),
            "gen_time": v.gen_time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "policy": v.policy.to_string(),
            "tsa": v.tsa_name,
            "hash_algorithm": v.hash_algorithm,
        })),
        Ok(Err(e)) => http_error(&e),
        Err(e) => http_error(&Error::Internal(format!("verification worker failed: {e}"))),
    }
}
