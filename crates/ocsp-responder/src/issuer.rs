//! The issuer this responder serves, as the CertIDs of requests name it (RFC 6960 §4.1.1).
//!
//! ```text
//! CertID ::= SEQUENCE {
//!     hashAlgorithm       AlgorithmIdentifier,
//!     issuerNameHash      OCTET STRING, -- Hash of issuer's DN
//!     issuerKeyHash       OCTET STRING, -- Hash of issuer's public key
//!     serialNumber        CertificateSerialNumber }
//! ```

use der::asn1::{Null, ObjectIdentifier, OctetString};
use der::{Any, Encode, Tag, Tagged};
use ring::digest;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::CertId;

use crate::Error;

/// A hash algorithm a CertID may be computed with. RFC 5019 §2.1.1 mandates SHA-1; RFC 9919
/// adds SHA-256; SHA-384 and SHA-512 cost nothing more to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CertIdHash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

impl CertIdHash {
    pub(crate) const ALL: [CertIdHash; 4] =
        [CertIdHash::Sha1, CertIdHash::Sha256, CertIdHash::Sha384, CertIdHash::Sha512];

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            CertIdHash::Sha1 => OID_SHA1,
            CertIdHash::Sha256 => OID_SHA256,
            CertIdHash::Sha384 => OID_SHA384,
            CertIdHash::Sha512 => OID_SHA512,
        }
    }

    fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.oid() == *oid)
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            CertIdHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            CertIdHash::Sha256 => &digest::SHA256,
            CertIdHash::Sha384 => &digest::SHA384,
            CertIdHash::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
}

/// The issuing CA's name and key hashes under every [`CertIdHash`].
#[derive(Debug, Clone)]
pub(crate) struct ServedIssuer {
    hashes: Vec<(CertIdHash, Vec<u8>, Vec<u8>)>,
}

impl ServedIssuer {
    /// Hashes the subject DN (its DER) and the subjectPublicKey BIT STRING contents.
    pub(crate) fn new(ca: &Certificate) -> Result<Self, Error> {
        let name = ca.tbs_certificate.subject.to_der().map_err(Error::encoding)?;
        let key = ca.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
        let hashes = CertIdHash::ALL.into_iter().map(|h| (h, h.digest(&name), h.digest(key))).collect();
        Ok(ServedIssuer { hashes })
    }

    /// Which hash the CertID uses, if it names this issuer.
    ///
    /// Parameters of the hash AlgorithmIdentifier may be absent or NULL (both are seen in the
    /// wild); anything else is malformed. An unknown hash, or hashes that do not match, mean an
    /// issuer this responder does not serve.
    pub(crate) fn match_cert_id(&self, id: &CertId) -> Result<CertIdHash, Error> {
        let alg = &id.hash_algorithm;
        if let Some(p) = &alg.parameters {
            if !(p.tag() == Tag::Null && p.value().is_empty()) {
                return Err(Error::Malformed("CertID hash algorithm has parameters other than NULL".into()));
            }
        }
        let not_served = || Error::IssuerNotServed { hash_algorithm: alg.oid.to_string() };
        let hash = CertIdHash::from_oid(&alg.oid).ok_or_else(not_served)?;
        let found = self.hashes.iter().any(|(h, name, key)| {
            *h == hash && id.issuer_name_hash.as_bytes() == name && id.issuer_key_hash.as_bytes() == key
        });
        if found {
            Ok(hash)
        } else {
            Err(not_served())
        }
    }

    /// The CertID a client builds for `serial` with `hash` (parameters NULL, as OpenSSL writes
    /// them).
    pub(crate) fn cert_id(&self, hash: CertIdHash, serial: &cerdb::Serial) -> Result<CertId, Error> {
        let (_, name, key) = self
            .hashes
            .iter()
            .find(|(h, _, _)| *h == hash)
            .expect("invariant: ServedIssuer::new computes every CertIdHash");
        Ok(CertId {
            hash_algorithm: AlgorithmIdentifierOwned { oid: hash.oid(), parameters: Some(Any::from(Null)) },
            issuer_name_hash: OctetString::new(name.clone()).map_err(Error::encoding)?,
            issuer_key_hash: OctetString::new(key.clone()).map_err(Error::encoding)?,
            serial_number: SerialNumber::new(&serial.to_der_content()).map_err(Error::encoding)?,
        })
    }
}

/// The serial a CertID names, when it is one this CA could have issued: positive, non-zero, at
/// most 20 octets. Anything else cannot be in cerdb, and is answered `unknown`.
pub(crate) fn serial_of(id: &CertId) -> Option<cerdb::Serial> {
    let content = id.serial_number.as_bytes();
    let first = *content.first()?;
    if first & 0x80 != 0 {
        return None;
    }
    cerdb::Serial::from_bytes(content).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CertID whose serialNumber has these INTEGER content octets.
    fn id(content: &[u8]) -> CertId {
        let mut der = vec![0x02, content.len() as u8];
        der.extend_from_slice(content);
        CertId {
            hash_algorithm: AlgorithmIdentifierOwned { oid: OID_SHA1, parameters: None },
            issuer_name_hash: OctetString::new(vec![0; 20]).expect("octets"),
            issuer_key_hash: OctetString::new(vec![0; 20]).expect("octets"),
            serial_number: der::Decode::from_der(&der).expect("serial"),
        }
    }

    #[test]
    fn serials_this_ca_cannot_have_issued_are_none() {
        assert_eq!(serial_of(&id(&[0x01, 0x02])).expect("positive").as_bytes(), &[1, 2]);
        assert_eq!(serial_of(&id(&[0x00, 0x80])).expect("padded").as_bytes(), &[0x80]);
        assert!(serial_of(&id(&[0x80])).is_none(), "negative");
        assert!(serial_of(&id(&[0x00])).is_none(), "zero");
    }

    #[test]
    fn digests_have_their_lengths() {
        let lens: Vec<usize> = CertIdHash::ALL.iter().map(|h| h.digest(b"x").len()).collect();
        assert_eq!(lens, vec![20, 32, 48, 64]);
        for h in CertIdHash::ALL {
            assert_eq!(CertIdHash::from_oid(&h.oid()), Some(h));
        }
    }
}
