//! The CA's settings, read from the optional `pki.toml`. Every field has a default.

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
}

impl Default for CrlSettings {
    fn default() -> Self {
        CrlSettings { validity_hours: 168, refresh_before_hours: 84 }
    }
}

/// Everything the CA needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
}

fn org_name(cn: &str) -> SubjectName {
    SubjectName { common_name: cn.into(), organization: Some("Example Bank".into()), country: None }
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
        if self.crl.validity_hours == 0 || self.crl.refresh_before_hours >= self.crl.validity_hours {
            return bad(
                "crl.refresh_before_hours must be below crl.validity_hours, which must be positive".into()
            );
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
    }
}
