//! LDAP load client for `bench/ldap/run.sh`: `LDAP_CONNECTIONS` connections on one thread (a
//! tokio current-thread runtime, as `wrk -t1` runs its connections on one epoll loop), each
//! bound with an API key and sending equality searches `(mail=load-<random i>@loadtest.example)`
//! one after the other for `LDAP_SECONDS`; prints requests/s and latency percentiles in the
//! `RESULT` line format of `bench/directory/lookup.lua`.
//!
//! Every answer is checked: a search must return exactly one entry and `success`, else it is
//! counted as `wrong_answer`.
//!
//! Environment: `LDAP_ADDR` (127.0.0.1:3890), `LDAP_BASE`, `LDAP_KEY` and `LDAP_KEY_NAME` (bind as
//! `cn=NAME,<base>`; anonymous when empty), `LDAP_COUNT` (addresses loaded, 1000),
//! `LDAP_CONNECTIONS` (64), `LDAP_SECONDS` (15), `LDAP_ATTRS` (comma-separated, `mail`).
#![allow(clippy::unwrap_used)] // a benchmark client: a failure ends the run

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 128 {
        v.push(n as u8);
    } else if n < 256 {
        v.extend([0x81, n as u8]);
    } else {
        v.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(content);
    v
}

fn message(id: u32, op: Vec<u8>) -> Vec<u8> {
    tlv(0x30, &[tlv(0x02, &id.to_be_bytes()[1..]), op].concat())
}

fn bind(id: u32, dn: &str, password: &str) -> Vec<u8> {
    message(
        id,
        tlv(0x60, &[tlv(0x02, &[3]), tlv(0x04, dn.as_bytes()), tlv(0x80, password.as_bytes())].concat()),
    )
}

fn search(id: u32, base: &str, address: &str, attrs: &[String]) -> Vec<u8> {
    let filter = [tlv(0x04, b"mail"), tlv(0x04, address.as_bytes())].concat();
    let attrs: Vec<u8> = attrs.iter().flat_map(|a| tlv(0x04, a.as_bytes())).collect();
    let op = [
        tlv(0x04, base.as_bytes()),
        tlv(0x0a, &[2]),
        tlv(0x0a, &[0]),
        tlv(0x02, &[0]),
        tlv(0x02, &[0]),
        tlv(0x01, &[0]),
        tlv(0xa3, &filter),
        tlv(0x30, &attrs),
    ]
    .concat();
    message(id, tlv(0x63, &op))
}

/// (header length, content length) of the TLV at the start of `b`, if complete enough.
fn header(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((2, first as usize));
    }
    let n = (first & 0x7f) as usize;
    let bytes = b.get(2..2 + n)?;
    Some((2 + n, bytes.iter().fold(0usize, |acc, x| acc << 8 | *x as usize)))
}

/// Reads messages until the one whose operation tag is `done`; (entries seen, its result code).
async fn read_until(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    done: u8,
) -> std::io::Result<(usize, u8)> {
    let mut entries = 0;
    loop {
        while let Some((h, len)) = header(buf) {
            if buf.len() < h + len {
                break;
            }
            let msg: Vec<u8> = buf.drain(..h + len).collect();
            let body = &msg[h..];
            let (ih, ilen) = header(body).unwrap();
            let op = &body[ih + ilen..];
            if op[0] == 0x64 {
                entries += 1;
            } else if op[0] == done {
                let (oh, _) = header(op).unwrap();
                // LDAPResult: resultCode ENUMERATED first.
                return Ok((entries, op[oh + 2]));
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed by the server"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    wrong: u64,
    errors: u64,
}

fn main() {
    let addr = env("LDAP_ADDR", "127.0.0.1:3890");
    let base = env("LDAP_BASE", "ou=certificates,dc=bank,dc=example");
    let key = env("LDAP_KEY", "");
    let key_name = env("LDAP_KEY_NAME", "bench");
    let count: u64 = env("LDAP_COUNT", "1000").parse().unwrap();
    let connections: usize = env("LDAP_CONNECTIONS", "64").parse().unwrap();
    let seconds: u64 = env("LDAP_SECONDS", "15").parse().unwrap();
    let attrs: Vec<String> = env("LDAP_ATTRS", "mail").split(',').map(str::to_string).collect();
    let tally = Rc::new(RefCell::new(Tally::default()));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    actix_rt::System::new().block_on(async {
        let mut tasks = Vec::new();
        for c in 0..connections {
            let (addr, base, key, key_name, attrs, tally) =
                (addr.clone(), base.clone(), key.clone(), key_name.clone(), attrs.clone(), tally.clone());
            tasks.push(actix_rt::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                let mut buf = Vec::new();
                if !key.is_empty() {
                    s.write_all(&bind(1, &format!("cn={key_name},{base}"), &key)).await.unwrap();
                    let (_, code) = read_until(&mut s, &mut buf, 0x61).await.unwrap();
                    assert_eq!(code, 0, "bind refused with result code {code}");
                }
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
                let mut id = 2u32;
                while Instant::now() < deadline {
                    rng ^= rng >> 12;
                    rng ^= rng << 25;
                    rng ^= rng >> 27;
                    let i = rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % count;
                    let req = search(id, &base, &format!("load-{i}@loadtest.example"), &attrs);
                    id = id % 0x7f_ffff + 1;
                    let t0 = Instant::now();
                    let sent = s.write_all(&req).await;
                    let answer = match sent {
                        Ok(()) => read_until(&mut s, &mut buf, 0x65).await,
                        Err(e) => Err(e),
                    };
                    let mut t = tally.borrow_mut();
                    match answer {
                        Ok((entries, code)) => {
                            t.latencies_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            if entries != 1 || code != 0 {
                                t.wrong += 1;
                            }
                        }
                        Err(_) => {
                            t.errors += 1;
                            return;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let mut t = tally.borrow_mut();
    t.latencies_us.sort_unstable();
    let n = t.latencies_us.len();
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        t.latencies_us[((n as f64 * p / 100.0).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0
    };
    println!(
        "RESULT op=ldap-search attrs={} requests={n} seconds={secs:.1} rps={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} wrong_answer={} connection_errors={}",
        attrs.join("+"),
        n as f64 / secs,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        t.wrong,
        t.errors
    );
}
