//! The recording upstream ([`RecordingUpstream`]): the protected service's stand-in
//! (tool-gate), in-process on loopback. It answers every request with a small JSON body,
//! records what reached it by path (so a report can show that a rejected request never got
//! there, which key id the gate said verified it, and the target and headers the gate
//! forwarded), sleeps on `/slow...?ms=N` (any path under `/slow`: upstream timeouts, requests
//! held during a drain), and can be stopped and restarted on the same port (the upstream-down
//! scenario): stopping closes every open connection too, so the gate's pooled connections see
//! the outage at once. [`RecordingUpstream::start_malformed`] starts one that answers
//! `/malformed/...` with broken HTTP/1.1 framing instead ([`Malformed`]), and tells which
//! requests came on a connection that had carried such an answer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use gate::protocol;

/// Longest sleep `/slow` honours, so a stray request cannot hold a task for long.
const MAX_SLOW: Duration = Duration::from_secs(30);

/// What reached the upstream on one path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Requests received on the path.
    pub count: usize,
    /// `X-Gate-Verified-Key-Id` of the latest one (absent for report-only or exempt traffic).
    pub verified_key_id: Option<String>,
    /// The latest one's request target as it arrived (origin form: path and query).
    pub target: String,
    /// The latest one's headers, as the gate forwarded them.
    pub headers: HeaderMap,
}

/// Everything that reached the upstream: per path, and in order with the connection each
/// request came on (numbered from 0 in accept order). It grows with every request, which suits
/// runs of minutes at a few hundred requests a second.
#[derive(Debug, Default)]
struct Log {
    paths: HashMap<String, Seen>,
    arrivals: Vec<(usize, String)>,
}

impl Log {
    fn note(&mut self, connection: usize, path: &str, target: String, headers: &HeaderMap) {
        let seen = self.paths.entry(path.to_owned()).or_default();
        seen.count += 1;
        seen.verified_key_id = headers
            .get(protocol::VERIFIED_KEY_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.target = target;
        seen.headers = headers.clone();
        self.arrivals.push((connection, path.to_owned()));
    }
}

type Record = Arc<Mutex<Log>>;

/// How the upstream frames its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// hyper's HTTP/1.1 and HTTP/2 server: every answer well-formed.
    Clean,
    /// A hand-written HTTP/1.1 loop that answers paths under `/malformed/` with a broken
    /// response ([`Malformed`]) and everything else with a clean one, keeping the connection
    /// open either way, so a client that reuses it after a broken answer is seen doing so.
    Raw,
}

/// The broken answers of an upstream started with [`RecordingUpstream::start_malformed`], by path
/// `/malformed/<name>`: each one a framing error an HTTP/1.1 client must not pass on as a
/// clean response, nor recover from on the same connection.
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
    /// Every kind, in the order the reports list them.
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

/// The recording upstream: a running (or stopped) stand-in for the protected service that
/// remembers, per path, what reached it.
#[derive(Debug)]
pub struct RecordingUpstream {
    addr: SocketAddr,
    record: Record,
    framing: Framing,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl RecordingUpstream {
    /// Bind 127.0.0.1 on a free port and serve.
    pub async fn start() -> std::io::Result<RecordingUpstream> {
        RecordingUpstream::start_framed(Framing::Clean).await
    }

    /// An upstream that answers `/malformed/<name>` ([`Malformed::path`]) with that broken
    /// response and every other path with a clean `200` (HTTP/1.1 only; no `/slow`).
    pub async fn start_malformed() -> std::io::Result<RecordingUpstream> {
        RecordingUpstream::start_framed(Framing::Raw).await
    }

    async fn start_framed(framing: Framing) -> std::io::Result<RecordingUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut upstream = RecordingUpstream {
            addr,
            record: Arc::default(),
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

    /// What reached `path` so far.
    pub fn seen(&self, path: &str) -> Seen {
        self.log().paths.get(path).cloned().unwrap_or_default()
    }

    /// Requests received so far, on every path.
    pub fn total(&self) -> usize {
        self.log().arrivals.len()
    }

    /// Requests that arrived on a connection after a request for `path` had been answered on
    /// it: a client that reused the connection.
    pub fn reused_after(&self, path: &str) -> usize {
        let log = self.log();
        let mut tainted = std::collections::HashSet::new();
        let mut reused = 0;
        for (connection, arrived) in &log.arrivals {
            if tainted.contains(connection) {
                reused += 1;
            }
            if arrived == path {
                tainted.insert(*connection);
            }
        }
        reused
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        // A poisoned lock means a connection task panicked while recording: a harness bug.
        self.record.lock().expect("upstream record lock")
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&self.record),
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
    record: Record,
    framing: Framing,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    let mut accepted_so_far = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let connection = accepted_so_far;
                accepted_so_far += 1;
                let record = Arc::clone(&record);
                if framing == Framing::Raw {
                    connections.spawn(serve_raw(stream, record, connection));
                    continue;
                }
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        respond(request, Arc::clone(&record), connection)
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

async fn respond(
    request: Request<Incoming>,
    record: Record,
    connection: usize,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    // Read the whole body, as a real service would, before answering.
    let received = body
        .collect()
        .await
        .map(|c| c.to_bytes().len())
        .unwrap_or(0);
    record.lock().expect("upstream record lock").note(
        connection,
        parts.uri.path(),
        parts.uri.to_string(),
        &parts.headers,
    );
    if parts.uri.path().starts_with("/slow") {
        let millis = parts
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("ms=")))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(millis).min(MAX_SLOW)).await;
    }
    let body = format!(r#"{{"ok":true,"received_bytes":{received}}}"#);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The raw loop's answer to every path that is not a [`Malformed`] one.
const CLEAN_RAW: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

/// Largest request head the raw loop reads.
const MAX_RAW_HEAD: usize = 64 * 1024;

/// The [`Framing::Raw`] loop: read a request head and a `Content-Length` body, record it,
/// answer, and go on reading the same connection until the client closes it.
async fn serve_raw(mut stream: tokio::net::TcpStream, record: Record, connection: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = Vec::new();
    loop {
        let (path, target, headers, length, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut request = httparse::Request::new(&mut slots);
            if let Ok(httparse::Status::Complete(len)) = request.parse(&buffer) {
                let target = request.path.unwrap_or("/").to_owned();
                let path = target.split('?').next().unwrap_or("/").to_owned();
                let mut headers = HeaderMap::new();
                for header in request.headers.iter() {
                    let name = http::HeaderName::from_bytes(header.name.as_bytes());
                    let value = HeaderValue::from_bytes(header.value);
                    if let (Ok(name), Ok(value)) = (name, value) {
                        headers.append(name, value);
                    }
                }
                let length = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                break (path, target, headers, length, len);
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 && buffer.len() < MAX_RAW_HEAD => {
                    buffer.extend_from_slice(&chunk[..n]);
                }
                _ => return,
            }
        };
        while buffer.len() < head_len + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        buffer.drain(..head_len + length);
        record
            .lock()
            .expect("upstream record lock")
            .note(connection, &path, target, &headers);
        let answer = Malformed::of_path(&path).map_or(CLEAN_RAW, Malformed::response);
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Call, Http};
    use http::Method;

    #[tokio::test]
    async fn records_stops_refuses_and_restarts() {
        let mut upstream = RecordingUpstream::start().await.expect("start");
        let http = Http::new(Duration::from_secs(5));
        let call = Call::new(Method::GET, "/a?x=1").header("x-gate-verified-key-id", "k2");
        let reply = http.call(upstream.addr(), &call).await.expect("answers");
        assert_eq!(reply.status, 200);
        let seen = upstream.seen("/a");
        assert_eq!(seen.count, 1);
        assert_eq!(seen.verified_key_id.as_deref(), Some("k2"));
        assert_eq!(seen.target, "/a?x=1");
        assert_eq!(upstream.total(), 1);

        upstream.stop().await;
        assert!(http.call(upstream.addr(), &call).await.is_err());
        upstream.restart().await.expect("restart");
        let reply = http
            .call(upstream.addr(), &call)
            .await
            .expect("answers again");
        assert_eq!(reply.status, 200);
        assert_eq!(upstream.seen("/a").count, 2);
    }

    #[tokio::test]
    async fn malformed_answers_and_reuse_after_them() {
        use crate::client::RawConnection;
        let upstream = RecordingUpstream::start_malformed().await.expect("start");
        let mut connection = RawConnection::open(upstream.addr()).await.expect("connect");
        let within = Duration::from_secs(5);
        let clean = Call::new(Method::POST, "/clean?a=1").body("xy");
        connection
            .send(&clean.wire(upstream.addr()).bytes())
            .await
            .expect("send");
        let reply = connection.read_reply(within).await.expect("clean answer");
        assert_eq!((reply.status.as_u16(), &reply.body[..]), (200, &b"{}"[..]));

        let broken = Call::new(Method::GET, Malformed::Trailer.path());
        connection
            .send(&broken.wire(upstream.addr()).bytes())
            .await
            .expect("send");
        let err = connection.read_reply(within).await.expect_err("broken");
        assert!(
            err.contains("no colon here") || err.contains("chunk"),
            "{err}"
        );
        assert_eq!(upstream.seen("/clean").target, "/clean?a=1");
        assert_eq!(upstream.reused_after(Malformed::Trailer.path()), 0);

        // A second connection for the broken path, then a clean request on it: reuse.
        let mut again = RawConnection::open(upstream.addr()).await.expect("connect");
        let bytes = Call::new(Method::GET, Malformed::ChunkSize.path())
            .wire(upstream.addr())
            .bytes();
        again.send(&bytes).await.expect("send");
        assert!(again.read_reply(within).await.is_err(), "`3 zz` is no size");
        again
            .send(&clean.wire(upstream.addr()).bytes())
            .await
            .expect("send");
        let deadline = std::time::Instant::now() + within;
        while upstream.total() < 4 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(upstream.reused_after(Malformed::ChunkSize.path()), 1);
        assert_eq!(upstream.total(), 4);
    }
}
