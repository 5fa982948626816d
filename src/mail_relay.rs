//! `[mail.relay]`: the SMTP relay mail leaves through (mailbox validation values, ACME
//! challenges, sealed mail's `"deliver": true`), with lettre: plain SMTP on a trusted network,
//! STARTTLS, or implicit TLS, and optional authentication.

use serde::{Deserialize, Serialize};

/// How to reach the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// Plain SMTP (a relay on loopback or a trusted network).
    #[default]
    None,
    /// STARTTLS, required.
    Starttls,
    /// TLS from the first byte (submissions port 465); `tls` says the same.
    #[serde(alias = "tls")]
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
    /// How long to wait for the relay to connect or answer, seconds (default 30, 1 to 600).
    pub timeout_secs: u64,
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
            timeout_secs: 30,
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
    /// `username` with the first line of `password_file`, when a user name is set.
    fn credentials(&self) -> anyhow::Result<Option<lettre::transport::smtp::authentication::Credentials>> {
        let Some(user) = &self.username else { return Ok(None) };
        let Some(file) = &self.password_file else {
            anyhow::bail!("[mail.relay] username needs password_file");
        };
        let password = crate::input::read_secret_line(file, "[mail.relay] password_file")?;
        Ok(Some(lettre::transport::smtp::authentication::Credentials::new(user.clone(), password)))
    }

    /// Sends one message through the relay, marked `Auto-Submitted: auto-generated` (the password
    /// file read again for each: a changed password needs no restart).
    pub fn send(&self, mail: &Outgoing<'_>) -> anyhow::Result<()> {
        use lettre::message::header::{ContentType, HeaderName, HeaderValue};
        let relay = RelayDelivery::of(self)?;
        let from: lettre::Address =
            mail.from.unwrap_or(&self.from).parse().map_err(|e| anyhow::anyhow!("the sender: {e}"))?;
        let to: lettre::Address = mail.to.parse().map_err(|e| anyhow::anyhow!("the recipient: {e}"))?;
        let mut msg = lettre::Message::builder()
            .from(from.clone().into())
            .to(to.clone().into())
            .subject(mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())?;
        msg.headers_mut().insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            mail.auto_submitted.into(),
        ));
        relay.transfer(from, to, &msg.formatted()).map_err(|e| {
            let (host, port) = (&relay.host, relay.port);
            if timed_out(&e) {
                anyhow::anyhow!(
                    "the mail relay {host}:{port} did not answer within {} s ([mail.relay] timeout_secs)",
                    relay.timeout_secs
                )
            } else {
                anyhow::anyhow!("the mail relay {host}:{port} refused or failed: {e}")
            }
        })?;
        Ok(())
    }
}

/// The relay's connection for each message, opened as lettre's `SmtpTransport` opens it: sealed
/// mail as it is, and the CA's own mail ([`RelaySettings::send`]).
///
/// Why not `SmtpTransport::send_raw`: lettre 0.11.23 writes a message's data and then its
/// terminating `CRLF.CRLF` as a second, five-byte write on a socket with Nagle's algorithm on, so
/// the terminator waits for the relay's delayed acknowledgement of the data: 40 ms a message on
/// Linux, 23 one-time codes a second through the tests' Postfix. Here the data, dot-stuffed, and
/// its terminator go in one write: over 1,000 a second, the relay's own ceiling (BENCHMARKS.md,
/// "Delivery through the relay").
struct RelayDelivery {
    host: String,
    port: u16,
    tls: RelayTls,
    credentials: Option<lettre::transport::smtp::authentication::Credentials>,
    timeout_secs: u64,
    hello: lettre::transport::smtp::extension::ClientId,
}

/// The delivery of `[mail.relay]`, for sealed mail.
pub fn delivery(s: &RelaySettings) -> anyhow::Result<std::sync::Arc<dyn sealed_mail::Delivery>> {
    Ok(std::sync::Arc::new(RelayDelivery::of(s)?))
}

impl RelayDelivery {
    /// The relay `s` configures, its password read.
    fn of(s: &RelaySettings) -> anyhow::Result<RelayDelivery> {
        let Some(host) = &s.host else {
            anyhow::bail!("no mail relay: set [mail.relay] host (and port, tls) in pki.toml");
        };
        Ok(RelayDelivery {
            host: host.clone(),
            port: s.port,
            tls: s.tls,
            credentials: s.credentials()?,
            timeout_secs: s.timeout_secs,
            hello: lettre::transport::smtp::extension::ClientId::default(),
        })
    }

    /// A connection to the relay: TLS from the first byte or by STARTTLS as configured, and
    /// logged in when credentials are set.
    fn connect(&self) -> Result<lettre::transport::smtp::client::SmtpConnection, SmtpError> {
        use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
        let timeout = Some(std::time::Duration::from_secs(self.timeout_secs));
        let implicit = match self.tls {
            RelayTls::Implicit => Some(TlsParameters::new(self.host.clone())?),
            _ => None,
        };
        let mut conn = SmtpConnection::connect(
            (self.host.as_str(), self.port),
            timeout,
            &self.hello,
            implicit.as_ref(),
            None,
        )?;
        if self.tls == RelayTls::Starttls {
            conn.starttls(&TlsParameters::new(self.host.clone())?, &self.hello)?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(lettre::transport::smtp::authentication::DEFAULT_MECHANISMS, credentials)?;
        }
        Ok(conn)
    }

    /// MAIL, RCPT, DATA and the data with its terminator in one write; the relay's final answer.
    fn transfer(
        &self,
        from: lettre::Address,
        to: lettre::Address,
        message: &[u8],
    ) -> Result<lettre::transport::smtp::response::Response, SmtpError> {
        use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
        use lettre::transport::smtp::extension::{MailBodyParameter, MailParameter};
        let mut conn = self.connect()?;
        let body = if message.is_ascii() {
            vec![]
        } else {
            vec![MailParameter::Body(MailBodyParameter::EightBitMime)]
        };
        let sent = (|| {
            conn.command(Mail::new(Some(from), body))?;
            conn.command(Rcpt::new(to, vec![]))?;
            conn.command(Data)?;
            match std::str::from_utf8(message) {
                Ok(text) => conn.command(DataBlock(text)),
                // Not text (never so for a sealed message): lettre's own writes.
                Err(_) => conn.message(message.strip_suffix(b"\r\n").unwrap_or(message)),
            }
        })();
        match &sent {
            Ok(_) => {
                let _ = conn.quit();
            }
            // Refused with a reply: QUIT, as the relay still answers.
            Err(e) if e.is_permanent() || e.is_transient() => conn.abort(),
            // Silent or gone: closed without a QUIT that would wait out the timeout again.
            Err(_) => drop(conn),
        }
        sent
    }
}

type SmtpError = lettre::transport::smtp::Error;

/// A message's data as SMTP sends it after DATA (RFC 5321 4.5.2): a line that starts with a dot
/// gets one more, the last line ends with CRLF, and a line with a single dot ends it.
struct DataBlock<'a>(&'a str);

impl std::fmt::Display for DataBlock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in self.0.split_inclusive("\r\n") {
            if line.starts_with('.') {
                f.write_str(".")?;
            }
            f.write_str(line)?;
        }
        if !self.0.is_empty() && !self.0.ends_with("\r\n") {
            f.write_str("\r\n")?;
        }
        f.write_str(".\r\n")
    }
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
        let bad = |e: String| sealed_mail::Error::Delivery(e);
        let address = |a: &cerdb::EmailAddress| -> Result<lettre::Address, sealed_mail::Error> {
            a.as_str().parse().map_err(|e: lettre::address::AddressError| bad(e.to_string()))
        };
        let response = self.transfer(address(from)?, address(to)?, message).map_err(|e| {
            // An SMTP reply refused this message; anything else (connection, TLS, timeout, a
            // garbled answer) is the relay itself, and a bulk request tries no further message.
            if e.is_permanent() || e.is_transient() {
                bad(e.to_string())
            } else if timed_out(&e) {
                sealed_mail::Error::RelayUnreachable(format!(
                    "no answer within {} s ([mail.relay] timeout_secs)",
                    self.timeout_secs
                ))
            } else {
                sealed_mail::Error::RelayUnreachable(e.to_string())
            }
        })?;
        let lines: Vec<&str> = response.message().collect();
        Ok(queue_id(&lines))
    }
}

/// Whether the relay did not answer in time: a socket timeout shows as `TimedOut`, or on Linux as
/// `WouldBlock` ("Resource temporarily unavailable"), which lettre's own `is_timeout` misses.
fn timed_out(e: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock);
        }
        source = err.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_read_from_postfix_answers() {
        assert_eq!(queue_id(&["2.0.0 Ok: queued as 4XyzAbC"]), "4XyzAbC");
        assert_eq!(queue_id(&["Ok"]), "Ok");
    }

    #[test]
    fn data_is_dot_stuffed_and_terminated_once() {
        let block = |t: &str| DataBlock(t).to_string();
        assert_eq!(block("a\r\nb\r\n"), "a\r\nb\r\n.\r\n");
        assert_eq!(block(".a\r\n..b\r\nc.\r\n.\r\n"), "..a\r\n...b\r\nc.\r\n..\r\n.\r\n");
        assert_eq!(block("no end"), "no end\r\n.\r\n");
        assert_eq!(block(""), ".\r\n");
        // A dot after a bare LF is no line start in SMTP's CRLF terms, as lettre's own codec.
        assert_eq!(block("a\n.b\r\n"), "a\n.b\r\n.\r\n");
    }

    #[test]
    fn relay_settings_read_from_toml() {
        let s: RelaySettings =
            toml::from_str("host = \"127.0.0.1\"\nport = 2525\ntls = \"none\"").expect("toml");
        assert_eq!((s.port, s.tls), (2525, RelayTls::None));
        let s: RelaySettings = toml::from_str("host = \"smtp.example\"\ntls = \"tls\"").expect("toml");
        assert_eq!(s.tls, RelayTls::Implicit);
        assert!(toml::from_str::<RelaySettings>("host = \"x\"\ntls = \"ssl\"").is_err());
        assert!(toml::from_str::<RelaySettings>("host = \"x\"\nextra = 1").is_err());
    }
}
