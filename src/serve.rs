//! `pki serve`: one actix-web server with every service, the admin socket, and the CRL refresher.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use ca_core::{Ca, CaCert, InitOutcome, OwnCert};
use cerdb::directory::get_only;
use cerdb::CaId;

use crate::commands::init_message;
use crate::context::{init_ca, socket_path};
use crate::settings::Settings;

/// What no service of `pki serve` answers, an unknown path: a JSON 404, as every API's errors are
/// JSON. A known path asked with a method it does not take gets 405 with `Allow` from its own
/// resource ([`get_only`], [`cerdb::directory::post_only`], ACME's dispatcher).
async fn no_such_endpoint() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"error": "no such endpoint"}))
}

/// `{"status":"ok"}` while every service can work and nothing needs attention.
///
/// `{"status":"degraded", ...}` names what does: `"hsm"`, the key custody's problem, with 503
/// (nothing can be signed: a token removed; ok again once it is back); `"certificates"`, the
/// CA-side certificates within their warning window, expired or revoked ([`Ca::own_certificates`]),
/// with 200 — every node shares them, and a 503 would take them all out of a load balancer at
/// once while they still answer; `"database"`, the database cannot be reached (PostgreSQL down),
/// with 503 — ok again by itself once it is back.
async fn healthz(ca: web::Data<Ca>) -> HttpResponse {
    let ca = ca.into_inner();
    let checked = web::block(move || {
        let hsm = crate::context::custody_health().err();
        let database = ca.db().feed().last_change().err().map(|e| e.to_string());
        // The CA-side certificates are read from the database: not asked while it is away.
        let certs = if database.is_none() { ca.own_certificates() } else { Ok(Vec::new()) };
        (hsm, database, certs)
    })
    .await;
    let (hsm, database, certs) = match checked {
        Ok(c) => c,
        Err(_) => {
            return HttpResponse::ServiceUnavailable()
                .content_type("application/json")
                .body(r#"{"status":"degraded"}"#)
        }
    };
    let certificates: Vec<serde_json::Value> = match certs {
        Ok(certs) => certs
            .iter()
            .filter(|c| c.state.needs_attention())
            .map(|c| {
                serde_json::json!({
                    "certificate": c.name,
                    "serial": c.serial.to_string(),
                    "not_after": c.not_after.to_rfc3339(),
                    "days_left": c.days_left,
                    "state": c.state.name(),
                    "reason": crate::commands::attention(c),
                })
            })
            .collect(),
        Err(e) => vec![serde_json::json!({"reason": format!("cannot read the CA-side certificates: {e}")})],
    };
    if hsm.is_none() && database.is_none() && certificates.is_empty() {
        return HttpResponse::Ok().content_type("application/json").body(r#"{"status":"ok"}"#);
    }
    let mut body = serde_json::json!({"status": "degraded"});
    if let Some(h) = &hsm {
        body["hsm"] = serde_json::json!(h);
    }
    if let Some(d) = &database {
        body["database"] = serde_json::json!(d);
    }
    if !certificates.is_empty() {
        body["certificates"] = serde_json::Value::Array(certificates);
    }
    let mut reply = if hsm.is_some() || database.is_some() {
        HttpResponse::ServiceUnavailable()
    } else {
        HttpResponse::Ok()
    };
    if database.is_some() {
        reply.insert_header(("Retry-After", cerdb::directory::UNAVAILABLE_RETRY_AFTER_SECS.to_string()));
    }
    reply.content_type("application/json").body(body.to_string())
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
    cfg.service(get_only("/ca/{name}", ca_cert)).service(get_only("/crl/{name}", crl));
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
    /// The admin web console (`/admin/...`): over HTTPS, or plain HTTP on loopback only.
    Console,
    /// The certificate lookup directory (`/api/v1/certificates...`, `/api/v1/openapi.json`).
    Directory,
    /// The directory over LDAP, on the listeners of `[ldap]` (none configured: not served).
    Ldap,
    /// The ACME server (`/acme/...`): enrolment of mail clients and device agents.
    Acme,
}

impl Service {
    /// Every service.
    pub const ALL: [Service; 7] = [
        Service::Publication,
        Service::Ocsp,
        Service::Tsa,
        Service::Console,
        Service::Directory,
        Service::Ldap,
        Service::Acme,
    ];

    /// Parses `--only` values: a comma-separated list.
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Service>> {
        s.split(',')
            .map(|name| match name.trim() {
                "publication" | "crl" => Ok(Service::Publication),
                "ocsp" => Ok(Service::Ocsp),
                "tsa" => Ok(Service::Tsa),
                "console" | "admin" => Ok(Service::Console),
                "directory" | "cerdb" => Ok(Service::Directory),
                "ldap" => Ok(Service::Ldap),
                "acme" => Ok(Service::Acme),
                other => {
                    anyhow::bail!(
                        "unknown service {other:?} for --only: expected publication, ocsp, tsa, console, directory, ldap or acme"
                    )
                }
            })
            .collect()
    }
}

/// Runs until interrupted.
pub fn run(data: &Path, settings: &Settings, listen: &str, services: &[Service]) -> anyhow::Result<()> {
    if services.contains(&Service::Ldap) && !settings.ldap.enabled() && services.len() < Service::ALL.len() {
        anyhow::bail!("--only ldap: set [ldap] listen or tls_listen in the configuration");
    }
    let checkpoint_dir = settings.audit.checkpoint_dir(data)?;
    let ldap_on = services.contains(&Service::Ldap) && settings.ldap.enabled();
    let tls_wanted = settings.server.tls.listen.is_some() || (ldap_on && settings.ldap.tls_listen.is_some());
    // The configured certificate and key files are read and checked before key custody is opened
    // or a CA made: a wrong file is the one line this command prints.
    let tls_files = match (&settings.server.tls.cert_file, &settings.server.tls.key_file) {
        (Some(cert), Some(key)) if tls_wanted => Some(crate::tls::file_certified_key(cert, key)?),
        _ => None,
    };
    let mail = if services.contains(&Service::Directory) {
        Some(crate::mail::prepare_mail(settings)?)
    } else {
        None
    };
    let group = settings.server.admin_group.as_deref().map(crate::admin_socket::admin_gid).transpose()?;
    let mut listeners = crate::listeners::bind_all(settings, listen, services, ldap_on)?;
    let (ca, outcome) = init_ca(data, settings, "system")?;
    if outcome == InitOutcome::Created {
        print!("{}", init_message(&ca, outcome));
        if services.contains(&Service::Console) {
            print!("{}", crate::users::first_admin(&ca, "system").map_err(|e| anyhow::anyhow!(e))?);
        }
    }
    // Revocations mark the CRL due and the crl-refresh thread below signs it ([crl]
    // publish_interval_secs): set before the admin socket takes requests.
    ca.defer_crls();
    let ca = Arc::new(ca);
    let sock = socket_path(data);
    crate::admin_socket::serve(&sock, data, group, ca.clone())?;
    if let Some(dir) = checkpoint_dir {
        let interval = Duration::from_secs(settings.audit.checkpoint_interval_secs);
        crate::audit_checkpoints::start_periodic(ca.clone(), dir, interval)?;
    }

    // Revocations mark the CRL due; this thread signs it every `[crl] publish_interval_secs`
    // when due (first at once: a CRL left due by an unclean stop), and refreshes CRLs before
    // their nextUpdate every minute.
    let refresher = ca.clone();
    let publish_every = Duration::from_secs(u64::from(ca.config().crl.publish_interval_secs));
    std::thread::Builder::new().name("crl-refresh".into()).spawn(move || {
        let mut last_refresh = Instant::now();
        loop {
            if let Err(e) = refresher.publish_crls() {
                tracing::error!(error = %e, "CRL publication failed");
            }
            if last_refresh.elapsed() >= Duration::from_secs(60) {
                last_refresh = Instant::now();
                if let Err(e) = refresher.refresh_crls() {
                    tracing::error!(error = %e, "CRL refresh failed");
                }
            }
            std::thread::sleep(publish_every);
        }
    })?;

    // The OCSP signer is re-issued before it is due, then checked every minute; the responder
    // takes up each new one within a second (a re-key, `pki ca rekey --ca ocsp`, here or on
    // another node), and so do the keys of a compromise on another node.
    if let Err(e) = ca.renew_ocsp_signer_if_due("system") {
        tracing::error!(error = %e, "OCSP signer renewal failed");
    }
    // So are the certificates of sealed mail's sender identities, [ca.expiry]
    // mail_sender_renew_before_days before they end; the sealer takes the new one up at its next
    // message.
    let renew_senders = |ca: &Ca| {
        if let Err(e) = crate::mail::renew_due_senders(ca, "system") {
            tracing::error!(error = %e, "the sender identities could not be read for renewal");
        }
    };
    renew_senders(&ca);
    let ocsp = Arc::new(crate::context::ocsp_responder(&ca)?);
    let (renewer, responder) = (ca.clone(), ocsp.clone());
    std::thread::Builder::new().name("ocsp-renew".into()).spawn(move || {
        let (mut last_check, mut sync_failing) = (Instant::now(), false);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            // Compromises, re-keys and renewals of other nodes on the same database: one line when
            // it starts failing (a database outage) and one when it works again.
            match renewer.sync_with_storage() {
                Err(e) if !sync_failing => {
                    sync_failing = true;
                    tracing::error!(error = %e, "reading other nodes' compromises and OCSP signer failed");
                }
                Ok(()) if sync_failing => {
                    sync_failing = false;
                    tracing::info!("reading other nodes' compromises and OCSP signer works again");
                }
                _ => {}
            }
            if last_check.elapsed() >= Duration::from_secs(60) {
                last_check = Instant::now();
                if let Err(e) = renewer.renew_ocsp_signer_if_due("system") {
                    tracing::error!(error = %e, "OCSP signer renewal failed");
                }
                renew_senders(&renewer);
            }
            if responder.signer_certificate_der() != renewer.ocsp_signer_der() {
                if let Ok((der, key)) = renewer.ocsp_signer_certified() {
                    if let Err(e) = responder.replace_signer(&der, key) {
                        tracing::error!(error = %e, "the responder cannot take up the new OCSP signer");
                    }
                }
            }
            // A re-keyed TSA, the same way (one authority per process: HTTP and the admin socket).
            let Ok(tsa) = crate::context::tsa(&renewer) else { continue };
            if tsa.certificates().first().map(Vec::as_slice) != Some(&*renewer.ca_cert(ca_core::CaCert::Tsa))
            {
                if let Ok((der, key)) = renewer.tsa_signer_certified() {
                    match tsa.replace_signer(key, der, Vec::new()) {
                        Ok(()) => tracing::info!("the TSA signs with its new key from now on"),
                        Err(e) => tracing::error!(error = %e, "the TSA cannot take up its new certificate"),
                    }
                }
            }
        }
    })?;

    let tsa = web::Data::from(crate::context::tsa(&ca)?);
    let verifier = web::Data::new(crate::context::tsa_verifier(&ca)?);

    let console = if services.contains(&Service::Console) {
        let verifier = crate::context::tsa_verifier(&ca)?;
        let c = admin_web::Console::new(ca.clone(), settings.console.clone(), verifier)?
            .with_resets_dir(crate::context::resets_path(data));
        // The console's validation button mails through [mail.relay], as `pki validate send` does.
        let c = if settings.mail.relay.host.is_some() {
            let relay = settings.mail.relay.clone();
            c.with_validation_mailer(Arc::new(move |addr: &cerdb::EmailAddress, value: &str, hours: u32| {
                crate::enrolment::send_validation_value(&relay, addr, value, hours)
            }))
        } else {
            c
        };
        if !listeners.http.iter().all(on_loopback) && settings.server.tls.listen.is_none() {
            tracing::warn!(
                "the console answers only on loopback addresses over plain HTTP: set [server.tls] listen \
                 (or --tls-listen) to reach it on {listen}"
            );
        }
        Some(web::Data::new(c))
    } else {
        None
    };
    let tls_conf = if tls_wanted { Some(tls_config(&ca, tls_files)?) } else { None };
    if !tls_wanted && settings.server.tls.cert_file.is_some() {
        tracing::warn!(
            "[server.tls] cert_file and key_file are set, but nothing here listens with TLS ([server.tls] \
             listen, --tls-listen or [ldap] tls_listen): they are not used"
        );
    }
    let tls = match (&settings.server.tls.listen, &tls_conf) {
        (Some(addr), Some(conf)) => Some((addr.clone(), conf.clone())),
        _ => None,
    };

    let directory = if services.contains(&Service::Directory) || ldap_on {
        Some(crate::directory::open_directory(&ca)?)
    } else {
        None
    };
    let ldap = match (&directory, ldap_on) {
        (Some(dir), true) => {
            let reader: Arc<dyn cerdb::CertReader> = Arc::new(ca.db().clone());
            Some(ldap_directory::LdapDirectory::new(dir.clone(), reader, &settings.ldap)?)
        }
        _ => None,
    };
    let ldap_tls = tls_conf.map(Arc::new);
    // API keys of the directory buy more timestamps than the anonymous quota.
    let tsa_quota = if services.contains(&Service::Tsa) {
        let keys = match &directory {
            Some(d) => d.clone(),
            None => crate::directory::open_directory(&ca)?,
        };
        let s = &settings.server;
        Some(web::Data::new(crate::guard::TsaQuota::new(keys, s.tsa_anonymous_rate, s.tsa_anonymous_burst)))
    } else {
        None
    };
    let directory = directory.filter(|_| services.contains(&Service::Directory));
    // Sealed mail rides on the directory: its API keys, its certificates.
    let mail = match (&directory, mail) {
        (Some(d), Some(prepared)) => Some(crate::mail::open_mail_service(&ca, prepared, d.clone())?),
        _ => None,
    };
    if services.contains(&Service::Directory) || services.contains(&Service::Ocsp) || ldap_on {
        let db = ca.db().clone();
        std::thread::Builder::new().name("cache-warm".into()).spawn(move || {
            let start = Instant::now();
            match db.warm_cache() {
                Ok(w) => tracing::info!(
                    entries = w.entries,
                    mib = w.bytes >> 20,
                    complete = w.complete,
                    seconds = start.elapsed().as_secs_f64(),
                    "page cache warmed"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "warming the page cache failed; lookups load pages as they go")
                }
            }
        })?;
    }

    let acme = if services.contains(&Service::Acme) {
        let mut service = acme::Acme::new(ca.clone(), settings.acme.clone()).map_err(anyhow::Error::msg)?;
        if settings.mail.relay.host.is_some() {
            let relay: Arc<dyn acme::reply::ChallengeMailer> = Arc::new(settings.mail.relay.clone());
            service = service.with_mailer(relay);
        }
        let service = Arc::new(service);
        if let Some(bound) = listeners.acme_smtp.take() {
            let addr = service.start_smtp(bound).map_err(anyhow::Error::msg)?;
            println!("pki serve: ACME challenge replies on smtp://{addr}");
        }
        Some(web::Data::from(service))
    } else {
        None
    };
    // The answer to a panicking ACME handler carries a nonce of the service's own.
    let acme_nonces = acme.as_ref().map(|a| {
        let a = a.clone();
        web::Data::new(crate::guard::AcmeNonces(Arc::new(move || a.fresh_nonce())))
    });
    let data_ca = web::Data::from(ca.clone());
    let sources = web::Data::new(crate::metrics::Sources {
        ca: ca.clone(),
        ocsp: services.contains(&Service::Ocsp).then(|| ocsp.clone()),
        tsa: services.contains(&Service::Tsa).then(|| tsa.clone().into_inner()),
        directory: directory.clone(),
    });
    let metrics_listen = settings.metrics.listen.clone();
    let crate::listeners::Listeners { http, https, metrics: metrics_listeners, ldap: ldap_bound, .. } =
        listeners;
    let services = services.to_vec();
    let workers = settings.server.worker_count(services.iter().all(|s| *s == Service::Tsa));
    let limits = web::Data::new(crate::guard::Limits {
        body_timeout: Duration::from_secs(settings.server.body_timeout_secs),
    });
    let connections = crate::guard::Connections::new(settings.server.max_connections_per_address);
    let max_connections = crate::limits::fit_open_files(settings.server.max_connections);
    let server_settings = settings.server.clone();
    let (settings_metrics_listen, metrics_sources) = (settings.metrics.listen.clone(), sources.clone());
    let result = actix_web::rt::System::new().block_on(async move {
        // The LDAP listeners: actix-server services on this runtime, with as many workers.
        let ldap = match (ldap, ldap_bound) {
            (Some(state), Some(bound)) => {
                let (server, listening) = ldap_directory::server_on(state, bound, ldap_tls, workers)?;
                for l in listening {
                    println!("pki serve: listening on {}://{}", l.scheme, l.addr);
                }
                let handle = server.handle();
                actix_web::rt::spawn(server);
                Some(handle)
            }
            _ => None,
        };
        let mut server = HttpServer::new(move || {
            // Called on each worker thread as it starts.
            yield_to_durable_writes();
            let mut app = App::new()
                .wrap(actix_web::middleware::from_fn(crate::guard::protect))
                .app_data(limits.clone())
                .app_data(data_ca.clone())
                .service(get_only("/healthz", healthz))
                .default_service(web::to(no_such_endpoint));
            if metrics_listen.is_none() {
                app = app
                    .app_data(sources.clone())
                    .service(get_only("/metrics", crate::metrics::loopback_only));
            }
            if services.contains(&Service::Publication) {
                app = app.configure(publication);
            }
            if services.contains(&Service::Ocsp) {
                app = app.service(ocsp_responder::scope(ocsp.clone()));
            }
            // Before any broader `/api/v1` scope: actix matches scopes in registration order.
            if services.contains(&Service::Tsa) {
                let stamp =
                    tsa::scope(tsa.clone()).wrap(actix_web::middleware::from_fn(crate::guard::tsa_quota));
                app = app.service(stamp).service(tsa::verify_scope(verifier.clone()));
                if let Some(q) = &tsa_quota {
                    app = app.app_data(q.clone());
                }
            }
            if let Some(console) = &console {
                app = app.service(admin_web::scope(console.clone()));
            }
            if let Some(directory) = &directory {
                app = app.configure(cerdb::directory::configure(directory.clone()));
            }
            if let Some(acme) = &acme {
                if let Some(nonces) = &acme_nonces {
                    app = app.app_data(nonces.clone());
                }
                app = app.service(acme::scope(acme.clone()));
            }
            if let Some(mail) = &mail {
                app = app.configure(sealed_mail::configure(mail.clone()));
            }
            app
        })
        .on_connect(move |conn, data| connections.on_connect(conn, data))
        .client_request_timeout(Duration::from_secs(server_settings.request_head_timeout_secs))
        .client_disconnect_timeout(Duration::from_secs(server_settings.disconnect_timeout_secs))
        .keep_alive(Duration::from_secs(server_settings.keep_alive_secs))
        .max_connections(max_connections.div_ceil(workers.max(1)))
        .workers(workers);
        for l in http {
            server = server.listen(l).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        }
        if let Some((addr, config)) = tls {
            for l in https {
                server = server
                    .listen_rustls_0_23(l, config.clone())
                    .map_err(|e| anyhow::anyhow!("cannot listen with HTTPS on {addr}: {e}"))?;
            }
        }
        for (addr, scheme) in server.addrs_with_scheme() {
            println!("pki serve: listening on {scheme}://{addr}");
        }
        let metrics_server = match &settings_metrics_listen {
            Some(addr) => {
                let sources = metrics_sources.clone();
                let mut m = HttpServer::new(move || {
                    // The same guard and JSON 404 as the main listener's (no body deadline: a
                    // scrape sends none).
                    App::new()
                        .wrap(actix_web::middleware::from_fn(crate::guard::protect))
                        .app_data(sources.clone())
                        .service(get_only("/metrics", crate::metrics::scrape))
                        .default_service(web::to(no_such_endpoint))
                })
                .workers(1);
                for l in metrics_listeners {
                    m = m
                        .listen(l)
                        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
                }
                for a in m.addrs() {
                    println!("pki serve: metrics on http://{a}/metrics");
                }
                let m = m.run();
                let handle = m.handle();
                actix_web::rt::spawn(m);
                Some(handle)
            }
            None => None,
        };
        let result = server.run().await.map_err(anyhow::Error::from);
        if let Some(m) = metrics_server {
            m.stop(true).await;
        }
        if let Some(ldap) = ldap {
            ldap.stop(true).await;
        }
        result
    });
    let _ = std::fs::remove_file(&sock);
    result
}

/// How much lower than the rest of `pki serve` its HTTP workers run (nice levels).
const WORKER_NICE_STEP: i32 = 5;

/// Lowers the calling HTTP worker's scheduling priority by [`WORKER_NICE_STEP`] nice levels (at
/// most to 19).
///
/// A request that writes durably (a timestamped sealed message, a token, an issued certificate)
/// waits for threads that do little but wait for the disk: the TSA's and the mail's committers,
/// sled's I/O threads. When the workers kept both cores busy, each of those threads waited for a
/// worker's time slice every time its `fdatasync` returned; with 16 connections sealing
/// timestamped messages, about 15 % of the cores' time went idle while requests waited on them.
/// A step lower, the workers give way to them at once: 6–8 % more messages a second there, 2 %
/// fewer at 64 connections, where nothing waited (BENCHMARKS.md, sealed mail, "HTTP workers a
/// step lower"). The signing threads of a batch issuance still run lower than the workers
/// (`ca-core`'s `yield_to_storing`), and the committers start on the main thread, at its
/// priority. Other processes on the machine gain against the workers too (a local PostgreSQL's
/// backends, which write for them, among them). Best effort: lowering one's own priority needs
/// no permission, and if it fails nothing changes.
fn yield_to_durable_writes() {
    ca_core::lower_own_priority(WORKER_NICE_STEP);
}

/// Whether `l` listens on a loopback address.
fn on_loopback(l: &std::net::TcpListener) -> bool {
    l.local_addr().is_ok_and(|a| a.ip().is_loopback())
}

/// The HTTPS configuration: the certificate and key of `[server.tls]`'s files (read by the
/// caller), or the console certificate issued by the root CA (its key in the key store), checked
/// twice a day for renewal, and taken up within a second when `pki ca rekey --ca tls` replaced it
/// (here or on another node).
fn tls_config(
    ca: &Arc<Ca>,
    files: Option<rustls::sign::CertifiedKey>,
) -> anyhow::Result<rustls::ServerConfig> {
    let resolver = match files {
        Some(certified) => crate::tls::Resolver::new(certified),
        None => {
            let (chain, key) = ca.tls_server_certificate()?;
            let resolver = crate::tls::Resolver::new(crate::tls::hsm_certified_key(chain, key));
            let (ca, r) = (ca.clone(), resolver.clone());
            let mut serving = ca.own_serial_in_use(OwnCert::Tls)?;
            std::thread::Builder::new().name("tls-renew".into()).spawn(move || {
                let mut checked = std::time::Instant::now();
                let mut failing = false;
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let stored = match ca.own_serial_in_use(OwnCert::Tls) {
                        Ok(s) => s,
                        Err(e) => {
                            if !std::mem::replace(&mut failing, true) {
                                tracing::error!(error = %e, "the TLS certificate in use cannot be read");
                            }
                            continue;
                        }
                    };
                    failing = false;
                    if stored == serving && checked.elapsed() < Duration::from_secs(12 * 3600) {
                        continue;
                    }
                    checked = std::time::Instant::now();
                    match ca.tls_server_certificate() {
                        Ok((chain, key)) => {
                            r.replace(crate::tls::hsm_certified_key(chain, key));
                            let now_serving = ca.own_serial_in_use(OwnCert::Tls).ok().flatten();
                            if now_serving != serving {
                                tracing::info!(serial = ?now_serving, "HTTPS is served with a new TLS certificate");
                            }
                            serving = now_serving;
                        }
                        Err(e) => {
                            // Tried again at the next change or in 12 hours, not every second.
                            serving = stored;
                            tracing::error!(error = %e, "TLS server certificate renewal failed");
                        }
                    }
                }
            })?;
            resolver
        }
    };
    crate::tls::server_config(resolver)
}
