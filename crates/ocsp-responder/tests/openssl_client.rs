//! The real `openssl ocsp` client against the OCSP scope served by a real actix-web server on
//! 127.0.0.1 (POST, as `openssl ocsp -url` sends it).

mod common;

use cerdb::RevocationReason;
use chrono::Utc;
use common::*;

/// `openssl ocsp` against `url` with the fixture's issuer and trust anchor, plus `extra`.
fn ask(url: &str, extra: &[&str]) -> String {
    let issuing = data("issuing.pem");
    let root = data("root.pem");
    let mut args = vec![
        "ocsp",
        "-url",
        url,
        "-issuer",
        issuing.to_str().expect("path"),
        "-CAfile",
        root.to_str().expect("path"),
        "-timeout",
        "20",
    ];
    args.extend_from_slice(extra);
    openssl_text(&args)
}

#[test]
fn good_revoked_and_unknown_with_the_nonce_echoed_and_checked() {
    let pki = Pki::new();
    let server = serve(pki.responder());
    let good = pki.leaf_pem(GOOD);
    let text = ask(&server.url, &["-cert", good.to_str().expect("path")]);
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(text.contains(&format!("{}: good", good.display())), "{text}");
    // openssl sends a nonce by default and complains when it is missing or differs.
    assert!(!text.contains("WARNING: no nonce in response"), "{text}");
    assert!(!text.contains("Nonce Verify error"), "{text}");

    let revoked = pki.leaf_pem(REVOKED);
    let text = ask(&server.url, &["-cert", revoked.to_str().expect("path")]);
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(text.contains(&format!("{}: revoked", revoked.display())), "{text}");
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    assert!(text.contains("Revocation Time: Jun  1 12:00:00 2025 GMT"), "{text}");
    assert!(!text.contains("WARNING: no nonce in response"), "{text}");

    let text = ask(&server.url, &["-serial", "0x9999"]);
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(text.contains("0x9999: unknown"), "{text}");
    assert!(!text.contains("WARNING: no nonce in response"), "{text}");
}

#[test]
fn sha256_cert_ids_and_several_serials_in_one_request() {
    let pki = Pki::new();
    let server = serve(pki.responder());
    let text = ask(&server.url, &["-sha256", "-serial", "0x1001", "-serial", "0x1002", "-serial", "0x9999"]);
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(text.contains("0x1001: good"), "{text}");
    assert!(text.contains("0x1002: revoked"), "{text}");
    assert!(text.contains("0x9999: unknown"), "{text}");
}

#[test]
fn without_a_nonce_the_cached_bytes_are_served_until_a_revocation() {
    let pki = Pki::new();
    let responder = pki.responder();
    let server = serve(responder.clone());
    let leaf = pki.leaf_pem(GOOD_2);
    let fetch = |name: &str| {
        let out = pki.path(name);
        let text = ask(
            &server.url,
            &["-no_nonce", "-cert", leaf.to_str().expect("path"), "-respout", out.to_str().expect("path")],
        );
        (text, std::fs::read(&out).expect("response written"))
    };
    let (text, first) = fetch("first.der");
    assert!(text.contains(": good") && text.contains("Response verify OK"), "{text}");
    let (_, second) = fetch("second.der");
    assert_eq!(first, second, "-no_nonce twice gives identical cached bytes");

    // The CA's revoke path: cerdb first, then the responder is told.
    pki.revoke(GOOD_2, Utc::now(), RevocationReason::CessationOfOperation);
    responder.invalidate(&serial(GOOD_2));
    let (text, third) = fetch("third.der");
    assert_ne!(third, first, "bytes differ after a revocation");
    assert!(text.contains(": revoked") && text.contains("Reason: cessationOfOperation"), "{text}");
    assert!(text.contains("Response verify OK"), "{text}");

    // Its key found compromised later: the reason changes, the revocation time stays.
    let time =
        |text: &str| text.lines().find(|l| l.contains("Revocation Time:")).map(str::trim).map(String::from);
    let first_time = time(&text).unwrap_or_else(|| panic!("{text}"));
    pki.revoke(GOOD_2, Utc::now() + chrono::Duration::hours(1), RevocationReason::KeyCompromise);
    responder.invalidate(&serial(GOOD_2));
    let (text, fourth) = fetch("fourth.der");
    assert_ne!(fourth, third, "bytes differ after the reason changed");
    assert!(text.contains(": revoked") && text.contains("Reason: keyCompromise"), "{text}");
    assert_eq!(time(&text), Some(first_time), "{text}");
    assert!(text.contains("Response verify OK"), "{text}");
}

#[test]
fn a_foreign_issuer_is_unauthorized() {
    let pki = Pki::new();
    let server = serve(pki.responder());
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "Somebody Else's CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let foreign = params.self_signed(&key).expect("foreign CA");
    let path = pki.path("foreign.pem");
    std::fs::write(&path, foreign.pem()).expect("write");
    let text = openssl_text(&[
        "ocsp",
        "-url",
        &server.url,
        "-issuer",
        path.to_str().expect("path"),
        "-serial",
        "0x1001",
        "-timeout",
        "20",
    ]);
    assert!(text.contains("Responder Error: unauthorized (6)"), "{text}");
}

#[test]
fn a_two_mebibyte_post_over_the_network_gets_413_and_no_panic() {
    use std::io::{Read, Write};
    let pki = Pki::new();
    let responder = pki.responder();
    let server = serve(responder.clone());
    let addr = server.url.trim_start_matches("http://").trim_end_matches("/ocsp").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
    let body = vec![0x30u8; 2 * 1024 * 1024];
    let head = format!(
        "POST /ocsp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    // The server may answer and close before the whole body is sent; that is its right.
    let _ = stream.write_all(&body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.to_ascii_lowercase().contains("content-type: application/json"), "{text}");
    assert!(text.ends_with(r#"{"error":"request body over 10000 bytes"}"#), "{text}");
    // And the server still answers afterwards.
    let text = ask(&server.url, &["-serial", "0x1001"]);
    assert!(text.contains("0x1001: good"), "{text}");
}
