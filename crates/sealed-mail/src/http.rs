//! The HTTP scope `/api/v1/mail`: `POST /seal` and `POST /seal/bulk`.
//!
//! Order of checks: who is asking (401) and may they send mail (403), the body read up to its
//! limit (413, counted while reading, so an oversized body is never held whole), the JSON and
//! every field (400), the quota (429, one unit per message to seal; a bulk request's invalid
//! messages are answered 400 each and not counted), then sealing. Errors become answers
//! only through [`Error::status`] and [`Error::body`]; nothing of a body is logged.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use cerdb::directory::{ApiKeyRecord, ApiKeySecret, ApiPermission, ClientId, Directory, RateLimiter};
use cerdb::EmailAddress;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::envelope::ContentCipher;
use crate::mime::{Attachment, Content, HeaderText, MediaType, MAX_FILENAME_CHARS, MAX_SUBJECT_CHARS};
use crate::seal::{DeliveryRecord, Made, SealRequest, Sealed, Sealer};
use crate::Error;

/// The most messages one bulk request may carry.
pub const MAX_BULK: usize = 1_000;

/// Size limits of requests.
#[derive(Debug, Clone, Copy)]
pub struct MailLimits {
    /// The largest body of `POST /seal`, bytes.
    pub max_body: usize,
    /// The largest body of `POST /seal/bulk`, bytes.
    pub max_bulk_body: usize,
    /// The most `POST /seal/bulk` requests handled at a time; more are refused with 503 and
    /// `Retry-After` before their body is read. A bulk request holds its body, its messages and
    /// its answer in memory at once, about three times its body at the peak.
    pub max_bulk_at_once: usize,
}

impl Default for MailLimits {
    /// 16 MiB for one message (a statement with its PDF, base64-encoded), 256 MiB for a bulk run,
    /// four bulk runs at a time.
    fn default() -> Self {
        MailLimits { max_body: 16 << 20, max_bulk_body: 256 << 20, max_bulk_at_once: 4 }
    }
}

/// How long a bulk request refused as one too many is told to wait: a run of 1,000 statements
/// takes about a second on two cores (BENCHMARKS.md).
const BULK_RETRY_AFTER_SECS: u64 = 1;

/// Sends messages through the configured relay.
pub trait Delivery: Send + Sync {
    /// A session for messages handed over one after another (a bulk request's): it may keep one
    /// connection to the relay for all of them, and lets go of it (kept for a later session, or
    /// closed) when dropped.
    fn session(&self) -> Box<dyn DeliverySession + '_>;

    /// How many sessions a bulk request hands its messages over at once (one connection each).
    fn connections(&self) -> usize {
        1
    }

    /// Hands one `message` to the relay for `to`, enveloped from `from`, in a session of its own;
    /// the relay's queue id.
    fn deliver(&self, from: &EmailAddress, to: &EmailAddress, message: &[u8]) -> Result<String, Error> {
        self.session().deliver(from, to, message)
    }
}

/// Messages handed to the relay one after another ([`Delivery::session`]).
pub trait DeliverySession {
    /// Hands `message` to the relay for `to`, enveloped from `from`; the relay's queue id.
    fn deliver(&mut self, from: &EmailAddress, to: &EmailAddress, message: &[u8]) -> Result<String, Error>;
}

/// The state behind the routes.
pub struct MailService {
    sealer: Sealer,
    directory: Arc<Directory>,
    limiter: RateLimiter,
    limits: MailLimits,
    delivery: Option<Arc<dyn Delivery>>,
    /// One permit for each bulk request being handled, of [`MailLimits::max_bulk_at_once`]; a
    /// permit goes with the request's answer and is given back when actix drops it (sent, or the
    /// connection gone).
    bulk_slots: Arc<Semaphore>,
}

impl std::fmt::Debug for MailService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailService").finish_non_exhaustive()
    }
}

impl MailService {
    /// The service: `sealer` makes the messages, `directory` knows the API keys, `delivery`
    /// sends when asked.
    pub fn new(
        sealer: Sealer,
        directory: Arc<Directory>,
        limits: MailLimits,
        delivery: Option<Arc<dyn Delivery>>,
    ) -> Self {
        let bulk_slots = Arc::new(Semaphore::new(limits.max_bulk_at_once));
        MailService { sealer, directory, limiter: RateLimiter::new(), limits, delivery, bulk_slots }
    }
}

/// Mounts `/api/v1/mail/seal`, `/api/v1/mail/seal/bulk` and `/api/v1/mail/openapi.json`.
pub fn configure(svc: Arc<MailService>) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("/api/v1/mail")
                .app_data(web::Data::from(svc.clone()))
                // The body is read here, within the service's own limits.
                .app_data(web::PayloadConfig::new(usize::MAX))
                .service(
                    web::resource("/seal")
                        .route(web::post().to(seal_one))
                        .default_service(web::to(|| async { not_allowed() })),
                )
                .service(
                    web::resource("/seal/bulk")
                        .route(web::post().to(seal_bulk))
                        .default_service(web::to(|| async { not_allowed() })),
                )
                .service(cerdb::directory::get_only("/openapi.json", openapi)),
            // Another path under the scope falls to `pki serve`'s JSON 404, as every path does.
        );
    }
}

fn json(status: u16, body: serde_json::Value) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(code).content_type("application/json").body(body.to_string())
}

fn not_allowed() -> HttpResponse {
    let mut r = json(405, serde_json::json!({"error": "method not allowed: use POST"}));
    r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    r
}

/// `GET /api/v1/mail/openapi.json`: the document of these endpoints ([`crate::openapi`]).
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .content_type("application/json")
        .body(crate::openapi_document())
}

/// The answer of a request without an API key.
const NO_KEY: &str = "an API key is required";

fn error_response(e: &Error) -> HttpResponse {
    // A bulk request refused as one too many is load, not a failure (logged where it is refused).
    if e.status() >= 500 && !matches!(e, Error::Busy { .. }) {
        tracing::error!(error = %e, "sealed mail failed");
    }
    let mut r = json(e.status(), e.body());
    if let Error::RateLimited { retry_after_secs } | Error::Busy { retry_after_secs, .. } = e {
        if let Ok(v) = header::HeaderValue::from_str(&retry_after_secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    // RFC 6750 §3: the challenge, with `invalid_token` when a key was given.
    if let Error::Unauthorized(why) = e {
        let challenge = match *why == NO_KEY {
            true => "Bearer",
            false => "Bearer error=\"invalid_token\"",
        };
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static(challenge));
    }
    r
}

/// The live API key of the request, with the mail permission.
fn authorize(
    req: &HttpRequest,
    svc: &MailService,
) -> Result<(cerdb::directory::ApiKeyHash, ApiKeyRecord), Error> {
    let v = req.headers().get(header::AUTHORIZATION).ok_or(Error::Unauthorized(NO_KEY))?;
    let text = v.to_str().map_err(|_| Error::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = text.trim().split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::Unauthorized("the Authorization scheme must be Bearer"));
    }
    let secret: ApiKeySecret = token.trim().parse().map_err(|_| Error::Unauthorized("malformed API key"))?;
    let (hash, rec) = svc
        .directory
        .keys()
        .authenticate(&secret)
        .map_err(|e| Error::Internal(e.to_string()))?
        .ok_or(Error::Unauthorized("unknown or revoked API key"))?;
    if !rec.may(ApiPermission::Mail) {
        return Err(Error::NoMailPermission);
    }
    Ok((hash, rec))
}

/// Reads the body, refusing it as soon as it passes `limit` bytes.
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, Error> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::TooLarge { limit });
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Error::BadJson(format!("the body could not be read: {}", cerdb::directory::body_error_text(&e)))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One message as the client sends it, its attachments' base64 borrowed from the body (base64
/// holds nothing JSON escapes, so the hundreds of kilobytes of a statement are not copied before
/// they are decoded).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealJson<'a> {
    to: String,
    sender: String,
    subject: String,
    text: String,
    #[serde(default)]
    html: Option<String>,
    #[serde(default, borrow)]
    attachments: Vec<AttachmentJson<'a>>,
    #[serde(default)]
    timestamp: bool,
    #[serde(default)]
    fallback: Option<String>,
    #[serde(default)]
    deliver: bool,
    #[serde(default)]
    encryption: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentJson<'a> {
    filename: String,
    content_type: String,
    #[serde(borrow)]
    base64: Cow<'a, str>,
}

/// A bulk request: each message kept as its raw JSON text, so the one pass over the whole body
/// only finds where each message begins and ends, and the messages are then read on every core.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkJson<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

/// One message of a bulk request, checked, and whether to deliver it.
type Parsed = Result<(SealRequest, bool), Error>;

/// One message sealed, with the relay's queue id when delivered.
type Answered = (SealRequest, Sealed, Option<String>);

/// The most attachments one message may carry.
pub(crate) const MAX_ATTACHMENTS: usize = 100;

fn checked(j: SealJson<'_>) -> Result<(SealRequest, bool), Error> {
    let bad = |field: &'static str, reason: String| Error::BadInput { field, reason };
    let to: EmailAddress = j.to.parse().map_err(|e: cerdb::Error| bad("to", e.to_string()))?;
    let sender = j.sender.parse().map_err(|e: cerdb::Error| bad("sender", e.to_string()))?;
    let subject = HeaderText::parse("subject", &j.subject, MAX_SUBJECT_CHARS)?;
    let fallback_invitation = match j.fallback.as_deref() {
        None => false,
        Some("invitation") => true,
        Some(other) => {
            return Err(bad("fallback", format!("{other:?} is not a fallback: expected invitation")))
        }
    };
    let cipher = match j.encryption.as_deref() {
        None => ContentCipher::default(),
        Some(name) => ContentCipher::from_name(name).ok_or_else(|| {
            bad("encryption", format!("{name:?} is not offered: expected aes-256-cbc or aes-256-gcm"))
        })?,
    };
    if j.attachments.len() > MAX_ATTACHMENTS {
        return Err(bad("attachments", format!("more than {MAX_ATTACHMENTS}")));
    }
    let mut attachments = Vec::with_capacity(j.attachments.len());
    for (i, a) in j.attachments.into_iter().enumerate() {
        let filename = HeaderText::parse("filename", &a.filename, MAX_FILENAME_CHARS)?;
        let content_type = MediaType::parse(&a.content_type)?;
        attachments.push(
            Attachment::from_base64(filename, content_type, &a.base64)
                .map_err(|e| bad("attachments", format!("[{i}].base64 is not base64: {e}")))?,
        );
    }
    Ok((
        SealRequest {
            to,
            sender,
            subject,
            content: Content { text: j.text, html: j.html, attachments },
            timestamp: j.timestamp,
            fallback_invitation,
            cipher,
        },
        j.deliver,
    ))
}

fn parse_one(bytes: &[u8]) -> Result<(SealRequest, bool), Error> {
    let j: SealJson<'_> = serde_json::from_slice(bytes).map_err(|e| Error::BadJson(e.to_string()))?;
    checked(j)
}

/// A bulk request's messages, each checked on its own (a bad one is answered in its place), on
/// every core; the whole request refused when it is not `{"messages": [...]}` with 1 to
/// [`MAX_BULK`] messages.
fn parse_bulk(bytes: &[u8]) -> Result<Vec<Parsed>, Error> {
    let bulk: BulkJson<'_> = serde_json::from_slice(bytes).map_err(|e| Error::BadJson(e.to_string()))?;
    if bulk.messages.is_empty() || bulk.messages.len() > MAX_BULK {
        return Err(Error::BadInput {
            field: "messages",
            reason: format!("must hold 1 to {MAX_BULK} messages"),
        });
    }
    Ok(crate::seal::on_every_core(bulk.messages, |m| parse_one(m.get().as_bytes())))
}

fn charge(
    svc: &MailService,
    hash: &cerdb::directory::ApiKeyHash,
    rec: &ApiKeyRecord,
    cost: usize,
) -> Result<(), Error> {
    let verdict =
        svc.limiter.admit(ClientId::Key(hash.0), rec.rate, rec.burst, cost.max(1) as f64, Instant::now());
    match verdict.retry_after_secs() {
        None => Ok(()),
        Some(retry_after_secs) => Err(Error::RateLimited { retry_after_secs }),
    }
}

fn wants_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// Parses one request's body and makes its message ([`Sealer::make`]): the CPU's work of a
/// single request.
fn make(
    svc: &MailService,
    hash: &cerdb::directory::ApiKeyHash,
    rec: &ApiKeyRecord,
    body: Vec<u8>,
) -> Result<(SealRequest, bool, Made), Error> {
    let (request, deliver) = parse_one(&body)?;
    drop(body);
    charge(svc, hash, rec, 1)?;
    if deliver && svc.delivery.is_none() {
        return Err(Error::DeliveryUnavailable);
    }
    let made = svc.sealer.make(&rec.name, &request)?;
    Ok((request, deliver, made))
}

/// Commits a made message with the messages made meanwhile ([`Sealer::commit`]: its
/// durable records), then, when asked, delivers it on the blocking pool and records what became
/// of it ([`Sealer::record_delivery`]) before answering.
async fn commit(
    svc: Arc<MailService>,
    key: String,
    req: SealRequest,
    deliver: bool,
    made: Made,
) -> Result<Answered, Error> {
    let sealed = svc.sealer.commit(made).await?;
    if !deliver {
        return Ok((req, sealed, None));
    }
    let worker = svc.clone();
    let (answer, record) = web::block(move || delivered(&worker, &key, req, sealed))
        .await
        .map_err(|_| Error::Internal("the delivery worker failed".into()))?;
    // The relay has taken the message or it has not, and the answer says which whatever this
    // write gives: answering an error for a message delivered would only have it sent twice.
    // A failed write is logged by the committer.
    if svc.sealer.record_delivery(record).await.is_err() {
        tracing::warn!("a delivery is answered without its audit entry");
    }
    answer
}

/// A message handed to the relay, with the relay's queue id; and the audit record of what
/// became of it.
fn delivered(
    svc: &MailService,
    key: &str,
    req: SealRequest,
    sealed: Sealed,
) -> (Result<Answered, Error>, DeliveryRecord) {
    let sent = match svc.delivery.as_ref() {
        Some(d) => d.deliver(&sealed.from, &req.to, &sealed.message),
        None => Err(Error::DeliveryUnavailable),
    };
    let record = DeliveryRecord::new(key, &sealed.message_id, &req.to, &sent);
    let answer = match sent {
        Ok(id) => Ok((req, sealed, Some(id))),
        Err(e) => Err(not_delivered(e, &req, &sealed)),
    };
    (answer, record)
}

/// `cause`, with the message that was sealed and not delivered ([`Error::NotDelivered`]).
fn not_delivered(cause: Error, req: &SealRequest, s: &Sealed) -> Error {
    let mut sealed = description(req, s, None, None);
    sealed["message_base64"] = serde_json::json!(base64_simd::STANDARD.encode_to_string(&s.message));
    Error::NotDelivered { cause: Box::new(cause), sealed: Box::new(sealed) }
}

/// A bulk request's messages, sealed, each handed to the relay when it asked for delivery: over
/// up to [`Delivery::connections`] sessions at once, each taking the next message of the request
/// (one connection a session while the relay serves). Once the relay cannot be reached or refuses
/// the login, no further message is tried (each would wait out the relay's timeout, or be one
/// more failed login): they are answered at once, naming the message that found it so; messages
/// then being handed over on other connections answer for themselves. Answers in order, and the
/// audit records of what became of each message asked to be delivered, in order, for the API
/// key `key`.
fn deliver_bulk(
    delivery: Option<&dyn Delivery>,
    key: &str,
    items: Vec<Result<(SealRequest, bool, Sealed), Error>>,
) -> (Vec<Result<Answered, Error>>, Vec<DeliveryRecord>) {
    use std::sync::{Mutex, PoisonError};
    let mut answers: Vec<Option<Result<Answered, Error>>> = Vec::with_capacity(items.len());
    let mut records: Vec<(usize, DeliveryRecord)> = Vec::new();
    let mut jobs: Vec<(usize, SealRequest, Sealed)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        answers.push(match item {
            Err(e) => Some(Err(e)),
            Ok((r, false, s)) => Some(Ok((r, s, None))),
            Ok((r, true, s)) if delivery.is_none() => {
                let none = Err(Error::DeliveryUnavailable);
                records.push((i, DeliveryRecord::new(key, &s.message_id, &r.to, &none)));
                Some(Err(not_delivered(Error::DeliveryUnavailable, &r, &s)))
            }
            Ok((r, true, s)) => {
                jobs.push((i, r, s));
                None
            }
        });
    }
    if let Some(d) = delivery.filter(|_| !jobs.is_empty()) {
        let workers = d.connections().clamp(1, jobs.len());
        // Each session takes the next message to deliver, in the request's order.
        let next = Mutex::new(jobs.into_iter());
        // The first message (1-based) that found the relay unusable, and whether by its login.
        let unusable: Mutex<Option<(usize, bool)>> = Mutex::new(None);
        let work = || {
            let mut session: Option<Box<dyn DeliverySession + '_>> = None;
            let mut done = Vec::new();
            loop {
                let Some((i, r, s)) = next.lock().unwrap_or_else(PoisonError::into_inner).next() else {
                    break;
                };
                let found = *unusable.lock().unwrap_or_else(PoisonError::into_inner);
                let sent = match found {
                    Some((first, false)) => Err(Error::RelayUnreachable(format!(
                        "not tried: message {first} of this request could not reach it"
                    ))),
                    Some((first, true)) => Err(Error::RelayLogin(format!(
                        "not tried: message {first} of this request was refused it"
                    ))),
                    None => {
                        let relay = session.get_or_insert_with(|| d.session());
                        let sent = relay.deliver(&s.from, &r.to, &s.message);
                        let kind = match &sent {
                            Err(Error::RelayUnreachable(_)) => Some(false),
                            Err(Error::RelayLogin(_)) => Some(true),
                            _ => None,
                        };
                        if let Some(login) = kind {
                            unusable
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .get_or_insert((i + 1, login));
                        }
                        sent
                    }
                };
                let record = DeliveryRecord::new(key, &s.message_id, &r.to, &sent);
                let answer = match sent {
                    Ok(id) => Ok((r, s, Some(id))),
                    Err(e) => Err(not_delivered(e, &r, &s)),
                };
                done.push((i, answer, record));
            }
            done
        };
        let done: Vec<(usize, Result<Answered, Error>, DeliveryRecord)> = std::thread::scope(|scope| {
            let others: Vec<_> = (1..workers).map(|_| scope.spawn(work)).collect();
            let mut done = work();
            for other in others {
                done.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            }
            done
        });
        for (i, answer, record) in done {
            answers[i] = Some(answer);
            records.push((i, record));
        }
    }
    records.sort_by_key(|(i, _)| *i);
    let answers = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(Error::Internal("a bulk answer is missing".into()))))
        .collect();
    (answers, records.into_iter().map(|(_, r)| r).collect())
}

/// The JSON description of a made message, `status` added when given (the bulk answer's). The
/// message's base64 is written straight into the text: it is the bulk of the answer (hundreds of
/// kilobytes a message), and base64 needs no JSON escaping, so it is neither copied into a JSON
/// value nor scanned again by the serialiser.
fn describe(req: &SealRequest, s: &Sealed, queue_id: Option<&str>, status: Option<u16>) -> String {
    let fields = description(req, s, queue_id, status).to_string();
    let mut out = String::with_capacity(fields.len() + s.message.len().div_ceil(3) * 4 + 24);
    // `fields` is an object: its closing brace is replaced by the message and a new one.
    out.push_str(&fields[..fields.len() - 1]);
    out.push_str(",\"message_base64\":\"");
    base64_simd::STANDARD.encode_append(&s.message, &mut out);
    out.push_str("\"}");
    out
}

/// The fields of [`describe`] but the message.
fn description(
    req: &SealRequest,
    s: &Sealed,
    queue_id: Option<&str>,
    status: Option<u16>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "kind": s.kind.name(),
        "message_id": s.message_id,
        "from": s.from.as_str(),
        "to": req.to.as_str(),
        "content_type": "message/rfc822",
    });
    if let Some(serial) = &s.certificate_serial {
        v["certificate_serial"] = serde_json::json!(serial.to_string());
    }
    if let Some(t) = &s.timestamp_serial {
        v["timestamp_serial"] = serde_json::json!(t);
    }
    if let Some(q) = queue_id {
        v["queue_id"] = serde_json::json!(q);
    }
    if let Some(code) = status {
        v["status"] = serde_json::json!(code);
    }
    v
}

async fn seal_one(req: HttpRequest, payload: web::Payload, svc: web::Data<MailService>) -> HttpResponse {
    let svc = svc.into_inner();
    let (hash, rec) = match authorize(&req, &svc) {
        Ok(k) => k,
        Err(e) => return error_response(&e),
    };
    let body = match read_body(&req, payload, svc.limits.max_body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let as_json = wants_json(&req);
    let rec_name = rec.name.to_string();
    // A statement's message is made on this worker, by the thread that read its body and will
    // write its answer: about a millisecond of CPU, as a TLS handshake is, and the message's
    // bytes stay in this core's cache. A larger body is made on the blocking pool, so that no
    // worker is held up for long. Its durable records are then written with those of the other
    // messages made meanwhile, while this worker goes on with other requests.
    let made = if body.len() <= INLINE_BODY {
        // A panic here is answered by `pki serve`'s middleware (a 500 JSON error), as in any
        // handler; one on the blocking pool comes back as the `Err` below.
        make(&svc, &hash, &rec, body)
    } else {
        let svc = svc.clone();
        web::block(move || make(&svc, &hash, &rec, body))
            .await
            .unwrap_or_else(|_| Err(Error::Internal("the sealing worker failed".into())))
    };
    let result = match made {
        Ok((request, deliver, made)) => commit(svc, rec_name, request, deliver, made).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((request, s, q)) => describe_or_raw(&request, s, q, as_json),
        Err(e) => error_response(&e),
    }
}

/// The largest body of a single request whose message is made on the HTTP worker that read it
/// (a statement with its PDF is 140 KB); larger ones are made on the blocking pool.
const INLINE_BODY: usize = 512 << 10;

fn describe_or_raw(req: &SealRequest, s: Sealed, queue_id: Option<String>, as_json: bool) -> HttpResponse {
    if as_json {
        return HttpResponse::Ok().content_type("application/json").body(describe(
            req,
            &s,
            queue_id.as_deref(),
            None,
        ));
    }
    let mut r = HttpResponse::Ok();
    r.content_type("message/rfc822")
        .insert_header(("Pki-Mail-Kind", s.kind.name()))
        .insert_header(("Pki-Message-Id", s.message_id.clone()));
    if let Some(q) = queue_id {
        r.insert_header(("Pki-Queue-Id", q));
    }
    r.body(s.message)
}

/// How a bulk request's answers are written: JSON (`{"results": [...]}`, each message
/// base64-encoded in `message_base64`), or with `Accept: multipart/mixed` a MIME multipart whose
/// parts are the messages themselves (`message/rfc822`, ready for a relay) or their errors
/// (`application/json`), in order, each with its `Pki-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkForm {
    Json,
    Multipart,
}

impl BulkForm {
    fn of(req: &HttpRequest) -> Self {
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        match accept.to_ascii_lowercase().contains("multipart/mixed") {
            true => BulkForm::Multipart,
            false => BulkForm::Json,
        }
    }
}

/// One message's answer in a bulk answer of `form`, as the chunks it is written in: a multipart
/// part's message goes as its own chunk, never copied or encoded again.
fn bulk_part(form: BulkForm, one: Result<Answered, Error>) -> Vec<Bytes> {
    match (form, one) {
        (BulkForm::Json, Ok((r, s, queue_id))) => {
            vec![Bytes::from(describe(&r, &s, queue_id.as_deref(), Some(200)))]
        }
        (BulkForm::Multipart, Ok((_, s, queue_id))) => {
            let mut head = format!(
                "Content-Type: message/rfc822\r\nPki-Status: 200\r\nPki-Mail-Kind: {}\r\n",
                s.kind.name()
            );
            let fields = [
                ("Pki-Message-Id", Some(s.message_id)),
                ("Pki-Certificate-Serial", s.certificate_serial.as_ref().map(|c| c.to_string())),
                ("Pki-Timestamp-Serial", s.timestamp_serial.clone()),
                ("Pki-Queue-Id", queue_id),
            ];
            for (name, value) in fields {
                if let Some(v) = value {
                    head.push_str(&format!("{name}: {}\r\n", field_value(&v)));
                }
            }
            head.push_str("\r\n");
            vec![Bytes::from(head), Bytes::from(s.message)]
        }
        (form, Err(e)) => {
            if e.status() >= 500 {
                tracing::error!(error = %e, "sealed mail failed");
            }
            let mut v = e.body();
            v["status"] = serde_json::json!(e.status());
            match form {
                BulkForm::Json => vec![Bytes::from(v.to_string())],
                BulkForm::Multipart => vec![
                    Bytes::from(format!(
                        "Content-Type: application/json\r\nPki-Status: {}\r\n\r\n",
                        e.status()
                    )),
                    Bytes::from(v.to_string()),
                ],
            }
        }
    }
}

/// A header field's value as printable ASCII alone (a relay's queue id is not ours to trust, and
/// the others are checked again here): nothing in it can end the field or the part.
fn field_value(v: &str) -> String {
    v.chars().filter(|c| c.is_ascii_graphic()).collect()
}

/// The answer of a bulk request from its messages' parts ([`bulk_part`]), written out one after
/// the other instead of joined into one buffer first: a bulk answer is tens of megabytes, and
/// joining would copy it all once more. Its length is known, so it goes with `Content-Length`.
/// The request's `slot` goes with it, given back when actix drops the answer.
fn bulk_answer(
    form: BulkForm,
    parts: Vec<Vec<Bytes>>,
    slot: OwnedSemaphorePermit,
) -> Result<HttpResponse, Error> {
    let (content_type, open, between, close) = match form {
        BulkForm::Json => {
            ("application/json".to_string(), "{\"results\":[".to_string(), ",".to_string(), "]}".to_string())
        }
        BulkForm::Multipart => {
            // The boundary cannot occur in a part: base64 never holds "=_", the messages' own
            // boundaries are "=_signed_…", and its random half is unknown to the senders of the
            // subjects and texts.
            let mut random = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
                .map_err(|_| Error::Internal("no randomness".into()))?;
            let b = format!("=_bulk_{}", hex::encode(random));
            (
                format!("multipart/mixed; boundary=\"{b}\""),
                format!("--{b}\r\n"),
                format!("\r\n--{b}\r\n"),
                format!("\r\n--{b}--\r\n"),
            )
        }
    };
    let (open, between, close) = (Bytes::from(open), Bytes::from(between), Bytes::from(close));
    let len = open.len()
        + close.len()
        + parts.iter().flatten().map(Bytes::len).sum::<usize>()
        + parts.len().saturating_sub(1) * between.len();
    let chunks = parts.into_iter().enumerate().flat_map(move |(i, part)| {
        let sep = (i > 0).then(|| between.clone());
        sep.into_iter().chain(part)
    });
    let all = std::iter::once(open).chain(chunks).chain(std::iter::once(close)).map(move |chunk| {
        let _held: &OwnedSemaphorePermit = &slot;
        Ok::<_, std::convert::Infallible>(chunk)
    });
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .body(SizedStream::new(len as u64, futures_util::stream::iter(all))))
}

async fn seal_bulk(req: HttpRequest, payload: web::Payload, svc: web::Data<MailService>) -> HttpResponse {
    let svc = svc.into_inner();
    let (hash, rec) = match authorize(&req, &svc) {
        Ok(k) => k,
        Err(e) => return error_response(&e),
    };
    // Taken before the body is read, so a request refused holds no memory; not waited for, so
    // no request's body deadline runs out in a queue.
    let limit = svc.limits.max_bulk_at_once;
    let Ok(slot) = svc.bulk_slots.clone().try_acquire_owned() else {
        tracing::info!(limit, "a bulk request refused: as many as allowed are being handled");
        return error_response(&Error::Busy { limit, retry_after_secs: BULK_RETRY_AFTER_SECS });
    };
    let body = match read_body(&req, payload, svc.limits.max_bulk_body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let form = BulkForm::of(&req);
    let result = web::block(move || {
        let parsed = parse_bulk(&body)?;
        drop(body);
        // The quota counts the messages that will be sealed, as a single request's does: one
        // refused as invalid (its own 400 in the answer) costs nothing. A request costs at least
        // one unit, even when every message in it is refused.
        charge(&svc, &hash, &rec, parsed.iter().filter(|p| p.is_ok()).count())?;
        let valid: Vec<&SealRequest> =
            parsed.iter().filter_map(|p| p.as_ref().ok().map(|(r, _)| r)).collect();
        let mut sealed = svc.sealer.seal_many(&rec.name, &valid).into_iter();
        let answers: Vec<(Parsed, Option<Result<Sealed, Error>>)> = parsed
            .into_iter()
            .map(|p| {
                let s = p.is_ok().then(|| {
                    sealed.next().unwrap_or_else(|| Err(Error::Internal("a bulk answer is missing".into())))
                });
                (p, s)
            })
            .collect();
        let items = answers
            .into_iter()
            .map(|(p, s)| {
                let (r, deliver) = p?;
                let s = s.unwrap_or_else(|| Err(Error::Internal("a bulk answer is missing".into())))?;
                Ok((r, deliver, s))
            })
            .collect();
        let (delivered, records) = deliver_bulk(svc.delivery.as_deref(), &rec.name.to_string(), items);
        // As for a single message, the answers say what the relay did whatever this write gives.
        if let Err(e) = svc.sealer.record_deliveries(&records) {
            tracing::error!(error = %e, messages = records.len(), "the audit entries of deliveries could not be written; the answers are sent without them");
        }
        // Each answer written (in JSON, its message base64-encoded) on every core, then joined.
        Ok(crate::seal::on_every_core(delivered, |one| bulk_part(form, one)))
    })
    .await;
    match result {
        Ok(Ok(parts)) => bulk_answer(form, parts, slot).unwrap_or_else(|e| error_response(&e)),
        Ok(Err(e)) => error_response(&e),
        Err(_) => error_response(&Error::Internal("the sealing worker failed".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({"to": "a@example.com", "sender": "statements", "subject": "S", "text": "T"})
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        assert!(parse_one(base().to_string().as_bytes()).is_ok());
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!({"to": "x"}), "missing"),
            (serde_json::json!({"to": "not an address", "sender": "s", "subject": "S", "text": "T"}), "to"),
            (
                serde_json::json!({"to": "a@example.com", "sender": "Bad Name", "subject": "S", "text": "T"}),
                "sender",
            ),
            (
                serde_json::json!({"to": "a@example.com", "sender": "s", "subject": "S\r\nBcc: x@y", "text": "T"}),
                "subject",
            ),
            (
                serde_json::json!({"to": "a@example.com", "sender": "s", "subject": "S", "text": "T", "fallback": "sms"}),
                "fallback",
            ),
            (
                serde_json::json!({"to": "a@example.com", "sender": "s", "subject": "S", "text": "T", "encryption": "des-cbc"}),
                "encryption",
            ),
            (
                serde_json::json!({"to": "a@example.com", "sender": "s", "subject": "S", "text": "T", "encryption": 256}),
                "invalid type",
            ),
            (
                serde_json::json!({"to": "a@example.com", "sender": "s", "subject": "S", "text": "T", "extra": 1}),
                "unknown",
            ),
            (
                serde_json::json!({"to": "a@example.com", "sender": "s", "subject": "S", "text": "T",
                "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "base64": "!!!"}]}),
                "base64",
            ),
            (
                serde_json::json!({"to": "a@example.com", "sender": "s", "subject": "S", "text": "T",
                "attachments": [{"filename": "a\n.pdf", "content_type": "application/pdf", "base64": ""}]}),
                "filename",
            ),
            (
                serde_json::json!({"to": "a@example.com", "sender": "s", "subject": "S", "text": "T",
                "attachments": [{"filename": "a.pdf", "content_type": "pdf", "base64": ""}]}),
                "content_type",
            ),
        ];
        for (v, what) in cases {
            let e = parse_one(v.to_string().as_bytes()).expect_err(what);
            assert_eq!(e.status(), 400, "{what}: {e}");
        }
    }

    /// Base64 is read from the body without a copy when it holds no escape, and still read
    /// right when a client escapes its slashes (`\/`, as some JSON encoders do).
    #[test]
    fn attachments_read_alike_with_and_without_escaped_slashes() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let b64 = base64_simd::STANDARD.encode_to_string(&data);
        assert!(b64.contains('/'), "the fixture must hold slashes");
        let mut v = base();
        v["attachments"] =
            serde_json::json!([{"filename": "a.bin", "content_type": "application/pdf", "base64": b64}]);
        let plain = v.to_string();
        let escaped = plain.replace('/', "\\/");
        assert_ne!(plain, escaped);
        for body in [plain, escaped] {
            let (r, _) = parse_one(body.as_bytes()).expect("a valid request");
            let a = &r.content.attachments[0];
            assert_eq!((a.base64(), a.len()), (b64.as_str(), data.len()));
        }
    }

    /// A bulk request: its messages read one by one, a bad one answered in its place; the whole
    /// request refused with 400 when it is not `{"messages": [...]}` of 1 to 1,000 messages.
    #[test]
    fn bulk_requests_are_read_message_by_message() {
        let mut bad = base();
        bad["to"] = serde_json::json!("not an address");
        let body = serde_json::json!({"messages": [base(), bad, 7, base()]}).to_string();
        let parsed = parse_bulk(body.as_bytes()).expect("a bulk request");
        let status: Vec<u16> =
            parsed.iter().map(|p| p.as_ref().map_or_else(|e| e.status(), |_| 200)).collect();
        assert_eq!(status, [200, 400, 400, 200]);
        assert!(parsed[1].as_ref().unwrap_err().to_string().contains("to"), "{:?}", parsed[1]);
        let many = format!("{{\"messages\": [{}]}}", vec!["{}"; MAX_BULK + 1].join(","));
        for (body, want) in [
            ("{\"messages\": []}".to_string(), "1 to 1000"),
            (many, "1 to 1000"),
            ("{\"messages\": 3}".to_string(), "invalid type"),
            ("{\"messages\": [], \"extra\": 1}".to_string(), "unknown field"),
            ("[1, 2]".to_string(), "invalid type"),
            ("{\"messages\": [{\"to\": ".to_string(), "EOF"),
        ] {
            let e = parse_bulk(body.as_bytes()).expect_err(&body);
            assert_eq!(e.status(), 400, "{body}: {e}");
            assert!(e.to_string().contains(want), "{body}: {e}");
        }
    }

    /// A relay's queue id goes into a part's header field as printable ASCII alone: a line
    /// break in it cannot end the field, nor the part.
    #[test]
    fn a_queue_id_cannot_break_a_multipart_part() {
        assert_eq!(
            field_value("4XyZ1\r\n\r\n--=_bulk_x--\r\nPki-Status: 200"),
            "4XyZ1--=_bulk_x--Pki-Status:200"
        );
        assert_eq!(field_value("Q-1\u{0}\u{7f}é"), "Q-1");
    }

    #[test]
    fn garbage_and_truncated_bodies_are_400_never_a_panic() {
        let full = base().to_string();
        for cut in 0..full.len() {
            if let Err(e) = parse_one(&full.as_bytes()[..cut]) {
                assert_eq!(e.status(), 400);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in [1usize, 7, 100, 4096] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            assert_eq!(parse_one(&bytes).expect_err("garbage").status(), 400);
        }
    }
}
