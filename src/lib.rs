//! sig-gate: a verifying reverse proxy for HMAC-signed internal requests, run as a sidecar in
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
//! | [`replay`] | the replay store the proxy admits through ([`replay::ReplayStore`]): the bounded in-memory nonce cache (`replay/`: shards, probe table, growth and sweeps) or the Redis every replica shares ([`replay::RedisStore`], `replay/redis.rs`; `GATE_REPLAY_STORE` parsed in `replay/location.rs`); its [`replay::Admitted`] proof is what lets a request through |
//! | [`sign`] | the signer (`sig-gate sign`, the drill's clients) |
//! | [`config`] | figment layers (defaults < TOML < env) into a typed [`config::Config`]; every refusal names its variable |
//! | [`proxy`] | the hyper service: gate, then [`proxy::Gate::forward`], where a byte leaves for the upstream |
//! | [`budget`] | the body budget: request-body bytes held per connection and per process while bodies arrive |
//! | [`upstream`] | the keep-alive [`upstream::Pool`] to the upstream, driven in the request's own task (`upstream/`: pool, request encoding, response head, chunked decoding, body); strict response framing |
//! | [`server`] | listeners (socket activation, `SO_REUSEPORT`), accept loop, connection limits and timeouts, admin endpoints, graceful drain |
//! | [`metrics`] | every Prometheus series, registered at start-up; where a reason is counted |
//! | [`logging`] | JSON or text log lines on stderr |
//! | [`echo`] | the built-in echo upstream of `sig-gate demo` and the runbook tools |
//! | [`runbook`] | the harness of `sig-gate drill` and `sig-gate scorecard`: real gate processes, a recording upstream, signed load on loopback, one report type |
//! | [`cli`] | one file per subcommand under `src/cli/` (the drill's phases in `cli/drill/`, the scorecard's scenarios in `cli/scorecard/`); errors mapped to exit codes once |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod budget;
pub mod cli;
pub mod config;
pub mod echo;
pub mod keyring;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod replay;
pub mod runbook;
pub mod server;
pub mod sign;
pub mod upstream;
pub mod verify;
