//! The replay store's tests: its answers against a plain model of the semantics, over many
//! shards, steps and clocks; and every invariant of the shard tables after every step of their
//! growths and sweep passes, which the tests run a slot or a few at a time.

use std::sync::atomic::Ordering;

use http::HeaderMap;

use super::table::{EMPTY, Steps, Table, entry};
use super::*;
use crate::keyring::{Key, Keyring, Secret};
use crate::protocol;
use crate::sign::{Request, Signer};
use crate::verify::{self, Pending, RequestLine, Verified};

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
fn admit(cache: &NonceCache, nonce: &str, timestamp: u64, now: u64) -> Result<Slot, ReplayError> {
    checked(nonce, timestamp, now, |pending| {
        cache
            .admit(verified(pending), now)
            .map(|a| a.slot().expect("an environment key"))
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
    prefetched: Option<&HashedNonce<'_>>,
) -> Result<Slot, ReplayError> {
    checked(nonce, now, now, |pending| {
        let own = cache.prefetch(pending.nonce());
        cache
            .admit_prefetched(verified(pending), prefetched.unwrap_or(&own), now)
            .map(|a| a.slot().expect("an environment key"))
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
fn the_store_answers_as_its_memory_table() {
    let store = ReplayStore::Memory(NonceCache::new(2, WINDOW));
    // As the gate calls it: prefetch after the header checks, admit once verified.
    let offer = |nonce: &str, now: u64| {
        checked(nonce, T0, now, |pending| {
            let prefetched = store.prefetch(pending.nonce());
            match store.admit_prefetched(verified(pending), &prefetched, now) {
                Admission::Ready(answer) => answer.map(|a| a.slot().expect("an environment key")),
                Admission::Pending(_) => panic!("the memory table answers at once"),
            }
        })
    };
    assert!(store.is_empty());
    assert_eq!(offer(&nonce(1), T0), Ok(Slot::Current));
    assert_eq!(offer(&nonce(1), T0 + 1), Err(ReplayError::Replayed));
    assert_eq!(offer(&nonce(2), T0 + 1), Ok(Slot::Current));
    assert_eq!(offer(&nonce(3), T0 + 1), Err(ReplayError::Full));
    assert_eq!(store.len(), 2);
    let ReplayStore::Memory(cache) = &store else {
        panic!("a memory store")
    };
    assert_eq!(cache.len(), 2);
    assert_eq!(
        admit(cache, &nonce(2), T0, T0 + 1),
        Err(ReplayError::Replayed)
    );
}

#[test]
fn the_store_prefetch_is_held_at_the_memory_tables_size() {
    // The request's future holds it while the body arrives: going through the store adds no
    // byte to it.
    assert_eq!(
        std::mem::size_of::<Prefetched<'_>>(),
        std::mem::size_of::<HashedNonce<'_>>()
    );
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

/// The replay semantics of docs/protocol.md in the plainest form, one per shard: a map from nonce to
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
