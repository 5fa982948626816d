//! Durable storage of the admin console: its accounts, server-side sessions and its own secrets,
//! whatever the engine keeps them in (`sled_engine/console.rs` for the embedded one).
//!
//! The `admin-web` crate holds the [`ConsoleStore`] of its [`crate::CertDb`]
//! ([`crate::CertDb::console`]). The rules (password policy, lockout, TOTP, roles) are the
//! console's; this module only stores what it is given.
//!
//! Session ids are stored only as their SHA-256, so a copy of the database does not hand out
//! live session cookies. Account writes are flushed before they return; session writes are not
//! (a session lost in a crash only means logging in again).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    /// Set by a reset: until an administrator other than the one who reset the account confirms
    /// the reset, the account takes no part in escrow recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_hold: Option<RecoveryHold>,
}

/// Why an account may not take part in escrow recovery yet: it was reset, and no second
/// administrator has confirmed the reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryHold {
    /// The audit actor who reset the account.
    pub reset_by: String,
    /// When.
    pub at: DateTime<Utc>,
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
    pub fn key(&self) -> [u8; 32] {
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

/// The console's accounts, sessions and its own secrets. Account writes are durable when they
/// return; session writes need not be (a session lost in a crash only means logging in again),
/// except removals. Sessions are kept under the SHA-256 of their id ([`SessionId::key`]).
pub trait ConsoleStore: Send + Sync {
    /// One account.
    fn user(&self, name: &UserName) -> Result<Option<ConsoleUser>, Error>;

    /// Every account, by name.
    fn users(&self) -> Result<Vec<ConsoleUser>, Error>;

    /// Whether there is no account at all.
    fn has_no_users(&self) -> Result<bool, Error>;

    /// Stores a new account, durably; `false` (and nothing written) when the name is taken.
    fn insert_user(&self, user: &ConsoleUser) -> Result<bool, Error>;

    /// Changes an account atomically and durably; the new record, or `None` when there is no
    /// such account.
    ///
    /// 1. read the record;
    /// 2. apply `change` to a copy (it may run more than once under contention);
    /// 3. swap it in if the stored record is still the one read, else start again;
    /// 4. make it durable.
    fn update_user(
        &self,
        name: &UserName,
        change: &(dyn Fn(&mut ConsoleUser) + Sync),
    ) -> Result<Option<ConsoleUser>, Error>;

    /// One session.
    fn session(&self, id: &SessionId) -> Result<Option<ConsoleSession>, Error>;

    /// Stores a session (new or replaced).
    fn put_session(&self, id: &SessionId, session: &ConsoleSession) -> Result<(), Error>;

    /// Deletes a session, durably, so that a logged-out cookie stays useless after a crash.
    fn remove_session(&self, id: &SessionId) -> Result<(), Error>;

    /// Deletes every session for which `expired` holds (such as those past their timeouts), and
    /// every session that cannot be decoded, durably; how many.
    fn remove_sessions_where(
        &self,
        expired: &(dyn Fn(&ConsoleSession) -> bool + Sync),
    ) -> Result<usize, Error>;

    /// Number of stored sessions.
    fn session_count(&self) -> Result<usize, Error>;

    /// The value of `key` among the console's own secrets, setting it to `initial` first if absent
    /// (durably); used for the console's random keys.
    fn meta_get_or_init(&self, key: &str, initial: &[u8]) -> Result<Vec<u8>, Error>;

    /// Deletes every session of `user` (on disabling, reset, password change); how many.
    fn remove_sessions_of(&self, user: &UserName) -> Result<usize, Error> {
        self.remove_sessions_where(&|s| &s.user == user)
    }
}

/// Audit records from sequence number `first` on, oldest first, so that the console's audit
/// page, which keeps the entries it has read, reads only the new ones.
pub fn audit_records_from(db: &crate::CertDb, first: u64) -> Result<Vec<crate::AuditRecord>, Error> {
    db.audit_records_from(first)
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
}
