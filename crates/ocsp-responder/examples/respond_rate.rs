//! In-process cost of one OCSP answer, without HTTP: what `bench/ocsp/run.sh` prints beside the
//! wrk numbers, to tell the responder's own work from the HTTP server's and the kernel's.
//!
//! ```text
//! cargo run --release -p ocsp-responder --example respond_rate -- DATA_DIR OUT_DIR [SECONDS]
//! ```
//!
//! `DATA_DIR` and `OUT_DIR` as made by the `bench_data` example (the data directory must not be
//! in use by `pki serve`). On one thread, for `SECONDS` (default 3) each, it measures: the raw
//! signing rate of the OCSP signer key through hsm-sim; answers with a nonce (a signature each);
//! answers from the cache (after one pass over every serial to fill it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_core::{Ca, CaCert, CaConfig, SystemClock};
use cerdb::CertDb;
use hsm_sim::{HsmSim, MasterKeySource};
use ocsp_responder::{OcspConfig, OcspResponder};

mod common;
use common::{cert_id, request};

/// CPU time this thread has run, in seconds (Linux `/proc/thread-self/schedstat`): less
/// disturbed than wall time by other processes on a shared machine.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

/// Runs `f` for about `secs` of wall time; returns (calls, wall seconds, CPU seconds).
fn rate(secs: Duration, mut f: impl FnMut(usize)) -> (usize, f64, f64) {
    let start = Instant::now();
    let cpu = thread_cpu_seconds();
    let mut n = 0;
    while start.elapsed() < secs {
        for _ in 0..64 {
            f(n);
            n += 1;
        }
    }
    (n, start.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(data), Some(out)) = (args.first(), args.get(1)) else {
        return Err("usage: respond_rate DATA_DIR OUT_DIR [SECONDS]".into());
    };
    let secs = Duration::from_secs_f64(args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3.0));
    let data = std::path::Path::new(data);
    let db = CertDb::open(data.join("db"))?;
    let hsm = Arc::new(HsmSim::open(data.join("keys"), &MasterKeySource::KeyFile)?);
    let ca = Ca::open(db, hsm, CaConfig::default(), Arc::new(SystemClock))?;
    let (signer_der, signer) = ca.ocsp_signer_certified()?;
    let responder = OcspResponder::new(
        Arc::new(ca.db().clone()),
        &ca.ca_cert(CaCert::Issuing),
        &signer_der,
        signer.clone(),
        OcspConfig::default(),
        Arc::new(ocsp_responder::SystemClock),
    )?;
    let serials: Vec<Vec<u8>> = std::fs::read_to_string(std::path::Path::new(out).join("serials.txt"))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(hex::decode)
        .collect::<Result<_, _>>()?;
    let ids: Vec<Vec<u8>> = serials.iter().map(|s| cert_id(&ca.ca_cert(CaCert::Issuing), s)).collect();
    let plain: Vec<Vec<u8>> = ids.iter().map(|id| request(id, None)).collect();
    let now = chrono::Utc::now();
    let pick = |i: usize| (i.wrapping_mul(2_654_435_761)) % ids.len();

    println!(
        "| in-process, one thread ({} certificates) | calls | CPU µs per call | calls per CPU second | calls/s (wall) |",
        ids.len()
    );
    println!("|---|---|---|---|---|");
    let row = |what: &str, (n, wall, cpu): (usize, f64, f64)| {
        println!(
            "| {what} | {n} | {:.1} | {:.0} | {:.0} |",
            cpu * 1e6 / n as f64,
            n as f64 / cpu,
            n as f64 / wall
        );
    };

    let msg = vec![0x5a; 200];
    row(
        &format!("raw signature, {} key in hsm-sim (ring)", signer.key_type()),
        rate(secs, |_| {
            signer.sign(&msg).expect("sign");
        }),
    );

    let nonce_reply = responder.respond_detailed(&request(&ids[0], Some(&[1; 16])), now);
    assert!(nonce_reply.freshness.is_none() && nonce_reply.der.len() > 100, "nonce answer");
    row(
        "answer with nonce (sign each)",
        rate(secs, |i| {
            let nonce = (i as u128).to_be_bytes();
            let r = responder.respond_detailed(&request(&ids[pick(i)], Some(&nonce)), now);
            debug_assert!(!r.from_cache);
        }),
    );

    for p in &plain {
        responder.respond_detailed(p, now);
    }
    assert_eq!(responder.cached_responses(), ids.len(), "every serial cached");
    row(
        "answer from the cache",
        rate(secs, |i| {
            let r = responder.respond_detailed(&plain[pick(i)], now);
            debug_assert!(r.from_cache);
        }),
    );
    Ok(())
}
