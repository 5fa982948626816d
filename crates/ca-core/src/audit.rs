//! The audit log: append-only entries (actor, action, time, serial, outcome), each holding the
//! SHA-256 of the previous one, so that altering or removing any entry breaks the chain.
//!
//! An entry's hash is SHA-256 over its compact JSON encoding with `hash` set to the empty
//! string; the first entry's `prev_hash` is 64 zeros.

use cerdb::{AuditRecord, CertDb, Serial};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Error;

/// What an audit entry records: the vocabulary every crate that writes or reads the log shares.
/// Stored as its name (`issue`, `console.login`, ...), so entries hash as they always did; a name
/// this version does not know (written by a later one) reads as [`AuditAction::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AuditAction {
    /// The CA hierarchy was created.
    Init,
    /// A certificate was issued (or its issuance refused).
    Issue,
    /// A certificate was revoked.
    Revoke,
    /// A CRL was signed.
    Crl,
    /// An escrowed key left in a PKCS#12 at issuance.
    EscrowExport,
    /// An escrowed key was released to the officer who requested its recovery, once enough
    /// officers had approved (or the release was refused).
    EscrowRecover,
    /// An API key of the directory was created.
    ApiKeyCreate,
    /// An API key of the directory was revoked.
    ApiKeyRevoke,
    /// The anonymous lookup policy of the directory changed.
    DirectoryAnonymous,
    /// A console login.
    ConsoleLogin,
    /// A console logout.
    ConsoleLogout,
    /// A console account was locked after failed logins.
    ConsoleLockout,
    /// A console user confirmed a sensitive action with a fresh TOTP code.
    ConsoleStepUp,
    /// A console user changed their password.
    ConsolePasswordChange,
    /// A console user enrolled TOTP.
    ConsoleTotpEnrol,
    /// A console account was added.
    ConsoleUserAdd,
    /// A console account was disabled.
    ConsoleUserDisable,
    /// A console account was enabled.
    ConsoleUserEnable,
    /// A console account was reset.
    ConsoleUserReset,
    /// One of the CA's own certificates was revoked by `pki ca compromise` (or it was refused).
    OwnCertCompromise,
    /// An officer asked for the recovery of an escrowed key (or was refused).
    EscrowRequest,
    /// A second officer approved a recovery request (or was refused).
    EscrowApprove,
    /// An administrator other than the one who reset a console account confirmed the reset
    /// (or was refused).
    ConsoleUserConfirmReset,
    /// An action this version does not know.
    Other(String),
}

impl AuditAction {
    /// Every action this version knows, with its stored name.
    const NAMED: [(AuditAction, &'static str); 23] = [
        (AuditAction::Init, "init"),
        (AuditAction::Issue, "issue"),
        (AuditAction::Revoke, "revoke"),
        (AuditAction::Crl, "crl"),
        (AuditAction::EscrowExport, "escrow.export"),
        (AuditAction::EscrowRecover, "escrow.recover"),
        (AuditAction::ApiKeyCreate, "apikey.create"),
        (AuditAction::ApiKeyRevoke, "apikey.revoke"),
        (AuditAction::DirectoryAnonymous, "directory.anonymous"),
        (AuditAction::ConsoleLogin, "console.login"),
        (AuditAction::ConsoleLogout, "console.logout"),
        (AuditAction::ConsoleLockout, "console.lockout"),
        (AuditAction::ConsoleStepUp, "console.step_up"),
        (AuditAction::ConsolePasswordChange, "console.password.change"),
        (AuditAction::ConsoleTotpEnrol, "console.totp.enrol"),
        (AuditAction::ConsoleUserAdd, "console.user.add"),
        (AuditAction::ConsoleUserDisable, "console.user.disable"),
        (AuditAction::ConsoleUserEnable, "console.user.enable"),
        (AuditAction::ConsoleUserReset, "console.user.reset"),
        (AuditAction::OwnCertCompromise, "own_cert.compromise"),
        (AuditAction::EscrowRequest, "escrow.request"),
        (AuditAction::EscrowApprove, "escrow.approve"),
        (AuditAction::ConsoleUserConfirmReset, "console.user.confirm_reset"),
    ];

    /// The stored name.
    pub fn name(&self) -> &str {
        match self {
            AuditAction::Other(name) => name,
            known => Self::NAMED.iter().find(|(a, _)| a == known).map(|(_, n)| *n).unwrap_or_default(),
        }
    }

    /// Whether the action belongs to the console (`console.*`).
    pub fn is_console(&self) -> bool {
        self.name().starts_with("console.")
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&str> for AuditAction {
    fn from(name: &str) -> Self {
        Self::NAMED
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(a, _)| a.clone())
            .unwrap_or_else(|| AuditAction::Other(name.to_string()))
    }
}

impl Serialize for AuditAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for AuditAction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(AuditAction::from(name.as_str()))
    }
}

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
    /// What was done.
    pub action: AuditAction,
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
    pub action: AuditAction,
    /// Which certificate.
    pub serial: Option<Serial>,
    /// `ok` or `refused: ...`.
    pub outcome: String,
    /// Further facts.
    pub details: String,
}

impl AuditDraft {
    /// A successful action.
    pub fn ok(actor: &str, action: AuditAction, serial: Option<&Serial>, details: impl Into<String>) -> Self {
        AuditDraft {
            actor: actor.into(),
            action,
            serial: serial.cloned(),
            outcome: "ok".into(),
            details: details.into(),
        }
    }

    /// A refused action.
    pub fn refused(
        actor: &str,
        action: AuditAction,
        serial: Option<&Serial>,
        why: &str,
        details: impl Into<String>,
    ) -> Self {
        AuditDraft {
            actor: actor.into(),
            action,
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

#[cfg(test)]
mod action_tests {
    use super::AuditAction;

    #[test]
    fn every_action_reads_back_from_its_name_and_unknown_names_are_kept() {
        for (action, name) in AuditAction::NAMED.iter() {
            assert_eq!(action.name(), *name);
            assert_eq!(AuditAction::from(*name), *action);
            let json = serde_json::to_string(action).expect("encode");
            assert_eq!(json, format!("\"{name}\""), "stored as the name, as before the enum");
            assert_eq!(serde_json::from_str::<AuditAction>(&json).expect("decode"), *action);
        }
        let later = AuditAction::from("ca.compromise");
        assert_eq!(later, AuditAction::Other("ca.compromise".into()));
        assert_eq!(later.to_string(), "ca.compromise");
        assert!(AuditAction::ConsoleUserReset.is_console() && !AuditAction::Issue.is_console());
    }
}
