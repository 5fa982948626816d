//! Console logins (issue 16, acceptance item 4), against the real `pki serve`: wrong passwords
//! for `admin` from one address throttle that address (429 with the login page) and lock the
//! account against new logins, but admin's open session keeps working, high-risk actions with a
//! TOTP code included; another address is not throttled.
#![allow(clippy::unwrap_used)]

use pki_tests::console_support::*;
use pki_tests::raw_tcp::{exchange_from, RawReply, OTHER_LOOPBACK};
use pki_tests::*;

const PW: &str = "Correct-Horse-Battery-9";

/// The console's password form from `from`: GET the login page for its cookie and token, then
/// POST `user` and `password` with them.
fn login_from(env: &Env, from: std::net::IpAddr, user: &str, password: &str) -> RawReply {
    let get = "GET /admin/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let page = exchange_from(from, env.port, get.as_bytes()).unwrap();
    assert_eq!(page.status, 200, "{}", page.text());
    let cookie = page.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let token = form_value(&page.text(), "csrf_token").unwrap();
    let body = format!(
        "csrf_token={}&username={}&password={}",
        urlencode(&token),
        urlencode(user),
        urlencode(password)
    );
    let post = format!(
        "POST /admin/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange_from(from, env.port, post.as_bytes()).unwrap()
}

#[test]
fn five_wrong_passwords_for_admin_throttle_that_address_and_leave_the_open_admin_session_working() {
    // Five failures per address at once (the default is ten), the account lock at five as by
    // default.
    let env = Env::with_config("[console]\nmax_failed_logins_per_address = 5\n");
    let admin_otp = one_time_password(&env.init().stdout);
    let _server = env.serve();

    // Admin is logged in and working.
    let mut admin = Client::new(env.port);
    let mut auth = first_login(&mut admin, "admin", &admin_otp, PW);
    assert_eq!(admin.get("/admin/").status, 200);

    // Someone at 127.0.0.1 tries five wrong passwords for admin: refused as any failure is.
    let try_login = |user: &str, pw: &str| {
        let mut c = Client::new(env.port);
        let token = c.csrf("/admin/login");
        c.post_form("/admin/login", &[("csrf_token", &token), ("username", user), ("password", pw)])
    };
    for i in 1..=5 {
        let r = try_login("admin", &format!("wrong-password-{i}"));
        assert_eq!(r.status, 403, "attempt {i}: {}", r.text());
        assert!(element_text(&r.text(), "login-error").unwrap().starts_with("Login failed"));
    }
    // The address is throttled now: the console's login page with 429, Retry-After and the
    // reason; even the right password is not looked at.
    for (user, pw) in [("admin", "wrong-password-6"), ("admin", PW), ("nobody", "whatever-password")] {
        let r = try_login(user, pw);
        assert_eq!(r.status, 429, "{user}: {}", r.text());
        let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        let msg = element_text(&r.text(), "login-error").unwrap();
        assert!(msg.starts_with("Too many failed logins from your address"), "{msg}");
        assert!(!r.headers.iter().any(|(k, v)| k == "set-cookie" && v.starts_with("pki_console_session=")));
    }

    // The account is locked against new logins (listed so, with its audit entry) ...
    let list = env.pki(["user", "list"]).stdout;
    let row = list.lines().find(|l| l.starts_with("admin ")).unwrap();
    assert!(row.contains("locked"), "{list}");
    // ... but admin's open session works: pages, and a high-risk action with a TOTP code.
    let home = admin.get("/admin/");
    assert_eq!(home.status, 200, "the open session survives the lock: {}", home.text());
    let audit = admin.get("/admin/audit?action=console.lockout").text();
    assert!(element_text(&audit, "audit").unwrap().contains("admin locked until"), "{audit}");
    let token = admin.csrf("/admin/users");
    let r = admin.post_form(
        "/admin/users",
        &[("csrf_token", &token), ("name", "olivia"), ("role", "officer"), ("totp_code", &auth.next_code())],
    );
    assert_eq!(r.status, 200, "adding a user from the open session: {}", r.text());
    assert!(element_text(&r.text(), "otp").is_none(), "the new user's one-time password is not shown");
    assert!(env.data.join("console-resets/olivia.txt").is_file(), "it is written for the operator");
    assert!(env.pki(["user", "list"]).stdout.lines().any(|l| l.starts_with("olivia ")));

    // Another address is not throttled: its failures get the usual 403, and the locked admin
    // account refuses it a new login with the same message.
    let r = login_from(&env, OTHER_LOOPBACK, "olivia", "wrong-password-7");
    assert_eq!(r.status, 403, "{}", r.text());
    let r = login_from(&env, OTHER_LOOPBACK, "admin", PW);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(element_text(&r.text(), "login-error").unwrap().starts_with("Login failed"));

    // Logging out still works and ends the session.
    let token = admin.csrf("/admin/");
    let r = admin.post_form("/admin/logout", &[("csrf_token", &token)]);
    assert_eq!((r.status, r.location()), (303, "/admin/login".to_string()));
}
