//! The CA's own service certificates and keys: the OCSP signer, the TSA, the console's TLS
//! server certificate and the audit log's checkpoint signer.

use super::*;

/// One service certificate issued on first use and again when it nears its end: what differs
/// between them.
struct ServiceCert<'a> {
    /// Which own certificate it is (for compromise).
    which: OwnCert,
    /// Its key's handle.
    handle: &'static str,
    /// Its key's type.
    key_type: KeyType,
    /// Its key's purpose.
    purpose: KeyPurpose,
    /// Its validity, days (cut at its issuer's end).
    validity_days: u32,
    /// Who issues it.
    issuer: &'a LoadedCa,
    /// Its OCSP URL, if its issuer's responder answers for it.
    ocsp_url: Option<String>,
    /// Its profile.
    profile: &'a dyn Profile,
    /// The details of its issuance's audit entry.
    details: String,
    /// Held while it is checked and issued.
    lock: &'a Mutex<()>,
}

impl Ca {
    /// The TSA key in use. It refuses to sign once the TSA certificate is compromised
    /// ([`Ca::compromise`]).
    pub fn tsa_signer(&self) -> Result<Arc<dyn Signer>, Error> {
        Ok(self.tsa_signer_certified()?.1)
    }

    /// The TSA certificate in use (DER) with its key, as one consistent pair; replaced by
    /// [`Ca::rekey`].
    pub fn tsa_signer_certified(&self) -> Result<(Vec<u8>, Arc<dyn Signer>), Error> {
        const WATCHED: &[OwnCert] = &[OwnCert::Tsa];
        let current = self.signer_in_use(OwnCert::Tsa);
        Ok((current.der.clone(), self.guarded(self.hsm.signer(&current.handle)?, WATCHED)))
    }

    /// The console's TLS server certificate chain (leaf first, root excluded) and its key in the
    /// key store. Issued by the root on first use — at init, or for a data directory created
    /// before TLS existed — and reissued when fewer than 30 days of validity remain.
    ///
    /// Refused once the TLS certificate is compromised ([`Ca::compromise`]): its key is not
    /// certified again.
    pub fn tls_server_certificate(&self) -> Result<ChainAndKey, Error> {
        let names = format!("{:?} {:?}", self.cfg.tls.dns_names, self.cfg.tls.ip_addresses);
        let profile = TlsServerProfile {
            dns_names: self.cfg.tls.dns_names.clone(),
            ip_addresses: self.cfg.tls.ip_addresses.clone(),
        };
        let (der, key) = self.service_certificate(&ServiceCert {
            which: OwnCert::Tls,
            handle: H_TLS,
            key_type: self.cfg.tls.key_type,
            purpose: KeyPurpose::TlsServer,
            validity_days: self.cfg.tls.validity_days,
            issuer: &self.root,
            ocsp_url: None,
            profile: &profile,
            details: format!("tls-server {names}"),
            lock: &self.tls_lock,
        })?;
        Ok((vec![der], key))
    }

    /// The audit log's checkpoint signer: its certificate chain (leaf, then the issuing CA) and
    /// its key in the key store. Issued by the issuing CA on first use — the first checkpoint,
    /// also of a data directory of an earlier release — and reissued when fewer than 30 days of
    /// validity remain. Refused once it or the issuing CA is compromised ([`Ca::compromise`]).
    pub fn audit_signer(&self) -> Result<ChainAndKey, Error> {
        self.refuse_if_compromised(OwnCert::Issuing)?;
        let s = &self.cfg.audit_signer;
        let (der, key) = self.service_certificate(&ServiceCert {
            which: OwnCert::Audit,
            handle: H_AUDIT,
            key_type: s.key_type,
            purpose: KeyPurpose::AuditSigning,
            validity_days: s.validity_days,
            issuer: &self.issuing,
            ocsp_url: Some(self.cfg.ocsp_url()),
            profile: &AuditSignerProfile { subject: s.subject.clone() },
            details: format!("audit-signer {}", s.subject.common_name),
            lock: &self.audit_signer_lock,
        })?;
        Ok((vec![der, self.issuing.der.clone()], key))
    }

    /// The certificate (DER) and guarded key of a service: the stored one while it is valid for
    /// 30 more days, not revoked and of the key in custody; otherwise a new one, stored with its
    /// audit entry, its serial under the own certificate's setting.
    fn service_certificate(&self, s: &ServiceCert<'_>) -> Result<(Vec<u8>, Arc<dyn Signer>), Error> {
        self.refuse_if_compromised(s.which)?;
        let _guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = seconds(self.clock.now());
        let current = match self.db.meta_get(s.which.serial_key())? {
            Some(serial) => self.db.get(&serial.parse()?)?,
            None => None,
        };
        let key = get_or_generate(&*self.hsm, &handle(s.handle), s.key_type, s.purpose)?;
        if let Some(rec) = current {
            let fresh = rec.revocation.is_none() && rec.not_after - now > Duration::days(30);
            if fresh && rec.der_matches_key(key.public_key_raw()) {
                return Ok((rec.der, self.guarded_service_key(s.which, key)));
            }
        }
        let hsm_key = HsmKey::new(key.clone());
        let ctx = ProfileContext {
            serial: new_serial(&self.rng)?,
            not_before: now,
            not_after: (now + Duration::days(i64::from(s.validity_days))).min(s.issuer.not_after),
            key: SubjectKeyKind::from_key_type(key.key_type()),
            ocsp_url: s.ocsp_url.clone(),
            ca_issuers_url: Some(self.cfg.ca_cert_url(s.issuer.id)),
            crl_url: Some(self.cfg.crl_url(s.issuer.id)),
        };
        let der = make_cert(s.profile, &ctx, &hsm_key, Signing::By(s.issuer))?;
        let rec = record_of(
            der,
            ctx.serial.clone(),
            s.profile.kind(),
            None,
            s.issuer.id,
            key.key_type().to_string(),
            None,
            now,
        )?;
        let draft = AuditDraft::ok("system", AuditAction::Issue, Some(&rec.serial), s.details.clone());
        let stored = self
            .audit
            .commit(vec![draft], now, |recs| Ok(self.db.store_issued(std::slice::from_ref(&rec), recs)?));
        self.retire_if_refused(std::slice::from_ref(&rec), stored)?;
        self.db.meta_put(s.which.serial_key(), &rec.serial.to_string())?;
        Ok((rec.der, self.guarded_service_key(s.which, key)))
    }

    /// A service key as handed out: it refuses to sign from the moment its certificate (or, for
    /// the audit signer, the issuing CA) is compromised ([`Ca::compromise`]).
    fn guarded_service_key(&self, which: OwnCert, key: Arc<dyn Signer>) -> Arc<dyn Signer> {
        const TLS: &[OwnCert] = &[OwnCert::Tls];
        const AUDIT: &[OwnCert] = &[OwnCert::Audit, OwnCert::Issuing];
        let watched = if which == OwnCert::Audit { AUDIT } else { TLS };
        self.guarded(key, watched)
    }
}
