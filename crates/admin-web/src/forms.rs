//! `multipart/form-data` bodies (file uploads), read with a size limit per part.

use std::collections::HashMap;

use actix_multipart::Multipart;
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
    let mut parts = Multipart::new(req.headers(), payload);
    while let Some(field) = parts.next().await {
        let mut field = field.map_err(|e| Error::BadRequest(format!("multipart body: {e}")))?;
        let name = field.name().unwrap_or_default().to_string();
        if let Some((_, limit)) = hashed.filter(|(n, _)| *n == name) {
            if digests.is_some() {
                return Err(Error::BadRequest(format!("form field {name:?} given twice")));
            }
            let mut d = tsa::DataDigests::default();
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(|e| Error::BadRequest(format!("multipart body: {e}")))?;
                if d.len().saturating_add(chunk.len() as u64) > limit as u64 {
                    return Err(Error::BadRequest(format!("form field {name:?} is over {limit} bytes")));
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
            let chunk = chunk.map_err(|e| Error::BadRequest(format!("multipart body: {e}")))?;
            if body.len() + chunk.len() > *limit {
                return Err(Error::BadRequest(format!("form field {name:?} is over {limit} bytes")));
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
