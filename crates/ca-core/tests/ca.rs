//! The CA in-process, with a fixed clock: issuance, refusals, CRL refresh, audit chain, escrow.

use std::sync::Arc;

use ca_core::{Ca, CaCert, CaConfig, Error, FixedClock, IssueRequest, OwnKeyRequest};
use cerdb::sled_engine::RawTrees;
use cerdb::{CaId, CertDb, RevocationReason, Serial, Usage};
use chrono::{Duration, TimeZone, Utc};
use hsm_sim::{HsmSim, KeyCustody, KeyType, MasterKeySource};
use x509_parser::prelude::*;

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    ca: Ca,
    clock: Arc<FixedClock>,
    hsm: Arc<HsmSim>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let clock = Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap()));
    let db = CertDb::open(path.join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(path.join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    let (ca, _) = Ca::init(db, hsm.clone(), CaConfig::default(), clock.clone(), "test").expect("init");
    Fixture { _dir: dir, dir: path, ca, clock, hsm }
}

fn csr(email: &str, alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    csr_with(&rcgen::KeyPair::generate_for(alg).expect("key"), email)
}

/// A CSR for `email` (its CN) signed by `kp`.
fn csr_with(kp: &rcgen::KeyPair, email: &str) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, email);
    params.serialize_request(kp).expect("csr").der().to_vec()
}

fn req(email: &str, usage: Usage, csr: Vec<u8>) -> IssueRequest {
    IssueRequest { email: email.parse().expect("email"), usage, csr }
}

#[test]
fn issues_each_profile_and_the_der_matches_it() {
    let f = fixture();
    let sig = f
        .ca
        .issue(&req("Alice@Example.COM", Usage::Signing, csr("alice@example.com", &rcgen::PKCS_ED25519)), "t")
        .expect("signing");
    let enc =
        f.ca.issue(
            &req(
                "alice@example.com",
                Usage::Encryption,
                csr("alice@example.com", &rcgen::PKCS_ECDSA_P384_SHA384),
            ),
            "t",
        )
        .expect("encryption");
    let (_, s) = X509Certificate::from_der(&sig.record.der).expect("parse");
    let ku = s.key_usage().expect("ku").expect("present");
    assert!(ku.critical && ku.value.digital_signature() && ku.value.non_repudiation());
    assert!(!ku.value.key_encipherment() && !ku.value.key_agreement());
    let (_, e) = X509Certificate::from_der(&enc.record.der).expect("parse");
    let ku = e.key_usage().expect("ku").expect("present");
    assert!(ku.value.key_agreement() && !ku.value.digital_signature() && !ku.value.key_encipherment());
    // The address is stored with its domain lower-cased and found case-insensitively.
    assert_eq!(sig.record.email.as_ref().expect("email").as_str(), "Alice@example.com");
    let found = f.ca.list(Some(&"ALICE@example.com".parse().expect("email"))).expect("list");
    assert_eq!(found.len(), 2);
    // Validity is the configured 365 days, from the CA's clock.
    assert_eq!(sig.record.not_before, f.clock.now_for_test());
    assert_eq!(sig.record.not_after - sig.record.not_before, Duration::days(365));
    // The stored subject and validity are the certificate's own, for subscribers and CAs.
    let cas: Vec<_> =
        f.ca.list(None)
            .expect("list")
            .iter()
            .filter(|r| r.email.is_none())
            .map(|r| f.ca.db().get(&r.serial).expect("read").expect("stored"))
            .collect();
    assert_eq!(cas.len(), 5, "root, issuing, OCSP, TSA, console TLS");
    for rec in [&sig.record, &enc.record].into_iter().chain(&cas) {
        let (_, x) = X509Certificate::from_der(&rec.der).expect("parse");
        assert_eq!(rec.subject, x.subject().to_string());
        assert_eq!(rec.not_before.timestamp(), x.validity().not_before.timestamp());
        assert_eq!(rec.not_after.timestamp(), x.validity().not_after.timestamp());
    }
    f.ca.db().check_consistency().expect("consistent");
}

trait Now {
    fn now_for_test(&self) -> chrono::DateTime<Utc>;
}
impl Now for FixedClock {
    fn now_for_test(&self) -> chrono::DateTime<Utc> {
        ca_core::Clock::now(self)
    }
}

#[test]
fn garbage_truncated_and_oversized_csrs_are_refused_and_nothing_is_stored() {
    let f = fixture();
    let before = f.ca.db().count();
    let good = csr("bob@example.com", &rcgen::PKCS_ECDSA_P256_SHA256);
    let mut inputs: Vec<Vec<u8>> =
        vec![Vec::new(), vec![0u8; 1], vec![0x30, 0x82, 0xff, 0xff], vec![0x42; 70_000]];
    for cut in (1..good.len()).step_by(7) {
        inputs.push(good[..cut].to_vec());
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in [3usize, 17, 64, 300, 1000] {
        let bytes = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        inputs.push(bytes);
    }
    inputs.push(
        b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n-----END CERTIFICATE REQUEST-----\n".to_vec(),
    );
    inputs.push(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec());
    for input in inputs {
        let len = input.len();
        let err =
            f.ca.issue(&req("bob@example.com", Usage::Signing, input), "t").expect_err("must be refused");
        let msg = err.to_string();
        assert!(msg.starts_with("CSR rejected:"), "{len} bytes: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
    assert_eq!(f.ca.db().count(), before);
    // Every refusal is in the audit trail and the chain is intact.
    f.ca.audit_verify().expect("chain intact");
    let refused = ca_core::audit::entries(f.ca.db())
        .expect("entries")
        .into_iter()
        .filter(|e| e.outcome.starts_with("refused"))
        .count();
    assert!(refused > 10);
}

#[test]
fn own_keys_are_issued_by_the_same_rules_without_a_csr() {
    use rcgen::PublicKeyData;
    let f = fixture();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let own = |email: &str, usage, spki: Vec<u8>| OwnKeyRequest {
        email: email.parse().expect("email"),
        usage,
        spki,
    };
    let issued =
        f.ca.issue_many_own_keys(
            &[
                own("load-1@loadtest.example", Usage::Signing, kp.subject_public_key_info()),
                own("load-2@loadtest.example", Usage::Encryption, kp.subject_public_key_info()),
            ],
            "t",
        )
        .expect("issued");
    assert_eq!(issued.len(), 2);
    for i in &issued {
        assert!(i.record.der_matches_key(kp.public_key_raw()));
        let (_, x) = X509Certificate::from_der(&i.record.der).expect("parses");
        let issuing = f.ca.ca_cert(CaCert::Issuing);
        let (_, ca) = X509Certificate::from_der(&issuing).expect("issuing");
        x.verify_signature(Some(ca.public_key())).expect("signed by the issuing CA");
    }
    let entries = ca_core::audit::entries(f.ca.db()).expect("entries");
    assert!(entries.iter().rev().take(2).all(|e| e.details.contains("own key")), "{entries:?}");

    // The key rules of CSRs hold: garbage, truncated, trailing bytes, and an Ed25519 key for
    // encryption are refused, and nothing is stored.
    let before = f.ca.db().count();
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key").subject_public_key_info();
    let mut trailing = kp.subject_public_key_info();
    trailing.push(0);
    let spki = kp.subject_public_key_info();
    for (spki, usage, want) in [
        (Vec::new(), Usage::Signing, "SubjectPublicKeyInfo"),
        (spki[..spki.len() / 2].to_vec(), Usage::Signing, "SubjectPublicKeyInfo"),
        (trailing, Usage::Signing, "trailing"),
        (vec![0x30; 100_000], Usage::Signing, "SubjectPublicKeyInfo"),
        (ed25519, Usage::Encryption, "Ed25519"),
    ] {
        let err =
            f.ca.issue_many_own_keys(&[own("load-3@loadtest.example", usage, spki)], "t")
                .expect_err("refused");
        assert!(err.to_string().contains(want), "{err}");
    }
    assert_eq!(f.ca.db().count(), before);
}

#[test]
fn a_csr_for_another_address_or_unsuitable_key_is_refused() {
    let f = fixture();
    let e = f.ca.issue(
        &req("bob@example.com", Usage::Signing, csr("mallory@example.com", &rcgen::PKCS_ED25519)),
        "t",
    );
    assert!(matches!(e, Err(Error::CsrEmailMismatch { .. })), "{e:?}");
    let e = f
        .ca
        .issue(&req("bob@example.com", Usage::Encryption, csr("bob@example.com", &rcgen::PKCS_ED25519)), "t");
    assert!(matches!(e, Err(Error::KeyUnsuitable { .. })), "{e:?}");
    // A flipped signature byte: no proof of possession.
    let mut bad = csr("bob@example.com", &rcgen::PKCS_ECDSA_P256_SHA256);
    let n = bad.len();
    bad[n - 3] ^= 0x01;
    let e = f.ca.issue(&req("bob@example.com", Usage::Signing, bad), "t");
    assert!(matches!(e, Err(Error::CsrSignatureInvalid(_))), "{e:?}");
}

#[test]
fn serials_are_unique_positive_and_large() {
    let f = fixture();
    let reqs: Vec<IssueRequest> = (0..40)
        .map(|i| {
            req(
                &format!("u{i}@example.com"),
                Usage::Signing,
                csr(&format!("u{i}@example.com"), &rcgen::PKCS_ECDSA_P256_SHA256),
            )
        })
        .collect();
    let issued = f.ca.issue_many(&reqs, "t").expect("issue");
    let mut serials: Vec<Serial> = issued.iter().map(|i| i.record.serial.clone()).collect();
    for i in &issued {
        let (_, x) = X509Certificate::from_der(&i.record.der).expect("parse");
        let raw = x.tbs_certificate.raw_serial();
        assert!(raw.len() <= 20 && raw[0] & 0x80 == 0, "positive and at most 20 octets");
        assert!(i.record.serial.bits() >= 64);
    }
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 40);
}

#[test]
fn a_refused_batch_stores_nothing_and_its_signed_serials_are_never_used_again() {
    let f = fixture();
    let retired = || f.ca.db().retired_serials().expect("read");
    assert_eq!(retired().len(), 0, "stored certificates keep their serials in their records");
    let before = f.ca.db().count();
    let mut reqs: Vec<IssueRequest> = (0..20)
        .map(|i| {
            let email = format!("b{i}@example.com");
            req(&email, Usage::Signing, csr(&email, &rcgen::PKCS_ECDSA_P256_SHA256))
        })
        .collect();
    let n = reqs[7].csr.len();
    reqs[7].csr[n - 3] ^= 0x01;
    let e = f.ca.issue_many(&reqs, "t");
    assert!(matches!(e, Err(Error::CsrSignatureInvalid(_))), "{e:?}");
    assert_eq!(f.ca.db().count(), before, "nothing of the batch is stored");
    // The 19 others were signed before the refusal: their serials are recorded as used.
    assert_eq!(retired().len(), 19);
    for serial in retired() {
        assert!(f.ca.db().serial_used(&serial).expect("read"));
        assert!(f.ca.db().get(&serial).expect("read").is_none());
    }
    f.ca.audit_verify().expect("chain intact");
    // The CA goes on issuing.
    reqs.remove(7);
    assert_eq!(f.ca.issue_many(&reqs, "t").expect("issued").len(), 19);
    f.ca.db().check_consistency().expect("consistent");
}

#[test]
fn crls_are_regenerated_on_revocation_and_before_next_update() {
    let f = fixture();
    let first = f.ca.crl(CaId::Issuing).expect("crl");
    let issued =
        f.ca.issue(
            &req("c@example.com", Usage::Signing, csr("c@example.com", &rcgen::PKCS_ECDSA_P256_SHA256)),
            "t",
        )
        .expect("issue");
    f.ca.revoke(&issued.record.serial, RevocationReason::Superseded, "t").expect("revoke");
    let after = f.ca.crl(CaId::Issuing).expect("crl");
    assert!(after.number > first.number);
    let (_, crl) = CertificateRevocationList::from_der(&after.der).expect("parse");
    let issuing_der = f.ca.ca_cert(CaCert::Issuing);
    let (_, issuing) = X509Certificate::from_der(&issuing_der).expect("parse");
    crl.verify_signature(issuing.public_key()).expect("signed by the issuing CA");
    let listed: Vec<_> = crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()).collect();
    assert_eq!(listed, vec![issued.record.serial.to_der_content()]);
    // Unchanged while fresh; regenerated once less than refresh_before_hours remain.
    assert_eq!(f.ca.crl(CaId::Issuing).expect("crl").number, after.number);
    f.clock.advance(Duration::hours(100));
    let refreshed = f.ca.crl(CaId::Issuing).expect("crl");
    assert_eq!(refreshed.number, after.number + 1);
    assert!(refreshed.next_update > after.next_update);
    // Revoking twice (but for a key found compromised), an unknown serial, or the root is refused.
    for again in [RevocationReason::Superseded, RevocationReason::CessationOfOperation] {
        assert!(matches!(
            f.ca.revoke(&issued.record.serial, again, "t"),
            Err(Error::Storage(cerdb::Error::AlreadyRevoked { reason: RevocationReason::Superseded, .. }))
        ));
    }
    let unknown: Serial = "0badc0de".parse().expect("serial");
    assert!(matches!(
        f.ca.revoke(&unknown, RevocationReason::KeyCompromise, "t"),
        Err(Error::UnknownSerial(_))
    ));
    let root_serial =
        f.ca.db().meta_get("ca.root.serial").expect("meta").expect("set").parse::<Serial>().expect("serial");
    assert!(matches!(
        f.ca.revoke(&root_serial, RevocationReason::KeyCompromise, "t"),
        Err(Error::RootNotRevocable)
    ));
}

#[test]
fn escrow_refuses_signing_keys_and_weak_passwords_before_generating_anything() {
    let f = fixture();
    let email = "d@example.com".parse().expect("email");
    let e = f.ca.issue_generated(&email, Usage::Signing, None, "long password", "t");
    assert!(matches!(e, Err(Error::SigningKeyNotEscrowable)));
    let before = f.ca.db().count();
    let e = f.ca.issue_generated(&email, Usage::Encryption, Some(KeyType::P256), "short", "t");
    assert!(e.is_err());
    assert_eq!(f.ca.db().count(), before);
    let (issued, p12) =
        f.ca.issue_generated(&email, Usage::Encryption, Some(KeyType::P256), "long password", "t")
            .expect("issue");
    assert!(!p12.is_empty());
    let handle = issued.record.escrow_key.clone().expect("escrowed").parse().expect("handle");
    assert!(f.hsm.contains(&handle).expect("contains"));
    let request = f.ca.request_recovery(&issued.record.serial, "cli:olivia", "lost").expect("request");
    f.ca.approve_recovery(&request.id, "cli:oscar").expect("approve");
    let (_, again) = f.ca.release_recovery(&request.id, "cli:olivia", "another long one").expect("recover");
    assert!(!again.is_empty());
    let sig =
        f.ca.issue(&req("d@example.com", Usage::Signing, csr("d@example.com", &rcgen::PKCS_ED25519)), "t")
            .expect("issue");
    assert!(matches!(f.ca.request_recovery(&sig.record.serial, "t", ""), Err(Error::NotEscrowed(_))));
    let actions: Vec<String> = ca_core::audit::entries(f.ca.db())
        .expect("entries")
        .into_iter()
        .map(|e| e.action.to_string())
        .collect();
    assert!(
        actions.contains(&"escrow.export".to_string()) && actions.contains(&"escrow.recover".to_string())
    );
}

#[test]
fn audit_verification_names_the_altered_entry() {
    let f = fixture();
    f.ca.issue(&req("e@example.com", Usage::Signing, csr("e@example.com", &rcgen::PKCS_ED25519)), "t")
        .expect("issue");
    let n = f.ca.audit_verify().expect("intact");
    assert!(n >= 3);
    let Fixture { ca, dir, _dir, .. } = f;
    drop(ca);
    let db = RawTrees::open(&dir.join("db")).expect("raw");
    let key = 2u64.to_be_bytes();
    let value = db.get("audit", &key).expect("get").expect("entry 2");
    let altered = String::from_utf8(value.to_vec())
        .expect("utf8")
        .replace("\"actor\":\"test\"", "\"actor\":\"mallory\"");
    assert_ne!(altered.as_bytes(), &value[..], "the test must change the entry");
    db.insert("audit", &key, altered.as_bytes()).expect("insert");
    db.flush().expect("flush");
    drop(db);
    let db = CertDb::open(dir.join("db")).expect("db");
    let err = ca_core::audit::verify(&db).expect_err("tampering detected");
    assert!(matches!(err, Error::AuditBroken { seq: 2, .. }), "{err}");
    assert!(err.to_string().contains("entry 2"), "{err}");
}

#[test]
fn a_reopened_ca_continues_the_chain_and_the_hierarchy() {
    let f = fixture();
    let root = f.ca.ca_cert(CaCert::Root).to_vec();
    let Fixture { ca, dir, _dir, clock, hsm } = f;
    drop(ca);
    let db = CertDb::open(dir.join("db")).expect("db");
    let (ca, outcome) = Ca::init(db, hsm, CaConfig::default(), clock, "test").expect("init");
    assert_eq!(outcome, ca_core::InitOutcome::AlreadyInitialised);
    assert_eq!(ca.ca_cert(CaCert::Root), root.as_slice());
    ca.issue(&req("f@example.com", Usage::Signing, csr("f@example.com", &rcgen::PKCS_ED25519)), "t")
        .expect("issue");
    ca.audit_verify().expect("chain continues");
    assert!(ca.db().get_meta(&"01".parse().expect("serial")).expect("get").is_none());
}

#[test]
fn the_tls_server_certificate_names_localhost_and_is_renewed_before_expiry() {
    let f = fixture();
    let (chain, key) = f.ca.tls_server_certificate().expect("tls");
    let (_, x) = X509Certificate::from_der(&chain[0]).expect("parse");
    let root_der = f.ca.ca_cert(CaCert::Root);
    let (_, root) = X509Certificate::from_der(&root_der).expect("root");
    x.verify_signature(Some(root.public_key())).expect("issued by the root");
    let san = x.subject_alternative_name().expect("san").expect("present");
    let names: Vec<String> = san.value.general_names.iter().map(|g| g.to_string()).collect();
    assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
    let eku = x.extended_key_usage().expect("eku").expect("present");
    assert!(eku.value.server_auth && !eku.value.email_protection);
    assert_eq!(x.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    // Same certificate while fresh; a new one once fewer than 30 days remain.
    assert_eq!(f.ca.tls_server_certificate().expect("tls").0, chain);
    f.clock.advance(Duration::days(370));
    let (renewed, _) = f.ca.tls_server_certificate().expect("tls");
    assert_ne!(renewed, chain);
}

#[test]
fn a_key_revoked_for_key_compromise_is_refused_also_in_databases_that_predate_the_record() {
    let f = fixture();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let csr_of = |email: &str| csr_with(&kp, email);
    let first =
        f.ca.issue(&req("k@example.com", Usage::Signing, csr_of("k@example.com")), "t").expect("issue");
    let serial = first.record.serial.clone();
    f.ca.revoke(&serial, RevocationReason::KeyCompromise, "t").expect("revoke");
    let refused = |ca: &Ca| {
        let before = ca.db().count();
        // In a batch with a good request: the whole batch is refused, nothing is stored.
        let batch = [
            req("other@example.com", Usage::Signing, csr("other@example.com", &rcgen::PKCS_ED25519)),
            req("k2@example.com", Usage::Signing, csr_of("k2@example.com")),
        ];
        match ca.issue_many(&batch, "t") {
            Err(Error::CsrKeyCompromised { serial: s }) => assert_eq!(s, serial),
            other => panic!("not refused as compromised: {other:?}"),
        }
        assert_eq!(ca.db().count(), before);
        ca.db().check_consistency().expect("consistent");
    };
    refused(&f.ca);
    // The own-key path (no CSR) refuses it too.
    use rcgen::PublicKeyData;
    let own = OwnKeyRequest {
        email: "k3@loadtest.example".parse().expect("email"),
        usage: Usage::Signing,
        spki: kp.subject_public_key_info(),
    };
    assert!(matches!(f.ca.issue_many_own_keys(&[own], "t"), Err(Error::CsrKeyCompromised { .. })));

    // A database whose keyCompromise revocation was recorded before keys were: the key is
    // recorded when the CA is next opened.
    let Fixture { ca, dir, _dir, clock, hsm } = f;
    drop(ca);
    let raw = RawTrees::open(&dir.join("db")).expect("raw");
    raw.clear("compromised_keys").expect("clear");
    raw.remove("meta", b"ca.compromised_keys").expect("remove");
    raw.flush().expect("flush");
    drop(raw);
    let db = CertDb::open(dir.join("db")).expect("db");
    assert!(db.compromised_keys().expect("read").is_empty());
    let ca = Ca::open(db, hsm, CaConfig::default(), clock).expect("open");
    let recorded = ca.db().compromised_keys().expect("read");
    assert_eq!(recorded.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(), vec![serial.clone()]);
    refused(&ca);
}

/// The reason codes of a CRL's entries, by serial content octets.
fn crl_reasons(ca: &Ca) -> Vec<(Vec<u8>, Option<u8>)> {
    let crl = ca.crl(CaId::Issuing).expect("crl");
    let (_, crl) = CertificateRevocationList::from_der(&crl.der).expect("parse");
    crl.iter_revoked_certificates()
        .map(|r| (r.raw_serial().to_vec(), r.reason_code().map(|(_, c)| c.0)))
        .collect()
}

#[test]
fn a_key_compromise_revokes_the_address_s_certificates_with_that_key_and_changes_an_earlier_reason() {
    let f = fixture();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr_of = |email: &str| csr_with(&kp, email);
    let issue =
        |email: &str, usage, csr: Vec<u8>| f.ca.issue(&req(email, usage, csr), "t").expect("issue").record;
    let sig = issue("alice@example.com", Usage::Signing, csr_of("alice@example.com"));
    let enc = issue("alice@example.com", Usage::Encryption, csr_of("alice@example.com"));
    let other_key =
        issue("alice@example.com", Usage::Signing, csr("alice@example.com", &rcgen::PKCS_ECDSA_P256_SHA256));
    let bob = issue("bob@example.com", Usage::Signing, csr_of("bob@example.com"));

    // The encryption certificate was superseded first; an hour later the key is reported
    // compromised through the signing certificate.
    let superseded_at = f.ca.now();
    f.ca.revoke(&enc.serial, RevocationReason::Superseded, "t").expect("superseded");
    f.clock.advance(Duration::hours(1));
    let done = f.ca.revoke(&sig.serial, RevocationReason::KeyCompromise, "t").expect("keyCompromise");
    assert_eq!(
        done.record.revocation.as_ref().map(|r| (r.at, r.reason)),
        Some((f.ca.now(), RevocationReason::KeyCompromise))
    );
    assert_eq!(done.reason_before, None);
    assert_eq!(done.same_key.iter().map(|r| r.serial.clone()).collect::<Vec<_>>(), vec![enc.serial.clone()]);
    let enc_now = f.ca.show(&enc.serial).expect("show").revocation.expect("revoked");
    assert_eq!(
        (enc_now.at, enc_now.reason),
        (superseded_at, RevocationReason::KeyCompromise),
        "reason changed, time kept"
    );
    assert_eq!(f.ca.show(&other_key.serial).expect("show").revocation, None, "another key");
    assert_eq!(f.ca.show(&bob.serial).expect("show").revocation, None, "other addresses are not searched");
    // The CRL says keyCompromise (1) for both.
    let mut listed = crl_reasons(&f.ca);
    listed.sort();
    let mut want = vec![(sig.serial.to_der_content(), Some(1)), (enc.serial.to_der_content(), Some(1))];
    want.sort();
    assert_eq!(listed, want);
    let entries = ca_core::audit::entries(f.ca.db()).expect("entries");
    let last = &entries[entries.len() - 3..];
    assert!(
        last[1].details.contains("keyCompromise")
            && last[1].details.contains("revoked before as superseded")
            && last[1].details.contains(&format!("the key of {}", sig.serial)),
        "{last:?}"
    );

    // A certificate revoked as superseded, reported compromised later by itself.
    f.ca.revoke(&bob.serial, RevocationReason::Superseded, "t").expect("superseded");
    let done = f.ca.revoke(&bob.serial, RevocationReason::KeyCompromise, "t").expect("keyCompromise");
    assert_eq!(done.reason_before, Some(RevocationReason::Superseded));
    assert_eq!(done.record.revocation.map(|r| r.reason), Some(RevocationReason::KeyCompromise));
    assert!(done.same_key.is_empty());
    assert!(matches!(
        f.ca.revoke(&bob.serial, RevocationReason::KeyCompromise, "t"),
        Err(Error::Storage(cerdb::Error::AlreadyRevoked { reason: RevocationReason::KeyCompromise, .. }))
    ));
    f.ca.audit_verify().expect("audit chain");
    f.ca.db().check_consistency().expect("consistent");
}

/// The number of the stored CRL of the issuing CA and its serials (content octets, sorted), read
/// from storage without regenerating it.
fn stored_crl(ca: &Ca) -> (u64, Vec<Vec<u8>>) {
    let crl = ca.db().crl(CaId::Issuing).expect("read").expect("stored");
    let (_, parsed) = CertificateRevocationList::from_der(&crl.der).expect("parse");
    let mut listed: Vec<_> = parsed.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()).collect();
    listed.sort();
    (crl.number, listed)
}

fn sorted(v: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[test]
fn deferred_crls_are_signed_once_for_many_revocations_and_survive_a_crash() {
    let f = fixture();
    f.ca.defer_crls();
    let before = stored_crl(&f.ca);
    let mut serials = Vec::new();
    for i in 0..5 {
        let email = format!("d{i}@example.com");
        let issued =
            f.ca.issue(&req(&email, Usage::Signing, csr(&email, &rcgen::PKCS_ECDSA_P256_SHA256)), "t")
                .expect("issue");
        f.ca.revoke(&issued.record.serial, RevocationReason::Superseded, "t").expect("revoke");
        serials.push(issued.record.serial.to_der_content());
    }
    // No CRL signed per revocation: the stored one is unchanged, and marked due.
    assert_eq!(stored_crl(&f.ca), before);
    assert_eq!(f.ca.db().meta_get("crl.issuing.pending").expect("meta").as_deref(), Some("1"));
    // One publication signs one CRL listing all five, and clears the mark; a second has nothing to do.
    assert_eq!(f.ca.publish_crls().expect("publish"), 1);
    let (number, listed) = stored_crl(&f.ca);
    assert_eq!(number, before.0 + 1);
    assert_eq!(listed, sorted(&serials));
    assert_eq!(f.ca.db().meta_get("crl.issuing.pending").expect("meta").as_deref(), Some("0"));
    assert_eq!(f.ca.publish_crls().expect("publish"), 0);
    assert_eq!(f.ca.crl(CaId::Issuing).expect("crl").number, number);

    // A read of the CRL between publications signs it first: an acknowledged revocation is on
    // every CRL read after it.
    let issued =
        f.ca.issue(
            &req("e@example.com", Usage::Signing, csr("e@example.com", &rcgen::PKCS_ECDSA_P256_SHA256)),
            "t",
        )
        .expect("issue");
    f.ca.revoke(&issued.record.serial, RevocationReason::KeyCompromise, "t").expect("revoke");
    serials.push(issued.record.serial.to_der_content());
    let read = f.ca.crl(CaId::Issuing).expect("crl");
    assert_eq!(read.number, number + 1);
    assert_eq!(stored_crl(&f.ca).1, sorted(&serials));

    // A revocation stored but not yet published when the process dies: the CA opened next (here
    // one that does not defer, as a one-shot command) finds the mark and signs the CRL first.
    let issued =
        f.ca.issue(
            &req("g@example.com", Usage::Signing, csr("g@example.com", &rcgen::PKCS_ECDSA_P256_SHA256)),
            "t",
        )
        .expect("issue");
    f.ca.revoke(&issued.record.serial, RevocationReason::Superseded, "t").expect("revoke");
    serials.push(issued.record.serial.to_der_content());
    let Fixture { ca, dir, _dir, clock, hsm } = f;
    drop(ca);
    let db = CertDb::open(dir.join("db")).expect("db");
    let ca = Ca::open(db, hsm, CaConfig::default(), clock).expect("open");
    assert_eq!(stored_crl(&ca).0, number + 1, "not published before the crash");
    let crl = ca.crl(CaId::Issuing).expect("crl");
    assert_eq!(crl.number, number + 2);
    assert_eq!(stored_crl(&ca).1, sorted(&serials));
    assert_eq!(ca.db().meta_get("crl.issuing.pending").expect("meta").as_deref(), Some("0"));
}
