//! `GET /metrics` of `pki serve` in the Prometheus text format, read after real traffic (issuance
//! and revocation through the CLI, OpenSSL's OCSP client, a timestamp, directory lookups that hit,
//! miss and exceed the anonymous quota): the counts match what was done, Prometheus' `promtool
//! check metrics` accepts the page, no e-mail address is in any label, the separate `[metrics]
//! listen` listener, and `[log] format = "json"` log lines that `jq` reads and that name no address
//! either.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pki_tests::http_client::send;
use pki_tests::*;

const EMAIL: &str = "metrics-subject@example.com";

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn get(port: u16, path: &str) -> pki_tests::http_client::Reply {
    send(port, "GET", path, &[], None, Duration::from_secs(10)).unwrap()
}

/// The value of the sample `name{labels}` (labels exactly as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).map(|v| v.parse().unwrap()))
}

fn traffic(env: &Env) {
    let key = gen_key(env.dir(), "m.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("m.csr"), &format!("/CN={EMAIL}"), &[]);
    let pem = env.pki(["issue", "--email", EMAIL, "--usage", "signing", "--csr", &p(&csr)]).stdout;
    let leaf = env.write("m.pem", &pem);
    let second = env.pki(["issue", "--email", EMAIL, "--usage", "signing", "--csr", &p(&csr)]).stdout;
    env.pki(["revoke", "--serial", &cert_serial(&pem_der(&second)), "--reason", "superseded"]);
    let ca = env.ca_files();
    let out = openssl([
        "ocsp",
        "-issuer",
        &p(&ca.issuing),
        "-cert",
        &p(&leaf),
        "-CAfile",
        &p(&ca.root),
        "-url",
        &format!("{}/ocsp", env.base_url()),
    ]);
    assert!(out.stdout.contains(": good"), "{}", out.stdout);
    let doc = env.write("doc.txt", "stamp me\n");
    env.pki(["ts", "stamp", &p(&doc), "--server", &env.base_url(), "--out", &p(&env.path("doc.tsr"))]);
    assert_eq!(
        get(env.port, &format!("/api/v1/certificates/exists?email={EMAIL}&usage=signing")).status,
        200
    );
    assert_eq!(get(env.port, "/api/v1/certificates/exists?email=nobody%40example.com").status, 200);
    env.pki(["cerdb", "anonymous", "--rate", "0.05", "--burst", "1"]);
    let path = "/api/v1/certificates/exists?email=nobody%40example.com";
    let statuses: Vec<u16> = (0..3).map(|_| get(env.port, path).status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn metrics_count_what_was_done_and_name_no_address() {
    let env = Env::new();
    env.init();
    let server = env.serve();
    traffic(&env);
    let r = get(env.port, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"), "{:?}", r.headers);
    let text = r.text();
    let expect = |series: &str, want: f64| {
        assert_eq!(sample(&text, series), Some(want), "{series} in:\n{text}");
    };
    expect(r#"pki_certificates_issued_total{kind="signing"}"#, 2.0);
    expect(r#"pki_certificates_revoked_total{kind="signing"}"#, 1.0);
    expect(r#"pki_ocsp_responses_total{status="successful"}"#, 1.0);
    expect(r#"pki_tsa_requests_total{outcome="granted"}"#, 1.0);
    expect(r#"pki_directory_lookups_total{result="hit"}"#, 1.0);
    assert!(sample(&text, r#"pki_directory_lookups_total{result="miss"}"#).unwrap() >= 2.0, "{text}");
    assert!(sample(&text, r#"pki_http_requests_total{service="directory",status="429"}"#).unwrap() >= 1.0);
    expect(r#"pki_http_requests_total{service="ocsp",status="200"}"#, 1.0);
    expect(r#"pki_http_requests_total{service="tsa",status="200"}"#, 1.0);
    assert!(text.contains(r#"pki_http_request_duration_seconds_bucket{service="ocsp",le="0.1"}"#), "{text}");
    expect(r#"pki_dependency_up{dependency="database"}"#, 1.0);
    expect(r#"pki_dependency_up{dependency="key_custody"}"#, 1.0);
    let head = sample(&text, "pki_audit_head_sequence").unwrap();
    assert!(head >= 5.0, "the audit head counts init, issuance, revocation, CRLs: {head}");
    let ocsp_left = sample(&text, r#"pki_ca_certificate_expiry_seconds{certificate="ocsp"}"#).unwrap();
    assert!((363.0 * 86400.0..=365.0 * 86400.0).contains(&ocsp_left), "{ocsp_left}");
    for c in ["root", "issuing", "tsa", "tls"] {
        assert!(
            sample(&text, &format!(r#"pki_ca_certificate_expiry_seconds{{certificate="{c}"}}"#)).is_some()
        );
    }
    assert!(!text.contains('@'), "no e-mail address in any metric:\n{text}");
    // Prometheus' own checker (its exposition parser and lints) accepts the page as served.
    let promtool = require_tool("promtool", "apt-get install -y prometheus");
    let out = run_with_input(Command::new(promtool).args(["check", "metrics"]), Some(&r.body));
    assert!(out.status.success(), "promtool check metrics: {}{}\n{text}", out.stdout, out.stderr);
    let logs = server.stderr();
    assert!(!logs.contains(EMAIL), "no e-mail address in the server's log:\n{logs}");
    server.stop();
}

#[test]
fn a_metrics_listener_of_its_own_and_json_logs() {
    let metrics_port = free_port();
    let env = Env::with_config(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n[log]\nformat = \"json\"\n"
    ));
    env.init();
    let server = env.serve();
    assert!(
        server.stdout().contains(&format!("metrics on http://127.0.0.1:{metrics_port}/metrics")),
        "{}",
        server.stdout()
    );
    assert_eq!(get(env.port, "/metrics").status, 404, "not on the main listener once it has its own");
    traffic(&env);
    let r = get(metrics_port, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(sample(&r.text(), r#"pki_certificates_issued_total{kind="signing"}"#), Some(2.0));
    // What the metrics listener does not serve is a JSON 404, and a method `/metrics` does not
    // take a JSON 405 with `Allow`, as on the main listener.
    for (method, path) in [("GET", "/nope"), ("GET", "/metrics/x")] {
        let r = send(metrics_port, method, path, &[], Some(b"x"), Duration::from_secs(10)).unwrap();
        assert_eq!(
            (r.status, r.json()),
            (404, serde_json::json!({"error": "no such endpoint"})),
            "{method} {path}"
        );
    }
    let r = send(metrics_port, "POST", "/metrics", &[], Some(b"x"), Duration::from_secs(10)).unwrap();
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    r.expect_error(405, "use GET, HEAD", "POST /metrics");
    let logs = server.stderr();
    server.stop();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "pki serve logs at info level");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    // And jq reads every line, each an object with its level and time.
    let jq = require_tool("jq", "apt-get install -y jq");
    let out = run_with_input(
        Command::new(jq).args(["-e", "-r", r#"if (.level|type) == "string" and (.timestamp|type) == "string" then .level else error("no level or timestamp") end"#]),
        Some(lines.join("\n").as_bytes()),
    );
    assert!(out.status.success(), "jq: {}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.lines().count(), lines.len(), "one level per line: {}", out.stdout);
    assert!(!logs.contains(EMAIL));
}
