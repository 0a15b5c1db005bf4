use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::record::Log;
use super::*;
use crate::client::{Call, Connection, Http, RawConnection, Reply};

const WITHIN: Duration = Duration::from_secs(5);

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).expect("the echo is JSON")
}

/// Send `GET target` on a connection of its own and return once the response head is in.
async fn open_stream(upstream: &RecordingUpstream, target: &str) -> http::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(upstream.addr())
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::get(target)
        .header("host", "upstream.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    tokio::time::timeout(WITHIN, sender.send_request(request))
        .await
        .expect("a response head in time")
        .expect("a response")
}

async fn next_event(body: &mut Incoming) -> Option<Bytes> {
    let frame = tokio::time::timeout(WITHIN, body.frame())
        .await
        .expect("an event or the end in time")?;
    Some(frame.expect("no error").into_data().expect("a data frame"))
}

async fn wait_for_total(upstream: &RecordingUpstream, total: usize) {
    let deadline = Instant::now() + WITHIN;
    while upstream.total() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(upstream.total(), total, "requests recorded");
}

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
    assert_eq!(seen.headers["x-gate-verified-key-id"], "k2");
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
    let connections: Vec<u64> = upstream.arrivals().iter().map(|a| a.connection).collect();
    assert_eq!(connections, [0, 1], "numbered across the restart");
}

#[tokio::test]
async fn echoes_what_it_received_and_records_it_in_order() {
    let upstream = RecordingUpstream::start().await.expect("start");
    let mut connection = Connection::open(upstream.addr()).await.expect("connect");
    let put = Call::new(Method::PUT, "/tools/a%2Fb?q=1&q=2")
        .header("x-custom", "kept")
        .body("{\"text\":\"héllo\"}");
    let reply = connection.send(&put, WITHIN).await.expect("answers");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["connection"], "keep-alive");
    assert_eq!(reply.headers["keep-alive"], "timeout=5");
    let echo = json(&reply);
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["target"], "/tools/a%2Fb?q=1&q=2");
    assert_eq!(echo["headers"]["x-custom"], "kept");
    assert_eq!(echo["body"], "{\"text\":\"héllo\"}");
    assert_eq!(echo["body_bytes"], "{\"text\":\"héllo\"}".len());

    let get = Call::new(Method::GET, "/second");
    let reply = connection.send(&get, WITHIN).await.expect("answers");
    assert_eq!(json(&reply)["body_bytes"], 0);

    let arrivals = upstream.arrivals();
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[0].method, Method::PUT);
    assert_eq!(arrivals[0].target, "/tools/a%2Fb?q=1&q=2");
    assert_eq!(arrivals[0].path(), "/tools/a%2Fb");
    assert_eq!(arrivals[0].headers["x-custom"], "kept");
    assert_eq!(arrivals[0].body, "{\"text\":\"héllo\"}".as_bytes());
    assert_eq!(arrivals[1].target, "/second");
    assert_eq!(
        arrivals[0].connection, arrivals[1].connection,
        "one keep-alive connection"
    );
    assert_eq!(upstream.seen("/tools/a%2Fb").count, 1);
}

#[tokio::test]
async fn hold_answers_once_released() {
    let upstream = RecordingUpstream::start().await.expect("start");
    let addr = upstream.addr();
    let held = tokio::spawn(async move {
        let mut connection = Connection::open(addr).await.expect("connect");
        connection
            .send(&Call::new(Method::GET, "/hold/a"), Duration::from_secs(30))
            .await
    });
    wait_for_total(&upstream, 1).await;
    // Recorded before it waits; only a release can answer it.
    assert!(!held.is_finished(), "held until released");
    upstream.release();
    let reply = held.await.expect("client task").expect("answered");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(json(&reply)["target"], "/hold/a");
}

#[tokio::test]
async fn slow_sleeps_for_the_milliseconds_asked() {
    let upstream = RecordingUpstream::start().await.expect("start");
    let http = Http::new(Duration::from_secs(5));
    let started = Instant::now();
    let reply = http
        .call(upstream.addr(), &Call::new(Method::GET, "/slow/x?ms=300"))
        .await
        .expect("answers");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(json(&reply)["target"], "/slow/x?ms=300");
}

#[tokio::test]
async fn events_stream_five_timed_events() {
    let upstream = RecordingUpstream::start().await.expect("start");
    let started = Instant::now();
    let response = open_stream(&upstream, "/events").await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    for n in 1..=EVENT_COUNT {
        let event = next_event(&mut body).await.expect("an event");
        assert_eq!(event, format!("id: {n}\ndata: {{\"event\":{n}}}\n\n"));
    }
    assert_eq!(next_event(&mut body).await, None, "the stream ends");
    let pauses = u32::try_from(EVENT_COUNT - 1).expect("a handful");
    assert!(started.elapsed() >= EVENT_INTERVAL * pauses);
    assert_eq!(upstream.seen("/events").count, 1);
}

#[tokio::test]
async fn held_events_send_the_second_once_released() {
    let upstream = RecordingUpstream::start().await.expect("start");
    let response = open_stream(&upstream, "/events/held").await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    assert_eq!(next_event(&mut body).await.expect("first"), HELD_FIRST);
    // Nothing else can come before the release.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), body.frame())
            .await
            .is_err()
    );
    upstream.release();
    assert_eq!(next_event(&mut body).await.expect("second"), HELD_SECOND);
    assert_eq!(next_event(&mut body).await, None, "the stream ends");
}

#[tokio::test]
async fn the_echo_routes_neither_hold_nor_slow() {
    let upstream = RecordingUpstream::start_with(Routes::Echo)
        .await
        .expect("start");
    let http = Http::new(Duration::from_secs(5));
    for target in ["/hold", "/slow?ms=30000", "/events/held"] {
        let reply = http
            .call(upstream.addr(), &Call::new(Method::GET, target))
            .await
            .expect("answers within 5 s");
        assert_eq!(json(&reply)["target"], target);
    }
    let response = open_stream(&upstream, "/events").await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
}

fn arrival(n: usize, path: &str, body: usize) -> Arrival {
    Arrival {
        connection: 0,
        method: Method::POST,
        target: format!("{path}?n={n}"),
        headers: HeaderMap::new(),
        body: Bytes::from(vec![b'x'; body]),
    }
}

#[test]
fn full_records_are_a_bounded_ring() {
    let mut log = Log::default();
    for n in 0..RECENT_REQUESTS + 10 {
        log.note(arrival(n, "/a", 1));
    }
    let recent = log.recent();
    assert_eq!(recent.len(), RECENT_REQUESTS);
    assert_eq!(recent[0].target, "/a?n=10", "the oldest give way");
    assert_eq!(log.total(), RECENT_REQUESTS + 10);
    assert_eq!(log.seen("/a").count, RECENT_REQUESTS + 10);

    let mut log = Log::default();
    let big = RECENT_BODY_BYTES / 3 + 1;
    for n in 0..4 {
        log.note(arrival(n, "/big", big));
    }
    let targets: Vec<String> = log.recent().into_iter().map(|a| a.target).collect();
    assert_eq!(targets, ["/big?n=2", "/big?n=3"], "bounded by body bytes");
    log.note(arrival(4, "/huge", RECENT_BODY_BYTES + 1));
    assert_eq!(
        log.recent().len(),
        1,
        "the newest is kept whatever its size"
    );
}

#[test]
fn path_summaries_keep_the_most_recent_paths() {
    let mut log = Log::default();
    log.note(arrival(0, "/kept", 0));
    for n in 1..MAX_PATHS {
        log.note(arrival(n, &format!("/p{n}"), 0));
    }
    log.note(arrival(MAX_PATHS, "/kept", 0));
    log.note(arrival(MAX_PATHS + 1, "/new", 0));
    assert_eq!(log.seen("/kept").count, 2, "seen recently: kept");
    assert_eq!(log.seen("/p1").count, 0, "the least recently seen gave way");
    assert_eq!(log.seen("/p2").count, 1);
    assert_eq!(log.seen("/new").count, 1);
}

#[test]
fn malformed_kinds_index_their_reuse_counts() {
    for (index, kind) in Malformed::ALL.into_iter().enumerate() {
        assert_eq!(kind as usize, index);
    }
}

#[tokio::test]
async fn malformed_answers_and_reuse_after_them() {
    let upstream = RecordingUpstream::start_malformed().await.expect("start");
    let mut connection = RawConnection::open(upstream.addr()).await.expect("connect");
    let clean = Call::new(Method::POST, "/clean?a=1").body("xy");
    connection
        .send(&clean.wire(upstream.addr()).bytes())
        .await
        .expect("send");
    let reply = connection.read_reply(WITHIN).await.expect("clean answer");
    assert_eq!(reply.status, StatusCode::OK);
    let echo = json(&reply);
    assert_eq!(
        (echo["target"].as_str(), echo["body"].as_str()),
        (Some("/clean?a=1"), Some("xy"))
    );

    let broken = Call::new(Method::GET, Malformed::Trailer.path());
    connection
        .send(&broken.wire(upstream.addr()).bytes())
        .await
        .expect("send");
    let err = connection.read_reply(WITHIN).await.expect_err("broken");
    assert!(
        err.contains("no colon here") || err.contains("chunk"),
        "{err}"
    );
    assert_eq!(upstream.seen("/clean").target, "/clean?a=1");
    assert_eq!(upstream.arrivals()[0].body, "xy");
    assert_eq!(upstream.reused_after(Malformed::Trailer), 0);

    // A second connection for the broken path, then a clean request on it: reuse.
    let mut again = RawConnection::open(upstream.addr()).await.expect("connect");
    let bytes = Call::new(Method::GET, Malformed::ChunkSize.path())
        .wire(upstream.addr())
        .bytes();
    again.send(&bytes).await.expect("send");
    assert!(again.read_reply(WITHIN).await.is_err(), "`3 zz` is no size");
    again
        .send(&clean.wire(upstream.addr()).bytes())
        .await
        .expect("send");
    wait_for_total(&upstream, 4).await;
    assert_eq!(upstream.reused_after(Malformed::ChunkSize), 1);
    assert_eq!(upstream.reused_after(Malformed::Trailer), 0);
}
