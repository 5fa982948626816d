//! `[mail]`: sealed mail — the enterprise domains sender identities may use, the invitation sent
//! to addresses without a certificate, an optional archive certificate, body limits — and
//! `[mail.relay]` ([`crate::mail_relay::RelaySettings`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[mail]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// The organisation's own mail domains (`bank.example`): sender identities must have an
    /// address in one of them (or a subdomain). Empty: no sender identity can be added.
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
            relay: Default::default(),
        }
    }
}

impl MailSettings {
    /// The enterprise domains, lower-cased. The one accessor every user of the setting goes
    /// through, so that the setting can move (say, under `[validation]`) in one place.
    pub fn enterprise_domains(&self) -> Vec<String> {
        self.enterprise_domains.iter().map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase()).collect()
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
