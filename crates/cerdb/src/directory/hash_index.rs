//! The hashed-address index: SHA-256 of an address's lookup key → the lookup key, so a client can
//! ask by `email_sha256` without sending the address in clear.
//!
//! It is derived from cerdb's `by_email` index (whose keys start with the lookup key and a 0x00)
//! and kept in the tree `dir_email_sha256`:
//!
//! 1. on open, subscribe to `by_email` (sled delivers an event for every insert, queued before
//!    the insert returns), then scan `by_email` and add what is missing — certificates issued
//!    while no directory ran;
//! 2. a *drainer* thread moves events from the subscription into an in-memory queue, and an
//!    *applier* thread writes the queue into the tree. The drainer never touches sled: sled
//!    transactions hold a global write lock while they queue events, so a drainer waiting for
//!    sled could deadlock a large issuance batch (the subscription holds 1,024 events);
//! 3. a lookup that misses first drains whatever the subscription holds and applies the queue,
//!    then looks again — so a certificate stored before the request was made is found even if
//!    the threads have not got to it yet.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use sled::{Event, IVec, Subscriber};

use super::DirectoryError;
use crate::EmailAddress;

const TREE: &str = "dir_email_sha256";

/// Events taken from the subscription, not yet in the tree.
struct Feed {
    subscriber: Mutex<Subscriber>,
    queue: Mutex<Vec<IVec>>,
    ready: Condvar,
}

impl Feed {
    /// Moves every event that is complete into the queue without waiting; the number moved.
    ///
    /// sled 0.34's `Subscriber::next_timeout` reports an event whose write is still in flight as
    /// `Disconnected` (not `Timeout`), so no error ends the feed: any error ends this round only.
    /// The feed ends when the directory does (see the drainer thread).
    fn drain(&self) -> usize {
        let mut sub = self.subscriber.lock().unwrap_or_else(|p| p.into_inner());
        let mut got = Vec::new();
        loop {
            match sub.next_timeout(Duration::ZERO) {
                Ok(Event::Insert { key, .. }) => got.push(key),
                Ok(Event::Remove { .. }) => {}
                Err(_) => break,
            }
        }
        drop(sub);
        let n = got.len();
        if n > 0 {
            self.queue.lock().unwrap_or_else(|p| p.into_inner()).extend(got);
            self.ready.notify_one();
        }
        n
    }
}

/// The index.
pub(crate) struct EmailHashIndex {
    tree: sled::Tree,
    feed: Arc<Feed>,
    apply_lock: Mutex<()>,
}

/// The lookup key at the start of a `by_email` key (up to the first 0x00).
fn lookup_key_of(by_email_key: &[u8]) -> Option<&[u8]> {
    let end = by_email_key.iter().position(|b| *b == 0)?;
    Some(&by_email_key[..end])
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl EmailHashIndex {
    /// Subscribes, catches up with `by_email`, and starts the two threads.
    pub(crate) fn open(db: &sled::Db) -> Result<Arc<Self>, DirectoryError> {
        let by_email = db.open_tree("by_email")?;
        let tree = db.open_tree(TREE)?;
        // Subscribe first: whatever is inserted during the scan is then seen by one or the other.
        let feed = Arc::new(Feed {
            subscriber: Mutex::new(by_email.watch_prefix(Vec::<u8>::new())),
            queue: Mutex::new(Vec::new()),
            ready: Condvar::new(),
        });
        let index = Arc::new(EmailHashIndex { tree, feed: feed.clone(), apply_lock: Mutex::new(()) });

        let drainer = feed.clone();
        std::thread::Builder::new()
            .name("dir-hash-drain".into())
            .spawn(move || loop {
                if drainer.drain() == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Stop with the directory: the feed is shared with it and the applier only.
                // (Until then the database is open, since the directory holds it.)
                if Arc::strong_count(&drainer) == 1 {
                    return;
                }
            })
            .map_err(|e| crate::Error::Db(format!("cannot start the hash index thread: {e}")))?;

        let weak: Weak<EmailHashIndex> = Arc::downgrade(&index);
        let applier_feed = feed;
        std::thread::Builder::new()
            .name("dir-hash-apply".into())
            .spawn(move || loop {
                {
                    let q = applier_feed.queue.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = applier_feed
                        .ready
                        .wait_timeout_while(q, Duration::from_millis(500), |q| q.is_empty())
                        .unwrap_or_else(|p| p.into_inner());
                }
                let Some(index) = weak.upgrade() else { return };
                if let Err(e) = index.apply_queue() {
                    tracing::error!(error = %e, "hashed-address index update failed");
                }
            })
            .map_err(|e| crate::Error::Db(format!("cannot start the hash index thread: {e}")))?;

        index.catch_up(&by_email)?;
        Ok(index)
    }

    /// Adds every address of `by_email` that is missing.
    fn catch_up(&self, by_email: &sled::Tree) -> Result<(), DirectoryError> {
        let mut last: Option<Vec<u8>> = None;
        for k in by_email.iter().keys() {
            let k = k?;
            let Some(lk) = lookup_key_of(&k) else { continue };
            if last.as_deref() == Some(lk) {
                continue;
            }
            let h = sha256(lk);
            if !self.tree.contains_key(h)? {
                self.tree.insert(h, lk)?;
            }
            last = Some(lk.to_vec());
        }
        Ok(())
    }

    /// Writes the queued events into the tree.
    fn apply_queue(&self) -> Result<(), DirectoryError> {
        let _guard = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let keys = std::mem::take(&mut *self.feed.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for k in keys {
            if let Some(lk) = lookup_key_of(&k) {
                self.tree.insert(sha256(lk), lk)?;
            }
        }
        Ok(())
    }

    fn get_now(&self, hash: &[u8; 32]) -> Result<Option<EmailAddress>, DirectoryError> {
        let Some(v) = self.tree.get(hash)? else { return Ok(None) };
        let text = std::str::from_utf8(&v)
            .map_err(|_| crate::Error::Corrupt("hashed-address index holds a non-UTF-8 address".into()))?;
        let email = text
            .parse::<EmailAddress>()
            .map_err(|e| crate::Error::Corrupt(format!("hashed-address index: {e}")))?;
        Ok(Some(email))
    }

    /// The address whose lookup key hashes to `hash`, if any certificate was ever stored for it.
    pub(crate) fn get(&self, hash: &[u8; 32]) -> Result<Option<EmailAddress>, DirectoryError> {
        if let Some(e) = self.get_now(hash)? {
            return Ok(Some(e));
        }
        // A miss: take in what the subscription holds, then look again.
        let _ = self.feed.drain();
        self.apply_queue()?;
        self.get_now(hash)
    }

    /// Number of addresses indexed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tree.len()
    }
}
