//! The request path's trust boundary end to end, over real sockets on 127.0.0.1: a replay whose
//! window closes while its body arrives, headers a client's `Connection` header cannot remove,
//! headers the gate owns in any spelling, and the translation of HTTP/1.1 absolute-form and
//! HTTP/2 requests into the origin-form HTTP/1.1 the upstream receives (docs/protocol.md,
//! "Forwarding").

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use runbook::upstream::RecordingUpstream;
use support::{SECRET, TestGate, send, sign, sign_at};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn series(metric: &str, label: &str, value: &str) -> String {
    format!("{metric}{{{label}=\"{value}\"}}")
}

const REJECTED: &str = "sig_gate_requests_total{outcome=\"rejected\"}";

/// A request head in raw bytes: the request line, `lines`, the signature headers, `Connection:
/// close` and the body's length, then the empty line.
fn raw_head(line: &str, lines: &[&str], signature: &[(&str, String)], body_len: usize) -> String {
    let mut head = format!("{line}\r\n");
    for l in lines {
        head.push_str(l);
        head.push_str("\r\n");
    }
    for (name, value) in signature {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "connection: close\r\ncontent-length: {body_len}\r\n\r\n"
    ));
    head
}

/// Write `request` on a fresh connection and read the gate's whole answer (it closes the
/// connection: every raw request says `Connection: close`).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> &str {
    answer.get(9..12).unwrap_or(answer)
}

/// Sleep to just past the start of the next second; return that second (Unix time). The
/// caller then has about 0.95 s before the clock moves on.
async fn next_second() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let wait = Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(wait + Duration::from_millis(30)).await;
    gate::clock::unix_now()
}

#[tokio::test]
async fn a_replay_whose_window_closes_while_its_body_arrives_is_stale() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    // A small cache is one shard: the fresh request's admission sweeps the original's nonce.
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_CLOCK_SKEW_SECS", "2"),
            ("GATE_NONCE_CACHE_CAPACITY", "1000"),
        ],
    )
    .await;
    let body = br#"{"transfer":100}"#;
    let s = next_second().await;
    // Signed a second ago: inside the window until the clock reads s + 1.
    let original = sign_at(SECRET, "current", "POST", "/pay", body, s - 1);
    let reply = send(gate.addr, "POST", "/pay", &original, &body[..]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // The replay's head arrives inside the window; its last body bytes are held back.
    let mut replay = TcpStream::connect(gate.addr).await.expect("connect");
    let head = raw_head("POST /pay HTTP/1.1", &["host: x"], &original, body.len());
    replay.write_all(head.as_bytes()).await.expect("head");
    replay
        .write_all(&body[..body.len() - 3])
        .await
        .expect("body");

    // Past the window: a fresh request's admission sweeps the original nonce.
    let wait = (s + 2) as f64 + 0.05 - sig_gate_now_f64();
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    let fresh = sign(SECRET, "current", "POST", "/pay", body);
    let reply = send(gate.addr, "POST", "/pay", &fresh, &body[..]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    replay
        .write_all(&body[body.len() - 3..])
        .await
        .expect("body end");
    let answer = read_answer(&mut replay).await;
    assert_eq!(status_of(&answer), "401", "{answer}");
    assert!(answer.contains(r#""reason":"stale_timestamp""#), "{answer}");
    assert_eq!(upstream.total(), 2, "the replay never reached the upstream");
    assert_eq!(
        gate.metric(&series(
            "sig_gate_invalid_request_signature_total",
            "reason",
            "stale_timestamp"
        ))
        .await,
        1.0
    );
    assert_eq!(gate.metric(REJECTED).await, 1.0);
}

fn sig_gate_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[tokio::test]
async fn a_clients_connection_header_cannot_remove_headers_the_gate_sets() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let body = "{}";
    let mut headers = sign(SECRET, "current", "POST", "/t", body.as_bytes());
    headers.push(("X-Forwarded-For", "203.0.113.7".into()));
    headers.push(("X-Request-Id", "trace-1".into()));
    headers.push((
        "Connection",
        "X-Forwarded-For, X-Request-Id, Host, Content-Length, X-Gate-Verified-Key-Id, \
         X-Gate-Signature, X-Gate-Nonce, X-Gate-Timestamp, X-Gate-Key-Id, X-Hop"
            .into(),
    ));
    headers.push(("X-Hop", "dropped".into()));
    let reply = send(gate.addr, "POST", "/t", &headers, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = upstream.arrivals();
    let h = &seen[0].headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-request-id"], "trace-1");
    assert_eq!(h["host"], "tool-gate.internal");
    assert_eq!(h["content-length"], "2");
    assert_eq!(h["x-gate-verified-key-id"], "current");
    for (name, value) in &headers[..4] {
        assert_eq!(h[*name], value.as_str(), "{name} forwarded");
    }
    assert!(!h.contains_key("x-hop"), "other nominated headers still go");
    assert!(!h.contains_key("connection"));

    // Without a client copy: the gate's own X-Forwarded-For and generated X-Request-Id.
    let mut headers = sign(SECRET, "current", "GET", "/t", b"");
    headers.push(("Connection", "x-forwarded-for, x-request-id, host".into()));
    let reply = send(gate.addr, "GET", "/t", &headers, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = upstream.arrivals();
    let h = &seen[1].headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h.contains_key("x-request-id"));
    assert_eq!(h["host"], "tool-gate.internal");
}

/// Header names that read as one of the gate's own (or the address headers it drops) once `_`
/// is read as `-`, as CGI and WSGI servers read them.
const SPOOFS: [(&str, &str); 10] = [
    // Client copies of the gate's own headers are removed before verification: two of them
    // are not a repeated `X-Gate-*` header (malformed), they are simply gone.
    ("X-Gate-Verified-Key-Id", "previous"),
    ("x-gate-verified-key-id", "forged"),
    ("X_Gate_Verified_Key_Id", "current"),
    ("x-gate-verified_key-id", "current"),
    ("X-Gate-Verified-Caller", "langgraph"),
    ("X_GATE_VERIFIED_CALLER", "langgraph"),
    ("Forwarded", "for=198.51.100.1"),
    ("X-Real-IP", "198.51.100.2"),
    ("X_Real_IP", "198.51.100.3"),
    ("X_Forwarded_For", "198.51.100.4"),
];

/// True when `name`, with `_` read as `-`, is `wanted`.
fn reads_as(name: &str, wanted: &str) -> bool {
    name.len() == wanted.len()
        && name
            .bytes()
            .zip(wanted.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

fn assert_no_spoof(headers: &http::HeaderMap, verified_as: Option<&str>) {
    for name in headers.keys() {
        let name = name.as_str();
        for owned in [
            "x-gate-verified-key-id",
            "x-gate-verified-caller",
            "forwarded",
            "x-real-ip",
        ] {
            if reads_as(name, owned) {
                // Only the gate's own statements, in its own spelling, on a verified request.
                assert!(
                    owned.starts_with("x-gate-verified-") && name == owned && verified_as.is_some(),
                    "{name} reached the upstream"
                );
            }
        }
        if reads_as(name, "x-forwarded-for") {
            assert_eq!(name, "x-forwarded-for", "only the gate's spelling");
        }
    }
    assert_eq!(
        headers
            .get("x-gate-verified-key-id")
            .map(|v| v.to_str().expect("ASCII")),
        verified_as
    );
    // The environment's secret's caller, whatever the client claimed.
    assert_eq!(
        headers
            .get("x-gate-verified-caller")
            .map(|v| v.to_str().expect("ASCII")),
        verified_as.map(|_| "shared")
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn the_gates_own_headers_are_stripped_in_every_spelling_on_every_path() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_UNSIGNED_PATHS", "/open")]).await;
    let report_only = TestGate::start(&upstream.url(), &[("REQUIRE_SIGNATURE", "false")]).await;
    let spoofs: Vec<(&str, String)> = SPOOFS.iter().map(|(n, v)| (*n, v.to_string())).collect();

    // Verified, exempt, report-only unsigned, report-only verified.
    let mut verified = sign(SECRET, "current", "GET", "/t", b"");
    verified.extend(spoofs.iter().cloned());
    for (addr, target, headers, verified_as) in [
        (gate.addr, "/t", verified.clone(), Some("current")),
        (gate.addr, "/open", spoofs.clone(), None),
        (report_only.addr, "/t", spoofs.clone(), None),
        (report_only.addr, "/t", verified.clone(), Some("current")),
    ] {
        let reply = send(addr, "GET", target, &headers, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{target}: {}", reply.text());
        let seen = upstream.arrivals();
        let last = seen.last().expect("forwarded");
        assert_no_spoof(&last.headers, verified_as);
    }
}

#[tokio::test]
async fn absolute_form_is_forwarded_in_origin_form_with_the_uri_authority_as_host() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    for (uri, path_query, host) in [
        ("http://tool-gate.example?a=1", "/?a=1", "tool-gate.example"),
        ("http://tool-gate.example", "/", "tool-gate.example"),
        (
            "http://h.example:8081/x/a%2Fb?q=1&q=2",
            "/x/a%2Fb?q=1&q=2",
            "h.example:8081",
        ),
    ] {
        let signature = sign(SECRET, "current", "GET", path_query, b"");
        let head = raw_head(
            &format!("GET {uri} HTTP/1.1"),
            &["Host: client-said.example"],
            &signature,
            0,
        );
        let answer = raw(gate.addr, head.as_bytes()).await;
        assert_eq!(status_of(&answer), "200", "{uri}: {answer}");
        let seen = upstream.arrivals();
        let last = seen.last().expect("forwarded");
        assert_eq!(last.target, path_query, "{uri}");
        assert_eq!(last.headers["host"], host, "{uri}");
        assert_eq!(last.headers.get_all("host").iter().count(), 1);
    }
}

#[tokio::test]
async fn more_than_one_host_is_refused_with_400() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_UNSIGNED_PATHS", "/open")]).await;
    let mut headers = sign(SECRET, "current", "GET", "/t", b"");
    headers.push(("Host", "other.example".into()));
    for (target, headers) in [("/t", headers), ("/open", vec![("Host", "b".to_string())])] {
        let reply = send(gate.addr, "GET", target, &headers, "").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": "malformed request"})
        );
    }
    assert_eq!(upstream.total(), 0);
    assert_eq!(gate.metric(REJECTED).await, 2.0);
}

/// An HTTP/2 (prior knowledge) connection to the gate.
async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

fn h2_request(
    method: &str,
    uri: &str,
    signed_target: &str,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::builder().method(method).uri(uri);
    for (name, value) in sign(SECRET, "current", method, signed_target, b"") {
        request = request.header(name, value);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

async fn h2_status(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> (StatusCode, Bytes) {
    let response = sender.send_request(request).await.expect("response");
    support::status_and_body(response).await
}

#[tokio::test]
async fn http2_host_must_agree_with_authority_and_cookies_are_joined() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let mut sender = h2(gate.addr).await;

    // A `host` that names another entity than `:authority`: malformed.
    let request = h2_request(
        "GET",
        "http://tool-gate.internal/t",
        "/t",
        &[("host", "evil.example")],
    );
    let (status, body) = h2_status(&mut sender, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
    assert_eq!(upstream.total(), 0);
    assert_eq!(gate.metric(REJECTED).await, 1.0);

    // The same entity (host names are case-insensitive): `:authority` goes upstream as Host.
    let request = h2_request(
        "GET",
        "http://tool-gate.internal/t",
        "/t",
        &[
            ("host", "Tool-Gate.Internal"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ],
    );
    let (status, body) = h2_status(&mut sender, request).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let seen = upstream.arrivals();
    let h = &seen[0].headers;
    assert_eq!(h["host"], "tool-gate.internal");
    assert_eq!(h.get_all("host").iter().count(), 1);
    assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2"]);
}

#[tokio::test]
async fn connect_is_refused_and_asterisk_form_is_for_options_only() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;

    // HTTP/2 CONNECT, signed with the empty path it carries.
    let mut sender = h2(gate.addr).await;
    let request = h2_request("CONNECT", "tool-gate.internal:443", "", &[]);
    let (status, body) = h2_status(&mut sender, request).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body:?}");
    assert_eq!(&body[..], br#"{"error":"CONNECT is not supported"}"#);

    // HTTP/1.1 CONNECT in authority-form.
    let signature = sign(SECRET, "current", "CONNECT", "", b"");
    let head = raw_head(
        "CONNECT tool-gate.internal:443 HTTP/1.1",
        &["Host: tool-gate.internal:443"],
        &signature,
        0,
    );
    let answer = raw(gate.addr, head.as_bytes()).await;
    assert_eq!(status_of(&answer), "501", "{answer}");

    // Asterisk-form with another method than OPTIONS: malformed.
    let signature = sign(SECRET, "current", "GET", "*", b"");
    let head = raw_head("GET * HTTP/1.1", &["Host: x"], &signature, 0);
    let answer = raw(gate.addr, head.as_bytes()).await;
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(upstream.total(), 0);
    assert_eq!(gate.metric(REJECTED).await, 3.0);

    // OPTIONS * is verified with the path `*` and forwarded as `OPTIONS *`.
    let signature = sign(SECRET, "current", "OPTIONS", "*", b"");
    let head = raw_head("OPTIONS * HTTP/1.1", &["Host: x"], &signature, 0);
    let answer = raw(gate.addr, head.as_bytes()).await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    let seen = upstream.arrivals();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("OPTIONS", "*")
    );
}
