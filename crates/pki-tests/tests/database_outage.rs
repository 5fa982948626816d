//! The PostgreSQL database stopped and started again under load (issue 15, acceptance 6): while
//! it is down every service answers in its protocol's error form — OCSP `tryLater`, the TSA
//! `systemFailure`, the directory JSON 503 with `Retry-After`, the console a 503 page,
//! `/healthz` 503 naming the database, the CLI one line — and once it is back the same
//! `pki serve` process serves fully again, without a restart, and nothing acknowledged is lost. On a cluster of the test's own
//! ([`pki_tests::pg_cluster`]): stopping the shared test server would disturb other tests.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pki_tests::http_client::{self, Reply};
use pki_tests::pg_cluster::Cluster;
use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Option<Reply> {
    http_client::send(port, method, path, headers, body, Duration::from_secs(20)).ok()
}

/// The TSA's answer to `query`, as `openssl ts -reply -text` reads it.
fn stamp(env: &Env, port: u16, query: &[u8], name: &str, bearer: &str) -> (Vec<u8>, String) {
    let mut headers = vec![("Content-Type", "application/timestamp-query")];
    if !bearer.is_empty() {
        headers.push(("Authorization", bearer));
    }
    let r = send(port, "POST", "/tsa", &headers, Some(query)).expect("the TSA answers");
    assert_eq!(r.status, 200, "{name}: RFC 3161 answers over HTTP 200 whatever the status: {}", r.text());
    let file = env.write(name, &r.body);
    let text = openssl(["ts", "-reply", "-in", &p(&file), "-text"]).stdout;
    (r.body, text)
}

#[test]
fn services_answer_in_protocol_form_while_the_database_is_down_and_recover_without_a_restart() {
    let cluster = Cluster::start();
    let env = Env::on_database(&cluster.url("postgres"), "");
    env.init();
    let ca = env.ca_files();
    let mut server = env.serve();
    let port = server.port;
    let pid = server.pid();

    let key = gen_key(env.dir(), "leaf.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("leaf.csr"), "/CN=leaf", &[]);
    let issue =
        |email: &str| env.pki_try(["issue", "--email", email, "--usage", "encryption", "--csr", &p(&csr)]);
    let leaf = env.write("leaf.pem", issue("leaf@bank.example").ok().stdout);
    assert!(openssl_ocsp(&ca, &leaf, port).contains(": good"));
    let doc = env.write("doc.txt", "statement\n");
    let tsq = env.path("q.tsq");
    openssl(["ts", "-query", "-data", &p(&doc), "-sha256", "-cert", "-out", &p(&tsq)]);
    let query = std::fs::read(&tsq).unwrap();
    // The load's client: an API key beyond the anonymous quota.
    let key = env.pki(["apikey", "create", "--name", "load", "--rate", "100000"]).stdout.trim().to_string();
    let bearer = format!("Bearer {key}");
    // An officer signed in to the console before the outage.
    let (mut officer, _totp) =
        pki_tests::console_support::console_user(&env, "olga", "officer", "Correct-Horse-Battery-9");
    assert_eq!(officer.get("/admin/").status, 200);

    // Load through the whole outage: issuance through the admin socket and timestamps; every
    // acknowledgement is recorded.
    let stop = AtomicBool::new(false);
    let issued: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let tokens: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let down = AtomicBool::new(false);
    let refused_while_down = Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let out = issue(&format!("load{i}@bank.example"));
                i += 1;
                if out.status.success() {
                    issued.lock().unwrap().push(cert_serial(&pem_der(&out.stdout)));
                } else if down.load(Ordering::Acquire) {
                    refused_while_down.lock().unwrap().push(out.one_error_line());
                }
            }
        });
        s.spawn(|| {
            let headers =
                [("Content-Type", "application/timestamp-query"), ("Authorization", bearer.as_str())];
            while !stop.load(Ordering::Acquire) {
                // Paced: each acknowledged token is verified with `pki ts verify` at the end.
                std::thread::sleep(Duration::from_millis(40));
                if let Some(r) = send(port, "POST", "/tsa", &headers, Some(&query)) {
                    // A granted token is its status 0 (INTEGER 0 at the start of the PKIStatusInfo).
                    if r.status == 200
                        && r.body.windows(5).take(12).any(|w| w == [0x30, 0x03, 0x02, 0x01, 0x00])
                    {
                        tokens.lock().unwrap().push(r.body);
                    }
                }
            }
        });
        // A failed check below must not leave the load running forever.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(800));

        cluster.stop();
        down.store(true, Ordering::Release);
        let text = openssl_ocsp(&ca, &leaf, port);
        assert!(text.contains("trylater"), "OCSP while the database is down: {text}");
        // An anonymous client gets the TSA's own answer; a client with an API key a JSON 503,
        // as its key cannot be checked once the second for which a node keeps a key's record
        // has run out (cerdb's pg_engine/apikeys.rs; the load above used the key until now).
        let (_, reply) = stamp(&env, port, &query, "down.tsr", "");
        assert!(
            reply.contains("Status: Rejected") && reply.to_lowercase().contains("system failure"),
            "TSA: {reply}"
        );
        std::thread::sleep(cerdb::pg_engine::KEY_CACHE_TTL + Duration::from_millis(200));
        let keyed_headers =
            [("Content-Type", "application/timestamp-query"), ("Authorization", bearer.as_str())];
        let keyed = send(port, "POST", "/tsa", &keyed_headers, Some(&query)).expect("the TSA answers");
        assert_eq!(keyed.status, 503, "{}", keyed.text());
        assert!(keyed.header("retry-after").is_some(), "Retry-After on the 503");
        let r = send(
            port,
            "GET",
            "/api/v1/certificates/exists?email=leaf@bank.example&usage=encryption",
            &[],
            None,
        )
        .expect("the directory answers");
        assert_eq!(r.status, 503, "directory: {}", r.text());
        assert!(r.header("retry-after").is_some(), "Retry-After on the 503");
        assert!(r.json()["error"].as_str().unwrap_or("").contains("database is unavailable"), "{}", r.text());
        let h = send(port, "GET", "/healthz", &[], None).expect("healthz answers");
        assert_eq!(h.status, 503, "{}", h.text());
        assert!(h.json()["database"].as_str().is_some(), "healthz names the database: {}", h.text());
        let cli = env.pki_fails(
            ["issue", "--email", "x@bank.example", "--usage", "encryption", "--csr", &p(&csr)],
            &["database"],
        );
        assert!(cli.contains("unavailable"), "{cli}");
        // The console: a page saying so, 503, the session kept for when the database is back.
        let page = officer.get("/admin/");
        assert_eq!(page.status, 503, "console while the database is down: {}", page.text());
        assert!(
            page.header("content-type").unwrap_or_default().starts_with("text/html")
                && page.text().contains("database cannot be reached"),
            "a page naming the database: {}",
            page.text()
        );
        std::thread::sleep(Duration::from_millis(500));

        cluster.restart();
        down.store(false, Ordering::Release);
        // Back by itself: the same process, healthy within seconds.
        let back = Instant::now();
        while send(port, "GET", "/healthz", &[], None).map(|r| r.status) != Some(200) {
            assert!(back.elapsed() < Duration::from_secs(15), "not healthy 15 s after the database returned");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(800));
        stop.store(true, Ordering::Release);
    });
    assert!(server.is_running() && server.pid() == pid, "the same pki serve, never restarted");
    assert!(openssl_ocsp(&ca, &leaf, port).contains(": good"), "OCSP after the outage");
    let (_, text) = stamp(&env, port, &query, "after.tsr", &bearer);
    assert!(text.contains("Status: Granted"), "TSA after the outage: {text}");
    assert!(issue("after@bank.example").status.success(), "issuance after the outage");
    assert_eq!(officer.get("/admin/").status, 200, "the console after the outage, the same session");

    // Nothing acknowledged is lost.
    let listed = env.list_serials();
    let issued = issued.into_inner().unwrap();
    assert!(!issued.is_empty(), "issuance was acknowledged under load");
    for s in &issued {
        assert!(listed.contains(s), "acknowledged certificate {s} is gone");
    }
    let tokens = tokens.into_inner().unwrap();
    assert!(!tokens.is_empty(), "timestamps were acknowledged under load");
    for (i, t) in tokens.iter().enumerate() {
        let file = env.write(&format!("t{i}.tsr"), t);
        env.pki(["ts", "verify", "--token", &p(&file), "--data", &p(&doc)]);
    }
    for line in refused_while_down.into_inner().unwrap() {
        assert!(line.contains("database"), "a refusal while down names the database: {line}");
    }
    env.pki(["audit", "verify"]);
    server.stop();
}
