//! The console's accounts, sessions and secrets in sled.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `console_users` | user name (normalised, UTF-8) | JSON [`ConsoleUser`] |
//! | `console_sessions` | SHA-256 of the session id (32 bytes) | JSON [`ConsoleSession`] |
//! | `console_meta` | text key | bytes (such as the key that binds login-form CSRF tokens) |

use serde::{Deserialize, Serialize};

use super::SledEngine;
use crate::console_store::{ConsoleSession, ConsoleStore, ConsoleUser, SessionId, UserName};
use crate::Error;

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Corrupt(e.to_string()))
}

impl ConsoleStore for SledEngine {
    fn user(&self, name: &UserName) -> Result<Option<ConsoleUser>, Error> {
        self.console_users.get(name.as_str())?.map(|v| decode("console user", &v)).transpose()
    }

    fn users(&self) -> Result<Vec<ConsoleUser>, Error> {
        self.console_users.iter().map(|r| decode("console user", &r?.1)).collect()
    }

    fn has_no_users(&self) -> Result<bool, Error> {
        Ok(self.console_users.first()?.is_none())
    }

    fn insert_user(&self, user: &ConsoleUser) -> Result<bool, Error> {
        let enc = encode(user)?;
        self.fault()?;
        let done = self
            .console_users
            .compare_and_swap(user.name.as_str(), None as Option<&[u8]>, Some(enc))?
            .is_ok();
        if done {
            self.flush_db()?;
        }
        Ok(done)
    }

    fn update_user(
        &self,
        name: &UserName,
        change: &(dyn Fn(&mut ConsoleUser) + Sync),
    ) -> Result<Option<ConsoleUser>, Error> {
        loop {
            let Some(old) = self.console_users.get(name.as_str())? else { return Ok(None) };
            let mut user: ConsoleUser = decode("console user", &old)?;
            change(&mut user);
            let enc = encode(&user)?;
            self.fault()?;
            if self.console_users.compare_and_swap(name.as_str(), Some(&old), Some(enc))?.is_ok() {
                self.flush_db()?;
                return Ok(Some(user));
            }
        }
    }

    fn session(&self, id: &SessionId) -> Result<Option<ConsoleSession>, Error> {
        self.console_sessions.get(id.key())?.map(|v| decode("console session", &v)).transpose()
    }

    fn put_session(&self, id: &SessionId, session: &ConsoleSession) -> Result<(), Error> {
        self.fault()?;
        self.console_sessions.insert(id.key(), encode(session)?)?;
        Ok(())
    }

    fn remove_session(&self, id: &SessionId) -> Result<(), Error> {
        self.fault()?;
        self.console_sessions.remove(id.key())?;
        self.flush_db()
    }

    fn remove_sessions_where(
        &self,
        expired: &(dyn Fn(&ConsoleSession) -> bool + Sync),
    ) -> Result<usize, Error> {
        // One batch: a failure removes none.
        let mut n = 0;
        let mut batch = sled::Batch::default();
        for r in self.console_sessions.iter() {
            let (k, v) = r?;
            // An undecodable session is of no use to anyone: drop it too.
            let drop = decode::<ConsoleSession>("console session", &v).map(|s| expired(&s)).unwrap_or(true);
            if drop {
                self.fault()?;
                batch.remove(k);
                n += 1;
            }
        }
        if n > 0 {
            self.console_sessions.apply_batch(batch)?;
            self.flush_db()?;
        }
        Ok(n)
    }

    fn session_count(&self) -> Result<usize, Error> {
        Ok(self.console_sessions.len())
    }

    fn meta_get_or_init(&self, key: &str, initial: &[u8]) -> Result<Vec<u8>, Error> {
        self.fault()?;
        match self.console_meta.compare_and_swap(key, None as Option<&[u8]>, Some(initial))? {
            Ok(()) => {
                self.flush_db()?;
                Ok(initial.to_vec())
            }
            Err(cas) => Ok(cas.current.map(|v| v.to_vec()).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_stored_only_as_their_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = SledEngine::open(&dir.path().join("db"), 1 << 20, None).expect("open");
        let id = SessionId::from_bytes([1; 32]);
        let session = ConsoleSession {
            user: "alice".parse().expect("name"),
            stage: crate::console_store::SessionStage::Active,
            created_at: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
            csrf_token: "00".into(),
            step_up_at: None,
            pending_totp_sealed: None,
        };
        engine.put_session(&id, &session).expect("put");
        assert!(engine.console_sessions.get([1u8; 32]).expect("get").is_none());
        assert!(engine.console_sessions.get(id.key()).expect("get").is_some());
    }
}
