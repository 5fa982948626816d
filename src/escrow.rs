//! `pki escrow ...`: recovery of an escrowed key by two officers or more — a request, approvals by
//! other officers, and the release to the requester ([`ca_core::Ca::request_recovery`]).

use std::fmt::Write as _;

use ca_core::{Ca, RecoveryState};
use cerdb::recovery_store::RecoveryId;
use cerdb::Serial;

use crate::commands::{OutFile, Outcome, Reply, Request};

/// What `pki escrow recover --serial` says: the one-step recovery is gone.
pub const ONE_STEP_GONE: &str =
    "escrow recovery by one officer is gone: request it with `pki escrow request \
     --serial S`, have a second officer approve it with `pki escrow approve ID`, then download it with \
     `pki escrow recover ID --out FILE --p12-password-file F`";

fn id(text: &str) -> Result<RecoveryId, String> {
    text.parse::<RecoveryId>().map_err(|e| e.to_string())
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Runs a `pki escrow` request.
pub fn execute(ca: &Ca, actor: &str, req: &Request) -> Outcome {
    let e = |err: ca_core::Error| err.to_string();
    match req {
        Request::EscrowAsk { serial, reason } => {
            let serial: Serial = serial.parse().map_err(|e: cerdb::Error| e.to_string())?;
            let r = ca.request_recovery(&serial, actor, reason).map_err(e)?;
            let others = r.required - 1;
            Ok(Reply {
                stdout: format!("{}\n", r.id),
                stderr: format!(
                    "requested the recovery of the escrowed key of {serial}: request {id}; {others} other officer{s} \
                     must approve it (`pki escrow approve {id}`) before {expires}, then download it with \
                     `pki escrow recover {id} --out FILE`\n",
                    id = r.id,
                    s = if others == 1 { "" } else { "s" },
                    expires = when(r.expires_at),
                ),
                files: vec![],
            })
        }
        Request::EscrowApprove { id: text } => {
            let r = ca.approve_recovery(&id(text)?, actor).map_err(e)?;
            let mut out = format!("approved escrow recovery request {} of {}", r.id, r.requester);
            match RecoveryState::of(&r, ca.now()) {
                RecoveryState::Approved => {
                    let _ =
                        write!(out, ": it has every approval it needs; {} can download the key", r.requester);
                }
                state => {
                    let _ = write!(out, " ({})", state.label());
                }
            }
            out.push('\n');
            Ok(Reply { stdout: out, ..Reply::default() })
        }
        Request::EscrowList => {
            let now = ca.now();
            let mut s = format!(
                "{:<32} {:<34} {:<13} {:<24} {:<20} {}\n",
                "ID", "SERIAL", "STATE", "REQUESTER", "EXPIRES", "REASON"
            );
            for r in ca.recoveries().map_err(e)? {
                let _ = writeln!(
                    s,
                    "{:<32} {:<34} {:<13} {:<24} {:<20} {}",
                    r.id.to_string(),
                    r.serial.to_string(),
                    RecoveryState::of(&r, now).label(),
                    r.requester,
                    when(r.expires_at),
                    if r.reason.is_empty() { "-" } else { r.reason.as_str() },
                );
            }
            Ok(Reply { stdout: s, ..Reply::default() })
        }
        Request::EscrowRecover { id: text, p12_out, password } => {
            let (r, p12) = ca.release_recovery(&id(text)?, actor, password).map_err(e)?;
            Ok(Reply {
                stdout: format!("escrowed key of {} written to {p12_out}\n", r.serial),
                stderr: String::new(),
                files: vec![OutFile { path: p12_out.clone(), bytes: p12 }],
            })
        }
        _ => Err("not an escrow command".into()),
    }
}
