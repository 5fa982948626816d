//! Search filters: which addresses a filter pins (the anti-harvesting rule), and evaluating a
//! filter on an entry (RFC 4511 §4.5.1.7, three-valued).

use cerdb::directory::{parse_address, AddressQuery};
use cerdb::EmailAddress;
use ldap3_proto::proto::{LdapFilter, LdapSubstringFilter};

use crate::entry::{AttrType, Entry, Matching};

/// An address as a filter names it: `None` when the HTTP directory would refuse it or it could
/// never have a certificate (it matches nothing).
pub(crate) type Named = Option<EmailAddress>;

/// Normalises an assertion value on `mail` as the HTTP directory normalises `?email=`
/// (spaces at the ends are insignificant in LDAP, RFC 4518 §2.6.1).
pub(crate) fn address(value: &str) -> Named {
    match parse_address(value.trim()) {
        Ok(AddressQuery::Email(e)) => Some(e),
        _ => None,
    }
}

/// The addresses a filter pins, when every entry it can match is among them:
///
/// * `(mail=V)` pins V;
/// * `(&...)` pins what its most selective pinning part pins (the other parts are checked on
///   the entries found);
/// * `(|...)` pins the union of its parts when every part pins; the empty `(|)` (absolute
///   false, RFC 4526) pins nothing at all;
/// * everything else — presence, substrings, ranges, `!`, other attributes — pins nothing, and
///   a search below the base with such a filter is refused.
///
/// The terms are counted as written (before removing duplicates), so a client cannot make the
/// server parse an unbounded list.
pub(crate) fn pinned(f: &LdapFilter) -> Option<Vec<Named>> {
    match f {
        LdapFilter::Equality(attr, value) if AttrType::from_description(attr) == Some(AttrType::Mail) => {
            Some(vec![address(value)])
        }
        LdapFilter::And(parts) => parts.iter().filter_map(pinned).min_by_key(Vec::len),
        LdapFilter::Or(parts) => {
            let mut all = Vec::new();
            for p in parts {
                all.extend(pinned(p)?);
            }
            Some(all)
        }
        _ => None,
    }
}

/// A filter's value on an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tri {
    True,
    False,
    Undefined,
}

fn tri(b: bool) -> Tri {
    if b {
        Tri::True
    } else {
        Tri::False
    }
}

/// caseIgnore preparation: ends trimmed, inner runs of spaces as one, lower case.
fn fold(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn values_as_text(values: &[Vec<u8>]) -> impl Iterator<Item = &str> {
    values.iter().filter_map(|v| std::str::from_utf8(v).ok())
}

fn equal(matching: Matching, stored: &str, asserted: &str) -> bool {
    match matching {
        Matching::Mail => match (address(stored), address(asserted)) {
            (Some(a), Some(b)) => a.lookup_key() == b.lookup_key(),
            _ => false,
        },
        _ => fold(stored) == fold(asserted),
    }
}

fn substring_match(value: &str, s: &LdapSubstringFilter) -> bool {
    let v = fold(value);
    let mut rest = v.as_str();
    if let Some(initial) = &s.initial {
        let i = fold(initial);
        match rest.strip_prefix(i.as_str()) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    for any in &s.any {
        let a = fold(any);
        match rest.find(a.as_str()) {
            Some(at) => rest = &rest[at + a.len()..],
            None => return false,
        }
    }
    match &s.final_ {
        Some(f) => rest.ends_with(fold(f).as_str()),
        None => true,
    }
}

/// Evaluates `f` on `entry`. Unknown attribute types and matching rules this server does not
/// have evaluate to Undefined; an attribute absent from the entry makes an assertion false.
pub(crate) fn evaluate(f: &LdapFilter, entry: &Entry) -> Tri {
    let assertion = |attr: &str, test: &dyn Fn(Matching, &[Vec<u8>]) -> Tri| -> Tri {
        let Some(ty) = AttrType::from_description(attr) else { return Tri::Undefined };
        match entry.get(ty) {
            Some(a) => test(ty.matching(), &a.values),
            None => Tri::False,
        }
    };
    match f {
        LdapFilter::And(parts) => {
            let mut out = Tri::True;
            for p in parts {
                match evaluate(p, entry) {
                    Tri::False => return Tri::False,
                    Tri::Undefined => out = Tri::Undefined,
                    Tri::True => {}
                }
            }
            out
        }
        LdapFilter::Or(parts) => {
            let mut out = Tri::False;
            for p in parts {
                match evaluate(p, entry) {
                    Tri::True => return Tri::True,
                    Tri::Undefined => out = Tri::Undefined,
                    Tri::False => {}
                }
            }
            out
        }
        LdapFilter::Not(inner) => match evaluate(inner, entry) {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Undefined => Tri::Undefined,
        },
        LdapFilter::Present(attr) => match AttrType::from_description(attr) {
            Some(ty) => tri(entry.get(ty).is_some()),
            None => Tri::False,
        },
        LdapFilter::Equality(attr, value) | LdapFilter::Approx(attr, value) => {
            assertion(attr, &|m, vals| match m {
                Matching::Binary => Tri::Undefined,
                _ => tri(values_as_text(vals).any(|v| equal(m, v, value))),
            })
        }
        LdapFilter::Substring(attr, s) => assertion(attr, &|m, vals| match m {
            Matching::Binary => Tri::Undefined,
            _ => tri(values_as_text(vals).any(|v| substring_match(v, s))),
        }),
        LdapFilter::GreaterOrEqual(..) | LdapFilter::LessOrEqual(..) | LdapFilter::Extensible(_) => {
            Tri::Undefined
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::address_entry;
    use ldap3_proto::parse_ldap_filter_str;

    fn f(s: &str) -> LdapFilter {
        parse_ldap_filter_str(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn keys(p: Option<Vec<Named>>) -> Option<Vec<String>> {
        p.map(|v| v.into_iter().map(|a| a.map(|e| e.lookup_key()).unwrap_or_else(|| "-".into())).collect())
    }

    #[test]
    fn equalities_on_mail_pin_their_addresses_normalised() {
        assert_eq!(keys(pinned(&f("(mail=Alice@Example.COM)"))), Some(vec!["alice@example.com".into()]));
        assert_eq!(keys(pinned(&f("(MAIL= bob@example.com )"))), Some(vec!["bob@example.com".into()]));
        assert_eq!(keys(pinned(&f("(rfc822Mailbox=c@example.com)"))), Some(vec!["c@example.com".into()]));
        let by_oid = LdapFilter::Equality("0.9.2342.19200300.100.1.3".into(), "d@x.example".into());
        assert_eq!(keys(pinned(&by_oid)), Some(vec!["d@x.example".into()]));
        // Refused by the HTTP syntax: pinned, matching nothing.
        assert_eq!(keys(pinned(&f("(mail=not-an-address)"))), Some(vec!["-".into()]));
        assert_eq!(
            keys(pinned(&f("(|(mail=a@x.example)(mail=b@x.example))"))),
            Some(vec!["a@x.example".into(), "b@x.example".into()])
        );
        assert_eq!(
            keys(pinned(&f("(&(objectClass=inetOrgPerson)(mail=a@x.example))"))),
            Some(vec!["a@x.example".into()])
        );
        assert_eq!(
            keys(pinned(&f("(&(|(mail=a@x.example)(mail=b@x.example))(mail=b@x.example))"))),
            Some(vec!["b@x.example".into()]),
            "the most selective part of an & pins"
        );
    }

    #[test]
    fn harvesting_filters_pin_nothing() {
        for s in [
            "(mail=*)",
            "(mail=a*)",
            "(mail=*@example.com)",
            "(objectClass=*)",
            "(cn=alice@example.com)",
            "(!(mail=a@x.example))",
            "(|(mail=a@x.example)(cn=*))",
            "(|(mail=a@x.example)(mail=b*))",
            "(mail>=a)",
            "(mail~=a@x.example)",
            "(mail:caseExactMatch:=a@x.example)",
            "(&(objectClass=*)(cn=x))",
        ] {
            assert_eq!(keys(pinned(&f(s))), None, "{s} pins");
        }
        assert_eq!(pinned(&LdapFilter::And(vec![])), None, "(&) is absolute true");
        assert_eq!(keys(pinned(&LdapFilter::Or(vec![]))), Some(vec![]), "(|) is absolute false");
    }

    #[test]
    fn evaluation_on_an_entry_is_three_valued() {
        let email: EmailAddress = "Alice@Example.com".parse().unwrap();
        let e = address_entry(&email, "ou=c,dc=x", vec![vec![0x30]], None);
        for (s, want) in [
            ("(objectClass=*)", Tri::True),
            ("(objectClass=InetOrgPerson)", Tri::True),
            ("(objectClass=device)", Tri::False),
            ("(mail=ALICE@example.com)", Tri::True),
            ("(mail=bob@example.com)", Tri::False),
            ("(mail=a*)", Tri::True),
            ("(cn=*ice@ex*.com)", Tri::True),
            ("(cn=*bob*)", Tri::False),
            ("(userCertificate=*)", Tri::True),
            ("(userSMIMECertificate=*)", Tri::True),
            ("(userCertificate=x)", Tri::Undefined),
            ("(telephoneNumber=1)", Tri::Undefined),
            ("(telephoneNumber=*)", Tri::False),
            ("(givenName=*)", Tri::False),
            ("(!(telephoneNumber=1))", Tri::Undefined),
            ("(!(mail=bob@example.com))", Tri::True),
            ("(&(mail=alice@example.com)(telephoneNumber=1))", Tri::Undefined),
            ("(&(mail=alice@example.com)(cn=nobody))", Tri::False),
            ("(|(telephoneNumber=1)(mail=alice@example.com))", Tri::True),
            ("(|(telephoneNumber=1)(mail=bob@example.com))", Tri::Undefined),
            ("(mail>=a)", Tri::Undefined),
        ] {
            assert_eq!(evaluate(&f(s), &e), want, "{s}");
        }
    }
}
