//! `[acme.smtp] listen`: the CA's own SMTP listener for challenge replies.
//!
//! Why a listener rather than a mailbox the CA reads: the organisation's MTA routes the challenge
//! address to it (a transport map entry), replies arrive the moment they are sent with nothing
//! to poll, and no mailbox password sits in the CA's configuration. It speaks the receiving half
//! of SMTP (RFC 5321) only: EHLO/HELO, MAIL, RCPT (the challenge address only), DATA (at most
//! [`crate::reply::MAX_REPLY_BYTES`]), RSET, NOOP, QUIT, in RFC 5321's order (4.1.4: a command
//! out of it is a 503); lines of at most 1,000 bytes; one minute per command, ten per session;
//! the session closed after 20 refused commands. Every message accepted is checked by
//! [`Acme::process_reply`]; a message that is garbage or too large is dropped and logged, never
//! bounced. The client's address goes with the message: only a configured trusted relay's own
//! `Authentication-Results` count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use mail_auth::MessageAuthenticator;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::reply::MAX_REPLY_BYTES;
use crate::Acme;

const LINE_MAX: usize = 1000;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// A session's whole time: a challenge reply takes seconds; a client dripping lines under the
/// command timeout does not hold a connection for ever.
const SESSION_TIMEOUT: Duration = Duration::from_secs(600);
/// Refused commands after which a session is closed (Postfix's `smtpd_hard_error_limit`).
const MAX_ERRORS: usize = 20;

/// A DKIM verifier that asks only the DNS server at `dns`.
pub fn authenticator(dns: SocketAddr) -> Result<MessageAuthenticator, String> {
    let group = NameServerConfigGroup::from_ips_clear(&[dns.ip()], dns.port(), true);
    let config = ResolverConfig::from_parts(None, vec![], group);
    let mut opts = ResolverOpts::default();
    opts.attempts = 2;
    opts.timeout = Duration::from_secs(5);
    MessageAuthenticator::new(config, opts).map_err(|e| format!("the DNS resolver {dns}: {e}"))
}

/// `[acme.smtp] listen`, bound, with the DNS server its DKIM checks ask: made before the CA is
/// opened, so that an address that cannot be had stops `pki serve` before it creates anything.
#[derive(Debug)]
pub struct SmtpListener {
    listener: std::net::TcpListener,
    dns: SocketAddr,
}

/// Binds `[acme.smtp] listen` when it and `[acme] dns_resolver` are set (the listener needs both).
pub fn bind(cfg: &crate::AcmeConfig) -> Result<Option<SmtpListener>, String> {
    let (Some(listen), Some(dns)) = (&cfg.smtp.listen, &cfg.dns_resolver) else {
        return Ok(None);
    };
    let dns =
        dns.parse().map_err(|_| format!("[acme] dns_resolver = {dns:?}: expected an IP address and port"))?;
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| format!("cannot listen for SMTP on {listen}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(Some(SmtpListener { listener, dns }))
}

/// Serves `bound` on a thread of its own; the address it listens on.
pub fn spawn(acme: Arc<Acme>, bound: SmtpListener) -> Result<SocketAddr, String> {
    let SmtpListener { listener: std_listener, dns } = bound;
    let addr = std_listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("acme-smtp".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "the ACME SMTP listener cannot start");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let dkim = match authenticator(dns) {
                    Ok(d) => Arc::new(d),
                    Err(e) => {
                        tracing::error!(error = %e, "the ACME SMTP listener cannot start");
                        return;
                    }
                };
                let Ok(listener) = TcpListener::from_std(std_listener) else { return };
                loop {
                    let Ok((sock, peer)) = listener.accept().await else { continue };
                    let (acme, dkim) = (acme.clone(), dkim.clone());
                    tokio::task::spawn_local(async move {
                        if let Err(e) = session(sock, peer.ip(), &acme, &dkim).await {
                            tracing::debug!(error = %e, "ACME SMTP session ended");
                        }
                    });
                }
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(addr)
}

/// Reads one line (without CRLF); `None` at the end of the connection; an error for a line too long
/// or a silent client.
async fn line(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let n = tokio::time::timeout(
        COMMAND_TIMEOUT,
        (&mut *r).take(LINE_MAX as u64 + 2).read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no command within a minute"))??;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a line longer than 1000 bytes"));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(buf))
}

/// The address of `MAIL FROM:<a>` / `RCPT TO:<a>`.
fn path_of(arg: &str) -> String {
    let a = arg.trim();
    let a = a.split_once('<').map(|(_, r)| r).unwrap_or(a);
    a.split('>').next().unwrap_or("").trim().to_ascii_lowercase()
}

async fn session(
    sock: TcpStream,
    peer: std::net::IpAddr,
    acme: &Acme,
    dkim: &MessageAuthenticator,
) -> std::io::Result<()> {
    let (rd, mut wr) = sock.into_split();
    let result = match tokio::time::timeout(SESSION_TIMEOUT, converse(rd, &mut wr, peer, acme, dkim)).await {
        Ok(r) => r,
        Err(_) => {
            let _ = wr.write_all(b"421 session too long, closing\r\n").await;
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "session too long"));
        }
    };
    if let Err(e) = &result {
        if e.kind() == std::io::ErrorKind::InvalidData {
            let _ = wr.write_all(b"500 line too long\r\n").await;
        }
    }
    result
}

/// Where a session stands (RFC 5321 4.1.4: MAIL opens a transaction, RCPT needs it, DATA needs
/// a recipient; HELO, EHLO and RSET close it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    #[default]
    None,
    Mail,
    Recipient,
}

async fn converse(
    rd: tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    peer: std::net::IpAddr,
    acme: &Acme,
    dkim: &MessageAuthenticator,
) -> std::io::Result<()> {
    let mut rd = BufReader::new(rd);
    let challenge_to = acme.cfg.challenge_from.clone().unwrap_or_default().to_ascii_lowercase();
    wr.write_all(b"220 pki ESMTP ACME challenge replies\r\n").await?;
    let mut state = Transaction::None;
    let mut errors = 0;
    loop {
        let Some(l) = line(&mut rd).await? else { return Ok(()) };
        let text = String::from_utf8_lossy(&l).to_string();
        let (verb, arg) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        let reply: &[u8] = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                state = Transaction::None;
                b"250-pki\r\n250-SIZE 131072\r\n250 8BITMIME\r\n"
            }
            "HELO" => {
                state = Transaction::None;
                b"250 pki\r\n"
            }
            "MAIL" if state != Transaction::None => b"503 a transaction is open: RSET first\r\n",
            "MAIL" if strip_prefix_ignore_case(arg, "FROM:").is_none() => {
                b"501 syntax: MAIL FROM:<address>\r\n"
            }
            "MAIL" => {
                state = Transaction::Mail;
                b"250 ok\r\n"
            }
            "RCPT" if state == Transaction::None => b"503 MAIL first\r\n",
            "RCPT" => match strip_prefix_ignore_case(arg, "TO:") {
                None => b"501 syntax: RCPT TO:<address>\r\n",
                Some(to) if !challenge_to.is_empty() && path_of(to) == challenge_to => {
                    state = Transaction::Recipient;
                    b"250 ok\r\n"
                }
                Some(_) => b"550 no such mailbox here\r\n",
            },
            "DATA" if state != Transaction::Recipient => b"503 no recipient\r\n",
            "DATA" => {
                wr.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut msg: Vec<u8> = Vec::new();
                let mut too_big = false;
                loop {
                    let Some(l) = line(&mut rd).await? else { return Ok(()) };
                    if l == b"." {
                        break;
                    }
                    let l = if l.starts_with(b"..") { &l[1..] } else { &l[..] };
                    if msg.len() + l.len() + 2 > MAX_REPLY_BYTES {
                        too_big = true;
                        continue;
                    }
                    msg.extend_from_slice(l);
                    msg.extend_from_slice(b"\r\n");
                }
                state = Transaction::None;
                if too_big {
                    tracing::info!(reason = "more than the size limit", "ACME reply dropped");
                    b"552 message too large\r\n"
                } else {
                    acme.process_reply(&msg, peer, dkim).await;
                    b"250 accepted\r\n"
                }
            }
            "RSET" => {
                state = Transaction::None;
                b"250 ok\r\n"
            }
            "NOOP" => b"250 ok\r\n",
            "QUIT" => {
                wr.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        if reply.starts_with(b"5") && !reply.starts_with(b"552") {
            errors += 1;
            if errors >= MAX_ERRORS {
                wr.write_all(b"421 too many errors, closing\r\n").await?;
                return Ok(());
            }
        }
        wr.write_all(reply).await?;
    }
}

/// `text` after `prefix`, compared without regard to case (`MAIL from:`, `RCPT To:`).
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}
