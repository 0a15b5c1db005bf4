//! One worker: an OS thread running a current-thread tokio runtime with its own accept loop, its
//! own connections and its own upstream keep-alive pool ([`spawn`]), and what every worker
//! shares with the others ([`Shared`]).
//!
//! A connection is served start to end by one worker: the one that accepted it, or the one
//! serving the fewest connections, which the accepting worker hands it to (`balance.rs`). So
//! does everything its requests touch that is registered with a runtime: the client socket,
//! hyper's timers, the upstream sockets (a pooled socket may only be polled by the runtime
//! whose I/O driver it is registered with, so each worker has a pool of its own). What must be
//! one for the whole process lives in [`Shared`]: the gate (its configuration, keys, replay
//! cache and metrics), the connection cap, the body budget and the workers' balance.

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::uri::Authority;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

use super::Drain;
use super::balance::{Accepted, Balancer, Inbox, Load, Placement};
use super::connection::{
    Activity, ClientStream, ConnectionLimits, Serving, connection_builder, drive,
};
use crate::budget::BodyBudget;
use crate::config::Config;
use crate::logging::Throttle;
use crate::metrics::Metrics;
use crate::proxy::{Gate, Peer};
use crate::upstream;

/// How long a draining worker keeps serving idle keep-alive connections (answering with
/// `Connection: close`) before closing them, so busy clients leave on a response instead of
/// racing a close. Bounded by the grace period; skipped when no connection is open.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// One HTTP/2 connection may hold this many largest bodies (`GATE_MAX_BODY_BYTES`) of the
/// body budget at once (HTTP/1.1 carries one request at a time, so it never holds more than
/// one).
const BODIES_PER_CONNECTION: usize = 4;

/// What the workers share: one of each per process.
#[derive(Debug)]
pub(super) struct Shared {
    /// Configuration, keys, the replay cache and the metrics.
    pub(super) gate: Arc<Gate>,
    limits: ConnectionLimits,
    /// hyper's settings; it spawns HTTP/2 streams with `tokio::spawn`, so on the runtime of the
    /// worker that serves the connection.
    builder: auto::Builder<TokioExecutor>,
    budget: BodyBudget,
    /// One permit per open client connection, `GATE_MAX_CONNECTIONS` for the whole process.
    slots: Arc<Semaphore>,
    max_connections: usize,
    over_cap_log: Throttle,
    /// Where each worker's upstream pool connects.
    upstream: Authority,
    /// Each worker's open connections, and the way to hand it one.
    balancer: Balancer,
}

impl Shared {
    /// What the workers share, and each worker's inbox of connections handed to it, by index
    /// (`config.workers` of them).
    pub(super) fn new(config: Config) -> (Shared, Vec<Inbox>) {
        let limits = ConnectionLimits::new(&config);
        let builder = connection_builder(&config);
        let budget = BodyBudget::new(
            config.max_buffered_body_bytes,
            config.max_body_bytes.saturating_mul(BODIES_PER_CONNECTION),
        );
        let max_connections = config.max_connections;
        let upstream = config.upstream.authority.clone();
        let metrics = Metrics::new(&config);
        let (balancer, inboxes) = Balancer::new(config.workers);
        let shared = Shared {
            gate: Arc::new(Gate::new(config, metrics)),
            limits,
            builder,
            budget,
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            max_connections,
            over_cap_log: Throttle::new(Duration::from_secs(1)),
            upstream,
            balancer,
        };
        (shared, inboxes)
    }
}

/// What a worker tells [`super::run`].
#[derive(Debug)]
pub(super) enum Event {
    /// The worker's runtime is up and its listener registered: it accepts from now on.
    Listening,
    /// The worker has finished: its drain, or why it stopped. Always its last event, sent also
    /// when it panicked.
    Stopped {
        worker: usize,
        result: io::Result<Drained>,
    },
}

/// How one worker's drain ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Drained {
    pub(super) drain: Drain,
    /// Connections still open when the drain began.
    pub(super) open: usize,
}

/// Start worker `index` on a thread of its own, accepting on `listener` and taking the
/// connections other workers hand it from `inbox` until `stop` holds a drain deadline (or its
/// sender is gone: then it closes its connections at once).
pub(super) fn spawn(
    index: usize,
    listener: std::net::TcpListener,
    inbox: Inbox,
    shared: Arc<Shared>,
    stop: watch::Receiver<Option<Instant>>,
    events: mpsc::UnboundedSender<Event>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("sig-gate-worker-{index}"))
        .spawn(move || {
            let run = || run_thread(index, listener, inbox, &shared, stop, &events);
            // A panic that escapes the runtime (tokio catches those of connection tasks) still
            // reports, so the process does not wait for this worker forever.
            let result = std::panic::catch_unwind(AssertUnwindSafe(run))
                .unwrap_or_else(|_| Err(io::Error::other("the worker panicked")));
            let _ = events.send(Event::Stopped {
                worker: index,
                result,
            });
        })?;
    Ok(())
}

fn run_thread(
    index: usize,
    listener: std::net::TcpListener,
    inbox: Inbox,
    shared: &Shared,
    stop: watch::Receiver<Option<Instant>>,
    events: &mpsc::UnboundedSender<Event>,
) -> io::Result<Drained> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let drained = runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        let _ = events.send(Event::Listening);
        Ok::<_, io::Error>(serve(index, listener, inbox, shared, stop).await)
    });
    // Connection tasks still running after an expired drain are dropped here, closing their
    // sockets; a blocking task (an upstream name lookup) is not waited for.
    runtime.shutdown_background();
    drained
}

/// Accept, and take up connections other workers hand over, until `stop` says to drain; then
/// drain this worker's connections by the deadline it carries.
async fn serve(
    index: usize,
    listener: TcpListener,
    mut inbox: Inbox,
    shared: &Shared,
    mut stop: watch::Receiver<Option<Instant>>,
) -> Drained {
    // Each connection task holds a receiver; a send starts every graceful shutdown, and the
    // sender sees the last receiver go when the last connection has closed.
    let (drain_tx, drain_rx) = watch::channel(());
    let worker = Worker {
        index,
        shared,
        upstream: Arc::new(upstream::Pool::new(&shared.upstream)),
        served: shared.gate.metrics().worker_connections(index),
        drain: drain_rx,
    };
    let stopped = stop.wait_for(Option::is_some);
    tokio::pin!(stopped);

    let deadline = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => worker.accepted(stream, peer),
                Err(err) => {
                    // Out of file descriptors or a connection reset before accept: back off
                    // briefly instead of spinning, and keep serving.
                    tracing::warn!(error = %err, worker = index, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // `None` only once every sender is gone, and `shared` holds them.
            Some(handed) = inbox.recv() => worker.take_up(handed),
            stopped = &mut stopped => break match stopped {
                Ok(deadline) => deadline.unwrap_or_else(Instant::now),
                // The process is no longer waiting for this worker: no grace.
                Err(_) => Instant::now(),
            },
        }
    };

    // A connection handed over before the inbox closed is served and drained like the others;
    // one handed over after stays with the worker that accepted it.
    inbox.close();
    while let Ok(handed) = inbox.try_recv() {
        worker.take_up(handed);
    }
    let Worker {
        drain: drain_rx, ..
    } = worker;
    drop(listener);
    drop(drain_rx);
    let linger_end = (Instant::now() + DRAIN_LINGER).min(deadline);
    while drain_tx.receiver_count() > 0 && Instant::now() < linger_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = drain_tx.receiver_count();
    // No receiver left means no connection to tell; the drain is then already complete.
    let _ = drain_tx.send(());
    let drain = match tokio::time::timeout_at(deadline, drain_tx.closed()).await {
        Ok(()) => Drain::Complete,
        Err(_) => Drain::Expired,
    };
    Drained { drain, open }
}

/// One worker's side of its connections: where they are placed and how each is served.
struct Worker<'a> {
    index: usize,
    shared: &'a Shared,
    /// This worker's upstream keep-alive pool.
    upstream: Arc<upstream::Pool>,
    /// `sig_gate_worker_connections_total` of this worker.
    served: prometheus::IntCounter,
    /// Cloned into every connection task: the drain's signal.
    drain: watch::Receiver<()>,
}

impl Worker<'_> {
    /// A connection this worker's listener accepted: closed at once over the connection cap,
    /// else served here or handed to the worker serving the fewest.
    fn accepted(&self, stream: TcpStream, peer: SocketAddr) {
        let shared = self.shared;
        let Ok(slot) = Arc::clone(&shared.slots).try_acquire_owned() else {
            // Over the cap: close at once, so the client fails fast (and can try another
            // replica) instead of waiting in the backlog behind connections that may be slow.
            shared.gate.metrics().connection_refused();
            if shared.over_cap_log.allow() {
                tracing::warn!(
                    max_connections = shared.max_connections,
                    peer = %peer,
                    "connection limit reached: closing new connections (GATE_MAX_CONNECTIONS; \
                     sig_gate_connections_refused_total counts every one)"
                );
            }
            drop(stream);
            return;
        };
        let (to, load) = match shared.balancer.place(self.index) {
            Placement::Here(load) => return self.serve(stream, peer, slot, load),
            Placement::There { to, load } => (to, load),
        };
        // Out of this runtime's I/O driver, to be registered with the other worker's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, peer = %peer, "could not hand a connection over");
                return;
            }
        };
        let accepted = Accepted {
            stream,
            peer,
            slot,
            load,
        };
        if let Err(returned) = shared.balancer.hand_off(to, self.index, accepted) {
            self.take_up(returned);
        }
    }

    /// A connection handed to this worker (or given back to it): registered with this
    /// worker's runtime and served.
    fn take_up(&self, accepted: Accepted) {
        let Accepted {
            stream,
            peer,
            slot,
            load,
        } = accepted;
        match TcpStream::from_std(stream) {
            Ok(stream) => self.serve(stream, peer, slot, load),
            Err(err) => {
                tracing::warn!(error = %err, peer = %peer, "could not take up a connection")
            }
        }
    }

    /// Serve `stream` on this worker until it closes or the drain closes it.
    fn serve(&self, stream: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit, load: Load) {
        let shared = self.shared;
        self.served.inc();
        // Latency matters more than packet count for small request/response exchanges.
        let _ = stream.set_nodelay(true);
        let open = shared.gate.metrics().connection_opened();
        let activity = Arc::new(Activity::new());
        let gate = Arc::clone(&shared.gate);
        let peer = Arc::new(Peer::new(
            peer,
            shared.budget.connection(),
            Arc::clone(&self.upstream),
        ));
        let limits = shared.limits;
        let service_activity = Arc::clone(&activity);
        let service = service_fn(move |request: Request<Incoming>| {
            let in_flight = service_activity.begin(request.version());
            match limits.head_refusal(&request) {
                Some(refusal) => Serving::refused(refusal, request.version(), in_flight),
                None => Serving::handling(
                    Arc::clone(&gate).handle(request, Arc::clone(&peer)),
                    in_flight,
                ),
            }
        });
        let connection = shared
            .builder
            .serve_connection(
                TokioIo::new(ClientStream::new(stream, Arc::clone(&activity))),
                service,
            )
            .into_owned();
        let drain = self.drain.clone();
        tokio::spawn(async move {
            let close_gracefully = |connection: Pin<&mut _>| {
                auto::Connection::graceful_shutdown(connection);
            };
            drive(connection, close_gracefully, &activity, limits, drain).await;
            drop((slot, open, load));
        });
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::Raw;

    /// Two workers in front of an upstream that is never reached (every request here fails
    /// verification).
    fn two_workers() -> Config {
        let raw: Raw = Figment::from(Toml::string(
            r#"
            interservice_hmac_secret = "secret-a-0123456789abcdefghijklmnopqrstuv"
            gate_upstream = "http://127.0.0.1:9"
            gate_workers = 2
            "#,
        ))
        .extract()
        .expect("known variable names");
        Config::try_from(raw).expect("valid configuration")
    }

    /// A connection handed to a worker in the instant its drain begins is served and drained
    /// like one it accepted itself: whichever of the two the worker sees first (the select picks
    /// at random between a ready inbox and a ready stop), the request on it is answered and the
    /// drain completes. Dropped from the inbox instead, the client would read nothing.
    #[tokio::test]
    async fn a_connection_handed_over_as_the_drain_begins_is_served_and_drained() {
        for _ in 0..16 {
            let (shared, mut inboxes) = Shared::new(two_workers());
            let inbox = inboxes.pop().expect("worker 1's inbox");

            // The connection worker 0 accepted, with an unsigned request already sent on it.
            let accepting = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let mut client = TcpStream::connect(accepting.local_addr().expect("addr"))
                .await
                .expect("connect");
            let (stream, peer) = accepting.accept().expect("accept");
            // As `into_std` leaves a tokio socket.
            stream.set_nonblocking(true).expect("non-blocking");
            let unsigned = "POST /tools/call HTTP/1.1\r\nHost: tool-gate\r\n\
                            Connection: close\r\nContent-Length: 2\r\n\r\n{}";
            client.write_all(unsigned.as_bytes()).await.expect("send");
            let slot = Arc::clone(&shared.slots)
                .try_acquire_owned()
                .expect("under the cap");
            let (Placement::Here(load) | Placement::There { load, .. }) = shared.balancer.place(1);
            let handed = Accepted {
                stream,
                peer,
                slot,
                load,
            };
            shared
                .balancer
                .hand_off(1, 0, handed)
                .expect("worker 1 still takes connections");

            // Worker 1's stop already holds its deadline when it first looks.
            let (_stop_tx, stop) = watch::channel(Some(Instant::now() + Duration::from_secs(5)));
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let drained = serve(1, listener, inbox, &shared, stop).await;

            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.expect("read");
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with("HTTP/1.1 401 "),
                "served by worker 1: {answer:?}"
            );
            assert!(matches!(drained.drain, Drain::Complete), "{drained:?}");
            let served = shared.gate.metrics().worker_connections(1).get();
            assert_eq!(served, 1, "counted on the worker that served it");
        }
    }
}
