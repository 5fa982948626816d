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

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};

use super::db_error;
use crate::Error;

/// How long a caller waits for a free connection before giving up.
pub(super) const CHECKOUT_WAIT: Duration = Duration::from_secs(30);

/// The pool.
pub(super) struct Pool {
    config: Config,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    idle: Vec<Client>,
    /// Connections open, idle or handed out.
    open: usize,
}

/// A connection taken from the pool; it goes back when dropped.
pub(super) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Pool {
    /// A pool of at most `max` connections to `config` (none opened yet).
    pub(super) fn new(config: Config, max: usize) -> Self {
        Pool {
            config,
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
            while let Some(client) = state.idle.pop() {
                if !client.is_closed() {
                    return Ok(Conn { pool: self, client: Some(client) });
                }
                state.open -= 1;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.config.connect(NoTls) {
                    Ok(client) => Ok(Conn { pool: self, client: Some(client) }),
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
            Some(client) if !client.is_closed() => state.idle.push(client),
            _ => state.open -= 1,
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}
