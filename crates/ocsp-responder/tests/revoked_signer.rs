//! A responder whose signer certificate, or issuing CA, is revoked signs nothing more: every
//! request is answered `unauthorized` (RFC 6960 §2.3), with or without a change feed, including
//! answers that were cached while the signer was good, and pre-signing refuses too.

mod common;

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use common::*;
use ocsp_responder::{Error, OcspConfig, OcspResponder, ResponseStatus, SystemClock};
use x509_ocsp::OcspResponseStatus;

fn responder(pki: &Pki, feed: bool) -> OcspResponder {
    let r = OcspResponder::new(
        pki.reader(),
        &pki.issuing_der,
        &pki.signer_der,
        pki.signer.clone(),
        OcspConfig::default(),
        Arc::new(SystemClock),
    )
    .expect("responder");
    if feed {
        r.with_change_feed(pki.db.feed()).expect("feed")
    } else {
        r
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("time")
}

#[test]
fn a_revoked_signer_or_issuing_ca_gets_unauthorized() {
    for (revoked, feed) in
        [(SIGNER_SERIAL, true), (SIGNER_SERIAL, false), (ISSUING_CA_SERIAL, true), (ISSUING_CA_SERIAL, false)]
    {
        let pki = Pki::new();
        let r = responder(&pki, feed);
        let single = pki.request(&[GOOD], OID_SHA1, None);
        let with_nonce = pki.request(&[GOOD, GOOD_2], OID_SHA256, Some(b"0123456789abcdef"));
        assert_eq!(decode(&r.respond(&single, now())).status, OcspResponseStatus::Successful);
        assert_eq!(decode(&r.respond(&with_nonce, now())).status, OcspResponseStatus::Successful);
        pki.revoke(revoked, now() - Duration::minutes(1), cerdb::RevocationReason::KeyCompromise);
        for req in [&single, &with_nonce] {
            let reply = r.respond_detailed(req, now());
            assert_eq!(reply.status, ResponseStatus::Unauthorized, "{revoked:?} feed {feed}");
            let d = decode(&reply.der);
            assert_eq!(d.status, OcspResponseStatus::Unauthorized);
            assert!(d.basic.is_none(), "nothing signed");
        }
        // Malformed requests stay malformed.
        assert_eq!(decode(&r.respond(b"\x30\x00", now())).status, OcspResponseStatus::MalformedRequest);
        // A responder built afterwards refuses from the start.
        let later = responder(&pki, feed);
        assert_eq!(decode(&later.respond(&single, now())).status, OcspResponseStatus::Unauthorized);
        let dir = tempfile::tempdir().expect("dir");
        let err = later.presign(&[serial(GOOD)], dir.path(), now()).expect_err("presign refused");
        assert!(matches!(err, Error::SignerRevoked { .. }), "{err}");
        assert_eq!(err.response_status(), ResponseStatus::Unauthorized);
    }
}
