//! The listeners: `actix-server` services (one per worker thread, on the actix/tokio runtime of
//! `pki serve`) reading LDAP messages with `ldap3_proto`'s codec, over TCP or TLS.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix_service::fn_service;
use bytes::BytesMut;
use ldap3_proto::proto::LdapResultCode;
use ldap3_proto::LdapCodec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder};

use crate::session::{notice_of_disconnection, Flow, Session};
use crate::{Error, LdapDirectory};

/// One open listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// `ldap` or `ldaps`.
    pub scheme: &'static str,
    /// The address bound.
    pub addr: SocketAddr,
}

/// Bytes read from the socket at a time (at most).
const READ_CHUNK: usize = 16 * 1024;

/// The listeners `[ldap]` configures, bound: made before the CA is opened, so that an address
/// that cannot be had stops `pki serve` before it creates anything.
#[derive(Debug, Default)]
pub struct Bound {
    plain: Option<(std::net::TcpListener, String)>,
    tls: Option<(std::net::TcpListener, String)>,
}

/// Binds `[ldap] listen` and `tls_listen`, those set.
pub fn bind(config: &crate::LdapConfig) -> Result<Bound, Error> {
    let bind = |addr: &String| {
        std::net::TcpListener::bind(addr)
            .map(|l| (l, addr.clone()))
            .map_err(|error| Error::Listen { addr: addr.clone(), error })
    };
    Ok(Bound {
        plain: config.listen.as_ref().map(bind).transpose()?,
        tls: config.tls_listen.as_ref().map(bind).transpose()?,
    })
}

/// Binds the listeners `[ldap]` configures and builds the server ([`server_on`]).
pub fn server(
    st: Arc<LdapDirectory>,
    tls: Option<Arc<rustls::ServerConfig>>,
    workers: usize,
) -> Result<(actix_server::Server, Vec<Listening>), Error> {
    let bound = bind(&st.config)?;
    server_on(st, bound, tls, workers)
}

/// Builds the server on the listeners `bound` (`tls` is the LDAPS server configuration, required
/// when `tls_listen` is set), with `workers` threads. Call inside the actix system; await the
/// server (or spawn it) to serve.
pub fn server_on(
    st: Arc<LdapDirectory>,
    bound: Bound,
    tls: Option<Arc<rustls::ServerConfig>>,
    workers: usize,
) -> Result<(actix_server::Server, Vec<Listening>), Error> {
    let mut builder = actix_server::Server::build()
        .workers(workers.max(1))
        .disable_signals()
        .shutdown_timeout(5)
        .max_concurrent_connections(st.config.max_connections);
    let mut listening = Vec::new();
    let local = |l: &std::net::TcpListener, addr: &String| {
        l.local_addr().map_err(|error| Error::Listen { addr: addr.clone(), error })
    };
    if let Some((l, addr)) = bound.plain {
        let local = local(&l, &addr)?;
        let state = st.clone();
        builder = builder
            .listen("ldap", l, move || {
                let state = state.clone();
                fn_service(move |stream: TcpStream| {
                    let state = state.clone();
                    async move {
                        let peer = peer_ip(&stream);
                        let _ = stream.set_nodelay(true);
                        let mut stream = stream;
                        serve_stream(&state, &mut stream, peer).await;
                        Ok::<(), ()>(())
                    }
                })
            })
            .map_err(|error| Error::Listen { addr, error })?;
        listening.push(Listening { scheme: "ldap", addr: local });
    }
    if let Some((l, addr)) = bound.tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.ok_or(Error::NoTlsCertificate)?);
        let local = local(&l, &addr)?;
        let state = st.clone();
        builder = builder
            .listen("ldaps", l, move || {
                let (state, acceptor) = (state.clone(), acceptor.clone());
                fn_service(move |stream: TcpStream| {
                    let (state, acceptor) = (state.clone(), acceptor.clone());
                    async move {
                        let peer = peer_ip(&stream);
                        let _ = stream.set_nodelay(true);
                        let idle = Duration::from_secs(state.config.idle_timeout_secs);
                        match timeout(idle, acceptor.accept(stream)).await {
                            Ok(Ok(mut tls)) => serve_stream(&state, &mut tls, peer).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "LDAPS handshake failed"),
                            Err(_) => tracing::debug!("LDAPS handshake timed out"),
                        }
                        Ok::<(), ()>(())
                    }
                })
            })
            .map_err(|error| Error::Listen { addr, error })?;
        listening.push(Listening { scheme: "ldaps", addr: local });
    }
    Ok((builder.run(), listening))
}

fn peer_ip(stream: &TcpStream) -> IpAddr {
    stream.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Serves one connection until the client unbinds or closes, sends something that is not a
/// well-formed LDAP request within the size limit (notice of disconnection, then close), sends a
/// request whose handler panics (the same, with `other`), or stays silent for the idle timeout.
pub(crate) async fn serve_stream<S>(st: &LdapDirectory, io: &mut S, peer: IpAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let idle = Duration::from_secs(st.config.idle_timeout_secs);
    let mut codec = LdapCodec::new(Some(st.config.max_message_bytes), None);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf = BytesMut::new();
    let mut session = Session::new(peer);
    let mut replies = Vec::new();
    loop {
        let close = answer_buffered(st, &mut session, &mut codec, &mut rbuf, &mut replies, &mut wbuf);
        if !wbuf.is_empty() {
            let written = timeout(idle, async {
                io.write_all(&wbuf).await?;
                io.flush().await
            })
            .await;
            if !matches!(written, Ok(Ok(()))) {
                return;
            }
            wbuf.clear();
        }
        if close {
            let _ = timeout(Duration::from_secs(1), io.shutdown()).await;
            return;
        }
        rbuf.reserve(READ_CHUNK);
        match timeout(idle, io.read_buf(&mut rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                let notice = notice_of_disconnection(LdapResultCode::Unavailable, "idle timeout");
                if codec.encode(notice, &mut wbuf).is_ok() {
                    let _ = timeout(Duration::from_secs(1), io.write_all(&wbuf)).await;
                }
                return;
            }
        }
    }
}

/// Answers every complete message in `rbuf` into `wbuf`; whether to close the connection.
pub(crate) fn answer_buffered(
    st: &LdapDirectory,
    session: &mut Session,
    codec: &mut LdapCodec,
    rbuf: &mut BytesMut,
    replies: &mut Vec<ldap3_proto::LdapMsg>,
    wbuf: &mut BytesMut,
) -> bool {
    let mut close = false;
    while !close {
        match codec.decode(rbuf) {
            Ok(Some(msg)) => {
                // A bug in a handler closes this connection with a notice, as a malformed message
                // does, instead of ending its task without a word to the client.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    session.handle(st, msg, replies)
                })) {
                    Ok(flow) => close = flow == Flow::Close,
                    Err(_) => {
                        tracing::error!("an LDAP request handler panicked; the connection is closed");
                        replies.clear();
                        replies.push(notice_of_disconnection(LdapResultCode::Other, "internal error"));
                        close = true;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                let why = if e.kind() == io::ErrorKind::OutOfMemory {
                    format!("a message over {} bytes", st.config.max_message_bytes)
                } else {
                    "malformed LDAP message".to_string()
                };
                tracing::debug!(reason = %why, "LDAP connection closed with a notice of disconnection");
                replies.push(notice_of_disconnection(LdapResultCode::ProtocolError, &why));
                close = true;
            }
        }
        for m in replies.drain(..) {
            if codec.encode(m, wbuf).is_err() {
                close = true;
            }
        }
    }
    close
}
