//! Token buckets in memory, one per client: per API key, and per IP address for anonymous
//! clients (IPv4 address, or IPv6 /64 — one host usually holds a whole /64).
//!
//! The rule, with `rate` lookups per second and a capacity of `burst`:
//!
//! 1. the bucket refills at `rate` tokens per second up to `burst` (a new bucket starts full);
//! 2. a request for `cost` lookups (1, or the number of addresses of a bulk lookup) is admitted
//!    when the bucket holds at least `min(cost, burst)` tokens, and then takes `cost` tokens —
//!    possibly going below zero, so a bulk lookup larger than the burst is possible but is paid
//!    for by waiting afterwards: over any long period a client gets at most `rate` lookups per
//!    second plus one burst;
//! 3. otherwise it is refused with the time until it would be admitted (`Retry-After`, whole
//!    seconds, at least 1).
//!
//! Buckets live in memory only: a restart forgives everyone, and replicas behind a load
//! balancer each count separately (so a client gets up to replicas × rate). Idle full buckets are
//! dropped when a shard grows past [`SHARD_SOFT_LIMIT`] entries, which bounds memory under a
//! flood of distinct source addresses.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// A shard sweeps out idle buckets when it holds more than this many.
pub const SHARD_SOFT_LIMIT: usize = 8_192;

/// Who is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// A client application, by the SHA-256 of its key.
    Key([u8; 32]),
    /// An anonymous client, by IP address (IPv6 truncated to its /64).
    Ip(IpAddr),
}

impl ClientId {
    /// The anonymous client at `ip`.
    pub fn anonymous(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => ClientId::Ip(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientId::Ip(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientId::Ip(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Admitted,
    /// Over quota; retry after this long.
    Limited {
        /// Until the bucket holds enough.
        retry_after: Duration,
    },
}

impl Admission {
    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(self) -> Option<u64> {
        match self {
            Admission::Admitted => None,
            Admission::Limited { retry_after } => Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn refilled(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + dt * self.rate).min(self.burst)
    }
}

/// The buckets of every client.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<ClientId, Bucket>>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new()
    }
}

impl RateLimiter {
    /// No client has spent anything.
    pub fn new() -> Self {
        RateLimiter { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, who: &ClientId) -> &Mutex<HashMap<ClientId, Bucket>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        who.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Charges `cost` lookups to `who`, whose quota is `rate` per second with capacity `burst`,
    /// at the instant `now` (see the module documentation for the rule). A changed quota applies
    /// from this request on.
    pub fn admit(&self, who: ClientId, rate: f64, burst: f64, cost: f64, now: Instant) -> Admission {
        let mut map = self.shard(&who).lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > SHARD_SOFT_LIMIT && !map.contains_key(&who) {
            map.retain(|_, b| b.refilled(now) < b.burst);
        }
        let b = map.entry(who).or_insert(Bucket { tokens: burst, last: now, rate, burst });
        b.rate = rate;
        b.burst = burst;
        let tokens = b.refilled(now);
        b.tokens = tokens;
        b.last = now;
        let need = cost.min(burst);
        if tokens >= need {
            b.tokens = tokens - cost;
            Admission::Admitted
        } else {
            Admission::Limited { retry_after: Duration::from_secs_f64((need - tokens) / rate) }
        }
    }

    /// Number of buckets held (for tests and monitoring).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> ClientId {
        ClientId::anonymous(s.parse().expect("ip"))
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let rl = RateLimiter::new();
        let t0 = Instant::now();
        let who = ip("192.0.2.1");
        for i in 0..5 {
            assert_eq!(rl.admit(who, 5.0, 5.0, 1.0, t0), Admission::Admitted, "request {i}");
        }
        let refused = rl.admit(who, 5.0, 5.0, 1.0, t0);
        assert_eq!(refused.retry_after_secs(), Some(1), "{refused:?}");
        match refused {
            Admission::Limited { retry_after } => {
                assert!((retry_after.as_secs_f64() - 0.2).abs() < 1e-6, "{retry_after:?}")
            }
            Admission::Admitted => unreachable!(),
        }
        // 200 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(rl.admit(who, 5.0, 5.0, 1.0, t1), Admission::Admitted);
        assert!(matches!(rl.admit(who, 5.0, 5.0, 1.0, t1), Admission::Limited { .. }));
        // Another client is not affected.
        assert_eq!(rl.admit(ip("192.0.2.2"), 5.0, 5.0, 1.0, t1), Admission::Admitted);
    }

    #[test]
    fn steady_rate_under_quota_is_never_refused() {
        let rl = RateLimiter::new();
        let t0 = Instant::now();
        let who = ClientId::Key([7; 32]);
        for i in 0..1_000u64 {
            // 10 per second against a quota of 20 per second, burst 1.
            let now = t0 + Duration::from_millis(100 * i);
            assert_eq!(rl.admit(who, 20.0, 1.0, 1.0, now), Admission::Admitted, "request {i}");
        }
    }

    #[test]
    fn a_bulk_larger_than_the_burst_is_paid_for_afterwards() {
        let rl = RateLimiter::new();
        let t0 = Instant::now();
        let who = ClientId::Key([1; 32]);
        assert_eq!(rl.admit(who, 100.0, 100.0, 1_000.0, t0), Admission::Admitted);
        // 900 in debt: 1,000 tokens (10 s) until one more lookup.
        let next = rl.admit(who, 100.0, 100.0, 1.0, t0);
        assert_eq!(next.retry_after_secs(), Some(10), "{next:?}");
        assert!(matches!(
            rl.admit(who, 100.0, 100.0, 1.0, t0 + Duration::from_millis(9_000)),
            Admission::Limited { .. }
        ));
        assert_eq!(rl.admit(who, 100.0, 100.0, 1.0, t0 + Duration::from_millis(9_011)), Admission::Admitted);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_slash_64_and_mapped_v4_is_v4() {
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.7"), ip("192.0.2.7"));
    }

    #[test]
    fn idle_buckets_are_swept_when_a_shard_is_large() {
        let rl = RateLimiter::new();
        let t0 = Instant::now();
        for i in 0..(SHARD_SOFT_LIMIT as u32 * SHARDS as u32 + 5_000) {
            let who = ClientId::Ip(IpAddr::V4(i.into()));
            rl.admit(who, 1.0, 2.0, 1.0, t0);
        }
        // An hour later every bucket is full again, so the next newcomers sweep them out.
        let later = t0 + Duration::from_secs(3_600);
        for i in 0..(SHARDS as u32 * 50) {
            rl.admit(ClientId::Ip(IpAddr::V4((u32::MAX - i).into())), 1.0, 2.0, 1.0, later);
        }
        assert!(rl.len() < SHARD_SOFT_LIMIT * SHARDS, "{} buckets kept", rl.len());
    }
}
