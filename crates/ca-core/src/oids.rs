//! Object identifiers used by the profiles.

/// CA/Browser Forum S/MIME BR: mailbox-validated, strict (2.23.140.1.5.1.3).
pub const SMIME_MAILBOX_STRICT: &[u64] = &[2, 23, 140, 1, 5, 1, 3];
/// id-ad-ocsp.
pub const AD_OCSP: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1];
/// id-ad-caIssuers.
pub const AD_CA_ISSUERS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 2];
/// id-pe-authorityInfoAccess.
pub const PE_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
/// id-ce-certificatePolicies.
pub const CE_CERTIFICATE_POLICIES: &[u64] = &[2, 5, 29, 32];
/// id-ce-extKeyUsage.
pub const CE_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
/// id-kp-timeStamping.
pub const KP_TIME_STAMPING: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 8];
/// id-kp-serverAuth.
pub const KP_SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
/// id-pkix-ocsp-nocheck.
pub const OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];
/// pkcs-9 emailAddress.
pub const EMAIL_ADDRESS: &[u64] = &[1, 2, 840, 113549, 1, 9, 1];
/// The extended key usage of the audit log's checkpoint signer, `1.3.6.1.4.1.32473.2.1`: under
/// the enterprise number RFC 5612 reserves for documentation, like the TSA's default policy (a
/// deployment may use an OID under its own arc). No other purpose accepts the certificate, and it
/// accepts no other purpose (no e-mail, no timestamps, no TLS).
pub const KP_AUDIT_CHECKPOINT: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 2, 1];
