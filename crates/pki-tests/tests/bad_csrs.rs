//! Acceptance item 4: every bad CSR is refused with one line naming the problem, and nothing is
//! stored (`pki list` unchanged, no serial retired, no key created) — run against the database
//! directly and again through a running `pki serve`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use pki_tests::*;

const EMAIL: &str = "alice@example.com";

struct BadCsr {
    what: &'static str,
    usage: &'static str,
    file: PathBuf,
    /// Words the one-line refusal must contain.
    names: Vec<&'static str>,
}

fn der_of_csr(pem_path: &Path) -> Vec<u8> {
    pem_der(&std::fs::read_to_string(pem_path).unwrap())
}

/// Flips the last byte of a DER CSR: the last octet of the signature (RSA) or of its `s`
/// INTEGER (ECDSA), so the DER stays well-formed and only the signature is wrong.
fn flip_signature(der: &[u8]) -> Vec<u8> {
    let mut v = der.to_vec();
    *v.last_mut().unwrap() ^= 0x01;
    v
}

/// `bytes` with the one occurrence of `from` replaced by `to` (same length).
fn replace_once(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at: Vec<usize> =
        bytes.windows(from.len()).enumerate().filter(|(_, w)| *w == from).map(|(i, _)| i).collect();
    assert_eq!(at.len(), 1, "{from:02x?} occurs {} times", at.len());
    let mut v = bytes.to_vec();
    v[at[0]..at[0] + to.len()].copy_from_slice(to);
    v
}

/// Deterministic noise (xorshift), so a failure can be reproduced.
fn noise(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn bad_csrs(env: &Env) -> (Vec<BadCsr>, PathBuf) {
    let d = env.dir();
    let rsa2048 = gen_key(d, "rsa2048.key", KeySpec::Rsa(2048));
    let p256 = gen_key(d, "p256.key", KeySpec::P256);
    let subj = format!("/CN={EMAIL}");
    let csr = |key: &Path, name: &str, subject: &str, extra: &[&str]| {
        make_csr(key, &env.path(name), subject, extra)
    };
    let mut v = Vec::new();
    let mut add = |what, usage, file, names: Vec<&'static str>| v.push(BadCsr { what, usage, file, names });

    // Keys the CA does not certify.
    let rsa1024 = gen_key(d, "rsa1024.key", KeySpec::Rsa(1024));
    add(
        "RSA-1024",
        "signing",
        csr(&rsa1024, "rsa1024.csr", &subj, &[]),
        vec!["CSR rejected", "RSA", "1024", "too small"],
    );
    let p521 = gen_key(d, "p521.key", KeySpec::P521);
    add(
        "P-521",
        "encryption",
        csr(&p521, "p521.csr", &subj, &[]),
        vec!["CSR rejected", "unsupported key type", "P-521"],
    );
    let ed448 = gen_key(d, "ed448.key", KeySpec::Ed448);
    add(
        "Ed448",
        "signing",
        csr(&ed448, "ed448.csr", &subj, &[]),
        vec!["CSR rejected", "unsupported key type", "Ed448"],
    );
    let dsa = gen_key(d, "dsa.key", KeySpec::Dsa);
    add(
        "DSA",
        "signing",
        csr(&dsa, "dsa.csr", &subj, &[]),
        vec!["CSR rejected", "unsupported key type", "DSA"],
    );

    // SHA-1 signatures.
    add(
        "RSA SHA-1",
        "signing",
        csr(&rsa2048, "sha1-rsa.csr", &subj, &["-sha1"]),
        vec!["CSR rejected", "sha1WithRSAEncryption"],
    );
    add(
        "ECDSA SHA-1",
        "signing",
        csr(&p256, "sha1-ec.csr", &subj, &["-sha1"]),
        vec!["CSR rejected", "ecdsa-with-SHA1"],
    );

    // Another address: in the subject CN, in the subject emailAddress, in a SAN extension.
    let mallory = "mallory@example.com";
    add(
        "other address in CN",
        "signing",
        csr(&p256, "cn.csr", &format!("/CN={mallory}"), &[]),
        vec!["CSR rejected", mallory, EMAIL],
    );
    add(
        "other address in emailAddress",
        "encryption",
        csr(&p256, "email.csr", &format!("/CN=Alice Example/emailAddress={mallory}"), &[]),
        vec!["CSR rejected", mallory, EMAIL],
    );
    add(
        "other address in SAN",
        "signing",
        csr(&p256, "san.csr", "/CN=Alice Example", &["-addext", &format!("subjectAltName=email:{mallory}")]),
        vec!["CSR rejected", mallory, EMAIL],
    );
    add(
        "other address beside the right one in SAN",
        "signing",
        csr(
            &rsa2048,
            "san2.csr",
            &subj,
            &["-addext", &format!("subjectAltName=email:{EMAIL},email:{mallory}")],
        ),
        vec!["CSR rejected", mallory],
    );

    // Signatures that do not verify (no proof of possession).
    let good_ec = csr(&p256, "good-ec.csr", &subj, &[]);
    let good_rsa = csr(&rsa2048, "good-rsa.csr", &subj, &[]);
    add(
        "flipped ECDSA signature byte",
        "signing",
        env.write("flipped-ec.der", flip_signature(&der_of_csr(&good_ec))),
        vec!["CSR rejected", "signature does not verify"],
    );
    add(
        "flipped RSA signature byte",
        "encryption",
        env.write("flipped-rsa.der", flip_signature(&der_of_csr(&good_rsa))),
        vec!["CSR rejected", "signature does not verify"],
    );

    // RSA numbers against the rules: an even public exponent (65536) patched into a good CSR —
    // named before the signature, which the patch breaks, is checked — and a modulus one bit
    // short, its size counted in bits.
    add(
        "RSA public exponent 65536",
        "signing",
        env.write("even-e.der", replace_once(&der_of_csr(&good_rsa), &[2, 3, 1, 0, 1], &[2, 3, 1, 0, 0])),
        vec!["CSR rejected", "public exponent 65536", "odd"],
    );
    let rsa2047 = gen_key(d, "rsa2047.key", KeySpec::Rsa(2047));
    add(
        "RSA-2047",
        "signing",
        csr(&rsa2047, "rsa2047.csr", &subj, &[]),
        vec!["CSR rejected", "2047 bits", "too small"],
    );

    // Files that are no CSR at all.
    add(
        "garbage",
        "signing",
        env.write("garbage.bin", noise(1500, 0x9e37_79b9_7f4a_7c15)),
        vec!["CSR rejected", "not a PKCS#10 request"],
    );
    add(
        "garbage PEM",
        "signing",
        env.write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE REQUEST-----\n!!not base64!!\n-----END CERTIFICATE REQUEST-----\n",
        ),
        vec!["CSR rejected", "PEM"],
    );
    let ca_pem = env.pki(["ca-cert", "issuing"]).stdout;
    add(
        "a certificate",
        "signing",
        env.write("cert.pem", ca_pem),
        vec!["CSR rejected", "CERTIFICATE", "not a CERTIFICATE REQUEST"],
    );
    add("empty", "signing", env.write("empty.csr", ""), vec!["CSR rejected", "empty"]);
    let good_pem = std::fs::read_to_string(&good_ec).unwrap();
    add(
        "truncated PEM",
        "signing",
        env.write("truncated.pem", &good_pem[..good_pem.len() / 2]),
        vec!["CSR rejected", "PEM"],
    );
    let good_der = der_of_csr(&good_ec);
    add(
        "truncated DER",
        "signing",
        env.write("truncated.der", &good_der[..good_der.len() - 10]),
        vec!["CSR rejected", "not a PKCS#10 request"],
    );
    // A valid CSR padded past 64 KiB: refused for its size alone.
    let mut big = good_pem.clone().into_bytes();
    big.resize(64 * 1024 + 1, b'\n');
    add(
        "oversized (64 KiB + 1)",
        "signing",
        env.write("oversized.csr", big),
        vec!["CSR rejected", "65537 bytes", "65536"],
    );

    // The boundary: the same CSR padded to exactly 64 KiB is accepted (used after the checks).
    let mut exact = good_pem.into_bytes();
    exact.resize(64 * 1024, b'\n');
    (v, env.write("exactly-64k.csr", exact))
}

fn audit_entries(env: &Env) -> u64 {
    let out = env.pki(["audit", "verify"]).stdout;
    // "audit log verified: N entries, hash chain intact"
    out.split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("audit verify: {out}"))
}

/// Serials retired (signed into a certificate never stored) and certificates stored, read from
/// the database itself (server stopped).
fn stored_counts(env: &Env) -> (usize, usize) {
    let db = cerdb::sled_engine::RawTrees::open(&env.data.join("db")).expect("open the embedded database");
    let counts = (db.len("serials").unwrap(), db.len("cert_meta").unwrap());
    drop(db);
    counts
}

fn key_files(env: &Env) -> Vec<PathBuf> {
    files_under(&env.data.join("keys"))
}

fn refuse_all(env: &Env, cases: &[BadCsr]) {
    for c in cases {
        let line = env.pki_fails(
            ["issue", "--email", EMAIL, "--usage", c.usage, "--csr", &c.file.display().to_string()],
            &c.names,
        );
        eprintln!("{:<45} -> {line}", c.what);
    }
}

#[test]
fn every_bad_csr_is_refused_by_name_and_nothing_is_stored() {
    let env = Env::new();
    env.init();
    // One good certificate first, so "nothing new" is checked against a non-trivial list.
    let key = gen_key(env.dir(), "ok.key", KeySpec::P256);
    let ok_csr = make_csr(&key, &env.path("ok.csr"), &format!("/CN={EMAIL}"), &[]);
    env.pki(["issue", "--email", EMAIL, "--usage", "signing", "--csr", &ok_csr.display().to_string()]);

    let (cases, exactly_64k) = bad_csrs(&env);
    let list_before = env.pki(["list"]).stdout;
    let audit_before = audit_entries(&env);
    let keys_before = key_files(&env);
    let (serials_before, certs_before) = stored_counts(&env);
    assert_eq!(serials_before, 0, "no serial retired: every certificate signed was stored");
    assert!(certs_before > 0);

    // Against the database directly.
    refuse_all(&env, &cases);
    assert_eq!(env.pki(["list"]).stdout, list_before, "pki list shows something new");
    assert_eq!(
        stored_counts(&env),
        (serials_before, certs_before),
        "a serial was retired or a record stored"
    );
    assert_eq!(key_files(&env), keys_before, "a key was created");
    // Each refusal that reached the CA is in the audit log (the chain still verifies).
    assert_eq!(audit_entries(&env), audit_before + cases.len() as u64, "refusals are audited");

    // Through a running server (the admin socket): same refusals, still nothing stored.
    let server = env.serve();
    refuse_all(&env, &cases);
    assert_eq!(env.pki(["list"]).stdout, list_before, "pki list shows something new (server)");
    server.stop();
    assert_eq!(
        stored_counts(&env),
        (serials_before, certs_before),
        "a serial was retired or a record stored"
    );
    assert_eq!(key_files(&env), keys_before, "a key was created");

    // Control for the size limit: exactly 64 KiB is accepted, and then the list does change.
    let out = env.pki([
        "issue",
        "--email",
        EMAIL,
        "--usage",
        "signing",
        "--csr",
        &exactly_64k.display().to_string(),
    ]);
    let serial = cert_serial(&pem_der(&out.stdout));
    let after = env.list_serials();
    assert!(after.contains(&serial), "the 64 KiB CSR's certificate is listed");
    assert_eq!(after.len(), list_before.lines().count(), "exactly one new row (header excluded before)");
}

/// Issues a signing certificate for `EMAIL` from `csr`; its serial.
fn issue_signing(env: &Env, csr: &Path) -> String {
    let out = env.pki(["issue", "--email", EMAIL, "--usage", "signing", "--csr", &csr.display().to_string()]);
    cert_serial(&pem_der(&out.stdout))
}

/// The S/MIME Baseline Requirements (6.1.1.3) have the CA refuse a key it knows to be
/// compromised: after `pki revoke --reason keyCompromise`, a new CSR with that key — for either
/// usage, any address — is refused with one line naming the revoked certificate, and nothing is
/// stored; locally and through a running server. The address's other certificate with that key
/// is revoked with it. A key whose certificate was revoked for another reason is certified again
/// — until that revocation is changed to keyCompromise, which the CRL then says.
#[test]
fn a_key_revoked_for_key_compromise_is_never_certified_again() {
    let env = Env::new();
    env.init();
    let subj = format!("/CN={EMAIL}");
    let bob = "bob@example.com";
    let mut refused = Vec::new();
    for (spec, tag) in [(KeySpec::P256, "p256"), (KeySpec::Rsa(2048), "rsa")] {
        let key = gen_key(env.dir(), &format!("{tag}.key"), spec);
        let first = make_csr(&key, &env.path(&format!("{tag}-1.csr")), &subj, &[]);
        let serial = issue_signing(&env, &first);
        let csr = first.display().to_string();
        let enc = env.pki(["issue", "--email", EMAIL, "--usage", "encryption", "--csr", &csr]).stdout;
        let enc = cert_serial(&pem_der(&enc));
        let out = env.pki(["revoke", "--serial", &serial, "--reason", "keyCompromise"]).stdout;
        assert!(out.contains(&format!("revoked {serial} (keyCompromise) at")), "{out}");
        assert!(out.contains(&format!("revoked {enc} (keyCompromise) at")), "the same key: {out}");
        assert!(out.contains(&format!("the same key as {serial}")), "{out}");
        // New CSRs with the same key: signing and encryption for the same address, and another
        // address.
        let again = make_csr(&key, &env.path(&format!("{tag}-2.csr")), &subj, &[]);
        let for_bob = make_csr(&key, &env.path(&format!("{tag}-bob.csr")), &format!("/CN={bob}"), &[]);
        for (email, usage, csr) in
            [(EMAIL, "signing", &again), (EMAIL, "encryption", &again), (bob, "signing", &for_bob)]
        {
            refused.push((email, usage, csr.display().to_string(), serial.clone()));
        }
    }

    // The control: a key whose certificate was revoked as superseded is certified again.
    let kept = gen_key(env.dir(), "kept.key", KeySpec::P256);
    let superseded = issue_signing(&env, &make_csr(&kept, &env.path("kept-1.csr"), &subj, &[]));
    env.pki(["revoke", "--serial", &superseded, "--reason", "superseded"]);

    let list_before = env.pki(["list"]).stdout;
    let audit_before = audit_entries(&env);
    let refuse_each = |env: &Env| {
        for (email, usage, csr, serial) in &refused {
            let line = env.pki_fails(
                ["issue", "--email", email, "--usage", usage, "--csr", csr],
                &["CSR rejected", "compromised", serial, "keyCompromise", "new key pair"],
            );
            eprintln!("{email} {usage} -> {line}");
        }
    };
    refuse_each(&env);
    assert_eq!(env.pki(["list"]).stdout, list_before, "pki list shows something new");
    assert_eq!(audit_entries(&env), audit_before + refused.len() as u64, "refusals are audited");

    let server = env.serve();
    refuse_each(&env);
    assert_eq!(env.pki(["list"]).stdout, list_before, "pki list shows something new (server)");
    let kept_2 = make_csr(&kept, &env.path("kept-2.csr"), &subj, &[]);
    let renewed = issue_signing(&env, &kept_2);
    assert!(env.list_serials().contains(&renewed), "the superseded certificate's key is certified again");

    // Then the kept key is found compromised: the superseded certificate's reason changes (its
    // time stays), the renewed one is revoked with it, and the key is refused from now on.
    let show = |serial: &str| env.pki(["show", "--serial", serial]).stdout;
    let before = show(&superseded);
    let out = env.pki(["revoke", "--serial", &superseded, "--reason", "keyCompromise"]).stdout;
    assert!(out.contains(&format!("revoked {superseded} (keyCompromise, before: superseded) at")), "{out}");
    assert!(out.contains(&format!("revoked {renewed} (keyCompromise) at")), "{out}");
    // `pki show`'s line "revoked:      TIME (REASON)".
    let revoked = |text: &str| {
        let line = text.lines().find_map(|l| l.strip_prefix("revoked:")).unwrap_or_else(|| panic!("{text}"));
        let (at, reason) = line.trim().split_once(' ').unwrap_or_else(|| panic!("{line}"));
        (at.to_string(), reason.to_string())
    };
    let (at_before, reason_before) = revoked(&before);
    assert_eq!(reason_before, "(superseded)");
    assert_eq!(revoked(&show(&superseded)), (at_before, "(keyCompromise)".to_string()), "the time is kept");
    env.pki_fails(
        ["issue", "--email", EMAIL, "--usage", "signing", "--csr", &kept_2.display().to_string()],
        &["CSR rejected", "compromised", &superseded],
    );
    env.pki_fails(
        ["revoke", "--serial", &superseded, "--reason", "superseded"],
        &["already revoked", "keyCompromise"],
    );
    let crl = env.write("now.crl", env.pki(["crl"]).stdout);
    let listed = crl_entries_openssl(&crl, "PEM");
    for s in [&superseded, &renewed] {
        let reason = listed.iter().find(|(l, _)| l == s).and_then(|(_, r)| r.clone());
        assert_eq!(reason.as_deref(), Some("Key Compromise"), "{s} in the CRL: {listed:?}");
    }
    server.stop();
}
