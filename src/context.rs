//! Opening one data directory: the storage (the embedded engine, or the PostgreSQL database of
//! the settings) and the key store, wired into the CA. With PostgreSQL the soft key store's
//! sealed records (and its master key's parameters) are in the database, so that every node
//! that knows the master passphrase signs with the same keys ([`crate::custody_db`]); a
//! PKCS#11 token is each node's own configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ca_core::{Ca, InitOutcome, SystemClock};
use cerdb::CertDb;
use hsm_sim::{HsmSim, KeyCustody, Pkcs11Custody};

use crate::settings::{HsmBackend, Settings};

/// Paths inside a data directory.
pub fn db_path(data: &Path) -> PathBuf {
    data.join("db")
}

/// The key store directory.
pub fn keys_path(data: &Path) -> PathBuf {
    data.join("keys")
}

/// Where a console reset leaves the account's one-time password ([`admin_web::otp_file`]).
pub fn resets_path(data: &Path) -> PathBuf {
    data.join(admin_web::otp_file::DIR_NAME)
}

/// [`resets_path`] of the data directory this process opened, for commands that run inside it.
pub fn resets_dir() -> Option<PathBuf> {
    RESETS.get().cloned()
}

static RESETS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The admin socket.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("admin.sock")
}

/// Creates the data directory (mode 0700) if missing, and forces owner-only modes on it and
/// everything under it: directories 0700, files 0600 — whatever mode they were created with
/// before (an existing 0755 directory, a database file from an older version, a copy).
fn ensure_data_dir(data: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !data.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data)
            .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", data.display()))?;
    }
    owner_only(data)
}

/// Directories 0700 and files 0600, from `dir` down; symbolic links are not followed.
pub fn owner_only(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| anyhow::anyhow!("cannot make {} owner-only: {e}", path.display()))
    };
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| anyhow::anyhow!("cannot read data directory {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("the data directory {} is not a directory", dir.display());
    }
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        set(&d, 0o700)?;
        let entries = std::fs::read_dir(&d)
            .map_err(|e| anyhow::anyhow!("cannot read directory {}: {e}", d.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| anyhow::anyhow!("cannot read directory {}: {e}", d.display()))?;
            let kind = entry
                .file_type()
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", entry.path().display()))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file()
                && entry.metadata().map(|m| m.permissions().mode() & 0o777 != 0o600).unwrap_or(true)
            {
                set(&entry.path(), 0o600)?;
            }
        }
    }
    Ok(())
}

fn open_parts(data: &Path, settings: &Settings) -> anyhow::Result<(CertDb, Arc<dyn KeyCustody>)> {
    ensure_data_dir(data)?;
    let (db, hsm) = if settings.database.url.is_some() {
        // The database first: it keeps the soft store's records.
        let db = open_db(data, settings)?;
        let hsm = open_custody_in(data, settings, Some(&db))?;
        (db, hsm)
    } else {
        // The key custody first: a token that cannot be used says so before the database is
        // locked.
        let hsm = open_custody(data, settings)?;
        (open_db(data, settings)?, hsm)
    };
    // The files the database engine created just now, too.
    owner_only(data)?;
    let _ = CUSTODY.set(hsm.clone());
    let _ = RESETS.set(resets_path(data));
    Ok((db, hsm))
}

/// The database the settings choose: PostgreSQL at `[database] url` (or `PKI_DATABASE_URL`),
/// its schema migrated to this version, else the sled database of the data directory.
fn open_db(data: &Path, settings: &Settings) -> anyhow::Result<CertDb> {
    if let Some(url) = &settings.database.url {
        return CertDb::open_postgres(url)
            .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL database: {e}"));
    }
    CertDb::open_with_cache(db_path(data), settings.database.cache_mib << 20).map_err(|e| match e {
        cerdb::Error::Locked(_) => anyhow::Error::new(InUse(data.display().to_string())),
        other => anyhow::anyhow!("cannot open the database in {}: {other}", data.display()),
    })
}

/// The embedded database of the data directory is held by another process: a `pki serve`
/// (still starting, when a command that would go through its admin socket finds none), or
/// another command.
#[derive(Debug)]
pub struct InUse(pub String);

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the data directory {} is in use by another pki process (a `pki serve`, or another command)",
            self.0
        )
    }
}

impl std::error::Error for InUse {}

/// Whether the settings' database may hold a CA: a PostgreSQL database is asked when opened;
/// the sled database exists once created.
pub fn database_may_exist(data: &Path, settings: &Settings) -> bool {
    settings.database.url.is_some() || db_path(data).exists()
}

/// `pki db migrate`: brings the PostgreSQL database's schema to this version; what it has then.
pub fn migrate_database(settings: &Settings) -> anyhow::Result<String> {
    let Some(url) = &settings.database.url else {
        anyhow::bail!(
            "pki db migrate needs a PostgreSQL database: set [database] url in pki.toml or {}; the embedded database has no schema to migrate",
            crate::settings::DATABASE_URL_ENV
        );
    };
    let db = CertDb::open_postgres(url)
        .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL database: {e}"))?;
    let version = db.schema_version().unwrap_or_default();
    Ok(format!("{}: schema version {version}\n", db.location()))
}

/// The key custody of this process, for `/healthz`.
static CUSTODY: std::sync::OnceLock<Arc<dyn KeyCustody>> = std::sync::OnceLock::new();

/// Whether the key custody of this process can sign now (`Err` names the problem).
pub fn custody_health() -> Result<(), String> {
    match CUSTODY.get() {
        Some(c) => c.health().map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// The key custody the settings choose: the soft store in `keys/`, or a PKCS#11 token (its
/// escrowed keys, wrapped by the token, in `keys/`).
pub fn open_custody(data: &Path, settings: &Settings) -> anyhow::Result<Arc<dyn KeyCustody>> {
    open_custody_in(data, settings, None)
}

/// [`open_custody`], the soft store's records kept by `db` when it keeps them for every node.
fn open_custody_in(
    data: &Path,
    settings: &Settings,
    db: Option<&CertDb>,
) -> anyhow::Result<Arc<dyn KeyCustody>> {
    let shared = db.and_then(|db| Some((db.custody_records()?, db.location())));
    Ok(match settings.hsm.backend {
        HsmBackend::Soft => match shared {
            Some((records, location)) => Arc::new(HsmSim::with_records(
                keys_path(data),
                Arc::new(crate::custody_db::DbRecords::new(records, location)),
                &settings.master_key_source()?,
            )?),
            None => Arc::new(HsmSim::open(keys_path(data), &settings.master_key_source()?)?),
        },
        HsmBackend::Pkcs11 => Arc::new(open_token(data, settings)?),
    })
}

/// The PKCS#11 token of the settings.
pub fn open_token(data: &Path, settings: &Settings) -> anyhow::Result<Pkcs11Custody> {
    ensure_data_dir(data)?;
    Ok(Pkcs11Custody::open(settings.hsm.pkcs11_config(keys_path(data))?)?)
}

/// `pki hsm import`: moves the soft store onto the configured token — the key files of `data`
/// with sled, the sealed key records in the database with PostgreSQL.
pub fn import_soft_store(data: &Path, settings: &Settings) -> anyhow::Result<String> {
    anyhow::ensure!(
        settings.hsm.backend == HsmBackend::Pkcs11,
        "pki hsm import moves keys onto a token: set [hsm] backend = \"pkcs11\" with module and token_label"
    );
    let keys = keys_path(data);
    let shared = settings.database.url.is_some();
    anyhow::ensure!(
        shared || keys.join("master.key").exists() || keys.join("master.kdf.json").exists(),
        "no soft key store in {}",
        keys.display()
    );
    // The database holds the audit log's key, sealed by the soft store (and, with PostgreSQL, the
    // soft store's records): opened first, so that a database in use stops the move before
    // anything moved.
    let db = open_db(data, settings)?;
    let soft = match db.custody_records() {
        Some(records) => HsmSim::with_records(
            &keys,
            Arc::new(crate::custody_db::DbRecords::new(records, db.location())),
            &settings.master_key_source()?,
        )?,
        None => HsmSim::open(&keys, &settings.master_key_source()?)?,
    };
    let token = open_token(data, settings)?;
    let moved = soft.move_to_token(&token)?;
    let mut out = String::new();
    for (handle, purpose) in &moved {
        out.push_str(&format!("moved {handle} ({purpose})\n"));
    }
    if ca_core::audit::AuditKey::reseal(&db, &soft, &token)? {
        out.push_str("sealed the audit log's key by the token\n");
    }
    // The other secrets sealed by the soft store: without them the console's officers could not
    // pass their TOTP step and no EAB key could bind an ACME account.
    let (seeds, lost_seeds) = admin_web::accounts::reseal_totp_seeds(&*db.console(), &soft, &token)?;
    if seeds > 0 {
        out.push_str(&format!("sealed {seeds} console TOTP seed(s) by the token\n"));
    }
    for name in lost_seeds {
        out.push_str(&format!(
            "the TOTP seed of console user {name} opens with neither key store: reset it with `pki user reset --name {name}`\n"
        ));
    }
    let (eab_keys, lost_eab) =
        acme::eab::reseal(&*db.acme_records(), &soft, &token).map_err(anyhow::Error::msg)?;
    if eab_keys > 0 {
        out.push_str(&format!("sealed {eab_keys} ACME EAB key(s) by the token\n"));
    }
    for kid in lost_eab {
        out.push_str(&format!(
            "the HMAC key of EAB key {kid} opens with neither key store: revoke it with `pki acme eab revoke --kid {kid}`\n"
        ));
    }
    out.push_str(&format!("{} keys moved onto the token {:?}\n", moved.len(), token.config().token_label));
    Ok(out)
}

/// Opens the CA of an initialised data directory.
pub fn open_ca(data: &Path, settings: &Settings) -> anyhow::Result<Ca> {
    let (db, hsm) = open_parts(data, settings)?;
    Ok(Ca::open(db, hsm, settings.ca.clone(), Arc::new(SystemClock))?
        .with_escrow(settings.escrow.clone())?
        .with_mailbox_validation(settings.validation.clone())?)
}

/// Opens the CA, creating the hierarchy on first use.
pub fn init_ca(data: &Path, settings: &Settings, actor: &str) -> anyhow::Result<(Ca, InitOutcome)> {
    // What a new hierarchy needs is checked before anything is created for it.
    if !database_may_exist(data, settings) {
        settings.ca.validate_for_init()?;
    }
    let (db, hsm) = open_parts(data, settings)?;
    if settings.database.url.is_some() && db.count()? == 0 {
        settings.ca.validate_for_init()?;
    }
    let (ca, outcome) = Ca::init(db, hsm, settings.ca.clone(), Arc::new(SystemClock), actor)?;
    Ok((
        ca.with_escrow(settings.escrow.clone())?.with_mailbox_validation(settings.validation.clone())?,
        outcome,
    ))
}

/// How the OCSP responder dates its answers: for [`ca_core::OCSP_RESPONSE_LIFETIME`], which the
/// OCSP signer's renewal window covers.
pub fn ocsp_config() -> ocsp_responder::OcspConfig {
    ocsp_responder::OcspConfig::with_next_update(ca_core::OCSP_RESPONSE_LIFETIME)
}

/// The OCSP responder of a CA: the issuing CA's delegated signer in use, status read from cerdb
/// (on PostgreSQL, the HTTP answers' reads pipelined and gathered as the directory's are).
pub fn ocsp_responder(ca: &Ca) -> anyhow::Result<ocsp_responder::OcspResponder> {
    use ca_core::CaCert;
    let (signer_der, signer) = ca.ocsp_signer_certified()?;
    Ok(ocsp_responder::OcspResponder::new(
        ca.db().reader(),
        &ca.ca_cert(CaCert::Issuing),
        &signer_der,
        signer,
        ocsp_config(),
        Arc::new(ocsp_responder::SystemClock),
    )?
    .with_change_feed(ca.db().feed())?
    .with_pipelined_reads(ca.db().pipelined_reads()))
}

/// The timestamp authority of this process's CA. One per process, shared by the HTTP service
/// and the admin socket, so that serials come from one allocator and strictly increase.
pub fn tsa(ca: &Ca) -> anyhow::Result<Arc<tsa::TimestampAuthority>> {
    static TSA: std::sync::OnceLock<Arc<tsa::TimestampAuthority>> = std::sync::OnceLock::new();
    if let Some(t) = TSA.get() {
        return Ok(t.clone());
    }
    let store = tsa::TsaStore::open(ca.db())?;
    // The TSA certificate is issued by the root: its chain below the root is just itself.
    let (cert, key) = ca.tsa_signer_certified()?;
    let authority = tsa::TimestampAuthority::new(key, cert, Vec::new(), store, tsa::TsaConfig::default())?;
    Ok(TSA.get_or_init(|| Arc::new(authority)).clone())
}

/// The auditors' verifier: trusts this CA's root, checks the token record.
pub fn tsa_verifier(ca: &Ca) -> anyhow::Result<tsa::Verifier> {
    use ca_core::CaCert;
    let store = tsa::TsaStore::open(ca.db())?;
    // Every TSA certificate, read at each verification: a re-key (`pki ca rekey --ca tsa`, here
    // or on another node) adds one while the verifier lives, and older tokens keep theirs.
    let db = ca.db().clone();
    Ok(tsa::Verifier::new(ca.ca_cert(CaCert::Root).to_vec(), Vec::new(), Arc::new(store))?
        .with_more_certificates(Arc::new(move || ca_core::tsa_certificates(&db).map_err(|e| e.to_string()))))
}
