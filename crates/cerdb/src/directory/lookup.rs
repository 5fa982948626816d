//! The lookups themselves, free of HTTP: what an address query is, and the answers.

use chrono::{DateTime, Utc};

use super::{Directory, DirectoryError};
use crate::{CaId, CertKind, CertRecord, CertStatus, EmailAddress, Fingerprint, Serial, Usage};

/// What a lookup names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressQuery {
    /// An address in clear (normalised).
    Email(EmailAddress),
    /// The SHA-256 of an address's lookup key ([`EmailAddress::lookup_hash`]).
    Sha256([u8; 32]),
    /// Well-formed by the API's syntax, but not an address the CA would certify (a local part
    /// over 64 characters, a domain label over 63, a domain over 253): it matches nothing.
    Unmatchable,
}

const ATEXT_SPECIALS: &[u8] = b"!#$%&'*+/=?^_`{|}~-";

/// The syntax of an address in the API (the OpenAPI document's `pattern` for `email`, plus at
/// most 254 characters): a dot-atom local part, `@`, and a host name of two or more labels.
pub const EMAIL_PATTERN: &str = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$";

/// The most characters an address may have.
pub const EMAIL_MAX_LEN: usize = 254;

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(&b)
}

/// Whether `s` matches [`EMAIL_PATTERN`], written out by hand. The two must agree: the
/// schemathesis run of the end-to-end tests sends addresses generated from the pattern (which must
/// be accepted) and strings that break it (which must be refused).
fn matches_email_syntax(s: &str) -> Result<(), &'static str> {
    let Some((local, domain)) = s.split_once('@') else { return Err("no '@'") };
    if local.is_empty() {
        return Err("empty local part");
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err("misplaced '.' in the local part");
        }
        if !atom.bytes().all(is_atext) {
            return Err("a character that is not allowed in the local part");
        }
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("the domain needs at least two labels");
    }
    for l in labels {
        let b = l.as_bytes();
        if b.is_empty() {
            return Err("an empty domain label");
        }
        if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
            return Err("a character that is not allowed in the domain (or a second '@')");
        }
        if b[0] == b'-' || b[b.len() - 1] == b'-' {
            return Err("a domain label starts or ends with '-'");
        }
    }
    Ok(())
}

/// Parses an address given to the API. `Err` (HTTP 400) when it breaks the API's syntax;
/// [`AddressQuery::Unmatchable`] when it keeps the syntax but could never have a certificate.
pub fn parse_address(s: &str) -> Result<AddressQuery, String> {
    if s.chars().count() > EMAIL_MAX_LEN {
        return Err(format!("longer than {EMAIL_MAX_LEN} characters"));
    }
    matches_email_syntax(s).map_err(|why| format!("not an e-mail address: {why}"))?;
    Ok(match s.parse::<EmailAddress>() {
        Ok(e) => AddressQuery::Email(e),
        Err(_) => AddressQuery::Unmatchable,
    })
}

/// Parses `email_sha256`: 64 hex digits, either case.
pub fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected 64 hex digits: the SHA-256 of the lower-cased address".into());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Parses `usage` strictly: `encryption` or `signing`.
pub fn parse_usage(s: &str) -> Result<Usage, String> {
    match s {
        "encryption" => Ok(Usage::Encryption),
        "signing" => Ok(Usage::Signing),
        _ => Err(format!("unknown usage {s:?}: expected encryption or signing")),
    }
}

/// Parses a fingerprint path segment: 64 hex digits.
pub fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    parse_sha256(s)
        .map(Fingerprint)
        .map_err(|_| "expected 64 hex digits (SHA-256 of the certificate DER)".into())
}

/// Parses a serial path segment: 1 to 64 hex digits. `Ok(None)` for well-formed values no
/// certificate can have (zero, or over 20 octets).
pub fn parse_serial(s: &str) -> Result<Option<Serial>, String> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected 1 to 64 hex digits".into());
    }
    Ok(s.parse::<Serial>().ok())
}

impl Directory {
    /// The address a query names, if it could have certificates.
    pub fn resolve(&self, q: &AddressQuery) -> Result<Option<EmailAddress>, DirectoryError> {
        match q {
            AddressQuery::Email(e) => Ok(Some(e.clone())),
            AddressQuery::Sha256(h) => Ok(self.reader.email_by_hash(h)?),
            AddressQuery::Unmatchable => Ok(None),
        }
    }

    /// Whether certificates `ca` issued count as not valid: the issuing CA after `pki ca
    /// compromise --ca issuing` ([`crate::WithdrawnIssuers`]). Every address certificate is the
    /// issuing CA's, so then no lookup finds one.
    pub fn issuer_withdrawn(&self, ca: CaId) -> bool {
        self.db.withdrawn_issuers().is_withdrawn(ca)
    }

    /// The status a certificate is shown with by itself (by serial or fingerprint): revoked
    /// once its issuer is withdrawn ([`crate::WithdrawnIssuers::status_of`]).
    pub fn status_of(&self, rec: &CertRecord, now: DateTime<Utc>) -> CertStatus {
        self.db.withdrawn_issuers().status_of(rec, now)
    }

    /// The revocation a certificate is shown with: its own, or its withdrawn issuer's
    /// (cACompromise).
    pub fn revocation_of(&self, rec: &CertRecord) -> Option<crate::Revocation> {
        self.db.withdrawn_issuers().revocation_of(rec)
    }

    /// Whether the address has a certificate of `usage` valid at `now`.
    pub fn exists(&self, q: &AddressQuery, usage: Usage, now: DateTime<Utc>) -> Result<bool, DirectoryError> {
        let found = match self.resolve(q)? {
            _ if self.issuer_withdrawn(CaId::Issuing) => false,
            Some(email) => self
                .reader
                .states_by_email(&email, CertKind::from(usage))?
                .iter()
                .any(|(_, s)| s.status_at(now) == CertStatus::Valid),
            None => false,
        };
        self.count_lookup(found);
        Ok(found)
    }

    /// [`Directory::resolve`], awaited on the pipelined reads where the engine has them.
    async fn resolve_awaited(&self, q: &AddressQuery) -> Result<Option<EmailAddress>, DirectoryError> {
        match (q, &self.pipelined) {
            (AddressQuery::Sha256(h), Some(reads)) => Ok(reads.email_by_hash(h).await?),
            _ => self.resolve(q),
        }
    }

    /// [`Directory::exists`] for async callers: awaited on the engine's pipelined reads where it
    /// has them (PostgreSQL), [`Directory::exists`] itself elsewhere. Same answer, same counters.
    pub async fn exists_awaited(
        &self,
        q: &AddressQuery,
        usage: Usage,
        now: DateTime<Utc>,
    ) -> Result<bool, DirectoryError> {
        let Some(reads) = &self.pipelined else { return self.exists(q, usage, now) };
        let found = match self.resolve_awaited(q).await? {
            _ if self.issuer_withdrawn(CaId::Issuing) => false,
            Some(email) => reads
                .states_by_email(&email, CertKind::from(usage))
                .await?
                .iter()
                .any(|(_, s)| s.status_at(now) == CertStatus::Valid),
            None => false,
        };
        self.count_lookup(found);
        Ok(found)
    }

    /// [`Directory::newest_valid`] for async callers, as [`Directory::exists_awaited`] is
    /// [`Directory::exists`].
    pub async fn newest_valid_awaited(
        &self,
        q: &AddressQuery,
        usage: Usage,
        now: DateTime<Utc>,
    ) -> Result<Option<CertRecord>, DirectoryError> {
        let Some(reads) = &self.pipelined else { return self.newest_valid(q, usage, now) };
        let found = match self.resolve_awaited(q).await? {
            Some(email) => reads.newest_valid(&email, usage.into(), now).await?,
            None => None,
        }
        .filter(|r| !self.issuer_withdrawn(r.issuer));
        self.count_lookup(found.is_some());
        Ok(found)
    }

    fn count_lookup(&self, found: bool) {
        let counter = if found { &self.hits } else { &self.misses };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Lookups (exists and fetch) that found a valid certificate, and that did not, since this
    /// directory was opened.
    pub fn lookup_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// The newest certificate of `usage` valid at `now` (newest notBefore), DER included; none
    /// while its issuer is withdrawn.
    pub fn newest_valid(
        &self,
        q: &AddressQuery,
        usage: Usage,
        now: DateTime<Utc>,
    ) -> Result<Option<CertRecord>, DirectoryError> {
        let found = match self.resolve(q)? {
            Some(email) => self.reader.newest_valid(&email, usage.into(), now)?,
            None => None,
        }
        .filter(|r| !self.issuer_withdrawn(r.issuer));
        self.count_lookup(found.is_some());
        Ok(found)
    }

    /// Any certificate by fingerprint, whatever its status, DER included.
    pub fn by_fingerprint(&self, fp: &Fingerprint) -> Result<Option<CertRecord>, DirectoryError> {
        Ok(self.reader.by_fingerprint(fp)?)
    }

    /// Any certificate by serial, whatever its status, DER included.
    pub fn by_serial(&self, serial: &Serial) -> Result<Option<CertRecord>, DirectoryError> {
        Ok(self.reader.get(serial)?)
    }

    /// [`Directory::newest_valid`] for each query, in order.
    pub fn bulk(
        &self,
        queries: &[AddressQuery],
        usage: Usage,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<CertRecord>>, DirectoryError> {
        queries.iter().map(|q| self.newest_valid(q, usage, now)).collect()
    }

    /// The PEM of the CA that issued `rec`, for the chain.
    pub fn chain_pem(&self, rec: &CertRecord) -> Option<&str> {
        if rec.kind == CertKind::RootCa {
            return None;
        }
        self.issuer_pem(rec.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_accepts_dot_atoms_and_host_names() {
        for ok in [
            "alice@example.com",
            "Alice.Smith@EXAMPLE.com",
            "a!#$%&'*+/=?^_`{|}~-b@x-y.example.org",
            "1@2.3",
            "x.y.z@a.b.c.d",
        ] {
            assert!(matches!(parse_address(ok), Ok(AddressQuery::Email(_))), "{ok:?} refused");
        }
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a b@example.com",
            "a@exa_mple.com",
            "a@-x.com",
            "a@x-.com",
            "a@x..com",
            "a@x.com.",
            "müller@example.com",
            "\"q\"@example.com",
            "a@[127.0.0.1]",
            "a@b@example.com",
            "a(b)@example.com",
            "a\n@example.com",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(parse_address(&long).unwrap_err().contains("254"));
    }

    #[test]
    fn well_formed_but_uncertifiable_addresses_match_nothing() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(parse_address(&long_local), Ok(AddressQuery::Unmatchable));
        let long_label = format!("a@{}.com", "b".repeat(64));
        assert_eq!(parse_address(&long_label), Ok(AddressQuery::Unmatchable));
    }

    #[test]
    fn every_address_cerdb_accepts_has_the_api_syntax() {
        // The API must never refuse (400) an address the CA could certify.
        for s in ["a@b.co", "first.last+tag@sub.example.co.uk", "x_y@a-b.c-d.e", "Z@Y.X"] {
            assert!(s.parse::<EmailAddress>().is_ok());
            assert!(matches!(parse_address(s), Ok(AddressQuery::Email(_))), "{s}");
        }
    }

    #[test]
    fn strict_parameters() {
        assert_eq!(parse_usage("encryption"), Ok(Usage::Encryption));
        assert_eq!(parse_usage("signing"), Ok(Usage::Signing));
        for bad in ["Encryption", "encrypt", "sign", "", "both"] {
            assert!(parse_usage(bad).is_err(), "{bad:?}");
        }
        let h = "ab".repeat(32);
        assert_eq!(parse_sha256(&h).expect("hex")[0], 0xab);
        assert!(parse_sha256(&h.to_ascii_uppercase()).is_ok());
        assert!(parse_sha256(&h[..62]).is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
        assert!(parse_fingerprint(&"0".repeat(64)).is_ok());
        assert_eq!(parse_serial("0A1b").expect("hex").expect("serial").to_string(), "0A1B");
        assert_eq!(parse_serial("0000"), Ok(None));
        assert_eq!(parse_serial(&"f".repeat(64)), Ok(None));
        for bad in ["", "0x1", "12:34", "xyz", &"1".repeat(65)] {
            assert!(parse_serial(bad).is_err(), "{bad:?}");
        }
    }
}
