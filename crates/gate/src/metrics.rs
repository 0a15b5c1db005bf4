//! Prometheus metrics (README, "Metrics"). Every series is registered once at start-up, every
//! labelled series exists at 0 from the start (so `rate()` works at once), and the request path
//! holds resolved handles: counting is one atomic add, with no label lookup.
//!
//! The series of each key in force (`metrics/keys.rs`) follow the keys: a reload installs
//! the new keys' series at 0, keeps the counts of keys it keeps, and removes the rest.

mod keys;

pub use keys::KeyCounters;

use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::config::Config;
use crate::keyring::Slot;
use crate::replay::StoreFailure;
use crate::verify::Reason;

/// What happened to a request, as `sig_gate_requests_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded after verification (or in report-only mode).
    Forwarded,
    /// Answered by the gate with an error status.
    Rejected,
    /// Forwarded without checks: an unsigned path.
    Exempt,
    /// The upstream failed (502) or timed out (504).
    UpstreamError,
}

impl Outcome {
    /// Every outcome, in label registration order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Forwarded,
        Outcome::Rejected,
        Outcome::Exempt,
        Outcome::UpstreamError,
    ];

    /// The `outcome` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Rejected => "rejected",
            Outcome::Exempt => "exempt",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

/// Rejections that are not about the signature: `sig_gate_rejected_other_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherReason {
    /// Body over `GATE_MAX_BODY_BYTES` (413).
    BodyTooLarge,
    /// Replay cache at capacity (503, fail closed).
    ReplayCacheFull,
    /// The shared replay store did not answer within its budget (503, fail closed).
    ReplayStoreUnavailable,
}

impl OtherReason {
    /// Every reason, in label registration order.
    pub const ALL: [OtherReason; 3] = [
        OtherReason::BodyTooLarge,
        OtherReason::ReplayCacheFull,
        OtherReason::ReplayStoreUnavailable,
    ];

    /// The `reason` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            OtherReason::BodyTooLarge => "body_too_large",
            OtherReason::ReplayCacheFull => "replay_cache_full",
            OtherReason::ReplayStoreUnavailable => "replay_store_unavailable",
        }
    }
}

/// Histogram buckets for the whole request, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Histogram buckets for clock skew, in seconds: fine near zero, then around the default
/// 300 s window, then far beyond it.
const SKEW_BUCKETS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0, 300.0, 600.0, 3600.0, 86400.0,
];

/// Histogram buckets for one replay store operation, in seconds: a loopback or same-zone
/// round trip up to the largest sensible `GATE_REPLAY_STORE_TIMEOUT_MS`.
const STORE_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The registry and a resolved handle for every series the request path touches.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: [IntCounter; 4],
    invalid: [IntCounter; 7],
    other: [IntCounter; 3],
    verified: [IntCounter; 2],
    duration: Histogram,
    clock_skew: Histogram,
    nonce_entries: IntGauge,
    connections: ConnectionMetrics,
    replay_store: ReplayStoreMetrics,
    keys: keys::KeySeries,
    config_info: ConfigInfo,
}

/// `sig_gate_config_info`: the labels that never change, and the series shown now, which a
/// reload replaces when the environment secrets' fingerprints change.
#[derive(Debug, Clone)]
struct ConfigInfo {
    gauge: IntGaugeVec,
    require_signature: &'static str,
    replay_store: &'static str,
    shown: Arc<Mutex<Vec<String>>>,
}

/// The shared replay store's series (docs/operations.md, "Shared replay store"), handed to the
/// store, which counts its own operations.
#[derive(Debug, Clone)]
pub struct ReplayStoreMetrics {
    duration: Histogram,
    errors: [IntCounter; 3],
    up: IntGauge,
}

impl ReplayStoreMetrics {
    /// Record one store operation's duration in seconds, failed ones included.
    pub fn operation(&self, seconds: f64) {
        self.duration.observe(seconds);
    }

    /// Count one failed store operation.
    pub fn failed(&self, failure: StoreFailure) {
        self.errors[failure as usize].inc();
    }

    /// Whether the store answers.
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }
}

/// Client connections and the limits that protect them (docs/operations.md).
#[derive(Debug, Clone)]
struct ConnectionMetrics {
    open: IntGauge,
    refused: IntCounter,
    body_budget_refused: IntCounter,
    /// `sig_gate_worker_connections_total{worker}`, indexed by worker.
    per_worker: Vec<IntCounter>,
}

impl Metrics {
    /// Register every metric; `config` fills `sig_gate_config_info` and the capacity gauge.
    pub fn new(config: &Config) -> Metrics {
        // Registration fails only on a duplicate name or bad label set: a programming error
        // caught by the first test that builds a Metrics.
        const VALID: &str = "metric definitions are static and unique";
        let registry = Registry::new();
        let register = |c: Box<dyn prometheus::core::Collector>| registry.register(c).expect(VALID);

        let counter_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), &[label]).expect(VALID);
            register(Box::new(vec.clone()));
            values
                .iter()
                .map(|v| vec.with_label_values(&[v]))
                .collect::<Vec<_>>()
        };
        let requests = counter_vec(
            "sig_gate_requests_total",
            "Requests by outcome.",
            "outcome",
            &Outcome::ALL.map(Outcome::as_str),
        );
        let invalid = counter_vec(
            "sig_gate_invalid_request_signature_total",
            "Requests that failed signature verification, by reason.",
            "reason",
            &Reason::ALL.map(Reason::as_str),
        );
        let other = counter_vec(
            "sig_gate_rejected_other_total",
            "Requests rejected for a reason other than the signature.",
            "reason",
            &OtherReason::ALL.map(OtherReason::as_str),
        );
        let verified = counter_vec(
            "sig_gate_verified_total",
            "Requests whose signature verified, by the secret slot that verified them.",
            "slot",
            &Slot::ALL.map(Slot::as_str),
        );

        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let histogram =
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                    .expect(VALID);
            register(Box::new(histogram.clone()));
            histogram
        };
        let duration = histogram(
            "sig_gate_request_duration_seconds",
            "Whole request as seen by the gate, in seconds.",
            &DURATION_BUCKETS,
        );
        let clock_skew = histogram(
            "sig_gate_clock_skew_seconds",
            "Absolute distance between the gate's clock and X-Gate-Timestamp, in seconds.",
            &SKEW_BUCKETS,
        );

        let nonce_entries = IntGauge::new(
            "sig_gate_nonce_cache_entries",
            "Nonces held by the replay cache.",
        )
        .expect(VALID);
        register(Box::new(nonce_entries.clone()));
        let nonce_capacity = IntGauge::new(
            "sig_gate_nonce_cache_capacity",
            "Most nonces the replay cache holds (GATE_NONCE_CACHE_CAPACITY).",
        )
        .expect(VALID);
        nonce_capacity.set(i64::try_from(config.nonce_cache_capacity).unwrap_or(i64::MAX));
        register(Box::new(nonce_capacity));

        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect(VALID);
            register(Box::new(gauge.clone()));
            gauge
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect(VALID);
            register(Box::new(counter.clone()));
            counter
        };
        let worker_labels: Vec<String> = (0..config.workers).map(|w| w.to_string()).collect();
        let connections = ConnectionMetrics {
            open: gauge(
                "sig_gate_connections_open",
                "Client connections open on the proxy listener.",
            ),
            refused: counter(
                "sig_gate_connections_refused_total",
                "Client connections closed at accept because GATE_MAX_CONNECTIONS were open.",
            ),
            body_budget_refused: counter(
                "sig_gate_body_budget_refused_total",
                "Requests refused with 503 because the request-body budget \
                 (GATE_MAX_BUFFERED_BODY_BYTES) had no room for their body.",
            ),
            per_worker: counter_vec(
                "sig_gate_worker_connections_total",
                "Client connections served by each worker (GATE_WORKERS). A worker hands a \
                 connection it accepts to the worker serving the fewest, so the open \
                 connections stay even; those closed at once for GATE_MAX_CONNECTIONS count \
                 on no worker.",
                "worker",
                &worker_labels.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
        };

        let replay_store = ReplayStoreMetrics {
            duration: histogram(
                "sig_gate_replay_store_duration_seconds",
                "Operations on the shared replay store (GATE_REPLAY_STORE), connecting \
                 included, in seconds.",
                &STORE_BUCKETS,
            ),
            errors: to_array(counter_vec(
                "sig_gate_replay_store_errors_total",
                "Replay store operations that failed, by kind: timeout, connection, reply.",
                "kind",
                &StoreFailure::ALL.map(StoreFailure::as_str),
            )),
            up: gauge(
                "sig_gate_replay_store_up",
                "1 while the replay store answers, 0 otherwise (always 1 for memory).",
            ),
        };

        let info = IntGaugeVec::new(
            Opts::new(
                "sig_gate_config_info",
                "The running configuration; secrets appear only as fingerprints.",
            ),
            &[
                "mode",
                "strict_key_id",
                "require_signature",
                "key_id",
                "key_id_prev",
                "fingerprint",
                "fingerprint_prev",
                "replay_store",
            ],
        )
        .expect(VALID);
        let config_info = ConfigInfo {
            gauge: info.clone(),
            require_signature: bool_label(config.require_signature),
            replay_store: config.replay_store.kind(),
            shown: Arc::default(),
        };
        register(Box::new(info));

        let keys = keys::KeySeries::register(&registry);
        Metrics {
            keys,
            registry,
            requests: to_array(requests),
            invalid: to_array(invalid),
            other: to_array(other),
            verified: to_array(verified),
            duration,
            clock_skew,
            nonce_entries,
            connections,
            replay_store,
            config_info,
        }
    }

    /// The replay store's handles.
    pub fn replay_store(&self) -> ReplayStoreMetrics {
        self.replay_store.clone()
    }

    /// Count one request's outcome and its duration in seconds.
    pub fn request(&self, outcome: Outcome, seconds: f64) {
        self.requests[outcome as usize].inc();
        self.duration.observe(seconds);
    }

    /// Count one signature failure.
    pub fn invalid(&self, reason: Reason) {
        self.invalid[reason.index()].inc();
    }

    /// Count one non-signature rejection.
    pub fn rejected_other(&self, reason: OtherReason) {
        self.other[reason as usize].inc();
    }

    /// Count one request verified by an environment secret.
    pub fn verified(&self, slot: Slot) {
        self.verified[slot as usize].inc();
    }

    /// Record the distance between a request's timestamp and the gate's clock.
    pub fn clock_skew(&self, seconds: u64) {
        // Seconds fit an f64 exactly far beyond any timestamp of 12 digits.
        self.clock_skew.observe(seconds as f64);
    }

    /// Set the replay cache size gauge.
    pub fn nonce_entries(&self, entries: usize) {
        self.nonce_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Count one open client connection until the returned guard drops.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections.open.inc();
        OpenConnection(self.connections.open.clone())
    }

    /// Count one connection closed at accept for `GATE_MAX_CONNECTIONS`.
    pub fn connection_refused(&self) {
        self.connections.refused.inc();
    }

    /// The counter of connections served by worker `worker` (< `GATE_WORKERS`), resolved
    /// once by the worker.
    pub fn worker_connections(&self, worker: usize) -> IntCounter {
        self.connections.per_worker[worker].clone()
    }

    /// Count one request refused because the body budget was used up.
    pub fn body_budget_refused(&self) {
        self.connections.body_budget_refused.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail on I/O; a failure would be a malformed metric family,
        // which registration already rules out.
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory");
        out
    }
}

/// One open connection in `sig_gate_connections_open`, until dropped.
#[derive(Debug)]
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn bool_label(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

fn to_array<const N: usize>(handles: Vec<IntCounter>) -> [IntCounter; N] {
    // Each vector is built from a fixed label list of exactly N values.
    handles
        .try_into()
        .unwrap_or_else(|v: Vec<_>| panic!("expected {N} label values, got {}", v.len()))
}
