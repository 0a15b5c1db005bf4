//! The recording upstream ([`RecordingUpstream`]): the protected service's stand-in
//! (tool-gate), in-process on 127.0.0.1 on a free port. It is the one upstream of everything
//! that needs one: `sig-gate demo`, the drill, the scorecard and the integration tests.
//!
//! It answers every request with a JSON description of what it received (`upstream/echo.rs`:
//! method, target, headers, body, body length), so a demo user or a test sees exactly what the
//! gate forwarded; and it records each request before answering it (`upstream/record.rs`): a
//! summary per path (how many, which key id the gate said verified it, the target and headers
//! it forwarded), and the latest requests in full, in order, bodies included. Both records are
//! bounded (the last [`RECENT_REQUESTS`] requests in full, at most [`RECENT_BODY_BYTES`] of
//! bodies among them, summaries of at most [`MAX_PATHS`] paths), because the drill runs for
//! minutes at hundreds of requests a second.
//!
//! Routes (`upstream/respond.rs`), for [`Routes::Harness`] (what [`RecordingUpstream::start`]
//! serves):
//!
//! | path | answer |
//! | --- | --- |
//! | `/events` | server-sent events: [`EVENT_COUNT`] of them, [`EVENT_INTERVAL`] apart (`upstream/events.rs`) |
//! | `/events/held` | the event [`HELD_FIRST`], then, once [`RecordingUpstream::release`] is called, [`HELD_SECOND`] |
//! | `/hold`, `/hold/...` | the echo, once [`RecordingUpstream::release`] is called |
//! | `/slow`, `/slow/...` | the echo after `?ms=N` milliseconds (at most [`MAX_SLOW`]; [`DEFAULT_SLOW`] without `ms`) |
//! | anything else | the echo at once |
//!
//! The echo goes out with `Connection: keep-alive` and `Keep-Alive: timeout=5`, hop-by-hop
//! headers a gate must drop. [`Routes::Echo`] (what `sig-gate demo` serves) keeps only the
//! echo and `/events`, so nothing a user sends can park a request.
//!
//! It can be stopped and restarted on the same port (the upstream-down scenario): stopping
//! closes every open connection too, so the gate's pooled connections see the outage at once.
//! [`RecordingUpstream::start_malformed`] starts one that answers `/malformed/...` with broken
//! HTTP/1.1 framing instead ([`Malformed`], `upstream/malformed.rs`), and counts the requests
//! that came on a connection after it had carried such an answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::{JoinHandle, JoinSet};

mod echo;
mod events;
mod malformed;
mod record;
mod respond;
#[cfg(test)]
mod tests;

pub use events::{EVENT_COUNT, EVENT_INTERVAL, EventStream, HELD_FIRST, HELD_SECOND};
pub use malformed::Malformed;
pub use record::{Arrival, MAX_PATHS, RECENT_BODY_BYTES, RECENT_REQUESTS, Seen};
pub use respond::{DEFAULT_SLOW, MAX_SLOW};

use record::Log;

/// Which routes a cleanly framed upstream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// The echo for every path, and `/events`: nothing a client sends holds or slows an answer
    /// (`sig-gate demo`).
    Echo,
    /// The echo, `/events`, and the harness's `/events/held`, `/hold` and `/slow` (the drill,
    /// the scorecard, the integration tests).
    Harness,
}

/// How the upstream frames its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// hyper's HTTP/1.1 and HTTP/2 server: every answer well-formed.
    Clean(Routes),
    /// The hand-written HTTP/1.1 loop of `upstream/malformed.rs`.
    Raw,
}

/// What every connection task of one upstream shares.
#[derive(Debug)]
struct Shared {
    log: Mutex<Log>,
    /// What `/hold` and `/events/held` wait for.
    release: Arc<Notify>,
    routes: Routes,
    /// Connections accepted so far, across restarts.
    accepted: AtomicU64,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        // A poisoned lock means a connection task panicked while recording: a harness bug.
        self.log.lock().expect("upstream record lock")
    }
}

/// The recording upstream: a running (or stopped) stand-in for the protected service that
/// remembers what reached it.
#[derive(Debug)]
pub struct RecordingUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    framing: Framing,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl RecordingUpstream {
    /// Bind 127.0.0.1 on a free port and serve every route ([`Routes::Harness`]).
    pub async fn start() -> std::io::Result<RecordingUpstream> {
        RecordingUpstream::start_with(Routes::Harness).await
    }

    /// Bind 127.0.0.1 on a free port and serve `routes`.
    pub async fn start_with(routes: Routes) -> std::io::Result<RecordingUpstream> {
        RecordingUpstream::start_framed(Framing::Clean(routes)).await
    }

    /// An upstream that answers `/malformed/<name>` ([`Malformed::path`]) with that broken
    /// response and every other path with the echo (HTTP/1.1 only; no `/events`, `/hold` or
    /// `/slow`).
    pub async fn start_malformed() -> std::io::Result<RecordingUpstream> {
        RecordingUpstream::start_framed(Framing::Raw).await
    }

    async fn start_framed(framing: Framing) -> std::io::Result<RecordingUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let routes = match framing {
            Framing::Clean(routes) => routes,
            Framing::Raw => Routes::Echo,
        };
        let shared = Shared {
            log: Mutex::default(),
            release: Arc::default(),
            routes,
            accepted: AtomicU64::new(0),
        };
        let mut upstream = RecordingUpstream {
            addr,
            shared: Arc::new(shared),
            framing,
            running: None,
        };
        upstream.serve(listener);
        Ok(upstream)
    }

    /// Where it listens (also while stopped: a restart binds the same address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`, for `GATE_UPSTREAM`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Let one held request (`/hold`, or the second event of `/events/held`) go on; with none
    /// waiting, the next one to arrive goes on at once.
    pub fn release(&self) {
        self.shared.release.notify_one();
    }

    /// Stop accepting and close every open connection; returns once all are closed, so the
    /// next connection attempt is refused.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Serve again on the same address.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        // tokio sets SO_REUSEADDR, so closed connections in TIME_WAIT do not block the port.
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// What reached `path` so far (nothing, if more than [`MAX_PATHS`] other paths were seen
    /// since its latest request).
    pub fn seen(&self, path: &str) -> Seen {
        self.shared.log().seen(path)
    }

    /// The latest requests in full, oldest first: all of them up to [`RECENT_REQUESTS`] (and
    /// [`RECENT_BODY_BYTES`] of bodies).
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.log().recent()
    }

    /// Requests received so far, on every path.
    pub fn total(&self) -> usize {
        self.shared.log().total()
    }

    /// Requests that arrived on a connection after it had carried `kind`'s broken answer: a
    /// client that reused the connection ([`RecordingUpstream::start_malformed`] only).
    pub fn reused_after(&self, kind: Malformed) -> usize {
        self.shared.log().reused_after(kind)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&self.shared),
            self.framing,
            stopped,
        ));
        self.running = Some((stop, task));
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

/// Accept until told to stop, then close every connection before returning.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    framing: Framing,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let connection = shared.accepted.fetch_add(1, Ordering::Relaxed);
                let shared = Arc::clone(&shared);
                if framing == Framing::Raw {
                    connections.spawn(malformed::serve(stream, shared, connection));
                    continue;
                }
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        respond::respond(request, Arc::clone(&shared), connection)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut stop => break,
        }
    }
    drop(listener);
    connections.shutdown().await;
}
