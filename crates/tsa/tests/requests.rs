//! Request checks, the on-disk vectors, and what the TSA refuses to be built from.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use der::asn1::{Any, OctetString};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use hsm_sim::{KeyCustody, KeyPurpose, KeyType};
use tsa::asn1::{FailureBit, PkiFailureInfo, PkiStatus, TimeStampReq, TimeStampResp};
use tsa::{Error, TimestampAuthority, TsaConfig, TsaStore, DEFAULT_POLICY};
use x509_cert::ext::Extension;
use x509_cert::spki::AlgorithmIdentifierOwned;

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const MD5: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.5");

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(format!("tests/data/{name}")).unwrap()
}

fn with_policy(policy: ObjectIdentifier, digest: &[u8]) -> Vec<u8> {
    let mut req = TimeStampReq::from_der(&query_for(SHA256, digest, Some(1), false)).unwrap();
    req.req_policy = Some(policy);
    req.to_der().unwrap()
}

#[test]
fn openssl_query_vectors_decode_reencode_and_get_their_answers() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (_db, tsa) = fx.tsa(TsaConfig::default());
    let hello = vector("hello.txt");

    let sha1 = vector("sha1.tsq");
    let req = TimeStampReq::from_der(&sha1).unwrap();
    assert_eq!(req.to_der().unwrap(), sha1);
    assert_eq!(req.message_imprint.hash_algorithm.oid, SHA1);
    assert!(req.nonce.is_none() && !req.cert_req && req.req_policy.is_none());
    assert_eq!(refusal(&tsa.respond(&sha1)), PkiFailureInfo::of(FailureBit::BadAlg));

    let policy = vector("policy.tsq");
    let req = TimeStampReq::from_der(&policy).unwrap();
    assert_eq!(req.to_der().unwrap(), policy);
    assert_eq!(req.req_policy.unwrap().to_string(), "1.2.3.4.5");
    assert_eq!(req.message_imprint.hashed_message.as_bytes().len(), 64);
    assert_eq!(refusal(&tsa.respond(&policy)), PkiFailureInfo::of(FailureBit::UnacceptedPolicy));

    let good = vector("sha256-cert.tsq");
    let req = TimeStampReq::from_der(&good).unwrap();
    assert_eq!(req.to_der().unwrap(), good);
    assert!(req.cert_req);
    assert_eq!(req.message_imprint.hashed_message.as_bytes(), sha256(&hello).as_slice());
    let resp = decode_resp(&tsa.respond(&good));
    assert_eq!(resp.status.status, PkiStatus::Granted);
    let tst = tst_info(&resp);
    assert_eq!(tst.nonce, req.nonce);
    assert_eq!(tst.message_imprint, req.message_imprint);
    assert_eq!(tst.policy, DEFAULT_POLICY);
}

#[test]
fn foreign_response_vector_decodes_and_reencodes() {
    let der = vector("foreign-tsa.tsr");
    let resp = TimeStampResp::from_der(&der).unwrap();
    assert_eq!(resp.to_der().unwrap(), der, "byte for byte");
    assert_eq!(resp.status.status, PkiStatus::Granted);
    let tst = tst_info(&resp);
    assert_eq!(tst.serial_number.as_bytes(), [6]);
    assert_eq!(tst.policy, DEFAULT_POLICY);
    let acc = tst.accuracy.unwrap();
    assert_eq!((acc.seconds, acc.millis, acc.micros), (Some(1), None, None));
    assert!(!tst.ordering);
    // genTime with OpenSSL's clock_precision_digits = 3: a fraction in milliseconds.
    let nanos = chrono::Timelike::nanosecond(&tst.gen_time.to_datetime());
    assert_eq!(nanos % 1_000_000, 0);
    let query = TimeStampReq::from_der(&vector("sha256-cert.tsq")).unwrap();
    assert_eq!(tst.nonce, query.nonce);
    assert_eq!(tst.message_imprint, query.message_imprint);
}

#[test]
fn request_checks_map_to_their_failure_info() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let db = cerdb::CertDb::open(dir.path().join("db")).unwrap();
    let accepted = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.2");
    let config = TsaConfig { accepted_policies: vec![accepted], ..TsaConfig::default() };
    let tsa = TimestampAuthority::new(
        fx.signer.clone(),
        fx.tsa_der.clone(),
        vec![],
        TsaStore::open(&db).unwrap(),
        config,
    )
    .unwrap();
    let d = sha256(b"doc");

    // Policies: none → default; the default and an accepted one → that one; another → refused.
    for (policy, want) in [(DEFAULT_POLICY, DEFAULT_POLICY), (accepted, accepted)] {
        let tst = tst_info(&decode_resp(&tsa.respond(&with_policy(policy, &d))));
        assert_eq!(tst.policy, want);
    }
    let other = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.3");
    assert_eq!(
        refusal(&tsa.respond(&with_policy(other, &d))),
        PkiFailureInfo::of(FailureBit::UnacceptedPolicy)
    );

    // Any extension is refused.
    let mut req = TimeStampReq::from_der(&query_for(SHA256, &d, None, false)).unwrap();
    req.extensions = Some(vec![Extension {
        extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.9"),
        critical: false,
        extn_value: OctetString::new(vec![5, 0]).unwrap(),
    }]);
    assert_eq!(
        refusal(&tsa.respond(&req.to_der().unwrap())),
        PkiFailureInfo::of(FailureBit::UnacceptedExtension)
    );

    // Digest lengths are checked per algorithm.
    assert_eq!(
        refusal(&tsa.respond(&query_for(SHA256, &[1; 31], None, false))),
        PkiFailureInfo::of(FailureBit::BadDataFormat)
    );
    assert_eq!(
        refusal(&tsa.respond(&query_for(SHA384, &[1; 32], None, false))),
        PkiFailureInfo::of(FailureBit::BadDataFormat)
    );
    assert_eq!(
        decode_resp(&tsa.respond(&query_for(SHA384, &[1; 48], None, false))).status.status,
        PkiStatus::Granted
    );
    // Unknown algorithms and SHA-1 are badAlg.
    assert_eq!(
        refusal(&tsa.respond(&query_for(MD5, &[1; 16], None, false))),
        PkiFailureInfo::of(FailureBit::BadAlg)
    );
    assert_eq!(
        refusal(&tsa.respond(&query_for(SHA1, &[1; 20], None, false))),
        PkiFailureInfo::of(FailureBit::BadAlg)
    );

    // NULL parameters are accepted (RFC 5754 §2), others are badAlg.
    let mut req = TimeStampReq::from_der(&query_for(SHA256, &d, None, false)).unwrap();
    req.message_imprint.hash_algorithm.parameters = Some(Any::null());
    let granted = decode_resp(&tsa.respond(&req.to_der().unwrap()));
    assert_eq!(tst_info(&granted).message_imprint, req.message_imprint, "echoed as sent");
    req.message_imprint.hash_algorithm =
        AlgorithmIdentifierOwned { oid: SHA256, parameters: Some(Any::encode_from(&5u8).unwrap()) };
    assert_eq!(refusal(&tsa.respond(&req.to_der().unwrap())), PkiFailureInfo::of(FailureBit::BadAlg));
}

#[test]
fn sha1_can_be_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (_db, tsa) = fx.tsa(TsaConfig { allow_sha1: true, ..TsaConfig::default() });
    let resp = decode_resp(&tsa.respond(&vector("sha1.tsq")));
    assert_eq!(resp.status.status, PkiStatus::Granted);
    assert_eq!(tst_info(&resp).message_imprint.hash_algorithm.oid, SHA1);
}

#[test]
fn the_tsa_is_only_built_from_a_usable_key_certificate_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, true);
    let db = cerdb::CertDb::open(dir.path().join("db")).unwrap();
    let build = |signer: std::sync::Arc<dyn hsm_sim::Signer>,
                 cert: Vec<u8>,
                 chain: Vec<Vec<u8>>,
                 config: TsaConfig| {
        TimestampAuthority::new(signer, cert, chain, TsaStore::open(&db).unwrap(), config)
    };
    build(fx.signer.clone(), fx.tsa_der.clone(), fx.chain_der.clone(), TsaConfig::default()).unwrap();

    // A certificate for another key.
    let other: hsm_sim::KeyHandle = "tsa/other".parse().unwrap();
    fx.hsm.generate(&other, KeyType::P256, KeyPurpose::TsaSigning).unwrap();
    let other_signer = fx.hsm.signer(&other).unwrap();
    let r = build(other_signer, fx.tsa_der.clone(), fx.chain_der.clone(), TsaConfig::default());
    assert!(matches!(r, Err(Error::TsaCertificate(_))), "{r:?}");

    // A certificate that is not a TSA certificate: the intermediate CA's.
    let r = build(fx.signer.clone(), fx.chain_der[0].clone(), vec![], TsaConfig::default());
    assert!(matches!(r, Err(Error::TsaCertificate(_))), "{r:?}");

    // A chain that does not issue the TSA certificate (the root in place of the intermediate).
    let r = build(fx.signer.clone(), fx.tsa_der.clone(), vec![fx.root_der.clone()], TsaConfig::default());
    assert!(matches!(r, Err(Error::Certificate(_))), "{r:?}");

    // Unusable configurations.
    for config in [
        TsaConfig { accuracy: std::time::Duration::ZERO, ..TsaConfig::default() },
        TsaConfig { accuracy: std::time::Duration::from_nanos(10), ..TsaConfig::default() },
        TsaConfig { serial_block: 0, ..TsaConfig::default() },
        // A policy too long for the token record (123 characters in dotted form).
        TsaConfig {
            accepted_policies: vec![format!("1.3{}", ".100".repeat(30)).parse().unwrap()],
            ..TsaConfig::default()
        },
    ] {
        let r = build(fx.signer.clone(), fx.tsa_der.clone(), fx.chain_der.clone(), config);
        assert!(matches!(r, Err(Error::Config(_))), "{r:?}");
    }

    // Ed25519: OpenSSL's `ts -verify` cannot check such tokens, so the TSA refuses the key.
    let ed: hsm_sim::KeyHandle = "tsa/ed".parse().unwrap();
    let info = fx.hsm.generate(&ed, KeyType::Ed25519, KeyPurpose::TsaSigning).unwrap();
    let root_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(fx.path("root.key")).unwrap()).unwrap();
    let root_issuer = rcgen::Issuer::new(ca_params("Test Root CA", None, ROOT_DAYS), root_key);
    let ed_cert = tsa_params("Ed TSA", (-1, 30))
        .signed_by(&rcgen::SubjectPublicKeyInfo::from_der(&info.spki).unwrap(), &root_issuer)
        .unwrap();
    let r = build(fx.hsm.signer(&ed).unwrap(), ed_cert.der().to_vec(), vec![], TsaConfig::default());
    assert!(matches!(r, Err(Error::Config(_))), "{r:?}");
}

/// A token made in process for a digest is the token a query for that digest (certificates
/// asked for, no nonce) is granted, but for its serial and time; the serial returned is the
/// token's; a batch answers in order.
#[test]
fn in_process_stamps_are_the_tokens_a_query_for_the_digest_gets() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (_db, tsa) = fx.tsa(TsaConfig::default());
    // The tokens made in process, in a granted response for the helpers that read responses.
    let granted = decode_resp(&tsa.respond(&query_for(SHA256, &[0; 32], None, true))).status;
    let as_resp = |token: &[u8]| TimeStampResp {
        status: granted.clone(),
        time_stamp_token: Some(cms::content_info::ContentInfo::from_der(token).unwrap()),
    };
    let d: [u8; 32] = sha256(b"signature value").try_into().unwrap();
    let (token, serial) = tsa.stamp_sha256(&d).unwrap();
    let queried = decode_resp(&tsa.respond(&query_for(SHA256, &d, None, true)));
    let (mine, theirs) = (tst_info(&as_resp(&token)), tst_info(&queried));
    assert_eq!(mine.serial_number, positive_int(serial.value()));
    assert_eq!(positive_int(serial.value() + 1), theirs.serial_number, "the next serial");
    assert_eq!(mine.message_imprint, theirs.message_imprint);
    assert_eq!(mine.message_imprint.hashed_message.as_bytes(), d);
    assert_eq!((mine.policy, mine.nonce, mine.accuracy), (theirs.policy, None, theirs.accuracy));
    let certs = |der: &[u8]| {
        let ci = cms::content_info::ContentInfo::from_der(der).unwrap();
        ci.content.decode_as::<cms::signed_data::SignedData>().unwrap().certificates
    };
    assert!(certs(&token).is_some(), "the TSA's certificate is in the token");
    assert_eq!(certs(&token), certs(&token_der(&queried)));

    let digests = [[1u8; 32], [2; 32], [3; 32]];
    let batch: Vec<_> = tsa.stamp_sha256_many(&digests).into_iter().map(Result::unwrap).collect();
    for (i, (token, serial)) in batch.iter().enumerate() {
        let tst = tst_info(&as_resp(token));
        assert_eq!(tst.message_imprint.hashed_message.as_bytes(), digests[i]);
        assert_eq!(tst.serial_number, positive_int(serial.value()));
    }
    assert!(batch.windows(2).all(|w| w[0].1 < w[1].1), "serials in the digests' order");
}

/// A token issued without waiting is the token of its serial, and counted as granted only once
/// its record is waited for, after which the auditors' verifier finds that record: the caller
/// may build the token into a message first.
#[test]
fn an_issued_token_is_counted_and_on_record_once_its_record_is_waited_for_on_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let d: [u8; 32] = sha256(b"another signature value").try_into().unwrap();
    let before = tsa.counts();
    let issued = tsa.issue_sha256(&d).unwrap();
    assert_eq!(tsa.counts(), before, "counted before its record is on disk");
    let granted = decode_resp(&tsa.respond(&query_for(SHA256, &[0; 32], None, true))).status;
    let resp = TimeStampResp {
        status: granted,
        time_stamp_token: Some(cms::content_info::ContentInfo::from_der(&issued.token).unwrap()),
    };
    let tst = tst_info(&resp);
    assert_eq!(tst.serial_number, positive_int(issued.serial.value()));
    assert_eq!(tst.message_imprint.hashed_message.as_bytes(), d);
    let (token, serial) = (issued.token, issued.serial);
    // A server makes its message on one thread and waits for the record on another.
    let on_disk = issued.on_disk;
    std::thread::spawn(move || on_disk.wait()).join().unwrap().unwrap();
    assert_eq!(tsa.counts(), (before.0 + 2, before.1), "this one and the query's, granted once on disk");
    let verified = fx.verifier(&db).verify(&token, tsa::Timestamped::Digest(&d)).unwrap();
    assert_eq!(verified.serial, serial);
}
