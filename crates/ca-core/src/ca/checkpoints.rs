//! Signed checkpoints of the audit log ([`crate::checkpoint`]): making one, and checking one
//! against the log.

use super::*;
use crate::audit::{AuditReport, CheckpointHead};
use crate::checkpoint::{self, CaIdentity, Checkpoint, TimestampCheck, Timestamper};

/// What [`Ca::verify_audit_checkpoint`] found.
#[derive(Debug, Clone)]
pub struct CheckpointReport {
    /// What the checkpoint states.
    pub checkpoint: Checkpoint,
    /// The subject of the certificate that signed it.
    pub signer: String,
    /// The timestamp's genTime.
    pub timestamped: DateTime<Utc>,
    /// The log, checked against it.
    pub log: AuditReport,
}

/// How far the timestamp's genTime may be from the checkpoint's own time.
const TIMESTAMP_SLACK_MINUTES: i64 = 10;

impl Ca {
    fn identity(&self) -> CaIdentity {
        CaIdentity {
            root_sha256: Fingerprint::of(&self.root.der).to_string(),
            issuing_sha256: Fingerprint::of(&self.issuing.der).to_string(),
            issuing: self.cfg.issuing.subject.common_name.clone(),
        }
    }

    /// Makes a checkpoint of the audit log's head (DER) and what it states.
    ///
    /// 1. the audit signer's certificate is issued when there is none yet (its own audit entry);
    /// 2. an `audit.checkpoint` entry records who asked and why (`why`), so the checkpoint covers
    ///    its own request;
    /// 3. the head is read, stated as JSON, signed by the audit signer in custody;
    /// 4. `stamp` timestamps the signature value; the token goes into the unsigned attributes.
    pub fn audit_checkpoint(
        &self,
        actor: &str,
        why: &str,
        stamp: Timestamper<'_>,
    ) -> Result<(Vec<u8>, Checkpoint), Error> {
        let (chain, key) = self.audit_signer()?;
        self.audit
            .append(AuditDraft::ok(actor, AuditAction::AuditCheckpoint, None, why), self.clock.now())?;
        let head =
            self.db.last_audit()?.ok_or_else(|| cerdb::Error::Inconsistent("empty audit log".into()))?;
        let entry = audit::decode(&head)?;
        let cp = Checkpoint {
            version: 1,
            seq: head.seq,
            head_hash: entry.hash,
            entries: head.seq,
            time: seconds(self.clock.now()),
            ca: self.identity(),
        };
        let der = checkpoint::sign(&cp, &*key, &chain, stamp)?;
        tracing::info!(seq = cp.seq, "audit checkpoint made");
        Ok((der, cp))
    }

    /// Checks a checkpoint (DER or PEM) and the log against it.
    ///
    /// 1. the CMS signature by the certificate it carries ([`checkpoint::open`]);
    /// 2. that certificate is an audit signer this CA's issuing CA (or, after the issuing CA's
    ///    compromise, its root) issued (its signature, its extended key usage), stored here and
    ///    valid at the checkpoint's time; the issuing CA is this CA's, under its root;
    /// 3. the checkpoint names this CA;
    /// 4. `check_timestamp` verifies the token over the signature value; its genTime is within
    ///    10 minutes of the checkpoint's time, and the signer was not revoked by then (nor by the
    ///    checkpoint's own time): a checkpoint signed with a compromised key after its
    ///    revocation does not verify, whatever time it states;
    /// 5. the log: chain, `mac`s, and the checkpoint's head ([`audit::verify_keyed`]).
    pub fn verify_audit_checkpoint(
        &self,
        bytes: &[u8],
        check_timestamp: TimestampCheck<'_>,
    ) -> Result<CheckpointReport, Error> {
        let bad = |r: String| Error::BadCheckpoint(r);
        let opened = checkpoint::open(bytes)?;
        let cp = &opened.checkpoint;
        let (_, signer) = X509Certificate::from_der(&opened.signer_der)
            .map_err(|e| bad(format!("the signer certificate does not parse: {e}")))?;
        let (_, issuing) =
            X509Certificate::from_der(&self.issuing.der).map_err(|e| Error::Certificate(e.to_string()))?;
        let (_, root) =
            X509Certificate::from_der(&self.root.der).map_err(|e| Error::Certificate(e.to_string()))?;
        let subject = signer.subject().to_string();
        // Issued by the issuing CA, or by the root (the audit signer after an issuing CA
        // compromise).
        let by = |ca: &X509Certificate<'_>| {
            signer.issuer() == ca.subject() && signer.verify_signature(Some(ca.public_key())).is_ok()
        };
        if !by(&issuing) && !by(&root) {
            return Err(bad(format!("its signer {subject} was not issued by this CA's issuing CA or root")));
        }
        if issuing.verify_signature(Some(root.public_key())).is_err() {
            return Err(Error::Certificate("the issuing CA is not signed by the root".into()));
        }
        let eku_ok = signer.extended_key_usage().ok().flatten().is_some_and(|e| {
            e.value.other.len() == 1
                && e.value
                    .other
                    .iter()
                    .all(|o| o.iter().is_some_and(|arcs| arcs.eq(oids::KP_AUDIT_CHECKPOINT.iter().copied())))
        });
        if !eku_ok {
            return Err(bad(format!("its signer {subject} is not an audit signer")));
        }
        let serial = Serial::from_bytes(signer.raw_serial()).map_err(|e| bad(e.to_string()))?;
        let stored = self
            .db
            .get_meta(&serial)?
            .ok_or_else(|| bad(format!("its signer {serial} is not stored here")))?;
        if stored.kind != CertKind::AuditSigner {
            return Err(bad(format!("its signer {serial} is a {} certificate", stored.kind)));
        }
        if cp.time < stored.not_before || cp.time > stored.not_after {
            return Err(bad(format!("its signer {serial} was not valid at {}", cp.time.to_rfc3339())));
        }
        if cp.ca != self.identity() {
            return Err(bad(format!("it belongs to another CA (issuing CA {:?})", cp.ca.issuing)));
        }
        let timestamped = check_timestamp(&opened.token, &opened.signature)
            .map_err(|e| bad(format!("its timestamp does not verify: {e}")))?;
        if (timestamped - cp.time).num_minutes().abs() > TIMESTAMP_SLACK_MINUTES {
            return Err(bad(format!(
                "its timestamp ({}) is more than {TIMESTAMP_SLACK_MINUTES} minutes from its time ({})",
                timestamped.to_rfc3339(),
                cp.time.to_rfc3339()
            )));
        }
        // Revoked before it was signed: the time it states is the signer's word, which a
        // compromised key can set as it likes; the timestamp proves when the signature existed.
        // The later of the two counts.
        let signed_by = cp.time.max(timestamped);
        if let Some(r) = stored.revocation.as_ref().filter(|r| r.at <= signed_by) {
            return Err(bad(format!(
                "its signer {serial} was revoked at {} ({}), not after the checkpoint (its time {}, timestamped {})",
                r.at.to_rfc3339(),
                r.reason,
                cp.time.to_rfc3339(),
                timestamped.to_rfc3339()
            )));
        }
        let head = CheckpointHead { seq: cp.seq, head_hash: cp.head_hash.clone() };
        let log = self.audit_report(Some(&head))?;
        Ok(CheckpointReport { checkpoint: opened.checkpoint.clone(), signer: subject, timestamped, log })
    }
}
