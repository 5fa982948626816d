//! Nothing of the CA's own expires unnoticed: the OCSP signer is re-issued with a new key before
//! its renewal window, and every CA-side certificate's remaining days are reported
//! ([`Ca::own_certificates`]) for `pki status`, `/healthz` and the console's dashboard.

use super::*;

/// The OCSP signer in use: its certificate and the handle of its key in custody.
#[derive(Debug, Clone)]
pub(super) struct OcspSignerCert {
    pub(super) der: Vec<u8>,
    pub(super) serial: Serial,
    pub(super) handle: KeyHandle,
    pub(super) not_after: DateTime<Utc>,
}

/// Where the handle of an OCSP signer's key is recorded, by its certificate's serial. The first
/// signer's key, created at init, has no record: it is [`H_OCSP`].
fn ocsp_key_meta(serial: &Serial) -> String {
    format!("ca.ocsp.key.{serial}")
}

/// Loads the OCSP signer in use (`ca.ocsp.serial`) and the handle of its key.
pub(super) fn load_ocsp_signer(db: &CertDb) -> Result<OcspSignerCert, Error> {
    let serial: Serial = db
        .meta_get("ca.ocsp.serial")?
        .ok_or_else(|| cerdb::Error::Inconsistent("ca.ocsp.serial missing".into()))?
        .parse()?;
    let rec = db.get(&serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))?;
    let handle = match db.meta_get(&ocsp_key_meta(&serial))? {
        Some(h) => h.parse()?,
        None => handle(H_OCSP),
    };
    Ok(OcspSignerCert { der: rec.der, serial, handle, not_after: rec.not_after })
}

/// How a CA-side certificate stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryState {
    /// Valid, and its warning window has not begun.
    Valid,
    /// Valid, within its warning window.
    Expiring,
    /// Past its notAfter.
    Expired,
    /// Revoked (`pki ca compromise`).
    Revoked,
}

impl ExpiryState {
    /// `valid`, `expiring`, `expired` or `revoked`.
    pub fn name(self) -> &'static str {
        match self {
            ExpiryState::Valid => "valid",
            ExpiryState::Expiring => "expiring",
            ExpiryState::Expired => "expired",
            ExpiryState::Revoked => "revoked",
        }
    }

    /// Whether an operator must act: expiring, expired or revoked.
    pub fn needs_attention(self) -> bool {
        self != ExpiryState::Valid
    }
}

/// One CA-side certificate with the time it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCertStatus {
    /// `root`, `issuing`, `ocsp`, `tsa`, `tls` or `audit`.
    pub name: &'static str,
    /// Its serial.
    pub serial: Serial,
    /// Its notAfter.
    pub not_after: DateTime<Utc>,
    /// Whole days left before its notAfter (negative once past it).
    pub days_left: i64,
    /// How many days before its notAfter it is reported expiring.
    pub warning_days: i64,
    /// Where it stands.
    pub state: ExpiryState,
}

impl Ca {
    /// The OCSP signer key in use. It refuses to sign once the OCSP signer or the issuing CA is
    /// compromised ([`Ca::compromise`]).
    pub fn ocsp_signer(&self) -> Result<Arc<dyn Signer>, Error> {
        Ok(self.ocsp_signer_certified()?.1)
    }

    /// The OCSP signer certificate in use (DER).
    pub fn ocsp_signer_der(&self) -> Vec<u8> {
        self.ocsp.read().unwrap_or_else(|p| p.into_inner()).der.clone()
    }

    /// The OCSP signer certificate in use (DER) with its key, as one consistent pair.
    pub fn ocsp_signer_certified(&self) -> Result<(Vec<u8>, Arc<dyn Signer>), Error> {
        const WATCHED: &[OwnCert] = &[OwnCert::Ocsp, OwnCert::Issuing];
        let current = self.ocsp.read().unwrap_or_else(|p| p.into_inner()).clone();
        let key = self.guarded(self.hsm.signer(&current.handle)?, WATCHED);
        Ok((current.der.clone(), key))
    }

    /// Re-issues the OCSP signer, with a new key generated in custody, once its notAfter is
    /// nearer than its renewal window ([`crate::ExpirySettings::ocsp_renewal_window`] of
    /// [`crate::OCSP_RESPONSE_LIFETIME`]). The new
    /// certificate is stored with an audit entry before it is put in use; the old key stays in
    /// custody. `Ok(None)` when nothing was due.
    ///
    /// A signer renewed meanwhile by another process on the same storage is taken up first. If
    /// another process renews it while this one does, the other's is kept: `ca.ocsp.serial` is
    /// replaced only over the signer this renewal replaces, and otherwise this renewal's
    /// certificate, issued and audited, is not put in use (an audit entry says so; `Ok(None)`).
    ///
    /// Not renewed: a compromised OCSP signer or issuing CA ([`Error::Compromised`]), and a
    /// signer that a new one would not outlive by a day because the issuing CA ends first (that
    /// is reported by [`Ca::own_certificates`] instead).
    pub fn renew_ocsp_signer_if_due(&self, actor: &str) -> Result<Option<CertRecord>, Error> {
        let _guard = self.ocsp_renew_lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = seconds(self.clock.now());
        let current = self.ocsp_signer_stored()?;
        let window = self.cfg.expiry.ocsp_renewal_window(crate::OCSP_RESPONSE_LIFETIME);
        if current.not_after - now > window {
            return Ok(None);
        }
        self.refuse_if_compromised(OwnCert::Ocsp)?;
        self.refuse_if_compromised(OwnCert::Issuing)?;
        let not_after = self.ocsp_signer_end(now);
        if not_after <= current.not_after + Duration::days(1) {
            tracing::warn!(
                serial = %current.serial,
                "the OCSP signer is due for renewal, but the issuing CA ends before a new one would last longer"
            );
            return Ok(None);
        }
        let details =
            format!("ocsp-signer renewal, replacing {} (notAfter {})", current.serial, current.not_after);
        match self.put_new_ocsp_signer(actor, &current, now, details)? {
            Ok(rec) => Ok(Some(rec)),
            Err(_) => Ok(None),
        }
    }

    /// Replaces the OCSP signer at once, with a new key generated in custody and a new
    /// certificate from the issuing CA (`pki ca rekey --ca ocsp`): after
    /// `pki ca compromise --ca ocsp`, so that OCSP answers again, or whenever the officers want a
    /// new key. The new certificate is stored with an audit entry before it is put in use, the
    /// running responder takes it up within a second, and a compromised key never signs again
    /// (its key stays recorded as compromised). Refused while the issuing CA is compromised, and
    /// when another process on the same storage replaces the signer meanwhile
    /// ([`Error::ReplacedMeanwhile`]: theirs is kept).
    pub fn rekey_ocsp_signer(&self, actor: &str) -> Result<CertRecord, Error> {
        let _guard = self.ocsp_renew_lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = seconds(self.clock.now());
        let current = self.ocsp_signer_stored()?;
        self.refuse_if_compromised(OwnCert::Issuing)?;
        let compromised = self.is_compromised(OwnCert::Ocsp);
        let why = if compromised { "after its compromise" } else { "on request" };
        let details = format!("ocsp-signer re-key {why}, replacing {}", current.serial);
        let rec = self
            .put_new_ocsp_signer(actor, &current, now, details)?
            .map_err(|serial| Error::ReplacedMeanwhile { which: OwnCert::Ocsp, serial })?;
        if compromised {
            let _guard = self.compromise_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.compromised_certs.write().unwrap_or_else(|p| p.into_inner()).remove(&OwnCert::Ocsp);
        }
        Ok(rec)
    }

    /// The OCSP signer in storage, taken up first when another process on the same storage
    /// replaced it.
    pub(super) fn ocsp_signer_stored(&self) -> Result<Arc<OcspSignerCert>, Error> {
        let stored = self.db.meta_get("ca.ocsp.serial")?;
        let current = self.ocsp.read().unwrap_or_else(|p| p.into_inner()).clone();
        if stored.as_deref() == Some(current.serial.to_string().as_str()) {
            return Ok(current);
        }
        let taken = Arc::new(load_ocsp_signer(&self.db)?);
        *self.ocsp.write().unwrap_or_else(|p| p.into_inner()) = taken.clone();
        Ok(taken)
    }

    /// The notAfter of an OCSP signer issued at `now`.
    fn ocsp_signer_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        (now + Duration::days(i64::from(self.cfg.ocsp_signer.validity_days))).min(self.issuing.not_after)
    }

    /// Issues an OCSP signer with a new key to replace `current` and puts it in use: the new
    /// certificate, or the serial of the one in use when another process replaced `current`
    /// first (then this one, issued and audited, is not put in use; an audit entry says so).
    fn put_new_ocsp_signer(
        &self,
        actor: &str,
        current: &OcspSignerCert,
        now: DateTime<Utc>,
        details: String,
    ) -> Result<Result<CertRecord, Serial>, Error> {
        let s = &self.cfg.ocsp_signer;
        let not_after = self.ocsp_signer_end(now);
        let serial = new_serial(&self.rng)?;
        let key_handle: KeyHandle =
            format!("ocsp/signer-{}", serial.to_string().to_ascii_lowercase()).parse()?;
        let key = HsmKey::new(get_or_generate(&*self.hsm, &key_handle, s.key_type, KeyPurpose::OcspSigning)?);
        let ctx = ProfileContext {
            serial: serial.clone(),
            not_before: now,
            not_after,
            key: SubjectKeyKind::from_key_type(key.signer.key_type()),
            ocsp_url: None,
            ca_issuers_url: Some(self.cfg.ca_cert_url(CaId::Issuing)),
            crl_url: Some(self.cfg.crl_url(CaId::Issuing)),
        };
        let signed = make_cert(
            &OcspSignerProfile { subject: s.subject.clone() },
            &ctx,
            &key,
            Signing::By(&self.issuing),
        )?;
        let rec = record_of(
            signed,
            serial.clone(),
            CertKind::OcspSigner,
            None,
            CaId::Issuing,
            key.signer.key_type().to_string(),
            None,
            now,
        )?;
        let draft = AuditDraft::ok(actor, AuditAction::Issue, Some(&serial), details);
        let stored = self
            .audit
            .commit(vec![draft], now, |recs| Ok(self.db.store_issued(std::slice::from_ref(&rec), recs)?));
        self.retire_if_refused(std::slice::from_ref(&rec), stored)?;
        // The key's handle first: until `ca.ocsp.serial` names the new certificate, the old one
        // stays in use, so a crash between the two writes leaves a consistent pair.
        self.db.meta_put(&ocsp_key_meta(&serial), key_handle.as_str())?;
        // Only over the signer this one replaces: another process on the same storage may have
        // replaced it since it was read, and then its signer stays the one in use.
        if !self.db.meta_replace("ca.ocsp.serial", &current.serial.to_string(), &serial.to_string())? {
            let theirs = Arc::new(load_ocsp_signer(&self.db)?);
            self.audit.append(
                AuditDraft::refused(
                    actor,
                    AuditAction::Issue,
                    Some(&serial),
                    "another process replaced the OCSP signer first",
                    format!("ocsp-signer {serial} not put in use; {} is", theirs.serial),
                ),
                now,
            )?;
            tracing::warn!(%serial, in_use = %theirs.serial, "another process replaced the OCSP signer first: this one's certificate is not used");
            let in_use = theirs.serial.clone();
            *self.ocsp.write().unwrap_or_else(|p| p.into_inner()) = theirs;
            return Ok(Err(in_use));
        }
        *self.ocsp.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(OcspSignerCert {
            der: rec.der.clone(),
            serial: serial.clone(),
            handle: key_handle,
            not_after: rec.not_after,
        });
        tracing::info!(%serial, old = %current.serial, not_after = %rec.not_after, "a new OCSP signer is in use");
        Ok(Ok(rec))
    }

    /// The CA-side certificates — root, issuing CA, OCSP signer, TSA and (once issued) the
    /// console's TLS certificate and the audit signer — with their days left and state now. The OCSP signer's
    /// warning window is its renewal window; the TLS certificate's
    /// the 30 days before which it is re-issued; the others' [`crate::ExpirySettings::warning_days`].
    pub fn own_certificates(&self) -> Result<Vec<OwnCertStatus>, Error> {
        let now = self.clock.now();
        let warn = i64::from(self.cfg.expiry.warning_days);
        let ocsp_serial = self.ocsp.read().unwrap_or_else(|p| p.into_inner()).serial.clone();
        let ocsp_days = self.cfg.expiry.ocsp_renewal_window(crate::OCSP_RESPONSE_LIFETIME).num_days();
        let mut wanted: Vec<(&'static str, Serial, i64)> = Vec::new();
        for (name, key, days) in [("root", "ca.root.serial", warn), ("issuing", "ca.issuing.serial", warn)] {
            if let Some(s) = self.db.meta_get(key)? {
                wanted.push((name, s.parse()?, days));
            }
        }
        wanted.push(("ocsp", ocsp_serial, ocsp_days));
        for (name, key, days) in
            [("tsa", "ca.tsa.serial", warn), ("tls", "ca.tls.serial", 30), ("audit", "ca.audit.serial", warn)]
        {
            if let Some(s) = self.db.meta_get(key)? {
                wanted.push((name, s.parse()?, days));
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        for (name, serial, warning_days) in wanted {
            let rec = self.db.get_meta(&serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))?;
            let left = rec.not_after - now;
            let state = if rec.revocation.is_some() {
                ExpiryState::Revoked
            } else if left <= Duration::zero() {
                ExpiryState::Expired
            } else if left <= Duration::days(warning_days) {
                ExpiryState::Expiring
            } else {
                ExpiryState::Valid
            };
            out.push(OwnCertStatus {
                name,
                serial,
                not_after: rec.not_after,
                days_left: left.num_days(),
                warning_days,
                state,
            });
        }
        Ok(out)
    }
}
