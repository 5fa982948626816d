//! Acceptance item 8: a certificate that `pki issue` printed survives a SIGKILL of the process
//! that issued it: `pki serve` killed the moment the CLI (talking to it over the admin socket)
//! has printed, and a local `pki issue` killed right after printing. After the restart `pki show`
//! finds every printed certificate, byte for byte, and no serial was ever handed out twice.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use pki_tests::*;

const EMAIL: &str = "grace@example.com";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// What one `pki issue` run printed.
struct Printed {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `pki issue`, calling `on_printed` the moment its stdout holds a whole certificate.
fn issue_watching(env: &Env, args: &[String], on_printed: impl FnOnce(u32)) -> Printed {
    let mut child =
        env.command(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut stdout = String::new();
    let mut on_printed = Some(on_printed);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        stdout.push_str(&line);
        if line.trim_end() == "-----END CERTIFICATE-----" {
            if let Some(f) = on_printed.take() {
                f(pid);
            }
        }
    }
    let status = child.wait().unwrap();
    Printed { ok: status.success(), stdout, stderr: err_thread.join().unwrap() }
}

fn issue_args(csr: &Path) -> Vec<String> {
    ["issue", "--email", EMAIL, "--usage", "signing", "--csr", &p(csr)]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn generate_args(env: &Env, n: usize, pw: &Path) -> Vec<String> {
    [
        "issue",
        "--email",
        EMAIL,
        "--usage",
        "encryption",
        "--generate",
        "--key-type",
        "p256",
        "--p12",
        &p(&env.path(&format!("g{n}.p12"))),
        "--p12-password-file",
        &p(pw),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `pki show` finds the certificate, with the same DER.
fn assert_found(env: &Env, serial: &str, der: &[u8]) {
    let show = env.pki(["show", "--serial", serial]).stdout;
    let at = show.find("-----BEGIN CERTIFICATE-----").unwrap_or_else(|| panic!("show {serial}: {show}"));
    assert_eq!(pem_der(&show[at..]), der, "show {serial} returns another certificate");
}

#[test]
fn certificates_printed_before_sigkill_survive_and_serials_are_never_reused() {
    let env = Env::new();
    let key = gen_key(env.dir(), "grace.key", KeySpec::P256);
    let csr = make_csr(&key, &env.path("grace.csr"), &format!("/CN={EMAIL}"), &[]);
    let pw = env.write("pw", "a p12 password\n");
    let mut printed: Vec<(String, Vec<u8>)> = Vec::new();
    let mut escrowed: Vec<String> = Vec::new();
    let mut server = env.serve();
    let ca_serials = env.list_serials();

    // Rounds of: some ordinary issuance, then one after which the server is SIGKILLed the moment
    // the CLI has printed; restart; the certificate is there.
    for round in 0..4 {
        let ordinary = env.pki(issue_args(&csr)).stdout;
        let der = pem_der(&ordinary);
        printed.push((cert_serial(&der), der));

        let args = if round % 2 == 0 { issue_args(&csr) } else { generate_args(&env, round, &pw) };
        let out = issue_watching(&env, &args, |_| server.sigkill());
        assert!(out.ok, "round {round}: the CLI got its answer before the kill: {}", out.stderr);
        assert!(!server.is_running(), "the server was killed");
        let der = pem_der(&out.stdout);
        let serial = cert_serial(&der);
        if round % 2 == 1 {
            escrowed.push(serial.clone());
        }
        printed.push((serial.clone(), der.clone()));

        server = env.serve();
        assert_found(&env, &serial, &der);
    }

    // A burst: four concurrent issuances, the server killed as soon as the first has printed.
    // Those that printed must be found; the others may have failed, but nothing is reused.
    let (tx, rx) = mpsc::channel::<()>();
    let results: Vec<Printed> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let tx = tx.clone();
                let env = &env;
                let args = if i % 2 == 0 { issue_args(&csr) } else { generate_args(env, 100 + i, &pw) };
                s.spawn(move || {
                    issue_watching(env, &args, move |_| {
                        let _ = tx.send(());
                    })
                })
            })
            .collect();
        rx.recv_timeout(Duration::from_secs(60)).expect("one issuance printed");
        server.sigkill();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut burst_printed = 0;
    for r in &results {
        if r.stdout.contains("-----END CERTIFICATE-----") {
            assert!(r.ok, "a CLI printed a certificate and then failed: {}", r.stderr);
            let der = pem_der(&r.stdout);
            printed.push((cert_serial(&der), der));
            burst_printed += 1;
        } else {
            assert!(!r.ok, "a CLI succeeded without printing a certificate");
            assert_eq!(r.stderr.lines().count(), 1, "one error line: {}", r.stderr);
        }
    }
    assert!(burst_printed >= 1);
    server = env.serve();
    for (serial, der) in &printed {
        assert_found(&env, serial, der);
    }
    // Escrowed keys of killed rounds are recoverable: the key store write was durable too.
    for serial in &escrowed {
        let out = env.escrow_recover(serial, &env.path("r.p12"), &pw);
        assert!(out.stdout.contains(serial.as_str()));
    }
    server.stop();

    // Without a server: the local `pki issue` process itself is SIGKILLed right after printing.
    for _ in 0..3 {
        let out = issue_watching(&env, &issue_args(&csr), |pid| {
            // The process may be exiting already; kill it by its id all the same.
            let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        });
        let der = pem_der(&out.stdout);
        let serial = cert_serial(&der);
        assert_found(&env, &serial, &der);
        printed.push((serial, der));
    }

    // No serial twice: among everything printed, in the list, and between CA and subscriber
    // certificates; every printed certificate is listed exactly once.
    let listed = env.list_serials();
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "pki list shows a serial twice: {listed:?}");
    let printed_serials: HashSet<&String> = printed.iter().map(|(s, _)| s).collect();
    assert_eq!(printed_serials.len(), printed.len(), "two printed certificates share a serial");
    for s in &printed_serials {
        assert_eq!(listed.iter().filter(|l| l == s).count(), 1, "{s} is not listed exactly once");
        assert!(!ca_serials.contains(s), "{s} reuses a CA certificate's serial");
    }
    for s in &ca_serials {
        assert!(listed.contains(s), "CA certificate {s} is gone");
    }
    // The audit chain survived every kill.
    let audit = env.pki(["audit", "verify"]).stdout;
    assert!(audit.starts_with("audit log verified:"), "{audit}");
}
