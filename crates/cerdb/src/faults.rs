//! Fault injection for the scenario suite: an engine opened with a [`Faults`] plan asks it before
//! every write it makes (each insert of a transaction, each flush), and the planned write fails.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

/// Which writes fail: the `n`-th from the plan's creation (1-based) alone, every write from the
/// `n`-th on (a crash: nothing the process does afterwards reaches the disk), or none.
#[derive(Debug)]
pub struct Faults {
    fail_at: u64,
    crash: bool,
    writes: AtomicU64,
}

impl Faults {
    /// A plan that fails the `n`-th write (and only that one).
    pub fn fail_write(n: u64) -> Self {
        Faults { fail_at: n, crash: false, writes: AtomicU64::new(0) }
    }

    /// A plan that fails the `n`-th write and every one after it, as a crash at that write would.
    pub fn crash_at(n: u64) -> Self {
        Faults { fail_at: n, crash: true, writes: AtomicU64::new(0) }
    }

    /// A plan that fails nothing and only counts.
    pub fn count_only() -> Self {
        Faults { fail_at: 0, crash: false, writes: AtomicU64::new(0) }
    }

    /// The writes asked about so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Whether the planned fault has happened.
    pub fn fired(&self) -> bool {
        self.fail_at != 0 && self.writes() >= self.fail_at
    }

    /// Called by an engine before a write: an error for the planned one.
    pub fn write(&self) -> Result<(), Error> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at || (self.crash && self.fail_at != 0 && n > self.fail_at) {
            return Err(Error::Db(format!("injected fault at write {n}")));
        }
        Ok(())
    }
}
