//! The ASN.1 productions of the time-stamp protocol, one Rust type each.
//!
//! `TimeStampReq`, `MessageImprint` and `Accuracy` come from RustCrypto's `x509-tsp`. Three of its
//! types are replaced here: its `TSTInfo` uses `der` 0.7's `GeneralizedTime`, which has no
//! fractional seconds (see [`GenTime`]); and its `TimeStampResp` embeds `cmpv2` 0.2's
//! `PKIFailureInfo`, whose flag values are bit *positions* used as bit *masks* (so `badDataFormat`
//! would be sent as `badAlg | badRequest`). The ESS productions of RFC 5035 have no crate.

use cms::content_info::ContentInfo;
use der::asn1::{BitStringRef, Int, OctetString};
use der::oid::ObjectIdentifier;
use der::{
    DecodeValue, Encode, EncodeValue, Enumerated, FixedTag, Header, Length, Reader, Sequence, Tag, Writer,
};
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::name::{GeneralName, GeneralNames};
use x509_cert::ext::Extensions;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;

pub use x509_tsp::{Accuracy, MessageImprint, TimeStampReq, TspVersion};

use crate::GenTime;

/// `TSTInfo` (RFC 3161 §2.4.2).
///
/// ```text
/// TSTInfo ::= SEQUENCE  {
///    version                      INTEGER  { v1(1) },
///    policy                       TSAPolicyId,
///    messageImprint               MessageImprint,
///    serialNumber                 INTEGER,
///    genTime                      GeneralizedTime,
///    accuracy                     Accuracy                 OPTIONAL,
///    ordering                     BOOLEAN             DEFAULT FALSE,
///    nonce                        INTEGER                  OPTIONAL,
///    tsa                          [0] GeneralName          OPTIONAL,
///    extensions                   [1] IMPLICIT Extensions   OPTIONAL  }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
#[allow(missing_docs)]
pub struct TstInfo {
    pub version: TspVersion,
    pub policy: ObjectIdentifier,
    pub message_imprint: MessageImprint,
    pub serial_number: Int,
    pub gen_time: GenTime,
    #[asn1(optional = "true")]
    pub accuracy: Option<Accuracy>,
    #[asn1(default = "Default::default")]
    pub ordering: bool,
    #[asn1(optional = "true")]
    pub nonce: Option<Int>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub tsa: Option<GeneralName>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub extensions: Option<Extensions>,
}

/// `PKIStatus` (RFC 3161 §2.4.2, the subset of RFC 4210's values a TSA uses).
///
/// ```text
/// PKIStatus ::= INTEGER {
///    granted                (0),
///    grantedWithMods        (1),
///    rejection              (2),
///    waiting                (3),
///    revocationWarning      (4),
///    revocationNotification (5) }
/// ```
#[derive(Clone, Copy, Debug, Eq, PartialEq, Enumerated)]
#[asn1(type = "INTEGER")]
#[repr(u8)]
#[allow(missing_docs)]
pub enum PkiStatus {
    Granted = 0,
    GrantedWithMods = 1,
    Rejection = 2,
    Waiting = 3,
    RevocationWarning = 4,
    RevocationNotification = 5,
}

/// One named bit of `PKIFailureInfo` (RFC 3161 §2.4.2).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum FailureBit {
    BadAlg = 0,
    BadRequest = 2,
    BadDataFormat = 5,
    TimeNotAvailable = 14,
    UnacceptedPolicy = 15,
    UnacceptedExtension = 16,
    AddInfoNotAvailable = 17,
    SystemFailure = 25,
}

/// `PKIFailureInfo` (RFC 3161 §2.4.2): a named BIT STRING, bit `n` stored as `1 << n`.
///
/// ```text
/// PKIFailureInfo ::= BIT STRING {
///     badAlg               (0),
///     badRequest           (2),
///     badDataFormat        (5),
///     timeNotAvailable    (14),
///     unacceptedPolicy    (15),
///     unacceptedExtension (16),
///     addInfoNotAvailable (17),
///     systemFailure       (25) }
/// ```
///
/// Encoded in DER: bit 0 is the most significant bit of the first octet, trailing zero bits
/// are dropped (X.690 §11.2.2). Bits above 31 are ignored on decoding.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct PkiFailureInfo(u32);

impl PkiFailureInfo {
    /// A failure info with one bit set.
    pub fn of(bit: FailureBit) -> Self {
        PkiFailureInfo(1 << bit as u8)
    }

    /// Whether `bit` is set.
    pub fn contains(self, bit: FailureBit) -> bool {
        self.0 & (1 << bit as u8) != 0
    }

    /// The bits, bit `n` as `1 << n`.
    pub fn bits(self) -> u32 {
        self.0
    }

    fn octets(self) -> (u8, Vec<u8>) {
        if self.0 == 0 {
            return (0, Vec::new());
        }
        let nbits = 32 - self.0.leading_zeros() as usize;
        let mut bytes = vec![0u8; nbits.div_ceil(8)];
        for i in 0..nbits {
            if self.0 & (1 << i) != 0 {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        let unused = (bytes.len() * 8 - nbits) as u8;
        (unused, bytes)
    }
}

impl FixedTag for PkiFailureInfo {
    const TAG: Tag = Tag::BitString;
}

impl<'a> DecodeValue<'a> for PkiFailureInfo {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let bits = BitStringRef::decode_value(reader, header)?;
        let mut v = 0u32;
        for (i, bit) in bits.bits().enumerate().take(32) {
            if bit {
                v |= 1 << i;
            }
        }
        Ok(PkiFailureInfo(v))
    }
}

impl EncodeValue for PkiFailureInfo {
    fn value_len(&self) -> der::Result<Length> {
        let (_, bytes) = self.octets();
        Length::try_from(bytes.len() + 1)
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        let (unused, bytes) = self.octets();
        BitStringRef::new(unused, &bytes)?.encode_value(writer)
    }
}

/// `PKIStatusInfo` (RFC 3161 §2.4.2, from RFC 4210 §5.2.3).
///
/// ```text
/// PKIStatusInfo ::= SEQUENCE {
///     status        PKIStatus,
///     statusString  PKIFreeText     OPTIONAL,
///     failInfo      PKIFailureInfo  OPTIONAL  }
/// PKIFreeText ::= SEQUENCE SIZE (1..MAX) OF UTF8String
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
#[allow(missing_docs)]
pub struct PkiStatusInfo {
    pub status: PkiStatus,
    #[asn1(optional = "true")]
    pub status_string: Option<Vec<String>>,
    #[asn1(optional = "true")]
    pub fail_info: Option<PkiFailureInfo>,
}

/// `TimeStampResp` (RFC 3161 §2.4.2).
///
/// ```text
/// TimeStampResp ::= SEQUENCE  {
///     status                  PKIStatusInfo,
///     timeStampToken          TimeStampToken     OPTIONAL  }
/// TimeStampToken ::= ContentInfo
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
#[allow(missing_docs)]
pub struct TimeStampResp {
    pub status: PkiStatusInfo,
    #[asn1(optional = "true")]
    pub time_stamp_token: Option<ContentInfo>,
}

/// `SigningCertificateV2` (RFC 5035 §3, required in tokens by RFC 5816 §2.2.1).
///
/// ```text
/// SigningCertificateV2 ::=  SEQUENCE {
///     certs        SEQUENCE OF ESSCertIDv2,
///     policies     SEQUENCE OF PolicyInformation OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
#[allow(missing_docs)]
pub struct SigningCertificateV2 {
    pub certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    pub policies: Option<Vec<PolicyInformation>>,
}

/// `ESSCertIDv2` (RFC 5035 §4). An absent `hashAlgorithm` means SHA-256 (the DEFAULT, which DER
/// omits).
///
/// ```text
/// ESSCertIDv2 ::=  SEQUENCE {
///     hashAlgorithm           AlgorithmIdentifier DEFAULT {algorithm id-sha256},
///     certHash                Hash,
///     issuerSerial            IssuerSerial OPTIONAL }
/// Hash ::= OCTET STRING
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
#[allow(missing_docs)]
pub struct EssCertIdV2 {
    #[asn1(optional = "true")]
    pub hash_algorithm: Option<AlgorithmIdentifierOwned>,
    pub cert_hash: OctetString,
    #[asn1(optional = "true")]
    pub issuer_serial: Option<IssuerSerial>,
}

/// `IssuerSerial` (RFC 5035 §4).
///
/// ```text
/// IssuerSerial ::= SEQUENCE {
///     issuer                   GeneralNames,
///     serialNumber             CertificateSerialNumber }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
#[allow(missing_docs)]
pub struct IssuerSerial {
    pub issuer: GeneralNames,
    pub serial_number: SerialNumber,
}

/// The DER of a positive INTEGER's value as [`Int`].
pub fn int_from_u64(v: u64) -> Int {
    let be = v.to_be_bytes();
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len() - 1);
    let mut bytes = Vec::with_capacity(9);
    if be[start] & 0x80 != 0 {
        bytes.push(0);
    }
    bytes.extend_from_slice(&be[start..]);
    Int::new(&bytes).expect("invariant: at most 9 bytes is a valid INTEGER")
}

/// The value of a non-negative INTEGER that fits in 64 bits.
pub(crate) fn u64_from_int(i: &Int) -> Option<u64> {
    let b = i.as_bytes();
    if b.first().is_some_and(|f| f & 0x80 != 0) {
        return None;
    }
    let b = match b {
        [0, rest @ ..] => rest,
        other => other,
    };
    if b.len() > 8 {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

/// Encodes `v` to DER, mapping the error into the crate's.
pub(crate) fn to_der<T: Encode>(v: &T) -> Result<Vec<u8>, crate::Error> {
    v.to_der().map_err(crate::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    #[test]
    fn failure_info_bits_are_der_named_bits() {
        // badAlg: bit 0 → 03 02 07 80
        assert_eq!(PkiFailureInfo::of(FailureBit::BadAlg).to_der().expect("der"), [3, 2, 7, 0x80]);
        // badDataFormat: bit 5 → 03 02 02 04
        assert_eq!(PkiFailureInfo::of(FailureBit::BadDataFormat).to_der().expect("der"), [3, 2, 2, 0x04]);
        // unacceptedPolicy: bit 15 → 03 03 00 00 01
        assert_eq!(
            PkiFailureInfo::of(FailureBit::UnacceptedPolicy).to_der().expect("der"),
            [3, 3, 0, 0, 0x01]
        );
        // systemFailure: bit 25 → 03 05 06 00 00 00 40
        let sf = PkiFailureInfo::of(FailureBit::SystemFailure);
        assert_eq!(sf.to_der().expect("der"), [3, 5, 6, 0, 0, 0, 0x40]);
        for bit in [FailureBit::BadAlg, FailureBit::UnacceptedExtension, FailureBit::SystemFailure] {
            let v = PkiFailureInfo::of(bit);
            let back = PkiFailureInfo::from_der(&v.to_der().expect("der")).expect("decode");
            assert_eq!(back, v);
            assert!(back.contains(bit));
        }
    }

    #[test]
    fn integers_round_trip() {
        for v in [1u64, 127, 128, 255, 256, 0x7fff_ffff_ffff_ffff, u64::MAX] {
            let i = int_from_u64(v);
            let der = i.to_der().expect("der");
            let back = Int::from_der(&der).expect("decode");
            assert_eq!(u64_from_int(&back), Some(v), "{v}");
        }
        assert_eq!(int_from_u64(128).to_der().expect("der"), [2, 2, 0, 0x80]);
        let negative = Int::new(&[0xff, 0x01]).expect("int");
        assert_eq!(u64_from_int(&negative), None);
    }
}
