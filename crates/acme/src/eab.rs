//! External Account Binding (RFC 8555 §7.3.4): the officers make a key id and an HMAC key for a
//! device agent or a mail client's enrolment (`pki acme eab create`); the client binds its new
//! account to it with an HS256 JWS over its account key. A key binds one account; a revoked key
//! binds none. The HMAC key is shown once and stored sealed by key custody.

use cerdb::acme_store::AcmeKind;
use ring::rand::SecureRandom;
use serde_json::Value;

use crate::jws::{self, Jwk};
use crate::model::{EabKey, Read, Store};
use crate::problem::Problem;
use ca_core::{AuditAction, Ca};

fn seal_context(kid: &str) -> String {
    format!("acme-eab:{kid}")
}

/// The longest key name.
pub const MAX_NAME_CHARS: usize = 100;

/// A new key: (key id, HMAC key base64url). Audited.
pub fn create(ca: &Ca, name: &str, actor: &str) -> Result<(String, String), String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(format!("an EAB key name is 1 to {MAX_NAME_CHARS} printable characters"));
    }
    let rng = ring::rand::SystemRandom::new();
    let (mut kid, mut key) = ([0u8; 16], [0u8; 32]);
    rng.fill(&mut kid).and_then(|_| rng.fill(&mut key)).map_err(|_| "no randomness".to_string())?;
    let kid = jws::b64e(&kid);
    let sealed = ca.seal_secret(&seal_context(&kid), &key).map_err(|e| e.to_string())?;
    let now = ca.now();
    let rec = EabKey {
        kid: kid.clone(),
        name: name.to_string(),
        sealed_key: jws::b64e(&sealed),
        created_at: now,
        revoked_at: None,
        account: None,
    };
    let store = ca.db().acme_records();
    if !Store::new(&*store).insert(AcmeKind::EabKey, &kid, now, &rec).map_err(|p| p.detail)? {
        return Err("a key id was drawn twice; try again".into());
    }
    ca.audit_event(actor, AuditAction::Acme, true, &format!("EAB key {kid} created for {name}"))
        .map_err(|e| e.to_string())?;
    Ok((kid, jws::b64e(&key)))
}

/// Every key, oldest first.
pub fn list(ca: &Ca) -> Result<Vec<EabKey>, String> {
    let store = ca.db().acme_records();
    Store::new(&*store).all(AcmeKind::EabKey).map_err(|p| p.detail)
}

/// Seals every key's HMAC key, sealed by `from` today, by `to` instead (`pki hsm import` moving a
/// soft key store onto a token); keys `to` opens already are left as they are, so a second run
/// finishes what an interrupted one began. Returns the number moved now and the key ids whose
/// HMAC key neither opens (revoke them and make new ones).
pub fn reseal(
    records: &dyn cerdb::acme_store::AcmeRecords,
    from: &dyn hsm_sim::KeyCustody,
    to: &dyn hsm_sim::KeyCustody,
) -> Result<(usize, Vec<String>), String> {
    let st = Store::new(records);
    let (mut moved, mut unopened) = (0, Vec::new());
    for key in st.all::<EabKey>(AcmeKind::EabKey).map_err(|p| p.detail)? {
        // Read again for the replace below, which refuses when the record changed meanwhile.
        let Some(read) = st.get::<EabKey>(AcmeKind::EabKey, &key.kid).map_err(|p| p.detail)? else {
            continue;
        };
        let sealed = jws::b64d(&read.value.sealed_key, "sealed key")
            .map_err(|_| format!("EAB key {}: its sealed HMAC key is not base64url", key.kid))?;
        let resealed = match hsm_sim::reseal_secret(from, to, &seal_context(&key.kid), &sealed) {
            Ok(Some(resealed)) => resealed,
            Ok(None) => continue,
            Err(hsm_sim::Error::SealedSecret(_)) => {
                unopened.push(key.kid);
                continue;
            }
            Err(e) => return Err(format!("EAB key {}: {e}", key.kid)),
        };
        let next = EabKey { sealed_key: jws::b64e(&resealed), ..read.value.clone() };
        if !st.replace(AcmeKind::EabKey, &key.kid, &read, &next).map_err(|p| p.detail)? {
            return Err(format!("EAB key {} changed while it was moved: run pki hsm import again", key.kid));
        }
        moved += 1;
    }
    Ok((moved, unopened))
}

/// Revokes a key: it binds no account from now on. Audited.
pub fn revoke(ca: &Ca, kid: &str, actor: &str) -> Result<EabKey, String> {
    let store = ca.db().acme_records();
    let st = Store::new(&*store);
    for _ in 0..5 {
        let read: Read<EabKey> = st
            .get(AcmeKind::EabKey, kid)
            .map_err(|p| p.detail)?
            .ok_or_else(|| format!("no EAB key {kid:?}: `pki acme eab list` shows them"))?;
        if read.value.revoked_at.is_some() {
            return Err(format!("EAB key {kid} is revoked already"));
        }
        let next = EabKey { revoked_at: Some(ca.now()), ..read.value.clone() };
        if st.replace(AcmeKind::EabKey, kid, &read, &next).map_err(|p| p.detail)? {
            ca.audit_event(actor, AuditAction::Acme, true, &format!("EAB key {kid} revoked"))
                .map_err(|e| e.to_string())?;
            return Ok(next);
        }
    }
    Err(format!("EAB key {kid} kept changing; try again"))
}

/// Checks the binding of a new account (`account` its id to be) and uses the key up; the key id.
pub(crate) fn bind(
    ca: &Ca,
    url: &str,
    binding: &Value,
    account_key: &Jwk,
    account: &str,
) -> Result<String, Problem> {
    let bad = |d: &str| Problem::unauthorized(format!("externalAccountBinding: {d}"));
    let parsed = jws::parse(binding.clone())
        .map_err(|p| Problem::malformed(format!("externalAccountBinding: {}", p.detail)))?;
    let h = &parsed.header;
    if h.alg != "HS256" {
        return Err(Problem::bad_signature_algorithm(format!(
            "externalAccountBinding: alg {:?}, expected HS256",
            h.alg
        )));
    }
    if h.nonce.is_some() || h.jwk.is_some() {
        return Err(Problem::malformed("externalAccountBinding: the header has a nonce or a jwk".into()));
    }
    if h.url.as_deref() != Some(url) {
        return Err(bad("its url is not the newAccount URL"));
    }
    let kid = h.kid.clone().ok_or_else(|| bad("no kid"))?;
    let bound: Value =
        serde_json::from_slice(&parsed.payload).map_err(|_| bad("its payload is not a JWK"))?;
    if Jwk::from_json(&bound).map_err(|_| bad("its payload is not a JWK"))?.thumbprint()
        != account_key.thumbprint()
    {
        return Err(bad("it binds another key than the account's"));
    }
    let store = ca.db().acme_records();
    let st = Store::new(&*store);
    let read: Read<EabKey> = st.get(AcmeKind::EabKey, &kid)?.ok_or_else(|| bad("unknown key id"))?;
    if read.value.revoked_at.is_some() {
        return Err(bad("the key is revoked"));
    }
    if read.value.account.is_some() {
        return Err(bad("the key has bound an account already"));
    }
    let sealed =
        jws::b64d(&read.value.sealed_key, "sealed key").map_err(|_| Problem::internal("sealed EAB key"))?;
    let key = ca.open_secret(&seal_context(&kid), &sealed).map_err(Problem::internal)?;
    if !jws::verify_hs256(&key, &parsed.signing_input, &parsed.signature) {
        return Err(bad("the MAC does not verify"));
    }
    let next = EabKey { account: Some(account.to_string()), ..read.value.clone() };
    if !st.replace(AcmeKind::EabKey, &kid, &read, &next)? {
        return Err(bad("the key was used meanwhile"));
    }
    Ok(kid)
}
