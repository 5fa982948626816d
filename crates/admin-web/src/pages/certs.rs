//! Dashboard, certificate search and detail, PEM download, revocation, issuance, escrow
//! recovery (request, approval by another officer, download by the requester).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use ca_core::IssueRequest;
use cerdb::recovery_store::RecoveryId;
use cerdb::{CertKind, CertRecord, CertStatus, EmailAddress, Fingerprint, RevocationReason, Serial, Usage};
use chrono::{Duration, NaiveDate};
use maud::{html, Markup};
use serde::Deserialize;

use super::{see_other, Page};
use crate::auth::{guard, Perm};
use crate::views::{csrf, html_response, page, step_up_field, url_escape, when};
use crate::{forms, Console, Error};

/// Rows per page of the certificate list.
pub(crate) const PAGE_SIZE: usize = 50;
const CHART_DAYS: i64 = 90;
const EXPIRY_DAYS: i64 = 30;
const STATUSES: [CertStatus; 4] =
    [CertStatus::Valid, CertStatus::Revoked, CertStatus::Expired, CertStatus::NotYetValid];

/// The position of a status in [`STATUSES`].
fn status_index(s: CertStatus) -> usize {
    match s {
        CertStatus::Valid => 0,
        CertStatus::Revoked => 1,
        CertStatus::Expired => 2,
        CertStatus::NotYetValid => 3,
    }
}

fn status_cell(s: CertStatus) -> Markup {
    html! { span class=(format!("status-{}", s.name())) { (s.name()) } }
}

fn serial_link(s: &Serial) -> Markup {
    html! { a.mono href=(format!("/admin/certificates/{s}")) { (s) } }
}

/// The bar chart of issuance per day, drawn on the server.
fn chart(per_day: &[usize], first: NaiveDate) -> Markup {
    let (w, h, left, bottom) = (900.0_f64, 220.0_f64, 40.0_f64, 24.0_f64);
    let max = per_day.iter().copied().max().unwrap_or(0).max(1);
    let bw = (w - left - 10.0) / per_day.len().max(1) as f64;
    let plot_h = h - bottom - 10.0;
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {w} {h}")) width=(w) height=(h) role="img" aria-label="Certificates issued per day over the last 90 days" {
            title { "Certificates issued per day, last 90 days" }
            line.axis x1=(left) y1=(h - bottom) x2=(w - 5.0) y2=(h - bottom) {}
            line.axis x1=(left) y1="10" x2=(left) y2=(h - bottom) {}
            text x="4" y="18" { (max) }
            text x="4" y=(h - bottom) { "0" }
            @for (i, n) in per_day.iter().enumerate() {
                @let day = first + Duration::days(i as i64);
                @let bh = plot_h * (*n as f64) / (max as f64);
                rect.bar x=(format!("{:.1}", left + i as f64 * bw + 0.5)) y=(format!("{:.1}", h - bottom - bh)) width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{:.1}", bh)) {
                    title { (day.format("%Y-%m-%d")) ": " (n) }
                }
                @if i % 15 == 0 {
                    text x=(format!("{:.1}", left + i as f64 * bw)) y=(h - 6.0) { (day.format("%m-%d")) }
                }
            }
        }
    }
}

pub(crate) async fn dashboard(req: HttpRequest, console: web::Data<Console>) -> Page {
    let ctx = guard(&req, &console, Perm::Read)?;
    let c = console.clone();
    let certs = web::block(move || c.cache.certs(&c.ca)).await??;
    let c = console.clone();
    let own = web::block(move || c.ca.own_certificates()).await??;
    let now = console.ca.now();
    let today = now.date_naive();
    let first = today - Duration::days(CHART_DAYS - 1);
    // Counts per usage (in order of appearance, signing and encryption first) and status.
    let mut counts: Vec<(CertKind, [usize; STATUSES.len()])> =
        vec![(CertKind::Signing, [0; STATUSES.len()]), (CertKind::Encryption, [0; STATUSES.len()])];
    let mut per_day = vec![0usize; CHART_DAYS as usize];
    let mut expiring: Vec<&CertRecord> = Vec::new();
    let horizon = now + Duration::days(EXPIRY_DAYS);
    let withdrawn = console.ca.db().withdrawn_issuers().clone();
    for r in certs.newest_first() {
        let st = withdrawn.status_of(r, now);
        let i = match counts.iter().position(|(k, _)| *k == r.kind) {
            Some(i) => i,
            None => {
                counts.push((r.kind, [0; STATUSES.len()]));
                counts.len() - 1
            }
        };
        counts[i].1[status_index(st)] += 1;
        let d = (r.issued_at.date_naive() - first).num_days();
        if (0..CHART_DAYS).contains(&d) {
            per_day[d as usize] += 1;
        }
        if st == CertStatus::Valid && r.not_after <= horizon {
            expiring.push(r);
        }
    }
    expiring.sort_by_key(|r| r.not_after);
    let total_expiring = expiring.len();
    let attention = own.iter().filter(|c| c.state.needs_attention()).count();
    let body = html! {
        section #own-certificates {
            h2 { "CA certificates" }
            @if attention > 0 {
                p.error { (attention) " of the CA's own certificates need attention: renew or replace them before they end." }
            }
            table {
                tr { th { "certificate" } th { "serial" } th { "not after" } th { "days left" } th { "warned at" } th { "state" } }
                @for c in &own {
                    tr.(if c.state.needs_attention() { "attention" } else { "" }) {
                        td { (c.name) } td { (serial_link(&c.serial)) } td { (when(c.not_after)) }
                        td.num { (c.days_left) } td.num { (c.warning_days) } td { (c.state.name()) }
                    }
                }
            }
        }
        section {
            h2 { "Certificates by usage and status" }
            table #counts {
                tr { th { "usage" } @for s in STATUSES { th { (s.name()) } } th { "total" } }
                @for (k, n) in &counts {
                    tr {
                        td { (k.name()) }
                        @for c in n { td.num { (c) } }
                        td.num { (n.iter().sum::<usize>()) }
                    }
                }
            }
        }
        section {
            h2 { "Issued per day (last 90 days)" }
            (chart(&per_day, first))
        }
        section {
            h2 { "Expiring within 30 days (" (total_expiring) ")" }
            @if expiring.is_empty() { p { "None." } } @else {
                table #expiring {
                    tr { th { "serial" } th { "usage" } th { "e-mail" } th { "not after" } }
                    @for r in expiring.iter().take(PAGE_SIZE) {
                        tr { td { (serial_link(&r.serial)) } td { (r.kind.name()) } td { (r.email.as_ref().map(|e| e.as_str()).unwrap_or("-")) } td { (when(r.not_after)) } }
                    }
                }
                @if total_expiring > PAGE_SIZE { p { "… and " (total_expiring - PAGE_SIZE) " more." } }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page("Dashboard", Some(&ctx), body)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    usage: String,
    #[serde(default, deserialize_with = "super::page_number")]
    page: Option<usize>,
}

/// Looks `q` up in the indexes: a fingerprint, a serial, a whole address. `None` when it names
/// none of these: then it is an address fragment, searched in the view.
fn lookup(console: &Console, q: &str) -> Result<Option<Vec<CertRecord>>, Error> {
    let db = console.ca.db();
    let fp_text = q.strip_prefix("sha256:").unwrap_or(q);
    if let Ok(fp) = fp_text.parse::<Fingerprint>() {
        return Ok(Some(db.by_fingerprint(&fp)?.into_iter().collect()));
    }
    if let Ok(serial) = q.parse::<Serial>() {
        if let Some(r) = db.get_meta(&serial)? {
            return Ok(Some(vec![r]));
        }
    }
    if q.contains('@') {
        if let Ok(email) = q.parse::<EmailAddress>() {
            return Ok(Some(db.by_email(&email, None)?));
        }
    }
    Ok(None)
}

/// The number of rows `keep` admits and copies of those on page `page_no`, in one pass.
fn paginate<'a>(
    rows: impl Iterator<Item = &'a CertRecord>,
    keep: impl Fn(&CertRecord) -> bool,
    page_no: usize,
) -> (Vec<CertRecord>, usize) {
    let skip = (page_no - 1).saturating_mul(PAGE_SIZE);
    let mut total = 0;
    let mut page = Vec::new();
    for r in rows.filter(|r| keep(r)) {
        if total >= skip && page.len() < PAGE_SIZE {
            page.push(r.clone());
        }
        total += 1;
    }
    (page, total)
}

pub(crate) async fn list(req: HttpRequest, console: web::Data<Console>, q: web::Query<ListQuery>) -> Page {
    let ctx = guard(&req, &console, Perm::Read)?;
    let q = q.into_inner();
    let now = console.ca.now();
    let page_no = q.page.unwrap_or(1).max(1);
    let c = console.clone();
    let text = q.q.trim().to_string();
    let (status, usage) = (q.status.clone(), q.usage.clone());
    let withdrawn = console.ca.db().withdrawn_issuers().clone();
    let w = withdrawn.clone();
    let (rows, total) = web::block(move || -> Result<(Vec<CertRecord>, usize), Error> {
        let keep = |r: &CertRecord| {
            (status.is_empty() || w.status_of(r, now).name() == status)
                && (usage.is_empty() || r.kind.name() == usage)
        };
        if !text.is_empty() {
            if let Some(found) = lookup(&c, &text)? {
                return Ok(paginate(found.iter(), keep, page_no));
            }
        }
        let certs = c.cache.certs(&c.ca)?;
        Ok(if text.is_empty() {
            paginate(certs.newest_first(), keep, page_no)
        } else {
            paginate(certs.address_contains(&text), keep, page_no)
        })
    })
    .await??;
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let link = |p: usize| {
        format!(
            "/admin/certificates?q={}&status={}&usage={}&page={p}",
            url_escape(&q.q),
            url_escape(&q.status),
            url_escape(&q.usage)
        )
    };
    let body = html! {
        form.filters method="get" action="/admin/certificates" {
            label { "E-mail, serial or SHA-256 fingerprint" input type="text" name="q" value=(q.q); }
            label { "Status" select name="status" {
                option value="" selected[q.status.is_empty()] { "any" }
                @for s in STATUSES { option value=(s.name()) selected[q.status == s.name()] { (s.name()) } }
            } }
            label { "Usage" select name="usage" {
                option value="" selected[q.usage.is_empty()] { "any" }
                @for u in ["signing", "encryption"] { option value=(u) selected[q.usage == u] { (u) } }
            } }
            button type="submit" { "Search" }
        }
        p #result-count { (total) " certificate(s); page " (page_no) " of " (pages) }
        table #certificates {
            tr { th { "serial" } th { "usage" } th { "status" } th { "e-mail" } th { "issued" } th { "not after" } }
            @for r in &rows {
                tr {
                    td { (serial_link(&r.serial)) }
                    td { (r.kind.name()) }
                    td { (status_cell(withdrawn.status_of(r, now))) }
                    td { (r.email.as_ref().map(|e| e.as_str()).unwrap_or("-")) }
                    td { (when(r.issued_at)) }
                    td { (when(r.not_after)) }
                }
            }
        }
        div.pager {
            @if page_no > 1 { a rel="prev" href=(link(page_no - 1)) { "← previous" } }
            @if page_no < pages { a rel="next" href=(link(page_no + 1)) { "next →" } }
        }
    };
    Ok(html_response(StatusCode::OK, page("Certificates", Some(&ctx), body)))
}

fn parse_serial(s: &str) -> Result<Serial, Error> {
    s.parse::<Serial>().map_err(|e| Error::BadRequest(e.to_string()))
}

/// The fields of a certificate as X.509 names them.
fn x509_fields(der: &[u8]) -> Vec<(String, String)> {
    use x509_parser::prelude::*;
    let mut out = Vec::new();
    let Ok((_, x)) = X509Certificate::from_der(der) else {
        out.push(("error".into(), "the stored certificate does not parse".into()));
        return out;
    };
    let reg = x509_parser::objects::oid_registry();
    let name = |oid: &x509_parser::der_parser::Oid| {
        x509_parser::objects::oid2sn(oid, reg).map(str::to_string).unwrap_or_else(|_| oid.to_id_string())
    };
    out.push(("version".into(), format!("{}", x.version().0 + 1)));
    out.push(("signature algorithm".into(), name(&x.signature_algorithm.algorithm)));
    out.push(("issuer".into(), x.issuer().to_string()));
    out.push(("subject".into(), x.subject().to_string()));
    out.push(("public key".into(), name(&x.public_key().algorithm.algorithm)));
    for ext in x.extensions() {
        let value = match ext.parsed_extension() {
            ParsedExtension::KeyUsage(k) => k.to_string(),
            ParsedExtension::SubjectAlternativeName(san) => {
                san.general_names.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ")
            }
            ParsedExtension::ExtendedKeyUsage(e) => {
                let mut v = Vec::new();
                for (set, n) in [
                    (e.email_protection, "emailProtection"),
                    (e.server_auth, "serverAuth"),
                    (e.client_auth, "clientAuth"),
                    (e.time_stamping, "timeStamping"),
                    (e.ocsp_signing, "OCSPSigning"),
                    (e.code_signing, "codeSigning"),
                    (e.any, "anyExtendedKeyUsage"),
                ] {
                    if set {
                        v.push(n.to_string());
                    }
                }
                v.extend(e.other.iter().map(|o| o.to_id_string()));
                v.join(", ")
            }
            ParsedExtension::BasicConstraints(b) => {
                format!(
                    "CA: {}{}",
                    b.ca,
                    b.path_len_constraint.map(|p| format!(", pathlen {p}")).unwrap_or_default()
                )
            }
            ParsedExtension::CertificatePolicies(p) => {
                p.iter().map(|i| i.policy_id.to_id_string()).collect::<Vec<_>>().join(", ")
            }
            ParsedExtension::SubjectKeyIdentifier(k) => hex::encode(k.0),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| hex::encode(k.0)).unwrap_or_default()
            }
            ParsedExtension::CRLDistributionPoints(dps) => dps
                .iter()
                .filter_map(|dp| match &dp.distribution_point {
                    Some(DistributionPointName::FullName(names)) => {
                        Some(names.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", "))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(", "),
            ParsedExtension::AuthorityInfoAccess(aia) => aia
                .accessdescs
                .iter()
                .map(|d| format!("{}: {}", name(&d.access_method), d.access_location))
                .collect::<Vec<_>>()
                .join(", "),
            // The one extension with no value to show (RFC 6960 §4.2.2.2.1: a NULL).
            ParsedExtension::UnsupportedExtension { .. }
                if ext.oid.to_id_string() == "1.3.6.1.5.5.7.48.1.5" =>
            {
                "present (no revocation check of the responder)".into()
            }
            _ => hex::encode(ext.value),
        };
        let crit = if ext.critical { " (critical)" } else { "" };
        out.push((format!("{}{crit}", name(&ext.oid)), value));
    }
    out
}

#[derive(Debug, Deserialize)]
pub(crate) struct DetailQuery {
    issued: Option<String>,
    revoked: Option<String>,
    /// Other certificates revoked with it for keyCompromise (the same key); shown when a number.
    same_key: Option<String>,
}

pub(crate) async fn detail(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
    q: web::Query<DetailQuery>,
) -> Page {
    let ctx = guard(&req, &console, Perm::Read)?;
    let serial = parse_serial(&path)?;
    let rec = console.ca.show(&serial)?;
    let now = console.ca.now();
    let withdrawn = console.ca.db().withdrawn_issuers();
    let status = withdrawn.status_of(&rec, now);
    // Not revoked itself, but its issuer was compromised: shown revoked for cACompromise.
    let issuer_revocation = withdrawn.inherited_revocation(&rec);
    // The CA's own certificates are revoked only by the compromise procedure (settings page).
    let own = rec.kind == CertKind::RootCa || ca_core::OwnCert::of_kind(rec.kind).is_some();
    let may_revoke = ctx.can(Perm::Revoke) && !own;
    let revocable = may_revoke && rec.revocation.is_none();
    // Revoked for another reason, then found compromised: the reason becomes keyCompromise.
    let compromise_reportable =
        may_revoke && rec.revocation.as_ref().is_some_and(|r| r.reason != RevocationReason::KeyCompromise);
    let body = html! {
        @if q.issued.is_some() { p.notice { "Certificate issued." } }
        @if q.revoked.is_some() { p.notice { "Certificate revoked." } }
        @if let Some(n) = q.same_key.as_deref().and_then(|n| n.parse::<usize>().ok()).filter(|n| *n > 0) {
            p.notice #same-key { (n) " other certificate(s) of this address with the same key revoked for keyCompromise too." }
        }
        table #fields {
            tr { th { "serial" } td.mono #serial { (rec.serial) } }
            tr { th { "status" } td #status { (status_cell(status)) } }
            @if let Some(r) = &rec.revocation { tr { th { "revoked" } td { (when(r.at)) " (" (r.reason) ")" } } }
            @if let Some(r) = &issuer_revocation {
                tr { th { "revoked" } td #issuer-revoked { (when(r.at)) " (" (r.reason) ": its issuer, the " (rec.issuer) " CA, was compromised)" } }
            }
            tr { th { "usage" } td { (rec.kind.name()) } }
            tr { th { "e-mail" } td { (rec.email.as_ref().map(|e| e.as_str()).unwrap_or("-")) } }
            tr { th { "issued by" } td { (rec.issuer) } }
            tr { th { "not before" } td { (when(rec.not_before)) } }
            tr { th { "not after" } td { (when(rec.not_after)) } }
            tr { th { "key" } td { (rec.key_type) } }
            tr { th { "escrowed key" } td { (if rec.escrow_key.is_some() { "yes" } else { "no" }) } }
            tr { th { "SHA-256" } td.mono #fingerprint { (rec.fingerprint) } }
            @for (k, v) in x509_fields(&rec.der) { tr { th { (k) } td { (v) } } }
        }
        p { a #pem-download href=(format!("/admin/certificates/{}/pem", rec.serial)) { "Download PEM" } }
        @if revocable {
            form.card #revoke method="post" action=(format!("/admin/certificates/{}/revoke", rec.serial)) {
                h2 { "Revoke" }
                (csrf(&ctx.session.csrf_token))
                label { "Reason" select name="reason" {
                    @for r in RevocationReason::ALL { @if r != RevocationReason::CaCompromise { option value=(r.name()) { (r.name()) } } }
                } }
                (step_up_field(ctx.stepped_up(&console)))
                button type="submit" { "Revoke certificate" }
            }
        }
        @if compromise_reportable {
            form.card #report-compromise method="post" action=(format!("/admin/certificates/{}/revoke", rec.serial)) {
                h2 { "Key compromised" }
                p { "The reason becomes keyCompromise (the revocation time stays), the key is never certified again, and the address's other certificates with this key are revoked." }
                (csrf(&ctx.session.csrf_token))
                input type="hidden" name="reason" value=(RevocationReason::KeyCompromise.name());
                (step_up_field(ctx.stepped_up(&console)))
                button type="submit" { "Report key compromise" }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page(&format!("Certificate {}", rec.serial), Some(&ctx), body)))
}

fn safe_filename(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._@-".contains(c) { c } else { '_' }).collect()
}

fn download(bytes: Vec<u8>, content_type: &str, filename: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", safe_filename(filename)),
        ))
        .body(bytes)
}

pub(crate) async fn pem(req: HttpRequest, console: web::Data<Console>, path: web::Path<String>) -> Page {
    guard(&req, &console, Perm::Read)?;
    let rec = console.ca.show(&parse_serial(&path)?)?;
    let pem = ca_core::to_pem("CERTIFICATE", &rec.der);
    Ok(download(pem.into_bytes(), "application/x-pem-file", &format!("{}.pem", rec.serial)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RevokeForm {
    csrf_token: Option<String>,
    #[serde(default)]
    reason: String,
    totp_code: Option<String>,
}

pub(crate) async fn revoke(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
    form: web::Form<RevokeForm>,
) -> Page {
    let mut ctx = guard(&req, &console, Perm::Revoke)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let serial = parse_serial(&path)?;
    let reason: RevocationReason = form.reason.parse()?;
    ctx.step_up(&console, form.totp_code.as_deref())?;
    let c = console.clone();
    let actor = ctx.actor();
    let s = serial.clone();
    let done = web::block(move || c.ca.revoke(&s, reason, &actor)).await??;
    let same_key = match done.same_key.len() {
        0 => String::new(),
        n => format!("&same_key={n}"),
    };
    Ok(see_other(&format!("/admin/certificates/{serial}?revoked=1{same_key}")))
}

fn key_type_options() -> Markup {
    html! {
        @for (v, label) in [("rsa2048", "RSA 2048"), ("rsa3072", "RSA 3072"), ("rsa4096", "RSA 4096"), ("p256", "EC P-256"), ("p384", "EC P-384")] {
            option value=(v) { (label) }
        }
    }
}

fn password_pair() -> Markup {
    html! {
        label { "PKCS#12 password (at least " (hsm_sim::MIN_PKCS12_PASSWORD_LEN) " characters)"
            input type="password" name="p12_password" autocomplete="new-password" required; }
        label { "PKCS#12 password again" input type="password" name="p12_password_confirm" autocomplete="new-password" required; }
    }
}

pub(crate) async fn issue_page(req: HttpRequest, console: web::Data<Console>) -> Page {
    let ctx = guard(&req, &console, Perm::Issue)?;
    let body = html! {
        form.card #issue-csr method="post" action="/admin/issue/csr" enctype="multipart/form-data" {
            h2 { "From a certificate signing request" }
            (csrf(&ctx.session.csrf_token))
            label { "E-mail address" input type="email" name="email" required; }
            label { "Usage" select name="usage" { option value="signing" { "signing" } option value="encryption" { "encryption" } } }
            label { "CSR file (PEM or DER)" input type="file" name="csr" accept=".csr,.pem,.der,.req"; }
            label { "… or paste the PEM" textarea name="csr_pem" {} }
            button type="submit" { "Issue" }
        }
        form.card #issue-generate method="post" action="/admin/issue/generate" {
            h2 { "Generate an escrowed encryption key" }
            p { "The key pair is generated and escrowed in the key store; you download it with the certificate as a PKCS#12." }
            (csrf(&ctx.session.csrf_token))
            label { "E-mail address" input type="email" name="email" required; }
            label { "Key type" select name="key_type" { (key_type_options()) } }
            (password_pair())
            button type="submit" { "Issue and download PKCS#12" }
        }
    };
    Ok(html_response(StatusCode::OK, page("Issue a certificate", Some(&ctx), body)))
}

pub(crate) async fn issue_csr(req: HttpRequest, console: web::Data<Console>, payload: web::Payload) -> Page {
    let ctx = guard(&req, &console, Perm::Issue)?;
    let parts = forms::read(
        &req,
        payload,
        &[("csrf_token", 128), ("email", 512), ("usage", 32), ("csr", 64 * 1024), ("csr_pem", 64 * 1024)],
    )
    .await?;
    ctx.check_csrf(forms::text(&parts, "csrf_token").as_deref())?;
    let email: EmailAddress = forms::text(&parts, "email").unwrap_or_default().parse()?;
    let usage: Usage = forms::text(&parts, "usage").unwrap_or_default().parse()?;
    let csr = match (parts.get("csr").filter(|v| !v.is_empty()), forms::text(&parts, "csr_pem")) {
        (Some(file), _) => file.clone(),
        (None, Some(pem)) => pem.into_bytes(),
        (None, None) => return Err(Error::BadRequest("upload a CSR file or paste its PEM".into())),
    };
    let c = console.clone();
    let actor = ctx.actor();
    let issued = web::block(move || c.ca.issue(&IssueRequest { email, usage, csr }, &actor)).await??;
    Ok(see_other(&format!("/admin/certificates/{}?issued=1", issued.record.serial)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct GenerateForm {
    csrf_token: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    key_type: String,
    #[serde(default)]
    p12_password: String,
    #[serde(default)]
    p12_password_confirm: String,
}

fn same_passwords(a: &str, b: &str) -> Result<(), Error> {
    if a == b {
        Ok(())
    } else {
        Err(Error::BadRequest("the two PKCS#12 passwords differ".into()))
    }
}

pub(crate) async fn issue_generate(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<GenerateForm>,
) -> Page {
    let ctx = guard(&req, &console, Perm::Issue)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let form = form.into_inner();
    same_passwords(&form.p12_password, &form.p12_password_confirm)?;
    let email: EmailAddress = form.email.parse()?;
    let kt: hsm_sim::KeyType =
        form.key_type.parse().map_err(|e: hsm_sim::Error| Error::BadRequest(e.to_string()))?;
    let c = console.clone();
    let actor = ctx.actor();
    let e = email.clone();
    let (issued, p12) =
        web::block(move || c.ca.issue_generated(&e, Usage::Encryption, Some(kt), &form.p12_password, &actor))
            .await??;
    Ok(download(p12, "application/x-pkcs12", &format!("{email}-{}.p12", issued.record.serial)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct EscrowQuery {
    requested: Option<String>,
    approved: Option<String>,
}

/// `GET /admin/escrow`: the request form and the requests, with Approve for other officers and
/// Download for the requester once enough officers agreed.
pub(crate) async fn escrow_page(
    req: HttpRequest,
    console: web::Data<Console>,
    query: web::Query<EscrowQuery>,
) -> Page {
    let ctx = guard(&req, &console, Perm::Recover)?;
    let c = console.clone();
    let mut requests = web::block(move || c.ca.recoveries()).await??;
    requests.reverse();
    let now = console.ca.now();
    let me = ctx.actor();
    let fresh = ctx.stepped_up(&console);
    let need = console.ca.escrow_config().approvals;
    let body = html! {
        @if let Some(id) = &query.requested {
            p.notice #requested { "Recovery requested: request " code { (id) } ". Another officer must approve it; then download the key here." }
        }
        @if let Some(id) = &query.approved { p.notice #approved { "You approved request " code { (id) } "." } }
        form.card #escrow-request method="post" action="/admin/escrow/request" {
            h2 { "Request the recovery of an escrowed key" }
            p { "The escrowed private key of an encryption certificate is released as a PKCS#12 only to the officer who requests it, after "
                (need - 1) " other officer" @if need > 2 { "s" } " approved. Every step is recorded in the audit log." }
            (csrf(&ctx.session.csrf_token))
            label { "Serial of the encryption certificate" input type="text" name="serial" required; }
            label { "Reason (at most " (ca_core::MAX_RECOVERY_REASON_CHARS) " characters)"
                input type="text" name="reason" maxlength=(ca_core::MAX_RECOVERY_REASON_CHARS); }
            (step_up_field(fresh))
            button type="submit" { "Request recovery" }
        }
        h2 { "Requests" }
        table #recoveries {
            tr { th { "request" } th { "certificate" } th { "requested by" } th { "reason" } th { "approved by" } th { "expires" } th { "state" } th { "actions" } }
            @for r in &requests {
                @let state = ca_core::RecoveryState::of(r, now);
                @let approved_by_me = r.approvals.iter().any(|a| ca_core::same_officer(&me, &a.actor));
                tr id=(format!("recovery-{}", r.id)) {
                    td.mono { (r.id) } td { (serial_link(&r.serial)) } td { (r.requester) } td { (r.reason) }
                    td { (r.approvals.iter().map(|a| a.actor.as_str()).collect::<Vec<_>>().join(", ")) }
                    td { (when(r.expires_at)) } td.state { (state.label()) }
                    td {
                        @if matches!(state, ca_core::RecoveryState::Pending { .. }) && !ca_core::same_officer(&me, &r.requester) && !approved_by_me {
                            form.inline.approve method="post" action=(format!("/admin/escrow/{}/approve", r.id)) {
                                (csrf(&ctx.session.csrf_token))
                                (step_up_field(fresh))
                                button type="submit" { "Approve" }
                            }
                        }
                        @if state == ca_core::RecoveryState::Approved && me == r.requester {
                            form.release method="post" action=(format!("/admin/escrow/{}/release", r.id)) {
                                (csrf(&ctx.session.csrf_token))
                                (password_pair())
                                (step_up_field(fresh))
                                button type="submit" { "Download PKCS#12" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page("Escrow recovery", Some(&ctx), body)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RecoveryRequestForm {
    csrf_token: Option<String>,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    reason: String,
    totp_code: Option<String>,
}

/// `POST /admin/escrow/request`: step 1, by any officer.
pub(crate) async fn escrow_request(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<RecoveryRequestForm>,
) -> Page {
    let mut ctx = guard(&req, &console, Perm::Recover)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let form = form.into_inner();
    let serial = parse_serial(&form.serial)?;
    ctx.step_up(&console, form.totp_code.as_deref())?;
    let c = console.clone();
    let actor = ctx.actor();
    let r = web::block(move || c.ca.request_recovery(&serial, &actor, &form.reason)).await??;
    Ok(see_other(&format!("/admin/escrow?requested={}", r.id)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StepUpForm {
    csrf_token: Option<String>,
    totp_code: Option<String>,
}

fn recovery_id(text: &str) -> Result<RecoveryId, Error> {
    Ok(text.parse::<RecoveryId>()?)
}

/// `POST /admin/escrow/{id}/approve`: step 2, by an officer other than the requester.
pub(crate) async fn escrow_approve(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
    form: web::Form<StepUpForm>,
) -> Page {
    let mut ctx = guard(&req, &console, Perm::Recover)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let id = recovery_id(&path)?;
    ctx.step_up(&console, form.totp_code.as_deref())?;
    let c = console.clone();
    let actor = ctx.actor();
    web::block(move || c.ca.approve_recovery(&id, &actor)).await??;
    Ok(see_other(&format!("/admin/escrow?approved={id}")))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReleaseForm {
    csrf_token: Option<String>,
    #[serde(default)]
    p12_password: String,
    #[serde(default)]
    p12_password_confirm: String,
    totp_code: Option<String>,
}

/// `POST /admin/escrow/{id}/release`: step 3, the requester downloads the key, once.
pub(crate) async fn escrow_release(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
    form: web::Form<ReleaseForm>,
) -> Page {
    let mut ctx = guard(&req, &console, Perm::Recover)?;
    ctx.check_csrf(form.csrf_token.as_deref())?;
    let form = form.into_inner();
    let id = recovery_id(&path)?;
    same_passwords(&form.p12_password, &form.p12_password_confirm)?;
    ctx.step_up(&console, form.totp_code.as_deref())?;
    let c = console.clone();
    let actor = ctx.actor();
    let (r, p12) = web::block(move || c.ca.release_recovery(&id, &actor, &form.p12_password)).await??;
    Ok(download(p12, "application/x-pkcs12", &format!("recovered-{}.p12", r.serial)))
}

#[cfg(test)]
mod tests {
    use super::x509_fields;

    #[test]
    fn every_extension_of_a_subscriber_certificate_shows_a_value() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.crl_distribution_points =
            vec![rcgen::CrlDistributionPoint { uris: vec!["http://ca.test/crl/issuing.crl".into()] }];
        let cert = p.self_signed(&kp).unwrap();
        let fields = x509_fields(cert.der());
        for (name, value) in &fields {
            assert!(!value.is_empty(), "{name} has no value: {fields:?}");
        }
        let crl = fields.iter().find(|(n, _)| n.starts_with("crlDistributionPoints")).unwrap();
        assert!(crl.1.contains("http://ca.test/crl/issuing.crl"), "{crl:?}");
        assert!(fields.iter().any(|(n, v)| n.starts_with("subjectKeyIdentifier") && v.len() == 40));
    }
}
