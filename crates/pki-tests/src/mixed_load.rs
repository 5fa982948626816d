//! The operations of the mixed load that the crash loop ([`crate::crash_loop`]) and the soak
//! ([`crate::soak`]) drive against a running `pki serve`, each as its real client does it:
//! issuance from a CSR and escrowed issuance with `pki issue` (through the admin socket),
//! issuance from a CSR in the console (an officer's session, `POST /admin/issue/csr`), revocation with `pki revoke`, timestamps by `POST /tsa`, OCSP by `POST /ocsp`, directory
//! lookups by `GET /api/v1/certificates/exists`. Each returns what was acknowledged, or why not.

use std::path::Path;
use std::time::Duration;

use crate::console_support::{form_value, multipart, Client};
use crate::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn fail(out: &Out) -> String {
    let line = out.one_error_line();
    if line.is_empty() {
        format!("exit {:?}", out.status.code())
    } else {
        line
    }
}

/// The serial `pki issue` printed (the certificate PEM on stdout), if it succeeded.
fn issued_serial(out: &Out) -> Result<String, String> {
    if !out.status.success() || !out.stdout.contains("-----END CERTIFICATE-----") {
        return Err(fail(out));
    }
    Ok(cert_serial(&pem_der(&out.stdout)))
}

/// `pki issue --usage signing --csr CSR` for `email`: the acknowledged serial.
pub fn issue_from_csr(env: &Env, csr: &Path, email: &str) -> Result<String, String> {
    issued_serial(&env.pki_try(["issue", "--email", email, "--usage", "signing", "--csr", &p(csr)]))
}

/// Escrowed issuance of a P-256 encryption certificate, delivered as PKCS#12 to `p12`.
pub fn issue_escrowed(env: &Env, email: &str, p12: &Path, password_file: &Path) -> Result<String, String> {
    issued_serial(&env.pki_try([
        "issue",
        "--email",
        email,
        "--usage",
        "encryption",
        "--generate",
        "--key-type",
        "p256",
        "--p12",
        &p(p12),
        "--p12-password-file",
        &p(password_file),
    ]))
}

/// The password of the console officer of [`console_officer`].
pub const OFFICER_PASSWORD: &str = "Mixed-Load-Officer-7";

/// An officer of the console (`pki user add`, first login): the client holding its session,
/// which the server keeps across restarts.
pub fn console_officer(env: &Env, name: &str) -> Client {
    console_support::console_user(env, name, "officer", OFFICER_PASSWORD).0
}

/// The CSRF token of `client`'s session, from the console's issuance page.
pub fn console_csrf(client: &mut Client) -> Result<String, String> {
    let page = client.try_request("GET", "/admin/issue", None, b"", Duration::from_secs(10))?;
    if page.status != 200 {
        return Err(format!("GET /admin/issue: HTTP {}", page.status));
    }
    form_value(&page.text(), "csrf_token").ok_or_else(|| "no csrf_token on /admin/issue".into())
}

/// Issuance of a signing certificate from the DER or PEM CSR `csr` for `email` in the console
/// (`POST /admin/issue/csr` with the session of `client` and its CSRF token): the acknowledged
/// serial, from the redirect to the new certificate's page.
pub fn issue_in_console(client: &mut Client, csrf: &str, csr: &[u8], email: &str) -> Result<String, String> {
    let (content_type, body) = multipart(&[
        ("csrf_token", None, csrf.as_bytes()),
        ("email", None, email.as_bytes()),
        ("usage", None, b"signing"),
        ("csr", Some("req.csr"), csr),
    ]);
    let r = client.try_request(
        "POST",
        "/admin/issue/csr",
        Some(&content_type),
        &body,
        Duration::from_secs(10),
    )?;
    let location = r.header("location").unwrap_or_default();
    let serial = location.strip_prefix("/admin/certificates/").and_then(|l| l.strip_suffix("?issued=1"));
    match serial.map(hex::decode) {
        // The form of `pki list` and of the other clients: no leading zero bytes.
        Some(Ok(bytes)) if r.status == 303 && !bytes.is_empty() => Ok(serial_text(&bytes)),
        _ => Err(format!("HTTP {} to {location:?}", r.status)),
    }
}

/// `pki revoke --serial SERIAL --reason REASON`.
pub fn revoke(env: &Env, serial: &str, reason: &str) -> Result<(), String> {
    let out = env.pki_try(["revoke", "--serial", serial, "--reason", reason]);
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(&out))
    }
}

/// `POST /tsa` with the DER TimeStampReq `query` (and `headers`, e.g. an API key): the
/// TimeStampResp when granted.
pub fn timestamp(env: &Env, query: &[u8], headers: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    let mut all = vec![("Content-Type", "application/timestamp-query")];
    all.extend_from_slice(headers);
    let reply = http_client::send(env.port, "POST", "/tsa", &all, Some(query), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("HTTP {}", reply.status));
    }
    if !granted(&reply.body) {
        return Err("not granted".into());
    }
    Ok(reply.body)
}

/// `POST /ocsp` with the DER OCSPRequest `request`: Ok when the answer is a successful
/// OCSPResponse.
pub fn ocsp(env: &Env, request: &[u8]) -> Result<(), String> {
    let headers = [("Content-Type", "application/ocsp-request")];
    let reply =
        http_client::send(env.port, "POST", "/ocsp", &headers, Some(request), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
    // OCSPResponse: SEQUENCE { responseStatus ENUMERATED (0: successful), ... }
    let ok = ::x509_parser::der_parser::parse_der(&reply.body)
        .ok()
        .and_then(|(_, r)| r.as_sequence().ok().and_then(|s| s.first().and_then(|st| st.as_u32().ok())))
        == Some(0);
    match (reply.status, ok) {
        (200, true) => Ok(()),
        (s, _) => Err(format!("HTTP {s}, successful: {ok}")),
    }
}

/// `GET /api/v1/certificates/exists?email=EMAIL` (with `headers`): Ok on 200.
pub fn exists(env: &Env, email: &str, headers: &[(&str, &str)]) -> Result<(), String> {
    let path = format!("/api/v1/certificates/exists?email={}", email.replace('@', "%40"));
    let reply = http_client::send(env.port, "GET", &path, headers, None, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    if reply.status == 200 {
        Ok(())
    } else {
        Err(format!("HTTP {}", reply.status))
    }
}

/// Whether a TimeStampResp's status is granted (0) or grantedWithMods (1).
pub fn granted(der: &[u8]) -> bool {
    let Ok(reply) = ::x509_parser::der_parser::parse_der(der) else { return false };
    let status = reply
        .1
        .as_sequence()
        .ok()
        .and_then(|s| s.first())
        .and_then(|info| info.as_sequence().ok())
        .and_then(|info| info.first())
        .and_then(|st| st.as_u32().ok());
    matches!(status, Some(0 | 1))
}
