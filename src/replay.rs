//! The replay cache: remembers each accepted nonce until its timestamp leaves the skew window,
//! never holds more than its capacity, and fails closed when full (contract section 5).
//!
//! Memory: an entry is a 64-bit keyed hash of the nonce (SipHash-1-3 with per-process random
//! keys, so clients cannot aim collisions) and a 64-bit expiry, 16 bytes plus the hash table's
//! control byte and slack. A false "replayed" needs two distinct live nonces with the same
//! 64-bit hash: about `entries / 2^64` per request, one in ten trillion at a million entries.

use std::collections::HashMap;
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
        let result = match table.expiries.get_mut(&key) {
            Some(live) if *live >= now => Err(ReplayError::Replayed),
            Some(expired) => {
                *expired = expiry;
                Ok(())
            }
            None => {
                if table.expiries.len() >= self.capacity {
                    table.sweep(now);
                }
                if table.expiries.len() >= self.capacity {
                    Err(ReplayError::Full)
                } else {
                    table.expiries.insert(key, expiry);
                    Ok(())
                }
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
