//! `userSMIMECertificate`: a degenerate ("certs-only") PKCS#7 SignedData (RFC 2798 §2.8, RFC
//! 5652 §5, RFC 8551 §3.2.2):
//!
//! ```text
//! ContentInfo ::= SEQUENCE { contentType id-signedData, content [0] EXPLICIT SignedData }
//! SignedData ::= SEQUENCE {
//!   version CMSVersion (1), digestAlgorithms SET OF {} (empty),
//!   encapContentInfo SEQUENCE { eContentType id-data } (no content),
//!   certificates [0] IMPLICIT CertificateSet, signerInfos SET OF {} (empty) }
//! ```
//!
//! Built with RustCrypto's `cms` types; the certificates are re-encoded from their decoded form,
//! which for DER input gives the same bytes.

use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos};
use der::asn1::{ObjectIdentifier, SetOfVec};
use der::{Any, Decode, Encode};

/// id-signedData (RFC 5652 §5.1).
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// id-data (RFC 5652 §4).
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");

/// The certs-only SignedData of `certs` (DER certificates), DER. The certificates form a DER
/// SET OF, so their order in the result is the order of their encodings.
pub fn certs_only(certs: &[Vec<u8>]) -> Result<Vec<u8>, der::Error> {
    let choices = certs
        .iter()
        .map(|der| x509_cert::Certificate::from_der(der).map(CertificateChoices::Certificate))
        .collect::<Result<Vec<_>, _>>()?;
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None },
        certificates: Some(CertificateSet::try_from(choices)?),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&signed)? }.to_der()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_certificate_is_an_error() {
        assert!(certs_only(&[vec![0x30, 0x03, 0x02, 0x01, 0x01]]).is_err());
        assert!(certs_only(&[Vec::new()]).is_err());
        // No certificate at all is still a well-formed (empty) certs-only message.
        let empty = certs_only(&[]).expect("empty set");
        let ci = ContentInfo::from_der(&empty).expect("decodes");
        assert_eq!(ci.content_type, ID_SIGNED_DATA);
    }
}
