//! The few X.509 extension values rcgen has no builder for, encoded by hand (RFC 5280 §4.2).
//! Kept to this one module.

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
    let mut out = Vec::with_capacity(content.len() + 4);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// DER of an OBJECT IDENTIFIER given its arcs.
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut enc = |mut v: u64| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        tmp.reverse();
        body.extend(tmp);
    };
    enc(arcs[0] * 40 + arcs[1]);
    for a in &arcs[2..] {
        enc(*a);
    }
    tlv(0x06, &body)
}

/// ```text
/// certificatePolicies ::= SEQUENCE SIZE (1..MAX) OF PolicyInformation
/// PolicyInformation ::= SEQUENCE { policyIdentifier CertPolicyId, ... }
/// ```
pub(crate) fn certificate_policies(policies: &[&[u64]]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in policies {
        body.extend(tlv(0x30, &oid(p)));
    }
    tlv(0x30, &body)
}

/// ```text
/// AuthorityInfoAccessSyntax ::= SEQUENCE SIZE (1..MAX) OF AccessDescription
/// AccessDescription ::= SEQUENCE { accessMethod OBJECT IDENTIFIER, accessLocation GeneralName }
/// ```
/// with uniformResourceIdentifier [6] IA5String locations.
pub(crate) fn authority_info_access(ocsp: Option<&str>, ca_issuers: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(url) = ocsp {
        let mut d = oid(crate::oids::AD_OCSP);
        d.extend(tlv(0x86, url.as_bytes()));
        body.extend(tlv(0x30, &d));
    }
    if let Some(url) = ca_issuers {
        let mut d = oid(crate::oids::AD_CA_ISSUERS);
        d.extend(tlv(0x86, url.as_bytes()));
        body.extend(tlv(0x30, &d));
    }
    tlv(0x30, &body)
}

/// `ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId`, for the cases that must be
/// critical (rcgen writes EKU non-critical).
pub(crate) fn ext_key_usage(purposes: &[&[u64]]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in purposes {
        body.extend(oid(p));
    }
    tlv(0x30, &body)
}

/// id-pkix-ocsp-nocheck's value: NULL (RFC 6960 §4.2.2.2.1).
pub(crate) fn null() -> Vec<u8> {
    vec![0x05, 0x00]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_encoding_matches_known_values() {
        // 1.3.6.1.5.5.7.48.1 (id-ad-ocsp)
        assert_eq!(oid(&[1, 3, 6, 1, 5, 5, 7, 48, 1]), vec![0x06, 0x08, 0x2b, 6, 1, 5, 5, 7, 0x30, 1]);
        // 2.23.140.1.5.1.3: 2*40+23 = 103 = 0x67; 140 = 0x81 0x0c
        assert_eq!(oid(&[2, 23, 140, 1, 5, 1, 3]), vec![0x06, 0x07, 0x67, 0x81, 0x0c, 1, 5, 1, 3]);
    }
}
