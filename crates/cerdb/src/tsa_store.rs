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

use std::fmt;
use std::str::FromStr;

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
#[derive(Clone)]
pub struct TsaStore {
    db: Db,
    meta: Tree,
    tokens: Tree,
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
        Ok(TsaStore { meta: db.open_tree("tsa_meta")?, tokens: db.open_tree("tsa_tokens")?, db: db.clone() })
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

    /// Records an issued token and flushes; only then may the token be returned.
    ///
    /// 1. refuse a serial above the high-water mark (it was never reserved);
    /// 2. insert the record unless one with that serial exists;
    /// 3. flush to disk.
    pub fn record_token(&self, rec: &TokenRecord) -> Result<(), Error> {
        let h = self.high_water_mark()?;
        if rec.serial.value() > h {
            return Err(Error::Inconsistent(format!(
                "TSA serial {} was never reserved (high-water mark {h})",
                rec.serial
            )));
        }
        let enc = serde_json::to_vec(rec).map_err(|e| Error::Corrupt(e.to_string()))?;
        match self.tokens.compare_and_swap(rec.serial.key(), None as Option<&[u8]>, Some(enc))? {
            Ok(()) => {
                self.db.flush()?;
                Ok(())
            }
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
    fn serial_text_forms() {
        assert_eq!("42".parse::<TsaSerial>().expect("dec").value(), 42);
        assert_eq!("0x2A".parse::<TsaSerial>().expect("hex").value(), 42);
        assert_eq!(TsaSerial::new(42).expect("serial").to_string(), "42");
        for bad in ["0", "-1", "x", "", "0x"] {
            assert!(bad.parse::<TsaSerial>().is_err(), "{bad:?} accepted");
        }
    }
}
