//! Moving an installation between engines: [`copy`] fills an empty database from another one,
//! whatever their engines, and [`verify`] checks the copy against its original — every count, a
//! random sample of records byte for byte (the small kinds whole), and the destination's own
//! consistency check. `pki db copy` drives both; the audit chain's hashes and signatures are
//! checked there, by `ca-core`.
//!
//! The copy goes through the storage contract's reads and writes wherever they carry a record as
//! it is (audit entries keep their numbers, API keys their hashes); [`Transfer`] gives what the
//! contract has no call for: certificates in serial order and stored with their revocation, the
//! change feed, the CA's settings, and the records whose keys the contract does not return.
//! Console sessions are not copied: officers sign in again on the new database.

use chrono::{DateTime, Utc};

use crate::acme_store::AcmeKind;
use crate::directory::{ApiKeyHash, ApiKeyRecord, DirectoryError};
use crate::store::Change;
use crate::tsa_store::{ledger, TokenRecord};
use crate::{AuditRecord, CaId, CertDb, CertRecord, Error, Serial};

/// An enrolment record as a copy moves it: id, creation time, record.
pub type AcmeEntry = (String, DateTime<Utc>, Vec<u8>);

/// What an engine gives and takes for a copy, beyond the storage contract.
pub trait Transfer: Send + Sync {
    /// Up to `limit` certificates, DER included, whose serials sort after `after` (bytes of the
    /// magnitude, compared as bytes; `None`: from the first), in that order.
    fn certs_after(&self, after: Option<&Serial>, limit: usize) -> Result<Vec<CertRecord>, Error>;

    /// Stores certificates as they are — a revocation on the record included, in the revocation
    /// index too — with their lookup indexes, without audit entries or changes (the copy brings
    /// those), durably. A serial stored already is [`Error::SerialInUse`], nothing written.
    fn import_certs(&self, certs: &[CertRecord]) -> Result<(), Error>;

    /// Appends changes as they are numbered (they must continue the feed), durably.
    fn import_changes(&self, changes: &[Change]) -> Result<(), Error>;

    /// The CA's settings ([`crate::CertStore::meta_get`]), without the engine's own layout
    /// markers.
    fn settings(&self) -> Result<Vec<(String, String)>, Error>;

    /// The console's secrets ([`crate::console_store::ConsoleStore::meta_get_or_init`]).
    fn console_secrets(&self) -> Result<Vec<(String, Vec<u8>)>, Error>;

    /// Every API key with the hash it is stored under.
    fn api_keys_with_hashes(&self) -> Result<Vec<(ApiKeyHash, ApiKeyRecord)>, DirectoryError>;

    /// Every enrolment record of a kind: id, creation time, record; oldest first.
    fn acme_entries(&self, kind: AcmeKind) -> Result<Vec<AcmeEntry>, Error>;

    /// Up to `limit` TSA token records from the `index`-th on (in serial order; `after_serial`
    /// is the serial of the record before it, 0 at the start).
    fn tokens_page(&self, index: u64, after_serial: u64, limit: usize) -> Result<Vec<TokenRecord>, Error>;
}

/// What a copy moves, in the order it moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The CA's settings.
    Settings,
    /// Certificates with their revocations.
    Certificates,
    /// Serials signed into certificates never stored.
    RetiredSerials,
    /// Keys reported compromised.
    CompromisedKeys,
    /// The CAs' current CRLs.
    Crls,
    /// The audit log.
    Audit,
    /// The change feed.
    Changes,
    /// Console accounts.
    ConsoleUsers,
    /// Console secrets (the login CSRF key).
    ConsoleSecrets,
    /// Escrow recovery requests.
    Recoveries,
    /// The directory's API keys.
    ApiKeys,
    /// The directory's anonymous policy.
    AnonymousPolicy,
    /// ACME and mailbox-validation records.
    Enrolment,
    /// TSA token records.
    Timestamps,
}

impl Kind {
    /// Every kind, in copying order.
    pub const ALL: [Kind; 14] = [
        Kind::Settings,
        Kind::Certificates,
        Kind::RetiredSerials,
        Kind::CompromisedKeys,
        Kind::Crls,
        Kind::Audit,
        Kind::Changes,
        Kind::ConsoleUsers,
        Kind::ConsoleSecrets,
        Kind::Recoveries,
        Kind::ApiKeys,
        Kind::AnonymousPolicy,
        Kind::Enrolment,
        Kind::Timestamps,
    ];

    /// What `pki db copy` calls it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Settings => "CA settings",
            Kind::Certificates => "certificates",
            Kind::RetiredSerials => "retired serials",
            Kind::CompromisedKeys => "compromised keys",
            Kind::Crls => "CRLs",
            Kind::Audit => "audit entries",
            Kind::Changes => "changes",
            Kind::ConsoleUsers => "console users",
            Kind::ConsoleSecrets => "console secrets",
            Kind::Recoveries => "recovery requests",
            Kind::ApiKeys => "API keys",
            Kind::AnonymousPolicy => "anonymous policies",
            Kind::Enrolment => "enrolment records",
            Kind::Timestamps => "timestamp records",
        }
    }
}

/// How far a copy is: `done` of `total` records of `kind`.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// What is being copied.
    pub kind: Kind,
    /// Records of it copied so far.
    pub done: u64,
    /// Records of it in the source.
    pub total: u64,
}

/// Audit records copied with their numbers.
struct Numbered<'a>(&'a [AuditRecord]);

impl crate::AuditChain for Numbered<'_> {
    fn records_after(&self, _last: Option<&AuditRecord>) -> Result<Vec<AuditRecord>, Error> {
        Ok(self.0.to_vec())
    }
}

/// Records per write while copying.
pub const BATCH: usize = 2_000;

fn dir(e: DirectoryError) -> Error {
    match e {
        DirectoryError::Storage(e) => e,
        other => Error::Db(other.to_string()),
    }
}

/// Why `db` cannot be the destination of a copy, if it holds anything.
pub fn refuse_non_empty(db: &CertDb) -> Result<(), Error> {
    let t = db.transfer();
    let mut held = Vec::new();
    let certificates = db.count()?;
    if certificates > 0 {
        held.push(format!("{certificates} certificates"));
    }
    if let Some(last) = db.last_audit()? {
        held.push(format!("{} audit entries", last.seq));
    }
    if !t.settings()?.is_empty() {
        held.push("CA settings".into());
    }
    if !db.console().users()?.is_empty() {
        held.push("console users".into());
    }
    if !db.api_key_records().key_records().map_err(dir)?.is_empty() {
        held.push("API keys".into());
    }
    if db.tsa_ledger().high_water_mark()? > 0 {
        held.push("timestamp serials".into());
    }
    if held.is_empty() {
        Ok(())
    } else {
        Err(Error::Inconsistent(format!(
            "{} is not empty (it holds {}): a copy goes into an empty database only",
            db.location(),
            held.join(", ")
        )))
    }
}

/// The number of records of each kind in `db`.
pub fn counts(db: &CertDb) -> Result<Vec<(Kind, u64)>, Error> {
    Kind::ALL.iter().map(|k| Ok((*k, count_of(db, *k)?))).collect()
}

fn count_of(db: &CertDb, kind: Kind) -> Result<u64, Error> {
    let t = db.transfer();
    let n = match kind {
        Kind::Settings => t.settings()?.len(),
        Kind::Certificates => return db.count(),
        Kind::RetiredSerials => db.retired_serials()?.len(),
        Kind::CompromisedKeys => db.compromised_keys()?.len(),
        Kind::Crls => crls(db)?.len(),
        Kind::Audit => return Ok(db.last_audit()?.map(|r| r.seq).unwrap_or(0)),
        Kind::Changes => return db.last_change(),
        Kind::ConsoleUsers => db.console().users()?.len(),
        Kind::ConsoleSecrets => t.console_secrets()?.len(),
        Kind::Recoveries => db.recoveries().recoveries()?.len(),
        Kind::ApiKeys => t.api_keys_with_hashes().map_err(dir)?.len(),
        Kind::AnonymousPolicy => usize::from(db.api_key_records().anonymous_policy().map_err(dir)?.is_some()),
        Kind::Enrolment => {
            let mut n = 0;
            for k in AcmeKind::ALL {
                n += t.acme_entries(k)?.len();
            }
            n
        }
        Kind::Timestamps => return db.tsa_ledger().token_count(),
    };
    Ok(n as u64)
}

fn crls(db: &CertDb) -> Result<Vec<crate::CrlRecord>, Error> {
    let mut out = Vec::new();
    for ca in [CaId::Root, CaId::Issuing] {
        out.extend(db.crl(ca)?);
    }
    Ok(out)
}

/// Copies everything of `from` into `to`, which must be empty ([`refuse_non_empty`]), reporting
/// progress after every batch. Each batch is durable when written; a copy that stops half way
/// leaves a destination to drop and copy into again (it is refused as not empty).
pub fn copy(from: &CertDb, to: &CertDb, progress: &mut dyn FnMut(Progress)) -> Result<(), Error> {
    refuse_non_empty(to)?;
    let (src, dst) = (from.transfer(), to.transfer());
    for kind in Kind::ALL {
        let total = count_of(from, kind)?;
        let mut done = 0u64;
        let mut report = |done: u64| progress(Progress { kind, done, total });
        report(0);
        match kind {
            Kind::Settings => {
                for (k, v) in src.settings()? {
                    to.meta_put(&k, &v)?;
                    done += 1;
                }
            }
            Kind::Certificates => {
                let mut after: Option<Serial> = None;
                loop {
                    let page = src.certs_after(after.as_ref(), BATCH)?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.serial.clone());
                    dst.import_certs(&page)?;
                    done += page.len() as u64;
                    report(done);
                }
            }
            Kind::RetiredSerials => {
                let serials = from.retired_serials()?;
                for chunk in serials.chunks(BATCH) {
                    to.retire_serials(chunk)?;
                    done += chunk.len() as u64;
                    report(done);
                }
            }
            Kind::CompromisedKeys => {
                let keys = from.compromised_keys()?;
                to.record_compromised(&keys)?;
                done = keys.len() as u64;
            }
            Kind::Crls => {
                for crl in crls(from)? {
                    to.put_crl(&crl, &[] as &[AuditRecord; 0])?;
                    done += 1;
                }
            }
            Kind::Audit => {
                let mut batch = Vec::with_capacity(BATCH);
                for r in from.audit_records() {
                    batch.push(r?);
                    if batch.len() == BATCH {
                        to.append_audit(&Numbered(&batch))?;
                        done += batch.len() as u64;
                        batch.clear();
                        report(done);
                    }
                }
                to.append_audit(&Numbered(&batch))?;
                done += batch.len() as u64;
            }
            Kind::Changes => {
                let changes = from.changes_since(0)?;
                for chunk in changes.chunks(BATCH) {
                    dst.import_changes(chunk)?;
                    done += chunk.len() as u64;
                    report(done);
                }
            }
            Kind::ConsoleUsers => {
                for u in from.console().users()? {
                    if !to.console().insert_user(&u)? {
                        return Err(Error::Inconsistent(format!(
                            "console user {} exists in the copy",
                            u.name
                        )));
                    }
                    done += 1;
                }
            }
            Kind::ConsoleSecrets => {
                for (k, v) in src.console_secrets()? {
                    to.console().meta_get_or_init(&k, &v)?;
                    done += 1;
                }
            }
            Kind::Recoveries => {
                for r in from.recoveries().recoveries()? {
                    to.recoveries().insert_recovery(&r)?;
                    done += 1;
                }
            }
            Kind::ApiKeys => {
                for (hash, rec) in src.api_keys_with_hashes().map_err(dir)? {
                    to.api_key_records().insert_key(&hash, &rec).map_err(dir)?;
                    done += 1;
                }
            }
            Kind::AnonymousPolicy => {
                if let Some(p) = from.api_key_records().anonymous_policy().map_err(dir)? {
                    to.api_key_records().set_anonymous_policy(&p).map_err(dir)?;
                    done = 1;
                }
            }
            Kind::Enrolment => {
                for k in AcmeKind::ALL {
                    for (id, at, rec) in src.acme_entries(k)? {
                        to.acme_records().insert_acme(k, &id, at, &rec)?;
                        done += 1;
                    }
                }
            }
            Kind::Timestamps => {
                let high = from.tsa_ledger().high_water_mark()?;
                if high > 0 {
                    to.tsa_ledger().reserve_serials(high)?;
                }
                let mut last_serial = 0u64;
                loop {
                    let page = src.tokens_page(done, last_serial, ledger::MAX_BATCH)?;
                    let Some(last) = page.last() else { break };
                    last_serial = last.serial.value();
                    let mut encoded = Vec::with_capacity(page.len() * ledger::RECORD_LEN);
                    for r in &page {
                        encoded.extend_from_slice(&ledger::encode(r)?);
                    }
                    to.tsa_ledger().append_tokens(&encoded)?;
                    done += page.len() as u64;
                    report(done);
                }
            }
        }
        report(done);
        if done != total {
            return Err(Error::Inconsistent(format!(
                "copied {done} {} of {total}: the source changed during the copy; stop every process using it and copy again into an empty database",
                kind.name()
            )));
        }
    }
    to.flush()
}

/// What [`verify`] checked.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The count of each kind, equal on both sides.
    pub counts: Vec<(Kind, u64)>,
    /// Certificates compared byte for byte (metadata and DER).
    pub certificates_compared: u64,
    /// Audit entries compared byte for byte (all of them).
    pub audit_compared: u64,
    /// Timestamp records compared byte for byte (all of them).
    pub timestamps_compared: u64,
    /// Records of the small kinds, compared whole.
    pub others_compared: u64,
}

/// Picks up to `n` distinct numbers of `0..total` with `next` as the random source.
fn sample(total: u64, n: u64, next: &mut dyn FnMut() -> u64) -> Vec<u64> {
    if total <= n {
        return (0..total).collect();
    }
    let mut picked = std::collections::BTreeSet::new();
    while (picked.len() as u64) < n {
        picked.insert(next() % total);
    }
    picked.into_iter().collect()
}

fn differ(what: &str, key: impl std::fmt::Display) -> Error {
    Error::Inconsistent(format!("the copy differs from its original: {what} {key}"))
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Checks `to` against `from`: the counts of every kind; `sample` certificates drawn at random
/// (with `next`) compared byte for byte; every audit entry, timestamp record and record of the
/// small kinds compared; then `to`'s consistency check ([`crate::CertStore::check_consistency`]).
pub fn verify(
    from: &CertDb,
    to: &CertDb,
    sample_size: u64,
    next: &mut dyn FnMut() -> u64,
) -> Result<Verified, Error> {
    let counts = counts(from)?;
    let theirs = crate::copy::counts(to)?;
    for ((kind, a), (_, b)) in counts.iter().zip(&theirs) {
        if a != b {
            return Err(Error::Inconsistent(format!(
                "the copy holds {b} {} where the original holds {a}",
                kind.name()
            )));
        }
    }
    let (src, dst) = (from.transfer(), to.transfer());
    let n_certs = from.count()?;
    let mut certificates_compared = 0;
    // The picked positions, walked through in serial order on the source.
    let picks = sample(n_certs, sample_size, next);
    let mut picks = picks.into_iter().peekable();
    let mut pos = 0u64;
    let mut after: Option<Serial> = None;
    while picks.peek().is_some() {
        let page = src.certs_after(after.as_ref(), BATCH)?;
        let Some(last) = page.last() else { break };
        after = Some(last.serial.clone());
        for rec in &page {
            if picks.peek() == Some(&pos) {
                picks.next();
                let copy = to.get(&rec.serial)?.ok_or_else(|| differ("missing certificate", &rec.serial))?;
                if copy.der != rec.der || json(&copy)? != json(rec)? {
                    return Err(differ("certificate", &rec.serial));
                }
                certificates_compared += 1;
            }
            pos += 1;
        }
    }
    // The audit log and the TSA record are read once on each side, in order, and compared
    // whole: reading them in step costs no more than a sample would.
    let mut audit_compared = 0;
    let mut theirs = to.audit_records();
    for a in from.audit_records() {
        let a = a?;
        match theirs.next().transpose()? {
            Some(b) if b == a => audit_compared += 1,
            _ => return Err(differ("audit entry", a.seq)),
        }
    }
    if theirs.next().is_some() {
        return Err(differ("audit entry after", audit_compared));
    }
    let mut timestamps_compared = 0u64;
    let mut last_serial = 0u64;
    loop {
        let a = src.tokens_page(timestamps_compared, last_serial, ledger::MAX_BATCH)?;
        let b = dst.tokens_page(timestamps_compared, last_serial, ledger::MAX_BATCH)?;
        if a.len() != b.len() {
            return Err(differ("timestamp records after", last_serial));
        }
        let Some(last) = a.last() else { break };
        last_serial = last.serial.value();
        for (x, y) in a.iter().zip(&b) {
            if ledger::encode(x)? != ledger::encode(y)? {
                return Err(differ("timestamp record", x.serial.value()));
            }
        }
        timestamps_compared += a.len() as u64;
    }
    let mut others = 0u64;
    let mut same = |what: &str, a: Vec<u8>, b: Vec<u8>| -> Result<(), Error> {
        if a != b {
            return Err(differ(what, "records"));
        }
        others += 1;
        Ok(())
    };
    same("CA settings", json(&src.settings()?)?, json(&dst.settings()?)?)?;
    let mut ra = from.retired_serials()?;
    let mut rb = to.retired_serials()?;
    ra.sort();
    rb.sort();
    same(
        "retired serials",
        json(&ra.iter().map(|s| s.to_string()).collect::<Vec<_>>())?,
        json(&rb.iter().map(|s| s.to_string()).collect::<Vec<_>>())?,
    )?;
    let keys = |db: &CertDb| -> Result<Vec<String>, Error> {
        let mut v: Vec<String> =
            db.compromised_keys()?.iter().map(|(k, s)| format!("{} {s}", hex::encode(k.0))).collect();
        v.sort();
        Ok(v)
    };
    same("compromised keys", json(&keys(from)?)?, json(&keys(to)?)?)?;
    same("CRLs", json(&crls(from)?)?, json(&crls(to)?)?)?;
    let changes = |db: &CertDb| -> Result<Vec<String>, Error> {
        Ok(db.changes_since(0)?.iter().map(|c| format!("{} {:?}", c.seq, c.kind)).collect())
    };
    same("changes", json(&changes(from)?)?, json(&changes(to)?)?)?;
    let users = |db: &CertDb| -> Result<Vec<Vec<u8>>, Error> {
        let mut v = db.console().users()?.iter().map(json).collect::<Result<Vec<_>, _>>()?;
        v.sort();
        Ok(v)
    };
    same("console users", json(&users(from)?)?, json(&users(to)?)?)?;
    let mut sa = src.console_secrets()?;
    let mut sb = dst.console_secrets()?;
    sa.sort();
    sb.sort();
    same("console secrets", json(&sa)?, json(&sb)?)?;
    let recs = |db: &CertDb| -> Result<Vec<Vec<u8>>, Error> {
        let mut v = db.recoveries().recoveries()?.iter().map(json).collect::<Result<Vec<_>, _>>()?;
        v.sort();
        Ok(v)
    };
    same("recovery requests", json(&recs(from)?)?, json(&recs(to)?)?)?;
    let api = |t: &dyn Transfer| -> Result<Vec<Vec<u8>>, Error> {
        let mut v = t
            .api_keys_with_hashes()
            .map_err(dir)?
            .iter()
            .map(|(h, r)| Ok([h.0.to_vec(), json(r)?].concat()))
            .collect::<Result<Vec<_>, Error>>()?;
        v.sort();
        Ok(v)
    };
    same("API keys", json(&api(&*src)?)?, json(&api(&*dst)?)?)?;
    same(
        "anonymous policy",
        json(&from.api_key_records().anonymous_policy().map_err(dir)?)?,
        json(&to.api_key_records().anonymous_policy().map_err(dir)?)?,
    )?;
    for k in AcmeKind::ALL {
        let a = src.acme_entries(k)?;
        let b = dst.acme_entries(k)?;
        same(k.name(), json(&a)?, json(&b)?)?;
    }
    to.check_consistency()?;
    Ok(Verified {
        counts,
        certificates_compared,
        audit_compared,
        timestamps_compared,
        others_compared: others,
    })
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn a_sample_is_distinct_in_range_and_whole_when_small() {
        let mut x = 7u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 11
        };
        assert_eq!(sample(5, 10, &mut next), vec![0, 1, 2, 3, 4]);
        let s = sample(1_000, 100, &mut next);
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && s.iter().all(|i| *i < 1_000));
    }
}
