//! One connection's protocol state: who is bound, and the answer to each request. Free of I/O,
//! so that the tests can drive it message by message.

use std::net::IpAddr;
use std::time::Instant;

use cerdb::directory::{ApiKeyName, ApiKeySecret, ClientId};
use cerdb::{CertKind, CertStatus, EmailAddress, Serial};
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapBindResponse, LdapExtendedRequest, LdapExtendedResponse, LdapMsg,
    LdapOp, LdapResult, LdapResultCode, LdapSearchRequest, LdapSearchScope,
};

use crate::dn::{escape_value, Dn};
use crate::entry::{address_entry, base_entry, result_entry, root_dse, AttrType, Entry, Selection};
use crate::filter::{evaluate, pinned, Named, Tri};
use crate::{success, LdapDirectory, Refusal};

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

#[derive(Clone)]
enum Bound {
    Anonymous,
    Key { name: ApiKeyName, secret: ApiKeySecret },
}

/// One connection.
pub(crate) struct Session {
    bound: Bound,
    peer: IpAddr,
}

/// The unsolicited notice that the server closes the connection (RFC 4511 §4.4.1).
pub(crate) fn notice_of_disconnection(code: LdapResultCode, message: &str) -> LdapMsg {
    LdapMsg::new(
        0,
        LdapOp::ExtendedResponse(LdapExtendedResponse {
            res: LdapResult {
                code,
                matcheddn: String::new(),
                message: message.to_string(),
                referral: Vec::new(),
            },
            name: Some(crate::NOTICE_OF_DISCONNECTION.to_string()),
            value: None,
        }),
    )
}

fn read_only() -> LdapResult {
    Refusal::Unwilling("this directory is read-only".into()).result()
}

#[derive(Clone, Copy)]
enum TargetKind {
    Pinned,
    Entry,
}

/// What a search below the base looks at.
enum Target {
    /// The addresses a filter pins.
    Pinned(Vec<Named>),
    /// One address named by the base DN of a base-scope search.
    Entry(Named),
}

impl Session {
    /// A new connection from `peer`: anonymous until it binds.
    pub(crate) fn new(peer: IpAddr) -> Session {
        Session { bound: Bound::Anonymous, peer }
    }

    /// Answers one request into `out`.
    pub(crate) fn handle(&mut self, st: &LdapDirectory, msg: LdapMsg, out: &mut Vec<LdapMsg>) -> Flow {
        let id = msg.msgid;
        let critical = msg.ctrl.iter().find_map(|c| match c {
            LdapControl::Unknown { oid, criticality: true, .. } => Some(oid.clone()),
            LdapControl::SyncRequest { criticality: true, .. } => Some("1.3.6.1.4.1.4203.1.9.1.1".into()),
            _ => None,
        });
        if let Some(oid) = critical {
            if let Some(op) = refusal_op(&msg.op, Refusal::CriticalControl(oid).result()) {
                out.push(LdapMsg::new(id, op));
            }
            return Flow::Continue;
        }
        match msg.op {
            LdapOp::BindRequest(b) => {
                let res = match self.bind(st, &b) {
                    Ok(()) => success(),
                    Err(r) => {
                        self.bound = Bound::Anonymous;
                        r.result()
                    }
                };
                out.push(LdapMsg::new(id, LdapOp::BindResponse(LdapBindResponse { res, saslcreds: None })));
            }
            LdapOp::UnbindRequest => return Flow::Close,
            LdapOp::SearchRequest(req) => self.search(st, id, &req, out),
            LdapOp::AbandonRequest(_) => {} // every request is answered before the next is read
            LdapOp::ExtendedRequest(req) => out.push(LdapMsg::new(id, self.extended(st, &req))),
            op => match refusal_op(&op, read_only()) {
                Some(answer) => out.push(LdapMsg::new(id, answer)),
                None => {
                    out.push(notice_of_disconnection(
                        LdapResultCode::ProtocolError,
                        "a client sent a response: not a request",
                    ));
                    return Flow::Close;
                }
            },
        }
        Flow::Continue
    }

    fn bind(&mut self, st: &LdapDirectory, b: &LdapBindRequest) -> Result<(), Refusal> {
        if b.version != 3 {
            return Err(Refusal::Protocol("only LDAP version 3 is supported".into()));
        }
        let LdapBindCred::Simple(password) = &b.cred else { return Err(Refusal::AuthMethod) };
        if b.dn.is_empty() && password.is_empty() {
            if !st.dir.keys().anonymous()?.enabled {
                return Err(Refusal::AnonymousBindDisabled);
            }
            self.bound = Bound::Anonymous;
            return Ok(());
        }
        if password.is_empty() {
            return Err(Refusal::Unwilling(
                "unauthenticated binds (a name without a password) are refused".into(),
            ));
        }
        let dn = Dn::parse(&b.dn).map_err(|_| Refusal::InvalidCredentials)?;
        let name = match dn.child_of(&st.base) {
            Some(("cn", name)) => name,
            _ => return Err(Refusal::InvalidCredentials),
        };
        // The DN is compared lower-cased; key names keep their case, so compare without it.
        let secret: ApiKeySecret = password.parse().map_err(|_| Refusal::InvalidCredentials)?;
        let Some((_, rec)) = st.dir.keys().authenticate(&secret)? else {
            tracing::debug!("LDAP bind with an unknown or revoked API key");
            return Err(Refusal::InvalidCredentials);
        };
        if !rec.name.as_str().eq_ignore_ascii_case(name) {
            tracing::debug!(key = %rec.name, "LDAP bind with the key of another name");
            return Err(Refusal::InvalidCredentials);
        }
        tracing::debug!(key = %rec.name, "LDAP bind");
        self.bound = Bound::Key { name: rec.name, secret };
        Ok(())
    }

    fn extended(&self, st: &LdapDirectory, req: &LdapExtendedRequest) -> LdapOp {
        let (res, value) = if req.name == crate::WHOAMI {
            let authz = match &self.bound {
                Bound::Anonymous => String::new(),
                Bound::Key { name, .. } => {
                    format!("dn:cn={},{}", escape_value(name.as_str()), st.config.base_dn)
                }
            };
            (success(), Some(authz.into_bytes()))
        } else {
            (Refusal::Protocol(format!("extended operation {} is not supported", req.name)).result(), None)
        };
        LdapOp::ExtendedResponse(LdapExtendedResponse { res, name: None, value })
    }

    /// Who is asking: (bucket, rate, burst), checked again on every search so that a key
    /// revoked or an anonymous policy changed since the bind applies at once.
    fn client(&self, st: &LdapDirectory) -> Result<(ClientId, f64, f64), Refusal> {
        match &self.bound {
            Bound::Anonymous => {
                let policy = st.dir.keys().anonymous()?;
                if !policy.enabled {
                    return Err(Refusal::AnonymousDisabled);
                }
                Ok((ClientId::anonymous(self.peer), policy.rate, policy.burst))
            }
            Bound::Key { secret, .. } => match st.dir.keys().authenticate(secret)? {
                Some((hash, rec)) => Ok((ClientId::Key(hash.0), rec.rate, rec.burst)),
                None => Err(Refusal::KeyRevoked),
            },
        }
    }

    fn charge(&self, st: &LdapDirectory, cost: usize) -> Result<(), Refusal> {
        let (who, rate, burst) = self.client(st)?;
        let verdict = st.dir.limiter().admit(who, rate, burst, cost.max(1) as f64, Instant::now());
        match verdict.retry_after_secs() {
            None => Ok(()),
            Some(retry_after_secs) => {
                if let Bound::Key { name, .. } = &self.bound {
                    tracing::debug!(key = %name, "LDAP client over quota");
                }
                Err(Refusal::OverQuota { retry_after_secs })
            }
        }
    }

    fn search(&mut self, st: &LdapDirectory, id: i32, req: &LdapSearchRequest, out: &mut Vec<LdapMsg>) {
        let start = out.len();
        let res = match self.search_entries(st, req, out) {
            Ok(res) => res,
            Err(r) => {
                out.truncate(start);
                r.result()
            }
        };
        tracing::debug!(
            scope = ?req.scope,
            entries = out.len() - start,
            result = ?res.code,
            key = match &self.bound {
                Bound::Key { name, .. } => name.as_str(),
                Bound::Anonymous => "-",
            },
            "LDAP search"
        );
        out.push(LdapMsg::new(id, LdapOp::SearchResultDone(res)));
        // The message ids of the entries are the request's.
        for m in &mut out[start..] {
            m.msgid = id;
        }
    }

    /// The entries of a search (pushed into `out`) and its final result.
    fn search_entries(
        &self,
        st: &LdapDirectory,
        req: &LdapSearchRequest,
        out: &mut Vec<LdapMsg>,
    ) -> Result<LdapResult, Refusal> {
        let base = Dn::parse(&req.base).map_err(|e| Refusal::InvalidDn(format!("invalid base DN: {e}")))?;
        let selection = Selection::new(&req.attrs);
        let limit = if req.sizelimit > 0 { req.sizelimit as usize } else { usize::MAX };
        let ours = &st.base;
        let scope = &req.scope;

        // Entries without addresses: the root DSE and the base entry.
        let fixed = if base.is_root() && *scope == LdapSearchScope::Base {
            Some(root_dse(&st.config.base_dn))
        } else if base == *ours && *scope == LdapSearchScope::Base {
            Some(base_entry(&st.config.base_dn, ours))
        } else {
            None
        };
        if let Some(entry) = fixed {
            if evaluate(&req.filter, &entry) == Tri::True {
                out.push(LdapMsg::new(
                    0,
                    LdapOp::SearchResultEntry(result_entry(entry, &selection, req.typesonly)),
                ));
            }
            return Ok(success());
        }

        let target = if let Some((attr, value)) = base.child_of(ours) {
            // An address entry as the base: `mail=ADDRESS,<base>`.
            let named = match attr {
                "mail" => crate::filter::address(value),
                _ => None,
            };
            match scope {
                LdapSearchScope::Base | LdapSearchScope::Subtree => Target::Entry(named),
                // Address entries have no children.
                _ => return Ok(success()),
            }
        } else if base.is_within(ours) && base != *ours {
            // Deeper than any entry.
            return Err(Refusal::NoSuchObject { matched: st.config.base_dn.clone() });
        } else if ours.is_within(&base) && *scope != LdapSearchScope::Base {
            // The base or one of its ancestors (the root DSE included), searched below.
            if base != *ours && *scope != LdapSearchScope::Subtree {
                return Ok(success()); // one level below an ancestor: nothing of ours
            }
            Target::Pinned(pinned(&req.filter).ok_or_else(|| {
                Refusal::Unwilling(
                    "searches below the base must name their addresses: (mail=ADDRESS) or an | of \
                     such equalities; presence, substring and other searches are not served"
                        .into(),
                )
            })?)
        } else {
            // Outside this directory's tree, or an ancestor of its base read as an entry: none
            // of these entries is held here.
            return Err(Refusal::NoSuchObject { matched: String::new() });
        };

        let (target_kind, mut named) = match target {
            Target::Entry(n) => (TargetKind::Entry, vec![n]),
            Target::Pinned(v) => (TargetKind::Pinned, v),
        };
        if named.len() > st.config.max_addresses {
            return Err(Refusal::Unwilling(format!(
                "a search may name at most {} addresses",
                st.config.max_addresses
            )));
        }
        self.charge(st, named.len())?;
        let mut seen = std::collections::HashSet::new();
        named.retain(|n| n.as_ref().is_some_and(|e| seen.insert(e.lookup_key())));
        let entry_search = matches!(target_kind, TargetKind::Entry);
        let load = selection.returned_as(AttrType::UserCertificate).is_some() && !req.typesonly;
        let smime = selection.returned_as(AttrType::UserSmimeCertificate).is_some() && !req.typesonly;
        let now = st.dir.now();
        let (mut sent, mut existed) = (0usize, 0usize);
        for email in named.iter().flatten() {
            let Some(entry) = lookup(st, email, load || smime, smime, now)? else { continue };
            existed += 1;
            if evaluate(&req.filter, &entry) != Tri::True {
                continue;
            }
            if sent == limit {
                return Ok(LdapResult {
                    code: LdapResultCode::SizeLimitExceeded,
                    matcheddn: String::new(),
                    message: format!("size limit of {limit} entries reached"),
                    referral: Vec::new(),
                });
            }
            out.push(LdapMsg::new(
                0,
                LdapOp::SearchResultEntry(result_entry(entry, &selection, req.typesonly)),
            ));
            sent += 1;
        }
        if entry_search && existed == 0 {
            // The base names an address entry that does not exist (now).
            return Err(Refusal::NoSuchObject { matched: st.config.base_dn.clone() });
        }
        Ok(success())
    }
}

/// The valid serials of an address, encryption first, each kind newest first; none while the
/// issuing CA is withdrawn.
fn valid_serials(
    st: &LdapDirectory,
    email: &EmailAddress,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Serial>, Refusal> {
    let mut out = Vec::new();
    // Every address certificate is the issuing CA's: none is valid while it is withdrawn.
    if st.dir.issuer_withdrawn(cerdb::CaId::Issuing) {
        return Ok(out);
    }
    for kind in [CertKind::Encryption, CertKind::Signing] {
        for (serial, state) in st.reader.states_by_email(email, kind)? {
            if state.status_at(now) == CertStatus::Valid {
                out.push(serial);
            }
        }
    }
    Ok(out)
}

/// The entry of `email` when it has a certificate valid at `now`; with the certificates' DER
/// when `load`, and their PKCS#7 when `smime` too.
fn lookup(
    st: &LdapDirectory,
    email: &EmailAddress,
    load: bool,
    smime: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Entry>, Refusal> {
    let serials = valid_serials(st, email, now)?;
    if serials.is_empty() {
        return Ok(None);
    }
    if !load {
        return Ok(Some(address_entry(email, &st.config.base_dn, Vec::new(), None)));
    }
    let mut ders = Vec::with_capacity(serials.len());
    for serial in &serials {
        // Revoked between the two reads: left out, as the next search would.
        if let Some(rec) = st.reader.get(serial)? {
            if rec.status_at(now) == CertStatus::Valid && !st.dir.issuer_withdrawn(rec.issuer) {
                ders.push(rec.der);
            }
        }
    }
    if ders.is_empty() {
        return Ok(None);
    }
    let smime = match smime {
        true => Some(
            crate::pkcs7::certs_only(&ders)
                .map_err(|e| Refusal::Storage(format!("a stored certificate does not decode: {e}")))?,
        ),
        false => None,
    };
    Ok(Some(address_entry(email, &st.config.base_dn, ders, smime)))
}

/// The response operation of a request that is refused with `res`; `None` for operations that
/// are not requests (or have no response).
fn refusal_op(op: &LdapOp, res: LdapResult) -> Option<LdapOp> {
    Some(match op {
        LdapOp::BindRequest(_) => LdapOp::BindResponse(LdapBindResponse { res, saslcreds: None }),
        LdapOp::SearchRequest(_) => LdapOp::SearchResultDone(res),
        LdapOp::ModifyRequest(_) => LdapOp::ModifyResponse(res),
        LdapOp::AddRequest(_) => LdapOp::AddResponse(res),
        LdapOp::DelRequest(_) => LdapOp::DelResponse(res),
        LdapOp::ModifyDNRequest(_) => LdapOp::ModifyDNResponse(res),
        LdapOp::CompareRequest(_) => LdapOp::CompareResult(res),
        LdapOp::ExtendedRequest(_) => {
            LdapOp::ExtendedResponse(LdapExtendedResponse { res, name: None, value: None })
        }
        _ => return None,
    })
}
