//! One shard's set of nonces: a flat open-addressing table of 16-byte slots, each a nonce's keyed
//! hash (see `replay/memory.rs`) and the Unix second after which it may be forgotten, that grows
//! and sweeps a few slots per admission.
//!
//! Probe: linear probing keeps a lookup and its insert in one cache line, which matters once a
//! table outgrows the CPU caches: a general-purpose map keeps its control bytes apart from its
//! entries and pays two memory misses per insert. That one line is fetched ahead
//! ([`Table::prefetch`], called by `NonceCache::prefetch` as soon as a request's headers pass),
//! so the miss overlaps reading and hashing the body, and the admission finds the line in cache.
//!
//! Growth and sweeps go a few slots per admission, so that no admission walks a whole table in
//! steady state. A table about to pass 3/4 load allocates one twice its size (zeroed by the
//! allocator, so without writing it) and inserts there; the admission that starts the growth and
//! each later one into the shard move 256 slots of the old table into the new one, dropping
//! expired entries, and lookups check both tables until the old one is empty. The shards fill
//! evenly, so they would all double within a few thousand admissions and hold 16 old tables at
//! once: one shard moves at a time, and a shard that passes 3/4 meanwhile waits for its turn, up
//! to 7/8 load (there it grows anyway; filling the default cache, the last shard in line reaches
//! 0.80). Every half window, the shards in turn, a sweep pass starts: it visits 256 slots per
//! admission from a cursor, a whole probe run at a time, dropping expired entries and re-seating
//! the others, so the table is valid between steps; a pass that has not finished when the next
//! period starts goes on. Both advance only with admissions: at a low request rate expired
//! entries linger longer (the entry gauge counts them), never past the capacity. A full shard
//! that may hold expired entries still sweeps all of it at once before it refuses, finishing a
//! move under way: a walk of the table, 0.5 ms for a full shard of the default capacity (2^17
//! slots), up to about twice that with a move to finish, and only for a shard that fills while
//! holding expired entries. Timed one by one, a move step takes 5-15 µs, page faults of first
//! writes to the new table included, and a sweep step about 1 µs; the slowest admission of a
//! million-entry fill is the allocation that starts a growth, or scheduling noise
//! (`bench/loadgen`'s `replay-mem`; bench/analysis.md).

use std::sync::atomic::{AtomicBool, Ordering};

use super::ReplayError;

/// What a cache's shard tables share, beyond their own state.
#[derive(Debug)]
pub(super) struct Shared {
    /// Seconds between a shard's sweep passes (half the window).
    pub(super) period: u64,
    /// Work per admission on a growing or sweeping table: [`STEPS`], smaller in tests so that
    /// moves and passes span many admissions.
    pub(super) steps: Steps,
    /// Held by the one table moving its entries to a doubled table, so that one old table at
    /// a time is alive (see [`Table::try_grow`]). It guards no data: relaxed is enough.
    pub(super) moving: AtomicBool,
}

/// Smallest table: one cache line, so 16 shards start at 1 KiB together.
const MIN_SLOTS: usize = 4;

/// Work one admission does on its shard's table besides its own lookup, while a growth or a
/// sweep pass is under way (see [`Table`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Steps {
    /// Old slots a growing table moves into the new one per admission. At least 2, or the new
    /// table could pass 3/4 load before the move ends (the proof is at [`Table::migrate`]).
    pub(super) migrate: usize,
    /// Slots a sweep pass visits per admission, rounded up to whole probe runs.
    pub(super) sweep: usize,
}

/// The steps the cache runs with (figures: a shard of 2^16 slots moving to 2^17). Moving a
/// slot costs about 6 ns (old slots are read in order and land in two sequential runs of the
/// new table), plus the page faults of first writes to the new table, about 1.2 µs per 4 KiB:
/// 256 slots take 5-15 µs. A sweep visits a slot in about 4 ns: 256 take about 1 µs. Larger
/// moves keep the next shard in line waiting less (see [`Table::try_grow`]) for a longer
/// pause; smaller ones the reverse.
pub(super) const STEPS: Steps = Steps {
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
pub(super) type Entry = u128;

/// The empty slot.
pub(super) const EMPTY: Entry = 0;

/// The slot holding `key` until `expiry`.
pub(super) fn entry(key: u64, expiry: u64) -> Entry {
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
///
/// In service only these methods write the fields. Those visible to the rest of `replay` are
/// for `NonceCache`, which reads `len`, and for the tests, which follow a table's growth and
/// sweeps step by step (and set one up by hand).
#[derive(Debug)]
pub(super) struct Table {
    /// A power-of-two number of slots; during a growth, the new (doubled) table.
    pub(super) slots: Vec<Entry>,
    /// During a growth, the slots of the old table not moved yet: the move takes them from
    /// the end, so they are always its first `old.len()` slots. Empty otherwise.
    pub(super) old: Vec<Entry>,
    /// The old table's size less one, for its home slots (kept while `old` shrinks).
    pub(super) old_mask: usize,
    /// Occupied slots, expired or not: those of `slots` and the unmoved ones of `old`.
    pub(super) len: usize,
    /// Most entries this shard holds: its share of the cache's capacity.
    pub(super) capacity: usize,
    /// No entry of either table expires before this (Unix seconds; `u64::MAX` when empty). A
    /// lower bound: renewing or dropping an entry can leave it too low, which only costs one
    /// needless full sweep; each finished walk (a move or a sweep pass) makes it exact again,
    /// up to renewals.
    pub(super) earliest_expiry: u64,
    /// The latest expiry of an entry this table has let go of (dropped by a move or a sweep,
    /// or renewed in place); 0 before any. A request expiring no later than this is refused
    /// as [`ReplayError::Expired`]: its nonce may be one of those forgotten.
    forgotten_until: u64,
    /// The earliest expiry the walk under way (a move or a sweep pass) has kept, and of every
    /// entry written since it began: when the walk ends this is a lower bound for every entry
    /// held, and becomes `earliest_expiry`.
    walk_earliest: u64,
    /// Slots the sweep pass under way has yet to visit; 0 when none is.
    pub(super) sweep_left: usize,
    /// The slot the sweep pass goes on from.
    sweep_at: usize,
    /// A sweep period started during a growth: its pass begins when the move ends.
    sweep_due: bool,
    /// This table holds the cache's [`Shared::moving`] token for its growth under way.
    pub(super) holds_token: bool,
    /// Sweep passes started so far (full sweeps included), so tests can follow the schedule.
    #[cfg(test)]
    pub(super) sweeps: usize,
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
    pub(super) fn new(capacity: usize, sweep_offset: u64) -> Table {
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
    pub(super) fn prefetch(&self, key: u64) {
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
    pub(super) fn admit(
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
    pub(super) fn max_slots(&self) -> usize {
        (self.capacity.saturating_mul(4) / 3 + 1)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX / 2 + 1)
            .max(MIN_SLOTS)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// True while a growth moves entries from `old` into `slots`.
    pub(super) fn growing(&self) -> bool {
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
    pub(super) fn grow(&mut self, now: u64) {
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
            // table in the last step, where one `munmap` of the whole table would stall that
            // admission many times longer than a move step (bench/analysis.md).
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

/// Test-only views of a table: what it holds, and every invariant it keeps.
#[cfg(test)]
impl Table {
    /// Every entry held: those of `slots` and the unmoved ones of `old`.
    pub(super) fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.slots
            .iter()
            .chain(&self.old)
            .copied()
            .filter(|&e| e != EMPTY)
    }

    /// Where `key` is held, as a lookup sees it: `Some(true)` in the old table of a growth,
    /// `Some(false)` in `slots`.
    pub(super) fn holds(&self, key: u64) -> Option<bool> {
        match self.find(key) {
            Probe::Found(_) => Some(false),
            Probe::Empty(_) => self.find_old(key).map(|_| true),
        }
    }

    /// Every invariant a lookup, an insert or the fail-closed path relies on.
    pub(super) fn check(&self) {
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
