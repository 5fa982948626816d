//! Escrow: encryption certificates whose key pair is generated in key custody, and the PKCS#12
//! handed to the subscriber. Recovery by officers is `recovery.rs`.

use super::*;

impl Ca {
    /// Issues an encryption certificate whose key pair is generated and escrowed in the key
    /// store; returns it with a PKCS#12 of key and chain protected by `p12_password`.
    pub fn issue_generated(
        &self,
        email: &EmailAddress,
        usage: Usage,
        key_type: Option<KeyType>,
        p12_password: &str,
        actor: &str,
    ) -> Result<(Issued, Vec<u8>), Error> {
        if usage == Usage::Signing {
            return Err(Error::SigningKeyNotEscrowable);
        }
        self.refuse_if_compromised(OwnCert::Issuing)?;
        let mut notes = self.evidence_for(std::iter::once((email, usage)), actor)?;
        let note = notes.pop().unwrap_or_default();
        let kt = key_type.unwrap_or(self.cfg.leaf.default_generated_key_type);
        let kind = SubjectKeyKind::from_key_type(kt);
        check_key_for_usage(kind, usage)?;
        if p12_password.chars().count() < hsm_sim::MIN_PKCS12_PASSWORD_LEN {
            return Err(hsm_sim::Error::WeakPkcs12Password { min: hsm_sim::MIN_PKCS12_PASSWORD_LEN }.into());
        }
        let now = seconds(self.clock.now());
        let serial = new_serial(&self.rng)?;
        let h: KeyHandle = format!("escrow/{}", serial.to_string().to_ascii_lowercase()).parse()?;
        let public = self.hsm.generate(&h, kt, KeyPurpose::Escrow)?;
        let subject = SubjectKey { raw: public.raw, alg: alg_for(kt) };
        let ctx = self.leaf_ctx(serial.clone(), kind, now);
        let profile = SubscriberProfile { email: email.clone(), usage };
        let der = make_cert(&profile, &ctx, &subject, Signing::By(&self.issuing))?;
        let rec = record_of(
            der,
            serial,
            usage.into(),
            Some(email.clone()),
            CaId::Issuing,
            kt.to_string(),
            Some(h.to_string()),
            now,
        )?;
        let drafts = vec![
            AuditDraft::ok(
                actor,
                AuditAction::Issue,
                Some(&rec.serial),
                format!("{email} {usage} {kt} escrowed sha256:{};{note}", rec.fingerprint),
            ),
            AuditDraft::ok(
                actor,
                AuditAction::EscrowExport,
                Some(&rec.serial),
                "PKCS#12 to the subscriber at issuance",
            ),
        ];
        let stored = self
            .audit
            .commit(drafts, now, |recs| Ok(self.db.store_issued(std::slice::from_ref(&rec), recs)?));
        self.retire_if_refused(std::slice::from_ref(&rec), stored)?;
        self.counters.issued([&rec]);
        let p12 = self.export_p12(&rec, p12_password)?;
        Ok((Issued { record: rec }, p12))
    }

    pub(super) fn export_p12(&self, rec: &CertRecord, password: &str) -> Result<Vec<u8>, Error> {
        let h: KeyHandle =
            rec.escrow_key.as_deref().ok_or_else(|| Error::NotEscrowed(rec.serial.clone()))?.parse()?;
        let chain = vec![rec.der.clone(), self.issuing.der.clone(), self.root.der.clone()];
        let name = rec.email.as_ref().map(|e| e.to_string()).unwrap_or_else(|| rec.serial.to_string());
        Ok(self.hsm.export_pkcs12(&h, &chain, password, &name)?)
    }
}
