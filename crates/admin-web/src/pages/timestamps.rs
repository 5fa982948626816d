//! Timestamp verification for auditors: an RFC 3161 token checked against the file it stamps.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::html;

use super::Page;
use crate::auth::{guard, Perm};
use crate::views::{csrf, html_response, page};
use crate::{forms, Console, Error};

fn timestamp_form(token: &str) -> maud::Markup {
    html! {
        form.card #verify-timestamp method="post" action="/admin/timestamps/verify" enctype="multipart/form-data" {
            p { "Check an RFC 3161 timestamp token (or reply) against the file it stamps: signature, chain to this CA's root at the time of stamping, signing certificate, message imprint, and this TSA's record." }
            (csrf(token))
            label { "Token or reply (DER, .tsr)" input type="file" name="token" required; }
            label { "The timestamped file" input type="file" name="data" required; }
            button type="submit" { "Verify" }
        }
    }
}

pub(crate) async fn timestamps_page(req: HttpRequest, console: web::Data<Console>) -> Page {
    let ctx = guard(&req, &console, Perm::Read)?;
    let body = timestamp_form(&ctx.session.csrf_token);
    Ok(html_response(StatusCode::OK, page("Timestamp verification", Some(&ctx), body)))
}

pub(crate) async fn timestamps_verify(
    req: HttpRequest,
    console: web::Data<Console>,
    payload: web::Payload,
) -> Page {
    let ctx = guard(&req, &console, Perm::Read)?;
    // The file is hashed as it arrives, never held.
    let (mut parts, data) = forms::read_hashing(
        &req,
        payload,
        &[("csrf_token", 128), ("token", 64 * 1024)],
        Some(("data", tsa::MAX_VERIFY_DATA_BYTES)),
    )
    .await?;
    ctx.check_csrf(forms::text(&parts, "csrf_token").as_deref())?;
    let token = parts
        .remove("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::BadRequest("upload the token".into()))?;
    let data = data.unwrap_or_default();
    let c = console.clone();
    let result = web::block(move || c.verifier.verify(&token, tsa::Timestamped::Streamed(&data))).await?;
    let (status, outcome) = match &result {
        Ok(v) => (
            StatusCode::OK,
            html! {
                p.notice #verdict { "Verified." }
                table #timestamp {
                    tr { th { "time stamped" } td { (v.gen_time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)) } }
                    tr { th { "serial" } td { (v.serial) } }
                    tr { th { "policy" } td { (v.policy) } }
                    tr { th { "TSA" } td { (v.tsa_name) } }
                    tr { th { "hash" } td { (v.hash_algorithm) } }
                }
            },
        ),
        Err(tsa::Error::Verification { check, reason }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            html! { p.error #verdict { "NOT verified: the " (check) " check failed: " (reason) } },
        ),
        Err(e) => (StatusCode::BAD_REQUEST, html! { p.error #verdict { "NOT verified: " (e) } }),
    };
    let body = html! { (outcome) (timestamp_form(&ctx.session.csrf_token)) };
    Ok(html_response(status, page("Timestamp verification", Some(&ctx), body)))
}
