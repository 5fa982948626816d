//! A small pool of synchronous PostgreSQL connections.
//!
//! The storage traits are synchronous and called from many threads (the HTTP workers' blocking
//! sections, the TSA's committer), so each call takes a connection for its duration and gives
//! it back. Connections are opened on demand up to [`Pool::max`]; a caller that finds none free
//! waits for one, at most [`CHECKOUT_WAIT`]. A connection the server closed (a restart, a
//! network failure) is dropped when it comes back, never handed out again: the next caller opens
//! a new one.
//!
//! Our own rather than `r2d2`: that crate adds a reaper thread and two dependencies for what is
//! a mutex, a condition variable and a counter here.
//!
//! Each connection keeps the statements it prepared ([`Conn::query`] and its siblings), so a
//! query is parsed and planned by the server once per connection instead of once per call, and a
//! call is one round trip instead of two.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement};

use super::db_error;
use crate::Error;

/// How long a caller waits for a free connection before giving up.
pub(super) const CHECKOUT_WAIT: Duration = Duration::from_secs(30);

/// The pool.
pub(super) struct Pool {
    config: Config,
    /// TLS to the server, when the URL requires it (`tls.rs`).
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

/// The statements a connection prepared, by their text.
type Prepared = HashMap<String, Statement>;

/// Statements kept per connection at most; past it the cache starts again (the queries of the
/// engine are a few dozen texts, so this is never reached in use).
const MAX_PREPARED: usize = 256;

struct State {
    idle: Vec<(Client, Prepared)>,
    /// Connections open, idle or handed out.
    open: usize,
}

/// A connection taken from the pool; it goes back when dropped.
pub(super) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    prepared: Prepared,
}

impl Pool {
    /// A pool of at most `max` connections to `config`, over `tls` when given (none opened yet).
    pub(super) fn new(
        config: Config,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
        max: usize,
    ) -> Self {
        Pool {
            config,
            tls,
            max: max.max(1),
            state: Mutex::new(State { idle: Vec::new(), open: 0 }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection: an idle one, a new one while fewer than `max` are open, or the first one
    /// given back within [`CHECKOUT_WAIT`].
    pub(super) fn get(&self) -> Result<Conn<'_>, Error> {
        let deadline = Instant::now() + CHECKOUT_WAIT;
        let mut state = self.lock();
        loop {
            while let Some((client, prepared)) = state.idle.pop() {
                if !client.is_closed() {
                    return Ok(Conn { pool: self, client: Some(client), prepared });
                }
                state.open -= 1;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                let connected = match &self.tls {
                    Some(tls) => self.config.connect(tls.clone()),
                    None => self.config.connect(NoTls),
                };
                return match connected {
                    Ok(client) => Ok(Conn { pool: self, client: Some(client), prepared: Prepared::new() }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(db_error(e))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable(format!(
                    "no free database connection after {} s ({} in use)",
                    CHECKOUT_WAIT.as_secs(),
                    self.max
                )));
            }
            state = self.freed.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl Conn<'_> {
    /// `sql` prepared on this connection: the kept statement, or a new one, kept.
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client_mut().prepare(sql)?;
        if self.prepared.len() >= MAX_PREPARED {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    fn client_mut(&mut self) -> &mut Client {
        // Present from construction until drop.
        self.client.as_mut().expect("a pooled connection holds its client")
    }

    /// [`Client::query`] with the statement kept on this connection.
    pub(super) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let st = self.statement(sql)?;
        self.client_mut().query(&st, params)
    }

    /// [`Client::query_opt`] with the statement kept on this connection.
    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let st = self.statement(sql)?;
        self.client_mut().query_opt(&st, params)
    }

    /// [`Client::query_one`] with the statement kept on this connection.
    pub(super) fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let st = self.statement(sql)?;
        self.client_mut().query_one(&st, params)
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Present from construction until drop.
        self.client.as_ref().expect("a pooled connection holds its client")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("a pooled connection holds its client")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        match self.client.take() {
            Some(client) if !client.is_closed() => {
                state.idle.push((client, std::mem::take(&mut self.prepared)))
            }
            _ => state.open -= 1,
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}
