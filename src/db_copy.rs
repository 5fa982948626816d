//! `pki db copy --from A --to B`: moves an installation between engines — a sled data directory
//! into an empty PostgreSQL database, or back — then verifies the copy.
//!
//! 1. the destination must be empty (a PostgreSQL database `pki init` never touched, a data
//!    directory without a database or keys);
//! 2. everything the database holds is copied ([`cerdb::copy::copy`]) with a progress bar, and the
//!    soft key store's sealed records with their master key's parameters (files in `keys/` for a
//!    data directory, the `custody_records` table for PostgreSQL) — still sealed, never opened;
//! 3. verified: the counts of every kind, a random sample of certificates and every other record
//!    byte for byte ([`cerdb::copy::verify`]), every key record, and the audit log's hash chain on
//!    the copy (the check of `pki audit verify`, run with the copy's own keys).
//!
//! Every process using the source must be stopped first: a sled directory is locked by its
//! server, and a change during the copy is found by the counts.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cerdb::copy::{Kind, Progress};
use cerdb::CertDb;
use hsm_sim::{FileRecords, SealedRecords};

use crate::settings::Settings;

/// One side of a copy.
#[derive(Debug, Clone)]
pub enum Place {
    /// A data directory: sled in `db/`, the key store in `keys/`.
    Dir(PathBuf),
    /// A PostgreSQL database.
    Postgres(String),
}

impl Place {
    /// A `postgres://` or `postgresql://` URL, else a data directory.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Place::Postgres(s.to_string())
        } else {
            Place::Dir(PathBuf::from(s))
        }
    }
}

/// An open side: its database and its sealed key records.
struct Opened {
    db: CertDb,
    keys: Arc<dyn SealedRecords>,
    /// Where `pki` prints it is.
    name: String,
}

fn open(place: &Place, settings: &Settings, create: bool) -> anyhow::Result<Opened> {
    match place {
        Place::Dir(dir) => {
            let db_dir = crate::context::db_path(dir);
            if !create {
                anyhow::ensure!(
                    db_dir.exists(),
                    "{} holds no database ({} is missing): give a data directory made by pki init",
                    dir.display(),
                    db_dir.display()
                );
            }
            let db =
                CertDb::open_with_cache(&db_dir, settings.database.cache_mib << 20).map_err(|e| match e {
                    cerdb::Error::Locked(_) => anyhow::anyhow!(
                        "the data directory {} is in use by another pki process: stop it before copying",
                        dir.display()
                    ),
                    other => anyhow::anyhow!("cannot open the database in {}: {other}", dir.display()),
                })?;
            let keys: Arc<dyn SealedRecords> = Arc::new(FileRecords::open(crate::context::keys_path(dir))?);
            crate::context::owner_only(dir)?;
            Ok(Opened { db, keys, name: dir.display().to_string() })
        }
        Place::Postgres(url) => {
            let db = CertDb::open_postgres(url)
                .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL database: {e}"))?;
            let records = db
                .custody_records()
                .ok_or_else(|| anyhow::anyhow!("{} keeps no key records", db.location()))?;
            let name = db.location().to_string();
            let keys: Arc<dyn SealedRecords> = Arc::new(crate::custody_db::DbRecords::new(records, &name));
            Ok(Opened { db, keys, name })
        }
    }
}

/// The progress bar on standard error: redrawn in place on a terminal, a line per kind
/// otherwise.
struct Bar {
    tty: bool,
    last_kind: Option<Kind>,
}

impl Bar {
    fn show(&mut self, p: Progress) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            const WIDTH: u64 = 30;
            let filled = (p.done.min(p.total) * WIDTH).checked_div(p.total).unwrap_or(WIDTH);
            let _ = write!(
                err,
                "\r[{}{}] {:>10} / {:<10} {:<20}",
                "#".repeat(filled as usize),
                " ".repeat((WIDTH - filled) as usize),
                p.done,
                p.total,
                p.kind.name()
            );
            if p.done == p.total {
                let _ = writeln!(err);
            }
        } else if p.done == p.total && self.last_kind != Some(p.kind) {
            let _ = writeln!(err, "copied {} {}", p.done, p.kind.name());
            self.last_kind = Some(p.kind);
        }
        let _ = err.flush();
    }
}

/// Copies the soft key store's sealed records and master key parameters of `from` into `to`,
/// which holds none; the number of keys.
fn copy_keys(from: &Opened, to: &Opened, into_postgres: bool) -> anyhow::Result<usize> {
    anyhow::ensure!(
        to.keys.handles()?.is_empty() && to.keys.master_params()?.is_none(),
        "{} holds key records already: a copy goes into an empty installation only",
        to.name
    );
    let handles = from.keys.handles()?;
    match from.keys.master_params()? {
        Some(params) => {
            to.keys.put_master_params_new(&params)?;
        }
        None if handles.is_empty() => {}
        None if into_postgres => anyhow::bail!(
            "the keys of {} are sealed under a random master key file (keys/master.key), which only that machine has; nodes on PostgreSQL share a passphrase: initialise with [hsm] passphrase_file (or PKI_HSM_PASSPHRASE) set, or keep this installation on sled",
            from.name
        ),
        None => anyhow::bail!("the keys of {} have no master key parameters", from.name),
    }
    for h in &handles {
        let record = from.keys.get(h)?.with_context(|| format!("key {h} vanished from {}", from.name))?;
        to.keys.put_new(h, &record)?;
        anyhow::ensure!(
            to.keys.get(h)?.as_deref() == Some(record.as_slice()),
            "key {h} reads back differently"
        );
    }
    anyhow::ensure!(to.keys.handles()? == handles, "the copy's key records differ from the original's");
    Ok(handles.len())
}

/// `pki db copy`: what it did, for standard output.
pub fn run(from: &str, to: &str, sample: u64, settings: &Settings) -> anyhow::Result<String> {
    let (from_place, to_place) = (Place::parse(from), Place::parse(to));
    if let (Place::Dir(a), Place::Dir(b)) = (&from_place, &to_place) {
        anyhow::ensure!(a != b, "--from and --to name the same data directory");
    }
    if let (Place::Postgres(a), Place::Postgres(b)) = (&from_place, &to_place) {
        anyhow::ensure!(a != b, "--from and --to name the same database");
    }
    if let Place::Dir(d) = &to_place {
        let db_dir = crate::context::db_path(d);
        anyhow::ensure!(
            !db_dir.exists() || std::fs::read_dir(&db_dir).map(|mut r| r.next().is_none()).unwrap_or(false),
            "{} holds a database already: a copy goes into an empty installation only",
            d.display()
        );
    }
    let src = open(&from_place, settings, false)?;
    let dst = open(&to_place, settings, true)?;
    cerdb::copy::refuse_non_empty(&dst.db).map_err(|e| match e {
        cerdb::Error::Inconsistent(why) => anyhow::anyhow!(why),
        other => other.into(),
    })?;
    let started = std::time::Instant::now();
    let keys = copy_keys(&src, &dst, matches!(to_place, Place::Postgres(_)))?;
    let mut bar = Bar { tty: std::io::stderr().is_terminal(), last_kind: None };
    cerdb::copy::copy(&src.db, &dst.db, &mut |p| bar.show(p))?;
    let copied = started.elapsed();

    let rng = ring::rand::SystemRandom::new();
    let mut next =
        || ring::rand::generate::<[u8; 8]>(&rng).map(|b| u64::from_be_bytes(b.expose())).unwrap_or_default();
    let verified = cerdb::copy::verify(&src.db, &dst.db, sample, &mut next)?;
    let (src_name, dst_name) = (src.name.clone(), dst.name.clone());
    // The copy is opened again as a CA below: the embedded engine admits one handle.
    drop((src, dst));
    let audit_entries = audit_check(&to_place, settings)?;

    let mut out = format!("copied {} into {} in {:.1} s\n", src_name, dst_name, copied.as_secs_f64());
    for (kind, n) in &verified.counts {
        out.push_str(&format!("  {:<20} {n}\n", kind.name()));
    }
    out.push_str(&format!("  {:<20} {keys}\n", "sealed keys"));
    out.push_str(&format!(
        "verified: every count equal; {} certificates drawn at random, all {} audit entries and {} timestamp records, {} other records and every key record equal byte for byte; audit log {} entries, hash chain intact\n",
        verified.certificates_compared,
        verified.audit_compared,
        verified.timestamps_compared,
        verified.others_compared,
        audit_entries,
    ));
    Ok(out)
}

/// The audit log's hash chain checked on the copy with its own keys (what `pki audit verify`
/// does); the number of entries.
fn audit_check(place: &Place, settings: &Settings) -> anyhow::Result<u64> {
    let mut s = settings.clone();
    let data: PathBuf = match place {
        Place::Dir(d) => {
            s.database.url = None;
            d.clone()
        }
        Place::Postgres(url) => {
            s.database.url = Some(url.clone());
            // The copy's keys are in the database; the key directory of a node is its own.
            std::env::temp_dir().join(format!("pki-copy-check-{}", std::process::id()))
        }
    };
    let result = check_with(&data, &s);
    if matches!(place, Place::Postgres(_)) {
        let _ = std::fs::remove_dir_all(&data);
    }
    result
}

fn check_with(data: &Path, settings: &Settings) -> anyhow::Result<u64> {
    let ca = crate::context::open_ca(data, settings).context("cannot open the copy's CA")?;
    let report = ca.audit_report(None).map_err(|e| anyhow::anyhow!("the copy's audit log: {e}"))?;
    Ok(report.entries)
}
