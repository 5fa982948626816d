//! Acceptance items 1, 2 and 3: certificates issued from `openssl req` CSRs and from keys
//! generated in the key store verify with `openssl verify`, work with `openssl cms`, and carry
//! exactly the S/MIME BR strict extensions (checked from the DER with x509-parser).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use pki_tests::*;

const EMAIL: &str = "alice@example.com";
const MESSAGE: &[u8] = b"Statement for March: balance 1,234.56 EUR.\r\nKind regards, Example Bank\r\n";

/// A self-signed root that has nothing to do with the CA: the control for "verification can fail".
fn unrelated_root(env: &Env) -> PathBuf {
    let key = env.path("other-root.key");
    let cert = env.path("other-root.pem");
    openssl([
        "req".as_ref(),
        "-x509".as_ref(),
        "-newkey".as_ref(),
        "ec".as_ref(),
        "-pkeyopt".as_ref(),
        "ec_paramgen_curve:P-256".as_ref(),
        "-nodes".as_ref(),
        "-keyout".as_ref(),
        key.as_os_str(),
        "-subj".as_ref(),
        "/O=Example Bank/CN=Example Bank Root CA".as_ref(),
        "-days".as_ref(),
        "2".as_ref(),
        "-out".as_ref(),
        cert.as_os_str(),
    ]);
    cert
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `openssl verify -CAfile root -untrusted issuing [-purpose P] cert` must say OK.
fn verify_chain(ca: &CaFiles, cert: &Path, purpose: Option<&str>) {
    let mut args =
        vec!["verify".to_string(), "-CAfile".into(), p(&ca.root), "-untrusted".into(), p(&ca.issuing)];
    if let Some(purpose) = purpose {
        args.extend(["-purpose".into(), purpose.into()]);
    }
    args.push(p(cert));
    let out = openssl(&args);
    assert_eq!(out.stdout.trim(), format!("{}: OK", p(cert)), "openssl verify: {}", out.stderr);
}

/// The same chain check against a root that did not issue it must fail.
fn verify_fails_with_other_root(ca: &CaFiles, other_root: &Path, cert: &Path) {
    let out = openssl_try(["verify", "-CAfile", &p(other_root), "-untrusted", &p(&ca.issuing), &p(cert)]);
    assert!(!out.status.success(), "a chain to an unrelated root verified: {}", out.stdout);
}

/// Issues from a CSR through the CLI; (PEM path, DER, serial as printed).
fn issue_from_csr(env: &Env, usage: &str, csr: &Path, name: &str) -> (PathBuf, Vec<u8>, String) {
    let out = env.pki(["issue", "--email", EMAIL, "--usage", usage, "--csr", &p(csr)]);
    let der = pem_der(&out.stdout);
    let serial = cert_serial(&der);
    assert_eq!(
        out.stderr.trim(),
        format!("issued {usage} certificate {serial} for {EMAIL}"),
        "the CLI names the serial it issued"
    );
    (env.write(name, &out.stdout), der, serial)
}

fn cms_sign_and_verify(env: &Env, ca: &CaFiles, other_root: &Path, cert: &Path, key: &Path, tag: &str) {
    let msg = env.write(&format!("{tag}.msg"), MESSAGE);
    let signed = env.path(&format!("{tag}.signed.der"));
    openssl([
        "cms",
        "-sign",
        "-binary",
        "-nodetach",
        "-in",
        &p(&msg),
        "-signer",
        &p(cert),
        "-inkey",
        &p(key),
        "-certfile",
        &p(&ca.issuing),
        "-outform",
        "DER",
        "-out",
        &p(&signed),
    ]);
    let verified = env.path(&format!("{tag}.verified"));
    let out = openssl([
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &p(&signed),
        "-CAfile",
        &p(&ca.root),
        "-purpose",
        "smimesign",
        "-out",
        &p(&verified),
    ]);
    assert!(out.stderr.contains("Verification successful"), "cms -verify: {}", out.stderr);
    assert_eq!(std::fs::read(&verified).unwrap(), MESSAGE, "verified content differs");
    // Control: the same signature against an unrelated root does not verify.
    let bad = openssl_try([
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &p(&signed),
        "-CAfile",
        &p(other_root),
        "-out",
        &p(&env.path("x")),
    ]);
    assert!(!bad.status.success(), "cms -verify accepted a chain to an unrelated root");
}

fn cms_encrypt(env: &Env, cert: &Path, tag: &str) -> PathBuf {
    let msg = env.write(&format!("{tag}.msg"), MESSAGE);
    let enc = env.path(&format!("{tag}.enc.der"));
    openssl([
        "cms",
        "-encrypt",
        "-binary",
        "-aes-256-cbc",
        "-in",
        &p(&msg),
        "-outform",
        "DER",
        "-out",
        &p(&enc),
        &p(cert),
    ]);
    enc
}

fn cms_decrypt(env: &Env, enc: &Path, cert: &Path, key: &Path, tag: &str) -> Out {
    let dec = env.path(&format!("{tag}.dec"));
    let _ = std::fs::remove_file(&dec);
    let out = openssl_try([
        "cms",
        "-decrypt",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &p(enc),
        "-recip",
        &p(cert),
        "-inkey",
        &p(key),
        "-out",
        &p(&dec),
    ]);
    if out.status.success() {
        assert_eq!(std::fs::read(&dec).unwrap(), MESSAGE, "decrypted content differs");
    }
    out
}

fn start(env: &Env) -> (Server, CaFiles, PathBuf) {
    env.init();
    let server = env.serve();
    let ca = env.ca_files();
    let other = unrelated_root(env);
    (server, ca, other)
}

#[test]
fn signing_certificates_from_rsa2048_and_p256_csrs_verify_as_smimesign_and_sign_cms() {
    let env = Env::new();
    let (server, ca, other_root) = start(&env);
    for (spec, tag, subject, extra) in [
        // RSA: the address in the subject (CN and emailAddress).
        (KeySpec::Rsa(2048), "rsa", format!("/CN={EMAIL}/emailAddress={EMAIL}"), vec![]),
        // P-256: a display name in CN, the address in a SAN extension.
        (
            KeySpec::P256,
            "p256",
            "/CN=Alice Example".to_string(),
            vec!["-addext", "subjectAltName=email:alice@example.com"],
        ),
    ] {
        let key = gen_key(env.dir(), &format!("sign-{tag}.key"), spec);
        let csr = make_csr(&key, &env.path(&format!("sign-{tag}.csr")), &subject, &extra);
        let (cert, der, _serial) = issue_from_csr(&env, "signing", &csr, &format!("sign-{tag}.pem"));

        // Item 1.
        verify_chain(&ca, &cert, Some("smimesign"));
        verify_fails_with_other_root(&ca, &other_root, &cert);
        // Item 3.
        check_leaf(&der, EMAIL, LeafProfile::Signing, &env.base_url(), &ca.issuing_der, &spki_of_key(&key));
        // Item 2.
        cms_sign_and_verify(&env, &ca, &other_root, &cert, &key, &format!("sign-{tag}"));
    }

    // The AIA caIssuers and CRL distribution point URLs in the certificates are real.
    let issuing = curl_get(&format!("{}/ca/issuing.crt", env.base_url()));
    assert_eq!(issuing, ca.issuing_der, "caIssuers URL serves the issuing CA certificate");
    let root = curl_get(&format!("{}/ca/root.crt", env.base_url()));
    assert_eq!(root, pem_der(&std::fs::read_to_string(&ca.root).unwrap()));
    let crl = env.write("issuing.crl", curl_get(&format!("{}/crl/issuing.crl", env.base_url())));
    let out = openssl(["crl", "-inform", "DER", "-in", &p(&crl), "-CAfile", &p(&ca.chain), "-noout"]);
    assert!(out.stderr.contains("verify OK"), "CRL from the CRL DP URL: {}", out.stderr);
    drop(server);
}

#[test]
fn encryption_certificates_from_rsa2048_and_p256_csrs_verify_and_decrypt_cms() {
    let env = Env::new();
    let (_server, ca, other_root) = start(&env);
    for (spec, tag, profile) in [
        (KeySpec::Rsa(2048), "rsa", LeafProfile::EncryptionRsa),
        (KeySpec::P256, "p256", LeafProfile::EncryptionEc),
    ] {
        let key = gen_key(env.dir(), &format!("enc-{tag}.key"), spec);
        let csr = make_csr(&key, &env.path(&format!("enc-{tag}.csr")), &format!("/CN={EMAIL}"), &[]);
        let (cert, der, _serial) = issue_from_csr(&env, "encryption", &csr, &format!("enc-{tag}.pem"));

        // Item 1. OpenSSL 3.0's `-purpose smimeencrypt` check only accepts keyEncipherment, but the
        // S/MIME BR strict profile (and RFC 8813) require EC encryption certificates to carry
        // keyAgreement and never keyEncipherment. So RSA encryption certificates are verified with
        // `-purpose smimeencrypt`; EC ones with the chain check alone (no purpose), their KU
        // (keyAgreement only) and EKU (emailProtection only) checked from the DER below, and
        // `openssl cms -encrypt`/`-decrypt` proving they work (docs/certificate-profiles.md).
        match profile {
            LeafProfile::EncryptionRsa => verify_chain(&ca, &cert, Some("smimeencrypt")),
            _ => verify_chain(&ca, &cert, None),
        }
        verify_fails_with_other_root(&ca, &other_root, &cert);
        // Item 3.
        check_leaf(&der, EMAIL, profile, &env.base_url(), &ca.issuing_der, &spki_of_key(&key));
        // Item 2: encrypt to the certificate, decrypt with the subscriber's key.
        let enc = cms_encrypt(&env, &cert, &format!("enc-{tag}"));
        cms_decrypt(&env, &enc, &cert, &key, &format!("enc-{tag}")).ok();
    }
}

#[test]
fn escrowed_encryption_keys_decrypt_cms_with_the_pkcs12_key_and_the_recovered_key() {
    let env = Env::new();
    let (_server, ca, other_root) = start(&env);
    let pw = env.write("p12.pw", "correct horse battery staple\n");
    let officer_pw = env.write("officer.pw", "another long passphrase\n");
    let mut encrypted: Vec<(String, PathBuf, PathBuf, PathBuf)> = Vec::new(); // (tag, enc, cert, key)

    for (key_type, tag, profile) in
        [("rsa2048", "rsa", LeafProfile::EncryptionRsa), ("p256", "p256", LeafProfile::EncryptionEc)]
    {
        let p12 = env.path(&format!("{tag}.p12"));
        let out = env.pki([
            "issue",
            "--email",
            EMAIL,
            "--usage",
            "encryption",
            "--generate",
            "--key-type",
            key_type,
            "--p12",
            &p(&p12),
            "--p12-password-file",
            &p(&pw),
        ]);
        let der = pem_der(&out.stdout);
        let serial = cert_serial(&der);
        assert!(out.stderr.contains(&serial), "stderr names the serial: {}", out.stderr);
        let cert = env.write(&format!("{tag}.pem"), &out.stdout);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p12).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the PKCS#12 is written mode 0600");

        // The key and chain from the PKCS#12.
        let key = env.path(&format!("{tag}.p12.key"));
        openssl([
            "pkcs12",
            "-in",
            &p(&p12),
            "-passin",
            &format!("file:{}", p(&pw)),
            "-nodes",
            "-nocerts",
            "-out",
            &p(&key),
        ]);
        let wrong =
            openssl_try(["pkcs12", "-in", &p(&p12), "-passin", "pass:wrong password", "-nodes", "-nocerts"]);
        assert!(!wrong.status.success(), "the PKCS#12 opened with a wrong password");
        let certs =
            openssl(["pkcs12", "-in", &p(&p12), "-passin", &format!("file:{}", p(&pw)), "-nokeys"]).stdout;
        let chain: Vec<Vec<u8>> =
            pem::parse_many(certs.as_bytes()).unwrap().into_iter().map(|x| x.into_contents()).collect();
        assert_eq!(chain.len(), 3, "the PKCS#12 holds leaf, issuing CA and root");
        assert!(chain.contains(&der) && chain.contains(&ca.issuing_der), "the PKCS#12 chain");

        // Items 1 and 3 (see the note on smimeencrypt in the CSR test).
        match profile {
            LeafProfile::EncryptionRsa => verify_chain(&ca, &cert, Some("smimeencrypt")),
            _ => verify_chain(&ca, &cert, None),
        }
        verify_fails_with_other_root(&ca, &other_root, &cert);
        check_leaf(&der, EMAIL, profile, &env.base_url(), &ca.issuing_der, &spki_of_key(&key));

        // Item 2: decrypt with the key from the PKCS#12 ...
        let enc = cms_encrypt(&env, &cert, tag);
        cms_decrypt(&env, &enc, &cert, &key, &format!("{tag}-p12")).ok();

        // ... and with the key from `pki escrow recover` (serial spelt in lower case here).
        let rec = env.path(&format!("{tag}.recovered.p12"));
        let out = env.escrow_recover(&serial.to_ascii_lowercase(), &rec, &officer_pw);
        assert!(out.stdout.contains(&serial), "escrow recover names the serial: {}", out.stdout);
        let rkey = env.path(&format!("{tag}.recovered.key"));
        openssl([
            "pkcs12",
            "-in",
            &p(&rec),
            "-passin",
            &format!("file:{}", p(&officer_pw)),
            "-nodes",
            "-nocerts",
            "-out",
            &p(&rkey),
        ]);
        let pk8 =
            |k: &Path| openssl(["pkcs8", "-topk8", "-nocrypt", "-in", &p(k), "-outform", "DER"]).stdout_bytes;
        assert_eq!(pk8(&rkey), pk8(&key), "the recovered key is the escrowed key");
        cms_decrypt(&env, &enc, &cert, &rkey, &format!("{tag}-recovered")).ok();
        encrypted.push((tag.to_string(), enc, cert, key));
    }

    // Control: a message for one key does not decrypt with the other.
    let (tag, enc, cert, _) = &encrypted[0];
    let other_key = &encrypted[1].3;
    let out = cms_decrypt(&env, enc, cert, other_key, &format!("{tag}-wrong"));
    assert!(!out.status.success(), "decryption with the wrong key succeeded");
}
