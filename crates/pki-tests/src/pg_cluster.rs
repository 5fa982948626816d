//! A PostgreSQL cluster of one test's own, for what must not touch the shared test server:
//! stopping the database under a running `pki serve`. initdb in a temporary directory, loopback
//! and a Unix socket in that directory only, password authentication over TCP; as root it runs
//! as the user `postgres` (Debian's package creates it). Stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{free_port, run};

/// The cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
}

/// The server binaries of Debian's `postgresql` package; fails naming the install command.
fn server_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.path().join("bin")))
                .filter(|b| b.join("pg_ctl").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server in /usr/lib/postgresql/*/bin: install it with `apt-get install -y postgresql`")
    })
}

fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| run(Command::new("id").arg("-u")).stdout.trim() == "0")
}

impl Cluster {
    /// initdb and start; the server answers when this returns.
    pub fn start() -> Cluster {
        let bin = server_bin();
        let dir = tempfile::Builder::new().prefix("pki-pg-").tempdir().expect("temp dir");
        let password = format!("pw{}", std::process::id());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("pwfile");
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(dir.path())).ok();
        }
        let c = Cluster { bin, port: free_port(), password, dir };
        let out = run(c
            .as_owner(&c.bin.join("initdb"))
            .arg("-D")
            .arg(c.data())
            .args([
                "-U",
                "pki",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .arg(format!("--pwfile={}", pwfile.display())));
        assert!(out.status.success(), "initdb: {}{}", out.stdout, out.stderr);
        c.restart();
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_owner(&self, program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// The URL of the database `name` (`postgres` exists from the start).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://pki:{}@127.0.0.1:{}/{name}", self.password, self.port)
    }

    /// Starts the stopped server, waiting until it accepts connections.
    pub fn restart(&self) {
        let out = run(self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-s", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=on",
                self.port,
                self.dir.path().display()
            ))
            .arg("start"));
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        assert!(out.status.success(), "pg_ctl start: {}{}{log}", out.stdout, out.stderr);
    }

    /// Stops the server (`-m fast`: clients are disconnected), waiting until it is down.
    pub fn stop(&self) {
        let out = run(self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-s", "stop"]));
        assert!(out.status.success(), "pg_ctl stop: {}{}", out.stdout, out.stderr);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-s", "stop"])
            .output();
    }
}
