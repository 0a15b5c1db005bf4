//! The replay store: remembers each verified request's nonce until its timestamp leaves the skew
//! window, so that a signed request passes once (docs/protocol.md, "What the gate checks, in
//! order"). The proxy asks it through one interface, [`ReplayStore`]; behind it is this
//! process's own bounded table, [`NonceCache`], which fails closed when full, or a Redis that
//! every replica shares, [`RedisStore`], which fails closed when it cannot answer in time
//! (`GATE_REPLAY_STORE`, docs/operations.md, "Shared replay store").
//!
//! Why the interface is shaped so:
//! - Two calls, as the request path has two moments: [`ReplayStore::prefetch`] right after the
//!   header checks, which records nothing (the nonce is not verified yet), and
//!   [`ReplayStore::admit_prefetched`] once the body is in and the MAC verified. In between the
//!   in-memory table loads the nonce's slot into the CPU cache while the body is read and hashed.
//! - The admission is synchronous: the in-memory table answers under one shard's lock, so the
//!   request path takes no `await`, box, dynamic call or allocation for it. The store is an enum
//!   rather than a trait object for the same reason: each call is one `match` the compiler sees
//!   through. The store across the network, which answers within a time budget, is a variant
//!   whose admission is an [`Admission::Pending`] future the proxy awaits (boxed, so the
//!   request's own future does not grow by it); the in-memory admission is
//!   [`Admission::Ready`] and takes no `await`.
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
//! | `replay/location.rs` | [`StoreLocation`]: `GATE_REPLAY_STORE` parsed, its password never printed |
//! | `replay/redis.rs` | [`RedisStore`]: `SET NX PX` on one server or a cluster, the time budget, reconnecting, the health probe |
//! | `replay/redis/lane.rs` | group commit on one worker's connection to a single server: one batch on its way, the next one queued |
//! | `replay/table.rs` | one shard's open-addressing probe table: slots, lookup and insert, incremental growth and sweeps, the slot prefetch |
//! | `replay/tests.rs` | the tests: answers against a plain model, every table invariant after every step |

mod location;
mod memory;
mod redis;
mod table;

#[cfg(test)]
mod tests;

pub use self::redis::{RedisStore, probe};
pub use location::{Node, Password, RedisUrl, StoreLocation};
pub use memory::{HashedNonce, NonceCache};

use std::future::Future;
use std::pin::Pin;

use crate::config::Config;
use crate::keyring::{KeyIndex, Slot};
use crate::metrics::ReplayStoreMetrics;
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
    /// The shared store did not answer within its budget; failing closed.
    #[error("replay store unavailable ({})", .0.as_str())]
    Unavailable(StoreFailure),
}

/// Why the shared store could not answer: the `kind` of `sig_gate_replay_store_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// No answer within `GATE_REPLAY_STORE_TIMEOUT_MS`.
    Timeout,
    /// No connection: refused, reset, closed, unreachable, or authentication failed.
    Connection,
    /// The store answered with an error or an unexpected reply.
    Reply,
}

impl StoreFailure {
    /// Every kind, in label registration order.
    pub const ALL: [StoreFailure; 3] = [
        StoreFailure::Timeout,
        StoreFailure::Connection,
        StoreFailure::Reply,
    ];

    /// The `kind` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreFailure::Timeout => "timeout",
            StoreFailure::Connection => "connection",
            StoreFailure::Reply => "reply",
        }
    }
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
    /// A Redis server or cluster (`GATE_REPLAY_STORE=redis://...` or `redis-cluster://...`):
    /// it knows the nonces every gate sharing it accepted, across restarts.
    Redis(RedisStore),
}

/// What [`ReplayStore::prefetch`] started for a nonce, for [`ReplayStore::admit_prefetched`].
#[derive(Debug)]
pub enum Prefetched<'a> {
    /// The in-memory table's: the nonce hashed, its slot on its way into the CPU cache.
    Memory(HashedNonce<'a>),
    /// Nothing to start for a store across the network.
    Remote,
}

/// The answer of [`ReplayStore::admit_prefetched`]: at once, or a future to await.
pub enum Admission<'a> {
    /// The in-memory table's answer.
    Ready(Result<Admitted, ReplayError>),
    /// The shared store's answer, due within its budget.
    Pending(Pin<Box<dyn Future<Output = Result<Admitted, ReplayError>> + Send + 'a>>),
}

impl Admission<'_> {
    /// The answer when it is already there (the in-memory table's always is), without a
    /// runtime to await it.
    pub fn ready(self) -> Option<Result<Admitted, ReplayError>> {
        match self {
            Admission::Ready(answer) => Some(answer),
            Admission::Pending(_) => None,
        }
    }
}

impl std::fmt::Debug for Admission<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Admission::Ready(result) => f.debug_tuple("Ready").field(result).finish(),
            Admission::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl ReplayStore {
    /// The store `config` names (`GATE_REPLAY_STORE`), counting into `metrics`. A Redis store
    /// connects in the background (it must be built inside a tokio runtime), so the gate
    /// starts whether or not Redis answers yet.
    pub fn new(config: &Config, metrics: ReplayStoreMetrics) -> ReplayStore {
        match &config.replay_store {
            StoreLocation::Memory => {
                metrics.set_up(true);
                tracing::info!(
                    capacity = config.nonce_cache_capacity,
                    "replay protection is per process (GATE_REPLAY_STORE=memory): a request \
                     accepted here can be replayed to another replica, or to this one after a \
                     restart, within GATE_CLOCK_SKEW_SECS (docs/operations.md, \
                     \"Shared replay store\")"
                );
                ReplayStore::Memory(NonceCache::new(
                    config.nonce_cache_capacity,
                    config.clock_skew_secs,
                ))
            }
            StoreLocation::Redis(url) => {
                tracing::info!(
                    store = %url,
                    timeout_ms = config.replay_store_timeout.as_millis() as u64,
                    "replay store: nonces recorded in Redis, shared by every gate using it"
                );
                ReplayStore::Redis(RedisStore::new(
                    url.clone(),
                    config.replay_store_timeout,
                    &config.replay_store_prefix,
                    config.clock_skew_secs,
                    metrics,
                ))
            }
        }
    }

    /// Start looking `nonce` up, as soon as the request's headers pass and before its body is
    /// read. A hint: nothing is recorded and no answer changes (see [`NonceCache::prefetch`]).
    #[inline]
    pub fn prefetch<'a>(&'a self, nonce: &'a str) -> Prefetched<'a> {
        match self {
            ReplayStore::Memory(cache) => Prefetched::Memory(cache.prefetch(nonce)),
            ReplayStore::Redis(_) => Prefetched::Remote,
        }
    }

    /// Record a verified request's nonce, or refuse it. `now` is Unix seconds, read once the
    /// body is in; `prefetched` is what [`ReplayStore::prefetch`] gave for this request's
    /// nonce (one made for another nonce or store costs a hash, never a wrong answer: see
    /// [`NonceCache::admit_prefetched`]). The shared store's answer is a future, which holds
    /// no part of the request.
    #[inline]
    pub fn admit_prefetched(
        &self,
        verified: Verified<'_>,
        prefetched: &Prefetched<'_>,
        now: u64,
    ) -> Admission<'_> {
        match (self, prefetched) {
            (ReplayStore::Memory(cache), Prefetched::Memory(hashed)) => {
                Admission::Ready(cache.admit_prefetched(verified, hashed, now))
            }
            (ReplayStore::Memory(cache), Prefetched::Remote) => {
                Admission::Ready(cache.admit(verified, now))
            }
            (ReplayStore::Redis(store), _) => Admission::Pending(store.admit(verified)),
        }
    }

    /// Nonces this process holds, expired ones not yet swept included: the
    /// `sig_gate_nonce_cache_entries` gauge, read when scraped.
    pub fn len(&self) -> usize {
        match self {
            ReplayStore::Memory(cache) => cache.len(),
            ReplayStore::Redis(_) => 0,
        }
    }

    /// True when this process holds no nonce.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
