//! Sessions, cookies, permissions, CSRF and step-up: every handler starts with [`guard`] (or
//! [`guard_stage`] during login) and checks the CSRF token of every POST.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponseBuilder};
use ca_core::AuditAction;
use cerdb::console_store::{ConsoleRole, ConsoleSession, ConsoleUser, SessionId, SessionStage};
use chrono::{DateTime, Utc};
use ring::rand::{SecureRandom, SystemRandom};

use crate::accounts::{actor, secs};
use crate::{Console, Error};

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "pki_console_session";
/// The pre-login cookie that binds the login form's CSRF token.
pub(crate) const LOGIN_COOKIE: &str = "pki_console_login";

/// What a page needs the role to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Perm {
    /// Read certificates, the dashboard, the audit log; verify timestamps.
    Read,
    /// Issue certificates.
    Issue,
    /// Revoke certificates.
    Revoke,
    /// Recover escrowed keys.
    Recover,
    /// Manage accounts.
    ManageUsers,
    /// See the settings.
    Settings,
    /// Revoke one of the CA's own certificates (`pki ca compromise`).
    CompromiseCa,
}

impl Perm {
    fn action(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::Issue => "issue certificates",
            Perm::Revoke => "revoke certificates",
            Perm::Recover => "recover escrowed keys",
            Perm::ManageUsers => "manage console users",
            Perm::Settings => "see the settings",
            Perm::CompromiseCa => "revoke the CA's own certificates",
        }
    }
}

/// The permission matrix: officers act on certificates, admins on accounts and settings,
/// everyone reads.
pub(crate) fn allowed(role: ConsoleRole, perm: Perm) -> bool {
    match perm {
        Perm::Read => true,
        Perm::Issue | Perm::Revoke | Perm::Recover => role == ConsoleRole::Officer,
        Perm::ManageUsers | Perm::Settings | Perm::CompromiseCa => role == ConsoleRole::Admin,
    }
}

/// A logged-in request.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub id: SessionId,
    pub session: ConsoleSession,
    pub user: ConsoleUser,
}

impl Ctx {
    pub fn actor(&self) -> String {
        actor(&self.user.name)
    }

    pub fn role(&self) -> ConsoleRole {
        self.user.role
    }

    pub fn can(&self, perm: Perm) -> bool {
        allowed(self.user.role, perm)
    }

    /// Checks the form's CSRF token against the session's.
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), Error> {
        let Some(token) = token else { return Err(Error::Csrf) };
        if crate::ct_eq(token.as_bytes(), self.session.csrf_token.as_bytes()) {
            Ok(())
        } else {
            Err(Error::Csrf)
        }
    }

    /// Step-up: a TOTP code entered within the configured window, or `code` now (which then
    /// starts a new window).
    pub fn step_up(&mut self, console: &Console, code: Option<&str>) -> Result<(), Error> {
        let now = console.ca.now();
        let code = code.map(str::trim).filter(|c| !c.is_empty());
        if let Some(code) = code {
            console.accounts().check_step_up_totp(&self.user.name, code, &console.cfg)?;
            self.session.step_up_at = Some(now);
            console.store.put_session(&self.id, &self.session)?;
            console.ca.audit_event(&self.actor(), AuditAction::ConsoleStepUp, true, "")?;
            return Ok(());
        }
        let fresh = self.session.step_up_at.is_some_and(|t| now - t <= secs(console.cfg.step_up_secs));
        if fresh {
            Ok(())
        } else {
            Err(Error::StepUpRequired)
        }
    }

    /// Whether a step-up is currently valid (forms then say the code is optional).
    pub fn stepped_up(&self, console: &Console) -> bool {
        self.session.step_up_at.is_some_and(|t| console.ca.now() - t <= secs(console.cfg.step_up_secs))
    }
}

/// The value of cookie `name`.
pub(crate) fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    for h in req.headers().get_all(header::COOKIE) {
        let Ok(text) = h.to_str() else { continue };
        for part in text.split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k == name {
                    return Some(v.trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict`, `Secure` over TLS, scoped to `/admin`.
pub(crate) fn set_cookie(req: &HttpRequest, name: &str, value: &str, clear: bool) -> String {
    let mut c = format!("{name}={value}; Path=/admin; HttpOnly; SameSite=Strict");
    if req.app_config().secure() {
        c.push_str("; Secure");
    }
    if clear {
        c.push_str("; Max-Age=0");
    }
    c
}

pub(crate) fn random32() -> Result<[u8; 32], Error> {
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).map_err(|_| Error::Internal("no randomness".into()))?;
    Ok(b)
}

fn expired(console: &Console, s: &ConsoleSession, now: DateTime<Utc>) -> bool {
    now - s.last_seen > secs(console.cfg.idle_timeout_secs)
        || now - s.created_at > secs(console.cfg.absolute_timeout_secs)
}

/// The page of a login step.
pub(crate) fn stage_page(stage: SessionStage) -> &'static str {
    match stage {
        SessionStage::NeedTotp => "/admin/login/totp",
        SessionStage::NeedNewPassword => "/admin/password",
        SessionStage::NeedTotpEnrolment => "/admin/totp/enrol",
        SessionStage::Active => "/admin/",
    }
}

/// The session of the request, whatever its stage, if it is alive; touched (idle timeout
/// restarts). Expired sessions are deleted.
pub(crate) fn current(req: &HttpRequest, console: &Console) -> Result<Ctx, Error> {
    let id: SessionId = cookie(req, SESSION_COOKIE)
        .and_then(|v| v.parse().ok())
        .ok_or(Error::NotLoggedIn { expired: false })?;
    let mut session = console.store.session(&id)?.ok_or(Error::NotLoggedIn { expired: false })?;
    let now = console.ca.now();
    if expired(console, &session, now) {
        console.store.remove_session(&id)?;
        return Err(Error::NotLoggedIn { expired: true });
    }
    let user = match console.store.user(&session.user)? {
        // A locked account keeps its open sessions (the lock refuses new logins only); a
        // session still in a login step cannot finish it while the lock lasts (see
        // `Accounts::check_totp`).
        Some(u) if !u.disabled => u,
        _ => {
            console.store.remove_session(&id)?;
            return Err(Error::NotLoggedIn { expired: false });
        }
    };
    session.last_seen = now;
    console.store.put_session(&id, &session)?;
    Ok(Ctx { id, session, user })
}

/// A fully logged-in request whose role allows `perm`.
pub(crate) fn guard(req: &HttpRequest, console: &Console, perm: Perm) -> Result<Ctx, Error> {
    let ctx = current(req, console)?;
    if ctx.session.stage != SessionStage::Active {
        return Err(Error::LoginIncomplete { next: stage_page(ctx.session.stage) });
    }
    if !ctx.can(perm) {
        tracing::warn!(user = %ctx.user.name, role = %ctx.user.role, action = perm.action(), "console: refused by role");
        return Err(Error::Forbidden { role: ctx.user.role.name(), action: perm.action() });
    }
    Ok(ctx)
}

/// A request in login step `stage` (or, where `allow_active`, fully logged in).
pub(crate) fn guard_stage(
    req: &HttpRequest,
    console: &Console,
    stage: SessionStage,
    allow_active: bool,
) -> Result<Ctx, Error> {
    let ctx = current(req, console)?;
    if ctx.session.stage == stage || (allow_active && ctx.session.stage == SessionStage::Active) {
        Ok(ctx)
    } else {
        Err(Error::LoginIncomplete { next: stage_page(ctx.session.stage) })
    }
}

/// Starts a session for `user` at `stage` under a fresh id (never reusing the cookie the
/// browser came with); the `Set-Cookie` value.
pub(crate) fn start_session(
    req: &HttpRequest,
    console: &Console,
    user: &ConsoleUser,
    stage: SessionStage,
    step_up: bool,
) -> Result<String, Error> {
    let now = console.ca.now();
    // Clean-up of sessions nobody will come back to.
    console.store.remove_sessions_where(&|s| expired(console, s, now))?;
    let id = SessionId::from_bytes(random32()?);
    let session = ConsoleSession {
        user: user.name.clone(),
        stage,
        created_at: now,
        last_seen: now,
        csrf_token: hex::encode(random32()?),
        step_up_at: step_up.then_some(now),
        pending_totp_sealed: None,
    };
    console.store.put_session(&id, &session)?;
    Ok(set_cookie(req, SESSION_COOKIE, &id.to_string(), false))
}

/// Moves a session to its next stage under a new id (the old one is deleted); the `Set-Cookie`
/// value. The absolute timeout still counts from the first login step.
pub(crate) fn advance(
    req: &HttpRequest,
    console: &Console,
    ctx: &Ctx,
    stage: SessionStage,
    step_up: bool,
) -> Result<String, Error> {
    let now = console.ca.now();
    let id = SessionId::from_bytes(random32()?);
    let mut session = ctx.session.clone();
    session.stage = stage;
    session.pending_totp_sealed = None;
    session.csrf_token = hex::encode(random32()?);
    if step_up {
        session.step_up_at = Some(now);
    }
    console.store.put_session(&id, &session)?;
    console.store.remove_session(&ctx.id)?;
    Ok(set_cookie(req, SESSION_COOKIE, &id.to_string(), false))
}

/// The stage after the password step for `user`.
pub(crate) fn next_stage(user: &ConsoleUser) -> SessionStage {
    if user.must_change_password {
        SessionStage::NeedNewPassword
    } else if !user.has_totp() {
        SessionStage::NeedTotpEnrolment
    } else {
        SessionStage::Active
    }
}

/// The login form's CSRF token: an HMAC of the pre-login cookie.
pub(crate) fn login_token(console: &Console, pre: &str) -> String {
    hex::encode(ring::hmac::sign(&console.login_key, format!("login:{pre}").as_bytes()))
}

/// Checks the login form's token against the pre-login cookie.
pub(crate) fn check_login_token(
    req: &HttpRequest,
    console: &Console,
    token: Option<&str>,
) -> Result<(), Error> {
    let pre = cookie(req, LOGIN_COOKIE).ok_or(Error::Csrf)?;
    let token = token.ok_or(Error::Csrf)?;
    let tag = hex::decode(token).map_err(|_| Error::Csrf)?;
    ring::hmac::verify(&console.login_key, format!("login:{pre}").as_bytes(), &tag).map_err(|_| Error::Csrf)
}

/// Adds a `Set-Cookie` header.
pub(crate) fn with_cookie(b: &mut HttpResponseBuilder, c: String) -> &mut HttpResponseBuilder {
    b.append_header((header::SET_COOKIE, c))
}
