//! Account management and the settings page (administrators).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use cerdb::console_store::{ConsoleRole, ConsoleUser, UserName};
use maud::{html, Markup};
use serde::Deserialize;

use super::{see_other, Page};
use crate::auth::{guard, Ctx, Perm};
use crate::views::{csrf, html_response, page, step_up_field, when};
use crate::{Console, Error};

fn user_state(u: &ConsoleUser, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut s = Vec::new();
    s.push(if u.disabled { "disabled" } else { "active" });
    if u.locked_until.is_some_and(|t| now < t) {
        s.push("locked");
    }
    if u.must_change_password {
        s.push("one-time password");
    } else if !u.has_totp() {
        s.push("TOTP not enrolled");
    }
    let mut s = s.join(", ");
    if let Some(hold) = &u.recovery_hold {
        s.push_str(&format!(
            ", recovery hold: reset by {}, a second administrator must confirm",
            hold.reset_by
        ));
    }
    s
}

fn users_page(ctx: &Ctx, console: &Console, notice: Option<Markup>) -> Page {
    let users = console.accounts().list()?;
    let now = console.ca.now();
    let fresh = ctx.stepped_up(console);
    let body = html! {
        @if let Some(n) = notice { (n) }
        table #users {
            tr { th { "name" } th { "role" } th { "state" } th { "created" } th { "last login" } th { "actions" } }
            @for u in &users {
                tr {
                    td { (u.name) } td { (u.role) } td { (user_state(u, now)) } td { (when(u.created_at)) }
                    td { (u.last_login.map(when).unwrap_or_else(|| "-".into())) }
                    td {
                        @if u.name != ctx.user.name {
                            @let (verb, label) = if u.disabled { ("enable", "Enable") } else { ("disable", "Disable") };
                            form.inline method="post" action=(format!("/admin/users/{}/{verb}", u.name)) {
                                (csrf(&ctx.session.csrf_token)) button type="submit" { (label) }
                            }
                            " "
                            form.inline method="post" action=(format!("/admin/users/{}/reset", u.name)) {
                                (csrf(&ctx.session.csrf_token))
                                input type="text" name="totp_code" inputmode="numeric" placeholder=(if fresh { "TOTP (optional)" } else { "TOTP code" }) aria-label="TOTP code for step-up" maxlength="7";
                                button type="submit" { "Reset password and TOTP" }
                            }
                            @if u.recovery_hold.is_some() {
                                " "
                                form.inline.confirm-reset method="post" action=(format!("/admin/users/{}/confirm-reset", u.name)) {
                                    (csrf(&ctx.session.csrf_token))
                                    input type="text" name="totp_code" inputmode="numeric" placeholder=(if fresh { "TOTP (optional)" } else { "TOTP code" }) aria-label="TOTP code for step-up" maxlength="7";
                                    button type="submit" { "Confirm reset" }
                                }
                            }
                        }
                    }
                }
            }
        }
        form.card #add-user method="post" action="/admin/users" {
            h2 { "Add a user" }
            (csrf(&ctx.session.csrf_token))
            label { "Name" input type="text" name="name" pattern="[A-Za-z0-9][A-Za-z0-9._\\-]*" maxlength="64" required; }
            label { "Role" select name="role" { @for r in ConsoleRole::ALL { option value=(r.name()) { (r.name()) } } } }
            (step_up_field(fresh))
            button type="submit" { "Add user" }
        }
    };
    Ok(html_response(StatusCode::OK, page("Users", Some(ctx), body)))
}

pub(crate) async fn list(req: HttpRequest, console: web::Data<Console>) -> Page {
    let ctx = guard(&req, &console, Perm::ManageUsers)?;
    users_page(&ctx, &console, None)
}

#[derive(Debug, Deserialize)]
pub(crate) struct AddForm {
    csrf_token: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    totp_code: Option<String>,
}

/// Where one-time passwords are written for the server's operator ([`crate::otp_file`]).
fn otp_dir(console: &Console) -> Result<std::path::PathBuf, Error> {
    console.resets_dir.clone().ok_or_else(|| Error::Internal("no directory for one-time passwords".into()))
}

/// The notice of an account added or reset (`done`): its one-time password went to a file on the
/// server, and the account is on hold until another administrator confirms its `what`.
fn password_written(id: &str, done: &str, name: &UserName, what: &str) -> Markup {
    html! {
        div.notice id=(id) {
            p { (done) " " strong { (name) } ". Its one-time password is not shown here: it was written on the server to "
                code { (crate::otp_file::DIR_NAME) "/" (name) ".txt" } " in the data directory, for the server's operator to hand to the account holder." }
            p { (name) " takes no part in escrow recovery until an administrator other than you confirms the " (what) " (the Confirm reset button)." }
        }
    }
}

pub(crate) async fn add(req: HttpRequest, console: web::Data<Console>, form: web::Form<AddForm>) -> Page {
    let mut ctx = guard(&req, &console, Perm::ManageUsers)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    ctx.step_up(&console, form.totp_code.as_deref())?;
    let form = form.into_inner();
    let dir = otp_dir(&console)?;
    let c = console.clone();
    let actor = ctx.actor();
    let name = web::block(move || -> Result<UserName, Error> {
        let (name, otp) = c.accounts().add_held(&form.name, &form.role, &actor, true)?;
        crate::otp_file::write(&dir, &name, &otp)?;
        Ok(name)
    })
    .await??;
    users_page(&ctx, &console, Some(password_written("added", "Added", &name, "account")))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    csrf_token: Option<String>,
    totp_code: Option<String>,
}

fn not_self(ctx: &Ctx, name: &str) -> Result<(), Error> {
    if name.trim().eq_ignore_ascii_case(ctx.user.name.as_str()) {
        return Err(Error::BadRequest("you cannot disable or reset your own account here".into()));
    }
    Ok(())
}

async fn set_disabled(
    req: HttpRequest,
    console: web::Data<Console>,
    name: String,
    form: web::Form<ActionForm>,
    disabled: bool,
) -> Page {
    let ctx = guard(&req, &console, Perm::ManageUsers)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    not_self(&ctx, &name)?;
    console.accounts().set_disabled(&name, disabled, &ctx.actor())?;
    Ok(see_other("/admin/users"))
}

pub(crate) async fn disable(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
    form: web::Form<ActionForm>,
) -> Page {
    set_disabled(req, console, path.into_inner(), form, true).await
}

pub(crate) async fn enable(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
    form: web::Form<ActionForm>,
) -> Page {
    set_disabled(req, console, path.into_inner(), form, false).await
}

/// `POST /admin/users/{name}/reset`: the one-time password goes to a file on the server
/// ([`crate::otp_file`]), never to this administrator's page.
pub(crate) async fn reset(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
    form: web::Form<ActionForm>,
) -> Page {
    let mut ctx = guard(&req, &console, Perm::ManageUsers)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    not_self(&ctx, &path)?;
    let name: UserName = path.parse().map_err(Error::BadRequest)?;
    let dir = otp_dir(&console)?;
    ctx.step_up(&console, form.totp_code.as_deref())?;
    let c = console.clone();
    let actor = ctx.actor();
    let n = name.clone();
    web::block(move || -> Result<(), Error> {
        let otp = c.accounts().reset(n.as_str(), &actor)?;
        crate::otp_file::write(&dir, &n, &otp)?;
        Ok(())
    })
    .await??;
    users_page(&ctx, &console, Some(password_written("reset-done", "Reset", &name, "reset")))
}

/// `POST /admin/users/{name}/confirm-reset`: a second administrator lifts the recovery hold of a
/// reset account.
pub(crate) async fn confirm_reset(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
    form: web::Form<ActionForm>,
) -> Page {
    let mut ctx = guard(&req, &console, Perm::ManageUsers)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    ctx.step_up(&console, form.totp_code.as_deref())?;
    let c = console.clone();
    let actor = ctx.actor();
    let name = path.into_inner();
    let user = web::block(move || c.accounts().confirm_reset(&name, &actor)).await??;
    let notice = html! {
        p.notice #reset-confirmed { "Confirmed the reset of " strong { (user.name) } ": it may take part in escrow recovery again." }
    };
    users_page(&ctx, &console, Some(notice))
}

#[derive(Debug, Deserialize)]
pub(crate) struct SettingsQuery {
    compromised: Option<String>,
    rekeyed: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CompromiseForm {
    csrf_token: Option<String>,
    #[serde(default)]
    ca: String,
    #[serde(default)]
    confirm: String,
    totp_code: Option<String>,
}

/// The checks before an action on one of the CA's own certificates: an administrator, the form's
/// CSRF token, the certificate's name, then step-up; the certificate and the audit actor.
fn own_cert_action(
    req: &HttpRequest,
    console: &Console,
    csrf_token: &Option<String>,
    ca: &str,
    totp_code: &Option<String>,
) -> Result<(ca_core::OwnCert, String), Error> {
    let mut ctx = guard(req, console, Perm::CompromiseCa)?;
    ctx.check_csrf(csrf_token.as_deref())?;
    let which: ca_core::OwnCert = ca.parse().map_err(Error::BadRequest)?;
    ctx.step_up(console, totp_code.as_deref())?;
    Ok((which, ctx.actor()))
}

/// `POST /admin/ca/compromise`: [`ca_core::Ca::compromise`] for an administrator, with step-up
/// and the typed confirmation.
pub(crate) async fn compromise(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<CompromiseForm>,
) -> Page {
    let (which, actor) = own_cert_action(&req, &console, &form.csrf_token, &form.ca, &form.totp_code)?;
    let c = console.clone();
    let confirm = form.confirm.clone();
    web::block(move || c.ca.compromise(which, &confirm, &actor)).await??;
    Ok(see_other(&format!("/admin/settings?compromised={which}")))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RekeyForm {
    csrf_token: Option<String>,
    #[serde(default)]
    ca: String,
    totp_code: Option<String>,
}

/// `POST /admin/ca/rekey`: [`ca_core::Ca::rekey`] for an administrator, with step-up: a new key in
/// custody and a new certificate for a service of the CA.
pub(crate) async fn rekey(req: HttpRequest, console: web::Data<Console>, form: web::Form<RekeyForm>) -> Page {
    let (which, actor) = own_cert_action(&req, &console, &form.csrf_token, &form.ca, &form.totp_code)?;
    let c = console.clone();
    let rec = web::block(move || c.ca.rekey(which, &actor)).await??;
    Ok(see_other(&format!("/admin/settings?rekeyed={which}:{}", rec.serial)))
}

pub(crate) async fn settings(
    req: HttpRequest,
    console: web::Data<Console>,
    query: web::Query<SettingsQuery>,
) -> Page {
    let ctx = guard(&req, &console, Perm::Settings)?;
    let done: Option<ca_core::OwnCert> = query.compromised.as_deref().and_then(|s| s.parse().ok());
    let rekeyed = query.rekeyed.as_deref().and_then(|s| {
        let (which, serial) = s.split_once(':')?;
        Some((which.parse::<ca_core::OwnCert>().ok()?, serial.parse::<cerdb::Serial>().ok()?))
    });
    let cfg = &console.cfg;
    let ca = console.ca.config();
    let body = html! {
        p { "Settings are read from " code { "pki.toml" } " when " code { "pki serve" } " starts; change them there." }
        h2 { "Console" }
        table #console-settings {
            tr { th { "idle timeout" } td { (cfg.idle_timeout_secs) " s" } }
            tr { th { "absolute timeout" } td { (cfg.absolute_timeout_secs) " s" } }
            tr { th { "failed logins before lockout" } td { (cfg.max_failed_logins) } }
            tr { th { "lockout" } td { (cfg.lockout_secs) " s" } }
            tr { th { "step-up window" } td { (cfg.step_up_secs) " s" } }
            tr { th { "TOTP issuer" } td { (cfg.totp_issuer) } }
        }
        h2 { "Certificate authority" }
        table #ca-settings {
            tr { th { "public base URL" } td { (ca.public_base_url) } }
            tr { th { "subscriber validity" } td { (ca.leaf.validity_days) " days" } }
            tr { th { "minimum RSA size" } td { (ca.leaf.min_rsa_bits) " bits" } }
            tr { th { "generated key type" } td { (ca.leaf.default_generated_key_type) } }
            tr { th { "CRL validity" } td { (ca.crl.validity_hours) " h" } }
        }
        h2 { "The CA's own certificates" }
        @if let Some(which) = done { p.notice #compromised { "The " (which) " certificate is revoked; nothing is issued or signed under it any more." } }
        @if let Some((which, serial)) = rekeyed { p.notice #rekeyed { "The " (which) " certificate is now " code { (serial) } ", with a new key in custody." } }
        table #own-certificates {
            @for which in ca_core::OwnCert::ALL {
                tr { th { (which) } td { (if console.ca.is_compromised(which) { "revoked: key compromised" } else { "in use" }) } }
            }
        }
        form.card #compromise method="post" action="/admin/ca/compromise" {
            h2 { "Key compromised" }
            p { "Revokes the certificate (issuing CA: cACompromise; OCSP signer, TSA, TLS: keyCompromise), at once and for good: nothing is issued or signed under it any more. The same as " code { "pki ca compromise" } "." }
            (csrf(&ctx.session.csrf_token))
            label { "Certificate" select name="ca" {
                @for which in ca_core::OwnCert::ALL { option value=(which.name()) { (which) } }
            } }
            label { "Type " code { "compromise " i { "certificate" } } " to confirm" input type="text" name="confirm" autocomplete="off" required; }
            (step_up_field(ctx.stepped_up(&console)))
            button type="submit" { "Revoke for compromise" }
        }
        form.card #rekey method="post" action="/admin/ca/rekey" {
            h2 { "New key" }
            p { "Puts a new key, generated in custody, with a new certificate in use at once: after a compromise, so that OCSP answers, timestamps, HTTPS and audit checkpoints are signed again, or whenever a new key is wanted. The OCSP and audit signers are certified by the issuing CA (the audit signer by the root once the issuing CA is compromised), the TSA and TLS certificates by the root. The same as " code { "pki ca rekey" } "." }
            (csrf(&ctx.session.csrf_token))
            label { "Certificate" select name="ca" {
                @for which in ca_core::OwnCert::ALL.into_iter().filter(|w| *w != ca_core::OwnCert::Issuing) { option value=(which.name()) { (which) } }
            } }
            (step_up_field(ctx.stepped_up(&console)))
            button type="submit" { "Put a new key in use" }
        }
    };
    Ok(html_response(StatusCode::OK, page("Settings", Some(&ctx), body)))
}
