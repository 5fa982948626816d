//! Enrolment records in sled.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `acme` | kind tag (1 byte), creation time (8 bytes, big-endian µs), id | the record |
//! | `acme_ids` | kind tag (1 byte), id | the key of the record in `acme` |
//!
//! The creation time in the key lists each kind oldest first without reading the records.

use chrono::{DateTime, Utc};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

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

fn abort(e: TransactionError<Error>) -> Error {
    super::tx_error(e)
}

impl SledEngine {
    fn acme_write(
        &self,
        kind: AcmeKind,
        id: &str,
        at: DateTime<Utc>,
        record: &[u8],
        only_new: bool,
    ) -> Result<bool, Error> {
        check_id(id)?;
        self.fault()?;
        let ik = id_key(kind, id);
        let done = (&self.acme, &self.acme_ids)
            .transaction(|(recs, ids)| {
                let key = match ids.get(&ik)? {
                    Some(_) if only_new => return Ok(false),
                    Some(existing) => existing.to_vec(),
                    None => {
                        let k = record_key(kind, id, at);
                        ids.insert(ik.as_slice(), k.as_slice())?;
                        k
                    }
                };
                recs.insert(key.as_slice(), record)?;
                Ok::<_, ConflictableTransactionError<Error>>(true)
            })
            .map_err(abort)?;
        if done {
            self.flush_db()?;
        }
        Ok(done)
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
        self.acme_write(kind, id, created_at, record, true)
    }

    fn put_acme(
        &self,
        kind: AcmeKind,
        id: &str,
        created_at: DateTime<Utc>,
        record: &[u8],
    ) -> Result<(), Error> {
        self.acme_write(kind, id, created_at, record, false).map(drop)
    }

    fn acme(&self, kind: AcmeKind, id: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(key) = self.acme_ids.get(id_key(kind, id))? else { return Ok(None) };
        Ok(self.acme.get(key)?.map(|v| v.to_vec()))
    }

    fn replace_acme(&self, kind: AcmeKind, id: &str, old: &[u8], new: &[u8]) -> Result<bool, Error> {
        let Some(key) = self.acme_ids.get(id_key(kind, id))? else { return Ok(false) };
        self.fault()?;
        let done = self.acme.compare_and_swap(key, Some(old), Some(new))?.is_ok();
        if done {
            self.flush_db()?;
        }
        Ok(done)
    }

    fn remove_acme(&self, kind: AcmeKind, id: &str) -> Result<bool, Error> {
        let ik = id_key(kind, id);
        self.fault()?;
        let done = (&self.acme, &self.acme_ids)
            .transaction(|(recs, ids)| {
                let Some(key) = ids.remove(ik.as_slice())? else { return Ok(false) };
                recs.remove(key)?;
                Ok::<_, ConflictableTransactionError<Error>>(true)
            })
            .map_err(abort)?;
        if done {
            self.flush_db()?;
        }
        Ok(done)
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
