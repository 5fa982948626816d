//! Durable storage of escrow recovery requests, whatever the engine keeps them in
//! (`sled_engine/recovery.rs` for the embedded one).
//!
//! A recovery is a request by one officer, approvals by others, and one release of the key to
//! the requester; the rules (who may approve, how many, until when) are `ca-core`'s. This module
//! only stores what it is given, and swaps a request only if it is still the one read, so that two
//! approvals or two releases racing each other cannot both count.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Serial};

/// The id of a recovery request: 128 random bits, written as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecoveryId([u8; 16]);

impl RecoveryId {
    /// From 16 random bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        RecoveryId(bytes)
    }

    /// The storage key.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for RecoveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryId({self})")
    }
}

impl fmt::Display for RecoveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for RecoveryId {
    type Err = Error;
    /// 32 hex digits, in any case, surrounding spaces ignored.
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim();
        let mut b = [0u8; 16];
        if t.len() != 32 || hex::decode_to_slice(t, &mut b).is_err() {
            let shown: String = t.chars().take(40).collect();
            return Err(Error::InvalidRecoveryId(shown));
        }
        Ok(RecoveryId(b))
    }
}

impl TryFrom<String> for RecoveryId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<RecoveryId> for String {
    fn from(id: RecoveryId) -> String {
        id.to_string()
    }
}

/// Who did a step of a recovery, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryStep {
    /// The audit actor (`console:<user>`, `cli:<user>`).
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One escrow recovery request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRequest {
    /// Its id.
    pub id: RecoveryId,
    /// The encryption certificate whose escrowed key is asked for.
    pub serial: Serial,
    /// Who asked (the only one who may receive the key).
    pub requester: String,
    /// Why, in the requester's words.
    pub reason: String,
    /// How many distinct officers, the requester included, must agree before the release.
    pub required: u32,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// After this instant it can be neither approved nor released.
    pub expires_at: DateTime<Utc>,
    /// The approvals of officers other than the requester, oldest first.
    pub approvals: Vec<RecoveryStep>,
    /// The release of the key, once (a request is used once).
    pub released: Option<RecoveryStep>,
}

/// The escrow recovery requests. Every write is durable when it returns.
pub trait RecoveryRequests: Send + Sync {
    /// Stores a new request; `false` (and nothing written) when its id is taken.
    fn insert_recovery(&self, request: &RecoveryRequest) -> Result<bool, Error>;

    /// One request.
    fn recovery(&self, id: &RecoveryId) -> Result<Option<RecoveryRequest>, Error>;

    /// Every request, oldest first.
    fn recoveries(&self) -> Result<Vec<RecoveryRequest>, Error>;

    /// Replaces `old` by `new` (the same id) if the stored request is still exactly `old`;
    /// `false` (and nothing written) when it changed meanwhile or is gone.
    fn replace_recovery(&self, old: &RecoveryRequest, new: &RecoveryRequest) -> Result<bool, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_digits() {
        let id = RecoveryId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(format!(" {} ", id.to_string().to_uppercase()).parse::<RecoveryId>().expect("id"), id);
        for bad in ["", "ab", &"g".repeat(32), &"a".repeat(33), "../../etc/passwd"] {
            let e = bad.parse::<RecoveryId>().expect_err(bad);
            assert!(e.to_string().contains("32 hex digits"), "{e}");
        }
    }
}
