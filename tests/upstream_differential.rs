//! The gate's upstream response parser against hyper's HTTP/1.1 client, on generated
//! responses: status lines (HTTP/1.0 and 1.1, interim 1xx, bodiless statuses, `HEAD`), header
//! sets with every `Content-Length` / `Transfer-Encoding` combination (duplicated, conflicting,
//! invalid, odd coding lists), obs-fold and bad header lines, raw and chunked bodies with
//! extensions, trailers, odd size lines and truncation, all arriving in random read splits.
//!
//! Both read the same bytes followed by a tail and the end of the stream, so a body framed by
//! its head ends before the tail and a body without framing takes it in. They must agree:
//! - a response the gate accepts, hyper accepts, with the same status and the same body bytes
//!   (so the same framing); the gate is never looser;
//! - a response hyper accepts and the gate refuses is one of [`Spec::gate_stricter`]'s cases,
//!   each a place where hyper is lenient and another parser could frame the message otherwise;
//! - a connection the gate would reuse, hyper reuses too (a second request on it is answered).
//!
//! The gate's side runs without a socket, through `gate::upstream_testing` (the same code
//! as `upstream::Pool::send` and its body); hyper's over an in-memory duplex stream.

use std::time::Duration;

use bytes::Bytes;
use gate::upstream_testing::{self as testing, Read};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Bytes after the generated response, before the end of the stream.
const TAIL: &[u8] = b"TAIL";

/// A `Content-Length` line.
#[derive(Debug, Clone)]
enum Length {
    /// The length of the body as generated.
    Exact,
    /// Some other number.
    Other(u8),
    /// `n, n` with n the exact length: a list hyper accepts when every element is equal.
    List,
    /// `+n`.
    Plus,
    /// Nothing.
    Empty,
    /// `abc`.
    Letters,
    /// The exact length with 20 leading zeros: over the gate's 19 digits.
    LeadingZeros,
}

impl Length {
    fn text(&self, exact: usize) -> String {
        match self {
            Length::Exact => exact.to_string(),
            Length::Other(n) => n.to_string(),
            Length::List => format!("{exact}, {exact}"),
            Length::Plus => format!("+{exact}"),
            Length::Empty => String::new(),
            Length::Letters => "abc".into(),
            Length::LeadingZeros => format!("{}{exact}", "0".repeat(20)),
        }
    }

    fn is_valid(&self) -> bool {
        matches!(self, Length::Exact | Length::Other(_) | Length::List)
    }
}

/// A `Transfer-Encoding` line.
#[derive(Debug, Clone)]
enum Coding {
    Chunked,
    UpperChunked,
    GzipChunked,
    ChunkedGzip,
    Gzip,
    /// `chunked,`: hyper reads the empty last element as the final coding.
    TrailingComma,
    /// `, chunked`.
    LeadingComma,
    /// `\x80, chunked`: not ASCII, so hyper cannot read it as text.
    ObsText,
    /// `chunked;q=1`.
    Parameter,
}

impl Coding {
    fn text(&self) -> &'static [u8] {
        match self {
            Coding::Chunked => b"chunked",
            Coding::UpperChunked => b"CHUNKED",
            Coding::GzipChunked => b"gzip, chunked",
            Coding::ChunkedGzip => b"chunked, gzip",
            Coding::Gzip => b"gzip",
            Coding::TrailingComma => b"chunked,",
            Coding::LeadingComma => b", chunked",
            Coding::ObsText => b"\x80, chunked",
            Coding::Parameter => b"chunked;q=1",
        }
    }

    fn is_list_of_tokens(&self) -> bool {
        !matches!(
            self,
            Coding::TrailingComma | Coding::LeadingComma | Coding::ObsText | Coding::Parameter
        )
    }
}

/// Any other header line.
#[derive(Debug, Clone)]
enum Extra {
    Close,
    KeepAlive,
    /// A value continued on the next line (obs-fold).
    Folded,
    /// A control byte in a name.
    BadName,
    /// `Name : value`.
    SpaceBeforeColon,
    /// A control byte in a value.
    BadValue,
    Plain(u8),
}

impl Extra {
    fn text(&self) -> Vec<u8> {
        match self {
            Extra::Close => b"Connection: close".to_vec(),
            Extra::KeepAlive => b"Connection: keep-alive".to_vec(),
            Extra::Folded => b"X-Folded: a\r\n b".to_vec(),
            Extra::BadName => b"X-B\x01d: v".to_vec(),
            Extra::SpaceBeforeColon => b"X-Space : v".to_vec(),
            Extra::BadValue => b"X-Value: a\x7fb".to_vec(),
            Extra::Plain(n) => format!("X-Plain-{n}: value {n}").into_bytes(),
        }
    }
}

/// What follows the digits of a chunk-size line.
#[derive(Debug, Clone)]
enum Ext {
    None,
    Token,
    Quoted,
    /// Whitespace, then CR.
    Spaces,
    /// Whitespace around `;` and `=`.
    Spread,
    /// `3 zz`: text after whitespace that is no extension (hyper refuses it too).
    SpaceJunk,
    /// Bytes outside the extension grammar that hyper skips: obs-text, a name that is no
    /// token, a second value, an unterminated quoted string.
    NotGrammar(u8),
    /// A bare LF inside the extension (hyper refuses it too).
    BareLf,
}

impl Ext {
    fn text(&self) -> &'static [u8] {
        match self {
            Ext::None => b"",
            Ext::Token => b";name=value",
            Ext::Quoted => b";name=\"a; \\\"b\\\"\"",
            Ext::Spaces => b" \t ",
            Ext::Spread => b" ; a = b ;c",
            Ext::SpaceJunk => b" zz",
            Ext::NotGrammar(0) => b"\t;\x80\xff",
            Ext::NotGrammar(1) => b";a b",
            Ext::NotGrammar(2) => b";a=b c",
            Ext::NotGrammar(3) => b";a=\"x",
            Ext::NotGrammar(_) => b";@",
            Ext::BareLf => b";a\nb",
        }
    }

    fn in_grammar(&self) -> bool {
        !matches!(self, Ext::NotGrammar(_))
    }
}

/// A trailer line.
#[derive(Debug, Clone)]
enum Trailer {
    Valid,
    NoColon,
    SpaceBeforeColon,
    Folded,
}

impl Trailer {
    fn text(&self) -> &'static [u8] {
        match self {
            Trailer::Valid => b"X-Sum: 1\r\n",
            Trailer::NoColon => b"no colon here\r\n",
            Trailer::SpaceBeforeColon => b"X-Sum : 1\r\n",
            Trailer::Folded => b"X-Sum: 1\r\n folded\r\n",
        }
    }
}

/// One chunk: its data, how its size is written, what follows the size.
#[derive(Debug, Clone)]
struct Chunk {
    data: Vec<u8>,
    upper: bool,
    /// Leading zeros before the size: over 16 digits in all is past the gate's limit.
    zeros: usize,
    ext: Ext,
}

#[derive(Debug, Clone)]
enum Body {
    Raw(Vec<u8>),
    Chunked {
        chunks: Vec<Chunk>,
        last_ext: Ext,
        trailers: Vec<Trailer>,
        /// Cut the chunked wire short by this many bytes.
        cut: usize,
        /// Replace the CRLF after the first chunk's data by a bare LF.
        bare_lf: bool,
    },
}

impl Body {
    fn wire(&self) -> Vec<u8> {
        match self {
            Body::Raw(bytes) => bytes.clone(),
            Body::Chunked {
                chunks,
                last_ext,
                trailers,
                cut,
                bare_lf,
            } => {
                let mut wire = Vec::new();
                for (i, chunk) in chunks.iter().enumerate() {
                    let size = if chunk.upper {
                        format!("{:X}", chunk.data.len())
                    } else {
                        format!("{:x}", chunk.data.len())
                    };
                    wire.extend_from_slice("0".repeat(chunk.zeros).as_bytes());
                    wire.extend_from_slice(size.as_bytes());
                    wire.extend_from_slice(chunk.ext.text());
                    wire.extend_from_slice(b"\r\n");
                    wire.extend_from_slice(&chunk.data);
                    wire.extend_from_slice(if *bare_lf && i == 0 { b"\n" } else { b"\r\n" });
                }
                wire.push(b'0');
                wire.extend_from_slice(last_ext.text());
                wire.extend_from_slice(b"\r\n");
                for trailer in trailers {
                    wire.extend_from_slice(trailer.text());
                }
                wire.extend_from_slice(b"\r\n");
                wire.truncate(wire.len().saturating_sub(*cut));
                wire
            }
        }
    }
}

/// One generated response and the request it answers.
#[derive(Debug, Clone)]
struct Spec {
    http10: bool,
    status: u16,
    /// A `100 Continue` before the response.
    interim: bool,
    /// The request was `HEAD`.
    head_request: bool,
    lengths: Vec<Length>,
    codings: Vec<Coding>,
    extras: Vec<Extra>,
    body: Body,
    /// Read sizes, in turn.
    pieces: Vec<usize>,
}

impl Spec {
    fn wire(&self) -> Vec<u8> {
        let body = self.body.wire();
        let mut wire = Vec::new();
        if self.interim {
            wire.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        wire.extend_from_slice(format!("{version} {} Reason\r\n", self.status).as_bytes());
        for length in &self.lengths {
            wire.extend_from_slice(b"Content-Length: ");
            wire.extend_from_slice(length.text(body.len()).as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        for coding in &self.codings {
            wire.extend_from_slice(b"Transfer-Encoding: ");
            wire.extend_from_slice(coding.text());
            wire.extend_from_slice(b"\r\n");
        }
        for extra in &self.extras {
            wire.extend_from_slice(&extra.text());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&body);
        wire
    }

    /// Whether the response has no body whatever its head says.
    fn bodiless(&self) -> bool {
        self.head_request || matches!(self.status, 204 | 304)
    }

    /// Why the gate may refuse this response although hyper accepts it: each case is one where
    /// hyper is lenient and the leniency could let two parsers disagree on the framing.
    fn gate_stricter(&self) -> Vec<&'static str> {
        let mut why = Vec::new();
        if self.status == 101 {
            why.push("101: hyper hands the connection over as an upgrade; the gate never asked");
        }
        if self.lengths.iter().any(|l| matches!(l, Length::List)) {
            why.push("Content-Length as a list of equal values: the gate wants one value");
        }
        if self
            .lengths
            .iter()
            .any(|l| matches!(l, Length::LeadingZeros))
        {
            why.push("Content-Length over 19 digits: the gate refuses it, hyper skips zeros");
        }
        let lengths_bad = self.lengths.iter().any(|l| !l.is_valid())
            || self
                .lengths
                .iter()
                .map(|l| l.text(self.body.wire().len()))
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1;
        if lengths_bad && (!self.codings.is_empty() || self.bodiless()) {
            why.push(
                "an invalid or conflicting Content-Length that hyper ignores (Transfer-Encoding \
                 present, or no body expected): the gate refuses it always",
            );
        }
        if self.http10 && !self.codings.is_empty() && self.bodiless() {
            why.push("HTTP/1.0 with Transfer-Encoding and no body expected: refused all the same");
        }
        if self.codings.iter().any(|c| !c.is_list_of_tokens()) {
            why.push("Transfer-Encoding that is no list of tokens: hyper reads some final coding");
        }
        if let Body::Chunked {
            chunks, last_ext, ..
        } = &self.body
        {
            if chunks.iter().any(|c| !c.ext.in_grammar()) || !last_ext.in_grammar() {
                why.push("chunk extension outside the grammar: hyper skips any byte but CR and LF");
            }
            if chunks
                .iter()
                .any(|c| c.zeros + format!("{:x}", c.data.len()).len() > 16)
            {
                why.push("chunk size over 16 hex digits: hyper skips leading zeros");
            }
        }
        why
    }
}

fn length() -> impl Strategy<Value = Length> {
    prop_oneof![
        24 => Just(Length::Exact),
        4 => any::<u8>().prop_map(Length::Other),
        1 => Just(Length::List),
        1 => Just(Length::Plus),
        1 => Just(Length::Empty),
        1 => Just(Length::Letters),
        1 => Just(Length::LeadingZeros),
    ]
}

fn coding() -> impl Strategy<Value = Coding> {
    prop_oneof![
        24 => Just(Coding::Chunked),
        1 => Just(Coding::UpperChunked),
        2 => Just(Coding::GzipChunked),
        2 => Just(Coding::ChunkedGzip),
        2 => Just(Coding::Gzip),
        1 => Just(Coding::TrailingComma),
        1 => Just(Coding::LeadingComma),
        1 => Just(Coding::ObsText),
        1 => Just(Coding::Parameter),
    ]
}

fn extra() -> impl Strategy<Value = Extra> {
    prop_oneof![
        4 => Just(Extra::Close),
        4 => Just(Extra::KeepAlive),
        1 => Just(Extra::Folded),
        1 => Just(Extra::BadName),
        1 => Just(Extra::SpaceBeforeColon),
        1 => Just(Extra::BadValue),
        40 => any::<u8>().prop_map(Extra::Plain),
    ]
}

fn ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        12 => Just(Ext::None),
        2 => Just(Ext::Token),
        2 => Just(Ext::Quoted),
        1 => Just(Ext::Spaces),
        1 => Just(Ext::Spread),
        1 => Just(Ext::SpaceJunk),
        2 => (0u8..5).prop_map(Ext::NotGrammar),
        1 => Just(Ext::BareLf),
    ]
}

fn trailer() -> impl Strategy<Value = Trailer> {
    prop_oneof![
        4 => Just(Trailer::Valid),
        1 => Just(Trailer::NoColon),
        1 => Just(Trailer::SpaceBeforeColon),
        1 => Just(Trailer::Folded),
    ]
}

fn chunk() -> impl Strategy<Value = Chunk> {
    (
        prop::collection::vec(any::<u8>(), 1..40),
        any::<bool>(),
        prop_oneof![8 => Just(0usize), 1 => 1usize..20],
        ext(),
    )
        .prop_map(|(data, upper, zeros, ext)| Chunk {
            data,
            upper,
            zeros,
            ext,
        })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..60).prop_map(Body::Raw),
        2 => (
            prop::collection::vec(chunk(), 0..4),
            prop_oneof![6 => Just(Ext::None), 1 => ext()],
            prop::collection::vec(trailer(), 0..3),
            prop_oneof![6 => Just(0usize), 1 => 1usize..8],
            prop::bool::weighted(0.05),
        )
            .prop_map(|(chunks, last_ext, trailers, cut, bare_lf)| Body::Chunked {
                bare_lf: bare_lf && !chunks.is_empty(),
                chunks,
                last_ext,
                trailers,
                cut,
            }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::bool::weighted(0.2),
        prop_oneof![
            8 => Just(200u16),
            1 => Just(201),
            1 => Just(204),
            1 => Just(304),
            1 => Just(404),
            1 => Just(500),
            1 => Just(101),
        ],
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::collection::vec(length(), 0..3),
        prop_oneof![
            3 => prop::collection::vec(coding(), 0..2),
            1 => prop::collection::vec(coding(), 2..4),
        ],
        prop::collection::vec(extra(), 0..4),
        body(),
        prop::collection::vec(1usize..32, 1..4),
    )
        .prop_map(
            |(http10, status, interim, head_request, lengths, codings, extras, body, pieces)| {
                Spec {
                    http10,
                    status,
                    interim,
                    head_request,
                    lengths,
                    codings,
                    extras,
                    body,
                    pieces,
                }
            },
        )
}

/// What hyper's client made of the response: status and body bytes, or its error.
#[derive(Debug)]
struct HyperRead {
    status: u16,
    body: Vec<u8>,
}

/// Read the request hyper sends (a head, no body) from the server's end of the duplex;
/// `false` at the end of the stream.
async fn read_request(server: &mut DuplexStream) -> bool {
    let mut seen = Vec::new();
    let mut byte = [0u8; 256];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match server.read(&mut byte).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&byte[..n]),
        }
    }
    true
}

/// Write `wire` in pieces of the given sizes, letting the client read between them.
async fn write_pieces(server: &mut DuplexStream, wire: &[u8], pieces: &[usize]) {
    let mut rest = wire;
    for &size in pieces.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        if server.write_all(piece).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

fn request(head: bool) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(if head { "HEAD" } else { "GET" })
        .uri("/")
        .header("host", "upstream")
        .body(Empty::new())
        .expect("a valid request")
}

/// hyper's client reading `wire` (then the end of the stream) as the response to one request.
async fn hyper_read(wire: Vec<u8>, pieces: Vec<usize>, head: bool) -> Result<HyperRead, String> {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        if read_request(&mut server).await {
            write_pieces(&mut server, &wire, &pieces).await;
        }
        let _ = server.shutdown().await;
        // Keep this end open for hyper's writes until hyper closes its own.
        while read_request(&mut server).await {}
    });
    let response = sender
        .send_request(request(head))
        .await
        .map_err(|e| format!("head: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(HyperRead {
        status,
        body: body.to_vec(),
    })
}

/// Whether hyper's client sends a second request on the connection once it has read `wire`
/// as the response to the first, and reads the answer.
async fn hyper_reuses(wire: Vec<u8>, head: bool) -> bool {
    const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond";
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(client)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    tokio::spawn(async move {
        if read_request(&mut server).await {
            let _ = server.write_all(&wire).await;
            if read_request(&mut server).await {
                let _ = server.write_all(SECOND).await;
            }
        }
        let _ = server.shutdown().await;
        while read_request(&mut server).await {}
    });
    let Ok(response) = sender.send_request(request(head)).await else {
        return false;
    };
    if response.into_body().collect().await.is_err() || sender.ready().await.is_err() {
        return false;
    }
    let Ok(second) = sender.send_request(request(false)).await else {
        return false;
    };
    match second.into_body().collect().await {
        Ok(body) => body.to_bytes() == SECOND[SECOND.len() - 6..],
        Err(_) => false,
    }
}

/// Run `future` on a fresh single-threaded runtime, failing if it takes more than 10 s (a
/// side waiting for bytes that never come).
fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), future).await })
        .expect("hyper finishes reading within 10 s")
}

/// Check one response: see the module doc for what must agree.
fn check(spec: &Spec) -> Result<(), TestCaseError> {
    let wire = [spec.wire(), TAIL.to_vec()].concat();
    let shown = String::from_utf8_lossy(&wire).into_owned();
    let gate: Result<Read, _> = testing::read_response(&wire, spec.head_request, &spec.pieces);
    let hyper = run(hyper_read(
        wire.clone(),
        spec.pieces.clone(),
        spec.head_request,
    ));
    match (&gate, &hyper) {
        (Ok(gate), Ok(hyper)) => {
            prop_assert_eq!(gate.status, hyper.status, "{:?}", shown);
            prop_assert_eq!(&gate.body, &hyper.body, "bodies differ: {:?}", shown);
            // An unframed body takes the tail in (a framed one may too, if its length says so).
            if gate.until_close {
                prop_assert_eq!(gate.leftover, 0);
            }
            if gate.reusable && gate.leftover == TAIL.len() {
                let alone = spec.wire();
                prop_assert!(
                    run(hyper_reuses(alone, spec.head_request)),
                    "the gate would reuse a connection hyper does not: {:?}",
                    shown
                );
            }
        }
        (Ok(_), Err(hyper)) => {
            prop_assert!(
                false,
                "the gate accepts what hyper refuses ({}): {:?}",
                hyper,
                shown
            );
        }
        (Err(gate), Ok(_)) => {
            prop_assert!(
                !spec.gate_stricter().is_empty(),
                "the gate refuses ({}) what hyper accepts, in no documented case: {:?}",
                gate,
                shown
            );
        }
        (Err(_), Err(_)) => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_gate_frames_responses_as_hyper_does_or_refuses_them(spec in spec()) {
        check(&spec)?;
    }
}

/// Responses built by hand for each documented case, so that every one is exercised whatever
/// the generator draws: hyper accepts each, the gate refuses each.
#[test]
fn every_documented_case_is_one_hyper_accepts_and_the_gate_refuses() {
    for wire in [
        &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 000000000000000000002\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.0 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \x80, chunked\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\t;\x80\xff\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a b\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000002\r\nok\r\n0\r\n\r\n",
    ] {
        let shown = String::from_utf8_lossy(wire);
        assert!(
            testing::read_response(wire, false, &[]).is_err(),
            "{shown:?}"
        );
        assert!(
            run(hyper_read(wire.to_vec(), vec![wire.len()], false)).is_ok(),
            "{shown:?}"
        );
    }
}

/// The cases where hyper and the gate both refuse: so that the generator's checks stand on
/// cases known to be refused by both.
#[test]
fn both_refuse_what_neither_can_frame() {
    for wire in [
        &b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 zz\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nb\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    ] {
        let shown = String::from_utf8_lossy(wire);
        assert!(
            testing::read_response(wire, false, &[]).is_err(),
            "{shown:?}"
        );
        assert!(
            run(hyper_read(wire.to_vec(), vec![wire.len()], false)).is_err(),
            "{shown:?}"
        );
    }
}
