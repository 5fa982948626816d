//! CMS `EnvelopedData` (RFC 5652 §6) with RustCrypto's `EnvelopedDataBuilder`: AES-256-CBC
//! content encryption, one recipient info per certificate — RSA key transport
//! ([`crate::keytrans`]) or ECDH on P-256 ([`crate::ecdh`]).
//!
//! Or, when asked, `AuthEnvelopedData` (RFC 5083) with AES-256-GCM (RFC 5084): the same
//! recipient infos from the same builders, the content sealed by ring's AES-GCM. The `cms` crate
//! has no type for it, so its four fields are declared here with `der`'s derive.

use cms::builder::{ContentEncryptionAlgorithm, EnvelopedDataBuilder, RecipientInfoBuilder};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{EncryptedContentInfo, RecipientInfo, RecipientInfos};
use der::asn1::{ContextSpecificRef, ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode, EncodeValue, FixedTag, Length, Sequence, Tag, TagMode, TagNumber, Writer};
use ring::rand::SecureRandom as _;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::ecdh::EcdhRecipient;
use crate::keytrans::{KeyTransRecipient, RsaTransportKey};
use crate::{oids, Error};

/// A certificate to encrypt to, checked for a key this module can encrypt to.
#[derive(Debug, Clone)]
pub struct Recipient {
    cert: Certificate,
    kind: RecipientKey,
}

#[derive(Debug, Clone)]
enum RecipientKey {
    Rsa(RsaTransportKey),
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
                    RsaTransportKey::from_spki_der(&spki_der)
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

/// How the content is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentCipher {
    /// `EnvelopedData` with AES-256-CBC: what every S/MIME client reads.
    #[default]
    Aes256Cbc,
    /// `AuthEnvelopedData` with AES-256-GCM: authenticated (a changed byte is refused, not
    /// decrypted to garbage); read by OpenSSL 3, Thunderbird and recent Outlook.
    Aes256Gcm,
}

impl ContentCipher {
    /// `aes-256-cbc` or `aes-256-gcm`.
    pub fn name(self) -> &'static str {
        match self {
            ContentCipher::Aes256Cbc => "aes-256-cbc",
            ContentCipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// The cipher of a name ([`ContentCipher::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        [ContentCipher::Aes256Cbc, ContentCipher::Aes256Gcm].into_iter().find(|c| c.name() == name)
    }

    /// The `smime-type` of a message encrypted so (RFC 8551 §3.2.2).
    pub fn smime_type(self) -> &'static str {
        match self {
            ContentCipher::Aes256Cbc => "enveloped-data",
            ContentCipher::Aes256Gcm => "authEnveloped-data",
        }
    }
}

/// Encrypts `content` to every recipient with a fresh AES-256 key; the `ContentInfo` DER.
pub fn envelop(content: &[u8], recipients: &[&Recipient], cipher: ContentCipher) -> Result<Vec<u8>, Error> {
    match cipher {
        ContentCipher::Aes256Cbc => envelop_cbc(content, recipients),
        ContentCipher::Aes256Gcm => envelop_gcm(content, recipients),
    }
}

/// The recipient info of `r` for the content-encryption key `cek`.
fn recipient_info(r: &Recipient, cek: &[u8]) -> Result<RecipientInfo, Error> {
    match &r.kind {
        RecipientKey::Rsa(key) => {
            KeyTransRecipient::new(r.issuer_and_serial(), key).build(cek).map_err(Error::cms)
        }
        RecipientKey::P256(point) => {
            EcdhRecipient::new(r.issuer_and_serial(), point.clone()).build(cek).map_err(Error::cms)
        }
    }
}

fn envelop_cbc(content: &[u8], recipients: &[&Recipient]) -> Result<Vec<u8>, Error> {
    let mut rng = rand_core::OsRng;
    let mut builder = EnvelopedDataBuilder::new(None, content, ContentEncryptionAlgorithm::Aes256Cbc, None)
        .map_err(Error::cms)?;
    for r in recipients {
        match &r.kind {
            RecipientKey::Rsa(key) => {
                builder
                    .add_recipient_info(KeyTransRecipient::new(r.issuer_and_serial(), key))
                    .map_err(Error::cms)?;
            }
            RecipientKey::P256(point) => {
                builder
                    .add_recipient_info(EcdhRecipient::new(r.issuer_and_serial(), point.clone()))
                    .map_err(Error::cms)?;
            }
        }
    }
    let ed = builder.build_with_rng(&mut rng).map_err(Error::cms)?;
    ContentInfoOf { content_type: oids::ENVELOPED_DATA, content: &ed }.to_der().map_err(Error::encoding)
}

/// `ContentInfo ::= SEQUENCE { contentType OBJECT IDENTIFIER, content [0] EXPLICIT ANY }`
/// (RFC 5652 §3) around a typed content, encoded in one pass: `cms`'s `ContentInfo` holds its
/// content as an encoded `Any`, which would encode and copy the whole ciphertext twice more.
struct ContentInfoOf<'a, T> {
    content_type: ObjectIdentifier,
    content: &'a T,
}

impl<T: EncodeValue + FixedTag> ContentInfoOf<'_, T> {
    fn explicit(&self) -> ContextSpecificRef<'_, T> {
        ContextSpecificRef { tag_number: TagNumber::N0, tag_mode: TagMode::Explicit, value: self.content }
    }
}

impl<T: EncodeValue + FixedTag> EncodeValue for ContentInfoOf<'_, T> {
    fn value_len(&self) -> der::Result<Length> {
        self.content_type.encoded_len()? + self.explicit().encoded_len()?
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        self.content_type.encode(writer)?;
        self.explicit().encode(writer)
    }
}

impl<T> FixedTag for ContentInfoOf<'_, T> {
    const TAG: Tag = Tag::Sequence;
}

/// `AuthEnvelopedData` (RFC 5083 §2.1), without the optional fields this module never writes
/// (originator info, authenticated and unauthenticated attributes).
#[derive(Debug, Sequence)]
struct AuthEnvelopedData {
    version: CmsVersion,
    recipient_infos: RecipientInfos,
    auth_encrypted_content_info: EncryptedContentInfo,
    mac: OctetString,
}

/// `GCMParameters` (RFC 5084 §3.2): the nonce and the length of the tag.
#[derive(Debug, Sequence)]
struct GcmParameters {
    nonce: OctetString,
    icv_len: u8,
}

fn envelop_gcm(content: &[u8], recipients: &[&Recipient]) -> Result<Vec<u8>, Error> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
    let rng = ring::rand::SystemRandom::new();
    let no_randomness = |_| Error::Internal("no randomness".into());
    let mut cek = [0u8; 32];
    rng.fill(&mut cek).map_err(no_randomness)?;
    // A fresh key each message, so a random nonce is never reused under it.
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(no_randomness)?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &cek).map_err(|_| Error::Internal("AES-256-GCM key".into()))?,
    );
    let mut sealed = content.to_vec();
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut sealed)
        .map_err(|_| Error::Internal("AES-256-GCM encryption".into()))?;
    let mut infos = Vec::with_capacity(recipients.len());
    for r in recipients {
        infos.push(recipient_info(r, &cek)?);
    }
    let params = GcmParameters {
        nonce: OctetString::new(nonce.to_vec()).map_err(Error::encoding)?,
        icv_len: tag.as_ref().len() as u8,
    };
    let aed = AuthEnvelopedData {
        version: CmsVersion::V0,
        recipient_infos: RecipientInfos::try_from(infos).map_err(Error::encoding)?,
        auth_encrypted_content_info: EncryptedContentInfo {
            content_type: oids::DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: oids::AES256_GCM,
                parameters: Some(Any::encode_from(&params).map_err(Error::encoding)?),
            },
            encrypted_content: Some(OctetString::new(sealed).map_err(Error::encoding)?),
        },
        mac: OctetString::new(tag.as_ref().to_vec()).map_err(Error::encoding)?,
    };
    ContentInfoOf { content_type: oids::AUTH_ENVELOPED_DATA, content: &aed }.to_der().map_err(Error::encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass `ContentInfo` is the same DER as `cms`'s `ContentInfo` around the content
    /// encoded as an `Any`, short and long (the ciphertext's length in long form).
    #[test]
    fn content_info_in_one_pass_is_the_cms_crate_s_encoding() {
        for len in [0usize, 100, 70_000] {
            let gcm = GcmParameters { nonce: OctetString::new(vec![7u8; 12]).expect("nonce"), icv_len: 16 };
            let params = Any::encode_from(&gcm).expect("params");
            let eci = EncryptedContentInfo {
                content_type: oids::DATA,
                content_enc_alg: AlgorithmIdentifierOwned { oid: oids::AES256_GCM, parameters: Some(params) },
                encrypted_content: Some(OctetString::new(vec![0xa5; len]).expect("content")),
            };
            let aed = AuthEnvelopedData {
                version: CmsVersion::V0,
                recipient_infos: RecipientInfos::try_from(Vec::new()).expect("infos"),
                auth_encrypted_content_info: eci,
                mac: OctetString::new(vec![1u8; 16]).expect("mac"),
            };
            let mine = ContentInfoOf { content_type: oids::AUTH_ENVELOPED_DATA, content: &aed }
                .to_der()
                .expect("one pass");
            let theirs = cms::content_info::ContentInfo {
                content_type: oids::AUTH_ENVELOPED_DATA,
                content: Any::encode_from(&aed).expect("any"),
            }
            .to_der()
            .expect("cms");
            assert_eq!(mine, theirs, "{len}");
        }
    }
}
