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

    /// The text, `YYYYMMDDHHMMSS[.f*]Z`, written digit by digit (once per token: `format!`
    /// cost more than the rest of the TSTInfo's framing together).
    fn text(&self) -> GenTimeText {
        let t = self.0;
        let mut out = GenTimeText { bytes: [0; MAX_TEXT], len: 0 };
        // The year is in 0000–9999 (`new`); the other fields have two digits.
        let year = u32::try_from(t.year()).unwrap_or(0);
        out.push_digits(year, 4);
        for v in [t.month(), t.day(), t.hour(), t.minute(), t.second()] {
            out.push_digits(v, 2);
        }
        // chrono keeps a leap second in `nanosecond() >= 1e9`; genTime has no leap seconds.
        let mut nanos = t.nanosecond() % 1_000_000_000;
        if nanos != 0 {
            let mut digits = 9;
            while nanos.is_multiple_of(10) {
                nanos /= 10;
                digits -= 1;
            }
            out.push(b'.');
            out.push_digits(nanos, digits);
        }
        out.push(b'Z');
        out
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

/// The longest genTime text: 14 digits, `.`, nine fraction digits, `Z`.
const MAX_TEXT: usize = 25;

/// The text of a [`GenTime`], on the stack.
struct GenTimeText {
    bytes: [u8; MAX_TEXT],
    len: usize,
}

impl GenTimeText {
    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    /// Writes the low `width` decimal digits of `v`, zero-padded.
    fn push_digits(&mut self, mut v: u32, width: usize) {
        for i in (0..width).rev() {
            self.bytes[self.len + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += width;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Display for GenTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only ASCII digits, '.' and 'Z' are ever written.
        f.write_str(std::str::from_utf8(self.text().as_bytes()).map_err(|_| fmt::Error)?)
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
        Length::try_from(self.text().len)
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
            ("9999-12-31T23:59:59.999999999Z", "99991231235959.999999999Z"),
            ("0000-01-01T00:00:00.1Z", "00000101000000.1Z"),
            ("2016-12-31T23:59:59.100000300Z", "20161231235959.1000003Z"),
        ] {
            let g = GenTime::new(t(time)).expect("in range");
            let der = g.to_der().expect("encode");
            assert_eq!(der[0], 0x18);
            assert_eq!(&der[2..], text.as_bytes());
            assert_eq!(GenTime::from_der(&der).expect("decode"), g);
        }
    }

    #[test]
    fn the_text_matches_chrono_for_every_fraction_length() {
        // chrono's own formatting of the same instant, trailing zeros of the fraction cut.
        let mut nanos = 1u32;
        for step in 0..2000u32 {
            let time = t("1987-06-05T04:03:02Z") + chrono::Duration::nanoseconds(i64::from(nanos));
            let want = time.format("%Y%m%d%H%M%S%.9f").to_string();
            let want = want.trim_end_matches('0').trim_end_matches('.').to_string() + "Z";
            assert_eq!(GenTime::new(time).expect("in range").to_string(), want);
            nanos = nanos.wrapping_mul(7).wrapping_add(step) % 1_000_000_000;
            if step % 100 == 0 {
                nanos -= nanos % 10u32.pow(step / 100 % 10);
            }
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
