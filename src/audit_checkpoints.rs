//! Signed checkpoints of the audit log ([`ca_core::checkpoint`]) wired to this process's own
//! timestamp authority: `pki audit checkpoint`, `pki audit verify --checkpoint`, and the periodic
//! checkpoints of `pki serve` in `[audit] checkpoint_dir`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ca_core::checkpoint::Checkpoint;
use ca_core::Ca;
use der::{Decode as _, Encode as _};

/// Makes a checkpoint (DER) of `ca`'s audit log, timestamped by this process's TSA; `why` goes
/// into its `audit.checkpoint` entry.
pub fn make(ca: &Ca, actor: &str, why: &str) -> anyhow::Result<(Vec<u8>, Checkpoint)> {
    let authority = crate::context::tsa(ca)?;
    let stamp = move |signature: &[u8]| -> Result<Vec<u8>, String> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, signature)
            .as_ref()
            .try_into()
            .map_err(|_| "SHA-256 is 32 bytes".to_string())?;
        let mut nonce = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| "no randomness for the nonce".to_string())?;
        let query = tsa::sha256_query(&digest, &nonce).map_err(|e| e.to_string())?;
        let reply = authority.respond(&query);
        let resp = tsa::asn1::TimeStampResp::from_der(&reply).map_err(|e| e.to_string())?;
        let token =
            resp.time_stamp_token.ok_or_else(|| format!("the TSA refused: {:?}", resp.status.status))?;
        token.to_der().map_err(|e| e.to_string())
    };
    Ok(ca.audit_checkpoint(actor, why, &stamp)?)
}

/// `pki audit verify --checkpoint`: the checkpoint, its timestamp (by this CA's TSA, in its
/// record) and the log against it; what to print.
pub fn verify(ca: &Ca, bytes: &[u8]) -> Result<String, String> {
    let verifier = crate::context::tsa_verifier(ca).map_err(|e| format!("{e:#}"))?;
    let check = |token: &[u8], signature: &[u8]| {
        verifier
            .verify(token, tsa::Timestamped::Data(signature))
            .map(|v| v.gen_time)
            .map_err(|e| e.to_string())
    };
    let r = ca.verify_audit_checkpoint(bytes, &check).map_err(|e| e.to_string())?;
    let cp = &r.checkpoint;
    let mut out = format!(
        "audit log verified: {} entries, hash chain intact\n\
         checkpoint verified: entry {} (head {}), signed by {}, timestamped {}\n",
        r.log.entries,
        cp.seq,
        cp.head_hash,
        r.signer,
        r.timestamped.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    out.push_str(&legacy_line(r.log.legacy));
    Ok(out)
}

/// The line on legacy entries, or nothing.
pub fn legacy_line(legacy: u64) -> String {
    if legacy == 0 {
        String::new()
    } else {
        format!("{legacy} legacy unkeyed entries, covered only by the hash chain\n")
    }
}

/// Reads a checkpoint file, refusing one larger than any checkpoint is before reading it all.
pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    crate::input::read_bounded(path, "checkpoint file", ca_core::checkpoint::MAX_CHECKPOINT_BYTES)
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes one checkpoint into `dir` as `audit-checkpoint-<seq>-<time>.cms` (DER).
fn write_one(ca: &Ca, dir: &Path) -> anyhow::Result<PathBuf> {
    let (der, cp) = make(ca, "system", &format!("periodic, into {}", dir.display()))?;
    let name = format!("audit-checkpoint-{:010}-{}.cms", cp.seq, cp.time.format("%Y%m%dT%H%M%SZ"));
    let path = dir.join(name);
    write_new(&path, &der).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// `pki serve`: a checkpoint into `dir` now, then every `interval` (never again when zero), on
/// a thread of its own. A failure is logged and tried again at the next interval.
pub fn start_periodic(ca: Arc<Ca>, dir: PathBuf, interval: Duration) -> anyhow::Result<()> {
    std::thread::Builder::new().name("audit-checkpoints".into()).spawn(move || loop {
        match write_one(&ca, &dir) {
            Ok(path) => tracing::info!(file = %path.display(), "audit checkpoint written"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "audit checkpoint failed"),
        }
        if interval.is_zero() {
            return;
        }
        std::thread::sleep(interval);
    })?;
    Ok(())
}
