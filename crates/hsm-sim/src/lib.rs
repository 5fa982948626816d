//! # hsm-sim — key custody
//!
//! **Owns:** key generation (RSA 2048/3072/4096, ECDSA P-256/P-384, Ed25519), signing by key
//! handle, the escrow of subscribers' encryption keys (they leave only wrapped, as a
//! password-protected PKCS#12), the sealed/unsealed state, and its own store in which every key is
//! encrypted at rest (AES-256-GCM under a master key, bound to the key's handle, type and purpose).
//!
//! **Must not:** hand out plaintext CA, OCSP or TSA private keys — there is no call that does.
//!
//! Callers hold a [`Signer`] (a handle plus a `sign` call), never key bytes. Two backends
//! implement [`KeyCustody`]: [`HsmSim`], the sealed file store, and [`Pkcs11Custody`], a hardware
//! security module through PKCS#11 (keys generated on the token, never extractable; escrowed keys
//! encrypted by the token; see `docs/hsm-pkcs11.md`). [`HsmSim::move_to_token`] moves a file
//! store onto a token.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod escrow;
mod fsutil;
mod key;
mod master;
mod pkcs11;
mod records;
mod spki;
mod token_der;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

pub use error::Error;
pub use escrow::MIN_PASSWORD_LEN as MIN_PKCS12_PASSWORD_LEN;
pub use key::{KeyHandle, KeyPurpose, KeyType, SignatureScheme};
pub use master::MasterKeySource;
pub use pkcs11::{Pkcs11Config, Pkcs11Custody, WRAP_KEY_LABEL};
pub use records::{FileRecords, SealedRecords};

use fsutil::ensure_private_dir;
use master::MasterKey;

/// A key that signs inside the key store. This is all the CA, OCSP and TSA code ever hold.
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// The handle of the key.
    fn handle(&self) -> &KeyHandle;
    /// The key's type, which fixes its signature scheme.
    fn key_type(&self) -> KeyType;
    /// The DER SubjectPublicKeyInfo of the key.
    fn public_key_spki(&self) -> &[u8];
    /// The contents of the SPKI's subjectPublicKey BIT STRING.
    fn public_key_raw(&self) -> &[u8];
    /// Signs `msg` with the key's [`SignatureScheme`]; the signature as it goes into X.509/CMS.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error>;
}

/// Public half of a generated key.
#[derive(Debug, Clone)]
pub struct PublicKeyInfo {
    /// The key's handle.
    pub handle: KeyHandle,
    /// The key's type.
    pub key_type: KeyType,
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// The subjectPublicKey BIT STRING contents.
    pub raw: Vec<u8>,
}

/// The operations of a key custody backend.
pub trait KeyCustody: Send + Sync {
    /// Generates a key under a new handle. A handle is never reused.
    fn generate(
        &self,
        handle: &KeyHandle,
        key_type: KeyType,
        purpose: KeyPurpose,
    ) -> Result<PublicKeyInfo, Error>;
    /// Whether a key exists under `handle`.
    fn contains(&self, handle: &KeyHandle) -> Result<bool, Error>;
    /// The public half of a key.
    fn public_key(&self, handle: &KeyHandle) -> Result<PublicKeyInfo, Error>;
    /// A signer for a key whose purpose allows signing.
    fn signer(&self, handle: &KeyHandle) -> Result<Arc<dyn Signer>, Error>;
    /// Wraps an escrowed key and its certificate chain (leaf first) into a PKCS#12 protected by
    /// `password` (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC; MAC HMAC-SHA256). Refused for every
    /// purpose but [`KeyPurpose::Escrow`].
    fn export_pkcs12(
        &self,
        handle: &KeyHandle,
        chain_der: &[Vec<u8>],
        password: &str,
        friendly_name: &str,
    ) -> Result<Vec<u8>, Error>;
    /// Seals a small secret of the layers above (a console user's TOTP seed) under the custody
    /// layer's master key, bound to `context` (say, the account it belongs to): only
    /// [`KeyCustody::open_secret`] with the same context gets it back.
    fn seal_secret(&self, context: &str, secret: &[u8]) -> Result<Vec<u8>, Error>;
    /// Opens what [`KeyCustody::seal_secret`] sealed under `context`; refused when the sealed
    /// bytes were altered, belong to another context, or were sealed under another master key.
    fn open_secret(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, Error>;
    /// Whether the custody layer can sign now: `Err` names what is wrong (a removed token, a
    /// sealed store). The soft store answers from memory; a token is asked.
    fn health(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Moves one secret sealed by `from` under `context` to `to` (`pki hsm import` moving a soft store
/// onto a token): `None` when `to` opens it already (an earlier run moved it), else the secret
/// sealed by `to`, opened there once before it is returned. Refused when neither opens it.
pub fn reseal_secret(
    from: &dyn KeyCustody,
    to: &dyn KeyCustody,
    context: &str,
    sealed: &[u8],
) -> Result<Option<Vec<u8>>, Error> {
    match to.open_secret(context, sealed) {
        Ok(_) => return Ok(None),
        Err(Error::SealedSecret(_)) => {}
        Err(e) => return Err(e),
    }
    let secret = from.open_secret(context, sealed)?;
    let resealed = to.seal_secret(context, &secret)?;
    to.open_secret(context, &resealed)?;
    Ok(Some(resealed))
}

/// The associated data of a sealed secret: a label and the context.
fn secret_aad(context: &str) -> Vec<u8> {
    let mut aad = b"pki sealed secret v1\0".to_vec();
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// On-disk form of one key: its private key as PKCS#8, encrypted.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    handle: KeyHandle,
    key_type: KeyType,
    purpose: KeyPurpose,
    spki: String,
    nonce: String,
    ciphertext: String,
}

impl KeyFile {
    /// The associated data that binds the ciphertext to the key's metadata, so that a purpose
    /// cannot be edited (say, to make a CA key exportable) without the decryption failing.
    fn aad(&self) -> Vec<u8> {
        format!("hsm-sim/v1|{}|{}|{}|{}", self.handle, self.key_type.name(), self.purpose.name(), self.spki)
            .into_bytes()
    }
}

/// A key ready to sign: RSA by AWS-LC (its RSA-2048 signature takes less than half of ring's
/// time on a CPU with AVX-512, which ring does not use for RSA), the others by ring.
enum SigningKey {
    Rsa(aws_lc_rs::signature::RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

struct LoadedKey {
    handle: KeyHandle,
    key_type: KeyType,
    spki: Vec<u8>,
    raw: Vec<u8>,
    key: SigningKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmKey")
            .field("handle", &self.handle)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl Signer for LoadedKey {
    fn handle(&self) -> &KeyHandle {
        &self.handle
    }
    fn key_type(&self) -> KeyType {
        self.key_type
    }
    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }
    fn public_key_raw(&self) -> &[u8] {
        &self.raw
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let err = || Error::Signing(self.handle.clone());
        match &self.key {
            SigningKey::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                // PKCS#1 v1.5 is deterministic: AWS-LC takes a generator and does not use it.
                let rng = aws_lc_rs::rand::SystemRandom::new();
                kp.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).map_err(|_| err())?;
                Ok(sig)
            }
            SigningKey::Ecdsa(kp) => Ok(kp.sign(&self.rng, msg).map_err(|_| err())?.as_ref().to_vec()),
            SigningKey::Ed25519(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
        }
    }
}

fn load_key(key_type: KeyType, pkcs8: &[u8]) -> Result<(SigningKey, Vec<u8>), String> {
    use aws_lc_rs::signature::KeyPair as _;
    let rng = SystemRandom::new();
    match key_type {
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let kp = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| e.to_string())?;
            let raw = kp.public_key().as_ref().to_vec();
            Ok((SigningKey::Rsa(kp), raw))
        }
        KeyType::P256 | KeyType::P384 => {
            let alg = if key_type == KeyType::P256 {
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING
            } else {
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING
            };
            let kp = EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rng).map_err(|e| e.to_string())?;
            let raw = kp.public_key().as_ref().to_vec();
            Ok((SigningKey::Ecdsa(kp), raw))
        }
        KeyType::Ed25519 => {
            let kp = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| e.to_string())?;
            let raw = kp.public_key().as_ref().to_vec();
            Ok((SigningKey::Ed25519(kp), raw))
        }
    }
}

fn generate_pkcs8(key_type: KeyType) -> Result<Vec<u8>, Error> {
    let rng = SystemRandom::new();
    let gen_err = |e: String| Error::KeyGeneration(e);
    match key_type {
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            use rsa::pkcs8::EncodePrivateKey;
            let bits = key_type.rsa_bits().unwrap_or(2048);
            let key =
                rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits).map_err(|e| gen_err(e.to_string()))?;
            let der = key.to_pkcs8_der().map_err(|e| gen_err(e.to_string()))?;
            Ok(der.as_bytes().to_vec())
        }
        KeyType::P256 => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| gen_err(e.to_string())),
        KeyType::P384 => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, &rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| gen_err(e.to_string())),
        KeyType::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| gen_err(e.to_string())),
    }
}

struct State {
    master: Option<MasterKey>,
    cache: HashMap<KeyHandle, Arc<LoadedKey>>,
}

/// The software key store: every key sealed under the master key, kept by a [`SealedRecords`]
/// store (one file per key in a private directory by default).
pub struct HsmSim {
    dir: PathBuf,
    records: Arc<dyn SealedRecords>,
    state: RwLock<State>,
}

impl std::fmt::Debug for HsmSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmSim").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl HsmSim {
    /// Opens (creating if needed) the key store in `dir` — the master key's file and one file per
    /// key — and unseals it with `source`.
    pub fn open(dir: impl AsRef<Path>, source: &MasterKeySource) -> Result<Self, Error> {
        let records = Arc::new(FileRecords::open(dir.as_ref())?);
        Self::with_records(dir, records, source)
    }

    /// Opens the key store whose master key's file is in `dir` and whose sealed key records are
    /// kept by `records`, and unseals it with `source`.
    pub fn with_records(
        dir: impl AsRef<Path>,
        records: Arc<dyn SealedRecords>,
        source: &MasterKeySource,
    ) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        ensure_private_dir(&dir)?;
        let master = MasterKey::load(&dir, source, &*records)?;
        Ok(HsmSim { dir, records, state: RwLock::new(State { master: Some(master), cache: HashMap::new() }) })
    }

    /// The handles of every key in the store.
    pub fn handles(&self) -> Result<Vec<KeyHandle>, Error> {
        self.records.handles()
    }

    /// Forgets the master key and every loaded key; all operations fail with [`Error::Sealed`]
    /// until [`HsmSim::unseal`].
    pub fn seal(&self) {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.master = None;
        st.cache.clear();
    }

    /// Loads the master key again.
    pub fn unseal(&self, source: &MasterKeySource) -> Result<(), Error> {
        let master = MasterKey::load(&self.dir, source, &*self.records)?;
        self.state.write().unwrap_or_else(|p| p.into_inner()).master = Some(master);
        Ok(())
    }

    /// Whether the store is sealed.
    pub fn is_sealed(&self) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).master.is_none()
    }

    /// Where the record of `handle` is, for messages.
    fn place(&self, handle: &KeyHandle) -> String {
        self.records.place(handle)
    }

    fn read_key_file(&self, handle: &KeyHandle) -> Result<KeyFile, Error> {
        let text = self.records.get(handle)?.ok_or_else(|| Error::NoSuchKey(handle.clone()))?;
        let kf: KeyFile = serde_json::from_slice(&text)
            .map_err(|e| Error::CorruptKeyFile { path: self.place(handle), reason: e.to_string() })?;
        if &kf.handle != handle {
            return Err(Error::CorruptKeyFile {
                path: self.place(handle),
                reason: "file names another handle".into(),
            });
        }
        Ok(kf)
    }

    /// Decrypts a key file's PKCS#8. Private: the plaintext never leaves this crate except
    /// re-wrapped by [`escrow`].
    fn decrypt(&self, kf: &KeyFile) -> Result<Vec<u8>, Error> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let master = st.master.as_ref().ok_or(Error::Sealed)?;
        let corrupt =
            |reason: &str| Error::CorruptKeyFile { path: self.place(&kf.handle), reason: reason.into() };
        let nonce = hex::decode(&kf.nonce).map_err(|_| corrupt("bad nonce"))?;
        let ct = hex::decode(&kf.ciphertext).map_err(|_| corrupt("bad ciphertext"))?;
        master
            .open(&nonce, &kf.aad(), &ct)
            .map_err(|_| corrupt("authentication failed (wrong master key or altered file)"))
    }
}

impl HsmSim {
    /// Moves every key of this store onto a PKCS#11 token (`pki hsm import`): signing keys are
    /// created on the token as sensitive and non-extractable, each checked by a signature made
    /// there and verified with its stored public key; escrowed keys are re-wrapped under the
    /// token's wrapping key and read back. Then the moved key files are deleted. Refused, before anything is moved, when any handle exists there.
    /// The plaintext never leaves this crate. The keys moved, with their purposes.
    pub fn move_to_token(&self, token: &Pkcs11Custody) -> Result<Vec<(KeyHandle, KeyPurpose)>, Error> {
        let mut files = Vec::new();
        for handle in self.records.handles()? {
            files.push(self.read_key_file(&handle)?);
        }
        files.sort_by(|a, b| a.handle.cmp(&b.handle));
        for kf in &files {
            if token.contains(&kf.handle)? {
                return Err(Error::KeyExists(kf.handle.clone()));
            }
        }
        let mut moved = Vec::new();
        for kf in &files {
            let pkcs8 = self.decrypt(kf)?;
            let spki_der = hex::decode(&kf.spki).map_err(|_| Error::CorruptKeyFile {
                path: self.place(&kf.handle),
                reason: "bad public key".into(),
            })?;
            let (_, raw) = load_key(kf.key_type, &pkcs8)
                .map_err(|reason| Error::CorruptKeyFile { path: self.place(&kf.handle), reason })?;
            let encoded = spki::encode(kf.key_type, &raw)
                .map_err(|reason| Error::CorruptKeyFile { path: self.place(&kf.handle), reason })?;
            if encoded != spki_der {
                return Err(Error::CorruptKeyFile {
                    path: self.place(&kf.handle),
                    reason: "the private key does not match the stored public key".into(),
                });
            }
            if kf.purpose.may_sign() {
                token.import_signing_key(&kf.handle, kf.key_type, &pkcs8, &raw)?;
            } else {
                token.import_escrow_key(&kf.handle, kf.key_type, &pkcs8, &spki_der)?;
            }
            tracing::info!(handle = %kf.handle, purpose = %kf.purpose, "moved key onto the token");
            moved.push((kf.handle.clone(), kf.purpose));
        }
        // Every key is on the token and checked there: the store keeps no copy.
        for kf in &files {
            self.records.remove(&kf.handle)?;
        }
        self.state.write().unwrap_or_else(|p| p.into_inner()).cache.clear();
        Ok(moved)
    }
}

impl KeyCustody for HsmSim {
    fn generate(
        &self,
        handle: &KeyHandle,
        key_type: KeyType,
        purpose: KeyPurpose,
    ) -> Result<PublicKeyInfo, Error> {
        if self.is_sealed() {
            return Err(Error::Sealed);
        }
        if self.contains(handle)? {
            return Err(Error::KeyExists(handle.clone()));
        }
        let pkcs8 = generate_pkcs8(key_type)?;
        let (_, raw) = load_key(key_type, &pkcs8).map_err(Error::KeyGeneration)?;
        let spki = spki::encode(key_type, &raw).map_err(Error::KeyGeneration)?;
        let mut kf = KeyFile {
            version: 1,
            handle: handle.clone(),
            key_type,
            purpose,
            spki: hex::encode(&spki),
            nonce: String::new(),
            ciphertext: String::new(),
        };
        let (nonce, ct) = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            st.master.as_ref().ok_or(Error::Sealed)?.seal(&kf.aad(), &pkcs8)?
        };
        kf.nonce = hex::encode(nonce);
        kf.ciphertext = hex::encode(ct);
        let bytes = serde_json::to_vec(&kf).map_err(|e| Error::KeyGeneration(e.to_string()))?;
        self.records.put_new(handle, &bytes)?;
        tracing::info!(handle = %handle, key_type = %key_type, purpose = %purpose, "generated key");
        Ok(PublicKeyInfo { handle: handle.clone(), key_type, spki, raw })
    }

    fn contains(&self, handle: &KeyHandle) -> Result<bool, Error> {
        Ok(self.records.get(handle)?.is_some())
    }

    fn public_key(&self, handle: &KeyHandle) -> Result<PublicKeyInfo, Error> {
        let kf = self.read_key_file(handle)?;
        let spki = hex::decode(&kf.spki).map_err(|_| Error::CorruptKeyFile {
            path: self.place(handle),
            reason: "bad public key".into(),
        })?;
        let raw = raw_from_spki(&spki).ok_or_else(|| Error::CorruptKeyFile {
            path: self.place(handle),
            reason: "bad public key".into(),
        })?;
        Ok(PublicKeyInfo { handle: handle.clone(), key_type: kf.key_type, spki, raw })
    }

    fn signer(&self, handle: &KeyHandle) -> Result<Arc<dyn Signer>, Error> {
        {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            if st.master.is_none() {
                return Err(Error::Sealed);
            }
            if let Some(k) = st.cache.get(handle) {
                return Ok(k.clone());
            }
        }
        let kf = self.read_key_file(handle)?;
        if !kf.purpose.may_sign() {
            return Err(Error::NotPermitted {
                handle: handle.clone(),
                purpose: kf.purpose,
                operation: "sign",
            });
        }
        let pkcs8 = self.decrypt(&kf)?;
        let (key, raw) = load_key(kf.key_type, &pkcs8)
            .map_err(|reason| Error::CorruptKeyFile { path: self.place(handle), reason })?;
        let spki = spki::encode(kf.key_type, &raw)
            .map_err(|reason| Error::CorruptKeyFile { path: self.place(handle), reason })?;
        let loaded = Arc::new(LoadedKey {
            handle: handle.clone(),
            key_type: kf.key_type,
            spki,
            raw,
            key,
            rng: SystemRandom::new(),
        });
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.cache.insert(handle.clone(), loaded.clone());
        Ok(loaded)
    }

    fn export_pkcs12(
        &self,
        handle: &KeyHandle,
        chain_der: &[Vec<u8>],
        password: &str,
        friendly_name: &str,
    ) -> Result<Vec<u8>, Error> {
        let kf = self.read_key_file(handle)?;
        if !kf.purpose.may_export_wrapped() {
            return Err(Error::NotPermitted {
                handle: handle.clone(),
                purpose: kf.purpose,
                operation: "export",
            });
        }
        escrow::check_password(password)?;
        let pkcs8 = self.decrypt(&kf)?;
        escrow::pkcs12(&pkcs8, chain_der, password, friendly_name)
    }

    /// The nonce followed by the AES-256-GCM ciphertext and tag.
    fn seal_secret(&self, context: &str, secret: &[u8]) -> Result<Vec<u8>, Error> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let (nonce, ct) = st.master.as_ref().ok_or(Error::Sealed)?.seal(&secret_aad(context), secret)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open_secret(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let master = st.master.as_ref().ok_or(Error::Sealed)?;
        let refused = || Error::SealedSecret(context.to_string());
        let (nonce, ct) = sealed.split_at_checked(12).ok_or_else(refused)?;
        master.open(nonce, &secret_aad(context), ct).map_err(|()| refused())
    }
}

/// Extracts the subjectPublicKey bytes from an SPKI this crate encoded.
fn raw_from_spki(spki: &[u8]) -> Option<Vec<u8>> {
    // SEQUENCE { AlgorithmIdentifier, BIT STRING }: skip the outer header and the algorithm.
    fn header(b: &[u8]) -> Option<(usize, usize)> {
        let first = *b.get(1)?;
        if first < 0x80 {
            Some((2, first as usize))
        } else {
            let n = (first & 0x7f) as usize;
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *b.get(2 + i)? as usize;
            }
            Some((2 + n, len))
        }
    }
    let (h, _) = header(spki)?;
    let rest = spki.get(h..)?;
    let (ah, alen) = header(rest)?;
    let bit = rest.get(ah + alen..)?;
    let (bh, blen) = header(bit)?;
    Some(bit.get(bh + 1..bh + blen)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::UnparsedPublicKey;
    use std::fs;

    fn store() -> (tempfile::TempDir, HsmSim) {
        let dir = tempfile::tempdir().expect("tempdir");
        let hsm = HsmSim::open(dir.path().join("keys"), &MasterKeySource::KeyFile).expect("open");
        (dir, hsm)
    }

    fn verify_alg(t: KeyType) -> &'static dyn signature::VerificationAlgorithm {
        match t {
            KeyType::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            KeyType::P384 => &signature::ECDSA_P384_SHA384_ASN1,
            KeyType::Ed25519 => &signature::ED25519,
            _ => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }

    #[test]
    fn every_key_type_signs_and_verifies() {
        let (_d, hsm) = store();
        for t in [KeyType::Rsa2048, KeyType::P256, KeyType::P384, KeyType::Ed25519] {
            let h: KeyHandle = format!("test/{}", t.name()).parse().expect("handle");
            let info = hsm.generate(&h, t, KeyPurpose::CaSigning).expect("generate");
            let signer = hsm.signer(&h).expect("signer");
            assert_eq!(signer.public_key_spki(), info.spki.as_slice());
            assert_eq!(hsm.public_key(&h).expect("pub").raw, info.raw);
            let sig = signer.sign(b"message").expect("sign");
            UnparsedPublicKey::new(verify_alg(t), &info.raw).verify(b"message", &sig).expect("verifies");
        }
    }

    #[test]
    fn a_secret_resealed_opens_under_the_new_custody_once_and_a_second_run_leaves_it() {
        let ((_d1, from), (_d2, to)) = (store(), store());
        let secret = b"twenty bytes of totp";
        let sealed = from.seal_secret("console-totp:alice", secret).expect("seal");
        let moved = reseal_secret(&from, &to, "console-totp:alice", &sealed).expect("reseal").expect("moved");
        assert_eq!(to.open_secret("console-totp:alice", &moved).expect("open"), secret);
        assert!(matches!(from.open_secret("console-totp:alice", &moved), Err(Error::SealedSecret(_))));
        // Moved already: nothing to do.
        assert!(reseal_secret(&from, &to, "console-totp:alice", &moved).expect("again").is_none());
        // Neither opens it: in another context, or altered.
        for (context, bytes) in [
            ("console-totp:bob", sealed.clone()),
            ("console-totp:alice", {
                let mut b = sealed.clone();
                *b.last_mut().expect("bytes") ^= 1;
                b
            }),
        ] {
            let e = reseal_secret(&from, &to, context, &bytes).expect_err("refused");
            assert!(matches!(&e, Error::SealedSecret(c) if c == context), "{e}");
        }
    }

    #[test]
    fn sealed_secrets_open_only_in_their_context_unaltered_and_under_their_master_key() {
        let (d, hsm) = store();
        let secret = b"twenty bytes of totp";
        let sealed = hsm.seal_secret("console-totp:alice", secret).expect("seal");
        assert!(!sealed.windows(secret.len()).any(|w| w == secret), "plaintext in the sealed form");
        assert_ne!(sealed, hsm.seal_secret("console-totp:alice", secret).expect("seal"), "fresh nonce");
        assert_eq!(hsm.open_secret("console-totp:alice", &sealed).expect("open"), secret);
        let e = hsm.open_secret("console-totp:bob", &sealed).expect_err("other context");
        assert!(e.to_string().contains("sealed secret of console-totp:bob does not open"), "{e}");
        for bad in [sealed[..sealed.len() - 1].to_vec(), vec![], vec![0; 11], {
            let mut t = sealed.clone();
            t[15] ^= 1;
            t
        }] {
            assert!(matches!(hsm.open_secret("console-totp:alice", &bad), Err(Error::SealedSecret(_))));
        }
        // Another key store (another master key) cannot open it; a sealed store cannot either.
        let other = HsmSim::open(d.path().join("other"), &MasterKeySource::KeyFile).expect("open");
        assert!(matches!(other.open_secret("console-totp:alice", &sealed), Err(Error::SealedSecret(_))));
        hsm.seal();
        assert!(matches!(hsm.open_secret("console-totp:alice", &sealed), Err(Error::Sealed)));
        assert!(matches!(hsm.seal_secret("console-totp:alice", secret), Err(Error::Sealed)));
    }

    #[test]
    fn ca_keys_are_not_exportable_and_escrow_keys_do_not_sign() {
        let (_d, hsm) = store();
        let ca: KeyHandle = "ca/x".parse().expect("handle");
        hsm.generate(&ca, KeyType::P256, KeyPurpose::CaSigning).expect("gen");
        assert!(matches!(
            hsm.export_pkcs12(&ca, &[], "long enough password", "x"),
            Err(Error::NotPermitted { .. })
        ));
        let esc: KeyHandle = "escrow/x".parse().expect("handle");
        hsm.generate(&esc, KeyType::P256, KeyPurpose::Escrow).expect("gen");
        assert!(matches!(hsm.signer(&esc), Err(Error::NotPermitted { .. })));
        assert!(matches!(hsm.generate(&esc, KeyType::P256, KeyPurpose::Escrow), Err(Error::KeyExists(_))));
    }

    #[test]
    fn editing_the_purpose_breaks_decryption() {
        let (d, hsm) = store();
        let ca: KeyHandle = "ca/y".parse().expect("handle");
        hsm.generate(&ca, KeyType::P256, KeyPurpose::CaSigning).expect("gen");
        let path = std::path::PathBuf::from(hsm.place(&ca));
        let text = fs::read_to_string(&path).expect("read");
        fs::write(&path, text.replace("ca_signing", "escrow")).expect("write");
        let hsm2 = HsmSim::open(d.path().join("keys"), &MasterKeySource::KeyFile).expect("open");
        let err =
            hsm2.export_pkcs12(&ca, &[], "long enough password", "x").expect_err("altered file must fail");
        assert!(matches!(err, Error::CorruptKeyFile { .. }), "{err}");
    }

    #[test]
    fn passphrase_store_rejects_a_wrong_passphrase_and_sealing_stops_signing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = MasterKeySource::Passphrase("correct horse battery staple".into());
        let hsm = HsmSim::open(dir.path(), &good).expect("open");
        let h: KeyHandle = "ca/z".parse().expect("handle");
        hsm.generate(&h, KeyType::P256, KeyPurpose::CaSigning).expect("gen");
        let wrong = MasterKeySource::Passphrase("wrong".into());
        assert!(matches!(HsmSim::open(dir.path(), &wrong), Err(Error::WrongPassphrase(_))));
        assert!(matches!(
            HsmSim::open(dir.path(), &MasterKeySource::KeyFile),
            Err(Error::MasterKeyMismatch(_))
        ));
        hsm.seal();
        assert!(matches!(hsm.signer(&h), Err(Error::Sealed)));
        hsm.unseal(&good).expect("unseal");
        hsm.signer(&h).expect("signer after unseal");
    }

    #[test]
    fn no_plaintext_pkcs8_on_disk() {
        let (d, hsm) = store();
        let h: KeyHandle = "escrow/p".parse().expect("handle");
        hsm.generate(&h, KeyType::P256, KeyPurpose::Escrow).expect("gen");
        let p12 = hsm.export_pkcs12(&h, &[], "long enough password", "p").expect("p12");
        let ks = p12_keystore::KeyStore::from_pkcs12(
            &p12,
            "long enough password",
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .expect("parse p12");
        let (_, chain) = ks.private_key_chain().expect("key");
        let pkcs8 = chain.key().as_der().to_vec();
        for entry in fs::read_dir(d.path().join("keys")).expect("dir") {
            let bytes = fs::read(entry.expect("entry").path()).expect("read");
            assert!(!bytes.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()));
            let hexed = hex::encode(&pkcs8);
            assert!(!String::from_utf8_lossy(&bytes).contains(&hexed));
        }
    }

    /// Records kept in memory: the soft store works over any [`SealedRecords`].
    #[derive(Debug, Default)]
    struct MemoryRecords {
        keys: std::sync::Mutex<HashMap<String, Vec<u8>>>,
        params: std::sync::Mutex<Option<Vec<u8>>>,
        shared: bool,
    }

    impl SealedRecords for MemoryRecords {
        fn put_new(&self, handle: &KeyHandle, record: &[u8]) -> Result<(), Error> {
            let mut m = self.keys.lock().expect("lock");
            if m.contains_key(handle.as_str()) {
                return Err(Error::KeyExists(handle.clone()));
            }
            m.insert(handle.as_str().to_string(), record.to_vec());
            Ok(())
        }
        fn get(&self, handle: &KeyHandle) -> Result<Option<Vec<u8>>, Error> {
            Ok(self.keys.lock().expect("lock").get(handle.as_str()).cloned())
        }
        fn handles(&self) -> Result<Vec<KeyHandle>, Error> {
            Ok(self.keys.lock().expect("lock").keys().map(|k| k.parse().expect("handle")).collect())
        }
        fn remove(&self, handle: &KeyHandle) -> Result<(), Error> {
            self.keys.lock().expect("lock").remove(handle.as_str());
            Ok(())
        }
        fn place(&self, handle: &KeyHandle) -> String {
            format!("memory:{handle}")
        }
        fn master_params(&self) -> Result<Option<Vec<u8>>, Error> {
            Ok(self.params.lock().expect("lock").clone())
        }
        fn put_master_params_new(&self, params: &[u8]) -> Result<bool, Error> {
            let mut p = self.params.lock().expect("lock");
            Ok(p.is_none() && p.replace(params.to_vec()).is_none())
        }
        fn master_params_place(&self) -> String {
            "memory:master".into()
        }
        fn allows_master_key_file(&self) -> bool {
            !self.shared
        }
    }

    #[test]
    fn nodes_sharing_the_records_sign_with_one_passphrase_and_never_with_a_key_file() {
        let records = Arc::new(MemoryRecords { shared: true, ..Default::default() });
        let (a, b) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
        let e = HsmSim::with_records(a.path().join("keys"), records.clone(), &MasterKeySource::KeyFile)
            .expect_err("a key file of one node's own");
        assert!(e.to_string().contains("master passphrase"), "{e}");
        let pass = MasterKeySource::Passphrase("one passphrase for every node".into());
        let first = HsmSim::with_records(a.path().join("keys"), records.clone(), &pass).expect("first node");
        let h: KeyHandle = "ca/shared".parse().expect("handle");
        first.generate(&h, KeyType::P256, KeyPurpose::CaSigning).expect("gen");
        // The second node has nothing of its own but the passphrase: it signs with the same key.
        let second =
            HsmSim::with_records(b.path().join("keys"), records.clone(), &pass).expect("second node");
        let sig = second.signer(&h).expect("signer").sign(b"message").expect("sign");
        let spki = first.public_key(&h).expect("public").raw;
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &spki)
            .verify(b"message", &sig)
            .expect("the second node's signature verifies with the first node's key");
        let wrong = MasterKeySource::Passphrase("another passphrase".into());
        let e = HsmSim::with_records(b.path().join("keys"), records, &wrong).expect_err("wrong passphrase");
        assert!(matches!(e, Error::WrongPassphrase(_)), "{e}");
        assert_eq!(
            fs::read_dir(b.path().join("keys")).expect("dir").count(),
            0,
            "nothing on the second node's disk"
        );
    }

    #[test]
    fn keys_live_in_whatever_keeps_the_sealed_records_and_are_listed() {
        let d = tempfile::tempdir().expect("tempdir");
        let records = Arc::new(MemoryRecords::default());
        let hsm = HsmSim::with_records(d.path().join("keys"), records.clone(), &MasterKeySource::KeyFile)
            .expect("open");
        let h: KeyHandle = "ocsp/elsewhere".parse().expect("handle");
        hsm.generate(&h, KeyType::P256, KeyPurpose::CaSigning).expect("gen");
        assert_eq!(hsm.handles().expect("handles"), vec![h.clone()]);
        assert!(hsm.signer(&h).expect("signer").sign(b"m").is_ok());
        // Sealed: the record holds no plaintext PKCS#8 (ring's P-256 PKCS#8 starts 30 81 87 02 01
        // 00), neither raw nor hex-encoded.
        let rec = records.get(&h).expect("get").expect("some");
        assert!(!rec.windows(6).any(|w| w == [0x30, 0x81, 0x87, 0x02, 0x01, 0x00]));
        assert!(!String::from_utf8_lossy(&rec).contains("308187020100"));
        // Only the master key's file is on disk.
        let files: Vec<_> = fs::read_dir(d.path().join("keys")).expect("dir").collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(matches!(hsm.generate(&h, KeyType::P256, KeyPurpose::CaSigning), Err(Error::KeyExists(_))));
        // The file store lists its handles too.
        let (_d2, files_hsm) = store();
        let a: KeyHandle = "ca/a".parse().expect("handle");
        let b: KeyHandle = "tsa/b".parse().expect("handle");
        for k in [&b, &a] {
            files_hsm.generate(k, KeyType::P256, KeyPurpose::CaSigning).expect("gen");
        }
        assert_eq!(files_hsm.handles().expect("handles"), vec![a, b]);
    }
}
