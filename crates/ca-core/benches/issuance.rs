//! Issuance throughput through the library path `pki issue` uses: CSR check with proof of
//! possession, serial, profile lint, signing in hsm-sim, durable storage with the
//! audit entry (flushed before returning). Beside it, for each issuing key and for CSRs with
//! P-256 and RSA-2048 keys, the rate of the signature work alone (proof of possession and the
//! certificate's signature, on every core, nothing else): the ceiling issuance cannot pass. Every
//! row gives the CPU time per certificate and how many cores were busy.
//!
//! Run with `bash bench/issuance.sh` (which also runs `openssl speed` for comparison) or
//! `cargo bench -p ca-core --bench issuance`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ca_core::{Ca, CaConfig, IssueRequest, SystemClock};
use cerdb::{CertDb, Usage};
use hsm_sim::{HsmSim, KeyCustody, KeyType, MasterKeySource, Signer};
use x509_parser::prelude::{FromDer, X509CertificationRequest};

/// The subscribers' key type: the CSR's signature (proof of possession) is verified with it.
#[derive(Clone, Copy)]
enum Subscriber {
    P256,
    Rsa2048,
}

impl Subscriber {
    fn name(self) -> &'static str {
        match self {
            Subscriber::P256 => "P-256",
            Subscriber::Rsa2048 => "RSA-2048",
        }
    }
}

/// RSA-2048 subscriber keys the CSRs are made with, round-robin: RSA key generation takes tens
/// of milliseconds, and a key signing several CSRs (for different addresses) makes no step of
/// issuance cheaper — each CSR's signature is verified on its own.
const RSA_KEYS: usize = 16;

/// `n` CSRs for distinct addresses (`tag` keeps the addresses of different runs apart), made on
/// every core.
fn csrs(n: usize, subscriber: Subscriber, tag: &str) -> Vec<IssueRequest> {
    let rsa: Vec<Vec<u8>> = match subscriber {
        Subscriber::P256 => Vec::new(),
        Subscriber::Rsa2048 => (0..RSA_KEYS)
            .map(|_| {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key");
                key.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec()
            })
            .collect(),
    };
    let make = |i: usize| {
        let email = format!("{tag}{i}@example.com");
        let kp = match subscriber {
            Subscriber::P256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key"),
            Subscriber::Rsa2048 => {
                rcgen::KeyPair::try_from(rsa[i % RSA_KEYS].as_slice()).expect("RSA key pair")
            }
        };
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, email.clone());
        let csr = params.serialize_request(&kp).expect("csr").der().to_vec();
        IssueRequest { email: email.parse().expect("email"), usage: Usage::Signing, csr }
    };
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1);
    let per = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..n)
            .step_by(per)
            .map(|from| {
                let make = &make;
                s.spawn(move || (from..(from + per).min(n)).map(make).collect::<Vec<_>>())
            })
            .collect();
        parts.into_iter().flat_map(|h| h.join().expect("CSR thread")).collect()
    })
}

/// Issues `reqs` in batches of `batch` from [`CALLERS`] threads at once, as a server with
/// concurrent requests or `pki cerdb load-test-data` does: one batch's transaction and fsync
/// overlap the others' checking and signing. Returns (certificates, seconds).
fn concurrent(ca: &Ca, reqs: &[IssueRequest], batch: usize) -> (usize, f64) {
    let next = AtomicUsize::new(0);
    let issued = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CALLERS {
            s.spawn(|| loop {
                let i = next.fetch_add(batch, Ordering::SeqCst);
                if i >= reqs.len() {
                    break;
                }
                let chunk = &reqs[i..(i + batch).min(reqs.len())];
                let n = ca.issue_many(chunk, "bench").expect("issue").len();
                issued.fetch_add(n, Ordering::SeqCst);
            });
        }
    });
    (issued.into_inner(), start.elapsed().as_secs_f64())
}

/// The two signature operations no issuance can skip, alone, on every core: verifying each CSR's
/// signature (the proof of possession, with x509-parser and ring as `check_csr` does) and one
/// signature by the issuing CA's key in hsm-sim over a certificate-sized message. The rate
/// issuance would reach if building, linting and storing a certificate cost nothing.
fn signature_work(signer: &dyn Signer, reqs: &[IssueRequest]) -> (usize, f64) {
    let tbs = vec![0x5a_u8; 700];
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1);
    let start = Instant::now();
    std::thread::scope(|s| {
        for part in reqs.chunks(reqs.len().div_ceil(threads).max(1)) {
            let tbs = &tbs;
            s.spawn(move || {
                for r in part {
                    let (_, csr) = X509CertificationRequest::from_der(&r.csr).expect("CSR");
                    csr.verify_signature().expect("proof of possession");
                    signer.sign(tbs).expect("signature");
                }
            });
        }
    });
    (reqs.len(), start.elapsed().as_secs_f64())
}

fn ca_with(issuing: KeyType, dir: &std::path::Path) -> (Ca, Arc<dyn Signer>) {
    let mut cfg = CaConfig::default();
    cfg.issuing.key_type = issuing;
    let db = CertDb::open(dir.join("db")).expect("db");
    let hsm = Arc::new(HsmSim::open(dir.join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
    let ca = Ca::init(db, hsm.clone(), cfg, Arc::new(SystemClock), "bench").expect("init").0;
    let signer = hsm.signer(&"ca/issuing".parse().expect("handle")).expect("issuing key");
    (ca, signer)
}

/// Callers issuing batches at once in the concurrent runs.
const CALLERS: usize = 3;

/// CPU seconds this process has used so far, all threads (user + system, from `/proc/self/stat`,
/// in clock ticks of 10 ms); 0 where there is no procfs.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (in parentheses, which may hold spaces), from the state
    // on: utime and stime are the 12th and 13th of them.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Runs `f` (which returns certificates and seconds) and prints its row, with the CPU time per
/// certificate: how much work one costs, whatever the cores did meanwhile.
fn row(kt: KeyType, subscriber: Subscriber, mode: &str, f: impl FnOnce() -> (usize, f64)) {
    let cpu = cpu_seconds();
    let (n, secs) = f();
    let cpu = cpu_seconds() - cpu;
    println!(
        "| {kt} | {} | {mode} | {n} | {secs:.2} | {:.0} | {:.0} | {:.2} |",
        subscriber.name(),
        n as f64 / secs,
        cpu * 1e6 / n as f64,
        cpu / secs
    );
}

fn main() {
    let batch: usize = std::env::var("BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    println!("| issuing CA key | CSR key | mode | certificates | seconds | certificates/s | CPU µs per certificate | cores busy |");
    println!("|---|---|---|---|---|---|---|---|");
    let only = std::env::var("BENCH_ONLY").ok();
    for (kt, total) in [(KeyType::P256, 20_000usize), (KeyType::Rsa2048, 4_000)] {
        if only.as_deref().is_some_and(|o| o != kt.name()) {
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, signer) = ca_with(kt, dir.path());
        let p256 = Subscriber::P256;
        let reqs = csrs(total, p256, "a");
        ca.issue_many(&reqs[..50], "bench").expect("warm-up");

        // Batches: one durable transaction (one fsync) per batch, checking and signing on all cores.
        row(kt, p256, &format!("batches of {batch}, one caller"), || {
            let start = Instant::now();
            let mut n = 0;
            for chunk in reqs[50..].chunks(batch) {
                n += ca.issue_many(chunk, "bench").expect("issue").len();
            }
            (n, start.elapsed().as_secs_f64())
        });

        let more = csrs(total - 50, p256, "b");
        row(kt, p256, &format!("batches of {batch}, {CALLERS} callers"), || concurrent(&ca, &more, batch));

        // One at a time, as `pki issue` does: one fsync per certificate.
        let single = csrs(300, p256, "c");
        row(kt, p256, "one per call", || {
            let start = Instant::now();
            for r in &single {
                ca.issue(r, "bench").expect("issue");
            }
            (single.len(), start.elapsed().as_secs_f64())
        });
        row(kt, p256, "signature work alone", || signature_work(signer.as_ref(), &more));

        // Subscribers with RSA-2048 keys, whose proof of possession is a cheap RSA verification.
        let rsa = Subscriber::Rsa2048;
        let rsa_reqs = csrs(total - 50, rsa, "d");
        row(kt, rsa, &format!("batches of {batch}, {CALLERS} callers"), || concurrent(&ca, &rsa_reqs, batch));
        row(kt, rsa, "signature work alone", || signature_work(signer.as_ref(), &rsa_reqs));

        ca.db().check_consistency().expect("consistent after the run");
    }
}
