//! `pki.toml`: server, key-store and CA settings. Every field has a default.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ca_core::CaConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// Key store.
    pub hsm: HsmSettings,
    /// The CA.
    pub ca: CaConfig,
    /// The admin web console.
    pub console: admin_web::ConsoleConfig,
    /// The database.
    pub database: DatabaseSettings,
    /// The directory over LDAP.
    pub ldap: ldap_directory::LdapConfig,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
    /// Logging.
    pub log: LogSettings,
    /// Escrow recovery: how many officers, how long a request stays open.
    pub escrow: ca_core::EscrowConfig,
    /// The audit log's checkpoints.
    pub audit: AuditSettings,
    /// Mailbox validation before issuance: enterprise domains, reuse period.
    pub validation: ca_core::ValidationConfig,
    /// The ACME server at `/acme/`.
    pub acme: acme::AcmeConfig,
    /// Sealed mail and the SMTP relay (`[mail.relay]`) every outgoing mail leaves through.
    pub mail: crate::mail_settings::MailSettings,
}

/// `[metrics]`: where `GET /metrics` is served.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// A listener of its own for `/metrics` (a loopback or management address). Without it,
    /// `/metrics` is served on the main listener to loopback clients only.
    pub listen: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (the default) or `json`: one JSON object per line, for a log collector.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[audit]`: signed, timestamped checkpoints of the audit log's head.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Where `pki serve` writes a checkpoint at start and then every `checkpoint_interval_secs`.
    /// Must be outside the data directory (someone who can rewrite the database should not be
    /// able to rewrite its checkpoints too): ideally another disk, host or write-once store.
    /// Without it `pki serve` writes none (`pki audit checkpoint --out FILE` still does).
    pub checkpoint_dir: Option<PathBuf>,
    /// Seconds between periodic checkpoints (default 3600); 0 writes one at start only.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings { checkpoint_dir: None, checkpoint_interval_secs: 3600 }
    }
}

impl AuditSettings {
    /// The checkpoint directory, created (mode 0700) if missing, as an absolute path; refused
    /// when it is the data directory `data` or inside it.
    pub fn checkpoint_dir(&self, data: &Path) -> anyhow::Result<Option<PathBuf>> {
        let Some(dir) = &self.checkpoint_dir else { return Ok(None) };
        let absolute = |p: &Path| -> anyhow::Result<PathBuf> {
            // Resolves symbolic links where the path exists, so that a link into the data
            // directory is seen for what it is.
            match p.canonicalize() {
                Ok(c) => Ok(c),
                Err(_) => std::path::absolute(p).with_context(|| format!("bad path {}", p.display())),
            }
        };
        let data_abs = absolute(data)?;
        let inside = |d: &Path| d.starts_with(&data_abs);
        let refuse = || {
            anyhow::anyhow!(
                "[audit] checkpoint_dir {} is inside the data directory {}: checkpoints must be kept \
                 where whoever can rewrite the database cannot (another disk or host)",
                dir.display(),
                data.display()
            )
        };
        if inside(&absolute(dir)?) {
            return Err(refuse());
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create [audit] checkpoint_dir {}", dir.display()))?;
        }
        let resolved = absolute(dir)?;
        if inside(&resolved) {
            return Err(refuse());
        }
        Ok(Some(resolved))
    }
}

/// `[database]`: the sled database of the data directory, or a PostgreSQL database.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Most memory for sled's page cache, MiB. A directory serving a database larger than this
    /// decodes pages from disk on lookups (BENCHMARKS.md, issue 3).
    pub cache_mib: u64,
    /// A PostgreSQL database (`postgres://user:password@host:port/dbname`) instead of the sled
    /// database of the data directory; the environment variable `PKI_DATABASE_URL` wins over it.
    /// The key store stays in the data directory.
    pub url: Option<String>,
}

/// The environment variable that names a PostgreSQL database, over `[database] url`.
pub const DATABASE_URL_ENV: &str = "PKI_DATABASE_URL";

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings { cache_mib: cerdb::CertDb::DEFAULT_CACHE_BYTES >> 20, url: None }
    }
}

/// The URL may hold a password: shown only as set or not.
impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("cache_mib", &self.cache_mib)
            .field("url", &self.url.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: String,
    /// HTTPS.
    pub tls: TlsServerSettings,
    /// HTTP worker threads; by default [`ServerSettings::DEFAULT_WORKERS_PER_CPU`] per CPU, or
    /// [`ServerSettings::TSA_ONLY_WORKERS_PER_CPU`] when the timestamp authority is served alone.
    pub workers: Option<usize>,
    /// A new connection must send its request head within this many seconds (default 10).
    pub request_head_timeout_secs: u64,
    /// A request must have sent its whole body this many seconds after its head was read, or it
    /// gets 408 and the connection is closed (default 30).
    pub body_timeout_secs: u64,
    /// An idle keep-alive connection is closed after this many seconds (default 15).
    pub keep_alive_secs: u64,
    /// After a response that closes the connection, unread request data is drained for at most
    /// this many seconds before the socket is closed (default 1).
    pub disconnect_timeout_secs: u64,
    /// Most open HTTP connections in all (default 4096; spread over the workers). The soft limit
    /// on open files is raised to fit it when the hard limit allows, or the cap is lowered.
    pub max_connections: usize,
    /// Most open HTTP connections from one client address (an IPv6 /64 counts as one; default
    /// 128): the connections above it get 503 and are closed.
    pub max_connections_per_address: usize,
    /// Anonymous timestamps (`/tsa` without an API key) per second per client address (default 10).
    pub tsa_anonymous_rate: f64,
    /// And the burst an anonymous client may use at once (default 200). An API key of the
    /// directory (`Authorization: Bearer ...`) gets that key's rate and burst instead.
    pub tsa_anonymous_burst: f64,
    /// An operating-system group (name or number) whose members may use the admin socket of
    /// `pki serve` as themselves: the socket becomes group read-write and the data directory
    /// group-searchable (0710; its files stay 0600). Each member's commands are recorded under
    /// their own uid, so two officers on one host are two actors (escrow approvals). Without it
    /// only the data directory's owner reaches the socket.
    pub admin_group: Option<String>,
}

impl ServerSettings {
    /// Worker threads per CPU unless `workers` is set. OCSP answers are signed on the worker that
    /// took the request, so with one worker per CPU a core idled whenever its worker waited on
    /// the network: four per CPU answered 20–30 % more OCSP requests with nonces on the benchmark
    /// machine (BENCHMARKS.md, issue 4).
    pub const DEFAULT_WORKERS_PER_CPU: usize = 4;

    /// Worker threads per CPU for a server of the timestamp authority alone (`--only tsa`). A
    /// token's durable write is awaited, so a worker never sits on the disk; more workers than
    /// CPUs only left cores idle between group commits: one per CPU made 5–10 % more tokens/s
    /// in alternating runs (BENCHMARKS.md, issue 5).
    pub const TSA_ONLY_WORKERS_PER_CPU: usize = 1;

    /// Checks the limits; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("request_head_timeout_secs", self.request_head_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            ("keep_alive_secs", self.keep_alive_secs),
            ("disconnect_timeout_secs", self.disconnect_timeout_secs),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_address", self.max_connections_per_address as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                anyhow::bail!("server.{name} must be positive");
            }
        }
        if self.max_connections_per_address > self.max_connections {
            anyhow::bail!("server.max_connections_per_address must be at most server.max_connections");
        }
        for (name, v) in [
            ("tsa_anonymous_rate", self.tsa_anonymous_rate),
            ("tsa_anonymous_burst", self.tsa_anonymous_burst),
        ] {
            if !(v.is_finite() && v > 0.0) {
                anyhow::bail!("server.{name} must be a positive number");
            }
        }
        Ok(())
    }

    /// The number of HTTP worker threads to run for a server of these services.
    pub fn worker_count(&self, tsa_only: bool) -> usize {
        self.workers.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            cpus * if tsa_only { Self::TSA_ONLY_WORKERS_PER_CPU } else { Self::DEFAULT_WORKERS_PER_CPU }
        })
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            tls: TlsServerSettings::default(),
            workers: None,
            request_head_timeout_secs: 10,
            body_timeout_secs: 30,
            keep_alive_secs: 15,
            disconnect_timeout_secs: 1,
            max_connections: 4096,
            max_connections_per_address: 128,
            tsa_anonymous_rate: 10.0,
            tsa_anonymous_burst: 200.0,
            admin_group: None,
        }
    }
}

/// `[server.tls]`: HTTPS for every service, the console included.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsServerSettings {
    /// Address of the HTTPS listener; without it there is none.
    pub listen: Option<String>,
    /// Certificate chain, PEM, leaf first. Without it (and `key_file`), the console certificate
    /// the root CA issued at init is used, its key in the key store.
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key_file: Option<PathBuf>,
}

/// Key store settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HsmSettings {
    /// Where the keys live: `soft` (the sealed file store, default) or `pkcs11` (a token).
    pub backend: HsmBackend,
    /// A file holding the master passphrase (first line). Without it (and without the
    /// `PKI_HSM_PASSPHRASE` environment variable) a random master key file is used: development only.
    pub passphrase_file: Option<PathBuf>,
    /// `pkcs11`: the PKCS#11 module (shared library).
    pub module: Option<PathBuf>,
    /// `pkcs11`: the label of the token.
    pub token_label: Option<String>,
    /// `pkcs11`: a file whose first line is the user PIN.
    pub pin_file: Option<PathBuf>,
    /// `pkcs11`: the environment variable holding the user PIN when there is no `pin_file`
    /// (default `PKI_HSM_PIN`). The PIN is never taken from the command line.
    pub pin_env: Option<String>,
}

/// The key custody backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HsmBackend {
    /// The sealed file store in the data directory.
    #[default]
    Soft,
    /// A PKCS#11 token.
    Pkcs11,
}

/// The PIN variable when `pin_env` is not set.
pub const DEFAULT_PIN_ENV: &str = "PKI_HSM_PIN";

impl HsmSettings {
    /// The token's settings, the PIN read; `escrow_dir` holds the token-wrapped escrowed keys.
    pub fn pkcs11_config(&self, escrow_dir: PathBuf) -> anyhow::Result<hsm_sim::Pkcs11Config> {
        let module = self.module.clone().ok_or_else(|| {
            anyhow::anyhow!("[hsm] backend = \"pkcs11\" needs module (the PKCS#11 library)")
        })?;
        let token_label = self
            .token_label
            .clone()
            .ok_or_else(|| anyhow::anyhow!("[hsm] backend = \"pkcs11\" needs token_label"))?;
        let pin = match &self.pin_file {
            Some(f) => crate::input::read_secret_line(f, "the token PIN file")?,
            None => {
                let var = self.pin_env.as_deref().unwrap_or(DEFAULT_PIN_ENV);
                match std::env::var(var) {
                    Ok(p) if !p.is_empty() => p,
                    _ => anyhow::bail!(
                        "no PIN for the token {token_label:?}: set [hsm] pin_file, or the environment variable {var}"
                    ),
                }
            }
        };
        Ok(hsm_sim::Pkcs11Config { module, token_label, pin, escrow_dir })
    }
}

impl Settings {
    /// Reads `path` if given, else `./pki.toml` if present, else the defaults; then
    /// `PKI_DATABASE_URL`, when set, chooses the database.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Settings> {
        let mut s = Self::load_file(path)?;
        if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
            if !url.is_empty() {
                s.database.url = Some(url);
            }
        }
        Ok(s)
    }

    fn load_file(path: Option<&Path>) -> anyhow::Result<Settings> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("pki.toml"), false),
        };
        if !path.exists() {
            if required {
                anyhow::bail!("configuration file {} does not exist", path.display());
            }
            return Ok(Settings::default());
        }
        let text = crate::input::read_text_bounded(&path, "configuration", crate::input::MAX_CONFIG_FILE)?;
        let s: Settings = toml::from_str(&text).map_err(|e| {
            // The line and the text there, so that the one-line message names the setting.
            let at = e.span().map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                let src = text.lines().nth(line - 1).unwrap_or("").trim();
                // A line is quoted whole up to 80 characters (a setting), cut beyond (no such file
                // is a configuration anyway).
                match src.char_indices().nth(80) {
                    Some((cut, _)) => format!(" line {line} ({}…)", &src[..cut]),
                    None => format!(" line {line} ({src})"),
                }
            });
            anyhow::anyhow!(
                "configuration {}{}: {}",
                path.display(),
                at.unwrap_or_default(),
                e.message().replace('\n', " ")
            )
        })?;
        s.ca.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        s.console.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        s.escrow.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        s.validation.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        s.acme.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        s.server.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if s.server.tls.cert_file.is_some() != s.server.tls.key_file.is_some() {
            anyhow::bail!("{}: [server.tls] needs both cert_file and key_file, or neither", path.display());
        }
        if !(16..=1 << 20).contains(&s.database.cache_mib) {
            anyhow::bail!(
                "{}: [database] cache_mib = {}: expected 16 to 1048576",
                path.display(),
                s.database.cache_mib
            );
        }
        s.ldap.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if s.hsm.backend == HsmBackend::Pkcs11 && (s.hsm.module.is_none() || s.hsm.token_label.is_none()) {
            anyhow::bail!("{}: [hsm] backend = \"pkcs11\" needs module and token_label", path.display());
        }
        if let Some(n) = s.server.workers {
            if !(1..=1024).contains(&n) {
                anyhow::bail!("{}: [server] workers = {n}: expected 1 to 1024", path.display());
            }
        }
        if !(1..=600).contains(&s.mail.relay.timeout_secs) {
            anyhow::bail!(
                "{}: [mail.relay] timeout_secs = {}: expected 1 to 600",
                path.display(),
                s.mail.relay.timeout_secs
            );
        }
        if !(1..=32).contains(&s.mail.relay.connections) {
            anyhow::bail!(
                "{}: [mail.relay] connections = {}: expected 1 to 32",
                path.display(),
                s.mail.relay.connections
            );
        }
        if s.ca.expiry.mail_sender_renew_before_days >= s.ca.leaf.validity_days {
            anyhow::bail!(
                "{}: [ca.expiry] mail_sender_renew_before_days = {}: expected 0 to {}, less than [ca.leaf] validity_days ({}): a renewed certificate would be due again at once",
                path.display(),
                s.ca.expiry.mail_sender_renew_before_days,
                s.ca.leaf.validity_days.saturating_sub(1),
                s.ca.leaf.validity_days
            );
        }
        if !(1..=1024).contains(&s.mail.max_bulk_at_once) {
            anyhow::bail!(
                "{}: [mail] max_bulk_at_once = {}: expected 1 to 1024",
                path.display(),
                s.mail.max_bulk_at_once
            );
        }
        Ok(s)
    }

    /// Where the master key comes from.
    pub fn master_key_source(&self) -> anyhow::Result<hsm_sim::MasterKeySource> {
        if let Ok(p) = std::env::var("PKI_HSM_PASSPHRASE") {
            if !p.is_empty() {
                return Ok(hsm_sim::MasterKeySource::Passphrase(p));
            }
        }
        match &self.hsm.passphrase_file {
            Some(f) => Ok(hsm_sim::MasterKeySource::Passphrase(crate::input::read_secret_line(
                f,
                "the HSM passphrase file",
            )?)),
            None => Ok(hsm_sim::MasterKeySource::KeyFile),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `toml` block of the README, and every commented-out setting of the example
    /// (`# key = value` lines, uncommented with their table), is a configuration `pki` reads: a
    /// setting renamed in the code and not in the documentation fails here.
    #[test]
    fn the_readmes_configuration_and_the_examples_commented_settings_parse() {
        let readme = include_str!("../README.md");
        let blocks: Vec<&str> =
            readme.split("```toml\n").skip(1).filter_map(|b| b.split("```").next()).collect();
        assert!(blocks.len() >= 3, "{} toml blocks in the README", blocks.len());
        for b in blocks {
            if let Err(e) = toml::from_str::<Settings>(b) {
                panic!("a README toml block does not parse: {e}\n{b}");
            }
        }
        let example = include_str!("../pki.example.toml");
        let uncommented: String = example
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        if let Err(e) = toml::from_str::<Settings>(&uncommented) {
            panic!("the example's commented-out settings do not parse: {e}");
        }
    }

    #[test]
    fn the_example_config_parses_and_shows_the_defaults() {
        let s: Settings = toml::from_str(include_str!("../pki.example.toml")).expect("example parses");
        assert_eq!(s.ca, CaConfig::default());
        assert_eq!(s.server.listen, ServerSettings::default().listen);
        assert!(s.hsm.passphrase_file.is_none());
        assert_eq!(s.ldap, ldap_directory::LdapConfig::default());
        assert_eq!(s.hsm.backend, HsmBackend::Soft);
        assert_eq!(s.escrow, ca_core::EscrowConfig::default());
        let mail = crate::mail_settings::MailSettings::default();
        assert_eq!(
            (&s.mail.enterprise_domains, &s.mail.invitation_subject, &s.mail.invitation_text),
            (&mail.enterprise_domains, &mail.invitation_subject, &mail.invitation_text)
        );
        assert_eq!(
            (s.mail.max_body_mib, s.mail.max_bulk_body_mib, s.mail.max_bulk_at_once),
            (mail.max_body_mib, mail.max_bulk_body_mib, mail.max_bulk_at_once)
        );
        assert!(s.mail.relay.host.is_none());
    }

    #[test]
    fn metrics_log_and_expiry_settings_are_read_and_bad_values_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pki.toml");
        std::fs::write(&p, "[metrics]\nlisten = \"127.0.0.1:9464\"\n\n[log]\nformat = \"json\"\n")
            .expect("write");
        let s = Settings::load(Some(&p)).expect("valid");
        assert_eq!((s.metrics.listen.as_deref(), s.log.format), (Some("127.0.0.1:9464"), LogFormat::Json));
        for bad in [
            "[log]\nformat = \"xml\"\n",
            "[metrics]\nport = 9464\n",
            "[ca.expiry]\nwarning_days = -1\n",
            "[ca.expiry]\nocsp_renew_before_days = 400\n",
            "[server]\nadmin_group = 7\n",
        ] {
            std::fs::write(&p, bad).expect("write");
            let e = Settings::load(Some(&p)).expect_err(bad).to_string();
            assert!(e.contains("pki.toml") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn one_officer_for_escrow_recovery_is_refused_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pki.toml");
        std::fs::write(&p, "[escrow]\napprovals = 1\n").expect("write");
        let e = Settings::load(Some(&p)).unwrap_err().to_string();
        assert!(
            e.contains("pki.toml") && e.contains("escrow.approvals = 1") && e.contains("at least 2"),
            "{e}"
        );
        std::fs::write(&p, "[escrow]\napprovals = 3\nrequest_ttl_secs = 600\n").expect("write");
        let s = Settings::load(Some(&p)).expect("valid");
        assert_eq!((s.escrow.approvals, s.escrow.request_ttl_secs), (3, 600));
    }

    #[test]
    fn a_pkcs11_backend_needs_module_and_token_and_takes_the_pin_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pki.toml");
        std::fs::write(&p, "[hsm]\nbackend = \"pkcs11\"\nmodule = \"/x.so\"\n").expect("write");
        let e = Settings::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("token_label"), "{e}");
        std::fs::write(&p, "[hsm]\nbackend = \"hardware\"\n").expect("write");
        assert!(Settings::load(Some(&p)).is_err());
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234\n").expect("write");
        std::fs::write(
            &p,
            "[hsm]\nbackend = \"pkcs11\"\nmodule = \"/x.so\"\ntoken_label = \"pki\"\npin_env = \"PKI_TEST_PIN_UNSET_VAR\"\n",
        )
        .expect("write");
        let s = Settings::load(Some(&p)).expect("loads");
        let e = s.hsm.pkcs11_config(dir.path().into()).unwrap_err().to_string();
        assert!(e.contains("PKI_TEST_PIN_UNSET_VAR") && e.contains("pin_file"), "{e}");
        let mut h = s.hsm.clone();
        h.pin_file = Some(pin);
        assert_eq!(h.pkcs11_config(dir.path().into()).expect("pin").pin, "1234");
    }

    #[test]
    fn unknown_and_invalid_settings_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pki.toml");
        std::fs::write(&p, "[ca]\nbogus = 1\n").expect("write");
        let e = Settings::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("pki.toml") && e.contains("bogus"), "{e}");
        std::fs::write(&p, "[ca.leaf]\nvalidity_days = 900\n").expect("write");
        let e = Settings::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("825"), "{e}");
        std::fs::write(&p, "\u{0}\u{1}garbage[[[").expect("write");
        assert!(Settings::load(Some(&p)).is_err());
        let e = Settings::load(Some(&dir.path().join("missing.toml"))).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn server_limits_must_be_positive_and_the_per_address_cap_within_the_total() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pki.toml");
        for (text, names) in [
            ("body_timeout_secs = 0", "server.body_timeout_secs"),
            ("request_head_timeout_secs = 0", "server.request_head_timeout_secs"),
            ("max_connections = 10\nmax_connections_per_address = 11", "server.max_connections_per_address"),
            ("tsa_anonymous_rate = -1.0", "server.tsa_anonymous_rate"),
            ("tsa_anonymous_burst = nan", "server.tsa_anonymous_burst"),
        ] {
            std::fs::write(&p, format!("[server]\n{text}\n")).expect("write");
            let e = Settings::load(Some(&p)).unwrap_err().to_string();
            assert!(e.contains("pki.toml") && e.contains(names), "{text}: {e}");
        }
        std::fs::write(&p, "[server]\nbody_timeout_secs = 5\nmax_connections_per_address = 4\n")
            .expect("write");
        let s = Settings::load(Some(&p)).expect("valid");
        assert_eq!((s.server.body_timeout_secs, s.server.max_connections_per_address), (5, 4));
    }

    /// `[mail] max_bulk_at_once` is 1 to 1024, `[ca.expiry] mail_sender_renew_before_days` 0 to
    /// one less than `[ca.leaf] validity_days` (365), `[mail.relay] timeout_secs` 1 to 600 and
    /// `connections` 1 to 32: outside, or not a number, the configuration is refused naming the
    /// setting.
    #[test]
    fn mail_and_relay_numbers_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pki.toml");
        let read = |table: &str, key: &str, value: &str| {
            std::fs::write(&p, format!("[{table}]\n{key} = {value}\n")).expect("write");
            Settings::load(Some(&p))
        };
        type Case = (&'static str, &'static str, [&'static str; 4], [u64; 2], fn(&Settings) -> u64);
        let cases: [Case; 4] = [
            (
                "ca.expiry",
                "mail_sender_renew_before_days",
                ["365", "1000", "-1", "\"soon\""],
                [0, 364],
                |s| u64::from(s.ca.expiry.mail_sender_renew_before_days),
            ),
            ("mail", "max_bulk_at_once", ["0", "1025", "-1", "\"four\""], [1, 1024], |s| {
                s.mail.max_bulk_at_once as u64
            }),
            ("mail.relay", "timeout_secs", ["0", "601", "-1", "\"soon\""], [1, 600], |s| {
                s.mail.relay.timeout_secs
            }),
            ("mail.relay", "connections", ["0", "33", "-1", "\"many\""], [1, 32], |s| {
                s.mail.relay.connections as u64
            }),
        ];
        for (table, key, bad, good, get) in cases {
            for b in bad {
                let e = read(table, key, b).unwrap_err().to_string();
                assert!(e.contains("pki.toml") && e.contains(key), "{key} = {b}: {e}");
            }
            for g in good {
                assert_eq!(get(&read(table, key, &g.to_string()).expect("valid")), g, "{key} = {g}");
            }
        }
    }

    #[test]
    fn a_database_url_is_read_and_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pki.toml");
        std::fs::write(&p, "[database]\nurl = \"postgres://pki:s3cret@db.example/ca\"\n").expect("write");
        let s = Settings::load_file(Some(&p)).expect("loads");
        assert_eq!(s.database.url.as_deref(), Some("postgres://pki:s3cret@db.example/ca"));
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(Settings::default().database.url, None);
    }

    #[test]
    fn workers_default_per_cpu_by_service_and_a_set_count_wins() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default = ServerSettings::default();
        assert_eq!(default.worker_count(false), cpus * ServerSettings::DEFAULT_WORKERS_PER_CPU);
        assert_eq!(default.worker_count(true), cpus * ServerSettings::TSA_ONLY_WORKERS_PER_CPU);
        let set = ServerSettings { workers: Some(3), ..ServerSettings::default() };
        assert_eq!((set.worker_count(false), set.worker_count(true)), (3, 3));
    }
}

#[cfg(test)]
mod fuzz;
