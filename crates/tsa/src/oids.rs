//! The object identifiers the TSA uses, each with where it is defined.

use der::oid::ObjectIdentifier as Oid;

/// id-signedData (RFC 5652 §5.1).
pub const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// id-ct-TSTInfo (RFC 3161 §2.4.2).
pub const ID_CT_TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// id-contentType attribute (RFC 5652 §11.1).
pub const ID_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
/// id-messageDigest attribute (RFC 5652 §11.2).
pub const ID_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
/// id-aa-signingCertificateV2 attribute (RFC 5035 §3, used by RFC 5816).
pub const ID_AA_SIGNING_CERTIFICATE_V2: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.47");
/// id-aa-signingCertificate attribute (RFC 2634 §5.4, ESSCertID with SHA-1).
pub const ID_AA_SIGNING_CERTIFICATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.12");

/// id-sha1 (RFC 3279 §2.2.1).
pub const ID_SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
/// id-sha256 (RFC 5754 §2.2).
pub const ID_SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
/// id-sha384 (RFC 5754 §2.3).
pub const ID_SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
/// id-sha512 (RFC 5754 §2.4).
pub const ID_SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

/// rsaEncryption (RFC 8017 Appendix C).
pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
/// sha256WithRSAEncryption (RFC 4055 §5).
pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
/// sha384WithRSAEncryption (RFC 4055 §5).
pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
/// sha512WithRSAEncryption (RFC 4055 §5).
pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
/// id-ecPublicKey (RFC 5480 §2.1.1).
pub const ID_EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 (RFC 5480 §2.1.1.1).
pub const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1 (RFC 5480 §2.1.1.1).
pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
/// ecdsa-with-SHA256 (RFC 5758 §3.2).
pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
/// ecdsa-with-SHA384 (RFC 5758 §3.2).
pub const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
/// ecdsa-with-SHA512 (RFC 5758 §3.2).
pub const ECDSA_WITH_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
/// id-Ed25519 (RFC 8410 §3).
pub const ID_ED25519: Oid = Oid::new_unwrap("1.3.101.112");

/// id-ce-extKeyUsage (RFC 5280 §4.2.1.12).
pub const ID_CE_EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
/// id-ce-keyUsage (RFC 5280 §4.2.1.3).
pub const ID_CE_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
/// id-ce-basicConstraints (RFC 5280 §4.2.1.9).
pub const ID_CE_BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
/// id-ce-subjectKeyIdentifier (RFC 5280 §4.2.1.2).
pub const ID_CE_SUBJECT_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.14");
/// id-kp-timeStamping (RFC 5280 §4.2.1.12).
pub const ID_KP_TIME_STAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");
