//! Issuance throughput through the library path `pki issue` uses: CSR check with proof of
//! possession, serial, profile lint, signing in hsm-sim, durable storage with the
//! audit entry (flushed before returning).
//!
//! Run with `bash bench/issuance.sh` (which also runs `openssl speed` for comparison) or
//! `cargo bench -p ca-core --bench issuance`.

use std::sync::Arc;
use std::time::Instant;

use ca_core::{Ca, CaConfig, IssueRequest, SystemClock};
use cerdb::{CertDb, Usage};
use hsm_sim::{HsmSim, KeyType, MasterKeySource};

fn csrs(n: usize) -> Vec<IssueRequest> {
    (0..n)
        .map(|i| {
            let email = format!("user{i}@example.com");
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(rcgen::DnType::CommonName, email.clone());
            let csr = params.serialize_request(&kp).expect("csr").der().to_vec();
            IssueRequest { email: email.parse().expect("email"), usage: Usage::Signing, csr }
        })
        .collect()
}

fn ca_with(issuing: KeyType, dir: &std::path::Path) -> Ca {
    let mut cfg = CaConfig::default();
    cfg.issuing.key_type = issuing;
    let db = CertDb::open(dir.join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(dir.join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    Ca::init(db, hsm, cfg, Arc::new(SystemClock), "bench").expect("init").0
}

/// Callers issuing batches at once in the concurrent run.
const CALLERS: usize = 3;

fn main() {
    let batch: usize = std::env::var("BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    println!("| issuing CA key | mode | certificates | seconds | certificates/s |");
    println!("|---|---|---|---|---|");
    let only = std::env::var("BENCH_ONLY").ok();
    for (kt, total) in [(KeyType::P256, 20_000usize), (KeyType::Rsa2048, 4_000)] {
        if only.as_deref().is_some_and(|o| o != kt.name()) {
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca_with(kt, dir.path());
        let reqs = csrs(total);
        ca.issue_many(&reqs[..50], "bench").expect("warm-up");

        // Batches: one durable transaction (one fsync) per batch, checking and signing on all cores.
        let start = Instant::now();
        let mut n = 0;
        for chunk in reqs[50..].chunks(batch) {
            n += ca.issue_many(chunk, "bench").expect("issue").len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!("| {kt} | batches of {batch}, one caller | {n} | {secs:.2} | {:.0} |", n as f64 / secs);

        // Batches from several callers at once, as a server with concurrent requests or
        // `pki cerdb load-test-data` issue them: one batch's transaction and fsync overlap the
        // others' checking and signing.
        let more = csrs(total - 50);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let issued = std::sync::atomic::AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..CALLERS {
                s.spawn(|| loop {
                    let i = next.fetch_add(batch, std::sync::atomic::Ordering::SeqCst);
                    if i >= more.len() {
                        break;
                    }
                    let chunk = &more[i..(i + batch).min(more.len())];
                    let n = ca.issue_many(chunk, "bench").expect("issue").len();
                    issued.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        let n = issued.into_inner();
        println!(
            "| {kt} | batches of {batch}, {CALLERS} callers | {n} | {secs:.2} | {:.0} |",
            n as f64 / secs
        );

        // One at a time, as `pki issue` does: one fsync per certificate.
        let single: Vec<IssueRequest> = csrs(300);
        let start = Instant::now();
        for r in &single {
            ca.issue(r, "bench").expect("issue");
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "| {kt} | one per call | {} | {secs:.2} | {:.0} |",
            single.len(),
            single.len() as f64 / secs
        );

        ca.db().check_consistency().expect("consistent after the run");
    }
}
