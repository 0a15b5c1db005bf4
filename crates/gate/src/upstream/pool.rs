//! The keep-alive pool: one connection and its buffers ([`Conn`]), the idle connections
//! most recently used last ([`Connections`]), and the task that closes those idle too long.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::UpstreamError;

/// Bytes reserved before each read of the socket.
pub(super) const READ_CHUNK: usize = 8 * 1024;
/// A pooled connection keeps buffers up to this size; larger ones are freed on check-in.
const KEEP_BUFFER: usize = 64 * 1024;
/// Idle connections kept per gate; more are closed after their exchange.
const MAX_IDLE: usize = 1024;
/// An idle connection is closed after this long unused (upstreams often close at 5-75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often idle connections past [`IDLE_TIMEOUT`] are closed.
const REAP_EVERY: Duration = Duration::from_secs(5);

/// One connection and its buffers, reused across exchanges.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub(super) read: BytesMut,
    /// The encoded request head (and a small body).
    pub(super) out: Vec<u8>,
    /// A timer for the exchanges' deadlines, kept with the connection: set to the running
    /// exchange's deadline whenever it fires earlier (see [`Pool::send`](super::Pool::send)).
    pub(super) deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    pub(super) async fn connect(address: &str) -> Result<Conn, UpstreamError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(UpstreamError::Connect)?;
        // Small request/response exchanges: latency over packet count.
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        Ok(Conn {
            stream,
            read: BytesMut::new(),
            out: Vec::new(),
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
        })
    }

    /// Still fit to carry a request: the upstream has neither closed it nor sent anything
    /// unasked. Costs no system call while the socket has had no event since its last read.
    fn is_idle(&self) -> bool {
        matches!(self.stream.try_read(&mut [0u8; 1]), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }

    /// Read more bytes into `read`: `Ok(0)` at end of stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(READ_CHUNK);
        loop {
            match self.stream.try_read_buf(&mut self.read) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.stream.poll_read_ready(cx))?;
                }
                result => return Poll::Ready(result),
            }
        }
    }
}

/// Where to connect, and the idle connections, most recently used last.
#[derive(Debug)]
pub(super) struct Connections {
    /// `host:port`.
    pub(super) address: String,
    /// Each with the time it was checked in.
    pub(super) idle: Mutex<VecDeque<(Conn, Instant)>>,
    /// Most idle connections kept: [`MAX_IDLE`] (a field, so tests can use a small one).
    pub(super) max_idle: usize,
    /// Idle connections older than this are closed: [`IDLE_TIMEOUT`].
    pub(super) idle_timeout: Duration,
}

impl Connections {
    /// No idle connections yet to `address` (`host:port`), at most [`MAX_IDLE`] kept, each
    /// for at most [`IDLE_TIMEOUT`].
    pub(super) fn new(address: String) -> Connections {
        Connections {
            address,
            idle: Mutex::default(),
            max_idle: MAX_IDLE,
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    pub(super) fn check_out(&self) -> Option<Conn> {
        loop {
            let (conn, _) = self.lock().pop_back()?;
            if conn.is_idle() {
                return Some(conn);
            }
        }
    }

    pub(super) fn check_in(&self, mut conn: Conn) {
        if conn.read.capacity() > KEEP_BUFFER {
            conn.read = BytesMut::new();
        }
        if conn.out.capacity() > KEEP_BUFFER {
            conn.out = Vec::new();
        }
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push_back((conn, Instant::now()));
        }
    }

    /// Close the connections checked in more than `idle_timeout` before `now`: the oldest
    /// are at the front.
    pub(super) fn close_expired(&self, now: Instant) {
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|(_, since)| now.saturating_duration_since(*since) > self.idle_timeout)
        {
            idle.pop_front();
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Conn, Instant)>> {
        // The queue is consistent between any two statements; a panic elsewhere leaves it usable.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Close connections idle past the pool's timeout, until the gate is gone.
pub(super) async fn reap(pool: Weak<Connections>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.close_expired(Instant::now());
    }
}
