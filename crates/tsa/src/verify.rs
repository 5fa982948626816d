//! Auditors' verification of timestamp tokens, and the certificate checks it shares with the TSA.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{AnyRef, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Reader, SliceReader};
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::Certificate;

use cerdb::tsa_store::{TokenLedger, TsaSerial};

use crate::asn1::{u64_from_int, PkiStatus, SigningCertificateV2, TimeStampResp, TstInfo};
use crate::crypto::{sha256, verify_signature, DataDigests, HashAlg};
use crate::{oids, Check, Error};

/// Longest chain from the TSA certificate to the root that is followed.
const MAX_CHAIN: usize = 8;

/// A decoded certificate with its DER and the exact bytes of its TBSCertificate.
#[derive(Debug, Clone)]
pub(crate) struct ParsedCert {
    pub(crate) der: Vec<u8>,
    pub(crate) cert: Certificate,
    tbs: Vec<u8>,
}

impl ParsedCert {
    pub(crate) fn from_der(der: &[u8]) -> Result<Self, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("not a DER certificate: {e}"))?;
        Self::with_cert(der.to_vec(), cert)
    }

    fn with_cert(der: Vec<u8>, cert: Certificate) -> Result<Self, String> {
        // The signature covers the TBSCertificate as received: take its bytes, don't re-encode.
        let tbs = (|| -> der::Result<Vec<u8>> {
            let outer = AnyRef::from_der(&der)?;
            let mut reader = SliceReader::new(outer.value())?;
            let tbs: AnyRef<'_> = reader.decode()?;
            tbs.to_der()
        })()
        .map_err(|e| format!("certificate structure: {e}"))?;
        Ok(ParsedCert { der, cert, tbs })
    }

    fn subject(&self) -> &Name {
        &self.cert.tbs_certificate.subject
    }

    fn issuer(&self) -> &Name {
        &self.cert.tbs_certificate.issuer
    }

    pub(crate) fn subject_string(&self) -> String {
        self.subject().to_string()
    }

    fn extensions(&self, oid: ObjectIdentifier) -> impl Iterator<Item = &Extension> {
        self.cert.tbs_certificate.extensions.iter().flatten().filter(move |e| e.extn_id == oid)
    }

    pub(crate) fn valid_at(&self, t: DateTime<Utc>) -> bool {
        let v = &self.cert.tbs_certificate.validity;
        let secs = |time: x509_cert::time::Time| time.to_unix_duration().as_secs() as i64;
        // Validity is in whole seconds; notAfter is inclusive (RFC 5280 §4.1.2.5).
        let ts = t.timestamp();
        secs(v.not_before) <= ts && ts <= secs(v.not_after)
    }

    fn is_ca(&self) -> bool {
        self.extensions(oids::ID_CE_BASIC_CONSTRAINTS)
            .next()
            .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|bc| bc.ca)
    }

    /// Whether `issuer` issued this certificate: names match and its key verifies the signature.
    pub(crate) fn is_issued_by(&self, issuer: &ParsedCert) -> Result<(), String> {
        if !same_name(self.issuer(), issuer.subject()) {
            return Err("issuer name does not match".into());
        }
        verify_signature(
            &self.cert.signature_algorithm,
            None,
            &issuer.cert.tbs_certificate.subject_public_key_info,
            &self.tbs,
            self.cert.signature.raw_bytes(),
        )
    }
}

fn same_name(a: &Name, b: &Name) -> bool {
    match (a.to_der(), b.to_der()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// RFC 3161 §2.3: the TSA certificate has exactly one extended key usage, id-kp-timeStamping, in
/// a critical extension; a keyUsage, when present, allows digitalSignature or nonRepudiation.
pub(crate) fn check_tsa_certificate(cert: &ParsedCert) -> Result<(), String> {
    let subject = cert.subject_string();
    let mut ekus = cert.extensions(oids::ID_CE_EXT_KEY_USAGE);
    let eku = ekus.next().ok_or_else(|| format!("{subject} has no extended key usage"))?;
    if ekus.next().is_some() {
        return Err(format!("{subject} has two extended key usage extensions"));
    }
    if !eku.critical {
        return Err(format!("the extended key usage of {subject} is not critical"));
    }
    let purposes = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes())
        .map_err(|e| format!("extended key usage of {subject}: {e}"))?;
    if purposes.0 != [oids::ID_KP_TIME_STAMPING] {
        return Err(format!("the extended key usage of {subject} is not id-kp-timeStamping alone"));
    }
    if let Some(ku) = cert.extensions(oids::ID_CE_KEY_USAGE).next() {
        let ku = KeyUsage::from_der(ku.extn_value.as_bytes())
            .map_err(|e| format!("key usage of {subject}: {e}"))?;
        if !(ku.0.contains(KeyUsages::DigitalSignature) || ku.0.contains(KeyUsages::NonRepudiation)) {
            return Err(format!("the key usage of {subject} allows no signatures"));
        }
    }
    Ok(())
}

/// Follows issuers from `leaf` through `pool` to `root`, each certificate valid at `at`.
fn check_chain(
    leaf: &ParsedCert,
    pool: &[ParsedCert],
    root: &ParsedCert,
    at: DateTime<Utc>,
) -> Result<(), String> {
    if !root.valid_at(at) {
        return Err(format!("the root {} is not valid at genTime {at}", root.subject_string()));
    }
    let mut current = leaf;
    for _ in 0..MAX_CHAIN {
        if !current.valid_at(at) {
            return Err(format!("{} is not valid at genTime {at}", current.subject_string()));
        }
        if current.der == root.der {
            return Ok(());
        }
        if same_name(current.issuer(), root.subject()) && current.is_issued_by(root).is_ok() {
            return Ok(());
        }
        current = pool
            .iter()
            .find(|c| c.der != current.der && c.is_ca() && current.is_issued_by(c).is_ok())
            .ok_or_else(|| {
                format!(
                    "no certificate issued {} (issuer {}) and none leads to the trusted root",
                    current.subject_string(),
                    current.issuer()
                )
            })?;
    }
    Err(format!("no path to the root within {MAX_CHAIN} certificates"))
}

/// What was timestamped, as the auditor has it.
#[derive(Debug, Clone, Copy)]
pub enum Timestamped<'a> {
    /// The data itself; hashed with the token's algorithm.
    Data(&'a [u8]),
    /// The digest of the data, computed with the token's hash algorithm.
    Digest(&'a [u8]),
    /// The data as it was streamed in, hashed with every imprint algorithm (the token's is used).
    Streamed(&'a DataDigests),
    /// The data's digests with imprint algorithms, each with its algorithm's dotted OID, as
    /// [`DataDigests::values`] gives them where the data was read (the token's is used).
    Digests(&'a [(String, Vec<u8>)]),
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// genTime.
    pub gen_time: DateTime<Utc>,
    /// The TSA policy.
    pub policy: ObjectIdentifier,
    /// The serial number.
    pub serial: TsaSerial,
    /// The subject of the TSA certificate that signed it (RFC 4514 form).
    pub tsa_name: String,
    /// The message imprint's hash algorithm (`SHA-256`, ...).
    pub hash_algorithm: &'static str,
}

fn fail(check: Check, reason: impl Into<String>) -> Error {
    Error::verification(check, reason)
}

/// The single value of the signed attribute `oid`.
fn attribute(si: &SignerInfo, oid: ObjectIdentifier, check: Check) -> Result<&der::Any, Error> {
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| fail(Check::Signature, "no signed attributes"))?;
    let mut found = attrs.iter().filter(|a: &&Attribute| a.oid == oid);
    let attr = found.next().ok_or_else(|| fail(check, format!("no {oid} signed attribute")))?;
    if found.next().is_some() || attr.values.len() != 1 {
        return Err(fail(check, format!("the {oid} signed attribute is not single-valued")));
    }
    attr.values.get(0).ok_or_else(|| fail(check, format!("the {oid} signed attribute is empty")))
}

/// Verifies a timestamp token for an auditor. Checks, in order, stopping at the first failure
/// (named by [`Error::Verification`]'s [`Check`]):
///
/// 1. format: a granted `TimeStampResp` or a bare token; CMS SignedData with one SignerInfo and
///    an encapsulated `TSTInfo`;
/// 2. signature: content-type and message-digest attributes, then the signature over the signed
///    attributes by the signer certificate (found in the token or in `untrusted`);
/// 3. chain: the signer certificate is a TSA certificate and chains to `root_der`, every
///    certificate valid at genTime;
/// 4. signing certificate: the signing-certificate-v2 attribute's ESSCertIDv2 is the signer
///    certificate's hash (and issuer/serial when present);
/// 5. imprint: the message imprint matches the data or digest;
/// 6. record: the serial is in `ledger` with the SHA-256 of this token.
pub fn verify(
    token: &[u8],
    subject: Timestamped<'_>,
    root_der: &[u8],
    untrusted: &[Vec<u8>],
    ledger: &dyn TokenLedger,
) -> Result<VerifiedToken, Error> {
    let root =
        ParsedCert::from_der(root_der).map_err(|e| Error::Certificate(format!("trusted root: {e}")))?;

    // 1. Format.
    let format = |r: String| fail(Check::Format, r);
    let content_info = match TimeStampResp::from_der(token) {
        Ok(resp) => {
            if !matches!(resp.status.status, PkiStatus::Granted | PkiStatus::GrantedWithMods) {
                return Err(format(format!("the response has status {:?}", resp.status.status)));
            }
            resp.time_stamp_token.ok_or_else(|| format("the response carries no token".into()))?
        }
        Err(_) => ContentInfo::from_der(token)
            .map_err(|e| format(format!("neither a TimeStampResp nor a TimeStampToken: {e}")))?,
    };
    let token_der = content_info.to_der().map_err(|e| format(e.to_string()))?;
    if content_info.content_type != oids::ID_SIGNED_DATA {
        return Err(format(format!("content type {} is not signedData", content_info.content_type)));
    }
    let sd: SignedData = content_info.content.decode_as().map_err(|e| format(format!("SignedData: {e}")))?;
    if sd.encap_content_info.econtent_type != oids::ID_CT_TST_INFO {
        return Err(format("the encapsulated content is not a TSTInfo".into()));
    }
    let econtent =
        sd.encap_content_info.econtent.as_ref().ok_or_else(|| format("no TSTInfo content".into()))?;
    let tst_der = econtent.decode_as::<OctetString>().map_err(|e| format(format!("eContent: {e}")))?;
    let tst = TstInfo::from_der(tst_der.as_bytes()).map_err(|e| format(format!("TSTInfo: {e}")))?;
    let [si] = sd.signer_infos.0.as_slice() else {
        return Err(format(format!("{} signer infos; expected one", sd.signer_infos.0.len())));
    };

    // 2. Signature.
    let sig = |r: String| fail(Check::Signature, r);
    let digest = HashAlg::from_alg_id(&si.digest_alg)
        .filter(|h| *h != HashAlg::Sha1)
        .ok_or_else(|| sig(format!("digest algorithm {} is not accepted", si.digest_alg.oid)))?;
    let content_type = attribute(si, oids::ID_CONTENT_TYPE, Check::Signature)?;
    if content_type.decode_as::<ObjectIdentifier>().ok() != Some(oids::ID_CT_TST_INFO) {
        return Err(sig("the content-type attribute is not id-ct-TSTInfo".into()));
    }
    let md = attribute(si, oids::ID_MESSAGE_DIGEST, Check::Signature)?
        .decode_as::<OctetString>()
        .map_err(|e| sig(format!("message-digest attribute: {e}")))?;
    if md.as_bytes() != digest.digest(tst_der.as_bytes()) {
        return Err(sig("the message-digest attribute does not match the TSTInfo".into()));
    }
    let mut pool = Vec::new();
    for choice in sd.certificates.iter().flat_map(|s| s.0.iter()) {
        if let cms::cert::CertificateChoices::Certificate(c) = choice {
            let der = c.to_der().map_err(|e| format(format!("certificate in the token: {e}")))?;
            pool.push(ParsedCert::with_cert(der, c.clone()).map_err(format)?);
        }
    }
    for der in untrusted {
        pool.push(ParsedCert::from_der(der).map_err(|e| Error::Certificate(format!("untrusted: {e}")))?);
    }
    let signer = pool
        .iter()
        .find(|c| match &si.sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                same_name(c.issuer(), &ias.issuer)
                    && c.cert.tbs_certificate.serial_number == ias.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => c
                .extensions(oids::ID_CE_SUBJECT_KEY_IDENTIFIER)
                .next()
                .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
                .is_some_and(|k| &k == ski),
        })
        .ok_or_else(|| sig("the signer certificate is neither in the token nor given".into()))?;
    let signed_attrs = si.signed_attrs.as_ref().ok_or_else(|| sig("no signed attributes".into()))?;
    let signed_bytes = signed_attrs.to_der().map_err(|e| sig(e.to_string()))?;
    verify_signature(
        &si.signature_algorithm,
        Some(digest),
        &signer.cert.tbs_certificate.subject_public_key_info,
        &signed_bytes,
        si.signature.as_bytes(),
    )
    .map_err(|e| sig(format!("{e} (signer {})", signer.subject_string())))?;

    // 3. Chain at genTime.
    let gen_time = tst.gen_time.to_datetime();
    check_tsa_certificate(signer).map_err(|e| fail(Check::Chain, e))?;
    check_chain(signer, &pool, &root, gen_time).map_err(|e| fail(Check::Chain, e))?;

    // 4. ESSCertIDv2.
    let sc = |r: String| fail(Check::SigningCertificate, r);
    let scv2: SigningCertificateV2 =
        attribute(si, oids::ID_AA_SIGNING_CERTIFICATE_V2, Check::SigningCertificate)?
            .decode_as()
            .map_err(|e| sc(format!("signing-certificate-v2: {e}")))?;
    let id = scv2.certs.first().ok_or_else(|| sc("signing-certificate-v2 names no certificate".into()))?;
    let cert_hash = match &id.hash_algorithm {
        None => HashAlg::Sha256,
        Some(alg) => HashAlg::from_alg_id(alg)
            .filter(|h| *h != HashAlg::Sha1)
            .ok_or_else(|| sc(format!("ESSCertIDv2 hash algorithm {} is not accepted", alg.oid)))?,
    };
    if id.cert_hash.as_bytes() != cert_hash.digest(&signer.der) {
        return Err(sc(format!(
            "ESSCertIDv2 is not the hash of the signer certificate {}",
            signer.subject_string()
        )));
    }
    if let Some(is) = &id.issuer_serial {
        let issuer_ok = is
            .issuer
            .iter()
            .any(|g| matches!(g, GeneralName::DirectoryName(n) if same_name(n, signer.issuer())));
        if !issuer_ok || is.serial_number != signer.cert.tbs_certificate.serial_number {
            return Err(sc("ESSCertIDv2 issuerSerial does not name the signer certificate".into()));
        }
    }
    if let Some(GeneralName::DirectoryName(n)) = &tst.tsa {
        if !same_name(n, signer.subject()) {
            return Err(sc(format!("the TSTInfo names TSA {n}, but {} signed it", signer.subject_string())));
        }
    }

    // 5. Imprint.
    let imprint = &tst.message_imprint;
    let hash = HashAlg::from_oid(&imprint.hash_algorithm.oid).ok_or_else(|| {
        fail(Check::Imprint, format!("unknown imprint algorithm {}", imprint.hash_algorithm.oid))
    })?;
    let matches = match subject {
        Timestamped::Data(d) => hash.digest(d) == imprint.hashed_message.as_bytes(),
        Timestamped::Digest(d) => d == imprint.hashed_message.as_bytes(),
        Timestamped::Streamed(d) => d.digest(hash) == imprint.hashed_message.as_bytes(),
        Timestamped::Digests(values) => values
            .iter()
            .any(|(oid, d)| oid == hash.oid_text() && d.as_slice() == imprint.hashed_message.as_bytes()),
    };
    if !matches {
        let what = if matches!(subject, Timestamped::Digest(_)) { "digest" } else { "data" };
        return Err(fail(
            Check::Imprint,
            format!("the {what} does not match the {} message imprint", hash.name()),
        ));
    }

    // 6. Record.
    let rec = |r: String| fail(Check::Record, r);
    let serial = u64_from_int(&tst.serial_number)
        .and_then(|v| TsaSerial::new(v).ok())
        .ok_or_else(|| rec("the serial number is not one this TSA issues".into()))?;
    let record =
        ledger.token(serial)?.ok_or_else(|| rec(format!("serial {serial} is not in the TSA record")))?;
    if record.token_sha256 != sha256(&token_der) {
        return Err(rec(format!("the token with serial {serial} differs from the one recorded")));
    }

    Ok(VerifiedToken {
        gen_time,
        policy: tst.policy,
        serial,
        tsa_name: signer.subject_string(),
        hash_algorithm: hash.name(),
    })
}

/// Verification bound to one trusted root, the TSA's certificates and its record; the state of
/// [`crate::verify_scope`].
#[derive(Clone)]
pub struct Verifier {
    root: Vec<u8>,
    untrusted: Vec<Vec<u8>>,
    /// Where more certificates come from at each verification (a TSA re-keyed while this
    /// verifier lives: its new certificate, and the old ones for older tokens).
    more: Option<MoreCertificates>,
    ledger: Arc<dyn TokenLedger>,
}

/// Certificates read at each verification, beside a [`Verifier`]'s own.
pub type MoreCertificates = Arc<dyn Fn() -> Result<Vec<Vec<u8>>, String> + Send + Sync>;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("untrusted", &self.untrusted.len()).finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier trusting `root_der`, with extra certificates (such as
    /// [`crate::TimestampAuthority::certificates`]) for tokens that carry none.
    pub fn new(
        root_der: Vec<u8>,
        untrusted: Vec<Vec<u8>>,
        ledger: Arc<dyn TokenLedger>,
    ) -> Result<Self, Error> {
        ParsedCert::from_der(&root_der).map_err(|e| Error::Certificate(format!("trusted root: {e}")))?;
        for der in &untrusted {
            ParsedCert::from_der(der).map_err(Error::Certificate)?;
        }
        Ok(Verifier { root: root_der, untrusted, more: None, ledger })
    }

    /// This verifier, also looking among the certificates `more` gives at each verification
    /// (read then, so that one made before a TSA was re-keyed knows its new certificate).
    pub fn with_more_certificates(mut self, more: MoreCertificates) -> Self {
        self.more = Some(more);
        self
    }

    /// [`verify`] with this verifier's root, certificates and record.
    pub fn verify(&self, token: &[u8], subject: Timestamped<'_>) -> Result<VerifiedToken, Error> {
        let Some(more) = &self.more else {
            return verify(token, subject, &self.root, &self.untrusted, self.ledger.as_ref());
        };
        let mut untrusted = self.untrusted.clone();
        for der in more().map_err(|e| Error::Certificate(format!("the TSA's certificates: {e}")))? {
            if !untrusted.contains(&der) {
                untrusted.push(der);
            }
        }
        verify(token, subject, &self.root, &untrusted, self.ledger.as_ref())
    }
}
