//! The one public error type of this crate.

use crate::{KeyHandle, KeyPurpose};

/// Everything that can go wrong inside key custody.
///
/// Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key store is sealed: no master key is loaded.
    #[error("the key store is sealed")]
    Sealed,
    /// No key is stored under this handle.
    #[error("no key with handle {0}")]
    NoSuchKey(KeyHandle),
    /// A key with this handle exists already.
    #[error("a key with handle {0} exists already")]
    KeyExists(KeyHandle),
    /// The key's purpose does not allow the requested operation.
    #[error("key {handle} ({purpose}) may not be used to {operation}")]
    NotPermitted {
        /// The key.
        handle: KeyHandle,
        /// What the key is for.
        purpose: KeyPurpose,
        /// What was asked.
        operation: &'static str,
    },
    /// The passphrase does not open this key store.
    #[error("the HSM passphrase is wrong (it does not open the key store in {0})")]
    WrongPassphrase(String),
    /// The key store was created with another kind of master key.
    #[error("{0}")]
    MasterKeyMismatch(String),
    /// A stored key file cannot be read or fails authentication.
    #[error("key file {path} is damaged or was tampered with: {reason}")]
    CorruptKeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An invalid handle label.
    #[error("invalid key handle {0:?}: use 1-128 characters of a-z, 0-9, '.', '-', '_' and '/'")]
    InvalidHandle(String),
    /// Unknown key type name.
    #[error("unknown key type {0:?}: expected one of rsa2048, rsa3072, rsa4096, p256, p384, ed25519")]
    UnknownKeyType(String),
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    /// A sealed secret does not open.
    #[error(
        "the sealed secret of {0} does not open: it was altered, belongs to another context, or was \
         sealed under another master key"
    )]
    SealedSecret(String),
    /// Signing failed.
    #[error("signing with key {0} failed")]
    Signing(KeyHandle),
    /// PKCS#12 creation failed.
    #[error("PKCS#12 export failed: {0}")]
    Pkcs12(String),
    /// PKCS#12 password unusable.
    #[error("the PKCS#12 password must be at least {min} characters")]
    WeakPkcs12Password {
        /// Minimum length.
        min: usize,
    },
    /// The PKCS#11 module, token or PIN is not usable; the text names which.
    #[error("{0}")]
    TokenUnavailable(String),
    /// A PKCS#11 call failed.
    #[error("the HSM refused to {op}: {reason}")]
    Pkcs11 {
        /// What was asked of the token.
        op: &'static str,
        /// The PKCS#11 return value.
        reason: String,
    },
    /// The token does not offer what a key type needs.
    #[error("the token {token:?} does not offer {what}: choose another key type (p256, p384 or rsa2048/3072/4096)")]
    UnsupportedByToken {
        /// The token's label.
        token: String,
        /// What is missing.
        what: String,
    },
    /// The database that keeps the sealed records failed (its message, one line).
    #[error("key store database: {0}")]
    Storage(String),
    /// File system error.
    #[error("key store I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.display().to_string(), source }
    }
}
