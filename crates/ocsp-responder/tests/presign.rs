//! Pre-signing: one file per certificate, accepted by `openssl ocsp -respin`, refreshed only when
//! needed, with an index that maps RFC 5019 GET paths to files.

mod common;

use actix_web::http::StatusCode;
use actix_web::{test as atest, App};
use base64::Engine as _;
use cerdb::RevocationReason;
use chrono::{Duration, Utc};
use common::*;
use ocsp_responder::{issued_serials, OcspResponder, PresignReport, PRESIGN_INDEX_FILE};

fn respin(pki: &Pki, file: &std::path::Path, leaf: &[u8]) -> String {
    openssl_text(&[
        "ocsp",
        "-respin",
        file.to_str().expect("path"),
        "-issuer",
        data("issuing.pem").to_str().expect("path"),
        "-cert",
        pki.leaf_pem(leaf).to_str().expect("path"),
        "-CAfile",
        data("root.pem").to_str().expect("path"),
    ])
}

#[test]
fn presigned_files_are_accepted_by_openssl_and_refreshed_only_when_needed() {
    let pki = Pki::new();
    let r = pki.responder();
    let dir = pki.path("presigned");
    let now = Utc::now();
    let serials = [serial(GOOD), serial(REVOKED), serial(NEVER_ISSUED)];

    let report = r.presign(&serials, &dir, now).expect("presign");
    assert_eq!(
        report,
        PresignReport {
            written: vec![serial(GOOD), serial(REVOKED)],
            unchanged: vec![],
            not_issued: vec![serial(NEVER_ISSUED)],
        }
    );
    let good_file = dir.join("1001.der");
    let revoked_file = dir.join("1002.der");
    assert_eq!(OcspResponder::presign_file_name(&serial(GOOD)), "1001.der");
    assert!(!dir.join("9999.der").exists());

    let text = respin(&pki, &good_file, GOOD);
    assert!(text.contains("Response verify OK") && text.contains(": good"), "{text}");
    let text = respin(&pki, &revoked_file, REVOKED);
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(text.contains(": revoked") && text.contains("Reason: keyCompromise"), "{text}");

    // A re-run with nothing changed leaves the files as they were.
    let good_bytes = std::fs::read(&good_file).expect("read");
    let revoked_bytes = std::fs::read(&revoked_file).expect("read");
    let report = r.presign(&serials, &dir, now + Duration::hours(1)).expect("presign");
    assert_eq!(report.unchanged, vec![serial(GOOD), serial(REVOKED)]);
    assert!(report.written.is_empty());
    assert_eq!(std::fs::read(&good_file).expect("read"), good_bytes);

    // A revocation rewrites that file only.
    pki.revoke(GOOD, now, RevocationReason::AffiliationChanged);
    let report = r.presign(&serials, &dir, now).expect("presign");
    assert_eq!(report.written, vec![serial(GOOD)]);
    assert_eq!(report.unchanged, vec![serial(REVOKED)]);
    assert_eq!(std::fs::read(&revoked_file).expect("read"), revoked_bytes);
    let text = respin(&pki, &good_file, GOOD);
    assert!(text.contains(": revoked") && text.contains("Reason: affiliationChanged"), "{text}");
    assert!(text.contains("Response verify OK"), "{text}");

    // Near nextUpdate (12 h before it, by default), everything is signed anew.
    let report = r.presign(&serials, &dir, now + Duration::hours(12)).expect("presign");
    assert_eq!(report.written, vec![serial(GOOD), serial(REVOKED)]);
    assert_ne!(std::fs::read(&revoked_file).expect("read"), revoked_bytes);

    // A damaged file is replaced.
    std::fs::write(&revoked_file, b"junk").expect("write");
    let report = r.presign(&serials, &dir, now + Duration::hours(12)).expect("presign");
    assert_eq!(report.written, vec![serial(REVOKED)]);
    assert_eq!(report.unchanged, vec![serial(GOOD)]);

    // No temporary files are left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["1001.der", "1002.der", PRESIGN_INDEX_FILE]);
}

#[test]
fn a_new_signer_certificate_means_new_files() {
    let pki = Pki::new();
    let dir = pki.path("presigned");
    let now = Utc::now();
    pki.responder().presign(&[serial(GOOD)], &dir, now).expect("presign");
    // Same key, a new certificate (say, renewed): the files must carry the new one.
    let spki = rcgen::SubjectPublicKeyInfo::from_der(pki.signer.public_key_spki()).expect("spki");
    let mut params = signer_params(true, true);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0b]));
    let renewed = params.signed_by(&spki, &issuing_ca()).expect("cert");
    let r2 = std::sync::Arc::new(
        OcspResponder::new(
            pki.reader(),
            &pki.issuing_der,
            renewed.der(),
            pki.signer.clone(),
            ocsp_responder::OcspConfig::default(),
            std::sync::Arc::new(ocsp_responder::SystemClock),
        )
        .expect("responder"),
    );
    let report = r2.presign(&[serial(GOOD)], &dir, now).expect("presign");
    assert_eq!(report.written, vec![serial(GOOD)]);
}

#[test]
fn the_index_maps_the_rfc_5019_get_path_to_the_file() {
    let pki = Pki::new();
    let r = pki.responder();
    let dir = pki.path("presigned");
    let all = issued_serials(&pki.db).expect("serials");
    // Everything the issuing CA issued: the three leaves and the OCSP signer, not the CA itself.
    let mut want = vec![serial(GOOD), serial(REVOKED), serial(GOOD_2), serial(SIGNER_SERIAL)];
    want.sort();
    let mut got = all.clone();
    got.sort();
    assert_eq!(got, want);
    r.presign(&all, &dir, Utc::now()).expect("presign");

    let index = std::fs::read_to_string(dir.join(PRESIGN_INDEX_FILE)).expect("index");
    let lines: Vec<(&str, &str)> =
        index.lines().map(|l| l.split_once('\t').expect("TAB-separated")).collect();
    assert_eq!(lines.len(), 4, "{index}");
    // openssl's own -no_nonce request for serial 1001 is exactly the request the index names.
    let openssl_req = std::fs::read(data("req-sha1-1001.der")).expect("vector");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&openssl_req);
    let segment = b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    assert!(lines.contains(&(segment.as_str(), "1001.der")), "{index}");
    assert_eq!(r.rfc5019_get_path(&serial(GOOD)).expect("path"), segment);
    for (segment, file) in &lines {
        assert!(dir.join(file).exists(), "{file}");
        let der = base64::engine::general_purpose::STANDARD
            .decode(segment.replace("%2B", "+").replace("%2F", "/").replace("%3D", "="))
            .expect("base64");
        assert_eq!(decode(&r.respond(&der, Utc::now())).status, x509_ocsp::OcspResponseStatus::Successful);
    }
}

#[actix_web::test]
async fn the_live_responder_answers_the_indexed_get_path_like_the_file() {
    let pki = Pki::new();
    let r = pki.responder();
    let dir = pki.path("presigned");
    r.presign(&[serial(REVOKED)], &dir, Utc::now()).expect("presign");
    let app = atest::init_service(App::new().service(ocsp_responder::scope(r.clone()))).await;
    let path = format!("/ocsp/{}", r.rfc5019_get_path(&serial(REVOKED)).expect("path"));
    let res = atest::call_service(&app, atest::TestRequest::get().uri(&path).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let live = decode(&atest::read_body(res).await).basic.expect("basic");
    let file = decode(&std::fs::read(dir.join("1002.der")).expect("file")).basic.expect("basic");
    let (l, f) = (&live.tbs_response_data.responses[0], &file.tbs_response_data.responses[0]);
    assert_eq!(l.cert_id, f.cert_id);
    assert_eq!(l.cert_status, f.cert_status);
}
