//! `GET /metrics` in the Prometheus text format: requests and their latency per service and
//! status, what the CA, the OCSP responder, the TSA and the directory did since start, the audit
//! chain's head, the CA-side certificates' remaining time, and the health of the database and the
//! key custody. No e-mail address is ever a label: the labels are service names, status codes,
//! certificate kinds and the names of the CA's own certificates.
//!
//! Served on the main listener to loopback clients only, or on `[metrics] listen` (which should
//! be a loopback or management address: nothing there is public).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use ca_core::Ca;
use cerdb::directory::Directory;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric of this process.
struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    issued: IntCounterVec,
    revoked: IntCounterVec,
    ocsp: IntCounterVec,
    ocsp_cache_hits: IntCounter,
    tsa: IntCounterVec,
    lookups: IntCounterVec,
    audit_head: IntGauge,
    expiry: IntGaugeVec,
    up: IntGaugeVec,
    /// Scrapes bring the counters above up to the components' own counts one at a time.
    sync: Mutex<()>,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("invariant: valid metric name");
            registry.register(Box::new(c.clone())).expect("invariant: registered once");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("invariant: valid metric name");
            registry.register(Box::new(g.clone())).expect("invariant: registered once");
            g
        };
        let latency = HistogramVec::new(
            HistogramOpts::new("pki_http_request_duration_seconds", "HTTP request latency by service.")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ]),
            &["service"],
        )
        .expect("invariant: valid histogram");
        registry.register(Box::new(latency.clone())).expect("invariant: registered once");
        let ocsp_cache_hits = IntCounter::new(
            "pki_ocsp_cache_hits_total",
            "OCSP answers served from the cache of signed responses.",
        )
        .expect("invariant: valid metric name");
        registry.register(Box::new(ocsp_cache_hits.clone())).expect("invariant: registered once");
        let audit_head = IntGauge::new(
            "pki_audit_head_sequence",
            "Sequence number of the newest audit entry (the chain's head).",
        )
        .expect("invariant: valid metric name");
        registry.register(Box::new(audit_head.clone())).expect("invariant: registered once");
        Metrics {
            requests: counter(
                "pki_http_requests_total",
                "HTTP requests by service and status code.",
                &["service", "status"],
            ),
            latency,
            issued: counter(
                "pki_certificates_issued_total",
                "Certificates issued by this process, by kind.",
                &["kind"],
            ),
            revoked: counter(
                "pki_certificates_revoked_total",
                "Certificates revoked by this process, by kind.",
                &["kind"],
            ),
            ocsp: counter("pki_ocsp_responses_total", "OCSP answers by responseStatus.", &["status"]),
            ocsp_cache_hits,
            tsa: counter(
                "pki_tsa_requests_total",
                "Timestamp requests by outcome (granted or refused).",
                &["outcome"],
            ),
            lookups: counter(
                "pki_directory_lookups_total",
                "Directory exists and fetch lookups by result (hit: a valid certificate was found).",
                &["result"],
            ),
            audit_head,
            expiry: gauge(
                "pki_ca_certificate_expiry_seconds",
                "Seconds until the notAfter of each CA-side certificate (negative once past).",
                &["certificate"],
            ),
            up: gauge(
                "pki_dependency_up",
                "1 while a dependency works, 0 while it does not.",
                &["dependency"],
            ),
            sync: Mutex::new(()),
            registry,
        }
    })
}

/// The service a request path belongs to: a fixed set of names, never anything from the request.
pub fn service_of(path: &str) -> &'static str {
    const PREFIXES: [(&str, &str); 9] = [
        ("/ocsp", "ocsp"),
        ("/tsa", "tsa"),
        ("/api/v1/timestamps", "tsa-verify"),
        ("/api/v1/", "directory"),
        ("/admin", "console"),
        ("/ca/", "publication"),
        ("/crl/", "publication"),
        ("/healthz", "healthz"),
        ("/metrics", "metrics"),
    ];
    PREFIXES.iter().find(|(p, _)| path.starts_with(p)).map_or("other", |(_, s)| s)
}

/// Counts one answered request.
pub fn observe(path: &str, status: u16, elapsed: Duration) {
    let m = metrics();
    let service = service_of(path);
    m.requests.with_label_values(&[service, &status.to_string()]).inc();
    m.latency.with_label_values(&[service]).observe(elapsed.as_secs_f64());
}

/// What `/metrics` reads besides its own counters.
pub struct Sources {
    /// The CA.
    pub ca: Arc<Ca>,
    /// The OCSP responder, when this process serves it.
    pub ocsp: Option<Arc<ocsp_responder::OcspResponder>>,
    /// The TSA, when this process serves it.
    pub tsa: Option<Arc<tsa::TimestampAuthority>>,
    /// The directory, when this process serves it.
    pub directory: Option<Arc<Directory>>,
}

/// Raises `counter` to `total` (the component's own monotonic count).
fn raise(counter: &IntCounter, total: u64) {
    let have = counter.get();
    if total > have {
        counter.inc_by(total - have);
    }
}

/// Brings every metric up to date and encodes them all.
fn render(s: &Sources) -> Result<String, String> {
    let m = metrics();
    let _one = m.sync.lock().unwrap_or_else(|p| p.into_inner());
    for (kind, n) in s.ca.issued_counts() {
        raise(&m.issued.with_label_values(&[kind]), n);
    }
    for (kind, n) in s.ca.revoked_counts() {
        raise(&m.revoked.with_label_values(&[kind]), n);
    }
    if let Some(ocsp) = &s.ocsp {
        let (by_status, hits) = ocsp.answer_counts();
        for (status, n) in by_status {
            raise(&m.ocsp.with_label_values(&[&status.to_string()]), n);
        }
        raise(&m.ocsp_cache_hits, hits);
    }
    if let Some(tsa) = &s.tsa {
        let (granted, refused) = tsa.counts();
        raise(&m.tsa.with_label_values(&["granted"]), granted);
        raise(&m.tsa.with_label_values(&["refused"]), refused);
    }
    if let Some(d) = &s.directory {
        let (hits, misses) = d.lookup_counts();
        raise(&m.lookups.with_label_values(&["hit"]), hits);
        raise(&m.lookups.with_label_values(&["miss"]), misses);
    }
    let db_up = match s.ca.db().last_audit() {
        Ok(head) => {
            m.audit_head.set(head.map_or(0, |r| r.seq) as i64);
            true
        }
        Err(_) => false,
    };
    m.up.with_label_values(&["database"]).set(i64::from(db_up));
    m.up.with_label_values(&["key_custody"]).set(i64::from(crate::context::custody_health().is_ok()));
    if let Ok(certs) = s.ca.own_certificates() {
        let now = s.ca.now();
        for c in certs {
            m.expiry.with_label_values(&[c.name.as_str()]).set((c.not_after - now).num_seconds());
        }
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&m.registry.gather(), &mut out).map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// `GET /metrics` on the main listener: loopback clients only (403 otherwise).
pub async fn loopback_only(req: HttpRequest, sources: web::Data<Sources>) -> HttpResponse {
    if !from_loopback(&req) {
        return HttpResponse::Forbidden()
            .content_type("application/json")
            .body(r#"{"error":"metrics are served to loopback clients only; set [metrics] listen for another address"}"#);
    }
    scrape(sources).await
}

/// Whether the request came from a loopback address (the only ones `/metrics` on the main
/// listener answers).
fn from_loopback(req: &HttpRequest) -> bool {
    req.peer_addr().is_some_and(|a| a.ip().is_loopback())
}

/// `GET /metrics` on the `[metrics] listen` listener.
pub async fn scrape(sources: web::Data<Sources>) -> HttpResponse {
    let sources = sources.into_inner();
    match web::block(move || render(&sources)).await {
        Ok(Ok(text)) => HttpResponse::Ok().content_type(TextEncoder::new().format_type()).body(text),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "encoding the metrics failed");
            HttpResponse::InternalServerError()
                .content_type("application/json")
                .body(r#"{"error":"metrics unavailable"}"#)
        }
        Err(_) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(r#"{"error":"metrics unavailable"}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_clients_are_answered_on_the_main_listener() {
        let from = |addr: &str| {
            actix_web::test::TestRequest::get().peer_addr(addr.parse().unwrap()).to_http_request()
        };
        assert!(from_loopback(&from("127.0.0.1:40000")));
        assert!(from_loopback(&from("[::1]:40000")));
        assert!(!from_loopback(&from("10.1.2.3:40000")));
        assert!(!from_loopback(&from("[2001:db8::1]:40000")));
        assert!(!from_loopback(&actix_web::test::TestRequest::get().to_http_request()), "no peer address");
    }

    #[test]
    fn services_are_named_from_a_fixed_set() {
        assert_eq!(service_of("/ocsp/MEIw"), "ocsp");
        assert_eq!(service_of("/api/v1/timestamps/verify"), "tsa-verify");
        assert_eq!(service_of("/api/v1/certificates/exists"), "directory");
        assert_eq!(service_of("/admin/login"), "console");
        assert_eq!(service_of("/alice@example.com"), "other", "nothing of the path becomes a label");
    }
}
