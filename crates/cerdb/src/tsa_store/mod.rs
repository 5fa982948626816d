//! Durable storage of the RFC 3161 timestamp authority: its serial numbers and the record of every
//! token it issued.
//!
//! The `tsa` crate never touches sled or the ledger file; it holds a [`TsaStore`] opened on the
//! data directory's database ([`TsaStore::open`]), and auditors' verification reads the record
//! through the read-only [`TokenLedger`] view.
//!
//! | where | what |
//! |---|---|
//! | sled tree `tsa_meta`, key `serial_high_water` | u64 big-endian: every serial up to it has been handed out or reserved |
//! | file `tsa-tokens.ledger` in the database directory | one fixed-size record per token, in serial order (format: [`ledger`]) |
//!
//! **Serials are never reused.** [`TsaStore::reserve_serials`] moves the high-water mark up by a
//! whole block and flushes before it returns the block, so serials are handed out of memory;
//! after a crash or `SIGKILL` the unused rest of a block is skipped, never handed out again.
//!
//! **A token is returned only once its record is on disk.** [`TsaStore::begin_token`] hands
//! out the next serial together with a [`TokenSlot`], the record's place in the ledger; the
//! filled slot ([`TokenSlot::fill`]) gives a [`PendingToken`] to wait on or await. Concurrent
//! records share writes and syncs (group commit, [`commit`]), so under load a token costs a
//! fraction of an `fdatasync` — and no sled work at all.
//!
//! Records kept by earlier versions in the sled tree `tsa_tokens` (JSON) are moved into the
//! ledger the first time the store is opened.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::{Db, Tree};

use crate::{CertDb, Error};

pub mod commit;
pub mod ledger;

pub use commit::{PendingToken, TokenSlot};
pub use ledger::MAX_POLICY_TEXT;

const HIGH_WATER_KEY: &[u8] = b"serial_high_water";
/// The sled tree where earlier versions kept the token records.
const LEGACY_TOKENS_TREE: &str = "tsa_tokens";

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
    #[serde(with = "crate::record::hex_bytes")]
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
    meta: Tree,
    db: Db,
    ledger: Arc<ledger::LedgerFile>,
    commit: commit::Committer,
    /// The block serials are handed out of; held while a serial and its slot are taken.
    serials: Mutex<Option<SerialBlock>>,
}

/// Where a [`CertDb`] keeps its TSA store while anyone holds it.
pub(crate) type StoreCell = Arc<Mutex<Weak<Inner>>>;

impl fmt::Debug for TsaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsaStore").field("records", &self.inner.ledger.count()).finish_non_exhaustive()
    }
}

fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, Error> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt(format!("{what}: not 8 bytes")))?;
    Ok(u64::from_be_bytes(arr))
}

impl TsaStore {
    /// Opens the TSA store of `db` (the same one for every call while any clone is held): its
    /// sled tree and its ledger file in the database directory, whose torn end — if a crash
    /// left one — is cut off. Records of earlier versions are moved from sled into the ledger.
    pub fn open(db: &CertDb) -> Result<Self, Error> {
        let cell = db.tsa_cell();
        let mut slot = cell.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = slot.upgrade() {
            return Ok(TsaStore { inner });
        }
        let inner = Arc::new(Self::open_inner(db.sled_db(), db.path())?);
        *slot = Arc::downgrade(&inner);
        Ok(TsaStore { inner })
    }

    fn open_inner(db: &Db, dir: &Path) -> Result<Inner, Error> {
        let ledger = Arc::new(ledger::LedgerFile::open(dir)?);
        migrate_legacy_records(db, &ledger)?;
        let writer = ledger.clone();
        Ok(Inner {
            meta: db.open_tree("tsa_meta")?,
            db: db.clone(),
            ledger,
            commit: commit::Committer::new(Box::new(move |records| writer.append(records))),
            serials: Mutex::new(None),
        })
    }

    /// The highest serial ever reserved (0 when none was).
    pub fn high_water_mark(&self) -> Result<u64, Error> {
        self.inner
            .meta
            .get(HIGH_WATER_KEY)?
            .map(|v| decode_u64(&v, "TSA serial high-water mark"))
            .unwrap_or(Ok(0))
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
            let old = self.inner.meta.get(HIGH_WATER_KEY)?;
            let h =
                old.as_deref().map(|v| decode_u64(v, "TSA serial high-water mark")).transpose()?.unwrap_or(0);
            let new = h
                .checked_add(count)
                .ok_or_else(|| Error::Inconsistent("the TSA serial number space is exhausted".into()))?;
            let swapped =
                self.inner.meta.compare_and_swap(HIGH_WATER_KEY, old, Some(&new.to_be_bytes()[..]))?;
            if swapped.is_ok() {
                self.inner.db.flush()?;
                return Ok(SerialBlock { next: h + 1, last: new });
            }
        }
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
        (0..self.inner.ledger.count()).map(|i| self.inner.ledger.read(i))
    }

    /// Number of recorded tokens.
    pub fn token_count(&self) -> usize {
        usize::try_from(self.inner.ledger.count()).unwrap_or(usize::MAX)
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
        self.inner.ledger.find(serial)
    }
}

/// Moves the JSON records of the legacy sled tree into the ledger (those above its last serial:
/// a crash during an earlier move leaves some in both), syncs, then drops the tree.
fn migrate_legacy_records(db: &Db, ledger: &ledger::LedgerFile) -> Result<(), Error> {
    if !db.tree_names().iter().any(|n| n.as_ref() == LEGACY_TOKENS_TREE.as_bytes()) {
        return Ok(());
    }
    let tree = db.open_tree(LEGACY_TOKENS_TREE)?;
    let after = ledger.last_serial()?.unwrap_or(0);
    let mut buf = Vec::new();
    let mut moved = 0u64;
    for r in tree.range(after.saturating_add(1).to_be_bytes()..) {
        let (_, v) = r?;
        let rec: TokenRecord =
            serde_json::from_slice(&v).map_err(|e| Error::Corrupt(format!("TSA token record: {e}")))?;
        buf.extend_from_slice(&ledger::encode(&rec)?);
        moved += 1;
        if buf.len() >= ledger::MAX_BATCH * ledger::RECORD_LEN {
            ledger.append(&buf)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        ledger.append(&buf)?;
    }
    drop(tree);
    db.drop_tree(LEGACY_TOKENS_TREE)?;
    db.flush()?;
    tracing::info!(records = moved, "moved the TSA token records from sled into the ledger file");
    Ok(())
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
    fn records_of_the_legacy_sled_tree_move_into_the_ledger_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let legacy: Vec<TokenRecord> = (1..=5).map(|v| record(TsaSerial::new(v).expect("serial"))).collect();
        {
            let db = CertDb::open(&path).expect("open");
            let tree = db.sled_db().open_tree(LEGACY_TOKENS_TREE).expect("tree");
            for r in &legacy {
                tree.insert(r.serial.value().to_be_bytes(), serde_json::to_vec(r).expect("json"))
                    .expect("insert");
            }
            db.sled_db()
                .open_tree("tsa_meta")
                .expect("meta")
                .insert(HIGH_WATER_KEY, &8u64.to_be_bytes())
                .expect("hwm");
            db.flush().expect("flush");
        }
        let db = CertDb::open(&path).expect("reopen");
        {
            let store = TsaStore::open(&db).expect("store");
            assert_eq!(store.tokens().collect::<Result<Vec<_>, _>>().expect("iter"), legacy);
            assert!(!db.sled_db().tree_names().iter().any(|n| n.as_ref() == LEGACY_TOKENS_TREE.as_bytes()));
            let next = store.record_next(1, record).expect("record");
            assert_eq!(next.serial.value(), 9, "serials continue above the high-water mark");
        }
        let store = TsaStore::open(&db).expect("store");
        assert_eq!(store.token_count(), 6);
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
