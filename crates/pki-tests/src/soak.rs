//! The soak (`bench/soak.sh MINUTES`): `pki serve` under mixed traffic held at a fraction (80 %)
//! of the capacity measured first with the same clients, for the given minutes.
//!
//! 1. A fresh data directory (database cache [`CACHE_MIB`]), an API key for the HTTP clients (so
//!    that no quota answers 429), `pki serve`, a few certificates, OCSP requests and timestamp
//!    queries made with OpenSSL.
//! 2. Capacity: every client class ([`Class`]) runs closed-loop, all at once, for the
//!    calibration seconds; each class's rate of successful operations is its capacity in the mix.
//! 3. Soak: the same clients, each paced to `fraction` of its class's capacity (no catching up
//!    when late), for the given minutes. Every minute: per class the operations, errors, p50 and
//!    p99 latency, and the server's resident memory (VmRSS).
//! 4. Verdict: errors (target 0) and the memory over the last half of the run (sampled every
//!    10 s): growth from its first samples to its last of more than 8 MiB and 5 % fails.
//!
//! The operations are those of the crash loop ([`crate::mixed_load`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::mixed_load;
use crate::*;

/// The server's database cache during the soak, MiB.
pub const CACHE_MIB: u64 = 64;

/// One kind of client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `pki issue --csr` through the admin socket.
    Issue,
    /// `pki issue --generate` (escrowed key, PKCS#12).
    Escrow,
    /// `pki revoke` of a certificate issued during the soak.
    Revoke,
    /// `POST /tsa`.
    Tsa,
    /// `POST /ocsp`.
    Ocsp,
    /// `GET /api/v1/certificates/exists`.
    Directory,
}

impl Class {
    const ALL: [Class; 6] =
        [Class::Issue, Class::Escrow, Class::Revoke, Class::Tsa, Class::Ocsp, Class::Directory];

    fn name(self) -> &'static str {
        match self {
            Class::Issue => "issue (socket)",
            Class::Escrow => "issue escrowed",
            Class::Revoke => "revoke",
            Class::Tsa => "tsa",
            Class::Ocsp => "ocsp",
            Class::Directory => "directory",
        }
    }

    /// Client threads of the class.
    fn threads(self) -> usize {
        match self {
            Class::Escrow | Class::Revoke => 1,
            _ => 2,
        }
    }
}

/// Whether `class` runs: all of them, or those named in `SOAK_CLASSES` by the first word of their
/// name (comma-separated: issue, revoke, tsa, ocsp, directory; `ocsp,directory` is a soak without
/// writes).
fn selected(class: Class) -> bool {
    match std::env::var("SOAK_CLASSES") {
        Ok(list) if !list.trim().is_empty() => {
            list.split(',').any(|n| n.trim() == class.name().split(' ').next().unwrap_or_default())
        }
        _ => true,
    }
}

/// What one class did in one period.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// The outcome of a soak.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    /// Failed operations in the soak (not the calibration).
    pub errors: u64,
    /// Operations in the soak.
    pub operations: u64,
    /// Resident memory growth over the last half, MiB.
    pub rss_growth_mib: f64,
    /// Whether that growth is over the limit.
    pub rss_grew: bool,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Everything the clients share.
struct World {
    env: Env,
    csrs: Vec<PathBuf>,
    password: PathBuf,
    queries: Vec<Vec<u8>>,
    ocsp_requests: Vec<Vec<u8>>,
    bearer: String,
    /// Certificates issued during the run, for the revokers.
    to_revoke: Mutex<Vec<String>>,
    files: AtomicU64,
    tallies: Vec<Mutex<Tally>>,
}

impl World {
    /// One operation of `class`; `None` when there was nothing to do (no certificate to revoke).
    fn op(&self, class: Class, i: u64) -> Option<Result<(), String>> {
        let env = &self.env;
        let auth = format!("Bearer {}", self.bearer);
        let headers = [("Authorization", auth.as_str())];
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        Some(match class {
            Class::Issue => {
                let csr = &self.csrs[i as usize % self.csrs.len()];
                mixed_load::issue_from_csr(env, csr, &format!("user{}@bank.example", i % 50)).map(|serial| {
                    self.to_revoke.lock().unwrap().push(serial);
                })
            }
            Class::Escrow => {
                let p12 = env.path(&format!("soak-{}.p12", n % 64));
                mixed_load::issue_escrowed(
                    env,
                    &format!("escrow{}@bank.example", i % 50),
                    &p12,
                    &self.password,
                )
                .map(|_| ())
            }
            Class::Revoke => {
                let serial = self.to_revoke.lock().unwrap().pop()?;
                mixed_load::revoke(env, &serial, "superseded")
            }
            Class::Tsa => {
                mixed_load::timestamp(env, &self.queries[i as usize % self.queries.len()], &headers)
                    .map(|_| ())
            }
            Class::Ocsp => mixed_load::ocsp(env, &self.ocsp_requests[i as usize % self.ocsp_requests.len()]),
            Class::Directory => mixed_load::exists(env, &format!("user{}@bank.example", i % 60), &headers),
        })
    }

    fn record(&self, class: Class, took: Duration, outcome: Result<(), String>) {
        let mut t = self.tallies[class as usize].lock().unwrap();
        match outcome {
            Ok(()) => t.latencies.push(took),
            Err(e) => {
                t.errors += 1;
                t.first_error.get_or_insert(e);
            }
        }
    }

    fn take(&self) -> Vec<Tally> {
        self.tallies.iter().map(|t| std::mem::take(&mut *t.lock().unwrap())).collect()
    }

    /// Runs every class's threads until `stop`; each operation is paced to `interval(class)` (none:
    /// closed loop).
    fn clients(&self, stop: &AtomicBool, interval: &(dyn Fn(Class) -> Option<Duration> + Sync)) {
        std::thread::scope(|s| {
            for class in Class::ALL.into_iter().filter(|c| selected(*c)) {
                for t in 0..class.threads() {
                    s.spawn(move || {
                        let every = interval(class);
                        let mut next = Instant::now();
                        let mut i = t as u64 * 1_000_003;
                        while !stop.load(Ordering::Acquire) {
                            if let Some(every) = every {
                                let now = Instant::now();
                                if next > now {
                                    std::thread::sleep((next - now).min(Duration::from_millis(200)));
                                    continue;
                                }
                                // Late: no burst to catch up.
                                next = next.max(now - every) + every;
                            }
                            let start = Instant::now();
                            match self.op(class, i) {
                                Some(outcome) => self.record(class, start.elapsed(), outcome),
                                None => std::thread::sleep(Duration::from_millis(20)),
                            }
                            i += 1;
                        }
                    });
                }
            }
        });
    }
}

/// Runs the soak for `minutes` at `fraction` of the capacity measured for `calibrate`; writes its
/// report to `log`.
pub fn run_soak(minutes: u64, calibrate: Duration, fraction: f64, log: &mut dyn Write) -> SoakReport {
    // sled's page cache (1 GiB by default) would grow with the database for as long as it is
    // under its cap, and the database grows all the time here (issuance, timestamps, the audit
    // log): capped at 64 MiB, it is full within the warm-up, and growth after that is not the cache.
    let env = Env::with_config(&format!("[database]\ncache_mib = {CACHE_MIB}\n"));
    env.init();
    let bearer =
        env.pki(["apikey", "create", "--name", "soak", "--rate", "1000000", "--burst", "1000000"]).stdout;
    let csrs = (0..4)
        .map(|i| {
            let key = gen_key(env.dir(), &format!("k{i}.key"), KeySpec::P256);
            make_csr(&key, &env.path(&format!("k{i}.csr")), &format!("/CN=k{i}"), &[])
        })
        .collect::<Vec<_>>();
    let document = env.write("document.txt", "a statement to be stamped\n");
    let queries = (0..8)
        .map(|i| {
            let out = env.path(&format!("q{i}.tsq"));
            openssl([
                "ts",
                "-query",
                "-data",
                &document.display().to_string(),
                "-sha256",
                "-cert",
                "-out",
                &out.display().to_string(),
            ]);
            std::fs::read(out).unwrap()
        })
        .collect();
    let server = env.serve();
    let pid = server.pid();
    let ca = env.ca_files();
    let ocsp_requests = (0..8)
        .map(|i| {
            let serial =
                mixed_load::issue_from_csr(&env, &csrs[i % csrs.len()], &format!("ocsp{i}@bank.example"))
                    .unwrap_or_else(|e| panic!("issuing the OCSP subjects: {e}"));
            let show = env.pki(["show", "--serial", &serial]).stdout;
            let start = show.find("-----BEGIN CERTIFICATE-----").expect("pki show prints the certificate");
            let cert = env.write(&format!("ocsp{i}.pem"), &show[start..]);
            let req = env.path(&format!("ocsp{i}.req"));
            openssl([
                "ocsp",
                "-issuer",
                &ca.issuing.display().to_string(),
                "-cert",
                &cert.display().to_string(),
                "-no_nonce",
                "-reqout",
                &req.display().to_string(),
            ]);
            std::fs::read(req).unwrap()
        })
        .collect();
    let world = World {
        password: env.write("p12-password", "soak-password-123\n"),
        env,
        csrs,
        queries,
        ocsp_requests,
        bearer: bearer.trim().to_string(),
        to_revoke: Mutex::new(Vec::new()),
        files: AtomicU64::new(0),
        tallies: Class::ALL.iter().map(|_| Mutex::new(Tally::default())).collect(),
    };

    // 2. Capacity.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| world.clients(&stop, &|_| None));
        std::thread::sleep(calibrate);
        stop.store(true, Ordering::Release);
    });
    let measured = world.take();
    let mut rates = [0.0f64; 6];
    let _ = writeln!(
        log,
        "capacity, closed loop for {} s, all classes at once (successes/s, errors):",
        calibrate.as_secs()
    );
    for class in Class::ALL {
        let t = &measured[class as usize];
        rates[class as usize] = t.latencies.len() as f64 / calibrate.as_secs_f64();
        let _ = writeln!(log, "  {:<15} {:>8.1}/s  errors {}", class.name(), rates[class as usize], t.errors);
    }
    let total: f64 = rates.iter().sum();
    let _ = writeln!(
        log,
        "  all            {total:>8.1}/s; soak at {:.0} %: {:.1}/s",
        fraction * 100.0,
        total * fraction
    );

    // 3. Soak.
    let stop = AtomicBool::new(false);
    let mut report = SoakReport::default();
    let mut rss_samples: Vec<(f64, u64)> = Vec::new();
    let started = Instant::now();
    let interval = |class: Class| {
        let per_thread = rates[class as usize] * fraction / class.threads() as f64;
        Some(if per_thread > 0.0 {
            Duration::from_secs_f64(1.0 / per_thread)
        } else {
            Duration::from_secs(3600)
        })
    };
    std::thread::scope(|s| {
        s.spawn(|| world.clients(&stop, &interval));
        for minute in 1..=minutes {
            for tick in 1..=6 {
                let due = Duration::from_secs((minute - 1) * 60 + tick * 10);
                std::thread::sleep(due.saturating_sub(started.elapsed()));
                rss_samples.push((started.elapsed().as_secs_f64(), rss_kib(pid)));
            }
            let tallies = world.take();
            let rss = rss_samples.last().map_or(0, |s| s.1);
            let _ = writeln!(log, "minute {minute}: server RSS {:.1} MiB", rss as f64 / 1024.0);
            for class in Class::ALL {
                let t = &tallies[class as usize];
                let mut l = t.latencies.clone();
                l.sort();
                report.operations += l.len() as u64 + t.errors;
                report.errors += t.errors;
                let _ = writeln!(
                    log,
                    "  {:<15} {:>6} ok {:>4} errors  p50 {:>8.2} ms  p99 {:>8.2} ms{}",
                    class.name(),
                    l.len(),
                    t.errors,
                    percentile(&l, 0.50),
                    percentile(&l, 0.99),
                    t.first_error.as_ref().map(|e| format!("  first error: {e}")).unwrap_or_default()
                );
            }
        }
        stop.store(true, Ordering::Release);
    });
    server.stop();

    // 4. Verdict on memory: the last half of the samples, first three against last three.
    let half = &rss_samples[rss_samples.len() / 2..];
    let avg = |s: &[(f64, u64)]| s.iter().map(|x| x.1 as f64).sum::<f64>() / s.len().max(1) as f64 / 1024.0;
    let k = half.len().min(3);
    let (from, to) = (avg(&half[..k]), avg(&half[half.len() - k..]));
    report.rss_growth_mib = to - from;
    report.rss_grew = report.rss_growth_mib > 8.0 && report.rss_growth_mib > from * 0.05;
    let _ = writeln!(
        log,
        "soak: {minutes} min, {} operations, {} errors; RSS over the last half {from:.1} -> {to:.1} MiB ({:+.1} MiB): {}",
        report.operations,
        report.errors,
        report.rss_growth_mib,
        if report.rss_grew { "GROWING" } else { "flat" }
    );
    report
}
