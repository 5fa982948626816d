//! A few rounds of the crash loop (`bench/crash-loop.sh` runs many): `pki serve` under mixed load
//! killed with SIGKILL at a random moment and restarted; nothing acknowledged may be lost.
#![allow(clippy::unwrap_used)]

#[test]
fn three_rounds_of_sigkill_under_mixed_load_lose_nothing_acknowledged() {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut log = Vec::new();
    let report = pki_tests::crash_loop::run_loop(3, seed, "", &mut log);
    let log = String::from_utf8_lossy(&log);
    assert!(report.lost.is_empty(), "seed {seed}: {}\n{log}", report.summary());
    assert_eq!(report.rounds, 3);
    assert!(report.acknowledged > 0, "the load was acknowledged at all (seed {seed}):\n{log}");
}
