//! The HTTP listeners against slow and greedy clients, and against a handler that panics.
//!
//! * Connections are counted per client address (an IPv6 /64 counts as one) when they open
//!   ([`Connections::on_connect`]); a connection above `[server] max_connections_per_address`
//!   gets `503` with `Connection: close` at its first request, before anything reads its body.
//!   Counting connections, not requests, also bounds the idle ones; a connection that never
//!   sends a request head is closed by the head timeout. The overall cap is actix-web's
//!   `max_connections` (per worker: the configured total is spread over the workers).
//! * Every request body must have arrived `[server] body_timeout_secs` after the request head
//!   ([`protect`]): the payload is wrapped in a stream that fails at the deadline, the request
//!   gets `408` and the connection is closed. Bodies are read with limits (each service's
//!   limited reader, such as `cerdb::directory::read_limited`, and the console's forms with
//!   theirs), so a body is never buffered beyond its limit.
//! * A request whose handler panics is still answered, in its protocol's own error form
//!   ([`protect`]'s `panic_answer`; an ACME one with a fresh nonce, [`AcmeNonces`]), and its
//!   connection closed; without this the client would read an empty reply.
//! * Anonymous timestamps are charged to a per-address token bucket ([`tsa_quota`]), the
//!   directory's [`RateLimiter`]; a client with an API key of the directory is charged to its key
//!   instead, at the key's rate. Over quota: `429` with `Retry-After`.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::rt::net::TcpStream;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use cerdb::directory::{ApiKeySecret, ClientId, Directory, RateLimiter};
use futures_util::Stream;

/// The open connections per client address.
#[derive(Debug)]
pub struct Connections {
    per_address: Mutex<HashMap<ClientId, usize>>,
    cap: usize,
}

/// One open connection, counted until it is dropped with the connection's data.
#[derive(Debug)]
pub struct ConnSlot {
    conns: Arc<Connections>,
    who: ClientId,
    over: bool,
}

impl Connections {
    /// No connection is open; at most `cap` per client address.
    pub fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections { per_address: Mutex::new(HashMap::new()), cap })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, usize>> {
        self.per_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a connection from `ip`.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> ConnSlot {
        let who = ClientId::anonymous(ip);
        let mut map = self.map();
        let n = map.entry(who).or_insert(0);
        *n += 1;
        let over = *n > self.cap;
        if over && *n == self.cap + 1 {
            tracing::warn!(client = %ip, cap = self.cap, "too many connections from one address");
        }
        ConnSlot { conns: self.clone(), who, over }
    }

    /// actix-web's `on_connect` hook: counts the connection (plain TCP or rustls) in its data,
    /// and turns Nagle's algorithm off on it. An answer written in pieces (a bulk answer's
    /// closing bytes, the tail of a write the socket took in part) otherwise waits for the
    /// client's delayed acknowledgement of what went before: 40 ms on Linux, which every
    /// timestamped bulk request on one connection paid.
    pub fn on_connect(self: &Arc<Self>, conn: &dyn Any, data: &mut Extensions) {
        let tcp = if let Some(tcp) = conn.downcast_ref::<TcpStream>() {
            Some(tcp)
        } else {
            conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
                .map(|tls| tls.get_ref().0)
        };
        let Some(tcp) = tcp else { return };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set on a connection");
        }
        if let Ok(peer) = tcp.peer_addr() {
            data.insert(self.open(peer.ip()));
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut map = self.conns.map();
        if let Some(n) = map.get_mut(&self.who) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.who);
            }
        }
    }
}

/// The limits [`protect`] applies (in the application data).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole body must have arrived this long after the request head.
    pub body_timeout: Duration,
}

/// A request body that fails once its deadline passes.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<actix_web::rt::time::Sleep>>,
    fired: Rc<Cell<bool>>,
    done: bool,
}

impl Stream for Deadline {
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    this.fired.set(true);
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

fn json_error(mut b: actix_web::HttpResponseBuilder, message: &str) -> HttpResponse {
    b.content_type("application/json").body(serde_json::json!({ "error": message }).to_string())
}

/// The middleware of every HTTP service: refuses connections over the per-address cap, puts the
/// body deadline on every request, answers a request whose handler panicked ([`panic_answer`]),
/// and counts every answer for `/metrics`.
pub async fn protect<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    use futures_util::FutureExt as _;
    let started = std::time::Instant::now();
    // The request itself cannot be kept for the answer: routing needs it unshared.
    let uri = req.uri().clone();
    let acme_nonces =
        under(uri.path(), "/acme").then(|| req.app_data::<web::Data<AcmeNonces>>().cloned()).flatten();
    // Without this, a panic ends the connection's task and the client reads an empty reply.
    match std::panic::AssertUnwindSafe(protected(req, next)).catch_unwind().await {
        Ok(res) => {
            let res = res?;
            crate::metrics::observe(res.request().path(), res.status().as_u16(), started.elapsed());
            Ok(res)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic");
            tracing::error!(path = uri.path(), panic = what, "a request handler panicked");
            let nonce = acme_nonces.map(|n| (n.0)());
            let failed = HandlerPanicked { path: uri.path().to_owned(), nonce };
            crate::metrics::observe(uri.path(), failed.status_code().as_u16(), started.elapsed());
            // actix answers an error with its `error_response`.
            Err(failed.into())
        }
    }
}

/// Where the answer to a panicking ACME handler takes its `Replay-Nonce` from: the ACME service's
/// own nonces (RFC 8555 6.5: error answers should carry one, so that the client's next request
/// needs no round trip to `newNonce`). Registered as app data by `pki serve` when it serves ACME.
#[derive(Clone)]
pub struct AcmeNonces(pub Arc<dyn Fn() -> String + Send + Sync>);

/// A request whose handler panicked; answered with [`panic_answer`].
#[derive(Debug)]
struct HandlerPanicked {
    path: String,
    /// A fresh ACME nonce, for a request under `/acme` when the service gives them.
    nonce: Option<String>,
}

impl std::fmt::Display for HandlerPanicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the handler of {} panicked", self.path)
    }
}

impl ResponseError for HandlerPanicked {
    fn status_code(&self) -> actix_web::http::StatusCode {
        panic_answer(&self.path, None).status()
    }

    fn error_response(&self) -> HttpResponse {
        panic_answer(&self.path, self.nonce.as_deref())
    }
}

/// The answer to a request whose handler panicked, in its protocol's own error form: an
/// `OCSPResponse` with `internalError` under `/ocsp`, a `TimeStampResp` with `systemFailure` at
/// `/tsa`, an ACME `serverInternal` problem under `/acme` (with `acme_nonce` as its
/// `Replay-Nonce`), and `500` with a JSON error
/// elsewhere. The connection is closed after it: the request's body may be half read.
fn panic_answer(path: &str, acme_nonce: Option<&str>) -> HttpResponse {
    let mut res = if under(path, "/ocsp") {
        ocsp_responder::internal_error_response()
    } else if under(path, "/tsa") {
        tsa::system_failure_response()
    } else if under(path, "/acme") {
        let problem =
            acme::problem::Problem::server_internal("the server failed; the error is logged".into());
        let status = actix_web::http::StatusCode::from_u16(problem.http_status())
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut b = HttpResponse::build(status);
        if let Some(nonce) = acme_nonce {
            b.insert_header(("Replay-Nonce", nonce));
        }
        b.content_type("application/problem+json").body(problem.body())
    } else {
        json_error(HttpResponse::InternalServerError(), "internal error")
    };
    res.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
    res
}

/// Whether `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// [`protect`] without the metrics.
async fn protected<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    if req.conn_data::<ConnSlot>().is_some_and(|s| s.over) {
        let mut b = HttpResponse::ServiceUnavailable();
        b.insert_header((header::RETRY_AFTER, "10")).force_close();
        let res = json_error(b, "too many connections from your address");
        return Ok(req.into_response(res).map_into_right_body());
    }
    let Some(limits) = req.app_data::<web::Data<Limits>>().map(|l| *l.get_ref()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let fired = Rc::new(Cell::new(false));
    let inner = req.take_payload();
    let sleep = Box::pin(actix_web::rt::time::sleep(limits.body_timeout));
    let deadline = Deadline { inner, sleep, fired: fired.clone(), done: false };
    req.set_payload(Payload::Stream { payload: Box::pin(deadline) });
    let res = next.call(req).await?;
    if fired.get() {
        tracing::info!(
            client = ?res.request().peer_addr().map(|a| a.ip()),
            path = res.request().path(),
            "request body timed out"
        );
        let mut b = HttpResponse::RequestTimeout();
        b.force_close();
        let timeout = json_error(b, "the request body did not arrive in time");
        let (req, _) = res.into_parts();
        return Ok(ServiceResponse::new(req, timeout).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

/// The quota of `/tsa` (in the application data).
pub struct TsaQuota {
    limiter: RateLimiter,
    /// The directory whose API keys buy more.
    keys: Arc<Directory>,
    rate: f64,
    burst: f64,
}

impl std::fmt::Debug for TsaQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsaQuota")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl TsaQuota {
    /// Anonymous clients get `rate` timestamps per second with a burst of `burst`; API keys of
    /// `keys` their own quota.
    pub fn new(keys: Arc<Directory>, rate: f64, burst: f64) -> TsaQuota {
        TsaQuota { limiter: RateLimiter::new(), keys, rate, burst }
    }

    /// Who pays for this request, at which rate and burst; or why it is refused (`true`: the
    /// key could not be checked now, a 503 — not the client's fault).
    fn client(&self, req: &ServiceRequest) -> Result<(ClientId, f64, f64), (&'static str, bool)> {
        let Some(v) = req.headers().get(header::AUTHORIZATION) else {
            let ip = req.peer_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
            return Ok((ClientId::anonymous(ip), self.rate, self.burst));
        };
        let text = v.to_str().map_err(|_| ("malformed Authorization header", false))?;
        let (scheme, token) = text.trim().split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(("the Authorization scheme must be Bearer", false));
        }
        let secret: ApiKeySecret = token.trim().parse().map_err(|_| ("malformed API key", false))?;
        match self.keys.keys().authenticate(&secret) {
            Ok(Some((hash, rec))) => Ok((ClientId::Key(hash.0), rec.rate, rec.burst)),
            Ok(None) => Err(("unknown or revoked API key", false)),
            Err(e) => {
                tracing::warn!(error = %e, "API key check failed");
                Err(("the API key cannot be checked now; retry later", true))
            }
        }
    }
}

/// The middleware of `/tsa`: charges one timestamp to the client's quota.
pub async fn tsa_quota<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(quota) = req.app_data::<web::Data<TsaQuota>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let (who, rate, burst) = match quota.client(&req) {
        Ok(c) => c,
        Err((why, false)) => {
            let mut b = HttpResponse::Unauthorized();
            b.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            return Ok(req.into_response(json_error(b, why)).map_into_right_body());
        }
        Err((why, true)) => {
            let mut b = HttpResponse::ServiceUnavailable();
            b.insert_header((
                header::RETRY_AFTER,
                cerdb::directory::UNAVAILABLE_RETRY_AFTER_SECS.to_string(),
            ));
            return Ok(req.into_response(json_error(b, why)).map_into_right_body());
        }
    };
    let verdict = quota.limiter.admit(who, rate, burst, 1.0, Instant::now());
    if let Some(secs) = verdict.retry_after_secs() {
        let mut b = HttpResponse::TooManyRequests();
        b.insert_header((header::RETRY_AFTER, secs.to_string()));
        let res = json_error(b, "over the timestamp quota of this client; retry later, or use an API key");
        return Ok(req.into_response(res).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use actix_web::test as web_test;
    use actix_web::App;
    use futures_util::StreamExt;

    use super::*;

    async fn echo(body: web::Bytes) -> HttpResponse {
        HttpResponse::Ok().body(body)
    }

    /// A request to the echo app whose body is `stream`.
    async fn call(
        stream: impl Stream<Item = Result<web::Bytes, PayloadError>> + 'static,
    ) -> (u16, bool, Vec<u8>) {
        let app = web_test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(protect))
                .app_data(web::Data::new(Limits { body_timeout: Duration::from_millis(300) }))
                .route("/", web::post().to(echo)),
        )
        .await;
        let req = web_test::TestRequest::post().uri("/").to_request();
        let boxed: Pin<Box<dyn Stream<Item = Result<web::Bytes, PayloadError>>>> = Box::pin(stream);
        let (req, _) = req.replace_payload(Payload::Stream { payload: boxed });
        let res = web_test::call_service(&app, req).await;
        let status = res.status().as_u16();
        let close = !res.response().head().keep_alive();
        (status, close, web_test::read_body(res).await.to_vec())
    }

    #[actix_web::test]
    async fn a_body_that_does_not_arrive_in_time_gets_408_and_closes_the_connection() {
        let start = Instant::now();
        let (status, close, body) = call(futures_util::stream::pending()).await;
        assert_eq!(status, 408);
        assert!(close, "Connection: close");
        assert!(String::from_utf8_lossy(&body).contains("did not arrive in time"));
        assert!(start.elapsed() >= Duration::from_millis(300) && start.elapsed() < Duration::from_secs(5));

        // Half a body, then nothing: the same.
        let half = futures_util::stream::iter([Ok(web::Bytes::from_static(b"half"))])
            .chain(futures_util::stream::pending());
        assert_eq!(call(half).await.0, 408);
    }

    #[actix_web::test]
    async fn a_body_that_arrives_in_time_is_read_as_sent() {
        let parts = [Ok(web::Bytes::from_static(b"one ")), Ok(web::Bytes::from_static(b"two"))];
        let (status, close, body) = call(futures_util::stream::iter(parts)).await;
        assert_eq!((status, close, body.as_slice()), (200, false, b"one two".as_slice()));
    }

    async fn panics() -> HttpResponse {
        panic!("a bug in a handler")
    }

    /// One request on a new connection to `addr` (`extra`: more header lines), read until the
    /// server closes it: the status, the headers (names lowercased) and the body.
    fn exchange(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        extra: &str,
    ) -> (u16, HashMap<String, String>, Vec<u8>) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n{extra}\r\n")
            .expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read until the server closes the connection");
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
            panic!("{path}: no complete answer, only {:?}", String::from_utf8_lossy(&raw))
        });
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status =
            lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, raw[split + 4..].to_vec())
    }

    /// A handler that panics gets its protocol's own error answer over a real connection, which
    /// is then closed; the worker goes on serving.
    #[test]
    fn a_panicking_handler_is_answered_in_its_protocol_s_error_form() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = actix_web::HttpServer::new(|| {
                    App::new()
                        .wrap(actix_web::middleware::from_fn(protect))
                        .app_data(web::Data::new(AcmeNonces(Arc::new(|| "a-fresh-nonce".to_string()))))
                        .route("/ocsp/{request:.*}", web::get().to(panics))
                        .route("/tsa", web::post().to(panics))
                        .route("/acme/new-order", web::post().to(panics))
                        .route("/api/v1/mail/seal", web::post().to(panics))
                        .route("/tsamore", web::post().to(panics))
                        .route("/", web::post().to(echo))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .expect("bind");
                tx.send(server.addrs()[0]).expect("send the address");
                server.run().await.expect("serve");
            })
        });
        let addr = rx.recv().expect("the server's address");
        let cases: [(&str, &str, u16, &str); 5] = [
            ("GET", "/ocsp/MAA%3D", 200, "application/ocsp-response"),
            ("POST", "/tsa", 200, "application/timestamp-reply"),
            ("POST", "/acme/new-order", 500, "application/problem+json"),
            ("POST", "/api/v1/mail/seal", 500, "application/json"),
            ("POST", "/tsamore", 500, "application/json"),
        ];
        for (method, path, status, content_type) in cases {
            // A keep-alive request: the server closes the connection of its own accord.
            let (got, headers, body) = exchange(addr, method, path, "");
            assert_eq!(got, status, "{path}");
            assert_eq!(headers.get("content-type").map(String::as_str), Some(content_type), "{path}");
            assert_eq!(headers.get("connection").map(String::as_str), Some("close"), "{path}");
            match path {
                // OCSPResponse { responseStatus internalError (2) }
                "/ocsp/MAA%3D" => assert_eq!(body, [0x30, 0x03, 0x0a, 0x01, 0x02]),
                "/tsa" => {
                    let resp =
                        <tsa::asn1::TimeStampResp as der::Decode>::from_der(&body).expect("TimeStampResp");
                    assert_eq!(resp.status.status, tsa::asn1::PkiStatus::Rejection);
                    assert!(resp.time_stamp_token.is_none());
                }
                "/acme/new-order" => {
                    let p: serde_json::Value = serde_json::from_slice(&body).expect("problem JSON");
                    assert_eq!(p["type"], "urn:ietf:params:acme:error:serverInternal");
                    // RFC 8555 6.5: the client's next request can use it.
                    assert_eq!(headers.get("replay-nonce").map(String::as_str), Some("a-fresh-nonce"));
                }
                _ => {
                    let e: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                    assert_eq!(e["error"], "internal error", "{path}");
                }
            }
        }
        // The one worker still answers.
        let (status, _, body) = exchange(addr, "POST", "/", "Connection: close\r\n");
        assert_eq!((status, body.as_slice()), (200, b"".as_slice()));
    }

    #[test]
    fn connections_are_counted_per_address_and_released_when_dropped() {
        let conns = Connections::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "2001:db8::1".parse().expect("ip");
        let first = [conns.open(a), conns.open(a)];
        assert!(first.iter().all(|s| !s.over));
        let third = conns.open(a);
        assert!(third.over, "above the cap");
        // Another host of the same IPv6 /64 counts together; another address does not.
        let v6 = [conns.open(b), conns.open("2001:db8::2".parse().expect("ip"))];
        assert!(v6.iter().all(|s| !s.over));
        assert!(conns.open("2001:db8::3".parse().expect("ip")).over);
        drop(third);
        drop(first);
        assert!(!conns.open(a).over, "released when the connections end");
        drop(v6);
        assert!(conns.map().is_empty(), "no entry is left for addresses without connections");
    }

    #[actix_web::test]
    async fn an_accepted_connection_is_counted_with_nagle_s_algorithm_off() {
        let listener = actix_web::rt::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(!accepted.nodelay().expect("nodelay"), "a socket starts with Nagle's algorithm on");
        let conns = Connections::new(2);
        let mut data = Extensions::new();
        conns.on_connect(&accepted, &mut data);
        assert!(accepted.nodelay().expect("nodelay"), "TCP_NODELAY set");
        assert!(data.get::<ConnSlot>().is_some_and(|s| !s.over), "counted");
        assert_eq!(conns.map().len(), 1);
    }
}
