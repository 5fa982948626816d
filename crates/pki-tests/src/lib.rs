//! # pki-tests — end-to-end tests of the `pki` binary
//!
//! **Owns:** the harness the tests in `tests/` share: building the real `pki` binary once per
//! test process, a private temporary directory per test with its own `pki.toml` and loopback port,
//! a [`Server`] guard around `pki serve`, thin wrappers over the real clients (OpenSSL 3, curl)
//! that the acceptance criteria name, and one HTTP client for the rest ([`http_client`], on `ureq`).
//!
//! **Must not:** link the product's library crates: every check goes through the binary, the
//! files it writes, and real clients. (The audit-tampering test opens the embedded database directly,
//! as an attacker with file access would.)
//!
//! A missing tool is a failure, never a skip: [`require_tool`] panics naming the install command.
//!
//! Environment knobs, all optional: `PKI_TESTS_BIN` (test that binary instead of building one),
//! `PKI_TESTS_TRACE` (print how long the build, each command and each server start took),
//! `PKI_TESTS_BUILD_LOG` (write cargo's stderr of the build there), `PKI_TESTS_HSM` (`soft`, the
//! default, or `pkcs11`: every [`Env`] then keeps its CA keys on a SoftHSM2 token of its own, made
//! in its temporary directory; scripts/test.sh runs the end-to-end suites once more that way),
//! `PKI_TESTS_BACKEND` (`sled`, the default, or `postgres`: every [`Env`] then keeps its CA in a
//! database of its own on the PostgreSQL server at `PKI_TEST_DATABASE_URL`, created with `psql`,
//! its keys sealed under a master passphrase; scripts/test.sh runs the end-to-end suites once
//! more that way, on the private server of scripts/with-postgres.sh).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![allow(clippy::unwrap_used)] // test harness: a failed unwrap is a failed test

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod console_support;
pub mod crash_loop;
pub mod directory_support;
pub mod http_client;
pub mod mixed_load;
pub mod pg_cluster;
pub mod raw_tcp;
pub mod soak;
pub use x509_parser;

/// Longest any one command may run before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest `pki serve` may take to answer `/healthz`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables of `pki` that would make a run depend on the caller's shell.
const PKI_ENV: [&str; 6] =
    ["PKI_DATA", "PKI_CONFIG", "PKI_HSM_PASSPHRASE", "PKI_HSM_PIN", "SOFTHSM2_CONF", "RUST_LOG"];

/// Debian's SoftHSM2 PKCS#11 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Where an [`Env`] keeps its CA keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmBackend {
    /// The sealed file store in the data directory.
    Soft,
    /// A SoftHSM2 token through PKCS#11.
    Pkcs11,
}

/// The backend `PKI_TESTS_HSM` chooses (`soft` when unset).
pub fn hsm_backend() -> HsmBackend {
    match std::env::var("PKI_TESTS_HSM").as_deref() {
        Err(_) | Ok("") | Ok("soft") => HsmBackend::Soft,
        Ok("pkcs11") => HsmBackend::Pkcs11,
        Ok(other) => panic!("PKI_TESTS_HSM={other:?}: expected soft or pkcs11"),
    }
}

/// Where an [`Env`] keeps its CA's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    /// The embedded database of the data directory.
    Sled,
    /// A PostgreSQL database of its own on the server at `PKI_TEST_DATABASE_URL`.
    Postgres,
}

/// The backend `PKI_TESTS_BACKEND` chooses (`sled` when unset).
pub fn storage_backend() -> StorageBackend {
    match std::env::var("PKI_TESTS_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("sled") => StorageBackend::Sled,
        Ok("postgres") => StorageBackend::Postgres,
        Ok(other) => panic!("PKI_TESTS_BACKEND={other:?}: expected sled or postgres"),
    }
}

/// The master passphrase of every [`Env`] on PostgreSQL (its keys are in the database, sealed
/// under it; a key file of one node's own is refused there).
pub const PG_MASTER_PASSPHRASE: &str = "master passphrase of the e2e tests";

/// A fresh, empty database on the test server (`PKI_TEST_DATABASE_URL`, started by
/// scripts/with-postgres.sh), created with `psql`; its URL. Fails naming what is missing.
pub fn create_test_database() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let server = std::env::var("PKI_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("PKI_TEST_DATABASE_URL is not set: run the tests on PostgreSQL with `bash scripts/with-postgres.sh cargo test ...` (scripts/test.sh does)")
    });
    let psql = require_tool("psql", "apt-get install postgresql-client");
    let name = format!("e2e_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let out = Command::new(psql)
        .arg(&server)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql CREATE DATABASE {name}: {}", String::from_utf8_lossy(&out.stderr));
    let (base, _) = server.rsplit_once('/').expect("PKI_TEST_DATABASE_URL ends in /DBNAME");
    format!("{base}/{name}")
}

/// The rows of `sql` on the PostgreSQL database at `url`, one line each (`psql -At`); the query
/// must succeed.
pub fn psql_rows(url: &str, sql: &str) -> Vec<String> {
    let psql = require_tool("psql", "apt-get install -y postgresql-client");
    let out = run(Command::new(psql).args([url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]));
    assert!(out.status.success(), "psql {sql:?}: {}", out.stderr);
    out.stdout.lines().map(str::to_string).collect()
}

/// Drops a database [`create_test_database`] made (best effort: the server is temporary).
pub fn drop_test_database(url: &str) {
    let (Ok(server), Some((_, name))) = (std::env::var("PKI_TEST_DATABASE_URL"), url.rsplit_once('/')) else {
        return;
    };
    let _ = Command::new("psql")
        .arg(&server)
        .args(["-q", "-c", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A SoftHSM2 token of one test: its own configuration and token directory.
#[derive(Debug, Clone)]
pub struct SoftToken {
    /// The `SOFTHSM2_CONF` file.
    pub conf: PathBuf,
    /// The token directory (move it away to "remove" the token).
    pub tokens: PathBuf,
    /// The token's label.
    pub label: String,
    /// The user PIN, also in `pin_file`.
    pub pin: String,
    /// A file whose first line is the PIN.
    pub pin_file: PathBuf,
}

impl SoftToken {
    /// Initialises a token labelled `label` in `dir` (created). Needs Debian's `softhsm2`.
    pub fn create(dir: &Path, label: &str) -> SoftToken {
        let util = require_tool("softhsm2-util", "apt-get install -y softhsm2");
        assert!(
            Path::new(SOFTHSM_MODULE).is_file(),
            "the end-to-end tests need {SOFTHSM_MODULE}: install it with `apt-get install -y softhsm2`"
        );
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let pin = "pki-test-pin-0815".to_string();
        run(Command::new(util).env("SOFTHSM2_CONF", &conf).args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "so-pin-4711",
            "--pin",
            &pin,
        ]))
        .ok();
        let pin_file = dir.join("token.pin");
        std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
        SoftToken { conf, tokens, label: label.into(), pin, pin_file }
    }

    /// The `[hsm]` table that uses this token.
    pub fn hsm_table(&self) -> String {
        format!(
            "[hsm]\nbackend = \"pkcs11\"\nmodule = {:?}\ntoken_label = {:?}\npin_file = {:?}\n",
            SOFTHSM_MODULE,
            self.label,
            self.pin_file.display().to_string()
        )
    }

    /// `pkcs11-tool --list-objects --type privkey` on this token, logged in (OpenSC).
    pub fn list_private_keys(&self) -> String {
        let tool = require_tool("pkcs11-tool", "apt-get install -y opensc");
        run(Command::new(tool).env("SOFTHSM2_CONF", &self.conf).args([
            "--module",
            SOFTHSM_MODULE,
            "--token-label",
            &self.label,
            "--login",
            "--pin",
            &self.pin,
            "--list-objects",
            "--type",
            "privkey",
        ]))
        .ok()
        .stdout
    }
}

/// Finds `tool` on `PATH`, or panics naming the command that installs it. Never skips.
pub fn require_tool(tool: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("the end-to-end tests need `{tool}`, which is not on PATH: install it with `{install}`");
}

/// OpenSSL 3 (checked once).
pub fn openssl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = require_tool("openssl", "apt-get install -y openssl");
        let out = run(Command::new(&bin).arg("version"));
        assert!(
            out.stdout.starts_with("OpenSSL 3."),
            "the end-to-end tests need OpenSSL 3 (`apt-get install -y openssl`), found {:?}",
            out.stdout.trim()
        );
        bin
    })
}

/// libfaketime's preload library for threaded programs (Debian's `faketime` package).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// `cmd` with libfaketime preloaded and the clock moved by `offset` (`+45d`): the process, and
/// every clock it reads, lives that far in the future; time goes on from there. Preloaded into
/// the process itself (not through the `faketime` wrapper, which forks), so that stopping it
/// stops the program.
pub fn faketime(offset: &str, cmd: &Command) -> Command {
    assert!(
        Path::new(LIBFAKETIME).is_file(),
        "the end-to-end tests need libfaketime ({LIBFAKETIME}): install it with `apt-get install -y faketime`"
    );
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args()).env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", offset);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c
}

/// The operating-system group whose members use the admin socket in the tests (`[server]
/// admin_group` of every test configuration).
pub const OFFICERS_GROUP: &str = "pki-test-officers";

/// Runs `tool ARGS` (user administration), which must succeed or report that what it makes
/// exists already (exit status 9).
fn admin_tool(tool: &str, args: &[&str]) {
    let sbin = Path::new("/usr/sbin").join(tool);
    let bin = if sbin.is_file() { sbin } else { require_tool(tool, "apt-get install -y passwd") };
    let mut out = run(Command::new(&bin).args(args));
    // Another test process holds the lock on /etc/passwd or /etc/group (exit status 10).
    for _ in 0..100 {
        if out.status.code() != Some(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        out = run(Command::new(&bin).args(args));
    }
    assert!(
        out.status.success() || out.status.code() == Some(9),
        "`{tool} {}` failed (the end-to-end tests run as root: they make operating-system users for the officers): {}",
        args.join(" "),
        out.stderr
    );
}

/// The group [`OFFICERS_GROUP`], made once per test process.
pub fn officers_group() {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| admin_tool("groupadd", &["-f", OFFICERS_GROUP]));
}

/// The uid and gid of the operating-system user `name` in [`OFFICERS_GROUP`], made on first use
/// (no home, no login shell).
pub fn os_officer(name: &str) -> (u32, u32) {
    officers_group();
    static LOCK: Mutex<()> = Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let id = |flag: &str| run(Command::new("id").args([flag, name]));
    if !id("-u").status.success() {
        admin_tool("useradd", &["-M", "-N", "-g", OFFICERS_GROUP, "-s", "/usr/sbin/nologin", name]);
    }
    let (uid, gid) = (id("-u"), id("-g"));
    assert!(uid.status.success() && gid.status.success(), "no user {name}: {}", uid.stderr);
    (uid.stdout.trim().parse().unwrap(), gid.stdout.trim().parse().unwrap())
}

/// curl (checked once).
pub fn curl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| require_tool("curl", "apt-get install -y curl"))
}

/// The `pki` binary, built once per test process with `cargo build --bin pki`.
///
/// `PKI_TESTS_BIN=/path/to/pki` tests that binary instead (say, a release build) and skips the
/// build.
pub fn pki_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PKI_TESTS_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "PKI_TESTS_BIN={} is not a file", bin.display());
            // Commands run in the environments' directories: a relative path would not be found.
            return bin.canonicalize().unwrap_or_else(|e| panic!("PKI_TESTS_BIN={}: {e}", bin.display()));
        }
        let start = Instant::now();
        let bin = build_pki(&[]);
        if std::env::var_os("PKI_TESTS_TRACE").is_some() {
            eprintln!("[{:>7.3}s] cargo build --bin pki", start.elapsed().as_secs_f64());
        }
        bin
    })
}

fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.join("..").join("..").canonicalize().expect("workspace root")
}

/// A `pki` built with the `planted-loss` feature (its sled engine acknowledges the first revocation
/// after each start without writing it), copied to `pki-planted-loss` beside the `pki` of the
/// target directory, which is then built again as usual: the crash loop's planted loss
/// (tests/planted_loss.rs). Run it where no other test is using the target directory's `pki`.
pub fn planted_loss_pki() -> PathBuf {
    let built = build_pki(&["planted-loss"]);
    let planted = built.with_file_name("pki-planted-loss");
    std::fs::copy(&built, &planted)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), planted.display()));
    let again = build_pki(&[]);
    assert_eq!(again, built, "the usual build of pki is where the planted one was");
    planted
}

/// `cargo build --bin pki` with `features`: the executable.
fn build_pki(features: &[&str]) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let mut cmd = Command::new(&cargo);
    // Cargo sets these for the test process; inherited, they would change what build scripts see
    // (ring's reruns on CARGO_MANIFEST_DIR) and rebuild half the tree on every test run.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let out = cmd
        .args(["build", "--bin", "pki", "--message-format=json-render-diagnostics", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .args(features.iter().flat_map(|f| ["--features", f]))
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} build --bin pki: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(log) = std::env::var_os("PKI_TESTS_BUILD_LOG") {
        let _ = std::fs::write(log, &out.stderr);
    }
    assert!(
        out.status.success(),
        "`cargo build --bin pki` (features {features:?}) failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The artifact message names the executable wherever the target directory is
    // (CARGO_TARGET_DIR, build.target-dir, ...).
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "pki" {
            if let Some(exe) = msg["executable"].as_str() {
                return PathBuf::from(exe);
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let exe = target.join("debug").join("pki");
    assert!(exe.is_file(), "cargo built pki but it is not at {}", exe.display());
    exe
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
    /// Standard output, bytes.
    pub stdout_bytes: Vec<u8>,
    /// What ran, for messages.
    pub what: String,
}

impl Out {
    /// Panics unless the command succeeded.
    pub fn ok(self) -> Out {
        assert!(
            self.status.success(),
            "`{}` failed ({}):\nstdout: {}\nstderr: {}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed with exactly one line on stderr starting `error:`;
    /// returns that line.
    pub fn one_error_line(&self) -> String {
        assert!(!self.status.success(), "`{}` succeeded but should have failed:\n{}", self.what, self.stdout);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`{}` must print exactly one line on stderr, printed {}:\n{}",
            self.what,
            lines.len(),
            self.stderr
        );
        assert!(
            lines[0].starts_with("error: "),
            "`{}`: stderr line does not start `error:`: {}",
            self.what,
            lines[0]
        );
        lines[0].to_string()
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion (bounded by [`COMMAND_TIMEOUT`]), capturing its output.
pub fn run(cmd: &mut Command) -> Out {
    run_with_input(cmd, None)
}

/// Runs a command with `input` on its standard input.
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>) -> Out {
    let what = describe(cmd);
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        let bytes = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            // What it printed before it was stopped says where it was.
            let tail = |v: Vec<u8>| {
                let text = String::from_utf8_lossy(&v).into_owned();
                let mut cut = text.len().saturating_sub(4000);
                while !text.is_char_boundary(cut) {
                    cut += 1;
                }
                text[cut..].to_string()
            };
            let (stdout, stderr) = (tail(t_out.join().unwrap()), tail(t_err.join().unwrap()));
            panic!(
                "`{what}` did not finish within {COMMAND_TIMEOUT:?}; its output so far:\n{stdout}\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if std::env::var_os("PKI_TESTS_TRACE").is_some() {
        eprintln!("[{:>7.3}s] {what}", start.elapsed().as_secs_f64());
    }
    let stdout_bytes = t_out.join().unwrap();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    Out { status, stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(), stderr, stdout_bytes, what }
}

/// SHA-256 of `bytes` in hex, by `openssl dgst`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let out = run_with_input(Command::new(openssl_bin()).args(["dgst", "-sha256", "-r"]), Some(bytes)).ok();
    out.stdout.split_whitespace().next().unwrap_or_default().to_string()
}

/// A self-signed P-256 certificate for `subject`, valid 2 days, with its key (`openssl req
/// -x509`); `extra` adds arguments (say `-addext subjectAltName=...`).
pub fn self_signed_p256(key: &Path, cert: &Path, subject: &str, extra: &[&str]) {
    let (key, cert) = (key.display().to_string(), cert.display().to_string());
    let mut args = vec!["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    args.extend(["-days", "2", "-subj", subject]);
    args.extend_from_slice(extra);
    args.extend(["-keyout", &key, "-out", &cert]);
    openssl(args);
}

/// `openssl ARGS`, which must succeed.
pub fn openssl<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(openssl_bin()).args(args)).ok()
}

/// `openssl ARGS`, whatever its outcome.
pub fn openssl_try<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(openssl_bin()).args(args))
}

/// GET with curl (a real HTTP client); the body. Fails unless the status is 2xx.
pub fn curl_get(url: &str) -> Vec<u8> {
    let out = run(Command::new(curl_bin()).args(["-sS", "--fail", "--max-time", "20", url])).ok();
    out.stdout_bytes
}

/// GET with curl; (status, content type, body) whatever the status.
pub fn curl_get_status(url: &str) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let out = run(Command::new(curl_bin())
        .args(["-sS", "--max-time", "20", "-w", "%{http_code} %{content_type}", "-o"])
        .arg(&body)
        .arg(url))
    .ok();
    let (code, ctype) = out.stdout.split_once(' ').unwrap_or((out.stdout.as_str(), ""));
    (code.parse().expect("HTTP status"), ctype.to_string(), std::fs::read(&body).unwrap_or_default())
}

/// POST `body` (a file) with curl and a content type; (status, content type, body) whatever the
/// status.
pub fn curl_post(url: &str, content_type: &str, body: &Path) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("body");
    let out = run(Command::new(curl_bin())
        .args(["-sS", "--max-time", "20", "-w", "%{http_code} %{content_type}", "-H"])
        .arg(format!("Content-Type: {content_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg("-o")
        .arg(&out_file)
        .arg(url))
    .ok();
    let (code, ctype) = out.stdout.split_once(' ').unwrap_or((out.stdout.as_str(), ""));
    (code.parse().expect("HTTP status"), ctype.to_string(), std::fs::read(&out_file).unwrap_or_default())
}

/// GET over loopback through [`http_client`]; (status, body), `None` when nothing answers. For
/// health polling.
pub fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let r = http_client::send(port, "GET", path, &[], None, Duration::from_secs(5)).ok()?;
    Some((r.status, r.body))
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A `pki` command with none of the caller's `PKI_*`/`RUST_LOG` settings.
pub fn pki_command() -> Command {
    let mut c = Command::new(pki_bin());
    for v in PKI_ENV {
        c.env_remove(v);
    }
    c
}

/// The `[validation]` table of every test configuration that has none of its own: the domains of
/// the tests' addresses count as the organisation's own.
pub const TEST_ENTERPRISE_DOMAINS: &str =
    "[validation]\nenterprise_domains = [\"example.com\", \"example.org\", \"x.example\", \"loadtest.example\", \"bank.example\"]\n";

/// One test's world: a private temporary directory holding `pki.toml`, the data directory
/// (`data/`, created by `pki`) and the test's own files, and a loopback port of its own.
pub struct Env {
    dir: tempfile::TempDir,
    /// The SoftHSM2 token holding the CA keys, on the PKCS#11 backend.
    pub token: Option<SoftToken>,
    /// The data directory (`--data`).
    pub data: PathBuf,
    /// The configuration file (`--config`).
    pub config: PathBuf,
    /// The port `pki serve` listens on; `public_base_url` points at it.
    pub port: u16,
    /// The PostgreSQL database holding the CA, on that backend ([`storage_backend`]).
    pub database_url: Option<String>,
    /// Whether the database goes with this environment (not with another node's).
    owns_database: bool,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let (Some(url), true) = (&self.database_url, self.owns_database) {
            drop_test_database(url);
        }
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

impl Env {
    /// A fresh environment with the default settings but a real `public_base_url`.
    pub fn new() -> Env {
        Env::with_config("")
    }

    /// A fresh environment; `extra` is appended to `pki.toml` (top-level tables only, e.g.
    /// `[hsm]`).
    pub fn with_config(extra: &str) -> Env {
        Env::with_backend(hsm_backend(), extra)
    }

    /// A fresh environment on the given key custody backend (see [`hsm_backend`]); on
    /// [`HsmBackend::Pkcs11`] a SoftHSM2 token of its own in the temporary directory.
    pub fn with_backend(backend: HsmBackend, extra: &str) -> Env {
        let database_url = (storage_backend() == StorageBackend::Postgres).then(create_test_database);
        Env::build(backend, database_url, true, extra)
    }

    /// A fresh environment whose CA is in a new database of its own on the PostgreSQL test server,
    /// whatever `PKI_TESTS_BACKEND` says: for what only PostgreSQL offers (many nodes).
    pub fn on_postgres(extra: &str) -> Env {
        Env::build(HsmBackend::Soft, Some(create_test_database()), true, extra)
    }

    /// A fresh environment on the embedded database and the soft key store, whatever
    /// `PKI_TESTS_BACKEND` says: for what moves between the engines.
    pub fn on_sled(extra: &str) -> Env {
        Env::build(HsmBackend::Soft, None, true, extra)
    }

    /// A fresh environment whose CA is in the PostgreSQL database at `url` (which outlives it).
    pub fn on_database(url: &str, extra: &str) -> Env {
        Env::build(HsmBackend::Soft, Some(url.to_string()), false, extra)
    }

    /// Another node of this environment's installation: a temporary directory, data directory
    /// and port of its own, the same PostgreSQL database and master passphrase. Panics on the
    /// embedded backend, which one process holds.
    pub fn node(&self, extra: &str) -> Env {
        let url = self.database_url.clone().expect("another node needs the PostgreSQL backend");
        Env::build(HsmBackend::Soft, Some(url), false, extra)
    }

    fn build(backend: HsmBackend, database_url: Option<String>, owns_database: bool, extra: &str) -> Env {
        let dir = tempfile::Builder::new().prefix("pki-e2e-").tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("pki.toml");
        let token = match backend {
            HsmBackend::Soft => None,
            HsmBackend::Pkcs11 => Some(SoftToken::create(&dir.path().join("softhsm"), "pki")),
        };
        let hsm = token.as_ref().map(SoftToken::hsm_table).unwrap_or_default();
        officers_group();
        let database =
            database_url.as_ref().map(|u| format!("[database]\nurl = {u:?}\n")).unwrap_or_default();
        // The addresses of the tests are in domains the test organisation controls (S/MIME BR
        // 3.2.2.1), unless a test configures mailbox validation itself.
        let validation = if extra.contains("[validation]") { "" } else { TEST_ENTERPRISE_DOMAINS };
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_group = \"{OFFICERS_GROUP}\"\n\n[ca]\npublic_base_url = \"http://127.0.0.1:{port}\"\n\n{database}\n{hsm}\n{validation}\n{extra}"
        );
        std::fs::write(&config, text).unwrap();
        Env { data: dir.path().join("data"), config, port, dir, token, database_url, owns_database }
    }

    /// Appends `text` to `pki.toml` (top-level tables, e.g. `[hsm]`). On the PKCS#11 backend the
    /// lines of an `[hsm]` table join the token's `[hsm]` table.
    pub fn append_config(&self, text: &str) {
        if let (Some(_), Some(body)) = (&self.token, text.strip_prefix("[hsm]\n")) {
            let current = std::fs::read_to_string(&self.config).unwrap();
            let merged = current.replacen("[hsm]\n", &format!("[hsm]\n{body}\n"), 1);
            std::fs::write(&self.config, merged).unwrap();
            return;
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.config).unwrap();
        writeln!(f, "\n{text}").unwrap();
    }

    /// The temporary directory (outside the data directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `public_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A path in the temporary directory, outside the data directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file in the temporary directory; its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// `pki --config C --data D ARGS`, run in the temporary directory.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = pki_command();
        c.arg("--config").arg(&self.config).arg("--data").arg(&self.data).args(args).current_dir(self.dir());
        // The soft store's passphrase on PostgreSQL, where its records are shared; given with a
        // token too, for `pki hsm import`, which opens the soft store to move it.
        if self.database_url.is_some() {
            c.env("PKI_HSM_PASSPHRASE", PG_MASTER_PASSPHRASE);
        }
        if let Some(t) = &self.token {
            c.env("SOFTHSM2_CONF", &t.conf);
        }
        c
    }

    /// Runs `pki ARGS`, whatever its outcome.
    pub fn pki_try<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&mut self.command(args))
    }

    /// Runs `pki ARGS`, which must succeed.
    pub fn pki<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.pki_try(args).ok()
    }

    /// Runs `pki ARGS`, which must fail with exactly one `error:` line on stderr naming every
    /// one of `names`; returns the line.
    pub fn pki_fails<I, S>(&self, args: I, names: &[&str]) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.pki_try(args);
        let line = out.one_error_line();
        for n in names {
            assert!(line.contains(n), "`{}`: the error does not name {n:?}: {line}", out.what);
        }
        line
    }

    /// Runs `pki ARGS` as the operating-system user `user` — created on first use in the group
    /// [`OFFICERS_GROUP`], which may use the admin socket (`[server] admin_group`) — whatever its
    /// outcome. The command's audit actor is then `uid:N(user)`; `root` runs as this process.
    /// Reaches a running `pki serve` only: another user cannot open the data directory itself.
    pub fn pki_as_try<I, S>(&self, user: &str, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        if user != "root" {
            use std::os::unix::fs::PermissionsExt;
            use std::os::unix::process::CommandExt;
            let (uid, gid) = os_officer(user);
            // The officer reads the configuration and writes what it is given (PKCS#12 files)
            // in this test's directory.
            std::fs::set_permissions(self.dir(), std::fs::Permissions::from_mode(0o1777)).unwrap();
            std::fs::set_permissions(&self.config, std::fs::Permissions::from_mode(0o644)).unwrap();
            cmd.uid(uid).gid(gid);
        }
        run(&mut cmd)
    }

    /// Runs `pki ARGS` as `user`, which must succeed.
    pub fn pki_as<I, S>(&self, user: &str, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.pki_as_try(user, args).ok()
    }

    /// Whether a `pki serve` answers on this environment's admin socket.
    pub fn serving(&self) -> bool {
        std::os::unix::net::UnixStream::connect(self.data.join("admin.sock")).is_ok()
    }

    /// Recovers the escrowed key of `serial` as two officers must: the operating-system users
    /// `olivia` requests it (`pki escrow request`), `oscar` approves (`pki escrow approve`), and
    /// `olivia` downloads it to `out` with the PKCS#12 password in `password_file` (`pki escrow
    /// recover`), all through the admin socket of `pki serve` (started for the while when none
    /// runs). The output of the download, which must succeed.
    pub fn escrow_recover(&self, serial: &str, out: &Path, password_file: &Path) -> Out {
        let server = (!self.serving()).then(|| self.serve());
        let id = self.pki_as("olivia", ["escrow", "request", "--serial", serial]).stdout.trim().to_string();
        self.pki_as("oscar", ["escrow", "approve", &id]);
        // `out` is written by olivia: in this test's directory (or relative to it).
        let done = self.pki_as(
            "olivia",
            [
                OsStr::new("escrow"),
                OsStr::new("recover"),
                OsStr::new(&id),
                OsStr::new("--out"),
                out.as_os_str(),
                OsStr::new("--p12-password-file"),
                password_file.as_os_str(),
            ],
        );
        if let Some(s) = server {
            s.stop();
        }
        done
    }

    /// `pki init`, which must report that it created the CA.
    pub fn init(&self) -> Out {
        let out = self.pki(["init"]);
        assert!(out.stdout.starts_with("CA initialised\n"), "unexpected init output: {}", out.stdout);
        out
    }

    /// Starts `pki serve` on this environment's port and waits for `/healthz`.
    pub fn serve(&self) -> Server {
        let mut cmd = self.command(["serve", "--listen", &format!("127.0.0.1:{}", self.port)]);
        Server::start(&mut cmd, self.port, self.dir())
    }

    /// `pki ca-cert root` and `pki ca-cert issuing` written as `root.pem`, `issuing.pem` and
    /// `chain.pem` (both); their paths.
    pub fn ca_files(&self) -> CaFiles {
        let root = self.pki(["ca-cert", "root"]).stdout;
        let issuing = self.pki(["ca-cert", "issuing"]).stdout;
        CaFiles {
            root: self.write("root.pem", &root),
            issuing: self.write("issuing.pem", &issuing),
            chain: self.write("chain.pem", format!("{root}{issuing}")),
            issuing_der: pem_der(&issuing),
        }
    }

    /// The serials `pki list` shows, in its order.
    pub fn list_serials(&self) -> Vec<String> {
        parse_list(&self.pki(["list"]).stdout).into_iter().map(|r| r.serial).collect()
    }
}

/// The CA certificates as files.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The root, PEM.
    pub root: PathBuf,
    /// The issuing CA, PEM.
    pub issuing: PathBuf,
    /// Root then issuing CA, PEM.
    pub chain: PathBuf,
    /// The issuing CA, DER.
    pub issuing_der: Vec<u8>,
}

/// `openssl ocsp` for `cert` (issued by `ca`'s issuing CA) against the responder at
/// `http://127.0.0.1:port/ocsp`, the answer verified against the root: its stdout and stderr
/// (`...: good`, `...: revoked`, `Responder Error: trylater (3)`).
pub fn openssl_ocsp(ca: &CaFiles, cert: &Path, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/ocsp");
    let args = [OsStr::new("ocsp"), OsStr::new("-issuer"), ca.issuing.as_os_str(), OsStr::new("-cert")];
    let out = openssl_try(args.into_iter().chain([
        cert.as_os_str(),
        OsStr::new("-url"),
        OsStr::new(&url),
        OsStr::new("-CAfile"),
        ca.root.as_os_str(),
    ]));
    format!("{}{}", out.stdout, out.stderr)
}

/// One row of `pki list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRow {
    /// Serial (upper-case hex).
    pub serial: String,
    /// Kind.
    pub kind: String,
    /// Status.
    pub status: String,
    /// E-mail or `-`.
    pub email: String,
}

/// Parses the table `pki list` prints (header first).
pub fn parse_list(stdout: &str) -> Vec<ListRow> {
    let mut lines = stdout.lines();
    let header = lines.next().expect("pki list prints a header");
    assert!(header.starts_with("SERIAL"), "unexpected pki list header: {header}");
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "unexpected pki list row: {l}");
            ListRow {
                serial: f[0].to_string(),
                kind: f[1].to_string(),
                status: f[2].to_string(),
                email: f[4].to_string(),
            }
        })
        .collect()
}

static STARTS: AtomicUsize = AtomicUsize::new(0);

/// A running `pki serve`. Dropping it kills the process.
pub struct Server {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

impl Server {
    /// Starts `cmd` (a `pki ... serve --listen 127.0.0.1:PORT` command) with its output going to
    /// log files in `log_dir`, and waits until `/healthz` answers 200 (at most
    /// [`HEALTH_TIMEOUT`]; then panics with the server's stderr).
    pub fn start(cmd: &mut Command, port: u16, log_dir: &Path) -> Server {
        let n = STARTS.fetch_add(1, Ordering::SeqCst);
        let stdout_log = log_dir.join(format!("serve-{n}.stdout"));
        let stderr_log = log_dir.join(format!("serve-{n}.stderr"));
        let what = describe(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_log).unwrap())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let mut server = Server { child: Some(child), port, stdout_log, stderr_log };
        let start = Instant::now();
        loop {
            if let Some((200, body)) = http_get(port, "/healthz") {
                let body = String::from_utf8_lossy(&body);
                // `degraded` with 200: serving, with a CA-side certificate near its end.
                assert!(
                    body.contains(r#""status":"ok""#) || body.contains(r#""status":"degraded""#),
                    "/healthz answered 200 with {body}"
                );
                if std::env::var_os("PKI_TESTS_TRACE").is_some() {
                    eprintln!("[{:>7.3}s] {what} (healthy)", start.elapsed().as_secs_f64());
                }
                return server;
            }
            if let Some(st) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("`{what}` exited ({st}) before answering /healthz:\n{}", server.stderr());
            }
            if start.elapsed() > HEALTH_TIMEOUT {
                panic!(
                    "`{what}` did not answer /healthz within {HEALTH_TIMEOUT:?}; its stderr:\n{}",
                    server.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_log).unwrap_or_default()
    }

    /// What the server printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGKILL, and reap the process.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL the server"); // Child::kill sends SIGKILL on Unix
            let st = c.wait().unwrap();
            assert!(!st.success(), "a SIGKILLed server cannot exit successfully");
        }
    }

    /// SIGTERM (actix stops gracefully and removes the admin socket); SIGKILL if it has not
    /// stopped after 15 s.
    pub fn stop(mut self) {
        let Some(mut c) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let start = Instant::now();
        while c.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The DER of the first PEM block of `text`.
pub fn pem_der(text: &str) -> Vec<u8> {
    pem::parse(text.as_bytes()).unwrap_or_else(|e| panic!("not PEM ({e}): {text}")).into_contents()
}

/// A certificate's serial as `pki` prints it: upper-case hex of the magnitude, even length.
pub fn cert_serial(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).expect("certificate DER");
    serial_text(c.raw_serial())
}

/// Upper-case hex of an INTEGER's content octets without leading zero bytes.
pub fn serial_text(content: &[u8]) -> String {
    let start = content.iter().take_while(|b| **b == 0).count();
    hex::encode_upper(&content[start..])
}

/// The key types the tests make with `openssl genpkey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA with this many bits.
    Rsa(u32),
    /// EC P-256.
    P256,
    /// EC P-384.
    P384,
    /// EC P-521.
    P521,
    /// Ed25519.
    Ed25519,
    /// Ed448.
    Ed448,
    /// DSA 2048 (parameters generated first).
    Dsa,
}

/// Generates a private key with `openssl genpkey` into `dir/name` (PEM, unencrypted); its path.
pub fn gen_key(dir: &Path, name: &str, spec: KeySpec) -> PathBuf {
    let out = dir.join(name);
    let mut args: Vec<String> = vec!["genpkey".into()];
    match spec {
        KeySpec::Rsa(bits) => args.extend([
            "-algorithm".into(),
            "RSA".into(),
            "-pkeyopt".into(),
            format!("rsa_keygen_bits:{bits}"),
        ]),
        KeySpec::P256 | KeySpec::P384 | KeySpec::P521 => {
            let curve = match spec {
                KeySpec::P256 => "P-256",
                KeySpec::P384 => "P-384",
                _ => "P-521",
            };
            args.extend([
                "-algorithm".into(),
                "EC".into(),
                "-pkeyopt".into(),
                format!("ec_paramgen_curve:{curve}"),
            ])
        }
        KeySpec::Ed25519 => args.extend(["-algorithm".into(), "ED25519".into()]),
        KeySpec::Ed448 => args.extend(["-algorithm".into(), "ED448".into()]),
        KeySpec::Dsa => {
            let params = dir.join(format!("{name}.params"));
            openssl([
                OsStr::new("genpkey"),
                OsStr::new("-genparam"),
                OsStr::new("-algorithm"),
                OsStr::new("DSA"),
                OsStr::new("-pkeyopt"),
                OsStr::new("dsa_paramgen_bits:2048"),
                OsStr::new("-out"),
                params.as_os_str(),
            ]);
            args.extend(["-paramfile".into(), params.display().to_string()]);
        }
    }
    args.extend(["-out".into(), out.display().to_string()]);
    openssl(&args);
    out
}

/// `openssl req -new` with `key`, `subject` and extra arguments (e.g. `-addext`, `-sha1`);
/// writes PEM to `out` and returns its path.
pub fn make_csr(key: &Path, out: &Path, subject: &str, extra: &[&str]) -> PathBuf {
    let mut args: Vec<&OsStr> = vec![
        "req".as_ref(),
        "-new".as_ref(),
        "-key".as_ref(),
        key.as_os_str(),
        "-subj".as_ref(),
        subject.as_ref(),
    ];
    args.extend(extra.iter().map(|s| OsStr::new(*s)));
    args.extend(["-out".as_ref(), out.as_os_str()]);
    openssl(&args);
    out.to_path_buf()
}

/// The DER SubjectPublicKeyInfo of a private key file (PEM), per OpenSSL.
pub fn spki_of_key(key: &Path) -> Vec<u8> {
    openssl([
        OsStr::new("pkey"),
        OsStr::new("-in"),
        key.as_os_str(),
        OsStr::new("-pubout"),
        OsStr::new("-outform"),
        OsStr::new("DER"),
    ])
    .stdout_bytes
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The subscriber profiles, as the S/MIME Baseline Requirements (strict) and RFC 8813 define
/// their key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafProfile {
    /// Signing: digitalSignature + nonRepudiation.
    Signing,
    /// RSA encryption: keyEncipherment only.
    EncryptionRsa,
    /// EC encryption: keyAgreement only (never keyEncipherment).
    EncryptionEc,
}

/// The 9 keyUsage bits in RFC 5280 order.
pub type KuBits = [bool; 9];

impl LeafProfile {
    /// The keyUsage bits the profile requires: digitalSignature, nonRepudiation,
    /// keyEncipherment, dataEncipherment, keyAgreement, keyCertSign, cRLSign, encipherOnly,
    /// decipherOnly.
    pub fn key_usage(self) -> KuBits {
        let mut bits = [false; 9];
        match self {
            LeafProfile::Signing => {
                bits[0] = true;
                bits[1] = true;
            }
            LeafProfile::EncryptionRsa => bits[2] = true,
            LeafProfile::EncryptionEc => bits[4] = true,
        }
        bits
    }
}

/// OIDs of the extensions a subscriber certificate carries, and nothing else.
const LEAF_EXTENSIONS: [&str; 9] = [
    "1.3.6.1.5.5.7.1.1", // authorityInfoAccess
    "2.5.29.14",         // subjectKeyIdentifier
    "2.5.29.15",         // keyUsage
    "2.5.29.17",         // subjectAltName
    "2.5.29.19",         // basicConstraints
    "2.5.29.31",         // cRLDistributionPoints
    "2.5.29.32",         // certificatePolicies
    "2.5.29.35",         // authorityKeyIdentifier
    "2.5.29.37",         // extKeyUsage
];

/// The S/MIME BR mailbox-validated strict policy.
pub const POLICY_MAILBOX_STRICT: &str = "2.23.140.1.5.1.3";

/// Checks a subscriber certificate from its DER against the profile: version, serial number
/// size and sign, signature by the issuing CA, subject, certified key, validity, and every
/// extension with its criticality. Panics naming the first difference.
pub fn check_leaf(
    der: &[u8],
    email: &str,
    profile: LeafProfile,
    base_url: &str,
    issuing_der: &[u8],
    expected_spki: &[u8],
) {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    use x509_parser::prelude::*;

    let (rest, cert) = X509Certificate::from_der(der).expect("certificate DER");
    assert!(rest.is_empty(), "trailing bytes after the certificate");
    let (_, issuing) = X509Certificate::from_der(issuing_der).expect("issuing CA DER");
    assert_eq!(cert.version(), X509Version::V3, "not a v3 certificate");

    // Serial: a positive INTEGER of at most 20 octets (RFC 5280 4.1.2.2) with at least 64 bits
    // from a CSPRNG (S/MIME BR 7.1); DER-minimal.
    let raw = cert.raw_serial();
    assert!(!raw.is_empty() && raw.len() <= 20, "serial has {} content octets", raw.len());
    assert_eq!(raw[0] & 0x80, 0, "serial is negative");
    if raw.len() > 1 {
        assert!(raw[0] != 0 || raw[1] & 0x80 != 0, "serial is not minimally encoded");
    }
    let mag = &raw[raw.iter().take_while(|b| **b == 0).count()..];
    assert!(!mag.is_empty(), "serial is zero");
    let bits = mag.len() * 8 - mag[0].leading_zeros() as usize;
    assert!(bits >= 64, "serial has only {bits} bits");
    assert!(mag.len() <= 20 && mag.len() >= 9, "serial magnitude has {} octets", mag.len());

    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.10045.4.3.2",
        "the P-256 issuing CA signs with ecdsa-with-SHA256"
    );
    cert.verify_signature(Some(issuing.public_key())).expect("signature by the issuing CA verifies");
    assert_eq!(cert.issuer().as_raw(), issuing.subject().as_raw(), "issuer is the issuing CA's subject");

    let subject: Vec<(String, String)> = cert
        .subject()
        .iter_attributes()
        .map(|a| (a.attr_type().to_id_string(), a.as_str().expect("printable subject").to_string()))
        .collect();
    assert_eq!(
        subject,
        vec![
            ("2.5.4.3".to_string(), email.to_string()),
            ("1.2.840.113549.1.9.1".to_string(), email.to_string())
        ],
        "subject must be CN=<mailbox>, emailAddress=<mailbox>"
    );
    assert_eq!(cert.public_key().raw, expected_spki, "the certified key is not the requested one");

    let v = cert.validity();
    let secs = v.not_after.timestamp() - v.not_before.timestamp();
    assert_eq!(secs, 365 * 86_400, "leaf validity is the configured 365 days");
    assert!(secs <= 825 * 86_400);

    let mut oids: Vec<String> = cert.extensions().iter().map(|e| e.oid.to_id_string()).collect();
    oids.sort();
    let mut want: Vec<String> = LEAF_EXTENSIONS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(oids, want, "the extensions (each exactly once)");

    let ku = cert.key_usage().expect("keyUsage parses").expect("keyUsage present");
    assert!(ku.critical, "keyUsage must be critical");
    let k = ku.value;
    let got = [
        k.digital_signature(),
        k.non_repudiation(),
        k.key_encipherment(),
        k.data_encipherment(),
        k.key_agreement(),
        k.key_cert_sign(),
        k.crl_sign(),
        k.encipher_only(),
        k.decipher_only(),
    ];
    assert_eq!(got, profile.key_usage(), "keyUsage of a {profile:?} certificate");

    let eku = cert.extended_key_usage().expect("EKU parses").expect("EKU present");
    assert!(!eku.critical, "extKeyUsage is not critical");
    let e = eku.value;
    assert!(e.email_protection, "EKU emailProtection");
    assert!(
        !(e.any || e.server_auth || e.client_auth || e.code_signing || e.time_stamping || e.ocsp_signing)
            && e.other.is_empty(),
        "EKU must be emailProtection only: {e:?}"
    );

    let bc = cert.basic_constraints().expect("BC parses").expect("BC present");
    assert!(!bc.value.ca, "a subscriber certificate is not a CA");
    assert_eq!(bc.value.path_len_constraint, None);

    let san = cert.subject_alternative_name().expect("SAN parses").expect("SAN present");
    assert!(!san.critical, "SAN is not critical when the subject is not empty");
    assert_eq!(san.value.general_names, vec![GeneralName::RFC822Name(email)], "SAN is the mailbox only");

    let mut policies = None;
    let mut crldp = None;
    let mut aia = None;
    let mut ski = None;
    let mut aki = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::CertificatePolicies(p) => {
                assert!(!ext.critical, "certificatePolicies is not critical");
                policies = Some(p.iter().map(|i| i.policy_id.to_id_string()).collect::<Vec<_>>());
            }
            ParsedExtension::CRLDistributionPoints(d) => {
                assert!(!ext.critical, "cRLDistributionPoints is not critical");
                let mut uris = Vec::new();
                for p in &d.points {
                    match &p.distribution_point {
                        Some(DistributionPointName::FullName(names)) => {
                            for n in names {
                                match n {
                                    GeneralName::URI(u) => uris.push(u.to_string()),
                                    other => panic!("CRL distribution point is not a URI: {other:?}"),
                                }
                            }
                        }
                        other => panic!("CRL distribution point without a full name: {other:?}"),
                    }
                }
                crldp = Some(uris);
            }
            ParsedExtension::AuthorityInfoAccess(a) => {
                assert!(!ext.critical, "authorityInfoAccess is not critical");
                aia = Some(
                    a.accessdescs
                        .iter()
                        .map(|d| match &d.access_location {
                            GeneralName::URI(u) => (d.access_method.to_id_string(), u.to_string()),
                            other => panic!("AIA location is not a URI: {other:?}"),
                        })
                        .collect::<Vec<_>>(),
                );
            }
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = Some(a.key_identifier.as_ref().expect("AKI keyIdentifier").0.to_vec())
            }
            _ => {}
        }
    }
    assert_eq!(policies.expect("policies"), vec![POLICY_MAILBOX_STRICT.to_string()], "certificatePolicies");
    assert_eq!(crldp.expect("CRL DP"), vec![format!("{base_url}/crl/issuing.crl")], "CRL distribution point");
    let mut aia = aia.expect("AIA");
    aia.sort();
    assert_eq!(
        aia,
        vec![
            ("1.3.6.1.5.5.7.48.1".to_string(), format!("{base_url}/ocsp")),
            ("1.3.6.1.5.5.7.48.2".to_string(), format!("{base_url}/ca/issuing.crt")),
        ],
        "AIA: OCSP and caIssuers"
    );
    assert!(!ski.expect("SKI").is_empty(), "subjectKeyIdentifier is empty");
    let issuing_ski = issuing
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("issuing CA SKI");
    assert_eq!(aki.expect("AKI"), issuing_ski, "authorityKeyIdentifier is the issuing CA's key id");
}

/// The revoked entries of a CRL as `openssl crl -text` prints them: (serial as `pki` prints it,
/// the reason's text if a reasonCode is present).
pub fn crl_entries_openssl(crl: &Path, inform: &str) -> Vec<(String, Option<String>)> {
    let text = openssl([
        OsStr::new("crl"),
        OsStr::new("-inform"),
        OsStr::new(inform),
        OsStr::new("-in"),
        crl.as_os_str(),
        OsStr::new("-text"),
        OsStr::new("-noout"),
    ])
    .stdout;
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(l) = lines.next() {
        if let Some(s) = l.strip_prefix("Serial Number:") {
            let bytes = hex::decode(s.trim().replace(':', "")).expect("serial hex");
            out.push((serial_text(&bytes), None));
        } else if l.starts_with("X509v3 CRL Reason Code") {
            let reason = lines.next().expect("reason line").to_string();
            out.last_mut().expect("reason after a serial").1 = Some(reason);
        }
    }
    out
}

/// The revoked entries of a DER CRL as x509-parser decodes them: (serial, reasonCode), after
/// checking that the issuing CA's key signed it. Also returns the cRLNumber.
pub fn crl_entries_der(crl_der: &[u8], issuer_der: &[u8]) -> (Vec<(String, Option<u8>)>, u64) {
    let (rest, crl) = x509_parser::parse_x509_crl(crl_der).expect("CRL DER");
    assert!(rest.is_empty(), "trailing bytes after the CRL");
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer_der).expect("issuer DER");
    crl.verify_signature(issuer.public_key()).expect("CRL signature by the issuer");
    assert_eq!(crl.issuer().as_raw(), issuer.subject().as_raw(), "CRL issuer name");
    let number = crl.crl_number().expect("cRLNumber").to_u64_digits();
    let number = number.first().copied().unwrap_or(0);
    let entries = crl
        .iter_revoked_certificates()
        .map(|r| (serial_text(r.raw_serial()), r.reason_code().map(|(_, c)| c.0)))
        .collect();
    (entries, number)
}

/// certbot's ACME library, pinned by scripts/test.sh.
pub fn acme_client(args: &[&str]) -> serde_json::Value {
    let py = require_tool("python3", "apt-get install -y python3");
    let check =
        run(Command::new(&py).args(["-c", "import importlib.metadata as m; print(m.version('acme'))"]));
    assert!(
        check.status.success() && check.stdout.trim() == "5.9.0",
        "the ACME tests need certbot's acme library 5.9.0: install it with `python3 -m pip install acme==5.9.0` (found {:?})\n{}",
        check.stdout.trim(),
        check.stderr
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/acme/client.py");
    let out = run(Command::new(&py).arg(script).args(args));
    assert!(out.status.success(), "client.py {}: {}\n{}", args.join(" "), out.stdout, out.stderr);
    let last = out.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("client.py printed {last:?}: {e}\n{}", out.stderr))
}

/// `pki acme eab create --name NAME`: (key id, HMAC key).
pub fn acme_eab(env: &Env, name: &str) -> (String, String) {
    let out = env.pki(["acme", "eab", "create", "--name", name]);
    let field = |label: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label} in {}", out.stdout))
    };
    (field("key id:"), field("hmac key:"))
}

/// A new key `NAME.key` and its CSR `NAME.csr` for `email` (subject CN and an rfc822Name), with a
/// critical keyUsage `key_usage`; the CSR's path.
pub fn mailbox_csr(env: &Env, name: &str, spec: KeySpec, email: &str, key_usage: &str) -> String {
    let key = gen_key(env.dir(), name, spec);
    let san = format!("subjectAltName=email:{email}");
    let ku = format!("keyUsage=critical,{key_usage}");
    make_csr(
        &key,
        &env.path(&format!("{name}.csr")),
        &format!("/CN={email}"),
        &["-addext", &san, "-addext", &ku],
    )
    .display()
    .to_string()
}

/// A timestamp of a new document asked of the TSA at `http://127.0.0.1:port/tsa` by OpenSSL's
/// query (with the TSA certificate), and `openssl ts -verify` of the reply against `root`: its
/// output (`Verification: OK`), or the HTTP status when the TSA did not answer 200.
pub fn openssl_ts_verify(env: &Env, port: u16, root: &Path) -> String {
    let doc = env.write("doc.txt", "statement of account, December 2026\n");
    let q = env.path("q.tsq");
    openssl([
        "ts",
        "-query",
        "-data",
        &doc.display().to_string(),
        "-sha256",
        "-cert",
        "-out",
        &q.display().to_string(),
    ]);
    let (code, _, body) =
        curl_post(&format!("http://127.0.0.1:{port}/tsa"), "application/timestamp-query", &q);
    if code != 200 {
        return format!("HTTP {code}");
    }
    let r = env.write("r.tsr", body);
    let out = openssl_try([
        "ts",
        "-verify",
        "-in",
        &r.display().to_string(),
        "-data",
        &doc.display().to_string(),
        "-CAfile",
        &root.display().to_string(),
    ]);
    format!("{}{}", out.stdout, out.stderr)
}

/// A `multipart/form-data` POST by curl (`-F` each of `fields`): the status and the body.
pub fn curl_post_form(url: &str, fields: &[String]) -> (u16, String) {
    let mut c = Command::new(curl_bin());
    c.args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"]);
    for f in fields {
        c.arg("-F").arg(f);
    }
    let out = run(c.arg(url)).ok();
    let (body, code) = out.stdout.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}
