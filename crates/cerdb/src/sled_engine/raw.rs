//! Raw reads and writes of the embedded database's trees, bypassing every check of the engine:
//! for tests that act as someone with access to the files (altering an audit entry, counting
//! what a refused batch left), never for the product's own code.

use std::path::Path;

use sled::Db;

use crate::Error;

/// A key and its value, as stored.
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// The sled database of a data directory, opened without the engine.
pub struct RawTrees {
    db: Db,
}

impl std::fmt::Debug for RawTrees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTrees").finish_non_exhaustive()
    }
}

impl RawTrees {
    pub(super) fn of(db: Db) -> Self {
        RawTrees { db }
    }

    /// Opens the database at `path` (the `db` directory of a data directory); [`Error::Locked`]
    /// while another handle or process holds it after [`crate::CertDb::LOCK_WAIT`] (sled releases
    /// its file lock a moment after the last handle of this process was dropped).
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(RawTrees { db: super::open_waiting(path, || sled::open(path))? })
    }

    /// Every (key, value) of tree `tree`, in key order.
    pub fn entries(&self, tree: &str) -> Result<Vec<RawEntry>, Error> {
        self.db
            .open_tree(tree)?
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// The value of `key` in `tree`.
    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.open_tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    /// Sets `key` in `tree`; the value it replaced.
    pub fn insert(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.open_tree(tree)?.insert(key, value)?.map(|v| v.to_vec()))
    }

    /// Removes `key` from `tree`; the value it had.
    pub fn remove(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.open_tree(tree)?.remove(key)?.map(|v| v.to_vec()))
    }

    /// Removes everything from `tree`.
    pub fn clear(&self, tree: &str) -> Result<(), Error> {
        Ok(self.db.open_tree(tree)?.clear()?)
    }

    /// Number of entries of `tree`.
    pub fn len(&self, tree: &str) -> Result<usize, Error> {
        Ok(self.db.open_tree(tree)?.len())
    }

    /// Whether `tree` is empty.
    pub fn is_empty(&self, tree: &str) -> Result<bool, Error> {
        Ok(self.db.open_tree(tree)?.is_empty())
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }
}
