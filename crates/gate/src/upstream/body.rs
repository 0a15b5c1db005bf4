//! The response body: [`Framing`], how a body ends and how each piece of it is taken from the
//! connection's read buffer, and [`UpstreamBody`], which streams it from the socket in the
//! polling task and hands the connection back to the pool when the body ends on its framing.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::UpstreamError;
use super::chunked::Chunked;
use super::pool::{Conn, Connections};

/// How a response body ends (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// `Content-Length` (or no body at all): this many bytes remain.
    Length(u64),
    /// `Transfer-Encoding: chunked`, decoded.
    Chunked(Chunked),
    /// Neither: the body runs until the upstream closes; the connection is not reused.
    UntilClose,
    /// Read to its end.
    Done,
}

/// What the next step of reading a body yields.
#[derive(Debug)]
pub(super) enum Step {
    Data(Bytes),
    NeedMore,
    End,
}

impl Framing {
    fn is_done(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Done)
            || matches!(self, Framing::Chunked(chunked) if chunked.is_done())
    }

    /// Take the next piece of body from `buf`.
    pub(super) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, UpstreamError> {
        match self {
            Framing::Length(0) | Framing::Done => Ok(Step::End),
            Framing::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (*remaining).min(buf.len() as u64);
                *remaining -= n;
                // `n` is at most `buf.len()`, a usize.
                Ok(Step::Data(buf.split_to(n as usize).freeze()))
            }
            Framing::Chunked(chunked) => chunked.step(buf),
            Framing::UntilClose if buf.is_empty() => Ok(Step::NeedMore),
            Framing::UntilClose => Ok(Step::Data(buf.split().freeze())),
        }
    }
}

/// A response body streaming from its upstream connection, read in the polling task.
#[derive(Debug)]
pub struct UpstreamBody {
    framing: Framing,
    /// `None` once the body is done or failed.
    conn: Option<Conn>,
    /// Where the connection goes when the body ends cleanly; `None` if it must close.
    pool: Option<Arc<Connections>>,
}

impl UpstreamBody {
    /// The body of a response framed by `framing` on `conn`, which goes back to `pool` (if
    /// any) once the body ends cleanly; a body that is already done hands it back at once.
    pub(super) fn new(
        framing: Framing,
        conn: Conn,
        pool: Option<Arc<Connections>>,
    ) -> UpstreamBody {
        let mut body = UpstreamBody {
            framing,
            conn: Some(conn),
            pool,
        };
        if body.framing.is_done() {
            body.finish();
        }
        body
    }

    /// Done: pool the connection if it may carry another exchange, else close it.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        let Some(conn) = self.conn.take() else { return };
        // Bytes past the end of the body mean the upstream and the gate disagree on framing.
        if let Some(pool) = self.pool.take().filter(|_| conn.read.is_empty()) {
            pool.check_in(conn);
        }
    }

    fn fail(&mut self, err: UpstreamError) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        Poll::Ready(Some(Err(err)))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.read) {
                Ok(Step::Data(data)) => {
                    if this.framing.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(err) => return this.fail(err),
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::UntilClose => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(UpstreamError::Closed),
                Ok(_) => {}
                Err(err) => return this.fail(UpstreamError::Io(err)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            Framing::Done => SizeHint::with_exact(0),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}
