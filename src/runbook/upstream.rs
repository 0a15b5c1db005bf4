//! The protected service's stand-in (tool-gate), in-process on loopback. It answers every
//! request with a small JSON body, records what reached it by path (so a report can show that
//! a rejected request never got there, and which key id the gate said verified it), sleeps on
//! `/slow...?ms=N` (any path under `/slow`: upstream timeouts, requests held during a drain), and can be stopped and restarted on the same
//! port (the upstream-down scenario): stopping closes every open connection too, so the gate's
//! pooled connections see the outage at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::protocol;

/// Longest sleep `/slow` honours, so a stray request cannot hold a task for long.
const MAX_SLOW: Duration = Duration::from_secs(30);

/// What reached the upstream on one path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Requests received on the path.
    pub count: usize,
    /// `X-Gate-Verified-Key-Id` of the latest one (absent for report-only or exempt traffic).
    pub verified_key_id: Option<String>,
}

type Record = Arc<Mutex<HashMap<String, Seen>>>;

/// A running (or stopped) upstream.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    record: Record,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Upstream {
    /// Bind 127.0.0.1 on a free port and serve.
    pub async fn start() -> std::io::Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut upstream = Upstream {
            addr,
            record: Arc::default(),
            running: None,
        };
        upstream.serve(listener);
        Ok(upstream)
    }

    /// Where it listens (also while stopped: a restart binds the same address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`, for `GATE_UPSTREAM`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting and close every open connection; returns once all are closed, so the
    /// next connection attempt is refused.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Serve again on the same address.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        // tokio sets SO_REUSEADDR, so closed connections in TIME_WAIT do not block the port.
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// What reached `path` so far.
    pub fn seen(&self, path: &str) -> Seen {
        // A poisoned lock means a connection task panicked while recording: a harness bug.
        let record = self.record.lock().expect("upstream record lock");
        record.get(path).cloned().unwrap_or_default()
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&self.record), stopped));
        self.running = Some((stop, task));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

/// Accept until told to stop, then close every connection before returning.
async fn accept_loop(listener: TcpListener, record: Record, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let record = Arc::clone(&record);
                connections.spawn(async move {
                    let service = service_fn(move |request| respond(request, Arc::clone(&record)));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut stop => break,
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn respond(
    request: Request<Incoming>,
    record: Record,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    // Read the whole body, as a real service would, before answering.
    let received = body
        .collect()
        .await
        .map(|c| c.to_bytes().len())
        .unwrap_or(0);
    {
        let mut record = record.lock().expect("upstream record lock");
        let seen = record.entry(parts.uri.path().to_owned()).or_default();
        seen.count += 1;
        seen.verified_key_id = parts
            .headers
            .get(protocol::VERIFIED_KEY_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    if parts.uri.path().starts_with("/slow") {
        let millis = parts
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("ms=")))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(millis).min(MAX_SLOW)).await;
    }
    let body = format!(r#"{{"ok":true,"received_bytes":{received}}}"#);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::client::{Call, Http};
    use http::Method;

    #[tokio::test]
    async fn records_stops_refuses_and_restarts() {
        let mut upstream = Upstream::start().await.expect("start");
        let http = Http::new(Duration::from_secs(5));
        let call = Call::new(Method::GET, "/a?x=1").header("x-gate-verified-key-id", "k2");
        let reply = http.call(upstream.addr(), &call).await.expect("answers");
        assert_eq!(reply.status, 200);
        assert_eq!(
            upstream.seen("/a"),
            Seen {
                count: 1,
                verified_key_id: Some("k2".into())
            }
        );

        upstream.stop().await;
        assert!(http.call(upstream.addr(), &call).await.is_err());
        upstream.restart().await.expect("restart");
        let reply = http
            .call(upstream.addr(), &call)
            .await
            .expect("answers again");
        assert_eq!(reply.status, 200);
        assert_eq!(upstream.seen("/a").count, 2);
    }
}
