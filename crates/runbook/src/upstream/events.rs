//! Server-sent event streams, so streaming through the gate is visible end to end: the timed
//! one of `GET /events` (what `sig-gate demo` shows) and the one of `GET /events/held`, whose
//! second event waits for [`super::RecordingUpstream::release`] (so a test can tell an
//! unbuffered stream from a buffered one without timing it). [`EventStream`] is also a request
//! body whose frames a test hands over one at a time.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::{Notify, mpsc};

/// Events sent by `GET /events`, one every [`EVENT_INTERVAL`].
pub const EVENT_COUNT: usize = 5;
/// Pause between two events of `GET /events`.
pub const EVENT_INTERVAL: Duration = Duration::from_millis(200);

/// The first event of `GET /events/held`, sent at once.
pub const HELD_FIRST: &str = "data: first\n\n";
/// Its second and last event, sent once released.
pub const HELD_SECOND: &str = "data: second\n\n";

/// A body whose frames arrive on a channel, each sent on as soon as it arrives; the body ends
/// when every sender is gone.
#[derive(Debug)]
pub struct EventStream(pub mpsc::Receiver<Bytes>);

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

/// `id: n` and `data: {"event":n}` for n in 1..=[`EVENT_COUNT`], [`EVENT_INTERVAL`] apart.
pub(super) fn timed() -> EventStream {
    let (sender, receiver) = mpsc::channel(EVENT_COUNT);
    tokio::spawn(async move {
        for n in 1..=EVENT_COUNT {
            let event = Bytes::from(format!("id: {n}\ndata: {{\"event\":{n}}}\n\n"));
            if sender.send(event).await.is_err() {
                return;
            }
            tokio::time::sleep(EVENT_INTERVAL).await;
        }
    });
    EventStream(receiver)
}

/// [`HELD_FIRST`], then [`HELD_SECOND`] once `release` is notified. A client that goes away
/// first ends the wait, so no task outlives its stream.
pub(super) fn held(release: Arc<Notify>) -> EventStream {
    let (sender, receiver) = mpsc::channel(2);
    tokio::spawn(async move {
        if sender
            .send(Bytes::from_static(HELD_FIRST.as_bytes()))
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            () = release.notified() => {
                let _ = sender.send(Bytes::from_static(HELD_SECOND.as_bytes())).await;
            }
            () = sender.closed() => {}
        }
    });
    EventStream(receiver)
}
