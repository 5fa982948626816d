//! CMS `SignedData` (RFC 5652 §5) of a MIME entity, signed in key custody, with RustCrypto's
//! `cms`: its `SignerInfoBuilder` makes the signer info (message digest and content type
//! attributes, the signature over the signed attributes); the `SignedData` around it, with the
//! sender's chain, is the crate's structure filled in here (its `SignedDataBuilder` would encode
//! and decode it once more for every message). Added here: the signing-time and S/MIME
//! capabilities attributes (RFC 8551 §2.5) and, when asked, an RFC 3161 timestamp of the
//! signature value as the unsigned attribute `id-aa-signatureTimeStampToken` (RFC 3161 appendix
//! A) — which needs the signature, so the signer info is built first and put into the
//! `SignedData` after.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cms::builder::SignerInfoBuilder;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::CmsVersion;
use cms::signed_data::{
    CertificateSet, DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignerIdentifier, SignerInfo,
    SignerInfos,
};
use der::asn1::{ContextSpecificRef, ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, Encode, EncodeValue, FixedTag, Length, Tag, TagMode, TagNumber, Writer};
use hsm_sim::{SignatureScheme, Signer};
use x509_cert::attr::Attribute;
use x509_cert::builder::Builder as _;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SignatureBitStringEncoding,
};
use x509_cert::Certificate;

use crate::envelope::ContentInfoOf;
use crate::{oids, Error};

/// A timestamp of a signature value: the TSA's token and its serial.
#[derive(Debug, Clone)]
pub struct SignatureTimestamp {
    /// The `TimeStampToken` (a CMS `ContentInfo`), DER.
    pub token: Vec<u8>,
    /// Its serial number, in decimal, as the TSA records it.
    pub serial: String,
}

/// A timestamp whose record at the TSA may not be durable yet ([`Timestamper::issue`]): its
/// token may go into the message, which is handed out only once `on_disk` returned `Ok`.
pub struct IssuedTimestamp {
    /// The token and its serial.
    pub stamp: SignatureTimestamp,
    /// Waits until the TSA's record of the token is durable; on any thread.
    pub on_disk: OnDisk,
}

/// A wait until a record is durable ([`IssuedTimestamp::on_disk`]).
pub type OnDisk = Box<dyn FnOnce() -> Result<(), Error> + Send>;

/// Who stamps signature values: the TSA in process, or anything else that answers with a token
/// over the SHA-256 of the bytes it is given.
pub trait Timestamper: Send + Sync {
    /// A token whose message imprint is the SHA-256 of `signature_value`.
    fn stamp(&self, signature_value: &[u8]) -> Result<SignatureTimestamp, Error>;

    /// [`Timestamper::stamp`], returned before the TSA's record of the token is durable when
    /// the TSA can say so: the caller finishes its message meanwhile and waits on `on_disk`
    /// before handing it out. By default the token once it is durable.
    fn issue(&self, signature_value: &[u8]) -> Result<IssuedTimestamp, Error> {
        Ok(IssuedTimestamp { stamp: self.stamp(signature_value)?, on_disk: Box::new(|| Ok(())) })
    }

    /// Tokens for many signature values, in order; an implementation may make them in one
    /// batch.
    fn stamp_many(&self, signature_values: &[&[u8]]) -> Vec<Result<SignatureTimestamp, Error>> {
        signature_values.iter().map(|v| self.stamp(v)).collect()
    }
}

/// A sender's key in custody and its certificate chain (leaf first, then the issuing CA).
#[derive(Clone)]
pub struct SenderKey {
    /// The key.
    pub signer: Arc<dyn Signer>,
    /// The leaf, parsed.
    pub leaf: Certificate,
    /// The chain as it goes into the message, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The same chain as the `certificates` of every message's `SignedData` (`[0] IMPLICIT
    /// CertificateSet`), DER made once: a set's members are sorted by their DER, and parsed
    /// certificates would be copied and encoded again for every message.
    certificates_der: Vec<u8>,
}

impl std::fmt::Debug for SenderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKey").field("handle", self.signer.handle()).finish_non_exhaustive()
    }
}

impl SenderKey {
    /// The key and its chain (DER, leaf first); refused when the leaf does not parse or does not
    /// hold the key's public half.
    pub fn new(signer: Arc<dyn Signer>, chain: Vec<Vec<u8>>) -> Result<Self, Error> {
        let leaf_der =
            chain.first().ok_or_else(|| Error::Internal("a sender without a certificate".into()))?;
        let leaf = Certificate::from_der(leaf_der)
            .map_err(|e| Error::Internal(format!("the sender certificate does not parse: {e}")))?;
        if leaf.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes()
            != signer.public_key_raw()
        {
            return Err(Error::Internal("the sender certificate does not hold the sender's key".into()));
        }
        let parsed = chain
            .iter()
            .map(|der| Certificate::from_der(der).map(CertificateChoices::Certificate))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(format!("the sender's chain does not parse: {e}")))?;
        let certificates = CertificateSet(SetOfVec::try_from(parsed).map_err(Error::encoding)?);
        let certificates_der = ContextSpecificRef {
            tag_number: TagNumber::N0,
            tag_mode: TagMode::Implicit,
            value: &certificates,
        }
        .to_der()
        .map_err(Error::encoding)?;
        Ok(SenderKey { signer, leaf, chain, certificates_der })
    }
}

/// A signature made in custody, as the builders take it.
struct CustodySignature(Vec<u8>);

impl SignatureBitStringEncoding for CustodySignature {
    fn to_bitstring(&self) -> der::Result<der::asn1::BitString> {
        der::asn1::BitString::from_bytes(&self.0)
    }
}

/// The custody key seen by the builders: `signature::Signer` over the key's [`Signer`].
struct CustodyKey<'a> {
    signer: &'a dyn Signer,
}

impl signature::Keypair for CustodyKey<'_> {
    type VerifyingKey = Vec<u8>;
    fn verifying_key(&self) -> Vec<u8> {
        self.signer.public_key_spki().to_vec()
    }
}

impl DynSignatureAlgorithmIdentifier for CustodyKey<'_> {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        Ok(signature_algorithm(self.signer.key_type().signature_scheme()).1)
    }
}

impl signature::Signer<CustodySignature> for CustodyKey<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<CustodySignature, signature::Error> {
        self.signer.sign(msg).map(CustodySignature).map_err(signature::Error::from_source)
    }
}

/// The digest and signature algorithms of a scheme.
fn signature_algorithm(scheme: SignatureScheme) -> (AlgorithmIdentifierOwned, AlgorithmIdentifierOwned) {
    let (digest, sig, null) = match scheme {
        SignatureScheme::RsaPkcs1Sha256 => (oids::SHA256, oids::SHA256_WITH_RSA, true),
        SignatureScheme::EcdsaP256Sha256 => (oids::SHA256, oids::ECDSA_WITH_SHA256, false),
        SignatureScheme::EcdsaP384Sha384 => (oids::SHA384, oids::ECDSA_WITH_SHA384, false),
        SignatureScheme::Ed25519 => (oids::SHA512, oids::ED25519, false),
    };
    (
        AlgorithmIdentifierOwned { oid: digest, parameters: None },
        AlgorithmIdentifierOwned { oid: sig, parameters: null.then(Any::null) },
    )
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, Error> {
    let mut values = SetOfVec::new();
    values.insert(value).map_err(Error::encoding)?;
    Ok(Attribute { oid, values })
}

/// `signingTime` (RFC 5652 §11.3): UTCTime until 2049, GeneralizedTime after.
fn signing_time(at: DateTime<Utc>) -> Result<Attribute, Error> {
    let secs =
        u64::try_from(at.timestamp()).map_err(|_| Error::Internal("a signing time before 1970".into()))?;
    let dt =
        der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs)).map_err(Error::encoding)?;
    let time = if dt.year() < 2050 {
        x509_cert::time::Time::UtcTime(der::asn1::UtcTime::from_date_time(dt).map_err(Error::encoding)?)
    } else {
        x509_cert::time::Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(dt))
    };
    let value = Any::from_der(&time.to_der().map_err(Error::encoding)?).map_err(Error::encoding)?;
    attribute(oids::SIGNING_TIME, value)
}

/// `SMIMECapabilities` (RFC 8551 §2.5.2): what this sender can decrypt, strongest first — the
/// AES-CBC ciphers the widest range of clients uses.
///
/// ```text
/// SMIMECapabilities ::= SEQUENCE OF SMIMECapability
/// SMIMECapability ::= SEQUENCE { capabilityID OBJECT IDENTIFIER, parameters ANY OPTIONAL }
/// ```
fn smime_capabilities() -> Result<Attribute, Error> {
    let caps: Vec<AlgorithmIdentifierOwned> = [oids::AES256_CBC, oids::AES192_CBC, oids::AES128_CBC]
        .into_iter()
        .map(|oid| AlgorithmIdentifierOwned { oid, parameters: None })
        .collect();
    let value = Any::from_der(&caps.to_der().map_err(Error::encoding)?).map_err(Error::encoding)?;
    attribute(oids::SMIME_CAPABILITIES, value)
}

/// How the content travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulation {
    /// Inside the `SignedData` (`application/pkcs7-mime; smime-type=signed-data`).
    Opaque,
    /// Beside it (`multipart/signed`): the `SignedData` carries no content.
    Detached,
}

/// A `SignedData` made: its DER (a `ContentInfo`) and its timestamp, if one was asked for.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The `ContentInfo` of the `SignedData`, DER.
    pub der: Vec<u8>,
    /// The timestamp of the signature value.
    pub timestamp: Option<SignatureTimestamp>,
}

/// Signs `entity` (a canonical MIME entity) with `key` at `now`; with `tsa`, timestamps the
/// signature value: [`sign_unstamped`], the token, then [`Unstamped::finish`].
pub fn sign(
    entity: &[u8],
    key: &SenderKey,
    now: DateTime<Utc>,
    encapsulation: Encapsulation,
    tsa: Option<&dyn Timestamper>,
) -> Result<Signed, Error> {
    let unstamped = sign_unstamped(entity, key, now, encapsulation)?;
    let stamp = tsa.map(|t| t.stamp(unstamped.signature_value())).transpose()?;
    unstamped.finish(key, stamp)
}

/// A signer info made, waiting for the timestamp of its signature value (or none) before it
/// goes into its `SignedData`: a bulk run signs every message first, then has all signature
/// values stamped in one batch.
#[derive(Debug, Clone)]
pub struct Unstamped {
    eci: EncapsulatedContentInfo,
    digest_alg: AlgorithmIdentifierOwned,
    signer_info: SignerInfo,
}

/// The signer info of `entity` signed with `key` at `now`.
///
/// 1. the encapsulated content: `id-data` with the entity (opaque) or without it (detached, the
///    entity's digest given to the builder instead);
/// 2. the signer info from `SignerInfoBuilder` with signing time and S/MIME capabilities.
pub fn sign_unstamped(
    entity: &[u8],
    key: &SenderKey,
    now: DateTime<Utc>,
    encapsulation: Encapsulation,
) -> Result<Unstamped, Error> {
    match encapsulation {
        Encapsulation::Opaque => {
            let octets = OctetString::new(entity).map_err(Error::encoding)?;
            let econtent =
                Any::from_der(&octets.to_der().map_err(Error::encoding)?).map_err(Error::encoding)?;
            signer_info(
                EncapsulatedContentInfo { econtent_type: oids::DATA, econtent: Some(econtent) },
                None,
                key,
                now,
            )
        }
        Encapsulation::Detached => {
            let mut hasher = EntityDigest::of(key).hasher();
            hasher.update(entity);
            sign_detached_digest(&hasher.finish(), key, now)
        }
    }
}

/// The signer info of a detached entity whose digest ([`EntityDigest::of`] `key`) is `digest`,
/// signed with `key` at `now`: for an entity hashed while it is encrypted
/// ([`crate::envelope::CbcSealing`]).
pub fn sign_detached_digest(digest: &[u8], key: &SenderKey, now: DateTime<Utc>) -> Result<Unstamped, Error> {
    let eci = EncapsulatedContentInfo { econtent_type: oids::DATA, econtent: None };
    signer_info(eci, Some(digest), key, now)
}

fn signer_info(
    eci: EncapsulatedContentInfo,
    external_digest: Option<&[u8]>,
    key: &SenderKey,
    now: DateTime<Utc>,
) -> Result<Unstamped, Error> {
    let (digest_alg, _) = signature_algorithm(key.signer.key_type().signature_scheme());
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: key.leaf.tbs_certificate.issuer.clone(),
        serial_number: key.leaf.tbs_certificate.serial_number.clone(),
    });
    let custody = CustodyKey { signer: &*key.signer };
    let mut sib = SignerInfoBuilder::new(&custody, sid, digest_alg.clone(), &eci, external_digest)
        .map_err(Error::cms)?;
    sib.add_signed_attribute(signing_time(now)?).map_err(Error::cms)?;
    sib.add_signed_attribute(smime_capabilities()?).map_err(Error::cms)?;
    let signer_info: SignerInfo =
        sib.build::<CustodySignature>().map_err(|e| Error::Signing(e.to_string()))?;
    Ok(Unstamped { eci, digest_alg, signer_info })
}

/// The digest a key's signatures are made over (RFC 5754, RFC 8419): SHA-256 for RSA and
/// P-256, SHA-384 for P-384, SHA-512 for Ed25519.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityDigest {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl EntityDigest {
    /// The digest of `key`'s signatures.
    pub fn of(key: &SenderKey) -> Self {
        match key.signer.key_type().signature_scheme() {
            SignatureScheme::RsaPkcs1Sha256 | SignatureScheme::EcdsaP256Sha256 => EntityDigest::Sha256,
            SignatureScheme::EcdsaP384Sha384 => EntityDigest::Sha384,
            SignatureScheme::Ed25519 => EntityDigest::Sha512,
        }
    }

    /// Its name in a `multipart/signed`'s `micalg` parameter (RFC 8551 §3.5.3.2).
    pub fn micalg(self) -> &'static str {
        match self {
            EntityDigest::Sha256 => "sha-256",
            EntityDigest::Sha384 => "sha-384",
            EntityDigest::Sha512 => "sha-512",
        }
    }

    /// A hash of this digest, empty.
    pub fn hasher(self) -> Hasher {
        use sha2::Digest as _;
        match self {
            EntityDigest::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            EntityDigest::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            EntityDigest::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// A hash being taken ([`EntityDigest::hasher`]): RustCrypto's `sha2`, whose SHA-256 uses the
/// CPU's SHA extensions, fed a block at a time by [`crate::envelope::CbcSealing`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-384.
    Sha384(sha2::Sha384),
    /// SHA-512.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Hashes `data` next.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

impl Unstamped {
    /// The signature value, which a timestamp covers.
    pub fn signature_value(&self) -> &[u8] {
        self.signer_info.signature.as_bytes()
    }

    /// The `SignedData`: the token (if any) as the unsigned attribute
    /// `id-aa-signatureTimeStampToken`, `key`'s chain and the signer info put in.
    pub fn finish(self, key: &SenderKey, stamp: Option<SignatureTimestamp>) -> Result<Signed, Error> {
        let Unstamped { eci, digest_alg, mut signer_info } = self;
        if let Some(stamp) = &stamp {
            let token = Any::from_der(&stamp.token).map_err(Error::encoding)?;
            let mut attrs = SetOfVec::new();
            attrs.insert(attribute(oids::SIGNATURE_TIME_STAMP_TOKEN, token)?).map_err(Error::encoding)?;
            signer_info.unsigned_attrs = Some(attrs);
        }
        let mut digest_algorithms = SetOfVec::new();
        digest_algorithms.insert(digest_alg).map_err(Error::encoding)?;
        let mut infos = SetOfVec::new();
        infos.insert(signer_info).map_err(Error::encoding)?;
        let sd = SignedDataOut {
            digest_algorithms: &digest_algorithms,
            encap_content_info: &eci,
            certificates_der: &key.certificates_der,
            signer_infos: &SignerInfos(infos),
        };
        let ci = ContentInfoOf { content_type: oids::SIGNED_DATA, content: &sd };
        Ok(Signed { der: ci.to_der().map_err(Error::encoding)?, timestamp: stamp })
    }
}

/// `SignedData` (RFC 5652 §5.1) as this module writes it, encoded in one pass inside its
/// `ContentInfo` ([`ContentInfoOf`]): version 1 (the content is `id-data`, the one signer info is
/// of version 1, issuer and serial number, and the certificates are X.509 ones), the sender's
/// certificates as the DER its [`SenderKey`] made once, no CRLs.
struct SignedDataOut<'a> {
    digest_algorithms: &'a DigestAlgorithmIdentifiers,
    encap_content_info: &'a EncapsulatedContentInfo,
    /// `[0] IMPLICIT CertificateSet`, DER.
    certificates_der: &'a [u8],
    signer_infos: &'a SignerInfos,
}

impl EncodeValue for SignedDataOut<'_> {
    fn value_len(&self) -> der::Result<Length> {
        CmsVersion::V1.encoded_len()?
            + self.digest_algorithms.encoded_len()?
            + self.encap_content_info.encoded_len()?
            + Length::try_from(self.certificates_der.len())?
            + self.signer_infos.encoded_len()?
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        CmsVersion::V1.encode(writer)?;
        self.digest_algorithms.encode(writer)?;
        self.encap_content_info.encode(writer)?;
        writer.write(self.certificates_der)?;
        self.signer_infos.encode(writer)
    }
}

impl FixedTag for SignedDataOut<'_> {
    const TAG: Tag = Tag::Sequence;
}

#[cfg(test)]
mod tests {
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    use hsm_sim::{HsmSim, KeyCustody, KeyHandle, KeyPurpose, KeyType, MasterKeySource};

    use super::*;

    /// A sender key of `key_type` in a throw-away custody, with a chain of two certificates.
    fn sender(dir: &std::path::Path, key_type: KeyType) -> SenderKey {
        let hsm = HsmSim::open(dir.join("keys"), &MasterKeySource::KeyFile).expect("custody");
        let handle: KeyHandle = "mail/sender-test".parse().expect("handle");
        let public = hsm.generate(&handle, key_type, KeyPurpose::MailSigning).expect("generate");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_der = ca_params.self_signed(&ca_key).expect("CA").der().to_vec();
        let ca = rcgen::Issuer::new(ca_params, ca_key);
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&public.spki).expect("spki");
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let leaf = params.signed_by(&spki, &ca).expect("leaf").der().to_vec();
        SenderKey::new(hsm.signer(&handle).expect("signer"), vec![leaf, ca_der]).expect("sender key")
    }

    /// The `SignedData` written in one pass, with the chain's DER made once per sender, is what
    /// the `cms` crate reads and encodes again byte for byte: version 1, the chain, no CRLs, the
    /// token as the unsigned attribute when there is one.
    #[test]
    fn signed_data_in_one_pass_is_the_cms_crate_s_encoding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = sender(dir.path(), KeyType::P256);
        let unstamped = sign_detached_digest(&[7u8; 32], &key, Utc::now()).expect("sign");
        let token = key.chain[1].clone();
        for stamp in [None, Some(SignatureTimestamp { token: token.clone(), serial: "1".into() })] {
            let stamped = stamp.is_some();
            let signed = unstamped.clone().finish(&key, stamp).expect("finish");
            let ci = ContentInfo::from_der(&signed.der).expect("ContentInfo");
            assert_eq!(ci.content_type, oids::SIGNED_DATA);
            let sd: SignedData = ci.content.decode_as().expect("SignedData");
            let again =
                ContentInfo { content_type: ci.content_type, content: Any::encode_from(&sd).expect("any") }
                    .to_der()
                    .expect("DER");
            assert!(again == signed.der, "the cms crate's encoding");
            assert_eq!((sd.version, sd.crls.is_none()), (CmsVersion::V1, true));
            let chain: Vec<Vec<u8>> = sd
                .certificates
                .expect("certificates")
                .0
                .iter()
                .map(|c| match c {
                    CertificateChoices::Certificate(c) => c.to_der().expect("DER"),
                    other => panic!("{other:?}"),
                })
                .collect();
            let mut expected = key.chain.clone();
            expected.sort();
            assert_eq!(chain, expected, "the chain, in DER order");
            let si = sd.signer_infos.0.get(0).expect("a signer info");
            let attrs = si.unsigned_attrs.as_ref().map(|a| a.iter().map(|a| a.oid).collect::<Vec<_>>());
            assert_eq!(attrs, stamped.then(|| vec![oids::SIGNATURE_TIME_STAMP_TOKEN]));
        }
    }
}
