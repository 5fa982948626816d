//! Issue 5 (RFC 3161 / RFC 5816 timestamp authority), end to end against `pki serve`:
//! OpenSSL's `ts` client accepts the tokens; serials strictly increase across restarts and a
//! SIGKILL under load; every refusal is a decodable TimeStampResp with the right failInfo; and
//! `pki ts verify` passes real tokens and names the failed check for forged or unrecorded ones.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use pki_tests::raw_tcp::cut_short;
use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn post(url: &str, content_type: &str, body: &Path) -> (u16, String, Vec<u8>) {
    curl_post(url, content_type, body)
}

struct Tsa {
    env: Env,
    server: Option<Server>,
    root: PathBuf,
    tsa_cert: PathBuf,
    doc: PathBuf,
}

fn start() -> Tsa {
    let env = Env::new();
    env.init();
    let server = env.serve();
    let root = env.write("root.pem", env.pki(["ca-cert", "root"]).stdout);
    let tsa_cert = env.write("tsa.pem", env.pki(["ca-cert", "tsa"]).stdout);
    let doc = env.write("statement.txt", "Statement for account 12-34-56, November 2026\n");
    Tsa { env, server: Some(server), root, tsa_cert, doc }
}

impl Tsa {
    fn url(&self, path: &str) -> String {
        self.server.as_ref().expect("server running").url(path)
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.server = Some(self.env.serve());
    }

    fn query(&self, name: &str, args: &[&str]) -> PathBuf {
        let q = self.env.path(name);
        let mut a: Vec<String> = vec!["ts".into(), "-query".into(), "-data".into(), p(&self.doc)];
        a.extend(args.iter().map(|s| s.to_string()));
        a.extend(["-out".into(), p(&q)]);
        openssl(&a);
        q
    }

    fn stamp(&self, query: &Path, name: &str) -> PathBuf {
        let (code, ctype, body) = post(&self.url("/tsa"), "application/timestamp-query", query);
        assert_eq!(code, 200);
        assert_eq!(ctype, "application/timestamp-reply");
        self.env.write(name, body)
    }

    fn reply_text(&self, reply: &Path) -> String {
        openssl(["ts", "-reply", "-in", &p(reply), "-text"]).stdout
    }

    fn verify_ok(&self, reply: &Path, with_untrusted: bool) {
        let mut a = vec!["ts", "-verify", "-in"];
        let reply = p(reply);
        let doc = p(&self.doc);
        let root = p(&self.root);
        let tsa = p(&self.tsa_cert);
        a.extend([reply.as_str(), "-data", doc.as_str(), "-CAfile", root.as_str()]);
        if with_untrusted {
            a.extend(["-untrusted", tsa.as_str()]);
        }
        let out = openssl(&a);
        assert!(out.stdout.contains("Verification: OK"), "{}\n{}", out.stdout, out.stderr);
    }
}

fn serial_of(text: &str) -> u128 {
    let line = text.lines().find(|l| l.starts_with("Serial number:")).expect("serial line");
    let v = line.trim_start_matches("Serial number:").trim().trim_start_matches("0x");
    u128::from_str_radix(v, 16).unwrap()
}

#[test]
fn openssl_verifies_tokens_for_every_digest_with_and_without_certificates() {
    let t = start();
    for (i, alg) in ["-sha256", "-sha384", "-sha512"].iter().enumerate() {
        let q = t.query(&format!("q{i}.tsq"), &[alg, "-cert"]);
        let r = t.stamp(&q, &format!("r{i}.tsr"));
        // certReq: the token carries the TSA certificate (its chain below the root is itself).
        t.verify_ok(&r, false);
        t.verify_ok(&r, true);
    }
    // Without -cert the token carries no certificate: the TSA certificate goes to -untrusted.
    let q = t.query("nocert.tsq", &["-sha256"]);
    let r = t.stamp(&q, "nocert.tsr");
    t.verify_ok(&r, true);
    let out = openssl_try(["ts", "-verify", "-in", &p(&r), "-data", &p(&t.doc), "-CAfile", &p(&t.root)]);
    assert!(!out.stdout.contains("Verification: OK"), "without the TSA certificate nothing can verify");

    // `pki ts stamp`, through the running server's admin socket and over HTTP.
    t.env.pki(["ts", "stamp", &p(&t.doc), "--out", &p(&t.env.path("local.tsr"))]);
    t.verify_ok(&t.env.path("local.tsr"), true);
    let url = t.url("");
    t.env.pki(["ts", "stamp", &p(&t.doc), "--server", &url, "--out", &p(&t.env.path("http.tsr"))]);
    t.verify_ok(&t.env.path("http.tsr"), true);
}

#[test]
fn the_reply_shows_nonce_policy_accuracy_and_serials_strictly_increase_across_restart_and_sigkill() {
    let mut t = start();
    let q = t.query("q.tsq", &["-sha256", "-cert"]);
    let query_text = openssl(["ts", "-query", "-in", &p(&q), "-text"]).stdout;
    let nonce = query_text.lines().find(|l| l.trim_start().starts_with("Nonce:")).unwrap().trim().to_string();
    let r = t.stamp(&q, "r.tsr");
    let text = t.reply_text(&r);
    assert!(text.contains("Status: Granted."), "{text}");
    assert!(text.lines().any(|l| l.trim() == nonce), "the nonce {nonce} is echoed:\n{text}");
    assert!(text.contains("Policy OID: 1.3.6.1.4.1.32473.1"), "{text}");
    assert!(text.contains("Accuracy: ") && text.contains("0x64 millis"), "{text}");
    assert!(text.contains("Ordering: no"), "{text}");

    let mut serials = vec![serial_of(&text)];
    for i in 0..99 {
        let r = t.stamp(&q, &format!("s{i}.tsr"));
        serials.push(serial_of(&t.reply_text(&r)));
    }
    assert!(serials.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {serials:?}");

    // A clean restart continues above every serial handed out.
    t.restart();
    let after_restart = serial_of(&t.reply_text(&t.stamp(&q, "restart.tsr")));
    assert!(after_restart > *serials.last().unwrap());
    serials.push(after_restart);

    // SIGKILL while a client keeps stamping: every reply that was returned has a serial above
    // all earlier ones, and after the restart serials continue above all of them.
    let url = t.url("/tsa");
    let qpath = q.clone();
    let dir = t.env.dir().to_path_buf();
    let load = std::thread::spawn(move || {
        let mut got = Vec::new();
        for i in 0..400 {
            let out_file = dir.join(format!("load{i}.tsr"));
            let ok = Command::new(curl_bin())
                .args([
                    "-s",
                    "--max-time",
                    "5",
                    "-H",
                    "Content-Type: application/timestamp-query",
                    "--data-binary",
                ])
                .arg(format!("@{}", qpath.display()))
                .arg("-o")
                .arg(&out_file)
                .arg(&url)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                break;
            }
            if let Ok(b) = std::fs::read(&out_file) {
                if !b.is_empty() {
                    got.push(out_file);
                }
            }
        }
        got
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    t.server.as_mut().unwrap().sigkill();
    let returned = load.join().unwrap();
    assert!(!returned.is_empty(), "some tokens were returned before the kill");
    for f in &returned {
        serials.push(serial_of(&openssl(["ts", "-reply", "-in", &p(f), "-text"]).stdout));
    }
    t.server = Some(t.env.serve());
    serials.push(serial_of(&t.reply_text(&t.stamp(&q, "after-kill.tsr"))));
    assert!(serials.windows(2).all(|w| w[0] < w[1]), "strictly increasing across the SIGKILL: {serials:?}");
}

/// The failInfo OpenSSL prints for a rejected reply.
fn failure(t: &Tsa, reply: &Path) -> String {
    let text = t.reply_text(reply);
    assert!(text.contains("Status: Rejected"), "{text}");
    text
}

#[test]
fn refusals_are_time_stamp_responses_with_the_right_fail_info_and_the_server_keeps_serving() {
    let t = start();
    let sha1 = t.query("sha1.tsq", &["-sha1"]);
    let r = t.stamp(&sha1, "sha1.tsr");
    assert!(failure(&t, &r).contains("unrecognized or unsupported algorithm identifier"));

    let pol = t.query("pol.tsq", &["-sha256", "-tspolicy", "1.2.3.4.5"]);
    let r = t.stamp(&pol, "pol.tsr");
    assert!(failure(&t, &r).contains("the requested TSA policy is not supported by the TSA"));

    let good = std::fs::read(t.query("good.tsq", &["-sha256"])).unwrap();
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"this is not DER at all".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("one byte", vec![0x30]),
    ];
    for (name, body) in bodies {
        let f = t.env.write(&format!("{name}.tsq"), &body);
        let r = t.stamp(&f, &format!("{name}.tsr"));
        let text = failure(&t, &r);
        assert!(text.contains("the data submitted has the wrong format"), "{name}: {text}");
    }
    // The HTTP layer: a wrong content type and an oversized body.
    let q = t.env.path("good.tsq");
    assert_eq!(post(&t.url("/tsa"), "text/plain", &q).0, 415);
    let big = t.env.write("big.tsq", vec![0x30u8; 70 * 1024]);
    assert_eq!(post(&t.url("/tsa"), "application/timestamp-query", &big).0, 413);
    // Bodies cut short (the client stops sending before its declared length): a query, and a
    // verification form in the middle of its token part. 400 with one plain JSON line each.
    let port = t.env.port;
    let cut =
        cut_short(port, "/tsa", &[("Content-Type", "application/timestamp-query")], &good[..10], good.len())
            .expect("an answer to a query cut short");
    assert_eq!((cut.status, cut.header("content-type")), (400, Some("application/json")), "{}", cut.text());
    assert!(cut.text().contains("the body ended before its declared length"), "{}", cut.text());
    let form = b"--XX\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n0\x82\x01";
    let cut = cut_short(
        port,
        "/api/v1/timestamps/verify",
        &[("Content-Type", "multipart/form-data; boundary=XX")],
        form,
        form.len() + 500,
    )
    .expect("an answer to a form cut short");
    assert_eq!((cut.status, cut.header("content-type")), (400, Some("application/json")), "{}", cut.text());
    assert!(cut.text().contains("the body ended before its declared length"), "{}", cut.text());
    // Still serving.
    let r = t.stamp(&q, "still.tsr");
    t.verify_ok(&r, true);
}

#[test]
fn pki_ts_verify_passes_real_tokens_and_names_the_failed_check_otherwise() {
    let mut t = start();
    let q = t.query("q.tsq", &["-sha256", "-cert"]);
    let r = t.stamp(&q, "r.tsr");
    let ok = t.env.pki(["ts", "verify", "--token", &p(&r), "--data", &p(&t.doc)]).stdout;
    assert!(ok.contains("verification: OK") && ok.contains("serial: "), "{ok}");
    assert!(ok.contains("Example Bank Timestamp Authority"), "{ok}");
    let digest = hex::encode(openssl(["dgst", "-sha256", "-binary", &p(&t.doc)]).stdout_bytes);
    t.env.pki(["ts", "verify", "--token", &p(&r), "--digest", &digest]);

    // Other data.
    let other = t.env.write("other.txt", "another statement\n");
    t.env.pki_fails(["ts", "verify", "--token", &p(&r), "--data", &p(&other)], &["imprint"]);

    // A document larger than the admin channel carries (frames of 64 MiB, the data would be
    // JSON): `pki ts stamp` and `pki ts verify --data` hash it a mebibyte at a time and send only
    // digests to the running server.
    let archive = t.env.path("archive.bin");
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&archive, block.repeat(40)).unwrap();
    let stamped = t.env.pki(["ts", "stamp", &p(&archive)]).stdout;
    assert!(stamped.contains("timestamp granted"), "{stamped}");
    let archive_tsr = t.env.path("archive.bin.tsr");
    let ok = t.env.pki(["ts", "verify", "--token", &p(&archive_tsr), "--data", &p(&archive)]).stdout;
    assert!(ok.contains("verification: OK") && ok.contains("hash: SHA-256"), "{ok}");
    t.env.pki_fails(["ts", "verify", "--token", &p(&archive_tsr), "--data", &p(&t.doc)], &["imprint"]);
    // A SHA-512 imprint, checked from the data's digests alike.
    let q512 = t.query("q512.tsq", &["-sha512"]);
    let r512 = t.stamp(&q512, "r512.tsr");
    let ok = t.env.pki(["ts", "verify", "--token", &p(&r512), "--data", &p(&t.doc)]).stdout;
    assert!(ok.contains("verification: OK") && ok.contains("hash: SHA-512"), "{ok}");
    // Files that are not tokens, past the bound: refused before they are read whole.
    t.env.pki_fails(
        ["ts", "verify", "--token", "/dev/zero", "--data", &p(&t.doc)],
        &["larger than 1048576 bytes"],
    );
    // Data that never ends (a device) is refused before it is read; a document is a file.
    t.env.pki_fails(
        ["ts", "verify", "--token", &p(&r), "--data", "/dev/zero"],
        &["data file /dev/zero is not a regular file"],
    );
    t.env.pki_fails(["ts", "stamp", "/dev/zero"], &["file /dev/zero is not a regular file"]);

    // One byte altered, inside the signed content (the serial / genTime area of TSTInfo).
    let mut bytes = std::fs::read(&r).unwrap();
    let pos = bytes.len() / 3;
    bytes[pos] ^= 0x01;
    let altered = t.env.write("altered.tsr", &bytes);
    let line =
        t.env.pki_try(["ts", "verify", "--token", &p(&altered), "--data", &p(&t.doc)]).one_error_line();
    assert!(line.contains("timestamp verification failed"), "{line}");

    // A token from a throwaway TSA made with `openssl ts -reply`.
    let key = gen_key(t.env.dir(), "fake.key", KeySpec::P256);
    let fake_cert = t.env.path("fake.pem");
    openssl([
        OsStr::new("req"),
        OsStr::new("-new"),
        OsStr::new("-x509"),
        OsStr::new("-key"),
        key.as_os_str(),
        OsStr::new("-subj"),
        OsStr::new("/CN=Throwaway TSA"),
        OsStr::new("-days"),
        OsStr::new("2"),
        OsStr::new("-addext"),
        OsStr::new("extendedKeyUsage=critical,timeStamping"),
        OsStr::new("-out"),
        fake_cert.as_os_str(),
    ]);
    let cnf = t.env.write(
        "ts.cnf",
        format!(
            "[ tsa ]\ndefault_tsa = tsa_config1\n[ tsa_config1 ]\nserial = {}\nsigner_digest = sha256\n\
             default_policy = 1.3.6.1.4.1.32473.1\ndigests = sha256\naccuracy = secs:1\ness_cert_id_alg = sha256\n",
            p(&t.env.path("fake.serial"))
        ),
    );
    t.env.write("fake.serial", "01\n");
    let fake = t.env.path("fake.tsr");
    openssl([
        "ts",
        "-reply",
        "-config",
        &p(&cnf),
        "-queryfile",
        &p(&q),
        "-signer",
        &p(&fake_cert),
        "-inkey",
        &p(&key),
        "-out",
        &p(&fake),
    ]);
    t.env.pki_fails(["ts", "verify", "--token", &p(&fake), "--data", &p(&t.doc)], &["verification failed"]);

    // A genuine token whose record was removed: the record check names it.
    let r2 = t.stamp(&q, "r2.tsr");
    let serial = serial_of(&t.reply_text(&r2)) as u64;
    t.stop();
    if let Some(url) = &t.env.database_url {
        // PostgreSQL: the record's row goes, as a database administrator could remove it.
        let psql = require_tool("psql", "apt-get install postgresql-client");
        let sql = format!("DELETE FROM tsa_tokens WHERE serial = {serial}");
        let out =
            run(std::process::Command::new(psql).args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-c", &sql]));
        assert!(out.ok().stdout.contains("DELETE 1"), "r2's record removed");
    } else {
        // The ledger holds one 256-byte record per token, in serial order: r2's is the last.
        let ledger = t.env.data.join("db").join("tsa-tokens.ledger");
        let bytes = std::fs::read(&ledger).unwrap();
        let last = &bytes[bytes.len() - 256..];
        assert_eq!(last[..8], serial.to_be_bytes(), "the last record is that of serial {serial}");
        std::fs::write(&ledger, &bytes[..bytes.len() - 256]).unwrap();
    }
    t.env.pki_fails(["ts", "verify", "--token", &p(&r2), "--data", &p(&t.doc)], &["record"]);
    // The first token is still recorded and still verifies.
    t.env.pki(["ts", "verify", "--token", &p(&r), "--data", &p(&t.doc)]);
}

/// `curl -F` form post; (status, body as text).
#[test]
fn the_verify_endpoint_answers_bad_input_with_a_json_4xx_and_keeps_serving() {
    let t = start();
    let url = t.url("/api/v1/timestamps/verify");
    let q = t.query("q.tsq", &["-sha256", "-cert"]);
    let r = t.stamp(&q, "r.tsr");
    let doc = format!("data=@{}", p(&t.doc));

    // Garbage and truncated tokens: verification fails at the format check (422, JSON).
    let garbage = t.env.write("garbage.tsr", b"certainly not a timestamp token");
    let bytes = std::fs::read(&r).unwrap();
    let truncated = t.env.write("truncated.tsr", &bytes[..bytes.len() / 2]);
    for tok in [&garbage, &truncated] {
        let (code, body) = curl_post_form(&url, &[format!("token=@{}", p(tok)), doc.clone()]);
        assert_eq!(code, 422, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["verified"], false);
        assert!(v["failed_check"].as_str().unwrap().contains("format"), "{body}");
    }
    // Malformed forms: 400 with a JSON error naming the problem.
    let token = format!("token=@{}", p(&r));
    for (fields, names) in [
        (vec![token.clone(), "digest=zz-not-hex".to_string()], "not hex"),
        (vec![token.clone(), doc.clone(), "bogus=1".to_string()], "unknown part"),
        (vec![token.clone(), doc.clone(), "digest=00".to_string()], "exactly one"),
        (vec![token.clone(), token.clone(), doc.clone()], "twice"),
    ] {
        let (code, body) = curl_post_form(&url, &fields);
        assert_eq!(code, 400, "{fields:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains(names), "{body}");
    }
    // Raw bodies that are not well-formed multipart.
    let ct = "multipart/form-data; boundary=XyZ";
    let cut =
        t.env.write("cut.body", b"--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n0\x82");
    let junk = t.env.write("junk.body", vec![0xffu8; 4096]);
    for f in [&cut, &junk] {
        let (code, _, body) = curl_post(&url, ct, f);
        assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].is_string());
    }
    // Data over the 16 MiB limit: 413.
    let big = t.env.write("big.bin", vec![b'a'; (16 << 20) + 1]);
    let (code, body) = curl_post_form(&url, &[token.clone(), format!("data=@{}", p(&big))]);
    assert_eq!(code, 413, "{body}");
    // Still serving, and a good request still verifies.
    let (code, body) = curl_post_form(&url, &[token, doc]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"verified\":true"), "{body}");
}
