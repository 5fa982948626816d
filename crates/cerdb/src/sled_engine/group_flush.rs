//! Group commit of sled flushes: writers that want their writes durable at the same time share one
//! flush instead of queueing one each.
//!
//! A writer takes a ticket after its write. A flush covers every write made before it starts, so
//! it covers every ticket taken before it starts. The first writer that finds no flush running
//! starts one for all tickets taken so far; the others wait until a flush that started after their
//! ticket has ended. Under one writer this is one flush per write, as before; under many (ACME
//! finalizes, issuances from several clients) the writes that arrive during a flush share the
//! next one.

use std::sync::{Condvar, Mutex};

use crate::Error;

/// The state of the flushes of one database.
#[derive(Debug, Default)]
pub(crate) struct GroupFlush {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Tickets taken so far (the last one's number).
    taken: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A flush is running.
    running: bool,
    /// The failure of the last flush, for the writers that waited on it.
    failed: Option<(u64, String)>,
}

impl GroupFlush {
    /// Makes the caller's earlier writes durable: by a flush it runs (`flush`) or one that another
    /// writer started after this call began.
    pub(crate) fn flush(&self, flush: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.taken += 1;
        let ticket = s.taken;
        loop {
            if s.durable >= ticket {
                return Ok(());
            }
            if let Some((upto, why)) = &s.failed {
                if *upto >= ticket {
                    return Err(Error::Db(why.clone()));
                }
            }
            if !s.running {
                s.running = true;
                let target = s.taken;
                drop(s);
                let result = flush();
                s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                s.running = false;
                match &result {
                    Ok(()) => s.durable = s.durable.max(target),
                    Err(e) => s.failed = Some((target, e.to_string())),
                }
                self.done.notify_all();
                return result;
            }
            s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_writers_share_flushes_and_each_sees_its_write_durable() {
        let g = Arc::new(GroupFlush::default());
        // "written" counts writes; "stable" is what the last flush covered.
        let written = Arc::new(AtomicU64::new(0));
        let stable = Arc::new(AtomicU64::new(0));
        let flushes = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (g, written, stable, flushes) =
                    (g.clone(), written.clone(), stable.clone(), flushes.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        g.flush(|| {
                            let upto = written.load(Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            stable.fetch_max(upto, Ordering::SeqCst);
                            flushes.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                        assert!(stable.load(Ordering::SeqCst) >= mine, "write {mine} not durable");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!(n < 1600, "{n} flushes for 1,600 writes: nothing was shared");
    }

    #[test]
    fn a_failed_flush_fails_the_writers_it_was_for() {
        let g = GroupFlush::default();
        let r = g.flush(|| Err(Error::Db("disk full".into())));
        assert!(matches!(r, Err(Error::Db(ref m)) if m == "disk full"), "{r:?}");
        // The next writer flushes again.
        assert!(g.flush(|| Ok(())).is_ok());
    }
}
