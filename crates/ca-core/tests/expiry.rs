//! The OCSP signer's renewal before its window and the CA-side certificates' days left, with a
//! fixed clock moved by hand.

use std::sync::Arc;

use ca_core::{Ca, CaCert, CaConfig, Error, ExpiryState, FixedClock, OwnCert};
use cerdb::{CaId, CertDb, CertKind, Clock};
use chrono::{Duration, TimeZone, Utc};
use hsm_sim::{HsmSim, MasterKeySource};
use x509_parser::prelude::*;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).single().expect("time")
}

fn open(path: &std::path::Path, cfg: CaConfig, clock: Arc<FixedClock>, init: bool) -> Ca {
    let db = CertDb::open(path.join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(path.join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    if init {
        Ca::init(db, hsm, cfg, clock, "test").expect("init").0
    } else {
        Ca::open(db, hsm, cfg, clock).expect("open")
    }
}

fn state(ca: &Ca, name: &str) -> (ExpiryState, i64) {
    let all = ca.own_certificates().expect("status");
    let c = all.iter().find(|c| c.name == name).expect("listed");
    (c.state, c.days_left)
}

#[test]
fn the_ocsp_signer_is_reissued_with_a_new_key_once_in_its_window_and_kept_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(t0()));
    let ca = open(dir.path(), CaConfig::default(), clock.clone(), true);
    let first = ca.ca_cert(CaCert::Ocsp).to_vec();
    let first_key = ca.ocsp_signer().expect("signer").public_key_raw().to_vec();
    assert!(ca.renew_ocsp_signer_if_due("test").expect("renew").is_none(), "not due at init");
    assert_eq!(state(&ca, "ocsp"), (ExpiryState::Valid, 365));

    // 334 days on, 31 days are left: not yet.
    clock.set(t0() + Duration::days(334));
    assert!(ca.renew_ocsp_signer_if_due("test").expect("renew").is_none());
    // 336 days on, 29 are left: within the 30-day window.
    clock.set(t0() + Duration::days(336));
    assert_eq!(state(&ca, "ocsp"), (ExpiryState::Expiring, 29));
    let renewed = ca.renew_ocsp_signer_if_due("test").expect("renew").expect("renewed");
    assert_eq!(renewed.kind, CertKind::OcspSigner);
    assert_eq!(renewed.not_after, t0() + Duration::days(336 + 365));
    let (der, key) = ca.ocsp_signer_certified().expect("certified");
    assert_eq!(der, renewed.der);
    assert_ne!(der, first);
    assert_ne!(key.public_key_raw(), first_key.as_slice(), "a new key in custody");
    let (_, x) = X509Certificate::from_der(&der).expect("parse");
    assert_eq!(x.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    key.sign(b"signs").expect("the new key signs");
    assert_eq!(state(&ca, "ocsp"), (ExpiryState::Valid, 365));
    assert!(ca.renew_ocsp_signer_if_due("test").expect("renew").is_none(), "once only");
    ca.audit_verify().expect("the renewal is audited on an intact chain");
    let entries = ca_core::audit::entries(ca.db()).expect("entries");
    assert!(entries.iter().any(|e| e.details.contains("ocsp-signer renewal")));
    drop(ca);

    // Reopened: the new signer and its key are the ones in use.
    let ca = open(dir.path(), CaConfig::default(), clock, false);
    let (again, key) = ca.ocsp_signer_certified().expect("certified");
    assert_eq!(again, der);
    let (_, x) = X509Certificate::from_der(&again).expect("parse");
    assert_eq!(x.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
}

#[test]
fn the_window_covers_a_response_and_a_compromised_signer_is_not_renewed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(t0()));
    let mut cfg = CaConfig::default();
    cfg.expiry.ocsp_renew_before_days = 0;
    let ca = open(dir.path(), cfg, clock.clone(), true);
    // A window of 0 days is widened to one response's lifetime and a day.
    clock.set(t0() + Duration::days(363) + Duration::hours(12));
    assert!(ca.renew_ocsp_signer_if_due("test").expect("renew").is_some());

    let ca2_dir = tempfile::tempdir().expect("tempdir");
    let clock2 = Arc::new(FixedClock::new(t0()));
    let ca2 = open(ca2_dir.path(), CaConfig::default(), clock2.clone(), true);
    ca2.compromise(OwnCert::Ocsp, "compromise ocsp", "test").expect("compromise");
    clock2.set(t0() + Duration::days(340));
    let err = ca2.renew_ocsp_signer_if_due("test").expect_err("refused");
    assert!(matches!(err, Error::Compromised { which: OwnCert::Ocsp }), "{err}");
    assert_eq!(state(&ca2, "ocsp").0, ExpiryState::Revoked);
}

#[test]
fn no_renewal_when_the_issuing_ca_ends_first_and_states_follow_the_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(t0()));
    let mut cfg = CaConfig::default();
    cfg.issuing.validity_days = 40;
    cfg.ocsp_signer.validity_days = 40;
    let ca = open(dir.path(), cfg, clock.clone(), true);
    let first = ca.ca_cert(CaCert::Ocsp).to_vec();
    clock.set(t0() + Duration::days(20));
    assert!(ca.renew_ocsp_signer_if_due("test").expect("renew").is_none());
    assert_eq!(ca.ca_cert(CaCert::Ocsp).to_vec(), first);
    assert_eq!(state(&ca, "ocsp"), (ExpiryState::Expiring, 20));
    assert_eq!(state(&ca, "issuing"), (ExpiryState::Expiring, 20));
    assert_eq!(state(&ca, "root").0, ExpiryState::Valid);
    clock.set(t0() + Duration::days(41));
    assert_eq!(state(&ca, "ocsp").0, ExpiryState::Expired);
    let certs = ca.own_certificates().expect("status");
    let names: Vec<&str> = certs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["root", "issuing", "ocsp", "tsa", "tls"]);
}

/// Two `Ca`s on one database and key store, as two processes on one storage would be, on one
/// clock at [`t0`].
fn two_processes() -> (tempfile::TempDir, Arc<FixedClock>, Ca, Ca) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(t0()));
    let db = CertDb::open(dir.path().join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(dir.path().join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    let a = Ca::init(db.clone(), hsm.clone(), CaConfig::default(), clock.clone(), "test").expect("init").0;
    let b = Ca::open(db, hsm, CaConfig::default(), clock.clone()).expect("open");
    (dir, clock, a, b)
}

/// Two processes on one storage whose OCSP signer falls due at the same moment: two `Ca`s on one
/// database and key store, renewing on two threads released together, round after round. Each
/// round, whichever renewal's certificate was put in use is the one both use afterwards, and a
/// renewal that lost the race has an audit entry saying its certificate is not used.
#[test]
fn of_two_renewals_at_once_both_processes_use_the_one_put_in_use() {
    let (_dir, clock, a, b) = two_processes();
    let serial_of = |der: &[u8]| X509Certificate::from_der(der).expect("parse").1.raw_serial_as_string();
    let mut renewals = 0;
    for round in 1..=5i64 {
        clock.set(t0() + Duration::days(336 * round));
        let barrier = std::sync::Barrier::new(2);
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| {
                barrier.wait();
                a.renew_ocsp_signer_if_due("node-a").expect("renew")
            });
            let hb = s.spawn(|| {
                barrier.wait();
                b.renew_ocsp_signer_if_due("node-b").expect("renew")
            });
            (ha.join().expect("a"), hb.join().expect("b"))
        });
        let put_in_use: Vec<_> = [ra, rb].into_iter().flatten().collect();
        assert_eq!(put_in_use.len(), 1, "round {round}: one renewal put in use");
        renewals += 1;
        let in_use = serial_of(&put_in_use[0].der);
        for (name, ca) in [("a", &a), ("b", &b)] {
            let (der, key) = ca.ocsp_signer_certified().expect("certified");
            assert_eq!(serial_of(&der), in_use, "round {round}: {name} uses another signer");
            let (_, x) = X509Certificate::from_der(&der).expect("parse");
            assert_eq!(x.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
        }
    }
    a.audit_verify().expect("one intact chain");
    let entries = ca_core::audit::entries(a.db()).expect("entries");
    let issued = entries.iter().filter(|e| e.details.contains("ocsp-signer renewal")).count();
    let unused = entries.iter().filter(|e| e.details.contains("not put in use")).count();
    assert_eq!(issued, renewals + unused, "every renewal certificate is in use or said unused");
    // Each one not put in use is revoked (superseded), and the issuing CA's CRL lists it.
    let crl = a.crl(CaId::Issuing).expect("crl");
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&crl.der).expect("crl");
    for e in entries.iter().filter(|e| e.details.contains("not put in use")) {
        let serial: cerdb::Serial =
            e.serial.as_ref().expect("the entry names its certificate").parse().expect("serial");
        let rec = a.db().get_meta(&serial).expect("get").expect("stored");
        let r = rec.revocation.unwrap_or_else(|| panic!("{serial} is unused and not revoked"));
        assert_eq!(r.reason, cerdb::RevocationReason::Superseded);
        assert!(crl
            .iter_revoked_certificates()
            .any(|c| c.raw_serial() == serial.to_der_content().as_slice()));
    }
    eprintln!("{renewals} rounds: {issued} renewal certificates issued, {unused} lost the race");
}

/// The TLS certificate and the audit signer renewed by two processes at once (two `Ca`s on one
/// database and key store, released together): both use the certificate put in use, and a
/// renewal that lost the race is revoked (superseded), not left valid and unused.
#[test]
fn of_two_tls_and_audit_renewals_at_once_one_is_used_and_the_other_revoked() {
    let (_dir, clock, a, b) = two_processes();
    a.audit_signer().expect("the first audit signer");
    for round in 1..=3i64 {
        // Past the TLS certificate's and the audit signer's renewal windows.
        clock.set(t0() + Duration::days(370 * round));
        for (kind, get) in [
            ("tls-server", (|ca: &Ca| ca.tls_server_certificate()) as fn(&Ca) -> Result<_, Error>),
            ("audit-signer", |ca: &Ca| ca.audit_signer()),
        ] {
            let barrier = std::sync::Barrier::new(2);
            let (ca_, cb) = std::thread::scope(|s| {
                let ha = s.spawn(|| {
                    barrier.wait();
                    get(&a).expect("a renews")
                });
                let hb = s.spawn(|| {
                    barrier.wait();
                    get(&b).expect("b renews")
                });
                (ha.join().expect("a"), hb.join().expect("b"))
            });
            assert_eq!(ca_.0[0], cb.0[0], "round {round}: {kind}: both use the one put in use");
            let valid: Vec<_> = a
                .db()
                .list(None)
                .expect("list")
                .into_iter()
                .filter(|r| r.kind.name() == kind && r.revocation.is_none() && r.not_after > clock.now())
                .collect();
            let in_use = cerdb::Serial::from_bytes(
                X509Certificate::from_der(&ca_.0[0]).expect("parse").1.raw_serial(),
            )
            .expect("serial");
            let valid_serials: Vec<String> = valid.iter().map(|r| r.serial.to_string()).collect();
            // Besides the one in use, only the one it renewed (in its last 30 days) is valid.
            assert!(
                valid.iter().all(|r| r.serial == in_use || r.not_after - clock.now() <= Duration::days(30)),
                "round {round}: {kind}: another valid certificate besides {in_use}: {valid_serials:?}"
            );
        }
    }
    a.audit_verify().expect("one intact chain");
}
