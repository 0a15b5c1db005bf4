//! The gate's upstream connections against a scripted raw-TCP upstream: keep-alive reuse, every
//! response framing, upstream closes, and malformed responses. Each test counts the upstream's
//! accepted connections, so reuse (or its refusal) is observed, not assumed.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::{SECRET, TestGate, send, sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream does after reading a whole request.
#[derive(Clone, Copy)]
enum Then {
    /// Keep reading requests on the connection.
    KeepOpen,
    /// Close the connection.
    Close,
}

/// An upstream that answers every request with `response` (raw bytes) and counts connections.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(response: &'static [u8], then: Then) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (accepted, served) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, response, then, Arc::clone(&served)));
            }
        });
        Scripted {
            addr,
            connections,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    response: &'static [u8],
    then: Then,
    served: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        buf.drain(..end);
        served.fetch_add(1, Ordering::SeqCst);
        if stream.write_all(response).await.is_err() {
            return;
        }
        if let Then::Close = then {
            return;
        }
    }
}

/// Read one request (head and `Content-Length` body) into `buf`; its length, or `None` at EOF.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = request.parse(buf) {
            let length = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| {
                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                });
            if buf.len() >= head + length {
                return Some(head + length);
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A gate with one worker in front of `upstream`: each worker keeps an upstream pool of its own,
/// and these tests count the connections of one pool.
async fn one_worker(upstream: &str) -> TestGate {
    TestGate::start(upstream, &[("GATE_WORKERS", "1")]).await
}

/// Send `count` signed POSTs one after another, each on a fresh client connection; the
/// statuses and bodies.
async fn post_several(gate: &TestGate, count: usize) -> Vec<(StatusCode, String)> {
    let mut replies = Vec::new();
    for i in 0..count {
        let body = format!("{{\"n\":{i}}}");
        let headers = sign(SECRET, "current", "POST", "/tool", body.as_bytes());
        let reply = send(gate.addr, "POST", "/tool", &headers, body).await;
        replies.push((reply.status, reply.text()));
    }
    replies
}

#[tokio::test]
async fn a_keep_alive_upstream_connection_carries_every_request() {
    let upstream = Scripted::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok",
        Then::KeepOpen,
    )
    .await;
    let gate = one_worker(&upstream.url()).await;
    for (status, body) in post_several(&gate, 5).await {
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(upstream.requests(), 5);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn chunked_responses_are_decoded_extensions_and_trailers_included() {
    let upstream = Scripted::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          5;note=\"a b\"\r\nhello\r\n7\r\n, world\r\n0\r\nx-checksum: 1\r\n\r\n",
        Then::KeepOpen,
    )
    .await;
    let gate = one_worker(&upstream.url()).await;
    for (status, body) in post_several(&gate, 3).await {
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello, world"));
    }
    // The body ended exactly on its last chunk: the connection was reused.
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn an_upstream_that_closes_after_each_response_costs_no_request() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
        // Closed without saying so: the gate must notice before reusing the connection.
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
        // No framing at all: the body runs to the close.
        &b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nok"[..],
        &b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
    ] {
        let upstream = Scripted::start(response, Then::Close).await;
        let gate = one_worker(&upstream.url()).await;
        for (status, body) in post_several(&gate, 4).await {
            assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        }
        assert_eq!(upstream.connections(), 4);
    }
}

#[tokio::test]
async fn a_response_with_both_framings_is_read_chunked_and_its_connection_closed() {
    let upstream = Scripted::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n\
          2\r\nok\r\n0\r\n\r\n",
        Then::KeepOpen,
    )
    .await;
    let gate = one_worker(&upstream.url()).await;
    let headers = sign(SECRET, "current", "POST", "/tool", b"{}");
    let reply = send(gate.addr, "POST", "/tool", &headers, "{}").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "ok")
    );
    assert!(!reply.headers.contains_key("content-length"));
    post_several(&gate, 1).await;
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn malformed_responses_are_502_and_never_reused() {
    // Heads over the gate's limits (README: over 100 header lines, over 64 KiB), built here
    // and leaked so that the scripted upstream can serve them like the literals.
    let too_many = format!(
        "HTTP/1.1 200 OK\r\n{}content-length: 2\r\n\r\nok",
        "x-n: 1\r\n".repeat(100)
    );
    let too_large = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
        "b".repeat(64 * 1024)
    );
    let built: [&'static [u8]; 2] = [too_many, too_large].map(|s| s.leak().as_bytes());
    for response in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
        &b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok"[..],
        &b"HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\nok"[..],
        &b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n"[..],
        &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"[..],
        // HTTP/1.0 has no transfer codings: such a response is not framed as the gate would.
        &b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
        built[0],
        built[1],
    ] {
        let upstream = Scripted::start(response, Then::KeepOpen).await;
        let gate = one_worker(&upstream.url()).await;
        let replies = post_several(&gate, 2).await;
        let shown = String::from_utf8_lossy(response);
        for (status, body) in replies {
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{shown}");
            assert_eq!(body, r#"{"error":"upstream unavailable"}"#);
        }
        assert_eq!(upstream.connections(), 2, "{shown}");
    }
}

#[tokio::test]
async fn a_body_cut_short_reaches_the_client_as_a_cut_response() {
    let upstream = Scripted::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        Then::Close,
    )
    .await;
    let gate = one_worker(&upstream.url()).await;
    // The client must see an error: no head at all (the gate cut the connection before
    // flushing it) or a head whose body breaks off. Never a complete-looking response.
    let stream = TcpStream::connect(gate.addr).await.expect("connect");
    let headers = sign(SECRET, "current", "POST", "/tool", b"{}");
    let mut request = String::from("POST /tool HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n{}");
    let mut stream = stream;
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received));
    let _ = read.await.expect("the gate closes the connection");
    let text = String::from_utf8_lossy(&received);
    if !received.is_empty() {
        let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
        assert!(head.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(head.contains("content-length: 10"), "{text:?}");
        assert!(
            body.len() < 10,
            "a truncated body must not arrive whole: {text:?}"
        );
    }
}

#[tokio::test]
async fn interim_responses_are_skipped_and_head_requests_have_no_body() {
    let upstream = Scripted::start(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Then::KeepOpen,
    )
    .await;
    let gate = one_worker(&upstream.url()).await;
    for (status, body) in post_several(&gate, 2).await {
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(upstream.connections(), 1);

    let upstream = Scripted::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
        Then::KeepOpen,
    )
    .await;
    let gate = one_worker(&upstream.url()).await;
    for _ in 0..2 {
        let headers = sign(SECRET, "current", "HEAD", "/tool", b"");
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            send(gate.addr, "HEAD", "/tool", &headers, ""),
        )
        .await
        .expect("a HEAD response has no body to wait for");
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.is_empty());
    }
    assert_eq!(upstream.connections(), 1);
}

/// Send one signed POST over a raw connection and read until the gate closes it: what the
/// client received.
async fn post_raw(gate: &TestGate) -> String {
    let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
    let headers = sign(SECRET, "current", "POST", "/tool", b"{}");
    let mut request = String::from("POST /tool HTTP/1.1\r\nhost: t\r\nconnection: close\r\n");
    request.push_str("content-length: 2\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n{}");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received));
    let _ = read.await.expect("the gate closes the connection");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn chunked_bodies_outside_the_grammar_are_cut_and_their_connections_closed() {
    for response in [
        // Text after the chunk size that is no extension.
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3 zz\r\nabc\r\n0\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\t;\x80\xff\r\nabc\r\n0\r\n\r\n"[..],
        // A trailer line that is no field.
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nno colon\r\n\r\n"
            [..],
    ] {
        let upstream = Scripted::start(response, Then::KeepOpen).await;
        let gate = one_worker(&upstream.url()).await;
        let shown = String::from_utf8_lossy(response);
        for _ in 0..2 {
            // Either nothing (cut before the head was flushed) or a head whose chunked body
            // never ends: never a complete response.
            let received = post_raw(&gate).await;
            assert!(!received.ends_with("0\r\n\r\n"), "{shown}: {received:?}");
            if !received.is_empty() {
                assert!(
                    received.starts_with("HTTP/1.1 200"),
                    "{shown}: {received:?}"
                );
            }
        }
        assert_eq!(upstream.connections(), 2, "{shown}");
    }
}
