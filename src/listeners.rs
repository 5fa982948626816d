//! Every address `pki serve` listens on, bound before key custody is opened or a CA made: an
//! address that is taken, malformed or not this machine's stops the command with one line, and a
//! first start then leaves nothing behind. Connections that arrive while the CA opens wait in
//! the kernel's queue and are served when the server runs.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use crate::serve::Service;
use crate::settings::Settings;

/// Pending connections the kernel keeps per listener (actix-web's own default for the addresses
/// it binds).
const BACKLOG: i32 = 1024;

/// The listeners of one `pki serve`.
#[derive(Debug)]
pub struct Listeners {
    /// `--listen` (or `[server] listen`): plain HTTP, one listener per address the name resolves to.
    pub http: Vec<TcpListener>,
    /// `[server.tls] listen` (or `--tls-listen`).
    pub https: Vec<TcpListener>,
    /// `[metrics] listen`.
    pub metrics: Vec<TcpListener>,
    /// `[ldap] listen` and `tls_listen`, when LDAP is served.
    pub ldap: Option<ldap_directory::Bound>,
    /// `[acme.smtp] listen`, when ACME is served.
    pub acme_smtp: Option<acme::smtp::SmtpListener>,
}

/// Binds every listener `settings` asks of `services`, `listen` being the main HTTP address.
pub fn bind_all(
    settings: &Settings,
    listen: &str,
    services: &[Service],
    ldap_on: bool,
) -> anyhow::Result<Listeners> {
    let http = bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let https = match &settings.server.tls.listen {
        Some(addr) => bind(addr).map_err(|e| anyhow::anyhow!("cannot listen with HTTPS on {addr}: {e}"))?,
        None => Vec::new(),
    };
    let metrics = match &settings.metrics.listen {
        Some(addr) => bind(addr).map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?,
        None => Vec::new(),
    };
    let ldap = if ldap_on { Some(ldap_directory::bind(&settings.ldap)?) } else { None };
    let acme_smtp = if services.contains(&Service::Acme) {
        acme::smtp::bind(&settings.acme).map_err(anyhow::Error::msg)?
    } else {
        None
    };
    Ok(Listeners { http, https, metrics, ldap, acme_smtp })
}

/// A listener on every address `addr` resolves to, as actix-web's own `bind` makes them
/// (`SO_REUSEADDR`, a backlog of [`BACKLOG`]): enough that one of them can be had.
fn bind(addr: &str) -> io::Result<Vec<TcpListener>> {
    let mut bound = Vec::new();
    let mut last_error = None;
    for a in addr.to_socket_addrs()? {
        match bind_one(a) {
            Ok(l) => bound.push(l),
            Err(e) => last_error = Some(e),
        }
    }
    match (bound.is_empty(), last_error) {
        (false, _) => Ok(bound),
        (true, Some(e)) => Err(e),
        (true, None) => Err(io::Error::other("the name resolves to no address")),
    }
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_a_malformed_address_and_a_foreign_one_are_refused() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = bind(&addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(bind("garbage").is_err());
        assert!(bind("999.1.1.1:80").is_err());
        assert!(bind("127.0.0.1:99999").is_err());
        // 192.0.2.0/24 (TEST-NET-1) is no address of this machine.
        assert_eq!(bind("192.0.2.1:8080").unwrap_err().kind(), io::ErrorKind::AddrNotAvailable);
    }

    #[test]
    fn every_address_a_name_resolves_to_is_bound() {
        let bound = bind("127.0.0.1:0").unwrap();
        assert_eq!(bound.len(), 1);
        let port = bound[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        // It listens already: a client connects before anything accepts.
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }
}
