//! Connection-level limits end to end, over real sockets: connections that never complete a
//! request head, idle connections, HTTP/2 keep-alive, the connection cap, request-head limits
//! and the body budget (docs/operations.md, "Limits and timeouts"). Raw bytes where a client
//! library would be too polite to misbehave.

mod support;

use std::time::Duration;

use http::StatusCode;
use runbook::upstream::RecordingUpstream;
use support::{SECRET, TestGate, send, sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Read until the gate closes the connection (EOF or reset); `false` if it is still open after
/// `within`. Whatever the gate sends on the way is read and ignored (never acknowledged).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream_id.to_be_bytes());
    out.extend(payload);
    out
}

/// The next HTTP/2 frame: type, flags, stream id and payload.
async fn read_frame(stream: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    try_read_frame(stream).await.expect("a frame")
}

/// [`read_frame`], or `None` once the connection is closed.
async fn try_read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream_id, payload))
}

/// An HPACK block for `GET <path>` over http with `:authority: x` (literals, no Huffman).
fn get_headers(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http (static table)
    block.push(0x04); // :path, literal without indexing, name from the static table
    block.push(u8::try_from(path.len()).expect("short path"));
    block.extend(path.as_bytes());
    block.extend([0x01, 0x01, b'x']); // :authority x
    block
}

#[tokio::test]
async fn connections_without_a_request_head_are_closed_whatever_the_protocol() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let openings: [(&str, &[u8]); 4] = [
        ("nothing", b""),
        ("one byte", b"P"),
        ("the HTTP/2 preface alone", PREFACE),
        (
            "the preface and SETTINGS",
            &[PREFACE, &frame(0x4, 0, 0, &[])].concat(),
        ),
    ];
    let mut streams = Vec::new();
    for (what, bytes) in openings {
        let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        streams.push((what, stream));
    }
    for (what, mut stream) in streams {
        assert!(
            closed_within(&mut stream, Duration::from_secs(4)).await,
            "a connection that sent {what} is still open"
        );
    }
    assert_eq!(upstream.total(), 0);
}

#[tokio::test]
async fn idle_http1_connections_are_closed_after_the_idle_timeout() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_HEADER_READ_TIMEOUT_SECS", "30"),
            ("GATE_IDLE_TIMEOUT_SECS", "1"),
            ("GATE_UNSIGNED_PATHS", "/open"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
    stream
        .write_all(b"GET /open HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(
        closed_within(&mut stream, Duration::from_secs(4)).await,
        "an idle keep-alive connection is still open"
    );
}

/// Write `bytes` and read one whole response (its head and a `content-length` body); the status
/// line, or `None` if the gate closed the connection first.
async fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> Option<String> {
    stream.write_all(bytes).await.ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("a length"));
                if reply.len() >= end + 4 + length {
                    return Some(head.lines().next().unwrap_or_default().to_owned());
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("a response or a close within 5 s")
}

#[tokio::test]
async fn an_idle_http1_connection_outlasts_the_header_timeout_and_serves_the_next_request() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_HEADER_READ_TIMEOUT_SECS", "1"),
            ("GATE_IDLE_TIMEOUT_SECS", "5"),
            ("GATE_UNSIGNED_PATHS", "/open"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
    // A POST whose body arrives after its head: body bytes are not the next request's head.
    let head = b"POST /open HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n";
    stream.write_all(head).await.expect("head");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = exchange(&mut stream, b"hello").await;
    assert_eq!(status.as_deref(), Some("http/1.1 200 ok"));
    // Idle for longer than the header-read timeout, well within the idle timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = exchange(&mut stream, b"GET /open HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(
        status.as_deref(),
        Some("http/1.1 200 ok"),
        "the kept-alive connection serves its next request"
    );
    assert_eq!(upstream.total(), 2);
}

#[tokio::test]
async fn a_slow_head_on_a_reused_http1_connection_is_closed_after_the_header_timeout() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_HEADER_READ_TIMEOUT_SECS", "1"),
            ("GATE_IDLE_TIMEOUT_SECS", "30"),
            ("GATE_UNSIGNED_PATHS", "/open"),
        ],
    )
    .await;
    let get = b"GET /open HTTP/1.1\r\nhost: x\r\n\r\n";
    for pause_ms in [0, 1500] {
        let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
        let status = exchange(&mut stream, get).await;
        assert_eq!(status.as_deref(), Some("http/1.1 200 ok"));
        // Straight away, or after an idle pause longer than the header-read timeout: one byte
        // of the next head and nothing more.
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        stream.write_all(b"G").await.expect("one byte");
        assert!(
            closed_within(&mut stream, Duration::from_secs(3)).await,
            "a head started {pause_ms} ms after a response is still open 3 s later"
        );
    }
    // Dripping the head a byte at a time does not move the deadline.
    let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
    let status = exchange(&mut stream, get).await;
    assert_eq!(status.as_deref(), Some("http/1.1 200 ok"));
    let started = tokio::time::Instant::now();
    let mut drip = b"GET /open HTTP/1.1\r\nx-slow: "
        .iter()
        .chain([b'a'; 64].iter());
    let mut closed = false;
    while !closed && started.elapsed() < Duration::from_secs(3) {
        let byte = *drip.next().expect("bytes enough for 3 s");
        closed = stream.write_all(&[byte]).await.is_err()
            || closed_within(&mut stream, Duration::from_millis(200)).await;
    }
    assert!(
        closed,
        "a head dripped a byte every 200 ms is still open after 3 s"
    );
    assert_eq!(upstream.total(), 3, "no partial head reached the upstream");
}

#[tokio::test]
async fn idle_http2_connections_get_goaway_and_close() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_HEADER_READ_TIMEOUT_SECS", "30"),
            ("GATE_IDLE_TIMEOUT_SECS", "1"),
            ("GATE_UNSIGNED_PATHS", "/open"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(0x4, 0, 0, &[]));
    opening.extend(frame(0x1, 0x5, 1, &get_headers("/open")));
    stream.write_all(&opening).await.expect("write");
    // Read the answer as a polite client would, acknowledging whatever asks for it, until
    // the gate closes the connection.
    let goaway = tokio::time::timeout(Duration::from_secs(4), async {
        let mut goaway = None;
        loop {
            let Some((kind, flags, _, payload)) = try_read_frame(&mut stream).await else {
                return goaway.expect("GOAWAY before the close");
            };
            match kind {
                0x4 if flags & 1 == 0 => {
                    stream.write_all(&frame(0x4, 1, 0, &[])).await.expect("ack");
                }
                0x6 if flags & 1 == 0 => {
                    stream
                        .write_all(&frame(0x6, 1, 0, &payload))
                        .await
                        .expect("pong");
                }
                0x7 => goaway = Some(payload),
                _ => {}
            }
        }
    })
    .await
    .expect("GOAWAY and a close after the idle timeout");
    let error_code = u32::from_be_bytes(goaway[4..8].try_into().expect("4 bytes"));
    assert_eq!(error_code, 0, "NO_ERROR: a graceful close");
    assert_eq!(upstream.total(), 1);
}

#[tokio::test]
async fn idle_http2_connections_are_left_to_the_idle_timeout_whatever_the_client_sends() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_HEADER_READ_TIMEOUT_SECS", "1"),
            ("GATE_IDLE_TIMEOUT_SECS", "5"),
            ("GATE_UNSIGNED_PATHS", "/open"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(0x4, 0, 0, &[]));
    opening.extend(frame(0x1, 0x5, 1, &get_headers("/open")));
    stream.write_all(&opening).await.expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Pings between requests are not a request head: no header-read deadline starts.
    stream
        .write_all(&frame(0x6, 0, 0, &[0; 8]))
        .await
        .expect("ping");
    let mut goaway = false;
    let _ = tokio::time::timeout(Duration::from_millis(2500), async {
        while let Some((kind, flags, _, _)) = try_read_frame(&mut stream).await {
            goaway |= kind == 0x7;
            if kind == 0x4 && flags & 1 == 0 {
                stream.write_all(&frame(0x4, 1, 0, &[])).await.expect("ack");
            }
        }
        goaway = true;
    })
    .await;
    assert!(
        !goaway,
        "an HTTP/2 connection idle for less than the idle timeout was closed"
    );
    assert_eq!(upstream.total(), 1);
}

#[tokio::test]
async fn http2_keepalive_closes_a_peer_that_stops_answering_pings() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_HTTP2_KEEPALIVE_SECS", "1"),
            ("GATE_UNSIGNED_PATHS", "/hold"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(0x4, 0, 0, &[]));
    // A request the upstream holds: the stream stays open, so only keep-alive can end it.
    opening.extend(frame(0x1, 0x5, 1, &get_headers("/hold")));
    stream.write_all(&opening).await.expect("write");
    while upstream.total() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "a peer that never answers a ping is still connected"
    );
}

#[tokio::test]
async fn http2_settings_bound_streams_headers_and_windows() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(0x4, 0, 0, &[]));
    stream.write_all(&opening).await.expect("write");
    let (kind, _, _, payload) = read_frame(&mut stream).await;
    assert_eq!(kind, 0x4, "the server's SETTINGS come first");
    let settings: std::collections::HashMap<u16, u32> = payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect();
    assert_eq!(settings.get(&0x3), Some(&64), "MAX_CONCURRENT_STREAMS");
    assert_eq!(
        settings.get(&0x4),
        Some(&(256 * 1024)),
        "INITIAL_WINDOW_SIZE"
    );
    assert_eq!(settings.get(&0x6), Some(&32768), "MAX_HEADER_LIST_SIZE");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_MAX_CONNECTIONS", "2"),
            ("GATE_HEADER_READ_TIMEOUT_SECS", "30"),
            ("GATE_UNSIGNED_PATHS", "/open"),
        ],
    )
    .await;
    let mut first = TcpStream::connect(gate.addr).await.expect("connect");
    let _second = TcpStream::connect(gate.addr).await.expect("connect");
    // With more than one worker, connections are accepted in no particular order: the third
    // is opened once the first two hold their slots.
    for _ in 0..500 {
        if gate.metric("sig_gate_connections_open").await == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut third = TcpStream::connect(gate.addr).await.expect("connect");
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "the connection over the cap is still open"
    );
    assert_eq!(gate.metric("sig_gate_connections_refused_total").await, 1.0);
    // The admin listener is not capped; its connection is not counted.
    assert_eq!(gate.metric("sig_gate_connections_open").await, 2.0);

    // A slot frees when a connection ends: new clients are served again.
    first.shutdown().await.expect("shutdown");
    drop(first);
    let mut open = 2.0;
    for _ in 0..200 {
        open = gate.metric("sig_gate_connections_open").await;
        if open < 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open, 1.0);
    let reply = send(gate.addr, "GET", "/open", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// Send a raw HTTP/1.1 request head and read the answer's status line; `None` if the gate
/// closed without one.
async fn raw_status(gate: &TestGate, head: &[u8]) -> (Option<String>, TcpStream) {
    let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
    // The gate may answer and close before the whole head is written.
    let _ = stream.write_all(head).await;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text.lines().next().map(|l| l.to_owned());
    (status.filter(|s| s.starts_with("HTTP/")), stream)
}

/// A signed GET head with one extra header `x-pad` of `pad` bytes and `extra` more fields.
fn signed_head(path: &str, pad: usize, extra: usize) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: x\r\n");
    for (name, value) in sign(SECRET, "current", "GET", path, b"") {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if pad > 0 {
        head.push_str(&format!("x-pad: {}\r\n", "a".repeat(pad)));
    }
    for i in 0..extra {
        head.push_str(&format!("x-extra-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn http1_heads_over_the_limit_get_431_and_a_closed_connection() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;

    // Just under the default 32 KiB: forwarded.
    let (status, _) = raw_status(&gate, &signed_head("/", 30_000, 0)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(upstream.total(), 1);

    for (what, head) in [
        ("a 40 KB header", signed_head("/", 40_000, 0)),
        ("a 200 KB header", signed_head("/", 200_000, 0)),
        ("101 header fields", signed_head("/", 0, 101 - 5)),
    ] {
        let (status, mut stream) = raw_status(&gate, &head).await;
        assert_eq!(
            status.as_deref(),
            Some("HTTP/1.1 431 Request Header Fields Too Large"),
            "{what}"
        );
        assert!(
            closed_within(&mut stream, Duration::from_secs(2)).await,
            "{what}: connection closed"
        );
    }
    assert_eq!(upstream.total(), 1, "nothing more reached the upstream");
}

#[tokio::test]
async fn a_limit_below_the_http1_buffer_is_enforced_too() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_MAX_HEADER_BYTES", "1024")]).await;
    let (status, _) = raw_status(&gate, &signed_head("/", 200, 0)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    let (status, mut stream) = raw_status(&gate, &signed_head("/", 2000, 0)).await;
    assert_eq!(
        status.as_deref(),
        Some("HTTP/1.1 431 Request Header Fields Too Large")
    );
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    assert_eq!(upstream.total(), 1);
}

/// Send one signed GET over HTTP/2 (hyper's client) with `extra` more header fields, the
/// first of them padded to `pad` bytes; the status, or the stream error.
async fn h2_status(gate: &TestGate, pad: usize, extra: usize) -> Result<StatusCode, String> {
    let stream = TcpStream::connect(gate.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            // The client's own limit on what it sends is the peer's advertised one; lift it, so the
            // gate is the one to refuse.
            .max_header_list_size(16 << 20)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method("GET")
        .uri("http://tool-gate.internal/h2");
    for (name, value) in sign(SECRET, "current", "GET", "/h2", b"") {
        request = request.header(name, value);
    }
    if pad > 0 {
        request = request.header("x-pad", "a".repeat(pad));
    }
    for i in 0..extra {
        request = request.header(format!("x-extra-{i}"), i.to_string());
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    match sender.send_request(request).await {
        Ok(response) => Ok(response.status()),
        Err(err) => Err(format!("{err:?}")),
    }
}

#[tokio::test]
async fn http2_heads_over_the_limit_are_refused_with_431() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    assert_eq!(h2_status(&gate, 20_000, 0).await, Ok(StatusCode::OK));
    assert_eq!(upstream.total(), 1);
    for (what, pad, extra) in [("a 40 KB header", 40_000, 0), ("101 fields", 0, 101 - 4)] {
        let status = h2_status(&gate, pad, extra).await;
        assert_eq!(
            status,
            Ok(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            "{what}"
        );
    }
    assert_eq!(upstream.total(), 1, "nothing more reached the upstream");
}

#[tokio::test]
async fn bodies_past_the_budget_get_503_at_once() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_MAX_BODY_BYTES", "1000"),
            ("GATE_MAX_BUFFERED_BODY_BYTES", "2000"),
            ("GATE_BODY_READ_TIMEOUT_SECS", "30"),
        ],
    )
    .await;
    let body = vec![b'x'; 1000];
    let head = |body: &[u8]| {
        let mut head = format!(
            "POST /t HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in sign(SECRET, "current", "POST", "/t", body) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    };
    // Two slow clients: the head, then part of the body once the gate waits for it.
    let mut slow = Vec::new();
    for part in [600, 600] {
        let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
        stream.write_all(&head(&body)).await.expect("head");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(&body[..part]).await.expect("part");
        slow.push((stream, part));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third: its 900 bytes would take the budget past 2000.
    let mut third = TcpStream::connect(gate.addr).await.expect("connect");
    third.write_all(&head(&body)).await.expect("head");
    tokio::time::sleep(Duration::from_millis(100)).await;
    third.write_all(&body[..900]).await.expect("part");
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut reply))
        .await
        .expect("refused at once, not after the body timeout")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.ends_with(r#"{"error":"request body budget exhausted"}"#),
        "{reply}"
    );
    assert_eq!(gate.metric("sig_gate_body_budget_refused_total").await, 1.0);
    assert_eq!(
        gate.metric(r#"sig_gate_requests_total{outcome="rejected"}"#)
            .await,
        1.0
    );

    // The slow clients finish: forwarded, and the budget they held is free again.
    for (mut stream, part) in slow {
        stream.write_all(&body[part..]).await.expect("rest");
        let mut reply = vec![0u8; 1024];
        let n = stream.read(&mut reply).await.expect("read");
        assert!(reply[..n].starts_with(b"HTTP/1.1 200"));
    }
    let mut fourth = TcpStream::connect(gate.addr).await.expect("connect");
    fourth.write_all(&head(&body)).await.expect("head");
    tokio::time::sleep(Duration::from_millis(100)).await;
    fourth.write_all(&body).await.expect("body");
    let mut reply = vec![0u8; 1024];
    let n = fourth.read(&mut reply).await.expect("read");
    assert!(
        reply[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply[..n])
    );
    assert_eq!(upstream.total(), 3);
}

#[tokio::test]
async fn one_http2_connection_holds_at_most_its_share_of_the_body_budget() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    // A share of 4 x 1000 bytes per connection; the process budget (64 MiB) is far away.
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_MAX_BODY_BYTES", "1000"),
            ("GATE_BODY_READ_TIMEOUT_SECS", "30"),
        ],
    )
    .await;
    let stream = TcpStream::connect(gate.addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    let body = vec![b'x'; 1000];
    // Five streams on one connection, each with a body that arrives slowly.
    let mut streams = Vec::new();
    for _ in 0..5 {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut request = http::Request::builder()
            .method("POST")
            .uri("http://tool-gate.internal/t")
            .header("content-length", "1000");
        for (name, value) in sign(SECRET, "current", "POST", "/t", &body) {
            request = request.header(name, value);
        }
        let request = request
            .body(runbook::upstream::EventStream(rx))
            .expect("request");
        let mut sender = sender.clone();
        let response = tokio::spawn(async move { sender.send_request(request).await });
        streams.push((tx, response));
    }
    // Let the gate take every head and start waiting for the bodies.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 900 bytes on each of four streams: 3600 of the 4000.
    for (tx, _) in &streams[..4] {
        tx.send(bytes::Bytes::copy_from_slice(&body[..900]))
            .await
            .expect("send");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 900 more on the fifth would pass the connection's share: refused at once.
    let (tx, response) = streams.pop().expect("five streams");
    tx.send(bytes::Bytes::copy_from_slice(&body[..900]))
        .await
        .expect("send");
    let response = tokio::time::timeout(Duration::from_secs(3), response)
        .await
        .expect("refused at once, not after the body timeout")
        .expect("task")
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(gate.metric("sig_gate_body_budget_refused_total").await, 1.0);

    // The other four finish and are forwarded.
    for (tx, response) in streams {
        tx.send(bytes::Bytes::copy_from_slice(&body[900..]))
            .await
            .expect("send");
        drop(tx);
        let response = response.await.expect("task").expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(upstream.total(), 4);
}
