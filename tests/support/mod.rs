//! Shared fixtures for black-box tests: a recording upstream and a real gate, each on
//! 127.0.0.1 port 0, a signer, a one-request HTTP client and a `/metrics` reader; real Redis
//! servers and a Redis Cluster in `redis.rs`.
#![allow(dead_code)] // each test binary uses a different part of the fixtures

pub mod redis;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sig_gate::config::{Config, Raw};
use sig_gate::keyring::{Key, Secret, Slot};
use sig_gate::runbook::exposition::Scrape;
use sig_gate::server::{self, Drain, Listeners};
use sig_gate::sign::{self, Signer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Current secret of most test gates.
pub const SECRET: &str = "integration-secret-new-0123456789abcdef";
/// Previous secret in dual-mode tests.
pub const OLD_SECRET: &str = "integration-secret-old-0123456789abcdef";

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A recording upstream. Routes: `/hold` answers once [`Upstream::release`] is called;
/// `/slow` answers after 5 s; `/events` streams one event, waits for a release, then a second;
/// anything else answers 200 `upstream ok`.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let (seen2, release2) = (Arc::clone(&seen), Arc::clone(&release));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, release) = (Arc::clone(&seen2), Arc::clone(&release2));
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        upstream_respond(request, Arc::clone(&seen), Arc::clone(&release))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            release,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }

    /// Let one held request (`/hold`, `/events`) go on.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn upstream_respond(
    request: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
) -> Result<Response<UpstreamBody>, std::convert::Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/".into(), |pq| pq.as_str().to_owned());
    seen.lock().expect("not poisoned").push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body,
    });
    let full = |text: &'static str| Full::new(Bytes::from_static(text.as_bytes())).boxed();
    let response = match parts.uri.path() {
        "/hold" => {
            release.notified().await;
            Response::new(full("held"))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Response::new(full("slow"))
        }
        "/events" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"data: first\n\n")).await;
                release.notified().await;
                let _ = tx.send(Bytes::from_static(b"data: second\n\n")).await;
            });
            let mut response = Response::new(BodyExt::boxed(sig_gate::echo::EventStream(rx)));
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("static"));
            response
        }
        _ => {
            let mut response = Response::new(full("upstream ok"));
            response
                .headers_mut()
                .insert("connection", "keep-alive".parse().expect("static"));
            response
                .headers_mut()
                .insert("keep-alive", "timeout=5".parse().expect("static"));
            response
        }
    };
    Ok(response)
}

/// A gate running in this process, with the documented variables given as `(NAME, value)`.
pub struct TestGate {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<Drain>>>,
}

impl TestGate {
    /// Start a gate in front of `upstream` with [`SECRET`] and these overrides.
    pub async fn start(upstream: &str, vars: &[(&str, &str)]) -> TestGate {
        let mut map = serde_json::Map::new();
        for (name, value) in [
            ("INTERSERVICE_HMAC_SECRET", SECRET),
            ("GATE_LISTEN", "127.0.0.1:0"),
            ("GATE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("GATE_UPSTREAM", upstream),
        ]
        .iter()
        .chain(vars)
        {
            map.insert(name.to_ascii_lowercase(), (*value).into());
        }
        let raw: Raw = serde_json::from_value(map.into()).expect("known variable names");
        let config = Config::try_from(raw).expect("valid test configuration");
        let listeners = Listeners::open(&config).expect("bind port 0");
        let addr = listeners.proxy.local_addr().expect("proxy addr");
        let admin = listeners.admin.local_addr().expect("admin addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::run(config, listeners, async {
            let _ = rx.await;
        }));
        TestGate {
            addr,
            admin,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A handle on a gate running elsewhere (a `sig-gate serve` process): its addresses and
    /// [`TestGate::metrics`]; it cannot be stopped from here.
    pub fn view(addr: SocketAddr, admin: SocketAddr) -> TestGate {
        TestGate {
            addr,
            admin,
            shutdown: None,
            task: None,
        }
    }

    /// Begin the drain (as SIGTERM would).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Drain and return how it ended.
    pub async fn stop(mut self) -> Drain {
        self.begin_shutdown();
        let task = self.task.take().expect("running");
        task.await.expect("server task").expect("server io")
    }

    /// `/metrics` as a map from `name{labels}` to value, parsed by the runbook's exposition
    /// parser; keys are [`sig_gate::runbook::exposition::Sample::series`] (labels sorted by name).
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let reply = send(self.admin, "GET", "/metrics", &[], "").await;
        assert_eq!(reply.status, StatusCode::OK);
        Scrape::parse(&reply.text(), Instant::now())
            .expect("the gate's /metrics parses")
            .samples
            .iter()
            .map(|sample| (sample.series(), sample.value))
            .collect()
    }

    /// One series' value, 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics().await.get(series).copied().unwrap_or(0.0)
    }
}

impl Drop for TestGate {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A reply read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Send one HTTP/1.1 request on a fresh connection, headers exactly as given (repeats kept).
pub async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Reply {
    send_lines(addr, method, target, &lines(headers), body).await
}

/// [`send`] with header lines that need not be text (any bytes a header value allows).
pub async fn send_lines(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: impl Into<Bytes>,
) -> Reply {
    let response = start_request_lines(addr, method, target, headers, body).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Send one request and return as soon as the response head arrives (body still streaming).
pub async fn start_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    start_request_lines(addr, method, target, &lines(headers), body).await
}

/// Header lines from test text.
pub fn lines(headers: &[(&str, String)]) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_bytes(name.as_bytes()).expect("tests use valid header names"),
                HeaderValue::from_str(value).expect("tests use valid header values"),
            )
        })
        .collect()
}

/// [`start_request`] with header lines that need not be text.
pub async fn start_request_lines(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "tool-gate.internal");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(body.into())).expect("request");
    sender.send_request(request).await.expect("response head")
}

/// Signature headers for one request with `secret` labelled `key_id`, timestamp now.
pub fn sign(
    secret: &str,
    key_id: &str,
    method: &str,
    target: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    sign_at(
        secret,
        key_id,
        method,
        target,
        body,
        sig_gate::proxy::unix_now(),
    )
}

/// [`sign`] at a chosen timestamp.
pub fn sign_at(
    secret: &str,
    key_id: &str,
    method: &str,
    target: &str,
    body: &[u8],
    timestamp: u64,
) -> Vec<(&'static str, String)> {
    let signer = Signer::new(
        Key::new(Slot::Current, key_id.into(), &Secret::new(secret)),
        None,
    );
    let nonce = sign::new_nonce();
    signer.sign(&sign::Request {
        method,
        target,
        body,
        timestamp,
        nonce: &nonce,
    })
}
