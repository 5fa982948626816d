//! Issue 3, acceptance item 7: the OpenAPI document served at `/api/v1/openapi.json` is valid
//! (openapi-spec-validator), and schemathesis, run against the live server with it and every
//! check enabled, finds no failure: no server error, no undocumented status code or content type,
//! no response that breaks its schema, no schema-valid request refused, no schema-violating
//! request accepted.
//!
//! Both tools are installed by `scripts/test.sh` (pinned); without them this test fails naming the
//! install command.
#![allow(clippy::unwrap_used)]

use pki_tests::directory_support::*;
use pki_tests::*;

#[test]
fn the_openapi_document_is_valid_and_schemathesis_finds_no_failure() {
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
    valid_openapi_document(&server.url("/api/v1/openapi.json"), &env.path("openapi.json"));

    let config = env.write(
        "schemathesis.toml",
        format!("[parameters]\n\"path.fingerprint\" = \"{fp}\"\n\"path.serial\" = \"{serial}\"\n"),
    );
    let (_, total) = schemathesis_run(
        env.dir(),
        &config,
        &server.url("/api/v1/openapi.json"),
        &[
            "--checks",
            "all",
            "--max-examples",
            "80",
            "--request-timeout",
            "10",
            "-H",
            &format!("Authorization: Bearer {key}"),
        ],
    );
    assert!(total >= 5, "the five lookup operations at least");

    // The server is still serving, and never logged a panic.
    assert_eq!(
        get(port, "/api/v1/certificates/exists?email=alice@example.com", Some(&key)).json()["exists"],
        true
    );
    let logs = server.stderr();
    assert!(!logs.contains("panicked"), "the server panicked:\n{logs}");
    server.stop();
}
