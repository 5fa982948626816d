//! Key custody's sealed records in a shared database, so that every node of an installation on
//! PostgreSQL can sign with the keys it knows the master passphrase of.
//!
//! The records are opaque here: each is already sealed under the master key by the key store
//! (`hsm-sim`), so the database learns nothing from them. This module only keeps bytes by name,
//! never overwrites a record (a name is used once), and lists names. The embedded engine has no
//! such store: on one machine the key store keeps its records in files of the data directory.

use crate::Error;

/// Sealed records by name.
pub trait CustodyRecords: Send + Sync {
    /// Stores `record` under `name` durably; `false` (nothing written) when the name has a
    /// record already.
    fn insert_custody_record(&self, name: &str, record: &[u8]) -> Result<bool, Error>;
    /// The record of `name`, if any.
    fn custody_record(&self, name: &str) -> Result<Option<Vec<u8>>, Error>;
    /// The names that start with `prefix`, in order.
    fn custody_record_names(&self, prefix: &str) -> Result<Vec<String>, Error>;
    /// Deletes the record of `name`; whether there was one.
    fn remove_custody_record(&self, name: &str) -> Result<bool, Error>;
}
