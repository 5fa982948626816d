//! The test PKI: the fixed root and issuing CA of `tests/data`, an OCSP signer whose key lives in
//! a temporary hsm-sim store, leaf certificates, a temporary cerdb, the real `openssl` client
//! and a real HTTP server on 127.0.0.1.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::{App, HttpServer};
use cerdb::{
    AuditRecord, CaId, CertDb, CertKind, CertReader, CertRecord, Fingerprint, KeyDigest, Revocation,
    RevocationReason, Serial,
};
use chrono::{DateTime, TimeZone, Utc};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use hsm_sim::{HsmSim, KeyCustody, KeyPurpose, KeyType, MasterKeySource, Signer};
use ocsp_responder::{OcspConfig, OcspResponder, SystemClock};
use rcgen::{
    date_time_ymd, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use x509_cert::ext::Extension;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, OcspRequest, OcspResponse, OcspResponseStatus, Request, TbsRequest, Version,
};

pub const GOOD: &[u8] = &[0x10, 0x01];
pub const REVOKED: &[u8] = &[0x10, 0x02];
pub const GOOD_2: &[u8] = &[0x10, 0x03];
pub const NEVER_ISSUED: &[u8] = &[0x99, 0x99];
pub const ISSUING_CA_SERIAL: &[u8] = &[0x02];
pub const SIGNER_SERIAL: &[u8] = &[0x0a];

pub const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
pub const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
pub const OID_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");

/// A file of `tests/data`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

pub fn serial(b: &[u8]) -> Serial {
    Serial::from_bytes(b).expect("serial")
}

/// When the revoked certificate of the fixture was revoked.
pub fn revoked_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).single().expect("time")
}

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub db: Arc<CertDb>,
    pub hsm: HsmSim,
    pub signer: Arc<dyn Signer>,
    pub issuing_der: Vec<u8>,
    pub signer_der: Vec<u8>,
    audit_seq: AtomicU64,
}

impl Pki {
    /// The fixture with a P-256 OCSP key.
    pub fn new() -> Self {
        Self::with_key(KeyType::P256)
    }

    /// The fixture with an OCSP key of `key_type`: leaves 1001 (good), 1002 (revoked,
    /// keyCompromise, at [`revoked_at`]) and 1003 (good), the issuing CA (issued by the root) and
    /// the OCSP signer in cerdb; 9999 never issued.
    pub fn with_key(key_type: KeyType) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(CertDb::open(dir.path().join("db")).expect("cerdb"));
        let hsm = HsmSim::open(dir.path().join("keys"), &MasterKeySource::KeyFile).expect("hsm");
        let handle = "ocsp/signer".parse().expect("handle");
        hsm.generate(&handle, key_type, KeyPurpose::OcspSigning).expect("generate OCSP key");
        let signer = hsm.signer(&handle).expect("signer");

        let issuing_pem = std::fs::read_to_string(data("issuing.pem")).expect("issuing.pem");
        let issuing_der = pem_to_der(&issuing_pem);
        let signer_spki = rcgen::SubjectPublicKeyInfo::from_der(signer.public_key_spki()).expect("spki");
        let signer_cert =
            signer_params(true, true).signed_by(&signer_spki, &issuing_ca()).expect("sign signer");
        let signer_der = signer_cert.der().to_vec();
        std::fs::write(dir.path().join("signer.pem"), signer_cert.pem()).expect("write");

        let pki = Pki { dir, db, hsm, signer, issuing_der, signer_der, audit_seq: AtomicU64::new(1) };
        let mut records = vec![
            record(ISSUING_CA_SERIAL, &pki.issuing_der, CertKind::IssuingCa, CaId::Root),
            record(SIGNER_SERIAL, &pki.signer_der, CertKind::OcspSigner, CaId::Issuing),
        ];
        for s in [GOOD, REVOKED, GOOD_2] {
            let der = pki.make_leaf(s);
            records.push(record(s, &der, CertKind::Signing, CaId::Issuing));
        }
        pki.db.store_issued(&records, &[]).expect("store");
        pki.revoke(REVOKED, revoked_at(), RevocationReason::KeyCompromise);
        pki
    }

    /// Writes `leaf-<SERIAL>.pem` and returns its DER.
    fn make_leaf(&self, s: &[u8]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, format!("leaf {}", hex::encode(s)));
        params.serial_number = Some(SerialNumber::from_slice(s));
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2100, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &issuing_ca()).expect("sign leaf");
        std::fs::write(self.leaf_pem(s), cert.pem()).expect("write leaf");
        cert.der().to_vec()
    }

    pub fn leaf_pem(&self, s: &[u8]) -> PathBuf {
        self.dir.path().join(format!("leaf-{}.pem", serial(s)))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Records a revocation in cerdb, as the CA's revoke path does (without telling the
    /// responder).
    pub fn revoke(&self, s: &[u8], at: DateTime<Utc>, reason: RevocationReason) {
        let seq = self.audit_seq.fetch_add(1, Ordering::SeqCst);
        let audit = AuditRecord { seq, bytes: format!("revoke {}", serial(s)).into_bytes() };
        // The responder never reads compromised keys: a digest of the serial stands for the key.
        let key = (reason == RevocationReason::KeyCompromise).then(|| KeyDigest::of(s));
        self.db.revoke(&serial(s), Revocation { at, reason }, key.as_ref(), &audit).expect("revoke");
    }

    pub fn reader(&self) -> Arc<dyn CertReader> {
        self.db.clone()
    }

    pub fn responder(&self) -> Arc<OcspResponder> {
        self.responder_with(OcspConfig::default())
    }

    pub fn responder_with(&self, config: OcspConfig) -> Arc<OcspResponder> {
        Arc::new(
            OcspResponder::new(
                self.reader(),
                &self.issuing_der,
                &self.signer_der,
                self.signer.clone(),
                config,
                Arc::new(SystemClock),
            )
            .expect("responder"),
        )
    }

    /// A DER OCSPRequest for `serials` with CertIDs hashed by `hash` (SHA-1 or SHA-256 OID),
    /// and a nonce extension holding `nonce` as RFC 9654 has it.
    pub fn request(&self, serials: &[&[u8]], hash: ObjectIdentifier, nonce: Option<&[u8]>) -> Vec<u8> {
        request_for(&self.issuing_der, serials, hash, nonce)
    }
}

/// The issuing CA of `tests/data` as an rcgen issuer.
pub fn issuing_ca() -> Issuer<'static, KeyPair> {
    let key = KeyPair::from_pem(&std::fs::read_to_string(data("issuing.key")).expect("issuing.key"))
        .expect("issuing key");
    let pem = std::fs::read_to_string(data("issuing.pem")).expect("issuing.pem");
    Issuer::from_ca_cert_pem(&pem, key).expect("issuer")
}

/// Parameters of an OCSP signer certificate, with or without its EKU and ocsp-nocheck.
pub fn signer_params(eku: bool, nocheck: bool) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::OrganizationName, "OCSP Test PKI");
    params.distinguished_name.push(DnType::CommonName, "OCSP Test Responder");
    params.serial_number = Some(SerialNumber::from_slice(SIGNER_SERIAL));
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2100, 1, 1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if eku {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    }
    if nocheck {
        params.custom_extensions =
            vec![CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 48, 1, 5], vec![0x05, 0x00])];
    }
    params
}

pub fn pem_to_der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("pem").into_contents()
}

fn record(s: &[u8], der: &[u8], kind: CertKind, issuer: CaId) -> CertRecord {
    let t = |y| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).single().expect("time");
    CertRecord {
        serial: serial(s),
        fingerprint: Fingerprint::of(der),
        kind,
        email: matches!(kind, CertKind::Signing)
            .then(|| format!("u{}@example.com", hex::encode(s)).parse().expect("email")),
        subject: format!("CN=test {}", hex::encode(s)),
        issuer,
        not_before: t(2020),
        not_after: t(2100),
        issued_at: t(2020),
        key_type: "p256".into(),
        escrow_key: None,
        revocation: None,
        der: der.to_vec(),
    }
}

/// See [`Pki::request`]; for any issuer certificate.
pub fn request_for(
    issuer_der: &[u8],
    serials: &[&[u8]],
    hash: ObjectIdentifier,
    nonce: Option<&[u8]>,
) -> Vec<u8> {
    let issuer = Certificate::from_der(issuer_der).expect("issuer cert");
    let alg = if hash == OID_SHA1 { &ring::digest::SHA1_FOR_LEGACY_USE_ONLY } else { &ring::digest::SHA256 };
    let name_hash = ring::digest::digest(alg, &issuer.tbs_certificate.subject.to_der().expect("name"));
    let key_hash = ring::digest::digest(
        alg,
        issuer.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes(),
    );
    let request_list = serials
        .iter()
        .map(|s| Request {
            req_cert: CertId {
                hash_algorithm: AlgorithmIdentifierOwned {
                    oid: hash,
                    parameters: Some(der::asn1::Null.into()),
                },
                issuer_name_hash: OctetString::new(name_hash.as_ref()).expect("octets"),
                issuer_key_hash: OctetString::new(key_hash.as_ref()).expect("octets"),
                serial_number: x509_cert::serial_number::SerialNumber::new(s).expect("serial"),
            },
            single_request_extensions: None,
        })
        .collect();
    let request_extensions = nonce.map(|n| vec![nonce_extension(n)]);
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list,
            request_extensions,
        },
        optional_signature: None,
    }
    .to_der()
    .expect("request DER")
}

/// An RFC 9654 nonce extension: extnValue is the DER of an OCTET STRING.
pub fn nonce_extension(nonce: &[u8]) -> Extension {
    let inner = OctetString::new(nonce).expect("nonce").to_der().expect("der");
    Extension { extn_id: OID_NONCE, critical: false, extn_value: OctetString::new(inner).expect("octets") }
}

/// A decoded OCSPResponse.
pub struct Decoded {
    pub status: OcspResponseStatus,
    pub basic: Option<BasicOcspResponse>,
}

/// Decodes a response, failing the test if it is not a DER OCSPResponse (or its BasicOCSPResponse
/// does not decode).
pub fn decode(der: &[u8]) -> Decoded {
    let resp = OcspResponse::from_der(der).expect("an OCSPResponse");
    let basic = resp.response_bytes.map(|rb| {
        assert_eq!(rb.response_type.to_string(), "1.3.6.1.5.5.7.48.1.1", "id-pkix-ocsp-basic");
        BasicOcspResponse::from_der(rb.response.as_bytes()).expect("a BasicOCSPResponse")
    });
    Decoded { status: resp.response_status, basic }
}

/// Runs the real `openssl` client. Fails (never skips) when it is not installed.
pub fn openssl(args: &[&str]) -> Output {
    match Command::new("openssl").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("the openssl client is needed by these tests and is not installed: apt-get install openssl ({e})")
        }
        Err(e) => panic!("cannot run openssl: {e}"),
    }
}

/// stdout and stderr of `openssl` as one text.
pub fn openssl_text(args: &[&str]) -> String {
    let out = openssl(args);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A real HTTP server with the OCSP scope on 127.0.0.1, stopped when dropped.
pub struct Server {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn serve(responder: Arc<OcspResponder>) -> Server {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server =
                HttpServer::new(move || App::new().service(ocsp_responder::scope(responder.clone())))
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .bind(("127.0.0.1", 0))
                    .expect("bind 127.0.0.1:0");
            let port = server.addrs()[0].port();
            let server = server.run();
            tx.send((port, server.handle())).expect("report the port");
            server.await.expect("server");
        });
    });
    let (port, handle) = rx.recv().expect("server started");
    Server { url: format!("http://127.0.0.1:{port}/ocsp"), handle, thread: Some(thread) }
}

impl Drop for Server {
    fn drop(&mut self) {
        actix_web::rt::System::new().block_on(self.handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
