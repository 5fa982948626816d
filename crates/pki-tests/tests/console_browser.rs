//! Admin console (issue 6), acceptance item 1: Debian's Chromium, headless, driven through
//! chromedriver (W3C WebDriver): the administrator's and an officer's first logins with their
//! one-time passwords, new passwords, TOTP enrolment (codes computed from the key the page
//! shows), adding the officer with step-up, issuing a certificate from an uploaded CSR, finding
//! it by search, revoking it with step-up, and the revocation in the audit log. A screenshot of
//! every page is saved under `target/test-artefacts/console/`.
#![allow(clippy::unwrap_used)]

use pki_tests::console_support::*;
use pki_tests::*;

const EMAIL: &str = "carol@example.com";

fn first_login_in_browser(
    b: &Browser,
    base: &str,
    shots: &std::path::Path,
    who: &str,
    otp: &str,
    pw: &str,
) -> Authenticator {
    b.goto(&format!("{base}/admin/login"));
    b.screenshot(shots, &format!("{who}-01-login"));
    b.type_into("input[name=username]", who);
    b.type_into("input[name=password]", otp);
    b.click("button[type=submit]");
    assert!(
        b.wait_url(|u| u.ends_with("/admin/password")).ends_with("/admin/password"),
        "after the one-time password: {}",
        b.url()
    );
    b.screenshot(shots, &format!("{who}-02-new-password"));
    b.type_into("input[name=new_password]", pw);
    b.type_into("input[name=confirm_password]", pw);
    b.click("main button[type=submit]");
    assert!(
        b.wait_url(|u| u.ends_with("/admin/totp/enrol")).ends_with("/admin/totp/enrol"),
        "after the new password: {}",
        b.url()
    );
    b.screenshot(shots, &format!("{who}-03-totp-enrolment"));
    let key = b.text("#totp-secret");
    assert!(b.source().contains("class=\"qr\""), "the QR code is on the page");
    let mut auth = Authenticator::from_base32(&key);
    b.type_into("input[name=code]", &auth.next_code());
    b.click("main button[type=submit]");
    assert!(
        b.wait_url(|u| u.ends_with("/admin/")).ends_with("/admin/"),
        "after enrolment: {} {}",
        b.url(),
        b.source()
    );
    b.screenshot(shots, &format!("{who}-04-dashboard"));
    auth
}

#[test]
fn officer_journey_in_a_real_browser_with_screenshots_of_every_page() {
    let env = Env::new();
    let admin_otp = one_time_password(&env.init().stdout);
    let _server = env.serve();
    let base = env.base_url();
    let shots = artefact_dir();
    let b = Browser::start();

    // The administrator: first login, the users page, adding the officer with step-up.
    let mut admin = first_login_in_browser(&b, &base, &shots, "admin", &admin_otp, "Chief-Passphrase-42x");
    b.goto(&format!("{base}/admin/users"));
    b.screenshot(&shots, "admin-05-users");
    b.type_into("#add-user input[name=name]", "olivia");
    b.select("#add-user select[name=role]", "officer");
    b.type_into("#add-user input[name=totp_code]", &admin.next_code());
    b.click("#add-user button[type=submit]");
    // The new officer's one-time password is not shown to the administrator: it is written for
    // the server's operator, who hands it over.
    b.wait_for("#added");
    assert!(!b.source().contains("id=\"otp\""), "the one-time password is not on the page");
    let file = env.data.join("console-resets/olivia.txt");
    let officer_otp = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(officer_otp.len(), 20, "one-time password in {}", file.display());
    b.screenshot(&shots, "admin-06-user-added");
    b.goto(&format!("{base}/admin/settings"));
    b.screenshot(&shots, "admin-07-settings");
    b.click("header form button[type=submit]"); // log out
    assert!(
        b.wait_url(|u| u.ends_with("/admin/login")).ends_with("/admin/login"),
        "after logout: {}",
        b.url()
    );

    // The officer: first login, then issue from an uploaded CSR.
    let mut officer =
        first_login_in_browser(&b, &base, &shots, "olivia", &officer_otp, "Officer-Passphrase-42x");
    let key = gen_key(env.dir(), "carol.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("carol.csr"), &format!("/CN={EMAIL}"), &[]);
    b.goto(&format!("{base}/admin/issue"));
    b.screenshot(&shots, "olivia-05-issue");
    b.type_into("#issue-csr input[name=email]", EMAIL);
    b.select("#issue-csr select[name=usage]", "signing");
    b.type_into("#issue-csr input[name=csr]", csr.to_str().unwrap());
    b.click("#issue-csr button[type=submit]");
    assert!(
        b.wait_url(|u| u.contains("?issued=1")).contains("?issued=1"),
        "issued: {} {}",
        b.url(),
        b.source()
    );
    let serial = b.text("#serial");
    b.screenshot(&shots, "olivia-06-certificate-issued");
    let issued_der = pem_der(&env.pki(["show", "--serial", &serial]).stdout);
    check_leaf(
        &issued_der,
        EMAIL,
        LeafProfile::Signing,
        &base,
        &env.ca_files().issuing_der,
        &spki_of_key(&key),
    );

    // Find it by search (e-mail, then fingerprint).
    b.goto(&format!("{base}/admin/certificates"));
    b.screenshot(&shots, "olivia-07-certificates");
    b.type_into("form.filters input[name=q]", EMAIL);
    b.click("form.filters button[type=submit]");
    b.wait_url(|u| u.contains("q="));
    assert!(b.text("#certificates").contains(&serial), "found by e-mail");
    assert!(b.text("#result-count").starts_with("1 certificate"), "{}", b.text("#result-count"));
    b.screenshot(&shots, "olivia-08-search-result");
    let fp = hex::encode(ring_free_sha256(&issued_der));
    b.goto(&format!("{base}/admin/certificates?q=sha256:{fp}"));
    assert!(b.text("#certificates").contains(&serial), "found by fingerprint");

    // Revoke with step-up.
    b.click(&format!("#certificates a[href=\"/admin/certificates/{serial}\"]"));
    b.wait_for("#revoke");
    b.screenshot(&shots, "olivia-09-certificate-detail");
    b.select("#revoke select[name=reason]", "keyCompromise");
    b.type_into("#revoke input[name=totp_code]", &officer.next_code());
    b.click("#revoke button[type=submit]");
    assert!(
        b.wait_url(|u| u.contains("?revoked=1")).contains("?revoked=1"),
        "revoked: {} {}",
        b.url(),
        b.source()
    );
    assert_eq!(b.text("#status"), "revoked");
    b.screenshot(&shots, "olivia-10-certificate-revoked");
    let show = env.pki(["show", "--serial", &serial]).stdout;
    assert!(show.contains("status:       revoked") && show.contains("(keyCompromise)"), "{show}");

    // The revocation in the audit log, with the chain intact.
    b.goto(&format!("{base}/admin/audit?action=revoke"));
    let table = b.text("#audit");
    assert!(
        table.contains(&serial) && table.contains("console:olivia") && table.contains("keyCompromise"),
        "{table}"
    );
    assert!(b.text("#chain").contains("intact"));
    b.screenshot(&shots, "olivia-11-audit-log");

    // The remaining pages.
    for (path, name) in [
        ("/admin/escrow", "olivia-12-escrow"),
        ("/admin/timestamps", "olivia-13-timestamps"),
        ("/admin/password", "olivia-14-account"),
    ] {
        b.goto(&format!("{base}{path}"));
        assert!(!b.source().contains("500 Internal"), "{path}");
        b.screenshot(&shots, name);
    }
    b.goto(&format!("{base}/admin/users"));
    assert!(b.source().contains("403"), "the officer may not manage users");
    b.screenshot(&shots, "olivia-15-users-forbidden");
    b.goto(&format!("{base}/admin/"));
    b.click("header form button[type=submit]");
    assert!(b.wait_url(|u| u.ends_with("/admin/login")).ends_with("/admin/login"));

    let pngs = std::fs::read_dir(&shots)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(pngs >= 20, "{pngs} screenshots in {}", shots.display());
}

/// SHA-256 by OpenSSL (the harness links no crypto library).
fn ring_free_sha256(der: &[u8]) -> Vec<u8> {
    let out = run_with_input(
        std::process::Command::new(openssl_bin()).args(["dgst", "-sha256", "-binary"]),
        Some(der),
    )
    .ok();
    out.stdout_bytes
}
