//! The answer body to every plain request: a JSON description of what the upstream received,
//! so a user of `sig-gate demo` sees exactly what the gate forwarded, and a test can check it
//! from the client's side.

use bytes::Bytes;
use http::{HeaderValue, header};

use super::record::Arrival;

/// `{"method", "target", "headers", "body", "body_bytes"}`: the target as it arrived (origin
/// form), each header name with its value (the last one of a repeated name), the body as text
/// (invalid UTF-8 replaced) and its length in bytes.
pub(super) fn describe(arrival: &Arrival) -> Bytes {
    let headers: serde_json::Map<String, serde_json::Value> = arrival
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
        "method": arrival.method.as_str(),
        "target": arrival.target,
        "headers": headers,
        "body": String::from_utf8_lossy(&arrival.body),
        "body_bytes": arrival.body.len(),
    });
    Bytes::from(echo.to_string())
}

/// The header lines the echo is sent with besides its length: its type, and the hop-by-hop
/// `Connection: keep-alive` and `Keep-Alive: timeout=5`, which a gate must not pass on.
pub(super) fn headers() -> [(header::HeaderName, HeaderValue); 3] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (header::CONNECTION, HeaderValue::from_static("keep-alive")),
        (
            header::HeaderName::from_static("keep-alive"),
            HeaderValue::from_static("timeout=5"),
        ),
    ]
}
