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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A one-connection server on loopback: reads one request (head and `Content-Length` body),
    /// answers `answer`, and hands back the request's bytes.
    fn serve_once(answer: &'static [u8]) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.parse::<usize>().unwrap());
                if n == 0 || got.len() >= end + 4 + len {
                    break;
                }
            }
            s.write_all(answer).unwrap();
            got
        });
        (port, t)
    }

    /// (request line, header lines sorted, body) of a request's bytes: the order of header fields
    /// carries no meaning.
    fn parts(request: &[u8]) -> (String, Vec<String>, String) {
        let text = String::from_utf8(request.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap().to_string();
        let mut fields: Vec<String> = lines.map(str::to_ascii_lowercase).collect();
        fields.sort();
        (first, fields, body.to_string())
    }

    #[test]
    fn sends_only_the_given_headers_and_keeps_statuses_redirects_and_repeated_fields() {
        let (port, t) = serve_once(
            b"HTTP/1.1 303 See Other\r\nLocation: /elsewhere\r\nSet-Cookie: a=1\r\nX-Other: y\r\n\
              Set-Cookie: b=2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        );
        let r = send(port, "GET", "/p?q=1", &[("X-Test", "v")], None, Duration::from_secs(10)).unwrap();
        let (line, fields, body) = parts(&t.join().unwrap());
        assert_eq!(line, "GET /p?q=1 HTTP/1.1");
        assert_eq!(
            fields,
            ["connection: close".to_string(), format!("host: 127.0.0.1:{port}"), "x-test: v".into()]
        );
        assert_eq!(body, "");
        assert_eq!((r.status, r.location(), r.text()), (303, "/elsewhere".to_string(), "hi".to_string()));
        let cookies: Vec<&str> =
            r.headers.iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.as_str()).collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(r.header("X-OTHER"), Some("y"));
    }

    #[test]
    fn a_body_gets_its_length_and_a_chunked_error_answer_is_decoded() {
        let (port, t) = serve_once(
            b"HTTP/1.1 413 Payload Too Large\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n",
        );
        let r = send(port, "POST", "/x", &[], Some(b"12345"), Duration::from_secs(10)).unwrap();
        let (line, fields, body) = parts(&t.join().unwrap());
        assert_eq!(line, "POST /x HTTP/1.1");
        assert_eq!(
            fields,
            ["connection: close".to_string(), "content-length: 5".into(), format!("host: 127.0.0.1:{port}")]
        );
        assert_eq!(body, "12345");
        assert_eq!((r.status, r.text()), (413, "abcdefg".to_string()));
    }

    #[test]
    fn nothing_listening_is_an_error_not_a_panic() {
        let port = crate::free_port();
        assert!(send(port, "GET", "/", &[], None, Duration::from_secs(2)).is_err());
    }
}
