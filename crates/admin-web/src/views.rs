//! The page layout and shared bits of markup (maud: compiled at build time, escaped by default).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use maud::{html, Markup, DOCTYPE};

use crate::auth::{Ctx, Perm};

/// The stylesheet, served from `/admin/static/console.css` (no inline styles: CSP).
pub(crate) const CSS: &str = include_str!("console.css");

/// A full page. `ctx` is the logged-in user, for the navigation.
pub(crate) fn page(title: &str, ctx: Option<&Ctx>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — PKI console" }
                link rel="stylesheet" href="/admin/static/console.css";
            }
            body {
                header {
                    a.brand href="/admin/" { "PKI console" }
                    @if let Some(ctx) = ctx {
                        nav {
                            a href="/admin/" { "Dashboard" }
                            a href="/admin/certificates" { "Certificates" }
                            @if ctx.can(Perm::Issue) { a href="/admin/issue" { "Issue" } }
                            @if ctx.can(Perm::Recover) { a href="/admin/escrow" { "Escrow recovery" } }
                            a href="/admin/validations" { "Mailbox validations" }
                            a href="/admin/audit" { "Audit log" }
                            a href="/admin/timestamps" { "Timestamps" }
                            @if ctx.can(Perm::ManageUsers) { a href="/admin/users" { "Users" } }
                            @if ctx.can(Perm::Settings) { a href="/admin/settings" { "Settings" } }
                        }
                        div.who {
                            a href="/admin/password" { (ctx.user.name) } " (" (ctx.role()) ")"
                            form method="post" action="/admin/logout" {
                                (csrf(&ctx.session.csrf_token))
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(token); }
}

/// The TOTP field of a step-up form.
pub(crate) fn step_up_field(fresh: bool) -> Markup {
    html! {
        label {
            "TOTP code"
            @if fresh { " (optional: you entered one in the last minutes)" } @else { " (required: step-up)" }
            input type="text" name="totp_code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" maxlength="7" required[!fresh];
        }
    }
}

/// An HTML response.
pub(crate) fn html_response(status: StatusCode, m: Markup) -> HttpResponse {
    HttpResponse::build(status).content_type("text/html; charset=utf-8").body(m.into_string())
}

/// The error page.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("Error"));
    page(
        &title,
        None,
        html! {
            p.error { (message) }
            p { a href="/admin/" { "Back to the console" } }
        },
    )
}

/// `application/x-www-form-urlencoded` escaping for links.
pub(crate) fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A time as shown.
pub(crate) fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
