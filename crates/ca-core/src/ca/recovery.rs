//! Recovery of an escrowed key by two officers or more: one officer requests it, others approve,
//! and the requester receives the key as a PKCS#12 once enough have agreed — once.
//!
//! 1. [`Ca::request_recovery`]: an officer names the encryption certificate and why; the request
//!    needs [`EscrowConfig::approvals`] distinct officers, the requester included, and expires
//!    [`EscrowConfig::request_ttl_secs`] after it was made.
//! 2. [`Ca::approve_recovery`]: another officer agrees. The requester, an officer who approved
//!    already, and anyone after the expiry or the release are refused.
//! 3. [`Ca::release_recovery`]: the requester, and only the requester, receives the key once
//!    enough officers agreed; the request is then used up.
//!
//! Every step, done or refused, has an audit entry (`escrow.request`, `escrow.approve`,
//! `escrow.recover`). A console account that was reset and whose reset no second administrator
//! has confirmed (its [`cerdb::console_store::RecoveryHold`]) is refused at every step.
//!
//! Officers are told apart by their audit actor's name: `console:alice` and `cli:alice` are the
//! same officer ([`same_officer`]), so one person cannot approve their own request through the
//! other door.

use cerdb::console_store::UserName;
use cerdb::recovery_store::{RecoveryId, RecoveryRequest, RecoveryStep};

use super::*;

/// The longest reason a request may give, in characters.
pub const MAX_RECOVERY_REASON_CHARS: usize = 500;

/// The audit actor of a console user (`console:<name>`).
pub fn console_actor(name: &UserName) -> String {
    format!("console:{name}")
}

/// The officer behind an audit actor, in lower case: the name after `console:` or `cli:`, or
/// the user name of an operating-system actor `uid:1000(alice)` (`uid:1000` when it has none).
fn officer(actor: &str) -> String {
    let name = actor.strip_prefix("console:").or_else(|| actor.strip_prefix("cli:")).unwrap_or(actor);
    let name = match name.strip_prefix("uid:").and_then(|rest| rest.split_once('(')) {
        Some((_, user)) => user.strip_suffix(')').unwrap_or(user),
        None => name,
    };
    name.trim().to_ascii_lowercase()
}

/// Whether two audit actors are the same officer, whichever door (console or CLI) each used.
pub fn same_officer(a: &str, b: &str) -> bool {
    officer(a) == officer(b)
}

/// Where a recovery request stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryState {
    /// Waiting for approvals: `have` officers (the requester included) of `need`.
    Pending {
        /// Officers who agreed so far.
        have: u32,
        /// Officers needed.
        need: u32,
    },
    /// Enough officers agreed: the requester can download the key.
    Approved,
    /// The key was released (the request is used up).
    Released,
    /// Past its expiry, never released.
    Expired,
}

impl RecoveryState {
    /// The state of `r` at `now`.
    pub fn of(r: &RecoveryRequest, now: DateTime<Utc>) -> RecoveryState {
        let have = agreed(r);
        if r.released.is_some() {
            RecoveryState::Released
        } else if now >= r.expires_at {
            RecoveryState::Expired
        } else if have >= r.required {
            RecoveryState::Approved
        } else {
            RecoveryState::Pending { have, need: r.required }
        }
    }

    /// A short name (`pending 1/2`, `approved`, `released`, `expired`).
    pub fn label(self) -> String {
        match self {
            RecoveryState::Pending { have, need } => format!("pending {have}/{need}"),
            RecoveryState::Approved => "approved".into(),
            RecoveryState::Released => "released".into(),
            RecoveryState::Expired => "expired".into(),
        }
    }
}

/// Officers who agreed: the requester and every approver.
fn agreed(r: &RecoveryRequest) -> u32 {
    u32::try_from(r.approvals.len()).unwrap_or(u32::MAX).saturating_add(1)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Refuses a request that was released or is past its expiry.
fn still_open(r: &RecoveryRequest, now: DateTime<Utc>) -> Result<(), Error> {
    if let Some(done) = &r.released {
        return Err(Error::RecoveryReleased { id: r.id, at: rfc3339(done.at) });
    }
    if now >= r.expires_at {
        return Err(Error::RecoveryExpired { id: r.id, at: rfc3339(r.expires_at) });
    }
    Ok(())
}

/// The reason, trimmed: some text, at most [`MAX_RECOVERY_REASON_CHARS`], on one line.
fn check_reason(reason: &str) -> Result<String, Error> {
    let reason = reason.trim();
    let n = reason.chars().count();
    if n > MAX_RECOVERY_REASON_CHARS {
        return Err(Error::RecoveryReason(format!(
            "it has {n} characters; at most {MAX_RECOVERY_REASON_CHARS}"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(Error::RecoveryReason("it must be one line without control characters".into()));
    }
    Ok(reason.to_string())
}

impl Ca {
    /// Applies the `[escrow]` settings (checked first).
    pub fn with_escrow(mut self, cfg: EscrowConfig) -> Result<Ca, Error> {
        cfg.validate()?;
        self.escrow = cfg;
        Ok(self)
    }

    /// The `[escrow]` settings.
    pub fn escrow_config(&self) -> &EscrowConfig {
        &self.escrow
    }

    /// Runs one step of a recovery and writes its audit entry: `ok` with the details the step
    /// returns, or `refused` with the error.
    fn audited<T>(
        &self,
        actor: &str,
        action: AuditAction,
        serial: Option<&Serial>,
        subject: &str,
        step: impl FnOnce() -> Result<(T, String), Error>,
    ) -> Result<T, Error> {
        let now = self.clock.now();
        match step() {
            Ok((value, details)) => {
                self.audit.append(AuditDraft::ok(actor, action, serial, details), now)?;
                Ok(value)
            }
            Err(e) => {
                self.audit
                    .append(AuditDraft::refused(actor, action, serial, &e.to_string(), subject), now)?;
                Err(e)
            }
        }
    }

    /// Refuses a console account under a recovery hold (reset, not confirmed by a second
    /// administrator).
    fn refuse_if_on_hold(&self, actor: &str) -> Result<(), Error> {
        let Some(name) = actor.strip_prefix("console:").and_then(|n| n.parse::<UserName>().ok()) else {
            return Ok(());
        };
        match self.db.console().user(&name)?.and_then(|u| u.recovery_hold) {
            Some(hold) => Err(Error::RecoveryHold { account: name.to_string(), reset_by: hold.reset_by }),
            None => Ok(()),
        }
    }

    fn recovery(&self, id: &RecoveryId) -> Result<RecoveryRequest, Error> {
        self.db.recoveries().recovery(id)?.ok_or(Error::UnknownRecovery(*id))
    }

    /// Every recovery request, oldest first.
    pub fn recoveries(&self) -> Result<Vec<RecoveryRequest>, Error> {
        Ok(self.db.recoveries().recoveries()?)
    }

    /// Step 1: `actor` asks for the escrowed key of `serial`, saying why. The new request.
    pub fn request_recovery(
        &self,
        serial: &Serial,
        actor: &str,
        reason: &str,
    ) -> Result<RecoveryRequest, Error> {
        self.audited(actor, AuditAction::EscrowRequest, Some(serial), "", || {
            let reason = check_reason(reason)?;
            self.refuse_if_on_hold(actor)?;
            let rec = self.db.get_meta(serial)?.ok_or_else(|| Error::UnknownSerial(serial.clone()))?;
            if rec.escrow_key.is_none() {
                return Err(Error::NotEscrowed(serial.clone()));
            }
            let now = self.clock.now();
            let ttl =
                Duration::seconds(i64::try_from(self.escrow.request_ttl_secs).unwrap_or(i64::MAX / 1000));
            for _ in 0..4 {
                let mut bytes = [0u8; 16];
                self.rng
                    .fill(&mut bytes)
                    .map_err(|_| Error::Config("no randomness for the request id".into()))?;
                let request = RecoveryRequest {
                    id: RecoveryId::from_bytes(bytes),
                    serial: serial.clone(),
                    requester: actor.to_string(),
                    reason: reason.clone(),
                    required: self.escrow.approvals,
                    created_at: now,
                    expires_at: now + ttl,
                    approvals: vec![],
                    released: None,
                };
                if self.db.recoveries().insert_recovery(&request)? {
                    let details = format!(
                        "request {}: {} officers needed, expires {}; reason: {}",
                        request.id,
                        request.required,
                        rfc3339(request.expires_at),
                        request.reason
                    );
                    return Ok((request, details));
                }
            }
            Err(cerdb::Error::Inconsistent("four random request ids were all taken".into()).into())
        })
    }

    /// Step 2: `actor`, an officer other than the requester, approves request `id`. The request
    /// as approved.
    pub fn approve_recovery(&self, id: &RecoveryId, actor: &str) -> Result<RecoveryRequest, Error> {
        let serial = self.db.recoveries().recovery(id)?.map(|r| r.serial);
        self.audited(actor, AuditAction::EscrowApprove, serial.as_ref(), &format!("request {id}"), || {
            self.refuse_if_on_hold(actor)?;
            loop {
                let old = self.recovery(id)?;
                let now = self.clock.now();
                still_open(&old, now)?;
                if same_officer(actor, &old.requester) {
                    return Err(Error::RecoveryOwnRequest { id: *id, actor: actor.to_string() });
                }
                if old.approvals.iter().any(|a| same_officer(actor, &a.actor)) {
                    return Err(Error::RecoveryAlreadyApproved { id: *id, actor: actor.to_string() });
                }
                if agreed(&old) >= old.required {
                    return Err(Error::RecoveryFullyApproved { id: *id });
                }
                let mut new = old.clone();
                new.approvals.push(RecoveryStep { actor: actor.to_string(), at: now });
                // Another approval won the race: read again and judge again.
                if self.db.recoveries().replace_recovery(&old, &new)? {
                    let details =
                        format!("request {id}: {} of {} officers agreed", agreed(&new), new.required);
                    return Ok((new, details));
                }
            }
        })
    }

    /// Step 3: the requester receives the escrowed key of request `id` as a PKCS#12 protected by
    /// `p12_password`, once enough officers agreed; the request is used up.
    pub fn release_recovery(
        &self,
        id: &RecoveryId,
        actor: &str,
        p12_password: &str,
    ) -> Result<(RecoveryRequest, Vec<u8>), Error> {
        let serial = self.db.recoveries().recovery(id)?.map(|r| r.serial);
        self.audited(actor, AuditAction::EscrowRecover, serial.as_ref(), &format!("request {id}"), || {
            self.refuse_if_on_hold(actor)?;
            loop {
                let old = self.recovery(id)?;
                let now = self.clock.now();
                still_open(&old, now)?;
                if actor != old.requester {
                    return Err(Error::RecoveryNotRequester { id: *id, requester: old.requester.clone() });
                }
                if agreed(&old) < old.required {
                    return Err(Error::RecoveryNotApproved {
                        id: *id,
                        have: agreed(&old),
                        need: old.required,
                    });
                }
                // The PKCS#12 is made before the request is used up, so that a refused password
                // leaves the request as it was; it leaves only if the release is recorded.
                let rec =
                    self.db.get(&old.serial)?.ok_or_else(|| Error::UnknownSerial(old.serial.clone()))?;
                let p12 = self.export_p12(&rec, p12_password)?;
                let mut new = old.clone();
                new.released = Some(RecoveryStep { actor: actor.to_string(), at: now });
                if self.db.recoveries().replace_recovery(&old, &new)? {
                    let approvers: Vec<&str> = new.approvals.iter().map(|a| a.actor.as_str()).collect();
                    let details = format!(
                        "request {id}: PKCS#12 to the requester, approved by {}",
                        approvers.join(", ")
                    );
                    return Ok(((new, p12), details));
                }
            }
        })
    }
}
