//! The CA hierarchy: creating the root, the issuing CA, the OCSP signer and the TSA at `init`, and
//! loading them at `open`.

use super::*;

/// Records the keys of certificates revoked for keyCompromise before [`Ca::revoke`] recorded them
/// itself (databases written before), once per database: afterwards the meta key
/// [`META_COMPROMISED_KEYS`] says it was done.
pub(super) fn record_earlier_compromised_keys(db: &CertDb) -> Result<(), Error> {
    if db.meta_get(META_COMPROMISED_KEYS)?.is_some() {
        return Ok(());
    }
    let mut keys = Vec::new();
    for ca in [CaId::Root, CaId::Issuing] {
        for rec in db.revoked_by(ca)? {
            if rec.revocation.is_some_and(|r| r.reason == RevocationReason::KeyCompromise) {
                let der = db.get(&rec.serial)?.ok_or_else(|| Error::UnknownSerial(rec.serial.clone()))?.der;
                keys.push((key_digest_of(&der)?, rec.serial));
            }
        }
    }
    db.record_compromised(&keys)?;
    db.meta_put(META_COMPROMISED_KEYS, "recorded at revocation")?;
    Ok(())
}

pub(super) fn ski_of(der: &[u8]) -> Result<Vec<u8>, Error> {
    let (_, x) = X509Certificate::from_der(der).map_err(|e| Error::Certificate(e.to_string()))?;
    x.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .ok_or_else(|| Error::Certificate("CA certificate has no subjectKeyIdentifier".into()))
}

pub(super) fn issuer_params(subject: &SubjectName, ca_der: &[u8]) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn_of(subject);
    p.key_identifier_method = KeyIdMethod::PreSpecified(ski_of(ca_der)?);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

pub(super) fn seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

pub(super) fn get_or_generate(
    hsm: &dyn KeyCustody,
    h: &KeyHandle,
    kt: KeyType,
    purpose: KeyPurpose,
) -> Result<Arc<dyn Signer>, Error> {
    if !hsm.contains(h)? {
        hsm.generate(h, kt, purpose)?;
    }
    Ok(hsm.signer(h)?)
}

impl Ca {
    /// Creates the hierarchy on first use; a second call changes nothing and says so.
    pub fn init(
        db: CertDb,
        hsm: Arc<dyn KeyCustody>,
        cfg: CaConfig,
        clock: Arc<dyn Clock>,
        actor: &str,
    ) -> Result<(Ca, InitOutcome), Error> {
        if db.meta_get(META_INIT)?.is_some() {
            return Ok((Ca::open(db, hsm, cfg, clock)?, InitOutcome::AlreadyInitialised));
        }
        cfg.validate_for_init()?;
        let now = seconds(clock.now());
        let rng = SystemRandom::new();

        let root_key =
            HsmKey::new(get_or_generate(&*hsm, &handle(H_ROOT), cfg.root.key_type, KeyPurpose::CaSigning)?);
        let issuing_key = HsmKey::new(get_or_generate(
            &*hsm,
            &handle(H_ISSUING),
            cfg.issuing.key_type,
            KeyPurpose::CaSigning,
        )?);
        let ocsp_key = HsmKey::new(get_or_generate(
            &*hsm,
            &handle(H_OCSP),
            cfg.ocsp_signer.key_type,
            KeyPurpose::OcspSigning,
        )?);
        let tsa_key =
            HsmKey::new(get_or_generate(&*hsm, &handle(H_TSA), cfg.tsa.key_type, KeyPurpose::TsaSigning)?);

        let ctx_for = |s: &KeySettings,
                       key: &HsmKey,
                       serial: Serial,
                       parent_end: Option<DateTime<Utc>>,
                       urls: (Option<String>, Option<String>, Option<String>)| {
            let mut end = now + Duration::days(i64::from(s.validity_days));
            if let Some(pe) = parent_end {
                end = end.min(pe);
            }
            ProfileContext {
                serial,
                not_before: now,
                not_after: end,
                key: SubjectKeyKind::from_key_type(key.signer.key_type()),
                ocsp_url: urls.0,
                ca_issuers_url: urls.1,
                crl_url: urls.2,
            }
        };
        let mut records = Vec::new();

        // Root.
        let root_ctx = ctx_for(&cfg.root, &root_key, new_serial(&rng)?, None, (None, None, None));
        let root_der = make_cert(
            &RootCaProfile { subject: cfg.root.subject.clone() },
            &root_ctx,
            &root_key,
            Signing::SelfSigned(&root_key),
        )?;
        let root = LoadedCa {
            id: CaId::Root,
            params: issuer_params(&cfg.root.subject, &root_der.der)?,
            der: root_der.der.clone(),
            key: root_key.clone(),
            not_after: root_ctx.not_after,
        };
        records.push(record_of(
            root_der,
            root_ctx.serial.clone(),
            CertKind::RootCa,
            None,
            CaId::Root,
            root_key.signer.key_type().to_string(),
            None,
            now,
        )?);

        let from_root = (None, Some(cfg.ca_cert_url(CaId::Root)), Some(cfg.crl_url(CaId::Root)));
        // Issuing CA, signed by the root.
        let iss_ctx =
            ctx_for(&cfg.issuing, &issuing_key, new_serial(&rng)?, Some(root.not_after), from_root.clone());
        let iss_der = make_cert(
            &IssuingCaProfile { subject: cfg.issuing.subject.clone() },
            &iss_ctx,
            &issuing_key,
            Signing::By(&root),
        )?;
        let issuing = LoadedCa {
            id: CaId::Issuing,
            params: issuer_params(&cfg.issuing.subject, &iss_der.der)?,
            der: iss_der.der.clone(),
            key: issuing_key.clone(),
            not_after: iss_ctx.not_after,
        };
        records.push(record_of(
            iss_der,
            iss_ctx.serial.clone(),
            CertKind::IssuingCa,
            None,
            CaId::Root,
            issuing_key.signer.key_type().to_string(),
            None,
            now,
        )?);

        // Delegated OCSP signer, signed by the issuing CA (whose certificates it answers for).
        let ocsp_ctx = ctx_for(
            &cfg.ocsp_signer,
            &ocsp_key,
            new_serial(&rng)?,
            Some(issuing.not_after),
            (None, Some(cfg.ca_cert_url(CaId::Issuing)), Some(cfg.crl_url(CaId::Issuing))),
        );
        let ocsp_der = make_cert(
            &OcspSignerProfile { subject: cfg.ocsp_signer.subject.clone() },
            &ocsp_ctx,
            &ocsp_key,
            Signing::By(&issuing),
        )?;
        records.push(record_of(
            ocsp_der,
            ocsp_ctx.serial.clone(),
            CertKind::OcspSigner,
            None,
            CaId::Issuing,
            ocsp_key.signer.key_type().to_string(),
            None,
            now,
        )?);

        // TSA, signed by the root: never by the S/MIME issuing CA.
        let tsa_ctx = ctx_for(&cfg.tsa, &tsa_key, new_serial(&rng)?, Some(root.not_after), from_root);
        let tsa_der = make_cert(
            &TsaProfile { subject: cfg.tsa.subject.clone() },
            &tsa_ctx,
            &tsa_key,
            Signing::By(&root),
        )?;
        records.push(record_of(
            tsa_der,
            tsa_ctx.serial.clone(),
            CertKind::Tsa,
            None,
            CaId::Root,
            tsa_key.signer.key_type().to_string(),
            None,
            now,
        )?);

        let details = format!(
            "root {} issuing {} ocsp {} tsa {}",
            records[0].serial, records[1].serial, records[2].serial, records[3].serial
        );
        let audit = AuditLog::open(db.clone(), AuditKey::load_or_create(&db, &*hsm)?)?;
        audit.commit(vec![AuditDraft::ok(actor, AuditAction::Init, None, details)], now, |recs| {
            Ok(db.store_issued(&records, recs)?)
        })?;
        let subj = |s: &SubjectName| serde_json::to_string(s).map_err(|e| Error::Config(e.to_string()));
        db.meta_put("ca.root.serial", &records[0].serial.to_string())?;
        db.meta_put("ca.root.subject", &subj(&cfg.root.subject)?)?;
        db.meta_put("ca.issuing.serial", &records[1].serial.to_string())?;
        db.meta_put("ca.issuing.subject", &subj(&cfg.issuing.subject)?)?;
        db.meta_put("ca.ocsp.serial", &records[2].serial.to_string())?;
        db.meta_put("ca.tsa.serial", &records[3].serial.to_string())?;
        db.meta_put(META_INIT, &now.to_rfc3339())?;
        drop(audit);
        let ca = Ca::open(db, hsm, cfg, clock)?;
        ca.regenerate_crl(CaId::Root, actor)?;
        ca.regenerate_crl(CaId::Issuing, actor)?;
        ca.tls_server_certificate()?;
        Ok((ca, InitOutcome::Created))
    }

    /// Opens an initialised CA.
    pub fn open(
        db: CertDb,
        hsm: Arc<dyn KeyCustody>,
        cfg: CaConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Ca, Error> {
        cfg.validate()?;
        if db.meta_get(META_INIT)?.is_none() {
            return Err(Error::NotInitialised);
        }
        record_earlier_compromised_keys(&db)?;
        let cert_of = |key: &str| -> Result<CertRecord, Error> {
            let s: Serial = db
                .meta_get(key)?
                .ok_or_else(|| cerdb::Error::Inconsistent(format!("{key} missing")))?
                .parse()?;
            db.get(&s)?.ok_or(Error::UnknownSerial(s))
        };
        let subject_of = |key: &str| -> Result<SubjectName, Error> {
            let text =
                db.meta_get(key)?.ok_or_else(|| cerdb::Error::Inconsistent(format!("{key} missing")))?;
            serde_json::from_str(&text).map_err(|e| cerdb::Error::Corrupt(e.to_string()).into())
        };
        let load = |id: CaId, serial_key: &str, subject_key: &str, h: &str| -> Result<LoadedCa, Error> {
            let rec = cert_of(serial_key)?;
            Ok(LoadedCa {
                id,
                params: issuer_params(&subject_of(subject_key)?, &rec.der)?,
                key: HsmKey::new(hsm.signer(&handle(h))?),
                not_after: rec.not_after,
                der: rec.der,
            })
        };
        let root = load(CaId::Root, "ca.root.serial", "ca.root.subject", H_ROOT)?;
        let issuing = load(CaId::Issuing, "ca.issuing.serial", "ca.issuing.subject", H_ISSUING)?;
        let ocsp = RwLock::new(Arc::new(load_signer(&db, OwnCert::Ocsp)?));
        let tsa = RwLock::new(Arc::new(load_signer(&db, OwnCert::Tsa)?));
        // The feed's end first: what is revoked after it is read again at the next look.
        let seen_change = std::sync::atomic::AtomicU64::new(db.feed().last_change()?);
        let compromised = Arc::new(RwLock::new(db.compromised_keys()?.into_iter().collect()));
        let compromised_certs = load_compromised(&db)?;
        let crl_publication = crl::Publication::load(&db)?;
        publish_withdrawn(&db, &compromised_certs);
        Ok(Ca {
            audit: AuditLog::open(db.clone(), AuditKey::load_or_create(&db, &*hsm)?)?,
            db,
            hsm,
            cfg,
            escrow: EscrowConfig::default(),
            validation: None,
            clock,
            root,
            issuing,
            ocsp,
            tsa,
            compromised,
            compromised_certs,
            seen_change,
            compromise_lock: Mutex::new(()),
            crl_lock: Mutex::new(()),
            crl_publication,
            tls_lock: Mutex::new(()),
            ocsp_renew_lock: Mutex::new(()),
            counters: Default::default(),
            audit_signer_lock: Mutex::new(()),
            rng: SystemRandom::new(),
        })
    }
}
