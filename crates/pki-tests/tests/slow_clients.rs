//! `pki serve` under slow and greedy clients (issue 16, acceptance item 5), over raw TCP:
//!
//! * 500 connections that send a request head with a Content-Length and no body, to every
//!   service that reads a body: each is answered 408 at the body timeout (or 503 at once above
//!   the per-address connection cap) and closed, while `/healthz`, `/ocsp` and
//!   `/api/v1/certificates/exists` keep answering in under a second from another address;
//! * 20 slow uploads to `/api/v1/timestamps/verify`: the server's resident memory stays flat
//!   (the data is hashed as it arrives) and every upload verifies;
//! * anonymous `/tsa` over its quota gets 429 with Retry-After; an API key gets its own quota.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pki_tests::http_client::send;
use pki_tests::raw_tcp::{connect_from, raise_open_files, RawReply, OTHER_LOOPBACK};
use pki_tests::*;

/// An environment whose `[server]` table also holds `server` (the harness writes that table).
fn env_with_server(server: &str) -> Env {
    let env = Env::new();
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replacen("[server]\n", &format!("[server]\n{server}\n"), 1);
    std::fs::write(&env.config, text).unwrap();
    env
}

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// The server's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What one bodiless connection saw: the answer, when its first byte came and when the server
/// closed the connection (seconds after the head was sent).
struct Held {
    path: &'static str,
    reply: Option<RawReply>,
    first_byte: Option<f64>,
    closed: Option<f64>,
}

fn hold(mut s: TcpStream, path: &'static str, sent: Instant, patience: Duration) -> Held {
    s.set_read_timeout(Some(patience)).unwrap();
    let mut got = Vec::new();
    let mut first_byte = None;
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break Some(sent.elapsed().as_secs_f64()),
            Ok(n) => {
                first_byte.get_or_insert(sent.elapsed().as_secs_f64());
                got.extend_from_slice(&buf[..n]);
            }
            // Not closed within the patience (or reset): recorded as not closed.
            Err(_) => break None,
        }
    };
    Held { path, reply: RawReply::parse(&got), first_byte, closed }
}

#[test]
fn five_hundred_bodiless_requests_are_closed_at_the_body_timeout_while_health_ocsp_and_lookups_answer() {
    const BODY_TIMEOUT: f64 = 4.0;
    const DISCONNECT: f64 = 1.0;
    const PER_ADDRESS: usize = 200;
    const CONNECTIONS: usize = 500;
    let files = raise_open_files(4096);
    assert!(files >= 2 * CONNECTIONS as u64, "open-file limit {files}: raise the hard limit (ulimit -Hn)");

    let env = env_with_server(&format!(
        "body_timeout_secs = {BODY_TIMEOUT}\ndisconnect_timeout_secs = {DISCONNECT}\nmax_connections_per_address = {PER_ADDRESS}\n"
    ));
    env.init();
    let ca = env.ca_files();
    let ocsp_req = env.path("probe.ocsp");
    openssl(["ocsp", "-issuer", &p(&ca.issuing), "-serial", "0x1234", "-no_nonce", "-reqout", &p(&ocsp_req)]);
    let ocsp_req = std::fs::read(ocsp_req).unwrap();
    // Bulk lookups need an API key: the slow client has one.
    let key = env.pki(["apikey", "create", "--name", "slow", "--rate", "1000"]).stdout.trim().to_string();
    let mut server = env.serve();

    // The probes, from 127.0.0.1, the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let port = env.port;
    let probes = {
        let stop = stop.clone();
        // The anonymous lookup quota is for people, not for a probe every 100 ms.
        let bearer = format!("Bearer {key}");
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = send(port, "GET", "/healthz", &[], None, Duration::from_secs(10));
                seen.push(("/healthz", r.map(|r| r.status).ok(), t.elapsed()));
                let t = Instant::now();
                let ct = [("Content-Type", "application/ocsp-request")];
                let r = send(port, "POST", "/ocsp", &ct, Some(&ocsp_req), Duration::from_secs(10));
                seen.push(("/ocsp", r.map(|r| r.status).ok(), t.elapsed()));
                let t = Instant::now();
                let path = "/api/v1/certificates/exists?email=nobody@example.com";
                let auth = [("Authorization", bearer.as_str())];
                let r = send(port, "GET", path, &auth, None, Duration::from_secs(10));
                seen.push(("exists", r.map(|r| r.status).ok(), t.elapsed()));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // The bodiless requests, from 127.0.0.2, to every service that reads a body.
    let targets: [(&'static str, &str, bool); 5] = [
        ("/ocsp", "application/ocsp-request", false),
        ("/tsa", "application/timestamp-query", false),
        ("/api/v1/timestamps/verify", "multipart/form-data; boundary=xyz", false),
        ("/api/v1/certificates/lookup", "application/json", true),
        ("/admin/login", "application/x-www-form-urlencoded", false),
    ];
    let patience = Duration::from_secs_f64(BODY_TIMEOUT + DISCONNECT + 10.0);
    let mut held = Vec::new();
    for i in 0..CONNECTIONS {
        let (path, ct, with_key) = targets[i % targets.len()];
        let extra = if with_key { format!("\r\nAuthorization: Bearer {key}") } else { String::new() };
        let mut s = connect_from(OTHER_LOOPBACK, port).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ct}{extra}\r\nContent-Length: 1000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let sent = Instant::now();
        held.push(
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || hold(s, path, sent, patience))
                .unwrap(),
        );
    }
    let held: Vec<Held> = held.into_iter().map(|h| h.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = probes.join().unwrap();

    // Every bodiless request got 408 at the body timeout, or 503 at once above the per-address
    // cap, and its connection was closed by the server soon after.
    let (mut timed_out, mut refused) = (0, 0);
    for h in &held {
        let reply = h.reply.as_ref().unwrap_or_else(|| panic!("{}: no HTTP answer", h.path));
        let first = h.first_byte.unwrap();
        let closed = h.closed.unwrap_or_else(|| panic!("{}: {} and not closed", h.path, reply.status));
        assert_eq!(reply.header("connection"), Some("close"), "{}", h.path);
        match reply.status {
            408 => {
                timed_out += 1;
                assert!(
                    (BODY_TIMEOUT - 0.2..BODY_TIMEOUT + 1.0).contains(&first),
                    "{}: 408 after {first:.2} s, the body timeout is {BODY_TIMEOUT} s",
                    h.path
                );
                assert!(reply.text().contains("did not arrive in time"), "{}", reply.text());
            }
            503 => {
                refused += 1;
                assert!(first < 2.0, "{}: 503 after {first:.2} s", h.path);
                assert!(reply.text().contains("too many connections from your address"));
            }
            other => panic!("{}: {other} {}", h.path, reply.text()),
        }
        assert!(
            closed <= BODY_TIMEOUT + DISCONNECT + 1.0,
            "{}: closed after {closed:.2} s (body timeout {BODY_TIMEOUT} s, drain {DISCONNECT} s)",
            h.path
        );
    }
    assert!(timed_out >= PER_ADDRESS, "{timed_out} timed out, {refused} refused");
    assert!(refused >= 1 && timed_out + refused == CONNECTIONS, "{timed_out} timed out, {refused} refused");
    for (path, _, _) in &targets {
        assert!(held.iter().any(|h| h.path == *path && h.reply.as_ref().unwrap().status == 408), "{path}");
    }

    // The probes answered in under a second throughout.
    let slowest = seen.iter().map(|(_, _, t)| *t).max().unwrap_or_default();
    eprintln!("{timed_out} timed out, {refused} refused; {} probes, the slowest {slowest:?}", seen.len());
    assert!(seen.len() >= 3 * 10, "{} probes", seen.len());
    for (what, status, took) in &seen {
        assert_eq!(*status, Some(200), "{what}");
        assert!(*took < Duration::from_secs(1), "{what} took {took:?} while the slow clients were held");
    }
    assert!(server.is_running());
}

/// A `multipart/form-data` body with the token and data parts in the given order.
fn verify_body(token: &[u8], data: &[u8], data_first: bool, boundary: &str) -> Vec<u8> {
    let part = |name: &str, bytes: &[u8]| {
        let mut b = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        b.extend_from_slice(bytes);
        b.extend_from_slice(b"\r\n");
        b
    };
    let (first, second) = if data_first {
        (part("data", data), part("token", token))
    } else {
        (part("token", token), part("data", data))
    };
    let mut body = first;
    body.extend(second);
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// A `multipart/form-data` body with a data part only.
fn verify_body_without_token(data: &[u8], boundary: &str) -> Vec<u8> {
    let mut b = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"data.bin\"\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b
}

#[test]
fn twenty_slow_uploads_to_timestamp_verify_leave_the_server_memory_flat_and_each_verifies() {
    const UPLOADS: usize = 20;
    const DATA_MIB: usize = 12;
    let env = env_with_server("tsa_anonymous_burst = 1000.0\n");
    env.init();
    let server = env.serve();

    // A document and a real token for it.
    let data: Vec<u8> = (0..DATA_MIB << 20).map(|i| (i % 251) as u8).collect();
    let doc = env.write("big.bin", &data);
    let query = env.path("big.tsq");
    openssl(["ts", "-query", "-data", &p(&doc), "-sha256", "-cert", "-out", &p(&query)]);
    let (code, _, token) = curl_post(&server.url("/tsa"), "application/timestamp-query", &query);
    assert_eq!(code, 200);
    let boundary = "slow-upload-boundary-5c2e";
    let bodies = [verify_body(&token, &data, false, boundary), verify_body(&token, &data, true, boundary)];
    let port = env.port;
    let upload = move |body: &[u8], pace: Duration| -> RawReply {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "POST /api/v1/timestamps/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        for chunk in body.chunks(64 * 1024) {
            s.write_all(chunk).unwrap();
            std::thread::sleep(pace);
        }
        let mut out = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.read_to_end(&mut out).unwrap();
        RawReply::parse(&out).unwrap()
    };

    // First 20 quick uploads of 1 MiB at once (each worker's heap and each connection's buffers
    // settle; a data part without a token is read whole, then refused), then the baseline.
    let small = Arc::new(verify_body_without_token(&data[..1 << 20], boundary));
    let warm: Vec<_> = (0..UPLOADS)
        .map(|_| {
            let small = small.clone();
            std::thread::spawn(move || upload(&small, Duration::ZERO))
        })
        .collect();
    for w in warm {
        let r = w.join().unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("the token part is missing"), "{}", r.text());
    }
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.pid();
    let baseline = rss_kib(pid);

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let bodies = Arc::new(bodies);
    let uploads: Vec<_> = (0..UPLOADS)
        .map(|i| {
            let bodies = bodies.clone();
            // About 3 MB/s each: every upload is under way at the same time for seconds.
            std::thread::spawn(move || upload(&bodies[i % 2], Duration::from_millis(20)))
        })
        .collect();
    for (i, u) in uploads.into_iter().enumerate() {
        let r = u.join().unwrap();
        assert_eq!(r.status, 200, "upload {i}: {}", r.text());
        assert!(r.text().contains("\"verified\":true"), "upload {i}: {}", r.text());
    }
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let growth_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
    eprintln!("verify uploads: RSS {baseline} KiB before, peak {peak} KiB (+{growth_mib:.1} MiB)");
    // Buffered, the data alone would be 20 × 12 MiB = 240 MiB.
    assert!(
        growth_mib < 64.0,
        "the server grew by {growth_mib:.1} MiB during {UPLOADS} uploads of {DATA_MIB} MiB"
    );
}

#[test]
fn anonymous_timestamps_over_the_quota_get_429_and_an_api_key_gets_its_own() {
    let env = env_with_server("tsa_anonymous_rate = 0.1\ntsa_anonymous_burst = 3.0\n");
    env.init();
    let _server = env.serve();
    let doc = env.write("doc.txt", "statement\n");
    let query = env.path("doc.tsq");
    openssl(["ts", "-query", "-data", &p(&doc), "-sha256", "-cert", "-out", &p(&query)]);
    let query = std::fs::read(query).unwrap();
    let stamp = |auth: Option<&str>| {
        let bearer = auth.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("Content-Type", "application/timestamp-query")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        send(env.port, "POST", "/tsa", &headers, Some(&query), Duration::from_secs(10)).unwrap()
    };

    for i in 0..3 {
        let r = stamp(None);
        assert_eq!(r.status, 200, "anonymous timestamp {i} within the burst");
        assert_eq!(r.header("content-type"), Some("application/timestamp-reply"));
    }
    let r = stamp(None);
    assert_eq!(r.status, 429, "over the anonymous quota: {}", r.text());
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert!(r.text().contains("quota"), "{}", r.text());

    // An API key of the directory buys its own quota; a wrong one is refused.
    let key = env.pki(["apikey", "create", "--name", "archive", "--rate", "100"]).stdout.trim().to_string();
    for i in 0..10 {
        assert_eq!(stamp(Some(&key)).status, 200, "with the API key, timestamp {i}");
    }
    let r = stamp(Some("pki_not-a-key"));
    assert_eq!(r.status, 401, "{}", r.text());
    // A header value that is not text (bytes the HTTP client would not send).
    let mut raw = b"POST /tsa HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
                    Content-Type: application/timestamp-query\r\nAuthorization: Bearer \xff\xfe\r\n"
        .to_vec();
    raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", query.len()).as_bytes());
    raw.extend_from_slice(&query);
    let r = pki_tests::raw_tcp::exchange_from(std::net::Ipv4Addr::LOCALHOST.into(), env.port, &raw).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    for garbage in ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer pki_", &"Bearer x".repeat(2000)] {
        let headers = [("Content-Type", "application/timestamp-query"), ("Authorization", garbage)];
        let r = send(env.port, "POST", "/tsa", &headers, Some(&query), Duration::from_secs(10)).unwrap();
        assert_eq!(r.status, 401, "{garbage:.20}: {}", r.text());
        assert!(r.text().contains("\"error\""), "{}", r.text());
    }
    assert_eq!(stamp(None).status, 429, "anonymous is still over its quota");
}
