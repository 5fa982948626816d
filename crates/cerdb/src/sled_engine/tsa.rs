//! The TSA's serial high-water mark and token records: a sled tree and the ledger file.
//!
//! | where | what |
//! |---|---|
//! | sled tree `tsa_meta`, key `serial_high_water` | u64 big-endian: every serial up to it has been handed out or reserved |
//! | file `tsa-tokens.ledger` in the database directory | one fixed-size record per token, in serial order (format: [`crate::tsa_store::ledger`]) |
//!
//! Records kept by earlier versions in the sled tree `tsa_tokens` (JSON) are moved into the
//! ledger the first time the database is opened.

use std::path::Path;
use std::sync::Arc;

use sled::{Db, Tree};

use super::SledEngine;
use crate::tsa_store::ledger::{encode, LedgerFile, MAX_BATCH, RECORD_LEN};
use crate::tsa_store::{SerialBlock, TokenRecord, TsaLedger, TsaSerial};
use crate::Error;

const HIGH_WATER_KEY: &[u8] = b"serial_high_water";
/// The sled tree where earlier versions kept the token records.
const LEGACY_TOKENS_TREE: &str = "tsa_tokens";

/// The TSA's part of the engine.
pub(super) struct TsaParts {
    meta: Tree,
    ledger: Arc<LedgerFile>,
}

impl TsaParts {
    /// Opens the tree and the ledger file in `dir` (whose torn end — if a crash left one — is cut
    /// off), moving records of earlier versions from sled into the ledger.
    pub(super) fn open(db: &Db, dir: &Path) -> Result<Self, Error> {
        let ledger = Arc::new(LedgerFile::open(dir)?);
        migrate_legacy_records(db, &ledger)?;
        Ok(TsaParts { meta: db.open_tree("tsa_meta")?, ledger })
    }
}

fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, Error> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt(format!("{what}: not 8 bytes")))?;
    Ok(u64::from_be_bytes(arr))
}

impl TsaLedger for SledEngine {
    fn high_water_mark(&self) -> Result<u64, Error> {
        self.tsa
            .meta
            .get(HIGH_WATER_KEY)?
            .map(|v| decode_u64(&v, "TSA serial high-water mark"))
            .unwrap_or(Ok(0))
    }

    /// 1. read the high-water mark `h` (0 when none);
    /// 2. compare-and-swap it to `h + count` (retrying when another writer moved it);
    /// 3. flush to disk — only then is the block returned.
    fn reserve_serials(&self, count: u64) -> Result<SerialBlock, Error> {
        let count = count.max(1);
        loop {
            let old = self.tsa.meta.get(HIGH_WATER_KEY)?;
            let h =
                old.as_deref().map(|v| decode_u64(v, "TSA serial high-water mark")).transpose()?.unwrap_or(0);
            let new = h
                .checked_add(count)
                .ok_or_else(|| Error::Inconsistent("the TSA serial number space is exhausted".into()))?;
            self.fault()?;
            let swapped =
                self.tsa.meta.compare_and_swap(HIGH_WATER_KEY, old, Some(&new.to_be_bytes()[..]))?;
            if swapped.is_ok() {
                self.flush_db()?;
                return Ok(SerialBlock { next: h + 1, last: new });
            }
        }
    }

    fn append_tokens(&self, encoded: &[u8]) -> Result<(), Error> {
        self.fault()?;
        self.tsa.ledger.append(encoded)
    }

    fn token_count(&self) -> Result<u64, Error> {
        Ok(self.tsa.ledger.count())
    }

    fn token_at(&self, index: u64) -> Result<TokenRecord, Error> {
        self.tsa.ledger.read(index)
    }

    fn token_by_serial(&self, serial: TsaSerial) -> Result<Option<TokenRecord>, Error> {
        self.tsa.ledger.find(serial)
    }
}

/// Moves the JSON records of the legacy sled tree into the ledger (those above its last serial:
/// a crash during an earlier move leaves some in both), syncs, then drops the tree.
fn migrate_legacy_records(db: &Db, ledger: &LedgerFile) -> Result<(), Error> {
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
        buf.extend_from_slice(&encode(&rec)?);
        moved += 1;
        if buf.len() >= MAX_BATCH * RECORD_LEN {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsa_store::TsaStore;
    use crate::CertDb;

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

    #[test]
    fn records_of_the_legacy_sled_tree_move_into_the_ledger_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let legacy: Vec<TokenRecord> = (1..=5).map(|v| record(TsaSerial::new(v).expect("serial"))).collect();
        {
            // A database as an earlier version left it.
            let db = sled::open(&path).expect("open");
            let tree = db.open_tree(LEGACY_TOKENS_TREE).expect("tree");
            for r in &legacy {
                tree.insert(r.serial.value().to_be_bytes(), serde_json::to_vec(r).expect("json"))
                    .expect("insert");
            }
            db.open_tree("tsa_meta").expect("meta").insert(HIGH_WATER_KEY, &8u64.to_be_bytes()).expect("hwm");
            db.flush().expect("flush");
        }
        let engine = Arc::new(SledEngine::open(&path, 1 << 20, None).expect("reopen"));
        assert!(!engine.db.tree_names().iter().any(|n| n.as_ref() == LEGACY_TOKENS_TREE.as_bytes()));
        let db = CertDb::from_engine(engine);
        {
            let store = TsaStore::open(&db).expect("store");
            assert_eq!(store.tokens().collect::<Result<Vec<_>, _>>().expect("iter"), legacy);
            let next = store.record_next(1, record).expect("record");
            assert_eq!(next.serial.value(), 9, "serials continue above the high-water mark");
        }
        let store = TsaStore::open(&db).expect("store");
        assert_eq!(store.token_count(), 6);
        store.check_consistency().expect("consistent");
    }
}
