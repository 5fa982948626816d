//! Pipelined reads: the directory's hot lookups awaited by the HTTP workers instead of blocking
//! them on the synchronous pool.
//!
//! A few connections of the asynchronous client (`tokio-postgres`, which the synchronous one
//! wraps), each shared by every caller: the client sends a query as soon as it is asked and the
//! server answers in order, so concurrent lookups on one connection travel together instead of
//! each waiting for a connection of its own, and no thread waits for the database. The
//! connections' sockets are driven by one thread of ours running a single-threaded runtime
//! ([`driver`]); the callers, on the HTTP workers' runtimes, talk to a connection over the
//! client's channels, which need no particular runtime.
//!
//! Each connection prepares the statements of the lookups once, when it is opened. A connection
//! the server closed (a restart, `pg_terminate_backend`, a network failure) is replaced by the
//! next caller that finds it closed; a lookup that failed because its connection went away is
//! tried once more on a new one (a read, so trying it again changes nothing).
//!
//! Nothing is kept but the connections: every lookup asks the database, so a revocation written
//! by another process is seen by the next lookup.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Socket, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db_error;
use crate::Error;

/// How many connections the pipelined reads open at most. Each is served by one backend process
/// of the server, so this many of the server's CPUs at most work on one process's lookups.
/// Measured on 2 CPUs shared with another load (a replica's exists, 1,000,000 certificates, 64
/// connections): 2 and 4 cost alike per lookup (the replica 19–28 µs of CPU, PostgreSQL 19–23 µs,
/// where the synchronous pool took 39–41 µs and 32–33 µs); 4 leaves a larger server room.
pub const READ_CONNECTIONS: usize = 4;

/// The statements each connection prepares; [`Session`] holds them in this order.
#[derive(Debug, Clone, Copy)]
pub(super) enum Query {
    /// [`super::certs::STATES_BY_EMAIL`].
    StatesByEmail,
    /// [`super::certs::RECORDS_BY_EMAIL`].
    RecordsByEmail,
    /// [`super::certs::EMAIL_BY_HASH`].
    EmailByHash,
}

impl Query {
    const ALL: [Query; 3] = [Query::StatesByEmail, Query::RecordsByEmail, Query::EmailByHash];

    fn sql(self) -> &'static str {
        match self {
            Query::StatesByEmail => super::certs::STATES_BY_EMAIL,
            Query::RecordsByEmail => super::certs::RECORDS_BY_EMAIL,
            Query::EmailByHash => super::certs::EMAIL_BY_HASH,
        }
    }
}

/// One open connection and its prepared statements.
struct Session {
    client: Client,
    statements: Vec<Statement>,
}

/// A connection's place: the open session, and the lock under which a caller opens a new one
/// (the others wait for it rather than each opening one).
#[derive(Default)]
struct Slot {
    live: Mutex<Option<Arc<Session>>>,
    opening: tokio::sync::Mutex<()>,
}

impl Slot {
    fn live(&self) -> std::sync::MutexGuard<'_, Option<Arc<Session>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open session, if its connection is still open.
    fn open_session(&self) -> Option<Arc<Session>> {
        self.live().as_ref().filter(|s| !s.client.is_closed()).cloned()
    }
}

/// The pipelined reads of one database.
pub struct PipelinedReads {
    config: Config,
    /// TLS to the server, when the URL requires it (`tls.rs`).
    tls: Option<MakeRustlsConnect>,
    slots: Vec<Slot>,
    /// The slot the next lookup uses (round robin).
    next: AtomicUsize,
}

impl std::fmt::Debug for PipelinedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedReads").field("connections", &self.slots.len()).finish_non_exhaustive()
    }
}

impl PipelinedReads {
    /// Reads over at most `connections` connections to `config` (none opened yet).
    pub(super) fn new(config: Config, tls: Option<MakeRustlsConnect>, connections: usize) -> Self {
        PipelinedReads {
            config,
            tls,
            slots: (0..connections.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The rows of `query` with `params`, on the next connection; tried once more on a new
    /// connection when the first one went away.
    pub(super) async fn query(
        &self,
        query: Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut retried = false;
        loop {
            let session = self.session(slot).await?;
            match session.client.query(&session.statements[query as usize], params).await {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    let e = db_error(e);
                    if !matches!(e, Error::Unavailable(_)) || retried {
                        return Err(e);
                    }
                    // The connection went away under the query: forget it (unless another
                    // caller replaced it already) and try once on a new one.
                    let mut live = slot.live();
                    if live.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
                        *live = None;
                    }
                    retried = true;
                }
            }
        }
    }

    /// The open session of `slot`, or a new one opened in its place.
    async fn session(&self, slot: &Slot) -> Result<Arc<Session>, Error> {
        if let Some(s) = slot.open_session() {
            return Ok(s);
        }
        let _opening = slot.opening.lock().await;
        // Another caller may have opened it while this one waited.
        if let Some(s) = slot.open_session() {
            return Ok(s);
        }
        let session = Arc::new(self.open().await?);
        *slot.live() = Some(session.clone());
        Ok(session)
    }

    /// Opens a connection on the [`driver`] thread, which then drives it, and prepares the
    /// statements on it.
    async fn open(&self) -> Result<Session, Error> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let opened = driver().spawn(async move {
            let client = match tls {
                Some(tls) => connect(&config, tls).await?,
                None => connect(&config, NoTls).await?,
            };
            let mut statements = Vec::with_capacity(Query::ALL.len());
            for q in Query::ALL {
                statements.push(client.prepare(q.sql()).await?);
            }
            Ok::<_, tokio_postgres::Error>(Session { client, statements })
        });
        match opened.await {
            Ok(session) => session.map_err(db_error),
            Err(e) => Err(Error::Db(format!("opening a database connection: {e}"))),
        }
    }
}

/// Connects over `tls` and leaves the connection's socket to the runtime this runs on.
async fn connect<T>(config: &Config, tls: T) -> Result<Client, tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a connection of the pipelined reads closed");
        }
    });
    Ok(client)
}

/// The runtime that drives the pipelined reads' connections: one thread of its own for the
/// process, started with the first connection.
fn driver() -> &'static tokio::runtime::Handle {
    static DRIVER: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    DRIVER.get_or_init(|| {
        // Building a runtime and starting a thread fail only when the process cannot make
        // threads or sockets at all, which nothing of a server survives either.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build the PostgreSQL read runtime");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("pg-reads".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("start the PostgreSQL read thread");
        handle
    })
}
