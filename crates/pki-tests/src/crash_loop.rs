//! The crash loop (`bench/crash-loop.sh`, and a few rounds in the test suite): `pki serve` on one
//! data directory under mixed load, killed with SIGKILL at a random moment, restarted, and
//! checked for everything its clients were told had happened.
//!
//! Each round runs, for a random 0.5–3 s, client threads that record every acknowledgement:
//!
//! - issuance from a CSR and escrowed issuance (`pki issue` through the admin socket): the serial
//!   printed;
//! - issuance from a CSR in the console (an officer's session, made before the first round and
//!   kept by the server across restarts): the serial of the redirect to the new certificate;
//! - revocation of an acknowledged certificate (`pki revoke`, superseded or affiliationChanged);
//! - timestamps (`POST /tsa`, granted): the token;
//! - OCSP and directory lookups, for load.
//!
//! Then the server is killed, started again, and every acknowledgement is looked for: each
//! certificate in `pki list`, never a serial twice; each revocation in `pki list`, the CRL and an
//! `openssl ocsp` answer; each token accepted by `pki ts verify` (signature, chain and its record);
//! `pki audit verify` passes.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::mixed_load;
use crate::*;

/// What a crash loop found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Rounds run.
    pub rounds: usize,
    /// Acknowledgements received by the clients (certificates, revocations, tokens).
    pub acknowledged: usize,
    /// What was acknowledged and then not found, one line each.
    pub lost: Vec<String>,
}

impl Report {
    /// `rounds N, acknowledged A, lost L`.
    pub fn summary(&self) -> String {
        format!("rounds {}, acknowledged {}, lost {}", self.rounds, self.acknowledged, self.lost.len())
    }
}

/// A small xorshift generator: the loop's randomness, reproducible from its printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; a zero seed is moved off zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// Everything the clients were told, across rounds.
#[derive(Debug, Default)]
struct Ledger {
    /// Serials of acknowledged certificates (all ways of issuance).
    issued: Vec<String>,
    /// How many of them the console acknowledged.
    console: usize,
    /// Serials whose revocation was acknowledged.
    revoked: Vec<String>,
    /// Acknowledged tokens and the file they stamp.
    tokens: Vec<(PathBuf, PathBuf)>,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The world of one loop: the data directory, its CSRs and the files the clients write.
struct World {
    env: Env,
    csrs: Vec<PathBuf>,
    /// The officer's console session.
    officer: Mutex<console_support::Client>,
    password: PathBuf,
    document: PathBuf,
    files: AtomicU64,
}

impl World {
    fn file(&self, ext: &str) -> PathBuf {
        self.env.path(&format!("f{}.{ext}", self.files.fetch_add(1, Ordering::Relaxed)))
    }

    /// One client's loop until `stop`: `step` returns the acknowledgement to record, if any.
    fn client(&self, stop: &AtomicBool, mut step: impl FnMut(u64)) {
        let mut i = 0;
        while !stop.load(Ordering::Acquire) {
            step(i);
            i += 1;
        }
    }
}

/// Runs one round's load against the server on `world.env`; returns when `stop` is set.
fn load(world: &World, ledger: &Mutex<Ledger>, stop: &AtomicBool, seed: u64) {
    let env = &world.env;
    std::thread::scope(|s| {
        // Issuance from CSRs, through the admin socket.
        s.spawn(|| {
            world.client(stop, |i| {
                let csr = &world.csrs[i as usize % world.csrs.len()];
                let email = format!("user{}@bank.example", i % 7);
                if let Ok(serial) = mixed_load::issue_from_csr(env, csr, &email) {
                    ledger.lock().unwrap().issued.push(serial);
                }
            })
        });
        // Issuance from CSRs in the console, with the officer's session.
        s.spawn(|| {
            let mut officer = world.officer.lock().unwrap();
            let mut csrf = None;
            world.client(stop, |i| {
                if csrf.is_none() {
                    csrf = mixed_load::console_csrf(&mut officer).ok();
                }
                let Some(token) = &csrf else {
                    std::thread::sleep(Duration::from_millis(20));
                    return;
                };
                let csr = std::fs::read(&world.csrs[i as usize % world.csrs.len()]).unwrap_or_default();
                let email = format!("console{}@bank.example", i % 7);
                match mixed_load::issue_in_console(&mut officer, token, &csr, &email) {
                    Ok(serial) => {
                        let mut l = ledger.lock().unwrap();
                        l.issued.push(serial);
                        l.console += 1;
                    }
                    Err(_) => csrf = None,
                }
            })
        });
        // Escrowed issuance.
        s.spawn(|| {
            world.client(stop, |i| {
                let email = format!("escrow{}@bank.example", i % 5);
                let p12 = world.file("p12");
                if let Ok(serial) = mixed_load::issue_escrowed(env, &email, &p12, &world.password) {
                    ledger.lock().unwrap().issued.push(serial);
                }
            })
        });
        // Revocations of acknowledged certificates.
        s.spawn(|| {
            let mut rng = Rng::new(seed ^ 0x5eed);
            world.client(stop, |_| {
                let pick = {
                    let l = ledger.lock().unwrap();
                    let open: Vec<&String> = l.issued.iter().filter(|s| !l.revoked.contains(s)).collect();
                    (!open.is_empty()).then(|| open[rng.range(0, open.len() as u64) as usize].clone())
                };
                let Some(serial) = pick else {
                    std::thread::sleep(Duration::from_millis(20));
                    return;
                };
                let reason =
                    if rng.next_u64().is_multiple_of(2) { "superseded" } else { "affiliationChanged" };
                if mixed_load::revoke(env, &serial, reason).is_ok() {
                    ledger.lock().unwrap().revoked.push(serial);
                }
            })
        });
        // Timestamps over HTTP.
        s.spawn(|| {
            world.client(stop, |_| {
                let query = world.file("tsq");
                let made = run(std::process::Command::new(openssl_bin()).args([
                    "ts",
                    "-query",
                    "-data",
                    &p(&world.document),
                    "-sha256",
                    "-cert",
                    "-out",
                    &p(&query),
                ]));
                if !made.status.success() {
                    return;
                }
                let body = std::fs::read(&query).unwrap_or_default();
                if let Ok(reply) = mixed_load::timestamp(env, &body, &[]) {
                    let token = world.file("tsr");
                    std::fs::write(&token, &reply).unwrap();
                    ledger.lock().unwrap().tokens.push((token, world.document.clone()));
                }
            })
        });
        // Lookups, for load.
        s.spawn(|| {
            world.client(stop, |i| {
                let _ = mixed_load::exists(env, &format!("user{}@bank.example", i % 7), &[]);
            })
        });
    });
}

/// How far the ledger was checked one by one (OCSP, `pki ts verify`): the counts of revocations
/// and tokens already looked at. Presence in `pki list` and on the CRL is checked for everything,
/// every round.
#[derive(Debug, Default)]
struct Checked {
    revoked: usize,
    tokens: usize,
}

/// Checks everything acknowledged so far against the restarted server; the losses, one line each.
fn check(world: &World, ledger: &Ledger, checked: &mut Checked, ca: &CaFiles) -> Vec<String> {
    let env = &world.env;
    let mut lost = Vec::new();
    let rows = parse_list(&env.pki(["list"]).stdout);
    let listed: HashSet<&str> = rows.iter().map(|r| r.serial.as_str()).collect();
    if listed.len() != rows.len() {
        lost.push(format!("pki list shows a serial twice ({} rows, {} serials)", rows.len(), listed.len()));
    }
    for serial in &ledger.issued {
        if !listed.contains(serial.as_str()) {
            lost.push(format!("certificate {serial}: acknowledged, not in pki list"));
        }
    }
    let unique: HashSet<&String> = ledger.issued.iter().collect();
    if unique.len() != ledger.issued.len() {
        lost.push(format!(
            "{} acknowledged serials were handed out twice",
            ledger.issued.len() - unique.len()
        ));
    }
    let crl = env.write("crl.pem", env.pki(["crl"]).stdout);
    let on_crl: HashSet<String> = crl_entries_openssl(&crl, "PEM").into_iter().map(|(s, _)| s).collect();
    for serial in &ledger.revoked {
        if !rows.iter().any(|r| &r.serial == serial && r.status == "revoked") {
            lost.push(format!("revocation of {serial}: acknowledged, pki list does not show it revoked"));
        }
        if !on_crl.contains(serial) {
            lost.push(format!("revocation of {serial}: acknowledged, not on the CRL"));
        }
    }
    for serial in &ledger.revoked[checked.revoked..] {
        let show = env.pki(["show", "--serial", serial]).stdout;
        let Some(start) = show.find("-----BEGIN CERTIFICATE-----") else {
            lost.push(format!("revocation of {serial}: pki show has no certificate"));
            continue;
        };
        let cert = env.write("ocsp-leaf.pem", &show[start..]);
        let out = openssl_try([
            "ocsp",
            "-issuer",
            &p(&ca.issuing),
            "-cert",
            &p(&cert),
            "-CAfile",
            &p(&ca.root),
            "-url",
            &format!("{}/ocsp", env.base_url()),
        ]);
        if !out.stdout.contains(": revoked") {
            lost.push(format!("revocation of {serial}: OCSP does not say revoked: {}", out.stdout.trim()));
        }
    }
    checked.revoked = ledger.revoked.len();
    for (token, data) in &ledger.tokens[checked.tokens..] {
        let out = env.pki_try(["ts", "verify", "--token", &p(token), "--data", &p(data)]);
        if !out.status.success() {
            lost.push(format!("timestamp {}: acknowledged, pki ts verify: {}", p(token), out.stderr.trim()));
        }
    }
    checked.tokens = ledger.tokens.len();
    let audit = env.pki_try(["audit", "verify"]);
    if !audit.status.success() {
        lost.push(format!("pki audit verify failed: {}", audit.stderr.trim()));
    }
    lost
}

/// Runs `rounds` rounds on a fresh data directory (the configuration `extra` appended to its
/// `pki.toml`), printing one line per round to `log`.
pub fn run_loop(rounds: usize, seed: u64, extra: &str, log: &mut dyn Write) -> Report {
    let env = Env::with_config(extra);
    env.init();
    let csrs = (0..4)
        .map(|i| {
            let key = gen_key(env.dir(), &format!("k{i}.key"), KeySpec::P256);
            make_csr(&key, &env.path(&format!("k{i}.csr")), &format!("/CN=k{i}"), &[])
        })
        .collect();
    // The server runs from here on; the officer logs in once, before the first round.
    let mut server = env.serve();
    let officer = mixed_load::console_officer(&env, "olivia");
    let world = World {
        password: env.write("p12-password", "crash-loop-password-1\n"),
        officer: Mutex::new(officer),
        document: env.write("document.txt", "a statement to be stamped\n"),
        csrs,
        files: AtomicU64::new(0),
        env,
    };
    let ca = world.env.ca_files();
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut checked = Checked::default();
    let ledger = Mutex::new(Ledger::default());
    let serve = || world.env.serve();
    for round in 1..=rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let run_for = Duration::from_millis(rng.range(500, 3000));
        let started = Instant::now();
        let round_seed = rng.next_u64();
        std::thread::scope(|s| {
            s.spawn(|| load(&world, &ledger, &stop, round_seed));
            std::thread::sleep(run_for);
            // SIGKILL while the clients are still at work, then let them notice.
            server.sigkill();
            stop.store(true, Ordering::Release);
        });
        server = serve();
        let l = ledger.lock().unwrap();
        let lost = check(&world, &l, &mut checked, &ca);
        let acknowledged = l.issued.len() + l.revoked.len() + l.tokens.len();
        let _ = writeln!(
            log,
            "round {round}: killed after {:.1} s of load (round {:.1} s); {} certificates ({} in the console), {} revocations, {} timestamps acknowledged so far; lost {}",
            run_for.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            l.issued.len(),
            l.console,
            l.revoked.len(),
            l.tokens.len(),
            lost.len()
        );
        for line in &lost {
            let _ = writeln!(log, "  lost: {line}");
        }
        report.rounds = round;
        report.acknowledged = acknowledged;
        report.lost.extend(lost);
    }
    server.stop();
    report
}
