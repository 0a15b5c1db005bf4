//! The signer: the headers a calling service sends (docs/protocol.md). It shares
//! [`SignedString`] and [`Key`] with the verifier, so what one signs the other accepts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::keyring::Key;
use crate::protocol::{self, SignedString};

/// Header names as a signer prints them, in the order it prints them.
pub mod names {
    /// `X-Gate-Key-Id`.
    pub const KEY_ID: &str = "X-Gate-Key-Id";
    /// `X-Gate-Timestamp`.
    pub const TIMESTAMP: &str = "X-Gate-Timestamp";
    /// `X-Gate-Nonce`.
    pub const NONCE: &str = "X-Gate-Nonce";
    /// `X-Gate-Signature`.
    pub const SIGNATURE: &str = "X-Gate-Signature";
    /// `X-Gate-Signatures`.
    pub const SIGNATURES: &str = "X-Gate-Signatures";
}

/// Signs requests with the current key and, when dual-signing, the previous one too.
#[derive(Debug, Clone)]
pub struct Signer {
    current: Key,
    /// Present only when dual-signing: the configuration refuses dual-sign without a previous
    /// secret, so this is the single source of truth for "send `X-Gate-Signatures`".
    dual_with: Option<Key>,
}

/// One request to sign: target is path plus optional `?query`, exactly as it will be sent.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method as sent.
    pub method: &'a str,
    /// Request target as sent (raw path, optional `?query`).
    pub target: &'a str,
    /// Body bytes as sent.
    pub body: &'a [u8],
    /// Unix seconds.
    pub timestamp: u64,
    /// Unique per request; see [`new_nonce`].
    pub nonce: &'a str,
}

/// The headers to send, in order, as `(name, value)`.
pub type Headers = Vec<(&'static str, String)>;

impl Signer {
    /// A signer with the current key; `dual_with` is the previous key when dual-signing.
    pub fn new(current: Key, dual_with: Option<Key>) -> Self {
        Signer { current, dual_with }
    }

    /// The signature headers for `request`.
    pub fn sign(&self, request: &Request<'_>) -> Headers {
        let digest = protocol::body_digest(request.body);
        let timestamp = request.timestamp.to_string();
        let (path, query) = SignedString::split_target(request.target);
        let signed = SignedString {
            timestamp: &timestamp,
            nonce: request.nonce,
            method: request.method,
            path,
            query,
            body_digest: &digest,
        };
        let tag = |key: &Key| protocol::hex32_string(&key.mac(&signed, key.id()));
        let current_tag = tag(&self.current);
        let mut headers = vec![
            (names::KEY_ID, self.current.id().to_owned()),
            (names::TIMESTAMP, timestamp.clone()),
            (names::NONCE, request.nonce.to_owned()),
            (names::SIGNATURE, current_tag.clone()),
        ];
        if let Some(previous) = &self.dual_with {
            // Canonical compact JSON, current first: key ids and hex never need escaping.
            let json = format!(
                r#"[{{"key_id":"{}","signature":"{}"}},{{"key_id":"{}","signature":"{}"}}]"#,
                self.current.id(),
                current_tag,
                previous.id(),
                tag(previous),
            );
            headers.push((names::SIGNATURES, json));
        }
        headers
    }
}

/// The headers as an [`http::HeaderMap`], for clients built on `http` types.
pub fn header_map(headers: &Headers) -> http::HeaderMap {
    headers
        .iter()
        .map(|(name, value)| {
            (
                header_name(name),
                // Key ids, digits, nonces, hex and the canonical JSON are all visible ASCII.
                http::HeaderValue::from_str(value).expect("signature headers are header-safe"),
            )
        })
        .collect()
}

/// The `http` header name of one of the [`names`].
fn header_name(name: &str) -> http::HeaderName {
    match name {
        names::KEY_ID => protocol::KEY_ID,
        names::TIMESTAMP => protocol::TIMESTAMP,
        names::NONCE => protocol::NONCE,
        names::SIGNATURE => protocol::SIGNATURE,
        names::SIGNATURES => protocol::SIGNATURES,
        other => unreachable!("the signer only emits its own header names, not {other}"),
    }
}

/// A fresh nonce: 16 random bytes as URL-safe base64 (22 chars).
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    crate::random::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::{Secret, Slot};

    fn key(slot: Slot, id: &str, secret: &str) -> Key {
        Key::new(slot, id.into(), &Secret::new(secret))
    }

    #[test]
    fn nonces_are_well_formed_and_distinct() {
        let a = new_nonce();
        let b = new_nonce();
        assert_eq!(a.len(), 22);
        assert!(protocol::is_nonce(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn dual_sign_adds_canonical_signatures_header() {
        let signer = Signer::new(
            key(Slot::Current, "k2", "new-secret-0123456789abcdefghijklmnop"),
            Some(key(
                Slot::Previous,
                "k1",
                "old-secret-0123456789abcdefghijklmnop",
            )),
        );
        let request = Request {
            method: "POST",
            target: "/t?x=1",
            body: b"{}",
            timestamp: 1_764_000_000,
            nonce: "nonce-0123456789ab",
        };
        let headers = signer.sign(&request);
        let names: Vec<_> = headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                names::KEY_ID,
                names::TIMESTAMP,
                names::NONCE,
                names::SIGNATURE,
                names::SIGNATURES
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&headers[4].1).expect("valid JSON");
        assert_eq!(json[0]["key_id"], "k2");
        assert_eq!(json[0]["signature"], headers[3].1.as_str());
        assert_eq!(json[1]["key_id"], "k1");
        assert_ne!(json[1]["signature"], headers[3].1.as_str());
        assert!(!headers[4].1.contains(' '));
    }
}
