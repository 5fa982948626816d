//! Admin console (issue 6), acceptance items 2-5, against the real `pki serve` over loopback HTTP:
//! roles enforced on the server even with a valid CSRF token, step-up for revocation, CSRF on
//! every POST (login included), the idle timeout, logout, lockout after failed logins with its
//! audit entry, and the security headers on every route.
#![allow(clippy::unwrap_used)]

use pki_tests::console_support::*;
use pki_tests::*;

const PW: &str = "Correct-Horse-Battery-9";

fn add_user(env: &Env, name: &str, role: &str) -> String {
    one_time_password(&env.pki(["user", "add", "--name", name, "--role", role]).stdout)
}

/// A signing CSR for `email`: (PEM bytes).
fn csr_for(env: &Env, email: &str) -> Vec<u8> {
    let key = gen_key(env.dir(), &format!("{email}.key"), KeySpec::P256);
    let csr = make_csr(&key, &env.path(&format!("{email}.csr")), &format!("/CN={email}"), &[]);
    std::fs::read(csr).unwrap()
}

/// Issues through the console as `officer`; the serial.
fn issue_via_console(officer: &mut Client, email: &str, csr: &[u8]) -> String {
    let token = officer.csrf("/admin/issue");
    let r = officer.post_multipart(
        "/admin/issue/csr",
        &[
            ("csrf_token", None, token.as_bytes()),
            ("email", None, email.as_bytes()),
            ("usage", None, b"signing"),
            ("csr", Some("req.csr"), csr),
        ],
    );
    assert_eq!(r.status, 303, "issue: {}", r.text());
    let loc = r.location();
    let serial = loc.strip_prefix("/admin/certificates/").unwrap().trim_end_matches("?issued=1").to_string();
    serial
}

fn status_of(env: &Env, serial: &str) -> String {
    let show = env.pki(["show", "--serial", serial]).stdout;
    show.lines().find_map(|l| l.strip_prefix("status:")).unwrap().trim().to_string()
}

#[test]
fn roles_are_enforced_on_the_server_even_with_a_valid_csrf_token_and_revocation_needs_step_up() {
    let env = Env::with_config("[console]\nstep_up_secs = 3\n");
    let admin_otp = one_time_password(&env.init().stdout);
    let _server = env.serve();
    let officer_otp = add_user(&env, "olivia", "officer");
    let auditor_otp = add_user(&env, "audrey", "auditor");

    let mut admin = Client::new(env.port);
    let mut admin_auth = first_login(&mut admin, "admin", &admin_otp, PW);
    let mut officer = Client::new(env.port);
    let mut officer_auth = first_login(&mut officer, "olivia", &officer_otp, PW);
    let mut auditor = Client::new(env.port);
    let mut auditor_auth = first_login(&mut auditor, "audrey", &auditor_otp, PW);

    let base = env.list_serials().len();
    let csr = csr_for(&env, "carol@example.com");
    let serial = issue_via_console(&mut officer, "carol@example.com", &csr);
    assert_eq!(status_of(&env, &serial), "valid");

    // The auditor reads...
    for page in [
        "/admin/",
        "/admin/certificates",
        &format!("/admin/certificates/{serial}"),
        "/admin/audit",
        "/admin/timestamps",
    ] {
        assert_eq!(auditor.get(page).status, 200, "auditor GET {page}");
    }
    assert_eq!(auditor.get(&format!("/admin/certificates/{serial}/pem")).status, 200);
    // ...but gets 403 on every officer and admin page,
    for page in ["/admin/issue", "/admin/escrow", "/admin/users", "/admin/settings"] {
        assert_eq!(auditor.get(page).status, 403, "auditor GET {page}");
    }
    // and on every officer and admin action, posting directly with its own valid CSRF token and
    // even a valid TOTP code.
    let token = auditor.csrf("/admin/timestamps");
    let code = auditor_auth.next_code();
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/admin/certificates/{serial}/revoke"),
            vec![("reason", "keyCompromise"), ("totp_code", &code)],
        ),
        (
            "/admin/issue/generate".into(),
            vec![
                ("email", "eve@example.com"),
                ("key_type", "p256"),
                ("p12_password", "long-enough-pw"),
                ("p12_password_confirm", "long-enough-pw"),
            ],
        ),
        ("/admin/escrow/request".into(), vec![("serial", &serial), ("reason", "lost"), ("totp_code", &code)]),
        (format!("/admin/escrow/{}/approve", "0".repeat(32)), vec![("totp_code", &code)]),
        (
            format!("/admin/escrow/{}/release", "0".repeat(32)),
            vec![
                ("p12_password", "long-enough-pw"),
                ("p12_password_confirm", "long-enough-pw"),
                ("totp_code", &code),
            ],
        ),
        ("/admin/users/olivia/confirm-reset".into(), vec![("totp_code", &code)]),
        ("/admin/users".into(), vec![("name", "mallory"), ("role", "admin"), ("totp_code", &code)]),
        ("/admin/users/olivia/disable".into(), vec![]),
        ("/admin/users/olivia/reset".into(), vec![("totp_code", &code)]),
    ];
    for (path, fields) in &posts {
        let mut f = vec![("csrf_token", token.as_str())];
        f.extend(fields.iter().cloned());
        let r = auditor.post_form(path, &f);
        assert_eq!(r.status, 403, "auditor POST {path}: {}", r.text());
        assert!(r.text().contains("auditor"), "the page names the role: {}", r.text());
    }
    let r = auditor.post_multipart(
        "/admin/issue/csr",
        &[
            ("csrf_token", None, token.as_bytes()),
            ("email", None, b"carol@example.com"),
            ("usage", None, b"signing"),
            ("csr", Some("c.csr"), &csr),
        ],
    );
    assert_eq!(r.status, 403, "auditor POST /admin/issue/csr");
    assert_eq!(status_of(&env, &serial), "valid", "nothing was revoked");
    let users = env.pki(["user", "list"]).stdout;
    assert!(!users.contains("mallory") && !users.contains("disabled"), "no account changed:\n{users}");
    assert_eq!(env.list_serials().len(), base + 1, "the CA's certificates and carol's: nothing else issued");

    // The officer gets 403 on user management, with its own valid token.
    for page in ["/admin/users", "/admin/settings"] {
        assert_eq!(officer.get(page).status, 403, "officer GET {page}");
    }
    let token = officer.csrf("/admin/issue");
    for (path, fields) in [
        ("/admin/users", vec![("name", "mallory"), ("role", "admin")]),
        ("/admin/users/audrey/disable", vec![]),
        ("/admin/users/audrey/reset", vec![]),
    ] {
        let mut f = vec![("csrf_token", token.as_str())];
        f.extend(fields);
        assert_eq!(officer.post_form(path, &f).status, 403, "officer POST {path}");
    }
    // Separation of duties: the administrator does not issue.
    assert_eq!(admin.get("/admin/issue").status, 403);
    assert_eq!(admin.get("/admin/users").status, 200);
    assert_eq!(admin.get("/admin/settings").status, 200);

    // Step-up: after the 3-second window, revocation without a code is refused...
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let page = officer.get(&format!("/admin/certificates/{serial}")).text();
    assert!(page.contains("(required: step-up)"), "the form asks for a code");
    let token = form_value(&page, "csrf_token").unwrap();
    let revoke = format!("/admin/certificates/{serial}/revoke");
    let r =
        officer.post_form(&revoke, &[("csrf_token", &token), ("reason", "keyCompromise"), ("totp_code", "")]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("step-up"), "{}", r.text());
    let r = officer
        .post_form(&revoke, &[("csrf_token", &token), ("reason", "keyCompromise"), ("totp_code", "000000")]);
    assert!(matches!(r.status, 400 | 403), "a wrong code is refused: {}", r.status);
    assert_eq!(status_of(&env, &serial), "valid");
    // ...and with a current code it goes through.
    let r = officer.post_form(
        &revoke,
        &[("csrf_token", &token), ("reason", "superseded"), ("totp_code", &officer_auth.next_code())],
    );
    assert_eq!((r.status, r.location()), (303, format!("/admin/certificates/{serial}?revoked=1")));
    assert_eq!(status_of(&env, &serial), "revoked");
    // Found compromised later: the page offers to say so (step-up still fresh), and the reason
    // becomes keyCompromise.
    let page = officer.get(&format!("/admin/certificates/{serial}")).text();
    assert!(page.contains("report-compromise") && !page.contains("id=\"revoke\""), "{page}");
    let r =
        officer.post_form(&revoke, &[("csrf_token", &token), ("reason", "keyCompromise"), ("totp_code", "")]);
    assert_eq!((r.status, r.location()), (303, format!("/admin/certificates/{serial}?revoked=1")));
    let page = officer.get(&format!("/admin/certificates/{serial}")).text();
    assert!(page.contains("(keyCompromise)") && !page.contains("report-compromise"), "{page}");

    // An escrowed key, issued and recovered by the officer (step-up still fresh from the
    // revocation), opens with its password.
    let token = officer.csrf("/admin/issue");
    let r = officer.post_form(
        "/admin/issue/generate",
        &[
            ("csrf_token", &token),
            ("email", "dave@example.com"),
            ("key_type", "p256"),
            ("p12_password", "long-enough-pw"),
            ("p12_password_confirm", "long-enough-pw"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-pkcs12"));
    let p12 = env.write("dave.p12", &r.body);
    let dump = openssl(["pkcs12", "-in", p12.to_str().unwrap(), "-passin", "pass:long-enough-pw", "-nodes"]);
    assert!(dump.stdout.contains("PRIVATE KEY") && dump.stdout.contains("CERTIFICATE"));
    let dave = env.pki(["list", "--email", "dave@example.com"]).stdout;
    let dave_serial = parse_list(&dave)[0].serial.clone();
    // Recovery needs a second officer: olivia requests in the console, oscar approves with the
    // CLI, and olivia downloads.
    let r = officer.post_form(
        "/admin/escrow/request",
        &[("csrf_token", &token), ("serial", &dave_serial), ("reason", "dave lost his laptop")],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let id = r.location().rsplit('=').next().unwrap().to_string();
    env.pki_as("oscar", ["escrow", "approve", &id]);
    let r = officer.post_form(
        &format!("/admin/escrow/{id}/release"),
        &[
            ("csrf_token", &token),
            ("p12_password", "another-long-pw"),
            ("p12_password_confirm", "another-long-pw"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let p12 = env.write("dave-recovered.p12", &r.body);
    openssl(["pkcs12", "-in", p12.to_str().unwrap(), "-passin", "pass:another-long-pw", "-nodes"]);

    // Adding a user needs step-up too.
    let token = admin.csrf("/admin/users");
    let r = admin.post_form(
        "/admin/users",
        &[("csrf_token", &token), ("name", "ursula"), ("role", "auditor"), ("totp_code", "")],
    );
    assert_eq!(r.status, 403, "no step-up: {}", r.text());
    let r = admin.post_form(
        "/admin/users",
        &[
            ("csrf_token", &token),
            ("name", "ursula"),
            ("role", "auditor"),
            ("totp_code", &admin_auth.next_code()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(element_text(&r.text(), "otp").is_none(), "the one-time password is not shown");
    let otp = std::fs::read_to_string(env.data.join("console-resets/ursula.txt")).unwrap().trim().to_string();
    assert_eq!(otp.len(), 20);

    // The audit log names the console actors.
    let audit = admin.get("/admin/audit?action=revoke").text();
    assert!(audit.contains("console:olivia") && audit.contains(&serial), "{audit}");
    assert!(element_text(&audit, "chain").unwrap().contains("intact"));
}

#[test]
fn csrf_is_checked_on_every_post_idle_sessions_go_to_login_and_logout_kills_the_session() {
    let env = Env::with_config("[console]\nidle_timeout_secs = 5\n");
    env.init();
    let _server = env.serve();
    let otp = add_user(&env, "olivia", "officer");
    let base = env.list_serials().len();

    // Login without a token, with a wrong one, and with another browser's token: refused.
    let mut other = Client::new(env.port);
    let foreign = other.csrf("/admin/login");
    let mut c = Client::new(env.port);
    let good = c.csrf("/admin/login");
    for token in [None, Some("00"), Some(foreign.as_str()), Some(&good[..good.len() - 1])] {
        let mut f = vec![("username", "olivia"), ("password", otp.as_str())];
        if let Some(t) = token {
            f.push(("csrf_token", t));
        }
        let r = c.post_form("/admin/login", &f);
        assert_eq!(r.status, 403, "login with token {token:?}: {}", r.text());
        assert!(r.text().contains("CSRF"), "{}", r.text());
        assert!(!c.cookies.contains_key("pki_console_session"));
    }

    let mut auth = first_login(&mut c, "olivia", &otp, PW);
    let token = c.csrf("/admin/issue");
    for bad in [None, Some("deadbeef"), Some(foreign.as_str())] {
        let mut f = vec![
            ("email", "x@example.com"),
            ("key_type", "p256"),
            ("p12_password", "long-enough-pw"),
            ("p12_password_confirm", "long-enough-pw"),
        ];
        if let Some(t) = bad {
            f.push(("csrf_token", t));
        }
        let r = c.post_form("/admin/issue/generate", &f);
        assert_eq!(r.status, 403, "generate with token {bad:?}");
        let mut f = vec![("reason", "superseded")];
        if let Some(t) = bad {
            f.push(("csrf_token", t));
        }
        assert_eq!(c.post_form("/admin/certificates/01/revoke", &f).status, 403);
        assert_eq!(c.post_form("/admin/logout", &f[1..]).status, 403, "logout needs the token too");
        let r = c.post_multipart(
            "/admin/issue/csr",
            &[("email", None, b"x@example.com"), ("usage", None, b"signing")],
        );
        assert_eq!(r.status, 403, "multipart without a token");
    }
    assert_eq!(env.list_serials().len(), base, "nothing was issued");
    assert_eq!(c.get("/admin/").status, 200, "still logged in");
    let _ = token;

    // Idle past the timeout: sent to the login page, and the session is gone.
    std::thread::sleep(std::time::Duration::from_millis(6500));
    let r = c.get("/admin/");
    assert_eq!((r.status, r.location()), (303, "/admin/login?expired=1".to_string()));
    let r = c.get("/admin/certificates");
    assert_eq!((r.status, r.location()), (303, "/admin/login".to_string()));
    assert!(c.get("/admin/login?expired=1").text().contains("expired"));

    // After logout, the old cookie (and its CSRF token) is useless.
    login(&mut c, "olivia", PW, &mut auth);
    let before_logout = c.clone();
    let token = c.csrf("/admin/");
    let r = c.post_form("/admin/logout", &[("csrf_token", &token)]);
    assert_eq!((r.status, r.location()), (303, "/admin/login".to_string()));
    assert!(!c.cookies.contains_key("pki_console_session"), "the cookie is cleared");
    let mut replay = before_logout;
    let r = replay.get("/admin/");
    assert_eq!((r.status, r.location()), (303, "/admin/login".to_string()), "old cookie after logout");
    let r = replay.post_form(
        "/admin/issue/generate",
        &[
            ("csrf_token", &token),
            ("email", "x@example.com"),
            ("key_type", "p256"),
            ("p12_password", "long-enough-pw"),
            ("p12_password_confirm", "long-enough-pw"),
        ],
    );
    assert_eq!(r.status, 303, "a POST with the old cookie is sent to login");
    assert_eq!(env.list_serials().len(), base, "nothing was issued");
}

#[test]
fn six_wrong_passwords_lock_the_account_with_an_audit_entry_and_one_message_for_every_failure() {
    let env = Env::new();
    let admin_otp = one_time_password(&env.init().stdout);
    let _server = env.serve();
    let otp = add_user(&env, "lou", "officer");

    let try_login = |user: &str, pw: &str| {
        let mut c = Client::new(env.port);
        let token = c.csrf("/admin/login");
        c.post_form("/admin/login", &[("csrf_token", &token), ("username", user), ("password", pw)])
    };
    let unknown = try_login("nobody", "whatever-password");
    assert_eq!(unknown.status, 403);
    let message = element_text(&unknown.text(), "login-error").expect("a message");
    for i in 1..=6 {
        let r = try_login("lou", &format!("wrong-password-{i}"));
        assert_eq!(r.status, 403, "attempt {i}");
        assert_eq!(
            element_text(&r.text(), "login-error").unwrap(),
            message,
            "the same message for every failure"
        );
        assert!(!r.headers.iter().any(|(k, v)| k == "set-cookie" && v.starts_with("pki_console_session=")));
    }
    // Locked: the right one-time password is refused too, with the same message.
    let r = try_login("lou", &otp);
    assert_eq!(r.status, 403);
    assert_eq!(element_text(&r.text(), "login-error").unwrap(), message);
    let list = env.pki(["user", "list"]).stdout;
    let row = list.lines().find(|l| l.starts_with("lou ")).unwrap();
    assert!(row.contains("locked"), "{list}");

    // The lock is in the audit log (read by the administrator in the console).
    let mut admin = Client::new(env.port);
    first_login(&mut admin, "admin", &admin_otp, PW);
    let audit = admin.get("/admin/audit?action=console.lockout").text();
    let table = element_text(&audit, "audit").unwrap();
    assert!(table.contains("console.lockout") && table.contains("lou locked until"), "{table}");
    assert!(
        element_text(&audit, "result-count").unwrap().starts_with("1 entries"),
        "exactly one lockout entry"
    );

    // A reset lifts the lock.
    let otp = one_time_password(&env.pki(["user", "reset", "--name", "lou"]).stdout);
    let r = try_login("lou", &otp);
    assert_eq!((r.status, r.location()), (303, "/admin/password".to_string()));
}

/// Checks the headers every console response must carry.
fn check_headers(what: &str, r: &Resp) {
    let csp = r.header("content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{what}: {csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    if r.header("content-type").is_some_and(|t| t.starts_with("text/html")) {
        let html = r.text();
        assert!(!html.contains("<script"), "{what}: no scripts");
        assert!(!html.contains(" style=") && !html.contains("<style"), "{what}: no inline styles");
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "{what}: nothing external");
    }
    for (k, v) in &r.headers {
        if k == "set-cookie" {
            assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict"), "{what}: cookie {v}");
        }
    }
}

#[test]
fn every_route_answers_with_the_security_headers() {
    let env = Env::new();
    let admin_otp = one_time_password(&env.init().stdout);
    let _server = env.serve();
    let officer_otp = add_user(&env, "olivia", "officer");
    let mut anon = Client::new(env.port);
    let mut n = 0;
    let mut check = |what: String, r: Resp| {
        check_headers(&what, &r);
        n += 1;
    };

    // Anonymous: every GET and POST route (most redirect to login), unknown paths, the CSS.
    let gets = [
        "/admin",
        "/admin/",
        "/admin/login",
        "/admin/login?expired=1",
        "/admin/login/totp",
        "/admin/password",
        "/admin/totp/enrol",
        "/admin/certificates",
        "/admin/certificates/01",
        "/admin/certificates/01/pem",
        "/admin/issue",
        "/admin/escrow",
        "/admin/audit",
        "/admin/timestamps",
        "/admin/users",
        "/admin/settings",
        "/admin/static/console.css",
        "/admin/no-such-page",
        "/admin/certificates/zz-not-hex",
    ];
    let posts = [
        "/admin/login",
        "/admin/login/totp",
        "/admin/password",
        "/admin/totp/enrol",
        "/admin/logout",
        "/admin/certificates/01/revoke",
        "/admin/issue/csr",
        "/admin/issue/generate",
        "/admin/escrow/request",
        "/admin/escrow/00000000000000000000000000000000/approve",
        "/admin/escrow/00000000000000000000000000000000/release",
        "/admin/timestamps/verify",
        "/admin/users",
        "/admin/users/olivia/disable",
        "/admin/users/olivia/enable",
        "/admin/users/olivia/reset",
        "/admin/users/olivia/confirm-reset",
    ];
    for p in gets {
        check(format!("anonymous GET {p}"), anon.get(p));
    }
    for p in posts {
        check(format!("anonymous POST {p}"), anon.post_form(p, &[("csrf_token", "x")]));
    }
    assert_eq!(anon.get("/admin/static/console.css").header("content-type"), Some("text/css; charset=utf-8"));
    // A page asked with a method it does not take: the 405 page with `Allow`, as the APIs answer
    // (it was the 404 page); HEAD is GET without the body.
    for (method, p, allow) in [
        ("PUT", "/admin/login", "GET, HEAD, POST"),
        ("DELETE", "/admin/users", "GET, HEAD, POST"),
        ("GET", "/admin/logout", "POST"),
        ("GET", "/admin/ca/rekey", "POST"),
        ("POST", "/admin/audit", "GET, HEAD"),
        ("PATCH", "/admin/certificates/01", "GET, HEAD"),
        ("POST", "/admin", "GET, HEAD"),
    ] {
        let r = anon.request(method, p, Some("application/x-www-form-urlencoded"), b"csrf_token=x");
        assert_eq!((r.status, r.header("allow")), (405, Some(allow)), "{method} {p}: {}", r.text());
        assert!(r.text().contains(&format!("method not allowed: use {allow}")), "{method} {p}: {}", r.text());
        check(format!("anonymous {method} {p}"), r);
    }
    let head = b"HEAD /admin/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let r = pki_tests::raw_tcp::exchange_from(std::net::Ipv4Addr::LOCALHOST.into(), env.port, head).unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0), "HEAD /admin/login: {}", r.text());

    // During first login (one-time password, enrolment pages).
    let mut officer = Client::new(env.port);
    let token = officer.csrf("/admin/login");
    check(
        "login POST".into(),
        officer.post_form(
            "/admin/login",
            &[("csrf_token", &token), ("username", "olivia"), ("password", &officer_otp)],
        ),
    );
    check("password page".into(), officer.get("/admin/password"));
    check("dashboard before the new password".into(), officer.get("/admin/"));
    let mut officer = Client::new(env.port);
    let _auth = first_login(&mut officer, "olivia", &officer_otp, PW);
    let mut admin = Client::new(env.port);
    let _admin_auth = first_login(&mut admin, "admin", &admin_otp, PW);

    // Logged in, every route, as the officer and as the administrator.
    let serial = parse_list(&env.pki(["list"]).stdout)[1].serial.clone();
    for who in [&mut officer, &mut admin] {
        let token = who.csrf("/admin/");
        for p in gets.iter().copied().chain([
            format!("/admin/certificates/{serial}").as_str(),
            format!("/admin/certificates/{serial}/pem").as_str(),
            "/admin/certificates?q=example&status=valid&page=2",
            "/admin/audit?actor=system&action=init&from=2020-01-01&to=2099-01-01",
            "/admin/audit?from=not-a-date",
        ]) {
            let r = who.get(p);
            check(format!("GET {p}"), r);
        }
        for p in posts.iter().filter(|p| **p != "/admin/logout" && **p != "/admin/login") {
            check(format!("POST {p}"), who.post_form(p, &[("csrf_token", &token)]));
        }
        check(
            "multipart POST".into(),
            who.post_multipart(
                "/admin/timestamps/verify",
                &[
                    ("csrf_token", None, token.as_bytes()),
                    ("token", Some("t.tsr"), b"junk"),
                    ("data", Some("d"), b"x"),
                ],
            ),
        );
        check("logout".into(), who.post_form("/admin/logout", &[("csrf_token", &token)]));
    }
    assert!(n > 100, "{n} responses checked");
}

#[test]
fn bad_uploads_get_a_clear_4xx_page_nothing_is_issued_and_the_console_keeps_serving() {
    let env = Env::new();
    env.init();
    let _server = env.serve();
    let officer_otp = add_user(&env, "olivia", "officer");
    let mut officer = Client::new(env.port);
    let _auth = first_login(&mut officer, "olivia", &officer_otp, PW);
    let before = env.list_serials();
    let good = csr_for(&env, "dave@example.com");

    let post_csr = |c: &mut Client, email: &str, usage: &str, csr: &[u8]| {
        let token = c.csrf("/admin/issue");
        c.post_multipart(
            "/admin/issue/csr",
            &[
                ("csrf_token", None, token.as_bytes()),
                ("email", None, email.as_bytes()),
                ("usage", None, usage.as_bytes()),
                ("csr", Some("req.csr"), csr),
            ],
        )
    };
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("dave@example.com", "signing", b"garbage, not a CSR".to_vec(), "CSR rejected"),
        ("dave@example.com", "signing", good[..good.len() / 2].to_vec(), "CSR rejected"),
        ("dave@example.com", "signing", vec![b'A'; 70 * 1024], "over"),
        ("not an address", "signing", good.clone(), "e-mail"),
        ("dave@example.com", "sideways", good.clone(), "usage"),
    ];
    for (email, usage, csr, names) in cases {
        let r = post_csr(&mut officer, email, usage, &csr);
        assert!(
            (400..500).contains(&r.status),
            "{email} {usage} {} bytes: {} {}",
            csr.len(),
            r.status,
            r.text()
        );
        assert!(
            html_unescape(&r.text()).to_lowercase().contains(&names.to_lowercase()),
            "the page names the problem ({names}): {}",
            r.text()
        );
    }
    assert_eq!(env.list_serials(), before, "nothing was issued");

    // A garbage timestamp token is refused with the failed check named.
    let token = officer.csrf("/admin/timestamps");
    let r = officer.post_multipart(
        "/admin/timestamps/verify",
        &[
            ("csrf_token", None, token.as_bytes()),
            ("token", Some("t.tsr"), b"\x30\x03garbage"),
            ("data", Some("d.txt"), b"data"),
        ],
    );
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
    assert!(r.text().contains("NOT verified"), "{}", r.text());

    // Still serving: the good CSR issues.
    let r = post_csr(&mut officer, "dave@example.com", "signing", &good);
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(env.list_serials().len(), before.len() + 1);
}

/// Garbage in every path, query and form of a logged-in session (the CSRF token valid, so the
/// handlers' own checks are reached): each answer is the console's HTML page with a 4xx status
/// (or a redirect), never a 5xx or a dropped connection, and nothing changes: no certificate is
/// issued or revoked, no account added, no CA compromised or re-keyed.
#[test]
fn garbage_in_every_path_query_and_form_of_a_session_gets_a_4xx_page_and_changes_nothing() {
    let env = Env::new();
    let admin_otp = one_time_password(&env.init().stdout);
    let _server = env.serve();
    let officer_otp = add_user(&env, "olivia", "officer");
    let mut admin = Client::new(env.port);
    let _admin_auth = first_login(&mut admin, "admin", &admin_otp, PW);
    let mut officer = Client::new(env.port);
    let _officer_auth = first_login(&mut officer, "olivia", &officer_otp, PW);
    let serial = issue_via_console(&mut officer, "dave@example.com", &csr_for(&env, "dave@example.com"));
    let (serials, users) = (env.list_serials(), env.pki(["user", "list"]).stdout);
    let issuing = env.pki(["ca-cert", "issuing"]).stdout;

    let long = "A".repeat(5_000);
    let huge = "B".repeat(100 * 1024);
    let values: Vec<&str> = vec![
        "",
        &long,
        "%FF%FE%00",
        "%E2%80%AE%3Cscript%3E",
        "..%2F..%2Fetc%2Fpasswd",
        "-1",
        "18446744073709551616",
        "%",
    ];
    // Each answer: (status, the page's error message), kept for the checks after the sweep.
    let mut answers: Vec<(u16, String, String)> = Vec::new();
    let mut check = |what: String, r: Resp| {
        let ct = r.header("content-type").unwrap_or("").to_string();
        let text = html_unescape(&r.text());
        assert!(r.status < 500, "{what}: {} {text}", r.status);
        if (400..500).contains(&r.status) {
            assert!(ct.starts_with("text/html"), "{what}: {} {ct} {text}", r.status);
            let message = text
                .split("<p class=\"error\">")
                .nth(1)
                .and_then(|m| m.split("</p>").next())
                .unwrap_or_else(|| panic!("{what}: no error message on the page: {text}"))
                .to_string();
            // A value of thousands of characters is quoted in part.
            assert!(message.chars().count() < 1_100, "{what}: {} characters: {message}", message.len());
            // What actix-web says of a body or query it cannot read names no field and no fix.
            for raw in ["Content type error", "Query deserialize error", "URL encoded payload", "Parse error"]
            {
                assert!(!message.contains(raw), "{what}: {message}");
            }
            answers.push((r.status, what, message));
        }
    };

    // Paths and queries.
    for v in &values {
        for path in [
            format!("/admin/certificates/{v}"),
            format!("/admin/certificates/{v}/pem"),
            format!("/admin/certificates?q={v}&status={v}&usage={v}&page={v}"),
            format!("/admin/certificates/{serial}?issued={v}&revoked={v}&same_key={v}"),
            format!("/admin/audit?actor={v}&action={v}&from={v}&to={v}&page={v}"),
            format!("/admin/escrow?requested={v}&approved={v}"),
            format!("/admin/validations?email={v}&page={v}"),
            format!("/admin/timestamps?{v}={v}"),
        ] {
            check(
                format!("officer GET {}", &path[..path.len().min(80)]),
                officer.request("GET", &path, None, b""),
            );
        }
        for path in [format!("/admin/users?{v}={v}"), format!("/admin/settings?compromised={v}&rekeyed={v}")]
        {
            check(
                format!("admin GET {}", &path[..path.len().min(80)]),
                admin.request("GET", &path, None, b""),
            );
        }
    }

    // Forms: every field garbage (the session stepped up at login, so no TOTP code is needed and
    // the handlers' own checks are reached), then bodies that are no form at all.
    let officer_token = officer.csrf("/admin/issue");
    let admin_token = admin.csrf("/admin/users");
    type Form<'a> = (String, Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let officer_forms: Vec<Form> = vec![
        (format!("/admin/certificates/{serial}/revoke"), vec!["reason"], vec![]),
        (
            "/admin/issue/generate".into(),
            vec!["email", "key_type", "p12_password", "p12_password_confirm"],
            vec![],
        ),
        ("/admin/issue/generate".into(), vec!["key_type"], vec![("email", "erin@example.com")]),
        ("/admin/escrow/request".into(), vec!["serial", "reason"], vec![]),
        ("/admin/escrow/00/approve".into(), vec![], vec![]),
        ("/admin/escrow/zz/release".into(), vec!["p12_password", "p12_password_confirm"], vec![]),
        ("/admin/validations/send".into(), vec!["email"], vec![]),
        ("/admin/validations/confirm".into(), vec!["email", "code"], vec![]),
        ("/admin/validations/confirm".into(), vec!["code"], vec![("email", "dave@example.com")]),
    ];
    let admin_forms: Vec<Form> = vec![
        ("/admin/users".into(), vec!["name", "role"], vec![]),
        ("/admin/users".into(), vec!["role"], vec![("name", "mallory")]),
        ("/admin/users/nobody/disable".into(), vec![], vec![]),
        ("/admin/users/nobody/reset".into(), vec![], vec![]),
        ("/admin/users/nobody/confirm-reset".into(), vec![], vec![]),
        ("/admin/ca/compromise".into(), vec!["ca", "confirm"], vec![]),
        ("/admin/ca/compromise".into(), vec!["confirm"], vec![("ca", "issuing")]),
        ("/admin/ca/rekey".into(), vec!["ca"], vec![]),
        (
            "/admin/password".into(),
            vec!["new_password"],
            vec![("current_password", PW), ("confirm_password", "x")],
        ),
    ];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/x-www-form-urlencoded", b"\xff\xfe\x00garbage=%%%&&==".to_vec()),
        ("application/x-www-form-urlencoded", huge.as_bytes().to_vec()),
        ("application/json", br#"{"reason":"keyCompromise"}"#.to_vec()),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\nb".to_vec(),
        ),
        ("text/plain", Vec::new()),
    ];
    for (client, token, forms) in
        [(&mut officer, &officer_token, &officer_forms), (&mut admin, &admin_token, &admin_forms)]
    {
        for (path, garbage, fixed) in forms {
            for v in &values {
                let v = v.replace('%', "");
                let mut f: Vec<(&str, &str)> = garbage.iter().map(|n| (*n, v.as_str())).collect();
                f.extend(fixed.iter().copied());
                f.push(("csrf_token", token));
                check(
                    format!("POST {path} {garbage:?} = {}", &v[..v.len().min(20)]),
                    client.post_form(path, &f),
                );
            }
            let with_huge: Vec<(&str, &str)> = vec![("csrf_token", token), ("x", &huge)];
            check(format!("POST {path} 100 KiB field"), client.post_form(path, &with_huge));
            for (ct, body) in &bodies {
                check(
                    format!("POST {path} {ct} {} bytes", body.len()),
                    client.request("POST", path, Some(ct), body),
                );
            }
        }
    }
    // Garbage where a path names a certificate, an escrow request or an account.
    for v in &values {
        let f = [("csrf_token", officer_token.as_str()), ("reason", "superseded")];
        for path in [format!("/admin/certificates/{v}/revoke"), format!("/admin/escrow/{v}/approve")] {
            check(format!("POST {}", &path[..path.len().min(80)]), officer.post_form(&path, &f));
        }
        let f = [("csrf_token", admin_token.as_str())];
        for action in ["disable", "enable", "reset", "confirm-reset"] {
            let path = format!("/admin/users/{v}/{action}");
            check(format!("POST {}", &path[..path.len().min(80)]), admin.post_form(&path, &f));
        }
    }
    // Garbage step-up codes: refused, each one a failure counted against the account (three stay
    // under the lockout).
    for code in [long.as_str(), "abcdef", "-1"] {
        let f = [("csrf_token", officer_token.as_str()), ("reason", "superseded"), ("totp_code", code)];
        check(
            format!("revoke with code {}", &code[..code.len().min(20)]),
            officer.post_form(&format!("/admin/certificates/{serial}/revoke"), &f),
        );
    }
    // The multipart forms, sent what is no multipart form.
    for path in ["/admin/issue/csr", "/admin/timestamps/verify"] {
        for (ct, body) in &bodies {
            check(
                format!("POST {path}: {} bytes of {ct}", body.len()),
                officer.request("POST", path, Some(ct), body),
            );
        }
    }

    assert!(answers.len() > 250, "{} refusals", answers.len());
    let said = |status: u16, what: &str, says: &str| {
        let found = answers.iter().filter(|(_, w, _)| w.contains(what)).collect::<Vec<_>>();
        assert!(!found.is_empty(), "no answer to {what}");
        for (s, w, m) in found {
            assert_eq!(*s, status, "{w}: {m}");
            assert!(m.contains(says), "{w}: {m}");
        }
    };
    said(413, "100 KiB field", "over the console's limit of 65536");
    said(413, "urlencoded 102400 bytes", "over the console's limit of 65536");
    said(415, "/revoke application/json", "sent as application/x-www-form-urlencoded, not application/json");
    said(415, "/admin/users text/plain", "not text/plain");
    said(400, "GET /admin/certificates?q=-1", "page \"-1\" is not a page number");
    said(
        400,
        "GET /admin/audit?actor=18446744073709551616",
        "page \"18446744073709551616\" is not a page number",
    );
    said(400, &format!("GET /admin/certificates/{}", &long[..60]), "characters left out");
    said(403, "/revoke application/x-www-form-urlencoded 18 bytes", "CSRF");
    said(
        415,
        "/admin/issue/csr: 102400 bytes of application/x-www-form-urlencoded",
        "sent as multipart/form-data, not",
    );
    said(415, "/admin/timestamps/verify: 26 bytes of application/json", "not application/json");
    said(
        400,
        &format!("/admin/issue/csr: {} bytes of multipart", bodies[3].1.len()),
        "ended before its closing boundary",
    );

    // Nothing changed, and both sessions still work.
    assert_eq!(env.list_serials(), serials, "no certificate issued");
    assert_eq!(status_of(&env, &serial), "valid");
    assert_eq!(env.pki(["user", "list"]).stdout, users, "no account added or changed");
    assert_eq!(env.pki(["ca-cert", "issuing"]).stdout, issuing, "the issuing CA is the same");
    assert_eq!(officer.get("/admin/certificates").status, 200);
    assert_eq!(admin.get("/admin/users").status, 200);
}
