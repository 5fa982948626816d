//! HTTPS for `pki serve`: rustls with the ring provider. The certificate is the console's server
//! certificate that the root CA issued (its key signs inside hsm-sim and never leaves it), or
//! the certificate and key files given in `[server.tls]` (a key in a file is the operator's
//! choice).

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer as TlsSigner, SigningKey};
use rustls::{ServerConfig, SignatureAlgorithm, SignatureScheme};

/// A TLS signing key that signs in the key store.
#[derive(Debug)]
struct HsmSigningKey {
    key: Arc<dyn hsm_sim::Signer>,
    scheme: SignatureScheme,
    algorithm: SignatureAlgorithm,
}

/// One signature by [`HsmSigningKey`]'s key with its one scheme.
#[derive(Debug)]
struct HsmTlsSigner {
    key: Arc<dyn hsm_sim::Signer>,
    scheme: SignatureScheme,
}

impl SigningKey for HsmSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn TlsSigner>> {
        offered.contains(&self.scheme).then(|| {
            Box::new(HsmTlsSigner { key: self.key.clone(), scheme: self.scheme }) as Box<dyn TlsSigner>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.key.public_key_spki()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

impl TlsSigner for HsmTlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // hsm-sim signs ECDSA as DER (what TLS carries), RSA as PKCS#1 v1.5 with SHA-256.
        self.key.sign(message).map_err(|e| rustls::Error::General(format!("key store: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// The TLS signature scheme of a key-store key.
fn scheme_of(kt: hsm_sim::KeyType) -> (SignatureScheme, SignatureAlgorithm) {
    use hsm_sim::KeyType as K;
    match kt {
        K::P256 => (SignatureScheme::ECDSA_NISTP256_SHA256, SignatureAlgorithm::ECDSA),
        K::P384 => (SignatureScheme::ECDSA_NISTP384_SHA384, SignatureAlgorithm::ECDSA),
        K::Ed25519 => (SignatureScheme::ED25519, SignatureAlgorithm::ED25519),
        // RSA keys sign PKCS#1 v1.5 with SHA-256 in hsm-sim: TLS 1.2 only.
        _ => (SignatureScheme::RSA_PKCS1_SHA256, SignatureAlgorithm::RSA),
    }
}

/// A certificate chain (leaf first) with its key in the key store.
pub fn hsm_certified_key(chain: Vec<Vec<u8>>, key: Arc<dyn hsm_sim::Signer>) -> CertifiedKey {
    let (scheme, algorithm) = scheme_of(key.key_type());
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    CertifiedKey::new(chain, Arc::new(HsmSigningKey { key, scheme, algorithm }))
}

/// A certificate chain and key from PEM files (each read whole, up to
/// [`crate::input::MAX_DER_FILE`]: a wrong path such as a device is refused, not read for ever).
pub fn file_certified_key(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertifiedKey> {
    use crate::input::{read_bounded, MAX_DER_FILE};
    let certs = read_bounded(cert_file, "[server.tls] cert_file", MAX_DER_FILE)?;
    let chain = CertificateDer::pem_slice_iter(&certs)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("cannot read certificates from {}: {e}", cert_file.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert_file.display());
    let key_pem = read_bounded(key_file, "[server.tls] key_file", MAX_DER_FILE)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow::anyhow!("cannot read a private key from {}: {e}", key_file.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .with_context(|| format!("unusable private key in {}", key_file.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().with_context(|| {
        format!("{} does not hold the key of {}", key_file.display(), cert_file.display())
    })?;
    Ok(ck)
}

/// Serves one certificate, which can be replaced while the server runs (renewal).
#[derive(Debug)]
pub struct Resolver(RwLock<Arc<CertifiedKey>>);

impl Resolver {
    /// Starts with `ck`.
    pub fn new(ck: CertifiedKey) -> Arc<Resolver> {
        Arc::new(Resolver(RwLock::new(Arc::new(ck))))
    }

    /// Serves `ck` from the next handshake on.
    pub fn replace(&self, ck: CertifiedKey) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The server configuration: TLS 1.2 and 1.3 (ring), no client certificates.
pub fn server_config(resolver: Arc<Resolver>) -> anyhow::Result<ServerConfig> {
    Ok(ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver))
}
