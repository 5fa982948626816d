//! Test fixture: a key store with the TSA key, a root (and optionally an intermediate) made with
//! rcgen, the TSA certificate, the store, an HTTP server, and helpers around the real `openssl`
//! and `curl`.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use cerdb::CertDb;
use der::{Decode, Encode};
use hsm_sim::{HsmSim, KeyCustody, KeyHandle, KeyPurpose, KeyType, MasterKeySource, Signer};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SubjectPublicKeyInfo,
};
use tsa::asn1::{TimeStampResp, TstInfo};
use tsa::{TimestampAuthority, TsaConfig, TsaStore, Verifier};

pub const TSA_KEY: &str = "tsa/signing";

/// The root's validity, days relative to now.
pub const ROOT_DAYS: (i64, i64) = (-60, 3650);

/// The DER of `extendedKeyUsage = critical, timeStamping` (the extension value).
const EKU_TIME_STAMPING: [u8; 12] = [0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

/// A data directory with the key store, the certificates (DER and PEM) and the database.
pub struct Fixture {
    pub dir: PathBuf,
    pub hsm: HsmSim,
    pub signer: Arc<dyn Signer>,
    pub root_der: Vec<u8>,
    /// Intermediates, issuer of the TSA certificate first (empty when the root issued it).
    pub chain_der: Vec<Vec<u8>>,
    pub tsa_der: Vec<u8>,
}

/// Validity from `from` to `to` days relative to now (negative: in the past).
fn validity(params: &mut CertificateParams, (from, to): (i64, i64)) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from);
    params.not_after = now + time::Duration::days(to);
}

/// Validity periods (days relative to now) of the fixture's certificates.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// `Some` for a root → intermediate → TSA chain.
    pub intermediate: Option<(i64, i64)>,
    pub tsa: (i64, i64),
}

impl Layout {
    pub const DIRECT: Layout = Layout { intermediate: None, tsa: (-1, 730) };
    pub const WITH_INTERMEDIATE: Layout = Layout { intermediate: Some((-60, 3650)), tsa: (-1, 730) };
}

pub fn ca_params(cn: &str, path_len: Option<u8>, days: (i64, i64)) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::OrganizationName, "Example Bank Test PKI");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p, days);
    p
}

/// The parameters of a TSA certificate: critical EKU id-kp-timeStamping only, digitalSignature.
pub fn tsa_params(cn: &str, days: (i64, i64)) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::OrganizationName, "Example Bank Test PKI");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let mut eku = CustomExtension::from_oid_content(&[2, 5, 29, 37], EKU_TIME_STAMPING.to_vec());
    eku.set_criticality(true);
    p.custom_extensions.push(eku);
    validity(&mut p, days);
    p
}

impl Fixture {
    /// Creates the key store, the TSA key of `key_type`, a root, optionally an intermediate, and
    /// the TSA certificate, all saved in `dir`.
    pub fn create(dir: &Path, key_type: KeyType, intermediate: bool) -> Fixture {
        let layout = if intermediate { Layout::WITH_INTERMEDIATE } else { Layout::DIRECT };
        Fixture::create_with(dir, key_type, layout)
    }

    /// [`Fixture::create`] with chosen validity periods. The root's key is kept in `root.key`.
    pub fn create_with(dir: &Path, key_type: KeyType, layout: Layout) -> Fixture {
        let hsm = HsmSim::open(dir.join("keys"), &MasterKeySource::KeyFile).unwrap();
        let handle: KeyHandle = TSA_KEY.parse().unwrap();
        let info = hsm.generate(&handle, key_type, KeyPurpose::TsaSigning).unwrap();

        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("Test Root CA", None, ROOT_DAYS);
        let root = root_params.self_signed(&root_key).unwrap();
        std::fs::write(dir.join("root.key"), root_key.serialize_pem()).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);

        let tsa_spki = SubjectPublicKeyInfo::from_der(&info.spki).unwrap();
        let tsa_p = tsa_params("Test TSA", layout.tsa);
        let (tsa_cert, chain) = if let Some(days) = layout.intermediate {
            let int_key = KeyPair::generate().unwrap();
            let int_params = ca_params("Test Issuing CA", Some(0), days);
            let int_cert = int_params.signed_by(&int_key, &root_issuer).unwrap();
            let int_issuer = Issuer::new(int_params, int_key);
            (tsa_p.signed_by(&tsa_spki, &int_issuer).unwrap(), vec![int_cert])
        } else {
            (tsa_p.signed_by(&tsa_spki, &root_issuer).unwrap(), vec![])
        };
        std::fs::write(dir.join("root.der"), root.der()).unwrap();
        std::fs::write(dir.join("root.pem"), root.pem()).unwrap();
        std::fs::write(dir.join("tsa.der"), tsa_cert.der()).unwrap();
        std::fs::write(dir.join("tsa.pem"), tsa_cert.pem()).unwrap();
        let chain_pem: String = chain.iter().map(|c| c.pem()).collect();
        std::fs::write(dir.join("chain.pem"), &chain_pem).unwrap();
        std::fs::write(dir.join("untrusted.pem"), format!("{}{chain_pem}", tsa_cert.pem())).unwrap();
        for (i, c) in chain.iter().enumerate() {
            std::fs::write(dir.join(format!("chain{i}.der")), c.der()).unwrap();
        }
        drop(hsm);
        Fixture::open(dir)
    }

    /// Opens a fixture made by [`Fixture::create`] (also from another process).
    pub fn open(dir: &Path) -> Fixture {
        let hsm = HsmSim::open(dir.join("keys"), &MasterKeySource::KeyFile).unwrap();
        let signer = hsm.signer(&TSA_KEY.parse().unwrap()).unwrap();
        let mut chain_der = Vec::new();
        while let Ok(d) = std::fs::read(dir.join(format!("chain{}.der", chain_der.len()))) {
            chain_der.push(d);
        }
        Fixture {
            dir: dir.to_path_buf(),
            signer,
            root_der: std::fs::read(dir.join("root.der")).unwrap(),
            tsa_der: std::fs::read(dir.join("tsa.der")).unwrap(),
            chain_der,
            hsm,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Opens the database and the TSA on it.
    pub fn tsa(&self, config: TsaConfig) -> (CertDb, TimestampAuthority) {
        let db = CertDb::open(self.dir.join("db")).unwrap();
        let store = TsaStore::open(&db).unwrap();
        let tsa = TimestampAuthority::new(
            self.signer.clone(),
            self.tsa_der.clone(),
            self.chain_der.clone(),
            store,
            config,
        )
        .unwrap();
        (db, tsa)
    }

    /// A verifier on the same database.
    pub fn verifier(&self, db: &CertDb) -> Verifier {
        let store = TsaStore::open(db).unwrap();
        let mut untrusted = vec![self.tsa_der.clone()];
        untrusted.extend(self.chain_der.iter().cloned());
        Verifier::new(self.root_der.clone(), untrusted, Arc::new(store)).unwrap()
    }
}

/// A running HTTP server with the TSA and verification scopes, on 127.0.0.1 and a free port.
pub struct Server {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(tsa: TimestampAuthority, verifier: Verifier) -> Server {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let tsa = web::Data::new(tsa);
                let verifier = web::Data::new(verifier);
                let server = HttpServer::new(move || {
                    App::new().service(tsa::scope(tsa.clone())).service(tsa::verify_scope(verifier.clone()))
                })
                .workers(2)
                .bind(("127.0.0.1", 0))
                .unwrap();
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                server.await.unwrap();
            })
        });
        let (addr, handle) = rx.recv().unwrap();
        Server { url: format!("http://{addr}"), handle, thread: Some(thread) }
    }

    /// Stops the server and waits until it has dropped the TSA (and so the database).
    pub fn stop(mut self) {
        actix_web::rt::System::new().block_on(self.handle.stop(true));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Runs a tool; a missing tool fails the test with the package to install.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}): these tests need the real tools: apt-get install openssl curl")
    });
    out
}

/// Runs a tool and requires success; returns stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test unless both openssl and curl are installed.
pub fn require_tools() {
    run_ok("openssl", &["version"]);
    run_ok("curl", &["--version"]);
}

/// POSTs a file with curl; returns (HTTP status, body).
pub fn post_file(url: &str, content_type: &str, file: &Path) -> (u16, Vec<u8>) {
    let out_file = file.with_extension("http-out");
    let status = run_ok(
        "curl",
        &[
            "-sS",
            "-o",
            out_file.to_str().unwrap(),
            "-w",
            "%{http_code}",
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
            &format!("@{}", file.display()),
            url,
        ],
    );
    (status.trim().parse().unwrap(), std::fs::read(&out_file).unwrap_or_default())
}

/// POSTs a TimeStampReq file to `/tsa`; requires HTTP 200 and the reply content type.
pub fn post_query(server: &Server, query: &Path) -> Vec<u8> {
    let (status, body) = post_file(&format!("{}/tsa", server.url), "application/timestamp-query", query);
    assert_eq!(status, 200, "POST /tsa: {}", String::from_utf8_lossy(&body));
    body
}

pub fn decode_resp(der: &[u8]) -> TimeStampResp {
    let resp = TimeStampResp::from_der(der).expect("a DER TimeStampResp");
    assert_eq!(resp.to_der().unwrap(), der, "the response re-encodes byte for byte");
    resp
}

/// The TSTInfo inside a granted response.
pub fn tst_info(resp: &TimeStampResp) -> TstInfo {
    let token = resp.time_stamp_token.as_ref().expect("a token");
    let sd: cms::signed_data::SignedData = token.content.decode_as().unwrap();
    let econtent = sd.encap_content_info.econtent.expect("eContent");
    TstInfo::from_der(econtent.decode_as::<der::asn1::OctetString>().unwrap().as_bytes()).unwrap()
}

/// The token (ContentInfo DER) of a granted response.
pub fn token_der(resp: &TimeStampResp) -> Vec<u8> {
    resp.time_stamp_token.as_ref().expect("a token").to_der().unwrap()
}

/// A DER TimeStampReq for `digest` made with x509-tsp.
pub fn query_for(
    alg: der::oid::ObjectIdentifier,
    digest: &[u8],
    nonce: Option<u64>,
    cert_req: bool,
) -> Vec<u8> {
    use x509_tsp::{MessageImprint, TimeStampReq, TspVersion};
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: x509_cert::spki::AlgorithmIdentifierOwned { oid: alg, parameters: None },
            hashed_message: der::asn1::OctetString::new(digest).unwrap(),
        },
        req_policy: None,
        nonce: nonce.map(positive_int),
        cert_req,
        extensions: None,
    };
    req.to_der().unwrap()
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().to_vec()
}

pub const SHA256: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// A positive INTEGER in minimal DER form.
pub fn positive_int(n: u64) -> der::asn1::Int {
    let be = n.to_be_bytes();
    let start = be.iter().position(|b| *b != 0).unwrap_or(7);
    let mut bytes = Vec::new();
    if be[start] & 0x80 != 0 {
        bytes.push(0);
    }
    bytes.extend_from_slice(&be[start..]);
    der::asn1::Int::new(&bytes).unwrap()
}

/// A clock stopped at one instant.
#[derive(Debug)]
pub struct FixedClock(pub chrono::DateTime<chrono::Utc>);

impl tsa::Clock for FixedClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0
    }
}

/// A config with a fixed clock.
pub fn fixed_config(at: chrono::DateTime<chrono::Utc>) -> TsaConfig {
    TsaConfig { clock: Arc::new(FixedClock(at)), ..TsaConfig::default() }
}

/// Issues a token for `data` (SHA-256, nonce, certReq as given) and returns the response DER.
pub fn stamp(tsa: &TimestampAuthority, data: &[u8], cert_req: bool) -> Vec<u8> {
    let der = tsa.respond(&query_for(SHA256, &sha256(data), Some(0x1234_5678), cert_req));
    let resp = decode_resp(&der);
    assert_eq!(resp.status.status, tsa::asn1::PkiStatus::Granted, "{:?}", resp.status);
    der
}

/// The status and failure bits of a refusal.
pub fn refusal(der: &[u8]) -> tsa::asn1::PkiFailureInfo {
    let resp = decode_resp(der);
    assert_eq!(resp.status.status, tsa::asn1::PkiStatus::Rejection);
    assert!(resp.time_stamp_token.is_none());
    assert!(resp.status.status_string.is_some());
    resp.status.fail_info.expect("failInfo")
}
