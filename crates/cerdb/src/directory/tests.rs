//! In-process tests of the directory's routes against a real sled database holding records made
//! here (the end-to-end tests in `pki-tests` use real certificates and a running `pki serve`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{test, App};
use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::{
    AuditRecord, CertKind, CertRecord, EmailAddress, Fingerprint, KeyDigest, Revocation, RevocationReason,
    Serial,
};

static SEQ: AtomicU64 = AtomicU64::new(1);

struct Fixture {
    _tmp: tempfile::TempDir,
    db: CertDb,
    clock: Arc<FixedClock>,
    dir: Arc<Directory>,
    next_serial: AtomicU64,
    audit: AtomicU64,
}

const ISSUER_DER: &[u8] = b"issuing CA certificate bytes";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).single().expect("date")
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = CertDb::open(tmp.path().join("db")).expect("open");
        let clock = Arc::new(FixedClock::new(t0()));
        let dir = Directory::open(
            db.clone(),
            &[IssuerCert { ca: CaId::Issuing, der: ISSUER_DER.to_vec() }],
            clock.clone(),
        )
        .expect("directory");
        Fixture { _tmp: tmp, db, clock, dir, next_serial: AtomicU64::new(1000), audit: AtomicU64::new(1) }
    }

    fn record(&self, email: &str, kind: CertKind, nb: DateTime<Utc>, days: i64) -> CertRecord {
        let n =
            self.next_serial.fetch_add(1, Ordering::SeqCst) + SEQ.fetch_add(1, Ordering::SeqCst) * 1_000_000;
        let der = format!("certificate {n} of {email}").into_bytes();
        CertRecord {
            serial: Serial::from_bytes(&n.to_be_bytes()).expect("serial"),
            fingerprint: Fingerprint::of(&der),
            kind,
            email: Some(email.parse().expect("email")),
            subject: format!("CN={email}"),
            issuer: CaId::Issuing,
            not_before: nb,
            not_after: nb + Duration::days(days),
            issued_at: nb,
            key_type: "p256".into(),
            escrow_key: None,
            revocation: None,
            der,
        }
    }

    fn store(&self, recs: &[CertRecord]) {
        let seq = self.audit.fetch_add(1, Ordering::SeqCst);
        self.db.store_issued(recs, &[AuditRecord { seq, bytes: b"test".to_vec() }]).expect("store");
    }

    fn issue(&self, email: &str, kind: CertKind) -> CertRecord {
        let r = self.record(email, kind, t0() - Duration::days(1), 365);
        self.store(std::slice::from_ref(&r));
        r
    }

    fn revoke(&self, rec: &CertRecord, reason: RevocationReason) {
        let seq = self.audit.fetch_add(1, Ordering::SeqCst);
        // The key digest stands for the certificate's key; the directory does not read it.
        let key = (reason == RevocationReason::KeyCompromise).then(|| KeyDigest::of(rec.serial.as_bytes()));
        self.db
            .revoke(
                &rec.serial,
                Revocation { at: t0(), reason },
                key.as_ref(),
                &AuditRecord { seq, bytes: b"r".to_vec() },
            )
            .expect("revoke");
    }

    fn key(&self, name: &str, rate: f64, burst: f64) -> String {
        let (secret, _) =
            self.dir.keys().create(&name.parse().expect("name"), Some(rate), Some(burst), t0()).expect("key");
        secret.expose().to_string()
    }
}

macro_rules! app {
    ($f:expr) => {
        test::init_service(App::new().configure(configure($f.dir.clone()))).await
    };
}

/// Sends `req` from a fixed client address; (status, headers, body).
macro_rules! call {
    ($app:expr, $req:expr $(,)?) => {{
        let res =
            test::call_service($app, $req.peer_addr("192.0.2.10:4000".parse().expect("addr")).to_request())
                .await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = test::read_body(res).await.to_vec();
        (status, headers, body)
    }};
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn get(uri: &str) -> test::TestRequest {
    test::TestRequest::get().uri(uri)
}

#[actix_web::test]
async fn exists_answers_by_address_case_and_hash() {
    let f = Fixture::new();
    f.issue("Alice@Example.com", CertKind::Encryption);
    f.issue("alice@example.com", CertKind::Signing);
    let app = app!(f);

    let (s, h, b) = call!(&app, get("/api/v1/certificates/exists?email=alice@example.com"));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("cache-control").expect("cache-control"), "no-store");
    assert_eq!(
        json(&b),
        serde_json::json!({"email": "alice@example.com", "usage": "encryption", "exists": true})
    );

    let (_, _, b) = call!(&app, get("/api/v1/certificates/exists?email=ALICE@EXAMPLE.COM&usage=signing"));
    assert_eq!(
        json(&b),
        serde_json::json!({"email": "ALICE@example.com", "usage": "signing", "exists": true})
    );

    let (_, _, b) = call!(&app, get("/api/v1/certificates/exists?email=bob@example.com"));
    assert_eq!(json(&b)["exists"], false);

    let hash = "alice@example.com".parse::<EmailAddress>().expect("e").lookup_hash();
    let (s, _, b) = call!(&app, get(&format!("/api/v1/certificates/exists?email_sha256={hash}")));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&b), serde_json::json!({"email_sha256": hash, "usage": "encryption", "exists": true}));
    let upper = hash.to_ascii_uppercase();
    let (_, _, b) = call!(&app, get(&format!("/api/v1/certificates/exists?email_sha256={upper}")));
    assert_eq!(json(&b)["exists"], true);
    let unknown = "nobody@example.com".parse::<EmailAddress>().expect("e").lookup_hash();
    let (_, _, b) = call!(&app, get(&format!("/api/v1/certificates/exists?email_sha256={unknown}")));
    assert_eq!(json(&b)["exists"], false);

    // Well-formed, but no certificate can exist for it.
    let long = format!("{}@example.com", "a".repeat(65));
    let (s, _, b) = call!(&app, get(&format!("/api/v1/certificates/exists?email={long}")));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&b)["exists"], false);
}

#[actix_web::test]
async fn certificates_stored_while_the_directory_runs_are_found_by_hash_even_in_big_batches() {
    let f = Fixture::new();
    let app = app!(f);
    // More index events in one transaction than the subscription buffers (1,024): the store must
    // not block forever, and every address must be findable by hash at once.
    let recs: Vec<CertRecord> = (0..3_000)
        .map(|i| {
            f.record(&format!("bulk{i}@example.org"), CertKind::Encryption, t0() - Duration::days(1), 30)
        })
        .collect();
    let db = f.db.clone();
    let seq = f.audit.fetch_add(1, Ordering::SeqCst);
    let store = std::thread::spawn(move || {
        db.store_issued(&recs, &[AuditRecord { seq, bytes: b"batch".to_vec() }]).expect("store")
    });
    let start = std::time::Instant::now();
    while !store.is_finished() {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "storing a big batch hangs");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    store.join().expect("store thread");
    for i in [0, 1_023, 1_024, 2_999] {
        let hash = format!("Bulk{i}@Example.org").parse::<EmailAddress>().expect("e").lookup_hash();
        let (_, _, b) = call!(&app, get(&format!("/api/v1/certificates/exists?email_sha256={hash}")));
        assert_eq!(json(&b)["exists"], true, "bulk{i}");
    }
    // And right after a single store.
    f.issue("late@example.net", CertKind::Encryption);
    let hash = "late@example.net".parse::<EmailAddress>().expect("e").lookup_hash();
    let (_, _, b) = call!(&app, get(&format!("/api/v1/certificates?email_sha256={hash}")));
    assert!(String::from_utf8_lossy(&b).starts_with("-----BEGIN CERTIFICATE-----"));
}

#[actix_web::test]
async fn the_hash_index_catches_up_with_certificates_stored_before_it_opened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = CertDb::open(tmp.path().join("db")).expect("open");
    let f = Fixture::new(); // only for its record builder
    let r = f.record("early@example.com", CertKind::Signing, t0() - Duration::days(1), 10);
    db.store_issued(&[r], &[AuditRecord { seq: 1, bytes: b"x".to_vec() }]).expect("store");
    let dir = Directory::open(db, &[], Arc::new(FixedClock::new(t0()))).expect("dir");
    let h = parse_sha256_for("early@example.com");
    assert!(dir.exists(&AddressQuery::Sha256(h), crate::Usage::Signing, t0()).expect("exists"));
}

fn parse_sha256_for(email: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(email.parse::<EmailAddress>().expect("e").lookup_hash(), &mut out).expect("hex");
    out
}

#[actix_web::test]
async fn fetch_gives_the_pem_chain_or_json_with_etags() {
    let f = Fixture::new();
    let rec = f.issue("carol@example.com", CertKind::Encryption);
    let app = app!(f);

    let (s, h, b) = call!(&app, get("/api/v1/certificates?email=carol@example.com"));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("content-type").expect("ct"), "application/pem-certificate-chain");
    let body = String::from_utf8(b).expect("utf8");
    assert_eq!(body, format!("{}{}", pem_certificate(&rec.der), pem_certificate(ISSUER_DER)));
    let etag = h.get("etag").expect("etag").to_str().expect("ascii").to_string();
    assert_eq!(h.get("cache-control").expect("cc"), "public, no-cache");
    assert_eq!(h.get("vary").expect("vary"), "Accept");

    let (s, h2, b) = call!(
        &app,
        get("/api/v1/certificates?email=carol@example.com").insert_header(("If-None-Match", etag.clone()))
    );
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert!(b.is_empty());
    assert_eq!(h2.get("etag").expect("etag"), etag.as_str());
    let (s, _, _) = call!(
        &app,
        get("/api/v1/certificates?email=carol@example.com")
            .insert_header(("If-None-Match", "\"other\", W/".to_string() + &etag)),
    );
    assert_eq!(s, StatusCode::NOT_MODIFIED);

    let (s, h, b) = call!(
        &app,
        get("/api/v1/certificates?email=carol@example.com").insert_header(("Accept", "application/json"))
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("content-type").expect("ct"), "application/json");
    assert_ne!(h.get("etag").expect("etag").to_str().expect("a"), etag, "JSON and PEM have different tags");
    let j = json(&b);
    assert_eq!(j["sha256"], rec.fingerprint.to_string());
    assert_eq!(j["serial"], rec.serial.to_string());
    assert_eq!(j["usage"], "encryption");
    assert_eq!(j["status"], "valid");
    assert_eq!(j["revocation"], serde_json::Value::Null);
    assert_eq!(
        j["not_after"],
        (t0() + Duration::days(364)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert_eq!(j["pem"], pem_certificate(&rec.der));
    assert_eq!(j["chain"], serde_json::json!([pem_certificate(ISSUER_DER)]));

    // Negotiation: weights decide; nothing acceptable is 406.
    for (accept, want) in [
        ("application/json;q=0.5, application/pem-certificate-chain", "application/pem-certificate-chain"),
        ("application/*;q=0.2, application/json", "application/json"),
        ("*/*", "application/pem-certificate-chain"),
        ("text/html, application/json;q=0.1", "application/json"),
    ] {
        let (s, h, _) = call!(
            &app,
            get("/api/v1/certificates?email=carol@example.com").insert_header(("Accept", accept))
        );
        assert_eq!(s, StatusCode::OK, "{accept}");
        assert_eq!(h.get("content-type").expect("ct"), want, "{accept}");
    }
    let (s, _, b) = call!(
        &app,
        get("/api/v1/certificates?email=carol@example.com").insert_header(("Accept", "text/html"))
    );
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
    assert!(json(&b)["error"].as_str().expect("error").contains("application/json"));

    let (s, _, b) = call!(&app, get("/api/v1/certificates?email=dave@example.com"));
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(json(&b)["error"].as_str().expect("error").contains("no valid encryption certificate"));
    let (s, _, _) = call!(&app, get("/api/v1/certificates?email=carol@example.com&usage=signing"));
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn revocation_expiry_and_not_yet_valid_are_never_served_but_shown_by_id() {
    let f = Fixture::new();
    let older = f.record("erin@example.com", CertKind::Encryption, t0() - Duration::days(10), 365);
    let newer = f.record("erin@example.com", CertKind::Encryption, t0() - Duration::days(1), 365);
    let expired = f.record("frank@example.com", CertKind::Encryption, t0() - Duration::days(400), 365);
    let future = f.record("gina@example.com", CertKind::Encryption, t0() + Duration::days(2), 365);
    f.store(&[older.clone(), newer.clone(), expired.clone(), future.clone()]);
    let app = app!(f);

    let fetch_fp = |email: &str| format!("/api/v1/certificates?email={email}");
    let (_, h, _) =
        call!(&app, get(&fetch_fp("erin@example.com")).insert_header(("Accept", "application/json")));
    assert!(h
        .get("etag")
        .expect("etag")
        .to_str()
        .expect("a")
        .contains(&hex::encode(&newer.fingerprint.0[..16])));

    f.revoke(&newer, RevocationReason::KeyCompromise);
    let (_, _, b) =
        call!(&app, get(&fetch_fp("erin@example.com")).insert_header(("Accept", "application/json")));
    assert_eq!(json(&b)["sha256"], older.fingerprint.to_string(), "falls back to the older valid one");
    f.revoke(&older, RevocationReason::Superseded);
    let (_, _, b) = call!(&app, get("/api/v1/certificates/exists?email=erin@example.com"));
    assert_eq!(json(&b)["exists"], false);
    let (s, _, _) = call!(&app, get(&fetch_fp("erin@example.com")));
    assert_eq!(s, StatusCode::NOT_FOUND);

    for email in ["frank@example.com", "gina@example.com"] {
        let (_, _, b) = call!(&app, get(&format!("/api/v1/certificates/exists?email={email}")));
        assert_eq!(json(&b)["exists"], false, "{email}");
        let (s, _, _) = call!(&app, get(&fetch_fp(email)));
        assert_eq!(s, StatusCode::NOT_FOUND, "{email}");
    }

    // By serial and fingerprint: any status, with the revocation.
    let (s, _, b) = call!(&app, get(&format!("/api/v1/certificates/by-serial/{}", newer.serial)));
    assert_eq!(s, StatusCode::OK);
    let j = json(&b);
    assert_eq!(j["status"], "revoked");
    assert_eq!(j["revocation"]["reason"], "keyCompromise");
    assert_eq!(j["revocation"]["revoked_at"], t0().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let lower = format!("000{}", newer.serial.to_string().to_ascii_lowercase());
    let (s, _, b) = call!(&app, get(&format!("/api/v1/certificates/by-serial/{lower}")));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&b)["serial"], newer.serial.to_string());
    let (_, _, b) = call!(&app, get(&format!("/api/v1/certificates/{}", expired.fingerprint)));
    assert_eq!(json(&b)["status"], "expired");
    let (_, h, b) = call!(
        &app,
        get(&format!("/api/v1/certificates/{}", future.fingerprint.to_string().to_ascii_uppercase()))
            .insert_header(("Accept", "application/pem-certificate-chain")),
    );
    assert_eq!(h.get("content-type").expect("ct"), "application/pem-certificate-chain");
    assert!(String::from_utf8_lossy(&b).starts_with(&pem_certificate(&future.der)));
    let (s, _, _) = call!(&app, get(&format!("/api/v1/certificates/{}", "ab".repeat(32))));
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call!(&app, get("/api/v1/certificates/by-serial/0000"));
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Time moves on: gina's becomes valid, and at its notAfter it is no longer.
    f.clock.set(t0() + Duration::days(3));
    let (_, _, b) = call!(&app, get("/api/v1/certificates/exists?email=gina@example.com"));
    assert_eq!(json(&b)["exists"], true);
    f.clock.set(future.not_after + Duration::seconds(1));
    let (_, _, b) = call!(&app, get("/api/v1/certificates/exists?email=gina@example.com"));
    assert_eq!(json(&b)["exists"], false);
}

#[actix_web::test]
async fn a_certificate_of_a_withdrawn_issuer_is_never_served_and_shown_revoked_for_ca_compromise_by_id() {
    let f = Fixture::new();
    let valid = f.record("hana@example.com", CertKind::Encryption, t0() - Duration::days(1), 365);
    let revoked = f.record("ivan@example.com", CertKind::Encryption, t0() - Duration::days(1), 365);
    f.store(&[valid.clone(), revoked.clone()]);
    f.revoke(&revoked, RevocationReason::KeyCompromise);
    let app = app!(f);
    let by_serial = format!("/api/v1/certificates/by-serial/{}", valid.serial);
    let by_fingerprint = format!("/api/v1/certificates/{}", valid.fingerprint);
    let (_, h, b) = call!(&app, get(&by_serial));
    assert_eq!(json(&b)["status"], "valid");
    let etag_before = h.get("etag").expect("etag").clone();

    let withdrawn_at = t0() - Duration::hours(2);
    f.db.withdrawn_issuers().set(CaId::Issuing, Some(withdrawn_at));
    let (_, _, b) = call!(&app, get("/api/v1/certificates/exists?email=hana@example.com"));
    assert_eq!(json(&b)["exists"], false);
    let (s, _, _) = call!(&app, get("/api/v1/certificates?email=hana@example.com"));
    assert_eq!(s, StatusCode::NOT_FOUND);
    for path in [&by_serial, &by_fingerprint] {
        let (s, h, b) = call!(&app, get(path));
        assert_eq!(s, StatusCode::OK, "{path}");
        let j = json(&b);
        assert_eq!(j["status"], "revoked", "{path}");
        assert_eq!(j["revocation"]["reason"], "cACompromise", "{path}");
        assert_eq!(
            j["revocation"]["revoked_at"],
            withdrawn_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "{path}"
        );
        // A client revalidating with the old representation's tag gets the new one.
        assert_ne!(h.get("etag").expect("etag"), &etag_before, "{path}");
        let (s, _, _) = call!(&app, get(path).insert_header(("If-None-Match", etag_before.clone())));
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    // A certificate revoked by itself keeps its own revocation.
    let (_, _, b) = call!(&app, get(&format!("/api/v1/certificates/by-serial/{}", revoked.serial)));
    assert_eq!(json(&b)["revocation"]["reason"], "keyCompromise");

    f.db.withdrawn_issuers().set(CaId::Issuing, None);
    let (_, h, b) = call!(&app, get(&by_serial));
    assert_eq!(json(&b)["status"], "valid");
    assert!(json(&b)["revocation"].is_null());
    assert_eq!(h.get("etag").expect("etag"), &etag_before);
}

#[actix_web::test]
async fn bulk_lookup_needs_a_key_answers_in_order_and_refuses_1001() {
    let f = Fixture::new();
    let mut known = Vec::new();
    let mut recs = Vec::new();
    for i in 0..500 {
        let r = f.record(&format!("u{i}@bulk.example"), CertKind::Encryption, t0() - Duration::days(1), 30);
        known.push(r.clone());
        recs.push(r);
    }
    f.store(&recs);
    let key = f.key("mailer", 10_000.0, 10_000.0);
    let app = app!(f);
    let emails: Vec<String> = (0..1_000)
        .map(|i| if i % 2 == 0 { format!("U{}@Bulk.Example", i / 2) } else { format!("x{i}@nobody.example") })
        .collect();
    let body = serde_json::json!({"emails": emails, "usage": "encryption"});
    let post = || test::TestRequest::post().uri("/api/v1/certificates/lookup");

    let (s, h, b) = call!(&app, post().set_json(&body));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get("www-authenticate").expect("challenge"), "Bearer");
    assert!(json(&b)["error"].as_str().expect("e").contains("API key"));

    let (s, _, b) =
        call!(&app, post().insert_header(("Authorization", format!("Bearer {key}"))).set_json(&body));
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let j = json(&b);
    let results = j["results"].as_array().expect("results");
    assert_eq!(results.len(), 1_000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["email"], emails[i].as_str());
        if i % 2 == 0 {
            let rec = &known[i / 2];
            assert_eq!(r["exists"], true, "{i}");
            assert_eq!(r["pem"], pem_certificate(&rec.der));
            assert_eq!(r["sha256"], rec.fingerprint.to_string());
        } else {
            assert_eq!(r["exists"], false, "{i}");
            assert!(r.get("pem").is_none());
        }
    }

    let mut too_many = emails.clone();
    too_many.push("one@more.example".into());
    let (s, _, b) = call!(
        &app,
        post()
            .insert_header(("Authorization", format!("Bearer {key}")))
            .set_json(serde_json::json!({"emails": too_many})),
    );
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(json(&b)["error"].as_str().expect("e").contains("1001 given, at most 1000"));
}

#[actix_web::test]
async fn quotas_keys_and_anonymous_access() {
    let f = Fixture::new();
    f.issue("hank@example.com", CertKind::Encryption);
    // Slow refills (one lookup per 2 s, one per 100 s anonymously), so a stall of the machine
    // between requests cannot refill a bucket and change the count.
    let slow = f.key("slow", 0.5, 5.0);
    let fast = f.key("fast", 1_000.0, 1_000.0);
    let app = app!(f);
    let q = "/api/v1/certificates/exists?email=hank@example.com";
    let with = |k: &str| get(q).insert_header(("Authorization", format!("Bearer {k}")));

    for i in 0..5 {
        let (s, _, _) = call!(&app, with(&slow));
        assert_eq!(s, StatusCode::OK, "request {i}");
    }
    let (s, h, b) = call!(&app, with(&slow));
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 =
        h.get("retry-after").expect("Retry-After").to_str().expect("a").parse().expect("seconds");
    assert!(retry >= 1);
    assert!(json(&b)["error"].as_str().expect("e").contains("rate limit"));
    // Another key is unaffected.
    for _ in 0..50 {
        let (s, _, _) = call!(&app, with(&fast));
        assert_eq!(s, StatusCode::OK);
    }

    // Revoked, unknown and malformed keys.
    f.dir.keys().revoke(&"fast".parse().expect("n"), t0()).expect("revoke");
    let (s, h, b) = call!(&app, with(&fast));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.get("www-authenticate").expect("challenge").to_str().expect("a").contains("invalid_token"));
    assert!(json(&b)["error"].as_str().expect("e").contains("revoked"));
    let (s, _, _) = call!(&app, with(ApiKeySecret::generate().expect("k").expose()));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for bad in ["Bearer", "Bearer not-a-key", "Basic dXNlcjpwdw==", "cdk_x"] {
        let (s, _, b) = call!(&app, get(q).insert_header(("Authorization", bad)));
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(json(&b)["error"].is_string());
    }

    // Anonymous: a per-IP quota (burst 20), then switched off.
    f.dir.keys().set_anonymous(&AnonymousPolicy { enabled: true, rate: 0.01, burst: 20.0 }).expect("set");
    let mut limited = 0;
    for _ in 0..25 {
        let (s, _, _) = call!(&app, get(q));
        if s == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert_eq!(limited, 5, "20 of 25 anonymous requests pass at once");
    let policy = AnonymousPolicy { enabled: false, ..AnonymousPolicy::default() };
    f.dir.keys().set_anonymous(&policy).expect("set");
    let (s, _, b) = call!(&app, get(q));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(json(&b)["error"].as_str().expect("e").contains("anonymous access is disabled"));
}

#[actix_web::test]
async fn a_parameter_the_api_does_not_define_is_refused_not_ignored() {
    let f = Fixture::new();
    f.issue("dora@example.com", CertKind::Encryption);
    let key = f.key("k", 1e6, 1e6);
    let app = app!(f);
    let auth = ("Authorization", format!("Bearer {key}"));
    let hash = "dora@example.com".parse::<EmailAddress>().expect("e").lookup_hash();
    for uri in [
        "/api/v1/certificates/exists?emial=dora@example.com".to_string(),
        "/api/v1/certificates/exists?email=dora@example.com&format=json".into(),
        // What a fuzzer sent: a name of stray UTF-8 and brackets beside a valid hashed address.
        format!("/api/v1/certificates/exists?email_sha256={hash}&%F3%B7%89%86%27G%C3%A5%5B%C3%BA%5D="),
        "/api/v1/certificates?email=dora@example.com&usage=encryption&x=1".into(),
    ] {
        let (s, h, b) = call!(&app, get(&uri).insert_header(auth.clone()));
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(h.get("content-type").expect("ct"), "application/json", "{uri}");
        let msg = json(&b)["error"].as_str().expect("error").to_string();
        assert!(msg.contains("unknown parameter"), "{uri}: {msg}");
    }
    let (s, _, b) = call!(
        &app,
        get(&format!("/api/v1/certificates/exists?email_sha256={hash}&usage=encryption")).insert_header(auth)
    );
    assert_eq!((s, json(&b)["exists"].clone()), (StatusCode::OK, serde_json::Value::Bool(true)));
}

#[actix_web::test]
async fn bad_input_gets_a_json_4xx_naming_the_problem() {
    let f = Fixture::new();
    let key = f.key("k", 1e6, 1e6);
    let app = app!(f);
    let auth = ("Authorization", format!("Bearer {key}"));
    let hash = "ab".repeat(32);
    let gets: Vec<(String, StatusCode, &str)> = vec![
        ("/api/v1/certificates/exists?email=not-an-address".into(), StatusCode::BAD_REQUEST, "email"),
        ("/api/v1/certificates/exists?email=a@b".into(), StatusCode::BAD_REQUEST, "two labels"),
        ("/api/v1/certificates/exists".into(), StatusCode::BAD_REQUEST, "email or email_sha256"),
        (
            format!("/api/v1/certificates/exists?email=a@b.c&email_sha256={hash}"),
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            "/api/v1/certificates/exists?email=a@b.c&email=b@b.c".into(),
            StatusCode::BAD_REQUEST,
            "more than once",
        ),
        (
            "/api/v1/certificates/exists?email=a@b.c&usage=both".into(),
            StatusCode::BAD_REQUEST,
            "unknown usage",
        ),
        ("/api/v1/certificates/exists?email_sha256=xyz".into(), StatusCode::BAD_REQUEST, "64 hex"),
        ("/api/v1/certificates/exists?email=%FF%FE".into(), StatusCode::BAD_REQUEST, "email"),
        ("/api/v1/certificates?email=x".into(), StatusCode::BAD_REQUEST, "email"),
        ("/api/v1/certificates/nothex".into(), StatusCode::BAD_REQUEST, "fingerprint"),
        (format!("/api/v1/certificates/{}", "g".repeat(64)), StatusCode::BAD_REQUEST, "fingerprint"),
        ("/api/v1/certificates/by-serial/xyz".into(), StatusCode::BAD_REQUEST, "serial"),
        ("/api/v1/certificates/by-serial/0x12".into(), StatusCode::BAD_REQUEST, "serial"),
        ("/api/v1/certificates/by-serial/1/2".into(), StatusCode::NOT_FOUND, "no such endpoint"),
        ("/api/v1/nothing".into(), StatusCode::NOT_FOUND, ""),
    ];
    for (uri, want, needle) in gets {
        let (s, h, b) = call!(&app, get(&uri).insert_header(auth.clone()));
        assert_eq!(s, want, "{uri}");
        if uri == "/api/v1/nothing" {
            continue; // outside the directory's mounts: not its answer
        }
        assert_eq!(h.get("content-type").expect("ct"), "application/json", "{uri}");
        let msg = json(&b)["error"].as_str().expect("error").to_string();
        assert!(msg.contains(needle), "{uri}: {msg}");
    }

    let post = |body: Vec<u8>| {
        test::TestRequest::post()
            .uri("/api/v1/certificates/lookup")
            .insert_header(auth.clone())
            .insert_header(("Content-Type", "application/json"))
            .set_payload(body)
    };
    let big = format!("{{\"emails\": [\"{}\"]}}", "a".repeat(MAX_BODY_BYTES)).into_bytes();
    let bodies: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, "invalid JSON"),
        (b"".to_vec(), StatusCode::BAD_REQUEST, "invalid JSON"),
        (b"{\"emails\": \"a@b.c\"}".to_vec(), StatusCode::BAD_REQUEST, "invalid JSON"),
        (b"{\"emails\": [], \"extra\": 1}".to_vec(), StatusCode::BAD_REQUEST, "extra"),
        (b"{\"emails\": [\"a@b.c\", \"bad\"]}".to_vec(), StatusCode::BAD_REQUEST, "emails[1]"),
        (
            b"{\"emails\": [\"a@b.c\"], \"usage\": \"nope\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown usage",
        ),
        (b"{\"emails\": [], \"usage\": null}".to_vec(), StatusCode::BAD_REQUEST, "invalid type: null"),
        (big, StatusCode::PAYLOAD_TOO_LARGE, "1048576"),
    ];
    for (body, want, needle) in bodies {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let (s, _, b) = call!(&app, post(body));
        assert_eq!(s, want, "{shown}");
        let msg = json(&b)["error"].as_str().expect("error").to_string();
        assert!(msg.contains(needle), "{shown}: {msg}");
    }
    let (s, _, b) = call!(&app, post(b"{\"emails\": []}".to_vec()));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&b)["results"], serde_json::json!([]));

    // Wrong methods: 405 with Allow.
    let (s, h, _) = call!(&app, test::TestRequest::delete().uri("/api/v1/certificates/exists"));
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h.get("allow").expect("allow"), "GET, HEAD");
    assert_eq!(h.get("content-type").expect("ct"), "application/json");
    let (s, h, b) = call!(&app, get("/api/v1/certificates/lookup"));
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h.get("allow").expect("allow"), "POST");
    assert_eq!(json(&b)["error"], "method not allowed: use POST");
    // HEAD is GET's answer (actix-web leaves its body out on the wire).
    let head = test::TestRequest::default().method(actix_web::http::Method::HEAD);
    let (s, h, _) = call!(&app, head.uri("/api/v1/certificates/exists?email=nobody@example.com"));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("content-type").expect("ct"), "application/json");
}

#[actix_web::test]
async fn every_documented_operation_is_routed() {
    let f = Fixture::new();
    let rec = f.issue("ivan@example.com", CertKind::Encryption);
    let key = f.key("k", 1e6, 1e6);
    let app = app!(f);
    let doc: serde_json::Value = serde_json::from_str(openapi_document()).expect("json");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            let uri = path
                .replace("{fingerprint}", &rec.fingerprint.to_string())
                .replace("{serial}", &rec.serial.to_string());
            let req = match method.as_str() {
                "get" => get(&format!("{uri}?email=ivan@example.com")),
                "post" => test::TestRequest::post()
                    .uri(&uri)
                    .set_json(serde_json::json!({"emails": ["ivan@example.com"]})),
                other => panic!("unexpected method {other}"),
            };
            let (s, _, b) = call!(&app, req.insert_header(("Authorization", format!("Bearer {key}"))));
            assert_eq!(s, StatusCode::OK, "{method} {path}: {}", String::from_utf8_lossy(&b));
        }
    }
}

#[actix_web::test]
async fn random_and_truncated_input_never_gets_a_server_error() {
    let f = Fixture::new();
    f.issue("judy@example.com", CertKind::Encryption);
    let key = f.key("k", 1e9, 1e9);
    let app = app!(f);
    // A small deterministic generator (xorshift) over bytes that matter to the parsers.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"aZ09@.-_%+&=?#/\\\"'{}[]:,~ \x00\xff";
    let seeds = [
        "email=judy@example.com&usage=encryption",
        "{\"emails\": [\"judy@example.com\"], \"usage\": \"signing\"}",
    ];
    for round in 0..400 {
        let seed = seeds[round % 2].as_bytes();
        let mut s: Vec<u8> = seed[..(next() as usize % (seed.len() + 1))].to_vec();
        for _ in 0..(next() % 6) {
            let pos = next() as usize % (s.len() + 1);
            s.insert(pos, alphabet[next() as usize % alphabet.len()]);
        }
        let req = if round % 2 == 0 {
            // Structure characters and stray '%' stay raw; everything else is percent-encoded.
            let q: String = s
                .iter()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~=&@%+".contains(b) {
                        (*b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let path = ["/api/v1/certificates/exists", "/api/v1/certificates"][round % 4 / 2];
            get(&format!("{path}?{q}"))
        } else {
            test::TestRequest::post().uri("/api/v1/certificates/lookup").set_payload(s.clone())
        };
        let (status, h, b) = call!(&app, req.insert_header(("Authorization", format!("Bearer {key}"))));
        assert!(
            status.is_success() || status.is_client_error(),
            "{status} for {:?}",
            String::from_utf8_lossy(&s)
        );
        if status.is_client_error() {
            assert_eq!(h.get("content-type").expect("ct"), "application/json");
            assert!(json(&b)["error"].is_string());
        }
    }
}

/// Property-based fuzzing of the same routes (tests/fuzz.rs).
mod fuzz;
