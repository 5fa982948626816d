//! Nothing of the CA's own expires unnoticed: the OCSP signer is re-issued with a new key before
//! its renewal window, and every CA-side certificate's remaining days are reported
//! ([`Ca::own_certificates`]) for `pki status`, `/healthz` and the console's dashboard.

use super::*;

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
    /// `root`, `issuing`, `ocsp`, `tsa`, `tls`, `audit`, or `mail-sender:NAME` for a sealed-mail
    /// sender identity.
    pub name: String,
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
        self.signer_in_use(OwnCert::Ocsp).der.clone()
    }

    /// The OCSP signer certificate in use (DER) with its key, as one consistent pair.
    pub fn ocsp_signer_certified(&self) -> Result<(Vec<u8>, Arc<dyn Signer>), Error> {
        const WATCHED: &[OwnCert] = &[OwnCert::Ocsp, OwnCert::Issuing];
        let current = self.signer_in_use(OwnCert::Ocsp);
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
        let current = self.signer_stored(OwnCert::Ocsp)?;
        let window = self.cfg.expiry.ocsp_renewal_window(crate::OCSP_RESPONSE_LIFETIME);
        if current.not_after - now > window {
            return Ok(None);
        }
        self.refuse_if_compromised(OwnCert::Ocsp)?;
        self.refuse_if_compromised(OwnCert::Issuing)?;
        let not_after = self.replaceable(OwnCert::Ocsp)?.not_after(now);
        if not_after <= current.not_after + Duration::days(1) {
            tracing::warn!(
                serial = %current.serial,
                "the OCSP signer is due for renewal, but the issuing CA ends before a new one would last longer"
            );
            return Ok(None);
        }
        let details =
            format!("ocsp-signer renewal, replacing {} (notAfter {})", current.serial, current.not_after);
        match self.put_new_signer(OwnCert::Ocsp, actor, &current, now, details)? {
            Ok(rec) => Ok(Some(rec)),
            Err(_) => Ok(None),
        }
    }

    /// The CA-side certificates — root, issuing CA, OCSP signer, TSA, (once issued) the console's
    /// TLS certificate and the audit signer, and the sealed-mail sender identities, whose keys the
    /// CA holds too — with their days left and state now. The OCSP signer's and the senders'
    /// warning windows are their renewal windows (the senders' [`crate::ExpirySettings::warning_days`]
    /// when they are not renewed on their own); the TLS certificate's the 30 days before which it
    /// is re-issued; the others' [`crate::ExpirySettings::warning_days`].
    pub fn own_certificates(&self) -> Result<Vec<OwnCertStatus>, Error> {
        let now = self.clock.now();
        let warn = i64::from(self.cfg.expiry.warning_days);
        let ocsp_serial = self.ocsp.read().unwrap_or_else(|p| p.into_inner()).serial.clone();
        let ocsp_days = self.cfg.expiry.ocsp_renewal_window(crate::OCSP_RESPONSE_LIFETIME).num_days();
        let mut wanted: Vec<(String, Serial, i64)> = Vec::new();
        for (name, key, days) in [("root", "ca.root.serial", warn), ("issuing", "ca.issuing.serial", warn)] {
            if let Some(s) = self.db.meta_get(key)? {
                wanted.push((name.into(), s.parse()?, days));
            }
        }
        wanted.push(("ocsp".into(), ocsp_serial, ocsp_days));
        for (name, key, days) in
            [("tsa", "ca.tsa.serial", warn), ("tls", "ca.tls.serial", 30), ("audit", "ca.audit.serial", warn)]
        {
            if let Some(s) = self.db.meta_get(key)? {
                wanted.push((name.into(), s.parse()?, days));
            }
        }
        let sender_days = match self.cfg.expiry.mail_sender_renew_before_days {
            0 => warn,
            days => i64::from(days),
        };
        for sender in cerdb::mail_senders::MailSenders::open(&self.db).list()? {
            wanted.push((format!("mail-sender:{}", sender.name), sender.serial, sender_days));
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
