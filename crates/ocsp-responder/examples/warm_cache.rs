//! Warm-up for `bench/ocsp/run.sh`: asks a running responder once for every serial in
//! `OUT_DIR/serials.txt` (POST, no nonce, keep-alive connections), so that the measured run is
//! served from the cache of signed responses; checks that every answer is a successful
//! `OCSPResponse`.
//!
//! ```text
//! cargo run --release -p ocsp-responder --example warm_cache -- HOST:PORT OUT_DIR [CONNECTIONS]
//! ```
//!
//! Exits non-zero if any answer is not HTTP 200 with a successful OCSP response.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

mod common;

/// Sends one POST on a keep-alive connection and returns (HTTP status, body).
fn post(conn: &mut BufReader<TcpStream>, host: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let head = format!(
        "POST /ocsp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut out = vec![0; length];
    conn.read_exact(&mut out)?;
    Ok((status, out))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(out)) = (args.first(), args.get(1)) else {
        return Err("usage: warm_cache HOST:PORT OUT_DIR [CONNECTIONS]".into());
    };
    let connections: usize = args.get(2).map(|c| c.parse()).transpose()?.unwrap_or(4);
    let out = std::path::Path::new(out);
    let issuing = pem::parse(std::fs::read(out.join("issuing.pem"))?)?;
    let serials: Vec<Vec<u8>> = std::fs::read_to_string(out.join("serials.txt"))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(hex::decode)
        .collect::<Result<_, _>>()?;
    let start = std::time::Instant::now();
    let failures: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|c| {
                let (serials, issuing) = (&serials, issuing.contents());
                s.spawn(move || -> Result<usize, String> {
                    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
                    stream.set_nodelay(true).map_err(|e| e.to_string())?;
                    let mut conn = BufReader::new(stream);
                    let mut failures = 0;
                    for serial in serials.iter().skip(c).step_by(connections) {
                        let req = common::request(&common::cert_id(issuing, serial), None);
                        let (status, body) = post(&mut conn, addr, &req).map_err(|e| e.to_string())?;
                        // OCSPResponse SEQUENCE, then ENUMERATED responseStatus 0 (successful).
                        let ok = status == 200
                            && body.len() > 8
                            && body.windows(3).take(6).any(|w| w == [0x0a, 0x01, 0x00]);
                        if !ok {
                            failures += 1;
                        }
                    }
                    Ok(failures)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread").expect("warm-up connection")).sum()
    });
    println!(
        "warm_cache: {} serials asked in {:.1} s, {failures} not successful",
        serials.len(),
        start.elapsed().as_secs_f64()
    );
    if failures > 0 {
        return Err(format!("{failures} answers were not successful OCSP responses").into());
    }
    Ok(())
}
