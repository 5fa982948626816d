//! ECDH ephemeral-static key agreement for CMS (RFC 5753 §3.1) on P-256: the
//! `KeyAgreeRecipientInfo` that RustCrypto's `cms` 0.2 declares but does not build. One
//! ephemeral key per message (ring's `EphemeralPrivateKey`), the ANSI X9.63 KDF with SHA-256 over
//! the shared secret and `ECC-CMS-SharedInfo`, and AES-256 key wrap (RFC 3394, the `aes-kw`
//! crate) of the content-encryption key: `dhSinglePass-stdDH-sha256kdf-scheme` with
//! `id-aes256-wrap`, which OpenSSL, NSS and Outlook decrypt.

use cms::builder::{RecipientInfoBuilder, RecipientInfoType};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    EncryptedKey, KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo, OriginatorIdentifierOrKey,
    OriginatorPublicKey, RecipientEncryptedKey, RecipientInfo,
};
use der::asn1::{BitString, OctetString};
use der::{Any, Encode, Sequence};
use ring::agreement;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::oids;

/// The KDF's shared info (RFC 5753 §7.2).
///
/// ```text
/// ECC-CMS-SharedInfo ::= SEQUENCE {
///     keyInfo         AlgorithmIdentifier,
///     entityUInfo [0] EXPLICIT OCTET STRING OPTIONAL,
///     suppPubInfo [2] EXPLICIT OCTET STRING }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EccCmsSharedInfo {
    key_info: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    entity_u_info: Option<OctetString>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    supp_pub_info: OctetString,
}

/// ANSI X9.63 KDF with SHA-256 for one 32-byte key: SHA-256(Z ‖ 00000001 ‖ SharedInfo).
fn x963_sha256(z: &[u8], shared_info: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(z);
    ctx.update(&1u32.to_be_bytes());
    ctx.update(shared_info);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A P-256 recipient of an enveloped message: its certificate's issuer and serial, and its
/// public point (uncompressed, as in the certificate).
#[derive(Debug, Clone)]
pub struct EcdhRecipient {
    rid: IssuerAndSerialNumber,
    point: Vec<u8>,
}

impl EcdhRecipient {
    /// The recipient of the certificate `rid` names, whose subject public key is `point`.
    pub fn new(rid: IssuerAndSerialNumber, point: Vec<u8>) -> Self {
        EcdhRecipient { rid, point }
    }
}

/// A builder's failure, named (the recipient-info builders of this crate: here and `keytrans.rs`).
pub(crate) fn failed(what: &str) -> cms::builder::Error {
    cms::builder::Error::Builder(what.to_string())
}

impl RecipientInfoBuilder for EcdhRecipient {
    fn recipient_info_type(&self) -> RecipientInfoType {
        RecipientInfoType::Kari
    }

    fn recipient_info_version(&self) -> CmsVersion {
        CmsVersion::V3
    }

    /// 1. an ephemeral P-256 key; Z = ECDH(ephemeral, recipient);
    /// 2. KEK = X9.63-KDF-SHA256(Z, ECC-CMS-SharedInfo{id-aes256-wrap, 256});
    /// 3. the content-encryption key wrapped under KEK (RFC 3394).
    fn build(&mut self, cek: &[u8]) -> Result<RecipientInfo, cms::builder::Error> {
        let rng = ring::rand::SystemRandom::new();
        let ephemeral = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
            .map_err(|_| failed("no ephemeral key"))?;
        let public = ephemeral.compute_public_key().map_err(|_| failed("no ephemeral public key"))?;
        let wrap_alg = AlgorithmIdentifierOwned { oid: oids::AES256_WRAP, parameters: None };
        let shared_info = EccCmsSharedInfo {
            key_info: wrap_alg.clone(),
            entity_u_info: None,
            supp_pub_info: OctetString::new(256u32.to_be_bytes().to_vec())?,
        }
        .to_der()?;
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &self.point);
        let kek = agreement::agree_ephemeral(ephemeral, &peer, |z| x963_sha256(z, &shared_info))
            .map_err(|_| failed("the recipient's key is not a P-256 point"))?;
        use aes_kw::KeyInit as _;
        let kw = aes_kw::KwAes256::new_from_slice(&kek).map_err(|_| failed("key wrap key"))?;
        let mut buf = vec![0u8; cek.len() + 8];
        let wrapped = kw.wrap_key(cek, &mut buf).map_err(|_| failed("key wrap"))?.to_vec();
        let key_enc_alg = AlgorithmIdentifierOwned {
            oid: oids::ECDH_STD_SHA256_KDF,
            parameters: Some(Any::encode_from(&wrap_alg)?),
        };
        Ok(RecipientInfo::Kari(KeyAgreeRecipientInfo {
            version: CmsVersion::V3,
            originator: OriginatorIdentifierOrKey::OriginatorKey(OriginatorPublicKey {
                algorithm: AlgorithmIdentifierOwned { oid: oids::EC_PUBLIC_KEY, parameters: None },
                public_key: BitString::from_bytes(public.as_ref())?,
            }),
            ukm: None,
            key_enc_alg,
            recipient_enc_keys: vec![RecipientEncryptedKey {
                rid: KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(self.rid.clone()),
                enc_key: EncryptedKey::new(wrapped)?,
            }],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The X9.63 KDF against the SHA-256 test vector of NIST CAVS 12.0 (ANSI X9.63 KDF,
    /// COUNT = 0 of the 192-bit shared secret, no shared info, 128-bit key): the first 16
    /// bytes of the one-block output.
    #[test]
    fn x963_kdf_matches_the_nist_vector() {
        let z = hex::decode("96c05619d56c328ab95fe84b18264b08725b85e33fd34f08").expect("hex");
        let k = x963_sha256(&z, &[]);
        assert_eq!(hex::encode(&k[..16]), "443024c3dae66b95e6f5670601558f71");
    }

    #[test]
    fn shared_info_is_der_of_rfc_5753() {
        let si = EccCmsSharedInfo {
            key_info: AlgorithmIdentifierOwned { oid: oids::AES256_WRAP, parameters: None },
            entity_u_info: None,
            supp_pub_info: OctetString::new(vec![0, 0, 1, 0]).expect("octets"),
        }
        .to_der()
        .expect("der");
        // SEQUENCE { SEQUENCE { id-aes256-wrap }, [2] { OCTET STRING 00000100 } }
        assert_eq!(hex::encode(si), "3015300b060960864801650304012da206040400000100");
    }
}
