//! One client connection: hyper's protocol settings ([`connection_builder`]), the limits the
//! connection's task enforces ([`ConnectionLimits`], [`drive`]), the bytes and requests it has
//! seen ([`Activity`], noted by [`ClientStream`] and the [`InFlight`] guard a response body
//! carries), and the service's future ([`Serving`]).
//!
//! Every proxy connection is bounded (docs/operations.md, "Limits and timeouts"): closed if a
//! request head is not complete within `GATE_HEADER_READ_TIMEOUT_SECS` of the accept (first
//! request) or of its first byte (later HTTP/1.1 requests), or if idle for
//! `GATE_IDLE_TIMEOUT_SECS` ([`drive`], with the first byte noted by [`ClientStream`]), with
//! hyper's HTTP/1.1 and HTTP/2 limits set in [`connection_builder`] and the head measured once
//! more before the gate sees it ([`ConnectionLimits::head_refusal`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Version, header};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::MAX_HEADER_FIELDS;
use crate::config::Config;
use crate::proxy::{Refusal, ResponseBody};

/// Unread request-body bytes a client may send on one HTTP/2 stream before the gate reads them
/// (the stream's flow-control window).
const HTTP2_STREAM_WINDOW: u32 = 256 * 1024;

/// Unread request-body bytes a client may send on one HTTP/2 connection, all streams together:
/// what a connection can make the gate hold beyond the body budget (docs/operations.md).
const HTTP2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// The protocol settings of every proxy connection: HTTP/1.1 or HTTP/2 by prior knowledge.
pub(super) fn connection_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Off: hyper's timer would also run while a kept-alive connection waits for its next
        // request (and defaults to 30 s once a timer is set). `drive` enforces the head
        // deadline instead, from the accept or from the next request's first byte.
        .header_read_timeout(None::<Duration>)
        // hyper answers 431 and closes once a head outgrows its read buffer, and its buffer
        // cannot be smaller than 8 KiB: a smaller limit is enforced by `head_refusal`.
        .max_buf_size(config.max_header_bytes.max(MIN_HTTP1_BUFFER))
        .max_headers(MAX_HEADER_FIELDS)
        .writev(false);
    let keepalive = config.http2_keepalive;
    builder
        .http2()
        .timer(TokioTimer::new())
        // h2 answers 431 and refuses the stream (REFUSED_STREAM) past this, counting each
        // field as its name, its value and 32 bytes.
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive);
    builder
}

/// hyper's smallest HTTP/1.1 read buffer.
const MIN_HTTP1_BUFFER: usize = 8 * 1024;

/// The per-connection limits the connection task and the service check.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
}

impl ConnectionLimits {
    pub(super) fn new(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            max_header_bytes: config.max_header_bytes,
        }
    }

    /// `Some(431)` for a head over `GATE_MAX_HEADER_BYTES` or with more than
    /// [`MAX_HEADER_FIELDS`] fields that hyper let through: an HTTP/2 head with too many fields,
    /// or a limit below hyper's smallest HTTP/1.1 buffer. The head is measured as HTTP/1.1
    /// writes it: request line, then `name: value` and CRLF per field, then CRLF.
    pub(super) fn head_refusal(&self, request: &Request<Incoming>) -> Option<Refusal> {
        let headers = request.headers();
        if headers.len() > MAX_HEADER_FIELDS {
            return Some(Refusal::HeadTooLarge);
        }
        let target = request
            .uri()
            .path_and_query()
            .map_or(1, |pq| pq.as_str().len());
        // "METHOD target HTTP/1.1\r\n" and the final "\r\n".
        let line = request.method().as_str().len() + 1 + target + 1 + 8 + 2 + 2;
        let head = headers.iter().fold(line, |len, (name, value)| {
            len + name.as_str().len() + 2 + value.len() + 2
        });
        (head > self.max_header_bytes).then_some(Refusal::HeadTooLarge)
    }
}

/// Run one connection until it ends, closing it when it outstays its limits:
/// - a request head not complete within `GATE_HEADER_READ_TIMEOUT_SECS` of the accept (the
///   first request, whatever the protocol: the protocol is learnt from these bytes) or, on
///   HTTP/1.1, of the first byte of a later request: closed;
/// - no request in progress and no byte of a next request for `GATE_IDLE_TIMEOUT_SECS` since
///   the last response ended: graceful shutdown (HTTP/2 GOAWAY; HTTP/1.1 closes), and closed
///   outright if the client has not finished closing within `GATE_HEADER_READ_TIMEOUT_SECS` more;
/// - the drain: graceful shutdown, bounded by the grace period (the worker waits for it).
///
/// The connection is looked at when its next deadline comes and at least every
/// [`ConnectionLimits::check_period`]: a change of state (a response ending, a next head
/// starting) brings a deadline at least that far away, so every deadline is met on time.
/// Drives the connection itself rather than through hyper-util's `GracefulShutdown`, because
/// an idle close needs the same `graceful_shutdown` call on the same connection.
pub(super) async fn drive<C, E>(
    connection: C,
    close_gracefully: impl Fn(Pin<&mut C>),
    activity: &Activity,
    limits: ConnectionLimits,
    mut drain: watch::Receiver<()>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    let mut draining = false;
    let mut idle_closing = false;
    let mut check_at = Instant::now() + limits.check_period();
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection closed with an error");
                }
                return;
            }
            _ = drain.changed(), if !draining => {
                draining = true;
                close_gracefully(connection.as_mut());
            }
            () = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                match limits.step(activity.state(), activity.accepted, now, idle_closing) {
                    Step::Wait(until) => check_at = until,
                    Step::CloseIdle => {
                        idle_closing = true;
                        close_gracefully(connection.as_mut());
                        check_at = now + limits.header_read_timeout;
                    }
                    Step::Close => {
                        tracing::debug!(
                            "closing a connection: no complete request head within \
                             GATE_HEADER_READ_TIMEOUT_SECS, or an idle close not finished"
                        );
                        return;
                    }
                }
            }
        }
    }
}

/// What [`drive`] does when it looks at a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Nothing is due: look again at this instant.
    Wait(Instant),
    /// Idle for `GATE_IDLE_TIMEOUT_SECS`: start a graceful shutdown.
    CloseIdle,
    /// A head deadline passed, or an idle close was not finished in time: close now.
    Close,
}

impl ConnectionLimits {
    /// The longest [`drive`] waits between two looks at a connection: no deadline is shorter.
    fn check_period(&self) -> Duration {
        self.header_read_timeout.min(self.idle_timeout)
    }

    /// The step due at `now` for a connection accepted at `accepted` and found in `state`;
    /// `idle_closing` once its idle close has started. Every state but [`State::Busy`] ends in
    /// a deadline: the head deadline or the idle timeout.
    fn step(&self, state: State, accepted: Instant, now: Instant, idle_closing: bool) -> Step {
        let deadline = match state {
            State::Busy => return Step::Wait(now + self.check_period()),
            // The idle close has had its time (a request that raced it counts as busy above).
            _ if idle_closing => return Step::Close,
            State::NoRequestYet => accepted + self.header_read_timeout,
            State::HeadSince(first_byte) => first_byte + self.header_read_timeout,
            State::IdleSince(since) if since + self.idle_timeout <= now => {
                return Step::CloseIdle;
            }
            State::IdleSince(since) => since + self.idle_timeout,
        };
        if deadline <= now {
            Step::Close
        } else {
            Step::Wait(deadline.min(now + self.check_period()))
        }
    }
}

/// [`Activity::head_from_ms`] when no byte has arrived since the last request began.
const NO_HEAD_BYTE: u64 = u64::MAX;

/// Requests in progress on one connection, since when it has had none, and when the next
/// request's first byte arrived.
#[derive(Debug)]
pub(super) struct Activity {
    accepted: Instant,
    /// Requests whose response has not been sent whole (or dropped) yet.
    open: AtomicUsize,
    /// Requests ever started on this connection.
    started: AtomicUsize,
    /// Milliseconds after `accepted` when `open` last fell to 0.
    idle_since_ms: AtomicU64,
    /// Milliseconds after `accepted` when the first byte arrived with no request in progress,
    /// since the last request began; [`NO_HEAD_BYTE`] if none has. Only an HTTP/1.1
    /// connection's state uses it: there such a byte starts the next request's head.
    head_from_ms: AtomicU64,
    /// The connection speaks HTTP/2 (known from its first request): bytes with no request in
    /// progress are pings, settings and window updates, not a head.
    http2: AtomicBool,
}

/// What [`Activity::state`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The client has not completed a request head yet.
    NoRequestYet,
    /// At least one request in progress.
    Busy,
    /// No request in progress since this instant, and no byte of a next request (HTTP/1.1).
    IdleSince(Instant),
    /// HTTP/1.1: no request in progress, and the first byte of the next request's head arrived
    /// at this instant.
    HeadSince(Instant),
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            open: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_from_ms: AtomicU64::new(NO_HEAD_BYTE),
            http2: AtomicBool::new(false),
        }
    }

    /// Milliseconds since the accept (never [`NO_HEAD_BYTE`]).
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .min(NO_HEAD_BYTE - 1)
    }

    /// A request head arrived: the connection is busy until the guard drops, and the next
    /// head's clock waits for that head's own first byte.
    pub(super) fn begin(self: &Arc<Self>, version: Version) -> InFlight {
        self.head_from_ms.store(NO_HEAD_BYTE, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::AcqRel);
        if self.started.fetch_add(1, Ordering::Relaxed) == 0 && version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        InFlight(Arc::clone(self))
    }

    /// Bytes arrived from the client. With a request in progress they are its body, or a
    /// pipelined request that the idle timeout bounds once the response has ended; with none,
    /// the first of them starts the next head's clock. At most one store per idle period.
    ///
    /// Relaxed is enough: on HTTP/1.1 the reads, the service call, the response body and
    /// [`drive`] all run in the connection's own task.
    fn bytes_arrived(&self) {
        if self.open.load(Ordering::Relaxed) == 0
            && self.head_from_ms.load(Ordering::Relaxed) == NO_HEAD_BYTE
        {
            self.head_from_ms
                .store(self.elapsed_ms(), Ordering::Relaxed);
        }
    }

    fn state(&self) -> State {
        if self.open.load(Ordering::Acquire) > 0 {
            return State::Busy;
        }
        if self.started.load(Ordering::Relaxed) == 0 {
            return State::NoRequestYet;
        }
        let head_from = self.head_from_ms.load(Ordering::Relaxed);
        if head_from != NO_HEAD_BYTE && !self.http2.load(Ordering::Relaxed) {
            return State::HeadSince(self.accepted + Duration::from_millis(head_from));
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        State::IdleSince(self.accepted + since)
    }
}

/// One request in progress; held by the response body, so a streamed response counts until
/// its last byte is sent.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let ms = activity.elapsed_ms();
        // Stored before the count falls, so a reader that sees 0 sees this time or a later one.
        activity.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        activity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted client connection that tells its [`Activity`] when bytes arrive, so a
/// kept-alive HTTP/1.1 connection's head deadline starts at the next request's first byte,
/// not when the last response ended (the wait before that byte is the idle timeout's).
#[derive(Debug)]
pub(super) struct ClientStream {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl ClientStream {
    pub(super) fn new(stream: TcpStream, activity: Arc<Activity>) -> ClientStream {
        ClientStream { stream, activity }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// The service's future: the gate's answer, or a refusal made before the gate saw the
    /// request; either way the response body carries the request's [`InFlight`] guard.
    pub(super) struct Serving<F> {
        #[pin]
        handling: Option<F>,
        refused: Option<Response<ResponseBody>>,
        in_flight: Option<InFlight>,
    }
}

impl<F> Serving<F> {
    pub(super) fn handling(handling: F, in_flight: InFlight) -> Serving<F> {
        Serving {
            handling: Some(handling),
            refused: None,
            in_flight: Some(in_flight),
        }
    }

    pub(super) fn refused(refusal: Refusal, version: Version, in_flight: InFlight) -> Serving<F> {
        let mut response = refusal.response();
        if version < Version::HTTP_2 {
            // The rest of an oversized head may still be on its way: no next request.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        Serving {
            handling: None,
            refused: Some(response),
            in_flight: Some(in_flight),
        }
    }
}

impl<F> Future for Serving<F>
where
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    type Output = Result<Response<Tracked<ResponseBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.refused.take() {
            Some(response) => response,
            None => match this.handling.as_pin_mut() {
                Some(handling) => match handling.poll(cx) {
                    Poll::Ready(Ok(response)) => response,
                    Poll::Ready(Err(never)) => match never {},
                    Poll::Pending => return Poll::Pending,
                },
                None => panic!("Serving polled after it completed"),
            },
        };
        // Taken once: the future completes here.
        let in_flight = this.in_flight.take().expect("Serving completes once");
        Poll::Ready(Ok(response.map(|body| Tracked {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// A response body that keeps its request counted as in progress until it ends or is dropped.
#[derive(Debug)]
pub(super) struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_header_bytes: 32 * 1024,
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn every_state_but_busy_ends_in_its_deadline() {
        let t0 = Instant::now();
        let step = |state, at: u64, closing| LIMITS.step(state, t0, t0 + secs(at), closing);
        // Looked at no later than every 10 s (the shorter timeout), and on the deadline.
        assert_eq!(step(State::Busy, 100, false), Step::Wait(t0 + secs(110)));
        assert_eq!(
            step(State::NoRequestYet, 3, false),
            Step::Wait(t0 + secs(10))
        );
        assert_eq!(step(State::NoRequestYet, 10, false), Step::Close);
        let idle = State::IdleSince(t0 + secs(20));
        assert_eq!(step(idle, 25, false), Step::Wait(t0 + secs(35)));
        assert_eq!(step(idle, 75, false), Step::Wait(t0 + secs(80)));
        assert_eq!(step(idle, 80, false), Step::CloseIdle);
        // A head started long after the response: its own 10 s, however long the idle wait.
        let head = State::HeadSince(t0 + secs(70));
        assert_eq!(step(head, 75, false), Step::Wait(t0 + secs(80)));
        assert_eq!(step(head, 80, false), Step::Close);
        // The idle close had its time; a request that raced it is left to finish.
        assert_eq!(step(idle, 90, true), Step::Close);
        assert_eq!(step(State::Busy, 90, true), Step::Wait(t0 + secs(100)));
    }

    #[test]
    fn only_bytes_with_no_request_in_progress_start_an_http1_head_clock() {
        let activity = Arc::new(Activity::new());
        activity.bytes_arrived();
        assert_eq!(activity.state(), State::NoRequestYet);
        let in_flight = activity.begin(Version::HTTP_11);
        // Body bytes (or pipelined ones) while the request is in progress.
        activity.bytes_arrived();
        assert_eq!(activity.state(), State::Busy);
        drop(in_flight);
        assert!(matches!(activity.state(), State::IdleSince(_)));
        activity.bytes_arrived();
        let State::HeadSince(first) = activity.state() else {
            panic!("a byte after the response starts the head clock");
        };
        activity.bytes_arrived();
        assert_eq!(
            activity.state(),
            State::HeadSince(first),
            "the first byte counts"
        );
        drop(activity.begin(Version::HTTP_11));
        assert!(matches!(activity.state(), State::IdleSince(_)));
    }

    #[test]
    fn http2_bytes_between_requests_are_not_a_head() {
        let activity = Arc::new(Activity::new());
        drop(activity.begin(Version::HTTP_2));
        activity.bytes_arrived();
        assert!(matches!(activity.state(), State::IdleSince(_)));
    }
}
