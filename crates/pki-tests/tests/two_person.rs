//! Two people for the dangerous things (issue 16, item 3), against the real `pki serve`, through
//! the console (loopback HTTP, as the other console tests) and the CLI:
//!
//! - escrow recovery by one officer stays pending; a second officer's approval releases the
//!   PKCS#12 to the requester, once; the requester's own approval is refused; an expired request
//!   cannot be approved; garbage ids and reasons are refused with a clear error;
//! - an administrator's reset of an officer never shows that officer's password to the
//!   administrator (it is in a file on the server), and the reset officer takes no part in escrow
//!   recovery until a second administrator — not the one who reset it — confirms the reset.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pki_tests::console_support::*;
use pki_tests::*;

const PW: &str = "Correct-Horse-Battery-9";
const P12_PW: &str = "recovered-key-pw";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Issues an encryption certificate for `email` with a key escrowed by the CA; its serial.
fn escrowed(env: &Env, email: &str) -> String {
    let pw = env.write("subscriber.pw", "subscriber-password\n");
    let p12 = env.path(&format!("{email}.p12"));
    env.pki([
        "issue",
        "--email",
        email,
        "--usage",
        "encryption",
        "--generate",
        "--key-type",
        "p256",
        "--p12",
        &p(&p12),
        "--p12-password-file",
        &p(&pw),
    ]);
    parse_list(&env.pki(["list", "--email", email]).stdout).pop().unwrap().serial
}

/// Requests the recovery of `serial` in the console (the step-up of the login is still fresh,
/// as for the other steps below).
fn request(c: &mut Client, serial: &str, reason: &str) -> Resp {
    let token = c.csrf("/admin/escrow");
    c.post_form("/admin/escrow/request", &[("csrf_token", &token), ("serial", serial), ("reason", reason)])
}

/// [`request`], which must succeed; the request id.
fn request_ok(c: &mut Client, serial: &str) -> String {
    let r = request(c, serial, "mailbox key lost");
    assert_eq!(r.status, 303, "request: {}", r.text());
    r.location().strip_prefix("/admin/escrow?requested=").unwrap().to_string()
}

fn approve(c: &mut Client, id: &str) -> Resp {
    let token = c.csrf("/admin/escrow");
    c.post_form(&format!("/admin/escrow/{id}/approve"), &[("csrf_token", &token)])
}

fn release(c: &mut Client, id: &str) -> Resp {
    let token = c.csrf("/admin/escrow");
    c.post_form(
        &format!("/admin/escrow/{id}/release"),
        &[("csrf_token", &token), ("p12_password", P12_PW), ("p12_password_confirm", P12_PW)],
    )
}

/// A console error page: `status`, HTML, naming every one of `names`.
fn refused(r: &Resp, status: u16, names: &[&str], what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"), "{what}");
    let text = html_unescape(&r.text());
    for n in names {
        assert!(text.contains(n), "{what}: the page does not say {n:?}: {text}");
    }
}

/// The row of request `id` on the escrow page as `c` sees it.
fn row(c: &mut Client, id: &str) -> String {
    let page = c.get("/admin/escrow").text();
    let at = page.find(&format!("id=\"recovery-{id}\"")).unwrap_or_else(|| panic!("no row {id}: {page}"));
    let end = page[at..].find("</tr>").unwrap() + at;
    page[at..end].to_string()
}

fn audit_lines(c: &mut Client, action: &str) -> String {
    c.get(&format!("/admin/audit?action={action}")).text()
}

fn pkcs12_opens(env: &Env, p12: &[u8], name: &str) {
    let f = env.write(name, p12);
    let out = openssl(["pkcs12", "-in", &p(&f), "-passin", &format!("pass:{P12_PW}"), "-nodes"]);
    assert!(out.stdout.contains("PRIVATE KEY") && out.stdout.contains("CERTIFICATE"), "{}", out.stderr);
}

#[test]
fn one_officer_stays_pending_a_second_releases_the_key_to_the_requester_once() {
    let env = Env::new();
    env.init();
    let _server = env.serve();
    let (mut olivia, _) = console_user(&env, "olivia", "officer", PW);
    let (mut oscar, _) = console_user(&env, "oscar", "officer", PW);
    let serial = escrowed(&env, "bob@example.com");

    // Olivia asks; alone, the request stays pending.
    let id = request_ok(&mut olivia, &serial);
    assert_eq!(id.len(), 32, "{id}");
    let mine = row(&mut olivia, &id);
    assert!(mine.contains("pending 1/2") && mine.contains(&serial), "{mine}");
    assert!(
        !mine.contains("Approve") && !mine.contains("Download"),
        "no buttons for her own request: {mine}"
    );
    refused(&release(&mut olivia, &id), 409, &["1 of the 2 officers"], "release before approval");
    // Her own approval is refused, in the console and through the CLI as the same officer.
    refused(&approve(&mut olivia, &id), 403, &["console:olivia", "cannot approve"], "own approval");
    let line = env.pki_as_try("olivia", ["escrow", "approve", &id]).one_error_line();
    assert!(line.contains("cannot approve"), "{line}");
    let list = env.pki(["escrow", "list"]).stdout;
    assert!(list.contains(&id) && list.contains("pending 1/2") && list.contains("console:olivia"), "{list}");

    // Oscar sees an Approve button, approves; the request is then complete.
    assert!(row(&mut oscar, &id).contains("Approve"));
    let r = approve(&mut oscar, &id);
    assert_eq!((r.status, r.location()), (303, format!("/admin/escrow?approved={id}")), "{}", r.text());
    refused(&approve(&mut oscar, &id), 409, &["console:oscar approved", "already"], "a second approval");
    assert!(!row(&mut oscar, &id).contains("Download"), "only the requester downloads");
    refused(&release(&mut oscar, &id), 403, &["only console:olivia"], "release by the approver");

    // Olivia downloads the PKCS#12, once.
    let mine = row(&mut olivia, &id);
    assert!(
        mine.contains("approved") && mine.contains("Download") && mine.contains("console:oscar"),
        "{mine}"
    );
    let r = release(&mut olivia, &id);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-pkcs12"));
    pkcs12_opens(&env, &r.body, "bob-recovered.p12");
    refused(&release(&mut olivia, &id), 409, &["was released", "used once"], "a third attempt");
    refused(&approve(&mut oscar, &id), 409, &["was released"], "an approval after the release");
    assert!(row(&mut olivia, &id).contains("released"));

    // Each step is in the audit log, refusals included.
    for (action, actor) in [
        ("escrow.request", "console:olivia"),
        ("escrow.approve", "console:oscar"),
        ("escrow.recover", "console:olivia"),
    ] {
        let page = audit_lines(&mut oscar, action);
        assert!(page.contains(actor) && page.contains(&serial), "{action}: {page}");
    }
    assert!(audit_lines(&mut oscar, "escrow.approve").contains("refused: console:olivia made"));

    // The CLI: request (the id on stdout), approval by another officer, download by the requester.
    let out = env.pki_as("carl", ["escrow", "request", "--serial", &serial, "--reason", "court order 17"]);
    let cli_id = out.stdout.trim().to_string();
    assert_eq!(cli_id.len(), 32, "{}", out.stdout);
    assert!(out.stderr.contains("pki escrow approve"), "{}", out.stderr);
    let pw = env.write("p12.pw", format!("{P12_PW}\n"));
    let rec = env.path("cli-recovered.p12");
    let early = env.pki_as_try(
        "carl",
        ["escrow", "recover", &cli_id, "--out", &p(&rec), "--p12-password-file", &p(&pw)],
    );
    assert!(early.one_error_line().contains("1 of the 2 officers"));
    assert!(!rec.exists());
    env.pki_as("dora", ["escrow", "approve", &cli_id]);
    let out =
        env.pki_as("carl", ["escrow", "recover", &cli_id, "--out", &p(&rec), "--p12-password-file", &p(&pw)]);
    assert!(out.stdout.contains(&serial), "{}", out.stdout);
    pkcs12_opens(&env, &std::fs::read(&rec).unwrap(), "cli-copy.p12");
    let again = env.pki_as_try(
        "carl",
        ["escrow", "recover", &cli_id, "--out", &p(&rec), "--p12-password-file", &p(&pw)],
    );
    assert!(again.one_error_line().contains("used once"));

    // Garbage, in the console: a malformed id, an unknown one, an oversized reason, a bad serial.
    refused(&approve(&mut oscar, "zz"), 400, &["32 hex digits"], "malformed id");
    refused(&approve(&mut oscar, &"0".repeat(32)), 404, &["no escrow recovery request"], "unknown id");
    refused(&release(&mut olivia, &"f".repeat(33)), 400, &["32 hex digits"], "malformed id");
    let long = "x".repeat(501);
    refused(&request(&mut olivia, &serial, &long), 400, &["at most 500"], "oversized reason");
    refused(&request(&mut olivia, "12g4", "x"), 400, &["invalid serial"], "bad serial");
    // ... and in the CLI: one error line each, nothing written.
    env.pki_fails(["escrow", "approve", "zz"], &["invalid recovery request id", "32 hex digits"]);
    env.pki_fails(["escrow", "approve", &"0".repeat(32)], &["no escrow recovery request"]);
    env.pki_fails(["escrow", "request", "--serial", &serial, "--reason", &long], &["at most 500"]);
    let gone = env.path("gone.p12");
    env.pki_fails(
        ["escrow", "recover", "--serial", &serial, "--p12", &p(&gone), "--p12-password-file", &p(&pw)],
        &["one officer is gone", "pki escrow request", "pki escrow approve"],
    );
    assert!(!gone.exists());
}

#[test]
fn an_expired_request_cannot_be_approved_and_one_officer_is_refused_at_load() {
    let bad = Env::with_config("[escrow]\napprovals = 1\n");
    bad.pki_fails(["init"], &["escrow.approvals = 1", "at least 2 officers"]);

    let env = Env::with_config("[escrow]\nrequest_ttl_secs = 2\n");
    env.init();
    let _server = env.serve();
    let serial = escrowed(&env, "erin@example.com");
    let id = env.pki_as("olivia", ["escrow", "request", "--serial", &serial]).stdout.trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let line = env.pki_as_try("oscar", ["escrow", "approve", &id]).one_error_line();
    assert!(line.contains("expired") && line.contains("make a new request"), "{line}");
    assert!(env.pki(["escrow", "list"]).stdout.contains("expired"));
    let pw = env.write("p12.pw", format!("{P12_PW}\n"));
    let line = env
        .pki_as_try(
            "olivia",
            ["escrow", "recover", &id, "--out", &p(&env.path("x.p12")), "--p12-password-file", &p(&pw)],
        )
        .one_error_line();
    assert!(line.contains("expired"), "{line}");
    assert!(!env.path("x.p12").exists());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn reset_file(env: &Env, name: &str) -> PathBuf {
    env.data.join("console-resets").join(format!("{name}.txt"))
}

#[test]
fn an_admin_reset_never_shows_the_password_and_the_officer_waits_for_a_second_admin() {
    let env = Env::new();
    let admin_otp = one_time_password(&env.init().stdout);
    let _server = env.serve();
    let mut admin = Client::new(env.port);
    let mut admin_auth = first_login(&mut admin, "admin", &admin_otp, PW);
    let (mut adele, mut adele_auth) = console_user(&env, "adele", "admin", PW);
    let (mut oscar, _) = console_user(&env, "oscar", "officer", PW);
    // Olivia's first login, before the reset below.
    let (_olivia, _) = console_user(&env, "olivia", "officer", PW);
    let serial = escrowed(&env, "bob@example.com");

    // The administrator resets olivia: the page does not show the new password...
    let token = admin.csrf("/admin/users");
    let r = admin.post_form(
        "/admin/users/olivia/reset",
        &[("csrf_token", &token), ("totp_code", &admin_auth.next_code())],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(element_text(&r.text(), "otp").is_none(), "no one-time password element");
    assert!(r.text().contains("console-resets/olivia.txt"), "the page says where it went: {}", r.text());
    // ...it is in a file only the server's user reads.
    let file = reset_file(&env, "olivia");
    let otp = std::fs::read_to_string(&file).unwrap().lines().next().unwrap().to_string();
    assert_eq!(otp.len(), 20, "{otp}");
    assert_eq!((mode(file.parent().unwrap()), mode(&file)), (0o700, 0o600));
    assert!(!r.text().contains(&otp), "the reset page shows the password");
    for page in ["/admin/", "/admin/users", "/admin/audit", "/admin/settings", "/admin/certificates"] {
        let text = admin.get(page).text();
        assert!(!text.contains(&otp), "{page} shows the password");
    }
    let users = admin.get("/admin/users").text();
    assert!(users.contains("recovery hold: reset by console:admin"), "{users}");
    assert!(env.pki(["user", "list"]).stdout.contains("recovery-hold"));

    // Olivia logs in with the password from the file (which then goes) and chooses her own.
    let mut olivia = Client::new(env.port);
    first_login(&mut olivia, "olivia", &otp, "Second-Horse-Battery-7");
    assert!(!file.exists(), "the file is deleted at the first login with it");

    // Until a second administrator confirms, every escrow step is refused to her.
    let r = request(&mut olivia, &serial, "x");
    refused(&r, 403, &["olivia was reset by console:admin", "second administrator"], "request on hold");
    let id = request_ok(&mut oscar, &serial);
    refused(&approve(&mut olivia, &id), 403, &["second administrator"], "approval on hold");
    assert_eq!(olivia.get("/admin/users").status, 403, "an officer does not confirm");

    // The administrator who reset her cannot confirm; the other one can.
    let token = admin.csrf("/admin/users");
    let r = admin.post_form("/admin/users/olivia/confirm-reset", &[("csrf_token", &token)]);
    refused(&r, 403, &["console:admin reset olivia", "cannot confirm"], "the resetter's confirmation");
    refused(&approve(&mut olivia, &id), 403, &["second administrator"], "still on hold");
    let token = adele.csrf("/admin/users");
    let r = adele.post_form(
        "/admin/users/olivia/confirm-reset",
        &[("csrf_token", &token), ("totp_code", &adele_auth.next_code())],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(element_text(&r.text(), "reset-confirmed").unwrap().contains("olivia"));
    assert!(!adele.get("/admin/users").text().contains("recovery hold"));
    let token = adele.csrf("/admin/users");
    let r = adele.post_form("/admin/users/olivia/confirm-reset", &[("csrf_token", &token)]);
    refused(&r, 409, &["no reset waiting"], "a second confirmation");

    // Now she approves oscar's request, and oscar gets the key.
    let r = approve(&mut olivia, &id);
    assert_eq!(r.status, 303, "{}", r.text());
    let r = release(&mut oscar, &id);
    assert_eq!(r.status, 200, "{}", r.text());
    pkcs12_opens(&env, &r.body, "after-confirm.p12");
    let audit = admin.get("/admin/audit?action=console.user.confirm_reset").text();
    assert!(
        audit.contains("console:adele") && audit.contains("console:admin reset olivia and cannot confirm"),
        "{audit}"
    );

    // The CLI: the operator's reset prints the password (it holds the data directory anyway) and
    // holds the account too; the same operator cannot confirm it, another can.
    let out = env.pki_as("root", ["user", "reset", "--name", "oscar"]);
    assert_eq!(one_time_password(&out.stdout).len(), 20);
    let line = env.pki_as_try("root", ["user", "confirm-reset", "oscar"]).one_error_line();
    assert!(line.contains("uid:0(root) reset oscar") && line.contains("cannot confirm"), "{line}");
    env.pki_fails(["user", "confirm-reset", "nobody"], &["no console user nobody"]);
    let out = env.pki_as("ops2", ["user", "confirm-reset", "--name", "oscar"]);
    assert!(out.stdout.contains("confirmed the reset of console user oscar"), "{}", out.stdout);
}

#[test]
fn an_account_added_in_the_console_gets_its_password_by_file_and_waits_for_a_second_admin() {
    let env = Env::new();
    let admin_otp = one_time_password(&env.init().stdout);
    let _server = env.serve();
    let mut admin = Client::new(env.port);
    let mut admin_auth = first_login(&mut admin, "admin", &admin_otp, PW);
    let (mut adele, _) = console_user(&env, "adele", "admin", PW);
    let (mut oscar, _) = console_user(&env, "oscar", "officer", PW);
    let serial = escrowed(&env, "carol@example.com");

    let token = admin.csrf("/admin/users");
    let r = admin.post_form(
        "/admin/users",
        &[
            ("csrf_token", &token),
            ("name", "nora"),
            ("role", "officer"),
            ("totp_code", &admin_auth.next_code()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(element_text(&r.text(), "otp").is_none(), "no one-time password element");
    assert!(r.text().contains("console-resets/nora.txt"), "{}", r.text());
    let file = reset_file(&env, "nora");
    let otp = std::fs::read_to_string(&file).unwrap().lines().next().unwrap().to_string();
    assert!(!r.text().contains(&otp), "the add page shows the password");
    assert_eq!(mode(&file), 0o600);

    // Nora logs in with it, but takes no part in escrow until a second administrator confirms.
    let mut nora = Client::new(env.port);
    first_login(&mut nora, "nora", &otp, "Third-Horse-Battery-5");
    assert!(!file.exists());
    refused(&request(&mut nora, &serial, "x"), 403, &["second administrator"], "request on hold");
    let id = request_ok(&mut oscar, &serial);
    refused(&approve(&mut nora, &id), 403, &["second administrator"], "approval on hold");
    let token = admin.csrf("/admin/users");
    let r = admin.post_form("/admin/users/nora/confirm-reset", &[("csrf_token", &token)]);
    refused(&r, 403, &["console:admin", "cannot confirm"], "the adding administrator's confirmation");
    let token = adele.csrf("/admin/users");
    let r = adele.post_form("/admin/users/nora/confirm-reset", &[("csrf_token", &token)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = approve(&mut nora, &id);
    assert_eq!(r.status, 303, "{}", r.text());
}
