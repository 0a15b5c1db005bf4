//! The replay cache: remembers each accepted nonce until its timestamp leaves the skew window,
//! never holds more than its capacity, and fails closed when full (contract section 5).
//!
//! Memory: an entry is a 64-bit keyed hash of the nonce (SipHash-1-3 with per-process random
//! keys, so clients cannot aim collisions) and a 64-bit expiry, 16 bytes plus the hash table's
//! control byte and slack. A false "replayed" needs two distinct live nonces with the same
//! 64-bit hash: about `entries / 2^64` per request, one in ten trillion at a million entries.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::keyring::Slot;
use crate::verify::Verified;

/// Why the cache refused a verified request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The nonce was already accepted and has not expired.
    #[error("nonce already accepted within its window")]
    Replayed,
    /// The cache holds its capacity of live nonces; failing closed.
    #[error("replay cache full")]
    Full,
}

/// Proof that a request verified and its nonce was fresh: the only way to forward a request
/// as verified. Built only by [`NonceCache::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    slot: Slot,
}

impl Admitted {
    /// The secret that verified.
    pub fn slot(&self) -> Slot {
        self.slot
    }
}

/// Bounded, expiring set of accepted nonces.
#[derive(Debug)]
pub struct NonceCache {
    table: Mutex<Table>,
    len: AtomicUsize,
    capacity: usize,
    window: u64,
    nonce_hasher: RandomState,
}

#[derive(Debug)]
struct Table {
    /// Keyed nonce hash -> Unix second after which the nonce may be forgotten.
    expiries: HashMap<u64, u64, BuildHasherDefault<PreHashed>>,
    /// When the next sweep of expired entries is due (Unix seconds).
    next_sweep: u64,
}

impl NonceCache {
    /// A cache holding at most `capacity` nonces, each kept for `window` seconds past its
    /// timestamp (the clock-skew window).
    pub fn new(capacity: usize, window: u64) -> Self {
        NonceCache {
            table: Mutex::new(Table {
                expiries: HashMap::default(),
                next_sweep: 0,
            }),
            len: AtomicUsize::new(0),
            capacity,
            window,
            nonce_hasher: RandomState::new(),
        }
    }

    /// Record a verified request's nonce, or refuse it as replayed or because the cache is
    /// full. `now` is Unix seconds.
    pub fn admit(&self, verified: Verified<'_>, now: u64) -> Result<Admitted, ReplayError> {
        let key = self.nonce_hasher.hash_one(verified.nonce());
        let expiry = verified.timestamp().saturating_add(self.window);
        // A poisoned lock means a panic mid-update of a plain map of integers; the map is still
        // a valid map, so keep serving rather than fail every request from then on.
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if now >= table.next_sweep {
            table.sweep(now);
            table.next_sweep = now.saturating_add((self.window / 2).max(1));
        }
        if table.expiries.len() >= self.capacity && !table.expiries.contains_key(&key) {
            table.sweep(now);
        }
        let full = table.expiries.len() >= self.capacity;
        let result = match table.expiries.entry(key) {
            Entry::Occupied(live) if *live.get() >= now => Err(ReplayError::Replayed),
            Entry::Occupied(mut expired) => {
                expired.insert(expiry);
                Ok(())
            }
            Entry::Vacant(_) if full => Err(ReplayError::Full),
            Entry::Vacant(vacant) => {
                vacant.insert(expiry);
                Ok(())
            }
        };
        self.len.store(table.expiries.len(), Ordering::Relaxed);
        result.map(|()| Admitted {
            slot: verified.slot(),
        })
    }

    /// Nonces currently held (for the `sig_gate_nonce_cache_entries` gauge).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Table {
    /// Forget every nonce whose timestamp has left the window.
    fn sweep(&mut self, now: u64) {
        self.expiries.retain(|_, expiry| *expiry >= now);
    }
}

/// Hasher for keys that are already keyed SipHash outputs: passes the `u64` through.
#[derive(Debug, Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in so it still works.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::keyring::{Key, Keyring, Secret};
    use crate::protocol;
    use crate::sign::{Request, Signer};
    use crate::verify::{self, RequestLine};

    const SECRET: &str = "replay-test-secret-0123456789abcdefghij";
    const WINDOW: u64 = 300;
    const T0: u64 = 1_764_000_000;

    fn keyring() -> Keyring {
        Keyring::new(
            Key::new(Slot::Current, "k".into(), &Secret::new(SECRET)),
            None,
            false,
        )
    }

    fn headers(nonce: &str, timestamp: u64) -> HeaderMap {
        let signer = Signer::new(
            Key::new(Slot::Current, "k".into(), &Secret::new(SECRET)),
            None,
        );
        let request = Request {
            method: "GET",
            target: "/",
            body: b"",
            timestamp,
            nonce,
        };
        crate::sign::header_map(&signer.sign(&request))
    }

    /// Verify a fresh request with `nonce` at `timestamp` and offer it to the cache at `now`.
    fn admit(
        cache: &NonceCache,
        nonce: &str,
        timestamp: u64,
        now: u64,
    ) -> Result<Slot, ReplayError> {
        let keyring = keyring();
        let headers = headers(nonce, timestamp);
        let line = RequestLine {
            method: "GET",
            path: "/",
            query: "",
        };
        let verified = verify::check_headers(&headers, &keyring, WINDOW, now)
            .and_then(|p| p.verify(line, &protocol::body_digest(b"")))
            .expect("a freshly signed request verifies");
        cache.admit(verified, now).map(|a| a.slot())
    }

    fn nonce(n: usize) -> String {
        format!("nonce-{n:016}")
    }

    #[test]
    fn a_nonce_is_accepted_once_within_its_window() {
        let cache = NonceCache::new(10, WINDOW);
        assert_eq!(admit(&cache, &nonce(1), T0, T0), Ok(Slot::Current));
        assert_eq!(
            admit(&cache, &nonce(1), T0, T0 + 1),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            admit(&cache, &nonce(1), T0, T0 + WINDOW),
            Err(ReplayError::Replayed)
        );
        assert_eq!(admit(&cache, &nonce(2), T0, T0 + 1), Ok(Slot::Current));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn an_expired_nonce_may_be_used_again_with_a_fresh_timestamp() {
        let cache = NonceCache::new(10, WINDOW);
        assert!(admit(&cache, &nonce(1), T0, T0).is_ok());
        let later = T0 + WINDOW + 1;
        assert!(admit(&cache, &nonce(1), later, later).is_ok());
    }

    #[test]
    fn a_full_cache_fails_closed_until_entries_expire() {
        let cache = NonceCache::new(3, WINDOW);
        for n in 0..3 {
            assert!(admit(&cache, &nonce(n), T0, T0).is_ok());
        }
        assert_eq!(admit(&cache, &nonce(3), T0, T0 + 1), Err(ReplayError::Full));
        assert_eq!(cache.len(), 3, "never holds more than its capacity");
        // A replay of a held nonce is still reported as a replay, not as a full cache.
        assert_eq!(
            admit(&cache, &nonce(0), T0, T0 + 1),
            Err(ReplayError::Replayed)
        );
        // Once the held nonces leave the window, room frees up.
        let later = T0 + WINDOW + 1;
        assert!(admit(&cache, &nonce(3), later, later).is_ok());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn periodic_sweeps_forget_expired_nonces() {
        let cache = NonceCache::new(100, WINDOW);
        for n in 0..50 {
            assert!(admit(&cache, &nonce(n), T0, T0).is_ok());
        }
        let later = T0 + 2 * WINDOW;
        assert!(admit(&cache, &nonce(999), later, later).is_ok());
        assert_eq!(cache.len(), 1);
    }
}
