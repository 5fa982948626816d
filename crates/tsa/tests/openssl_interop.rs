//! The TSA behind a real HTTP server, driven by the real `openssl ts` and `curl`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use hsm_sim::KeyType;
use tsa::asn1::{FailureBit, PkiStatus};
use tsa::{TsaConfig, DEFAULT_POLICY};

/// The value after `label` on the line of `text` that starts with it.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        .trim()
}

fn hex_of_openssl(v: &str) -> u128 {
    u128::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
}

fn int_value(i: &der::asn1::Int) -> u128 {
    i.as_bytes().iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}

/// Requests a token for `data` with `openssl ts -query`, posts it with curl, checks it with
/// `openssl ts -verify` and `openssl ts -reply -text`, and returns the serial.
fn stamp_and_verify(
    fx: &Fixture,
    server: &Server,
    name: &str,
    digest: &str,
    cert_req: bool,
    untrusted: &str,
) -> u128 {
    let data = fx.path(&format!("{name}.txt"));
    std::fs::write(&data, format!("statement {name} for the auditors\n")).unwrap();
    let query = fx.path(&format!("{name}.tsq"));
    let mut args =
        vec!["ts", "-query", "-data", data.to_str().unwrap(), digest, "-out", query.to_str().unwrap()];
    if cert_req {
        args.push("-cert");
    }
    run_ok("openssl", &args);
    let reply_der = post_query(server, &query);
    let reply = fx.path(&format!("{name}.tsr"));
    std::fs::write(&reply, &reply_der).unwrap();

    let out = run_ok(
        "openssl",
        &[
            "ts",
            "-verify",
            "-data",
            data.to_str().unwrap(),
            "-in",
            reply.to_str().unwrap(),
            "-CAfile",
            fx.path("root.pem").to_str().unwrap(),
            "-untrusted",
            fx.path(untrusted).to_str().unwrap(),
        ],
    );
    assert!(out.contains("Verification: OK"), "openssl ts -verify ({name}):\n{out}");

    let query_text = run_ok("openssl", &["ts", "-query", "-in", query.to_str().unwrap(), "-text"]);
    let text = run_ok("openssl", &["ts", "-reply", "-in", reply.to_str().unwrap(), "-text"]);
    assert_eq!(field(&text, "Status:"), "Granted.");
    assert_eq!(field(&text, "Policy OID:"), DEFAULT_POLICY.to_string());
    assert_eq!(field(&text, "Nonce:"), field(&query_text, "Nonce:"), "nonce echoed");
    assert_eq!(field(&text, "Accuracy:"), "unspecified seconds, 0x64 millis, unspecified micros");
    assert_eq!(field(&text, "Ordering:"), "no");
    assert!(field(&text, "TSA:").contains("CN=Test TSA") || field(&text, "TSA:").contains("CN = Test TSA"));
    let serial_text = hex_of_openssl(field(&text, "Serial number:"));

    // The same fields through our own types.
    let resp = decode_resp(&reply_der);
    assert_eq!(resp.status.status, PkiStatus::Granted);
    let tst = tst_info(&resp);
    assert_eq!(int_value(&tst.serial_number), serial_text);
    assert_eq!(int_value(tst.nonce.as_ref().unwrap()), hex_of_openssl(field(&query_text, "Nonce:")));
    let sd: cms::signed_data::SignedData =
        resp.time_stamp_token.as_ref().unwrap().content.decode_as().unwrap();
    let certs = sd.certificates.as_ref().map_or(0, |c| c.0.len());
    if cert_req {
        assert_eq!(certs, 1 + fx.chain_der.len(), "TSA certificate and chain, not the root");
    } else {
        assert_eq!(certs, 0);
    }
    serial_text
}

#[test]
fn openssl_verifies_tokens_with_the_chain_in_the_token() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, true);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let server = Server::start(tsa, fx.verifier(&db));
    let mut serials = Vec::new();
    for digest in ["-sha256", "-sha384", "-sha512"] {
        let name = format!("chain{digest}");
        serials.push(stamp_and_verify(&fx, &server, &name, digest, true, "chain.pem"));
    }
    assert!(serials.windows(2).all(|w| w[0] < w[1]), "{serials:?}");

    // The verification endpoint, driven by curl: data, digest, and the wrong data.
    let url = format!("{}/api/v1/timestamps/verify", server.url);
    let token = format!("token=@{}", fx.path("chain-sha256.tsr").display());
    let data = format!("data=@{}", fx.path("chain-sha256.txt").display());
    let ok = run_ok("curl", &["-sS", "-w", "\n%{http_code}", "-F", &token, "-F", &data, &url]);
    let (body, code) = ok.rsplit_once('\n').unwrap();
    assert_eq!(code, "200", "{body}");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["policy"], DEFAULT_POLICY.to_string());
    assert_eq!(json["serial"], serials[0].to_string());
    assert!(json["tsa"].as_str().unwrap().contains("CN=Test TSA"), "{json}");

    let digest = hex::encode(sha256(&std::fs::read(fx.path("chain-sha256.txt")).unwrap()));
    let by_digest = run_ok("curl", &["-sS", "-F", &token, "-F", &format!("digest={digest}"), &url]);
    let json: serde_json::Value = serde_json::from_str(&by_digest).unwrap();
    assert_eq!(json["verified"], true, "{json}");

    let other = fx.path("chain-sha384.txt");
    let wrong = run_ok(
        "curl",
        &["-sS", "-w", "\n%{http_code}", "-F", &token, "-F", &format!("data=@{}", other.display()), &url],
    );
    let (body, code) = wrong.rsplit_once('\n').unwrap();
    assert_eq!(code, "422");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["verified"], false);
    assert_eq!(json["failed_check"], "imprint", "{json}");

    let missing = run_ok("curl", &["-sS", "-w", "\n%{http_code}", "-F", &data, &url]);
    assert!(missing.ends_with("\n400"), "{missing}");
    server.stop();
    db.flush().unwrap();
    tsa::TsaStore::open(&db).unwrap().check_consistency().unwrap();
}

#[test]
fn openssl_verifies_tokens_without_certificates_rsa() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::Rsa2048, false);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let server = Server::start(tsa, fx.verifier(&db));
    for digest in ["-sha256", "-sha384", "-sha512"] {
        stamp_and_verify(&fx, &server, &format!("bare{digest}"), digest, false, "tsa.pem");
    }
    server.stop();
}

#[test]
fn openssl_verifies_p384_tokens() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P384, false);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let server = Server::start(tsa, fx.verifier(&db));
    stamp_and_verify(&fx, &server, "p384-cert", "-sha384", true, "tsa.pem");
    stamp_and_verify(&fx, &server, "p384-bare", "-sha256", false, "tsa.pem");
    server.stop();
}

/// Posts `query`, requires a rejection with `bit`, and that openssl prints `openssl_text`.
fn expect_refusal(fx: &Fixture, server: &Server, query: &Path, bit: FailureBit, openssl_text: &str) {
    let der = post_query(server, query);
    let resp = decode_resp(&der);
    assert_eq!(resp.status.status, PkiStatus::Rejection, "{query:?}");
    assert!(resp.time_stamp_token.is_none());
    let info = resp.status.fail_info.expect("failInfo");
    assert_eq!(info, tsa::asn1::PkiFailureInfo::of(bit), "{query:?}");
    assert!(!resp.status.status_string.expect("statusString").is_empty());
    let reply = query.with_extension("tsr");
    std::fs::write(&reply, &der).unwrap();
    let text = run_ok("openssl", &["ts", "-reply", "-in", reply.to_str().unwrap(), "-text"]);
    assert_eq!(field(&text, "Status:"), "Rejected.", "{text}");
    assert_eq!(field(&text, "Failure info:"), openssl_text, "{text}");
    let _ = fx;
}

#[test]
fn refusals_are_timestamp_responses() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let server = Server::start(tsa, fx.verifier(&db));
    let data = fx.path("doc.txt");
    std::fs::write(&data, b"a document").unwrap();
    let d = data.to_str().unwrap();

    let sha1 = fx.path("sha1.tsq");
    run_ok("openssl", &["ts", "-query", "-data", d, "-sha1", "-out", sha1.to_str().unwrap()]);
    expect_refusal(
        &fx,
        &server,
        &sha1,
        FailureBit::BadAlg,
        "unrecognized or unsupported algorithm identifier",
    );

    let policy = fx.path("policy.tsq");
    run_ok(
        "openssl",
        &["ts", "-query", "-data", d, "-sha256", "-tspolicy", "1.2.3.4.5", "-out", policy.to_str().unwrap()],
    );
    expect_refusal(
        &fx,
        &server,
        &policy,
        FailureBit::UnacceptedPolicy,
        "the requested TSA policy is not supported by the TSA",
    );

    let good = fx.path("good.tsq");
    run_ok("openssl", &["ts", "-query", "-data", d, "-sha256", "-cert", "-out", good.to_str().unwrap()]);
    let good_der = std::fs::read(&good).unwrap();
    let bad_format = "the data submitted has the wrong format";
    let cases: [(&str, Vec<u8>); 4] = [
        ("garbage", b"\x30\x82\xff\xffthis is not a TimeStampReq at all".to_vec()),
        ("empty", Vec::new()),
        ("truncated", good_der[..good_der.len() - 1].to_vec()),
        ("half", good_der[..good_der.len() / 2].to_vec()),
    ];
    for (name, bytes) in cases {
        let p = fx.path(&format!("{name}.tsq"));
        std::fs::write(&p, bytes).unwrap();
        expect_refusal(&fx, &server, &p, FailureBit::BadDataFormat, bad_format);
    }
    server.stop();
}

#[test]
fn http_content_type_and_size_limits() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let server = Server::start(tsa, fx.verifier(&db));
    let url = format!("{}/tsa", server.url);
    let q = fx.path("q.tsq");
    std::fs::write(&q, query_for(SHA256, &sha256(b"x"), Some(7), false)).unwrap();

    let (status, _) = post_file(&url, "text/plain", &q);
    assert_eq!(status, 415);
    let (status, body) = post_file(&url, "Application/Timestamp-Query; charset=binary", &q);
    assert_eq!(status, 200, "media type parameters and case are ignored");
    assert_eq!(decode_resp(&body).status.status, PkiStatus::Granted);

    let big = fx.path("big.tsq");
    std::fs::write(&big, vec![0x30; tsa::MAX_QUERY_BYTES + 1]).unwrap();
    let (status, _) = post_file(&url, "application/timestamp-query", &big);
    assert_eq!(status, 413);
    let at_limit = fx.path("limit.tsq");
    std::fs::write(&at_limit, vec![0x30; tsa::MAX_QUERY_BYTES]).unwrap();
    let (status, body) = post_file(&url, "application/timestamp-query", &at_limit);
    assert_eq!(status, 200, "a body of exactly the limit is read and refused in the protocol");
    assert_eq!(decode_resp(&body).status.status, PkiStatus::Rejection);

    let verify_url = format!("{}/api/v1/timestamps/verify", server.url);
    let (status, body) = post_file(&verify_url, "application/octet-stream", &q);
    assert_eq!(status, 415, "{}", String::from_utf8_lossy(&body));
    server.stop();
}
