//! The master key that wraps every stored key (AES-256-GCM from ring).
//!
//! It comes from a passphrase through argon2id, or — the development default — from a random
//! key file with mode 0600 beside the keys.

use std::fs;
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_private_new;
use crate::records::SealedRecords;
use crate::Error;

pub(crate) const KEY_FILE: &str = "master.key";
pub(crate) const KDF_FILE: &str = "master.kdf.json";
const CHECK_PLAINTEXT: &[u8] = b"hsm-sim master key check v1";

/// Where the master key comes from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// A random 256-bit key in `master.key` inside the key directory, created on first use.
    /// For development: whoever can read the data directory can read the keys.
    KeyFile,
    /// A passphrase, stretched with argon2id (64 MiB, 3 passes) and a stored random salt.
    Passphrase(String),
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKeySource::KeyFile => f.write_str("KeyFile"),
            MasterKeySource::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct KdfFile {
    alg: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
    check_nonce: String,
    check: String,
}

pub(crate) struct MasterKey {
    key: LessSafeKey,
}

impl MasterKey {
    fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| Error::CorruptKeyFile {
            path: KEY_FILE.into(),
            reason: "master key has the wrong length".into(),
        })?;
        Ok(MasterKey { key: LessSafeKey::new(unbound) })
    }

    /// Opens (or on first use creates) the master key of the store whose key directory is `dir`
    /// and whose sealed records (and, with a passphrase, the master key's derivation
    /// parameters) `records` keeps.
    pub(crate) fn load(
        dir: &Path,
        source: &MasterKeySource,
        records: &dyn SealedRecords,
    ) -> Result<Self, Error> {
        let key_file = dir.join(KEY_FILE);
        let rng = SystemRandom::new();
        match source {
            MasterKeySource::KeyFile => {
                if !records.allows_master_key_file() {
                    return Err(Error::MasterKeyMismatch(format!(
                        "the keys are kept in {}, shared by every node: a random master key file would be this node's alone; configure the master passphrase (hsm.passphrase_file or PKI_HSM_PASSPHRASE)",
                        records.master_params_place()
                    )));
                }
                if records.master_params()?.is_some() {
                    return Err(Error::MasterKeyMismatch(format!(
                        "the key store in {} is protected by a passphrase; configure hsm.passphrase_file or PKI_HSM_PASSPHRASE",
                        dir.display()
                    )));
                }
                if !key_file.exists() {
                    let mut bytes = [0u8; 32];
                    rng.fill(&mut bytes).map_err(|_| Error::KeyGeneration("no randomness".into()))?;
                    write_private_new(&key_file, &bytes)?;
                    tracing::warn!(
                        path = %key_file.display(),
                        "created a random master key file: for development only; configure a passphrase for production"
                    );
                }
                let bytes = fs::read(&key_file).map_err(|e| Error::io(&key_file, e))?;
                Self::from_bytes(&bytes)
            }
            MasterKeySource::Passphrase(pass) => {
                if key_file.exists() {
                    return Err(Error::MasterKeyMismatch(format!(
                        "the key store in {} is protected by a master key file, not a passphrase; remove the passphrase setting",
                        dir.display()
                    )));
                }
                if let Some(params) = records.master_params()? {
                    return Self::from_params(pass, &params, records);
                }
                let mut salt = [0u8; 16];
                rng.fill(&mut salt).map_err(|_| Error::KeyGeneration("no randomness".into()))?;
                let (m, t, p) = (65_536, 3, 1);
                let key = derive(pass, &salt, m, t, p)?;
                let master = Self::from_bytes(&key)?;
                let (nonce, check) = master.seal(b"check", CHECK_PLAINTEXT)?;
                let kdf = KdfFile {
                    alg: "argon2id".into(),
                    m_cost_kib: m,
                    t_cost: t,
                    p_cost: p,
                    salt: hex::encode(salt),
                    check_nonce: hex::encode(nonce),
                    check: hex::encode(check),
                };
                let text =
                    serde_json::to_vec_pretty(&kdf).map_err(|e| Error::KeyGeneration(e.to_string()))?;
                if records.put_master_params_new(&text)? {
                    return Ok(master);
                }
                // Another node created the store at the same moment: its parameters count.
                let params = records.master_params()?.ok_or_else(|| Error::CorruptKeyFile {
                    path: records.master_params_place(),
                    reason: "the master key's parameters were stored and are gone".into(),
                })?;
                Self::from_params(pass, &params, records)
            }
        }
    }

    /// The master key `pass` gives with the stored derivation parameters `params`, checked
    /// against their check value ([`Error::WrongPassphrase`] when it does not open it).
    fn from_params(pass: &str, params: &[u8], records: &dyn SealedRecords) -> Result<Self, Error> {
        let place = records.master_params_place();
        let corrupt = |reason: &str| Error::CorruptKeyFile { path: place.clone(), reason: reason.into() };
        let kdf: KdfFile = serde_json::from_slice(params).map_err(|e| corrupt(&e.to_string()))?;
        let salt = hex::decode(&kdf.salt).map_err(|_| corrupt("bad salt"))?;
        let key = derive(pass, &salt, kdf.m_cost_kib, kdf.t_cost, kdf.p_cost)?;
        let master = Self::from_bytes(&key)?;
        let nonce = hex::decode(&kdf.check_nonce).map_err(|_| corrupt("bad nonce"))?;
        let check = hex::decode(&kdf.check).map_err(|_| corrupt("bad check value"))?;
        match master.open(&nonce, b"check", &check) {
            Ok(p) if p == CHECK_PLAINTEXT => Ok(master),
            _ => Err(Error::WrongPassphrase(place)),
        }
    }

    /// Encrypts `plaintext`, bound to `aad`; returns (nonce, ciphertext||tag).
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), Error> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| Error::KeyGeneration("no randomness".into()))?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| Error::KeyGeneration("encryption failed".into()))?;
        Ok((nonce, buf))
    }

    /// Decrypts and authenticates; `Err(())` when the nonce, tag or AAD do not match.
    pub(crate) fn open(&self, nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, ()> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| ())?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| ())?;
        Ok(plain.to_vec())
    }
}

fn derive(pass: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<[u8; 32], Error> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| Error::KeyGeneration(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(pass.as_bytes(), salt, &mut out)
        .map_err(|e| Error::KeyGeneration(e.to_string()))?;
    Ok(out)
}
