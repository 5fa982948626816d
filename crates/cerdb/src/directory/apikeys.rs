//! Client applications' API keys and the anonymous-access policy.
//!
//! A key is `cdk_` followed by 43 base64url characters (256 random bits from the system CSPRNG).
//! It is shown once, at creation; the store keeps only its SHA-256 (see the module documentation
//! of [`crate::directory`] for why a fast hash is the right one) and the first 8 characters, so
//! officers can tell keys apart in `pki apikey list`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::DirectoryError;

const KEY_PREFIX: &str = "cdk_";
const KEY_B64_LEN: usize = 43;
const SHOWN_PREFIX_LEN: usize = 8;

/// The default quota of a new key: lookups per second (a bulk lookup costs one per address).
pub const DEFAULT_KEY_RATE: f64 = 1_000.0;
/// The most a quota's rate or burst may be.
pub const MAX_QUOTA: f64 = 1e9;

/// The name officers give a key (`mailer`, `statement-run.2025`): 1 to 64 characters of
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyName(String);

impl ApiKeyName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ApiKeyName {
    type Err = DirectoryError;
    fn from_str(s: &str) -> Result<Self, DirectoryError> {
        let bad = |reason: &str| DirectoryError::InvalidParameter {
            name: "API key name".into(),
            reason: format!("{s:?} {reason}"),
        };
        if s.is_empty() || s.len() > 64 {
            return Err(bad("must have 1 to 64 characters"));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(bad("must start with a letter or digit"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(bad(&format!("contains {c:?}; use letters, digits, '.', '_' and '-'")));
        }
        Ok(ApiKeyName(s.to_string()))
    }
}

impl fmt::Display for ApiKeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ApiKeyName {
    type Error = DirectoryError;
    fn try_from(s: String) -> Result<Self, DirectoryError> {
        s.parse()
    }
}

impl From<ApiKeyName> for String {
    fn from(n: ApiKeyName) -> String {
        n.0
    }
}

/// An API key in clear: exists only between its generation and the officer's screen, and in
/// the `Authorization` header of a client. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.shown_prefix())
    }
}

impl ApiKeySecret {
    /// A new random key.
    pub fn generate() -> Result<Self, DirectoryError> {
        use ring::rand::SecureRandom as _;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| crate::Error::Db("no randomness for the API key".into()))?;
        Ok(ApiKeySecret(format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// The key, to show once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored of it.
    pub fn hash(&self) -> ApiKeyHash {
        let d = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        let mut h = [0u8; 32];
        h.copy_from_slice(d.as_ref());
        ApiKeyHash(h)
    }

    /// The first characters, which `pki apikey list` shows.
    pub fn shown_prefix(&self) -> &str {
        &self.0[..SHOWN_PREFIX_LEN.min(self.0.len())]
    }
}

impl FromStr for ApiKeySecret {
    type Err = DirectoryError;
    /// Checks the form only (`cdk_` and 43 base64url characters); whether the key exists is
    /// [`ApiKeyStore::authenticate`]'s business.
    fn from_str(s: &str) -> Result<Self, DirectoryError> {
        let ok = s.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
            rest.len() == KEY_B64_LEN
                && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if ok {
            Ok(ApiKeySecret(s.to_string()))
        } else {
            Err(DirectoryError::Unauthorized("malformed API key"))
        }
    }
}

/// The SHA-256 of an API key: what the store keeps, and the rate limiter's bucket id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyHash(pub [u8; 32]);

impl fmt::Display for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What a key may do beyond lookups (which every live key may do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiPermission {
    /// Sealed mail (`/api/v1/mail/...`): sign and encrypt messages as the senders the key is
    /// allowed ([`crate::mail_senders::MailSender::allowed_keys`]).
    Mail,
}

impl ApiPermission {
    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            ApiPermission::Mail => "mail",
        }
    }
}

impl FromStr for ApiPermission {
    type Err = DirectoryError;
    fn from_str(s: &str) -> Result<Self, DirectoryError> {
        match s {
            "mail" => Ok(ApiPermission::Mail),
            other => Err(DirectoryError::InvalidParameter {
                name: "permission".into(),
                reason: format!("{other:?} is not a permission: expected mail"),
            }),
        }
    }
}

/// What is stored about a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Its name.
    pub name: ApiKeyName,
    /// The first 8 characters of the key (`cdk_` and 4 more).
    pub prefix: String,
    /// Lookups per second (a bulk lookup costs one per address).
    pub rate: f64,
    /// The bucket's capacity: how many lookups may come at once.
    pub burst: f64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// What it may do beyond lookups; absent in records of keys made before permissions existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<ApiPermission>,
}

impl ApiKeyRecord {
    /// Whether the key has `p`.
    pub fn may(&self, p: ApiPermission) -> bool {
        self.permissions.contains(&p)
    }
}

/// The quota of clients without a key, per IP address (per /64 for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnonymousPolicy {
    /// Whether requests without a key are served at all.
    pub enabled: bool,
    /// Lookups per second.
    pub rate: f64,
    /// Bucket capacity.
    pub burst: f64,
}

impl Default for AnonymousPolicy {
    /// Strict: 2 lookups per second, 20 at once.
    fn default() -> Self {
        AnonymousPolicy { enabled: true, rate: 2.0, burst: 20.0 }
    }
}

/// Checks a quota: rate > 0 and burst ≥ 1, both finite and at most [`MAX_QUOTA`].
pub fn check_quota(rate: f64, burst: f64) -> Result<(), DirectoryError> {
    if !(rate.is_finite() && rate > 0.0 && rate <= MAX_QUOTA) {
        return Err(DirectoryError::InvalidParameter {
            name: "rate".into(),
            reason: format!("{rate} is not a number of lookups per second above 0 and at most {MAX_QUOTA}"),
        });
    }
    if !(burst.is_finite() && (1.0..=MAX_QUOTA).contains(&burst)) {
        return Err(DirectoryError::InvalidParameter {
            name: "burst".into(),
            reason: format!("{burst} is not a number of lookups from 1 to {MAX_QUOTA}"),
        });
    }
    Ok(())
}

/// What the directory stores of API keys and the anonymous policy: the primitives an engine
/// implements. Every write is atomic and durable when it returns.
pub trait ApiKeyRecords: Send + Sync {
    /// Stores a new key under `hash`, unless `record.name` was ever used
    /// ([`DirectoryError::KeyNameTaken`], nothing written).
    fn insert_key(&self, hash: &ApiKeyHash, record: &ApiKeyRecord) -> Result<(), DirectoryError>;

    /// Every key, in no particular order.
    fn key_records(&self) -> Result<Vec<ApiKeyRecord>, DirectoryError>;

    /// The key stored under `hash`, revoked or not.
    fn key_by_hash(&self, hash: &ApiKeyHash) -> Result<Option<ApiKeyRecord>, DirectoryError>;

    /// Marks the key named `name` revoked at `now` and returns it;
    /// [`DirectoryError::UnknownKey`] or [`DirectoryError::KeyAlreadyRevoked`] write nothing.
    fn revoke_key(&self, name: &ApiKeyName, now: DateTime<Utc>) -> Result<ApiKeyRecord, DirectoryError>;

    /// The anonymous policy, if an officer set one.
    fn anonymous_policy(&self) -> Result<Option<AnonymousPolicy>, DirectoryError>;

    /// Sets the anonymous policy.
    fn set_anonymous_policy(&self, policy: &AnonymousPolicy) -> Result<(), DirectoryError>;
}

/// The API keys and the anonymous policy: the rules (key generation, quotas) over the
/// engine's [`ApiKeyRecords`].
#[derive(Clone)]
pub struct ApiKeyStore {
    records: Arc<dyn ApiKeyRecords>,
}

impl fmt::Debug for ApiKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyStore").finish_non_exhaustive()
    }
}

impl ApiKeyStore {
    /// The API keys of `db`.
    pub fn open(db: &crate::CertDb) -> Result<Self, DirectoryError> {
        Ok(ApiKeyStore { records: db.api_key_records() })
    }

    /// Creates a key named `name` (unique among all keys ever created, revoked ones included, so
    /// that logs stay unambiguous), durably. Returns the key in clear, once.
    pub fn create(
        &self,
        name: &ApiKeyName,
        rate: Option<f64>,
        burst: Option<f64>,
        now: DateTime<Utc>,
    ) -> Result<(ApiKeySecret, ApiKeyRecord), DirectoryError> {
        self.create_with(name, rate, burst, &[], now)
    }

    /// [`ApiKeyStore::create`] with `permissions` beyond lookups.
    pub fn create_with(
        &self,
        name: &ApiKeyName,
        rate: Option<f64>,
        burst: Option<f64>,
        permissions: &[ApiPermission],
        now: DateTime<Utc>,
    ) -> Result<(ApiKeySecret, ApiKeyRecord), DirectoryError> {
        let mut permissions = permissions.to_vec();
        permissions.sort();
        permissions.dedup();
        let rate = rate.unwrap_or(DEFAULT_KEY_RATE);
        let burst = burst.unwrap_or(rate.max(1.0));
        check_quota(rate, burst)?;
        let secret = ApiKeySecret::generate()?;
        let rec = ApiKeyRecord {
            name: name.clone(),
            prefix: secret.shown_prefix().to_string(),
            rate,
            burst,
            created_at: now,
            revoked_at: None,
            permissions,
        };
        self.records.insert_key(&secret.hash(), &rec)?;
        Ok((secret, rec))
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<ApiKeyRecord>, DirectoryError> {
        let mut out = self.records.key_records()?;
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Revokes the key named `name`, durably; its next request gets 401.
    pub fn revoke(&self, name: &ApiKeyName, now: DateTime<Utc>) -> Result<ApiKeyRecord, DirectoryError> {
        self.records.revoke_key(name, now)
    }

    /// The live (not revoked) key whose clear text is `secret`.
    pub fn authenticate(
        &self,
        secret: &ApiKeySecret,
    ) -> Result<Option<(ApiKeyHash, ApiKeyRecord)>, DirectoryError> {
        let hash = secret.hash();
        match self.records.key_by_hash(&hash)? {
            Some(rec) if rec.revoked_at.is_none() => Ok(Some((hash, rec))),
            _ => Ok(None),
        }
    }

    /// The anonymous policy (the default until an officer sets one).
    pub fn anonymous(&self) -> Result<AnonymousPolicy, DirectoryError> {
        Ok(self.records.anonymous_policy()?.unwrap_or_default())
    }

    /// Sets the anonymous policy, durably.
    pub fn set_anonymous(&self, policy: &AnonymousPolicy) -> Result<(), DirectoryError> {
        check_quota(policy.rate, policy.burst)?;
        self.records.set_anonymous_policy(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records of keys made before permissions existed read as keys without any; a key's
    /// permissions survive the round trip; unknown permission names are refused.
    #[test]
    fn permissions_default_to_none_and_round_trip() {
        let old = r#"{"name":"mailer","prefix":"cdk_abcd","rate":10.0,"burst":10.0,"created_at":"2026-01-01T00:00:00Z","revoked_at":null}"#;
        let rec: ApiKeyRecord = serde_json::from_str(old).expect("old record");
        assert!(rec.permissions.is_empty() && !rec.may(ApiPermission::Mail));
        assert_eq!(serde_json::to_string(&rec).expect("json"), old);
        let with = ApiKeyRecord { permissions: vec![ApiPermission::Mail], ..rec };
        let back: ApiKeyRecord =
            serde_json::from_str(&serde_json::to_string(&with).expect("json")).expect("read");
        assert!(back.may(ApiPermission::Mail));
        assert_eq!("mail".parse::<ApiPermission>().expect("mail"), ApiPermission::Mail);
        assert!("root".parse::<ApiPermission>().is_err());
    }
}
