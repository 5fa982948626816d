//! `OcspResponder::respond` against cerdb and hsm-sim, responses decoded field by field, the
//! cache with injected times, the constructor's refusals and the request vectors on disk.

mod common;

use std::sync::Arc;

use cerdb::{
    CaId, CertKind, CertReader, CertRecord, CrlRecord, EmailAddress, Fingerprint, RevocationReason, Serial,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use hsm_sim::{KeyCustody, KeyPurpose, KeyType};
use ocsp_responder::{Error, OcspConfig, OcspResponder, ResponseStatus, SystemClock};
use x509_cert::ext::pkix::{CrlReason, ExtendedKeyUsage};
use x509_cert::Certificate;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspRequest, OcspResponseStatus, ResponderId};

const OID_KP_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
const OID_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_NOCHECK: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("time")
}

fn secs(t: &x509_ocsp::OcspGeneralizedTime) -> i64 {
    t.0.to_unix_duration().as_secs() as i64
}

fn basic_of(der: &[u8]) -> BasicOcspResponse {
    let d = decode(der);
    assert_eq!(d.status, OcspResponseStatus::Successful);
    d.basic.expect("responseBytes")
}

/// Checks what every successful response must carry: the signer certificate (with its EKU and
/// ocsp-nocheck), a responderID by key hash, and a signature by that key over the DER of
/// tbsResponseData.
fn check_signature(pki: &Pki, basic: &BasicOcspResponse) {
    let certs = basic.certs.as_ref().expect("certs field");
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].to_der().expect("der"), pki.signer_der, "the OCSP signer certificate");
    let signer = &certs[0];
    let exts = signer.tbs_certificate.extensions.as_ref().expect("extensions");
    let eku = exts.iter().find(|e| e.extn_id == OID_EKU).expect("extendedKeyUsage");
    let eku = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).expect("EKU");
    assert!(eku.0.contains(&OID_KP_OCSP_SIGNING), "id-kp-OCSPSigning");
    let nocheck = exts.iter().find(|e| e.extn_id == OID_NOCHECK).expect("id-pkix-ocsp-nocheck");
    assert_eq!(nocheck.extn_value.as_bytes(), &[0x05, 0x00], "ocsp-nocheck is NULL");

    let key = signer.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    let key_hash = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, key);
    match &basic.tbs_response_data.responder_id {
        ResponderId::ByKey(h) => assert_eq!(h.as_bytes(), key_hash.as_ref()),
        other => panic!("responderID by name: {other:?}"),
    }
    let alg: &dyn ring::signature::VerificationAlgorithm = match basic.signature_algorithm.oid {
        OID_ECDSA_SHA256 => {
            assert!(basic.signature_algorithm.parameters.is_none());
            &ring::signature::ECDSA_P256_SHA256_ASN1
        }
        OID_RSA_SHA256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        other => panic!("signature algorithm {other}"),
    };
    let tbs = basic.tbs_response_data.to_der().expect("tbs");
    let sig = basic.signature.as_bytes().expect("whole octets");
    ring::signature::UnparsedPublicKey::new(alg, key).verify(&tbs, sig).expect("signature verifies");
}

#[test]
fn a_response_of_each_status_decodes_and_is_signed_by_the_delegated_signer() {
    let pki = Pki::new();
    let r = pki.responder();
    let now = t0() + Duration::milliseconds(700);
    for s in [GOOD, REVOKED, NEVER_ISSUED] {
        let req = pki.request(&[s], OID_SHA1, None);
        let basic = basic_of(&r.respond(&req, now));
        check_signature(&pki, &basic);
        let data = &basic.tbs_response_data;
        assert_eq!(secs(&data.produced_at), t0().timestamp(), "producedAt, whole seconds");
        assert!(data.response_extensions.is_none(), "no nonce asked, none sent");
        let [single] = data.responses.as_slice() else { panic!("one SingleResponse") };
        let sent = OcspRequest::from_der(&req).expect("request");
        assert_eq!(single.cert_id, sent.tbs_request.request_list[0].req_cert, "CertID echoed");
        assert_eq!(secs(&single.this_update), t0().timestamp());
        assert_eq!(secs(&single.next_update.expect("nextUpdate")), (t0() + Duration::hours(24)).timestamp());
        match (s, &single.cert_status) {
            (GOOD, CertStatus::Good(_)) | (NEVER_ISSUED, CertStatus::Unknown(_)) => {}
            (REVOKED, CertStatus::Revoked(info)) => {
                assert_eq!(secs(&info.revocation_time), revoked_at().timestamp());
                assert_eq!(info.revocation_reason, Some(CrlReason::KeyCompromise));
            }
            (s, other) => panic!("{} answered {other:?}", serial(s)),
        }
    }
}

#[test]
fn an_unspecified_reason_is_left_out() {
    let pki = Pki::new();
    pki.revoke(GOOD_2, revoked_at(), RevocationReason::Unspecified);
    let out = pki.responder().respond(&pki.request(&[GOOD_2], OID_SHA1, None), t0());
    let basic = basic_of(&out);
    match &basic.tbs_response_data.responses[0].cert_status {
        CertStatus::Revoked(info) => assert_eq!(info.revocation_reason, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_rsa_signer_signs_sha256_with_rsa_and_openssl_accepts_it() {
    let pki = Pki::with_key(KeyType::Rsa2048);
    let out = pki.responder().respond(&pki.request(&[REVOKED], OID_SHA1, None), Utc::now());
    let basic = basic_of(&out);
    assert_eq!(basic.signature_algorithm.oid, OID_RSA_SHA256);
    check_signature(&pki, &basic);
    let file = pki.path("rsa.der");
    std::fs::write(&file, &out).expect("write");
    let text = openssl_text(&[
        "ocsp",
        "-respin",
        file.to_str().expect("path"),
        "-issuer",
        data("issuing.pem").to_str().expect("path"),
        "-CAfile",
        data("root.pem").to_str().expect("path"),
        "-cert",
        pki.leaf_pem(REVOKED).to_str().expect("path"),
    ]);
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(text.contains(": revoked") && text.contains("Reason: keyCompromise"), "{text}");
}

#[test]
fn sha256_cert_ids_are_answered_with_sha256_cert_ids() {
    let pki = Pki::new();
    let req = pki.request(&[GOOD], OID_SHA256, None);
    let basic = basic_of(&pki.responder().respond(&req, t0()));
    let single = &basic.tbs_response_data.responses[0];
    assert_eq!(single.cert_id.hash_algorithm.oid, OID_SHA256);
    assert_eq!(single.cert_id.issuer_name_hash.as_bytes().len(), 32);
    assert!(matches!(single.cert_status, CertStatus::Good(_)));
}

#[test]
fn several_cert_ids_get_one_single_response_each_in_order() {
    let pki = Pki::new();
    let req = pki.request(&[NEVER_ISSUED, GOOD, REVOKED], OID_SHA1, None);
    let basic = basic_of(&pki.responder().respond(&req, t0()));
    check_signature(&pki, &basic);
    let got: Vec<(Vec<u8>, &str)> = basic
        .tbs_response_data
        .responses
        .iter()
        .map(|s| {
            let st = match s.cert_status {
                CertStatus::Good(_) => "good",
                CertStatus::Revoked(_) => "revoked",
                CertStatus::Unknown(_) => "unknown",
            };
            (s.cert_id.serial_number.as_bytes().to_vec(), st)
        })
        .collect();
    assert_eq!(
        got,
        vec![(vec![0x00, 0x99, 0x99], "unknown"), (GOOD.to_vec(), "good"), (REVOKED.to_vec(), "revoked")]
    );
}

#[test]
fn the_nonce_is_echoed_for_1_to_128_octets_and_longer_ones_are_malformed() {
    let pki = Pki::new();
    let r = pki.responder();
    for len in [1usize, 16, 32, 128] {
        let nonce = vec![0x5a; len];
        let basic = basic_of(&r.respond(&pki.request(&[GOOD], OID_SHA1, Some(&nonce)), t0()));
        let exts = basic.tbs_response_data.response_extensions.expect("responseExtensions");
        assert_eq!(exts, vec![nonce_extension(&nonce)], "nonce of {len} octets echoed");
    }
    for len in [0usize, 129, 500] {
        let reply = r.respond_detailed(&pki.request(&[GOOD], OID_SHA1, Some(&vec![1; len])), t0());
        assert_eq!(reply.status, ResponseStatus::MalformedRequest, "nonce of {len} octets");
        assert_eq!(decode(&reply.der).status, OcspResponseStatus::MalformedRequest);
        assert!(decode(&reply.der).basic.is_none());
    }
}

#[test]
fn nonce_responses_are_neither_cached_nor_marked_cacheable() {
    let pki = Pki::new();
    let r = pki.responder();
    let req = pki.request(&[GOOD], OID_SHA1, Some(&[7; 32]));
    let a = r.respond_detailed(&req, t0());
    let b = r.respond_detailed(&req, t0());
    assert!(a.freshness.is_none() && !a.from_cache && !b.from_cache);
    assert_eq!(r.cached_responses(), 0);
    assert_ne!(a.der, b.der, "each nonce request is signed anew (ECDSA signatures differ)");
}

#[test]
fn an_issuer_not_served_is_unauthorized() {
    let pki = Pki::new();
    let r = pki.responder();
    let root = pem_to_der(&std::fs::read_to_string(data("root.pem")).expect("root.pem"));
    // The issuing CA's own certificate, asked of its issuer (the root): not served here.
    let foreign = request_for(&root, &[ISSUING_CA_SERIAL], OID_SHA1, None);
    assert_eq!(r.respond_detailed(&foreign, t0()).status, ResponseStatus::Unauthorized);
    assert_eq!(decode(&r.respond(&foreign, t0())).status, OcspResponseStatus::Unauthorized);
    // One foreign CertID among ours spoils the request.
    let mut mixed = OcspRequest::from_der(&pki.request(&[GOOD], OID_SHA1, None)).expect("request");
    let other = OcspRequest::from_der(&foreign).expect("request");
    mixed.tbs_request.request_list.push(other.tbs_request.request_list[0].clone());
    let mixed = mixed.to_der().expect("der");
    assert_eq!(r.respond_detailed(&mixed, t0()).status, ResponseStatus::Unauthorized);
    // A hash algorithm we do not compute (MD5) cannot name our issuer.
    let mut md5 = OcspRequest::from_der(&pki.request(&[GOOD], OID_SHA1, None)).expect("request");
    md5.tbs_request.request_list[0].req_cert.hash_algorithm.oid =
        ObjectIdentifier::new_unwrap("1.2.840.113549.2.5");
    assert_eq!(r.respond_detailed(&md5.to_der().expect("der"), t0()).status, ResponseStatus::Unauthorized);
}

#[test]
fn serials_the_issuing_ca_did_not_issue_are_unknown() {
    let pki = Pki::new();
    let r = pki.responder();
    let statuses = |s: &[u8]| {
        let basic = basic_of(&r.respond(&pki.request(&[s], OID_SHA1, None), t0()));
        basic.tbs_response_data.responses[0].cert_status
    };
    // The issuing CA's certificate is in cerdb, but issued by the root.
    assert!(matches!(statuses(ISSUING_CA_SERIAL), CertStatus::Unknown(_)));
    assert!(matches!(statuses(NEVER_ISSUED), CertStatus::Unknown(_)));
    assert!(matches!(statuses(SIGNER_SERIAL), CertStatus::Good(_)));
    assert_eq!(r.cached_responses(), 1, "unknown answers are not cached");
}

#[test]
fn undecodable_requests_are_malformed() {
    let pki = Pki::new();
    let r = pki.responder();
    let good = pki.request(&[GOOD], OID_SHA1, None);
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"GET / HTTP/1.1\r\n".to_vec()),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("trailing octet", trailing),
        ("empty requestList", vec![0x30, 0x04, 0x30, 0x02, 0x30, 0x00]),
        ("over the limit", vec![0x30; ocsp_responder::MAX_REQUEST_BYTES + 1]),
    ];
    for (what, req) in cases {
        let reply = r.respond_detailed(&req, t0());
        assert_eq!(reply.status, ResponseStatus::MalformedRequest, "{what}");
        assert_eq!(reply.der, vec![0x30, 0x03, 0x0a, 0x01, 0x01], "{what}");
    }
}

#[test]
fn the_cache_serves_the_same_bytes_until_next_update_nears() {
    let pki = Pki::new();
    let r = pki.responder();
    let req = pki.request(&[GOOD], OID_SHA1, None);
    let first = r.respond_detailed(&req, t0());
    assert!(!first.from_cache);
    let again = r.respond_detailed(&req, t0() + Duration::hours(11));
    assert!(again.from_cache);
    assert_eq!(again.der, first.der);
    assert_eq!(again.freshness, first.freshness);
    // 12 h (the default margin, half of 24 h) before nextUpdate, it is signed anew.
    let later = t0() + Duration::hours(12);
    let renewed = r.respond_detailed(&req, later);
    assert!(!renewed.from_cache);
    assert_ne!(renewed.der, first.der);
    let basic = basic_of(&renewed.der);
    assert_eq!(secs(&basic.tbs_response_data.responses[0].this_update), later.timestamp());
    // SHA-1 and SHA-256 CertIDs of one serial are cached apart.
    let sha256 = pki.request(&[GOOD], OID_SHA256, None);
    let s = r.respond_detailed(&sha256, later);
    assert!(!s.from_cache);
    assert!(r.respond_detailed(&sha256, later).from_cache);
    assert_eq!(r.cached_responses(), 2);
}

#[test]
fn a_revocation_made_elsewhere_is_never_served_stale() {
    let pki = Pki::new();
    let r = pki.responder();
    let req = pki.request(&[GOOD_2], OID_SHA1, None);
    let good = r.respond(&req, t0());
    assert_eq!(r.respond(&req, t0()), good, "cached");
    // Revoked in cerdb without telling the responder: the hit's re-check sees it.
    pki.revoke(GOOD_2, t0() + Duration::minutes(5), RevocationReason::Superseded);
    let reply = r.respond_detailed(&req, t0() + Duration::minutes(6));
    assert!(!reply.from_cache);
    assert_ne!(reply.der, good);
    match &basic_of(&reply.der).tbs_response_data.responses[0].cert_status {
        CertStatus::Revoked(info) => assert_eq!(info.revocation_reason, Some(CrlReason::Superseded)),
        other => panic!("{other:?}"),
    }
    assert!(r.respond_detailed(&req, t0() + Duration::minutes(7)).from_cache, "the revoked answer is cached");
}

#[test]
fn invalidate_drops_the_cached_responses_of_a_serial() {
    let pki = Pki::new();
    let r = pki.responder();
    let sha1 = pki.request(&[GOOD], OID_SHA1, None);
    let sha256 = pki.request(&[GOOD], OID_SHA256, None);
    let other = pki.request(&[REVOKED], OID_SHA1, None);
    let a = r.respond(&sha1, t0());
    r.respond(&sha256, t0());
    r.respond(&other, t0());
    assert_eq!(r.cached_responses(), 3);
    r.invalidate(&serial(GOOD));
    assert_eq!(r.cached_responses(), 1);
    let b = r.respond_detailed(&sha1, t0());
    assert!(!b.from_cache);
    assert_ne!(b.der, a, "signed anew");
    assert!(r.respond_detailed(&other, t0()).from_cache, "other serials keep theirs");
}

#[test]
fn next_update_is_configurable() {
    let pki = Pki::new();
    let r = pki.responder_with(OcspConfig::with_next_update(Duration::hours(8)));
    let basic = basic_of(&r.respond(&pki.request(&[GOOD], OID_SHA1, None), t0()));
    let single = &basic.tbs_response_data.responses[0];
    assert_eq!(secs(&single.next_update.expect("nextUpdate")) - secs(&single.this_update), 8 * 3600);
    let req = pki.request(&[GOOD], OID_SHA1, None);
    assert!(r.respond_detailed(&req, t0() + Duration::hours(3)).from_cache);
    assert!(!r.respond_detailed(&req, t0() + Duration::hours(4)).from_cache, "margin is 4 h");
}

/// A certificate store that is down.
struct DownStore;

impl CertReader for DownStore {
    fn get(&self, _: &Serial) -> Result<Option<CertRecord>, cerdb::Error> {
        Err(cerdb::Error::Db("down".into()))
    }
    fn get_meta(&self, _: &Serial) -> Result<Option<CertRecord>, cerdb::Error> {
        Err(cerdb::Error::Db("down".into()))
    }
    fn by_fingerprint(&self, _: &Fingerprint) -> Result<Option<CertRecord>, cerdb::Error> {
        Err(cerdb::Error::Db("down".into()))
    }
    fn by_email(&self, _: &EmailAddress, _: Option<CertKind>) -> Result<Vec<CertRecord>, cerdb::Error> {
        Err(cerdb::Error::Db("down".into()))
    }
    fn email_by_hash(&self, _: &[u8; 32]) -> Result<Option<EmailAddress>, cerdb::Error> {
        Err(cerdb::Error::Db("down".into()))
    }
    fn crl(&self, _: CaId) -> Result<Option<CrlRecord>, cerdb::Error> {
        Err(cerdb::Error::Db("down".into()))
    }
}

#[test]
fn a_store_that_is_down_means_try_later() {
    let pki = Pki::new();
    let r = OcspResponder::new(
        Arc::new(DownStore),
        &pki.issuing_der,
        &pki.signer_der,
        pki.signer.clone(),
        OcspConfig::default(),
        Arc::new(SystemClock),
    )
    .expect("responder");
    let reply = r.respond_detailed(&pki.request(&[GOOD], OID_SHA1, None), t0());
    assert_eq!(reply.status, ResponseStatus::TryLater);
    assert_eq!(decode(&reply.der).status, OcspResponseStatus::TryLater);
    let reply = r.respond_detailed(&pki.request(&[GOOD, REVOKED], OID_SHA1, Some(&[1; 16])), t0());
    assert_eq!(reply.status, ResponseStatus::TryLater);
}

#[test]
fn the_constructor_refuses_unusable_signers() {
    let pki = Pki::new();
    let build = |ca: &[u8], cert: &[u8], signer: Arc<dyn hsm_sim::Signer>, config: OcspConfig| {
        OcspResponder::new(pki.reader(), ca, cert, signer, config, Arc::new(SystemClock))
    };
    let spki = rcgen::SubjectPublicKeyInfo::from_der(pki.signer.public_key_spki()).expect("spki");

    let no_eku = signer_params(false, true).signed_by(&spki, &issuing_ca()).expect("cert");
    let err = build(&pki.issuing_der, no_eku.der(), pki.signer.clone(), OcspConfig::default()).unwrap_err();
    assert!(matches!(err, Error::Certificate { which: "OCSP signer", .. }), "{err}");
    assert!(err.to_string().contains("OCSPSigning"), "{err}");

    let root_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(data("root.key")).expect("key")).expect("key");
    let root =
        rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(data("root.pem")).expect("pem"), root_key)
            .expect("root");
    let by_root = signer_params(true, true).signed_by(&spki, &root).expect("cert");
    let err = build(&pki.issuing_der, by_root.der(), pki.signer.clone(), OcspConfig::default()).unwrap_err();
    assert!(err.to_string().contains("not issued by the issuing CA"), "{err}");

    let other: hsm_sim::KeyHandle = "ocsp/other".parse().expect("handle");
    pki.hsm.generate(&other, KeyType::P256, KeyPurpose::OcspSigning).expect("key");
    let other = pki.hsm.signer(&other).expect("signer");
    let err = build(&pki.issuing_der, &pki.signer_der, other, OcspConfig::default()).unwrap_err();
    assert!(matches!(err, Error::SignerKeyMismatch { .. }), "{err}");

    let p384: hsm_sim::KeyHandle = "ocsp/p384".parse().expect("handle");
    pki.hsm.generate(&p384, KeyType::P384, KeyPurpose::OcspSigning).expect("key");
    let p384 = pki.hsm.signer(&p384).expect("signer");
    let spki384 = rcgen::SubjectPublicKeyInfo::from_der(p384.public_key_spki()).expect("spki");
    let cert384 = signer_params(true, true).signed_by(&spki384, &issuing_ca()).expect("cert");
    let err = build(&pki.issuing_der, cert384.der(), p384, OcspConfig::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedSignatureScheme { .. }), "{err}");

    let err =
        build(b"not a certificate", &pki.signer_der, pki.signer.clone(), OcspConfig::default()).unwrap_err();
    assert!(matches!(err, Error::Certificate { which: "issuing CA", .. }), "{err}");

    let bad = OcspConfig { refresh_margin: Duration::hours(30), ..OcspConfig::default() };
    let err = build(&pki.issuing_der, &pki.signer_der, pki.signer.clone(), bad).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

#[test]
fn openssl_request_vectors_round_trip_and_are_answered() {
    let pki = Pki::new();
    let r = pki.responder();
    let read = |name: &str| std::fs::read(data(name)).expect(name);

    let sha1 = read("req-sha1-1001.der");
    let req = OcspRequest::from_der(&sha1).expect("decodes");
    assert_eq!(req.to_der().expect("encodes"), sha1, "byte for byte");
    let id = &req.tbs_request.request_list[0].req_cert;
    assert_eq!(id.hash_algorithm.oid, OID_SHA1);
    assert_eq!(id.serial_number.as_bytes(), GOOD);
    assert!(req.tbs_request.request_extensions.is_none());
    assert!(matches!(
        basic_of(&r.respond(&sha1, t0())).tbs_response_data.responses[0].cert_status,
        CertStatus::Good(_)
    ));

    let nonced = read("req-sha256-nonce-1001.der");
    let req = OcspRequest::from_der(&nonced).expect("decodes");
    assert_eq!(req.to_der().expect("encodes"), nonced, "byte for byte");
    assert_eq!(req.tbs_request.request_list[0].req_cert.hash_algorithm.oid, OID_SHA256);
    let sent = req.tbs_request.request_extensions.expect("extensions");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].extn_id, OID_NONCE);
    assert_eq!(sent[0].extn_value.as_bytes().len(), 18, "OCTET STRING of 16 octets, wrapped");
    let basic = basic_of(&r.respond(&nonced, t0()));
    let echoed = basic.tbs_response_data.response_extensions.expect("nonce echoed");
    assert_eq!(echoed[0].extn_value, sent[0].extn_value);

    let three = read("req-sha1-three.der");
    let req = OcspRequest::from_der(&three).expect("decodes");
    assert_eq!(req.to_der().expect("encodes"), three, "byte for byte");
    let basic = basic_of(&r.respond(&three, t0()));
    let kinds: Vec<&str> = basic
        .tbs_response_data
        .responses
        .iter()
        .map(|s| match s.cert_status {
            CertStatus::Good(_) => "good",
            CertStatus::Revoked(_) => "revoked",
            CertStatus::Unknown(_) => "unknown",
        })
        .collect();
    assert_eq!(kinds, ["good", "revoked", "unknown"]);
}

#[test]
fn the_signer_certificate_is_the_one_given() {
    let pki = Pki::new();
    let r = pki.responder();
    assert_eq!(r.signer_certificate_der(), pki.signer_der.as_slice());
    let cert = Certificate::from_der(&r.signer_certificate_der()).expect("cert");
    let issuing = Certificate::from_der(&pki.issuing_der).expect("cert");
    assert_eq!(cert.tbs_certificate.issuer, issuing.tbs_certificate.subject);
}

/// A signer certificate for the fixture's OCSP key valid from `from` to `to`, with `serial`.
fn signer_valid(pki: &Pki, from: (i32, u8, u8), to: (i32, u8, u8), serial: &[u8]) -> Vec<u8> {
    let mut params = signer_params(true, true);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    let spki = rcgen::SubjectPublicKeyInfo::from_der(pki.signer.public_key_spki()).expect("spki");
    params.signed_by(&spki, &issuing_ca()).expect("sign signer").der().to_vec()
}

#[test]
fn no_response_is_signed_outside_the_signer_certificates_validity() {
    let pki = Pki::new();
    // Valid during 2030 only (t0 is 2030-01-01).
    let cert = signer_valid(&pki, (2030, 1, 1), (2030, 12, 31), &[0x51]);
    let r = OcspResponder::new(
        pki.reader(),
        &pki.issuing_der,
        &cert,
        pki.signer.clone(),
        OcspConfig::default(),
        Arc::new(SystemClock),
    )
    .expect("responder");
    let req = pki.request(&[GOOD], OID_SHA1, None);
    assert_eq!(r.respond_detailed(&req, t0() + Duration::days(10)).status, ResponseStatus::Successful);
    let end = Utc.with_ymd_and_hms(2030, 12, 31, 0, 0, 0).single().expect("time");
    // The day before its end: signed, and nextUpdate does not pass its notAfter.
    let last = r.respond_detailed(&pki.request(&[GOOD_2], OID_SHA1, None), end - Duration::hours(6));
    let basic = basic_of(&last.der);
    let next = basic.tbs_response_data.responses[0].next_update.as_ref().expect("nextUpdate");
    assert_eq!(secs(next), end.timestamp(), "nextUpdate is cut at the signer's notAfter");
    for at in [end, end + Duration::days(30), t0() - Duration::seconds(1)] {
        let reply = r.respond_detailed(&req, at);
        assert_eq!(reply.status, ResponseStatus::TryLater, "at {at}");
        assert!(!reply.from_cache, "a cached response is not served at {at} either");
        assert_eq!(decode(&reply.der).basic, None);
    }
}

#[test]
fn a_new_signer_replaces_the_old_one_and_its_cached_responses() {
    let pki = Pki::new();
    let r = pki.responder();
    let req = pki.request(&[GOOD], OID_SHA1, None);
    let first = r.respond_detailed(&req, t0());
    assert!(r.respond_detailed(&req, t0()).from_cache);

    // The same key certified again (a new key is the CA's business; the responder takes any
    // signer that checks out).
    let new_cert = signer_valid(&pki, (2029, 1, 1), (2031, 1, 1), &[0x52]);
    r.replace_signer(&new_cert, pki.signer.clone()).expect("replace");
    assert_eq!(r.signer_certificate_der(), new_cert);
    assert_eq!(r.cached_responses(), 0, "the old signer's responses are dropped");
    let after = r.respond_detailed(&req, t0());
    assert!(!after.from_cache);
    assert_ne!(after.der, first.der);
    let basic = basic_of(&after.der);
    assert_eq!(basic.certs.as_ref().expect("certs")[0].to_der().expect("der"), new_cert);

    // A replacement that does not check out is refused and changes nothing.
    let other = pki.hsm.signer(&"ocsp/signer".parse().expect("handle")).expect("signer");
    let wrong_issuer = {
        let mut params = signer_params(true, true);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x53]));
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("self-signed").der().to_vec()
    };
    assert!(r.replace_signer(&wrong_issuer, other).is_err());
    assert!(r.replace_signer(b"garbage", pki.signer.clone()).is_err());
    assert_eq!(r.signer_certificate_der(), new_cert);
}
