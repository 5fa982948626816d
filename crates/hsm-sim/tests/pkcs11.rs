//! The PKCS#11 backend on a real SoftHSM2 token, made in a private `SOFTHSM2_CONF` directory.
//!
//! One test function: SoftHSM2 reads its configuration once per process (at `C_Initialize`).
//! Needs Debian's `softhsm2` (scripts/test.sh installs it); a missing tool fails the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hsm_sim::{
    Error, HsmSim, KeyCustody, KeyHandle, KeyPurpose, KeyType, MasterKeySource, Pkcs11Config, Pkcs11Custody,
};
use ring::signature::{self, UnparsedPublicKey};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4321-token-pin";

fn softhsm_util() -> PathBuf {
    let p = PathBuf::from("/usr/bin/softhsm2-util");
    assert!(p.is_file(), "this test needs SoftHSM2: install it with `apt-get install -y softhsm2`");
    p
}

/// A SoftHSM2 configuration with its own token directory, and a token `label` in it.
fn make_token(dir: &Path, label: &str) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new(softhsm_util())
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", label, "--so-pin", "12345678", "--pin", PIN])
        .output()
        .unwrap();
    assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
    conf
}

fn verify(t: KeyType, raw: &[u8], msg: &[u8], sig: &[u8]) {
    let alg: &dyn signature::VerificationAlgorithm = match t {
        KeyType::P256 => &signature::ECDSA_P256_SHA256_ASN1,
        KeyType::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        KeyType::Ed25519 => &signature::ED25519,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    UnparsedPublicKey::new(alg, raw)
        .verify(msg, sig)
        .unwrap_or_else(|_| panic!("{t} signature does not verify"));
}

fn config(dir: &Path, label: &str, pin: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: MODULE.into(),
        token_label: label.into(),
        pin: pin.into(),
        escrow_dir: dir.join("escrow"),
    }
}

fn h(s: &str) -> KeyHandle {
    s.parse().unwrap()
}

#[test]
fn softhsm2_token_signs_escrows_seals_imports_and_survives_removal() {
    softhsm_util();
    let dir = tempfile::tempdir().unwrap();
    let conf = make_token(dir.path(), "pki-test");
    make_token(&dir.path().join("second"), "unused"); // not in this configuration: not found
    std::env::set_var("SOFTHSM2_CONF", &conf);

    // Opening: wrong PIN, missing module, missing token — one line each, naming the problem.
    let e = Pkcs11Custody::open(config(dir.path(), "pki-test", "wrong-pin")).unwrap_err().to_string();
    assert!(e.contains("PIN") && e.contains("pki-test") && !e.contains('\n'), "{e}");
    let mut missing = config(dir.path(), "pki-test", PIN);
    missing.module = dir.path().join("no-such-module.so");
    let e = Pkcs11Custody::open(missing).unwrap_err().to_string();
    assert!(e.contains("no-such-module.so") && e.contains("does not exist"), "{e}");
    let e = Pkcs11Custody::open(config(dir.path(), "absent-token", PIN)).unwrap_err().to_string();
    assert!(e.contains("absent-token") && e.contains("no token"), "{e}");

    let p11 = Pkcs11Custody::open(config(dir.path(), "pki-test", PIN)).unwrap();
    let custody: Arc<dyn KeyCustody> = Arc::new(p11.clone());

    // Every key type signs on the token; signatures verify with the public key it reports.
    for t in [KeyType::P256, KeyType::P384, KeyType::Rsa2048, KeyType::Ed25519] {
        let handle = h(&format!("ca/{}", t.name()));
        let info = custody.generate(&handle, t, KeyPurpose::CaSigning).unwrap();
        assert_eq!(custody.public_key(&handle).unwrap().spki, info.spki);
        let signer = custody.signer(&handle).unwrap();
        let sig = signer.sign(b"to be signed").unwrap();
        verify(t, &info.raw, b"to be signed", &sig);
        assert!(matches!(custody.generate(&handle, t, KeyPurpose::CaSigning), Err(Error::KeyExists(_))));
        assert!(matches!(
            custody.export_pkcs12(&handle, &[], "long enough password", "x"),
            Err(Error::NotPermitted { .. })
        ));
    }
    assert!(matches!(custody.signer(&h("ca/none")), Err(Error::NoSuchKey(_))));

    // Signing from several threads at once, each through a pooled session.
    let signer = custody.signer(&h("ca/p256")).unwrap();
    let raw = signer.public_key_raw().to_vec();
    std::thread::scope(|s| {
        for i in 0..4 {
            let signer = signer.clone();
            let raw = raw.clone();
            s.spawn(move || {
                for j in 0..20 {
                    let msg = format!("thread {i} message {j}");
                    verify(KeyType::P256, &raw, msg.as_bytes(), &signer.sign(msg.as_bytes()).unwrap());
                }
            });
        }
    });

    // Escrow: the PKCS#8 is stored only encrypted by the token; the PKCS#12 holds the key.
    let esc = h("escrow/1");
    let info = custody.generate(&esc, KeyType::P256, KeyPurpose::Escrow).unwrap();
    assert!(matches!(custody.signer(&esc), Err(Error::NotPermitted { .. })));
    let p12 = custody.export_pkcs12(&esc, &[], "long enough password", "escrow").unwrap();
    let ks = p12_keystore::KeyStore::from_pkcs12(
        &p12,
        "long enough password",
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .unwrap();
    let (_, chain) = ks.private_key_chain().unwrap();
    let pkcs8 = chain.key().as_der().to_vec();
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    assert_eq!(ring::signature::KeyPair::public_key(&kp).as_ref(), info.raw.as_slice());
    for f in std::fs::read_dir(dir.path().join("escrow")).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!bytes.windows(pkcs8.len()).any(|w| w == pkcs8));
        assert!(!String::from_utf8_lossy(&bytes).contains(&hex::encode(&pkcs8)));
    }

    // Sealed secrets open only in their context and unaltered.
    let sealed = custody.seal_secret("console-totp:alice", b"twenty bytes of totp").unwrap();
    assert_eq!(custody.open_secret("console-totp:alice", &sealed).unwrap(), b"twenty bytes of totp");
    assert!(matches!(custody.open_secret("console-totp:bob", &sealed), Err(Error::SealedSecret(_))));
    let mut altered = sealed.clone();
    altered[14] ^= 1;
    for bad in [altered, vec![], vec![0; 12], sealed[..sealed.len() - 1].to_vec()] {
        assert!(matches!(custody.open_secret("console-totp:alice", &bad), Err(Error::SealedSecret(_))));
    }

    // Import of a soft store: every key moves, signs on the token with the same public key;
    // a second import is refused.
    let soft = HsmSim::open(dir.path().join("soft"), &MasterKeySource::KeyFile).unwrap();
    let mut soft_keys = Vec::new();
    for (name, t, purpose) in [
        ("imp/root", KeyType::P384, KeyPurpose::CaSigning),
        ("imp/rsa", KeyType::Rsa2048, KeyPurpose::OcspSigning),
        ("imp/ed", KeyType::Ed25519, KeyPurpose::TsaSigning),
        ("imp/escrow", KeyType::P256, KeyPurpose::Escrow),
    ] {
        soft_keys.push((h(name), soft.generate(&h(name), t, purpose).unwrap()));
    }
    let moved = soft.move_to_token(&p11).unwrap();
    assert_eq!(moved.len(), 4);
    for (handle, info) in &soft_keys {
        assert_eq!(custody.public_key(handle).unwrap().spki, info.spki, "{handle}");
        if handle.as_str() != "imp/escrow" {
            let sig = custody.signer(handle).unwrap().sign(b"after import").unwrap();
            verify(info.key_type, &info.raw, b"after import", &sig);
        }
    }
    custody.export_pkcs12(&h("imp/escrow"), &[], "long enough password", "e").unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path().join("soft"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".key") && n != "master.key")
        .collect();
    assert!(left.is_empty(), "moved keys left in the soft store: {left:?}");
    let again = HsmSim::open(dir.path().join("soft2"), &MasterKeySource::KeyFile).unwrap();
    again.generate(&h("imp/fresh"), KeyType::P256, KeyPurpose::CaSigning).unwrap();
    again.generate(&h("imp/root"), KeyType::P256, KeyPurpose::CaSigning).unwrap();
    assert!(matches!(again.move_to_token(&p11), Err(Error::KeyExists(_))));
    assert!(!custody.contains(&h("imp/fresh")).unwrap(), "a refused import moved nothing");

    // The token goes away (its directory moved): one clear error, health degraded; it comes
    // back: signing and health recover without reopening.
    custody.health().unwrap();
    let tokens = dir.path().join("tokens");
    let away = dir.path().join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    // Asked first, before any signature fails: the health check itself sees the loss.
    let e = custody.health().unwrap_err().to_string();
    assert!(e.contains("pki-test"), "{e}");
    let e = signer.sign(b"while away").unwrap_err().to_string();
    assert!(!e.contains('\n') && e.contains("pki-test"), "{e}");
    let e = custody.health().unwrap_err().to_string();
    assert!(e.contains("pki-test"), "{e}");
    std::fs::rename(&away, &tokens).unwrap();
    custody.health().unwrap();
    verify(KeyType::P256, &raw, b"back", &signer.sign(b"back").unwrap());
}
