//! Issue 20 — the certificate directory over LDAP, against a running `pki serve` with `[ldap]`
//! listeners on loopback ports, through OpenLDAP's `ldapsearch`/`ldapdelete` (Debian
//! `ldap-utils`) and Python's `ldap3` client. Each test names the acceptance item it proves.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use pki_tests::directory_support::*;
use pki_tests::*;

/// The base DN as clients write it (DNs compare case-insensitively)...
const BASE: &str = "ou=certificates,dc=bank,dc=example";
/// ...and as `[ldap] base_dn` spells it, which entries' DNs carry.
const CONFIGURED_BASE: &str = "ou=Certificates,dc=bank,dc=example";

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn ldapsearch_bin() -> PathBuf {
    require_tool("ldapsearch", "apt-get install -y ldap-utils")
}

/// An environment whose `pki serve` also listens for LDAP (and LDAPS when `tls`).
struct Ldap {
    env: Env,
    port: u16,
    tls_port: u16,
}

impl Ldap {
    fn new(tls: bool) -> Ldap {
        let port = free_port();
        let tls_port = free_port();
        let tls_line = if tls { format!("tls_listen = \"127.0.0.1:{tls_port}\"\n") } else { String::new() };
        let env = Env::with_config(&format!(
            "[ldap]\nlisten = \"127.0.0.1:{port}\"\n{tls_line}base_dn = \"{CONFIGURED_BASE}\"\nmax_addresses = 4\n"
        ));
        env.init();
        Ldap { env, port, tls_port }
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldapsearch -x -LLL -H URL -b BASE FILTER ATTRS` plus `extra` options before the filter.
    fn search(&self, extra: &[&str], filter: &str, attrs: &[&str]) -> Out {
        let mut c = Command::new(ldapsearch_bin());
        c.args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", &self.url(), "-b", BASE])
            .args(extra)
            .arg(filter)
            .args(attrs);
        c.env("LDAPNOINIT", "1");
        run(&mut c)
    }
}

/// Issues a certificate for `email` from a fresh P-256 key; (PEM, serial).
fn issue(env: &Env, email: &str, usage: &str) -> (String, String) {
    let tag = format!("{}-{usage}-{}", email.replace('@', "_"), free_port());
    let key = gen_key(env.dir(), &format!("{tag}.key"), KeySpec::P256);
    let csr = make_csr(&key, &env.path(&format!("{tag}.csr")), &format!("/CN={email}"), &[]);
    let out = env.pki(["issue", "--email", email, "--usage", usage, "--csr", &p(&csr)]);
    let serial = cert_serial(&pem_der(&out.stdout));
    (out.stdout, serial)
}

/// One entry of LDIF: its DN and (attribute description, value) pairs, values decoded.
#[derive(Debug)]
struct LdifEntry {
    dn: String,
    attrs: Vec<(String, Vec<u8>)>,
}

impl LdifEntry {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.attrs.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).collect()
    }
}

/// Parses `ldapsearch -LLL` output (folded lines joined, `::` values base64-decoded).
fn ldif(text: &str) -> Vec<LdifEntry> {
    let mut lines: Vec<String> = Vec::new();
    for l in text.lines() {
        if let Some(cont) = l.strip_prefix(' ') {
            lines.last_mut().expect("continuation after a line").push_str(cont);
        } else {
            lines.push(l.to_string());
        }
    }
    let mut out: Vec<LdifEntry> = Vec::new();
    for l in lines {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (name, value) = if let Some((n, v)) = l.split_once(":: ") {
            (n.to_string(), base64::engine::general_purpose::STANDARD.decode(v.trim()).expect("base64 value"))
        } else {
            let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("not LDIF: {l:?}"));
            (n.to_string(), v.strip_prefix(' ').unwrap_or(v).as_bytes().to_vec())
        };
        if name == "dn" {
            out.push(LdifEntry { dn: String::from_utf8(value).unwrap(), attrs: Vec::new() });
        } else {
            out.last_mut().expect("an attribute after a dn").attrs.push((name, value));
        }
    }
    out
}

/// The DER of the certificate the HTTP directory fetches for (`email`, `usage`).
fn http_fetch(port: u16, email: &str, usage: &str) -> Vec<u8> {
    let pem = String::from_utf8(curl_get(&format!(
        "http://127.0.0.1:{port}/api/v1/certificates?email={}&usage={usage}",
        q(email)
    )))
    .unwrap();
    pem_der(&pem_blocks(&pem)[0])
}

/// Python's `ldap3` client, pinned by scripts/test.sh.
fn python_ldap3(script: &str, args: &[&str]) -> Out {
    let py = require_tool("python3", "apt-get install -y python3");
    let check = run(Command::new(&py).args(["-c", "import ldap3; print(ldap3.__version__)"]));
    assert!(
        check.status.success(),
        "the LDAP tests need Python's ldap3 client: install it with `python3 -m pip install ldap3==2.9.1`\n{}",
        check.stderr
    );
    run(Command::new(&py).arg("-c").arg(script).args(args))
}

const LDAP3_SEARCH: &str = r#"
import base64, json, sys
import ldap3
port, base, filt, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
server = ldap3.Server('127.0.0.1', port=port, get_info=ldap3.NONE)
conn = ldap3.Connection(server, auto_bind=True)
conn.search(base, filt, search_scope=ldap3.SUBTREE,
            attributes=['mail', 'userCertificate;binary', 'userSMIMECertificate'])
entries = [e for e in conn.response if e['type'] == 'searchResEntry']
res = {'result': conn.result['result'], 'entries': []}
for e in entries:
    raw = e['raw_attributes']
    res['entries'].append({
        'dn': e['dn'],
        'certs': [base64.b64encode(v).decode() for v in raw.get('userCertificate;binary', [])],
        'smime': [base64.b64encode(v).decode() for v in raw.get('userSMIMECertificate', [])],
    })
    if raw.get('userSMIMECertificate'):
        open(out, 'wb').write(raw['userSMIMECertificate'][0])
conn.unbind()
print(json.dumps(res))
"#;

fn b64(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
}

/// Items 1 and 2: ldapsearch and ldap3 get, byte for byte, the certificate the HTTP directory
/// fetches; the PKCS#7 parses with OpenSSL; after `pki revoke` the certificate is gone from the
/// next search; an unknown address gives no entry.
#[test]
fn ldapsearch_and_ldap3_read_the_http_directorys_certificates_and_revocation_is_seen_at_once() {
    let l = Ldap::new(false);
    let server = l.env.serve();
    let (_, sign_serial) = issue(&l.env, "alice@example.com", "signing");
    let (_, enc_serial) = issue(&l.env, "alice@example.com", "encryption");
    let enc = http_fetch(server.port, "alice@example.com", "encryption");
    let sign = http_fetch(server.port, "alice@example.com", "signing");
    assert_eq!(cert_serial(&enc), enc_serial);
    assert_eq!(cert_serial(&sign), sign_serial);

    // ldapsearch, as the issue's acceptance line writes it (mixed case address).
    let out = l.search(&[], "(mail=Alice@Example.com)", &["userCertificate;binary"]).ok();
    let entries = ldif(&out.stdout);
    assert_eq!(entries.len(), 1, "{}", out.stdout);
    assert_eq!(entries[0].dn, format!("mail=alice@example.com,{CONFIGURED_BASE}"));
    let certs = entries[0].values("userCertificate;binary");
    assert_eq!(certs, [enc.as_slice(), sign.as_slice()], "encryption first, byte-identical to HTTP");
    assert_eq!(entries[0].attrs.len(), 2, "only the attribute asked for: {:?}", entries[0].attrs);

    // All attributes.
    let all = ldif(&l.search(&[], "(mail=alice@example.com)", &[]).ok().stdout);
    assert_eq!(all[0].values("mail"), [b"alice@example.com"]);
    assert_eq!(all[0].values("cn"), [b"alice@example.com"]);
    assert!(all[0].values("objectClass").contains(&b"inetOrgPerson".as_slice()));
    assert_eq!(all[0].values("userSMIMECertificate").len(), 1);

    // Python's ldap3: the same certificates; its userSMIMECertificate parses with OpenSSL and
    // holds exactly them.
    let p7_file = l.env.path("alice.p7b");
    let out =
        python_ldap3(LDAP3_SEARCH, &[&l.port.to_string(), BASE, "(mail=ALICE@example.com)", &p(&p7_file)])
            .ok();
    let res: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(res["result"], 0);
    let e = &res["entries"][0];
    assert_eq!(e["dn"], format!("mail=alice@example.com,{CONFIGURED_BASE}"));
    let py_certs: Vec<Vec<u8>> = e["certs"].as_array().unwrap().iter().map(b64).collect();
    assert_eq!(py_certs, [enc.clone(), sign.clone()]);
    let printed = openssl(["pkcs7", "-inform", "DER", "-in", &p(&p7_file), "-print_certs"]).stdout;
    let mut in_p7: Vec<Vec<u8>> = pem_blocks(&printed).iter().map(|b| pem_der(b)).collect();
    in_p7.sort();
    let mut want = vec![enc.clone(), sign.clone()];
    want.sort();
    assert_eq!(in_p7, want, "the PKCS#7 holds the two certificates:\n{printed}");

    // Unknown address: zero entries, success.
    let out = l.search(&[], "(mail=never-issued@example.com)", &[]).ok();
    assert!(ldif(&out.stdout).is_empty(), "{}", out.stdout);
    let out =
        python_ldap3(LDAP3_SEARCH, &[&l.port.to_string(), BASE, "(mail=nobody@example.com)", &p(&p7_file)])
            .ok();
    let res: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!((res["result"].as_i64(), res["entries"].as_array().unwrap().len()), (Some(0), 0));

    // An | of equalities.
    issue(&l.env, "bob@example.com", "encryption");
    let out = l
        .search(&[], "(|(mail=alice@example.com)(mail=bob@example.com)(mail=carol@example.com))", &["mail"])
        .ok();
    let mut mails: Vec<Vec<u8>> = ldif(&out.stdout).iter().map(|e| e.values("mail")[0].to_vec()).collect();
    mails.sort();
    assert_eq!(mails, [b"alice@example.com".to_vec(), b"bob@example.com".to_vec()]);

    // sizeLimit (-z 1): one entry, then sizeLimitExceeded (ldapsearch exits with 4).
    let out = l.search(&["-z", "1"], "(|(mail=alice@example.com)(mail=bob@example.com))", &["mail"]);
    assert_eq!(out.status.code(), Some(4), "{}", out.stderr);
    assert_eq!(ldif(&out.stdout).len(), 1);

    // Revocation: the encryption certificate vanishes from the very next search.
    l.env.pki(["revoke", "--serial", &enc_serial, "--reason", "superseded"]);
    let out = l.search(&[], "(mail=alice@example.com)", &["userCertificate;binary"]).ok();
    assert_eq!(ldif(&out.stdout)[0].values("userCertificate;binary"), [sign.as_slice()]);
    l.env.pki(["revoke", "--serial", &sign_serial, "--reason", "superseded"]);
    let out = l.search(&[], "(mail=alice@example.com)", &[]).ok();
    assert!(ldif(&out.stdout).is_empty(), "no valid certificate left, no entry: {}", out.stdout);

    // Root DSE for clients that probe it.
    let mut c = Command::new(ldapsearch_bin());
    c.args(["-x", "-LLL", "-H", &l.url(), "-s", "base", "-b", "", "(objectClass=*)", "namingContexts"]);
    let dse = ldif(&run(&mut c).ok().stdout);
    assert_eq!(dse[0].values("namingContexts"), [CONFIGURED_BASE.as_bytes()]);
    server.stop();
}

/// Item 3: harvesting gets unwillingToPerform, over quota adminLimitExceeded, a revoked key
/// invalidCredentials; writes are refused; and no looked-up address reaches the logs.
#[test]
fn harvesting_quotas_and_revoked_keys_get_their_result_codes() {
    let l = Ldap::new(false);
    let mut cmd = l.env.command(["serve", "--listen", &format!("127.0.0.1:{}", l.env.port)]);
    cmd.env("RUST_LOG", "debug");
    let server = Server::start(&mut cmd, l.env.port, l.env.dir());
    issue(&l.env, "known@example.com", "encryption");
    let code = |o: &Out| o.status.code().unwrap_or(-1);

    // ldapsearch exits with the LDAP result code.
    for filter in ["(mail=*)", "(mail=a*)", "(objectClass=*)", "(cn=known@example.com)"] {
        let out = l.search(&[], filter, &[]);
        assert_eq!(code(&out), 53, "{filter}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("nwilling to perform"), "{filter}: {}", out.stderr);
        assert!(ldif(&out.stdout).is_empty());
    }
    let out = l.search(&["-s", "one"], "(mail=*)", &[]);
    assert_eq!(code(&out), 53);
    let out = l.search(
        &[],
        "(|(mail=a@x.example)(mail=b@x.example)(mail=c@x.example)(mail=d@x.example)(mail=e@x.example))",
        &[],
    );
    assert_eq!(code(&out), 53, "over max_addresses: {}", out.stderr);

    // Writes.
    let mut del = Command::new(require_tool("ldapdelete", "apt-get install -y ldap-utils"));
    del.args(["-x", "-H", &l.url(), &format!("mail=known@example.com,{BASE}")]);
    let out = run(&mut del);
    assert_eq!(code(&out), 53, "{}", out.stderr);
    assert_eq!(ldif(&l.search(&[], "(mail=known@example.com)", &["mail"]).ok().stdout).len(), 1);

    // Anonymous quota: the same per-address bucket as anonymous HTTP lookups.
    l.env.pki(["cerdb", "anonymous", "--rate", "0.01", "--burst", "3"]);
    assert_eq!(l.search(&[], "(mail=known@example.com)", &["mail"]).status.code(), Some(0));
    let r = get(server.port, "/api/v1/certificates/exists?email=known@example.com", None);
    assert_eq!(r.status, 200, "an HTTP lookup takes from the same bucket");
    assert_eq!(l.search(&[], "(mail=known@example.com)", &["mail"]).status.code(), Some(0));
    let out = l.search(&[], "(mail=known@example.com)", &["mail"]);
    assert_eq!(code(&out), 11, "over quota: {}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("dministrative limit exceeded"), "{}", out.stderr);
    assert_eq!(get(server.port, "/api/v1/certificates/exists?email=known@example.com", None).status, 429);

    // A key: bind as cn=NAME,<base> with the key; its own quota.
    let key = l
        .env
        .pki(["apikey", "create", "--name", "mailer", "--rate", "0.01", "--burst", "2"])
        .stdout
        .trim()
        .to_string();
    let dn = format!("cn=mailer,{BASE}");
    let as_key = ["-D", dn.as_str(), "-w", key.as_str()];
    for _ in 0..2 {
        let out = l.search(&as_key, "(mail=known@example.com)", &["mail"]);
        assert_eq!(code(&out), 0, "{}", out.stderr);
        assert_eq!(ldif(&out.stdout).len(), 1);
    }
    assert_eq!(code(&l.search(&as_key, "(mail=known@example.com)", &["mail"])), 11);
    // A wrong name for the key, then a revoked key: invalidCredentials.
    let other = format!("cn=someone-else,{BASE}");
    let out = l.search(&["-D", &other, "-w", &key], "(mail=known@example.com)", &[]);
    assert_eq!(code(&out), 49, "{}", out.stderr);
    l.env.pki(["apikey", "revoke", "--name", "mailer"]);
    let out = l.search(&as_key, "(mail=known@example.com)", &[]);
    assert_eq!(code(&out), 49, "{}", out.stderr);
    assert!(out.stderr.contains("Invalid credentials"), "{}", out.stderr);

    let logs = format!("{}{}", server.stdout(), server.stderr());
    assert!(logs.contains("LDAP search"), "the LDAP service logs at debug level: {logs}");
    for needle in ["known@example.com", "a@x.example", "known%40"] {
        assert!(!logs.contains(needle), "the server log holds {needle:?}:\n{logs}");
    }
    server.stop();
}

/// Item 4: LDAPS with ldapsearch trusting our root (and not trusting anything else).
#[test]
fn ldaps_with_ldapsearch_trusting_our_root() {
    let l = Ldap::new(true);
    let server = l.env.serve();
    assert!(server.stdout().contains(&format!("ldaps://127.0.0.1:{}", l.tls_port)), "{}", server.stdout());
    issue(&l.env, "tls@example.com", "encryption");
    let enc = http_fetch(server.port, "tls@example.com", "encryption");
    let ca = l.env.ca_files();
    let ldaps = |cacert: &Path| {
        let mut c = Command::new(ldapsearch_bin());
        c.args([
            "-x",
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-H",
            &format!("ldaps://127.0.0.1:{}", l.tls_port),
            "-b",
            BASE,
        ])
        .args(["(mail=tls@example.com)", "userCertificate;binary"])
        .env("LDAPTLS_CACERT", cacert)
        .env("LDAPTLS_REQCERT", "demand");
        run(&mut c)
    };
    let out = ldaps(&ca.root).ok();
    assert_eq!(ldif(&out.stdout)[0].values("userCertificate;binary"), [enc.as_slice()]);
    // Trusting only the issuing CA (which did not issue the server certificate) fails.
    let out = ldaps(&ca.issuing);
    assert!(!out.status.success(), "LDAPS trusted a certificate its CA file does not lead to");
    server.stop();
}

/// A tiny deterministic generator (xorshift64*), so every run sends the same garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Sends `bytes` on a new connection, closes the sending side, and reads until the server
/// closes (at most 10 s); what it answered.
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(10) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    answer
}

/// A search request for `(mail=ADDRESS)`, BER, as ldapsearch sends it.
fn search_request(address: &str) -> Vec<u8> {
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
    let filter = [tlv(0x04, b"mail"), tlv(0x04, address.as_bytes())].concat();
    let search = [
        tlv(0x04, BASE.as_bytes()),
        tlv(0x0a, &[2]),
        tlv(0x0a, &[0]),
        tlv(0x02, &[0]),
        tlv(0x02, &[0]),
        tlv(0x01, &[0]),
        tlv(0xa3, &filter),
        tlv(0x30, &[]),
    ]
    .concat();
    tlv(0x30, &[tlv(0x02, &[1]), tlv(0x63, &search)].concat())
}

/// Item 5: random, truncated and oversized BER never stop the server; each connection gets an
/// answer or a notice of disconnection, and the next client is served.
#[test]
fn random_truncated_and_oversized_ber_never_stop_the_server() {
    let l = Ldap::new(false);
    let mut server = l.env.serve();
    issue(&l.env, "fuzz@example.com", "encryption");
    let served = |what: &str| {
        let out = l.search(&[], "(mail=fuzz@example.com)", &["mail"]);
        assert_eq!(out.status.code(), Some(0), "after {what}: {}", out.stderr);
        assert_eq!(ldif(&out.stdout).len(), 1, "after {what}");
    };
    let good = search_request("fuzz@example.com");
    let answer = exchange(l.port, &good);
    assert!(answer.windows(16).any(|w| w == b"fuzz@example.com"), "the hand-made request is answered");

    let notice = b"1.3.6.1.4.1.1466.20036";
    // A message over the 32 KiB limit, complete: read whole, refused with a notice.
    let big = search_request(&format!("{}@example.com", "a".repeat(40_000)));
    let answer = exchange(l.port, &big);
    assert!(answer.windows(notice.len()).any(|w| w == notice), "oversized message: {answer:02x?}");
    // A length announcing 2 GiB: the server stops reading past twice the limit.
    let mut liar = vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff];
    liar.resize(64 * 1024 + 1, 0x04);
    let answer = exchange(l.port, &liar);
    assert!(answer.windows(notice.len()).any(|w| w == notice), "huge declared length");
    // Not an LDAP message at all.
    let http = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nAccept-Language: en\r\n\r\n";
    let answer = exchange(l.port, http);
    assert!(answer.windows(notice.len()).any(|w| w == notice), "HTTP on the LDAP port");
    served("oversized and foreign messages");

    let mut rng = Rng(0x1da9_5eed_9e37_79b9);
    let start = Instant::now();
    for round in 0..400 {
        let bytes = match round % 4 {
            0 => (0..1 + rng.below(400)).map(|_| rng.next() as u8).collect::<Vec<u8>>(),
            1 => good[..rng.below(good.len())].to_vec(),
            2 => {
                let mut b = good.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                b
            }
            _ => {
                let mut b = vec![0x30, 0x80 | (1 + rng.below(4)) as u8];
                b.extend((0..rng.below(8)).map(|_| rng.next() as u8));
                b
            }
        };
        exchange(l.port, &bytes);
        if round % 100 == 99 {
            assert!(server.is_running(), "the server died at round {round}:\n{}", server.stderr());
            served(&format!("{} garbage connections", round + 1));
        }
        assert!(start.elapsed() < Duration::from_secs(240), "the garbage rounds took too long");
    }
    assert!(server.is_running());
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
    served("everything");
    server.stop();
}

/// `pki serve --only ldap`: the LDAP directory alone (the HTTP directory is not mounted); without
/// an `[ldap]` listener it is refused with the setting named.
#[test]
fn only_ldap_serves_ldap_alone_and_needs_a_listener() {
    let l = Ldap::new(false);
    issue(&l.env, "solo@example.com", "encryption");
    let mut cmd =
        l.env.command(["serve", "--only", "ldap", "--listen", &format!("127.0.0.1:{}", l.env.port)]);
    let server = Server::start(&mut cmd, l.env.port, l.env.dir());
    let out = l.search(&[], "(mail=solo@example.com)", &["mail"]).ok();
    assert_eq!(ldif(&out.stdout).len(), 1);
    let r = get(server.port, "/api/v1/certificates/exists?email=solo@example.com", None);
    assert_eq!(r.status, 404, "the HTTP directory is not served with --only ldap");
    server.stop();

    let plain = Env::new();
    plain.init();
    plain.pki_fails(["serve", "--only", "ldap"], &["--only ldap", "[ldap] listen"]);
}
