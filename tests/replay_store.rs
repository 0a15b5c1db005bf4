//! The shared replay store end to end (docs/operations.md, "Shared replay store"): real gates in
//! front of a real upstream, recording nonces in real `redis-server` processes that each test
//! starts on its own loopback ports, kills, stalls and restarts. Nothing of Redis is mocked.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use runbook::process::{GateEnv, Launcher, Workdir};
use runbook::redis::{RedisCluster, RedisServer, free_port};
use runbook::upstream::RecordingUpstream;
use support::{Reply, SECRET, TestGate, send, sign, sign_at};

const STORE: &str = "GATE_REPLAY_STORE";
const TIMEOUT_MS: &str = "GATE_REPLAY_STORE_TIMEOUT_MS";
const UNAVAILABLE: &str = r#"{"error":"replay store unavailable"}"#;
const UNAVAILABLE_SERIES: &str =
    r#"sig_gate_rejected_other_total{reason="replay_store_unavailable"}"#;
const UP: &str = "sig_gate_replay_store_up";
const REPLAYED: &str = r#"sig_gate_invalid_request_signature_total{reason="replayed_nonce"}"#;

/// Budget for the tests that expect answers: far above a loopback round trip on a busy machine.
const EASY_BUDGET_MS: &str = "2000";
/// Budget for the fault tests, and the margin allowed on top of it for a refusal to arrive.
const FAULT_BUDGET: Duration = Duration::from_millis(300);
const MARGIN: Duration = Duration::from_millis(3000);

/// One signed `POST /tool` with a fresh nonce: its headers and body.
fn signed() -> (Vec<(&'static str, String)>, &'static str) {
    let body = r#"{"q":1}"#;
    (
        sign(SECRET, "current", "POST", "/tool", body.as_bytes()),
        body,
    )
}

async fn post(gate: &TestGate, request: &(Vec<(&'static str, String)>, &'static str)) -> Reply {
    send(gate.addr, "POST", "/tool", &request.0, request.1).await
}

fn nonce_of(request: &(Vec<(&'static str, String)>, &'static str)) -> String {
    request
        .0
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-gate-nonce"))
        .map(|(_, value)| value.clone())
        .expect("signed requests carry a nonce")
}

fn assert_replayed(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        reply.text()
    );
    assert_eq!(reply.json()["reason"], "replayed_nonce", "{what}");
}

fn unix_now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

/// Send fresh signed requests until one passes (the store is back), within `within`.
async fn until_a_request_passes(gate: &TestGate, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let reply = post(gate, &signed()).await;
        if reply.status == StatusCode::OK {
            return;
        }
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text()
        );
        assert!(
            Instant::now() < deadline,
            "no request passed within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until `series` reads `value` (the probe runs once a second).
async fn until_metric(gate: &TestGate, series: &str, value: f64, within: Duration) {
    let deadline = Instant::now() + within;
    while gate.metric(series).await != value {
        assert!(Instant::now() < deadline, "{series} did not reach {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_sharing_redis_refuse_a_replay_at_either_and_after_a_restart() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let store = [
        (STORE, redis.url()),
        (TIMEOUT_MS, EASY_BUDGET_MS.to_owned()),
        ("GATE_REPLAY_STORE_PREFIX", "team-a:".to_owned()),
        ("GATE_CLOCK_SKEW_SECS", "120".to_owned()),
    ];
    let vars: Vec<(&str, &str)> = store.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let a = TestGate::start(&upstream.url(), &vars).await;
    let b = TestGate::start(&upstream.url(), &vars).await;

    // Signed 10 s ago: the key must expire 121 s after that timestamp.
    let timestamp = gate::clock::unix_now() - 10;
    let body = r#"{"q":2}"#;
    let request = (
        sign_at(
            SECRET,
            "current",
            "POST",
            "/tool",
            body.as_bytes(),
            timestamp,
        ),
        body,
    );
    let before_ms = unix_now_ms();
    assert_eq!(post(&a, &request).await.status, StatusCode::OK);
    // The gate set the TTL with its clock somewhere between `before_ms` and `after_ms`, and
    // Redis counted it down since: the expiry is 121 s after the timestamp, to the
    // millisecond.
    let key = format!("team-a:nonce:{}", nonce_of(&request));
    let pttl: i64 = redis
        .cli(&["PTTL", &key])
        .expect("redis-cli")
        .parse()
        .expect("PTTL is a number");
    let after_ms = unix_now_ms();
    let expiry_ms = (i64::try_from(timestamp).expect("fits") + 121) * 1000;
    assert!(
        (expiry_ms - after_ms - 5..=expiry_ms - before_ms + 5).contains(&pttl),
        "PTTL {pttl} ms; the expiry (timestamp + GATE_CLOCK_SKEW_SECS + 1 s) was between \
         {} and {} ms away",
        expiry_ms - after_ms,
        expiry_ms - before_ms
    );
    assert_eq!(redis.cli(&["GET", &key]).expect("redis-cli"), "1");
    assert_replayed(&post(&a, &request).await, "again to the same gate");
    assert_replayed(&post(&b, &request).await, "to the other gate");
    assert_eq!(
        upstream.total(),
        1,
        "the replays never reached the upstream"
    );
    assert_eq!(a.metric(REPLAYED).await + b.metric(REPLAYED).await, 2.0);

    // The series of a Redis store.
    let metrics = a.metrics().await;
    assert_eq!(metrics.get(UP), Some(&1.0));
    assert!(metrics["sig_gate_replay_store_duration_seconds_count"] >= 2.0);
    for kind in ["timeout", "connection", "reply"] {
        let series = format!(r#"sig_gate_replay_store_errors_total{{kind="{kind}"}}"#);
        assert_eq!(metrics.get(&series), Some(&0.0), "{series}");
    }
    assert_eq!(metrics.get(UNAVAILABLE_SERIES), Some(&0.0));
    assert!(
        metrics
            .keys()
            .any(|series| series.starts_with("sig_gate_config_info")
                && series.contains(r#"replay_store="redis""#)),
        "config_info carries replay_store=\"redis\""
    );

    // A restarted gate still knows the nonce.
    assert!(matches!(a.stop().await, gate::server::Drain::Complete));
    let restarted = TestGate::start(&upstream.url(), &vars).await;
    assert_replayed(&post(&restarted, &request).await, "after a restart");
    assert_eq!(post(&restarted, &signed()).await.status, StatusCode::OK);
    assert_eq!(upstream.total(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_is_always_up_and_labelled() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let metrics = gate.metrics().await;
    assert_eq!(metrics.get(UP), Some(&1.0));
    assert_eq!(metrics.get(UNAVAILABLE_SERIES), Some(&0.0));
    assert_eq!(
        metrics.get("sig_gate_replay_store_duration_seconds_count"),
        Some(&0.0)
    );
    assert!(metrics.keys().any(|series| {
        series.starts_with("sig_gate_config_info") && series.contains(r#"replay_store="memory""#)
    }));
}

/// A Redis, an upstream, and a gate with `workers` workers in front of it keeping its nonces in
/// that Redis, with a budget that a healthy Redis always meets.
async fn gate_on_redis(workers: &str) -> (RedisServer, RecordingUpstream, TestGate) {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let url = redis.url();
    let vars = [
        (STORE, url.as_str()),
        (TIMEOUT_MS, EASY_BUDGET_MS),
        ("GATE_WORKERS", workers),
    ];
    let gate = TestGate::start(&upstream.url(), &vars).await;
    (redis, upstream, gate)
}

/// Each worker keeps one connection to the store, opened at its first request, and the probe
/// one more: `GATE_WORKERS` + 1 in all, however many requests and connections the gate serves
/// (docs/operations.md sizes Redis's `maxclients` by it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_holds_one_store_connection_per_worker_and_one_for_its_probe() {
    let (redis, _upstream, gate) = gate_on_redis("2").await;
    // Every request is a new client connection; the kernel spreads them over the two workers.
    for sent in 0.. {
        let metrics = gate.metrics().await;
        let accepted = |worker: &str| {
            let series = format!(r#"sig_gate_worker_connections_total{{worker="{worker}"}}"#);
            metrics.get(&series).copied().unwrap_or(0.0)
        };
        if accepted("0") > 0.0 && accepted("1") > 0.0 {
            break;
        }
        assert!(sent < 200, "200 connections all went to one worker");
        assert_eq!(post(&gate, &signed()).await.status, StatusCode::OK);
    }
    for _ in 0..20 {
        assert_eq!(post(&gate, &signed()).await.status, StatusCode::OK);
    }
    let clients = redis.cli(&["CLIENT", "LIST"]).expect("CLIENT LIST");
    // The listing's own connection (redis-cli) names its command.
    let gate_connections = clients
        .lines()
        .filter(|line| !line.is_empty() && !line.contains("cmd=client"))
        .count();
    assert_eq!(gate_connections, 3, "{clients}");
}

/// A worker sends its store commands in batches (one on its way, the rest queued for the
/// next), so many requests share one pipeline: each must still get its own command's answer.
/// Requests in flight together on one worker: fresh nonces pass, replays of nonces accepted
/// before are refused, and of two requests carrying the same new nonce exactly one passes; Redis
/// ran every command exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sharing_a_batch_each_get_their_own_answer() {
    let (redis, upstream, gate) = gate_on_redis("1").await;
    let accepted: Vec<_> = (0..60).map(|_| signed()).collect();
    for request in &accepted {
        assert_eq!(post(&gate, request).await.status, StatusCode::OK);
    }
    let sets_before = set_calls(&redis);

    // Interleaved: a fresh request, a replay, and a new nonce sent twice.
    let twice: Vec<_> = (0..30).map(|_| signed()).collect();
    let mut requests = Vec::new();
    for i in 0..60 {
        requests.push(("fresh", 0, signed()));
        requests.push(("replay", 0, accepted[i].clone()));
        if i % 2 == 0 {
            requests.push(("twice", i / 2, twice[i / 2].clone()));
            requests.push(("twice", i / 2, twice[i / 2].clone()));
        }
    }
    let addr = gate.addr;
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(kind, pair, request)| {
            tokio::spawn(async move {
                let reply = send(addr, "POST", "/tool", &request.0, request.1).await;
                (kind, pair, reply)
            })
        })
        .collect();
    let mut passed_of_pair = [0; 30];
    for task in tasks {
        let (kind, pair, reply) = task.await.expect("request task");
        match kind {
            "fresh" => assert_eq!(reply.status, StatusCode::OK, "{}", reply.text()),
            "replay" => assert_replayed(&reply, "a replay sharing a batch"),
            _ if reply.status == StatusCode::OK => passed_of_pair[pair] += 1,
            _ => assert_replayed(&reply, "the second of a pair"),
        }
    }
    assert_eq!(passed_of_pair, [1; 30], "one of each pair passed");
    assert_eq!(upstream.total(), 60 + 60 + 30);
    assert_eq!(set_calls(&redis) - sets_before, 60 + 60 + 60);
    for kind in ["timeout", "connection", "reply"] {
        let series = format!(r#"sig_gate_replay_store_errors_total{{kind="{kind}"}}"#);
        assert_eq!(gate.metric(&series).await, 0.0, "{series}");
    }
}

/// How many `SET` commands `redis` has run.
fn set_calls(redis: &RedisServer) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]).expect("INFO");
    let line = stats
        .lines()
        .find(|line| line.starts_with("cmdstat_set:"))
        .unwrap_or_else(|| panic!("no SET counted: {stats}"));
    let calls = line
        .split(&[':', ','][..])
        .find_map(|field| field.strip_prefix("calls="))
        .expect("calls=");
    calls.parse().expect("a count")
}

/// What one request of [`load`] saw.
struct Sent {
    started: Instant,
    took: Duration,
    status: StatusCode,
    body: String,
    nonce: String,
}

/// Signed requests from `clients` loops, each a fresh connection, until `stop` is set.
async fn load(addr: std::net::SocketAddr, clients: usize, stop: Arc<AtomicBool>) -> Vec<Sent> {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut sent = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let request = signed();
                    let started = Instant::now();
                    let reply = send(addr, "POST", "/tool", &request.0, request.1).await;
                    sent.push(Sent {
                        started,
                        took: started.elapsed(),
                        status: reply.status,
                        body: reply.text(),
                        nonce: nonce_of(&request),
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                sent
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all
}

/// Every request refused for the store: 503 with the documented body, within the budget and
/// the margin, and never forwarded; returns how many.
fn check_refusals(sent: &[Sent], upstream: &RecordingUpstream) -> usize {
    let forwarded: std::collections::HashSet<String> = upstream
        .arrivals()
        .iter()
        .filter_map(|seen| seen.headers.get("x-gate-nonce"))
        .map(|nonce| nonce.to_str().expect("ASCII nonce").to_owned())
        .collect();
    let mut refused = 0;
    for request in sent {
        assert!(
            request.took < FAULT_BUDGET + MARGIN,
            "a request waited {:?} (budget {FAULT_BUDGET:?})",
            request.took
        );
        match request.status {
            StatusCode::OK => assert!(forwarded.contains(&request.nonce)),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(request.body, UNAVAILABLE);
                assert!(
                    !forwarded.contains(&request.nonce),
                    "a refused request reached the upstream"
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", request.body),
        }
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_fails_closed_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start(&[]).expect("redis-server starts");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let budget = FAULT_BUDGET.as_millis().to_string();
    let url = redis.url();
    let gate = TestGate::start(
        &upstream.url(),
        &[(STORE, url.as_str()), (TIMEOUT_MS, budget.as_str())],
    )
    .await;
    until_a_request_passes(&gate, Duration::from_secs(10)).await;
    let rejected_before = gate
        .metric(r#"sig_gate_requests_total{outcome="rejected"}"#)
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(gate.addr, 4, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = running.await.expect("load");

    let after_kill: Vec<&Sent> = sent.iter().filter(|s| s.started >= killed).collect();
    assert!(
        after_kill.len() >= 8,
        "load kept going: {}",
        after_kill.len()
    );
    for request in &after_kill {
        assert_eq!(
            request.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "signed after the kill: {}",
            request.body
        );
    }
    assert!(
        sent.iter()
            .any(|s| s.started < killed && s.status == StatusCode::OK),
        "requests passed before the kill"
    );
    let refused = check_refusals(&sent, &upstream) as f64;
    assert_eq!(gate.metric(UNAVAILABLE_SERIES).await, refused);
    assert_eq!(
        gate.metric(r#"sig_gate_requests_total{outcome="rejected"}"#)
            .await,
        rejected_before + refused
    );
    let mut errors = 0.0;
    for kind in ["timeout", "connection", "reply"] {
        let series = format!(r#"sig_gate_replay_store_errors_total{{kind="{kind}"}}"#);
        errors += gate.metric(&series).await;
    }
    assert_eq!(errors, refused, "each refusal is one failed operation");
    until_metric(&gate, UP, 0.0, Duration::from_secs(5)).await;

    // Back on the same port: requests pass again, the same gate.
    redis.restart(None).expect("redis-server starts again");
    until_a_request_passes(&gate, Duration::from_secs(10)).await;
    until_metric(&gate, UP, 1.0, Duration::from_secs(5)).await;
    let request = signed();
    assert_eq!(post(&gate, &request).await.status, StatusCode::OK);
    assert_replayed(&post(&gate, &request).await, "after the store came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_fails_closed_within_the_budget() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let budget = FAULT_BUDGET.as_millis().to_string();
    let url = redis.url();
    let gate = TestGate::start(
        &upstream.url(),
        &[(STORE, url.as_str()), (TIMEOUT_MS, budget.as_str())],
    )
    .await;
    until_a_request_passes(&gate, Duration::from_secs(10)).await;
    let seen_before = upstream.total();

    // Every command, ours and the probe's, waits 8 s.
    assert_eq!(
        redis
            .cli(&["CLIENT", "PAUSE", "8000", "ALL"])
            .expect("redis-cli"),
        "OK"
    );
    let paused = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(gate.addr, 4, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = running.await.expect("load");
    assert!(
        paused.elapsed() < Duration::from_millis(7500),
        "the load outlasted the pause: the check below would not hold"
    );
    assert!(sent.len() >= 4, "load kept going: {}", sent.len());
    let refused = check_refusals(&sent, &upstream);
    assert_eq!(
        refused,
        sent.len(),
        "every request during the stall was refused"
    );
    assert_eq!(upstream.total(), seen_before, "nothing was forwarded");
    assert!(
        gate.metric(r#"sig_gate_replay_store_errors_total{kind="timeout"}"#)
            .await
            >= refused as f64
    );
    assert_eq!(gate.metric(UNAVAILABLE_SERIES).await, refused as f64);
    // Inside the gate, every store operation ended within a second (the budget is 0.3 s),
    // the timed-out ones included.
    let metrics = gate.metrics().await;
    assert_eq!(
        metrics[r#"sig_gate_replay_store_duration_seconds_bucket{le="1"}"#],
        metrics["sig_gate_replay_store_duration_seconds_count"]
    );
    until_metric(&gate, UP, 0.0, Duration::from_secs(3)).await;

    // Once the pause ends, requests pass again.
    until_a_request_passes(&gate, Duration::from_secs(15)).await;
    until_metric(&gate, UP, 1.0, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_within_the_budget_passes() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let url = redis.url();
    let gate = TestGate::start(
        &upstream.url(),
        &[(STORE, url.as_str()), (TIMEOUT_MS, "5000")],
    )
    .await;
    until_a_request_passes(&gate, Duration::from_secs(10)).await;
    // Slower than the client library's own default (500 ms), well within this budget.
    assert_eq!(
        redis
            .cli(&["CLIENT", "PAUSE", "1200", "ALL"])
            .expect("redis-cli"),
        "OK"
    );
    let started = Instant::now();
    let reply = post(&gate, &signed()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "the pause held the answer"
    );
    assert_eq!(gate.metric(UNAVAILABLE_SERIES).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_starts_with_redis_down_and_serves_once_it_is_up() {
    let port = free_port(false).expect("a free port");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let url = format!("redis://127.0.0.1:{port}");
    let budget = FAULT_BUDGET.as_millis().to_string();
    let gate = TestGate::start(
        &upstream.url(),
        &[(STORE, url.as_str()), (TIMEOUT_MS, budget.as_str())],
    )
    .await;
    let ready = support::send(gate.admin, "GET", "/readyz", &[], "").await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "/readyz does not wait for the store"
    );
    assert_eq!(gate.metric(UP).await, 0.0);
    for _ in 0..3 {
        let started = Instant::now();
        let reply = post(&gate, &signed()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.text(), UNAVAILABLE);
        assert!(started.elapsed() < FAULT_BUDGET + MARGIN);
    }
    assert!((upstream.total() == 0));
    assert_eq!(gate.metric(UNAVAILABLE_SERIES).await, 3.0);
    // Refused connections (a stall of this machine past the budget would count a timeout).
    let connection = gate
        .metric(r#"sig_gate_replay_store_errors_total{kind="connection"}"#)
        .await;
    let timeout = gate
        .metric(r#"sig_gate_replay_store_errors_total{kind="timeout"}"#)
        .await;
    assert!(connection >= 1.0 && connection + timeout == 3.0);

    let _redis = RedisServer::start_on(port, &[]).expect("redis-server starts");
    until_a_request_passes(&gate, Duration::from_secs(10)).await;
    until_metric(&gate, UP, 1.0, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_only_forwards_through_store_faults_and_counts_them() {
    let mut redis = RedisServer::start(&[]).expect("redis-server starts");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let budget = FAULT_BUDGET.as_millis().to_string();
    let url = redis.url();
    let gate = TestGate::start(
        &upstream.url(),
        &[
            (STORE, url.as_str()),
            (TIMEOUT_MS, budget.as_str()),
            ("REQUIRE_SIGNATURE", "false"),
        ],
    )
    .await;
    // Store answering: verified, so the upstream is told which key.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = upstream.total();
        assert_eq!(post(&gate, &signed()).await.status, StatusCode::OK);
        let seen = upstream.arrivals();
        assert_eq!(seen.len(), before + 1);
        if seen[before].headers.contains_key("x-gate-verified-key-id") {
            break;
        }
        assert!(Instant::now() < deadline, "the store never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted_before = gate.metric(UNAVAILABLE_SERIES).await;
    let forwarded_before = gate
        .metric(r#"sig_gate_requests_total{outcome="forwarded"}"#)
        .await;

    // Stalled, then killed: forwarded without the verified headers, and counted.
    assert_eq!(
        redis
            .cli(&["CLIENT", "PAUSE", "3000", "ALL"])
            .expect("redis-cli"),
        "OK"
    );
    let mut faults = 0.0;
    for fault in ["stalled", "killed"] {
        if fault == "killed" {
            redis.kill();
        }
        for _ in 0..3 {
            let request = signed();
            let started = Instant::now();
            let reply = post(&gate, &request).await;
            assert_eq!(reply.status, StatusCode::OK, "{fault}: {}", reply.text());
            assert!(started.elapsed() < FAULT_BUDGET + MARGIN, "{fault}");
            let seen = upstream.arrivals();
            let forwarded = seen.last().expect("forwarded");
            assert_eq!(
                forwarded.headers["x-gate-nonce"].to_str().ok(),
                Some(nonce_of(&request).as_str())
            );
            assert!(
                !forwarded.headers.contains_key("x-gate-verified-key-id"),
                "{fault}: not verified, so no verified key id"
            );
            assert!(!forwarded.headers.contains_key("x-gate-verified-caller"));
            faults += 1.0;
        }
    }
    assert_eq!(
        gate.metric(UNAVAILABLE_SERIES).await,
        counted_before + faults
    );
    assert_eq!(
        gate.metric(r#"sig_gate_requests_total{outcome="forwarded"}"#)
            .await,
        forwarded_before + faults
    );
    assert_eq!(
        gate.metric(r#"sig_gate_requests_total{outcome="rejected"}"#)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_shares_nonces_between_gates() {
    let cluster = RedisCluster::start().expect("the cluster forms");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    // One gate knows a single seed, the other all three.
    let one_seed = cluster.url(&[0]);
    let all_seeds = cluster.url(&[0, 1, 2]);
    let a = TestGate::start(
        &upstream.url(),
        &[(STORE, one_seed.as_str()), (TIMEOUT_MS, EASY_BUDGET_MS)],
    )
    .await;
    let b = TestGate::start(
        &upstream.url(),
        &[(STORE, all_seeds.as_str()), (TIMEOUT_MS, EASY_BUDGET_MS)],
    )
    .await;

    let requests: Vec<_> = (0..30).map(|_| signed()).collect();
    for request in &requests {
        let reply = post(&a, request).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    for request in &requests {
        assert_replayed(&post(&b, request).await, "to the other gate");
        assert_replayed(&post(&a, request).await, "to the same gate");
    }
    assert_eq!(upstream.total(), 30);
    // The keys are spread over the masters by hash slot.
    let holding = cluster
        .nodes
        .iter()
        .filter(|node| node.cli(&["DBSIZE"]).expect("redis-cli") != "0")
        .count();
    assert!(holding >= 2, "keys on {holding} of 3 masters");
    let key = format!("sig-gate:nonce:{}", nonce_of(&requests[0]));
    let pttl: i64 = cluster.nodes[0]
        .cli(&["-c", "PTTL", &key])
        .expect("redis-cli")
        .parse()
        .expect("PTTL is a number");
    assert!((200_000..=301_000).contains(&pttl), "PTTL {pttl}");
    let metrics = b.metrics().await;
    assert_eq!(metrics.get(UP), Some(&1.0));
    assert!(metrics.keys().any(|series| {
        series.starts_with("sig_gate_config_info")
            && series.contains(r#"replay_store="redis-cluster""#)
    }));

    // The whole cluster goes down: fail closed. It comes back (each node keeps its slots in
    // nodes.conf): both gates serve again without a restart.
    let mut cluster = cluster;
    for node in &mut cluster.nodes {
        node.kill();
    }
    for gate in [&a, &b] {
        let reply = post(gate, &signed()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.text(), UNAVAILABLE);
    }
    cluster.restart().expect("the cluster forms again");
    for gate in [&a, &b] {
        until_a_request_passes(gate, Duration::from_secs(30)).await;
    }
}

/// A password that must not appear anywhere the gate writes.
const PASSWORD: &str = "st0re-Pa55word-7c1e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_password_never_shows() {
    let mut redis = RedisServer::start(&["--requirepass", PASSWORD]).expect("redis-server starts");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let workdir = Workdir::create("replay-store-test").expect("workdir");
    let launcher = Launcher::new(env!("CARGO_BIN_EXE_sig-gate").into(), &workdir);
    let url = format!("redis://default:{PASSWORD}@127.0.0.1:{}", redis.port());
    let env = GateEnv::new(&upstream.url())
        .set("INTERSERVICE_HMAC_SECRET", SECRET)
        .set(STORE, url.clone())
        .set(TIMEOUT_MS, EASY_BUDGET_MS)
        .set("GATE_LOG", "debug");
    let mut checked = Vec::new();

    let config = launcher
        .run_once(&["check-config"], &env, Duration::from_secs(30))
        .await
        .expect("check-config");
    assert_eq!(config.code, Some(0), "{}", config.stderr);
    assert!(
        config.stdout.contains("replay store answers"),
        "{}",
        config.stdout
    );
    assert!(
        config
            .stdout
            .contains(&format!("redis://default:***@127.0.0.1:{}/0", redis.port())),
        "{}",
        config.stdout
    );
    checked.push(format!("check-config: {}{}", config.stdout, config.stderr));

    let gate = launcher
        .start_running("gate", &env, None)
        .await
        .expect("the gate starts");
    let view = TestGate::view(gate.proxy_addr(), gate.admin_addr());
    until_a_request_passes(&view, Duration::from_secs(10)).await;
    let request = signed();
    assert_eq!(post(&view, &request).await.status, StatusCode::OK);
    assert_replayed(&post(&view, &request).await, "with a password");
    checked.push(format!("log: {}", gate.log_tail().join("\n")));

    // The store changes its password under the gate: authentication fails from then on.
    redis
        .restart(Some(&["--requirepass", "another-password-123"]))
        .expect("redis-server starts again");
    let reply = post(&view, &signed()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    checked.push(format!("refusal: {}", reply.text()));
    until_metric(&view, UP, 0.0, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(3500)).await; // probes fail, the connection is replaced
    let log = gate.log_tail();
    assert!(
        log.iter()
            .any(|line| line.contains("replay store unavailable")),
        "the outage is logged: {log:?}"
    );
    checked.push(format!("log: {}", log.join("\n")));
    let metrics = support::send(view.admin, "GET", "/metrics", &[], "").await;
    checked.push(format!("metrics: {}", metrics.text()));
    let config = launcher
        .run_once(&["check-config"], &env, Duration::from_secs(30))
        .await
        .expect("check-config");
    assert_eq!(
        config.code,
        Some(0),
        "a store that does not answer is no config error"
    );
    assert!(
        config.stdout.contains("does NOT answer"),
        "{}",
        config.stdout
    );
    checked.push(format!("check-config: {}{}", config.stdout, config.stderr));

    // A refused URL is named without being quoted.
    let bad = env
        .clone()
        .set(STORE, format!("redis://default:{PASSWORD}@127.0.0.1"));
    let refused = launcher
        .run_once(&["check-config"], &bad, Duration::from_secs(30))
        .await
        .expect("check-config");
    assert_eq!(refused.code, Some(2));
    assert!(refused.stderr.contains(STORE), "{}", refused.stderr);
    checked.push(format!("refused: {}{}", refused.stdout, refused.stderr));

    for text in &checked {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }
}
