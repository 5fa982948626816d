//! The HTTP binding (RFC 6960 appendix A, RFC 5019 §5–6): `POST /ocsp` with the DER request as
//! body, `GET /ocsp/{url-encoded base64 of the DER request}`; both answer
//! `application/ocsp-response` with HTTP 200 whatever the OCSP responseStatus. A POST body over
//! [`MAX_REQUEST_BYTES`] is refused with HTTP 413 and a JSON `{"error"}`, before more of it is
//! read.
//!
//! GET answers that a shared cache may keep (successful, no nonce) carry RFC 5019 §6.2 headers:
//! `Cache-Control: max-age=<seconds to nextUpdate>, public, no-transform, must-revalidate`,
//! `Last-Modified` (thisUpdate), `Expires` (nextUpdate) and a strong `ETag`; `If-None-Match`
//! with that ETag gets `304 Not Modified`. Every other answer carries `Cache-Control: no-store`.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, Scope};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chrono::{DateTime, Utc};

use cerdb::directory::DirectoryError;

use crate::responder::{error_reply, status_only, Freshness, OcspReply};
use crate::{Error, OcspResponder, ResponseStatus};

/// The largest POST body accepted: 10,000 octets, far above any request with a few CertIDs.
pub const MAX_REQUEST_BYTES: usize = 10_000;

const OCSP_RESPONSE: &str = "application/ocsp-response";

/// The OCSP routes, mounted at `/ocsp`: `POST /ocsp` (or any path below it), `GET /ocsp/{request}`.
pub fn scope(responder: Arc<OcspResponder>) -> Scope {
    web::scope("/ocsp")
        .app_data(web::Data::from(responder))
        .service(get_and_post(""))
        .service(get_and_post("/{request:.*}"))
}

/// Every path under `/ocsp` takes a request by GET (HEAD too) or POST: a GET without one is
/// answered `malformedRequest`, like any other undecodable request. Other methods get 405 with
/// `Allow`.
fn get_and_post(path: &str) -> actix_web::Resource {
    web::resource(path)
        .route(web::route().guard(cerdb::directory::get_or_head()).to(get))
        .route(web::post().to(post))
        .default_service(web::to(|| async { cerdb::directory::not_allowed("GET, HEAD, POST") }))
}

/// The answer when a handler fails outright (it panicked): an `OCSPResponse` with responseStatus
/// `internalError`, HTTP 200 like every other OCSP answer, never cached.
pub fn internal_error_response() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(OCSP_RESPONSE)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(status_only(ResponseStatus::InternalError))
}

async fn post(req: HttpRequest, payload: web::Payload, responder: web::Data<OcspResponder>) -> HttpResponse {
    let limit = responder.config().max_request_bytes;
    let reply = match cerdb::directory::read_limited(&req, payload, limit).await {
        Ok(body) => responder.respond_async(&body, responder.clock().now()).await,
        // The one HTTP-level error: JSON, as every other 413 of `pki serve`.
        Err(e @ DirectoryError::BodyTooLarge { .. }) => return e.http_response(),
        // A stream that broke off: what arrived is not a request. (A body that did not arrive in
        // time is answered 408 by `pki serve`'s guard, whatever this answers.)
        Err(e) => error_reply(&Error::Malformed(e.to_string())),
    };
    let mut res = HttpResponse::Ok();
    res.content_type(OCSP_RESPONSE);
    if reply.freshness.is_none() {
        res.insert_header((header::CACHE_CONTROL, "no-store"));
    }
    res.body(reply.der)
}

async fn get(req: HttpRequest, responder: web::Data<OcspResponder>) -> HttpResponse {
    let now = responder.clock().now();
    let reply = match decode_get_segment(req.match_info().query("request")) {
        Ok(der) => responder.respond_async(&der, now).await,
        Err(e) => error_reply(&e),
    };
    get_response(&req, reply, now)
}

/// Builds the GET answer with its caching headers, or a 304.
fn get_response(req: &HttpRequest, reply: OcspReply, now: DateTime<Utc>) -> HttpResponse {
    let Some(fresh) = reply.freshness else {
        return HttpResponse::Ok()
            .content_type(OCSP_RESPONSE)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(reply.der);
    };
    let etag = etag_of(&reply.der);
    let not_modified = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .any(|v| etag_matches(v, &etag));
    if not_modified {
        let mut res = HttpResponse::build(StatusCode::NOT_MODIFIED);
        caching_headers(&mut res, &fresh, &etag, now);
        return res.finish();
    }
    let mut res = HttpResponse::Ok();
    res.content_type(OCSP_RESPONSE);
    caching_headers(&mut res, &fresh, &etag, now);
    res.body(reply.der)
}

fn caching_headers(res: &mut HttpResponseBuilder, fresh: &Freshness, etag: &str, now: DateTime<Utc>) {
    let max_age = (fresh.next_update - now).num_seconds().max(0);
    res.insert_header((
        header::CACHE_CONTROL,
        format!("max-age={max_age}, public, no-transform, must-revalidate"),
    ));
    res.insert_header((header::LAST_MODIFIED, http_date(fresh.this_update)));
    res.insert_header((header::EXPIRES, http_date(fresh.next_update)));
    if let Ok(v) = HeaderValue::from_str(etag) {
        res.insert_header((header::ETAG, v));
    }
}

/// A strong ETag: the first 16 octets of the response's SHA-256, hex, quoted.
fn etag_of(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    format!("\"{}\"", hex::encode(&d.as_ref()[..16]))
}

/// RFC 9110 §13.1.2: `*` or a list of entity tags, compared weakly.
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// RFC 9110 §5.6.7 IMF-fixdate.
fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The DER request in a GET path segment (RFC 6960 appendix A.1): percent-decoded, then base64.
/// The URL-safe alphabet and missing padding are accepted too, as some clients send them.
fn decode_get_segment(segment: &str) -> Result<Vec<u8>, Error> {
    let text =
        percent_decode(segment).ok_or_else(|| Error::Malformed("bad percent-encoding in the URL".into()))?;
    let text: Vec<u8> = text
        .into_iter()
        .map(|b| match b {
            b'-' => b'+',
            b'_' => b'/',
            other => other,
        })
        .collect();
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    engine.decode(text).map_err(|e| Error::Malformed(format!("request in the URL is not base64: {e}")))
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    fn hex_digit(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = hex_digit(*bytes.get(i + 1)?)?;
            let lo = hex_digit(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_segments_decode_in_every_spelling() {
        let der = vec![0xfb, 0xef, 0xff, 0x3e, 0x01];
        let std = base64::engine::general_purpose::STANDARD.encode(&der);
        assert!(std.contains('+') && std.contains('/') && std.ends_with('='), "{std}");
        let encoded = std.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
        for s in [
            std.clone(),
            encoded,
            std.trim_end_matches('=').to_string(),
            std.replace('+', "-").replace('/', "_"),
        ] {
            assert_eq!(decode_get_segment(&s).expect(&s), der, "{s}");
        }
        for bad in ["%", "%4", "%zz", "!!!!", "A"] {
            assert!(decode_get_segment(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(decode_get_segment("").expect("empty"), Vec::<u8>::new());
    }

    #[test]
    fn etags_and_dates() {
        let tag = etag_of(b"x");
        assert_eq!(tag.len(), 34);
        assert!(etag_matches(&tag, &tag));
        assert!(etag_matches(&format!("\"other\", W/{tag}"), &tag));
        assert!(etag_matches("*", &tag));
        assert!(!etag_matches("\"other\"", &tag));
        let t = DateTime::from_timestamp(784_111_777, 0).expect("time");
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
