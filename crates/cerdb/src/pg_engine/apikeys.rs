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

/// API key records read lately, by the key's hash, with when they were read; and how many
/// revocations this process has made, so that a record read before one of them is never kept
/// after it.
#[derive(Default)]
pub(super) struct KeyCache(Mutex<Kept>);

/// The records by hash with when they were read, and the count of revocations.
type Kept = (HashMap<[u8; 32], (Instant, ApiKeyRecord)>, u64);

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of `hash` if read less than [`KEY_CACHE_TTL`] before `now`; else the count of
    /// revocations, to hand to [`KeyCache::put`] with what the database says.
    fn get(&self, hash: &ApiKeyHash, now: Instant) -> Result<ApiKeyRecord, u64> {
        let kept = self.lock();
        match kept.0.get(&hash.0) {
            Some((read, rec)) if now.duration_since(*read) < KEY_CACHE_TTL => Ok(rec.clone()),
            _ => Err(kept.1),
        }
    }

    /// Keeps `rec`, read at `read`, unless this process revoked a key since `revocations` was
    /// counted: the record may then predate that revocation.
    fn put(&self, hash: &ApiKeyHash, rec: &ApiKeyRecord, read: Instant, revocations: u64) {
        let mut kept = self.lock();
        if kept.1 != revocations {
            return;
        }
        if kept.0.len() >= KEY_CACHE_MAX {
            kept.0.clear();
        }
        kept.0.insert(hash.0, (read, rec.clone()));
    }

    /// A key was revoked through this process: its record goes, and no read begun before goes in.
    fn forget(&self, hash: &[u8]) {
        let mut kept = self.lock();
        kept.1 += 1;
        if let Ok(hash) = <[u8; 32]>::try_from(hash) {
            kept.0.remove(&hash);
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
        let revocations = match self.keys.get(hash, now) {
            Ok(rec) => return Ok(Some(rec)),
            Err(revocations) => revocations,
        };
        let found = off_runtime(|| {
            self.conn()?
                .query_opt("SELECT record FROM api_keys WHERE hash = $1", &[&&hash.0[..]])?
                .map(|r| decode(r.get(0)))
                .transpose()
        })?;
        if let Some(rec) = &found {
            self.keys.put(hash, rec, now, revocations);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, revoked: bool) -> ApiKeyRecord {
        ApiKeyRecord {
            name: name.to_string().try_into().expect("name"),
            prefix: "cdk_test".into(),
            rate: 10.0,
            burst: 10.0,
            created_at: Utc::now(),
            revoked_at: revoked.then(Utc::now),
            permissions: vec![],
        }
    }

    #[test]
    fn a_record_is_kept_for_a_second_and_never_past_a_revocation() {
        let cache = KeyCache::default();
        let hash = ApiKeyHash([7; 32]);
        let t0 = Instant::now();
        let count = cache.get(&hash, t0).expect_err("nothing kept yet");
        cache.put(&hash, &record("mailer", false), t0, count);
        assert!(cache.get(&hash, t0 + Duration::from_millis(900)).is_ok(), "kept within the second");
        assert!(cache.get(&hash, t0 + KEY_CACHE_TTL).is_err(), "read again after it");

        // A lookup that began before a revocation through this process puts nothing back.
        let count = cache.get(&hash, t0 + KEY_CACHE_TTL).expect_err("expired");
        cache.forget(&hash.0);
        cache.put(&hash, &record("mailer", false), t0 + KEY_CACHE_TTL, count);
        assert!(cache.get(&hash, t0 + KEY_CACHE_TTL).is_err(), "the stale record was not kept");
        // One that began after it does.
        let count = cache.get(&hash, t0 + KEY_CACHE_TTL).expect_err("not kept");
        let now = t0 + KEY_CACHE_TTL;
        cache.put(&hash, &record("mailer", true), now, count);
        assert!(cache.get(&hash, now).expect("kept").revoked_at.is_some());
    }
}
