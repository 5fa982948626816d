//! `GeneralizedTime` with fractional seconds — the crate's only hand-written DER.
//!
//! `der` 0.7's `GeneralizedTime` encodes whole seconds only, but RFC 3161 §2.4.2 and ETSI EN
//! 319 422 want genTime with sub-second precision. X.690 §11.7 (DER): `YYYYMMDDHHMMSS[.f*]Z`,
//! the fraction without trailing zeros, and no `.` when the fraction is zero.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use der::{DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Tag, Writer};

/// A DER `GeneralizedTime` in UTC with up to nanosecond precision (RFC 3161 §2.4.2 genTime).
///
/// ```text
/// genTime GeneralizedTime  -- YYYYMMDDhhmmss[.s...]Z
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GenTime(DateTime<Utc>);

impl GenTime {
    /// The time, if it can be encoded (years 0000–9999).
    pub fn new(t: DateTime<Utc>) -> Result<Self, crate::Error> {
        if !(0..=9999).contains(&t.year()) {
            return Err(crate::Error::TimeNotAvailable(format!("{t} is outside years 0000-9999")));
        }
        Ok(GenTime(t))
    }

    /// The time.
    pub fn to_datetime(self) -> DateTime<Utc> {
        self.0
    }

    fn text(&self) -> String {
        let t = self.0;
        let mut s = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        // chrono keeps a leap second in `nanosecond() >= 1e9`; genTime has no leap seconds.
        let nanos = t.nanosecond() % 1_000_000_000;
        if nanos != 0 {
            let frac = format!("{nanos:09}");
            s.push('.');
            s.push_str(frac.trim_end_matches('0'));
        }
        s.push('Z');
        s
    }

    fn parse(b: &[u8]) -> Option<Self> {
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = b.get(r)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            part.iter().try_fold(0u32, |acc, d| acc.checked_mul(10)?.checked_add(u32::from(d - b'0')))
        };
        if b.len() < 15 || b.last() != Some(&b'Z') {
            return None;
        }
        let year = i32::try_from(digits(0..4)?).ok()?;
        let (month, day, hour, min, sec) =
            (digits(4..6)?, digits(6..8)?, digits(8..10)?, digits(10..12)?, digits(12..14)?);
        let rest = &b[14..b.len() - 1];
        let nanos = match rest {
            [] => 0,
            [b'.', frac @ ..] => {
                // DER: at least one digit, no trailing zero, and nanoseconds are all we keep.
                if frac.is_empty() || frac.len() > 9 || frac.last() == Some(&b'0') {
                    return None;
                }
                let v = digits(15..15 + frac.len())?;
                v * 10u32.pow(9 - frac.len() as u32)
            }
            _ => return None,
        };
        let t = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_nano_opt(hour, min, sec, nanos)?;
        if sec > 59 {
            return None;
        }
        Some(GenTime(t.and_utc()))
    }
}

impl fmt::Display for GenTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl FixedTag for GenTime {
    const TAG: Tag = Tag::GeneralizedTime;
}

impl<'a> DecodeValue<'a> for GenTime {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let bytes = reader.read_slice(header.length)?;
        GenTime::parse(bytes).ok_or_else(|| Tag::GeneralizedTime.value_error())
    }
}

impl EncodeValue for GenTime {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.text().len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(self.text().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::{Decode, Encode};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn encodes_der_fractions_and_round_trips() {
        for (time, text) in [
            ("2026-11-22T12:58:20Z", "20261122125820Z"),
            ("2026-11-22T12:58:20.5Z", "20261122125820.5Z"),
            ("2026-11-22T12:58:20.120Z", "20261122125820.12Z"),
            ("2026-11-22T12:58:20.000001Z", "20261122125820.000001Z"),
            ("0001-01-01T00:00:00.000000001Z", "00010101000000.000000001Z"),
        ] {
            let g = GenTime::new(t(time)).expect("in range");
            let der = g.to_der().expect("encode");
            assert_eq!(der[0], 0x18);
            assert_eq!(&der[2..], text.as_bytes());
            assert_eq!(GenTime::from_der(&der).expect("decode"), g);
        }
    }

    #[test]
    fn refuses_non_der_and_invalid_times() {
        for bad in [
            "20261122125820.50Z",  // trailing zero
            "20261122125820.Z",    // empty fraction
            "20261122125820,5Z",   // comma
            "20261122125820",      // no Z
            "20261122125820+0100", // offset
            "2026112212582Z",      // short
            "20261322125820Z",     // month 13
            "20261122125860Z",     // second 60
            "20261122125820.1234567891Z",
            "2026112212582aZ",
        ] {
            let mut der = vec![0x18, bad.len() as u8];
            der.extend_from_slice(bad.as_bytes());
            assert!(GenTime::from_der(&der).is_err(), "{bad} accepted");
        }
        assert!(GenTime::new(t("9999-12-31T23:59:59Z")).is_ok());
    }
}
