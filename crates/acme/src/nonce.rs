//! Replay nonces (RFC 8555 §6.5): 128 random bits, each accepted once, for at most an hour; the
//! newest [`MAX_NONCES`] are remembered. Kept in memory: a nonce is redeemed at the process that
//! issued it (behind a load balancer, with session affinity per client), and a restart only makes
//! clients retry on `badNonce`, as RFC 8555 has them do.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

/// How many unredeemed nonces are remembered.
pub const MAX_NONCES: usize = 200_000;
/// How long a nonce is good.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(3600);

/// Nonces outstanding: when each was issued, and their order of issue (oldest first).
#[derive(Default)]
struct Outstanding {
    issued: HashMap<[u8; 16], Instant>,
    order: VecDeque<[u8; 16]>,
}

/// The nonces issued and not yet redeemed.
pub struct Nonces {
    inner: Mutex<Outstanding>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").finish_non_exhaustive()
    }
}

impl Default for Nonces {
    fn default() -> Self {
        Nonces { inner: Mutex::default(), rng: ring::rand::SystemRandom::new() }
    }
}

impl Nonces {
    /// A fresh nonce.
    pub fn issue(&self) -> String {
        let mut b = [0u8; 16];
        // A failing system random source leaves the nonce unusable (all zero, never issued).
        if self.rng.fill(&mut b).is_err() {
            return crate::jws::b64e(&[0u8; 16]);
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while g.order.len() >= MAX_NONCES {
            if let Some(old) = g.order.pop_front() {
                g.issued.remove(&old);
            }
        }
        g.issued.insert(b, Instant::now());
        g.order.push_back(b);
        crate::jws::b64e(&b)
    }

    /// Redeems a nonce: `true` once for each issued, unexpired nonce.
    pub fn redeem(&self, nonce: &str) -> bool {
        let Ok(bytes) = crate::jws::b64d(nonce, "nonce") else { return false };
        let Ok(key) = <[u8; 16]>::try_from(bytes.as_slice()) else { return false };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match g.issued.remove(&key) {
            Some(at) => at.elapsed() < NONCE_LIFETIME,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_redeemed_once() {
        let n = Nonces::default();
        let a = n.issue();
        assert!(n.redeem(&a));
        assert!(!n.redeem(&a));
        assert!(!n.redeem("AAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!n.redeem("garbage!"));
    }
}
