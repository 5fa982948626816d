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
    /// Renew a sender's certificate: a new key generated in the key store and a new certificate
    /// for its address in the place of the current one, its API keys kept. The old certificate
    /// stays valid until it expires or is revoked. `pki serve` does this on its own `[ca.expiry]
    /// mail_sender_renew_before_days` (30) before the certificate expires.
    Renew {
        /// The sender's name.
        #[arg(long)]
        name: String,
        /// Key type of the new key: rsa2048, rsa3072, rsa4096, p256, p384 (default: the current
        /// key's).
        #[arg(long)]
        key_type: Option<String>,
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
    /// Renew.
    Renew {
        /// Sender.
        name: String,
        /// Key type.
        key_type: Option<String>,
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
        SenderCommand::Renew { name, key_type } => SenderRequest::Renew { name, key_type },
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
            let mut out = format!(
                "{:<20} {:<36} {:<34} {:<20} {}\n",
                "NAME", "EMAIL", "SERIAL", "NOT AFTER", "API KEYS"
            );
            for x in senders.list().map_err(s)? {
                let keys: Vec<&str> = x.allowed_keys.iter().map(|k| k.as_str()).collect();
                let not_after = match ca.db().get_meta(&x.serial).map_err(s)? {
                    Some(rec) if rec.revocation.is_some() => "revoked".to_string(),
                    Some(rec) => rec.not_after.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    None => "-".to_string(),
                };
                let _ = writeln!(
                    out,
                    "{:<20} {:<36} {:<34} {:<20} {}",
                    x.name.as_str(),
                    x.email.as_str(),
                    x.serial.to_string(),
                    not_after,
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
        SenderRequest::Renew { name, key_type } => {
            let name = sender_name(name)?;
            let sender = senders
                .get(&name)
                .map_err(s)?
                .ok_or_else(|| cerdb::Error::UnknownSender(name.to_string()).to_string())?;
            let kt = key_type
                .as_deref()
                .map(|k| k.parse::<hsm_sim::KeyType>().map_err(|e| e.to_string()))
                .transpose()?;
            let Some(r) = renew_sender(ca, &sender, kt, actor)? else {
                return Err(format!(
                    "sender {name} was renewed or removed by another process meanwhile: see pki mail sender list"
                ));
            };
            let mut out = format!(
                "renewed sender {name} <{}>: certificate serial {} (notAfter {}) in the place of {}\n",
                r.sender.email,
                r.cert.serial,
                r.cert.not_after.format("%Y-%m-%dT%H:%M:%SZ"),
                r.replaced
            );
            out.push_str(&ca_core::to_pem("CERTIFICATE", &r.cert.der));
            Ok(Reply {
                stdout: out,
                stderr: format!(
                    "the old certificate {} stays valid until it expires or is revoked (pki revoke --serial {} --reason superseded)\n",
                    r.replaced, r.replaced
                ),
                files: vec![],
            })
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

/// A sender identity renewed ([`renew_sender`]).
pub struct Renewed {
    /// The sender, with its new certificate's serial and key.
    pub sender: MailSender,
    /// The new certificate.
    pub cert: cerdb::CertRecord,
    /// The serial of the certificate it replaced.
    pub replaced: cerdb::Serial,
}

/// Renews `sender`: a new key (of `key_type`, else of its current key's type) generated in
/// custody and a certificate for its address, issued and audited, then put in the place of its
/// current certificate only if that is still the one it has (`mail.sender.renew`). When another
/// process renewed or removed the sender meanwhile, the certificate just issued is revoked
/// (superseded) and never used, and `Ok(None)` says so. The old certificate stays valid: mail it
/// signed keeps verifying.
pub fn renew_sender(
    ca: &Ca,
    sender: &MailSender,
    key_type: Option<hsm_sim::KeyType>,
    actor: &str,
) -> Result<Option<Renewed>, String> {
    let e = |e: ca_core::Error| e.to_string();
    let current = ca.db().get_meta(&sender.serial).map_err(|e| e.to_string())?.ok_or_else(|| {
        format!("sender {}: its certificate {} is not in the store", sender.name, sender.serial)
    })?;
    let kt = match key_type {
        Some(kt) => kt,
        None => current.key_type.parse::<hsm_sim::KeyType>().map_err(|e| e.to_string())?,
    };
    let (cert, handle) = ca.issue_mail_sender(&sender.email, Some(kt), actor).map_err(e)?;
    let senders = MailSenders::open(ca.db());
    let put = senders
        .replace_certificate(&sender.name, &sender.serial, &cert.serial, handle.as_str())
        .map_err(|e| e.to_string())?;
    let details = format!(
        "{} {} serial {} replacing {} (notAfter {})",
        sender.name,
        sender.email,
        cert.serial,
        sender.serial,
        current.not_after.format("%Y-%m-%dT%H:%M:%SZ")
    );
    match put {
        Some(renewed) => {
            ca.audit_event(actor, AuditAction::MailSenderRenew, true, &details).map_err(e)?;
            tracing::info!(sender = %sender.name, serial = %cert.serial, replaced = %sender.serial, "sender identity renewed");
            Ok(Some(Renewed { sender: renewed, cert, replaced: sender.serial.clone() }))
        }
        None => {
            ca.revoke(&cert.serial, cerdb::RevocationReason::Superseded, actor).map_err(e)?;
            let why = format!(
                "the sender was renewed or removed by another process meanwhile; {details}: revoked (superseded), never used"
            );
            ca.audit_event(actor, AuditAction::MailSenderRenew, false, &why).map_err(e)?;
            Ok(None)
        }
    }
}

/// `pki serve`'s renewal of the sender identities whose certificates end within `[ca.expiry]
/// mail_sender_renew_before_days` (none when 0). Not renewed: a revoked certificate (an officer's
/// decision), and one a new certificate would not outlive by a day because the issuing CA ends
/// first (a warning). Each sender's failure is logged, and the others are still tried.
pub fn renew_due_senders(ca: &Ca, actor: &str) -> Result<Vec<Renewed>, String> {
    let before_days = ca.config().expiry.mail_sender_renew_before_days;
    if before_days == 0 {
        return Ok(Vec::new());
    }
    let now = ca.now();
    let mut renewed = Vec::new();
    for sender in MailSenders::open(ca.db()).list().map_err(|e| e.to_string())? {
        let Some(current) = ca.db().get_meta(&sender.serial).map_err(|e| e.to_string())? else {
            continue;
        };
        if current.revocation.is_some()
            || current.not_after - now > chrono::Duration::days(before_days.into())
        {
            continue;
        }
        if ca.leaf_not_after(now) <= current.not_after + chrono::Duration::days(1) {
            tracing::warn!(sender = %sender.name, serial = %sender.serial, "the sender's certificate is due for renewal, but the issuing CA ends before a new one would last longer");
            continue;
        }
        match renew_sender(ca, &sender, None, actor) {
            Ok(Some(r)) => renewed.push(r),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(sender = %sender.name, error = %e, "the sender's certificate could not be renewed")
            }
        }
    }
    Ok(renewed)
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
    use std::sync::Arc;

    use cerdb::{CertDb, FixedClock};
    use chrono::{Duration, TimeZone, Utc};
    use hsm_sim::{HsmSim, MasterKeySource};

    use super::*;

    /// A CA on a clock of the test's own, with the sender `statements` (P-256), renewed
    /// `window` days before its end.
    fn ca_with_sender(dir: &std::path::Path, window: u32) -> (Ca, Arc<FixedClock>) {
        let clock =
            Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).single().expect("time")));
        let db = CertDb::open(dir.join("db")).expect("db");
        let hsm = Arc::new(HsmSim::open(dir.join("keys"), &MasterKeySource::KeyFile).expect("hsm"));
        let mut config = ca_core::CaConfig::default();
        config.expiry.mail_sender_renew_before_days = window;
        let ca = Ca::init(db, hsm, config, clock.clone(), "test").expect("init").0;
        let add = SenderRequest::Add {
            name: "statements".into(),
            email: "statements@bank.example".into(),
            key_type: Some("p256".into()),
            enterprise_domains: vec!["bank.example".into()],
        };
        execute(&ca, &add, "officer").expect("added");
        (ca, clock)
    }

    fn statements(ca: &Ca) -> MailSender {
        let name: SenderName = "statements".parse().expect("name");
        MailSenders::open(ca.db()).get(&name).expect("read").expect("present")
    }

    /// Two processes renewing the same sender at once (two nodes on one database): the one that
    /// puts its certificate in place first wins; the other's certificate, issued and audited, is
    /// revoked (superseded) and never used, and its entry says so.
    #[test]
    fn a_renewal_another_process_made_first_is_revoked_and_never_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _) = ca_with_sender(dir.path(), 30);
        let stale = statements(&ca);
        let won = renew_sender(&ca, &stale, None, "node-a").expect("renewal").expect("put in use");
        assert_eq!(won.replaced, stale.serial);
        assert!(renew_sender(&ca, &stale, None, "node-b").expect("renewal").is_none());
        assert_eq!(statements(&ca).serial, won.cert.serial, "the first renewal's certificate is in use");
        let entries = ca_core::audit::entries(ca.db()).expect("log");
        let lost = entries.iter().rfind(|e| e.action == AuditAction::MailSenderRenew).expect("an entry");
        assert!(
            lost.outcome.starts_with("refused: the sender was renewed or removed by another process"),
            "{lost:?}"
        );
        let serial: cerdb::Serial = lost
            .outcome
            .split("serial ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the lost certificate's serial")
            .parse()
            .expect("a serial");
        assert_ne!(serial, won.cert.serial);
        let rec = ca.db().get_meta(&serial).expect("read").expect("stored");
        let revocation = rec.revocation.expect("revoked");
        assert_eq!(revocation.reason, cerdb::RevocationReason::Superseded);
    }

    /// `pki serve`'s check renews a certificate within the window (an expired one too), only
    /// then, and never with the window 0; a revoked one is left to the officers.
    #[test]
    fn senders_are_renewed_within_the_window_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, clock) = ca_with_sender(dir.path(), 30);
        let first = statements(&ca).serial;
        assert!(renew_due_senders(&ca, "system").expect("check").is_empty(), "365 days left");
        clock.advance(Duration::days(334));
        assert!(renew_due_senders(&ca, "system").expect("check").is_empty(), "31 days left");
        clock.advance(Duration::days(2));
        let never_dir = tempfile::tempdir().expect("tempdir");
        let (never, never_clock) = ca_with_sender(never_dir.path(), 0);
        never_clock.advance(Duration::days(400));
        assert!(renew_due_senders(&never, "system").expect("check").is_empty(), "0: never");
        let renewed = renew_due_senders(&ca, "system").expect("check");
        assert_eq!(renewed.len(), 1, "29 days left");
        assert_eq!(renewed[0].replaced, first);
        assert!(renew_due_senders(&ca, "system").expect("check").is_empty(), "renewed once");
        // A server down past the certificate's end renews it as it starts.
        clock.advance(Duration::days(400));
        let renewed = renew_due_senders(&ca, "system").expect("check");
        assert_eq!(renewed.len(), 1, "expired");
        let third = statements(&ca).serial;
        ca.revoke(&third, cerdb::RevocationReason::KeyCompromise, "officer").expect("revoked");
        clock.advance(Duration::days(340));
        assert!(renew_due_senders(&ca, "system").expect("check").is_empty(), "revoked: not renewed");
    }

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
