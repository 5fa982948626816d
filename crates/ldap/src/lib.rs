//! # ldap-directory — the certificate directory over LDAPv3, read-only
//!
//! Mail clients (Thunderbird, Outlook, the address books of every major client) find a
//! recipient's encryption certificate by searching an LDAP directory for the address and reading
//! `userCertificate;binary` or `userSMIMECertificate`. This crate serves exactly that from the
//! same live data and with the same anti-harvesting rules as the HTTP directory
//! ([`cerdb::directory`]).
//!
//! **Owns:** the LDAP protocol server: connections (plain and LDAPS), binds, searches and their
//! answers, the entries it shows, and the degenerate PKCS#7 of `userSMIMECertificate`.
//!
//! **Must not:** write anything (every update operation gets `unwillingToPerform`), keep its own
//! copy of certificates or status (it reads [`cerdb::CertReader`] on every search, so a revoked
//! certificate vanishes at once), keep its own quotas (it charges the directory's
//! [`RateLimiter`](cerdb::directory::RateLimiter), so LDAP and HTTP lookups share one budget per
//! client), or log an address.
//!
//! ## The tree
//!
//! | DN | what |
//! |---|---|
//! | `""` (root DSE, base scope) | `namingContexts` (the base DN), `supportedLDAPVersion: 3`, `supportedExtension` (Who am I?) |
//! | the base DN (`[ldap] base_dn`) | the container: `objectClass: top`, plus the class of its first RDN |
//! | `mail=ADDRESS,<base>` | one entry per address with at least one certificate valid now |
//!
//! An address entry holds `objectClass` (`top`, `person`, `organizationalPerson`,
//! `inetOrgPerson`), `mail`, `cn` and `sn` (the address, lower-cased as the directory's index keeps it),
//! `userCertificate;binary` (every certificate of the address valid now, DER: encryption
//! certificates first, newest first, then signing ones) and `userSMIMECertificate` (the same
//! certificates as a degenerate PKCS#7 SignedData, RFC 2798, which Outlook reads).
//!
//! ## Searches
//!
//! A search below the base must name its addresses: `(mail=ADDRESS)`, or an `|` of such
//! equalities (at most [`LdapConfig::max_addresses`]), possibly inside an `&` with other
//! conditions, which are then checked against the entries found. Addresses are normalised as
//! the HTTP directory normalises them ([`cerdb::directory::parse_address`]); one it would refuse
//! matches nothing. Everything else below the base — presence (`(mail=*)`), substrings
//! (`(mail=a*)`), a subtree search without a `mail` equality — is answered `unwillingToPerform`,
//! so the directory cannot be walked. Attribute selection, `typesOnly` and `sizeLimit` are
//! honoured.
//!
//! ## Binds and quotas
//!
//! * anonymous (no bind, or a simple bind with empty name and password): served when the
//!   directory's anonymous lookups are enabled, charged to the client's IP address with the
//!   anonymous quota — the same bucket anonymous HTTP lookups use;
//! * simple bind as `cn=NAME,<base>` with an API key of that name as password: charged to the key
//!   with its quota; an unknown or revoked key gets `invalidCredentials`, and a key revoked after
//!   the bind is refused on the connection's next search.
//!
//! A search costs one lookup per address it names; over the quota it gets `adminLimitExceeded`.
//!
//! ## Bad input
//!
//! Malformed BER, a message over [`LdapConfig::max_message_bytes`], an operation the codec does
//! not know, or a response sent by the client get a notice of disconnection (RFC 4511 §4.4.1)
//! and the connection is closed; the server goes on serving everyone else. Idle connections
//! are closed after [`LdapConfig::idle_timeout_secs`].
//!
//! ## Why `ldap3_proto`
//!
//! It is the LDAPv3 codec of Kanidm's LDAP gateway: a `tokio_util` codec with limits on message
//! size and BER depth, typed messages and filters (RFC 4511), maintained and fuzzed in a
//! production identity server. It runs on tokio, as actix-web does, so the LDAP listeners are
//! `actix-server` services on the same runtime as `pki serve`'s HTTP server.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod dn;
mod entry;
mod filter;
mod pkcs7;
mod server;
mod session;

use std::sync::Arc;

use cerdb::directory::Directory;
use cerdb::CertReader;
use ldap3_proto::proto::{LdapResult, LdapResultCode};
use serde::{Deserialize, Serialize};

pub use dn::Dn;
pub use pkcs7::certs_only;
pub use server::{bind, server, server_on, Bound, Listening};

/// The OID of the notice of disconnection (RFC 4511 §4.4.1).
pub const NOTICE_OF_DISCONNECTION: &str = "1.3.6.1.4.1.1466.20036";
/// The OID of the "Who am I?" extended operation (RFC 4532).
pub const WHOAMI: &str = "1.3.6.1.4.1.4203.1.11.3";

/// `[ldap]` in `pki.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapConfig {
    /// Address of the plain LDAP listener (for example `127.0.0.1:3890`); without it and
    /// without `tls_listen` there is no LDAP service.
    pub listen: Option<String>,
    /// Address of the LDAPS listener, with the certificate of `[server.tls]`.
    pub tls_listen: Option<String>,
    /// The DN the address entries live under.
    pub base_dn: String,
    /// The most addresses one search may name (an `|` of equalities).
    pub max_addresses: usize,
    /// The largest LDAP message accepted, in bytes.
    pub max_message_bytes: usize,
    /// A connection that sends nothing this long is closed.
    pub idle_timeout_secs: u64,
    /// The most connections served at once per worker thread.
    pub max_connections: usize,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            listen: None,
            tls_listen: None,
            base_dn: "ou=certificates,dc=bank,dc=example".into(),
            max_addresses: 16,
            max_message_bytes: 32 * 1024,
            idle_timeout_secs: 300,
            max_connections: 4096,
        }
    }
}

impl LdapConfig {
    /// Whether any LDAP listener is configured.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.tls_listen.is_some()
    }

    /// Checks every value; the error names the setting.
    pub fn validate(&self) -> Result<(), Error> {
        let dn = Dn::parse(&self.base_dn)
            .map_err(|reason| Error::InvalidBaseDn { dn: self.base_dn.clone(), reason })?;
        if dn.is_root() {
            return Err(Error::InvalidBaseDn { dn: self.base_dn.clone(), reason: "it is empty".into() });
        }
        let check = |name: &'static str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::InvalidSetting { name, value: v.to_string(), expected: format!("{lo} to {hi}") })
            }
        };
        check("max_addresses", self.max_addresses as u64, 1, cerdb::directory::MAX_BULK as u64)?;
        check("max_message_bytes", self.max_message_bytes as u64, 1024, 1 << 20)?;
        check("idle_timeout_secs", self.idle_timeout_secs, 1, 86_400)?;
        check("max_connections", self.max_connections as u64, 1, 1 << 20)?;
        Ok(())
    }
}

/// What can go wrong setting the LDAP service up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `base_dn` is not a usable DN.
    #[error("[ldap] base_dn = {dn:?}: {reason}")]
    InvalidBaseDn {
        /// The value.
        dn: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of range.
    #[error("[ldap] {name} = {value}: expected {expected}")]
    InvalidSetting {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
        /// The range.
        expected: String,
    },
    /// LDAPS is configured but no TLS certificate was given.
    #[error("[ldap] tls_listen needs the server's TLS certificate")]
    NoTlsCertificate,
    /// A listener could not be opened.
    #[error("cannot listen for LDAP on {addr}: {error}")]
    Listen {
        /// The address.
        addr: String,
        /// Why (in the message, and so not a `source` too: the CLI prints the chain).
        error: std::io::Error,
    },
}

/// The state every connection reads: the HTTP directory's state (API keys, anonymous policy,
/// rate limiter, clock), the storage's reader, and the settings.
pub struct LdapDirectory {
    dir: Arc<Directory>,
    reader: Arc<dyn CertReader>,
    base: Dn,
    config: LdapConfig,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory").field("base", &self.config.base_dn).finish_non_exhaustive()
    }
}

impl LdapDirectory {
    /// The LDAP view of `dir`, reading certificates through `reader`.
    pub fn new(
        dir: Arc<Directory>,
        reader: Arc<dyn CertReader>,
        config: &LdapConfig,
    ) -> Result<Arc<Self>, Error> {
        config.validate()?;
        let base = Dn::parse(&config.base_dn)
            .map_err(|reason| Error::InvalidBaseDn { dn: config.base_dn.clone(), reason })?;
        Ok(Arc::new(LdapDirectory { dir, reader, base, config: config.clone() }))
    }

    /// The settings.
    pub fn config(&self) -> &LdapConfig {
        &self.config
    }
}

/// Why an operation is refused or failed: the one place where that becomes an LDAP result
/// ([`Refusal::result`]).
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Anti-harvesting, writes, unauthenticated binds.
    Unwilling(String),
    /// Over the client's quota.
    OverQuota { retry_after_secs: u64 },
    /// No bind and anonymous lookups are off.
    AnonymousDisabled,
    /// An anonymous bind while anonymous lookups are off.
    AnonymousBindDisabled,
    /// The connection's key was revoked since its bind.
    KeyRevoked,
    /// Bind with a wrong name or an unknown, revoked or malformed key.
    InvalidCredentials,
    /// SASL or another method than simple.
    AuthMethod,
    /// The base of a search does not exist; `matched` is the part that does.
    NoSuchObject { matched: String },
    /// A DN that cannot be parsed.
    InvalidDn(String),
    /// The protocol was not followed.
    Protocol(String),
    /// A critical control this server does not implement.
    CriticalControl(String),
    /// Storage failed (logged; the client learns nothing more).
    Storage(String),
}

impl Refusal {
    /// The LDAP result of this refusal.
    pub(crate) fn result(&self) -> LdapResult {
        let (code, message, matched) = match self {
            Refusal::Unwilling(m) => (LdapResultCode::UnwillingToPerform, m.clone(), String::new()),
            Refusal::OverQuota { retry_after_secs } => (
                LdapResultCode::AdminLimitExceeded,
                format!("lookup quota exceeded: retry after {retry_after_secs} s"),
                String::new(),
            ),
            Refusal::AnonymousDisabled => (
                LdapResultCode::InsufficentAccessRights,
                "anonymous lookups are disabled: bind as cn=NAME,<base> with an API key".into(),
                String::new(),
            ),
            Refusal::AnonymousBindDisabled => (
                LdapResultCode::InappropriateAuthentication,
                "anonymous lookups are disabled: bind as cn=NAME,<base> with an API key".into(),
                String::new(),
            ),
            Refusal::KeyRevoked => (
                LdapResultCode::InsufficentAccessRights,
                "the API key this connection bound with is no longer valid".into(),
                String::new(),
            ),
            Refusal::InvalidCredentials => (
                LdapResultCode::InvalidCredentials,
                "bind as cn=NAME,<base> with the live API key named NAME".into(),
                String::new(),
            ),
            Refusal::AuthMethod => (
                LdapResultCode::AuthMethodNotSupported,
                "only simple binds are supported".into(),
                String::new(),
            ),
            Refusal::NoSuchObject { matched } => {
                (LdapResultCode::NoSuchObject, "no such entry".into(), matched.clone())
            }
            Refusal::InvalidDn(m) => (LdapResultCode::InvalidDNSyntax, m.clone(), String::new()),
            Refusal::Protocol(m) => (LdapResultCode::ProtocolError, m.clone(), String::new()),
            Refusal::CriticalControl(oid) => (
                LdapResultCode::UnavailableCriticalExtension,
                format!("control {oid} is not supported"),
                String::new(),
            ),
            Refusal::Storage(e) => {
                tracing::error!(error = %e, "LDAP directory storage failure");
                (LdapResultCode::OperationsError, "internal error".into(), String::new())
            }
        };
        LdapResult { code, matcheddn: matched, message, referral: Vec::new() }
    }
}

impl From<cerdb::Error> for Refusal {
    fn from(e: cerdb::Error) -> Self {
        Refusal::Storage(e.to_string())
    }
}

impl From<cerdb::directory::DirectoryError> for Refusal {
    fn from(e: cerdb::directory::DirectoryError) -> Self {
        Refusal::Storage(e.to_string())
    }
}

/// A result of success.
pub(crate) fn success() -> LdapResult {
    LdapResult {
        code: LdapResultCode::Success,
        matcheddn: String::new(),
        message: String::new(),
        referral: vec![],
    }
}

#[cfg(test)]
mod tests;
