//! The directory's API keys and anonymous policy in sled.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `dir_apikeys` | SHA-256 of the API key (32 bytes) | JSON [`ApiKeyRecord`] |
//! | `dir_apikey_names` | key name | SHA-256 of the key |
//! | `dir_settings` | `anonymous` | JSON [`AnonymousPolicy`] |

use chrono::{DateTime, Utc};
use sled::transaction::{abort, ConflictableTransactionError, TransactionError, Transactional};

use super::SledEngine;
use crate::directory::{
    AnonymousPolicy, ApiKeyHash, ApiKeyName, ApiKeyRecord, ApiKeyRecords, DirectoryError,
};

const ANONYMOUS: &str = "anonymous";

fn corrupt(what: &str, e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Storage(crate::Error::Corrupt(format!("{what}: {e}")))
}

fn decode(bytes: &[u8]) -> Result<ApiKeyRecord, DirectoryError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("API key record", e))
}

fn tx_error(e: TransactionError<DirectoryError>) -> DirectoryError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl SledEngine {
    fn dir_fault(&self) -> Result<(), ConflictableTransactionError<DirectoryError>> {
        self.fault().map_err(|e| ConflictableTransactionError::Abort(e.into()))
    }
}

impl ApiKeyRecords for SledEngine {
    fn insert_key(&self, hash: &ApiKeyHash, record: &ApiKeyRecord) -> Result<(), DirectoryError> {
        let enc = serde_json::to_vec(record).map_err(|e| corrupt("API key record", e))?;
        let name = record.name.as_str();
        (&self.api_keys, &self.api_key_names)
            .transaction(|(keys, names)| {
                if names.get(name)?.is_some() {
                    return abort(DirectoryError::KeyNameTaken(name.to_string()));
                }
                self.dir_fault()?;
                names.insert(name, &hash.0)?;
                self.dir_fault()?;
                keys.insert(&hash.0, enc.as_slice())?;
                Ok::<(), ConflictableTransactionError<DirectoryError>>(())
            })
            .map_err(tx_error)?;
        Ok(self.flush_db()?)
    }

    fn key_records(&self) -> Result<Vec<ApiKeyRecord>, DirectoryError> {
        let mut out = Vec::new();
        for r in self.api_keys.iter() {
            let (_, v) = r?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    fn key_by_hash(&self, hash: &ApiKeyHash) -> Result<Option<ApiKeyRecord>, DirectoryError> {
        self.api_keys.get(hash.0)?.map(|v| decode(&v)).transpose()
    }

    fn revoke_key(&self, name: &ApiKeyName, now: DateTime<Utc>) -> Result<ApiKeyRecord, DirectoryError> {
        let rec = (&self.api_keys, &self.api_key_names)
            .transaction(|(keys, names)| {
                let Some(hash) = names.get(name.as_str())? else {
                    return abort(DirectoryError::UnknownKey(name.to_string()));
                };
                let Some(bytes) = keys.get(&hash)? else {
                    return abort(DirectoryError::Storage(crate::Error::Inconsistent(format!(
                        "API key name {name} names a missing key"
                    ))));
                };
                let mut rec = decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
                if rec.revoked_at.is_some() {
                    return abort(DirectoryError::KeyAlreadyRevoked(name.to_string()));
                }
                rec.revoked_at = Some(now);
                let enc = serde_json::to_vec(&rec)
                    .map_err(|e| ConflictableTransactionError::Abort(corrupt("API key record", e)))?;
                self.dir_fault()?;
                keys.insert(&hash, enc)?;
                Ok(rec)
            })
            .map_err(tx_error)?;
        self.flush_db()?;
        Ok(rec)
    }

    fn anonymous_policy(&self) -> Result<Option<AnonymousPolicy>, DirectoryError> {
        self.dir_settings
            .get(ANONYMOUS)?
            .map(|v| serde_json::from_slice(&v).map_err(|e| corrupt("anonymous policy", e)))
            .transpose()
    }

    fn set_anonymous_policy(&self, policy: &AnonymousPolicy) -> Result<(), DirectoryError> {
        let enc = serde_json::to_vec(policy).map_err(|e| corrupt("anonymous policy", e))?;
        self.fault()?;
        self.dir_settings.insert(ANONYMOUS, enc)?;
        Ok(self.flush_db()?)
    }
}
