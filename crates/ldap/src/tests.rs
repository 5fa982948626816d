//! The protocol, message by message, against an in-memory reader (the end-to-end tests in
//! `crates/pki-tests/tests/ldap.rs` drive the real server with real clients).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use cerdb::directory::{AnonymousPolicy, ApiKeyName, Directory, FixedClock};
use cerdb::{
    CaId, CertDb, CertKind, CertReader, CertRecord, CrlRecord, EmailAddress, Fingerprint, Revocation,
    RevocationReason, Serial,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use der::Decode;
use ldap3_proto::proto::*;
use ldap3_proto::{parse_ldap_filter_str, LdapCodec};
use tokio_util::codec::Encoder;

use crate::server::answer_buffered;
use crate::session::{Flow, Session};
use crate::{LdapConfig, LdapDirectory};

const BASE: &str = "ou=certificates,dc=bank,dc=example";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

/// Certificates in memory, as the storage's reader shows them.
#[derive(Default)]
struct MemReader(Mutex<Vec<CertRecord>>);

impl CertReader for MemReader {
    fn get(&self, serial: &Serial) -> Result<Option<CertRecord>, cerdb::Error> {
        Ok(self.0.lock().unwrap().iter().find(|r| r.serial == *serial).cloned())
    }
    fn get_meta(&self, serial: &Serial) -> Result<Option<CertRecord>, cerdb::Error> {
        Ok(self.get(serial)?.map(|mut r| {
            r.der.clear();
            r
        }))
    }
    fn by_fingerprint(&self, fp: &Fingerprint) -> Result<Option<CertRecord>, cerdb::Error> {
        Ok(self.0.lock().unwrap().iter().find(|r| r.fingerprint == *fp).cloned())
    }
    fn by_email(
        &self,
        email: &EmailAddress,
        kind: Option<CertKind>,
    ) -> Result<Vec<CertRecord>, cerdb::Error> {
        // A lookup that hits a bug (see `a_handler_that_panics_closes_the_connection_with_a_notice`).
        assert_ne!(email.as_str(), "bug@x.example", "a bug in the storage");
        let mut v: Vec<CertRecord> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.email.as_ref().map(|e| e.lookup_key()) == Some(email.lookup_key()))
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .cloned()
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.not_before));
        Ok(v)
    }
    fn email_by_hash(&self, _hash: &[u8; 32]) -> Result<Option<EmailAddress>, cerdb::Error> {
        // The LDAP interface looks addresses up in clear only; a call here is a test failure.
        Err(cerdb::Error::Db("the LDAP interface does not look up hashed addresses".into()))
    }
    fn crl(&self, _ca: CaId) -> Result<Option<CrlRecord>, cerdb::Error> {
        Ok(None)
    }
}

struct World {
    db: CertDb,
    st: Arc<LdapDirectory>,
    dir: Arc<Directory>,
    reader: Arc<MemReader>,
    _tmp: tempfile::TempDir,
    next_serial: u8,
}

fn cert_der(cn: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

impl World {
    fn new(config: LdapConfig) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let db = CertDb::open(tmp.path().join("db")).unwrap();
        let dir = Directory::open(db.clone(), &[], Arc::new(FixedClock::new(now()))).unwrap();
        let reader = Arc::new(MemReader::default());
        let st = LdapDirectory::new(dir.clone(), reader.clone(), &config).unwrap();
        World { db, st, dir, reader, _tmp: tmp, next_serial: 1 }
    }

    fn add(&mut self, email: &str, kind: CertKind, age_days: i64, valid_days: i64) -> Vec<u8> {
        let der = cert_der(&format!("c{}.example", self.next_serial));
        let nb = now() - Duration::days(age_days);
        let rec = CertRecord {
            serial: Serial::from_bytes(&[self.next_serial]).unwrap(),
            fingerprint: Fingerprint::of(&der),
            kind,
            email: Some(email.parse().unwrap()),
            subject: format!("CN={email}"),
            issuer: CaId::Issuing,
            not_before: nb,
            not_after: nb + Duration::days(valid_days),
            issued_at: nb,
            key_type: "p256".into(),
            escrow_key: None,
            revocation: None,
            der: der.clone(),
        };
        self.next_serial += 1;
        self.reader.0.lock().unwrap().push(rec);
        der
    }

    fn revoke(&self, der: &[u8]) {
        let mut v = self.reader.0.lock().unwrap();
        let r = v.iter_mut().find(|r| r.der == der).unwrap();
        r.revocation = Some(Revocation { at: now(), reason: RevocationReason::KeyCompromise });
    }

    fn session(&self) -> Session {
        Session::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
    }
}

fn search(base: &str, scope: LdapSearchScope, filter: &str, attrs: &[&str]) -> LdapMsg {
    LdapMsg::new(
        7,
        LdapOp::SearchRequest(LdapSearchRequest {
            base: base.into(),
            scope,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter: parse_ldap_filter_str(filter).unwrap(),
            attrs: attrs.iter().map(|s| s.to_string()).collect(),
        }),
    )
}

fn sub(filter: &str, attrs: &[&str]) -> LdapMsg {
    search(BASE, LdapSearchScope::Subtree, filter, attrs)
}

/// Sends `msg`; (entries, final result).
fn run(w: &World, s: &mut Session, msg: LdapMsg) -> (Vec<LdapSearchResultEntry>, LdapResult) {
    let mut out = Vec::new();
    assert_eq!(s.handle(&w.st, msg, &mut out), Flow::Continue);
    let mut entries = Vec::new();
    let mut done = None;
    for m in out {
        assert_eq!(m.msgid, 7, "answers carry the request's message id");
        match m.op {
            LdapOp::SearchResultEntry(e) => entries.push(e),
            LdapOp::SearchResultDone(r)
            | LdapOp::BindResponse(LdapBindResponse { res: r, .. })
            | LdapOp::ModifyResponse(r)
            | LdapOp::AddResponse(r)
            | LdapOp::DelResponse(r)
            | LdapOp::ModifyDNResponse(r)
            | LdapOp::CompareResult(r)
            | LdapOp::ExtendedResponse(LdapExtendedResponse { res: r, .. }) => done = Some(r),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    (entries, done.expect("a final result"))
}

fn attr<'a>(e: &'a LdapSearchResultEntry, name: &str) -> Vec<&'a [u8]> {
    e.attributes
        .iter()
        .filter(|a| a.atype.eq_ignore_ascii_case(name))
        .flat_map(|a| a.vals.iter().map(Vec::as_slice))
        .collect()
}

fn bind(dn: &str, pw: &str) -> LdapMsg {
    LdapMsg::new(
        7,
        LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: dn.into(),
            cred: LdapBindCred::Simple(pw.into()),
        }),
    )
}

#[test]
fn an_address_entry_holds_every_valid_certificate_encryption_first() {
    let mut w = World::new(LdapConfig::default());
    let sign = w.add("alice@example.com", CertKind::Signing, 1, 365);
    let old_enc = w.add("alice@example.com", CertKind::Encryption, 30, 365);
    let new_enc = w.add("alice@example.com", CertKind::Encryption, 2, 365);
    let _expired = w.add("alice@example.com", CertKind::Encryption, 400, 365);
    let _future = w.add("alice@example.com", CertKind::Encryption, -5, 365);
    let revoked = w.add("alice@example.com", CertKind::Signing, 3, 365);
    w.revoke(&revoked);
    let mut s = w.session();

    let (entries, res) = run(&w, &mut s, sub("(mail=ALICE@example.COM)", &[]));
    assert_eq!(res.code, LdapResultCode::Success);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.dn, format!("mail=alice@example.com,{BASE}"));
    assert_eq!(attr(e, "mail"), [b"alice@example.com"]);
    assert_eq!(attr(e, "cn"), [b"alice@example.com"]);
    assert_eq!(attr(e, "objectClass").len(), 4);
    assert_eq!(attr(e, "userCertificate;binary"), [&new_enc[..], &old_enc[..], &sign[..]]);

    // The PKCS#7 holds the same three certificates, and no signer.
    let p7 = attr(e, "userSMIMECertificate");
    assert_eq!(p7.len(), 1);
    let ci = cms::content_info::ContentInfo::from_der(p7[0]).unwrap();
    assert_eq!(ci.content_type.to_string(), "1.2.840.113549.1.7.2");
    let sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
    assert!(sd.signer_infos.0.is_empty() && sd.digest_algorithms.is_empty());
    let mut inside: Vec<Vec<u8>> = sd
        .certificates
        .unwrap()
        .0
        .iter()
        .map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => der::Encode::to_der(c).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    let mut want = vec![new_enc.clone(), old_enc.clone(), sign.clone()];
    inside.sort();
    want.sort();
    assert_eq!(inside, want, "byte for byte");

    // Attribute selection: only what was asked, the certificate under ;binary.
    let (entries, _) = run(&w, &mut s, sub("(mail=alice@example.com)", &["userCertificate"]));
    let names: Vec<&str> = entries[0].attributes.iter().map(|a| a.atype.as_str()).collect();
    assert_eq!(names, ["userCertificate;binary"]);
    let (entries, _) = run(&w, &mut s, sub("(mail=alice@example.com)", &["userSMIMECertificate"]));
    let names: Vec<&str> = entries[0].attributes.iter().map(|a| a.atype.as_str()).collect();
    assert_eq!(names, ["userSMIMECertificate"]);
    assert_eq!(attr(&entries[0], "userSMIMECertificate"), p7, "the same PKCS#7 asked for alone");
    let (entries, _) = run(&w, &mut s, sub("(mail=alice@example.com)", &["1.1"]));
    assert!(entries[0].attributes.is_empty());

    // After a revocation the certificate is gone from the next search.
    w.revoke(&new_enc);
    let (entries, _) = run(&w, &mut s, sub("(mail=alice@example.com)", &["userCertificate;binary"]));
    assert_eq!(attr(&entries[0], "userCertificate;binary"), [&old_enc[..], &sign[..]]);
    w.revoke(&old_enc);
    w.revoke(&sign);
    let (entries, res) = run(&w, &mut s, sub("(mail=alice@example.com)", &[]));
    assert!(entries.is_empty(), "no valid certificate, no entry");
    assert_eq!(res.code, LdapResultCode::Success);
}

/// After `pki ca compromise --ca issuing` the CA marks the issuing CA withdrawn: its
/// certificates are served no more (no entry), and again once it is not.
#[test]
fn no_certificate_of_a_withdrawn_issuing_ca_is_served() {
    let mut w = World::new(LdapConfig::default());
    let enc = w.add("alice@example.com", CertKind::Encryption, 1, 365);
    let mut s = w.session();
    let (entries, _) = run(&w, &mut s, sub("(mail=alice@example.com)", &["userCertificate;binary"]));
    assert_eq!(attr(&entries[0], "userCertificate;binary"), [&enc[..]]);
    w.db.withdrawn_issuers().set(CaId::Issuing, Some(chrono::Utc::now()));
    let (entries, res) = run(&w, &mut s, sub("(mail=alice@example.com)", &[]));
    assert!(entries.is_empty(), "an entry under a withdrawn issuing CA: {entries:?}");
    assert_eq!(res.code, LdapResultCode::Success);
    w.db.withdrawn_issuers().set(CaId::Issuing, None);
    let (entries, _) = run(&w, &mut s, sub("(mail=alice@example.com)", &[]));
    assert_eq!(entries.len(), 1);
}

#[test]
fn ors_of_equalities_are_served_up_to_the_limit_and_harvesting_is_refused() {
    let mut w = World::new(LdapConfig { max_addresses: 3, ..LdapConfig::default() });
    w.add("a@x.example", CertKind::Encryption, 1, 365);
    w.add("b@x.example", CertKind::Encryption, 1, 365);
    let mut s = w.session();

    let (entries, res) =
        run(&w, &mut s, sub("(|(mail=a@x.example)(mail=B@X.example)(mail=nobody@x.example))", &["mail"]));
    assert_eq!(res.code, LdapResultCode::Success);
    let mut dns: Vec<&str> = entries.iter().map(|e| e.dn.as_str()).collect();
    dns.sort();
    assert_eq!(dns, [format!("mail=a@x.example,{BASE}"), format!("mail=b@x.example,{BASE}")]);

    let (_, res) = run(
        &w,
        &mut s,
        sub("(|(mail=a@x.example)(mail=b@x.example)(mail=c@x.example)(mail=d@x.example))", &[]),
    );
    assert_eq!(res.code, LdapResultCode::UnwillingToPerform);
    assert!(res.message.contains("at most 3"), "{}", res.message);

    for f in ["(mail=*)", "(mail=a*)", "(objectClass=*)", "(cn=a@x.example)", "(!(mail=a@x.example))"] {
        for scope in [LdapSearchScope::Subtree, LdapSearchScope::OneLevel] {
            let (entries, res) = run(&w, &mut s, search(BASE, scope.clone(), f, &[]));
            assert!(entries.is_empty());
            assert_eq!(res.code, LdapResultCode::UnwillingToPerform, "{f} {scope:?}");
        }
        // From an ancestor or the root too.
        for base in ["dc=bank,dc=example", ""] {
            let (_, res) = run(&w, &mut s, search(base, LdapSearchScope::Subtree, f, &[]));
            assert_eq!(res.code, LdapResultCode::UnwillingToPerform, "{f} under {base:?}");
        }
    }
    // An & with a pinning part is served, the rest checked on the entry.
    let (entries, _) = run(&w, &mut s, sub("(&(mail=a@x.example)(objectClass=inetOrgPerson))", &[]));
    assert_eq!(entries.len(), 1);
    let (entries, _) = run(&w, &mut s, sub("(&(mail=a@x.example)(cn=zzz*))", &[]));
    assert!(entries.is_empty());
    // Subtree from the root with an equality: the same entry.
    let (entries, _) = run(&w, &mut s, search("", LdapSearchScope::Subtree, "(mail=a@x.example)", &[]));
    assert_eq!(entries.len(), 1);
    // An address the HTTP directory refuses matches nothing.
    let (entries, res) = run(&w, &mut s, sub("(mail=not-an-address)", &[]));
    assert!(entries.is_empty());
    assert_eq!(res.code, LdapResultCode::Success);
    // sizeLimit.
    let mut limited = sub("(|(mail=a@x.example)(mail=b@x.example))", &[]);
    if let LdapOp::SearchRequest(r) = &mut limited.op {
        r.sizelimit = 1;
    }
    let (entries, res) = run(&w, &mut s, limited);
    assert_eq!((entries.len(), res.code), (1, LdapResultCode::SizeLimitExceeded));
}

#[test]
fn root_dse_base_entry_and_entry_reads() {
    let mut w = World::new(LdapConfig::default());
    w.add("a@x.example", CertKind::Encryption, 1, 365);
    let mut s = w.session();
    let (entries, _) = run(&w, &mut s, search("", LdapSearchScope::Base, "(objectClass=*)", &["+", "*"]));
    assert_eq!(entries.len(), 1);
    assert_eq!(attr(&entries[0], "namingContexts"), [BASE.as_bytes()]);
    assert_eq!(attr(&entries[0], "supportedLDAPVersion"), [b"3"]);
    let (entries, _) = run(&w, &mut s, search(BASE, LdapSearchScope::Base, "(objectClass=*)", &[]));
    assert_eq!(entries[0].dn, BASE);
    assert_eq!(attr(&entries[0], "ou"), [b"certificates"]);
    let entry = format!("mail=A@x.example,{BASE}");
    let (entries, _) = run(&w, &mut s, search(&entry, LdapSearchScope::Base, "(objectClass=*)", &["mail"]));
    assert_eq!(attr(&entries[0], "mail"), [b"a@x.example"]);
    let (entries, res) = run(
        &w,
        &mut s,
        search(&format!("mail=b@x.example,{BASE}"), LdapSearchScope::Base, "(objectClass=*)", &[]),
    );
    assert!(entries.is_empty());
    assert_eq!(res.code, LdapResultCode::NoSuchObject);
    assert_eq!(res.matcheddn, BASE);
    let (_, res) =
        run(&w, &mut s, search("dc=elsewhere", LdapSearchScope::Subtree, "(mail=a@x.example)", &[]));
    assert_eq!(res.code, LdapResultCode::NoSuchObject);
    let (_, res) = run(&w, &mut s, search("cn=\\", LdapSearchScope::Base, "(objectClass=*)", &[]));
    assert_eq!(res.code, LdapResultCode::InvalidDNSyntax);
}

#[test]
fn binds_keys_quotas_and_writes() {
    let mut w = World::new(LdapConfig::default());
    w.add("a@x.example", CertKind::Encryption, 1, 365);
    let name: ApiKeyName = "Mailer".parse().unwrap();
    let (key, _) = w.dir.keys().create(&name, Some(1.0), Some(3.0), now()).unwrap();
    let (other, _) = w.dir.keys().create(&"other".parse().unwrap(), None, None, now()).unwrap();
    let mut s = w.session();
    let q = || sub("(mail=a@x.example)", &["mail"]);

    // Anonymous, with the anonymous quota per IP address.
    w.dir.keys().set_anonymous(&AnonymousPolicy { enabled: true, rate: 0.001, burst: 2.0 }).unwrap();
    assert_eq!(run(&w, &mut s, bind("", "")).1.code, LdapResultCode::Success);
    assert_eq!(run(&w, &mut s, q()).1.code, LdapResultCode::Success);
    assert_eq!(run(&w, &mut s, q()).1.code, LdapResultCode::Success);
    let (entries, res) = run(&w, &mut s, q());
    assert_eq!(res.code, LdapResultCode::AdminLimitExceeded);
    assert!(entries.is_empty() && res.message.contains("retry after"), "{}", res.message);
    // Another client address has its own bucket; the root DSE costs nothing.
    let mut s2 = Session::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(run(&w, &mut s2, q()).1.code, LdapResultCode::Success);
    assert_eq!(
        run(&w, &mut s, search("", LdapSearchScope::Base, "(objectClass=*)", &[])).1.code,
        LdapResultCode::Success
    );

    // A key: its own quota (burst 3), the name must be the key's.
    let dn = format!("cn=mailer,{BASE}");
    assert_eq!(run(&w, &mut s, bind(&dn, key.expose())).1.code, LdapResultCode::Success);
    for _ in 0..3 {
        assert_eq!(run(&w, &mut s, q()).1.code, LdapResultCode::Success);
    }
    assert_eq!(run(&w, &mut s, q()).1.code, LdapResultCode::AdminLimitExceeded);
    let whoami = LdapMsg::new(
        7,
        LdapOp::ExtendedRequest(LdapExtendedRequest { name: crate::WHOAMI.into(), value: None }),
    );
    let mut out = Vec::new();
    s.handle(&w.st, whoami, &mut out);
    match &out[0].op {
        LdapOp::ExtendedResponse(r) => {
            assert_eq!(r.value.as_deref(), Some(format!("dn:cn=Mailer,{BASE}").as_bytes()))
        }
        other => panic!("{other:?}"),
    }
    for (dn, pw) in [
        (format!("cn=other,{BASE}"), key.expose().to_string()),
        ("cn=mailer,dc=elsewhere".to_string(), key.expose().to_string()),
        (format!("uid=mailer,{BASE}"), key.expose().to_string()),
        (dn.clone(), "cdk_wrong".to_string()),
        (dn.clone(), other.expose().to_string()),
    ] {
        assert_eq!(run(&w, &mut s, bind(&dn, &pw)).1.code, LdapResultCode::InvalidCredentials, "{dn}");
    }
    assert_eq!(run(&w, &mut s, bind(&dn, "")).1.code, LdapResultCode::UnwillingToPerform);
    let sasl = LdapMsg::new(
        7,
        LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: String::new(),
            cred: LdapBindCred::SASL(SaslCredentials { mechanism: "EXTERNAL".into(), credentials: vec![] }),
        }),
    );
    assert_eq!(run(&w, &mut s, sasl).1.code, LdapResultCode::AuthMethodNotSupported);
    let v2 = LdapMsg::new(
        7,
        LdapOp::BindRequest(LdapBindRequest {
            version: 2,
            dn: String::new(),
            cred: LdapBindCred::Simple(String::new()),
        }),
    );
    assert_eq!(run(&w, &mut s, v2).1.code, LdapResultCode::ProtocolError);

    // Revoked: the bound connection is refused at its next search, a new bind is invalid.
    let (other_key, _) = w.dir.keys().create(&"third".parse().unwrap(), None, None, now()).unwrap();
    let dn3 = format!("cn=third,{BASE}");
    assert_eq!(run(&w, &mut s, bind(&dn3, other_key.expose())).1.code, LdapResultCode::Success);
    w.dir.keys().revoke(&"third".parse().unwrap(), now()).unwrap();
    assert_eq!(run(&w, &mut s, q()).1.code, LdapResultCode::InsufficentAccessRights);
    assert_eq!(run(&w, &mut s, bind(&dn3, other_key.expose())).1.code, LdapResultCode::InvalidCredentials);

    // Anonymous off: no anonymous bind, no anonymous search.
    w.dir.keys().set_anonymous(&AnonymousPolicy { enabled: false, rate: 1.0, burst: 1.0 }).unwrap();
    let mut s3 = Session::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)));
    assert_eq!(run(&w, &mut s3, q()).1.code, LdapResultCode::InsufficentAccessRights);
    assert_eq!(run(&w, &mut s3, bind("", "")).1.code, LdapResultCode::InappropriateAuthentication);

    // Writes.
    let writes = [
        LdapOp::AddRequest(LdapAddRequest { dn: format!("mail=x@x.example,{BASE}"), attributes: vec![] }),
        LdapOp::DelRequest(format!("mail=a@x.example,{BASE}")),
        LdapOp::ModifyRequest(LdapModifyRequest { dn: format!("mail=a@x.example,{BASE}"), changes: vec![] }),
        LdapOp::ModifyDNRequest(LdapModifyDNRequest {
            dn: format!("mail=a@x.example,{BASE}"),
            newrdn: "mail=b@x.example".into(),
            deleteoldrdn: true,
            new_superior: None,
        }),
    ];
    for op in writes {
        let (_, res) = run(&w, &mut s3, LdapMsg::new(7, op));
        assert_eq!(res.code, LdapResultCode::UnwillingToPerform);
    }
    let mut out = Vec::new();
    assert_eq!(s3.handle(&w.st, LdapMsg::new(7, LdapOp::UnbindRequest), &mut out), Flow::Close);
    assert!(out.is_empty());
}

/// A tiny deterministic generator (xorshift64*), so the garbage is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn encode(msg: LdapMsg) -> Vec<u8> {
    let mut b = BytesMut::new();
    LdapCodec::default().encode(msg, &mut b).unwrap();
    b.to_vec()
}

/// Feeds `bytes` to a fresh connection as the server does; (closed, answers as bytes).
fn feed(w: &World, bytes: &[u8]) -> (bool, Vec<u8>) {
    let mut codec = LdapCodec::new(Some(w.st.config.max_message_bytes), None);
    let mut session = w.session();
    let mut rbuf = BytesMut::from(bytes);
    let (mut replies, mut wbuf) = (Vec::new(), BytesMut::new());
    let closed = answer_buffered(&w.st, &mut session, &mut codec, &mut rbuf, &mut replies, &mut wbuf);
    (closed, wbuf.to_vec())
}

/// A request whose handler panics gets a notice of disconnection (`other`) and the connection is
/// closed; the answers already made for earlier requests of the same read are sent first.
#[test]
fn a_handler_that_panics_closes_the_connection_with_a_notice() {
    use tokio_util::codec::Decoder;
    let mut w = World::new(LdapConfig::default());
    w.add("a@x.example", CertKind::Encryption, 1, 365);
    let mut bytes = encode(sub("(mail=a@x.example)", &["mail"]));
    bytes.extend(encode(sub("(mail=bug@x.example)", &["mail"])));
    bytes.extend(encode(sub("(mail=a@x.example)", &["mail"])));
    let (closed, answer) = feed(&w, &bytes);
    assert!(closed);
    let mut codec = LdapCodec::default();
    let mut buf = BytesMut::from(answer.as_slice());
    let mut msgs = Vec::new();
    while let Some(m) = codec.decode(&mut buf).unwrap() {
        msgs.push(m);
    }
    assert!(buf.is_empty(), "only whole messages");
    // The first search's entry and result, then the notice; nothing for the third request.
    assert!(matches!(msgs[0].op, LdapOp::SearchResultEntry(_)), "{:?}", msgs[0]);
    assert!(matches!(msgs[1].op, LdapOp::SearchResultDone(ref r) if r.code == LdapResultCode::Success));
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    match &msgs[2].op {
        LdapOp::ExtendedResponse(r) => {
            assert_eq!(msgs[2].msgid, 0, "unsolicited");
            assert_eq!(r.res.code, LdapResultCode::Other);
            assert_eq!(r.name.as_deref(), Some(crate::NOTICE_OF_DISCONNECTION));
        }
        other => panic!("not a notice of disconnection: {other:?}"),
    }
}

#[test]
fn garbage_truncated_and_oversized_ber_never_panics_and_gets_a_notice() {
    let mut w = World::new(LdapConfig::default());
    w.add("a@x.example", CertKind::Encryption, 1, 365);
    let good = encode(sub("(|(mail=a@x.example)(mail=b@x.example))", &["userCertificate;binary", "mail"]));
    let (closed, answer) = feed(&w, &good);
    assert!(!closed && !answer.is_empty());

    let mut rng = Rng(0x5eed_1dea_f00d_cafe);
    for round in 0..3_000 {
        let bytes = match round % 4 {
            // Random bytes, often starting like an LDAPMessage.
            0 => {
                let mut b: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                if rng.below(2) == 0 && !b.is_empty() {
                    b[0] = 0x30;
                }
                b
            }
            // A good message cut short.
            1 => good[..rng.below(good.len())].to_vec(),
            // A good message with bytes flipped.
            2 => {
                let mut b = good.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                b
            }
            // Lengths that lie.
            _ => {
                let mut b = vec![0x30, 0x84];
                b.extend((rng.next() as u32).to_be_bytes());
                b.extend((0..rng.below(64)).map(|_| rng.next() as u8));
                b
            }
        };
        let (closed, answer) = feed(&w, &bytes);
        if closed {
            // Closed with a notice of disconnection, or after an unbind the garbage spelt.
            let notice = crate::NOTICE_OF_DISCONNECTION.as_bytes();
            let unbind = bytes.windows(2).any(|x| x == [0x42, 0x00]);
            assert!(
                answer.windows(notice.len()).any(|x| x == notice) || unbind,
                "round {round}: {bytes:02x?}"
            );
        }
    }

    // Oversized: a message over the limit is refused once its declared size is known to exceed
    // it, and huge declared lengths do not make the server wait for (or keep) more than twice it.
    let big = encode(sub(&format!("(mail={}@x.example)", "a".repeat(40_000)), &[]));
    let (closed, answer) = feed(&w, &big);
    assert!(closed);
    assert!(String::from_utf8_lossy(&answer).contains("over 32768 bytes"));
    let mut huge = vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff];
    huge.resize(70_000, 0x04);
    let (closed, _) = feed(&w, &huge);
    assert!(closed, "a buffer over the limit closes the connection");

    // After all that, a clean connection is served as before.
    let (closed, answer) = feed(&w, &good);
    assert!(!closed && !answer.is_empty());
}

#[test]
fn settings_out_of_range_are_refused_naming_the_setting() {
    assert!(LdapConfig::default().validate().is_ok());
    assert!(!LdapConfig::default().enabled());
    for (config, needle) in [
        (LdapConfig { base_dn: String::new(), ..LdapConfig::default() }, "base_dn"),
        (LdapConfig { base_dn: "ou".into(), ..LdapConfig::default() }, "base_dn"),
        (LdapConfig { max_addresses: 0, ..LdapConfig::default() }, "max_addresses"),
        (LdapConfig { max_addresses: 1_001, ..LdapConfig::default() }, "max_addresses"),
        (LdapConfig { max_message_bytes: 100, ..LdapConfig::default() }, "max_message_bytes"),
        (LdapConfig { idle_timeout_secs: 0, ..LdapConfig::default() }, "idle_timeout_secs"),
        (LdapConfig { max_connections: 0, ..LdapConfig::default() }, "max_connections"),
    ] {
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("[ldap]"), "{e}");
    }
}

#[test]
fn ldaps_without_a_certificate_is_refused() {
    let w = World::new(LdapConfig { tls_listen: Some("127.0.0.1:0".into()), ..LdapConfig::default() });
    let e = crate::server(w.st.clone(), None, 1).map(|_| ()).unwrap_err();
    assert!(matches!(e, crate::Error::NoTlsCertificate), "{e}");
}
