//! Signed checkpoints of the audit log's head: what `pki audit checkpoint` writes and `pki audit
//! verify --checkpoint` checks.
//!
//! A checkpoint is a CMS `SignedData` (RFC 5652) whose encapsulated content (`id-data`) is the
//! checkpoint's JSON ([`Checkpoint`]), signed by the audit signer ([`crate::Ca::audit_signer`],
//! issued by the issuing CA), with the signer's certificate and the issuing CA's in
//! `certificates`, and — as CAdES-T does — an RFC 3161 timestamp token over the signature value
//! as the unsigned attribute `id-aa-signatureTimeStampToken` (RFC 3161 appendix A):
//!
//! ```text
//! ContentInfo { id-signedData, SignedData {
//!     version 1, digestAlgorithms { SHA-256 | SHA-384 | SHA-512 },
//!     encapContentInfo { id-data, eContent OCTET STRING (checkpoint JSON) },
//!     certificates { audit signer, issuing CA },
//!     signerInfos { SignerInfo {
//!         version 1, sid IssuerAndSerialNumber, digestAlgorithm,
//!         signedAttrs { content-type id-data, message-digest },
//!         signatureAlgorithm, signature,
//!         unsignedAttrs { id-aa-signatureTimeStampToken: TimeStampToken } } } } }
//! ```
//!
//! The token's message imprint is the SHA-256 of the `signature` OCTET STRING's contents. The
//! timestamp authority is the caller's ([`Timestamper`]): ca-core does not depend on the TSA.

use chrono::{DateTime, Utc};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{OctetString, SetOfVec};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode};
use hsm_sim::{KeyType, Signer};
use serde::{Deserialize, Serialize};
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::Error;

/// The largest checkpoint file read (a real one is a few KiB).
pub const MAX_CHECKPOINT_BYTES: usize = 1 << 20;

/// The PEM label of a checkpoint written as PEM (as OpenSSL names CMS).
pub const PEM_LABEL: &str = "CMS";

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// id-aa-signatureTimeStampToken (RFC 3161 appendix A).
const ID_AA_SIGNATURE_TIME_STAMP_TOKEN: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.14");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The CA a checkpoint belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaIdentity {
    /// SHA-256 of the root certificate (hex).
    pub root_sha256: String,
    /// SHA-256 of the issuing CA certificate (hex).
    pub issuing_sha256: String,
    /// The issuing CA's subject.
    pub issuing: String,
}

/// What a checkpoint states: the log's head at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The format's version: 1.
    pub version: u32,
    /// The sequence number of the head entry.
    pub seq: u64,
    /// Its hash.
    pub head_hash: String,
    /// The number of entries up to it (entries are numbered from 1 without gaps: `seq`).
    pub entries: u64,
    /// When the checkpoint was made.
    pub time: DateTime<Utc>,
    /// Whose log it is.
    pub ca: CaIdentity,
}

/// Gets an RFC 3161 `TimeStampToken` (DER) whose imprint is the SHA-256 of the bytes given.
pub type Timestamper<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<u8>, String>;

/// Verifies a `TimeStampToken` (first argument) over the bytes given (second); its genTime.
pub type TimestampCheck<'a> = &'a dyn Fn(&[u8], &[u8]) -> Result<DateTime<Utc>, String>;

fn bad(reason: impl Into<String>) -> Error {
    Error::BadCheckpoint(reason.into())
}

fn enc(e: der::Error) -> Error {
    Error::Certificate(format!("encoding the checkpoint: {e}"))
}

/// The digest and signature algorithms of a key's signature scheme in CMS (RFC 5754, RFC 8419).
fn algorithms(kt: KeyType) -> (ObjectIdentifier, AlgorithmIdentifierOwned) {
    let (digest, sig, null) = match kt {
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => (ID_SHA256, SHA256_WITH_RSA, true),
        KeyType::P256 => (ID_SHA256, ECDSA_WITH_SHA256, false),
        KeyType::P384 => (ID_SHA384, ECDSA_WITH_SHA384, false),
        KeyType::Ed25519 => (ID_SHA512, ID_ED25519, false),
    };
    (digest, AlgorithmIdentifierOwned { oid: sig, parameters: null.then(Any::null) })
}

fn digest(alg: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    let a = match *alg {
        ID_SHA256 => &ring::digest::SHA256,
        ID_SHA384 => &ring::digest::SHA384,
        ID_SHA512 => &ring::digest::SHA512,
        _ => return None,
    };
    Some(ring::digest::digest(a, data).as_ref().to_vec())
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, Error> {
    Ok(Attribute { oid, values: SetOfVec::try_from(vec![value]).map_err(enc)? })
}

/// Signs `checkpoint` with `signer` (whose certificate chain, leaf first, is `chain`) and has the
/// signature timestamped by `stamp`; the DER of the ContentInfo.
pub fn sign(
    checkpoint: &Checkpoint,
    signer: &dyn Signer,
    chain: &[Vec<u8>],
    stamp: Timestamper<'_>,
) -> Result<Vec<u8>, Error> {
    let json = serde_json::to_vec(checkpoint).map_err(|e| bad(e.to_string()))?;
    let leaf_der = chain.first().ok_or_else(|| bad("no signer certificate"))?;
    let leaf = Certificate::from_der(leaf_der).map_err(enc)?;
    let (digest_oid, signature_algorithm) = algorithms(signer.key_type());
    let md = digest(&digest_oid, &json).ok_or_else(|| bad("unsupported digest"))?;
    let signed_attrs = SetOfVec::try_from(vec![
        attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA).map_err(enc)?)?,
        attribute(ID_MESSAGE_DIGEST, Any::encode_from(&OctetString::new(md).map_err(enc)?).map_err(enc)?)?,
    ])
    .map_err(enc)?;
    let signature = signer.sign(&signed_attrs.to_der().map_err(enc)?)?;
    let token = stamp(&signature).map_err(|e| Error::Timestamp(e.to_string()))?;
    let unsigned_attrs = SetOfVec::try_from(vec![attribute(
        ID_AA_SIGNATURE_TIME_STAMP_TOKEN,
        Any::from_der(&token).map_err(|e| Error::Timestamp(format!("the token does not decode: {e}")))?,
    )?])
    .map_err(enc)?;
    let digest_alg = AlgorithmIdentifierOwned { oid: digest_oid, parameters: None };
    let mut certs = Vec::new();
    for der in chain {
        certs.push(CertificateChoices::Certificate(Certificate::from_der(der).map_err(enc)?));
    }
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![digest_alg.clone()]).map_err(enc)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: Some(Any::encode_from(&OctetString::new(json).map_err(enc)?).map_err(enc)?),
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(certs).map_err(enc)?)),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: leaf.tbs_certificate.issuer.clone(),
                serial_number: leaf.tbs_certificate.serial_number.clone(),
            }),
            digest_alg,
            signed_attrs: Some(signed_attrs),
            signature_algorithm,
            signature: OctetString::new(signature).map_err(enc)?,
            unsigned_attrs: Some(unsigned_attrs),
        }])
        .map_err(enc)?,
    };
    ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&signed_data).map_err(enc)? }
        .to_der()
        .map_err(enc)
}

/// A checkpoint as read from its file, its signature checked.
#[derive(Debug, Clone)]
pub struct Opened {
    /// What it states.
    pub checkpoint: Checkpoint,
    /// The signer certificate (DER).
    pub signer_der: Vec<u8>,
    /// The timestamp token over the signature.
    pub token: Vec<u8>,
    /// The signature value the token covers.
    pub signature: Vec<u8>,
}

/// The single value of the attribute `oid` of `attrs`.
fn single<'a>(attrs: &'a SetOfVec<Attribute>, oid: ObjectIdentifier, what: &str) -> Result<&'a Any, Error> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    match (found.next(), found.next()) {
        (Some(a), None) if a.values.len() == 1 => {
            a.values.get(0).ok_or_else(|| bad(format!("the {what} attribute is empty")))
        }
        (None, _) => Err(bad(format!("no {what} attribute"))),
        _ => Err(bad(format!("the {what} attribute is not single-valued"))),
    }
}

/// Reads a checkpoint (DER, or PEM), checks its CMS signature by the certificate it names, and
/// returns what it states. The signer certificate, its chain and the timestamp are the caller's
/// to check ([`crate::Ca::verify_audit_checkpoint`]).
pub fn open(bytes: &[u8]) -> Result<Opened, Error> {
    if bytes.len() > MAX_CHECKPOINT_BYTES {
        return Err(bad(format!("the file has {} bytes, more than {MAX_CHECKPOINT_BYTES}", bytes.len())));
    }
    let der_bytes = if bytes.starts_with(b"-----BEGIN") {
        let p = ::pem::parse(bytes).map_err(|e| bad(format!("not PEM: {e}")))?;
        if p.tag() != PEM_LABEL && p.tag() != "PKCS7" {
            return Err(bad(format!("PEM label {:?}, expected {PEM_LABEL:?}", p.tag())));
        }
        p.into_contents()
    } else {
        bytes.to_vec()
    };
    let format = |e: der::Error| bad(format!("not a CMS SignedData: {e}"));
    let ci = ContentInfo::from_der(&der_bytes).map_err(format)?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(bad(format!("content type {} is not signedData", ci.content_type)));
    }
    let sd: SignedData = ci.content.decode_as().map_err(format)?;
    if sd.encap_content_info.econtent_type != ID_DATA {
        return Err(bad("the encapsulated content is not id-data"));
    }
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| bad("no encapsulated content (detached)"))?
        .decode_as::<OctetString>()
        .map_err(format)?;
    let [si] = sd.signer_infos.0.as_slice() else {
        return Err(bad(format!("{} signer infos; expected one", sd.signer_infos.0.len())));
    };
    let SignerIdentifier::IssuerAndSerialNumber(ias) = &si.sid else {
        return Err(bad("the signer is not named by issuer and serial number"));
    };
    let signer = sd
        .certificates
        .iter()
        .flat_map(|s| s.0.iter())
        .find_map(|c| match c {
            CertificateChoices::Certificate(c)
                if c.tbs_certificate.issuer == ias.issuer
                    && c.tbs_certificate.serial_number == ias.serial_number =>
            {
                Some(c)
            }
            _ => None,
        })
        .ok_or_else(|| bad("the signer certificate is not in the checkpoint"))?;
    let signer_der = signer.to_der().map_err(format)?;
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| bad("no signed attributes"))?;
    if single(attrs, ID_CONTENT_TYPE, "content-type")?.decode_as::<ObjectIdentifier>().ok() != Some(ID_DATA) {
        return Err(bad("the content-type attribute is not id-data"));
    }
    let md =
        single(attrs, ID_MESSAGE_DIGEST, "message-digest")?.decode_as::<OctetString>().map_err(format)?;
    let want = digest(&si.digest_alg.oid, content.as_bytes())
        .ok_or_else(|| bad(format!("digest algorithm {} is not accepted", si.digest_alg.oid)))?;
    if md.as_bytes() != want.as_slice() {
        return Err(bad(
            "the message-digest attribute does not match the content: the checkpoint was altered",
        ));
    }
    let signed = attrs.to_der().map_err(format)?;
    verify_signature(&signer_der, &si.signature_algorithm.oid, &signed, si.signature.as_bytes())?;
    let unsigned = si.unsigned_attrs.as_ref().ok_or_else(|| bad("it carries no timestamp"))?;
    let token = single(unsigned, ID_AA_SIGNATURE_TIME_STAMP_TOKEN, "signature-time-stamp")?
        .to_der()
        .map_err(format)?;
    let checkpoint: Checkpoint = serde_json::from_slice(content.as_bytes())
        .map_err(|e| bad(format!("the signed content is not a checkpoint: {e}")))?;
    if checkpoint.version != 1 {
        return Err(bad(format!("checkpoint version {} is not known", checkpoint.version)));
    }
    if checkpoint.entries != checkpoint.seq || checkpoint.seq == 0 {
        return Err(bad(format!(
            "it states entry {} as the head of {} entries",
            checkpoint.seq, checkpoint.entries
        )));
    }
    Ok(Opened { checkpoint, signer_der, token, signature: si.signature.as_bytes().to_vec() })
}

/// Verifies `signature` over `message` by the key of the certificate `cert_der`.
fn verify_signature(
    cert_der: &[u8],
    alg: &ObjectIdentifier,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    use ring::signature as rs;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| bad(format!("the signer certificate does not parse: {e}")))?;
    let ring_alg: &dyn rs::VerificationAlgorithm = match *alg {
        SHA256_WITH_RSA => &rs::RSA_PKCS1_2048_8192_SHA256,
        ECDSA_WITH_SHA256 => &rs::ECDSA_P256_SHA256_ASN1,
        ECDSA_WITH_SHA384 => &rs::ECDSA_P384_SHA384_ASN1,
        ID_ED25519 => &rs::ED25519,
        other => return Err(bad(format!("signature algorithm {other} is not accepted"))),
    };
    let key = &cert.public_key().subject_public_key.data;
    rs::UnparsedPublicKey::new(ring_alg, key)
        .verify(message, signature)
        .map_err(|_| bad("the signature does not verify: the checkpoint was altered"))
}
