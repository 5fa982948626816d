//! In-process cost of a timestamp token, without HTTP: what `bench/tsa/run.sh` prints beside the
//! wrk numbers, to tell the TSA's own work from the HTTP server's and the kernel's.
//!
//! ```text
//! cargo run --release -p tsa --example issue_rate -- [SECONDS] [THREADS]
//! ```
//!
//! Makes a throw-away TSA (P-256 key in hsm-sim, certificate from a test root) in a temporary
//! directory on the same file system as `$TMPDIR`, then for `SECONDS` (default 3) each measures:
//! the raw signing rate of the TSA key; tokens on one thread (each waits for its own flush);
//! tokens on `THREADS` threads (default 16), whose flushes the store groups.
#![allow(clippy::unwrap_used)] // a benchmark program: a failed unwrap aborts the measurement, which is what we want

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use hsm_sim::KeyType;
use tsa::{TsaConfig, TsaStore};

/// CPU time of this process so far, in seconds (Linux `/proc/self/stat` utime + stime).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // After the command name: field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs = Duration::from_secs_f64(args.first().map(|s| s.parse().unwrap()).unwrap_or(3.0));
    let threads: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(16);
    let dir = tempfile::tempdir().unwrap();
    let fx = common::Fixture::create(dir.path(), KeyType::P256, false);
    let db = cerdb::CertDb::open(dir.path().join("db")).unwrap();
    let store = TsaStore::open(&db).unwrap();
    let tsa = tsa::TimestampAuthority::new(
        fx.signer.clone(),
        fx.tsa_der.clone(),
        Vec::new(),
        store.clone(),
        TsaConfig::default(),
    )
    .unwrap();
    // As `openssl ts -query -sha256 -cert` sends it: SHA-256, a nonce, certReq.
    let digest: [u8; 32] = common::sha256(b"benchmark document").try_into().unwrap();
    let query = tsa::sha256_query(&digest, &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]).unwrap();

    println!("| in-process ({threads} threads where stated) | tokens | CPU µs per token | tokens/s (wall) | flushes |");
    println!("|---|---|---|---|---|");
    let row = |what: &str, n: u64, wall: f64, cpu: f64, flushes: Option<u64>| {
        let f = flushes.map_or("-".to_string(), |f| f.to_string());
        println!("| {what} | {n} | {:.1} | {:.0} | {f} |", cpu * 1e6 / n as f64, n as f64 / wall);
    };

    let (start, cpu) = (Instant::now(), process_cpu_seconds());
    let mut n = 0u64;
    let msg = vec![0x5a; 200];
    while start.elapsed() < secs {
        fx.signer.sign(&msg).unwrap();
        n += 1;
    }
    row(
        &format!("raw signature, {} key in hsm-sim (ring)", fx.signer.key_type()),
        n,
        start.elapsed().as_secs_f64(),
        process_cpu_seconds() - cpu,
        None,
    );

    let before = store.commit_stats();
    let (start, cpu) = (Instant::now(), process_cpu_seconds());
    let mut n = 0u64;
    while start.elapsed() < secs {
        assert!(tsa.respond(&query).len() > 500, "granted");
        n += 1;
    }
    let flushes = store.commit_stats().flushes - before.flushes;
    row("token, one thread", n, start.elapsed().as_secs_f64(), process_cpu_seconds() - cpu, Some(flushes));

    let before = store.commit_stats();
    let (start, cpu) = (Instant::now(), process_cpu_seconds());
    let n: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < secs {
                        assert!(tsa.respond(&query).len() > 500, "granted");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let flushes = store.commit_stats().flushes - before.flushes;
    row(
        &format!("token, {threads} threads"),
        n,
        start.elapsed().as_secs_f64(),
        process_cpu_seconds() - cpu,
        Some(flushes),
    );
    store.check_consistency().unwrap();
}
