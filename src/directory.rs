//! CLI-side glue of the certificate lookup directory (`cerdb::directory`): `pki apikey`,
//! `pki lookup`, `pki cerdb anonymous` and `pki cerdb load-test-data`, and the directory that
//! `pki serve` mounts.
//!
//! Every command is a [`Request`] executed here or inside a running `pki serve` (over the admin
//! socket), so each works whether or not the server holds the database. `pki lookup --server URL`
//! asks a directory over HTTP instead.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use ca_core::{AuditAction, Ca, CaCert, OwnKeyRequest};
use cerdb::directory::{AnonymousPolicy, ApiKeyName, ApiKeyStore, Directory, IssuerCert, SystemClock};
use cerdb::{CaId, CertReader, EmailAddress, Usage};
use clap::Subcommand;

use crate::commands::{Envelope, Outcome, Reply, Request};
use crate::settings::Settings;

/// `pki apikey ...`
#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create a key for a client application; prints the key once (only its SHA-256 is kept).
    Create {
        /// A name for the client (letters, digits, '.', '_', '-'; unique).
        #[arg(long)]
        name: String,
        /// Lookups per second (a bulk lookup costs one per address); default 1000.
        #[arg(long)]
        rate: Option<f64>,
        /// How many lookups may come at once; default: the rate.
        #[arg(long)]
        burst: Option<f64>,
        /// A permission beyond lookups: `mail` (sealed mail, as the senders it is allowed with
        /// `pki mail sender allow`). Repeatable.
        #[arg(long = "permission")]
        permissions: Vec<String>,
    },
    /// List the keys (names, prefixes, quotas, status; never the keys).
    List,
    /// Revoke a key: its next request gets 401.
    Revoke {
        /// The key's name.
        #[arg(long)]
        name: String,
    },
}

/// `pki cerdb ...`
#[derive(Debug, Subcommand)]
pub enum CerdbCommand {
    /// Issue N real certificates for synthetic addresses `load-<i>@loadtest.example` through the
    /// issuance path (batches, parallel signing), with a progress bar; for benchmarks. The keys
    /// are made here, so no CSR is made or checked (no proof of possession is needed).
    LoadTestData {
        /// How many certificates.
        #[arg(long)]
        count: u64,
        /// The first index (to add to an earlier load without reusing addresses).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// encryption or signing.
        #[arg(long, default_value = "encryption")]
        usage: String,
        /// Certificates per batch (one durable transaction each).
        #[arg(long, default_value_t = 5_000)]
        batch: u32,
    },
    /// Show or set the quota of clients without an API key (per IP address), or switch
    /// anonymous access off or on.
    Anonymous {
        /// Lookups per second per IP address.
        #[arg(long)]
        rate: Option<f64>,
        /// How many lookups may come at once.
        #[arg(long)]
        burst: Option<f64>,
        /// Refuse requests without a key (401).
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Serve requests without a key again.
        #[arg(long)]
        enable: bool,
    },
}

/// The requests of `pki apikey`.
pub fn apikey_request(cmd: ApikeyCommand) -> Request {
    match cmd {
        ApikeyCommand::Create { name, rate, burst, permissions } => {
            Request::ApiKeyCreate { name, rate, burst, permissions }
        }
        ApikeyCommand::List => Request::ApiKeyList,
        ApikeyCommand::Revoke { name } => Request::ApiKeyRevoke { name },
    }
}

/// Runs `pki cerdb ...`: `anonymous` becomes a request; `load-test-data` runs its own loop of
/// requests (so it can draw a progress bar) and returns `None`.
pub fn cerdb_command(
    cmd: CerdbCommand,
    data: &Path,
    settings: &Settings,
    actor: &str,
) -> anyhow::Result<Option<Request>> {
    match cmd {
        CerdbCommand::Anonymous { rate, burst, disable, enable } => {
            let enabled = if disable {
                Some(false)
            } else if enable {
                Some(true)
            } else {
                None
            };
            Ok(Some(Request::DirectoryAnonymous { enabled, rate, burst }))
        }
        CerdbCommand::LoadTestData { count, start, usage, batch } => {
            load_test_data(data, settings, actor, count, start, &usage, batch)?;
            Ok(None)
        }
    }
}

/// The directory `pki serve` mounts: the CA's database, its issuing CA for the chains.
pub fn open_directory(ca: &Ca) -> anyhow::Result<Arc<Directory>> {
    let issuers = [
        IssuerCert { ca: CaId::Issuing, der: ca.ca_cert(CaCert::Issuing).to_vec() },
        IssuerCert { ca: CaId::Root, der: ca.ca_cert(CaCert::Root).to_vec() },
    ];
    let start = Instant::now();
    let dir = Directory::open(ca.db().clone(), &issuers, Arc::new(SystemClock))?;
    tracing::info!(seconds = start.elapsed().as_secs_f64(), "certificate directory ready");
    Ok(dir)
}

fn keys(ca: &Ca) -> Result<ApiKeyStore, String> {
    ApiKeyStore::open(ca.db()).map_err(|e| e.to_string())
}

fn name(s: &str) -> Result<ApiKeyName, String> {
    s.parse::<ApiKeyName>().map_err(|e| e.to_string())
}

fn quota(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// `pki apikey create`: the key alone on stdout, the note on stderr.
pub fn apikey_create(
    ca: &Ca,
    n: &str,
    rate: Option<f64>,
    burst: Option<f64>,
    permissions: &[String],
    actor: &str,
) -> Outcome {
    let permissions = permissions
        .iter()
        .map(|p| p.parse::<cerdb::directory::ApiPermission>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let (secret, rec) =
        keys(ca)?.create_with(&name(n)?, rate, burst, &permissions, ca.now()).map_err(|e| e.to_string())?;
    tracing::info!(%actor, key = %rec.name, rate = rec.rate, burst = rec.burst, "directory API key created");
    let mut details = format!("{} rate {} burst {}", rec.name.as_str(), quota(rec.rate), quota(rec.burst));
    for p in &rec.permissions {
        details.push_str(&format!(" permission {}", p.name()));
    }
    ca.audit_event(actor, AuditAction::ApiKeyCreate, true, &details).map_err(|e| e.to_string())?;
    Ok(Reply {
        stdout: format!("{}\n", secret.expose()),
        stderr: format!(
            "created API key {:?}: {} lookups/s, burst {}. It is shown only now; the server keeps only its SHA-256.\n",
            rec.name.as_str(),
            quota(rec.rate),
            quota(rec.burst)
        ),
        files: vec![],
    })
}

/// `pki apikey list`.
pub fn apikey_list(ca: &Ca) -> Outcome {
    let list = keys(ca)?.list().map_err(|e| e.to_string())?;
    let mut s = format!(
        "{:<24} {:<10} {:>10} {:>10} {:<8} {}\n",
        "NAME", "PREFIX", "RATE/S", "BURST", "STATUS", "CREATED"
    );
    for k in list {
        let _ = writeln!(
            s,
            "{:<24} {:<10} {:>10} {:>10} {:<8} {}",
            k.name.as_str(),
            k.prefix,
            quota(k.rate),
            quota(k.burst),
            if k.revoked_at.is_some() { "revoked" } else { "active" },
            k.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
        );
    }
    Ok(Reply { stdout: s, ..Reply::default() })
}

/// `pki apikey revoke`.
pub fn apikey_revoke(ca: &Ca, n: &str, actor: &str) -> Outcome {
    let rec = keys(ca)?.revoke(&name(n)?, ca.now()).map_err(|e| e.to_string())?;
    tracing::info!(%actor, key = %rec.name, "directory API key revoked");
    ca.audit_event(actor, AuditAction::ApiKeyRevoke, true, rec.name.as_str()).map_err(|e| e.to_string())?;
    Ok(Reply { stdout: format!("revoked API key {:?}\n", rec.name.as_str()), ..Reply::default() })
}

/// `pki cerdb anonymous`.
pub fn anonymous(
    ca: &Ca,
    enabled: Option<bool>,
    rate: Option<f64>,
    burst: Option<f64>,
    actor: &str,
) -> Outcome {
    let store = keys(ca)?;
    let mut p: AnonymousPolicy = store.anonymous().map_err(|e| e.to_string())?;
    let changed = enabled.is_some() || rate.is_some() || burst.is_some();
    if let Some(e) = enabled {
        p.enabled = e;
    }
    if let Some(r) = rate {
        p.rate = r;
    }
    if let Some(b) = burst {
        p.burst = b;
    }
    if changed {
        store.set_anonymous(&p).map_err(|e| e.to_string())?;
        tracing::info!(%actor, enabled = p.enabled, rate = p.rate, burst = p.burst, "directory anonymous policy set");
        let details = format!("enabled {} rate {} burst {}", p.enabled, quota(p.rate), quota(p.burst));
        ca.audit_event(actor, AuditAction::DirectoryAnonymous, true, &details).map_err(|e| e.to_string())?;
    }
    let state = if p.enabled { "enabled" } else { "disabled" };
    Ok(Reply {
        stdout: format!(
            "anonymous access: {state}; per IP address: {} lookups/s, burst {}\n",
            quota(p.rate),
            quota(p.burst)
        ),
        ..Reply::default()
    })
}

/// What `pki lookup` shows of a certificate.
struct Found {
    serial: String,
    sha256: String,
    not_before: String,
    not_after: String,
    pem: String,
}

fn render_lookup(email: &str, usage: Usage, found: Option<Found>) -> String {
    match found {
        None => format!("{email}: no valid {usage} certificate\n"),
        Some(f) => format!(
            "{email}: valid {usage} certificate\nserial:     {}\nsha256:     {}\nnot before: {}\nnot after:  {}\n{}",
            f.serial, f.sha256, f.not_before, f.not_after, f.pem
        ),
    }
}

fn parse_usage(usage: &str) -> Result<Usage, String> {
    usage.parse::<Usage>().map_err(|e| e.to_string())
}

/// `pki lookup` against this data directory.
pub fn lookup_local(ca: &Ca, email: &str, usage: &str) -> Outcome {
    let addr: EmailAddress = email.parse().map_err(|e: cerdb::Error| e.to_string())?;
    let usage = parse_usage(usage)?;
    let rec = ca.db().newest_valid(&addr, usage.into(), ca.now()).map_err(|e| e.to_string())?;
    let t = |d: chrono::DateTime<chrono::Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let found = rec.map(|r| Found {
        serial: r.serial.to_string(),
        sha256: r.fingerprint.to_string(),
        not_before: t(r.not_before),
        not_after: t(r.not_after),
        pem: ca_core::to_pem("CERTIFICATE", &r.der),
    });
    Ok(Reply { stdout: render_lookup(addr.as_str(), usage, found), ..Reply::default() })
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `pki lookup --server URL`: the same answer, from a directory over HTTP.
pub fn lookup_remote(
    server: &str,
    email: &str,
    usage: &str,
    api_key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let addr: EmailAddress = email.parse()?;
    let usage = parse_usage(usage).map_err(|e| anyhow::anyhow!(e))?;
    let url = format!(
        "{}/api/v1/certificates?email={}&usage={}",
        server.trim_end_matches('/'),
        query_escape(addr.as_str()),
        usage
    );
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut req = agent.get(&url).header("Accept", "application/json");
    if let Some(k) = api_key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let mut resp = req.call().map_err(|e| anyhow::anyhow!("cannot reach the directory at {server}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .map_err(|e| anyhow::anyhow!("reading the answer of {server}: {e}"))?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| anyhow::anyhow!("{server} answered HTTP {status} with something that is not JSON"))?;
    let text = |k: &str| json[k].as_str().unwrap_or_default().to_string();
    let found = match status {
        200 => Some(Found {
            serial: text("serial"),
            sha256: text("sha256"),
            not_before: text("not_before"),
            not_after: text("not_after"),
            pem: text("pem"),
        }),
        404 => None,
        _ => anyhow::bail!(
            "{server} answered HTTP {status}: {}",
            json["error"].as_str().unwrap_or("(no message)")
        ),
    };
    // What a remote server sent is untrusted: its control characters are shown escaped.
    print!("{}", crate::cli::escape_controls(&render_lookup(addr.as_str(), usage, found)));
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The synthetic address of load-test certificate `i`.
pub fn load_test_address(i: u64) -> String {
    format!("load-{i}@loadtest.example")
}

/// How many P-256 keys the synthetic subscribers share: generating a fresh key for every one of
/// a million certificates would cost the benchmark more than the issuance it measures.
const KEY_POOL: usize = 256;

/// The public keys (SubjectPublicKeyInfo DER) of [`KEY_POOL`] fresh P-256 key pairs, whose
/// private keys are dropped: the certificates are for the directory to serve, never used.
fn key_pool() -> anyhow::Result<Vec<Vec<u8>>> {
    (0..KEY_POOL)
        .map(|_| {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            Ok(rcgen::PublicKeyData::subject_public_key_info(&kp))
        })
        .collect()
}

/// (address, public key) for each address `first..first + n`.
fn make_batch(keys: &[Vec<u8>], first: u64, n: u64) -> Vec<(String, Vec<u8>)> {
    (first..first + n)
        .map(|i| (load_test_address(i), keys[(i % keys.len() as u64) as usize].clone()))
        .collect()
}

/// Executes one batch of `pki cerdb load-test-data`: [`Ca::issue_many_own_keys`], one call.
pub fn load_batch(ca: &Ca, usage: &str, keys: &[(String, Vec<u8>)], actor: &str) -> Outcome {
    let usage = parse_usage(usage)?;
    let reqs = keys
        .iter()
        .map(|(email, spki)| {
            Ok(OwnKeyRequest {
                email: email.parse().map_err(|e: cerdb::Error| e.to_string())?,
                usage,
                spki: spki.clone(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let issued = ca.issue_many_own_keys(&reqs, actor).map_err(|e| e.to_string())?;
    Ok(Reply { stdout: format!("{}\n", issued.len()), ..Reply::default() })
}

fn dir_size(path: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(path) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

struct Progress {
    total: u64,
    start: Instant,
    tty: bool,
    last_decile: u64,
}

impl Progress {
    fn show(&mut self, done: u64) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        let frac = if self.total == 0 { 1.0 } else { done as f64 / self.total as f64 };
        let eta = if rate > 0.0 { (self.total - done) as f64 / rate } else { 0.0 };
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let line = format!(
            "[{}{}] {:>5.1}% {done}/{} {:.0} certs/s, ETA {}:{:02}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            frac * 100.0,
            self.total,
            rate,
            (eta as u64) / 60,
            (eta as u64) % 60
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}");
            if done >= self.total {
                let _ = writeln!(err);
            }
        } else {
            let decile = (frac * 10.0) as u64;
            if decile > self.last_decile || done >= self.total {
                self.last_decile = decile;
                let _ = writeln!(err, "{line}");
            }
        }
        let _ = err.flush();
    }
}

/// Batches issued at once by `pki cerdb load-test-data`.
const IN_FLIGHT: usize = 3;

/// `pki cerdb load-test-data`. Batches are made here, ahead of the CA; [`IN_FLIGHT`] batches are
/// issued at once (by this process, or by the running server over as many admin connections), so
/// that the signing of the others overlaps one batch's durable store, which runs on one core.
fn load_test_data(
    data: &Path,
    settings: &Settings,
    actor: &str,
    count: u64,
    start: u64,
    usage: &str,
    batch: u32,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    parse_usage(usage).map_err(|e| anyhow::anyhow!(e))?;
    anyhow::ensure!(batch >= 1, "--batch must be at least 1");
    let batch = u64::from(batch);
    let mut progress = Progress {
        total: count,
        start: Instant::now(),
        tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        last_decile: 0,
    };
    progress.show(0);
    let keys = key_pool()?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(String, Vec<u8>)>>(IN_FLIGHT);
    let envelope = |keys| Envelope {
        actor: actor.to_string(),
        request: Request::LoadTestBatch { usage: usage.to_string(), keys },
    };
    let socket = crate::context::socket_path(data);
    let done = AtomicU64::new(0);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let stop = AtomicBool::new(false);

    let producer = std::thread::Builder::new().name("batch-gen".into()).spawn(move || {
        let mut i = 0;
        while i < count {
            let n = batch.min(count - i);
            if tx.send(make_batch(&keys, start + i, n)).is_err() {
                return;
            }
            i += n;
        }
    })?;
    // The first batch decides where the CA is: the running server, or this process.
    let mut local: Option<Ca> = None;
    if let Ok(first) = rx.recv() {
        let n = first.len() as u64;
        let env = envelope(first);
        let served = crate::cli::served_or(data, &env, || {
            if !crate::context::database_may_exist(data, settings) {
                anyhow::bail!("no CA in {}: run `pki init` (or `pki serve`) first", data.display());
            }
            crate::context::open_ca(data, settings)
        })?;
        let outcome = match served {
            crate::cli::Served::Remote(o) => o,
            crate::cli::Served::Local(ca) => {
                let o = crate::commands::execute(&ca, &env);
                local = Some(ca);
                o
            }
        };
        outcome.map_err(|e| anyhow::anyhow!(e))?;
        done.fetch_add(n, Ordering::SeqCst);
    }
    let rx = Mutex::new(rx);
    let running = AtomicUsize::new(IN_FLIGHT);
    std::thread::scope(|s| {
        for _ in 0..IN_FLIGHT {
            s.spawn(|| {
                let run = || -> anyhow::Result<()> {
                    while !stop.load(Ordering::SeqCst) {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(keys) = next else { break };
                        let n = keys.len() as u64;
                        let env = envelope(keys);
                        let outcome = match &local {
                            Some(ca) => crate::commands::execute(ca, &env),
                            None => crate::admin_socket::call(&socket, &env)?
                                .ok_or_else(|| anyhow::anyhow!("the server stopped during the load"))?,
                        };
                        outcome.map_err(|e| anyhow::anyhow!(e))?;
                        done.fetch_add(n, Ordering::SeqCst);
                    }
                    Ok(())
                };
                if let Err(e) = run() {
                    stop.store(true, Ordering::SeqCst);
                    failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                }
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        while running.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            progress.show(done.load(Ordering::SeqCst).min(count.saturating_sub(1)));
        }
    });
    drop(rx);
    let _ = producer.join();
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let done = done.into_inner();
    progress.show(done);
    let secs = progress.start.elapsed().as_secs_f64();
    let size = dir_size(&crate::context::db_path(data));
    println!(
        "issued {done} {usage} certificates in {secs:.1} s ({:.0} certificates/s); database: {:.1} MiB",
        done as f64 / secs.max(1e-9),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
