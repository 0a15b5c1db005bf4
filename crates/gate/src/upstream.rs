//! The upstream side: HTTP/1.1 keep-alive connections to `GATE_UPSTREAM`, each exchange driven
//! by the task of the request that makes it.
//!
//! Why not hyper's client: it runs every connection in a task of its own, so a request crosses
//! tasks four times (the dispatch channel, a oneshot back with the response head, the body
//! channel, the pool's readiness signal), and those wake-ups, the pool and the channels cost
//! more than the whole signature check (measurements in `bench/analysis.md`). The
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
//!
//! Layout: this file holds the public API ([`Pool`] and its [`Pool::send`], [`Outgoing`],
//! [`Disposition`], [`UpstreamError`]); `pool` the connections and the idle queue; `encode`
//! the request head; `head` the response head; `chunked` the chunked decoder; `body` the
//! framing and [`UpstreamBody`]; `fields` the header grammar the others share; `testing` the
//! parser without a socket, for the differential test and the fuzz targets.

mod body;
mod chunked;
mod encode;
mod fields;
mod head;
mod pool;
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
// The unit tests use only its chunked decoder; the rest is for the differential test and fuzzing.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use self::head::{Head, read_head};
use self::pool::{Conn, Connections};

pub use body::UpstreamBody;

/// Request bodies up to this size are copied behind the head and sent with one `write`.
const COALESCE_BODY: usize = 16 * 1024;

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
    /// Forwarded unless hop-by-hop: one of `fields::HOP_BY_HOP` or named by the `Connection` header.
    Forward,
    /// Forwarded whatever the `Connection` header names: a field the gate sets or vouches for.
    EndToEnd,
    /// Never forwarded.
    Drop,
}

/// The request as it leaves for the upstream: what [`Pool::send`] writes, in this order.
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
pub struct Pool {
    /// `Host` for requests that carry none: the upstream's authority.
    host: HeaderValue,
    pool: Arc<Connections>,
}

impl Pool {
    /// Connections to `authority` (port 80 when it names none). Must run inside a tokio
    /// runtime: a task closes connections left idle too long (`pool::IDLE_TIMEOUT`).
    pub fn new(authority: &Authority) -> Pool {
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        // An `Authority` holds only characters that are valid in a header value.
        let host = HeaderValue::from_str(authority.as_str()).expect("authority is header-safe");
        let pool = Arc::new(Connections::new(address));
        tokio::spawn(pool::reap(Arc::downgrade(&pool)));
        Pool { host, pool }
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
        encode::encode_head(&mut out, &request, request.host.unwrap_or(&self.host));
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
            let body = UpstreamBody::new(framing, conn, reusable.then_some(pool));
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
