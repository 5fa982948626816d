//! The DER of a granted token, framed by hand around parts encoded once.
//!
//! Everything in a token except the TSTInfo's serial, genTime, policy, imprint and nonce, the
//! message digest and the signature is the same for every token of a TSA. [`TokenFrame::new`]
//! encodes those parts once with `der` (digestAlgorithms, sid, the algorithm identifiers, the
//! content-type and signing-certificate-v2 attributes, the certificates, accuracy and the `tsa`
//! name); [`TokenFrame::tst_info`], [`TokenFrame::content_info`] and [`granted_response`] put
//! them and the per-token parts into the TLVs below. They replaced the typed `TstInfo`,
//! `SignedData` and `TimeStampResp` encoders, which cloned the certificates and the signer's name
//! for every token and recomputed the length of every nested value at every level. The tests
//! check each octet for octet against those typed encoders.
//!
//! ```text
//! TimeStampResp ::= SEQUENCE { status PKIStatusInfo (SEQUENCE { INTEGER 0 }),
//!                              timeStampToken ContentInfo }                 -- RFC 3161 §2.4.2
//! ContentInfo   ::= SEQUENCE { contentType id-signedData,
//!                              content [0] EXPLICIT SignedData }            -- RFC 5652 §3
//! SignedData    ::= SEQUENCE {                                              -- RFC 5652 §5.1
//!     version           CMSVersion (3),
//!     digestAlgorithms  SET OF DigestAlgorithmIdentifier,
//!     encapContentInfo  SEQUENCE { eContentType id-ct-TSTInfo,
//!                                  eContent [0] EXPLICIT OCTET STRING (TSTInfo) },
//!     certificates      [0] IMPLICIT CertificateSet OPTIONAL,              -- when certReq
//!     signerInfos       SET OF SignerInfo }
//! SignerInfo    ::= SEQUENCE {                                              -- RFC 5652 §5.3
//!     version CMSVersion (1), sid IssuerAndSerialNumber, digestAlgorithm,
//!     signedAttrs [0] IMPLICIT SET OF Attribute,  -- content-type, message-digest,
//!                                                 -- signing-certificate-v2 (RFC 5816)
//!     signatureAlgorithm, signature OCTET STRING }
//! TSTInfo       ::= SEQUENCE {                                              -- RFC 3161 §2.4.2
//!     version INTEGER (1), policy, messageImprint, serialNumber INTEGER, genTime,
//!     accuracy, nonce INTEGER OPTIONAL, tsa [0] EXPLICIT GeneralName }
//!     -- ordering FALSE is the DEFAULT, so DER leaves it out; no extensions
//! ```
//!
//! The signature covers the DER of signedAttrs with the tag of a `SET OF` (0x31), not the
//! `[0] IMPLICIT` (0xA0) it has inside the SignerInfo (RFC 5652 §5.4); DER orders the `SET OF`
//! by the attributes' encodings (X.690 §11.6).

use cms::signed_data::{CertificateSet, SignerIdentifier};
use der::asn1::{ContextSpecificRef, Int, SetOfVec};
use der::oid::ObjectIdentifier;
use der::{Any, TagMode, TagNumber};
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::asn1::{int_from_u64, to_der, Accuracy, MessageImprint};
use crate::crypto::HashAlg;
use crate::{oids, Error, GenTime};

/// `id-signedData` (1.2.840.113549.1.7.2) with its tag and length.
const ID_SIGNED_DATA_DER: [u8; 11] = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// `id-ct-TSTInfo` (1.2.840.113549.1.9.16.1.4) with its tag and length.
const ID_CT_TST_INFO_DER: [u8; 13] =
    [0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x04];
/// `id-messageDigest` (1.2.840.113549.1.9.4) with its tag and length.
const ID_MESSAGE_DIGEST_DER: [u8; 11] = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
/// `PKIStatusInfo { status granted }`: `SEQUENCE { INTEGER 0 }`.
const GRANTED_STATUS_DER: [u8; 5] = [0x30, 0x03, 0x02, 0x01, 0x00];
/// `version v1` of TSTInfo, `version 1` of SignerInfo: `INTEGER 1`.
const VERSION_1_DER: [u8; 3] = [0x02, 0x01, 0x01];
/// SignedData `version 3` (RFC 5652 §5.1: eContentType is not id-data): `INTEGER 3`.
const VERSION_3_DER: [u8; 3] = [0x02, 0x01, 0x03];

/// The parts of a token that are the same for every token of a TSA, as typed values.
#[derive(Debug, Clone)]
pub(crate) struct TokenConstants {
    /// The CMS digest algorithm of the key's signature scheme.
    pub(crate) digest: HashAlg,
    /// The SignerInfo's signatureAlgorithm.
    pub(crate) signature_algorithm: AlgorithmIdentifierOwned,
    /// The TSA certificate's issuer and serial number.
    pub(crate) sid: SignerIdentifier,
    /// The signing-certificate-v2 attribute naming the TSA certificate.
    pub(crate) signing_certificate: Attribute,
    /// The TSA certificate and its chain, sent when the request has certReq.
    pub(crate) certificates: CertificateSet,
    /// TSTInfo's accuracy.
    pub(crate) accuracy: Accuracy,
    /// TSTInfo's `tsa` name.
    pub(crate) tsa_name: GeneralName,
}

/// The constant parts of a TSA's tokens, each a whole DER TLV, and the functions that frame a
/// token around them.
#[derive(Debug, Clone)]
pub(crate) struct TokenFrame {
    digest: HashAlg,
    /// `digestAlgorithms`: `SET { AlgorithmIdentifier }`.
    digest_algorithms: Vec<u8>,
    /// The SignerInfo's `digestAlgorithm`.
    digest_algorithm: Vec<u8>,
    /// `IssuerAndSerialNumber`.
    sid: Vec<u8>,
    /// The SignerInfo's `signatureAlgorithm`.
    signature_algorithm: Vec<u8>,
    /// The content-type attribute (id-ct-TSTInfo).
    content_type_attribute: Vec<u8>,
    /// The signing-certificate-v2 attribute.
    signing_certificate_attribute: Vec<u8>,
    /// `certificates [0] IMPLICIT CertificateSet`.
    certificates: Vec<u8>,
    /// TSTInfo's `Accuracy`.
    accuracy: Vec<u8>,
    /// TSTInfo's `tsa [0] EXPLICIT GeneralName`.
    tsa: Vec<u8>,
}

impl TokenFrame {
    /// Encodes the constant parts once.
    pub(crate) fn new(c: &TokenConstants) -> Result<Self, Error> {
        let content_type = Attribute {
            oid: oids::ID_CONTENT_TYPE,
            values: SetOfVec::try_from(vec![Any::encode_from(&oids::ID_CT_TST_INFO)?])?,
        };
        Ok(TokenFrame {
            digest: c.digest,
            digest_algorithms: to_der(&SetOfVec::try_from(vec![c.digest.alg_id()])?)?,
            digest_algorithm: to_der(&c.digest.alg_id())?,
            sid: to_der(&c.sid)?,
            signature_algorithm: to_der(&c.signature_algorithm)?,
            content_type_attribute: to_der(&content_type)?,
            signing_certificate_attribute: to_der(&c.signing_certificate)?,
            certificates: to_der(&ContextSpecificRef {
                tag_number: TagNumber::N0,
                tag_mode: TagMode::Implicit,
                value: &c.certificates,
            })?,
            accuracy: to_der(&c.accuracy)?,
            tsa: to_der(&ContextSpecificRef {
                tag_number: TagNumber::N0,
                tag_mode: TagMode::Explicit,
                value: &c.tsa_name,
            })?,
        })
    }

    /// The DER of the TSTInfo with these per-token parts (version v1, ordering false, no
    /// extensions).
    pub(crate) fn tst_info(
        &self,
        policy: &ObjectIdentifier,
        imprint: &MessageImprint,
        serial: u64,
        gen_time: GenTime,
        nonce: Option<&Int>,
    ) -> Result<Vec<u8>, Error> {
        let imprint = to_der(imprint)?;
        let gen_time = to_der(&gen_time)?;
        let policy = policy.as_bytes();
        let serial = int_from_u64(serial);
        let serial = serial.as_bytes();
        let nonce = nonce.map(Int::as_bytes);
        let len = VERSION_1_DER.len()
            + tlv_len(policy.len())
            + imprint.len()
            + tlv_len(serial.len())
            + gen_time.len()
            + self.accuracy.len()
            + nonce.map_or(0, |n| tlv_len(n.len()))
            + self.tsa.len();
        let mut out = Vec::with_capacity(tlv_len(len));
        push_header(&mut out, 0x30, len)?;
        out.extend_from_slice(&VERSION_1_DER);
        push_header(&mut out, 0x06, policy.len())?;
        out.extend_from_slice(policy);
        out.extend_from_slice(&imprint);
        push_header(&mut out, 0x02, serial.len())?;
        out.extend_from_slice(serial);
        out.extend_from_slice(&gen_time);
        out.extend_from_slice(&self.accuracy);
        if let Some(n) = nonce {
            push_header(&mut out, 0x02, n.len())?;
            out.extend_from_slice(n);
        }
        out.extend_from_slice(&self.tsa);
        Ok(out)
    }

    /// The DER of the token (`ContentInfo` of a `SignedData`) around an encoded TSTInfo, with the
    /// certificates when `cert_req`. `sign` signs the DER of the signed attributes (a `SET OF`,
    /// tag 0x31) and returns the signature as it goes into the SignerInfo.
    pub(crate) fn content_info(
        &self,
        tst_info: &[u8],
        cert_req: bool,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, Error>,
    ) -> Result<Vec<u8>, Error> {
        let digest = self.digest.digest(tst_info);
        let digest_set_len = tlv_len(tlv_len(digest.len()));
        let message_digest_len = ID_MESSAGE_DIGEST_DER.len() + digest_set_len;
        let mut message_digest = Vec::with_capacity(tlv_len(message_digest_len));
        push_header(&mut message_digest, 0x30, message_digest_len)?;
        message_digest.extend_from_slice(&ID_MESSAGE_DIGEST_DER);
        push_header(&mut message_digest, 0x31, tlv_len(digest.len()))?;
        push_header(&mut message_digest, 0x04, digest.len())?;
        message_digest.extend_from_slice(&digest);

        let mut attributes = [
            self.content_type_attribute.as_slice(),
            message_digest.as_slice(),
            self.signing_certificate_attribute.as_slice(),
        ];
        attributes.sort_unstable();
        let attributes_len: usize = attributes.iter().map(|a| a.len()).sum();
        let mut signed_attributes = Vec::with_capacity(tlv_len(attributes_len));
        push_header(&mut signed_attributes, 0x31, attributes_len)?;
        for a in attributes {
            signed_attributes.extend_from_slice(a);
        }
        let signature = sign(&signed_attributes)?;

        let signer_info_len = VERSION_1_DER.len()
            + self.sid.len()
            + self.digest_algorithm.len()
            + tlv_len(attributes_len)
            + self.signature_algorithm.len()
            + tlv_len(signature.len());
        let econtent_len = tlv_len(tst_info.len());
        let encap_len = ID_CT_TST_INFO_DER.len() + tlv_len(econtent_len);
        let certificates: &[u8] = if cert_req { &self.certificates } else { &[] };
        let signed_data_len = VERSION_3_DER.len()
            + self.digest_algorithms.len()
            + tlv_len(encap_len)
            + certificates.len()
            + tlv_len(tlv_len(signer_info_len));
        let content_info_len = ID_SIGNED_DATA_DER.len() + tlv_len(tlv_len(signed_data_len));

        let mut out = Vec::with_capacity(tlv_len(content_info_len));
        push_header(&mut out, 0x30, content_info_len)?;
        out.extend_from_slice(&ID_SIGNED_DATA_DER);
        push_header(&mut out, 0xa0, tlv_len(signed_data_len))?;
        push_header(&mut out, 0x30, signed_data_len)?;
        out.extend_from_slice(&VERSION_3_DER);
        out.extend_from_slice(&self.digest_algorithms);
        push_header(&mut out, 0x30, encap_len)?;
        out.extend_from_slice(&ID_CT_TST_INFO_DER);
        push_header(&mut out, 0xa0, econtent_len)?;
        push_header(&mut out, 0x04, tst_info.len())?;
        out.extend_from_slice(tst_info);
        out.extend_from_slice(certificates);
        push_header(&mut out, 0x31, tlv_len(signer_info_len))?;
        push_header(&mut out, 0x30, signer_info_len)?;
        out.extend_from_slice(&VERSION_1_DER);
        out.extend_from_slice(&self.sid);
        out.extend_from_slice(&self.digest_algorithm);
        push_header(&mut out, 0xa0, attributes_len)?;
        for a in attributes {
            out.extend_from_slice(a);
        }
        out.extend_from_slice(&self.signature_algorithm);
        push_header(&mut out, 0x04, signature.len())?;
        out.extend_from_slice(&signature);
        Ok(out)
    }
}

/// The DER of a granted `TimeStampResp` around the DER of its token.
pub(crate) fn granted_response(token: &[u8]) -> Result<Vec<u8>, Error> {
    let len = GRANTED_STATUS_DER.len() + token.len();
    let mut out = Vec::with_capacity(tlv_len(len));
    push_header(&mut out, 0x30, len)?;
    out.extend_from_slice(&GRANTED_STATUS_DER);
    out.extend_from_slice(token);
    Ok(out)
}

/// Appends a DER tag and definite length (minimal form) for `len` octets of content; refuses a
/// length over `der`'s limit (256 MiB), as the typed encoder does.
fn push_header(out: &mut Vec<u8>, tag: u8, len: usize) -> Result<(), Error> {
    der::Length::try_from(len)?;
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let octets = len.to_be_bytes();
        let skip = (len.leading_zeros() / 8) as usize;
        out.push(0x80 | (octets.len() - skip) as u8);
        out.extend_from_slice(octets.get(skip..).unwrap_or_default());
    }
    Ok(())
}

/// The length of a TLV with `len` octets of content.
fn tlv_len(len: usize) -> usize {
    let length_octets = if len < 0x80 { 0 } else { (usize::BITS - len.leading_zeros()).div_ceil(8) as usize };
    2 + length_octets + len
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use chrono::DateTime;
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::signed_data::{EncapsulatedContentInfo, SignedAttributes, SignedData, SignerInfo, SignerInfos};
    use der::asn1::OctetString;
    use der::{Decode, Encode, Tag};
    use hsm_sim::{HsmSim, KeyCustody, KeyPurpose, KeyType, MasterKeySource};
    use x509_cert::Certificate;

    use super::*;
    use crate::asn1::{
        EssCertIdV2, IssuerSerial, PkiStatus, PkiStatusInfo, SigningCertificateV2, TimeStampResp, TspVersion,
        TstInfo,
    };
    use crate::crypto::sha256;
    use crate::DEFAULT_POLICY;

    // ---- the typed path, as `token.rs` took it before the frame --------------------------------

    fn single_value_attribute(oid: ObjectIdentifier, value: Any) -> Attribute {
        Attribute { oid, values: SetOfVec::try_from(vec![value]).unwrap() }
    }

    /// The constant parts as `TimestampAuthority::new` builds them.
    fn constants(
        digest: HashAlg,
        signature_algorithm: AlgorithmIdentifierOwned,
        tsa_der: &[u8],
        chain_der: &[Vec<u8>],
        accuracy: Accuracy,
    ) -> TokenConstants {
        let tsa_cert = Certificate::from_der(tsa_der).unwrap();
        let tbs = &tsa_cert.tbs_certificate;
        let ess = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                hash_algorithm: None,
                cert_hash: OctetString::new(sha256(tsa_der).to_vec()).unwrap(),
                issuer_serial: Some(IssuerSerial {
                    issuer: vec![GeneralName::DirectoryName(tbs.issuer.clone())],
                    serial_number: tbs.serial_number.clone(),
                }),
            }],
            policies: None,
        };
        let certificates = std::iter::once(tsa_der)
            .chain(chain_der.iter().map(Vec::as_slice))
            .map(|d| CertificateChoices::Certificate(Certificate::from_der(d).unwrap()))
            .collect::<Vec<_>>();
        TokenConstants {
            digest,
            signature_algorithm,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer.clone(),
                serial_number: tbs.serial_number.clone(),
            }),
            signing_certificate: single_value_attribute(
                oids::ID_AA_SIGNING_CERTIFICATE_V2,
                Any::encode_from(&ess).unwrap(),
            ),
            certificates: CertificateSet(SetOfVec::try_from(certificates).unwrap()),
            accuracy,
            tsa_name: GeneralName::DirectoryName(tbs.subject.clone()),
        }
    }

    fn typed_tst_info(
        c: &TokenConstants,
        policy: ObjectIdentifier,
        imprint: &MessageImprint,
        serial: u64,
        gen_time: GenTime,
        nonce: Option<&Int>,
    ) -> Vec<u8> {
        let tst = TstInfo {
            version: TspVersion::V1,
            policy,
            message_imprint: imprint.clone(),
            serial_number: int_from_u64(serial),
            gen_time,
            accuracy: Some(c.accuracy.clone()),
            ordering: false,
            nonce: nonce.cloned(),
            tsa: Some(c.tsa_name.clone()),
            extensions: None,
        };
        tst.to_der().unwrap()
    }

    /// The token over `tst_der` with `signature`, and the DER that the typed path signed.
    fn typed_token(
        c: &TokenConstants,
        tst_der: &[u8],
        cert_req: bool,
        signature: &[u8],
    ) -> (ContentInfo, Vec<u8>) {
        let digest = c.digest;
        let signed_attrs: SignedAttributes = SetOfVec::try_from(vec![
            single_value_attribute(oids::ID_CONTENT_TYPE, Any::encode_from(&oids::ID_CT_TST_INFO).unwrap()),
            single_value_attribute(
                oids::ID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.digest(tst_der)).unwrap()).unwrap(),
            ),
            c.signing_certificate.clone(),
        ])
        .unwrap();
        let signed = signed_attrs.to_der().unwrap();
        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid: c.sid.clone(),
            digest_alg: digest.alg_id(),
            signed_attrs: Some(signed_attrs),
            signature_algorithm: c.signature_algorithm.clone(),
            signature: OctetString::new(signature.to_vec()).unwrap(),
            unsigned_attrs: None,
        };
        let signed_data = SignedData {
            version: CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![digest.alg_id()]).unwrap(),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: oids::ID_CT_TST_INFO,
                econtent: Some(Any::new(Tag::OctetString, tst_der.to_vec()).unwrap()),
            },
            certificates: cert_req.then(|| c.certificates.clone()),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).unwrap()),
        };
        let token = ContentInfo {
            content_type: oids::ID_SIGNED_DATA,
            content: Any::encode_from(&signed_data).unwrap(),
        };
        (token, signed)
    }

    fn typed_response(token: ContentInfo) -> Vec<u8> {
        TimeStampResp {
            status: PkiStatusInfo { status: PkiStatus::Granted, status_string: None, fail_info: None },
            time_stamp_token: Some(token),
        }
        .to_der()
        .unwrap()
    }

    // ---- inputs -------------------------------------------------------------------------------

    struct Profile {
        name: &'static str,
        constants: TokenConstants,
    }

    fn ca_params(cn: &str) -> rcgen::CertificateParams {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "Example Bank Test PKI");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p
    }

    /// An RSA-2048 signer (sha256WithRSAEncryption, NULL parameters) whose certificate comes with
    /// an intermediate, a P-256 signer issued by the root, and a P-384-like profile (SHA-384
    /// digest, ecdsa-with-SHA384) on the same certificate; accuracies of 1.5 s, 100 ms and 1 µs.
    fn profiles() -> &'static [Profile] {
        static PROFILES: OnceLock<Vec<Profile>> = OnceLock::new();
        PROFILES.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let hsm = HsmSim::open(dir.path(), &MasterKeySource::KeyFile).unwrap();
            let rsa =
                hsm.generate(&"tsa/rsa".parse().unwrap(), KeyType::Rsa2048, KeyPurpose::TsaSigning).unwrap();
            let rsa_spki = rcgen::SubjectPublicKeyInfo::from_der(&rsa.spki).unwrap();
            let root_key = rcgen::KeyPair::generate().unwrap();
            let root = rcgen::Issuer::new(ca_params("Frame Test Root CA"), root_key);
            let int_key = rcgen::KeyPair::generate().unwrap();
            let int_params = ca_params("Frame Test Issuing CA");
            let int_cert = int_params.signed_by(&int_key, &root).unwrap();
            let int = rcgen::Issuer::new(int_params, int_key);
            let mut tsa_params = ca_params("Frame Test TSA");
            tsa_params.is_ca = rcgen::IsCa::ExplicitNoCa;
            let rsa_cert = tsa_params.signed_by(&rsa_spki, &int).unwrap();
            let p256_cert = tsa_params.signed_by(&rcgen::KeyPair::generate().unwrap(), &root).unwrap();
            let alg = |oid, null: bool| AlgorithmIdentifierOwned { oid, parameters: null.then(Any::null) };
            vec![
                Profile {
                    name: "RSA",
                    constants: constants(
                        HashAlg::Sha256,
                        alg(oids::SHA256_WITH_RSA, true),
                        rsa_cert.der(),
                        &[int_cert.der().to_vec()],
                        Accuracy { seconds: Some(1), millis: Some(500), micros: None },
                    ),
                },
                Profile {
                    name: "P-256",
                    constants: constants(
                        HashAlg::Sha256,
                        alg(oids::ECDSA_WITH_SHA256, false),
                        p256_cert.der(),
                        &[],
                        Accuracy { seconds: None, millis: Some(100), micros: None },
                    ),
                },
                Profile {
                    name: "SHA-384",
                    constants: constants(
                        HashAlg::Sha384,
                        alg(oids::ECDSA_WITH_SHA384, false),
                        p256_cert.der(),
                        &[],
                        Accuracy { seconds: None, millis: None, micros: Some(1) },
                    ),
                },
            ]
        })
    }

    fn imprints() -> Vec<MessageImprint> {
        let imprint = |h: HashAlg, null: bool| MessageImprint {
            hash_algorithm: AlgorithmIdentifierOwned { oid: h.oid(), parameters: null.then(Any::null) },
            hashed_message: OctetString::new(vec![0xa7; h.output_len()]).unwrap(),
        };
        vec![
            imprint(HashAlg::Sha256, false),
            imprint(HashAlg::Sha384, false),
            imprint(HashAlg::Sha512, false),
            imprint(HashAlg::Sha256, true),
        ]
    }

    /// genTime with 0, 1, 3 and 6 fractional digits (and one whose trailing zero DER drops).
    fn gen_times() -> Vec<GenTime> {
        [
            "2026-11-22T12:58:20Z",
            "2026-11-22T12:58:20.9Z",
            "2026-11-22T12:58:20.987Z",
            "2026-11-22T12:58:20.120Z",
        ]
        .into_iter()
        .chain(["2026-11-22T12:58:20.987654Z", "9999-12-31T23:59:59.000001Z"])
        .map(|s| GenTime::new(DateTime::parse_from_rfc3339(s).unwrap().to_utc()).unwrap())
        .collect()
    }

    /// The default policy, and the longest OID `const-oid` takes (39 octets) with large arcs.
    fn policies() -> [ObjectIdentifier; 2] {
        let long = ObjectIdentifier::new_unwrap(
            "1.3.6.1.4.1.32473.1.4294967295.4294967295.4294967295.4294967295.4294967295.1.2.3",
        );
        assert!(long.as_bytes().len() > 30);
        [DEFAULT_POLICY, long]
    }

    const SERIALS: [u64; 8] = [1, 127, 128, 255, 256, 0x7fff_ffff_ffff_ffff, u64::MAX - 1, u64::MAX];

    /// Nonces of 1 to 64 octets, as a request decoder gives them: positive, positive with the
    /// leading zero octet its top bit needs, and negative.
    fn nonces() -> Vec<Int> {
        let mut out = Vec::new();
        for len in 1..=64usize {
            let body: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let mut positive = body.clone();
            positive[0] = 0x01 + (len as u8 % 0x7f);
            let mut negative = body.clone();
            negative[0] = 0x80 | (len as u8 % 0x7f);
            out.push(positive);
            out.push(negative);
            if len >= 2 {
                let mut padded = body;
                padded[0] = 0;
                padded[1] |= 0x80;
                out.push(padded);
            }
        }
        out.iter()
            .map(|content| {
                let mut der = vec![0x02, content.len() as u8];
                der.extend_from_slice(content);
                Int::from_der(&der).expect("a canonical INTEGER")
            })
            .collect()
    }

    // ---- tests ----------------------------------------------------------------------------------

    #[test]
    fn tst_info_matches_the_typed_encoder() {
        let nonces = nonces();
        let mut cases = 0usize;
        for p in profiles() {
            let frame = TokenFrame::new(&p.constants).unwrap();
            for (i, &serial) in SERIALS.iter().enumerate() {
                for (j, gen_time) in gen_times().into_iter().enumerate() {
                    for (k, imprint) in imprints().iter().enumerate() {
                        for policy in policies() {
                            let nonce = nonces.get((i * 31 + j * 7 + k) % nonces.len());
                            for nonce in [None, nonce] {
                                let want =
                                    typed_tst_info(&p.constants, policy, imprint, serial, gen_time, nonce);
                                let got = frame.tst_info(&policy, imprint, serial, gen_time, nonce).unwrap();
                                assert_eq!(got, want, "{}: serial {serial}, {gen_time}, {policy}", p.name);
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
        let (p, imprint, t) = (&profiles()[1], &imprints()[0], gen_times()[2]);
        let frame = TokenFrame::new(&p.constants).unwrap();
        for nonce in &nonces {
            let want = typed_tst_info(&p.constants, DEFAULT_POLICY, imprint, 42, t, Some(nonce));
            let got = frame.tst_info(&DEFAULT_POLICY, imprint, 42, t, Some(nonce)).unwrap();
            assert_eq!(got, want, "nonce {:02x?}", nonce.as_bytes());
            cases += 1;
        }
        assert!(cases > 1000, "{cases} cases");
    }

    #[test]
    fn content_info_matches_the_typed_encoder() {
        let nonces = nonces();
        let long_nonce = nonces.last().unwrap();
        let times = gen_times();
        for p in profiles() {
            let frame = TokenFrame::new(&p.constants).unwrap();
            assert!(frame.certificates.len() > 255, "{}: the certificates take a long-form length", p.name);
            let short = frame.tst_info(&DEFAULT_POLICY, &imprints()[0], 1, times[0], None).unwrap();
            let long =
                frame.tst_info(&policies()[1], &imprints()[2], u64::MAX, times[4], Some(long_nonce)).unwrap();
            for tst in [&short, &long] {
                for cert_req in [false, true] {
                    // Every signature length from a P-256 ECDSA one to an RSA-4096 one.
                    for sig_len in 64..=512usize {
                        let signature: Vec<u8> = (0..sig_len).map(|i| (i * 13 + sig_len) as u8).collect();
                        let (want, want_signed) = typed_token(&p.constants, tst, cert_req, &signature);
                        let mut signed = None;
                        let got = frame
                            .content_info(tst, cert_req, |attrs| {
                                signed = Some(attrs.to_vec());
                                Ok(signature.clone())
                            })
                            .unwrap();
                        let what = format!("{}, cert_req {cert_req}, {sig_len}-octet signature", p.name);
                        assert_eq!(signed.as_ref(), Some(&want_signed), "signed attributes: {what}");
                        assert_eq!(got, want.to_der().unwrap(), "token: {what}");
                    }
                }
            }
        }
    }

    #[test]
    fn granted_response_matches_the_typed_encoder() {
        let times = gen_times();
        for p in profiles() {
            let frame = TokenFrame::new(&p.constants).unwrap();
            for (i, serial) in SERIALS.into_iter().enumerate() {
                let nonce = nonces().into_iter().nth(i * 17);
                let tst =
                    frame.tst_info(&DEFAULT_POLICY, &imprints()[i % 4], serial, times[i % 6], nonce.as_ref());
                let tst = tst.unwrap();
                for (cert_req, sig_len) in [(false, 64), (false, 72), (true, 256), (true, 512)] {
                    let signature = vec![0x5a; sig_len];
                    let token = frame.content_info(&tst, cert_req, |_| Ok(signature.clone())).unwrap();
                    let (typed, _) = typed_token(&p.constants, &tst, cert_req, &signature);
                    let want = typed_response(typed);
                    assert_eq!(granted_response(&token).unwrap(), want, "{}, serial {serial}", p.name);
                    let back = TimeStampResp::from_der(&want).unwrap();
                    assert_eq!(back.time_stamp_token.unwrap().to_der().unwrap(), token);
                }
            }
        }
        // Tokens of every size across the one-, two- and three-octet length forms.
        for len in (0..300).chain(0xffd0..0x10010) {
            let token = ContentInfo {
                content_type: oids::ID_SIGNED_DATA,
                content: Any::new(Tag::OctetString, vec![0x11; len]).unwrap(),
            };
            let token_der = token.to_der().unwrap();
            assert_eq!(granted_response(&token_der).unwrap(), typed_response(token), "{len}");
        }
    }

    #[test]
    fn encoded_parts_match_the_der_encoder() {
        assert_eq!(ID_SIGNED_DATA_DER.as_slice(), oids::ID_SIGNED_DATA.to_der().unwrap());
        assert_eq!(ID_CT_TST_INFO_DER.as_slice(), oids::ID_CT_TST_INFO.to_der().unwrap());
        assert_eq!(ID_MESSAGE_DIGEST_DER.as_slice(), oids::ID_MESSAGE_DIGEST.to_der().unwrap());
        assert_eq!(VERSION_1_DER.as_slice(), 1u8.to_der().unwrap());
        assert_eq!(VERSION_3_DER.as_slice(), CmsVersion::V3.to_der().unwrap());
        let status = PkiStatusInfo { status: PkiStatus::Granted, status_string: None, fail_info: None };
        assert_eq!(GRANTED_STATUS_DER.as_slice(), status.to_der().unwrap());
        for len in [0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xff_ffff, 0x100_0000, 0xfff_ffff] {
            let mut h = Vec::new();
            push_header(&mut h, 0x04, len).unwrap();
            let want = der::Header::new(Tag::OctetString, len).unwrap().to_der().unwrap();
            assert_eq!(h, want, "length {len}");
            assert_eq!(tlv_len(len), want.len() + len);
        }
        // Over der's limit: an error, as from the typed encoder, not a panic or a wrong length.
        assert!(der::Header::new(Tag::OctetString, 0x1000_0000usize).is_err());
        assert!(matches!(push_header(&mut Vec::new(), 0x04, 0x1000_0000), Err(Error::Encoding(_))));
        assert!(matches!(push_header(&mut Vec::new(), 0x04, usize::MAX), Err(Error::Encoding(_))));
    }
}
