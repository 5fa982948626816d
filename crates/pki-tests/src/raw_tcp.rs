//! Raw TCP for the tests that play badly behaved clients (a head and no body, bodies sent
//! slowly) or come from another loopback address than 127.0.0.1: what the HTTP client of
//! [`crate::http_client`] never does on purpose.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Another source address on loopback (Linux routes all of 127.0.0.0/8 to `lo`).
pub const OTHER_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A connection to `127.0.0.1:port` whose source address is `from`.
pub fn connect_from(from: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(from, 0).into())?;
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(sock.into())
}

/// Raises this process' soft limit on open files to at least `want` (up to the hard limit); the
/// limit in force afterwards.
pub fn raise_open_files(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    let soft = l.current.unwrap_or(u64::MAX);
    if soft >= want {
        return soft;
    }
    let target = want.min(l.maximum.unwrap_or(u64::MAX));
    match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: l.maximum }) {
        Ok(()) => target,
        Err(_) => soft,
    }
}

/// One answer read to the end of the connection.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// The status code.
    pub status: u16,
    /// Header fields, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as sent (not de-chunked).
    pub body: Vec<u8>,
}

impl RawReply {
    /// Parses what a server sent before closing; `None` if it is not an HTTP/1.1 answer.
    pub fn parse(bytes: &[u8]) -> Option<RawReply> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(RawReply { status, headers, body: bytes[end + 4..].to_vec() })
    }

    /// The first value of a header field.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) from `from` and reads the
/// answer to the end.
pub fn exchange_from(from: IpAddr, port: u16, request: &[u8]) -> std::io::Result<RawReply> {
    let mut s = connect_from(from, port)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    RawReply::parse(&out).ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// A POST to `127.0.0.1:port` that declares `declared` body bytes, sends only `sent`, then
/// stops sending (half-closes), as a client that crashed mid-request would; the answer read to
/// the end.
pub fn cut_short(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    sent: &[u8],
    declared: usize,
) -> std::io::Result<RawReply> {
    assert!(sent.len() < declared, "a body cut short sends less than it declares");
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {declared}\r\n\r\n"));
    s.write_all(head.as_bytes())?;
    s.write_all(sent)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    RawReply::parse(&out).ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// A loopback port that accepts every connection and never writes a byte, holding the
/// connections open for the rest of the test process: a server that hangs (a relay, say).
pub fn silent_port() -> u16 {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = silent.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    port
}
