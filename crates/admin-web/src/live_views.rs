//! In-memory views of the certificate store and the audit log for the dashboard, the
//! certificate list and the audit page, kept current from the audit log.
//!
//! Every change to the certificates (issuance, revocation) appends an audit entry in the same
//! durable transaction, so a view that has applied the log up to entry `n` is current once it
//! has applied the entries after `n`. Each request reads only those (usually none, or one) with
//! [`cerdb::console_store::audit_records_from`] and applies them:
//!
//! - **certificates**: an `issue` or `revoke` entry names a serial, whose metadata is read again
//!   and put in its place; entries known to leave certificates alone (`crl`, `escrow.*`,
//!   `console.*`, `apikey.*`, `directory.anonymous`, refusals) are skipped. Anything else — `init`, an action this code does not
//!   know, an entry that does not decode, a serial that is not stored — rebuilds the view from
//!   the store.
//! - **audit log**: new entries are appended and the hash chain is checked on from the last
//!   verified hash. The whole chain is checked when the view is built, after a break (every
//!   change rebuilds the view then), and again in the background by
//!   [`ca_core::Ca::audit_checker`] (hash chain and `mac`s) every [`FULL_CHECK_SECS`] seconds of the CA's clock while the
//!   audit page is in use, so that an entry altered after it was checked is found too.
//!
//! Statuses are computed at each request from these rows, so expiry needs no update.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use ca_core::audit::{AuditEntry, GENESIS_HASH};
use ca_core::{AuditAction, Ca};
use cerdb::console_store::audit_records_from;
use cerdb::{AuditRecord, CertRecord, Serial};
use chrono::{DateTime, Duration, Utc};

use crate::Error;

/// How often the whole audit chain is checked again in the background (seconds of the CA's
/// clock), while the audit page is in use.
pub(crate) const FULL_CHECK_SECS: i64 = 3600;

/// Certificate metadata (subjects left out: lists do not show them).
#[derive(Debug, Clone)]
pub(crate) struct Certs {
    /// The last audit entry applied.
    head: u64,
    /// Oldest issuance first, in the order of [`cerdb::CertDb::list`]: issuance time, serial.
    rows: Vec<CertRecord>,
    /// The lower-cased address of each row (empty without one), for substring search.
    emails: Vec<Box<str>>,
}

impl Certs {
    /// Every row, newest issuance first.
    pub fn newest_first(&self) -> impl Iterator<Item = &CertRecord> {
        self.rows.iter().rev()
    }

    /// The rows whose address contains `needle` (ASCII case ignored), newest issuance first.
    pub fn address_contains<'a>(&'a self, needle: &str) -> impl Iterator<Item = &'a CertRecord> + 'a {
        // Addresses are ASCII (EmailAddress refuses others): lower-case once, then compare bytes.
        let needle = needle.to_ascii_lowercase();
        self.rows
            .iter()
            .zip(&self.emails)
            .rev()
            .filter(move |(_, e)| contains(e.as_bytes(), needle.as_bytes()))
            .map(|(r, _)| r)
    }

    /// Every certificate in the store, as of audit entry `head` or later.
    fn build(ca: &Ca) -> Result<Certs, Error> {
        let head = ca.db().last_audit()?.map(|r| r.seq).unwrap_or(0);
        let mut rows = ca.list(None)?;
        for r in &mut rows {
            r.subject = String::new();
        }
        let emails = rows.iter().map(email_key).collect();
        Ok(Certs { head, rows, emails })
    }

    /// Puts the current metadata of a certificate in its place (new or replacing).
    fn upsert(&mut self, mut rec: CertRecord) {
        rec.subject = String::new();
        let key = (rec.issued_at, &rec.serial);
        match self.rows.binary_search_by(|r| (r.issued_at, &r.serial).cmp(&key)) {
            Ok(i) => {
                self.emails[i] = email_key(&rec);
                self.rows[i] = rec;
            }
            Err(i) => {
                // Nearly always at the end: issuance times only grow.
                self.emails.insert(i, email_key(&rec));
                self.rows.insert(i, rec);
            }
        }
    }

    /// Applies new audit records; `false` if one of them needs a rebuild.
    fn apply(&mut self, ca: &Ca, records: &[AuditRecord]) -> Result<bool, Error> {
        for rec in records {
            let Ok(entry) = serde_json::from_slice::<AuditEntry>(&rec.bytes) else { return Ok(false) };
            match change_of(&entry) {
                Change::None => {}
                Change::Cert(serial) => match ca.db().get_meta(&serial)? {
                    Some(meta) => self.upsert(meta),
                    None => return Ok(false),
                },
                Change::Unknown => return Ok(false),
            }
            self.head = rec.seq;
        }
        Ok(true)
    }
}

/// Whether `needle` occurs in `hay`. For short haystacks such as addresses a scan for the first
/// byte is faster than `str::contains`, which prepares a searcher on every call.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((first, rest)) = needle.split_first() else { return true };
    let Some(last_start) = hay.len().checked_sub(needle.len()) else { return false };
    hay[..=last_start].iter().enumerate().any(|(i, b)| b == first && hay[i + 1..i + needle.len()] == *rest)
}

fn email_key(r: &CertRecord) -> Box<str> {
    r.email.as_ref().map(|e| e.lookup_key()).unwrap_or_default().into_boxed_str()
}

/// What an audit entry did to the certificates.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// Nothing.
    None,
    /// This certificate was stored or changed.
    Cert(Serial),
    /// Cannot tell: rebuild.
    Unknown,
}

fn change_of(e: &AuditEntry) -> Change {
    let ok = e.outcome == "ok";
    match &e.action {
        // A refusal stores nothing.
        AuditAction::Issue | AuditAction::Revoke if !ok => Change::None,
        AuditAction::Issue | AuditAction::Revoke => match e.serial.as_deref().map(str::parse::<Serial>) {
            Some(Ok(s)) => Change::Cert(s),
            _ => Change::Unknown,
        },
        AuditAction::Crl
        | AuditAction::EscrowExport
        | AuditAction::EscrowRecover
        | AuditAction::EscrowRequest
        | AuditAction::EscrowApprove
        | AuditAction::DirectoryAnonymous
        | AuditAction::ApiKeyCreate
        | AuditAction::ApiKeyRevoke
        | AuditAction::AuditCheckpoint
        | AuditAction::MailSenderAdd
        | AuditAction::MailSenderRemove
        | AuditAction::MailSenderAllow
        | AuditAction::MailSenderRenew
        | AuditAction::MailSeal
        | AuditAction::MailDeliver => Change::None,
        a if a.is_console() => Change::None,
        // `init` stores the CA certificates under one entry without a serial; and whatever is
        // new.
        _ => Change::Unknown,
    }
}

/// Every audit entry, oldest first, and the result of checking the chain.
#[derive(Debug, Clone)]
pub(crate) struct Audit {
    /// Every entry that decodes, oldest first.
    pub entries: Vec<AuditEntry>,
    /// The distinct actions, for the filter.
    pub actions: BTreeSet<String>,
    /// Entries verified, or the first break.
    pub verified: Result<u64, String>,
    /// When the whole chain was last checked from the first entry (by the CA's clock).
    pub full_check_at: DateTime<Utc>,
    /// The last record read.
    head: u64,
    /// The hash of the last verified entry.
    last_hash: String,
}

impl Audit {
    /// Reads and checks the whole log.
    fn build(ca: &Ca) -> Result<Audit, Error> {
        let now = ca.now();
        let records = audit_records_from(ca.db(), 1)?;
        let mut a = Audit {
            entries: Vec::with_capacity(records.len()),
            actions: BTreeSet::new(),
            verified: Ok(0),
            full_check_at: now,
            head: 0,
            last_hash: GENESIS_HASH.into(),
        };
        a.apply(&records);
        Ok(a)
    }

    /// Appends records, checking each against the chain while it is intact, with the rules of
    /// [`ca_core::audit::verify`].
    fn apply(&mut self, records: &[AuditRecord]) {
        for rec in records {
            let entry = serde_json::from_slice::<AuditEntry>(&rec.bytes);
            if let Ok(n) = self.verified {
                let expected = n + 1;
                let check = match &entry {
                    Err(e) => Err(format!("entry does not decode: {e}")),
                    Ok(e) if rec.seq != expected || e.seq != rec.seq => {
                        Err(format!("expected entry {expected}; entries are missing or out of place"))
                    }
                    Ok(e) if e.prev_hash != self.last_hash => Err("previous-hash link does not match".into()),
                    Ok(e) if e.expected_hash() != e.hash => Err("content does not match its hash".into()),
                    Ok(e) => Ok(e.hash.clone()),
                };
                match check {
                    Ok(hash) => {
                        self.last_hash = hash;
                        self.verified = Ok(expected);
                    }
                    Err(reason) => {
                        self.verified = Err(ca_core::Error::AuditBroken { seq: rec.seq, reason }.to_string())
                    }
                }
            }
            // An entry that does not decode is reported by the chain check.
            if let Ok(e) = entry {
                if !self.actions.contains(e.action.name()) {
                    self.actions.insert(e.action.name().to_string());
                }
                self.entries.push(e);
            }
            self.head = rec.seq;
        }
    }
}

/// A background check of the whole chain.
#[derive(Debug)]
struct RunningCheck {
    started: DateTime<Utc>,
    handle: JoinHandle<Result<u64, String>>,
}

#[derive(Debug)]
struct AuditSlot {
    view: Option<Arc<Audit>>,
    check: Option<RunningCheck>,
    /// When the next background check is due.
    check_due: Option<DateTime<Utc>>,
}

/// The cached views.
#[derive(Debug)]
pub(crate) struct Cache {
    certs: Mutex<Option<Arc<Certs>>>,
    audit: Mutex<AuditSlot>,
    /// Views built from scratch (rather than updated), for tests and logs.
    full_builds: AtomicUsize,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            certs: Mutex::new(None),
            audit: Mutex::new(AuditSlot { view: None, check: None, check_due: None }),
            full_builds: AtomicUsize::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The value behind `a`, copied only if a request still holds it.
fn unshare<T: Clone>(a: Arc<T>) -> T {
    Arc::try_unwrap(a).unwrap_or_else(|a| (*a).clone())
}

impl Cache {
    /// The certificates as of now: the view brought up to date with the audit entries written
    /// since it was last used.
    ///
    /// 1. no view yet: build it from the store;
    /// 2. read the audit records after the view's head; none: the view is current;
    /// 3. apply them (re-reading each certificate an entry names); an entry whose effect is not
    ///    known: build the view again.
    pub fn certs(&self, ca: &Ca) -> Result<Arc<Certs>, Error> {
        let mut slot = lock(&self.certs);
        let view = match slot.take() {
            None => self.build_certs(ca)?,
            Some(current) => {
                let new = audit_records_from(ca.db(), current.head + 1)?;
                if new.is_empty() {
                    current
                } else {
                    let mut c = unshare(current);
                    if c.apply(ca, &new)? {
                        Arc::new(c)
                    } else {
                        drop(c);
                        self.build_certs(ca)?
                    }
                }
            }
        };
        *slot = Some(view.clone());
        Ok(view)
    }

    fn build_certs(&self, ca: &Ca) -> Result<Arc<Certs>, Error> {
        self.full_builds.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("building the console's certificate view");
        Ok(Arc::new(Certs::build(ca)?))
    }

    fn build_audit(&self, ca: &Ca) -> Result<Arc<Audit>, Error> {
        self.full_builds.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("building the console's audit view");
        Ok(Arc::new(Audit::build(ca)?))
    }

    /// The audit log as of now, with the chain check.
    ///
    /// 1. collect the result of a finished background check of the whole chain; a break is
    ///    shown from now on;
    /// 2. no view yet, or new entries after a break: read and check the whole log;
    /// 3. otherwise append the entries after the view's head, checking each against the chain;
    /// 4. start a background check of the whole chain if one is due.
    pub fn audit(&self, ca: &Ca) -> Result<Arc<Audit>, Error> {
        let mut slot = lock(&self.audit);
        if slot.check.as_ref().is_some_and(|c| c.handle.is_finished()) {
            if let Some(RunningCheck { started, handle }) = slot.check.take() {
                let result = handle.join().unwrap_or_else(|_| Err("the chain check failed to run".into()));
                if let Some(v) = slot.view.take() {
                    let mut a = unshare(v);
                    match result {
                        Ok(_) => a.full_check_at = a.full_check_at.max(started),
                        Err(e) => {
                            tracing::error!(error = %e, "audit chain check failed");
                            if a.verified.is_ok() {
                                a.verified = Err(e);
                            }
                        }
                    }
                    slot.view = Some(Arc::new(a));
                }
            }
        }
        let view = match slot.view.take() {
            None => self.build_audit(ca)?,
            Some(current) => {
                let new = audit_records_from(ca.db(), current.head + 1)?;
                if new.is_empty() {
                    current
                } else if current.verified.is_err() {
                    drop(current);
                    self.build_audit(ca)?
                } else {
                    let mut a = unshare(current);
                    a.apply(&new);
                    Arc::new(a)
                }
            }
        };
        slot.view = Some(view.clone());
        let now = ca.now();
        let after_last = view.full_check_at + Duration::seconds(FULL_CHECK_SECS);
        let due = slot.check_due.map_or(after_last, |d| d.max(after_last));
        if slot.check.is_none() && view.verified.is_ok() && now >= due {
            slot.check_due = Some(now + Duration::seconds(FULL_CHECK_SECS));
            let check = ca.audit_checker();
            let spawned = std::thread::Builder::new()
                .name("audit-chain-check".into())
                .spawn(move || check().map_err(|e| e.to_string()));
            match spawned {
                Ok(handle) => slot.check = Some(RunningCheck { started: now, handle }),
                Err(e) => tracing::warn!(error = %e, "could not start the audit chain check"),
            }
        }
        Ok(view)
    }

    /// How many times a view was built from scratch.
    #[cfg(test)]
    pub fn full_builds(&self) -> usize {
        self.full_builds.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
