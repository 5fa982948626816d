//! PKCS#10 (RFC 2986) checks: parse, refuse weak digests, verify the signature (proof of
//! possession), check the key and the addresses the request names.

use cerdb::{EmailAddress, Usage};
use x509_parser::prelude::*;

use crate::keys::SubjectKey;
use crate::Error;

/// The largest CSR accepted, PEM or DER.
pub const MAX_CSR_BYTES: usize = 64 * 1024;
/// The largest RSA modulus accepted.
pub const MAX_RSA_BITS: usize = 8192;

/// A subject key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKeyKind {
    /// RSA with this modulus size.
    Rsa {
        /// Modulus bits.
        bits: usize,
    },
    /// EC P-256.
    P256,
    /// EC P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl SubjectKeyKind {
    /// Short name (`rsa2048`, `p256`, ...).
    pub fn name(self) -> String {
        match self {
            SubjectKeyKind::Rsa { bits } => format!("rsa{bits}"),
            SubjectKeyKind::P256 => "p256".into(),
            SubjectKeyKind::P384 => "p384".into(),
            SubjectKeyKind::Ed25519 => "ed25519".into(),
        }
    }

    /// Whether this is an RSA key.
    pub fn is_rsa(self) -> bool {
        matches!(self, SubjectKeyKind::Rsa { .. })
    }

    pub(crate) fn from_key_type(kt: hsm_sim::KeyType) -> Self {
        use hsm_sim::KeyType as K;
        match kt {
            K::Rsa2048 => SubjectKeyKind::Rsa { bits: 2048 },
            K::Rsa3072 => SubjectKeyKind::Rsa { bits: 3072 },
            K::Rsa4096 => SubjectKeyKind::Rsa { bits: 4096 },
            K::P256 => SubjectKeyKind::P256,
            K::P384 => SubjectKeyKind::P384,
            K::Ed25519 => SubjectKeyKind::Ed25519,
        }
    }
}

/// A CSR that passed every check.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    pub(crate) key: SubjectKey,
    /// The subject key's type.
    pub kind: SubjectKeyKind,
}

const WEAK_SIGNATURES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption"),
    ("1.3.14.3.2.29", "sha1WithRSAEncryption (OIW)"),
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
    ("1.2.840.10040.4.3", "dsa-with-SHA1"),
    ("1.2.840.113549.1.1.4", "md5WithRSAEncryption"),
    ("1.2.840.113549.1.1.2", "md2WithRSAEncryption"),
];

/// Accepts PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or DER.
pub fn decode_csr(input: &[u8]) -> Result<Vec<u8>, Error> {
    if input.len() > MAX_CSR_BYTES {
        return Err(Error::CsrParse(format!(
            "the CSR is {} bytes; at most {MAX_CSR_BYTES} are accepted",
            input.len()
        )));
    }
    if input.is_empty() {
        return Err(Error::CsrParse("the CSR is empty".into()));
    }
    let trimmed = input.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let p = ::pem::parse(trimmed).map_err(|e| Error::CsrParse(format!("bad PEM: {e}")))?;
        if p.tag() != "CERTIFICATE REQUEST" && p.tag() != "NEW CERTIFICATE REQUEST" {
            return Err(Error::CsrParse(format!("PEM block is {:?}, not a CERTIFICATE REQUEST", p.tag())));
        }
        Ok(p.into_contents())
    } else {
        Ok(input.to_vec())
    }
}

/// Runs every check of a CSR for a certificate of `usage` for `email`.
pub fn check_csr(
    input: &[u8],
    email: &EmailAddress,
    usage: Usage,
    min_rsa_bits: usize,
) -> Result<CheckedCsr, Error> {
    let der = decode_csr(input)?;
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| Error::CsrParse(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::CsrParse(format!("{} bytes of trailing data after the request", rest.len())));
    }
    let sig_oid = csr.signature_algorithm.algorithm.to_id_string();
    if let Some((_, name)) = WEAK_SIGNATURES.iter().find(|(o, _)| *o == sig_oid) {
        return Err(Error::CsrWeakSignature { algorithm: (*name).to_string() });
    }

    // The key is checked before the signature: a key the CA does not certify (RSA under the
    // minimum, P-521, Ed448, DSA) cannot be verified by ring either, and the refusal must name
    // the key, not a failed proof of possession.
    let spki = &csr.certification_request_info.subject_pki;
    let kind = classify_key(spki, min_rsa_bits)?;
    let raw = spki.subject_public_key.data.to_vec();
    csr.verify_signature().map_err(|e| Error::CsrSignatureInvalid(e.to_string()))?;
    check_key_for_usage(kind, usage)?;

    // Every address the request names must be the one the certificate is for.
    let wanted = email.lookup_key();
    let subject = &csr.certification_request_info.subject;
    let mut named: Vec<String> = Vec::new();
    for attr in subject.iter_email().chain(subject.iter_common_name()) {
        if let Ok(s) = attr.as_str() {
            if s.contains('@') {
                named.push(s.to_string());
            }
        }
    }
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for gn in &san.general_names {
                    if let GeneralName::RFC822Name(s) = gn {
                        named.push((*s).to_string());
                    }
                }
            }
        }
    }
    if let Some(other) = named.iter().find(|n| n.to_ascii_lowercase() != wanted) {
        return Err(Error::CsrEmailMismatch { csr: other.clone(), requested: email.to_string() });
    }

    Ok(CheckedCsr { key: SubjectKey { raw, alg: alg_of(kind) }, kind })
}

/// The type of a subject public key, refused (naming it) unless the CA certifies it.
fn classify_key(spki: &SubjectPublicKeyInfo<'_>, min_rsa_bits: usize) -> Result<SubjectKeyKind, Error> {
    let key_oid = spki.algorithm.algorithm.to_id_string();
    Ok(match key_oid.as_str() {
        "1.2.840.113549.1.1.1" => {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                    check_rsa_numbers(rsa.modulus, rsa.exponent)?
                }
                _ => return Err(Error::CsrParse("the RSA public key cannot be decoded".into())),
            };
            if bits < min_rsa_bits {
                return Err(Error::CsrKeyTooSmall { bits, min: min_rsa_bits });
            }
            if bits > MAX_RSA_BITS {
                return Err(Error::CsrUnsupportedKey(format!("RSA-{bits} (at most {MAX_RSA_BITS} bits)")));
            }
            SubjectKeyKind::Rsa { bits }
        }
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => SubjectKeyKind::P256,
                "1.3.132.0.34" => SubjectKeyKind::P384,
                "1.3.132.0.35" => return Err(Error::CsrUnsupportedKey("EC P-521".into())),
                "1.3.132.0.10" => return Err(Error::CsrUnsupportedKey("EC secp256k1".into())),
                other => return Err(Error::CsrUnsupportedKey(format!("EC on curve {other}"))),
            }
        }
        "1.3.101.112" => SubjectKeyKind::Ed25519,
        "1.3.101.113" => return Err(Error::CsrUnsupportedKey("Ed448".into())),
        "1.2.840.10040.4.1" => return Err(Error::CsrUnsupportedKey("DSA".into())),
        other => return Err(Error::CsrUnsupportedKey(format!("algorithm {other}"))),
    })
}

/// The number of bits of a big-endian unsigned integer, leading zero bytes ignored.
fn bit_length(be: &[u8]) -> usize {
    let start = be.iter().take_while(|b| **b == 0).count();
    match be.get(start) {
        Some(first) => 8 * (be.len() - start - 1) + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

/// The RSA rules of the S/MIME Baseline Requirements (6.1.6) that the numbers of a key must meet
/// before its signature is checked: the modulus odd, the public exponent odd and at least 3 — and
/// at most 2^33 − 1, the largest ring verifies. Returns the modulus size in bits (counted, not
/// rounded to bytes).
fn check_rsa_numbers(modulus: &[u8], exponent: &[u8]) -> Result<usize, Error> {
    let bad = |why: String| Err(Error::CsrRsaKey(why));
    if modulus.last().is_none_or(|b| b & 1 == 0) {
        return bad("its modulus is even".into());
    }
    let e_bits = bit_length(exponent);
    if e_bits > 33 {
        return bad(format!(
            "its public exponent has {e_bits} bits; at most 2^33 - 1 is supported (65537 is usual)"
        ));
    }
    let e = exponent.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if e < 3 || e % 2 == 0 {
        return bad(format!(
            "its public exponent {e} is not allowed: it must be odd and at least 3 (65537 is usual)"
        ));
    }
    Ok(bit_length(modulus))
}

/// Checks a subject public key (SPKI, DER) for a certificate of `usage`, without a CSR: for
/// callers that generated the key pair themselves, so that possession needs no proof (the
/// synthetic subscribers of `pki cerdb load-test-data`). The key rules are those of
/// [`check_csr`].
pub fn check_own_key(spki_der: &[u8], usage: Usage, min_rsa_bits: usize) -> Result<CheckedCsr, Error> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| Error::CsrParse(format!("not a SubjectPublicKeyInfo: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::CsrParse(format!("{} bytes of trailing data after the public key", rest.len())));
    }
    let kind = classify_key(&spki, min_rsa_bits)?;
    check_key_for_usage(kind, usage)?;
    Ok(CheckedCsr { key: SubjectKey { raw: spki.subject_public_key.data.to_vec(), alg: alg_of(kind) }, kind })
}

fn alg_of(kind: SubjectKeyKind) -> &'static rcgen::SignatureAlgorithm {
    match kind {
        SubjectKeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        SubjectKeyKind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        SubjectKeyKind::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        SubjectKeyKind::Ed25519 => &rcgen::PKCS_ED25519,
    }
}

/// Refuses key types that cannot serve the usage.
pub(crate) fn check_key_for_usage(kind: SubjectKeyKind, usage: Usage) -> Result<(), Error> {
    if usage == Usage::Encryption && kind == SubjectKeyKind::Ed25519 {
        return Err(Error::KeyUnsuitable {
            key: kind.name(),
            usage,
            why: "Ed25519 keys can only sign; use RSA, P-256 or P-384".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_lengths_are_counted_not_rounded_to_bytes() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f, 0xff]), 15);
        let mut m2047 = vec![0x7f; 256];
        assert_eq!(bit_length(&m2047), 2047);
        m2047.insert(0, 0);
        assert_eq!(bit_length(&m2047), 2047);
    }

    #[test]
    fn rsa_numbers_need_an_odd_modulus_and_an_odd_exponent_of_3_to_2_pow_33_minus_1() {
        let mut n = vec![0u8];
        n.extend([0xc5; 256]);
        let ok = |e: &[u8]| check_rsa_numbers(&n, e).expect("accepted");
        assert_eq!(ok(&[1, 0, 1]), 2048);
        assert_eq!(ok(&[3]), 2048);
        assert_eq!(ok(&[0, 3]), 2048, "a leading zero byte");
        assert_eq!(ok(&[1, 0xff, 0xff, 0xff, 0xff]), 2048, "2^33 - 1");
        let refused = |m: &[u8], e: &[u8]| check_rsa_numbers(m, e).expect_err("refused").to_string();
        for (e, words) in [
            (&[1][..], "exponent 1 "),
            (&[][..], "exponent 0 "),
            (&[2][..], "exponent 2 "),
            (&[1, 0, 0][..], "exponent 65536 "),
            (&[2, 0, 0, 0, 1][..], "34 bits"),
            (&[0xff; 40][..], "320 bits"),
        ] {
            let msg = refused(&n, e);
            assert!(msg.contains("CSR rejected") && msg.contains(words), "{msg}");
        }
        let mut even = n.clone();
        *even.last_mut().expect("bytes") = 0xc4;
        assert!(refused(&even, &[1, 0, 1]).contains("modulus is even"));
        assert!(refused(&[], &[1, 0, 1]).contains("modulus is even"));
    }
}
