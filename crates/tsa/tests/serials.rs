//! Serial numbers: strictly increasing, durable across reopening and SIGKILL, never reused; and
//! every token recorded.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use cerdb::tsa_store::TokenLedger;
use common::*;
use hsm_sim::KeyType;
use tsa::{TsaConfig, TsaSerial, TsaStore};

fn serial_of(resp_der: &[u8]) -> u64 {
    let tst = tst_info(&decode_resp(resp_der));
    tst.serial_number.as_bytes().iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Issues `n` tokens and checks each is recorded with its hash; returns the serials.
fn issue(tsa: &tsa::TimestampAuthority, store: &TsaStore, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let der = stamp(tsa, format!("document {i}").as_bytes(), i % 2 == 0);
            let serial = serial_of(&der);
            let rec = store.token(TsaSerial::new(serial).unwrap()).unwrap().expect("recorded");
            let token = token_der(&decode_resp(&der));
            assert_eq!(rec.token_sha256.to_vec(), sha256(&token));
            assert_eq!(rec.imprint, sha256(format!("document {i}").as_bytes()));
            assert_eq!(rec.policy, tsa::DEFAULT_POLICY.to_string());
            serial
        })
        .collect()
}

#[test]
fn serials_strictly_increase_also_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    // A small block, so that 100 tokens cross several reservations.
    let config = TsaConfig { serial_block: 16, ..TsaConfig::default() };
    let first = {
        let (db, tsa) = fx.tsa(config.clone());
        let store = TsaStore::open(&db).unwrap();
        issue(&tsa, &store, 100)
    };
    assert!(first.windows(2).all(|w| w[0] < w[1]), "{first:?}");
    assert_eq!(first, (1..=100).collect::<Vec<_>>(), "no gaps within a run");

    let (db, tsa) = fx.tsa(config);
    let store = TsaStore::open(&db).unwrap();
    let second = issue(&tsa, &store, 100);
    assert!(second.windows(2).all(|w| w[0] < w[1]), "{second:?}");
    assert!(second[0] > first[99], "after reopening: {} then {}", first[99], second[0]);
    assert_eq!(store.token_count(), 200);
    store.check_consistency().unwrap();
}

#[test]
fn concurrent_requests_get_unique_serials_in_gen_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let (_db, tsa) = fx.tsa(TsaConfig { serial_block: 8, ..TsaConfig::default() });
    let mut all: Vec<(u64, tsa::GenTime)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let tsa = &tsa;
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let der = stamp(tsa, format!("{t}/{i}").as_bytes(), false);
                            let tst = tst_info(&decode_resp(&der));
                            (serial_of(&der), tst.gen_time)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    all.sort();
    assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>());
    assert!(all.windows(2).all(|w| w[0].1 <= w[1].1), "genTime never goes back as serials increase");
}

#[test]
fn concurrent_requests_share_flushes_without_losing_any_record() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    let returned: Vec<(u64, Vec<u8>)> = {
        let db = cerdb::CertDb::open(dir.path().join("db")).unwrap();
        let store = TsaStore::open(&db).unwrap();
        let tsa = tsa::TimestampAuthority::new(
            fx.signer.clone(),
            fx.tsa_der.clone(),
            Vec::new(),
            store.clone(), // a clone shares the committer, so its statistics are the TSA's
            TsaConfig { serial_block: 64, ..TsaConfig::default() },
        )
        .unwrap();
        let returned: Vec<(u64, Vec<u8>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let tsa = &tsa;
                    s.spawn(move || {
                        (0..40)
                            .map(|i| {
                                let der = stamp(tsa, format!("{t}/{i}").as_bytes(), false);
                                (serial_of(&der), token_der(&decode_resp(&der)))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let stats = store.commit_stats();
        assert_eq!(stats.records, 320);
        assert!(stats.flushes < 320, "8 concurrent requesters never shared a flush: {stats:?}");
        returned
    };
    // Reopened: every token that was returned is in the record, with its hash.
    let db = cerdb::CertDb::open(dir.path().join("db")).unwrap();
    let store = TsaStore::open(&db).unwrap();
    store.check_consistency().unwrap();
    assert_eq!(store.token_count(), 320);
    for (serial, token) in &returned {
        let rec = store.token(TsaSerial::new(*serial).unwrap()).unwrap().expect("recorded");
        assert_eq!(rec.token_sha256.to_vec(), sha256(token), "token {serial}");
    }
    let mut serials: Vec<u64> = returned.iter().map(|(s, _)| *s).collect();
    serials.sort();
    assert_eq!(serials, (1..=320).collect::<Vec<_>>());
}

const CHILD_ENV: &str = "TSA_SIGKILL_CHILD_DIR";

/// The child process of `serials_survive_sigkill` (the same test, re-run with `CHILD_ENV` set):
/// it issues tokens until it is killed, printing each serial after `respond` returned it.
fn sigkill_child(dir: &str) -> ! {
    let fx = Fixture::open(std::path::Path::new(dir));
    let (_db, tsa) = fx.tsa(TsaConfig { serial_block: 1000, ..TsaConfig::default() });
    for i in 0u64.. {
        let der = stamp(&tsa, &i.to_be_bytes(), false);
        println!("serial {}", serial_of(&der));
    }
    unreachable!("the loop ends only when the parent kills this process")
}

#[test]
fn serials_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        sigkill_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::create(dir.path(), KeyType::P256, false);
    drop(fx);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "serials_survive_sigkill", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut issued = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while issued.len() < 40 {
        let line = lines.next().expect("the child stopped early").unwrap();
        if let Some(s) = line.strip_prefix("serial ") {
            issued.push(s.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let fx = Fixture::open(dir.path());
    let (db, tsa) = fx.tsa(TsaConfig::default());
    let store = TsaStore::open(&db).unwrap();
    store.check_consistency().unwrap();
    for s in &issued {
        assert!(
            store.token(TsaSerial::new(*s).unwrap()).unwrap().is_some(),
            "token {s} was returned but not recorded"
        );
    }
    let max = *issued.iter().max().unwrap();
    assert!(store.high_water_mark().unwrap() >= max);
    let next = serial_of(&stamp(&tsa, b"after the crash", false));
    assert!(next > max, "serial {next} after the crash is not above {max}");
    // Nothing recorded after the crash reuses a serial handed out before it.
    assert!(next > 1000, "the killed process's whole block (1..=1000) is skipped: {next}");
}
