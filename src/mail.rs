//! CLI-side glue of sealed mail (`sealed-mail`): `pki mail sender ...`, and the mail service
//! `pki serve` mounts beside the directory (`/api/v1/mail/...`): the senders' keys from the CA,
//! the audit entry of every message, the TSA in process, the relay.

use std::fmt::Write as _;
use std::sync::Arc;

use ca_core::audit::AuditDraft;
use ca_core::{AuditAction, Ca, CaCert};
use cerdb::directory::{ApiKeyName, Directory};
use cerdb::mail_senders::{MailSender, MailSenders, SenderName};
use cerdb::{CertReader, EmailAddress, SystemClock};
use clap::Subcommand;
use sealed_mail::{DeliveryRecord, MailAudit, SealRecord, SenderKey, SenderKeys};
use serde::{Deserialize, Serialize};

use crate::commands::{Outcome, Reply, Request};
use crate::settings::Settings;

/// `pki mail ...`
#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Sender identities of sealed mail.
    Sender {
        #[command(subcommand)]
        command: SenderCommand,
    },
}

/// `pki mail sender ...`
#[derive(Debug, Subcommand)]
pub enum SenderCommand {
    /// Add a sender identity: a signing certificate for an address of the enterprise domains
    /// (`[validation] enterprise_domains`), its key generated in the key store and never exported.
    Add {
        /// The name API clients use (`statements`).
        #[arg(long)]
        name: String,
        /// Its address.
        #[arg(long)]
        email: String,
        /// Key type: rsa2048 (default from [ca.leaf]), rsa3072, rsa4096, p256, p384.
        #[arg(long)]
        key_type: Option<String>,
    },
    /// List the sender identities.
    List,
    /// Remove a sender identity (its certificate stays valid until revoked: `pki revoke`).
    Remove {
        /// Its name.
        #[arg(long)]
        name: String,
    },
    /// Allow an API key (made with `pki apikey create --permission mail`) to send as a sender.
    Allow {
        /// The sender's name.
        #[arg(long)]
        name: String,
        /// The API key's name.
        #[arg(long)]
        key: String,
    },
    /// Withdraw an API key from a sender.
    Disallow {
        /// The sender's name.
        #[arg(long)]
        name: String,
        /// The API key's name.
        #[arg(long)]
        key: String,
    },
}

/// The requests of `pki mail sender`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SenderRequest {
    /// Add; the enterprise domains travel with the request from the officer's configuration.
    Add {
        /// Name.
        name: String,
        /// Address.
        email: String,
        /// Key type.
        key_type: Option<String>,
        /// `[validation] enterprise_domains` (and the deprecated `[mail]` list).
        enterprise_domains: Vec<String>,
    },
    /// List.
    List,
    /// Remove.
    Remove {
        /// Name.
        name: String,
    },
    /// Allow a key.
    Allow {
        /// Sender.
        name: String,
        /// Key.
        key: String,
    },
    /// Disallow a key.
    Disallow {
        /// Sender.
        name: String,
        /// Key.
        key: String,
    },
}

/// The request of `pki mail ...`.
pub fn mail_request(cmd: MailCommand, settings: &Settings) -> Request {
    let MailCommand::Sender { command } = cmd;
    Request::MailSender(match command {
        SenderCommand::Add { name, email, key_type } => {
            if let Some(w) = settings.mail.deprecation_warning() {
                eprintln!("{w}");
            }
            SenderRequest::Add {
                name,
                email,
                key_type,
                enterprise_domains: settings.mail.enterprise_domains(&settings.validation),
            }
        }
        SenderCommand::List => SenderRequest::List,
        SenderCommand::Remove { name } => SenderRequest::Remove { name },
        SenderCommand::Allow { name, key } => SenderRequest::Allow { name, key },
        SenderCommand::Disallow { name, key } => SenderRequest::Disallow { name, key },
    })
}

fn sender_name(s: &str) -> Result<SenderName, String> {
    s.parse().map_err(|e: cerdb::Error| e.to_string())
}

fn key_name(s: &str) -> Result<ApiKeyName, String> {
    s.parse().map_err(|e: cerdb::directory::DirectoryError| e.to_string())
}

/// Runs `pki mail sender ...` against the CA.
pub fn execute(ca: &Ca, req: &SenderRequest, actor: &str) -> Outcome {
    let senders = MailSenders::open(ca.db());
    let s = |e: cerdb::Error| e.to_string();
    match req {
        SenderRequest::Add { name, email, key_type, enterprise_domains } => {
            let name = sender_name(name)?;
            let email: EmailAddress = email.parse().map_err(s)?;
            if !crate::mail_settings::in_enterprise_domains(&email, enterprise_domains) {
                return Err(format!(
                    "{email} is not in the enterprise domains ([validation] enterprise_domains = {enterprise_domains:?}): \
                     sender identities use the organisation's own addresses"
                ));
            }
            if senders.contains(&name).map_err(s)? {
                return Err(cerdb::Error::SenderExists(name.to_string()).to_string());
            }
            let kt = key_type
                .as_deref()
                .map(|k| k.parse::<hsm_sim::KeyType>().map_err(|e| e.to_string()))
                .transpose()?;
            let (rec, handle) = ca.issue_mail_sender(&email, kt, actor).map_err(|e| e.to_string())?;
            let sender = MailSender {
                name: name.clone(),
                email: email.clone(),
                key_handle: handle.as_str().to_string(),
                serial: rec.serial.clone(),
                created_at: ca.now(),
                allowed_keys: vec![],
            };
            senders.insert(sender).map_err(s)?;
            let details = format!("{name} {email} serial {}", rec.serial);
            ca.audit_event(actor, AuditAction::MailSenderAdd, true, &details).map_err(|e| e.to_string())?;
            let mut out = format!("added sender {name} <{email}>, certificate serial {}\n", rec.serial);
            out.push_str(&ca_core::to_pem("CERTIFICATE", &rec.der));
            Ok(Reply { stdout: out, ..Reply::default() })
        }
        SenderRequest::List => {
            let mut out = format!("{:<20} {:<36} {:<34} {}\n", "NAME", "EMAIL", "SERIAL", "API KEYS");
            for x in senders.list().map_err(s)? {
                let keys: Vec<&str> = x.allowed_keys.iter().map(|k| k.as_str()).collect();
                let _ = writeln!(
                    out,
                    "{:<20} {:<36} {:<34} {}",
                    x.name.as_str(),
                    x.email.as_str(),
                    x.serial.to_string(),
                    keys.join(",")
                );
            }
            Ok(Reply { stdout: out, ..Reply::default() })
        }
        SenderRequest::Remove { name } => {
            let gone = senders.remove(&sender_name(name)?).map_err(s)?;
            ca.audit_event(
                actor,
                AuditAction::MailSenderRemove,
                true,
                &format!("{} {}", gone.name, gone.email),
            )
            .map_err(|e| e.to_string())?;
            Ok(Reply {
                stdout: format!("removed sender {}\n", gone.name),
                stderr: format!(
                    "its certificate {} stays valid until it expires or is revoked (pki revoke --serial {} --reason cessationOfOperation)\n",
                    gone.serial, gone.serial
                ),
                files: vec![],
            })
        }
        SenderRequest::Allow { name, key } => {
            let key = key_name(key)?;
            let known = cerdb::directory::ApiKeyStore::open(ca.db())
                .and_then(|k| k.list())
                .map_err(|e| e.to_string())?
                .into_iter()
                .any(|r| r.name == key && r.revoked_at.is_none());
            if !known {
                return Err(format!("no live API key named {key:?}"));
            }
            let x = senders.allow(&sender_name(name)?, &key).map_err(s)?;
            ca.audit_event(actor, AuditAction::MailSenderAllow, true, &format!("{} key {key}", x.name))
                .map_err(|e| e.to_string())?;
            Ok(Reply { stdout: format!("API key {key} may send as {}\n", x.name), ..Reply::default() })
        }
        SenderRequest::Disallow { name, key } => {
            let key = key_name(key)?;
            let x = senders.disallow(&sender_name(name)?, &key).map_err(s)?;
            ca.audit_event(
                actor,
                AuditAction::MailSenderAllow,
                true,
                &format!("{} key {key} withdrawn", x.name),
            )
            .map_err(|e| e.to_string())?;
            Ok(Reply {
                stdout: format!("API key {key} may no longer send as {}\n", x.name),
                ..Reply::default()
            })
        }
    }
}

/// The senders' keys: from the CA's key custody, with their certificate and the issuing CA.
struct CaSenderKeys(Arc<Ca>);

impl SenderKeys for CaSenderKeys {
    fn sender_key(&self, sender: &MailSender) -> Result<SenderKey, sealed_mail::Error> {
        let internal = |e: String| sealed_mail::Error::Internal(e);
        let handle: hsm_sim::KeyHandle =
            sender.key_handle.parse().map_err(|e: hsm_sim::Error| internal(e.to_string()))?;
        let signer = self.0.mail_signer(&handle).map_err(|e| internal(e.to_string()))?;
        let rec = self.0.db().get(&sender.serial)?.ok_or_else(|| sealed_mail::Error::SenderUnusable {
            sender: sender.name.to_string(),
            reason: format!("its certificate {} is not in the store", sender.serial),
        })?;
        if rec.revocation.is_some() {
            return Err(sealed_mail::Error::SenderUnusable {
                sender: sender.name.to_string(),
                reason: format!("its certificate {} is revoked", sender.serial),
            });
        }
        SenderKey::new(signer, vec![rec.der, self.0.ca_cert(CaCert::Issuing).to_vec()])
    }
}

/// Each message's audit entry, in the CA's audit log.
struct CaMailAudit(Arc<Ca>);

fn audit_details(r: &SealRecord) -> String {
    format!(
        "{} key {} sender {} to sha256:{} cert {} message-id <{}> timestamp {}",
        r.kind.name(),
        r.api_key,
        r.sender,
        r.recipient_hash,
        r.certificate_serial.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        r.message_id,
        r.timestamp_serial.as_deref().unwrap_or("-"),
    )
}

impl MailAudit for CaMailAudit {
    fn record(&self, r: &SealRecord) -> Result<(), sealed_mail::Error> {
        self.0
            .audit_event(&format!("apikey:{}", r.api_key), AuditAction::MailSeal, true, &audit_details(r))
            .map_err(|e| sealed_mail::Error::Internal(e.to_string()))
    }

    /// One durable write for the messages of a bulk request, or for the single messages
    /// committed together (of any API keys).
    fn record_all(&self, recs: &[SealRecord]) -> Result<(), sealed_mail::Error> {
        let drafts = recs
            .iter()
            .map(|r| {
                AuditDraft::ok(
                    &format!("apikey:{}", r.api_key),
                    AuditAction::MailSeal,
                    None,
                    audit_details(r),
                )
            })
            .collect();
        self.0.audit_events(drafts).map_err(|e| sealed_mail::Error::Internal(e.to_string()))
    }

    /// `mail.deliver`: the message id, the recipient's hash and the relay's queue id; or
    /// refused, with why.
    fn record_deliveries(&self, recs: &[DeliveryRecord]) -> Result<(), sealed_mail::Error> {
        let drafts = recs
            .iter()
            .map(|r| {
                let actor = format!("apikey:{}", r.api_key);
                let details = format!("message-id <{}> to sha256:{}", r.message_id, r.recipient_hash);
                match &r.outcome {
                    Ok(queue_id) => AuditDraft::ok(
                        &actor,
                        AuditAction::MailDeliver,
                        None,
                        format!("{details} queue-id {}", printable(queue_id)),
                    ),
                    Err(why) => AuditDraft::refused(&actor, AuditAction::MailDeliver, None, why, details),
                }
            })
            .collect();
        self.0.audit_events(drafts).map_err(|e| sealed_mail::Error::Internal(e.to_string()))
    }
}

/// A relay's queue id as the audit log keeps it: printable ASCII and spaces alone, at most
/// [`MAX_QUEUE_ID_CHARS`] (it is the relay's text, not ours to trust; Postfix's ids are 10 to 20
/// characters, and a relay that names none gives its whole answer, as Exchange's 150 or so).
fn printable(queue_id: &str) -> String {
    queue_id.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(MAX_QUEUE_ID_CHARS).collect()
}

/// The most characters of a relay's queue id the audit log keeps.
const MAX_QUEUE_ID_CHARS: usize = 200;

/// What `[mail]` configures that needs no CA: read and checked by `pki serve` before key custody
/// is opened, so that a wrong file or value is its one error line and a first start makes nothing.
pub struct MailPrepared {
    archive: Option<Vec<u8>>,
    invitation: sealed_mail::Invitation,
    limits: sealed_mail::MailLimits,
    delivery: Option<Arc<dyn sealed_mail::Delivery>>,
}

/// Reads `[mail] archive_certificate` (PEM or DER; it must hold a key sealed mail encrypts to),
/// the invitation's subject, the limits, and `[mail.relay]` with its password file and trust anchors.
pub fn prepare_mail(settings: &Settings) -> anyhow::Result<MailPrepared> {
    let m = &settings.mail;
    let archive = match &m.archive_certificate {
        Some(path) => {
            let bytes =
                crate::input::read_bounded(path, "[mail] archive_certificate", crate::input::MAX_DER_FILE)?;
            let der = match pem::parse(&bytes) {
                Ok(p) => p.into_contents(),
                Err(_) => bytes,
            };
            sealed_mail::envelope::Recipient::from_der(&der)
                .map_err(|e| anyhow::anyhow!("[mail] archive_certificate {}: {e}", path.display()))?;
            Some(der)
        }
        None => None,
    };
    let invitation = sealed_mail::Invitation {
        subject: sealed_mail::mime::HeaderText::parse("invitation_subject", &m.invitation_subject, 998)
            .map_err(|e| anyhow::anyhow!("[mail] {e}"))?,
        text: m.invitation_text.clone(),
    };
    let limits = sealed_mail::MailLimits {
        max_body: m.max_body_mib.saturating_mul(1 << 20),
        max_bulk_body: m.max_bulk_body_mib.saturating_mul(1 << 20),
        max_bulk_at_once: m.max_bulk_at_once,
    };
    let delivery = m.relay.host.is_some().then(|| crate::mail_relay::delivery(&m.relay)).transpose()?;
    if m.relay.password_file.is_some() && m.relay.username.is_none() {
        tracing::warn!(
            "[mail.relay] password_file is set without username: the relay is used without credentials"
        );
    }
    if m.relay.ca_file.is_some() && m.relay.tls == crate::mail_relay::RelayTls::None {
        tracing::warn!("[mail.relay] ca_file is set with tls = \"none\": the relay is reached without TLS");
    }
    Ok(MailPrepared { archive, invitation, limits, delivery })
}

/// The mail service `pki serve` mounts, from what [`prepare_mail`] read.
pub fn open_mail_service(
    ca: &Arc<Ca>,
    prepared: MailPrepared,
    directory: Arc<Directory>,
) -> anyhow::Result<Arc<sealed_mail::MailService>> {
    let MailPrepared { archive, invitation, limits, delivery } = prepared;
    let reader: Arc<dyn CertReader> = Arc::new(ca.db().clone());
    let tsa: Arc<dyn sealed_mail::Timestamper> =
        Arc::new(sealed_mail::InProcessTsa(crate::context::tsa(ca)?));
    let sealer = sealed_mail::Sealer::new(sealed_mail::SealerParts {
        reader,
        senders: MailSenders::open(ca.db()),
        keys: Arc::new(CaSenderKeys(ca.clone())),
        tsa: Some(tsa),
        archive,
        invitation,
        clock: Arc::new(SystemClock),
        audit: Arc::new(CaMailAudit(ca.clone())),
        withdrawn: ca.db().withdrawn_issuers().clone(),
    })
    .map_err(|e| anyhow::anyhow!("[mail] archive_certificate: {e}"))?;
    Ok(Arc::new(sealed_mail::MailService::new(sealer, directory, limits, delivery)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relays_queue_id_is_kept_printable_and_bounded() {
        assert_eq!(printable("4XyzAbC12"), "4XyzAbC12");
        assert_eq!(printable("2.6.0 <a@b> [Id=1] Queued"), "2.6.0 <a@b> [Id=1] Queued");
        assert_eq!(printable("Q1\r\nmail.deliver forged\u{0}\u{1b}[2Jé"), "Q1mail.deliver forged[2J");
        assert_eq!(printable(""), "");
        let long = "x".repeat(1 << 20);
        assert_eq!(printable(&long).len(), MAX_QUEUE_ID_CHARS);
    }
}
