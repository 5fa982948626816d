//! Identifier newtypes shared by every crate: parsed once, normalised on construction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A certificate serial number: the unsigned magnitude, big-endian, without leading zero bytes.
///
/// Parsed from hex in any case, with or without `0x`, colons, spaces and leading zeros;
/// displayed as upper-case hex of even length (as `openssl x509 -serial` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Serial(Vec<u8>);

impl Serial {
    /// The largest serial RFC 5280 §4.1.2.2 allows: 20 octets of DER content.
    pub const MAX_LEN: usize = 20;

    /// From the magnitude bytes (leading zeros are stripped). Zero and over-long values are refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let start = bytes.iter().take_while(|b| **b == 0).count();
        let mag = &bytes[start..];
        if mag.is_empty() {
            return Err(Error::InvalidSerial("serial number zero is not allowed".into()));
        }
        // Content octets of the DER INTEGER include a 0x00 pad when the top bit is set.
        let der_len = mag.len() + usize::from(mag[0] & 0x80 != 0);
        if der_len > Self::MAX_LEN {
            return Err(Error::InvalidSerial(format!(
                "serial number is {der_len} octets; at most {} are allowed",
                Self::MAX_LEN
            )));
        }
        Ok(Serial(mag.to_vec()))
    }

    /// The magnitude bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The content octets of the DER INTEGER (a 0x00 pad when the top bit is set).
    pub fn to_der_content(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        if self.0[0] & 0x80 != 0 {
            v.push(0);
        }
        v.extend_from_slice(&self.0);
        v
    }

    /// Number of significant bits.
    pub fn bits(&self) -> usize {
        self.0.len() * 8 - self.0[0].leading_zeros() as usize
    }
}

impl FromStr for Serial {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim();
        let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
        let digits: String = t.chars().filter(|c| *c != ':' && *c != ' ').collect();
        if digits.is_empty() {
            return Err(Error::InvalidSerial(format!("{s:?} is empty; expected hex digits")));
        }
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(Error::InvalidSerial(format!("{s:?} contains {bad:?}; expected hex digits")));
        }
        let trimmed = digits.trim_start_matches('0');
        if trimmed.len() > 2 * Self::MAX_LEN + 2 {
            return Err(Error::InvalidSerial(format!(
                "{s:?} is too long; serial numbers have at most {} octets",
                Self::MAX_LEN
            )));
        }
        let padded = if trimmed.len() % 2 == 1 { format!("0{trimmed}") } else { trimmed.to_string() };
        let bytes = hex::decode(&padded).map_err(|e| Error::InvalidSerial(format!("{s:?}: {e}")))?;
        Serial::from_bytes(&bytes)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(&self.0))
    }
}

impl TryFrom<String> for Serial {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Serial> for String {
    fn from(s: Serial) -> String {
        s.to_string()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 fingerprint of a certificate's DER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `der`.
    pub fn of(der: &[u8]) -> Self {
        Fingerprint(sha256(der))
    }
}

/// SHA-256 of a subject public key: of the contents of the SubjectPublicKeyInfo's
/// subjectPublicKey BIT STRING (RFC 7093 §2, method 1, untruncated) — the same for a key in a CSR
/// and in the certificates issued for it. Identifies keys reported compromised.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// The digest of a public key's subjectPublicKey contents.
    pub fn of(subject_public_key: &[u8]) -> Self {
        KeyDigest(sha256(subject_public_key))
    }
}

impl fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let digits: String = s.trim().chars().filter(|c| *c != ':').collect();
        if digits.len() != 64 {
            return Err(Error::InvalidFingerprint(format!(
                "expected 64 hex digits (SHA-256), got {}",
                digits.len()
            )));
        }
        let bytes = hex::decode(&digits).map_err(|_| Error::InvalidFingerprint("not hex".into()))?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        Ok(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> String {
        f.to_string()
    }
}

/// A mailbox address, validated and normalised on construction: the domain is lower-cased, the
/// local part kept as given. Lookups are case-insensitive through [`EmailAddress::lookup_key`].
///
/// Accepted: ASCII dot-atom local parts (RFC 5322 §3.2.3) of at most 64 octets and DNS host names
/// of at least two labels; quoted local parts, address literals and internationalised addresses
/// are refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";

impl EmailAddress {
    /// The normalised address (domain lower-cased).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The whole address lower-cased: the key of the e-mail index and what clients hash for a
    /// hashed lookup.
    pub fn lookup_key(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// Hex SHA-256 of [`EmailAddress::lookup_key`].
    pub fn lookup_hash(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, self.lookup_key().as_bytes()))
    }
}

impl FromStr for EmailAddress {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        // The address is quoted in the error; one too long to be an address only in part.
        let bad = |why: &str| match s.char_indices().nth(80) {
            Some((cut, _)) => {
                Error::InvalidEmail(format!("{:?}… ({} characters): {why}", &s[..cut], s.chars().count()))
            }
            None => Error::InvalidEmail(format!("{s:?}: {why}")),
        };
        if s.len() > 254 {
            return Err(bad("longer than 254 characters"));
        }
        if !s.is_ascii() {
            return Err(bad("internationalised addresses are not supported"));
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| bad("no '@'"))?;
        if local.is_empty() {
            return Err(bad("empty local part"));
        }
        if local.len() > 64 {
            return Err(bad("local part longer than 64 characters"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(bad("misplaced '.' in the local part"));
        }
        if let Some(c) =
            local.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || ATEXT_SPECIALS.contains(*c)))
        {
            return Err(bad(&format!("character {c:?} is not allowed in the local part")));
        }
        let domain = domain.to_ascii_lowercase();
        if domain.is_empty() {
            return Err(bad("empty domain"));
        }
        if domain.len() > 253 {
            return Err(bad("domain longer than 253 characters"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(bad("the domain needs at least two labels"));
        }
        for l in &labels {
            if l.is_empty() || l.len() > 63 {
                return Err(bad("a domain label is empty or longer than 63 characters"));
            }
            if l.starts_with('-') || l.ends_with('-') {
                return Err(bad("a domain label starts or ends with '-'"));
            }
            if let Some(c) = l.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
                return Err(bad(&format!("character {c:?} is not allowed in the domain")));
            }
        }
        Ok(EmailAddress(format!("{local}@{domain}")))
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<EmailAddress> for String {
    fn from(e: EmailAddress) -> String {
        e.0
    }
}

/// What a subscriber certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    /// Signing (digitalSignature, nonRepudiation).
    Signing,
    /// Encryption (keyEncipherment for RSA, keyAgreement for EC).
    Encryption,
}

impl Usage {
    /// The name on the command line and in the API.
    pub fn name(self) -> &'static str {
        match self {
            Usage::Signing => "signing",
            Usage::Encryption => "encryption",
        }
    }
}

impl FromStr for Usage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "signing" | "sign" => Ok(Usage::Signing),
            "encryption" | "encrypt" => Ok(Usage::Encryption),
            _ => Err(Error::InvalidUsage(s.to_string())),
        }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every kind of certificate the CA stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertKind {
    /// A subscriber's signing certificate.
    Signing,
    /// A subscriber's encryption certificate.
    Encryption,
    /// The self-signed root.
    RootCa,
    /// The S/MIME issuing CA.
    IssuingCa,
    /// The delegated OCSP signer.
    OcspSigner,
    /// The timestamp authority.
    Tsa,
    /// The console's TLS server certificate.
    TlsServer,
    /// The audit log's checkpoint signer.
    AuditSigner,
}

impl CertKind {
    /// Stable one-byte code used in index keys.
    pub fn code(self) -> u8 {
        match self {
            CertKind::Signing => 1,
            CertKind::Encryption => 2,
            CertKind::RootCa => 3,
            CertKind::IssuingCa => 4,
            CertKind::OcspSigner => 5,
            CertKind::Tsa => 6,
            CertKind::TlsServer => 7,
            CertKind::AuditSigner => 8,
        }
    }

    /// The name shown to people.
    pub fn name(self) -> &'static str {
        match self {
            CertKind::Signing => "signing",
            CertKind::Encryption => "encryption",
            CertKind::RootCa => "root-ca",
            CertKind::IssuingCa => "issuing-ca",
            CertKind::OcspSigner => "ocsp-signer",
            CertKind::Tsa => "tsa",
            CertKind::TlsServer => "tls-server",
            CertKind::AuditSigner => "audit-signer",
        }
    }
}

impl From<Usage> for CertKind {
    fn from(u: Usage) -> Self {
        match u {
            Usage::Signing => CertKind::Signing,
            Usage::Encryption => CertKind::Encryption,
        }
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The two certificate authorities of the hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaId {
    /// The root CA.
    Root,
    /// The S/MIME issuing CA.
    Issuing,
}

impl CaId {
    /// The name used in URLs and storage keys.
    pub fn name(self) -> &'static str {
        match self {
            CaId::Root => "root",
            CaId::Issuing => "issuing",
        }
    }
}

impl fmt::Display for CaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// RFC 5280 §5.3.1 CRLReason. `certificateHold` and `removeFromCRL` are not offered: the S/MIME
/// Baseline Requirements forbid suspension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// unspecified (0)
    Unspecified,
    /// keyCompromise (1)
    KeyCompromise,
    /// cACompromise (2)
    CaCompromise,
    /// affiliationChanged (3)
    AffiliationChanged,
    /// superseded (4)
    Superseded,
    /// cessationOfOperation (5)
    CessationOfOperation,
    /// privilegeWithdrawn (9)
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// Every reason, in code order.
    pub const ALL: [RevocationReason; 7] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// The RFC 5280 code.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::PrivilegeWithdrawn => 9,
        }
    }

    /// The RFC 5280 name.
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }
}

impl FromStr for RevocationReason {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let norm: String =
            s.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_ascii_lowercase();
        if let Some(r) = Self::ALL.iter().find(|r| r.name().to_ascii_lowercase() == norm) {
            return Ok(*r);
        }
        if norm == "certificatehold" || norm == "removefromcrl" {
            return Err(Error::InvalidReason(format!(
                "{s}: suspension is not allowed by the S/MIME Baseline Requirements"
            )));
        }
        Err(Error::InvalidReason(format!(
            "{s:?}: expected one of {}",
            Self::ALL.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
        )))
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_parse_in_every_spelling() {
        let want = Serial::from_bytes(&[0x0a, 0xbc, 0xde]).expect("serial");
        for s in ["0ABCDE", "abcde", "0xABCDE", "0X0a:bc:de", "00:0a:BC:de", " 000abcde "] {
            assert_eq!(s.parse::<Serial>().expect(s), want, "{s}");
        }
        assert_eq!(want.to_string(), "0ABCDE");
        for bad in ["", "0x", "0", "00:00", "xyz", "12g4", &"f".repeat(41)] {
            assert!(bad.parse::<Serial>().is_err(), "{bad:?} accepted");
        }
        // 20 content octets with a pad: 19 magnitude octets with the top bit set is the limit.
        assert!("ff".repeat(19).parse::<Serial>().is_ok());
        assert!("ff".repeat(20).parse::<Serial>().is_err());
        assert!("7f".repeat(20).parse::<Serial>().is_ok());
    }

    #[test]
    fn der_content_is_positive() {
        let s = Serial::from_bytes(&[0x80, 1]).expect("serial");
        assert_eq!(s.to_der_content(), vec![0, 0x80, 1]);
        assert_eq!(s.bits(), 16);
    }

    #[test]
    fn email_normalisation_and_refusals() {
        let e: EmailAddress = "Alice.Smith@EXAMPLE.Com".parse().expect("valid");
        assert_eq!(e.as_str(), "Alice.Smith@example.com");
        assert_eq!(e.lookup_key(), "alice.smith@example.com");
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a..b@example.com",
            ".a@example.com",
            "a b@example.com",
            "a@exa_mple.com",
            "a@-x.com",
            "müller@example.com",
            "\"q\"@example.com",
            "a@[127.0.0.1]",
        ] {
            assert!(bad.parse::<EmailAddress>().is_err(), "{bad:?} accepted");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(long_local.parse::<EmailAddress>().is_err());
        // An address of thousands of characters is quoted only in part in its error.
        let huge = format!("{}@example.com", "a".repeat(9000));
        let e = huge.parse::<EmailAddress>().unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "invalid e-mail address {:?}… (9012 characters): longer than 254 characters",
                "a".repeat(80)
            )
        );
        let e = "al ice@example.com".parse::<EmailAddress>().unwrap_err().to_string();
        assert!(e.starts_with("invalid e-mail address \"al ice@example.com\": "), "{e}");
    }

    #[test]
    fn reasons_by_name() {
        assert_eq!("keyCompromise".parse::<RevocationReason>().expect("r"), RevocationReason::KeyCompromise);
        assert_eq!("key_compromise".parse::<RevocationReason>().expect("r"), RevocationReason::KeyCompromise);
        assert_eq!("SUPERSEDED".parse::<RevocationReason>().expect("r"), RevocationReason::Superseded);
        let e = "certificateHold".parse::<RevocationReason>().unwrap_err().to_string();
        assert!(e.contains("suspension"), "{e}");
        assert!("nonsense".parse::<RevocationReason>().is_err());
    }

    #[test]
    fn fingerprints() {
        let f = Fingerprint::of(b"x");
        assert_eq!(f.to_string().parse::<Fingerprint>().expect("fp"), f);
        assert!("abcd".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }
}
