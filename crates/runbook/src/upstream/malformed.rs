//! The upstream of [`super::RecordingUpstream::start_malformed`]: a hand-written HTTP/1.1 loop
//! that answers `/malformed/<name>` with broken framing ([`Malformed`]) and every other path
//! with the clean echo, keeping the connection open either way, so a client that reuses a
//! connection after a broken answer is seen doing so.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::record::Arrival;
use super::{Shared, echo};

/// The broken answers of an upstream started with
/// [`super::RecordingUpstream::start_malformed`], by path `/malformed/<name>`: each one a
/// framing error an HTTP/1.1 client must not pass on as a clean response, nor recover from on
/// the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// `chunk-size`: a chunk-size line with garbage after the size (`3 zz`).
    ChunkSize,
    /// `trailer`: a trailer line without a colon.
    Trailer,
    /// `http10-chunked`: an HTTP/1.0 response with `Transfer-Encoding: chunked`.
    Http10Chunked,
}

impl Malformed {
    /// Every kind, in the order the reports list them (and of their discriminants, which index
    /// the reuse counts).
    pub const ALL: [Malformed; 3] = [
        Malformed::ChunkSize,
        Malformed::Trailer,
        Malformed::Http10Chunked,
    ];

    /// Its path on the upstream.
    pub fn path(self) -> &'static str {
        match self {
            Malformed::ChunkSize => "/malformed/chunk-size",
            Malformed::Trailer => "/malformed/trailer",
            Malformed::Http10Chunked => "/malformed/http10-chunked",
        }
    }

    /// What is broken, for the reports.
    pub fn describe(self) -> &'static str {
        match self {
            Malformed::ChunkSize => "chunk-size line `3 zz`",
            Malformed::Trailer => "trailer line without a colon",
            Malformed::Http10Chunked => "HTTP/1.0 with Transfer-Encoding: chunked",
        }
    }

    /// The response bytes. The body, read loosely, is `abc`.
    fn response(self) -> &'static [u8] {
        match self {
            Malformed::ChunkSize => {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3 zz\r\nabc\r\n0\r\n\r\n"
            }
            Malformed::Trailer => {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nno colon here\r\n\r\n"
            }
            Malformed::Http10Chunked => {
                b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            }
        }
    }

    fn of_path(path: &str) -> Option<Malformed> {
        Malformed::ALL.into_iter().find(|kind| kind.path() == path)
    }
}

/// Largest request head the loop reads.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body the loop reads; a longer `Content-Length` closes the connection.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Read a request head and a `Content-Length` body, record it, answer, and go on reading the
/// same connection until the client closes it.
pub(super) async fn serve(mut stream: TcpStream, shared: Arc<Shared>, connection: u64) {
    let mut buffer = Vec::new();
    // The broken answers this connection has carried so far.
    let mut carried: Vec<Malformed> = Vec::new();
    loop {
        let (method, target, headers, length, head_len) = loop {
            if let Some(head) = parse_head(&buffer) {
                break head;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 && buffer.len() < MAX_HEAD => {
                    buffer.extend_from_slice(&chunk[..n]);
                }
                _ => return,
            }
        };
        if length > MAX_BODY {
            return;
        }
        while buffer.len() < head_len + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        let body = Bytes::copy_from_slice(&buffer[head_len..head_len + length]);
        buffer.drain(..head_len + length);
        let arrival = Arrival {
            connection,
            method,
            target,
            headers,
            body,
        };
        let kind = Malformed::of_path(arrival.path());
        let answer = match kind {
            Some(kind) => kind.response().to_vec(),
            None => clean(&echo::describe(&arrival)),
        };
        {
            let mut log = shared.log();
            for earlier in &carried {
                log.note_reuse(*earlier);
            }
            log.note(arrival);
        }
        if let Some(kind) = kind.filter(|kind| !carried.contains(kind)) {
            carried.push(kind);
        }
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A complete request head at the start of `buffer`: method, target, headers, `Content-Length`
/// (0 when absent) and the head's length.
fn parse_head(buffer: &[u8]) -> Option<(Method, String, HeaderMap, usize, usize)> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(head_len)) = request.parse(buffer) else {
        return None;
    };
    // httparse accepts only a token as the method, and so does `Method`.
    let method = Method::from_bytes(request.method.unwrap_or("GET").as_bytes()).unwrap_or_default();
    let target = request.path.unwrap_or("/").to_owned();
    let mut headers = HeaderMap::new();
    for line in request.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes());
        let value = HeaderValue::from_bytes(line.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    Some((method, target, headers, length, head_len))
}

/// The echo as a whole HTTP/1.1 response.
fn clean(body: &[u8]) -> Vec<u8> {
    let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
    for (name, value) in echo::headers() {
        response.extend_from_slice(name.as_str().as_bytes());
        response.extend_from_slice(b": ");
        response.extend_from_slice(value.as_bytes());
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    response.extend_from_slice(body);
    response
}
