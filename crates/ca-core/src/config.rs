//! The CA's settings, read from the optional `pki.toml`. Every field has a default, field by
//! field: a `[ca.root]` table that gives only `subject` keeps the default key type and validity.

use hsm_sim::KeyType;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The longest subscriber validity the S/MIME Baseline Requirements allow (strict profiles).
pub const MAX_LEAF_VALIDITY_DAYS: u32 = 825;

/// A subject distinguished name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectName {
    /// commonName.
    pub common_name: String,
    /// organizationName.
    #[serde(default)]
    pub organization: Option<String>,
    /// countryName (two letters).
    #[serde(default)]
    pub country: Option<String>,
}

/// Settings of one CA-held key and its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Subject of the certificate.
    pub subject: SubjectName,
    /// Key type.
    pub key_type: KeyType,
    /// Validity in days.
    pub validity_days: u32,
}

/// Subscriber certificate settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeafSettings {
    /// Validity in days, at most [`MAX_LEAF_VALIDITY_DAYS`].
    pub validity_days: u32,
    /// Smallest RSA modulus accepted in CSRs.
    pub min_rsa_bits: usize,
    /// Key type of encryption keys generated in the key store when none is asked for.
    pub default_generated_key_type: KeyType,
}

impl Default for LeafSettings {
    fn default() -> Self {
        LeafSettings { validity_days: 365, min_rsa_bits: 2048, default_generated_key_type: KeyType::Rsa2048 }
    }
}

/// The console's TLS server certificate, issued by the root at init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// DNS names in the subjectAltName.
    pub dns_names: Vec<String>,
    /// IP addresses in the subjectAltName.
    pub ip_addresses: Vec<std::net::IpAddr>,
    /// Key type.
    pub key_type: KeyType,
    /// Validity in days (at most 398, as browsers require).
    pub validity_days: u32,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
            key_type: KeyType::P256,
            validity_days: 397,
        }
    }
}

/// CRL settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrlSettings {
    /// nextUpdate - thisUpdate, in hours.
    pub validity_hours: u32,
    /// A CRL is regenerated once fewer than this many hours remain before its nextUpdate.
    pub refresh_before_hours: u32,
    /// Under `pki serve`, revocations reach the CRL at most this many seconds later (or at the
    /// next read of the CRL, whichever comes first): one CRL signed for all the revocations of
    /// that time instead of one per revocation. 1 to 3600.
    pub publish_interval_secs: u32,
}

impl Default for CrlSettings {
    fn default() -> Self {
        CrlSettings { validity_hours: 168, refresh_before_hours: 84, publish_interval_secs: 5 }
    }
}

/// `[escrow]` in `pki.toml`: recovery of escrowed keys by more than one officer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscrowConfig {
    /// Distinct officers, the requester included, who must agree before an escrowed key is
    /// released (default 2; at least 2: one officer alone never recovers a key).
    pub approvals: u32,
    /// A request not released this many seconds after it was made expires (default 24 hours).
    pub request_ttl_secs: u64,
}

impl EscrowConfig {
    /// The most officers a recovery can be made to wait for.
    pub const MAX_APPROVALS: u32 = 16;
    /// The longest a request may stay open: 30 days.
    pub const MAX_TTL_SECS: u64 = 30 * 86_400;

    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.approvals < 2 {
            return Err(Error::Config(format!(
                "escrow.approvals = {}: escrow recovery needs at least 2 officers (the requester and a \
                 second officer who approves); one officer alone never recovers a key",
                self.approvals
            )));
        }
        if self.approvals > Self::MAX_APPROVALS {
            return Err(Error::Config(format!(
                "escrow.approvals = {}: at most {}",
                self.approvals,
                Self::MAX_APPROVALS
            )));
        }
        if self.request_ttl_secs == 0 || self.request_ttl_secs > Self::MAX_TTL_SECS {
            return Err(Error::Config(format!(
                "escrow.request_ttl_secs = {}: expected 1 to {} (30 days)",
                self.request_ttl_secs,
                Self::MAX_TTL_SECS
            )));
        }
        Ok(())
    }
}

impl Default for EscrowConfig {
    fn default() -> Self {
        EscrowConfig { approvals: 2, request_ttl_secs: 24 * 3600 }
    }
}

/// When the CA-side certificates are renewed and warned about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpirySettings {
    /// The OCSP signer is re-issued, with a new key in custody, once fewer than this many days
    /// remain before its notAfter (default 30). Never less than the lifetime of one OCSP
    /// response, which the signer must outlive ([`ExpirySettings::ocsp_renewal_window`]).
    pub ocsp_renew_before_days: u32,
    /// `pki status`, `/healthz` and the console's dashboard warn about the root, the issuing CA
    /// and the TSA certificate this many days before their notAfter (default 90). The OCSP signer
    /// is warned about within its renewal window (its renewal is late then), the console's TLS
    /// certificate within the 30 days before which it is re-issued.
    pub warning_days: u32,
    /// `pki serve` renews a sealed-mail sender identity's certificate (a new key in custody and a
    /// new certificate in its place) once fewer than this many days remain (default 30); 0:
    /// never on its own. A sender is warned about within this window (its renewal is late then),
    /// or within `warning_days` when it is 0.
    pub mail_sender_renew_before_days: u32,
}

impl Default for ExpirySettings {
    fn default() -> Self {
        ExpirySettings { ocsp_renew_before_days: 30, warning_days: 90, mail_sender_renew_before_days: 30 }
    }
}

impl ExpirySettings {
    /// How long before its notAfter the OCSP signer is replaced: the configured days, and never
    /// less than `response_lifetime` (nextUpdate - thisUpdate of a response) plus a day, so that
    /// every response it signed ends before it does.
    pub fn ocsp_renewal_window(&self, response_lifetime: chrono::Duration) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.ocsp_renew_before_days))
            .max(response_lifetime + chrono::Duration::days(1))
    }
}

/// Everything the CA needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CaConfigFile")]
pub struct CaConfig {
    /// Base URL under which `pki serve` is reachable by relying parties; the AIA (OCSP,
    /// caIssuers) and CRL distribution point URLs are built from it.
    pub public_base_url: String,
    /// The root CA.
    pub root: KeySettings,
    /// The S/MIME issuing CA.
    pub issuing: KeySettings,
    /// The delegated OCSP signer.
    pub ocsp_signer: KeySettings,
    /// The timestamp authority.
    pub tsa: KeySettings,
    /// The audit log's checkpoint signer (issued by the issuing CA on first use).
    pub audit_signer: KeySettings,
    /// The console's TLS server certificate.
    pub tls: TlsSettings,
    /// Subscriber certificates.
    pub leaf: LeafSettings,
    /// CRLs.
    pub crl: CrlSettings,
    /// Renewal and warnings before the CA-side certificates end.
    pub expiry: ExpirySettings,
}

/// One CA-held key's table as the file may give it: any field left out keeps the default of
/// that role.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct KeySettingsFile {
    subject: Option<SubjectName>,
    key_type: Option<KeyType>,
    validity_days: Option<u32>,
}

impl KeySettingsFile {
    fn over(self, default: KeySettings) -> KeySettings {
        KeySettings {
            subject: self.subject.unwrap_or(default.subject),
            key_type: self.key_type.unwrap_or(default.key_type),
            validity_days: self.validity_days.unwrap_or(default.validity_days),
        }
    }
}

/// `[ca]` as the file may give it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CaConfigFile {
    public_base_url: Option<String>,
    root: KeySettingsFile,
    issuing: KeySettingsFile,
    ocsp_signer: KeySettingsFile,
    tsa: KeySettingsFile,
    audit_signer: KeySettingsFile,
    tls: TlsSettings,
    leaf: LeafSettings,
    crl: CrlSettings,
    expiry: ExpirySettings,
}

impl From<CaConfigFile> for CaConfig {
    fn from(f: CaConfigFile) -> Self {
        let d = CaConfig::default();
        CaConfig {
            public_base_url: f.public_base_url.unwrap_or(d.public_base_url),
            root: f.root.over(d.root),
            issuing: f.issuing.over(d.issuing),
            ocsp_signer: f.ocsp_signer.over(d.ocsp_signer),
            tsa: f.tsa.over(d.tsa),
            audit_signer: f.audit_signer.over(d.audit_signer),
            tls: f.tls,
            leaf: f.leaf,
            crl: f.crl,
            expiry: f.expiry,
        }
    }
}

/// The country of the default subjects: the Baseline Requirements (S/MIME 7.1.4.3) ask for a
/// countryName in every CA certificate. An installation sets its own with the subjects.
pub const DEFAULT_COUNTRY: &str = "US";

fn org_name(cn: &str) -> SubjectName {
    SubjectName {
        common_name: cn.into(),
        organization: Some("Example Bank".into()),
        country: Some(DEFAULT_COUNTRY.into()),
    }
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            public_base_url: "http://127.0.0.1:8080".into(),
            root: KeySettings {
                subject: org_name("Example Bank Root CA"),
                key_type: KeyType::P384,
                validity_days: 7305,
            },
            issuing: KeySettings {
                subject: org_name("Example Bank S/MIME Issuing CA"),
                key_type: KeyType::P256,
                validity_days: 3652,
            },
            ocsp_signer: KeySettings {
                subject: org_name("Example Bank OCSP Responder"),
                key_type: KeyType::P256,
                validity_days: 365,
            },
            tsa: KeySettings {
                subject: org_name("Example Bank Timestamp Authority"),
                key_type: KeyType::P256,
                validity_days: 1826,
            },
            audit_signer: KeySettings {
                subject: org_name("Example Bank Audit Log Signer"),
                key_type: KeyType::P256,
                validity_days: 1826,
            },
            tls: TlsSettings::default(),
            leaf: LeafSettings::default(),
            crl: CrlSettings::default(),
            expiry: ExpirySettings::default(),
        }
    }
}

impl CaConfig {
    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if !(self.public_base_url.starts_with("http://") || self.public_base_url.starts_with("https://")) {
            return bad(format!(
                "public_base_url {:?} must start with http:// or https://",
                self.public_base_url
            ));
        }
        if self.leaf.validity_days == 0 || self.leaf.validity_days > MAX_LEAF_VALIDITY_DAYS {
            return bad(format!(
                "leaf.validity_days is {}; it must be between 1 and {MAX_LEAF_VALIDITY_DAYS}",
                self.leaf.validity_days
            ));
        }
        if self.leaf.min_rsa_bits < 2048 {
            return bad(format!("leaf.min_rsa_bits is {}; it must be at least 2048", self.leaf.min_rsa_bits));
        }
        if self.leaf.default_generated_key_type == KeyType::Ed25519 {
            return bad("leaf.default_generated_key_type: Ed25519 keys cannot encrypt".into());
        }
        for (name, k) in [
            ("root", &self.root),
            ("issuing", &self.issuing),
            ("ocsp_signer", &self.ocsp_signer),
            ("tsa", &self.tsa),
            ("audit_signer", &self.audit_signer),
        ] {
            if k.validity_days == 0 {
                return bad(format!("{name}.validity_days must be positive"));
            }
            if k.subject.common_name.trim().is_empty() {
                return bad(format!("{name}.subject.common_name must not be empty"));
            }
            if let Some(c) = &k.subject.country {
                if c.len() != 2 || !c.chars().all(|c| c.is_ascii_uppercase()) {
                    return bad(format!("{name}.subject.country {c:?} must be two upper-case letters"));
                }
            }
        }
        if self.tls.validity_days == 0 || self.tls.validity_days > 398 {
            return bad(format!(
                "tls.validity_days is {}; it must be between 1 and 398",
                self.tls.validity_days
            ));
        }
        if self.tls.dns_names.is_empty() && self.tls.ip_addresses.is_empty() {
            return bad("tls needs at least one DNS name or IP address".into());
        }
        if self.tls.key_type == KeyType::Ed25519 {
            return bad(
                "tls.key_type: Ed25519 server certificates are not accepted by common browsers".into()
            );
        }
        if self.expiry.ocsp_renew_before_days >= self.ocsp_signer.validity_days {
            return bad(format!(
                "expiry.ocsp_renew_before_days ({}) must be below ocsp_signer.validity_days ({}), or every new \
                 OCSP signer would be due for renewal at once",
                self.expiry.ocsp_renew_before_days, self.ocsp_signer.validity_days
            ));
        }
        if self.crl.validity_hours == 0 || self.crl.refresh_before_hours >= self.crl.validity_hours {
            return bad(
                "crl.refresh_before_hours must be below crl.validity_hours, which must be positive".into()
            );
        }
        if !(1..=3600).contains(&self.crl.publish_interval_secs) {
            return bad(format!(
                "crl.publish_interval_secs ({}) must be between 1 and 3600",
                self.crl.publish_interval_secs
            ));
        }
        Ok(())
    }

    /// [`CaConfig::validate`], and what only a new hierarchy needs: the subjects of the root and
    /// the issuing CA name a country and an organization (S/MIME Baseline Requirements
    /// 7.1.4.3; pkilint's CA profiles report their absence). An existing hierarchy keeps the
    /// subjects it was created with, so opening one does not ask for them.
    pub fn validate_for_init(&self) -> Result<(), Error> {
        self.validate()?;
        for (name, k) in [("root", &self.root), ("issuing", &self.issuing)] {
            if k.subject.country.is_none() {
                return Err(Error::Config(format!(
                    "ca.{name}.subject.country is required: CA certificates name their country \
                     (S/MIME Baseline Requirements 7.1.4.3), e.g. country = \"{DEFAULT_COUNTRY}\""
                )));
            }
            if k.subject.organization.as_deref().is_none_or(|o| o.trim().is_empty()) {
                return Err(Error::Config(format!(
                    "ca.{name}.subject.organization is required: CA certificates name their organization \
                     (S/MIME Baseline Requirements 7.1.4.3)"
                )));
            }
        }
        Ok(())
    }

    /// The base URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.public_base_url.trim_end_matches('/')
    }

    /// URL of the OCSP responder.
    pub fn ocsp_url(&self) -> String {
        format!("{}/ocsp", self.base_url())
    }

    /// URL of a CA certificate (DER), for AIA caIssuers.
    pub fn ca_cert_url(&self, ca: cerdb::CaId) -> String {
        format!("{}/ca/{}.crt", self.base_url(), ca.name())
    }

    /// URL of a CA's CRL (DER).
    pub fn crl_url(&self, ca: cerdb::CaId) -> String {
        format!("{}/crl/{}.crl", self.base_url(), ca.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_are_enforced() {
        CaConfig::default().validate().expect("defaults valid");
        let mut c = CaConfig::default();
        c.leaf.validity_days = 826;
        assert!(c.validate().unwrap_err().to_string().contains("825"));
        let c = CaConfig { public_base_url: "ftp://x".into(), ..CaConfig::default() };
        assert!(c.validate().is_err());
        let parsed: CaConfig = toml::from_str("[leaf]\nvalidity_days = 30\n").expect("toml");
        assert_eq!(parsed.leaf.validity_days, 30);
        assert_eq!(parsed.root, CaConfig::default().root);
        assert!(toml::from_str::<CaConfig>("bogus = 1\n").is_err());
        // [crl] publish_interval_secs: 1 to 3600, named in the error.
        for bad in [0, 3601] {
            let mut c = CaConfig::default();
            c.crl.publish_interval_secs = bad;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("crl.publish_interval_secs") && e.contains("3600"), "{e}");
        }
        let parsed: CaConfig = toml::from_str("[crl]\npublish_interval_secs = 60\n").expect("toml");
        assert_eq!(parsed.crl.publish_interval_secs, 60);
        assert_eq!(parsed.crl.validity_hours, CrlSettings::default().validity_hours);
        parsed.validate().expect("valid");
    }

    #[test]
    fn every_table_is_optional_field_by_field() {
        let parsed: CaConfig = toml::from_str(
            "[root]\nsubject = { common_name = \"R\", organization = \"O\", country = \"DE\" }\n",
        )
        .expect("a root table with only its subject");
        let d = CaConfig::default();
        assert_eq!(parsed.root.subject.common_name, "R");
        assert_eq!(parsed.root.key_type, d.root.key_type);
        assert_eq!(parsed.root.validity_days, d.root.validity_days);
        assert_eq!(parsed.issuing, d.issuing);
        parsed.validate_for_init().expect("valid for a new hierarchy");
        let parsed: CaConfig = toml::from_str("[ocsp_signer]\nvalidity_days = 90\n").expect("one field");
        assert_eq!(parsed.ocsp_signer.subject, d.ocsp_signer.subject);
        assert_eq!(parsed.ocsp_signer.validity_days, 90);
        assert!(toml::from_str::<CaConfig>("[root]\nbogus = 1\n").is_err(), "unknown fields are refused");
        assert!(toml::from_str::<CaConfig>("[expiry]\nbogus = 1\n").is_err());
    }

    #[test]
    fn a_new_hierarchy_needs_country_and_organization_in_its_ca_subjects() {
        CaConfig::default().validate_for_init().expect("the defaults name both");
        let no_country: CaConfig =
            toml::from_str("[issuing]\nsubject = { common_name = \"I\", organization = \"O\" }\n")
                .expect("toml");
        no_country.validate().expect("an existing hierarchy opens");
        let e = no_country.validate_for_init().unwrap_err().to_string();
        assert!(e.contains("ca.issuing.subject.country is required"), "{e}");
        let no_org: CaConfig =
            toml::from_str("[root]\nsubject = { common_name = \"R\", country = \"DE\" }\n").expect("toml");
        assert!(no_org.validate_for_init().unwrap_err().to_string().contains("ca.root.subject.organization"));
    }

    #[test]
    fn the_ocsp_renewal_window_outlives_a_response_and_fits_the_signer() {
        let e = ExpirySettings::default();
        assert_eq!(e.ocsp_renewal_window(chrono::Duration::hours(24)), chrono::Duration::days(30));
        assert_eq!(e.ocsp_renewal_window(chrono::Duration::days(40)), chrono::Duration::days(41));
        let mut c = CaConfig::default();
        c.ocsp_signer.validity_days = 30;
        assert!(c.validate().unwrap_err().to_string().contains("ocsp_renew_before_days"));
    }
}
