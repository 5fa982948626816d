//! The crash loop finds a planted loss (issue 19, acceptance 1): a `pki` built with the
//! `planted-loss` feature acknowledges the first revocation after each start without writing it;
//! the crash loop's driver (`crash-loop`, what `bench/crash-loop.sh` runs) must exit non-zero and
//! name that revocation — and nothing else, since nothing else was lost.
//!
//! Alone in its test binary: it builds the planted `pki` into the target directory and then the
//! usual one again, which no other test may be running meanwhile.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_build_that_acknowledges_a_revocation_without_writing_it_makes_the_crash_loop_fail_naming_it() {
    let planted = pki_tests::planted_loss_pki();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let out = Command::new(env!("CARGO_BIN_EXE_crash-loop"))
        .args(["2", &seed.to_string()])
        .env("PKI_TESTS_BIN", &planted)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let context =
        format!("seed {seed}, exit {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "the crash loop exits 1 on a loss: {context}");

    let summary = stdout.lines().last().unwrap_or_default();
    let lost: usize = summary
        .strip_prefix("rounds 2, acknowledged ")
        .and_then(|rest| rest.split_once(", lost "))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("the last line is the summary: {context}"));
    assert!(lost >= 1, "{context}");

    let lines: Vec<&str> = stdout.lines().filter_map(|l| l.trim_start().strip_prefix("lost: ")).collect();
    assert!(!lines.is_empty(), "each loss is named: {context}");
    for line in &lines {
        assert!(line.starts_with("revocation of "), "only the planted revocation is lost: {line}\n{context}");
    }
    assert!(
        lines.iter().any(|l| l.ends_with(": acknowledged, pki list does not show it revoked")),
        "pki list is where the loss shows first: {context}"
    );
    // Each process that opens the database plants one: the servers, and a `pki revoke` that found
    // no server in the moment of a restart and wrote itself.
    let serials: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l.strip_prefix("revocation of ")?.split(':').next()).collect();
    assert!(!serials.is_empty() && serials.len() <= lost, "{serials:?}: {context}");
}
