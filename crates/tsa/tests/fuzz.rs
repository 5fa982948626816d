//! Fuzz-style tests of the two parsers: `respond` (TimeStampReq) and `verify` (tokens). Random,
//! truncated, bit-flipped and oversized inputs: never a panic, always a decodable TimeStampResp
//! (respond) or an error naming a check (verify).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hsm_sim::KeyType;
use tsa::asn1::PkiStatus;
use tsa::{Error, Timestamped, TsaConfig};

/// xorshift64*: a small deterministic generator, so a failure can be replayed from its seed.
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

fn check_response(der: &[u8], input: &[u8]) -> PkiStatus {
    let resp = std::panic::catch_unwind(|| decode_resp(der))
        .unwrap_or_else(|_| panic!("undecodable response to input {}", hex::encode(input)));
    if resp.status.status == PkiStatus::Rejection {
        assert!(resp.time_stamp_token.is_none());
        assert!(resp.status.fail_info.is_some(), "a refusal without failInfo for {}", hex::encode(input));
    } else {
        assert!(resp.time_stamp_token.is_some());
    }
    resp.status.status
}

#[test]
fn respond_survives_random_truncated_flipped_and_oversized_input() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (_db, tsa) = fx.tsa(TsaConfig::default());
    let mut rng = Rng(0x5eed_0000_3161_5816);
    let valid = query_for(SHA256, &sha256(b"fuzz"), Some(0xfeed_beef), true);
    let mut granted = 0;

    // Every truncation of a valid request.
    for n in 0..valid.len() {
        assert_eq!(check_response(&tsa.respond(&valid[..n]), &valid[..n]), PkiStatus::Rejection);
    }
    // Random bytes, and random bytes behind a plausible SEQUENCE header.
    for _ in 0..2000 {
        let len = rng.below(200);
        let mut input = rng.bytes(len);
        if rng.below(2) == 0 && !input.is_empty() {
            input[0] = 0x30;
        }
        check_response(&tsa.respond(&input), &input);
    }
    // Bit flips and byte changes of the valid request (some still valid: granted).
    for _ in 0..400 {
        let mut input = valid.clone();
        for _ in 0..=rng.below(3) {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        if check_response(&tsa.respond(&input), &input) == PkiStatus::Granted {
            granted += 1;
        }
    }
    assert!(granted > 0, "no flipped request was still valid: the loop tested only refusals");
    // Oversized: the valid request with 1 MiB of trailing garbage, and a 1 MiB length header.
    let mut big = valid.clone();
    big.extend(rng.bytes(1 << 20));
    assert_eq!(check_response(&tsa.respond(&big), &big[..64]), PkiStatus::Rejection);
    let mut huge = vec![0x30, 0x83, 0x10, 0x00, 0x00];
    huge.extend(rng.bytes(1 << 20));
    assert_eq!(check_response(&tsa.respond(&huge), &huge[..64]), PkiStatus::Rejection);
    // Deep nesting.
    let nested: Vec<u8> = std::iter::repeat_n([0x30, 0x80], 5000).flatten().collect();
    assert_eq!(check_response(&tsa.respond(&nested), &nested[..64]), PkiStatus::Rejection);
}

#[test]
fn verify_survives_mangled_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, true);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let verifier = fx.verifier(&db);
    let data = b"fuzzed token";
    let resp = stamp(&tsa, data, true);
    let token = token_der(&decode_resp(&resp));
    verifier.verify(&token, Timestamped::Data(data)).unwrap();
    let mut rng = Rng(0x0bad_cafe_1234_5678);

    let refused = |input: &[u8]| match verifier.verify(input, Timestamped::Data(data)) {
        Err(Error::Verification { .. }) => {}
        other => panic!("{other:?} for {}", hex::encode(input)),
    };
    for input in [&resp, &token] {
        for n in 0..input.len() {
            refused(&input[..n]);
        }
    }
    for _ in 0..1000 {
        let mut input = token.clone();
        for _ in 0..=rng.below(4) {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        refused(&input);
    }
    for _ in 0..1000 {
        let len = rng.below(300);
        refused(&rng.bytes(len));
    }
    let mut big = token.clone();
    big.extend(rng.bytes(1 << 20));
    refused(&big);
}

/// Valid queries: SHA-256 with and without nonce and certReq, SHA-512, and the vectors on disk.
fn valid_queries() -> Vec<Vec<u8>> {
    let mut v = vec![
        query_for(SHA256, &sha256(b"fuzz"), Some(0xfeed_beef), true),
        query_for(SHA256, &sha256(b"fuzz"), None, false),
    ];
    for name in ["policy.tsq", "sha256-cert.tsq"] {
        v.push(
            std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name))
                .unwrap(),
        );
    }
    v
}

/// Property-based: queries mutated element by element, truncated, with lying lengths, oversized,
/// random; a fresh seed per run. Every answer a decodable TimeStampResp (a refusal with failInfo).
#[test]
fn property_any_query_gets_a_decodable_response() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (_db, tsa) = fx.tsa(TsaConfig::default());
    fuzz_support::Fuzz::new(env!("CARGO_MANIFEST_DIR"), "tsa-query", 10000).run(
        fuzz_support::der::inputs(valid_queries()),
        |input| {
            check_response(&tsa.respond(&input), &input);
            Ok(())
        },
    );
}

/// Property-based: tokens and responses mutated element by element (into the encapsulated
/// TSTInfo and the signed attributes), truncated, random: the verifier names a failed check,
/// never panics. A changed input may still verify only where the change is outside what is signed
/// (the response's PKIStatusInfo, such as granted made grantedWithMods; the unsigned certificate
/// set): then what it reports is exactly what one of the unchanged tokens says.
#[test]
fn property_any_token_is_verified_or_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, true);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let verifier = fx.verifier(&db);
    let data = b"fuzzed token";
    let resp = stamp(&tsa, data, true);
    let token = token_der(&decode_resp(&resp));
    let bare = token_der(&decode_resp(&stamp(&tsa, data, false)));
    let valid = vec![resp, token, bare];
    let said = |v: &tsa::VerifiedToken| {
        format!("{:?} {} {} {} {}", v.serial, v.gen_time, v.policy, v.tsa_name, v.hash_algorithm)
    };
    let genuine: Vec<String> =
        valid.iter().map(|t| said(&verifier.verify(t, Timestamped::Data(data)).unwrap())).collect();
    fuzz_support::Fuzz::new(env!("CARGO_MANIFEST_DIR"), "tsa-verify", 5000).run(
        fuzz_support::der::inputs(valid),
        |input| {
            match verifier.verify(&input, Timestamped::Data(data)) {
                Ok(v) => fuzz_support::proptest::prop_assert!(
                    genuine.contains(&said(&v)),
                    "a changed token verified with other content ({}): {}",
                    said(&v),
                    hex::encode(&input)
                ),
                Err(Error::Verification { .. }) => {}
                Err(other) => {
                    fuzz_support::proptest::prop_assert!(false, "{other:?} for {}", hex::encode(&input))
                }
            }
            Ok(())
        },
    );
}

/// A multipart body with `parts` (name, bytes) and the boundary `b`.
fn multipart(b: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend(format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").into_bytes());
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{b}--\r\n").into_bytes());
    body
}

/// The HTTP scopes in process: `POST /tsa` with fuzzed queries, and `POST
/// /api/v1/timestamps/verify` with fuzzed tokens in well-formed multipart bodies, with damaged
/// multipart bodies and with random bodies: never a 5xx.
#[test]
fn property_http_never_answers_5xx() {
    use actix_web::{http::header, test, web, App};
    use fuzz_support::proptest::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, true);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let verifier = fx.verifier(&db);
    let data = b"fuzzed token";
    let token = stamp(&tsa, data, true);
    let sys = actix_web::rt::System::new();
    let app = sys.block_on(test::init_service(
        App::new()
            .service(tsa::scope(web::Data::new(tsa)))
            .service(tsa::verify_scope(web::Data::new(verifier))),
    ));
    let hex_digest = hex::encode(sha256(data));
    let well_formed = vec![
        String::from_utf8_lossy(&multipart("XyZ", &[("token", b"TOKEN"), ("data", data)])).into_owned(),
        String::from_utf8_lossy(&multipart("XyZ", &[("token", b"TOKEN"), ("digest", hex_digest.as_bytes())]))
            .into_owned(),
    ];
    let strategy = (
        prop_oneof![
            fuzz_support::der::inputs(valid_queries()),
            fuzz_support::der::inputs(vec![token.clone()]),
        ],
        0u8..4,
        fuzz_support::text::damaged(well_formed),
    );
    fuzz_support::Fuzz::new(env!("CARGO_MANIFEST_DIR"), "tsa-http", 5000).run(
        strategy,
        |(input, how, damaged)| {
            let req = match how {
                0 => test::TestRequest::post()
                    .uri("/tsa")
                    .insert_header((header::CONTENT_TYPE, "application/timestamp-query"))
                    .set_payload(input.clone()),
                1 => test::TestRequest::post()
                    .uri("/api/v1/timestamps/verify")
                    .insert_header((header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ"))
                    .set_payload(multipart("XyZ", &[("token", &input), ("digest", hex_digest.as_bytes())])),
                2 => test::TestRequest::post()
                    .uri("/api/v1/timestamps/verify")
                    .insert_header((header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ"))
                    .set_payload(damaged.replace("TOKEN", &String::from_utf8_lossy(&token))),
                _ => test::TestRequest::post()
                    .uri("/api/v1/timestamps/verify")
                    .insert_header((header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ"))
                    .set_payload(input.clone()),
            };
            let status = sys.block_on(async { test::call_service(&app, req.to_request()).await.status() });
            prop_assert!(!status.is_server_error(), "{status} for case {how}: {}", hex::encode(&input));
            Ok(())
        },
    );
}
