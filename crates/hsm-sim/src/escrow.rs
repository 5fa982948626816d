//! PKCS#12 (RFC 7292) delivery of escrowed keys, written by `p12-keystore` with PBES2
//! (PBKDF2-HMAC-SHA256, AES-256-CBC) and an HMAC-SHA256 MAC, as OpenSSL 3 writes by default.

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey, PrivateKeyChain,
};

use crate::Error;

/// PBKDF2 iterations for key encryption and MAC (OpenSSL 3 writes 2048; we spend more).
const ITERATIONS: u32 = 100_000;
/// The shortest PKCS#12 password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

pub(crate) fn check_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(Error::WeakPkcs12Password { min: MIN_PASSWORD_LEN });
    }
    Ok(())
}

pub(crate) fn pkcs12(
    pkcs8: &[u8],
    chain_der: &[Vec<u8>],
    password: &str,
    friendly_name: &str,
) -> Result<Vec<u8>, Error> {
    let p12 = |e: p12_keystore::error::Error| Error::Pkcs12(e.to_string());
    let key = PrivateKey::from_der(pkcs8).map_err(p12)?;
    let certs =
        chain_der.iter().map(|d| Certificate::from_der(d)).collect::<Result<Vec<_>, _>>().map_err(p12)?;
    let mut local_id = [0u8; 20];
    let digest =
        ring::digest::digest(&ring::digest::SHA256, chain_der.first().map(Vec::as_slice).unwrap_or(pkcs8));
    local_id.copy_from_slice(&digest.as_ref()[..20]);
    let mut ks = KeyStore::new();
    ks.add_entry(
        friendly_name,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_id.to_vec(), key, certs)),
    );
    ks.writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(p12)
}
