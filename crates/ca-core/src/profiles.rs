//! Certificate profiles as types. Each builds its own parameters and lints the to-be-signed
//! certificate against itself, so that a leaf option can never end up on a CA.
//!
//! Subscriber profiles follow the CA/Browser Forum S/MIME Baseline Requirements, mailbox-validated
//! **strict** (policy 2.23.140.1.5.1.3).

use cerdb::{CertKind, EmailAddress, Serial, Usage};
use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName, DnType,
    DnValue, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber,
};
use x509_parser::prelude::*;

use crate::config::{SubjectName, MAX_LEAF_VALIDITY_DAYS};
use crate::csr::SubjectKeyKind;
use crate::{ext_values, oids, Error};

/// What every profile needs to know about one certificate.
#[derive(Debug, Clone)]
pub struct ProfileContext {
    /// The serial number.
    pub serial: Serial,
    /// notBefore.
    pub not_before: DateTime<Utc>,
    /// notAfter.
    pub not_after: DateTime<Utc>,
    /// The subject key's type.
    pub key: SubjectKeyKind,
    /// OCSP URL for AIA, if the issuer runs OCSP.
    pub ocsp_url: Option<String>,
    /// caIssuers URL for AIA.
    pub ca_issuers_url: Option<String>,
    /// CRL distribution point.
    pub crl_url: Option<String>,
}

/// A certificate profile.
pub trait Profile: Send + Sync {
    /// The kind of certificate this profile makes.
    fn kind(&self) -> CertKind;
    /// The rcgen parameters for `ctx`.
    fn params(&self, ctx: &ProfileContext) -> Result<CertificateParams, Error>;
    /// Checks a to-be-signed certificate against the profile; the error says what is wrong.
    fn lint(&self, tbs: &TbsCertificate<'_>, ctx: &ProfileContext) -> Result<(), String>;
}

/// Builds a subject DN.
pub(crate) fn dn_of(s: &SubjectName) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(c) = &s.country {
        // Validated as two upper-case letters, which are always printable.
        match rcgen::string::PrintableString::try_from(c.as_str()) {
            Ok(p) => dn.push(DnType::CountryName, DnValue::PrintableString(p)),
            Err(_) => dn.push(DnType::CountryName, DnValue::Utf8String(c.clone())),
        }
    }
    if let Some(o) = &s.organization {
        dn.push(DnType::OrganizationName, DnValue::Utf8String(o.clone()));
    }
    dn.push(DnType::CommonName, DnValue::Utf8String(s.common_name.clone()));
    dn
}

fn to_time(t: DateTime<Utc>) -> Result<::time::OffsetDateTime, Error> {
    ::time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|e| Error::Certificate(format!("time out of range: {e}")))
}

fn base_params(ctx: &ProfileContext) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    p.serial_number = Some(SerialNumber::from_slice(ctx.serial.as_bytes()));
    p.not_before = to_time(ctx.not_before)?;
    p.not_after = to_time(ctx.not_after)?;
    p.key_identifier_method = KeyIdMethod::Sha256;
    p.use_authority_key_identifier_extension = true;
    p.distinguished_name = DistinguishedName::new();
    if let Some(url) = &ctx.crl_url {
        p.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![url.clone()] }];
    }
    if ctx.ocsp_url.is_some() || ctx.ca_issuers_url.is_some() {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            oids::PE_AIA,
            ext_values::authority_info_access(ctx.ocsp_url.as_deref(), ctx.ca_issuers_url.as_deref())?,
        ));
    }
    Ok(p)
}

fn policies_ext() -> Result<CustomExtension, Error> {
    Ok(CustomExtension::from_oid_content(
        oids::CE_CERTIFICATE_POLICIES,
        ext_values::certificate_policies(&[oids::SMIME_MAILBOX_STRICT])?,
    ))
}

/// The to-be-signed certificate rcgen hands to the signer, parsed.
pub(crate) fn parse_tbs(bytes: &[u8]) -> Result<TbsCertificate<'_>, String> {
    let (rest, tbs) = TbsCertificate::from_der(bytes).map_err(|e| format!("TBS does not parse: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the TBS certificate".into());
    }
    Ok(tbs)
}

fn oid_str(arcs: &[u64]) -> String {
    arcs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(".")
}

/// Whether `oid` has these arcs, without spelling it out as text (the lint runs for every
/// certificate issued).
fn oid_is(oid: &x509_parser::oid_registry::Oid<'_>, arcs: &[u64]) -> bool {
    oid.iter().is_some_and(|it| it.eq(arcs.iter().copied()))
}

/// Checks shared by every profile: version, serial, validity, well-formed extensions, key ids.
fn lint_common(tbs: &TbsCertificate<'_>, ctx: &ProfileContext, aki_required: bool) -> Result<(), String> {
    if tbs.version != X509Version::V3 {
        return Err("not a v3 certificate".into());
    }
    if tbs.raw_serial() != ctx.serial.to_der_content().as_slice() {
        return Err("serial number differs from the reserved one".into());
    }
    if ctx.serial.bits() < 64 {
        return Err("serial number has fewer than 64 bits".into());
    }
    if tbs.validity.not_before.timestamp() != ctx.not_before.timestamp()
        || tbs.validity.not_after.timestamp() != ctx.not_after.timestamp()
    {
        return Err("validity differs from the requested period".into());
    }
    let mut seen = std::collections::HashSet::new();
    for ext in tbs.extensions() {
        if !seen.insert(ext.oid.as_bytes()) {
            return Err(format!("extension {} appears twice", ext.oid));
        }
        if let ParsedExtension::UnsupportedExtension { .. } = ext.parsed_extension() {
            if ext.critical {
                return Err(format!("unknown critical extension {}", ext.oid));
            }
        }
    }
    match tbs.subject_key_identifier() {
        Some(_) => {}
        None => return Err("no subjectKeyIdentifier".into()),
    }
    if aki_required && !tbs.extensions().iter().any(|e| oid_is(&e.oid, &[2, 5, 29, 35])) {
        return Err("no authorityKeyIdentifier".into());
    }
    Ok(())
}

trait TbsExt {
    fn subject_key_identifier(&self) -> Option<&[u8]>;
    fn ext(&self, arcs: &[u64]) -> Option<&X509Extension<'_>>;
}

impl TbsExt for TbsCertificate<'_> {
    fn subject_key_identifier(&self) -> Option<&[u8]> {
        self.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
    }
    fn ext(&self, arcs: &[u64]) -> Option<&X509Extension<'_>> {
        self.extensions().iter().find(|e| oid_is(&e.oid, arcs))
    }
}

fn key_usage_flags(tbs: &TbsCertificate<'_>) -> Result<u16, String> {
    match tbs.key_usage() {
        Ok(Some(ku)) if ku.critical => Ok(ku.value.flags),
        Ok(Some(_)) => Err("keyUsage is not critical".into()),
        Ok(None) => Err("no keyUsage".into()),
        Err(e) => Err(format!("keyUsage: {e}")),
    }
}

// KeyUsage bits as x509-parser numbers them (bit 0 = digitalSignature).
const KU_DIGITAL_SIGNATURE: u16 = 1 << 0;
const KU_NON_REPUDIATION: u16 = 1 << 1;
const KU_KEY_ENCIPHERMENT: u16 = 1 << 2;
const KU_KEY_AGREEMENT: u16 = 1 << 4;
const KU_KEY_CERT_SIGN: u16 = 1 << 5;
const KU_CRL_SIGN: u16 = 1 << 6;

fn expect_ku(tbs: &TbsCertificate<'_>, want: u16) -> Result<(), String> {
    let got = key_usage_flags(tbs)?;
    if got != want {
        return Err(format!("keyUsage is {got:#06x}, the profile requires {want:#06x}"));
    }
    Ok(())
}

fn expect_eku(tbs: &TbsCertificate<'_>, want: &[u64], critical: bool) -> Result<(), String> {
    let eku = match tbs.extended_key_usage() {
        Ok(Some(e)) => e,
        Ok(None) => return Err("no extKeyUsage".into()),
        Err(e) => return Err(format!("extKeyUsage: {e}")),
    };
    if eku.critical != critical {
        return Err(format!("extKeyUsage must {}be critical", if critical { "" } else { "not " }));
    }
    let v = eku.value;
    let mut got: Vec<String> = v.other.iter().map(|o| o.to_id_string()).collect();
    for (set, arcs) in [
        (v.any, "2.5.29.37.0"),
        (v.server_auth, "1.3.6.1.5.5.7.3.1"),
        (v.client_auth, "1.3.6.1.5.5.7.3.2"),
        (v.code_signing, "1.3.6.1.5.5.7.3.3"),
        (v.email_protection, "1.3.6.1.5.5.7.3.4"),
        (v.time_stamping, "1.3.6.1.5.5.7.3.8"),
        (v.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
    ] {
        if set {
            got.push(arcs.to_string());
        }
    }
    if got != [oid_str(want)] {
        return Err(format!("extKeyUsage is {got:?}, the profile requires only {}", oid_str(want)));
    }
    Ok(())
}

fn expect_ca(tbs: &TbsCertificate<'_>, path_len: Option<u32>) -> Result<(), String> {
    match tbs.basic_constraints() {
        Ok(Some(bc)) if bc.critical && bc.value.ca && bc.value.path_len_constraint == path_len => Ok(()),
        Ok(Some(_)) => Err(format!("basicConstraints must be critical, cA true, pathLen {path_len:?}")),
        Ok(None) => Err("no basicConstraints on a CA".into()),
        Err(e) => Err(format!("basicConstraints: {e}")),
    }
}

fn expect_not_ca(tbs: &TbsCertificate<'_>) -> Result<(), String> {
    match tbs.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Err("a leaf certificate must not be a CA".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("basicConstraints: {e}")),
    }
}

fn expect_present(tbs: &TbsCertificate<'_>, arcs: &[u64], name: &str) -> Result<(), String> {
    match tbs.ext(arcs) {
        Some(e) if !e.critical => Ok(()),
        Some(_) => Err(format!("{name} must not be critical")),
        None => Err(format!("no {name}")),
    }
}

fn expect_aia(tbs: &TbsCertificate<'_>, ctx: &ProfileContext) -> Result<(), String> {
    let Some(ext) = tbs.ext(oids::PE_AIA) else {
        return Err("no authorityInfoAccess".into());
    };
    let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() else {
        return Err("authorityInfoAccess does not parse".into());
    };
    let find = |arcs: &[u64]| {
        aia.accessdescs.iter().find_map(|d| match (&d.access_method, &d.access_location) {
            (m, GeneralName::URI(u)) if oid_is(m, arcs) => Some(u.to_string()),
            _ => None,
        })
    };
    if find(oids::AD_OCSP) != ctx.ocsp_url || find(oids::AD_CA_ISSUERS) != ctx.ca_issuers_url {
        return Err("authorityInfoAccess URLs differ from the configured ones".into());
    }
    Ok(())
}

/// The self-signed root.
#[derive(Debug, Clone)]
pub struct RootCaProfile {
    /// Its subject.
    pub subject: SubjectName,
}

impl Profile for RootCaProfile {
    fn kind(&self) -> CertKind {
        CertKind::RootCa
    }
    fn params(&self, ctx: &ProfileContext) -> Result<CertificateParams, Error> {
        let mut p = base_params(ctx)?;
        p.use_authority_key_identifier_extension = false;
        p.distinguished_name = dn_of(&self.subject);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(p)
    }
    fn lint(&self, tbs: &TbsCertificate<'_>, ctx: &ProfileContext) -> Result<(), String> {
        lint_common(tbs, ctx, false)?;
        expect_ca(tbs, None)?;
        expect_ku(tbs, KU_KEY_CERT_SIGN | KU_CRL_SIGN)?;
        if tbs.extended_key_usage().ok().flatten().is_some() {
            return Err("a root carries no extKeyUsage".into());
        }
        Ok(())
    }
}

/// The S/MIME issuing CA: pathLen 0, EKU emailProtection, the strict mailbox policy.
#[derive(Debug, Clone)]
pub struct IssuingCaProfile {
    /// Its subject.
    pub subject: SubjectName,
}

impl Profile for IssuingCaProfile {
    fn kind(&self) -> CertKind {
        CertKind::IssuingCa
    }
    fn params(&self, ctx: &ProfileContext) -> Result<CertificateParams, Error> {
        let mut p = base_params(ctx)?;
        p.distinguished_name = dn_of(&self.subject);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        p.custom_extensions.push(policies_ext()?);
        Ok(p)
    }
    fn lint(&self, tbs: &TbsCertificate<'_>, ctx: &ProfileContext) -> Result<(), String> {
        lint_common(tbs, ctx, true)?;
        expect_ca(tbs, Some(0))?;
        expect_ku(tbs, KU_KEY_CERT_SIGN | KU_CRL_SIGN)?;
        expect_eku(tbs, &[1, 3, 6, 1, 5, 5, 7, 3, 4], false)?;
        expect_present(tbs, oids::CE_CERTIFICATE_POLICIES, "certificatePolicies")?;
        expect_aia(tbs, ctx)?;
        Ok(())
    }
}

/// The delegated OCSP signer (RFC 6960 §4.2.2.2): EKU id-kp-OCSPSigning, id-pkix-ocsp-nocheck.
#[derive(Debug, Clone)]
pub struct OcspSignerProfile {
    /// Its subject.
    pub subject: SubjectName,
}

impl Profile for OcspSignerProfile {
    fn kind(&self) -> CertKind {
        CertKind::OcspSigner
    }
    fn params(&self, ctx: &ProfileContext) -> Result<CertificateParams, Error> {
        let mut p = base_params(ctx)?;
        p.distinguished_name = dn_of(&self.subject);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        p.custom_extensions.push(CustomExtension::from_oid_content(oids::OCSP_NOCHECK, ext_values::null()?));
        Ok(p)
    }
    fn lint(&self, tbs: &TbsCertificate<'_>, ctx: &ProfileContext) -> Result<(), String> {
        lint_common(tbs, ctx, true)?;
        expect_not_ca(tbs)?;
        expect_ku(tbs, KU_DIGITAL_SIGNATURE)?;
        expect_eku(tbs, &[1, 3, 6, 1, 5, 5, 7, 3, 9], false)?;
        expect_present(tbs, oids::OCSP_NOCHECK, "id-pkix-ocsp-nocheck")?;
        Ok(())
    }
}

/// The timestamp authority (RFC 3161 §2.3): EKU id-kp-timeStamping only, critical.
#[derive(Debug, Clone)]
pub struct TsaProfile {
    /// Its subject.
    pub subject: SubjectName,
}

impl Profile for TsaProfile {
    fn kind(&self) -> CertKind {
        CertKind::Tsa
    }
    fn params(&self, ctx: &ProfileContext) -> Result<CertificateParams, Error> {
        let mut p = base_params(ctx)?;
        p.distinguished_name = dn_of(&self.subject);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::ContentCommitment];
        let mut eku = CustomExtension::from_oid_content(
            oids::CE_EXT_KEY_USAGE,
            ext_values::ext_key_usage(&[oids::KP_TIME_STAMPING])?,
        );
        eku.set_criticality(true);
        p.custom_extensions.push(eku);
        Ok(p)
    }
    fn lint(&self, tbs: &TbsCertificate<'_>, ctx: &ProfileContext) -> Result<(), String> {
        lint_common(tbs, ctx, true)?;
        expect_not_ca(tbs)?;
        expect_ku(tbs, KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION)?;
        expect_eku(tbs, oids::KP_TIME_STAMPING, true)?;
        Ok(())
    }
}

/// The audit log's checkpoint signer, issued by the issuing CA: keyUsage digitalSignature and
/// nonRepudiation (critical), EKU [`oids::KP_AUDIT_CHECKPOINT`] only (not critical, so that
/// relying software that does not know it still reads the certificate, and any purpose check that
/// does know EKUs refuses it for mail, TLS and timestamps).
#[derive(Debug, Clone)]
pub struct AuditSignerProfile {
    /// Its subject.
    pub subject: SubjectName,
}

impl Profile for AuditSignerProfile {
    fn kind(&self) -> CertKind {
        CertKind::AuditSigner
    }
    fn params(&self, ctx: &ProfileContext) -> Result<CertificateParams, Error> {
        let mut p = base_params(ctx)?;
        p.distinguished_name = dn_of(&self.subject);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::ContentCommitment];
        p.custom_extensions.push(CustomExtension::from_oid_content(
            oids::CE_EXT_KEY_USAGE,
            ext_values::ext_key_usage(&[oids::KP_AUDIT_CHECKPOINT])?,
        ));
        Ok(p)
    }
    fn lint(&self, tbs: &TbsCertificate<'_>, ctx: &ProfileContext) -> Result<(), String> {
        lint_common(tbs, ctx, true)?;
        expect_not_ca(tbs)?;
        expect_ku(tbs, KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION)?;
        expect_eku(tbs, oids::KP_AUDIT_CHECKPOINT, false)?;
        expect_aia(tbs, ctx)?;
        Ok(())
    }
}

/// The console's TLS server certificate (CA/B Forum TLS BR shape): EKU serverAuth, SAN names.
#[derive(Debug, Clone)]
pub struct TlsServerProfile {
    /// DNS names.
    pub dns_names: Vec<String>,
    /// IP addresses.
    pub ip_addresses: Vec<std::net::IpAddr>,
}

impl Profile for TlsServerProfile {
    fn kind(&self) -> CertKind {
        CertKind::TlsServer
    }
    fn params(&self, ctx: &ProfileContext) -> Result<CertificateParams, Error> {
        let mut p = base_params(ctx)?;
        let mut dn = DistinguishedName::new();
        let cn = self.dns_names.first().cloned().or_else(|| self.ip_addresses.first().map(|i| i.to_string()));
        dn.push(DnType::CommonName, DnValue::Utf8String(cn.unwrap_or_default()));
        p.distinguished_name = dn;
        let mut sans = Vec::new();
        for d in &self.dns_names {
            let name = rcgen::string::Ia5String::try_from(d.as_str())
                .map_err(|e| Error::Config(format!("tls.dns_names {d:?}: {e}")))?;
            sans.push(SanType::DnsName(name));
        }
        sans.extend(self.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(p)
    }
    fn lint(&self, tbs: &TbsCertificate<'_>, ctx: &ProfileContext) -> Result<(), String> {
        lint_common(tbs, ctx, true)?;
        expect_not_ca(tbs)?;
        expect_ku(tbs, KU_DIGITAL_SIGNATURE)?;
        expect_eku(tbs, oids::KP_SERVER_AUTH, false)?;
        if (ctx.not_after - ctx.not_before).num_days() > 398 {
            return Err("TLS server certificates are valid for at most 398 days".into());
        }
        match tbs.subject_alternative_name() {
            Ok(Some(s)) if s.value.general_names.len() == self.dns_names.len() + self.ip_addresses.len() => {
                Ok(())
            }
            _ => Err("subjectAltName must list exactly the configured names".into()),
        }
    }
}

/// A subscriber certificate for one mailbox, signing or encryption.
#[derive(Debug, Clone)]
pub struct SubscriberProfile {
    /// The mailbox.
    pub email: EmailAddress,
    /// Signing or encryption.
    pub usage: Usage,
}

impl SubscriberProfile {
    fn key_usage_bits(&self, key: SubjectKeyKind) -> u16 {
        match (self.usage, key.is_rsa()) {
            (Usage::Signing, _) => KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION,
            (Usage::Encryption, true) => KU_KEY_ENCIPHERMENT,
            (Usage::Encryption, false) => KU_KEY_AGREEMENT,
        }
    }
}

impl Profile for SubscriberProfile {
    fn kind(&self) -> CertKind {
        self.usage.into()
    }
    fn params(&self, ctx: &ProfileContext) -> Result<CertificateParams, Error> {
        let mut p = base_params(ctx)?;
        let ia5 = |s: &str| {
            rcgen::string::Ia5String::try_from(s).map_err(|e| Error::Certificate(format!("address: {e}")))
        };
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, DnValue::Utf8String(self.email.to_string()));
        dn.push(
            DnType::CustomDnType(oids::EMAIL_ADDRESS.to_vec()),
            DnValue::Ia5String(ia5(self.email.as_str())?),
        );
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::Rfc822Name(ia5(self.email.as_str())?)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = match (self.usage, ctx.key.is_rsa()) {
            (Usage::Signing, _) => {
                vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::ContentCommitment]
            }
            (Usage::Encryption, true) => vec![KeyUsagePurpose::KeyEncipherment],
            (Usage::Encryption, false) => vec![KeyUsagePurpose::KeyAgreement],
        };
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        p.custom_extensions.push(policies_ext()?);
        Ok(p)
    }
    fn lint(&self, tbs: &TbsCertificate<'_>, ctx: &ProfileContext) -> Result<(), String> {
        lint_common(tbs, ctx, true)?;
        expect_not_ca(tbs)?;
        expect_ku(tbs, self.key_usage_bits(ctx.key))?;
        expect_eku(tbs, &[1, 3, 6, 1, 5, 5, 7, 3, 4], false)?;
        let days = (ctx.not_after - ctx.not_before).num_days();
        if days > i64::from(MAX_LEAF_VALIDITY_DAYS) {
            return Err(format!("validity of {days} days exceeds {MAX_LEAF_VALIDITY_DAYS}"));
        }
        let san = match tbs.subject_alternative_name() {
            Ok(Some(s)) => s,
            _ => return Err("no subjectAltName".into()),
        };
        let names: Vec<String> = san.value.general_names.iter().map(|g| format!("{g:?}")).collect();
        match san.value.general_names.as_slice() {
            [GeneralName::RFC822Name(a)] if *a == self.email.as_str() => {}
            _ => {
                return Err(format!("subjectAltName must be exactly rfc822Name {}, is {names:?}", self.email))
            }
        }
        expect_present(tbs, oids::CE_CERTIFICATE_POLICIES, "certificatePolicies")?;
        expect_present(tbs, &[2, 5, 29, 31], "cRLDistributionPoints")?;
        expect_aia(tbs, ctx)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ctx() -> ProfileContext {
        let nb = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        ProfileContext {
            serial: Serial::from_bytes(&[0x5a; 16]).unwrap(),
            not_before: nb,
            not_after: nb + chrono::Duration::days(365),
            key: SubjectKeyKind::P256,
            ocsp_url: Some("http://ca.test/ocsp".into()),
            ca_issuers_url: Some("http://ca.test/ca/issuing.crt".into()),
            crl_url: Some("http://ca.test/crl/issuing.crl".into()),
        }
    }

    fn lint_with(
        profile: &SubscriberProfile,
        ctx: &ProfileContext,
        edit: impl Fn(&mut CertificateParams),
    ) -> Result<(), String> {
        let mut params = profile.params(ctx).unwrap();
        edit(&mut params);
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&kp).unwrap();
        let (_, x) = X509Certificate::from_der(cert.der()).unwrap();
        profile.lint(&x.tbs_certificate, ctx)
    }

    #[test]
    fn the_lint_passes_the_profile_and_refuses_deviations() {
        let p = SubscriberProfile { email: "a@example.com".parse().unwrap(), usage: Usage::Encryption };
        let c = ctx();
        lint_with(&p, &c, |_| {}).expect("the profile itself passes");
        let e = lint_with(&p, &c, |pr| pr.key_usages.push(KeyUsagePurpose::DigitalSignature)).unwrap_err();
        assert!(e.contains("keyUsage"), "{e}");
        let e = lint_with(&p, &c, |pr| pr.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth))
            .unwrap_err();
        assert!(e.contains("extKeyUsage"), "{e}");
        let e = lint_with(&p, &c, |pr| {
            pr.subject_alt_names = vec![SanType::Rfc822Name("b@example.com".try_into().unwrap())]
        })
        .unwrap_err();
        assert!(e.contains("subjectAltName"), "{e}");
        let e = lint_with(&p, &c, |pr| pr.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)).unwrap_err();
        assert!(e.contains("CA"), "{e}");
        let e = lint_with(&p, &c, |pr| pr.crl_distribution_points.clear()).unwrap_err();
        assert!(e.contains("cRLDistributionPoints"), "{e}");
        let mut long = c.clone();
        long.not_after = long.not_before + chrono::Duration::days(826);
        let e = lint_with(&p, &long, |_| {}).unwrap_err();
        assert!(e.contains("826"), "{e}");
    }
}
