//! The audit log with its hash-chain check.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use ca_core::audit::AuditEntry;
use chrono::NaiveDate;
use maud::html;
use serde::Deserialize;

use super::certs::PAGE_SIZE;
use super::Page;
use crate::auth::{guard, Perm};
use crate::views::{html_response, page, url_escape, when};
use crate::{Console, Error};

#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default, deserialize_with = "super::page_number")]
    page: Option<usize>,
}

fn date(s: &str, field: &str) -> Result<Option<NaiveDate>, Error> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| Error::BadRequest(format!("{field} {s:?} is not a date (YYYY-MM-DD)")))
}

pub(crate) async fn audit_log(
    req: HttpRequest,
    console: web::Data<Console>,
    q: web::Query<AuditQuery>,
) -> Page {
    let ctx = guard(&req, &console, Perm::Read)?;
    let q = q.into_inner();
    let from = date(&q.from, "from")?;
    let to = date(&q.to, "to")?;
    let page_no = q.page.unwrap_or(1).max(1);
    let c = console.clone();
    let audit = web::block(move || c.cache.audit(&c.ca)).await??;
    let actor = q.actor.trim().to_lowercase();
    let action = q.action.trim().to_ascii_lowercase();
    let action_prefix = format!("{action}.");
    let keep = |e: &&AuditEntry| {
        let d = e.time.date_naive();
        (actor.is_empty() || contains_ignoring_case(&e.actor, &actor))
            && (action.is_empty()
                || e.action.name().eq_ignore_ascii_case(&action)
                || starts_with_ignoring_ascii_case(e.action.name(), &action_prefix))
            && from.is_none_or(|f| d >= f)
            && to.is_none_or(|t| d <= t)
    };
    let unfiltered = actor.is_empty() && action.is_empty() && from.is_none() && to.is_none();
    let skip = (page_no - 1).saturating_mul(PAGE_SIZE);
    let (rows, total): (Vec<&AuditEntry>, usize) = if unfiltered {
        (audit.entries.iter().rev().skip(skip).take(PAGE_SIZE).collect(), audit.entries.len())
    } else {
        let mut rows = Vec::new();
        let mut total = 0;
        for e in audit.entries.iter().rev().filter(keep) {
            if total >= skip && rows.len() < PAGE_SIZE {
                rows.push(e);
            }
            total += 1;
        }
        (rows, total)
    };
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let link = |p: usize| {
        format!(
            "/admin/audit?actor={}&action={}&from={}&to={}&page={p}",
            url_escape(&q.actor),
            url_escape(&q.action),
            url_escape(&q.from),
            url_escape(&q.to)
        )
    };
    let actions = &audit.actions;
    let body = html! {
        @match &audit.verified {
            Ok(n) => p.notice #chain {
                "Hash chain verified: " (n) " entries, intact. Whole chain last checked from the first entry at "
                (when(audit.full_check_at)) "; later entries each as they were added."
            },
            Err(e) => p.error #chain { "Hash chain BROKEN: " (e) },
        }
        form.filters method="get" action="/admin/audit" {
            label { "Actor" input type="text" name="actor" value=(q.actor); }
            label { "Action" select name="action" {
                option value="" selected[q.action.is_empty()] { "any" }
                @for a in actions { option value=(a) selected[q.action == *a] { (a) } }
            } }
            label { "From" input type="date" name="from" value=(q.from); }
            label { "To" input type="date" name="to" value=(q.to); }
            button type="submit" { "Filter" }
        }
        p #result-count { (total) " entries; page " (page_no) " of " (pages) }
        table #audit {
            tr { th { "#" } th { "time" } th { "actor" } th { "action" } th { "serial" } th { "outcome" } th { "details" } }
            @for e in &rows {
                tr {
                    td.num { (e.seq) }
                    td { (when(e.time)) }
                    td { (e.actor) }
                    td { (e.action) }
                    td { @if let Some(s) = &e.serial { a.mono href=(format!("/admin/certificates/{s}")) { (s) } } }
                    td { (e.outcome) }
                    td { (e.details) }
                }
            }
        }
        div.pager {
            @if page_no > 1 { a rel="prev" href=(link(page_no - 1)) { "← newer" } }
            @if page_no < pages { a rel="next" href=(link(page_no + 1)) { "older →" } }
        }
    };
    Ok(html_response(StatusCode::OK, page("Audit log", Some(&ctx), body)))
}

/// Whether `hay` contains `needle`, which is lower-case; without allocating when both are ASCII.
fn contains_ignoring_case(hay: &str, needle: &str) -> bool {
    if hay.is_ascii() && needle.is_ascii() {
        let n = needle.as_bytes();
        n.is_empty() || hay.as_bytes().windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        hay.to_lowercase().contains(needle)
    }
}

fn starts_with_ignoring_ascii_case(hay: &str, prefix: &str) -> bool {
    hay.len() >= prefix.len() && hay.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}
