//! The audit log: append-only entries (actor, action, time, serial, outcome), each holding the
//! SHA-256 of the previous one, so that altering or removing any entry breaks the chain.
//!
//! An entry's hash is SHA-256 over its compact JSON encoding with `hash` set to the empty
//! string; the first entry's `prev_hash` is 64 zeros.

use cerdb::{AuditRecord, CertDb, Serial};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position, from 1.
    pub seq: u64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Who did it (`cli:<user>`, `console:<user>`, `system`).
    pub actor: String,
    /// What was done (`init`, `issue`, `revoke`, `crl`, `escrow.export`, `escrow.recover`, ...).
    pub action: String,
    /// The certificate concerned, if any.
    pub serial: Option<String>,
    /// `ok`, or `refused: <reason>`.
    pub outcome: String,
    /// Further facts (e-mail, usage, reason, fingerprint...).
    pub details: String,
    /// Hash of the previous entry.
    pub prev_hash: String,
    /// Hash of this entry.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry must carry: SHA-256 over its compact JSON encoding with `hash` empty.
    /// Readers that follow the log incrementally check each new entry with it.
    pub fn expected_hash(&self) -> String {
        self.compute_hash()
    }

    fn compute_hash(&self) -> String {
        let mut copy = self.clone();
        copy.hash = String::new();
        let bytes = serde_json::to_vec(&copy).unwrap_or_default();
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
    }
}

/// An entry before it takes its place in the chain.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Which certificate.
    pub serial: Option<Serial>,
    /// `ok` or `refused: ...`.
    pub outcome: String,
    /// Further facts.
    pub details: String,
}

impl AuditDraft {
    /// A successful action.
    pub fn ok(actor: &str, action: &str, serial: Option<&Serial>, details: impl Into<String>) -> Self {
        AuditDraft {
            actor: actor.into(),
            action: action.into(),
            serial: serial.cloned(),
            outcome: "ok".into(),
            details: details.into(),
        }
    }

    /// A refused action.
    pub fn refused(
        actor: &str,
        action: &str,
        serial: Option<&Serial>,
        why: &str,
        details: impl Into<String>,
    ) -> Self {
        AuditDraft {
            actor: actor.into(),
            action: action.into(),
            serial: serial.cloned(),
            outcome: format!("refused: {why}"),
            details: details.into(),
        }
    }
}

/// Drafts waiting to be chained: the store asks for their records, with the log's last record,
/// inside the write that records what they describe ([`cerdb::AuditChain`]).
#[derive(Debug)]
pub struct Chained {
    drafts: Vec<AuditDraft>,
    now: DateTime<Utc>,
}

impl Chained {
    /// `drafts`, all at `now`.
    pub fn new(drafts: Vec<AuditDraft>, now: DateTime<Utc>) -> Self {
        Chained { drafts, now }
    }
}

impl cerdb::AuditChain for Chained {
    fn records_after(&self, last: Option<&AuditRecord>) -> Result<Vec<AuditRecord>, cerdb::Error> {
        let (mut seq, mut prev) = match last {
            Some(rec) => {
                let e = decode(rec).map_err(|e| cerdb::Error::Corrupt(e.to_string()))?;
                (rec.seq + 1, e.hash)
            }
            None => (1, GENESIS_HASH.to_string()),
        };
        let mut records = Vec::with_capacity(self.drafts.len());
        for d in &self.drafts {
            let mut e = AuditEntry {
                seq,
                time: self.now,
                actor: d.actor.clone(),
                action: d.action.clone(),
                serial: d.serial.as_ref().map(|s| s.to_string()),
                outcome: d.outcome.clone(),
                details: d.details.clone(),
                prev_hash: prev,
                hash: String::new(),
            };
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            let bytes = serde_json::to_vec(&e).map_err(|e| cerdb::Error::Corrupt(e.to_string()))?;
            records.push(AuditRecord { seq, bytes });
            seq += 1;
        }
        Ok(records)
    }
}

/// The writer side of the log. It keeps no head of its own: the store reads the last entry
/// inside each write that appends to the log, so any number of handles — in one process or
/// several — write one chain.
pub struct AuditLog {
    db: CertDb,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

fn decode(rec: &AuditRecord) -> Result<AuditEntry, Error> {
    serde_json::from_slice(&rec.bytes)
        .map_err(|e| Error::AuditBroken { seq: rec.seq, reason: format!("entry does not decode: {e}") })
}

impl AuditLog {
    /// The log of `db`; its last entry must decode (the next entry chains onto its hash).
    pub fn open(db: CertDb) -> Result<Self, Error> {
        if let Some(rec) = db.last_audit()? {
            decode(&rec)?;
        }
        Ok(AuditLog { db })
    }

    /// Hands `drafts` to `store` as an [`cerdb::AuditChain`], which `store` passes to the storage
    /// write that records them together with whatever they describe.
    pub fn commit<T>(
        &self,
        drafts: Vec<AuditDraft>,
        now: DateTime<Utc>,
        store: impl FnOnce(&Chained) -> Result<T, Error>,
    ) -> Result<T, Error> {
        store(&Chained::new(drafts, now))
    }

    /// Appends one entry on its own, durably.
    pub fn append(&self, draft: AuditDraft, now: DateTime<Utc>) -> Result<(), Error> {
        Ok(self.db.append_audit(&Chained::new(vec![draft], now))?)
    }
}

/// Checks the whole chain; returns the number of entries, or the first broken entry.
pub fn verify(db: &CertDb) -> Result<u64, Error> {
    let mut prev = GENESIS_HASH.to_string();
    let mut expected = 1u64;
    for rec in db.audit_records() {
        let rec = rec?;
        let e = decode(&rec)?;
        if rec.seq != expected || e.seq != rec.seq {
            return Err(Error::AuditBroken {
                seq: rec.seq,
                reason: format!("expected entry {expected}; entries are missing or out of place"),
            });
        }
        if e.prev_hash != prev {
            return Err(Error::AuditBroken {
                seq: rec.seq,
                reason: "previous-hash link does not match".into(),
            });
        }
        if e.compute_hash() != e.hash {
            return Err(Error::AuditBroken {
                seq: rec.seq,
                reason: "content does not match its hash".into(),
            });
        }
        prev = e.hash;
        expected += 1;
    }
    Ok(expected - 1)
}

/// Every entry, oldest first.
pub fn entries(db: &CertDb) -> Result<Vec<AuditEntry>, Error> {
    db.audit_records().map(|r| decode(&r?)).collect()
}
