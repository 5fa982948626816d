//! The directory's API keys and anonymous policy in PostgreSQL.
//!
//! | table | key | what |
//! |---|---|---|
//! | `api_keys` | SHA-256 of the API key | its name (unique: taken once, ever) and JSON [`ApiKeyRecord`] |
//! | `directory_settings` | `anonymous` | JSON [`AnonymousPolicy`] |
//!
//! A key's record, once read, is kept by the process for [`KEY_CACHE_TTL`] ([`KeyCache`]): every
//! directory request authenticates its key, and the lookup it makes is otherwise one query, so
//! the key's would double the database's work. A revocation through this process takes effect
//! here at once, one through another process within that second (as a certificate's revocation
//! reaches every process's OCSP answers within a second). A key not found is never kept, so a
//! key just created works everywhere at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use postgres::error::SqlState;

use super::{off_runtime, PgEngine};
use crate::directory::{
    AnonymousPolicy, ApiKeyHash, ApiKeyName, ApiKeyRecord, ApiKeyRecords, DirectoryError,
};

const ANONYMOUS: &str = "anonymous";

/// How long a key's record read from the database is used before it is read again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Records kept at most; past it the cache starts again (a bank has a few hundred keys; only keys
/// found are kept, so unknown keys sent by anyone cannot fill it).
const KEY_CACHE_MAX: usize = 10_000;

/// API key records read lately, by the key's hash, with when they were read.
#[derive(Default)]
pub(super) struct KeyCache(Mutex<HashMap<[u8; 32], (Instant, ApiKeyRecord)>>);

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Instant, ApiKeyRecord)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, hash: &ApiKeyHash, now: Instant) -> Option<ApiKeyRecord> {
        match self.lock().get(&hash.0) {
            Some((read, rec)) if now.duration_since(*read) < KEY_CACHE_TTL => Some(rec.clone()),
            _ => None,
        }
    }

    fn put(&self, hash: &ApiKeyHash, rec: &ApiKeyRecord, read: Instant) {
        let mut map = self.lock();
        if map.len() >= KEY_CACHE_MAX {
            map.clear();
        }
        map.insert(hash.0, (read, rec.clone()));
    }

    fn forget(&self, hash: &[u8]) {
        if let Ok(hash) = <[u8; 32]>::try_from(hash) {
            self.lock().remove(&hash);
        }
    }
}

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
        // Read before the query: the record kept is never newer than its timestamp says.
        let now = Instant::now();
        if let Some(rec) = self.keys.get(hash, now) {
            return Ok(Some(rec));
        }
        let found = off_runtime(|| {
            self.conn()?
                .query_opt("SELECT record FROM api_keys WHERE hash = $1", &[&&hash.0[..]])?
                .map(|r| decode(r.get(0)))
                .transpose()
        })?;
        if let Some(rec) = &found {
            self.keys.put(hash, rec, now);
        }
        Ok(found)
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
            self.keys.forget(&hash);
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
