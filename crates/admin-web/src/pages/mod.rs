//! The routes, and the login pages: password, TOTP, first-login password change and TOTP
//! enrolment, logout.

mod audit;
mod certs;
mod timestamps;
mod users;
mod validations;

use std::time::{Duration, Instant};

use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, Route, Scope};
use ca_core::AuditAction;
use cerdb::console_store::SessionStage;
use maud::{html, PreEscaped};
use serde::Deserialize;

use crate::auth::{self, Ctx, LOGIN_COOKIE, SESSION_COOKIE};
use crate::views::{csrf, html_response, page, CSS};
use crate::{qr, totp, Console, Error};

pub(crate) type Page = Result<HttpResponse, Error>;

/// Every route of the console. A page asked with another method than it takes gets the 405 page
/// with `Allow`; HEAD is answered as GET without the body.
pub(crate) fn routes(scope: Scope) -> Scope {
    scope
        .service(get_only("", || async { see_other("/admin/") }))
        .service(get_only("/static/console.css", stylesheet))
        .service(get_and_post("/login", login_page, login_submit))
        .service(get_and_post("/login/totp", totp_page, totp_submit))
        .service(get_and_post("/password", password_page, password_submit))
        .service(get_and_post("/totp/enrol", enrol_page, enrol_submit))
        .service(post_only("/logout", logout))
        .service(get_only("/", certs::dashboard))
        .service(get_only("/certificates", certs::list))
        .service(get_only("/certificates/{serial}", certs::detail))
        .service(get_only("/certificates/{serial}/pem", certs::pem))
        .service(post_only("/certificates/{serial}/revoke", certs::revoke))
        .service(get_only("/issue", certs::issue_page))
        .service(post_only("/issue/csr", certs::issue_csr))
        .service(post_only("/issue/generate", certs::issue_generate))
        .service(get_only("/escrow", certs::escrow_page))
        .service(post_only("/escrow/request", certs::escrow_request))
        .service(post_only("/escrow/{id}/approve", certs::escrow_approve))
        .service(post_only("/escrow/{id}/release", certs::escrow_release))
        .service(get_only("/validations", validations::page_of_evidence))
        .service(post_only("/validations/send", validations::send))
        .service(post_only("/validations/confirm", validations::confirm))
        .service(get_only("/audit", audit::audit_log))
        .service(get_only("/timestamps", timestamps::timestamps_page))
        .service(post_only("/timestamps/verify", timestamps::timestamps_verify))
        .service(get_and_post("/users", users::list, users::add))
        .service(post_only("/users/{name}/disable", users::disable))
        .service(post_only("/users/{name}/enable", users::enable))
        .service(post_only("/users/{name}/reset", users::reset))
        .service(post_only("/users/{name}/confirm-reset", users::confirm_reset))
        .service(get_only("/settings", users::settings))
        .service(post_only("/ca/compromise", users::compromise))
        .service(post_only("/ca/rekey", users::rekey))
        .default_service(web::to(|| async { Err::<HttpResponse, _>(Error::NotFound("no such page".into())) }))
}

/// The page at `path`, its routes added by the caller; any other method gets the 405 page.
fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(Error::MethodNotAllowed { allow })
    }))
}

/// GET (and HEAD) by `handler`.
fn get_route<F, Args>(handler: F) -> Route
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::route().guard(cerdb::directory::get_or_head()).to(handler)
}

/// A page read only: GET and HEAD.
fn get_only<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    resource(path, "GET, HEAD").route(get_route(handler))
}

/// An action: POST only.
fn post_only<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    resource(path, "POST").route(web::post().to(handler))
}

/// A form and its submission at one path.
fn get_and_post<G, GArgs, P, PArgs>(path: &str, get: G, post: P) -> Resource
where
    G: Handler<GArgs>,
    GArgs: FromRequest + 'static,
    G::Output: Responder + 'static,
    P: Handler<PArgs>,
    PArgs: FromRequest + 'static,
    P::Output: Responder + 'static,
{
    resource(path, "GET, HEAD, POST").route(get_route(get)).route(web::post().to(post))
}

/// A 303 redirect.
pub(crate) fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, to.to_string())).finish()
}

fn see_other_with_cookie(to: &str, cookie: String) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .append_header((header::SET_COOKIE, cookie))
        .finish()
}

/// `page=` of a paged view (the certificates, the audit log): absent or empty is the first page;
/// anything but a number is refused naming the field.
pub(crate) fn page_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| {
            let shown: String = t.chars().take(40).collect();
            let more = if shown.len() < t.len() { "…" } else { "" };
            serde::de::Error::custom(format!("page {shown:?}{more} is not a page number (1, 2, …)"))
        }),
    }
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css; charset=utf-8").body(CSS)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    expired: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    csrf_token: Option<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// The same words for every failure: unknown user, wrong password, locked, disabled.
const LOGIN_FAILED: &str = "Login failed: the user name or password is wrong, or the account is locked or \
                            disabled. Five failed logins lock an account for 15 minutes.";

fn login_form(req: &HttpRequest, console: &Console, status: StatusCode, message: Option<&str>) -> Page {
    let existing = auth::cookie(req, LOGIN_COOKIE).filter(|v| v.len() == 64 && hex::decode(v).is_ok());
    let (pre, set) = match existing {
        Some(v) => (v, None),
        None => {
            let v = hex::encode(auth::random32()?);
            let c = auth::set_cookie(req, LOGIN_COOKIE, &v, false);
            (v, Some(c))
        }
    };
    let token = auth::login_token(console, &pre);
    let body = html! {
        @if let Some(m) = message { p.error #login-error { (m) } }
        form.card method="post" action="/admin/login" {
            (csrf(&token))
            label { "User name" input type="text" name="username" autocomplete="username" required autofocus; }
            label { "Password" input type="password" name="password" autocomplete="current-password" required; }
            button type="submit" { "Log in" }
        }
    };
    let mut b = HttpResponse::build(status);
    b.content_type("text/html; charset=utf-8");
    if let Some(c) = set {
        auth::with_cookie(&mut b, c);
    }
    Ok(b.body(page("Log in", None, body).into_string()))
}

/// `429` with the login form: too many failed logins from the client's address.
fn throttled(req: &HttpRequest, console: &Console, wait: Duration) -> Page {
    let secs = wait.as_secs().max(1);
    let minutes = secs.div_ceil(60);
    let message = format!(
        "Too many failed logins from your address: try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    );
    let mut resp = login_form(req, console, StatusCode::TOO_MANY_REQUESTS, Some(&message))?;
    if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Ok(resp)
}

async fn login_page(req: HttpRequest, console: web::Data<Console>, q: web::Query<LoginQuery>) -> Page {
    if let Ok(ctx) = auth::current(&req, &console) {
        return Ok(see_other(auth::stage_page(ctx.session.stage)));
    }
    let msg = q.expired.as_ref().map(|_| "Your session has expired; please log in again.");
    login_form(&req, &console, StatusCode::OK, msg)
}

async fn login_submit(req: HttpRequest, console: web::Data<Console>, form: web::Form<LoginForm>) -> Page {
    auth::check_login_token(&req, &console, form.csrf_token.as_deref())?;
    let peer = req.peer_addr().map(|a| a.ip());
    if let Some(wait) = peer.and_then(|ip| console.throttle.check(ip, Instant::now())) {
        return throttled(&req, &console, wait);
    }
    let LoginForm { username, password, .. } = form.into_inner();
    let c = console.clone();
    let result = web::block(move || c.accounts().check_password(&username, &password, &c.cfg)).await??;
    let user = match result {
        Ok(u) => u,
        Err(why) => {
            tracing::info!(?why, "console login failed");
            if let Some(ip) = peer {
                console.throttle.record_failure(ip, Instant::now());
            }
            return login_form(&req, &console, StatusCode::FORBIDDEN, Some(LOGIN_FAILED));
        }
    };
    if user.must_change_password {
        // The one-time password of a reset has served: its file on the server goes.
        if let Some(dir) = &console.resets_dir {
            if let Err(e) = crate::otp_file::remove(dir, &user.name) {
                tracing::error!(error = %e, "cannot delete the one-time password file");
            }
        }
    }
    if let Some(old) = auth::cookie(&req, SESSION_COOKIE).and_then(|v| v.parse().ok()) {
        console.store.remove_session(&old)?;
    }
    let stage = match auth::next_stage(&user) {
        SessionStage::Active => SessionStage::NeedTotp,
        other => other,
    };
    let cookie = auth::start_session(&req, &console, &user, stage, false)?;
    Ok(see_other_with_cookie(auth::stage_page(stage), cookie))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CodeForm {
    pub csrf_token: Option<String>,
    #[serde(default)]
    pub code: String,
}

fn code_form(ctx: &Ctx, action: &str, intro: &str) -> maud::Markup {
    html! {
        form.card method="post" action=(action) {
            p { (intro) }
            (csrf(&ctx.session.csrf_token))
            label { "TOTP code" input type="text" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" maxlength="7" required autofocus; }
            button type="submit" { "Continue" }
        }
    }
}

async fn totp_page(req: HttpRequest, console: web::Data<Console>) -> Page {
    let ctx = auth::guard_stage(&req, &console, SessionStage::NeedTotp, false)?;
    let body = code_form(&ctx, "/admin/login/totp", "Enter the code your authenticator app shows.");
    Ok(html_response(StatusCode::OK, page("Two-factor authentication", None, body)))
}

/// Completes a login: the session becomes active under a new id, with a fresh step-up.
fn finish_login(req: &HttpRequest, console: &Console, ctx: &Ctx) -> Page {
    let cookie = auth::advance(req, console, ctx, SessionStage::Active, true)?;
    console.accounts().record_login(&ctx.user.name)?;
    Ok(see_other_with_cookie("/admin/", cookie))
}

async fn totp_submit(req: HttpRequest, console: web::Data<Console>, form: web::Form<CodeForm>) -> Page {
    let ctx = auth::guard_stage(&req, &console, SessionStage::NeedTotp, false)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let peer = req.peer_addr().map(|a| a.ip());
    if let Some(wait) = peer.and_then(|ip| console.throttle.check(ip, Instant::now())) {
        return throttled(&req, &console, wait);
    }
    if let Err(e) = console.accounts().check_totp(&ctx.user.name, &form.code, &console.cfg) {
        if let (Error::InvalidTotp, Some(ip)) = (&e, peer) {
            console.throttle.record_failure(ip, Instant::now());
        }
        return Err(e);
    }
    finish_login(&req, &console, &ctx)
}

#[derive(Debug, Deserialize)]
struct PasswordForm {
    csrf_token: Option<String>,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

async fn password_page(req: HttpRequest, console: web::Data<Console>) -> Page {
    let ctx = auth::guard_stage(&req, &console, SessionStage::NeedNewPassword, true)?;
    let voluntary = ctx.session.stage == SessionStage::Active;
    let body = html! {
        @if !voluntary {
            p.notice { "You logged in with a one-time password. Choose your own password now; then set up two-factor authentication." }
        }
        form.card method="post" action="/admin/password" {
            (csrf(&ctx.session.csrf_token))
            @if voluntary {
                label { "Current password" input type="password" name="current_password" autocomplete="current-password" required; }
            }
            label { "New password (at least 12 characters, not a common password)"
                input type="password" name="new_password" autocomplete="new-password" minlength="12" required; }
            label { "New password again" input type="password" name="confirm_password" autocomplete="new-password" minlength="12" required; }
            button type="submit" { "Set password" }
        }
    };
    let nav = voluntary.then_some(&ctx);
    Ok(html_response(StatusCode::OK, page("Change password", nav, body)))
}

async fn password_submit(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<PasswordForm>,
) -> Page {
    let ctx = auth::guard_stage(&req, &console, SessionStage::NeedNewPassword, true)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let form = form.into_inner();
    if form.new_password != form.confirm_password {
        return Err(Error::WeakPassword("the two new passwords differ".into()));
    }
    let voluntary = ctx.session.stage == SessionStage::Active;
    let c = console.clone();
    let name = ctx.user.name.clone();
    let hash = ctx.user.password_hash.clone();
    let cfg = console.cfg.clone();
    web::block(move || -> Result<(), Error> {
        let accounts = c.accounts();
        if voluntary && !crate::password::verify(&hash, &form.current_password) {
            accounts.record_failure(&name, &cfg, c.ca.now())?;
            return Err(Error::BadRequest("the current password is wrong".into()));
        }
        if crate::password::verify(&hash, &form.new_password) {
            return Err(Error::WeakPassword("it is the password you have now".into()));
        }
        accounts.change_password(&name, &form.new_password)
    })
    .await??;
    if voluntary {
        // Every session of the account ends; this one starts again.
        console.store.remove_sessions_of(&ctx.user.name)?;
        let user = console.accounts().get(&ctx.user.name)?;
        let cookie = auth::start_session(&req, &console, &user, SessionStage::Active, false)?;
        return Ok(see_other_with_cookie("/admin/", cookie));
    }
    let user = console.accounts().get(&ctx.user.name)?;
    let next = match auth::next_stage(&user) {
        // A login finishes with a TOTP code, never with a password alone.
        SessionStage::Active => SessionStage::NeedTotp,
        other => other,
    };
    let cookie = auth::advance(&req, &console, &ctx, next, false)?;
    Ok(see_other_with_cookie(auth::stage_page(next), cookie))
}

async fn enrol_page(req: HttpRequest, console: web::Data<Console>) -> Page {
    let mut ctx = auth::guard_stage(&req, &console, SessionStage::NeedTotpEnrolment, false)?;
    let accounts = console.accounts();
    let shown = match &ctx.session.pending_totp_sealed {
        Some(sealed) => Some(accounts.open_enrolment_secret(&ctx.user.name, sealed)?),
        None => None,
    };
    let secret = match shown {
        Some(s) => s,
        None => {
            let s = auth::random32()?[..totp::SECRET_LEN].to_vec();
            ctx.session.pending_totp_sealed = Some(accounts.seal_enrolment_secret(&ctx.user.name, &s)?);
            console.store.put_session(&ctx.id, &ctx.session)?;
            s
        }
    };
    let uri = totp::otpauth_uri(&console.cfg.totp_issuer, ctx.user.name.as_str(), &secret);
    let svg = qr::svg(&uri)?;
    let body = html! {
        p { "Add this key to your authenticator app (scan the QR code or type the key), then enter the code it shows." }
        section.card {
            (PreEscaped(svg))
            p { "Key: " code.secret #totp-secret { (totp::base32_grouped(&secret)) } }
            p { "Key URI: " code.mono #totp-uri { (uri) } }
            p { "TOTP (RFC 6238): SHA-1, 6 digits, 30-second period." }
        }
        (code_form(&ctx, "/admin/totp/enrol", "Code from the app, to confirm:"))
    };
    Ok(html_response(StatusCode::OK, page("Set up two-factor authentication", None, body)))
}

async fn enrol_submit(req: HttpRequest, console: web::Data<Console>, form: web::Form<CodeForm>) -> Page {
    let ctx = auth::guard_stage(&req, &console, SessionStage::NeedTotpEnrolment, false)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let sealed = ctx
        .session
        .pending_totp_sealed
        .as_deref()
        .ok_or_else(|| Error::BadRequest("reload the enrolment page to get a key".into()))?;
    let accounts = console.accounts();
    let secret = accounts.open_enrolment_secret(&ctx.user.name, sealed)?;
    accounts.confirm_totp(&ctx.user.name, &secret, &form.code)?;
    finish_login(&req, &console, &ctx)
}

#[derive(Debug, Deserialize)]
struct CsrfOnly {
    csrf_token: Option<String>,
}

async fn logout(req: HttpRequest, console: web::Data<Console>, form: web::Form<CsrfOnly>) -> Page {
    let ctx = auth::current(&req, &console)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    console.store.remove_session(&ctx.id)?;
    if ctx.session.stage == SessionStage::Active {
        console.ca.audit_event(&ctx.actor(), AuditAction::ConsoleLogout, true, "")?;
    }
    Ok(see_other_with_cookie("/admin/login", auth::set_cookie(&req, SESSION_COOKIE, "", true)))
}
