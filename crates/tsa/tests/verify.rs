//! Auditors' verification, and the token's structure (ESSCertIDv2, signed attributes).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use cms::signed_data::SignedData;
use common::*;
use der::{Decode, Encode};
use hsm_sim::KeyType;
use rcgen::KeyPair;
use tsa::asn1::SigningCertificateV2;
use tsa::{verify, Check, Error, Timestamped, TsaConfig, TsaStore, DEFAULT_POLICY};

fn failed_check(r: Result<tsa::VerifiedToken, Error>) -> Check {
    match r {
        Err(Error::Verification { check, .. }) => check,
        other => panic!("expected a failed check, got {other:?}"),
    }
}

#[test]
fn verify_accepts_a_real_token_and_names_the_first_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, true);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let verifier = fx.verifier(&db);
    let data = b"quarterly statement, signed 2026-11-22";
    let before = Utc::now();
    let resp = stamp(&tsa, data, true);

    let ok = verifier.verify(&resp, Timestamped::Data(data)).unwrap();
    assert_eq!(ok.policy, DEFAULT_POLICY);
    assert_eq!(ok.serial.value(), 1);
    assert!(ok.tsa_name.contains("CN=Test TSA"), "{}", ok.tsa_name);
    assert_eq!(ok.hash_algorithm, "SHA-256");
    assert!(ok.gen_time >= before - Duration::seconds(1) && ok.gen_time <= Utc::now(), "{}", ok.gen_time);
    // The bare token verifies too, and so does the digest instead of the data.
    let token = token_der(&decode_resp(&resp));
    assert_eq!(verifier.verify(&token, Timestamped::Data(data)).unwrap(), ok);
    assert_eq!(verifier.verify(&resp, Timestamped::Digest(&sha256(data))).unwrap(), ok);

    // Other data.
    assert_eq!(failed_check(verifier.verify(&resp, Timestamped::Data(b"another statement"))), Check::Imprint);
    assert_eq!(failed_check(verifier.verify(&resp, Timestamped::Digest(&[0; 32]))), Check::Imprint);

    // One byte altered inside the TSTInfo: the message digest no longer matches.
    let tst_der = tst_info(&decode_resp(&resp)).to_der().unwrap();
    let at = token.windows(tst_der.len()).position(|w| w == tst_der.as_slice()).unwrap() + tst_der.len() - 1;
    let mut altered = token.clone();
    altered[at] ^= 0x01;
    assert_eq!(failed_check(verifier.verify(&altered, Timestamped::Data(data))), Check::Signature);

    // Any one byte altered anywhere: refused, and never with a panic.
    for i in 0..token.len() {
        let mut t = token.clone();
        t[i] = t[i].wrapping_add(0x55);
        let r = verifier.verify(&t, Timestamped::Data(data));
        assert!(matches!(r, Err(Error::Verification { .. })), "byte {i} altered: {r:?}");
    }

    // A token whose serial is not in the record: checked against another TSA's empty record.
    let other_db = cerdb::CertDb::open(dir.path().join("other-db")).unwrap();
    let other_store = TsaStore::open(&other_db).unwrap();
    let r = verify(&resp, Timestamped::Data(data), &fx.root_der, &[], &other_store);
    assert_eq!(failed_check(r), Check::Record);

    // A token made with the same key and certificate but recorded elsewhere: its serial exists
    // here (1), its hash does not.
    let other = tsa::TimestampAuthority::new(
        fx.signer.clone(),
        fx.tsa_der.clone(),
        fx.chain_der.clone(),
        other_store,
        TsaConfig::default(),
    )
    .unwrap();
    let impostor = stamp(&other, data, true);
    assert_eq!(tst_info(&decode_resp(&impostor)).serial_number, tst_info(&decode_resp(&resp)).serial_number);
    assert_eq!(failed_check(verifier.verify(&impostor, Timestamped::Data(data))), Check::Record);

    // Garbage is a format failure.
    assert_eq!(
        failed_check(verifier.verify(b"\x30\x03\x02\x01\x00", Timestamped::Data(data))),
        Check::Format
    );
}

#[test]
fn a_token_from_another_tsa_fails_at_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (db, _tsa) = fx.tsa(TsaConfig::default());
    let verifier = fx.verifier(&db);
    let foreign = std::fs::read("tests/data/foreign-tsa.tsr").unwrap();
    let hello = std::fs::read("tests/data/hello.txt").unwrap();
    let r = verifier.verify(&foreign, Timestamped::Data(&hello));
    assert_eq!(failed_check(r), Check::Chain);
    // Trusting its own certificate as the root, the foreign token passes every check but the
    // record: the check order is what the error names.
    let foreign_cert = pem_to_der("tests/data/foreign-tsa.pem");
    let store = TsaStore::open(&db).unwrap();
    let r = verify(&foreign, Timestamped::Data(&hello), &foreign_cert, &[], &store);
    assert_eq!(failed_check(r), Check::Record);
}

fn pem_to_der(pem_path: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.der");
    run_ok("openssl", &["x509", "-outform", "DER", "-in", pem_path, "-out", path.to_str().unwrap()]);
    std::fs::read(path).unwrap()
}

#[test]
fn tokens_without_certificates_need_the_tsa_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::Rsa2048, true);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let data = b"no certificates in here";
    let resp = stamp(&tsa, data, false);
    let sd: SignedData = decode_resp(&resp).time_stamp_token.unwrap().content.decode_as().unwrap();
    assert!(sd.certificates.is_none());
    fx.verifier(&db).verify(&resp, Timestamped::Data(data)).unwrap();
    let store = TsaStore::open(&db).unwrap();
    let bare = verify(&resp, Timestamped::Data(data), &fx.root_der, &[], &store);
    assert_eq!(failed_check(bare), Check::Signature);
    // With the TSA certificate but not the intermediate, the chain is incomplete.
    let partial =
        verify(&resp, Timestamped::Data(data), &fx.root_der, std::slice::from_ref(&fx.tsa_der), &store);
    assert_eq!(failed_check(partial), Check::Chain);
}

#[test]
fn the_chain_is_checked_at_gen_time() {
    let dir = tempfile::tempdir().unwrap();
    // The TSA certificate was valid from 20 to 5 days ago; the TSA's clock says 10 days ago.
    let fx = Fixture::create_with(dir.path(), KeyType::P256, Layout { intermediate: None, tsa: (-20, -5) });
    let (db, tsa) = fx.tsa(fixed_config(Utc::now() - Duration::days(10)));
    let data = b"signed while the certificate was valid";
    let resp = stamp(&tsa, data, true);
    let ok = fx.verifier(&db).verify(&resp, Timestamped::Data(data)).unwrap();
    assert!(ok.gen_time < Utc::now() - Duration::days(9));

    // The same root key and name, but a root certificate that starts after genTime.
    let root_key = KeyPair::from_pem(&std::fs::read_to_string(fx.path("root.key")).unwrap()).unwrap();
    let late_root = ca_params("Test Root CA", None, (-8, 3650)).self_signed(&root_key).unwrap();
    let store = TsaStore::open(&db).unwrap();
    let r = verify(&resp, Timestamped::Data(data), late_root.der(), &[], &store);
    assert_eq!(failed_check(r), Check::Chain);

    // At the real now the certificate has expired: the TSA refuses (systemFailure), and issues
    // nothing that nobody could validate.
    let now_tsa = tsa::TimestampAuthority::new(
        fx.signer.clone(),
        fx.tsa_der.clone(),
        vec![],
        TsaStore::open(&db).unwrap(),
        TsaConfig::default(),
    )
    .unwrap();
    let der = now_tsa.respond(&query_for(SHA256, &sha256(data), None, false));
    assert!(refusal(&der).contains(tsa::asn1::FailureBit::SystemFailure));
}

#[test]
fn a_root_with_the_same_name_but_another_key_is_not_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, true);
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let resp = stamp(&tsa, b"x", true);
    fx.verifier(&db).verify(&resp, Timestamped::Data(b"x")).unwrap();
    let store = TsaStore::open(&db).unwrap();
    let other_root =
        ca_params("Test Root CA", None, ROOT_DAYS).self_signed(&KeyPair::generate().unwrap()).unwrap();
    let r = verify(&resp, Timestamped::Data(b"x"), other_root.der(), &[], &store);
    assert_eq!(failed_check(r), Check::Chain);
}

#[test]
fn the_tsa_refuses_while_its_intermediate_is_not_valid() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create_with(
        dir.path(),
        KeyType::P256,
        Layout { intermediate: Some((-30, -1)), tsa: (-1, 30) },
    );
    let (_db, tsa) = fx.tsa(TsaConfig::default());
    let der = tsa.respond(&query_for(SHA256, &sha256(b"x"), None, false));
    assert!(refusal(&der).contains(tsa::asn1::FailureBit::SystemFailure));
}

#[test]
fn ess_cert_id_v2_is_the_sha256_of_the_tsa_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, true);
    let (_db, tsa) = fx.tsa(TsaConfig::default());
    let resp = decode_resp(&stamp(&tsa, b"ess", true));
    let token = resp.time_stamp_token.unwrap();
    assert_eq!(token.content_type.to_string(), "1.2.840.113549.1.7.2");
    let sd: SignedData = token.content.decode_as().unwrap();
    assert_eq!(sd.version, cms::content_info::CmsVersion::V3);
    assert_eq!(sd.encap_content_info.econtent_type.to_string(), "1.2.840.113549.1.9.16.1.4");
    let [si] = sd.signer_infos.0.as_slice() else { panic!("one signer info") };
    assert_eq!(si.version, cms::content_info::CmsVersion::V1);
    assert_eq!(si.digest_alg.oid, SHA256);
    let attrs = si.signed_attrs.as_ref().unwrap();
    let oids: Vec<String> = attrs.iter().map(|a| a.oid.to_string()).collect();
    for want in ["1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4", "1.2.840.113549.1.9.16.2.47"] {
        assert!(oids.contains(&want.to_string()), "{want} missing from {oids:?}");
    }
    let attr = attrs.iter().find(|a| a.oid.to_string() == "1.2.840.113549.1.9.16.2.47").unwrap();
    let scv2: SigningCertificateV2 = attr.values.get(0).unwrap().decode_as().unwrap();
    assert_eq!(scv2.certs.len(), 1);
    let id = &scv2.certs[0];
    assert!(id.hash_algorithm.is_none(), "SHA-256 is the DEFAULT and DER omits it");
    assert_eq!(id.cert_hash.as_bytes(), sha256(&fx.tsa_der).as_slice());
    let tsa_cert = x509_cert::Certificate::from_der(&fx.tsa_der).unwrap();
    let is = id.issuer_serial.as_ref().unwrap();
    assert_eq!(is.serial_number, tsa_cert.tbs_certificate.serial_number);
    assert_eq!(
        is.issuer,
        vec![x509_cert::ext::pkix::name::GeneralName::DirectoryName(tsa_cert.tbs_certificate.issuer.clone())]
    );
    // The message-digest attribute is the SHA-256 of the encapsulated TSTInfo.
    let md = attrs.iter().find(|a| a.oid.to_string() == "1.2.840.113549.1.9.4").unwrap();
    let md: der::asn1::OctetString = md.values.get(0).unwrap().decode_as().unwrap();
    let econtent: der::asn1::OctetString = sd.encap_content_info.econtent.unwrap().decode_as().unwrap();
    assert_eq!(md.as_bytes(), sha256(econtent.as_bytes()).as_slice());
}

#[test]
fn gen_time_precision_follows_the_declared_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let at = {
        use chrono::Timelike;
        Utc::now().with_nanosecond(987_654_321).unwrap()
    };
    let db = cerdb::CertDb::open(dir.path().join("db")).unwrap();
    let cases = [
        (std::time::Duration::from_millis(10), 980_000_000, (None, Some(10), None)),
        (std::time::Duration::from_secs(1), 0, (Some(1), None, None)),
        (std::time::Duration::from_micros(1500), 987_600_000, (None, Some(1), Some(500))),
        (std::time::Duration::from_micros(1), 987_654_000, (None, None, Some(1))),
        (std::time::Duration::from_millis(100), 900_000_000, (None, Some(100), None)),
    ];
    for (accuracy, nanos, (s, ms, us)) in cases {
        let config = TsaConfig { accuracy, ..fixed_config(at) };
        let store = TsaStore::open(&db).unwrap();
        let tsa = tsa::TimestampAuthority::new(fx.signer.clone(), fx.tsa_der.clone(), vec![], store, config)
            .unwrap();
        let tst = tst_info(&decode_resp(&stamp(&tsa, b"t", false)));
        let gen = tst.gen_time.to_datetime();
        assert_eq!(gen.timestamp(), at.timestamp());
        assert_eq!(chrono::Timelike::nanosecond(&gen), nanos, "{accuracy:?}");
        let acc = tst.accuracy.unwrap();
        assert_eq!((acc.seconds, acc.millis, acc.micros), (s, ms, us));
        assert!(!tst.ordering);
    }
}

#[test]
fn verifier_refuses_unusable_roots() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (db, _tsa) = fx.tsa(TsaConfig::default());
    let store = Arc::new(TsaStore::open(&db).unwrap());
    assert!(matches!(tsa::Verifier::new(b"not a cert".to_vec(), vec![], store), Err(Error::Certificate(_))));
}

#[test]
fn a_replaced_signer_signs_the_next_tokens_and_a_mismatched_one_is_refused() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (fx, next) =
        (Fixture::create(d1.path(), KeyType::P256, false), Fixture::create(d2.path(), KeyType::P256, false));
    let (_db, tsa) = fx.tsa(TsaConfig::default());
    let ess_hash = |tsa: &tsa::TimestampAuthority, data: &[u8]| {
        let token = decode_resp(&stamp(tsa, data, true)).time_stamp_token.unwrap();
        let sd: SignedData = token.content.decode_as().unwrap();
        let attrs = sd.signer_infos.0.as_slice()[0].signed_attrs.clone().unwrap();
        let attr = attrs.iter().find(|a| a.oid.to_string() == "1.2.840.113549.1.9.16.2.47").unwrap();
        let scv2: SigningCertificateV2 = attr.values.get(0).unwrap().decode_as().unwrap();
        scv2.certs[0].cert_hash.as_bytes().to_vec()
    };
    assert_eq!(ess_hash(&tsa, b"before"), sha256(&fx.tsa_der).to_vec());
    // A certificate that is not for the key: refused, and the TSA signs as before.
    let e = tsa.replace_signer(fx.signer.clone(), next.tsa_der.clone(), vec![]).unwrap_err();
    assert!(e.to_string().contains("public key differs"), "{e}");
    assert_eq!(ess_hash(&tsa, b"still"), sha256(&fx.tsa_der).to_vec());
    // The new key with its certificate: every token from now on.
    tsa.replace_signer(next.signer.clone(), next.tsa_der.clone(), next.chain_der.clone()).unwrap();
    assert_eq!(tsa.certificates(), vec![next.tsa_der.clone()]);
    assert_eq!(ess_hash(&tsa, b"after"), sha256(&next.tsa_der).to_vec());
}
