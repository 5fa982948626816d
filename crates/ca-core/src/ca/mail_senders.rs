//! Sender identities of sealed mail: a signing certificate for one of the bank's own addresses
//! whose key is generated in key custody (purpose [`KeyPurpose::MailSigning`]) and never leaves
//! it. Which addresses may be senders (the enterprise domains) is the caller's rule; which senders
//! exist is kept by `cerdb::mail_senders`.

use super::*;

impl Ca {
    /// Issues the signing certificate of a new sender identity: a key of `key_type` (the
    /// configured default for generated keys when `None`) generated under a new handle
    /// `mail/sender/<serial>`, a subscriber signing certificate for `email` from the issuing CA,
    /// stored with its audit entry. Returns the certificate's record and the key's handle.
    ///
    /// 1. refuse while the issuing CA is compromised;
    /// 2. draw the serial, generate the key in custody under a handle named by it;
    /// 3. build, lint and sign the certificate with the signing profile;
    /// 4. store it with its audit entry (one durable write).
    pub fn issue_mail_sender(
        &self,
        email: &EmailAddress,
        key_type: Option<KeyType>,
        actor: &str,
    ) -> Result<(CertRecord, KeyHandle), Error> {
        self.refuse_if_compromised(OwnCert::Issuing)?;
        let kt = key_type.unwrap_or(self.cfg.leaf.default_generated_key_type);
        let kind = SubjectKeyKind::from_key_type(kt);
        check_key_for_usage(kind, Usage::Signing)?;
        let now = seconds(self.clock.now());
        let serial = new_serial(&self.rng)?;
        let h: KeyHandle = format!("mail/sender/{}", serial.to_string().to_ascii_lowercase()).parse()?;
        let public = self.hsm.generate(&h, kt, KeyPurpose::MailSigning)?;
        let subject = SubjectKey { raw: public.raw, alg: alg_for(kt) };
        let ctx = self.leaf_ctx(serial.clone(), kind, now);
        let profile = SubscriberProfile { email: email.clone(), usage: Usage::Signing };
        let der = make_cert(&profile, &ctx, &subject, Signing::By(&self.issuing))?;
        let rec = record_of(
            der,
            serial,
            Usage::Signing.into(),
            Some(email.clone()),
            CaId::Issuing,
            kt.to_string(),
            None,
            now,
        )?;
        let draft = AuditDraft::ok(
            actor,
            AuditAction::Issue,
            Some(&rec.serial),
            format!("{email} signing {kt} mail sender key {h} sha256:{}", rec.fingerprint),
        );
        let stored = self
            .audit
            .commit(vec![draft], now, |recs| Ok(self.db.store_issued(std::slice::from_ref(&rec), recs)?));
        self.retire_if_refused(std::slice::from_ref(&rec), stored)?;
        self.counters.issued([&rec]);
        Ok((rec, h))
    }

    /// The key of a sender identity, as a signer that refuses to sign once the issuing CA is
    /// compromised ([`Ca::compromise`]).
    pub fn mail_signer(&self, handle: &KeyHandle) -> Result<Arc<dyn Signer>, Error> {
        const WATCHED: &[OwnCert] = &[OwnCert::Issuing];
        if !handle.as_str().starts_with("mail/sender/") {
            return Err(Error::Certificate(format!("{} is not the key of a mail sender", handle.as_str())));
        }
        Ok(self.guarded(self.hsm.signer(handle)?, WATCHED))
    }
}
