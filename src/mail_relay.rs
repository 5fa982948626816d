//! `[mail.relay]`: the SMTP relay mail leaves through (mailbox validation values, ACME
//! challenges), with lettre: plain SMTP on a trusted network, STARTTLS, or implicit TLS, and
//! optional authentication.

use serde::{Deserialize, Serialize};

/// `[mail]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// The relay.
    pub relay: RelaySettings,
}

/// How to reach the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// Plain SMTP (a relay on loopback or a trusted network).
    #[default]
    None,
    /// STARTTLS, required.
    Starttls,
    /// TLS from the first byte (submissions port 465).
    Implicit,
}

/// `[mail.relay]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Host name of the relay (unset: no mail can be sent).
    pub host: Option<String>,
    /// Port (default 25).
    pub port: u16,
    /// none, starttls or implicit.
    pub tls: RelayTls,
    /// User name for SMTP AUTH.
    pub username: Option<String>,
    /// File whose first line is the SMTP AUTH password.
    pub password_file: Option<std::path::PathBuf>,
    /// The sender of the CA's mail.
    pub from: String,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            host: None,
            port: 25,
            tls: RelayTls::None,
            username: None,
            password_file: None,
            from: "pki@localhost".into(),
        }
    }
}

/// One message to send.
pub struct Outgoing<'a> {
    /// Recipient.
    pub to: &'a str,
    /// Subject.
    pub subject: &'a str,
    /// Plain-text body.
    pub body: String,
    /// `Auto-Submitted` (RFC 3834): `auto-generated`, with `; type=acme` for ACME challenges.
    pub auto_submitted: &'a str,
    /// The sender, when not `[mail.relay] from`.
    pub from: Option<&'a str>,
}

impl RelaySettings {
    /// Sends one message through the relay, marked `Auto-Submitted: auto-generated`.
    pub fn send(&self, mail: &Outgoing<'_>) -> anyhow::Result<()> {
        use lettre::message::header::{ContentType, HeaderName, HeaderValue};
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::{SmtpTransport, Transport};
        let Some(host) = &self.host else {
            anyhow::bail!("no mail relay: set [mail.relay] host (and port, tls) in pki.toml");
        };
        let mut msg = lettre::Message::builder()
            .from(mail.from.unwrap_or(&self.from).parse().map_err(|e| anyhow::anyhow!("the sender: {e}"))?)
            .to(mail.to.parse().map_err(|e| anyhow::anyhow!("the recipient: {e}"))?)
            .subject(mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())?;
        msg.headers_mut().insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            mail.auto_submitted.into(),
        ));
        let mut t = match self.tls {
            RelayTls::None => SmtpTransport::builder_dangerous(host),
            RelayTls::Starttls => SmtpTransport::starttls_relay(host)?,
            RelayTls::Implicit => SmtpTransport::relay(host)?,
        }
        .port(self.port)
        .timeout(Some(std::time::Duration::from_secs(30)));
        if let Some(user) = &self.username {
            let Some(file) = &self.password_file else {
                anyhow::bail!("[mail.relay] username needs password_file");
            };
            let text = std::fs::read_to_string(file).map_err(|e| {
                anyhow::anyhow!("cannot read [mail.relay] password_file {}: {e}", file.display())
            })?;
            let password = text.lines().next().unwrap_or("").to_string();
            t = t.credentials(Credentials::new(user.clone(), password));
        }
        t.build()
            .send(&msg)
            .map_err(|e| anyhow::anyhow!("the mail relay {host}:{} refused or failed: {e}", self.port))?;
        Ok(())
    }
}

static RELAY: std::sync::OnceLock<RelaySettings> = std::sync::OnceLock::new();

/// Sets the relay of this process (from the configuration, once).
pub fn configure(relay: &RelaySettings) {
    let _ = RELAY.set(relay.clone());
}

/// The relay of this process (the default, which sends nothing, before [`configure`]).
pub fn configured() -> RelaySettings {
    RELAY.get().cloned().unwrap_or_default()
}

/// The relay sends ACME's challenge mails.
impl acme::reply::ChallengeMailer for RelaySettings {
    fn send_challenge(&self, to: &str, from: &str, subject: &str, body: &str) -> Result<(), String> {
        let mail = Outgoing {
            to,
            subject,
            body: body.to_string(),
            auto_submitted: "auto-generated; type=acme",
            from: Some(from),
        };
        self.send(&mail).map_err(|e| format!("{e:#}"))
    }
}
