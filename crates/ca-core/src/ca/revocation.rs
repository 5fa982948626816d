//! Revocation: status, compromised keys and audit entry in one durable write, then a new CRL.

use super::*;

/// The reasons the S/MIME Baseline Requirements (§4.9.1.1, §7.2.2) allow for a subscriber
/// certificate: keyCompromise, affiliationChanged, superseded, cessationOfOperation,
/// privilegeWithdrawn, and unspecified (the reasonCode then omitted). cACompromise is for CA
/// certificates (`pki ca compromise`); certificateHold, removeFromCRL and aACompromise are not
/// represented at all.
pub(super) fn subscriber_reason_allowed(reason: RevocationReason) -> bool {
    match reason {
        RevocationReason::Unspecified
        | RevocationReason::KeyCompromise
        | RevocationReason::AffiliationChanged
        | RevocationReason::Superseded
        | RevocationReason::CessationOfOperation
        | RevocationReason::PrivilegeWithdrawn => true,
        RevocationReason::CaCompromise => false,
    }
}

impl Ca {
    /// Revokes a certificate: status, change-feed entry and audit entry durably, then a new CRL
    /// (or, once [`Ca::defer_crls`] was called, the CRL marked due: the cost of a revocation then
    /// does not grow with the number of revoked certificates).
    ///
    /// For keyCompromise, also:
    /// - the key is recorded as compromised in the same transaction: no certificate is issued for
    ///   it again ([`Ca::issue_many`]);
    /// - a certificate revoked before for another reason has its reason changed to keyCompromise
    ///   (its revocation time kept), so that CRL and OCSP say so;
    /// - the other certificates of the same address with the same key, not expired, are revoked
    ///   for keyCompromise too (each with its audit entry) and returned in
    ///   [`Revoked::same_key`]. Certificates of other addresses are not searched: no index maps a
    ///   key to its certificates.
    pub fn revoke(&self, serial: &Serial, reason: RevocationReason, actor: &str) -> Result<Revoked, Error> {
        let rec = self.db.get_meta(serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))?;
        if rec.kind == CertKind::RootCa {
            return Err(Error::RootNotRevocable);
        }
        if let Some(which) = OwnCert::of_kind(rec.kind) {
            return Err(Error::OwnCertNotRevocable { serial: serial.clone(), which });
        }
        if !subscriber_reason_allowed(reason) {
            return Err(Error::ReasonNotAllowed { reason });
        }
        let key = match reason {
            RevocationReason::KeyCompromise => Some(key_digest_of(&self.show(serial)?.der)?),
            _ => None,
        };
        // Deferred publication: the CRL is marked due (durably, before the revocation is
        // stored) and the revocation held open against the publisher until it is stored.
        let publishing = self.crl_publication.revoking(&self.db, rec.issuer)?;
        let record = self.revoke_one(&rec, reason, key, None, actor)?;
        let mut same_key = Vec::new();
        if let (Some(key), Some(email)) = (key, &rec.email) {
            let now = self.clock.now();
            for other in self.db.by_email(email, None)? {
                let done =
                    other.revocation.as_ref().is_some_and(|r| r.reason == RevocationReason::KeyCompromise);
                if other.serial == *serial || done || other.not_after < now {
                    continue;
                }
                if key_digest_of(&self.show(&other.serial)?.der)? == key {
                    same_key.push(self.revoke_one(&other, reason, Some(key), Some(serial), actor)?);
                }
            }
        }
        // A compromised issuing CA signs no CRL any more; the revocation is stored and OCSP says so.
        // Deferred: the next publication or the next read of the CRL signs it.
        if publishing.is_none() && !(rec.issuer == CaId::Issuing && self.is_compromised(OwnCert::Issuing)) {
            self.regenerate_crl(rec.issuer, actor)?;
        }
        drop(publishing);
        Ok(Revoked { record, reason_before: rec.revocation.map(|r| r.reason), same_key })
    }

    /// One revocation of [`Ca::revoke`]: the record and its audit entry in one transaction (with
    /// the compromised key, if any); caches learn of it from the change feed. `same_key_as` names the certificate
    /// whose revocation for keyCompromise this one follows.
    pub(super) fn revoke_one(
        &self,
        rec: &CertRecord,
        reason: RevocationReason,
        key: Option<KeyDigest>,
        same_key_as: Option<&Serial>,
        actor: &str,
    ) -> Result<CertRecord, Error> {
        let now = seconds(self.clock.now());
        let revocation = Revocation { at: now, reason };
        let mut details = format!("{reason} {}", rec.kind);
        if let Some(earlier) = &rec.revocation {
            details.push_str(&format!(" (revoked before as {})", earlier.reason));
        }
        if let Some(s) = same_key_as {
            details.push_str(&format!(" (the key of {s})"));
        }
        let draft = AuditDraft::ok(actor, AuditAction::Revoke, Some(&rec.serial), details);
        let updated = self.audit.commit(vec![draft], now, |chain| {
            Ok(self.db.revoke(&rec.serial, revocation.clone(), key.as_ref(), chain)?)
        })?;
        self.counters.revoked(rec.kind);
        if let Some(key) = key {
            let mut keys = self.compromised.write().unwrap_or_else(|p| p.into_inner());
            keys.entry(key).or_insert_with(|| rec.serial.clone());
        }
        Ok(updated)
    }
}
