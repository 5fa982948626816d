//! What is stored for a certificate, a CRL and an audit entry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{CaId, CertKind, EmailAddress, Fingerprint, RevocationReason, Serial};

/// When and why a certificate was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The revocation time.
    pub at: DateTime<Utc>,
    /// The RFC 5280 reason.
    pub reason: RevocationReason,
}

/// One issued certificate with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// Serial number.
    pub serial: Serial,
    /// SHA-256 of the DER.
    pub fingerprint: Fingerprint,
    /// What the certificate is.
    pub kind: CertKind,
    /// The mailbox, for subscriber certificates.
    pub email: Option<EmailAddress>,
    /// The subject DN as text.
    pub subject: String,
    /// The CA that signed it (the root signs itself).
    pub issuer: CaId,
    /// notBefore.
    pub not_before: DateTime<Utc>,
    /// notAfter.
    pub not_after: DateTime<Utc>,
    /// When the CA issued it.
    pub issued_at: DateTime<Utc>,
    /// The subject key's type, as text (`rsa2048`, `p256`, ...).
    pub key_type: String,
    /// The key-store handle of an escrowed private key.
    pub escrow_key: Option<String>,
    /// Set once revoked.
    pub revocation: Option<Revocation>,
    /// The certificate, DER. Stored apart from the metadata.
    #[serde(skip)]
    pub der: Vec<u8>,
}

/// The status of a certificate at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertStatus {
    /// Within its validity period and not revoked.
    Valid,
    /// Revoked.
    Revoked,
    /// Past notAfter.
    Expired,
    /// Before notBefore.
    NotYetValid,
}

impl CertStatus {
    /// The name shown to people.
    pub fn name(self) -> &'static str {
        match self {
            CertStatus::Valid => "valid",
            CertStatus::Revoked => "revoked",
            CertStatus::Expired => "expired",
            CertStatus::NotYetValid => "not_yet_valid",
        }
    }
}

impl CertRecord {
    /// Whether the certificate's subjectPublicKey bytes occur in its DER (a cheap check that a
    /// stored certificate belongs to a key).
    pub fn der_matches_key(&self, raw_public_key: &[u8]) -> bool {
        !raw_public_key.is_empty() && self.der.windows(raw_public_key.len()).any(|w| w == raw_public_key)
    }

    /// The status at `now`: revocation first, then the validity period.
    pub fn status_at(&self, now: DateTime<Utc>) -> CertStatus {
        if self.revocation.is_some() {
            CertStatus::Revoked
        } else if now > self.not_after {
            CertStatus::Expired
        } else if now < self.not_before {
            CertStatus::NotYetValid
        } else {
            CertStatus::Valid
        }
    }
}

/// The current CRL of one CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlRecord {
    /// Which CA.
    pub ca: CaId,
    /// cRLNumber.
    pub number: u64,
    /// thisUpdate.
    pub this_update: DateTime<Utc>,
    /// nextUpdate.
    pub next_update: DateTime<Utc>,
    /// The CRL, DER.
    #[serde(with = "hex_bytes")]
    pub der: Vec<u8>,
}

/// One audit-log entry as stored: its sequence number and its encoded bytes. The hash chain over
/// them belongs to `ca-core`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// The encoded entry.
    pub bytes: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
