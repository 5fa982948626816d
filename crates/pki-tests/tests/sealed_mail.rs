//! Issue 21 — sealed mail: `POST /api/v1/mail/seal` on a running `pki serve`, its messages read
//! by clients we did not write (OpenSSL, NSS's cmsutil, Python's `email`). Each test names the
//! acceptance item it proves.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use der::{Decode, Encode};
use pki_tests::http_client::{send, Reply};
use pki_tests::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const P12_PASSWORD: &str = "recipient-pass-2026";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A CA with the sender `statements`, the API key `mailer` (mail permission, allowed to send as
/// `statements`) and `lookups` (no mail permission), and two recipients: alice@example.com
/// (RSA-2048, key generated and escrowed, delivered as PKCS#12) and bob@example.com (P-256, from a
/// CSR whose key the test holds).
struct Fixture {
    env: Env,
    server: Option<Server>,
    ca: CaFiles,
    mailer: String,
    lookups: String,
    alice_p12: PathBuf,
    alice_key: PathBuf,
    alice_cert: PathBuf,
    alice_serial: String,
    bob_key: PathBuf,
    bob_cert: PathBuf,
}

fn fixture(extra: &str) -> Fixture {
    // bank.example is among the test configuration's [validation] enterprise_domains, which
    // sender identities use.
    let env = Env::with_config(&format!("[mail]\n{extra}"));
    env.init();
    let ca = env.ca_files();
    let out =
        env.pki(["mail", "sender", "add", "--name", "statements", "--email", "statements@bank.example"]);
    assert!(out.stdout.contains("added sender statements"), "{}", out.stdout);
    let mailer =
        env.pki(["apikey", "create", "--name", "mailer", "--permission", "mail"]).stdout.trim().to_string();
    let lookups = env.pki(["apikey", "create", "--name", "lookups"]).stdout.trim().to_string();
    env.pki(["mail", "sender", "allow", "--name", "statements", "--key", "mailer"]);

    let pw = env.write("p12.pw", format!("{P12_PASSWORD}\n"));
    let alice_p12 = env.path("alice.p12");
    let out = env.pki([
        "issue",
        "--email",
        "alice@example.com",
        "--usage",
        "encryption",
        "--generate",
        "--key-type",
        "rsa2048",
        "--p12",
        &p(&alice_p12),
        "--p12-password-file",
        &p(&pw),
    ]);
    let alice_serial = cert_serial(&pem_der(&out.stdout));
    // The key and the certificate out of the PKCS#12, as a recipient's mail client would.
    let from_p12 = |name: &str, what: [&str; 2]| {
        let out = env.path(name);
        let pass = format!("pass:{P12_PASSWORD}");
        let (a, b) = (what[0], what[1]);
        openssl(["pkcs12", "-in", &p(&alice_p12), "-passin", &pass, a, b, "-out", &p(&out)]);
        out
    };
    let alice_key = from_p12("alice.key", ["-nodes", "-nocerts"]);
    let alice_cert = from_p12("alice.crt", ["-nokeys", "-clcerts"]);

    let bob_key = gen_key(env.dir(), "bob.key", KeySpec::P256);
    let csr = make_csr(&bob_key, &env.path("bob.csr"), "/CN=bob@example.com", &[]);
    let bob = env.pki(["issue", "--email", "bob@example.com", "--usage", "encryption", "--csr", &p(&csr)]);
    let bob_cert = env.write("bob.crt", &bob.stdout);
    let server = Some(env.serve());
    Fixture {
        env,
        server,
        ca,
        mailer,
        lookups,
        alice_p12,
        alice_key,
        alice_cert,
        alice_serial,
        bob_key,
        bob_cert,
    }
}

impl Fixture {
    fn post(&self, path: &str, key: Option<&str>, accept: Option<&str>, body: &[u8]) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        if let Some(a) = accept {
            headers.push(("Accept", a));
        }
        send(self.env.port, "POST", path, &headers, Some(body), Duration::from_secs(120)).unwrap()
    }

    fn seal(&self, req: &serde_json::Value) -> Reply {
        self.post("/api/v1/mail/seal", Some(&self.mailer), None, req.to_string().as_bytes())
    }

    /// A single request, answered in JSON.
    fn seal_json(&self, req: &serde_json::Value) -> Reply {
        self.post(
            "/api/v1/mail/seal",
            Some(&self.mailer),
            Some("application/json"),
            req.to_string().as_bytes(),
        )
    }

    /// A bulk request of `messages`, answered in JSON.
    fn bulk(&self, messages: &[serde_json::Value]) -> Reply {
        let body = serde_json::json!({ "messages": messages }).to_string();
        self.post("/api/v1/mail/seal/bulk", Some(&self.mailer), None, body.as_bytes())
    }

    /// A bulk request of `messages`, which must be answered 200: its results, and how long it took.
    fn timed_bulk(&self, messages: &[serde_json::Value]) -> (Vec<serde_json::Value>, Duration) {
        let start = std::time::Instant::now();
        let r = self.bulk(messages);
        let took = start.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        (r.json()["results"].as_array().unwrap().clone(), took)
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

/// A 2 KB statement text and a 100 KB "PDF" (a PDF header before random bytes).
fn statement() -> (String, Vec<u8>) {
    let text = "Dear customer,\r\nyour statement for März is attached.\r\n".repeat(40);
    let mut pdf = b"%PDF-1.7\n".to_vec();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while pdf.len() < 100 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pdf.push(x as u8);
    }
    (text, pdf)
}

fn request(to: &str, text: &str, pdf: &[u8], timestamp: bool) -> serde_json::Value {
    serde_json::json!({
        "to": to,
        "sender": "statements",
        "subject": "Ihr Kontoauszug für März",
        "text": text,
        "attachments": [{"filename": "statement.pdf", "content_type": "application/pdf", "base64": B64.encode(pdf)}],
        "timestamp": timestamp,
    })
}

/// A message of `text` to alice@example.com that asks for delivery.
fn to_deliver(text: &str) -> serde_json::Value {
    let mut r = request("alice@example.com", text, b"%PDF-1.7 delivered", false);
    r["deliver"] = serde_json::json!(true);
    r
}

/// Python's `email` parser on a message: its headers, and the decoded text and attachment.
fn python_parts(message: &Path) -> serde_json::Value {
    let script = r#"
import email, email.policy, json, sys, base64
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
out = {"headers": {k: str(v) for k, v in m.items()}, "defects": [str(d) for d in m.defects], "parts": []}
for part in m.walk():
    if part.is_multipart():
        continue
    payload = part.get_payload(decode=True)
    out["parts"].append({"type": part.get_content_type(), "filename": part.get_filename(),
                         "base64": base64.b64encode(payload).decode()})
print(json.dumps(out))
"#;
    let python = require_tool("python3", "apt-get install -y python3");
    let out = run(Command::new(python).arg("-c").arg(script).arg(message)).ok();
    serde_json::from_str(&out.stdout).unwrap()
}

/// Python's `email` parser on a bulk answer in MIME (`Accept: multipart/mixed`) of the content
/// type `content_type`: each part's type and `Pki-*` fields, its message (its bytes as the parser
/// writes them again, base64) and that message's `Message-ID`, or its body.
fn python_multipart(answer: &Path, content_type: &str) -> serde_json::Value {
    let script = r#"
import email, email.policy, json, sys, base64
raw = open(sys.argv[1], 'rb').read()
m = email.message_from_bytes(b"Content-Type: " + sys.argv[2].encode() + b"\r\n\r\n" + raw, policy=email.policy.default)
out = {"defects": [str(d) for d in m.defects], "parts": []}
for part in m.iter_parts():
    one = {"type": part.get_content_type(), "status": part["Pki-Status"], "kind": part["Pki-Mail-Kind"],
           "message_id": part["Pki-Message-Id"], "certificate_serial": part["Pki-Certificate-Serial"],
           "timestamp_serial": part["Pki-Timestamp-Serial"]}
    out["defects"] += [str(d) for d in part.defects]
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()[0]
        one["inner_message_id"] = str(inner["Message-ID"])
        one["message"] = base64.b64encode(inner.as_bytes(policy=email.policy.SMTP)).decode()
    else:
        one["body"] = part.get_payload(decode=True).decode()
    out["parts"].append(one)
print(json.dumps(out))
"#;
    let python = require_tool("python3", "apt-get install -y python3");
    let out = run(Command::new(python).arg("-c").arg(script).arg(answer).arg(content_type)).ok();
    serde_json::from_str(&out.stdout).unwrap()
}

fn part<'a>(parts: &'a serde_json::Value, content_type: &str) -> Vec<u8> {
    let found: Vec<&'a serde_json::Value> =
        parts["parts"].as_array().unwrap().iter().filter(|p| p["type"] == content_type).collect();
    assert_eq!(found.len(), 1, "one {content_type} part in {parts}");
    B64.decode(found[0]["base64"].as_str().unwrap()).unwrap()
}

/// The signature value and the `id-aa-signatureTimeStampToken` of the one signer of a
/// `SignedData` (DER).
fn signature_and_token(signed_der: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let ci = cms::content_info::ContentInfo::from_der(signed_der).unwrap();
    let sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
    assert_eq!(sd.signer_infos.0.len(), 1);
    let si = sd.signer_infos.0.get(0).unwrap();
    let token = si.unsigned_attrs.as_ref().and_then(|attrs| {
        attrs
            .iter()
            .find(|a| a.oid.to_string() == "1.2.840.113549.1.9.16.2.14")
            .map(|a| a.values.get(0).unwrap().to_der().unwrap())
    });
    (si.signature.as_bytes().to_vec(), token)
}

/// The DER of the CMS object in an S/MIME entity, per OpenSSL.
/// The message of a JSON answer (`message_base64`) written to `TAG.eml` and decrypted with
/// `openssl COMMAND -decrypt` (`smime` or `cms`) by `cert` and `key` into `TAG.signed`; that path.
fn decrypt_answer(
    env: &Env,
    tag: &str,
    answer: &serde_json::Value,
    command: &str,
    cert: &Path,
    key: &Path,
) -> PathBuf {
    let message = env.write(
        &format!("{tag}.eml"),
        B64.decode(answer["message_base64"].as_str().expect("message_base64")).expect("base64"),
    );
    let signed = env.path(&format!("{tag}.signed"));
    openssl([
        command,
        "-decrypt",
        "-in",
        &p(&message),
        "-recip",
        &p(cert),
        "-inkey",
        &p(key),
        "-out",
        &p(&signed),
    ]);
    signed
}

/// `openssl ts -verify` of the timestamp token in the file `token` over the SHA-256 of `data`,
/// chained to `root`.
fn ts_verify(token: &Path, data: &[u8], root: &Path) -> Out {
    let digest = sha256_hex(data);
    openssl_try(["ts", "-verify", "-in", &p(token), "-token_in", "-digest", &digest, "-CAfile", &p(root)])
}

fn cms_der(env: &Env, entity: &Path, name: &str) -> Vec<u8> {
    let out = env.path(name);
    openssl(["cms", "-cmsout", "-in", &p(entity), "-inform", "SMIME", "-outform", "DER", "-out", &p(&out)]);
    std::fs::read(out).unwrap()
}

/// Acceptance 1 and 3: OpenSSL decrypts (RSA from the escrowed PKCS#12 with `smime -decrypt`,
/// P-256 from a CSR with `cms -decrypt`: OpenSSL's `smime` command is PKCS#7 and has no key
/// agreement), `smime -verify -CAfile root.pem` accepts the signed entity, its signer is the
/// sender identity, text and PDF equal what was sent, the timestamp verifies with `openssl ts
/// -verify` against the signature value; Python's `email` parser reads the message's headers.
#[test]
fn openssl_decrypts_and_verifies_rsa_and_p256_messages_with_their_timestamp() {
    let mut f = fixture("");
    let (text, pdf) = statement();
    for (who, key, cert) in [
        ("alice@example.com", f.alice_key.clone(), f.alice_cert.clone()),
        ("bob@example.com", f.bob_key.clone(), f.bob_cert.clone()),
    ] {
        let reply = f.seal(&request(who, &text, &pdf, true));
        assert_eq!(reply.status, 200, "{who}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("message/rfc822"));
        assert_eq!(reply.header("pki-mail-kind"), Some("sealed"));
        let tag = who.split('@').next().unwrap();
        let message = f.env.write(&format!("{tag}.eml"), &reply.body);

        let outer = python_parts(&message);
        assert_eq!(outer["defects"], serde_json::json!([]), "{outer}");
        let h = &outer["headers"];
        assert_eq!(h["From"], "statements <statements@bank.example>");
        assert_eq!(h["To"], who);
        assert_eq!(h["Subject"], "Ihr Kontoauszug für März");
        assert_eq!(h["MIME-Version"], "1.0");
        assert!(h["Message-ID"].as_str().unwrap().ends_with("@bank.example>"), "{h}");
        assert!(h["Date"].as_str().unwrap().ends_with("+0000"), "{h}");
        let ct = h["Content-Type"].as_str().unwrap().replace('"', "");
        assert_eq!(ct, "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m");

        let signed = f.env.path(&format!("{tag}.signed"));
        let decrypt = if who.starts_with("alice") { "smime" } else { "cms" };
        openssl([
            decrypt,
            "-decrypt",
            "-in",
            &p(&message),
            "-recip",
            &p(&cert),
            "-inkey",
            &p(&key),
            "-out",
            &p(&signed),
        ]);
        // Someone else's key does not open it.
        let (other_key, other_cert) =
            if who.starts_with("alice") { (&f.bob_key, &f.bob_cert) } else { (&f.alice_key, &f.alice_cert) };
        let wrong = openssl_try([
            "cms",
            "-decrypt",
            "-in",
            &p(&message),
            "-recip",
            &p(other_cert),
            "-inkey",
            &p(other_key),
        ]);
        assert!(!wrong.status.success(), "{who}'s message opened with another key");

        let inner = f.env.path(&format!("{tag}.inner"));
        let signer = f.env.path(&format!("{tag}.signer.pem"));
        let v = openssl_try([
            "smime",
            "-verify",
            "-in",
            &p(&signed),
            "-CAfile",
            &p(&f.ca.root),
            "-out",
            &p(&inner),
            "-signer",
            &p(&signer),
        ]);
        assert!(v.status.success() && v.stderr.contains("Verification successful"), "{}", v.stderr);
        let subject =
            openssl(["x509", "-in", &p(&signer), "-noout", "-ext", "subjectAltName,extendedKeyUsage"]).stdout;
        assert!(subject.contains("email:statements@bank.example"), "{subject}");
        assert!(subject.contains("E-mail Protection"), "{subject}");

        let parts = python_parts(&inner);
        assert_eq!(String::from_utf8(part(&parts, "text/plain")).unwrap(), text);
        assert_eq!(part(&parts, "application/pdf"), pdf);
        assert!(parts["parts"].to_string().contains("statement.pdf"));

        let (signature, token) = signature_and_token(&cms_der(&f.env, &signed, &format!("{tag}.p7m")));
        let token = f.env.write(&format!("{tag}.tst"), token.expect("a signature timestamp token"));
        let ok = ts_verify(&token, &signature, &f.ca.root);
        assert!(ok.stdout.contains("Verification: OK"), "{}{}", ok.stdout, ok.stderr);
        assert!(!ts_verify(&token, b"another signature", &f.ca.root).status.success());
    }

    // Without "timestamp": no token; JSON answer on request.
    let reply = f.post(
        "/api/v1/mail/seal",
        Some(&f.mailer),
        Some("application/json"),
        request("alice@example.com", "short", b"%PDF-1.7", false).to_string().as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let j = reply.json();
    assert_eq!(j["kind"], "sealed");
    assert_eq!(j["certificate_serial"], f.alice_serial.as_str());
    assert!(j.get("timestamp_serial").is_none(), "{j}");
    let message = f.env.write("plain.eml", B64.decode(j["message_base64"].as_str().unwrap()).unwrap());
    let signed = f.env.path("plain.signed");
    openssl(["smime", "-decrypt", "-in", &p(&message), "-inkey", &p(&f.alice_key), "-out", &p(&signed)]);
    assert!(signature_and_token(&cms_der(&f.env, &signed, "plain.p7m")).1.is_none());

    // The audit log names each message — sender, recipient hash, certificate serial, message id,
    // timestamp serial — and nothing of its body.
    f.stop();
    let entries = audit_log(&f);
    let sealed: Vec<_> = entries.iter().filter(|e| e.action.name() == "mail.seal").collect();
    assert_eq!(sealed.len(), 3, "{sealed:?}");
    let alice_hash = sha256_hex(b"alice@example.com");
    let first = &sealed[0].details;
    assert!(first.contains("sender statements") && first.contains(&alice_hash), "{first}");
    assert!(first.contains(&format!("cert {}", f.alice_serial)), "{first}");
    assert!(first.contains("message-id <") && !first.contains("timestamp -"), "{first}");
    assert!(sealed[2].details.contains("timestamp -"), "{}", sealed[2].details);
    for e in &entries {
        assert!(!e.details.contains("Dear customer") && !e.details.contains("März"), "{e:?}");
    }
    for e in &sealed {
        assert!(!e.details.contains("@example.com"), "{e:?}");
    }
}

/// Acceptance 2: NSS's `cmsutil -D`, with the recipient's PKCS#12 imported, decrypts the RSA
/// message and reports a good signature by the sender; altered content is not reported good.
#[test]
fn nss_cmsutil_decrypts_the_rsa_message_and_reports_a_good_signature() {
    let f = fixture("");
    let cmsutil = require_tool("cmsutil", "apt-get install -y libnss3-tools");
    let certutil = require_tool("certutil", "apt-get install -y libnss3-tools");
    let pk12util = require_tool("pk12util", "apt-get install -y libnss3-tools");
    let (text, pdf) = statement();
    let reply = f.seal(&request("alice@example.com", &text, &pdf, true));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let message = f.env.write("nss.eml", &reply.body);

    let db = f.env.path("nssdb");
    std::fs::create_dir(&db).unwrap();
    let dbarg = format!("sql:{}", p(&db));
    run(Command::new(&certutil).args(["-N", "-d", &dbarg, "--empty-password"])).ok();
    run(Command::new(&pk12util).args(["-i", &p(&f.alice_p12), "-d", &dbarg, "-W", P12_PASSWORD])).ok();
    run(Command::new(&certutil).args([
        "-A",
        "-d",
        &dbarg,
        "-n",
        "root",
        "-t",
        "C,C,C",
        "-i",
        &p(&f.ca.root),
    ]))
    .ok();

    let enveloped = f.env.write("nss.env.der", cms_der(&f.env, &message, "nss.env.der"));
    let decrypted = f.env.path("nss.signed");
    // `-h 1` writes the structure as header lines before the content: once to see it, once for
    // the content alone.
    let out =
        run(Command::new(&cmsutil).args(["-D", "-i", &p(&enveloped), "-d", &dbarg, "-h", "1", "-n"])).ok();
    assert!(out.stdout.contains("type=envelopedData"), "{}", out.stdout);
    run(Command::new(&cmsutil).args(["-D", "-i", &p(&enveloped), "-d", &dbarg, "-o", &p(&decrypted)])).ok();

    // Inside: `multipart/signed`, its detached signature checked by NSS against the signed part.
    let entity = std::fs::read(&decrypted).unwrap();
    let content = signed_part(&entity);
    let signed = f.env.write("nss.sd.der", cms_der(&f.env, &decrypted, "nss.sd.der"));
    let content_file = f.env.write("nss.content", &content);
    let verify = |content: &Path| {
        run(Command::new(&cmsutil).args([
            "-D",
            "-i",
            &p(&signed),
            "-c",
            &p(content),
            "-d",
            &dbarg,
            "-h",
            "1",
            "-n",
        ]))
    };
    let out = verify(&content_file).ok();
    assert!(
        out.stdout.contains("signer0.id=\"statements@bank.example\"; signer0.status=GoodSignature;"),
        "{}",
        out.stdout
    );
    let parts = python_parts(&content_file);
    assert_eq!(part(&parts, "application/pdf"), pdf);

    // One bit of the signed content changed: NSS does not call it good.
    let mut bad = content.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    let tampered = f.env.write("nss.bad.content", &bad);
    let out = verify(&tampered);
    assert!(!out.stdout.contains("GoodSignature"), "{}", out.stdout);
}

/// The first body part of a `multipart/signed` entity, exactly as signed: from after the first
/// delimiter line to the CRLF before the next (RFC 1847: that CRLF belongs to the delimiter).
fn signed_part(entity: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(entity);
    let head = text.split("\r\n\r\n").next().unwrap();
    assert!(head.contains("multipart/signed"), "{head}");
    let boundary = head.split("boundary=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
    let open = format!("--{boundary}\r\n");
    let start = text.find(&open).unwrap() + open.len();
    let end = start + text[start..].find(&format!("\r\n--{boundary}")).unwrap();
    entity[start..end].to_vec()
}

/// Acceptance 4: no certificate → 404 `{"exists": false}`, and with the fallback a signed,
/// unencrypted invitation that OpenSSL verifies; a revoked encryption certificate is never used;
/// a key without the mail permission → 403, without a key → 401, a sender the key may not use →
/// 403; bad JSON, bad base64, truncated, garbage and oversized bodies → 4xx JSON.
#[test]
fn fallback_revocation_permissions_and_bad_input() {
    let f = fixture("max_body_mib = 1\n");
    let (text, pdf) = statement();

    // No certificate.
    let nobody = request("nobody@example.com", &text, &pdf, false);
    let r = f.seal(&nobody);
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), serde_json::json!({"exists": false}));
    let mut with_fallback = nobody.clone();
    with_fallback["fallback"] = serde_json::json!("invitation");
    with_fallback["timestamp"] = serde_json::json!(true);
    let r = f.seal(&with_fallback);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("pki-mail-kind"), Some("invitation"));
    let invitation = f.env.write("invitation.eml", &r.body);
    let headers = python_parts(&invitation);
    assert!(
        headers["headers"]["Content-Type"].as_str().unwrap().starts_with("multipart/signed"),
        "{headers}"
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains("statement for"),
        "the statement must not go out in clear"
    );
    let inner = f.env.path("invitation.inner");
    let v = openssl_try([
        "smime",
        "-verify",
        "-in",
        &p(&invitation),
        "-CAfile",
        &p(&f.ca.root),
        "-out",
        &p(&inner),
    ]);
    assert!(v.status.success(), "{}", v.stderr);
    let parts = python_parts(&inner);
    assert!(String::from_utf8(part(&parts, "text/plain")).unwrap().contains("certificate"));

    // A revoked certificate is never used: carol's newer one revoked, the older one is taken;
    // both revoked, there is none.
    let mut carol = Vec::new();
    for i in 0..2 {
        let key = gen_key(f.env.dir(), &format!("carol{i}.key"), KeySpec::P256);
        let csr = make_csr(&key, &f.env.path(&format!("carol{i}.csr")), "/CN=carol@example.com", &[]);
        let out =
            f.env.pki(["issue", "--email", "carol@example.com", "--usage", "encryption", "--csr", &p(&csr)]);
        let cert = f.env.write(&format!("carol{i}.crt"), &out.stdout);
        carol.push((key, cert, cert_serial(&pem_der(&out.stdout))));
        std::thread::sleep(Duration::from_millis(1100));
    }
    f.env.pki(["revoke", "--serial", &carol[1].2, "--reason", "keyCompromise"]);
    let r = f.post(
        "/api/v1/mail/seal",
        Some(&f.mailer),
        Some("application/json"),
        request("carol@example.com", "t", b"x", false).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["certificate_serial"], carol[0].2.as_str());
    let m = f.env.write("carol.eml", B64.decode(r.json()["message_base64"].as_str().unwrap()).unwrap());
    let revoked_key =
        openssl_try(["cms", "-decrypt", "-in", &p(&m), "-recip", &p(&carol[1].1), "-inkey", &p(&carol[1].0)]);
    assert!(!revoked_key.status.success(), "a message was encrypted to a revoked certificate");
    openssl(["cms", "-decrypt", "-in", &p(&m), "-recip", &p(&carol[0].1), "-inkey", &p(&carol[0].0)]);
    f.env.pki(["revoke", "--serial", &carol[0].2, "--reason", "superseded"]);
    let r = f.seal(&request("carol@example.com", "t", b"x", false));
    assert_eq!((r.status, r.json()), (404, serde_json::json!({"exists": false})));

    // Who may send.
    let body = request("alice@example.com", "t", b"x", false).to_string();
    let r = f.post("/api/v1/mail/seal", Some(&f.lookups), None, body.as_bytes());
    r.expect_error(403, "mail permission", "a key without the mail permission");
    let r = f.post("/api/v1/mail/seal", None, None, body.as_bytes());
    r.expect_error(401, "API key", "no key");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "RFC 6750's challenge");
    let r = f.post(
        "/api/v1/mail/seal",
        Some("cdk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        None,
        body.as_bytes(),
    );
    r.expect_error(401, "unknown", "an unknown key");
    assert_eq!(r.header("www-authenticate"), Some("Bearer error=\"invalid_token\""));
    let mut other_sender = request("alice@example.com", "t", b"x", false);
    other_sender["sender"] = serde_json::json!("otp");
    f.seal(&other_sender).expect_error(403, "may not send as", "a sender the key is not allowed");
    f.env.pki_fails(
        ["mail", "sender", "add", "--name", "otp", "--email", "otp@elsewhere.example"],
        &["otp@elsewhere.example", "enterprise domains"],
    );

    // Quotas per API key: one message per 100 s, one at once; then 429 with Retry-After.
    let slow = f
        .env
        .pki(["apikey", "create", "--name", "slow", "--permission", "mail", "--rate", "0.01", "--burst", "1"])
        .stdout
        .trim()
        .to_string();
    f.env.pki(["mail", "sender", "allow", "--name", "statements", "--key", "slow"]);
    let one = request("alice@example.com", "t", b"x", false).to_string();
    assert_eq!(f.post("/api/v1/mail/seal", Some(&slow), None, one.as_bytes()).status, 200);
    let r = f.post("/api/v1/mail/seal", Some(&slow), None, one.as_bytes());
    r.expect_error(429, "over quota", "the second message of a key with a burst of 1");
    assert!(r.header("retry-after").is_some());
    // A bulk request is charged for the messages it seals, not for those refused as invalid:
    // with a burst of 3, one valid message among three invalid ones (answered 400 each) leaves
    // two units, so two single messages follow and only the third is refused. Charged for all
    // four, the key would be in debt and the first single refused.
    let three = f
        .env
        .pki([
            "apikey",
            "create",
            "--name",
            "three",
            "--permission",
            "mail",
            "--rate",
            "0.001",
            "--burst",
            "3",
        ])
        .stdout
        .trim()
        .to_string();
    f.env.pki(["mail", "sender", "allow", "--name", "statements", "--key", "three"]);
    let mut invalid = request("alice@example.com", "t", b"x", false);
    invalid["to"] = serde_json::json!("not an address");
    let mixed = serde_json::json!({"messages": [
        request("alice@example.com", "one", b"x", false), invalid, invalid, invalid,
    ]});
    let r = f.post("/api/v1/mail/seal/bulk", Some(&three), None, mixed.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let statuses: Vec<u64> =
        r.json()["results"].as_array().unwrap().iter().map(|x| x["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 400, 400, 400]);
    for n in 1..=2 {
        let r = f.post("/api/v1/mail/seal", Some(&three), None, one.as_bytes());
        assert_eq!(r.status, 200, "single {n} after a bulk that sealed one message: {}", r.text());
    }
    let r = f.post("/api/v1/mail/seal", Some(&three), None, one.as_bytes());
    r.expect_error(429, "over quota", "the fourth message of a key with a burst of 3");
    // Delivery asked for without [mail.relay]: 503, nothing sent.
    let mut deliver = request("alice@example.com", "t", b"x", false);
    deliver["deliver"] = serde_json::json!(true);
    f.seal(&deliver).expect_error(503, "[mail.relay]", "deliver without a relay");

    // Bad input: JSON 4xx, never a panic or a 5xx.
    let bad = |body: &[u8], status: u16, needle: &str| {
        let r = f.post("/api/v1/mail/seal", Some(&f.mailer), None, body);
        r.expect_error(status, needle, &String::from_utf8_lossy(&body[..body.len().min(60)]));
    };
    bad(b"{not json", 400, "not a valid request");
    bad(b"", 400, "not a valid request");
    bad(&body.as_bytes()[..body.len() / 2], 400, "not a valid request");
    let mut bad_b64 = request("alice@example.com", "t", b"x", false);
    bad_b64["attachments"][0]["base64"] = serde_json::json!("%%%not-base64%%%");
    bad(bad_b64.to_string().as_bytes(), 400, "not base64");
    let mut injected = request("alice@example.com", "t", b"x", false);
    injected["subject"] = serde_json::json!("Hi\r\nBcc: everyone@example.com");
    bad(injected.to_string().as_bytes(), 400, "subject");
    // An address of 9,000 characters: quoted only in part.
    let mut long_to = request("alice@example.com", "t", b"x", false);
    long_to["to"] = serde_json::json!(format!("{}@example.com", "a".repeat(9000)));
    let r = f.post("/api/v1/mail/seal", Some(&f.mailer), None, long_to.to_string().as_bytes());
    r.expect_error(400, "(9012 characters): longer than 254 characters", "an address of 9,000 characters");
    assert!(r.body.len() < 400, "the error quotes the whole address: {}", r.text());
    // A value of 9,000 characters echoed by its error, and a field name as long: cut in the
    // middle, the reason kept.
    let mut long_fallback = request("alice@example.com", "t", b"x", false);
    long_fallback["fallback"] = serde_json::json!("b".repeat(9000));
    let mut long_field = request("alice@example.com", "t", b"x", false);
    long_field["x".repeat(9000)] = serde_json::json!(1);
    for (body, needle) in
        [(long_fallback, "is not a fallback: expected invitation"), (long_field, "unknown field")]
    {
        let r = f.post("/api/v1/mail/seal", Some(&f.mailer), None, body.to_string().as_bytes());
        r.expect_error(400, needle, "a value of 9,000 characters");
        assert!(r.text().contains("characters left out)…") && r.body.len() < 1200, "{}", r.text());
    }
    let mut garbage = vec![0u8; 5000];
    let mut x = 7u64;
    for b in garbage.iter_mut() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *b = (x >> 56) as u8;
    }
    bad(&garbage, 400, "not a valid request");
    // Over [mail] max_body_mib = 1: refused while reading.
    let big = request("alice@example.com", "t", &vec![0u8; 1 << 20], false).to_string();
    bad(big.as_bytes(), 413, "larger than");
    // A body cut short (the client stops sending before its declared length): 400 JSON.
    let auth = format!("Bearer {}", f.mailer);
    let cut = pki_tests::raw_tcp::cut_short(
        f.env.port,
        "/api/v1/mail/seal",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        &body.as_bytes()[..100],
        body.len(),
    )
    .expect("an answer to a body cut short");
    assert_eq!((cut.status, cut.header("content-type")), (400, Some("application/json")), "{}", cut.text());
    assert!(cut.text().contains("the body ended before its declared length"), "{}", cut.text());
    // Bulk: not an array, empty, and over 1000 messages.
    let bulk = |body: String| f.post("/api/v1/mail/seal/bulk", Some(&f.mailer), None, body.as_bytes());
    bulk("{\"messages\": 3}".into()).expect_error(400, "not a valid request", "bulk of a number");
    bulk("{\"messages\": []}".into()).expect_error(400, "1 to 1000", "empty bulk");
    let many: Vec<serde_json::Value> = (0..1001).map(|_| serde_json::json!({})).collect();
    bulk(serde_json::json!({"messages": many}).to_string()).expect_error(400, "1 to 1000", "bulk of 1001");
    // GET is not a seal.
    let r = send(f.env.port, "GET", "/api/v1/mail/seal", &[], None, Duration::from_secs(10)).unwrap();
    r.expect_error(405, "POST", "GET");
}

/// The bulk endpoint answers per message, in order: sealed, 404, 400, invitation.
#[test]
fn bulk_answers_every_message_in_order() {
    let f = fixture("");
    let mut fallback = request("nobody@example.com", "t", b"x", false);
    fallback["fallback"] = serde_json::json!("invitation");
    let mut bad = request("alice@example.com", "t", b"x", false);
    bad["to"] = serde_json::json!("not an address");
    let body = serde_json::json!({"messages": [
        request("alice@example.com", "one", b"%PDF-1", true),
        request("nobody@example.com", "two", b"x", false),
        bad,
        fallback,
        request("bob@example.com", "five", b"%PDF-5", false),
    ]});
    let r = f.post("/api/v1/mail/seal/bulk", Some(&f.mailer), None, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    let statuses: Vec<u64> = results.iter().map(|x| x["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 404, 400, 200, 200]);
    assert_eq!(results[0]["kind"], "sealed");
    assert!(results[0]["timestamp_serial"].is_string());
    assert_eq!(results[1]["exists"], false);
    assert!(results[2]["error"].as_str().unwrap().contains("to"));
    assert_eq!(results[3]["kind"], "invitation");
    let signed = decrypt_answer(&f.env, "bulk5", &results[4], "cms", &f.bob_cert, &f.bob_key);
    let inner = f.env.path("bulk5.inner");
    openssl(["smime", "-verify", "-in", &p(&signed), "-CAfile", &p(&f.ca.root), "-out", &p(&inner)]);
    assert_eq!(part(&python_parts(&inner), "application/pdf"), b"%PDF-5");

    // The same with `Accept: multipart/mixed`: one MIME part a message, in order, each the
    // message itself (`message/rfc822`) or its error (JSON), as Python's `email` parser reads it.
    let r = f.post(
        "/api/v1/mail/seal/bulk",
        Some(&f.mailer),
        Some("multipart/mixed"),
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let content_type = r.header("content-type").expect("a content type").to_string();
    assert!(content_type.starts_with("multipart/mixed; boundary="), "{content_type}");
    assert_eq!(r.header("content-length").map(|n| n.parse::<usize>().unwrap()), Some(r.body.len()));
    let answer = f.env.write("bulk.multipart", &r.body);
    let parts = python_multipart(&answer, &content_type);
    assert_eq!(parts["defects"], serde_json::json!([]), "{parts}");
    let parts = parts["parts"].as_array().unwrap().clone();
    let statuses: Vec<&str> = parts.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["200", "404", "400", "200", "200"]);
    let types: Vec<&str> = parts.iter().map(|x| x["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["message/rfc822", "application/json", "application/json", "message/rfc822", "message/rfc822"]
    );
    assert_eq!(parts[0]["kind"], "sealed");
    assert!(
        parts[0]["timestamp_serial"].is_string() && parts[0]["certificate_serial"].is_string(),
        "{}",
        parts[0]
    );
    let error: serde_json::Value = serde_json::from_str(parts[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!((&error["exists"], &error["status"]), (&serde_json::json!(false), &serde_json::json!(404)));
    assert_eq!(parts[3]["kind"], "invitation");
    for one in [&parts[0], &parts[3], &parts[4]] {
        assert_eq!(one["inner_message_id"], format!("<{}>", one["message_id"].as_str().unwrap()), "{one}");
    }
    let message = serde_json::json!({"message_base64": parts[4]["message"]});
    let signed = decrypt_answer(&f.env, "multipart5", &message, "cms", &f.bob_cert, &f.bob_key);
    let inner = f.env.path("multipart5.inner");
    openssl(["smime", "-verify", "-in", &p(&signed), "-CAfile", &p(&f.ca.root), "-out", &p(&inner)]);
    assert_eq!(part(&python_parts(&inner), "application/pdf"), b"%PDF-5");

    // Several timestamped messages: the timestamps of a bulk are made in shares on every core,
    // and each message still carries the token over its own signature.
    let messages: Vec<serde_json::Value> =
        (0..5).map(|i| request("alice@example.com", &format!("statement {i}"), b"%PDF-t", true)).collect();
    let body = serde_json::json!({ "messages": messages });
    let r = f.post("/api/v1/mail/seal/bulk", Some(&f.mailer), None, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    for (i, one) in results.iter().enumerate() {
        assert_eq!(one["status"], 200, "{one}");
        let signed =
            decrypt_answer(&f.env, &format!("stamped{i}"), one, "smime", &f.alice_cert, &f.alice_key);
        let inner = f.env.path(&format!("stamped{i}.inner"));
        openssl(["smime", "-verify", "-in", &p(&signed), "-CAfile", &p(&f.ca.root), "-out", &p(&inner)]);
        let text = String::from_utf8(part(&python_parts(&inner), "text/plain")).unwrap();
        assert_eq!(text, format!("statement {i}"), "the answers in the messages' order");
        let (signature, token) = signature_and_token(&cms_der(&f.env, &signed, &format!("stamped{i}.p7m")));
        let token = f.env.write(&format!("stamped{i}.tst"), token.expect("a signature timestamp token"));
        let ok = ts_verify(&token, &signature, &f.ca.root);
        assert!(ok.stdout.contains("Verification: OK"), "message {i}: {}{}", ok.stdout, ok.stderr);
    }
}

/// `[mail] max_bulk_at_once = 1`: while one bulk request is being read, another is answered 503
/// with `Retry-After` and a JSON error before its body is read; single messages still pass; once
/// the first is answered, in full, its slot is free again.
#[test]
fn bulk_requests_beyond_the_most_at_once_are_a_503_with_retry_after() {
    use std::io::{Read as _, Write as _};
    let f = fixture("max_bulk_at_once = 1\n");
    let one =
        serde_json::json!({"messages": [request("alice@example.com", "one", b"%PDF-1", false)]}).to_string();
    let head = format!(
        "POST /api/v1/mail/seal/bulk HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        f.mailer,
        one.len()
    );
    let (start, rest) = one.as_bytes().split_at(one.len() / 2);
    // The first request's head and half its body: its handler holds the one slot while it reads.
    let send_first = || {
        let mut first = std::net::TcpStream::connect(("127.0.0.1", f.env.port)).unwrap();
        first.write_all(head.as_bytes()).unwrap();
        first.write_all(start).unwrap();
        first
    };
    let mut first = send_first();
    // Then a second bulk request, until one is refused (if none ever is, the test fails). Should
    // the server take the second before the first's head, the second passes; and if the first
    // was refused meanwhile (it has an answer), it is sent again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let busy = loop {
        std::thread::sleep(Duration::from_millis(200));
        let r = f.post("/api/v1/mail/seal/bulk", Some(&f.mailer), None, one.as_bytes());
        if r.status != 200 {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no bulk request refused while another was read");
        first.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        if first.read(&mut [0u8; 1]).is_ok() {
            first = send_first();
        }
    };
    assert_eq!(busy.status, 503, "{:.300}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("1"));
    let error = busy.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("1 bulk requests") && error.contains("retry in 1 s"), "{error}");
    let r = f.seal(&request("alice@example.com", "single", b"%PDF-s", false));
    assert_eq!(r.status, 200, "a single message is not held back: {}", r.text());

    first.write_all(rest).unwrap();
    first.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut out = Vec::new();
    first.read_to_end(&mut out).unwrap();
    let answer = pki_tests::raw_tcp::RawReply::parse(&out).expect("an HTTP answer");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let results: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert_eq!(results["results"][0]["status"], 200, "{results}");
    let r = f.post("/api/v1/mail/seal/bulk", Some(&f.mailer), None, one.as_bytes());
    assert_eq!(r.status, 200, "the slot is given back with the answer: {}", r.text());
}

/// The private Postfix of `scripts/with-mail.sh`: its SMTP address and Maildir.
fn test_mta() -> (String, PathBuf) {
    let get = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run `bash scripts/test.sh`, or `bash scripts/with-mail.sh cargo test -p pki-tests \
                 --test sealed_mail` (a private Postfix on loopback; installs Debian's postfix when missing)"
            )
        })
    };
    (get("PKI_TEST_SMTP"), PathBuf::from(get("PKI_TEST_MAILDIR")))
}

/// The delivered message carrying `message_id`, waited for.
fn delivered(maildir: &Path, message_id: &str) -> Vec<u8> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let needle = format!("Message-ID: <{message_id}>");
    loop {
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(maildir.join(sub)).into_iter().flatten().flatten() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                if String::from_utf8_lossy(&bytes).contains(&needle) {
                    return bytes;
                }
            }
        }
        assert!(std::time::Instant::now() < deadline, "no message {message_id} in {}", maildir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Delivery: `"deliver": true` hands the message to the configured relay (the real Postfix of
/// the tests) and answers with its queue id; the message arrives in the mailbox unchanged (after
/// the trace headers Postfix puts on top, with the line ends of a Maildir file), still opens
/// and verifies; the bulk endpoint delivers each message. Each delivery answered is in the audit
/// log after a SIGKILL, as `mail.deliver` with its message id and queue id.
#[test]
fn delivered_through_the_relay_into_the_mailbox_unchanged() {
    let (smtp, maildir) = test_mta();
    let (host, port) = smtp.rsplit_once(':').unwrap();
    let mut f = fixture(&format!("[mail.relay]\nhost = \"{host}\"\nport = {port}\ntls = \"none\"\n"));
    let (text, pdf) = statement();
    let mut req = request("alice@example.com", &text, &pdf, true);
    req["deliver"] = serde_json::json!(true);
    let r = f.seal_json(&req);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let queue_id = j["queue_id"].as_str().unwrap();
    assert!(!queue_id.is_empty() && queue_id.chars().all(|c| c.is_ascii_alphanumeric()), "{j}");
    let mut answered = vec![(j["message_id"].as_str().unwrap().to_string(), queue_id.to_string())];
    let sent = B64.decode(j["message_base64"].as_str().unwrap()).unwrap();
    let got = delivered(&maildir, j["message_id"].as_str().unwrap());
    let got_crlf = String::from_utf8(got).unwrap().replace('\n', "\r\n");
    let sent_text = std::str::from_utf8(&sent).unwrap();
    assert!(
        got_crlf.ends_with(sent_text),
        "the delivered message differs from the sealed one:\n--- delivered ends\n{:?}\n--- sealed ends\n{:?}",
        &got_crlf[got_crlf.len().saturating_sub(300)..],
        &sent_text[sent_text.len().saturating_sub(300)..]
    );
    let head = &got_crlf[..got_crlf.len() - sent.len()];
    assert!(head.contains("Delivered-To: alice@example.com"), "{head}");
    assert!(head.contains(&format!("with ESMTP id {queue_id}")), "{head}");

    let m = f.env.write("delivered.eml", got_crlf.as_bytes());
    let signed = f.env.path("delivered.signed");
    openssl(["smime", "-decrypt", "-in", &p(&m), "-inkey", &p(&f.alice_key), "-out", &p(&signed)]);
    let inner = f.env.path("delivered.inner");
    openssl(["smime", "-verify", "-in", &p(&signed), "-CAfile", &p(&f.ca.root), "-out", &p(&inner)]);
    assert_eq!(part(&python_parts(&inner), "application/pdf"), pdf);

    let mut a = request("alice@example.com", "bulk one", b"%PDF-b1", false);
    a["deliver"] = serde_json::json!(true);
    let mut b = request("bob@example.com", "bulk two", b"%PDF-b2", false);
    b["deliver"] = serde_json::json!(true);
    let r = f.post(
        "/api/v1/mail/seal/bulk",
        Some(&f.mailer),
        None,
        serde_json::json!({"messages": [a, b]}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for res in r.json()["results"].as_array().unwrap() {
        assert_eq!(res["status"], 200, "{res}");
        assert!(res["queue_id"].is_string(), "{res}");
        delivered(&maildir, res["message_id"].as_str().unwrap());
        answered.push((res["message_id"].as_str().unwrap().into(), res["queue_id"].as_str().unwrap().into()));
    }

    f.server.as_mut().unwrap().sigkill();
    let deliveries = entries_of(audit_log(&f), "mail.deliver");
    assert_eq!(deliveries.len(), answered.len(), "{deliveries:?}");
    for ((id, queue_id), e) in answered.iter().zip(&deliveries) {
        assert_eq!(e.outcome, "ok", "{e:?}");
        assert_eq!(e.actor, "apikey:mailer", "{e:?}");
        assert!(e.details.contains(&format!("message-id <{id}> to sha256:")), "{e:?}");
        assert!(e.details.ends_with(&format!("queue-id {queue_id}")), "{e:?}");
        assert!(!e.details.contains("@example.com"), "{e:?}");
    }
    assert!(deliveries[0].details.contains(&sha256_hex(b"alice@example.com")), "{:?}", deliveries[0]);
    assert!(deliveries[2].details.contains(&sha256_hex(b"bob@example.com")), "{:?}", deliveries[2]);
}

/// The audit log's entries, in order, the chain checked first (`pki audit verify`), with the
/// server stopped.
fn audit_log(f: &Fixture) -> Vec<ca_core::audit::AuditEntry> {
    f.env.pki(["audit", "verify"]);
    let db = match &f.env.database_url {
        Some(url) => cerdb::CertDb::open_postgres(url).unwrap(),
        None => cerdb::CertDb::open(f.env.data.join("db")).unwrap(),
    };
    ca_core::audit::entries(&db).unwrap()
}

/// The entries of `action` in `log`.
fn entries_of(log: Vec<ca_core::audit::AuditEntry>, action: &str) -> Vec<ca_core::audit::AuditEntry> {
    log.into_iter().filter(|e| e.action.name() == action).collect()
}

/// Many timestamped seals at once, to RSA and P-256 recipients: every one is answered 200 (a
/// 500 under four concurrent timestamped P-256 seals was once seen in the benchmark), and every
/// message opens with its recipient's key and verifies with OpenSSL; so does one too large to be
/// made on the HTTP worker that read it. After a SIGKILL, every message answered has its audit
/// entry, once.
#[test]
fn concurrent_timestamped_seals_to_rsa_and_p256_all_succeed_open_and_are_in_the_audit_log_after_sigkill() {
    let mut f = fixture("");
    let (text, pdf) = statement();
    let bodies: Vec<(bool, Vec<u8>)> = (0..2)
        .map(|i| {
            let to = if i == 0 { "alice@example.com" } else { "bob@example.com" };
            (i == 0, request(to, &text, &pdf, true).to_string().into_bytes())
        })
        .collect();
    let mut serials = std::collections::HashSet::new();
    let mut message_ids = Vec::new();
    for round in 0..3 {
        let replies: Vec<(bool, Reply)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let (rsa, body) = &bodies[i % 2];
                    let f = &f;
                    s.spawn(move || {
                        (*rsa, f.post("/api/v1/mail/seal", Some(&f.mailer), Some("application/json"), body))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (rsa, r)) in replies.into_iter().enumerate() {
            assert_eq!(
                r.status,
                200,
                "round {round} request {i}: {}\nserver log:\n{}",
                r.text(),
                f.server.as_ref().unwrap().stderr()
            );
            let j = r.json();
            assert!(serials.insert(j["timestamp_serial"].as_str().unwrap().to_string()), "{j}");
            message_ids.push(j["message_id"].as_str().unwrap().to_string());
            if round > 0 && i > 1 {
                continue;
            }
            let (key, cert) = if rsa { (&f.alice_key, &f.alice_cert) } else { (&f.bob_key, &f.bob_cert) };
            let tag = format!("c{round}-{i}");
            let signed = decrypt_answer(&f.env, &tag, &j, "cms", cert, key);
            let inner = f.env.path(&format!("{tag}.inner"));
            openssl(["smime", "-verify", "-in", &p(&signed), "-CAfile", &p(&f.ca.root), "-out", &p(&inner)]);
            assert_eq!(part(&python_parts(&inner), "application/pdf"), pdf);
        }
    }
    assert_eq!(serials.len(), 48);

    // A statement larger than what an HTTP worker makes itself (512 KiB of body) is made on the
    // blocking pool instead: the same message, with its timestamp.
    let large: Vec<u8> = pdf.iter().copied().cycle().take(600 << 10).collect();
    let body = request("bob@example.com", &text, &large, true).to_string();
    assert!(body.len() > 512 << 10 && body.len() < 1 << 20, "{}", body.len());
    let r = f.post("/api/v1/mail/seal", Some(&f.mailer), Some("application/json"), body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let signed = decrypt_answer(&f.env, "large", &j, "cms", &f.bob_cert, &f.bob_key);
    let inner = f.env.path("large.inner");
    openssl(["smime", "-verify", "-in", &p(&signed), "-CAfile", &p(&f.ca.root), "-out", &p(&inner)]);
    assert_eq!(part(&python_parts(&inner), "application/pdf"), large);
    let (signature, token) = signature_and_token(&cms_der(&f.env, &signed, "large.p7m"));
    let token = f.env.write("large.tst", token.expect("a signature timestamp token"));
    let ok = ts_verify(&token, &signature, &f.ca.root);
    assert!(ok.stdout.contains("Verification: OK"), "{}{}", ok.stdout, ok.stderr);
    // The answer's timestamp serial is the token's, in decimal as the TSA's ledger and console
    // give it (OpenSSL prints it in hex).
    let text = openssl(["ts", "-reply", "-in", &p(&token), "-token_in", "-text"]).stdout;
    let line = text.lines().find(|l| l.starts_with("Serial number:")).expect("a serial line");
    let hex = line.trim_start_matches("Serial number:").trim().trim_start_matches("0x");
    let serial = u64::from_str_radix(hex, 16).expect("a hex serial");
    assert_eq!(j["timestamp_serial"], serde_json::json!(serial.to_string()), "{text}");
    message_ids.push(j["message_id"].as_str().unwrap().to_string());

    // Every message answered had its audit entry written durably first, though the concurrent
    // ones were committed in shared writes: all of them are in the log after a SIGKILL, each
    // once, and the chain verifies.
    f.server.as_mut().unwrap().sigkill();
    let sealed: Vec<String> = entries_of(audit_log(&f), "mail.seal").into_iter().map(|e| e.details).collect();
    assert_eq!(sealed.len(), message_ids.len(), "{sealed:?}");
    for id in &message_ids {
        let n = sealed.iter().filter(|d| d.contains(&format!("message-id <{id}>"))).count();
        assert_eq!(n, 1, "message {id} has {n} audit entries");
    }
}

/// A sender identity whose certificate cannot sign is a clear 4xx naming the sender and why,
/// never a 500, on the single and the bulk endpoint: expired (the server 400 days on), revoked
/// while the server runs with its key already in use, and removed (403, as for any sender the key
/// may not use).
/// With the TSA compromised, a message that asks for a timestamp is a 503 naming the TSA's
/// refusal, one without is sealed; after `pki ca rekey --ca tsa` both are sealed again.
#[test]
fn a_compromised_tsa_is_a_clear_503_until_it_is_re_keyed() {
    let f = fixture("");
    let stamped = request("alice@example.com", "t", b"%PDF-1", true);
    let plain = request("alice@example.com", "t", b"%PDF-1", false);
    assert_eq!(f.seal(&stamped).status, 200);
    f.env.pki(["ca", "compromise", "--ca", "tsa", "--confirm", "compromise tsa"]);
    let r = f.seal(&stamped);
    r.expect_error(503, "the timestamp authority refused to stamp", "a compromised TSA");
    r.expect_error(503, "its certificate is revoked", "a compromised TSA");
    assert_eq!(f.seal(&plain).status, 200, "no timestamp asked for");
    f.env.pki(["ca", "rekey", "--ca", "tsa"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let r = f.seal(&stamped);
        if r.status == 200 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(again.status, 200, "{}", again.text());
}

#[test]
fn a_revoked_expired_or_removed_sender_is_a_clear_4xx_naming_it() {
    // Not renewed by the server on its own (it would renew the expired one as it starts).
    let mut f = fixture("[ca.expiry]\nmail_sender_renew_before_days = 0\n");
    let one = request("alice@example.com", "t", b"%PDF-1", false);
    assert_eq!(f.seal(&one).status, 200);
    let list = f.env.pki(["mail", "sender", "list"]).stdout;
    let serial = list
        .lines()
        .find(|l| l.starts_with("statements "))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no sender statements in {list}"))
        .to_string();

    // Expired: the same installation 400 days later (the sender's certificate is valid 365).
    f.stop();
    let cmd = f.env.command(["serve", "--listen", &format!("127.0.0.1:{}", f.env.port)]);
    let later = Server::start(&mut faketime("+400d", &cmd), f.env.port, f.env.dir());
    let r = f.seal(&one);
    r.expect_error(409, "sender statements cannot sign", "an expired sender");
    r.expect_error(409, &format!("certificate {serial} expired at"), "an expired sender");
    // And it is not expired unnoticed: /healthz (still 200) and `pki status` name it.
    let (code, body) = http_get(f.env.port, "/healthz").unwrap();
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((code, health["status"].as_str()), (200, Some("degraded")), "{health}");
    let named = health["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["certificate"] == "mail-sender:statements");
    let named = named.unwrap_or_else(|| panic!("{health}"));
    assert_eq!(
        (named["state"].as_str(), named["serial"].as_str()),
        (Some("expired"), Some(serial.as_str())),
        "{health}"
    );
    let status = f.env.pki(["status"]).stdout;
    assert!(
        status.contains(&format!("attention: the mail-sender:statements certificate {serial} expired")),
        "{status}"
    );
    later.stop();

    // Revoked while serving, its key already cached by a message sealed before.
    f.server = Some(f.env.serve());
    assert_eq!(f.seal(&one).status, 200);
    f.env.pki(["revoke", "--serial", &serial, "--reason", "keyCompromise"]);
    let r = f.seal(&one);
    r.expect_error(
        409,
        &format!("sender statements cannot sign: its certificate {serial} was revoked"),
        "revoked",
    );
    r.expect_error(409, "keyCompromise", "a revoked sender");
    let bulk = serde_json::json!({"messages": [one.clone(), one.clone()]});
    let r = f.post("/api/v1/mail/seal/bulk", Some(&f.mailer), None, bulk.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    for res in r.json()["results"].as_array().unwrap() {
        assert_eq!(res["status"], 409, "{res}");
        assert!(res["error"].as_str().unwrap().contains("was revoked"), "{res}");
    }
    let log = f.server.as_ref().unwrap().stderr();
    assert!(!log.contains("sealed mail failed"), "a sender's state is not a server failure:\n{log}");

    // Removed: the key may no longer send as it.
    f.env.pki(["mail", "sender", "remove", "--name", "statements"]);
    f.seal(&one).expect_error(403, "may not send as \"statements\"", "a removed sender");
}

/// Build item 2's options: `"encryption": "aes-256-gcm"` makes an `AuthEnvelopedData` with
/// AES-256-GCM (`smime-type=authEnveloped-data`) that `openssl cms -decrypt` opens for the RSA
/// and the P-256 recipient, and that refuses a changed byte; with `[mail] archive_certificate`
/// every message (GCM or the default CBC) also opens with the bank's archive key, to the same
/// signed entity, which `openssl smime -verify` accepts with the text and PDF sent. An unknown
/// cipher is a 400 naming the field.
#[test]
fn gcm_messages_and_the_archive_copy_open_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let archive_key = dir.path().join("archive.key");
    let archive_cert = dir.path().join("archive.crt");
    openssl([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p(&archive_key),
        "-out",
        &p(&archive_cert),
        "-subj",
        "/CN=Bank mail archive",
        "-days",
        "30",
    ]);
    let f = fixture(&format!("archive_certificate = \"{}\"\n", p(&archive_cert)));
    let (text, pdf) = statement();
    for (who, key, cert, cipher) in [
        ("alice@example.com", &f.alice_key, &f.alice_cert, "aes-256-gcm"),
        ("bob@example.com", &f.bob_key, &f.bob_cert, "aes-256-gcm"),
        ("alice@example.com", &f.alice_key, &f.alice_cert, "aes-256-cbc"),
    ] {
        let mut req = request(who, &text, &pdf, false);
        req["encryption"] = serde_json::json!(cipher);
        let reply = f.seal(&req);
        assert_eq!(reply.status, 200, "{who} {cipher}: {}", reply.text());
        let tag = format!("{}-{cipher}", who.split('@').next().unwrap());
        let message = f.env.write(&format!("{tag}.eml"), &reply.body);
        let outer = python_parts(&message);
        assert_eq!(outer["defects"], serde_json::json!([]), "{outer}");
        let smime_type = if cipher == "aes-256-gcm" { "authEnveloped-data" } else { "enveloped-data" };
        let ct = outer["headers"]["Content-Type"].as_str().unwrap().replace('"', "");
        assert_eq!(ct, format!("application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m"));
        let der = cms_der(&f.env, &message, &format!("{tag}.der"));
        let ci = cms::content_info::ContentInfo::from_der(&der).unwrap();
        let content_type =
            if cipher == "aes-256-gcm" { "1.2.840.113549.1.9.16.1.23" } else { "1.2.840.113549.1.7.3" };
        assert_eq!(ci.content_type.to_string(), content_type, "{tag}");

        let mut opened = Vec::new();
        for (i, (k, c)) in
            [(key.as_path(), cert.as_path()), (&archive_key, &archive_cert)].into_iter().enumerate()
        {
            let out = f.env.path(&format!("{tag}-{i}.signed"));
            openssl([
                "cms",
                "-decrypt",
                "-in",
                &p(&message),
                "-recip",
                &p(c),
                "-inkey",
                &p(k),
                "-out",
                &p(&out),
            ]);
            opened.push(std::fs::read(&out).unwrap());
        }
        assert_eq!(opened[0], opened[1], "{tag}: the archive key opens the same signed entity");
        let signed = f.env.write(&format!("{tag}.signed"), &opened[0]);
        let inner = f.env.path(&format!("{tag}.inner"));
        openssl(["smime", "-verify", "-in", &p(&signed), "-CAfile", &p(&f.ca.root), "-out", &p(&inner)]);
        let parts = python_parts(&inner);
        assert_eq!(String::from_utf8(part(&parts, "text/plain")).unwrap(), text);
        assert_eq!(part(&parts, "application/pdf"), pdf);

        if cipher == "aes-256-gcm" {
            // One byte of the ciphertext changed (the tag is the last 16 bytes): refused.
            let mut bad = der.clone();
            let at = bad.len() - 40;
            bad[at] ^= 1;
            let bad = f.env.write(&format!("{tag}.changed.der"), &bad);
            let out = openssl_try([
                "cms",
                "-decrypt",
                "-inform",
                "DER",
                "-in",
                &p(&bad),
                "-recip",
                &p(cert),
                "-inkey",
                &p(key),
            ]);
            assert!(!out.status.success(), "{tag}: a changed GCM message must not open");
        }
    }
    let mut req = request("alice@example.com", &text, &pdf, false);
    req["encryption"] = serde_json::json!("des-cbc");
    let reply = f.seal(&req);
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("encryption") && reply.text().contains("des-cbc"), "{}", reply.text());
}

/// Delivery to a relay that cannot be reached (build item 3; acceptance item 4's "clear error"):
/// a single message is answered 502 saying so (it was `{"error": "internal error"}`), after at
/// most `[mail.relay] timeout_secs`; a bulk request waits for the relay once, answers every later
/// message to be delivered at once naming the message that found the relay unreachable (each
/// would otherwise wait out the timeout: a statement run of 1,000 messages, hours), and still
/// seals the messages not to be delivered. Each 502 carries its message, sealed, to be sent later
/// or another way. A relay that refuses connections is named the same way; one that refuses a
/// recipient is a 502 with its reply, and a bulk request still tries the rest.
#[test]
fn an_unreachable_relay_is_named_and_a_bulk_request_waits_for_it_once() {
    // A relay that takes connections and never says a word.
    let silent_port = pki_tests::raw_tcp::silent_port();
    let relay = |port: u16| {
        format!(
            "[mail.relay]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 2\nconnections = 1\n"
        )
    };
    let mut f = fixture(&relay(silent_port));
    let delivered = |to: &str, text: &str, deliver: bool| {
        let mut r = request(to, text, b"%PDF-1.7 relay", false);
        r["deliver"] = serde_json::json!(deliver);
        r
    };

    let start = std::time::Instant::now();
    let r = f.seal(&delivered("alice@example.com", "single", true));
    r.expect_error(502, "the mail relay cannot be reached: no answer within 2 s", "a silent relay");
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    // The message was sealed: the answer carries it, to be sent later or another way.
    let undelivered = |j: &serde_json::Value| {
        let message = B64.decode(j["message_base64"].as_str().unwrap_or_default()).unwrap_or_default();
        let id = j["message_id"].as_str().unwrap_or_default();
        let text = String::from_utf8_lossy(&message);
        assert!(
            !id.is_empty()
                && text.contains(&format!("Message-ID: <{id}>"))
                && text.contains("enveloped-data"),
            "the answer does not carry the sealed message: {}",
            cerdb::text::cut_middle(&j.to_string(), 600)
        );
        id.to_string()
    };
    let single_id = undelivered(&r.json());

    let messages: Vec<serde_json::Value> =
        [("alice", true), ("bob", true), ("alice", false), ("bob", true), ("alice", true)]
            .iter()
            .enumerate()
            .map(|(i, (who, deliver))| {
                delivered(&format!("{who}@example.com"), &format!("bulk {i}"), *deliver)
            })
            .collect();
    let (results, took) = f.timed_bulk(&messages);
    let error = |i: usize| results[i]["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(results[0]["status"], 502, "{}", results[0]);
    assert!(error(0).contains("the mail relay cannot be reached: no answer within 2 s"), "{}", results[0]);
    for i in [1, 3, 4] {
        assert_eq!(results[i]["status"], 502, "{}", results[i]);
        assert!(
            error(i).contains("not tried: message 1 of this request could not reach it"),
            "{}",
            results[i]
        );
    }
    let ids: std::collections::BTreeSet<String> =
        [0, 1, 3, 4].iter().map(|&i| undelivered(&results[i])).chain([single_id]).collect();
    assert_eq!(ids.len(), 5, "each undelivered message is its own: {ids:?}");
    assert_eq!(results[2]["status"], 200, "sealed, not to be delivered: {}", results[2]);
    assert!(results[2]["message_base64"].is_string(), "{}", results[2]);
    // One timeout (2 s), not four.
    assert!(took < Duration::from_secs(6), "the bulk request took {took:?}");

    // A relay that refuses connections: named at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    move_relay(&mut f, silent_port, closed);
    let r = f.seal(&delivered("bob@example.com", "refused", true));
    r.expect_error(502, "the mail relay cannot be reached", "a closed port");
    assert!(r.text().contains("Connection refused"), "{}", r.text());

    // A relay that answers and refuses each recipient (a scripted peer: the test Postfix takes
    // every address): its reply is the error, and in a bulk request every message is tried, on
    // one connection (reset with RSET after each refusal), which the single message left idle.
    let refusing = ScriptedRelay::start(Script { refuse_recipients: true, ..Script::default() });
    move_relay(&mut f, closed, refusing.port);
    let r = f.seal(&delivered("bob@example.com", "refused recipient", true));
    r.expect_error(502, "the mail relay refused the message", "a refused recipient");
    assert!(r.text().contains("550") && r.text().contains("no such user"), "{}", r.text());
    let three: Vec<serde_json::Value> =
        (0..3).map(|i| delivered("alice@example.com", &format!("refused {i}"), true)).collect();
    let r = f.bulk(&three);
    for res in r.json()["results"].as_array().unwrap() {
        assert_eq!(res["status"], 502, "{res}");
        assert!(res["error"].as_str().unwrap().contains("refused the message"), "{res}");
    }
    let seen = refusing.seen();
    assert_eq!(seen.recipients, 4, "every message was offered to the relay: {seen:?}");
    assert_eq!(seen.connections, 1, "the single message's, kept for the bulk: {seen:?}");
    assert_eq!(seen.resets, 4, "each refusal reset: {seen:?}");

    // Every message asked to be delivered has its `mail.deliver` entry, refused with why: the
    // kind of failure and the relay's code, never its text (it named the recipient above).
    f.stop();
    let outcomes: Vec<String> = entries_of(audit_log(&f), "mail.deliver")
        .into_iter()
        .map(|e| {
            assert!(!e.details.contains("@example.com") && !e.outcome.contains("@example.com"), "{e:?}");
            assert!(e.details.starts_with("message-id <") && !e.details.contains("queue-id"), "{e:?}");
            e.outcome
        })
        .collect();
    let unreachable = "refused: the relay cannot be reached";
    let not_tried = "refused: the relay cannot be reached, not tried after an earlier message of the request";
    let refused = "refused: the relay refused the message (550)";
    assert_eq!(
        outcomes,
        [
            unreachable,
            unreachable,
            not_tried,
            not_tried,
            not_tried,
            unreachable,
            refused,
            refused,
            refused,
            refused
        ],
        "the single message, the bulk's four, the closed port's, the refused recipient's four"
    );
}

/// A bulk request hands its messages to the relay over one connection, and when the relay closes
/// it (here after two messages, with a 421 to the third MAIL, as relays with a limit of messages
/// a connection do), the message is tried again at once on a new connection: every message is
/// delivered, once, with its own queue id. The connection is then left idle for the next
/// request; one the relay closed while idle is replaced the same way.
#[test]
fn a_bulk_request_keeps_one_relay_connection_and_opens_another_when_it_is_closed() {
    let relay = ScriptedRelay::start(Script { messages_a_connection: Some(2), ..Script::default() });
    let f = fixture(&format!(
        "[mail.relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 5\nconnections = 1\n",
        relay.port
    ));
    let messages: Vec<serde_json::Value> = (0..5).map(|i| to_deliver(&format!("statement {i}"))).collect();
    let r = f.bulk(&messages);
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    let ids: Vec<&str> = results
        .iter()
        .map(|res| {
            assert_eq!(res["status"], 200, "{res}");
            res["queue_id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["Q1", "Q2", "Q3", "Q4", "Q5"], "each message delivered once, in order");
    let seen = relay.seen();
    assert_eq!(seen.messages, 5, "{seen:?}");
    assert_eq!(seen.connections, 3, "two messages a connection: {seen:?}");
    assert_eq!(seen.closed_by_relay, 2, "{seen:?}");

    // Single messages: the first on the connection the bulk left idle (it carried one message),
    // the second on a new one, as the relay closes that one at its third.
    let single = |f: &Fixture, text: &str| {
        let r = f.seal_json(&to_deliver(text));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["queue_id"].as_str().unwrap().to_string()
    };
    assert_eq!(single(&f, "single 1"), "Q6");
    assert_eq!(relay.seen().connections, 3, "{:?}", relay.seen());
    assert_eq!(single(&f, "single 2"), "Q7");
    let seen = relay.seen();
    assert_eq!((seen.connections, seen.closed_by_relay), (4, 3), "{seen:?}");

    // A relay that closes a connection idle for a second: the next message finds it closed and
    // goes on a new one.
    let closing =
        ScriptedRelay::start(Script { close_idle_after: Some(Duration::from_secs(1)), ..Script::default() });
    let mut f = f;
    swap_config(&mut f, &format!("port = {}", relay.port), &format!("port = {}", closing.port));
    assert_eq!(single(&f, "before the idle timeout"), "Q1");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(single(&f, "after it"), "Q2");
    let seen = closing.seen();
    assert_eq!((seen.connections, seen.closed_by_relay, seen.messages), (2, 1, 2), "{seen:?}");
}

/// A bulk request hands its messages over `[mail.relay] connections` connections at once, each
/// taking the next message: to a relay that takes 200 ms to answer each message's data, eight
/// messages to deliver on three connections take about three answers' time, not eight; each is delivered
/// once, and each answer is the request's message in its place.
#[test]
fn a_bulk_request_delivers_over_several_connections_at_once_and_answers_in_order() {
    let relay =
        ScriptedRelay::start(Script { data_delay: Some(Duration::from_millis(200)), ..Script::default() });
    let f = fixture(&format!(
        "[mail.relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nconnections = 3\n",
        relay.port
    ));
    let messages: Vec<serde_json::Value> = (0..9)
        .map(|i| {
            let mut r = request("alice@example.com", "in order", b"%PDF-1.7 parallel", false);
            r["subject"] = serde_json::json!(format!("statement {i}"));
            r["deliver"] = serde_json::json!(i != 4);
            r
        })
        .collect();
    let (results, took) = f.timed_bulk(&messages);
    let seen = relay.seen();
    assert_eq!((seen.connections, seen.messages), (3, 8), "{seen:?}");
    for (i, res) in results.iter().enumerate() {
        assert_eq!(res["status"], 200, "{i}: {res}");
        match res["queue_id"].as_str() {
            Some(id) => assert_eq!(seen.subjects[id], format!("statement {i}"), "answer {i}: {res}"),
            None => assert_eq!(i, 4, "only message 4 is not to be delivered: {res}"),
        }
    }
    // Eight answers of 200 ms on three connections: three in a row at the most (one connection
    // would take 1.6 s).
    assert!(took < Duration::from_millis(1_400), "the bulk request took {took:?}");
}

/// A relay that answers EHLO with binary garbage, with something else than SMTP, with an answer
/// cut short, or with an answer of 200 KB in one line: each a 502 naming the relay unreachable
/// and what it answered (in under 1,200 characters); the server goes on, and a bulk request
/// tries the relay once.
#[test]
fn a_relay_that_answers_garbage_is_named_unreachable() {
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("binary", b"\x00\xff\xfe garbage \x1b[31m\r\n".to_vec(), "did not contain valid UTF-8"),
        ("not SMTP", b"HTTP/1.1 400 Bad Request\r\n".to_vec(), "response error"),
        ("cut short", b"250-relay.bank.example\r\n250-PIPEL".to_vec(), "incomplete response"),
        ("oversized", vec![b'2'; 200 << 10], "too long"),
    ];
    let mut f: Option<(Fixture, u16)> = None;
    for (what, answer, says) in cases {
        let relay = ScriptedRelay::start(Script { ehlo_answer: Some(answer), ..Script::default() });
        let config = |port: u16| {
            format!(
                "[mail.relay]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 5\nconnections = 1\n"
            )
        };
        let fx = match f.take() {
            None => fixture(&config(relay.port)),
            Some((mut fx, old)) => {
                swap_config(&mut fx, &config(old), &config(relay.port));
                fx
            }
        };
        let r = fx.seal(&to_deliver(what));
        r.expect_error(502, "the mail relay cannot be reached", what);
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(says), "{what}: {error}");
        assert!(error.len() < 1_200, "{what}: the error quotes the relay whole: {} bytes", error.len());
        let r = fx.bulk(&[to_deliver("one"), to_deliver("two")]);
        let results = r.json()["results"].as_array().unwrap().clone();
        assert!(
            results[1]["error"].as_str().unwrap().contains("not tried: message 1"),
            "{what}: {}",
            results[1]
        );
        assert_eq!(relay.seen().connections, 2, "{what}: {:?}", relay.seen());
        let health = send(fx.env.port, "GET", "/healthz", &[], None, Duration::from_secs(10)).unwrap();
        assert_eq!(health.status, 200, "{what}");
        f = Some((fx, relay.port));
    }
}

/// What a [`ScriptedRelay`] does.
#[derive(Default)]
struct Script {
    /// Every RCPT answered 550.
    refuse_recipients: bool,
    /// After this many messages, the next MAIL is answered 421 and the connection closed.
    messages_a_connection: Option<usize>,
    /// A connection silent this long is closed with a 421, as relays close idle ones.
    close_idle_after: Option<Duration>,
    /// EHLO answered with these bytes, and the connection closed.
    ehlo_answer: Option<Vec<u8>>,
    /// How long the end of a message's data waits for its answer (a relay at a distance).
    data_delay: Option<Duration>,
}

/// What a [`ScriptedRelay`] saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    connections: usize,
    recipients: usize,
    resets: usize,
    messages: usize,
    closed_by_relay: usize,
    /// The Subject of each message, by its queue id.
    subjects: std::collections::BTreeMap<String, String>,
}

/// An SMTP peer on loopback, scripted for the failures the tests' Postfix does not make (it takes
/// every address, and every message on one connection); it counts what it sees.
struct ScriptedRelay {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
}

impl ScriptedRelay {
    fn start(script: Script) -> ScriptedRelay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
        let script = std::sync::Arc::new(script);
        let counts = seen.clone();
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                let (seen, script) = (counts.clone(), script.clone());
                std::thread::spawn(move || serve_scripted(c, &script, &seen));
            }
        });
        ScriptedRelay { port, seen }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_scripted(c: std::net::TcpStream, script: &Script, seen: &std::sync::Mutex<Seen>) {
    use std::io::{BufRead, Write};
    seen.lock().unwrap().connections += 1;
    c.set_read_timeout(script.close_idle_after).unwrap();
    let mut w = c.try_clone().unwrap();
    let _ = w.write_all(b"220 scripted ESMTP\r\n");
    let mut lines = std::io::BufReader::new(c).lines();
    let mut carried = 0;
    while let Some(line) = lines.next() {
        let line = match line {
            Ok(line) => line,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                seen.lock().unwrap().closed_by_relay += 1;
                let _ = w.write_all(b"421 4.4.2 scripted: idle too long, closing\r\n");
                return;
            }
            Err(_) => return,
        };
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" | "HELO" if script.ehlo_answer.is_some() => {
                let _ = w.write_all(script.ehlo_answer.as_deref().unwrap_or_default());
                return;
            }
            "EHLO" | "HELO" => "250 scripted\r\n".into(),
            "MAIL" if script.messages_a_connection.is_some_and(|n| carried >= n) => {
                seen.lock().unwrap().closed_by_relay += 1;
                let _ = w.write_all(b"421 4.7.0 scripted: too many messages on one connection\r\n");
                return;
            }
            "RCPT" => {
                seen.lock().unwrap().recipients += 1;
                // As Postfix does, the refusal names the address (`RCPT TO:<...>`).
                let address = line.get(8..).unwrap_or_default().trim_matches(['<', '>']).to_string();
                match script.refuse_recipients {
                    true => format!("550 5.1.1 <{address}>: Recipient address rejected: no such user\r\n"),
                    false => "250 2.1.5 Ok\r\n".into(),
                }
            }
            "RSET" => {
                seen.lock().unwrap().resets += 1;
                "250 2.0.0 Ok\r\n".into()
            }
            "DATA" => {
                let _ = w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                let mut subject = String::new();
                while let Some(Ok(line)) = lines.next() {
                    if line == "." {
                        break;
                    }
                    if let (true, Some(s)) = (subject.is_empty(), line.strip_prefix("Subject: ")) {
                        subject = s.to_string();
                    }
                }
                if let Some(delay) = script.data_delay {
                    std::thread::sleep(delay);
                }
                carried += 1;
                let mut s = seen.lock().unwrap();
                s.messages += 1;
                let id = format!("Q{}", s.messages);
                s.subjects.insert(id.clone(), subject);
                format!("250 2.0.0 Ok: queued as {id}\r\n")
            }
            "QUIT" => {
                let _ = w.write_all(b"221 2.0.0 Bye\r\n");
                return;
            }
            _ => "250 Ok\r\n".into(),
        };
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Delivery through a relay that wants TLS and a login, as a bank's relay does: the tests' Postfix
/// on its STARTTLS and its implicit-TLS listener, its certificate from a CA of its own given as
/// `[mail.relay] ca_file`, one SASL user. A single message and a bulk of three arrive in the
/// mailbox on each. Without `ca_file` the relay's certificate is not trusted (the system's roots
/// do not know its CA): a 502 that says so. A wrong password is the login's own 502, and a bulk
/// request logs in once, not once a message. Without TLS, the relay's refusal is the answer.
#[test]
fn delivered_through_a_relay_that_wants_tls_and_a_login() {
    let (_, maildir) = test_mta();
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `bash scripts/test.sh`"))
    };
    let (starttls, smtps) = (env("PKI_TEST_SMTP_STARTTLS"), env("PKI_TEST_SMTPS"));
    let (ca, user, password) =
        (env("PKI_TEST_SMTP_CA"), env("PKI_TEST_SMTP_USER"), env("PKI_TEST_SMTP_PASSWORD_FILE"));
    let relay = |addr: &str, tls: &str, extra: &str| {
        let (host, port) = addr.rsplit_once(':').unwrap();
        format!(
            "[mail.relay]\nhost = \"{host}\"\nport = {port}\ntls = \"{tls}\"\ntimeout_secs = 10\n\
             username = \"{user}\"\n{extra}"
        )
    };
    let trusted = format!("ca_file = \"{ca}\"\npassword_file = \"{password}\"\n");
    let first = relay(&starttls, "starttls", &trusted);
    let mut f = fixture(&first);
    let single = |f: &Fixture, text: &str| f.seal_json(&to_deliver(text));

    let mut config = first.clone();
    for (addr, tls) in [(&starttls, "starttls"), (&smtps, "tls")] {
        let next = relay(addr, tls, &trusted);
        swap_config(&mut f, &config, &next);
        config = next;
        let r = single(&f, &format!("single over {tls}"));
        assert_eq!(r.status, 200, "{tls}: {}", r.text());
        delivered(&maildir, r.json()["message_id"].as_str().unwrap());
        let three: Vec<serde_json::Value> =
            (0..3).map(|i| to_deliver(&format!("bulk {i} over {tls}"))).collect();
        let r = f.bulk(&three);
        for res in r.json()["results"].as_array().unwrap() {
            assert_eq!(res["status"], 200, "{tls}: {res}");
            delivered(&maildir, res["message_id"].as_str().unwrap());
        }
    }

    // The system's roots: the relay's certificate is not trusted.
    let next = relay(&starttls, "starttls", &format!("password_file = \"{password}\"\n"));
    swap_config(&mut f, &config, &next);
    config = next;
    let r = single(&f, "untrusted");
    r.expect_error(502, "the mail relay cannot be reached", "an untrusted relay certificate");
    assert!(r.text().contains("certificate"), "{}", r.text());

    // A wrong password: the login's own error, tried once in a bulk request (on its one
    // connection; with more, once a connection).
    let wrong = f.env.write("wrong-password", b"not the password\n");
    let next = relay(
        &starttls,
        "starttls",
        &format!("ca_file = \"{ca}\"\npassword_file = \"{}\"\nconnections = 1\n", p(&wrong)),
    );
    swap_config(&mut f, &config, &next);
    config = next;
    let r = single(&f, "wrong password");
    r.expect_error(
        502,
        "the mail relay refused the login ([mail.relay] username, password_file)",
        "a wrong password",
    );
    assert!(r.text().contains("535"), "{}", r.text());
    let r = f.bulk(&(0..3).map(|i| to_deliver(&format!("wrong password {i}"))).collect::<Vec<_>>());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert!(results[0]["error"].as_str().unwrap().contains("535"), "{}", results[0]);
    for res in &results[1..] {
        assert_eq!(res["status"], 502, "{res}");
        assert!(
            res["error"].as_str().unwrap().contains("not tried: message 1 of this request was refused it"),
            "{res}"
        );
    }

    // No TLS to a relay that offers its login only after it: named as such.
    let next = relay(&starttls, "none", &format!("password_file = \"{password}\"\n"));
    swap_config(&mut f, &config, &next);
    config = next;
    let r = single(&f, "no tls");
    r.expect_error(502, "the mail relay refused the login", "no TLS");
    assert!(
        r.text().contains("it offers no AUTH PLAIN or LOGIN without TLS: set [mail.relay] tls"),
        "{}",
        r.text()
    );

    // No login and no TLS: the relay's own refusal of the recipient.
    let next = relay(&starttls, "none", "").replace(&format!("username = \"{user}\"\n"), "");
    swap_config(&mut f, &config, &next);
    let r = single(&f, "no login");
    r.expect_error(502, "the mail relay refused the message", "no login");
    assert!(r.text().contains("530") && r.text().contains("STARTTLS"), "{}", r.text());
}

/// Restarts `f`'s server with `from` in its configuration replaced by `to`.
fn swap_config(f: &mut Fixture, from: &str, to: &str) {
    f.stop();
    let text = std::fs::read_to_string(&f.env.config).unwrap();
    assert!(text.contains(from), "the configuration holds no {from:?}");
    std::fs::write(&f.env.config, text.replace(from, to)).unwrap();
    f.server = Some(f.env.serve());
}

/// Restarts `f`'s server with its `[mail.relay] port` moved from `from` to `to`.
fn move_relay(f: &mut Fixture, from: u16, to: u16) {
    f.stop();
    let text = std::fs::read_to_string(&f.env.config).unwrap();
    std::fs::write(&f.env.config, text.replace(&format!("port = {from}"), &format!("port = {to}"))).unwrap();
    f.server = Some(f.env.serve());
}

/// The serial (hex, upper case, no leading zeros) of the certificate that signed the message of
/// a JSON answer to alice, per `openssl smime -verify -signer`, verified `days_on` days from now.
fn signer_serial(f: &Fixture, tag: &str, answer: &serde_json::Value, days_on: i64) -> String {
    let signed = decrypt_answer(&f.env, tag, answer, "smime", &f.alice_cert, &f.alice_key);
    let signer = f.env.path(&format!("{tag}.signer.pem"));
    let at = (chrono::Utc::now() + chrono::Duration::days(days_on)).timestamp().to_string();
    let verified = openssl_try([
        "smime",
        "-verify",
        "-attime",
        &at,
        "-in",
        &p(&signed),
        "-CAfile",
        &p(&f.ca.root),
        "-signer",
        &p(&signer),
        "-out",
        "/dev/null",
    ]);
    assert!(verified.status.success(), "{}", verified.stderr);
    let out = openssl(["x509", "-in", &p(&signer), "-noout", "-serial"]).stdout;
    out.trim().trim_start_matches("serial=").trim_start_matches('0').to_ascii_uppercase()
}

/// The serial and notAfter column of sender `name` in `pki mail sender list`.
fn sender_row(f: &Fixture, name: &str) -> (String, String) {
    let list = f.env.pki(["mail", "sender", "list"]).stdout;
    assert!(list.starts_with("NAME ") && list.contains(" NOT AFTER "), "{list}");
    let row = list.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{list}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    (cols[2].to_string(), cols[3].to_string())
}

/// Sender identities are renewed — a new key in custody and a new certificate in the place of
/// the old, the API keys kept — by an officer (`pki mail sender renew`, through the running
/// server) and by `pki serve` on its own once fewer than `[ca.expiry]
/// mail_sender_renew_before_days` (30) days remain; the next message is signed by the new certificate (per OpenSSL), the old one
/// stays valid, and each renewal is audited. Bad input is one line naming the problem.
#[test]
fn a_sender_is_renewed_by_an_officer_and_by_the_server_before_it_expires() {
    let mut f = fixture("");
    let one = || request("alice@example.com", "t", b"%PDF-1 renewal", false);
    let (first, first_end) = sender_row(&f, "statements");
    assert!(first_end.starts_with("20") && first_end.ends_with('Z'), "{first_end}");
    let r = f.seal_json(&one());
    assert_eq!(r.status, 200, "{}", r.text());
    let hex = |serial: &str| serial.trim_start_matches('0').to_string();
    assert_eq!(signer_serial(&f, "before", &r.json(), 0), hex(&first));

    let out = f.env.pki(["mail", "sender", "renew", "--name", "statements"]);
    let (second, _) = sender_row(&f, "statements");
    assert_ne!(second, first);
    assert!(out.stdout.contains(&format!("in the place of {first}")), "{}", out.stdout);
    assert!(out.stdout.contains("-----BEGIN CERTIFICATE-----"), "{}", out.stdout);
    assert!(out.stderr.contains("--reason superseded"), "{}", out.stderr);
    let r = f.seal_json(&one());
    assert_eq!(r.status, 200, "the API key may still send as it: {}", r.text());
    assert_eq!(signer_serial(&f, "renewed", &r.json(), 0), hex(&second));
    let old = f.env.pki(["show", "--serial", &first]).stdout;
    assert!(old.contains("valid"), "the old certificate stays valid: {old}");
    let status = f.env.pki(["status"]).stdout;
    let row = status
        .lines()
        .find(|l| l.starts_with("mail-sender:statements "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(row.contains(&second) && row.ends_with("valid"), "{row}");

    for (args, names) in [
        (vec!["--name", "nosuch"], vec!["nosuch"]),
        (vec!["--name", "Not A Name"], vec!["Not A Name"]),
        (vec!["--name", "statements", "--key-type", "rsa1024"], vec!["rsa1024"]),
        (vec!["--name", &"x".repeat(10_000)], vec!["sender name"]),
    ] {
        let all: Vec<&str> = ["mail", "sender", "renew"].into_iter().chain(args).collect();
        f.env.pki_fails(all, &names);
    }
    assert_eq!(sender_row(&f, "statements").0, second, "a refused renewal changed nothing");

    // 340 days on, the certificate renewed above has 25 days left: the server renews it as it
    // starts, and signs with the new one.
    f.stop();
    let cmd = f.env.command(["serve", "--listen", &format!("127.0.0.1:{}", f.env.port)]);
    let later = Server::start(&mut faketime("+340d", &cmd), f.env.port, f.env.dir());
    let (third, third_end) = sender_row(&f, "statements");
    assert!(third != second && third != first, "not renewed: {third}");
    assert!(third_end > first_end, "{third_end} is not after {first_end}");
    let r = f.seal_json(&one());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(signer_serial(&f, "later", &r.json(), 340), hex(&third));
    later.stop();

    let renewals = entries_of(audit_log(&f), "mail.sender.renew");
    assert_eq!(renewals.len(), 2, "{renewals:?}");
    assert!(renewals.iter().all(|e| e.outcome == "ok"), "{renewals:?}");
    assert!(renewals[0].details.contains(&format!("replacing {first}")), "{:?}", renewals[0]);
    assert_eq!(renewals[1].actor, "system", "{:?}", renewals[1]);
    assert!(renewals[1].details.contains(&format!("serial {third} replacing {second}")), "{:?}", renewals[1]);
}

/// The OpenAPI document served at `/api/v1/mail/openapi.json` is valid (openapi-spec-validator),
/// and schemathesis, run against a live server with it, finds no failure: no server error, no
/// undocumented status code, content type or header, no answer that breaks its schema, no request
/// that breaks the schema accepted, no wrong method or missing key answered as if right. Two
/// checks are left out, each where the API means otherwise: that every schema-valid request is
/// accepted (a schema-valid request names senders and recipients that do not exist, answered
/// 403 and 404 as documented), and, for the bulk endpoint, that schema-breaking messages are
/// refused (a bulk request answers a bad message 400 in its place and seals the others: its
/// answer is 200).
#[test]
fn the_mail_openapi_document_is_valid_and_schemathesis_finds_no_failure() {
    use pki_tests::directory_support::{schemathesis_run, valid_openapi_document};
    // With the suite's Postfix as the relay, which takes every address: `"deliver": true` is
    // answered as a delivery, not a 503 for a server without relay.
    let (smtp, _) = test_mta();
    let (host, port) = smtp.rsplit_once(':').unwrap();
    let f = fixture(&format!("[mail.relay]\nhost = \"{host}\"\nport = {port}\ntls = \"none\"\n"));
    let server = f.server.as_ref().unwrap();
    let key = f
        .env
        .pki(["apikey", "create", "--name", "schemathesis", "--permission", "mail", "--rate", "1000000"])
        .stdout
        .trim()
        .to_string();
    f.env.pki(["mail", "sender", "allow", "--name", "statements", "--key", "schemathesis"]);

    let url = server.url("/api/v1/mail/openapi.json");
    let parsed = valid_openapi_document(&url, &f.env.path("mail-openapi.json"));
    // The document's example seals for real here (alice has an encryption certificate), and
    // schemathesis sends it too: the answers of 200 are checked.
    let example = &parsed["paths"]["/api/v1/mail/seal"]["post"]["requestBody"]["content"]["application/json"]
        ["example"];
    let r = f.post("/api/v1/mail/seal", Some(&key), Some("application/json"), example.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());

    let config = f.env.write(
        "schemathesis.toml",
        "[checks.positive_data_acceptance]\nenabled = false\n\n\
         [checks.negative_data_rejection]\nexpected-statuses = [\"400\", \"401\", \"413\"]\n\n\
         [[operations]]\ninclude-path = \"/api/v1/mail/seal/bulk\"\nchecks.negative_data_rejection.enabled = false\n",
    );
    // Every check is on unless the configuration turns it off (`--checks all` would override it).
    let auth = format!("Authorization: Bearer {key}");
    let args = ["--max-examples", "60", "--request-timeout", "20", "-H", &auth];
    let (report, total) = schemathesis_run(f.env.dir(), &config, &url, &args);
    // The two mail operations (schemathesis leaves out the document's own).
    assert_eq!(total, 2, "{report}");
    // The documented examples were sent (and sealed) too, not skipped.
    assert!(report.contains("✅ Examples"), "{report}");
    let logs = server.stderr();
    assert!(!logs.contains("panicked"), "the server panicked:\n{logs}");
}
