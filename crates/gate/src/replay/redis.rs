//! The shared replay store on Redis (docs/operations.md, "Shared replay store"): each verified
//! request's nonce is recorded with one `SET <prefix>nonce:<nonce> 1 NX PX <ttl>`, expiring
//! `GATE_CLOCK_SKEW_SECS` + 1 s after the request's timestamp, so every gate sharing the store,
//! and this one after a restart, refuses it again until its window has closed.
//!
//! How it stays within its budget and fails closed:
//! - Every operation, connecting and authenticating included, runs under one
//!   `GATE_REPLAY_STORE_TIMEOUT_MS` deadline; past it, or on any error, the answer is
//!   [`ReplayError::Unavailable`] and the proxy refuses the request with 503. An operation the
//!   deadline cut short may still reach Redis and record its nonce: the refused request cannot
//!   then be sent again with the same nonce, which a client re-signing its retry never does.
//! - One multiplexed connection per server (redis-rs's `ConnectionManager`, or its cluster
//!   connection, one per node) for each thread that admits requests, opened on that thread's
//!   runtime: the requests of one worker pipeline their commands on it instead of taking a
//!   connection each, and the connection's own task runs on the worker's thread, so a command
//!   and its answer never hop to another thread. With `GATE_WORKERS=N` that is N connections
//!   and the probe's. On a single server the worker's commands go out in batches, one on its
//!   way at a time (group commit, `redis/lane.rs`). A thread whose operation failed opens a
//!   new connection for its next one, so once the store is back every thread's next request
//!   reaches it; no command is retried (the budget is too short for it), and a connection
//!   attempt fails at once rather than backing off, so a request during an outage waits at
//!   most its budget.
//! - A probe task sends `PING` every second on a connection of its own, so
//!   `sig_gate_replay_store_up` and the reconnection follow the store on an idle gate too;
//!   after three failed probes in a row it replaces every connection of the store (each thread
//!   opens a new one at its next operation), which recovers from what the client library would
//!   not retry by itself (an authentication failure, a cluster whose every node was lost).
//! - TCP keepalive and `TCP_USER_TIMEOUT` close a connection whose peer vanished without a
//!   reset, which would otherwise time out every operation for as long as it stays open.
//!
//! The password is handed to the client library and to nothing else: this module's `Debug`
//! prints the URL with `***`, and every error text logged is scrubbed of it first.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, RedisWrite, Value,
};

use self::lane::{Answer, Lane};
use super::location::RedisUrl;
use super::{Admitted, ReplayError, StoreFailure};
use crate::metrics::ReplayStoreMetrics;
use crate::verify::Verified;

mod lane;

/// How often the probe task pings the store.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Failed probes in a row after which the connections are replaced by new ones.
const REPLACE_AFTER: u32 = 3;

thread_local! {
    /// This thread's link to each store it has used (a process runs one gate, but a test
    /// process many): the store's `Weak`, so an entry of a dropped store is recognised and
    /// removed, and the generation the link was opened in.
    static LINKS: RefCell<Vec<ThreadLink>> = const { RefCell::new(Vec::new()) };
}

struct ThreadLink {
    store: Weak<Shared>,
    generation: u64,
    link: Link,
}

/// How a thread's commands reach the store.
#[derive(Clone)]
enum Link {
    /// A single server: through the thread's [`Lane`], in batches.
    Single(Arc<Lane>),
    /// A cluster: each command on its own, routed by its key's slot.
    Cluster(ClusterConnection),
}

impl Link {
    fn open(url: &RedisUrl, budget: Duration) -> Link {
        match Connection::open(url, budget) {
            Connection::Single(manager) => Link::Single(Arc::new(Lane::new(manager))),
            Connection::Cluster(cluster) => Link::Cluster(cluster),
        }
    }
}

/// The shared store: the connection, the key layout and the window, the series it counts into.
pub struct RedisStore {
    shared: Arc<Shared>,
    probe: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shared.url.to_string())
            .field("budget", &self.shared.budget)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.probe.abort();
    }
}

/// What the store's operations and its probe task share.
struct Shared {
    url: RedisUrl,
    /// `GATE_REPLAY_STORE_TIMEOUT_MS`.
    budget: Duration,
    /// `GATE_REPLAY_STORE_PREFIX` followed by `nonce:`.
    key_prefix: Box<[u8]>,
    /// How long past its timestamp a nonce is kept, in milliseconds: the window and one second
    /// (a timestamp `t` passes while the clock, in whole seconds, reads at most `t` + window).
    keep_ms: u64,
    /// Bumped when the probe replaces the connections: a thread whose connection is of an
    /// older generation opens a new one.
    generation: AtomicU64,
    metrics: ReplayStoreMetrics,
    /// Whether the last operation or probe was answered (`sig_gate_replay_store_up`).
    up: AtomicBool,
}

impl RedisStore {
    /// A store at `url` that connects in the background: it must be built inside a tokio
    /// runtime, and answers [`StoreFailure::Connection`] until Redis is reached.
    pub fn new(
        url: RedisUrl,
        budget: Duration,
        prefix: &str,
        window_secs: u64,
        metrics: ReplayStoreMetrics,
    ) -> RedisStore {
        metrics.set_up(false);
        let shared = Arc::new(Shared {
            url,
            budget,
            key_prefix: [prefix.as_bytes(), b"nonce:"].concat().into_boxed_slice(),
            keep_ms: window_secs.saturating_add(1).saturating_mul(1000),
            generation: AtomicU64::new(0),
            metrics,
            up: AtomicBool::new(false),
        });
        let probe = tokio::spawn(watch(Arc::clone(&shared)));
        RedisStore { shared, probe }
    }

    /// Record a verified request's nonce: `Ok` when it was absent, [`ReplayError::Replayed`]
    /// when present, [`ReplayError::Unavailable`] when the store did not answer within the
    /// budget. The command is built here, so the future holds no part of the request.
    pub fn admit(
        &self,
        verified: Verified<'_>,
    ) -> Pin<Box<dyn Future<Output = Result<Admitted, ReplayError>> + Send + '_>> {
        let shared = &self.shared;
        let command = set_nx(
            &shared.key_prefix,
            verified.nonce().as_bytes(),
            ttl_ms(verified.timestamp(), shared.keep_ms, unix_now_ms()),
        );
        let admitted = Admitted::new(&verified);
        let link = thread_link(shared);
        Box::pin(async move {
            let started = Instant::now();
            let answer = match link {
                Link::Single(lane) => shared.queue(&lane, command).await,
                Link::Cluster(cluster) => shared.send_to_cluster(cluster, &command).await,
            };
            shared.metrics.operation(started.elapsed().as_secs_f64());
            match answer {
                Ok(Value::Okay) => Ok(admitted),
                Ok(Value::Nil) => Err(ReplayError::Replayed),
                Ok(other) => {
                    let kind = StoreFailure::Reply;
                    shared.failed(kind, &format!("unexpected reply to SET NX: {other:?}"));
                    Err(ReplayError::Unavailable(kind))
                }
                Err(kind) => Err(ReplayError::Unavailable(kind)),
            }
        })
    }
}

impl Shared {
    /// Send `command` to the cluster on its own under the budget. An answer marks the store
    /// up; a failure is counted, marks it down (logged when that changes its state) and drops
    /// this thread's link, so that its next operation opens a new one.
    async fn send_to_cluster(&self, mut cluster: ClusterConnection, command: &Cmd) -> Answer {
        let kind =
            match tokio::time::timeout(self.budget, cluster.req_packed_command(command)).await {
                Ok(Ok(value)) => {
                    self.set_up(true, None);
                    return Ok(value);
                }
                Ok(Err(err)) => {
                    let kind = failure_kind(&err);
                    self.failed(kind, &err.to_string());
                    kind
                }
                Err(_elapsed) => self.timed_out(),
            };
        forget_thread_link(self);
        Err(kind)
    }

    /// Queue `command` on `lane` for its next batch and wait for the reply under the budget.
    /// A failed batch has marked the store down already; this counts the failure against the
    /// request.
    async fn queue(self: &Arc<Shared>, lane: &Arc<Lane>, command: Cmd) -> Answer {
        let reply = lane.submit(self, command);
        match tokio::time::timeout(self.budget, reply).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(kind))) => {
                self.metrics.failed(kind);
                Err(kind)
            }
            Ok(Err(_dropped)) => {
                let kind = StoreFailure::Connection;
                self.failed(kind, "the batch carrying the command was dropped");
                Err(kind)
            }
            Err(_elapsed) => Err(self.timed_out()),
        }
    }

    /// Count and log an operation the budget cut short.
    fn timed_out(&self) -> StoreFailure {
        let kind = StoreFailure::Timeout;
        self.failed(kind, &self.no_answer());
        kind
    }

    /// What the log says of an operation the budget cut short.
    fn no_answer(&self) -> String {
        format!("no answer within {} ms", self.budget.as_millis())
    }

    /// Have every thread replace its connection at its next operation (see the module
    /// documentation).
    fn reconnect(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, kind: StoreFailure, detail: &str) {
        self.metrics.failed(kind);
        self.set_up(false, Some((kind, detail)));
    }

    /// Set `sig_gate_replay_store_up` (on every call, so that the gauge follows the latest
    /// answer whatever order racing threads write it in), and log when the state changes:
    /// only a change writes the flag that decides the log line.
    fn set_up(&self, up: bool, failure: Option<(StoreFailure, &str)>) {
        self.metrics.set_up(up);
        if self.up.load(Ordering::Relaxed) == up || self.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        match failure {
            None => tracing::info!(store = %self.url, "replay store answers"),
            Some((kind, detail)) => tracing::error!(
                store = %self.url,
                kind = kind.as_str(),
                error = %scrub(detail, &self.url),
                "replay store unavailable: signed requests get 503 until it answers \
                 (sig_gate_replay_store_errors_total counts each failed operation)"
            ),
        }
    }
}

/// This thread's link to `store` (a cheap clone of it), opened here, on this thread's runtime,
/// when the thread has none of the store's current generation.
fn thread_link(store: &Arc<Shared>) -> Link {
    let generation = store.generation.load(Ordering::Relaxed);
    LINKS.with_borrow_mut(|links| {
        if let Some(entry) = links
            .iter_mut()
            .find(|entry| std::ptr::eq(entry.store.as_ptr(), Arc::as_ptr(store)))
        {
            if entry.generation != generation {
                entry.generation = generation;
                entry.link = Link::open(&store.url, store.budget);
            }
            return entry.link.clone();
        }
        links.retain(|entry| entry.store.strong_count() > 0);
        let link = Link::open(&store.url, store.budget);
        links.push(ThreadLink {
            store: Arc::downgrade(store),
            generation,
            link: link.clone(),
        });
        link
    })
}

/// Drop this thread's link to `store`, so that its next operation opens a new connection
/// rather than waiting on one that failed (or on the client library's attempt to reconnect
/// it, made while the store may still have been down). Only a cluster link is dropped so: a
/// lane replaces its connection itself.
fn forget_thread_link(store: &Shared) {
    LINKS.with_borrow_mut(|links| {
        links.retain(|entry| !std::ptr::eq(entry.store.as_ptr(), store));
    });
}

/// The probe task: a `PING` every [`PROBE_INTERVAL`] under the budget on a connection of its
/// own, replaced after each failure; every thread's connection replaced after
/// [`REPLACE_AFTER`] failures in a row, and every [`REPLACE_AFTER`] failures after that.
async fn watch(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping = redis::cmd("PING");
    let mut failures: u32 = 0;
    let mut connection = Connection::open(&shared.url, shared.budget);
    loop {
        interval.tick().await;
        let answer =
            tokio::time::timeout(shared.budget, connection.req_packed_command(&ping)).await;
        let failure = match answer {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some((failure_kind(&err), err.to_string())),
            Err(_elapsed) => Some((StoreFailure::Timeout, "PING: no answer in time".into())),
        };
        match failure {
            None => {
                failures = 0;
                shared.set_up(true, None);
            }
            Some((kind, detail)) => {
                failures = failures.saturating_add(1);
                shared.set_up(false, Some((kind, &detail)));
                connection = Connection::open(&shared.url, shared.budget);
                if failures.is_multiple_of(REPLACE_AFTER) {
                    shared.reconnect();
                }
            }
        }
    }
}

/// Whether the store at `url` answers a `PING` within `budget`, connecting and authenticating
/// included (`sig-gate check-config`): how long it took, or why not (never with the password).
pub async fn probe(url: &RedisUrl, budget: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut connection = Connection::open(url, budget);
    let ping = redis::cmd("PING");
    match tokio::time::timeout(budget, connection.req_packed_command(&ping)).await {
        Ok(Ok(_)) => Ok(started.elapsed()),
        Ok(Err(err)) => Err(scrub(&err.to_string(), url)),
        Err(_elapsed) => Err(format!("no answer within {} ms", budget.as_millis())),
    }
}

/// A multiplexed connection to one server, or a cluster connection (one per node): cheap to
/// clone, every clone sharing the same connections.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// A connection that connects on first use, each attempt bounded by `budget`.
    fn open(url: &RedisUrl, budget: Duration) -> Connection {
        if url.cluster {
            Connection::Cluster(open_cluster(url, budget))
        } else {
            Connection::Single(open_single(url, budget))
        }
    }

    fn req_packed_command<'a>(&'a mut self, command: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Connection::Single(manager) => manager.req_packed_command(command),
            Connection::Cluster(cluster) => cluster.req_packed_command(command),
        }
    }
}

/// How the gate reaches each node: TCP settings and login.
fn node_infos(url: &RedisUrl) -> (Vec<ConnectionInfo>, TcpSettings) {
    let tcp = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(
            socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(10))
                .with_interval(Duration::from_secs(2))
                .with_retries(3),
        )
        .set_user_timeout(Duration::from_secs(10));
    let mut settings = RedisConnectionInfo::default()
        .set_db(i64::from(url.db))
        .set_skip_set_lib_name();
    if let Some(password) = &url.password {
        settings = settings.set_password(password.expose());
    }
    if let Some(username) = &url.username {
        settings = settings.set_username(username);
    }
    let infos = url
        .nodes
        .iter()
        .map(|node| {
            ConnectionAddr::Tcp(node.host.clone(), node.port)
                .into_connection_info()
                .expect("a TCP address is always connection info")
                .set_tcp_settings(tcp.clone())
                .set_redis_settings(settings.clone())
        })
        .collect();
    (infos, tcp)
}

/// A connection to the server of a `redis://` URL that connects on first use, each attempt
/// bounded by `budget`.
fn open_single(url: &RedisUrl, budget: Duration) -> ConnectionManager {
    let (infos, _) = node_infos(url);
    let info = infos.into_iter().next().expect("redis:// names one node");
    let client = redis::Client::open(info).expect("connection info opens a client");
    // The library's own response timeout (500 ms by default) follows the budget, so a budget
    // above it is honoured; the budget bounds each operation in any case.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(budget))
        .set_response_timeout(Some(budget))
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client, config)
        .expect("a manager without push settings builds")
}

/// A connection to the cluster of a `redis-cluster://` URL (one to each node) that connects on
/// first use, each attempt bounded by `budget`.
fn open_cluster(url: &RedisUrl, budget: Duration) -> ClusterConnection {
    let (infos, tcp) = node_infos(url);
    let mut builder = ClusterClientBuilder::new(infos)
        .connection_timeout(budget)
        .response_timeout(budget)
        .tcp_settings(tcp);
    if let Some(password) = &url.password {
        builder = builder.password(password.expose());
    }
    if let Some(username) = &url.username {
        builder = builder.username(username);
    }
    // The URL was checked when the configuration was read: at least one node, every node with
    // the same credentials and database 0.
    let client = builder
        .build()
        .expect("a checked cluster URL builds a client");
    let config = ClusterConfig::new()
        .set_connection_timeout(budget)
        .set_response_timeout(budget);
    client.get_pending_async_connection_with_config(config)
}

/// The `kind` a client error counts under.
fn failure_kind(err: &RedisError) -> StoreFailure {
    if err.is_timeout() {
        return StoreFailure::Timeout;
    }
    match err.kind() {
        ErrorKind::Server(_) | ErrorKind::UnexpectedReturnType | ErrorKind::Parse => {
            StoreFailure::Reply
        }
        _ => StoreFailure::Connection,
    }
}

/// `detail` with the URL's password, should an error text ever carry it, replaced by `***`.
fn scrub(detail: &str, url: &RedisUrl) -> String {
    match &url.password {
        Some(password) => detail.replace(password.expose(), "***"),
        None => detail.to_owned(),
    }
}

/// `SET <key_prefix><nonce> 1 NX PX <ttl_ms>`, built in buffers sized for it up front: the
/// key is written into the command in place, and neither buffer grows on the way.
fn set_nx(key_prefix: &[u8], nonce: &[u8], ttl_ms: u64) -> Cmd {
    // Six arguments: `SET`, `1`, `NX` and `PX` take 8 bytes, the TTL at most 20 digits.
    let mut command = Cmd::with_capacity(6, key_prefix.len() + nonce.len() + 28);
    command.arg("SET");
    let mut key = command.writer_for_next_arg();
    key.write_all(key_prefix)
        .and_then(|()| key.write_all(nonce))
        .expect("a command's buffer takes any bytes");
    drop(key);
    command.arg(1).arg("NX").arg("PX").arg(ttl_ms);
    command
}

/// Milliseconds from `now_ms` until `keep_ms` past `timestamp` (seconds); at least 1, as `PX`
/// takes no 0. A verified request's timestamp is within the window of the clock, so this is
/// more than a second in practice.
fn ttl_ms(timestamp: u64, keep_ms: u64, now_ms: u64) -> u64 {
    timestamp
        .saturating_mul(1000)
        .saturating_add(keep_ms)
        .saturating_sub(now_ms)
        .max(1)
}

/// Unix time in milliseconds (0 before 1970, which only makes keys live longer).
fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_kept_one_second_past_its_window() {
        let window = 300;
        let keep_ms = (window + 1) * 1000;
        let timestamp = 1_700_000_000;
        // Signed now: kept for the window and one second.
        assert_eq!(ttl_ms(timestamp, keep_ms, timestamp * 1000), 301_000);
        // Signed 10 s ago, checked 250 ms into the second: 10.25 s less.
        assert_eq!(
            ttl_ms(timestamp, keep_ms, (timestamp + 10) * 1000 + 250),
            290_750
        );
        // Signed ahead of this clock (the other side of the window): kept longer.
        assert_eq!(ttl_ms(timestamp + 300, keep_ms, timestamp * 1000), 601_000);
        // Never 0 or less, which SET PX refuses.
        assert_eq!(ttl_ms(timestamp, keep_ms, (timestamp + 400) * 1000), 1);
    }

    #[test]
    fn the_command_is_set_if_absent_with_the_prefixed_key() {
        let command = set_nx(b"sig-gate:nonce:", b"n-0123456789", 301_000);
        assert_eq!(
            command.get_packed_command(),
            b"*6\r\n$3\r\nSET\r\n$27\r\nsig-gate:nonce:n-0123456789\r\n$1\r\n1\r\n\
              $2\r\nNX\r\n$2\r\nPX\r\n$6\r\n301000\r\n"
        );
    }

    #[test]
    fn error_texts_lose_the_password() {
        let url = match super::super::StoreLocation::parse("redis://:pa55-word-9@h:1") {
            Ok(super::super::StoreLocation::Redis(url)) => url,
            other => panic!("{other:?}"),
        };
        assert_eq!(scrub("auth pa55-word-9 failed", &url), "auth *** failed");
    }
}
