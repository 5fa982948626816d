//! The ACME objects as stored (JSON in cerdb's enrolment records) and as sent.

use cerdb::acme_store::{AcmeKind, AcmeRecords};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;

/// Status of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    /// In use.
    Valid,
    /// Deactivated by its holder.
    Deactivated,
    /// Revoked by the CA.
    Revoked,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Its id (the last segment of its URL).
    pub id: String,
    /// Status.
    pub status: AccountStatus,
    /// `mailto:` contacts.
    pub contact: Vec<String>,
    /// The account key, as a JWK with its required members.
    pub key: serde_json::Value,
    /// RFC 7638 thumbprint of the key.
    pub thumbprint: String,
    /// The External Account Binding key it was created with.
    pub eab_kid: Option<String>,
    /// When created.
    pub created_at: DateTime<Utc>,
}

/// Status of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Authorizations pending.
    Pending,
    /// Ready to finalize.
    Ready,
    /// Being finalized.
    Processing,
    /// Certificate issued.
    Valid,
    /// Failed or expired.
    Invalid,
}

/// An order (one `email` identifier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Its id.
    pub id: String,
    /// The account.
    pub account: String,
    /// Status as stored.
    pub status: OrderStatus,
    /// The address.
    pub email: String,
    /// Its authorizations' ids.
    pub authorizations: Vec<String>,
    /// When it expires.
    pub expires: DateTime<Utc>,
    /// The certificate's serial, once valid.
    pub certificate: Option<String>,
    /// When created.
    pub created_at: DateTime<Utc>,
}

/// Status of an authorization or a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzStatus {
    /// Waiting.
    Pending,
    /// Being checked (challenges).
    Processing,
    /// Done.
    Valid,
    /// Failed.
    Invalid,
    /// Deactivated by the client.
    Deactivated,
    /// Expired.
    Expired,
}

/// An `email-reply-00` challenge (RFC 8823 §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// Status.
    pub status: AuthzStatus,
    /// token-part1, mailed in the subject (`ACME: <token-part1>`).
    pub token_part1: String,
    /// token-part2, sent in the challenge object.
    pub token_part2: String,
    /// When the challenge mail left (its 24 hours run from here).
    pub sent_at: Option<DateTime<Utc>>,
    /// When validated.
    pub validated: Option<DateTime<Utc>>,
    /// The problem that made it invalid.
    pub error: Option<(String, String)>,
}

/// An authorization of one account for one address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authz {
    /// Its id.
    pub id: String,
    /// The account.
    pub account: String,
    /// The address.
    pub email: String,
    /// Status as stored.
    pub status: AuthzStatus,
    /// When it expires.
    pub expires: DateTime<Utc>,
    /// Its challenge (`None`: valid from the start, by the enterprise-domain rule).
    pub challenge: Option<Challenge>,
    /// Why it was valid from the start.
    pub note: Option<String>,
}

/// An External Account Binding key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EabKey {
    /// The key id given to the client.
    pub kid: String,
    /// Its name (who it was made for).
    pub name: String,
    /// The HMAC key, sealed by key custody (base64).
    pub sealed_key: String,
    /// When made.
    pub created_at: DateTime<Utc>,
    /// When revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The account it bound (a key binds one account).
    pub account: Option<String>,
}

/// Which account a certificate was issued to (for revocation by the account).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedTo {
    /// The account.
    pub account: String,
}

/// A record read with the bytes it was read from (for compare-and-swap).
pub struct Read<T> {
    /// The record.
    pub value: T,
    /// Its stored bytes.
    pub raw: Vec<u8>,
}

/// Typed access to the enrolment records.
pub struct Store<'a> {
    records: &'a dyn AcmeRecords,
    deferred: bool,
}

impl<'a> Store<'a> {
    /// Every write durable when it returns.
    pub fn new(records: &'a dyn AcmeRecords) -> Store<'a> {
        Store { records, deferred: false }
    }

    /// Writes acknowledged together: each durable at the next [`sync`](Self::sync) (or the next
    /// durable write of the database), visible at once.
    pub fn deferring(records: &'a dyn AcmeRecords) -> Store<'a> {
        Store { records, deferred: true }
    }

    /// One record.
    pub fn get<T: DeserializeOwned>(&self, kind: AcmeKind, id: &str) -> Result<Option<Read<T>>, Problem> {
        if id.is_empty() || id.len() > cerdb::acme_store::MAX_ACME_ID_BYTES {
            return Ok(None);
        }
        let Some(raw) = self.records.acme(kind, id).map_err(Problem::internal)? else { return Ok(None) };
        let value = serde_json::from_slice(&raw)
            .map_err(|e| Problem::internal(format!("stored {}: {e}", kind.name())))?;
        Ok(Some(Read { value, raw }))
    }

    /// Stores a new record; `false` when the id is taken.
    pub fn insert<T: Serialize>(
        &self,
        kind: AcmeKind,
        id: &str,
        at: DateTime<Utc>,
        v: &T,
    ) -> Result<bool, Problem> {
        let enc = serde_json::to_vec(v).map_err(Problem::internal)?;
        let r = if self.deferred {
            self.records.insert_acme_deferred(kind, id, at, &enc)
        } else {
            self.records.insert_acme(kind, id, at, &enc)
        };
        r.map_err(Problem::internal)
    }

    /// Replaces what was read; `false` when it changed meanwhile.
    pub fn replace<T: Serialize>(
        &self,
        kind: AcmeKind,
        id: &str,
        old: &Read<T>,
        new: &T,
    ) -> Result<bool, Problem> {
        let enc = serde_json::to_vec(new).map_err(Problem::internal)?;
        if enc == old.raw {
            return Ok(true);
        }
        let r = if self.deferred {
            self.records.replace_acme_deferred(kind, id, &old.raw, &enc)
        } else {
            self.records.replace_acme(kind, id, &old.raw, &enc)
        };
        r.map_err(Problem::internal)
    }

    /// Makes the deferred writes before it durable.
    pub fn sync(&self) -> Result<(), Problem> {
        self.records.sync_acme().map_err(Problem::internal)
    }

    /// Brings a record read up to date: `next` is written over `read` when it differs, and what
    /// is stored afterwards is returned (`next`, or what another request wrote meanwhile).
    pub fn refreshed<T: Serialize + DeserializeOwned + PartialEq>(
        &self,
        kind: AcmeKind,
        id: &str,
        read: Read<T>,
        next: T,
    ) -> Result<Read<T>, Problem> {
        if next == read.value {
            return Ok(read);
        }
        if self.replace(kind, id, &read, &next)? {
            let raw = serde_json::to_vec(&next).map_err(Problem::internal)?;
            return Ok(Read { value: next, raw });
        }
        self.get(kind, id)?.ok_or_else(|| Problem::not_found(kind.name()))
    }

    /// Every record of a kind.
    pub fn all<T: DeserializeOwned>(&self, kind: AcmeKind) -> Result<Vec<T>, Problem> {
        self.records
            .acme_records(kind)
            .map_err(Problem::internal)?
            .iter()
            .map(|(_, raw)| {
                serde_json::from_slice(raw)
                    .map_err(|e| Problem::internal(format!("stored {}: {e}", kind.name())))
            })
            .collect()
    }
}
