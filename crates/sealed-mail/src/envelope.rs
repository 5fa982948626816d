//! CMS `EnvelopedData` (RFC 5652 §6) with RustCrypto's `EnvelopedDataBuilder`: AES-256-CBC
//! content encryption, one recipient info per certificate — RSA key transport (the builder's
//! `KeyTransRecipientInfoBuilder`) or ECDH on P-256 ([`crate::ecdh`]).

use cms::builder::{
    ContentEncryptionAlgorithm, EnvelopedDataBuilder, KeyEncryptionInfo, KeyTransRecipientInfoBuilder,
};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::ContentInfo;
use cms::enveloped_data::RecipientIdentifier;
use der::{Any, Decode, Encode};
use rsa::pkcs8::DecodePublicKey as _;
use x509_cert::Certificate;

use crate::ecdh::EcdhRecipient;
use crate::{oids, Error};

/// A certificate to encrypt to, checked for a key this module can encrypt to.
#[derive(Debug, Clone)]
pub struct Recipient {
    cert: Certificate,
    kind: RecipientKey,
}

#[derive(Debug, Clone)]
enum RecipientKey {
    Rsa(rsa::RsaPublicKey),
    P256(Vec<u8>),
}

impl Recipient {
    /// The recipient of a certificate (DER): RSA, or EC on P-256.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let cert =
            Certificate::from_der(der).map_err(|e| Error::RecipientKey(format!("certificate: {e}")))?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let kind = match spki.algorithm.oid {
            oids::RSA_ENCRYPTION => {
                let spki_der = spki.to_der().map_err(Error::encoding)?;
                RecipientKey::Rsa(
                    rsa::RsaPublicKey::from_public_key_der(&spki_der)
                        .map_err(|e| Error::RecipientKey(format!("RSA key: {e}")))?,
                )
            }
            oids::EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
                if curve != Some(oids::P256) {
                    return Err(Error::RecipientKey("EC keys on curves other than P-256".into()));
                }
                RecipientKey::P256(spki.subject_public_key.raw_bytes().to_vec())
            }
            other => return Err(Error::RecipientKey(format!("keys of algorithm {other}"))),
        };
        Ok(Recipient { cert, kind })
    }

    fn issuer_and_serial(&self) -> IssuerAndSerialNumber {
        IssuerAndSerialNumber {
            issuer: self.cert.tbs_certificate.issuer.clone(),
            serial_number: self.cert.tbs_certificate.serial_number.clone(),
        }
    }
}

/// Encrypts `content` to every recipient with a fresh AES-256 key; the `ContentInfo` DER.
pub fn envelop(content: &[u8], recipients: &[Recipient]) -> Result<Vec<u8>, Error> {
    let mut rng = rand_core::OsRng;
    // The builder borrows an RNG from each key transport recipient until it is built: one
    // handle of the OS's generator each.
    let mut kt_rngs: Vec<rand_core::OsRng> = recipients.iter().map(|_| rand_core::OsRng).collect();
    let mut kt_rngs = kt_rngs.iter_mut();
    let mut builder = EnvelopedDataBuilder::new(None, content, ContentEncryptionAlgorithm::Aes256Cbc, None)
        .map_err(Error::cms)?;
    for r in recipients {
        match &r.kind {
            RecipientKey::Rsa(key) => {
                let rng = kt_rngs.next().ok_or_else(|| Error::Internal("one RNG per recipient".into()))?;
                let ktri = KeyTransRecipientInfoBuilder::new(
                    RecipientIdentifier::IssuerAndSerialNumber(r.issuer_and_serial()),
                    KeyEncryptionInfo::Rsa(key.clone()),
                    rng,
                )
                .map_err(Error::cms)?;
                builder.add_recipient_info(ktri).map_err(Error::cms)?;
            }
            RecipientKey::P256(point) => {
                builder
                    .add_recipient_info(EcdhRecipient::new(r.issuer_and_serial(), point.clone()))
                    .map_err(Error::cms)?;
            }
        }
    }
    let ed = builder.build_with_rng(&mut rng).map_err(Error::cms)?;
    let content = Any::from_der(&ed.to_der().map_err(Error::encoding)?).map_err(Error::encoding)?;
    ContentInfo { content_type: oids::ENVELOPED_DATA, content }.to_der().map_err(Error::encoding)
}
