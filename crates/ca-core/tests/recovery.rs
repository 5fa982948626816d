//! Escrow recovery by two officers or more, in-process with a fixed clock: request, approvals,
//! one release to the requester; every refusal with its precise error and audit entry.

use std::sync::Arc;

use ca_core::{Ca, CaConfig, Error, EscrowConfig, FixedClock, RecoveryState};
use cerdb::console_store::{ConsoleRole, ConsoleUser, RecoveryHold};
use cerdb::recovery_store::RecoveryId;
use cerdb::{CertDb, Serial, Usage};
use chrono::{Duration, TimeZone, Utc};
use hsm_sim::{HsmSim, KeyType, MasterKeySource};

struct Fixture {
    _dir: tempfile::TempDir,
    ca: Ca,
    clock: Arc<FixedClock>,
    escrowed: Serial,
}

fn fixture(escrow: EscrowConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2026, 2, 1, 9, 0, 0).unwrap()));
    let db = CertDb::open(dir.path().join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(dir.path().join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    let (ca, _) = Ca::init(db, hsm, CaConfig::default(), clock.clone(), "test").expect("init");
    let ca = ca.with_escrow(escrow).expect("escrow settings");
    let email = "bob@example.com".parse().expect("email");
    let (issued, _) = ca
        .issue_generated(&email, Usage::Encryption, Some(KeyType::P256), "subscriber pw", "t")
        .expect("issue");
    Fixture { _dir: dir, ca, clock, escrowed: issued.record.serial }
}

/// The (action, outcome) of every audit entry after the first `skip`.
fn audit_after(ca: &Ca, skip: usize) -> Vec<(String, String)> {
    ca_core::audit::entries(ca.db())
        .expect("entries")
        .into_iter()
        .skip(skip)
        .map(|e| (e.action.to_string(), e.outcome))
        .collect()
}

#[test]
fn one_approval_is_refused_below_two_officers_and_the_defaults_are_two_and_a_day() {
    let d = EscrowConfig::default();
    assert_eq!((d.approvals, d.request_ttl_secs), (2, 86_400));
    for approvals in [0, 1] {
        let e = EscrowConfig { approvals, ..d.clone() }.validate().unwrap_err().to_string();
        assert!(e.contains("escrow.approvals") && e.contains("at least 2"), "{e}");
    }
    let e = EscrowConfig { request_ttl_secs: 0, ..d }.validate().unwrap_err().to_string();
    assert!(e.contains("escrow.request_ttl_secs"), "{e}");
}

#[test]
fn a_request_is_released_to_its_requester_once_a_second_officer_approved_and_only_once() {
    let f = fixture(EscrowConfig::default());
    let audit0 = ca_core::audit::entries(f.ca.db()).expect("entries").len();
    let r = f.ca.request_recovery(&f.escrowed, "console:olivia", "  laptop stolen  ").expect("request");
    assert_eq!((r.reason.as_str(), r.required), ("laptop stolen", 2));
    assert_eq!(r.expires_at - r.created_at, Duration::hours(24));
    assert_eq!(RecoveryState::of(&r, f.ca.now()), RecoveryState::Pending { have: 1, need: 2 });

    // One officer alone: pending.
    let e = f.ca.release_recovery(&r.id, "console:olivia", "recovery pw 1").unwrap_err();
    assert!(matches!(e, Error::RecoveryNotApproved { have: 1, need: 2, .. }), "{e}");
    // The requester cannot approve, through either door.
    for me in ["console:olivia", "cli:Olivia", "uid:1001(olivia)"] {
        let e = f.ca.approve_recovery(&r.id, me).unwrap_err();
        assert!(matches!(e, Error::RecoveryOwnRequest { .. }), "{me}: {e}");
    }
    // A second officer approves.
    let approved = f.ca.approve_recovery(&r.id, "console:oscar").expect("approve");
    assert_eq!(RecoveryState::of(&approved, f.ca.now()), RecoveryState::Approved);
    assert!(matches!(
        f.ca.approve_recovery(&r.id, "cli:peter").unwrap_err(),
        Error::RecoveryFullyApproved { .. }
    ));
    // Only the requester receives the key; a refused password leaves the request usable.
    let e = f.ca.release_recovery(&r.id, "console:oscar", "recovery pw 1").unwrap_err();
    assert!(
        matches!(&e, Error::RecoveryNotRequester { requester, .. } if requester == "console:olivia"),
        "{e}"
    );
    assert!(f.ca.release_recovery(&r.id, "console:olivia", "short").is_err());
    let (done, p12) = f.ca.release_recovery(&r.id, "console:olivia", "recovery pw 1").expect("release");
    assert!(!p12.is_empty());
    assert_eq!(RecoveryState::of(&done, f.ca.now()), RecoveryState::Released);
    // Used once.
    for e in [
        f.ca.release_recovery(&r.id, "console:olivia", "recovery pw 1").map(drop).unwrap_err(),
        f.ca.approve_recovery(&r.id, "console:quinn").map(drop).unwrap_err(),
    ] {
        assert!(matches!(e, Error::RecoveryReleased { .. }), "{e}");
    }

    let audit = audit_after(&f.ca, audit0);
    let ok = |a: &str| audit.iter().filter(|(x, o)| x == a && o == "ok").count();
    let refused = |a: &str| audit.iter().filter(|(x, o)| x == a && o.starts_with("refused: ")).count();
    assert_eq!((ok("escrow.request"), ok("escrow.approve"), ok("escrow.recover")), (1, 1, 1), "{audit:?}");
    assert_eq!((refused("escrow.approve"), refused("escrow.recover")), (5, 4), "{audit:?}");
}

#[test]
fn three_officers_need_two_distinct_approvers() {
    let f = fixture(EscrowConfig { approvals: 3, ..EscrowConfig::default() });
    let r = f.ca.request_recovery(&f.escrowed, "cli:olivia", "").expect("request");
    f.ca.approve_recovery(&r.id, "cli:oscar").expect("first approval");
    let e = f.ca.approve_recovery(&r.id, "console:oscar").unwrap_err();
    assert!(matches!(e, Error::RecoveryAlreadyApproved { .. }), "{e}");
    let e = f.ca.release_recovery(&r.id, "cli:olivia", "recovery pw 1").unwrap_err();
    assert!(matches!(e, Error::RecoveryNotApproved { have: 2, need: 3, .. }), "{e}");
    f.ca.approve_recovery(&r.id, "console:peter").expect("second approval");
    f.ca.release_recovery(&r.id, "cli:olivia", "recovery pw 1").expect("release");
}

#[test]
fn an_expired_request_can_be_neither_approved_nor_released() {
    let f = fixture(EscrowConfig { request_ttl_secs: 600, ..EscrowConfig::default() });
    let r = f.ca.request_recovery(&f.escrowed, "cli:olivia", "").expect("request");
    let late = f.ca.request_recovery(&f.escrowed, "cli:olivia", "").expect("request");
    f.ca.approve_recovery(&late.id, "cli:oscar").expect("approved in time");
    f.clock.advance(Duration::seconds(600));
    assert_eq!(RecoveryState::of(&r, f.ca.now()), RecoveryState::Expired);
    let e = f.ca.approve_recovery(&r.id, "cli:oscar").unwrap_err();
    assert!(matches!(e, Error::RecoveryExpired { .. }), "{e}");
    assert!(e.to_string().contains("2026-02-01T09:10:00Z"), "{e}");
    let e = f.ca.release_recovery(&late.id, "cli:olivia", "recovery pw 1").unwrap_err();
    assert!(matches!(e, Error::RecoveryExpired { .. }), "{e}");
}

#[test]
fn garbage_is_refused_precisely() {
    let f = fixture(EscrowConfig::default());
    let unknown = RecoveryId::from_bytes([7; 16]);
    assert!(matches!(f.ca.approve_recovery(&unknown, "cli:oscar").unwrap_err(), Error::UnknownRecovery(_)));
    assert!(matches!(
        f.ca.release_recovery(&unknown, "cli:oscar", "recovery pw 1").unwrap_err(),
        Error::UnknownRecovery(_)
    ));
    let long = "x".repeat(ca_core::MAX_RECOVERY_REASON_CHARS + 1);
    let e = f.ca.request_recovery(&f.escrowed, "cli:olivia", &long).unwrap_err();
    assert!(matches!(e, Error::RecoveryReason(_)) && e.to_string().contains("at most 500"), "{e}");
    let e = f.ca.request_recovery(&f.escrowed, "cli:olivia", "two\nlines").unwrap_err();
    assert!(matches!(e, Error::RecoveryReason(_)), "{e}");
    let nobody: Serial = "01".parse().expect("serial");
    assert!(matches!(f.ca.request_recovery(&nobody, "cli:olivia", "").unwrap_err(), Error::UnknownSerial(_)));
    let issuing = f.ca.list(None).expect("list").into_iter().find(|r| r.escrow_key.is_none()).expect("cert");
    assert!(matches!(
        f.ca.request_recovery(&issuing.serial, "cli:olivia", "").unwrap_err(),
        Error::NotEscrowed(_)
    ));
    assert!(f.ca.recoveries().expect("list").is_empty(), "nothing was stored");
}

#[test]
fn an_account_under_a_recovery_hold_takes_no_part_until_the_hold_is_lifted() {
    let f = fixture(EscrowConfig::default());
    let console = f.ca.db().console();
    let carol = ConsoleUser {
        name: "carol".parse().expect("name"),
        role: ConsoleRole::Officer,
        password_hash: "$argon2id$x".into(),
        must_change_password: false,
        totp_sealed: None,
        totp_secret: None,
        totp_last_step: 0,
        disabled: false,
        failed_logins: 0,
        locked_until: None,
        created_at: f.ca.now(),
        last_login: None,
        recovery_hold: Some(RecoveryHold { reset_by: "console:admin".into(), at: f.ca.now() }),
    };
    assert!(console.insert_user(&carol).expect("insert"));
    let held = |e: Error| matches!(&e, Error::RecoveryHold { account, reset_by } if account == "carol" && reset_by == "console:admin");
    assert!(held(f.ca.request_recovery(&f.escrowed, "console:carol", "").unwrap_err()));
    let r = f.ca.request_recovery(&f.escrowed, "console:olivia", "").expect("request");
    assert!(held(f.ca.approve_recovery(&r.id, "console:carol").unwrap_err()));
    let mine = {
        console.update_user(&carol.name, &|u| u.recovery_hold = None).expect("lift");
        let mine = f.ca.request_recovery(&f.escrowed, "console:carol", "").expect("request");
        f.ca.approve_recovery(&mine.id, "console:olivia").expect("approve");
        mine
    };
    let hold = RecoveryHold { reset_by: "console:admin".into(), at: f.ca.now() };
    console.update_user(&carol.name, &|u| u.recovery_hold = Some(hold.clone())).expect("reset again");
    assert!(held(f.ca.release_recovery(&mine.id, "console:carol", "recovery pw 1").unwrap_err()));
    console.update_user(&carol.name, &|u| u.recovery_hold = None).expect("confirmed");
    f.ca.approve_recovery(&r.id, "console:carol").expect("approve");
    f.ca.release_recovery(&mine.id, "console:carol", "recovery pw 1").expect("release");
}
