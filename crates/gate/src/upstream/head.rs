//! The response head parser: status line and headers by `httparse`, the body's framing by
//! RFC 9112 section 6.3, the end-to-end headers into the caller's map, and whether the
//! connection may carry another exchange; interim 1xx responses are skipped.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::UpstreamError;
use super::body::Framing;
use super::chunked::Chunked;
use super::fields::{ConnectionOptions, is_hop_by_hop, is_tchar};
use super::pool::READ_CHUNK;

/// Largest response head accepted (status line and headers).
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response header lines accepted (hyper's default too).
pub(super) const MAX_HEADERS: usize = 100;

/// A parsed response head's status and what it says about the body and the connection; its
/// end-to-end headers go into the caller's map.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) framing: Framing,
    pub(super) reusable: bool,
}

impl Head {
    /// How the body of the response to a request (`HEAD` or not) ends, and whether the
    /// connection may carry another exchange once it has.
    pub(super) fn body(&self, head_request: bool) -> (Framing, bool) {
        let no_body = head_request
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED;
        let framing = if no_body {
            Framing::Length(0)
        } else {
            self.framing
        };
        (framing, self.reusable && framing != Framing::UntilClose)
    }
}

/// Read the final response head into `headers`, skipping interim 1xx responses.
pub(super) async fn read_head(
    stream: &mut TcpStream,
    read: &mut BytesMut,
    headers: &mut HeaderMap,
) -> Result<Head, UpstreamError> {
    loop {
        if let Some(head) = parse_final_head(read, headers)? {
            return Ok(head);
        }
        read.reserve(READ_CHUNK);
        match stream.read_buf(read).await {
            Ok(0) => return Err(UpstreamError::Closed),
            Ok(_) => {}
            Err(err) => return Err(UpstreamError::Io(err)),
        }
    }
}

/// Parse the final response head from the front of `read`, consuming it and any interim 1xx
/// responses before it; `None` while it is incomplete.
pub(super) fn parse_final_head(
    read: &mut BytesMut,
    headers: &mut HeaderMap,
) -> Result<Option<Head>, UpstreamError> {
    while !read.is_empty() {
        let Some(head) = parse_head(read, headers)? else {
            if read.len() >= MAX_HEAD_BYTES {
                return Err(UpstreamError::Malformed("response head too large"));
            }
            return Ok(None);
        };
        if !head.status.is_informational() {
            return Ok(Some(head));
        }
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(UpstreamError::Malformed("unrequested protocol switch"));
        }
    }
    Ok(None)
}

/// Parse a response head from the front of `buf`, consuming it; `None` if incomplete. Its
/// end-to-end headers replace what `headers` held; their values share the head's bytes rather
/// than being copied.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    headers: &mut HeaderMap,
) -> Result<Option<Head>, UpstreamError> {
    // Left uninitialised for httparse to fill: zeroing 100 fields would be a memset of
    // kilobytes per response.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => {
            return Err(UpstreamError::Malformed("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamError::Malformed("too many response headers"));
        }
        Err(_) => return Err(UpstreamError::Malformed("response head")),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| UpstreamError::Malformed("status code"))?;
    let http10 = response.version == Some(0);

    // First pass: what the framing and `Connection` headers say.
    let mut options = ConnectionOptions::default();
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            options.add(field.value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // HTTP/1.0 has no transfer codings (RFC 9112 section 6.1): whoever sends one
            // there does not frame bodies the way the gate would.
            if http10 {
                return Err(UpstreamError::Malformed("Transfer-Encoding in HTTP/1.0"));
            }
            // Only the final coding matters: chunked there frames the body; anything else
            // means the body runs to the close.
            let last = final_coding(field.value)
                .ok_or(UpstreamError::Malformed("invalid Transfer-Encoding"))?;
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let value = parse_length(field.value)
                .ok_or(UpstreamError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|seen| seen != value) {
                return Err(UpstreamError::Malformed("conflicting Content-Length"));
            }
            length = Some(value);
        }
    }
    let framing = match (chunked, length) {
        (Some(true), _) => Framing::Chunked(Chunked::START),
        (Some(false), _) => Framing::UntilClose,
        (None, Some(length)) => Framing::Length(length),
        (None, None) => Framing::UntilClose,
    };
    // Both framings at once is how desynchronisation attacks start: use the chunked one
    // (RFC 9112 section 6.3) and never reuse the connection.
    let reusable = !(options.close || http10 || (chunked.is_some() && length.is_some()));

    // Second pass: where the end-to-end headers lie in the head, so that their values can
    // share its bytes once it is split off. Offsets fit in 16 bits: the head is at most
    // MAX_HEAD_BYTES (64 KiB) long.
    let base = buf.as_ptr() as usize;
    let offset = |at: &[u8]| (at.as_ptr() as usize - base) as u16;
    let mut spans = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
    let mut count = 0;
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        let drop_length = chunked.is_some() && name.eq_ignore_ascii_case(b"content-length");
        if drop_length || is_hop_by_hop(name) || options.lists(name) {
            continue;
        }
        // Lengths are below the head's length, so they fit too.
        spans[count] = (
            offset(name),
            name.len() as u16,
            offset(field.value),
            field.value.len() as u16,
        );
        count += 1;
    }
    let head = buf.split_to(len).freeze();
    headers.clear();
    headers.reserve(count);
    for &(name_at, name_len, value_at, value_len) in &spans[..count] {
        let (name_at, value_at) = (usize::from(name_at), usize::from(value_at));
        let name = HeaderName::from_bytes(&head[name_at..name_at + usize::from(name_len)])
            .map_err(|_| UpstreamError::Malformed("header name"))?;
        let value = head.slice(value_at..value_at + usize::from(value_len));
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| UpstreamError::Malformed("header value"))?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        framing,
        reusable,
    }))
}

/// The last coding of a `Transfer-Encoding` value, which must be a list of tokens without
/// empty elements or parameters: the codings a response can use have none, and an odd list
/// (`chunked,` or a coding with bytes outside ASCII) is one that another parser may read
/// differently.
fn final_coding(value: &[u8]) -> Option<&[u8]> {
    let mut last = None;
    for coding in value.split(|&b| b == b',') {
        let coding = coding.trim_ascii();
        if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        last = Some(coding);
    }
    last
}

/// A `Content-Length` value: digits only, at most 19 of them (fits a u64 without overflow).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0')),
    )
}
