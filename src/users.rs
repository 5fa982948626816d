//! `pki user ...` and the first administrator of `pki init`: console accounts, run here or inside
//! the running server like every command.

use std::fmt::Write as _;

use admin_web::Accounts;
use ca_core::Ca;

use crate::commands::{Outcome, Reply, Request};

fn otp_lines(name: &str, role: &str, otp: &str, what: &str) -> String {
    format!(
        "{what} console user {name} ({role}); it must choose a new password and enrol TOTP at first login (/admin/login)\n\
         one-time password: {otp}\n"
    )
}

/// Creates the console's first administrator when there is no account yet; what to print (its
/// one-time password, shown this once), or nothing.
pub fn first_admin(ca: &Ca, actor: &str) -> Result<String, String> {
    let accounts = Accounts::open(ca).map_err(|e| e.to_string())?;
    match accounts.ensure_first_admin(actor).map_err(|e| e.to_string())? {
        Some((name, otp)) => Ok(otp_lines(name.as_str(), "admin", &otp, "created")),
        None => Ok(String::new()),
    }
}

/// Runs a `pki user` request.
pub fn execute(ca: &Ca, actor: &str, req: &Request) -> Outcome {
    let accounts = Accounts::open(ca).map_err(|e| e.to_string())?;
    let e = |err: admin_web::Error| err.to_string();
    let stdout = match req {
        Request::UserAdd { name, role } => {
            let (name, otp) = accounts.add(name, role, actor).map_err(e)?;
            let role = accounts.get(&name).map_err(e)?.role;
            otp_lines(name.as_str(), role.name(), &otp, "added")
        }
        Request::UserReset { name } => {
            // The operator of the server runs this and holds the data directory: the password is
            // printed here, and an older one left for the operator by a console reset goes.
            let otp = accounts.reset(name, actor).map_err(e)?;
            if let (Some(dir), Ok(n)) = (crate::context::resets_dir(), name.parse()) {
                admin_web::otp_file::remove(&dir, &n).map_err(e)?;
            }
            format!(
                "reset console user {name}: it must choose a new password and enrol TOTP again; it takes no part \
                 in escrow recovery until a second administrator confirms the reset (`pki user confirm-reset {name}`)\n\
                 one-time password: {otp}\n"
            )
        }
        Request::UserConfirmReset { name } => {
            let u = accounts.confirm_reset(name, actor).map_err(e)?;
            format!(
                "confirmed the reset of console user {}: it may take part in escrow recovery again\n",
                u.name
            )
        }
        Request::UserDisable { name } => {
            let u = accounts.set_disabled(name, true, actor).map_err(e)?;
            format!("disabled console user {}; its sessions are ended\n", u.name)
        }
        Request::UserEnable { name } => {
            let u = accounts.set_disabled(name, false, actor).map_err(e)?;
            format!("enabled console user {}\n", u.name)
        }
        Request::UserList => {
            let now = ca.now();
            let mut s =
                format!("{:<24} {:<8} {:<9} {:<21} {}\n", "NAME", "ROLE", "STATE", "LAST LOGIN", "NOTES");
            for u in accounts.list().map_err(e)? {
                let state = if u.disabled {
                    "disabled"
                } else if u.locked_until.is_some_and(|t| now < t) {
                    "locked"
                } else {
                    "active"
                };
                let notes = if u.recovery_hold.is_some() {
                    "recovery-hold"
                } else if u.must_change_password {
                    "one-time-password"
                } else if !u.has_totp() {
                    "totp-not-enrolled"
                } else {
                    "-"
                };
                let last = u
                    .last_login
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    s,
                    "{:<24} {:<8} {:<9} {:<21} {notes}",
                    u.name.as_str(),
                    u.role.name(),
                    state,
                    last
                );
            }
            s
        }
        _ => return Err("not a user command".into()),
    };
    Ok(Reply { stdout, ..Reply::default() })
}
