//! The incremental views against rebuilds from the store, and the chain check against
//! tampering.

use std::sync::Arc;

use ca_core::{Ca, CaCert, CaConfig, FixedClock, IssueRequest};
use cerdb::{CertDb, EmailAddress, RevocationReason, Usage};
use chrono::{TimeZone, Utc};
use hsm_sim::{HsmSim, MasterKeySource};

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    ca: Arc<Ca>,
    clock: Arc<FixedClock>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).single().expect("time")));
    let db = CertDb::open(dir.path().join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(dir.path().join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    let (ca, _) = Ca::init(db, hsm, CaConfig::default(), clock.clone(), "test").expect("init");
    Fixture { _dir: dir, ca: Arc::new(ca), clock }
}

fn request(email: &str, usage: Usage) -> IssueRequest {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, email);
    let csr = params.serialize_request(&kp).expect("csr").der().to_vec();
    IssueRequest { email: email.parse().expect("email"), usage, csr }
}

/// Replaces the `details` of audit entry `seq` in the store, keeping it valid JSON.
fn tamper(ca: &Ca, seq: u64) {
    let tree = ca.db().raw_trees().expect("embedded engine");
    let bytes = tree.get("audit", &seq.to_be_bytes()).expect("read").expect("entry exists");
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    v["details"] = serde_json::Value::String("altered afterwards".into());
    tree.insert("audit", &seq.to_be_bytes(), &serde_json::to_vec(&v).expect("encode")).expect("write");
}

fn head(ca: &Ca) -> u64 {
    ca.db().last_audit().expect("audit").map(|r| r.seq).unwrap_or(0)
}

/// The cached views equal views built from scratch now.
fn assert_current(cache: &Cache, ca: &Ca, step: &str) {
    let certs = cache.certs(ca).expect("certs");
    let fresh = Certs::build(ca).expect("rebuild");
    assert_eq!(certs.head, head(ca), "{step}: certificate view head");
    assert_eq!(certs.rows, fresh.rows, "{step}: certificate rows");
    assert_eq!(certs.emails, fresh.emails, "{step}: search keys");
    let audit = cache.audit(ca).expect("audit");
    let fresh = Audit::build(ca).expect("rebuild");
    assert_eq!(audit.head, head(ca), "{step}: audit view head");
    assert_eq!(audit.entries, fresh.entries, "{step}: audit entries");
    assert_eq!(audit.actions, fresh.actions, "{step}: actions");
    assert_eq!(audit.verified, fresh.verified, "{step}: chain check");
    assert_eq!(audit.last_hash, fresh.last_hash, "{step}: last verified hash");
    // The same verdict as the CA's own check of the whole chain.
    assert_eq!(audit.verified, ca.audit_verify().map_err(|e| e.to_string()), "{step}: ca-core agrees");
}

#[test]
fn incremental_views_equal_a_rebuild_after_mixed_issuances_and_revocations() {
    let f = fixture();
    let ca = &f.ca;
    let cache = Cache::default();
    assert_current(&cache, ca, "first build");
    assert_eq!(cache.full_builds(), 2, "one build per view");

    // A batch in one second: ordered by serial within the second.
    let batch: Vec<_> = (0..5)
        .map(|i| {
            request(
                &format!("Batch{i}@example.com"),
                if i % 2 == 0 { Usage::Signing } else { Usage::Encryption },
            )
        })
        .collect();
    let issued = ca.issue_many(&batch, "test").expect("batch");
    assert_current(&cache, ca, "batch");

    // A snapshot held by a request in progress stays as it was.
    let held = cache.certs(ca).expect("certs");
    let before = held.rows.len();
    f.clock.advance(Duration::seconds(1));
    let one = ca.issue(&request("carol@example.com", Usage::Signing), "test").expect("issue");
    assert_current(&cache, ca, "one more");
    assert_eq!(held.rows.len(), before, "the held snapshot did not change");
    assert_eq!(cache.certs(ca).expect("certs").rows.len(), before + 1);

    f.clock.advance(Duration::seconds(5));
    ca.revoke(&issued[1].record.serial, RevocationReason::KeyCompromise, "test").expect("revoke");
    assert_current(&cache, ca, "revocation (with its CRL)");

    let carol: EmailAddress = "carol@example.com".parse().expect("email");
    let (generated, _) = ca
        .issue_generated(
            &carol,
            Usage::Encryption,
            Some(hsm_sim::KeyType::P256),
            "a-long-enough-password",
            "test",
        )
        .expect("generated");
    assert_current(&cache, ca, "escrowed issuance (issue + escrow.export)");
    let r = ca.request_recovery(&generated.record.serial, "cli:olivia", "").expect("request");
    ca.approve_recovery(&r.id, "cli:oscar").expect("approve");
    ca.release_recovery(&r.id, "cli:olivia", "another-long-password").expect("recover");
    ca.audit_event("console:olivia", AuditAction::ConsoleLogin, true, "").expect("event");
    assert!(ca.issue(&request("dave@example.com", Usage::Signing), "test").is_ok());
    let mut bad = request("erin@example.com", Usage::Signing);
    bad.csr.truncate(20);
    assert!(ca.issue(&bad, "test").is_err(), "refused, with a refusal in the log");
    assert_current(&cache, ca, "recovery, console event, issuance, refusal");

    // Days later: statuses change with time alone; a revocation of the newest.
    f.clock.advance(Duration::days(40));
    ca.revoke(&one.record.serial, RevocationReason::Superseded, "test").expect("revoke");
    ca.regenerate_crl(cerdb::CaId::Issuing, "system").expect("crl");
    assert_current(&cache, ca, "later revocation and CRL");

    // The console's TLS certificate is reissued near its end: a system issuance.
    let rows = cache.certs(ca).expect("certs").rows.len();
    f.clock.advance(Duration::days(i64::from(CaConfig::default().tls.validity_days) - 20));
    ca.tls_server_certificate().expect("tls");
    assert_current(&cache, ca, "TLS reissue");
    assert_eq!(cache.certs(ca).expect("certs").rows.len(), rows + 1, "a new TLS certificate");

    assert_eq!(cache.full_builds(), 2, "every change so far was applied incrementally");

    // An action the views do not know: the certificate view is rebuilt, the audit view is not.
    ca.audit_event("system", AuditAction::Other("something.new".into()), true, "").expect("event");
    assert_current(&cache, ca, "unknown action");
    assert_eq!(cache.full_builds(), 3);
}

#[test]
fn a_tampered_entry_after_the_last_verified_one_is_reported() {
    let f = fixture();
    let ca = &f.ca;
    let cache = Cache::default();
    let n = head(ca);
    assert_eq!(cache.audit(ca).expect("audit").verified, Ok(n));

    ca.issue_many(&[request("a@example.com", Usage::Signing), request("b@example.com", Usage::Signing)], "t")
        .expect("issue");
    tamper(ca, n + 2);
    let audit = cache.audit(ca).expect("audit");
    let expected = format!("audit log entry {} is invalid: content does not match its hash", n + 2);
    assert_eq!(audit.verified, Err(expected.clone()));
    assert_eq!(ca.audit_verify().map_err(|e| e.to_string()), Err(expected.clone()), "ca-core agrees");
    assert_eq!(audit.entries.len() as u64, n + 2, "the entries are still shown");

    // Later entries do not hide the break: each change re-checks the whole chain.
    let builds = cache.full_builds();
    ca.issue(&request("c@example.com", Usage::Signing), "t").expect("issue");
    assert_eq!(cache.audit(ca).expect("audit").verified, Err(expected));
    assert_eq!(cache.full_builds(), builds + 1);
}

#[test]
fn a_broken_link_and_a_missing_entry_after_the_last_verified_one_are_reported() {
    let f = fixture();
    let ca = &f.ca;
    let cache = Cache::default();
    let n = head(ca);
    cache.audit(ca).expect("audit");
    ca.issue(&request("a@example.com", Usage::Signing), "t").expect("issue");
    ca.issue(&request("b@example.com", Usage::Signing), "t").expect("issue");
    // Entry n + 1 removed: n + 2 is out of place.
    let tree = ca.db().raw_trees().expect("embedded engine");
    tree.remove("audit", &(n + 1).to_be_bytes()).expect("remove");
    let got = cache.audit(ca).expect("audit").verified.clone();
    assert_eq!(got, ca.audit_verify().map_err(|e| e.to_string()), "ca-core agrees");
    assert!(got.as_ref().is_err_and(|e| e.contains(&format!("entry {}", n + 2))), "{got:?}");
}

#[test]
fn an_entry_altered_after_it_was_verified_is_found_by_the_periodic_full_check() {
    let f = fixture();
    let ca = &f.ca;
    let cache = Cache::default();
    cache.audit(ca).expect("audit");
    tamper(ca, 2);
    ca.issue(&request("a@example.com", Usage::Signing), "t").expect("issue");
    // The new entry chains onto the verified head; the old one is not read again yet.
    assert!(cache.audit(ca).expect("audit").verified.is_ok());

    f.clock.advance(Duration::seconds(FULL_CHECK_SECS));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let verdict = loop {
        let v = cache.audit(ca).expect("audit").verified.clone();
        if v.is_err() || std::time::Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(verdict, Err("audit log entry 2 is invalid: content does not match its hash".into()));
}

#[test]
fn each_action_has_a_known_effect_on_the_certificates() {
    let entry = |action: &str, serial: Option<&str>, outcome: &str| AuditEntry {
        seq: 1,
        time: Utc::now(),
        actor: "t".into(),
        action: action.into(),
        serial: serial.map(str::to_string),
        outcome: outcome.into(),
        details: String::new(),
        prev_hash: GENESIS_HASH.into(),
        mac: None,
        hash: String::new(),
    };
    let s: Serial = "0A1B".parse().expect("serial");
    assert_eq!(change_of(&entry("issue", Some("0A1B"), "ok")), Change::Cert(s.clone()));
    assert_eq!(change_of(&entry("revoke", Some("0A1B"), "ok")), Change::Cert(s));
    assert_eq!(change_of(&entry("issue", None, "refused: bad CSR")), Change::None);
    assert_eq!(change_of(&entry("issue", None, "ok")), Change::Unknown);
    assert_eq!(change_of(&entry("revoke", Some("not hex"), "ok")), Change::Unknown);
    for quiet in ["crl", "escrow.export", "escrow.recover", "console.login", "console.user.add"] {
        assert_eq!(change_of(&entry(quiet, None, "ok")), Change::None, "{quiet}");
    }
    assert_eq!(change_of(&entry("init", None, "ok")), Change::Unknown);
    assert_eq!(change_of(&entry("renew", Some("0A1B"), "ok")), Change::Unknown);
}

mod pages {
    //! Through the real routes: what a logged-in auditor sees right after each change.

    use actix_web::{test, web, App};
    use cerdb::console_store::{ConsoleSession, SessionId, SessionStage};

    use super::*;
    use crate::{Console, ConsoleConfig};

    fn console(ca: &Arc<Ca>) -> (Console, String) {
        let store = tsa::TsaStore::open(ca.db()).expect("tsa store");
        let verifier = tsa::Verifier::new(
            ca.ca_cert(CaCert::Root).to_vec(),
            vec![ca.ca_cert(CaCert::Tsa).to_vec()],
            Arc::new(store),
        )
        .expect("verifier");
        let console = Console::new(ca.clone(), ConsoleConfig::default(), verifier).expect("console");
        let (name, _) = console.accounts().add("audrey", "auditor", "test").expect("user");
        let id = SessionId::from_bytes([7; 32]);
        let now = ca.now();
        let session = ConsoleSession {
            user: name,
            stage: SessionStage::Active,
            created_at: now,
            last_seen: now,
            csrf_token: "00".repeat(32),
            step_up_at: None,
            pending_totp_sealed: None,
        };
        console.store.put_session(&id, &session).expect("session");
        (console, format!("pki_console_session={id}"))
    }

    #[actix_web::test]
    async fn pages_show_each_change_at_once_and_the_audit_page_reports_tampering() {
        let f = fixture();
        let ca = &f.ca;
        let (console, cookie) = console(ca);
        let app = test::init_service(App::new().service(crate::scope(web::Data::new(console)))).await;
        let get = |uri: &str| {
            test::TestRequest::get().uri(uri).insert_header(("cookie", cookie.clone())).to_request()
        };
        let body = |res: actix_web::dev::ServiceResponse| async move {
            assert_eq!(res.status(), 200);
            String::from_utf8(test::read_body(res).await.to_vec()).expect("utf-8")
        };

        let page = body(test::call_service(&app, get("/admin/audit")).await).await;
        assert!(page.contains("intact"), "{page}");
        let page = body(test::call_service(&app, get("/admin/certificates?q=ExAmPle.com")).await).await;
        assert!(page.contains(">0 certificate(s);"), "{page}");

        let a = ca.issue(&request("Alice@example.com", Usage::Signing), "t").expect("issue");
        let page =
            body(test::call_service(&app, get("/admin/certificates?q=ALICE@EX&status=valid")).await).await;
        assert!(page.contains(">1 certificate(s);") && page.contains(&a.record.serial.to_string()), "{page}");
        let page = body(test::call_service(&app, get("/admin/")).await).await;
        assert!(page.contains("<td>signing</td><td class=\"num\">1</td><td class=\"num\">0</td>"), "{page}");

        ca.revoke(&a.record.serial, RevocationReason::Superseded, "t").expect("revoke");
        let page = body(test::call_service(&app, get("/admin/")).await).await;
        assert!(page.contains("<td>signing</td><td class=\"num\">0</td><td class=\"num\">1</td>"), "{page}");
        let page =
            body(test::call_service(&app, get("/admin/certificates?q=alice&status=valid")).await).await;
        assert!(page.contains(">0 certificate(s);"), "{page}");
        let page =
            body(test::call_service(&app, get("/admin/certificates?q=alice&status=revoked")).await).await;
        assert!(page.contains(">1 certificate(s);"), "{page}");

        let page = body(test::call_service(&app, get("/admin/audit?action=REVOKE")).await).await;
        assert!(page.contains(">1 entries;") && page.contains("intact"), "{page}");

        ca.issue(&request("bob@example.com", Usage::Signing), "t").expect("issue");
        tamper(ca, head(ca));
        let page = body(test::call_service(&app, get("/admin/audit")).await).await;
        let expected = format!("Hash chain BROKEN: audit log entry {} is invalid", head(ca));
        assert!(page.contains(&expected), "{page}");
    }
}

#[test]
fn substring_search_finds_every_occurrence_and_nothing_else() {
    for (hay, needle, want) in [
        ("user4242@example.com", "user4242", true),
        ("user4242@example.com", "4242@ex", true),
        ("user4242@example.com", "example.com", true),
        ("user4242@example.com", "example.comm", false),
        ("user4242@example.com", "4243", false),
        ("aab", "ab", true),
        ("ab", "abc", false),
        ("", "a", false),
        ("", "", true),
        ("abc", "", true),
    ] {
        assert_eq!(contains(hay.as_bytes(), needle.as_bytes()), want, "{hay:?} {needle:?}");
        assert_eq!(hay.contains(needle), want, "the test's own expectation");
    }
}
