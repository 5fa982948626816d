//! `[mail.relay]`: the SMTP relay mail leaves through (mailbox validation values, ACME
//! challenges, sealed mail's `"deliver": true`), with lettre: plain SMTP on a trusted network,
//! STARTTLS, or implicit TLS, and optional authentication.

use lettre::transport::smtp::client::SmtpConnection;
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
    /// PEM file of the certificates the relay's TLS certificate must chain to (the bank's own
    /// CA, say); unset: the system's trusted roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// How many connections a bulk request hands its messages over at once (default 4, 1 to 32).
    pub connections: usize,
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
            ca_file: None,
            connections: 4,
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
        relay.session().transfer(from, to, &msg.formatted()).map_err(|e| {
            let (host, port) = (&relay.host, relay.port);
            match e {
                e @ (Failure::Login(_) | Failure::NoLogin(_)) => anyhow::anyhow!(
                    "the mail relay {host}:{port} refused the login ([mail.relay] username, password_file): {e}"
                ),
                e if e.timed_out() => anyhow::anyhow!(
                    "the mail relay {host}:{port} did not answer within {} s ([mail.relay] timeout_secs)",
                    relay.timeout_secs
                ),
                e => anyhow::anyhow!("the mail relay {host}:{port} refused or failed: {e}"),
            }
        })?;
        Ok(())
    }
}

/// The relay, reached as lettre's `SmtpTransport` reaches it: sealed mail's delivery, and the
/// CA's own mail ([`RelaySettings::send`]).
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
    /// The TLS client's settings (trust anchors from `ca_file`), when `tls` is not `none`.
    tls_parameters: Option<lettre::transport::smtp::client::TlsParameters>,
    credentials: Option<lettre::transport::smtp::authentication::Credentials>,
    timeout_secs: u64,
    /// `[mail.relay] connections`.
    connections: usize,
    hello: lettre::transport::smtp::extension::ClientId,
    /// Connections left open by sessions that ended, the most recent last, for the next session
    /// (a single message's, mostly): no new TCP connection, TLS handshake and login for each.
    idle: std::sync::Mutex<Vec<Idle>>,
}

/// A connection kept open between sessions, and since when.
struct Idle {
    conn: SmtpConnection,
    since: std::time::Instant,
}

/// How long an idle connection is kept: well within the idle timeouts of relays (Postfix's
/// `smtpd_timeout` is 300 s, 10 s under stress; a connection the relay closed meanwhile is found
/// at its first MAIL and replaced).
const MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// At most this many connections are kept idle (at least `connections`, so that a bulk request
/// finds all its connections open).
const MAX_IDLE_CONNECTIONS: usize = 8;

/// The delivery of `[mail.relay]`, for sealed mail.
pub fn delivery(s: &RelaySettings) -> anyhow::Result<std::sync::Arc<dyn sealed_mail::Delivery>> {
    Ok(std::sync::Arc::new(RelayDelivery::of(s)?))
}

/// The TLS client's settings for `host`: the certificates of `[mail.relay] ca_file` as the only
/// trust anchors when it is set, else the system's roots.
fn tls_parameters(
    s: &RelaySettings,
    host: &str,
) -> anyhow::Result<Option<lettre::transport::smtp::client::TlsParameters>> {
    use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
    if s.tls == RelayTls::None {
        return Ok(None);
    }
    let mut builder = TlsParameters::builder(host.to_string());
    if let Some(file) = &s.ca_file {
        let anchors = read_anchors(file)?;
        builder = builder.certificate_store(CertificateStore::None);
        for der in anchors {
            builder = builder.add_root_certificate(Certificate::from_der(der)?);
        }
    }
    Ok(Some(builder.build()?))
}

/// The certificates of a PEM file, each checked to be X.509; at least one.
fn read_anchors(file: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let what = "[mail.relay] ca_file";
    let bytes = crate::input::read_bounded(file, what, crate::input::MAX_DER_FILE)?;
    let blocks =
        pem::parse_many(&bytes).map_err(|e| anyhow::anyhow!("{what} {}: not PEM: {e}", file.display()))?;
    let mut anchors = Vec::new();
    for (i, block) in blocks.into_iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            anyhow::bail!("{what} {}: block {} is {}, not a CERTIFICATE", file.display(), i + 1, block.tag());
        }
        x509_parser::parse_x509_certificate(block.contents())
            .map_err(|e| anyhow::anyhow!("{what} {}: certificate {}: {e}", file.display(), i + 1))?;
        anchors.push(block.into_contents());
    }
    if anchors.is_empty() {
        anyhow::bail!("{what} {}: no PEM certificate in it", file.display());
    }
    Ok(anchors)
}

impl RelayDelivery {
    /// The relay `s` configures, its password and trust anchors read.
    fn of(s: &RelaySettings) -> anyhow::Result<RelayDelivery> {
        let Some(host) = &s.host else {
            anyhow::bail!("no mail relay: set [mail.relay] host (and port, tls) in pki.toml");
        };
        Ok(RelayDelivery {
            host: host.clone(),
            port: s.port,
            tls: s.tls,
            tls_parameters: tls_parameters(s, host)?,
            credentials: s.credentials()?,
            timeout_secs: s.timeout_secs,
            connections: s.connections,
            hello: lettre::transport::smtp::extension::ClientId::default(),
            idle: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A session on the most recently idle connection, or on one opened for its first message.
    fn session(&self) -> RelaySession<'_> {
        RelaySession { relay: self, conn: self.take_idle() }
    }

    /// The most recently idle connection younger than [`MAX_IDLE`]. Older ones are closed without
    /// a QUIT: the relay may have closed them already, or stopped answering.
    fn take_idle(&self) -> Option<SmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = idle.iter().take_while(|i| i.since.elapsed() >= MAX_IDLE).count();
        idle.drain(..stale);
        idle.pop().map(|i| i.conn)
    }

    /// Keeps `conn` for the next session, or closes it (QUIT, its answer awaited at most
    /// [`QUIT_WAIT`]) when enough are kept.
    fn keep_idle(&self, mut conn: SmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE_CONNECTIONS.max(self.connections) {
            idle.push(Idle { conn, since: std::time::Instant::now() });
        } else {
            drop(idle);
            let _ = conn.set_timeout(Some(QUIT_WAIT));
            let _ = conn.quit();
        }
    }

    /// A connection to the relay: TLS from the first byte or by STARTTLS as configured, and
    /// logged in when credentials are set.
    fn connect(&self) -> Result<SmtpConnection, Failure> {
        let timeout = Some(std::time::Duration::from_secs(self.timeout_secs));
        let implicit = match self.tls {
            RelayTls::Implicit => self.tls_parameters.as_ref(),
            _ => None,
        };
        let mut conn =
            SmtpConnection::connect((self.host.as_str(), self.port), timeout, &self.hello, implicit, None)
                .map_err(Failure::Connect)?;
        if let (RelayTls::Starttls, Some(tls)) = (self.tls, &self.tls_parameters) {
            conn.starttls(tls, &self.hello).map_err(Failure::Connect)?;
        }
        if let Some(credentials) = &self.credentials {
            use lettre::transport::smtp::authentication::DEFAULT_MECHANISMS;
            if conn.server_info().get_auth_mechanism(DEFAULT_MECHANISMS).is_none() {
                conn.abort();
                return Err(Failure::NoLogin(self.tls));
            }
            conn.auth(DEFAULT_MECHANISMS, credentials).map_err(Failure::Login)?;
        }
        Ok(conn)
    }
}

/// Why a message did not reach the relay.
#[derive(Debug)]
enum Failure {
    /// Connecting, TLS or the greeting failed: the relay is not usable now.
    Connect(SmtpError),
    /// The relay refused the login.
    Login(SmtpError),
    /// The relay offers no login pki can use (AUTH PLAIN or LOGIN), on a connection with the
    /// given TLS: relays offer none before TLS.
    NoLogin(RelayTls),
    /// The message's transfer failed: refused with a reply, or the connection lost or silent.
    Transfer(SmtpError),
}

impl Failure {
    /// The relay answered with a reply that refuses (4xx or 5xx).
    fn answered(&self) -> bool {
        self.smtp().is_some_and(|e| e.is_permanent() || e.is_transient())
    }

    /// Whether the relay did not answer in time.
    fn timed_out(&self) -> bool {
        self.smtp().is_some_and(timed_out)
    }

    fn smtp(&self) -> Option<&SmtpError> {
        match self {
            Failure::Connect(e) | Failure::Login(e) | Failure::Transfer(e) => Some(e),
            Failure::NoLogin(_) => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) | Failure::Login(e) | Failure::Transfer(e) => e.fmt(f),
            Failure::NoLogin(RelayTls::None) => f.write_str(
                "it offers no AUTH PLAIN or LOGIN without TLS: set [mail.relay] tls = \"starttls\" or \"tls\"",
            ),
            Failure::NoLogin(_) => f.write_str("it offers no AUTH PLAIN or LOGIN"),
        }
    }
}

/// Messages handed to the relay one after another on one connection: an idle one or one opened
/// for the first message, kept while the relay serves, and left idle for the next session when
/// this one ends. The CA's own mail ([`RelaySettings::send`]) has a relay of its own for each
/// message, whose connection is closed with QUIT when it is dropped.
struct RelaySession<'a> {
    relay: &'a RelayDelivery,
    conn: Option<SmtpConnection>,
}

impl RelaySession<'_> {
    /// MAIL, RCPT, DATA and the data with its terminator in one write; the relay's final answer.
    /// After a refusal the transaction is reset (RSET) and the connection kept; after a network
    /// error or timeout it is closed without a QUIT, which would wait out the timeout again.
    fn transfer(
        &mut self,
        from: lettre::Address,
        to: lettre::Address,
        message: &[u8],
    ) -> Result<lettre::transport::smtp::response::Response, Failure> {
        use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
        use lettre::transport::smtp::extension::{MailBodyParameter, MailParameter};
        let body = if message.is_ascii() {
            vec![]
        } else {
            vec![MailParameter::Body(MailBodyParameter::EightBitMime)]
        };
        let mail = Mail::new(Some(from), body);
        let sent = self.mail(&mail).and_then(|conn| {
            let rest = || -> Result<_, SmtpError> {
                conn.command(Rcpt::new(to, vec![]))?;
                conn.command(Data)?;
                match std::str::from_utf8(message) {
                    Ok(text) => conn.command(DataBlock(text)),
                    // Not text (never so for a sealed message): lettre's own writes.
                    Err(_) => conn.message(message.strip_suffix(b"\r\n").unwrap_or(message)),
                }
            };
            rest().map_err(Failure::Transfer)
        });
        if let Err(e) = &sent {
            let kept = e.answered() && self.conn.as_mut().is_some_and(|c| c.command(Rset).is_ok());
            if !kept {
                self.conn = None;
            }
        }
        sent
    }

    /// The connection, with MAIL accepted on it. A connection that carried the last message may
    /// have been closed by the relay since (an idle timeout, a limit of messages a connection):
    /// unless it refused MAIL for good (5xx), the message is tried once on a new connection, as
    /// nothing of it went yet.
    fn mail(
        &mut self,
        mail: &lettre::transport::smtp::commands::Mail,
    ) -> Result<&mut SmtpConnection, Failure> {
        if let Some(mut conn) = self.conn.take() {
            match conn.command(mail) {
                Ok(_) => return Ok(self.conn.insert(conn)),
                Err(e) if e.is_permanent() => {
                    self.conn = Some(conn);
                    return Err(Failure::Transfer(e));
                }
                // Gone or not serving now: closed without waiting for it.
                Err(_) => drop(conn),
            }
        }
        let mut conn = self.relay.connect()?;
        let accepted = conn.command(mail);
        let conn = self.conn.insert(conn);
        accepted.map(|_| conn).map_err(Failure::Transfer)
    }
}

/// How long a QUIT waits for its answer when pki closes a connection it no longer needs (the idle
/// ones when the relay is dropped at the end of `pki serve`, one more than are kept): a relay
/// that stopped answering must not hold up a shutdown or an answer for `timeout_secs`.
const QUIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Idle connections are closed with QUIT when the relay is dropped, each waiting at most
/// [`QUIT_WAIT`] for its answer.
impl Drop for RelayDelivery {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
        for mut i in idle {
            let _ = i.conn.set_timeout(Some(QUIT_WAIT));
            let _ = i.conn.quit();
        }
    }
}

impl Drop for RelaySession<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.relay.keep_idle(conn);
        }
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
    fn session(&self) -> Box<dyn sealed_mail::DeliverySession + '_> {
        Box::new(RelayDelivery::session(self))
    }

    fn connections(&self) -> usize {
        self.connections
    }
}

impl sealed_mail::DeliverySession for RelaySession<'_> {
    fn deliver(
        &mut self,
        from: &cerdb::EmailAddress,
        to: &cerdb::EmailAddress,
        message: &[u8],
    ) -> Result<String, sealed_mail::Error> {
        let bad = |e: String| sealed_mail::Error::Delivery(e);
        let address = |a: &cerdb::EmailAddress| -> Result<lettre::Address, sealed_mail::Error> {
            a.as_str().parse().map_err(|e: lettre::address::AddressError| bad(e.to_string()))
        };
        let timeout_secs = self.relay.timeout_secs;
        let response = self.transfer(address(from)?, address(to)?, message).map_err(|e| match e {
            Failure::Login(_) | Failure::NoLogin(_) => sealed_mail::Error::RelayLogin(e.to_string()),
            // An SMTP reply refused this message; anything else (connection, TLS, timeout, a
            // garbled answer) is the relay itself, and a bulk request tries no further message.
            Failure::Transfer(e) if e.is_permanent() || e.is_transient() => bad(e.to_string()),
            e if e.timed_out() => sealed_mail::Error::RelayUnreachable(format!(
                "no answer within {timeout_secs} s ([mail.relay] timeout_secs)"
            )),
            e => sealed_mail::Error::RelayUnreachable(e.to_string()),
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
    fn trust_anchors_are_pem_certificates_and_garbage_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["relay.bank.example".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let two = format!("{}{}", cert.pem(), cert.pem());
        assert_eq!(read_anchors(&file("two.pem", two.as_bytes())).expect("two").len(), 2);

        let err = |name: &str, bytes: &[u8]| format!("{:#}", read_anchors(&file(name, bytes)).unwrap_err());
        assert!(err("empty.pem", b"").contains("no PEM certificate in it"), "{}", err("empty.pem", b""));
        assert!(err("garbage.pem", b"\x00\xff garbage").contains("no PEM certificate"));
        let pem = cert.pem();
        let cut = err("cut.pem", &pem.as_bytes()[..pem.len() / 2]);
        assert!(cut.contains("no PEM certificate") || cut.contains("not PEM"), "{cut}");
        let e = err("key.pem", key.serialize_pem().as_bytes());
        assert!(e.contains("block 1 is PRIVATE KEY, not a CERTIFICATE"), "{e}");
        let e = err("bad.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        assert!(e.contains("certificate 1:"), "{e}");
        let e = err("big.pem", &vec![b'A'; crate::input::MAX_DER_FILE + 1]);
        assert!(e.contains("[mail.relay] ca_file"), "{e}");
        let e = format!("{:#}", read_anchors(&dir.path().join("missing.pem")).unwrap_err());
        assert!(e.contains("[mail.relay] ca_file") && e.contains("missing.pem"), "{e}");
    }

    /// A relay that takes a message and then stops answering: the connection left idle gets its
    /// QUIT when the relay is dropped, and the drop waits about [`QUIT_WAIT`] for the answer, not
    /// `timeout_secs`.
    #[test]
    fn a_silent_relay_does_not_hold_up_the_drop_of_its_idle_connections() {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Left running when the test ends: it holds its connection open, silent, for 10 s.
        std::thread::spawn(move || {
            let (c, _) = listener.accept().expect("accept");
            let mut w = c.try_clone().expect("clone");
            w.write_all(b"220 relay\r\n").expect("greet");
            let mut lines = std::io::BufReader::new(c).lines();
            while let Some(Ok(line)) = lines.next() {
                let reply: &[u8] = match line.get(..4).unwrap_or("") {
                    "QUIT" => {
                        // Silent from here on, the connection held open.
                        std::thread::sleep(std::time::Duration::from_secs(10));
                        return;
                    }
                    "DATA" => b"354 go on\r\n",
                    _ if line == "." => b"250 2.0.0 Ok: queued as Q1\r\n",
                    "EHLO" | "MAIL" | "RCPT" => b"250 ok\r\n",
                    _ => continue,
                };
                w.write_all(reply).expect("reply");
            }
        });
        let settings = RelaySettings {
            host: Some("127.0.0.1".into()),
            port,
            timeout_secs: 30,
            ..RelaySettings::default()
        };
        let relay = RelayDelivery::of(&settings).expect("relay");
        let address = |a: &str| a.parse::<lettre::Address>().expect("address");
        let sent = relay.session().transfer(
            address("a@bank.example"),
            address("b@example.com"),
            b"Subject: x\r\n\r\nx\r\n",
        );
        assert!(sent.is_ok(), "{:?}", sent.err().map(|e| e.to_string()));
        let started = std::time::Instant::now();
        drop(relay);
        let took = started.elapsed();
        assert!(took >= QUIT_WAIT && took < QUIT_WAIT * 3, "the drop took {took:?}");
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
