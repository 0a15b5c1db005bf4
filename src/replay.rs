//! The replay cache: remembers each accepted nonce until its timestamp leaves the skew window,
//! never holds more than its capacity, and fails closed when full (contract section 5).
//!
//! Layout: one flat open-addressing table of 16-byte slots, each a 64-bit keyed hash of the
//! nonce (SipHash-1-3 with per-process random keys, so clients cannot aim collisions) and the
//! Unix second after which it may be forgotten. Linear probing keeps a lookup and its insert in
//! one cache line, which matters once the table outgrows the CPU caches: a general-purpose map
//! keeps its control bytes apart from its entries and pays two memory misses per insert.
//!
//! Memory: the table doubles at 3/4 full, so an entry costs 21 to 43 bytes. A false "replayed"
//! needs two distinct live nonces with the same 64-bit hash: about `entries / 2^64` per
//! request, one in ten trillion at a million entries.
//!
//! Expired entries stay in place until a sweep removes them, in place: every half window, and
//! whenever the cache is full. Only growth allocates (doubling, so a handful of times).

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
    table: Mutex<Table>,
    len: AtomicUsize,
    capacity: usize,
    window: u64,
    nonce_hasher: RandomState,
}

impl NonceCache {
    /// A cache holding at most `capacity` nonces, each kept for `window` seconds past its
    /// timestamp (the clock-skew window).
    pub fn new(capacity: usize, window: u64) -> Self {
        NonceCache {
            table: Mutex::new(Table::with_slots(MIN_SLOTS)),
            len: AtomicUsize::new(0),
            capacity,
            window,
            nonce_hasher: RandomState::new(),
        }
    }

    /// Record a verified request's nonce, or refuse it as replayed or because the cache is
    /// full. `now` is Unix seconds.
    pub fn admit(&self, verified: Verified<'_>, now: u64) -> Result<Admitted, ReplayError> {
        // Zero marks an empty slot, so no key may be zero; losing one value of 2^64 is free.
        let key = self.nonce_hasher.hash_one(verified.nonce()).max(1);
        let expiry = verified.timestamp().saturating_add(self.window);
        // A poisoned lock means a panic mid-update of plain integers; the table is still
        // consistent, so keep serving rather than fail every request from then on.
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if now >= table.next_sweep {
            table.sweep(now);
            table.next_sweep = now.saturating_add((self.window / 2).max(1));
        }
        let result = match table.find(key) {
            Probe::Found(i) if table.slots[i].expiry >= now => Err(ReplayError::Replayed),
            Probe::Found(i) => {
                table.slots[i].expiry = expiry;
                Ok(())
            }
            Probe::Empty(_) => {
                // Sweep a full table only when some entry can have expired: a full cache of
                // live nonces then refuses in O(1) instead of walking the table per request.
                if table.len >= self.capacity && table.earliest_expiry < now {
                    table.sweep(now);
                }
                if table.len >= self.capacity {
                    Err(ReplayError::Full)
                } else {
                    table.insert(key, expiry, self.max_slots(), now);
                    Ok(())
                }
            }
        };
        self.len.store(table.len, Ordering::Relaxed);
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

    /// The table never grows past the size that holds `capacity` entries under 3/4 load.
    fn max_slots(&self) -> usize {
        (self.capacity.saturating_mul(4) / 3 + 1)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX / 2 + 1)
            .max(MIN_SLOTS)
    }
}

/// Smallest table: a few cache lines.
const MIN_SLOTS: usize = 64;

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
    /// No entry expires before this (Unix seconds; `u64::MAX` when empty). A lower bound:
    /// updating an entry can leave it too low, which only costs one needless sweep.
    earliest_expiry: u64,
    /// Sweeps so far, so tests can see when the table was walked.
    #[cfg(test)]
    sweeps: usize,
    /// When the next sweep of expired entries is due (Unix seconds).
    next_sweep: u64,
}

/// Where a probe for a key ended.
enum Probe {
    /// The key sits in this slot.
    Found(usize),
    /// The key is absent; this empty slot is where it would go.
    Empty(usize),
}

impl Table {
    fn with_slots(slots: usize) -> Table {
        Table {
            slots: vec![Entry::default(); slots],
            len: 0,
            earliest_expiry: u64::MAX,
            #[cfg(test)]
            sweeps: 0,
            next_sweep: 0,
        }
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
    fn insert(&mut self, key: u64, expiry: u64, max_slots: usize, now: u64) {
        if let Probe::Empty(i) = self.find(key) {
            self.slots[i] = Entry { key, expiry };
            self.len += 1;
            self.earliest_expiry = self.earliest_expiry.min(expiry);
        }
        if self.len * 4 > self.slots.len() * 3 {
            let grown = (self.slots.len() * 2).min(max_slots);
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
        let old = std::mem::replace(self, Table::with_slots(slots));
        self.next_sweep = old.next_sweep;
        for entry in old
            .slots
            .into_iter()
            .filter(|e| e.key != 0 && e.expiry >= now)
        {
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

    #[test]
    fn the_table_grows_to_its_capacity_and_no_further() {
        let capacity = 5000;
        let cache = NonceCache::new(capacity, WINDOW);
        for n in 0..capacity {
            assert!(admit(&cache, &nonce(n), T0, T0).is_ok(), "nonce {n}");
        }
        assert_eq!(cache.len(), capacity);
        let slots = cache.table.lock().expect("not poisoned").slots.len();
        assert_eq!(slots, cache.max_slots(), "grew by doubling up to the bound");
        assert!(capacity * 4 <= slots * 3, "never past 3/4 load");
        assert_eq!(
            admit(&cache, &nonce(capacity), T0, T0),
            Err(ReplayError::Full)
        );
        for n in (0..capacity).step_by(97) {
            assert_eq!(
                admit(&cache, &nonce(n), T0, T0 + 1),
                Err(ReplayError::Replayed)
            );
        }
    }

    #[test]
    fn a_full_cache_of_live_nonces_refuses_without_walking_the_table() {
        let cache = NonceCache::new(3, WINDOW);
        for n in 0..3 {
            assert!(admit(&cache, &nonce(n), T0, T0).is_ok());
        }
        let sweeps = |cache: &NonceCache| cache.table.lock().expect("not poisoned").sweeps;
        let before = sweeps(&cache);
        // Nothing can have expired before T0 + WINDOW, so refusals leave the table untouched.
        for n in 3..10 {
            assert_eq!(admit(&cache, &nonce(n), T0, T0 + 1), Err(ReplayError::Full));
        }
        assert_eq!(sweeps(&cache), before, "no sweep while every entry is live");
        let later = T0 + WINDOW + 1;
        assert!(
            admit(&cache, &nonce(10), later, later).is_ok(),
            "room once they expire"
        );
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

    /// The contract's semantics in the plainest form: a map from nonce to expiry, swept on the
    /// same schedule. The table must answer exactly as this does.
    struct Model {
        expiries: std::collections::HashMap<String, u64>,
        capacity: usize,
        window: u64,
        next_sweep: u64,
    }

    impl Model {
        fn admit(&mut self, nonce: &str, timestamp: u64, now: u64) -> Result<(), ReplayError> {
            if now >= self.next_sweep {
                self.expiries.retain(|_, e| *e >= now);
                self.next_sweep = now + (self.window / 2).max(1);
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
        fn the_table_answers_like_a_plain_map(
            capacity in 1usize..200,
            window in 1u64..8,
            steps in proptest::collection::vec((0usize..300, 0u64..8, 0u64..3), 1..400),
        ) {
            let cache = NonceCache::new(capacity, window);
            let mut model = Model { expiries: Default::default(), capacity, window, next_sweep: 0 };
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
                proptest::prop_assert_eq!(got, model.admit(&nonce, timestamp, now));
                proptest::prop_assert_eq!(cache.len(), model.expiries.len());
                proptest::prop_assert!(cache.len() <= capacity);
            }
        }
    }
}
