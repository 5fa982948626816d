//! The entries this directory shows, their attributes, and attribute selection (RFC 4511
//! §4.5.1.8).

use cerdb::EmailAddress;
use ldap3_proto::proto::{LdapPartialAttribute, LdapSearchResultEntry};

use crate::dn::{escape_value, Dn};

/// The attribute types this directory knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrType {
    ObjectClass,
    Mail,
    Cn,
    Sn,
    Ou,
    O,
    Dc,
    UserCertificate,
    UserSmimeCertificate,
    NamingContexts,
    SupportedLdapVersion,
    SupportedExtension,
    VendorName,
}

/// How values of a type are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Matching {
    /// caseIgnoreMatch (and caseIgnoreIA5Match), spaces at the ends ignored.
    CaseIgnore,
    /// An e-mail address: normalised as the HTTP directory does.
    Mail,
    /// No equality rule here (certificates): equality is Undefined.
    Binary,
}

impl AttrType {
    /// The type an attribute description names (options such as `;binary` ignored), by short
    /// name, alias or OID, case-insensitively.
    pub(crate) fn from_description(desc: &str) -> Option<AttrType> {
        let base = desc.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        Some(match base.as_str() {
            "objectclass" | "2.5.4.0" => AttrType::ObjectClass,
            "mail" | "rfc822mailbox" | "0.9.2342.19200300.100.1.3" => AttrType::Mail,
            "cn" | "commonname" | "2.5.4.3" => AttrType::Cn,
            "sn" | "surname" | "2.5.4.4" => AttrType::Sn,
            "ou" | "organizationalunitname" | "2.5.4.11" => AttrType::Ou,
            "o" | "organizationname" | "2.5.4.10" => AttrType::O,
            "dc" | "domaincomponent" | "0.9.2342.19200300.100.1.25" => AttrType::Dc,
            "usercertificate" | "2.5.4.36" => AttrType::UserCertificate,
            "usersmimecertificate" | "2.16.840.1.113730.3.1.40" => AttrType::UserSmimeCertificate,
            "namingcontexts" | "1.3.6.1.4.1.1466.101.120.5" => AttrType::NamingContexts,
            "supportedldapversion" | "1.3.6.1.4.1.1466.101.120.15" => AttrType::SupportedLdapVersion,
            "supportedextension" | "1.3.6.1.4.1.1466.101.120.7" => AttrType::SupportedExtension,
            "vendorname" | "1.3.6.1.1.4" => AttrType::VendorName,
            _ => return None,
        })
    }

    /// The description this server returns the type under. Certificates are transferred in
    /// binary (RFC 4522, RFC 4523 §2.1), so `userCertificate` always carries `;binary`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            AttrType::ObjectClass => "objectClass",
            AttrType::Mail => "mail",
            AttrType::Cn => "cn",
            AttrType::Sn => "sn",
            AttrType::Ou => "ou",
            AttrType::O => "o",
            AttrType::Dc => "dc",
            AttrType::UserCertificate => "userCertificate;binary",
            AttrType::UserSmimeCertificate => "userSMIMECertificate",
            AttrType::NamingContexts => "namingContexts",
            AttrType::SupportedLdapVersion => "supportedLDAPVersion",
            AttrType::SupportedExtension => "supportedExtension",
            AttrType::VendorName => "vendorName",
        }
    }

    /// How its values compare.
    pub(crate) fn matching(self) -> Matching {
        match self {
            AttrType::Mail => Matching::Mail,
            AttrType::UserCertificate | AttrType::UserSmimeCertificate => Matching::Binary,
            _ => Matching::CaseIgnore,
        }
    }
}

/// One attribute of an entry. A certificate attribute may be present with its values not
/// loaded (they are loaded only when the search returns them).
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub(crate) ty: AttrType,
    pub(crate) values: Vec<Vec<u8>>,
}

/// An entry as filters see it and searches return it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) dn: String,
    pub(crate) attrs: Vec<Attr>,
}

impl Entry {
    /// The attribute of type `ty`, if present.
    pub(crate) fn get(&self, ty: AttrType) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.ty == ty)
    }
}

fn text(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

/// The root DSE (RFC 4512 §5.1).
pub(crate) fn root_dse(base_dn: &str) -> Entry {
    Entry {
        dn: String::new(),
        attrs: vec![
            Attr { ty: AttrType::ObjectClass, values: text(&["top"]) },
            Attr { ty: AttrType::NamingContexts, values: text(&[base_dn]) },
            Attr { ty: AttrType::SupportedLdapVersion, values: text(&["3"]) },
            Attr { ty: AttrType::SupportedExtension, values: text(&[crate::WHOAMI]) },
            Attr { ty: AttrType::VendorName, values: text(&["pki certificate directory"]) },
        ],
    }
}

/// The base entry: `top` and the class its first RDN implies.
pub(crate) fn base_entry(base_dn: &str, base: &Dn) -> Entry {
    let mut attrs = Vec::new();
    let (class, ty) = match base.first() {
        Some(("ou", _)) => (Some("organizationalUnit"), Some(AttrType::Ou)),
        Some(("o", _)) => (Some("organization"), Some(AttrType::O)),
        Some(("dc", _)) => (Some("dcObject"), Some(AttrType::Dc)),
        Some(("cn", _)) => (Some("applicationProcess"), Some(AttrType::Cn)),
        _ => (Some("extensibleObject"), None),
    };
    let mut classes = vec!["top"];
    classes.extend(class);
    if class == Some("dcObject") {
        classes.push("organization");
    }
    attrs.push(Attr { ty: AttrType::ObjectClass, values: text(&classes) });
    if let (Some(ty), Some((_, value))) = (ty, base.first()) {
        attrs.push(Attr { ty, values: text(&[value]) });
        if ty == AttrType::Dc {
            attrs.push(Attr { ty: AttrType::O, values: text(&[value]) });
        }
    }
    Entry { dn: base_dn.to_string(), attrs }
}

/// The entry of an address. `certs` are the DER of its valid certificates in order (empty when
/// they were not loaded); `smime` their degenerate PKCS#7.
pub(crate) fn address_entry(
    email: &EmailAddress,
    base_dn: &str,
    certs: Vec<Vec<u8>>,
    smime: Option<Vec<u8>>,
) -> Entry {
    let address = email.lookup_key();
    Entry {
        dn: format!("mail={},{base_dn}", escape_value(&address)),
        attrs: vec![
            Attr {
                ty: AttrType::ObjectClass,
                values: text(&["top", "person", "organizationalPerson", "inetOrgPerson"]),
            },
            Attr { ty: AttrType::Mail, values: text(&[&address]) },
            Attr { ty: AttrType::Cn, values: text(&[&address]) },
            Attr { ty: AttrType::Sn, values: text(&[&address]) },
            Attr { ty: AttrType::UserCertificate, values: certs },
            Attr { ty: AttrType::UserSmimeCertificate, values: smime.into_iter().collect() },
        ],
    }
}

/// Which attributes a search returns (RFC 4511 §4.5.1.8): none listed or `*` → every user
/// attribute; `1.1` alone → none; otherwise those named (unknown names are ignored). `+`
/// (operational attributes) adds nothing: this server has none beyond the root DSE's.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    all: bool,
    /// (type, the description the client used when it carried options).
    named: Vec<(AttrType, Option<String>)>,
}

impl Selection {
    /// From the search request's attribute list.
    pub(crate) fn new(requested: &[String]) -> Selection {
        let all = requested.is_empty() || requested.iter().any(|r| r.trim() == "*");
        let named = requested
            .iter()
            .filter_map(|r| {
                let ty = AttrType::from_description(r)?;
                let with_options = r.contains(';').then(|| r.trim().to_string());
                Some((ty, with_options))
            })
            .collect();
        Selection { all, named }
    }

    /// Whether `ty` is returned, and under which description.
    pub(crate) fn returned_as(&self, ty: AttrType) -> Option<String> {
        if let Some((_, options)) = self.named.iter().find(|(t, _)| *t == ty) {
            return Some(match (ty, options) {
                (AttrType::UserCertificate, _) | (_, None) => ty.name().to_string(),
                (_, Some(desc)) => desc.clone(),
            });
        }
        self.all.then(|| ty.name().to_string())
    }
}

/// The search result entry of `entry`.
pub(crate) fn result_entry(entry: Entry, selection: &Selection, types_only: bool) -> LdapSearchResultEntry {
    let attributes = entry
        .attrs
        .into_iter()
        .filter_map(|a| {
            let atype = selection.returned_as(a.ty)?;
            let vals = if types_only { Vec::new() } else { a.values };
            // An attribute whose values were not loaded is not returned with none.
            (types_only || !vals.is_empty()).then_some(LdapPartialAttribute { atype, vals })
        })
        .collect();
    LdapSearchResultEntry { dn: entry.dn, attributes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(e: &LdapSearchResultEntry) -> Vec<&str> {
        e.attributes.iter().map(|a| a.atype.as_str()).collect()
    }

    fn sample() -> Entry {
        let email: EmailAddress = "Alice@Example.com".parse().unwrap();
        address_entry(&email, "ou=c,dc=x", vec![vec![0x30, 0], vec![0x30, 1]], Some(vec![0x30, 2]))
    }

    #[test]
    fn selection_follows_rfc_4511() {
        let all = result_entry(sample(), &Selection::new(&[]), false);
        assert_eq!(all.dn, "mail=alice@example.com,ou=c,dc=x");
        assert_eq!(
            names(&all),
            ["objectClass", "mail", "cn", "sn", "userCertificate;binary", "userSMIMECertificate"]
        );
        let star = result_entry(sample(), &Selection::new(&["*".into()]), false);
        assert_eq!(names(&star), names(&all));
        let none = result_entry(sample(), &Selection::new(&["1.1".into()]), false);
        assert!(none.attributes.is_empty());
        let plus = result_entry(sample(), &Selection::new(&["+".into()]), false);
        assert!(plus.attributes.is_empty());
        let cert = result_entry(sample(), &Selection::new(&["USERCERTIFICATE".into()]), false);
        assert_eq!(names(&cert), ["userCertificate;binary"]);
        assert_eq!(cert.attributes[0].vals, vec![vec![0x30, 0], vec![0x30, 1]], "order kept");
        let smime = result_entry(
            sample(),
            &Selection::new(&["userSMIMECertificate;binary".into(), "Mail".into(), "bogus".into()]),
            false,
        );
        assert_eq!(names(&smime), ["mail", "userSMIMECertificate;binary"]);
        let types = result_entry(sample(), &Selection::new(&["mail".into()]), true);
        assert_eq!(names(&types), ["mail"]);
        assert!(types.attributes[0].vals.is_empty());
    }

    #[test]
    fn unloaded_certificates_are_not_returned_empty() {
        let email: EmailAddress = "a@b.example".parse().unwrap();
        let e = address_entry(&email, "ou=c,dc=x", Vec::new(), None);
        assert_eq!(names(&result_entry(e, &Selection::new(&[]), false)), ["objectClass", "mail", "cn", "sn"]);
    }

    #[test]
    fn base_entries_by_first_rdn() {
        let dn = Dn::parse("ou=Certificates,dc=bank,dc=example").unwrap();
        let e = base_entry("ou=Certificates,dc=bank,dc=example", &dn);
        assert_eq!(e.get(AttrType::Ou).unwrap().values, vec![b"certificates".to_vec()]);
        let dn = Dn::parse("dc=bank,dc=example").unwrap();
        let e = base_entry("dc=bank,dc=example", &dn);
        assert!(e.get(AttrType::ObjectClass).unwrap().values.contains(&b"dcObject".to_vec()));
    }
}
