//! The replay cache: remembers each accepted nonce until its timestamp leaves the skew window,
//! never holds more than its capacity, and fails closed when full (contract section 5).
//!
//! Layout: flat open-addressing tables of 16-byte slots, each a 64-bit keyed hash of the nonce
//! (SipHash-1-3 with per-process random keys, so clients cannot aim collisions) and the Unix
//! second after which it may be forgotten. Linear probing keeps a lookup and its insert in one
//! cache line, which matters once a table outgrows the CPU caches: a general-purpose map keeps
//! its control bytes apart from its entries and pays two memory misses per insert.
//!
//! Shards: the top bits of the hash pick one of up to 16 shards, each a table behind a lock of
//! its own that grows and sweeps by itself; the probe starts from the low bits, so the two stay
//! independent. Growing or sweeping walks a table under its lock and stalls every request
//! waiting for it: one table of a million nonces stalled 20-27 ms growing to 2^21 slots, while
//! a shard of a sixteenth of them stalls 1.8-2.1 ms (the slowest insert in bench/loadgen
//! `replay-mem`). Threads of a multi-threaded runtime also admit into different shards at once.
//! Why 16: it brings the stall down that far, a handful of worker threads seldom meet on a lock,
//! the 16 smallest tables take 1 KiB together, and each shard's share of the default capacity
//! is large enough that uneven shards cost little (below); 32 would halve the stall again but
//! start twice the tables and refuse earlier (about 98.9% instead of 99.3%). Caches under
//! 2^19 nonces get fewer shards, of at least 2^15 nonces each (one shard under 2^16): such a
//! cache can only serve capacity / window requests a second, too few for its stalls or its lock
//! to matter, and smaller shares fill less evenly.
//!
//! Capacity: each shard holds its own share (capacity / shards, the remainder spread one each
//! over the first shards), so the shards together never hold more than the capacity, and a full
//! shard fails closed by itself, sharing nothing with the others but the entry count. The price:
//! the keyed hash spreads nonces binomially (about 240 entries of deviation a shard at
//! 1,000,000), so the fullest shard fills first and refuses the new nonces it would hold while
//! the cache is still short of its capacity: the first refusal comes at about 99.3% of
//! 1,000,000 (simulated over 60 fills: 98.7% at worst; measured 99.2-99.3%), and at about 99%
//! for 16 shards of the smallest share. A global count would refuse at exactly the capacity,
//! but a cache full of nonces expired in other shards would then have to lock and sweep those
//! shards from inside an admission, or refuse while it has room.
//!
//! Memory: each table doubles at 3/4 full, so an entry costs 21 to 43 bytes: 33.6 at the
//! default capacity of 1,000,000 (`replay-mem`, 2 KiB of shard headers included), and a growth
//! holds the old and new tables of one shard only. A false "replayed" needs two distinct live
//! nonces with the same 64-bit hash: about `entries / 2^64` per request, one in ten trillion at
//! a million entries.
//!
//! Expired entries stay in place until a sweep removes them, in place: every half window, the
//! shards in turn, and whenever a shard is full. Only growth allocates (doubling, so a handful
//! of times per shard).

use std::hash::{BuildHasher, RandomState};
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
    /// A power-of-two number of shards.
    shards: Box<[Shard]>,
    /// Entries in all shards together: each shard adds its own changes under its lock.
    len: AtomicUsize,
    capacity: usize,
    window: u64,
    nonce_hasher: RandomState,
}

impl NonceCache {
    /// A cache holding at most `capacity` nonces, each kept for `window` seconds past its
    /// timestamp (the clock-skew window).
    pub fn new(capacity: usize, window: u64) -> Self {
        Self::with_shards(capacity, window, shard_count(capacity))
    }

    /// [`NonceCache::new`] with `shards` shards (a power of two), so tests can shard small
    /// caches.
    fn with_shards(capacity: usize, window: u64, shards: usize) -> Self {
        let period = sweep_period(window);
        let shards = (0..shards)
            .map(|i| {
                let share = capacity / shards + usize::from(i < capacity % shards);
                // Shard i's sweep periods are shifted by i/shards of a period from shard 0's.
                let offset = period * i as u64 / shards as u64;
                Shard {
                    table: Mutex::new(Table::new(share, offset)),
                }
            })
            .collect();
        NonceCache {
            shards,
            len: AtomicUsize::new(0),
            capacity,
            window,
            nonce_hasher: RandomState::new(),
        }
    }

    /// Record a verified request's nonce, or refuse it as replayed or because the cache is
    /// full. `now` is Unix seconds.
    pub fn admit(&self, verified: Verified<'_>, now: u64) -> Result<Admitted, ReplayError> {
        let key = self.key(verified.nonce());
        let expiry = verified.timestamp().saturating_add(self.window);
        // A poisoned lock means a panic mid-update of plain integers; the table is still
        // consistent, so keep serving rather than fail every request from then on.
        let mut table = self.shards[self.shard_index(key)]
            .table
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let held = table.len;
        let result = table.admit(key, expiry, now, sweep_period(self.window));
        // Adjusted under the shard's lock, so no shard's part of the total is ever negative
        // and the total cannot wrap.
        if table.len >= held {
            self.len.fetch_add(table.len - held, Ordering::Relaxed);
        } else {
            self.len.fetch_sub(held - table.len, Ordering::Relaxed);
        }
        result.map(|()| Admitted {
            slot: verified.slot(),
        })
    }

    /// Nonces currently held, expired ones not yet swept included (for the
    /// `sig_gate_nonce_cache_entries` gauge).
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

    /// The nonce's keyed hash. Zero marks an empty slot, so no key may be zero; losing one
    /// value of 2^64 is free.
    fn key(&self, nonce: &str) -> u64 {
        self.nonce_hasher.hash_one(nonce).max(1)
    }

    /// The shard holding `key`: its top bits (multiply-high maps them onto the shards).
    fn shard_index(&self, key: u64) -> usize {
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

/// Smallest table: one cache line, so 16 shards start at 1 KiB together.
const MIN_SLOTS: usize = 4;

/// One shard's table behind its own lock, aligned to a cache line so that threads locking
/// neighbouring shards do not fight over one line.
#[derive(Debug)]
#[repr(align(64))]
struct Shard {
    table: Mutex<Table>,
}

/// One table slot: a keyed nonce hash (0 = empty) and its expiry in Unix seconds.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct Entry {
    key: u64,
    expiry: u64,
}

#[derive(Debug)]
struct Table {
    /// A power-of-two number of slots.
    slots: Vec<Entry>,
    /// Occupied slots, expired or not.
    len: usize,
    /// Most entries this shard holds: its share of the cache's capacity.
    capacity: usize,
    /// No entry expires before this (Unix seconds; `u64::MAX` when empty). A lower bound:
    /// updating an entry can leave it too low, which only costs one needless sweep.
    earliest_expiry: u64,
    /// Sweeps so far, so tests can see when the table was walked.
    #[cfg(test)]
    sweeps: usize,
    /// Added to the clock before counting sweep periods, so that the shards' periods start at
    /// different seconds and their sweeps take turns instead of coming all at once.
    sweep_offset: u64,
    /// The sweep period (counted on the offset clock) in which this table was last swept.
    swept_turn: u64,
}

/// Where a probe for a key ended.
enum Probe {
    /// The key sits in this slot.
    Found(usize),
    /// The key is absent; this empty slot is where it would go.
    Empty(usize),
}

impl Table {
    fn new(capacity: usize, sweep_offset: u64) -> Table {
        Table {
            slots: vec![Entry::default(); MIN_SLOTS],
            len: 0,
            capacity,
            earliest_expiry: u64::MAX,
            #[cfg(test)]
            sweeps: 0,
            sweep_offset,
            swept_turn: 0,
        }
    }

    /// Record `key` until `expiry`, or refuse it as replayed or because the shard is full.
    fn admit(&mut self, key: u64, expiry: u64, now: u64, period: u64) -> Result<(), ReplayError> {
        let turn = now.saturating_add(self.sweep_offset) / period;
        if turn != self.swept_turn {
            self.sweep(now);
            self.swept_turn = turn;
        }
        match self.find(key) {
            Probe::Found(i) if self.slots[i].expiry >= now => Err(ReplayError::Replayed),
            Probe::Found(i) => {
                self.slots[i].expiry = expiry;
                Ok(())
            }
            Probe::Empty(_) => {
                // Sweep a full table only when some entry can have expired: a full shard of
                // live nonces then refuses in O(1) instead of walking the table per request.
                if self.len >= self.capacity && self.earliest_expiry < now {
                    self.sweep(now);
                }
                if self.len >= self.capacity {
                    Err(ReplayError::Full)
                } else {
                    self.insert(key, expiry, now);
                    Ok(())
                }
            }
        }
    }

    /// The table never grows past the size that holds `capacity` entries under 3/4 load.
    fn max_slots(&self) -> usize {
        (self.capacity.saturating_mul(4) / 3 + 1)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX / 2 + 1)
            .max(MIN_SLOTS)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Linear probe from the key's home slot. The table is never more than 3/4 full, so an
    /// empty slot always ends the probe.
    fn find(&self, key: u64) -> Probe {
        let mask = self.mask();
        // Truncating the hash to the table size is the point: it picks the home slot.
        let mut i = key as usize & mask;
        loop {
            match self.slots[i].key {
                0 => return Probe::Empty(i),
                k if k == key => return Probe::Found(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Insert a key known to be absent; grow (dropping expired entries) past 3/4 load.
    fn insert(&mut self, key: u64, expiry: u64, now: u64) {
        if let Probe::Empty(i) = self.find(key) {
            self.slots[i] = Entry { key, expiry };
            self.len += 1;
            self.earliest_expiry = self.earliest_expiry.min(expiry);
        }
        if self.len * 4 > self.slots.len() * 3 {
            let grown = (self.slots.len() * 2).min(self.max_slots());
            self.rebuild(grown, now);
        }
    }

    /// Drop every entry expired at `now`, in place (no second table).
    ///
    /// Emptying slots can cut a probe chain, so every survivor is then re-seated: walking the
    /// table once from just after an empty slot visits each run of occupied slots from its
    /// start, and re-inserting each entry in that order lands it at the first free slot on its
    /// own probe path, which is what a lookup expects.
    fn sweep(&mut self, now: u64) {
        #[cfg(test)]
        {
            self.sweeps += 1;
        }
        self.earliest_expiry = u64::MAX;
        for entry in &mut self.slots {
            if entry.key != 0 && entry.expiry < now {
                *entry = Entry::default();
                self.len -= 1;
            } else if entry.key != 0 {
                self.earliest_expiry = self.earliest_expiry.min(entry.expiry);
            }
        }
        let mask = self.mask();
        // The table is at most 3/4 full, so an empty slot exists.
        let start = self
            .slots
            .iter()
            .position(|e| e.key == 0)
            .expect("a table under 3/4 load has an empty slot");
        for step in 1..=self.slots.len() {
            let i = (start + step) & mask;
            let entry = self.slots[i];
            if entry.key == 0 {
                continue;
            }
            self.slots[i] = Entry::default();
            if let Probe::Empty(j) = self.find(entry.key) {
                self.slots[j] = entry;
            }
        }
    }

    /// Rebuild with `slots` slots, keeping only entries still live at `now`. If the live
    /// entries would load the new table past 3/4, it keeps its old size instead.
    fn rebuild(&mut self, slots: usize, now: u64) {
        let live = self
            .slots
            .iter()
            .filter(|e| e.key != 0 && e.expiry >= now)
            .count();
        let slots = if live * 4 > slots * 3 {
            self.slots.len()
        } else {
            slots
        };
        let old = std::mem::replace(&mut self.slots, vec![Entry::default(); slots]);
        self.len = 0;
        self.earliest_expiry = u64::MAX;
        for entry in old.into_iter().filter(|e| e.key != 0 && e.expiry >= now) {
            if let Probe::Empty(i) = self.find(entry.key) {
                self.slots[i] = entry;
                self.len += 1;
                self.earliest_expiry = self.earliest_expiry.min(entry.expiry);
            }
        }
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

    /// Shard `i`'s table, locked.
    fn table(cache: &NonceCache, i: usize) -> std::sync::MutexGuard<'_, Table> {
        cache.shards[i].table.lock().expect("not poisoned")
    }

    /// The shard that would hold `nonce`.
    fn shard_of(cache: &NonceCache, nonce: &str) -> usize {
        cache.shard_index(cache.key(nonce))
    }

    #[test]
    fn shards_split_the_capacity_exactly() {
        for (capacity, shards) in [
            (1, 1),
            (3, 1),
            (65_535, 1),
            (65_536, 2),
            (200_000, 4),
            (524_287, 8),
            (524_288, 16),
            (1_000_000, 16),
            (1_000_003, 16),
            (usize::MAX, 16),
        ] {
            let cache = NonceCache::new(capacity, WINDOW);
            assert_eq!(cache.shards.len(), shards, "capacity {capacity}");
            let shares: Vec<usize> = (0..shards).map(|i| table(&cache, i).capacity).collect();
            assert_eq!(
                shares.iter().sum::<usize>(),
                capacity,
                "capacity {capacity}"
            );
            let spread = shares.iter().max().unwrap_or(&0) - shares.iter().min().unwrap_or(&0);
            assert!(spread <= 1, "even shares: {shares:?}");
        }
    }

    #[test]
    fn a_full_shard_refuses_and_the_total_never_exceeds_the_capacity() {
        let capacity = 5000;
        let cache = NonceCache::with_shards(capacity, WINDOW, 4);
        let mut admitted = Vec::new();
        let mut n = 0;
        while cache.len() < capacity {
            assert!(n < 2 * capacity, "every shard fills well before this");
            let full = {
                let shard = table(&cache, shard_of(&cache, &nonce(n)));
                shard.len == shard.capacity
            };
            if full {
                assert_eq!(admit(&cache, &nonce(n), T0, T0), Err(ReplayError::Full));
            } else {
                assert_eq!(admit(&cache, &nonce(n), T0, T0), Ok(Slot::Current));
                admitted.push(n);
            }
            assert!(
                cache.len() <= capacity,
                "never holds more than its capacity"
            );
            let held: usize = (0..4).map(|i| table(&cache, i).len).sum();
            assert_eq!(cache.len(), held, "the count is the shards' sum");
            n += 1;
        }
        for i in 0..4 {
            let shard = table(&cache, i);
            assert_eq!(shard.len, shard.capacity);
            assert_eq!(
                shard.slots.len(),
                shard.max_slots(),
                "grew by doubling to the bound"
            );
            assert!(
                shard.capacity * 4 <= shard.slots.len() * 3,
                "never past 3/4 load"
            );
        }
        assert_eq!(admit(&cache, &nonce(n), T0, T0), Err(ReplayError::Full));
        for &n in admitted.iter().step_by(97) {
            assert_eq!(
                admit(&cache, &nonce(n), T0, T0 + 1),
                Err(ReplayError::Replayed)
            );
        }
        assert_eq!(cache.len(), capacity);
    }

    #[test]
    fn a_full_cache_of_live_nonces_refuses_without_walking_the_table() {
        let cache = NonceCache::new(3, WINDOW);
        for n in 0..3 {
            assert!(admit(&cache, &nonce(n), T0, T0).is_ok());
        }
        let before = table(&cache, 0).sweeps;
        // Nothing can have expired before T0 + WINDOW, so refusals leave the table untouched.
        for n in 3..10 {
            assert_eq!(admit(&cache, &nonce(n), T0, T0 + 1), Err(ReplayError::Full));
        }
        assert_eq!(
            table(&cache, 0).sweeps,
            before,
            "no sweep while every entry is live"
        );
        let later = T0 + WINDOW + 1;
        assert!(
            admit(&cache, &nonce(10), later, later).is_ok(),
            "room once they expire"
        );
    }

    #[test]
    fn periodic_sweeps_forget_expired_nonces() {
        let cache = NonceCache::with_shards(100, WINDOW, 4);
        for n in 0..50 {
            assert!(admit(&cache, &nonce(n), T0, T0).is_ok());
        }
        let later = T0 + 2 * WINDOW;
        for shard in 0..4 {
            let fresh = (1000..)
                .map(nonce)
                .find(|n| shard_of(&cache, n) == shard)
                .expect("endless");
            assert!(admit(&cache, &fresh, later, later).is_ok());
        }
        assert_eq!(cache.len(), 4, "each shard holds only its fresh nonce");
    }

    #[test]
    fn shards_sweep_in_turn() {
        let shards = 4;
        let cache = NonceCache::with_shards(10_000, WINDOW, shards);
        let period = WINDOW / 2;
        let mut fresh = (0..).map(nonce);
        let mut swept_at = vec![Vec::new(); shards];
        for now in T0..=T0 + 2 * period {
            for (shard, swept_at) in swept_at.iter_mut().enumerate() {
                let nonce = fresh
                    .by_ref()
                    .find(|n| shard_of(&cache, n) == shard)
                    .expect("endless");
                let before = table(&cache, shard).sweeps;
                assert!(admit(&cache, &nonce, now, now).is_ok());
                if table(&cache, shard).sweeps > before {
                    swept_at.push(now);
                }
            }
        }
        // Each shard sweeps once a period (after its first request), a quarter period apart.
        for (shard, swept_at) in swept_at.iter().enumerate() {
            assert_eq!(swept_at.len(), 3, "shard {shard}: {swept_at:?}");
            assert_eq!(swept_at[2] - swept_at[1], period);
            let offset = (period - swept_at[1] % period) % period;
            assert_eq!(
                offset,
                period * shard as u64 / shards as u64,
                "shard {shard}"
            );
        }
    }

    /// The contract's semantics in the plainest form, one per shard: a map from nonce to
    /// expiry holding the shard's share of the capacity, swept on the same schedule. The
    /// cache must answer exactly as these do.
    struct Model {
        expiries: std::collections::HashMap<String, u64>,
        capacity: usize,
        window: u64,
        period: u64,
        offset: u64,
        swept_turn: u64,
    }

    impl Model {
        /// Shard `i` of `shards` holds `capacity / shards`, one more while the remainder
        /// lasts, and starts its sweep periods `i / shards` of a period early.
        fn shards(capacity: usize, window: u64, shards: usize) -> Vec<Model> {
            let period = (window / 2).max(1);
            (0..shards)
                .map(|i| Model {
                    expiries: Default::default(),
                    capacity: capacity / shards + usize::from(i < capacity % shards),
                    window,
                    period,
                    offset: period * i as u64 / shards as u64,
                    swept_turn: 0,
                })
                .collect()
        }

        fn admit(&mut self, nonce: &str, timestamp: u64, now: u64) -> Result<(), ReplayError> {
            let turn = (now + self.offset) / self.period;
            if turn != self.swept_turn {
                self.expiries.retain(|_, e| *e >= now);
                self.swept_turn = turn;
            }
            let expiry = timestamp + self.window;
            match self.expiries.get_mut(nonce) {
                Some(live) if *live >= now => Err(ReplayError::Replayed),
                Some(expired) => {
                    *expired = expiry;
                    Ok(())
                }
                None => {
                    if self.expiries.len() >= self.capacity {
                        self.expiries.retain(|_, e| *e >= now);
                    }
                    if self.expiries.len() >= self.capacity {
                        return Err(ReplayError::Full);
                    }
                    self.expiries.insert(nonce.to_owned(), expiry);
                    Ok(())
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_shards_answer_like_plain_maps(
            capacity in 1usize..200,
            window in 1u64..8,
            shard_bits in 0u32..5,
            steps in proptest::collection::vec((0usize..300, 0u64..8, 0u64..3), 1..400),
        ) {
            let shards = 1 << shard_bits;
            let cache = NonceCache::with_shards(capacity, window, shards);
            let mut model = Model::shards(capacity, window, shards);
            let keyring = keyring();
            let mut now = T0;
            for (n, age, advance) in steps {
                now += advance;
                let timestamp = now - age.min(window);
                let nonce = nonce(n);
                let headers = headers(&nonce, timestamp);
                let line = RequestLine { method: "GET", path: "/", query: "" };
                let verified = verify::check_headers(&headers, &keyring, window, now)
                    .and_then(|p| p.verify(line, &protocol::body_digest(b"")))
                    .expect("a freshly signed request verifies");
                let got = cache.admit(verified, now).map(|_| ());
                let shard = &mut model[shard_of(&cache, &nonce)];
                proptest::prop_assert_eq!(got, shard.admit(&nonce, timestamp, now));
                let occupied: usize = (0..shards)
                    .map(|i| table(&cache, i).slots.iter().filter(|e| e.key != 0).count())
                    .sum();
                proptest::prop_assert_eq!(cache.len(), occupied);
                // A growing table drops the expired entries a model keeps until its sweep, so
                // the count can fall short of the model's, but never below its live nonces.
                let live: usize = model
                    .iter()
                    .map(|m| m.expiries.values().filter(|&&e| e >= now).count())
                    .sum();
                proptest::prop_assert!(live <= cache.len() && cache.len() <= capacity);
            }
        }
    }
}
