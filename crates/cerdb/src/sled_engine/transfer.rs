//! What a copy between engines needs of the embedded engine beyond the contract
//! ([`crate::copy::Transfer`]).

use std::ops::Bound;
use std::sync::atomic::Ordering;

use chrono::DateTime;

use super::certs::{change_value, revoked_key};
use super::SledEngine;
use crate::acme_store::AcmeKind;
use crate::copy::{AcmeEntry, Transfer};
use crate::directory::{ApiKeyHash, ApiKeyRecord, DirectoryError};
use crate::store::{Change, ChangeKind};
use crate::tsa_store::{TokenRecord, TsaLedger};
use crate::{AuditRecord, CertReader, CertRecord, CertStore, Error, Serial};

/// The prefix of the `meta` keys that mark this engine's layout upgrades, not the CA's settings.
const LAYOUT_PREFIX: &str = "layout.";

impl Transfer for SledEngine {
    fn certs_after(&self, after: Option<&Serial>, limit: usize) -> Result<Vec<CertRecord>, Error> {
        let start = match after {
            Some(s) => Bound::Excluded(s.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(limit);
        for k in self.cert_meta.range::<Vec<u8>, _>((start, Bound::Unbounded)).keys().take(limit) {
            let k = k?;
            let serial =
                Serial::from_bytes(&k).map_err(|e| Error::Corrupt(format!("certificate key: {e}")))?;
            out.push(
                self.get(&serial)?.ok_or_else(|| Error::Corrupt(format!("certificate {serial} vanished")))?,
            );
        }
        Ok(out)
    }

    fn import_certs(&self, certs: &[CertRecord]) -> Result<(), Error> {
        self.store_issued(certs, &[] as &[AuditRecord; 0])?;
        let mut batch = sled::Batch::default();
        for r in certs.iter().filter(|r| r.revocation.is_some()) {
            batch.insert(revoked_key(r.issuer, &r.serial), &[] as &[u8]);
        }
        self.revoked.apply_batch(batch)?;
        self.flush_db()
    }

    fn import_changes(&self, changes: &[Change]) -> Result<(), Error> {
        let _head = self.lock_audit();
        let mut last = self.last_change.load(Ordering::SeqCst);
        let mut batch = sled::Batch::default();
        for c in changes {
            if c.seq != last + 1 {
                return Err(Error::Inconsistent(format!("change {} does not follow change {last}", c.seq)));
            }
            let ChangeKind::Revoked(serial) = &c.kind;
            batch.insert(&c.seq.to_be_bytes(), change_value(serial));
            last = c.seq;
        }
        self.changes.apply_batch(batch)?;
        self.flush_db()?;
        self.last_change.store(last, Ordering::SeqCst);
        Ok(())
    }

    fn settings(&self) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        for kv in self.meta.iter() {
            let (k, v) = kv?;
            let k = String::from_utf8(k.to_vec()).map_err(|e| Error::Corrupt(format!("setting key: {e}")))?;
            if k.starts_with(LAYOUT_PREFIX) {
                continue;
            }
            let v = String::from_utf8(v.to_vec()).map_err(|e| Error::Corrupt(format!("setting {k}: {e}")))?;
            out.push((k, v));
        }
        Ok(out)
    }

    fn console_secrets(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.console_meta
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let k =
                    String::from_utf8(k.to_vec()).map_err(|e| Error::Corrupt(format!("console key: {e}")))?;
                Ok((k, v.to_vec()))
            })
            .collect()
    }

    fn api_keys_with_hashes(&self) -> Result<Vec<(ApiKeyHash, ApiKeyRecord)>, DirectoryError> {
        self.api_keys
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let hash: [u8; 32] = k.as_ref().try_into().map_err(|_| {
                    DirectoryError::Storage(Error::Corrupt("API key hash: not 32 bytes".into()))
                })?;
                let rec = serde_json::from_slice(&v)
                    .map_err(|e| DirectoryError::Storage(Error::Corrupt(format!("API key record: {e}"))))?;
                Ok((ApiKeyHash(hash), rec))
            })
            .collect()
    }

    fn acme_entries(&self, kind: AcmeKind) -> Result<Vec<AcmeEntry>, Error> {
        self.acme
            .scan_prefix([kind.tag()])
            .map(|kv| {
                let (k, v) = kv?;
                let corrupt = || Error::Corrupt(format!("{} record key", kind.name()));
                let micros: [u8; 8] = k.get(1..9).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
                let at = DateTime::from_timestamp_micros(i64::from_be_bytes(micros)).ok_or_else(corrupt)?;
                let id = std::str::from_utf8(&k[9..]).map_err(|_| corrupt())?;
                Ok((id.to_string(), at, v.to_vec()))
            })
            .collect()
    }

    fn tokens_page(&self, index: u64, _after_serial: u64, limit: usize) -> Result<Vec<TokenRecord>, Error> {
        let end = self.token_count()?.min(index + limit as u64);
        (index..end).map(|i| self.token_at(i)).collect()
    }
}
