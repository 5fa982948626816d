//! Helpers for the admin console tests: a cookie jar over the harness' HTTP client, form-field
//! extraction, TOTP codes computed with OpenSSL's HMAC (an implementation independent of the
//! server's), console login flows, and a W3C WebDriver client for Debian's Chromium through
//! `chromedriver` (its HTTP API, through the same client).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use crate::http_client::Reply as Resp;
use crate::{free_port, http_client, openssl_bin, require_tool, run_with_input};

/// An HTTP/1.1 client for `http://127.0.0.1:PORT` that keeps cookies like a browser.
#[derive(Debug, Clone)]
pub struct Client {
    /// The port.
    pub port: u16,
    /// Cookies by name.
    pub cookies: BTreeMap<String, String>,
}

impl Client {
    /// A client with no cookies.
    pub fn new(port: u16) -> Client {
        Client { port, cookies: BTreeMap::new() }
    }

    /// Sends one request (with the jar's cookies) and updates the jar from `Set-Cookie`.
    pub fn request(&mut self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Resp {
        self.try_request(method, path, content_type, body, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{method} {path} on pki serve: no HTTP answer: {e}"))
    }

    /// [`Client::request`] for a server that may be gone (the crash loop): no answer within
    /// `timeout` is an error, not a panic.
    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Resp, String> {
        let jar = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut headers = Vec::new();
        if !jar.is_empty() {
            headers.push(("Cookie", jar.as_str()));
        }
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        let body = (method != "GET").then_some(body);
        let resp = http_client::send(self.port, method, path, &headers, body, timeout)
            .map_err(|e| format!("{method} {path}: no HTTP answer: {e}"))?;
        for (k, v) in &resp.headers {
            if k != "set-cookie" {
                continue;
            }
            let first = v.split(';').next().unwrap_or("");
            if let Some((name, value)) = first.split_once('=') {
                if v.contains("Max-Age=0") || value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().to_string(), value.trim().to_string());
                }
            }
        }
        Ok(resp)
    }

    /// GET.
    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, None, b"")
    }

    /// POST an urlencoded form.
    pub fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.request("POST", path, Some("application/x-www-form-urlencoded"), body.as_bytes())
    }

    /// POST a multipart form: (name, filename if a file, bytes).
    pub fn post_multipart(&mut self, path: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Resp {
        let (content_type, body) = multipart(parts);
        self.request("POST", path, Some(&content_type), &body)
    }

    /// GETs `page` and returns the CSRF token of its first form.
    pub fn csrf(&mut self, page: &str) -> String {
        let r = self.get(page);
        assert_eq!(r.status, 200, "GET {page}: {}", r.text());
        form_value(&r.text(), "csrf_token").unwrap_or_else(|| panic!("no csrf_token on {page}"))
    }
}

/// A multipart/form-data body of (name, filename if a file, bytes), and its content type.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----pki-tests-boundary-7d1f";
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                    .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `application/x-www-form-urlencoded` encoding.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Undoes the HTML escapes maud writes.
pub fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The `value` of the first `<input name="NAME" ...>` in `html`.
pub fn form_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + 7;
    let len = tag[v..].find('"')?;
    Some(html_unescape(&tag[v..v + len]))
}

/// The text inside the element with `id="ID"` (tags stripped).
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let open_end = at + html[at..].find('>')? + 1;
    let rest = &html[open_end..];
    let mut depth = 0usize;
    let mut out = String::new();
    let mut i = 0;
    while i < rest.len() {
        if rest[i..].starts_with("</") {
            if depth == 0 {
                break;
            }
            depth -= 1;
            i += rest[i..].find('>')? + 1;
        } else if rest[i..].starts_with('<') {
            let end = rest[i..].find('>')?;
            if !rest[i..i + end].ends_with('/') && !rest[i..].starts_with("<input") {
                depth += 1;
            }
            i += end + 1;
        } else {
            let c = rest[i..].chars().next()?;
            out.push(c);
            i += c.len_utf8();
        }
    }
    Some(html_unescape(out.trim()))
}

/// The value of the `one-time password: X` line of `pki init` / `pki user add|reset`.
pub fn one_time_password(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("one-time password: "))
        .unwrap_or_else(|| panic!("no one-time password printed: {stdout}"))
        .trim()
        .to_string()
}

/// RFC 4648 base32 (spaces ignored).
pub fn base32_decode(s: &str) -> Vec<u8> {
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".find(c.to_ascii_uppercase()).expect("base32 digit") as u64;
        bits = bits << 5 | v;
        n += 5;
        if n >= 8 {
            out.push((bits >> (n - 8)) as u8);
            n -= 8;
        }
    }
    out
}

/// An authenticator app: TOTP codes (RFC 6238, SHA-1, 30 s, 6 digits) from a secret, the
/// HMAC computed by `openssl mac`. Never gives the same time step twice (the server refuses
/// replays); uses the next step when this one was used (the server accepts one step of drift).
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// The secret.
    pub secret: Vec<u8>,
    last: u64,
}

impl Authenticator {
    /// From the base32 key the enrolment page shows.
    pub fn from_base32(key: &str) -> Authenticator {
        Authenticator { secret: base32_decode(key), last: 0 }
    }

    /// The code of `step`, by OpenSSL.
    pub fn code_at(&self, step: u64) -> String {
        let out = run_with_input(
            Command::new(openssl_bin()).args([
                "mac",
                "-digest",
                "SHA1",
                "-macopt",
                &format!("hexkey:{}", hex::encode(&self.secret)),
                "HMAC",
            ]),
            Some(&step.to_be_bytes()),
        )
        .ok();
        let mac = hex::decode(out.stdout.trim()).expect("openssl mac prints hex");
        let off = usize::from(mac[19] & 0x0f);
        let bin = u32::from_be_bytes([mac[off] & 0x7f, mac[off + 1], mac[off + 2], mac[off + 3]]);
        format!("{:06}", bin % 1_000_000)
    }

    /// A code the server has not seen: this step's, or the next one's (waiting for the next
    /// step when both were used).
    pub fn next_code(&mut self) -> String {
        loop {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 30;
            if self.last < now + 1 {
                let step = now.max(self.last + 1);
                self.last = step;
                return self.code_at(step);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Logs in for the first time with a one-time password: new password, TOTP enrolment (the key
/// read from the page). Returns the authenticator; `client` ends up logged in.
pub fn first_login(client: &mut Client, name: &str, otp: &str, new_password: &str) -> Authenticator {
    let token = client.csrf("/admin/login");
    let r =
        client.post_form("/admin/login", &[("csrf_token", &token), ("username", name), ("password", otp)]);
    assert_eq!(
        (r.status, r.location()),
        (303, "/admin/password".to_string()),
        "login with the one-time password"
    );
    let token = client.csrf("/admin/password");
    let r = client.post_form(
        "/admin/password",
        &[("csrf_token", &token), ("new_password", new_password), ("confirm_password", new_password)],
    );
    assert_eq!(
        (r.status, r.location()),
        (303, "/admin/totp/enrol".to_string()),
        "new password: {}",
        r.text()
    );
    let page = client.get("/admin/totp/enrol");
    assert_eq!(page.status, 200);
    let html = page.text();
    let key = element_text(&html, "totp-secret").expect("the key is shown as text");
    assert!(html.contains("<svg") && html.contains("class=\"qr\""), "a QR code is rendered as inline SVG");
    assert!(
        element_text(&html, "totp-uri").expect("uri").starts_with("otpauth://totp/"),
        "otpauth URI shown"
    );
    let mut auth = Authenticator::from_base32(&key);
    let token = form_value(&html, "csrf_token").expect("csrf");
    let r = client.post_form("/admin/totp/enrol", &[("csrf_token", &token), ("code", &auth.next_code())]);
    assert_eq!((r.status, r.location()), (303, "/admin/".to_string()), "TOTP enrolment: {}", r.text());
    auth
}

/// A console user of `role` made with `pki user add` and logged in for the first time (new
/// `password`, TOTP enrolled): the client holding the session, and the authenticator.
pub fn console_user(env: &crate::Env, name: &str, role: &str, password: &str) -> (Client, Authenticator) {
    let otp = one_time_password(&env.pki(["user", "add", "--name", name, "--role", role]).stdout);
    let mut client = Client::new(env.port);
    let auth = first_login(&mut client, name, &otp, password);
    (client, auth)
}

/// A full login (password, then TOTP); `client` ends up logged in.
pub fn login(client: &mut Client, name: &str, password: &str, auth: &mut Authenticator) {
    let token = client.csrf("/admin/login");
    let r = client
        .post_form("/admin/login", &[("csrf_token", &token), ("username", name), ("password", password)]);
    assert_eq!(
        (r.status, r.location()),
        (303, "/admin/login/totp".to_string()),
        "password step: {}",
        r.text()
    );
    let token = client.csrf("/admin/login/totp");
    let r = client.post_form("/admin/login/totp", &[("csrf_token", &token), ("code", &auth.next_code())]);
    assert_eq!((r.status, r.location()), (303, "/admin/".to_string()), "TOTP step: {}", r.text());
}

/// Where console tests put their artefacts (screenshots): `target/test-artefacts/console/`.
pub fn artefact_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let dir = target.join("test-artefacts").join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// RFC 4648 base64 decoding (WebDriver screenshots).
pub fn base64_decode(s: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        bits = bits << 6 | u32::from(v);
        n += 6;
        if n >= 8 {
            out.push((bits >> (n - 8)) as u8);
            n -= 8;
        }
    }
    out
}

/// Headless Chromium driven through `chromedriver` (W3C WebDriver). Dropping it ends the
/// session and the driver.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

const INSTALL: &str = "apt-get install chromium chromium-driver";

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile. Fails (never skips)
    /// naming the install command when either is missing.
    pub fn start() -> Browser {
        let chromium = require_tool("chromium", INSTALL);
        let chromedriver = require_tool("chromedriver", INSTALL);
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver ({INSTALL}): {e}"));
        let profile = tempfile::Builder::new().prefix("pki-chromium-").tempdir().unwrap();
        let mut b = Browser { driver, port, session: String::new(), _profile: profile };
        let start = Instant::now();
        loop {
            let ready = http_client::send(port, "GET", "/status", &[], None, Duration::from_secs(5));
            if ready.is_ok_and(|r| r.text().contains("\"ready\":true")) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", b._profile.path().display())])
        .collect();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args}
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["value"]["sessionId"].as_str().expect("WebDriver session id").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers = [("Content-Type", "application/json")];
        let payload = http_client::send(
            self.port,
            method,
            path,
            &headers,
            Some(body.as_bytes()),
            Duration::from_secs(90),
        )
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: no HTTP answer: {e}"))
        .body;
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("WebDriver JSON");
        if let Some(err) = v["value"]["error"].as_str() {
            panic!("WebDriver {method} {path}: {err}: {}", v["value"]["message"]);
        }
        v
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Navigates to `url`.
    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(serde_json::json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)["value"].as_str().unwrap_or_default().to_string()
    }

    /// Waits (at most 15 s) until the current URL satisfies `ok`; the URL. Form submissions
    /// may still be navigating when a click returns.
    pub fn wait_url(&self, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let u = self.url();
            if ok(&u) || start.elapsed() > Duration::from_secs(15) {
                return u;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (at most 15 s) until an element matches `css`; panics with the page otherwise.
    pub fn wait_for(&self, css: &str) {
        let start = Instant::now();
        loop {
            let v = self.call(
                "POST",
                &self.s("/elements"),
                Some(serde_json::json!({"using": "css selector", "value": css})),
            );
            if v["value"].as_array().is_some_and(|a| !a.is_empty()) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no {css} on {}:\n{}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The page's HTML.
    pub fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None)["value"].as_str().unwrap_or_default().to_string()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        let obj = v["value"].as_object().unwrap_or_else(|| panic!("no element {css}"));
        obj.values().next().and_then(|x| x.as_str()).expect("element id").to_string()
    }

    /// Types `text` into the element matching `css` (a file path for a file input).
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/value")), Some(serde_json::json!({ "text": text })));
    }

    /// Chooses the option with `value` of the `<select>` matching `css`.
    pub fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), Some(serde_json::json!({})));
    }

    /// The visible text of the element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &self.s(&format!("/element/{e}/text")), None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG screenshot as `dir/name.png`; its path.
    pub fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64_decode(v["value"].as_str().expect("screenshot base64"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let p = dir.join(format!("{name}.png"));
        std::fs::write(&p, png).unwrap();
        p
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.call("DELETE", &path, None)));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
