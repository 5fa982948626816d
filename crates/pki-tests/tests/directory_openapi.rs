//! Issue 3, acceptance item 7: the OpenAPI document served at `/api/v1/openapi.json` is valid
//! (openapi-spec-validator), and schemathesis, run against the live server with it and every
//! check enabled, finds no failure: no server error, no undocumented status code or content type,
//! no response that breaks its schema, no schema-valid request refused, no schema-violating
//! request accepted.
//!
//! Both tools are installed by `scripts/test.sh` (pinned); without them this test fails naming the
//! install command.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use pki_tests::directory_support::*;
use pki_tests::*;

#[test]
fn the_openapi_document_is_valid_and_schemathesis_finds_no_failure() {
    let st = schemathesis_bin();
    let validator = require_tool(
        "openapi-spec-validator",
        "pip install schemathesis==4.32.5 openapi-spec-validator==0.9.0",
    );

    let env = Env::new();
    env.init();
    let server = env.serve();
    let port = server.port;

    // The document's example address exists here, and one certificate is given to schemathesis
    // for the by-fingerprint and by-serial operations, so that 200 answers are checked too.
    let key_file = gen_key(env.dir(), "alice.key", KeySpec::P256);
    let csr = make_csr(&key_file, &env.path("alice.csr"), "/CN=alice@example.com", &[]);
    let csr = csr.display().to_string();
    env.pki(["issue", "--email", "alice@example.com", "--usage", "signing", "--csr", &csr]);
    let pem =
        env.pki(["issue", "--email", "alice@example.com", "--usage", "encryption", "--csr", &csr]).stdout;
    let serial = cert_serial(&pem_der(&pem));
    let fp = openssl_fingerprint(&env.write("alice.pem", &pem));
    let key = env
        .pki(["apikey", "create", "--name", "schemathesis", "--rate", "1000000"])
        .stdout
        .trim()
        .to_string();

    // The served document is valid OpenAPI 3.
    let doc = curl_get(&server.url("/api/v1/openapi.json"));
    let doc_file = env.write("openapi.json", &doc);
    let out = run(Command::new(&validator).arg(&doc_file));
    assert!(
        out.status.success() && out.stdout.contains("OK"),
        "invalid OpenAPI document:\n{}{}",
        out.stdout,
        out.stderr
    );
    let parsed: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert!(parsed["openapi"].as_str().unwrap().starts_with("3."));

    let config = env.write(
        "schemathesis.toml",
        format!("[parameters]\n\"path.fingerprint\" = \"{fp}\"\n\"path.serial\" = \"{serial}\"\n"),
    );
    let out = run(Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &server.url("/api/v1/openapi.json")])
        // One worker: CPython 3.11.7 can fail inside schemathesis with "AST constructor recursion
        // depth mismatch" when its workers compile code in parallel.
        .args(["--checks", "all", "--max-examples", "80", "--workers", "1", "--no-color"])
        .args(["--generation-database", "none", "--request-timeout", "10"])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .current_dir(env.dir()));
    let report = format!("{}\n{}", out.stdout, out.stderr);
    assert!(out.status.success(), "schemathesis found failures:\n{report}");
    let field = |name: &str| -> String {
        let at = report.find(name).unwrap_or_else(|| panic!("no {name:?} in the report:\n{report}"));
        report[at + name.len()..].split_whitespace().next().unwrap_or("").to_string()
    };
    let selected = field("Selected: ");
    let (chosen, total) = selected.split_once('/').unwrap_or_else(|| panic!("Selected: {selected}"));
    assert_eq!(chosen, total, "every operation selected:\n{report}");
    assert_eq!(field("Tested: "), total, "every operation tested:\n{report}");
    assert!(total.parse::<u32>().unwrap() >= 5, "the five lookup operations at least:\n{report}");
    assert!(report.contains(" passed") && !report.contains("failure"), "{report}");

    // The server is still serving, and never logged a panic.
    assert_eq!(
        get(port, "/api/v1/certificates/exists?email=alice@example.com", Some(&key)).json()["exists"],
        true
    );
    let logs = server.stderr();
    assert!(!logs.contains("panicked"), "the server panicked:\n{logs}");
    server.stop();
}
