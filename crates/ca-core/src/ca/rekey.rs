//! The CA's service keys that can be replaced while the CA runs — the delegated OCSP signer, the
//! TSA, the console's TLS server certificate and the audit log's checkpoint signer: which
//! certificate and key are in use, and their replacement by a new key in custody with a new
//! certificate (`pki ca rekey`, and the OCSP signer's renewal).

use super::*;

/// A service signer in use: its certificate and the handle of its key in custody.
#[derive(Debug, Clone)]
pub(super) struct SignerCert {
    pub(super) der: Vec<u8>,
    pub(super) serial: Serial,
    pub(super) handle: KeyHandle,
    pub(super) not_after: DateTime<Utc>,
}

/// Where the handle of a signer's key is recorded, by its certificate's serial. The key made
/// first has no record: it is the signer's first handle ([`H_OCSP`], [`H_TSA`], [`H_TLS`],
/// [`H_AUDIT`]).
pub(super) fn key_meta(which: OwnCert, serial: &Serial) -> String {
    format!("ca.{}.key.{serial}", which.name())
}

/// The handle of the key made first.
pub(super) fn first_handle(which: OwnCert) -> &'static str {
    match which {
        OwnCert::Tsa => H_TSA,
        OwnCert::Tls => H_TLS,
        OwnCert::Audit => H_AUDIT,
        OwnCert::Ocsp | OwnCert::Issuing => H_OCSP,
    }
}

/// The handle of the key certified by `serial`, a certificate of `which`.
pub(super) fn key_handle_of(db: &CertDb, which: OwnCert, serial: &Serial) -> Result<KeyHandle, Error> {
    Ok(match db.meta_get(&key_meta(which, serial))? {
        Some(h) => h.parse()?,
        None => handle(first_handle(which)),
    })
}

/// Loads the signer in use (`ca.<name>.serial`) and the handle of its key.
pub(super) fn load_signer(db: &CertDb, which: OwnCert) -> Result<SignerCert, Error> {
    let key = which.serial_key();
    let serial: Serial =
        db.meta_get(key)?.ok_or_else(|| cerdb::Error::Inconsistent(format!("{key} missing")))?.parse()?;
    let rec = db.get(&serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))?;
    let handle = key_handle_of(db, which, &serial)?;
    Ok(SignerCert { der: rec.der, serial, handle, not_after: rec.not_after })
}

/// The serials of the TSA certificates replaced by [`Ca::rekey`], oldest first, space-separated.
const TSA_REPLACED: &str = "ca.tsa.replaced";

/// Every TSA certificate of the CA (DER), the one in use first, then those [`Ca::rekey`]
/// replaced, newest first: what a verifier needs besides the root for tokens that carry none,
/// also those signed before a re-key. Read from storage, so it includes a re-key made by another
/// process.
pub fn tsa_certificates(db: &CertDb) -> Result<Vec<Vec<u8>>, Error> {
    let in_use = load_signer(db, OwnCert::Tsa)?;
    let mut out = vec![in_use.der];
    let replaced = db.meta_get(TSA_REPLACED)?.unwrap_or_default();
    for serial in replaced.split_whitespace().rev() {
        let serial: Serial = serial.parse()?;
        let rec = db.get(&serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))?;
        out.push(rec.der);
    }
    Ok(out)
}

/// Adds `serial` to the replaced TSA certificates, written only over the list read.
fn record_replaced_tsa(db: &CertDb, serial: &Serial) -> Result<(), Error> {
    loop {
        let read = db.meta_get(TSA_REPLACED)?;
        let next = match &read {
            Some(list) if list.split_whitespace().any(|s| s == serial.to_string()) => return Ok(()),
            Some(list) => format!("{list} {serial}"),
            None => serial.to_string(),
        };
        let written = match &read {
            Some(old) => db.meta_replace(TSA_REPLACED, old, &next)?,
            None => db.meta_insert(TSA_REPLACED, &next)?,
        };
        if written {
            return Ok(());
        }
    }
}

/// What differs between the service keys that can be replaced.
pub(super) struct Replaceable<'a> {
    pub(super) key_type: KeyType,
    validity_days: u32,
    pub(super) issuer: &'a LoadedCa,
    pub(super) profile: Box<dyn Profile>,
    pub(super) purpose: KeyPurpose,
    /// Its OCSP URL, if its issuer's responder answers for it.
    pub(super) ocsp_url: Option<String>,
    /// Held while it is checked, renewed or replaced.
    pub(super) lock: &'a Mutex<()>,
}

impl Replaceable<'_> {
    /// The notAfter of one issued at `now`: its validity, cut at its issuer's end.
    pub(super) fn not_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        (now + Duration::days(i64::from(self.validity_days))).min(self.issuer.not_after)
    }
}

impl Ca {
    /// The description of `which` for its replacement; [`Error::NotReKeyable`] for the issuing CA.
    pub(super) fn replaceable(&self, which: OwnCert) -> Result<Replaceable<'_>, Error> {
        let keyed = |s: &KeySettings| (s.key_type, s.validity_days);
        let ((key_type, validity_days), issuer, profile, purpose, ocsp_url, lock): (
            _,
            _,
            Box<dyn Profile>,
            _,
            _,
            _,
        ) = match which {
            OwnCert::Ocsp => (
                keyed(&self.cfg.ocsp_signer),
                &self.issuing,
                Box::new(OcspSignerProfile { subject: self.cfg.ocsp_signer.subject.clone() }),
                KeyPurpose::OcspSigning,
                None,
                &self.ocsp_renew_lock,
            ),
            // Issued by the root, never by the S/MIME issuing CA.
            OwnCert::Tsa => (
                keyed(&self.cfg.tsa),
                &self.root,
                Box::new(TsaProfile { subject: self.cfg.tsa.subject.clone() }),
                KeyPurpose::TsaSigning,
                None,
                &self.ocsp_renew_lock,
            ),
            OwnCert::Tls => (
                (self.cfg.tls.key_type, self.cfg.tls.validity_days),
                &self.root,
                Box::new(TlsServerProfile {
                    dns_names: self.cfg.tls.dns_names.clone(),
                    ip_addresses: self.cfg.tls.ip_addresses.clone(),
                }),
                KeyPurpose::TlsServer,
                None,
                &self.tls_lock,
            ),
            // The issuing CA's; the root's once the issuing CA is compromised, so that the audit
            // log is still anchored by checkpoints through the incident.
            OwnCert::Audit => {
                let by_root = self.is_compromised(OwnCert::Issuing);
                (
                    keyed(&self.cfg.audit_signer),
                    if by_root { &self.root } else { &self.issuing },
                    Box::new(AuditSignerProfile { subject: self.cfg.audit_signer.subject.clone() }),
                    KeyPurpose::AuditSigning,
                    (!by_root).then(|| self.cfg.ocsp_url()),
                    &self.audit_signer_lock,
                )
            }
            OwnCert::Issuing => return Err(Error::NotReKeyable { which }),
        };
        Ok(Replaceable { key_type, validity_days, issuer, profile, purpose, ocsp_url, lock })
    }

    /// Where the signer of `which` in use is kept in memory: the OCSP signer and the TSA, whose
    /// keys sign for every request. The TLS and audit certificates are read from storage when
    /// they are used.
    fn signer_slot(&self, which: OwnCert) -> Option<&RwLock<Arc<SignerCert>>> {
        match which {
            OwnCert::Tsa => Some(&self.tsa),
            OwnCert::Ocsp => Some(&self.ocsp),
            _ => None,
        }
    }

    /// The signer of the OCSP responder or the TSA in use, as kept in memory.
    pub(super) fn signer_in_use(&self, which: OwnCert) -> Arc<SignerCert> {
        let slot = self.signer_slot(which).unwrap_or(&self.ocsp);
        slot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The signer of `which` in storage, taken up first when another process on the same storage
    /// replaced it. [`Error::NothingToReKey`] while `which` has no certificate yet.
    pub(super) fn signer_stored(&self, which: OwnCert) -> Result<Arc<SignerCert>, Error> {
        let Some(stored) = self.db.meta_get(which.serial_key())? else {
            return Err(Error::NothingToReKey { which });
        };
        let Some(slot) = self.signer_slot(which) else {
            return Ok(Arc::new(load_signer(&self.db, which)?));
        };
        let current = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
        if stored == current.serial.to_string() {
            return Ok(current);
        }
        let taken = Arc::new(load_signer(&self.db, which)?);
        *slot.write().unwrap_or_else(|p| p.into_inner()) = taken.clone();
        Ok(taken)
    }

    /// The serial of the `which` certificate in use, as stored (`ca.<name>.serial`): `pki serve`
    /// looks at the TLS certificate's every second, so that it serves a re-keyed one at once.
    pub fn own_serial_in_use(&self, which: OwnCert) -> Result<Option<Serial>, Error> {
        Ok(self.db.meta_get(which.serial_key())?.map(|s| s.parse()).transpose()?)
    }

    /// Replaces the OCSP signer, the TSA, the console's TLS certificate or the audit signer at
    /// once, with a new key generated in custody and a new certificate from its issuer — the
    /// issuing CA for the OCSP and audit signers (the root for the audit signer once the issuing CA
    /// is compromised), the root for the TSA and TLS (`pki ca rekey`):
    /// after `pki ca compromise`, so that OCSP answers, timestamps, HTTPS and audit checkpoints
    /// are given again, or whenever the officers want a new key. The new certificate is stored
    /// with an audit entry before it is put in use, a running server takes it up within a second,
    /// and a compromised key never signs again (its key stays recorded as compromised).
    ///
    /// Refused for the issuing CA ([`Error::NotReKeyable`]), for the OCSP signer while the
    /// issuing CA is compromised (the audit signer is then certified by the root), for a
    /// certificate not issued yet
    /// ([`Error::NothingToReKey`]), and when another process on the same storage replaces it
    /// meanwhile ([`Error::ReplacedMeanwhile`]: theirs is kept).
    pub fn rekey(&self, which: OwnCert, actor: &str) -> Result<CertRecord, Error> {
        let lock = self.replaceable(which)?.lock;
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = seconds(self.clock.now());
        self.sync_compromises(false)?;
        // Certified by the issuing CA: not while it is compromised (the OCSP signer; the audit
        // signer is then the root's).
        if self.replaceable(which)?.issuer.id == CaId::Issuing {
            self.refuse_if_compromised(OwnCert::Issuing)?;
        }
        let current = self.signer_stored(which)?;
        let compromised = self.is_compromised(which);
        let why = if compromised { "after its compromise" } else { "on request" };
        let details = format!("{} re-key {why}, replacing {}", which.kind(), current.serial);
        let rec = self
            .put_new_signer(which, actor, &current, now, details)?
            .map_err(|serial| Error::ReplacedMeanwhile { which, serial })?;
        if compromised {
            let _guard = self.compromise_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.compromised_certs.write().unwrap_or_else(|p| p.into_inner()).remove(&which);
        }
        Ok(rec)
    }

    /// Issues a signer of `which` with a new key to replace `current` and puts it in use: the
    /// new certificate, or the serial of the one in use when another process replaced `current`
    /// first (then this one, issued and audited, is not put in use: an audit entry says so, and
    /// it is revoked as superseded).
    pub(super) fn put_new_signer(
        &self,
        which: OwnCert,
        actor: &str,
        current: &SignerCert,
        now: DateTime<Utc>,
        details: String,
    ) -> Result<Result<CertRecord, Serial>, Error> {
        let r = self.replaceable(which)?;
        let serial = new_serial(&self.rng)?;
        let key_handle: KeyHandle =
            format!("{}-{}", first_handle(which), serial.to_string().to_ascii_lowercase()).parse()?;
        let key = HsmKey::new(get_or_generate(&*self.hsm, &key_handle, r.key_type, r.purpose)?);
        let rec = self.issue_service_cert(&r, serial.clone(), &key, now, actor, details)?;
        // The key's handle first: until `ca.<name>.serial` names the new certificate, the old one
        // stays in use, so a crash between the two writes leaves a consistent pair.
        self.db.meta_put(&key_meta(which, &serial), key_handle.as_str())?;
        // Only over the signer this one replaces: another process on the same storage may have
        // replaced it since it was read, and then its signer stays the one in use.
        if !self.db.meta_replace(which.serial_key(), &current.serial.to_string(), &serial.to_string())? {
            let theirs = Arc::new(load_signer(&self.db, which)?);
            self.revoke_unused(which, &rec, actor, &theirs.serial)?;
            let in_use = theirs.serial.clone();
            if let Some(slot) = self.signer_slot(which) {
                *slot.write().unwrap_or_else(|p| p.into_inner()) = theirs;
            }
            return Ok(Err(in_use));
        }
        if which == OwnCert::Tsa {
            // Tokens it signed are still verified: its certificate stays known.
            record_replaced_tsa(&self.db, &current.serial)?;
        }
        if let Some(slot) = self.signer_slot(which) {
            *slot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(SignerCert {
                der: rec.der.clone(),
                serial: serial.clone(),
                handle: key_handle,
                not_after: rec.not_after,
            });
        }
        tracing::info!(%serial, old = %current.serial, not_after = %rec.not_after, "a new {which} certificate is in use");
        Ok(Ok(rec))
    }

    /// Issues and stores, with its audit entry, a certificate of the service `r` describes for
    /// `key`: by its issuer, valid from `now` for its validity (cut at the issuer's end).
    pub(super) fn issue_service_cert(
        &self,
        r: &Replaceable<'_>,
        serial: Serial,
        key: &HsmKey,
        now: DateTime<Utc>,
        actor: &str,
        details: String,
    ) -> Result<CertRecord, Error> {
        let ctx = ProfileContext {
            serial: serial.clone(),
            not_before: now,
            not_after: r.not_after(now),
            key: SubjectKeyKind::from_key_type(key.signer.key_type()),
            ocsp_url: r.ocsp_url.clone(),
            ca_issuers_url: Some(self.cfg.ca_cert_url(r.issuer.id)),
            crl_url: Some(self.cfg.crl_url(r.issuer.id)),
        };
        let signed = make_cert(&*r.profile, &ctx, key, Signing::By(r.issuer))?;
        let rec = record_of(
            signed,
            serial.clone(),
            r.profile.kind(),
            None,
            r.issuer.id,
            key.signer.key_type().to_string(),
            None,
            now,
        )?;
        let draft = AuditDraft::ok(actor, AuditAction::Issue, Some(&serial), details);
        let stored = self
            .audit
            .commit(vec![draft], now, |recs| Ok(self.db.store_issued(std::slice::from_ref(&rec), recs)?));
        self.retire_if_refused(std::slice::from_ref(&rec), stored)?;
        Ok(rec)
    }

    /// A certificate of `which` issued to replace the one in use, when another process put its
    /// own in use first (`in_use`): audited as not used, and revoked (superseded), so that no
    /// valid certificate of the service is left that nothing uses; its issuer's CRL lists it.
    pub(super) fn revoke_unused(
        &self,
        which: OwnCert,
        rec: &CertRecord,
        actor: &str,
        in_use: &Serial,
    ) -> Result<(), Error> {
        let serial = &rec.serial;
        self.audit.append(
            AuditDraft::refused(
                actor,
                AuditAction::Issue,
                Some(serial),
                &format!("another process replaced the {which} certificate first"),
                format!("{} {serial} not put in use; {in_use} is", which.kind()),
            ),
            self.clock.now(),
        )?;
        tracing::warn!(%serial, %in_use, "another process replaced the {which} certificate first: this one is not used");
        let publishing = self.crl_publication.revoking(&self.db, rec.issuer)?;
        self.revoke_one(rec, RevocationReason::Superseded, None, None, actor)?;
        if publishing.is_none() && !(rec.issuer == CaId::Issuing && self.is_compromised(OwnCert::Issuing)) {
            self.regenerate_crl(rec.issuer, actor)?;
        }
        drop(publishing);
        Ok(())
    }
}
