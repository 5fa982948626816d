//! Key types, purposes and handles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The key algorithms and sizes this key store can generate and use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// ECDSA / ECDH on NIST P-256.
    P256,
    /// ECDSA / ECDH on NIST P-384.
    P384,
    /// Ed25519 (signing only).
    Ed25519,
}

impl KeyType {
    /// Every key type, in the order they are documented.
    pub const ALL: [KeyType; 6] = [
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::P256,
        KeyType::P384,
        KeyType::Ed25519,
    ];

    /// The name used in configuration files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa3072 => "rsa3072",
            KeyType::Rsa4096 => "rsa4096",
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Ed25519 => "ed25519",
        }
    }

    /// The signature scheme a key of this type signs with.
    pub fn signature_scheme(self) -> SignatureScheme {
        match self {
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => SignatureScheme::RsaPkcs1Sha256,
            KeyType::P256 => SignatureScheme::EcdsaP256Sha256,
            KeyType::P384 => SignatureScheme::EcdsaP384Sha384,
            KeyType::Ed25519 => SignatureScheme::Ed25519,
        }
    }

    /// True for the RSA key types.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    pub(crate) fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyType::Rsa2048 => Some(2048),
            KeyType::Rsa3072 => Some(3072),
            KeyType::Rsa4096 => Some(4096),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.to_ascii_lowercase().replace(['-', '_'], "");
        let t = match lower.as_str() {
            "rsa2048" => KeyType::Rsa2048,
            "rsa3072" => KeyType::Rsa3072,
            "rsa4096" => KeyType::Rsa4096,
            "p256" | "ecdsap256" | "secp256r1" | "prime256v1" => KeyType::P256,
            "p384" | "ecdsap384" | "secp384r1" => KeyType::P384,
            "ed25519" => KeyType::Ed25519,
            _ => return Err(Error::UnknownKeyType(s.to_string())),
        };
        Ok(t)
    }
}

/// How a key signs: the digest and padding are fixed per key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (sha256WithRSAEncryption).
    RsaPkcs1Sha256,
    /// ECDSA with SHA-256 on P-256, DER-encoded signature (ecdsa-with-SHA256).
    EcdsaP256Sha256,
    /// ECDSA with SHA-384 on P-384, DER-encoded signature (ecdsa-with-SHA384).
    EcdsaP384Sha384,
    /// Ed25519 (id-Ed25519), pure.
    Ed25519,
}

/// What a key is for; fixed at generation and bound to the stored ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPurpose {
    /// A CA key (root or issuing): signs certificates and CRLs. Never exported.
    CaSigning,
    /// The delegated OCSP signer. Never exported.
    OcspSigning,
    /// The timestamp authority. Never exported.
    TsaSigning,
    /// A TLS server key for the console. Never exported.
    TlsServer,
    /// The audit log's checkpoint signer. Never exported.
    AuditSigning,
    /// A subscriber's encryption key, generated here and escrowed. Leaves only wrapped (PKCS#12).
    Escrow,
    /// A sender identity of sealed mail (`pki mail sender add`): signs S/MIME messages for the
    /// bank's own addresses. Never exported.
    MailSigning,
}

impl KeyPurpose {
    /// The name stored with the key.
    pub fn name(self) -> &'static str {
        match self {
            KeyPurpose::CaSigning => "ca_signing",
            KeyPurpose::OcspSigning => "ocsp_signing",
            KeyPurpose::TsaSigning => "tsa_signing",
            KeyPurpose::TlsServer => "tls_server",
            KeyPurpose::AuditSigning => "audit_signing",
            KeyPurpose::Escrow => "escrow",
            KeyPurpose::MailSigning => "mail_signing",
        }
    }

    /// Whether keys of this purpose sign inside the key store.
    pub fn may_sign(self) -> bool {
        !matches!(self, KeyPurpose::Escrow)
    }

    /// Whether keys of this purpose may leave the key store, wrapped.
    pub fn may_export_wrapped(self) -> bool {
        matches!(self, KeyPurpose::Escrow)
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The label a key is addressed by, such as `ca/issuing` or `escrow/<serial>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyHandle(String);

impl KeyHandle {
    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyHandle {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_' | b'/')
            })
            && !s.starts_with('/')
            && !s.contains("..");
        if ok {
            Ok(KeyHandle(s.to_string()))
        } else {
            Err(Error::InvalidHandle(s.to_string()))
        }
    }
}

impl TryFrom<String> for KeyHandle {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<KeyHandle> for String {
    fn from(h: KeyHandle) -> String {
        h.0
    }
}

impl fmt::Display for KeyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_names_round_trip() {
        for t in KeyType::ALL {
            assert_eq!(t.name().parse::<KeyType>().expect("parses"), t);
        }
        assert_eq!("P-256".parse::<KeyType>().expect("parses"), KeyType::P256);
        assert!("p521".parse::<KeyType>().is_err());
    }

    #[test]
    fn handles_are_checked() {
        assert!("ca/issuing".parse::<KeyHandle>().is_ok());
        for bad in ["", "/abs", "a/../b", "UPPER", "sp ace", &"x".repeat(129)] {
            assert!(bad.parse::<KeyHandle>().is_err(), "{bad:?} accepted");
        }
    }
}
