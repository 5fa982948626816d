//! Durable storage of the RFC 3161 timestamp authority: its serial numbers and the record of every
//! token it issued.
//!
//! The `tsa` crate never touches sled; it holds a [`TsaStore`] opened on the data directory's one
//! database ([`crate::CertDb::sled_db`]), and auditors' verification reads the record through the
//! read-only [`TokenLedger`] view.
//!
//! Trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `tsa_meta` | `serial_high_water` | u64 big-endian: every serial up to it has been handed out or reserved |
//! | `tsa_tokens` | serial (u64 big-endian, so iteration is in serial order) | JSON [`TokenRecord`] |
//!
//! **Serials are never reused.** [`TsaStore::reserve_serials`] moves the high-water mark up by a
//! whole block and flushes before it returns the block, so the TSA can hand serials out of memory;
//! after a crash or `SIGKILL` the unused rest of a block is skipped, never handed out again.
//!
//! **Group commit.** A token may be returned only once a flush that began after its record was
//! written has completed ([`TsaStore::record_token`], or [`TsaStore::write_token`] and then
//! waiting on — or awaiting — the [`PendingToken`]). Concurrent records share flushes: one
//! committer thread flushes, and the records written while a flush is in flight are all covered
//! by the next one. Under load a token costs a fraction of a flush instead of a whole one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::{Db, Tree};

use crate::Error;

const HIGH_WATER_KEY: &[u8] = b"serial_high_water";

/// The serial number of a timestamp token (TSTInfo `serialNumber`): a positive integer, unique
/// per TSA and strictly increasing in issuance order.
///
/// Displayed in decimal; parsed from decimal or from hex with a `0x` prefix (as `openssl ts
/// -reply -text` prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct TsaSerial(u64);

impl TsaSerial {
    /// From its value; zero is refused (RFC 3161 serials are positive, and 0 is our "none yet").
    pub fn new(value: u64) -> Result<Self, Error> {
        if value == 0 {
            return Err(Error::InvalidSerial("TSA serial number zero is not allowed".into()));
        }
        Ok(TsaSerial(value))
    }

    /// The value.
    pub fn value(self) -> u64 {
        self.0
    }

    /// The sled key: big-endian, so that keys sort like the serials.
    fn key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl TryFrom<u64> for TsaSerial {
    type Error = Error;
    fn try_from(v: u64) -> Result<Self, Error> {
        TsaSerial::new(v)
    }
}

impl From<TsaSerial> for u64 {
    fn from(s: TsaSerial) -> u64 {
        s.0
    }
}

impl fmt::Display for TsaSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TsaSerial {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim();
        let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => t.parse::<u64>(),
        };
        let v = parsed.map_err(|e| Error::InvalidSerial(format!("TSA serial {s:?}: {e}")))?;
        TsaSerial::new(v)
    }
}

/// A block of serials reserved durably by [`TsaStore::reserve_serials`], handed out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialBlock {
    next: u64,
    last: u64,
}

impl SerialBlock {
    /// The next serial of the block, or `None` when the block is used up.
    pub fn next_serial(&mut self) -> Option<TsaSerial> {
        if self.next == 0 || self.next > self.last {
            return None;
        }
        let s = TsaSerial(self.next);
        // Cannot overflow: `next <= last <= u64::MAX`; at `u64::MAX` the block ends by `next = 0`.
        self.next = self.next.checked_add(1).unwrap_or(0);
        Some(s)
    }

    /// How many serials are left.
    pub fn remaining(&self) -> u64 {
        if self.next == 0 || self.next > self.last {
            0
        } else {
            self.last - self.next + 1
        }
    }
}

/// What is kept of every issued token, so that an auditor can check that a token was issued here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's serial number.
    pub serial: TsaSerial,
    /// The token's genTime.
    pub gen_time: DateTime<Utc>,
    /// The message imprint's hash algorithm, as a dotted OID.
    pub hash_algorithm: String,
    /// The message imprint's hashed message.
    #[serde(with = "hex_bytes")]
    pub imprint: Vec<u8>,
    /// The TSA policy of the token, as a dotted OID.
    pub policy: String,
    /// SHA-256 of the token's DER (the CMS ContentInfo, not the TimeStampResp around it).
    #[serde(with = "hex_array")]
    pub token_sha256: [u8; 32],
}

/// The read-only view of the token record, for auditors' verification.
pub trait TokenLedger: Send + Sync {
    /// The record of the token with this serial.
    fn token(&self, serial: TsaSerial) -> Result<Option<TokenRecord>, Error>;
}

/// The TSA's trees in the data directory's database.
///
/// Clones share one committer, so the records of every clone are flushed together.
#[derive(Clone)]
pub struct TsaStore {
    meta: Tree,
    tokens: Tree,
    db: Db,
    commit: Arc<Committer>,
}

/// How many records [`TsaStore::record_token`] / [`TsaStore::write_token`] made durable and how
/// many flushes that took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Records written and made durable.
    pub records: u64,
    /// Flushes made for them (at most `records`; fewer when records waited together).
    pub flushes: u64,
}

type FlushFn = Box<dyn Fn() -> Result<(), Error> + Send + Sync>;

/// Group commit: one committer thread flushes, each flush covering every record written before it
/// began.
///
/// Every record gets a ticket (a sequence number taken under the lock after its write). The
/// committer, woken by a write, notes the highest ticket so far, flushes outside the lock, then
/// marks every ticket up to that one durable and wakes their waiters — blocking ones
/// ([`PendingToken::wait`]) and async ones ([`PendingToken`] as a future) alike. Records written
/// while a flush is in flight wait for the next one, which covers them all.
///
/// The thread starts with the first write and is stopped (after a last flush of whatever is
/// pending) and joined when the last clone of the store is dropped, so the database is released.
struct Committer {
    shared: Arc<CommitShared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct CommitShared {
    flush: FlushFn,
    state: Mutex<CommitState>,
    /// The committer sleeps here.
    work: Condvar,
    /// Blocking waiters sleep here.
    done: Condvar,
}

#[derive(Default)]
struct CommitState {
    /// The last ticket handed out.
    written: u64,
    /// The highest ticket a flush was started for.
    attempted: u64,
    /// Every ticket up to this one is on disk.
    durable: u64,
    /// Tickets up to this one were covered by a failed flush (and are not durable unless
    /// `durable` reached them later).
    failed: u64,
    /// Why the last failed flush failed.
    error: String,
    /// Successful flushes.
    flushes: u64,
    /// Wakers of async waiters, by ticket.
    wakers: Vec<(u64, Waker)>,
    /// The committer thread was started.
    running: bool,
    /// The committer is asleep waiting for work.
    idle: bool,
    /// Blocking waiters asleep on `done`.
    blocked: usize,
    /// The store is gone: flush what is pending and stop.
    shutdown: bool,
}

impl CommitState {
    /// The outcome for `ticket`, once there is one.
    fn outcome(&self, ticket: u64) -> Option<Result<(), Error>> {
        if self.durable >= ticket {
            Some(Ok(()))
        } else if self.failed >= ticket {
            Some(Err(Error::Db(format!("flushing the TSA token record failed: {}", self.error))))
        } else {
            None
        }
    }
}

impl CommitShared {
    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The committer thread's loop.
    fn run(&self) {
        /// Should the thread die (a panic in the flush), its waiters get an error instead of
        /// waiting forever, and the next write starts a new thread.
        struct Stopped<'a>(&'a CommitShared);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                if std::thread::panicking() {
                    st.failed = st.written;
                    st.error = "the TSA commit thread panicked".into();
                }
                st.running = false;
                let wakers: Vec<Waker> = st.wakers.drain(..).map(|(_, w)| w).collect();
                self.0.done.notify_all();
                drop(st);
                wakers.into_iter().for_each(Waker::wake);
            }
        }
        let _stopped = Stopped(self);
        let mut st = self.lock();
        loop {
            if st.written > st.attempted {
                let target = st.written;
                st.attempted = target;
                drop(st);
                let result = (self.flush)();
                st = self.lock();
                match result {
                    Ok(()) => {
                        st.durable = target;
                        st.flushes += 1;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "flushing TSA token records failed");
                        st.failed = target;
                        st.error = e.to_string();
                    }
                }
                let mut ready = Vec::new();
                st.wakers.retain(|(ticket, waker)| {
                    let keep = *ticket > target;
                    if !keep {
                        ready.push(waker.clone());
                    }
                    keep
                });
                if st.blocked > 0 {
                    self.done.notify_all();
                }
                drop(st);
                ready.into_iter().for_each(Waker::wake);
                st = self.lock();
                continue;
            }
            if st.shutdown {
                return;
            }
            st.idle = true;
            st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle = false;
        }
    }
}

impl Committer {
    fn new(flush: FlushFn) -> Self {
        Committer {
            shared: Arc::new(CommitShared {
                flush,
                state: Mutex::new(CommitState::default()),
                work: Condvar::new(),
                done: Condvar::new(),
            }),
            thread: Mutex::new(None),
        }
    }

    /// Takes the ticket of a record that has just been written, starting the committer thread
    /// if needed and waking it if it sleeps.
    fn ticket(&self) -> Result<PendingToken, Error> {
        let mut st = self.shared.lock();
        if !st.running {
            let shared = self.shared.clone();
            let handle = std::thread::Builder::new()
                .name("tsa-commit".into())
                .spawn(move || shared.run())
                .map_err(|e| Error::Db(format!("cannot start the TSA commit thread: {e}")))?;
            *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
            st.running = true;
        }
        st.written += 1;
        let ticket = st.written;
        if st.idle {
            self.shared.work.notify_one();
        }
        Ok(PendingToken { ticket, shared: self.shared.clone() })
    }

    fn stats(&self) -> CommitStats {
        let st = self.shared.lock();
        CommitStats { records: st.durable, flushes: st.flushes }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_one();
        let handle = self.thread.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("the TSA commit thread panicked");
            }
        }
    }
}

/// A token record that is written but maybe not yet on disk ([`TsaStore::write_token`]).
///
/// Wait for it with [`PendingToken::wait`] (blocking) or `.await` it; only once that returns
/// `Ok` may the token be handed out.
#[must_use = "a token may be returned only once its record is durable"]
pub struct PendingToken {
    ticket: u64,
    shared: Arc<CommitShared>,
}

impl fmt::Debug for PendingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingToken").field("ticket", &self.ticket).finish_non_exhaustive()
    }
}

impl PendingToken {
    /// Blocks until a flush that began after the write has completed.
    pub fn wait(self) -> Result<(), Error> {
        let mut st = self.shared.lock();
        loop {
            if let Some(outcome) = st.outcome(self.ticket) {
                return outcome;
            }
            st.blocked += 1;
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
            st.blocked -= 1;
        }
    }
}

impl Future for PendingToken {
    type Output = Result<(), Error>;

    /// Ready once a flush that began after the write has completed; until then the committer
    /// keeps the waker.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.shared.lock();
        if let Some(outcome) = st.outcome(self.ticket) {
            return Poll::Ready(outcome);
        }
        let ticket = self.ticket;
        match st.wakers.iter_mut().find(|(t, _)| *t == ticket) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => st.wakers.push((ticket, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl fmt::Debug for TsaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsaStore").finish_non_exhaustive()
    }
}

fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, Error> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt(format!("{what}: not 8 bytes")))?;
    Ok(u64::from_be_bytes(arr))
}

fn decode_record(bytes: &[u8]) -> Result<TokenRecord, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("TSA token record: {e}")))
}

impl TsaStore {
    /// Opens (creating) the TSA's trees in `db` — the database of [`crate::CertDb::sled_db`].
    pub fn open(db: &Db) -> Result<Self, Error> {
        let flushed = db.clone();
        Ok(TsaStore {
            meta: db.open_tree("tsa_meta")?,
            tokens: db.open_tree("tsa_tokens")?,
            db: db.clone(),
            commit: Arc::new(Committer::new(Box::new(move || {
                flushed.flush()?;
                Ok(())
            }))),
        })
    }

    /// The highest serial ever reserved (0 when none was).
    pub fn high_water_mark(&self) -> Result<u64, Error> {
        self.meta.get(HIGH_WATER_KEY)?.map(|v| decode_u64(&v, "TSA serial high-water mark")).unwrap_or(Ok(0))
    }

    /// Reserves the next `count` serials (at least one) for this process, durably.
    ///
    /// 1. read the high-water mark `h` (0 when none);
    /// 2. compare-and-swap it to `h + count` (retrying when another writer moved it);
    /// 3. flush to disk — only then is the block `h+1 ..= h+count` returned, so none of its
    ///    serials can be handed out again after a restart or a crash.
    pub fn reserve_serials(&self, count: u64) -> Result<SerialBlock, Error> {
        let count = count.max(1);
        loop {
            let old = self.meta.get(HIGH_WATER_KEY)?;
            let h =
                old.as_deref().map(|v| decode_u64(v, "TSA serial high-water mark")).transpose()?.unwrap_or(0);
            let new = h
                .checked_add(count)
                .ok_or_else(|| Error::Inconsistent("the TSA serial number space is exhausted".into()))?;
            let swapped = self.meta.compare_and_swap(HIGH_WATER_KEY, old, Some(&new.to_be_bytes()[..]))?;
            if swapped.is_ok() {
                self.db.flush()?;
                return Ok(SerialBlock { next: h + 1, last: new });
            }
        }
    }

    /// Records an issued token and returns once it is on disk; only then may the token be
    /// returned. [`TsaStore::write_token`] followed by [`PendingToken::wait`].
    pub fn record_token(&self, rec: &TokenRecord) -> Result<(), Error> {
        self.write_token(rec)?.wait()
    }

    /// Writes the record of an issued token; the token may be returned once the
    /// [`PendingToken`] says the record is durable.
    ///
    /// 1. refuse a serial above the high-water mark (it was never reserved);
    /// 2. insert the record unless one with that serial exists;
    /// 3. take a ticket for the next flush — the one in flight, if any, does not count; the next
    ///    covers every record written meanwhile (see the module documentation on group commit).
    pub fn write_token(&self, rec: &TokenRecord) -> Result<PendingToken, Error> {
        let h = self.high_water_mark()?;
        if rec.serial.value() > h {
            return Err(Error::Inconsistent(format!(
                "TSA serial {} was never reserved (high-water mark {h})",
                rec.serial
            )));
        }
        let enc = serde_json::to_vec(rec).map_err(|e| Error::Corrupt(e.to_string()))?;
        match self.tokens.compare_and_swap(rec.serial.key(), None as Option<&[u8]>, Some(enc))? {
            Ok(()) => self.commit.ticket(),
            Err(_) => Err(Error::Inconsistent(format!("TSA token {} is recorded already", rec.serial))),
        }
    }

    /// Every recorded token, in serial order.
    pub fn tokens(&self) -> impl Iterator<Item = Result<TokenRecord, Error>> + '_ {
        self.tokens.iter().map(|r| {
            let (_, v) = r?;
            decode_record(&v)
        })
    }

    /// Number of recorded tokens.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Records made durable by [`TsaStore::record_token`] through this store (and its clones)
    /// since it was opened, and the flushes that took.
    pub fn commit_stats(&self) -> CommitStats {
        self.commit.stats()
    }

    /// Checks that every record decodes, is stored under its own serial, and has a serial at or
    /// below the high-water mark.
    pub fn check_consistency(&self) -> Result<(), Error> {
        let h = self.high_water_mark()?;
        for r in self.tokens.iter() {
            let (k, v) = r?;
            let rec = decode_record(&v)?;
            if k.as_ref() != rec.serial.key() {
                return Err(Error::Inconsistent(format!(
                    "TSA token {} stored under another key",
                    rec.serial
                )));
            }
            if rec.serial.value() > h {
                return Err(Error::Inconsistent(format!(
                    "TSA token {} is above the high-water mark {h}",
                    rec.serial
                )));
            }
        }
        Ok(())
    }
}

impl TokenLedger for TsaStore {
    fn token(&self, serial: TsaSerial) -> Result<Option<TokenRecord>, Error> {
        self.tokens.get(serial.key())?.map(|v| decode_record(&v)).transpose()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into().map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(serial: TsaSerial) -> TokenRecord {
        TokenRecord {
            serial,
            gen_time: Utc::now(),
            hash_algorithm: "2.16.840.1.101.3.4.2.1".into(),
            imprint: vec![7; 32],
            policy: "1.3.6.1.4.1.32473.1".into(),
            token_sha256: [serial.value() as u8; 32],
        }
    }

    #[test]
    fn serial_blocks_increase_across_reopen_and_are_never_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let mut seen = Vec::new();
        {
            let db = sled::open(&path).expect("open");
            let store = TsaStore::open(&db).expect("store");
            let mut block = store.reserve_serials(10).expect("reserve");
            assert_eq!(block.remaining(), 10);
            for _ in 0..3 {
                seen.push(block.next_serial().expect("serial").value());
            }
            let mut second = store.reserve_serials(5).expect("reserve");
            seen.push(second.next_serial().expect("serial").value());
            assert_eq!(store.high_water_mark().expect("hwm"), 15);
        }
        // Reopen as after a crash: the unused rest of both blocks is skipped.
        let db = sled::open(&path).expect("reopen");
        let store = TsaStore::open(&db).expect("store");
        let mut block = store.reserve_serials(4).expect("reserve");
        while let Some(s) = block.next_serial() {
            seen.push(s.value());
        }
        assert_eq!(seen, vec![1, 2, 3, 11, 16, 17, 18, 19]);
        assert!(block.next_serial().is_none());
        assert_eq!(block.remaining(), 0);
    }

    #[test]
    fn records_are_kept_once_and_only_for_reserved_serials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path().join("db")).expect("open");
        let store = TsaStore::open(&db).expect("store");
        let mut block = store.reserve_serials(2).expect("reserve");
        let s1 = block.next_serial().expect("serial");
        let rec = record(s1);
        store.record_token(&rec).expect("record");
        assert_eq!(store.token(s1).expect("get"), Some(rec.clone()));
        assert!(matches!(store.record_token(&rec), Err(Error::Inconsistent(_))));
        let unreserved = record(TsaSerial::new(3).expect("serial"));
        assert!(matches!(store.record_token(&unreserved), Err(Error::Inconsistent(_))));
        assert_eq!(store.token(TsaSerial::new(2).expect("serial")).expect("get"), None);
        assert_eq!(store.token_count(), 1);
        assert_eq!(store.tokens().collect::<Result<Vec<_>, _>>().expect("iter"), vec![rec]);
        store.check_consistency().expect("consistent");
    }

    #[test]
    fn group_commit_shares_flushes_and_never_counts_a_flush_that_began_before_the_write() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::time::Duration;

        let started = Arc::new(AtomicU64::new(0)); // flushes begun
        let completed = Arc::new(AtomicU64::new(0)); // the highest begun-number of a completed flush
        let (s2, c2) = (started.clone(), completed.clone());
        let commit = Committer::new(Box::new(move || {
            let n = s2.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(Duration::from_millis(20));
            c2.fetch_max(n, Ordering::SeqCst);
            Ok(())
        }));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5 {
                        // The record is written here; only flushes begun from now on count.
                        let begun_before = started.load(Ordering::SeqCst);
                        commit.ticket().expect("ticket").wait().expect("durable");
                        assert!(
                            completed.load(Ordering::SeqCst) > begun_before,
                            "returned on a flush that began before the write"
                        );
                    }
                });
            }
        });
        let stats = commit.stats();
        assert_eq!(stats.records, 40);
        assert!(stats.flushes < 40, "no flush was shared: {stats:?}");
        assert_eq!(stats.flushes, started.load(Ordering::SeqCst));
    }

    #[test]
    fn a_failed_flush_fails_the_records_it_covered_and_later_ones_succeed() {
        use std::sync::atomic::{AtomicBool, Ordering};

        let fail = Arc::new(AtomicBool::new(true));
        let f2 = fail.clone();
        let commit = Committer::new(Box::new(move || {
            if f2.load(Ordering::SeqCst) {
                return Err(Error::Db("disk full".into()));
            }
            Ok(())
        }));
        let e = commit.ticket().expect("ticket").wait().expect_err("the flush failed");
        assert!(e.to_string().contains("disk full"), "{e}");
        fail.store(false, Ordering::SeqCst);
        commit.ticket().expect("ticket").wait().expect("durable");
        assert_eq!(commit.stats(), CommitStats { records: 2, flushes: 1 });
    }

    #[test]
    fn a_dead_commit_thread_fails_its_waiters_instead_of_hanging_them() {
        let commit = Committer::new(Box::new(|| panic!("flush exploded")));
        let e = commit.ticket().expect("ticket").wait().expect_err("no flush");
        assert!(e.to_string().contains("panicked"), "{e}");
        // The next write starts a new thread (which fails the same way here).
        assert!(commit.ticket().expect("ticket").wait().is_err());
    }

    #[test]
    fn pending_records_can_be_awaited_and_are_flushed_before_the_store_goes() {
        use std::task::Wake;

        struct Flag(std::sync::atomic::AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().expect("lock");
        let g2 = gate.clone();
        let commit = Committer::new(Box::new(move || {
            drop(g2.lock().expect("gate"));
            Ok(())
        }));
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut pending = commit.ticket().expect("ticket");
        // The flush is held at the gate: not ready, and the waker is kept.
        assert!(Pin::new(&mut pending).poll(&mut cx).is_pending());
        let late = commit.ticket().expect("ticket");
        drop(held);
        while !flag.0.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(matches!(Pin::new(&mut pending).poll(&mut cx), Poll::Ready(Ok(()))));
        // Dropping the store flushes what is pending and stops the thread.
        drop(commit);
        late.wait().expect("flushed at shutdown");
    }

    #[test]
    fn concurrent_records_share_flushes_without_losing_any() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let written: Vec<TokenRecord> = {
            let db = sled::open(&path).expect("open");
            let store = TsaStore::open(&db).expect("store");
            let mut block = store.reserve_serials(400).expect("reserve");
            let recs: Vec<TokenRecord> =
                (0..400).map(|_| record(block.next_serial().expect("serial"))).collect();
            std::thread::scope(|s| {
                for chunk in recs.chunks(50) {
                    let store = store.clone();
                    s.spawn(move || {
                        for r in chunk {
                            store.record_token(r).expect("record");
                        }
                    });
                }
            });
            let stats = store.commit_stats();
            assert_eq!(stats.records, 400);
            assert!(stats.flushes < 400, "8 writers never shared a flush: {stats:?}");
            recs
        };
        let db = sled::open(&path).expect("reopen");
        let store = TsaStore::open(&db).expect("store");
        assert_eq!(store.tokens().collect::<Result<Vec<_>, _>>().expect("iter"), written);
        store.check_consistency().expect("consistent");
    }

    #[test]
    fn serial_text_forms() {
        assert_eq!("42".parse::<TsaSerial>().expect("dec").value(), 42);
        assert_eq!("0x2A".parse::<TsaSerial>().expect("hex").value(), 42);
        assert_eq!(TsaSerial::new(42).expect("serial").to_string(), "42");
        for bad in ["0", "-1", "x", "", "0x"] {
            assert!(bad.parse::<TsaSerial>().is_err(), "{bad:?} accepted");
        }
    }
}
