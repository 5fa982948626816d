//! Certificates, their indexes, revocations, CRLs, the audit log and the change feed in
//! PostgreSQL.
//!
//! | table | key | what |
//! |---|---|---|
//! | `certs` | serial magnitude | JSON [`CertRecord`] without the DER (`meta`), the DER, and the columns the indexes need: fingerprint (unique), address lookup key, kind code, notBefore, issuer, revoked |
//! | `email_hashes` | SHA-256 of the address's lookup key | the lookup key |
//! | `retired_serials` | serial magnitude | serials signed into certificates never stored |
//! | `compromised_keys` | [`KeyDigest`] | serial of the certificate whose revocation for keyCompromise reported the key |
//! | `crls` | CA name | JSON [`CrlRecord`] |
//! | `audit` | sequence number | encoded audit entry |
//! | `changes` | change number | kind (1: revoked) and serial |
//! | `chain_head` | (one row) | the change feed's last number; its row lock serialises every append to the audit log and the feed |
//! | `ca_settings` | text key | text value |
//!
//! Every write that appends to the audit log first locks `chain_head` and reads the log's last
//! record there ([`lock_head`]): the [`AuditChain`] continues that record, and a second writer —
//! in this process or another — waits for the commit and then continues the first one's records.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use postgres::{Row, Transaction};

use super::reads::{Key, Query};
use super::{off_runtime, to_i64, to_u64, PgEngine, PipelinedReads};
use crate::store::{
    chained, check_compromised_arg, revised, AuditChain, Change, ChangeFeed, CheckedIssue, WarmStats,
};
use crate::{AsyncReads, ReadFuture};
use crate::{
    AuditRecord, CaId, CertKind, CertReader, CertRecord, CertState, CertStore, CrlRecord, EmailAddress,
    Error, Fingerprint, KeyDigest, Revocation, RevocationReason, Serial,
};

/// The `changes.kind` of a revocation.
pub(super) const CHANGE_REVOKED: i16 = 1;

/// How many audit records [`CertStore::audit_records`] reads per query.
const AUDIT_PAGE: i64 = 1000;

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

fn encode_meta(rec: &CertRecord) -> Result<String, Error> {
    serde_json::to_string(rec).map_err(|e| Error::Corrupt(e.to_string()))
}

fn decode_meta(meta: &str) -> Result<CertRecord, Error> {
    serde_json::from_str(meta).map_err(|e| corrupt("certificate metadata", e))
}

fn decode_state(meta: &str) -> Result<CertState, Error> {
    serde_json::from_str(meta).map_err(|e| corrupt("certificate metadata", e))
}

fn serial_of(bytes: &[u8], what: &str) -> Result<Serial, Error> {
    Serial::from_bytes(bytes).map_err(|e| corrupt(what, e))
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

fn audit_record(seq: i64, entry: Vec<u8>) -> Result<AuditRecord, Error> {
    Ok(AuditRecord { seq: to_u64(seq, "audit entry")?, bytes: entry })
}

/// Locks `chain_head` for the rest of `tx` and reads the audit log's last record and the change
/// feed's last number there.
///
/// Two statements, not one: under READ COMMITTED a statement that waited for the row lock sees
/// the locked row's newest version but, everywhere else, the snapshot it took before waiting —
/// a join would miss the audit records the previous holder committed. The second statement takes
/// its snapshot after the lock is held.
fn lock_head(tx: &mut Transaction<'_>) -> Result<(Option<AuditRecord>, i64), Error> {
    let last_change: i64 = tx.query_one("SELECT last_change FROM chain_head FOR UPDATE", &[])?.get(0);
    let last = match tx.query_opt("SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1", &[])? {
        Some(row) => Some(audit_record(row.get(0), row.get(1))?),
        None => None,
    };
    Ok((last, last_change))
}

impl PgEngine {
    /// Appends `records` (numbered after the last record read by [`lock_head`]) in `tx`.
    fn put_audit(&self, tx: &mut Transaction<'_>, records: &[AuditRecord]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let seqs = records.iter().map(|r| to_i64(r.seq, "audit entry")).collect::<Result<Vec<_>, _>>()?;
        let entries: Vec<&[u8]> = records.iter().map(|r| r.bytes.as_slice()).collect();
        self.fault()?;
        match tx.execute(
            "INSERT INTO audit (seq, entry) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
            &[&seqs, &entries],
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(Error::Inconsistent(format!("audit entry {} exists", records[0].seq)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The metadata (and, with `der`, the DER) of the certificates `sql` selects as `meta` (and
    /// `der`), in the order it gives.
    fn records(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        der: bool,
    ) -> Result<Vec<CertRecord>, Error> {
        self.conn()?
            .query(sql, params)?
            .into_iter()
            .map(|row| {
                let mut rec = decode_meta(row.get(0))?;
                if der {
                    rec.der = row.get(1);
                }
                Ok(rec)
            })
            .collect()
    }

    fn one_record(&self, sql: &str, key: &[u8], der: bool) -> Result<Option<CertRecord>, Error> {
        Ok(self.records(sql, &[&key], der)?.pop())
    }

    /// Runs `write` in a transaction that first locks the chain head and continues `audit`
    /// there: `write` gets the transaction and the last change number, and the audit records
    /// are appended after it; then commit and the flush point.
    fn chained_write<T>(
        &self,
        audit: &dyn AuditChain,
        write: impl FnOnce(&mut Transaction<'_>, i64) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let (last, last_change) = lock_head(&mut tx)?;
        let records = chained(audit, last.as_ref())?;
        let out = write(&mut tx, last_change)?;
        self.put_audit(&mut tx, &records)?;
        tx.commit()?;
        Ok(out)
    }
}

impl ChangeFeed for PgEngine {
    fn last_change(&self) -> Result<u64, Error> {
        off_runtime(|| last_change_of(&self.conn()?.query_one(LAST_CHANGE, &[])?))
    }

    fn changes_since(&self, seq: u64) -> Result<Vec<Change>, Error> {
        off_runtime(|| {
            let after = i64::try_from(seq).unwrap_or(i64::MAX);
            self.conn()?
                .query("SELECT seq, kind, serial FROM changes WHERE seq > $1 ORDER BY seq", &[&after])?
                .into_iter()
                .map(|row| {
                    let seq = to_u64(row.get(0), "change")?;
                    match row.get::<_, i16>(1) {
                        CHANGE_REVOKED => Ok(Change {
                            seq,
                            kind: crate::store::ChangeKind::Revoked(serial_of(row.get(2), "change serial")?),
                        }),
                        k => Err(Error::Corrupt(format!("change {seq}: unknown kind {k}"))),
                    }
                })
                .collect()
        })
    }
}

impl CertStore for PgEngine {
    fn check_issued<'a>(&self, certs: &'a [CertRecord]) -> Result<CheckedIssue<'a>, Error> {
        off_runtime(|| {
            let serials: Vec<&[u8]> = certs.iter().map(|r| r.serial.as_bytes()).collect();
            let retired = self
                .conn()?
                .query("SELECT serial FROM retired_serials WHERE serial = ANY($1) LIMIT 1", &[&serials])?;
            if let Some(row) = retired.first() {
                return Err(Error::SerialInUse(serial_of(row.get(0), "retired serial")?));
            }
            let encoded =
                certs.iter().map(|r| encode_meta(r).map(String::into_bytes)).collect::<Result<_, _>>()?;
            Ok(CheckedIssue { certs, encoded })
        })
    }

    /// One transaction under the chain head's lock: the certificates (a serial stored already,
    /// retired, or twice in the batch is [`Error::SerialInUse`] and nothing is written), their
    /// hashed addresses, the audit records. Durable on return: the commit is synchronous.
    fn store_checked_unflushed(
        &self,
        checked: &CheckedIssue<'_>,
        audit: &dyn AuditChain,
    ) -> Result<(), Error> {
        off_runtime(|| {
            let certs = checked.certs;
            let mut seen = HashSet::new();
            if let Some(twice) = certs.iter().find(|r| !seen.insert(&r.serial)) {
                return Err(Error::SerialInUse(twice.serial.clone()));
            }
            let serials: Vec<&[u8]> = certs.iter().map(|r| r.serial.as_bytes()).collect();
            let fps: Vec<&[u8]> = certs.iter().map(|r| &r.fingerprint.0[..]).collect();
            let keys: Vec<Option<String>> =
                certs.iter().map(|r| r.email.as_ref().map(EmailAddress::lookup_key)).collect();
            let kinds: Vec<i16> = certs.iter().map(|r| i16::from(r.kind.code())).collect();
            let not_before: Vec<DateTime<Utc>> = certs.iter().map(|r| r.not_before).collect();
            let issuers: Vec<&str> = certs.iter().map(|r| r.issuer.name()).collect();
            let revoked: Vec<bool> = certs.iter().map(|r| r.revocation.is_some()).collect();
            let metas = checked
                .encoded
                .iter()
                .map(|m| std::str::from_utf8(m).map_err(|e| corrupt("encoded metadata", e)))
                .collect::<Result<Vec<_>, _>>()?;
            let ders: Vec<&[u8]> = certs.iter().map(|r| r.der.as_slice()).collect();
            let mut hashed: Vec<(Vec<u8>, &str)> = Vec::new();
            for k in keys.iter().flatten() {
                if !hashed.iter().any(|(_, seen)| *seen == k) {
                    hashed.push((sha256(k.as_bytes()), k));
                }
            }
            self.chained_write(audit, |tx, _| {
                let retired = tx.query("SELECT serial FROM retired_serials WHERE serial = ANY($1) LIMIT 1", &[&serials])?;
                if let Some(row) = retired.first() {
                    return Err(Error::SerialInUse(serial_of(row.get(0), "retired serial")?));
                }
                self.fault()?;
                let stored = tx.query(
                    "INSERT INTO certs (serial, fingerprint, email_key, kind, not_before, issuer, revoked, meta, der)
                     SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::smallint[],
                                          $5::timestamptz[], $6::text[], $7::boolean[], $8::text[], $9::bytea[])
                     ON CONFLICT (serial) DO NOTHING RETURNING serial",
                    &[&serials, &fps, &keys, &kinds, &not_before, &issuers, &revoked, &metas, &ders],
                )?;
                if stored.len() != certs.len() {
                    let stored: HashSet<Vec<u8>> = stored.iter().map(|r| r.get(0)).collect();
                    let taken = certs.iter().find(|r| !stored.contains(r.serial.as_bytes())).unwrap_or(&certs[0]);
                    return Err(Error::SerialInUse(taken.serial.clone()));
                }
                if !hashed.is_empty() {
                    let (hashes, addrs): (Vec<&[u8]>, Vec<&str>) = hashed.iter().map(|(h, a)| (h.as_slice(), *a)).unzip();
                    self.fault()?;
                    tx.execute(
                        "INSERT INTO email_hashes (hash, email_key) SELECT * FROM unnest($1::bytea[], $2::text[])
                         ON CONFLICT (hash) DO NOTHING",
                        &[&hashes, &addrs],
                    )?;
                }
                Ok(())
            })
        })
    }

    /// Nothing to do: every write committed synchronously. The fault plan still counts the point.
    fn flush(&self) -> Result<(), Error> {
        off_runtime(|| self.flushed())
    }

    fn retire_serials(&self, serials: &[Serial]) -> Result<(), Error> {
        off_runtime(|| {
            if !serials.is_empty() {
                let s: Vec<&[u8]> = serials.iter().map(Serial::as_bytes).collect();
                self.fault()?;
                self.conn()?.execute(
                    "INSERT INTO retired_serials (serial) SELECT * FROM unnest($1::bytea[]) ON CONFLICT DO NOTHING",
                    &[&s],
                )?;
            }
            self.flushed()
        })
    }

    fn serial_used(&self, serial: &Serial) -> Result<bool, Error> {
        off_runtime(|| {
            Ok(self
                .conn()?
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM certs WHERE serial = $1)
                         OR EXISTS (SELECT 1 FROM retired_serials WHERE serial = $1)",
                    &[&serial.as_bytes()],
                )?
                .get(0))
        })
    }

    fn retired_serials(&self) -> Result<Vec<Serial>, Error> {
        off_runtime(|| {
            self.conn()?
                .query("SELECT serial FROM retired_serials", &[])?
                .into_iter()
                .map(|row| serial_of(row.get(0), "retired serial"))
                .collect()
        })
    }

    fn revoke(
        &self,
        serial: &Serial,
        revocation: Revocation,
        compromised: Option<&KeyDigest>,
        audit: &dyn AuditChain,
    ) -> Result<CertRecord, Error> {
        off_runtime(|| {
            check_compromised_arg(&revocation, compromised)?;
            let key = serial.as_bytes();
            let rec = self.chained_write(audit, |tx, last_change| {
                let row = tx
                    .query_opt("SELECT meta FROM certs WHERE serial = $1 FOR UPDATE", &[&key])?
                    .ok_or_else(|| Error::NotFound(serial.clone()))?;
                let mut rec = decode_meta(row.get(0))?;
                rec.revocation = Some(revised(serial, rec.revocation.as_ref(), &revocation)?);
                self.fault()?;
                tx.execute("UPDATE certs SET meta = $2, revoked = true WHERE serial = $1", &[&key, &encode_meta(&rec)?])?;
                if let Some(digest) = compromised {
                    self.fault()?;
                    tx.execute(
                        "INSERT INTO compromised_keys (key_digest, serial) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&&digest.0[..], &key],
                    )?;
                }
                self.fault()?;
                tx.execute(
                    "WITH c AS (INSERT INTO changes (seq, kind, serial) VALUES ($1, $2, $3))
                     UPDATE chain_head SET last_change = $1",
                    &[&(last_change + 1), &CHANGE_REVOKED, &key],
                )?;
                Ok(rec)
            })?;
            self.flushed()?;
            Ok(rec)
        })
    }

    fn compromised_keys(&self) -> Result<Vec<(KeyDigest, Serial)>, Error> {
        off_runtime(|| {
            self.conn()?
                .query("SELECT key_digest, serial FROM compromised_keys", &[])?
                .into_iter()
                .map(|row| {
                    let k: &[u8] = row.get(0);
                    let digest = <[u8; 32]>::try_from(k)
                        .map_err(|_| Error::Corrupt(format!("compromised key of {} bytes", k.len())))?;
                    let serial = serial_of(row.get(1), &format!("compromised key {}", hex::encode(digest)))?;
                    Ok((KeyDigest(digest), serial))
                })
                .collect()
        })
    }

    fn record_compromised(&self, keys: &[(KeyDigest, Serial)]) -> Result<(), Error> {
        off_runtime(|| {
            if !keys.is_empty() {
                let digests: Vec<&[u8]> = keys.iter().map(|(k, _)| &k.0[..]).collect();
                let serials: Vec<&[u8]> = keys.iter().map(|(_, s)| s.as_bytes()).collect();
                self.fault()?;
                self.conn()?.execute(
                    "INSERT INTO compromised_keys (key_digest, serial)
                     SELECT DISTINCT ON (k) k, s FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS t(k, s, i)
                     ORDER BY k, i
                     ON CONFLICT DO NOTHING",
                    &[&digests, &serials],
                )?;
            }
            self.flushed()
        })
    }

    fn put_crl(&self, crl: &CrlRecord, audit: &dyn AuditChain) -> Result<(), Error> {
        off_runtime(|| {
            let enc = serde_json::to_string(crl).map_err(|e| Error::Corrupt(e.to_string()))?;
            self.chained_write(audit, |tx, _| {
                if let Some(row) = tx.query_opt("SELECT record FROM crls WHERE ca = $1 FOR UPDATE", &[&crl.ca.name()])? {
                    let prev: CrlRecord = serde_json::from_str(row.get(0)).map_err(|e| corrupt("CRL record", e))?;
                    if prev.number >= crl.number {
                        return Err(Error::Inconsistent(format!(
                            "CRL number {} of {} is not above the stored {}",
                            crl.number, crl.ca, prev.number
                        )));
                    }
                }
                self.fault()?;
                tx.execute(
                    "INSERT INTO crls (ca, record) VALUES ($1, $2) ON CONFLICT (ca) DO UPDATE SET record = EXCLUDED.record",
                    &[&crl.ca.name(), &enc],
                )?;
                Ok(())
            })?;
            self.flushed()
        })
    }

    fn append_audit(&self, audit: &dyn AuditChain) -> Result<(), Error> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let (last, _) = lock_head(&mut tx)?;
            let records = chained(audit, last.as_ref())?;
            if records.is_empty() {
                return Ok(());
            }
            self.put_audit(&mut tx, &records)?;
            tx.commit()?;
            self.flushed()
        })
    }

    fn last_audit(&self) -> Result<Option<AuditRecord>, Error> {
        off_runtime(|| {
            match self.conn()?.query_opt("SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1", &[])? {
                Some(row) => Ok(Some(audit_record(row.get(0), row.get(1))?)),
                None => Ok(None),
            }
        })
    }

    fn audit_records_from(&self, first: u64) -> Result<Vec<AuditRecord>, Error> {
        off_runtime(|| {
            let first = i64::try_from(first).unwrap_or(i64::MAX);
            self.conn()?
                .query("SELECT seq, entry FROM audit WHERE seq >= $1 ORDER BY seq", &[&first])?
                .into_iter()
                .map(|row| audit_record(row.get(0), row.get(1)))
                .collect()
        })
    }

    /// Read in pages of [`AUDIT_PAGE`] records, each page its own query.
    fn audit_records(&self) -> Box<dyn Iterator<Item = Result<AuditRecord, Error>> + '_> {
        let mut after = 0i64;
        let mut page: std::vec::IntoIter<AuditRecord> = Vec::new().into_iter();
        let mut done = false;
        Box::new(std::iter::from_fn(move || {
            if let Some(r) = page.next() {
                return Some(Ok(r));
            }
            if done {
                return None;
            }
            let read = self.conn().and_then(|mut c| {
                c.query(
                    "SELECT seq, entry FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &AUDIT_PAGE],
                )
                .map_err(Error::from)?
                .into_iter()
                .map(|row| audit_record(row.get(0), row.get(1)))
                .collect::<Result<Vec<_>, _>>()
            });
            match read {
                Ok(records) => {
                    done = (records.len() as i64) < AUDIT_PAGE;
                    if let Some(last) = records.last() {
                        after = last.seq as i64;
                    }
                    page = records.into_iter();
                    page.next().map(Ok)
                }
                Err(e) => {
                    done = true;
                    Some(Err(e))
                }
            }
        }))
    }

    fn meta_get(&self, key: &str) -> Result<Option<String>, Error> {
        off_runtime(|| {
            Ok(self
                .conn()?
                .query_opt("SELECT value FROM ca_settings WHERE key = $1", &[&key])?
                .map(|r| r.get(0)))
        })
    }

    fn meta_put(&self, key: &str, value: &str) -> Result<(), Error> {
        off_runtime(|| {
            self.fault()?;
            self.conn()?.execute(
                "INSERT INTO ca_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )?;
            self.flushed()
        })
    }

    fn meta_replace(&self, key: &str, old: &str, new: &str) -> Result<bool, Error> {
        off_runtime(|| {
            self.fault()?;
            let n = self.conn()?.execute(
                "UPDATE ca_settings SET value = $3 WHERE key = $1 AND value = $2",
                &[&key, &old, &new],
            )?;
            if n == 1 {
                self.flushed()?;
            }
            Ok(n == 1)
        })
    }

    fn meta_insert(&self, key: &str, value: &str) -> Result<bool, Error> {
        off_runtime(|| {
            self.fault()?;
            let n = self.conn()?.execute(
                "INSERT INTO ca_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )?;
            if n == 1 {
                self.flushed()?;
            }
            Ok(n == 1)
        })
    }

    fn list(&self, email: Option<&EmailAddress>) -> Result<Vec<CertRecord>, Error> {
        off_runtime(|| {
            let mut out = match email {
                Some(e) => self.by_email(e, None)?,
                None => self.records("SELECT meta FROM certs", &[], false)?,
            };
            out.sort_by(|a, b| a.issued_at.cmp(&b.issued_at).then(a.serial.cmp(&b.serial)));
            Ok(out)
        })
    }

    fn revoked_by(&self, ca: CaId) -> Result<Vec<CertRecord>, Error> {
        off_runtime(|| {
            self.records(
                "SELECT meta FROM certs WHERE revoked AND issuer = $1 ORDER BY serial",
                &[&ca.name()],
                false,
            )
        })
    }

    fn count(&self) -> Result<u64, Error> {
        off_runtime(|| {
            let n: i64 = self.conn()?.query_one("SELECT count(*) FROM certs", &[])?.get(0);
            to_u64(n, "certificate count")
        })
    }

    /// Nothing to warm: the server keeps its own cache.
    fn warm_cache(&self) -> Result<WarmStats, Error> {
        off_runtime(|| Ok(WarmStats { entries: 0, bytes: 0, complete: true }))
    }

    fn check_consistency(&self) -> Result<(), Error> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            // One snapshot for every check.
            let mut tx = conn
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let inconsistent = |m: String| Err(Error::Inconsistent(m));
            let mut revoked = HashSet::new();
            let hashes: HashSet<(Vec<u8>, String)> = tx
                .query("SELECT hash, email_key FROM email_hashes", &[])?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            for row in tx.query(
                "SELECT serial, fingerprint, email_key, kind, issuer, revoked, meta, der FROM certs",
                &[],
            )? {
                let rec = decode_meta(row.get(6))?;
                let der: &[u8] = row.get(7);
                if rec.serial.as_bytes() != row.get::<_, &[u8]>(0) {
                    return inconsistent(format!(
                        "certificate {} is stored under another serial",
                        rec.serial
                    ));
                }
                if Fingerprint::of(der) != rec.fingerprint || row.get::<_, &[u8]>(1) != &rec.fingerprint.0[..]
                {
                    return inconsistent(format!("fingerprint of {} does not match its DER", rec.serial));
                }
                let key = rec.email.as_ref().map(EmailAddress::lookup_key);
                if row.get::<_, Option<String>>(2) != key
                    || row.get::<_, i16>(3) != i16::from(rec.kind.code())
                    || row.get::<_, &str>(4) != rec.issuer.name()
                {
                    return inconsistent(format!(
                        "the index columns of {} differ from its metadata",
                        rec.serial
                    ));
                }
                if row.get::<_, bool>(5) != rec.revocation.is_some() {
                    return inconsistent(format!("revoked index disagrees about {}", rec.serial));
                }
                if rec.revocation.is_some() {
                    revoked.insert(rec.serial.clone());
                }
                if let Some(k) = key {
                    if !hashes.contains(&(sha256(k.as_bytes()), k)) {
                        return inconsistent(format!("hashed-address index misses {}", rec.serial));
                    }
                }
            }
            for row in tx.query("SELECT key_digest, serial FROM compromised_keys", &[])? {
                let serial = serial_of(row.get(1), "compromised key")?;
                let reason = tx
                    .query_opt("SELECT meta FROM certs WHERE serial = $1", &[&serial.as_bytes()])?
                    .map(|r| decode_meta(r.get(0)))
                    .transpose()?
                    .and_then(|r| r.revocation)
                    .map(|r| r.reason);
                if reason != Some(RevocationReason::KeyCompromise) {
                    return inconsistent(format!(
                        "compromised key {} names {serial}, which is not revoked for keyCompromise",
                        hex::encode(row.get::<_, &[u8]>(0))
                    ));
                }
            }
            let gaps = |tx: &mut Transaction<'_>, table: &str| -> Result<(i64, i64), Error> {
                let row =
                    tx.query_one(&format!("SELECT count(*), COALESCE(max(seq), 0) FROM {table}"), &[])?;
                Ok((row.get(0), row.get(1)))
            };
            let (n, max) = gaps(&mut tx, "audit")?;
            if n != max {
                return inconsistent(format!("audit log has a gap: {n} entries up to entry {max}"));
            }
            let (n, max) = gaps(&mut tx, "changes")?;
            if n != max {
                return inconsistent(format!("change feed has a gap: {n} changes up to change {max}"));
            }
            let head: i64 = tx.query_one("SELECT last_change FROM chain_head", &[])?.get(0);
            if head != max {
                return inconsistent("the change feed's position differs from its length".into());
            }
            let mut changed = HashSet::new();
            for row in tx.query("SELECT seq, kind, serial FROM changes ORDER BY seq", &[])? {
                let seq: i64 = row.get(0);
                if row.get::<_, i16>(1) != CHANGE_REVOKED {
                    return Err(Error::Corrupt(format!("change {seq}: unknown kind")));
                }
                let serial = serial_of(row.get(2), "change serial")?;
                if !revoked.contains(&serial) {
                    return inconsistent(format!("change {seq} reports {serial}, which is not revoked"));
                }
                changed.insert(serial);
            }
            if let Some(missing) = revoked.difference(&changed).next() {
                return inconsistent(format!("the revocation of {missing} has no change"));
            }
            tx.commit()?;
            Ok(())
        })
    }
}

impl CertReader for PgEngine {
    fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, Error> {
        off_runtime(|| {
            self.one_record("SELECT meta, der FROM certs WHERE serial = $1", serial.as_bytes(), true)
        })
    }

    fn get_meta(&self, serial: &Serial) -> Result<Option<CertRecord>, Error> {
        off_runtime(|| self.one_record("SELECT meta FROM certs WHERE serial = $1", serial.as_bytes(), false))
    }

    fn by_fingerprint(&self, fp: &Fingerprint) -> Result<Option<CertRecord>, Error> {
        off_runtime(|| self.one_record("SELECT meta, der FROM certs WHERE fingerprint = $1", &fp.0, true))
    }

    /// Newest notBefore first; among equal ones, the higher kind code, then the higher serial
    /// (the embedded engine's index order).
    fn by_email(&self, email: &EmailAddress, kind: Option<CertKind>) -> Result<Vec<CertRecord>, Error> {
        off_runtime(|| {
            let key = email.lookup_key();
            let code = kind.map(|k| i16::from(k.code()));
            self.records(
                "SELECT meta FROM certs WHERE email_key = $1 AND ($2::smallint IS NULL OR kind = $2)
                 ORDER BY not_before DESC, kind DESC, serial DESC",
                &[&key, &code],
                false,
            )
        })
    }

    fn email_by_hash(&self, hash: &[u8; 32]) -> Result<Option<EmailAddress>, Error> {
        off_runtime(|| email_of(self.conn()?.query_opt(EMAIL_BY_HASH, &[&&hash[..]])?.as_ref()))
    }

    fn crl(&self, ca: CaId) -> Result<Option<CrlRecord>, Error> {
        off_runtime(|| {
            self.conn()?
                .query_opt("SELECT record FROM crls WHERE ca = $1", &[&ca.name()])?
                .map(|row| serde_json::from_str(row.get(0)).map_err(|e| corrupt("CRL record", e)))
                .transpose()
        })
    }

    fn state(&self, serial: &Serial) -> Result<Option<CertState>, Error> {
        off_runtime(|| {
            self.conn()?
                .query_opt(STATE_BY_SERIAL, &[&serial.as_bytes()])?
                .map(|row| decode_state(row.get(0)))
                .transpose()
        })
    }

    fn states_by_email(
        &self,
        email: &EmailAddress,
        kind: CertKind,
    ) -> Result<Vec<(Serial, CertState)>, Error> {
        off_runtime(|| {
            self.conn()?
                .query(STATES_BY_EMAIL, &[&email.lookup_key(), &i16::from(kind.code())])?
                .iter()
                .map(state_of)
                .collect()
        })
    }

    /// One query instead of the contract's default two (the states, then the chosen record):
    /// the address's certificates of `kind` with their DER, in the order of
    /// [`CertReader::states_by_email`], the first valid at `now` taken. An address has a few.
    fn newest_valid(
        &self,
        email: &EmailAddress,
        kind: CertKind,
        now: DateTime<Utc>,
    ) -> Result<Option<CertRecord>, Error> {
        off_runtime(|| {
            first_valid(
                &self.conn()?.query(RECORDS_BY_EMAIL, &[&email.lookup_key(), &i16::from(kind.code())])?,
                now,
            )
        })
    }
}

/// An address's certificates of a kind as (serial, `meta`), in the order of
/// [`CertReader::states_by_email`] (`$1`: lookup key, `$2`: kind code).
pub(super) const STATES_BY_EMAIL: &str = "SELECT serial, meta FROM certs WHERE email_key = $1 AND kind = $2
     ORDER BY not_before DESC, serial DESC";

/// [`STATES_BY_EMAIL`] as (`meta`, DER).
pub(super) const RECORDS_BY_EMAIL: &str = "SELECT meta, der FROM certs WHERE email_key = $1 AND kind = $2
     ORDER BY not_before DESC, serial DESC";

/// The lookup key of a hashed address (`$1`: the hash).
pub(super) const EMAIL_BY_HASH: &str = "SELECT email_key FROM email_hashes WHERE hash = $1";

/// [`STATES_BY_EMAIL`] for many lookups in one statement (`$1`: lookup keys, `$2`: kind codes,
/// one of each per lookup): the rows of each lookup in the order of [`STATES_BY_EMAIL`], its place
/// in the arrays (from 1) in their last column.
pub(super) const STATES_BY_EMAILS: &str = "SELECT c.serial, c.meta, k.i
     FROM unnest($1::text[], $2::int2[]) WITH ORDINALITY AS k(email_key, kind, i)
     JOIN certs c ON c.email_key = k.email_key AND c.kind = k.kind
     ORDER BY k.i, c.not_before DESC, c.serial DESC";

/// [`RECORDS_BY_EMAIL`] for many lookups, as [`STATES_BY_EMAILS`] is [`STATES_BY_EMAIL`].
pub(super) const RECORDS_BY_EMAILS: &str = "SELECT c.meta, c.der, k.i
     FROM unnest($1::text[], $2::int2[]) WITH ORDINALITY AS k(email_key, kind, i)
     JOIN certs c ON c.email_key = k.email_key AND c.kind = k.kind
     ORDER BY k.i, c.not_before DESC, c.serial DESC";

/// [`EMAIL_BY_HASH`] for many hashes (`$1`), each row with the place of its hash (from 1) last.
pub(super) const EMAILS_BY_HASHES: &str = "SELECT e.email_key, k.i
     FROM unnest($1::bytea[]) WITH ORDINALITY AS k(hash, i)
     JOIN email_hashes e ON e.hash = k.hash";

/// A certificate's `meta` (`$1`: its serial).
pub(super) const STATE_BY_SERIAL: &str = "SELECT meta FROM certs WHERE serial = $1";

/// [`STATE_BY_SERIAL`] for many serials (`$1`), each row with the place of its serial (from 1)
/// last.
pub(super) const STATES_BY_SERIALS: &str = "SELECT c.meta, k.i
     FROM unnest($1::bytea[]) WITH ORDINALITY AS k(serial, i)
     JOIN certs c ON c.serial = k.serial";

/// The newest entry of the change feed.
pub(super) const LAST_CHANGE: &str = "SELECT last_change FROM chain_head";

/// A row of [`STATES_BY_EMAIL`].
fn state_of(row: &Row) -> Result<(Serial, CertState), Error> {
    Ok((serial_of(row.get(0), "certificate serial")?, decode_state(row.get(1))?))
}

/// The first certificate valid at `now` among rows of [`RECORDS_BY_EMAIL`].
fn first_valid(rows: &[Row], now: DateTime<Utc>) -> Result<Option<CertRecord>, Error> {
    for row in rows {
        let mut rec = decode_meta(row.get(0))?;
        if rec.status_at(now) == crate::CertStatus::Valid {
            rec.der = row.get(1);
            return Ok(Some(rec));
        }
    }
    Ok(None)
}

/// The address of a row of [`EMAIL_BY_HASH`].
fn email_of(row: Option<&Row>) -> Result<Option<EmailAddress>, Error> {
    let Some(row) = row else { return Ok(None) };
    let text: &str = row.get(0);
    Ok(Some(text.parse::<EmailAddress>().map_err(|e| corrupt("hashed-address index", e))?))
}

/// The directory's lookups of [`CertReader`] and the OCSP responder's statuses for async callers:
/// the same answers, awaited on the pipelined connections (in a batch with other lookups when
/// they arrive together).
impl AsyncReads for PipelinedReads {
    fn email_by_hash<'a>(&'a self, hash: &'a [u8; 32]) -> ReadFuture<'a, Option<EmailAddress>> {
        Box::pin(async move { email_of(self.query(Query::EmailByHash, Key::Hash(*hash)).await?.first()) })
    }

    fn states_by_email<'a>(
        &'a self,
        email: &'a EmailAddress,
        kind: CertKind,
    ) -> ReadFuture<'a, Vec<(Serial, CertState)>> {
        Box::pin(async move {
            let rows = self.query(Query::StatesByEmail, email_key(email, kind)).await?;
            rows.iter().map(state_of).collect()
        })
    }

    fn state<'a>(&'a self, serial: &'a Serial) -> ReadFuture<'a, Option<CertState>> {
        Box::pin(async move {
            let rows = self.query(Query::StateBySerial, Key::Serial(serial.as_bytes().to_vec())).await?;
            rows.first().map(|row| decode_state(row.get(0))).transpose()
        })
    }

    fn last_change(&self) -> ReadFuture<'_, u64> {
        Box::pin(async move {
            let rows = self.query(Query::LastChange, Key::None).await?;
            last_change_of(rows.first().ok_or_else(|| Error::Corrupt("chain_head has no row".into()))?)
        })
    }

    fn newest_valid<'a>(
        &'a self,
        email: &'a EmailAddress,
        kind: CertKind,
        now: DateTime<Utc>,
    ) -> ReadFuture<'a, Option<CertRecord>> {
        Box::pin(async move {
            let rows = self.query(Query::RecordsByEmail, email_key(email, kind)).await?;
            first_valid(&rows, now)
        })
    }

    fn statement_counts(&self) -> (u64, u64) {
        self.counts()
    }
}

/// The feed's newest entry out of a row of [`LAST_CHANGE`].
fn last_change_of(row: &Row) -> Result<u64, Error> {
    to_u64(row.get(0), "change")
}

/// The key of a lookup by address.
fn email_key(email: &EmailAddress, kind: CertKind) -> Key {
    Key::Email(email.lookup_key(), i16::from(kind.code()))
}
