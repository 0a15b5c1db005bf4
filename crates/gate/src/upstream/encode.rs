//! The request encoder: request line and headers written into the connection's output
//! buffer, hop-by-hop fields left out, `Cookie` fields joined, `Content-Length` from the body.

use http::Method;
use http::header::{self, HeaderName, HeaderValue};

use super::fields::{ConnectionOptions, is_hop_by_hop};
use super::{Disposition, Outgoing};

/// Write the request head into `out`: request line, `Host`, the client's end-to-end headers
/// (`Cookie` fields joined into one), the gate's headers, and `Content-Length` from the body.
pub(super) fn encode_head(out: &mut Vec<u8>, request: &Outgoing<'_>, host: &HeaderValue) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.as_bytes());
    if let Some(query) = request.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Values were validated by hyper's parser or built by the gate: none holds CR or LF.
    field(out, header::HOST.as_str(), host.as_bytes());
    let headers = &request.headers;
    let options = ConnectionOptions::of(headers);
    let forwarded = |name: &HeaderName| match (request.disposition)(name) {
        Disposition::Forward => {
            !is_hop_by_hop(name.as_str().as_bytes()) && !options.lists(name.as_str())
        }
        Disposition::EndToEnd => true,
        Disposition::Drop => false,
    };
    let mut had_length = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            had_length = true;
        } else if name != header::HOST && name != header::COOKIE && forwarded(name) {
            field(out, name.as_str(), value.as_bytes());
        }
    }
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if let Some(first) = cookies.next().filter(|_| forwarded(&header::COOKIE)) {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first.as_bytes());
        for more in cookies {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(more.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in request.added.iter().flatten() {
        field(out, name.as_str(), value);
    }
    // RFC 9110 section 8.6: no Content-Length on an empty body unless the client sent one or
    // the method anticipates a body.
    let anticipates_body = matches!(*request.method, Method::POST | Method::PUT | Method::PATCH);
    if had_length || anticipates_body || !request.body.is_empty() {
        let mut digits = [0u8; 20];
        field(
            out,
            header::CONTENT_LENGTH.as_str(),
            decimal(&mut digits, request.body.len()),
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// One header line.
fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into the tail of `buf`.
pub(super) fn decimal(buf: &mut [u8; 20], mut n: usize) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}
