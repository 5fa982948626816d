//! Console accounts: creation with one-time passwords, listing, disabling, resets, password
//! logins with lockout, TOTP checks. Used by the web pages and by `pki user ...`; every change
//! is in the CA's audit log (actor `console:<user>` or the CLI's actor).

use std::sync::Arc;

use ca_core::{AuditAction, Ca};
use cerdb::console_store::{ConsoleRole, ConsoleStore, ConsoleUser, RecoveryHold, UserName};
use chrono::{DateTime, Duration, Utc};

use crate::{password, totp, ConsoleConfig, Error};

/// The name of the administrator `pki init` creates.
pub const FIRST_ADMIN: &str = "admin";

/// The accounts of one data directory.
pub struct Accounts<'a> {
    ca: &'a Ca,
    store: Arc<dyn ConsoleStore>,
}

impl std::fmt::Debug for Accounts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

/// Why a password login failed. Shown to nobody: every failure gets the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// No such user, or a wrong password.
    BadCredentials,
    /// The account is locked.
    Locked,
    /// The account is disabled.
    Disabled,
}

impl<'a> Accounts<'a> {
    /// Opens the console's store in the CA's database.
    pub fn open(ca: &'a Ca) -> Result<Self, Error> {
        Ok(Accounts { store: ca.db().console(), ca })
    }

    pub(crate) fn with_store(ca: &'a Ca, store: Arc<dyn ConsoleStore>) -> Self {
        Accounts { ca, store }
    }

    fn name(text: &str) -> Result<UserName, Error> {
        text.parse().map_err(Error::BadRequest)
    }

    /// One account.
    pub fn get(&self, name: &UserName) -> Result<ConsoleUser, Error> {
        self.store.user(name)?.ok_or_else(|| Error::UnknownUser(name.clone()))
    }

    /// Adds an account with a one-time password (returned; it must be changed at first login,
    /// which also enrols TOTP).
    pub fn add(&self, name: &str, role: &str, actor: &str) -> Result<(UserName, String), Error> {
        self.add_held(name, role, actor, false)
    }

    /// [`Accounts::add`] for an account made in the console: its one-time password goes to the
    /// account holder through the reset channel, never to `actor`, and like a reset it starts with
    /// a recovery hold that an administrator other than `actor` lifts ([`Accounts::confirm_reset`]):
    /// an administrator alone never holds a new officer's first password and its escrow rights.
    pub fn add_held(
        &self,
        name: &str,
        role: &str,
        actor: &str,
        held: bool,
    ) -> Result<(UserName, String), Error> {
        let name = Self::name(name)?;
        let role: ConsoleRole = role.parse().map_err(Error::BadRequest)?;
        let otp = password::one_time()?;
        let user = ConsoleUser {
            name: name.clone(),
            role,
            password_hash: password::hash(&otp)?,
            must_change_password: true,
            totp_sealed: None,
            totp_secret: None,
            totp_last_step: 0,
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created_at: self.ca.now(),
            last_login: None,
            recovery_hold: held.then(|| RecoveryHold { reset_by: actor.to_string(), at: self.ca.now() }),
        };
        if !self.store.insert_user(&user)? {
            return Err(Error::UserExists(name));
        }
        let note = if held { ": recovery hold until a second administrator confirms" } else { "" };
        self.ca.audit_event(actor, AuditAction::ConsoleUserAdd, true, &format!("{name} {role}{note}"))?;
        Ok((name, otp))
    }

    /// Creates the first administrator, [`FIRST_ADMIN`], if there is no account at all; its
    /// one-time password.
    pub fn ensure_first_admin(&self, actor: &str) -> Result<Option<(UserName, String)>, Error> {
        if !self.store.has_no_users()? {
            return Ok(None);
        }
        match self.add(FIRST_ADMIN, ConsoleRole::Admin.name(), actor) {
            Ok(created) => Ok(Some(created)),
            // Created by a concurrent call: not ours to print.
            Err(Error::UserExists(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<ConsoleUser>, Error> {
        Ok(self.store.users()?)
    }

    /// Disables (or enables again) an account; disabling ends its sessions.
    pub fn set_disabled(&self, name: &str, disabled: bool, actor: &str) -> Result<ConsoleUser, Error> {
        let name = Self::name(name)?;
        let user = self
            .store
            .update_user(&name, &|u| u.disabled = disabled)?
            .ok_or(Error::UnknownUser(name.clone()))?;
        if disabled {
            self.store.remove_sessions_of(&name)?;
        }
        let action = if disabled { AuditAction::ConsoleUserDisable } else { AuditAction::ConsoleUserEnable };
        self.ca.audit_event(actor, action, true, name.as_str())?;
        Ok(user)
    }

    /// Resets an account: a new one-time password (returned, for the channel that hands it to the
    /// account holder and never to `actor`), TOTP to enrol again, the lockout lifted, its sessions
    /// ended, and a recovery hold: the account takes no part in escrow recovery until an
    /// administrator other than `actor` confirms the reset ([`Accounts::confirm_reset`]).
    pub fn reset(&self, name: &str, actor: &str) -> Result<String, Error> {
        let name = Self::name(name)?;
        let otp = password::one_time()?;
        let hash = password::hash(&otp)?;
        let hold = RecoveryHold { reset_by: actor.to_string(), at: self.ca.now() };
        self.store
            .update_user(&name, &|u| {
                u.password_hash = hash.clone();
                u.must_change_password = true;
                u.totp_sealed = None;
                u.totp_secret = None;
                u.failed_logins = 0;
                u.locked_until = None;
                u.recovery_hold = Some(hold.clone());
            })?
            .ok_or(Error::UnknownUser(name.clone()))?;
        self.store.remove_sessions_of(&name)?;
        self.ca.audit_event(
            actor,
            AuditAction::ConsoleUserReset,
            true,
            &format!("{name}: recovery hold until a second administrator confirms"),
        )?;
        Ok(otp)
    }

    /// Confirms the reset of `name` as a second administrator, lifting its recovery hold. Refused
    /// (with an audit entry) to the administrator who made the reset, to the account itself, and
    /// to an account whose own reset is unconfirmed.
    pub fn confirm_reset(&self, name: &str, actor: &str) -> Result<ConsoleUser, Error> {
        let name = Self::name(name)?;
        let result = self.confirm_checked(&name, actor);
        match &result {
            Ok(_) => self.ca.audit_event(actor, AuditAction::ConsoleUserConfirmReset, true, name.as_str())?,
            Err(e) => self.ca.audit_event(
                actor,
                AuditAction::ConsoleUserConfirmReset,
                false,
                &format!("{name}: {e}"),
            )?,
        }
        result
    }

    fn confirm_checked(&self, name: &UserName, actor: &str) -> Result<ConsoleUser, Error> {
        let user = self.get(name)?;
        let hold = user.recovery_hold.clone().ok_or_else(|| Error::NothingToConfirm(name.clone()))?;
        if ca_core::same_officer(actor, &hold.reset_by) {
            return Err(Error::SecondAdminRequired(format!(
                "{actor} reset {name} and cannot confirm that reset: an administrator other than the one \
                 who reset an account confirms it"
            )));
        }
        if ca_core::same_officer(actor, &self::actor(name)) {
            return Err(Error::SecondAdminRequired(format!(
                "{name} cannot confirm the reset of its own account: another administrator must"
            )));
        }
        if let Some(me) = actor.strip_prefix("console:").and_then(|n| n.parse::<UserName>().ok()) {
            if self.store.user(&me)?.is_some_and(|u| u.recovery_hold.is_some()) {
                return Err(Error::SecondAdminRequired(format!(
                    "the reset of your own account {me} is not confirmed yet: you cannot confirm another's"
                )));
            }
        }
        // Only the hold read is lifted: a new reset meanwhile needs its own confirmation.
        let updated = self
            .store
            .update_user(name, &|u| {
                if u.recovery_hold.as_ref() == Some(&hold) {
                    u.recovery_hold = None;
                }
            })?
            .ok_or(Error::UnknownUser(name.clone()))?;
        if updated.recovery_hold.is_some() {
            return Err(Error::SecondAdminRequired(format!(
                "{name} was reset again meanwhile: confirm the new reset"
            )));
        }
        Ok(updated)
    }

    /// Counts a failed login (wrong password or TOTP code); locks the account against new
    /// logins once `cfg.max_failed_logins` failures follow each other, with an audit entry. Its
    /// open sessions are not ended.
    pub fn record_failure(
        &self,
        name: &UserName,
        cfg: &ConsoleConfig,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let max = cfg.max_failed_logins;
        let until = now + secs(cfg.lockout_secs);
        let Some(user) = self.store.update_user(name, &|u| {
            u.failed_logins += 1;
            if u.failed_logins >= max {
                u.failed_logins = 0;
                u.locked_until = Some(until);
            }
        })?
        else {
            return Ok(());
        };
        // Open sessions go on: a lock stops new logins, it must not let a stranger throw the
        // account holder out.
        if user.locked_until == Some(until) {
            tracing::warn!(user = %name, "console account locked after {max} failed logins");
            self.ca.audit_event(
                "system",
                AuditAction::ConsoleLockout,
                true,
                &format!("{name} locked until {} after {max} failed logins", until.to_rfc3339()),
            )?;
        }
        Ok(())
    }

    /// Checks a password login. Argon2id runs whether or not the user exists. Returns the
    /// account, or why not (to log, never to show).
    pub fn check_password(
        &self,
        name_text: &str,
        pw: &str,
        cfg: &ConsoleConfig,
    ) -> Result<Result<ConsoleUser, LoginFailure>, Error> {
        let now = self.ca.now();
        let user = match name_text.parse::<UserName>() {
            Ok(n) => self.store.user(&n)?,
            Err(_) => None,
        };
        let Some(user) = user else {
            password::verify(password::dummy_hash(), pw);
            return Ok(Err(LoginFailure::BadCredentials));
        };
        let right = password::verify(&user.password_hash, pw);
        if user.locked_until.is_some_and(|t| now < t) {
            return Ok(Err(LoginFailure::Locked));
        }
        if !right {
            self.record_failure(&user.name, cfg, now)?;
            return Ok(Err(LoginFailure::BadCredentials));
        }
        if user.disabled {
            return Ok(Err(LoginFailure::Disabled));
        }
        Ok(Ok(user))
    }

    /// Records a completed login (failures reset) with an audit entry.
    pub fn record_login(&self, name: &UserName) -> Result<(), Error> {
        let now = self.ca.now();
        self.store.update_user(name, &|u| {
            u.failed_logins = 0;
            u.locked_until = None;
            u.last_login = Some(now);
        })?;
        self.ca.audit_event(&actor(name), AuditAction::ConsoleLogin, true, "")?;
        Ok(())
    }

    /// Checks a TOTP code of an enrolled account at login and consumes its time step; a wrong
    /// code counts as a failed login. A locked account cannot complete a login.
    pub fn check_totp(&self, name: &UserName, code: &str, cfg: &ConsoleConfig) -> Result<(), Error> {
        self.check_code(name, code, cfg, false)
    }

    /// The same for step-up in a session already open: the account's lock does not apply (the
    /// lock stops new logins only), a wrong code still counts.
    pub fn check_step_up_totp(&self, name: &UserName, code: &str, cfg: &ConsoleConfig) -> Result<(), Error> {
        self.check_code(name, code, cfg, true)
    }

    fn check_code(
        &self,
        name: &UserName,
        code: &str,
        cfg: &ConsoleConfig,
        in_session: bool,
    ) -> Result<(), Error> {
        let now = self.ca.now();
        let user = self.get(name)?;
        if user.disabled || (!in_session && user.locked_until.is_some_and(|t| now < t)) {
            return Err(Error::NotLoggedIn { expired: false });
        }
        let secret = self.totp_secret(&user)?;
        match totp::verify(&secret, code, now, user.totp_last_step) {
            Some(step) => {
                self.store.update_user(name, &|u| u.totp_last_step = u.totp_last_step.max(step))?;
                Ok(())
            }
            None => {
                self.record_failure(name, cfg, now)?;
                Err(Error::InvalidTotp)
            }
        }
    }

    /// Sets a new password (the policy checked first).
    pub fn change_password(&self, name: &UserName, new: &str) -> Result<(), Error> {
        password::check_policy(new, name.as_str())?;
        let hash = password::hash(new)?;
        self.store
            .update_user(name, &|u| {
                u.password_hash = hash.clone();
                u.must_change_password = false;
            })?
            .ok_or(Error::UnknownUser(name.clone()))?;
        self.ca.audit_event(&actor(name), AuditAction::ConsolePasswordChange, true, "")?;
        Ok(())
    }

    /// Completes TOTP enrolment: `code` must match `secret`.
    pub fn confirm_totp(&self, name: &UserName, secret: &[u8], code: &str) -> Result<(), Error> {
        let step = totp::verify(secret, code, self.ca.now(), 0).ok_or(Error::InvalidTotp)?;
        let sealed = self.ca.seal_secret(&totp_context(name), secret)?;
        self.store
            .update_user(name, &|u| {
                u.totp_sealed = Some(sealed.clone());
                u.totp_secret = None;
                u.totp_last_step = step;
            })?
            .ok_or(Error::UnknownUser(name.clone()))?;
        self.ca.audit_event(&actor(name), AuditAction::ConsoleTotpEnrol, true, "")?;
        Ok(())
    }
}

/// The context a user's TOTP secret is sealed under: it opens for no other account.
fn totp_context(name: &UserName) -> String {
    format!("console-totp:{name}")
}

/// Seals every account's TOTP seed, sealed by `from` today, by `to` instead (`pki hsm import`
/// moving a soft key store onto a token); seeds `to` opens already are left as they are, so a
/// second run finishes what an interrupted one began. Returns the number of seeds moved now and
/// the accounts whose seed neither opens (they need `pki user reset`). An account still holding
/// a seed in clear (enrolled before seeds were sealed) is sealed by `to` at its next login; a
/// secret shown during an enrolment not yet confirmed is not moved: that enrolment starts again.
pub fn reseal_totp_seeds(
    store: &dyn ConsoleStore,
    from: &dyn hsm_sim::KeyCustody,
    to: &dyn hsm_sim::KeyCustody,
) -> Result<(usize, Vec<UserName>), Error> {
    let (mut moved, mut unopened) = (0, Vec::new());
    for user in store.users()? {
        let Some(sealed) = &user.totp_sealed else { continue };
        let resealed = match hsm_sim::reseal_secret(from, to, &totp_context(&user.name), sealed) {
            Ok(Some(resealed)) => resealed,
            Ok(None) => continue,
            Err(hsm_sim::Error::SealedSecret(_)) => {
                unopened.push(user.name.clone());
                continue;
            }
            Err(e) => return Err(ca_core::Error::from(e).into()),
        };
        // Only over the seed read: a seed enrolled meanwhile was sealed by the custody in use.
        store.update_user(&user.name, &|u| {
            if u.totp_sealed.as_ref() == Some(sealed) {
                u.totp_sealed = Some(resealed.clone());
            }
        })?;
        moved += 1;
    }
    Ok((moved, unopened))
}

/// The context of a secret shown during enrolment and not yet confirmed.
fn enrolment_context(name: &UserName) -> String {
    format!("console-totp-enrolment:{name}")
}

impl Accounts<'_> {
    /// The account's TOTP secret, opened from its sealed form; an account enrolled before
    /// secrets were sealed has it in clear, which is sealed (and the clear copy dropped) now.
    fn totp_secret(&self, user: &ConsoleUser) -> Result<Vec<u8>, Error> {
        let context = totp_context(&user.name);
        if let Some(sealed) = &user.totp_sealed {
            return Ok(self.ca.open_secret(&context, sealed)?);
        }
        let clear = user.totp_secret.clone().ok_or(Error::InvalidTotp)?;
        let sealed = self.ca.seal_secret(&context, &clear)?;
        self.store.update_user(&user.name, &|u| {
            u.totp_sealed = Some(sealed.clone());
            u.totp_secret = None;
        })?;
        Ok(clear)
    }

    /// Seals a secret shown during enrolment, for the session that shows it.
    pub fn seal_enrolment_secret(&self, name: &UserName, secret: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.ca.seal_secret(&enrolment_context(name), secret)?)
    }

    /// Opens a secret sealed by [`Accounts::seal_enrolment_secret`] for the same account.
    pub fn open_enrolment_secret(&self, name: &UserName, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.ca.open_secret(&enrolment_context(name), sealed)?)
    }
}

/// The audit actor of a console user.
pub fn actor(name: &UserName) -> String {
    ca_core::console_actor(name)
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000).min(10 * 365 * 86_400))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ca_core::{CaConfig, FixedClock};
    use cerdb::CertDb;
    use chrono::TimeZone;
    use hsm_sim::{HsmSim, MasterKeySource};

    use super::*;

    const SECRET: &[u8; totp::SECRET_LEN] = b"totp seed of 20 byte";

    fn ca(dir: &std::path::Path) -> Ca {
        let clock =
            Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).single().expect("time")));
        let db = CertDb::open(dir.join("db")).expect("db");
        let hsm = Arc::new(HsmSim::open(dir.join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
        Ca::init(db, hsm, CaConfig::default(), clock, "test").expect("init").0
    }

    /// The raw bytes of every stored console account.
    fn stored_users(ca: &Ca) -> Vec<u8> {
        let raw = ca.db().raw_trees().expect("embedded engine");
        raw.entries("console_users").expect("read").into_iter().flat_map(|(_, v)| v).collect()
    }

    fn code(ca: &Ca, step_offset: u64) -> String {
        let step = (ca.now().timestamp() as u64) / 30 + step_offset;
        format!("{:06}", totp::code_at(SECRET, step))
    }

    #[test]
    fn totp_secrets_are_stored_sealed_and_accounts_enrolled_in_clear_are_sealed_at_their_next_login() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca(dir.path());
        let accounts = Accounts::open(&ca).expect("accounts");
        let cfg = ConsoleConfig::default();
        let (alice, _) = accounts.add("alice", "officer", "test").expect("add");
        accounts.confirm_totp(&alice, SECRET, &code(&ca, 0)).expect("enrol");
        let user = accounts.get(&alice).expect("get");
        assert!(user.has_totp() && user.totp_secret.is_none());
        let sealed = user.totp_sealed.clone().expect("sealed");
        let raw = stored_users(&ca);
        for form in [SECRET.to_vec(), hex::encode(SECRET).into_bytes()] {
            assert!(!raw.windows(form.len()).any(|w| w == form), "the TOTP secret is stored in clear");
        }
        // The code of the next step is accepted (the enrolment consumed this one).
        accounts.check_totp(&alice, &code(&ca, 1), &cfg).expect("login");

        // The sealed secret is bound to its account: copied to another, it does not open.
        let (bob, _) = accounts.add("bob", "auditor", "test").expect("add");
        accounts.store.update_user(&bob, &|u| u.totp_sealed = Some(sealed.clone())).expect("update");
        let e = accounts.check_totp(&bob, &code(&ca, 1), &cfg).expect_err("another account's secret");
        assert!(e.to_string().contains("does not open"), "{e}");

        // An account enrolled before secrets were sealed: the clear secret still logs in, and is
        // sealed (and dropped) by that login.
        let (carol, _) = accounts.add("carol", "officer", "test").expect("add");
        accounts.store.update_user(&carol, &|u| u.totp_secret = Some(SECRET.to_vec())).expect("update");
        assert!(accounts.get(&carol).expect("get").has_totp(), "counts as enrolled");
        accounts.check_totp(&carol, &code(&ca, 0), &cfg).expect("legacy login");
        let user = accounts.get(&carol).expect("get");
        assert!(user.totp_secret.is_none() && user.totp_sealed.is_some());
        accounts.check_totp(&carol, &code(&ca, 1), &cfg).expect("login with the sealed secret");
        let raw = stored_users(&ca);
        assert!(!raw.windows(SECRET.len()).any(|w| w == SECRET.as_slice()));
        assert!(!raw.windows(40).any(|w| w == hex::encode(SECRET).as_bytes()));

        // Enrolment secrets shown in a session are sealed per account too.
        let shown = accounts.seal_enrolment_secret(&alice, SECRET).expect("seal");
        assert_eq!(accounts.open_enrolment_secret(&alice, &shown).expect("open"), SECRET);
        assert!(accounts.open_enrolment_secret(&bob, &shown).is_err());
    }
}
