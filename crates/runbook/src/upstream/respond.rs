//! The answers of a cleanly framed upstream (hyper's HTTP/1.1 and HTTP/2 server), by route.
//! Every request is read whole and recorded before it is answered, so a caller that sees it
//! recorded knows it is in the upstream (held, sleeping or streaming).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;

use super::events::{self, EventStream};
use super::record::Arrival;
use super::{Routes, Shared, echo};

/// Longest sleep `/slow` honours, so a stray request cannot hold a task for long.
pub const MAX_SLOW: Duration = Duration::from_secs(30);
/// Sleep of `/slow` without `ms=N`.
pub const DEFAULT_SLOW: Duration = Duration::from_secs(5);

/// An answer's body: the echo, or an event stream.
pub(super) type Body = Either<Full<Bytes>, EventStream>;

/// What the upstream does with a request, decided by its path (and for `/slow`, its query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Answer with the echo at once.
    Echo,
    /// `/hold`, `/hold/...`: the echo once released.
    Hold,
    /// `/slow`, `/slow/...`: the echo after a sleep.
    Slow(Duration),
    /// `/events`: the timed stream.
    Events,
    /// `/events/held`: the stream whose second event waits for a release.
    EventsHeld,
}

impl Route {
    fn of(routes: Routes, uri: &Uri) -> Route {
        let path = uri.path();
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        match routes {
            _ if path == "/events" => Route::Events,
            Routes::Echo => Route::Echo,
            Routes::Harness if path == "/events/held" => Route::EventsHeld,
            Routes::Harness if under("/hold") => Route::Hold,
            Routes::Harness if under("/slow") => Route::Slow(slow_for(uri.query())),
            Routes::Harness => Route::Echo,
        }
    }
}

/// `ms=N` from the query, at most [`MAX_SLOW`]; [`DEFAULT_SLOW`] without it.
fn slow_for(query: Option<&str>) -> Duration {
    query
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("ms=")))
        .and_then(|ms| ms.parse().ok())
        .map_or(DEFAULT_SLOW, Duration::from_millis)
        .min(MAX_SLOW)
}

/// Record `request`, then answer it as its route says.
pub(super) async fn respond(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    connection: u64,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    // Read the whole body, as a real service would, before answering.
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let route = Route::of(shared.routes, &parts.uri);
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let arrival = Arrival {
        connection,
        method: parts.method,
        target,
        headers: parts.headers,
        body,
    };
    let echo = echo::describe(&arrival);
    shared.log().note(arrival);
    match route {
        Route::Echo => {}
        Route::Hold => shared.release.notified().await,
        Route::Slow(pause) => tokio::time::sleep(pause).await,
        Route::Events => return Ok(stream(events::timed())),
        Route::EventsHeld => return Ok(stream(events::held(Arc::clone(&shared.release)))),
    }
    let mut response = Response::new(Either::Left(Full::new(echo)));
    response.headers_mut().extend(echo::headers());
    Ok(response)
}

fn stream(events: EventStream) -> Response<Body> {
    let mut response = Response::new(Either::Right(events));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path_and_by_upstream_kind() {
        let route = |routes, target: &'static str| Route::of(routes, &Uri::from_static(target));
        assert_eq!(route(Routes::Harness, "/events"), Route::Events);
        assert_eq!(route(Routes::Echo, "/events"), Route::Events);
        assert_eq!(route(Routes::Harness, "/events/held"), Route::EventsHeld);
        assert_eq!(route(Routes::Echo, "/events/held"), Route::Echo);
        assert_eq!(route(Routes::Harness, "/hold"), Route::Hold);
        assert_eq!(route(Routes::Harness, "/hold/a?x=1"), Route::Hold);
        assert_eq!(route(Routes::Harness, "/holder"), Route::Echo);
        assert_eq!(route(Routes::Echo, "/hold"), Route::Echo);
        assert_eq!(route(Routes::Harness, "/slow"), Route::Slow(DEFAULT_SLOW));
        assert_eq!(
            route(Routes::Harness, "/slow/lane1?ms=20&n=3"),
            Route::Slow(Duration::from_millis(20))
        );
        assert_eq!(
            route(Routes::Harness, "/slow?n=1&ms=999999"),
            Route::Slow(MAX_SLOW)
        );
        assert_eq!(
            route(Routes::Harness, "/slow?ms=soon"),
            Route::Slow(DEFAULT_SLOW)
        );
        assert_eq!(route(Routes::Echo, "/slow?ms=20"), Route::Echo);
        assert_eq!(route(Routes::Harness, "/tools/echo"), Route::Echo);
    }
}
