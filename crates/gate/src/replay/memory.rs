//! The in-memory replay store, [`NonceCache`]: this process's bounded, expiring set of the nonces
//! it accepted, split into shards that each hold a share of the capacity behind a lock of their
//! own. What one shard's table does (probing, growth, sweeps) is `replay/table.rs`.
//!
//! Hash: a nonce is kept as a 64-bit keyed hash (SipHash-1-3 with per-process random keys, so
//! clients cannot aim collisions). A false "replayed" needs two distinct live nonces with the same
//! hash: about `entries / 2^64` per request, one in ten trillion at a million entries.
//!
//! Shards: the top bits of the hash pick one of up to 16 shards, each a table behind a lock of its
//! own that grows and sweeps by itself; the probe starts from the low bits, so the two stay
//! independent. Threads of a multi-threaded runtime admit into different shards at once, and a
//! growth or sweep step stalls only the admissions into its own shard. Why 16: a handful of worker
//! threads seldom meet on a lock, the 16 smallest tables take 1 KiB together, and each shard's
//! share of the default capacity is large enough that uneven shards cost little (below); 32 would
//! start twice the tables and refuse earlier (about 98.9% instead of 99.3%). Caches under 2^19
//! nonces get fewer shards, of at least 2^15 nonces each (one shard under 2^16): such a cache can
//! only serve capacity / window requests a second, too few for its lock to matter, and smaller
//! shares fill less evenly.
//!
//! Capacity: each shard holds its own share (capacity / shards, the remainder spread one each over
//! the first shards), so the shards together never hold more than the capacity, and a full shard
//! fails closed by itself, sharing nothing with the others. The price: the keyed hash spreads
//! nonces binomially (about 240 entries of deviation a shard at 1,000,000), so the fullest shard
//! fills first and refuses the new nonces it would hold while the cache is still short of its
//! capacity: the first refusal comes at about 99.3% of 1,000,000 (simulated over 60 fills: 98.7%
//! at worst; measured 99.2-99.3%), and at about 99% for 16 shards of the smallest share. A global
//! count would refuse at exactly the capacity, but a cache full of nonces expired in other shards
//! would then have to lock and sweep those shards from inside an admission, or refuse while it
//! has room.
//!
//! Memory: each table doubles at 3/4 full (up to 7/8 while waiting for its turn), so an entry
//! costs 18 to 43 bytes: 33.6 at the default capacity of 1,000,000 (`bench/loadgen`'s
//! `replay-mem`, 3 KiB of shard headers included). One shard's old and new tables are alive at
//! once, and the old one is given back 64 KiB at a time as it moves: the heap peaks at 33.0 MiB
//! while the default cache fills (a peak-tracking copy of `replay-mem`). Only growth allocates
//! (doubling, so a handful of times per shard; giving back shrinks in place).

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::table::{STEPS, Shared, Steps, Table};
use super::{Admitted, ReplayError};
use crate::verify::Verified;

/// A nonce [`NonceCache::prefetch`] has hashed (and whose slot it started loading), for
/// [`NonceCache::admit_prefetched`].
pub struct HashedNonce<'a> {
    cache: &'a NonceCache,
    nonce: &'a str,
    key: u64,
}

impl fmt::Debug for HashedNonce<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the cache (its tables), nor the hash (made with the cache's secret keys).
        f.debug_struct("HashedNonce")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// Bounded, expiring set of accepted nonces.
#[derive(Debug)]
pub struct NonceCache {
    /// A power-of-two number of shards.
    pub(super) shards: Box<[Shard]>,
    capacity: usize,
    window: u64,
    nonce_hasher: RandomState,
    /// What the shards' tables share.
    pub(super) shared: Shared,
}

impl NonceCache {
    /// A cache holding at most `capacity` nonces, each kept for `window` seconds past its
    /// timestamp (the clock-skew window).
    pub fn new(capacity: usize, window: u64) -> Self {
        Self::with_shards(capacity, window, shard_count(capacity))
    }

    /// [`NonceCache::new`] with `shards` shards (a power of two), so tests can shard small
    /// caches.
    pub(super) fn with_shards(capacity: usize, window: u64, shards: usize) -> Self {
        Self::with_steps(capacity, window, shards, STEPS)
    }

    /// [`NonceCache::with_shards`] taking `steps` per admission, so tests can interleave
    /// growths and sweep passes with admissions at small table sizes.
    pub(super) fn with_steps(capacity: usize, window: u64, shards: usize, steps: Steps) -> Self {
        assert!(
            steps.migrate >= 2 && steps.sweep >= 1,
            "a move of at least 2 slots per admission keeps a growing table under 3/4 load"
        );
        let period = sweep_period(window);
        let shards = (0..shards)
            .map(|i| {
                let share = capacity / shards + usize::from(i < capacity % shards);
                // Shard i's sweep periods are shifted by i/shards of a period from shard 0's.
                let offset = period * i as u64 / shards as u64;
                Shard {
                    table: Mutex::new(Table::new(share, offset)),
                    entries: AtomicUsize::new(0),
                }
            })
            .collect();
        NonceCache {
            shards,
            capacity,
            window,
            nonce_hasher: RandomState::new(),
            shared: Shared {
                period,
                steps,
                moving: AtomicBool::new(false),
            },
        }
    }

    /// Record a verified request's nonce, or refuse it as replayed or because the cache is
    /// full. `now` is Unix seconds, read once the body is in.
    ///
    /// A nonce is let go of only once its timestamp has left the window by the clock of some
    /// admission into its shard, and the shard remembers the latest expiry it let go of: a
    /// request expiring no later than that is [`ReplayError::Expired`], whatever clock it
    /// brings. So a replay is refused even when its clock was read before the sweep that
    /// dropped the original's nonce, by a thread that took the shard's lock later, or after
    /// the wall clock stepped back.
    pub fn admit(&self, verified: Verified<'_>, now: u64) -> Result<Admitted, ReplayError> {
        self.admit_key(self.key(verified.nonce()), verified, now)
    }

    /// [`NonceCache::admit`] for a request whose nonce was [`NonceCache::prefetch`]ed: the
    /// nonce's hash comes from the prefetch when that was of this cache and of the very same
    /// nonce (the same borrowed bytes, which cannot have changed while both borrows live), and
    /// is computed again otherwise, so a mismatched prefetch costs a hash, never a wrong check.
    pub fn admit_prefetched(
        &self,
        verified: Verified<'_>,
        prefetched: &HashedNonce<'_>,
        now: u64,
    ) -> Result<Admitted, ReplayError> {
        // Wide pointers: the nonce's address and its length.
        let same = std::ptr::eq(prefetched.cache, self)
            && std::ptr::eq(prefetched.nonce, verified.nonce());
        let key = if same {
            prefetched.key
        } else {
            self.key(verified.nonce())
        };
        self.admit_key(key, verified, now)
    }

    /// Admit `verified`, whose nonce hashes to `key`.
    fn admit_key(
        &self,
        key: u64,
        verified: Verified<'_>,
        now: u64,
    ) -> Result<Admitted, ReplayError> {
        let expiry = verified.timestamp().saturating_add(self.window);
        // A poisoned lock means a panic mid-update of plain integers; the table is still
        // consistent, so keep serving rather than fail every request from then on.
        let shard = &self.shards[self.shard_index(key)];
        let mut table = shard
            .table
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let result = table.admit(key, expiry, now, &self.shared);
        // A plain store under the lock, where a shared total would take a locked instruction
        // per admission (and a cache line bouncing between the worker threads).
        shard.entries.store(table.len, Ordering::Relaxed);
        result.map(|()| Admitted::new(&verified))
    }

    /// Start loading the slot where [`NonceCache::admit`] will look for `nonce`, so that the
    /// memory access overlaps the work between the header checks and the admission (reading
    /// and hashing the body, the MAC) instead of stalling the insert: at the default capacity
    /// the table is 16-32 MiB and its slots miss the CPU caches.
    ///
    /// A hint with no effect on what the cache holds or answers: the nonce is not yet
    /// verified, so nothing is recorded, and a shard locked by another thread is not waited
    /// for. The slot's address is read under the shard's lock; the prefetch itself is not
    /// ordered with the lock's release, so the unlock does not wait for the load to complete
    /// as a plain read's would. The hash it takes is kept for
    /// [`NonceCache::admit_prefetched`].
    pub fn prefetch<'a>(&'a self, nonce: &'a str) -> HashedNonce<'a> {
        let key = self.key(nonce);
        if let Ok(table) = self.shards[self.shard_index(key)].table.try_lock() {
            table.prefetch(key);
        }
        HashedNonce {
            cache: self,
            nonce,
            key,
        }
    }

    /// Nonces currently held, expired ones not yet swept included (for the
    /// `sig_gate_nonce_cache_entries` gauge, read when scraped): the sum of the shards' counts,
    /// each as its last admission left it.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.entries.load(Ordering::Relaxed))
            .sum()
    }

    /// True when no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The nonce's keyed hash. Zero marks an empty slot, so no key may be zero; losing one
    /// value of 2^64 is free.
    pub(super) fn key(&self, nonce: &str) -> u64 {
        self.nonce_hasher.hash_one(nonce).max(1)
    }

    /// The shard holding `key`: its top bits (multiply-high maps them onto the shards).
    pub(super) fn shard_index(&self, key: u64) -> usize {
        ((u128::from(key) * self.shards.len() as u128) >> 64) as usize
    }
}

/// Most shards a cache has (see the module documentation for why 16).
const SHARDS: usize = 16;

/// Fewest nonces a shard is given room for, so that smaller caches get fewer shards.
const MIN_SHARD_CAPACITY: usize = 1 << 15;

/// The power of two of shards for a cache of `capacity`.
fn shard_count(capacity: usize) -> usize {
    let shards = (capacity / MIN_SHARD_CAPACITY).clamp(1, SHARDS);
    1 << shards.ilog2()
}

/// Seconds between a shard's sweeps of expired entries: half the window.
fn sweep_period(window: u64) -> u64 {
    (window / 2).max(1)
}

/// One shard's table behind its own lock, aligned to a cache line so that threads locking
/// neighbouring shards do not fight over one line.
#[derive(Debug)]
#[repr(align(64))]
pub(super) struct Shard {
    pub(super) table: Mutex<Table>,
    /// The table's `len`, stored after each admission, so that [`NonceCache::len`] need not
    /// take the locks.
    entries: AtomicUsize,
}
