//! Mailbox validation (S/MIME Baseline Requirements §3.2.2): no certificate for an address whose
//! control has not been shown.
//!
//! 1. An address in one of `[validation] enterprise_domains` counts as validated by the
//!    organisation's own control of the domain (§3.2.2.1); the audit entry of its issuance says so.
//! 2. Any other address needs a recorded validation no older than `reuse_days`: an e-mailed random
//!    value entered back ([`Ca::start_mailbox_validation`], [`Ca::confirm_mailbox_validation`];
//!    §3.2.2.2), or an ACME `email-reply-00` challenge ([`Ca::record_acme_validation`]; RFC 8823).
//!
//! The random value has 128 bits, is stored only as its SHA-256, is used once (the pending record
//! is removed by the confirmation that matches it) and lives at most `code_ttl_hours` (≤ 24).
//! Records are kept in cerdb's enrolment records, so every engine has them.

use cerdb::acme_store::AcmeKind;
use serde::{Deserialize, Serialize};

use super::*;

/// `[validation]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Domains the organisation controls: their addresses count as validated (§3.2.2.1).
    pub enterprise_domains: Vec<String>,
    /// How long a completed validation is reused, in days (default 30).
    pub reuse_days: u32,
    /// How long an e-mailed value may be entered back, in hours (default and at most 24).
    pub code_ttl_hours: u32,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { enterprise_domains: Vec::new(), reuse_days: 30, code_ttl_hours: 24 }
    }
}

impl ValidationConfig {
    /// Refuses values outside the rules: no reuse period, a value living longer than 24 hours, a
    /// domain that is not a domain.
    pub fn validate(&self) -> Result<(), Error> {
        if self.reuse_days == 0 || self.reuse_days > 825 {
            return Err(Error::Config(format!(
                "[validation] reuse_days = {}: expected 1 to 825 days",
                self.reuse_days
            )));
        }
        if self.code_ttl_hours == 0 || self.code_ttl_hours > 24 {
            return Err(Error::Config(format!(
                "[validation] code_ttl_hours = {}: expected 1 to 24 hours",
                self.code_ttl_hours
            )));
        }
        for d in &self.enterprise_domains {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.split('.').count() >= 2
                && d.split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(Error::Config(format!(
                    "[validation] enterprise_domains: {d:?} is not a domain name"
                )));
            }
        }
        Ok(())
    }

    /// The enterprise domain an address belongs to (the domain itself, not its subdomains).
    pub fn enterprise_domain_of(&self, email: &EmailAddress) -> Option<&str> {
        let domain = email.lookup_key();
        let domain = domain.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        self.enterprise_domains.iter().find(|d| d.eq_ignore_ascii_case(&domain)).map(String::as_str)
    }
}

/// How control of a mailbox was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValidationMethod {
    /// A random value mailed to the address was entered back (§3.2.2.2).
    EmailedValue,
    /// An ACME `email-reply-00` challenge (RFC 8823).
    AcmeEmailReply,
}

impl ValidationMethod {
    /// As shown and audited.
    pub fn name(self) -> &'static str {
        match self {
            ValidationMethod::EmailedValue => "emailed-value",
            ValidationMethod::AcmeEmailReply => "acme-email-reply-00",
        }
    }
}

/// A completed validation of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxValidation {
    /// The address.
    pub email: EmailAddress,
    /// How.
    pub method: ValidationMethod,
    /// When the proof came back.
    pub validated_at: DateTime<Utc>,
    /// Who asked for it (`cli:…`, `console:…`, `acme:<account>`).
    pub actor: String,
    /// For an ACME validation, the account that answered the challenge (only it may reuse it).
    pub acme_account: Option<String>,
}

/// A value mailed and not yet entered back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingValue {
    /// SHA-256 of the value, hex.
    sha256: String,
    sent_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    actor: String,
}

/// Why an address may get a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxEvidence {
    /// Its domain is one of the enterprise domains (§3.2.2.1).
    EnterpriseDomain(String),
    /// A recorded validation within the reuse period.
    Validated(MailboxValidation),
}

impl MailboxEvidence {
    /// For the audit entry of an issuance.
    pub fn audit_note(&self) -> String {
        match self {
            MailboxEvidence::EnterpriseDomain(d) => {
                format!("mailbox: enterprise domain {d} (S/MIME BR 3.2.2.1)")
            }
            MailboxEvidence::Validated(v) => format!(
                "mailbox: {} validated {}",
                v.method.name(),
                v.validated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

impl Ca {
    /// Sets `[validation]`: from now on every issuance from a subscriber's key checks mailbox
    /// control. The `pki` binary always sets it; a CA opened without it (library tests) does not
    /// check.
    pub fn with_mailbox_validation(mut self, cfg: ValidationConfig) -> Result<Ca, Error> {
        cfg.validate()?;
        self.validation = Some(cfg);
        Ok(self)
    }

    /// The `[validation]` settings, when set.
    pub fn validation_config(&self) -> Option<&ValidationConfig> {
        self.validation.as_ref()
    }

    /// The recorded validation of an address, however old.
    pub fn mailbox_validation(&self, email: &EmailAddress) -> Result<Option<MailboxValidation>, Error> {
        let raw = self.db.acme_records().acme(AcmeKind::Validation, &email.lookup_key())?;
        raw.map(|r| {
            serde_json::from_slice(&r)
                .map_err(|e| Error::Storage(cerdb::Error::Corrupt(format!("validation: {e}"))))
        })
        .transpose()
    }

    /// Every recorded validation, oldest first.
    pub fn mailbox_validations(&self) -> Result<Vec<MailboxValidation>, Error> {
        let all = self.db.acme_records().acme_records(AcmeKind::Validation)?;
        let mut v: Vec<MailboxValidation> = all
            .iter()
            .map(|(_, r)| {
                serde_json::from_slice(r)
                    .map_err(|e| Error::Storage(cerdb::Error::Corrupt(format!("validation: {e}"))))
            })
            .collect::<Result<_, _>>()?;
        v.sort_by_key(|m| m.validated_at);
        Ok(v)
    }

    /// Why `email` may get a certificate now, or [`Error::MailboxNotValidated`]. `Ok(None)` when
    /// this CA does not check ([`Ca::with_mailbox_validation`] not called).
    pub fn mailbox_evidence(&self, email: &EmailAddress) -> Result<Option<MailboxEvidence>, Error> {
        let Some(cfg) = &self.validation else { return Ok(None) };
        if let Some(d) = cfg.enterprise_domain_of(email) {
            return Ok(Some(MailboxEvidence::EnterpriseDomain(d.to_string())));
        }
        let now = self.clock.now();
        match self.mailbox_validation(email)? {
            Some(v)
                if v.validated_at + Duration::days(i64::from(cfg.reuse_days)) > now
                    && v.validated_at <= now =>
            {
                Ok(Some(MailboxEvidence::Validated(v)))
            }
            Some(v) => Err(Error::MailboxNotValidated {
                email: email.clone(),
                why: format!(
                    "its validation of {} is older than {} days",
                    v.validated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    cfg.reuse_days
                ),
            }),
            None => {
                Err(Error::MailboxNotValidated { email: email.clone(), why: "it was never validated".into() })
            }
        }
    }

    /// Starts an e-mailed validation: a fresh 128-bit value (32 hex digits) for `email`, stored as
    /// its SHA-256 (a new value replaces an earlier one), then handed to `mail`, which sends it to
    /// the address. The value is stored before it leaves, so that a holder who answers at once is
    /// not refused; if `mail` fails, the stored value is withdrawn and the audit entry says it was
    /// not sent. Audited either way.
    pub fn start_mailbox_validation(
        &self,
        email: &EmailAddress,
        actor: &str,
        mail: impl FnOnce(&str) -> Result<(), String>,
    ) -> Result<(), Error> {
        let cfg = self.validation.clone().unwrap_or_default();
        let mut bytes = [0u8; 16];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| Error::Certificate("no randomness for the validation value".into()))?;
        let value = hex::encode(bytes);
        let now = self.clock.now();
        let pending = PendingValue {
            sha256: sha256_hex(&value),
            sent_at: now,
            expires_at: now + Duration::hours(i64::from(cfg.code_ttl_hours.min(24))),
            actor: actor.to_string(),
        };
        let enc = serde_json::to_vec(&pending).map_err(|e| Error::Certificate(e.to_string()))?;
        let store = self.db.acme_records();
        let key = email.lookup_key();
        store.put_acme(AcmeKind::ValidationCode, &key, now, &enc)?;
        if let Err(why) = mail(&value) {
            // Only this value is withdrawn, not one that a later request stored meanwhile.
            if store.acme(AcmeKind::ValidationCode, &key)?.as_deref() == Some(&enc[..]) {
                store.remove_acme(AcmeKind::ValidationCode, &key)?;
            }
            self.audit.append(
                AuditDraft::refused(
                    actor,
                    AuditAction::MailboxValidation,
                    None,
                    "the mail relay did not take the value",
                    format!("{email} value not sent"),
                ),
                now,
            )?;
            return Err(Error::ValidationMail { email: email.clone(), why });
        }
        self.audit.append(
            AuditDraft::ok(actor, AuditAction::MailboxValidation, None, format!("{email} value sent")),
            now,
        )?;
        Ok(())
    }

    /// Completes an e-mailed validation with the value the holder entered back: it must match,
    /// be unexpired and unused. Records the validation (audited) and returns it.
    pub fn confirm_mailbox_validation(
        &self,
        email: &EmailAddress,
        value: &str,
        actor: &str,
    ) -> Result<MailboxValidation, Error> {
        let now = self.clock.now();
        let store = self.db.acme_records();
        let key = email.lookup_key();
        let refuse = |why: &str| -> Error {
            let _ = self.audit.append(
                AuditDraft::refused(
                    actor,
                    AuditAction::MailboxValidation,
                    None,
                    why,
                    format!("{email} confirm"),
                ),
                now,
            );
            Error::ValidationValue(why.to_string())
        };
        let Some(raw) = store.acme(AcmeKind::ValidationCode, &key)? else {
            return Err(refuse("no value is pending for this address: send one with `pki validate send`"));
        };
        let pending: PendingValue =
            serde_json::from_slice(&raw).map_err(|e| Error::Storage(cerdb::Error::Corrupt(e.to_string())))?;
        let given = sha256_hex(value.trim().to_ascii_lowercase().as_str());
        // Digests of a 128-bit value are compared: timing reveals nothing about the value.
        if given != pending.sha256 {
            return Err(refuse("the value does not match the one mailed"));
        }
        if now > pending.expires_at {
            let _ = store.remove_acme(AcmeKind::ValidationCode, &key);
            return Err(refuse("the value has expired: send a new one with `pki validate send`"));
        }
        // Used once: whoever removes the pending value first completes the validation.
        if !store.remove_acme(AcmeKind::ValidationCode, &key)? {
            return Err(refuse("the value was used already"));
        }
        self.store_validation(email, ValidationMethod::EmailedValue, actor, None, now)
    }

    /// Records that the ACME account `account` answered an `email-reply-00` challenge for `email`.
    pub fn record_acme_validation(
        &self,
        email: &EmailAddress,
        account: &str,
    ) -> Result<MailboxValidation, Error> {
        let now = self.clock.now();
        self.store_validation(
            email,
            ValidationMethod::AcmeEmailReply,
            &format!("acme:{account}"),
            Some(account),
            now,
        )
    }

    fn store_validation(
        &self,
        email: &EmailAddress,
        method: ValidationMethod,
        actor: &str,
        account: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<MailboxValidation, Error> {
        let v = MailboxValidation {
            email: email.clone(),
            method,
            validated_at: now,
            actor: actor.to_string(),
            acme_account: account.map(str::to_string),
        };
        let enc = serde_json::to_vec(&v).map_err(|e| Error::Certificate(e.to_string()))?;
        self.db.acme_records().put_acme(AcmeKind::Validation, &email.lookup_key(), now, &enc)?;
        self.audit.append(
            AuditDraft::ok(
                actor,
                AuditAction::MailboxValidation,
                None,
                format!("{email} validated by {}", method.name()),
            ),
            now,
        )?;
        Ok(v)
    }

    /// [`Ca::mailbox_evidence`] for each request; the first refusal is audited and returned.
    pub(super) fn evidence_for<'a>(
        &self,
        emails: impl Iterator<Item = (&'a EmailAddress, Usage)>,
        actor: &str,
    ) -> Result<Vec<String>, Error> {
        let mut notes = Vec::new();
        for (email, usage) in emails {
            match self.mailbox_evidence(email) {
                Ok(Some(e)) => notes.push(format!(" {}", e.audit_note())),
                Ok(None) => notes.push(String::new()),
                Err(e) => {
                    self.audit.append(
                        AuditDraft::refused(
                            actor,
                            AuditAction::Issue,
                            None,
                            &e.to_string(),
                            format!("{email} {usage}"),
                        ),
                        self.clock.now(),
                    )?;
                    return Err(e);
                }
            }
        }
        Ok(notes)
    }
}
