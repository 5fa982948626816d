//! `pki serve`: one actix-web server with every service, the admin socket, and the CRL refresher.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use ca_core::{Ca, CaCert, InitOutcome};
use cerdb::CaId;

use crate::commands::init_message;
use crate::context::{init_ca, socket_path};
use crate::settings::Settings;

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(r#"{"status":"ok"}"#)
}

fn not_found(what: &str) -> HttpResponse {
    HttpResponse::NotFound().content_type("application/json").body(format!(r#"{{"error":"no such {what}"}}"#))
}

async fn ca_cert(ca: web::Data<Ca>, name: web::Path<String>) -> HttpResponse {
    let which = match name.as_str() {
        "root.crt" => CaCert::Root,
        "issuing.crt" => CaCert::Issuing,
        _ => return not_found("CA certificate"),
    };
    HttpResponse::Ok().content_type("application/pkix-cert").body(ca.ca_cert(which).to_vec())
}

async fn crl(ca: web::Data<Ca>, name: web::Path<String>) -> HttpResponse {
    let id = match name.as_str() {
        "root.crl" => CaId::Root,
        "issuing.crl" => CaId::Issuing,
        _ => return not_found("CRL"),
    };
    let ca = ca.into_inner();
    match web::block(move || ca.crl(id)).await {
        Ok(Ok(c)) => HttpResponse::Ok()
            .content_type("application/pkix-crl")
            .insert_header(("Cache-Control", "public, max-age=300"))
            .body(c.der),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "CRL unavailable");
            HttpResponse::ServiceUnavailable()
                .content_type("application/json")
                .body(r#"{"error":"CRL unavailable"}"#)
        }
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

/// Publication of CA certificates (AIA caIssuers) and CRLs (CRL distribution points).
pub fn publication(cfg: &mut web::ServiceConfig) {
    cfg.route("/ca/{name}", web::get().to(ca_cert)).route("/crl/{name}", web::get().to(crl));
}

/// The services `pki serve` can run; all by default, a subset with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// CA certificates and CRLs (`/ca/...`, `/crl/...`).
    Publication,
    /// The OCSP responder (`/ocsp`).
    Ocsp,
    /// The timestamp authority (`/tsa`) and timestamp verification (`/api/v1/timestamps/verify`).
    Tsa,
}

impl Service {
    /// Every service.
    pub const ALL: [Service; 3] = [Service::Publication, Service::Ocsp, Service::Tsa];

    /// Parses `--only` values: a comma-separated list.
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Service>> {
        s.split(',')
            .map(|name| match name.trim() {
                "publication" | "crl" => Ok(Service::Publication),
                "ocsp" => Ok(Service::Ocsp),
                "tsa" => Ok(Service::Tsa),
                other => {
                    anyhow::bail!("unknown service {other:?} for --only: expected publication, ocsp or tsa")
                }
            })
            .collect()
    }
}

/// Runs until interrupted.
pub fn run(data: &Path, settings: &Settings, listen: &str, services: &[Service]) -> anyhow::Result<()> {
    let (ca, outcome) = init_ca(data, settings, "system")?;
    if outcome == InitOutcome::Created {
        print!("{}", init_message(&ca, outcome));
    }
    let ca = Arc::new(ca);
    let sock = socket_path(data);
    crate::admin::serve(&sock, ca.clone())?;

    let refresher = ca.clone();
    std::thread::Builder::new().name("crl-refresh".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_secs(60));
        if let Err(e) = refresher.refresh_crls() {
            tracing::error!(error = %e, "CRL refresh failed");
        }
    })?;

    let ocsp = Arc::new(crate::context::ocsp_responder(&ca)?);
    let hook = ocsp.clone();
    ca.on_revocation(move |serial| hook.invalidate(serial));

    let tsa = web::Data::from(crate::context::tsa(&ca)?);
    let verifier = web::Data::new(crate::context::tsa_verifier(&ca)?);

    let data_ca = web::Data::from(ca.clone());
    let services = services.to_vec();
    let result = actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let mut app = App::new().app_data(data_ca.clone()).route("/healthz", web::get().to(healthz));
            if services.contains(&Service::Publication) {
                app = app.configure(publication);
            }
            if services.contains(&Service::Ocsp) {
                app = app.service(ocsp_responder::scope(ocsp.clone()));
            }
            // Before any broader `/api/v1` scope: actix matches scopes in registration order.
            if services.contains(&Service::Tsa) {
                app = app.service(tsa::scope(tsa.clone())).service(tsa::verify_scope(verifier.clone()));
            }
            app
        })
        .bind(listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        for addr in server.addrs() {
            println!("pki serve: listening on http://{addr}");
        }
        server.run().await.map_err(anyhow::Error::from)
    });
    let _ = std::fs::remove_file(&sock);
    result
}
