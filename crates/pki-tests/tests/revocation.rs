//! Acceptance items 5 and 9: after `pki revoke` (serials in every spelling), the CRL from
//! `pki crl` and from its URL verifies with `openssl crl -CAfile` and lists each serial with its
//! reason; with `pki serve` running, every command works from a second process and a revocation
//! is in the CRL served over HTTP at once.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use pki_tests::*;

const EMAIL: &str = "bob@example.com";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Issues `n` signing certificates, each from a CSR with a key of its own (a revocation for
/// keyCompromise revokes the address's other certificates with the same key); their serials as
/// printed.
fn issue_n(env: &Env, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let key = gen_key(env.dir(), &format!("bob-{i}.key"), KeySpec::P256);
            let csr = make_csr(&key, &env.path(&format!("bob-{i}.csr")), &format!("/CN={EMAIL}"), &[]);
            let out = env.pki(["issue", "--email", EMAIL, "--usage", "signing", "--csr", &p(&csr)]);
            cert_serial(&pem_der(&out.stdout))
        })
        .collect()
}

fn colons(hex: &str) -> String {
    hex.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":")
}

fn mixed_case(hex: &str) -> String {
    hex.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_lowercase() } else { c }).collect()
}

/// (spelling, reason name as given, reason text as OpenSSL prints it, RFC 5280 code)
fn plan(serial: &str, i: usize) -> (String, &'static str, Option<&'static str>, Option<u8>) {
    match i {
        0 => (serial.to_string(), "keyCompromise", Some("Key Compromise"), Some(1)),
        1 => (serial.to_ascii_lowercase(), "affiliationChanged", Some("Affiliation Changed"), Some(3)),
        2 => (colons(&serial.to_ascii_lowercase()), "superseded", Some("Superseded"), Some(4)),
        3 => (format!("0x{serial}"), "cessationOfOperation", Some("Cessation Of Operation"), Some(5)),
        4 => (
            format!("0000{}", mixed_case(serial)),
            "privilegeWithdrawn",
            Some("Privilege Withdrawn"),
            Some(9),
        ),
        // unspecified: RFC 5280 5.3.1 says to omit the reasonCode rather than send unspecified.
        _ => (format!("0X{}", colons(serial)), "unspecified", None, None),
    }
}

#[test]
fn revocations_with_any_serial_spelling_are_in_the_signed_crl_from_pki_crl_and_its_url() {
    let env = Env::new();
    env.init();
    let serials = issue_n(&env, 7);
    let kept = serials[6].clone(); // never revoked
    let ca = env.ca_files();

    // Revoke six with six spellings and six reasons, without a server.
    for (i, serial) in serials[..6].iter().enumerate() {
        let (spelling, reason, _, _) = plan(serial, i);
        let out = env.pki(["revoke", "--serial", &spelling, "--reason", reason]);
        assert!(
            out.stdout.starts_with(&format!("revoked {serial} ({reason}) at ")),
            "`revoke --serial {spelling}` revoked {serial}: {}",
            out.stdout
        );
        // A second revocation, spelt differently again, is refused by name.
        env.pki_fails(
            ["revoke", "--serial", &serial.to_ascii_lowercase(), "--reason", "superseded"],
            &[serial, "already revoked"],
        );
        let show = env.pki(["show", "--serial", &format!("0x{}", serial.to_ascii_lowercase())]).stdout;
        assert!(show.contains("status:       revoked"), "show: {show}");
        assert!(show.contains(&format!("({reason})")), "show names the reason: {show}");
    }
    let rows = parse_list(&env.pki(["list"]).stdout);
    for s in &serials {
        let row = rows.iter().find(|r| &r.serial == s).expect("listed");
        assert_eq!(row.status, if *s == kept { "valid" } else { "revoked" }, "status of {s}");
    }

    // The CRL from `pki crl`.
    let crl_pem = env.pki(["crl"]).stdout;
    let crl = env.write("issuing-crl.pem", &crl_pem);
    check_crl(&env, &ca, &crl, "PEM", &serials, &kept);
    let (_, number_local) = crl_entries_der(&pem_der(&crl_pem), &ca.issuing_der);

    // The CRL from its URL, the one named in the certificates' CRL distribution point.
    let server = env.serve();
    let show = env.pki(["show", "--serial", &kept]).stdout;
    let url = crl_url_of(&pem_der(&show[show.find("-----BEGIN").unwrap()..]));
    assert_eq!(url, format!("{}/crl/issuing.crl", env.base_url()));
    let (status, ctype, body) = curl_get_status(&url);
    assert_eq!((status, ctype.as_str()), (200, "application/pkix-crl"), "GET {url}");
    let crl_http = env.write("issuing-crl.der", &body);
    check_crl(&env, &ca, &crl_http, "DER", &serials, &kept);
    let (_, number_http) = crl_entries_der(&body, &ca.issuing_der);
    assert!(number_http >= number_local, "cRLNumber went back");

    // The root's CRL verifies against the root alone and lists nothing.
    let root_crl = env.write("root-crl.der", curl_get(&format!("{}/crl/root.crl", env.base_url())));
    let out = openssl(["crl", "-inform", "DER", "-in", &p(&root_crl), "-CAfile", &p(&ca.root), "-noout"]);
    assert!(out.stderr.contains("verify OK"), "root CRL: {}", out.stderr);
    assert!(crl_entries_openssl(&root_crl, "DER").is_empty());
    drop(server);
}

fn crl_url_of(der: &[u8]) -> String {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    for e in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(d) = e.parsed_extension() {
            if let Some(DistributionPointName::FullName(names)) = &d.points[0].distribution_point {
                if let GeneralName::URI(u) = &names[0] {
                    return u.to_string();
                }
            }
        }
    }
    panic!("no CRL distribution point URI");
}

/// `openssl crl -CAfile chain` verifies it, a chain it does not belong to does not, and both
/// OpenSSL and x509-parser list every revoked serial with its reason, and the kept one not.
fn check_crl(env: &Env, ca: &CaFiles, crl: &Path, inform: &str, serials: &[String], kept: &str) {
    let out = openssl(["crl", "-inform", inform, "-in", &p(crl), "-CAfile", &p(&ca.chain), "-noout"]);
    assert!(out.stderr.contains("verify OK"), "openssl crl -CAfile: {}", out.stderr);
    let bad = openssl_try(["crl", "-inform", inform, "-in", &p(crl), "-CAfile", &p(&ca.root), "-noout"]);
    assert!(!bad.status.success(), "the issuing CA's CRL verified against the root alone");

    let listed = crl_entries_openssl(crl, inform);
    let der = if inform == "DER" {
        std::fs::read(crl).unwrap()
    } else {
        pem_der(&std::fs::read_to_string(crl).unwrap())
    };
    let (decoded, _) = crl_entries_der(&der, &ca.issuing_der);
    assert_eq!(listed.len(), 6, "six revoked certificates: {listed:?}");
    assert_eq!(decoded.len(), 6);
    for (i, serial) in serials[..6].iter().enumerate() {
        let (_, _, text, code) = plan(serial, i);
        let entry =
            listed.iter().find(|(s, _)| s == serial).unwrap_or_else(|| panic!("{serial} not in the CRL"));
        assert_eq!(entry.1.as_deref(), text, "reason of {serial} as OpenSSL reads it");
        let entry = decoded.iter().find(|(s, _)| s == serial).unwrap();
        assert_eq!(entry.1, code, "reasonCode of {serial}");
    }
    assert!(!listed.iter().any(|(s, _)| s == kept), "an unrevoked certificate is in the CRL");
    let _ = env;
}

#[test]
fn with_serve_running_every_command_works_from_a_second_process_and_the_http_crl_is_current() {
    let env = Env::new();
    // `pki serve` initialises the CA on first start.
    let server = env.serve();
    assert!(server.stdout().contains("CA initialised"), "serve stdout: {}", server.stdout());
    // The server holds the embedded database: a second process cannot open it, so whatever
    // works below went through the admin socket (counted below on either backend).
    if env.database_url.is_none() {
        assert!(
            cerdb::sled_engine::RawTrees::open(&env.data.join("db")).is_err(),
            "the database is not locked by the server"
        );
    }
    let admin_requests = || server.stderr().matches("admin request").count();
    let before = admin_requests();

    let init = env.pki(["init"]).stdout;
    assert!(init.starts_with("CA already initialised; nothing changed"), "init: {init}");

    let ca_certs = env.list_serials().len();
    let key = gen_key(env.dir(), "carol.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("carol.csr"), "/CN=carol@example.com", &[]);
    let issued =
        env.pki(["issue", "--email", "carol@example.com", "--usage", "signing", "--csr", &p(&csr)]).stdout;
    let serial = cert_serial(&pem_der(&issued));
    let pw = env.write("pw", "a long enough password\n");
    let gen = env.pki([
        "issue",
        "--email",
        "carol@example.com",
        "--usage",
        "encryption",
        "--generate",
        "--key-type",
        "p256",
        "--p12",
        &p(&env.path("carol.p12")),
        "--p12-password-file",
        &p(&pw),
    ]);
    let enc_serial = cert_serial(&pem_der(&gen.stdout));
    assert!(env.path("carol.p12").is_file(), "the client wrote the PKCS#12");

    let rows = parse_list(&env.pki(["list", "--email", "Carol@Example.com"]).stdout);
    let mut got: Vec<(&str, &str, &str)> =
        rows.iter().map(|r| (r.serial.as_str(), r.kind.as_str(), r.status.as_str())).collect();
    got.sort();
    let mut want = vec![(serial.as_str(), "signing", "valid"), (enc_serial.as_str(), "encryption", "valid")];
    want.sort();
    assert_eq!(got, want, "pki list --email");
    assert_eq!(env.list_serials().len(), ca_certs + 2, "the CA's own certificates and two new ones");

    let show = env.pki(["show", "--serial", &serial.to_ascii_lowercase()]).stdout;
    assert!(show.contains(&format!("serial:       {serial}")), "show: {show}");
    assert!(show.contains("e-mail:       carol@example.com"), "show: {show}");
    assert_eq!(
        pem_der(&show[show.find("-----BEGIN").unwrap()..]),
        pem_der(&issued),
        "show returns the issued DER"
    );

    let ca = env.ca_files();
    let out = env.pki(["revoke", "--serial", &colons(&serial), "--reason", "keyCompromise"]);
    assert!(out.stdout.starts_with(&format!("revoked {serial} (keyCompromise)")), "{}", out.stdout);
    // At once: no waiting, no refresh.
    let http = curl_get(&format!("{}/crl/issuing.crl", env.base_url()));
    let http_file = env.write("now.crl", &http);
    let out = openssl(["crl", "-inform", "DER", "-in", &p(&http_file), "-CAfile", &p(&ca.chain), "-noout"]);
    assert!(out.stderr.contains("verify OK"), "{}", out.stderr);
    assert_eq!(
        crl_entries_openssl(&http_file, "DER"),
        vec![(serial.clone(), Some("Key Compromise".to_string()))]
    );
    let (entries, _) = crl_entries_der(&http, &ca.issuing_der);
    assert_eq!(entries, vec![(serial.clone(), Some(1))]);

    // `pki crl` from the second process returns the same CRL.
    let crl = env.pki(["crl"]).stdout;
    assert_eq!(pem_der(&crl), http, "pki crl and the HTTP CRL differ");
    let audit = env.pki(["audit", "verify"]).stdout;
    assert!(audit.starts_with("audit log verified:"), "{audit}");

    // Every command above went to the server, which logged each: init, 2 issue, 3 list, show,
    // 2 ca-cert, revoke, crl, audit verify.
    assert!(
        admin_requests() >= before + 12,
        "the server logged {} admin requests",
        admin_requests() - before
    );
    server.stop();
    // Stopped: the data directory is usable directly again, and the revocation persisted.
    let show = env.pki(["show", "--serial", &serial]).stdout;
    assert!(show.contains("status:       revoked"), "{show}");
}
