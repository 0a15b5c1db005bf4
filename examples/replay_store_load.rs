//! Load on the shared replay store, for the figures in docs/operations.md ("Shared replay
//! store"). Start a Redis on loopback, then:
//!
//! ```sh
//! redis-server --port 6399 --save "" --appendonly no &
//! cargo run --release --example replay_store_load -- redis://127.0.0.1:6399 32 5
//! ```
//!
//! Arguments: the Redis URL, the concurrency (default 32) and the seconds per run (default 5).
//! Two parts, each printing requests a second, latency percentiles, and CPU per request of
//! this process and of Redis (from `INFO cpu`):
//!
//! 1. The store operation alone, `SET <key> 1 NX PX 301000` with a fresh key, from
//!    `concurrency` callers at once, three ways: one multiplexed connection shared by every
//!    caller (the gate's way: redis-rs's `ConnectionManager`), one connection of its own per
//!    caller used one command at a time (a connection pool's way), and a new connection for
//!    every operation.
//! 2. The whole gate, in this process, in front of the built-in echo upstream: `concurrency`
//!    keep-alive clients sending signed 1 KiB POSTs, with `GATE_REPLAY_STORE=memory` and then
//!    with the Redis URL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gate::config::{Config, Raw};
use gate::keyring::{Key, Secret, Slot};
use gate::server::{self, Listeners};
use gate::sign::{self, Signer};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use runbook::upstream::{RecordingUpstream, Routes};

const SECRET: &str = "replay-store-load-secret-0123456789abcdef";

/// What one run measured.
struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
    cpu_self: Duration,
    cpu_redis: Duration,
}

impl Run {
    fn print(&self, name: &str) {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let n = sorted.len().max(1);
        let at = |q: f64| sorted[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e3;
        let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / n as f64;
        println!(
            "{name:<34} {:>9.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  p99.9 {:>6.3} ms  \
             CPU/request: this process {:>5.1} us, redis {:>5.1} us",
            sorted.len() as f64 / self.elapsed.as_secs_f64(),
            at(0.50),
            at(0.99),
            at(0.999),
            per(self.cpu_self),
            per(self.cpu_redis),
        );
    }
}

/// CPU time this process has used (user + system), from `/proc/self/stat`.
fn cpu_self() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm ends with ')'")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the file, 11 and 12 after the comm.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

/// Redis's CPU time (user + system), from `INFO cpu`.
async fn cpu_redis(connection: &mut MultiplexedConnection) -> Duration {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(connection)
        .await
        .expect("INFO cpu");
    let seconds: f64 = info
        .lines()
        .filter(|line| line.starts_with("used_cpu_sys:") || line.starts_with("used_cpu_user:"))
        .filter_map(|line| line.split_once(':')?.1.trim().parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(seconds)
}

/// A command recording a fresh key, as the gate's admission does.
fn set_nx() -> redis::Cmd {
    let mut command = redis::cmd("SET");
    command
        .arg(format!("load:nonce:{}", sign::new_nonce()))
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(301_000);
    command
}

#[derive(Clone, Copy)]
enum Way {
    Multiplexed,
    ConnectionPerCaller,
    ConnectionPerOperation,
}

/// Part 1: `concurrency` callers sending `SET NX PX` for `seconds`, one way.
async fn store_alone(client: &redis::Client, way: Way, concurrency: usize, seconds: u64) -> Run {
    let mut info = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let shared = ConnectionManager::new_with_config(client.clone(), ConnectionManagerConfig::new())
        .await
        .expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let (cpu0, redis0, started) = (cpu_self(), cpu_redis(&mut info).await, Instant::now());
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, shared, stop) = (client.clone(), shared.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut own = match way {
                    Way::ConnectionPerCaller => Some(
                        client
                            .get_multiplexed_async_connection()
                            .await
                            .expect("connect"),
                    ),
                    Way::Multiplexed | Way::ConnectionPerOperation => None,
                };
                let mut shared = shared;
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let command = set_nx();
                    let t = Instant::now();
                    let reply: redis::Value = match (way, own.as_mut()) {
                        (Way::Multiplexed, _) => command.query_async(&mut shared).await,
                        (Way::ConnectionPerCaller, Some(own)) => command.query_async(own).await,
                        _ => {
                            let mut fresh = client
                                .get_multiplexed_async_connection()
                                .await
                                .expect("connect");
                            command.query_async(&mut fresh).await
                        }
                    }
                    .expect("SET");
                    assert_eq!(reply, redis::Value::Okay);
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("caller"));
    }
    Run {
        latencies,
        elapsed: started.elapsed(),
        cpu_self: cpu_self() - cpu0,
        cpu_redis: cpu_redis(&mut info).await - redis0,
    }
}

/// Part 2: the gate with `store`, `concurrency` keep-alive clients for `seconds`.
async fn through_gate(
    store: &str,
    client: &redis::Client,
    concurrency: usize,
    seconds: u64,
) -> Run {
    let echo = RecordingUpstream::start_with(Routes::Echo)
        .await
        .expect("start the echo upstream");
    let upstream = echo.url();
    let mut vars = serde_json::Map::new();
    for (name, value) in [
        ("interservice_hmac_secret", SECRET),
        ("gate_listen", "127.0.0.1:0"),
        ("gate_admin_listen", "127.0.0.1:0"),
        ("gate_upstream", upstream.as_str()),
        ("gate_replay_store", store),
    ] {
        vars.insert(name.into(), value.into());
    }
    let raw: Raw = serde_json::from_value(vars.into()).expect("known names");
    let config = Config::try_from(raw).expect("valid configuration");
    let listeners = Listeners::open(&config).expect("bind");
    let addr = listeners.proxy.local_addr().expect("addr");
    let (stop_gate, stopped) = tokio::sync::oneshot::channel::<()>();
    let gate = tokio::spawn(server::run(config, listeners, async {
        let _ = stopped.await;
    }));
    // Until the store answers (a Redis store connects in the background).
    let signer = Arc::new(Signer::new(
        Key::new(Slot::Current, "current".into(), &Secret::new(SECRET)),
        None,
    ));
    while send_one(addr, &signer).await != 200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut info = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let (cpu0, redis0, started) = (cpu_self(), cpu_redis(&mut info).await, Instant::now());
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (signer, stop) = (Arc::clone(&signer), Arc::clone(&stop));
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(connection);
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let response = sender
                        .send_request(signed(&signer))
                        .await
                        .expect("response");
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.expect("body");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let run = Run {
        latencies,
        elapsed: started.elapsed(),
        cpu_self: cpu_self() - cpu0,
        cpu_redis: cpu_redis(&mut info).await - redis0,
    };
    let _ = stop_gate.send(());
    let _ = gate.await;
    drop(echo);
    run
}

/// A signed `POST /tool` with a 1 KiB body and a fresh nonce.
fn signed(signer: &Signer) -> http::Request<Full<Bytes>> {
    let body = Bytes::from(vec![b'x'; 1024]);
    let nonce = sign::new_nonce();
    let headers = signer.sign(&sign::Request {
        method: "POST",
        target: "/tool",
        body: &body,
        timestamp: gate::clock::unix_now(),
        nonce: &nonce,
    });
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/tool")
        .header("host", "tool-gate.internal");
    for (name, value) in &headers {
        request = request.header(*name, value);
    }
    request.body(Full::new(body)).expect("request")
}

async fn send_one(addr: SocketAddr, signer: &Signer) -> u16 {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return 0;
    };
    tokio::spawn(connection);
    match sender.send_request(signed(signer)).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: replay_store_load REDIS_URL [CONCURRENCY [SECONDS]]");
    let concurrency: usize = args.next().map_or(32, |n| n.parse().expect("concurrency"));
    let seconds: u64 = args.next().map_or(5, |n| n.parse().expect("seconds"));
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    println!("{concurrency} concurrent callers, {seconds} s per run, Redis at {url}");
    println!("-- the store operation alone (SET NX PX, fresh key)");
    for (name, way) in [
        ("one multiplexed connection", Way::Multiplexed),
        ("one connection per caller", Way::ConnectionPerCaller),
        ("new connection per operation", Way::ConnectionPerOperation),
    ] {
        store_alone(&client, way, concurrency, seconds)
            .await
            .print(name);
    }
    println!("-- the gate, signed 1 KiB POSTs over keep-alive connections");
    through_gate("memory", &client, concurrency, seconds)
        .await
        .print("GATE_REPLAY_STORE=memory");
    through_gate(&url, &client, concurrency, seconds)
        .await
        .print("GATE_REPLAY_STORE=redis (multiplexed)");
}
