//! CRLs: the current CRL of each CA, regenerated on revocation and before nextUpdate.

use super::*;

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
    /// The current CRL of a CA, regenerated first if it is due.
    pub fn crl(&self, ca: CaId) -> Result<CrlRecord, Error> {
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
