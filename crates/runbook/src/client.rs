//! The calling side: credentials generated for one run, requests signed with a chosen key and
//! key-id label (correct, mislabelled, tampered after signing, malformed on purpose), one pooled
//! HTTP/1.1 client to send them, and the answer as [`Reply`]. For bytes no HTTP library sends, a
//! call is written out as [`Wire`] text, edited, and sent on a [`RawConnection`], which also
//! tells when the server closed the connection.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::HarnessError;
use gate::clock::unix_now;
use gate::keyring::{Key, PublicKey, Secret, Slot};
use gate::sign::{self, Signer, SigningKey};

/// Request body type of every client in the harness: a full buffer or a chunked stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// A secret and the key id a signer labels it with, generated fresh for one run. The secret is
/// handed only to the child gates' environment; `Debug` shows the fingerprint.
#[derive(Clone)]
pub struct Credential {
    key_id: String,
    secret: String,
}

impl Credential {
    /// A new random secret (32 bytes of entropy) labelled `key_id`.
    pub fn generate(key_id: &str) -> Credential {
        Credential {
            key_id: key_id.to_owned(),
            secret: gate::random::secret_text(32),
        }
    }

    /// The key id label.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The secret, for a child gate's `INTERSERVICE_HMAC_SECRET*` variable.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The same secret under another label: what a mislabelled or unknown key id looks like.
    pub fn relabelled(&self, key_id: &str) -> Credential {
        Credential {
            key_id: key_id.to_owned(),
            secret: self.secret.clone(),
        }
    }

    /// The fingerprint a gate shows for this secret in `sig_gate_config_info`.
    pub fn fingerprint(&self) -> String {
        Secret::new(self.secret.as_bytes())
            .fingerprint()
            .to_string()
    }

    /// The signing key for `slot`.
    pub fn key(&self, slot: Slot) -> Key {
        Key::new(
            slot,
            self.key_id.clone(),
            &Secret::new(self.secret.as_bytes()),
        )
    }

    /// A signer that signs with this credential only.
    pub fn signer(&self) -> Signer {
        Signer::new(self.key(Slot::Current), None)
    }

    /// A dual-signing signer: this credential as current, `previous` as previous (what a
    /// client sends during the overlap window with `TOOL_GATE_DUAL_SIGN=true`).
    pub fn dual_signer(&self, previous: &Credential) -> Signer {
        Signer::new(self.key(Slot::Current), Some(previous.key(Slot::Previous)))
    }

    /// This credential as a version 2 HMAC signing key (its label is the key id).
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::hmac(&self.key_id, &Secret::new(self.secret.as_bytes()))
    }

    /// A version 2 signer with this credential, for the gate whose audience is `audience`.
    pub fn signer_v2(&self, audience: &str) -> Signer {
        Signer::v2(self.signing_key(), audience)
    }

    /// A version 2 signer that signs with this credential and `previous` (both in
    /// `X-Gate-Signatures`, this one also in the header pair): the overlap window's client
    /// when the keys come from a key registry.
    pub fn dual_signer_v2(&self, previous: &Credential, audience: &str) -> Signer {
        self.signer_v2(audience)
            .also_signing_with(previous.signing_key())
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// An Ed25519 key pair of one calling service, generated for one run the way
/// `sig-gate keygen --ed25519` makes one ([`gate::sign::generate_ed25519`]): the private key
/// signs (version 2 only), the public key goes into a gate's key registry. `Debug` shows the
/// key id and the public key's fingerprint.
#[derive(Clone)]
pub struct IdentityKey {
    key: SigningKey,
    public: PublicKey,
}

impl IdentityKey {
    /// A new key pair with key id `key_id`.
    pub fn generate(key_id: &str) -> IdentityKey {
        // The PEM was written by the function that parses it back: it always parses.
        let (pem, public) = sign::generate_ed25519().expect("a new Ed25519 key parses");
        let key = SigningKey::ed25519_pem(key_id, &pem).expect("a new Ed25519 key parses");
        IdentityKey { key, public }
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        self.key.id()
    }

    /// The registry's `public_key` value (base64url, no padding).
    pub fn public_key(&self) -> String {
        self.public.to_base64url()
    }

    /// The fingerprint a gate shows for this key in `sig_gate_key_info`.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint().to_string()
    }

    /// The signing key, for a signer's observe slot ([`Signer::also_signing_with`]).
    pub fn signing_key(&self) -> SigningKey {
        self.key.clone()
    }

    /// A version 2 signer with this key alone, for the gate whose audience is `audience`.
    pub fn signer_v2(&self, audience: &str) -> Signer {
        Signer::v2(self.key.clone(), audience)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("key_id", &self.key_id())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// One request to send through the gate. Signing reads the method, target and body as they
/// are at that moment, so changing one afterwards is exactly a tampered request.
#[derive(Debug, Clone)]
pub struct Call {
    method: Method,
    target: String,
    body: Bytes,
    chunks: Option<Vec<Bytes>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Call {
    /// `method target` with an empty body and no headers.
    pub fn new(method: Method, target: impl Into<String>) -> Call {
        Call {
            method,
            target: target.into(),
            body: Bytes::new(),
            chunks: None,
            headers: Vec::new(),
        }
    }

    /// A signed `POST target` with a small JSON body, signed now with a fresh nonce.
    pub fn signed_post(target: impl Into<String>, signer: &Signer) -> Call {
        Call::new(Method::POST, target)
            .body(Bytes::from_static(
                br#"{"tool":"search","query":"sig-gate"}"#,
            ))
            .signed(signer)
    }

    /// Replace the method.
    pub fn method(mut self, method: Method) -> Call {
        self.method = method;
        self
    }

    /// Replace the request target (path and optional `?query`).
    pub fn target(mut self, target: impl Into<String>) -> Call {
        self.target = target.into();
        self
    }

    /// Replace the body (sent with a `Content-Length`).
    pub fn body(mut self, body: impl Into<Bytes>) -> Call {
        self.body = body.into();
        self.chunks = None;
        self
    }

    /// Send the body as these chunks with chunked transfer encoding (no declared length). The
    /// signature, if any, covers their concatenation.
    pub fn chunked(mut self, chunks: Vec<Bytes>) -> Call {
        self.body = chunks.iter().flatten().copied().collect::<Vec<u8>>().into();
        self.chunks = Some(chunks);
        self
    }

    /// Sign now with a fresh nonce.
    pub fn signed(self, signer: &Signer) -> Call {
        self.signed_at(signer, unix_now())
    }

    /// Sign with `timestamp` (Unix seconds) and a fresh nonce.
    pub fn signed_at(mut self, signer: &Signer, timestamp: u64) -> Call {
        let nonce = sign::new_nonce();
        let headers = signer.sign(&sign::Request {
            method: self.method.as_str(),
            target: &self.target,
            body: &self.body,
            timestamp,
            nonce: &nonce,
        });
        for (name, value) in headers {
            self = self.header(name, &value);
        }
        self
    }

    /// Append a header (a second value for the same name is sent as a second line).
    pub fn header(mut self, name: &str, value: &str) -> Call {
        // Header names here are constants of the protocol or the harness, and values are the
        // signer's output or deliberate test strings of visible ASCII.
        let name = HeaderName::from_bytes(name.as_bytes()).expect("harness header names are valid");
        let value = HeaderValue::from_str(value).expect("harness header values are visible ASCII");
        self.headers.push((name, value));
        self
    }

    /// Drop every value of a header.
    pub fn without(mut self, name: &str) -> Call {
        self.headers
            .retain(|(n, _)| !n.as_str().eq_ignore_ascii_case(name));
        self
    }

    /// Replace every value of a header with one value.
    pub fn replace(self, name: &str, value: &str) -> Call {
        self.without(name).header(name, value)
    }

    /// Every header line as set, repeats and order kept.
    pub fn header_lines(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The same call with exactly these header lines instead of its own.
    pub fn with_header_lines(mut self, lines: Vec<(HeaderName, HeaderValue)>) -> Call {
        self.headers = lines;
        self
    }

    /// The value of a header as set, if any.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.to_str().ok())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    /// The request in origin form (`POST /path HTTP/1.1` with a `Host` header), as a raw
    /// connection sends it.
    pub fn origin_request(&self, addr: SocketAddr) -> Request<Body> {
        let mut request = self.request(addr);
        // A path-and-query the harness wrote is a valid origin-form URI.
        *request.uri_mut() = self.target.parse().expect("harness targets are valid URIs");
        let host = HeaderValue::from_str(&addr.to_string()).expect("a socket address is ASCII");
        request.headers_mut().insert(http::header::HOST, host);
        request
    }

    /// The call written out as HTTP/1.1 bytes for `addr` (origin form, `Host`, the headers in
    /// order, `Content-Length` when there is a body; chunks are sent as one body), to be edited
    /// line by line and sent on a [`RawConnection`].
    pub fn wire(&self, addr: SocketAddr) -> Wire {
        let mut lines = vec![format!("host: {addr}")];
        for (name, value) in &self.headers {
            // Harness header values are visible ASCII (see `Call::header`).
            lines.push(format!("{name}: {}", value.to_str().unwrap_or_default()));
        }
        if !self.body.is_empty() {
            lines.push(format!("content-length: {}", self.body.len()));
        }
        Wire {
            method: self.method.to_string(),
            target: self.target.clone(),
            lines,
            body: self.body.clone(),
        }
    }

    /// The request to send to `addr`; a call can be built again (that is how a replay is sent).
    pub fn request(&self, addr: SocketAddr) -> Request<Body> {
        let body = match &self.chunks {
            Some(chunks) => Chunked(chunks.clone().into_iter().rev().collect()).boxed(),
            None => Full::new(self.body.clone()).boxed(),
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        // The target is a path the harness wrote and `addr` a socket address: a valid URI.
        *request.uri_mut() = format!("http://{addr}{}", self.target)
            .parse()
            .expect("harness targets are valid URIs");
        for (name, value) in &self.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        request
    }
}

/// An HTTP/1.1 request as text lines: what a [`RawConnection`] sends when a scenario needs bytes
/// a well-behaved client never writes (an absolute-form target, a second `Host`, a header name
/// in any spelling, a head over the size limit, a body held back).
#[derive(Debug, Clone)]
pub struct Wire {
    method: String,
    target: String,
    lines: Vec<String>,
    body: Bytes,
}

impl Wire {
    /// Replace the request target as written on the request line (for example absolute form).
    pub fn target(mut self, target: impl Into<String>) -> Wire {
        self.target = target.into();
        self
    }

    /// Append a header line exactly as given (no `\r\n`).
    pub fn line(mut self, line: impl Into<String>) -> Wire {
        self.lines.push(line.into());
        self
    }

    /// The request line and header lines, up to and including the blank line.
    pub fn head(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for line in &self.lines {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// The body as declared by `Content-Length`.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Head and body, as one well-behaved write would send them.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.head();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// One TCP connection written and read byte by byte: requests no HTTP library would send (see
/// [`Wire`]), answers read as they come, and the moment the server closes the connection.
#[derive(Debug)]
pub struct RawConnection {
    stream: tokio::net::TcpStream,
    /// Bytes read but not yet consumed by [`RawConnection::read_reply`].
    buffer: Vec<u8>,
}

/// Largest response head [`RawConnection::read_reply`] accepts.
const MAX_RAW_HEAD: usize = 64 * 1024;

impl RawConnection {
    /// Connect (no bytes sent).
    pub async fn open(addr: SocketAddr) -> Result<RawConnection, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|err| format!("connect {addr}: {err}"))?;
        let _ = stream.set_nodelay(true);
        Ok(RawConnection {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Write `bytes` (a failure usually means the server closed the connection already).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        self.stream
            .write_all(bytes)
            .await
            .map_err(|err| format!("writing: {err}"))
    }

    /// Read more bytes into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Read exactly `n` bytes from the stream (the buffer first) and return them; an error
    /// when the stream ends first.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buffer.len() < n {
            match self.fill().await {
                Ok(0) => return Err("connection closed mid-body".to_owned()),
                Ok(_) => {}
                Err(err) => return Err(format!("reading the body: {err}")),
            }
        }
        Ok(self.buffer.drain(..n).collect())
    }

    /// Read one HTTP/1.x response (head, then a `Content-Length` or chunked body, or none),
    /// giving up after `within`.
    pub async fn read_reply(&mut self, within: Duration) -> Result<Reply, String> {
        tokio::time::timeout(within, self.reply())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", within.as_millis())))
    }

    async fn reply(&mut self) -> Result<Reply, String> {
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut slots);
            match response.parse(&self.buffer) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = StatusCode::from_u16(response.code.unwrap_or(0))
                        .map_err(|err| format!("status line: {err}"))?;
                    let mut headers = HeaderMap::new();
                    for header in response.headers.iter() {
                        let name = HeaderName::from_bytes(header.name.as_bytes());
                        let value = HeaderValue::from_bytes(header.value);
                        if let (Ok(name), Ok(value)) = (name, value) {
                            headers.append(name, value);
                        }
                    }
                    break (status, headers, len);
                }
                Ok(httparse::Status::Partial) if self.buffer.len() < MAX_RAW_HEAD => {}
                Ok(httparse::Status::Partial) => return Err("response head too large".into()),
                Err(err) => return Err(format!("malformed response head: {err}")),
            }
            match self.fill().await {
                Ok(0) if self.buffer.is_empty() => {
                    return Err("connection closed without an answer".into());
                }
                Ok(0) => return Err("connection closed mid-head".into()),
                Ok(_) => {}
                Err(err) => return Err(format!("reading: {err}")),
            }
        };
        self.buffer.drain(..head_len);
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let chunked = headers
            .get(http::header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            self.chunked_body().await?
        } else {
            self.take(length.unwrap_or(0)).await?
        };
        Ok(Reply {
            status,
            headers,
            body: body.into(),
        })
    }

    /// A chunked body: size lines, data, trailers up to the blank line.
    async fn chunked_body(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("malformed chunk size line {line:?}"))?;
            if size == 0 {
                loop {
                    match self.line().await? {
                        line if line.is_empty() => return Ok(body),
                        line if line.contains(':') => {}
                        line => return Err(format!("malformed trailer line {line:?}")),
                    }
                }
            }
            body.extend(self.take(size).await?);
            self.take(2).await?;
        }
    }

    /// One `\r\n`-terminated line, without the terminator.
    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..at + 2).take(at).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            match self.fill().await {
                Ok(0) => return Err("connection closed mid-body".to_owned()),
                Ok(_) => {}
                Err(err) => return Err(format!("reading the body: {err}")),
            }
        }
    }

    /// Read (and discard) until the server closes the connection; how long that took, or
    /// `None` when it was still open after `within`. A reset counts as closed.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Duration> {
        let started = std::time::Instant::now();
        let closed = async {
            loop {
                match self.fill().await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => self.buffer.clear(),
                }
            }
        };
        tokio::time::timeout(within, closed)
            .await
            .ok()
            .map(|()| started.elapsed())
    }

    /// Read whatever arrives within `within` (for protocols the harness parses itself).
    pub async fn read_some(&mut self, within: Duration) -> Result<Vec<u8>, String> {
        if self.buffer.is_empty() {
            match tokio::time::timeout(within, self.fill()).await {
                Ok(Ok(0)) => return Err("connection closed".to_owned()),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(format!("reading: {err}")),
                Err(_) => return Ok(Vec::new()),
            }
        }
        Ok(std::mem::take(&mut self.buffer))
    }
}

/// A body sent as separate chunks with unknown length (chunked transfer encoding); the chunks
/// are stored last-first so each poll pops one.
struct Chunked(Vec<Bytes>);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop().map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The JSON body's `reason` (rejections by the gate), if any.
    pub fn reason(&self) -> Option<String> {
        self.json_field("reason")
    }

    /// The JSON body's `error`, if any.
    pub fn error(&self) -> Option<String> {
        self.json_field("error")
    }

    fn json_field(&self, field: &str) -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        json.get(field)?.as_str().map(str::to_owned)
    }

    /// `200`, `401 bad_signature` or `413 request body too large`: the status with the gate's
    /// reason or error, as the reports print it.
    pub fn summary(&self) -> String {
        match (self.reason(), self.error()) {
            (Some(reason), _) => format!("{} {reason}", self.status.as_u16()),
            (None, Some(error)) if !self.status.is_success() => {
                format!("{} {error}", self.status.as_u16())
            }
            _ => self.status.as_u16().to_string(),
        }
    }

    /// Whether the response asks the client to close the connection.
    pub fn closes(&self) -> bool {
        self.headers
            .get(http::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// One pooled HTTP/1.1 client.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client<HttpConnector, Body>,
}

impl Http {
    /// A client whose pooled connections are dropped after `idle` unused. Keep `idle` below the
    /// server's idle close (a draining gate closes idle connections after one second) so the
    /// client never picks a connection the server is closing: that is how a well-behaved
    /// client avoids the keep-alive race, and what the drill's traffic does.
    pub fn new(idle: Duration) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle)
            .build(connector);
        Http { client }
    }

    /// Send `request` and read the whole answer, giving up after `within`.
    pub async fn send(&self, request: Request<Body>, within: Duration) -> Result<Reply, String> {
        read_reply(self.client.request(request), within).await
    }

    /// Send a call to the gate's proxy listener (5 s limit).
    pub async fn call(&self, addr: SocketAddr, call: &Call) -> Result<Reply, HarnessError> {
        self.send(call.request(addr), Duration::from_secs(5))
            .await
            .map_err(|err| HarnessError::new(format!("{} {}", call.method, call.target), err))
    }

    /// `GET http://addr/path` (admin endpoints), 5 s limit.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<Reply, HarnessError> {
        self.call(addr, &Call::new(Method::GET, path)).await
    }
}

/// One HTTP/1.1 connection of its own, one request at a time: what a client with a single
/// keep-alive connection does, and a way to know exactly which requests were in flight when
/// the server began to drain.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Body>,
}

impl Connection {
    /// Connect and complete the HTTP/1.1 handshake.
    pub async fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|err| format!("connect {addr}: {err}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|err| format!("handshake {addr}: {}", error_chain(&err)))?;
        tokio::spawn(connection);
        Ok(Connection { addr, sender })
    }

    /// Whether the connection can take another request (false once the server closed it or
    /// answered `Connection: close`).
    pub async fn usable(&mut self) -> bool {
        self.sender.ready().await.is_ok()
    }

    /// Send one call and read the whole answer, giving up after `within`.
    pub async fn send(&mut self, call: &Call, within: Duration) -> Result<Reply, String> {
        let request = call.origin_request(self.addr);
        read_reply(self.sender.send_request(request), within).await
    }
}

/// Await a response and read its whole body, giving up after `within` for the two together.
pub(crate) async fn read_reply<E: std::error::Error + 'static>(
    response: impl std::future::Future<Output = Result<http::Response<hyper::body::Incoming>, E>>,
    within: Duration,
) -> Result<Reply, String> {
    let exchange = async {
        let response = response.await.map_err(|err| error_chain(&err))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|err| format!("reading the body: {}", error_chain(&err)))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", within.as_millis())))
}

/// An error and its sources, `: `-joined (hyper's top-level messages alone say little).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use gate::protocol;

    #[test]
    fn credentials_never_show_their_secret() {
        let credential = Credential::generate("k1");
        let shown = format!("{credential:?}");
        assert!(!shown.contains(credential.secret()));
        assert!(shown.contains(&credential.fingerprint()));
        assert!(credential.secret().len() >= 32);
    }

    #[test]
    fn signing_covers_the_call_as_it_was_then() {
        let credential = Credential::generate("k1");
        let call = Call::new(Method::POST, "/a?x=1")
            .body("one")
            .signed_at(&credential.signer(), 1_700_000_000);
        let signature = call
            .header_value("x-gate-signature")
            .expect("signed")
            .to_owned();
        assert_eq!(signature.len(), 64);
        assert_eq!(call.header_value("x-gate-key-id"), Some("k1"));
        assert_eq!(call.header_value("x-gate-timestamp"), Some("1700000000"));
        assert!(protocol::is_nonce(
            call.header_value("x-gate-nonce").expect("nonce")
        ));
        let tampered = call.clone().body("two");
        assert_eq!(
            tampered.header_value("x-gate-signature"),
            Some(signature.as_str())
        );
        assert_eq!(tampered.path(), "/a");
        let request = tampered.request("127.0.0.1:9".parse().expect("addr"));
        assert_eq!(request.uri(), "http://127.0.0.1:9/a?x=1");
    }

    #[test]
    fn wire_writes_the_call_and_takes_edits() {
        let addr = "127.0.0.1:9".parse().expect("addr");
        let call = Call::new(Method::POST, "/a?x=1")
            .body("hello")
            .header("x-gate-nonce", "n");
        let wire = call
            .wire(addr)
            .target("http://h/a?x=1")
            .line("X_Odd_Name: v");
        let text = String::from_utf8(wire.bytes()).expect("ASCII");
        assert_eq!(
            text,
            "POST http://h/a?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-gate-nonce: n\r\n\
             content-length: 5\r\nX_Odd_Name: v\r\n\r\nhello"
        );
        assert_eq!(wire.body(), b"hello");
    }

    #[test]
    fn header_edits() {
        let call = Call::new(Method::GET, "/")
            .header("x-gate-nonce", "a")
            .header("x-gate-nonce", "b");
        let request = call.request("127.0.0.1:9".parse().expect("addr"));
        assert_eq!(request.headers().get_all("x-gate-nonce").iter().count(), 2);
        let call = call.replace("X-Gate-Nonce", "c");
        assert_eq!(call.header_value("x-gate-nonce"), Some("c"));
        assert_eq!(
            call.without("x-gate-nonce").header_value("x-gate-nonce"),
            None
        );
    }
}
