//! `pki serve` itself: the admin socket is private and survives garbage; run with no `--data` in a
//! fresh directory it creates `./pki-data`, initialises the CA and serves `/healthz` (a JSON 404
//! for a path nothing serves, a JSON 405 with `Allow` for a method a path does not take); a second
//! `pki init` changes nothing.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use pki_tests::http_client::send;
use pki_tests::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Sends `bytes` on a fresh connection, half-closes, and returns whatever comes back.
fn send_raw(sock: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).expect("connect to the admin socket");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

/// A reply frame holding `{"Err": "..."}`: the message.
fn error_reply(reply: &[u8]) -> String {
    assert!(reply.len() >= 4, "no reply frame: {reply:?}");
    let len = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
    assert_eq!(reply.len(), 4 + len, "reply frame length");
    let v: serde_json::Value = serde_json::from_slice(&reply[4..]).expect("reply is JSON");
    v["Err"].as_str().unwrap_or_else(|| panic!("not an error reply: {v}")).to_string()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn assert_alive(server: &mut Server, after: &str) {
    assert!(server.is_running(), "the server died after {after}:\n{}", server.stderr());
    let (code, body) =
        http_get(server.port, "/healthz").unwrap_or_else(|| panic!("no /healthz after {after}"));
    assert_eq!(code, 200, "/healthz after {after}: {}", String::from_utf8_lossy(&body));
}

#[test]
fn admin_socket_is_mode_0600_and_garbage_does_not_kill_the_server() {
    // Without `[server] admin_group`: the owner alone.
    let env = Env::new();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, text.replace(&format!("admin_group = \"{OFFICERS_GROUP}\"\n"), "")).unwrap();
    let server = env.serve();
    let sock = env.data.join("admin.sock");
    assert_eq!(mode(&sock), 0o600, "the admin socket is mode 0600");
    assert_eq!(mode(&env.data), 0o700, "the data directory is mode 0700");
    server.stop();

    // With it (every test configuration has it): that group's members, and nobody else.
    let env = Env::new();
    let mut server = env.serve();
    let sock = env.data.join("admin.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket(), "admin.sock is a socket");
    let group = os_officer("oscar").1;
    use std::os::unix::fs::MetadataExt;
    assert_eq!((mode(&sock), meta.gid()), (0o660, group), "the admin socket is the officers' group's, 0660");
    let data = std::fs::metadata(&env.data).unwrap();
    assert_eq!(
        (mode(&env.data), data.gid()),
        (0o710, group),
        "the data directory is searchable by that group"
    );
    assert_eq!(mode(&env.data.join("keys")), 0o700, "the key store is mode 0700");
    for f in files_under(&env.data) {
        if f != sock {
            assert_eq!(mode(&f), 0o600, "{} stays owner-only", f.display());
        }
    }

    // An idle client that never sends anything must not block anyone else.
    let idle = UnixStream::connect(&sock).unwrap();

    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("connect and close", vec![], Some("cannot read admin request")),
        ("three bytes", vec![1, 2, 3], Some("cannot read admin request")),
        ("random bytes", noise[..64].to_vec(), None),
        ("a 4 GiB length prefix", vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3], Some("too large")),
        (
            "a frame cut short",
            [&100u32.to_be_bytes()[..], b"hello"].concat(),
            Some("cannot read admin request"),
        ),
        ("a frame of binary noise", frame(&noise), Some("malformed admin request")),
        ("a frame of text", frame(b"not json at all"), Some("malformed admin request")),
        (
            "JSON of another shape",
            frame(br#"{"actor":"x","request":{"Bogus":{}}}"#),
            Some("malformed admin request"),
        ),
        (
            "JSON with a wrong type",
            frame(br#"{"actor":7,"request":"List"}"#),
            Some("malformed admin request"),
        ),
        ("a 1 MiB frame of zeros", frame(&vec![0u8; 1 << 20]), Some("malformed admin request")),
    ];
    for (what, bytes, expect) in &cases {
        let reply = send_raw(&sock, bytes);
        if let Some(expect) = expect {
            let msg = error_reply(&reply);
            assert!(msg.contains(expect), "{what}: the server answered {msg:?}");
        }
        assert_alive(&mut server, what);
    }
    // Many garbage connections at once.
    std::thread::scope(|s| {
        for i in 0..16 {
            let sock = &sock;
            let noise = &noise;
            s.spawn(move || send_raw(sock, &noise[i * 100..i * 100 + 300]));
        }
    });
    assert_alive(&mut server, "16 concurrent garbage connections");

    // Later commands still work, through the socket, while the idle client still holds on.
    let key = gen_key(env.dir(), "judy.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("judy.csr"), "/CN=judy@example.com", &[]);
    let out = env.pki([
        "issue",
        "--email",
        "judy@example.com",
        "--usage",
        "signing",
        "--csr",
        &csr.display().to_string(),
    ]);
    let serial = cert_serial(&pem_der(&out.stdout));
    assert!(env.list_serials().contains(&serial));
    assert!(!server.stderr().contains("panicked"), "the server panicked:\n{}", server.stderr());
    assert_alive(&mut server, "the final commands");
    drop(idle);
    assert_eq!(mode(&sock), 0o660, "still mode 0660");
    server.stop();
    assert!(!sock.exists(), "a stopped server removes its socket");
}

#[test]
fn serve_without_data_flag_creates_pki_data_in_the_working_directory_and_init_is_idempotent() {
    let cwd = tempfile::Builder::new().prefix("pki-e2e-cwd-").tempdir().unwrap();
    let port = free_port();
    let mut cmd = pki_command();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")]).current_dir(cwd.path());
    let server = Server::start(&mut cmd, port, cwd.path());
    let data = cwd.path().join("pki-data");
    assert!(data.join("db").is_dir() && data.join("keys").is_dir(), "./pki-data was not created");
    assert_eq!(mode(&data), 0o700, "./pki-data is mode 0700");
    let stdout = server.stdout();
    assert!(stdout.starts_with("CA initialised\n"), "serve stdout: {stdout}");
    let fingerprints: Vec<&str> = stdout.lines().filter(|l| l.contains("sha256:")).collect();
    for name in ["root ", "issuing ", "ocsp ", "tsa "] {
        assert!(fingerprints.iter().any(|l| l.starts_with(name)), "no {name}fingerprint: {stdout}");
    }
    let (code, body) = http_get(port, "/healthz").unwrap();
    assert_eq!((code, String::from_utf8_lossy(&body).contains("ok")), (200, true));
    // What nothing answers is a JSON 404, not an empty one.
    for (method, path) in [
        ("GET", "/no/such/path"),
        ("POST", "/healthzz"),
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v1/mail/nope"),
    ] {
        let r = send(port, method, path, &[], None, Duration::from_secs(10)).unwrap();
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{method} {path}");
        assert_eq!(r.json(), serde_json::json!({"error": "no such endpoint"}), "{method} {path}");
    }
    // A path that exists, asked with a method it does not take: 405, what it takes in `Allow`,
    // and a JSON error saying so, on every service of the default `pki serve`.
    for (method, path, allow) in [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("PUT", "/ca/root.crt", "GET, HEAD"),
        ("POST", "/crl/issuing.crl", "GET, HEAD"),
        ("PUT", "/ocsp", "GET, HEAD, POST"),
        ("DELETE", "/ocsp/MAMGAQ%3D%3D", "GET, HEAD, POST"),
        ("GET", "/tsa", "POST"),
        ("DELETE", "/tsa/", "POST"),
        ("GET", "/api/v1/timestamps/verify", "POST"),
        ("POST", "/api/v1/certificates/exists", "GET, HEAD"),
        ("GET", "/api/v1/certificates/lookup", "POST"),
        ("GET", "/api/v1/mail/seal", "POST"),
    ] {
        let r = send(port, method, path, &[], Some(b"x"), Duration::from_secs(10)).unwrap();
        assert_eq!((r.status, r.header("allow")), (405, Some(allow)), "{method} {path}: {}", r.text());
        r.expect_error(405, &format!("use {allow}"), &format!("{method} {path}"));
    }
    // HEAD is GET without the body: the same status and length, and no byte after the head.
    let get = send(port, "GET", "/ca/root.crt", &[], None, Duration::from_secs(10)).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"HEAD /ca/root.crt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut head = Vec::new();
    s.read_to_end(&mut head).unwrap();
    let head = String::from_utf8(head).unwrap();
    let (status_and_fields, after) = head.split_once("\r\n\r\n").unwrap();
    assert!(status_and_fields.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let length = format!("content-length: {}", get.body.len());
    assert!(status_and_fields.to_ascii_lowercase().lines().any(|l| l == length), "{head}");
    assert_eq!(after, "", "a HEAD answer carries no body");

    // `pki init` with no flags in the same directory reaches the running server.
    let init = || {
        let mut c = pki_command();
        c.arg("init").current_dir(cwd.path());
        run(&mut c).ok().stdout
    };
    let again = init();
    assert!(again.starts_with("CA already initialised; nothing changed\n"), "{again}");
    for f in &fingerprints {
        assert!(again.contains(f), "init reports another {f}: {again}");
    }
    server.stop();
    // And directly on ./pki-data once the server has stopped.
    let again = init();
    assert!(again.starts_with("CA already initialised; nothing changed\n"), "{again}");
    for f in &fingerprints {
        assert!(again.contains(f), "init reports another {f}: {again}");
    }
    let entries: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(entries.iter().any(|e| e == "pki-data"), "{entries:?}");
}

/// The nice value of every thread of process `pid`, by thread name.
fn thread_nice(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let (Ok(comm), Ok(stat)) =
            (std::fs::read_to_string(dir.join("comm")), std::fs::read_to_string(dir.join("stat")))
        else {
            continue; // the thread ended meanwhile
        };
        // Field 19 of stat is the nice value; the fields after the name start at field 3.
        let after_name = &stat[stat.rfind(") ").expect("stat has the name in parentheses") + 2..];
        let nice: i32 = after_name.split_whitespace().nth(16).expect("nice field").parse().expect("nice");
        out.push((comm.trim_end().to_string(), nice));
    }
    out
}

/// The HTTP workers run five nice levels below the rest of `pki serve`, so that threads which
/// wait on the disk (here the TSA's committer, started when the store opens, not by the first
/// request's worker) get a core as soon as their write returns.
#[test]
fn http_workers_run_five_nice_levels_below_the_tsa_committer() {
    let env = Env::new();
    let server = env.serve();
    // A timestamp through HTTP first: before, the committer's thread was started by the first
    // token's HTTP worker, and inherited its priority.
    let doc = env.write("doc.txt", "a document");
    let query = env.path("doc.tsq");
    let q = openssl([
        "ts",
        "-query",
        "-data",
        &doc.to_string_lossy(),
        "-sha256",
        "-out",
        &query.to_string_lossy(),
    ]);
    assert!(q.status.success(), "openssl ts -query: {}", q.stderr);
    let query = std::fs::read(&query).unwrap();
    let headers = [("Content-Type", "application/timestamp-query")];
    let r = send(server.port, "POST", "/tsa", &headers, Some(&query), Duration::from_secs(20)).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let threads = thread_nice(server.pid());
    let main = threads.iter().find(|(n, _)| n == "pki").map(|(_, v)| *v).expect("the main thread");
    let workers: Vec<i32> = threads.iter().filter(|(n, _)| n == "actix-rt|system").map(|(_, v)| *v).collect();
    assert!(!workers.is_empty(), "no HTTP worker among {threads:?}");
    assert!(workers.iter().all(|&w| w == (main + 5).min(19)), "workers at main + 5: {threads:?}");
    let committer = threads.iter().find(|(n, _)| n == "tsa-commit").map(|(_, v)| *v);
    assert_eq!(committer, Some(main), "the TSA committer at the main thread's priority: {threads:?}");
}

/// Every listener is bound, and every file of `[mail]` read and checked, before key custody is
/// opened or a CA made: a first `pki serve` whose address is taken, malformed or not this
/// machine's, whose archive certificate or relay password cannot be used, or whose admin group
/// does not exist, stops with one line
/// naming it and leaves no CA behind (before, it created the CA, then stopped). Once the address
/// is free, the same configuration starts.
#[test]
fn a_listener_or_mail_file_that_cannot_be_had_stops_a_first_start_before_a_ca_is_made() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let acme = "[acme]\nchallenge_from = \"acme-challenge@example.com\"\ndns_resolver = \"127.0.0.1:53\"\n";
    let files = tempfile::tempdir().unwrap();
    let garbage = files.path().join("garbage.pem");
    std::fs::write(&garbage, b"\x00\xffnot a certificate").unwrap();
    let ed25519 = files.path().join("ed25519.pem");
    openssl([
        "req",
        "-x509",
        "-newkey",
        "ed25519",
        "-nodes",
        "-keyout",
        "/dev/null",
        "-subj",
        "/CN=archive",
        "-out",
        ed25519.to_str().unwrap(),
    ]);
    let missing = files.path().join("missing");
    let (garbage, ed25519, missing) = (garbage.display(), ed25519.display(), missing.display());
    let cases = [
        (String::new(), Some(busy.as_str()), vec!["cannot listen on", &busy, "in use"]),
        (format!("[server.tls]\nlisten = \"{busy}\"\n"), None, vec!["cannot listen with HTTPS on", &busy]),
        ("[metrics]\nlisten = \"192.0.2.1:9464\"\n".into(), None, vec!["for metrics on 192.0.2.1:9464"]),
        (
            "[ldap]\nlisten = \"garbage\"\n".into(),
            None,
            vec!["for LDAP on garbage", "invalid socket address"],
        ),
        ("[ldap]\nlisten = \"999.1.1.1:389\"\n".into(), None, vec!["for LDAP on 999.1.1.1:389"]),
        (format!("[ldap]\ntls_listen = \"{busy}\"\n"), None, vec!["for LDAP on", &busy]),
        (format!("{acme}\n[acme.smtp]\nlisten = \"{busy}\"\n"), None, vec!["for SMTP on", &busy]),
        (
            format!("[mail]\narchive_certificate = \"{missing}\"\n"),
            None,
            vec!["cannot read [mail] archive_certificate", "No such file"],
        ),
        (
            format!("[mail]\narchive_certificate = \"{garbage}\"\n"),
            None,
            vec!["[mail] archive_certificate", "not an X.509 certificate"],
        ),
        (
            format!("[mail]\narchive_certificate = \"{ed25519}\"\n"),
            None,
            vec!["[mail] archive_certificate", "cannot be encrypted to", "1.3.101.112"],
        ),
        (
            format!("[mail.relay]\nhost = \"127.0.0.1\"\nusername = \"u\"\npassword_file = \"{missing}\"\n"),
            None,
            vec!["cannot read [mail.relay] password_file"],
        ),
    ];
    for (extra, listen, names) in &cases {
        let env = Env::with_config(extra);
        let main = format!("127.0.0.1:{}", env.port);
        let line = env.pki_fails(["serve", "--listen", listen.unwrap_or(&main)], names);
        let told = |reason: &str| line.matches(reason).count();
        assert!(told("os error") <= 1 && told("invalid socket address") <= 1, "the reason once: {line}");
        let after = env.pki_try(["ca-cert", "root"]);
        assert!(!after.status.success(), "{extra}: a CA was made before the start failed");
        assert!(after.stderr.contains("no CA in"), "{extra}: {}", after.stderr);
    }
    // An admin group that does not exist (the tests' configuration names one that does).
    let env = Env::new();
    let text = std::fs::read_to_string(&env.config).unwrap();
    let (from, to) = (format!("admin_group = \"{OFFICERS_GROUP}\""), "admin_group = \"no-such-group-here\"");
    assert!(text.contains(&from), "{text}");
    std::fs::write(&env.config, text.replace(&from, to)).unwrap();
    env.pki_fails(["serve"], &["[server] admin_group \"no-such-group-here\": no such group"]);
    assert!(env.pki_try(["ca-cert", "root"]).stderr.contains("no CA in"), "a CA was made");
    // The SMTP case again, its address free now: the server starts and listens there.
    let (extra, _, _) = &cases[6];
    drop(taken);
    let env = Env::with_config(extra);
    let server = env.serve();
    assert!(
        server.stdout().contains(&format!("ACME challenge replies on smtp://{busy}")),
        "{}",
        server.stdout()
    );
    server.stop();
}

/// A command run while another process holds the embedded database without answering on the
/// admin socket (as a `pki serve` does while it starts) waits for it, saying so, instead of
/// failing once the database's own 2 s wait for its lock is over; a command that outlasts the
/// wait would be refused with a line naming the directory and what to do.
#[test]
fn a_command_beside_a_process_holding_the_data_directory_waits_for_it() {
    let env = Env::on_sled("");
    env.init();
    let listed = env.pki(["list"]).stdout;
    let held = cerdb::CertDb::open(env.data.join("db")).unwrap();
    let child = env
        .command(["list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Held past the database's own wait for its lock.
    std::thread::sleep(Duration::from_secs(4));
    drop(held);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), listed);
    assert!(
        stderr.contains("is held by another pki process; waiting up to 60 s for its admin socket"),
        "{stderr}"
    );
}
