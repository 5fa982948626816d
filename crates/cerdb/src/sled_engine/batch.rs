//! Storing a batch of issued certificates without sled's transaction lock.
//!
//! A sled transaction (and `apply_batch`) holds a process-wide lock that every read of every tree
//! waits for; storing 5,000 certificates in one transaction held it for about 0.3 s, and every
//! directory and OCSP lookup arriving meanwhile waited (`bench/directory/during-load.sh`). Plain
//! inserts and compare-and-swaps take that lock shared, so a batch is written with them, and its
//! atomicity comes from an intent record instead:
//!
//! 1. write the batch's intent to the tree `pending` (one insert): for each certificate its
//!    serial and fingerprint, for each audit record its number and the SHA-256 of its bytes;
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
//! The intent's format (tree `pending`, key: batch number, 8 bytes big-endian): `0x01`; the
//! number of certificates (4 bytes BE), each as the serial's length (1 byte), its magnitude and
//! the fingerprint (32 bytes); the number of audit records (4 bytes BE), each as its number
//! (8 bytes BE) and the SHA-256 of its bytes (32 bytes).

use std::sync::atomic::Ordering;

use super::certs::{decode_meta, email_key, sha256};
use super::SledEngine;
use crate::{AuditRecord, CertRecord, Error, Fingerprint, Serial};

const INTENT_V1: u8 = 0x01;

/// What a batch may have written.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Intent {
    certs: Vec<(Serial, Fingerprint)>,
    audit: Vec<(u64, [u8; 32])>,
}

impl Intent {
    fn of(certs: &[CertRecord], audit: &[AuditRecord]) -> Self {
        Intent {
            certs: certs.iter().map(|r| (r.serial.clone(), r.fingerprint)).collect(),
            audit: audit.iter().map(|a| (a.seq, sha256(&a.bytes))).collect(),
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
        let intent = Intent::of(certs, audit);
        let id = self.next_batch.fetch_add(1, Ordering::SeqCst).to_be_bytes();
        self.fault()?;
        self.pending.insert(id, intent.encode())?;
        match self.write_batch_entries(certs, encoded, audit) {
            Ok(()) => match self.fault().and_then(|()| Ok(self.pending.remove(id).map(drop)?)) {
                Ok(()) => Ok(()),
                Err(e) => self.undo(&id, &intent, e),
            },
            Err(e) => self.undo(&id, &intent, e),
        }
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

    /// Removes what a failed batch wrote, then its intent; returns `cause`. When the removal
    /// itself fails, the intent stays and the next open finishes it.
    fn undo(&self, id: &[u8; 8], intent: &Intent, cause: Error) -> Result<(), Error> {
        let removed = self.roll_back(intent).and_then(|()| {
            self.fault()?;
            Ok(self.pending.remove(id).map(drop)?)
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
        let mut n = 0;
        for r in self.pending.iter() {
            let (k, v) = r?;
            self.roll_back(&Intent::decode(&v)?)?;
            self.pending.remove(k)?;
            n += 1;
        }
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
