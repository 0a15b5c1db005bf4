//! The gate as a hyper service: check that the request can be forwarded as origin-form
//! HTTP/1.1, verify, then forward over a pooled upstream connection ([`crate::upstream`]),
//! streaming the response back.
//!
//! Where things happen:
//! - requests the gate does not forward whatever their signature (CONNECT, more than one
//!   `Host`, a `host` that contradicts HTTP/2's `:authority`, a target in no forwardable
//!   form): [`check_request`];
//! - signature checks: [`Gate::admit`] takes the keys in force once
//!   ([`KeysInForce::current`]), calls [`verify::check_headers`] (headers only, before the body
//!   is read), then [`verify::Pending::observations`] and [`verify::Pending::verify`], the
//!   window again with the clock read after the body, and [`ReplayStore::admit_prefetched`];
//! - which of the client's headers go upstream: [`client_header`] (the gate's own headers
//!   dropped in every spelling, the ones it sets or vouches for kept whatever `Connection`
//!   names), applied as [`crate::upstream`] encodes the head;
//! - where a byte leaves for the upstream: [`Gate::forward`], which takes a [`Pass`]; a
//!   verified pass holds an [`Admitted`] proof that only the replay store can build;
//! - every error's status and body: [`Refusal`], one exhaustive `match`;
//! - the access log (`GATE_ACCESS_LOG`), one line per request once its response head is
//!   ready: [`AccessLine`]. Every line about a request carries its `request_id`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::budget::{ConnectionBudget, Exhausted, Reservation};
use crate::clock::unix_now;
use crate::config::Config;
use crate::logging::Throttle;
use crate::metrics::{Metrics, OtherReason, Outcome};
use crate::protocol;
use crate::reload::{Generation, KeysInForce};
use crate::replay::{Admission, Admitted, ReplayError, ReplayStore};
use crate::upstream::{self, Disposition, Outgoing, UpstreamBody, UpstreamError};
use crate::verify::{self, ClaimedKeyIds, Reason, RequestLine};

/// Body of every response the gate sends: the upstream's, streamed, or the gate's own JSON.
pub type ResponseBody = Either<Streamed, Full<Bytes>>;

/// `X-Request-Id`: kept when the client sends one, generated otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`: the peer address is appended.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Real-IP`: a client address header the gate does not maintain, so a client's is dropped.
pub const REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// Names whose spellings with `_` for `-` are dropped, besides every `X-Gate-*` name: the
/// headers the gate sets or vouches for, which a server reading `_` as `-` (CGI, WSGI) would
/// otherwise take from the client.
const UNDERSCORE_ALIASED: [HeaderName; 3] = [FORWARDED_FOR, REQUEST_ID, REAL_IP];

/// Why the gate answered a request itself. [`Refusal::status`] and [`Refusal::body`] are the
/// one place that maps an error to what the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The signature failed (401).
    Signature(Reason),
    /// Body over the limit (413).
    BodyTooLarge,
    /// The client broke off or sent a malformed body (400).
    BodyUnreadable,
    /// The client did not finish its body in time (408).
    BodyTimeout,
    /// Replay cache at capacity: fail closed (503).
    ReplayCacheFull,
    /// The shared replay store did not answer within its budget: fail closed (503).
    ReplayStoreUnavailable,
    /// The body budget has no room for this body (503, see [`crate::budget`]).
    BodyBudgetExhausted,
    /// Request head over `GATE_MAX_HEADER_BYTES` or with too many fields (431).
    HeadTooLarge,
    /// Upstream refused or reset the connection (502).
    UpstreamUnavailable,
    /// No upstream response head in time (504).
    UpstreamTimeout,
    /// A request the gate cannot forward faithfully as HTTP/1.1 (400): more than one `Host`,
    /// an HTTP/2 `host` naming another authority than `:authority`, or a request target in no
    /// form it forwards.
    MalformedRequest,
    /// CONNECT: the gate is not a tunnel (501).
    Connect,
}

impl Refusal {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Signature(_) => StatusCode::UNAUTHORIZED,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyUnreadable => StatusCode::BAD_REQUEST,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::ReplayCacheFull => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::ReplayStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::BodyBudgetExhausted => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::MalformedRequest => StatusCode::BAD_REQUEST,
            Refusal::Connect => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The JSON body, a static string (no allocation on the rejection path).
    pub fn body(self) -> &'static str {
        macro_rules! invalid {
            ($reason:literal) => {
                concat!(
                    r#"{"error":"invalid request signature","reason":""#,
                    $reason,
                    r#""}"#
                )
            };
        }
        match self {
            Refusal::Signature(Reason::MissingSignature) => invalid!("missing_signature"),
            Refusal::Signature(Reason::MalformedSignature) => invalid!("malformed_signature"),
            Refusal::Signature(Reason::StaleTimestamp) => invalid!("stale_timestamp"),
            Refusal::Signature(Reason::MissingKeyId) => invalid!("missing_key_id"),
            Refusal::Signature(Reason::UnknownKeyId) => invalid!("unknown_key_id"),
            Refusal::Signature(Reason::BadSignature) => invalid!("bad_signature"),
            Refusal::Signature(Reason::ReplayedNonce) => invalid!("replayed_nonce"),
            Refusal::BodyTooLarge => r#"{"error":"request body too large"}"#,
            Refusal::BodyUnreadable => r#"{"error":"request body could not be read"}"#,
            Refusal::BodyTimeout => r#"{"error":"request body timeout"}"#,
            Refusal::ReplayCacheFull => r#"{"error":"replay cache full"}"#,
            Refusal::ReplayStoreUnavailable => r#"{"error":"replay store unavailable"}"#,
            Refusal::BodyBudgetExhausted => r#"{"error":"request body budget exhausted"}"#,
            Refusal::HeadTooLarge => r#"{"error":"request header fields too large"}"#,
            Refusal::UpstreamUnavailable => r#"{"error":"upstream unavailable"}"#,
            Refusal::UpstreamTimeout => r#"{"error":"upstream timeout"}"#,
            Refusal::MalformedRequest => r#"{"error":"malformed request"}"#,
            Refusal::Connect => r#"{"error":"CONNECT is not supported"}"#,
        }
    }

    /// The `sig_gate_requests_total` outcome of a refused request.
    pub fn outcome(self) -> Outcome {
        match self {
            Refusal::UpstreamUnavailable | Refusal::UpstreamTimeout => Outcome::UpstreamError,
            Refusal::Signature(_)
            | Refusal::BodyTooLarge
            | Refusal::BodyUnreadable
            | Refusal::BodyTimeout
            | Refusal::ReplayCacheFull
            | Refusal::ReplayStoreUnavailable
            | Refusal::BodyBudgetExhausted
            | Refusal::HeadTooLarge
            | Refusal::MalformedRequest
            | Refusal::Connect => Outcome::Rejected,
        }
    }

    /// The gate's own answer: status, JSON body and, for a signature failure,
    /// `WWW-Authenticate`.
    pub fn response(self) -> Response<ResponseBody> {
        let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
            self.body().as_bytes(),
        ))));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Refusal::Signature(_) = self {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"GateHMAC realm="sig-gate""#),
            );
        }
        response
    }
}

/// Why a request may go upstream. Only [`Gate::admit`] builds one for a signed path.
#[derive(Debug)]
enum Pass {
    /// Signature verified and nonce fresh, by a key of this generation.
    Verified(Admitted, Arc<Generation>),
    /// An unsigned path (`GATE_UNSIGNED_PATHS`).
    Exempt,
    /// Report-only mode: failed checks were counted and logged, and the request goes on.
    ReportOnly,
}

/// What the gate knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Peer {
    addr: SocketAddr,
    /// The peer IP as a header value, built once per connection.
    forwarded_for: HeaderValue,
    /// This connection's share of the body budget.
    budget: ConnectionBudget,
    /// The upstream keep-alive pool of the worker serving this connection: its sockets belong
    /// to that worker's runtime, which runs this connection's requests too.
    upstream: Arc<upstream::Pool>,
}

impl Peer {
    /// Describe the peer at `addr`, whose bodies draw on `budget` and whose requests go
    /// upstream through `upstream`.
    pub fn new(addr: SocketAddr, budget: ConnectionBudget, upstream: Arc<upstream::Pool>) -> Peer {
        // An IP address prints as ASCII digits, dots, colons and hex: always a valid value.
        let forwarded_for = HeaderValue::from_str(&addr.ip().to_string()).expect("IP is ASCII");
        Peer {
            addr,
            forwarded_for,
            budget,
            upstream,
        }
    }
}

/// The verifying proxy: configuration, keys, replay store and metrics, one for the process and
/// shared by every worker (the upstream connections are each worker's own, in [`Peer`]).
#[derive(Debug)]
pub struct Gate {
    config: Config,
    metrics: Metrics,
    replay: ReplayStore,
    /// The keys in force, replaced whole by a reload ([`crate::reload`]).
    keys: Arc<KeysInForce>,
    request_ids: RequestIds,
    draining: AtomicBool,
    /// One log line a second for requests refused while the replay store is unavailable.
    store_refusal_log: Throttle,
}

impl Gate {
    /// Build the gate.
    pub fn new(config: Config, metrics: Metrics) -> Gate {
        let keys = Arc::new(KeysInForce::new(config.keyring.clone(), &metrics));
        let replay = ReplayStore::new(&config, metrics.replay_store());
        Gate {
            config,
            metrics,
            replay,
            keys,
            request_ids: RequestIds::new(),
            draining: AtomicBool::new(false),
            store_refusal_log: Throttle::new(std::time::Duration::from_secs(1)),
        }
    }

    /// The metrics this gate counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The keys in force, which the reload task replaces.
    pub fn keys(&self) -> &Arc<KeysInForce> {
        &self.keys
    }

    /// The Prometheus exposition of [`Gate::metrics`], with the replay cache's size read now:
    /// at scrape time rather than set on every request.
    pub fn render_metrics(&self) -> Vec<u8> {
        self.metrics.nonce_entries(self.replay.len());
        self.metrics.render()
    }

    /// From now on, every HTTP/1 response carries `Connection: close`, so clients leave this
    /// process on their own during a drain instead of racing an idle-connection close.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Handle one request end to end: the `service_fn` body. Never fails: every error becomes a
    /// response, and the `Result` is only the shape hyper's services have.
    ///
    /// Not an `async fn`: the request is taken apart before the future is built, and the
    /// future owns the gate and the peer, so hyper's connection stores this future alone,
    /// without a wrapper. hyper moves it into place for every request, and an `async fn` would
    /// keep its arguments beside everything built from them: the request twice over, and a
    /// wrapper's copy of the whole future, twice the size of this one (bench/analysis.md,
    /// "Memory").
    pub fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Arc<Peer>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send {
        let started = Instant::now();
        let version = request.version();
        let (mut parts, body) = request.into_parts();
        // The gate's own statements are removed before anything reads the headers, so a
        // client's copies can neither reach the upstream nor count as a repeated `X-Gate-*`
        // header; spellings with `_` are dropped when the request is encoded.
        parts.headers.remove(protocol::VERIFIED_KEY_ID);
        parts.headers.remove(protocol::VERIFIED_CALLER);
        let request_id = match parts.headers.get(REQUEST_ID) {
            // A copy, not a slice of hyper's read buffer (see `Gate::forward`).
            Some(id) => {
                RequestId::Sent(HeaderValue::from_bytes(id.as_bytes()).expect("was a valid value"))
            }
            None => RequestId::Generated(self.request_ids.next()),
        };
        // The access log's view of the request, taken before `forward` consumes it; an owned
        // copy of the path, so the forwarded head does not keep hyper's read buffer.
        let access = self
            .config
            .access_log
            .then(|| (parts.method.clone(), Box::<str>::from(parts.uri.path())));
        async move {
            let passed = if let Err((refusal, why)) = check_request(&parts) {
                tracing::warn!(
                    status = refusal.status().as_u16(),
                    why,
                    method = parts.method.as_str(),
                    peer = %peer.addr,
                    request_id = request_id.text(),
                    "request refused"
                );
                Err(refusal)
            } else if self.config.is_unsigned_path(parts.uri.path()) {
                let body = self
                    .read_body(&parts.headers, body, &peer, &request_id)
                    .await;
                body.map(|body| (Pass::Exempt, body))
            } else {
                self.admit(&parts, body, &peer, &request_id).await
            };
            // The key that admitted the request, for the access log only.
            let mut verified = None;
            let result = match passed {
                Ok((pass, body)) => {
                    if let (Some(_), Pass::Verified(admitted, generation)) = (&access, &pass) {
                        verified = Some((Arc::clone(generation), *admitted));
                    }
                    let added_id = request_id.generated();
                    let (outcome, exchange) = self.forward(parts, body, pass, &peer, added_id);
                    match exchange.await {
                        Ok(response) => Ok((outcome, response)),
                        Err(err) => Err(self.upstream_failed(err, &request_id)),
                    }
                }
                Err(refusal) => Err(refusal),
            };

            let elapsed = started.elapsed().as_secs_f64();
            let access_line = |status, upstream_status, request_id: &RequestId| {
                if let Some((method, path)) = &access {
                    let key = verified
                        .as_ref()
                        .and_then(|(generation, admitted)| generation.keyring().at(admitted.key()));
                    AccessLine {
                        request_id: request_id.text(),
                        method: method.as_str(),
                        path,
                        status,
                        // Whole microseconds: prints as `1.873`, not `1.8729999999999998`.
                        duration_ms: (elapsed * 1e6).round() / 1e3,
                        caller: key.map(|key| key.caller()),
                        key_id: key.map(|key| key.id()),
                        upstream_status,
                    }
                    .log();
                }
            };
            let (outcome, mut response) = match result {
                Ok((outcome, response)) => {
                    let status = response.status();
                    access_line(status, Some(status), &request_id);
                    let streamed = |body| Either::Left(Streamed { body, request_id });
                    (outcome, response.map(streamed))
                }
                Err(refusal) => {
                    access_line(refusal.status(), None, &request_id);
                    (refusal.outcome(), refusal_response(refusal, &request_id))
                }
            };
            if self.draining.load(Ordering::Relaxed) && version < Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            self.metrics.request(outcome, elapsed);
            Ok(response)
        }
    }

    /// Verify a request on a signed path and read its body, checks in the order of
    /// docs/protocol.md ("What the gate checks, in order").
    async fn admit(
        &self,
        parts: &Parts,
        body: Incoming,
        peer: &Peer,
        request_id: &RequestId,
    ) -> Result<(Pass, Bytes), Refusal> {
        let now = unix_now();
        if let Some(skew) = verify::clock_skew(&parts.headers, now) {
            self.metrics.clock_skew(skew);
        }
        let config = &self.config;
        // One generation of keys for the whole request: verified, counted and forwarded with
        // the keys of one moment, whatever a reload does meanwhile.
        let generation = self.keys.current();
        let keyring = generation.keyring();
        let checked = verify::check_headers(&parts.headers, keyring, config.clock_skew_secs, now)
            .map(|pending| {
                // The replay table's slot loads while the body is read and hashed.
                let prefetched = self.replay.prefetch(pending.nonce());
                (pending, prefetched)
            });
        if let Err(reason) = checked {
            self.signature_failure(reason, parts, peer, request_id)?;
        }
        let body = self
            .read_body(&parts.headers, body, peer, request_id)
            .await?;
        let Ok((pending, prefetched)) = checked else {
            return Ok((Pass::ReportOnly, body));
        };

        let request = RequestLine {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
        };
        let digest = protocol::body_digest(&body);
        for (key, valid) in pending.observations(request, &digest).iter() {
            if let Some(counters) = generation.counters(key) {
                counters.observed(valid);
            }
        }
        let verified = match pending.verify(request, &digest) {
            Ok(verified) => verified,
            Err(reason) => {
                self.signature_failure(reason, parts, peer, request_id)?;
                return Ok((Pass::ReportOnly, body));
            }
        };
        // The window again, by the clock once the body is in: a request whose window closed
        // while its body arrived is stale, and the replay store is asked with this clock.
        let now = unix_now();
        if verified.timestamp().abs_diff(now) > config.clock_skew_secs {
            self.signature_failure(Reason::StaleTimestamp, parts, peer, request_id)?;
            return Ok((Pass::ReportOnly, body));
        }
        let admitted = match self.replay.admit_prefetched(verified, &prefetched, now) {
            Admission::Ready(answer) => answer,
            Admission::Pending(answer) => answer.await,
        };
        match admitted {
            Ok(admitted) => {
                if let Some(slot) = admitted.slot() {
                    self.metrics.verified(slot);
                }
                if let Some(counters) = generation.counters(admitted.key()) {
                    counters.admitted();
                }
                Ok((Pass::Verified(admitted, generation), body))
            }
            Err(ReplayError::Replayed) => {
                self.signature_failure(Reason::ReplayedNonce, parts, peer, request_id)?;
                Ok((Pass::ReportOnly, body))
            }
            Err(ReplayError::Expired) => {
                self.signature_failure(Reason::StaleTimestamp, parts, peer, request_id)?;
                Ok((Pass::ReportOnly, body))
            }
            Err(ReplayError::Full) => {
                self.metrics.rejected_other(OtherReason::ReplayCacheFull);
                tracing::error!(
                    capacity = config.nonce_cache_capacity,
                    request_id = request_id.text(),
                    report_only = !config.require_signature,
                    "replay cache full: failing closed (raise GATE_NONCE_CACHE_CAPACITY)"
                );
                if config.require_signature {
                    Err(Refusal::ReplayCacheFull)
                } else {
                    Ok((Pass::ReportOnly, body))
                }
            }
            Err(ReplayError::Unavailable(kind)) => {
                self.metrics
                    .rejected_other(OtherReason::ReplayStoreUnavailable);
                if self.store_refusal_log.allow() {
                    tracing::warn!(
                        kind = kind.as_str(),
                        request_id = request_id.text(),
                        report_only = !config.require_signature,
                        "replay store unavailable: failing closed (further refusals within a \
                         second are only counted)"
                    );
                }
                if config.require_signature {
                    Err(Refusal::ReplayStoreUnavailable)
                } else {
                    Ok((Pass::ReportOnly, body))
                }
            }
        }
    }

    /// Count and log a signature failure; `Err` when it rejects the request (enforcing mode).
    fn signature_failure(
        &self,
        reason: Reason,
        parts: &Parts,
        peer: &Peer,
        request_id: &RequestId,
    ) -> Result<(), Refusal> {
        self.metrics.invalid(reason);
        tracing::warn!(
            reason = reason.as_str(),
            method = parts.method.as_str(),
            path = parts.uri.path(),
            key_ids = %ClaimedKeyIds(&parts.headers),
            peer = %peer.addr,
            request_id = request_id.text(),
            report_only = !self.config.require_signature,
            "invalid request signature"
        );
        if self.config.require_signature {
            Err(Refusal::Signature(reason))
        } else {
            Ok(())
        }
    }

    /// Read the whole body under `GATE_MAX_BODY_BYTES`: a declared length over the limit is
    /// refused before a byte is read; a streamed body is cut off at the limit. Bytes that
    /// arrive after the gate started waiting draw on the peer's body budget.
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        peer: &Peer,
        request_id: &RequestId,
    ) -> Result<Bytes, Refusal> {
        let limit = self.config.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = |refusal| {
            self.metrics.rejected_other(OtherReason::BodyTooLarge);
            refusal
        };
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(too_large(Refusal::BodyTooLarge));
        }
        // A body that came with its head is whole at the first poll: no timer is set for it,
        // which spares a timer-wheel insertion and removal per request.
        let mut collecting = std::pin::pin!(collect(body, limit, &peer.budget));
        let first = std::future::poll_fn(|cx| Poll::Ready(collecting.as_mut().poll(cx))).await;
        let collected = match first {
            Poll::Ready(collected) => Ok(collected),
            Poll::Pending => tokio::time::timeout(self.config.body_read_timeout, collecting).await,
        };
        match collected {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(BodyError::TooLarge)) => Err(too_large(Refusal::BodyTooLarge)),
            Ok(Err(BodyError::Budget(exhausted))) => {
                self.metrics.body_budget_refused();
                if peer.budget.may_log() {
                    tracing::warn!(
                        peer = %peer.addr,
                        request_id = request_id.text(),
                        reason = %exhausted,
                        "request body refused with 503: body budget used up \
                         (GATE_MAX_BUFFERED_BODY_BYTES; further refusals within a second are \
                         only counted)"
                    );
                }
                Err(Refusal::BodyBudgetExhausted)
            }
            Ok(Err(BodyError::Unreadable(err))) => {
                tracing::debug!(
                    error = %err,
                    request_id = request_id.text(),
                    "request body could not be read"
                );
                Err(Refusal::BodyUnreadable)
            }
            Err(_elapsed) => Err(Refusal::BodyTimeout),
        }
    }

    /// Send the request upstream: method, path, query, headers and body unchanged except the
    /// hop-by-hop headers, the headers [`client_header`] drops, `X-Forwarded-For`,
    /// `X-Gate-Verified-Key-Id` and `X-Gate-Verified-Caller` of the key that admitted a verified
    /// request (from the generation that verified it), and `request_id`, an `X-Request-Id` the
    /// gate generated. The
    /// target goes in origin form (an absolute-form target's path and query, `/` for an empty
    /// path: what was verified), and `Host` is the target's authority when it has one (HTTP/2's
    /// `:authority`, an absolute-form URI's), else the client's. Returns the outcome to count
    /// once the exchange succeeds, and the exchange: the request is already encoded, so it
    /// holds no copy of it.
    fn forward(
        &self,
        mut parts: Parts,
        body: Bytes,
        pass: Pass,
        peer: &Peer,
        request_id: Option<&[u8]>,
    ) -> (
        Outcome,
        impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + use<>,
    ) {
        let (outcome, generation, admitted) = match &pass {
            Pass::Verified(admitted, generation) => {
                (Outcome::Forwarded, Some(generation), Some(*admitted))
            }
            Pass::ReportOnly => (Outcome::Forwarded, None, None),
            Pass::Exempt => (Outcome::Exempt, None, None),
        };
        // The key that admitted the request, in the generation that verified it.
        let key = generation
            .zip(admitted)
            .and_then(|(generation, admitted)| generation.keyring().at(admitted.key()));
        let forwarded_for = if parts.headers.contains_key(FORWARDED_FOR) {
            // Earlier proxies' addresses stay, joined into one field with the peer's.
            append_forwarded_for(&mut parts.headers, &peer.forwarded_for);
            None
        } else {
            Some(&peer.forwarded_for)
        };
        let added = [
            forwarded_for.map(|value| (FORWARDED_FOR, value.as_bytes())),
            key.map(|key| (protocol::VERIFIED_KEY_ID, key.verified_key_id().as_bytes())),
            key.map(|key| (protocol::VERIFIED_CALLER, key.verified_caller().as_bytes())),
            request_id.map(|value| (REQUEST_ID, value)),
        ];
        // RFC 9112 section 3.2.2 and RFC 9113 section 8.3.1: the target's authority is the
        // host (`check_request` refused an HTTP/2 `host` that disagrees with it). A copy of
        // the client's `Host` shares hyper's buffer: no allocation.
        let host = match parts.uri.authority() {
            Some(authority) => Some(
                // An `Authority` holds only characters that are valid in a header value.
                HeaderValue::from_str(authority.as_str()).expect("authority is header-safe"),
            ),
            None => parts.headers.get(header::HOST).cloned(),
        };
        let request = Outgoing {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: parts.headers,
            host: host.as_ref(),
            disposition: client_header,
            added: &added,
            body: &body,
        };
        // The exchange holds no part of the request: the head and a small body, slices of
        // hyper's read buffer, are let go of when this returns, before anyone waits, so hyper
        // reads the next request into that buffer instead of a new one.
        let exchange = peer.upstream.send(request, self.config.upstream_timeout);
        (outcome, exchange)
    }

    /// Log a failed upstream exchange and say how the client is answered.
    fn upstream_failed(&self, err: UpstreamError, request_id: &RequestId) -> Refusal {
        let upstream = &self.config.upstream;
        let request_id = request_id.text();
        match err {
            UpstreamError::Timeout => {
                tracing::warn!(upstream = %upstream, request_id, "upstream timeout");
                Refusal::UpstreamTimeout
            }
            err => {
                tracing::warn!(
                    error = %err,
                    upstream = %upstream,
                    request_id,
                    "upstream unavailable"
                );
                Refusal::UpstreamUnavailable
            }
        }
    }
}

/// One `access` log line (`GATE_ACCESS_LOG=true`), written when the response head is ready:
/// a streamed body may run on for minutes, and the head is what the client waited for.
/// `caller` and `key_id` only for a request that verified; `upstream_status` only when the
/// upstream answered. The query is left out: it may carry tokens.
struct AccessLine<'a> {
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    status: StatusCode,
    duration_ms: f64,
    caller: Option<&'a str>,
    key_id: Option<&'a str>,
    upstream_status: Option<StatusCode>,
}

impl AccessLine<'_> {
    fn log(&self) {
        tracing::info!(
            request_id = self.request_id,
            method = self.method,
            path = self.path,
            status = self.status.as_u16(),
            duration_ms = self.duration_ms,
            caller = self.caller,
            key_id = self.key_id,
            upstream_status = self.upstream_status.map(|status| status.as_u16()),
            "access"
        );
    }
}

/// The upstream's response body on its way to the client, with the request id its failure is
/// logged with.
#[derive(Debug)]
pub struct Streamed {
    body: UpstreamBody,
    request_id: RequestId,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Err(err))) = &polled {
            tracing::warn!(
                error = %err,
                request_id = this.request_id.text(),
                "upstream response body failed"
            );
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Refuse, before any signature check, a request the gate would not forward faithfully as
/// origin-form HTTP/1.1 (docs/protocol.md, "Forwarding"); `Err` holds the refusal and why, for
/// the log. The target must be origin-form (a path starting with `/`, which an absolute-form
/// target also yields: its path, `/` when empty) or `*` with OPTIONS; the path verified is the
/// path forwarded.
fn check_request(parts: &Parts) -> Result<(), (Refusal, &'static str)> {
    if parts.method == Method::CONNECT {
        return Err((Refusal::Connect, "CONNECT"));
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err((Refusal::MalformedRequest, "more than one Host"));
    }
    let path = parts.uri.path();
    if !(path.starts_with('/') || (path == "*" && parts.method == Method::OPTIONS)) {
        return Err((
            Refusal::MalformedRequest,
            "request target in no forwardable form",
        ));
    }
    if let Some(authority) = parts.uri.authority() {
        let authority = authority.as_str().as_bytes();
        if authority.contains(&b'@') {
            return Err((Refusal::MalformedRequest, "userinfo in the request target"));
        }
        let disagrees = host.is_some_and(|host| !host.as_bytes().eq_ignore_ascii_case(authority));
        if parts.version == Version::HTTP_2 && disagrees {
            return Err((Refusal::MalformedRequest, "host differs from :authority"));
        }
    }
    Ok(())
}

/// Where a client's header field goes (docs/protocol.md, "Forwarding"), by its lower-case
/// name: no allocation, and a byte scan only for names with `_`.
///
/// - Dropped: the gate's own statements (`X-Gate-Verified-Key-Id`, `X-Gate-Verified-Caller`),
///   the client address headers the gate does not maintain (`Forwarded`, `X-Real-IP`), and
///   every spelling with `_` of an `X-Gate-*` name or of a header the gate sets or vouches
///   for, which CGI- and WSGI-style servers read as the `-` spelling.
/// - End to end, whatever the client's `Connection` lists: `X-Forwarded-For`,
///   `X-Request-Id` and the signature headers (`X-Gate-*`), forwarded so the upstream may
///   verify again. (`Host` and `Content-Length` the encoder writes itself.)
/// - Everything else: forwarded unless hop-by-hop.
fn client_header(name: &HeaderName) -> Disposition {
    let name = name.as_str();
    if name.as_bytes().contains(&b'_') {
        let aliased = reads_as(
            name.get(..protocol::HEADER_PREFIX.len()),
            protocol::HEADER_PREFIX,
        ) || UNDERSCORE_ALIASED
            .iter()
            .any(|aliased| reads_as(Some(name), aliased.as_str()));
        return if aliased {
            Disposition::Drop
        } else {
            Disposition::Forward
        };
    }
    if name.starts_with(protocol::HEADER_PREFIX) {
        return if name == protocol::VERIFIED_KEY_ID.as_str()
            || name == protocol::VERIFIED_CALLER.as_str()
        {
            Disposition::Drop
        } else {
            Disposition::EndToEnd
        };
    }
    if name == FORWARDED_FOR.as_str() || name == REQUEST_ID.as_str() {
        Disposition::EndToEnd
    } else if name == header::FORWARDED.as_str() || name == REAL_IP.as_str() {
        Disposition::Drop
    } else {
        Disposition::Forward
    }
}

/// Whether `name` is `wanted` (lower-case, with `-`) once each `_` is read as `-`.
fn reads_as(name: Option<&str>, wanted: &str) -> bool {
    name.is_some_and(|name| {
        name.len() == wanted.len()
            && name
                .bytes()
                .zip(wanted.bytes())
                .all(|(got, want)| got == want || (got == b'_' && want == b'-'))
    })
}

/// Why a request body could not be collected.
#[derive(Debug)]
enum BodyError {
    /// More than the limit.
    TooLarge,
    /// No room left in the body budget.
    Budget(Exhausted),
    /// The client broke off or sent a malformed body.
    Unreadable(hyper::Error),
}

/// The whole body, at most `limit` bytes. A body that arrives as one frame (the usual case: it
/// came with the head) is kept as it is, a slice of hyper's read buffer; only a body in several
/// frames is copied into one buffer. Trailers are not part of the signed body and are dropped.
///
/// Once the body has to be waited for, every byte held is reserved in `budget`; the body
/// then owns the [`Reservation`], given back when the last copy of it is dropped.
async fn collect(
    mut body: Incoming,
    limit: usize,
    budget: &ConnectionBudget,
) -> Result<Bytes, BodyError> {
    let mut whole = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut reservation: Option<Reservation> = None;
    loop {
        let mut waited = false;
        let frame = std::future::poll_fn(|cx| {
            let polled = std::pin::Pin::new(&mut body).poll_frame(cx);
            waited |= polled.is_pending();
            polled
        })
        .await;
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(BodyError::Unreadable)?.into_data() else {
            continue;
        };
        let held = joined.as_ref().map_or(whole.len(), BytesMut::len);
        if data.len() > limit - held {
            return Err(BodyError::TooLarge);
        }
        if waited && reservation.is_none() {
            let mut started = budget.reservation();
            started.grow(held).map_err(BodyError::Budget)?;
            reservation = Some(started);
        }
        if let Some(reservation) = &mut reservation {
            reservation.grow(data.len()).map_err(BodyError::Budget)?;
        }
        match &mut joined {
            None if whole.is_empty() => whole = data,
            None => {
                let mut buf = BytesMut::with_capacity(whole.len() + data.len());
                buf.extend_from_slice(&whole);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
            Some(buf) => buf.extend_from_slice(&data),
        }
        // A body of declared length ends with its last byte: stop there rather than wait for
        // hyper to close the body channel, which it does only when next polled itself.
        if body.is_end_stream() {
            break;
        }
    }
    let whole = joined.map_or(whole, BytesMut::freeze);
    Ok(match reservation {
        None => whole,
        Some(reservation) => Bytes::from_owner(Reserved {
            bytes: whole,
            _reservation: reservation,
        }),
    })
}

/// A body and the budget it holds, as one owner for [`Bytes::from_owner`].
struct Reserved {
    bytes: Bytes,
    _reservation: Reservation,
}

impl AsRef<[u8]> for Reserved {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The gate's own answer to a refused request.
fn refusal_response(refusal: Refusal, request_id: &RequestId) -> Response<ResponseBody> {
    let mut response = refusal.response();
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.header_value());
    response
}

/// Append the peer IP to `X-Forwarded-For`, keeping what earlier proxies wrote.
fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue) {
    if !headers.contains_key(FORWARDED_FOR) {
        headers.insert(FORWARDED_FOR, peer.clone());
        return;
    }
    let mut joined = Vec::with_capacity(64);
    for value in headers.get_all(FORWARDED_FOR) {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(peer.as_bytes());
    // Joined from valid header values and ", ": still a valid header value.
    let value = HeaderValue::from_bytes(&joined).expect("joined header values stay valid");
    headers.insert(FORWARDED_FOR, value);
}

/// A header value as text for a log field; non-visible-ASCII values print as `?`.
fn header_text(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or("?")
}

/// Request ids for requests that arrive without one: a random per-process prefix and a
/// counter, so ids are unique across restarts without a random draw per request.
#[derive(Debug)]
struct RequestIds {
    prefix: [u8; 12],
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let mut random = [0u8; 6];
        crate::random::fill(&mut random);
        let mut prefix = [0u8; 12];
        protocol::hex_into(&mut prefix, &random);
        RequestIds {
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    /// `<prefix>-<counter>`, both in lowercase hex.
    fn next(&self) -> [u8; GENERATED_ID_LEN] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; GENERATED_ID_LEN];
        id[..12].copy_from_slice(&self.prefix);
        id[12] = b'-';
        protocol::hex_into(&mut id[13..], &n.to_be_bytes());
        id
    }
}

/// Length of a generated request id: 12 hex digits, `-`, 16 hex digits.
const GENERATED_ID_LEN: usize = 12 + 1 + 16;

/// A request's `X-Request-Id`, for the log, the forwarded request and the gate's refusals.
#[derive(Debug)]
enum RequestId {
    /// The client's own, copied out of hyper's read buffer (see [`Gate::forward`]).
    Sent(HeaderValue),
    /// Made up by the gate: kept as bytes, so the usual request (forwarded, no id of its own)
    /// allocates nothing for it; it becomes a [`HeaderValue`] only in a refusal.
    Generated([u8; GENERATED_ID_LEN]),
}

impl RequestId {
    /// The id to add to the forwarded request: only a generated one (a client's is already
    /// among its headers).
    fn generated(&self) -> Option<&[u8]> {
        match self {
            RequestId::Sent(_) => None,
            RequestId::Generated(id) => Some(id),
        }
    }

    /// The id as text for a log field; a client's id that is not visible ASCII prints as `?`.
    fn text(&self) -> &str {
        match self {
            RequestId::Sent(value) => header_text(value),
            RequestId::Generated(id) => std::str::from_utf8(id).unwrap_or("?"),
        }
    }

    fn header_value(&self) -> HeaderValue {
        match self {
            RequestId::Sent(value) => value.clone(),
            RequestId::Generated(id) => {
                HeaderValue::from_bytes(id).expect("hex and '-' are header-safe")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_a_json_body_naming_it() {
        for reason in Reason::ALL {
            let body: serde_json::Value =
                serde_json::from_str(Refusal::Signature(reason).body()).expect("valid JSON");
            assert_eq!(body["error"], "invalid request signature");
            assert_eq!(body["reason"], reason.as_str());
        }
        for refusal in [
            Refusal::BodyTooLarge,
            Refusal::BodyUnreadable,
            Refusal::BodyTimeout,
            Refusal::ReplayCacheFull,
            Refusal::ReplayStoreUnavailable,
            Refusal::BodyBudgetExhausted,
            Refusal::HeadTooLarge,
            Refusal::UpstreamUnavailable,
            Refusal::UpstreamTimeout,
            Refusal::MalformedRequest,
            Refusal::Connect,
        ] {
            let body: serde_json::Value = serde_json::from_str(refusal.body()).expect("valid JSON");
            assert!(body["error"].is_string());
        }
    }

    /// The parts of a request with `method`, `uri`, `version` and `headers`.
    fn parts(method: &str, uri: &str, version: Version, headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::builder().method(method).uri(uri).version(version);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("valid request").into_parts().0
    }

    #[test]
    fn requests_the_gate_cannot_forward_faithfully_are_refused() {
        let h1 = Version::HTTP_11;
        let h2 = Version::HTTP_2;
        let host = [("host", "tool-gate.internal")];
        let malformed = Err(Refusal::MalformedRequest);
        for (method, uri, version, headers, expected) in [
            ("GET", "/t?q=1", h1, &host[..], Ok(())),
            ("GET", "/t", h1, &[][..], Ok(())),
            ("GET", "http://h.example?a=1", h1, &host[..], Ok(())),
            ("OPTIONS", "*", h1, &host[..], Ok(())),
            ("GET", "http://tool-gate.internal/t", h2, &[][..], Ok(())),
            ("GET", "http://TOOL-gate.internal/t", h2, &host[..], Ok(())),
            ("GET", "http://other.example/t", h2, &host[..], malformed),
            ("GET", "http://other.example/t", h1, &host[..], Ok(())),
            (
                "GET",
                "/t",
                h1,
                &[("host", "a"), ("host", "a")][..],
                malformed,
            ),
            ("GET", "*", h1, &host[..], malformed),
            ("GET", "h.example:80", h1, &host[..], malformed),
            ("GET", "http://user@h.example/t", h1, &host[..], malformed),
            (
                "CONNECT",
                "h.example:443",
                h1,
                &host[..],
                Err(Refusal::Connect),
            ),
            (
                "CONNECT",
                "h.example:443",
                h2,
                &[][..],
                Err(Refusal::Connect),
            ),
        ] {
            let parts = parts(method, uri, version, headers);
            let checked = check_request(&parts).map_err(|(refusal, _)| refusal);
            assert_eq!(checked, expected, "{method} {uri} {version:?} {headers:?}");
        }
    }

    #[test]
    fn client_headers_are_dropped_kept_or_forwarded_by_name() {
        use Disposition::{Drop, EndToEnd, Forward};
        for (name, expected) in [
            ("x-gate-verified-key-id", Drop),
            ("x_gate_verified_key_id", Drop),
            ("x-gate-verified_key-id", Drop),
            ("x-gate-verified-caller", Drop),
            ("x_gate_verified_caller", Drop),
            ("x_gate_signature", Drop),
            ("x_forwarded_for", Drop),
            ("x_request_id", Drop),
            ("x_real_ip", Drop),
            ("x-real-ip", Drop),
            ("forwarded", Drop),
            ("x-gate-signature", EndToEnd),
            ("x-gate-signatures", EndToEnd),
            ("x-gate-nonce", EndToEnd),
            ("x-gate-version", EndToEnd),
            ("x-forwarded-for", EndToEnd),
            ("x-request-id", EndToEnd),
            ("x_custom_header", Forward),
            ("x_gate", Forward),
            ("content-type", Forward),
            ("connection", Forward),
        ] {
            let header = HeaderName::from_bytes(name.as_bytes()).expect("valid name");
            assert_eq!(client_header(&header), expected, "{name}");
        }
    }

    #[test]
    fn forwarded_for_is_appended() {
        let peer = HeaderValue::from_static("10.0.0.9");
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, &peer);
        assert_eq!(headers[FORWARDED_FOR], "10.0.0.9");
        headers.insert(FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        append_forwarded_for(&mut headers, &peer);
        assert_eq!(headers[FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
    }

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::new();
        let a = RequestId::Generated(ids.next());
        let b = RequestId::Generated(ids.next());
        assert_ne!(a.text(), b.text());
        assert_eq!(a.text().len(), 29);
        assert!(a.text().ends_with("-0000000000000000"));
        assert!(b.text().ends_with("-0000000000000001"));
        ids.counter.store(0x0123_4567_89ab_cdef, Ordering::Relaxed);
        let c = RequestId::Generated(ids.next());
        assert_eq!(&c.text()[..13], &a.text()[..13]);
        assert!(c.text().ends_with("-0123456789abcdef"));
        // The same id goes upstream, into the log and onto a refusal.
        assert_eq!(c.generated(), Some(c.text().as_bytes()));
        assert_eq!(c.header_value(), c.text());
        let sent = RequestId::Sent(HeaderValue::from_static("client-id"));
        assert_eq!((sent.generated(), sent.text()), (None, "client-id"));
        assert_eq!(sent.header_value(), "client-id");
    }
}
