//! Admin console (issue 6), acceptance item 6, and `pki user` / `pki init`: HTTPS with the
//! server certificate the in-house root issued at init (`curl --cacert root.pem
//! https://localhost:PORT/admin/login`), or with a certificate and key from `[server.tls]`;
//! the first administrator's one-time password printed once; account commands with and without
//! a running server.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use pki_tests::console_support::*;
use pki_tests::*;

fn curl_https(ca: &std::path::Path, url: &str) -> Out {
    run(Command::new(curl_bin()).args(["-sS", "--max-time", "20", "-D", "-", "--cacert"]).arg(ca).arg(url))
}

fn serve_tls(env: &Env, tls_port: u16) -> Server {
    let mut cmd = env.command([
        "serve",
        "--listen",
        &format!("127.0.0.1:{}", env.port),
        "--tls-listen",
        &format!("127.0.0.1:{tls_port}"),
    ]);
    Server::start(&mut cmd, env.port, env.dir())
}

#[test]
fn https_with_the_certificate_the_root_issued_chains_to_root_pem_and_names_localhost() {
    let env = Env::new();
    env.init();
    let tls_port = free_port();
    let server = serve_tls(&env, tls_port);
    assert!(server.stdout().contains(&format!("https://127.0.0.1:{tls_port}")), "{}", server.stdout());
    let ca = env.ca_files();
    for host in ["localhost", "127.0.0.1"] {
        let out = curl_https(&ca.root, &format!("https://{host}:{tls_port}/admin/login")).ok();
        assert!(out.stdout.starts_with("HTTP/1.1 200"), "{host}: {}", out.stdout);
        assert!(out.stdout.contains("<h1>Log in</h1>"));
        let cookie = out.stdout.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
        assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
        assert!(out.stdout.to_ascii_lowercase().contains("strict-transport-security: max-age="));
    }
    // The issuing CA is not a trust anchor for it: the server certificate comes from the root.
    let out = curl_https(&ca.issuing, &format!("https://localhost:{tls_port}/admin/login"));
    assert!(!out.status.success(), "must not verify against the S/MIME issuing CA");
    // OpenSSL agrees: the served certificate verifies against root.pem for the name localhost.
    let s = run_with_input(
        Command::new(openssl_bin())
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{tls_port}"),
                "-servername",
                "localhost",
                "-verify_hostname",
                "localhost",
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(&ca.root),
        Some(b"Q\n"),
    );
    assert!(s.stdout.contains("Verify return code: 0 (ok)"), "{}\n{}", s.stdout, s.stderr);
}

#[test]
fn https_with_a_configured_certificate_and_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("tls.key");
    let cert = dir.path().join("tls.pem");
    self_signed_p256(&key, &cert, "/CN=localhost", &["-addext", "subjectAltName=DNS:localhost"]);
    let env = Env::with_config(&format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    env.init();
    let tls_port = free_port();
    let _server = serve_tls(&env, tls_port);
    let out = curl_https(&cert, &format!("https://localhost:{tls_port}/admin/login")).ok();
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);
    let root = env.ca_files().root;
    assert!(!curl_https(&root, &format!("https://localhost:{tls_port}/admin/login")).status.success());
    _server.stop();
    // The same files with nothing listening with TLS: said, not silently ignored.
    let plain = env.serve();
    assert!(plain
        .stderr()
        .contains("[server.tls] cert_file and key_file are set, but nothing here listens with TLS"));
    plain.stop();
    // Files that are no certificate or key (a device given by mistake): one line, before any
    // listener opens.
    for (cert_file, key_file, wanted) in [
        (
            "/dev/zero".into(),
            key.display().to_string(),
            "[server.tls] cert_file /dev/zero is larger than 1048576 bytes",
        ),
        (
            cert.display().to_string(),
            "/dev/zero".into(),
            "[server.tls] key_file /dev/zero is larger than 1048576 bytes",
        ),
    ] {
        let bad = Env::with_config(&format!(
            "[server.tls]\ncert_file = \"{cert_file}\"\nkey_file = \"{key_file}\"\n"
        ));
        bad.init();
        bad.pki_fails(["serve", "--tls-listen", &format!("127.0.0.1:{}", free_port())], &[wanted]);
    }
}

#[test]
fn init_prints_the_first_admin_password_once_and_user_commands_work_with_and_without_a_server() {
    let env = Env::new();
    let first = env.init().stdout;
    let otp = one_time_password(&first);
    assert!(first.contains("console user admin (admin)"), "{first}");
    let again = env.pki(["init"]).stdout;
    assert!(!again.contains("one-time password"), "printed once only: {again}");

    // Without a server.
    let olivia = one_time_password(&env.pki(["user", "add", "--name", "Olivia", "--role", "officer"]).stdout);
    env.pki_fails(["user", "add", "--name", "olivia", "--role", "auditor"], &["olivia", "exists"]);
    env.pki_fails(["user", "add", "--name", "x y", "--role", "auditor"], &["invalid user name"]);
    env.pki_fails(["user", "add", "--name", "zed", "--role", "root"], &["invalid role"]);
    let list = env.pki(["user", "list"]).stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("olivia ") && l.contains("officer") && l.contains("one-time-password")),
        "{list}"
    );

    // With the server running, through the admin socket.
    let _server = env.serve();
    let audrey = one_time_password(&env.pki(["user", "add", "--name", "audrey", "--role", "auditor"]).stdout);
    let mut c = Client::new(env.port);
    first_login(&mut c, "audrey", &audrey, "Correct-Horse-Battery-9");
    assert!(env
        .pki(["user", "list"])
        .stdout
        .lines()
        .any(|l| l.starts_with("audrey ") && l.contains("active")));
    env.pki(["user", "disable", "--name", "audrey"]);
    assert_eq!(c.get("/admin/").status, 303, "disabling ends the session");
    let mut d = Client::new(env.port);
    let token = d.csrf("/admin/login");
    let r = d.post_form(
        "/admin/login",
        &[("csrf_token", &token), ("username", "audrey"), ("password", "Correct-Horse-Battery-9")],
    );
    assert_eq!(r.status, 403, "a disabled account cannot log in");
    env.pki(["user", "enable", "--name", "audrey"]);
    let fresh = one_time_password(&env.pki(["user", "reset", "--name", "audrey"]).stdout);
    first_login(&mut Client::new(env.port), "audrey", &fresh, "Another-Long-Passphrase-7");
    first_login(&mut Client::new(env.port), "admin", &otp, "Correct-Horse-Battery-9");
    first_login(&mut Client::new(env.port), "olivia", &olivia, "Correct-Horse-Battery-9");
    env.pki_fails(["user", "disable", "--name", "nobody"], &["no console user nobody"]);
}
