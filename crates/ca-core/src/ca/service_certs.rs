//! The CA's own service certificates and keys: the OCSP signer, the TSA and the console's TLS
//! server certificate.

use super::*;

impl Ca {
    /// The TSA key. It refuses to sign once the TSA certificate is compromised
    /// ([`Ca::compromise`]).
    pub fn tsa_signer(&self) -> Result<Arc<dyn Signer>, Error> {
        const WATCHED: &[OwnCert] = &[OwnCert::Tsa];
        Ok(GuardedSigner::wrap(self.hsm.signer(&handle(H_TSA))?, self.compromised_certs.clone(), WATCHED))
    }

    /// The console's TLS server certificate chain (leaf first, root excluded) and its key in the
    /// key store. Issued by the root on first use — at init, or for a data directory created
    /// before TLS existed — and reissued when fewer than 30 days of validity remain.
    ///
    /// Refused once the TLS certificate is compromised ([`Ca::compromise`]): its key is not
    /// certified again.
    pub fn tls_server_certificate(&self) -> Result<ChainAndKey, Error> {
        self.refuse_if_compromised(OwnCert::Tls)?;
        let _guard = self.tls_lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = seconds(self.clock.now());
        let current = match self.db.meta_get("ca.tls.serial")? {
            Some(s) => self.db.get(&s.parse()?)?,
            None => None,
        };
        let key = get_or_generate(&*self.hsm, &handle(H_TLS), self.cfg.tls.key_type, KeyPurpose::TlsServer)?;
        if let Some(rec) = current {
            let fresh = rec.revocation.is_none() && rec.not_after - now > Duration::days(30);
            if fresh && rec.der_matches_key(key.public_key_raw()) {
                return Ok((vec![rec.der], self.guarded_tls_key(key)));
            }
        }
        let hsm_key = HsmKey::new(key.clone());
        let ctx = ProfileContext {
            serial: new_serial(&self.rng)?,
            not_before: now,
            not_after: (now + Duration::days(i64::from(self.cfg.tls.validity_days))).min(self.root.not_after),
            key: SubjectKeyKind::from_key_type(key.key_type()),
            ocsp_url: None,
            ca_issuers_url: Some(self.cfg.ca_cert_url(CaId::Root)),
            crl_url: Some(self.cfg.crl_url(CaId::Root)),
        };
        let profile = TlsServerProfile {
            dns_names: self.cfg.tls.dns_names.clone(),
            ip_addresses: self.cfg.tls.ip_addresses.clone(),
        };
        let der = make_cert(&profile, &ctx, &hsm_key, Signing::By(&self.root))?;
        let rec = record_of(
            der,
            ctx.serial.clone(),
            CertKind::TlsServer,
            None,
            CaId::Root,
            key.key_type().to_string(),
            None,
            now,
        )?;
        let names = format!("{:?} {:?}", self.cfg.tls.dns_names, self.cfg.tls.ip_addresses);
        let draft =
            AuditDraft::ok("system", AuditAction::Issue, Some(&rec.serial), format!("tls-server {names}"));
        let stored = self
            .audit
            .commit(vec![draft], now, |recs| Ok(self.db.store_issued(std::slice::from_ref(&rec), recs)?));
        self.retire_if_refused(std::slice::from_ref(&rec), stored)?;
        self.db.meta_put("ca.tls.serial", &rec.serial.to_string())?;
        Ok((vec![rec.der], self.guarded_tls_key(key)))
    }

    /// The TLS key as handed to the server: it refuses to sign (so handshakes fail) from the
    /// moment the TLS certificate is compromised ([`Ca::compromise`]).
    fn guarded_tls_key(&self, key: Arc<dyn Signer>) -> Arc<dyn Signer> {
        const WATCHED: &[OwnCert] = &[OwnCert::Tls];
        GuardedSigner::wrap(key, self.compromised_certs.clone(), WATCHED)
    }
}
