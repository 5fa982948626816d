//! Acceptance item 7: no private key material in plaintext anywhere under the data directory.
//!
//! For every private key the test can obtain (escrowed keys from their PKCS#12 and from
//! `pki escrow recover`, and the subscribers' own CSR keys), every file under the data directory
//! is searched for the PKCS#8 DER, the traditional (PKCS#1 / SEC1) DER and each secret number
//! (RSA d, p, q, dP, dQ, qInv; the EC private scalar), as raw bytes, as hex (both cases) and, for
//! the DER, as base64. Positive controls prove the search finds planted material and does read
//! the database (the public certificates are found in it).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// One byte string to look for, and what it is.
struct Needle {
    what: String,
    bytes: Vec<u8>,
}

/// The secret numbers of a private key, parsed from `openssl pkey -text -noout`.
fn secrets(key: &Path) -> Vec<(String, Vec<u8>)> {
    let text = openssl(["pkey", "-in", &p(key), "-text", "-noout"]).stdout;
    const SECRET: [&str; 7] =
        ["privateExponent", "prime1", "prime2", "exponent1", "exponent2", "coefficient", "priv"];
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().chain(std::iter::once("end:")) {
        if line.starts_with(' ') {
            if let Some((_, hex)) = current.as_mut() {
                hex.push_str(&line.trim().replace(':', ""));
            }
            continue;
        }
        if let Some((label, hex)) = current.take() {
            let mut bytes = hex::decode(&hex).unwrap();
            while bytes.first() == Some(&0) {
                bytes.remove(0); // the INTEGER sign pad OpenSSL prints
            }
            out.push((label, bytes));
        }
        let label = line.trim_end_matches(':');
        if SECRET.contains(&label) {
            current = Some((label.to_string(), String::new()));
        }
    }
    let labels: Vec<&str> = out.iter().map(|(l, _)| l.as_str()).collect();
    assert!(
        labels == ["priv"]
            || labels == ["privateExponent", "prime1", "prime2", "exponent1", "exponent2", "coefficient"],
        "unexpected key text layout {labels:?}:\n{text}"
    );
    for (l, b) in &out {
        assert!(b.len() >= 28, "{l} of {} is only {} bytes", key.display(), b.len());
    }
    out
}

fn needles_for(name: &str, key: &Path, rsa: bool) -> Vec<Needle> {
    let mut n = Vec::new();
    let mut add = |what: String, bytes: Vec<u8>| {
        n.push(Needle { what: format!("{what} (hex)"), bytes: hex::encode(&bytes).into_bytes() });
        n.push(Needle { what: format!("{what} (HEX)"), bytes: hex::encode_upper(&bytes).into_bytes() });
        n.push(Needle { what: format!("{what} (raw)"), bytes });
    };
    let pkcs8 = openssl(["pkcs8", "-topk8", "-nocrypt", "-in", &p(key), "-outform", "DER"]).stdout_bytes;
    let traditional = if rsa {
        openssl(["rsa", "-in", &p(key), "-outform", "DER", "-traditional"]).stdout_bytes
    } else {
        openssl(["ec", "-in", &p(key), "-outform", "DER"]).stdout_bytes
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pkcs8);
    add(format!("{name}: PKCS#8 DER"), pkcs8);
    add(format!("{name}: {} DER", if rsa { "PKCS#1" } else { "SEC1" }), traditional);
    for (label, bytes) in secrets(key) {
        add(format!("{name}: {label}"), bytes);
    }
    n.push(Needle { what: format!("{name}: PKCS#8 base64"), bytes: b64.clone().into_bytes() });
    n.push(Needle { what: format!("{name}: PKCS#8 PEM first line"), bytes: b64.as_bytes()[..64].to_vec() });
    n
}

/// Every (file, needle) found under `dir`.
fn search(dir: &Path, needles: &[Needle]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        for n in needles {
            if contains_bytes(&bytes, &n.bytes) {
                found.push((f.clone(), n.what.clone()));
            }
        }
    }
    found
}

fn scenario(env: &Env) {
    let server = env.serve();
    let pw = env.write("p12.pw", "p12 password for the test\n");
    let officer = env.write("officer.pw", "officer password for the test\n");
    let mut keys: Vec<(String, PathBuf, bool)> = Vec::new();
    let mut certs: Vec<Vec<u8>> = Vec::new();

    // Escrowed keys, from the delivered PKCS#12 and from the officer's recovery.
    for (kt, rsa) in [("rsa2048", true), ("p256", false), ("p384", false)] {
        let p12 = env.path(&format!("{kt}.p12"));
        let out = env.pki([
            "issue",
            "--email",
            "frank@example.com",
            "--usage",
            "encryption",
            "--generate",
            "--key-type",
            kt,
            "--p12",
            &p(&p12),
            "--p12-password-file",
            &p(&pw),
        ]);
        let der = pem_der(&out.stdout);
        let serial = cert_serial(&der);
        certs.push(der);
        let key = env.path(&format!("{kt}.key"));
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
        keys.push((format!("escrowed {kt}"), key, rsa));
        let rec = env.path(&format!("{kt}.recovered.p12"));
        env.escrow_recover(&serial, &rec, &officer);
        let rkey = env.path(&format!("{kt}.recovered.key"));
        openssl([
            "pkcs12",
            "-in",
            &p(&rec),
            "-passin",
            &format!("file:{}", p(&officer)),
            "-nodes",
            "-nocerts",
            "-out",
            &p(&rkey),
        ]);
        keys.push((format!("recovered {kt}"), rkey, rsa));
    }
    // Subscriber-held keys behind CSRs (the CA must only ever see their public half).
    for (spec, name, rsa) in [(KeySpec::Rsa(2048), "csr rsa2048", true), (KeySpec::P256, "csr p256", false)] {
        let key = gen_key(env.dir(), &format!("{}.key", name.replace(' ', "-")), spec);
        let csr = make_csr(
            &key,
            &env.path(&format!("{}.csr", name.replace(' ', "-"))),
            "/CN=frank@example.com",
            &[],
        );
        let out = env.pki(["issue", "--email", "frank@example.com", "--usage", "signing", "--csr", &p(&csr)]);
        certs.push(pem_der(&out.stdout));
        keys.push((name.to_string(), key, rsa));
    }
    let serial = cert_serial(&certs[0]);
    env.pki(["revoke", "--serial", &serial, "--reason", "keyCompromise"]);
    server.stop(); // everything flushed, the database closed

    let needles: Vec<Needle> =
        keys.iter().flat_map(|(name, key, rsa)| needles_for(name, key, *rsa)).collect();
    assert!(needles.len() >= keys.len() * 11, "{} needles", needles.len());
    let files = files_under(&env.data);
    assert!(files.iter().any(|f| f.starts_with(env.data.join("db"))), "the database files are searched");
    assert!(files.iter().any(|f| f.starts_with(env.data.join("keys"))), "the key store files are searched");

    let found = search(&env.data, &needles);
    assert!(found.is_empty(), "private key material in plaintext under the data directory: {found:#?}");

    // Control 1: the search reads the database: every issued (public) certificate is in it.
    let public: Vec<Needle> = certs
        .iter()
        .enumerate()
        .map(|(i, c)| Needle { what: format!("certificate {i}"), bytes: c.clone() })
        .collect();
    let seen = search(&env.data, &public);
    for n in &public {
        assert!(seen.iter().any(|(_, w)| *w == n.what), "{} not found in the database files", n.what);
    }
    // Control 2: material planted in a file is found, in every form.
    let control = env.path("control");
    std::fs::create_dir(&control).unwrap();
    let mut planted = b"some prefix ".to_vec();
    for n in &needles {
        planted.extend_from_slice(&n.bytes);
        planted.extend_from_slice(b" -- ");
    }
    std::fs::write(control.join("planted.bin"), planted).unwrap();
    assert_eq!(search(&control, &needles).len(), needles.len(), "the search misses planted material");
}

#[test]
fn no_plaintext_private_keys_under_the_data_directory_with_a_master_key_file() {
    let env = Env::new();
    scenario(&env);
    use std::os::unix::fs::PermissionsExt;
    for f in files_under(&env.data.join("keys")) {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
}

#[test]
fn no_plaintext_private_keys_under_the_data_directory_with_a_passphrase() {
    let env = Env::new();
    let pass = env.write("hsm.pass", "hsm master passphrase for the e2e test\n");
    env.append_config(&format!("[hsm]\npassphrase_file = {:?}\n", pass.display().to_string()));
    scenario(&env);
    assert!(!env.data.join("keys").join("master.key").exists(), "no master key file with a passphrase");
}
