//! Adapters between hsm-sim signers and rcgen: the CA signs through a handle, never key bytes.

use std::sync::{Arc, Mutex};

use hsm_sim::{KeyType, Signer};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

/// rcgen's algorithm for a key type (it fixes both the SPKI algorithm and the signature OID).
pub(crate) fn alg_for(kt: KeyType) -> &'static SignatureAlgorithm {
    match kt {
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Ed25519 => &rcgen::PKCS_ED25519,
    }
}

/// A CA-held key in the key store.
#[derive(Debug, Clone)]
pub(crate) struct HsmKey {
    pub(crate) signer: Arc<dyn Signer>,
    alg: &'static SignatureAlgorithm,
}

impl HsmKey {
    pub(crate) fn new(signer: Arc<dyn Signer>) -> Self {
        let alg = alg_for(signer.key_type());
        HsmKey { signer, alg }
    }
}

impl PublicKeyData for HsmKey {
    fn der_bytes(&self) -> &[u8] {
        self.signer.public_key_raw()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl SigningKey for HsmKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// A subject's public key (from a CSR or the key store).
#[derive(Debug, Clone)]
pub(crate) struct SubjectKey {
    pub(crate) raw: Vec<u8>,
    pub(crate) alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// The lint hook: gets the DER of the to-be-signed structure, says what is wrong with it.
pub(crate) type Lint<'a> = &'a (dyn Fn(&[u8]) -> Result<(), String> + Sync);

/// A signing key for one call: lints the TBS bytes rcgen hands over and signs them only when the
/// lint passes (Boulder's "lint before you sign").
pub(crate) struct LintingKey<'a> {
    key: &'a HsmKey,
    lint: Option<Lint<'a>>,
    failure: Mutex<Option<String>>,
    key_store_failure: Mutex<Option<hsm_sim::Error>>,
}

impl<'a> LintingKey<'a> {
    pub(crate) fn new(key: &'a HsmKey, lint: Option<Lint<'a>>) -> Self {
        LintingKey { key, lint, failure: Mutex::new(None), key_store_failure: Mutex::new(None) }
    }

    /// The lint failure of the last `sign`, if that is why it failed.
    pub(crate) fn take_failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The key store's error of the last `sign`, if that is why it failed (a token removed):
    /// rcgen's own error would only say "remote key error".
    pub(crate) fn take_key_store_failure(&self) -> Option<hsm_sim::Error> {
        self.key_store_failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl PublicKeyData for LintingKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key.der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.key.algorithm()
    }
}

impl SigningKey for LintingKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        if let Some(lint) = self.lint {
            if let Err(e) = lint(msg) {
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return Err(rcgen::Error::RemoteKeyError);
            }
        }
        self.key.signer.sign(msg).map_err(|e| {
            *self.key_store_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}
