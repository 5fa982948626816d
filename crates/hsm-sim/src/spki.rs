//! SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) of the key types ring hands back as raw public keys,
//! encoded through the `spki` crate.
//!
//! ```text
//! SubjectPublicKeyInfo ::= SEQUENCE {
//!     algorithm         AlgorithmIdentifier,
//!     subjectPublicKey  BIT STRING }
//! ```

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier};
use der::Encode;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use crate::KeyType;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(crate) const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The SPKI DER for `raw`, the subjectPublicKey contents (an RSAPublicKey for RSA, the
/// uncompressed point for EC, the 32 bytes for Ed25519); why not, when it cannot be encoded.
pub(crate) fn encode(key_type: KeyType, raw: &[u8]) -> Result<Vec<u8>, String> {
    let (oid, parameters) = match key_type {
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => (RSA_ENCRYPTION, Some(AnyRef::NULL)),
        KeyType::P256 => (EC_PUBLIC_KEY, Some(AnyRef::from(&P256))),
        KeyType::P384 => (EC_PUBLIC_KEY, Some(AnyRef::from(&P384))),
        KeyType::Ed25519 => (ED25519, None),
    };
    let spki = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef { oid, parameters },
        subject_public_key: BitStringRef::from_bytes(raw).map_err(|e| format!("public key: {e}"))?,
    };
    spki.to_der().map_err(|e| format!("public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_are_encoded_in_long_form() {
        let raw = vec![7u8; 300];
        let der = encode(KeyType::Rsa2048, &raw).unwrap();
        // AlgorithmIdentifier: 2 + 11 + 2 = 15 octets; BIT STRING: 4 + 301 = 305 octets.
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x40]);
        assert_eq!(der.len(), 4 + 0x140);
    }

    /// The same octets as ring's own SPKI-less keys get from OpenSSL: an Ed25519 key and a P-256
    /// key's algorithm identifier, as RFC 8410 and RFC 5480 lay them out.
    #[test]
    fn known_encodings() {
        let ed = encode(KeyType::Ed25519, &[0x11; 32]).unwrap();
        assert_eq!(&ed[..12], &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);
        let p256 = encode(KeyType::P256, &[0x04; 65]).unwrap();
        assert_eq!(
            &p256[..27],
            &[
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
                0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04
            ]
        );
    }
}
