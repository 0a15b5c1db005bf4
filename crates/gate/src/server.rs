//! Listeners, the workers, the admin endpoints and the drain (docs/operations.md, "Workers and
//! CPUs" and "Zero-downtime redeploys").
//!
//! The gate serves on `GATE_WORKERS` workers, each an OS thread running a current-thread tokio
//! runtime with an accept loop of its own, the way nginx runs one worker process per core: a
//! connection is served start to end on the thread that accepted it, with no cross-thread
//! wake-ups or work stealing (bench/analysis.md has the measurements behind this choice).
//! [`run`] starts them, serves the admin listener on the caller's runtime, and drains every
//! worker when its `shutdown` future completes.
//!
//! [`Listeners::open`] takes the proxy socket from systemd-style socket activation
//! (`LISTEN_FDS`: fd 3 is the proxy listener, fd 4 the admin listener when two are passed), and
//! every worker then accepts on a duplicate of that one socket; or it binds one socket per
//! worker with `SO_REUSEPORT`, and the kernel spreads new connections across them. Either way a
//! new process can serve on the same port before the old one drains, and either way the
//! worker that accepts a connection hands it to the worker serving the fewest when that is not
//! itself, so the workers' open connections stay even (`server/balance.rs`).
//!
//! One for the whole process, whatever the number of workers: the gate's configuration, keys,
//! replay cache and metrics, the connection cap (`GATE_MAX_CONNECTIONS`), the body budget, the
//! admin listener, the drain and the count of each worker's open connections. One per worker:
//! its listener, its connections and their limits, and its upstream keep-alive pool.
//!
//! | file | owns |
//! | --- | --- |
//! | `server.rs` | [`Listeners`], [`run`]: start the workers, serve the admin listener, drain |
//! | `server/worker.rs` | one worker: its thread and runtime, the accept loop, the connection cap, its share of the drain; what the workers share |
//! | `server/balance.rs` | which worker serves a new connection: the one serving the fewest |
//! | `server/connection.rs` | one client connection: hyper's settings, the head, idle and drain deadlines, the requests in flight |
//! | `server/admin.rs` | `/metrics`, `/healthz`, `/readyz` |

mod admin;
mod balance;
mod connection;
mod worker;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::worker::{Drained, Event, Shared};
use crate::config::{Config, vars};
use crate::reload;

/// Most header fields in one request head (HTTP/1.1 and HTTP/2 alike).
pub const MAX_HEADER_FIELDS: usize = 100;

/// Pending-connection queue length for listeners the gate binds itself.
const BACKLOG: i32 = 1024;

/// The listening sockets, before the runtimes start.
#[derive(Debug)]
pub struct Listeners {
    /// Proxy listener (the first worker's).
    pub proxy: std::net::TcpListener,
    /// Admin listener.
    pub admin: std::net::TcpListener,
    /// The other workers' proxy listeners: duplicates of `proxy` when it was inherited, else
    /// sockets of their own bound to its address with `SO_REUSEPORT`.
    more_proxies: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// Take inherited sockets (`LISTEN_FDS`, honoured only when `LISTEN_PID` is unset or names
    /// this process) or bind the configured addresses with `SO_REUSEPORT`, with one proxy
    /// listener for each of `GATE_WORKERS` workers. Call before the runtime starts threads:
    /// reading `LISTEN_FDS` clears it from the environment.
    pub fn open(config: &Config) -> Result<Listeners, ListenError> {
        let mut inherited = listenfd::ListenFd::from_env();
        let mut take = |index, var, addr| {
            let fail = |source| ListenError { var, addr, source };
            let (listener, inherited) = match inherited.take_tcp_listener(index).map_err(fail)? {
                Some(listener) => (listener, true),
                None => (bind_reuseport(addr).map_err(fail)?, false),
            };
            listener.set_nonblocking(true).map_err(fail)?;
            Ok((listener, inherited))
        };
        let (proxy, inherited) = take(0, vars::LISTEN, config.listen)?;
        let (admin, _) = take(1, vars::ADMIN_LISTEN, config.admin_listen)?;
        let fail = |source| ListenError {
            var: vars::LISTEN,
            addr: config.listen,
            source,
        };
        // The address bound, with the port the system chose for a port 0.
        let bound = proxy.local_addr().map_err(fail)?;
        let more_proxies = (1..config.workers)
            .map(|_| {
                if inherited {
                    proxy.try_clone()
                } else {
                    bind_reuseport(bound)
                }
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(fail)?;
        Ok(Listeners {
            proxy,
            admin,
            more_proxies,
        })
    }
}

/// A listener could not be taken or bound.
#[derive(Debug, thiserror::Error)]
#[error("{var} {addr}: cannot listen: {source}")]
pub struct ListenError {
    /// The variable naming the address.
    pub var: &'static str,
    /// The configured address.
    pub addr: SocketAddr,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

/// Bind `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, so a redeployed process can bind the
/// same port while the old one still drains, and each worker can bind a socket of its own.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished within the grace period (exit 0).
    Complete,
    /// The grace period ran out with connections still open (exit 1).
    Expired,
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    // Installing a handler fails only if the runtime has no signal driver, which
    // `enable_all` provides.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let signal = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!(signal, "shutdown requested: draining");
}

/// Serve on `GATE_WORKERS` workers until `shutdown` resolves, then drain: `/readyz` turns 503,
/// every worker closes its proxy listener, in-flight requests finish with `Connection: close`,
/// idle connections close. The admin listener runs on the caller's runtime and keeps answering
/// until this returns; `/readyz` answers 200 once every worker accepts.
///
/// Dropping the future before it completes stops the workers at once, without a drain.
pub async fn run(
    mut config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Drain> {
    let Listeners {
        proxy,
        admin,
        more_proxies,
    } = listeners;
    let admin = TcpListener::from_std(admin)?;
    let proxy_addr = proxy.local_addr()?;
    // One worker per listener (`Listeners::open` opened `GATE_WORKERS` of them).
    config.workers = 1 + more_proxies.len();
    let grace = config.shutdown_grace;
    // Installed before the gate listens: from then on a SIGHUP reloads the keys instead of
    // ending the process. Installing fails only without a signal driver, which the runtime has.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("SIGHUP handler");
    let (key_source, key_files) = (config.key_source.clone(), config.key_files.clone());
    let (shared, inboxes) = Shared::new(config);
    let shared = Arc::new(shared);
    let gate = Arc::clone(&shared.gate);
    // The keys are the gate's, one set for every worker: one watcher, on this runtime.
    let _reloader = AbortOnDrop(tokio::spawn(reload::watch(
        Arc::clone(gate.keys()),
        key_source,
        key_files,
        gate.metrics().clone(),
        hangup,
    )));

    // The workers wait for a drain deadline here; when this function returns or is dropped,
    // the sender goes and any worker still running stops at once.
    let (stop_tx, stop_rx) = watch::channel(None);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut workers = 0;
    let listeners = std::iter::once(proxy).chain(more_proxies);
    for (index, (listener, inbox)) in listeners.zip(inboxes).enumerate() {
        worker::spawn(
            index,
            listener,
            inbox,
            Arc::clone(&shared),
            stop_rx.clone(),
            events_tx.clone(),
        )?;
        workers += 1;
    }
    // Each worker holds a sender until it ends: `recv` returns `None` once all have ended.
    drop(events_tx);
    drop(shared);
    let mut listening = 0;
    while listening < workers {
        match events.recv().await {
            Some(Event::Listening) => listening += 1,
            Some(Event::Stopped { worker, result }) => {
                return Err(stopped_early(worker, result));
            }
            None => return Err(io::Error::other("every worker stopped before listening")),
        }
    }

    let ready = Arc::new(AtomicBool::new(false));
    tracing::info!(
        proxy_addr = %proxy_addr,
        admin_addr = %admin.local_addr()?,
        workers,
        "listening"
    );
    let _admin_task = AbortOnDrop(tokio::spawn(admin::serve(
        admin,
        Arc::clone(&gate),
        Arc::clone(&ready),
    )));
    ready.store(true, Ordering::Release);

    // Every worker serves until the shutdown; one that ends before it has failed (a panic that
    // escaped its runtime): the others are drained as on SIGTERM, and `run` returns the error.
    let mut failure = None;
    let mut stopped = 0;
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        event = events.recv() => {
            let err = match event {
                Some(Event::Stopped { worker, result }) => {
                    stopped += 1;
                    stopped_early(worker, result)
                }
                Some(Event::Listening) | None => io::Error::other("a worker stopped"),
            };
            tracing::error!(error = %err, "a worker stopped: draining the others");
            failure = Some(err);
        }
    }

    ready.store(false, Ordering::Release);
    gate.start_draining();
    let deadline = Instant::now() + grace;
    stop_tx.send_replace(Some(deadline));
    let mut drain = Drain::Complete;
    let mut open = 0;
    // Each worker's drain ends by the deadline; `None` once every worker has ended.
    while let Some(event) = events.recv().await {
        let Event::Stopped { worker, result } = event else {
            continue;
        };
        stopped += 1;
        match result {
            Ok(drained) => {
                open += drained.open;
                if drained.drain == Drain::Expired {
                    drain = Drain::Expired;
                }
            }
            Err(err) => failure = Some(stopped_early(worker, Err(err))),
        }
    }
    if let Some(err) = failure {
        return Err(err);
    }
    if stopped < workers {
        return Err(io::Error::other(
            "a worker ended without reporting its drain",
        ));
    }
    match drain {
        Drain::Complete => tracing::info!(closed = open, "drain complete"),
        Drain::Expired => tracing::error!(
            grace_secs = grace.as_secs(),
            "drain deadline passed with requests still in flight (GATE_SHUTDOWN_GRACE_SECS)"
        ),
    }
    Ok(drain)
}

/// A task of [`run`]'s that ends with it, on every return.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The error for worker `worker`, which stopped before it was told to.
fn stopped_early(worker: usize, result: io::Result<Drained>) -> io::Error {
    match result {
        Err(err) => io::Error::new(err.kind(), format!("worker {worker}: {err}")),
        Ok(_) => io::Error::other(format!("worker {worker} stopped before the shutdown")),
    }
}
