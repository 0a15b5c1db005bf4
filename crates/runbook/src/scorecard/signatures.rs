//! The scorecard's attacks on the signature: clock skew either side of the window, a replayed
//! request, tampered method, path, query and body, a retired secret, key ids under strict mode,
//! a missing signature, an oversized body and a batch of malformed signature headers. They play
//! against the field's main and strict gates.

use bytes::Bytes;
use http::Method;

use super::{Field, MAX_BODY, answer, exchange, grew, invalid, reached, rejection};
use crate::client::Call;
use crate::{Check, HarnessError};
use gate::clock::unix_now;
use gate::verify::Reason;
use gate::verify::malformed::Cases;

pub(super) async fn skew(
    field: &Field,
    offset: i64,
    stale: bool,
) -> Result<Vec<Check>, HarnessError> {
    let path = format!("/game/skew{offset:+}");
    let timestamp = unix_now().saturating_add_signed(offset);
    let call = Call::new(Method::POST, &path)
        .body("{}")
        .signed_at(&field.new.signer(), timestamp);
    let (before, reply, after) = exchange(field, &field.main, &call).await?;
    let mut checks = if stale {
        vec![
            answer("answer", &reply, "401 stale_timestamp"),
            invalid(&before, &after, Reason::StaleTimestamp, 1),
            reached(field, &path, 0, None),
        ]
    } else {
        vec![
            answer("answer", &reply, "200"),
            reached(field, &path, 1, Some(field.new.key_id())),
        ]
    };
    // The skew histogram sees every well-formed timestamp, stale ones included.
    let histogram = "sig_gate_clock_skew_seconds";
    let count = after.count_delta(&before, &format!("{histogram}_count"), &[]);
    let sum = after.delta(&before, &format!("{histogram}_sum"), &[]);
    let distance = offset.unsigned_abs() as f64;
    let close = (sum - distance).abs() <= 2.0;
    checks.push(Check::new(
        format!("/metrics {histogram}"),
        format!("clock_skew_seconds +1 observation of {distance:.0} s"),
        format!("clock_skew_seconds +{count} observation(s) totalling {sum:.0} s"),
        count == 1 && close,
    ));
    Ok(checks)
}

pub(super) async fn replay(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let path = "/game/replay";
    let call = Call::signed_post(path, &field.new.signer());
    let first = field.http.call(field.main.proxy_addr(), &call).await?;
    let (before, second, after) = exchange(field, &field.main, &call).await?;
    Ok(vec![
        answer("first send", &first, "200"),
        answer("same request again", &second, "401 replayed_nonce"),
        invalid(&before, &after, Reason::ReplayedNonce, 1),
        reached(field, path, 1, Some(field.new.key_id())),
    ])
}

/// What an attacker changes after the request was signed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tamper {
    Body,
    Path,
    Query,
    Method,
}

impl Tamper {
    pub(super) const ALL: [Tamper; 4] = [Tamper::Body, Tamper::Path, Tamper::Query, Tamper::Method];

    pub(super) fn name(self) -> &'static str {
        match self {
            Tamper::Body => "body",
            Tamper::Path => "path",
            Tamper::Query => "query",
            Tamper::Method => "method",
        }
    }
}

pub(super) async fn tampered(field: &Field, tamper: Tamper) -> Result<Vec<Check>, HarnessError> {
    let path = format!("/game/tamper-{}", tamper.name());
    let signed = Call::new(Method::POST, format!("{path}?amount=1"))
        .body(r#"{"amount":1}"#)
        .signed(&field.new.signer());
    let sent = match tamper {
        Tamper::Body => signed.body(r#"{"amount":1000}"#),
        Tamper::Path => signed.target(format!("{path}-admin?amount=1")),
        Tamper::Query => signed.target(format!("{path}?amount=1000")),
        Tamper::Method => signed.method(Method::PUT),
    };
    let mut checks = rejection(field, &field.main, &sent, Reason::BadSignature).await?;
    if let Tamper::Path = tamper {
        checks.push(reached(field, &path, 0, None));
    }
    Ok(checks)
}

pub(super) async fn retired(field: &Field) -> Result<Vec<Check>, HarnessError> {
    // The main gate runs the new secret alone: the old one, under either label, must fail.
    let path = "/game/retired";
    let as_k1 = Call::signed_post(path, &field.old.signer());
    let as_k2 = Call::signed_post(path, &field.old.relabelled(field.new.key_id()).signer());
    let (before, first, _) = exchange(field, &field.main, &as_k1).await?;
    let (_, second, after) = exchange(field, &field.main, &as_k2).await?;
    Ok(vec![
        answer("old secret, old key id k1", &first, "401 bad_signature"),
        answer(
            "old secret, current key id k2",
            &second,
            "401 bad_signature",
        ),
        invalid(&before, &after, Reason::BadSignature, 2),
        reached(field, path, 0, None),
    ])
}

pub(super) async fn mislabelled(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let (k1, k2) = (field.old.key_id(), field.new.key_id());
    let old_as_k2 = Call::signed_post("/game/mislabelled-old", &field.old.relabelled(k2).signer());
    let new_as_k1 = Call::signed_post("/game/mislabelled-new", &field.new.relabelled(k1).signer());
    let control = Call::signed_post("/game/labelled-old", &field.old.signer());
    let (before, first, _) = exchange(field, &field.strict, &old_as_k2).await?;
    let (_, second, after) = exchange(field, &field.strict, &new_as_k1).await?;
    let third = field.http.call(field.strict.proxy_addr(), &control).await?;
    Ok(vec![
        answer("old secret labelled k2", &first, "401 bad_signature"),
        answer("new secret labelled k1", &second, "401 bad_signature"),
        invalid(&before, &after, Reason::BadSignature, 2),
        reached(field, old_as_k2.path(), 0, None),
        reached(field, new_as_k1.path(), 0, None),
        answer("old secret correctly labelled k1", &third, "200"),
        reached(field, control.path(), 1, Some(k1)),
    ])
}

pub(super) async fn unknown_key_id(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let call = Call::signed_post("/game/unknown-key-id", &field.new.relabelled("k9").signer());
    rejection(field, &field.strict, &call, Reason::UnknownKeyId).await
}

pub(super) async fn missing_key_id(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let call =
        Call::signed_post("/game/missing-key-id", &field.new.signer()).without("x-gate-key-id");
    rejection(field, &field.strict, &call, Reason::MissingKeyId).await
}

pub(super) async fn missing_signature(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let call = Call::new(Method::POST, "/game/unsigned").body("{}");
    let (before, reply, after) = exchange(field, &field.main, &call).await?;
    let header = |name| {
        reply
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(absent)")
            .to_owned()
    };
    Ok(vec![
        answer("answer", &reply, "401 missing_signature"),
        Check::equal(
            "WWW-Authenticate",
            r#"WWW-Authenticate: GateHMAC realm="sig-gate""#.to_owned(),
            format!(
                "WWW-Authenticate: {}",
                header(http::header::WWW_AUTHENTICATE)
            ),
        ),
        Check::equal(
            "Content-Type",
            "Content-Type: application/json".to_owned(),
            format!("Content-Type: {}", header(http::header::CONTENT_TYPE)),
        ),
        invalid(&before, &after, Reason::MissingSignature, 1),
        reached(field, call.path(), 0, None),
    ])
}

pub(super) async fn oversized(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let signer = field.new.signer();
    let declared = Call::new(Method::POST, "/game/oversized-declared")
        .body(vec![b'x'; MAX_BODY + 1])
        .signed(&signer);
    let streamed = Call::new(Method::POST, "/game/oversized-streamed")
        .chunked(vec![Bytes::from(vec![b'y'; MAX_BODY / 2]); 4])
        .signed(&signer);
    let at_limit = Call::new(Method::POST, "/game/at-limit")
        .body(vec![b'z'; MAX_BODY])
        .signed(&signer);
    let (before, first, _) = exchange(field, &field.main, &declared).await?;
    let (_, second, after) = exchange(field, &field.main, &streamed).await?;
    let third = field.http.call(field.main.proxy_addr(), &at_limit).await?;
    Ok(vec![
        answer(
            "declared length limit+1",
            &first,
            "413 request body too large",
        ),
        answer(
            "chunked body of 2x the limit",
            &second,
            "413 request body too large",
        ),
        grew(
            &before,
            &after,
            "sig_gate_rejected_other_total",
            ("reason", "body_too_large"),
            2,
        ),
        reached(field, declared.path(), 0, None),
        reached(field, streamed.path(), 0, None),
        answer("body exactly at the limit", &third, "200"),
    ])
}

/// The shared table of malformed signature headers: the same cases the verifier's unit tests,
/// the black-box tests and the Python client's tests check (`tests/vectors/malformed-headers.json`).
const MALFORMED_TABLE: &str = include_str!("../../../../tests/vectors/malformed-headers.json");

/// Every case of the shared table applied to a correctly signed call: its name, the reason the
/// gate must give, and the call.
fn malformed_variants(signed: &Call) -> Vec<(String, Reason, Call)> {
    // The table is compiled in, and `verify::malformed`'s tests parse the same file.
    let cases = Cases::parse(MALFORMED_TABLE).expect("the embedded malformed-header table parses");
    cases
        .iter()
        .map(|case| {
            let lines = case.apply(signed.header_lines().iter().map(|(n, v)| (n, v)));
            let call = signed.clone().with_header_lines(lines);
            (case.name().to_owned(), case.reason(), call)
        })
        .collect()
}

pub(super) async fn malformed(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let path = "/game/malformed";
    let before = field.main.scrape().await?;
    let mut wrong = Vec::new();
    let variants = malformed_variants(&Call::signed_post(path, &field.new.signer()));
    let total = variants.len();
    let of_reason =
        |reason: Reason| variants.iter().filter(|(_, r, _)| *r == reason).count() as i64;
    for (name, reason, call) in &variants {
        let reply = field.http.call(field.main.proxy_addr(), call).await?;
        let expected = format!("401 {}", reason.as_str());
        if reply.summary() != expected {
            wrong.push(format!("{name}: {} (want {expected})", reply.summary()));
        }
    }
    let after = field.main.scrape().await?;
    let expected = format!("{total}/{total} answered 401 with the table's reason");
    let observed = if wrong.is_empty() {
        expected.clone()
    } else {
        format!(
            "{}/{total} answered 401 with the table's reason; {}",
            total - wrong.len(),
            wrong.join(", ")
        )
    };
    Ok(vec![
        Check::new("answers", expected, observed, wrong.is_empty()),
        invalid(
            &before,
            &after,
            Reason::MalformedSignature,
            of_reason(Reason::MalformedSignature),
        ),
        invalid(
            &before,
            &after,
            Reason::MissingSignature,
            of_reason(Reason::MissingSignature),
        ),
        reached(field, path, 0, None),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Credential;

    #[test]
    fn malformed_variants_differ_from_the_signed_request() {
        let credential = Credential::generate("k2");
        let signed = Call::signed_post("/x", &credential.dual_signer(&Credential::generate("k1")));
        let variants = malformed_variants(&signed);
        assert!(variants.len() >= 50, "the whole shared table");
        let base = format!(
            "{:?}",
            signed
                .request("127.0.0.1:9".parse().expect("addr"))
                .headers()
        );
        for (name, _, call) in variants {
            let headers = format!(
                "{:?}",
                call.request("127.0.0.1:9".parse().expect("addr")).headers()
            );
            assert_ne!(headers, base, "{name} changes nothing");
        }
    }
}
