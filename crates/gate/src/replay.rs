//! The replay store: remembers each verified request's nonce until its timestamp leaves the skew
//! window, so that a signed request passes once (docs/protocol.md, "What the gate checks, in
//! order"). The proxy asks it through one interface, [`ReplayStore`]; behind it is this
//! process's own bounded table, [`NonceCache`], which fails closed when full.
//!
//! Why the interface is shaped so:
//! - Two calls, as the request path has two moments: [`ReplayStore::prefetch`] right after the
//!   header checks, which records nothing (the nonce is not verified yet), and
//!   [`ReplayStore::admit_prefetched`] once the body is in and the MAC verified. In between the
//!   in-memory table loads the nonce's slot into the CPU cache while the body is read and hashed.
//! - The admission is synchronous: the in-memory table answers under one shard's lock, so the
//!   request path takes no `await`, box, dynamic call or allocation for it. The store is an enum
//!   rather than a trait object for the same reason: each call is one `match` the compiler sees
//!   through. A store across the network, which answers within a time budget, joins as a variant
//!   with an admission of its own that the proxy awaits, and leaves this path as it is.
//! - Success is an [`Admitted`] proof, which only this module builds; the proxy forwards a
//!   request as verified only with one.
//! - Refusal is a [`ReplayError`], which the proxy turns into a status in one exhaustive `match`
//!   (`Gate::admit`): a new kind of refusal, such as a store that cannot answer, does not compile
//!   until the proxy says what it answers.
//!
//! | file | owns |
//! | --- | --- |
//! | `replay.rs` | the interface: [`ReplayStore`], [`Prefetched`], [`Admitted`], [`ReplayError`] |
//! | `replay/memory.rs` | [`NonceCache`]: the nonce's keyed hash, the shards and their shares of the capacity, the entry count |
//! | `replay/table.rs` | one shard's open-addressing probe table: slots, lookup and insert, incremental growth and sweeps, the slot prefetch |
//! | `replay/tests.rs` | the tests: answers against a plain model, every table invariant after every step |

mod memory;
mod table;

#[cfg(test)]
mod tests;

pub use memory::{HashedNonce, NonceCache};

use crate::keyring::{KeyIndex, Slot};
use crate::verify::Verified;

/// Why the replay store refused a verified request.
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
/// as verified. Built only by this module's stores, when they admit a [`Verified`] request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    key: KeyIndex,
}

impl Admitted {
    /// The proof for a request that verified and whose nonce was fresh.
    pub(crate) fn new(verified: &Verified<'_>) -> Admitted {
        Admitted {
            key: verified.key_index(),
        }
    }

    /// The key that verified, in the keyring that verified the request.
    pub fn key(&self) -> KeyIndex {
        self.key
    }

    /// The environment secret that verified; `None` for a registry key.
    pub fn slot(&self) -> Option<Slot> {
        self.key.slot()
    }
}

/// Where the gate records accepted nonces: the one interface the proxy admits through.
#[derive(Debug)]
pub enum ReplayStore {
    /// This process's own bounded table (`GATE_NONCE_CACHE_CAPACITY`): it knows the nonces this
    /// process accepted since it started.
    Memory(NonceCache),
}

/// What [`ReplayStore::prefetch`] started for a nonce, for [`ReplayStore::admit_prefetched`].
#[derive(Debug)]
pub enum Prefetched<'a> {
    /// The in-memory table's: the nonce hashed, its slot on its way into the CPU cache.
    Memory(HashedNonce<'a>),
}

impl ReplayStore {
    /// Start looking `nonce` up, as soon as the request's headers pass and before its body is
    /// read. A hint: nothing is recorded and no answer changes (see [`NonceCache::prefetch`]).
    #[inline]
    pub fn prefetch<'a>(&'a self, nonce: &'a str) -> Prefetched<'a> {
        match self {
            ReplayStore::Memory(cache) => Prefetched::Memory(cache.prefetch(nonce)),
        }
    }

    /// Record a verified request's nonce, or refuse it. `now` is Unix seconds, read once the
    /// body is in; `prefetched` is what [`ReplayStore::prefetch`] gave for this request's
    /// nonce (one made for another nonce or store costs a hash, never a wrong answer: see
    /// [`NonceCache::admit_prefetched`]).
    #[inline]
    pub fn admit_prefetched(
        &self,
        verified: Verified<'_>,
        prefetched: &Prefetched<'_>,
        now: u64,
    ) -> Result<Admitted, ReplayError> {
        match (self, prefetched) {
            (ReplayStore::Memory(cache), Prefetched::Memory(hashed)) => {
                cache.admit_prefetched(verified, hashed, now)
            }
        }
    }

    /// Nonces this process holds, expired ones not yet swept included: the
    /// `sig_gate_nonce_cache_entries` gauge, read when scraped.
    pub fn len(&self) -> usize {
        match self {
            ReplayStore::Memory(cache) => cache.len(),
        }
    }

    /// True when this process holds no nonce.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
