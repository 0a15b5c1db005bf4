//! Verification of signature versions 1 and 2 (docs/protocol.md), as pure functions: request
//! headers, body digest, keyring and `now` in; a [`Verified`] proof or a [`Reason`] out. No
//! clock, no I/O, no tokio, no allocation (an Ed25519 check of a signed string longer than
//! 1 KiB aside).
//!
//! Verification has two stages because header-only failures are rejected before the
//! body is read: [`check_headers`] (missing, malformed, stale, key id checks) returns a
//! [`Pending`], and [`Pending::verify`] takes the body digest and checks the signatures.
//! [`Pending::observations`] checks, on the same inputs, the signatures that name observe keys,
//! which are counted but never admit a request.
//!
//! Version 1 (no `X-Gate-Version`) verifies with the environment's secrets only, as it always
//! has. Version 2 (`X-Gate-Version: 2`) names its key in every candidate and is checked with
//! that key's algorithm, over a signed string that holds the algorithm, the key id and the
//! gate's audience.

use std::fmt;

use http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::keyring::{Key, KeyIndex, Keyring, Slot};
use crate::protocol::{self, DIGEST_LEN, ED25519_SIGNATURE_LEN, MAX_SIGNATURES, SignedString};

pub mod malformed;

/// Why a request failed verification: the JSON `reason`, the log field and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Neither `X-Gate-Signature` nor `X-Gate-Signatures`.
    MissingSignature,
    /// A signature header present but not of its documented form (docs/protocol.md section 2).
    MalformedSignature,
    /// Timestamp further than the skew window from now, either way.
    StaleTimestamp,
    /// Version 1 in strict mode and no candidate carries a key id; version 2 and a candidate
    /// without one.
    MissingKeyId,
    /// Version 1 in strict mode and no candidate names a configured key id; version 2 and no
    /// candidate names a configured key, or the gate has no audience.
    UnknownKeyId,
    /// No candidate verifies with a key that grants access.
    BadSignature,
    /// The signature verified but its nonce was already accepted within its window.
    ReplayedNonce,
}

impl Reason {
    /// Every reason, in the documented checking order (also metric registration order).
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

/// The signature version a request claims with `X-Gate-Version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// No `X-Gate-Version`: the eight-line signed string, environment secrets only.
    V1,
    /// `X-Gate-Version: 2`: the ten-line signed string bound to the key's algorithm and the
    /// gate's audience.
    V2,
}

/// A signature's bytes as sent: 32 (HMAC-SHA256) or, in version 2, 64 (Ed25519).
#[derive(Clone, Copy)]
struct Tag {
    bytes: [u8; ED25519_SIGNATURE_LEN],
    len: u8,
}

impl Tag {
    const EMPTY: Tag = Tag {
        bytes: [0; ED25519_SIGNATURE_LEN],
        len: 0,
    };

    /// Decode lowercase hex of 64 digits, or in version 2 also of 128.
    fn decode(text: &[u8], version: Version) -> Option<Tag> {
        let len = match (text.len(), version) {
            (64, _) => DIGEST_LEN,
            (128, Version::V2) => ED25519_SIGNATURE_LEN,
            _ => return None,
        };
        let mut tag = Tag::EMPTY;
        protocol::decode_hex_into(text, &mut tag.bytes[..len]).then_some(())?;
        tag.len = len as u8;
        Some(tag)
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The 32 bytes of a version 1 tag; `None` for a 64-byte one.
    fn digest(&self) -> Option<&[u8; DIGEST_LEN]> {
        self.as_slice().try_into().ok()
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A signature is not a secret, but logs never need one: show its length only.
        write!(f, "Tag({} bytes)", self.len)
    }
}

/// One signature the request offers: the header pair or an `X-Gate-Signatures` entry.
#[derive(Debug, Clone, Copy)]
struct Candidate<'a> {
    /// The key id the signature claims; `None` only for a header pair without `X-Gate-Key-Id`.
    key_id: Option<&'a str>,
    tag: Tag,
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
        tag: Tag::EMPTY,
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
    version: Version,
    timestamp_text: &'a str,
    timestamp: u64,
    nonce: &'a str,
    candidates: Candidates<'a>,
}

/// A request whose headers passed every check; the signatures are checked once the body is
/// read.
#[derive(Debug)]
pub struct Pending<'a> {
    claim: Claim<'a>,
    keyring: &'a Keyring,
    /// Some candidate names an observe key (version 2 only).
    observed: bool,
}

/// Proof that a request's signature verified. Only [`Pending::verify`] can build one, and the
/// replay cache takes it to admit the request, so an unverified request cannot be forwarded
/// as a verified one.
#[derive(Debug)]
pub struct Verified<'a> {
    key: &'a Key,
    index: KeyIndex,
    nonce: &'a str,
    timestamp: u64,
}

impl<'a> Verified<'a> {
    /// The configured key that verified (the first candidate's, in order, that grants access).
    pub fn key(&self) -> &'a Key {
        self.key
    }

    /// Where that key sits in the keyring that verified the request.
    pub fn key_index(&self) -> KeyIndex {
        self.index
    }

    /// Current or previous environment secret; `None` for a registry key.
    pub fn slot(&self) -> Option<Slot> {
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

/// Header-only checks, in the documented order: missing, malformed, stale, missing key id,
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
    let candidates = claim.candidates.as_slice();
    let mut observed = false;
    match claim.version {
        Version::V1 if keyring.strict_key_id() => {
            let mut named = candidates.iter().filter_map(|c| c.key_id);
            if named.clone().next().is_none() {
                return Err(Reason::MissingKeyId);
            }
            let env = keyring.env_keys();
            if !named.any(|id| env.iter().any(|key| key.id() == id)) {
                return Err(Reason::UnknownKeyId);
            }
        }
        Version::V1 => {}
        Version::V2 => {
            if candidates.iter().any(|c| c.key_id.is_none()) {
                return Err(Reason::MissingKeyId);
            }
            if keyring.audience().is_none() {
                return Err(Reason::UnknownKeyId);
            }
            let mut known = false;
            for key in candidates.iter().filter_map(|c| keyring.find(c.key_id?)) {
                known = true;
                observed |= key.1.observe();
            }
            if !known {
                return Err(Reason::UnknownKeyId);
            }
        }
    }
    Ok(Pending {
        claim,
        keyring,
        observed,
    })
}

/// What [`Pending::observations`] found: for each candidate naming an observe key, that key
/// and whether its signature verified. A fixed array, like the candidates.
#[derive(Debug, Clone, Copy)]
pub struct Observations {
    items: [(Option<KeyIndex>, bool); MAX_CANDIDATES],
    len: usize,
}

impl Observations {
    const NONE: Observations = Observations {
        items: [(None, false); MAX_CANDIDATES],
        len: 0,
    };

    /// Each observed key and whether its signature verified, in candidate order.
    pub fn iter(&self) -> impl Iterator<Item = (KeyIndex, bool)> + '_ {
        self.items[..self.len]
            .iter()
            .filter_map(|(index, valid)| Some(((*index)?, *valid)))
    }

    /// True when no candidate named an observe key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a> Pending<'a> {
    /// The request's nonce, well-formed but not yet verified: for
    /// [`crate::replay::NonceCache::prefetch`], which records nothing.
    pub fn nonce(&self) -> &'a str {
        self.claim.nonce
    }

    /// The signature version the request claims.
    pub fn version(&self) -> Version {
        self.claim.version
    }

    /// The request's signed string, without the lines that depend on the key.
    fn signed<'s>(
        &'s self,
        request: RequestLine<'s>,
        body_digest: &'s [u8; DIGEST_LEN],
    ) -> SignedString<'s> {
        SignedString {
            timestamp: self.claim.timestamp_text,
            nonce: self.claim.nonce,
            method: request.method,
            path: request.path,
            query: request.query,
            body_digest,
        }
    }

    /// Check every candidate that names an observe key, for
    /// `sig_gate_identity_observed_total`. Pure, like [`Pending::verify`]; the answer to the
    /// request does not depend on it.
    pub fn observations(
        &self,
        request: RequestLine<'_>,
        body_digest: &[u8; DIGEST_LEN],
    ) -> Observations {
        let mut found = Observations::NONE;
        let Some(audience) = self.keyring.audience().filter(|_| self.observed) else {
            return found;
        };
        let signed = self.signed(request, body_digest);
        for candidate in self.claim.candidates.as_slice() {
            let Some((index, key)) = candidate.key_id.and_then(|id| self.keyring.find(id)) else {
                continue;
            };
            if key.observe() {
                let valid = key.verifies_v2(&signed, audience, candidate.tag.as_slice());
                found.items[found.len] = (Some(index), valid);
                found.len += 1;
            }
        }
        found
    }

    /// Check the candidates' signatures. Version 1: with the environment's secrets, the
    /// current secret winning when several verify. Version 2: each candidate with the key it
    /// names, in order (header pair, then list order), observe keys skipped; the first that
    /// verifies names the caller.
    pub fn verify(
        self,
        request: RequestLine<'_>,
        body_digest: &[u8; DIGEST_LEN],
    ) -> Result<Verified<'a>, Reason> {
        let signed = self.signed(request, body_digest);
        let keyring = self.keyring;
        let verified = |index: KeyIndex, key: &'a Key| Verified {
            key,
            index,
            nonce: self.claim.nonce,
            timestamp: self.claim.timestamp,
        };
        match self.claim.version {
            Version::V1 => {
                let strict = keyring.strict_key_id();
                for (index, key) in keyring.env_keys().iter().enumerate() {
                    for candidate in self.claim.candidates.as_slice() {
                        if strict && candidate.key_id != Some(key.id()) {
                            continue;
                        }
                        let Some(tag) = candidate.tag.digest() else {
                            continue;
                        };
                        if key.verifies(&signed, candidate.key_id.unwrap_or(""), tag) {
                            return Ok(verified(keyring.index_of(index, key), key));
                        }
                    }
                }
            }
            Version::V2 => {
                // check_headers let no version 2 request through without an audience.
                let audience = keyring.audience().ok_or(Reason::UnknownKeyId)?;
                for candidate in self.claim.candidates.as_slice() {
                    let Some((index, key)) = candidate.key_id.and_then(|id| keyring.find(id))
                    else {
                        continue;
                    };
                    if !key.observe()
                        && key.verifies_v2(&signed, audience, candidate.tag.as_slice())
                    {
                        return Ok(verified(index, key));
                    }
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
    let timestamp = protocol::parse_timestamp(value)?;
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

/// The `X-Gate-*` headers of a request, found in one pass over the header map.
#[derive(Default)]
struct GateHeaders<'a> {
    key_id: Option<&'a HeaderValue>,
    timestamp: Option<&'a HeaderValue>,
    nonce: Option<&'a HeaderValue>,
    signature: Option<&'a HeaderValue>,
    signatures: Option<&'a HeaderValue>,
    version: Option<&'a HeaderValue>,
    /// Some `X-Gate-*` header appears more than once.
    repeated: bool,
}

impl<'a> GateHeaders<'a> {
    /// One walk over every header value: no hash lookups, so the cost is the same whether or
    /// not the request is signed.
    fn find(headers: &'a HeaderMap) -> Self {
        let mut found = GateHeaders::default();
        for (name, value) in headers {
            let Some(suffix) = name.as_str().strip_prefix(protocol::HEADER_PREFIX) else {
                continue;
            };
            let slot = match suffix {
                "key-id" => &mut found.key_id,
                "timestamp" => &mut found.timestamp,
                "nonce" => &mut found.nonce,
                "signature" => &mut found.signature,
                "signatures" => &mut found.signatures,
                "version" => &mut found.version,
                _ => {
                    // Any other X-Gate-* name must not repeat either (rare: one lookup).
                    found.repeated |= headers.get_all(name).iter().nth(1).is_some();
                    continue;
                }
            };
            found.repeated |= slot.replace(value).is_some();
        }
        found
    }
}

/// Parse and syntax-check the signature headers (reasons `missing_signature` and
/// `malformed_signature`).
fn parse(headers: &HeaderMap) -> Result<Claim<'_>, Reason> {
    let found = GateHeaders::find(headers);
    if found.signature.is_none() && found.signatures.is_none() {
        return Err(Reason::MissingSignature);
    }
    if found.repeated {
        return Err(Reason::MalformedSignature);
    }
    let version = match found.version.map(HeaderValue::as_bytes) {
        None => Version::V1,
        Some(value) if value == protocol::VERSION_2.as_bytes() => Version::V2,
        Some(_) => return Err(Reason::MalformedSignature),
    };
    // Each value is checked against its own syntax, all of it ASCII, as bytes: one pass over
    // each, where `HeaderValue::to_str` would add another.
    let timestamp_value = found
        .timestamp
        .ok_or(Reason::MalformedSignature)?
        .as_bytes();
    let timestamp = protocol::parse_timestamp(timestamp_value).ok_or(Reason::MalformedSignature)?;
    let nonce = found
        .nonce
        .map(HeaderValue::as_bytes)
        .filter(|n| protocol::is_nonce(n))
        .ok_or(Reason::MalformedSignature)?;
    let mut candidates = Candidates::new();
    // X-Gate-Key-Id belongs to X-Gate-Signature; without one it is ignored (docs/protocol.md section 6).
    if let Some(signature) = found.signature {
        let key_id = match found.key_id.map(HeaderValue::as_bytes) {
            Some(id) if protocol::is_key_id(id) => Some(ascii(id)?),
            Some(_) => return Err(Reason::MalformedSignature),
            None => None,
        };
        let tag = Tag::decode(signature.as_bytes(), version).ok_or(Reason::MalformedSignature)?;
        candidates.push(Candidate { key_id, tag });
    }
    if let Some(json) = text(found.signatures)? {
        let entries: Entries<'_> =
            serde_json::from_str(json).map_err(|_| Reason::MalformedSignature)?;
        for entry in entries.as_slice() {
            if !protocol::is_key_id(entry.key_id) {
                return Err(Reason::MalformedSignature);
            }
            let tag = Tag::decode(entry.signature.as_bytes(), version)
                .ok_or(Reason::MalformedSignature)?;
            candidates.push(Candidate {
                key_id: Some(entry.key_id),
                tag,
            });
        }
    }
    Ok(Claim {
        version,
        timestamp_text: ascii(timestamp_value)?,
        timestamp,
        nonce: ascii(nonce)?,
        candidates,
    })
}

/// Bytes already checked against one of the protocol's ASCII syntaxes, as text (so this
/// cannot fail; were it to, the value is malformed).
fn ascii(bytes: &[u8]) -> Result<&str, Reason> {
    std::str::from_utf8(bytes).map_err(|_| Reason::MalformedSignature)
}

/// A header value as text; non-visible-ASCII is malformed.
fn text(value: Option<&HeaderValue>) -> Result<Option<&str>, Reason> {
    value
        .map(|v| v.to_str().map_err(|_| Reason::MalformedSignature))
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

#[cfg(test)]
mod v2_tests;

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::*;
    use crate::keyring::{Key, Secret};
    use crate::sign::{Request, Signer};

    const NOW: u64 = 1_764_000_000;
    const SKEW: u64 = 300;
    const OLD: &str = "old-secret-0123456789-abcdefghijklmnopq";
    const NEW: &str = "new-secret-0123456789-abcdefghijklmnopq";
    const NONCE: &str = "nonce-0123456789abcdef";

    fn key(slot: Slot, id: &str, secret: &str) -> Key {
        Key::new(slot, id.into(), &Secret::new(secret))
    }

    fn single(strict: bool) -> Keyring {
        Keyring::new(key(Slot::Current, "k-new", NEW), None, strict)
    }

    fn dual(strict: bool) -> Keyring {
        Keyring::new(
            key(Slot::Current, "k-new", NEW),
            Some(key(Slot::Previous, "k-old", OLD)),
            strict,
        )
    }

    /// Headers as `signer` would send them for `POST /t?q=1` with body `{}` at `timestamp`.
    fn signed(signer: &Signer, timestamp: u64) -> HeaderMap {
        let request = Request {
            method: "POST",
            target: "/t?q=1",
            body: b"{}",
            timestamp,
            nonce: NONCE,
        };
        crate::sign::header_map(&signer.sign(&request))
    }

    fn signer(id: &str, secret: &str) -> Signer {
        Signer::new(key(Slot::Current, id, secret), None)
    }

    const LINE: RequestLine<'static> = RequestLine {
        method: "POST",
        path: "/t",
        query: "q=1",
    };

    /// Run both stages against the canonical request line and body.
    fn outcome(headers: &HeaderMap, keyring: &Keyring) -> Result<Slot, Reason> {
        check_headers(headers, keyring, SKEW, NOW)?
            .verify(LINE, &protocol::body_digest(b"{}"))
            .map(|v| v.slot().expect("test keyrings hold environment keys only"))
    }

    fn with(mut headers: HeaderMap, name: HeaderName, value: &str) -> HeaderMap {
        headers.insert(name, HeaderValue::from_str(value).expect("test value"));
        headers
    }

    fn without(mut headers: HeaderMap, name: HeaderName) -> HeaderMap {
        headers.remove(name);
        headers
    }

    /// Every reason but `missing_signature` and `malformed_signature`, whose cases are the
    /// shared table's (`header_syntax_cases_of_the_shared_table`).
    #[test]
    fn every_reason_in_a_table() {
        let new = signed(&signer("k-new", NEW), NOW);
        let old = signed(&signer("k-old", OLD), NOW);
        let zero_sig = "0".repeat(64);
        let cases: Vec<(&str, HeaderMap, Keyring, Result<Slot, Reason>)> = vec![
            (
                "valid single",
                new.clone(),
                single(false),
                Ok(Slot::Current),
            ),
            (
                "old under dual",
                old.clone(),
                dual(false),
                Ok(Slot::Previous),
            ),
            (
                "new under dual",
                new.clone(),
                dual(false),
                Ok(Slot::Current),
            ),
            (
                "stale past",
                signed(&signer("k-new", NEW), NOW - SKEW - 1),
                single(false),
                Err(Reason::StaleTimestamp),
            ),
            (
                "stale future",
                signed(&signer("k-new", NEW), NOW + SKEW + 1),
                single(false),
                Err(Reason::StaleTimestamp),
            ),
            (
                "edge past",
                signed(&signer("k-new", NEW), NOW - SKEW),
                single(false),
                Ok(Slot::Current),
            ),
            (
                "edge future",
                signed(&signer("k-new", NEW), NOW + SKEW),
                single(false),
                Ok(Slot::Current),
            ),
            (
                "strict no key id",
                without(new.clone(), protocol::KEY_ID),
                single(true),
                Err(Reason::MissingKeyId),
            ),
            (
                "strict unknown id",
                signed(&signer("k-other", NEW), NOW),
                single(true),
                Err(Reason::UnknownKeyId),
            ),
            (
                "strict prev id in single",
                old.clone(),
                single(true),
                Err(Reason::UnknownKeyId),
            ),
            (
                "strict mislabelled",
                signed(&signer("k-old", NEW), NOW),
                dual(true),
                Err(Reason::BadSignature),
            ),
            (
                "strict correct old",
                old.clone(),
                dual(true),
                Ok(Slot::Previous),
            ),
            (
                "non-strict any label",
                signed(&signer("k-other", NEW), NOW),
                single(false),
                Ok(Slot::Current),
            ),
            (
                "key id header dropped after signing",
                without(new.clone(), protocol::KEY_ID),
                single(false),
                Err(Reason::BadSignature),
            ),
            (
                "signed and sent without key id",
                without(signed(&signer("", NEW), NOW), protocol::KEY_ID),
                single(false),
                Ok(Slot::Current),
            ),
            (
                "wrong secret",
                signed(&signer("k-new", OLD), NOW),
                single(false),
                Err(Reason::BadSignature),
            ),
            (
                "zero signature",
                with(new.clone(), protocol::SIGNATURE, &zero_sig),
                single(false),
                Err(Reason::BadSignature),
            ),
        ];
        for (name, headers, keyring, expected) in cases {
            assert_eq!(outcome(&headers, &keyring), expected, "{name}");
        }
    }

    /// `tests/vectors/malformed-headers.json`, read by every language's tests: each case is
    /// rejected for its header syntax alone, in any key mode, whether the signer dual-signs
    /// or not.
    #[test]
    fn header_syntax_cases_of_the_shared_table() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/vectors/malformed-headers.json"
        );
        let text = std::fs::read_to_string(path).expect("the table is in the repository");
        let cases = malformed::Cases::parse(&text).expect("the table parses");
        assert!(cases.len() >= 40, "{} cases", cases.len());
        let dual_signer = Signer::new(
            key(Slot::Current, "k-new", NEW),
            Some(key(Slot::Previous, "k-old", OLD)),
        );
        for (base, good) in [
            ("single-signed", signed(&signer("k-new", NEW), NOW)),
            ("dual-signed", signed(&dual_signer, NOW)),
        ] {
            assert_eq!(outcome(&good, &dual(true)), Ok(Slot::Current), "{base}");
            for case in &cases {
                let headers: HeaderMap = case.apply(&good).into_iter().collect();
                for (mode, keyring) in [
                    ("single", single(false)),
                    ("single strict", single(true)),
                    ("dual", dual(false)),
                    ("dual strict", dual(true)),
                ] {
                    assert_eq!(
                        outcome(&headers, &keyring),
                        Err(case.reason()),
                        "{} ({base}, {mode})",
                        case.name()
                    );
                }
            }
        }
    }

    #[test]
    fn key_id_less_signature_verifies_when_signed_with_empty_key_id() {
        // The signed string's key id line is empty when the request carries no key id.
        let digest = protocol::body_digest(b"{}");
        let signed_string = SignedString {
            timestamp: "1764000000",
            nonce: NONCE,
            method: "POST",
            path: "/t",
            query: "q=1",
            body_digest: &digest,
        };
        let tag = key(Slot::Current, "ignored", NEW).mac(&signed_string, "");
        let mut headers = HeaderMap::new();
        headers.insert(protocol::TIMESTAMP, HeaderValue::from_static("1764000000"));
        headers.insert(protocol::NONCE, HeaderValue::from_static(NONCE));
        let hex = protocol::hex32_string(&tag);
        headers.insert(
            protocol::SIGNATURE,
            HeaderValue::from_str(&hex).expect("hex"),
        );
        assert_eq!(outcome(&headers, &single(false)), Ok(Slot::Current));
        assert_eq!(outcome(&headers, &single(true)), Err(Reason::MissingKeyId));
    }

    #[test]
    fn dual_signed_request_passes_a_gate_knowing_either_secret() {
        let dual_signer = Signer::new(
            key(Slot::Current, "k-new", NEW),
            Some(key(Slot::Previous, "k-old", OLD)),
        );
        let headers = signed(&dual_signer, NOW);
        let only_old = Keyring::new(key(Slot::Current, "k-old", OLD), None, true);
        let only_new = single(true);
        assert_eq!(outcome(&headers, &only_old), Ok(Slot::Current));
        assert_eq!(outcome(&headers, &only_new), Ok(Slot::Current));
        assert_eq!(outcome(&headers, &dual(true)), Ok(Slot::Current));
        // With the header pair gone, the X-Gate-Signatures entries alone still verify.
        let entries_only = without(headers, protocol::SIGNATURE);
        assert_eq!(outcome(&entries_only, &only_old), Ok(Slot::Current));
    }

    #[test]
    fn a_key_id_without_its_signature_header_is_ignored() {
        let dual_signer = Signer::new(
            key(Slot::Current, "k-new", NEW),
            Some(key(Slot::Previous, "k-old", OLD)),
        );
        let entries_only = without(signed(&dual_signer, NOW), protocol::SIGNATURE);
        let junk_label = with(entries_only, protocol::KEY_ID, "not a key id!");
        assert_eq!(outcome(&junk_label, &dual(true)), Ok(Slot::Current));
    }

    #[test]
    fn current_secret_wins_when_several_candidates_verify() {
        let dual_signer = Signer::new(
            key(Slot::Current, "k-old", OLD),
            Some(key(Slot::Previous, "k-new", NEW)),
        );
        // The pair is signed with OLD (previous slot at the gate), an entry with NEW (current).
        assert_eq!(
            outcome(&signed(&dual_signer, NOW), &dual(false)),
            Ok(Slot::Current)
        );
    }

    #[test]
    fn tampering_with_the_request_line_or_body_is_a_bad_signature() {
        let headers = signed(&signer("k-new", NEW), NOW);
        let keyring = single(false);
        let digest = protocol::body_digest(b"{}");
        let tampered = [
            (
                RequestLine {
                    method: "PUT",
                    ..LINE
                },
                digest,
            ),
            (RequestLine { path: "/T", ..LINE }, digest),
            (
                RequestLine {
                    query: "q=2",
                    ..LINE
                },
                digest,
            ),
            (LINE, protocol::body_digest(b"{ }")),
        ];
        for (line, digest) in tampered {
            let result = check_headers(&headers, &keyring, SKEW, NOW)
                .expect("headers are valid")
                .verify(line, &digest);
            assert_eq!(
                result.map(|v| v.slot()),
                Err(Reason::BadSignature),
                "{line:?}"
            );
        }
    }

    #[test]
    fn claimed_key_ids_never_echo_ill_formed_text() {
        let mut headers = HeaderMap::new();
        headers.insert(protocol::KEY_ID, HeaderValue::from_static("evil\"id"));
        headers.insert(
            protocol::SIGNATURES,
            HeaderValue::from_static(r#"[{"key_id":"k1","signature":"00"}]"#),
        );
        assert_eq!(ClaimedKeyIds(&headers).to_string(), "?,k1");
    }

    #[test]
    fn clock_skew_is_measured_for_stale_timestamps_too() {
        let headers = signed(&signer("k-new", NEW), NOW - 1000);
        assert_eq!(clock_skew(&headers, NOW), Some(1000));
        assert_eq!(clock_skew(&HeaderMap::new(), NOW), None);
    }

    fn method() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("GET".to_string()),
            Just("POST".to_string()),
            "[A-Z]{1,10}",
            "[a-z!#$%&'*+.^_`|~-]{1,8}",
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        // Raw request-target paths: visible ASCII except '?' and '#', percent escapes kept.
        "/[A-Za-z0-9%._~!$&'()*+,;=:@/-]{0,40}"
    }

    fn query() -> impl Strategy<Value = String> {
        "[A-Za-z0-9%._~!$&'()*+,;=:@/?+-]{0,40}"
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(
            method in method(),
            path in path(),
            query in proptest::option::of(query()),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            strict in any::<bool>(),
        ) {
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let headers = signed_request(&method, &target, &body);
            let keyring = single(strict);
            let line = RequestLine { method: &method, path: &path, query: query.as_deref().unwrap_or("") };
            let verified = check_headers(&headers, &keyring, SKEW, NOW)
                .and_then(|p| p.verify(line, &protocol::body_digest(&body)));
            prop_assert_eq!(verified.map(|v| v.slot()), Ok(Some(Slot::Current)));
        }

        #[test]
        fn any_single_byte_change_is_rejected(
            method in method(),
            path in path(),
            query in query(),
            body in proptest::collection::vec(any::<u8>(), 1..256),
            field in 0usize..4,
            position in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let target = format!("{path}?{query}");
            let headers = signed_request(&method, &target, &body);
            let mut parts = [method.clone().into_bytes(), path.clone().into_bytes(), query.clone().into_bytes(), body.clone()];
            let bytes = &mut parts[field];
            prop_assume!(!bytes.is_empty());
            let i = position.index(bytes.len());
            bytes[i] ^= flip;
            // The changed request line must still be text for it to be a request at all.
            let [m, p, q, b] = &parts;
            let (Ok(m), Ok(p), Ok(q)) = (std::str::from_utf8(m), std::str::from_utf8(p), std::str::from_utf8(q)) else {
                return Ok(());
            };
            let line = RequestLine { method: m, path: p, query: q };
            let keyring = single(false);
            let verified = check_headers(&headers, &keyring, SKEW, NOW)
                .and_then(|pending| pending.verify(line, &protocol::body_digest(b)));
            prop_assert_eq!(verified.map(|v| v.slot()), Err(Reason::BadSignature));
        }
    }

    fn signed_request(method: &str, target: &str, body: &[u8]) -> HeaderMap {
        let request = Request {
            method,
            target,
            body,
            timestamp: NOW,
            nonce: NONCE,
        };
        crate::sign::header_map(&signer("k-new", NEW).sign(&request))
    }
}
