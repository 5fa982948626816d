//! Opening one data directory: the sled database and the key store, wired into the CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ca_core::{Ca, InitOutcome, SystemClock};
use cerdb::CertDb;
use hsm_sim::HsmSim;

use crate::settings::Settings;

/// Paths inside a data directory.
pub fn db_path(data: &Path) -> PathBuf {
    data.join("db")
}

/// The key store directory.
pub fn keys_path(data: &Path) -> PathBuf {
    data.join("keys")
}

/// The admin socket.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("admin.sock")
}

fn ensure_data_dir(data: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !data.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data)
            .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", data.display()))?;
    }
    Ok(())
}

fn open_parts(data: &Path, settings: &Settings) -> anyhow::Result<(CertDb, Arc<HsmSim>)> {
    ensure_data_dir(data)?;
    let db =
        CertDb::open_with_cache(db_path(data), settings.database.cache_mib << 20).map_err(|e| match e {
            cerdb::Error::Locked(_) => anyhow::anyhow!(
            "the data directory {} is in use by another pki process, and its admin socket does not answer",
            data.display()
        ),
            other => anyhow::anyhow!("cannot open the database in {}: {other}", data.display()),
        })?;
    let hsm = HsmSim::open(keys_path(data), &settings.master_key_source()?)?;
    Ok((db, Arc::new(hsm)))
}

/// Opens the CA of an initialised data directory.
pub fn open_ca(data: &Path, settings: &Settings) -> anyhow::Result<Ca> {
    let (db, hsm) = open_parts(data, settings)?;
    Ok(Ca::open(db, hsm, settings.ca.clone(), Arc::new(SystemClock))?)
}

/// Opens the CA, creating the hierarchy on first use.
pub fn init_ca(data: &Path, settings: &Settings, actor: &str) -> anyhow::Result<(Ca, InitOutcome)> {
    let (db, hsm) = open_parts(data, settings)?;
    Ok(Ca::init(db, hsm, settings.ca.clone(), Arc::new(SystemClock), actor)?)
}

/// The OCSP responder of a CA: the issuing CA's delegated signer, status read from cerdb.
pub fn ocsp_responder(ca: &Ca) -> anyhow::Result<ocsp_responder::OcspResponder> {
    use ca_core::CaCert;
    Ok(ocsp_responder::OcspResponder::new(
        ca.db().reader(),
        ca.ca_cert(CaCert::Issuing),
        ca.ca_cert(CaCert::Ocsp),
        ca.ocsp_signer()?,
        ocsp_responder::OcspConfig::default(),
        Arc::new(ocsp_responder::SystemClock),
    )?
    .with_change_feed(ca.db().feed())?)
}

/// The timestamp authority of this process's CA. One per process, shared by the HTTP service
/// and the admin socket, so that serials come from one allocator and strictly increase.
pub fn tsa(ca: &Ca) -> anyhow::Result<Arc<tsa::TimestampAuthority>> {
    static TSA: std::sync::OnceLock<Arc<tsa::TimestampAuthority>> = std::sync::OnceLock::new();
    if let Some(t) = TSA.get() {
        return Ok(t.clone());
    }
    use ca_core::CaCert;
    let store = tsa::TsaStore::open(ca.db())?;
    // The TSA certificate is issued by the root: its chain below the root is just itself.
    let authority = tsa::TimestampAuthority::new(
        ca.tsa_signer()?,
        ca.ca_cert(CaCert::Tsa).to_vec(),
        Vec::new(),
        store,
        tsa::TsaConfig::default(),
    )?;
    Ok(TSA.get_or_init(|| Arc::new(authority)).clone())
}

/// The auditors' verifier: trusts this CA's root, checks the token record.
pub fn tsa_verifier(ca: &Ca) -> anyhow::Result<tsa::Verifier> {
    use ca_core::CaCert;
    let store = tsa::TsaStore::open(ca.db())?;
    Ok(tsa::Verifier::new(
        ca.ca_cert(CaCert::Root).to_vec(),
        vec![ca.ca_cert(CaCert::Tsa).to_vec()],
        Arc::new(store),
    )?)
}
