//! Helpers for the certificate-directory tests (`tests/directory*.rs`): requests through the
//! harness' HTTP client that show status, headers and body of every answer (curl is used where a
//! real client's view matters), and the lookups the acceptance criteria name.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use crate::http_client::Reply;
use crate::require_tool;

/// Sends one HTTP/1.1 request to 127.0.0.1:`port` and reads the answer (see
/// [`crate::http_client`]). `headers` are sent as given; a body gets a `Content-Length`.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    crate::http_client::send(port, method, path, headers, body, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{method} {path} on 127.0.0.1:{port}: no HTTP answer: {e}"))
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

/// The OpenAPI document served at `url`, which openapi-spec-validator finds valid OpenAPI 3
/// (written to `file` for it); parsed.
pub fn valid_openapi_document(url: &str, file: &Path) -> serde_json::Value {
    let validator = require_tool(
        "openapi-spec-validator",
        "pip install schemathesis==4.32.5 openapi-spec-validator==0.9.0",
    );
    let doc = crate::curl_get(url);
    std::fs::write(file, &doc).expect("write the document");
    let out = crate::run(Command::new(&validator).arg(file));
    assert!(
        out.status.success() && out.stdout.contains("OK"),
        "invalid OpenAPI document:\n{}{}",
        out.stdout,
        out.stderr
    );
    let parsed: serde_json::Value = serde_json::from_slice(&doc).expect("the document is JSON");
    assert!(parsed["openapi"].as_str().unwrap_or_default().starts_with("3."), "{parsed}");
    parsed
}

/// `st run` of the document at `url` with `args` (and the configuration file `config`), in
/// `dir`, on one worker (CPython 3.11.7 can fail inside schemathesis with "AST constructor
/// recursion depth mismatch" when its workers compile code in parallel). It must find no failure
/// and test every operation it selects, which must be all of them; the report and the number of
/// operations tested.
pub fn schemathesis_run(dir: &Path, config: &Path, url: &str, args: &[&str]) -> (String, u32) {
    let out = crate::run(
        Command::new(schemathesis_bin())
            .arg("--config-file")
            .arg(config)
            .args(["run", url])
            .args(args)
            .args(["--workers", "1", "--no-color", "--generation-database", "none"])
            .current_dir(dir),
    );
    let report = format!("{}\n{}", out.stdout, out.stderr);
    assert!(out.status.success(), "schemathesis found failures:\n{report}");
    let field = |name: &str| -> String {
        let at = report.find(name).unwrap_or_else(|| panic!("no {name:?} in the report:\n{report}"));
        report[at + name.len()..].split_whitespace().next().unwrap_or("").to_string()
    };
    let selected = field("Selected: ");
    let (chosen, total) = selected.split_once('/').unwrap_or_else(|| panic!("Selected: {selected}"));
    assert_eq!(chosen, total, "every operation selected:\n{report}");
    assert_eq!(field("Tested: "), total, "every operation tested of {url}:\n{report}");
    assert!(report.contains(" passed") && !report.contains("failure"), "{report}");
    let total = total.parse().unwrap_or_else(|_| panic!("Selected: {selected}"));
    (report, total)
}
