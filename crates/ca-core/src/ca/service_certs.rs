//! The CA's own service certificates and keys: the OCSP signer, the TSA, the console's TLS
//! server certificate and the audit log's checkpoint signer (their replacement by a new key is
//! in `rekey.rs`).

use super::*;

/// A service's certificate (DER), the CA that issued it, and its key as handed out.
struct ServiceCert {
    der: Vec<u8>,
    issuer: CaId,
    key: Arc<dyn Signer>,
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
    /// certified again; [`Ca::rekey`] puts a new key in use.
    pub fn tls_server_certificate(&self) -> Result<ChainAndKey, Error> {
        let names = format!("{:?} {:?}", self.cfg.tls.dns_names, self.cfg.tls.ip_addresses);
        let ServiceCert { der, key, .. } =
            self.service_certificate(OwnCert::Tls, format!("tls-server {names}"))?;
        Ok((vec![der], key))
    }

    /// The audit log's checkpoint signer: its certificate chain (leaf, then the issuing CA when
    /// that issued it) and its key in the key store. Issued by the issuing CA on first use — the
    /// first checkpoint, also of a data directory of an earlier release — and reissued when fewer
    /// than 30 days of validity remain. Once the issuing CA is compromised its key is certified
    /// by the root instead. Refused once it is compromised ([`Ca::compromise`]); [`Ca::rekey`]
    /// puts a new key in use.
    pub fn audit_signer(&self) -> Result<ChainAndKey, Error> {
        let details = format!("audit-signer {}", self.cfg.audit_signer.subject.common_name);
        let ServiceCert { der, issuer, key } = self.service_certificate(OwnCert::Audit, details)?;
        let mut chain = vec![der];
        if issuer == CaId::Issuing {
            chain.push(self.issuing.der.clone());
        }
        Ok((chain, key))
    }

    /// The certificate (DER), its issuer and the guarded key of the TLS or audit service: the
    /// stored one while it is valid for 30 more days, not revoked, of the key in custody and not
    /// issued by a compromised issuing CA; otherwise a new one for the same key (the first one's
    /// handle, or the one [`Ca::rekey`] recorded) from the issuer [`Ca::replaceable`] names,
    /// stored with its audit entry, its serial under the own certificate's setting.
    fn service_certificate(&self, which: OwnCert, details: String) -> Result<ServiceCert, Error> {
        self.refuse_if_compromised(which)?;
        let s = self.replaceable(which)?;
        let _guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Another process on the same storage (a PostgreSQL node) may put its own renewal in use
        // meanwhile: then that one is taken, read again.
        for _ in 0..3 {
            let in_use = self.own_serial_in_use(which)?;
            let current = match &in_use {
                Some(serial) => self.db.get(serial)?,
                None => None,
            };
            let key_handle = match &current {
                Some(rec) => key_handle_of(&self.db, which, &rec.serial)?,
                None => handle(first_handle(which)),
            };
            let key = get_or_generate(&*self.hsm, &key_handle, s.key_type, s.purpose)?;
            let now = seconds(self.clock.now());
            if let Some(rec) = current {
                let fresh = rec.revocation.is_none() && rec.not_after - now > Duration::days(30);
                let issuer_usable = !(rec.issuer == CaId::Issuing && self.is_compromised(OwnCert::Issuing));
                if fresh && issuer_usable && rec.der_matches_key(key.public_key_raw()) {
                    let key = self.guarded_service_key(which, rec.issuer, key);
                    return Ok(ServiceCert { der: rec.der, issuer: rec.issuer, key });
                }
            }
            let hsm_key = HsmKey::new(key.clone());
            let rec = self.issue_service_cert(
                &s,
                new_serial(&self.rng)?,
                &hsm_key,
                now,
                "system",
                details.clone(),
            )?;
            // A re-keyed key keeps its handle on the renewed certificate; recorded before the
            // serial, as [`Ca::rekey`] does.
            if key_handle.as_str() != first_handle(which) {
                self.db.meta_put(&key_meta(which, &rec.serial), key_handle.as_str())?;
            }
            // Only over the certificate read: another process's renewal put in use meanwhile wins.
            let new = rec.serial.to_string();
            let put = match &in_use {
                Some(old) => self.db.meta_replace(which.serial_key(), &old.to_string(), &new)?,
                None => self.db.meta_insert(which.serial_key(), &new)?,
            };
            if put {
                let key = self.guarded_service_key(which, rec.issuer, key);
                return Ok(ServiceCert { der: rec.der, issuer: rec.issuer, key });
            }
            match self.own_serial_in_use(which)? {
                Some(theirs) => self.revoke_unused(which, &rec, "system", &theirs)?,
                None => {
                    return Err(cerdb::Error::Inconsistent(format!("{} missing", which.serial_key())).into())
                }
            }
        }
        // Replaced by others three times over while this one renewed.
        match self.own_serial_in_use(which)? {
            Some(serial) => Err(Error::ReplacedMeanwhile { which, serial }),
            None => Err(cerdb::Error::Inconsistent(format!("{} missing", which.serial_key())).into()),
        }
    }

    /// A service key as handed out: it refuses to sign from the moment its certificate (or the
    /// issuing CA that issued it) is compromised ([`Ca::compromise`]).
    fn guarded_service_key(&self, which: OwnCert, issuer: CaId, key: Arc<dyn Signer>) -> Arc<dyn Signer> {
        const TLS: &[OwnCert] = &[OwnCert::Tls];
        const AUDIT: &[OwnCert] = &[OwnCert::Audit];
        const AUDIT_BY_ISSUING: &[OwnCert] = &[OwnCert::Audit, OwnCert::Issuing];
        let watched = match (which, issuer) {
            (OwnCert::Audit, CaId::Issuing) => AUDIT_BY_ISSUING,
            (OwnCert::Audit, CaId::Root) => AUDIT,
            _ => TLS,
        };
        self.guarded(key, watched)
    }
}
