//! CRLs: the current CRL of each CA, regenerated on revocation (or, deferred, at the next
//! publication or read) and before nextUpdate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLockReadGuard;

use super::*;

/// The storage setting that marks a CA's CRL as due: `"1"` from before a deferred revocation is
/// stored until a CRL that lists it is stored, so that a CA opened after a crash signs one first.
fn pending_key(ca: CaId) -> String {
    format!("crl.{}.pending", ca.name())
}

fn index(ca: CaId) -> usize {
    match ca {
        CaId::Root => 0,
        CaId::Issuing => 1,
    }
}

/// When revocations reach the CRLs.
///
/// Immediate (the default, one-shot commands): each revocation signs a new CRL, whose cost grows
/// with the number of revoked certificates. Deferred ([`Ca::defer_crls`], `pki serve`): a
/// revocation marks its CA's CRL due, durably, and the CRL is signed by the next
/// [`Ca::publish_crls`] or the next [`Ca::crl`], whichever comes first — so every acknowledged
/// revocation is on every CRL read after it, and many revocations share one signature.
pub(super) struct Publication {
    deferred: AtomicBool,
    /// Per CA (root, issuing): a revocation not yet on the stored CRL, or may not be.
    pending: [AtomicBool; 2],
    /// Held shared by each deferred revocation from its mark to its storage, and exclusively by a
    /// publication when it takes or clears the mark: a mark is never cleared under a revocation
    /// in flight.
    gate: RwLock<()>,
}

impl Publication {
    /// The state left in storage: a CRL marked due stays due.
    pub(super) fn load(db: &CertDb) -> Result<Self, Error> {
        let due = |ca| -> Result<bool, Error> { Ok(db.meta_get(&pending_key(ca))?.as_deref() == Some("1")) };
        Ok(Publication {
            deferred: AtomicBool::new(false),
            pending: [AtomicBool::new(due(CaId::Root)?), AtomicBool::new(due(CaId::Issuing)?)],
            gate: RwLock::new(()),
        })
    }

    pub(super) fn is_deferred(&self) -> bool {
        self.deferred.load(Ordering::SeqCst)
    }

    /// Before a deferred revocation by `ca` is stored: marks its CRL due (the durable mark written
    /// only when it is not set already) and returns the guard to hold until the revocation is
    /// stored. `None` when publication is immediate.
    pub(super) fn revoking(&self, db: &CertDb, ca: CaId) -> Result<Option<RwLockReadGuard<'_, ()>>, Error> {
        if !self.is_deferred() {
            return Ok(None);
        }
        let guard = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let pending = &self.pending[index(ca)];
        if !pending.load(Ordering::SeqCst) {
            db.meta_put(&pending_key(ca), "1")?;
            pending.store(true, Ordering::SeqCst);
        }
        Ok(Some(guard))
    }

    fn is_pending(&self, ca: CaId) -> bool {
        self.pending[index(ca)].load(Ordering::SeqCst)
    }

    /// Takes the mark before the revoked certificates are read: what a revocation stores after
    /// this sets it again.
    fn take(&self, ca: CaId) -> bool {
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.pending[index(ca)].swap(false, Ordering::SeqCst)
    }

    /// After a CRL is stored: clears the durable mark unless a revocation marked it again.
    fn settle(&self, db: &CertDb, ca: CaId, was_marked: bool) -> Result<(), Error> {
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        if was_marked && !self.pending[index(ca)].load(Ordering::SeqCst) {
            db.meta_put(&pending_key(ca), "0")?;
        }
        Ok(())
    }

    /// A publication failed: the CRL stays due.
    fn restore(&self, ca: CaId, was_marked: bool) {
        if was_marked {
            self.pending[index(ca)].store(true, Ordering::SeqCst);
        }
    }
}

pub(super) fn rcgen_reason(r: RevocationReason) -> Option<rcgen::RevocationReason> {
    use rcgen::RevocationReason as R;
    match r {
        // RFC 5280 §5.3.1: the reasonCode extension is omitted rather than "unspecified".
        RevocationReason::Unspecified => None,
        RevocationReason::KeyCompromise => Some(R::KeyCompromise),
        RevocationReason::CaCompromise => Some(R::CaCompromise),
        RevocationReason::AffiliationChanged => Some(R::AffiliationChanged),
        RevocationReason::Superseded => Some(R::Superseded),
        RevocationReason::CessationOfOperation => Some(R::CessationOfOperation),
        RevocationReason::PrivilegeWithdrawn => Some(R::PrivilegeWithdrawn),
    }
}

impl Ca {
    /// From now on, revocations mark the CRL due instead of signing one each
    /// ([`Publication`]); [`Ca::publish_crls`] and [`Ca::crl`] sign it. For a long-running
    /// server, which calls [`Ca::publish_crls`] periodically.
    pub fn defer_crls(&self) {
        self.crl_publication.deferred.store(true, Ordering::SeqCst);
    }

    /// Signs the CRL of each CA that has revocations not on it yet (none when publication is
    /// immediate, or after a crash before a deferred publication: those are signed here);
    /// the number of CRLs signed.
    pub fn publish_crls(&self) -> Result<usize, Error> {
        let mut signed = 0;
        for ca in [CaId::Root, CaId::Issuing] {
            if self.crl_publication.is_pending(ca) && self.crl_signable(ca) {
                self.regenerate_crl(ca, "system")?;
                signed += 1;
            }
        }
        Ok(signed)
    }

    /// A compromised issuing CA signs no CRL any more.
    fn crl_signable(&self, ca: CaId) -> bool {
        !(ca == CaId::Issuing && self.is_compromised(OwnCert::Issuing))
    }

    /// The current CRL of a CA, regenerated first if it is due (revocations not on it yet, or
    /// nextUpdate near).
    pub fn crl(&self, ca: CaId) -> Result<CrlRecord, Error> {
        if self.crl_publication.is_pending(ca) && self.crl_signable(ca) {
            return self.regenerate_crl(ca, "system");
        }
        if let Some(c) = self.db.crl(ca)? {
            let margin = Duration::hours(i64::from(self.cfg.crl.refresh_before_hours));
            if self.clock.now() < c.next_update - margin {
                return Ok(c);
            }
        }
        self.regenerate_crl(ca, "system")
    }

    /// Regenerates every CRL that is due; for a periodic task. A compromised issuing CA's CRL
    /// is not signed any more.
    pub fn refresh_crls(&self) -> Result<(), Error> {
        self.crl(CaId::Root)?;
        if !self.is_compromised(OwnCert::Issuing) {
            self.crl(CaId::Issuing)?;
        }
        Ok(())
    }

    /// Signs a new full CRL for `ca` and stores it.
    pub fn regenerate_crl(&self, ca: CaId, actor: &str) -> Result<CrlRecord, Error> {
        if ca == CaId::Issuing {
            self.refuse_if_compromised(OwnCert::Issuing)?;
        }
        let _guard = self.crl_lock.lock().unwrap_or_else(|p| p.into_inner());
        let marked = self.crl_publication.take(ca);
        match self.sign_crl(ca, actor) {
            Ok(record) => {
                self.crl_publication.settle(&self.db, ca, marked)?;
                Ok(record)
            }
            Err(e) => {
                self.crl_publication.restore(ca, marked);
                Err(e)
            }
        }
    }

    /// Signs and stores a full CRL of `ca` (under `crl_lock`).
    fn sign_crl(&self, ca: CaId, actor: &str) -> Result<CrlRecord, Error> {
        let loaded = match ca {
            CaId::Root => &self.root,
            CaId::Issuing => &self.issuing,
        };
        let now = seconds(self.clock.now());
        let next = now + Duration::hours(i64::from(self.cfg.crl.validity_hours));
        let number = self.db.crl(ca)?.map(|c| c.number + 1).unwrap_or(1);
        let to_time = |t: DateTime<Utc>| {
            ::time::OffsetDateTime::from_unix_timestamp(t.timestamp())
                .map_err(|e| Error::Certificate(e.to_string()))
        };
        let mut revoked = Vec::new();
        for r in self.db.revoked_by(ca)? {
            let Some(rev) = &r.revocation else { continue };
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(r.serial.as_bytes()),
                revocation_time: to_time(rev.at)?,
                reason_code: rcgen_reason(rev.reason),
                invalidity_date: None,
            });
        }
        let count = revoked.len();
        let ski = match &loaded.params.key_identifier_method {
            KeyIdMethod::PreSpecified(v) => v.clone(),
            _ => Vec::new(),
        };
        let number_bytes: Vec<u8> = number.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        let params = CertificateRevocationListParams {
            this_update: to_time(now)?,
            next_update: to_time(next)?,
            crl_number: SerialNumber::from_slice(&number_bytes),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::PreSpecified(ski),
        };
        let issuer = Issuer::from_params(&loaded.params, LintingKey::new(&loaded.key, None));
        let crl = params.signed_by(&issuer).map_err(|e| Error::Certificate(format!("CRL: {e}")))?;
        let record = CrlRecord { ca, number, this_update: now, next_update: next, der: crl.der().to_vec() };
        let draft = AuditDraft::ok(
            actor,
            AuditAction::Crl,
            None,
            format!("{} CRL number {number}, {count} revoked", loaded.id),
        );
        self.audit.commit(vec![draft], now, |chain| Ok(self.db.put_crl(&record, chain)?))?;
        Ok(record)
    }
}
