//! Verification of signature version 1 (contract section 5), as pure functions: request
//! headers, body digest, keyring and `now` in; a [`Verified`] proof or a [`Reason`] out. No
//! clock, no I/O, no tokio, no allocation.
//!
//! Verification has two stages because the contract rejects header-only failures before the
//! body is read: [`check_headers`] (missing, malformed, stale, key id checks) returns a
//! [`Pending`], and [`Pending::verify`] takes the body digest and checks the MACs.

use std::fmt;

use http::{HeaderMap, HeaderName};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::keyring::{Key, Keyring, Slot};
use crate::protocol::{self, DIGEST_LEN, MAX_SIGNATURES, SignedString};

/// Why a request failed verification: the JSON `reason`, the log field and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Neither `X-Gate-Signature` nor `X-Gate-Signatures`.
    MissingSignature,
    /// A signature header present but not of the contract's form.
    MalformedSignature,
    /// Timestamp further than the skew window from now, either way.
    StaleTimestamp,
    /// Strict mode and no candidate carries a key id.
    MissingKeyId,
    /// Strict mode and no candidate names a configured key id.
    UnknownKeyId,
    /// No candidate verifies.
    BadSignature,
    /// The signature verified but its nonce was already accepted within its window.
    ReplayedNonce,
}

impl Reason {
    /// Every reason, in the contract's checking order (also metric registration order).
    pub const ALL: [Reason; 7] = [
        Reason::MissingSignature,
        Reason::MalformedSignature,
        Reason::StaleTimestamp,
        Reason::MissingKeyId,
        Reason::UnknownKeyId,
        Reason::BadSignature,
        Reason::ReplayedNonce,
    ];

    /// The snake_case name used in the response body, the log and the metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::MissingSignature => "missing_signature",
            Reason::MalformedSignature => "malformed_signature",
            Reason::StaleTimestamp => "stale_timestamp",
            Reason::MissingKeyId => "missing_key_id",
            Reason::UnknownKeyId => "unknown_key_id",
            Reason::BadSignature => "bad_signature",
            Reason::ReplayedNonce => "replayed_nonce",
        }
    }

    /// Position in [`Reason::ALL`], for arrays of per-reason handles.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One signature the request offers: the header pair or an `X-Gate-Signatures` entry.
#[derive(Debug, Clone, Copy)]
struct Candidate<'a> {
    /// The key id the signature claims; `None` only for a header pair without `X-Gate-Key-Id`.
    key_id: Option<&'a str>,
    tag: [u8; DIGEST_LEN],
}

/// Most candidates a request can carry: the header pair plus a full `X-Gate-Signatures`.
const MAX_CANDIDATES: usize = MAX_SIGNATURES + 1;

/// The candidates of one request, in a fixed array (no allocation).
#[derive(Debug, Clone, Copy)]
struct Candidates<'a> {
    items: [Candidate<'a>; MAX_CANDIDATES],
    len: usize,
}

impl<'a> Candidates<'a> {
    const EMPTY: Candidate<'static> = Candidate {
        key_id: None,
        tag: [0; DIGEST_LEN],
    };

    fn new() -> Self {
        Candidates {
            items: [Self::EMPTY; MAX_CANDIDATES],
            len: 0,
        }
    }

    fn push(&mut self, candidate: Candidate<'a>) {
        // Callers push at most one pair plus MAX_SIGNATURES entries (checked by the parser).
        self.items[self.len] = candidate;
        self.len += 1;
    }

    fn as_slice(&self) -> &[Candidate<'a>] {
        &self.items[..self.len]
    }
}

/// The parsed signature headers of one request.
#[derive(Debug, Clone, Copy)]
struct Claim<'a> {
    timestamp_text: &'a str,
    timestamp: u64,
    nonce: &'a str,
    candidates: Candidates<'a>,
}

/// A request whose headers passed every check; the MACs are checked once the body is read.
#[derive(Debug)]
pub struct Pending<'a> {
    claim: Claim<'a>,
    keyring: &'a Keyring,
}

/// Proof that a request's signature verified. Only [`Pending::verify`] can build one, and the
/// replay cache takes it to admit the request, so an unverified request cannot be forwarded
/// as a verified one.
#[derive(Debug)]
pub struct Verified<'a> {
    key: &'a Key,
    nonce: &'a str,
    timestamp: u64,
}

impl<'a> Verified<'a> {
    /// The configured key whose secret verified.
    pub fn key(&self) -> &'a Key {
        self.key
    }

    /// Current or previous secret.
    pub fn slot(&self) -> Slot {
        self.key.slot()
    }

    /// The request's nonce, for the replay cache.
    pub fn nonce(&self) -> &'a str {
        self.nonce
    }

    /// The request's timestamp (Unix seconds), for the replay cache's expiry.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
}

/// The request line as the signed string sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    /// Method as sent.
    pub method: &'a str,
    /// Raw path, no query.
    pub path: &'a str,
    /// Raw query without `?`, empty if none.
    pub query: &'a str,
}

/// Header-only checks, in the contract's order: missing, malformed, stale, missing key id,
/// unknown key id. `now` is Unix seconds; `skew_window` the accepted distance in seconds.
pub fn check_headers<'a>(
    headers: &'a HeaderMap,
    keyring: &'a Keyring,
    skew_window: u64,
    now: u64,
) -> Result<Pending<'a>, Reason> {
    let claim = parse(headers)?;
    if claim.timestamp.abs_diff(now) > skew_window {
        return Err(Reason::StaleTimestamp);
    }
    if keyring.strict_key_id() {
        let mut named = claim.candidates.as_slice().iter().filter_map(|c| c.key_id);
        if named.clone().next().is_none() {
            return Err(Reason::MissingKeyId);
        }
        if !named.any(|id| keyring.keys().any(|key| key.id() == id)) {
            return Err(Reason::UnknownKeyId);
        }
    }
    Ok(Pending { claim, keyring })
}

impl<'a> Pending<'a> {
    /// Check every candidate's MAC; the current secret wins when several verify.
    pub fn verify(
        self,
        request: RequestLine<'_>,
        body_digest: &[u8; DIGEST_LEN],
    ) -> Result<Verified<'a>, Reason> {
        let signed = SignedString {
            timestamp: self.claim.timestamp_text,
            nonce: self.claim.nonce,
            method: request.method,
            path: request.path,
            query: request.query,
            body_digest,
        };
        let strict = self.keyring.strict_key_id();
        for key in self.keyring.keys() {
            for candidate in self.claim.candidates.as_slice() {
                if strict && candidate.key_id != Some(key.id()) {
                    continue;
                }
                if key.verifies(&signed, candidate.key_id.unwrap_or(""), &candidate.tag) {
                    return Ok(Verified {
                        key,
                        nonce: self.claim.nonce,
                        timestamp: self.claim.timestamp,
                    });
                }
            }
        }
        Err(Reason::BadSignature)
    }
}

/// Absolute distance in seconds between a well-formed `X-Gate-Timestamp` and `now`, for the
/// clock-skew histogram (stale timestamps included).
pub fn clock_skew(headers: &HeaderMap, now: u64) -> Option<u64> {
    let mut values = headers.get_all(protocol::TIMESTAMP).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let timestamp = protocol::parse_timestamp(value.to_str().ok()?)?;
    Some(timestamp.abs_diff(now))
}

/// The key ids a request claims, for the rejection log: `X-Gate-Key-Id` and every
/// `X-Gate-Signatures` entry, comma-separated. Ill-formed ids print as `?`, so a client cannot
/// write arbitrary text into the log. Formatting re-parses; it runs on rejections only.
pub struct ClaimedKeyIds<'a>(pub &'a HeaderMap);

impl fmt::Display for ClaimedKeyIds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut show = |f: &mut fmt::Formatter<'_>, id: &str| {
            let sep = if first { "" } else { "," };
            first = false;
            let id = if protocol::is_key_id(id) { id } else { "?" };
            write!(f, "{sep}{id}")
        };
        for value in self.0.get_all(protocol::KEY_ID) {
            show(f, value.to_str().unwrap_or("?"))?;
        }
        let signatures = self.0.get(protocol::SIGNATURES).map(|v| v.to_str());
        if let Some(Ok(json)) = signatures
            && let Ok(entries) = serde_json::from_str::<Entries<'_>>(json)
        {
            for entry in entries.as_slice() {
                show(f, entry.key_id)?;
            }
        }
        Ok(())
    }
}

/// Parse and syntax-check the signature headers (reasons `missing_signature` and
/// `malformed_signature`).
fn parse(headers: &HeaderMap) -> Result<Claim<'_>, Reason> {
    if !headers.contains_key(protocol::SIGNATURE) && !headers.contains_key(protocol::SIGNATURES) {
        return Err(Reason::MissingSignature);
    }
    let repeated = headers.keys().any(|name| {
        name.as_str().starts_with(protocol::HEADER_PREFIX)
            && headers.get_all(name).iter().nth(1).is_some()
    });
    if repeated {
        return Err(Reason::MalformedSignature);
    }
    let malformed = |_| Reason::MalformedSignature;
    let timestamp_text = single(headers, protocol::TIMESTAMP)?.ok_or(Reason::MalformedSignature)?;
    let timestamp = protocol::parse_timestamp(timestamp_text).ok_or(Reason::MalformedSignature)?;
    let nonce = single(headers, protocol::NONCE)?
        .filter(|n| protocol::is_nonce(n))
        .ok_or(Reason::MalformedSignature)?;
    let key_id = single(headers, protocol::KEY_ID)?;
    if key_id.is_some_and(|id| !protocol::is_key_id(id)) {
        return Err(Reason::MalformedSignature);
    }

    let mut candidates = Candidates::new();
    if let Some(signature) = single(headers, protocol::SIGNATURE)? {
        let tag = protocol::decode_hex32(signature).ok_or(Reason::MalformedSignature)?;
        candidates.push(Candidate { key_id, tag });
    }
    if let Some(json) = single(headers, protocol::SIGNATURES)? {
        let entries: Entries<'_> = serde_json::from_str(json).map_err(malformed)?;
        for entry in entries.as_slice() {
            if !protocol::is_key_id(entry.key_id) {
                return Err(Reason::MalformedSignature);
            }
            let tag = protocol::decode_hex32(entry.signature).ok_or(Reason::MalformedSignature)?;
            candidates.push(Candidate {
                key_id: Some(entry.key_id),
                tag,
            });
        }
    }
    Ok(Claim {
        timestamp_text,
        timestamp,
        nonce,
        candidates,
    })
}

/// The one value of a header that must not repeat (repeats were refused already), as text.
fn single(headers: &HeaderMap, name: HeaderName) -> Result<Option<&str>, Reason> {
    headers
        .get(name)
        .map(|value| value.to_str().map_err(|_| Reason::MalformedSignature))
        .transpose()
}

/// One `X-Gate-Signatures` entry: exactly the string fields `key_id` and `signature`.
///
/// Fields borrow from the header text, so a JSON string with escapes is refused; no valid key
/// id or lowercase hex signature needs one.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry<'a> {
    #[serde(borrow)]
    key_id: &'a str,
    #[serde(borrow)]
    signature: &'a str,
}

/// 1 to [`MAX_SIGNATURES`] entries, in a fixed array.
#[derive(Debug)]
struct Entries<'a> {
    items: [Option<Entry<'a>>; MAX_SIGNATURES],
    len: usize,
}

impl<'a> Entries<'a> {
    fn as_slice(&self) -> impl Iterator<Item = &Entry<'a>> {
        self.items[..self.len].iter().flatten()
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of 1 to {MAX_SIGNATURES} signature objects")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut entries = Entries {
                    items: [None; MAX_SIGNATURES],
                    len: 0,
                };
                while let Some(entry) = seq.next_element::<Entry<'de>>()? {
                    if entries.len == MAX_SIGNATURES {
                        return Err(de::Error::invalid_length(MAX_SIGNATURES + 1, &self));
                    }
                    entries.items[entries.len] = Some(entry);
                    entries.len += 1;
                }
                if entries.len == 0 {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(entries)
            }
        }

        deserializer.deserialize_seq(EntriesVisitor)
    }
}
