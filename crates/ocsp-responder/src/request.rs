//! Decoding and checking an `OCSPRequest` (RFC 6960 §4.1).
//!
//! The ASN.1 types are RustCrypto's (`x509_ocsp::OcspRequest`, `TbsRequest`, `Request`,
//! `CertId`), each the Rust type of its production:
//!
//! ```text
//! OCSPRequest ::= SEQUENCE {
//!     tbsRequest              TBSRequest,
//!     optionalSignature   [0] EXPLICIT Signature OPTIONAL }
//!
//! TBSRequest ::= SEQUENCE {
//!     version             [0] EXPLICIT Version DEFAULT v1,
//!     requestorName       [1] EXPLICIT GeneralName OPTIONAL,
//!     requestList             SEQUENCE OF Request,
//!     requestExtensions   [2] EXPLICIT Extensions OPTIONAL }
//!
//! Request ::= SEQUENCE {
//!     reqCert                     CertID,
//!     singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
//! ```
//!
//! A request signature is not required and, when present, not checked (RFC 5019 §2.1.2: clients
//! do not sign). The nonce is RFC 9654's:
//!
//! ```text
//! id-pkix-ocsp-nonce OBJECT IDENTIFIER ::= { id-pkix-ocsp 2 }
//! Nonce ::= OCTET STRING(SIZE(1..128))
//! ```

use std::collections::HashSet;

use der::asn1::{ObjectIdentifier, OctetString};
use der::Decode;
use x509_cert::ext::Extension;
use x509_ocsp::{CertId, OcspRequest};

use crate::Error;

/// id-pkix-ocsp-nonce (RFC 6960 §4.4.1, RFC 9654).
pub(crate) const OID_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
/// id-pkix-ocsp-response, acceptable response types (RFC 6960 §4.4.3).
const OID_ACCEPTABLE_RESPONSES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.4");
/// id-pkix-ocsp-basic (RFC 6960 §4.2.1).
const OID_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-pkix-ocsp-service-locator (RFC 6960 §4.4.6).
const OID_SERVICE_LOCATOR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.7");
/// id-pkix-ocsp-pref-sig-algs (RFC 6960 §4.4.7).
const OID_PREF_SIG_ALGS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.8");

/// The shortest and longest nonce accepted (RFC 9654 §2.1).
pub(crate) const NONCE_MIN: usize = 1;
/// See [`NONCE_MIN`].
pub(crate) const NONCE_MAX: usize = 128;

/// What the responder needs from a request.
#[derive(Debug)]
pub(crate) struct ParsedRequest {
    /// The CertIDs, in request order.
    pub(crate) cert_ids: Vec<CertId>,
    /// The request's nonce extension, to echo unchanged.
    pub(crate) nonce: Option<Extension>,
}

/// Decodes `der` and checks what RFC 6960 and RFC 9654 ask of a request.
pub(crate) fn parse(der: &[u8], max_len: usize) -> Result<ParsedRequest, Error> {
    if der.len() > max_len {
        return Err(Error::RequestTooLarge { len: der.len(), max: max_len });
    }
    if der.is_empty() {
        return Err(Error::Malformed("empty request".into()));
    }
    let req = OcspRequest::from_der(der).map_err(|e| Error::Malformed(e.to_string()))?;
    let tbs = req.tbs_request;
    if tbs.request_list.is_empty() {
        return Err(Error::Malformed("requestList is empty".into()));
    }
    let mut nonce = None;
    for ext in distinct(tbs.request_extensions.as_deref().unwrap_or_default())? {
        match ext.extn_id {
            OID_NONCE => {
                check_nonce(&ext.extn_value)?;
                nonce = Some(Extension { critical: false, ..ext.clone() });
            }
            OID_ACCEPTABLE_RESPONSES => {
                let types = Vec::<ObjectIdentifier>::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| Error::Malformed(format!("acceptable responses: {e}")))?;
                if !types.contains(&OID_OCSP_BASIC) {
                    // RFC 6960 §4.4.3: basic is the one type a responder must support; a client
                    // refusing it cannot be answered.
                    return Err(Error::Malformed("the client does not accept id-pkix-ocsp-basic".into()));
                }
            }
            OID_PREF_SIG_ALGS => {}
            _ if ext.critical => {
                return Err(Error::UnsupportedCriticalExtension { oid: ext.extn_id.to_string() })
            }
            _ => {}
        }
    }
    let mut cert_ids = Vec::with_capacity(tbs.request_list.len());
    for r in tbs.request_list {
        for ext in distinct(r.single_request_extensions.as_deref().unwrap_or_default())? {
            if ext.critical && ext.extn_id != OID_SERVICE_LOCATOR {
                return Err(Error::UnsupportedCriticalExtension { oid: ext.extn_id.to_string() });
            }
        }
        cert_ids.push(r.req_cert);
    }
    Ok(ParsedRequest { cert_ids, nonce })
}

/// The extensions, refused when one OID appears twice (RFC 5280 §4.2).
fn distinct(exts: &[Extension]) -> Result<&[Extension], Error> {
    let mut seen = HashSet::new();
    for e in exts {
        if !seen.insert(&e.extn_id) {
            return Err(Error::Malformed(format!("extension {} appears twice", e.extn_id)));
        }
    }
    Ok(exts)
}

/// The nonce's length must be 1 to 128 octets. RFC 9654 puts the DER of an OCTET STRING into
/// extnValue; older clients put the bare nonce there, which is accepted and measured as it is.
pub(crate) fn nonce_len(extn_value: &OctetString) -> usize {
    match OctetString::from_der(extn_value.as_bytes()) {
        Ok(inner) => inner.as_bytes().len(),
        Err(_) => extn_value.as_bytes().len(),
    }
}

fn check_nonce(extn_value: &OctetString) -> Result<(), Error> {
    let len = nonce_len(extn_value);
    if (NONCE_MIN..=NONCE_MAX).contains(&len) {
        Ok(())
    } else {
        Err(Error::NonceLength { len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(n: usize) -> OctetString {
        let inner = OctetString::new(vec![0xab; n]).expect("octets");
        OctetString::new(der::Encode::to_der(&inner).expect("der")).expect("octets")
    }

    #[test]
    fn nonce_lengths_follow_rfc_9654() {
        for ok in [1, 16, 32, 128] {
            check_nonce(&wrapped(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [0, 129, 1000] {
            assert!(matches!(check_nonce(&wrapped(bad)), Err(Error::NonceLength { len }) if len == bad));
        }
        // A bare (pre-RFC 8954) nonce is measured as it stands.
        let bare = OctetString::new(vec![0x01; 20]).expect("octets");
        assert_eq!(nonce_len(&bare), 20);
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        assert!(matches!(parse(&[], 10), Err(Error::Malformed(_))));
        assert!(matches!(parse(&[0x30, 0x00], 10), Err(Error::Malformed(_))));
        assert!(matches!(parse(&[0u8; 11], 10), Err(Error::RequestTooLarge { len: 11, max: 10 })));
    }
}
