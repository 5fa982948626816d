//! The CA's own certificates — issuing CA, OCSP signer, TSA, console TLS — are not revoked like a
//! subscriber's: [`Ca::compromise`] revokes one of them after a typed confirmation, records the
//! compromise in storage, and from then on nothing is issued or signed under it.

use std::collections::HashSet;

use super::*;

/// One of the CA's own certificates below the root (the root is never revoked here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnCert {
    /// The S/MIME issuing CA.
    Issuing,
    /// The delegated OCSP signer.
    Ocsp,
    /// The timestamp authority.
    Tsa,
    /// The console's TLS server certificate.
    Tls,
    /// The audit log's checkpoint signer.
    Audit,
}

impl OwnCert {
    /// Every one, in the order `pki ca compromise --ca` names them.
    pub const ALL: [OwnCert; 5] =
        [OwnCert::Issuing, OwnCert::Ocsp, OwnCert::Tsa, OwnCert::Tls, OwnCert::Audit];

    /// The name `pki ca compromise --ca` takes.
    pub fn name(self) -> &'static str {
        match self {
            OwnCert::Issuing => "issuing",
            OwnCert::Ocsp => "ocsp",
            OwnCert::Tsa => "tsa",
            OwnCert::Tls => "tls",
            OwnCert::Audit => "audit",
        }
    }

    /// The purpose of its key in custody.
    fn purpose(self) -> KeyPurpose {
        match self {
            OwnCert::Tsa => KeyPurpose::TsaSigning,
            OwnCert::Tls => KeyPurpose::TlsServer,
            OwnCert::Issuing => KeyPurpose::CaSigning,
            OwnCert::Ocsp => KeyPurpose::OcspSigning,
            OwnCert::Audit => KeyPurpose::AuditSigning,
        }
    }

    /// The certificate kind in storage.
    pub fn kind(self) -> CertKind {
        match self {
            OwnCert::Issuing => CertKind::IssuingCa,
            OwnCert::Ocsp => CertKind::OcspSigner,
            OwnCert::Tsa => CertKind::Tsa,
            OwnCert::Tls => CertKind::TlsServer,
            OwnCert::Audit => CertKind::AuditSigner,
        }
    }

    /// The own certificate of a kind, if it is one.
    pub fn of_kind(kind: CertKind) -> Option<OwnCert> {
        OwnCert::ALL.into_iter().find(|c| c.kind() == kind)
    }

    /// The reason it is revoked with. cACompromise for the issuing CA: its key signs
    /// certificates (RFC 5280 §5.3.1). keyCompromise for the others: they are end-entity
    /// certificates of the CA's services, and cACompromise names the key of a CA, which they are
    /// not; their keys are then refused for any new certificate, like a subscriber's.
    pub fn reason(self) -> RevocationReason {
        match self {
            OwnCert::Issuing => RevocationReason::CaCompromise,
            _ => RevocationReason::KeyCompromise,
        }
    }

    /// The words an officer types to confirm: `compromise issuing`.
    pub fn confirmation(self) -> String {
        format!("compromise {}", self.name())
    }

    pub(super) fn serial_key(self) -> &'static str {
        match self {
            OwnCert::Issuing => "ca.issuing.serial",
            OwnCert::Ocsp => "ca.ocsp.serial",
            OwnCert::Tsa => "ca.tsa.serial",
            OwnCert::Tls => "ca.tls.serial",
            OwnCert::Audit => "ca.audit.serial",
        }
    }

    /// The storage key recording the compromise (its value: serial and time).
    fn meta_key(self) -> String {
        format!("ca.compromised.{}", self.name())
    }
}

impl std::fmt::Display for OwnCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for OwnCert {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OwnCert::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown CA certificate {s:?}: expected issuing, ocsp, tsa, tls or audit"))
    }
}

/// The own certificates revoked by [`Ca::compromise`], shared with the signers handed out.
pub(super) type CompromisedSet = Arc<RwLock<HashSet<OwnCert>>>;

/// The keys reported compromised, with the certificate whose revocation reported each.
pub(super) type CompromisedKeys = Arc<RwLock<HashMap<KeyDigest, Serial>>>;

/// Reads which own certificates are compromised: the one in use (`ca.<name>.serial`) is the one
/// recorded under `ca.compromised.*`, or is revoked in storage (a revocation stored before its
/// record was written still counts). One replaced since ([`Ca::rekey`]) is not.
pub(super) fn load_compromised(db: &CertDb) -> Result<CompromisedSet, Error> {
    Ok(Arc::new(RwLock::new(compromised_own_certs(db)?)))
}

/// Tells the directory, LDAP and sealed mail, through the storage handle they share with the CA
/// ([`cerdb::WithdrawnIssuers`]), whether the issuing CA is compromised: then no certificate it
/// issued is handed out, encrypted to or signed with. With it goes the time the issuing CA was
/// revoked, from which its certificates are shown revoked for cACompromise.
pub(super) fn publish_withdrawn(db: &CertDb, set: &CompromisedSet) {
    let issuing = set.read().unwrap_or_else(|p| p.into_inner()).contains(&OwnCert::Issuing);
    let at = issuing.then(|| {
        issuing_revoked_at(db).unwrap_or_else(|e| {
            // Withdrawn all the same; only the time shown is the moment it was noticed.
            tracing::error!(error = %e, "cannot read when the issuing CA was revoked");
            Utc::now()
        })
    });
    db.withdrawn_issuers().set(CaId::Issuing, at);
}

/// When the issuing CA in use was revoked: its record's revocation, else the time recorded under
/// `ca.compromised.issuing` (written after the revocation, so a reader between the two sees the
/// revocation itself).
fn issuing_revoked_at(db: &CertDb) -> Result<DateTime<Utc>, Error> {
    let which = OwnCert::Issuing;
    if let Some(serial) = db.meta_get(which.serial_key())? {
        if let Some(r) = db.get_meta(&serial.parse()?)?.and_then(|r| r.revocation) {
            return Ok(r.at);
        }
    }
    let recorded = db.meta_get(&which.meta_key())?.unwrap_or_default();
    let at = split_compromise_value(&recorded).1.unwrap_or_default();
    DateTime::parse_from_rfc3339(at).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        cerdb::Error::Corrupt(format!("{}: {recorded:?} has no revocation time: {e}", which.meta_key()))
            .into()
    })
}

/// The value recorded under `ca.compromised.<certificate>`: the serial compromised, then when.
fn compromise_value(serial: &Serial, at: DateTime<Utc>) -> String {
    format!("{serial} {}", at.to_rfc3339())
}

/// The serial and, when there, the time of a [`compromise_value`].
fn split_compromise_value(value: &str) -> (&str, Option<&str>) {
    match value.split_once(' ') {
        Some((serial, at)) => (serial, Some(at)),
        None => (value, None),
    }
}

fn compromised_own_certs(db: &CertDb) -> Result<HashSet<OwnCert>, Error> {
    let mut set = HashSet::new();
    for which in OwnCert::ALL {
        let in_use = db.meta_get(which.serial_key())?;
        let revoked = match &in_use {
            Some(s) => db.get_meta(&s.parse()?)?.is_some_and(|r| r.revocation.is_some()),
            None => false,
        };
        // The TLS certificate is reissued when revoked or near its end: only its record counts.
        let counts_revoked = revoked && which != OwnCert::Tls;
        // The record: the serial compromised, then when.
        let recorded = db.meta_get(&which.meta_key())?;
        let recorded_in_use = match (recorded.as_deref().map(|r| split_compromise_value(r).0), &in_use) {
            (Some(r), Some(u)) => r.parse::<Serial>()? == u.parse::<Serial>()?,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if counts_revoked || recorded_in_use {
            set.insert(which);
        }
    }
    Ok(set)
}

/// A signer that refuses once one of `watched` is compromised, or its own key is reported
/// compromised: the OCSP and TSA keys handed to the services stop signing the moment
/// [`Ca::compromise`] returns, and a key replaced after a compromise never signs again.
#[derive(Debug)]
pub(super) struct GuardedSigner {
    inner: Arc<dyn Signer>,
    compromised: CompromisedSet,
    keys: CompromisedKeys,
    digest: KeyDigest,
    watched: &'static [OwnCert],
}

impl Signer for GuardedSigner {
    fn handle(&self) -> &KeyHandle {
        self.inner.handle()
    }
    fn key_type(&self) -> hsm_sim::KeyType {
        self.inner.key_type()
    }
    fn public_key_spki(&self) -> &[u8] {
        self.inner.public_key_spki()
    }
    fn public_key_raw(&self) -> &[u8] {
        self.inner.public_key_raw()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, hsm_sim::Error> {
        if let Some(serial) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(&self.digest) {
            tracing::error!(
                key = %self.inner.handle(),
                %serial,
                "refusing to sign: the key was reported compromised"
            );
            return Err(hsm_sim::Error::NotPermitted {
                handle: self.inner.handle().clone(),
                purpose: self.watched.first().map_or(KeyPurpose::CaSigning, |w| w.purpose()),
                operation: "sign with a key reported compromised",
            });
        }
        let set = self.compromised.read().unwrap_or_else(|p| p.into_inner());
        if let Some(which) = self.watched.iter().find(|w| set.contains(w)) {
            tracing::error!(
                key = %self.inner.handle(),
                "refusing to sign: the {which} certificate was revoked by `pki ca compromise`"
            );
            return Err(hsm_sim::Error::NotPermitted {
                handle: self.inner.handle().clone(),
                purpose: which.purpose(),
                operation: "sign after `pki ca compromise` revoked its certificate",
            });
        }
        drop(set);
        self.inner.sign(msg)
    }
}

impl Ca {
    /// `key` as handed out: it refuses to sign once one of `watched` is compromised or its own
    /// key is reported compromised.
    pub(super) fn guarded(&self, key: Arc<dyn Signer>, watched: &'static [OwnCert]) -> Arc<dyn Signer> {
        let digest = KeyDigest::of(key.public_key_raw());
        Arc::new(GuardedSigner {
            inner: key,
            compromised: self.compromised_certs.clone(),
            keys: self.compromised.clone(),
            digest,
            watched,
        })
    }

    /// Whether the `which` certificate in use was revoked by [`Ca::compromise`].
    pub fn is_compromised(&self, which: OwnCert) -> bool {
        self.compromised_certs.read().unwrap_or_else(|p| p.into_inner()).contains(&which)
    }

    /// Refuses with [`Error::Compromised`] when `which` is compromised, here or by another process
    /// on the same storage (read again first when the change feed moved).
    pub fn refuse_if_compromised(&self, which: OwnCert) -> Result<(), Error> {
        self.sync_compromises(false)?;
        if self.is_compromised(which) {
            return Err(Error::Compromised { which });
        }
        Ok(())
    }

    /// Takes up what other processes on the same storage (the other nodes on PostgreSQL) changed:
    /// keys reported compromised and own certificates revoked by [`Ca::compromise`] there, and an
    /// OCSP signer, TSA, TLS certificate or audit signer replaced there ([`Ca::rekey`], a
    /// renewal). `pki serve` calls it
    /// every second, so that this node's TSA, OCSP and mail keys stop signing, and its responder
    /// takes up a new signer, within a second of another node's command; issuance and every
    /// other check of a compromise look at the change feed themselves first. Nothing to do on
    /// the embedded engine, which one process holds.
    pub fn sync_with_storage(&self) -> Result<(), Error> {
        if self.db.is_embedded() {
            return Ok(());
        }
        let mut replaced = false;
        for which in [OwnCert::Ocsp, OwnCert::Tsa] {
            let before = self.signer_in_use(which).serial.clone();
            let _guard = self.ocsp_renew_lock.lock().unwrap_or_else(|p| p.into_inner());
            replaced |= self.signer_stored(which)?.serial != before;
        }
        // A TLS certificate or audit signer compromised and then re-keyed elsewhere: in use is no
        // longer the one recorded as compromised.
        for which in [OwnCert::Tls, OwnCert::Audit] {
            if self.is_compromised(which) {
                let recorded = self.db.meta_get(&which.meta_key())?;
                let recorded = recorded.as_deref().map(|r| split_compromise_value(r).0.to_owned());
                replaced |= recorded != self.db.meta_get(which.serial_key())?;
            }
        }
        // A signer replaced elsewhere leaves no change in the feed: the own certificates are
        // read again then too.
        self.sync_compromises(replaced)
    }

    /// Reads the compromised keys and own certificates again when the change feed moved since
    /// the last look (or `force`), on engines several processes share.
    pub(super) fn sync_compromises(&self, force: bool) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        if self.db.is_embedded() {
            return Ok(());
        }
        let last = self.db.feed().last_change()?;
        if !force && self.seen_change.load(Ordering::Acquire) >= last {
            return Ok(());
        }
        let _guard = self.compromise_lock.lock().unwrap_or_else(|p| p.into_inner());
        let keys = self.db.compromised_keys()?;
        let own = compromised_own_certs(&self.db)?;
        self.compromised.write().unwrap_or_else(|p| p.into_inner()).extend(keys);
        let mut set = self.compromised_certs.write().unwrap_or_else(|p| p.into_inner());
        for which in own.difference(&set).copied().collect::<Vec<_>>() {
            tracing::warn!("the {which} certificate was revoked by `pki ca compromise` on another node");
        }
        *set = own;
        drop(set);
        publish_withdrawn(&self.db, &self.compromised_certs);
        self.seen_change.fetch_max(last, Ordering::AcqRel);
        Ok(())
    }

    /// The procedure for a compromised key of one of the CA's own certificates, where
    /// [`Ca::revoke`] refuses them.
    ///
    /// 1. `confirmation` must be exactly [`OwnCert::confirmation`] (`compromise issuing`);
    /// 2. the certificate is revoked with [`OwnCert::reason`] — its key recorded as compromised
    ///    for keyCompromise — with one `ca.compromise` audit entry, in one transaction;
    /// 3. the compromise is recorded under `ca.compromised.<name>`, so that it survives restarts,
    ///    and from this moment issuance under the issuing CA, and signing with the OCSP or TSA key,
    ///    are refused ([`Error::Compromised`]);
    /// 4. the CRL of its issuer is signed again and lists it (not when the issuer is itself the
    ///    compromised issuing CA, whose signatures are worthless).
    pub fn compromise(&self, which: OwnCert, confirmation: &str, actor: &str) -> Result<Revoked, Error> {
        let expected = which.confirmation();
        if confirmation.trim() != expected {
            let draft = AuditDraft::refused(
                actor,
                AuditAction::OwnCertCompromise,
                None,
                &format!("{which}: confirmation did not match"),
                "",
            );
            self.audit.append(draft, self.clock.now())?;
            return Err(Error::ConfirmationMismatch { which, expected });
        }
        if self.is_compromised(which) {
            return Err(Error::Compromised { which });
        }
        let serial: Serial = self
            .db
            .meta_get(which.serial_key())?
            .ok_or_else(|| cerdb::Error::Inconsistent(format!("{} missing", which.serial_key())))?
            .parse()?;
        let rec = self.db.get_meta(&serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))?;
        let reason = which.reason();
        let key = match reason {
            RevocationReason::KeyCompromise => Some(key_digest_of(&self.show(&serial)?.der)?),
            _ => None,
        };
        let now = seconds(self.clock.now());
        let revocation = Revocation { at: now, reason };
        let details = format!("{which} {reason} {}", rec.kind);
        let draft = AuditDraft::ok(actor, AuditAction::OwnCertCompromise, Some(&serial), details);
        // A reload from storage does not run between the revocation and the sets' update.
        let guard = self.compromise_lock.lock().unwrap_or_else(|p| p.into_inner());
        let record = self.audit.commit(vec![draft], now, |chain| {
            Ok(self.db.revoke(&serial, revocation.clone(), key.as_ref(), chain)?)
        })?;
        self.counters.revoked(rec.kind);
        self.db.meta_put(&which.meta_key(), &compromise_value(&serial, now))?;
        self.compromised_certs.write().unwrap_or_else(|p| p.into_inner()).insert(which);
        publish_withdrawn(&self.db, &self.compromised_certs);
        if let Some(key) = key {
            let mut keys = self.compromised.write().unwrap_or_else(|p| p.into_inner());
            keys.entry(key).or_insert_with(|| serial.clone());
        }
        drop(guard);
        tracing::warn!(serial = %serial, "the {which} certificate was revoked for {reason} by {actor}");
        // The CRL of the CA that issued it (the audit signer's is the root's after an issuing CA
        // compromise).
        if !(rec.issuer == CaId::Issuing && self.is_compromised(OwnCert::Issuing)) {
            self.regenerate_crl(rec.issuer, actor)?;
        }
        Ok(Revoked { record, reason_before: rec.revocation.map(|r| r.reason), same_key: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compromise_value_splits_into_the_serial_and_the_time_it_was_written_with() {
        let serial: Serial = "01AB".parse().expect("serial");
        let at = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z").expect("time").with_timezone(&Utc);
        let v = compromise_value(&serial, at);
        let (s, t) = split_compromise_value(&v);
        assert_eq!(s.parse::<Serial>().expect("serial back"), serial);
        assert_eq!(DateTime::parse_from_rfc3339(t.expect("a time")).expect("time back"), at);
        // A value without a time (or an empty one) still gives its serial part.
        assert_eq!(split_compromise_value("01AB"), ("01AB", None));
        assert_eq!(split_compromise_value(""), ("", None));
    }
}
