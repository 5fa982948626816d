//! `[mail.relay]`: the SMTP relay outgoing mail leaves through (sealed mail's `"deliver": true`,
//! and any other mail the CA sends), and the client that hands messages to it (lettre).
//!
//! ```toml
//! [mail.relay]
//! host = "smtp.bank.example"
//! port = 587
//! tls = "starttls"          # "none" | "starttls" | "tls"
//! username = "pki"
//! password_env = "PKI_SMTP_PASSWORD"   # or password = "..."
//! from = "pki@bank.example"            # envelope sender when the message has none of its own
//! ```

use serde::{Deserialize, Serialize};

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// Plain SMTP (a relay on loopback or a trusted network only).
    None,
    /// SMTP, then STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// `[mail.relay]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// The relay's host name or address.
    pub host: String,
    /// Its port (default: 25 without TLS, 587 with STARTTLS, 465 with TLS).
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub tls: RelayTls,
    /// The user name, when the relay wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable holding the password (preferred over `password`).
    #[serde(default)]
    pub password_env: Option<String>,
    /// The password in the file itself.
    #[serde(default)]
    pub password: Option<String>,
    /// The envelope sender for mail without a sender of its own.
    #[serde(default)]
    pub from: Option<String>,
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password_env", &self.password_env)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("from", &self.from)
            .finish()
    }
}

impl RelaySettings {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            RelayTls::None => 25,
            RelayTls::Starttls => 587,
            RelayTls::Tls => 465,
        })
    }

    /// The password: from `password_env` when set, else `password`.
    pub fn password(&self) -> anyhow::Result<Option<String>> {
        match &self.password_env {
            Some(var) => match std::env::var(var) {
                Ok(p) => Ok(Some(p)),
                Err(_) => anyhow::bail!("[mail.relay] password_env names {var}, which is not set"),
            },
            None => Ok(self.password.clone()),
        }
    }
}

/// Messages handed to the relay over SMTP (lettre's synchronous transport: callers run on
/// blocking threads).
struct RelayDelivery {
    transport: lettre::SmtpTransport,
}

/// The delivery of `[mail.relay]`.
pub fn delivery(s: &RelaySettings) -> anyhow::Result<std::sync::Arc<dyn sealed_mail::Delivery>> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::SmtpTransport;
    let builder = match s.tls {
        RelayTls::None => SmtpTransport::builder_dangerous(&s.host),
        RelayTls::Starttls => SmtpTransport::starttls_relay(&s.host)
            .map_err(|e| anyhow::anyhow!("[mail.relay] host {}: {e}", s.host))?,
        RelayTls::Tls => {
            SmtpTransport::relay(&s.host).map_err(|e| anyhow::anyhow!("[mail.relay] host {}: {e}", s.host))?
        }
    };
    let mut builder = builder.port(s.port()).timeout(Some(std::time::Duration::from_secs(30)));
    if let Some(user) = &s.username {
        builder = builder.credentials(Credentials::new(user.clone(), s.password()?.unwrap_or_default()));
    }
    Ok(std::sync::Arc::new(RelayDelivery { transport: builder.build() }))
}

/// The queue id in a relay's final answer (`250 2.0.0 Ok: queued as 4Xyz`), or the whole answer.
fn queue_id(lines: &[&str]) -> String {
    let text = lines.join(" ");
    match text.split_once("queued as ") {
        Some((_, rest)) => rest.split_whitespace().next().unwrap_or(rest).to_string(),
        None => text,
    }
}

impl sealed_mail::Delivery for RelayDelivery {
    fn deliver(
        &self,
        from: &cerdb::EmailAddress,
        to: &cerdb::EmailAddress,
        message: &[u8],
    ) -> Result<String, sealed_mail::Error> {
        use lettre::Transport as _;
        let bad = |e: String| sealed_mail::Error::Delivery(e);
        let envelope = lettre::address::Envelope::new(
            Some(from.as_str().parse().map_err(|e: lettre::address::AddressError| bad(e.to_string()))?),
            vec![to.as_str().parse().map_err(|e: lettre::address::AddressError| bad(e.to_string()))?],
        )
        .map_err(|e| bad(e.to_string()))?;
        // lettre ends the data with CRLF "." CRLF whatever the message ends with: the message's own
        // last line end is that first CRLF, or the relay would store one empty line more.
        let data = message.strip_suffix(b"\r\n").unwrap_or(message);
        let response = self.transport.send_raw(&envelope, data).map_err(|e| bad(e.to_string()))?;
        let lines: Vec<&str> = response.message().collect();
        Ok(queue_id(&lines))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_read_from_postfix_answers() {
        assert_eq!(queue_id(&["2.0.0 Ok: queued as 4XyzAbC"]), "4XyzAbC");
        assert_eq!(queue_id(&["Ok"]), "Ok");
    }

    #[test]
    fn relay_settings_read_from_toml() {
        let s: RelaySettings =
            toml::from_str("host = \"127.0.0.1\"\nport = 2525\ntls = \"none\"").expect("toml");
        assert_eq!((s.port(), s.tls), (2525, RelayTls::None));
        let s: RelaySettings = toml::from_str("host = \"smtp.example\"\ntls = \"tls\"").expect("toml");
        assert_eq!(s.port(), 465);
        assert!(toml::from_str::<RelaySettings>("host = \"x\"\ntls = \"ssl\"").is_err());
        assert!(toml::from_str::<RelaySettings>("host = \"x\"\nextra = 1").is_err());
    }
}
