//! The audit log: append-only entries (actor, action, time, serial, outcome), each holding the
//! SHA-256 of the previous one, so that altering or removing any entry breaks the chain.
//!
//! An entry's hash is SHA-256 over its compact JSON encoding with `hash` set to the empty
//! string; the first entry's `prev_hash` is 64 zeros.
//!
//! Entries are also keyed: each new entry carries a `mac`, HMAC-SHA256 under the CA's audit key
//! ([`AuditKey`], kept sealed by key custody) over the same encoding without `mac` (so over its
//! `prev_hash` too); its hash then covers the `mac`. Someone who can write the database but not
//! open the key can rewrite an entry and re-hash every later one, but not make a `mac` that
//! verifies. Entries written before the key existed (a data directory of an earlier release) have
//! no `mac` and keep their hash: they are *legacy* entries, covered only by the hash chain, and
//! only allowed before the first keyed entry.
//!
//! A signed checkpoint ([`crate::checkpoint`]) states the sequence number and hash of the head at
//! a moment; [`verify_keyed`] with its [`CheckpointHead`] also finds a log truncated or rewritten
//! before it.

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
    /// A signed, timestamped checkpoint of the log's head was made.
    AuditCheckpoint,
    /// A mailbox validation: a value sent, a value confirmed, an ACME challenge answered (or
    /// refused).
    MailboxValidation,
    /// An ACME account or External Account Binding key was created, changed or revoked.
    Acme,
    /// A sender identity of sealed mail was added (its signing certificate issued).
    MailSenderAdd,
    /// A sender identity of sealed mail was removed.
    MailSenderRemove,
    /// An API key was allowed to send as a sender identity.
    MailSenderAllow,
    /// A sender identity's certificate was renewed (a new key and certificate in its place), by
    /// an officer or by `pki serve` before it expired (or the renewal was not put in use).
    MailSenderRenew,
    /// A message was sealed (signed and encrypted) or a signed invitation made: sender,
    /// recipient hash, certificate serial, message id and timestamp serial, never the body.
    MailSeal,
    /// A sealed message or invitation handed to the mail relay, with the relay's queue id; or
    /// refused: why it was not delivered (the kind of failure and the relay's reply code, never
    /// the relay's text, which may name the recipient).
    MailDeliver,
    /// An action this version does not know.
    Other(String),
}

impl AuditAction {
    /// Every action this version knows, with its stored name.
    const NAMED: [(AuditAction, &'static str); 32] = [
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
        (AuditAction::AuditCheckpoint, "audit.checkpoint"),
        (AuditAction::MailboxValidation, "mailbox.validation"),
        (AuditAction::Acme, "acme"),
        (AuditAction::MailSenderAdd, "mail.sender.add"),
        (AuditAction::MailSenderRemove, "mail.sender.remove"),
        (AuditAction::MailSenderAllow, "mail.sender.allow"),
        (AuditAction::MailSenderRenew, "mail.sender.renew"),
        (AuditAction::MailSeal, "mail.seal"),
        (AuditAction::MailDeliver, "mail.deliver"),
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
    /// Who did it (`uid:<uid>(<name>)` for the CLI — from the kernel, see `docs/audit-log.md`;
    /// `cli:<user>` in entries of earlier releases —, `console:<user>`, `system`).
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
    /// HMAC-SHA256 (hex) under the audit key over the entry without `mac` and with `hash` empty;
    /// absent in legacy entries, written before the log was keyed (and then not encoded, so that
    /// their hash is what it always was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Hash of this entry.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry must carry: SHA-256 over its compact JSON encoding with `hash` empty
    /// (its `mac` included). Readers that follow the log incrementally check each new entry with it.
    pub fn expected_hash(&self) -> String {
        self.compute_hash()
    }

    fn compute_hash(&self) -> String {
        let mut copy = self.clone();
        copy.hash = String::new();
        let bytes = serde_json::to_vec(&copy).unwrap_or_default();
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
    }

    /// What the `mac` covers: the compact JSON encoding with `hash` empty and no `mac`.
    fn mac_input(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.hash = String::new();
        copy.mac = None;
        let mut out = MAC_LABEL.to_vec();
        out.extend(serde_json::to_vec(&copy).unwrap_or_default());
        out
    }
}

/// Prefixed to what an entry's `mac` covers, so that the key authenticates nothing else.
const MAC_LABEL: &[u8] = b"pki audit entry v1\0";

/// The context the audit key is sealed under in key custody.
const KEY_CONTEXT: &str = "audit-log-hmac-key";

/// Where the sealed audit key is kept (the CA's settings in storage), hex.
const META_KEY: &str = "audit.hmac_key.sealed";

/// The HMAC-SHA256 key of the audit log. Generated at `init` (or when a data directory of an
/// earlier release is first opened), kept in storage only sealed by key custody
/// ([`hsm_sim::KeyCustody::seal_secret`]) and opened into memory when the CA opens. Neither its
/// bytes nor its sealed form are ever printed or logged.
#[derive(Clone)]
pub struct AuditKey(ring::hmac::Key);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    /// A key of these 32 bytes (tests; the CA uses [`AuditKey::load_or_create`]).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        AuditKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    /// Opens the sealed key of `db` with `custody`; creates, seals and stores one first when the
    /// database has none (a new CA, or a data directory of an earlier release).
    pub fn load_or_create(db: &CertDb, custody: &dyn hsm_sim::KeyCustody) -> Result<Self, Error> {
        let sealed = match db.meta_get(META_KEY)? {
            Some(hexed) => hex::decode(hexed.trim())
                .map_err(|_| cerdb::Error::Corrupt(format!("{META_KEY} is not hex")))?,
            None => {
                let mut fresh = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh)
                    .map_err(|_| Error::Config("no randomness for the audit key".into()))?;
                let sealed = custody.seal_secret(KEY_CONTEXT, &fresh)?;
                db.meta_put(META_KEY, &hex::encode(&sealed))?;
                tracing::info!("created the audit log's HMAC key, sealed by key custody");
                sealed
            }
        };
        let bytes = custody.open_secret(KEY_CONTEXT, &sealed)?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| cerdb::Error::Corrupt("the audit key is not 32 bytes".into()))?;
        Ok(AuditKey::from_bytes(&bytes))
    }

    /// Seals the audit key of `db`, sealed by `from` today, by `to` instead (`pki hsm import`
    /// moving a soft key store onto a token). Whether it was moved now: `false` when there is no
    /// key, or `to` seals it already (an earlier run moved it).
    pub fn reseal(
        db: &CertDb,
        from: &dyn hsm_sim::KeyCustody,
        to: &dyn hsm_sim::KeyCustody,
    ) -> Result<bool, Error> {
        let Some(hexed) = db.meta_get(META_KEY)? else { return Ok(false) };
        let sealed =
            hex::decode(hexed.trim()).map_err(|_| cerdb::Error::Corrupt(format!("{META_KEY} is not hex")))?;
        let Some(resealed) = hsm_sim::reseal_secret(from, to, KEY_CONTEXT, &sealed)? else {
            return Ok(false);
        };
        db.meta_put(META_KEY, &hex::encode(&resealed))?;
        Ok(true)
    }

    fn mac(&self, entry: &AuditEntry) -> String {
        hex::encode(ring::hmac::sign(&self.0, &entry.mac_input()).as_ref())
    }

    /// Whether `entry`'s `mac` (hex) is the one this key makes (compared in constant time).
    fn verifies(&self, entry: &AuditEntry, mac_hex: &str) -> bool {
        hex::decode(mac_hex).is_ok_and(|tag| ring::hmac::verify(&self.0, &entry.mac_input(), &tag).is_ok())
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
    key: AuditKey,
}

impl Chained {
    /// `drafts`, all at `now`, each keyed with `key`.
    pub fn new(drafts: Vec<AuditDraft>, now: DateTime<Utc>, key: AuditKey) -> Self {
        Chained { drafts, now, key }
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
                mac: None,
                hash: String::new(),
            };
            e.mac = Some(self.key.mac(&e));
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
    key: AuditKey,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

pub(crate) fn decode(rec: &AuditRecord) -> Result<AuditEntry, Error> {
    serde_json::from_slice(&rec.bytes)
        .map_err(|e| Error::AuditBroken { seq: rec.seq, reason: format!("entry does not decode: {e}") })
}

impl AuditLog {
    /// The log of `db`, keyed with `key`; its last entry must decode (the next entry chains onto
    /// its hash).
    pub fn open(db: CertDb, key: AuditKey) -> Result<Self, Error> {
        if let Some(rec) = db.last_audit()? {
            decode(&rec)?;
        }
        Ok(AuditLog { db, key })
    }

    /// The key the entries are keyed with.
    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// Hands `drafts` to `store` as an [`cerdb::AuditChain`], which `store` passes to the storage
    /// write that records them together with whatever they describe.
    pub fn commit<T>(
        &self,
        drafts: Vec<AuditDraft>,
        now: DateTime<Utc>,
        store: impl FnOnce(&Chained) -> Result<T, Error>,
    ) -> Result<T, Error> {
        store(&Chained::new(drafts, now, self.key.clone()))
    }

    /// Appends one entry on its own, durably.
    pub fn append(&self, draft: AuditDraft, now: DateTime<Utc>) -> Result<(), Error> {
        Ok(self.db.append_audit(&Chained::new(vec![draft], now, self.key.clone()))?)
    }
}

/// Checks the whole hash chain, without the keys; returns the number of entries, or the first
/// broken entry. [`verify_keyed`] checks the `mac`s as well.
pub fn verify(db: &CertDb) -> Result<u64, Error> {
    let mut walk = Walk::new(None, None);
    for rec in db.audit_records() {
        walk.next(&rec?)?;
    }
    walk.finish().map(|r| r.entries)
}

/// What a checkpoint says of the log ([`crate::checkpoint::Checkpoint`]): its entry `seq` had
/// hash `head_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointHead {
    /// The sequence number of the head entry (= the number of entries then).
    pub seq: u64,
    /// Its hash.
    pub head_hash: String,
}

/// What [`verify_keyed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReport {
    /// Entries in the log.
    pub entries: u64,
    /// Legacy entries (no `mac`) at the start of the log, covered only by the hash chain.
    pub legacy: u64,
}

/// Checks the whole log: the hash chain, every entry's `mac` under `key` (entries without one
/// are accepted only before the first that has one), and, with a checkpoint, that the log reaches
/// the checkpoint's entry and that entry's hash is the checkpoint's head hash. Returns what it
/// found, or the first broken entry:
///
/// - an entry missing before the checkpoint's (the log truncated, or one removed): names the
///   missing sequence number;
/// - an entry rewritten, the later ones re-hashed: its `mac` fails, naming it (a legacy entry has
///   none; then the head hash at the checkpoint differs, naming the checkpoint's entry);
/// - an unkeyed entry after a keyed one: names it.
pub fn verify_keyed(
    db: &CertDb,
    key: &AuditKey,
    checkpoint: Option<&CheckpointHead>,
) -> Result<AuditReport, Error> {
    let mut walk = Walk::new(Some(key), checkpoint);
    for rec in db.audit_records() {
        walk.next(&rec?)?;
    }
    walk.finish()
}

/// One pass over the log, entry by entry.
struct Walk<'a> {
    key: Option<&'a AuditKey>,
    checkpoint: Option<&'a CheckpointHead>,
    prev: String,
    expected: u64,
    legacy: u64,
    first_keyed: Option<u64>,
}

impl<'a> Walk<'a> {
    fn new(key: Option<&'a AuditKey>, checkpoint: Option<&'a CheckpointHead>) -> Self {
        Walk { key, checkpoint, prev: GENESIS_HASH.to_string(), expected: 1, legacy: 0, first_keyed: None }
    }

    fn next(&mut self, rec: &AuditRecord) -> Result<(), Error> {
        let broken = |seq: u64, reason: String| Err(Error::AuditBroken { seq, reason });
        if rec.seq != self.expected {
            if let Some(cp) = self.checkpoint.filter(|cp| self.expected <= cp.seq) {
                return broken(
                    self.expected,
                    format!(
                        "missing (the next entry is {}; the checkpoint covers entries 1 to {})",
                        rec.seq, cp.seq
                    ),
                );
            }
            return broken(
                rec.seq,
                format!("expected entry {}; entries are missing or out of place", self.expected),
            );
        }
        let e = decode(rec)?;
        if e.seq != rec.seq {
            return broken(
                rec.seq,
                format!("expected entry {}; entries are missing or out of place", self.expected),
            );
        }
        if e.prev_hash != self.prev {
            return broken(rec.seq, "previous-hash link does not match".into());
        }
        if e.compute_hash() != e.hash {
            return broken(rec.seq, "content does not match its hash".into());
        }
        if let Some(key) = self.key {
            match (&e.mac, self.first_keyed) {
                (Some(mac), _) => {
                    if !key.verifies(&e, mac) {
                        return broken(
                            rec.seq,
                            "its mac does not verify under the audit key: rewritten (later entries re-hashed), \
                             or written without the key"
                                .into(),
                        );
                    }
                    self.first_keyed.get_or_insert(rec.seq);
                }
                (None, Some(first)) => {
                    return broken(
                        rec.seq,
                        format!("has no mac, though the log is keyed from entry {first} on"),
                    );
                }
                (None, None) => self.legacy += 1,
            }
        }
        if let Some(cp) = self.checkpoint.filter(|cp| cp.seq == rec.seq) {
            if e.hash != cp.head_hash {
                return broken(
                    rec.seq,
                    "its hash is not the checkpoint's head hash: this entry or one before it was rewritten"
                        .into(),
                );
            }
        }
        self.prev = e.hash;
        self.expected += 1;
        Ok(())
    }

    fn finish(self) -> Result<AuditReport, Error> {
        let last = self.expected - 1;
        if let Some(cp) = self.checkpoint.filter(|cp| last < cp.seq) {
            return Err(Error::AuditBroken {
                seq: self.expected,
                reason: format!(
                    "missing: the log ends at entry {last}, the checkpoint covers entries 1 to {} (truncated)",
                    cp.seq
                ),
            });
        }
        Ok(AuditReport { entries: last, legacy: self.legacy })
    }
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

#[cfg(test)]
mod keyed_tests {
    use super::*;

    fn new_db() -> (tempfile::TempDir, CertDb) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = CertDb::open(dir.path().join("db")).expect("open");
        (dir, db)
    }

    fn draft(n: u64) -> AuditDraft {
        AuditDraft::ok("cli:t", AuditAction::Issue, None, format!("entry {n}"))
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    /// The database at `dir` opened again, so that the engine reads the log's head anew after
    /// raw writes.
    fn reopen(dir: &tempfile::TempDir, db: CertDb) -> CertDb {
        drop(db);
        CertDb::open(dir.path().join("db")).expect("reopen")
    }

    /// `n` entries written without a key, as an earlier release wrote them (raw: reopen after).
    fn legacy_entries(db: &CertDb, n: u64) {
        for i in 0..n {
            let last = raw(db).entries("audit").expect("entries").pop();
            let (seq, prev) = match &last {
                Some((k, v)) => (
                    u64::from_be_bytes(k.as_slice().try_into().expect("key")) + 1,
                    serde_json::from_slice::<AuditEntry>(v).expect("decode").hash,
                ),
                None => (1, GENESIS_HASH.to_string()),
            };
            let mut e = AuditEntry {
                seq,
                time: now(),
                actor: "cli:old".into(),
                action: AuditAction::Issue,
                serial: None,
                outcome: "ok".into(),
                details: format!("legacy {i}"),
                prev_hash: prev,
                mac: None,
                hash: String::new(),
            };
            e.hash = e.compute_hash();
            let bytes = serde_json::to_vec(&e).expect("encode");
            assert!(!String::from_utf8_lossy(&bytes).contains("\"mac\""), "a legacy entry encodes no mac");
            raw(db).insert("audit", &seq.to_be_bytes(), &bytes).expect("insert");
        }
    }

    fn raw(db: &CertDb) -> &cerdb::sled_engine::RawTrees {
        db.raw_trees().expect("embedded engine")
    }

    fn entry(db: &CertDb, seq: u64) -> AuditEntry {
        serde_json::from_slice(&raw(db).get("audit", &seq.to_be_bytes()).expect("get").expect("some"))
            .expect("decode")
    }

    fn put(db: &CertDb, e: &AuditEntry) {
        raw(db)
            .insert("audit", &e.seq.to_be_bytes(), &serde_json::to_vec(e).expect("encode"))
            .expect("insert");
    }

    /// Rewrites entry `k` and re-hashes it and every later entry, as someone who can write the
    /// database but has no key would.
    fn rewrite_and_rehash(db: &CertDb, k: u64, n: u64) {
        let mut prev = if k == 1 { GENESIS_HASH.to_string() } else { entry(db, k - 1).hash };
        for seq in k..=n {
            let mut e = entry(db, seq);
            if seq == k {
                e.details = "nothing happened".into();
            }
            e.prev_hash = prev;
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            put(db, &e);
        }
    }

    fn head(db: &CertDb) -> CheckpointHead {
        let rec = db.last_audit().expect("last").expect("some");
        CheckpointHead { seq: rec.seq, head_hash: decode(&rec).expect("decode").hash }
    }

    fn broken_at(r: Result<AuditReport, Error>) -> (u64, String) {
        match r {
            Err(Error::AuditBroken { seq, reason }) => (seq, reason),
            other => panic!("expected a broken entry, got {other:?}"),
        }
    }

    #[test]
    fn keyed_entries_verify_and_a_rewrite_rehashed_after_it_fails_at_the_rewritten_entry() {
        let (_d, db) = new_db();
        let key = AuditKey::from_bytes(&[7; 32]);
        let log = AuditLog::open(db.clone(), key.clone()).expect("log");
        for n in 1..=6 {
            log.append(draft(n), now()).expect("append");
        }
        assert_eq!(verify_keyed(&db, &key, None).expect("verifies"), AuditReport { entries: 6, legacy: 0 });
        let cp = head(&db);
        assert_eq!(verify_keyed(&db, &key, Some(&cp)).expect("verifies").entries, 6);
        // Another key does not verify them.
        let other = AuditKey::from_bytes(&[8; 32]);
        assert_eq!(broken_at(verify_keyed(&db, &other, None)).0, 1);

        rewrite_and_rehash(&db, 3, 6);
        assert_eq!(verify(&db).expect("the hash chain alone is fooled"), 6);
        let (seq, reason) = broken_at(verify_keyed(&db, &key, None));
        assert_eq!(seq, 3, "{reason}");
        assert!(reason.contains("mac does not verify"), "{reason}");
        assert_eq!(broken_at(verify_keyed(&db, &key, Some(&cp))).0, 3);
    }

    #[test]
    fn truncation_is_found_against_a_checkpoint_naming_the_first_missing_entry() {
        let (_d, db) = new_db();
        let key = AuditKey::from_bytes(&[1; 32]);
        let log = AuditLog::open(db.clone(), key.clone()).expect("log");
        for n in 1..=5 {
            log.append(draft(n), now()).expect("append");
        }
        let cp = head(&db);
        for seq in [5u64, 4] {
            raw(&db).remove("audit", &seq.to_be_bytes()).expect("remove");
        }
        drop(log);
        let db = reopen(&_d, db);
        let log = AuditLog::open(db.clone(), key.clone()).expect("log");
        // Without the checkpoint the shorter log is intact.
        assert_eq!(verify_keyed(&db, &key, None).expect("intact").entries, 3);
        let (seq, reason) = broken_at(verify_keyed(&db, &key, Some(&cp)));
        assert_eq!(seq, 4, "{reason}");
        assert!(reason.contains("truncated") && reason.contains("1 to 5"), "{reason}");
        // A hole before the checkpoint's entry names the missing one.
        log.append(draft(4), now()).expect("append");
        log.append(draft(5), now()).expect("append");
        let cp = head(&db);
        raw(&db).remove("audit", &2u64.to_be_bytes()).expect("remove");
        let (seq, reason) = broken_at(verify_keyed(&db, &key, Some(&cp)));
        assert_eq!(seq, 2, "{reason}");
        assert!(reason.contains("missing"), "{reason}");
        // A head hash that differs (another log, or a rewrite of a legacy entry) names the
        // checkpoint's entry.
        let (_d2, db2) = new_db();
        let log2 = AuditLog::open(db2.clone(), key.clone()).expect("log");
        for n in 1..=5 {
            log2.append(draft(n + 10), now()).expect("append");
        }
        let (seq, reason) = broken_at(verify_keyed(&db2, &key, Some(&cp)));
        assert_eq!(seq, 5, "{reason}");
        assert!(reason.contains("not the checkpoint's head hash"), "{reason}");
    }

    #[test]
    fn legacy_entries_before_the_first_keyed_one_are_counted_and_after_it_refused() {
        let (d, db) = new_db();
        legacy_entries(&db, 3);
        let db = reopen(&d, db);
        let key = AuditKey::from_bytes(&[3; 32]);
        assert_eq!(
            verify_keyed(&db, &key, None).expect("legacy only"),
            AuditReport { entries: 3, legacy: 3 }
        );
        let log = AuditLog::open(db.clone(), key.clone()).expect("log");
        log.append(draft(4), now()).expect("append");
        log.append(draft(5), now()).expect("append");
        assert_eq!(verify_keyed(&db, &key, None).expect("mixed"), AuditReport { entries: 5, legacy: 3 });
        let cp = head(&db);

        // A legacy entry rewritten, the rest re-hashed: no mac to fail, but the keyed entry after
        // it was keyed over its old prev_hash, and the head differs from the checkpoint's.
        rewrite_and_rehash(&db, 2, 5);
        let (seq, reason) = broken_at(verify_keyed(&db, &key, Some(&cp)));
        assert_eq!(seq, 4, "the first keyed entry's mac covers its prev_hash: {reason}");

        // An unkeyed entry after a keyed one.
        let (d2, db2) = new_db();
        legacy_entries(&db2, 1);
        let db2 = reopen(&d2, db2);
        AuditLog::open(db2.clone(), key.clone()).expect("log").append(draft(2), now()).expect("append");
        legacy_entries(&db2, 1);
        let (seq, reason) = broken_at(verify_keyed(&db2, &key, None));
        assert_eq!(seq, 3, "{reason}");
        assert!(reason.contains("has no mac, though the log is keyed from entry 2 on"), "{reason}");
    }

    #[test]
    fn the_key_is_sealed_in_storage_and_opens_again() {
        let (d, db) = new_db();
        let hsm =
            hsm_sim::HsmSim::open(d.path().join("keys"), &hsm_sim::MasterKeySource::KeyFile).expect("hsm");
        let key = AuditKey::load_or_create(&db, &hsm).expect("create");
        let sealed = db.meta_get(META_KEY).expect("meta").expect("stored");
        let log = AuditLog::open(db.clone(), key).expect("log");
        log.append(draft(1), now()).expect("append");
        let again = AuditKey::load_or_create(&db, &hsm).expect("open");
        assert_eq!(db.meta_get(META_KEY).expect("meta").expect("stored"), sealed, "not replaced");
        assert_eq!(verify_keyed(&db, &again, None).expect("same key").entries, 1);
        assert_eq!(format!("{again:?}"), "AuditKey(..)");
    }
}
