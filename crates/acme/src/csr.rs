//! What a CSR at finalize asks for: its requested keyUsage chooses the certificate — signing
//! (digitalSignature, nonRepudiation) or encryption (keyEncipherment, keyAgreement,
//! dataEncipherment). A CSR asking for both is refused: each mailbox gets two certificates.

use cerdb::Usage;
use x509_parser::prelude::*;

use crate::problem::Problem;

/// The usage a CSR (DER) asks for.
pub fn requested_usage(der: &[u8]) -> Result<Usage, Problem> {
    if der.len() > ca_core::csr::MAX_CSR_BYTES {
        return Err(Problem::bad_csr(format!(
            "the CSR is larger than {} bytes",
            ca_core::csr::MAX_CSR_BYTES
        )));
    }
    let (_, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| Problem::bad_csr(format!("not a PKCS#10 request: {e}")))?;
    let mut signing = false;
    let mut encryption = false;
    let mut seen = false;
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::KeyUsage(ku) = ext {
                seen = true;
                signing |= ku.digital_signature() || ku.non_repudiation();
                encryption |= ku.key_encipherment() || ku.key_agreement() || ku.data_encipherment();
            }
        }
    }
    match (signing, encryption) {
        (true, true) => Err(Problem::bad_csr(
            "the CSR asks for signing and encryption key usages at once: request two certificates, one CSR \
             with digitalSignature (signing) and one with keyEncipherment or keyAgreement (encryption), each with its own key"
                .into(),
        )),
        (true, false) => Ok(Usage::Signing),
        (false, true) => Ok(Usage::Encryption),
        (false, false) => Err(Problem::bad_csr(if seen {
            "the CSR's keyUsage has neither digitalSignature (signing) nor keyEncipherment/keyAgreement (encryption)".into()
        } else {
            "the CSR requests no keyUsage: ask for digitalSignature (a signing certificate) or keyEncipherment/keyAgreement (an encryption certificate)".into()
        })),
    }
}
