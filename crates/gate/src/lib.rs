//! The gate: a verifying reverse proxy for HMAC-signed internal requests, run as a sidecar in
//! front of an internal service. Calling services sign each request with a shared secret
//! ([`sign`]); the gate verifies ([`verify`]), forwards valid requests unchanged and streams the
//! response back ([`proxy`]), rejects the rest with 401, and counts every rejection by reason
//! ([`metrics`]). The wire format is specified in `docs/protocol.md`; the interface (commands,
//! variables, headers, status codes, metric names) in README.md and `docs/operations.md`.
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`protocol`] | header names, value syntax, the signed string, hex: shared by signer and verifier |
//! | [`keyring`] | secrets (never printed: fingerprints only), pre-keyed HMAC keys, current/previous slots |
//! | [`verify`] | pure verification: where each `X-Gate-*` header is parsed and each [`verify::Reason`] decided; [`verify::malformed`] reads the shared table of malformed headers every suite checks |
//! | [`replay`] | the replay store the proxy admits through ([`replay::ReplayStore`]) and the bounded in-memory nonce cache behind it (`replay/`: shards, probe table, growth and sweeps); its [`replay::Admitted`] proof is what lets a request through |
//! | [`sign`] | the signer (`sig-gate sign`, the drill's clients) |
//! | [`clock`] | the wall clock timestamps are checked against and stamped with |
//! | [`random`] | the OS random source: nonces, request-id prefixes, new secrets |
//! | [`config`] | figment layers (defaults < TOML < env) into a typed [`config::Config`]; every refusal names its variable |
//! | [`proxy`] | the hyper service: gate, then [`proxy::Gate::forward`], where a byte leaves for the upstream |
//! | [`budget`] | the body budget: request-body bytes held per connection and per process while bodies arrive |
//! | [`upstream`] | the keep-alive [`upstream::Pool`] to the upstream, driven in the request's own task (`upstream/`: pool, request encoding, response head, chunked decoding, body); strict response framing |
//! | [`server`] | listeners (socket activation, `SO_REUSEPORT`), accept loop, connection limits and timeouts, admin endpoints, graceful drain |
//! | [`metrics`] | every Prometheus series, registered at start-up; where a reason is counted |
//! | [`logging`] | JSON or text log lines on stderr |
//! | [`echo`] | the built-in echo upstream of `sig-gate demo` and the runbook tools |
//!
//! The modules above marked public are the crate's API, used by the `sig-gate` command line
//! and the runbook's tools (`crates/runbook`); `proxy`, `upstream`, `budget` and `metrics` are
//! the request path's internals, private to this crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub mod config;
pub mod echo;
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
