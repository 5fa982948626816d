//! RFC 6238 TOTP (HMAC-SHA-1, 30-second steps, 6 digits: what every authenticator app
//! accepts), RFC 4648 base32 for the secret, and the `otpauth://` URI that QR codes carry.

use chrono::{DateTime, Utc};
use ring::hmac;

/// Seconds per time step (RFC 6238 §4.1 X).
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Bytes of a secret (160 bits, RFC 4226 §4 recommends at least 128).
pub const SECRET_LEN: usize = 20;

/// The time step of `t` (RFC 6238 §4.2 T, with T0 = 0).
pub fn step_of(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp().max(0) / STEP_SECS).unwrap_or(0)
}

/// The code of `step` (RFC 4226 §5.3 dynamic truncation).
pub fn code_at(secret: &[u8], step: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let h = mac.as_ref();
    let off = usize::from(h[h.len() - 1] & 0x0f);
    let bin = (u32::from(h[off]) & 0x7f) << 24
        | u32::from(h[off + 1]) << 16
        | u32::from(h[off + 2]) << 8
        | u32::from(h[off + 3]);
    bin % 10u32.pow(DIGITS)
}

/// Checks `code` against the steps around `now` (one step either side, for clock drift) that
/// come after `last_step`; the step that matched. A code is never accepted twice.
pub fn verify(secret: &[u8], code: &str, now: DateTime<Utc>, last_step: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let t = step_of(now);
    let mut found = None;
    for step in [t.saturating_sub(1), t, t + 1] {
        // Compare every candidate, so the time taken does not say which one matched.
        let ok = crate::ct_eq(&code_at(secret, step).to_be_bytes(), &wanted.to_be_bytes());
        if ok && step > last_step && found.is_none() {
            found = Some(step);
        }
    }
    found
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (as authenticator apps take secrets).
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let v = buf.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..chars {
            out.push(char::from(B32[((v >> (35 - 5 * i)) & 31) as usize]));
        }
    }
    out
}

/// Base32 with a space every four characters, for reading aloud or typing.
pub fn base32_grouped(bytes: &[u8]) -> String {
    let s = base32(bytes);
    s.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

/// The key URI (`otpauth://totp/ISSUER:ACCOUNT?secret=...`) of the Google Authenticator format.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        crate::views::url_escape(issuer),
        crate::views::url_escape(account),
        base32(secret),
        crate::views::url_escape(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 Appendix B, SHA-1 seed "12345678901234567890"; the 8-digit codes there end in
        // these 6 digits.
        let seed = b"12345678901234567890";
        for (t, code) in [
            (59i64, 287_082u32),
            (1_111_111_109, 81_804),
            (1_111_111_111, 50_471),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
            (20_000_000_000, 353_130),
        ] {
            let at = DateTime::from_timestamp(t, 0).expect("time");
            assert_eq!(code_at(seed, step_of(at)), code, "T = {t}");
        }
    }

    #[test]
    fn verify_accepts_one_step_of_drift_and_never_a_code_twice() {
        let secret = [9u8; SECRET_LEN];
        let now = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let t = step_of(now);
        let code = |s: u64| format!("{:06}", code_at(&secret, s));
        assert_eq!(verify(&secret, &code(t), now, 0), Some(t));
        assert_eq!(verify(&secret, &code(t - 1), now, 0), Some(t - 1));
        assert_eq!(verify(&secret, &code(t + 1), now, 0), Some(t + 1));
        assert_eq!(verify(&secret, &code(t + 2), now, 0), None);
        assert_eq!(verify(&secret, &code(t - 2), now, 0), None);
        assert_eq!(verify(&secret, &code(t), now, t), None, "replay of the same step");
        assert_eq!(verify(&secret, &code(t + 1), now, t), Some(t + 1));
        assert_eq!(verify(&secret, "12345", now, 0), None);
        assert_eq!(verify(&secret, "abcdef", now, 0), None);
        let spaced = format!("{} {}", &code(t)[..3], &code(t)[3..]);
        assert_eq!(verify(&secret, &spaced, now, 0), Some(t));
    }

    #[test]
    fn base32_and_uri() {
        // RFC 4648 §10 test vectors (without padding).
        for (input, out) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), out);
        }
        assert_eq!(base32_grouped(b"foobar"), "MZXW 6YTB OI");
        assert_eq!(
            otpauth_uri("PKI Console", "alice", b"foobar"),
            "otpauth://totp/PKI%20Console:alice?secret=MZXW6YTBOI&issuer=PKI%20Console&algorithm=SHA1&digits=6&period=30"
        );
    }
}
