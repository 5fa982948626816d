//! Issue 3 — the certificate lookup directory over HTTP, against a running `pki serve` on a
//! loopback port. Each test names the acceptance item it proves.
//!
//! Certificates that are expired or not yet valid *now* are made by the CA library with a fixed
//! clock (the CA initialised 500 days ago), before `pki serve` opens the same data directory: the
//! product has no option to backdate a certificate, and gets none for the tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use pki_tests::directory_support::*;
use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Issues a certificate for `email` from a fresh P-256 key; (PEM, serial).
fn issue(env: &Env, email: &str, usage: &str) -> (String, String) {
    let tag = format!("{}-{usage}", email.replace('@', "_"));
    let key = gen_key(env.dir(), &format!("{tag}.key"), KeySpec::P256);
    let csr = make_csr(&key, &env.path(&format!("{tag}.csr")), &format!("/CN={email}"), &[]);
    let out = env.pki(["issue", "--email", email, "--usage", usage, "--csr", &p(&csr)]);
    let serial = cert_serial(&pem_der(&out.stdout));
    (out.stdout, serial)
}

/// `pki apikey create`, which prints only the key.
fn apikey(env: &Env, name: &str, rate: &str) -> String {
    let out = env.pki(["apikey", "create", "--name", name, "--rate", rate]);
    let key = out.stdout.trim().to_string();
    assert!(key.starts_with("cdk_") && key.len() == 47, "unexpected key output {:?}", out.stdout);
    assert!(out.stderr.contains("shown only now"), "{}", out.stderr);
    key
}

/// Items 1 and 2, plus `pki lookup` locally and remotely while `pki serve` runs.
#[test]
fn exists_fetch_case_hash_then_revocation_is_seen_at_once() {
    let env = Env::new();
    env.init();
    let server = env.serve();
    let port = server.port;
    let key = apikey(&env, "tests", "1000");
    let k = Some(key.as_str());
    let ca = env.ca_files();

    // Issued while the server runs (through its admin socket).
    let (sign_pem, _) = issue(&env, "alice@example.com", "signing");
    let (enc_pem, enc_serial) = issue(&env, "alice@example.com", "encryption");
    let enc_file = env.write("alice-enc.pem", &enc_pem);
    let enc_fp = openssl_fingerprint(&enc_file);
    let sign_fp = openssl_fingerprint(&env.write("alice-sign.pem", &sign_pem));

    // Item 1: exists.
    assert!(exists(port, "alice@example.com", "encryption", k));
    assert!(exists(port, "alice@example.com", "signing", k));
    assert!(!exists(port, "never-issued@example.com", "encryption", k));
    let r = get(port, "/api/v1/certificates/exists?email=alice@example.com", k);
    assert_eq!(
        r.json(),
        serde_json::json!({"email": "alice@example.com", "usage": "encryption", "exists": true})
    );

    // Item 1: fetch with curl; the chain parses with OpenSSL, the leaf is the issued one, and it
    // verifies up to the root.
    let url = server.url("/api/v1/certificates?email=alice@example.com&usage=encryption");
    let (status, ctype, body) = curl_get_status(&url);
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/pem-certificate-chain");
    let text = String::from_utf8(body).unwrap();
    let blocks = pem_blocks(&text);
    assert_eq!(blocks.len(), 2, "leaf then issuing CA: {text}");
    let leaf = env.write("fetched-leaf.pem", &blocks[0]);
    let issuing = env.write("fetched-issuing.pem", &blocks[1]);
    assert_eq!(openssl_fingerprint(&leaf), enc_fp, "the fetched leaf is the issued certificate");
    assert_eq!(pem_der(&blocks[1]), ca.issuing_der, "the second certificate is the issuing CA");
    let v = openssl([
        "verify".as_ref(),
        "-CAfile".as_ref(),
        ca.root.as_os_str(),
        "-untrusted".as_ref(),
        issuing.as_os_str(),
        leaf.as_os_str(),
    ]);
    assert!(v.stdout.contains(": OK"), "{}", v.stdout);
    let text_out = openssl([
        "x509".as_ref(),
        "-in".as_ref(),
        enc_file.as_os_str(),
        "-noout".as_ref(),
        "-serial".as_ref(),
    ]);
    assert!(text_out.stdout.contains(&enc_serial), "{}", text_out.stdout);

    // Item 1: another spelling and the hashed form find the same certificate.
    for path in [
        "/api/v1/certificates?email=Alice@EXAMPLE.com".to_string(),
        format!("/api/v1/certificates?email_sha256={}", email_sha256("alice@example.com")),
        format!(
            "/api/v1/certificates?email_sha256={}",
            email_sha256("Alice@EXAMPLE.com").to_ascii_uppercase()
        ),
    ] {
        let r = get_with(port, &path, k, &[("Accept", "application/json")]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let j = r.json();
        assert_eq!(j["sha256"], enc_fp, "{path}");
        assert_eq!(j["serial"], enc_serial, "{path}");
        assert_eq!(j["usage"], "encryption");
        assert_eq!(j["status"], "valid");
    }
    let hashed = get(
        port,
        &format!("/api/v1/certificates/exists?email_sha256={}", email_sha256("alice@example.com")),
        k,
    );
    assert_eq!(hashed.json()["exists"], true);
    let signing = get_with(
        port,
        "/api/v1/certificates?email=ALICE@example.com&usage=signing",
        k,
        &[("Accept", "application/json")],
    );
    assert_eq!(signing.json()["sha256"], sign_fp);

    // Item 7 of the build list: ETag, Cache-Control and 304.
    let r = get(port, "/api/v1/certificates?email=alice@example.com", k);
    let etag = r.header("etag").expect("ETag").to_string();
    assert!(r.header("cache-control").is_some());
    let r304 = get_with(port, "/api/v1/certificates?email=alice@example.com", k, &[("If-None-Match", &etag)]);
    assert_eq!(r304.status, 304);
    assert!(r304.body.is_empty());

    // `pki lookup`: through the admin socket, and over HTTP.
    let local = env.pki(["lookup", "--email", "Alice@example.com"]).stdout;
    assert!(local.contains("valid encryption certificate") && local.contains(&enc_fp), "{local}");
    let remote = env
        .pki(["lookup", "--email", "Alice@example.com", "--server", &server.url(""), "--api-key", &key])
        .stdout;
    assert_eq!(remote.lines().take(5).collect::<Vec<_>>(), local.lines().take(5).collect::<Vec<_>>());
    let none = env.pki(["lookup", "--email", "nobody@example.com", "--usage", "signing"]).stdout;
    assert_eq!(none, "nobody@example.com: no valid signing certificate\n");

    // Item 2: revoke; the very next exists is false, fetch is 404, by-serial shows why.
    env.pki(["revoke", "--serial", &enc_serial, "--reason", "keyCompromise"]);
    assert!(!exists(port, "alice@example.com", "encryption", k), "revoked certificate still counted");
    get(port, "/api/v1/certificates?email=alice@example.com", k).expect_error(
        404,
        "no valid encryption",
        "fetch after revocation",
    );
    let hashed = get(
        port,
        &format!("/api/v1/certificates/exists?email_sha256={}", email_sha256("alice@example.com")),
        k,
    );
    assert_eq!(hashed.json()["exists"], false);
    assert!(exists(port, "alice@example.com", "signing", k), "the signing certificate is not revoked");
    let r = get(port, &format!("/api/v1/certificates/by-serial/{}", enc_serial.to_ascii_lowercase()), k);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["status"], "revoked");
    assert_eq!(j["revocation"]["reason"], "keyCompromise");
    assert!(j["revocation"]["revoked_at"].as_str().unwrap().ends_with('Z'));
    let by_fp = get(port, &format!("/api/v1/certificates/{enc_fp}"), k).json();
    assert_eq!(by_fp["status"], "revoked");
    let after = env.pki(["lookup", "--email", "alice@example.com"]).stdout;
    assert_eq!(after, "alice@example.com: no valid encryption certificate\n");

    // A new encryption certificate is found again at once, by hash too.
    let (new_pem, _) = issue(&env, "alice@example.com", "encryption");
    let new_fp = openssl_fingerprint(&env.write("alice-enc2.pem", &new_pem));
    let j = get_with(
        port,
        &format!("/api/v1/certificates?email_sha256={}", email_sha256("alice@example.com")),
        k,
        &[("Accept", "application/json")],
    )
    .json();
    assert_eq!(j["sha256"], new_fp);
    server.stop();
}

/// Item 3: expired and not-yet-valid certificates are never returned by exists or fetch, but
/// by-fingerprint shows them with their status.
#[test]
fn expired_and_not_yet_valid_certificates_are_never_returned() {
    // The CA and two certificates made by the real binary at other times (libfaketime): one
    // issued 500 days ago, valid for 365 days (expired 135 days ago), one issued "in three days"
    // (not yet valid).
    let env = Env::new();
    run(&mut faketime("-500d", &env.command(["init"]))).ok();
    let mut fps = Vec::new();
    for (offset, email) in [("-500d", "old@example.com"), ("+3d", "future@example.com")] {
        let key = gen_key(env.dir(), &format!("{email}.key"), KeySpec::P256);
        let csr = make_csr(&key, &env.path(&format!("{email}.csr")), &format!("/CN={email}"), &[]);
        let issue = env.command([
            "issue",
            "--email",
            email,
            "--usage",
            "encryption",
            "--csr",
            &csr.display().to_string(),
        ]);
        let pem = run(&mut faketime(offset, &issue)).ok().stdout;
        fps.push(sha256_hex(&pem_der(&pem)));
    }
    let server = env.serve();
    let port = server.port;
    let key = apikey(&env, "tests", "1000");
    let k = Some(key.as_str());
    // A valid one beside them, so the lookups are known to work.
    issue(&env, "current@example.com", "encryption");
    assert!(exists(port, "current@example.com", "encryption", k));

    for (email, fp, status) in
        [("old@example.com", &fps[0], "expired"), ("future@example.com", &fps[1], "not_yet_valid")]
    {
        assert!(!exists(port, email, "encryption", k), "{email}");
        let hashed =
            get(port, &format!("/api/v1/certificates/exists?email_sha256={}", email_sha256(email)), k);
        assert_eq!(hashed.json()["exists"], false, "{email} by hash");
        get(port, &format!("/api/v1/certificates?email={email}"), k).expect_error(404, "no valid", email);
        let bulk = bulk(port, &serde_json::json!({"emails": [email]}), k).json();
        assert_eq!(bulk["results"][0]["exists"], false, "{email} in bulk");
        let j = get(port, &format!("/api/v1/certificates/{fp}"), k).json();
        assert_eq!(j["status"], status, "{email}");
        assert_eq!(j["email"], email);
    }
    server.stop();
}

/// Item 4: bulk lookup of 1,000 addresses, half known (loaded with `pki cerdb load-test-data`
/// while the server runs); 1,001 → 400; no key → 401.
#[test]
fn bulk_lookup_of_a_thousand_addresses() {
    let env = Env::new();
    env.init();
    let server = env.serve();
    let port = server.port;
    let out = env.pki(["cerdb", "load-test-data", "--count", "500", "--batch", "128"]);
    assert!(out.stdout.starts_with("issued 500 encryption certificates in"), "{}", out.stdout);
    assert!(out.stderr.contains("500/500"), "progress is shown: {}", out.stderr);
    let key = apikey(&env, "mailer", "5000");

    let emails: Vec<String> = (0..1_000)
        .map(|i| {
            if i % 2 == 0 {
                format!("LOAD-{}@LoadTest.example", i / 2)
            } else {
                format!("unknown-{i}@example.net")
            }
        })
        .collect();
    let r = bulk(port, &serde_json::json!({"emails": emails, "usage": "encryption"}), Some(&key));
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["usage"], "encryption");
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 1_000);
    let mut fps = std::collections::HashSet::new();
    for (i, res) in results.iter().enumerate() {
        assert_eq!(res["email"], emails[i].as_str(), "order");
        if i % 2 == 0 {
            assert_eq!(res["exists"], true, "{}", emails[i]);
            let pem = res["pem"].as_str().unwrap();
            let der = pem_der(pem);
            // The certificate is the one of that address.
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
            assert_eq!(cn, format!("load-{}@loadtest.example", i / 2));
            fps.insert(res["sha256"].as_str().unwrap().to_string());
        } else {
            assert_eq!(res["exists"], false, "{}", emails[i]);
            assert!(res.get("pem").is_none());
        }
    }
    assert_eq!(fps.len(), 500, "500 different certificates");

    let mut too_many = emails.clone();
    too_many.push("one-more@example.com".into());
    bulk(port, &serde_json::json!({"emails": too_many}), Some(&key)).expect_error(
        400,
        "at most 1000",
        "1,001 addresses",
    );
    bulk(port, &serde_json::json!({"emails": ["a@example.com"]}), None)
        .expect_error(401, "API key", "no key");
    let r = bulk(port, &serde_json::json!({"emails": ["load-1@loadtest.example"]}), Some(&key));
    assert_eq!(r.json()["results"][0]["exists"], true, "the server still answers");
    server.stop();
}

/// Item 5: quotas per key and per IP; 429 with Retry-After over them, never under; a revoked key
/// gets 401; anonymous access can be limited and switched off (all while the server runs).
#[test]
fn quotas_keys_and_anonymous_access() {
    let env = Env::new();
    env.init();
    let server = env.serve();
    let port = server.port;
    let path = "/api/v1/certificates/exists?email=quota@example.com";

    // Over the rate: 2 per second, burst 5. The first 5 pass at once; then one more per 500 ms, so
    // the first refusal comes after 5 + (elapsed × 2) admitted requests, however slow the machine.
    let out = env.pki(["apikey", "create", "--name", "slow", "--rate", "2", "--burst", "5"]);
    let slow = out.stdout.trim().to_string();
    let start = Instant::now();
    let mut admitted = 0u32;
    let refused = loop {
        let r = get(port, path, Some(&slow));
        if r.status != 200 {
            break r;
        }
        admitted += 1;
        assert!(admitted < 200, "never limited");
    };
    let elapsed = start.elapsed().as_secs_f64();
    refused.expect_error(429, "rate limit", "over the rate");
    let most = 5 + (elapsed * 2.0).ceil() as u32;
    assert!((5..=most).contains(&admitted), "{admitted} admitted in {elapsed:.2} s; expected 5..={most}");
    let retry: u64 = refused.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert_eq!(retry, 1, "one token comes back within 500 ms");
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(get(port, path, Some(&slow)).status, 200, "admitted again after Retry-After");

    // Under the rate: 10 per second against 20 per second (burst 20), for 3 seconds.
    let steady = apikey(&env, "steady", "20");
    let start = Instant::now();
    for i in 0..30u32 {
        let due = start + Duration::from_millis(100 * u64::from(i));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let r = get(port, path, Some(&steady));
        assert_eq!(r.status, 200, "request {i} under the quota: {}", r.text());
    }

    // A revoked key is refused at once; `pki apikey list` shows it, never the key itself.
    env.pki(["apikey", "revoke", "--name", "steady"]);
    get(port, path, Some(&steady)).expect_error(401, "revoked", "revoked key");
    let list = env.pki(["apikey", "list"]).stdout;
    assert!(list.contains("steady") && list.contains("revoked") && list.contains("slow"), "{list}");
    assert!(!list.contains(&steady) && !list.contains(&slow), "keys must not be listed: {list}");
    assert!(list.contains(&slow[..8]), "prefixes are listed: {list}");
    env.pki_fails(["apikey", "revoke", "--name", "steady"], &["already revoked"]);
    env.pki_fails(["apikey", "create", "--name", "slow"], &["exists already"]);
    env.pki_fails(["apikey", "create", "--name", "bad name"], &["API key name"]);
    env.pki_fails(["apikey", "create", "--name", "x", "--rate", "0"], &["rate"]);

    // Anonymous: per-IP quota, then off, then on again.
    let shown = env.pki(["cerdb", "anonymous", "--rate", "0.05", "--burst", "3"]).stdout;
    assert!(shown.contains("enabled") && shown.contains("0.05 lookups/s, burst 3"), "{shown}");
    for i in 0..3 {
        assert_eq!(get(port, path, None).status, 200, "anonymous request {i}");
    }
    get(port, path, None).expect_error(429, "rate limit", "fourth anonymous request");
    assert_eq!(get(port, path, Some(&slow)).status, 200, "keys have their own quota");
    env.pki(["cerdb", "anonymous", "--disable"]);
    get(port, path, None).expect_error(401, "anonymous access is disabled", "anonymous off");
    env.pki(["cerdb", "anonymous", "--enable", "--rate", "100", "--burst", "100"]);
    assert_eq!(get(port, path, None).status, 200);
    server.stop();
}

/// Item 6: every bad input gets its 4xx JSON error and the server answers the next request; and
/// the logs never hold an address that was looked up (even at debug level).
#[test]
fn bad_input_is_refused_with_json_and_lookups_leave_no_address_in_the_logs() {
    let env = Env::new();
    env.init();
    let mut cmd = env.command(["serve", "--listen", &format!("127.0.0.1:{}", env.port)]);
    cmd.env("RUST_LOG", "debug");
    let server = Server::start(&mut cmd, env.port, env.dir());
    let port = server.port;
    let key = apikey(&env, "tests", "100000");
    let k = Some(key.as_str());
    issue(&env, "known@example.com", "encryption");

    let secret = "private.person@example.org";
    let check_alive = |what: &str| {
        let r = get(port, "/api/v1/certificates/exists?email=known@example.com", k);
        assert_eq!(r.status, 200, "the server stopped answering after {what}");
        assert_eq!(r.json()["exists"], true);
    };
    let gets: Vec<(String, u16, &str)> = vec![
        ("/api/v1/certificates/exists?email=not-an-address".into(), 400, "email"),
        (format!("/api/v1/certificates/exists?email={}", q("a b@example.com")), 400, "email"),
        ("/api/v1/certificates?email=%40%40".into(), 400, "email"),
        (
            "/api/v1/certificates/exists?email=known@example.com&usage=authentication".into(),
            400,
            "unknown usage",
        ),
        ("/api/v1/certificates?email=known@example.com&usage=".into(), 400, "unknown usage"),
        // A value of 5,000 characters is quoted cut in the middle.
        (
            format!("/api/v1/certificates?email=known@example.com&usage={}", "u".repeat(5000)),
            400,
            "characters left out)…uuu",
        ),
        ("/api/v1/certificates/exists?email_sha256=12345".into(), 400, "64 hex digits"),
        ("/api/v1/certificates/exists".into(), 400, "email or email_sha256"),
        ("/api/v1/certificates/zz00".into(), 400, "fingerprint"),
        ("/api/v1/certificates/by-serial/not-hex".into(), 400, "serial"),
    ];
    for (path, status, needle) in &gets {
        get(port, path, k).expect_error(*status, needle, path);
        check_alive(path);
    }
    let post = |body: &[u8]| {
        let auth = format!("Bearer {key}");
        http(
            port,
            "POST",
            "/api/v1/certificates/lookup",
            &[("Content-Type", "application/json"), ("Authorization", &auth)],
            Some(body),
        )
    };
    let over = vec![b' '; (1 << 20) + 1];
    let bodies: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (b"{\"emails\": [".to_vec(), 400, "invalid JSON", "truncated JSON"),
        (b"not json at all".to_vec(), 400, "invalid JSON", "not JSON"),
        (b"{\"emails\": [\"x@\"]}".to_vec(), 400, "emails[0]", "malformed address in bulk"),
        (b"{\"emails\": [], \"usage\": \"both\"}".to_vec(), 400, "unknown usage", "unknown usage in bulk"),
        (
            serde_json::json!({"emails": vec!["a@example.com"; 1001]}).to_string().into_bytes(),
            400,
            "at most 1000",
            "1,001",
        ),
        (over, 413, "1048576", "body over 1 MiB"),
    ];
    for (body, status, needle, what) in &bodies {
        post(body).expect_error(*status, needle, what);
        check_alive(what);
    }
    let auth = format!("Bearer {key}");
    let cut = pki_tests::raw_tcp::cut_short(
        port,
        "/api/v1/certificates/lookup",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        b"{\"emails\": [",
        100,
    )
    .expect("an answer to a body cut short");
    assert_eq!((cut.status, cut.header("content-type")), (400, Some("application/json")), "{}", cut.text());
    assert!(cut.text().contains("the body ended before its declared length"), "{}", cut.text());
    check_alive("a body cut short");

    // Lookups of an address in every form; none of it may reach the logs.
    assert!(!exists(port, secret, "encryption", k));
    assert_eq!(get(port, &format!("/api/v1/certificates?email={secret}"), k).status, 404);
    let hash = email_sha256(secret);
    assert_eq!(get(port, &format!("/api/v1/certificates/exists?email_sha256={hash}"), k).status, 200);
    assert_eq!(bulk(port, &serde_json::json!({"emails": [secret]}), k).status, 200);
    assert_eq!(get(port, &format!("/api/v1/certificates/exists?email={secret}.."), k).status, 400);
    assert_eq!(get(port, &format!("/api/v1/certificates/exists?email={secret}"), None).status, 200);
    let logs = format!("{}{}", server.stdout(), server.stderr());
    assert!(logs.contains("DEBUG"), "the server logs at debug level: {logs}");
    for needle in [secret, "private.person", &hash[..16]] {
        assert!(!logs.contains(needle), "the server log holds {needle:?}:\n{logs}");
    }
    server.stop();
}
