//! The replay cache: remembers each accepted nonce until its timestamp leaves the skew window,
//! never holds more than its capacity, and fails closed when full (docs/protocol.md, "What the
//! gate checks, in order"). A verified request is admitted through [`NonceCache`], and only an
//! admission builds the [`Admitted`] proof that lets it through.
//!
//! | file | owns |
//! | --- | --- |
//! | `replay.rs` | what the proxy sees: [`Admitted`], [`ReplayError`] |
//! | `replay/memory.rs` | [`NonceCache`]: the nonce's keyed hash, the shards and their shares of the capacity, the entry count |
//! | `replay/table.rs` | one shard's open-addressing probe table: slots, lookup and insert, incremental growth and sweeps, the slot prefetch |
//! | `replay/tests.rs` | the tests: answers against a plain model, every table invariant after every step |

mod memory;
mod table;

#[cfg(test)]
mod tests;

pub use memory::{NonceCache, Prefetched};

use crate::keyring::Slot;

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
