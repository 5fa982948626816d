//! Property-based fuzzing of the LDAP server's input parsers: the LDAPv3 message codec the
//! server reads requests with (`ldap3_proto::LdapCodec`, with the server's message size limit)
//! and the DN parser (`Dn::parse`). Valid bind, search and unbind requests mutated element by
//! element (BER re-encoded with one element changed, lengths lying, truncated), and random bytes;
//! DNs mutated as text. An error or a value, never a panic, within the time bound.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use fuzz_support::{der, text, Fuzz};
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapDerefAliases, LdapFilter, LdapMsg, LdapOp, LdapSearchRequest,
    LdapSearchScope, LdapSubstringFilter,
};
use ldap3_proto::LdapCodec;
use ldap_directory::Dn;
use tokio_util::codec::{Decoder, Encoder};

fn search(filter: LdapFilter) -> LdapOp {
    LdapOp::SearchRequest(LdapSearchRequest {
        base: "ou=people,dc=example,dc=com".into(),
        scope: LdapSearchScope::Subtree,
        aliases: LdapDerefAliases::Never,
        sizelimit: 10,
        timelimit: 5,
        typesonly: false,
        filter,
        attrs: vec!["mail".into(), "userCertificate;binary".into()],
    })
}

fn valid_messages() -> Vec<Vec<u8>> {
    let ops = vec![
        LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: String::new(),
            cred: LdapBindCred::Simple(String::new()),
        }),
        search(LdapFilter::Equality("mail".into(), "alice@example.com".into())),
        search(LdapFilter::And(vec![
            LdapFilter::Present("objectClass".into()),
            LdapFilter::Or(vec![
                LdapFilter::Substring(
                    "mail".into(),
                    LdapSubstringFilter {
                        initial: Some("ali".into()),
                        any: vec!["c".into()],
                        final_: Some(".com".into()),
                    },
                ),
                LdapFilter::Not(Box::new(LdapFilter::Equality("cn".into(), "bob".into()))),
            ]),
        ])),
        LdapOp::UnbindRequest,
    ];
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| {
            let mut buf = BytesMut::new();
            LdapCodec::default().encode(LdapMsg { msgid: i as i32 + 1, op, ctrl: vec![] }, &mut buf).unwrap();
            buf.to_vec()
        })
        .collect()
}

#[test]
fn ldap_messages_never_panic() {
    let valid = valid_messages();
    for v in &valid {
        let msg = LdapCodec::new(Some(1 << 20), None).decode(&mut BytesMut::from(&v[..])).unwrap();
        assert!(msg.is_some(), "the valid messages decode");
    }
    Fuzz::new(env!("CARGO_MANIFEST_DIR"), "ldap-messages", 10000).run(der::inputs(valid), |input| {
        // As the server reads a connection: message after message until one is incomplete or bad.
        let mut codec = LdapCodec::new(Some(1 << 20), None);
        let mut buf = BytesMut::from(&input[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        Ok(())
    });
}

#[test]
fn dns_never_panic() {
    let valid = vec![
        "mail=alice@example.com,ou=people,dc=example,dc=com".to_string(),
        "cn=Alice Smith\\, Jr.,ou=people,dc=example,dc=com".to_string(),
        "dc=example,dc=com".to_string(),
    ];
    for v in &valid {
        Dn::parse(v).unwrap();
    }
    Fuzz::new(env!("CARGO_MANIFEST_DIR"), "ldap-dn", 10000).run(text::damaged(valid), |input| {
        if let Ok(dn) = Dn::parse(&input) {
            let _ = (dn.len(), dn.first(), dn.is_root());
        }
        Ok(())
    });
}
