//! Issue 16, item 6: an audit log that cannot be rewritten quietly, against `pki serve`.
//!
//! - a checkpoint made through the running server (and the one `pki serve` writes into
//!   `[audit] checkpoint_dir`) verifies with OpenSSL: `openssl cms -verify` for its signature to
//!   the CA's root, `openssl ts -verify` for the timestamp token over its signature value;
//! - rewriting one entry and re-hashing every later one, and truncating the log, are both found
//!   by `pki audit verify --checkpoint`, naming the entry; the rewrite is found by its mac
//!   without the checkpoint too, the truncation only with it;
//! - the actor a client writes into an admin socket frame is ignored for the peer's uid;
//! - a checkpoint directory inside the data directory is refused; garbage given as a
//!   checkpoint is one error line.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ca_core::audit::AuditEntry;
use cerdb::sled_engine::RawTrees;
use der::{Decode, Encode};

use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn issue(env: &Env, email: &str) {
    let key = gen_key(env.dir(), &format!("{email}.key"), KeySpec::P256);
    let csr = make_csr(&key, &env.path(&format!("{email}.csr")), &format!("/CN={email}"), &[]);
    env.pki(["issue", "--email", email, "--usage", "signing", "--csr", &p(&csr)]);
}

/// Every (seq, entry) of the log, read raw (server stopped).
fn read_audit(data: &Path) -> Vec<(u64, Vec<u8>)> {
    let db = RawTrees::open(&data.join("db")).expect("open the database (server stopped)");
    db.entries("audit")
        .unwrap()
        .into_iter()
        .map(|(k, v)| (u64::from_be_bytes(k.as_slice().try_into().unwrap()), v))
        .collect()
}

fn write_entries(data: &Path, entries: &[(u64, Vec<u8>)]) {
    let db = RawTrees::open(&data.join("db")).unwrap();
    for (seq, v) in entries {
        db.insert("audit", &seq.to_be_bytes(), v).unwrap();
    }
    db.flush().unwrap();
}

/// As someone who can write the database but holds no key: entry `k`'s details rewritten, its
/// hash and every later entry's link and hash recomputed, so that the hash chain is intact.
fn rewrite_and_rehash(data: &Path, k: u64) {
    let all = read_audit(data);
    let mut prev: Option<String> = None;
    let mut out = Vec::new();
    for (seq, bytes) in all {
        let mut e: AuditEntry = serde_json::from_slice(&bytes).unwrap();
        if seq < k {
            prev = Some(e.hash.clone());
            continue;
        }
        if seq == k {
            e.details = "nothing happened".into();
        }
        if let Some(p) = prev.take() {
            e.prev_hash = p;
        }
        e.hash = e.expected_hash();
        prev = Some(e.hash.clone());
        out.push((seq, serde_json::to_vec(&e).unwrap()));
    }
    write_entries(data, &out);
}

fn truncate_from(data: &Path, first: u64) {
    let db = RawTrees::open(&data.join("db")).unwrap();
    for (seq, _) in db
        .entries("audit")
        .unwrap()
        .iter()
        .map(|(k, v)| (u64::from_be_bytes(k.as_slice().try_into().unwrap()), v.clone()))
    {
        if seq >= first {
            db.remove("audit", &seq.to_be_bytes()).unwrap();
        }
    }
    db.flush().unwrap();
}

fn restore(data: &Path, saved: &[(u64, Vec<u8>)]) {
    let db = RawTrees::open(&data.join("db")).unwrap();
    db.clear("audit").unwrap();
    drop(db);
    write_entries(data, saved);
}

/// `checkpoint verified: entry N ...`: N.
fn checkpoint_seq(stdout: &str) -> u64 {
    let line = stdout.lines().find(|l| l.starts_with("checkpoint verified: entry ")).unwrap_or_else(|| {
        panic!("pki audit verify --checkpoint said: {stdout}");
    });
    line["checkpoint verified: entry ".len()..].split_whitespace().next().unwrap().parse().unwrap()
}

/// The signature value and the timestamp token (DER) of a checkpoint, taken out with the RustCrypto
/// CMS types (not the code under test).
fn signature_and_token(checkpoint: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let ci = cms::content_info::ContentInfo::from_der(checkpoint).unwrap();
    let sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
    let si = sd.signer_infos.0.get(0).unwrap();
    let attr = si
        .unsigned_attrs
        .as_ref()
        .unwrap()
        .iter()
        .find(|a| a.oid.to_string() == "1.2.840.113549.1.9.16.2.14")
        .expect("id-aa-signatureTimeStampToken");
    (si.signature.as_bytes().to_vec(), attr.values.get(0).unwrap().to_der().unwrap())
}

/// `openssl cms -verify` (signature, chain to the root) and `openssl ts -verify` (the token over
/// the signature value) on a checkpoint file; the checkpoint's JSON.
fn openssl_verifies(env: &Env, ca: &CaFiles, file: &Path) -> serde_json::Value {
    let content = env.path("checkpoint.json");
    let out = openssl([
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        &p(file),
        "-CAfile",
        &p(&ca.chain),
        "-purpose",
        "any",
        "-out",
        &p(&content),
    ]);
    assert!(out.stderr.contains("Verification successful"), "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&content).unwrap()).unwrap();

    let (signature, token) = signature_and_token(&std::fs::read(file).unwrap());
    let token_file = env.write("checkpoint.tst", &token);
    let ts_verify = |data: &[u8]| {
        let digest = sha256_hex(data);
        let args = ["-in", &p(&token_file), "-token_in", "-digest", &digest, "-CAfile", &p(&ca.root)];
        openssl_try(["ts", "-verify"].into_iter().chain(args))
    };
    let out = ts_verify(&signature);
    assert!(out.stdout.contains("Verification: OK"), "{}{}", out.stdout, out.stderr);
    // A token over anything else does not verify.
    let other = ts_verify(b"another signature");
    assert!(!other.status.success(), "{}", other.stdout);
    json
}

fn wait_for_file(dir: &Path) -> PathBuf {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(f) = std::fs::read_dir(dir)
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
            .filter(|f| f.extension().is_some_and(|x| x == "cms"))
        {
            return f;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint in {}", dir.display());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn wait_for_file_count(dir: &Path, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(dir).unwrap().count() < n {
        assert!(std::time::Instant::now() < deadline, "fewer than {n} checkpoints in {}", dir.display());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_rewrite_and_a_truncation_before_a_checkpoint_are_found_and_checkpoints_verify_with_openssl() {
    let env = Env::new();
    let periodic = env.path("checkpoints");
    env.append_config(&format!(
        "[audit]\ncheckpoint_dir = \"{}\"\ncheckpoint_interval_secs = 3600\n",
        p(&periodic)
    ));
    env.init();
    let server = env.serve();
    // `pki serve` wrote one at start, outside the data directory.
    let first = wait_for_file(&periodic);
    for email in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        issue(&env, email);
    }
    let file = env.path("checkpoint.cms");
    let out = env.pki(["audit", "checkpoint", "--out", &p(&file)]);
    assert!(out.stdout.starts_with("audit checkpoint of entry "), "{}", out.stdout);
    issue(&env, "dave@example.com");
    let ok = env.pki(["audit", "verify", "--checkpoint", &p(&file)]).stdout;
    let seq = checkpoint_seq(&ok);
    assert!(ok.starts_with("audit log verified: "), "{ok}");
    assert!(
        ok.contains("signed by ") && ok.contains("Audit Log Signer") && ok.contains("timestamped "),
        "{ok}"
    );
    assert!(!ok.contains("legacy"), "a new CA has no legacy entries: {ok}");
    assert!(checkpoint_seq(&env.pki(["audit", "verify", "--checkpoint", &p(&first)]).stdout) < seq);

    let ca = env.ca_files();
    let json = openssl_verifies(&env, &ca, &file);
    assert_eq!(json["seq"], seq, "{json}");
    assert_eq!(json["entries"], seq, "{json}");
    assert_eq!(json["head_hash"].as_str().unwrap().len(), 64, "{json}");
    openssl_verifies(&env, &ca, &first);
    // The audit signer's certificate is issued by the issuing CA, not usable for mail.
    let signer = env.pki(["list"]).stdout;
    assert!(signer.contains("audit-signer"), "{signer}");
    server.stop();

    let saved = read_audit(&env.data);
    let n = saved.len() as u64;
    assert!(seq < n, "entries were written after the checkpoint");
    // The entry of bob's issuance, before the checkpoint.
    let k = saved
        .iter()
        .find(|(_, v)| String::from_utf8_lossy(v).contains("bob@example.com"))
        .map(|(s, _)| *s)
        .unwrap();
    assert!(k < seq);

    // 1. Rewritten and re-hashed: the hash chain holds, the mac of entry k does not.
    rewrite_and_rehash(&env.data, k);
    let line = env.pki_fails(["audit", "verify"], &[&format!("entry {k} "), "mac"]);
    eprintln!("rewrite, no checkpoint: {line}");
    let line =
        env.pki_fails(["audit", "verify", "--checkpoint", &p(&file)], &[&format!("entry {k} "), "mac"]);
    eprintln!("rewrite, checkpoint: {line}");
    restore(&env.data, &saved);
    env.pki(["audit", "verify", "--checkpoint", &p(&file)]);

    // 2. Truncated before the checkpoint's entry: the shorter chain is intact on its own, but
    //    not against the checkpoint, which names the first missing entry.
    let cut = seq - 2;
    truncate_from(&env.data, cut);
    let alone = env.pki(["audit", "verify"]).stdout;
    assert!(alone.starts_with(&format!("audit log verified: {} entries", cut - 1)), "{alone}");
    let line = env.pki_fails(
        ["audit", "verify", "--checkpoint", &p(&file)],
        &[&format!("entry {cut} "), "missing", "truncated"],
    );
    eprintln!("truncation: {line}");
    // Through a running server too. It chains its own start checkpoint's entry onto the
    // shortened log (taking number `cut`): the entries the checkpoint covered are still missing.
    let server = env.serve();
    wait_for_file_count(&periodic, 2);
    env.pki_fails(
        ["audit", "verify", "--checkpoint", &p(&file)],
        &[&format!("entry {} ", cut + 1), "missing", "truncated"],
    );
    server.stop();
    restore(&env.data, &saved);
    assert_eq!(checkpoint_seq(&env.pki(["audit", "verify", "--checkpoint", &p(&file)]).stdout), seq);
}

#[test]
fn a_checkpoint_that_is_not_one_or_was_altered_is_one_error_line() {
    let env = Env::new();
    env.init();
    let file = env.path("checkpoint.cms");
    env.pki(["audit", "checkpoint", "--out", &p(&file)]);
    let good = std::fs::read(&file).unwrap();
    let pem = ca_core::to_pem("CMS", &good);
    let pem_file = env.write("checkpoint.pem", &pem);
    assert!(
        checkpoint_seq(&env.pki(["audit", "verify", "--checkpoint", &p(&pem_file)]).stdout) > 0,
        "PEM reads"
    );

    let json_at = good.windows(6).position(|w| w == b"\"seq\":").unwrap() + 6;
    let mut altered = good.clone();
    altered[json_at] = if altered[json_at] == b'9' { b'8' } else { altered[json_at] + 1 };
    let mut bad_signature = good.clone();
    let (signature, _) = signature_and_token(&good);
    let at = good.windows(signature.len()).position(|w| w == signature.as_slice()).unwrap();
    bad_signature[at + signature.len() - 1] ^= 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "checkpoint"),
        ("garbage", b"not a checkpoint at all\n".to_vec(), "checkpoint"),
        ("truncated", good[..good.len() / 2].to_vec(), "checkpoint"),
        ("random", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(), "checkpoint"),
        ("oversized", vec![0x30; (1 << 20) + 1], "larger than"),
        ("pem garbage", b"-----BEGIN CMS-----\n!!!!\n-----END CMS-----\n".to_vec(), "checkpoint"),
        ("content altered", altered, "message-digest"),
        ("signature altered", bad_signature, "checkpoint"),
    ];
    for (what, bytes, names) in cases {
        let f = env.write(&format!("bad-{}.cms", what.replace(' ', "-")), &bytes);
        let line = env.pki_fails(["audit", "verify", "--checkpoint", &p(&f)], &[names]);
        assert!(!line.contains("panicked"), "{what}: {line}");
        eprintln!("{what}: {line}");
    }
    env.pki_fails(["audit", "verify", "--checkpoint", &p(&env.path("missing.cms"))], &["missing.cms"]);
    // Another CA's checkpoint does not verify here.
    let other = Env::new();
    other.init();
    env.pki_fails(
        [
            "audit",
            "verify",
            "--checkpoint",
            &p(&{
                let f = other.path("other.cms");
                other.pki(["audit", "checkpoint", "--out", &p(&f)]);
                f
            }),
        ],
        &["not issued by this CA"],
    );
}

#[test]
fn a_checkpoint_directory_inside_the_data_directory_is_refused() {
    let env = Env::new();
    env.append_config(&format!("[audit]\ncheckpoint_dir = \"{}\"\n", p(&env.data.join("checkpoints"))));
    env.pki_fails(["init"], &["checkpoint_dir", "inside the data directory"]);
    env.pki_fails(
        ["serve", "--listen", &format!("127.0.0.1:{}", env.port)],
        &["checkpoint_dir", "inside the data directory"],
    );
}

fn frame(conn: &mut std::os::unix::net::UnixStream, body: &[u8]) -> Vec<u8> {
    conn.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    conn.read_exact(&mut reply).unwrap();
    reply
}

#[test]
fn the_admin_socket_records_the_peers_uid_not_the_actor_the_client_sends() {
    let env = Env::new();
    env.init();
    let uid = rustix::process::getuid().as_raw();
    let server = env.serve();
    let mut conn = std::os::unix::net::UnixStream::connect(env.data.join("admin.sock")).unwrap();
    let request = serde_json::json!({
        "actor": "mallory",
        "request": {"ApiKeyCreate": {"name": "statement-mailer", "rate": null, "burst": null}}
    });
    let reply = frame(&mut conn, request.to_string().as_bytes());
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert!(reply.get("Ok").is_some(), "{reply}");
    // Through the CLI and the socket as well as on the data directory itself.
    env.pki(["apikey", "create", "--name", "through-cli"]);
    server.stop();
    env.pki(["apikey", "create", "--name", "local"]);

    let entries: Vec<AuditEntry> =
        read_audit(&env.data).iter().map(|(_, v)| serde_json::from_slice(v).unwrap()).collect();
    let created: Vec<&AuditEntry> = entries.iter().filter(|e| e.action.name() == "apikey.create").collect();
    assert_eq!(created.len(), 3, "{created:?}");
    for e in created {
        assert!(e.actor.starts_with(&format!("uid:{uid}(")) || e.actor == format!("uid:{uid}"), "{e:?}");
        assert!(!e.actor.contains("mallory"), "{e:?}");
    }
}
