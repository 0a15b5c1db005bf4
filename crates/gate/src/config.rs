//! Configuration (README, "Configuration"), in two stages:
//!
//! 1. figment layers built-in defaults < TOML file (`GATE_CONFIG`, else `config/sig-gate.toml`
//!    when it exists) < environment into [`Raw`]: every value kept as text, keyed by the
//!    lowercase environment name, exactly as given.
//! 2. `TryFrom<Raw>` builds the typed [`Config`] (`Duration`, `SocketAddr`, [`UpstreamUrl`],
//!    [`Keyring`]); nothing downstream re-checks it. Every refusal is one [`ConfigError`] whose
//!    message names the variable and never contains a secret.
//!
//! An empty value counts as unset (Kubernetes manifests often "unset" a variable by emptying
//! it), except `INTERSERVICE_HMAC_SECRET`, which must be present and non-empty.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use http::Uri;
use http::uri::{Authority, Scheme};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use zeroize::Zeroizing;

use crate::keyring::Keyring;
use crate::protocol;
use crate::replay::StoreLocation;
use crate::sign::Signer;

mod keys;

pub use keys::{KeySource, MAX_KEY_FILE_BYTES, Watched};
pub(crate) use keys::{check_length, secret_text};

/// Names of the variables, as README.md's configuration table documents them. One constant each so that messages and lookups cannot disagree.
pub mod vars {
    /// Current secret.
    pub const SECRET: &str = "INTERSERVICE_HMAC_SECRET";
    /// Current secret, from a file.
    pub const SECRET_FILE: &str = "INTERSERVICE_HMAC_SECRET_FILE";
    /// Previous secret (dual-secret mode).
    pub const SECRET_PREV: &str = "INTERSERVICE_HMAC_SECRET_PREV";
    /// Previous secret, from a file.
    pub const SECRET_PREV_FILE: &str = "INTERSERVICE_HMAC_SECRET_PREV_FILE";
    /// Key id of the current secret.
    pub const KEY_ID: &str = "INTERSERVICE_HMAC_KEY_ID";
    /// Key id of the previous secret.
    pub const KEY_ID_PREV: &str = "INTERSERVICE_HMAC_KEY_ID_PREV";
    /// Bind key ids to secrets during verification.
    pub const STRICT_KEY_ID: &str = "INTERSERVICE_HMAC_STRICT_KEY_ID";
    /// `false` = report-only.
    pub const REQUIRE_SIGNATURE: &str = "REQUIRE_SIGNATURE";
    /// Signer side: send current and previous signatures.
    pub const DUAL_SIGN: &str = "TOOL_GATE_DUAL_SIGN";
    /// Proxy listener address.
    pub const LISTEN: &str = "GATE_LISTEN";
    /// The protected service.
    pub const UPSTREAM: &str = "GATE_UPSTREAM";
    /// Admin listener address.
    pub const ADMIN_LISTEN: &str = "GATE_ADMIN_LISTEN";
    /// Request body limit.
    pub const MAX_BODY_BYTES: &str = "GATE_MAX_BODY_BYTES";
    /// Accepted timestamp distance.
    pub const CLOCK_SKEW_SECS: &str = "GATE_CLOCK_SKEW_SECS";
    /// Replay cache bound.
    pub const NONCE_CACHE_CAPACITY: &str = "GATE_NONCE_CACHE_CAPACITY";
    /// Paths forwarded without a signature.
    pub const UNSIGNED_PATHS: &str = "GATE_UNSIGNED_PATHS";
    /// Upstream exchange deadline up to the response head.
    pub const UPSTREAM_TIMEOUT_SECS: &str = "GATE_UPSTREAM_TIMEOUT_SECS";
    /// Drain time after SIGTERM.
    pub const SHUTDOWN_GRACE_SECS: &str = "GATE_SHUTDOWN_GRACE_SECS";
    /// `json` or `text`.
    pub const LOG_FORMAT: &str = "GATE_LOG_FORMAT";
    /// One log line per request.
    pub const ACCESS_LOG: &str = "GATE_ACCESS_LOG";
    /// Accept secrets shorter than 32 bytes.
    pub const ALLOW_WEAK_SECRET: &str = "GATE_ALLOW_WEAK_SECRET";
    /// Deadline for a client to send its request head (slow-client protection).
    pub const HEADER_READ_TIMEOUT_SECS: &str = "GATE_HEADER_READ_TIMEOUT_SECS";
    /// Deadline for a client to send its whole request body.
    pub const BODY_READ_TIMEOUT_SECS: &str = "GATE_BODY_READ_TIMEOUT_SECS";
    /// Largest request head (request line and header fields) accepted.
    pub const MAX_HEADER_BYTES: &str = "GATE_MAX_HEADER_BYTES";
    /// Most client connections open at once.
    pub const MAX_CONNECTIONS: &str = "GATE_MAX_CONNECTIONS";
    /// Deadline for a connection with no request in progress.
    pub const IDLE_TIMEOUT_SECS: &str = "GATE_IDLE_TIMEOUT_SECS";
    /// Most concurrent streams on one HTTP/2 connection.
    pub const HTTP2_MAX_CONCURRENT_STREAMS: &str = "GATE_HTTP2_MAX_CONCURRENT_STREAMS";
    /// HTTP/2 keep-alive ping interval and acknowledgement deadline.
    pub const HTTP2_KEEPALIVE_SECS: &str = "GATE_HTTP2_KEEPALIVE_SECS";
    /// Most request-body bytes the whole process holds while bodies arrive.
    pub const MAX_BUFFERED_BODY_BYTES: &str = "GATE_MAX_BUFFERED_BODY_BYTES";
    /// Where accepted nonces are recorded: `memory`, `redis://...` or `redis-cluster://...`.
    pub const REPLAY_STORE: &str = "GATE_REPLAY_STORE";
    /// Budget for one operation on the shared replay store, in milliseconds.
    pub const REPLAY_STORE_TIMEOUT_MS: &str = "GATE_REPLAY_STORE_TIMEOUT_MS";
    /// Prefix of every key the gate writes to the shared replay store.
    pub const REPLAY_STORE_PREFIX: &str = "GATE_REPLAY_STORE_PREFIX";
    /// Workers: threads that each accept and serve connections on a runtime of their own.
    pub const WORKERS: &str = "GATE_WORKERS";
    /// Path of the TOML configuration file.
    pub const CONFIG_FILE: &str = "GATE_CONFIG";
    /// Path of the key registry.
    pub const KEYS_FILE: &str = "GATE_KEYS_FILE";
    /// This gate's audience name, which version 2 signatures are bound to.
    pub const AUDIENCE: &str = "GATE_AUDIENCE";
    /// Signer side: key id of the version 2 signing key.
    pub const SIGNING_KEY_ID: &str = "GATE_SIGNING_KEY_ID";
    /// Signer side: file holding the version 2 signing key.
    pub const SIGNING_KEY_FILE: &str = "GATE_SIGNING_KEY_FILE";
    /// Signer side: algorithm of the version 2 signing key.
    pub const SIGNING_ALG: &str = "GATE_SIGNING_ALG";
    /// Signer side: key id of a second (observed) Ed25519 signing key.
    pub const OBSERVE_KEY_ID: &str = "GATE_OBSERVE_KEY_ID";
    /// Signer side: PKCS#8 PEM file of that key.
    pub const OBSERVE_KEY_FILE: &str = "GATE_OBSERVE_KEY_FILE";

    /// Every variable read through figment, in the order `check-config` documents them.
    pub const ALL: [&str; 40] = [
        SECRET,
        SECRET_FILE,
        SECRET_PREV,
        SECRET_PREV_FILE,
        KEY_ID,
        KEY_ID_PREV,
        STRICT_KEY_ID,
        REQUIRE_SIGNATURE,
        DUAL_SIGN,
        LISTEN,
        UPSTREAM,
        ADMIN_LISTEN,
        MAX_BODY_BYTES,
        CLOCK_SKEW_SECS,
        NONCE_CACHE_CAPACITY,
        UNSIGNED_PATHS,
        UPSTREAM_TIMEOUT_SECS,
        SHUTDOWN_GRACE_SECS,
        LOG_FORMAT,
        ACCESS_LOG,
        ALLOW_WEAK_SECRET,
        HEADER_READ_TIMEOUT_SECS,
        BODY_READ_TIMEOUT_SECS,
        MAX_HEADER_BYTES,
        MAX_CONNECTIONS,
        IDLE_TIMEOUT_SECS,
        HTTP2_MAX_CONCURRENT_STREAMS,
        HTTP2_KEEPALIVE_SECS,
        MAX_BUFFERED_BODY_BYTES,
        REPLAY_STORE,
        REPLAY_STORE_TIMEOUT_MS,
        REPLAY_STORE_PREFIX,
        KEYS_FILE,
        AUDIENCE,
        SIGNING_KEY_ID,
        SIGNING_KEY_FILE,
        SIGNING_ALG,
        OBSERVE_KEY_ID,
        OBSERVE_KEY_FILE,
        WORKERS,
    ];
}

/// The configuration file used when `GATE_CONFIG` is unset and this file exists.
pub const DEFAULT_CONFIG_FILE: &str = "config/sig-gate.toml";

/// Shortest secret accepted without `GATE_ALLOW_WEAK_SECRET=true`.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why the configuration was refused. Every message names the offending variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value that does not parse or is out of range.
    #[error("{var}: {problem}")]
    Invalid {
        /// The environment variable (or flag) at fault.
        var: &'static str,
        /// What is wrong with it, never including a secret.
        problem: String,
    },
    /// The TOML file is missing, unreadable or not of the expected shape.
    #[error("{}: {path}: {problem}", vars::CONFIG_FILE)]
    File {
        /// The file named by `GATE_CONFIG` (or the default path).
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The key registry (`GATE_KEYS_FILE`) or a file it names was refused.
    #[error("{}: {}", vars::KEYS_FILE, .0)]
    Registry(#[from] crate::registry::RegistryError),
}

fn invalid(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        problem: problem.into(),
    }
}

/// Parse the documented boolean spellings: `true/false/1/0/yes/no`, any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: [&str; 3] = ["true", "1", "yes"];
    const FALSE: [&str; 3] = ["false", "0", "no"];
    if TRUE.iter().any(|t| value.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| value.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// A configuration value as text, whatever scalar type the TOML file gave it. Any value may be
/// a secret, so each is overwritten with zeros when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Text(Zeroizing<String>);

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Raw values may be secrets: never print them.
        f.write_str("Text(..)")
    }
}

impl From<&str> for Text {
    fn from(value: &str) -> Text {
        Text(Zeroizing::new(value.to_owned()))
    }
}

impl From<String> for Text {
    fn from(value: String) -> Text {
        Text(Zeroizing::new(value))
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text::from(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text::from(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text::from(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text::from(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text::from(v.to_string()))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// Stage one: every variable as given, keyed by its lowercase name. Unknown keys in the TOML
/// file are refused, so a typo cannot silently leave a default in force.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is the lowercase form of the variable in `vars`
pub struct Raw {
    pub interservice_hmac_secret: Option<Text>,
    pub interservice_hmac_secret_file: Option<Text>,
    pub interservice_hmac_secret_prev: Option<Text>,
    pub interservice_hmac_secret_prev_file: Option<Text>,
    pub interservice_hmac_key_id: Option<Text>,
    pub interservice_hmac_key_id_prev: Option<Text>,
    pub interservice_hmac_strict_key_id: Option<Text>,
    pub require_signature: Option<Text>,
    pub tool_gate_dual_sign: Option<Text>,
    pub gate_listen: Option<Text>,
    pub gate_upstream: Option<Text>,
    pub gate_admin_listen: Option<Text>,
    pub gate_max_body_bytes: Option<Text>,
    pub gate_clock_skew_secs: Option<Text>,
    pub gate_nonce_cache_capacity: Option<Text>,
    pub gate_unsigned_paths: Option<Text>,
    pub gate_upstream_timeout_secs: Option<Text>,
    pub gate_shutdown_grace_secs: Option<Text>,
    pub gate_log_format: Option<Text>,
    pub gate_access_log: Option<Text>,
    pub gate_allow_weak_secret: Option<Text>,
    pub gate_header_read_timeout_secs: Option<Text>,
    pub gate_body_read_timeout_secs: Option<Text>,
    pub gate_max_header_bytes: Option<Text>,
    pub gate_max_connections: Option<Text>,
    pub gate_idle_timeout_secs: Option<Text>,
    pub gate_http2_max_concurrent_streams: Option<Text>,
    pub gate_http2_keepalive_secs: Option<Text>,
    pub gate_max_buffered_body_bytes: Option<Text>,
    pub gate_replay_store: Option<Text>,
    pub gate_replay_store_timeout_ms: Option<Text>,
    pub gate_replay_store_prefix: Option<Text>,
    pub gate_keys_file: Option<Text>,
    pub gate_audience: Option<Text>,
    pub gate_signing_key_id: Option<Text>,
    pub gate_signing_key_file: Option<Text>,
    pub gate_signing_alg: Option<Text>,
    pub gate_observe_key_id: Option<Text>,
    pub gate_observe_key_file: Option<Text>,
    pub gate_workers: Option<Text>,
}

impl Raw {
    /// Load the layers: defaults < TOML file < environment.
    pub fn load() -> Result<Raw, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = config_file()? {
            let file_error = |problem| ConfigError::File {
                path: path.clone(),
                problem,
            };
            let text = read_toml(&path).map_err(file_error)?;
            figment = figment.merge(TomlFile {
                path: &path,
                text: &text,
            });
            return figment
                .merge(ExactEnv)
                .extract()
                .map_err(|err| file_error(err.to_string()));
        }
        figment
            .merge(ExactEnv)
            .extract()
            .map_err(|err| ConfigError::File {
                path: PathBuf::from("(environment)"),
                problem: err.to_string(),
            })
    }
}

/// Read the TOML file and check its syntax. A syntax error is reported by line, column and the
/// parser's description alone: the TOML parser's own message quotes the offending line, and
/// that line may be `interservice_hmac_secret = "...` with its secret in it.
fn read_toml(path: &Path) -> Result<Zeroizing<String>, String> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|err| format!("cannot read: {err}"))?);
    if let Err(err) = text.parse::<toml::Table>() {
        let at = err.span().map_or(String::new(), |span| {
            let before = text.get(..span.start).unwrap_or(&text);
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let line = before.matches('\n').count() + 1;
            let column = before[line_start..].chars().count() + 1;
            format!(" at line {line}, column {column}")
        });
        return Err(format!("TOML syntax error{at}: {}", err.message()));
    }
    Ok(text)
}

/// The TOML file's text, already read and checked by [`read_toml`], named by its path in
/// figment's messages as `Toml::file` would be.
struct TomlFile<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Provider for TomlFile<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(self.text).data()
    }
}

/// The TOML file to read: `GATE_CONFIG` (which must exist), else the default when present.
fn config_file() -> Result<Option<PathBuf>, ConfigError> {
    match std::env::var_os(vars::CONFIG_FILE).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(Some(path))
            } else {
                Err(ConfigError::File {
                    path,
                    problem: "no such file".into(),
                })
            }
        }
        None => Ok(Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file())),
    }
}

/// Environment provider that takes exactly the documented variables, as strings. figment's own
/// `Env` would parse `0123...` as a number or `[a]` as an array: wrong for secrets and paths.
struct ExactEnv;

impl Provider for ExactEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for name in vars::ALL {
            let Some(value) = std::env::var_os(name) else {
                continue;
            };
            let value = value
                .into_string()
                .map_err(|_| figment::Error::from(format!("{name}: not valid UTF-8")))?;
            dict.insert(name.to_ascii_lowercase(), Value::from(value));
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default; what log pipelines ingest).
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// The protected service: scheme and authority of `GATE_UPSTREAM`. Request paths are
/// forwarded unchanged, so the URL may carry no path of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Always `http` (the sidecar talks to tool-gate over loopback).
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// The typed configuration of `sig-gate serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Keys to verify with at start-up, the strict key-id switch and the audience.
    pub keyring: Keyring,
    /// Where the keys come from, to read them again on a reload (see [`KeySource`]).
    pub key_source: KeySource,
    /// The key files the start-up load read, and what they held: a change reloads the keys.
    pub key_files: Watched,
    /// `false` = report-only: verify, log and count, but forward everything.
    pub require_signature: bool,
    /// Signer side: whether `sig-gate sign` dual-signs (shown by `check-config`).
    pub dual_sign: bool,
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Where valid requests go.
    pub upstream: UpstreamUrl,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Accepted distance between `X-Gate-Timestamp` and the gate's clock, in seconds.
    pub clock_skew_secs: u64,
    /// Replay cache bound, in entries.
    pub nonce_cache_capacity: usize,
    /// Raw paths forwarded without signature checks (exact match, query ignored).
    pub unsigned_paths: Vec<String>,
    /// Whole upstream exchange up to the response head, connecting included.
    pub upstream_timeout: Duration,
    /// Drain time after SIGTERM.
    pub shutdown_grace: Duration,
    /// Deadline for a client's request head.
    pub header_read_timeout: Duration,
    /// Deadline for a client's request body.
    pub body_read_timeout: Duration,
    /// Largest request head: request line and header fields (HTTP/1.1), decoded header list
    /// (HTTP/2). Larger heads get 431.
    pub max_header_bytes: usize,
    /// Most client connections open at once; connections over the cap are closed at accept.
    pub max_connections: usize,
    /// A connection with no request in progress for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// Most concurrent streams a client may open on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive: ping a quiet connection this often; close it when a ping goes
    /// unanswered for as long again.
    pub http2_keepalive: Duration,
    /// Most bytes of request bodies still arriving that the process holds at once (the body
    /// budget); a request that would go past it gets 503.
    pub max_buffered_body_bytes: usize,
    /// Log line format.
    pub log_format: LogFormat,
    /// One `access` log line per request (`GATE_ACCESS_LOG`, off by default).
    pub access_log: bool,
    /// Where accepted nonces are recorded: this process's table, or a shared Redis.
    pub replay_store: StoreLocation,
    /// Budget for one replay store operation, connecting and authenticating included.
    pub replay_store_timeout: Duration,
    /// Prefix of every key written to a shared replay store.
    pub replay_store_prefix: String,
    /// Workers serving the proxy listener, each a thread with a runtime of its own.
    pub workers: usize,
}

impl Config {
    /// Load and check the whole configuration.
    pub fn load() -> Result<Config, ConfigError> {
        Config::try_from(Raw::load()?)
    }

    /// Whether `path` (raw, without query) is forwarded without a signature.
    pub fn is_unsigned_path(&self, path: &str) -> bool {
        self.unsigned_paths.iter().any(|p| p == path)
    }
}

impl TryFrom<Raw> for Config {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Config, ConfigError> {
        let key_source = KeySource::from_raw(&raw)?;
        let (keyring, key_files) = key_source.load_watched();
        Ok(Config {
            keyring: keyring?,
            key_source,
            key_files,
            require_signature: boolean(&raw.require_signature, vars::REQUIRE_SIGNATURE, true)?,
            dual_sign: boolean(&raw.tool_gate_dual_sign, vars::DUAL_SIGN, false)?,
            listen: address(&raw.gate_listen, vars::LISTEN, "0.0.0.0:8080")?,
            upstream: upstream(&raw.gate_upstream)?,
            admin_listen: address(&raw.gate_admin_listen, vars::ADMIN_LISTEN, "127.0.0.1:9090")?,
            max_body_bytes: count(&raw.gate_max_body_bytes, vars::MAX_BODY_BYTES, 1_048_576)?,
            clock_skew_secs: positive(&raw.gate_clock_skew_secs, vars::CLOCK_SKEW_SECS, 300)?,
            nonce_cache_capacity: count(
                &raw.gate_nonce_cache_capacity,
                vars::NONCE_CACHE_CAPACITY,
                1_000_000,
            )?,
            unsigned_paths: unsigned_paths(&raw.gate_unsigned_paths)?,
            upstream_timeout: seconds(
                &raw.gate_upstream_timeout_secs,
                vars::UPSTREAM_TIMEOUT_SECS,
                60,
            )?,
            shutdown_grace: seconds(&raw.gate_shutdown_grace_secs, vars::SHUTDOWN_GRACE_SECS, 30)?,
            header_read_timeout: seconds(
                &raw.gate_header_read_timeout_secs,
                vars::HEADER_READ_TIMEOUT_SECS,
                10,
            )?,
            body_read_timeout: seconds(
                &raw.gate_body_read_timeout_secs,
                vars::BODY_READ_TIMEOUT_SECS,
                30,
            )?,
            log_format: log_format(&raw.gate_log_format)?,
            access_log: boolean(&raw.gate_access_log, vars::ACCESS_LOG, false)?,
            max_header_bytes: count(
                &raw.gate_max_header_bytes,
                vars::MAX_HEADER_BYTES,
                DEFAULT_MAX_HEADER_BYTES,
            )?,
            max_connections: count(
                &raw.gate_max_connections,
                vars::MAX_CONNECTIONS,
                DEFAULT_MAX_CONNECTIONS,
            )?,
            idle_timeout: seconds(&raw.gate_idle_timeout_secs, vars::IDLE_TIMEOUT_SECS, 60)?,
            http2_max_concurrent_streams: streams(&raw.gate_http2_max_concurrent_streams)?,
            http2_keepalive: seconds(
                &raw.gate_http2_keepalive_secs,
                vars::HTTP2_KEEPALIVE_SECS,
                20,
            )?,
            max_buffered_body_bytes: buffered_body_bytes(&raw)?,
            replay_store: replay_store(&raw.gate_replay_store)?,
            replay_store_timeout: Duration::from_millis(positive(
                &raw.gate_replay_store_timeout_ms,
                vars::REPLAY_STORE_TIMEOUT_MS,
                100,
            )?),
            replay_store_prefix: replay_store_prefix(&raw.gate_replay_store_prefix)?,
            workers: workers(&raw.gate_workers)?,
        })
    }
}

/// Default of `GATE_MAX_HEADER_BYTES`.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 * 1024;

/// Default of `GATE_MAX_CONNECTIONS`: far above what the few calling services of a sidecar
/// keep open, far below a default file-descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 1024;

/// Default of `GATE_HTTP2_MAX_CONCURRENT_STREAMS`.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u64 = 64;

/// Default of `GATE_MAX_BUFFERED_BODY_BYTES` when four largest bodies fit in it.
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Most workers `GATE_WORKERS` may ask for: far more than the CPUs of any sidecar, and a bound
/// on the threads and sockets a typo can make the gate open.
pub const MAX_WORKERS: usize = 1024;

/// The default of `GATE_WORKERS`: the CPUs this process may run on, by its CPU affinity and its
/// cgroup's CPU quota (a container's CPU limit, rounded down, at least 1), as the standard
/// library's `available_parallelism` reads them on Linux.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `GATE_WORKERS`: 1 to [`MAX_WORKERS`], by default [`default_workers`].
fn workers(value: &Option<Text>) -> Result<usize, ConfigError> {
    let var = vars::WORKERS;
    let n = count(value, var, default_workers() as u64)?;
    if n > MAX_WORKERS {
        return Err(invalid(var, format!("{n} is over {MAX_WORKERS}")));
    }
    Ok(n)
}

/// `GATE_HTTP2_MAX_CONCURRENT_STREAMS`: HTTP/2 carries it as a 32-bit setting.
fn streams(value: &Option<Text>) -> Result<u32, ConfigError> {
    let var = vars::HTTP2_MAX_CONCURRENT_STREAMS;
    let n = positive(value, var, DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS)?;
    u32::try_from(n).map_err(|_| invalid(var, format!("{n} is over {}", u32::MAX)))
}

/// `GATE_MAX_BUFFERED_BODY_BYTES`: by default 64 MiB or four largest bodies, whichever is
/// more; a value that cannot hold one largest body would refuse every slow large body.
fn buffered_body_bytes(raw: &Raw) -> Result<usize, ConfigError> {
    let var = vars::MAX_BUFFERED_BODY_BYTES;
    let max_body = positive(&raw.gate_max_body_bytes, vars::MAX_BODY_BYTES, 1_048_576)?;
    let default = DEFAULT_MAX_BUFFERED_BODY_BYTES.max(max_body.saturating_mul(4));
    let n = count(&raw.gate_max_buffered_body_bytes, var, default)?;
    if (n as u64) < max_body {
        return Err(invalid(
            var,
            format!(
                "{n} is less than {} ({max_body}): no large body could arrive",
                vars::MAX_BODY_BYTES
            ),
        ));
    }
    Ok(n)
}

/// `GATE_REPLAY_STORE`; the message never quotes the value, which may hold a password.
fn replay_store(value: &Option<Text>) -> Result<StoreLocation, ConfigError> {
    match text(value) {
        None => Ok(StoreLocation::Memory),
        Some(t) => StoreLocation::parse(t).map_err(|problem| invalid(vars::REPLAY_STORE, problem)),
    }
}

/// `GATE_REPLAY_STORE_PREFIX`: 1-64 visible ASCII characters, so keys print plainly.
fn replay_store_prefix(value: &Option<Text>) -> Result<String, ConfigError> {
    let prefix = text(value).unwrap_or("sig-gate:");
    if prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            vars::REPLAY_STORE_PREFIX,
            format!("{prefix:?} is not 1-64 visible ASCII characters"),
        ));
    }
    Ok(prefix.to_owned())
}

/// The signer side of the configuration (`sig-gate sign` and the drill's clients): the
/// secret variables and `TOOL_GATE_DUAL_SIGN` for version 1, or `GATE_SIGNING_KEY_ID`,
/// `GATE_SIGNING_KEY_FILE`, `GATE_SIGNING_ALG` and `GATE_AUDIENCE` for version 2, so a calling
/// service needs no other `GATE_*` values.
pub fn signer() -> Result<Signer, ConfigError> {
    signer_from_raw(&Raw::load()?)
}

/// [`signer`] from already loaded values.
pub fn signer_from_raw(raw: &Raw) -> Result<Signer, ConfigError> {
    keys::signer(raw)
}

/// The value of a variable, with empty treated as unset.
fn text(value: &Option<Text>) -> Option<&str> {
    value
        .as_ref()
        .map(|t| t.0.as_str())
        .filter(|t| !t.is_empty())
}

fn key_id(value: &Option<Text>, var: &'static str, default: &str) -> Result<String, ConfigError> {
    let id = text(value).unwrap_or(default);
    if protocol::is_key_id(id) {
        Ok(id.to_owned())
    } else {
        Err(invalid(
            var,
            format!("{id:?} is not a key id (1-64 chars of A-Z a-z 0-9 . _ : -)"),
        ))
    }
}

fn boolean(value: &Option<Text>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match text(value) {
        None => Ok(default),
        Some(t) => parse_bool(t).ok_or_else(|| {
            invalid(
                var,
                format!("{t:?} is not a boolean (true/false/1/0/yes/no)"),
            )
        }),
    }
}

/// A whole number of at least 1, digits only.
fn positive(value: &Option<Text>, var: &'static str, default: u64) -> Result<u64, ConfigError> {
    let Some(t) = text(value) else {
        return Ok(default);
    };
    let n: u64 = t
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| t.parse().ok())
        .flatten()
        .ok_or_else(|| invalid(var, format!("{t:?} is not a whole number")))?;
    if n < 1 {
        return Err(invalid(var, "must be at least 1"));
    }
    Ok(n)
}

fn count(value: &Option<Text>, var: &'static str, default: u64) -> Result<usize, ConfigError> {
    let n = positive(value, var, default)?;
    usize::try_from(n).map_err(|_| invalid(var, "is too large for this machine"))
}

fn seconds(value: &Option<Text>, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    positive(value, var, default).map(Duration::from_secs)
}

fn address(
    value: &Option<Text>,
    var: &'static str,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let t = text(value).unwrap_or(default);
    t.parse()
        .map_err(|_| invalid(var, format!("{t:?} is not an IP:port address")))
}

fn upstream(value: &Option<Text>) -> Result<UpstreamUrl, ConfigError> {
    let var = vars::UPSTREAM;
    let t = text(value).unwrap_or("http://127.0.0.1:8081");
    let uri: Uri = t
        .parse()
        .map_err(|_| invalid(var, format!("{t:?} is not a URL")))?;
    let parts = uri.into_parts();
    let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
        return Err(invalid(
            var,
            format!("{t:?} needs a scheme and host, like http://127.0.0.1:8081"),
        ));
    };
    if scheme != Scheme::HTTP {
        return Err(invalid(
            var,
            format!("{t:?}: only http:// upstreams are supported"),
        ));
    }
    if authority.as_str().contains('@') {
        return Err(invalid(var, "must not carry credentials"));
    }
    if parts
        .path_and_query
        .is_some_and(|pq| !matches!(pq.as_str(), "" | "/"))
    {
        return Err(invalid(
            var,
            format!("{t:?} has a path or query; request paths are forwarded unchanged"),
        ));
    }
    Ok(UpstreamUrl { scheme, authority })
}

fn unsigned_paths(value: &Option<Text>) -> Result<Vec<String>, ConfigError> {
    let Some(t) = text(value) else {
        return Ok(Vec::new());
    };
    t.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.starts_with('/') && !p.contains('?') && !p.bytes().any(|b| b.is_ascii_whitespace())
            {
                Ok(p.to_owned())
            } else {
                Err(invalid(
                    vars::UNSIGNED_PATHS,
                    format!("{p:?} is not a path (starts with '/', no query, no spaces)"),
                ))
            }
        })
        .collect()
}

fn log_format(value: &Option<Text>) -> Result<LogFormat, ConfigError> {
    match text(value) {
        None => Ok(LogFormat::Json),
        Some(t) if t.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
        Some(t) if t.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
        Some(t) => Err(invalid(
            vars::LOG_FORMAT,
            format!("{t:?} is not json or text"),
        )),
    }
}

#[cfg(test)]
// figment's Jail fixes the closures' error type to its own (large) `figment::Error`.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;
    use crate::keyring::Secret;

    const SECRET_A: &str = "secret-a-0123456789abcdefghijklmnopqrstuv";
    const SECRET_B: &str = "secret-b-0123456789abcdefghijklmnopqrstuv";

    /// Load with the jail's environment and files; the error message as text.
    fn refusal(jail: &mut Jail, vars: &[(&str, &str)]) -> String {
        for (name, value) in vars {
            jail.set_env(name, value);
        }
        match Config::load() {
            Ok(_) => panic!("expected a refusal for {vars:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, SECRET_A);
            let config = Config::load().expect("valid");
            assert_eq!(
                config.keyring.current().expect("current secret").id(),
                "current"
            );
            assert!(config.keyring.previous().is_none());
            assert!(!config.keyring.strict_key_id());
            assert!(config.require_signature);
            assert!(!config.dual_sign);
            assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
            assert_eq!(config.upstream.to_string(), "http://127.0.0.1:8081");
            assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9090");
            assert_eq!(config.max_body_bytes, 1_048_576);
            assert_eq!(config.clock_skew_secs, 300);
            assert_eq!(config.nonce_cache_capacity, 1_000_000);
            assert!(config.unsigned_paths.is_empty());
            assert_eq!(config.upstream_timeout, Duration::from_secs(60));
            assert_eq!(config.shutdown_grace, Duration::from_secs(30));
            assert_eq!(config.log_format, LogFormat::Json);
            assert!(!config.access_log);
            assert_eq!(config.max_header_bytes, 32_768);
            assert_eq!(config.max_connections, 1024);
            assert_eq!(config.idle_timeout, Duration::from_secs(60));
            assert_eq!(config.http2_max_concurrent_streams, 64);
            assert_eq!(config.http2_keepalive, Duration::from_secs(20));
            assert_eq!(config.max_buffered_body_bytes, 64 * 1024 * 1024);
            assert_eq!(config.replay_store, StoreLocation::Memory);
            assert_eq!(config.replay_store_timeout, Duration::from_millis(100));
            assert_eq!(config.replay_store_prefix, "sig-gate:");
            Ok(())
        });
    }

    #[test]
    fn workers_default_to_the_usable_cpus_and_are_checked() {
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, SECRET_A);
            let config = Config::load().expect("valid");
            let usable = std::thread::available_parallelism().map_or(1, usize::from);
            assert_eq!(config.workers, usable);
            assert!(config.workers >= 1);
            jail.set_env(vars::WORKERS, "3");
            assert_eq!(Config::load().expect("valid").workers, 3);
            jail.set_env(vars::WORKERS, "1024");
            assert_eq!(Config::load().expect("valid").workers, MAX_WORKERS);
            Ok(())
        });
        for bad in [
            "0",
            "-1",
            "1025",
            "two",
            "1.5",
            " 2",
            "99999999999999999999999",
        ] {
            Jail::expect_with(|jail| {
                let message = refusal(jail, &[(vars::SECRET, SECRET_A), (vars::WORKERS, bad)]);
                assert!(message.starts_with(vars::WORKERS), "{bad}: {message}");
                Ok(())
            });
        }
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, SECRET_A);
            jail.set_env(vars::MAX_HEADER_BYTES, "4096");
            jail.set_env(vars::MAX_CONNECTIONS, "10");
            jail.set_env(vars::IDLE_TIMEOUT_SECS, "5");
            jail.set_env(vars::HTTP2_MAX_CONCURRENT_STREAMS, "8");
            jail.set_env(vars::HTTP2_KEEPALIVE_SECS, "3");
            jail.set_env(vars::MAX_BUFFERED_BODY_BYTES, "2000000");
            let config = Config::load().expect("valid");
            assert_eq!(config.max_header_bytes, 4096);
            assert_eq!(config.max_connections, 10);
            assert_eq!(config.idle_timeout, Duration::from_secs(5));
            assert_eq!(config.http2_max_concurrent_streams, 8);
            assert_eq!(config.http2_keepalive, Duration::from_secs(3));
            assert_eq!(config.max_buffered_body_bytes, 2_000_000);
            Ok(())
        });
        // Unset, the body budget holds at least four largest bodies.
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, SECRET_A);
            jail.set_env(vars::MAX_BODY_BYTES, "100000000");
            let config = Config::load().expect("valid");
            assert_eq!(config.max_buffered_body_bytes, 400_000_000);
            Ok(())
        });
        let numbers = [
            vars::MAX_HEADER_BYTES,
            vars::MAX_CONNECTIONS,
            vars::IDLE_TIMEOUT_SECS,
            vars::HTTP2_MAX_CONCURRENT_STREAMS,
            vars::HTTP2_KEEPALIVE_SECS,
            vars::MAX_BUFFERED_BODY_BYTES,
        ];
        for var in numbers {
            for bad in ["0", "-1", "32k", "1.5", " 7", "many"] {
                Jail::expect_with(|jail| {
                    let message = refusal(jail, &[(vars::SECRET, SECRET_A), (var, bad)]);
                    assert!(message.starts_with(var), "{var}={bad}: {message}");
                    Ok(())
                });
            }
        }
        let cases: &[(&str, &str, &str)] = &[
            (vars::HTTP2_MAX_CONCURRENT_STREAMS, "4294967296", "over"),
            (
                vars::MAX_BUFFERED_BODY_BYTES,
                "1048575",
                vars::MAX_BODY_BYTES,
            ),
        ];
        for (var, value, mentions) in cases {
            Jail::expect_with(|jail| {
                let message = refusal(jail, &[(vars::SECRET, SECRET_A), (var, value)]);
                assert!(message.starts_with(var), "{message}");
                assert!(message.contains(mentions), "{message}");
                Ok(())
            });
        }
    }

    #[test]
    fn every_refusal_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], vars::SECRET),
            (&[(vars::SECRET, "")], vars::SECRET),
            (&[(vars::SECRET, "short")], vars::SECRET),
            (
                &[(vars::SECRET, SECRET_A), (vars::SECRET_PREV, "short")],
                vars::SECRET_PREV,
            ),
            (
                &[
                    (vars::SECRET, SECRET_A),
                    (vars::SECRET_FILE, "/nonexistent"),
                ],
                vars::SECRET,
            ),
            (
                &[(vars::SECRET_FILE, "/nonexistent/secret")],
                vars::SECRET_FILE,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::SECRET_PREV, SECRET_A)],
                vars::SECRET_PREV,
            ),
            (
                &[
                    (vars::SECRET, SECRET_A),
                    (vars::SECRET_PREV, SECRET_B),
                    (vars::KEY_ID, "k1"),
                    (vars::KEY_ID_PREV, "k1"),
                ],
                vars::KEY_ID_PREV,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::KEY_ID, "bad id")],
                vars::KEY_ID,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::STRICT_KEY_ID, "maybe")],
                vars::STRICT_KEY_ID,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::REQUIRE_SIGNATURE, "on")],
                vars::REQUIRE_SIGNATURE,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::ACCESS_LOG, "sometimes")],
                vars::ACCESS_LOG,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::ALLOW_WEAK_SECRET, "2")],
                vars::ALLOW_WEAK_SECRET,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::LISTEN, "localhost")],
                vars::LISTEN,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::ADMIN_LISTEN, "1.2.3.4")],
                vars::ADMIN_LISTEN,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::UPSTREAM, "not a url")],
                vars::UPSTREAM,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::UPSTREAM, "https://a:1")],
                vars::UPSTREAM,
            ),
            (
                &[
                    (vars::SECRET, SECRET_A),
                    (vars::UPSTREAM, "http://a:1/base"),
                ],
                vars::UPSTREAM,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::UPSTREAM, "/relative")],
                vars::UPSTREAM,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::MAX_BODY_BYTES, "0")],
                vars::MAX_BODY_BYTES,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::MAX_BODY_BYTES, "1k")],
                vars::MAX_BODY_BYTES,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::MAX_BODY_BYTES, "-1")],
                vars::MAX_BODY_BYTES,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::CLOCK_SKEW_SECS, "0")],
                vars::CLOCK_SKEW_SECS,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::NONCE_CACHE_CAPACITY, "0")],
                vars::NONCE_CACHE_CAPACITY,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::UPSTREAM_TIMEOUT_SECS, "0")],
                vars::UPSTREAM_TIMEOUT_SECS,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::SHUTDOWN_GRACE_SECS, "1.5")],
                vars::SHUTDOWN_GRACE_SECS,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::UNSIGNED_PATHS, "healthz")],
                vars::UNSIGNED_PATHS,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::LOG_FORMAT, "xml")],
                vars::LOG_FORMAT,
            ),
            (
                &[
                    (vars::SECRET, SECRET_A),
                    (vars::REPLAY_STORE, "redis://:store-pass-1@redis"),
                ],
                vars::REPLAY_STORE,
            ),
            (
                &[
                    (vars::SECRET, SECRET_A),
                    (vars::REPLAY_STORE, "rediss://:store-pass-1@redis:6379"),
                ],
                vars::REPLAY_STORE,
            ),
            (
                &[
                    (vars::SECRET, SECRET_A),
                    (vars::REPLAY_STORE_TIMEOUT_MS, "0"),
                ],
                vars::REPLAY_STORE_TIMEOUT_MS,
            ),
            (
                &[(vars::SECRET, SECRET_A), (vars::REPLAY_STORE_PREFIX, "a b")],
                vars::REPLAY_STORE_PREFIX,
            ),
            (
                &[
                    (vars::SECRET, SECRET_A),
                    (vars::CONFIG_FILE, "/nonexistent.toml"),
                ],
                vars::CONFIG_FILE,
            ),
        ];
        for (vars_set, named) in cases {
            Jail::expect_with(|jail| {
                let message = refusal(jail, vars_set);
                assert!(message.starts_with(named), "{vars_set:?}: {message}");
                for secret in [SECRET_A, SECRET_B, "store-pass-1"] {
                    assert!(!message.contains(secret), "secret leaked: {message}");
                }
                Ok(())
            });
        }
    }

    /// A registry beside a secret file, in the jail's directory.
    fn registry(jail: &mut Jail, entries: &str) -> figment::error::Result<()> {
        jail.create_dir("secrets")?;
        jail.create_file("secrets/lg", &format!("{SECRET_B}\n"))?;
        jail.create_file("keys.toml", entries)?;
        Ok(())
    }

    const LG: &str = "[[key]]\nid = \"lg-1\"\ncaller = \"langgraph\"\nalg = \"hmac-sha256\"\n\
                      secret_file = \"secrets/lg\"\n";

    #[test]
    fn a_registry_makes_the_environment_secret_optional() {
        Jail::expect_with(|jail| {
            registry(jail, LG)?;
            jail.set_env(vars::KEYS_FILE, "keys.toml");
            jail.set_env(vars::AUDIENCE, "tool-gate");
            let config = Config::load().expect("valid");
            let keyring = &config.keyring;
            assert_eq!(keyring.mode(), "none");
            assert!(keyring.current().is_none());
            assert_eq!(keyring.audience(), Some("tool-gate"));
            let key = &keyring.registry_keys()[0];
            assert_eq!((key.id(), key.caller()), ("lg-1", "langgraph"));
            assert_eq!(key.fingerprint(), Secret::new(SECRET_B).fingerprint());
            let watched: Vec<_> = config.key_files.paths().collect();
            assert_eq!(watched, [Path::new("keys.toml"), Path::new("secrets/lg")]);
            // With the environment secret too, both are in force, environment first.
            jail.set_env(vars::SECRET, SECRET_A);
            let config = Config::load().expect("valid");
            let ids: Vec<_> = config.keyring.keys().iter().map(|k| k.id()).collect();
            assert_eq!(ids, ["current", "lg-1"]);
            assert_eq!(config.keyring.mode(), "single");
            Ok(())
        });
    }

    #[test]
    fn registry_refusals_name_the_variable_the_file_and_the_key() {
        let observe_only = LG.replace("secret_file", "observe = true\nsecret_file");
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (LG, &[], &[vars::AUDIENCE, "required with GATE_KEYS_FILE"]),
            (LG, &[(vars::AUDIENCE, "two words")], &[vars::AUDIENCE]),
            (
                LG,
                &[
                    (vars::AUDIENCE, "tool-gate"),
                    (vars::KEY_ID, "lg-1"),
                    (vars::SECRET, SECRET_A),
                ],
                &[
                    "GATE_KEYS_FILE: keys.toml: key \"lg-1\": duplicate id",
                    vars::KEY_ID,
                ],
            ),
            (
                LG,
                &[(vars::AUDIENCE, "tool-gate"), (vars::SECRET_PREV, SECRET_A)],
                &[vars::SECRET_PREV, "needs INTERSERVICE_HMAC_SECRET"],
            ),
            (
                &observe_only,
                &[(vars::AUDIENCE, "tool-gate")],
                &["GATE_KEYS_FILE: keys.toml: no key grants access"],
            ),
            (
                "[[key]]\nid = \"x\"\n",
                &[(vars::AUDIENCE, "tool-gate")],
                &["GATE_KEYS_FILE: keys.toml: key \"x\": missing field"],
            ),
        ];
        for (entries, extra, mentions) in cases {
            Jail::expect_with(|jail| {
                registry(jail, entries)?;
                let mut vars_set = vec![(vars::KEYS_FILE, "keys.toml")];
                vars_set.extend_from_slice(extra);
                let message = refusal(jail, &vars_set);
                for mention in *mentions {
                    assert!(message.contains(mention), "{extra:?}: {message}");
                }
                assert!(!message.contains(SECRET_A) && !message.contains(SECRET_B));
                Ok(())
            });
        }
        // An observe-only registry is enough beside an environment secret.
        Jail::expect_with(|jail| {
            registry(jail, &observe_only)?;
            jail.set_env(vars::KEYS_FILE, "keys.toml");
            jail.set_env(vars::AUDIENCE, "tool-gate");
            jail.set_env(vars::SECRET, SECRET_A);
            assert!(Config::load().expect("valid").keyring.registry_keys()[0].observe());
            Ok(())
        });
    }

    #[test]
    fn the_signer_signs_version_2_from_its_own_variables() {
        Jail::expect_with(|jail| {
            registry(jail, LG)?;
            jail.set_env(vars::SIGNING_KEY_ID, "lg-1");
            let message = signer().expect_err("no file").to_string();
            assert!(message.starts_with(vars::SIGNING_KEY_FILE), "{message}");
            jail.set_env(vars::SIGNING_KEY_FILE, "secrets/lg");
            let message = signer().expect_err("no audience").to_string();
            assert!(message.starts_with(vars::AUDIENCE), "{message}");
            jail.set_env(vars::AUDIENCE, "tool-gate");
            jail.set_env(vars::SIGNING_ALG, "rsa");
            let message = signer().expect_err("bad alg").to_string();
            assert!(message.starts_with(vars::SIGNING_ALG), "{message}");
            jail.set_env(vars::SIGNING_ALG, "ed25519");
            let message = signer().expect_err("not a PEM key").to_string();
            assert!(message.starts_with(vars::SIGNING_KEY_FILE), "{message}");
            assert!(!message.contains(SECRET_B), "{message}");
            jail.set_env(vars::SIGNING_ALG, "hmac-sha256");
            let request = crate::sign::Request {
                method: "GET",
                target: "/t",
                body: b"",
                timestamp: 1,
                nonce: "nonce-0123456789",
            };
            let headers = signer().expect("valid").sign(&request);
            assert_eq!(headers[0], ("X-Gate-Version", "2".to_owned()));
            assert_eq!(headers[1], ("X-Gate-Key-Id", "lg-1".to_owned()));
            Ok(())
        });
    }

    #[test]
    fn booleans_take_every_spelling_in_any_case() {
        for (text, expected) in [
            ("TRUE", true),
            ("yes", true),
            ("1", true),
            ("No", false),
            ("0", false),
            ("false", false),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(vars::SECRET, SECRET_A);
                jail.set_env(vars::STRICT_KEY_ID, text);
                assert_eq!(
                    Config::load().expect("valid").keyring.strict_key_id(),
                    expected,
                    "{text}"
                );
                Ok(())
            });
        }
    }

    #[test]
    fn weak_secrets_need_the_explicit_switch() {
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, "short-but-allowed");
            jail.set_env(vars::ALLOW_WEAK_SECRET, "true");
            assert!(Config::load().is_ok());
            Ok(())
        });
    }

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        for ending in ["\n", "\r\n", ""] {
            Jail::expect_with(|jail| {
                jail.create_file("secret", &format!("{SECRET_A}{ending}"))?;
                jail.create_file("prev", &format!("{SECRET_B}{ending}"))?;
                jail.set_env(vars::SECRET_FILE, "secret");
                jail.set_env(vars::SECRET_PREV_FILE, "prev");
                let config = Config::load().expect("valid");
                let expected = Secret::new(SECRET_A).fingerprint();
                assert_eq!(
                    config
                        .keyring
                        .current()
                        .expect("current secret")
                        .fingerprint(),
                    expected
                );
                let prev = config.keyring.previous().expect("dual mode");
                assert_eq!(prev.fingerprint(), Secret::new(SECRET_B).fingerprint());
                Ok(())
            });
        }
    }

    #[test]
    fn numeric_looking_secrets_stay_text() {
        // figment's own Env provider would parse this as a number and drop the leading zeros.
        let digits = "00001234567890123456789012345678901234";
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, digits);
            let config = Config::load().expect("valid");
            assert_eq!(
                config
                    .keyring
                    .current()
                    .expect("current secret")
                    .fingerprint(),
                Secret::new(digits).fingerprint()
            );
            Ok(())
        });
    }

    #[test]
    fn toml_file_sits_between_defaults_and_environment() {
        Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file(
                DEFAULT_CONFIG_FILE,
                &format!(
                    "interservice_hmac_secret = \"{SECRET_A}\"\n\
                     gate_clock_skew_secs = 120\n\
                     gate_max_body_bytes = 2048\n\
                     interservice_hmac_strict_key_id = true\n"
                ),
            )?;
            let config = Config::load().expect("valid");
            assert_eq!(config.clock_skew_secs, 120);
            assert!(config.keyring.strict_key_id());
            jail.set_env(vars::CLOCK_SKEW_SECS, "60");
            let config = Config::load().expect("valid");
            assert_eq!(config.clock_skew_secs, 60, "environment wins over the file");
            assert_eq!(config.max_body_bytes, 2048);
            Ok(())
        });
    }

    #[test]
    fn gate_config_names_the_file_and_unknown_keys_are_refused() {
        Jail::expect_with(|jail| {
            jail.create_file("custom.toml", "gate_clock_skew = 5\n")?;
            jail.set_env(vars::SECRET, SECRET_A);
            jail.set_env(vars::CONFIG_FILE, "custom.toml");
            let message = Config::load().expect_err("typo refused").to_string();
            assert!(message.contains("gate_clock_skew"), "{message}");
            assert!(message.starts_with(vars::CONFIG_FILE), "{message}");
            Ok(())
        });
    }

    #[test]
    fn toml_errors_never_quote_a_secret() {
        // Each file is refused; no message may hold any part of the secret's value.
        let secret = "TOPSECRET-value-0123456789-abcdefghij";
        let files = [
            format!("gate_listen = \"127.0.0.1:1\"\ninterservice_hmac_secret = \"{secret}\n"),
            format!("interservice_hmac_secret = {secret}\n"),
            format!("interservice_hmac_secret = \"{secret}\" \"{secret}\"\n"),
            format!("interservice_hmac_secret = [\"{secret}\"]\n"),
            format!("interservice_hmac_secret = {{ v = \"{secret}\" }}\n"),
            format!("interservice_hmac_secret = \"{secret}\"\ninterservice_hmac_secret = \"x\"\n"),
            "interservice_hmac_secret = 1979-05-27T07:32:00Z\nx = [\"TOPSECRET\"]\n".to_owned(),
        ];
        for file in files {
            Jail::expect_with(|jail| {
                jail.create_file("bad.toml", &file)?;
                jail.set_env(vars::CONFIG_FILE, "bad.toml");
                let message = Config::load().expect_err("refused").to_string();
                assert!(message.starts_with(vars::CONFIG_FILE), "{message}");
                assert!(!message.contains("TOPSECRET"), "{file:?} -> {message}");
                assert!(!message.contains("0123456789"), "{file:?} -> {message}");
                Ok(())
            });
        }
        // A syntax error still says where it is.
        Jail::expect_with(|jail| {
            jail.create_file(
                "bad.toml",
                &format!("a = 1\ninterservice_hmac_secret = \"{secret}\n"),
            )?;
            jail.set_env(vars::CONFIG_FILE, "bad.toml");
            let message = Config::load().expect_err("refused").to_string();
            assert!(message.contains("line 2, column"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn empty_optional_values_count_as_unset() {
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, SECRET_A);
            jail.set_env(vars::SECRET_PREV, "");
            jail.set_env(vars::LISTEN, "");
            let config = Config::load().expect("valid");
            assert!(config.keyring.previous().is_none());
            assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
            Ok(())
        });
    }

    #[test]
    fn dual_sign_needs_a_previous_secret() {
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, SECRET_A);
            jail.set_env(vars::DUAL_SIGN, "true");
            let message = signer().expect_err("no previous secret").to_string();
            assert!(message.starts_with(vars::DUAL_SIGN), "{message}");
            assert!(message.contains(vars::SECRET_PREV), "{message}");
            // The gate itself does not sign, so serve still starts.
            assert!(Config::load().is_ok());
            jail.set_env(vars::SECRET_PREV, SECRET_B);
            assert!(signer().is_ok());
            Ok(())
        });
    }

    #[test]
    fn the_shipped_example_documents_every_key() {
        let example = include_str!("../../../config/sig-gate.toml");
        // Uncomment every `# key = value` line: the result must be a valid file for Raw.
        let uncommented: String = example
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| {
                line.split_once(" = ").is_some_and(|(key, _)| {
                    key.contains('_')
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
            })
            .map(|line| format!("{line}\n"))
            .collect();
        toml_value(&uncommented);
        for name in vars::ALL {
            let key = name.to_ascii_lowercase();
            assert!(
                uncommented.contains(&format!("{key} = ")),
                "{key} is not in the example"
            );
        }
        // Every key is commented out, so the file alone changes nothing.
        assert!(
            example
                .lines()
                .all(|l| l.trim().is_empty() || l.starts_with('#'))
        );
    }

    fn toml_value(text: &str) -> Raw {
        Figment::from(Toml::string(text))
            .extract()
            .expect("example keys are known")
    }

    #[test]
    fn replay_store_settings_are_read() {
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, SECRET_A);
            jail.set_env(vars::REPLAY_STORE, "redis-cluster://:pw@a:7000,b:7001");
            jail.set_env(vars::REPLAY_STORE_TIMEOUT_MS, "250");
            jail.set_env(vars::REPLAY_STORE_PREFIX, "team-a/gate:");
            let config = Config::load().expect("valid");
            assert_eq!(config.replay_store.kind(), "redis-cluster");
            assert_eq!(
                config.replay_store.to_string(),
                "redis-cluster://:***@a:7000,b:7001"
            );
            assert_eq!(config.replay_store_timeout, Duration::from_millis(250));
            assert_eq!(config.replay_store_prefix, "team-a/gate:");
            Ok(())
        });
    }

    #[test]
    fn debug_output_holds_no_secret() {
        Jail::expect_with(|jail| {
            jail.set_env(vars::SECRET, SECRET_A);
            jail.set_env(vars::SECRET_PREV, SECRET_B);
            jail.set_env(vars::REPLAY_STORE, "redis://gate:store-pass-1@redis:6379");
            let shown = format!(
                "{:?} {:?}",
                Config::load().expect("valid"),
                Raw::load().expect("valid")
            );
            assert!(
                !shown.contains(SECRET_A) && !shown.contains(SECRET_B),
                "{shown}"
            );
            assert!(!shown.contains("store-pass-1"), "{shown}");
            Ok(())
        });
    }
}
