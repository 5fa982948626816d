//! Issue 4 (OCSP responder, RFC 6960 / RFC 5019 / RFC 9654), end to end against `pki serve` with
//! OpenSSL's `ocsp` client: status good → revoked (with reason) at once → unknown; nonces echoed;
//! cached bytes reused and replaced on revocation; GET with RFC 5019 caching headers and 304;
//! bad requests answered with `malformedRequest`/`unauthorized`; pre-signed files verify.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

struct Ocsp {
    env: Env,
    server: Server,
    ca: CaFiles,
    leaf: PathBuf,
    serial: String,
}

fn start() -> Ocsp {
    let env = Env::new();
    env.init();
    let server = env.serve();
    let ca = env.ca_files();
    let key = gen_key(env.dir(), "carol.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("carol.csr"), "/CN=carol@example.com", &[]);
    let pem =
        env.pki(["issue", "--email", "carol@example.com", "--usage", "signing", "--csr", &p(&csr)]).stdout;
    let serial = cert_serial(&pem_der(&pem));
    let leaf = env.write("carol.pem", pem);
    Ocsp { env, server, ca, leaf, serial }
}

impl Ocsp {
    fn url(&self) -> String {
        self.server.url("/ocsp")
    }

    /// `openssl ocsp -respin FILE` for the leaf, verified against the root.
    fn respin(&self, file: &Path) -> Out {
        openssl_try([
            "ocsp",
            "-respin",
            &p(file),
            "-issuer",
            &p(&self.ca.issuing),
            "-cert",
            &p(&self.leaf),
            "-CAfile",
            &p(&self.ca.root),
        ])
    }

    /// `openssl ocsp` against the responder; its stdout+stderr.
    fn query(&self, extra: &[&str]) -> String {
        let mut a: Vec<String> =
            ["ocsp", "-issuer", &p(&self.ca.issuing), "-url", &self.url(), "-CAfile", &p(&self.ca.root)]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        let out = openssl_try(&a);
        format!("{}{}", out.stdout, out.stderr)
    }
}

/// POSTs raw bytes as an OCSP request; (HTTP status, body).
fn post(url: &str, body: &Path) -> (u16, Vec<u8>) {
    let (code, _, body) = curl_post(url, "application/ocsp-request", body);
    (code, body)
}

/// GET with headers; (status, response headers lower-cased, body).
fn get(url: &str, headers: &[String]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let head = dir.path().join("head");
    let mut c = Command::new(curl_bin());
    c.args(["-sS", "--max-time", "20", "-D"]).arg(&head).arg("-o").arg(&body);
    for h in headers {
        c.arg("-H").arg(h);
    }
    c.arg(url);
    run(&mut c).ok();
    let head = std::fs::read_to_string(&head).unwrap().to_ascii_lowercase();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head, std::fs::read(&body).unwrap_or_default())
}

/// `OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, ... }` — the status of an error reply.
fn response_status(der: &[u8]) -> u8 {
    assert!(der.len() >= 5 && der[0] == 0x30, "not an OCSPResponse: {der:02x?}");
    let off = if der[1] & 0x80 != 0 { 2 + (der[1] & 0x7f) as usize } else { 2 };
    assert_eq!(&der[off..off + 2], &[0x0a, 0x01], "responseStatus ENUMERATED");
    der[off + 2]
}

const MALFORMED_REQUEST: u8 = 1;
const UNAUTHORIZED: u8 = 6;

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend([0x81, n as u8]);
    } else {
        v.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(content);
    v
}

/// The content of the outermost TLV.
fn content(der: &[u8]) -> &[u8] {
    let (h, n) = if der[1] & 0x80 == 0 {
        (2, der[1] as usize)
    } else {
        let k = (der[1] & 0x7f) as usize;
        (2 + k, der[2..2 + k].iter().fold(0usize, |a, b| (a << 8) | *b as usize))
    };
    &der[h..h + n]
}

/// Adds an RFC 9654 nonce extension of `len` octets to a nonce-less request from OpenSSL.
fn with_nonce(request: &[u8], len: usize) -> Vec<u8> {
    let tbs = content(content(request));
    // Extension { id-pkix-ocsp-nonce, extnValue OCTET STRING { Nonce ::= OCTET STRING } }
    let oid = [0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
    let mut ext = oid.to_vec();
    ext.extend(tlv(0x04, &tlv(0x04, &vec![0x5a; len])));
    let exts = tlv(0xa2, &tlv(0x30, &tlv(0x30, &ext)));
    let mut new_tbs = tbs.to_vec();
    new_tbs.extend(exts);
    tlv(0x30, &tlv(0x30, &new_tbs))
}

#[test]
fn good_then_revoked_with_reason_at_once_and_unknown_for_a_never_issued_serial() {
    let t = start();
    let out = t.query(&["-cert", &p(&t.leaf)]);
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains(&format!("{}: good", p(&t.leaf))), "{out}");
    // OpenSSL sends a nonce by default and complains when it is not echoed.
    assert!(!out.contains("WARNING: no nonce in response"), "{out}");

    t.env.pki(["revoke", "--serial", &t.serial, "--reason", "keyCompromise"]);
    let out = t.query(&["-cert", &p(&t.leaf)]);
    assert!(out.contains("Response verify OK") && out.contains(": revoked"), "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");

    let out = t.query(&["-serial", "0x1234567890abcdef"]);
    assert!(out.contains("Response verify OK") && out.contains("0x1234567890abcdef: unknown"), "{out}");
}

#[test]
fn responses_without_nonce_are_cached_until_a_revocation_changes_them() {
    let t = start();
    let r1 = t.env.path("r1.der");
    let r2 = t.env.path("r2.der");
    let r3 = t.env.path("r3.der");
    t.query(&["-cert", &p(&t.leaf), "-no_nonce", "-respout", &p(&r1)]);
    t.query(&["-cert", &p(&t.leaf), "-no_nonce", "-respout", &p(&r2)]);
    assert_eq!(std::fs::read(&r1).unwrap(), std::fs::read(&r2).unwrap(), "the cached response is reused");
    t.env.pki(["revoke", "--serial", &t.serial, "--reason", "superseded"]);
    let out = t.query(&["-cert", &p(&t.leaf), "-no_nonce", "-respout", &p(&r3)]);
    assert!(out.contains(": revoked"), "{out}");
    assert_ne!(std::fs::read(&r1).unwrap(), std::fs::read(&r3).unwrap());
}

#[test]
fn get_gives_the_post_status_with_rfc5019_caching_headers_and_304_on_if_none_match() {
    let t = start();
    let req = t.env.path("req.der");
    openssl(["ocsp", "-issuer", &p(&t.ca.issuing), "-cert", &p(&t.leaf), "-no_nonce", "-reqout", &p(&req)]);
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&req).unwrap())
    };
    let encoded = b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let (code, head, body) = get(&format!("{}/{encoded}", t.url()), &[]);
    assert_eq!(code, 200);
    assert!(head.contains("content-type: application/ocsp-response"), "{head}");
    for h in [
        "cache-control:",
        "max-age=",
        "public",
        "no-transform",
        "must-revalidate",
        "last-modified:",
        "expires:",
        "etag:",
    ] {
        assert!(head.contains(h), "missing {h} in:\n{head}");
    }
    let resp = t.env.write("get.der", &body);
    let out = t.respin(&resp);
    assert!(out.stdout.contains(": good") && out.stderr.contains("Response verify OK"), "{out:?}");
    let (_, post_body) = post(&t.url(), &req);
    let post_resp = t.env.write("post.der", &post_body);
    let out = t.respin(&post_resp);
    assert!(out.stdout.contains(": good"), "POST gives the same status: {out:?}");

    let etag =
        head.lines().find(|l| l.starts_with("etag:")).unwrap().trim_start_matches("etag:").trim().to_string();
    let (code, _, body) = get(&format!("{}/{encoded}", t.url()), &[format!("If-None-Match: {etag}")]);
    assert_eq!(code, 304);
    assert!(body.is_empty());
}

#[test]
fn bad_requests_get_malformed_request_a_foreign_issuer_unauthorized_and_the_server_keeps_serving() {
    let t = start();
    let req = t.env.path("req.der");
    openssl(["ocsp", "-issuer", &p(&t.ca.issuing), "-cert", &p(&t.leaf), "-no_nonce", "-reqout", &p(&req)]);
    let good = std::fs::read(&req).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"\x01\x02 definitely not an OCSP request".to_vec()),
        ("truncated", good[..good.len() - 5].to_vec()),
        ("nonce of 129 octets", with_nonce(&good, 129)),
    ];
    for (name, body) in cases {
        let f = t.env.write(&format!("{}.der", name.replace(' ', "-")), &body);
        let (code, resp) = post(&t.url(), &f);
        assert_eq!(code, 200, "{name}");
        assert_eq!(response_status(&resp), MALFORMED_REQUEST, "{name}");
    }
    // A 128-octet nonce is accepted and echoed.
    let f = t.env.write("nonce128.der", with_nonce(&good, 128));
    let (code, resp) = post(&t.url(), &f);
    assert_eq!((code, response_status(&resp)), (200, 0));
    assert!(resp.windows(128).any(|w| w.iter().all(|b| *b == 0x5a)), "the nonce is echoed");

    // Oversized: 413 with the JSON error of every other 413, whether the length is declared or
    // the body comes in chunks (refused once 10,000 bytes have arrived).
    let big = t.env.write("big.der", vec![0x30u8; 2 << 20]);
    let (code, ctype, resp) = curl_post(&t.url(), "application/ocsp-request", &big);
    assert_eq!((code, ctype.as_str()), (413, "application/json"), "2 MiB");
    let err: serde_json::Value = serde_json::from_slice(&resp).expect("a JSON error");
    assert_eq!(err["error"], "request body over 10000 bytes", "{err}");
    let out = run(Command::new(curl_bin())
        .args(["-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code} %{content_type}"])
        .args(["-H", "Content-Type: application/ocsp-request", "-H", "Transfer-Encoding: chunked"])
        .arg("--data-binary")
        .arg(format!("@{}", big.display()))
        .arg(t.url()))
    .ok();
    assert_eq!(out.stdout, "413 application/json", "2 MiB in chunks");
    // A body cut short is no request: malformedRequest, in OCSP's own form.
    let cut = pki_tests::raw_tcp::cut_short(
        t.server.port,
        "/ocsp",
        &[("Content-Type", "application/ocsp-request")],
        &good[..20],
        good.len(),
    )
    .expect("an answer to a body cut short");
    assert_eq!((cut.status, cut.header("content-type")), (200, Some("application/ocsp-response")));
    assert_eq!(response_status(&cut.body), MALFORMED_REQUEST);

    // A CA this responder does not serve.
    let dir = t.env.dir();
    let fkey = gen_key(dir, "foreign-ca.key", KeySpec::P256);
    let fca = dir.join("foreign-ca.pem");
    openssl([
        OsStr::new("req"),
        OsStr::new("-new"),
        OsStr::new("-x509"),
        OsStr::new("-key"),
        fkey.as_os_str(),
        OsStr::new("-subj"),
        OsStr::new("/CN=Foreign CA"),
        OsStr::new("-days"),
        OsStr::new("2"),
        OsStr::new("-out"),
        fca.as_os_str(),
    ]);
    let out = openssl_try(["ocsp", "-issuer", &p(&fca), "-serial", "0x01", "-url", &t.url(), "-no_nonce"]);
    assert!(format!("{}{}", out.stdout, out.stderr).contains("unauthorized"), "{out:?}");
    let freq = t.env.path("foreign.der");
    openssl(["ocsp", "-issuer", &p(&fca), "-serial", "0x01", "-no_nonce", "-reqout", &p(&freq)]);
    assert_eq!(response_status(&post(&t.url(), &freq).1), UNAUTHORIZED);

    // Still serving.
    let out = t.query(&["-cert", &p(&t.leaf)]);
    assert!(out.contains(": good"), "{out}");
}

#[test]
fn presigned_responses_are_accepted_by_openssl_and_refreshed_only_when_needed() {
    let t = start();
    let dir = t.env.path("presigned");
    let first = t.env.pki(["ocsp", "presign", "--out", &p(&dir)]).stdout;
    assert!(first.contains("written"), "{first}");
    let file = dir.join(format!("{}.der", t.serial));
    let out = t.respin(&file);
    assert!(out.stderr.contains("Response verify OK") && out.stdout.contains(": good"), "{out:?}");
    let before = std::fs::read(&file).unwrap();
    let again = t.env.pki(["ocsp", "presign", "--out", &p(&dir)]).stdout;
    assert!(again.contains(" 0 written"), "nothing changed, nothing rewritten: {again}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    t.env.pki(["revoke", "--serial", &t.serial, "--reason", "cessationOfOperation"]);
    let third = t.env.pki(["ocsp", "presign", "--out", &p(&dir)]).stdout;
    assert!(third.contains("1 written"), "{third}");
    let out = t.respin(&file);
    assert!(out.stdout.contains(": revoked"), "{out:?}");
}
