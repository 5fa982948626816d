//! The CA's own certificates: refused by `revoke`, revoked by `compromise` after a typed
//! confirmation, and nothing issued or signed under them afterwards, also after reopening.

use std::sync::Arc;

use ca_core::audit::{entries, AuditAction};
use ca_core::{Ca, CaConfig, Error, FixedClock, IssueRequest, OwnCert};
use cerdb::{CaId, CertDb, RevocationReason, Serial, Usage};
use chrono::{TimeZone, Utc};
use hsm_sim::{HsmSim, MasterKeySource};
use x509_parser::prelude::*;

fn open(path: &std::path::Path, init: bool) -> Ca {
    let clock = Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap()));
    let db = CertDb::open(path.join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(path.join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    if init {
        Ca::init(db, hsm, CaConfig::default(), clock, "test").expect("init").0
    } else {
        Ca::open(db, hsm, CaConfig::default(), clock).expect("open")
    }
}

/// A new CA in `path` on `clock`.
fn init_with(path: &std::path::Path, clock: Arc<FixedClock>) -> Ca {
    let db = CertDb::open(path.join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(path.join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    Ca::init(db, hsm, CaConfig::default(), clock, "test").expect("init").0
}

fn serial_of(ca: &Ca, key: &str) -> Serial {
    ca.db().meta_get(key).expect("meta").expect("set").parse().expect("serial")
}

fn req(email: &str) -> IssueRequest {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, email);
    let csr = params.serialize_request(&kp).expect("csr").der().to_vec();
    IssueRequest { email: email.parse().expect("email"), usage: Usage::Signing, csr }
}

#[test]
fn own_certificates_are_not_revoked_like_a_subscribers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = open(dir.path(), true);
    ca.tls_server_certificate().expect("tls");
    for (key, which) in [
        ("ca.issuing.serial", OwnCert::Issuing),
        ("ca.ocsp.serial", OwnCert::Ocsp),
        ("ca.tsa.serial", OwnCert::Tsa),
        ("ca.tls.serial", OwnCert::Tls),
    ] {
        let s = serial_of(&ca, key);
        for reason in
            [RevocationReason::KeyCompromise, RevocationReason::CaCompromise, RevocationReason::Superseded]
        {
            let err = ca.revoke(&s, reason, "t").expect_err("refused");
            assert!(matches!(err, Error::OwnCertNotRevocable { which: w, .. } if w == which), "{err}");
            assert!(err.to_string().contains(&format!("pki ca compromise --ca {which}")), "{err}");
        }
        assert!(ca.db().get_meta(&s).expect("get").expect("stored").revocation.is_none());
    }
    // A subscriber certificate: cACompromise is refused, the BR's reasons are accepted.
    let leaf = ca.issue(&req("a@example.com"), "t").expect("issue");
    let err = ca.revoke(&leaf.record.serial, RevocationReason::CaCompromise, "t").expect_err("refused");
    assert!(matches!(err, Error::ReasonNotAllowed { reason: RevocationReason::CaCompromise }));
    assert!(err.to_string().contains("S/MIME BR 7.2.2"), "{err}");
    ca.revoke(&leaf.record.serial, RevocationReason::PrivilegeWithdrawn, "t").expect("allowed reason");
}

#[test]
fn compromise_of_the_issuing_ca_stops_issuance_and_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = open(dir.path(), true);
    let ocsp = ca.ocsp_signer().expect("ocsp signer");
    ocsp.sign(b"before").expect("signs before");
    // The typed confirmation must match exactly; a refusal is audited and changes nothing.
    for wrong in ["", "compromise", "compromise ocsp", "COMPROMISE ISSUING", "yes"] {
        let err = ca.compromise(OwnCert::Issuing, wrong, "t").expect_err("refused");
        assert!(matches!(err, Error::ConfirmationMismatch { which: OwnCert::Issuing, .. }), "{err}");
    }
    assert!(!ca.is_compromised(OwnCert::Issuing));
    ca.issue(&req("b@example.com"), "t").expect("issues before");
    let done = ca.compromise(OwnCert::Issuing, "compromise issuing", "officer").expect("compromise");
    let rev = done.record.revocation.as_ref().expect("revoked");
    assert_eq!(rev.reason, RevocationReason::CaCompromise);
    // Issuance, the issuing CA's CRL and the OCSP key are refused at once.
    let err = ca.issue(&req("c@example.com"), "t").expect_err("refused");
    assert!(matches!(err, Error::Compromised { which: OwnCert::Issuing }), "{err}");
    assert!(err.to_string().contains("pki ca compromise"), "{err}");
    assert!(matches!(ca.regenerate_crl(CaId::Issuing, "t"), Err(Error::Compromised { .. })));
    assert!(ocsp.sign(b"after").is_err(), "the OCSP key handed out before signs no more");
    // The root's CRL lists the issuing CA with reason cACompromise.
    let crl = ca.crl(CaId::Root).expect("root crl");
    let (_, crl) = CertificateRevocationList::from_der(&crl.der).expect("parse");
    let issuing = serial_of(&ca, "ca.issuing.serial");
    let listed: Vec<_> = crl
        .iter_revoked_certificates()
        .map(|r| (r.raw_serial().to_vec(), r.reason_code().map(|(_, c)| c.0)))
        .collect();
    assert_eq!(listed, vec![(issuing.to_der_content(), Some(2))]);
    // Audited; a second compromise is refused.
    let audit = entries(ca.db()).expect("audit");
    assert!(audit.iter().any(|e| e.action == AuditAction::OwnCertCompromise && e.outcome == "ok"));
    assert!(audit.iter().filter(|e| e.action == AuditAction::OwnCertCompromise).count() >= 6);
    assert!(matches!(
        ca.compromise(OwnCert::Issuing, "compromise issuing", "t"),
        Err(Error::Compromised { .. })
    ));
    drop(ca);
    let again = open(dir.path(), false);
    assert!(again.is_compromised(OwnCert::Issuing));
    assert!(matches!(again.issue(&req("d@example.com"), "t"), Err(Error::Compromised { .. })));
    assert!(again.ocsp_signer().expect("handle").sign(b"x").is_err());
    again.refresh_crls().expect("the root's CRL is still refreshed");
}

#[test]
fn compromise_of_a_service_certificate_uses_key_compromise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = open(dir.path(), true);
    let tsa = ca.tsa_signer().expect("tsa");
    let done = ca.compromise(OwnCert::Tsa, "compromise tsa", "t").expect("compromise");
    assert_eq!(done.record.revocation.expect("revoked").reason, RevocationReason::KeyCompromise);
    assert!(tsa.sign(b"x").is_err());
    // Issuance under the issuing CA goes on; the OCSP signer too.
    ca.issue(&req("e@example.com"), "t").expect("issue");
    ca.ocsp_signer().expect("ocsp").sign(b"x").expect("ocsp signs");
    ca.compromise(OwnCert::Ocsp, "compromise ocsp", "t").expect("ocsp compromise");
    assert!(ca.ocsp_signer().expect("ocsp").sign(b"x").is_err());
    // The issuing CA's CRL lists the OCSP signer.
    let crl = ca.crl(CaId::Issuing).expect("crl");
    let (_, crl) = CertificateRevocationList::from_der(&crl.der).expect("parse");
    let ocsp = serial_of(&ca, "ca.ocsp.serial");
    assert!(crl.iter_revoked_certificates().any(|r| r.raw_serial() == ocsp.to_der_content().as_slice()));
    ca.tls_server_certificate().expect("tls issued");
    ca.compromise(OwnCert::Tls, "compromise tls", "t").expect("tls compromise");
    assert!(matches!(ca.tls_server_certificate(), Err(Error::Compromised { which: OwnCert::Tls })));
}

#[test]
fn a_compromised_ocsp_signer_is_replaced_by_a_rekey_and_its_old_key_never_signs_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = open(dir.path(), true);
    let first = serial_of(&ca, "ca.ocsp.serial");
    let old = ca.ocsp_signer().expect("ocsp");
    ca.compromise(OwnCert::Ocsp, "compromise ocsp", "t").expect("ocsp compromise");
    assert!(matches!(
        ca.renew_ocsp_signer_if_due("t"),
        Ok(None) | Err(Error::Compromised { which: OwnCert::Ocsp })
    ));

    let rec = ca.rekey(OwnCert::Ocsp, "officer").expect("rekey");
    assert_ne!(rec.serial, first);
    assert_eq!(serial_of(&ca, "ca.ocsp.serial"), rec.serial);
    assert!(!ca.is_compromised(OwnCert::Ocsp));
    let (der, new) = ca.ocsp_signer_certified().expect("certified");
    assert_eq!(der, rec.der);
    new.sign(b"after").expect("the new key signs");
    assert_ne!(new.public_key_raw(), old.public_key_raw(), "a new key");
    // The key handed out before the compromise stays refused, though the role is no longer.
    assert!(old.sign(b"after").is_err(), "the compromised key signed after the rekey");
    // The new certificate is the issuing CA's, for OCSP signing.
    let (_, x) = X509Certificate::from_der(&rec.der).expect("parse");
    let issuing = ca.ca_cert(ca_core::CaCert::Issuing);
    let (_, issuer) = X509Certificate::from_der(&issuing).expect("issuing");
    x.verify_signature(Some(issuer.public_key())).expect("signed by the issuing CA");
    assert!(x.extended_key_usage().expect("eku").expect("present").value.ocsp_signing);
    let audit = entries(ca.db()).expect("audit");
    assert!(audit.iter().any(|e| e.action == AuditAction::Issue
        && e.actor == "officer"
        && e.details.contains(&format!("ocsp-signer re-key after its compromise, replacing {first}"))));
    drop(ca);

    // After reopening: the new signer is in use and signs; the old key still refuses.
    let again = open(dir.path(), false);
    assert!(!again.is_compromised(OwnCert::Ocsp));
    assert_eq!(again.ocsp_signer_certified().expect("certified").0, rec.der);
    again.ocsp_signer().expect("ocsp").sign(b"reopened").expect("signs");
    assert!(old.sign(b"x").is_err());

    // With the issuing CA compromised the OCSP signer (certified by it) is not re-keyed; the
    // issuing CA itself never is.
    again.compromise(OwnCert::Issuing, "compromise issuing", "t").expect("issuing compromise");
    let r = again.rekey(OwnCert::Ocsp, "t");
    assert!(matches!(r, Err(Error::Compromised { which: OwnCert::Issuing })), "{r:?}");
    assert!(matches!(again.rekey(OwnCert::Issuing, "t"), Err(Error::NotReKeyable { .. })));
}

/// After `pki ca compromise --ca issuing` the audit log is still anchored: the audit signer's key
/// (not compromised) is certified by the root, checkpoints are signed and verify, those from
/// before too; a re-key and a compromise of the audit signer then go through the root.
#[test]
fn after_an_issuing_ca_compromise_the_root_certifies_the_audit_signer_and_checkpoints_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap();
    let clock = Arc::new(FixedClock::new(t0));
    let ca = init_with(dir.path(), clock.clone());
    let root_der = ca.ca_cert(ca_core::CaCert::Root);
    let (_, root) = X509Certificate::from_der(&root_der).expect("root");
    let stamp = |_: &[u8]| -> Result<Vec<u8>, String> { Ok(vec![0x05, 0x00]) };
    let at = |secs: i64| move |_: &[u8], _: &[u8]| Ok(t0 + chrono::Duration::seconds(secs));

    let (before_chain, before_key) = ca.audit_signer().expect("audit signer");
    assert_eq!(before_chain.len(), 2, "leaf and issuing CA");
    let (before, _) = ca.audit_checkpoint("t", "before", &stamp).expect("checkpoint");
    clock.set(t0 + chrono::Duration::seconds(60));
    ca.compromise(OwnCert::Issuing, "compromise issuing", "t").expect("issuing compromise");
    assert!(before_key.sign(b"x").is_err(), "the certificate of the compromised CA is not signed with");

    clock.set(t0 + chrono::Duration::seconds(120));
    let (chain, key) = ca.audit_signer().expect("audit signer after the compromise");
    assert_eq!(chain.len(), 1, "the root's: no issuing CA in the chain");
    let (_, x) = X509Certificate::from_der(&chain[0]).expect("parse");
    x.verify_signature(Some(root.public_key())).expect("certified by the root");
    assert_eq!(key.public_key_raw(), before_key.public_key_raw(), "the same key, certified again");
    key.sign(b"checkpoint").expect("signs");
    let (after, _) = ca.audit_checkpoint("t", "after", &stamp).expect("a checkpoint after the compromise");
    ca.verify_audit_checkpoint(&after, &at(120)).expect("the root's audit signer verifies");
    ca.verify_audit_checkpoint(&before, &at(0)).expect("the checkpoint from before still verifies");

    // A re-key, and then a compromise of the audit signer, go through the root.
    let rec = ca.rekey(OwnCert::Audit, "officer").expect("audit re-key by the root");
    assert_eq!(rec.issuer, CaId::Root);
    ca.compromise(OwnCert::Audit, "compromise audit", "t").expect("audit compromise");
    let crl = ca.crl(CaId::Root).expect("root crl");
    let (_, crl) = CertificateRevocationList::from_der(&crl.der).expect("parse");
    assert!(crl
        .iter_revoked_certificates()
        .any(|r| r.raw_serial() == rec.serial.to_der_content().as_slice()));
    assert!(matches!(ca.audit_signer(), Err(Error::Compromised { which: OwnCert::Audit })));
}

#[test]
fn a_compromised_tls_certificate_and_audit_signer_are_replaced_by_a_rekey_and_renewed_on_the_new_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap()));
    let ca = init_with(dir.path(), clock.clone());
    let root = ca.ca_cert(ca_core::CaCert::Root);
    let (_, root) = X509Certificate::from_der(&root).expect("root");
    let issuing = ca.ca_cert(ca_core::CaCert::Issuing);
    let (_, issuing) = X509Certificate::from_der(&issuing).expect("issuing");

    // No audit signer before the first checkpoint: nothing to re-key, said so.
    let r = ca.rekey(OwnCert::Audit, "t");
    assert!(matches!(r, Err(Error::NothingToReKey { which: OwnCert::Audit })), "{r:?}");

    // The TLS certificate: compromised, its key refuses and nothing certifies it again.
    let (old_chain, old_tls) = ca.tls_server_certificate().expect("tls");
    let first_tls = serial_of(&ca, "ca.tls.serial");
    ca.compromise(OwnCert::Tls, "compromise tls", "t").expect("tls compromise");
    assert!(old_tls.sign(b"x").is_err());
    assert!(matches!(ca.tls_server_certificate(), Err(Error::Compromised { which: OwnCert::Tls })));
    let rec = ca.rekey(OwnCert::Tls, "officer").expect("tls rekey");
    assert_ne!(rec.serial, first_tls);
    assert!(!ca.is_compromised(OwnCert::Tls));
    let (chain, tls) = ca.tls_server_certificate().expect("tls after the rekey");
    assert_eq!(chain, vec![rec.der.clone()]);
    assert_ne!(chain, old_chain);
    assert_ne!(tls.public_key_raw(), old_tls.public_key_raw(), "a new key");
    tls.sign(b"handshake").expect("the new key signs");
    assert!(old_tls.sign(b"x").is_err(), "the compromised key signed after the rekey");
    let (_, x) = X509Certificate::from_der(&rec.der).expect("parse");
    x.verify_signature(Some(root.public_key())).expect("certified by the root");
    assert!(x.extended_key_usage().expect("eku").expect("present").value.server_auth);
    assert_eq!(x.public_key().subject_public_key.data.as_ref(), tls.public_key_raw());

    // The audit signer the same way, certified by the issuing CA.
    let (_, old_audit) = ca.audit_signer().expect("audit signer");
    let first_audit = serial_of(&ca, "ca.audit.serial");
    ca.compromise(OwnCert::Audit, "compromise audit", "t").expect("audit compromise");
    assert!(old_audit.sign(b"x").is_err());
    assert!(matches!(ca.audit_signer(), Err(Error::Compromised { which: OwnCert::Audit })));
    let audit_rec = ca.rekey(OwnCert::Audit, "officer").expect("audit rekey");
    assert_ne!(audit_rec.serial, first_audit);
    let (audit_chain, audit) = ca.audit_signer().expect("audit signer after the rekey");
    assert_eq!(audit_chain[0], audit_rec.der);
    assert_ne!(audit.public_key_raw(), old_audit.public_key_raw(), "a new key");
    audit.sign(b"checkpoint").expect("the new key signs");
    let (_, x) = X509Certificate::from_der(&audit_rec.der).expect("parse");
    x.verify_signature(Some(issuing.public_key())).expect("certified by the issuing CA");
    let log = entries(ca.db()).expect("audit");
    for (kind, first) in [("tls-server", &first_tls), ("audit-signer", &first_audit)] {
        let said = format!("{kind} re-key after its compromise, replacing {first}");
        assert!(log.iter().any(|e| e.actor == "officer" && e.details.contains(&said)), "{said}");
    }
    drop((ca, tls, audit));

    // Reopened near their end: renewed on the re-keyed keys, which the next reopening finds.
    clock.advance(chrono::Duration::days(370));
    let open_at = |clock: Arc<FixedClock>| {
        let db = CertDb::open(dir.path().join("db")).expect("db");
        let hsm = Arc::new(HsmSim::open(dir.path().join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
        Ca::open(db, hsm, CaConfig::default(), clock).expect("open")
    };
    let again = open_at(clock.clone());
    assert!(!again.is_compromised(OwnCert::Tls) && !again.is_compromised(OwnCert::Audit));
    let (renewed, key) = again.tls_server_certificate().expect("renewed");
    assert_ne!(renewed[0], rec.der, "not renewed");
    let (_, x) = X509Certificate::from_der(&renewed[0]).expect("parse");
    assert_eq!(x.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    let (_, re_keyed) = X509Certificate::from_der(&rec.der).expect("parse");
    assert_eq!(x.public_key().raw, re_keyed.public_key().raw, "renewed on another key");
    // The audit signer lives as long as the issuing CA allows: renewed in its last 30 days.
    let (_, ends) = X509Certificate::from_der(&audit_rec.der).expect("parse");
    let end = Utc.timestamp_opt(ends.validity().not_after.timestamp(), 0).unwrap();
    clock.advance(
        end - Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap() - chrono::Duration::days(370 + 20),
    );
    let (audit_renewed, _) = again.audit_signer().expect("audit renewed");
    let (_, y) = X509Certificate::from_der(&audit_renewed[0]).expect("parse");
    let (_, audit_keyed) = X509Certificate::from_der(&audit_rec.der).expect("parse");
    assert_ne!(audit_renewed[0], audit_rec.der, "not renewed");
    assert_eq!(y.public_key().raw, audit_keyed.public_key().raw, "renewed on another key");
    drop(again);
    let third = open_at(clock);
    assert_eq!(third.audit_signer().expect("audit").0[0], audit_renewed[0], "reissued again on reopening");
    let (tls_later, _) = third.tls_server_certificate().expect("tls");
    let (_, z) = X509Certificate::from_der(&tls_later[0]).expect("parse");
    assert_eq!(z.public_key().raw, re_keyed.public_key().raw, "renewed on another key");
}

#[test]
fn a_compromised_tsa_is_replaced_by_a_rekey_certified_by_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = open(dir.path(), true);
    let first = serial_of(&ca, "ca.tsa.serial");
    let old = ca.tsa_signer().expect("tsa");
    ca.compromise(OwnCert::Tsa, "compromise tsa", "t").expect("tsa compromise");
    assert!(old.sign(b"x").is_err());

    let rec = ca.rekey(OwnCert::Tsa, "officer").expect("rekey");
    assert_ne!(rec.serial, first);
    assert_eq!(serial_of(&ca, "ca.tsa.serial"), rec.serial);
    assert!(!ca.is_compromised(OwnCert::Tsa));
    let (der, new) = ca.tsa_signer_certified().expect("certified");
    assert_eq!(der, rec.der);
    assert_eq!(ca.ca_cert(ca_core::CaCert::Tsa).as_ref(), rec.der.as_slice());
    new.sign(b"after").expect("the new key signs");
    assert!(old.sign(b"after").is_err(), "the compromised key signed after the rekey");
    // Certified by the root, for timestamping only.
    let (_, x) = X509Certificate::from_der(&rec.der).expect("parse");
    let root = ca.ca_cert(ca_core::CaCert::Root);
    let (_, root) = X509Certificate::from_der(&root).expect("root");
    x.verify_signature(Some(root.public_key())).expect("signed by the root");
    assert!(x.extended_key_usage().expect("eku").expect("present").value.time_stamping);
    drop(ca);
    let again = open(dir.path(), false);
    assert_eq!(again.tsa_signer_certified().expect("certified").0, rec.der);
    again.tsa_signer().expect("tsa").sign(b"reopened").expect("signs");
}

#[test]
fn a_checkpoint_timestamped_after_its_signer_was_revoked_does_not_verify_whatever_time_it_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap();
    let clock = Arc::new(FixedClock::new(t0));
    let ca = init_with(dir.path(), clock.clone());
    // The token's contents are the timestamp check's business: here it states the time each
    // case asks for.
    let stamp = |_: &[u8]| -> Result<Vec<u8>, String> { Ok(vec![0x05, 0x00]) };
    clock.set(t0 + chrono::Duration::seconds(30));
    let (der, cp) = ca.audit_checkpoint("t", "test", &stamp).expect("checkpoint");
    assert_eq!(cp.time, t0 + chrono::Duration::seconds(30));
    clock.set(t0 + chrono::Duration::seconds(60));
    ca.compromise(OwnCert::Audit, "compromise audit", "t").expect("audit compromise");

    // Timestamped before the revocation: it existed then, and verifies.
    let at = |secs: i64| move |_: &[u8], _: &[u8]| Ok(t0 + chrono::Duration::seconds(secs));
    let report = ca.verify_audit_checkpoint(&der, &at(40)).expect("timestamped before the revocation");
    assert_eq!(report.checkpoint.seq, cp.seq);
    // The same signature timestamped after it: the key could have made it then, with any time in
    // the checkpoint — refused, naming the revocation.
    let err = ca.verify_audit_checkpoint(&der, &at(90)).expect_err("timestamped after the revocation");
    assert!(matches!(err, Error::BadCheckpoint(ref m) if m.contains("was revoked at")), "{err}");
}
