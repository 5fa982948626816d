//! `seal-bench URL API_KEY BODY_FILE EXPECT CONNECTIONS SECONDS`: bench/seal.sh's client for
//! `POST /api/v1/mail/seal` and `/seal/bulk`. Each of CONNECTIONS threads posts BODY_FILE on one
//! keep-alive connection, again and again for SECONDS, and checks every answer: HTTP 200 and, for
//! a bulk request (EXPECT > 1), exactly EXPECT messages answered `"status":200` (counted in the
//! answer's bytes); a single answer (EXPECT = 1) is the raw message, which must be enveloped
//! S/MIME. Answers are read into a buffer each thread keeps, so the client costs little beside
//! the server on the same cores. Prints one line: `SEAL_RESULT requests=N duration_us=D bad=B
//! p50_us=P p99_us=Q`; exits non-zero when any answer failed its check.

use std::io::Read as _;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, key, body_file, expect, connections, seconds] = args.as_slice() else {
        eprintln!("usage: seal-bench URL API_KEY BODY_FILE EXPECT CONNECTIONS SECONDS");
        std::process::exit(2);
    };
    let body = std::fs::read(body_file).unwrap_or_else(|e| panic!("{body_file}: {e}"));
    let expect: usize = expect.parse().expect("EXPECT: a number");
    let connections: usize = connections.parse().expect("CONNECTIONS: a number");
    let run_for = Duration::from_secs(seconds.parse().expect("SECONDS: a number"));
    let finder = memchr::memmem::Finder::new(if expect > 1 {
        &b"\"status\":200"[..]
    } else {
        &b"smime-type=enveloped-data"[..]
    });

    let start = Instant::now();
    let deadline = start + run_for;
    let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..connections)
            .map(|_| {
                let (url, key, body, finder) = (url.as_str(), key.as_str(), &body, &finder);
                scope.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(300)))
                        .build()
                        .into();
                    let (mut latencies, mut bad) = (Vec::new(), 0);
                    let mut answer = Vec::new();
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        let mut resp = agent
                            .post(url)
                            .header("Authorization", &format!("Bearer {key}"))
                            .header("Content-Type", "application/json")
                            .send(&body[..])
                            .expect("request");
                        answer.clear();
                        let read =
                            resp.body_mut().with_config().limit(u64::MAX).reader().read_to_end(&mut answer);
                        let ok = resp.status() == 200
                            && read.is_ok()
                            && match expect {
                                1 => finder.find(&answer).is_some(),
                                n => finder.find_iter(&answer).count() == n,
                            };
                        if !ok {
                            bad += 1;
                            if bad == 1 {
                                let head = String::from_utf8_lossy(&answer[..answer.len().min(300)]);
                                eprintln!("a failed answer: HTTP {}: {head}", resp.status());
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
