//! Fuzz-style test of the request parser and responder: random, truncated, mutated and oversized
//! input into `respond` never panics and always gives a decodable `OCSPResponse`.

mod common;

use chrono::{TimeZone, Utc};
use common::*;
use der::Decode;
use ocsp_responder::{OcspResponder, ResponseStatus};
use x509_ocsp::{BasicOcspResponse, OcspResponse, OcspResponseStatus};

/// xorshift64*: deterministic, so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Feeds `input` and checks the answer; returns its status.
fn check(r: &OcspResponder, input: &[u8], what: &str) -> ResponseStatus {
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("time");
    let reply = r.respond_detailed(input, now);
    let resp =
        OcspResponse::from_der(&reply.der).unwrap_or_else(|e| panic!("{what}: undecodable response: {e}"));
    match reply.status {
        ResponseStatus::Successful => {
            assert_eq!(resp.response_status, OcspResponseStatus::Successful, "{what}");
            let rb = resp.response_bytes.unwrap_or_else(|| panic!("{what}: no responseBytes"));
            let basic = BasicOcspResponse::from_der(rb.response.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: undecodable BasicOCSPResponse: {e}"));
            assert!(!basic.tbs_response_data.responses.is_empty(), "{what}");
        }
        other => {
            assert!(resp.response_bytes.is_none(), "{what}");
            assert_eq!(reply.der, vec![0x30, 0x03, 0x0a, 0x01, other.code()], "{what}");
        }
    }
    reply.status
}

#[test]
fn random_truncated_mutated_and_oversized_requests() {
    let pki = Pki::new();
    let r = pki.responder();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = vec![
        std::fs::read(data("req-sha1-1001.der")).expect("vector"),
        std::fs::read(data("req-sha256-nonce-1001.der")).expect("vector"),
        std::fs::read(data("req-sha1-three.der")).expect("vector"),
        pki.request(&[GOOD, REVOKED, NEVER_ISSUED], OID_SHA256, Some(&[0xee; 128])),
    ];
    let mut successes = 0;

    for seed in &seeds {
        assert_eq!(check(&r, seed, "seed"), ResponseStatus::Successful);
        // Every truncation.
        for len in 0..seed.len() {
            let status = check(&r, &seed[..len], &format!("truncated to {len}"));
            assert_ne!(status, ResponseStatus::Successful, "a truncated request was answered");
        }
        // Every single-octet corruption, with a few values each.
        for i in 0..seed.len() {
            for v in [0x00, 0xff, seed[i] ^ 0x01, seed[i] ^ 0x80, rng.next() as u8] {
                let mut m = seed.clone();
                m[i] = v;
                if check(&r, &m, &format!("octet {i} set to {v:#04x}")) == ResponseStatus::Successful {
                    successes += 1;
                }
            }
        }
        // Random splices: insert or delete runs.
        for round in 0..300 {
            let mut m = seed.clone();
            let at = rng.below(m.len() + 1);
            if rng.next() & 1 == 0 {
                let n = 1 + rng.below(16);
                let ins = rng.bytes(n);
                m.splice(at..at, ins);
            } else {
                let end = (at + 1 + rng.below(8)).min(m.len());
                m.drain(at..end);
            }
            check(&r, &m, &format!("splice round {round}"));
        }
    }
    assert!(successes > 0, "some corruptions (say of a serial octet) still make requests");

    // Pure noise of every small length, then larger, and DER-looking noise.
    for len in 0..300 {
        let noise = rng.bytes(len);
        check(&r, &noise, &format!("{len} random octets"));
        let mut der_like = vec![0x30, 0x82, (len >> 8) as u8, len as u8];
        der_like.extend(rng.bytes(len));
        check(&r, &der_like, &format!("SEQUENCE of {len} random octets"));
    }
    // Deep nesting and absurd lengths.
    let mut nested = Vec::new();
    for _ in 0..3000 {
        nested.extend([0x30, 0x80]);
    }
    check(&r, &nested, "indefinite-length nesting");
    check(&r, &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], "4 GiB length");
    check(&r, &[0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9], "9-octet length");

    // Oversized: 2 MiB of noise, and a valid request padded to 2 MiB.
    let big = rng.bytes(2 * 1024 * 1024);
    assert_eq!(check(&r, &big, "2 MiB of noise"), ResponseStatus::MalformedRequest);
    let mut padded = seeds[0].clone();
    padded.resize(2 * 1024 * 1024, 0);
    assert_eq!(check(&r, &padded, "2 MiB padded request"), ResponseStatus::MalformedRequest);
}

/// Valid requests: the vectors on disk and three made here (one with a 128-octet nonce).
fn valid_requests(pki: &Pki) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = ["req-sha1-1001.der", "req-sha256-nonce-1001.der", "req-sha1-three.der"]
        .iter()
        .map(|n| std::fs::read(data(n)).expect("vector"))
        .collect();
    v.push(pki.request(&[GOOD, REVOKED, NEVER_ISSUED], OID_SHA256, Some(&[0xee; 128])));
    v.push(pki.request(&[REVOKED], OID_SHA1, Some(&[1])));
    v
}

/// Property-based: requests mutated element by element (structure-aware), truncated, with lying
/// lengths, oversized, and random bytes, with a fresh seed per run; every answer a decodable
/// OCSPResponse of the status it claims (see `check`).
#[test]
fn property_any_request_gets_a_decodable_response() {
    let pki = Pki::new();
    let r = pki.responder();
    let strategy = fuzz_support::der::inputs(valid_requests(&pki));
    fuzz_support::Fuzz::new(env!("CARGO_MANIFEST_DIR"), "ocsp-request", 20000).run(strategy, |input| {
        check(&r, &input, "fuzzed request");
        Ok(())
    });
}

/// A GET path for `der` (base64, percent-encoded as clients do), or raw text when `raw`.
fn get_uri(der: &[u8], raw: bool) -> String {
    use base64::Engine as _;
    let text = if raw {
        String::from_utf8_lossy(der).into_owned()
    } else {
        base64::engine::general_purpose::STANDARD.encode(der)
    };
    let escaped: String = text
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect();
    format!("/ocsp/{escaped}")
}

/// The HTTP scope in process: the same inputs by POST (with and without the content type) and by
/// GET (base64 and raw): never a 5xx.
#[test]
fn property_http_never_answers_5xx() {
    use actix_web::{http::header, test, App};
    let pki = Pki::new();
    let sys = actix_web::rt::System::new();
    let app = sys.block_on(test::init_service(App::new().service(ocsp_responder::scope(pki.responder()))));
    let strategy = (fuzz_support::der::inputs(valid_requests(&pki)), 0u8..4);
    fuzz_support::Fuzz::new(env!("CARGO_MANIFEST_DIR"), "ocsp-http", 5000).run(strategy, |(input, how)| {
        let (get_b64, get_raw) = (get_uri(&input, false), get_uri(&input, true));
        // A URI over http's limit (64 KiB) never reaches a service: the HTTP layer refuses it.
        let fits = |u: &str| u.parse::<actix_web::http::Uri>().is_ok();
        let req = match how {
            0 => test::TestRequest::post()
                .uri("/ocsp")
                .insert_header((header::CONTENT_TYPE, "application/ocsp-request"))
                .set_payload(input.clone()),
            1 => test::TestRequest::post().uri("/ocsp/").set_payload(input.clone()),
            2 if fits(&get_b64) => test::TestRequest::get().uri(&get_b64),
            3 if fits(&get_raw) => test::TestRequest::get().uri(&get_raw),
            _ => return Ok(()),
        };
        let status = sys.block_on(async { test::call_service(&app, req.to_request()).await.status() });
        fuzz_support::proptest::prop_assert!(
            !status.is_server_error(),
            "{status} for {}",
            hex::encode(&input)
        );
        Ok(())
    });
}
