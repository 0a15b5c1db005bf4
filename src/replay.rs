//! The replay cache: remembers each accepted nonce until its timestamp leaves the skew window,
//! never holds more than its capacity, and fails closed when full (contract section 5).
//!
//! Layout: flat open-addressing tables of 16-byte slots, each a 64-bit keyed hash of the nonce
//! (SipHash-1-3 with per-process random keys, so clients cannot aim collisions) and the Unix
//! second after which it may be forgotten. Linear probing keeps a lookup and its insert in one
//! cache line, which matters once a table outgrows the CPU caches: a general-purpose map keeps
//! its control bytes apart from its entries and pays two memory misses per insert. That one line
//! is fetched ahead: the gate calls [`NonceCache::prefetch`] as soon as a request's headers pass,
//! so the miss overlaps reading and hashing the body, and [`NonceCache::admit_prefetched`] finds
//! the line in cache and reuses the hash.
//!
//! Shards: the top bits of the hash pick one of up to 16 shards, each a table behind a lock of its
//! own that grows and sweeps by itself; the probe starts from the low bits, so the two stay
//! independent. Threads of a multi-threaded runtime admit into different shards at once. Why 16: a
//! handful of worker threads seldom meet on a lock, the 16 smallest tables take 1 KiB together, and
//! each shard's share of the default capacity is large enough that uneven shards cost little
//! (below); 32 would start twice the tables and refuse earlier (about 98.9% instead of 99.3%).
//! Sharding first served to cut the stall of a growth, when it walked the whole table under its
//! lock: 20-27 ms for one table of a million nonces, 1.3-2.0 ms for a shard of a sixteenth of them
//! (the slowest insert in bench/loadgen `replay-mem`); growth and sweeps now go a few slots per
//! admission (below). Caches under 2^19 nonces get fewer shards, of at least 2^15 nonces each (one
//! shard under 2^16): such a cache can only serve capacity / window requests a second, too few for
//! its lock to matter, and smaller shares fill less evenly.
//!
//! Capacity: each shard holds its own share (capacity / shards, the remainder spread one each over
//! the first shards), so the shards together never hold more than the capacity, and a full shard
//! fails closed by itself, sharing nothing with the others. The price: the
//! keyed hash spreads nonces binomially (about 240 entries of deviation a shard at 1,000,000), so
//! the fullest shard fills first and refuses the new nonces it would hold while the cache is still
//! short of its capacity: the first refusal comes at about 99.3% of 1,000,000 (simulated over 60
//! fills: 98.7% at worst; measured 99.2-99.3%), and at about 99% for 16 shards of the smallest
//! share. A global count would refuse at exactly the capacity, but a cache full of nonces expired
//! in other shards would then have to lock and sweep those shards from inside an admission, or
//! refuse while it has room.
//!
//! Growth and sweeps go a few slots per admission, so that no admission walks a whole table in
//! steady state. A table about to pass 3/4 load allocates one twice its size (zeroed by the
//! allocator, so without writing it) and inserts there; the admission that starts the growth and
//! each later one into the shard move 256 slots of the old table into the new one, dropping expired
//! entries, and lookups check both tables until the old one is empty. The shards fill evenly, so
//! they would all double within a few thousand admissions and hold 16 old tables at once: one shard
//! moves at a time, and a shard that passes 3/4 meanwhile waits for its turn, up to 7/8 load (there
//! it grows anyway; filling the default cache, the last shard in line reached 0.80). Every half
//! window, the shards in turn, a sweep pass starts: it visits 256 slots per admission from a
//! cursor, a whole probe run at a time, dropping expired entries and re-seating the others, so the
//! table is valid between steps; a pass that has not finished when the next period starts goes on.
//! Both advance only with admissions: at a low request rate expired entries linger longer (the
//! entry gauge counts them), never past the capacity. A full shard that may hold expired entries
//! still sweeps all of it at once before it refuses, finishing a move under way: a walk of the
//! table, 0.5 ms for a full shard of the default capacity (2^17 slots), up to about twice that with
//! a move to finish, and only for a shard that fills while holding expired entries. Measured by
//! `replay-mem` at 1,000,000 entries: the slowest admission went from 1.3-2.0 ms to 82-117 µs (the
//! allocation that starts a growth, or scheduling noise). Timed one by one, a move step takes
//! 5-15 µs, page faults of first writes to the new table included, and a sweep step about 1 µs.
//!
//! Memory: each table doubles at 3/4 full (up to 7/8 while waiting for its turn), so an entry costs
//! 18 to 43 bytes: 33.6 at the default capacity of 1,000,000 (`replay-mem`, 3 KiB of shard headers
//! included). One shard's old and new tables are alive at once, and the old one is given back
//! 64 KiB at a time as it moves: the heap peaked at 33.0 MiB while the default cache filled, as it
//! did when a shard doubled in one step (a peak-tracking copy of `replay-mem`). Only growth
//! allocates (doubling, so a handful of times per shard; giving back shrinks in place). A false
//! "replayed" needs two distinct live nonces with the same 64-bit hash: about `entries / 2^64` per
//! request, one in ten trillion at a million entries.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    /// The timestamp's window has closed by a clock the nonce's shard has already seen: an
    /// admission with a clock read earlier, or one that stepped back, may no longer find the
    /// nonce it would be a replay of, so it is refused as stale instead (see
    /// [`NonceCache::admit`]).
    #[error("timestamp outside the window")]
    Expired,
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

/// A nonce [`NonceCache::prefetch`] has hashed, for [`NonceCache::admit_prefetched`].
pub struct Prefetched<'a> {
    cache: &'a NonceCache,
    nonce: &'a str,
    key: u64,
}

impl fmt::Debug for Prefetched<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the cache (its tables), nor the hash (made with the cache's secret keys).
        f.debug_struct("Prefetched")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// Bounded, expiring set of accepted nonces.
#[derive(Debug)]
pub struct NonceCache {
    /// A power-of-two number of shards.
    shards: Box<[Shard]>,
    capacity: usize,
    window: u64,
    nonce_hasher: RandomState,
    /// What the shards' tables share.
    shared: Shared,
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
        Self::with_steps(capacity, window, shards, STEPS)
    }

    /// [`NonceCache::with_shards`] taking `steps` per admission, so tests can interleave
    /// growths and sweep passes with admissions at small table sizes.
    fn with_steps(capacity: usize, window: u64, shards: usize, steps: Steps) -> Self {
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
        prefetched: &Prefetched<'_>,
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
        result.map(|()| Admitted {
            slot: verified.slot(),
        })
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
    pub fn prefetch<'a>(&'a self, nonce: &'a str) -> Prefetched<'a> {
        let key = self.key(nonce);
        if let Ok(table) = self.shards[self.shard_index(key)].table.try_lock() {
            table.prefetch(key);
        }
        Prefetched {
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

/// What a cache's shard tables share, beyond their own state.
#[derive(Debug)]
struct Shared {
    /// Seconds between a shard's sweep passes ([`sweep_period`] of the window).
    period: u64,
    /// Work per admission on a growing or sweeping table: [`STEPS`], smaller in tests so that
    /// moves and passes span many admissions.
    steps: Steps,
    /// Held by the one table moving its entries to a doubled table, so that one old table at
    /// a time is alive (see [`Table::try_grow`]). It guards no data: relaxed is enough.
    moving: AtomicBool,
}

/// Smallest table: one cache line, so 16 shards start at 1 KiB together.
const MIN_SLOTS: usize = 4;

/// Work one admission does on its shard's table besides its own lookup, while a growth or a
/// sweep pass is under way (see [`Table`]).
#[derive(Debug, Clone, Copy)]
struct Steps {
    /// Old slots a growing table moves into the new one per admission. At least 2, or the new
    /// table could pass 3/4 load before the move ends (the proof is at [`Table::migrate`]).
    migrate: usize,
    /// Slots a sweep pass visits per admission, rounded up to whole probe runs.
    sweep: usize,
}

/// The steps the cache runs with (figures: a shard of 2^16 slots moving to 2^17). Moving a
/// slot costs about 6 ns (old slots are read in order and land in two sequential runs of the
/// new table), plus the page faults of first writes to the new table, about 1.2 µs per 4 KiB:
/// 256 slots take 5-15 µs. A sweep visits a slot in about 4 ns: 256 take about 1 µs. Larger
/// moves keep the next shard in line waiting less (see [`Table::try_grow`]) for a longer
/// pause; smaller ones the reverse.
const STEPS: Steps = Steps {
    migrate: 256,
    sweep: 256,
};

/// Moved slots of an old table given back to the allocator at a time: 64 KiB (256 bytes in
/// tests, so that their small tables shrink too).
const RELEASE_SLOTS: usize = if cfg!(test) { 16 } else { 4096 };

/// One table slot: the keyed nonce hash in the low 64 bits (0 = empty) and the Unix second
/// after which it may be forgotten in the high 64 bits.
///
/// A `u128` rather than a struct of two `u64`s for two reasons. The standard library
/// allocates a vector of zeros of a primitive type as zeroed memory, which the allocator
/// hands out without touching a page, where a vector of a struct is written slot by slot: for
/// a 2^17-slot table that is about a millisecond of writes and page faults, in the one
/// admission that starts a growth. And `u128` is 16-byte aligned, so a slot never straddles a
/// cache line.
type Entry = u128;

/// The empty slot.
const EMPTY: Entry = 0;

/// The slot holding `key` until `expiry`.
fn entry(key: u64, expiry: u64) -> Entry {
    u128::from(key) | u128::from(expiry) << 64
}

/// The key a slot holds (0 when empty): its low half, which is what the cast keeps.
fn key_of(entry: Entry) -> u64 {
    entry as u64
}

/// The expiry a slot holds: its high half.
fn expiry_of(entry: Entry) -> u64 {
    (entry >> 64) as u64
}

/// Ask the CPU to start loading the cache line holding `slot` (`PREFETCHT0`), without waiting
/// for it. `safe_arch` wraps the intrinsic, which takes `unsafe` in std, and this crate forbids
/// `unsafe`; on other architectures this does nothing.
#[inline(always)]
fn prefetch(slot: &Entry) {
    #[cfg(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    ))]
    safe_arch::prefetch_t0(slot);
    #[cfg(not(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    )))]
    let _ = slot;
}

/// One shard's table behind its own lock, aligned to a cache line so that threads locking
/// neighbouring shards do not fight over one line.
#[derive(Debug)]
#[repr(align(64))]
struct Shard {
    table: Mutex<Table>,
    /// The table's `len`, stored after each admission, so that [`NonceCache::len`] need not
    /// take the locks.
    entries: AtomicUsize,
}

/// One shard's set of nonces: a linear-probing table of [`Entry`] slots, at most 3/4 full
/// (7/8 while it waits for its turn to grow), that grows and sweeps a few slots per admission
/// instead of all at once.
///
/// Growth: when the next insert would load the table past 3/4, and no other shard is moving
/// (or this one is at 7/8), an admission allocates the doubled table and inserts there; it and
/// every later admission move [`Steps::migrate`] slots of the old table into the new one
/// (dropping expired entries) until the old one is empty and freed. Meanwhile a lookup checks
/// both tables (a key is in one of them only) and inserts go to the new one.
///
/// Sweep: each sweep period starts a pass that visits every slot, [`Steps::sweep`] slots per
/// admission from a cursor and one whole probe run at a time, so the table is valid between
/// steps (see [`Table::sweep_run`]). A pass still under way when the next period starts just
/// goes on; a period that starts during a growth has its pass begin when the move ends (the
/// move itself drops the old table's expired entries).
#[derive(Debug)]
struct Table {
    /// A power-of-two number of slots; during a growth, the new (doubled) table.
    slots: Vec<Entry>,
    /// During a growth, the slots of the old table not moved yet: the move takes them from
    /// the end, so they are always its first `old.len()` slots. Empty otherwise.
    old: Vec<Entry>,
    /// The old table's size less one, for its home slots (kept while `old` shrinks).
    old_mask: usize,
    /// Occupied slots, expired or not: those of `slots` and the unmoved ones of `old`.
    len: usize,
    /// Most entries this shard holds: its share of the cache's capacity.
    capacity: usize,
    /// No entry of either table expires before this (Unix seconds; `u64::MAX` when empty). A
    /// lower bound: renewing or dropping an entry can leave it too low, which only costs one
    /// needless full sweep; each finished walk (a move or a sweep pass) makes it exact again,
    /// up to renewals.
    earliest_expiry: u64,
    /// The latest expiry of an entry this table has let go of (dropped by a move or a sweep,
    /// or renewed in place); 0 before any. A request expiring no later than this is refused
    /// as [`ReplayError::Expired`]: its nonce may be one of those forgotten.
    forgotten_until: u64,
    /// The earliest expiry the walk under way (a move or a sweep pass) has kept, and of every
    /// entry written since it began: when the walk ends this is a lower bound for every entry
    /// held, and becomes `earliest_expiry`.
    walk_earliest: u64,
    /// Slots the sweep pass under way has yet to visit; 0 when none is.
    sweep_left: usize,
    /// The slot the sweep pass goes on from.
    sweep_at: usize,
    /// A sweep period started during a growth: its pass begins when the move ends.
    sweep_due: bool,
    /// This table holds the cache's [`Shared::moving`] token for its growth under way.
    holds_token: bool,
    /// Sweep passes started so far (full sweeps included), so tests can follow the schedule.
    #[cfg(test)]
    sweeps: usize,
    /// Added to the clock before counting sweep periods, so that the shards' periods start at
    /// different seconds and their sweeps take turns instead of coming all at once.
    sweep_offset: u64,
    /// The sweep period (counted on the offset clock) in which this table last started a pass.
    swept_turn: u64,
}

/// Where a probe for a key ended.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// The key sits in this slot.
    Found(usize),
    /// The key is absent; this empty slot is where it would go.
    Empty(usize),
}

impl Table {
    fn new(capacity: usize, sweep_offset: u64) -> Table {
        Table {
            slots: vec![EMPTY; MIN_SLOTS],
            old: Vec::new(),
            old_mask: 0,
            len: 0,
            capacity,
            earliest_expiry: u64::MAX,
            forgotten_until: 0,
            walk_earliest: u64::MAX,
            sweep_left: 0,
            sweep_at: 0,
            sweep_due: false,
            holds_token: false,
            #[cfg(test)]
            sweeps: 0,
            sweep_offset,
            swept_turn: 0,
        }
    }

    /// Start loading the home slots of `key`: in `slots`, and in `old` while it holds the
    /// home slot still (see [`Table::find_old`]).
    fn prefetch(&self, key: u64) {
        prefetch(&self.slots[key as usize & self.mask()]);
        if let Some(slot) = self.old.get(key as usize & self.old_mask) {
            prefetch(slot);
        }
    }

    /// Record `key` until `expiry`, or refuse it as replayed, expired or because the shard is
    /// full.
    ///
    /// Why a replay cannot slip in after its nonce was swept: an entry is let go of only once
    /// expired (`expiry < now` by some admission's clock), and `forgotten_until` keeps the
    /// latest such expiry. A replay carries the original's timestamp, so the original's
    /// expiry: either the entry is still held (replayed), or it was let go of and the replay's
    /// expiry is at most `forgotten_until` (expired). This holds whatever `now` each admission
    /// brings: clocks read by threads in another order than they take the lock, or a wall
    /// clock that stepped back. No margin on the window is needed: the gate admits a timestamp
    /// while `now - timestamp <= window`, that is `expiry >= now`, the very test that keeps an
    /// entry.
    fn admit(
        &mut self,
        key: u64,
        expiry: u64,
        now: u64,
        shared: &Shared,
    ) -> Result<(), ReplayError> {
        let result = self.step_and_admit(key, expiry, now, shared);
        if self.holds_token && !self.growing() {
            self.holds_token = false;
            shared.moving.store(false, Ordering::Relaxed);
        }
        result
    }

    /// [`Table::admit`] less the token's release: first this admission's step of a growth
    /// or sweep pass, or the start of a growth, then the lookup and insert.
    fn step_and_admit(
        &mut self,
        key: u64,
        expiry: u64,
        now: u64,
        shared: &Shared,
    ) -> Result<(), ReplayError> {
        if expiry <= self.forgotten_until {
            return Err(ReplayError::Expired);
        }
        let turn = now.saturating_add(self.sweep_offset) / shared.period;
        if turn != self.swept_turn {
            self.swept_turn = turn;
            self.start_pass();
        }
        if self.growing() {
            self.migrate(shared.steps.migrate, now);
        } else if (self.len + 1) * 4 > self.slots.len() * 3 && self.slots.len() < self.max_slots() {
            // Before the lookup, so a table waiting for its turn to grow (or full) tries at
            // every admission, not only when it inserts.
            self.try_grow(now, shared);
        }
        // Not `else`: a move that has just ended may have begun a pass that was due.
        if self.sweep_left > 0 && !self.growing() {
            self.sweep(shared.steps.sweep, now);
        }
        let mut vacant = match self.find(key) {
            Probe::Found(i) => return self.renew(false, i, expiry, now),
            Probe::Empty(i) => Some(i),
        };
        if let Some(i) = self.find_old(key) {
            return self.renew(true, i, expiry, now);
        }
        // Sweep a full table only when some entry can have expired: a full shard of live
        // nonces then refuses in O(1) instead of walking the table per request.
        if self.len >= self.capacity && self.earliest_expiry < now {
            self.sweep_all(now);
            vacant = None;
        }
        if self.len >= self.capacity {
            return Err(ReplayError::Full);
        }
        let i = vacant.unwrap_or_else(|| self.vacancy(key));
        self.slots[i] = entry(key, expiry);
        self.len += 1;
        self.noted(expiry);
        Ok(())
    }

    /// A held key, in slot `i` of `old` or of `slots`: replayed while live, renewed in place
    /// otherwise (an entry of `old` moves later with its new expiry).
    fn renew(&mut self, in_old: bool, i: usize, expiry: u64, now: u64) -> Result<(), ReplayError> {
        let table = if in_old {
            &mut self.old
        } else {
            &mut self.slots
        };
        let held = expiry_of(table[i]);
        if held >= now {
            return Err(ReplayError::Replayed);
        }
        self.forgotten_until = self.forgotten_until.max(held);
        table[i] = entry(key_of(table[i]), expiry);
        self.noted(expiry);
        Ok(())
    }

    /// Keep both lower bounds on expiries true after writing an entry expiring at `expiry`.
    fn noted(&mut self, expiry: u64) {
        self.earliest_expiry = self.earliest_expiry.min(expiry);
        self.walk_earliest = self.walk_earliest.min(expiry);
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

    /// True while a growth moves entries from `old` into `slots`.
    fn growing(&self) -> bool {
        !self.old.is_empty()
    }

    /// Linear probe of `slots` from the key's home slot. The table is at most 7/8 full, so an
    /// empty slot always ends the probe.
    fn find(&self, key: u64) -> Probe {
        let mask = self.mask();
        // Truncating the hash to the table size is the point: it picks the home slot.
        let mut i = key as usize & mask;
        loop {
            match key_of(self.slots[i]) {
                0 => return Probe::Empty(i),
                k if k == key => return Probe::Found(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The empty slot of `slots` where `key`, known to be absent, goes.
    fn vacancy(&self, key: u64) -> usize {
        // A key is held at most once, so a probe for an absent one ends at an empty slot; were
        // it found after all, writing over its slot keeps it held once.
        match self.find(key) {
            Probe::Empty(i) | Probe::Found(i) => i,
        }
    }

    /// The slot of `old` holding `key`, if it is still there.
    ///
    /// The move takes slots from the end of the old table, so the unmoved ones are a prefix,
    /// `0..old.len()`, unchanged but for renewed expiries. Probing them as if the moved suffix
    /// were not there finds every key still held: a key at unmoved slot `p` has every slot
    /// from its home to `p` occupied, wrapping past the table's end if its home is after `p`.
    /// If its home is unmoved, the probe walks from it as in the whole table, jumping from the
    /// end of the prefix to slot 0 where the path wraps; if its home has moved, the path
    /// wraps, and the part of it from slot 0 to `p` is unmoved. Jumping over moved slots can
    /// only lengthen a probe, never skip a held key; a prefix with no empty slot left ends the
    /// probe after one round.
    fn find_old(&self, key: u64) -> Option<usize> {
        let unmoved = self.old.len();
        let home = key as usize & self.old_mask;
        let mut i = if home < unmoved { home } else { 0 };
        for _ in 0..unmoved {
            match key_of(self.old[i]) {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = if i + 1 == unmoved { 0 } else { i + 1 },
            }
        }
        None
    }

    /// The next insert would load the table past 3/4: grow now if no other table of the
    /// cache is moving, or if this one is at its limit of 7/8 load; otherwise wait, and try
    /// again at the next admission.
    ///
    /// Why wait: the shards fill evenly, so they all pass 3/4 within a few thousand admissions
    /// of each other, and each move spans `N / S` admissions of its shard: 16 moves at once
    /// would hold 16 old tables, half the cache's memory again. One at a time, each move
    /// takes `16N / S` admissions of the cache, 4,096 at `S` = 256, so the 16th shard in line
    /// waits for 15 moves, and meanwhile takes in `15N / S`, a 17th of its table: past 3/4 it
    /// can take `N / 8` more before the limit. A table far past its turn (a move stalled by a
    /// shard that sees no traffic) grows anyway at the limit, beside the other move.
    fn try_grow(&mut self, now: u64, shared: &Shared) {
        let at_limit = (self.len + 1) * 8 > self.slots.len() * 7;
        let token = !shared.moving.load(Ordering::Relaxed)
            && shared
                .moving
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if token || at_limit {
            self.holds_token = token;
            self.grow(now);
            if self.growing() {
                self.migrate(shared.steps.migrate, now);
            }
        }
    }

    /// Start a growth: allocate a table twice the size and insert there from now on; the
    /// entries move a step per admission ([`Table::migrate`]). The new table is allocated
    /// zeroed, which costs no write (see [`Entry`]). If the table is at its largest, or its
    /// entries (expired ones included) would load the doubled table past 3/4, it keeps its
    /// size and drops its expired entries in place instead. Neither happens: a table grows
    /// only below `max_slots` and holds at most `7N/8` entries, under 3/4 of `2N`; the branch
    /// stays so that no path can overload a table.
    fn grow(&mut self, now: u64) {
        let grown = (self.slots.len() * 2).min(self.max_slots());
        if grown <= self.slots.len() || (self.len + 1) * 4 > grown * 3 {
            self.sweep_all(now);
            return;
        }
        self.old = std::mem::replace(&mut self.slots, vec![EMPTY; grown]);
        self.old_mask = self.old.len() - 1;
        self.walk_earliest = u64::MAX;
        // The move drops every expired entry of the old table, which is a pass's work: a pass
        // under way stops (its cursor means nothing in the new table).
        self.sweep_left = 0;
        self.sweep_due = false;
    }

    /// Move up to `budget` slots from the end of `old` into `slots`, dropping entries expired
    /// at `now`, and give the moved slots' memory back as the move goes.
    ///
    /// Why the new table never passes 3/4 load during a move (nor needs to grow): the old
    /// table held `L <= 7N/8` entries in `N >= 4` slots when the growth started (a table grows
    /// before an insert would take it past 3/4 or, waiting for its turn, past 7/8), and the new
    /// one has `2N`. The admission that starts the growth and every later one move
    /// `S = budget` slots before inserting at most one entry, so the move ends within
    /// `ceil(N / S)` admissions, which insert at most `ceil(N / S)` entries: the new table
    /// holds at most `7N/8 + ceil(N / S)`, which is at most `3N/2`, 3/4 of `2N`, whenever
    /// `ceil(N / S) <= 5N/8`: for any `S >= 2`. With 256 (and `N >= 256`) it stays under 0.44
    /// of the new table; dropped expired entries only lower it. When the move ends the table
    /// is under 3/4 load, so the next admission checks growth as usual.
    fn migrate(&mut self, budget: usize, now: u64) {
        for _ in 0..budget {
            let Some(moving) = self.old.pop() else {
                break;
            };
            if moving == EMPTY {
                continue;
            }
            if expiry_of(moving) < now {
                self.len -= 1;
                self.forgotten_until = self.forgotten_until.max(expiry_of(moving));
                continue;
            }
            let i = self.vacancy(key_of(moving));
            self.slots[i] = moving;
            self.walk_earliest = self.walk_earliest.min(expiry_of(moving));
        }
        if self.old.is_empty() {
            self.old = Vec::new();
            // Every entry now held was moved or written during the move, and each one's
            // expiry went into `walk_earliest`.
            self.earliest_expiry = self.walk_earliest;
            if self.sweep_due {
                self.sweep_due = false;
                self.begin_pass();
            }
        } else if self.old.capacity() - self.old.len() >= RELEASE_SLOTS {
            // Give the moved part back to the allocator a piece at a time (a shrink in place:
            // glibc's `mremap` of a mapped block, a split of a heap one) rather than the whole
            // table in the last step, which took 75-160 µs for a 1 MiB table (an `munmap`).
            self.old.shrink_to_fit();
        }
    }

    /// A new sweep period: start a pass, unless one is still under way (it goes on: at a
    /// low request rate its steps come seldom, and expired entries linger for longer) or a
    /// growth is (the pass begins when the move ends).
    fn start_pass(&mut self) {
        if self.growing() {
            self.sweep_due = true;
        } else if self.sweep_left == 0 {
            self.begin_pass();
        } else {
            return;
        }
        self.count_pass();
    }

    /// Count a pass started, for tests.
    fn count_pass(&mut self) {
        #[cfg(test)]
        {
            self.sweeps += 1;
        }
    }

    /// Set a pass to visit every slot, from wherever the last pass ended.
    fn begin_pass(&mut self) {
        self.sweep_left = self.slots.len();
        self.walk_earliest = u64::MAX;
    }

    /// Take the pass under way at least `budget` slots further, whole probe runs at a time.
    fn sweep(&mut self, budget: usize, now: u64) {
        let mut visited = 0;
        while self.sweep_left > 0 && visited < budget {
            let run = self.sweep_run(self.sweep_at, now);
            visited += run;
            self.sweep_at = (self.sweep_at + run) & self.mask();
            self.sweep_left = self.sweep_left.saturating_sub(run);
            if self.sweep_left == 0 {
                // The pass saw every entry held when it began (only sweeps move entries, and
                // only those they visit), and every one written since went into
                // `walk_earliest` too.
                self.earliest_expiry = self.walk_earliest;
            }
        }
    }

    /// Sweep the run of occupied slots from `start` up to the next empty slot: drop every
    /// entry expired at `now` and re-seat the others; return the slots visited (the empty one
    /// included).
    ///
    /// Why the table is valid afterwards, wherever `start` is (a lookup finds every entry,
    /// because the slots from its home up to it are all occupied): entries before `start` and
    /// after the run are untouched and their probe paths do not enter the run's emptied
    /// slots (those before `start` end before it, those after cross the empty slot that
    /// ends the run). In the run, each entry in turn is taken out and, unless expired, put
    /// back at the first empty slot from its home, so the slots up to its new place are
    /// occupied; that is its old place or an earlier one, never past it, and later steps only
    /// empty slots later in the run, so they stay occupied. Until the run's first drop no
    /// slot of it is empty, so entries before that stay where they are.
    fn sweep_run(&mut self, start: usize, now: u64) -> usize {
        let mask = self.mask();
        let mut i = start;
        let mut emptied = false;
        loop {
            let held = self.slots[i];
            if held == EMPTY {
                return (i.wrapping_sub(start) & mask) + 1;
            }
            if expiry_of(held) < now {
                self.slots[i] = EMPTY;
                self.len -= 1;
                self.forgotten_until = self.forgotten_until.max(expiry_of(held));
                emptied = true;
            } else {
                if emptied {
                    self.slots[i] = EMPTY;
                    let j = self.vacancy(key_of(held));
                    self.slots[j] = held;
                }
                self.walk_earliest = self.walk_earliest.min(expiry_of(held));
            }
            i = (i + 1) & mask;
        }
    }

    /// Sweep the whole shard at once: finish a move under way, then a full pass. Only a full
    /// shard that may hold expired entries does this (and a table that cannot double), so a
    /// shard full of live nonces never does it per request.
    fn sweep_all(&mut self, now: u64) {
        if self.growing() {
            self.migrate(usize::MAX, now);
        }
        self.sweep_due = false;
        self.begin_pass();
        self.count_pass();
        self.sweep(usize::MAX, now);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::keyring::{Key, Keyring, Secret};
    use crate::protocol;
    use crate::sign::{Request, Signer};
    use crate::verify::{self, Pending, RequestLine};

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

    /// A fresh request with `nonce` signed at `timestamp`, its headers checked at `now`, handed
    /// to `then` (which borrows its headers).
    fn checked<R>(nonce: &str, timestamp: u64, now: u64, then: impl FnOnce(Pending<'_>) -> R) -> R {
        let keyring = keyring();
        let headers = headers(nonce, timestamp);
        let pending = verify::check_headers(&headers, &keyring, WINDOW, now)
            .expect("a freshly signed request passes the header checks");
        then(pending)
    }

    /// The checked request's MAC verified.
    fn verified(pending: Pending<'_>) -> Verified<'_> {
        let line = RequestLine {
            method: "GET",
            path: "/",
            query: "",
        };
        pending
            .verify(line, &protocol::body_digest(b""))
            .expect("a freshly signed request verifies")
    }

    /// Verify a fresh request with `nonce` at `timestamp` and offer it to the cache at `now`.
    fn admit(
        cache: &NonceCache,
        nonce: &str,
        timestamp: u64,
        now: u64,
    ) -> Result<Slot, ReplayError> {
        checked(nonce, timestamp, now, |pending| {
            cache.admit(verified(pending), now).map(|a| a.slot())
        })
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
    fn a_prefetch_records_nothing() {
        let cache = NonceCache::with_steps(10_000, WINDOW, 1, SMALL);
        cache.prefetch(&nonce(1));
        assert_eq!(cache.len(), 0);
        assert_eq!(admit(&cache, &nonce(1), T0, T0), Ok(Slot::Current));
        // During a growth it reads the old table too, whose unmoved part shrinks.
        let mut n = 2;
        admit_until(&cache, &mut n, T0, |t| t.growing() && t.old_mask >= 255);
        let held = cache.len();
        for m in 0..n + 10 {
            cache.prefetch(&nonce(m));
        }
        assert_eq!(cache.len(), held);
        assert_eq!(
            admit(&cache, &nonce(1), T0, T0 + 1),
            Err(ReplayError::Replayed)
        );
        assert_eq!(admit(&cache, &nonce(n + 5), T0, T0 + 1), Ok(Slot::Current));
    }

    /// Verify a fresh request with `nonce` at `now` and admit it with the hash of `prefetched`
    /// (built from this request's headers when `None`).
    fn admit_prefetched(
        cache: &NonceCache,
        nonce: &str,
        now: u64,
        prefetched: Option<&Prefetched<'_>>,
    ) -> Result<Slot, ReplayError> {
        checked(nonce, now, now, |pending| {
            let own = cache.prefetch(pending.nonce());
            cache
                .admit_prefetched(verified(pending), prefetched.unwrap_or(&own), now)
                .map(|a| a.slot())
        })
    }

    #[test]
    fn a_prefetched_hash_is_used_only_for_its_own_nonce_and_cache() {
        let cache = NonceCache::new(10, WINDOW);
        assert_eq!(
            admit_prefetched(&cache, &nonce(1), T0, None),
            Ok(Slot::Current)
        );
        assert_eq!(
            admit_prefetched(&cache, &nonce(1), T0, None),
            Err(ReplayError::Replayed)
        );
        // Another nonce's prefetch: nonce 2 is recorded, not nonce 3.
        let other = nonce(3);
        let of_other = cache.prefetch(&other);
        assert_eq!(
            admit_prefetched(&cache, &nonce(2), T0, Some(&of_other)),
            Ok(Slot::Current)
        );
        assert_eq!(admit(&cache, &nonce(2), T0, T0), Err(ReplayError::Replayed));
        assert_eq!(admit(&cache, &nonce(3), T0, T0), Ok(Slot::Current));
        // Another cache's prefetch of the same bytes: hashed with this cache's keys.
        let elsewhere = NonceCache::new(10, WINDOW);
        let admitted = checked(&nonce(4), T0, T0, |pending| {
            let foreign = elsewhere.prefetch(pending.nonce());
            cache.admit_prefetched(verified(pending), &foreign, T0)
        });
        assert!(admitted.is_ok());
        assert_eq!(admit(&cache, &nonce(4), T0, T0), Err(ReplayError::Replayed));
        assert!(elsewhere.is_empty());
    }

    #[test]
    fn a_nonce_swept_by_a_later_clock_is_not_admitted_by_an_earlier_one() {
        // One shard, so the second nonce's admission sweeps the first one's.
        let cache = NonceCache::with_shards(10, WINDOW, 1);
        assert_eq!(admit(&cache, &nonce(1), T0, T0), Ok(Slot::Current));
        let later = T0 + WINDOW + 1;
        assert_eq!(admit(&cache, &nonce(2), later, later), Ok(Slot::Current));
        assert_eq!(cache.len(), 1, "the first nonce was swept");
        // A replay of the first whose clock was read before the sweep (still in its window by
        // that clock): refused, never admitted again.
        assert_eq!(
            admit(&cache, &nonce(1), T0, T0 + WINDOW),
            Err(ReplayError::Expired)
        );
        assert_eq!(cache.len(), 1);
        // Any request whose window has closed by a clock the shard has seen is refused too
        // (a wall clock that stepped back); later timestamps are not.
        assert_eq!(admit(&cache, &nonce(3), T0, T0), Err(ReplayError::Expired));
        assert_eq!(admit(&cache, &nonce(4), T0 + 1, T0 + 1), Ok(Slot::Current));
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
        // Each shard's table (at most 64 slots) is smaller than one sweep step, so the first
        // admission of a period sweeps all of it; passes over several admissions are tested
        // below with smaller steps.
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
            migrate in 2usize..9,
            sweep in 1usize..9,
            steps in proptest::collection::vec((0usize..300, 0u64..8, 0u64..3), 1..400),
        ) {
            let shards = 1 << shard_bits;
            let cache = NonceCache::with_steps(capacity, window, shards, Steps { migrate, sweep });
            let mut model = Model::shards(capacity, window, shards);
            let mut now = T0;
            for (n, age, advance) in steps {
                now += advance;
                let timestamp = now - age.min(window);
                let nonce = nonce(n);
                let got = admit(&cache, &nonce, timestamp, now).map(|_| ());
                let shard = &mut model[shard_of(&cache, &nonce)];
                proptest::prop_assert_eq!(got, shard.admit(&nonce, timestamp, now));
                let occupied: usize = (0..shards).map(|i| table(&cache, i).entries().count()).sum();
                proptest::prop_assert_eq!(cache.len(), occupied);
                // A growing table drops the expired entries a model keeps until its sweep, and
                // an incremental sweep drops them later than the model, so the count can differ
                // from the model's, but never falls below its live nonces.
                let live: usize = model
                    .iter()
                    .map(|m| m.expiries.values().filter(|&&e| e >= now).count())
                    .sum();
                proptest::prop_assert!(live <= cache.len() && cache.len() <= capacity);
                check(&cache);
            }
        }
    }

    /// Steps small enough that moves and sweep passes span many admissions at test sizes:
    /// the smallest move the growth proof allows, one probe run per sweep step.
    const SMALL: Steps = Steps {
        migrate: 2,
        sweep: 1,
    };

    impl Table {
        /// Every entry held: those of `slots` and the unmoved ones of `old`.
        fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
            self.slots
                .iter()
                .chain(&self.old)
                .copied()
                .filter(|&e| e != EMPTY)
        }

        /// Where `key` is held, as a lookup sees it: `Some(true)` in the old table of a growth,
        /// `Some(false)` in `slots`.
        fn holds(&self, key: u64) -> Option<bool> {
            match self.find(key) {
                Probe::Found(_) => Some(false),
                Probe::Empty(_) => self.find_old(key).map(|_| true),
            }
        }

        /// Every invariant a lookup, an insert or the fail-closed path relies on.
        fn check(&self) {
            let slots = self.slots.len();
            assert!(slots.is_power_of_two() && slots >= MIN_SLOTS && slots <= self.max_slots());
            let in_new = self.slots.iter().filter(|&&e| e != EMPTY).count();
            if self.growing() {
                assert!(in_new * 4 <= slots * 3, "{in_new} entries in {slots} slots");
            } else {
                // Past 3/4 only while waiting for its turn to grow.
                assert!(in_new * 8 <= slots * 7, "{in_new} entries in {slots} slots");
            }
            for (i, &e) in self.slots.iter().enumerate() {
                if e != EMPTY {
                    assert_eq!(self.find(key_of(e)), Probe::Found(i), "findable");
                    assert_eq!(self.find_old(key_of(e)), None, "held once");
                }
            }
            if self.growing() {
                assert_eq!((self.old_mask + 1) * 2, slots, "growth doubles");
                assert!(self.old.len() <= self.old_mask + 1);
                assert!(
                    self.old.capacity() - self.old.len() < RELEASE_SLOTS,
                    "moved slots are given back"
                );
                for (i, &e) in self.old.iter().enumerate() {
                    if e != EMPTY {
                        let key = key_of(e);
                        assert_eq!(self.find_old(key), Some(i), "findable in the old table");
                        assert!(matches!(self.find(key), Probe::Empty(_)), "held once");
                    }
                }
                assert_eq!(self.sweep_left, 0, "no pass walks during a move");
            } else {
                assert_eq!(self.old.capacity(), 0, "the old table is freed");
                assert!(!self.sweep_due);
                assert!(!self.holds_token, "the token is given back");
            }
            assert_eq!(self.len, self.entries().count(), "len counts both tables");
            assert!(self.len <= self.capacity);
            assert!(
                self.entries().all(|e| expiry_of(e) >= self.earliest_expiry),
                "earliest_expiry is a lower bound"
            );
        }
    }

    /// Every shard's invariants, and the cache's: one token holder at most, the total count.
    fn check(cache: &NonceCache) {
        let mut holders = 0;
        let mut held = 0;
        for i in 0..cache.shards.len() {
            let shard = table(cache, i);
            shard.check();
            holders += usize::from(shard.holds_token);
            held += shard.len;
        }
        assert!(holders <= 1);
        assert_eq!(
            cache.shared.moving.load(Ordering::Relaxed),
            holders == 1,
            "the token is held by a moving table or by none"
        );
        assert_eq!(cache.len(), held);
    }

    /// Admit fresh nonces numbered from `*n` at `now` into a one-shard cache until `until`
    /// holds for its table.
    fn admit_until(
        cache: &NonceCache,
        n: &mut usize,
        now: u64,
        until: impl Fn(&Table) -> bool,
    ) -> Vec<usize> {
        let mut admitted = Vec::new();
        while !until(&table(cache, 0)) {
            assert_eq!(admit(cache, &nonce(*n), now, now), Ok(Slot::Current));
            check(cache);
            admitted.push(*n);
            *n += 1;
            assert!(*n < 100_000, "reached");
        }
        admitted
    }

    #[test]
    fn a_growing_table_still_detects_replays_in_both_tables() {
        let cache = NonceCache::with_steps(10_000, WINDOW, 1, SMALL);
        let mut n = 0;
        let before = admit_until(&cache, &mut n, T0, |t| t.growing() && t.old_mask >= 255);
        let after = admit_until(&cache, &mut n, T0, |t| t.len >= before.len() + 10);
        let (mut in_old, mut in_new) = (0, 0);
        // The nonces admitted since the growth started first (all in the new table), then the
        // older ones, which a replay's own move steps carry over a few at a time.
        for &m in after.iter().chain(&before) {
            let key = cache.key(&nonce(m));
            let held = table(&cache, 0).holds(key);
            if !table(&cache, 0).growing() {
                break;
            }
            match held {
                Some(true) => in_old += 1,
                Some(false) => in_new += 1,
                None => panic!("nonce {m} is lost"),
            }
            assert_eq!(
                admit(&cache, &nonce(m), T0, T0 + 1),
                Err(ReplayError::Replayed),
                "nonce {m}, in the old table: {held:?}"
            );
            table(&cache, 0).check();
        }
        // About 50 of each: a replay's steps move 2 of the 256 old slots.
        assert!(in_old >= 10 && in_new >= 10, "{in_old} old, {in_new} new");
    }

    #[test]
    fn a_growth_ends_within_its_bound_and_frees_the_old_table() {
        let cache = NonceCache::with_steps(10_000, WINDOW, 1, SMALL);
        let mut n = 0;
        let mut admitted = admit_until(&cache, &mut n, T0, |t| t.growing() && t.old_mask >= 255);
        let old_slots = table(&cache, 0).old_mask + 1;
        let during = admit_until(&cache, &mut n, T0, |t| !t.growing());
        assert_eq!(
            during.len() + 1,
            old_slots / SMALL.migrate,
            "a move of S slots per admission, the one that starts it included, takes N / S"
        );
        admitted.extend(during);
        {
            let shard = table(&cache, 0);
            assert_eq!(shard.old.capacity(), 0, "the old table is freed");
            assert_eq!(shard.slots.len(), 2 * old_slots);
            assert_eq!(shard.len, admitted.len());
            assert!(shard.len * 4 <= shard.slots.len() * 3);
        }
        assert_eq!(cache.len(), admitted.len());
        for &m in &admitted {
            assert_eq!(
                admit(&cache, &nonce(m), T0, T0 + 1),
                Err(ReplayError::Replayed)
            );
        }
    }

    #[test]
    fn a_growth_drops_expired_entries_as_it_moves_them_and_renews_old_ones() {
        let cache = NonceCache::with_steps(10_000, WINDOW, 1, SMALL);
        // Nonces signed a window ago expire at T0: live now, expired from T0 + 1, within the
        // same sweep period (T0 starts one), so only the move can drop them.
        let stale = |cache: &NonceCache, n: usize| admit(cache, &nonce(n), T0 - WINDOW, T0);
        let mut n = 0;
        let next_insert_grows = |cache: &NonceCache| {
            let shard = table(cache, 0);
            shard.slots.len() >= 256 && (shard.len + 1) * 4 > shard.slots.len() * 3
        };
        while !next_insert_grows(&cache) {
            assert_eq!(stale(&cache, n), Ok(Slot::Current));
            n += 1;
        }
        let stale_count = n;
        assert!(!table(&cache, 0).growing());
        let now = T0 + 1;
        // The next insert starts the growth; renewing a stale nonce in the old table keeps it.
        assert_eq!(admit(&cache, &nonce(n), now, now), Ok(Slot::Current));
        assert!(table(&cache, 0).growing());
        let renewed = (0..stale_count)
            .find(|&m| table(&cache, 0).holds(cache.key(&nonce(m))) == Some(true))
            .expect("most stale nonces are still in the old table");
        assert_eq!(admit(&cache, &nonce(renewed), now, now), Ok(Slot::Current));
        assert_eq!(
            admit(&cache, &nonce(renewed), now, now),
            Err(ReplayError::Replayed)
        );
        n += 1;
        let fresh = 1 + admit_until(&cache, &mut n, now, |t| !t.growing()).len();
        assert_eq!(
            table(&cache, 0).len,
            fresh + 1,
            "the move dropped every expired entry and kept the renewed one"
        );
        assert_eq!(cache.len(), fresh + 1);
    }

    #[test]
    fn a_full_shard_finishes_its_growth_and_sweeps_before_refusing() {
        // A capacity of 100: the table doubles to its largest, 256 slots, at the 97th nonce,
        // and a move of 2 slots per admission is far from done at the 100th. The first 96
        // stay live (in the old table), the last 4 expire at T0 (in the new one), so no move
        // step can make room: only a full sweep can.
        let cache = NonceCache::with_steps(100, WINDOW, 1, SMALL);
        for n in 0..100 {
            let timestamp = if n < 96 { T0 } else { T0 - WINDOW };
            assert_eq!(admit(&cache, &nonce(n), timestamp, T0), Ok(Slot::Current));
        }
        assert!(table(&cache, 0).growing());
        let sweeps = table(&cache, 0).sweeps;
        assert_eq!(admit(&cache, &nonce(100), T0, T0), Err(ReplayError::Full));
        assert!(
            table(&cache, 0).growing(),
            "no walk while every entry is live"
        );
        assert_eq!(table(&cache, 0).sweeps, sweeps);
        let now = T0 + 1;
        assert_eq!(admit(&cache, &nonce(100), now, now), Ok(Slot::Current));
        let shard = table(&cache, 0);
        assert_eq!(shard.sweeps, sweeps + 1, "one full sweep");
        assert!(!shard.growing(), "which finished the move");
        assert_eq!(shard.slots.len(), shard.max_slots());
        assert_eq!(shard.len, 97);
        assert_eq!(
            shard.earliest_expiry,
            T0 + WINDOW,
            "exact after a full sweep"
        );
        shard.check();
        drop(shard);
        for n in 0..96 {
            assert_eq!(
                admit(&cache, &nonce(n), T0, now),
                Err(ReplayError::Replayed)
            );
        }
    }

    #[test]
    fn a_sweep_pass_spans_admissions_and_keeps_every_live_nonce_findable() {
        let cache = NonceCache::with_steps(10_000, WINDOW, 1, SMALL);
        // Half the nonces expire at T0 (signed a window earlier), half a window later.
        let mut live = Vec::new();
        for n in 0..300 {
            let timestamp = if n % 2 == 0 { T0 - WINDOW } else { T0 };
            assert_eq!(admit(&cache, &nonce(n), timestamp, T0), Ok(Slot::Current));
            if n % 2 == 1 {
                live.push(n);
            }
        }
        let now = T0 + WINDOW / 2;
        let mut n = 300;
        // Let any move end first, within the period: the pass starts with the next one.
        admit_until(&cache, &mut n, T0, |t| !t.growing());
        live.extend(300..n);
        let sweeps = table(&cache, 0).sweeps;
        let slots = table(&cache, 0).slots.len();
        let mut steps = 0;
        loop {
            assert_eq!(admit(&cache, &nonce(n), now, now), Ok(Slot::Current));
            live.push(n);
            n += 1;
            steps += 1;
            let shard = table(&cache, 0);
            shard.check();
            for &m in &live {
                assert!(shard.holds(cache.key(&nonce(m))).is_some(), "nonce {m}");
            }
            if shard.sweep_left == 0 {
                break;
            }
        }
        let shard = table(&cache, 0);
        assert_eq!(shard.sweeps, sweeps + 1, "one pass");
        assert!(steps > 10, "the pass took {steps} admissions");
        assert!(steps <= slots, "at least a slot per admission");
        assert_eq!(shard.len, live.len(), "every expired nonce is gone");
        assert_eq!(
            shard.earliest_expiry,
            T0 + WINDOW,
            "exact again after the pass"
        );
    }

    #[test]
    fn an_unfinished_pass_goes_on_into_the_next_period() {
        let cache = NonceCache::with_steps(10_000, WINDOW, 1, SMALL);
        let mut n = 0;
        admit_until(&cache, &mut n, T0, |t| t.len >= 300 && !t.growing());
        let period = WINDOW / 2;
        assert!(admit(&cache, &nonce(n), T0 + period, T0 + period).is_ok());
        let (sweeps, left) = {
            let shard = table(&cache, 0);
            (shard.sweeps, shard.sweep_left)
        };
        assert!(left > 0, "a pass is under way");
        let later = T0 + 2 * period;
        assert!(admit(&cache, &nonce(n + 1), later, later).is_ok());
        let shard = table(&cache, 0);
        assert_eq!(shard.sweeps, sweeps, "no new pass");
        assert!(
            0 < shard.sweep_left && shard.sweep_left < left,
            "the pass went on"
        );
    }

    #[test]
    fn shards_move_one_at_a_time() {
        // 4 shards of 5,000: tables grow to 8,192 slots. A move of 64 slots per admission
        // takes N / 64 admissions of its shard, so a shard waiting for 3 others' moves takes
        // in about 3N / 64 meanwhile, well short of the N / 8 it may take past 3/4.
        let steps = Steps {
            migrate: 64,
            sweep: 64,
        };
        let cache = NonceCache::with_steps(20_000, WINDOW, 4, steps);
        let (mut waited, mut moves) = (0, 0);
        let mut was_growing = [false; 4];
        for n in 0..18_000 {
            assert_eq!(admit(&cache, &nonce(n), T0, T0), Ok(Slot::Current));
            let mut growing = 0;
            for (i, was) in was_growing.iter_mut().enumerate() {
                let shard = table(&cache, i);
                growing += usize::from(shard.growing());
                waited += usize::from(!shard.growing() && shard.len * 4 > shard.slots.len() * 3);
                moves += usize::from(shard.growing() && !*was);
                *was = shard.growing();
            }
            assert!(growing <= 1, "{growing} shards move at once");
            if n % 97 == 0 {
                check(&cache);
            }
        }
        assert!(
            moves >= 4 * 4,
            "every shard moved to 1,024 slots and beyond"
        );
        assert!(waited > 0, "some shard waited for its turn");
    }

    #[test]
    fn a_table_at_its_largest_keeps_its_size() {
        let mut table = Table::new(2, 0);
        // Beyond what admissions allow (they stop at the capacity, 2 of 4 slots): a table at
        // its largest that must take more is swept in place rather than grown.
        table.slots = vec![entry(1, T0), entry(2, T0 + 10), entry(3, T0), EMPTY];
        table.len = 3;
        table.earliest_expiry = T0;
        assert_eq!(table.slots.len(), table.max_slots());
        table.grow(T0 + 1);
        assert!(!table.growing());
        assert_eq!(table.slots.len(), 4);
        assert_eq!(table.len, 1);
        table.check();
    }

    proptest::proptest! {
        /// Moves and sweep passes a slot or a few at a time, interleaved with admissions over
        /// many sweep periods, with shards waiting for their turn to grow: every answer is the
        /// model's, the tables stay valid after every admission, and every nonce the model
        /// holds live can be found.
        #[test]
        fn interleaved_moves_and_passes_keep_every_live_nonce(
            capacity in 1usize..600,
            window in 2u64..12,
            shard_bits in 0u32..3,
            migrate in 2usize..5,
            sweep in 1usize..4,
            steps in proptest::collection::vec((0usize..700, 0u64..12, 0u64..8), 1..800),
        ) {
            let shards = 1 << shard_bits;
            let cache = NonceCache::with_steps(capacity, window, shards, Steps { migrate, sweep });
            let mut model = Model::shards(capacity, window, shards);
            let mut now = T0;
            for (n, age, advance) in steps {
                // Time moves on at one step in eight, so each period sees many admissions.
                now += u64::from(advance == 0);
                let timestamp = now - age.min(window);
                let nonce = nonce(n);
                let got = admit(&cache, &nonce, timestamp, now).map(|_| ());
                let i = shard_of(&cache, &nonce);
                proptest::prop_assert_eq!(got, model[i].admit(&nonce, timestamp, now));
                check(&cache);
                for (i, model) in model.iter().enumerate() {
                    let shard = table(&cache, i);
                    for (held, &expiry) in &model.expiries {
                        if expiry >= now {
                            proptest::prop_assert!(shard.holds(cache.key(held)).is_some());
                        }
                    }
                }
            }
        }
    }
}
