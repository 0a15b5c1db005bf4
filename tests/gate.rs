//! The gate end to end: a real gate and a real upstream on 127.0.0.1 port 0, requests over
//! real sockets. Each rejection is checked for status, JSON body, counter delta and that
//! nothing reached the upstream.

mod support;

use std::time::Duration;

use gate::server::Drain;
use gate::verify::malformed;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use runbook::upstream::{HELD_FIRST, HELD_SECOND, RecordingUpstream};
use support::{OLD_SECRET, SECRET, TestGate, send, send_lines, sign, sign_at};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INVALID: &str = "sig_gate_invalid_request_signature_total";

fn series(metric: &str, label: &str, value: &str) -> String {
    format!("{metric}{{{label}=\"{value}\"}}")
}

/// Send `headers` to the gate and check a 401 with `reason`, its counter and a quiet upstream.
async fn assert_rejected(
    gate: &TestGate,
    upstream: &RecordingUpstream,
    headers: &[(&str, String)],
    target: &str,
    body: &'static str,
    reason: &str,
) {
    let lines = support::lines(headers);
    assert_rejected_lines(gate, upstream, reason, &lines, target, body, reason).await;
}

/// [`assert_rejected`] for header lines that need not be text; `what` names the request in
/// failure messages.
async fn assert_rejected_lines(
    gate: &TestGate,
    upstream: &RecordingUpstream,
    what: &str,
    headers: &[(HeaderName, HeaderValue)],
    target: &str,
    body: &'static str,
    reason: &str,
) {
    let counter = series(INVALID, "reason", reason);
    let before = gate.metric(&counter).await;
    let rejected_before = gate
        .metric(&series("sig_gate_requests_total", "outcome", "rejected"))
        .await;
    let seen_before = upstream.total();
    let reply = send_lines(gate.addr, "POST", target, headers, body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        reply.text()
    );
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "invalid request signature", "reason": reason}),
        "{what}"
    );
    assert_eq!(
        reply.headers["www-authenticate"], r#"GateHMAC realm="sig-gate""#,
        "{what}"
    );
    assert_eq!(reply.headers["content-type"], "application/json", "{what}");
    assert_eq!(
        gate.metric(&counter).await,
        before + 1.0,
        "{what}: {reason} counted once"
    );
    assert_eq!(
        gate.metric(&series("sig_gate_requests_total", "outcome", "rejected"))
            .await,
        rejected_before + 1.0,
        "{what}"
    );
    assert_eq!(
        upstream.total(),
        seen_before,
        "{what}: nothing reached the upstream"
    );
}

fn drop_header(headers: &[(&'static str, String)], name: &str) -> Vec<(&'static str, String)> {
    headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_rejection_reason_end_to_end() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let strict = TestGate::start(
        &upstream.url(),
        &[("INTERSERVICE_HMAC_STRICT_KEY_ID", "true")],
    )
    .await;
    let body = r#"{"q":1}"#;
    let good = sign(SECRET, "current", "POST", "/tool?x=1", body.as_bytes());

    // missing_signature and malformed_signature: shared_malformed_header_cases_end_to_end.
    let stale = sign_at(
        SECRET,
        "current",
        "POST",
        "/tool?x=1",
        body.as_bytes(),
        gate::clock::unix_now() - 301,
    );
    assert_rejected(
        &gate,
        &upstream,
        &stale,
        "/tool?x=1",
        body,
        "stale_timestamp",
    )
    .await;
    let unlabelled = drop_header(&good, "X-Gate-Key-Id");
    assert_rejected(
        &strict,
        &upstream,
        &unlabelled,
        "/tool?x=1",
        body,
        "missing_key_id",
    )
    .await;
    let unknown = sign(SECRET, "someone-else", "POST", "/tool?x=1", body.as_bytes());
    assert_rejected(
        &strict,
        &upstream,
        &unknown,
        "/tool?x=1",
        body,
        "unknown_key_id",
    )
    .await;
    let wrong = sign(OLD_SECRET, "current", "POST", "/tool?x=1", body.as_bytes());
    assert_rejected(&gate, &upstream, &wrong, "/tool?x=1", body, "bad_signature").await;
    // Tampering with the body, path, query or method after signing.
    assert_rejected(
        &gate,
        &upstream,
        &good,
        "/tool?x=1",
        r#"{"q":2}"#,
        "bad_signature",
    )
    .await;
    assert_rejected(&gate, &upstream, &good, "/tool?x=2", body, "bad_signature").await;
    assert_rejected(&gate, &upstream, &good, "/tooL?x=1", body, "bad_signature").await;

    let reply = send(gate.addr, "POST", "/tool?x=1", &good, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_rejected(&gate, &upstream, &good, "/tool?x=1", body, "replayed_nonce").await;
    assert_eq!(upstream.total(), 1, "only the valid request went through");
}

/// Every case of `tests/vectors/malformed-headers.json` (the table the verifier's unit tests
/// and the Python interop tests read too), over a real socket: 401 with the case's reason,
/// counted once, nothing forwarded.
#[tokio::test]
async fn shared_malformed_header_cases_end_to_end() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/malformed-headers.json"
    );
    let text = std::fs::read_to_string(path).expect("the table is in the repository");
    let cases = malformed::Cases::parse(&text).expect("the table parses");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let body = r#"{"q":1}"#;
    for case in &cases {
        // A fresh signature per case, so that no case is a replay of another.
        let good = support::lines(&sign(
            SECRET,
            "current",
            "POST",
            "/tool?x=1",
            body.as_bytes(),
        ));
        let lines = case.apply(good.iter().map(|(name, value)| (name, value)));
        let reason = case.reason().as_str();
        assert_rejected_lines(
            &gate,
            &upstream,
            case.name(),
            &lines,
            "/tool?x=1",
            body,
            reason,
        )
        .await;
    }
    let good = sign(SECRET, "current", "POST", "/tool?x=1", body.as_bytes());
    let reply = send(gate.addr, "POST", "/tool?x=1", &good, body).await;
    assert_eq!(reply.status, StatusCode::OK, "the unchanged request passes");
}

#[tokio::test]
async fn valid_requests_are_forwarded_unchanged_but_for_proxy_headers() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[("INTERSERVICE_HMAC_KEY_ID", "k-2026-11")],
    )
    .await;
    let target = "/tools/a%2Fb%20c?q=a+b&q=%20&z";
    let body = "{\"text\":\"héllo ✓\"}";
    // The client claims another label; the gate reports the configured key id that verified.
    let mut headers = sign(SECRET, "claimed-label", "PUT", target, body.as_bytes());
    headers.push(("X-Gate-Verified-Key-Id", "spoofed".into()));
    headers.push(("X-Forwarded-For", "203.0.113.7".into()));
    headers.push(("Connection", "keep-alive, X-Hop".into()));
    headers.push(("X-Hop", "dropped".into()));
    headers.push(("Keep-Alive", "timeout=5".into()));
    headers.push(("X-Custom", "kept".into()));
    let reply = send(gate.addr, "PUT", target, &headers, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(
        (echo["method"].as_str(), echo["target"].as_str()),
        (Some("PUT"), Some(target)),
        "the upstream's echo of what it received"
    );
    assert!(
        !reply.headers.contains_key("keep-alive"),
        "hop-by-hop response headers dropped"
    );

    let seen = upstream.arrivals();
    let seen = seen.last().expect("forwarded");
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.target, target);
    assert_eq!(seen.body, body.as_bytes());
    let h = &seen.headers;
    assert_eq!(h["host"], "tool-gate.internal", "Host unchanged");
    assert_eq!(h["x-gate-verified-key-id"], "k-2026-11");
    assert_eq!(h.get_all("x-gate-verified-key-id").iter().count(), 1);
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert!(h.contains_key("x-request-id"), "request id generated");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(
        h["x-gate-signature"],
        headers[3].1.as_str(),
        "signature headers forwarded"
    );
    for hop in ["connection", "keep-alive", "x-hop"] {
        assert!(!h.contains_key(hop), "{hop} removed");
    }
    assert_eq!(
        gate.metric(&series("sig_gate_verified_total", "slot", "current"))
            .await,
        1.0
    );
    assert_eq!(
        gate.metric(&series("sig_gate_requests_total", "outcome", "forwarded"))
            .await,
        1.0
    );

    // A client's request id is kept.
    let mut headers = sign(SECRET, "k-2026-11", "GET", "/x", b"");
    headers.push(("X-Request-Id", "trace-abc".into()));
    assert_eq!(
        send(gate.addr, "GET", "/x", &headers, "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        upstream.arrivals().last().expect("forwarded").headers["x-request-id"],
        "trace-abc"
    );
}

#[tokio::test]
async fn dual_secret_mode_accepts_both_and_reports_the_slot() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let vars = [
        ("INTERSERVICE_HMAC_SECRET_PREV", OLD_SECRET),
        ("INTERSERVICE_HMAC_KEY_ID", "k-new"),
        ("INTERSERVICE_HMAC_KEY_ID_PREV", "k-old"),
    ];
    let gate = TestGate::start(&upstream.url(), &vars).await;
    for (secret, label, slot, id) in [
        (SECRET, "k-new", "current", "k-new"),
        (OLD_SECRET, "whatever", "previous", "k-old"),
    ] {
        let reply = send(
            gate.addr,
            "GET",
            "/t",
            &sign(secret, label, "GET", "/t", b""),
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            upstream.arrivals().last().expect("forwarded").headers["x-gate-verified-key-id"],
            id
        );
        assert_eq!(
            gate.metric(&series("sig_gate_verified_total", "slot", slot))
                .await,
            1.0
        );
    }
    let info = gate.metrics().await;
    let config_info = info
        .keys()
        .find(|k| k.starts_with("sig_gate_config_info"))
        .expect("config info");
    assert!(
        config_info.contains(r#"mode="dual""#) && config_info.contains(r#"key_id_prev="k-old""#),
        "{config_info}"
    );
    for secret in [SECRET, OLD_SECRET] {
        assert!(!config_info.contains(secret));
    }

    // Strict mode binds the label: the old secret under the new label is refused.
    let strict_vars = [
        vars[0],
        vars[1],
        vars[2],
        ("INTERSERVICE_HMAC_STRICT_KEY_ID", "yes"),
    ];
    let strict = TestGate::start(&upstream.url(), &strict_vars).await;
    let mislabelled = sign(OLD_SECRET, "k-new", "GET", "/t", b"");
    assert_rejected(&strict, &upstream, &mislabelled, "/t", "", "bad_signature").await;
    let labelled = sign(OLD_SECRET, "k-old", "GET", "/t", b"");
    assert_eq!(
        send(strict.addr, "GET", "/t", &labelled, "").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn report_only_forwards_and_counts_without_vouching() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("REQUIRE_SIGNATURE", "false"),
            ("GATE_NONCE_CACHE_CAPACITY", "1"),
        ],
    )
    .await;
    let spoof = [("X-Gate-Verified-Key-Id", "current".to_string())];
    let reply = send(gate.addr, "GET", "/unsigned", &spoof, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        !upstream.arrivals()[0]
            .headers
            .contains_key("x-gate-verified-key-id")
    );
    assert_eq!(
        gate.metric(&series(INVALID, "reason", "missing_signature"))
            .await,
        1.0
    );

    let good = sign(SECRET, "current", "GET", "/signed", b"");
    assert_eq!(
        send(gate.addr, "GET", "/signed", &good, "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        upstream.arrivals()[1].headers["x-gate-verified-key-id"],
        "current"
    );
    // A replay and a full replay cache are counted but forwarded.
    assert_eq!(
        send(gate.addr, "GET", "/signed", &good, "").await.status,
        StatusCode::OK
    );
    assert!(
        !upstream.arrivals()[2]
            .headers
            .contains_key("x-gate-verified-key-id")
    );
    assert_eq!(
        gate.metric(&series(INVALID, "reason", "replayed_nonce"))
            .await,
        1.0
    );
    let other = sign(SECRET, "current", "GET", "/signed", b"");
    assert_eq!(
        send(gate.addr, "GET", "/signed", &other, "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        gate.metric(&series(
            "sig_gate_rejected_other_total",
            "reason",
            "replay_cache_full"
        ))
        .await,
        1.0
    );
    assert_eq!(
        gate.metric(&series("sig_gate_requests_total", "outcome", "forwarded"))
            .await,
        4.0
    );
    assert_eq!(
        gate.metric(&series("sig_gate_requests_total", "outcome", "rejected"))
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_full_replay_cache_fails_closed() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_NONCE_CACHE_CAPACITY", "2")]).await;
    for _ in 0..2 {
        let headers = sign(SECRET, "current", "GET", "/", b"");
        assert_eq!(
            send(gate.addr, "GET", "/", &headers, "").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(gate.metric("sig_gate_nonce_cache_entries").await, 2.0);
    let headers = sign(SECRET, "current", "GET", "/", b"");
    let reply = send(gate.addr, "GET", "/", &headers, "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "replay cache full"})
    );
    assert_eq!(
        gate.metric(&series(
            "sig_gate_rejected_other_total",
            "reason",
            "replay_cache_full"
        ))
        .await,
        1.0
    );
    assert_eq!(gate.metric("sig_gate_nonce_cache_entries").await, 2.0);
    assert_eq!(upstream.total(), 2);
}

#[tokio::test]
async fn unsigned_paths_are_exempt_and_never_vouched_for() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[("GATE_UNSIGNED_PATHS", "/healthz, /public/info")],
    )
    .await;
    let spoof = [("X-Gate-Verified-Key-Id", "current".to_string())];
    let reply = send(gate.addr, "GET", "/healthz?probe=1", &spoof, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        !upstream.arrivals()[0]
            .headers
            .contains_key("x-gate-verified-key-id")
    );
    assert_eq!(
        gate.metric(&series("sig_gate_requests_total", "outcome", "exempt"))
            .await,
        1.0
    );
    // Exact match on the raw path: a different spelling is not exempt.
    let reply = send(gate.addr, "GET", "/healthz/", &[], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn oversized_bodies_get_413_on_every_path() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_MAX_BODY_BYTES", "16"),
            ("GATE_UNSIGNED_PATHS", "/open"),
        ],
    )
    .await;
    let big = "x".repeat(17);
    let headers = sign(SECRET, "current", "POST", "/t", big.as_bytes());
    for (target, headers) in [("/t", headers), ("/open", Vec::new())] {
        let reply = send(gate.addr, "POST", target, &headers, big.clone()).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{target}");
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": "request body too large"})
        );
    }
    // A streamed (chunked) body without Content-Length is cut off at the limit too.
    let mut stream = tokio::net::TcpStream::connect(gate.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"POST /open HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
        .await
        .expect("write");
    let mut reply = vec![0u8; 256];
    let n = stream.read(&mut reply).await.expect("read");
    assert!(
        String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&reply[..n])
    );
    assert_eq!(
        gate.metric(&series(
            "sig_gate_rejected_other_total",
            "reason",
            "body_too_large"
        ))
        .await,
        3.0
    );
    assert_eq!(
        gate.metric(&series("sig_gate_requests_total", "outcome", "rejected"))
            .await,
        3.0
    );
    assert_eq!(upstream.total(), 0);
}

#[tokio::test]
async fn upstream_failures_become_502_and_504() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let gate = TestGate::start(&closed_url, &[("GATE_UNSIGNED_PATHS", "/open")]).await;
    let reply = send(
        gate.addr,
        "GET",
        "/x",
        &sign(SECRET, "current", "GET", "/x", b""),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "upstream unavailable"})
    );
    assert_eq!(
        send(gate.addr, "GET", "/open", &[], "").await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        gate.metric(&series(
            "sig_gate_requests_total",
            "outcome",
            "upstream_error"
        ))
        .await,
        2.0
    );

    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_UPSTREAM_TIMEOUT_SECS", "1")]).await;
    // A quick exchange first, then a pause past its deadline: the slow request reuses that
    // upstream connection, whose timer still holds the first deadline, already passed. The
    // timeout must still count from the slow request's own start.
    let quick = sign(SECRET, "current", "GET", "/x", b"");
    assert_eq!(
        send(gate.addr, "GET", "/x", &quick, "").await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = std::time::Instant::now();
    let reply = send(
        gate.addr,
        "GET",
        "/slow",
        &sign(SECRET, "current", "GET", "/slow", b""),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "504 before the timeout"
    );
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "upstream timeout"})
    );
    assert_eq!(
        gate.metric(&series(
            "sig_gate_requests_total",
            "outcome",
            "upstream_error"
        ))
        .await,
        1.0
    );
}

#[tokio::test]
async fn server_sent_events_stream_through_unbuffered() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let headers = sign(SECRET, "current", "GET", "/events/held", b"");
    let response = support::start_request(gate.addr, "GET", "/events/held", &headers, "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // The upstream holds the second event until released: the first must arrive on its own.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first event arrives while the stream is still open")
        .expect("a frame")
        .expect("no error");
    assert_eq!(first.into_data().expect("data"), HELD_FIRST);
    upstream.release();
    let second = body.frame().await.expect("a frame").expect("no error");
    assert_eq!(second.into_data().expect("data"), HELD_SECOND);
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let stream = tokio::net::TcpStream::connect(gate.addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    let body = "h2 body";
    let mut request = http::Request::builder()
        .method("POST")
        .uri("http://tool-gate.internal/h2?x=1");
    for (name, value) in sign(SECRET, "current", "POST", "/h2?x=1", body.as_bytes()) {
        request = request.header(name, value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let seen = upstream.arrivals();
    assert_eq!(seen[0].target, "/h2?x=1");
    assert_eq!(
        seen[0].headers["host"], "tool-gate.internal",
        ":authority becomes Host"
    );
    assert_eq!(seen[0].body, body.as_bytes());
}

#[tokio::test]
async fn metrics_exist_at_zero_from_start_up() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let metrics = gate.metrics().await;
    let mut expected: Vec<String> = Vec::new();
    for outcome in ["forwarded", "rejected", "exempt", "upstream_error"] {
        expected.push(series("sig_gate_requests_total", "outcome", outcome));
    }
    for reason in gate::verify::Reason::ALL {
        expected.push(series(INVALID, "reason", reason.as_str()));
    }
    for reason in ["body_too_large", "replay_cache_full"] {
        expected.push(series("sig_gate_rejected_other_total", "reason", reason));
    }
    for slot in ["current", "previous"] {
        expected.push(series("sig_gate_verified_total", "slot", slot));
    }
    expected.extend(
        [
            "sig_gate_request_duration_seconds_count",
            "sig_gate_clock_skew_seconds_count",
            "sig_gate_nonce_cache_entries",
        ]
        .map(String::from),
    );
    for name in expected {
        assert_eq!(metrics.get(&name), Some(&0.0), "{name} exported at 0");
    }
    let info = metrics
        .iter()
        .find(|(k, _)| k.starts_with("sig_gate_config_info{"))
        .expect("config info");
    assert_eq!(*info.1, 1.0);
    let fingerprint = gate::keyring::Secret::new(SECRET).fingerprint();
    assert!(
        info.0.contains(&format!(r#"fingerprint="{fingerprint}""#)),
        "{}",
        info.0
    );
    assert!(info.0.contains(r#"fingerprint_prev="""#) && info.0.contains(r#"mode="single""#));

    // The names the deployment files rely on are exactly what the gate exports.
    let listed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/metrics.txt"));
    if let Ok(listed) = listed {
        let families: std::collections::BTreeSet<&str> = metrics
            .keys()
            .map(|k| k.split(['{', ' ']).next().unwrap_or(k))
            .map(|k| {
                k.trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count")
            })
            .collect();
        for name in listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            assert!(
                families.contains(name),
                "deploy/metrics.txt lists {name}, which the gate does not export"
            );
        }
    }

    // Clock skew is observed for stale timestamps too.
    let stale = sign_at(
        SECRET,
        "current",
        "GET",
        "/",
        b"",
        gate::clock::unix_now() - 1000,
    );
    send(gate.addr, "GET", "/", &stale, "").await;
    assert_eq!(gate.metric("sig_gate_clock_skew_seconds_count").await, 1.0);
    assert!(gate.metric("sig_gate_clock_skew_seconds_sum").await >= 1000.0);
}

#[tokio::test]
async fn admin_endpoints_and_graceful_drain_of_an_in_flight_request() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let mut gate = TestGate::start(&upstream.url(), &[]).await;
    assert_eq!(
        send(gate.admin, "GET", "/healthz", &[], "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(gate.admin, "GET", "/readyz", &[], "").await.status,
        StatusCode::OK
    );

    let headers = sign(SECRET, "current", "GET", "/hold", b"");
    let addr = gate.addr;
    let in_flight = tokio::spawn(async move { send(addr, "GET", "/hold", &headers, "").await });
    while upstream.total() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.begin_shutdown();
    // Readiness flips at once while the admin listener keeps answering.
    let mut ready = StatusCode::OK;
    for _ in 0..100 {
        ready = send(gate.admin, "GET", "/readyz", &[], "").await.status;
        if ready == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        send(gate.admin, "GET", "/healthz", &[], "").await.status,
        StatusCode::OK
    );
    upstream.release();
    let reply = in_flight.await.expect("client task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["target"], "/hold");
    assert_eq!(
        reply.headers["connection"], "close",
        "in-flight requests finish with Connection: close"
    );
    assert_eq!(gate.stop().await, Drain::Complete);
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_HEADER_READ_TIMEOUT_SECS", "1"),
            ("GATE_BODY_READ_TIMEOUT_SECS", "1"),
            ("GATE_UNSIGNED_PATHS", "/open"),
        ],
    )
    .await;
    // A request head that never ends: the connection is closed.
    let mut stream = tokio::net::TcpStream::connect(gate.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).contains("408"));
    // A body that never completes: 408.
    let mut stream = tokio::net::TcpStream::connect(gate.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"POST /open HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345")
        .await
        .expect("write");
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(upstream.total(), 0);
}

#[tokio::test]
async fn two_processes_can_share_a_port_with_so_reuseport() {
    let first = gate::server::bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = first.local_addr().expect("addr");
    let second = gate::server::bind_reuseport(addr).expect("a second listener binds the same port");
    assert_eq!(second.local_addr().expect("addr"), addr);
}

#[tokio::test]
async fn a_body_streamed_in_pieces_is_verified_whole_and_forwarded_with_its_length() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_MAX_BODY_BYTES", "40")]).await;
    let pieces: [&[u8]; 3] = [b"{\"tool\":", b"\"search\",", b"\"q\":\"x\"}"];
    let body = pieces.concat();
    let mut stream = tokio::net::TcpStream::connect(gate.addr)
        .await
        .expect("connect");
    let mut head = String::from("POST /t HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n");
    for (name, value) in sign(SECRET, "current", "POST", "/t", &body) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(b"\r\n").await.expect("head end");
    for piece in pieces {
        // Separate writes, apart in time: the gate sees separate body frames.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let chunk = format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            String::from_utf8_lossy(piece)
        );
        stream.write_all(chunk.as_bytes()).await.expect("chunk");
    }
    stream.write_all(b"0\r\n\r\n").await.expect("last chunk");
    let mut reply = vec![0u8; 512];
    let n = stream.read(&mut reply).await.expect("read");
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = upstream.arrivals();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body);
    assert_eq!(seen[0].headers["content-length"], body.len().to_string());
    assert!(!seen[0].headers.contains_key("transfer-encoding"));
}
