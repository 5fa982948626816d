//! Key custody in a hardware security module through PKCS#11 (tested on SoftHSM2).
//!
//! - **Signing keys** (CA, OCSP, TSA, console TLS) are generated on the token as
//!   `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`, labelled (and
//!   `CKA_ID`'d) by their handle; they sign with `C_Sign`: `CKM_SHA256_RSA_PKCS` for RSA,
//!   `CKM_ECDSA` over a SHA-256/SHA-384 digest made here (the raw `r||s` re-encoded as the DER
//!   `Ecdsa-Sig-Value` X.509 wants), `CKM_EDDSA` for Ed25519 where the token offers it.
//! - **Escrowed encryption keys** are made here, encrypted at once with AES-256-GCM *on the token*
//!   under the wrapping key `pki-wrap` (sensitive, never extractable), and only that ciphertext is
//!   stored (one file per key in the key directory). Recovery decrypts through the token; nothing
//!   escrowed opens without it. Sealed secrets ([`KeyCustody::seal_secret`]) use the same key.
//! - **Sessions**: one session holds the login for the life of a connection; signing takes a
//!   session from a pool (PKCS#11 sessions are not shared between threads) and gives it back, so
//!   signing scales with threads. When the token goes away (an error such as
//!   `CKR_TOKEN_NOT_PRESENT`), the connection is dropped and made again on the next call, which
//!   either works (the token is back) or fails with one line naming the problem;
//!   [`KeyCustody::health`] reports it.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::fsutil::{ensure_private_dir, write_private_new};
use crate::token_der;
use crate::{
    escrow, secret_aad, spki, Error, KeyCustody, KeyHandle, KeyPurpose, KeyType, PublicKeyInfo, Signer,
};

/// The label of the token's AES key that wraps escrowed keys and sealed secrets.
pub const WRAP_KEY_LABEL: &str = "pki-wrap";
/// Sessions kept open for signing, at most; more are opened while more threads sign at once.
const POOL_MAX: usize = 16;
const GCM_IV_LEN: usize = 12;
const GCM_TAG_BITS: u64 = 128;

/// Where the token is and how to log in.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The label of the token to use.
    pub token_label: String,
    /// The user PIN.
    pub pin: String,
    /// The directory for escrowed keys (stored encrypted under the token's wrapping key).
    pub escrow_dir: PathBuf,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("escrow_dir", &self.escrow_dir)
            .finish_non_exhaustive()
    }
}

/// One logged-in connection to the token.
struct Conn {
    slot: Slot,
    /// Holds the login: closing a token's last session logs the application out.
    _login: Mutex<Session>,
    pool: Mutex<Vec<Session>>,
    objects: Mutex<HashMap<String, ObjectHandle>>,
    ctx: Pkcs11,
}

impl Conn {
    fn session(&self) -> Result<Session, CkError> {
        if let Some(s) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(s);
        }
        self.ctx.open_rw_session(self.slot)
    }

    fn give_back(&self, s: Session) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(s);
        }
    }
}

/// The connection and what recovery needs.
#[derive(Default)]
struct ConnState {
    /// The live connection.
    live: Option<Arc<Conn>>,
    /// The lost connection, kept until no thread uses it: its sessions must be closed before the
    /// library is initialised again, or their handles could close the new connection's sessions.
    lost: Option<Arc<Conn>>,
    /// Whether the library must be initialised again first (SoftHSM2, like many modules, sees a
    /// token that came back only after `C_Initialize`).
    reinit: bool,
}

/// The connection to the token and what is needed to make it again.
struct Token {
    cfg: Pkcs11Config,
    conn: Mutex<ConnState>,
    /// The library, initialised once per process (C_Initialize twice is refused).
    ctx: Pkcs11,
    rng: SystemRandom,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// Errors that mean the connection is gone (token removed, sessions invalidated, logged out).
fn is_connection_error(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::GeneralError
                | RvError::CryptokiNotInitialized
                | RvError::SlotIdInvalid,
            _
        )
    )
}

fn ck(op: &'static str) -> impl Fn(CkError) -> Error {
    move |e| Error::Pkcs11 { op, reason: short(&e) }
}

/// A PKCS#11 error in one short line: the function and the return value.
fn short(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{f} returned {rv:?}"),
        other => other.to_string(),
    }
}

impl Token {
    fn open(cfg: Pkcs11Config) -> Result<Self, Error> {
        if !cfg.module.is_file() {
            return Err(Error::TokenUnavailable(format!(
                "the PKCS#11 module {} does not exist",
                cfg.module.display()
            )));
        }
        let ctx = Pkcs11::new(&cfg.module).map_err(|e| {
            Error::TokenUnavailable(format!("cannot load the PKCS#11 module {}: {e}", cfg.module.display()))
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                return Err(Error::TokenUnavailable(format!(
                    "the PKCS#11 module {} does not initialise: {}",
                    cfg.module.display(),
                    short(&e)
                )))
            }
        }
        ensure_private_dir(&cfg.escrow_dir)?;
        let custody = Token { cfg, conn: Mutex::new(ConnState::default()), ctx, rng: SystemRandom::new() };
        custody.conn()?;
        Ok(custody)
    }

    fn connect(&self) -> Result<Conn, Error> {
        let label = &self.cfg.token_label;
        let unavailable = |what: String| Error::TokenUnavailable(what);
        let slots = self.ctx.get_slots_with_token().map_err(|e| {
            unavailable(format!("cannot list the slots of the PKCS#11 module: {}", short(&e)))
        })?;
        let mut found = None;
        for slot in slots {
            if let Ok(info) = self.ctx.get_token_info(slot) {
                if info.label().trim_end() == label {
                    found = Some(slot);
                    break;
                }
            }
        }
        let slot = found.ok_or_else(|| {
            unavailable(format!(
                "no token labelled {label:?} is present in the PKCS#11 module {}",
                self.cfg.module.display()
            ))
        })?;
        let login = self.ctx.open_rw_session(slot).map_err(|e| {
            unavailable(format!("cannot open a session on the token {label:?}: {}", short(&e)))
        })?;
        match login.login(UserType::User, Some(&AuthPin::from(self.cfg.pin.as_str()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(unavailable(format!("the PIN of the token {label:?} is wrong")))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(unavailable(format!("the user PIN of the token {label:?} is locked")))
            }
            Err(e) => {
                return Err(unavailable(format!("cannot log in to the token {label:?}: {}", short(&e))))
            }
        }
        tracing::info!(token = %label, "logged in to the PKCS#11 token");
        Ok(Conn {
            slot,
            _login: Mutex::new(login),
            pool: Mutex::new(Vec::new()),
            objects: Mutex::new(HashMap::new()),
            ctx: self.ctx.clone(),
        })
    }

    fn conn(&self) -> Result<Arc<Conn>, Error> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = guard.live.as_ref() {
            return Ok(c.clone());
        }
        if guard.reinit {
            if let Some(lost) = guard.lost.take() {
                if Arc::strong_count(&lost) > 1 {
                    guard.lost = Some(lost);
                    return Err(Error::TokenUnavailable(format!(
                        "the token {:?} was lost and is being reconnected",
                        self.cfg.token_label
                    )));
                }
                drop(lost); // closes its sessions while their handles still mean them
            }
            let _ = self.ctx.clone().finalize();
            match self.ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => guard.reinit = false,
                Err(e) => {
                    return Err(Error::TokenUnavailable(format!(
                        "the token {:?} is not reachable: the PKCS#11 module {} does not initialise ({})",
                        self.cfg.token_label,
                        self.cfg.module.display(),
                        short(&e)
                    )))
                }
            }
        }
        let c = match self.connect() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                guard.reinit = true; // look again from a fresh start next time
                return Err(e);
            }
        };
        guard.live = Some(c.clone());
        Ok(c)
    }

    /// Forgets `lost` (unless another thread has connected again meanwhile).
    fn drop_conn(&self, lost: &Arc<Conn>, reason: &CkError) {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.live.as_ref().is_some_and(|c| Arc::ptr_eq(c, lost)) {
            guard.lost = guard.live.take();
            guard.reinit = true;
            tracing::error!(token = %self.cfg.token_label, error = %short(reason), "lost the PKCS#11 token");
        }
    }

    /// Runs `f` on a pooled session; on an error that means the token went away, reconnects
    /// and tries once more.
    fn with_session<T>(
        &self,
        op: &'static str,
        f: impl Fn(&Conn, &Session) -> Result<T, CkError>,
    ) -> Result<T, Error> {
        let mut last = None;
        for _ in 0..2 {
            let conn = self.conn()?;
            let session = match conn.session() {
                Ok(s) => s,
                Err(e) if is_connection_error(&e) => {
                    self.drop_conn(&conn, &e);
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(ck(op)(e)),
            };
            match f(&conn, &session) {
                Ok(v) => {
                    conn.give_back(session);
                    return Ok(v);
                }
                Err(e) if is_connection_error(&e) => {
                    drop(session);
                    self.drop_conn(&conn, &e);
                    last = Some(e);
                }
                Err(e) => {
                    conn.give_back(session);
                    return Err(ck(op)(e));
                }
            }
        }
        // Two connections failed: say so in one line, naming the token.
        let reason = last.map(|e| short(&e)).unwrap_or_default();
        Err(Error::TokenUnavailable(format!(
            "the token {:?} does not answer ({op}): {reason}",
            self.cfg.token_label
        )))
    }

    /// The handle of a token object of `class` labelled `label` (cached per connection).
    fn find(
        conn: &Conn,
        s: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Option<ObjectHandle>, CkError> {
        let key = format!("{class}|{label}");
        if let Some(h) = conn.objects.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Some(*h));
        }
        let found = s.find_objects(&[
            Attribute::Token(true),
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        let h = found.first().copied();
        match h {
            Some(h) => {
                conn.objects.lock().unwrap_or_else(|p| p.into_inner()).insert(key, h);
            }
            // A module may answer searches from memory and find nothing once the token is gone:
            // "not there" counts only while the token answers.
            None => {
                conn.ctx.get_token_info(conn.slot)?;
            }
        }
        Ok(h)
    }

    /// The wrapping key, made on first use: AES-256, sensitive, never extractable.
    fn wrap_key(conn: &Conn, s: &Session) -> Result<ObjectHandle, CkError> {
        if let Some(h) = Self::find(conn, s, ObjectClass::SECRET_KEY, WRAP_KEY_LABEL)? {
            return Ok(h);
        }
        let h = s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::ValueLen(32.into()),
                Attribute::Label(WRAP_KEY_LABEL.as_bytes().to_vec()),
            ],
        )?;
        tracing::info!("generated the escrow wrapping key on the token");
        Ok(h)
    }

    /// AES-256-GCM on the token under the wrapping key: IV || ciphertext || tag.
    fn token_seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, Error> {
        let mut iv = [0u8; GCM_IV_LEN];
        self.rng.fill(&mut iv).map_err(|_| Error::KeyGeneration("no randomness".into()))?;
        let ct = self.with_session("encrypt", |conn, s| {
            let key = Self::wrap_key(conn, s)?;
            let mut iv = iv;
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())?;
            s.encrypt(&Mechanism::AesGcm(params), key, plain)
        })?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`Token::token_seal`] made; `None` when it does not authenticate.
    fn token_open(&self, aad: &[u8], sealed: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let Some((iv, ct)) = sealed.split_at_checked(GCM_IV_LEN) else { return Ok(None) };
        if ct.len() < 16 {
            return Ok(None);
        }
        self.with_session("decrypt", |conn, s| {
            let key = Self::wrap_key(conn, s)?;
            let mut iv_buf = [0u8; GCM_IV_LEN];
            iv_buf.copy_from_slice(iv);
            let params = GcmParams::new(&mut iv_buf, aad, GCM_TAG_BITS.into())?;
            match s.decrypt(&Mechanism::AesGcm(params), key, ct) {
                Ok(p) => Ok(Some(p)),
                Err(CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _)) => {
                    Ok(None)
                }
                // SoftHSM2 answers a failed GCM tag check with CKR_GENERAL_ERROR: it is a refusal
                // when the token still answers a search, a lost token otherwise.
                Err(e @ CkError::Pkcs11(RvError::GeneralError, _)) => s
                    .find_objects(&[Attribute::Label(WRAP_KEY_LABEL.as_bytes().to_vec())])
                    .map(|_| None)
                    .map_err(|_| e),
                Err(e) => Err(e),
            }
        })
    }

    fn escrow_path(&self, handle: &KeyHandle) -> PathBuf {
        self.cfg.escrow_dir.join(format!("{}.p11wrap", hex::encode(handle.as_str())))
    }

    fn read_escrow(&self, handle: &KeyHandle) -> Result<Option<EscrowFile>, Error> {
        let path = self.escrow_path(handle);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let ef: EscrowFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::CorruptKeyFile { path: path.display().to_string(), reason: e.to_string() })?;
        if &ef.handle != handle {
            return Err(Error::CorruptKeyFile {
                path: path.display().to_string(),
                reason: "file names another handle".into(),
            });
        }
        Ok(Some(ef))
    }

    /// Whether the token offers a mechanism.
    fn offers(&self, m: MechanismType) -> Result<bool, Error> {
        // C_GetMechanismInfo, not C_GetMechanismList: the list names vendor mechanisms that
        // cryptoki logs as errors.
        let conn = self.conn()?;
        Ok(self.ctx.get_mechanism_info(conn.slot, m).is_ok())
    }

    /// Stores an escrowed key: PKCS#8 encrypted on the token, the ciphertext in a file.
    fn store_escrow(
        &self,
        handle: &KeyHandle,
        key_type: KeyType,
        pkcs8: &[u8],
        spki_der: &[u8],
    ) -> Result<(), Error> {
        let mut ef = EscrowFile {
            version: 1,
            handle: handle.clone(),
            key_type,
            purpose: KeyPurpose::Escrow,
            spki: hex::encode(spki_der),
            sealed: String::new(),
        };
        ef.sealed = hex::encode(self.token_seal(&ef.aad(), pkcs8)?);
        let bytes = serde_json::to_vec(&ef).map_err(|e| Error::KeyGeneration(e.to_string()))?;
        match write_private_new(&self.escrow_path(handle), &bytes) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::KeyExists(handle.clone()))
            }
            other => other,
        }
    }

    fn generate_on_token(&self, handle: &KeyHandle, key_type: KeyType) -> Result<(), Error> {
        let (mech, ec_params) = match key_type {
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => (Mechanism::RsaPkcsKeyPairGen, None),
            KeyType::P256 | KeyType::P384 => (Mechanism::EccKeyPairGen, token_der::ec_params(key_type)),
            KeyType::Ed25519 => {
                if !self.offers(MechanismType::EDDSA)?
                    || !self.offers(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN)?
                {
                    return Err(Error::UnsupportedByToken {
                        token: self.cfg.token_label.clone(),
                        what: "Ed25519 (CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA)".into(),
                    });
                }
                (Mechanism::EccEdwardsKeyPairGen, token_der::ec_params(key_type))
            }
        };
        let label = handle.as_str().as_bytes().to_vec();
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Label(label.clone()),
            Attribute::Id(label.clone()),
        ];
        match (key_type.rsa_bits(), ec_params) {
            (Some(bits), _) => {
                public.push(Attribute::ModulusBits((bits as u64).into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            }
            (None, Some(p)) => public.push(Attribute::EcParams(p)),
            (None, None) => {}
        }
        let mut private = vec![Attribute::Token(true), Attribute::Label(label.clone()), Attribute::Id(label)];
        private.extend(signing_key_protection());
        self.with_session("generate key pair", |_, s| {
            s.generate_key_pair(&mech, &public, &private).map(|_| ())
        })
    }

    /// Reads the public key object of `handle` from the token.
    fn token_public(&self, handle: &KeyHandle) -> Result<Option<PublicKeyInfo>, Error> {
        let attrs = self.with_session("read public key", |conn, s| {
            let Some(obj) = Self::find(conn, s, ObjectClass::PUBLIC_KEY, handle.as_str())? else {
                return Ok(None);
            };
            let kt = s.get_attributes(obj, &[AttributeType::KeyType])?;
            let wanted: &[AttributeType] = match kt.first() {
                Some(Attribute::KeyType(t)) if *t == CkKeyType::RSA => {
                    &[AttributeType::Modulus, AttributeType::PublicExponent]
                }
                _ => &[AttributeType::EcParams, AttributeType::EcPoint],
            };
            s.get_attributes(obj, wanted).map(Some)
        })?;
        let Some(attrs) = attrs else { return Ok(None) };
        let corrupt = |reason: &str| Error::Pkcs11 { op: "read public key", reason: reason.into() };
        let (key_type, raw) = match attrs.as_slice() {
            [Attribute::Modulus(n), Attribute::PublicExponent(e)] => {
                let kt = match n.iter().skip_while(|b| **b == 0).count() * 8 {
                    2048 => KeyType::Rsa2048,
                    3072 => KeyType::Rsa3072,
                    4096 => KeyType::Rsa4096,
                    _ => return Err(corrupt("an RSA key of a size this CA does not use")),
                };
                (kt, token_der::rsa_public_key(n, e).ok_or_else(|| corrupt("an unreadable RSA public key"))?)
            }
            [Attribute::EcParams(p), Attribute::EcPoint(q)] => {
                let kt = token_der::curve_of(p).ok_or_else(|| corrupt("a curve this CA does not use"))?;
                (kt, token_der::raw_point(q))
            }
            _ => return Err(corrupt("missing attributes")),
        };
        let spki = spki::encode(key_type, &raw).map_err(|reason| corrupt(&reason))?;
        Ok(Some(PublicKeyInfo { handle: handle.clone(), key_type, spki, raw }))
    }

    fn sign_with(&self, handle: &KeyHandle, key_type: KeyType, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let digest;
        let (mech, data): (Mechanism, &[u8]) = match key_type {
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => (Mechanism::Sha256RsaPkcs, msg),
            KeyType::P256 => {
                digest = ring::digest::digest(&ring::digest::SHA256, msg);
                (Mechanism::Ecdsa, digest.as_ref())
            }
            KeyType::P384 => {
                digest = ring::digest::digest(&ring::digest::SHA384, msg);
                (Mechanism::Ecdsa, digest.as_ref())
            }
            KeyType::Ed25519 => (Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), msg),
        };
        let sig = self
            .with_session("sign", |conn, s| {
                match Self::find(conn, s, ObjectClass::PRIVATE_KEY, handle.as_str())? {
                    Some(obj) => s.sign(&mech, obj, data).map(Some),
                    None => Ok(None),
                }
            })?
            .ok_or_else(|| Error::NoSuchKey(handle.clone()))?;
        match key_type {
            KeyType::P256 | KeyType::P384 => {
                token_der::ecdsa_signature(&sig).ok_or_else(|| Error::Signing(handle.clone()))
            }
            _ => Ok(sig),
        }
    }

    /// Moves a private key that was held elsewhere onto the token: unwrapped there (see
    /// [`unwrap_onto_token`]) as sensitive and non-extractable under `handle`, with its public key
    /// object; then a signature made by the token is checked with `raw_public`.
    fn import_signing_key(
        &self,
        handle: &KeyHandle,
        key_type: KeyType,
        pkcs8: &[u8],
        raw_public: &[u8],
    ) -> Result<(), Error> {
        let bad = |r: &str| Error::KeyGeneration(format!("cannot import {handle}: {r}"));
        let label = handle.as_str().as_bytes().to_vec();
        let common = |class: ObjectClass, kt: CkKeyType| {
            vec![
                Attribute::Class(class),
                Attribute::KeyType(kt),
                Attribute::Token(true),
                Attribute::Label(label.clone()),
                Attribute::Id(label.clone()),
            ]
        };
        let (kt, mut public) = match key_type {
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                let (n, e) =
                    token_der::rsa_public_parts(raw_public).ok_or_else(|| bad("unreadable public key"))?;
                let mut public = common(ObjectClass::PUBLIC_KEY, CkKeyType::RSA);
                public.extend([Attribute::Modulus(n), Attribute::PublicExponent(e)]);
                (CkKeyType::RSA, public)
            }
            KeyType::P256 | KeyType::P384 | KeyType::Ed25519 => {
                let kt = match key_type {
                    KeyType::Ed25519 => CkKeyType::EC_EDWARDS,
                    _ => CkKeyType::EC,
                };
                let params = token_der::ec_params(key_type).ok_or_else(|| bad("no curve"))?;
                let point = token_der::ec_point(raw_public).ok_or_else(|| bad("unreadable public key"))?;
                let mut public = common(ObjectClass::PUBLIC_KEY, kt);
                public.extend([Attribute::EcParams(params), Attribute::EcPoint(point)]);
                (kt, public)
            }
        };
        let mut private = common(ObjectClass::PRIVATE_KEY, kt);
        private.extend(signing_key_protection());
        public.extend([Attribute::Private(false), Attribute::Verify(true)]);
        // SoftHSM2 2.6 cannot unwrap an Ed25519 PKCS#8 (CKR_FUNCTION_FAILED): such a key is
        // created from its value instead, still sensitive and not extractable.
        let ed25519_value = match key_type {
            KeyType::Ed25519 => {
                Some(token_der::private_scalar(key_type, pkcs8).ok_or_else(|| bad("unreadable PKCS#8"))?)
            }
            _ => None,
        };
        self.with_session("import key", |_, s| {
            let pubh = s.create_object(&public)?;
            let mut r = unwrap_onto_token(s, pkcs8, &private);
            if let (Err(CkError::Pkcs11(RvError::FunctionFailed, _)), Some(value)) = (&r, &ed25519_value) {
                let mut t = private.clone();
                t.extend([
                    Attribute::EcParams(token_der::ec_params(KeyType::Ed25519).unwrap_or_default()),
                    Attribute::Value(value.clone()),
                ]);
                r = s.create_object(&t).map(|_| ());
            }
            if r.is_err() {
                let _ = s.destroy_object(pubh);
            }
            r
        })?;
        // Verify: the token signs, and the signature checks with the public key it came with.
        let probe = b"pki hsm import: verification of the moved key";
        let sig = self.sign_with(handle, key_type, probe)?;
        let alg: &dyn ring::signature::VerificationAlgorithm = match key_type {
            KeyType::P256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
            KeyType::P384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
            KeyType::Ed25519 => &ring::signature::ED25519,
            _ => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        };
        ring::signature::UnparsedPublicKey::new(alg, raw_public)
            .verify(probe, &sig)
            .map_err(|_| Error::Signing(handle.clone()))?;
        Ok(())
    }
}

/// Puts a PKCS#8 private key onto the token as an object of `template` without handing the token
/// its plaintext: the token makes a P-256 transport key pair (session objects), an ECDH with a
/// key made here gives both sides the same AES-256 key (`CKM_ECDH1_DERIVE`, no KDF: the shared
/// x-coordinate), the PKCS#8 is wrapped here with it (AES-KWP, RFC 5649), and the token unwraps it
/// (`CKM_AES_KEY_WRAP_PAD`) into the new object. The transport objects are destroyed.
fn unwrap_onto_token(s: &Session, pkcs8: &[u8], template: &[Attribute]) -> Result<(), CkError> {
    use aes_kw::KeyInit as _;
    use ring::agreement;
    let (tpub, tpriv) = s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::EcParams(token_der::ec_params(KeyType::P256).unwrap_or_default()),
        ],
        &[
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Derive(true),
        ],
    )?;
    let result = (|| {
        let point = match s.get_attributes(tpub, &[AttributeType::EcPoint])?.first() {
            Some(Attribute::EcPoint(q)) => token_der::raw_point(q),
            _ => return Err(CkError::InvalidValue),
        };
        let rng = SystemRandom::new();
        let mine = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
            .map_err(|_| CkError::InvalidValue)?;
        let my_point = mine.compute_public_key().map_err(|_| CkError::InvalidValue)?.as_ref().to_vec();
        let shared = agreement::agree_ephemeral(
            mine,
            &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &point),
            |x| x.to_vec(),
        )
        .map_err(|_| CkError::InvalidValue)?;
        let kek = s.derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &my_point)),
            tpriv,
            &[
                Attribute::Token(false),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(CkKeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Unwrap(true),
            ],
        )?;
        let wrapped =
            aes_kw::KwpAes256::new_from_slice(&shared).map_err(|_| CkError::InvalidValue).and_then(|kwp| {
                let mut buf = vec![0u8; pkcs8.len().div_ceil(8) * 8 + 8];
                kwp.wrap_key(pkcs8, &mut buf).map(<[u8]>::to_vec).map_err(|_| CkError::InvalidValue)
            });
        let unwrapped =
            wrapped.and_then(|blob| s.unwrap_key(&Mechanism::AesKeyWrapPad, kek, &blob, template));
        let _ = s.destroy_object(kek);
        unwrapped.map(|_| ())
    })();
    let _ = s.destroy_object(tpriv);
    let _ = s.destroy_object(tpub);
    result
}

/// On-disk form of an escrowed key: its PKCS#8, encrypted on the token.
#[derive(Serialize, Deserialize)]
struct EscrowFile {
    version: u32,
    handle: KeyHandle,
    key_type: KeyType,
    purpose: KeyPurpose,
    spki: String,
    sealed: String,
}

impl EscrowFile {
    fn aad(&self) -> Vec<u8> {
        format!(
            "hsm-pkcs11-escrow/v1|{}|{}|{}|{}",
            self.handle,
            self.key_type.name(),
            self.purpose.name(),
            self.spki
        )
        .into_bytes()
    }
}

/// A key on the token.
struct TokenKey {
    custody: Arc<Token>,
    info: PublicKeyInfo,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("handle", &self.info.handle)
            .field("key_type", &self.info.key_type)
            .finish_non_exhaustive()
    }
}

impl Signer for TokenKey {
    fn handle(&self) -> &KeyHandle {
        &self.info.handle
    }
    fn key_type(&self) -> KeyType {
        self.info.key_type
    }
    fn public_key_spki(&self) -> &[u8] {
        &self.info.spki
    }
    fn public_key_raw(&self) -> &[u8] {
        &self.info.raw
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        self.custody.sign_with(&self.info.handle, self.info.key_type, msg)
    }
}

/// Key custody on a PKCS#11 token: signing keys on the token, escrowed keys wrapped by it.
#[derive(Debug, Clone)]
pub struct Pkcs11Custody(Arc<Token>);

impl Pkcs11Custody {
    /// Loads the module, finds the token and logs in. Every failure is one line naming the
    /// module, the token or the PIN.
    pub fn open(cfg: Pkcs11Config) -> Result<Self, Error> {
        Ok(Pkcs11Custody(Arc::new(Token::open(cfg)?)))
    }

    /// The configuration this custody was opened with.
    pub fn config(&self) -> &Pkcs11Config {
        &self.0.cfg
    }

    /// Moves a private key held elsewhere onto the token (see [`Token::import_signing_key`]).
    pub(crate) fn import_signing_key(
        &self,
        handle: &KeyHandle,
        key_type: KeyType,
        pkcs8: &[u8],
        raw_public: &[u8],
    ) -> Result<(), Error> {
        if self.contains(handle)? {
            return Err(Error::KeyExists(handle.clone()));
        }
        self.0.import_signing_key(handle, key_type, pkcs8, raw_public)
    }

    /// Stores an escrowed key held elsewhere under the token's wrapping key.
    pub(crate) fn import_escrow_key(
        &self,
        handle: &KeyHandle,
        key_type: KeyType,
        pkcs8: &[u8],
        spki_der: &[u8],
    ) -> Result<(), Error> {
        if self.contains(handle)? {
            return Err(Error::KeyExists(handle.clone()));
        }
        self.0.store_escrow(handle, key_type, pkcs8, spki_der)?;
        // Verify: the token opens what it wrapped, to the same bytes.
        let ef = self.0.read_escrow(handle)?.ok_or_else(|| Error::NoSuchKey(handle.clone()))?;
        let sealed = hex::decode(&ef.sealed).map_err(|_| Error::Signing(handle.clone()))?;
        match self.0.token_open(&ef.aad(), &sealed)? {
            Some(back) if back == pkcs8 => Ok(()),
            _ => Err(Error::KeyGeneration(format!("the token does not give back the escrowed key {handle}"))),
        }
    }
}

impl KeyCustody for Pkcs11Custody {
    fn generate(
        &self,
        handle: &KeyHandle,
        key_type: KeyType,
        purpose: KeyPurpose,
    ) -> Result<PublicKeyInfo, Error> {
        let c = &self.0;
        if self.contains(handle)? {
            return Err(Error::KeyExists(handle.clone()));
        }
        if purpose == KeyPurpose::Escrow {
            let pkcs8 = crate::generate_pkcs8(key_type)?;
            let (_, raw) = crate::load_key(key_type, &pkcs8).map_err(Error::KeyGeneration)?;
            let spki_der = spki::encode(key_type, &raw).map_err(Error::KeyGeneration)?;
            c.store_escrow(handle, key_type, &pkcs8, &spki_der)?;
            tracing::info!(handle = %handle, key_type = %key_type, "generated escrow key, wrapped on the token");
            return Ok(PublicKeyInfo { handle: handle.clone(), key_type, spki: spki_der, raw });
        }
        c.generate_on_token(handle, key_type)?;
        tracing::info!(handle = %handle, key_type = %key_type, purpose = %purpose, "generated key on the token");
        c.token_public(handle)?.ok_or_else(|| Error::NoSuchKey(handle.clone()))
    }

    fn contains(&self, handle: &KeyHandle) -> Result<bool, Error> {
        let c = &self.0;
        if c.escrow_path(handle).exists() {
            return Ok(true);
        }
        c.with_session("find key", |conn, s| {
            Ok(Token::find(conn, s, ObjectClass::PRIVATE_KEY, handle.as_str())?.is_some())
        })
    }

    fn public_key(&self, handle: &KeyHandle) -> Result<PublicKeyInfo, Error> {
        let c = &self.0;
        if let Some(ef) = c.read_escrow(handle)? {
            let corrupt = || Error::CorruptKeyFile {
                path: c.escrow_path(handle).display().to_string(),
                reason: "bad public key".into(),
            };
            let spki = hex::decode(&ef.spki).map_err(|_| corrupt())?;
            let raw = crate::raw_from_spki(&spki).ok_or_else(corrupt)?;
            return Ok(PublicKeyInfo { handle: handle.clone(), key_type: ef.key_type, spki, raw });
        }
        c.token_public(handle)?.ok_or_else(|| Error::NoSuchKey(handle.clone()))
    }

    fn signer(&self, handle: &KeyHandle) -> Result<Arc<dyn Signer>, Error> {
        if self.0.escrow_path(handle).exists() {
            return Err(Error::NotPermitted {
                handle: handle.clone(),
                purpose: KeyPurpose::Escrow,
                operation: "sign",
            });
        }
        let info = self.0.token_public(handle)?.ok_or_else(|| Error::NoSuchKey(handle.clone()))?;
        Ok(Arc::new(TokenKey { custody: self.0.clone(), info }))
    }

    fn export_pkcs12(
        &self,
        handle: &KeyHandle,
        chain_der: &[Vec<u8>],
        password: &str,
        friendly_name: &str,
    ) -> Result<Vec<u8>, Error> {
        let c = &self.0;
        let Some(ef) = c.read_escrow(handle)? else {
            if self.contains(handle)? {
                return Err(Error::NotPermitted {
                    handle: handle.clone(),
                    purpose: KeyPurpose::CaSigning,
                    operation: "export",
                });
            }
            return Err(Error::NoSuchKey(handle.clone()));
        };
        escrow::check_password(password)?;
        let path = c.escrow_path(handle).display().to_string();
        let sealed = hex::decode(&ef.sealed)
            .map_err(|_| Error::CorruptKeyFile { path: path.clone(), reason: "bad ciphertext".into() })?;
        let pkcs8 = c.token_open(&ef.aad(), &sealed)?.ok_or_else(|| Error::CorruptKeyFile {
            path,
            reason: "authentication failed (another token's wrapping key, or an altered file)".into(),
        })?;
        escrow::pkcs12(&pkcs8, chain_der, password, friendly_name)
    }

    fn seal_secret(&self, context: &str, secret: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.token_seal(&secret_aad(context), secret)
    }

    fn open_secret(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        self.0
            .token_open(&secret_aad(context), sealed)?
            .ok_or_else(|| Error::SealedSecret(context.to_string()))
    }

    fn health(&self) -> Result<(), Error> {
        // C_GetTokenInfo asks the token itself; searches and attribute reads may be answered
        // from the module's memory (SoftHSM2's are) and go on succeeding after it is gone.
        self.0.with_session("health check", |conn, _| conn.ctx.get_token_info(conn.slot).map(|_| ()))
    }
}

/// What every signing key on the token is, whether generated there or imported: private,
/// sensitive and never extractable, for signing only (no decryption, unwrapping or derivation).
/// One list, so that the two paths cannot drift apart.
fn signing_key_protection() -> [Attribute; 7] {
    [
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]
}
