//! The console's accounts, sessions and secrets in PostgreSQL.
//!
//! | table | key | value |
//! |---|---|---|
//! | `console_users` | user name (normalised) | JSON [`ConsoleUser`] |
//! | `console_sessions` | SHA-256 of the session id | JSON [`ConsoleSession`] |
//! | `console_meta` | text key | bytes (such as the key that binds login-form CSRF tokens) |

use serde::{Deserialize, Serialize};

use super::{off_runtime, PgEngine};
use crate::console_store::{ConsoleSession, ConsoleStore, ConsoleUser, SessionId, UserName};
use crate::Error;

fn decode<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|e| Error::Corrupt(e.to_string()))
}

impl ConsoleStore for PgEngine {
    fn user(&self, name: &UserName) -> Result<Option<ConsoleUser>, Error> {
        off_runtime(|| {
            self.conn()?
                .query_opt("SELECT record FROM console_users WHERE name = $1", &[&name.as_str()])?
                .map(|r| decode("console user", r.get(0)))
                .transpose()
        })
    }

    fn users(&self) -> Result<Vec<ConsoleUser>, Error> {
        off_runtime(|| {
            self.conn()?
                .query("SELECT record FROM console_users ORDER BY name", &[])?
                .iter()
                .map(|r| decode("console user", r.get(0)))
                .collect()
        })
    }

    fn has_no_users(&self) -> Result<bool, Error> {
        off_runtime(|| {
            Ok(self.conn()?.query_one("SELECT NOT EXISTS (SELECT 1 FROM console_users)", &[])?.get(0))
        })
    }

    fn insert_user(&self, user: &ConsoleUser) -> Result<bool, Error> {
        off_runtime(|| {
            let enc = encode(user)?;
            self.fault()?;
            let done = self.conn()?.execute(
                "INSERT INTO console_users (name, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&user.name.as_str(), &enc],
            )? == 1;
            if done {
                self.flushed()?;
            }
            Ok(done)
        })
    }

    /// The record is locked while `change` runs (`SELECT ... FOR UPDATE`), so it runs once.
    fn update_user(
        &self,
        name: &UserName,
        change: &(dyn Fn(&mut ConsoleUser) + Sync),
    ) -> Result<Option<ConsoleUser>, Error> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let Some(row) = tx.query_opt(
                "SELECT record FROM console_users WHERE name = $1 FOR UPDATE",
                &[&name.as_str()],
            )?
            else {
                return Ok(None);
            };
            let mut user: ConsoleUser = decode("console user", row.get(0))?;
            change(&mut user);
            self.fault()?;
            tx.execute(
                "UPDATE console_users SET record = $2 WHERE name = $1",
                &[&name.as_str(), &encode(&user)?],
            )?;
            tx.commit()?;
            self.flushed()?;
            Ok(Some(user))
        })
    }

    fn session(&self, id: &SessionId) -> Result<Option<ConsoleSession>, Error> {
        off_runtime(|| {
            self.conn()?
                .query_opt("SELECT record FROM console_sessions WHERE id_sha256 = $1", &[&&id.key()[..]])?
                .map(|r| decode("console session", r.get(0)))
                .transpose()
        })
    }

    fn put_session(&self, id: &SessionId, session: &ConsoleSession) -> Result<(), Error> {
        off_runtime(|| {
            let enc = encode(session)?;
            self.fault()?;
            self.conn()?.execute(
                "INSERT INTO console_sessions (id_sha256, record) VALUES ($1, $2)
                 ON CONFLICT (id_sha256) DO UPDATE SET record = EXCLUDED.record",
                &[&&id.key()[..], &enc],
            )?;
            Ok(())
        })
    }

    fn remove_session(&self, id: &SessionId) -> Result<(), Error> {
        off_runtime(|| {
            self.fault()?;
            self.conn()?.execute("DELETE FROM console_sessions WHERE id_sha256 = $1", &[&&id.key()[..]])?;
            self.flushed()
        })
    }

    /// One transaction, the sessions locked while `expired` judges them: a failure removes none.
    fn remove_sessions_where(
        &self,
        expired: &(dyn Fn(&ConsoleSession) -> bool + Sync),
    ) -> Result<usize, Error> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let mut gone: Vec<Vec<u8>> = Vec::new();
            for row in tx.query("SELECT id_sha256, record FROM console_sessions FOR UPDATE", &[])? {
                // An undecodable session is of no use to anyone: drop it too.
                let drop = decode::<ConsoleSession>("console session", row.get(1))
                    .map(|s| expired(&s))
                    .unwrap_or(true);
                if drop {
                    gone.push(row.get(0));
                }
            }
            if gone.is_empty() {
                return Ok(0);
            }
            self.fault()?;
            tx.execute("DELETE FROM console_sessions WHERE id_sha256 = ANY($1)", &[&gone])?;
            tx.commit()?;
            self.flushed()?;
            Ok(gone.len())
        })
    }

    fn session_count(&self) -> Result<usize, Error> {
        off_runtime(|| {
            let n: i64 = self.conn()?.query_one("SELECT count(*) FROM console_sessions", &[])?.get(0);
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn meta_get_or_init(&self, key: &str, initial: &[u8]) -> Result<Vec<u8>, Error> {
        off_runtime(|| {
            self.fault()?;
            let mut conn = self.conn()?;
            let inserted = conn.execute(
                "INSERT INTO console_meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&key, &initial],
            )? == 1;
            if inserted {
                drop(conn);
                self.flushed()?;
                return Ok(initial.to_vec());
            }
            Ok(conn.query_one("SELECT value FROM console_meta WHERE key = $1", &[&key])?.get(0))
        })
    }
}
