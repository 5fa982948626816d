//! # ca-core — the certificate authority
//!
//! **Owns:** the CA hierarchy (root → S/MIME issuing CA, with a delegated OCSP signer and a TSA
//! certificate), the certificate profiles (signing vs encryption, per the S/MIME Baseline
//! Requirements, strict), CSR checks with proof of possession, serial numbers, issuance (lint the
//! TBS, sign through hsm-sim, store durably with its audit entry), revocation, CRLs, escrow
//! export, and the hash-chained, keyed audit log with its signed checkpoints.
//!
//! **Must not:** speak HTTP, hold key bytes (it signs through [`hsm_sim::Signer`] handles), or
//! open files other than through its [`cerdb::CertDb`] handle.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
mod ca;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod csr;
mod ext_values;
mod keys;
pub mod oids;
pub mod profiles;

pub use audit::AuditAction;
pub use ca::validation::{MailboxEvidence, MailboxValidation, ValidationConfig, ValidationMethod};
pub use ca::{
    console_actor, same_officer, to_pem, tsa_certificates, Ca, CaCert, ChainAndKey, CheckpointReport,
    ExpiryState, InitOutcome, IssueRequest, Issued, OwnCert, OwnCertStatus, OwnKeyRequest, RecoveryState,
    Revoked, MAX_RECOVERY_REASON_CHARS,
};
pub use clock::{Clock, FixedClock, SystemClock};
pub use config::{CaConfig, EscrowConfig, ExpirySettings};

/// Lowers the calling thread's scheduling priority by `step` nice levels (at most to 19), so that
/// threads which wait on the disk get a core first: the signing threads of a batch issuance
/// here, `pki serve`'s HTTP workers there. Linux only; best effort: lowering one's own priority
/// needs no permission, and if it fails nothing changes.
pub fn lower_own_priority(step: i32) {
    #[cfg(target_os = "linux")]
    {
        let me = Some(rustix::thread::gettid());
        if let Ok(now) = rustix::process::getpriority_process(me) {
            let _ = rustix::process::setpriority_process(me, (now + step).min(19));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = step;
}

/// nextUpdate - thisUpdate of the OCSP responder's answers: the OCSP signer is renewed at
/// least this long (and a day) before its notAfter, so that it outlives every answer it signed.
pub const OCSP_RESPONSE_LIFETIME: chrono::Duration = chrono::Duration::hours(24);

impl Error {
    /// Whether the CSR (or its key) is what was refused: the requester's to fix with another CSR.
    pub fn is_csr_refusal(&self) -> bool {
        matches!(
            self,
            Error::CsrParse(_)
                | Error::CsrWeakSignature { .. }
                | Error::CsrSignatureInvalid(_)
                | Error::CsrKeyTooSmall { .. }
                | Error::CsrRsaKey(_)
                | Error::CsrUnsupportedKey(_)
                | Error::CsrEmailMismatch { .. }
                | Error::CsrKeyCompromised { .. }
                | Error::KeyUnsuitable { .. }
        )
    }
}

use cerdb::recovery_store::RecoveryId;
use cerdb::{RevocationReason, Serial, Usage};

/// Everything the CA can refuse or fail at. Each message is one line naming the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `pki init` has not run on this data directory.
    #[error("the CA is not initialised in this data directory: run `pki init` first")]
    NotInitialised,
    /// A setting is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The CSR cannot be decoded.
    #[error("CSR rejected: {0}")]
    CsrParse(String),
    /// The CSR is signed with a broken digest.
    #[error("CSR rejected: it is signed with {algorithm}; SHA-1 and MD5 signatures are not accepted")]
    CsrWeakSignature {
        /// The algorithm's name.
        algorithm: String,
    },
    /// The CSR's signature does not verify: no proof of possession.
    #[error("CSR rejected: its signature does not verify (no proof of possession of the private key): {0}")]
    CsrSignatureInvalid(String),
    /// RSA key below the minimum.
    #[error("CSR rejected: RSA key of {bits} bits is too small; at least {min} bits are required")]
    CsrKeyTooSmall {
        /// The key's size.
        bits: usize,
        /// The minimum.
        min: usize,
    },
    /// An RSA key whose numbers break the rules (S/MIME BR 6.1.6).
    #[error("CSR rejected: the RSA key is not acceptable: {0}")]
    CsrRsaKey(String),
    /// A key type the CA does not certify.
    #[error("CSR rejected: unsupported key type {0}; use RSA (2048-8192 bits), EC P-256/P-384 or Ed25519")]
    CsrUnsupportedKey(String),
    /// The CSR names a different mailbox.
    #[error("CSR rejected: it names {csr}, but the certificate is requested for {requested}")]
    CsrEmailMismatch {
        /// What the CSR names.
        csr: String,
        /// What was asked.
        requested: String,
    },
    /// The key was reported compromised: a certificate for it was revoked for keyCompromise.
    #[error(
        "CSR rejected: its key was reported compromised when certificate {serial} was revoked for \
         keyCompromise; the subscriber needs a new key pair"
    )]
    CsrKeyCompromised {
        /// The certificate whose revocation reported the key.
        serial: Serial,
    },
    /// The key cannot serve the requested usage.
    #[error("{key} keys cannot be used for {usage} certificates: {why}")]
    KeyUnsuitable {
        /// The key type.
        key: String,
        /// The usage.
        usage: Usage,
        /// Why.
        why: String,
    },
    /// Signing keys are never generated by the CA.
    #[error("signing keys must be generated by their owner (non-repudiation): submit a CSR with --csr")]
    SigningKeyNotEscrowable,
    /// The TBS certificate failed the profile lint; nothing was signed.
    #[error("certificate lint failed, nothing was signed: {0}")]
    Lint(String),
    /// Certificate or CRL construction failed.
    #[error("certificate construction failed: {0}")]
    Certificate(String),
    /// No certificate with this serial.
    #[error("no certificate with serial {0}")]
    UnknownSerial(Serial),
    /// The root is not revoked through this CA.
    #[error("the root CA certificate cannot be revoked; retire the hierarchy instead")]
    RootNotRevocable,
    /// One of the CA's own certificates is not revoked like a subscriber's.
    #[error(
        "certificate {serial} is the CA's {which} certificate and is not revoked like a subscriber's: \
         if its key is compromised, follow the procedure `pki ca compromise --ca {which}`"
    )]
    OwnCertNotRevocable {
        /// The certificate.
        serial: Serial,
        /// Which one it is.
        which: OwnCert,
    },
    /// A reason the S/MIME Baseline Requirements (§7.2.2) do not allow for a subscriber
    /// certificate.
    #[error(
        "revocation reason {reason} is not allowed for a subscriber certificate (S/MIME BR 7.2.2); \
         use keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn \
         or unspecified"
    )]
    ReasonNotAllowed {
        /// The reason refused.
        reason: RevocationReason,
    },
    /// The certificate was revoked by `pki ca compromise`: nothing is issued or signed under it.
    #[error(
        "the {which} certificate was revoked by `pki ca compromise`: nothing is issued or signed under it any more"
    )]
    Compromised {
        /// Which one.
        which: OwnCert,
    },
    /// `pki ca rekey` for a certificate it does not replace.
    #[error(
        "the {which} certificate cannot be re-keyed here: `pki ca rekey` replaces the OCSP signer, the TSA, the TLS certificate and the audit signer; a new issuing CA is a new hierarchy"
    )]
    NotReKeyable {
        /// Which one.
        which: OwnCert,
    },
    /// `pki ca rekey` for a certificate not issued yet.
    #[error("there is no {which} certificate in use yet: nothing to re-key (it is issued on first use)")]
    NothingToReKey {
        /// Which one.
        which: OwnCert,
    },
    /// Another process on the same storage replaced the certificate while this one did.
    #[error("another process replaced the {which} certificate meanwhile: {serial} is in use; nothing else changed")]
    ReplacedMeanwhile {
        /// Which one.
        which: OwnCert,
        /// The one in use.
        serial: Serial,
    },
    /// The typed confirmation of `pki ca compromise` did not match.
    #[error("confirmation refused: type exactly {expected:?} to revoke the {which} certificate")]
    ConfirmationMismatch {
        /// Which certificate was asked for.
        which: OwnCert,
        /// What must be typed.
        expected: String,
    },
    /// The certificate's key is not escrowed here.
    #[error(
        "certificate {0} has no escrowed key (only encryption keys generated with --generate are escrowed)"
    )]
    NotEscrowed(Serial),
    /// No escrow recovery request with this id.
    #[error("no escrow recovery request {0} (`pki escrow list` shows them)")]
    UnknownRecovery(RecoveryId),
    /// The reason given for a recovery is not acceptable.
    #[error("escrow recovery reason refused: {0}")]
    RecoveryReason(String),
    /// The request is past its expiry.
    #[error("escrow recovery request {id} expired at {at}; it can be neither approved nor released: make a new request")]
    RecoveryExpired {
        /// The request.
        id: RecoveryId,
        /// When it expired (RFC 3339).
        at: String,
    },
    /// The requester tried to approve their own request.
    #[error("{actor} made escrow recovery request {id} and cannot approve it: a second officer must")]
    RecoveryOwnRequest {
        /// The request.
        id: RecoveryId,
        /// Who tried.
        actor: String,
    },
    /// An officer tried to approve a second time.
    #[error("{actor} approved escrow recovery request {id} already: another officer must approve it")]
    RecoveryAlreadyApproved {
        /// The request.
        id: RecoveryId,
        /// Who tried.
        actor: String,
    },
    /// The request has every approval it needs.
    #[error("escrow recovery request {id} has every approval it needs: its requester can download the key")]
    RecoveryFullyApproved {
        /// The request.
        id: RecoveryId,
    },
    /// The key of the request was released already: a request is used once.
    #[error("the key of escrow recovery request {id} was released at {at}; a request is used once: make a new one")]
    RecoveryReleased {
        /// The request.
        id: RecoveryId,
        /// When (RFC 3339).
        at: String,
    },
    /// The request lacks approvals.
    #[error(
        "escrow recovery request {id} has {have} of the {need} officers it needs (the requester included): \
         another officer must approve it first"
    )]
    RecoveryNotApproved {
        /// The request.
        id: RecoveryId,
        /// Officers who agreed so far, the requester included.
        have: u32,
        /// Officers needed.
        need: u32,
    },
    /// Someone other than the requester asked for the key.
    #[error("only {requester}, who made escrow recovery request {id}, can download its key")]
    RecoveryNotRequester {
        /// The request.
        id: RecoveryId,
        /// Who made it.
        requester: String,
    },
    /// The console account was reset and no second administrator has confirmed the reset.
    #[error(
        "the console account {account} was reset by {reset_by} and may not take part in escrow recovery \
         until a second administrator confirms the reset (Users page, or `pki user confirm-reset`)"
    )]
    RecoveryHold {
        /// The account.
        account: String,
        /// Who reset it.
        reset_by: String,
    },
    /// The audit chain is broken.
    #[error("audit log entry {seq} is invalid: {reason}")]
    AuditBroken {
        /// The first bad entry.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// An audit checkpoint does not verify, or is not one.
    #[error("the audit checkpoint does not verify: {0}")]
    BadCheckpoint(String),
    /// The timestamp of an audit checkpoint could not be made.
    #[error("the audit checkpoint could not be timestamped: {0}")]
    Timestamp(String),
    /// The address's control was not shown (S/MIME BR 3.2.2).
    #[error("the mailbox {email} is not validated ({why}): validate it with `pki validate send --email {email}` and `pki validate confirm`, or add its domain to [validation] enterprise_domains if the organisation controls it")]
    MailboxNotValidated {
        /// The address.
        email: cerdb::EmailAddress,
        /// Why not.
        why: String,
    },
    /// The validation value could not be mailed (nothing of it is kept).
    #[error("the validation value could not be mailed to {email}: {why}")]
    ValidationMail {
        /// The address.
        email: cerdb::EmailAddress,
        /// What the relay said.
        why: String,
    },
    /// A mailed validation value was refused.
    #[error("mailbox validation refused: {0}")]
    ValidationValue(String),
    /// Storage failed or refused.
    #[error(transparent)]
    Storage(#[from] cerdb::Error),
    /// Key custody failed or refused.
    #[error(transparent)]
    Hsm(#[from] hsm_sim::Error),
}
