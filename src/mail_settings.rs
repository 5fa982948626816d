//! `[mail]`: sealed mail — the enterprise domains sender identities may use, the invitation sent
//! to addresses without a certificate, an optional archive certificate, body limits — and
//! `[mail.relay]` ([`crate::mail_relay::RelaySettings`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[mail]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// Deprecated: the organisation's own mail domains are `[validation] enterprise_domains`,
    /// which sender identities use too. Still read (added to that list) with a warning.
    pub enterprise_domains: Vec<String>,
    /// The subject of the invitation sent instead of a sealed message (`"fallback": "invitation"`).
    pub invitation_subject: String,
    /// Its plain text.
    pub invitation_text: String,
    /// A certificate of the bank (PEM or DER file) every sealed message is also encrypted to, so
    /// the bank can read what it sent.
    pub archive_certificate: Option<PathBuf>,
    /// The largest body of `POST /api/v1/mail/seal`, MiB.
    pub max_body_mib: usize,
    /// The largest body of `POST /api/v1/mail/seal/bulk`, MiB.
    pub max_bulk_body_mib: usize,
    /// The most bulk requests handled at a time (1 to 1024); more are answered 503 with
    /// `Retry-After` before their body is read. Each holds about three times its body in memory
    /// at the peak.
    pub max_bulk_at_once: usize,
    /// The SMTP relay `"deliver": true` sends through.
    pub relay: crate::mail_relay::RelaySettings,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            enterprise_domains: Vec::new(),
            invitation_subject: "Receive your messages from us encrypted".into(),
            invitation_text: "We would like to send you your statements and codes signed and encrypted, \
                              so that only you can read them. Ask us for a certificate for your address."
                .into(),
            archive_certificate: None,
            max_body_mib: 16,
            max_bulk_body_mib: 256,
            max_bulk_at_once: sealed_mail::MailLimits::default().max_bulk_at_once,
            relay: Default::default(),
        }
    }
}

impl MailSettings {
    /// The enterprise domains sender identities may use, lower-cased: `[validation]
    /// enterprise_domains` (the one list of the organisation's own domains), with those of the
    /// deprecated `[mail] enterprise_domains` added.
    pub fn enterprise_domains(&self, validation: &ca_core::ValidationConfig) -> Vec<String> {
        let mut all: Vec<String> = validation
            .enterprise_domains
            .iter()
            .chain(&self.enterprise_domains)
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The warning for the deprecated `[mail] enterprise_domains`, when it is set.
    pub fn deprecation_warning(&self) -> Option<String> {
        (!self.enterprise_domains.is_empty()).then(|| {
            "warning: [mail] enterprise_domains is deprecated: list the organisation's domains once, in \
             [validation] enterprise_domains, which sender identities use too"
                .to_string()
        })
    }
}

/// Whether `email`'s domain is one of `domains` or below one.
pub fn in_enterprise_domains(email: &cerdb::EmailAddress, domains: &[String]) -> bool {
    let Some((_, domain)) = email.as_str().rsplit_once('@') else { return false };
    let domain = domain.to_ascii_lowercase();
    domains.iter().any(|d| !d.is_empty() && (domain == *d || domain.ends_with(&format!(".{d}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_domains_are_the_validation_list_with_the_deprecated_mail_list_added() {
        let validation = ca_core::ValidationConfig {
            enterprise_domains: vec!["Bank.Example".into()],
            ..ca_core::ValidationConfig::default()
        };
        let mut mail = MailSettings::default();
        assert_eq!(mail.enterprise_domains(&validation), ["bank.example"]);
        assert!(mail.deprecation_warning().is_none());
        mail.enterprise_domains = vec!["bank.example.".into(), "otp.example".into()];
        assert_eq!(mail.enterprise_domains(&validation), ["bank.example", "otp.example"]);
        assert!(mail.deprecation_warning().is_some_and(|w| w.contains("[validation] enterprise_domains")));
    }

    #[test]
    fn enterprise_domains_match_whole_labels() {
        let domains = vec!["bank.example".to_string()];
        let e = |s: &str| s.parse::<cerdb::EmailAddress>().expect("address");
        assert!(in_enterprise_domains(&e("statements@bank.example"), &domains));
        assert!(in_enterprise_domains(&e("otp@mail.bank.example"), &domains));
        assert!(!in_enterprise_domains(&e("x@evilbank.example"), &domains));
        assert!(!in_enterprise_domains(&e("x@bank.example.org"), &domains));
        assert!(!in_enterprise_domains(&e("x@bank.example"), &[]));
    }
}
