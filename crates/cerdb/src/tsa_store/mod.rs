//! Durable storage of the RFC 3161 timestamp authority: its serial numbers and the record of every
//! token it issued.
//!
//! The `tsa` crate holds a [`TsaStore`] opened on the installation's storage ([`TsaStore::open`]),
//! and auditors' verification reads the record through the read-only [`TokenLedger`] view. The
//! engine keeps the serial high-water mark and the records behind the [`TsaLedger`] primitives
//! (the embedded engine: a sled tree and the ledger file `tsa-tokens.ledger`, format [`ledger`]).
//!
//! **Serials are never reused.** [`TsaStore::reserve_serials`] moves the high-water mark up by a
//! whole block and flushes before it returns the block, so serials are handed out of memory;
//! after a crash or `SIGKILL` the unused rest of a block is skipped, never handed out again.
//!
//! **A token is returned only once its record is on disk.** [`TsaStore::begin_token`] hands
//! out the next serial together with a [`TokenSlot`], the record's place in the ledger; the
//! filled slot ([`TokenSlot::fill`]) gives a [`PendingToken`] to wait on or await. Concurrent
//! records share writes and syncs (group commit, [`commit`]), so under load a token costs a
//! fraction of an `fdatasync`.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{CertDb, Error};

pub mod commit;
pub mod ledger;

pub use commit::{PendingToken, TokenSlot};
pub use ledger::MAX_POLICY_TEXT;

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
    pub(crate) next: u64,
    pub(crate) last: u64,
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
    #[serde(with = "crate::record::hex_bytes")]
    pub imprint: Vec<u8>,
    /// The TSA policy of the token, as a dotted OID.
    pub policy: String,
    /// SHA-256 of the token's DER (the CMS ContentInfo, not the TimeStampResp around it).
    #[serde(with = "hex_array")]
    pub token_sha256: [u8; 32],
}

/// The TSA's serial high-water mark and token records: the primitives an engine implements.
pub trait TsaLedger: Send + Sync {
    /// The highest serial ever reserved (0 when none was).
    fn high_water_mark(&self) -> Result<u64, Error>;

    /// Moves the high-water mark `h` up by `count` (at least one) atomically — other writers,
    /// in this process or another, get blocks of their own — and durably, then returns the block
    /// `h+1 ..= h+count`: none of its serials can be handed out again after a restart or a crash.
    fn reserve_serials(&self, count: u64) -> Result<SerialBlock, Error>;

    /// Appends records encoded by [`ledger`]'s format ([`ledger::RECORD_LEN`] bytes each, in
    /// serial order), durably when it returns.
    fn append_tokens(&self, encoded: &[u8]) -> Result<(), Error>;

    /// Number of recorded tokens.
    fn token_count(&self) -> Result<u64, Error>;

    /// The `index`-th record (from 0), in serial order.
    fn token_at(&self, index: u64) -> Result<TokenRecord, Error>;

    /// The record of the token with this serial.
    fn token_by_serial(&self, serial: TsaSerial) -> Result<Option<TokenRecord>, Error>;
}

/// The read-only view of the token record, for auditors' verification.
pub trait TokenLedger: Send + Sync {
    /// The record of the token with this serial.
    fn token(&self, serial: TsaSerial) -> Result<Option<TokenRecord>, Error>;
}

/// How many records the store made durable since it was opened, and how many writes (each
/// followed by a sync) that took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Records written and made durable.
    pub records: u64,
    /// Writes made for them (at most `records`; fewer when records waited together).
    pub flushes: u64,
}

/// The TSA's serial numbers and token record in one data directory.
///
/// Every [`TsaStore::open`] on the same [`CertDb`] gives the same store (clones share one
/// committer and one serial allocator), so that the ledger has one writer.
#[derive(Clone)]
pub struct TsaStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    ledger: Arc<dyn TsaLedger>,
    commit: commit::Committer,
    /// The block serials are handed out of; held while a serial and its slot are taken.
    serials: Mutex<Option<SerialBlock>>,
}

/// Where a [`CertDb`] keeps its TSA store while anyone holds it.
pub(crate) type StoreCell = Arc<Mutex<Weak<Inner>>>;

impl fmt::Debug for TsaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsaStore").finish_non_exhaustive()
    }
}

impl TsaStore {
    /// Opens the TSA store of `db` (the same one for every call while any clone is held).
    pub fn open(db: &CertDb) -> Result<Self, Error> {
        let cell = db.tsa_cell();
        let mut slot = cell.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = slot.upgrade() {
            return Ok(TsaStore { inner });
        }
        let ledger = db.tsa_ledger();
        let writer = ledger.clone();
        let inner = Arc::new(Inner {
            ledger,
            commit: commit::Committer::new(Box::new(move |records| writer.append_tokens(records)))?,
            serials: Mutex::new(None),
        });
        *slot = Arc::downgrade(&inner);
        Ok(TsaStore { inner })
    }

    /// The highest serial ever reserved (0 when none was).
    pub fn high_water_mark(&self) -> Result<u64, Error> {
        self.inner.ledger.high_water_mark()
    }

    /// Reserves the next `count` serials (at least one) for this process, durably
    /// ([`TsaLedger::reserve_serials`]).
    pub fn reserve_serials(&self, count: u64) -> Result<SerialBlock, Error> {
        self.inner.ledger.reserve_serials(count)
    }

    /// Takes the next serial and the slot of its record, and calls `at` with the serial while no
    /// other serial can be taken — so what `at` reads (the TSA reads its clock: genTime) is in
    /// serial order too.
    ///
    /// 1. take the next serial of the current block, reserving a new block of `serial_block`
    ///    serials durably when it is used up ([`TsaStore::reserve_serials`]);
    /// 2. call `at`;
    /// 3. take the record's slot in the ledger: records are written in the order of their slots,
    ///    so the ledger stays in serial order whatever order the tokens are finished in.
    pub fn begin_token<T>(
        &self,
        serial_block: u64,
        at: impl FnOnce(TsaSerial) -> T,
    ) -> Result<(TokenSlot, T), Error> {
        let mut block = self.inner.serials.lock().unwrap_or_else(|p| p.into_inner());
        let serial = match block.as_mut().and_then(SerialBlock::next_serial) {
            Some(s) => s,
            None => {
                let mut fresh = self.reserve_serials(serial_block)?;
                let s = fresh
                    .next_serial()
                    .ok_or_else(|| Error::Inconsistent("a reserved TSA serial block is empty".into()))?;
                *block = Some(fresh);
                s
            }
        };
        let value = at(serial);
        let slot = self.inner.commit.open_slot(serial)?;
        Ok((slot, value))
    }

    /// Records a token for the next serial and waits until the record is on disk: for callers
    /// whose record does not depend on anything signed ([`TsaStore::begin_token`],
    /// [`TokenSlot::fill`], [`PendingToken::wait`] in one).
    pub fn record_next(
        &self,
        serial_block: u64,
        record: impl FnOnce(TsaSerial) -> TokenRecord,
    ) -> Result<TokenRecord, Error> {
        let (slot, rec) = self.begin_token(serial_block, record)?;
        slot.fill(&rec)?.wait()?;
        Ok(rec)
    }

    /// Every recorded token, in serial order.
    pub fn tokens(&self) -> impl Iterator<Item = Result<TokenRecord, Error>> + '_ {
        let count = self.inner.ledger.token_count();
        let n = *count.as_ref().unwrap_or(&0);
        count.err().map(Err).into_iter().chain((0..n).map(|i| self.inner.ledger.token_at(i)))
    }

    /// Number of recorded tokens.
    pub fn token_count(&self) -> usize {
        self.inner.ledger.token_count().ok().and_then(|n| usize::try_from(n).ok()).unwrap_or(0)
    }

    /// Records made durable through this store since it was opened, and the writes that took.
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.commit.stats()
    }

    /// Checks that every record is whole, serials strictly increase, and none is above the
    /// high-water mark.
    pub fn check_consistency(&self) -> Result<(), Error> {
        let h = self.high_water_mark()?;
        let mut prev = 0;
        for rec in self.tokens() {
            let s = rec?.serial.value();
            if s <= prev {
                return Err(Error::Inconsistent(format!("TSA ledger: token {s} follows token {prev}")));
            }
            if s > h {
                return Err(Error::Inconsistent(format!("TSA token {s} is above the high-water mark {h}")));
            }
            prev = s;
        }
        Ok(())
    }
}

impl TokenLedger for TsaStore {
    fn token(&self, serial: TsaSerial) -> Result<Option<TokenRecord>, Error> {
        self.inner.ledger.token_by_serial(serial)
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
            let db = CertDb::open(&path).expect("open");
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
        let db = CertDb::open(&path).expect("reopen");
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
    fn tokens_are_recorded_in_serial_order_and_found_by_serial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = CertDb::open(dir.path().join("db")).expect("open");
        let store = TsaStore::open(&db).expect("store");
        let a = store.record_next(2, record).expect("record");
        let b = store.record_next(2, record).expect("record");
        let c = store.record_next(2, record).expect("record");
        assert_eq!([a.serial.value(), b.serial.value(), c.serial.value()], [1, 2, 3]);
        assert_eq!(store.high_water_mark().expect("hwm"), 4);
        assert_eq!(store.token(b.serial).expect("get"), Some(b.clone()));
        assert_eq!(store.token(TsaSerial::new(4).expect("serial")).expect("get"), None);
        assert_eq!(store.token_count(), 3);
        assert_eq!(store.tokens().collect::<Result<Vec<_>, _>>().expect("iter"), vec![a, b, c]);
        store.check_consistency().expect("consistent");
        // A second open of the same database is the same store: one writer of the ledger.
        let again = TsaStore::open(&db).expect("store");
        assert!(Arc::ptr_eq(&again.inner, &store.inner));
    }

    #[test]
    fn concurrent_records_share_writes_without_losing_any() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let written: Vec<TokenRecord> = {
            let db = CertDb::open(&path).expect("open");
            let store = TsaStore::open(&db).expect("store");
            let recs = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        for _ in 0..50 {
                            let rec = store.record_next(64, record).expect("record");
                            recs.lock().expect("lock").push(rec);
                        }
                    });
                }
            });
            let stats = store.commit_stats();
            assert_eq!(stats.records, 400);
            assert!(stats.flushes < 400, "8 writers never shared a write: {stats:?}");
            let mut recs = recs.into_inner().expect("lock");
            recs.sort_by_key(|r| r.serial);
            recs
        };
        let db = CertDb::open(&path).expect("reopen");
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
