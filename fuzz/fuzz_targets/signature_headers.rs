//! Signature verification over headers built from fuzz input: `verify::check_headers` (every
//! `X-Gate-*` header, `X-Gate-Signatures` JSON included), then the MAC check, the clock-skew
//! reading and the claimed key ids of the rejection log. Never a panic; a request signed by the
//! gate's own signer verifies whatever unrelated headers come with it; and the log's key ids
//! hold nothing but key-id syntax.
//!
//! Input: one flags byte (bit 0 strict key ids, bit 1 a previous secret, bit 2 dual-sign,
//! bit 3 sign the request first), then lines: `METHOD target`, header lines `Name: value`, an
//! empty line, the body.
#![no_main]
#![forbid(unsafe_code)]

use gate::keyring::{Key, Keyring, Secret, Slot};
use gate::protocol::{self, SignedString};
use gate::sign::{self, Signer};
use gate::verify::{self, ClaimedKeyIds, RequestLine};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;
const SKEW: u64 = 300;
const NONCE: &str = "fuzz-nonce-0123456789";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (strict, with_previous, dual, signed) = (
        flags & 1 != 0,
        flags & 2 != 0,
        flags & 4 != 0,
        flags & 8 != 0,
    );

    let mut lines = rest.split(|&b| b == b'\n');
    let request_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let (method, target) = request_line.split_once(' ').unwrap_or(("GET", "/"));
    let mut extra = HeaderMap::new();
    let mut consumed = request_line.len() + 1;
    for line in lines.by_ref() {
        consumed += line.len() + 1;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            extra.append(name, value);
        }
    }
    let body = rest.get(consumed.min(rest.len())..).unwrap_or_default();

    let current = Key::new(
        Slot::Current,
        "current".into(),
        &Secret::new(&b"fuzz-current-secret-0123456789abcdef"[..]),
    );
    let previous = with_previous.then(|| {
        Key::new(
            Slot::Previous,
            "previous".into(),
            &Secret::new(&b"fuzz-previous-secret-0123456789abcdef"[..]),
        )
    });
    let keyring = Keyring::new(current.clone(), previous.clone(), strict);

    let mut headers = HeaderMap::new();
    let touches_gate_headers = extra
        .keys()
        .any(|name| name.as_str().starts_with(protocol::HEADER_PREFIX));
    if signed {
        let signer = Signer::new(current, previous.filter(|_| dual));
        let request = sign::Request {
            method,
            target,
            body,
            timestamp: NOW,
            nonce: NONCE,
        };
        headers = sign::header_map(&signer.sign(&request));
    }
    for (name, value) in &extra {
        headers.append(name.clone(), value.clone());
    }

    let (path, query) = SignedString::split_target(target);
    let line = RequestLine {
        method,
        path,
        query,
    };
    let outcome = verify::check_headers(&headers, &keyring, SKEW, NOW)
        .and_then(|pending| pending.verify(line, &protocol::body_digest(body)));
    if signed && !touches_gate_headers {
        let verified = outcome.expect("a request signed by the gate's signer verifies");
        assert_eq!(verified.slot(), Some(Slot::Current));
        assert_eq!(verified.nonce(), NONCE);
    }
    if let Some(skew) = verify::clock_skew(&headers, NOW) {
        assert!(skew <= NOW.max(999_999_999_999));
    }
    let claimed = ClaimedKeyIds(&headers).to_string();
    for id in claimed.split(',').filter(|id| !id.is_empty()) {
        assert!(
            id == "?" || protocol::is_key_id(id),
            "claimed key id {id:?} logged"
        );
    }
});
