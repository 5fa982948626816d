//! Sender identities of sealed mail: which names exist, their address, the handle of their key in
//! key custody, the serial of their signing certificate, and which API keys may send as them.
//!
//! Kept through the certificate store's metadata primitives ([`crate::CertStore::meta_get`] and
//! [`crate::CertStore::meta_put`]) under one key, [`META_KEY`], as a JSON document: every engine
//! has them, so senders live wherever the certificates live (sled or PostgreSQL) with no schema
//! change. Senders are few (one per kind of mail a bank sends) and change only by an officer's
//! command; each change is written only over the document it read ([`crate::CertStore::meta_insert`],
//! [`crate::CertStore::meta_replace`]), so commands at once on several nodes or over the admin
//! socket lose none of each other's changes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::directory::ApiKeyName;
use crate::{CertDb, EmailAddress, Error, Serial};

/// The metadata key under which the senders are kept.
pub const META_KEY: &str = "mail.senders";

/// The name of a sender identity (`statements`, `otp`): 1 to 64 characters of lower-case
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SenderName(String);

impl SenderName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SenderName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(SenderName(s.to_string()))
        } else {
            Err(Error::InvalidSenderName(s.chars().take(80).collect()))
        }
    }
}

impl fmt::Display for SenderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SenderName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<SenderName> for String {
    fn from(n: SenderName) -> String {
        n.0
    }
}

/// One sender identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailSender {
    /// Its name, as API clients give it.
    pub name: SenderName,
    /// The address it sends from (the subject of its certificate).
    pub email: EmailAddress,
    /// The handle of its signing key in key custody.
    pub key_handle: String,
    /// The serial of its signing certificate.
    pub serial: Serial,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// The API keys that may send as it.
    #[serde(default)]
    pub allowed_keys: Vec<ApiKeyName>,
}

impl MailSender {
    /// Whether the API key named `key` may send as this sender.
    pub fn allows(&self, key: &ApiKeyName) -> bool {
        self.allowed_keys.iter().any(|k| k == key)
    }
}

/// The sender identities of one installation.
#[derive(Clone, Debug)]
pub struct MailSenders {
    db: CertDb,
}

impl MailSenders {
    /// The senders kept in `db`.
    pub fn open(db: &CertDb) -> Self {
        MailSenders { db: db.clone() }
    }

    fn load(&self) -> Result<BTreeMap<SenderName, MailSender>, Error> {
        Self::parse(self.db.meta_get(META_KEY)?.as_deref())
    }

    fn parse(text: Option<&str>) -> Result<BTreeMap<SenderName, MailSender>, Error> {
        match text {
            None => Ok(BTreeMap::new()),
            Some(text) => {
                serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("mail senders: {e}")))
            }
        }
    }

    /// Applies `change` to the senders and writes them, durably, only over the document it read:
    /// when another process (an officer's command on another node, or over the admin socket)
    /// wrote meanwhile, it reads again and applies `change` to that. Nothing is written when
    /// `change` fails.
    fn update<T>(
        &self,
        change: impl Fn(&mut BTreeMap<SenderName, MailSender>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        loop {
            let read = self.db.meta_get(META_KEY)?;
            let mut all = Self::parse(read.as_deref())?;
            let out = change(&mut all)?;
            let text =
                serde_json::to_string(&all).map_err(|e| Error::Corrupt(format!("mail senders: {e}")))?;
            let written = match &read {
                Some(old) if *old == text => true,
                Some(old) => self.db.meta_replace(META_KEY, old, &text)?,
                None => self.db.meta_insert(META_KEY, &text)?,
            };
            if written {
                return Ok(out);
            }
        }
    }

    /// Every sender, by name.
    pub fn list(&self) -> Result<Vec<MailSender>, Error> {
        Ok(self.load()?.into_values().collect())
    }

    /// The sender named `name`.
    pub fn get(&self, name: &SenderName) -> Result<Option<MailSender>, Error> {
        Ok(self.load()?.remove(name))
    }

    /// Whether a sender named `name` exists.
    pub fn contains(&self, name: &SenderName) -> Result<bool, Error> {
        Ok(self.load()?.contains_key(name))
    }

    /// Adds `sender`, durably; [`Error::SenderExists`] if its name is taken (nothing written).
    pub fn insert(&self, sender: MailSender) -> Result<(), Error> {
        self.update(|all| {
            if all.contains_key(&sender.name) {
                return Err(Error::SenderExists(sender.name.to_string()));
            }
            all.insert(sender.name.clone(), sender.clone());
            Ok(())
        })
    }

    /// Removes the sender named `name` and returns it; [`Error::UnknownSender`] if there is none.
    pub fn remove(&self, name: &SenderName) -> Result<MailSender, Error> {
        self.update(|all| all.remove(name).ok_or_else(|| Error::UnknownSender(name.to_string())))
    }

    /// Allows the API key named `key` to send as `name` (nothing changes if it already may).
    pub fn allow(&self, name: &SenderName, key: &ApiKeyName) -> Result<MailSender, Error> {
        self.update(|all| {
            let s = all.get_mut(name).ok_or_else(|| Error::UnknownSender(name.to_string()))?;
            if !s.allows(key) {
                s.allowed_keys.push(key.clone());
                s.allowed_keys.sort();
            }
            Ok(s.clone())
        })
    }

    /// Puts the certificate `serial`, its key under `key_handle`, in the place of the sender
    /// `name`'s certificate `replacing` (a renewal), keeping its name, address and API keys.
    /// `Ok(None)`, nothing written, when the sender no longer has that certificate: another
    /// process renewed or removed it meanwhile.
    pub fn replace_certificate(
        &self,
        name: &SenderName,
        replacing: &Serial,
        serial: &Serial,
        key_handle: &str,
    ) -> Result<Option<MailSender>, Error> {
        self.update(|all| {
            Ok(all.get_mut(name).filter(|s| s.serial == *replacing).map(|s| {
                s.serial = serial.clone();
                s.key_handle = key_handle.to_string();
                s.clone()
            }))
        })
    }

    /// Withdraws the API key named `key` from `name`.
    pub fn disallow(&self, name: &SenderName, key: &ApiKeyName) -> Result<MailSender, Error> {
        self.update(|all| {
            let s = all.get_mut(name).ok_or_else(|| Error::UnknownSender(name.to_string()))?;
            s.allowed_keys.retain(|k| k != key);
            Ok(s.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_names_are_checked() {
        for ok in ["statements", "otp", "a", "x.y_z-1"] {
            assert!(ok.parse::<SenderName>().is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "Statements", "-x", "a b", "a/b", "é", long.as_str(), "x\0"] {
            assert!(bad.parse::<SenderName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn senders_are_added_allowed_and_removed_on_the_sled_engine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = CertDb::open(dir.path()).expect("open");
        let senders = MailSenders::open(&db);
        let name: SenderName = "statements".parse().expect("name");
        let s = MailSender {
            name: name.clone(),
            email: "statements@bank.example".parse().expect("email"),
            key_handle: "mail/sender/01".into(),
            serial: "01".parse().expect("serial"),
            created_at: Utc::now(),
            allowed_keys: vec![],
        };
        senders.insert(s.clone()).expect("insert");
        assert!(matches!(senders.insert(s.clone()), Err(Error::SenderExists(_))));
        let key: ApiKeyName = "mailer".parse().expect("key");
        assert!(senders.allow(&name, &key).expect("allow").allows(&key));
        drop(senders);
        let again = MailSenders::open(&db);
        assert!(again.get(&name).expect("get").expect("present").allows(&key));
        let (old, new): (Serial, Serial) = ("01".parse().expect("serial"), "02".parse().expect("serial"));
        let renewed = again.replace_certificate(&name, &old, &new, "mail/sender/02").expect("replace");
        let renewed = renewed.expect("it had the certificate replaced");
        assert_eq!((renewed.serial.clone(), renewed.key_handle.as_str()), (new.clone(), "mail/sender/02"));
        assert!(renewed.allows(&key), "its API keys are kept");
        // Renewed meanwhile by another process: nothing changes.
        assert!(again.replace_certificate(&name, &old, &old, "mail/sender/01").expect("read").is_none());
        assert_eq!(again.get(&name).expect("get").expect("present").serial, new);
        assert!(again.disallow(&name, &key).is_ok_and(|s| !s.allows(&key)));
        assert_eq!(again.remove(&name).expect("remove").email.as_str(), "statements@bank.example");
        assert!(matches!(again.remove(&name), Err(Error::UnknownSender(_))));
        assert!(again.list().expect("list").is_empty());
    }
}
