//! Enrolment records in sled.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `acme` | kind tag (1 byte), creation time (8 bytes, big-endian µs), id | the record |
//! | `acme_ids` | kind tag (1 byte), id | the key of the record in `acme` |
//!
//! The creation time in the key lists each kind oldest first without reading the records.

use chrono::{DateTime, Utc};

use super::SledEngine;
use crate::acme_store::{check_id, AcmeKind, AcmeRecords};
use crate::Error;

fn id_key(kind: AcmeKind, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(kind.tag());
    k.extend_from_slice(id.as_bytes());
    k
}

fn record_key(kind: AcmeKind, id: &str, at: DateTime<Utc>) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + id.len());
    k.push(kind.tag());
    k.extend_from_slice(&at.timestamp_micros().max(0).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

impl SledEngine {
    /// Writes a record without a cross-tree transaction (a sled transaction takes the whole
    /// database's lock, which stalls every other request): the id's index entry first, by
    /// compare-and-swap so that two writers of one new id agree on its record key, then the
    /// record — for a new record by compare-and-swap too, so that of two inserts of one id
    /// exactly one is told it stored it. A crash between the two leaves an index entry without a
    /// record: the id reads as absent, is not listed, and the next write of the id fills it in.
    fn acme_write(
        &self,
        kind: AcmeKind,
        id: &str,
        at: DateTime<Utc>,
        record: &[u8],
        only_new: bool,
        flush: bool,
    ) -> Result<bool, Error> {
        check_id(id)?;
        self.fault()?;
        let ik = id_key(kind, id);
        let none: Option<&[u8]> = None;
        let key = loop {
            if let Some(existing) = self.acme_ids.get(&ik)? {
                break existing.to_vec();
            }
            let k = record_key(kind, id, at);
            if self.acme_ids.compare_and_swap(ik.as_slice(), none, Some(k.as_slice()))?.is_ok() {
                break k;
            }
        };
        if only_new {
            if self.acme.compare_and_swap(key.as_slice(), none, Some(record))?.is_err() {
                return Ok(false);
            }
        } else {
            self.acme.insert(key, record)?;
        }
        if flush {
            self.flush_db()?;
        }
        Ok(true)
    }
}

impl AcmeRecords for SledEngine {
    fn insert_acme(
        &self,
        kind: AcmeKind,
        id: &str,
        created_at: DateTime<Utc>,
        record: &[u8],
    ) -> Result<bool, Error> {
        self.acme_write(kind, id, created_at, record, true, true)
    }

    fn put_acme(
        &self,
        kind: AcmeKind,
        id: &str,
        created_at: DateTime<Utc>,
        record: &[u8],
    ) -> Result<(), Error> {
        self.acme_write(kind, id, created_at, record, false, true).map(drop)
    }

    fn acme(&self, kind: AcmeKind, id: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(key) = self.acme_ids.get(id_key(kind, id))? else { return Ok(None) };
        Ok(self.acme.get(key)?.map(|v| v.to_vec()))
    }

    fn replace_acme(&self, kind: AcmeKind, id: &str, old: &[u8], new: &[u8]) -> Result<bool, Error> {
        let done = self.replace_acme_deferred(kind, id, old, new)?;
        if done {
            self.flush_db()?;
        }
        Ok(done)
    }

    fn insert_acme_deferred(
        &self,
        kind: AcmeKind,
        id: &str,
        created_at: DateTime<Utc>,
        record: &[u8],
    ) -> Result<bool, Error> {
        self.acme_write(kind, id, created_at, record, true, false)
    }

    fn replace_acme_deferred(&self, kind: AcmeKind, id: &str, old: &[u8], new: &[u8]) -> Result<bool, Error> {
        let Some(key) = self.acme_ids.get(id_key(kind, id))? else { return Ok(false) };
        self.fault()?;
        Ok(self.acme.compare_and_swap(key, Some(old), Some(new))?.is_ok())
    }

    fn sync_acme(&self) -> Result<(), Error> {
        self.flush_db()
    }

    /// The record first, then its index entry: a crash between leaves an index entry without a
    /// record, which reads as absent. Of two removals at once, one is told the record was there.
    fn remove_acme(&self, kind: AcmeKind, id: &str) -> Result<bool, Error> {
        let ik = id_key(kind, id);
        self.fault()?;
        let Some(key) = self.acme_ids.get(&ik)? else { return Ok(false) };
        let had = self.acme.remove(&key)?.is_some();
        let none: Option<&[u8]> = None;
        let _ = self.acme_ids.compare_and_swap(ik.as_slice(), Some(&key), none)?;
        self.flush_db()?;
        Ok(had)
    }

    fn acme_records(&self, kind: AcmeKind) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.acme
            .scan_prefix([kind.tag()])
            .map(|r| {
                let (k, v) = r?;
                let id = std::str::from_utf8(k.get(9..).unwrap_or_default())
                    .map_err(|_| Error::Corrupt("an enrolment record id is not UTF-8".into()))?;
                Ok((id.to_string(), v.to_vec()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn engine(dir: &std::path::Path) -> SledEngine {
        SledEngine::open(&dir.join("db"), 8 << 20, None).expect("open")
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
    }

    /// A crash between the index entry and the record leaves the entry alone: the id reads as
    /// absent and is not listed, and the next insert of the id stores its record.
    #[test]
    fn an_index_entry_without_its_record_reads_as_absent_and_is_filled_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path());
        let ik = id_key(AcmeKind::AccountKey, "thumb");
        e.acme_ids.insert(ik, record_key(AcmeKind::AccountKey, "thumb", at())).expect("index");
        assert_eq!(e.acme(AcmeKind::AccountKey, "thumb").expect("read"), None);
        assert!(e.acme_records(AcmeKind::AccountKey).expect("list").is_empty());
        assert!(e.insert_acme(AcmeKind::AccountKey, "thumb", at(), b"acct").expect("insert"));
        assert_eq!(e.acme(AcmeKind::AccountKey, "thumb").expect("read").as_deref(), Some(&b"acct"[..]));
        assert!(!e.insert_acme(AcmeKind::AccountKey, "thumb", at(), b"other").expect("insert"));
    }

    /// Of many inserts of one id at once, exactly one stores its record.
    #[test]
    fn of_concurrent_inserts_of_one_id_exactly_one_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Arc::new(engine(dir.path()));
        for round in 0..20 {
            let id = format!("id-{round}");
            let wins: Vec<bool> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4u8)
                    .map(|i| {
                        let (e, id) = (e.clone(), id.clone());
                        s.spawn(move || {
                            e.insert_acme_deferred(AcmeKind::Order, &id, at(), &[i]).expect("insert")
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().expect("thread")).collect()
            });
            assert_eq!(wins.iter().filter(|w| **w).count(), 1, "round {round}: {wins:?}");
            let winner = wins.iter().position(|w| *w).expect("a winner") as u8;
            assert_eq!(e.acme(AcmeKind::Order, &id).expect("read"), Some(vec![winner]));
        }
    }
}
