//! Listeners, the accept loop and the drain (contract sections 7 and 8).
//!
//! [`Listeners::open`] takes sockets from systemd-style socket activation (`LISTEN_FDS`: fd 3
//! is the proxy listener, fd 4 the admin listener when two are passed) or binds them itself
//! with `SO_REUSEPORT`, so a new process can serve on the same port before the old one drains.
//! [`run`] serves until its `shutdown` future completes, then drains within the grace period.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::config::{Config, vars};
use crate::metrics::Metrics;
use crate::proxy::{Gate, Peer};

/// Pending-connection queue length for listeners the gate binds itself.
const BACKLOG: i32 = 1024;

/// How long a draining gate keeps serving idle keep-alive connections (answering with
/// `Connection: close`) before closing them, so busy clients leave on a response instead of
/// racing a close. Bounded by the grace period; skipped when no connection is open.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// The two listening sockets, before the runtime starts.
#[derive(Debug)]
pub struct Listeners {
    /// Proxy listener.
    pub proxy: std::net::TcpListener,
    /// Admin listener.
    pub admin: std::net::TcpListener,
}

impl Listeners {
    /// Take inherited sockets (`LISTEN_FDS`, honoured only when `LISTEN_PID` is unset or names
    /// this process) or bind the configured addresses with `SO_REUSEPORT`. Call before the
    /// runtime starts threads: reading `LISTEN_FDS` clears it from the environment.
    pub fn open(config: &Config) -> Result<Listeners, ListenError> {
        let mut inherited = listenfd::ListenFd::from_env();
        let mut take = |index, var, addr| {
            let fail = |source| ListenError { var, addr, source };
            let listener = match inherited.take_tcp_listener(index).map_err(fail)? {
                Some(listener) => listener,
                None => bind_reuseport(addr).map_err(fail)?,
            };
            listener.set_nonblocking(true).map_err(fail)?;
            Ok(listener)
        };
        Ok(Listeners {
            proxy: take(0, vars::LISTEN, config.listen)?,
            admin: take(1, vars::ADMIN_LISTEN, config.admin_listen)?,
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
/// same port while the old one still drains.
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

/// Serve until `shutdown` resolves, then drain: `/readyz` turns 503, the proxy listener
/// closes, in-flight requests finish with `Connection: close`, idle connections close. The
/// admin listener keeps answering until this returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Drain> {
    let proxy = TcpListener::from_std(listeners.proxy)?;
    let admin = TcpListener::from_std(listeners.admin)?;
    let grace = config.shutdown_grace;
    let header_read_timeout = config.header_read_timeout;
    let metrics = Metrics::new(&config);
    let gate = Arc::new(Gate::new(config, metrics));
    let ready = Arc::new(AtomicBool::new(false));

    tracing::info!(
        proxy_addr = %proxy.local_addr()?,
        admin_addr = %admin.local_addr()?,
        "listening"
    );
    let admin_task = tokio::spawn(serve_admin(admin, Arc::clone(&gate), Arc::clone(&ready)));
    ready.store(true, Ordering::Release);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .writev(false);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();

    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = proxy.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or a connection reset before accept: back off
                    // briefly instead of spinning, and keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Latency matters more than packet count for small request/response exchanges.
        let _ = stream.set_nodelay(true);
        let gate = Arc::clone(&gate);
        let peer = Arc::new(Peer::new(addr));
        let service = service_fn(move |request: Request<Incoming>| {
            Arc::clone(&gate).handle(request, Arc::clone(&peer))
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection closed with an error");
            }
        });
    }

    ready.store(false, Ordering::Release);
    drop(proxy);
    gate.start_draining();
    let deadline = Instant::now() + grace;
    let linger_end = (Instant::now() + DRAIN_LINGER).min(deadline);
    while graceful.count() > 0 && Instant::now() < linger_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = graceful.count();
    let drain = match tokio::time::timeout_at(deadline, graceful.shutdown()).await {
        Ok(()) => {
            tracing::info!(closed = open, "drain complete");
            Drain::Complete
        }
        Err(_) => {
            tracing::error!(
                grace_secs = grace.as_secs(),
                "drain deadline passed with requests still in flight (GATE_SHUTDOWN_GRACE_SECS)"
            );
            Drain::Expired
        }
    };
    admin_task.abort();
    Ok(drain)
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz`.
async fn serve_admin(listener: TcpListener, gate: Arc<Gate>, ready: Arc<AtomicBool>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let gate = Arc::clone(&gate);
        let ready = Arc::clone(&ready);
        let service = service_fn(move |request: Request<Incoming>| {
            let response = admin_response(&request, &gate, &ready);
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "admin connection closed with an error");
            }
        });
    }
}

fn admin_response(
    request: &Request<Incoming>,
    gate: &Gate,
    ready: &AtomicBool,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(gate.render_metrics())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
