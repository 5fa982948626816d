//! The HTTP binding: routes, input parsing, content negotiation, caching headers, quotas.
//!
//! Every handler returns an `HttpResponse` itself, turning errors into responses through
//! [`DirectoryError::http_response`]; nothing reaches actix-web's own error rendering (plain text)
//! or its error logging (which would print addresses from error messages).
//!
//! Order of checks in every handler: who is asking (401), is the input well formed (400/413/406),
//! is the client within its quota (429), then the lookup. Malformed requests are refused before
//! they cost quota, so a client that gets 429 knows its request itself was fine.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{guard, web, FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, Route};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::apikeys::{ApiKeyHash, ApiKeyRecord, ApiKeySecret};
use super::lookup::{
    parse_address, parse_fingerprint, parse_serial, parse_sha256, parse_usage, AddressQuery,
};
use super::ratelimit::ClientId;
use super::{Directory, DirectoryError, MAX_BODY_BYTES, MAX_BULK};
use crate::{CertKind, CertRecord, Usage};

const PEM_CHAIN: &str = "application/pem-certificate-chain";
const JSON: &str = "application/json";
/// Clients must revalidate (cheap with `If-None-Match`), so a revocation is seen at once.
const CACHE_FETCH: &str = "public, no-cache";
const CACHE_NONE: &str = "no-store";

/// Mounts the directory: the scope `/api/v1/certificates` and `/api/v1/openapi.json`.
///
/// (Two narrow mounts rather than one `/api/v1` scope: actix-web gives a request to the first
/// scope whose prefix matches, so a broad scope would hide other services' `/api/v1/...` routes.)
pub fn configure(dir: Arc<Directory>) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        let data = web::Data::from(dir.clone());
        cfg.service(
            web::scope("/api/v1/certificates")
                .app_data(data.clone())
                .service(get_only("/exists", exists))
                .service(post_only("/lookup", lookup))
                .service(get_only("/by-serial/{serial}", by_serial))
                .service(get_only("/{fingerprint}", by_fingerprint))
                .service(get_only("", fetch))
                .default_service(web::to(|| async { DirectoryError::NoSuchEndpoint.http_response() })),
        )
        .service(get_only("/api/v1/openapi.json", openapi));
    }
}

/// A resource at `path` answered by `handler` for `GET`, and for `HEAD` (the same answer, its
/// body left out by actix-web); any other method gets 405, `Allow: GET, HEAD` and a JSON error.
/// For every read-only endpoint of `pki serve`, so that a wrong method is told apart from a wrong
/// path (404).
pub fn get_only<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    only(path, web::route().guard(get_or_head()).to(handler), "GET, HEAD")
}

/// A request by GET or by HEAD (GET's answer without its body).
pub fn get_or_head() -> guard::AnyGuard {
    guard::Any(guard::Get()).or(guard::Head())
}

/// A resource at `path` answered by `handler` for `POST` only; any other method gets 405,
/// `Allow: POST` and a JSON error.
pub fn post_only<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    only(path, web::post().to(handler), "POST")
}

/// A resource at `path` with `route`; any other method gets [`not_allowed`] with `allow`.
fn only(path: &str, route: Route, allow: &'static str) -> Resource {
    web::resource(path).route(route).default_service(web::to(move || async move { not_allowed(allow) }))
}

/// 405 with `Allow: allow` and `{"error": "method not allowed: use ALLOW"}`.
pub fn not_allowed(allow: &'static str) -> HttpResponse {
    DirectoryError::MethodNotAllowed { allow }.http_response()
}

fn respond(r: Result<HttpResponse, DirectoryError>) -> HttpResponse {
    let res = r.unwrap_or_else(|e| e.http_response());
    // The status only: what was asked never reaches the logs.
    tracing::debug!(status = res.status().as_u16(), "directory answer");
    res
}

// ---------------------------------------------------------------------------------------------
// Who is asking, and their quota.

enum Client {
    Key { hash: ApiKeyHash, rec: ApiKeyRecord },
    Anonymous { ip: IpAddr, rate: f64, burst: f64 },
}

fn identify(req: &HttpRequest, dir: &Directory) -> Result<Client, DirectoryError> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let text = v.to_str().map_err(|_| DirectoryError::Unauthorized("malformed Authorization header"))?;
        let (scheme, token) = text.trim().split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(DirectoryError::Unauthorized("the Authorization scheme must be Bearer"));
        }
        let secret: ApiKeySecret = token.trim().parse()?;
        return match dir.keys.authenticate(&secret)? {
            Some((hash, rec)) => Ok(Client::Key { hash, rec }),
            None => Err(DirectoryError::Unauthorized("unknown or revoked API key")),
        };
    }
    let policy = dir.keys.anonymous()?;
    if !policy.enabled {
        return Err(DirectoryError::AnonymousDisabled);
    }
    let ip = req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    Ok(Client::Anonymous { ip, rate: policy.rate, burst: policy.burst })
}

/// Charges `cost` lookups to the client.
fn charge(dir: &Directory, client: &Client, cost: usize) -> Result<(), DirectoryError> {
    let (who, rate, burst) = match client {
        Client::Key { hash, rec } => (ClientId::Key(hash.0), rec.rate, rec.burst),
        Client::Anonymous { ip, rate, burst } => (ClientId::anonymous(*ip), *rate, *burst),
    };
    let verdict = dir.limiter.admit(who, rate, burst, cost.max(1) as f64, Instant::now());
    match verdict.retry_after_secs() {
        None => Ok(()),
        Some(retry_after_secs) => {
            if let Client::Key { rec, .. } = client {
                tracing::debug!(key = %rec.name, "directory client over quota");
            }
            Err(DirectoryError::RateLimited { retry_after_secs })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Input.

fn invalid(name: &str, reason: impl Into<String>) -> DirectoryError {
    DirectoryError::InvalidParameter { name: name.to_string(), reason: reason.into() }
}

/// How a query named its address, to echo back in the `exists` answer.
enum Named {
    Email(String),
    Sha256(String),
}

struct AddressParams {
    query: AddressQuery,
    usage: Usage,
    named: Named,
}

fn set_once(slot: &mut Option<String>, name: &str, value: String) -> Result<(), DirectoryError> {
    if slot.is_some() {
        return Err(DirectoryError::ConflictingParameters(format!(
            "query parameter {name} given more than once"
        )));
    }
    *slot = Some(value);
    Ok(())
}

fn address_params(req: &HttpRequest) -> Result<AddressParams, DirectoryError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| invalid("query string", e.to_string()))?
        .into_inner();
    let (mut email, mut hash, mut usage) = (None, None, None);
    for (k, v) in pairs {
        match k.as_str() {
            "email" => set_once(&mut email, "email", v)?,
            "email_sha256" => set_once(&mut hash, "email_sha256", v)?,
            "usage" => set_once(&mut usage, "usage", v)?,
            // The OpenAPI document allows no other parameter (`additionalProperties: false`): a
            // misspelt one (`emial=`) must not be answered as if it were absent.
            other => {
                return Err(invalid(
                    "query string",
                    format!("unknown parameter {other:?}: expected email or email_sha256, and usage"),
                ))
            }
        }
    }
    let usage = match usage {
        Some(u) => parse_usage(&u).map_err(|e| invalid("usage", e))?,
        None => Usage::Encryption,
    };
    let (query, named) = match (email, hash) {
        (Some(e), None) => {
            let q = parse_address(&e).map_err(|why| invalid("email", why))?;
            let shown = match &q {
                AddressQuery::Email(a) => a.as_str().to_string(),
                _ => e,
            };
            (q, Named::Email(shown))
        }
        (None, Some(h)) => {
            let bytes = parse_sha256(&h).map_err(|why| invalid("email_sha256", why))?;
            (AddressQuery::Sha256(bytes), Named::Sha256(hex::encode(bytes)))
        }
        (Some(_), Some(_)) => {
            return Err(DirectoryError::ConflictingParameters(
                "give either email or email_sha256, not both".into(),
            ))
        }
        (None, None) => return Err(DirectoryError::MissingParameter("email or email_sha256")),
    };
    Ok(AddressParams { query, usage, named })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pem,
    Json,
}

impl Format {
    fn tag(self) -> &'static str {
        match self {
            Format::Pem => "pem",
            Format::Json => "json",
        }
    }
}

/// Picks PEM or JSON from `Accept` (RFC 9110 §12.5.1: the most specific matching range gives
/// each type its weight; the higher weight wins, a tie goes to `default`). No `Accept` → `default`.
fn negotiate(req: &HttpRequest, default: Format) -> Result<Format, DirectoryError> {
    let mut ranges = String::new();
    for v in req.headers().get_all(header::ACCEPT) {
        if let Ok(s) = v.to_str() {
            if !ranges.is_empty() {
                ranges.push(',');
            }
            ranges.push_str(s);
        }
    }
    if ranges.trim().is_empty() {
        return Ok(default);
    }
    // (specificity, weight) per offered type.
    let mut pem = (0u8, 0.0f64);
    let mut json = (0u8, 0.0f64);
    for range in ranges.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0;
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                q = v.trim().parse::<f64>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0);
            }
        }
        for (ty, slot) in [(PEM_CHAIN, &mut pem), (JSON, &mut json)] {
            let spec = if media == ty {
                3
            } else if media == "application/*" {
                2
            } else if media == "*/*" {
                1
            } else {
                0
            };
            if spec > slot.0 {
                *slot = (spec, q);
            }
        }
    }
    if pem.1 <= 0.0 && json.1 <= 0.0 {
        return Err(DirectoryError::NotAcceptable {
            offered: "application/pem-certificate-chain or application/json",
        });
    }
    Ok(if json.1 > pem.1 {
        Format::Json
    } else if pem.1 > json.1 {
        Format::Pem
    } else {
        default
    })
}

// ---------------------------------------------------------------------------------------------
// Representations.

#[derive(Serialize)]
struct ExistsBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_sha256: Option<&'a str>,
    usage: &'static str,
    exists: bool,
}

#[derive(Serialize)]
struct RevocationBody {
    revoked_at: String,
    reason: &'static str,
}

#[derive(Serialize)]
struct CertificateBody<'a> {
    email: Option<&'a str>,
    usage: Option<&'static str>,
    kind: &'static str,
    serial: String,
    sha256: String,
    subject: &'a str,
    not_before: String,
    not_after: String,
    status: &'static str,
    revocation: Option<RevocationBody>,
    pem: String,
    chain: Vec<&'a str>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn usage_of(kind: CertKind) -> Option<&'static str> {
    match kind {
        CertKind::Signing => Some("signing"),
        CertKind::Encryption => Some("encryption"),
        _ => None,
    }
}

fn json_body(value: &impl Serialize) -> Result<Vec<u8>, DirectoryError> {
    serde_json::to_vec(value).map_err(|e| DirectoryError::Storage(crate::Error::Corrupt(e.to_string())))
}

/// RFC 9110 §13.1.2: `*` or a list of entity tags, compared weakly.
fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// A certificate as PEM chain or JSON, with `ETag`, `Cache-Control` and `Vary`; 304 when the
/// client's `If-None-Match` names the current representation.
fn certificate_response(
    req: &HttpRequest,
    dir: &Directory,
    rec: &CertRecord,
    format: Format,
    now: DateTime<Utc>,
) -> Result<HttpResponse, DirectoryError> {
    let status = dir.status_of(rec, now);
    // The representation changes with the format and, for by-id answers, the status.
    let etag = format!("\"{}-{}-{}\"", hex::encode(&rec.fingerprint.0[..16]), format.tag(), status.name());
    let headers = |res: &mut actix_web::HttpResponseBuilder| {
        if let Ok(v) = HeaderValue::from_str(&etag) {
            res.insert_header((header::ETAG, v));
        }
        res.insert_header((header::CACHE_CONTROL, CACHE_FETCH));
        res.insert_header((header::VARY, "Accept"));
    };
    if etag_matches(req, &etag) {
        let mut res = HttpResponse::build(StatusCode::NOT_MODIFIED);
        headers(&mut res);
        return Ok(res.finish());
    }
    let chain = dir.chain_pem(rec);
    let leaf = super::pem_certificate(&rec.der);
    let mut res = HttpResponse::Ok();
    headers(&mut res);
    Ok(match format {
        Format::Pem => {
            let mut body = leaf;
            if let Some(c) = chain {
                body.push_str(c);
            }
            res.content_type(PEM_CHAIN).body(body)
        }
        Format::Json => {
            let body = CertificateBody {
                email: rec.email.as_ref().map(|e| e.as_str()),
                usage: usage_of(rec.kind),
                kind: rec.kind.name(),
                serial: rec.serial.to_string(),
                sha256: rec.fingerprint.to_string(),
                subject: &rec.subject,
                not_before: time(rec.not_before),
                not_after: time(rec.not_after),
                status: status.name(),
                revocation: dir
                    .revocation_of(rec)
                    .map(|r| RevocationBody { revoked_at: time(r.at), reason: r.reason.name() }),
                pem: leaf,
                chain: chain.into_iter().collect(),
            };
            res.content_type(JSON).body(json_body(&body)?)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers.

async fn exists(req: HttpRequest, dir: web::Data<Directory>) -> HttpResponse {
    respond(exists_inner(&req, &dir).await)
}

async fn exists_inner(req: &HttpRequest, dir: &Directory) -> Result<HttpResponse, DirectoryError> {
    let client = identify(req, dir)?;
    let p = address_params(req)?;
    charge(dir, &client, 1)?;
    let found = dir.exists_awaited(&p.query, p.usage, dir.now()).await?;
    let body = match &p.named {
        Named::Email(e) => {
            ExistsBody { email: Some(e), email_sha256: None, usage: p.usage.name(), exists: found }
        }
        Named::Sha256(h) => {
            ExistsBody { email: None, email_sha256: Some(h), usage: p.usage.name(), exists: found }
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, CACHE_NONE))
        .content_type(JSON)
        .body(json_body(&body)?))
}

async fn fetch(req: HttpRequest, dir: web::Data<Directory>) -> HttpResponse {
    respond(fetch_inner(&req, &dir).await)
}

async fn fetch_inner(req: &HttpRequest, dir: &Directory) -> Result<HttpResponse, DirectoryError> {
    let client = identify(req, dir)?;
    let p = address_params(req)?;
    let format = negotiate(req, Format::Pem)?;
    charge(dir, &client, 1)?;
    let now = dir.now();
    let rec = dir.newest_valid_awaited(&p.query, p.usage, now).await?.ok_or_else(|| {
        DirectoryError::NotFound(format!("no valid {} certificate for this address", p.usage))
    })?;
    certificate_response(req, dir, &rec, format, now)
}

async fn by_fingerprint(req: HttpRequest, dir: web::Data<Directory>) -> HttpResponse {
    respond(by_fingerprint_inner(&req, &dir))
}

fn by_fingerprint_inner(req: &HttpRequest, dir: &Directory) -> Result<HttpResponse, DirectoryError> {
    let client = identify(req, dir)?;
    let fp = parse_fingerprint(req.match_info().query("fingerprint"))
        .map_err(|why| invalid("fingerprint", why))?;
    let format = negotiate(req, Format::Json)?;
    charge(dir, &client, 1)?;
    let rec = dir
        .by_fingerprint(&fp)?
        .ok_or_else(|| DirectoryError::NotFound("no certificate with this SHA-256 fingerprint".into()))?;
    certificate_response(req, dir, &rec, format, dir.now())
}

async fn by_serial(req: HttpRequest, dir: web::Data<Directory>) -> HttpResponse {
    respond(by_serial_inner(&req, &dir))
}

fn by_serial_inner(req: &HttpRequest, dir: &Directory) -> Result<HttpResponse, DirectoryError> {
    let client = identify(req, dir)?;
    let serial = parse_serial(req.match_info().query("serial")).map_err(|why| invalid("serial", why))?;
    let format = negotiate(req, Format::Json)?;
    charge(dir, &client, 1)?;
    let rec = match serial {
        Some(s) => dir.by_serial(&s)?,
        None => None,
    }
    .ok_or_else(|| DirectoryError::NotFound("no certificate with this serial number".into()))?;
    certificate_response(req, dir, &rec, format, dir.now())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    emails: Vec<String>,
    /// Absent means encryption; `null` is refused like any other non-string.
    #[serde(default, deserialize_with = "present_string")]
    usage: Option<String>,
}

fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

#[derive(Serialize)]
struct BulkEntry {
    email: String,
    exists: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pem: Option<String>,
}

#[derive(Serialize)]
struct BulkBody {
    usage: &'static str,
    results: Vec<BulkEntry>,
}

async fn lookup(req: HttpRequest, payload: web::Payload, dir: web::Data<Directory>) -> HttpResponse {
    respond(lookup_inner(req, payload, dir).await)
}

/// A request's body, refused as [`DirectoryError::BodyTooLarge`] (413 JSON) when it declares or
/// passes `max` bytes, without reading more than that; [`DirectoryError::BodyUnreadable`] when
/// the client's stream fails.
pub async fn read_limited(
    req: &HttpRequest,
    payload: web::Payload,
    max: usize,
) -> Result<web::Bytes, DirectoryError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(DirectoryError::BodyTooLarge { max });
    }
    match payload.to_bytes_limited(max).await {
        Err(_) => Err(DirectoryError::BodyTooLarge { max }),
        Ok(Err(e)) => Err(DirectoryError::BodyUnreadable(
            e.as_error::<actix_web::error::PayloadError>().map_or_else(|| e.to_string(), body_error_text),
        )),
        Ok(Ok(b)) => Ok(b),
    }
}

/// Why a request body could not be read, in one line for the client (actix's own text for a
/// body cut short ends in the `Debug` of an `Option`: "…before completing: None").
pub fn body_error_text(e: &actix_web::error::PayloadError) -> String {
    match e {
        actix_web::error::PayloadError::Incomplete(_) => {
            "the body ended before its declared length or its last chunk".into()
        }
        other => other.to_string(),
    }
}

async fn lookup_inner(
    req: HttpRequest,
    payload: web::Payload,
    dir: web::Data<Directory>,
) -> Result<HttpResponse, DirectoryError> {
    let client = identify(&req, &dir)?;
    if matches!(client, Client::Anonymous { .. }) {
        return Err(DirectoryError::KeyRequired("bulk lookup"));
    }
    let body = read_limited(&req, payload, MAX_BODY_BYTES).await?;
    let parsed: BulkRequest =
        serde_json::from_slice(&body).map_err(|e| DirectoryError::InvalidJson(e.to_string()))?;
    if parsed.emails.len() > MAX_BULK {
        return Err(DirectoryError::TooManyAddresses { count: parsed.emails.len(), max: MAX_BULK });
    }
    let usage = match &parsed.usage {
        Some(u) => parse_usage(u).map_err(|e| invalid("usage", e))?,
        None => Usage::Encryption,
    };
    let queries = parsed
        .emails
        .iter()
        .enumerate()
        .map(|(i, e)| parse_address(e).map_err(|why| invalid(&format!("emails[{i}]"), why)))
        .collect::<Result<Vec<_>, _>>()?;
    charge(&dir, &client, queries.len())?;
    let now = dir.now();
    let worker = dir.clone().into_inner();
    let found = web::block(move || worker.bulk(&queries, usage, now))
        .await
        .map_err(|e| DirectoryError::Storage(crate::Error::Db(format!("lookup worker: {e}"))))??;
    let results = parsed
        .emails
        .into_iter()
        .zip(found)
        .map(|(email, rec)| match rec {
            Some(r) => BulkEntry {
                email,
                exists: true,
                sha256: Some(r.fingerprint.to_string()),
                not_after: Some(time(r.not_after)),
                pem: Some(super::pem_certificate(&r.der)),
            },
            None => BulkEntry { email, exists: false, sha256: None, not_after: None, pem: None },
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, CACHE_NONE))
        .content_type(JSON)
        .body(json_body(&BulkBody { usage: usage.name(), results })?))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .content_type(JSON)
        .body(super::openapi_document())
}
