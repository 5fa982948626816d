//! Helpers for the certificate-directory tests (`tests/directory*.rs`): a small HTTP/1.1 client
//! that shows status, headers and body of every answer (curl is used where a real client's view
//! matters), and the lookups the acceptance criteria name.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::require_tool;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header fields, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer decoded).
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics naming the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("HTTP {} body is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
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

fn decode_chunked(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// Sends one HTTP/1.1 request to 127.0.0.1:`port` (`Connection: close`) and reads the answer.
/// `headers` are sent as given; a body gets a `Content-Length`.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send request head");
    if let Some(b) = body {
        // The server may answer (413) and close before reading everything.
        let _ = s.write_all(b);
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let raw = &buf[head_end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { decode_chunked(raw) } else { raw.to_vec() };
    Reply { status, headers, body }
}

/// GET `path`, with `Authorization: Bearer key` when a key is given.
pub fn get(port: u16, path: &str, key: Option<&str>) -> Reply {
    get_with(port, path, key, &[])
}

/// GET with extra headers.
pub fn get_with(port: u16, path: &str, key: Option<&str>, extra: &[(&str, &str)]) -> Reply {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut h: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    http(port, "GET", path, &h, None)
}

/// POST a JSON body to the bulk lookup.
pub fn bulk(port: u16, body: &serde_json::Value, key: Option<&str>) -> Reply {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    http(port, "POST", "/api/v1/certificates/lookup", &h, Some(body.to_string().as_bytes()))
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `exists` for `email` and `usage`: the boolean, after checking the answer's shape.
pub fn exists(port: u16, email: &str, usage: &str, key: Option<&str>) -> bool {
    let r = get(port, &format!("/api/v1/certificates/exists?email={}&usage={usage}", q(email)), key);
    assert_eq!(r.status, 200, "exists {email} {usage}: {}", r.text());
    let j = r.json();
    assert_eq!(j["usage"], usage);
    j["exists"].as_bool().unwrap_or_else(|| panic!("exists is not a boolean: {j}"))
}

/// The hex SHA-256 of the lower-cased address, as a client computes it for a hashed lookup
/// (with `openssl dgst`, to stay independent of the product's code).
pub fn email_sha256(email: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("addr");
    std::fs::write(&f, email.to_ascii_lowercase()).expect("write");
    let out =
        crate::openssl([std::ffi::OsStr::new("dgst"), "-sha256".as_ref(), "-r".as_ref(), f.as_os_str()]);
    out.stdout.split_whitespace().next().expect("digest").to_string()
}

/// The SHA-256 fingerprint of a PEM certificate, lower-case hex without colons, per
/// `openssl x509 -fingerprint`.
pub fn openssl_fingerprint(pem_file: &std::path::Path) -> String {
    let out = crate::openssl([
        std::ffi::OsStr::new("x509"),
        "-in".as_ref(),
        pem_file.as_os_str(),
        "-noout".as_ref(),
        "-fingerprint".as_ref(),
        "-sha256".as_ref(),
    ]);
    let (_, fp) =
        out.stdout.trim().split_once('=').unwrap_or_else(|| panic!("no fingerprint in {}", out.stdout));
    fp.replace(':', "").to_ascii_lowercase()
}

/// The PEM blocks of a text, each with its BEGIN/END lines.
pub fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            cur = Some(String::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line.starts_with("-----END ") {
            if let Some(c) = cur.take() {
                out.push(c);
            }
        }
    }
    out
}

/// schemathesis' `st`, or a failure naming the install command (the pinned version is what
/// `scripts/test.sh` installs).
pub fn schemathesis_bin() -> PathBuf {
    require_tool("st", "pip install schemathesis==4.32.5")
}
