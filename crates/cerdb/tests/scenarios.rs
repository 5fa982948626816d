//! The storage scenario suite on every engine: plain, then with a fault injected at each write.

use cerdb::scenarios::{self, Backend, SledBackend};

/// Every engine the project has.
fn backends() -> Vec<Box<dyn Backend>> {
    vec![Box::new(SledBackend)]
}

#[test]
fn every_scenario_holds_on_every_engine() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = scenarios::run(backend.as_ref(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, scenarios::all().len());
    }
}

#[test]
fn a_fault_at_any_write_leaves_nothing_half_written() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let injected =
            scenarios::run_with_faults(backend.as_ref(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        // Every scenario writes: each contributes faults.
        assert!(injected >= scenarios::all().len() as u64 * 3, "{} faults injected", injected);
        eprintln!("{}: {injected} faults injected, none left anything half-written", backend.name());
    }
}
