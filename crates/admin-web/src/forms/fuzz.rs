//! Property-based fuzzing of the console's form parsers through the real routes, logged in as an
//! officer: `multipart/form-data` bodies (`forms::read`, `forms::read_hashing`: issuing from a CSR,
//! verifying a timestamp) and `application/x-www-form-urlencoded` bodies (revocation, adding a
//! user, generating a key, escrow recovery), each a valid form mutated one part or pair at a time,
//! damaged as text, or random; also random `Content-Type` boundaries. Never a 5xx.
//!
//! Not fuzzed here: the login form, whose every attempt runs Argon2 by design (a few per second
//! at most); its parser is actix-web's, the same as every urlencoded form here.

use std::sync::Arc;

use actix_web::{test, web, App};
use ca_core::{Ca, CaCert, CaConfig, FixedClock};
use cerdb::console_store::{ConsoleSession, SessionId, SessionStage};
use cerdb::CertDb;
use chrono::{TimeZone, Utc};
use fuzz_support::proptest::prelude::*;
use fuzz_support::{text, Fuzz};
use hsm_sim::{HsmSim, MasterKeySource};

use crate::{Console, ConsoleConfig};

const CSRF: &str = "ab";

fn multipart(boundary: &str, parts: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (name, value) in parts {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    body
}

#[derive(Debug, Clone)]
enum Case {
    /// POST to the path with a multipart body and this boundary in the content type.
    Multipart(&'static str, Vec<u8>, String),
    /// POST to the path with a urlencoded body.
    Form(&'static str, Vec<u8>),
}

// `test` is actix-web's test module here: the built-in attribute by its full path.
#[::core::prelude::v1::test]
fn property_console_forms_never_get_a_5xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).single().expect("time")));
    let db = CertDb::open(dir.path().join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(dir.path().join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    let (ca, _) = Ca::init(db, hsm, CaConfig::default(), clock, "test").expect("init");
    let ca = Arc::new(ca);
    let store = tsa::TsaStore::open(ca.db()).expect("tsa store");
    let verifier = tsa::Verifier::new(
        ca.ca_cert(CaCert::Root).to_vec(),
        vec![ca.ca_cert(CaCert::Tsa).to_vec()],
        Arc::new(store),
    )
    .expect("verifier");
    let console = Console::new(ca.clone(), ConsoleConfig::default(), verifier).expect("console");
    let (name, _) = console.accounts().add("olivia", "officer", "test").expect("user");
    let id = SessionId::from_bytes([9; 32]);
    let now = ca.now();
    let session = ConsoleSession {
        user: name,
        stage: SessionStage::Active,
        created_at: now,
        last_seen: now,
        csrf_token: CSRF.repeat(32),
        step_up_at: None,
        pending_totp_sealed: None,
    };
    console.store.put_session(&id, &session).expect("session");
    let cookie = format!("pki_console_session={id}");
    let csrf = CSRF.repeat(32);

    // The CSR form carries a wrong CSRF token: it is read in full and then refused, so the fuzz
    // does not fill the database with certificates (the CSR parser has its own fuzz test).
    let csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAA==\n-----END CERTIFICATE REQUEST-----\n";
    let multiparts = vec![
        multipart(
            "B0und",
            &[
                ("csrf_token", "not-the-token"),
                ("email", "a@example.com"),
                ("usage", "signing"),
                ("csr_pem", csr_pem),
            ],
        ),
        multipart(
            "B0und",
            &[("csrf_token", &csrf), ("token", "\u{30}\u{3}\u{2}\u{1}\u{0}"), ("data", "stamped data")],
        ),
    ];
    let forms = vec![
        format!("csrf_token={csrf}&reason=keyCompromise&totp_code=123456"),
        format!("csrf_token={csrf}&name=bob&role=auditor&totp_code=000000"),
        format!("csrf_token={csrf}&email=a%40example.com&key_type=p256&p12_password=correct+horse"),
        format!("csrf_token={csrf}&serial=0A1B&reason=lost"),
    ];
    let multipart_paths = prop_oneof![Just("/admin/issue/csr"), Just("/admin/timestamps/verify")];
    let form_paths = prop_oneof![
        Just("/admin/certificates/0A1B2C/revoke"),
        Just("/admin/users"),
        Just("/admin/issue/generate"),
        Just("/admin/escrow/request"),
        Just("/admin/users/bob/disable"),
    ];
    let boundary = prop_oneof![
        4 => Just("B0und".to_string()),
        1 => text::garbage(),
    ];
    let strategy = prop_oneof![
        (
            multipart_paths.clone(),
            text::damaged(multiparts.clone()).prop_map(String::into_bytes),
            boundary.clone()
        )
            .prop_map(|(p, b, bd)| Case::Multipart(p, b, bd)),
        (multipart_paths, text::random_bytes(), boundary).prop_map(|(p, b, bd)| Case::Multipart(p, b, bd)),
        (form_paths, text::form_inputs(forms)).prop_map(|(p, b)| Case::Form(p, b)),
    ];

    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let sys = actix_web::rt::System::new();
    let app = sys.block_on(test::init_service(App::new().service(crate::scope(web::Data::new(console)))));
    Fuzz::new(env!("CARGO_MANIFEST_DIR"), "console-forms", 10000).run(strategy, |case| {
        let (path, body, content_type) = match &case {
            Case::Multipart(p, b, bd) => (*p, b.clone(), format!("multipart/form-data; boundary={bd}")),
            Case::Form(p, b) => (*p, b.clone(), "application/x-www-form-urlencoded".to_string()),
        };
        let mut req = test::TestRequest::post().uri(path).insert_header(("cookie", cookie.clone()));
        // A header value the HTTP layer would refuse never reaches the console.
        if let Ok(ct) = actix_web::http::header::HeaderValue::from_str(&content_type) {
            req = req.insert_header(("content-type", ct));
        }
        let status = sys
            .block_on(async { test::call_service(&app, req.set_payload(body).to_request()).await.status() });
        prop_assert!(!status.is_server_error(), "{status} for {case:?}");
        *statuses.borrow_mut().entry(status.as_u16()).or_default() += 1;
        Ok(())
    });
    // The session and the token work: forms got past the guard into their parsers and handlers
    // (refused as bad requests, or answered), not all sent back to the login page.
    let statuses = statuses.into_inner();
    println!("console-forms statuses: {statuses:?}");
    assert!(statuses.get(&400).is_some_and(|n| *n > 0), "no form was refused as a bad request: {statuses:?}");
    assert!(statuses.keys().any(|s| ![303, 400].contains(s)), "no form reached a handler: {statuses:?}");
}
