//! The upstream side: HTTP/1.1 keep-alive connections to `GATE_UPSTREAM`, each exchange driven
//! by the task of the request that makes it.
//!
//! Why not hyper's client: it runs every connection in a task of its own, so one request
//! crossed tasks four times (the dispatch channel, a oneshot back with the response head, the
//! body channel, the pool's readiness signal) and the profile showed those wake-ups, the pool
//! and the channels costing more than the whole signature check (`bench/analysis.md`). The
//! gate's exchange is simpler than a general client's: the request body is already in memory
//! (it had to be, to verify it), so a request checks a connection out of a LIFO pool, writes
//! head and body with one `write`, reads the response head, and hands back an [`UpstreamBody`]
//! that reads the socket only when the downstream connection polls it, in the same task. The
//! body puts the connection back in the pool as soon as its last byte is read.
//!
//! Strictness: at least as strict as hyper's own client on every response, and stricter where
//! hyper is lenient in ways another parser could read differently (checked against hyper by
//! `tests/upstream_differential.rs`, which lists those cases). The response head is parsed by
//! `httparse` (the parser inside hyper) and framed by RFC 9112 section 6.3:
//! - `Content-Length` is digits only (at most 19), every copy the same; a list such as `2, 2`
//!   is refused.
//! - `Transfer-Encoding` is a list of codings (tokens, no empty elements, no parameters) and
//!   only in HTTP/1.1: an HTTP/1.0 response carrying it is refused (RFC 9112 section 6.1), as
//!   hyper's client does. Chunked as the final coding frames the body; any other final coding
//!   means the body runs to the close. With `Content-Length` too, the body is read chunked and
//!   the connection never reused.
//!
//! A chunked body is decoded by a byte-level state machine that accepts nothing but the
//! grammar of RFC 9112 section 7.1: a chunk-size line is hex digits (at most 16), optional
//! whitespace, then extensions `; name[=value]` whose names and values are tokens or quoted
//! strings, then CRLF; the bytes after the digits are limited per line (4 KiB) and over the
//! whole body (16 KiB, hyper's limit). Trailer lines are fields (`name:value`, a token name and
//! no whitespace before the colon, no obs-fold), at most 100 of them and 16 KiB together.
//!
//! Anything else is an [`UpstreamError`]: a 502 before the head, a cut connection after it,
//! and never a connection back in the pool. A connection is reused only when the upstream said
//! nothing against it (HTTP/1.1, no `Connection: close`), the body ended exactly on its
//! framing, and the socket shows neither data nor a close when it is checked out again.
//!
//! Trailers of a chunked response are read and dropped (as nginx does); interim 1xx responses
//! are skipped; `101 Switching Protocols` is refused (the gate strips `Upgrade`, so an upstream
//! that switches anyway is broken).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted (status line and headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response header lines accepted (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line past its digits (whitespace and extensions).
const MAX_CHUNK_EXTENSION: u16 = 4 * 1024;
/// All chunk-size lines of one body together, past their digits: as hyper's client allows.
const MAX_CHUNK_EXTENSIONS: u32 = 16 * 1024;
/// All trailer lines of one body together.
const MAX_TRAILER_BYTES: u32 = 16 * 1024;
/// Bytes reserved before each read of the socket.
const READ_CHUNK: usize = 8 * 1024;
/// A pooled connection keeps buffers up to this size; larger ones are freed on check-in.
const KEEP_BUFFER: usize = 64 * 1024;
/// Request bodies up to this size are copied behind the head and sent with one `write`.
const COALESCE_BODY: usize = 16 * 1024;
/// Idle connections kept per gate; more are closed after their exchange.
const MAX_IDLE: usize = 1024;
/// An idle connection is closed after this long unused (upstreams often close at 5-75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often idle connections past [`IDLE_TIMEOUT`] are closed.
const REAP_EVERY: Duration = Duration::from_secs(5);

/// Hop-by-hop headers of RFC 9110 section 7.6.1, besides those `Connection` names.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made.
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    /// Reading or writing the connection failed.
    #[error("connection: {0}")]
    Io(#[source] io::Error),
    /// The upstream closed the connection before its response was complete.
    #[error("connection closed before the response was complete")]
    Closed,
    /// The response broke HTTP/1.1's grammar or framing.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// No response head within the deadline (connecting included).
    #[error("no response head in time")]
    Timeout,
}

/// What becomes of one of the client's header fields on its way upstream: the gate's policy
/// ([`crate::proxy`]), asked once per field as the head is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Forwarded unless hop-by-hop: one of [`HOP_BY_HOP`] or named by the `Connection` header.
    Forward,
    /// Forwarded whatever the `Connection` header names: a field the gate sets or vouches for.
    EndToEnd,
    /// Never forwarded.
    Drop,
}

/// The request as it leaves for the upstream: what [`Upstream::send`] writes, in this order.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Method, sent as is.
    pub method: &'a Method,
    /// The origin-form path (or `*` for `OPTIONS *`), sent as is.
    pub path: &'a str,
    /// The query, sent after a `?` when present (an empty one too), as is.
    pub query: Option<&'a str>,
    /// The client's headers; those `disposition` drops, hop-by-hop ones and those `Connection`
    /// lists are skipped, `Host` and `Content-Length` are written by the gate, and `Cookie`
    /// fields are joined into one (RFC 9113 section 8.2.3; RFC 6265 section 5.4 allows only one
    /// on HTTP/1.1). Taken by value: once the request is encoded, the emptied map receives the
    /// response's headers, and hyper parses the connection's next request into that map in
    /// turn, so one map serves every exchange of a client connection without allocating.
    pub headers: HeaderMap,
    /// The one `Host` sent (client copies in `headers` are skipped); the upstream's authority
    /// when `None`.
    pub host: Option<&'a HeaderValue>,
    /// Where each of the client's header fields goes, by name (lower-case, as `HeaderMap`
    /// holds it).
    pub disposition: fn(&HeaderName) -> Disposition,
    /// Headers the gate adds, written after the client's (`None`s are skipped). The values
    /// are the gate's own, none holding CR or LF: bytes, so a value built per request needs
    /// no `HeaderValue` (an allocation).
    pub added: &'a [Option<(HeaderName, &'a [u8])>],
    /// The whole body.
    pub body: &'a Bytes,
}

/// Keep-alive connections to one upstream.
#[derive(Debug)]
pub struct Upstream {
    /// `Host` for requests that carry none: the upstream's authority.
    host: HeaderValue,
    pool: Arc<Pool>,
}

impl Upstream {
    /// Connections to `authority` (port 80 when it names none). Must run inside a tokio
    /// runtime: a task closes connections left idle past [`IDLE_TIMEOUT`].
    pub fn new(authority: &Authority) -> Upstream {
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        // An `Authority` holds only characters that are valid in a header value.
        let host = HeaderValue::from_str(authority.as_str()).expect("authority is header-safe");
        let pool = Arc::new(Pool {
            address,
            idle: Mutex::default(),
            max_idle: MAX_IDLE,
            idle_timeout: IDLE_TIMEOUT,
        });
        tokio::spawn(reap(Arc::downgrade(&pool)));
        Upstream { host, pool }
    }

    /// Send one request and read its response head, connecting included, within `timeout`.
    /// The body streams from the connection as the caller polls it. A connection whose
    /// exchange is dropped midway is closed, never pooled.
    ///
    /// The request is encoded before this returns, so the future borrows nothing: the caller
    /// can drop the request's body and the rest of its head, slices of hyper's read buffer,
    /// before waiting, and hyper reads the next request into the same buffer instead of a new
    /// one. The headers' map is emptied here for the same reason, and kept for the response.
    pub fn send(
        &self,
        request: Outgoing<'_>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + use<> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut conn = self.pool.check_out();
        let mut out = conn
            .as_mut()
            .map(|c| std::mem::take(&mut c.out))
            .unwrap_or_default();
        encode_head(&mut out, &request, request.host.unwrap_or(&self.host));
        let mut headers = request.headers;
        headers.clear();
        let large_body = if request.body.len() <= COALESCE_BODY {
            out.extend_from_slice(request.body);
            None
        } else {
            Some(request.body.clone())
        };
        let head_request = request.method == Method::HEAD;
        let pool = Arc::clone(&self.pool);
        async move {
            let mut conn = match conn {
                Some(conn) => conn,
                None => tokio::time::timeout_at(deadline, Conn::connect(&pool.address))
                    .await
                    .map_err(|_| UpstreamError::Timeout)??,
            };
            let head = {
                let Conn {
                    stream,
                    read,
                    deadline: timer,
                    ..
                } = &mut conn;
                let exchange = exchange(stream, read, &out, large_body.as_ref(), &mut headers);
                tokio::pin!(exchange);
                // The connection's own timer usually still holds an earlier exchange's deadline,
                // sooner than this one's. It is moved on only when it fires first, so an
                // exchange shorter than the time left on it (nearly all of them) never touches
                // the timer wheel. A later deadline, left by a call with a longer timeout, is
                // brought forward at once.
                if timer.deadline() > deadline {
                    timer.as_mut().reset(deadline);
                }
                loop {
                    tokio::select! {
                        biased;
                        head = &mut exchange => break head?,
                        () = timer.as_mut() => {
                            if tokio::time::Instant::now() >= deadline {
                                return Err(UpstreamError::Timeout);
                            }
                            timer.as_mut().reset(deadline);
                        }
                    }
                }
            };
            out.clear();
            conn.out = out;

            let (framing, reusable) = head.body(head_request);
            let mut body = UpstreamBody {
                framing,
                conn: Some(conn),
                pool: reusable.then_some(pool),
            };
            if body.framing.is_done() {
                body.finish();
            }
            let mut response = Response::new(body);
            *response.status_mut() = head.status;
            *response.headers_mut() = headers;
            Ok(response)
        }
    }
}

/// Write the encoded request (and a large body after it) and read the final response head.
async fn exchange(
    stream: &mut TcpStream,
    read: &mut BytesMut,
    out: &[u8],
    large_body: Option<&Bytes>,
    headers: &mut HeaderMap,
) -> Result<Head, UpstreamError> {
    stream.write_all(out).await.map_err(UpstreamError::Io)?;
    if let Some(body) = large_body {
        stream.write_all(body).await.map_err(UpstreamError::Io)?;
    }
    read_head(stream, read, headers).await
}

/// One connection and its buffers, reused across exchanges.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// The encoded request head (and a small body).
    out: Vec<u8>,
    /// A timer for the exchanges' deadlines, kept with the connection: set to the running
    /// exchange's deadline whenever it fires earlier (see [`Upstream::send`]).
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    async fn connect(address: &str) -> Result<Conn, UpstreamError> {
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
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
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
struct Pool {
    /// `host:port`.
    address: String,
    /// Each with the time it was checked in.
    idle: Mutex<VecDeque<(Conn, Instant)>>,
    /// Most idle connections kept: [`MAX_IDLE`] (a field, so tests can use a small one).
    max_idle: usize,
    /// Idle connections older than this are closed: [`IDLE_TIMEOUT`].
    idle_timeout: Duration,
}

impl Pool {
    fn check_out(&self) -> Option<Conn> {
        loop {
            let (conn, _) = self.lock().pop_back()?;
            if conn.is_idle() {
                return Some(conn);
            }
        }
    }

    fn check_in(&self, mut conn: Conn) {
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
    fn close_expired(&self, now: Instant) {
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|(_, since)| now.saturating_duration_since(*since) > self.idle_timeout)
        {
            idle.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Conn, Instant)>> {
        // The queue is consistent between any two statements; a panic elsewhere leaves it usable.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Close connections idle past the pool's timeout, until the gate is gone.
async fn reap(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.close_expired(Instant::now());
    }
}

/// Write the request head into `out`: request line, `Host`, the client's end-to-end headers
/// (`Cookie` fields joined into one), the gate's headers, and `Content-Length` from the body.
fn encode_head(out: &mut Vec<u8>, request: &Outgoing<'_>, host: &HeaderValue) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.as_bytes());
    if let Some(query) = request.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Values were validated by hyper's parser or built by the gate: none holds CR or LF.
    field(out, header::HOST.as_str(), host.as_bytes());
    let headers = &request.headers;
    let options = ConnectionOptions::of(headers);
    let forwarded = |name: &HeaderName| match (request.disposition)(name) {
        Disposition::Forward => {
            !is_hop_by_hop(name.as_str().as_bytes()) && !options.lists(name.as_str())
        }
        Disposition::EndToEnd => true,
        Disposition::Drop => false,
    };
    let mut had_length = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            had_length = true;
        } else if name != header::HOST && name != header::COOKIE && forwarded(name) {
            field(out, name.as_str(), value.as_bytes());
        }
    }
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if let Some(first) = cookies.next().filter(|_| forwarded(&header::COOKIE)) {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first.as_bytes());
        for more in cookies {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(more.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in request.added.iter().flatten() {
        field(out, name.as_str(), value);
    }
    // RFC 9110 section 8.6: no Content-Length on an empty body unless the client sent one or
    // the method anticipates a body.
    let anticipates_body = matches!(*request.method, Method::POST | Method::PUT | Method::PATCH);
    if had_length || anticipates_body || !request.body.is_empty() {
        let mut digits = [0u8; 20];
        field(
            out,
            header::CONTENT_LENGTH.as_str(),
            decimal(&mut digits, request.body.len()),
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// One header line.
fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into the tail of `buf`.
fn decimal(buf: &mut [u8; 20], mut n: usize) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Whether `name` (lower-case, as a `HeaderName` holds it, or any case from the wire) is one
/// of [`HOP_BY_HOP`].
fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|hop| hop.as_str().as_bytes().eq_ignore_ascii_case(name))
}

/// The options of a message's `Connection` header: `close`, and the names it lists as
/// hop-by-hop. Names that are hop-by-hop anyway (`keep-alive`, the usual one) are not kept, so
/// the common `Connection: keep-alive` allocates nothing.
#[derive(Debug, Default)]
struct ConnectionOptions<'a> {
    close: bool,
    listed: Vec<&'a [u8]>,
}

impl<'a> ConnectionOptions<'a> {
    fn of(headers: &'a HeaderMap) -> ConnectionOptions<'a> {
        let mut options = ConnectionOptions::default();
        for value in headers.get_all(header::CONNECTION) {
            options.add(value.as_bytes());
        }
        options
    }

    fn add(&mut self, value: &'a [u8]) {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if !token.is_empty() && !is_hop_by_hop(token) {
                self.listed.push(token);
            }
        }
    }

    /// Whether `name` is one the header listed.
    fn lists(&self, name: impl AsRef<[u8]>) -> bool {
        let name = name.as_ref();
        self.listed.iter().any(|l| l.eq_ignore_ascii_case(name))
    }
}

/// How a response body ends (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` (or no body at all): this many bytes remain.
    Length(u64),
    /// `Transfer-Encoding: chunked`, decoded.
    Chunked(Chunked),
    /// Neither: the body runs until the upstream closes; the connection is not reused.
    UntilClose,
    /// Read to its end.
    Done,
}

/// What the next step of reading a body yields.
#[derive(Debug)]
enum Step {
    Data(Bytes),
    NeedMore,
    End,
}

impl Framing {
    fn is_done(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Done)
            || matches!(self, Framing::Chunked(chunked) if chunked.is_done())
    }

    /// Take the next piece of body from `buf`.
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, UpstreamError> {
        match self {
            Framing::Length(0) | Framing::Done => Ok(Step::End),
            Framing::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (*remaining).min(buf.len() as u64);
                *remaining -= n;
                // `n` is at most `buf.len()`, a usize.
                Ok(Step::Data(buf.split_to(n as usize).freeze()))
            }
            Framing::Chunked(chunked) => chunked.step(buf),
            Framing::UntilClose if buf.is_empty() => Ok(Step::NeedMore),
            Framing::UntilClose => Ok(Step::Data(buf.split().freeze())),
        }
    }
}

/// The chunked transfer coding (RFC 9112 section 7.1), one byte at a time outside chunk data:
/// where the decoder is in the grammar, and what it has counted against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunked {
    state: ChunkedState,
    /// The chunk size read so far, then the data bytes left of the chunk.
    size: u64,
    /// Hex digits of the chunk size read so far.
    digits: u8,
    /// Bytes of the current size line past its digits (whitespace and extensions).
    line: u16,
    /// Such bytes over the whole body.
    extensions: u32,
    /// Bytes of the trailer section so far.
    trailer_bytes: u32,
    /// Trailer field lines so far.
    trailer_lines: u16,
}

/// Where a [`Chunked`] decoder is. In a chunk-size line, after the hex digits:
/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, names and
/// unquoted values tokens, quoted values `quoted-string` (RFC 9110 section 5.6), whitespace
/// allowed before the CR as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Hex digits of a chunk size.
    Size,
    /// Whitespace after the size.
    SizeSpace,
    /// After a `;`: whitespace, then an extension name.
    ExtStart,
    /// In an extension name.
    ExtName,
    /// Whitespace after an extension name.
    ExtNameSpace,
    /// After `=`: whitespace, then a token or a quoted string.
    ExtValueStart,
    /// In an unquoted extension value.
    ExtToken,
    /// In a quoted extension value.
    ExtQuoted,
    /// After a backslash in a quoted value.
    ExtEscape,
    /// Whitespace after an extension value.
    ExtEnd,
    /// CR seen at the end of the size line.
    SizeLf,
    /// Inside chunk data (`size` bytes left).
    Data,
    /// After chunk data: CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line: a field name, or CR for the empty last line.
    TrailerStart,
    /// In a trailer field's name (a token, then `:` with no whitespace before it).
    TrailerName,
    /// In a trailer field's value, up to CR.
    TrailerValue,
    /// CR seen at the end of a trailer field line.
    TrailerLf,
    /// CR seen on the empty line ending the trailer section.
    EndLf,
    /// The last chunk and its trailers are read.
    End,
}

impl Chunked {
    const START: Chunked = Chunked {
        state: ChunkedState::Size,
        size: 0,
        digits: 0,
        line: 0,
        extensions: 0,
        trailer_bytes: 0,
        trailer_lines: 0,
    };

    fn is_done(&self) -> bool {
        self.state == ChunkedState::End
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, UpstreamError> {
        loop {
            match self.state {
                ChunkedState::End => return Ok(Step::End),
                ChunkedState::Data if self.size == 0 => self.state = ChunkedState::DataCr,
                ChunkedState::Data => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = self.size.min(buf.len() as u64);
                    self.size -= n;
                    // `n` is at most `buf.len()`, a usize.
                    return Ok(Step::Data(buf.split_to(n as usize).freeze()));
                }
                _ => {
                    let Some(&byte) = buf.first() else {
                        return Ok(Step::NeedMore);
                    };
                    buf.advance(1);
                    self.next(byte)
                        .ok_or(UpstreamError::Malformed("chunked body"))?;
                }
            }
        }
    }

    /// Take `byte` outside chunk data; `None` if the grammar or a limit does not allow it.
    fn next(&mut self, byte: u8) -> Option<()> {
        use ChunkedState::*;
        let space = byte == b' ' || byte == b'\t';
        let token = is_tchar(byte);
        let state = self.state;
        // Bytes of the size line past its digits, its CR excepted, count against the limits.
        let in_line = matches!(
            state,
            SizeSpace
                | ExtStart
                | ExtName
                | ExtNameSpace
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtEscape
                | ExtEnd
        ) || (state == Size && !byte.is_ascii_hexdigit());
        if in_line && byte != b'\r' {
            self.line += 1;
            self.extensions += 1;
            if self.line > MAX_CHUNK_EXTENSION || self.extensions > MAX_CHUNK_EXTENSIONS {
                return None;
            }
        }
        if matches!(
            state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf
        ) {
            self.trailer_bytes += 1;
            if self.trailer_bytes > MAX_TRAILER_BYTES {
                return None;
            }
        }
        self.state = match (state, byte) {
            (Size, _) if byte.is_ascii_hexdigit() => {
                if self.digits == 16 {
                    return None;
                }
                // A hex digit is below 16.
                let digit = (byte as char).to_digit(16)? as u64;
                self.size = self.size << 4 | digit;
                self.digits += 1;
                Size
            }
            (Size, _) if self.digits == 0 => return None,
            (Size | SizeSpace, _) if space => SizeSpace,
            (Size | SizeSpace | ExtName | ExtNameSpace | ExtToken | ExtEnd, b';') => ExtStart,
            (Size | SizeSpace | ExtName | ExtNameSpace | ExtToken | ExtEnd, b'\r') => SizeLf,
            (ExtStart, _) if space => ExtStart,
            (ExtStart | ExtName, _) if token => ExtName,
            (ExtName | ExtNameSpace, _) if space => ExtNameSpace,
            (ExtName | ExtNameSpace, b'=') => ExtValueStart,
            (ExtValueStart, _) if space => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart | ExtToken, _) if token => ExtToken,
            (ExtToken | ExtEnd, _) if space => ExtEnd,
            (ExtQuoted, b'"') => ExtEnd,
            (ExtQuoted, b'\\') => ExtEscape,
            (ExtQuoted, _) if is_qdtext(byte) => ExtQuoted,
            (ExtEscape, _) if space || is_field_vchar(byte) => ExtQuoted,
            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => {
                self.digits = 0;
                self.line = 0;
                Data
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, _) if token => {
                self.trailer_lines += 1;
                if usize::from(self.trailer_lines) > MAX_HEADERS {
                    return None;
                }
                TrailerName
            }
            (TrailerName, _) if token => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, _) if space || is_field_vchar(byte) => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => End,
            _ => return None,
        };
        Some(())
    }
}

/// A `tchar` of RFC 9110 section 5.6.2: what a token (a field name, a chunk extension's
/// name or unquoted value, a transfer coding) is made of.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Visible ASCII and obs-text: a field value's bytes besides whitespace (RFC 9110 section 5.5).
fn is_field_vchar(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte) || byte >= 0x80
}

/// What a quoted string holds unescaped: whitespace, visible ASCII but `"` and `\`, obs-text.
fn is_qdtext(byte: u8) -> bool {
    byte == b'\t' || byte == b' ' || (is_field_vchar(byte) && byte != b'"' && byte != b'\\')
}

/// A parsed response head's status and what it says about the body and the connection; its
/// end-to-end headers go into the caller's map.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    framing: Framing,
    reusable: bool,
}

impl Head {
    /// How the body of the response to a request (`HEAD` or not) ends, and whether the
    /// connection may carry another exchange once it has.
    fn body(&self, head_request: bool) -> (Framing, bool) {
        let no_body = head_request
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED;
        let framing = if no_body {
            Framing::Length(0)
        } else {
            self.framing
        };
        (framing, self.reusable && framing != Framing::UntilClose)
    }
}

/// Read the final response head into `headers`, skipping interim 1xx responses.
async fn read_head(
    stream: &mut TcpStream,
    read: &mut BytesMut,
    headers: &mut HeaderMap,
) -> Result<Head, UpstreamError> {
    loop {
        if let Some(head) = parse_final_head(read, headers)? {
            return Ok(head);
        }
        read.reserve(READ_CHUNK);
        match stream.read_buf(read).await {
            Ok(0) => return Err(UpstreamError::Closed),
            Ok(_) => {}
            Err(err) => return Err(UpstreamError::Io(err)),
        }
    }
}

/// Parse the final response head from the front of `read`, consuming it and any interim 1xx
/// responses before it; `None` while it is incomplete.
fn parse_final_head(
    read: &mut BytesMut,
    headers: &mut HeaderMap,
) -> Result<Option<Head>, UpstreamError> {
    while !read.is_empty() {
        let Some(head) = parse_head(read, headers)? else {
            if read.len() >= MAX_HEAD_BYTES {
                return Err(UpstreamError::Malformed("response head too large"));
            }
            return Ok(None);
        };
        if !head.status.is_informational() {
            return Ok(Some(head));
        }
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(UpstreamError::Malformed("unrequested protocol switch"));
        }
    }
    Ok(None)
}

/// Parse a response head from the front of `buf`, consuming it; `None` if incomplete. Its
/// end-to-end headers replace what `headers` held; their values share the head's bytes rather
/// than being copied.
fn parse_head(buf: &mut BytesMut, headers: &mut HeaderMap) -> Result<Option<Head>, UpstreamError> {
    // Left uninitialised for httparse to fill: 100 zeroed fields were a 3.2 KiB memset per
    // response.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => {
            return Err(UpstreamError::Malformed("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamError::Malformed("too many response headers"));
        }
        Err(_) => return Err(UpstreamError::Malformed("response head")),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| UpstreamError::Malformed("status code"))?;
    let http10 = response.version == Some(0);

    // First pass: what the framing and `Connection` headers say.
    let mut options = ConnectionOptions::default();
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            options.add(field.value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // HTTP/1.0 has no transfer codings (RFC 9112 section 6.1): whoever sends one
            // there does not frame bodies the way the gate would.
            if http10 {
                return Err(UpstreamError::Malformed("Transfer-Encoding in HTTP/1.0"));
            }
            // Only the final coding matters: chunked there frames the body; anything else
            // means the body runs to the close.
            let last = final_coding(field.value)
                .ok_or(UpstreamError::Malformed("invalid Transfer-Encoding"))?;
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let value = parse_length(field.value)
                .ok_or(UpstreamError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|seen| seen != value) {
                return Err(UpstreamError::Malformed("conflicting Content-Length"));
            }
            length = Some(value);
        }
    }
    let framing = match (chunked, length) {
        (Some(true), _) => Framing::Chunked(Chunked::START),
        (Some(false), _) => Framing::UntilClose,
        (None, Some(length)) => Framing::Length(length),
        (None, None) => Framing::UntilClose,
    };
    // Both framings at once is how desynchronisation attacks start: use the chunked one
    // (RFC 9112 section 6.3) and never reuse the connection.
    let reusable = !(options.close || http10 || (chunked.is_some() && length.is_some()));

    // Second pass: where the end-to-end headers lie in the head, so that their values can
    // share its bytes once it is split off. Offsets fit in 16 bits: the head is at most
    // MAX_HEAD_BYTES (64 KiB) long.
    let base = buf.as_ptr() as usize;
    let offset = |at: &[u8]| (at.as_ptr() as usize - base) as u16;
    let mut spans = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
    let mut count = 0;
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        let drop_length = chunked.is_some() && name.eq_ignore_ascii_case(b"content-length");
        if drop_length || is_hop_by_hop(name) || options.lists(name) {
            continue;
        }
        // Lengths are below the head's length, so they fit too.
        spans[count] = (
            offset(name),
            name.len() as u16,
            offset(field.value),
            field.value.len() as u16,
        );
        count += 1;
    }
    let head = buf.split_to(len).freeze();
    headers.clear();
    headers.reserve(count);
    for &(name_at, name_len, value_at, value_len) in &spans[..count] {
        let (name_at, value_at) = (usize::from(name_at), usize::from(value_at));
        let name = HeaderName::from_bytes(&head[name_at..name_at + usize::from(name_len)])
            .map_err(|_| UpstreamError::Malformed("header name"))?;
        let value = head.slice(value_at..value_at + usize::from(value_len));
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| UpstreamError::Malformed("header value"))?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        framing,
        reusable,
    }))
}

/// The last coding of a `Transfer-Encoding` value, which must be a list of tokens without
/// empty elements or parameters: the codings a response can use have none, and an odd list
/// (`chunked,` or a coding with bytes outside ASCII) is one that another parser may read
/// differently.
fn final_coding(value: &[u8]) -> Option<&[u8]> {
    let mut last = None;
    for coding in value.split(|&b| b == b',') {
        let coding = coding.trim_ascii();
        if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        last = Some(coding);
    }
    last
}

/// A `Content-Length` value: digits only, at most 19 of them (fits a u64 without overflow).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0')),
    )
}

/// A response body streaming from its upstream connection, read in the polling task.
#[derive(Debug)]
pub struct UpstreamBody {
    framing: Framing,
    /// `None` once the body is done or failed.
    conn: Option<Conn>,
    /// Where the connection goes when the body ends cleanly; `None` if it must close.
    pool: Option<Arc<Pool>>,
}

impl UpstreamBody {
    /// Done: pool the connection if it may carry another exchange, else close it.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        let Some(conn) = self.conn.take() else { return };
        // Bytes past the end of the body mean the upstream and the gate disagree on framing.
        if let Some(pool) = self.pool.take().filter(|_| conn.read.is_empty()) {
            pool.check_in(conn);
        }
    }

    fn fail(&mut self, err: UpstreamError) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        tracing::warn!(error = %err, "upstream response body failed");
        Poll::Ready(Some(Err(err)))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.read) {
                Ok(Step::Data(data)) => {
                    if this.framing.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(err) => return this.fail(err),
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::UntilClose => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(UpstreamError::Closed),
                Ok(_) => {}
                Err(err) => return this.fail(UpstreamError::Io(err)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            Framing::Done => SizeHint::with_exact(0),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}

/// The response parser without a socket, for the differential test
/// (`tests/upstream_differential.rs`) and the fuzz targets (`fuzz/`). Not part of the gate's
/// API: hidden from its documentation, called by nothing in the gate. It reads a response as
/// [`Upstream::send`] and [`UpstreamBody`] do, from bytes arriving in pieces of given sizes.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// What the gate made of one response.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Read {
        /// The final status (interim 1xx responses are skipped).
        pub status: u16,
        /// The end-to-end headers, as forwarded to the client.
        pub headers: HeaderMap,
        /// The decoded body.
        pub body: Vec<u8>,
        /// The body had no framing and ran to the end of the input.
        pub until_close: bool,
        /// The head lets the connection carry another exchange (the pool also requires that
        /// nothing follows the body: `leftover` zero).
        pub reusable: bool,
        /// Input bytes after the end of the body.
        pub leftover: usize,
    }

    /// Pieces of `wire`, of the sizes in `pieces` in turn (a zero counts as one; none: all
    /// of it at once).
    fn split<'a>(wire: &'a [u8], pieces: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut sizes = pieces.iter().cycle();
        let mut rest = wire;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let size = sizes.next().map_or(rest.len(), |&n| n.clamp(1, rest.len()));
            let (piece, tail) = rest.split_at(size);
            rest = tail;
            Some(piece)
        })
    }

    /// Read one response to a request (`HEAD` or not) from `wire`, which ends where the
    /// upstream closes the connection.
    pub fn read_response(
        wire: &[u8],
        head_request: bool,
        pieces: &[usize],
    ) -> Result<Read, UpstreamError> {
        let mut input = split(wire, pieces);
        let mut buf = BytesMut::new();
        let mut headers = HeaderMap::new();
        let head = loop {
            if let Some(head) = parse_final_head(&mut buf, &mut headers)? {
                break head;
            }
            buf.extend_from_slice(input.next().ok_or(UpstreamError::Closed)?);
        };
        let (mut framing, reusable) = head.body(head_request);
        let until_close = framing == Framing::UntilClose;
        let mut body = Vec::new();
        loop {
            match framing.step(&mut buf)? {
                Step::Data(data) => body.extend_from_slice(&data),
                Step::End => break,
                Step::NeedMore => match input.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None if until_close => break,
                    None => return Err(UpstreamError::Closed),
                },
            }
        }
        Ok(Read {
            status: head.status.as_u16(),
            headers,
            body,
            until_close,
            reusable,
            leftover: buf.len() + input.map(<[u8]>::len).sum::<usize>(),
        })
    }

    /// Decode a chunked body from `wire`: the body and the bytes left after it, `None` if
    /// the input ended before the body did.
    pub fn decode_chunked(
        wire: &[u8],
        pieces: &[usize],
    ) -> Result<Option<(Vec<u8>, usize)>, UpstreamError> {
        let mut framing = Framing::Chunked(Chunked::START);
        let mut input = split(wire, pieces);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        loop {
            match framing.step(&mut buf)? {
                Step::Data(data) => body.extend_from_slice(&data),
                Step::End => {
                    let leftover = buf.len() + input.map(<[u8]>::len).sum::<usize>();
                    return Ok(Some((body, leftover)));
                }
                Step::NeedMore => match input.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return Ok(None),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feed `wire` to a chunked decoder in pieces of `piece` bytes; the decoded body and the
    /// bytes left after it, or the first error. `Ok(None)` if the input ended before the last
    /// chunk.
    fn decode_chunked(
        wire: &[u8],
        piece: usize,
    ) -> Result<Option<(Vec<u8>, usize)>, UpstreamError> {
        testing::decode_chunked(wire, &[piece])
    }

    fn chunked_wire(chunks: &[Vec<u8>], extension: bool, trailer: bool) -> Vec<u8> {
        let mut wire = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            wire.extend_from_slice(format!("{:X}", chunk.len()).as_bytes());
            if extension {
                wire.extend_from_slice(b" ; name=\"v; x\"");
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        if trailer {
            wire.extend_from_slice(b"x-sum: 1\r\nx-more: two\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    proptest! {
        #[test]
        fn chunked_bodies_decode_whatever_the_read_boundaries(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            extension: bool,
            trailer: bool,
            piece in 1usize..64,
        ) {
            let wire = chunked_wire(&chunks, extension, trailer);
            let decoded = decode_chunked(&wire, piece).expect("valid coding").expect("complete");
            prop_assert_eq!(decoded, (chunks.concat(), 0));
            // Cut anywhere before the end, it is incomplete, never complete or an error.
            let cut = piece % wire.len();
            prop_assert!(decode_chunked(&wire[..cut], piece).expect("valid prefix").is_none());
        }
    }

    #[test]
    fn chunked_bodies_outside_the_grammar_are_errors() {
        for wire in [
            &b"g\r\n"[..],                // not hex
            b"\r\n",                      // no size
            b"10000000000000000\r\n",     // 17 digits
            b"2\nok\r\n0\r\n\r\n",        // bare LF after the size
            b"2\r\nokX\r\n0\r\n\r\n",     // data longer than its size
            b"2\r\nok\n0\r\n\r\n",        // bare LF after data
            b"0\r\nx-sum: 1\n\r\n",       // bare LF in a trailer
            b"2;\x00\r\nok\r\n0\r\n\r\n", // control byte in an extension
        ] {
            assert!(
                decode_chunked(wire, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        // Bytes after the terminating CRLF are left over, which forbids reusing the connection.
        assert_eq!(
            decode_chunked(b"0\r\n\r\nHTTP", 64).unwrap(),
            Some((vec![], 4))
        );
    }

    /// Whether `wire`, a whole chunked body, decodes to `body` with nothing left over.
    fn decodes_to(wire: &[u8], body: &[u8]) -> bool {
        [1, 2, 3, 5, 64, wire.len()]
            .into_iter()
            .all(|piece| matches!(decode_chunked(wire, piece), Ok(Some((ref b, 0))) if b == body))
    }

    #[test]
    fn chunk_size_lines_hold_the_size_then_extensions_of_the_grammar() {
        for line in [
            &b"3"[..],
            b"3 \t ",
            b"3;a",
            b"3 ; a ; b",
            b"3;a=b",
            b"3 ;\tname = value ",
            b"3;a=\"\"",
            b"3;a=\"x; \\\"y\\\\\x80\"",
            b"3;a=\"\\\t\";b=!#$%&'*+-.^_`|~",
        ] {
            let wire = [line, b"\r\nabc\r\n0\r\n\r\n"].concat();
            assert!(
                decodes_to(&wire, b"abc"),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        for line in [
            &b"3 zz"[..],     // more than whitespace after the size
            b"3 4",           // a second number
            b"3\t;\x80\xff",  // not a token
            b";a",            // no size
            b"3;",            // no extension name
            b"3;;a",          // empty extension
            b"3;a=",          // no value
            b"3;a b",         // two names
            b"3;a=b c",       // two values
            b"3;a=\"x",       // unterminated quoted value
            b"3;a=\"x\"y",    // text after a quoted value
            b"3;a=\"\x7f\"",  // control byte quoted
            b"3;a=\"x\\\n\"", // control byte escaped
            b"3;a=b\x0b",     // control byte
            b"3;a\"b\"",      // quote in a name
            b"3;a=@",         // separator as a value
        ] {
            let wire = [line, b"\r\nabc\r\n0\r\n\r\n"].concat();
            assert!(
                decode_chunked(&wire, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn chunk_extensions_are_limited_per_line_and_over_the_whole_body() {
        let chunk = |extension_len: usize| {
            let mut chunk = b"1;e=".to_vec();
            chunk.resize(extension_len + 1, b'x');
            chunk.extend_from_slice(b"\r\na\r\n");
            chunk
        };
        let body = |chunks: usize, extension_len: usize| {
            [chunk(extension_len).repeat(chunks), b"0\r\n\r\n".to_vec()].concat()
        };
        let per_line = usize::from(MAX_CHUNK_EXTENSION);
        assert!(decodes_to(&body(1, per_line), b"a"));
        assert!(decode_chunked(&body(1, per_line + 1), 64).is_err());
        // Four lines at the per-line limit fill the body's allowance; a fifth byte is over.
        let total = MAX_CHUNK_EXTENSIONS as usize;
        assert_eq!(total, 4 * per_line);
        let at_limit = body(4, per_line);
        assert!(decodes_to(&at_limit, b"aaaa"));
        let over = [chunk(1), at_limit].concat();
        assert!(decode_chunked(&over, 64).is_err());
        // Whitespace after the size counts too.
        let spaces = [chunk(per_line).repeat(4), b"1 \r\na\r\n0\r\n\r\n".to_vec()].concat();
        assert!(decode_chunked(&spaces, 64).is_err());
    }

    #[test]
    fn trailer_lines_are_fields_and_limited_in_number() {
        for trailers in [
            &b""[..],
            b"x-sum: 1\r\n",
            b"x-a:1\r\nx-b:\t \x80 v \r\nx-c:\r\n",
        ] {
            let wire = [b"1\r\na\r\n0\r\n", trailers, b"\r\n"].concat();
            assert!(
                decodes_to(&wire, b"a"),
                "{:?}",
                String::from_utf8_lossy(trailers)
            );
        }
        for trailers in [
            &b"no colon\r\n"[..],
            b"nocolon\r\n",
            b"x-sum : 1\r\n",         // whitespace before the colon
            b": 1\r\n",               // no name
            b"x-a: 1\r\n folded\r\n", // obs-fold
            b"x-a: \x00\r\n",         // control byte
            b"x(a): 1\r\n",           // not a token
        ] {
            let wire = [b"0\r\n", trailers, b"\r\n"].concat();
            assert!(
                decode_chunked(&wire, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(trailers)
            );
        }
        let many = |lines: usize| format!("0\r\n{}\r\n", "x: 1\r\n".repeat(lines));
        assert!(decodes_to(many(MAX_HEADERS).as_bytes(), b""));
        assert!(decode_chunked(many(MAX_HEADERS + 1).as_bytes(), 64).is_err());
    }

    #[test]
    fn transfer_encoding_must_be_http11_and_a_list_of_codings() {
        for wire in [
            &b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.0 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: , chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \x80, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
        ] {
            assert!(head(wire).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip ,\tCHUNKED\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunked::START));
    }

    /// A parsed head and its headers.
    #[derive(Debug)]
    struct Parsed {
        status: StatusCode,
        headers: HeaderMap,
        framing: Framing,
        reusable: bool,
    }

    fn head(wire: &[u8]) -> Result<Option<Parsed>, UpstreamError> {
        // A map holding a request's headers, as the gate's is: the response's replace them.
        let mut headers = HeaderMap::new();
        headers.insert("x-from-the-request", HeaderValue::from_static("1"));
        let head = parse_head(&mut BytesMut::from(wire), &mut headers)?;
        Ok(head.map(|head| Parsed {
            status: head.status,
            headers,
            framing: head.framing,
            reusable: head.reusable,
        }))
    }

    #[test]
    fn response_heads_say_how_the_body_ends_and_whether_to_reuse() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.framing, h.reusable),
            (StatusCode::OK, Framing::Length(12), true)
        );
        assert_eq!(h.headers["content-length"], "12");
        assert_eq!(h.headers["x-a"], "1");

        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunked::START));
        assert!(h.reusable && !h.headers.contains_key("transfer-encoding"));

        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::UntilClose, true));

        let h = head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.reusable && !h.headers.contains_key("connection"));

        let h = head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.reusable);

        assert!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 1")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn hop_by_hop_and_connection_listed_response_headers_are_dropped() {
        let wire = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
            X-Hop: 1\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTE: trailers\r\nX-Kept: 1\r\n\
            X-Kept: 2\r\nContent-Length: 0\r\n\r\n";
        let h = head(wire).unwrap().unwrap();
        let names: Vec<&str> = h.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept", "content-length"]);
        assert_eq!(h.headers.get_all("x-kept").iter().count(), 2);
    }

    #[test]
    fn heads_outside_the_grammar_are_errors() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        ] {
            assert!(head(wire).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(head(many.as_bytes()).is_err());

        // The largest head accepted, with its last value ending at the limit, keeps its
        // headers; one byte more is refused even when it arrives complete in one read.
        let fill = |value_len| {
            format!(
                "HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: {}\r\n\r\n",
                "b".repeat(value_len)
            )
        };
        let at_limit = fill(MAX_HEAD_BYTES - fill(0).len());
        let h = head(at_limit.as_bytes()).unwrap().unwrap();
        assert_eq!(h.headers["x-a"], "1");
        assert_eq!(h.headers["x-b"].len(), MAX_HEAD_BYTES - fill(0).len());
        let over = fill(MAX_HEAD_BYTES + 1 - fill(0).len());
        assert!(matches!(
            head(over.as_bytes()),
            Err(UpstreamError::Malformed("response head too large"))
        ));
    }

    /// A policy like the gate's: `x-owned` is dropped, `x-vouched` is end to end.
    fn policy(name: &HeaderName) -> Disposition {
        match name.as_str() {
            "x-owned" => Disposition::Drop,
            "x-vouched" => Disposition::EndToEnd,
            _ => Disposition::Forward,
        }
    }

    fn encoded(
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        added: &[Option<(HeaderName, &[u8])>],
        body: &Bytes,
    ) -> String {
        let host = HeaderValue::from_static("tool-gate:8081");
        let request = Outgoing {
            method,
            path,
            query,
            headers,
            host: None,
            disposition: policy,
            added,
            body,
        };
        let mut out = Vec::new();
        encode_head(&mut out, &request, &host);
        String::from_utf8(out).expect("ASCII head")
    }

    #[test]
    fn requests_are_encoded_with_end_to_end_headers_and_the_body_length() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Hop, X-Vouched, Host, Cookie"),
        );
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.append("x-kept", HeaderValue::from_static("a"));
        headers.append("x-kept", HeaderValue::from_static("b"));
        headers.insert("x-owned", HeaderValue::from_static("spoof"));
        headers.insert("x-vouched", HeaderValue::from_static("v"));
        headers.insert(header::HOST, HeaderValue::from_static("client.example"));
        let added = HeaderValue::from_static("10.0.0.9");
        let body = Bytes::from_static(b"{}");
        let head = encoded(
            &Method::POST,
            "/tool",
            Some("q=1"),
            headers,
            &[
                None,
                Some((HeaderName::from_static("x-forwarded-for"), added.as_bytes())),
            ],
            &body,
        );
        // The `host` given wins over the client's, and `Connection` cannot remove it.
        assert_eq!(
            head,
            "POST /tool?q=1 HTTP/1.1\r\nhost: tool-gate:8081\r\nx-kept: a\r\nx-kept: b\r\n\
             x-vouched: v\r\nx-forwarded-for: 10.0.0.9\r\ncontent-length: 2\r\n\r\n"
        );

        // An empty GET gets no Content-Length; an empty query keeps its `?`; cookies are joined.
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let head = encoded(&Method::GET, "/", Some(""), headers, &[], &Bytes::new());
        assert_eq!(
            head,
            "GET /? HTTP/1.1\r\nhost: tool-gate:8081\r\ncookie: a=1; b=2\r\n\r\n"
        );
        let head = encoded(
            &Method::OPTIONS,
            "*",
            None,
            HeaderMap::new(),
            &[],
            &Bytes::new(),
        );
        assert_eq!(head, "OPTIONS * HTTP/1.1\r\nhost: tool-gate:8081\r\n\r\n");
    }

    /// True when the peer has closed `end` (end of stream). Waits for the close or for data,
    /// never for time to pass.
    async fn closed(end: &mut TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        matches!(end.read(&mut byte).await, Ok(0))
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_its_limit_and_closes_connections_idle_too_long() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool {
            address: listener.local_addr().unwrap().to_string(),
            idle: Mutex::default(),
            max_idle: 2,
            idle_timeout: Duration::from_secs(30),
        };
        let mut upstream_ends = Vec::new();
        for _ in 0..3 {
            let conn = Conn::connect(&pool.address).await.unwrap();
            upstream_ends.push(listener.accept().await.unwrap().0);
            pool.check_in(conn);
        }
        let checked_in = Instant::now();
        // The third check-in found the pool full and closed its connection.
        assert_eq!(pool.lock().len(), 2);
        assert!(closed(&mut upstream_ends[2]).await);
        for end in &upstream_ends[..2] {
            let silent = end.try_read(&mut [0u8; 1]);
            assert!(matches!(silent, Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        }

        pool.close_expired(checked_in + Duration::from_secs(25));
        assert_eq!(pool.lock().len(), 2, "younger than the timeout: kept");
        pool.close_expired(checked_in + Duration::from_secs(31));
        assert_eq!(pool.lock().len(), 0, "older than the timeout: closed");
        for end in &mut upstream_ends[..2] {
            assert!(closed(end).await);
        }
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        let mut buf = [0u8; 20];
        for n in [0usize, 7, 10, 1024, usize::MAX] {
            assert_eq!(decimal(&mut buf, n), n.to_string().as_bytes());
        }
    }
}
