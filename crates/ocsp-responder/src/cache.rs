//! The cache of signed responses: by serial, then by the exact CertID a client sent (SHA-1 and
//! SHA-256 CertIDs of one certificate get different responses).
//!
//! It holds signed bytes and the status they state, never a status of its own: the responder
//! compares that status with cerdb's on every hit.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cerdb::Serial;
use chrono::{DateTime, Duration, Utc};

use crate::responder::SingleStatus;

/// One signed single-certificate response without a nonce.
#[derive(Debug, Clone)]
pub(crate) struct CachedResponse {
    /// DER of the CertID it answers.
    pub(crate) cert_id_der: Vec<u8>,
    /// The status it states.
    pub(crate) status: SingleStatus,
    /// Its thisUpdate (= producedAt).
    pub(crate) this_update: DateTime<Utc>,
    /// Its nextUpdate.
    pub(crate) next_update: DateTime<Utc>,
    /// The `OCSPResponse` DER.
    pub(crate) der: Arc<Vec<u8>>,
    /// Which signer of the responder signed it ([`crate::OcspResponder::replace_signer`]
    /// counts them): a response of an earlier signer is not served.
    pub(crate) signer_generation: u64,
}

impl CachedResponse {
    /// Whether it may still be served at `now` as far as time goes: not dated after `now`, and
    /// `nextUpdate` further away than `margin`.
    pub(crate) fn fresh_at(&self, now: DateTime<Utc>, margin: Duration) -> bool {
        self.this_update <= now && now < self.next_update - margin
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_serial: HashMap<Serial, Vec<CachedResponse>>,
    len: usize,
}

/// Signed responses by serial.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    inner: RwLock<Inner>,
    max_entries: usize,
}

impl ResponseCache {
    pub(crate) fn new(max_entries: usize) -> Self {
        ResponseCache { inner: RwLock::new(Inner::default()), max_entries }
    }

    /// The cached response for this serial and CertID, whatever its age.
    pub(crate) fn get(&self, serial: &Serial, cert_id_der: &[u8]) -> Option<CachedResponse> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.by_serial.get(serial)?.iter().find(|e| e.cert_id_der == cert_id_der).cloned()
    }

    /// Stores `entry`, replacing the one for the same CertID. When the cache is full, entries
    /// that are no longer fresh at `now` are dropped first; if it is still full, `entry` is not
    /// stored (the responder then signs per request, which is slower but correct).
    pub(crate) fn insert(&self, serial: Serial, entry: CachedResponse, now: DateTime<Utc>, margin: Duration) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let replaces = inner
            .by_serial
            .get(&serial)
            .is_some_and(|v| v.iter().any(|e| e.cert_id_der == entry.cert_id_der));
        if !replaces && inner.len >= self.max_entries {
            let mut dropped = 0;
            inner.by_serial.retain(|_, v| {
                let before = v.len();
                v.retain(|e| e.fresh_at(now, margin));
                dropped += before - v.len();
                !v.is_empty()
            });
            inner.len -= dropped;
            if inner.len >= self.max_entries {
                tracing::debug!(entries = inner.len, "OCSP response cache full");
                return;
            }
        }
        let list = inner.by_serial.entry(serial).or_default();
        list.retain(|e| e.cert_id_der != entry.cert_id_der);
        list.push(entry);
        if !replaces {
            inner.len += 1;
        }
    }

    /// Forgets every response for `serial`.
    pub(crate) fn invalidate(&self, serial: &Serial) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = inner.by_serial.remove(serial) {
            inner.len -= v.len();
        }
    }

    /// Forgets every response.
    pub(crate) fn clear(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.by_serial.clear();
        inner.len = 0;
    }

    /// Number of cached responses.
    pub(crate) fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, this_update: DateTime<Utc>) -> CachedResponse {
        CachedResponse {
            cert_id_der: vec![id],
            status: SingleStatus::Good,
            this_update,
            next_update: this_update + Duration::hours(24),
            der: Arc::new(vec![id, id]),
            signer_generation: 0,
        }
    }

    fn serial(b: u8) -> Serial {
        Serial::from_bytes(&[b]).expect("serial")
    }

    #[test]
    fn replace_invalidate_and_bound() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let m = Duration::hours(12);
        let c = ResponseCache::new(2);
        c.insert(serial(1), entry(1, t0), t0, m);
        c.insert(serial(1), entry(1, t0), t0, m);
        c.insert(serial(1), entry(2, t0), t0, m);
        assert_eq!(c.len(), 2);
        // Full, and both entries fresh: a third is not stored.
        c.insert(serial(2), entry(3, t0), t0, m);
        assert_eq!(c.len(), 2);
        assert!(c.get(&serial(2), &[3]).is_none());
        // Later, the old ones are stale and make room.
        let later = t0 + Duration::hours(13);
        c.insert(serial(2), entry(3, later), later, m);
        assert_eq!(c.len(), 1);
        assert!(c.get(&serial(2), &[3]).is_some());
        c.invalidate(&serial(2));
        assert_eq!(c.len(), 0);
        assert!(c.get(&serial(2), &[3]).is_none());
    }

    #[test]
    fn freshness() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let e = entry(1, t0);
        let m = Duration::hours(12);
        assert!(e.fresh_at(t0, m));
        assert!(e.fresh_at(t0 + Duration::hours(11), m));
        assert!(!e.fresh_at(t0 + Duration::hours(12), m));
        assert!(!e.fresh_at(t0 - Duration::seconds(1), m), "dated in the future");
    }
}
