//! The directory's API keys and anonymous policy in PostgreSQL.
//!
//! | table | key | what |
//! |---|---|---|
//! | `api_keys` | SHA-256 of the API key | its name (unique: taken once, ever) and JSON [`ApiKeyRecord`] |
//! | `directory_settings` | `anonymous` | JSON [`AnonymousPolicy`] |

use chrono::{DateTime, Utc};
use postgres::error::SqlState;

use super::{off_runtime, PgEngine};
use crate::directory::{
    AnonymousPolicy, ApiKeyHash, ApiKeyName, ApiKeyRecord, ApiKeyRecords, DirectoryError,
};

const ANONYMOUS: &str = "anonymous";

fn corrupt(what: &str, e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Storage(crate::Error::Corrupt(format!("{what}: {e}")))
}

pub(super) fn decode(text: &str) -> Result<ApiKeyRecord, DirectoryError> {
    serde_json::from_str(text).map_err(|e| corrupt("API key record", e))
}

fn encode(rec: &ApiKeyRecord) -> Result<String, DirectoryError> {
    serde_json::to_string(rec).map_err(|e| corrupt("API key record", e))
}

impl ApiKeyRecords for PgEngine {
    fn insert_key(&self, hash: &ApiKeyHash, record: &ApiKeyRecord) -> Result<(), DirectoryError> {
        off_runtime(|| {
            let enc = encode(record)?;
            let name = record.name.as_str();
            self.fault()?;
            let inserted = self.conn()?.execute(
                "INSERT INTO api_keys (hash, name, record) VALUES ($1, $2, $3)",
                &[&&hash.0[..], &name, &enc],
            );
            match inserted {
                Ok(_) => {}
                Err(e)
                    if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                        && e.as_db_error().and_then(|d| d.constraint()) == Some("api_keys_name_key") =>
                {
                    return Err(DirectoryError::KeyNameTaken(name.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
            Ok(self.flushed()?)
        })
    }

    fn key_records(&self) -> Result<Vec<ApiKeyRecord>, DirectoryError> {
        off_runtime(|| {
            self.conn()?.query("SELECT record FROM api_keys", &[])?.iter().map(|r| decode(r.get(0))).collect()
        })
    }

    fn key_by_hash(&self, hash: &ApiKeyHash) -> Result<Option<ApiKeyRecord>, DirectoryError> {
        off_runtime(|| {
            self.conn()?
                .query_opt("SELECT record FROM api_keys WHERE hash = $1", &[&&hash.0[..]])?
                .map(|r| decode(r.get(0)))
                .transpose()
        })
    }

    fn revoke_key(&self, name: &ApiKeyName, now: DateTime<Utc>) -> Result<ApiKeyRecord, DirectoryError> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let Some(row) = tx.query_opt(
                "SELECT hash, record FROM api_keys WHERE name = $1 FOR UPDATE",
                &[&name.as_str()],
            )?
            else {
                return Err(DirectoryError::UnknownKey(name.to_string()));
            };
            let hash: Vec<u8> = row.get(0);
            let mut rec = decode(row.get(1))?;
            if rec.revoked_at.is_some() {
                return Err(DirectoryError::KeyAlreadyRevoked(name.to_string()));
            }
            rec.revoked_at = Some(now);
            self.fault()?;
            tx.execute("UPDATE api_keys SET record = $2 WHERE hash = $1", &[&hash, &encode(&rec)?])?;
            tx.commit()?;
            self.flushed()?;
            Ok(rec)
        })
    }

    fn anonymous_policy(&self) -> Result<Option<AnonymousPolicy>, DirectoryError> {
        off_runtime(|| {
            self.conn()?
                .query_opt("SELECT value FROM directory_settings WHERE key = $1", &[&ANONYMOUS])?
                .map(|r| serde_json::from_str(r.get(0)).map_err(|e| corrupt("anonymous policy", e)))
                .transpose()
        })
    }

    fn set_anonymous_policy(&self, policy: &AnonymousPolicy) -> Result<(), DirectoryError> {
        off_runtime(|| {
            let enc = serde_json::to_string(policy).map_err(|e| corrupt("anonymous policy", e))?;
            self.fault()?;
            self.conn()?.execute(
                "INSERT INTO directory_settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&ANONYMOUS, &enc],
            )?;
            Ok(self.flushed()?)
        })
    }
}
