//! SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) encoding for the key types ring hands back as raw
//! public keys. Hand-written DER, kept to this one module.
//!
//! ```text
//! SubjectPublicKeyInfo ::= SEQUENCE {
//!     algorithm         AlgorithmIdentifier,
//!     subjectPublicKey  BIT STRING }
//! ```

use crate::KeyType;

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// Builds the SPKI DER for `raw`, the subjectPublicKey contents (an RSAPublicKey for RSA, the
/// uncompressed point for EC, the 32 bytes for Ed25519).
pub(crate) fn encode(key_type: KeyType, raw: &[u8]) -> Vec<u8> {
    let mut alg = Vec::new();
    match key_type {
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            alg.extend(tlv(0x06, OID_RSA_ENCRYPTION));
            alg.extend([0x05, 0x00]);
        }
        KeyType::P256 => {
            alg.extend(tlv(0x06, OID_EC_PUBLIC_KEY));
            alg.extend(tlv(0x06, OID_P256));
        }
        KeyType::P384 => {
            alg.extend(tlv(0x06, OID_EC_PUBLIC_KEY));
            alg.extend(tlv(0x06, OID_P384));
        }
        KeyType::Ed25519 => alg.extend(tlv(0x06, OID_ED25519)),
    }
    let mut bits = Vec::with_capacity(raw.len() + 1);
    bits.push(0);
    bits.extend_from_slice(raw);
    let mut body = tlv(0x30, &alg);
    body.extend(tlv(0x03, &bits));
    tlv(0x30, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_are_encoded_in_long_form() {
        let raw = vec![7u8; 300];
        let der = encode(KeyType::Rsa2048, &raw);
        // AlgorithmIdentifier: 2 + 11 + 2 = 15 octets; BIT STRING: 4 + 301 = 305 octets.
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x40]);
        assert_eq!(der.len(), 4 + 0x140);
    }
}
