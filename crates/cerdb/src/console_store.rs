//! Durable storage of the admin console: its accounts, server-side sessions and its own secrets,
//! in trees of their own in the data directory's one sled database.
//!
//! The `admin-web` crate never touches sled; it holds a [`ConsoleStore`] opened on
//! [`crate::CertDb::sled_db`]. The rules (password policy, lockout, TOTP, roles) are the
//! console's; this module only stores what it is given.
//!
//! Trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `console_users` | user name (normalised, UTF-8) | JSON [`ConsoleUser`] |
//! | `console_sessions` | SHA-256 of the session id (32 bytes) | JSON [`ConsoleSession`] |
//! | `console_meta` | text key | bytes (such as the key that binds login-form CSRF tokens) |
//!
//! Session ids are stored only as their SHA-256, so a copy of the database does not hand out
//! live session cookies. Account writes are flushed before they return; session writes are not
//! (a session lost in a crash only means logging in again).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::{Db, Tree};

use crate::Error;

/// A console account name: 1 to 64 characters of `a-z`, `0-9`, `.`, `_` and `-`, starting with a
/// letter or digit; upper-case letters are folded to lower case on construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

impl UserName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = String;
    /// The error is one line naming the problem (as `ca_core::CaCert` does: the storage error enum is not
    /// the place for the console's input checks).
    fn from_str(s: &str) -> Result<Self, String> {
        let name = s.trim().to_ascii_lowercase();
        let bad = |why: &str| Err(format!("invalid user name {s:?}: {why}"));
        if name.is_empty() || name.len() > 64 {
            return bad("a user name has 1 to 64 characters");
        }
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
            return bad("use only letters, digits, '.', '_' and '-'");
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return bad("a user name starts with a letter or digit");
        }
        Ok(UserName(name))
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for UserName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<UserName> for String {
    fn from(n: UserName) -> String {
        n.0
    }
}

/// What a console account may do; the permissions of each role are the console's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleRole {
    /// Manages accounts and settings.
    Admin,
    /// Issues and revokes certificates and recovers escrowed keys.
    Officer,
    /// Reads certificates and the audit log and verifies timestamps.
    Auditor,
}

impl ConsoleRole {
    /// Every role.
    pub const ALL: [ConsoleRole; 3] = [ConsoleRole::Admin, ConsoleRole::Officer, ConsoleRole::Auditor];

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            ConsoleRole::Admin => "admin",
            ConsoleRole::Officer => "officer",
            ConsoleRole::Auditor => "auditor",
        }
    }
}

impl FromStr for ConsoleRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "admin" => Ok(ConsoleRole::Admin),
            "officer" => Ok(ConsoleRole::Officer),
            "auditor" => Ok(ConsoleRole::Auditor),
            _ => Err(format!("invalid role {s:?}: expected admin, officer or auditor")),
        }
    }
}

impl fmt::Display for ConsoleRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One console account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleUser {
    /// The login name.
    pub name: UserName,
    /// The role.
    pub role: ConsoleRole,
    /// The password's hash (a PHC string).
    pub password_hash: String,
    /// Set for a one-time password: the next login must choose a new password.
    pub must_change_password: bool,
    /// The TOTP secret once enrolment is confirmed, sealed by key custody (the console seals
    /// and opens it; it is never stored in clear).
    #[serde(default, with = "opt_hex")]
    pub totp_sealed: Option<Vec<u8>>,
    /// The TOTP secret in clear, as accounts enrolled before secrets were sealed hold it; the
    /// console seals it into `totp_sealed` and clears this at the account's next TOTP login.
    #[serde(default, with = "opt_hex", skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<Vec<u8>>,
    /// The last TOTP time step accepted, so that no code is accepted twice.
    pub totp_last_step: u64,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
    /// Failed logins since the last success or lockout.
    pub failed_logins: u32,
    /// Locked until this instant, after too many failed logins.
    pub locked_until: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last successful login.
    pub last_login: Option<DateTime<Utc>>,
}

impl ConsoleUser {
    /// Whether the account has confirmed a TOTP enrolment (sealed, or in clear from before).
    pub fn has_totp(&self) -> bool {
        self.totp_sealed.is_some() || self.totp_secret.is_some()
    }
}

/// A console session id: 256 random bits, sent as 64 hex digits in a cookie.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// From 32 random bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionId(bytes)
    }

    /// The storage key: SHA-256 of the id.
    fn key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        k.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &self.0).as_ref());
        k
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never log a live session id.
        f.write_str("SessionId(..)")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for SessionId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut b = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut b).is_err() {
            return Err("a session id is 64 hex digits".into());
        }
        Ok(SessionId(b))
    }
}

/// How far a session has come through login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStage {
    /// The password was right; the TOTP code is still due.
    NeedTotp,
    /// Logged in with a one-time password: a new password is due.
    NeedNewPassword,
    /// No TOTP secret yet: enrolment is due.
    NeedTotpEnrolment,
    /// Fully logged in.
    Active,
}

/// A server-side console session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSession {
    /// Whose.
    pub user: UserName,
    /// How far through login.
    pub stage: SessionStage,
    /// Created (the absolute timeout counts from here).
    pub created_at: DateTime<Utc>,
    /// Last request (the idle timeout counts from here).
    pub last_seen: DateTime<Utc>,
    /// The CSRF token of this session's forms (hex).
    pub csrf_token: String,
    /// When a TOTP code was last entered in this session (step-up for high-risk actions).
    pub step_up_at: Option<DateTime<Utc>>,
    /// During enrolment: the secret shown, not yet confirmed by a code, sealed by key custody.
    #[serde(default, with = "opt_hex")]
    pub pending_totp_sealed: Option<Vec<u8>>,
}

/// The console's trees.
#[derive(Clone)]
pub struct ConsoleStore {
    db: Db,
    users: Tree,
    sessions: Tree,
    meta: Tree,
}

impl fmt::Debug for ConsoleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleStore").finish_non_exhaustive()
    }
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Corrupt(e.to_string()))
}

impl ConsoleStore {
    /// Opens (creating) the console's trees in `db`.
    pub fn open(db: &Db) -> Result<Self, Error> {
        Ok(ConsoleStore {
            users: db.open_tree("console_users")?,
            sessions: db.open_tree("console_sessions")?,
            meta: db.open_tree("console_meta")?,
            db: db.clone(),
        })
    }

    /// One account.
    pub fn user(&self, name: &UserName) -> Result<Option<ConsoleUser>, Error> {
        self.users.get(name.as_str())?.map(|v| decode("console user", &v)).transpose()
    }

    /// Every account, by name.
    pub fn users(&self) -> Result<Vec<ConsoleUser>, Error> {
        self.users.iter().map(|r| decode("console user", &r?.1)).collect()
    }

    /// Whether there is no account at all.
    pub fn has_no_users(&self) -> Result<bool, Error> {
        Ok(self.users.first()?.is_none())
    }

    /// Stores a new account and flushes; `false` (and nothing written) when the name is taken.
    pub fn insert_user(&self, user: &ConsoleUser) -> Result<bool, Error> {
        let enc = encode(user)?;
        let done = self.users.compare_and_swap(user.name.as_str(), None as Option<&[u8]>, Some(enc))?.is_ok();
        if done {
            self.db.flush()?;
        }
        Ok(done)
    }

    /// Changes an account atomically and flushes; the new record, or `None` when there is no
    /// such account.
    ///
    /// 1. read the record;
    /// 2. apply `change` to a copy (it may run more than once under contention);
    /// 3. swap it in if the stored record is still the one read, else start again;
    /// 4. flush.
    pub fn update_user(
        &self,
        name: &UserName,
        change: impl Fn(&mut ConsoleUser),
    ) -> Result<Option<ConsoleUser>, Error> {
        loop {
            let Some(old) = self.users.get(name.as_str())? else { return Ok(None) };
            let mut user: ConsoleUser = decode("console user", &old)?;
            change(&mut user);
            let enc = encode(&user)?;
            if self.users.compare_and_swap(name.as_str(), Some(&old), Some(enc))?.is_ok() {
                self.db.flush()?;
                return Ok(Some(user));
            }
        }
    }

    /// One session.
    pub fn session(&self, id: &SessionId) -> Result<Option<ConsoleSession>, Error> {
        self.sessions.get(id.key())?.map(|v| decode("console session", &v)).transpose()
    }

    /// Stores a session (new or replaced).
    pub fn put_session(&self, id: &SessionId, session: &ConsoleSession) -> Result<(), Error> {
        self.sessions.insert(id.key(), encode(session)?)?;
        Ok(())
    }

    /// Deletes a session and flushes, so that a logged-out cookie stays useless after a crash.
    pub fn remove_session(&self, id: &SessionId) -> Result<(), Error> {
        self.sessions.remove(id.key())?;
        self.db.flush()?;
        Ok(())
    }

    /// Deletes every session of `user` (on disabling, reset, password change); how many.
    pub fn remove_sessions_of(&self, user: &UserName) -> Result<usize, Error> {
        self.remove_sessions_where(|s| &s.user == user)
    }

    /// Deletes every session for which `expired` holds (such as those past their timeouts);
    /// how many.
    pub fn remove_sessions_where(&self, expired: impl Fn(&ConsoleSession) -> bool) -> Result<usize, Error> {
        let mut n = 0;
        for r in self.sessions.iter() {
            let (k, v) = r?;
            // An undecodable session is of no use to anyone: drop it too.
            let drop = decode::<ConsoleSession>("console session", &v).map(|s| expired(&s)).unwrap_or(true);
            if drop {
                self.sessions.remove(k)?;
                n += 1;
            }
        }
        if n > 0 {
            self.db.flush()?;
        }
        Ok(n)
    }

    /// Number of stored sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The value of `key` in the console's meta tree, setting it to `initial` first if absent
    /// (flushed); used for the console's own random keys.
    pub fn meta_get_or_init(&self, key: &str, initial: &[u8]) -> Result<Vec<u8>, Error> {
        match self.meta.compare_and_swap(key, None as Option<&[u8]>, Some(initial))? {
            Ok(()) => {
                self.db.flush()?;
                Ok(initial.to_vec())
            }
            Err(cas) => Ok(cas.current.map(|v| v.to_vec()).unwrap_or_default()),
        }
    }
}

/// Audit records from sequence number `first` on, oldest first: a range read of the `audit`
/// tree (keys are the sequence numbers, 8 bytes big-endian; see [`crate::CertDb`]), so that the
/// console's audit page, which keeps the entries it has read, reads only the new ones.
pub fn audit_records_from(db: &crate::CertDb, first: u64) -> Result<Vec<crate::AuditRecord>, Error> {
    let tree = db.sled_db().open_tree("audit")?;
    tree.range(first.to_be_bytes()..)
        .map(|r| {
            let (k, v) = r?;
            let seq: [u8; 8] =
                k.as_ref().try_into().map_err(|_| Error::Corrupt("audit key length".into()))?;
            Ok(crate::AuditRecord { seq: u64::from_be_bytes(seq), bytes: v.to_vec() })
        })
        .collect()
}

mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| hex::decode(h).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> ConsoleUser {
        ConsoleUser {
            name: name.parse().expect("name"),
            role: ConsoleRole::Officer,
            password_hash: "$argon2id$x".into(),
            must_change_password: true,
            totp_sealed: None,
            totp_secret: None,
            totp_last_step: 0,
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created_at: Utc::now(),
            last_login: None,
        }
    }

    fn session(name: &str) -> ConsoleSession {
        ConsoleSession {
            user: name.parse().expect("name"),
            stage: SessionStage::Active,
            created_at: Utc::now(),
            last_seen: Utc::now(),
            csrf_token: "00".into(),
            step_up_at: None,
            pending_totp_sealed: Some(vec![1, 2, 3]),
        }
    }

    #[test]
    fn names_are_normalised_and_checked() {
        assert_eq!("  Alice.B ".parse::<UserName>().expect("ok").as_str(), "alice.b");
        for bad in ["", "-x", "a b", "é", &"x".repeat(65), "a/b"] {
            assert!(bad.parse::<UserName>().is_err(), "{bad:?} accepted");
        }
        assert_eq!("Officer".parse::<ConsoleRole>().expect("role"), ConsoleRole::Officer);
        assert!("root".parse::<ConsoleRole>().is_err());
        let id = SessionId::from_bytes([7; 32]);
        assert_eq!(id.to_string().parse::<SessionId>().expect("id"), id);
        assert!("zz".parse::<SessionId>().is_err());
        assert_eq!(format!("{id:?}"), "SessionId(..)");
    }

    #[test]
    fn users_sessions_and_meta_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path().join("db")).expect("sled");
        let store = ConsoleStore::open(&db).expect("open");
        assert!(store.has_no_users().expect("empty"));
        assert!(store.insert_user(&user("alice")).expect("insert"));
        assert!(!store.insert_user(&user("ALICE")).expect("second insert refused"));
        let alice: UserName = "alice".parse().expect("name");
        let updated = store.update_user(&alice, |u| u.failed_logins += 1).expect("update").expect("some");
        assert_eq!(updated.failed_logins, 1);
        assert_eq!(store.user(&alice).expect("get"), Some(updated));
        assert!(store.update_user(&"bob".parse().expect("n"), |_| {}).expect("update").is_none());
        assert_eq!(store.users().expect("users").len(), 1);

        let (a, b) = (SessionId::from_bytes([1; 32]), SessionId::from_bytes([2; 32]));
        store.put_session(&a, &session("alice")).expect("put");
        store.put_session(&b, &session("bob")).expect("put");
        assert_eq!(store.session(&a).expect("get").expect("some").pending_totp_sealed, Some(vec![1, 2, 3]));
        // Stored under the hash of the id, never the id itself.
        assert!(db.open_tree("console_sessions").expect("tree").get([1u8; 32]).expect("get").is_none());
        assert_eq!(store.remove_sessions_of(&alice).expect("remove"), 1);
        assert!(store.session(&a).expect("get").is_none());
        store.remove_session(&b).expect("remove");
        assert_eq!(store.session_count(), 0);

        assert_eq!(store.meta_get_or_init("k", b"first").expect("init"), b"first");
        assert_eq!(store.meta_get_or_init("k", b"second").expect("get"), b"first");
    }
}
