//! The PostgreSQL engine: every trait of the storage contract on one PostgreSQL database, which
//! any number of processes on any machines may share. Every `postgres` name of the workspace is
//! in this module.
//!
//! The storage traits are synchronous and called from blocking threads, so the engine uses the
//! synchronous client (`postgres`, on tokio-postgres; no runtime of ours) over a small pool of
//! connections ([`pool`]). What the contract calls atomic is one transaction. Nothing is kept
//! in memory between calls: the audit log's last record and the change feed's position are read
//! inside the write that appends to them, under the lock of the one-row table `chain_head`
//! (`SELECT ... FOR UPDATE`), so that writers in many processes append to one linear chain and
//! number changes without gaps.
//!
//! The directory's hot lookups have an asynchronous path beside it ([`reads`]): a few
//! connections of the asynchronous client, on which the HTTP workers' lookups are pipelined,
//! and gathered into one statement when they arrive together.
//!
//! Commits are synchronous (PostgreSQL's default, `synchronous_commit = on`): a write is durable
//! when its commit returns, so [`crate::CertStore::flush`] has nothing left to do.
//!
//! Tables (the layout of each concern is documented in its file; the schema in
//! `migrations/`, applied by [`migrate`]):
//!
//! | table | file |
//! |---|---|
//! | `certs`, `email_hashes`, `retired_serials`, `compromised_keys`, `crls`, `audit`, `changes`, `chain_head`, `ca_settings` | `certs.rs` |
//! | `console_users`, `console_sessions`, `console_meta` | `console.rs` |
//! | `api_keys`, `directory_settings` | `apikeys.rs` |
//! | `tsa_serials`, `tsa_tokens` | `tsa.rs` |
//! | `custody_records` | `custody.rs` |
//! | `acme_records` | `acme.rs` |
//! | `schema_version` | `migrate.rs` |

mod acme;
mod apikeys;
mod certs;
mod console;
mod custody;
mod migrate;
mod pool;
mod reads;
mod recovery;
mod tls;
mod transfer;
mod tsa;

pub use apikeys::KEY_CACHE_TTL;
pub use migrate::SCHEMA_VERSION;
pub use reads::{PipelinedReads, MAX_BATCH, QUERY_TIMEOUT, READ_CONNECTIONS};

use std::sync::Arc;
use std::time::Duration;

use postgres::config::Host;
use postgres::Config;

use crate::{Error, Faults};

/// How many connections one engine opens at most.
pub const POOL_SIZE: usize = 16;

/// How long opening a connection may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL error as one line: the server's message (and its detail), or the client's.
/// What says the server cannot be reached or is going away — the client's own failures
/// (refused, closed, timed out), connection exceptions (SQLSTATE class 08), an operator's
/// shutdown, a server starting or in recovery (57P01–57P03) — is [`Error::Unavailable`].
pub(crate) fn db_error(e: postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => {
            let text = match db.detail() {
                Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
                None => format!("{}: {}", db.severity(), db.message()),
            };
            let code = db.code().code();
            if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") {
                Error::Unavailable(text)
            } else {
                Error::Db(text)
            }
        }
        None if e.is_closed() || e.to_string().starts_with("error connecting") || io_cause(&e) => {
            Error::Unavailable(with_causes(&e))
        }
        None => Error::Db(with_causes(&e)),
    }
}

/// Whether an I/O error (a reset, a refused connection, a timeout) is among the causes.
fn io_cause(e: &postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An error and its causes on one line (the client's errors name their cause only as a source:
/// "error connecting to server" and then "Connection refused").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text.replace('\n', " ")
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        db_error(e)
    }
}

impl From<postgres::Error> for crate::directory::DirectoryError {
    fn from(e: postgres::Error) -> Self {
        crate::directory::DirectoryError::Storage(e.into())
    }
}

/// How the pipelined reads of an engine are set up.
#[derive(Debug, Clone, Copy)]
pub struct ReadSettings {
    /// Connections at most ([`READ_CONNECTIONS`] by default).
    pub connections: usize,
    /// How long a statement may wait for its answer ([`QUERY_TIMEOUT`] by default).
    pub timeout: Duration,
}

impl Default for ReadSettings {
    fn default() -> Self {
        ReadSettings { connections: READ_CONNECTIONS, timeout: QUERY_TIMEOUT }
    }
}

/// The engine of one PostgreSQL database.
pub struct PgEngine {
    pool: pool::Pool,
    /// The URL without its password.
    location: String,
    /// The schema version the database has (this engine's, once opened).
    schema_version: u32,
    /// Fault injection for the scenario suite: the N-th write fails.
    faults: Option<Arc<Faults>>,
    /// API key records read lately (`apikeys.rs`).
    keys: apikeys::KeyCache,
    /// The directory's lookups for async callers (`reads.rs`).
    reads: Arc<PipelinedReads>,
}

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEngine").field("location", &self.location).finish_non_exhaustive()
    }
}

impl PgEngine {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`, or
    /// libpq's `key=value` form) and brings its schema to this engine's version
    /// ([`SCHEMA_VERSION`]). A database whose schema is newer than this engine's is refused
    /// ([`Error::SchemaTooNew`]); a malformed URL or an unreachable server is [`Error::Db`] with
    /// one line naming it (never the password).
    pub fn open(url: &str, faults: Option<Arc<Faults>>) -> Result<Self, Error> {
        Self::open_with(url, faults, ReadSettings::default())
    }

    /// [`PgEngine::open`] with the pipelined reads set up as `reads` says.
    pub fn open_with(url: &str, faults: Option<Arc<Faults>>, reads: ReadSettings) -> Result<Self, Error> {
        let tls::Split { url, tls } = tls::split(url)?;
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| Error::Db(format!("invalid database URL: {}", with_causes(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("pki");
        }
        let reads =
            Arc::new(PipelinedReads::new(config.clone(), tls.clone(), reads.connections, reads.timeout));
        let config = Config::from(config);
        let location = location_of(&config);
        let engine = PgEngine {
            pool: pool::Pool::new(config, tls, POOL_SIZE),
            location,
            schema_version: 0,
            faults,
            keys: apikeys::KeyCache::default(),
            reads,
        };
        let mut conn = engine.pool.get().map_err(|e| match e {
            Error::Db(m) => Error::Db(format!("cannot connect to {}: {m}", engine.location)),
            Error::Unavailable(m) => {
                Error::Unavailable(format!("cannot connect to {}: {m}", engine.location))
            }
            other => other,
        })?;
        let version = migrate::apply(&mut conn, &|| engine.fault())?;
        drop(conn);
        Ok(PgEngine { schema_version: version, ..engine })
    }

    /// The schema version of the database (after [`PgEngine::open`], this engine's).
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// A connection of the pool.
    fn conn(&self) -> Result<pool::Conn<'_>, Error> {
        self.pool.get()
    }

    /// One write of the fault plan: an error once the planned write is reached. Asked before
    /// every statement that writes, and by [`PgEngine::flushed`].
    fn fault(&self) -> Result<(), Error> {
        match &self.faults {
            Some(f) => f.write(),
            None => Ok(()),
        }
    }

    /// Where the embedded engine flushes after a write: here the commit was synchronous and the
    /// write is durable already, but the fault plan counts this point as the embedded engine
    /// does, standing for an acknowledgement lost after the commit — so the fault scenarios mean
    /// the same on both engines (a write that happened, reported as failed).
    fn flushed(&self) -> Result<(), Error> {
        self.fault()
    }
}

/// `postgres://user@host:port/dbname` (Unix-socket hosts as their directory), for messages:
/// never the password.
fn location_of(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config.get_ports().get(i).or(config.get_ports().first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// Runs `f`, a call of the synchronous client, where it may block. The client drives its
/// connection with a runtime of its own, which cannot run on a thread that already drives one:
/// the HTTP and LDAP workers call the storage traits from async handlers, so there `f` runs on
/// one of a few threads kept for it ([`client_threads`]) while the worker waits (as the embedded
/// engine blocks the worker on its disk). Elsewhere (the CLI, the admin socket's threads, the
/// TSA's committer) it runs right here.
///
/// Kept threads, not one started per call: a thread's start and end (its stack mapped and
/// unmapped, the other core's TLB flushed, the allocator's heap set up) cost more CPU than the
/// query, and took most of a directory replica's time (BENCHMARKS.md, "PostgreSQL beside sled").
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    client_threads().install(f)
}

/// Threads for [`off_runtime`]: two per CPU. A caller waits for a free one; the threads spend
/// most of a call waiting on the database, so a few more than the CPUs keep them busy, while
/// every thread more adds the pool's idle spinning and switches to the CPUs it shares with the
/// HTTP workers and the database. Measured on 2 CPUs (a replica's exists, 20,000 certificates,
/// 64 connections): 22,500/s at 2 threads (p99 5.2 ms), 21,800/s at 4 (p99 7.8 ms), 23,800/s
/// at 8 (p99 11.9 ms), 22,400/s at 16 (p99 24 ms).
fn client_threads() -> &'static rayon_core::ThreadPool {
    static THREADS: std::sync::OnceLock<rayon_core::ThreadPool> = std::sync::OnceLock::new();
    THREADS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon_core::ThreadPoolBuilder::new()
            .num_threads(2 * cpus)
            .thread_name(|i| format!("pg-client-{i}"))
            .build()
            // Starting a few threads fails only when the process cannot start threads at all,
            // which nothing of a server survives either.
            .expect("start the PostgreSQL client threads")
    })
}

/// A `u64` of the contract (an audit number, a TSA serial) as PostgreSQL's `bigint`.
fn to_i64(v: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::Inconsistent(format!("{what} {v} is beyond the database's range")))
}

/// A `bigint` read back as the contract's `u64`.
fn to_u64(v: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("{what} {v} is negative")))
}

impl crate::Engine for PgEngine {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn schema_version(&self) -> Option<u32> {
        Some(self.schema_version)
    }

    fn pipelined_reads(&self) -> Option<Arc<dyn crate::AsyncReads>> {
        Some(self.reads.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_location_never_shows_the_password() {
        for (url, want) in [
            ("postgres://pki:s3cret@db.example:5433/ca", "postgres://pki@db.example:5433/ca"),
            ("postgresql://pki:s3cret@127.0.0.1/ca?sslmode=disable", "postgres://pki@127.0.0.1:5432/ca"),
            ("host=/run/pg user=pki password=s3cret dbname=ca", "postgres://pki@/run/pg:5432/ca"),
        ] {
            let config: Config = url.parse().expect("parses");
            assert_eq!(location_of(&config), want);
        }
    }

    #[test]
    fn a_malformed_url_and_an_unreachable_server_are_one_line_errors() {
        let e = PgEngine::open("postgres://pki:s3cret@host:notaport/db", None).expect_err("bad port");
        let m = e.to_string();
        assert!(m.contains("invalid database URL") && !m.contains("s3cret") && !m.contains('\n'), "{m}");
        // A port nobody listens on (bound, never listening).
        let sock = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = sock.local_addr().expect("addr").port();
        drop(sock);
        let e =
            PgEngine::open(&format!("postgres://pki:s3cret@127.0.0.1:{port}/db"), None).expect_err("refused");
        let m = e.to_string();
        assert!(
            m.contains(&format!("cannot connect to postgres://pki@127.0.0.1:{port}/db"))
                && !m.contains("s3cret")
                && !m.contains('\n'),
            "{m}"
        );
    }
}
