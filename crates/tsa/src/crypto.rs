//! Digests and signature verification (ring), keyed by algorithm identifiers.

use der::asn1::AnyRef;
use der::oid::ObjectIdentifier;
use der::{Tag, Tagged};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::oids;

/// A hash algorithm of message imprints, CMS digests and ESSCertIDv2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            oids::ID_SHA1 => Some(HashAlg::Sha1),
            oids::ID_SHA256 => Some(HashAlg::Sha256),
            oids::ID_SHA384 => Some(HashAlg::Sha384),
            oids::ID_SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// From an AlgorithmIdentifier whose parameters are absent or NULL (RFC 5754 §2).
    pub(crate) fn from_alg_id(alg: &AlgorithmIdentifierOwned) -> Option<Self> {
        if !params_absent_or_null(alg) {
            return None;
        }
        HashAlg::from_oid(&alg.oid)
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            HashAlg::Sha1 => oids::ID_SHA1,
            HashAlg::Sha256 => oids::ID_SHA256,
            HashAlg::Sha384 => oids::ID_SHA384,
            HashAlg::Sha512 => oids::ID_SHA512,
        }
    }

    /// The OID in dotted form, without formatting it (the token record holds it per token).
    pub(crate) fn oid_text(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "1.3.14.3.2.26",
            HashAlg::Sha256 => "2.16.840.1.101.3.4.2.1",
            HashAlg::Sha384 => "2.16.840.1.101.3.4.2.2",
            HashAlg::Sha512 => "2.16.840.1.101.3.4.2.3",
        }
    }

    /// The identifier with absent parameters (RFC 5754 §2: SHOULD be absent).
    pub(crate) fn alg_id(self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned { oid: self.oid(), parameters: None }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA-1",
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha384 => "SHA-384",
            HashAlg::Sha512 => "SHA-512",
        }
    }

    pub(crate) fn output_len(self) -> usize {
        self.ring().output_len()
    }

    pub(crate) fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            HashAlg::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &ring::digest::SHA256,
            HashAlg::Sha384 => &ring::digest::SHA384,
            HashAlg::Sha512 => &ring::digest::SHA512,
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        ring::digest::digest(self.ring(), data).as_ref().to_vec()
    }
}

/// Every imprint algorithm at once, fed piece by piece: data streamed from a client is hashed
/// as it arrives and never held whole (the hash the token names is picked afterwards).
#[derive(Clone)]
pub struct DataDigests {
    contexts: [(HashAlg, ring::digest::Context); 4],
    len: u64,
}

impl std::fmt::Debug for DataDigests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDigests").field("len", &self.len).finish_non_exhaustive()
    }
}

impl Default for DataDigests {
    fn default() -> Self {
        let ctx = |h: HashAlg| (h, ring::digest::Context::new(h.ring()));
        DataDigests {
            contexts: [ctx(HashAlg::Sha1), ctx(HashAlg::Sha256), ctx(HashAlg::Sha384), ctx(HashAlg::Sha512)],
            len: 0,
        }
    }
}

impl DataDigests {
    /// Adds the next piece of the data.
    pub fn update(&mut self, piece: &[u8]) {
        for (_, c) in &mut self.contexts {
            c.update(piece);
        }
        self.len += piece.len() as u64;
    }

    /// The number of bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every digest of what was fed, each with its algorithm's OID in dotted form: data hashed
    /// where it is, to be checked by a verifier elsewhere ([`crate::Timestamped::Digests`]).
    pub fn values(&self) -> Vec<(String, Vec<u8>)> {
        self.contexts
            .iter()
            .map(|(h, c)| (h.oid_text().to_string(), c.clone().finish().as_ref().to_vec()))
            .collect()
    }

    /// The digest of everything fed, with `alg`.
    pub(crate) fn digest(&self, alg: HashAlg) -> Vec<u8> {
        self.contexts
            .iter()
            .find(|(h, _)| *h == alg)
            .map(|(_, c)| c.clone().finish().as_ref().to_vec())
            // Every HashAlg has its context above.
            .unwrap_or_default()
    }
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

pub(crate) fn params_absent_or_null(alg: &AlgorithmIdentifierOwned) -> bool {
    match &alg.parameters {
        None => true,
        Some(p) => p.tag() == Tag::Null && p.value().is_empty(),
    }
}

fn curve_of(spki: &SubjectPublicKeyInfoOwned) -> Result<ObjectIdentifier, String> {
    let params = spki.algorithm.parameters.as_ref().ok_or("EC key without curve parameters")?;
    AnyRef::from(params)
        .decode_as::<ObjectIdentifier>()
        .map_err(|_| "EC key with unsupported parameters".into())
}

/// Verifies `sig` over `msg` with the key of `spki`, under `sig_alg`. `digest` is the CMS
/// digestAlgorithm, needed when `sig_alg` names only the key type (rsaEncryption, id-ecPublicKey).
pub(crate) fn verify_signature(
    sig_alg: &AlgorithmIdentifierOwned,
    digest: Option<HashAlg>,
    spki: &SubjectPublicKeyInfoOwned,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    let key_alg = spki.algorithm.oid;
    let rsa = |h: Option<HashAlg>| -> Result<&'static dyn VerificationAlgorithm, String> {
        if key_alg != oids::RSA_ENCRYPTION {
            return Err("RSA signature algorithm with a non-RSA key".into());
        }
        match h {
            Some(HashAlg::Sha256) => Ok(&signature::RSA_PKCS1_2048_8192_SHA256),
            Some(HashAlg::Sha384) => Ok(&signature::RSA_PKCS1_2048_8192_SHA384),
            Some(HashAlg::Sha512) => Ok(&signature::RSA_PKCS1_2048_8192_SHA512),
            Some(HashAlg::Sha1) | None => {
                Err("RSA signatures with SHA-1 or no digest are not accepted".into())
            }
        }
    };
    let ecdsa = |h: Option<HashAlg>| -> Result<&'static dyn VerificationAlgorithm, String> {
        if key_alg != oids::ID_EC_PUBLIC_KEY {
            return Err("ECDSA signature algorithm with a non-EC key".into());
        }
        match (curve_of(spki)?, h) {
            (oids::SECP256R1, Some(HashAlg::Sha256)) => Ok(&signature::ECDSA_P256_SHA256_ASN1),
            (oids::SECP256R1, Some(HashAlg::Sha384)) => Ok(&signature::ECDSA_P256_SHA384_ASN1),
            (oids::SECP384R1, Some(HashAlg::Sha256)) => Ok(&signature::ECDSA_P384_SHA256_ASN1),
            (oids::SECP384R1, Some(HashAlg::Sha384)) => Ok(&signature::ECDSA_P384_SHA384_ASN1),
            (curve, h) => Err(format!("ECDSA on curve {curve} with {h:?} is not supported")),
        }
    };
    let alg: &'static dyn VerificationAlgorithm = match sig_alg.oid {
        oids::RSA_ENCRYPTION => rsa(digest)?,
        oids::SHA256_WITH_RSA => rsa(Some(HashAlg::Sha256))?,
        oids::SHA384_WITH_RSA => rsa(Some(HashAlg::Sha384))?,
        oids::SHA512_WITH_RSA => rsa(Some(HashAlg::Sha512))?,
        oids::ID_EC_PUBLIC_KEY => ecdsa(digest)?,
        oids::ECDSA_WITH_SHA256 => ecdsa(Some(HashAlg::Sha256))?,
        oids::ECDSA_WITH_SHA384 => ecdsa(Some(HashAlg::Sha384))?,
        oids::ECDSA_WITH_SHA512 => return Err("ECDSA with SHA-512 is not supported".into()),
        oids::ID_ED25519 => {
            if key_alg != oids::ID_ED25519 {
                return Err("Ed25519 signature with a non-Ed25519 key".into());
            }
            &signature::ED25519
        }
        other => return Err(format!("signature algorithm {other} is not supported")),
    };
    let raw = spki.subject_public_key.raw_bytes();
    UnparsedPublicKey::new(alg, raw).verify(msg, sig).map_err(|_| "the signature does not verify".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_text_is_the_dotted_oid() {
        for h in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            assert_eq!(h.oid_text(), h.oid().to_string(), "{}", h.name());
        }
    }
}
