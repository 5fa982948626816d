//! The soft key store's sealed records in the PostgreSQL database, shared by every node: the
//! adapter from the key store's contract ([`hsm_sim::SealedRecords`]) to the database's
//! ([`cerdb::custody_store::CustodyRecords`]). A key's record is `key:<handle>`, the master
//! key's derivation parameters `master:params` — all sealed or public, never a plaintext key.

use std::sync::Arc;

use cerdb::custody_store::CustodyRecords;
use hsm_sim::{Error, KeyHandle, SealedRecords};

const KEY_PREFIX: &str = "key:";
const PARAMS: &str = "master:params";

/// The records of the database at `location`.
pub struct DbRecords {
    db: Arc<dyn CustodyRecords>,
    location: String,
}

impl std::fmt::Debug for DbRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbRecords").field("location", &self.location).finish_non_exhaustive()
    }
}

impl DbRecords {
    /// The records `db` keeps; `location` names the database in messages.
    pub fn new(db: Arc<dyn CustodyRecords>, location: &str) -> Self {
        DbRecords { db, location: location.to_string() }
    }
}

fn storage(e: cerdb::Error) -> Error {
    Error::Storage(e.to_string())
}

impl SealedRecords for DbRecords {
    fn put_new(&self, handle: &KeyHandle, record: &[u8]) -> Result<(), Error> {
        match self.db.insert_custody_record(&format!("{KEY_PREFIX}{handle}"), record).map_err(storage)? {
            true => Ok(()),
            false => Err(Error::KeyExists(handle.clone())),
        }
    }

    fn get(&self, handle: &KeyHandle) -> Result<Option<Vec<u8>>, Error> {
        self.db.custody_record(&format!("{KEY_PREFIX}{handle}")).map_err(storage)
    }

    fn handles(&self) -> Result<Vec<KeyHandle>, Error> {
        let names = self.db.custody_record_names(KEY_PREFIX).map_err(storage)?;
        Ok(names.iter().filter_map(|n| n.strip_prefix(KEY_PREFIX)?.parse().ok()).collect())
    }

    fn remove(&self, handle: &KeyHandle) -> Result<(), Error> {
        match self.db.remove_custody_record(&format!("{KEY_PREFIX}{handle}")).map_err(storage)? {
            true => Ok(()),
            false => Err(Error::NoSuchKey(handle.clone())),
        }
    }

    fn place(&self, handle: &KeyHandle) -> String {
        format!("{} (key {handle})", self.location)
    }

    fn master_params(&self) -> Result<Option<Vec<u8>>, Error> {
        self.db.custody_record(PARAMS).map_err(storage)
    }

    fn put_master_params_new(&self, params: &[u8]) -> Result<bool, Error> {
        self.db.insert_custody_record(PARAMS, params).map_err(storage)
    }

    fn master_params_place(&self) -> String {
        format!("{} (master key parameters)", self.location)
    }

    fn allows_master_key_file(&self) -> bool {
        false
    }
}
