//! Distinguished names as this directory needs them (RFC 4514): a DN a client sends, parsed into
//! RDNs that compare case-insensitively (every attribute of this tree matches with caseIgnore),
//! and an entry's DN written with its value escaped.

use std::fmt;

/// One `type=value` of an RDN: the type lower-cased, the value unescaped and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ava {
    attr: String,
    value: String,
}

/// A parsed DN: RDNs from the leaf (left) to the root (right), each a sorted set of
/// attribute-value assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn(Vec<Vec<Ava>>);

/// The most characters of a DN looked at.
const MAX_DN_LEN: usize = 4096;

/// Attribute names in a DN that have a short name, by OID.
fn canonical_attr(attr: &str) -> String {
    let a = attr.trim().to_ascii_lowercase();
    match a.as_str() {
        "2.5.4.3" | "commonname" => "cn".into(),
        "2.5.4.11" | "organizationalunitname" => "ou".into(),
        "2.5.4.10" | "organizationname" => "o".into(),
        "0.9.2342.19200300.100.1.25" | "domaincomponent" => "dc".into(),
        "0.9.2342.19200300.100.1.3" | "rfc822mailbox" => "mail".into(),
        "2.5.4.6" | "countryname" => "c".into(),
        _ => a,
    }
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits `s` at unescaped occurrences of any of `seps` (a backslash escapes the next character).
fn split_unescaped<'a>(s: &'a str, seps: &[u8]) -> Vec<&'a str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if seps.contains(&b[i]) {
            out.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    out.push(&s[start.min(s.len())..]);
    out
}

/// Unescapes an RFC 4514 attribute value: `\` before a special character, or two hex digits
/// (a UTF-8 byte); unescaped leading and trailing spaces are dropped.
fn unescape(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    // Trim unescaped spaces: leading ones, and trailing ones not preceded by a backslash.
    let mut start = 0;
    while start < b.len() && b[start] == b' ' {
        start += 1;
    }
    let mut end = b.len();
    while end > start && b[end - 1] == b' ' && !(end >= 2 && b[end - 2] == b'\\') {
        end -= 1;
    }
    let b = &b[start..end];
    if b.first() == Some(&b'#') {
        return Err("BER-encoded (#...) values are not supported".into());
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let next = *b.get(i + 1).ok_or("a value ends with a lone '\\'")?;
        match (hex_val(next), b.get(i + 2).and_then(|c| hex_val(*c))) {
            (Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            _ => {
                out.push(next);
                i += 2;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "a value is not UTF-8".to_string())
}

impl Dn {
    /// Parses an RFC 4514 string (`,` or `;` between RDNs, `+` inside one). The empty string is
    /// the root DSE.
    pub fn parse(s: &str) -> Result<Dn, String> {
        if s.len() > MAX_DN_LEN {
            return Err(format!("longer than {MAX_DN_LEN} characters"));
        }
        if s.trim().is_empty() {
            return Ok(Dn(Vec::new()));
        }
        let mut rdns = Vec::new();
        for rdn in split_unescaped(s, b",;") {
            let mut avas = Vec::new();
            for ava in split_unescaped(rdn, b"+") {
                let (attr, value) =
                    ava.split_once('=').ok_or_else(|| format!("{:?} is not type=value", ava.trim()))?;
                let attr = canonical_attr(attr);
                if attr.is_empty()
                    || !attr.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
                {
                    return Err(format!("{attr:?} is not an attribute type"));
                }
                let value = unescape(value)?.to_lowercase();
                avas.push(Ava { attr, value });
            }
            avas.sort();
            rdns.push(avas);
        }
        Ok(Dn(rdns))
    }

    /// Whether this is the empty DN (the root DSE).
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of RDNs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no RDNs (the root DSE).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `self` is `other` or lies below it.
    pub fn is_within(&self, other: &Dn) -> bool {
        self.0.len() >= other.0.len() && self.0[self.0.len() - other.0.len()..] == other.0[..]
    }

    /// If `self` is exactly one single-valued RDN below `parent`: its (type, value).
    pub fn child_of(&self, parent: &Dn) -> Option<(&str, &str)> {
        if self.0.len() != parent.0.len() + 1 || !self.is_within(parent) {
            return None;
        }
        match self.0[0].as_slice() {
            [ava] => Some((ava.attr.as_str(), ava.value.as_str())),
            _ => None,
        }
    }

    /// The type and value of the first RDN when it is single-valued.
    pub fn first(&self) -> Option<(&str, &str)> {
        match self.0.first().map(Vec::as_slice) {
            Some([ava]) => Some((ava.attr.as_str(), ava.value.as_str())),
            _ => None,
        }
    }
}

impl fmt::Display for Dn {
    /// The normalised form: lower case, values escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, ava) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{}={}", ava.attr, escape_value(&ava.value))?;
            }
        }
        Ok(())
    }
}

/// Escapes an attribute value for a DN string (RFC 4514 §2.4).
pub(crate) fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 4);
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
        } else {
            if special {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_compare_case_and_space_insensitively() {
        let a = Dn::parse("ou=Certificates, dc=Bank,DC=example").unwrap();
        let b = Dn::parse("OU=certificates,dc=bank,dc=EXAMPLE").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "ou=certificates,dc=bank,dc=example");
        let oid = Dn::parse("2.5.4.11=certificates,0.9.2342.19200300.100.1.25=bank,dc=example").unwrap();
        assert_eq!(oid, a);
        assert!(Dn::parse("").unwrap().is_root());
        assert!(Dn::parse("  ").unwrap().is_root());
    }

    #[test]
    fn children_and_ancestors() {
        let base = Dn::parse("ou=certificates,dc=bank,dc=example").unwrap();
        let entry = Dn::parse("mail=Alice@Example.com,ou=certificates,dc=bank,dc=example").unwrap();
        assert_eq!(entry.child_of(&base), Some(("mail", "alice@example.com")));
        assert!(entry.is_within(&base) && base.is_within(&base));
        assert!(base.is_within(&Dn::parse("dc=example").unwrap()));
        assert!(!base.is_within(&entry));
        let two = Dn::parse("cn=x,mail=a@b.c,ou=certificates,dc=bank,dc=example").unwrap();
        assert_eq!(two.child_of(&base), None);
        let multi = Dn::parse("mail=a@b.c+cn=x,ou=certificates,dc=bank,dc=example").unwrap();
        assert_eq!(multi.child_of(&base), None);
    }

    #[test]
    fn escapes_round_trip() {
        let v = "a+b,c\"d\\e;f<g>h@x.example";
        let text = format!("mail={},dc=example", escape_value(v));
        let dn = Dn::parse(&text).unwrap();
        assert_eq!(dn.first(), Some(("mail", v)));
        assert_eq!(Dn::parse("cn=\\41bc,dc=x").unwrap().first(), Some(("cn", "abc")));
        assert_eq!(escape_value("#x "), "\\#x\\ ");
        assert_eq!(Dn::parse("cn=\\#x\\ ,dc=x").unwrap().first(), Some(("cn", "#x ")));
    }

    #[test]
    fn malformed_dns_are_errors() {
        for bad in ["dc", "=x", "dc=x,", "cn=a\\", "c n=x", "cn=#04024869", "cn=\\ff\\fe"] {
            assert!(Dn::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Dn::parse(&"cn=a,".repeat(2000)).is_err());
    }
}
