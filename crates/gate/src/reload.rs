//! The keys in force and their live reload (docs/operations.md, "Reloading keys").
//!
//! The keys in force are one [`Generation`]: a [`Keyring`] and each key's resolved counters,
//! never changed once built. [`KeysInForce`] holds the current generation in an
//! [`ArcSwap`]: a request takes the generation once ([`KeysInForce::current`], an atomic
//! load and reference-count increment, no lock) and verifies, counts and forwards with it
//! alone, so no request sees half a reload; a reload builds a whole new generation and swaps
//! it in with one atomic store. Requests in flight finish with the generation they took.
//!
//! [`watch`] reloads on SIGHUP at once, and when a key file changes: every [`POLL`] it reads
//! again each file the last load read (the registry, its secret files, the `_FILE` secrets)
//! and compares a keyed hash of their contents. Reading the contents, rather than watching
//! for file-system events or comparing modification times, notices every way a file is
//! replaced: rewritten in place (even within one timestamp tick), renamed over, or the
//! `..data` symlink Kubernetes swaps when it updates a mounted Secret. A change is loaded once
//! the files have stopped changing for [`SETTLE`], so a file caught half-written is not
//! loaded. A reload runs every start-up check; one that fails keeps the keys in force, logs
//! the problem (never a secret) and counts `sig_gate_reload_total{result="error"}`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::signal::unix::Signal;

use crate::config::{ConfigError, KeySource, Watched};
use crate::keyring::{KeyIndex, Keyring};
use crate::metrics::{KeyCounters, Metrics};

/// How often the key files are read again. With [`SETTLE`] and the load itself, a change is
/// in force well within 10 seconds.
pub const POLL: Duration = Duration::from_secs(2);

/// How long changed files must stay unchanged before they are loaded.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Most settling rounds before a change is loaded anyway (files that never stop changing).
const MAX_SETTLE_ROUNDS: u32 = 6;

/// The keys in force at one moment and their counters, parallel to [`Keyring::keys`].
#[derive(Debug)]
pub struct Generation {
    keyring: Keyring,
    counters: Vec<KeyCounters>,
}

impl Generation {
    /// Install `keyring`'s series in `metrics` and resolve its counters.
    fn new(keyring: Keyring, metrics: &Metrics) -> Generation {
        let counters = metrics.install_keys(&keyring);
        Generation { keyring, counters }
    }

    /// The keys.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The counters of the key `index` names (an index of this generation's keyring).
    pub fn counters(&self, index: KeyIndex) -> Option<&KeyCounters> {
        self.counters.get(index.index())
    }
}

/// The current [`Generation`], swapped whole by a reload.
#[derive(Debug)]
pub struct KeysInForce {
    current: ArcSwap<Generation>,
}

impl KeysInForce {
    /// The start-up keys.
    pub fn new(keyring: Keyring, metrics: &Metrics) -> KeysInForce {
        KeysInForce {
            current: ArcSwap::from_pointee(Generation::new(keyring, metrics)),
        }
    }

    /// The generation in force now; a request keeps it to the end.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Put `keyring` in force.
    fn replace(&self, keyring: Keyring, metrics: &Metrics) {
        self.current
            .store(Arc::new(Generation::new(keyring, metrics)));
    }
}

/// What set a reload off, for the log.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Hangup,
    FileChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Hangup => "SIGHUP",
            Trigger::FileChanged => "key file changed",
        }
    }
}

/// Reload the keys on SIGHUP (`hangup`, installed before the gate listens) and when a file `watched`
/// (what the start-up load read) changes, until the task is dropped.
pub async fn watch(
    keys: Arc<KeysInForce>,
    source: KeySource,
    watched: Watched,
    metrics: Metrics,
    mut hangup: Signal,
) {
    let source = Arc::new(source);
    let mut watched = Arc::new(watched);
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let trigger = tokio::select! {
            Some(()) = hangup.recv() => Trigger::Hangup,
            _ = ticks.tick() => {
                if !settled_change(&watched).await {
                    continue;
                }
                Trigger::FileChanged
            }
        };
        let loading = Arc::clone(&source);
        let Ok((result, now_watched)) =
            tokio::task::spawn_blocking(move || loading.load_watched()).await
        else {
            // The blocking task panicked: keep the keys, try again on the next change.
            metrics.reload(false);
            tracing::error!(
                trigger = trigger.as_str(),
                "key reload failed: the loader panicked"
            );
            continue;
        };
        watched = Arc::new(now_watched);
        apply(&keys, &metrics, result, trigger);
    }
}

/// Put a loaded keyring in force, or keep the old one; count and log either way.
fn apply(
    keys: &KeysInForce,
    metrics: &Metrics,
    result: Result<Keyring, ConfigError>,
    trigger: Trigger,
) {
    match result {
        Ok(keyring) => {
            let ids: Vec<String> = keyring
                .keys()
                .iter()
                .map(|key| format!("{}:{}:{}", key.caller(), key.id(), key.fingerprint()))
                .collect();
            keys.replace(keyring, metrics);
            metrics.reload(true);
            tracing::info!(
                trigger = trigger.as_str(),
                keys = ids.join(","),
                "keys reloaded"
            );
        }
        Err(err) => {
            metrics.reload(false);
            tracing::error!(
                trigger = trigger.as_str(),
                error = %err,
                "key reload failed: the keys in force stay"
            );
        }
    }
}

/// Whether the watched files changed, waiting until they stay unchanged for [`SETTLE`].
async fn settled_change(watched: &Arc<Watched>) -> bool {
    let reading = Arc::clone(watched);
    let Ok(Some(mut seen)) =
        tokio::task::spawn_blocking(move || reading.changed().then(|| reading.contents())).await
    else {
        return false;
    };
    for _ in 0..MAX_SETTLE_ROUNDS {
        tokio::time::sleep(SETTLE).await;
        let reading = Arc::clone(watched);
        let Ok(now) = tokio::task::spawn_blocking(move || reading.contents()).await else {
            return true;
        };
        if now == seen {
            break;
        }
        seen = now;
    }
    true
}
