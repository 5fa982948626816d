//! Where the soft store keeps its sealed key records: the small storage contract hsm-sim needs.
//! A record is a key already sealed under the master key (its private key encrypted, bound to
//! its handle, type and purpose), so whoever stores it learns nothing from it.
//!
//! [`FileRecords`], one file per key in the key directory, is the embedded default; an engine
//! that shares a database between nodes can keep the same records there, so that every node
//! that knows the master passphrase can sign.

use std::fs;
use std::path::PathBuf;

use crate::fsutil::{ensure_private_dir, write_private_new};
use crate::{Error, KeyHandle};

/// Sealed key records by handle.
pub trait SealedRecords: Send + Sync + std::fmt::Debug {
    /// Stores a new record under `handle`, durably; [`Error::KeyExists`] (nothing written) when
    /// the handle has a record: a handle is never reused.
    fn put_new(&self, handle: &KeyHandle, record: &[u8]) -> Result<(), Error>;
    /// The record of `handle`, if any.
    fn get(&self, handle: &KeyHandle) -> Result<Option<Vec<u8>>, Error>;
    /// Every handle that has a record.
    fn handles(&self) -> Result<Vec<KeyHandle>, Error>;
    /// Deletes the record of `handle`, durably (once its key lives elsewhere: `pki hsm import`).
    fn remove(&self, handle: &KeyHandle) -> Result<(), Error>;
    /// Where the record of `handle` is, for messages.
    fn place(&self, handle: &KeyHandle) -> String;
    /// The master key's derivation parameters (salt and check value; nothing secret), if a
    /// passphrase protects this store.
    fn master_params(&self) -> Result<Option<Vec<u8>>, Error>;
    /// Stores the master key's derivation parameters once, durably; `false` (nothing written)
    /// when some are stored already — another node opened the store first.
    fn put_master_params_new(&self, params: &[u8]) -> Result<bool, Error>;
    /// Where the master key's parameters are, for messages.
    fn master_params_place(&self) -> String;
    /// Whether the records live beside a random master key file of the key directory (the
    /// development default). `false` for records shared between nodes: each node's key
    /// directory is its own, so only a passphrase gives every node the same master key.
    fn allows_master_key_file(&self) -> bool {
        true
    }
}

/// One file per key, `hex(handle).key`, mode 0600, in a directory of mode 0700.
#[derive(Debug)]
pub struct FileRecords {
    dir: PathBuf,
}

impl FileRecords {
    /// The records in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        ensure_private_dir(&dir)?;
        Ok(FileRecords { dir })
    }

    fn params_path(&self) -> PathBuf {
        self.dir.join(crate::master::KDF_FILE)
    }

    fn path_of(&self, handle: &KeyHandle) -> PathBuf {
        self.dir.join(format!("{}.key", hex::encode(handle.as_str())))
    }
}

impl SealedRecords for FileRecords {
    fn put_new(&self, handle: &KeyHandle, record: &[u8]) -> Result<(), Error> {
        match write_private_new(&self.path_of(handle), record) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::KeyExists(handle.clone()))
            }
            other => other,
        }
    }

    fn get(&self, handle: &KeyHandle) -> Result<Option<Vec<u8>>, Error> {
        let path = self.path_of(handle);
        match fs::read(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn handles(&self) -> Result<Vec<KeyHandle>, Error> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".key")) else { continue };
            let Some(handle) = hex::decode(stem).ok().and_then(|b| String::from_utf8(b).ok()) else {
                continue;
            };
            if let Ok(h) = handle.parse::<KeyHandle>() {
                out.push(h);
            }
        }
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(out)
    }

    fn remove(&self, handle: &KeyHandle) -> Result<(), Error> {
        let path = self.path_of(handle);
        fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(&self.dir, e))
    }

    fn place(&self, handle: &KeyHandle) -> String {
        self.path_of(handle).display().to_string()
    }

    fn master_params(&self) -> Result<Option<Vec<u8>>, Error> {
        let path = self.params_path();
        match fs::read(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn put_master_params_new(&self, params: &[u8]) -> Result<bool, Error> {
        match write_private_new(&self.params_path(), params) {
            Ok(()) => Ok(true),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn master_params_place(&self) -> String {
        self.params_path().display().to_string()
    }
}
