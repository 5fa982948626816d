//! Storing a batch of issued certificates without sled's transaction lock.
//!
//! A sled transaction (and `apply_batch`) holds a process-wide lock that every read of every tree
//! waits for; storing 5,000 certificates in one transaction held it for about 0.3 s, and every
//! directory and OCSP lookup arriving meanwhile waited (`bench/directory/during-load.sh`). Plain
//! inserts and compare-and-swaps take that lock shared, so a batch is written with them, and its
//! atomicity comes from an intent record instead:
//!
//! 1. write the batch's intent to the tree `pending`: for each certificate its serial and
//!    fingerprint, for each audit record its number and the SHA-256 of its bytes — in records of
//!    at most [`INTENT_CHUNK`] of each, so that neither a record nor a node of sled's (up to 16
//!    records) is large enough for sled to write it as a blob file of its own (a
//!    5,000-certificate intent in one value was 445 kB, a file written per batch);
//! 2. for each certificate, compare-and-swap its record into `cert_meta` (refusing a serial
//!    stored already), then insert its fingerprint, address and hashed-address entries;
//! 3. compare-and-swap each audit record into `audit` (refusing a number in use);
//! 4. remove the intent — the batch is stored; the caller's flush makes it durable.
//!
//! When a step fails, what the batch wrote is removed again (step 2 and 3 entries whose values
//! are this batch's, nothing else) and then the intent. After a crash, [`SledEngine::open`] does
//! the same for every intent it finds ([`SledEngine::roll_back_pending`]): sled recovers a prefix
//! of the writes, so an intent that is still there covers everything its batch managed to write,
//! and a batch whose intent is gone was written whole. A batch is acknowledged only after its
//! flush, so rolling back an unflushed batch never loses an acknowledged certificate.
//!
//! Readers may see a batch's certificates before its last one is written (never one whose store
//! failed, once the failure is reported): a certificate is handed to nobody before its batch
//! returns.
//!
//! An intent record's format (tree `pending`, key: batch number, 8 bytes big-endian, then the
//! record's number within the batch, 4 bytes big-endian): `0x01`; the
//! number of certificates (4 bytes BE), each as the serial's length (1 byte), its magnitude and
//! the fingerprint (32 bytes); the number of audit records (4 bytes BE), each as its number
//! (8 bytes BE) and the SHA-256 of its bytes (32 bytes).

use std::sync::atomic::Ordering;

use super::certs::{decode_meta, email_key, sha256};
use super::SledEngine;
use crate::{AuditRecord, CertRecord, Error, Fingerprint, Serial};

const INTENT_V1: u8 = 0x01;

/// The most certificates (and audit records) one intent record lists: about 6 kB, so that 16 of
/// them (a leaf node of sled's) stay under its blob threshold (128 kB with 512 kB segments).
pub(super) const INTENT_CHUNK: usize = 64;

/// What a batch may have written.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Intent {
    certs: Vec<(Serial, Fingerprint)>,
    audit: Vec<(u64, [u8; 32])>,
}

impl Intent {
    /// The intent records of a batch: together they list every certificate and audit record.
    fn of(certs: &[CertRecord], audit: &[AuditRecord]) -> Vec<Self> {
        let mut certs = certs.chunks(INTENT_CHUNK);
        let mut audit = audit.chunks(INTENT_CHUNK);
        let mut out = Vec::new();
        loop {
            let (c, a) = (certs.next().unwrap_or_default(), audit.next().unwrap_or_default());
            if c.is_empty() && a.is_empty() && !out.is_empty() {
                return out;
            }
            out.push(Intent {
                certs: c.iter().map(|r| (r.serial.clone(), r.fingerprint)).collect(),
                audit: a.iter().map(|a| (a.seq, sha256(&a.bytes))).collect(),
            });
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(9 + self.certs.len() * 54 + self.audit.len() * 40);
        v.push(INTENT_V1);
        v.extend_from_slice(&(self.certs.len() as u32).to_be_bytes());
        for (serial, fp) in &self.certs {
            let s = serial.as_bytes();
            v.push(s.len() as u8);
            v.extend_from_slice(s);
            v.extend_from_slice(&fp.0);
        }
        v.extend_from_slice(&(self.audit.len() as u32).to_be_bytes());
        for (seq, hash) in &self.audit {
            v.extend_from_slice(&seq.to_be_bytes());
            v.extend_from_slice(hash);
        }
        v
    }

    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |what: &str| Error::Corrupt(format!("pending batch: {what}"));
        let mut r = Reader(bytes);
        if r.take(1).ok_or_else(|| bad("empty"))? != [INTENT_V1] {
            return Err(bad("unknown format"));
        }
        let mut intent = Intent::default();
        let n = r.u32().ok_or_else(|| bad("truncated count"))?;
        for _ in 0..n {
            let len = r.take(1).ok_or_else(|| bad("truncated serial"))?[0] as usize;
            let serial = Serial::from_bytes(r.take(len).ok_or_else(|| bad("truncated serial"))?)
                .map_err(|e| bad(&e.to_string()))?;
            let fp: [u8; 32] =
                r.take(32).and_then(|b| b.try_into().ok()).ok_or_else(|| bad("truncated fingerprint"))?;
            intent.certs.push((serial, Fingerprint(fp)));
        }
        let n = r.u32().ok_or_else(|| bad("truncated count"))?;
        for _ in 0..n {
            let seq = r.take(8).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
            let hash: Option<[u8; 32]> = r.take(32).and_then(|b| b.try_into().ok());
            match (seq, hash) {
                (Some(seq), Some(hash)) => intent.audit.push((seq, hash)),
                _ => return Err(bad("truncated audit record")),
            }
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(intent)
    }
}

/// The key of record `index` of batch `id`'s intent.
fn intent_key(id: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl SledEngine {
    /// Steps 1–4 of the module documentation, under the caller's audit lock. `encoded` holds
    /// each certificate's `cert_meta` value.
    pub(super) fn write_batch(
        &self,
        certs: &[CertRecord],
        encoded: &[Vec<u8>],
        audit: &[AuditRecord],
    ) -> Result<(), Error> {
        let intents = Intent::of(certs, audit);
        let id = self.next_batch.fetch_add(1, Ordering::SeqCst);
        let keys: Vec<[u8; 12]> = (0..intents.len() as u32).map(|i| intent_key(id, i)).collect();
        for (key, intent) in keys.iter().zip(&intents) {
            if let Err(e) =
                self.fault().and_then(|()| Ok(self.pending.insert(key, intent.encode()).map(drop)?))
            {
                return self.undo(&keys, &intents, e);
            }
        }
        if let Err(e) = self.write_batch_entries(certs, encoded, audit) {
            return self.undo(&keys, &intents, e);
        }
        for key in &keys {
            if let Err(e) = self.fault().and_then(|()| Ok(self.pending.remove(key).map(drop)?)) {
                return self.undo(&keys, &intents, e);
            }
        }
        Ok(())
    }

    /// Steps 2 and 3.
    fn write_batch_entries(
        &self,
        certs: &[CertRecord],
        encoded: &[Vec<u8>],
        audit: &[AuditRecord],
    ) -> Result<(), Error> {
        for (rec, enc) in certs.iter().zip(encoded) {
            let key = rec.serial.as_bytes();
            self.fault()?;
            if self.cert_meta.compare_and_swap(key, None as Option<&[u8]>, Some(enc.as_slice()))?.is_err() {
                return Err(Error::SerialInUse(rec.serial.clone()));
            }
            self.fault()?;
            self.by_fp.insert(rec.fingerprint.0, key)?;
            if let Some(e) = &rec.email {
                let lk = e.lookup_key();
                self.fault()?;
                self.by_email.insert(email_key(rec, e), &[] as &[u8])?;
                self.fault()?;
                self.email_hash.insert(sha256(lk.as_bytes()), lk.as_bytes())?;
            }
        }
        for a in audit {
            self.fault()?;
            let swapped = self.audit.compare_and_swap(
                a.seq.to_be_bytes(),
                None as Option<&[u8]>,
                Some(a.bytes.as_slice()),
            )?;
            if swapped.is_err() {
                return Err(Error::Inconsistent(format!("audit entry {} exists", a.seq)));
            }
        }
        Ok(())
    }

    /// Removes what a failed batch wrote, then its intent records; returns `cause`. When the
    /// removal itself fails, the intent records stay and the next open finishes it.
    fn undo(&self, keys: &[[u8; 12]], intents: &[Intent], cause: Error) -> Result<(), Error> {
        let removed = keys.iter().zip(intents).try_for_each(|(key, intent)| {
            self.roll_back(intent)?;
            self.fault()?;
            Ok::<(), Error>(self.pending.remove(key).map(drop)?)
        });
        if let Err(e) = removed {
            tracing::error!(error = %e, "a refused batch could not be removed yet; it will be when the database is next opened");
        }
        Err(cause)
    }

    /// Removes the entries of `intent`'s batch that hold its values: a certificate whose stored
    /// fingerprint is the batch's (with its fingerprint, address and hashed-address entries), an
    /// audit record whose bytes hash as the batch's.
    fn roll_back(&self, intent: &Intent) -> Result<(), Error> {
        for (serial, fp) in &intent.certs {
            let key = serial.as_bytes();
            let Some(v) = self.cert_meta.get(key)? else { continue };
            let rec = decode_meta(&v)?;
            if rec.fingerprint != *fp {
                continue; // another certificate's serial: not this batch's to remove
            }
            if let Some(e) = &rec.email {
                self.fault()?;
                self.by_email.remove(email_key(&rec, e))?;
            }
            if self.by_fp.get(fp.0)?.as_deref() == Some(key) {
                self.fault()?;
                self.by_fp.remove(fp.0)?;
            }
            self.fault()?;
            self.cert_meta.remove(key)?;
        }
        for (seq, hash) in &intent.audit {
            let k = seq.to_be_bytes();
            if self.audit.get(k)?.is_some_and(|v| sha256(&v) == *hash) {
                self.fault()?;
                self.audit.remove(k)?;
            }
        }
        Ok(())
    }

    /// Rolls back every batch whose intent is still recorded (a crash while it was written),
    /// then flushes; the number rolled back. Runs when the database is opened, before anything
    /// reads it.
    pub(super) fn roll_back_pending(&self) -> Result<usize, Error> {
        let mut batches = std::collections::BTreeSet::new();
        for r in self.pending.iter() {
            let (k, v) = r?;
            self.roll_back(&Intent::decode(&v)?)?;
            self.pending.remove(&k)?;
            batches.insert(k.get(..8).map(<[u8]>::to_vec));
        }
        let n = batches.len();
        if n > 0 {
            self.db.flush()?;
            tracing::warn!(
                batches = n,
                "removed the certificates of batches a crash interrupted (none was acknowledged)"
            );
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_intent_is_cut_into_records_that_list_everything_once() {
        let der = |i: usize| format!("cert {i}").into_bytes();
        let certs: Vec<CertRecord> = (0..600usize)
            .map(|i| CertRecord {
                serial: Serial::from_bytes(&(i as u64 + 1).to_be_bytes()).expect("serial"),
                fingerprint: Fingerprint::of(&der(i)),
                kind: crate::CertKind::Signing,
                email: None,
                subject: String::new(),
                issuer: crate::CaId::Issuing,
                not_before: chrono::DateTime::UNIX_EPOCH,
                not_after: chrono::DateTime::UNIX_EPOCH,
                issued_at: chrono::DateTime::UNIX_EPOCH,
                key_type: String::new(),
                escrow_key: None,
                revocation: None,
                der: der(i),
            })
            .collect();
        let audit: Vec<AuditRecord> =
            (1..=1000u64).map(|seq| AuditRecord { seq, bytes: seq.to_string().into_bytes() }).collect();
        let intents = Intent::of(&certs, &audit);
        assert_eq!(intents.len(), 16, "1,000 audit records in records of {INTENT_CHUNK}");
        assert!(intents.iter().all(|i| i.encode().len() < 8 * 1024));
        let listed: Vec<&Serial> = intents.iter().flat_map(|i| i.certs.iter().map(|(s, _)| s)).collect();
        assert_eq!(listed, certs.iter().map(|c| &c.serial).collect::<Vec<_>>());
        let seqs: Vec<u64> = intents.iter().flat_map(|i| i.audit.iter().map(|(s, _)| *s)).collect();
        assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
        assert_eq!(Intent::of(&[], &[]).len(), 1, "an empty batch still has its (empty) record");
    }

    #[test]
    fn intents_round_trip_and_damaged_ones_are_errors() {
        let intent = Intent {
            certs: vec![
                (Serial::from_bytes(&[1, 2, 3]).expect("serial"), Fingerprint([7; 32])),
                (Serial::from_bytes(&[0x7f; 20]).expect("serial"), Fingerprint([9; 32])),
            ],
            audit: vec![(41, [1; 32]), (42, [2; 32])],
        };
        let bytes = intent.encode();
        assert_eq!(Intent::decode(&bytes).expect("decode"), intent);
        for cut in 0..bytes.len() {
            assert!(matches!(Intent::decode(&bytes[..cut]), Err(Error::Corrupt(_))), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(Intent::decode(&longer), Err(Error::Corrupt(_))));
        let mut other = bytes;
        other[0] = 2;
        assert!(matches!(Intent::decode(&other), Err(Error::Corrupt(_))));
    }
}
