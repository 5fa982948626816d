//! Passwords: the policy for new ones, argon2id hashing, and one-time passwords.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;

/// Shortest acceptable password, in characters.
pub const MIN_LEN: usize = 12;
/// Longest acceptable password, in characters (hashing cost is bounded).
pub const MAX_LEN: usize = 256;

static COMMON_TEXT: &str = include_str!("data/common-passwords.txt");

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_TEXT.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
    })
}

/// Whether `password` is, or is a common password padded with digits and symbols (such as
/// `Password1234!`), in the bundled list of the 10,000 most common passwords.
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    if common().contains(lower.as_str()) {
        return true;
    }
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    core.chars().count() >= 4 && common().contains(core)
}

/// Checks a new password for `user`: at least [`MIN_LEN`] characters, not common, not the user
/// name.
pub fn check_policy(password: &str, user: &str) -> Result<(), Error> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(Error::WeakPassword(format!("it has {n} characters; at least {MIN_LEN} are required")));
    }
    if n > MAX_LEN {
        return Err(Error::WeakPassword(format!("it has {n} characters; at most {MAX_LEN} are accepted")));
    }
    if is_common(password) {
        return Err(Error::WeakPassword("it is in the list of common passwords".into()));
    }
    if user.len() >= 3 && password.to_lowercase().contains(&user.to_lowercase()) {
        return Err(Error::WeakPassword("it contains the user name".into()));
    }
    Ok(())
}

/// An argon2id hash (PHC string) of `password` with a fresh random salt (argon2 crate
/// defaults: m = 19 MiB, t = 2, p = 1, the OWASP minimum).
pub fn hash(password: &str) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    SystemRandom::new().fill(&mut salt).map_err(|_| Error::Internal("no randomness for a salt".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hashing: {e}")))
}

/// Whether `password` matches `phc`.
pub fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user does not exist, so that an unknown name takes as
/// long as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash("not a password of anyone").unwrap_or_default())
}

const OTP_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// A one-time password: 20 characters from 54 unambiguous ones (about 115 bits).
pub fn one_time() -> Result<String, Error> {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(20);
    while out.len() < 20 {
        let mut b = [0u8; 32];
        rng.fill(&mut b).map_err(|_| Error::Internal("no randomness".into()))?;
        // Rejection sampling: 216 = 4 * 54, so bytes below it map uniformly.
        for x in b.iter().filter(|x| **x < 216) {
            if out.len() < 20 {
                out.push(char::from(OTP_ALPHABET[usize::from(*x) % OTP_ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refuses_short_common_and_padded_common_passwords() {
        assert!(check_policy("short-one", "alice").is_err());
        assert!(check_policy("123qweasdzxc", "alice").is_err(), "listed 12-character password");
        assert!(check_policy("Password1234!", "alice").is_err(), "common word padded with digits");
        assert!(check_policy("qwertyuiop123456", "alice").is_err());
        assert!(check_policy("alice-is-my-name-2024", "alice").is_err(), "contains the name");
        assert!(check_policy("Correct-Horse-Battery-9", "alice").is_ok());
        assert!(check_policy(&"x".repeat(MAX_LEN + 1), "alice").is_err());
        assert!(common().len() > 9_000, "the bundled list is loaded");
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash("Correct-Horse-Battery-9").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify(&h, "Correct-Horse-Battery-9"));
        assert!(!verify(&h, "Correct-Horse-Battery-8"));
        assert!(!verify("garbage", "x"));
        assert_ne!(hash("same").expect("h"), hash("same").expect("h"), "salted");
        assert!(!verify(dummy_hash(), ""));
    }

    #[test]
    fn one_time_passwords_are_random_and_unambiguous() {
        let a = one_time().expect("otp");
        let b = one_time().expect("otp");
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| OTP_ALPHABET.contains(&c)));
    }
}
