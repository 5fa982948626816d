//! The CA of one data directory, split by responsibility: the hierarchy (`hierarchy.rs`),
//! issuance (`issuance.rs`), escrow (`escrow.rs`), its recovery by two officers or more
//! (`recovery.rs`), revocation (`revocation.rs`), CRLs
//! (`crl.rs`) and the CA's own service certificates (`service_certs.rs`).

mod checkpoints;
mod compromise;
mod counters;
mod crl;
mod escrow;
mod expiry;
mod hierarchy;
mod issuance;
mod mail_senders;
mod recovery;
mod rekey;
mod revocation;
mod service_certs;
pub mod validation;

use compromise::{load_compromised, publish_withdrawn, CompromisedKeys, CompromisedSet};
use hierarchy::*;
use issuance::*;
use rekey::{first_handle, key_handle_of, key_meta, load_signer, SignerCert};

pub use checkpoints::CheckpointReport;
pub use compromise::OwnCert;
pub use expiry::{ExpiryState, OwnCertStatus};
pub use recovery::{console_actor, same_officer, RecoveryState, MAX_RECOVERY_REASON_CHARS};
pub use rekey::tsa_certificates;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use cerdb::{
    CaId, CertDb, CertKind, CertRecord, CrlRecord, EmailAddress, Fingerprint, KeyDigest, Revocation,
    RevocationReason, Serial, Usage,
};
use chrono::{DateTime, Duration, Utc};
use hsm_sim::{KeyCustody, KeyHandle, KeyPurpose, KeyType, Signer};
use rcgen::{
    CertificateParams, CertificateRevocationListParams, Issuer, KeyIdMethod, KeyUsagePurpose, PublicKeyData,
    RevokedCertParams, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use x509_parser::prelude::*;

use crate::audit::{self, AuditAction, AuditDraft, AuditKey, AuditLog};
use crate::clock::Clock;
use crate::config::{CaConfig, EscrowConfig, KeySettings, SubjectName};
use crate::csr::{check_csr, check_key_for_usage, CheckedCsr, SubjectKeyKind};
use crate::keys::{alg_for, HsmKey, LintingKey, SubjectKey};
use crate::profiles::{
    dn_of, parse_tbs, AuditSignerProfile, IssuingCaProfile, OcspSignerProfile, Profile, ProfileContext,
    RootCaProfile, SubscriberProfile, TlsServerProfile, TsaProfile,
};
use crate::{oids, Error};

const H_ROOT: &str = "ca/root";
const H_ISSUING: &str = "ca/issuing";
const H_OCSP: &str = "ocsp/signer";
const H_TSA: &str = "tsa/signer";
const H_TLS: &str = "tls/server";
const H_AUDIT: &str = "audit/signer";
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

/// A certificate chain (DER, leaf first, root excluded) and the key of its leaf in the key store.
pub type ChainAndKey = (Vec<Vec<u8>>, Arc<dyn Signer>);

/// The certificate authority of one data directory.
pub struct Ca {
    db: CertDb,
    hsm: Arc<dyn KeyCustody>,
    cfg: CaConfig,
    /// `[escrow]`: how many officers a recovery needs, how long a request stays open.
    escrow: EscrowConfig,
    /// `[validation]`: mailbox control before issuance (`None`: not checked, library tests only).
    validation: Option<validation::ValidationConfig>,
    clock: Arc<dyn Clock>,
    audit: AuditLog,
    root: LoadedCa,
    issuing: LoadedCa,
    /// The OCSP signer in use: replaced by [`Ca::renew_ocsp_signer_if_due`] and [`Ca::rekey`].
    ocsp: RwLock<Arc<SignerCert>>,
    /// The TSA in use: replaced by [`Ca::rekey`].
    tsa: RwLock<Arc<SignerCert>>,
    /// Keys reported compromised, with the certificate whose revocation reported each: the
    /// `compromised_keys` tree, read when the CA is opened and kept up to date by [`Ca::revoke`]
    /// and, for other processes' revocations, by [`Ca::sync_with_storage`]. Checked here, not in
    /// the database, so that the signing threads never wait for another batch's transaction.
    /// Shared with the signers handed out, which refuse to sign with a key in it.
    compromised: CompromisedKeys,
    /// The own certificates whose one in use was revoked by [`Ca::compromise`]
    /// (`ca.compromised.*` in storage).
    compromised_certs: CompromisedSet,
    /// The change feed's end when the two above were last read from storage: other processes on
    /// the same storage (PostgreSQL nodes) revoke too ([`Ca::sync_with_storage`]).
    seen_change: std::sync::atomic::AtomicU64,
    /// Held while the two above change together: a compromise, a re-key, a reload.
    compromise_lock: Mutex<()>,
    crl_lock: Mutex<()>,
    /// When revocations reach the CRL: at once, or at the next publication ([`Ca::defer_crls`]).
    crl_publication: crl::Publication,
    tls_lock: Mutex<()>,
    ocsp_renew_lock: Mutex<()>,
    counters: counters::Counters,
    audit_signer_lock: Mutex<()>,
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

enum Signing<'a> {
    SelfSigned(&'a HsmKey),
    By(&'a LoadedCa),
}

impl Ca {
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

    /// A CA certificate, DER. For the OCSP signer and the TSA, the one in use now.
    pub fn ca_cert(&self, which: CaCert) -> Cow<'_, [u8]> {
        match which {
            CaCert::Root => Cow::Borrowed(&self.root.der),
            CaCert::Issuing => Cow::Borrowed(&self.issuing.der),
            CaCert::Ocsp => Cow::Owned(self.ocsp.read().unwrap_or_else(|p| p.into_inner()).der.clone()),
            CaCert::Tsa => Cow::Owned(self.tsa.read().unwrap_or_else(|p| p.into_inner()).der.clone()),
        }
    }

    /// A certificate with its DER.
    pub fn show(&self, serial: &Serial) -> Result<CertRecord, Error> {
        self.db.get(serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))
    }

    /// Certificate metadata, oldest first, optionally of one address.
    pub fn list(&self, email: Option<&EmailAddress>) -> Result<Vec<CertRecord>, Error> {
        Ok(self.db.list(email)?)
    }

    /// Checks the audit log — hash chain and `mac`s ([`audit::verify_keyed`]); the number of
    /// entries.
    pub fn audit_verify(&self) -> Result<u64, Error> {
        Ok(self.audit_report(None)?.entries)
    }

    /// Checks the audit log, against a checkpoint's head when given ([`audit::verify_keyed`]).
    pub fn audit_report(
        &self,
        checkpoint: Option<&audit::CheckpointHead>,
    ) -> Result<audit::AuditReport, Error> {
        audit::verify_keyed(&self.db, self.audit.key(), checkpoint)
    }

    /// A check of the audit log that runs without the CA (on another thread): the storage handle
    /// and the audit key.
    pub fn audit_checker(&self) -> impl Fn() -> Result<u64, Error> + Send + 'static {
        let (db, key) = (self.db.clone(), self.audit.key().clone());
        move || Ok(audit::verify_keyed(&db, &key, None)?.entries)
    }

    /// Appends one entry, durably, for an event outside the CA's own operations (the console's
    /// logins, lockouts, step-ups and account changes). A refused event's outcome is
    /// `refused: <details>`.
    pub fn audit_event(
        &self,
        actor: &str,
        action: AuditAction,
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

    /// Appends `drafts`, in order, in one durable write (sealed mail: the entries of a bulk, or
    /// of the single messages made or delivered while the last write ran, instead of one write
    /// per message).
    pub fn audit_events(&self, drafts: Vec<AuditDraft>) -> Result<(), Error> {
        if drafts.is_empty() {
            return Ok(());
        }
        self.audit.commit(drafts, self.clock.now(), |chain| Ok(self.db.append_audit(chain)?))
    }
}
