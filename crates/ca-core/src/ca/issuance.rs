//! Issuance (after Boulder's cycle): check the request → draw a fresh serial → build the TBS
//! certificate from the profile → lint it against the profile → sign it in hsm-sim → store the
//! certificate and its audit entry in one durable write, refusing a serial used before → return
//! it. A certificate is returned only once it is on disk; a serial is never used twice.

use super::*;

/// A fresh serial: 128 bits from the CSPRNG, positive. That no certificate has it yet is checked
/// when the certificate is stored (`CertStore::store_issued`, in the same atomic write that stores
/// it), not here: the signing threads never wait for the store.
pub(super) fn new_serial(rng: &SystemRandom) -> Result<Serial, Error> {
    for _ in 0..8 {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).map_err(|_| Error::Certificate("no randomness for the serial".into()))?;
        if let Ok(serial) = Serial::from_bytes(&bytes) {
            return Ok(serial);
        }
    }
    Err(Error::Certificate("the random source gave only zero serials".into()))
}

/// A certificate just signed, with the subject and validity its lint read from the TBS.
pub(super) struct Signed {
    pub(super) der: Vec<u8>,
    pub(super) subject: String,
    pub(super) not_before: DateTime<Utc>,
    pub(super) not_after: DateTime<Utc>,
}

/// Builds, lints and signs one certificate.
pub(super) fn make_cert(
    profile: &dyn Profile,
    ctx: &ProfileContext,
    subject: &impl PublicKeyData,
    signing: Signing<'_>,
) -> Result<Signed, Error> {
    let params = profile.params(ctx)?;
    // What the stored record needs from the TBS, kept from the lint's parse rather than parsing
    // the signed certificate again.
    let seen = Mutex::new(None);
    let lint = |tbs: &[u8]| -> Result<(), String> {
        let t = parse_tbs(tbs)?;
        profile.lint(&t, ctx)?;
        let time = |t: ASN1Time| DateTime::from_timestamp(t.timestamp(), 0).ok_or("validity out of range");
        let summary =
            (t.subject().to_string(), time(t.validity().not_before)?, time(t.validity().not_after)?);
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
        Ok(())
    };
    let (result, failure, key_store) = match signing {
        Signing::SelfSigned(key) => {
            let lk = LintingKey::new(key, Some(&lint));
            let r = params.self_signed(&lk);
            (r, lk.take_failure(), lk.take_key_store_failure())
        }
        Signing::By(ca) => {
            let issuer = Issuer::from_params(&ca.params, LintingKey::new(&ca.key, Some(&lint)));
            let r = params.signed_by(subject, &issuer);
            (r, issuer.key().take_failure(), issuer.key().take_key_store_failure())
        }
    };
    if let (Err(_), Some(e)) = (&result, key_store) {
        return Err(Error::Hsm(e));
    }
    match (result, failure) {
        (Ok(cert), _) => {
            let (subject, not_before, not_after) = seen
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .ok_or_else(|| Error::Certificate("signed without the lint".into()))?;
            Ok(Signed { der: cert.der().to_vec(), subject, not_before, not_after })
        }
        (Err(_), Some(lint_msg)) => Err(Error::Lint(lint_msg)),
        (Err(e), None) => Err(Error::Certificate(e.to_string())),
    }
}

#[allow(clippy::too_many_arguments)] // one call site per certificate kind; a struct would only rename them
pub(super) fn record_of(
    signed: Signed,
    serial: Serial,
    kind: CertKind,
    email: Option<EmailAddress>,
    issuer: CaId,
    key_type: String,
    escrow_key: Option<String>,
    now: DateTime<Utc>,
) -> Result<CertRecord, Error> {
    Ok(CertRecord {
        fingerprint: Fingerprint::of(&signed.der),
        serial,
        kind,
        email,
        subject: signed.subject,
        issuer,
        not_before: signed.not_before,
        not_after: signed.not_after,
        issued_at: now,
        key_type,
        escrow_key,
        revocation: None,
        der: signed.der,
    })
}

/// Maps `f` over `items` on every core (in order); small inputs stay on this thread. The threads
/// it starts run at a lower scheduling priority ([`yield_to_storing`]).
pub(super) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if threads < 2 || items.len() < 16 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                scope.spawn(move || {
                    yield_to_storing();
                    c.iter().map(f).collect::<Vec<R>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// How much lower than its caller a signing thread of [`par_map`] runs (nice levels).
pub(super) const SIGNING_NICE_STEP: i32 = 10;

/// Lowers this thread's scheduling priority by [`SIGNING_NICE_STEP`] nice levels (at most to 19).
///
/// Batches are stored one at a time (their audit entries are chained in order) while the next
/// batches are signed on every core. With equal priorities the storing
/// thread shared the cores evenly with the four to six signing threads of the batches in flight,
/// and the store of a batch, not the CPU, set the pace; with signing threads that yield to it the
/// million-certificate load went from 10,433 to 11,804 certificates/s. In `pki serve` the HTTP
/// workers run only five levels lower than the process, above these threads, so lookups are not
/// held back by a batch being signed. Best effort: lowering one's own priority needs no
/// permission, and if it fails nothing changes.
pub(super) fn yield_to_storing() {
    crate::lower_own_priority(SIGNING_NICE_STEP);
}

/// The [`KeyDigest`] of a certificate's subject public key.
pub(super) fn key_digest_of(der: &[u8]) -> Result<KeyDigest, Error> {
    let (_, x) = X509Certificate::from_der(der).map_err(|e| Error::Certificate(e.to_string()))?;
    Ok(KeyDigest::of(&x.public_key().subject_public_key.data))
}

impl Ca {
    /// When a subscriber certificate issued at `now` would end: `[ca.leaf] validity_days` on,
    /// or the issuing CA's end if that comes first.
    pub fn leaf_not_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        (now + Duration::days(i64::from(self.cfg.leaf.validity_days))).min(self.issuing.not_after)
    }

    pub(super) fn leaf_ctx(&self, serial: Serial, key: SubjectKeyKind, now: DateTime<Utc>) -> ProfileContext {
        let end = self.leaf_not_after(now);
        ProfileContext {
            serial,
            not_before: now,
            not_after: end,
            key,
            ocsp_url: Some(self.cfg.ocsp_url()),
            ca_issuers_url: Some(self.cfg.ca_cert_url(CaId::Issuing)),
            crl_url: Some(self.cfg.crl_url(CaId::Issuing)),
        }
    }

    /// Issues one certificate from a CSR.
    pub fn issue(&self, req: &IssueRequest, actor: &str) -> Result<Issued, Error> {
        let mut v = self.issue_many(std::slice::from_ref(req), actor)?;
        v.pop().ok_or_else(|| Error::Certificate("nothing issued".into()))
    }

    /// Issues certificates from CSRs; all are stored in one durable transaction (one flush for
    /// the batch). Checking and signing run on every core for larger batches. If any request is
    /// refused, nothing is stored and the refusal is in the audit log.
    pub fn issue_many(&self, reqs: &[IssueRequest], actor: &str) -> Result<Vec<Issued>, Error> {
        let notes = self.evidence_for(reqs.iter().map(|r| (&r.email, r.usage)), actor)?;
        self.issue_batch(
            reqs,
            actor,
            |r| (&r.email, r.usage),
            &notes,
            |req, now| {
                let checked = check_csr(&req.csr, &req.email, req.usage, self.cfg.leaf.min_rsa_bits)?;
                self.prepare(&req.email, req.usage, checked, now)
            },
        )
    }

    /// Issues certificates for public keys whose private keys the caller generated and holds:
    /// the same path as [`Ca::issue_many`] (key rules, serials, profile lint, signing, one
    /// durable transaction with the audit entries) without a CSR, and so without a proof of
    /// possession. For callers that made the keys themselves — `pki cerdb load-test-data`'s
    /// synthetic subscribers — never for keys from a subscriber; the audit entries say
    /// "own key".
    pub fn issue_many_own_keys(&self, reqs: &[OwnKeyRequest], actor: &str) -> Result<Vec<Issued>, Error> {
        self.issue_batch(
            reqs,
            actor,
            |r| (&r.email, r.usage),
            &vec![" own key, no mailbox validation".to_string(); reqs.len()],
            |req, now| {
                let checked = crate::csr::check_own_key(&req.spki, req.usage, self.cfg.leaf.min_rsa_bits)?;
                self.prepare(&req.email, req.usage, checked, now)
            },
        )
    }

    /// The batch issuance both paths share: `prepare` on every core, then one transaction.
    pub(super) fn issue_batch<R: Sync>(
        &self,
        reqs: &[R],
        actor: &str,
        names: impl Fn(&R) -> (&EmailAddress, Usage),
        notes: &[String],
        prepare: impl Fn(&R, DateTime<Utc>) -> Result<CertRecord, Error> + Sync,
    ) -> Result<Vec<Issued>, Error> {
        self.refuse_if_compromised(OwnCert::Issuing)?;
        let now = seconds(self.clock.now());
        let prepared = par_map(reqs, |req| prepare(req, now));
        let mut records = Vec::with_capacity(reqs.len());
        let mut drafts = Vec::with_capacity(reqs.len());
        let mut refused = None;
        for ((req, result), note) in reqs.iter().zip(prepared).zip(notes) {
            let (email, usage) = names(req);
            match result {
                Ok(rec) => {
                    let details =
                        format!("{email} {usage} {} sha256:{};{note}", rec.key_type, rec.fingerprint);
                    drafts.push(AuditDraft::ok(actor, AuditAction::Issue, Some(&rec.serial), details));
                    records.push(rec);
                }
                Err(e) if refused.is_none() => refused = Some((format!("{email} {usage}{note}"), e)),
                Err(_) => {}
            }
        }
        if let Some((details, e)) = refused {
            // The others of the batch were signed: their serials are never used again.
            self.retire(&records);
            self.audit
                .append(AuditDraft::refused(actor, AuditAction::Issue, None, &e.to_string(), details), now)?;
            return Err(e);
        }
        // Checked and encoded before the store's audit lock is taken, and flushed after it is
        // released: another batch's write goes on meanwhile (a flush covers whatever was written
        // before it, so this batch is durable when it returns, whichever thread's flush wrote it).
        let stored = self.db.check_issued(&records).map_err(Error::from).and_then(|checked| {
            self.audit.commit(drafts, now, |recs| Ok(self.db.store_checked_unflushed(&checked, recs)?))
        });
        self.retire_if_refused(&records, stored)?;
        self.db.flush()?;
        self.counters.issued(&records);
        Ok(records.into_iter().map(|record| Issued { record }).collect())
    }

    /// When storing signed certificates failed, records their serials as used ([`Ca::retire`])
    /// before passing the failure on.
    pub(super) fn retire_if_refused(
        &self,
        records: &[CertRecord],
        stored: Result<(), Error>,
    ) -> Result<(), Error> {
        if stored.is_err() {
            self.retire(records);
        }
        stored
    }

    /// Records the serials of signed certificates that are not stored ([`CertDb::retire_serials`]):
    /// a serial that was signed is never signed again, even into a certificate nobody received.
    /// Best effort beside the refusal being reported: a failure is logged.
    pub(super) fn retire(&self, records: &[CertRecord]) {
        if records.is_empty() {
            return;
        }
        let serials: Vec<Serial> = records.iter().map(|r| r.serial.clone()).collect();
        if let Err(e) = self.db.retire_serials(&serials) {
            tracing::error!(error = %e, count = serials.len(), "could not record the serials of certificates not stored");
        }
    }

    /// Signs the certificate of a checked key (not yet stored), unless the key was reported
    /// compromised ([`Ca::revoke`] for keyCompromise): the S/MIME Baseline Requirements (6.1.1.3)
    /// have the CA refuse a key it knows to be compromised. A request checked before such a
    /// revocation was stored may still be issued; one checked after it never is.
    pub(super) fn prepare(
        &self,
        email: &EmailAddress,
        usage: Usage,
        checked: CheckedCsr,
        now: DateTime<Utc>,
    ) -> Result<CertRecord, Error> {
        let compromised = self.compromised.read().unwrap_or_else(|p| p.into_inner());
        if let Some(serial) = compromised.get(&KeyDigest::of(&checked.key.raw)) {
            return Err(Error::CsrKeyCompromised { serial: serial.clone() });
        }
        drop(compromised);
        let serial = new_serial(&self.rng)?;
        let ctx = self.leaf_ctx(serial.clone(), checked.kind, now);
        let profile = SubscriberProfile { email: email.clone(), usage };
        let der = make_cert(&profile, &ctx, &checked.key, Signing::By(&self.issuing))?;
        record_of(
            der,
            serial,
            usage.into(),
            Some(email.clone()),
            CaId::Issuing,
            checked.kind.name(),
            None,
            now,
        )
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn signing_threads_run_below_their_caller() {
        let me = Some(rustix::thread::gettid());
        let caller = rustix::process::getpriority_process(me).expect("own priority");
        let items: Vec<u32> = (0..64).collect();
        let seen = super::par_map(&items, |_| {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("priority")
        });
        let spawned = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) >= 2;
        let want = if spawned { (caller + super::SIGNING_NICE_STEP).min(19) } else { caller };
        assert!(seen.iter().all(|p| *p == want), "caller {caller}, signing threads {seen:?}");
        // The caller itself is unchanged, and small inputs stay on it.
        assert_eq!(rustix::process::getpriority_process(me).expect("own priority"), caller);
        assert_eq!(super::par_map(&items[..3], |_| 1).len(), 3);
    }
}
