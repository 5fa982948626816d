//! Parsing and checking a `TimeStampReq` (RFC 3161 §2.4.1).

use der::asn1::Int;
use der::oid::ObjectIdentifier;
use der::Decode;

use crate::asn1::{MessageImprint, TimeStampReq};
use crate::crypto::{params_absent_or_null, HashAlg};
use crate::{Error, TsaConfig};

/// A request that passed every check: what goes into the TSTInfo.
#[derive(Debug, Clone)]
pub(crate) struct CheckedRequest {
    pub(crate) imprint: MessageImprint,
    pub(crate) hash: HashAlg,
    pub(crate) policy: ObjectIdentifier,
    pub(crate) nonce: Option<Int>,
    pub(crate) cert_req: bool,
}

impl CheckedRequest {
    /// A request from this process for the SHA-256 digest `digest` in `policy`, with the
    /// certificates and no nonce: nothing to check.
    pub(crate) fn sha256(digest: &[u8; 32], policy: ObjectIdentifier) -> Self {
        CheckedRequest {
            imprint: sha256_imprint(digest),
            hash: HashAlg::Sha256,
            policy,
            nonce: None,
            cert_req: true,
        }
    }
}

/// The message imprint of a SHA-256 digest: the algorithm without parameters, and the digest.
fn sha256_imprint(digest: &[u8; 32]) -> MessageImprint {
    MessageImprint {
        hash_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
            oid: HashAlg::Sha256.oid(),
            parameters: None,
        },
        hashed_message: der::asn1::OctetString::new(digest.to_vec())
            .expect("invariant: 32 octets are a valid OCTET STRING"),
    }
}

/// Decodes and checks a request, in this order: DER (`badDataFormat`), extensions
/// (`unacceptedExtension`), hash algorithm (`badAlg`), digest length (`badDataFormat`), policy
/// (`unacceptedPolicy`).
pub(crate) fn check(der: &[u8], config: &TsaConfig) -> Result<CheckedRequest, Error> {
    if der.is_empty() {
        return Err(Error::BadDataFormat("the request is empty".into()));
    }
    let req = TimeStampReq::from_der(der).map_err(|e| Error::BadDataFormat(e.to_string()))?;
    if let Some(ext) = req.extensions.as_ref().and_then(|e| e.first()) {
        return Err(Error::UnacceptedExtension(ext.extn_id.to_string()));
    }
    // An empty `[0] Extensions` is not a valid SEQUENCE SIZE (1..MAX), but carries nothing.
    let alg = &req.message_imprint.hash_algorithm;
    let hash = match HashAlg::from_oid(&alg.oid) {
        Some(HashAlg::Sha1) if !config.allow_sha1 => return Err(Error::Sha1Refused),
        Some(h) => h,
        None => return Err(Error::HashAlgorithmRefused(alg.oid.to_string())),
    };
    if !params_absent_or_null(alg) {
        return Err(Error::HashParameters { oid: alg.oid.to_string() });
    }
    let actual = req.message_imprint.hashed_message.as_bytes().len();
    if actual != hash.output_len() {
        return Err(Error::ImprintLength { algorithm: hash.name(), expected: hash.output_len(), actual });
    }
    let policy = match req.req_policy {
        None => config.default_policy,
        Some(p) if p == config.default_policy || config.accepted_policies.contains(&p) => p,
        Some(p) => return Err(Error::UnacceptedPolicy(p.to_string())),
    };
    Ok(CheckedRequest {
        imprint: req.message_imprint,
        hash,
        policy,
        nonce: req.nonce,
        cert_req: req.cert_req,
    })
}

/// The client side: a `TimeStampReq` for the SHA-256 digest of some data, with `nonce` (big-endian,
/// unsigned) and certReq true, as `pki ts stamp` sends it.
pub fn sha256_query(digest: &[u8; 32], nonce: &[u8]) -> Result<Vec<u8>, Error> {
    use der::Encode;
    // The nonce read as an unsigned number, in DER's minimal form: no leading zero octets (one
    // octet for zero), and a zero octet in front when the first has its high bit set. Random
    // octets starting with 0x00 were sent as they were — not DER, and refused by the TSA.
    let first = nonce.iter().position(|b| *b != 0).unwrap_or(nonce.len().saturating_sub(1));
    let mut nonce = nonce.get(first..).unwrap_or_default().to_vec();
    if nonce.is_empty() {
        nonce.push(0);
    }
    if nonce[0] & 0x80 != 0 {
        nonce.insert(0, 0);
    }
    let req = TimeStampReq {
        version: crate::asn1::TspVersion::V1,
        message_imprint: sha256_imprint(digest),
        req_policy: None,
        nonce: Some(Int::new(&nonce).map_err(|e| Error::BadDataFormat(e.to_string()))?),
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(|e| Error::BadDataFormat(e.to_string()))
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn nonces_with_leading_zero_octets_or_zero_make_der_queries() {
        for nonce in [
            vec![0, 0x12, 3, 4, 5, 6, 7, 8],
            vec![0, 0, 0x80, 1, 2, 3, 4, 5],
            vec![0; 8],
            vec![0x80],
            vec![0x7f, 0, 0, 0],
        ] {
            let q = sha256_query(&[7u8; 32], &nonce).expect("query");
            check(&q, &TsaConfig::default()).unwrap_or_else(|e| panic!("nonce {nonce:02x?}: {e}"));
        }
    }

    #[test]
    fn the_client_query_passes_the_server_checks() {
        let q = sha256_query(&[7u8; 32], &[0xff, 1, 2, 3, 4, 5, 6, 7]).expect("query");
        let checked = check(&q, &TsaConfig::default()).expect("accepted");
        assert!(checked.cert_req);
        assert_eq!(checked.imprint.hashed_message.as_bytes(), &[7u8; 32]);
        assert_eq!(checked.nonce.expect("nonce").as_bytes(), &[0, 0xff, 1, 2, 3, 4, 5, 6, 7]);
    }
}
