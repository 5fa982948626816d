//! Pipelined and batched reads: the directory's hot lookups awaited by the HTTP workers instead
//! of blocking them on the synchronous pool, and gathered into one query each when they arrive
//! together.
//!
//! A few connections of the asynchronous client (`tokio-postgres`, which the synchronous one
//! wraps), driven by one thread of ours running a single-threaded runtime ([`driver`]). On that
//! runtime, each kind of lookup ([`Query`]) has a queue and one worker per connection. A worker
//! takes every lookup waiting in its queue (up to [`MAX_BATCH`]) and asks for all of them in one
//! statement — the lookup keys as arrays, `unnest ... WITH ORDINALITY` joined to the table, each
//! row tagged with the place of its lookup — and hands each caller its rows. A lone lookup is
//! sent as the plain statement. So a batch forms only while every connection is busy: under a
//! light load each lookup goes out at once; under a heavy one the database runs one statement
//! for many lookups, which costs it a fraction of as many statements (the per-statement work —
//! the protocol's messages, executor start-up, the backend's wake-up — is most of an index
//! lookup's cost). The callers, on the HTTP workers' runtimes, talk to the workers over tokio's
//! channels, which need no particular runtime.
//!
//! Each connection prepares the statements once, when it is opened. A connection the server
//! closed (a restart, `pg_terminate_backend`, a network failure) is replaced by the next batch
//! that finds it closed; a batch that failed because its connection went away is tried once more
//! on a new one (reads, so trying them again changes nothing). A batch the server does not
//! answer within [`QUERY_TIMEOUT`] fails as unavailable, and its connection is given up (what was
//! sent after it would wait behind it); so does one whose new connection is not ready by then.
//!
//! Nothing is kept but the connections: every lookup asks the database in a statement sent after
//! the lookup arrived, so a revocation written by another process is seen by the next lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Config, NoTls, Row, Socket, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db_error;
use crate::Error;

/// How many connections the pipelined reads open at most. Each is served by one backend process
/// of the server, so this many of the server's CPUs at most work on one process's lookups; fewer
/// connections make larger batches. Measured on 2 CPUs shared by the server, the replica and the
/// client (exists, 1,000,000 certificates, 64 HTTP connections): 1, 2 and 4 connections answered
/// 44,700, 45,000 and 43,500 lookups/s (fetch 38,800, 40,700, 37,300), at about 8 lookups per
/// statement with 4.
pub const READ_CONNECTIONS: usize = 2;

/// The most lookups one statement asks for.
pub const MAX_BATCH: usize = 128;

/// How long a batch may wait for the server's answer before it fails as unavailable.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The kinds of lookup, each with a statement for one and a statement for many (prepared by each
/// connection in the order of [`Query::ALL`], the one before the many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Query {
    /// [`super::certs::STATES_BY_EMAIL`], [`super::certs::STATES_BY_EMAILS`].
    StatesByEmail,
    /// [`super::certs::RECORDS_BY_EMAIL`], [`super::certs::RECORDS_BY_EMAILS`].
    RecordsByEmail,
    /// [`super::certs::EMAIL_BY_HASH`], [`super::certs::EMAILS_BY_HASHES`].
    EmailByHash,
    /// [`super::certs::STATE_BY_SERIAL`], [`super::certs::STATES_BY_SERIALS`].
    StateBySerial,
    /// [`super::certs::LAST_CHANGE`], for one lookup and for many: it has no key, so one
    /// statement answers every lookup waiting when it is sent.
    LastChange,
}

impl Query {
    const ALL: [Query; 5] = [
        Query::StatesByEmail,
        Query::RecordsByEmail,
        Query::EmailByHash,
        Query::StateBySerial,
        Query::LastChange,
    ];

    fn one(self) -> &'static str {
        match self {
            Query::StatesByEmail => super::certs::STATES_BY_EMAIL,
            Query::RecordsByEmail => super::certs::RECORDS_BY_EMAIL,
            Query::EmailByHash => super::certs::EMAIL_BY_HASH,
            Query::StateBySerial => super::certs::STATE_BY_SERIAL,
            Query::LastChange => super::certs::LAST_CHANGE,
        }
    }

    fn many(self) -> &'static str {
        match self {
            Query::StatesByEmail => super::certs::STATES_BY_EMAILS,
            Query::RecordsByEmail => super::certs::RECORDS_BY_EMAILS,
            Query::EmailByHash => super::certs::EMAILS_BY_HASHES,
            Query::StateBySerial => super::certs::STATES_BY_SERIALS,
            Query::LastChange => super::certs::LAST_CHANGE,
        }
    }
}

/// What one lookup asks for.
#[derive(Debug, Clone)]
pub(super) enum Key {
    /// An address's lookup key and a certificate kind's code ([`Query::StatesByEmail`],
    /// [`Query::RecordsByEmail`]).
    Email(String, i16),
    /// An address's hash ([`Query::EmailByHash`]).
    Hash([u8; 32]),
    /// A certificate's serial ([`Query::StateBySerial`]).
    Serial(Vec<u8>),
    /// Nothing ([`Query::LastChange`]).
    None,
}

impl Key {
    /// A hash's or a serial's bytes; none for the other keys, which the queues of the queries
    /// that take bytes never hold.
    fn bytes(&self) -> &[u8] {
        match self {
            Key::Hash(hash) => hash,
            Key::Serial(serial) => serial,
            Key::Email(..) | Key::None => &[],
        }
    }
}

/// A lookup waiting in its queue, and where its rows go.
struct Waiting {
    key: Key,
    reply: oneshot::Sender<Result<Vec<Row>, Error>>,
}

/// One open connection and its prepared statements.
struct Session {
    client: Client,
    /// For each query of [`Query::ALL`]: the statement for one, then for many.
    statements: Vec<Statement>,
}

impl Session {
    fn statement(&self, query: Query, many: bool) -> &Statement {
        &self.statements[2 * query as usize + usize::from(many)]
    }
}

/// A connection's place: the open session, and the lock under which a worker opens a new one
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

    /// Forgets `session` unless another worker replaced it already.
    fn forget(&self, session: &Arc<Session>) {
        let mut live = self.live();
        if live.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *live = None;
        }
    }
}

/// What the workers share: where the connections go, and the connections.
struct Connections {
    config: Config,
    /// TLS to the server, when the URL requires it (`tls.rs`).
    tls: Option<MakeRustlsConnect>,
    slots: Vec<Slot>,
    timeout: Duration,
    /// Statements sent, and lookups answered by them.
    statements: AtomicU64,
    lookups: AtomicU64,
}

/// The pipelined reads of one database.
pub struct PipelinedReads {
    connections: Arc<Connections>,
    /// One queue per query of [`Query::ALL`].
    queues: Vec<mpsc::UnboundedSender<Waiting>>,
    /// Their receiving ends, until the workers are started (with the first lookup).
    receivers: Mutex<Vec<mpsc::UnboundedReceiver<Waiting>>>,
    started: std::sync::Once,
}

impl std::fmt::Debug for PipelinedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedReads")
            .field("connections", &self.connections.slots.len())
            .finish_non_exhaustive()
    }
}

impl PipelinedReads {
    /// Reads over at most `connections` connections to `config` (none opened yet), each batch
    /// waiting at most `timeout` for its answer.
    pub(super) fn new(
        config: Config,
        tls: Option<MakeRustlsConnect>,
        connections: usize,
        timeout: Duration,
    ) -> Self {
        let (queues, receivers) = Query::ALL.iter().map(|_| mpsc::unbounded_channel()).unzip();
        PipelinedReads {
            connections: Arc::new(Connections {
                config,
                tls,
                slots: (0..connections.max(1)).map(|_| Slot::default()).collect(),
                timeout,
                statements: AtomicU64::new(0),
                lookups: AtomicU64::new(0),
            }),
            queues,
            receivers: Mutex::new(receivers),
            started: std::sync::Once::new(),
        }
    }

    /// How many statements the lookups so far were sent in, and how many lookups they answered
    /// ([`crate::AsyncReads::statement_counts`]).
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.connections.statements.load(Ordering::Relaxed),
            self.connections.lookups.load(Ordering::Relaxed),
        )
    }

    /// The rows of `query` for `key`, in the order of the statement for one.
    pub(super) async fn query(&self, query: Query, key: Key) -> Result<Vec<Row>, Error> {
        self.started.call_once(|| self.start_workers());
        let (reply, rows) = oneshot::channel();
        self.queues[query as usize]
            .send(Waiting { key, reply })
            .map_err(|_| Error::Unavailable("the database reads have stopped".into()))?;
        rows.await.map_err(|_| Error::Unavailable("the database reads have stopped".into()))?
    }

    /// Starts, on the [`driver`] thread, one worker per connection for each query.
    fn start_workers(&self) {
        let receivers = std::mem::take(&mut *self.receivers.lock().unwrap_or_else(|p| p.into_inner()));
        for (query, receiver) in Query::ALL.into_iter().zip(receivers) {
            let queue = Arc::new(tokio::sync::Mutex::new(receiver));
            for slot in 0..self.connections.slots.len() {
                driver().spawn(worker(self.connections.clone(), query, slot, queue.clone()));
            }
        }
    }
}

/// Takes the lookups waiting in `queue`, asks for them on connection `slot` and answers them,
/// until the queue's senders are gone (the [`PipelinedReads`] dropped).
async fn worker(
    connections: Arc<Connections>,
    query: Query,
    slot: usize,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Waiting>>>,
) {
    loop {
        let mut batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            batch
        };
        // A caller that went away (its request cancelled) needs no answer.
        batch.retain(|w| !w.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let keys: Vec<&Key> = batch.iter().map(|w| &w.key).collect();
        match connections.ask(query, slot, &keys).await {
            Ok(rows) => {
                for (w, rows) in batch.into_iter().zip(rows) {
                    let _ = w.reply.send(Ok(rows));
                }
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(copy(&e)));
                }
            }
        }
    }
}

/// The same error again, for each lookup of a failed batch (the failures of a statement are
/// [`Error::Unavailable`] and [`Error::Db`]; [`db_error`]).
fn copy(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Db(m) => Error::Db(m.clone()),
        other => Error::Db(other.to_string()),
    }
}

impl Connections {
    /// The rows of each of `keys`, in its order, on connection `slot`; tried once more on a new
    /// connection when the first one went away.
    async fn ask(&self, query: Query, slot: usize, keys: &[&Key]) -> Result<Vec<Vec<Row>>, Error> {
        let slot = &self.slots[slot];
        let mut retried = false;
        loop {
            // Opening a connection has the same time (its TCP connect has `connect_timeout`, but a
            // server can accept and then not answer the start-up or the statements' preparation).
            let session = match tokio::time::timeout(self.timeout, self.session(slot)).await {
                Ok(session) => session?,
                Err(_) => {
                    return Err(Error::Unavailable(format!(
                        "the database did not answer a new connection within {} s",
                        self.timeout.as_secs_f64()
                    )))
                }
            };
            let sent = tokio::time::timeout(self.timeout, send(&session, query, keys)).await;
            match sent {
                Ok(Ok(rows)) => {
                    self.statements.fetch_add(1, Ordering::Relaxed);
                    self.lookups.fetch_add(keys.len() as u64, Ordering::Relaxed);
                    return Ok(rows);
                }
                Ok(Err(e)) => {
                    let e = db_error(e);
                    if !matches!(e, Error::Unavailable(_)) || retried {
                        return Err(e);
                    }
                    // The connection went away under the statement: forget it and try once on a
                    // new one.
                    slot.forget(&session);
                    retried = true;
                }
                Err(_) => {
                    slot.forget(&session);
                    return Err(Error::Unavailable(format!(
                        "the database did not answer a lookup within {} s",
                        self.timeout.as_secs_f64()
                    )));
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
        // Another worker may have opened it while this one waited.
        if let Some(s) = slot.open_session() {
            return Ok(s);
        }
        let session = Arc::new(self.open().await?);
        *slot.live() = Some(session.clone());
        Ok(session)
    }

    /// Opens a connection, which the [`driver`] thread (this one) then drives, and prepares the
    /// statements on it.
    async fn open(&self) -> Result<Session, Error> {
        let client = match &self.tls {
            Some(tls) => connect(&self.config, tls.clone()).await,
            None => connect(&self.config, NoTls).await,
        }
        .map_err(db_error)?;
        let mut statements = Vec::with_capacity(2 * Query::ALL.len());
        for q in Query::ALL {
            statements.push(client.prepare(q.one()).await.map_err(db_error)?);
            statements.push(client.prepare(q.many()).await.map_err(db_error)?);
        }
        Ok(Session { client, statements })
    }
}

/// Asks for `keys` on `session`: one key in the statement for one, more in the statement for
/// many, whose rows carry the place of their key (from 1) in their last column.
async fn send(
    session: &Session,
    query: Query,
    keys: &[&Key],
) -> Result<Vec<Vec<Row>>, tokio_postgres::Error> {
    if let [key] = keys {
        let one = session.statement(query, false);
        let rows = match key {
            Key::Email(email, kind) => session.client.query(one, &[email, kind]).await?,
            Key::Hash(hash) => session.client.query(one, &[&&hash[..]]).await?,
            Key::Serial(serial) => session.client.query(one, &[serial]).await?,
            Key::None => session.client.query(one, &[]).await?,
        };
        return Ok(vec![rows]);
    }
    let rows = match query {
        Query::StatesByEmail | Query::RecordsByEmail => {
            let (emails, kinds): (Vec<&str>, Vec<i16>) = keys
                .iter()
                .map(|k| match k {
                    Key::Email(email, kind) => (email.as_str(), *kind),
                    // Each query's queue holds its own kind of key.
                    Key::Hash(_) | Key::Serial(_) | Key::None => ("", -1),
                })
                .unzip();
            session.client.query(session.statement(query, true), &[&emails, &kinds]).await?
        }
        Query::EmailByHash | Query::StateBySerial => {
            let keys: Vec<&[u8]> = keys.iter().map(|k| k.bytes()).collect();
            session.client.query(session.statement(query, true), &[&keys]).await?
        }
        // No key: the one answer is every lookup's.
        Query::LastChange => {
            let rows = session.client.query(session.statement(query, true), &[]).await?;
            return Ok(vec![rows; keys.len()]);
        }
    };
    let mut each = vec![Vec::new(); keys.len()];
    for row in rows {
        let place: i64 = row.get(row.len() - 1);
        if let Some(rows) =
            usize::try_from(place).ok().and_then(|p| p.checked_sub(1)).and_then(|i| each.get_mut(i))
        {
            rows.push(row);
        }
    }
    Ok(each)
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

/// The runtime that runs the workers and drives their connections: one thread of its own for
/// the process, started with the first lookup.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes the connection and then says nothing: the lookup fails as unavailable
    /// when the read timeout is up, not when the connect timeout is.
    #[test]
    fn a_server_that_never_answers_a_new_connection_fails_the_lookup_at_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let silent = std::thread::spawn(move || {
            let (socket, _) = listener.accept().expect("accept");
            std::thread::sleep(Duration::from_secs(2));
            drop(socket);
        });
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user("pki")
            .dbname("pki")
            .connect_timeout(Duration::from_secs(30));
        let connections = Connections {
            config,
            tls: None,
            slots: vec![Slot::default()],
            timeout: Duration::from_millis(300),
            statements: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let started = std::time::Instant::now();
        let key = Key::Email("a@example.com".into(), 1);
        let e = runtime.block_on(connections.ask(Query::StatesByEmail, 0, &[&key])).expect_err("no answer");
        assert!(
            matches!(&e, Error::Unavailable(m) if m.contains("did not answer a new connection within 0.3 s")),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
        silent.join().expect("the silent server");
    }
}
