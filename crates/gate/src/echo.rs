//! A small echo upstream on loopback, for `sig-gate demo` and the runbook tools: it answers
//! every request with a JSON description of what it received (so a user sees exactly what the
//! gate forwarded), and `GET /events` with a short server-sent event stream (so streaming is
//! visible end to end).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Server-sent events sent by `GET /events`, one every [`EVENT_INTERVAL`].
pub const EVENT_COUNT: usize = 5;
/// Pause between two events.
pub const EVENT_INTERVAL: Duration = Duration::from_millis(200);

/// Serve the echo upstream on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(respond);
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type EchoBody = Either<Full<Bytes>, EventStream>;

async fn respond(request: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    if request.uri().path() == "/events" {
        let (sender, receiver) = tokio::sync::mpsc::channel(EVENT_COUNT);
        tokio::spawn(async move {
            for n in 1..=EVENT_COUNT {
                let event = Bytes::from(format!("id: {n}\ndata: {{\"event\":{n}}}\n\n"));
                if sender.send(event).await.is_err() {
                    return;
                }
                tokio::time::sleep(EVENT_INTERVAL).await;
            }
        });
        let mut response = Response::new(Either::Right(EventStream(receiver)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        return Ok(response);
    }
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes())
                    .into_owned()
                    .into(),
            )
        })
        .collect();
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "target": parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_bytes": body.len(),
    });
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(echo.to_string()))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A body whose frames arrive on a channel, each sent to the client as soon as it arrives.
pub struct EventStream(pub tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|event| event.map(|data| Ok(Frame::data(data))))
    }
}
