//! `pki acme eab ...`, `pki validate ...` and `pki validations list`: the officers' side of
//! enrolment — External Account Binding keys for ACME clients, and mailbox validation by an
//! e-mailed value.

use std::fmt::Write as _;

use ca_core::Ca;
use cerdb::EmailAddress;
use clap::Subcommand;

use crate::commands::{Outcome, Reply, Request};

/// `pki acme ...`.
#[derive(Debug, Subcommand)]
pub enum AcmeCommand {
    /// External Account Binding keys: an ACME client creates its account with one.
    Eab {
        #[command(subcommand)]
        command: EabCommand,
    },
}

/// `pki acme eab ...`.
#[derive(Debug, Subcommand)]
pub enum EabCommand {
    /// Make a key for one client; prints its key id and HMAC key (shown once).
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
    },
    /// The keys, with the account each bound.
    List,
    /// Revoke a key: it binds no new account.
    Revoke {
        /// The key id.
        #[arg(long)]
        kid: String,
    },
}

/// `pki validate ...`.
#[derive(Debug, Subcommand)]
pub enum ValidateCommand {
    /// Mail a random value to the address; its holder enters it back with `pki validate confirm`.
    Send {
        /// The address.
        #[arg(long)]
        email: String,
    },
    /// Complete a validation with the value the holder received.
    Confirm {
        /// The address.
        #[arg(long)]
        email: String,
        /// The value from the mail.
        #[arg(long)]
        code: String,
    },
}

/// `pki validations ...`.
#[derive(Debug, Subcommand)]
pub enum ValidationsCommand {
    /// Each validated address with its evidence.
    List,
}

/// The request of a command.
pub fn acme_request(c: AcmeCommand) -> Request {
    match c {
        AcmeCommand::Eab { command: EabCommand::Create { name } } => Request::AcmeEabCreate { name },
        AcmeCommand::Eab { command: EabCommand::List } => Request::AcmeEabList,
        AcmeCommand::Eab { command: EabCommand::Revoke { kid } } => Request::AcmeEabRevoke { kid },
    }
}

/// The request of a command.
pub fn validate_request(c: ValidateCommand) -> Request {
    match c {
        ValidateCommand::Send { email } => Request::ValidateSend { email },
        ValidateCommand::Confirm { email, code } => Request::ValidateConfirm { email, code },
    }
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn email(text: &str) -> Result<EmailAddress, String> {
    text.parse().map_err(|e: cerdb::Error| e.to_string())
}

/// Mails a validation value to `addr` through the relay (`pki validate send` and the console's
/// button).
pub fn send_validation_value(
    relay: &crate::mail_relay::RelaySettings,
    addr: &EmailAddress,
    value: &str,
    hours: u32,
) -> Result<(), String> {
    let body = format!(
        "The certificate authority was asked to issue a certificate for this address.\n\n\
         If you asked for it, give this value to the PKI officer, or enter it yourself:\n\n    {value}\n\n\
         (pki validate confirm --email {addr} --code {value})\n\n\
         It is valid for {hours} hours and can be used once. If you did not ask, ignore this mail.\n"
    );
    let to = addr.to_string();
    let mail = crate::mail_relay::Outgoing {
        to: &to,
        subject: "Confirm your mailbox for a certificate",
        body,
        auto_submitted: "auto-generated",
        from: None,
    };
    relay.send(&mail).map_err(|err| format!("{err:#}"))
}

/// Runs an enrolment request; `relay` sends the validation mail.
pub fn execute(ca: &Ca, actor: &str, req: &Request, relay: &crate::mail_relay::RelaySettings) -> Outcome {
    let e = |err: ca_core::Error| err.to_string();
    match req {
        Request::AcmeEabCreate { name } => {
            let (kid, key) = acme::eab::create(ca, name, actor)?;
            Ok(Reply {
                stdout: format!("key id:   {kid}\nhmac key: {key}\n"),
                stderr: "the HMAC key is shown only now: hand both to the client (certbot: --eab-kid, --eab-hmac-key)\n"
                    .into(),
                files: vec![],
            })
        }
        Request::AcmeEabList => {
            let mut out = String::new();
            for k in acme::eab::list(ca)? {
                let state = match (&k.revoked_at, &k.account) {
                    (Some(t), _) => format!("revoked {}", when(*t)),
                    (None, Some(a)) => format!("bound account {a}"),
                    (None, None) => "unused".into(),
                };
                let _ = writeln!(out, "{}  {}  {}  {}", k.kid, when(k.created_at), state, k.name);
            }
            Ok(Reply { stdout: out, ..Default::default() })
        }
        Request::AcmeEabRevoke { kid } => {
            acme::eab::revoke(ca, kid, actor)?;
            Ok(Reply { stderr: format!("revoked EAB key {kid}\n"), ..Default::default() })
        }
        Request::ValidateSend { email: addr } => {
            let addr = email(addr)?;
            if let Some(Some(d)) = ca.validation_config().map(|c| c.enterprise_domain_of(&addr)) {
                return Ok(Reply {
                    stderr: format!("{addr} is in the enterprise domain {d}: it needs no mailed value\n"),
                    ..Default::default()
                });
            }
            let hours = ca.validation_config().map(|c| c.code_ttl_hours).unwrap_or(24);
            ca.start_mailbox_validation(&addr, actor, |value| {
                send_validation_value(relay, &addr, value, hours)
            })
            .map_err(e)?;
            Ok(Reply {
                stderr: format!(
                    "mailed a validation value to {addr}; confirm it with `pki validate confirm --email {addr} --code VALUE` within {hours} hours\n"
                ),
                ..Default::default()
            })
        }
        Request::ValidateConfirm { email: addr, code } => {
            let addr = email(addr)?;
            let v = ca.confirm_mailbox_validation(&addr, code, actor).map_err(e)?;
            let days = ca.validation_config().map(|c| c.reuse_days).unwrap_or(30);
            Ok(Reply {
                stderr: format!("{addr} validated at {}; reused for {days} days\n", when(v.validated_at)),
                ..Default::default()
            })
        }
        Request::ValidationsList => {
            let mut out = String::new();
            if let Some(cfg) = ca.validation_config() {
                for d in &cfg.enterprise_domains {
                    let _ = writeln!(out, "*@{d}  enterprise-domain  (S/MIME BR 3.2.2.1)");
                }
            }
            let days = ca.validation_config().map(|c| c.reuse_days).unwrap_or(30);
            let now = ca.now();
            for v in ca.mailbox_validations().map_err(e)? {
                let state = if v.validated_at + chrono::Duration::days(i64::from(days)) > now {
                    "current"
                } else {
                    "expired"
                };
                let _ = writeln!(
                    out,
                    "{}  {}  {}  {}  by {}",
                    v.email,
                    v.method.name(),
                    when(v.validated_at),
                    state,
                    v.actor
                );
            }
            Ok(Reply { stdout: out, ..Default::default() })
        }
        _ => Err("not an enrolment request".into()),
    }
}
