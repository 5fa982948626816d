//! The harness' one HTTP client: `ureq`, configured the way the tests read answers.
//!
//! - A 4xx or 5xx status is an answer, not an error: the tests assert on statuses.
//! - Redirects are never followed: the console tests read the `Location` of a 303.
//! - The request carries the caller's headers and only what HTTP/1.1 needs besides: `Host`,
//!   `Connection: close`, and `Content-Length` when there is a body. No `User-Agent`, `Accept` or
//!   `Accept-Encoding` is added, and no proxy from the environment is used (every server here is on
//!   loopback).
//! - One connection per request, closed after the answer (no pool): a test sees exactly the
//!   connections it makes.
//! - Chunked answers are decoded by `ureq`.

use std::sync::OnceLock;
use std::time::Duration;

use ureq::http;

/// How long a connection to a loopback server may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer body read (the directory's bulk answers and CRLs stay far below).
const MAX_BODY: u64 = 1 << 30;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header fields, names in lower case: every value (repeated fields such as `Set-Cookie`
    /// included), names in the order first received, each name's values in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (transfer coding removed).
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics naming the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("HTTP {} body is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    /// `Location`, which must be there.
    pub fn location(&self) -> String {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location in a {} response", self.status))
            .to_string()
    }

    /// Panics unless this is a JSON error with `status` whose message contains `needle`.
    pub fn expect_error(&self, status: u16, needle: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"), "{what}: content type");
        let msg =
            self.json()["error"].as_str().unwrap_or_else(|| panic!("{what}: no error message")).to_string();
        assert!(msg.contains(needle), "{what}: the error {msg:?} does not name {needle:?}");
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .proxy(None)
            .user_agent(ureq::config::AutoHeaderValue::None)
            .accept(ureq::config::AutoHeaderValue::None)
            .accept_encoding(ureq::config::AutoHeaderValue::None)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .build()
            .new_agent()
    })
}

/// Sends one request to `http://127.0.0.1:port{path}` with `headers` (as given) and, when there is
/// one, `body` (with its `Content-Length`), and reads the whole answer. `read_timeout` bounds each
/// wait for the server. An error means no HTTP answer (refused, reset, timed out, not HTTP).
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    read_timeout: Duration,
) -> Result<Reply, ureq::Error> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("Connection", "close");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut resp = match body {
        Some(b) => run(req.body(b)?, read_timeout)?,
        None => run(req.body(())?, read_timeout)?,
    };
    let mut headers = Vec::new();
    for name in resp.headers().keys() {
        for value in resp.headers().get_all(name) {
            headers.push((name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
        }
    }
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(MAX_BODY).read_to_vec()?;
    Ok(Reply { status, headers, body })
}

fn run(
    req: http::Request<impl ureq::AsSendBody>,
    read_timeout: Duration,
) -> Result<http::Response<ureq::Body>, ureq::Error> {
    let agent = agent();
    let req = agent.configure_request(req).timeout_per_read(Some(read_timeout)).build();
    agent.run(req)
}
