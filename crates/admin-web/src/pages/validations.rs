//! Mailbox validation (S/MIME BR 3.2.2): each address's evidence for every role, and for
//! officers the button that mails a random value to an address outside the enterprise domains
//! and the form its holder's value is entered back with.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use cerdb::EmailAddress;
use maud::html;
use serde::Deserialize;

use super::Page;
use crate::auth::{guard, Ctx, Perm};
use crate::views::{csrf, html_response, page, when};
use crate::{Console, Error};

#[derive(Debug, Deserialize)]
pub(crate) struct SendForm {
    csrf_token: Option<String>,
    #[serde(default)]
    email: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConfirmForm {
    csrf_token: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    code: String,
}

/// The page, with `notice` above it (what the last action did).
async fn render(
    console: &web::Data<Console>,
    ctx: &Ctx,
    status: StatusCode,
    notice: Option<maud::Markup>,
) -> Page {
    let cfg = console.ca.validation_config().cloned().unwrap_or_default();
    let now = console.ca.now();
    // Read on a blocking thread: the storage engine may block (PostgreSQL).
    let c = console.clone();
    let mut rows = web::block(move || c.ca.mailbox_validations()).await??;
    rows.sort_by_key(|a| a.email.to_string());
    let body = html! {
        @if let Some(n) = notice { (n) }
        section.card #enterprise-domains {
            h2 { "Enterprise domains" }
            p { "Addresses in these domains count as validated by the organisation's control of the domain (S/MIME BR 3.2.2.1)." }
            @if cfg.enterprise_domains.is_empty() {
                p #no-enterprise-domains { "None: set [validation] enterprise_domains in pki.toml." }
            } @else {
                ul { @for d in &cfg.enterprise_domains { li { "*@" (d) } } }
            }
        }
        section.card {
            h2 { "Validated addresses" }
            p { "A validation is reused for " (cfg.reuse_days) " days; after that the address is validated again." }
            table #validations {
                tr { th { "address" } th { "method" } th { "validated" } th { "state" } th { "by" } }
                @for v in &rows {
                    @let current = v.validated_at + chrono::Duration::days(i64::from(cfg.reuse_days)) > now && v.validated_at <= now;
                    tr {
                        td { (v.email) }
                        td { (v.method.name()) }
                        td { (when(v.validated_at)) }
                        td { @if current { "current" } @else { "expired" } }
                        td { (v.actor) }
                    }
                }
            }
        }
        @if ctx.can(Perm::Issue) {
            form.card #validate-send method="post" action="/admin/validations/send" {
                h2 { "Validate an address" }
                p { "Mails a random value to the address (valid " (cfg.code_ttl_hours.min(24)) " hours, single use). Its holder gives it back to you, or enters it with " code { "pki validate confirm" } "." }
                (csrf(&ctx.session.csrf_token))
                label { "E-mail address" input type="email" name="email" required; }
                button type="submit" { "Send a validation value" }
            }
            form.card #validate-confirm method="post" action="/admin/validations/confirm" {
                h2 { "Enter a value back" }
                (csrf(&ctx.session.csrf_token))
                label { "E-mail address" input type="email" name="email" required; }
                label { "Value from the mail" input type="text" name="code" autocomplete="off" maxlength="64" required; }
                button type="submit" { "Confirm" }
            }
        }
    };
    Ok(html_response(status, page("Mailbox validations", Some(ctx), body)))
}

pub(crate) async fn page_of_evidence(req: HttpRequest, console: web::Data<Console>) -> Page {
    let ctx = guard(&req, &console, Perm::Read)?;
    render(&console, &ctx, StatusCode::OK, None).await
}

pub(crate) async fn send(req: HttpRequest, console: web::Data<Console>, form: web::Form<SendForm>) -> Page {
    let ctx = guard(&req, &console, Perm::Issue)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let email: EmailAddress = form.email.trim().parse()?;
    let cfg = console.ca.validation_config().cloned().unwrap_or_default();
    if let Some(d) = cfg.enterprise_domain_of(&email) {
        let n = html! { p.notice #outcome { (email) " is in the enterprise domain " (d) ": it needs no mailed value." } };
        return render(&console, &ctx, StatusCode::OK, Some(n)).await;
    }
    let Some(mailer) = console.validation_mailer.clone() else {
        return Err(Error::BadRequest(
            "no mail relay: set [mail.relay] host (and port, tls) in pki.toml".into(),
        ));
    };
    let c = console.clone();
    let actor = ctx.actor();
    let to = email.clone();
    // The value is made, stored as its digest and mailed on a blocking thread (the relay is SMTP).
    web::block(move || -> Result<(), Error> {
        c.ca.start_mailbox_validation(&to, &actor, |value| mailer(&to, value, cfg.code_ttl_hours.min(24)))
            .map_err(|e| match e {
                ca_core::Error::ValidationMail { why, .. } => {
                    tracing::error!(error = %why, "the validation value could not be mailed");
                    Error::Internal("the validation mail could not be sent".into())
                }
                other => other.into(),
            })
    })
    .await??;
    let n = html! { p.notice #outcome { "Mailed a validation value to " (email) "; enter it below when its holder gives it back." } };
    render(&console, &ctx, StatusCode::OK, Some(n)).await
}

pub(crate) async fn confirm(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<ConfirmForm>,
) -> Page {
    let ctx = guard(&req, &console, Perm::Issue)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let form = form.into_inner();
    let email: EmailAddress = form.email.trim().parse()?;
    if form.code.len() > 64 {
        return Err(Error::BadRequest("the value is at most 64 characters".into()));
    }
    let c = console.clone();
    let actor = ctx.actor();
    let v = web::block(move || c.ca.confirm_mailbox_validation(&email, &form.code, &actor)).await??;
    let n = html! { p.notice #outcome { (v.email) " validated at " (when(v.validated_at)) "." } };
    render(&console, &ctx, StatusCode::OK, Some(n)).await
}
