//! The issuing CAs withdrawn from use in this process: the S/MIME issuing CA once `pki ca
//! compromise --ca issuing` revoked it (cACompromise), here or on another node. The CA sets it when
//! it reads or makes a compromise; the directory, LDAP and sealed mail read it on every answer and
//! then count no certificate that CA issued as valid, so no client is handed a certificate whose
//! chain relying parties refuse. Where a certificate is shown by itself (the directory's by-serial
//! and by-fingerprint answers, the console, `pki show`), it is shown revoked for cACompromise from
//! the time its issuer was revoked ([`WithdrawnIssuers::revocation_of`]). Shared by every clone of
//! one [`crate::CertDb`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use chrono::{DateTime, Utc};

use crate::{CaId, CertRecord, CertStatus, Revocation, RevocationReason};

/// Which issuers are withdrawn, and since when (the root never is: it cannot be compromised
/// through the CA).
#[derive(Debug, Default)]
pub struct WithdrawnIssuers {
    /// Read on every lookup; `issuing_at` only once it is set.
    issuing: AtomicBool,
    issuing_at: RwLock<Option<DateTime<Utc>>>,
}

impl WithdrawnIssuers {
    /// Records that `ca` is withdrawn since `revoked_at` (its own revocation time), or with
    /// `None` that it is not.
    pub fn set(&self, ca: CaId, revoked_at: Option<DateTime<Utc>>) {
        match ca {
            CaId::Issuing => {
                *self.issuing_at.write().unwrap_or_else(|p| p.into_inner()) = revoked_at;
                self.issuing.store(revoked_at.is_some(), Ordering::Release);
            }
            CaId::Root => {}
        }
    }

    /// Whether certificates `ca` issued are to be treated as not valid.
    pub fn is_withdrawn(&self, ca: CaId) -> bool {
        match ca {
            CaId::Issuing => self.issuing.load(Ordering::Acquire),
            CaId::Root => false,
        }
    }

    /// The revocation of `ca` as it applies to the certificates it issued: cACompromise (RFC
    /// 5280 §5.3.1), from the time `ca` itself was revoked. `None` while it is not withdrawn.
    pub fn withdrawal(&self, ca: CaId) -> Option<Revocation> {
        if !self.is_withdrawn(ca) {
            return None;
        }
        let at = (*self.issuing_at.read().unwrap_or_else(|p| p.into_inner()))?;
        Some(Revocation { at, reason: RevocationReason::CaCompromise })
    }

    /// The revocation `rec` is to be shown with: its own, or else its issuer's withdrawal.
    pub fn revocation_of(&self, rec: &CertRecord) -> Option<Revocation> {
        rec.revocation.clone().or_else(|| self.inherited_revocation(rec))
    }

    /// Its issuer's withdrawal when `rec` is not revoked by itself: what is shown as "revoked
    /// because its issuer was compromised" beside its own revocation, which it never replaces.
    pub fn inherited_revocation(&self, rec: &CertRecord) -> Option<Revocation> {
        if rec.revocation.is_some() {
            return None;
        }
        self.withdrawal(rec.issuer)
    }

    /// The status `rec` is to be shown with at `now`: revoked once its issuer is withdrawn.
    pub fn status_of(&self, rec: &CertRecord, now: DateTime<Utc>) -> CertStatus {
        if rec.revocation.is_none() && self.is_withdrawn(rec.issuer) {
            CertStatus::Revoked
        } else {
            rec.status_at(now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_withdrawn_issuer_revokes_its_certificates_for_ca_compromise_from_its_own_revocation() {
        let w = WithdrawnIssuers::default();
        let now = Utc::now();
        let at = now - chrono::Duration::hours(1);
        let rec = |issuer, revocation| CertRecord {
            serial: "01AB".parse().expect("serial"),
            fingerprint: crate::Fingerprint([7; 32]),
            kind: crate::CertKind::Encryption,
            email: None,
            subject: "CN=a".into(),
            issuer,
            not_before: now - chrono::Duration::days(1),
            not_after: now + chrono::Duration::days(1),
            issued_at: now - chrono::Duration::days(1),
            key_type: "p256".into(),
            escrow_key: None,
            revocation,
            der: Vec::new(),
        };
        let leaf = rec(CaId::Issuing, None);
        assert_eq!((w.status_of(&leaf, now), w.revocation_of(&leaf)), (CertStatus::Valid, None));
        w.set(CaId::Issuing, Some(at));
        assert_eq!(w.status_of(&leaf, now), CertStatus::Revoked);
        assert_eq!(w.revocation_of(&leaf), Some(Revocation { at, reason: RevocationReason::CaCompromise }));
        // Its own earlier revocation stays what it is shown with.
        let own = Revocation { at: at - chrono::Duration::days(1), reason: RevocationReason::KeyCompromise };
        assert_eq!(w.revocation_of(&rec(CaId::Issuing, Some(own.clone()))), Some(own.clone()));
        assert_eq!(w.inherited_revocation(&rec(CaId::Issuing, Some(own))), None);
        assert_eq!(w.inherited_revocation(&leaf), w.revocation_of(&leaf));
        // The issuing CA's own certificate is the root's: not touched.
        let issuing = rec(CaId::Root, None);
        assert_eq!((w.status_of(&issuing, now), w.revocation_of(&issuing)), (CertStatus::Valid, None));
        w.set(CaId::Issuing, None);
        assert_eq!((w.status_of(&leaf, now), w.revocation_of(&leaf)), (CertStatus::Valid, None));
    }
}
