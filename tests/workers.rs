//! More than one worker (`GATE_WORKERS`): one replay cache, one connection cap and one set of
//! metrics for the whole process whichever worker a connection lands on, socket activation
//! shared by every worker, and a drain that waits for every worker's requests. In-process gates
//! on loopback, and real `sig-gate serve` processes for the signal and the inherited socket.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use runbook::process::{GateEnv, Launcher, Workdir};
use runbook::upstream::RecordingUpstream;
use support::{SECRET, TestGate, send, sign};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const WORKER_CONNECTIONS: &str = "sig_gate_worker_connections_total";

fn worker_series(worker: usize) -> String {
    format!("{WORKER_CONNECTIONS}{{worker=\"{worker}\"}}")
}

/// Connections each worker has served so far.
async fn accepted_by_worker(gate: &TestGate, workers: usize) -> Vec<f64> {
    let metrics = gate.metrics().await;
    (0..workers)
        .map(|worker| metrics.get(&worker_series(worker)).copied().unwrap_or(0.0))
        .collect()
}

/// Wait (generously) until `series` reads `value`; its last reading.
async fn await_metric(gate: &TestGate, series: &str, value: f64) -> f64 {
    let mut last = f64::NAN;
    for _ in 0..500 {
        last = gate.metric(series).await;
        if last == value {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last
}

/// One HTTP/1.1 keep-alive client connection.
struct KeepAlive {
    sender: SendRequest<Full<Bytes>>,
}

impl KeepAlive {
    async fn open(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        KeepAlive { sender }
    }

    /// Send one request on this connection; status and body.
    async fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, String)],
        body: &'static str,
    ) -> (StatusCode, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header("host", "tool-gate.internal");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        let response = self.sender.send_request(request).await.expect("response");
        support::status_and_body(response).await
    }
}

/// Open connections until one is served by a worker `wanted` accepts; the connection and the
/// worker that serves it. The test is the gate's only client, so the worker whose count goes up
/// is the one that took this connection.
async fn connect_to(
    gate: &TestGate,
    workers: usize,
    wanted: impl Fn(usize) -> bool,
) -> (KeepAlive, usize) {
    // A connection goes to the worker serving the fewest; between workers serving as many,
    // the kernel picks by a hash of its addresses: a few dozen tries find either worker.
    for _ in 0..200 {
        let before = accepted_by_worker(gate, workers).await;
        let connection = KeepAlive::open(gate.addr).await;
        let mut taker = None;
        for _ in 0..500 {
            let now = accepted_by_worker(gate, workers).await;
            taker = (0..workers).find(|&w| now[w] > before[w]);
            if taker.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let worker = taker.expect("some worker accepts the connection");
        if wanted(worker) {
            return (connection, worker);
        }
    }
    panic!("no connection reached the wanted worker in 200 tries");
}

#[tokio::test]
async fn a_replay_is_rejected_by_the_other_worker() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_WORKERS", "2")]).await;
    for round in 0..4 {
        let target = format!("/cross-worker/{round}");
        let headers = sign(SECRET, "current", "POST", &target, b"{}");
        let (mut first, admitted_by) = connect_to(&gate, 2, |_| true).await;
        let (status, _) = first.send("POST", &target, &headers, "{}").await;
        assert_eq!(status, StatusCode::OK, "round {round}");
        let (mut other, replayed_at) = connect_to(&gate, 2, |w| w != admitted_by).await;
        assert_ne!(admitted_by, replayed_at);
        let (status, body) = other.send("POST", &target, &headers, "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "round {round}");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["reason"], "replayed_nonce");
        // And on the worker that admitted it, the same.
        let (status, _) = first.send("POST", &target, &headers, "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "round {round}");
        assert_eq!(upstream.seen(&target).count, 1, "round {round}");
    }
}

#[tokio::test]
async fn with_the_redis_store_a_replay_is_rejected_by_the_other_worker() {
    let redis = runbook::redis::RedisServer::start(&[]).expect("redis-server starts");
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let url = redis.url();
    let gate = TestGate::start(
        &upstream.url(),
        &[
            ("GATE_WORKERS", "2"),
            ("GATE_REPLAY_STORE", &url),
            // Generous: a debug build on a busy machine; the budget is not what is tested.
            ("GATE_REPLAY_STORE_TIMEOUT_MS", "5000"),
        ],
    )
    .await;
    for round in 0..2 {
        let target = format!("/redis-cross-worker/{round}");
        let headers = sign(SECRET, "current", "POST", &target, b"{}");
        let (mut first, admitted_by) = connect_to(&gate, 2, |_| true).await;
        // The store connects in the background: the first request may find it not yet up.
        let mut status = StatusCode::SERVICE_UNAVAILABLE;
        for _ in 0..500 {
            let fresh = sign(SECRET, "current", "GET", "/redis-up", b"");
            if first.send("GET", "/redis-up", &fresh, "").await.0 == StatusCode::OK {
                status = first.send("POST", &target, &headers, "{}").await.0;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status, StatusCode::OK, "round {round}");
        let (mut other, _) = connect_to(&gate, 2, |w| w != admitted_by).await;
        let (status, body) = other.send("POST", &target, &headers, "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "round {round}");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["reason"], "replayed_nonce");
        assert_eq!(upstream.seen(&target).count, 1, "round {round}");
    }
}

#[tokio::test]
async fn copies_of_one_request_sent_at_once_on_many_connections_pass_once() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_WORKERS", "2")]).await;
    const REQUESTS: usize = 8;
    const COPIES: usize = 16;
    for n in 0..REQUESTS {
        let target = format!("/copies/{n}");
        let headers = sign(SECRET, "current", "POST", &target, b"{}");
        let sends: Vec<_> = (0..COPIES)
            .map(|_| {
                let (addr, target, headers) = (gate.addr, target.clone(), headers.clone());
                tokio::spawn(async move { send(addr, "POST", &target, &headers, "{}").await })
            })
            .collect();
        let mut passed = 0;
        for sent in sends {
            let reply = sent.await.expect("client task");
            match reply.status {
                StatusCode::OK => passed += 1,
                StatusCode::UNAUTHORIZED => assert_eq!(reply.json()["reason"], "replayed_nonce"),
                other => panic!("{target}: unexpected {other}"),
            }
        }
        assert_eq!(passed, 1, "{target}: exactly one copy passes");
        assert_eq!(upstream.seen(&target).count, 1, "{target}");
    }
    let accepted = accepted_by_worker(&gate, 2).await;
    assert_eq!(accepted.iter().sum::<f64>(), (REQUESTS * COPIES) as f64);
    assert!(
        accepted.iter().all(|&n| n > 0.0),
        "both workers took connections: {accepted:?}"
    );
    let replayed = r#"sig_gate_invalid_request_signature_total{reason="replayed_nonce"}"#;
    assert_eq!(
        gate.metric(replayed).await,
        (REQUESTS * (COPIES - 1)) as f64
    );
    assert_eq!(
        gate.metric(r#"sig_gate_requests_total{outcome="forwarded"}"#)
            .await,
        REQUESTS as f64
    );
}

#[tokio::test]
async fn connections_and_requests_are_counted_once_for_the_process() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[("GATE_WORKERS", "2")]).await;
    const HELD: usize = 24;
    let mut held = Vec::new();
    for n in 0..HELD {
        let mut connection = KeepAlive::open(gate.addr).await;
        let target = format!("/counted/{n}");
        let headers = sign(SECRET, "current", "GET", &target, b"");
        let (status, _) = connection.send("GET", &target, &headers, "").await;
        assert_eq!(status, StatusCode::OK);
        held.push(connection);
    }
    let metrics = gate.metrics().await;
    assert_eq!(metrics["sig_gate_connections_open"], HELD as f64);
    assert_eq!(
        metrics[r#"sig_gate_requests_total{outcome="forwarded"}"#],
        HELD as f64
    );
    assert_eq!(
        metrics[r#"sig_gate_verified_total{slot="current"}"#],
        HELD as f64
    );
    // Whichever worker the kernel gives a connection to, the one serving fewer serves it.
    assert_eq!(
        accepted_by_worker(&gate, 2).await,
        [(HELD / 2) as f64; 2],
        "an even split"
    );
    assert_eq!(
        metrics.get(&worker_series(2)),
        None,
        "a series per worker, no more"
    );
    drop(held);
    assert_eq!(
        await_metric(&gate, "sig_gate_connections_open", 0.0).await,
        0.0
    );
}

#[tokio::test]
async fn the_connection_cap_is_one_for_the_process() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(
        &upstream.url(),
        &[("GATE_WORKERS", "2"), ("GATE_MAX_CONNECTIONS", "3")],
    )
    .await;
    // Three connections held open, on whichever workers the kernel picks.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(gate.addr).await.expect("connect"));
    }
    assert_eq!(
        await_metric(&gate, "sig_gate_connections_open", 3.0).await,
        3.0
    );
    // Every further connection is closed at once, whichever worker accepts it.
    const OVER: usize = 16;
    for _ in 0..OVER {
        let mut stream = TcpStream::connect(gate.addr).await.expect("connect");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("closed, not left waiting");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert_eq!(
        gate.metric("sig_gate_connections_refused_total").await,
        OVER as f64
    );
    // The three held are spread over both workers, so neither alone had three open: the cap
    // that refused the others counts the whole process's connections.
    let mut served = accepted_by_worker(&gate, 2).await;
    served.sort_by(f64::total_cmp);
    assert_eq!(served, [1.0, 2.0], "refused connections count on no worker");
    // A slot given back is free for either worker.
    drop(held.pop());
    assert_eq!(
        await_metric(&gate, "sig_gate_connections_open", 2.0).await,
        2.0
    );
    let headers = sign(SECRET, "current", "GET", "/after-cap", b"");
    let reply = send(gate.addr, "GET", "/after-cap", &headers, "").await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// A real `sig-gate serve` with `vars`, its proxy listener bound by itself or inherited.
async fn launch(
    upstream: &RecordingUpstream,
    workdir: &Workdir,
    vars: &[(&str, &str)],
    inherited: Option<&std::net::TcpListener>,
) -> runbook::process::GateProcess {
    let launcher = Launcher::new(env!("CARGO_BIN_EXE_sig-gate").into(), workdir);
    let mut env = GateEnv::new(&upstream.url()).set("INTERSERVICE_HMAC_SECRET", SECRET);
    for (name, value) in vars {
        env = env.set(name, *value);
    }
    launcher
        .start_running("gate", &env, inherited)
        .await
        .expect("the gate starts")
}

/// The `workers` field of the gate's `listening` log line.
fn logged_workers(gate: &runbook::process::GateProcess) -> u64 {
    gate.log_tail()
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["message"] == "listening")
        .and_then(|event| event["workers"].as_u64())
        .expect("a listening line with the number of workers")
}

#[tokio::test]
async fn every_worker_drains_its_requests_on_sigterm_and_the_process_exits_0() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let workdir = Workdir::create("workers").expect("workdir");
    let mut gate = launch(&upstream, &workdir, &[("GATE_WORKERS", "2")], None).await;
    assert_eq!(logged_workers(&gate), 2);
    let addr = gate.proxy_addr();
    // Held requests on connections of their own, so both workers have some in flight.
    const HELD: usize = 12;
    let in_flight: Vec<_> = (0..HELD)
        .map(|n| {
            let target = format!("/hold/{n}");
            let headers = sign(SECRET, "current", "GET", &target, b"");
            tokio::spawn(async move { send(addr, "GET", &target, &headers, "").await })
        })
        .collect();
    while upstream.total() < HELD {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let scrape = gate.scrape().await.expect("metrics");
    assert_eq!(
        scrape.value_or_zero("sig_gate_connections_open", &[]),
        HELD as f64
    );
    let per_worker: Vec<f64> = ["0", "1"]
        .iter()
        .map(|w| scrape.value_or_zero(WORKER_CONNECTIONS, &[("worker", w)]))
        .collect();
    assert_eq!(per_worker.iter().sum::<f64>(), HELD as f64);
    assert!(
        per_worker.iter().all(|&n| n > 0.0),
        "both workers hold requests: {per_worker:?}"
    );

    gate.terminate().expect("SIGTERM");
    let mut ready = 200;
    for _ in 0..500 {
        ready = gate
            .probe("/readyz")
            .await
            .expect("admin answers while draining");
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, 503, "/readyz turns 503 while draining");
    // Every worker closes its listener: once the last has, the port refuses connections (while
    // one is still open, the kernel hands new connections to it).
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "every worker stopped accepting");
    while !in_flight.iter().all(|task| task.is_finished()) {
        upstream.release();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in in_flight {
        let reply = task.await.expect("client task");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["connection"], "close");
    }
    let code = gate
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits");
    assert_eq!(code, Some(0), "{:?}", gate.log_tail());
}

#[tokio::test]
async fn with_socket_activation_every_worker_serves_the_one_inherited_socket() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let workdir = Workdir::create("workers").expect("workdir");
    let listener =
        gate::server::bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let mut gate = launch(
        &upstream,
        &workdir,
        &[("GATE_WORKERS", "2")],
        Some(&listener),
    )
    .await;
    assert_eq!(logged_workers(&gate), 2);
    let addr = listener.local_addr().expect("addr");
    assert_eq!(
        gate.proxy_addr(),
        addr,
        "the inherited socket, not one of its own"
    );
    // Batches of connections at once until each worker has taken some: both wait on the one
    // socket, and whichever the kernel wakes first takes a connection.
    const BATCH: usize = 16;
    let mut sent = 0;
    let per_worker = loop {
        let sends: Vec<_> = (sent..sent + BATCH)
            .map(|n| {
                let target = format!("/activated/{n}");
                let headers = sign(SECRET, "current", "GET", &target, b"");
                tokio::spawn(async move { send(addr, "GET", &target, &headers, "").await })
            })
            .collect();
        for reply in sends {
            assert_eq!(reply.await.expect("client task").status, StatusCode::OK);
        }
        sent += BATCH;
        let scrape = gate.scrape().await.expect("metrics");
        let per_worker: Vec<f64> = ["0", "1"]
            .iter()
            .map(|w| scrape.value_or_zero(WORKER_CONNECTIONS, &[("worker", w)]))
            .collect();
        assert_eq!(per_worker.iter().sum::<f64>(), sent as f64);
        if per_worker.iter().all(|&n| n > 0.0) || sent >= 40 * BATCH {
            break per_worker;
        }
    };
    assert!(
        per_worker.iter().all(|&n| n > 0.0),
        "each worker accepts on the inherited socket: {per_worker:?} after {sent} connections"
    );
    assert_eq!(upstream.total(), sent);
    assert_eq!(
        gate.stop(Duration::from_secs(30)).await.expect("exits"),
        Some(0)
    );
    drop(listener);
}
