//! Escrow recovery requests in PostgreSQL.
//!
//! | table | key | what |
//! |---|---|---|
//! | `escrow_recoveries` | the request id (16 bytes) | its creation time and JSON [`RecoveryRequest`] |

use super::{off_runtime, PgEngine};
use crate::recovery_store::{RecoveryId, RecoveryRequest, RecoveryRequests};
use crate::Error;

fn decode(text: &str) -> Result<RecoveryRequest, Error> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("recovery request: {e}")))
}

fn encode(r: &RecoveryRequest) -> Result<String, Error> {
    serde_json::to_string(r).map_err(|e| Error::Corrupt(e.to_string()))
}

impl RecoveryRequests for PgEngine {
    fn insert_recovery(&self, request: &RecoveryRequest) -> Result<bool, Error> {
        off_runtime(|| {
            let enc = encode(request)?;
            self.fault()?;
            let n = self.conn()?.execute(
                "INSERT INTO escrow_recoveries (id, created_at, record) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                &[&&request.id.as_bytes()[..], &request.created_at, &enc],
            )?;
            if n == 1 {
                self.flushed()?;
            }
            Ok(n == 1)
        })
    }

    fn recovery(&self, id: &RecoveryId) -> Result<Option<RecoveryRequest>, Error> {
        off_runtime(|| {
            self.conn()?
                .query_opt("SELECT record FROM escrow_recoveries WHERE id = $1", &[&&id.as_bytes()[..]])?
                .map(|r| decode(r.get(0)))
                .transpose()
        })
    }

    fn recoveries(&self) -> Result<Vec<RecoveryRequest>, Error> {
        off_runtime(|| {
            let mut all: Vec<RecoveryRequest> = self
                .conn()?
                .query("SELECT record FROM escrow_recoveries", &[])?
                .iter()
                .map(|r| decode(r.get(0)))
                .collect::<Result<_, _>>()?;
            all.sort_by_key(|r| (r.created_at, r.id));
            Ok(all)
        })
    }

    fn replace_recovery(&self, old: &RecoveryRequest, new: &RecoveryRequest) -> Result<bool, Error> {
        off_runtime(|| {
            if old.id != new.id {
                return Err(Error::Inconsistent(format!(
                    "recovery request {} replaced by {}",
                    old.id, new.id
                )));
            }
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let id = &old.id.as_bytes()[..];
            let Some(row) =
                tx.query_opt("SELECT record FROM escrow_recoveries WHERE id = $1 FOR UPDATE", &[&id])?
            else {
                return Ok(false);
            };
            // Compared as records, not text: the stored encoding of an equal record may differ.
            if decode(row.get(0))? != *old {
                return Ok(false);
            }
            self.fault()?;
            tx.execute("UPDATE escrow_recoveries SET record = $2 WHERE id = $1", &[&id, &encode(new)?])?;
            tx.commit()?;
            self.flushed()?;
            Ok(true)
        })
    }
}
