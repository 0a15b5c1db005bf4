//! Unit tests of the upstream client's parts: the chunked decoder, the response head parser,
//! the request encoder and the pool.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use proptest::prelude::*;
use tokio::net::TcpStream;

use super::body::Framing;
use super::chunked::{Chunked, MAX_CHUNK_EXTENSION, MAX_CHUNK_EXTENSIONS};
use super::encode::{decimal, encode_head};
use super::head::{MAX_HEAD_BYTES, MAX_HEADERS, parse_head};
use super::pool::{Conn, Connections};
use super::{Disposition, Outgoing, UpstreamError, testing};

/// Feed `wire` to a chunked decoder in pieces of `piece` bytes; the decoded body and the
/// bytes left after it, or the first error. `Ok(None)` if the input ended before the last
/// chunk.
fn decode_chunked(wire: &[u8], piece: usize) -> Result<Option<(Vec<u8>, usize)>, UpstreamError> {
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
    let pool = Connections {
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
