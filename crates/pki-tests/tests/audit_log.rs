//! Acceptance item 6: `pki audit verify` passes on a real log, and after a test alters one entry
//! in the embedded database (server stopped, tree `audit` opened directly) it exits non-zero naming
//! that entry's sequence number — locally and through a running server.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use cerdb::sled_engine::RawTrees;

use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Builds a real log through the server: init, issuance, a refusal, escrow, revocation, CRLs.
fn real_log(env: &Env) -> u64 {
    let server = env.serve();
    let key = gen_key(env.dir(), "dave.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("dave.csr"), "/CN=dave@example.com", &[]);
    let out = env.pki(["issue", "--email", "dave@example.com", "--usage", "signing", "--csr", &p(&csr)]);
    let serial = cert_serial(&pem_der(&out.stdout));
    env.pki_fails(
        ["issue", "--email", "erin@example.com", "--usage", "signing", "--csr", &p(&csr)],
        &["dave@example.com"],
    );
    let pw = env.write("pw", "escrow password 1\n");
    let gen = env.pki([
        "issue",
        "--email",
        "dave@example.com",
        "--usage",
        "encryption",
        "--generate",
        "--key-type",
        "p256",
        "--p12",
        &p(&env.path("dave.p12")),
        "--p12-password-file",
        &p(&pw),
    ]);
    let enc = cert_serial(&pem_der(&gen.stdout));
    env.escrow_recover(&enc, &env.path("rec.p12"), &pw);
    env.pki(["revoke", "--serial", &serial, "--reason", "keyCompromise"]);
    // The server signs the CRL a revocation made due when it is read (or at its next
    // publication): read now, its entry follows the revocation's.
    env.pki(["crl"]);
    let out = env.pki(["audit", "verify"]).stdout;
    server.stop();
    let n = entries_of(&out);
    // init + 2 initial CRLs + issue + refusal + issue/escrow.export + recover + revoke + its CRL.
    assert!(n >= 10, "a real log has at least 10 entries, this one {n}");
    assert_eq!(entries_of(&env.pki(["audit", "verify"]).stdout), n, "the same log read directly");
    n
}

fn entries_of(out: &str) -> u64 {
    let rest = out.strip_prefix("audit log verified: ").unwrap_or_else(|| panic!("audit verify said: {out}"));
    assert!(rest.trim_end().ends_with("entries, hash chain intact"), "{out}");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// All (seq, bytes) of tree `audit`.
fn read_audit(data: &Path) -> Vec<(u64, Vec<u8>)> {
    let db = RawTrees::open(&data.join("db")).expect("open the database (server stopped)");
    let all = db
        .entries("audit")
        .unwrap()
        .into_iter()
        .map(|(k, v)| (u64::from_be_bytes(k.as_slice().try_into().expect("8-byte key")), v))
        .collect();
    drop(db);
    all
}

fn write_audit(data: &Path, seq: u64, value: &[u8]) {
    let db = RawTrees::open(&data.join("db")).expect("open the database (server stopped)");
    assert!(db.insert("audit", &seq.to_be_bytes(), value).unwrap().is_some(), "entry {seq} existed");
    db.flush().unwrap();
    drop(db);
}

fn field<'a>(entry: &'a [u8], name: &str) -> (usize, &'a str) {
    let text = std::str::from_utf8(entry).unwrap();
    let key = format!("\"{name}\":\"");
    let start = text.find(&key).unwrap_or_else(|| panic!("no {name} in {text}")) + key.len();
    let len = text[start..].find('"').unwrap();
    (start, &text[start..start + len])
}

fn find_entry(entries: &[(u64, Vec<u8>)], action: &str) -> (u64, Vec<u8>) {
    entries
        .iter()
        .find(|(_, v)| field(v, "action").1 == action)
        .cloned()
        .unwrap_or_else(|| panic!("no {action} entry"))
}

/// `pki audit verify` fails with one error line naming entry `seq`.
fn assert_broken_at(env: &Env, seq: u64) -> String {
    let line = env.pki_fails(["audit", "verify"], &["audit log", &format!("entry {seq} ")]);
    assert!(!line.contains("verified"), "{line}");
    line
}

#[test]
fn audit_verify_passes_on_a_real_log_and_names_the_one_altered_entry() {
    let env = Env::new();
    env.init();
    let n = real_log(&env);
    let entries = read_audit(&env.data);
    assert_eq!(entries.len() as u64, n);
    assert_eq!(entries.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());

    // 1. One byte: the first letter of the revoke entry's details ("keyCompromise ...").
    let (seq, original) = find_entry(&entries, "revoke");
    assert!(seq < n, "the revoke entry is followed by its CRL entry");
    let mut altered = original.clone();
    let (at, details) = field(&original, "details");
    assert!(details.starts_with("keyCompromise"), "{details}");
    altered[at] = b'K';
    write_audit(&env.data, seq, &altered);
    let line = assert_broken_at(&env, seq);
    eprintln!("one byte of entry {seq}: {line}");
    // Through a running server too.
    let server = env.serve();
    assert_broken_at(&env, seq);
    server.stop();
    write_audit(&env.data, seq, &original);
    assert_eq!(entries_of(&env.pki(["audit", "verify"]).stdout), n, "restored");

    // 2. One field: the actor of the first issuance, replaced by someone else.
    let (seq, original) = find_entry(&entries, "issue");
    let (at, actor) = field(&original, "actor");
    let text = std::str::from_utf8(&original).unwrap();
    let altered = format!("{}cli:mallory{}", &text[..at], &text[at + actor.len()..]);
    assert_ne!(actor, "cli:mallory");
    write_audit(&env.data, seq, altered.as_bytes());
    let line = assert_broken_at(&env, seq);
    eprintln!("actor of entry {seq}: {line}");
    write_audit(&env.data, seq, &original);
    assert_eq!(entries_of(&env.pki(["audit", "verify"]).stdout), n, "restored");

    // 3. A careful forger alters the escrow recovery entry and recomputes its own hash: the
    //    altered entry is consistent with its hash, but not with its mac (under the audit key,
    //    which the forger does not have), so it is named itself (docs/audit-log.md).
    let (seq, original) = find_entry(&entries, "escrow.recover");
    assert!(seq < n);
    let text = std::str::from_utf8(&original).unwrap();
    let (at, details) = field(&original, "details");
    let forged = format!("{}nothing happened{}", &text[..at], &text[at + details.len()..]);
    let (hat, hash) = field(forged.as_bytes(), "hash");
    let blank = format!("{}{}", &forged[..hat], &forged[hat + hash.len()..]);
    let rehashed =
        format!("{}{}{}", &forged[..hat], sha256_hex(blank.as_bytes()), &forged[hat + hash.len()..]);
    write_audit(&env.data, seq, rehashed.as_bytes());
    let line = assert_broken_at(&env, seq);
    assert!(line.contains("mac does not verify"), "the mac of entry {seq} is what breaks: {line}");
    write_audit(&env.data, seq, &original);
    assert_eq!(entries_of(&env.pki(["audit", "verify"]).stdout), n, "restored");
}
