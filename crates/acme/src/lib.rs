//! # acme — enrolment of mail clients and device agents by ACME
//!
//! **Owns:** the ACME server of RFC 8555 for S/MIME certificates with `email` identifiers
//! (RFC 8823): the directory, replay nonces ([`nonce`]), accounts bound by External Account
//! Binding ([`eab`]), key rollover, orders, authorizations with `email-reply-00` challenges,
//! finalization, certificate download and revocation; JWS verification ([`jws`]); ACME problem
//! documents ([`problem`], the one place where errors reach the wire); per-account rate limits.
//! Its state lives in cerdb's enrolment records ([`cerdb::acme_store`]), so it works on every
//! storage engine.
//!
//! **Must not:** decide what a certificate may hold or sign anything: finalize hands the CSR to
//! [`ca_core::Ca::issue`], which runs exactly the checks of `pki issue` (proof of possession, key
//! rules, compromised keys, mailbox validation).
//!
//! Routes: [`scope`] mounts everything under `/acme/`; every path below it, known or not, gets an
//! answer — a resource or a problem document.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod csr;
pub mod eab;
pub mod jws;
pub mod model;
pub mod nonce;
pub mod problem;
pub mod reply;
pub mod smtp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use ca_core::Ca;
use cerdb::acme_store::AcmeKind;
use cerdb::{EmailAddress, RevocationReason, Serial};
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt as _;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use jws::Jwk;
use model::{
    Account, AccountStatus, Authz, AuthzStatus, Challenge, IssuedTo, Order, OrderStatus, Read, Store,
};
use problem::Problem;

/// `[acme]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    /// New accounts need External Account Binding (default true).
    pub require_eab: bool,
    /// Addresses of `[validation] enterprise_domains` get valid authorizations without a
    /// challenge (default false: every account proves each mailbox, enterprise or not).
    pub enterprise_preauthorized: bool,
    /// New orders and finalizations one account may make per minute.
    pub orders_per_minute: u32,
    /// How long an order lives, in hours.
    pub order_lifetime_hours: u32,
    /// How long an authorization (and its challenge) lives, in hours (at most 24).
    pub authorization_lifetime_hours: u32,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The address challenge mails come from (`from` of the challenge object), where replies go.
    pub challenge_from: Option<String>,
    /// The DNS server DKIM keys are looked up at (`host:port`).
    pub dns_resolver: Option<String>,
    /// `[acme.smtp]`: the listener for challenge replies.
    pub smtp: SmtpSettings,
    /// `[[acme.trusted_relays]]`: MTAs whose `Authentication-Results` (RFC 8601) the CA takes as
    /// the DKIM verdict of a reply they deliver, besides its own DKIM check.
    pub trusted_relays: Vec<TrustedRelay>,
}

/// `[[acme.trusted_relays]]`: one MTA that verifies DKIM and says so in an
/// `Authentication-Results` header. Its header counts only on a message it delivered itself (the
/// SMTP client's address is one of `addresses`), and only its topmost header (the one it added
/// last; anything below may have come with the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedRelay {
    /// The authserv-id the relay writes first in its headers (e.g. `mx1.bank.example`).
    pub authserv_id: String,
    /// The addresses the relay connects to the CA's listener from.
    pub addresses: Vec<std::net::IpAddr>,
}

/// `[acme.smtp]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    /// Where to listen for challenge replies (unset: no listener).
    pub listen: Option<String>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            require_eab: true,
            enterprise_preauthorized: false,
            orders_per_minute: 600,
            order_lifetime_hours: 24,
            authorization_lifetime_hours: 24,
            max_body_bytes: 64 * 1024,
            challenge_from: None,
            dns_resolver: None,
            smtp: SmtpSettings::default(),
            trusted_relays: Vec::new(),
        }
    }
}

impl AcmeConfig {
    /// Refuses values outside their ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.authorization_lifetime_hours == 0 || self.authorization_lifetime_hours > 24 {
            return Err(format!(
                "[acme] authorization_lifetime_hours = {}: expected 1 to 24 (RFC 8823 challenges live at most 24 hours)",
                self.authorization_lifetime_hours
            ));
        }
        if self.order_lifetime_hours == 0 || self.order_lifetime_hours > 24 * 30 {
            return Err(format!(
                "[acme] order_lifetime_hours = {}: expected 1 to 720",
                self.order_lifetime_hours
            ));
        }
        if self.orders_per_minute == 0 {
            return Err("[acme] orders_per_minute = 0: expected at least 1".into());
        }
        if !(4096..=1 << 20).contains(&self.max_body_bytes) {
            return Err(format!("[acme] max_body_bytes = {}: expected 4096 to 1048576", self.max_body_bytes));
        }
        if self.smtp.listen.is_some() && (self.dns_resolver.is_none() || self.challenge_from.is_none()) {
            return Err("[acme.smtp] listen needs [acme] challenge_from (where replies go) and dns_resolver (where DKIM keys are looked up)".into());
        }
        if let Some(d) = &self.dns_resolver {
            if d.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "[acme] dns_resolver = {d:?}: expected an IP address and port, such as \"127.0.0.1:53\""
                ));
            }
        }
        for r in &self.trusted_relays {
            let id = r.authserv_id.trim();
            if id.is_empty() || id.len() > 255 || id.contains([';', ' ', '(', ')']) || id != r.authserv_id {
                return Err(format!(
                    "[[acme.trusted_relays]] authserv_id = {:?}: expected the relay's host name as it writes it in Authentication-Results",
                    r.authserv_id
                ));
            }
            if r.addresses.is_empty() {
                return Err(format!(
                    "[[acme.trusted_relays]] {}: addresses is empty: name the addresses the relay connects from",
                    r.authserv_id
                ));
            }
        }
        if let Some(from) = &self.challenge_from {
            if from.parse::<EmailAddress>().is_err() {
                return Err(format!("[acme] challenge_from = {from:?} is not an address"));
            }
        }
        Ok(())
    }
}

/// The ACME service of one CA.
pub struct Acme {
    ca: Arc<Ca>,
    cfg: AcmeConfig,
    /// `<public_base_url>/acme`.
    base: String,
    nonces: nonce::Nonces,
    /// Per account: a token bucket of orders and finalizations (tokens, when last refilled).
    limits: Mutex<HashMap<String, (f64, DateTime<Utc>)>>,
    rng: ring::rand::SystemRandom,
    /// Sends the challenge mails.
    mailer: Option<Arc<dyn reply::ChallengeMailer>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme").field("base", &self.base).finish_non_exhaustive()
    }
}

/// What a handler answers.
struct Reply {
    status: u16,
    body: Body,
    location: Option<String>,
    links: Vec<String>,
}

enum Body {
    Json(Value),
    Pem(String),
    Empty,
}

impl Reply {
    fn json(status: u16, v: Value) -> Reply {
        Reply { status, body: Body::Json(v), location: None, links: Vec::new() }
    }
    fn at(mut self, location: String) -> Reply {
        self.location = Some(location);
        self
    }
    fn link(mut self, url: String, rel: &str) -> Reply {
        self.links.push(format!("<{url}>;rel=\"{rel}\""));
        self
    }
}

/// A verified request.
struct Ctx {
    jwk: Jwk,
    account: Option<Read<Account>>,
    payload: Vec<u8>,
    url: String,
}

impl Ctx {
    fn account(&self) -> Result<&Account, Problem> {
        self.account
            .as_ref()
            .map(|a| &a.value)
            .ok_or_else(|| Problem::malformed("this request is signed by an account (kid), not a jwk".into()))
    }

    fn json(&self) -> Result<Value, Problem> {
        if self.payload.is_empty() {
            return Ok(json!({}));
        }
        let v: Value = serde_json::from_slice(&self.payload)
            .map_err(|e| Problem::malformed(format!("the payload is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(Problem::malformed("the payload is not a JSON object".into()));
        }
        Ok(v)
    }
}

fn is_post_as_get(ctx: &Ctx) -> bool {
    ctx.payload.is_empty()
}

impl Acme {
    /// The service for `ca`, answering under `<public_base_url>/acme`.
    pub fn new(ca: Arc<Ca>, cfg: AcmeConfig) -> Result<Acme, String> {
        cfg.validate()?;
        let base = format!("{}/acme", ca.config().public_base_url.trim_end_matches('/'));
        Ok(Acme {
            ca,
            cfg,
            base,
            nonces: nonce::Nonces::default(),
            limits: Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
            mailer: None,
        })
    }

    /// Mails challenges through `mailer`.
    pub fn with_mailer(mut self, mailer: Arc<dyn reply::ChallengeMailer>) -> Acme {
        self.mailer = Some(mailer);
        self
    }

    /// A fresh replay nonce (RFC 8555 6.5) for an answer that none of this service's handlers
    /// wrote: `pki serve`'s answer to a handler that panicked.
    pub fn fresh_nonce(&self) -> String {
        self.nonces.issue()
    }

    /// The settings.
    pub fn config(&self) -> &AcmeConfig {
        &self.cfg
    }

    /// Serves `[acme.smtp]`'s listener, bound by [`smtp::bind`]; the address it listens on.
    pub fn start_smtp(self: &Arc<Self>, bound: smtp::SmtpListener) -> Result<std::net::SocketAddr, String> {
        smtp::spawn(self.clone(), bound)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn random_id(&self) -> Result<String, Problem> {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b).map_err(|_| Problem::internal("no randomness"))?;
        Ok(jws::b64e(&b))
    }

    fn now(&self) -> DateTime<Utc> {
        self.ca.now()
    }

    fn directory(&self) -> Value {
        json!({
            "newNonce": self.url("new-nonce"),
            "newAccount": self.url("new-account"),
            "newOrder": self.url("new-order"),
            "revokeCert": self.url("revoke-cert"),
            "keyChange": self.url("key-change"),
            "meta": {
                "externalAccountRequired": self.cfg.require_eab,
                "website": self.ca.config().public_base_url,
            }
        })
    }

    /// Steps of every POST: 1. the body is a flattened JWS; 2. its algorithm is accepted; 3. its
    /// nonce is redeemed; 4. its `url` is the one requested; 5. the key is the `jwk` (new-account,
    /// revoke-cert) or the account's of `kid`; 6. the signature verifies.
    fn verify(&self, path: &str, body: &[u8], jwk_allowed: bool) -> Result<Ctx, Problem> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Problem::malformed(format!("the body is not JSON: {e}")))?;
        let jws = jws::parse(value)?;
        let h = &jws.header;
        if !jws::ALGORITHMS.contains(&h.alg.as_str()) {
            return Err(Problem::bad_signature_algorithm(format!(
                "alg {:?}: accepted are {}",
                h.alg,
                jws::ALGORITHMS.join(", ")
            )));
        }
        let Some(nonce) = &h.nonce else {
            return Err(Problem::bad_nonce("the protected header has no nonce".into()));
        };
        if !self.nonces.redeem(nonce) {
            return Err(Problem::bad_nonce("the nonce is unknown, expired or used: get a new one".into()));
        }
        let url = self.url(path);
        if h.url.as_deref() != Some(url.as_str()) {
            return Err(Problem::unauthorized(format!("the protected header's url is not {url}")));
        }
        let (jwk, account) = match (&h.jwk, &h.kid) {
            (Some(_), Some(_)) => {
                return Err(Problem::malformed("the protected header has both jwk and kid".into()))
            }
            (None, None) => {
                return Err(Problem::malformed("the protected header has neither jwk nor kid".into()))
            }
            (Some(k), None) => {
                if !jwk_allowed {
                    return Err(Problem::malformed(
                        "this request is signed by an account: use kid, not jwk".into(),
                    ));
                }
                (Jwk::from_json(k)?, None)
            }
            (None, Some(kid)) => {
                let Some(id) = kid.strip_prefix(&self.url("account/")) else {
                    return Err(Problem::account_does_not_exist(format!(
                        "kid {kid:?} is not an account URL of this server"
                    )));
                };
                let store = self.ca.db().acme_records();
                let acct: Read<Account> = Store::new(&*store)
                    .get(AcmeKind::Account, id)?
                    .ok_or_else(|| Problem::account_does_not_exist("no such account".into()))?;
                if acct.value.status != AccountStatus::Valid {
                    return Err(Problem::unauthorized(
                        format!("the account is {:?}", acct.value.status).to_lowercase(),
                    ));
                }
                (Jwk::from_json(&acct.value.key)?, Some(acct))
            }
        };
        jwk.verify(&h.alg, &jws.signing_input, &jws.signature)?;
        Ok(Ctx { jwk, account, payload: jws.payload, url })
    }

    /// Handles a POST to `path` (below `/acme/`).
    fn post(&self, path: &str, body: &[u8]) -> Result<Reply, Problem> {
        let segs: Vec<&str> = path.split('/').collect();
        match segs.as_slice() {
            ["new-account"] => self.new_account(self.verify(path, body, true)?),
            ["revoke-cert"] => self.revoke_cert(self.verify(path, body, true)?),
            ["account", id] => self.account_post(self.verify(path, body, false)?, id),
            ["key-change"] => self.key_change(self.verify(path, body, false)?),
            ["new-order"] => self.new_order(self.verify(path, body, false)?),
            ["orders", id] => self.orders(self.verify(path, body, false)?, id),
            ["order", id] => self.order_get(self.verify(path, body, false)?, id),
            ["order", id, "finalize"] => self.finalize(self.verify(path, body, false)?, id),
            ["authz", id] => self.authz_post(self.verify(path, body, false)?, id),
            ["chall", id] => self.challenge_post(self.verify(path, body, false)?, id),
            ["cert", id] => self.certificate(self.verify(path, body, false)?, id),
            _ => Err(Problem::not_found("ACME resource")),
        }
    }

    fn account_json(&self, a: &Account) -> Value {
        json!({
            "status": a.status,
            "contact": a.contact,
            "orders": self.url(&format!("orders/{}", a.id)),
        })
    }

    fn check_contacts(v: &Value) -> Result<Option<Vec<String>>, Problem> {
        let Some(c) = v.get("contact") else { return Ok(None) };
        let list = c.as_array().ok_or_else(|| Problem::malformed("contact is not a list".into()))?;
        if list.len() > 4 {
            return Err(Problem::unsupported_contact("at most 4 contacts".into()));
        }
        let mut out = Vec::new();
        for item in list {
            let s = item.as_str().ok_or_else(|| Problem::malformed("a contact is not a string".into()))?;
            let addr = s
                .strip_prefix("mailto:")
                .ok_or_else(|| Problem::unsupported_contact("contacts are mailto: URLs".into()))?;
            addr.parse::<EmailAddress>()
                .map_err(|_| Problem::unsupported_contact("a mailto: contact is not an address".into()))?;
            out.push(s.to_string());
        }
        Ok(Some(out))
    }

    fn new_account(&self, ctx: Ctx) -> Result<Reply, Problem> {
        let p = ctx.json()?;
        let store = self.ca.db().acme_records();
        let st = Store::new(&*store);
        let thumb = ctx.jwk.thumbprint();
        if let Some(idx) = st.get::<Value>(AcmeKind::AccountKey, &thumb)? {
            let id = idx.value.get("account").and_then(Value::as_str).unwrap_or_default().to_string();
            if let Some(acct) = st.get::<Account>(AcmeKind::Account, &id)? {
                return Ok(
                    Reply::json(200, self.account_json(&acct.value)).at(self.url(&format!("account/{id}")))
                );
            }
        }
        if p.get("onlyReturnExisting").and_then(Value::as_bool) == Some(true) {
            return Err(Problem::account_does_not_exist("no account has this key".into()));
        }
        let contact = Self::check_contacts(&p)?.unwrap_or_default();
        let id = self.random_id()?;
        let eab_kid = match p.get("externalAccountBinding") {
            Some(binding) => Some(eab::bind(&self.ca, &self.url("new-account"), binding, &ctx.jwk, &id)?),
            None if self.cfg.require_eab => {
                return Err(Problem::external_account_required(
                    "this server requires External Account Binding: ask the PKI officers for a key id and HMAC key (`pki acme eab create`)".into(),
                ))
            }
            None => None,
        };
        let now = self.now();
        let account = Account {
            id: id.clone(),
            status: AccountStatus::Valid,
            contact,
            key: ctx.jwk.to_json(),
            thumbprint: thumb.clone(),
            eab_kid: eab_kid.clone(),
            created_at: now,
        };
        if !st.insert(AcmeKind::AccountKey, &thumb, now, &json!({"account": id}))? {
            return Err(Problem::malformed(
                "an account with this key was created meanwhile: ask again".into(),
            )
            .with_status(409));
        }
        st.insert(AcmeKind::Account, &id, now, &account)?;
        let note = format!(
            "account {id} created{}",
            eab_kid.map(|k| format!(" with External Account Binding key {k}")).unwrap_or_default()
        );
        self.ca
            .audit_event(&format!("acme:{id}"), ca_core::AuditAction::Acme, true, &note)
            .map_err(Problem::internal)?;
        Ok(Reply::json(201, self.account_json(&account)).at(self.url(&format!("account/{id}"))))
    }

    fn own_account<'a>(&self, ctx: &'a Ctx, id: &str) -> Result<&'a Account, Problem> {
        let a = ctx.account()?;
        if a.id != id {
            return Err(Problem::unauthorized("the account URL is not the one of the signing key".into()));
        }
        Ok(a)
    }

    fn account_post(&self, ctx: Ctx, id: &str) -> Result<Reply, Problem> {
        let current = self.own_account(&ctx, id)?.clone();
        let p = ctx.json()?;
        let mut next = current.clone();
        if let Some(c) = Self::check_contacts(&p)? {
            next.contact = c;
        }
        match p.get("status").and_then(Value::as_str) {
            None => {}
            Some("deactivated") => next.status = AccountStatus::Deactivated,
            Some(other) => {
                return Err(Problem::malformed(format!(
                    "status {other:?}: an account can only be deactivated"
                )))
            }
        }
        if next != current {
            let store = self.ca.db().acme_records();
            let read = ctx.account.as_ref().ok_or_else(|| Problem::internal("account missing"))?;
            if !Store::new(&*store).replace(AcmeKind::Account, id, read, &next)? {
                return Err(
                    Problem::malformed("the account changed meanwhile: ask again".into()).with_status(409)
                );
            }
            if next.status != current.status {
                self.ca
                    .audit_event(
                        &format!("acme:{id}"),
                        ca_core::AuditAction::Acme,
                        true,
                        &format!("account {id} deactivated"),
                    )
                    .map_err(Problem::internal)?;
            }
        }
        Ok(Reply::json(200, self.account_json(&next)).at(self.url(&format!("account/{id}"))))
    }

    /// Key rollover (RFC 8555 §7.3.5): the payload is a JWS by the new key over the account URL
    /// and the old key.
    fn key_change(&self, ctx: Ctx) -> Result<Reply, Problem> {
        let acct = ctx.account()?.clone();
        let inner_v: Value = serde_json::from_slice(&ctx.payload)
            .map_err(|e| Problem::malformed(format!("the payload is not a JWS: {e}")))?;
        let inner = jws::parse(inner_v)?;
        let new_key =
            inner.header.jwk.as_ref().ok_or_else(|| Problem::malformed("the inner JWS has no jwk".into()))?;
        if inner.header.kid.is_some() || inner.header.nonce.is_some() {
            return Err(Problem::malformed("the inner JWS has a kid or a nonce".into()));
        }
        if inner.header.url.as_deref() != Some(ctx.url.as_str()) {
            return Err(Problem::malformed("the inner JWS's url is not the key-change URL".into()));
        }
        let new_key = Jwk::from_json(new_key)?;
        new_key.verify(&inner.header.alg, &inner.signing_input, &inner.signature)?;
        let p: Value = serde_json::from_slice(&inner.payload)
            .map_err(|e| Problem::malformed(format!("the inner payload is not JSON: {e}")))?;
        if p.get("account").and_then(Value::as_str)
            != Some(self.url(&format!("account/{}", acct.id)).as_str())
        {
            return Err(Problem::unauthorized("the inner payload names another account".into()));
        }
        let old = Jwk::from_json(
            p.get("oldKey").ok_or_else(|| Problem::malformed("the inner payload has no oldKey".into()))?,
        )?;
        if old.thumbprint() != acct.thumbprint {
            return Err(Problem::unauthorized("oldKey is not the account's key".into()));
        }
        let store = self.ca.db().acme_records();
        let st = Store::new(&*store);
        let thumb = new_key.thumbprint();
        let now = self.now();
        if let Some(idx) = st.get::<Value>(AcmeKind::AccountKey, &thumb)? {
            let other = idx.value.get("account").and_then(Value::as_str).unwrap_or_default();
            return Err(Problem::malformed(format!(
                "the new key is the key of account {}",
                self.url(&format!("account/{other}"))
            ))
            .with_status(409));
        }
        if !st.insert(AcmeKind::AccountKey, &thumb, now, &json!({"account": acct.id}))? {
            return Err(Problem::malformed("the new key was taken meanwhile".into()).with_status(409));
        }
        let mut next = acct.clone();
        next.key = new_key.to_json();
        next.thumbprint = thumb.clone();
        let read = ctx.account.as_ref().ok_or_else(|| Problem::internal("account missing"))?;
        if !st.replace(AcmeKind::Account, &acct.id, read, &next)? {
            let _ = store.remove_acme(AcmeKind::AccountKey, &thumb);
            return Err(
                Problem::malformed("the account changed meanwhile: ask again".into()).with_status(409)
            );
        }
        store.remove_acme(AcmeKind::AccountKey, &acct.thumbprint).map_err(Problem::internal)?;
        self.ca
            .audit_event(
                &format!("acme:{}", acct.id),
                ca_core::AuditAction::Acme,
                true,
                &format!("account {} key rolled over", acct.id),
            )
            .map_err(Problem::internal)?;
        Ok(Reply::json(200, self.account_json(&next)).at(self.url(&format!("account/{}", acct.id))))
    }

    /// The per-account rate limit: a bucket of `orders_per_minute` tokens, refilled continuously
    /// at that rate; each new order and each finalization takes one.
    fn rate(&self, account: &str) -> Result<(), Problem> {
        let now = self.now();
        let per_minute = f64::from(self.cfg.orders_per_minute);
        let mut g = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 100_000 {
            g.retain(|_, (_, at)| now - *at < Duration::minutes(1));
        }
        let (tokens, at) = g.entry(account.to_string()).or_insert((per_minute, now));
        let elapsed = (now - *at).num_milliseconds().max(0) as f64 / 60_000.0;
        *tokens = (*tokens + elapsed * per_minute).min(per_minute);
        *at = now;
        if *tokens < 1.0 {
            let wait = ((1.0 - *tokens) * 60.0 / per_minute).ceil().max(1.0) as u64;
            return Err(Problem::rate_limited(
                format!(
                    "at most {} orders and finalizations per minute for an account",
                    self.cfg.orders_per_minute
                ),
                wait,
            ));
        }
        *tokens -= 1.0;
        Ok(())
    }

    fn new_order(&self, ctx: Ctx) -> Result<Reply, Problem> {
        let acct = ctx.account()?.clone();
        // No order the CA cannot finish: none while its issuing CA is compromised.
        if let Err(e) = self.ca.refuse_if_compromised(ca_core::OwnCert::Issuing) {
            return Err(match e {
                ca_core::Error::Compromised { .. } => Problem::unavailable(e.to_string()),
                other => Problem::internal(other),
            });
        }
        let p = ctx.json()?;
        let ids = p
            .get("identifiers")
            .and_then(Value::as_array)
            .ok_or_else(|| Problem::malformed("the order has no identifiers".into()))?;
        if ids.len() != 1 {
            return Err(Problem::rejected_identifier(
                "one email identifier per order: a certificate is for one mailbox".into(),
            ));
        }
        let id0 = &ids[0];
        let kind = id0.get("type").and_then(Value::as_str).unwrap_or_default();
        if kind != "email" {
            return Err(Problem::unsupported_identifier(format!(
                "identifier type {kind:?}: this CA issues for email identifiers (RFC 8823)"
            )));
        }
        let value = id0.get("value").and_then(Value::as_str).unwrap_or_default();
        let email: EmailAddress = value.parse().map_err(|_| {
            Problem::rejected_identifier("the email identifier is not an address this CA accepts".into())
        })?;
        if p.get("notBefore").is_some() || p.get("notAfter").is_some() {
            return Err(Problem::malformed(
                "notBefore and notAfter are not supported: the profile sets the validity".into(),
            ));
        }
        self.rate(&acct.id)?;
        let now = self.now();
        let mut authz = self.new_authz(&acct, &email, now)?;
        self.send_challenge(&mut authz)?;
        let store = self.ca.db().acme_records();
        // Both records are acknowledged by the reply: one write to disk for the two.
        let st = Store::deferring(&*store);
        let order_id = self.random_id()?;
        let status =
            if authz.status == AuthzStatus::Valid { OrderStatus::Ready } else { OrderStatus::Pending };
        let order = Order {
            id: order_id.clone(),
            account: acct.id.clone(),
            status,
            email: email.lookup_key(),
            authorizations: vec![authz.id.clone()],
            expires: now + Duration::hours(i64::from(self.cfg.order_lifetime_hours)),
            certificate: None,
            created_at: now,
        };
        st.insert(AcmeKind::Authorization, &authz.id, now, &authz)?;
        st.insert(AcmeKind::Order, &order_id, now, &order)?;
        st.sync()?;
        Ok(Reply::json(201, self.order_json(&order)).at(self.url(&format!("order/{order_id}"))))
    }

    /// A new authorization: valid at once when the account validated this address within the
    /// reuse period, or (with `enterprise_preauthorized`) for an enterprise domain; else pending
    /// with an `email-reply-00` challenge.
    fn new_authz(&self, acct: &Account, email: &EmailAddress, now: DateTime<Utc>) -> Result<Authz, Problem> {
        let id = self.random_id()?;
        let expires = now + Duration::hours(i64::from(self.cfg.authorization_lifetime_hours));
        let mut authz = Authz {
            id,
            account: acct.id.clone(),
            email: email.lookup_key(),
            status: AuthzStatus::Pending,
            expires,
            challenge: None,
            note: None,
        };
        let vcfg = self.ca.validation_config().cloned().unwrap_or_default();
        if let Some(v) = self.ca.mailbox_validation(email).map_err(Problem::internal)? {
            let fresh =
                v.validated_at + Duration::days(i64::from(vcfg.reuse_days)) > now && v.validated_at <= now;
            if fresh && v.acme_account.as_deref() == Some(acct.id.as_str()) {
                authz.status = AuthzStatus::Valid;
                authz.note = Some(format!("validated by this account at {}", v.validated_at.to_rfc3339()));
                return Ok(authz);
            }
        }
        if self.cfg.enterprise_preauthorized {
            if let Some(d) = vcfg.enterprise_domain_of(email) {
                authz.status = AuthzStatus::Valid;
                authz.note = Some(format!("enterprise domain {d} (S/MIME BR 3.2.2.1)"));
                return Ok(authz);
            }
        }
        authz.challenge = Some(Challenge {
            status: AuthzStatus::Pending,
            token_part1: self.random_id()?,
            token_part2: self.random_id()?,
            sent_at: None,
            validated: None,
            error: None,
        });
        Ok(authz)
    }

    fn order_json(&self, o: &Order) -> Value {
        let mut v = json!({
            "status": o.status,
            "expires": o.expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "identifiers": [{"type": "email", "value": o.email}],
            "authorizations": o.authorizations.iter().map(|a| self.url(&format!("authz/{a}"))).collect::<Vec<_>>(),
            "finalize": self.url(&format!("order/{}/finalize", o.id)),
        });
        if let Some(serial) = &o.certificate {
            v["certificate"] = json!(self.url(&format!("cert/{serial}")));
        }
        v
    }

    /// An order of the signing account, its status brought up to date (expiry; authorizations
    /// all valid → ready; one invalid → invalid).
    fn load_order(&self, ctx: &Ctx, id: &str) -> Result<Read<Order>, Problem> {
        let acct = ctx.account()?;
        let store = self.ca.db().acme_records();
        let st = Store::new(&*store);
        let read: Read<Order> = st.get(AcmeKind::Order, id)?.ok_or_else(|| Problem::not_found("order"))?;
        if read.value.account != acct.id {
            return Err(Problem::unauthorized("the order belongs to another account".into()));
        }
        let now = self.now();
        let mut next = read.value.clone();
        if matches!(next.status, OrderStatus::Pending | OrderStatus::Ready) {
            if now >= next.expires {
                next.status = OrderStatus::Invalid;
            } else {
                let mut all_valid = true;
                for a in &next.authorizations {
                    let az = self.load_authz_raw(a)?;
                    match az.value.status {
                        AuthzStatus::Valid => {}
                        AuthzStatus::Pending | AuthzStatus::Processing => all_valid = false,
                        _ => {
                            all_valid = false;
                            next.status = OrderStatus::Invalid;
                        }
                    }
                }
                if all_valid {
                    next.status = OrderStatus::Ready;
                }
            }
        }
        st.refreshed(AcmeKind::Order, id, read, next)
    }

    fn load_authz_raw(&self, id: &str) -> Result<Read<Authz>, Problem> {
        let store = self.ca.db().acme_records();
        let st = Store::new(&*store);
        let read: Read<Authz> =
            st.get(AcmeKind::Authorization, id)?.ok_or_else(|| Problem::not_found("authorization"))?;
        let now = self.now();
        let mut next = read.value.clone();
        let challenge_stale =
            next.challenge.as_ref().and_then(|c| c.sent_at).is_some_and(|t| now - t > Duration::hours(24));
        if matches!(next.status, AuthzStatus::Pending | AuthzStatus::Processing)
            && (now >= next.expires || challenge_stale)
        {
            next.status = if challenge_stale { AuthzStatus::Invalid } else { AuthzStatus::Expired };
            if let Some(c) = next.challenge.as_mut() {
                c.status = AuthzStatus::Invalid;
                c.error = Some(("incorrectResponse".into(), "the challenge is older than 24 hours".into()));
            }
        }
        st.refreshed(AcmeKind::Authorization, id, read, next)
    }

    fn order_get(&self, ctx: Ctx, id: &str) -> Result<Reply, Problem> {
        if !is_post_as_get(&ctx) {
            return Err(Problem::malformed("an order is read with POST-as-GET (an empty payload)".into()));
        }
        let o = self.load_order(&ctx, id)?;
        Ok(Reply::json(200, self.order_json(&o.value)).at(self.url(&format!("order/{id}"))))
    }

    fn orders(&self, ctx: Ctx, id: &str) -> Result<Reply, Problem> {
        let acct = self.own_account(&ctx, id)?;
        let store = self.ca.db().acme_records();
        let all: Vec<Order> = Store::new(&*store).all(AcmeKind::Order)?;
        let mine: Vec<String> = all
            .iter()
            .filter(|o| {
                o.account == acct.id
                    && matches!(o.status, OrderStatus::Pending | OrderStatus::Ready | OrderStatus::Processing)
            })
            .map(|o| self.url(&format!("order/{}", o.id)))
            .collect();
        Ok(Reply::json(200, json!({"orders": mine})))
    }

    fn challenge_json(&self, a: &Authz, c: &Challenge) -> Value {
        let mut v = json!({
            "type": "email-reply-00",
            "url": self.url(&format!("chall/{}", a.id)),
            "status": c.status,
            "token": c.token_part2,
        });
        if let Some(from) = &self.cfg.challenge_from {
            v["from"] = json!(from);
        }
        if let Some(t) = c.validated {
            v["validated"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        if let Some((kind, detail)) = &c.error {
            v["error"] = json!({"type": format!("urn:ietf:params:acme:error:{kind}"), "detail": detail});
        }
        v
    }

    fn authz_json(&self, a: &Authz) -> Value {
        json!({
            "status": a.status,
            "expires": a.expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "identifier": {"type": "email", "value": a.email},
            "challenges": a.challenge.iter().map(|c| self.challenge_json(a, c)).collect::<Vec<_>>(),
        })
    }

    fn own_authz(&self, ctx: &Ctx, id: &str) -> Result<Read<Authz>, Problem> {
        let acct = ctx.account()?;
        let a = self.load_authz_raw(id)?;
        if a.value.account != acct.id {
            return Err(Problem::unauthorized("the authorization belongs to another account".into()));
        }
        Ok(a)
    }

    fn authz_post(&self, ctx: Ctx, id: &str) -> Result<Reply, Problem> {
        let read = self.own_authz(&ctx, id)?;
        let p = ctx.json()?;
        let mut a = read.value.clone();
        match p.get("status").and_then(Value::as_str) {
            None => {}
            Some("deactivated") => {
                if matches!(a.status, AuthzStatus::Pending | AuthzStatus::Valid) {
                    a.status = AuthzStatus::Deactivated;
                    let store = self.ca.db().acme_records();
                    if !Store::new(&*store).replace(AcmeKind::Authorization, id, &read, &a)? {
                        return Err(Problem::malformed(
                            "the authorization changed meanwhile: ask again".into(),
                        )
                        .with_status(409));
                    }
                }
            }
            Some(other) => {
                return Err(Problem::malformed(format!(
                    "status {other:?}: an authorization can only be deactivated"
                )))
            }
        }
        Ok(Reply::json(200, self.authz_json(&a)).at(self.url(&format!("authz/{id}"))))
    }

    /// The client says it is ready (RFC 8823 §3: after it replied to the challenge mail). The
    /// reply itself is what validates; this only reports where the challenge is.
    fn challenge_post(&self, ctx: Ctx, id: &str) -> Result<Reply, Problem> {
        let read = self.own_authz(&ctx, id)?;
        let a = read.value;
        let Some(c) = &a.challenge else { return Err(Problem::not_found("challenge")) };
        let mut shown = c.clone();
        if shown.status == AuthzStatus::Pending
            && ctx.json()?.as_object().is_some_and(|o| o.is_empty())
            && !is_post_as_get(&ctx)
        {
            shown.status = AuthzStatus::Processing;
            let mut next = a.clone();
            next.challenge = Some(shown.clone());
            next.status = AuthzStatus::Pending;
            let store = self.ca.db().acme_records();
            let _ = Store::new(&*store).replace(
                AcmeKind::Authorization,
                id,
                &Read { raw: read.raw, value: a.clone() },
                &next,
            )?;
        }
        Ok(Reply::json(200, self.challenge_json(&a, &shown)).link(self.url(&format!("authz/{id}")), "up"))
    }

    fn finalize(&self, ctx: Ctx, id: &str) -> Result<Reply, Problem> {
        let acct = ctx.account()?.clone();
        let read = self.load_order(&ctx, id)?;
        let order = read.value.clone();
        if order.status != OrderStatus::Ready {
            return Err(Problem::order_not_ready(
                format!("the order is {:?}, not ready", order.status).to_lowercase(),
            ));
        }
        let p = ctx.json()?;
        let csr_b64 = p
            .get("csr")
            .and_then(Value::as_str)
            .ok_or_else(|| Problem::malformed("the payload has no csr".into()))?;
        let der = jws::b64d(csr_b64, "csr").map_err(|_| Problem::bad_csr("csr is not base64url".into()))?;
        let usage = csr::requested_usage(&der)?;
        self.rate(&acct.id)?;
        let store = self.ca.db().acme_records();
        let st = Store::deferring(&*store);
        let mut processing = order.clone();
        processing.status = OrderStatus::Processing;
        // The marker that keeps a second finalize out need not reach the disk by itself: if the
        // process dies before the certificate is stored, the order is ready again; the
        // certificate's own durable write carries the marker with it.
        if !st.replace(AcmeKind::Order, id, &read, &processing)? {
            return Err(Problem::order_not_ready("the order is being finalized by another request".into()));
        }
        let processing_read = Read {
            raw: serde_json::to_vec(&processing).map_err(Problem::internal)?,
            value: processing.clone(),
        };
        let email: EmailAddress = order.email.parse().map_err(Problem::internal)?;
        let req = ca_core::IssueRequest { email, usage, csr: der };
        let issued = match self.ca.issue(&req, &format!("acme:{}", acct.id)) {
            Ok(i) => i,
            Err(e) => {
                let (problem, back) = issue_problem(e);
                let _ = st.replace(
                    AcmeKind::Order,
                    id,
                    &processing_read,
                    &Order { status: back, ..order.clone() },
                );
                let _ = st.sync();
                return Err(problem);
            }
        };
        let serial = issued.record.serial.to_string();
        let now = self.now();
        // The issued-to record and the valid order are acknowledged by the reply: one write to disk.
        st.insert(AcmeKind::IssuedCert, &serial, now, &IssuedTo { account: acct.id.clone() })?;
        let done = Order { status: OrderStatus::Valid, certificate: Some(serial), ..order };
        st.replace(AcmeKind::Order, id, &processing_read, &done)?;
        st.sync()?;
        Ok(Reply::json(200, self.order_json(&done)).at(self.url(&format!("order/{id}"))))
    }

    fn certificate(&self, ctx: Ctx, id: &str) -> Result<Reply, Problem> {
        let acct = ctx.account()?;
        let serial: Serial = id.parse().map_err(|_| Problem::not_found("certificate"))?;
        let store = self.ca.db().acme_records();
        let to: Read<IssuedTo> = Store::new(&*store)
            .get(AcmeKind::IssuedCert, &serial.to_string())?
            .ok_or_else(|| Problem::not_found("certificate"))?;
        if to.value.account != acct.id {
            return Err(Problem::unauthorized("the certificate was issued to another account".into()));
        }
        let rec = self.ca.show(&serial).map_err(Problem::internal)?;
        let mut pem = ca_core::to_pem("CERTIFICATE", &rec.der);
        pem.push_str(&ca_core::to_pem("CERTIFICATE", &self.ca.ca_cert(ca_core::CaCert::Issuing)));
        Ok(Reply { status: 200, body: Body::Pem(pem), location: None, links: Vec::new() })
    }

    /// Revocation (RFC 8555 §7.6) by the account the certificate was issued to, or by a request
    /// signed with the certificate's own key.
    fn revoke_cert(&self, ctx: Ctx) -> Result<Reply, Problem> {
        let p = ctx.json()?;
        let b64 = p
            .get("certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| Problem::malformed("the payload has no certificate".into()))?;
        let der = jws::b64d(b64, "certificate")?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| Problem::malformed("certificate is not a DER certificate".into()))?;
        let serial = Serial::from_bytes(cert.raw_serial()).map_err(|_| Problem::not_found("certificate"))?;
        let stored = self.ca.show(&serial).map_err(|_| Problem::not_found("certificate"))?;
        if stored.der != der {
            return Err(Problem::not_found("certificate"));
        }
        let actor = match &ctx.account {
            Some(a) => {
                let store = self.ca.db().acme_records();
                let to: Option<Read<IssuedTo>> =
                    Store::new(&*store).get(AcmeKind::IssuedCert, &serial.to_string())?;
                if to.map(|t| t.value.account) != Some(a.value.id.clone()) {
                    return Err(Problem::unauthorized(
                        "the certificate was not issued to this account".into(),
                    ));
                }
                format!("acme:{}", a.value.id)
            }
            None => {
                if !ctx.jwk.matches_spki(cert.public_key()) {
                    return Err(Problem::unauthorized(
                        "the request is signed neither by the account nor by the certificate's key".into(),
                    ));
                }
                "acme:certificate-key".to_string()
            }
        };
        let reason = match p.get("reason") {
            None => RevocationReason::Unspecified,
            Some(r) => {
                let code = r
                    .as_u64()
                    .ok_or_else(|| Problem::bad_revocation_reason("reason is not a number".into()))?;
                RevocationReason::ALL
                    .iter()
                    .copied()
                    .find(|x| {
                        u64::from(x.code()) == code
                            && !matches!(
                                x,
                                RevocationReason::CaCompromise | RevocationReason::PrivilegeWithdrawn
                            )
                    })
                    .ok_or_else(|| {
                        Problem::bad_revocation_reason(format!(
                            "reason {code}: accepted are 0, 1, 3, 4 and 5"
                        ))
                    })?
            }
        };
        match self.ca.revoke(&serial, reason, &actor) {
            Ok(_) => Ok(Reply { status: 200, body: Body::Empty, location: None, links: Vec::new() }),
            Err(ca_core::Error::Storage(cerdb::Error::AlreadyRevoked { .. })) => {
                Err(Problem::already_revoked("the certificate is revoked already".into()))
            }
            Err(e) => Err(Problem::internal(e)),
        }
    }
}

/// A refusal of [`Ca::issue`] as a problem, and the status the order goes back to.
fn issue_problem(e: ca_core::Error) -> (Problem, OrderStatus) {
    use ca_core::Error as E;
    match e {
        e if e.is_csr_refusal() => (Problem::bad_csr(e.to_string()), OrderStatus::Ready),
        E::MailboxNotValidated { .. } => (Problem::unauthorized(e.to_string()), OrderStatus::Invalid),
        E::Compromised { .. } => (Problem::unavailable(e.to_string()), OrderStatus::Invalid),
        other => (Problem::internal(other), OrderStatus::Invalid),
    }
}

/// The routes: everything below `/acme/`.
pub fn scope(acme: web::Data<Acme>) -> actix_web::Scope {
    web::scope("/acme").app_data(acme).default_service(web::to(dispatch))
}

fn respond(acme: &Acme, result: Result<Reply, Problem>) -> HttpResponse {
    let mut resp = match result {
        Ok(r) => {
            let mut b = HttpResponse::build(StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK));
            if let Some(l) = &r.location {
                b.insert_header(("Location", l.as_str()));
            }
            for l in &r.links {
                b.append_header(("Link", l.as_str()));
            }
            match r.body {
                Body::Json(v) => b.content_type("application/json").body(v.to_string()),
                Body::Pem(p) => b.content_type("application/pem-certificate-chain").body(p),
                Body::Empty => b.finish(),
            }
        }
        Err(p) => {
            let mut b =
                HttpResponse::build(StatusCode::from_u16(p.http_status()).unwrap_or(StatusCode::BAD_REQUEST));
            if let Some(s) = p.retry_after {
                b.insert_header(("Retry-After", s.to_string()));
            }
            b.content_type("application/problem+json").body(p.body())
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = acme.nonces.issue().parse() {
        h.insert(actix_web::http::header::HeaderName::from_static("replay-nonce"), v);
    }
    if let Ok(v) = format!("<{}>;rel=\"index\"", acme.url("directory")).parse() {
        h.append(actix_web::http::header::LINK, v);
    }
    if let Ok(v) = "no-store".parse() {
        h.insert(actix_web::http::header::CACHE_CONTROL, v);
    }
    resp
}

/// 405 with `Allow` (RFC 9110 §15.5.6) and a `malformed` problem (RFC 8555 §6.3).
fn not_allowed(acme: &Acme, detail: String, allow: &'static str) -> HttpResponse {
    let mut resp = respond(acme, Err(Problem::malformed(detail).with_status(405)));
    resp.headers_mut()
        .insert(actix_web::http::header::ALLOW, actix_web::http::header::HeaderValue::from_static(allow));
    resp
}

async fn dispatch(req: HttpRequest, mut payload: web::Payload, acme: web::Data<Acme>) -> HttpResponse {
    let path = req.path().strip_prefix("/acme").unwrap_or("").trim_start_matches('/').to_string();
    let method = req.method().clone();
    if method == Method::GET || method == Method::HEAD {
        return match path.as_str() {
            "directory" | "" => respond(&acme, Ok(Reply::json(200, acme.directory()))),
            "new-nonce" => {
                let status = if method == Method::HEAD { 200 } else { 204 };
                respond(&acme, Ok(Reply { status, body: Body::Empty, location: None, links: Vec::new() }))
            }
            _ => not_allowed(&acme, "ACME resources are read with POST-as-GET".into(), "POST"),
        };
    }
    let read_only = matches!(path.as_str(), "directory" | "" | "new-nonce");
    if method != Method::POST {
        let allow = if read_only { "GET, HEAD" } else { "POST" };
        return not_allowed(&acme, format!("method {method} is not used by ACME"), allow);
    }
    // Refused by its method before its content type or body is looked at.
    if read_only {
        return not_allowed(&acme, format!("/acme/{path} is read with GET or HEAD"), "GET, HEAD");
    }
    let ctype =
        req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ctype.split(';').next().map(str::trim) != Some("application/jose+json") {
        return respond(
            &acme,
            Err(Problem::malformed(format!(
                "content type {ctype:?}: ACME requests are application/jose+json"
            ))
            .with_status(415)),
        );
    }
    let limit = acme.cfg.max_body_bytes;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(c) if body.len() + c.len() <= limit => body.extend_from_slice(&c),
            Ok(_) => {
                return respond(
                    &acme,
                    Err(Problem::malformed(format!("the body is larger than {limit} bytes")).with_status(413)),
                )
            }
            Err(_) => return respond(&acme, Err(Problem::malformed("the body could not be read".into()))),
        }
    }
    // A certificate download only reads (the account, the issued-to record, the certificate),
    // which the embedded store serves from memory: answered on this thread, without the
    // hand-over to a blocking thread and back that requests which write to disk need. A network
    // database's client blocks, so there it goes to a blocking thread like the rest.
    if path.starts_with("cert/") && acme.ca.db().is_embedded() {
        let result = acme.post(&path, &body);
        return respond(&acme, result);
    }
    let a = acme.clone();
    let result = web::block(move || a.post(&path, &body)).await.unwrap_or_else(|e| Err(Problem::internal(e)));
    respond(&acme, result)
}
