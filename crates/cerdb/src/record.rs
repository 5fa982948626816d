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

    /// Its status view.
    pub fn state(&self) -> CertState {
        CertState {
            issuer: self.issuer,
            not_before: self.not_before,
            not_after: self.not_after,
            revocation: self.revocation.clone(),
        }
    }

    /// The status at `now`: revocation first, then the validity period.
    pub fn status_at(&self, now: DateTime<Utc>) -> CertStatus {
        status_at(self.revocation.is_some(), self.not_before, self.not_after, now)
    }
}

/// What a status check needs of a certificate, read from its stored metadata without decoding
/// the rest (subject, address, fingerprint...): the OCSP responder and the directory's `exists`
/// ask for this on every request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CertState {
    /// The CA that signed it.
    pub issuer: CaId,
    /// notBefore.
    #[serde(deserialize_with = "rfc3339::deserialize")]
    pub not_before: DateTime<Utc>,
    /// notAfter.
    #[serde(deserialize_with = "rfc3339::deserialize")]
    pub not_after: DateTime<Utc>,
    /// Set once revoked.
    pub revocation: Option<Revocation>,
}

impl CertState {
    /// The status at `now`, as [`CertRecord::status_at`].
    pub fn status_at(&self, now: DateTime<Utc>) -> CertStatus {
        status_at(self.revocation.is_some(), self.not_before, self.not_after, now)
    }
}

fn status_at(
    revoked: bool,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> CertStatus {
    if revoked {
        CertStatus::Revoked
    } else if now > not_after {
        CertStatus::Expired
    } else if now < not_before {
        CertStatus::NotYetValid
    } else {
        CertStatus::Valid
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

/// The times of stored metadata, as serde writes a `DateTime<Utc>` (`2026-11-22T15:00:00Z`, with
/// up to nine fraction digits), read without chrono's general format parser, which is most of
/// what decoding a [`CertState`] costs; anything else goes to chrono.
mod rfc3339 {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde::de::{Deserializer, Error, Visitor};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DateTime<Utc>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 time")
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<Self::Value, E> {
                match parse_utc(s) {
                    Some(t) => Ok(t),
                    None => s.parse::<DateTime<Utc>>().map_err(E::custom),
                }
            }
        }
        d.deserialize_str(V)
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, or `None`.
    pub(super) fn parse_utc(s: &str) -> Option<DateTime<Utc>> {
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
        };
        // Nothing may follow the `Z`: one to nine fraction digits make 22 to 30 characters.
        let nanos = match (b[19], b.len()) {
            (b'Z', 20) => 0,
            (b'.', n) if (22..=30).contains(&n) && b[n - 1] == b'Z' => {
                let digits = n - 21;
                num(20..n - 1)? * 10u32.pow(9 - digits as u32)
            }
            _ => return None,
        };
        NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?
            .and_hms_nano_opt(num(11..13)?, num(14..16)?, num(17..19)?, nanos)
            .map(|t| t.and_utc())
    }
}

/// Bytes as hex text in JSON.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    #[test]
    fn the_quick_time_parser_agrees_with_chrono() {
        let base = Utc.with_ymd_and_hms(2026, 11, 22, 15, 4, 5).single().expect("time");
        for t in [
            base,
            base + Duration::nanoseconds(1),
            base + Duration::milliseconds(120),
            base + Duration::microseconds(999_999),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).single().expect("time"),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().expect("time"),
        ] {
            // What serde writes for a DateTime<Utc>.
            let written = serde_json::to_string(&t).expect("json");
            let s = written.trim_matches('"');
            assert_eq!(rfc3339::parse_utc(s), Some(t), "{s}");
        }
        for other in [
            "2026-11-22T15:04:05+01:00",
            "2026-11-22 15:04:05Z",
            "2026-11-22T15:04:05.Z",
            "2026-13-01T00:00:00Z",
            "2026-11-22T15:04:05.1234567890Z",
            "x026-11-22T15:04:05Z",
        ] {
            assert_eq!(rfc3339::parse_utc(other), None, "{other}");
        }
    }

    #[test]
    fn a_state_is_read_from_the_stored_record() {
        let nb =
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("time") + Duration::milliseconds(7);
        let der = vec![1, 2, 3];
        let mut rec = CertRecord {
            serial: Serial::from_bytes(&[0x42; 16]).expect("serial"),
            fingerprint: Fingerprint::of(&der),
            kind: CertKind::Encryption,
            email: Some("alice@example.com".parse().expect("email")),
            subject: "CN=alice@example.com, O=\"Bank, \\\"Quoted\\\"\"".into(),
            issuer: CaId::Issuing,
            not_before: nb,
            not_after: nb + Duration::days(365),
            issued_at: nb,
            key_type: "p256".into(),
            escrow_key: Some("escrow-1".into()),
            revocation: None,
            der,
        };
        for revocation in
            [None, Some(Revocation { at: nb + Duration::days(3), reason: RevocationReason::KeyCompromise })]
        {
            rec.revocation = revocation;
            let state: CertState =
                serde_json::from_slice(&serde_json::to_vec(&rec).expect("json")).expect("state");
            assert_eq!(state, rec.state());
            for now in [nb - Duration::seconds(1), nb, nb + Duration::days(400)] {
                assert_eq!(state.status_at(now), rec.status_at(now));
            }
        }
    }
}
