//! The DER a PKCS#11 token speaks besides SubjectPublicKeyInfo ([`crate::spki`]), through the
//! `der` crate and the `pkcs1`/`pkcs8` types the `rsa` crate carries:
//!
//! - `CKA_EC_PARAMS`: the curve's OID;
//! - `CKA_EC_POINT`: the point as an OCTET STRING (some tokens give it bare);
//! - RSAPublicKey (RFC 8017 §A.1.1) from and to `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`;
//! - the ECDSA signature, raw `r || s` from `C_Sign`, as the `Ecdsa-Sig-Value` X.509 wants
//!   (RFC 5480 §2.2);
//! - the private scalar of an EC (RFC 5915) or Ed25519 (RFC 8410) PKCS#8, for a token that takes
//!   the key's value rather than the PKCS#8.

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Decode, Encode, Sequence};
use rsa::pkcs1::RsaPublicKey;
use rsa::pkcs8::PrivateKeyInfo;

use crate::spki::{ED25519, P256, P384};
use crate::KeyType;

/// `CKA_EC_PARAMS` of an EC or Edwards key type (none for RSA).
pub(crate) fn ec_params(key_type: KeyType) -> Option<Vec<u8>> {
    let oid = match key_type {
        KeyType::P256 => P256,
        KeyType::P384 => P384,
        KeyType::Ed25519 => ED25519,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => return None,
    };
    oid.to_der().ok()
}

/// The key type whose `CKA_EC_PARAMS` these are, if this CA uses it.
pub(crate) fn curve_of(params: &[u8]) -> Option<KeyType> {
    match ObjectIdentifier::from_der(params).ok()? {
        oid if oid == P256 => Some(KeyType::P256),
        oid if oid == P384 => Some(KeyType::P384),
        oid if oid == ED25519 => Some(KeyType::Ed25519),
        _ => None,
    }
}

/// `CKA_EC_POINT` for a raw point: its DER OCTET STRING.
pub(crate) fn ec_point(raw: &[u8]) -> Option<Vec<u8>> {
    OctetStringRef::new(raw).ok()?.to_der().ok()
}

/// The raw point of a `CKA_EC_POINT`: the content of the OCTET STRING it should be, or the value
/// itself where a token gives it bare.
pub(crate) fn raw_point(attribute: &[u8]) -> Vec<u8> {
    match OctetStringRef::from_der(attribute) {
        Ok(inner) => inner.as_bytes().to_vec(),
        Err(_) => attribute.to_vec(),
    }
}

/// The RSAPublicKey DER of a modulus and public exponent (unsigned big-endian).
pub(crate) fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Option<Vec<u8>> {
    RsaPublicKey { modulus: UintRef::new(modulus).ok()?, public_exponent: UintRef::new(exponent).ok()? }
        .to_der()
        .ok()
}

/// The modulus and public exponent (unsigned big-endian, no leading zero) of an RSAPublicKey.
pub(crate) fn rsa_public_parts(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let key = RsaPublicKey::from_der(der).ok()?;
    Some((key.modulus.as_bytes().to_vec(), key.public_exponent.as_bytes().to_vec()))
}

/// `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
#[derive(Sequence)]
struct EcdsaSigValue<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// An ECDSA signature as `C_Sign` gives it, `r || s` (each half of it), as DER.
pub(crate) fn ecdsa_signature(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    EcdsaSigValue { r: UintRef::new(r).ok()?, s: UintRef::new(s).ok()? }.to_der().ok()
}

/// `ECPrivateKey` (RFC 5915 §3).
#[derive(Sequence)]
struct EcPrivateKey<'a> {
    version: u8,
    private_key: OctetStringRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    parameters: Option<AnyRef<'a>>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    public_key: Option<BitStringRef<'a>>,
}

/// The private scalar of an EC or Ed25519 PKCS#8 (`CurvePrivateKey ::= OCTET STRING` for
/// Ed25519); `None` for anything else, truncated or not DER.
pub(crate) fn private_scalar(key_type: KeyType, pkcs8: &[u8]) -> Option<Vec<u8>> {
    let info = PrivateKeyInfo::from_der(pkcs8).ok()?;
    let scalar = match key_type {
        KeyType::Ed25519 => OctetStringRef::from_der(info.private_key).ok()?,
        KeyType::P256 | KeyType::P384 => {
            let key = EcPrivateKey::from_der(info.private_key).ok()?;
            if key.version != 1 {
                return None;
            }
            key.private_key
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => return None,
    };
    Some(scalar.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_scalars_come_out_of_pkcs8_and_garbage_truncated_or_oversized_input_is_refused() {
        let rng = ring::rand::SystemRandom::new();
        for (kt, len) in [(KeyType::P256, 32), (KeyType::P384, 48), (KeyType::Ed25519, 32)] {
            let pkcs8 = crate::generate_pkcs8(kt).expect("pkcs8");
            assert_eq!(private_scalar(kt, &pkcs8).expect("scalar").len(), len, "{kt}");
            for cut in 0..pkcs8.len() {
                assert!(private_scalar(kt, &pkcs8[..cut]).is_none(), "{kt} cut at {cut}");
            }
        }
        let mut big = vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff];
        big.extend(vec![0u8; 64]);
        assert!(private_scalar(KeyType::P256, &big).is_none());
        let mut noise = [0u8; 256];
        for _ in 0..200 {
            ring::rand::SecureRandom::fill(&rng, &mut noise).expect("random");
            assert!(private_scalar(KeyType::P384, &noise).is_none());
            let _ = raw_point(&noise);
            let _ = rsa_public_parts(&noise);
            let _ = curve_of(&noise);
        }
    }

    #[test]
    fn ecdsa_raw_signatures_become_der_with_minimal_integers() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[63] = 1; // s is 1
        let d = ecdsa_signature(&raw).expect("der");
        assert_eq!(&d[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(&d[d.len() - 3..], &[0x02, 0x01, 0x01]);
        assert!(ecdsa_signature(&[]).is_none());
        assert!(ecdsa_signature(&[1, 2, 3]).is_none());
    }

    #[test]
    fn token_attributes_have_their_known_encodings() {
        assert_eq!(
            ec_params(KeyType::P256).expect("p256"),
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        );
        assert_eq!(ec_params(KeyType::P384).expect("p384"), [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]);
        assert_eq!(ec_params(KeyType::Ed25519).expect("ed25519"), [0x06, 0x03, 0x2b, 0x65, 0x70]);
        assert_eq!(ec_params(KeyType::Rsa2048), None);
        for kt in [KeyType::P256, KeyType::P384, KeyType::Ed25519] {
            assert_eq!(curve_of(&ec_params(kt).expect("params")), Some(kt));
        }
        assert_eq!(curve_of(&[0x06, 0x03, 0x2b, 0x65, 0x71]), None, "Ed448 is not used here");
        assert_eq!(ec_point(&[4, 1, 2]).expect("point"), [0x04, 0x03, 4, 1, 2]);
        assert_eq!(raw_point(&[0x04, 0x03, 4, 1, 2]), [4, 1, 2]);
        assert_eq!(raw_point(&[4, 1, 2, 3]), [4, 1, 2, 3], "a bare point stays as it is");
        // RSAPublicKey: a modulus with its top bit set gets its leading zero, and comes back without.
        let n = [0xc1u8; 256];
        let der = rsa_public_key(&n, &[1, 0, 1]).expect("rsa");
        assert_eq!(&der[..9], &[0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01, 0x00]);
        assert_eq!(&der[der.len() - 5..], &[0x02, 0x03, 1, 0, 1]);
        assert_eq!(rsa_public_parts(&der), Some((n.to_vec(), vec![1, 0, 1])));
        let mut padded = vec![0u8];
        padded.extend(n);
        assert_eq!(
            rsa_public_key(&padded, &[1, 0, 1]).as_deref(),
            Some(&der[..]),
            "leading zero of the token's modulus"
        );
        assert_eq!(rsa_public_parts(&der[..der.len() - 1]), None);
    }
}
