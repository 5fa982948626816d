//! The timestamp authority: TSTInfo, the CMS SignedData token, and the TimeStampResp.

use std::sync::Arc;
use std::time::Duration;

use cerdb::tsa_store::{PendingToken, TokenRecord, TsaSerial, TsaStore, MAX_POLICY_TEXT};
use chrono::{DateTime, Timelike, Utc};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{CertificateSet, SignerIdentifier};
use der::asn1::{OctetString, SetOfVec};
use der::Any;
use hsm_sim::{SignatureScheme, Signer};
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::asn1::{
    to_der, Accuracy, EssCertIdV2, FailureBit, IssuerSerial, PkiFailureInfo, PkiStatus, PkiStatusInfo,
    SigningCertificateV2, TimeStampResp,
};
use crate::crypto::{sha256, HashAlg};
use crate::frame::{self, TokenConstants, TokenFrame};
use crate::request::CheckedRequest;
use crate::verify::{check_tsa_certificate, ParsedCert};
use crate::{oids, request, Error, GenTime, TsaConfig};

/// The longest accuracy a TSA may declare here (ETSI EN 319 421 asks for 1 s or better).
const MAX_ACCURACY: Duration = Duration::from_secs(3600);

/// A `TimeStampResp` with status rejection and failInfo systemFailure, sent if encoding the
/// real response ever fails, or its handler panics (it is the DER of
/// `status_info(&Error::Encoding(..))` without text).
pub(crate) const SYSTEM_FAILURE_RESPONSE: [u8; 14] =
    [0x30, 0x0c, 0x30, 0x0a, 0x02, 0x01, 0x02, 0x03, 0x05, 0x06, 0x00, 0x00, 0x00, 0x40];

/// How the TSA key signs: the CMS digest and signature algorithms of its key type.
#[derive(Debug, Clone)]
struct SignerProfile {
    digest: HashAlg,
    signature_algorithm: AlgorithmIdentifierOwned,
}

impl SignerProfile {
    /// Ed25519 is refused: OpenSSL's `ts -verify` (PKCS#7-based) cannot verify such tokens, and
    /// neither can most deployed RFC 3161 clients.
    fn of(scheme: SignatureScheme) -> Result<Self, Error> {
        let (digest, oid, null_params) = match scheme {
            SignatureScheme::RsaPkcs1Sha256 => (HashAlg::Sha256, oids::SHA256_WITH_RSA, true),
            SignatureScheme::EcdsaP256Sha256 => (HashAlg::Sha256, oids::ECDSA_WITH_SHA256, false),
            SignatureScheme::EcdsaP384Sha384 => (HashAlg::Sha384, oids::ECDSA_WITH_SHA384, false),
            SignatureScheme::Ed25519 => {
                return Err(Error::Config(
                    "Ed25519 TSA keys are not supported: RFC 3161 clients such as OpenSSL cannot verify \
                     their tokens; use an RSA or ECDSA P-256/P-384 key"
                        .into(),
                ))
            }
        };
        let parameters = null_params.then(Any::null);
        Ok(SignerProfile { digest, signature_algorithm: AlgorithmIdentifierOwned { oid, parameters } })
    }
}

/// The RFC 3161 timestamp authority: answers `TimeStampReq`s with `TimeStampResp`s.
///
/// Shared by every HTTP worker (`respond` takes `&self`); serials come from the store's durably
/// reserved block, taken with the clock's reading, so they strictly increase in genTime order.
pub struct TimestampAuthority {
    /// The key and certificates signing tokens now: replaced whole by
    /// [`TimestampAuthority::replace_signer`], so each token takes one consistent set.
    identity: std::sync::RwLock<Arc<Identity>>,
    store: TsaStore,
    config: TsaConfig,
    /// The default policy in dotted form, for the record of every token (formatted once).
    default_policy_text: String,
    precision_digits: u32,
    /// Tokens handed out and requests refused since start, for the operator's metrics.
    tally: Arc<Tally>,
}

/// Tokens granted and requests refused: shared with the tokens whose record is on its way to
/// disk ([`TokenOnDisk`]), which are counted once it is there or lost.
#[derive(Debug, Default)]
struct Tally {
    granted: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
}

impl Tally {
    fn count<T, E>(&self, result: &Result<T, E>) {
        use std::sync::atomic::Ordering::Relaxed;
        match result {
            Ok(_) => self.granted.fetch_add(1, Relaxed),
            Err(_) => self.refused.fetch_add(1, Relaxed),
        };
    }
}

/// The signing key of the TSA, its certificate and the chain above it, with what of every token
/// follows from them, encoded once.
struct Identity {
    signer: Arc<dyn Signer>,
    /// The parts of every token that do not change, encoded once.
    frame: TokenFrame,
    tsa_cert: ParsedCert,
    chain: Vec<ParsedCert>,
}

impl std::fmt::Debug for TimestampAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.current();
        f.debug_struct("TimestampAuthority")
            .field("key", id.signer.handle())
            .field("tsa", &id.tsa_cert.subject_string())
            .field("policy", &self.config.default_policy)
            .finish_non_exhaustive()
    }
}

/// The number of fractional digits of genTime that the accuracy calls for, and the `Accuracy`.
fn accuracy_of(d: Duration) -> Result<(Accuracy, u32), Error> {
    if d.is_zero() || d > MAX_ACCURACY {
        return Err(Error::Config(format!("accuracy {d:?} is not between 1 µs and {MAX_ACCURACY:?}")));
    }
    let nanos = d.subsec_nanos();
    if !nanos.is_multiple_of(1000) {
        return Err(Error::Config(format!("accuracy {d:?} is not a whole number of microseconds")));
    }
    let millis = (nanos / 1_000_000) as i16;
    let micros = (nanos / 1000 % 1000) as i16;
    let accuracy = Accuracy {
        seconds: (d.as_secs() != 0).then_some(d.as_secs()),
        millis: (millis != 0).then_some(millis),
        micros: (micros != 0).then_some(micros),
    };
    let digits = if nanos == 0 {
        0
    } else {
        let text = format!("{nanos:09}");
        text.trim_end_matches('0').len() as u32
    };
    Ok((accuracy, digits))
}

/// `t` truncated to `digits` fractional digits (a leap second is folded into its second).
fn truncate(t: DateTime<Utc>, digits: u32) -> DateTime<Utc> {
    let nanos = t.nanosecond().min(999_999_999);
    let step = 10u32.pow(9 - digits.min(9));
    t.with_nanosecond(nanos - nanos % step).unwrap_or(t)
}

/// The one mapping from errors to what the client sees: PKIStatusInfo (RFC 3161 §2.4.2).
/// Internal failures are logged, and only "internal error" is sent.
fn status_info(err: &Error) -> PkiStatusInfo {
    let (bit, text) = match err {
        Error::BadDataFormat(_) | Error::ImprintLength { .. } => (FailureBit::BadDataFormat, err.to_string()),
        Error::HashAlgorithmRefused(_) | Error::Sha1Refused | Error::HashParameters { .. } => {
            (FailureBit::BadAlg, err.to_string())
        }
        Error::UnacceptedPolicy(_) => (FailureBit::UnacceptedPolicy, err.to_string()),
        Error::UnacceptedExtension(_) => (FailureBit::UnacceptedExtension, err.to_string()),
        // The TSA certificate was revoked by `pki ca compromise`: its key signs nothing more.
        Error::Signing(hsm_sim::Error::NotPermitted { .. }) => {
            tracing::error!(error = %err, "TSA refused to sign");
            (FailureBit::SystemFailure, "the TSA may not sign: its certificate is revoked".to_string())
        }
        Error::TimeNotAvailable(_) => {
            tracing::error!(error = %err, "TSA time source failed");
            (FailureBit::TimeNotAvailable, "the time source is not available".to_string())
        }
        _ => {
            tracing::error!(error = %err, "TSA failed to issue a token");
            (FailureBit::SystemFailure, "internal error".to_string())
        }
    };
    PkiStatusInfo {
        status: PkiStatus::Rejection,
        status_string: Some(vec![text]),
        fail_info: Some(PkiFailureInfo::of(bit)),
    }
}

fn single_value_attribute(oid: der::oid::ObjectIdentifier, value: Any) -> Result<Attribute, Error> {
    Ok(Attribute { oid, values: SetOfVec::try_from(vec![value])? })
}

impl TimestampAuthority {
    /// Builds the TSA from its signing key, its certificate, the chain above it up to but not
    /// including the root (issuer first), its store and its configuration.
    ///
    /// Refuses a certificate that is not a TSA certificate (critical EKU id-kp-timeStamping and
    /// nothing else), that is not for the signer's key, or a chain that is not in order.
    pub fn new(
        signer: Arc<dyn Signer>,
        tsa_cert_der: Vec<u8>,
        chain_der: Vec<Vec<u8>>,
        store: TsaStore,
        config: TsaConfig,
    ) -> Result<Self, Error> {
        let (_, precision_digits) = accuracy_of(config.accuracy)?;
        if config.serial_block == 0 {
            return Err(Error::Config("serial_block must be at least 1".into()));
        }
        // The record of every token holds its policy; one that does not fit is refused now, not
        // on the first request for it.
        if let Some(p) = std::iter::once(&config.default_policy)
            .chain(&config.accepted_policies)
            .find(|p| p.to_string().len() > MAX_POLICY_TEXT)
        {
            return Err(Error::Config(format!(
                "policy {p} is longer than the {MAX_POLICY_TEXT} characters a token record holds"
            )));
        }
        let identity = Self::identity(signer, tsa_cert_der, chain_der, &config)?;
        let default_policy_text = config.default_policy.to_string();
        Ok(TimestampAuthority {
            identity: std::sync::RwLock::new(Arc::new(identity)),
            store,
            config,
            default_policy_text,
            precision_digits,
            tally: Arc::default(),
        })
    }

    /// Signs with a new key and certificate from now on (the TSA was re-keyed), checked as
    /// [`TimestampAuthority::new`] checks them; tokens being made finish with the old ones.
    pub fn replace_signer(
        &self,
        signer: Arc<dyn Signer>,
        tsa_cert_der: Vec<u8>,
        chain_der: Vec<Vec<u8>>,
    ) -> Result<(), Error> {
        let identity = Self::identity(signer, tsa_cert_der, chain_der, &self.config)?;
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(identity);
        Ok(())
    }

    /// The key and certificates signing tokens now.
    fn current(&self) -> Arc<Identity> {
        self.identity.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks a signer, its TSA certificate and the chain above it, and encodes what of every
    /// token follows from them.
    fn identity(
        signer: Arc<dyn Signer>,
        tsa_cert_der: Vec<u8>,
        chain_der: Vec<Vec<u8>>,
        config: &TsaConfig,
    ) -> Result<Identity, Error> {
        let profile = SignerProfile::of(signer.key_type().signature_scheme())?;
        let (accuracy, _) = accuracy_of(config.accuracy)?;
        let tsa_cert = ParsedCert::from_der(&tsa_cert_der).map_err(Error::TsaCertificate)?;
        check_tsa_certificate(&tsa_cert).map_err(Error::TsaCertificate)?;
        let spki = &tsa_cert.cert.tbs_certificate.subject_public_key_info;
        if spki.subject_public_key.raw_bytes() != signer.public_key_raw() {
            return Err(Error::TsaCertificate(format!(
                "the certificate is not for key {} (its public key differs)",
                signer.handle()
            )));
        }
        let chain = chain_der
            .iter()
            .map(|d| ParsedCert::from_der(d).map_err(Error::Certificate))
            .collect::<Result<Vec<_>, _>>()?;
        let mut child = &tsa_cert;
        for parent in &chain {
            child.is_issued_by(parent).map_err(|e| {
                Error::Certificate(format!(
                    "chain out of order: {} is not issued by {}: {e}",
                    child.subject_string(),
                    parent.subject_string()
                ))
            })?;
            child = parent;
        }

        let tbs = &tsa_cert.cert.tbs_certificate;
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        });
        let ess = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                hash_algorithm: None, // SHA-256, the DEFAULT
                cert_hash: OctetString::new(sha256(&tsa_cert.der).to_vec())?,
                issuer_serial: Some(IssuerSerial {
                    issuer: vec![GeneralName::DirectoryName(tbs.issuer.clone())],
                    serial_number: tbs.serial_number.clone(),
                }),
            }],
            policies: None,
        };
        let signing_certificate =
            single_value_attribute(oids::ID_AA_SIGNING_CERTIFICATE_V2, Any::encode_from(&ess)?)?;
        let certificates = CertificateSet(SetOfVec::try_from(
            std::iter::once(&tsa_cert)
                .chain(&chain)
                .map(|c| CertificateChoices::Certificate(c.cert.clone()))
                .collect::<Vec<_>>(),
        )?);
        let frame = TokenFrame::new(&TokenConstants {
            digest: profile.digest,
            signature_algorithm: profile.signature_algorithm,
            sid,
            signing_certificate,
            certificates,
            accuracy,
            tsa_name: GeneralName::DirectoryName(tbs.subject.clone()),
        })?;
        Ok(Identity { signer, frame, tsa_cert, chain })
    }

    /// Tokens granted and requests refused since this authority was made.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.tally.granted.load(Relaxed), self.tally.refused.load(Relaxed))
    }

    fn count<T, E>(&self, result: &Result<T, E>) {
        self.tally.count(result)
    }

    /// The TSA certificate followed by its chain (DER), as handed to [`TimestampAuthority::new`]:
    /// what a verifier needs besides the root when a token carries no certificates.
    pub fn certificates(&self) -> Vec<Vec<u8>> {
        let id = self.current();
        std::iter::once(&id.tsa_cert).chain(&id.chain).map(|c| c.der.clone()).collect()
    }

    /// The configuration.
    pub fn config(&self) -> &TsaConfig {
        &self.config
    }

    /// Answers a DER `TimeStampReq` with a DER `TimeStampResp`: granted with a token, or a
    /// rejection whose PKIStatusInfo says why. Never fails and never panics on any input.
    ///
    /// Blocks until the token's record is on disk; [`TimestampAuthority::respond_async`] awaits
    /// it instead.
    pub fn respond(&self, query_der: &[u8]) -> Vec<u8> {
        let result = self.issue(query_der).and_then(|(token, pending)| {
            pending.wait()?;
            Ok(token)
        });
        self.count(&result);
        Self::response_der(result)
    }

    /// A token over the SHA-256 digest `digest` for a caller in this process (the timestamp of a
    /// signature value): what [`TimestampAuthority::respond`] issues for a request of that digest
    /// in the default policy, with the certificates and without a nonce (nothing travels between
    /// asking and answering to be replayed), without encoding the request and decoding the reply.
    /// The token's DER (a `ContentInfo`) and its serial, once the token's record is durable.
    pub fn stamp_sha256(&self, digest: &[u8; 32]) -> Result<(Vec<u8>, TsaSerial), Error> {
        self.issue_sha256(digest)?.durable()
    }

    /// [`TimestampAuthority::stamp_sha256`] without the wait: the token as soon as it is signed,
    /// its record handed to the store's committer. The caller may build the token into what it
    /// makes meanwhile, and hands that out only once [`TokenOnDisk::wait`] returned `Ok`: the
    /// record's write overlaps the caller's own work instead of holding it up.
    pub fn issue_sha256(&self, digest: &[u8; 32]) -> Result<IssuedToken, Error> {
        match self.issue_checked(&self.sha256_request(digest)) {
            Ok((token, serial, pending)) => {
                Ok(IssuedToken { token, serial, on_disk: TokenOnDisk { tally: self.tally.clone(), pending } })
            }
            Err(e) => {
                self.count::<(), _>(&Err(&e));
                Err(e)
            }
        }
    }

    /// [`TimestampAuthority::stamp_sha256`] for many digests at once (a bulk run of one caller):
    /// every token is issued first, then their records are waited for together, so the store's
    /// committer makes them durable in as few flushes as it can instead of one wait per token.
    /// The answers in order; none is returned before every record of the run is durable or
    /// failed.
    pub fn stamp_sha256_many(&self, digests: &[[u8; 32]]) -> Vec<Result<(Vec<u8>, TsaSerial), Error>> {
        let issued: Vec<_> = digests.iter().map(|d| self.issue_sha256(d)).collect();
        issued.into_iter().map(|r| r?.durable()).collect()
    }

    /// Why a token was refused, as the refusal's PKIStatusInfo says it to a client (logging the
    /// error as [`TimestampAuthority::respond`] does): for a caller of
    /// [`TimestampAuthority::stamp_sha256`] that passes the reason on.
    pub fn refusal_reason(err: &Error) -> String {
        status_info(err).status_string.map(|v| v.join("; ")).unwrap_or_default()
    }

    /// The checked request of [`TimestampAuthority::stamp_sha256`].
    fn sha256_request(&self, digest: &[u8; 32]) -> CheckedRequest {
        CheckedRequest::sha256(digest, self.config.default_policy)
    }

    /// [`TimestampAuthority::respond`] for an async caller: the request is checked and the token
    /// signed on the calling thread, then the durable write of its record is awaited (the store's
    /// committer flushes for every token written meanwhile), so no thread is held while waiting.
    ///
    /// Signing runs on the caller's thread: with hsm-sim it takes tens of microseconds. A key
    /// store whose signing blocks (a network HSM) calls for [`TimestampAuthority::respond`] on a
    /// blocking thread instead. Once in a block of [`TsaConfig::serial_block`] tokens, the
    /// reservation of the next block flushes on the caller's thread.
    pub async fn respond_async(&self, query_der: &[u8]) -> Vec<u8> {
        let result = match self.issue(query_der) {
            Ok((token, pending)) => pending.await.map(|()| token).map_err(Error::from),
            Err(e) => Err(e),
        };
        self.count(&result);
        Self::response_der(result)
    }

    /// The `TimeStampResp` DER: granted around the token's DER (framed by hand), or the refusal
    /// for the error (typed: refusals are rare).
    fn response_der(result: Result<Vec<u8>, Error>) -> Vec<u8> {
        let resp = match result {
            Ok(token) => frame::granted_response(&token),
            Err(e) => {
                tracing::info!(error = %e, "timestamp request refused");
                to_der(&TimeStampResp { status: status_info(&e), time_stamp_token: None })
            }
        };
        match resp {
            Ok(der) => der,
            Err(e) => {
                tracing::error!(error = %e, "encoding a TimeStampResp failed");
                SYSTEM_FAILURE_RESPONSE.to_vec()
            }
        }
    }

    /// A rejection for an error that happened outside [`TimestampAuthority::respond`] (say, the
    /// worker running it died), through the same mapping.
    pub fn refusal(err: &Error) -> Vec<u8> {
        to_der(&TimeStampResp { status: status_info(err), time_stamp_token: None })
            .unwrap_or_else(|_| SYSTEM_FAILURE_RESPONSE.to_vec())
    }

    /// Checks the request, takes a serial and genTime, signs, writes the record, and returns the
    /// token's DER with its pending record.
    ///
    /// 1. check the request (format, extensions, algorithm, digest length, policy);
    /// 2. take the next serial and the slot of its record from the store (which reserves a new
    ///    block durably when the current one is used up), reading the clock meanwhile, so serial
    ///    order is genTime order;
    /// 3. refuse when the TSA certificate or its chain is not valid at genTime (an unfilled slot
    ///    is dropped: its serial is skipped);
    /// 4. build the TSTInfo and sign it as a CMS SignedData token;
    /// 5. fill the slot with the token's record — the caller hands the token out only once the
    ///    pending record is durable.
    fn issue(&self, query_der: &[u8]) -> Result<(Vec<u8>, PendingToken), Error> {
        let req = request::check(query_der, &self.config)?;
        self.issue_checked(&req).map(|(token, _, pending)| (token, pending))
    }

    /// [`TimestampAuthority::issue`] from step 2, for a checked request; the token's serial too.
    fn issue_checked(&self, req: &CheckedRequest) -> Result<(Vec<u8>, TsaSerial, PendingToken), Error> {
        let id = self.current();
        // The clock is read while no other serial can be taken: serial order is genTime order.
        let (slot, now) = self.store.begin_token(self.config.serial_block, |_| self.config.clock.now())?;
        let serial = slot.serial();
        let gen_time = GenTime::new(truncate(now, self.precision_digits))?;
        // A token that no relying party could validate is not issued.
        if let Some(c) =
            std::iter::once(&id.tsa_cert).chain(&id.chain).find(|c| !c.valid_at(gen_time.to_datetime()))
        {
            return Err(Error::TsaCertificate(format!("{} is not valid at {gen_time}", c.subject_string())));
        }
        let tst =
            id.frame.tst_info(&req.policy, &req.imprint, serial.value(), gen_time, req.nonce.as_ref())?;
        let token_der = Self::sign(&id, &tst, req.cert_req)?;
        let pending = slot.fill(&TokenRecord {
            serial,
            gen_time: gen_time.to_datetime(),
            hash_algorithm: req.hash.oid_text().to_string(),
            imprint: req.imprint.hashed_message.as_bytes().to_vec(),
            policy: if req.policy == self.config.default_policy {
                self.default_policy_text.clone()
            } else {
                req.policy.to_string()
            },
            token_sha256: sha256(&token_der),
        })?;
        tracing::debug!(serial = %serial, gen_time = %gen_time, "issued timestamp token");
        Ok((token_der, serial, pending))
    }

    /// Signs an encoded TSTInfo as a CMS SignedData (RFC 5652 §5, RFC 3161 §2.4.2): eContentType
    /// id-ct-TSTInfo, one SignerInfo (version 1, issuerAndSerialNumber) with signed attributes
    /// content-type, message-digest and signing-certificate-v2; the certificates when asked for.
    /// Returns the token's DER (a `ContentInfo`), framed by [`TokenFrame::content_info`].
    fn sign(id: &Identity, tst_der: &[u8], cert_req: bool) -> Result<Vec<u8>, Error> {
        id.frame.content_info(tst_der, cert_req, |signed_attributes| Ok(id.signer.sign(signed_attributes)?))
    }
}

/// A token issued for a caller in this process ([`TimestampAuthority::issue_sha256`]) whose
/// record may not be on disk yet.
#[derive(Debug)]
#[must_use = "a token may be handed out only once its record is on disk"]
pub struct IssuedToken {
    /// The token's DER (a `ContentInfo`).
    pub token: Vec<u8>,
    /// Its serial number.
    pub serial: TsaSerial,
    /// Its record, to be waited for before the token leaves.
    pub on_disk: TokenOnDisk,
}

impl IssuedToken {
    /// The token and its serial once its record is durable ([`TokenOnDisk::wait`]).
    pub fn durable(self) -> Result<(Vec<u8>, TsaSerial), Error> {
        self.on_disk.wait()?;
        Ok((self.token, self.serial))
    }
}

/// The record of an [`IssuedToken`] on its way to disk; it may be waited for on any thread.
#[must_use = "a token may be handed out only once its record is on disk"]
pub struct TokenOnDisk {
    tally: Arc<Tally>,
    pending: PendingToken,
}

impl std::fmt::Debug for TokenOnDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenOnDisk").field("pending", &self.pending).finish_non_exhaustive()
    }
}

impl TokenOnDisk {
    /// Blocks until the record is durable (the token is counted as granted), or fails (counted
    /// as refused): the token must then not be handed out.
    pub fn wait(self) -> Result<(), Error> {
        let result = self.pending.wait().map_err(Error::from);
        self.tally.count(&result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    #[test]
    fn accuracy_fixes_precision() {
        let cases = [
            (Duration::from_secs(1), (Some(1), None, None), 0),
            (Duration::from_millis(100), (None, Some(100), None), 1),
            (Duration::from_millis(1500), (Some(1), Some(500), None), 1),
            (Duration::from_millis(10), (None, Some(10), None), 2),
            (Duration::from_micros(1), (None, None, Some(1)), 6),
            (Duration::from_micros(2250), (None, Some(2), Some(250)), 5),
        ];
        for (d, (s, ms, us), digits) in cases {
            let (acc, got) = accuracy_of(d).expect("valid");
            assert_eq!((acc.seconds, acc.millis, acc.micros), (s, ms, us), "{d:?}");
            assert_eq!(got, digits, "{d:?}");
        }
        for bad in [Duration::ZERO, Duration::from_nanos(1500), Duration::from_secs(3601)] {
            assert!(accuracy_of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn truncation_never_rounds_up() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T12:58:20.987654321Z").expect("t").to_utc();
        assert_eq!(truncate(t, 0).nanosecond(), 0);
        assert_eq!(truncate(t, 1).nanosecond(), 900_000_000);
        assert_eq!(truncate(t, 3).nanosecond(), 987_000_000);
        assert_eq!(truncate(t, 6).nanosecond(), 987_654_000);
    }

    #[test]
    fn fallback_response_is_the_encoded_system_failure() {
        let mut info = status_info(&Error::Encoding("x".into()));
        info.status_string = None;
        let der = to_der(&TimeStampResp { status: info, time_stamp_token: None }).expect("der");
        assert_eq!(der, SYSTEM_FAILURE_RESPONSE);
        let back = TimeStampResp::from_der(&SYSTEM_FAILURE_RESPONSE).expect("decode");
        assert_eq!(back.status.status, PkiStatus::Rejection);
        assert!(back.status.fail_info.expect("failInfo").contains(FailureBit::SystemFailure));
    }

    #[test]
    fn every_request_error_maps_to_its_failure_bit() {
        let cases = [
            (Error::BadDataFormat("x".into()), FailureBit::BadDataFormat),
            (
                Error::ImprintLength { algorithm: "SHA-256", expected: 32, actual: 3 },
                FailureBit::BadDataFormat,
            ),
            (Error::Sha1Refused, FailureBit::BadAlg),
            (Error::HashAlgorithmRefused("1.2.3".into()), FailureBit::BadAlg),
            (Error::HashParameters { oid: "1.2.3".into() }, FailureBit::BadAlg),
            (Error::UnacceptedPolicy("1.2.3".into()), FailureBit::UnacceptedPolicy),
            (Error::UnacceptedExtension("1.2.3".into()), FailureBit::UnacceptedExtension),
            (Error::TimeNotAvailable("x".into()), FailureBit::TimeNotAvailable),
            (Error::Store(cerdb::Error::Db("disk on fire".into())), FailureBit::SystemFailure),
        ];
        for (err, bit) in cases {
            let info = status_info(&err);
            assert_eq!(info.status, PkiStatus::Rejection);
            assert_eq!(info.fail_info, Some(PkiFailureInfo::of(bit)), "{err}");
            let text = info.status_string.expect("text").join(" ");
            assert!(!text.contains("disk on fire"), "internal detail leaked: {text}");
        }
    }
}
