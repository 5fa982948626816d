//! The `email-reply-00` challenge (RFC 8823 §3): the challenge mail the CA sends, and the check of
//! the reply it receives.
//!
//! A reply validates the authorization only if, in this order:
//! 1. it is at most [`MAX_REPLY_BYTES`] and parses as a message, and its subject carries the
//!    token-part1 of a pending challenge (else it is dropped and logged, the address hashed);
//! 2. the challenge is at most 24 hours old, counted from its mail (else `incorrectResponse`);
//! 3. its `From` is the address being validated (else `unauthorized`);
//! 4. it carries a DKIM signature that verifies, with the resolver the CA is configured with, for
//!    the domain of that address (`d=` equal to it), or it was delivered by a configured trusted
//!    relay (`[[acme.trusted_relays]]`: from one of its addresses) whose topmost
//!    `Authentication-Results` header (RFC 8601) says `dkim=pass header.d=<that domain>` (else
//!    `unauthorized`);
//! 5. its `ACME RESPONSE` block is base64url(SHA-256(token-part1 || token-part2 || "." ||
//!    thumbprint of the account key)) (else `incorrectResponse`).
//!
//! Any outcome of a matched reply is final: the challenge and its authorization become valid or
//! invalid, and a valid one is recorded as the account's validation of the mailbox.

use cerdb::acme_store::AcmeKind;
use cerdb::EmailAddress;
use chrono::Duration;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use serde_json::{json, Value};

use crate::model::{Account, Authz, AuthzStatus, Read, Store};
use crate::problem::Problem;
use crate::{jws, Acme};

/// The largest reply accepted.
pub const MAX_REPLY_BYTES: usize = 128 * 1024;

/// How long after its mail a challenge may be answered.
pub const CHALLENGE_LIFETIME_HOURS: i64 = 24;

/// Sends the challenge mails (the `pki` binary's SMTP relay).
pub trait ChallengeMailer: Send + Sync {
    /// Sends one plain-text message with `Auto-Submitted: auto-generated; type=acme`.
    fn send_challenge(&self, to: &str, from: &str, subject: &str, body: &str) -> Result<(), String>;
}

/// What became of a received mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Dropped before any challenge was touched (why).
    Dropped(String),
    /// The challenge is valid.
    Valid,
    /// The challenge is invalid with this ACME error type and detail.
    Invalid(String, String),
}

/// A short, stable stand-in for an address in logs.
pub fn hashed(addr: &str) -> String {
    hex::encode(
        &ring::digest::digest(&ring::digest::SHA256, addr.to_ascii_lowercase().as_bytes()).as_ref()[..6],
    )
}

/// The header section (up to the first empty line), unfolded: (name lower-case, value).
fn headers(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let end = text.find("\r\n\r\n").or_else(|| text.find("\n\n")).unwrap_or(text.len());
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text[..end].lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

/// token-part1 from a subject `ACME: <token>` (with any `Re:` before it).
pub fn token_of_subject(subject: &str) -> Option<String> {
    let at = subject.rfind("ACME:")?;
    let token = subject[at + 5..].trim();
    let ok = !token.is_empty()
        && token.len() <= 128
        && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| token.to_string())
}

/// The base64url of the `ACME RESPONSE` block of a body.
pub fn response_of(body: &str) -> Option<String> {
    let start = body.find("-----BEGIN ACME RESPONSE-----")? + "-----BEGIN ACME RESPONSE-----".len();
    let end = start + body[start..].find("-----END ACME RESPONSE-----")?;
    Some(body[start..end].chars().filter(|c| !c.is_whitespace() && *c != '>').collect())
}

/// The expected response: base64url(SHA-256(token-part1 || token-part2 "." thumbprint)).
pub fn expected_response(part1: &str, part2: &str, thumbprint: &str) -> String {
    let key_authz = format!("{part1}{part2}.{thumbprint}");
    jws::b64e(ring::digest::digest(&ring::digest::SHA256, key_authz.as_bytes()).as_ref())
}

/// Runs a storage call on a thread of its own: the SMTP listener drives a runtime, inside which
/// an engine with a synchronous client (PostgreSQL) must not block.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Removes RFC 5322 comments (`(...)`, nested) from a header value.
fn without_comments(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for c in v.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if depth > 0 => escaped = true,
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether the topmost `Authentication-Results` header whose authserv-id is in `trusted` says
/// that a DKIM signature of `domain` passed. `headers` are in message order (top first); a header
/// of the same relay further down is never consulted (it may have come with the message).
pub fn trusted_dkim_pass(headers: &[(String, String)], trusted: &[&str], domain: &str) -> bool {
    for (name, value) in headers {
        if name != "authentication-results" {
            continue;
        }
        let v = without_comments(value);
        let (id_part, results) = v.split_once(';').unwrap_or((v.as_str(), ""));
        let Some(id) = id_part.split_whitespace().next() else { continue };
        if !trusted.iter().any(|t| t.eq_ignore_ascii_case(id)) {
            continue;
        }
        // The relay's own (topmost) header: its verdict is final.
        return results.split(';').any(|resinfo| {
            let mut r = resinfo.trim().to_string();
            while r.contains(" =") || r.contains("= ") {
                r = r.replace(" =", "=").replace("= ", "=");
            }
            let mut words = r.split_whitespace();
            words.next().is_some_and(|w| w.eq_ignore_ascii_case("dkim=pass"))
                && words.any(|w| {
                    w.split_once('=').is_some_and(|(k, d)| {
                        k.eq_ignore_ascii_case("header.d") && d.trim_matches('"').eq_ignore_ascii_case(domain)
                    })
                })
        });
    }
    false
}

impl Acme {
    /// Mails the challenge of a new authorization and records its token (when a mailer and
    /// `challenge_from` are configured).
    pub(crate) fn send_challenge(&self, authz: &mut Authz) -> Result<(), Problem> {
        let Some(ch) = authz.challenge.as_mut() else { return Ok(()) };
        let store = self.ca.db().acme_records();
        let now = self.now();
        Store::new(&*store).insert(
            AcmeKind::ChallengeToken,
            &ch.token_part1,
            now,
            &json!({"authz": authz.id}),
        )?;
        let (Some(mailer), Some(from)) = (&self.mailer, &self.cfg.challenge_from) else {
            tracing::warn!("an email-reply-00 challenge was made with no [mail.relay] host or [acme] challenge_from: its mail is not sent");
            return Ok(());
        };
        let body = format!(
            "This is an automatically generated ACME challenge for the email address \"{}\".\r\n\
             If you have not asked for an S/MIME certificate for this address, ignore this message.\r\n\
             Your ACME client answers it by replying to this message.\r\n",
            authz.email
        );
        mailer
            .send_challenge(&authz.email, from, &format!("ACME: {}", ch.token_part1), &body)
            .map_err(|e| Problem::internal(format!("the challenge mail could not be sent: {e}")))?;
        ch.sent_at = Some(now);
        Ok(())
    }

    /// Steps 1–5 of the module documentation for one received mail.
    /// `peer` is the address of the SMTP client that delivered it.
    pub async fn process_reply(
        &self,
        raw: &[u8],
        peer: std::net::IpAddr,
        dkim: &MessageAuthenticator,
    ) -> ReplyOutcome {
        let outcome = self.check_reply(raw, peer, dkim).await;
        match &outcome {
            ReplyOutcome::Dropped(why) => tracing::info!(reason = %why, "ACME reply dropped"),
            ReplyOutcome::Valid => tracing::info!("ACME email-reply-00 challenge valid"),
            ReplyOutcome::Invalid(kind, detail) => {
                tracing::info!(error = %kind, detail = %detail, "ACME email-reply-00 challenge invalid")
            }
        }
        outcome
    }

    async fn check_reply(
        &self,
        raw: &[u8],
        peer: std::net::IpAddr,
        dkim: &MessageAuthenticator,
    ) -> ReplyOutcome {
        if raw.len() > MAX_REPLY_BYTES {
            return ReplyOutcome::Dropped(format!("{} bytes, more than {MAX_REPLY_BYTES}", raw.len()));
        }
        let Some(msg) = AuthenticatedMessage::parse(raw) else {
            return ReplyOutcome::Dropped("not a message".into());
        };
        let hs = headers(raw);
        let Some(token) = hs.iter().find(|(n, _)| n == "subject").and_then(|(_, v)| token_of_subject(v))
        else {
            return ReplyOutcome::Dropped("no ACME token in the subject".into());
        };
        let store = self.ca.db().acme_records();
        let st = Store::new(&*store);
        let authz_id = match off_runtime(|| st.get::<Value>(AcmeKind::ChallengeToken, &token)) {
            Ok(Some(r)) => r.value.get("authz").and_then(Value::as_str).unwrap_or_default().to_string(),
            Ok(None) => return ReplyOutcome::Dropped("an unknown token".into()),
            Err(p) => return ReplyOutcome::Dropped(p.detail),
        };
        let read: Read<Authz> = match off_runtime(|| st.get(AcmeKind::Authorization, &authz_id)) {
            Ok(Some(r)) => r,
            Ok(None) => return ReplyOutcome::Dropped("the token's authorization is gone".into()),
            Err(p) => return ReplyOutcome::Dropped(p.detail),
        };
        let a = &read.value;
        let Some(ch) = a.challenge.clone() else { return ReplyOutcome::Dropped("no challenge".into()) };
        if !matches!(ch.status, AuthzStatus::Pending | AuthzStatus::Processing) {
            return ReplyOutcome::Dropped("the challenge was answered already".into());
        }
        let now = self.now();
        let trusted: Vec<&str> = self
            .cfg
            .trusted_relays
            .iter()
            .filter(|r| r.addresses.contains(&peer))
            .map(|r| r.authserv_id.as_str())
            .collect();
        let domain = a.email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let relayed_pass = trusted_dkim_pass(&hs, &trusted, domain);
        let verdict = self.verdict(&msg, a, &ch, relayed_pass, dkim, now).await;
        let mut next = a.clone();
        let mut c = ch.clone();
        match &verdict {
            Ok(()) => {
                c.status = AuthzStatus::Valid;
                c.validated = Some(now);
                next.status = AuthzStatus::Valid;
            }
            Err((kind, detail)) => {
                c.status = AuthzStatus::Invalid;
                c.error = Some((kind.clone(), detail.clone()));
                next.status = AuthzStatus::Invalid;
            }
        }
        next.challenge = Some(c);
        // The validation is on record before the authorization says valid: a client that sees
        // the order ready and finalizes at once finds the mailbox validated.
        if verdict.is_ok() {
            let email: Result<EmailAddress, _> = a.email.parse();
            if let Err(e) = email.map_err(|e| e.to_string()).and_then(|e| {
                off_runtime(|| self.ca.record_acme_validation(&e, &a.account)).map_err(|e| e.to_string())
            }) {
                tracing::error!(error = %e, "the validation could not be recorded");
                return ReplyOutcome::Dropped("the validation could not be recorded".into());
            }
        }
        match off_runtime(|| st.replace(AcmeKind::Authorization, &authz_id, &read, &next)) {
            Ok(true) => {}
            Ok(false) => return ReplyOutcome::Dropped("the authorization changed meanwhile".into()),
            Err(p) => return ReplyOutcome::Dropped(p.detail),
        }
        let _ = off_runtime(|| store.remove_acme(AcmeKind::ChallengeToken, &token));
        match verdict {
            Ok(()) => ReplyOutcome::Valid,
            Err((kind, detail)) => ReplyOutcome::Invalid(kind, detail),
        }
    }

    async fn verdict(
        &self,
        msg: &AuthenticatedMessage<'_>,
        a: &Authz,
        ch: &crate::model::Challenge,
        relayed_pass: bool,
        dkim: &MessageAuthenticator,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), (String, String)> {
        let incorrect = |d: &str| ("incorrectResponse".to_string(), d.to_string());
        let unauthorized = |d: &str| ("unauthorized".to_string(), d.to_string());
        // The authorization lives at most 24 hours ([acme] authorization_lifetime_hours), the
        // challenge at most 24 hours from its mail.
        let mail_too_old = ch.sent_at.is_some_and(|t| now - t > Duration::hours(CHALLENGE_LIFETIME_HOURS));
        if now >= a.expires || mail_too_old {
            return Err(incorrect("the reply came more than 24 hours after the challenge"));
        }
        if !msg.from().eq_ignore_ascii_case(&a.email) {
            return Err(unauthorized("the reply is not from the address being validated"));
        }
        let domain = a.email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let signed = relayed_pass || {
            let outputs = dkim.verify_dkim(msg).await;
            outputs.iter().any(|o| {
                *o.result() == DkimResult::Pass
                    && o.signature().is_some_and(|s| s.d.eq_ignore_ascii_case(domain))
            })
        };
        if !signed {
            return Err(unauthorized("the reply has no valid DKIM signature of the address's domain"));
        }
        let body = String::from_utf8_lossy(msg.raw_message());
        let Some(given) = response_of(&body) else {
            return Err(incorrect("the reply has no ACME RESPONSE block"));
        };
        let store = self.ca.db().acme_records();
        let acct: Option<Read<Account>> =
            off_runtime(|| Store::new(&*store).get(AcmeKind::Account, &a.account))
                .map_err(|p| incorrect(&p.detail))?;
        let Some(acct) = acct else { return Err(unauthorized("the account is gone")) };
        if given != expected_response(&ch.token_part1, &ch.token_part2, &acct.value.thumbprint) {
            return Err(incorrect("the ACME RESPONSE digest is wrong"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_bodies_and_digests() {
        assert_eq!(token_of_subject("Re: ACME: abc_DEF-1").as_deref(), Some("abc_DEF-1"));
        assert_eq!(token_of_subject("ACME: a b"), None);
        assert_eq!(token_of_subject("hello"), None);
        assert_eq!(token_of_subject("ACME: "), None);
        let body = "hi\r\n-----BEGIN ACME RESPONSE-----\r\nLoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowy\r\njxAjEuX0\r\n-----END ACME RESPONSE-----\r\n";
        assert_eq!(response_of(body).as_deref(), Some("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        assert_eq!(response_of("-----BEGIN ACME RESPONSE----- x"), None);
        // Changes with each input.
        let e = expected_response("a", "b", "t");
        assert_ne!(e, expected_response("a", "b", "u"));
        assert_eq!(e.len(), 43);
        let hs = headers(b"Subject: Re:\r\n ACME: tok\r\nFrom: x@y.z\r\n\r\nbody");
        assert_eq!(hs[0], ("subject".to_string(), "Re: ACME: tok".to_string()));
    }

    fn ar(values: &[&str]) -> Vec<(String, String)> {
        values.iter().map(|v| ("authentication-results".to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_the_topmost_header_of_a_trusted_relay_counts() {
        let mx = ["mx.bank.example"];
        let pass = "mx.bank.example; dkim=pass (2048-bit key) header.d=customer.test header.s=sel";
        assert!(trusted_dkim_pass(&ar(&[pass]), &mx, "customer.test"));
        assert!(trusted_dkim_pass(&ar(&[pass]), &mx, "CUSTOMER.test"));
        // Folded and spaced as RFC 8601 allows, with a version and comments.
        assert!(trusted_dkim_pass(
            &ar(&["MX.bank.example 1 (relay); spf=none; dkim = pass (ok) header.d=\"customer.test\""]),
            &mx,
            "customer.test"
        ));
        // Another domain, another result, another relay, no header at all.
        assert!(!trusted_dkim_pass(&ar(&[pass]), &mx, "example.net"));
        assert!(!trusted_dkim_pass(
            &ar(&["mx.bank.example; dkim=fail header.d=customer.test"]),
            &mx,
            "customer.test"
        ));
        assert!(!trusted_dkim_pass(
            &ar(&["mx.other.example; dkim=pass header.d=customer.test"]),
            &mx,
            "customer.test"
        ));
        assert!(!trusted_dkim_pass(&ar(&[pass]), &[], "customer.test"));
        assert!(!trusted_dkim_pass(&[], &mx, "customer.test"));
        // A pass below the relay's own fail came with the message: not believed.
        let forged = ar(&["mx.bank.example; dkim=fail header.d=customer.test", pass]);
        assert!(!trusted_dkim_pass(&forged, &mx, "customer.test"));
        // A pass in a comment, or as another property, is not a pass.
        assert!(!trusted_dkim_pass(
            &ar(&["mx.bank.example; dkim=none (dkim=pass header.d=customer.test)"]),
            &mx,
            "customer.test"
        ));
        assert!(!trusted_dkim_pass(
            &ar(&["mx.bank.example; spf=pass header.d=customer.test"]),
            &mx,
            "customer.test"
        ));
        // Garbage does not panic.
        for g in ["", ";", "(((", "mx.bank.example;;;=", "mx.bank.example; dkim=pass header.d", "\\(x"] {
            assert!(!trusted_dkim_pass(&ar(&[g]), &mx, "customer.test"), "{g:?}");
        }
    }
}
