//! Many `pki serve` processes on one PostgreSQL database (issue 15, acceptance 3 and 4): every
//! node a data directory and port of its own, the same database URL and master passphrase.
//! Runs on the PostgreSQL test server whatever `PKI_TESTS_BACKEND` says (`PKI_TEST_DATABASE_URL`,
//! started by scripts/with-postgres.sh; a run without it fails naming that script).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pki_tests::directory_support::exists;
use pki_tests::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `pki serve --only directory,ocsp,tsa` of a replica node.
fn serve_replica(node: &Env) -> Server {
    let mut cmd = node.command([
        "serve",
        "--listen",
        &format!("127.0.0.1:{}", node.port),
        "--only",
        "directory,ocsp,tsa",
    ]);
    Server::start(&mut cmd, node.port, node.dir())
}

/// "good", "revoked", or what OpenSSL's OCSP client said.
fn ocsp_status(ca: &CaFiles, cert: &Path, port: u16) -> String {
    let text = openssl_ocsp(ca, cert, port);
    if text.contains(": good") {
        "good".into()
    } else if text.contains(": revoked") {
        "revoked".into()
    } else {
        text
    }
}

/// Acceptance 3: one writer, two `--only directory,ocsp,tsa` replicas. A certificate issued
/// through the writer is found by `exists` on both replicas at once; after `pki revoke`, OpenSSL's
/// OCSP client gets "revoked" from each replica within 1 s; a replica killed with SIGKILL during
/// lookups leaves the other answering with zero failed requests.
#[test]
fn one_writer_and_two_replicas_share_issuance_revocation_and_survive_a_killed_replica() {
    let writer = Env::on_postgres("");
    writer.init();
    let ca = writer.ca_files();
    let (n1, n2) = (writer.node(""), writer.node(""));
    let w = writer.serve();
    let (mut r1, r2) = (serve_replica(&n1), serve_replica(&n2));

    let key = gen_key(writer.dir(), "leaf.key", KeySpec::P256);
    let csr = make_csr(&key, &writer.path("leaf.csr"), "/CN=ann", &[]);
    let pem = writer
        .pki(["issue", "--email", "ann@bank.example", "--usage", "encryption", "--csr", &p(&csr)])
        .stdout;
    let leaf = writer.write("leaf.pem", &pem);
    for (name, port) in [("replica 1", r1.port), ("replica 2", r2.port)] {
        assert!(
            exists(port, "ann@bank.example", "encryption", None),
            "{name} finds the new certificate at once"
        );
        assert_eq!(ocsp_status(&ca, &leaf, port), "good", "{name}");
    }

    let serial = cert_serial(&pem_der(&pem));
    writer.pki(["revoke", "--serial", &serial, "--reason", "keyCompromise"]);
    let revoked_at = Instant::now();
    for (name, port) in [("replica 1", r1.port), ("replica 2", r2.port)] {
        loop {
            let status = ocsp_status(&ca, &leaf, port);
            if status == "revoked" {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "{name} still answers {status:?} {} ms after the revocation",
                revoked_at.elapsed().as_millis()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(1), "both replicas within 1 s");
    assert!(!exists(r2.port, "ann@bank.example", "encryption", None), "the directory drops it too");

    // Lookups on replica 2 from four clients while replica 1 is killed: not one fails. The API
    // key, made through the writer, is known to every node at once.
    let key =
        writer.pki(["apikey", "create", "--name", "mailer", "--rate", "100000"]).stdout.trim().to_string();
    let bearer = format!("Bearer {key}");
    let (stop, killed) = (AtomicBool::new(false), AtomicBool::new(false));
    let (done, failed, after_kill) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::Acquire) {
                    let r = http_client::send(
                        r2.port,
                        "GET",
                        "/api/v1/certificates/exists?email=ann@bank.example&usage=signing",
                        &[("Authorization", &bearer)],
                        None,
                        Duration::from_secs(10),
                    );
                    match r {
                        Ok(reply) if reply.status == 200 => {
                            done.fetch_add(1, Ordering::Relaxed);
                            if killed.load(Ordering::Acquire) {
                                after_kill.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        r1.sigkill();
        killed.store(true, Ordering::Release);
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Release);
    });
    let (done, failed, after_kill) = (done.into_inner(), failed.into_inner(), after_kill.into_inner());
    assert!(after_kill > 0, "lookups went on after the kill ({done} in all)");
    assert_eq!(failed, 0, "{failed} of {} lookups on the surviving replica failed", done + failed);
    // The writer, too, is untouched.
    assert!(!exists(w.port, "ann@bank.example", "encryption", None));
    r2.stop();
    w.stop();
}

/// Acceptance 4: two writers issue 1,000 certificates each at the same time (the batch path of
/// `pki cerdb load-test-data`, beside single `pki issue` calls): 2,000 distinct serials, `pki
/// list` shows every one, and `pki audit verify` passes over one chain holding every issuance.
#[test]
fn two_writers_issue_a_thousand_each_at_once_on_one_chain() {
    let a = Env::on_postgres("");
    a.init();
    let b = a.node("");
    let (sa, sb) = (a.serve(), b.serve());
    let key = gen_key(a.dir(), "one.key", KeySpec::P256);
    let csr = make_csr(&key, &a.path("one.csr"), "/CN=one", &[]);
    let csr_b = b.write("one.csr", std::fs::read(&csr).unwrap());
    let singles = 20;
    std::thread::scope(|s| {
        for (env, start) in [(&a, "0"), (&b, "1000000")] {
            s.spawn(move || {
                let out =
                    env.pki(["cerdb", "load-test-data", "--count", "990", "--start", start, "--batch", "10"]);
                assert!(out.stdout.starts_with("issued 990 encryption certificates in"), "{}", out.stdout);
            });
        }
        for (env, csr, who) in [(&a, &csr, "a"), (&b, &csr_b, "b")] {
            s.spawn(move || {
                for i in 0..singles / 2 {
                    let email = format!("single{i}-{who}@bank.example");
                    env.pki(["issue", "--email", &email, "--usage", "signing", "--csr", &p(csr)]);
                }
            });
        }
    });
    // Both nodes list the same 2,000 subscriber certificates, each serial once.
    for env in [&a, &b] {
        let rows: Vec<ListRow> =
            parse_list(&env.pki(["list"]).stdout).into_iter().filter(|r| r.email != "-").collect();
        assert_eq!(rows.len(), 2 * 990 + singles, "pki list shows every issuance");
        let serials: HashSet<&str> = rows.iter().map(|r| r.serial.as_str()).collect();
        assert_eq!(serials.len(), rows.len(), "no serial twice");
    }
    // One chain: the CA's creation, then at least one entry per issuance, all verified.
    let verified = a.pki(["audit", "verify"]).stdout;
    let entries: usize = verified
        .strip_prefix("audit log verified: ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("pki audit verify: {verified}"));
    assert!(entries > 2 * 990 + singles, "the chain holds every issuance: {verified}");
    assert_eq!(b.pki(["audit", "verify"]).stdout, verified, "the other node verifies the same chain");
    sa.stop();
    sb.stop();
}

/// Waits up to `within` for `done`; its last value.
fn within(within: Duration, mut done: impl FnMut() -> Option<String>) -> Result<String, String> {
    let start = Instant::now();
    loop {
        match done() {
            Some(v) => return Ok(v),
            None if start.elapsed() > within => return Err(format!("not within {} ms", within.as_millis())),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A compromise is the CA's, not one node's: a subscriber's key revoked for keyCompromise and
/// `pki ca compromise` through one node bind the other at once for issuance, and within a second
/// for its OCSP, TSA and audit keys and its directory; an OCSP signer, a TSA and an audit signer
/// re-keyed through one node sign on the other.
#[test]
fn a_compromise_through_one_node_binds_the_other() {
    let a = Env::on_postgres("");
    a.init();
    let b = a.node("");
    let (sa, sb) = (a.serve(), b.serve());
    let ca = a.ca_files();
    let issue_on = |env: &Env, who: &str| {
        let key = gen_key(env.dir(), &format!("{who}.key"), KeySpec::P256);
        let csr = make_csr(&key, &env.path(&format!("{who}.csr")), &format!("/CN={who}"), &[]);
        let email = format!("{who}@bank.example");
        let out = env.pki_try(["issue", "--email", &email, "--usage", "signing", "--csr", &p(&csr)]);
        (csr, out)
    };

    // A subscriber's key revoked for keyCompromise through a: b refuses a CSR of that key.
    let (csr, out) = issue_on(&a, "kim");
    assert!(out.status.success(), "{}", out.stderr);
    a.pki(["revoke", "--serial", &cert_serial(&pem_der(&out.stdout)), "--reason", "keyCompromise"]);
    let csr_b = b.write("kim-again.csr", std::fs::read(&csr).unwrap());
    b.pki_fails(
        ["issue", "--email", "kim@bank.example", "--usage", "signing", "--csr", &p(&csr_b)],
        &["its key was reported compromised"],
    );

    // The OCSP signer compromised through a: b answers nothing good with it; re-keyed through a:
    // b answers with the new signer, verified against the root.
    let (_, out) = issue_on(&a, "lee");
    let lee = a.write("lee.pem", &out.stdout);
    assert_eq!(ocsp_status(&ca, &lee, sb.port), "good");
    a.pki(["ca", "compromise", "--ca", "ocsp", "--confirm", "compromise ocsp"]);
    within(Duration::from_secs(2), || {
        let s = ocsp_status(&ca, &lee, sb.port);
        (s != "good").then_some(s)
    })
    .expect("b stops answering good with the compromised OCSP signer");
    a.pki(["ca", "rekey", "--ca", "ocsp"]);
    within(Duration::from_secs(3), || {
        let text = openssl_ocsp(&ca, &lee, sb.port);
        (text.contains(": good") && text.contains("Response verify OK")).then_some(text)
    })
    .expect("b answers with the new OCSP signer");

    // The TSA compromised through a: b's TSA signs nothing more.
    let data = b.write("statement.txt", "statement of account\n");
    let stamp = |n: usize| {
        let out = p(&b.path(&format!("stamp-{n}.tsr")));
        b.pki_try(["ts", "stamp", &p(&data), "--server", &b.base_url(), "--out", &out])
    };
    assert!(stamp(0).status.success(), "b's TSA stamps before the compromise");
    a.pki(["ca", "compromise", "--ca", "tsa", "--confirm", "compromise tsa"]);
    let mut n = 0;
    let refused = within(Duration::from_secs(3), || {
        n += 1;
        let out = stamp(n);
        (!out.status.success()).then_some(out.stderr)
    })
    .expect("b's TSA refuses after the compromise");
    assert!(refused.contains("the TSA refused"), "{refused}");
    // Re-keyed through a: b's TSA signs with the new key, verified against the root.
    a.pki(["ca", "rekey", "--ca", "tsa"]);
    within(Duration::from_secs(3), || {
        let out = openssl_ts_verify(&b, sb.port, &ca.root);
        out.contains("Verification: OK").then_some(out)
    })
    .expect("b's TSA signs with the re-keyed certificate");

    // The audit signer compromised through a: b signs no checkpoint; re-keyed through a: b signs
    // checkpoints with the new key, and they verify.
    let checkpoint = |n: usize| {
        let out = p(&b.path(&format!("checkpoint-{n}.cms")));
        (b.pki_try(["audit", "checkpoint", "--out", &out]), out)
    };
    assert!(checkpoint(0).0.status.success(), "b signs a checkpoint before the compromise");
    a.pki(["ca", "compromise", "--ca", "audit", "--confirm", "compromise audit"]);
    let (refused, _) = checkpoint(1);
    assert!(
        !refused.status.success() && refused.stderr.contains("audit certificate was revoked"),
        "{}",
        refused.stderr
    );
    a.pki(["ca", "rekey", "--ca", "audit"]);
    let mut n = 1;
    let made = within(Duration::from_secs(3), || {
        n += 1;
        let (out, file) = checkpoint(n);
        out.status.success().then_some(file)
    })
    .expect("b signs checkpoints with the re-keyed audit signer");
    let verified = b.pki(["audit", "verify", "--checkpoint", &made]).stdout;
    assert!(verified.starts_with("audit log verified: "), "{verified}");

    // The issuing CA compromised through a: b issues nothing more, at once, and its directory
    // hands out none of that CA's certificates within a second.
    let lookups = a.pki(["apikey", "create", "--name", "lookups"]).stdout;
    let b_finds_lee =
        || directory_support::exists(sb.port, "lee@bank.example", "signing", Some(lookups.trim()));
    assert!(b_finds_lee(), "b's directory has lee's certificate before the compromise");
    a.pki(["ca", "compromise", "--ca", "issuing", "--confirm", "compromise issuing"]);
    within(Duration::from_secs(3), || (!b_finds_lee()).then_some(String::new()))
        .expect("b's directory withdraws the revoked issuing CA's certificates");
    let (_, out) = issue_on(&b, "max");
    assert!(
        !out.status.success() && out.stderr.contains("pki ca compromise"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    sa.stop();
    sb.stop();
}
