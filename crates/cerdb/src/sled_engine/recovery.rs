//! Escrow recovery requests in sled.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `escrow_recoveries` | the request id (16 bytes) | JSON [`RecoveryRequest`] |

use super::SledEngine;
use crate::recovery_store::{RecoveryId, RecoveryRequest, RecoveryRequests};
use crate::Error;

fn decode(bytes: &[u8]) -> Result<RecoveryRequest, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("recovery request: {e}")))
}

fn encode(r: &RecoveryRequest) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(r).map_err(|e| Error::Corrupt(e.to_string()))
}

impl RecoveryRequests for SledEngine {
    fn insert_recovery(&self, request: &RecoveryRequest) -> Result<bool, Error> {
        let enc = encode(request)?;
        self.fault()?;
        let done = self
            .recoveries
            .compare_and_swap(request.id.as_bytes(), None as Option<&[u8]>, Some(enc))?
            .is_ok();
        if done {
            self.flush_db()?;
        }
        Ok(done)
    }

    fn recovery(&self, id: &RecoveryId) -> Result<Option<RecoveryRequest>, Error> {
        self.recoveries.get(id.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    fn recoveries(&self) -> Result<Vec<RecoveryRequest>, Error> {
        let mut all: Vec<RecoveryRequest> =
            self.recoveries.iter().map(|r| decode(&r?.1)).collect::<Result<_, _>>()?;
        all.sort_by_key(|r| (r.created_at, r.id));
        Ok(all)
    }

    fn replace_recovery(&self, old: &RecoveryRequest, new: &RecoveryRequest) -> Result<bool, Error> {
        if old.id != new.id {
            return Err(Error::Inconsistent(format!("recovery request {} replaced by {}", old.id, new.id)));
        }
        let Some(stored) = self.recoveries.get(old.id.as_bytes())? else { return Ok(false) };
        // Compared as records, not bytes: the stored encoding of an equal record may differ.
        if decode(&stored)? != *old {
            return Ok(false);
        }
        let enc = encode(new)?;
        self.fault()?;
        let done = self.recoveries.compare_and_swap(old.id.as_bytes(), Some(&stored), Some(enc))?.is_ok();
        if done {
            self.flush_db()?;
        }
        Ok(done)
    }
}
