//! The HTTP scope in process (`actix_web::test`): POST and GET, RFC 5019 caching headers, 304,
//! error statuses inside HTTP 200, and the body limit.

mod common;

use actix_web::http::{header, StatusCode};
use actix_web::{test, App};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use common::*;
use x509_ocsp::{CertStatus, OcspResponseStatus};

fn get_path(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("/ocsp/{}", b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"))
}

fn header_str(res: &actix_web::dev::ServiceResponse, name: header::HeaderName) -> String {
    res.headers().get(name).map(|v| v.to_str().expect("ascii").to_string()).unwrap_or_default()
}

fn status_kind(der: &[u8]) -> (OcspResponseStatus, Vec<&'static str>) {
    let d = decode(der);
    let kinds = d
        .basic
        .map(|b| {
            b.tbs_response_data
                .responses
                .iter()
                .map(|s| match s.cert_status {
                    CertStatus::Good(_) => "good",
                    CertStatus::Revoked(_) => "revoked",
                    CertStatus::Unknown(_) => "unknown",
                })
                .collect()
        })
        .unwrap_or_default();
    (d.status, kinds)
}

#[actix_web::test]
async fn get_answers_as_post_does_with_rfc_5019_caching_headers() {
    let pki = Pki::new();
    let app = test::init_service(App::new().service(ocsp_responder::scope(pki.responder()))).await;
    for (s, want) in [(GOOD, "good"), (REVOKED, "revoked"), (NEVER_ISSUED, "unknown")] {
        let req = pki.request(&[s], OID_SHA1, None);
        let post = test::TestRequest::post()
            .uri("/ocsp")
            .insert_header((header::CONTENT_TYPE, "application/ocsp-request"))
            .set_payload(req.clone())
            .to_request();
        let res = test::call_service(&app, post).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header_str(&res, header::CONTENT_TYPE), "application/ocsp-response");
        let post_body = test::read_body(res).await;
        assert_eq!(status_kind(&post_body), (OcspResponseStatus::Successful, vec![want]));

        let res = test::call_service(&app, test::TestRequest::get().uri(&get_path(&req)).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header_str(&res, header::CONTENT_TYPE), "application/ocsp-response");
        let cache_control = header_str(&res, header::CACHE_CONTROL);
        let max_age: i64 = cache_control
            .strip_prefix("max-age=")
            .and_then(|rest| rest.strip_suffix(", public, no-transform, must-revalidate"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("Cache-Control: {cache_control}"));
        assert!((86_300..=86_400).contains(&max_age), "max-age={max_age}");
        let last_modified =
            DateTime::parse_from_rfc2822(&header_str(&res, header::LAST_MODIFIED)).expect("date");
        let expires = DateTime::parse_from_rfc2822(&header_str(&res, header::EXPIRES)).expect("date");
        assert_eq!((expires - last_modified).num_seconds(), 86_400);
        assert!((Utc::now() - last_modified.with_timezone(&Utc)).num_seconds().abs() < 100);
        assert!(header_str(&res, header::ETAG).starts_with('"'));
        let get_body = test::read_body(res).await;
        if s != NEVER_ISSUED {
            assert_eq!(get_body, post_body, "served from the same cache entry");
        }
        assert_eq!(status_kind(&get_body), (OcspResponseStatus::Successful, vec![want]));
    }
}

#[actix_web::test]
async fn if_none_match_with_the_etag_gets_304() {
    let pki = Pki::new();
    let app = test::init_service(App::new().service(ocsp_responder::scope(pki.responder()))).await;
    let path = get_path(&pki.request(&[GOOD], OID_SHA1, None));
    let res = test::call_service(&app, test::TestRequest::get().uri(&path).to_request()).await;
    let etag = header_str(&res, header::ETAG);
    let res = test::call_service(
        &app,
        test::TestRequest::get().uri(&path).insert_header((header::IF_NONE_MATCH, etag.clone())).to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header_str(&res, header::ETAG), etag);
    assert!(header_str(&res, header::CACHE_CONTROL).starts_with("max-age="));
    assert!(test::read_body(res).await.is_empty());
    let res = test::call_service(
        &app,
        test::TestRequest::get().uri(&path).insert_header((header::IF_NONE_MATCH, "\"stale\"")).to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[actix_web::test]
async fn get_with_a_nonce_is_answered_but_not_cacheable() {
    let pki = Pki::new();
    let app = test::init_service(App::new().service(ocsp_responder::scope(pki.responder()))).await;
    let path = get_path(&pki.request(&[GOOD], OID_SHA1, Some(&[9; 32])));
    let res = test::call_service(&app, test::TestRequest::get().uri(&path).to_request()).await;
    assert_eq!(header_str(&res, header::CACHE_CONTROL), "no-store");
    assert!(res.headers().get(header::ETAG).is_none());
    let body = test::read_body(res).await;
    assert_eq!(status_kind(&body), (OcspResponseStatus::Successful, vec!["good"]));
}

#[actix_web::test]
async fn bad_requests_get_http_200_with_malformed_request() {
    let pki = Pki::new();
    let app = test::init_service(App::new().service(ocsp_responder::scope(pki.responder()))).await;
    let good = pki.request(&[GOOD], OID_SHA1, None);
    let posts: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", vec![]),
        ("garbage", b"\x00\xffnot DER at all".to_vec()),
        ("truncated DER", good[..good.len() / 2].to_vec()),
        ("129-octet nonce", pki.request(&[GOOD], OID_SHA1, Some(&[3; 129]))),
    ];
    for (what, body) in posts {
        let res =
            test::call_service(&app, test::TestRequest::post().uri("/ocsp").set_payload(body).to_request())
                .await;
        assert_eq!(res.status(), StatusCode::OK, "{what}");
        assert_eq!(header_str(&res, header::CACHE_CONTROL), "no-store", "{what}");
        let body = test::read_body(res).await;
        assert_eq!(decode(&body).status, OcspResponseStatus::MalformedRequest, "{what}");
    }
    for path in ["/ocsp/", "/ocsp/%zz", "/ocsp/!!!notbase64", "/ocsp/AAAA", &get_path(&good[..20])] {
        let res = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(header_str(&res, header::CACHE_CONTROL), "no-store", "{path}");
        let body = test::read_body(res).await;
        assert_eq!(decode(&body).status, OcspResponseStatus::MalformedRequest, "{path}");
    }
}

#[actix_web::test]
async fn post_to_the_trailing_slash_and_a_foreign_issuer_over_get() {
    let pki = Pki::new();
    let app = test::init_service(App::new().service(ocsp_responder::scope(pki.responder()))).await;
    let req = pki.request(&[REVOKED], OID_SHA256, None);
    let res =
        test::call_service(&app, test::TestRequest::post().uri("/ocsp/").set_payload(req).to_request()).await;
    assert_eq!(status_kind(&test::read_body(res).await), (OcspResponseStatus::Successful, vec!["revoked"]));

    let root = pem_to_der(&std::fs::read_to_string(data("root.pem")).expect("root.pem"));
    let foreign = request_for(&root, &[ISSUING_CA_SERIAL], OID_SHA1, None);
    let res = test::call_service(&app, test::TestRequest::get().uri(&get_path(&foreign)).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(decode(&test::read_body(res).await).status, OcspResponseStatus::Unauthorized);
}

#[actix_web::test]
async fn a_two_mebibyte_body_is_refused_with_413() {
    let pki = Pki::new();
    let app = test::init_service(App::new().service(ocsp_responder::scope(pki.responder()))).await;
    let res = test::call_service(
        &app,
        test::TestRequest::post().uri("/ocsp").set_payload(vec![0x30u8; 2 * 1024 * 1024]).to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    assert_eq!(
        test::read_body(res).await,
        format!(r#"{{"error":"request body over {} bytes"}}"#, ocsp_responder::MAX_REQUEST_BYTES)
    );
    // Just at the limit is read and parsed (and is no request).
    let res = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/ocsp")
            .set_payload(vec![0x30u8; ocsp_responder::MAX_REQUEST_BYTES])
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(decode(&test::read_body(res).await).status, OcspResponseStatus::MalformedRequest);
}
