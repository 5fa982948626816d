//! Configuration and the injected clock.

use chrono::Duration;

use crate::Error;

/// The source of "now" for the HTTP scope (the workspace's clock, from cerdb). Core functions
/// take `now` as an argument instead.
pub use cerdb::{Clock, SystemClock};

/// How responses are dated, cached and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspConfig {
    /// `nextUpdate` is `thisUpdate` plus this. Default 24 hours.
    pub next_update: Duration,
    /// A cached or pre-signed response is replaced once `nextUpdate` is nearer than this.
    /// Default: half of [`OcspConfig::next_update`], as the S/MIME Baseline Requirements ask
    /// (update at least half a validity period before `nextUpdate`).
    pub refresh_margin: Duration,
    /// The largest request (DER octets) [`crate::OcspResponder::respond`] will parse, and the
    /// largest POST body the HTTP scope reads (larger ones get HTTP 413).
    /// Default [`crate::MAX_REQUEST_BYTES`] (10,000).
    pub max_request_bytes: usize,
    /// The most signed responses kept in the cache; past it new responses are not cached until
    /// stale entries are dropped. Default 100 000.
    pub max_cache_entries: usize,
}

impl OcspConfig {
    /// A configuration with the given validity period and the matching default refresh margin
    /// (half of it).
    pub fn with_next_update(next_update: Duration) -> Self {
        OcspConfig { next_update, refresh_margin: next_update / 2, ..OcspConfig::default() }
    }

    /// Refuses configurations that cannot produce usable responses.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.next_update <= Duration::zero() {
            return Err(Error::InvalidConfig(format!(
                "next_update must be positive, not {}",
                self.next_update
            )));
        }
        if self.next_update > Duration::days(3650) {
            return Err(Error::InvalidConfig("next_update must be at most 3650 days".into()));
        }
        if self.refresh_margin < Duration::zero() || self.refresh_margin >= self.next_update {
            return Err(Error::InvalidConfig(format!(
                "refresh_margin ({}) must be at least zero and less than next_update ({})",
                self.refresh_margin, self.next_update
            )));
        }
        if self.max_request_bytes == 0 {
            return Err(Error::InvalidConfig("max_request_bytes must be positive".into()));
        }
        Ok(())
    }
}

impl Default for OcspConfig {
    fn default() -> Self {
        OcspConfig {
            next_update: Duration::hours(24),
            refresh_margin: Duration::hours(12),
            max_request_bytes: crate::MAX_REQUEST_BYTES,
            max_cache_entries: 100_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let d = OcspConfig::default();
        assert_eq!(d.next_update, Duration::hours(24));
        assert_eq!(d.refresh_margin, Duration::hours(12));
        d.check().expect("default is valid");
        assert_eq!(OcspConfig::with_next_update(Duration::hours(8)).refresh_margin, Duration::hours(4));
        assert!(OcspConfig::with_next_update(Duration::zero()).check().is_err());
        let bad = OcspConfig { refresh_margin: Duration::hours(24), ..OcspConfig::default() };
        assert!(bad.check().is_err());
        let bad = OcspConfig { max_request_bytes: 0, ..OcspConfig::default() };
        assert!(bad.check().is_err());
    }
}
