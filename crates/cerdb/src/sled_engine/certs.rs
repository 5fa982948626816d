//! Certificates, their indexes, revocations, CRLs, the audit log and the change feed in sled.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `cert_meta` | serial magnitude | `0x01`, JSON length (4 bytes BE), JSON [`CertRecord`], DER (†) |
//! | `cert_der` | serial magnitude | DER of records stored before (†); no longer written |
//! | `by_fp` | SHA-256 (32 bytes) | serial magnitude |
//! | `by_email` | lower-cased address, `0x00`, kind code, notBefore (8 bytes, order-preserving), serial | empty |
//! | `dir_email_sha256` | SHA-256 of the lower-cased address (32 bytes) | the lower-cased address |
//! | `serials` | serial magnitude | empty: serials signed into certificates never stored (‡) |
//! | `revoked` | CA name, `0x00`, serial magnitude | empty: the revoked certificates of each CA |
//! | `compromised_keys` | [`KeyDigest`] (32 bytes) | serial magnitude of the certificate whose revocation for keyCompromise reported the key |
//! | `crls` | CA name | JSON [`CrlRecord`] |
//! | `audit` | sequence number (8 bytes BE) | encoded audit entry |
//! | `changes` | change number (8 bytes BE) | `0x01` (revoked), serial magnitude |
//! | `meta` | text key | text value |
//!
//! (†) Values written before the DER moved into `cert_meta` are the JSON alone (first byte `{`),
//! their DER in `cert_der`; both formats are read.
//!
//! (‡) With the keys of `cert_meta`, every serial ever used, so that none is used twice
//! ([`CertStore::retire_serials`]). Databases written before serials were checked at storing hold
//! the serial of every stored certificate here too.
//!
//! `dir_email_sha256` was kept by a directory thread subscribed to `by_email` before it was
//! written in the issuance transaction; [`SledEngine::catch_up_email_hashes`] completes it once
//! for such databases. `changes` did not exist either: [`SledEngine::feed_earlier_revocations`]
//! gives each earlier revocation its change once.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use sled::transaction::{abort, ConflictableTransactionError, Transactional};
use sled::{IVec, Tree};

use super::{tx_error, SledEngine};
use crate::store::{
    chained, check_compromised_arg, revised, AuditChain, Change, ChangeFeed, CheckedIssue, WarmStats,
};
use crate::{
    AuditRecord, CaId, CertKind, CertReader, CertRecord, CertState, CertStore, CrlRecord, EmailAddress,
    Error, Fingerprint, KeyDigest, Revocation, RevocationReason, Serial,
};

/// The `meta` key set once `dir_email_sha256` holds every address of `by_email`.
const META_HASH_INDEX: &str = "layout.email_sha256";
/// The `meta` key set once every revocation has its change.
const META_FEED: &str = "layout.changes";
/// The first byte of a `changes` value reporting a revocation.
const CHANGE_REVOKED: u8 = 0x01;

fn order_preserving(ts: DateTime<Utc>) -> [u8; 8] {
    ((ts.timestamp() as u64) ^ (1u64 << 63)).to_be_bytes()
}

fn email_prefix(email: &EmailAddress, kind: Option<CertKind>) -> Vec<u8> {
    let mut k = email.lookup_key().into_bytes();
    k.push(0);
    if let Some(kind) = kind {
        k.push(kind.code());
    }
    k
}

pub(super) fn email_key(rec: &CertRecord, email: &EmailAddress) -> Vec<u8> {
    let mut k = email_prefix(email, Some(rec.kind));
    k.extend_from_slice(&order_preserving(rec.not_before));
    k.extend_from_slice(rec.serial.as_bytes());
    k
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The lookup key at the start of a `by_email` key (up to the first 0x00).
fn lookup_key_of(by_email_key: &[u8]) -> Option<&[u8]> {
    let end = by_email_key.iter().position(|b| *b == 0)?;
    Some(&by_email_key[..end])
}
/// The first byte of a `cert_meta` value that holds the certificate's DER after its metadata:
/// `0x01`, the JSON's length (4 bytes, big-endian), the JSON, the DER. One value per certificate
/// is one insert (and one read inside sled's transaction) fewer per issuance than two, and one
/// read per fetch. Values written before this format are the JSON alone (`{`…), their DER in
/// `cert_der`; both are read.
const META_WITH_DER: u8 = 0x01;

/// A `cert_meta` value: the JSON of `rec` (its DER skipped by serde), then `der`, or the JSON
/// alone when `der` is `None` (the older format, for records whose DER is in `cert_der`).
fn encode_value(rec: &CertRecord, der: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    let json = serde_json::to_vec(rec).map_err(|e| Error::Corrupt(e.to_string()))?;
    let Some(der) = der else {
        return Ok(json);
    };
    let len =
        u32::try_from(json.len()).map_err(|_| Error::Corrupt("certificate metadata too long".into()))?;
    let mut v = Vec::with_capacity(5 + json.len() + der.len());
    v.push(META_WITH_DER);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&json);
    v.extend_from_slice(der);
    Ok(v)
}

fn encode_meta(rec: &CertRecord) -> Result<Vec<u8>, Error> {
    encode_value(rec, Some(&rec.der))
}

/// A `cert_meta` value's JSON, and its DER when stored with it.
fn split_meta(bytes: &[u8]) -> Result<(&[u8], Option<&[u8]>), Error> {
    match bytes.first() {
        Some(&META_WITH_DER) => {
            let len = bytes
                .get(1..5)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| Error::Corrupt("certificate metadata: truncated length".into()))?;
            let json = bytes
                .get(5..5 + len)
                .ok_or_else(|| Error::Corrupt("certificate metadata: truncated".into()))?;
            Ok((json, Some(&bytes[5 + len..])))
        }
        Some(b'{') => Ok((bytes, None)),
        _ => Err(Error::Corrupt("certificate metadata: unknown format".into())),
    }
}

/// The metadata of a `cert_meta` value (the DER left empty).
pub(super) fn decode_meta(bytes: &[u8]) -> Result<CertRecord, Error> {
    let (json, _) = split_meta(bytes)?;
    serde_json::from_slice(json).map_err(|e| Error::Corrupt(format!("certificate metadata: {e}")))
}

/// The status view of stored metadata: serde skips the other fields without building them.
fn decode_state(bytes: &[u8]) -> Result<CertState, Error> {
    let (json, _) = split_meta(bytes)?;
    serde_json::from_slice(json).map_err(|e| Error::Corrupt(format!("certificate metadata: {e}")))
}

pub(super) fn revoked_key(ca: CaId, serial: &Serial) -> Vec<u8> {
    let mut k = ca.name().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(serial.as_bytes());
    k
}

fn seq_of(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[8 - n..].copy_from_slice(&k[..n]);
    u64::from_be_bytes(b)
}

/// The last record of the `audit` tree.
pub(super) fn last_audit_of(audit: &Tree) -> Result<Option<AuditRecord>, Error> {
    Ok(audit.last()?.map(|(k, v)| AuditRecord { seq: seq_of(&k), bytes: v.to_vec() }))
}

/// The last position of the `changes` tree (0 when empty).
pub(super) fn last_change_of(changes: &Tree) -> Result<u64, Error> {
    Ok(changes.last()?.map(|(k, _)| seq_of(&k)).unwrap_or(0))
}

/// An audit record appended inside a transaction: refused if its number is taken.
fn put_audit(
    log: &sled::transaction::TransactionalTree,
    rec: &AuditRecord,
) -> Result<(), ConflictableTransactionError<Error>> {
    let k = rec.seq.to_be_bytes();
    if log.insert(&k, rec.bytes.as_slice())?.is_some() {
        return abort(Error::Inconsistent(format!("audit entry {} exists", rec.seq)));
    }
    Ok(())
}

impl SledEngine {
    /// (serial key, stored metadata) of an address's certificates of one kind, newest notBefore
    /// first.
    fn metas_by_email(
        &self,
        email: &EmailAddress,
        kind: CertKind,
    ) -> impl Iterator<Item = Result<(Vec<u8>, IVec), Error>> + '_ {
        let prefix = email_prefix(email, Some(kind));
        let skip = prefix.len() + 8; // key = prefix (address, 0x00, kind) | notBefore(8) | serial
        self.by_email.scan_prefix(prefix).rev().filter_map(move |r| {
            let read = || -> Result<Option<(Vec<u8>, IVec)>, Error> {
                let (k, _) = r?;
                let key = k.get(skip..).ok_or_else(|| Error::Corrupt("e-mail index key".into()))?.to_vec();
                Ok(self.cert_meta.get(&key)?.map(|v| (key, v)))
            };
            read().transpose()
        })
    }

    fn meta_by_key(&self, key: &[u8]) -> Result<Option<CertRecord>, Error> {
        self.cert_meta.get(key)?.map(|v| decode_meta(&v)).transpose()
    }

    fn full_by_key(&self, key: &[u8]) -> Result<Option<CertRecord>, Error> {
        let Some(v) = self.cert_meta.get(key)? else {
            return Ok(None);
        };
        let mut rec = decode_meta(&v)?;
        rec.der = self.der_of(key, &v, &rec.serial)?;
        Ok(Some(rec))
    }

    /// The DER of the certificate whose `cert_meta` value is `value`: from the value itself, or
    /// from `cert_der` for records stored in the older format.
    fn der_of(&self, key: &[u8], value: &[u8], serial: &Serial) -> Result<Vec<u8>, Error> {
        match split_meta(value)? {
            (_, Some(der)) => Ok(der.to_vec()),
            (_, None) => Ok(self
                .cert_der
                .get(key)?
                .ok_or_else(|| Error::Inconsistent(format!("no DER for {serial}")))?
                .to_vec()),
        }
    }

    /// The planted loss of a test build (cerdb's `planted-loss` feature): the revocation is
    /// answered as if it had been recorded — the record it would have written — but nothing is
    /// written, so nothing reaches the disk: what an acknowledgement before a skipped flush leaves
    /// after a crash. The crash loop must report it as lost.
    #[cfg(feature = "planted-loss")]
    fn planted_loss(&self, serial: &Serial, revocation: &Revocation) -> Result<CertRecord, Error> {
        let bytes = self.cert_meta.get(serial.as_bytes())?.ok_or_else(|| Error::NotFound(serial.clone()))?;
        let mut rec = decode_meta(&bytes)?;
        rec.revocation = Some(revised(serial, rec.revocation.as_ref(), revocation)?);
        tracing::warn!(serial = %serial, "planted loss: this revocation is acknowledged and not written");
        Ok(rec)
    }

    /// Adds every address of `by_email` missing from `dir_email_sha256`, once per database
    /// (databases written before the hashed index was part of the issuance transaction).
    pub(super) fn catch_up_email_hashes(&self) -> Result<(), Error> {
        if self.meta.get(META_HASH_INDEX)?.is_some() {
            return Ok(());
        }
        let mut last: Option<Vec<u8>> = None;
        for k in self.by_email.iter().keys() {
            let k = k?;
            let Some(lk) = lookup_key_of(&k) else { continue };
            if last.as_deref() == Some(lk) {
                continue;
            }
            let h = sha256(lk);
            if !self.email_hash.contains_key(h)? {
                self.fault()?;
                self.email_hash.insert(h, lk)?;
            }
            last = Some(lk.to_vec());
        }
        self.fault()?;
        self.meta.insert(META_HASH_INDEX, "written with the certificates")?;
        self.flush_db()
    }

    /// Gives every revocation recorded before the change feed existed its change, in the order of
    /// the `revoked` index, once per database.
    pub(super) fn feed_earlier_revocations(&self) -> Result<(), Error> {
        if self.meta.get(META_FEED)?.is_some() {
            return Ok(());
        }
        let _head = self.lock_audit();
        let mut seq = self.last_change.load(Ordering::SeqCst);
        if seq == 0 {
            // One atomic batch: a crash leaves every change or none.
            let mut batch = sled::Batch::default();
            for r in self.revoked.iter().keys() {
                let k = r?;
                let at = k
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| Error::Corrupt("revoked index key".into()))?;
                let serial = Serial::from_bytes(&k[at + 1..])
                    .map_err(|e| Error::Corrupt(format!("revoked index serial: {e}")))?;
                seq += 1;
                batch.insert(&seq.to_be_bytes(), change_value(&serial));
            }
            self.fault()?;
            self.changes.apply_batch(batch)?;
        }
        self.fault()?;
        self.meta.insert(META_FEED, "every revocation has its change")?;
        self.flush_db()?;
        self.last_change.store(seq, Ordering::SeqCst);
        Ok(())
    }

    /// Appends audit records on their own, under the audit lock.
    fn append_audit_locked(&self, chain: &dyn AuditChain) -> Result<(), Error> {
        let mut head = self.lock_audit();
        let records = chained(chain, head.as_ref())?;
        let Some(last) = records.last().cloned() else { return Ok(()) };
        let tree = &self.audit;
        if let [one] = records.as_slice() {
            // One entry: a single compare-and-swap from none is as atomic as a transaction, and
            // sled writes it without a batch manifest of its own, so the flush below makes one
            // write durable instead of two.
            self.fault()?;
            let k = one.seq.to_be_bytes();
            if tree.compare_and_swap(k, None as Option<&[u8]>, Some(one.bytes.as_slice()))?.is_err() {
                return Err(Error::Inconsistent(format!("audit entry {} exists", one.seq)));
            }
        } else {
            tree.transaction(|log| {
                for r in &records {
                    self.tx_fault()?;
                    put_audit(log, r)?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        }
        *head = Some(last);
        drop(head);
        self.flush_db()
    }
}

pub(super) fn change_value(serial: &Serial) -> Vec<u8> {
    let mut v = vec![CHANGE_REVOKED];
    v.extend_from_slice(serial.as_bytes());
    v
}

fn decode_change(k: &[u8], v: &[u8]) -> Result<Change, Error> {
    let seq = seq_of(k);
    match v.split_first() {
        Some((&CHANGE_REVOKED, serial)) => {
            let serial =
                Serial::from_bytes(serial).map_err(|e| Error::Corrupt(format!("change {seq}: {e}")))?;
            Ok(Change { seq, kind: crate::store::ChangeKind::Revoked(serial) })
        }
        _ => Err(Error::Corrupt(format!("change {seq}: unknown kind"))),
    }
}

impl ChangeFeed for SledEngine {
    fn last_change(&self) -> Result<u64, Error> {
        Ok(self.last_change.load(Ordering::SeqCst))
    }

    fn changes_since(&self, seq: u64) -> Result<Vec<Change>, Error> {
        self.changes
            .range(seq.saturating_add(1).to_be_bytes()..)
            .map(|r| {
                let (k, v) = r?;
                decode_change(&k, &v)
            })
            .collect()
    }
}

impl CertStore for SledEngine {
    fn check_issued<'a>(&self, certs: &'a [CertRecord]) -> Result<CheckedIssue<'a>, Error> {
        for rec in certs {
            if self.serials.contains_key(rec.serial.as_bytes())? {
                return Err(Error::SerialInUse(rec.serial.clone()));
            }
        }
        let encoded = certs.iter().map(encode_meta).collect::<Result<_, _>>()?;
        Ok(CheckedIssue { certs, encoded })
    }

    /// Under the audit lock (the records of a batch are numbered after the log's last record),
    /// without sled's transaction lock: see `batch.rs`.
    fn store_checked_unflushed(
        &self,
        checked: &CheckedIssue<'_>,
        audit: &dyn AuditChain,
    ) -> Result<(), Error> {
        let mut head = self.lock_audit();
        let records = chained(audit, head.as_ref())?;
        self.write_batch(checked.certs, &checked.encoded, &records)?;
        if let Some(last) = records.last() {
            *head = Some(last.clone());
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        self.flush_db()
    }

    fn retire_serials(&self, serials: &[Serial]) -> Result<(), Error> {
        // One batch: all of them or none.
        let mut batch = sled::Batch::default();
        for s in serials {
            self.fault()?;
            batch.insert(s.as_bytes(), &[] as &[u8]);
        }
        self.serials.apply_batch(batch)?;
        self.flush_db()
    }

    fn serial_used(&self, serial: &Serial) -> Result<bool, Error> {
        let key = serial.as_bytes();
        Ok(self.cert_meta.contains_key(key)? || self.serials.contains_key(key)?)
    }

    fn retired_serials(&self) -> Result<Vec<Serial>, Error> {
        self.serials
            .iter()
            .keys()
            .map(|k| {
                let k = k?;
                Serial::from_bytes(&k).map_err(|e| Error::Corrupt(format!("retired serial: {e}")))
            })
            .collect()
    }

    fn revoke(
        &self,
        serial: &Serial,
        revocation: Revocation,
        compromised: Option<&KeyDigest>,
        audit: &dyn AuditChain,
    ) -> Result<CertRecord, Error> {
        check_compromised_arg(&revocation, compromised)?;
        #[cfg(feature = "planted-loss")]
        if self.planted.swap(false, Ordering::SeqCst) {
            return self.planted_loss(serial, &revocation);
        }
        let mut head = self.lock_audit();
        let records = chained(audit, head.as_ref())?;
        let change = self.last_change.load(Ordering::SeqCst) + 1;
        let trees = (&self.cert_meta, &self.audit, &self.revoked, &self.compromised_keys, &self.changes);
        let rec = trees
            .transaction(|(meta, log, revoked, keys, changes)| {
                let Some(bytes) = meta.get(serial.as_bytes())? else {
                    return abort(Error::NotFound(serial.clone()));
                };
                let mut rec = decode_meta(&bytes).map_err(ConflictableTransactionError::Abort)?;
                rec.revocation = Some(
                    revised(serial, rec.revocation.as_ref(), &revocation)
                        .map_err(ConflictableTransactionError::Abort)?,
                );
                // The same format as before: the DER stays where it was.
                let (_, der) = split_meta(&bytes).map_err(ConflictableTransactionError::Abort)?;
                let enc = encode_value(&rec, der).map_err(ConflictableTransactionError::Abort)?;
                self.tx_fault()?;
                meta.insert(serial.as_bytes(), enc)?;
                self.tx_fault()?;
                revoked.insert(revoked_key(rec.issuer, serial), &[] as &[u8])?;
                if let Some(key) = compromised {
                    if keys.get(key.0)?.is_none() {
                        self.tx_fault()?;
                        keys.insert(&key.0, serial.as_bytes())?;
                    }
                }
                self.tx_fault()?;
                if changes.insert(&change.to_be_bytes(), change_value(serial))?.is_some() {
                    return abort(Error::Inconsistent(format!("change {change} exists")));
                }
                for a in &records {
                    self.tx_fault()?;
                    put_audit(log, a)?;
                }
                Ok(rec)
            })
            .map_err(tx_error)?;
        self.last_change.store(change, Ordering::SeqCst);
        if let Some(last) = records.last() {
            *head = Some(last.clone());
        }
        drop(head);
        self.flush_db()?;
        Ok(rec)
    }

    fn compromised_keys(&self) -> Result<Vec<(KeyDigest, Serial)>, Error> {
        self.compromised_keys
            .iter()
            .map(|r| {
                let (k, v) = r?;
                let digest = <[u8; 32]>::try_from(k.as_ref())
                    .map_err(|_| Error::Corrupt(format!("compromised key of {} bytes", k.len())))?;
                let serial = Serial::from_bytes(&v)
                    .map_err(|e| Error::Corrupt(format!("compromised key {}: {e}", hex::encode(digest))))?;
                Ok((KeyDigest(digest), serial))
            })
            .collect()
    }

    fn record_compromised(&self, keys: &[(KeyDigest, Serial)]) -> Result<(), Error> {
        // One transaction: all of them or none; an entry already there is kept.
        self.compromised_keys
            .transaction(|tree| {
                for (key, serial) in keys {
                    if tree.get(key.0)?.is_none() {
                        self.tx_fault()?;
                        tree.insert(&key.0, serial.as_bytes())?;
                    }
                }
                Ok(())
            })
            .map_err(tx_error)?;
        self.flush_db()
    }

    fn put_crl(&self, crl: &CrlRecord, audit: &dyn AuditChain) -> Result<(), Error> {
        let enc = serde_json::to_vec(crl).map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut head = self.lock_audit();
        let records = chained(audit, head.as_ref())?;
        (&self.crls, &self.audit)
            .transaction(|(crls, log)| {
                if let Some(prev) = crls.get(crl.ca.name())? {
                    let prev: CrlRecord = serde_json::from_slice(&prev)
                        .map_err(|e| ConflictableTransactionError::Abort(Error::Corrupt(e.to_string())))?;
                    if prev.number >= crl.number {
                        return abort(Error::Inconsistent(format!(
                            "CRL number {} of {} is not above the stored {}",
                            crl.number, crl.ca, prev.number
                        )));
                    }
                }
                self.tx_fault()?;
                crls.insert(crl.ca.name(), enc.as_slice())?;
                for a in &records {
                    self.tx_fault()?;
                    put_audit(log, a)?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        if let Some(last) = records.last() {
            *head = Some(last.clone());
        }
        drop(head);
        self.flush_db()
    }

    fn append_audit(&self, audit: &dyn AuditChain) -> Result<(), Error> {
        self.append_audit_locked(audit)
    }

    fn last_audit(&self) -> Result<Option<AuditRecord>, Error> {
        Ok(self.lock_audit().clone())
    }

    fn audit_records_from(&self, first: u64) -> Result<Vec<AuditRecord>, Error> {
        self.audit
            .range(first.to_be_bytes()..)
            .map(|r| {
                let (k, v) = r?;
                let seq: [u8; 8] =
                    k.as_ref().try_into().map_err(|_| Error::Corrupt("audit key length".into()))?;
                Ok(AuditRecord { seq: u64::from_be_bytes(seq), bytes: v.to_vec() })
            })
            .collect()
    }

    fn audit_records(&self) -> Box<dyn Iterator<Item = Result<AuditRecord, Error>> + '_> {
        Box::new(self.audit.iter().map(|r| {
            let (k, v) = r?;
            Ok(AuditRecord { seq: seq_of(&k), bytes: v.to_vec() })
        }))
    }

    fn meta_get(&self, key: &str) -> Result<Option<String>, Error> {
        self.meta
            .get(key)?
            .map(|v| String::from_utf8(v.to_vec()).map_err(|e| Error::Corrupt(e.to_string())))
            .transpose()
    }

    fn meta_put(&self, key: &str, value: &str) -> Result<(), Error> {
        self.fault()?;
        self.meta.insert(key, value.as_bytes())?;
        self.flush_db()
    }

    fn meta_replace(&self, key: &str, old: &str, new: &str) -> Result<bool, Error> {
        self.fault()?;
        let done = self.meta.compare_and_swap(key, Some(old.as_bytes()), Some(new.as_bytes()))?.is_ok();
        if done {
            self.flush_db()?;
        }
        Ok(done)
    }

    fn meta_insert(&self, key: &str, value: &str) -> Result<bool, Error> {
        self.fault()?;
        let done = self.meta.compare_and_swap(key, None as Option<&[u8]>, Some(value.as_bytes()))?.is_ok();
        if done {
            self.flush_db()?;
        }
        Ok(done)
    }

    fn list(&self, email: Option<&EmailAddress>) -> Result<Vec<CertRecord>, Error> {
        let mut out = match email {
            Some(e) => self.by_email(e, None)?,
            None => self
                .cert_meta
                .iter()
                .map(|r| r.map_err(Error::from).and_then(|(_, v)| decode_meta(&v)))
                .collect::<Result<Vec<_>, _>>()?,
        };
        out.sort_by(|a, b| a.issued_at.cmp(&b.issued_at).then(a.serial.cmp(&b.serial)));
        Ok(out)
    }

    fn revoked_by(&self, ca: CaId) -> Result<Vec<CertRecord>, Error> {
        let mut prefix = ca.name().as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for r in self.revoked.scan_prefix(&prefix) {
            let (k, _) = r?;
            let rec = self
                .meta_by_key(&k[prefix.len()..])?
                .ok_or_else(|| Error::Inconsistent("revoked index names a missing certificate".into()))?;
            out.push(rec);
        }
        Ok(out)
    }

    fn count(&self) -> Result<u64, Error> {
        Ok(self.cert_meta.len() as u64)
    }

    /// Reads the trees that lookups use into sled's page cache — the e-mail, hashed-address and
    /// fingerprint indexes, then the metadata with the DER (and the DER of records in the older
    /// format) — so that the first lookups after opening a large database do not each load and
    /// decode pages from the file (at a million certificates that loading, and the kernel zeroing
    /// the memory it takes, were a tenth of a lookup's time). Stops once the keys and values read
    /// reach half the page cache: sled keeps pages decoded, bigger than what they hold, and
    /// reading more would only evict the first ones.
    fn warm_cache(&self) -> Result<WarmStats, Error> {
        let budget = self.cache_bytes / 2;
        let mut stats = WarmStats { entries: 0, bytes: 0, complete: false };
        for tree in [&self.by_email, &self.by_fp, &self.cert_meta, &self.cert_der] {
            for r in tree.iter() {
                let (k, v) = r?;
                stats.entries += 1;
                stats.bytes += (k.len() + v.len()) as u64;
                if stats.bytes >= budget {
                    return Ok(stats);
                }
            }
        }
        stats.complete = true;
        Ok(stats)
    }

    fn check_consistency(&self) -> Result<(), Error> {
        if !self.pending.is_empty() {
            return Err(Error::Inconsistent(format!(
                "{} interrupted batches are still to be rolled back",
                self.pending.len()
            )));
        }
        let mut emails = 0usize;
        let mut der_apart = 0usize;
        let mut revoked = std::collections::HashSet::new();
        for r in self.cert_meta.iter() {
            let (k, v) = r?;
            let rec = decode_meta(&v)?;
            let der = match split_meta(&v)?.1 {
                Some(der) => der.to_vec(),
                None => {
                    der_apart += 1;
                    self.der_of(&k, &v, &rec.serial)?
                }
            };
            if Fingerprint::of(&der) != rec.fingerprint {
                return Err(Error::Inconsistent(format!(
                    "fingerprint of {} does not match its DER",
                    rec.serial
                )));
            }
            if self.by_fp.get(rec.fingerprint.0)?.as_deref() != Some(&k[..]) {
                return Err(Error::Inconsistent(format!("fingerprint index misses {}", rec.serial)));
            }
            if rec.revocation.is_some() != self.revoked.contains_key(revoked_key(rec.issuer, &rec.serial))? {
                return Err(Error::Inconsistent(format!("revoked index disagrees about {}", rec.serial)));
            }
            if rec.revocation.is_some() {
                revoked.insert(rec.serial.clone());
            }
            if let Some(e) = &rec.email {
                emails += 1;
                if self.by_email.get(email_key(&rec, e))?.is_none() {
                    return Err(Error::Inconsistent(format!("e-mail index misses {}", rec.serial)));
                }
                let lk = e.lookup_key();
                if self.email_hash.get(sha256(lk.as_bytes()))?.as_deref() != Some(lk.as_bytes()) {
                    return Err(Error::Inconsistent(format!("hashed-address index misses {}", rec.serial)));
                }
            }
        }
        if self.by_email.len() != emails {
            return Err(Error::Inconsistent(format!(
                "e-mail index has {} entries for {emails} certificates",
                self.by_email.len()
            )));
        }
        if self.by_fp.len() != self.cert_meta.len() || self.cert_der.len() != der_apart {
            return Err(Error::Inconsistent("index sizes differ from the certificate count".into()));
        }
        for (key, serial) in self.compromised_keys()? {
            let reported = self.meta_by_key(serial.as_bytes())?.and_then(|rec| rec.revocation);
            if reported.map(|r| r.reason) != Some(RevocationReason::KeyCompromise) {
                return Err(Error::Inconsistent(format!(
                    "compromised key {key} names {serial}, which is not revoked for keyCompromise"
                )));
            }
        }
        for (i, r) in self.audit.iter().keys().enumerate() {
            let seq = seq_of(&r?);
            if seq != i as u64 + 1 {
                return Err(Error::Inconsistent(format!("audit log has a gap before entry {seq}")));
            }
        }
        let mut changed = std::collections::HashSet::new();
        for (i, r) in self.changes.iter().enumerate() {
            let (k, v) = r?;
            let change = decode_change(&k, &v)?;
            if change.seq != i as u64 + 1 {
                return Err(Error::Inconsistent(format!(
                    "change feed has a gap before change {}",
                    change.seq
                )));
            }
            let crate::store::ChangeKind::Revoked(serial) = change.kind;
            if !revoked.contains(&serial) {
                return Err(Error::Inconsistent(format!(
                    "change {} reports {serial}, which is not revoked",
                    change.seq
                )));
            }
            changed.insert(serial);
        }
        if let Some(missing) = revoked.difference(&changed).next() {
            return Err(Error::Inconsistent(format!("the revocation of {missing} has no change")));
        }
        if self.last_change.load(Ordering::SeqCst) != self.changes.len() as u64 {
            return Err(Error::Inconsistent("the change feed's position differs from its length".into()));
        }
        Ok(())
    }
}

impl CertReader for SledEngine {
    fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, Error> {
        self.full_by_key(serial.as_bytes())
    }

    fn get_meta(&self, serial: &Serial) -> Result<Option<CertRecord>, Error> {
        self.meta_by_key(serial.as_bytes())
    }

    fn by_fingerprint(&self, fp: &Fingerprint) -> Result<Option<CertRecord>, Error> {
        match self.by_fp.get(fp.0)? {
            Some(serial) => self.full_by_key(&serial),
            None => Ok(None),
        }
    }

    fn by_email(&self, email: &EmailAddress, kind: Option<CertKind>) -> Result<Vec<CertRecord>, Error> {
        let prefix = email_prefix(email, kind);
        let mut out = Vec::new();
        for r in self.by_email.scan_prefix(&prefix).rev() {
            let (k, _) = r?;
            // key = prefix-without-kind (address, 0x00) | kind | notBefore(8) | serial
            let base = email.lookup_key().len() + 1;
            let serial = k.get(base + 1 + 8..).ok_or_else(|| Error::Corrupt("e-mail index key".into()))?;
            if let Some(rec) = self.meta_by_key(serial)? {
                out.push(rec);
            }
        }
        if kind.is_none() {
            out.sort_by_key(|r| std::cmp::Reverse(r.not_before));
        }
        Ok(out)
    }

    fn email_by_hash(&self, hash: &[u8; 32]) -> Result<Option<EmailAddress>, Error> {
        let Some(v) = self.email_hash.get(hash)? else { return Ok(None) };
        let text = std::str::from_utf8(&v)
            .map_err(|_| Error::Corrupt("hashed-address index holds a non-UTF-8 address".into()))?;
        let email =
            text.parse::<EmailAddress>().map_err(|e| Error::Corrupt(format!("hashed-address index: {e}")))?;
        Ok(Some(email))
    }

    fn state(&self, serial: &Serial) -> Result<Option<CertState>, Error> {
        self.cert_meta.get(serial.as_bytes())?.map(|v| decode_state(&v)).transpose()
    }

    fn states_by_email(
        &self,
        email: &EmailAddress,
        kind: CertKind,
    ) -> Result<Vec<(Serial, CertState)>, Error> {
        self.metas_by_email(email, kind)
            .map(|r| {
                let (key, v) = r?;
                let serial = Serial::from_bytes(&key)
                    .map_err(|e| Error::Corrupt(format!("e-mail index serial: {e}")))?;
                Ok((serial, decode_state(&v)?))
            })
            .collect()
    }

    fn newest_valid(
        &self,
        email: &EmailAddress,
        kind: CertKind,
        now: DateTime<Utc>,
    ) -> Result<Option<CertRecord>, Error> {
        // As the trait's default, but each stored metadata is read once: its status view
        // first, the whole record from the same bytes for the one returned.
        for r in self.metas_by_email(email, kind) {
            let (key, v) = r?;
            if decode_state(&v)?.status_at(now) == crate::CertStatus::Valid {
                let mut rec = decode_meta(&v)?;
                rec.der = self.der_of(&key, &v, &rec.serial)?;
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    fn crl(&self, ca: CaId) -> Result<Option<CrlRecord>, Error> {
        self.crls
            .get(ca.name())?
            .map(|v| serde_json::from_slice(&v).map_err(|e| Error::Corrupt(format!("CRL record: {e}"))))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CertDb;
    use std::sync::Arc;

    fn engine_and_handle(path: &std::path::Path) -> (Arc<SledEngine>, CertDb) {
        let engine = Arc::new(SledEngine::open(path, CertDb::DEFAULT_CACHE_BYTES, None).expect("open"));
        (engine.clone(), CertDb::from_engine(engine))
    }
    use crate::{RevocationReason, Usage};
    use chrono::Duration;

    fn rec(serial: u8, email: &str, kind: CertKind, nb: DateTime<Utc>) -> CertRecord {
        let der = vec![serial, 1, 2, 3];
        CertRecord {
            serial: Serial::from_bytes(&[serial]).expect("serial"),
            fingerprint: Fingerprint::of(&der),
            kind,
            email: Some(email.parse().expect("email")),
            subject: format!("CN={email}"),
            issuer: CaId::Issuing,
            not_before: nb,
            not_after: nb + Duration::days(10),
            issued_at: nb,
            key_type: "p256".into(),
            escrow_key: None,
            revocation: None,
            der,
        }
    }

    fn audit(seq: u64) -> AuditRecord {
        AuditRecord { seq, bytes: format!("entry {seq}").into_bytes() }
    }

    #[test]
    fn store_index_revoke_scenario() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = CertDb::open(dir.path().join("db")).expect("open");
        let t0 = Utc::now() - Duration::days(1);
        let a = rec(1, "Alice@Example.com", CertKind::Encryption, t0);
        let b = rec(2, "alice@example.com", CertKind::Encryption, t0 + Duration::hours(1));
        let c = rec(3, "alice@example.com", CertKind::Signing, t0);
        db.store_issued(&[a.clone(), b.clone(), c.clone()], &[audit(1)]).expect("store");
        db.check_consistency().expect("consistent");

        let e: EmailAddress = "ALICE@example.COM".parse().expect("email");
        let enc = db.by_email(&e, Some(CertKind::Encryption)).expect("lookup");
        assert_eq!(
            enc.iter().map(|r| r.serial.clone()).collect::<Vec<_>>(),
            vec![b.serial.clone(), a.serial.clone()]
        );
        let newest = db.newest_valid(&e, Usage::Encryption.into(), Utc::now()).expect("q").expect("some");
        assert_eq!(newest.serial, b.serial);
        assert_eq!(newest.der, b.der);
        assert_eq!(db.by_email(&e, None).expect("all").len(), 3);
        assert_eq!(db.by_fingerprint(&c.fingerprint).expect("fp").expect("some").serial, c.serial);

        // The same serial again is refused and nothing changes.
        let dup = rec(1, "bob@example.com", CertKind::Signing, t0);
        let mut dup = dup;
        dup.der = vec![9, 9];
        dup.fingerprint = Fingerprint::of(&dup.der);
        assert!(matches!(db.store_issued(&[dup], &[audit(2)]), Err(Error::SerialInUse(_))));
        assert_eq!(db.count().expect("count"), 3);

        let rev = Revocation { at: Utc::now(), reason: RevocationReason::KeyCompromise };
        let key = KeyDigest::of(b"the key of b");
        let reported = |key: &KeyDigest| {
            let all = db.compromised_keys().expect("read");
            all.into_iter().find(|(k, _)| k == key).map(|(_, s)| s)
        };
        assert_eq!(reported(&key), None);
        // A key digest goes with keyCompromise and only with it.
        for (r, k) in
            [(rev.clone(), None), (Revocation { reason: RevocationReason::Superseded, ..rev }, Some(&key))]
        {
            assert!(matches!(db.revoke(&b.serial, r, k, &audit(2)), Err(Error::Inconsistent(_))));
        }
        assert_eq!(db.get_meta(&b.serial).expect("meta").expect("some").revocation, None);
        db.revoke(&b.serial, rev.clone(), Some(&key), &audit(2)).expect("revoke");
        assert_eq!(reported(&key), Some(b.serial.clone()));
        let again = db.revoke(&b.serial, rev.clone(), Some(&key), &audit(3));
        assert!(matches!(again, Err(Error::AlreadyRevoked { .. })));
        let superseded = Revocation { reason: RevocationReason::Superseded, ..rev.clone() };
        let again = db.revoke(&b.serial, superseded, None, &audit(3));
        assert!(matches!(again, Err(Error::AlreadyRevoked { reason: RevocationReason::KeyCompromise, .. })));
        let newest = db.newest_valid(&e, CertKind::Encryption, Utc::now()).expect("q").expect("some");
        assert_eq!(newest.serial, a.serial);
        assert_eq!(db.revoked_by(CaId::Issuing).expect("revoked").len(), 1);
        db.check_consistency().expect("consistent");
        let missing = Serial::from_bytes(&[77]).expect("serial");
        assert!(matches!(db.revoke(&missing, rev.clone(), Some(&key), &audit(3)), Err(Error::NotFound(_))));

        // A second certificate with the same key, revoked for keyCompromise: the first report stays.
        db.revoke(&a.serial, rev.clone(), Some(&key), &audit(3)).expect("revoke a");
        assert_eq!(reported(&key), Some(b.serial.clone()));
        // Recording afterwards (for revocations made before keys were recorded) keeps it too.
        let other = KeyDigest::of(b"the key of a");
        db.record_compromised(&[(key, a.serial.clone()), (other, a.serial.clone())]).expect("record");
        assert_eq!(reported(&key), Some(b.serial.clone()));
        assert_eq!(reported(&other), Some(a.serial.clone()));
        db.check_consistency().expect("consistent");
        // Revoked as superseded, then found compromised: the reason changes, the time stays, the
        // key is recorded; nothing else changes a revocation.
        let d = rec(4, "dave@example.com", CertKind::Signing, t0);
        db.store_issued(std::slice::from_ref(&d), &[audit(4)]).expect("store d");
        let first = Revocation { at: t0 + Duration::hours(2), reason: RevocationReason::Superseded };
        db.revoke(&d.serial, first.clone(), None, &audit(5)).expect("superseded");
        let d_key = KeyDigest::of(b"the key of d");
        let later = Revocation { at: t0 + Duration::hours(5), reason: RevocationReason::KeyCompromise };
        let changed = db.revoke(&d.serial, later.clone(), Some(&d_key), &audit(6)).expect("keyCompromise");
        let want = Some(Revocation { at: first.at, reason: RevocationReason::KeyCompromise });
        assert_eq!(changed.revocation, want);
        assert_eq!(db.get_meta(&d.serial).expect("meta").expect("some").revocation, want);
        assert_eq!(reported(&d_key), Some(d.serial.clone()));
        for (r, k) in [(later, Some(&d_key)), (first, None)] {
            let again = db.revoke(&d.serial, r, k, &audit(7));
            assert!(matches!(
                again,
                Err(Error::AlreadyRevoked { reason: RevocationReason::KeyCompromise, .. })
            ));
        }
        assert_eq!(db.revoked_by(CaId::Issuing).expect("revoked").len(), 3);
        db.check_consistency().expect("consistent");

        // An entry naming a certificate not revoked for keyCompromise is an inconsistency.
        db.record_compromised(&[(KeyDigest::of(b"c"), c.serial.clone())]).expect("record");
        assert!(
            matches!(db.check_consistency(), Err(Error::Inconsistent(m)) if m.contains("not revoked for keyCompromise"))
        );
    }

    #[test]
    fn warming_reads_every_lookup_tree_within_half_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = Utc::now() - Duration::days(1);
        let certs: Vec<CertRecord> =
            (1..=40u8).map(|i| rec(i, &format!("user{i}@example.com"), CertKind::Encryption, t0)).collect();
        // Two databases (no reopening: sled may hold its lock for a moment after a drop).
        let db = CertDb::open(dir.path().join("default")).expect("open");
        db.store_issued(&certs, &[audit(1)]).expect("store");
        // Three trees of 40 entries each: e-mail index, fingerprints, metadata with DER.
        let all = db.warm_cache().expect("warm");
        assert_eq!((all.entries, all.complete), (120, true), "{all:?}");
        assert!(all.bytes > 40 * 32, "{all:?}");

        // A page cache of 2,000 bytes: the reading stops at 1,000.
        let small = CertDb::open_with_cache(dir.path().join("small"), 2_000).expect("open small");
        small.store_issued(&certs, &[audit(1)]).expect("store");
        let part = small.warm_cache().expect("warm");
        assert!(!part.complete && part.entries < 120 && (1_000..1_200).contains(&part.bytes), "{part:?}");
        // Lookups answer as before.
        let e: EmailAddress = "user7@example.com".parse().expect("email");
        assert_eq!(
            small.newest_valid(&e, CertKind::Encryption, Utc::now()).expect("q").expect("some").der,
            certs[6].der
        );
    }

    #[test]
    fn records_stored_with_their_der_apart_are_still_read_revoked_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, db) = engine_and_handle(&dir.path().join("db"));
        let t0 = Utc::now() - Duration::days(1);
        let old = rec(1, "old@example.com", CertKind::Encryption, t0);
        let new = rec(2, "new@example.com", CertKind::Encryption, t0);
        db.store_issued(&[old.clone(), new.clone()], &[audit(1)]).expect("store");
        // One value per certificate now: nothing in `cert_der`.
        assert_eq!((engine.cert_meta.len(), engine.cert_der.len()), (2, 0));
        // `old` as a database written before: the JSON alone, the DER in `cert_der`.
        let key = old.serial.as_bytes();
        engine.cert_meta.insert(key, serde_json::to_vec(&old).expect("json")).expect("rewrite");
        engine.cert_der.insert(key, old.der.as_slice()).expect("der");
        db.check_consistency().expect("consistent");

        let e: EmailAddress = "old@example.com".parse().expect("email");
        assert_eq!(db.get(&old.serial).expect("get").expect("some").der, old.der);
        assert_eq!(db.by_fingerprint(&old.fingerprint).expect("fp").expect("some").der, old.der);
        assert_eq!(
            db.newest_valid(&e, CertKind::Encryption, Utc::now()).expect("q").expect("some").der,
            old.der
        );
        assert_eq!(db.get(&new.serial).expect("get").expect("some").der, new.der);
        assert_eq!(db.get_meta(&new.serial).expect("meta").expect("some").der, Vec::<u8>::new());

        // A revocation rewrites each value in its own format.
        let rev = Revocation { at: Utc::now(), reason: RevocationReason::Superseded };
        for (i, r) in [&old, &new].into_iter().enumerate() {
            db.revoke(&r.serial, rev.clone(), None, &audit(2 + i as u64)).expect("revoke");
            let got = db.get(&r.serial).expect("get").expect("some");
            assert_eq!((got.der, got.revocation), (r.der.clone(), Some(rev.clone())));
        }
        assert_eq!(engine.cert_meta.get(key).expect("read").expect("some").first(), Some(&b'{'));
        assert_eq!(
            engine.cert_meta.get(new.serial.as_bytes()).expect("read").expect("some")[0],
            META_WITH_DER
        );
        db.check_consistency().expect("consistent after revocations");
    }

    #[test]
    fn damaged_metadata_values_are_errors_not_panics() {
        let good = encode_meta(&rec(3, "x@example.com", CertKind::Signing, Utc::now())).expect("encode");
        let mut unknown = good.clone();
        unknown[0] = 0x02;
        let mut long = good.clone();
        long[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        for bad in [&[][..], &good[..3], &good[..20], &unknown[..], &long[..], b"{not json"] {
            assert!(matches!(decode_meta(bad), Err(Error::Corrupt(_))), "{bad:?}");
            assert!(matches!(decode_state(bad), Err(Error::Corrupt(_))), "{bad:?}");
        }
        assert!(decode_meta(&good).is_ok());
    }

    #[test]
    fn damaged_compromised_key_entries_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, db) = engine_and_handle(&dir.path().join("db"));
        let key = [7u8; 32];
        for (k, v, want) in [
            (&key[..], &[][..], "serial number zero"),
            (&key[..], &[0u8, 0][..], "serial number zero"),
            (&key[..], &[0x55; 40][..], "octets"),
            (&key[..31], &[1][..], "31 bytes"),
            (&[][..], &[1][..], "0 bytes"),
        ] {
            engine.compromised_keys.clear().expect("clear");
            engine.compromised_keys.insert(k, v).expect("insert");
            match db.compromised_keys() {
                Err(Error::Corrupt(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{k:?} -> {v:?}: {other:?}"),
            }
            assert!(matches!(db.check_consistency(), Err(Error::Corrupt(_))));
        }
    }

    #[test]
    fn a_database_held_by_another_handle_is_locked_and_one_just_dropped_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let held = CertDb::open(&path).expect("open");
        let start = std::time::Instant::now();
        let second = CertDb::open(&path);
        assert!(matches!(second, Err(Error::Locked(_))), "{:?}", second.err());
        assert!(start.elapsed() >= CertDb::LOCK_WAIT, "waited for the lock first");
        drop(held);
        for i in 0..20 {
            let db = CertDb::open(&path).unwrap_or_else(|e| panic!("reopen {i}: {e}"));
            db.meta_put("n", &i.to_string()).expect("write");
        }
        assert_eq!(CertDb::open(&path).expect("open").meta_get("n").expect("read").as_deref(), Some("19"));
    }

    #[test]
    fn a_serial_stored_or_retired_is_refused_and_the_refused_batch_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = CertDb::open(dir.path().join("db")).expect("open");
        let t0 = Utc::now();
        let first = rec(5, "a@example.com", CertKind::Signing, t0);
        db.store_issued(std::slice::from_ref(&first), &[audit(1)]).expect("store");
        assert!(db.serial_used(&first.serial).expect("read"));

        // The same serial again, beside a fresh one: refused in the transaction, nothing stored.
        let mut again = rec(5, "b@example.com", CertKind::Encryption, t0);
        again.der.push(9);
        again.fingerprint = Fingerprint::of(&again.der);
        let fresh = rec(6, "b@example.com", CertKind::Signing, t0);
        let refused = db.store_issued(&[fresh.clone(), again], &[audit(2), audit(3)]);
        assert!(matches!(refused, Err(Error::SerialInUse(ref s)) if *s == first.serial), "{refused:?}");
        // Twice within one batch.
        let twice = db.store_issued(&[fresh.clone(), fresh.clone()], &[audit(2), audit(3)]);
        assert!(matches!(twice, Err(Error::SerialInUse(_))), "{twice:?}");
        assert_eq!(db.count().expect("count"), 1);
        assert!(db.get(&fresh.serial).expect("read").is_none());
        assert!(db.last_audit().expect("audit").is_some_and(|a| a.seq == 1));
        assert!(!db.serial_used(&fresh.serial).expect("read"));
        db.check_consistency().expect("consistent");

        // A retired serial (signed into a certificate never stored) is refused as well.
        db.retire_serials(std::slice::from_ref(&fresh.serial)).expect("retire");
        assert!(db.serial_used(&fresh.serial).expect("read"));
        let retired = db.store_issued(std::slice::from_ref(&fresh), &[audit(2)]);
        assert!(matches!(retired, Err(Error::SerialInUse(_))), "{retired:?}");
        assert_eq!(db.count().expect("count"), 1);
        db.check_consistency().expect("consistent");
    }
}
