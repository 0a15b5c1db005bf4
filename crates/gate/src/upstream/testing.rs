//! The response parser without a socket, for the differential test
//! (`tests/upstream_differential.rs`) and the fuzz targets (`fuzz/`). Not part of the gate's
//! API: hidden from its documentation, called by nothing in the gate. It reads a response as
//! [`Pool::send`](super::Pool::send) and [`UpstreamBody`](super::UpstreamBody) do, from bytes arriving in pieces of given sizes.

use bytes::BytesMut;
use http::HeaderMap;

use super::UpstreamError;
use super::body::{Framing, Step};
use super::chunked::Chunked;
use super::head::parse_final_head;

/// What the gate made of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The final status (interim 1xx responses are skipped).
    pub status: u16,
    /// The end-to-end headers, as forwarded to the client.
    pub headers: HeaderMap,
    /// The decoded body.
    pub body: Vec<u8>,
    /// The body had no framing and ran to the end of the input.
    pub until_close: bool,
    /// The head lets the connection carry another exchange (the pool also requires that
    /// nothing follows the body: `leftover` zero).
    pub reusable: bool,
    /// Input bytes after the end of the body.
    pub leftover: usize,
}

/// Pieces of `wire`, of the sizes in `pieces` in turn (a zero counts as one; none: all
/// of it at once).
fn split<'a>(wire: &'a [u8], pieces: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut sizes = pieces.iter().cycle();
    let mut rest = wire;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = sizes.next().map_or(rest.len(), |&n| n.clamp(1, rest.len()));
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        Some(piece)
    })
}

/// Read one response to a request (`HEAD` or not) from `wire`, which ends where the
/// upstream closes the connection.
pub fn read_response(
    wire: &[u8],
    head_request: bool,
    pieces: &[usize],
) -> Result<Read, UpstreamError> {
    let mut input = split(wire, pieces);
    let mut buf = BytesMut::new();
    let mut headers = HeaderMap::new();
    let head = loop {
        if let Some(head) = parse_final_head(&mut buf, &mut headers)? {
            break head;
        }
        buf.extend_from_slice(input.next().ok_or(UpstreamError::Closed)?);
    };
    let (mut framing, reusable) = head.body(head_request);
    let until_close = framing == Framing::UntilClose;
    let mut body = Vec::new();
    loop {
        match framing.step(&mut buf)? {
            Step::Data(data) => body.extend_from_slice(&data),
            Step::End => break,
            Step::NeedMore => match input.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None if until_close => break,
                None => return Err(UpstreamError::Closed),
            },
        }
    }
    Ok(Read {
        status: head.status.as_u16(),
        headers,
        body,
        until_close,
        reusable,
        leftover: buf.len() + input.map(<[u8]>::len).sum::<usize>(),
    })
}

/// Decode a chunked body from `wire`: the body and the bytes left after it, `None` if
/// the input ended before the body did.
pub fn decode_chunked(
    wire: &[u8],
    pieces: &[usize],
) -> Result<Option<(Vec<u8>, usize)>, UpstreamError> {
    let mut framing = Framing::Chunked(Chunked::START);
    let mut input = split(wire, pieces);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    loop {
        match framing.step(&mut buf)? {
            Step::Data(data) => body.extend_from_slice(&data),
            Step::End => {
                let leftover = buf.len() + input.map(<[u8]>::len).sum::<usize>();
                return Ok(Some((body, leftover)));
            }
            Step::NeedMore => match input.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return Ok(None),
            },
        }
    }
}
