//! Failed console logins per client address: a token bucket that only failures spend.
//!
//! Each address holds up to [`ConsoleConfig::max_failed_logins_per_address`] tokens and gets
//! one back every [`ConsoleConfig::address_refill_secs`] seconds. A wrong password, an unknown
//! user or a wrong TOTP code takes a token; while the bucket is empty the address gets `429` on
//! the login form before any password is checked (no Argon2 work for it either). Successful
//! logins cost nothing, so colleagues behind one address are not slowed down by each other's
//! good logins, and a guesser gets one attempt per refill period once the burst is spent.
//!
//! This is what stops guessing from one address. The per-account lockout
//! ([`ConsoleConfig::max_failed_logins`]) stays for guessing spread over many addresses; it
//! refuses new logins to the account for a while but never ends its open sessions, so nobody can
//! throw an administrator out by typing wrong passwords for them.
//!
//! The address is the TCP peer's: headers such as `X-Forwarded-For` are set by the client and
//! are not believed. Buckets live in memory (a restart forgives everyone); full buckets are
//! swept once many addresses are held, which bounds memory under a flood of source addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cerdb::directory::ClientId;

use crate::ConsoleConfig;

/// Addresses held before full buckets are swept.
const SWEEP_ABOVE: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The failed-login buckets of every client address.
#[derive(Debug)]
pub struct LoginThrottle {
    buckets: Mutex<HashMap<ClientId, Bucket>>,
    burst: f64,
    refill: Duration,
}

impl LoginThrottle {
    /// Empty, with the bucket size and refill period of `cfg`.
    pub fn new(cfg: &ConsoleConfig) -> Self {
        LoginThrottle {
            buckets: Mutex::new(HashMap::new()),
            burst: f64::from(cfg.max_failed_logins_per_address),
            refill: Duration::from_secs(cfg.address_refill_secs.max(1)),
        }
    }

    fn level(&self, b: &Bucket, now: Instant) -> f64 {
        let back = now.saturating_duration_since(b.last).as_secs_f64() / self.refill.as_secs_f64();
        (b.tokens + back).min(self.burst)
    }

    /// `None` when `ip` may try to log in; otherwise how long until it may.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.get(&ClientId::anonymous(ip))?;
        let level = self.level(b, now);
        (level < 1.0).then(|| self.refill.mul_f64(1.0 - level))
    }

    /// Takes a token from `ip` for a failed login.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let who = ClientId::anonymous(ip);
        if map.len() > SWEEP_ABOVE && !map.contains_key(&who) {
            map.retain(|_, b| self.level(b, now) < self.burst);
        }
        let level = map.get(&who).map_or(self.burst, |b| self.level(b, now));
        let tokens = (level - 1.0).max(0.0);
        if tokens < 1.0 && level >= 1.0 {
            tracing::warn!(client = %ip, "console: failed logins from this address throttled");
        }
        map.insert(who, Bucket { tokens, last: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(burst: u32, refill: u64) -> LoginThrottle {
        LoginThrottle::new(&ConsoleConfig {
            max_failed_logins_per_address: burst,
            address_refill_secs: refill,
            ..ConsoleConfig::default()
        })
    }

    #[test]
    fn an_address_is_throttled_after_its_burst_of_failures_and_gets_one_attempt_per_refill_period() {
        let t = throttle(3, 60);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.check(ip, t0), None);
            t.record_failure(ip, t0);
        }
        let wait = t.check(ip, t0).expect("throttled");
        assert_eq!(wait, Duration::from_secs(60));
        assert_eq!(t.check(other, t0), None, "another address is not affected");
        // Half a period later: still throttled, for the other half.
        let wait = t.check(ip, t0 + Duration::from_secs(30)).expect("still throttled");
        assert_eq!(wait.as_secs(), 30);
        // One period later: one attempt, and after its failure throttled again.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(t.check(ip, t1), None);
        t.record_failure(ip, t1);
        assert!(t.check(ip, t1).is_some());
        // Long after, the full burst is back.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(t.check(ip, t2), None);
            t.record_failure(ip, t2);
        }
        assert!(t.check(ip, t2).is_some());
    }

    #[test]
    fn an_ipv6_client_counts_as_its_64() {
        let t = throttle(1, 60);
        let now = Instant::now();
        t.record_failure("2001:db8::1".parse().expect("ip"), now);
        assert!(t.check("2001:db8::ffff".parse().expect("ip"), now).is_some());
        assert!(t.check("2001:db8:0:1::1".parse().expect("ip"), now).is_none());
    }
}
