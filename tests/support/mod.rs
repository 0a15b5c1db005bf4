//! Shared fixtures for black-box tests: a real gate on 127.0.0.1 port 0, a signer, a
//! one-request HTTP client and a `/metrics` reader. The upstream they stand in front of is the
//! runbook's [`runbook::upstream::RecordingUpstream`], and the real Redis servers and Redis
//! Cluster are the runbook's too ([`runbook::redis`]): one implementation every tool and test
//! shares.
#![allow(dead_code)] // each test binary uses a different part of the fixtures

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use gate::config::{Config, Raw};
use gate::keyring::{Key, Secret, Slot};
use gate::server::{self, Drain, Listeners};
use gate::sign::{self, Signer};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use runbook::exposition::Scrape;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Current secret of most test gates.
pub const SECRET: &str = "integration-secret-new-0123456789abcdef";
/// Previous secret in dual-mode tests.
pub const OLD_SECRET: &str = "integration-secret-old-0123456789abcdef";

/// A response's status and its whole body.
pub async fn status_and_body(response: Response<Incoming>) -> (StatusCode, Bytes) {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
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
    /// parser; keys are [`runbook::exposition::Sample::series`] (labels sorted by name).
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
        gate::clock::unix_now(),
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
