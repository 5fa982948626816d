//! DER helpers shared by the benchmark examples: OCSP requests as `bench/ocsp/ocsp.lua` builds
//! them (one SHA-1 CertID, optionally a nonce).
#![allow(dead_code)] // each example includes this module and uses only some of its helpers

/// A DER TLV (definite length, up to 65,535 octets of content).
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    match content.len() {
        n if n < 0x80 => v.push(n as u8),
        n if n < 0x100 => v.extend_from_slice(&[0x81, n as u8]),
        n => v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
    v.extend_from_slice(content);
    v
}

/// The DER SHA-1 CertID of `serial` (DER INTEGER content octets) under the issuing CA.
pub fn cert_id(issuing_der: &[u8], serial: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY as SHA1};
    let ca = x509_cert::Certificate::from_der(issuing_der).expect("issuing CA certificate");
    let name = ca.tbs_certificate.subject.to_der().expect("name");
    let key = ca.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    let alg = tlv(0x30, &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00]);
    let mut body = alg;
    body.extend(tlv(0x04, digest(&SHA1, &name).as_ref()));
    body.extend(tlv(0x04, digest(&SHA1, key).as_ref()));
    body.extend(tlv(0x02, serial));
    tlv(0x30, &body)
}

/// A DER OCSPRequest with one CertID and, if given, a nonce extension.
pub fn request(id: &[u8], nonce: Option<&[u8]>) -> Vec<u8> {
    let mut tbs = tlv(0x30, &tlv(0x30, id));
    if let Some(n) = nonce {
        let oid = [0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
        let mut ext = oid.to_vec();
        ext.extend(tlv(0x04, &tlv(0x04, n)));
        tbs.extend(tlv(0xa2, &tlv(0x30, &tlv(0x30, &ext))));
    }
    tlv(0x30, &tlv(0x30, &tbs))
}
