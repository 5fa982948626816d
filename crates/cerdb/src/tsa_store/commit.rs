//! Group commit of token records: slots taken in serial order, filled in any order, written to
//! the ledger in slot order by one committer thread, a whole batch per sync.
//!
//! A record's slot is taken together with its serial ([`super::TsaStore::begin_token`]), before
//! the token is signed; it is filled once the token exists ([`TokenSlot::fill`]), or dropped
//! when issuance failed. The committer writes the longest run of settled (filled or dropped)
//! slots at the front — at most `MAX_BATCH` records, after waiting `COMMIT_WINDOW` for the
//! tokens in flight — syncs, marks them durable and wakes their waiters, blocking
//! ([`PendingToken::wait`]) and async ([`PendingToken`] as a future) alike, each by the waker it
//! left with its slot: only the waiters whose records the write covered are woken, not every one
//! asleep. Slots settled while a write is in flight go into the next one. So the ledger is in
//! serial order, and a token costs a fraction of a sync under load.
//!
//! A failed write or sync stops the ledger: its records and every later one fail, and no token
//! is issued until a restart (after a failed `fsync` the kernel may have dropped the data, so
//! nothing written since can be trusted to be on disk). A database that could not be reached
//! ([`Error::Unavailable`]: PostgreSQL down or restarting) is not that: the batch's tokens fail
//! (they are never returned; their serials are not used again) and the next batch is tried,
//! so the TSA serves again by itself once the database is back.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::ledger::{RawRecord, MAX_BATCH};
use super::{CommitStats, TokenRecord, TsaSerial};
use crate::Error;

/// How long the committer waits, before a write, for the tokens being made at that moment, so
/// that one sync covers them too. Only when other tokens are in flight: a lone request never
/// waits. Measured under `wrk -c64` (BENCHMARKS.md): 0 µs 14,900 tokens/s with p99 14 ms,
/// 200 µs 15,400–15,900/s, 1 ms 17,800–18,800/s with p99 7 ms, 2 ms 15,900/s.
const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

/// Writes a batch of encoded records and makes them durable.
pub(super) type WriteFn = Box<dyn Fn(&[u8]) -> Result<(), Error> + Send + Sync>;

enum Slot {
    /// Taken, the token not made yet.
    Open,
    /// The record to write.
    Filled(Box<RawRecord>),
    /// Issuance failed after the serial was taken: nothing to write.
    Dropped,
}

#[derive(Default)]
struct CommitState {
    /// The sequence number of `slots[0]`; every earlier slot went to a write (or was dropped).
    base: u64,
    slots: VecDeque<Slot>,
    /// Every slot before this one is durable (or was dropped).
    durable: u64,
    /// Why the ledger stopped, once a write failed.
    failed: Option<String>,
    stats: CommitStats,
    /// Wakers of the waiters, by slot (a blocking waiter's unparks its thread).
    wakers: Vec<(u64, Waker)>,
    /// The committer thread runs (from the committer's making until it stops).
    running: bool,
    /// The committer is asleep waiting for work.
    idle: bool,
    /// The store is gone: write what is pending and stop.
    shutdown: bool,
    /// Runs of slots whose write failed while the database was unavailable: (first slot, slot
    /// after the last, why). The batches of one outage follow each other and make one run; the
    /// most recent [`LOST_RUNS_KEPT`] runs are kept.
    lost: VecDeque<(u64, u64, String)>,
}

/// How many runs of failed slots [`CommitState::lost`] remembers (a run per outage): their
/// waiters are woken at once, so only the latest can still be asking.
const LOST_RUNS_KEPT: usize = 1024;

impl CommitState {
    /// The outcome for slot `seq`, once there is one.
    fn outcome(&self, seq: u64) -> Option<Result<(), Error>> {
        if let Some((_, _, why)) = self.lost.iter().find(|(from, to, _)| (*from..*to).contains(&seq)) {
            return Some(Err(Error::Unavailable(why.clone())));
        }
        if self.durable > seq {
            Some(Ok(()))
        } else {
            self.failed.as_ref().map(|why| Err(stopped(why)))
        }
    }

    /// Takes the settled slots at the front, at most [`MAX_BATCH`] records: (encoded records,
    /// their number). Moves `base` past them.
    fn take_ready(&mut self) -> (Vec<u8>, u64) {
        let mut buf = Vec::new();
        let mut records = 0;
        while records < MAX_BATCH as u64 {
            match self.slots.front() {
                None | Some(Slot::Open) => break,
                Some(Slot::Filled(rec)) => {
                    buf.extend_from_slice(&rec[..]);
                    records += 1;
                }
                Some(Slot::Dropped) => {}
            }
            self.slots.pop_front();
            self.base += 1;
        }
        (buf, records)
    }

    /// The waiters that have an outcome now, removed.
    fn ready_wakers(&mut self) -> Vec<Waker> {
        let (durable, failed) = (self.durable, self.failed.is_some());
        let mut ready = Vec::new();
        self.wakers.retain(|(seq, waker)| {
            let keep = *seq >= durable && !failed;
            if !keep {
                ready.push(waker.clone());
            }
            keep
        });
        ready
    }
}

fn stopped(why: &str) -> Error {
    Error::Db(format!("the TSA token ledger stopped after a failed write: {why}"))
}

pub(super) struct CommitShared {
    write: WriteFn,
    state: Mutex<CommitState>,
    /// The committer sleeps here.
    work: Condvar,
}

impl CommitShared {
    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_committer(&self, st: &CommitState) {
        if st.idle {
            self.work.notify_one();
        }
    }

    /// Settles slot `seq`.
    fn settle(&self, seq: u64, slot: Slot) {
        let mut st = self.lock();
        let i = seq.checked_sub(st.base).and_then(|i| usize::try_from(i).ok());
        if let Some(s) = i.and_then(|i| st.slots.get_mut(i)) {
            *s = slot;
        }
        if i == Some(0) {
            self.wake_committer(&st);
        }
    }

    /// The committer thread's loop.
    fn run(&self) {
        /// Should the thread die (a panic in the write), the ledger stops and its waiters get an
        /// error instead of waiting forever.
        struct Stopped<'a>(&'a CommitShared);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                if std::thread::panicking() {
                    st.failed = Some("the TSA commit thread panicked".into());
                }
                st.running = false;
                let wakers: Vec<Waker> = st.wakers.drain(..).map(|(_, w)| w).collect();
                drop(st);
                wakers.into_iter().for_each(Waker::wake);
            }
        }
        let _stopped = Stopped(self);
        let mut st = self.lock();
        loop {
            if st.failed.is_some() {
                return;
            }
            if matches!(st.slots.front(), Some(Slot::Filled(_) | Slot::Dropped))
                && st.slots.iter().any(|s| matches!(s, Slot::Open))
            {
                // Other tokens are being made: give them the commit window to join this write.
                drop(st);
                std::thread::sleep(COMMIT_WINDOW);
                st = self.lock();
            }
            let (buf, records) = st.take_ready();
            let target = st.base;
            if target > st.durable {
                if records > 0 {
                    drop(st);
                    let result = (self.write)(&buf);
                    st = self.lock();
                    match result {
                        Ok(()) => {
                            st.stats.records += records;
                            st.stats.flushes += 1;
                        }
                        Err(Error::Unavailable(why)) => {
                            tracing::warn!(error = %why, records, "the database is unavailable: these TSA tokens are not issued");
                            let from = st.durable;
                            match st.lost.back_mut() {
                                Some(run) if run.1 == from => run.1 = target,
                                _ => st.lost.push_back((from, target, why)),
                            }
                            if st.lost.len() > LOST_RUNS_KEPT {
                                st.lost.pop_front();
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "writing TSA token records failed; no more tokens until a restart");
                            st.failed = Some(e.to_string());
                        }
                    }
                }
                if st.failed.is_none() {
                    st.durable = target;
                }
                let ready = st.ready_wakers();
                drop(st);
                ready.into_iter().for_each(Waker::wake);
                st = self.lock();
                continue;
            }
            if st.shutdown && st.slots.is_empty() {
                return;
            }
            st.idle = true;
            st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle = false;
        }
    }
}

/// The committer: its shared state and its thread.
///
/// The thread starts with the committer and is stopped (after writing whatever is pending) and
/// joined when the committer is dropped. It inherits the creating thread's scheduling priority:
/// [`super::TsaStore::open`] makes the committer, so it runs at the priority of the thread that
/// opened the store rather than at that of the first request's (`pki serve` lowers its HTTP
/// workers' priority, so that they give way to threads like this one).
pub(super) struct Committer {
    shared: Arc<CommitShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    pub(super) fn new(write: WriteFn) -> Result<Self, Error> {
        let shared = Arc::new(CommitShared {
            write,
            state: Mutex::new(CommitState { running: true, ..CommitState::default() }),
            work: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("tsa-commit".into())
                .spawn(move || shared.run())
                .map_err(|e| Error::Db(format!("cannot start the TSA commit thread: {e}")))?
        };
        Ok(Committer { shared, thread: Some(thread) })
    }

    /// Takes the next slot, for `serial` (slots are written in the order they are taken).
    pub(super) fn open_slot(&self, serial: TsaSerial) -> Result<TokenSlot, Error> {
        let mut st = self.shared.lock();
        if let Some(why) = &st.failed {
            return Err(stopped(why));
        }
        let seq = st.base + st.slots.len() as u64;
        st.slots.push_back(Slot::Open);
        Ok(TokenSlot { seq, serial, shared: Some(self.shared.clone()) })
    }

    pub(super) fn stats(&self) -> CommitStats {
        self.shared.lock().stats
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.shutdown = true;
        self.shared.wake_committer(&st);
        drop(st);
        if let Some(h) = self.thread.take() {
            if h.join().is_err() {
                tracing::error!("the TSA commit thread panicked");
            }
        }
    }
}

/// The place of one token's record in the ledger, taken with its serial
/// ([`super::TsaStore::begin_token`]).
///
/// [`TokenSlot::fill`] it once the token exists; dropped unfilled (issuance failed), the serial
/// is skipped and later records are not held up.
#[must_use = "a slot holds up every later record until it is filled or dropped"]
pub struct TokenSlot {
    seq: u64,
    serial: TsaSerial,
    shared: Option<Arc<CommitShared>>,
}

impl fmt::Debug for TokenSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSlot").field("serial", &self.serial).finish_non_exhaustive()
    }
}

impl TokenSlot {
    /// The token's serial number.
    pub fn serial(&self) -> TsaSerial {
        self.serial
    }

    /// Hands the token's record to the committer; the token may be returned once the
    /// [`PendingToken`] says it is durable. A record for another serial, or one that does not
    /// fit the ledger's record, is refused (and the slot dropped).
    pub fn fill(mut self, rec: &TokenRecord) -> Result<PendingToken, Error> {
        let shared = self.shared.take().ok_or_else(|| Error::Inconsistent("TSA slot used twice".into()))?;
        let seq = self.seq;
        if rec.serial != self.serial {
            shared.settle(seq, Slot::Dropped);
            return Err(Error::Inconsistent(format!(
                "the record of TSA token {} was given to the slot of {}",
                rec.serial, self.serial
            )));
        }
        match super::ledger::encode(rec) {
            Ok(raw) => {
                shared.settle(seq, Slot::Filled(Box::new(raw)));
                Ok(PendingToken { seq, shared })
            }
            Err(e) => {
                shared.settle(seq, Slot::Dropped);
                Err(e)
            }
        }
    }
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.settle(self.seq, Slot::Dropped);
        }
    }
}

/// A token record handed to the committer but maybe not yet on disk ([`TokenSlot::fill`]).
///
/// Wait for it with [`PendingToken::wait`] (blocking) or `.await` it; only once that returns
/// `Ok` may the token be handed out.
#[must_use = "a token may be returned only once its record is durable"]
pub struct PendingToken {
    seq: u64,
    shared: Arc<CommitShared>,
}

impl fmt::Debug for PendingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingToken").field("slot", &self.seq).finish_non_exhaustive()
    }
}

impl PendingToken {
    /// Blocks until the record is durable (or the ledger stopped): the future polled on this
    /// thread, which sleeps until the committer wakes this slot's waker.
    pub fn wait(mut self) -> Result<(), Error> {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            match Pin::new(&mut self).poll(&mut cx) {
                Poll::Ready(outcome) => return outcome,
                // An unpark that came before the park makes it return at once; a spurious
                // return polls again.
                Poll::Pending => std::thread::park(),
            }
        }
    }
}

/// The waker of a blocking waiter: it unparks the waiting thread.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl Future for PendingToken {
    type Output = Result<(), Error>;

    /// Ready once the record is durable (or the ledger stopped); until then the committer keeps
    /// the waker.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.shared.lock();
        if let Some(outcome) = st.outcome(self.seq) {
            return Poll::Ready(outcome);
        }
        if !st.running {
            return Poll::Ready(Err(stopped("the TSA commit thread is not running")));
        }
        let seq = self.seq;
        match st.wakers.iter_mut().find(|(t, _)| *t == seq) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => st.wakers.push((seq, cx.waker().clone())),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::super::ledger::RECORD_LEN;
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn record(serial: TsaSerial) -> TokenRecord {
        TokenRecord {
            serial,
            gen_time: chrono::Utc::now(),
            hash_algorithm: "2.16.840.1.101.3.4.2.1".into(),
            imprint: vec![7; 32],
            policy: "1.3.6.1.4.1.32473.1".into(),
            token_sha256: [serial.value() as u8; 32],
        }
    }

    fn serial(v: u64) -> TsaSerial {
        TsaSerial::new(v).expect("serial")
    }

    /// A committer whose writes append the serials to a list.
    fn listing() -> (Committer, Arc<Mutex<Vec<u64>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let w2 = written.clone();
        let commit = Committer::new(Box::new(move |buf| {
            let mut w = w2.lock().expect("lock");
            for rec in buf.chunks_exact(RECORD_LEN) {
                let raw: &RawRecord = rec.try_into().expect("record");
                w.push(super::super::ledger::decode(raw).expect("decode").serial.value());
            }
            Ok(())
        }))
        .expect("committer");
        (commit, written)
    }

    #[test]
    fn records_are_written_in_slot_order_whatever_order_they_are_filled_in() {
        let (commit, written) = listing();
        let slots: Vec<TokenSlot> = (1..=5).map(|v| commit.open_slot(serial(v)).expect("slot")).collect();
        let mut slots: Vec<Option<TokenSlot>> = slots.into_iter().map(Some).collect();
        // Fill 5, 3, drop 2, fill 4: nothing can be written while slot 1 is open.
        let p5 = slots[4].take().expect("slot").fill(&record(serial(5))).expect("fill");
        let p3 = slots[2].take().expect("slot").fill(&record(serial(3))).expect("fill");
        drop(slots[1].take());
        let p4 = slots[3].take().expect("slot").fill(&record(serial(4))).expect("fill");
        std::thread::sleep(Duration::from_millis(30));
        assert!(written.lock().expect("lock").is_empty(), "written past an open slot");
        let p1 = slots[0].take().expect("slot").fill(&record(serial(1))).expect("fill");
        for p in [p5, p3, p4, p1] {
            p.wait().expect("durable");
        }
        assert_eq!(*written.lock().expect("lock"), vec![1, 3, 4, 5]);
        assert_eq!(commit.stats().records, 4);
    }

    #[test]
    fn group_commit_shares_writes_and_never_counts_a_write_that_began_before_the_fill() {
        let started = Arc::new(AtomicU64::new(0)); // writes begun
        let completed = Arc::new(AtomicU64::new(0)); // the highest begun-number of a completed write
        let (s2, c2) = (started.clone(), completed.clone());
        let commit = Committer::new(Box::new(move |_| {
            let n = s2.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(Duration::from_millis(20));
            c2.fetch_max(n, Ordering::SeqCst);
            Ok(())
        }))
        .expect("committer");
        let next = AtomicU64::new(1);
        let order = Mutex::new(());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5 {
                        let slot = {
                            let _g = order.lock().expect("lock");
                            commit.open_slot(serial(next.fetch_add(1, Ordering::SeqCst))).expect("slot")
                        };
                        let rec = record(slot.serial());
                        let begun_before = started.load(Ordering::SeqCst);
                        slot.fill(&rec).expect("fill").wait().expect("durable");
                        assert!(
                            completed.load(Ordering::SeqCst) > begun_before,
                            "returned on a write that began before the fill"
                        );
                    }
                });
            }
        });
        let stats = commit.stats();
        assert_eq!(stats.records, 40);
        assert!(stats.flushes < 40, "no write was shared: {stats:?}");
        assert_eq!(stats.flushes, started.load(Ordering::SeqCst));
    }

    #[test]
    fn a_failed_write_fails_its_records_and_every_later_one() {
        let commit = Committer::new(Box::new(|_| Err(Error::Db("disk full".into())))).expect("committer");
        let pending = commit.open_slot(serial(1)).expect("slot").fill(&record(serial(1))).expect("fill");
        let e = pending.wait().expect_err("the write failed");
        assert!(e.to_string().contains("disk full"), "{e}");
        let e = commit.open_slot(serial(2)).expect_err("stopped");
        assert!(e.to_string().contains("stopped after a failed write"), "{e}");
        assert_eq!(commit.stats(), CommitStats::default());
    }

    #[test]
    fn a_dead_commit_thread_fails_its_waiters_instead_of_hanging_them() {
        let commit = Committer::new(Box::new(|_| panic!("write exploded"))).expect("committer");
        let pending = commit.open_slot(serial(1)).expect("slot").fill(&record(serial(1))).expect("fill");
        let e = pending.wait().expect_err("no write");
        assert!(e.to_string().contains("panicked"), "{e}");
        assert!(commit.open_slot(serial(2)).is_err());
    }

    #[test]
    fn a_record_for_another_serial_or_too_long_is_refused_and_holds_nothing_up() {
        let (commit, written) = listing();
        let a = commit.open_slot(serial(1)).expect("slot");
        let b = commit.open_slot(serial(2)).expect("slot");
        let c = commit.open_slot(serial(3)).expect("slot");
        let e = a.fill(&record(serial(9))).expect_err("other serial");
        assert!(e.to_string().contains("given to the slot of 1"), "{e}");
        let long = TokenRecord { policy: "9".repeat(97), ..record(serial(2)) };
        assert!(b.fill(&long).is_err());
        c.fill(&record(serial(3))).expect("fill").wait().expect("durable");
        assert_eq!(*written.lock().expect("lock"), vec![3]);
    }

    #[test]
    fn pending_records_can_be_awaited_and_are_written_before_the_committer_goes() {
        use std::task::Wake;

        struct Flag(std::sync::atomic::AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().expect("lock");
        let g2 = gate.clone();
        let commit = Committer::new(Box::new(move |_| {
            drop(g2.lock().expect("gate"));
            Ok(())
        }))
        .expect("committer");
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut pending = commit.open_slot(serial(1)).expect("slot").fill(&record(serial(1))).expect("fill");
        // The write is held at the gate: not ready, and the waker is kept.
        assert!(Pin::new(&mut pending).poll(&mut cx).is_pending());
        let late = commit.open_slot(serial(2)).expect("slot").fill(&record(serial(2))).expect("fill");
        drop(held);
        while !flag.0.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(matches!(Pin::new(&mut pending).poll(&mut cx), Poll::Ready(Ok(()))));
        // Dropping the committer writes what is pending and stops the thread.
        drop(commit);
        late.wait().expect("written at shutdown");
    }
}
