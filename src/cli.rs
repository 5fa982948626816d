//! Command-line parsing and the choice between the running server and the local database.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{execute, init_message, Envelope, Generate, Outcome, Request};
use crate::context::{init_ca, open_ca, socket_path};
use crate::settings::Settings;
use crate::{admin_socket, serve};

/// In-house certificate authority for e-mail security.
#[derive(Debug, Parser)]
#[command(name = "pki", version, about)]
struct Cli {
    /// Data directory (database, key store, admin socket). Given before the command
    /// (`pki --data DIR list`), because `pki ts verify --data FILE` names the timestamped data.
    #[arg(long, env = "PKI_DATA", default_value = "./pki-data")]
    data: PathBuf,
    /// Configuration file (default: ./pki.toml when present).
    #[arg(long, global = true, env = "PKI_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the CA hierarchy (root, S/MIME issuing CA, OCSP signer, TSA). Safe to repeat.
    Init,
    /// Issue a signing or encryption certificate for a mailbox; prints the certificate PEM.
    Issue {
        /// The mailbox address.
        #[arg(long)]
        email: String,
        /// signing or encryption.
        #[arg(long)]
        usage: String,
        /// PKCS#10 request (PEM or DER) made by the key's owner.
        #[arg(long, conflicts_with = "generate")]
        csr: Option<PathBuf>,
        /// Generate and escrow the key in the key store (encryption only); deliver it as PKCS#12.
        #[arg(long, requires_all = ["p12", "p12_password_file"])]
        generate: bool,
        /// Key type for --generate: rsa2048, rsa3072, rsa4096, p256, p384.
        #[arg(long, requires = "generate")]
        key_type: Option<String>,
        /// Where to write the PKCS#12.
        #[arg(long)]
        p12: Option<PathBuf>,
        /// File whose first line is the PKCS#12 password.
        #[arg(long)]
        p12_password_file: Option<PathBuf>,
    },
    /// Revoke a certificate (reasons by RFC 5280 name: keyCompromise, affiliationChanged, ...).
    Revoke {
        /// Serial in hex (any case, optional 0x, colons, leading zeros).
        #[arg(long)]
        serial: String,
        /// RFC 5280 reason name.
        #[arg(long)]
        reason: String,
    },
    /// The CA's own certificates: the procedure for a compromised key.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Key custody: move a soft key store onto a PKCS#11 token.
    Hsm {
        #[command(subcommand)]
        command: HsmCommand,
    },
    /// The PostgreSQL database of `[database] url` (or PKI_DATABASE_URL).
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// List certificates.
    List {
        /// Only certificates of this address.
        #[arg(long)]
        email: Option<String>,
    },
    /// Show one certificate.
    Show {
        /// Serial in hex.
        #[arg(long)]
        serial: String,
    },
    /// Print the current CRL (PEM).
    Crl {
        /// issuing (default) or root.
        #[arg(long, default_value = "issuing")]
        ca: String,
    },
    /// Print a CA certificate (PEM): root, issuing, ocsp or tsa.
    CaCert {
        /// Which certificate.
        which: String,
    },
    /// The CA-side certificates (root, issuing CA, OCSP signer, TSA, console TLS) with their
    /// notAfter and days left; those within their warning window are marked
    Status,
    /// Audit log commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Escrowed key commands.
    Escrow {
        #[command(subcommand)]
        command: EscrowCommand,
    },
    /// Timestamp commands (RFC 3161).
    Ts {
        #[command(subcommand)]
        command: TsCommand,
    },
    /// Console accounts (admin web console at /admin).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// OCSP commands.
    Ocsp {
        #[command(subcommand)]
        command: OcspCommand,
    },
    /// Run every HTTP service (initialising the CA on first start).
    Serve {
        /// Address to listen on (default from pki.toml, else 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// Run only these services (comma-separated): publication, ocsp, tsa, console, directory,
        /// ldap.
        #[arg(long)]
        only: Option<String>,
        /// Also listen with HTTPS here (default from `[server.tls] listen` in pki.toml); the
        /// console is served over plain HTTP only on loopback addresses.
        #[arg(long)]
        tls_listen: Option<String>,
    },
    /// ACME enrolment: External Account Binding keys (`pki acme eab create|list|revoke`).
    Acme {
        #[command(subcommand)]
        command: crate::enrolment::AcmeCommand,
    },
    /// Mailbox validation by an e-mailed value (`pki validate send|confirm`).
    Validate {
        #[command(subcommand)]
        command: crate::enrolment::ValidateCommand,
    },
    /// The mailbox validations on record (`pki validations list`).
    Validations {
        #[command(subcommand)]
        command: crate::enrolment::ValidationsCommand,
    },
    /// API keys of client applications of the certificate directory.
    Apikey {
        #[command(subcommand)]
        command: crate::directory::ApikeyCommand,
    },
    /// Look up the newest valid certificate of a mailbox in the certificate directory.
    Lookup {
        /// The mailbox address.
        #[arg(long)]
        email: String,
        /// encryption or signing.
        #[arg(long, default_value = "encryption")]
        usage: String,
        /// Ask this directory over HTTP (e.g. http://127.0.0.1:8080) instead of this data directory.
        #[arg(long)]
        server: Option<String>,
        /// API key for --server (ignored without it).
        #[arg(long, env = "PKI_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Certificate directory (CerDB) commands.
    Cerdb {
        #[command(subcommand)]
        command: crate::directory::CerdbCommand,
    },
    /// Sealed mail: sender identities.
    Mail {
        #[command(subcommand)]
        command: crate::mail::MailCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Revoke one of the CA's own certificates because its key is compromised: the issuing CA
    /// (cACompromise), the OCSP signer, the TSA or the console TLS certificate (keyCompromise).
    /// Nothing is issued or signed under it afterwards. Audited; cannot be undone.
    Compromise {
        /// issuing, ocsp, tsa, tls or audit.
        #[arg(long)]
        ca: String,
        /// The typed confirmation: exactly "compromise CA" (e.g. "compromise issuing").
        #[arg(long)]
        confirm: String,
    },
    /// Replace the OCSP signer or the audit signer (certified by the issuing CA), the TSA or the
    /// console TLS certificate (by the root) at once with a new key in custody and a new
    /// certificate: after `pki ca compromise`, OCSP answers, timestamps, HTTPS and audit
    /// checkpoints are given again. Audited.
    Rekey {
        /// ocsp, tsa, tls or audit.
        #[arg(long)]
        ca: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the whole audit log: hash chain and macs; with --checkpoint also that it was neither
    /// truncated nor rewritten before that checkpoint.
    Verify {
        /// A checkpoint written by `pki audit checkpoint` or `pki serve` (DER or PEM): its
        /// signature, certificate and timestamp are checked, then the log against its head.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Write a signed, timestamped checkpoint of the audit log's head (CMS SignedData, DER).
    Checkpoint {
        /// Where to write it (keep it outside the data directory).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TsCommand {
    /// Timestamp a file: send a SHA-256 query (with nonce, certReq) and save the reply.
    Stamp {
        /// The file to timestamp.
        file: PathBuf,
        /// A TSA to ask over HTTP (e.g. http://127.0.0.1:8080); default: this data directory's
        /// CA (through the running server, or directly).
        #[arg(long)]
        server: Option<String>,
        /// Where to write the reply (default: FILE.tsr).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a timestamp token (or reply) as an auditor: signature, chain to the root at genTime,
    /// ESSCertIDv2, imprint, and that it is in this TSA's record.
    Verify {
        /// The token or reply (DER).
        #[arg(long)]
        token: PathBuf,
        /// The timestamped data.
        #[arg(long, conflicts_with = "digest", required_unless_present = "digest")]
        data: Option<PathBuf>,
        /// Or its digest, in hex, made with the token's hash algorithm.
        #[arg(long)]
        digest: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add an account; prints its one-time password (changed at first login, with TOTP enrolment).
    Add {
        /// Account name (letters, digits, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// admin (accounts, settings), officer (issue, revoke, recover) or auditor (read-only).
        #[arg(long)]
        role: String,
    },
    /// List the accounts.
    List,
    /// Disable an account and end its sessions.
    Disable {
        /// Account name.
        #[arg(long)]
        name: String,
    },
    /// Enable a disabled account.
    Enable {
        /// Account name.
        #[arg(long)]
        name: String,
    },
    /// Reset an account: new one-time password (printed), TOTP enrolled again, lockout lifted; the
    /// account takes no part in escrow recovery until a second administrator confirms the reset.
    Reset {
        /// Account name.
        #[arg(long)]
        name: String,
    },
    /// Confirm the reset of an account as a second administrator (not the one who reset it).
    ConfirmReset {
        /// Account name.
        #[arg(long = "name", value_name = "NAME")]
        name: Option<String>,
        /// Account name, without --name.
        #[arg(value_name = "NAME", conflicts_with = "name", required_unless_present = "name")]
        account: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum OcspCommand {
    /// Write one pre-signed DER response per issued certificate into DIR (for a CDN or static
    /// web server); re-running refreshes only what changed or nears nextUpdate.
    Presign {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum HsmCommand {
    /// Move every key of the soft key store in the data directory onto the PKCS#11 token of
    /// `[hsm]` (signing keys non-extractable, each verified by a signature on the token; escrowed
    /// keys wrapped by the token). Refuses to overwrite a key on the token.
    Import,
}

/// Recovery of an escrowed key needs two officers or more (`[escrow] approvals`): one requests,
/// others approve, the requester downloads. Every step is audited.
#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Bring the database's schema to this version of pki (as every other command does when it
    /// opens the database) and print the schema version. A database of a later version is
    /// refused.
    Migrate,
    /// Copy an installation into an empty one on another engine — a data directory (sled) into
    /// a PostgreSQL database, or back — with its sealed key records, then verify the copy:
    /// every count, a random sample of records byte for byte, the audit log's hash chain. Stop
    /// every process using the source first.
    Copy {
        /// The installation to copy: a data directory, or a postgres:// URL.
        #[arg(long)]
        from: String,
        /// The empty installation to fill: a postgres:// URL, or a data directory.
        #[arg(long)]
        to: String,
        /// Certificates compared byte for byte (every other record is compared whole).
        #[arg(long, default_value_t = 1000)]
        sample: u64,
    },
}

#[derive(Debug, Subcommand)]
enum EscrowCommand {
    /// Ask for the recovery of an escrowed encryption key; prints the request id.
    Request {
        /// Serial of the encryption certificate.
        #[arg(long)]
        serial: String,
        /// Why (at most 500 characters, one line).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Approve another officer's recovery request.
    Approve {
        /// The request id (`pki escrow list`).
        id: String,
    },
    /// List the recovery requests.
    List,
    /// Download the key of your own approved request as a PKCS#12 (once).
    Recover {
        /// The request id.
        id: Option<String>,
        /// Where to write the PKCS#12.
        #[arg(long, visible_alias = "p12")]
        out: Option<PathBuf>,
        /// File whose first line is the PKCS#12 password.
        #[arg(long)]
        p12_password_file: Option<PathBuf>,
        /// Refused: recovery by one officer is gone.
        #[arg(long, hide = true)]
        serial: Option<String>,
    },
}

fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let head: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    head.join(" ").trim_start_matches("error: ").to_string()
}

/// Runs the command line; prints one `error: ...` line and exits non-zero on failure.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {}", error_text(&one_line(&e)));
            return ExitCode::from(2);
        }
    };
    let serving = matches!(cli.command, Command::Serve { .. });
    let default_level = if serving { "info" } else { "warn" };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // The LDAP codec logs what it decodes (addresses in filters, at any level up to error for
    // malformed input); the LDAP service logs what it did itself, without them.
    if let Ok(quiet) = "ldap3_proto=off".parse() {
        filter = filter.add_directive(quiet);
    }
    // The PostgreSQL client logs every statement's parameters (addresses, hashes) at debug.
    if let Ok(quiet) = "tokio_postgres=warn".parse() {
        filter = filter.add_directive(quiet);
    }
    // A configuration that does not load is reported by the command itself, in text.
    let json =
        Settings::load(cli.config.as_deref()).is_ok_and(|s| s.log.format == crate::settings::LogFormat::Json);
    let logs =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    if json {
        logs.json().flatten_event(true).init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }

    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(cli.config.as_deref())?;
    crate::mail_relay::configure(&settings.mail.relay);
    let data = cli.data.clone();
    let request = match cli.command {
        Command::Serve { listen, only, tls_listen } => {
            let mut settings = settings.clone();
            if tls_listen.is_some() {
                settings.server.tls.listen = tls_listen;
            }
            let listen = listen.unwrap_or_else(|| settings.server.listen.clone());
            let services = match only {
                Some(list) => serve::Service::parse_list(&list)?,
                None => serve::Service::ALL.to_vec(),
            };
            serve::run(&data, &settings, &listen, &services)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Db { command: DbCommand::Migrate } => {
            print!("{}", escape_controls(&crate::context::migrate_database(&settings)?));
            return Ok(ExitCode::SUCCESS);
        }
        Command::Db { command: DbCommand::Copy { from, to, sample } } => {
            print!("{}", escape_controls(&crate::db_copy::run(&from, &to, sample, &settings)?));
            return Ok(ExitCode::SUCCESS);
        }
        Command::Init => Request::Init,
        Command::Hsm { command: HsmCommand::Import } => {
            print!("{}", escape_controls(&crate::context::import_soft_store(&data, &settings)?));
            return Ok(ExitCode::SUCCESS);
        }
        Command::User { command } => match command {
            UserCommand::Add { name, role } => Request::UserAdd { name, role },
            UserCommand::List => Request::UserList,
            UserCommand::Disable { name } => Request::UserDisable { name },
            UserCommand::Enable { name } => Request::UserEnable { name },
            UserCommand::Reset { name } => Request::UserReset { name },
            UserCommand::ConfirmReset { name, account } => {
                Request::UserConfirmReset { name: name.or(account).unwrap_or_default() }
            }
        },
        Command::Issue { email, usage, csr, generate, key_type, p12, p12_password_file } => {
            let csr = csr
                .map(|p| crate::input::read_bounded(&p, "CSR file", crate::input::MAX_DER_FILE))
                .transpose()?;
            let generate = if generate {
                let (Some(p12), Some(pw)) = (p12, p12_password_file) else {
                    anyhow::bail!("--generate needs --p12 OUT and --p12-password-file F");
                };
                Some(Generate {
                    key_type,
                    p12_out: p12.display().to_string(),
                    password: crate::input::read_secret_line(&pw, "password file")?,
                })
            } else {
                None
            };
            if csr.is_none() && generate.is_none() {
                anyhow::bail!("give exactly one of --csr FILE or --generate");
            }
            Request::Issue { email, usage, csr, generate }
        }
        Command::Revoke { serial, reason } => Request::Revoke { serial, reason },
        Command::Ca { command: CaCommand::Compromise { ca, confirm } } => {
            Request::CaCompromise { which: ca, confirm }
        }
        Command::Ca { command: CaCommand::Rekey { ca } } => Request::CaRekey { which: ca },
        Command::List { email } => Request::List { email },
        Command::Show { serial } => Request::Show { serial },
        Command::Crl { ca } => Request::Crl { ca },
        Command::CaCert { which } => Request::CaCert { which },
        Command::Status => Request::Status,
        Command::Audit { command: AuditCommand::Verify { checkpoint: None } } => Request::AuditVerify,
        Command::Audit { command: AuditCommand::Verify { checkpoint: Some(file) } } => {
            Request::AuditVerifyCheckpoint { checkpoint: crate::audit_checkpoints::read(&file)? }
        }
        Command::Audit { command: AuditCommand::Checkpoint { out } } => {
            Request::AuditCheckpoint { out: out.display().to_string() }
        }
        Command::Ts { command: TsCommand::Stamp { file, server, out } } => {
            let digest = crate::input::sha256_of(&file, "file")?;
            let mut nonce = [0u8; 8];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
                .map_err(|_| anyhow::anyhow!("no randomness for the nonce"))?;
            let query = tsa::sha256_query(&digest, &nonce)?;
            let out = out.unwrap_or_else(|| {
                let mut p = file.clone().into_os_string();
                p.push(".tsr");
                PathBuf::from(p)
            });
            if let Some(url) = server {
                return crate::timestamp::stamp_over_http(&url, &query, &out).map(|()| ExitCode::SUCCESS);
            }
            Request::TsStamp { query, out: out.display().to_string() }
        }
        Command::Ts { command: TsCommand::Verify { token, data, digest } } => Request::TsVerify {
            token: crate::input::read_bounded(&token, "token file", crate::input::MAX_DER_FILE)?,
            // The data is hashed here, a mebibyte at a time, and only its digests are sent: a
            // document of any size is verified without being held or carried whole.
            data: None,
            data_digests: data
                .map(|d| crate::input::digests_of(&d, "data file"))
                .transpose()?
                .map(|digests| digests.values().into_iter().map(|(oid, d)| (oid, hex::encode(d))).collect()),
            digest,
        },
        Command::Ocsp { command: OcspCommand::Presign { out } } => {
            // The server may run in another working directory: send an absolute path.
            let out = std::path::absolute(&out)
                .map_err(|e| anyhow::anyhow!("bad output directory {}: {e}", out.display()))?;
            Request::OcspPresign { out: out.display().to_string() }
        }
        Command::Escrow { command } => match command {
            EscrowCommand::Request { serial, reason } => Request::EscrowAsk { serial, reason },
            EscrowCommand::Approve { id } => Request::EscrowApprove { id },
            EscrowCommand::List => Request::EscrowList,
            EscrowCommand::Recover { serial: Some(_), .. } => anyhow::bail!(crate::escrow::ONE_STEP_GONE),
            EscrowCommand::Recover { id, out, p12_password_file, serial: None } => {
                let (Some(id), Some(out), Some(pw)) = (id, out, p12_password_file) else {
                    anyhow::bail!(
                        "pki escrow recover needs the request id, --out FILE and --p12-password-file F \
                         (`pki escrow recover ID --out FILE --p12-password-file F`)"
                    );
                };
                Request::EscrowRecover {
                    id,
                    p12_out: out.display().to_string(),
                    password: crate::input::read_secret_line(&pw, "password file")?,
                }
            }
        },
        Command::Acme { command } => crate::enrolment::acme_request(command),
        Command::Validate { command } => crate::enrolment::validate_request(command),
        Command::Validations { command: crate::enrolment::ValidationsCommand::List } => {
            Request::ValidationsList
        }
        Command::Apikey { command } => crate::directory::apikey_request(command),
        Command::Mail { command } => crate::mail::mail_request(command, &settings),
        Command::Lookup { email, usage, server, api_key } => match server {
            Some(url) => return crate::directory::lookup_remote(&url, &email, &usage, api_key.as_deref()),
            None => Request::Lookup { email, usage },
        },
        Command::Cerdb { command } => {
            match crate::directory::cerdb_command(command, &data, &settings, &crate::actor::local())? {
                Some(request) => request,
                None => return Ok(ExitCode::SUCCESS),
            }
        }
    };
    // A running server records the actor from this process's credentials, not from this field.
    let env = Envelope { actor: crate::actor::local(), request };
    let outcome = match served_or(&data, &env, || run_locally(&data, &settings, &env))? {
        Served::Remote(outcome) | Served::Local(outcome) => outcome,
    };
    render(outcome)
}

/// How long a command waits for the admin socket of a process that holds the data directory
/// without answering on it yet: a `pki serve` starting, whose first start makes the CA's keys
/// (RSA-4096 and a PKCS#11 token take seconds) and opens its socket once the CA is ready.
const STARTING_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a command was carried out.
pub(crate) enum Served<T> {
    /// By the running server, through its admin socket.
    Remote(Outcome),
    /// In this process, with what `local` gave.
    Local(T),
}

/// `env` sent to the server running on `data`; without one, `local()`. While the data
/// directory is held by a process not answering on its socket ([`crate::context::InUse`]: a
/// server still starting), the socket is tried again, for at most [`STARTING_WAIT`], so that a
/// command run beside a starting server reaches it once it is up instead of failing.
pub(crate) fn served_or<T>(
    data: &Path,
    env: &Envelope,
    mut local: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<Served<T>> {
    let socket = socket_path(data);
    let mut waiting_since: Option<std::time::Instant> = None;
    loop {
        if let Some(outcome) = admin_socket::call(&socket, env)? {
            return Ok(Served::Remote(outcome));
        }
        match local() {
            Err(e) if e.is::<crate::context::InUse>() => {
                let since = *waiting_since.get_or_insert_with(|| {
                    eprintln!(
                        "pki: {} is held by another pki process; waiting up to {} s for its admin socket",
                        data.display(),
                        STARTING_WAIT.as_secs()
                    );
                    std::time::Instant::now()
                });
                if since.elapsed() >= STARTING_WAIT {
                    anyhow::bail!(
                        "{e}, and it opened no admin socket within {} s: try again once it has started or ended",
                        STARTING_WAIT.as_secs()
                    );
                }
                // Each try of `local` has waited for the database's lock already.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other.map(Served::Local),
        }
    }
}

fn run_locally(data: &Path, settings: &Settings, env: &Envelope) -> anyhow::Result<Outcome> {
    if let Request::Init = env.request {
        settings.audit.checkpoint_dir(data)?;
        let (ca, outcome) = init_ca(data, settings, &env.actor)?;
        let admin = crate::users::first_admin(&ca, &env.actor).map_err(|e| anyhow::anyhow!(e))?;
        let stdout = format!("{}{admin}", init_message(&ca, outcome));
        return Ok(Ok(crate::commands::Reply { stdout, ..Default::default() }));
    }
    if !crate::context::database_may_exist(data, settings) {
        anyhow::bail!("no CA in {}: run `pki init` (or `pki serve`) first", data.display());
    }
    let ca = open_ca(data, settings)?;
    Ok(execute(&ca, env))
}

fn render(outcome: Outcome) -> anyhow::Result<ExitCode> {
    let reply = outcome.map_err(|msg| anyhow::anyhow!(msg))?;
    for f in &reply.files {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&f.path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.path))?;
        file.write_all(&f.bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.path))?;
        file.sync_all().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.path))?;
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(escape_controls(&reply.stdout).as_bytes())?;
    stdout.flush()?;
    eprint!("{}", escape_controls(&reply.stderr));
    Ok(ExitCode::SUCCESS)
}

/// An error message as the CLI prints it: one line, control characters escaped, and cut in the
/// middle past [`cerdb::text::MAX_ERROR_CHARS`] (a value of thousands of characters quoted in it).
fn error_text(message: &str) -> String {
    let text = escape_controls(&message.replace('\n', " "));
    cerdb::text::cut_middle(&text, cerdb::text::MAX_ERROR_CHARS).into_owned()
}

/// What the CLI prints, with the control characters of untrusted input (a CSR's subject, an
/// address, a file name) escaped as Rust writes them (`\u{1b}`), so that no terminal escape
/// sequence reaches the officer's terminal. Line feeds and tabs stay; bidirectional overrides
/// are escaped too. Every message and reply goes through here; log lines are escaped by the
/// tracing formatter.
pub fn escape_controls(text: &str) -> String {
    let needs = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(needs) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{error_text, escape_controls};

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("CN=\u{1b}[2J x"), "CN=\\u{1b}[2J x");
        assert_eq!(escape_controls("a\rb\u{7f}\u{9b}c"), "a\\u{d}b\\u{7f}\\u{9b}c");
        assert_eq!(escape_controls("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape_controls("line one\n\tline two\n"), "line one\n\tline two\n");
        assert_eq!(escape_controls("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn an_error_line_is_one_line_escaped_and_cut_in_the_middle() {
        assert_eq!(error_text("short\nmessage \u{1b}"), "short message \\u{1b}");
        let long = format!("invalid serial number: \"{}\" contains 'z'", "z".repeat(5_000));
        let text = error_text(&long);
        assert!(text.contains("characters left out)…") && text.ends_with("zzz\" contains 'z'"), "{text}");
    }
}
