//! `seal-bench URL API_KEY BODY_FILE EXPECT CONNECTIONS SECONDS [multipart]`: bench/seal.sh's
//! client for `POST /api/v1/mail/seal` and `/seal/bulk`. Each of CONNECTIONS threads posts
//! BODY_FILE on one keep-alive connection, again and again for SECONDS, and checks every answer:
//! HTTP 200 and, for a bulk request (EXPECT > 1), exactly EXPECT messages answered
//! `"status":200` (counted in the answer's bytes), or with `multipart` (`Accept:
//! multipart/mixed`) exactly EXPECT parts with `Pki-Status: 200`; a single answer (EXPECT = 1) is
//! the raw message, which must be enveloped S/MIME. Prints one line: `SEAL_RESULT requests=N duration_us=D bad=B p50_us=P p99_us=Q`;
//! exits non-zero when any answer failed its check.
//!
//! The client shares the two cores with the server, so it does as little as it can, as wrk does:
//! HTTP/1.1 written by hand on a plain TCP connection, the request (head and body) built once and
//! written with one call, the answer read with large reads into a buffer each thread keeps, its
//! head parsed by `httparse`, its body passed through a buffer of 256 KiB and searched as it
//! comes, while it is in cache (a bulk answer is 20 MB or more). It reads answers sized by
//! `Content-Length` (what `pki serve` and http-sink send); any other answer is a failed one.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The largest answer head read (status line and header fields).
const MAX_HEAD: usize = 16 << 10;

fn fail(msg: &str) -> ! {
    eprintln!("seal-bench: {msg}");
    std::process::exit(2);
}

/// `http://HOST:PORT/PATH` as (HOST:PORT, /PATH).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let slash = rest.find('/')?;
    Some((&rest[..slash], &rest[slash..]))
}

/// Each thread's read buffer: an answer's body passes through it in chunks of this size, so
/// the bytes the kernel copies in are still in cache when they are searched.
const CHUNK: usize = 256 << 10;

/// One answer: its status, how many times the searched bytes occur in its body (with `first`
/// set, 0 or 1: the search stops at the first), and the body's first bytes for a failure's
/// message.
struct Answer {
    status: u16,
    found: usize,
    start: Vec<u8>,
}

/// Reads one answer from `conn` through `buf` (CHUNK bytes, kept between answers), searching
/// its body for `finder`'s bytes as they come.
fn read_answer(
    conn: &mut TcpStream,
    buf: &mut [u8],
    finder: &memchr::memmem::Finder<'_>,
    first: bool,
) -> Result<Answer, String> {
    let mut filled = 0;
    let (head_len, status, length) = loop {
        if filled == MAX_HEAD {
            return Err(format!("no end of the answer's head in {MAX_HEAD} bytes"));
        }
        let n = conn.read(&mut buf[filled..MAX_HEAD]).map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = resp.code.unwrap_or(0);
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
                // `100 Continue` is never asked for (no `Expect` header), so never skipped here.
                break (head_len, status, length.ok_or("an answer without Content-Length")?);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("the answer's head: {e}")),
        }
    };
    if filled - head_len > length {
        return Err("bytes after the answer, which was not asked for".into());
    }
    buf.copy_within(head_len..filled, 0);
    let (mut have, mut left) = (filled - head_len, length - (filled - head_len));
    // A match across two chunks starts in the last `keep` bytes of the first, which begin the
    // next; they are too few to hold a whole match, so none is counted twice.
    let keep = finder.needle().len() - 1;
    let (mut found, mut start) = (0, Vec::new());
    loop {
        while left > 0 && have < buf.len() {
            let room = (buf.len() - have).min(left);
            let n = conn.read(&mut buf[have..have + room]).map_err(|e| format!("reading the answer: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection within an answer".into());
            }
            (have, left) = (have + n, left - n);
        }
        if start.is_empty() {
            start.extend_from_slice(&buf[..have.min(300)]);
        }
        if !(first && found > 0) {
            found += if first {
                usize::from(finder.find(&buf[..have]).is_some())
            } else {
                finder.find_iter(&buf[..have]).count()
            };
        }
        if left == 0 {
            return Ok(Answer { status, found, start });
        }
        buf.copy_within(have - keep..have, 0);
        have = keep;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, multipart) = match args.split_last() {
        Some((last, rest)) if last == "multipart" => (rest, true),
        _ => (args.as_slice(), false),
    };
    let [url, key, body_file, expect, connections, seconds] = args else {
        fail("usage: seal-bench URL API_KEY BODY_FILE EXPECT CONNECTIONS SECONDS [multipart]");
    };
    let Some((host, path)) = split_url(url) else { fail("URL: http://HOST:PORT/PATH") };
    let body = std::fs::read(body_file).unwrap_or_else(|e| fail(&format!("{body_file}: {e}")));
    let expect: usize = expect.parse().unwrap_or_else(|_| fail("EXPECT: a number"));
    let connections: usize = connections.parse().unwrap_or_else(|_| fail("CONNECTIONS: a number"));
    let seconds: u64 = seconds.parse().unwrap_or_else(|_| fail("SECONDS: a number"));
    let run_for = Duration::from_secs(seconds);
    let accept = if multipart { "Accept: multipart/mixed\r\n" } else { "" };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n{accept}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    drop(body);
    let finder = memchr::memmem::Finder::new(match (expect > 1, multipart) {
        (true, false) => &b"\"status\":200"[..],
        (true, true) => &b"\r\nPki-Status: 200\r\n"[..],
        (false, _) => &b"smime-type=enveloped-data"[..],
    });

    let start = Instant::now();
    let deadline = start + run_for;
    let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..connections)
            .map(|_| {
                let (host, request, finder) = (host, &request, &finder);
                scope.spawn(move || {
                    let connect = || {
                        let c = TcpStream::connect(host).unwrap_or_else(|e| fail(&format!("{host}: {e}")));
                        c.set_nodelay(true).unwrap_or_else(|e| fail(&format!("TCP_NODELAY: {e}")));
                        c
                    };
                    let mut conn = connect();
                    let (mut latencies, mut bad) = (Vec::new(), 0);
                    let mut buf = vec![0; CHUNK];
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        let answer = conn
                            .write_all(request)
                            .map_err(|e| format!("sending the request: {e}"))
                            .and_then(|()| read_answer(&mut conn, &mut buf, finder, expect == 1));
                        let failure = match &answer {
                            Err(e) => Some(e.clone()),
                            Ok(a) => {
                                let ok = a.status == 200 && a.found == expect;
                                (!ok).then(|| {
                                    format!("HTTP {}: {}", a.status, String::from_utf8_lossy(&a.start))
                                })
                            }
                        };
                        if let Some(why) = failure {
                            bad += 1;
                            if bad == 1 {
                                eprintln!("a failed answer: {why}");
                            }
                            if answer.is_err() {
                                // The connection's state is unknown: a new one for the next request.
                                conn = connect();
                            }
                        }
                        // Only answers that came within the run are counted, as wrk does.
                        if Instant::now() <= deadline {
                            latencies.push(sent.elapsed());
                        }
                    }
                    (latencies, bad)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a client thread panicked")).collect()
    });
    let elapsed = start.elapsed().min(run_for);
    let bad: usize = results.iter().map(|(_, b)| b).sum();
    let mut latencies: Vec<Duration> = results.into_iter().flat_map(|(l, _)| l).collect();
    latencies.sort();
    let pct = |p: usize| latencies.get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)));
    let us = |d: Option<&Duration>| d.map_or(0, |d| d.as_micros());
    println!(
        "SEAL_RESULT requests={} duration_us={} bad={bad} p50_us={} p99_us={}",
        latencies.len(),
        elapsed.as_micros(),
        us(pct(50)),
        us(pct(99))
    );
    if bad > 0 {
        std::process::exit(1);
    }
}
