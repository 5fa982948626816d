//! Property-based fuzzing of the directory's inputs through its routes in process: query strings
//! (`exists`, fetch), path parameters (serial, fingerprint), `Accept` headers and bulk-lookup JSON
//! bodies, each a valid request mutated one pair, value or field at a time, damaged as text, or
//! random. Never a 5xx, and every refusal a JSON error body. `PROPTEST_CASES` sets the case count.

use fuzz_support::proptest::prelude::*;
use fuzz_support::{text, Fuzz};

use actix_web::test::{self, init_service, TestRequest};

use super::{configure, get, App, CertKind, EmailAddress, Fixture, RevocationReason};

fn escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b {
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'@'
            | b'='
            | b'&'
            | b'%' => char::from(*b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request of the fuzz: which route, its varying part, and an `Accept` header.
#[derive(Debug, Clone)]
enum Case {
    Exists(Vec<u8>),
    Fetch(Vec<u8>, String),
    BySerial(String),
    ByFingerprint(String, String),
    Lookup(Vec<u8>),
}

// `test` names actix-web's test module here (the `call!` macro needs it): the built-in attribute
// by its full path.
#[::core::prelude::v1::test]
fn property_directory_inputs_never_get_a_5xx() {
    let f = Fixture::new();
    let alice = f.issue("alice@example.com", CertKind::Encryption);
    f.issue("alice@example.com", CertKind::Signing);
    let bob = f.issue("bob@example.com", CertKind::Encryption);
    f.revoke(&bob, RevocationReason::KeyCompromise);
    let secret = f.key("fuzz", 1e9, 1e9);
    let hash = "alice@example.com".parse::<EmailAddress>().expect("e").lookup_hash();

    let queries = vec![
        "email=alice@example.com".to_string(),
        "email=alice@example.com&usage=signing".to_string(),
        format!("email_sha256={hash}&usage=encryption"),
        "email=bob@example.com&usage=encryption".to_string(),
    ];
    let bodies = vec![
        serde_json::json!({"emails": ["alice@example.com", "bob@example.com"], "usage": "encryption"}),
        serde_json::json!({"emails": ["ALICE@example.com"]}),
        serde_json::json!({"emails": [], "usage": "signing"}),
    ];
    let accept = prop_oneof![
        Just(String::new()),
        Just("application/json".to_string()),
        Just("application/pem-certificate-chain".to_string()),
        Just("application/pkix-cert".to_string()),
        text::garbage(),
    ];
    let serial = alice.serial.to_string();
    let fingerprint = alice.fingerprint.to_string();
    let strategy = prop_oneof![
        3 => text::form_inputs(queries.clone()).prop_map(Case::Exists),
        2 => (text::form_inputs(queries), accept.clone()).prop_map(|(q, a)| Case::Fetch(q, a)),
        1 => text::damaged(vec![serial]).prop_map(Case::BySerial),
        1 => (text::damaged(vec![fingerprint]), accept).prop_map(|(p, a)| Case::ByFingerprint(p, a)),
        3 => text::json_inputs(bodies).prop_map(Case::Lookup),
    ];

    let sys = actix_web::rt::System::new();
    let app = sys.block_on(init_service(App::new().configure(configure(f.dir.clone()))));
    Fuzz::new(env!("CARGO_MANIFEST_DIR"), "directory-http", 10000).run(strategy, |case| {
        // What the HTTP layer refuses (a URI over 64 KiB, a header value with control characters)
        // never reaches the routes.
        let accept = |r: TestRequest, a: &str| match actix_web::http::header::HeaderValue::from_str(a) {
            Ok(v) => r.insert_header(("accept", v)),
            Err(_) => r,
        };
        let uri_ok = |u: &str| u.parse::<actix_web::http::Uri>().is_ok();
        let uri = match &case {
            Case::Exists(q) => format!("/api/v1/certificates/exists?{}", escaped(q)),
            Case::Fetch(q, _) => format!("/api/v1/certificates?{}", escaped(q)),
            Case::BySerial(s) => format!("/api/v1/certificates/by-serial/{}", escaped(s.as_bytes())),
            Case::ByFingerprint(p, _) => format!("/api/v1/certificates/{}", escaped(p.as_bytes())),
            Case::Lookup(_) => "/api/v1/certificates/lookup".to_string(),
        };
        if !uri_ok(&uri) {
            return Ok(());
        }
        let req = match &case {
            Case::Exists(_) | Case::BySerial(_) => get(&uri),
            Case::Fetch(_, a) | Case::ByFingerprint(_, a) => accept(get(&uri), a),
            Case::Lookup(body) => TestRequest::post()
                .uri(&uri)
                .insert_header(("content-type", "application/json"))
                .insert_header(("authorization", format!("Bearer {secret}")))
                .set_payload(body.clone()),
        };
        let (status, headers, body) = sys.block_on(async { call!(&app, req) });
        prop_assert!(!status.is_server_error(), "{status} for {case:?}: {}", String::from_utf8_lossy(&body));
        if status.is_client_error() && status.as_u16() != 406 {
            let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            prop_assert!(
                ct.starts_with("application/json") || ct.starts_with("application/problem+json"),
                "{status} {ct} for {case:?}"
            );
        }
        Ok(())
    });
}
