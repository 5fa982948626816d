//! The CA: initialisation, issuance, revocation, CRLs, escrow.
//!
//! Issuance cycle (after Boulder's): check the request → draw a fresh serial → build the TBS
//! certificate from the profile → lint it against the profile → sign it in hsm-sim → store the
//! certificate and its audit entry in one durable transaction, refusing a serial used before →
//! return it. A certificate is returned only once it is on disk; a serial is never used twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use cerdb::{
    AuditRecord, CaId, CertDb, CertKind, CertReader, CertRecord, CrlRecord, EmailAddress, Fingerprint,
    KeyDigest, Revocation, RevocationReason, Serial, Usage,
};
use chrono::{DateTime, Duration, Utc};
use hsm_sim::{KeyCustody, KeyHandle, KeyPurpose, KeyType, Signer};
use rcgen::{
    CertificateParams, CertificateRevocationListParams, Issuer, KeyIdMethod, KeyUsagePurpose, PublicKeyData,
    RevokedCertParams, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use x509_parser::prelude::*;

use crate::audit::{self, AuditDraft, AuditLog};
use crate::clock::Clock;
use crate::config::{CaConfig, KeySettings, SubjectName};
use crate::csr::{check_csr, check_key_for_usage, CheckedCsr, SubjectKeyKind};
use crate::keys::{alg_for, HsmKey, LintingKey, SubjectKey};
use crate::profiles::{
    dn_of, parse_tbs, IssuingCaProfile, OcspSignerProfile, Profile, ProfileContext, RootCaProfile,
    SubscriberProfile, TlsServerProfile, TsaProfile,
};
use crate::Error;

const H_ROOT: &str = "ca/root";
const H_ISSUING: &str = "ca/issuing";
const H_OCSP: &str = "ocsp/signer";
const H_TSA: &str = "tsa/signer";
const H_TLS: &str = "tls/server";
const META_INIT: &str = "ca.initialised";
/// Set once the keys of certificates revoked for keyCompromise are recorded as compromised
/// ([`record_earlier_compromised_keys`]).
const META_COMPROMISED_KEYS: &str = "ca.compromised_keys";

/// The CA certificates one can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaCert {
    /// The root.
    Root,
    /// The S/MIME issuing CA.
    Issuing,
    /// The delegated OCSP signer.
    Ocsp,
    /// The timestamp authority.
    Tsa,
}

impl std::str::FromStr for CaCert {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "root" => Ok(CaCert::Root),
            "issuing" => Ok(CaCert::Issuing),
            "ocsp" => Ok(CaCert::Ocsp),
            "tsa" => Ok(CaCert::Tsa),
            _ => Err(format!("unknown CA certificate {s:?}: expected root, issuing, ocsp or tsa")),
        }
    }
}

/// A request for a certificate from a CSR.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The mailbox.
    pub email: EmailAddress,
    /// Signing or encryption.
    pub usage: Usage,
    /// The PKCS#10 request, PEM or DER.
    pub csr: Vec<u8>,
}

/// A request for a certificate whose key pair the caller generated itself: no CSR, so no proof of
/// possession ([`Ca::issue_many_own_keys`]).
#[derive(Debug, Clone)]
pub struct OwnKeyRequest {
    /// The mailbox.
    pub email: EmailAddress,
    /// Signing or encryption.
    pub usage: Usage,
    /// The subject public key, SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
}

/// What [`Ca::revoke`] revoked.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// The certificate asked for, as stored now (metadata only).
    pub record: CertRecord,
    /// Its reason before, when it was revoked already and the reason is now keyCompromise.
    pub reason_before: Option<RevocationReason>,
    /// For keyCompromise: the other certificates of the address with the same key, revoked for
    /// keyCompromise too (metadata only).
    pub same_key: Vec<CertRecord>,
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// What was stored (DER included).
    pub record: CertRecord,
}

impl Issued {
    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        to_pem("CERTIFICATE", &self.record.der)
    }
}

/// What `init` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    /// The hierarchy was created.
    Created,
    /// It existed already; nothing changed.
    AlreadyInitialised,
}

/// PEM with LF line endings.
pub fn to_pem(tag: &str, der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new(tag, der.to_vec()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

struct LoadedCa {
    id: CaId,
    der: Vec<u8>,
    params: CertificateParams,
    key: HsmKey,
    not_after: DateTime<Utc>,
}

type RevocationHook = Box<dyn Fn(&Serial) + Send + Sync>;

/// A certificate chain (DER, leaf first, root excluded) and the key of its leaf in the key store.
pub type ChainAndKey = (Vec<Vec<u8>>, Arc<dyn Signer>);

/// The certificate authority of one data directory.
pub struct Ca {
    db: CertDb,
    hsm: Arc<dyn KeyCustody>,
    cfg: CaConfig,
    clock: Arc<dyn Clock>,
    audit: AuditLog,
    root: LoadedCa,
    issuing: LoadedCa,
    ocsp_der: Vec<u8>,
    tsa_der: Vec<u8>,
    hooks: RwLock<Vec<RevocationHook>>,
    /// Keys reported compromised, with the certificate whose revocation reported each: the
    /// `compromised_keys` tree, read when the CA is opened and kept up to date by [`Ca::revoke`].
    /// Checked here, not in the database, so that the signing threads never wait for another
    /// batch's transaction (only one process opens the database at a time).
    compromised: RwLock<HashMap<KeyDigest, Serial>>,
    crl_lock: Mutex<()>,
    tls_lock: Mutex<()>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn handle(s: &str) -> KeyHandle {
    s.parse().expect("invariant: constant handles are valid")
}

/// A fresh serial: 128 bits from the CSPRNG, positive. That no certificate has it yet is checked
/// when the certificate is stored ([`CertDb::store_issued`], in the same transaction that writes
/// it), not here: reading the database while another batch's transaction holds sled's write lock
/// would stall the signing threads.
fn new_serial(rng: &SystemRandom) -> Result<Serial, Error> {
    for _ in 0..8 {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).map_err(|_| Error::Certificate("no randomness for the serial".into()))?;
        if let Ok(serial) = Serial::from_bytes(&bytes) {
            return Ok(serial);
        }
    }
    Err(Error::Certificate("the random source gave only zero serials".into()))
}

enum Signing<'a> {
    SelfSigned(&'a HsmKey),
    By(&'a LoadedCa),
}

/// A certificate just signed, with the subject and validity its lint read from the TBS.
struct Signed {
    der: Vec<u8>,
    subject: String,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
}

/// Builds, lints and signs one certificate.
fn make_cert(
    profile: &dyn Profile,
    ctx: &ProfileContext,
    subject: &impl PublicKeyData,
    signing: Signing<'_>,
) -> Result<Signed, Error> {
    let params = profile.params(ctx)?;
    // What the stored record needs from the TBS, kept from the lint's parse rather than parsing
    // the signed certificate again.
    let seen = Mutex::new(None);
    let lint = |tbs: &[u8]| -> Result<(), String> {
        let t = parse_tbs(tbs)?;
        profile.lint(&t, ctx)?;
        let time = |t: ASN1Time| DateTime::from_timestamp(t.timestamp(), 0).ok_or("validity out of range");
        let summary =
            (t.subject().to_string(), time(t.validity().not_before)?, time(t.validity().not_after)?);
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
        Ok(())
    };
    let (result, failure, key_store) = match signing {
        Signing::SelfSigned(key) => {
            let lk = LintingKey::new(key, Some(&lint));
            let r = params.self_signed(&lk);
            (r, lk.take_failure(), lk.take_key_store_failure())
        }
        Signing::By(ca) => {
            let issuer = Issuer::from_params(&ca.params, LintingKey::new(&ca.key, Some(&lint)));
            let r = params.signed_by(subject, &issuer);
            (r, issuer.key().take_failure(), issuer.key().take_key_store_failure())
        }
    };
    if let (Err(_), Some(e)) = (&result, key_store) {
        return Err(Error::Hsm(e));
    }
    match (result, failure) {
        (Ok(cert), _) => {
            let (subject, not_before, not_after) = seen
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .ok_or_else(|| Error::Certificate("signed without the lint".into()))?;
            Ok(Signed { der: cert.der().to_vec(), subject, not_before, not_after })
        }
        (Err(_), Some(lint_msg)) => Err(Error::Lint(lint_msg)),
        (Err(e), None) => Err(Error::Certificate(e.to_string())),
    }
}

#[allow(clippy::too_many_arguments)] // one call site per certificate kind; a struct would only rename them
fn record_of(
    signed: Signed,
    serial: Serial,
    kind: CertKind,
    email: Option<EmailAddress>,
    issuer: CaId,
    key_type: String,
    escrow_key: Option<String>,
    now: DateTime<Utc>,
) -> Result<CertRecord, Error> {
    Ok(CertRecord {
        fingerprint: Fingerprint::of(&signed.der),
        serial,
        kind,
        email,
        subject: signed.subject,
        issuer,
        not_before: signed.not_before,
        not_after: signed.not_after,
        issued_at: now,
        key_type,
        escrow_key,
        revocation: None,
        der: signed.der,
    })
}

/// Maps `f` over `items` on every core (in order); small inputs stay on this thread. The threads
/// it starts run at a lower scheduling priority ([`yield_to_storing`]).
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if threads < 2 || items.len() < 16 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                scope.spawn(move || {
                    yield_to_storing();
                    c.iter().map(f).collect::<Vec<R>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// How much lower than its caller a signing thread of [`par_map`] runs (nice levels).
const SIGNING_NICE_STEP: i32 = 10;

/// Lowers this thread's scheduling priority by [`SIGNING_NICE_STEP`] nice levels (at most to 19).
///
/// Batches are stored one at a time — sled's transaction holds a lock every other database access
/// waits for — while the next batches are signed on every core. With equal priorities the storing
/// thread shared the cores evenly with the four to six signing threads of the batches in flight,
/// and the store of a batch, not the CPU, set the pace; with signing threads that yield to it the
/// million-certificate load went from 10,433 to 11,804 certificates/s. In `pki serve` the HTTP
/// workers keep their priority too, so lookups are not held back by a batch being signed. Best
/// effort: lowering one's own priority needs no permission, and if it fails nothing changes.
fn yield_to_storing() {
    #[cfg(target_os = "linux")]
    {
        let me = Some(rustix::thread::gettid());
        if let Ok(now) = rustix::process::getpriority_process(me) {
            let _ = rustix::process::setpriority_process(me, (now + SIGNING_NICE_STEP).min(19));
        }
    }
}

/// The [`KeyDigest`] of a certificate's subject public key.
fn key_digest_of(der: &[u8]) -> Result<KeyDigest, Error> {
    let (_, x) = X509Certificate::from_der(der).map_err(|e| Error::Certificate(e.to_string()))?;
    Ok(KeyDigest::of(&x.public_key().subject_public_key.data))
}

/// Records the keys of certificates revoked for keyCompromise before [`Ca::revoke`] recorded them
/// itself (databases written before), once per database: afterwards the meta key
/// [`META_COMPROMISED_KEYS`] says it was done.
fn record_earlier_compromised_keys(db: &CertDb) -> Result<(), Error> {
    if db.meta_get(META_COMPROMISED_KEYS)?.is_some() {
        return Ok(());
    }
    let mut keys = Vec::new();
    for ca in [CaId::Root, CaId::Issuing] {
        for rec in db.revoked_by(ca)? {
            if rec.revocation.is_some_and(|r| r.reason == RevocationReason::KeyCompromise) {
                let der = db.get(&rec.serial)?.ok_or_else(|| Error::UnknownSerial(rec.serial.clone()))?.der;
                keys.push((key_digest_of(&der)?, rec.serial));
            }
        }
    }
    db.record_compromised(&keys)?;
    db.meta_put(META_COMPROMISED_KEYS, "recorded at revocation")?;
    Ok(())
}

fn ski_of(der: &[u8]) -> Result<Vec<u8>, Error> {
    let (_, x) = X509Certificate::from_der(der).map_err(|e| Error::Certificate(e.to_string()))?;
    x.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .ok_or_else(|| Error::Certificate("CA certificate has no subjectKeyIdentifier".into()))
}

fn issuer_params(subject: &SubjectName, ca_der: &[u8]) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn_of(subject);
    p.key_identifier_method = KeyIdMethod::PreSpecified(ski_of(ca_der)?);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

fn seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn get_or_generate(
    hsm: &dyn KeyCustody,
    h: &KeyHandle,
    kt: KeyType,
    purpose: KeyPurpose,
) -> Result<Arc<dyn Signer>, Error> {
    if !hsm.contains(h)? {
        hsm.generate(h, kt, purpose)?;
    }
    Ok(hsm.signer(h)?)
}

impl Ca {
    /// Creates the hierarchy on first use; a second call changes nothing and says so.
    pub fn init(
        db: CertDb,
        hsm: Arc<dyn KeyCustody>,
        cfg: CaConfig,
        clock: Arc<dyn Clock>,
        actor: &str,
    ) -> Result<(Ca, InitOutcome), Error> {
        cfg.validate()?;
        if db.meta_get(META_INIT)?.is_some() {
            return Ok((Ca::open(db, hsm, cfg, clock)?, InitOutcome::AlreadyInitialised));
        }
        let now = seconds(clock.now());
        let rng = SystemRandom::new();

        let root_key =
            HsmKey::new(get_or_generate(&*hsm, &handle(H_ROOT), cfg.root.key_type, KeyPurpose::CaSigning)?);
        let issuing_key = HsmKey::new(get_or_generate(
            &*hsm,
            &handle(H_ISSUING),
            cfg.issuing.key_type,
            KeyPurpose::CaSigning,
        )?);
        let ocsp_key = HsmKey::new(get_or_generate(
            &*hsm,
            &handle(H_OCSP),
            cfg.ocsp_signer.key_type,
            KeyPurpose::OcspSigning,
        )?);
        let tsa_key =
            HsmKey::new(get_or_generate(&*hsm, &handle(H_TSA), cfg.tsa.key_type, KeyPurpose::TsaSigning)?);

        let ctx_for = |s: &KeySettings,
                       key: &HsmKey,
                       serial: Serial,
                       parent_end: Option<DateTime<Utc>>,
                       urls: (Option<String>, Option<String>, Option<String>)| {
            let mut end = now + Duration::days(i64::from(s.validity_days));
            if let Some(pe) = parent_end {
                end = end.min(pe);
            }
            ProfileContext {
                serial,
                not_before: now,
                not_after: end,
                key: SubjectKeyKind::from_key_type(key.signer.key_type()),
                ocsp_url: urls.0,
                ca_issuers_url: urls.1,
                crl_url: urls.2,
            }
        };
        let mut records = Vec::new();

        // Root.
        let root_ctx = ctx_for(&cfg.root, &root_key, new_serial(&rng)?, None, (None, None, None));
        let root_der = make_cert(
            &RootCaProfile { subject: cfg.root.subject.clone() },
            &root_ctx,
            &root_key,
            Signing::SelfSigned(&root_key),
        )?;
        let root = LoadedCa {
            id: CaId::Root,
            params: issuer_params(&cfg.root.subject, &root_der.der)?,
            der: root_der.der.clone(),
            key: root_key.clone(),
            not_after: root_ctx.not_after,
        };
        records.push(record_of(
            root_der,
            root_ctx.serial.clone(),
            CertKind::RootCa,
            None,
            CaId::Root,
            root_key.signer.key_type().to_string(),
            None,
            now,
        )?);

        let from_root = (None, Some(cfg.ca_cert_url(CaId::Root)), Some(cfg.crl_url(CaId::Root)));
        // Issuing CA, signed by the root.
        let iss_ctx =
            ctx_for(&cfg.issuing, &issuing_key, new_serial(&rng)?, Some(root.not_after), from_root.clone());
        let iss_der = make_cert(
            &IssuingCaProfile { subject: cfg.issuing.subject.clone() },
            &iss_ctx,
            &issuing_key,
            Signing::By(&root),
        )?;
        let issuing = LoadedCa {
            id: CaId::Issuing,
            params: issuer_params(&cfg.issuing.subject, &iss_der.der)?,
            der: iss_der.der.clone(),
            key: issuing_key.clone(),
            not_after: iss_ctx.not_after,
        };
        records.push(record_of(
            iss_der,
            iss_ctx.serial.clone(),
            CertKind::IssuingCa,
            None,
            CaId::Root,
            issuing_key.signer.key_type().to_string(),
            None,
            now,
        )?);

        // Delegated OCSP signer, signed by the issuing CA (whose certificates it answers for).
        let ocsp_ctx = ctx_for(
            &cfg.ocsp_signer,
            &ocsp_key,
            new_serial(&rng)?,
            Some(issuing.not_after),
            (None, Some(cfg.ca_cert_url(CaId::Issuing)), Some(cfg.crl_url(CaId::Issuing))),
        );
        let ocsp_der = make_cert(
            &OcspSignerProfile { subject: cfg.ocsp_signer.subject.clone() },
            &ocsp_ctx,
            &ocsp_key,
            Signing::By(&issuing),
        )?;
        records.push(record_of(
            ocsp_der,
            ocsp_ctx.serial.clone(),
            CertKind::OcspSigner,
            None,
            CaId::Issuing,
            ocsp_key.signer.key_type().to_string(),
            None,
            now,
        )?);

        // TSA, signed by the root: never by the S/MIME issuing CA.
        let tsa_ctx = ctx_for(&cfg.tsa, &tsa_key, new_serial(&rng)?, Some(root.not_after), from_root);
        let tsa_der = make_cert(
            &TsaProfile { subject: cfg.tsa.subject.clone() },
            &tsa_ctx,
            &tsa_key,
            Signing::By(&root),
        )?;
        records.push(record_of(
            tsa_der,
            tsa_ctx.serial.clone(),
            CertKind::Tsa,
            None,
            CaId::Root,
            tsa_key.signer.key_type().to_string(),
            None,
            now,
        )?);

        let details = format!(
            "root {} issuing {} ocsp {} tsa {}",
            records[0].serial, records[1].serial, records[2].serial, records[3].serial
        );
        let audit = AuditLog::open(db.clone())?;
        audit.commit(vec![AuditDraft::ok(actor, "init", None, details)], now, |recs| {
            Ok(db.store_issued(&records, recs)?)
        })?;
        let subj = |s: &SubjectName| serde_json::to_string(s).map_err(|e| Error::Config(e.to_string()));
        db.meta_put("ca.root.serial", &records[0].serial.to_string())?;
        db.meta_put("ca.root.subject", &subj(&cfg.root.subject)?)?;
        db.meta_put("ca.issuing.serial", &records[1].serial.to_string())?;
        db.meta_put("ca.issuing.subject", &subj(&cfg.issuing.subject)?)?;
        db.meta_put("ca.ocsp.serial", &records[2].serial.to_string())?;
        db.meta_put("ca.tsa.serial", &records[3].serial.to_string())?;
        db.meta_put(META_INIT, &now.to_rfc3339())?;
        drop(audit);
        let ca = Ca::open(db, hsm, cfg, clock)?;
        ca.regenerate_crl(CaId::Root, actor)?;
        ca.regenerate_crl(CaId::Issuing, actor)?;
        ca.tls_server_certificate()?;
        Ok((ca, InitOutcome::Created))
    }

    /// Opens an initialised CA.
    pub fn open(
        db: CertDb,
        hsm: Arc<dyn KeyCustody>,
        cfg: CaConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Ca, Error> {
        cfg.validate()?;
        if db.meta_get(META_INIT)?.is_none() {
            return Err(Error::NotInitialised);
        }
        record_earlier_compromised_keys(&db)?;
        let cert_of = |key: &str| -> Result<CertRecord, Error> {
            let s: Serial = db
                .meta_get(key)?
                .ok_or_else(|| cerdb::Error::Inconsistent(format!("{key} missing")))?
                .parse()?;
            db.get(&s)?.ok_or(Error::UnknownSerial(s))
        };
        let subject_of = |key: &str| -> Result<SubjectName, Error> {
            let text =
                db.meta_get(key)?.ok_or_else(|| cerdb::Error::Inconsistent(format!("{key} missing")))?;
            serde_json::from_str(&text).map_err(|e| cerdb::Error::Corrupt(e.to_string()).into())
        };
        let load = |id: CaId, serial_key: &str, subject_key: &str, h: &str| -> Result<LoadedCa, Error> {
            let rec = cert_of(serial_key)?;
            Ok(LoadedCa {
                id,
                params: issuer_params(&subject_of(subject_key)?, &rec.der)?,
                key: HsmKey::new(hsm.signer(&handle(h))?),
                not_after: rec.not_after,
                der: rec.der,
            })
        };
        let root = load(CaId::Root, "ca.root.serial", "ca.root.subject", H_ROOT)?;
        let issuing = load(CaId::Issuing, "ca.issuing.serial", "ca.issuing.subject", H_ISSUING)?;
        let ocsp_der = cert_of("ca.ocsp.serial")?.der;
        let tsa_der = cert_of("ca.tsa.serial")?.der;
        let compromised = RwLock::new(db.compromised_keys()?.into_iter().collect());
        Ok(Ca {
            audit: AuditLog::open(db.clone())?,
            db,
            hsm,
            cfg,
            clock,
            root,
            issuing,
            ocsp_der,
            tsa_der,
            hooks: RwLock::new(Vec::new()),
            compromised,
            crl_lock: Mutex::new(()),
            tls_lock: Mutex::new(()),
            rng: SystemRandom::new(),
        })
    }

    /// The storage handle.
    pub fn db(&self) -> &CertDb {
        &self.db
    }

    /// The settings.
    pub fn config(&self) -> &CaConfig {
        &self.cfg
    }

    /// Seals a secret of the layers above (a console user's TOTP seed) under key custody's
    /// master key, bound to `context` ([`KeyCustody::seal_secret`]).
    pub fn seal_secret(&self, context: &str, secret: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.hsm.seal_secret(context, secret)?)
    }

    /// Opens what [`Ca::seal_secret`] sealed under `context`.
    pub fn open_secret(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.hsm.open_secret(context, sealed)?)
    }

    /// Now, by the CA's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A CA certificate, DER.
    pub fn ca_cert(&self, which: CaCert) -> &[u8] {
        match which {
            CaCert::Root => &self.root.der,
            CaCert::Issuing => &self.issuing.der,
            CaCert::Ocsp => &self.ocsp_der,
            CaCert::Tsa => &self.tsa_der,
        }
    }

    /// The OCSP signer key.
    pub fn ocsp_signer(&self) -> Result<Arc<dyn Signer>, Error> {
        Ok(self.hsm.signer(&handle(H_OCSP))?)
    }

    /// The TSA key.
    pub fn tsa_signer(&self) -> Result<Arc<dyn Signer>, Error> {
        Ok(self.hsm.signer(&handle(H_TSA))?)
    }

    /// Registers a function called with the serial of every revocation, right after it is
    /// stored (the OCSP responder drops its cached response).
    pub fn on_revocation(&self, hook: impl Fn(&Serial) + Send + Sync + 'static) {
        self.hooks.write().unwrap_or_else(|p| p.into_inner()).push(Box::new(hook));
    }

    fn leaf_ctx(&self, serial: Serial, key: SubjectKeyKind, now: DateTime<Utc>) -> ProfileContext {
        let end = (now + Duration::days(i64::from(self.cfg.leaf.validity_days))).min(self.issuing.not_after);
        ProfileContext {
            serial,
            not_before: now,
            not_after: end,
            key,
            ocsp_url: Some(self.cfg.ocsp_url()),
            ca_issuers_url: Some(self.cfg.ca_cert_url(CaId::Issuing)),
            crl_url: Some(self.cfg.crl_url(CaId::Issuing)),
        }
    }

    /// Issues one certificate from a CSR.
    pub fn issue(&self, req: &IssueRequest, actor: &str) -> Result<Issued, Error> {
        let mut v = self.issue_many(std::slice::from_ref(req), actor)?;
        v.pop().ok_or_else(|| Error::Certificate("nothing issued".into()))
    }

    /// Issues certificates from CSRs; all are stored in one durable transaction (one flush for
    /// the batch). Checking and signing run on every core for larger batches. If any request is
    /// refused, nothing is stored and the refusal is in the audit log.
    pub fn issue_many(&self, reqs: &[IssueRequest], actor: &str) -> Result<Vec<Issued>, Error> {
        self.issue_batch(
            reqs,
            actor,
            |r| (&r.email, r.usage),
            "",
            |req, now| {
                let checked = check_csr(&req.csr, &req.email, req.usage, self.cfg.leaf.min_rsa_bits)?;
                self.prepare(&req.email, req.usage, checked, now)
            },
        )
    }

    /// Issues certificates for public keys whose private keys the caller generated and holds:
    /// the same path as [`Ca::issue_many`] (key rules, serials, profile lint, signing, one
    /// durable transaction with the audit entries) without a CSR, and so without a proof of
    /// possession. For callers that made the keys themselves — `pki cerdb load-test-data`'s
    /// synthetic subscribers — never for keys from a subscriber; the audit entries say
    /// "own key".
    pub fn issue_many_own_keys(&self, reqs: &[OwnKeyRequest], actor: &str) -> Result<Vec<Issued>, Error> {
        self.issue_batch(
            reqs,
            actor,
            |r| (&r.email, r.usage),
            " own key",
            |req, now| {
                let checked = crate::csr::check_own_key(&req.spki, req.usage, self.cfg.leaf.min_rsa_bits)?;
                self.prepare(&req.email, req.usage, checked, now)
            },
        )
    }

    /// The batch issuance both paths share: `prepare` on every core, then one transaction.
    fn issue_batch<R: Sync>(
        &self,
        reqs: &[R],
        actor: &str,
        names: impl Fn(&R) -> (&EmailAddress, Usage),
        note: &str,
        prepare: impl Fn(&R, DateTime<Utc>) -> Result<CertRecord, Error> + Sync,
    ) -> Result<Vec<Issued>, Error> {
        let now = seconds(self.clock.now());
        let prepared = par_map(reqs, |req| prepare(req, now));
        let mut records = Vec::with_capacity(reqs.len());
        let mut drafts = Vec::with_capacity(reqs.len());
        let mut refused = None;
        for (req, result) in reqs.iter().zip(prepared) {
            let (email, usage) = names(req);
            match result {
                Ok(rec) => {
                    let details =
                        format!("{email} {usage} {}{note} sha256:{}", rec.key_type, rec.fingerprint);
                    drafts.push(AuditDraft::ok(actor, "issue", Some(&rec.serial), details));
                    records.push(rec);
                }
                Err(e) if refused.is_none() => refused = Some((format!("{email} {usage}{note}"), e)),
                Err(_) => {}
            }
        }
        if let Some((details, e)) = refused {
            // The others of the batch were signed: their serials are never used again.
            self.retire(&records);
            self.audit.append(AuditDraft::refused(actor, "issue", None, &e.to_string(), details), now)?;
            return Err(e);
        }
        // Checked and encoded before the audit log's lock is taken, and flushed after it is
        // released: another batch's transaction goes on meanwhile (sled's flush covers whatever
        // was written before it, so this batch is durable when it returns, whichever thread's
        // flush wrote it).
        let stored = self.db.check_issued(&records).map_err(Error::from).and_then(|checked| {
            self.audit.commit(drafts, now, |recs| Ok(self.db.store_checked_unflushed(&checked, recs)?))
        });
        self.retire_if_refused(&records, stored)?;
        self.db.flush()?;
        Ok(records.into_iter().map(|record| Issued { record }).collect())
    }

    /// When storing signed certificates failed, records their serials as used ([`Ca::retire`])
    /// before passing the failure on.
    fn retire_if_refused(&self, records: &[CertRecord], stored: Result<(), Error>) -> Result<(), Error> {
        if stored.is_err() {
            self.retire(records);
        }
        stored
    }

    /// Records the serials of signed certificates that are not stored ([`CertDb::retire_serials`]):
    /// a serial that was signed is never signed again, even into a certificate nobody received.
    /// Best effort beside the refusal being reported: a failure is logged.
    fn retire(&self, records: &[CertRecord]) {
        if records.is_empty() {
            return;
        }
        let serials: Vec<Serial> = records.iter().map(|r| r.serial.clone()).collect();
        if let Err(e) = self.db.retire_serials(&serials) {
            tracing::error!(error = %e, count = serials.len(), "could not record the serials of certificates not stored");
        }
    }

    /// Signs the certificate of a checked key (not yet stored), unless the key was reported
    /// compromised ([`Ca::revoke`] for keyCompromise): the S/MIME Baseline Requirements (6.1.1.3)
    /// have the CA refuse a key it knows to be compromised. A request checked before such a
    /// revocation was stored may still be issued; one checked after it never is.
    fn prepare(
        &self,
        email: &EmailAddress,
        usage: Usage,
        checked: CheckedCsr,
        now: DateTime<Utc>,
    ) -> Result<CertRecord, Error> {
        let compromised = self.compromised.read().unwrap_or_else(|p| p.into_inner());
        if let Some(serial) = compromised.get(&KeyDigest::of(&checked.key.raw)) {
            return Err(Error::CsrKeyCompromised { serial: serial.clone() });
        }
        drop(compromised);
        let serial = new_serial(&self.rng)?;
        let ctx = self.leaf_ctx(serial.clone(), checked.kind, now);
        let profile = SubscriberProfile { email: email.clone(), usage };
        let der = make_cert(&profile, &ctx, &checked.key, Signing::By(&self.issuing))?;
        record_of(
            der,
            serial,
            usage.into(),
            Some(email.clone()),
            CaId::Issuing,
            checked.kind.name(),
            None,
            now,
        )
    }

    /// Issues an encryption certificate whose key pair is generated and escrowed in the key
    /// store; returns it with a PKCS#12 of key and chain protected by `p12_password`.
    pub fn issue_generated(
        &self,
        email: &EmailAddress,
        usage: Usage,
        key_type: Option<KeyType>,
        p12_password: &str,
        actor: &str,
    ) -> Result<(Issued, Vec<u8>), Error> {
        if usage == Usage::Signing {
            return Err(Error::SigningKeyNotEscrowable);
        }
        let kt = key_type.unwrap_or(self.cfg.leaf.default_generated_key_type);
        let kind = SubjectKeyKind::from_key_type(kt);
        check_key_for_usage(kind, usage)?;
        if p12_password.chars().count() < hsm_sim::MIN_PKCS12_PASSWORD_LEN {
            return Err(hsm_sim::Error::WeakPkcs12Password { min: hsm_sim::MIN_PKCS12_PASSWORD_LEN }.into());
        }
        let now = seconds(self.clock.now());
        let serial = new_serial(&self.rng)?;
        let h: KeyHandle = format!("escrow/{}", serial.to_string().to_ascii_lowercase()).parse()?;
        let public = self.hsm.generate(&h, kt, KeyPurpose::Escrow)?;
        let subject = SubjectKey { raw: public.raw, alg: alg_for(kt) };
        let ctx = self.leaf_ctx(serial.clone(), kind, now);
        let profile = SubscriberProfile { email: email.clone(), usage };
        let der = make_cert(&profile, &ctx, &subject, Signing::By(&self.issuing))?;
        let rec = record_of(
            der,
            serial,
            usage.into(),
            Some(email.clone()),
            CaId::Issuing,
            kt.to_string(),
            Some(h.to_string()),
            now,
        )?;
        let drafts = vec![
            AuditDraft::ok(
                actor,
                "issue",
                Some(&rec.serial),
                format!("{email} {usage} {kt} escrowed sha256:{}", rec.fingerprint),
            ),
            AuditDraft::ok(
                actor,
                "escrow.export",
                Some(&rec.serial),
                "PKCS#12 to the subscriber at issuance",
            ),
        ];
        let stored = self
            .audit
            .commit(drafts, now, |recs| Ok(self.db.store_issued(std::slice::from_ref(&rec), recs)?));
        self.retire_if_refused(std::slice::from_ref(&rec), stored)?;
        let p12 = self.export_p12(&rec, p12_password)?;
        Ok((Issued { record: rec }, p12))
    }

    fn export_p12(&self, rec: &CertRecord, password: &str) -> Result<Vec<u8>, Error> {
        let h: KeyHandle =
            rec.escrow_key.as_deref().ok_or_else(|| Error::NotEscrowed(rec.serial.clone()))?.parse()?;
        let chain = vec![rec.der.clone(), self.issuing.der.clone(), self.root.der.clone()];
        let name = rec.email.as_ref().map(|e| e.to_string()).unwrap_or_else(|| rec.serial.to_string());
        Ok(self.hsm.export_pkcs12(&h, &chain, password, &name)?)
    }

    /// Officer recovery of an escrowed key as a PKCS#12; an audit entry records it.
    pub fn escrow_recover(&self, serial: &Serial, p12_password: &str, actor: &str) -> Result<Vec<u8>, Error> {
        let rec = self.db.get(serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))?;
        if rec.escrow_key.is_none() {
            return Err(Error::NotEscrowed(serial.clone()));
        }
        let now = self.clock.now();
        let p12 = match self.export_p12(&rec, p12_password) {
            Ok(p) => p,
            Err(e) => {
                self.audit.append(
                    AuditDraft::refused(actor, "escrow.recover", Some(serial), &e.to_string(), ""),
                    now,
                )?;
                return Err(e);
            }
        };
        self.audit
            .append(AuditDraft::ok(actor, "escrow.recover", Some(serial), "PKCS#12 to an officer"), now)?;
        Ok(p12)
    }

    /// Revokes a certificate: status and audit entry durably, OCSP hooks, then a new CRL.
    ///
    /// For keyCompromise, also:
    /// - the key is recorded as compromised in the same transaction: no certificate is issued for
    ///   it again ([`Ca::issue_many`]);
    /// - a certificate revoked before for another reason has its reason changed to keyCompromise
    ///   (its revocation time kept), so that CRL and OCSP say so;
    /// - the other certificates of the same address with the same key, not expired, are revoked
    ///   for keyCompromise too (each with its audit entry) and returned in
    ///   [`Revoked::same_key`]. Certificates of other addresses are not searched: no index maps a
    ///   key to its certificates.
    pub fn revoke(&self, serial: &Serial, reason: RevocationReason, actor: &str) -> Result<Revoked, Error> {
        let rec = self.db.get_meta(serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))?;
        if rec.kind == CertKind::RootCa {
            return Err(Error::RootNotRevocable);
        }
        let key = match reason {
            RevocationReason::KeyCompromise => Some(key_digest_of(&self.show(serial)?.der)?),
            _ => None,
        };
        let record = self.revoke_one(&rec, reason, key, None, actor)?;
        let mut same_key = Vec::new();
        if let (Some(key), Some(email)) = (key, &rec.email) {
            let now = self.clock.now();
            for other in self.db.by_email(email, None)? {
                let done =
                    other.revocation.as_ref().is_some_and(|r| r.reason == RevocationReason::KeyCompromise);
                if other.serial == *serial || done || other.not_after < now {
                    continue;
                }
                if key_digest_of(&self.show(&other.serial)?.der)? == key {
                    same_key.push(self.revoke_one(&other, reason, Some(key), Some(serial), actor)?);
                }
            }
        }
        self.regenerate_crl(rec.issuer, actor)?;
        Ok(Revoked { record, reason_before: rec.revocation.map(|r| r.reason), same_key })
    }

    /// One revocation of [`Ca::revoke`]: the record and its audit entry in one transaction (with
    /// the compromised key, if any), then the OCSP hooks. `same_key_as` names the certificate
    /// whose revocation for keyCompromise this one follows.
    fn revoke_one(
        &self,
        rec: &CertRecord,
        reason: RevocationReason,
        key: Option<KeyDigest>,
        same_key_as: Option<&Serial>,
        actor: &str,
    ) -> Result<CertRecord, Error> {
        let now = seconds(self.clock.now());
        let revocation = Revocation { at: now, reason };
        let mut details = format!("{reason} {}", rec.kind);
        if let Some(earlier) = &rec.revocation {
            details.push_str(&format!(" (revoked before as {})", earlier.reason));
        }
        if let Some(s) = same_key_as {
            details.push_str(&format!(" (the key of {s})"));
        }
        let draft = AuditDraft::ok(actor, "revoke", Some(&rec.serial), details);
        let updated = self.audit.commit(vec![draft], now, |recs: &[AuditRecord]| {
            Ok(self.db.revoke(&rec.serial, revocation.clone(), key.as_ref(), &recs[0])?)
        })?;
        if let Some(key) = key {
            let mut keys = self.compromised.write().unwrap_or_else(|p| p.into_inner());
            keys.entry(key).or_insert_with(|| rec.serial.clone());
        }
        for hook in self.hooks.read().unwrap_or_else(|p| p.into_inner()).iter() {
            hook(&rec.serial);
        }
        Ok(updated)
    }

    /// A certificate with its DER.
    pub fn show(&self, serial: &Serial) -> Result<CertRecord, Error> {
        self.db.get(serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))
    }

    /// Certificate metadata, oldest first, optionally of one address.
    pub fn list(&self, email: Option<&EmailAddress>) -> Result<Vec<CertRecord>, Error> {
        Ok(self.db.list(email)?)
    }

    /// The current CRL of a CA, regenerated first if it is due.
    pub fn crl(&self, ca: CaId) -> Result<CrlRecord, Error> {
        if let Some(c) = self.db.crl(ca)? {
            let margin = Duration::hours(i64::from(self.cfg.crl.refresh_before_hours));
            if self.clock.now() < c.next_update - margin {
                return Ok(c);
            }
        }
        self.regenerate_crl(ca, "system")
    }

    /// Regenerates every CRL that is due; for a periodic task.
    pub fn refresh_crls(&self) -> Result<(), Error> {
        self.crl(CaId::Root)?;
        self.crl(CaId::Issuing)?;
        Ok(())
    }

    /// Signs a new full CRL for `ca` and stores it.
    pub fn regenerate_crl(&self, ca: CaId, actor: &str) -> Result<CrlRecord, Error> {
        let _guard = self.crl_lock.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = match ca {
            CaId::Root => &self.root,
            CaId::Issuing => &self.issuing,
        };
        let now = seconds(self.clock.now());
        let next = now + Duration::hours(i64::from(self.cfg.crl.validity_hours));
        let number = self.db.crl(ca)?.map(|c| c.number + 1).unwrap_or(1);
        let to_time = |t: DateTime<Utc>| {
            ::time::OffsetDateTime::from_unix_timestamp(t.timestamp())
                .map_err(|e| Error::Certificate(e.to_string()))
        };
        let mut revoked = Vec::new();
        for r in self.db.revoked_by(ca)? {
            let Some(rev) = &r.revocation else { continue };
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(r.serial.as_bytes()),
                revocation_time: to_time(rev.at)?,
                reason_code: rcgen_reason(rev.reason),
                invalidity_date: None,
            });
        }
        let count = revoked.len();
        let ski = match &loaded.params.key_identifier_method {
            KeyIdMethod::PreSpecified(v) => v.clone(),
            _ => Vec::new(),
        };
        let number_bytes: Vec<u8> = number.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        let params = CertificateRevocationListParams {
            this_update: to_time(now)?,
            next_update: to_time(next)?,
            crl_number: SerialNumber::from_slice(&number_bytes),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::PreSpecified(ski),
        };
        let issuer = Issuer::from_params(&loaded.params, LintingKey::new(&loaded.key, None));
        let crl = params.signed_by(&issuer).map_err(|e| Error::Certificate(format!("CRL: {e}")))?;
        let record = CrlRecord { ca, number, this_update: now, next_update: next, der: crl.der().to_vec() };
        let draft =
            AuditDraft::ok(actor, "crl", None, format!("{} CRL number {number}, {count} revoked", loaded.id));
        self.audit.commit(vec![draft], now, |recs| Ok(self.db.put_crl(&record, recs.first())?))?;
        Ok(record)
    }

    /// The console's TLS server certificate chain (leaf first, root excluded) and its key in the
    /// key store. Issued by the root on first use — at init, or for a data directory created
    /// before TLS existed — and reissued when fewer than 30 days of validity remain.
    pub fn tls_server_certificate(&self) -> Result<ChainAndKey, Error> {
        let _guard = self.tls_lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = seconds(self.clock.now());
        let current = match self.db.meta_get("ca.tls.serial")? {
            Some(s) => self.db.get(&s.parse()?)?,
            None => None,
        };
        let key = get_or_generate(&*self.hsm, &handle(H_TLS), self.cfg.tls.key_type, KeyPurpose::TlsServer)?;
        if let Some(rec) = current {
            let fresh = rec.revocation.is_none() && rec.not_after - now > Duration::days(30);
            if fresh && rec.der_matches_key(key.public_key_raw()) {
                return Ok((vec![rec.der], key));
            }
        }
        let hsm_key = HsmKey::new(key.clone());
        let ctx = ProfileContext {
            serial: new_serial(&self.rng)?,
            not_before: now,
            not_after: (now + Duration::days(i64::from(self.cfg.tls.validity_days))).min(self.root.not_after),
            key: SubjectKeyKind::from_key_type(key.key_type()),
            ocsp_url: None,
            ca_issuers_url: Some(self.cfg.ca_cert_url(CaId::Root)),
            crl_url: Some(self.cfg.crl_url(CaId::Root)),
        };
        let profile = TlsServerProfile {
            dns_names: self.cfg.tls.dns_names.clone(),
            ip_addresses: self.cfg.tls.ip_addresses.clone(),
        };
        let der = make_cert(&profile, &ctx, &hsm_key, Signing::By(&self.root))?;
        let rec = record_of(
            der,
            ctx.serial.clone(),
            CertKind::TlsServer,
            None,
            CaId::Root,
            key.key_type().to_string(),
            None,
            now,
        )?;
        let names = format!("{:?} {:?}", self.cfg.tls.dns_names, self.cfg.tls.ip_addresses);
        let draft = AuditDraft::ok("system", "issue", Some(&rec.serial), format!("tls-server {names}"));
        let stored = self
            .audit
            .commit(vec![draft], now, |recs| Ok(self.db.store_issued(std::slice::from_ref(&rec), recs)?));
        self.retire_if_refused(std::slice::from_ref(&rec), stored)?;
        self.db.meta_put("ca.tls.serial", &rec.serial.to_string())?;
        Ok((vec![rec.der], key))
    }

    /// Checks the audit chain; the number of entries.
    pub fn audit_verify(&self) -> Result<u64, Error> {
        audit::verify(&self.db)
    }

    /// Appends one entry, durably, for an event outside the CA's own operations (the console's
    /// logins, lockouts, step-ups and account changes). A refused event's outcome is
    /// `refused: <details>`.
    pub fn audit_event(
        &self,
        actor: &str,
        action: &str,
        outcome_ok: bool,
        details: &str,
    ) -> Result<(), Error> {
        let draft = if outcome_ok {
            AuditDraft::ok(actor, action, None, details)
        } else {
            AuditDraft::refused(actor, action, None, details, "")
        };
        self.audit.append(draft, self.clock.now())
    }
}

fn rcgen_reason(r: RevocationReason) -> Option<rcgen::RevocationReason> {
    use rcgen::RevocationReason as R;
    match r {
        // RFC 5280 §5.3.1: the reasonCode extension is omitted rather than "unspecified".
        RevocationReason::Unspecified => None,
        RevocationReason::KeyCompromise => Some(R::KeyCompromise),
        RevocationReason::CaCompromise => Some(R::CaCompromise),
        RevocationReason::AffiliationChanged => Some(R::AffiliationChanged),
        RevocationReason::Superseded => Some(R::Superseded),
        RevocationReason::CessationOfOperation => Some(R::CessationOfOperation),
        RevocationReason::PrivilegeWithdrawn => Some(R::PrivilegeWithdrawn),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn signing_threads_run_below_their_caller() {
        let me = Some(rustix::thread::gettid());
        let caller = rustix::process::getpriority_process(me).expect("own priority");
        let items: Vec<u32> = (0..64).collect();
        let seen = super::par_map(&items, |_| {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("priority")
        });
        let spawned = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) >= 2;
        let want = if spawned { (caller + super::SIGNING_NICE_STEP).min(19) } else { caller };
        assert!(seen.iter().all(|p| *p == want), "caller {caller}, signing threads {seen:?}");
        // The caller itself is unchanged, and small inputs stay on it.
        assert_eq!(rustix::process::getpriority_process(me).expect("own priority"), caller);
        assert_eq!(super::par_map(&items[..3], |_| 1).len(), 3);
    }
}
