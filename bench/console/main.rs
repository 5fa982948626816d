//! Console page times with 100,000 certificates in the store (issue 6 benchmark): the
//! dashboard, search result pages and the audit log page, through the real actix-web service
//! (routing, session and role checks, rendering), logged in as an auditor. Two modes:
//!
//! - **steady**: 200 requests per page with nothing changing in between. The first (cold)
//!   request of each page is reported apart: it builds the in-memory views.
//! - **interleaved**: the live CA's case: 200 rounds per page of "issue one certificate
//!   (`Ca::issue`, untimed), then request the page (timed)", so every timed request is the first
//!   one after a change to the store.
//!
//! Run with `bash bench/console/run.sh` (or `cargo bench -p admin-web --bench console`);
//! `BENCH_CERTS` changes the store size, `BENCH_ROUNDS` the requests per page and mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{test, web, App};
use admin_web::{Console, ConsoleConfig};
use ca_core::{Ca, CaCert, CaConfig, IssueRequest, SystemClock};
use cerdb::{CertDb, Usage};
use hsm_sim::{HsmSim, MasterKeySource};

fn csrs(from: usize, n: usize) -> Vec<IssueRequest> {
    (from..from + n)
        .map(|i| {
            let email = format!("user{i}@example.com");
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(rcgen::DnType::CommonName, email.clone());
            let csr = params.serialize_request(&kp).expect("csr").der().to_vec();
            let usage = if i % 2 == 0 { Usage::Signing } else { Usage::Encryption };
            IssueRequest { email: email.parse().expect("email"), usage, csr }
        })
        .collect()
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1000.0
}

fn cookie_of(res: &actix_web::dev::ServiceResponse, name: &str) -> Option<String> {
    res.headers().get_all("set-cookie").filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

fn field(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\"")).expect("field");
    let v = at + html[at..].find("value=\"").expect("value") + 7;
    html[v..v + html[v..].find('"').expect("quote")].to_string()
}

#[actix_web::main]
async fn main() {
    let total: usize = std::env::var("BENCH_CERTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = CertDb::open(dir.path().join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(dir.path().join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    let ca =
        Arc::new(Ca::init(db, hsm, CaConfig::default(), Arc::new(SystemClock), "bench").expect("init").0);

    let start = Instant::now();
    let batch = 2_000;
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        ca.issue_many(&csrs(done, n), "bench").expect("issue");
        done += n;
    }
    eprintln!("issued {total} certificates in {:.1} s", start.elapsed().as_secs_f64());

    let store = tsa::TsaStore::open(ca.db()).expect("tsa store");
    let verifier = tsa::Verifier::new(
        ca.ca_cert(CaCert::Root).to_vec(),
        vec![ca.ca_cert(CaCert::Tsa).to_vec()],
        Arc::new(store),
    )
    .expect("verifier");
    let console = Console::new(ca.clone(), ConsoleConfig::default(), verifier).expect("console");
    let (_, otp) = console.accounts().add("audrey", "auditor", "bench").expect("user");
    let app = test::init_service(App::new().service(admin_web::scope(web::Data::new(console)))).await;

    // Log in as a person would: one-time password, new password, TOTP enrolment.
    let req = test::TestRequest::get().uri("/admin/login").to_request();
    let res = test::call_service(&app, req).await;
    let pre = cookie_of(&res, "pki_console_login").expect("login cookie");
    let html = String::from_utf8(test::read_body(res).await.to_vec()).expect("utf-8");
    let csrf = field(&html, "csrf_token");
    let req = test::TestRequest::post()
        .uri("/admin/login")
        .insert_header(("cookie", format!("pki_console_login={pre}")))
        .set_form([("csrf_token", csrf.as_str()), ("username", "audrey"), ("password", otp.as_str())])
        .to_request();
    let res = test::call_service(&app, req).await;
    let mut session = cookie_of(&res, "pki_console_session").expect("session");
    let get = |uri: &str, session: &str| {
        test::TestRequest::get()
            .uri(uri)
            .insert_header(("cookie", format!("pki_console_session={session}")))
            .to_request()
    };
    let res = test::call_service(&app, get("/admin/password", &session)).await;
    let csrf = field(std::str::from_utf8(&test::read_body(res).await).expect("utf-8"), "csrf_token");
    let pw = "Bench-Passphrase-2026x";
    let req = test::TestRequest::post()
        .uri("/admin/password")
        .insert_header(("cookie", format!("pki_console_session={session}")))
        .set_form([("csrf_token", csrf.as_str()), ("new_password", pw), ("confirm_password", pw)])
        .to_request();
    let res = test::call_service(&app, req).await;
    session = cookie_of(&res, "pki_console_session").expect("session");
    let res = test::call_service(&app, get("/admin/totp/enrol", &session)).await;
    let html = String::from_utf8(test::read_body(res).await.to_vec()).expect("utf-8");
    let csrf = field(&html, "csrf_token");
    let at = html.find("id=\"totp-secret\">").expect("secret") + 17;
    let key: String = html[at..at + html[at..].find('<').expect("end")].split_whitespace().collect();
    let secret = base32(&key);
    let code = format!("{:06}", admin_web::totp::code_at(&secret, admin_web::totp::step_of(ca.now())));
    let req = test::TestRequest::post()
        .uri("/admin/totp/enrol")
        .insert_header(("cookie", format!("pki_console_session={session}")))
        .set_form([("csrf_token", csrf.as_str()), ("code", code.as_str())])
        .to_request();
    let res = test::call_service(&app, req).await;
    session = cookie_of(&res, "pki_console_session").expect("active session");

    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let pages = [
        ("dashboard", "/admin/".to_string()),
        ("search by e-mail (index)", format!("/admin/certificates?q=user{}%40example.com", total / 2)),
        ("search by substring, status filter", "/admin/certificates?q=user4242&status=valid".to_string()),
        ("certificate list, page 100", "/admin/certificates?page=100".to_string()),
        ("audit log", "/admin/audit".to_string()),
        ("audit log, filtered by action", "/admin/audit?action=issue&page=3".to_string()),
    ];
    println!(
        "certificates in the store: {}; {rounds} requests per page and mode",
        ca.db().count().expect("count the stored certificates")
    );
    println!();
    println!("| page | mode | cold (first request) ms | p50 ms | p99 ms | max ms | requests |");
    println!("|---|---|---|---|---|---|---|");
    let audit_head = || ca.db().last_audit().expect("audit").map(|r| r.seq).unwrap_or(0);
    // Steady: nothing changes between requests.
    for (name, uri) in &pages {
        let mut times = Vec::with_capacity(rounds);
        let mut cold = None;
        for _ in 0..=rounds {
            let t = Instant::now();
            let res = test::call_service(&app, get(uri, &session)).await;
            assert_eq!(res.status(), 200, "{uri}");
            let body = test::read_body(res).await;
            assert!(body.len() > 500);
            let d = t.elapsed();
            if cold.is_none() {
                cold = Some(d);
            } else {
                times.push(d);
            }
        }
        let cold = cold.unwrap_or_default().as_secs_f64() * 1000.0;
        row(name, "steady", &format!("{cold:.1}"), &mut times);
    }
    // Interleaved: one issuance before every request.
    let mut next = total;
    let mut issue_time = Duration::ZERO;
    for (name, uri) in &pages {
        let reqs = csrs(next, rounds);
        next += rounds;
        let mut times = Vec::with_capacity(rounds);
        for r in &reqs {
            let t = Instant::now();
            ca.issue(r, "bench").expect("issue");
            issue_time += t.elapsed();
            let t = Instant::now();
            let res = test::call_service(&app, get(uri, &session)).await;
            assert_eq!(res.status(), 200, "{uri}");
            let body = test::read_body(res).await;
            let d = t.elapsed();
            assert!(body.len() > 500);
            if uri == "/admin/audit" {
                // The page is never stale: it counts every entry, the new issuance's included.
                let text = std::str::from_utf8(&body).expect("utf-8");
                assert!(text.contains(&format!(">{} entries;", audit_head())), "audit page is stale");
            }
            times.push(d);
        }
        row(name, "interleaved", "-", &mut times);
    }
    println!();
    println!(
        "issuances between requests: {}, mean {:.1} ms each (not counted in the page times)",
        next - total,
        issue_time.as_secs_f64() * 1000.0 / (next - total).max(1) as f64
    );
}

fn row(name: &str, mode: &str, cold: &str, times: &mut [Duration]) {
    let max = times.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0;
    println!(
        "| {name} | {mode} | {cold} | {:.2} | {:.2} | {max:.2} | {} |",
        pct(times, 0.50),
        pct(times, 0.99),
        times.len()
    );
}

fn base32(s: &str) -> Vec<u8> {
    let (mut bits, mut n, mut out) = (0u64, 0, Vec::new());
    for c in s.chars() {
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".find(c).expect("base32") as u64;
        bits = bits << 5 | v;
        n += 5;
        if n >= 8 {
            out.push((bits >> (n - 8)) as u8);
            n -= 8;
        }
    }
    out
}
