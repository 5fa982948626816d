//! `multipart/form-data` bodies (file uploads), read with a size limit per part.

use std::collections::HashMap;

use actix_multipart::{Multipart, MultipartError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use crate::Error;

/// The parts of a multipart form, by name; only the `allowed` names, each at most its limit.
pub(crate) async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    allowed: &[(&str, usize)],
) -> Result<HashMap<String, Vec<u8>>, Error> {
    Ok(read_hashing(req, payload, allowed, None).await?.0)
}

/// The same, except for the part named in `hashed` (with its limit): that one is hashed as it
/// arrives (for timestamp verification) and never held.
pub(crate) async fn read_hashing(
    req: &HttpRequest,
    payload: web::Payload,
    allowed: &[(&str, usize)],
    hashed: Option<(&str, usize)>,
) -> Result<(HashMap<String, Vec<u8>>, Option<tsa::DataDigests>), Error> {
    let mut out = HashMap::new();
    let mut digests: Option<tsa::DataDigests> = None;
    let sent =
        req.headers().get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if !sent
        .as_deref()
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
    {
        return Err(Error::Unreadable {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: match sent {
                Some(t) => format!("this form is sent as multipart/form-data, not {t}"),
                None => "this form is sent as multipart/form-data; the request had no Content-Type".into(),
            },
        });
    }
    let mut parts = Multipart::new(req.headers(), payload);
    while let Some(field) = parts.next().await {
        let mut field = field.map_err(unreadable)?;
        let name = field.name().unwrap_or_default().to_string();
        if let Some((_, limit)) = hashed.filter(|(n, _)| *n == name) {
            if digests.is_some() {
                return Err(Error::BadRequest(format!("form field {name:?} given twice")));
            }
            let mut d = tsa::DataDigests::default();
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(unreadable)?;
                if d.len().saturating_add(chunk.len() as u64) > limit as u64 {
                    return Err(over(&name, limit));
                }
                d.update(&chunk);
            }
            digests = Some(d);
            continue;
        }
        let Some((_, limit)) = allowed.iter().find(|(n, _)| *n == name) else {
            return Err(Error::BadRequest(format!("unexpected form field {name:?}")));
        };
        let mut body = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(unreadable)?;
            if body.len() + chunk.len() > *limit {
                return Err(over(&name, *limit));
            }
            body.extend_from_slice(&chunk);
        }
        if out.insert(name.clone(), body).is_some() {
            return Err(Error::BadRequest(format!("form field {name:?} given twice")));
        }
    }
    Ok((out, digests))
}

/// A text field of a multipart form (trimmed), if present and non-empty.
pub(crate) fn text(parts: &HashMap<String, Vec<u8>>, name: &str) -> Option<String> {
    parts.get(name).map(|v| String::from_utf8_lossy(v).trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod fuzz;

/// A part over its limit: 413, as for a urlencoded form over the console's limit.
fn over(name: &str, limit: usize) -> Error {
    Error::Unreadable {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("form field {name:?} is over {limit} bytes"),
    }
}

/// A multipart body that cannot be read: cut short, or malformed.
fn unreadable(e: MultipartError) -> Error {
    let message = match &e {
        MultipartError::Payload(p) => cerdb::directory::body_error_text(p),
        MultipartError::Incomplete => "the multipart body ended before its closing boundary".into(),
        other => format!("multipart body: {other}"),
    };
    Error::Unreadable { status: StatusCode::BAD_REQUEST, message }
}
