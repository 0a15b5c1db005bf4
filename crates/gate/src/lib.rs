//! The gate: a verifying reverse proxy for signed internal requests, run as a sidecar in front
//! of an internal service. Calling services sign each request with a shared secret or a key of
//! their own ([`sign`]); the gate verifies ([`verify`]), forwards valid requests unchanged with
//! the caller it verified, and streams the response back ([`proxy`]), rejects the rest with
//! 401, and counts every rejection by reason ([`metrics`]). The wire format is specified in `docs/protocol.md`; the interface (commands,
//! variables, headers, status codes, metric names) in README.md and `docs/operations.md`.
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`protocol`] | header names, value syntax, the signed strings of versions 1 and 2, hex: shared by signer and verifier |
//! | [`keyring`] | secrets (never printed: fingerprints only), Ed25519 public keys, [`keyring::Key`] of either algorithm with its caller and origin (current/previous slot or registry), the [`keyring::Keyring`] of one moment |
//! | [`registry`] | the key registry (`GATE_KEYS_FILE`): parsing and every refusal, naming the file and the entry |
//! | [`verify`] | pure verification: where each `X-Gate-*` header is parsed and each [`verify::Reason`] decided, version 1 and 2, observe keys' [`verify::Observations`]; [`verify::malformed`] reads the shared table of malformed headers every suite checks |
//! | [`replay`] | the replay store the proxy admits through ([`replay::ReplayStore`]): the bounded in-memory nonce cache (`replay/`: shards, probe table, growth and sweeps) or the Redis every replica shares ([`replay::RedisStore`], `replay/redis.rs`; `GATE_REPLAY_STORE` parsed in `replay/location.rs`); its [`replay::Admitted`] proof is what lets a request through |
//! | [`sign`] | the signer (`sig-gate sign`, the drill's clients): version 1, and version 2 with an HMAC or Ed25519 [`sign::SigningKey`] |
//! | [`clock`] | the wall clock timestamps are checked against and stamped with |
//! | [`random`] | the OS random source: nonces, request-id prefixes, new secrets |
//! | [`config`] | figment layers (defaults < TOML < env) into a typed [`config::Config`]; every refusal names its variable; [`config::KeySource`] (`config/keys.rs`): where the keys come from, loaded the same way at start-up and on every reload, and the [`config::Watched`] files |
//! | [`proxy`] | the hyper service: gate, then [`proxy::Gate::forward`], where a byte leaves for the upstream (and `X-Gate-Verified-Key-Id` / `-Caller` are added); one [`proxy::Gate`] per process, shared by the workers; the access log line (`GATE_ACCESS_LOG`) |
//! | [`reload`] | the keys in force: one immutable [`reload::Generation`] swapped whole ([`reload::KeysInForce`]); the task that reloads on SIGHUP and on a changed key file |
//! | [`budget`] | the body budget: request-body bytes held per connection and per process while bodies arrive |
//! | [`upstream`] | the keep-alive [`upstream::Pool`] to the upstream, one per worker, driven in the request's own task (`upstream/`: pool, request encoding, response head, chunked decoding, body); strict response framing |
//! | [`server`] | the listeners (socket activation, one `SO_REUSEPORT` socket per worker) and [`server::run`]: the workers, the admin endpoints, the drain of every worker (`server/`: `worker.rs` a worker's thread, runtime and accept loop, and what the workers share; `balance.rs` which worker serves a new connection; `connection.rs` one connection's limits and timeouts; `admin.rs` `/metrics`, `/healthz`, `/readyz`) |
//! | [`metrics`] | every Prometheus series, registered at start-up; where a reason is counted; `metrics/keys.rs`: the series of the keys in force, installed on every reload |
//! | [`logging`] | JSON or text log lines on stderr |
//!
//! The modules above marked public are the crate's API, used by the `sig-gate` command line
//! and the runbook's tools (`crates/runbook`); `proxy`, `reload`, `upstream`, `budget` and
//! `metrics` are the request path's internals, private to this crate.
#![forbid(unsafe_code)]
// The layout map and the module docs link the request path's private modules on purpose: they
// are written for maintainers, who read them with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]
#![deny(missing_docs)]

pub mod clock;
pub mod config;
pub mod keyring;
pub mod logging;
pub mod protocol;
pub mod random;
pub mod registry;
pub mod replay;
pub mod server;
pub mod sign;
pub mod verify;

pub(crate) mod budget;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub(crate) mod reload;
pub(crate) mod upstream;

/// The upstream response parser without a socket (`upstream/testing.rs`), for the differential
/// test and the fuzz targets only.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use upstream::testing as upstream_testing;

/// Bytes of the per-request future hyper boxes once per connection (and keeps while idle), for
/// the load benchmark's memory accounting (`bench/loadgen`) only.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub fn request_future_bytes() -> usize {
    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    future_size(proxy::Gate::handle)
}
