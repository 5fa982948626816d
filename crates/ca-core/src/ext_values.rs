//! The few X.509 extension values rcgen has no builder for (RFC 5280 §4.2), encoded through
//! `x509-cert`'s types.

use der::asn1::{Ia5String, Null, ObjectIdentifier};
use der::Encode;
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, CertificatePolicies, ExtendedKeyUsage,
};

use crate::Error;

fn encoding(what: &str) -> impl Fn(der::Error) -> Error + '_ {
    move |e| Error::Certificate(format!("encoding {what}: {e}"))
}

/// An OBJECT IDENTIFIER given its arcs.
fn oid(arcs: &[u64]) -> Result<ObjectIdentifier, Error> {
    let arcs: Vec<u32> = arcs
        .iter()
        .map(|a| u32::try_from(*a).map_err(|_| Error::Certificate(format!("OID arc {a} too large"))))
        .collect::<Result<_, _>>()?;
    ObjectIdentifier::from_arcs(arcs).map_err(|e| Error::Certificate(format!("OID: {e}")))
}

/// `certificatePolicies`: one PolicyInformation without qualifiers per policy.
pub(crate) fn certificate_policies(policies: &[&[u64]]) -> Result<Vec<u8>, Error> {
    let infos = policies
        .iter()
        .map(|p| Ok(PolicyInformation { policy_identifier: oid(p)?, policy_qualifiers: None }))
        .collect::<Result<Vec<_>, Error>>()?;
    CertificatePolicies(infos).to_der().map_err(encoding("certificatePolicies"))
}

/// `authorityInfoAccess` with uniformResourceIdentifier locations: OCSP first, then caIssuers.
pub(crate) fn authority_info_access(ocsp: Option<&str>, ca_issuers: Option<&str>) -> Result<Vec<u8>, Error> {
    let mut access = Vec::new();
    for (method, url) in [(crate::oids::AD_OCSP, ocsp), (crate::oids::AD_CA_ISSUERS, ca_issuers)] {
        if let Some(url) = url {
            let uri = Ia5String::new(url).map_err(encoding("an access location"))?;
            access.push(AccessDescription {
                access_method: oid(method)?,
                access_location: GeneralName::UniformResourceIdentifier(uri),
            });
        }
    }
    AuthorityInfoAccessSyntax(access).to_der().map_err(encoding("authorityInfoAccess"))
}

/// `extKeyUsage`, for the cases that must be critical (rcgen writes EKU non-critical).
pub(crate) fn ext_key_usage(purposes: &[&[u64]]) -> Result<Vec<u8>, Error> {
    let oids = purposes.iter().map(|p| oid(p)).collect::<Result<Vec<_>, _>>()?;
    ExtendedKeyUsage(oids).to_der().map_err(encoding("extKeyUsage"))
}

/// id-pkix-ocsp-nocheck's value: NULL (RFC 6960 §4.2.2.2.1).
pub(crate) fn null() -> Result<Vec<u8>, Error> {
    Null.to_der().map_err(encoding("NULL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values as the hand-written encoder made them before (and as RFC 5280 lays them out).
    #[test]
    fn values_are_the_known_der() {
        // 2.23.140.1.5.1.3: 2*40+23 = 103 = 0x67; 140 = 0x81 0x0c.
        assert_eq!(
            certificate_policies(&[&[2, 23, 140, 1, 5, 1, 3]]).unwrap(),
            [0x30, 0x0b, 0x30, 0x09, 0x06, 0x07, 0x67, 0x81, 0x0c, 1, 5, 1, 3]
        );
        let aia = authority_info_access(Some("http://o"), Some("http://c")).unwrap();
        let mut want = vec![0x30, 0x2c];
        for (last, url) in [(1u8, b"http://o"), (2, b"http://c")] {
            want.extend([0x30, 0x14, 0x06, 0x08, 0x2b, 6, 1, 5, 5, 7, 0x30, last, 0x86, 0x08]);
            want.extend(url.iter());
        }
        assert_eq!(aia, want);
        assert_eq!(authority_info_access(None, Some("http://c")).unwrap()[..2], [0x30, 0x16]);
        assert_eq!(
            ext_key_usage(&[&[1, 3, 6, 1, 5, 5, 7, 3, 8]]).unwrap(),
            [0x30, 0x0a, 0x06, 0x08, 0x2b, 6, 1, 5, 5, 7, 3, 8]
        );
        assert_eq!(null().unwrap(), [0x05, 0x00]);
        assert!(authority_info_access(Some("http://ü"), None).is_err(), "not IA5");
    }
}
