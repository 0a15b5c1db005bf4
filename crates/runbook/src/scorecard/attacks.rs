//! The scorecard's attacks on the request path itself, rather than on the signature: a replay
//! whose window closes while its body is held back, clients too slow to send a head, headers
//! that try to delete or forge what the gate sets, request targets and heads an HTTP library
//! may read differently from the gate, an upstream that breaks HTTP/1.1 framing, a flood of
//! HTTP/2 streams, and a secret in a configuration file that does not parse.
//!
//! They play against gates of their own, started once for all of them beside the field's
//! ([`Arena`]): one with a short clock-skew window, header-read and idle timeout, so a
//! scenario waits seconds rather than minutes, and one in front of an upstream that answers with
//! broken framing on request. Scenarios that need nothing special use the field's gates.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinSet;

use super::{Field, answer, grew, invalid, reached};
use crate::client::{Body, Call, Credential, RawConnection, Reply, error_chain, read_reply};
use crate::exposition::Scrape;
use crate::process::{GateEnv, GateProcess};
use crate::upstream::{Malformed, RecordingUpstream};
use crate::{Check, HarnessError};
use gate::config::vars;
use gate::protocol;
use gate::verify::Reason;

/// Clock-skew window of the attack gate (`GATE_CLOCK_SKEW_SECS`): short, so the replay
/// scenario outlives it in seconds.
const SKEW_SECS: u64 = 2;
/// Header-read timeout of the attack gate (`GATE_HEADER_READ_TIMEOUT_SECS`).
const HEADER_READ_SECS: u64 = 1;
/// Idle timeout of the attack gate (`GATE_IDLE_TIMEOUT_SECS`).
const IDLE_SECS: u64 = 1;
/// How much later than the header-read or idle timeout a connection may still be closed: the
/// timers' granularity and a busy machine, not a second timeout.
const CLOSE_MARGIN: Duration = Duration::from_millis(1500);
/// Replay cache of the attack gate (`GATE_NONCE_CACHE_CAPACITY`): small enough for one shard,
/// so every admission steps the sweep that would drop the replayed nonce.
const NONCE_CAPACITY: usize = 1024;
/// The attack gate's exempt path (`GATE_UNSIGNED_PATHS`).
const EXEMPT_PATH: &str = "/game/exempt";
/// The gate's request-head limit when `GATE_MAX_HEADER_BYTES` is unset (README.md).
const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields a request may carry (README.md).
const MAX_HEADER_FIELDS: usize = 100;
/// Streams the HTTP/2 flood opens beyond the limit the gate advertises.
const FLOOD_EXTRA: u32 = 16;
/// Streams the HTTP/2 flood opens when the gate advertises no limit at all.
const FLOOD_UNLIMITED: u32 = 300;
/// Declared body of each flood stream: half the main gate's body limit, never all sent.
const FLOOD_DECLARED: usize = super::MAX_BODY / 2;
/// Most bytes of its body each flood stream sends with its head.
const FLOOD_FIRST: usize = 512;
/// DATA bytes the flood sends with the heads, in all: within the connection's initial
/// flow-control window ([`INITIAL_WINDOW`]), which the gate may not have widened yet.
const FLOOD_DATA: usize = 60_000;
/// Bytes each held flood stream sends afterwards: over the gate's stream limit, more than one
/// connection may hold (the body budget's per-connection share: 64 streams, the default
/// limit, send 128 KiB, twice the main gate's share of 4 x its 16 KiB body limit).
const FLOOD_MORE: usize = 2048;
/// A connection's initial flow-control window (RFC 9113 section 6.9.2).
const INITIAL_WINDOW: u64 = 65_535;
/// The client connection preface of HTTP/2 (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The gates only the attack scenarios use.
struct Arena {
    /// Short skew window, header-read and idle timeouts, a small replay cache, one exempt
    /// path.
    gate: GateProcess,
    /// In front of [`Arena::malformed`].
    fronting: GateProcess,
    /// Answers `/malformed/...` with broken framing.
    malformed: RecordingUpstream,
}

impl Arena {
    async fn start(field: &Field) -> Result<Arena, HarnessError> {
        let malformed = RecordingUpstream::start_malformed()
            .await
            .map_err(|e| HarnessError::new("starting the malformed upstream", e))?;
        let gate_env = GateEnv::new(&field.upstream.url())
            .current(&field.new)
            .set(vars::CLOCK_SKEW_SECS, SKEW_SECS.to_string())
            .set(vars::HEADER_READ_TIMEOUT_SECS, HEADER_READ_SECS.to_string())
            .set(vars::IDLE_TIMEOUT_SECS, IDLE_SECS.to_string())
            .set(vars::NONCE_CACHE_CAPACITY, NONCE_CAPACITY.to_string())
            .set(vars::UNSIGNED_PATHS, EXEMPT_PATH);
        let fronting_env = GateEnv::new(&malformed.url()).current(&field.new);
        let launcher = &field.launcher;
        let (gate, fronting) = tokio::join!(
            launcher.start_running("attack gate", &gate_env, None),
            launcher.start_running("gate before a malformed upstream", &fronting_env, None),
        );
        let (gate, fronting) = (gate?, fronting?);
        for gate in [&gate, &fronting] {
            gate.wait_ready(Duration::from_secs(10)).await?;
        }
        Ok(Arena {
            gate,
            fronting,
            malformed,
        })
    }
}

const REPLAY: &str = "replay held back until its window closed";
const SLOW_CLIENTS: &str = "slow clients: silent, one byte, unfinished head, HTTP/2 preface";
const IDLE_H2: &str = "idle HTTP/2 connection";
const CONNECTION_TOKENS: &str = "Connection header naming the headers the gate sets";
const OVERSIZED_HEAD: &str = "request head over the size limit";
const SPOOFED: &str = "spoofed X-Gate-Verified-Key-Id in any spelling";
const ABSOLUTE_FORM: &str = "absolute-form request target";
const TWO_HOSTS: &str = "two Host headers";
const H2_CONNECT: &str = "HTTP/2 CONNECT";
const MALFORMED_UPSTREAM: &str = "malformed upstream response framing";
const STREAM_FLOOD: &str = "HTTP/2 stream flood with unverifiable bodies";
const CONFIG_LEAK: &str = "secret in a configuration file that does not parse";

/// Every attack scenario's name, in the order they are played.
const NAMES: [&str; 12] = [
    REPLAY,
    SLOW_CLIENTS,
    IDLE_H2,
    CONNECTION_TOKENS,
    OVERSIZED_HEAD,
    SPOOFED,
    ABSOLUTE_FORM,
    TWO_HOSTS,
    H2_CONNECT,
    MALFORMED_UPSTREAM,
    STREAM_FLOOD,
    CONFIG_LEAK,
];

/// Play every attack scenario, handing each verdict to `record` under its name; when the
/// attack gates do not start, every scenario fails with that error.
pub(super) async fn play(
    field: &Field,
    record: &mut impl FnMut(&str, Result<Vec<Check>, HarnessError>),
) {
    let arena = match Arena::start(field).await {
        Ok(arena) => arena,
        Err(err) => {
            for name in NAMES {
                record(name, Err(err.clone()));
            }
            return;
        }
    };
    let arena = &arena;
    record(REPLAY, replay_after_window(field, arena).await);
    record(SLOW_CLIENTS, slow_clients(arena).await);
    record(IDLE_H2, idle_h2(field, arena).await);
    record(CONNECTION_TOKENS, connection_tokens(field).await);
    record(OVERSIZED_HEAD, oversized_head(field).await);
    record(SPOOFED, spoofed_verified_key_id(field, arena).await);
    record(ABSOLUTE_FORM, absolute_form(field).await);
    record(TWO_HOSTS, two_hosts(field).await);
    record(H2_CONNECT, h2_connect(field).await);
    record(MALFORMED_UPSTREAM, malformed_upstream(field, arena).await);
    record(STREAM_FLOOD, stream_flood(field).await);
    record(CONFIG_LEAK, config_parse_error(field).await);
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Unix time now, in seconds with a fraction.
fn unix_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sleep until Unix time `at` (seconds with a fraction); at once if that has passed.
async fn sleep_until_unix(at: f64) {
    let left = at - unix_secs_f64();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
}

/// Send `bytes` on a new connection to `addr` and read the answer.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Reply, String> {
    let mut connection = RawConnection::open(addr).await?;
    connection.send(bytes).await?;
    connection.read_reply(Duration::from_secs(5)).await
}

/// An answer's summary, or what went wrong instead.
fn summary(reply: &Result<Reply, String>) -> String {
    match reply {
        Ok(reply) => reply.summary(),
        Err(err) => format!("no answer ({err})"),
    }
}

/// A check on an answer that may not have come.
fn answer_or_error(what: &str, reply: &Result<Reply, String>, expected: &str) -> Check {
    match reply {
        Ok(reply) => answer(what, reply, expected),
        Err(_) => Check::equal(what, expected.to_owned(), summary(reply)),
    }
}

/// How many requests reached the upstream between two counts, compared with `expected`.
fn upstream_total(name: &str, before: usize, after: usize, expected: usize) -> Check {
    let text = |n: usize| format!("{n} request(s) reached the upstream");
    Check::equal(name, text(expected), text(after - before))
}

/// One more request counted as `sig_gate_requests_total{outcome="rejected"}`.
fn rejected(before: &Scrape, after: &Scrape) -> Check {
    grew(
        before,
        after,
        "sig_gate_requests_total",
        ("outcome", "rejected"),
        1,
    )
}

/// Open an HTTP/2 (prior knowledge) connection to `addr`; the connection task runs on its own
/// and its handle resolves when the connection ends.
async fn h2_connect_to(
    addr: SocketAddr,
) -> Result<
    (
        hyper::client::conn::http2::SendRequest<Body>,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|err| format!("connect {addr}: {err}"))?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|err| format!("HTTP/2 handshake: {}", error_chain(&err)))?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, task))
}

/// Send one request on an HTTP/2 connection and read the whole answer, within 5 s of the
/// connection being ready for it.
async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Body>,
    request: Request<Body>,
) -> Result<Reply, String> {
    let within = Duration::from_secs(5);
    tokio::time::timeout(within, sender.ready())
        .await
        .map_err(|_| format!("not ready within {} ms", within.as_millis()))?
        .map_err(|err| format!("not ready: {}", error_chain(&err)))?;
    read_reply(sender.send_request(request), within).await
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// The replay's head arrives while its timestamp is still inside the window, its last body
/// bytes after the window closed and after a fresh request let the cache drop the original's
/// nonce. Judged at the head alone it would pass: the timestamp must be judged again once the
/// body is in (docs/protocol.md).
async fn replay_after_window(field: &Field, arena: &Arena) -> Result<Vec<Check>, HarnessError> {
    let gate = &arena.gate;
    let addr = gate.proxy_addr();
    let path = "/game/replay-window";
    let signer = field.new.signer();
    // T is this second. The replay's head goes 0.1 s into second T+2, where the gate's
    // clock reads T+2: inside the window by whole seconds. Its last bytes go 0.1 s into T+4.
    let start = unix_secs_f64().floor();
    // Whole seconds since the epoch: exact in an f64.
    let timestamp = start as u64;
    let call = Call::new(Method::POST, path)
        .body(Bytes::from_static(br#"{"tool":"transfer","amount":100}"#))
        .signed_at(&signer, timestamp);
    let first = field.http.call(addr, &call).await?;
    let before = gate.scrape().await?;

    sleep_until_unix(start + SKEW_SECS as f64 + 0.1).await;
    let wire = call.wire(addr);
    let held_back = 4;
    let (sent, rest) = wire.body().split_at(wire.body().len() - held_back);
    let mut replay = RawConnection::open(addr)
        .await
        .map_err(|e| HarnessError::new("replay connection", e))?;
    let mut head = wire.head();
    head.extend_from_slice(sent);
    replay
        .send(&head)
        .await
        .map_err(|e| HarnessError::new("replay head", e))?;

    sleep_until_unix(start + 2.0 * SKEW_SECS as f64 + 0.1).await;
    let fresh = Call::signed_post("/game/replay-window-fresh", &signer);
    let fresh_reply = field.http.call(addr, &fresh).await?;
    let rest = replay.send(rest).await;
    let reply = match rest {
        Ok(()) => replay.read_reply(Duration::from_secs(5)).await,
        Err(err) => Err(err),
    };
    let after = gate.scrape().await?;
    Ok(vec![
        answer("original at T", &first, "200"),
        answer(
            &format!("fresh request at T+{}", 2 * SKEW_SECS),
            &fresh_reply,
            "200",
        ),
        answer_or_error(
            &format!(
                "replay: head at T+{SKEW_SECS}, last {held_back} body bytes at T+{}",
                2 * SKEW_SECS
            ),
            &reply,
            "401 stale_timestamp",
        ),
        invalid(&before, &after, Reason::StaleTimestamp, 1),
        reached(field, path, 1, Some(field.new.key_id())),
    ])
}

/// Connections that never send a whole head must be closed by the header-read timeout, on
/// HTTP/1.1 and on HTTP/2 alike.
async fn slow_clients(arena: &Arena) -> Result<Vec<Check>, HarnessError> {
    let addr = arena.gate.proxy_addr();
    let limit = Duration::from_secs(HEADER_READ_SECS) + CLOSE_MARGIN;
    let clients: [(&str, &[u8]); 4] = [
        ("silent connection", b""),
        ("one byte", b"P"),
        (
            "unfinished head",
            b"POST /game/slow HTTP/1.1\r\nhost: gate\r\n",
        ),
        ("HTTP/2 preface alone", H2_PREFACE),
    ];
    let mut waiting = JoinSet::new();
    for (index, (_, bytes)) in clients.iter().enumerate() {
        let bytes = bytes.to_vec();
        waiting.spawn(async move {
            let mut connection = RawConnection::open(addr).await?;
            connection.send(&bytes).await?;
            Ok::<_, String>((index, connection.closed_within(limit).await))
        });
    }
    let mut outcomes = vec![None; clients.len()];
    while let Some(joined) = waiting.join_next().await {
        let (index, closed) = joined
            .map_err(|e| HarnessError::new("slow client", e))?
            .map_err(|e| HarnessError::new("slow client", e))?;
        outcomes[index] = Some(closed);
    }
    let expected = format!(
        "closed within {} ms (header-read timeout {HEADER_READ_SECS} s)",
        limit.as_millis()
    );
    Ok(clients
        .iter()
        .zip(outcomes)
        .map(|((name, _), closed)| {
            let (observed, passed) = match closed.flatten() {
                Some(after) => (format!("closed after {} ms", after.as_millis()), true),
                None => (format!("still open after {} ms", limit.as_millis()), false),
            };
            Check::new(*name, expected.clone(), observed, passed)
        })
        .collect())
}

/// An HTTP/2 connection that has finished its requests and sends nothing more must end,
/// like an idle HTTP/1.1 keep-alive connection, instead of holding a slot for ever.
async fn idle_h2(field: &Field, arena: &Arena) -> Result<Vec<Check>, HarnessError> {
    let addr = arena.gate.proxy_addr();
    let limit = Duration::from_secs(IDLE_SECS) + CLOSE_MARGIN;
    let (mut sender, task) = h2_connect_to(addr)
        .await
        .map_err(|e| HarnessError::new("HTTP/2 connection", e))?;
    let call = Call::signed_post("/game/h2-idle", &field.new.signer());
    let reply = h2_send(&mut sender, call.request(addr)).await;
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(limit, task).await.is_ok();
    let observed = if ended {
        format!("closed after {} ms idle", idle_from.elapsed().as_millis())
    } else {
        format!("still open after {} ms idle", limit.as_millis())
    };
    Ok(vec![
        answer_or_error("request on the connection", &reply, "200"),
        Check::new(
            "idle connection",
            format!(
                "closed within {} ms idle (idle timeout {IDLE_SECS} s)",
                limit.as_millis()
            ),
            observed,
            ended,
        ),
    ])
}

/// `Connection` may name hop-by-hop headers for removal; naming the headers the gate itself
/// sets must not delete them on the way to the upstream.
async fn connection_tokens(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let gate = &field.main;
    let addr = gate.proxy_addr();
    let mut checks = Vec::new();
    for token in ["X-Forwarded-For", "X-Request-Id", "host"] {
        let path = format!("/game/connection-{}", token.to_ascii_lowercase());
        let call = Call::signed_post(&path, &field.new.signer()).header("connection", token);
        let reply = field.http.call(addr, &call).await?;
        checks.push(answer(&format!("Connection: {token}"), &reply, "200"));
        let seen = field.upstream.seen(&path);
        let header = |name: &str| {
            let values: Vec<&str> = seen
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if values.is_empty() {
                "(absent)".to_owned()
            } else {
                values.join(", ")
            }
        };
        let request_id = if seen.headers.contains_key("x-request-id") {
            "set"
        } else {
            "(absent)"
        };
        let describe = |forwarded_for: &str, request_id: &str, host: &str| {
            format!("X-Forwarded-For {forwarded_for}, X-Request-Id {request_id}, Host {host}")
        };
        let expected = describe("127.0.0.1", "set", &addr.to_string());
        let observed = if seen.count == 0 {
            format!("{path} never reached the upstream")
        } else {
            describe(&header("x-forwarded-for"), request_id, &header("host"))
        };
        checks.push(Check::equal(
            format!("upstream headers with Connection: {token}"),
            expected,
            observed,
        ));
    }
    Ok(checks)
}

/// A head over `GATE_MAX_HEADER_BYTES`, and one with more than 100 fields: 431 and the
/// connection closed, nothing upstream, even with a valid signature.
async fn oversized_head(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let addr = field.main.proxy_addr();
    let signer = field.new.signer();
    let big_path = "/game/head-oversized";
    let many_path = "/game/head-many-fields";
    let big = Call::signed_post(big_path, &signer).header(
        "x-padding",
        &"a".repeat(DEFAULT_MAX_HEADER_BYTES + 8 * 1024),
    );
    let mut many = Call::signed_post(many_path, &signer);
    for n in 0..MAX_HEADER_FIELDS + 10 {
        many = many.header(&format!("x-field-{n}"), "1");
    }
    let mut checks = Vec::new();
    for (what, call) in [
        (
            format!("head of {} KiB", DEFAULT_MAX_HEADER_BYTES / 1024 + 8),
            &big,
        ),
        (format!("{} header fields", MAX_HEADER_FIELDS + 10), &many),
    ] {
        let mut connection = RawConnection::open(addr)
            .await
            .map_err(|e| HarnessError::new(what.as_str(), e))?;
        let sent = connection.send(&call.wire(addr).bytes()).await;
        let reply = match sent {
            Ok(()) => connection.read_reply(Duration::from_secs(5)).await,
            Err(err) => Err(err),
        };
        let status = match &reply {
            Ok(reply) => reply.status.as_u16().to_string(),
            Err(err) => format!("no answer ({err})"),
        };
        let closed = connection.closed_within(Duration::from_secs(2)).await;
        let observed = format!(
            "{status}, connection {}",
            if closed.is_some() { "closed" } else { "open" }
        );
        checks.push(Check::equal(
            what,
            "431, connection closed".to_owned(),
            observed,
        ));
        checks.push(reached(field, call.path(), 0, None));
    }
    // HTTP/2: the same head on a stream of its own, refused with 431 or a reset stream.
    let h2_path = "/game/head-oversized-h2";
    let h2_call = Call::signed_post(h2_path, &signer).header(
        "x-padding",
        &"a".repeat(DEFAULT_MAX_HEADER_BYTES + 8 * 1024),
    );
    let (mut sender, _task) = h2_connect_to(addr)
        .await
        .map_err(|e| HarnessError::new("HTTP/2 connection", e))?;
    let reply = h2_send(&mut sender, h2_call.request(addr)).await;
    let (observed, refused) = match &reply {
        Ok(reply) if reply.status == 431 => ("431".to_owned(), true),
        Ok(reply) => (reply.summary(), false),
        Err(err) => (format!("stream refused ({err})"), true),
    };
    checks.push(Check::new(
        format!("HTTP/2 head of {} KiB", DEFAULT_MAX_HEADER_BYTES / 1024 + 8),
        "431 or the stream refused",
        observed,
        refused,
    ));
    checks.push(reached(field, h2_path, 0, None));
    Ok(checks)
}

/// Whether a header name is `header` in some spelling: any case, `_` for `-` (what CGI-style
/// frameworks fold both to).
fn spells(name: &str, header: &HeaderName) -> bool {
    name.replace('_', "-").eq_ignore_ascii_case(header.as_str())
}

/// The spellings of `header` among `headers`, with their values.
fn copies(headers: &HeaderMap, header: &HeaderName) -> Vec<String> {
    headers
        .iter()
        .filter(|(name, _)| spells(name.as_str(), header))
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
        .collect()
}

/// One request of a spoofing scenario: what it shows, the gate it goes to, the call, and the
/// value the gate itself sets on it (`None` where it sets none: exempt and report-only).
pub(super) type SpoofCase<'a> = (&'a str, &'a GateProcess, &'a Call, Option<&'a str>);

/// Send each case's call with the `spoofs` header lines added (copies of `header`, a header
/// the gate sets, in other spellings), on a raw connection so every spelling goes out as
/// written; then check that the upstream got no client copy of `header` in any spelling,
/// only the gate's own value where it sets one.
pub(super) async fn spoofed(
    field: &Field,
    header: &HeaderName,
    spoofs: &[&str],
    cases: &[SpoofCase<'_>],
) -> Vec<Check> {
    let mut checks = Vec::new();
    for &(what, gate, call, own) in cases {
        let addr = gate.proxy_addr();
        let wire = spoofs
            .iter()
            .fold(call.wire(addr), |wire, spoof| wire.line(*spoof));
        let reply = raw_exchange(addr, &wire.bytes()).await;
        checks.push(answer_or_error(what, &reply, "200"));
        let seen = field.upstream.seen(call.path());
        let expected = match own {
            Some(value) => format!("only the gate's own {header}: {value}"),
            None => "no copy in any spelling".to_owned(),
        };
        let copies = copies(&seen.headers, header);
        let observed = if seen.count == 0 {
            "never reached the upstream".to_owned()
        } else {
            match (copies.as_slice(), own) {
                ([], _) => "no copy in any spelling".to_owned(),
                ([only], Some(value)) if *only == format!("{header}: {value}") => {
                    format!("only the gate's own {header}: {value}")
                }
                _ => format!("upstream received {}", copies.join(", ")),
            }
        };
        checks.push(Check::equal(
            format!("upstream copies, {what}"),
            expected,
            observed,
        ));
    }
    checks
}

/// A client's `X-Gate-Verified-Key-Id`, spelt with underscores or in any case, must never
/// reach the upstream: not on an exempt path, not through a report-only gate, and not beside
/// the gate's own on a verified request.
async fn spoofed_verified_key_id(field: &Field, arena: &Arena) -> Result<Vec<Check>, HarnessError> {
    // One copy with dashes: on a signed path two copies of an `X-Gate-*` name are a
    // malformed signature, which would end the verified case before forwarding.
    let spoofs = [
        "X_Gate_Verified_Key_Id: current",
        "x_gate_verified_key_id: current",
        "X_GATE_VERIFIED_KEY_ID: current",
        "X-GATE-VERIFIED-KEY-ID: current",
    ];
    let exempt = Call::new(Method::GET, EXEMPT_PATH);
    let report_only = Call::new(Method::GET, "/game/spoof-report-only");
    let verified = Call::signed_post("/game/spoof-verified", &field.new.signer());
    let cases = [
        ("exempt path", &arena.gate, &exempt, None),
        (
            "report-only gate, unsigned",
            &field.report_only,
            &report_only,
            None,
        ),
        (
            "verified request",
            &field.main,
            &verified,
            Some(field.new.key_id()),
        ),
    ];
    Ok(spoofed(field, &protocol::VERIFIED_KEY_ID, &spoofs, &cases).await)
}

/// `GET http://host/path?query` (absolute form), signed for the path and query: the upstream
/// must get the origin form `/path?query`, as the signature covered it, with the URI's
/// authority as its one `Host`; `http://host?query` is path `/`.
async fn absolute_form(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let addr = field.main.proxy_addr();
    let authority = "tool-gate.internal";
    let cases = [
        (
            "path and query",
            "/game/absolute-form",
            "/game/absolute-form?a=1",
        ),
        // An empty path is `/` (docs/protocol.md): signed and forwarded as such.
        ("empty path", "", "/?a=1"),
    ];
    let mut checks = Vec::new();
    for (what, written_path, origin_form) in cases {
        let path = origin_form.split('?').next().unwrap_or(origin_form);
        let before = field.upstream.seen(path).count;
        let call = Call::new(Method::GET, origin_form).signed(&field.new.signer());
        // The Host line names the gate: with an absolute-form target the URI's authority wins.
        let wire = call
            .wire(addr)
            .target(format!("http://{authority}{written_path}?a=1"));
        let reply = raw_exchange(addr, &wire.bytes()).await;
        let seen = field.upstream.seen(path);
        let describe = |target: &str, host: &str| format!("upstream got {target}, Host {host}");
        let observed = if seen.count == before {
            format!("{path} never reached the upstream")
        } else {
            let hosts: Vec<&str> = seen
                .headers
                .get_all(http::header::HOST)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            describe(&seen.target, &hosts.join(", "))
        };
        checks.push(answer_or_error(what, &reply, "200"));
        checks.push(Check::equal(
            format!("{what}: upstream request"),
            describe(origin_form, authority),
            observed,
        ));
    }
    Ok(checks)
}

/// Two `Host` lines: which one the upstream believes is anyone's guess, so 400 and nothing
/// forwarded, signature or not.
async fn two_hosts(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let addr = field.main.proxy_addr();
    let call = Call::signed_post("/game/two-hosts", &field.new.signer());
    let wire = call.wire(addr).line("host: admin.internal");
    let before = field.main.scrape().await?;
    let reply = raw_exchange(addr, &wire.bytes()).await;
    let after = field.main.scrape().await?;
    let status = match &reply {
        Ok(reply) => reply.status.as_u16().to_string(),
        Err(err) => format!("no answer ({err})"),
    };
    Ok(vec![
        Check::equal("answer", "400".to_owned(), status),
        rejected(&before, &after),
        reached(field, call.path(), 0, None),
    ])
}

/// An HTTP/2 CONNECT, validly signed: the gate is no tunnel, so it refuses, and nothing
/// reaches the upstream.
async fn h2_connect(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let addr = field.main.proxy_addr();
    let before = field.upstream.total();
    let (mut sender, _task) = h2_connect_to(addr)
        .await
        .map_err(|e| HarnessError::new("HTTP/2 connection", e))?;
    // An authority-form target has an empty path and query: that is what is signed.
    let call = Call::new(Method::CONNECT, "").signed(&field.new.signer());
    let mut request = call.request(addr);
    *request.uri_mut() = http::Uri::from_static("tool-gate.internal:443");
    let scraped = field.main.scrape().await?;
    let reply = h2_send(&mut sender, request).await;
    let after = field.main.scrape().await?;
    let (observed, refused) = match &reply {
        Ok(reply) if reply.status.is_success() => {
            (format!("{} (tunnel open)", reply.status), false)
        }
        Ok(reply) => (format!("refused with {}", reply.summary()), true),
        Err(err) => (format!("stream reset ({err})"), true),
    };
    Ok(vec![
        Check::new(
            "answer",
            "refused (an error status or a reset stream)",
            observed,
            refused,
        ),
        rejected(&scraped, &after),
        upstream_total("upstream", before, field.upstream.total(), 0),
    ])
}

/// An upstream that breaks HTTP/1.1 framing: the gate must not pass the answer on as a clean
/// response (a 502, or the client's connection cut), and must not send another
/// request on that connection, whose framing it can no longer trust.
async fn malformed_upstream(field: &Field, arena: &Arena) -> Result<Vec<Check>, HarnessError> {
    let addr = arena.fronting.proxy_addr();
    let signer = field.new.signer();
    let mut checks = Vec::new();
    for kind in Malformed::ALL {
        let warm = field
            .http
            .call(addr, &Call::signed_post("/game/before-malformed", &signer))
            .await?;
        let broken = field
            .http
            .send(
                Call::signed_post(kind.path(), &signer).request(addr),
                Duration::from_secs(5),
            )
            .await;
        // hyper's server writes a response head together with the first body bytes, so a
        // body that breaks at once shows as a connection closed before any head.
        let (observed, passed) = match &broken {
            Ok(reply) if reply.status == 502 => ("502".to_owned(), true),
            Ok(reply) => (
                format!(
                    "{} with body {:?}: passed on as clean",
                    reply.status, reply.body
                ),
                false,
            ),
            Err(err) if err.starts_with("reading the body") => {
                ("connection cut after the head".to_owned(), true)
            }
            Err(err) if err.contains("connection closed before message completed") => {
                ("connection cut before the head".to_owned(), true)
            }
            Err(err) => (format!("no answer ({err})"), false),
        };
        let next = field
            .http
            .call(addr, &Call::signed_post("/game/after-malformed", &signer))
            .await?;
        let reused = arena.malformed.reused_after(kind);
        checks.push(answer(
            &format!("{}: clean request before", kind.describe()),
            &warm,
            "200",
        ));
        checks.push(Check::new(
            kind.describe(),
            "502, or the connection cut; never a clean answer",
            observed,
            passed,
        ));
        checks.push(Check::equal(
            format!("{}: connection reuse", kind.describe()),
            "0 requests on its connection afterwards".to_owned(),
            format!("{reused} requests on its connection afterwards"),
        ));
        checks.push(answer(
            &format!("{}: next request", kind.describe()),
            &next,
            "200",
        ));
    }
    Ok(checks)
}

/// A HTTP/2 frame as it is read: type, flags, stream and payload.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const FRAME_WINDOW_UPDATE: u8 = 0x8;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const REFUSED_STREAM: u32 = 0x7;

/// A frame's bytes.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    // Every payload here is far below 2^24 bytes.
    let length = u32::try_from(payload.len()).expect("frame payloads are small");
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend((stream & 0x7fff_ffff).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Whole frames at the front of `buffer`, removed from it.
fn frames(buffer: &mut Vec<u8>) -> Vec<Frame> {
    let mut out = Vec::new();
    while buffer.len() >= 9 {
        let length = u32::from_be_bytes([0, buffer[0], buffer[1], buffer[2]]) as usize;
        if buffer.len() < 9 + length {
            break;
        }
        let head: Vec<u8> = buffer.drain(..9).collect();
        out.push(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload: buffer.drain(..length).collect(),
        });
    }
    out
}

/// An HPACK integer with an `N`-bit prefix (RFC 7541 section 5.1), first byte's high bits 0.
fn hpack_integer(value: usize, prefix_bits: u32, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        // Below the prefix maximum: fits the first byte.
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literal fields without indexing (RFC 7541 section 6.2.2), no Huffman.
fn hpack_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        for text in [name, value] {
            hpack_integer(text.len(), 7, &mut out);
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

/// What the flood has read from the gate so far.
#[derive(Debug, Default)]
struct FloodLog {
    /// Streams refused with `REFUSED_STREAM`.
    refused: std::collections::BTreeSet<u32>,
    /// Streams reset for any reason (a refused stream may be reset again for the DATA frame
    /// sent after it).
    reset: std::collections::BTreeSet<u32>,
    /// Streams the gate answered (a HEADERS frame).
    answered: std::collections::BTreeSet<u32>,
    /// The error code of a GOAWAY.
    goaway: Option<u32>,
    /// Connection-level flow-control credit granted by WINDOW_UPDATE on stream 0.
    granted: u64,
}

impl FloodLog {
    fn note(&mut self, frame: &Frame) {
        let word = |at: usize| {
            frame
                .payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match frame.kind {
            FRAME_RST_STREAM if frame.stream > 0 => {
                if word(0) == Some(REFUSED_STREAM) {
                    self.refused.insert(frame.stream);
                }
                self.reset.insert(frame.stream);
            }
            FRAME_HEADERS if frame.stream > 0 => {
                self.answered.insert(frame.stream);
            }
            FRAME_GOAWAY => self.goaway = word(4),
            FRAME_WINDOW_UPDATE if frame.stream == 0 => {
                self.granted += u64::from(word(0).unwrap_or(0) & 0x7fff_ffff);
            }
            _ => {}
        }
    }

    /// Read and note frames until the gate has been quiet for `quiet`, or for at most `most`.
    async fn read(
        &mut self,
        connection: &mut RawConnection,
        buffer: &mut Vec<u8>,
        quiet: Duration,
        most: Duration,
    ) {
        let until = Instant::now() + most;
        while Instant::now() < until {
            match connection.read_some(quiet).await {
                Ok(more) if !more.is_empty() => buffer.extend(more),
                _ => break,
            }
            for frame in frames(buffer) {
                self.note(&frame);
            }
        }
    }
}

/// One connection opens more HTTP/2 streams than the gate allows, each with a well-formed but
/// unverifiable signature and a body that stalls, so the gate holds every stream it accepts
/// while it waits for the body; then every held stream sends a little more. The gate must
/// advertise a stream limit and refuse the streams past it, bound the body bytes it holds for
/// one connection (refusing the bodies past that at once with 503), and keep serving everyone
/// else meanwhile.
async fn stream_flood(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let gate = &field.main;
    let addr = gate.proxy_addr();
    let fail = |e: String| HarnessError::new("HTTP/2 flood", e);
    let mut connection = RawConnection::open(addr).await.map_err(fail)?;
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
    connection.send(&hello).await.map_err(fail)?;

    // The gate's SETTINGS come first (RFC 9113 section 3.4).
    let mut log = FloodLog::default();
    let mut buffer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let settings = 'read: loop {
        let mut settings = None;
        for frame in frames(&mut buffer) {
            log.note(&frame);
            if frame.kind == FRAME_SETTINGS && frame.flags & FLAG_ACK == 0 {
                settings = Some(frame);
            }
        }
        if let Some(settings) = settings {
            break 'read settings;
        }
        if Instant::now() > deadline {
            return Err(fail("no SETTINGS from the gate".to_owned()));
        }
        let more = connection
            .read_some(Duration::from_millis(200))
            .await
            .map_err(fail)?;
        buffer.extend(more);
    };
    let setting = |id: u16| {
        settings.payload.chunks_exact(6).find_map(|entry| {
            (u16::from_be_bytes([entry[0], entry[1]]) == id)
                .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
        })
    };
    let limit = setting(SETTINGS_MAX_CONCURRENT_STREAMS);
    connection
        .send(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]))
        .await
        .map_err(fail)?;

    let opened = limit.map_or(FLOOD_UNLIMITED, |l| l.min(1000) + FLOOD_EXTRA);
    let path = "/game/h2-flood";
    let declared = vec![b'x'; FLOOD_DECLARED];
    let call = Call::new(Method::POST, path)
        .body(declared.clone())
        .signed(&field.stranger.signer());
    let authority = addr.to_string();
    let length = declared.len().to_string();
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority.as_str()),
        ("content-length", length.as_str()),
    ];
    let names = [
        "x-gate-key-id",
        "x-gate-timestamp",
        "x-gate-nonce",
        "x-gate-signature",
    ];
    for name in names {
        if let Some(value) = call.header_value(name) {
            fields.push((name, value));
        }
    }
    let block = hpack_block(&fields);
    let before = gate.scrape().await?;
    let first = (FLOOD_DATA / opened as usize).clamp(1, FLOOD_FIRST);
    let mut flood = Vec::new();
    for n in 0..opened {
        let stream = 2 * n + 1;
        flood.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, stream, &block));
        flood.extend(frame(FRAME_DATA, 0, stream, &declared[..first]));
    }
    let sent_first = u64::from(opened) * first as u64;
    connection.send(&flood).await.map_err(fail)?;
    // Refusals come at once.
    let (quiet, most) = (Duration::from_millis(300), Duration::from_secs(3));
    log.read(&mut connection, &mut buffer, quiet, most).await;
    let refused_streams = log.refused.len() as u32;
    let reset_streams = log.reset.len();

    // Every stream still held sends a little more of its body, as far as flow control lets.
    // Connection-level credit: the initial window and what the gate has granted since, less
    // what was sent; a client may not send DATA past it.
    let mut credit = (INITIAL_WINDOW + log.granted).saturating_sub(sent_first);
    let held: Vec<u32> = (0..opened)
        .map(|n| 2 * n + 1)
        .filter(|stream| !log.reset.contains(stream))
        .collect();
    let mut more = Vec::new();
    let mut topped_up = 0;
    for stream in &held {
        if credit < FLOOD_MORE as u64 {
            break;
        }
        more.extend(frame(FRAME_DATA, 0, *stream, &declared[..FLOOD_MORE]));
        credit -= FLOOD_MORE as u64;
        topped_up += 1;
    }
    connection.send(&more).await.map_err(fail)?;
    log.read(&mut connection, &mut buffer, quiet, most).await;

    // Someone else, meanwhile, on a connection of their own.
    let bystander = Call::signed_post("/game/h2-flood-bystander", &field.new.signer());
    let started = Instant::now();
    let served = field.http.call(addr, &bystander).await;
    let took = started.elapsed();
    drop(connection);
    let after = gate.scrape().await?;

    // Distinct streams among those opened: the difference cannot underflow.
    let accepted = opened - reset_streams as u32;
    let expected_refused = limit.map_or(0, |l| opened.saturating_sub(l));
    let limit_text = limit.map_or("no limit advertised".to_owned(), |l| {
        format!("limit {l} advertised")
    });
    let held_ok =
        limit.is_some() && accepted <= limit.unwrap_or(0) && refused_streams >= expected_refused;
    let budget_metric = "sig_gate_body_budget_refused_total";
    let budget_refused = after.count_delta(&before, budget_metric, &[]);
    Ok(vec![
        Check::new(
            "concurrent streams on one connection",
            format!(
                "a limit advertised in SETTINGS, and of limit+{FLOOD_EXTRA} streams those past it refused"
            ),
            format!(
                "{limit_text}; of {opened} streams {refused_streams} refused (REFUSED_STREAM), \
                 {} reset otherwise, {accepted} held open{}",
                reset_streams - refused_streams as usize,
                log.goaway
                    .map_or(String::new(), |code| format!(", GOAWAY code {code:#x}"))
            ),
            held_ok,
        ),
        Check::new(
            "body bytes held for one connection",
            format!(
                "bounded: of the held streams sending {FLOOD_MORE} bytes more each, those past \
                 the connection's share answered at once (503), counted in {budget_metric}"
            ),
            format!(
                "{topped_up} streams sent {FLOOD_MORE} bytes more; {} answered, {budget_metric} \
                 +{budget_refused}",
                log.answered.len()
            ),
            budget_refused > 0 && !log.answered.is_empty(),
        ),
        match served {
            Ok(reply) => Check::new(
                "another client meanwhile",
                "200 within 1000 ms",
                format!("{} in {} ms", reply.summary(), took.as_millis()),
                reply.status == 200 && took < Duration::from_secs(1),
            ),
            Err(err) => Check::broken("another client meanwhile", "200 within 1000 ms", &err),
        },
        reached(field, path, 0, None),
    ])
}

/// `sig-gate check-config` on a TOML file whose secret line lacks its closing quote: the
/// parser's message quotes the offending line, and the secret must not come with it.
async fn config_parse_error(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let secret = Credential::generate("k9");
    let secret = secret.secret();
    let file = field.launcher.workdir().join("unterminated-secret.toml");
    let text = format!(
        "gate_listen = \"127.0.0.1:0\"\ninterservice_hmac_secret = \"{secret}\ngate_log_format = \"json\"\n"
    );
    std::fs::write(&file, text).map_err(|e| HarnessError::new("writing the TOML file", e))?;
    let env = GateEnv::default().set(vars::CONFIG_FILE, file.display().to_string());
    let finished = field
        .launcher
        .run_once(&["check-config"], &env, Duration::from_secs(10))
        .await?;
    let _ = std::fs::remove_file(&file);
    let output = format!("{}{}", finished.stdout, finished.stderr);
    // Any 12 consecutive characters of the secret count as a leak.
    let leaked =
        (0..=secret.len().saturating_sub(12)).any(|at| output.contains(&secret[at..at + 12]));
    Ok(vec![
        Check::equal(
            "exit code",
            "exit 2".to_owned(),
            finished
                .code
                .map_or("killed by a signal".to_owned(), |c| format!("exit {c}")),
        ),
        Check::new(
            "the message",
            "shows no part of the secret",
            if leaked {
                "SHOWS THE SECRET".to_owned()
            } else {
                "shows no part of the secret".to_owned()
            },
            !leaked,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_the_headers_the_gate_sets() {
        let key_id = &protocol::VERIFIED_KEY_ID;
        for name in [
            "x-gate-verified-key-id",
            "X_Gate_Verified_Key_Id",
            "x_gate_verified-key_id",
        ] {
            assert!(spells(name, key_id), "{name}");
        }
        assert!(!spells("x-gate-verified-key-ids", key_id));
        assert!(!spells("x-gate-key-id", key_id));
        let caller = &protocol::VERIFIED_CALLER;
        assert!(spells("X_GATE_VERIFIED_CALLER", caller));
        assert!(!spells("x-gate-verified-key-id", caller));
    }

    #[test]
    fn hpack_integers_follow_rfc_7541() {
        // RFC 7541 C.1.1 and C.1.2 (prefix bits of the first byte left 0 here).
        let mut out = Vec::new();
        hpack_integer(10, 5, &mut out);
        assert_eq!(out, [10]);
        out.clear();
        hpack_integer(1337, 5, &mut out);
        assert_eq!(out, [31, 154, 10]);
        let block = hpack_block(&[(":method", "POST")]);
        assert_eq!(block[..2], [0x00, 7]);
        assert_eq!(block.len(), 1 + 1 + 7 + 1 + 4);
    }

    #[test]
    fn frames_round_trip() {
        let mut bytes = frame(FRAME_RST_STREAM, 0, 3, &REFUSED_STREAM.to_be_bytes());
        bytes.extend(frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]));
        bytes.extend(&[0, 0]);
        let parsed = frames(&mut bytes);
        assert_eq!(parsed.len(), 2);
        assert_eq!((parsed[0].kind, parsed[0].stream), (FRAME_RST_STREAM, 3));
        assert_eq!(parsed[0].payload, REFUSED_STREAM.to_be_bytes());
        assert_eq!(
            (parsed[1].kind, parsed[1].flags),
            (FRAME_SETTINGS, FLAG_ACK)
        );
        assert_eq!(bytes, [0, 0], "a partial frame stays in the buffer");
    }

    #[test]
    fn every_scenario_has_a_name() {
        let names: std::collections::HashSet<_> = NAMES.iter().collect();
        assert_eq!(names.len(), NAMES.len());
    }
}
