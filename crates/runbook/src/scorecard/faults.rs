//! The scorecard's faults around the gate: the upstream down and recovering, an upstream too
//! slow for the gate's timeout, report-only mode, and a rejection spike that must show as a
//! rate on `/metrics`.

use std::time::{Duration, Instant};

use http::Method;
use tokio::task::JoinSet;

use super::{Field, UPSTREAM_TIMEOUT_SECS, answer, exchange, grew, invalid, reached};
use crate::client::Call;
use crate::exposition::Scrape;
use crate::{Check, HarnessError};
use gate::verify::Reason;

/// Requests of the rejection spike.
const SPIKE: usize = 100;
/// Lowest rejection rate, per second, that counts as a visible spike.
const SPIKE_RATE: f64 = 20.0;

pub(super) async fn upstream_down(field: &mut Field) -> Result<Vec<Check>, HarnessError> {
    let signer = field.new.signer();
    field.upstream.stop().await;
    let during = Call::signed_post("/game/upstream-down", &signer);
    let outcome = exchange(field, &field.main, &during).await;
    let health = (
        field.main.probe("/healthz").await,
        field.main.probe("/readyz").await,
    );
    field
        .upstream
        .restart()
        .await
        .map_err(|e| HarnessError::new("restarting the upstream", e))?;
    let (before, down, after) = outcome?;
    let healthy = match health {
        (Ok(200), Ok(200)) => "gate /healthz 200, /readyz 200".to_owned(),
        (healthz, readyz) => format!("gate /healthz {healthz:?}, /readyz {readyz:?}"),
    };
    let recovered = Call::signed_post("/game/upstream-recovered", &signer);
    let back = field.http.call(field.main.proxy_addr(), &recovered).await?;
    Ok(vec![
        answer(
            "while the upstream is down",
            &down,
            "502 upstream unavailable",
        ),
        Check::equal(
            "gate health while down",
            "gate /healthz 200, /readyz 200".to_owned(),
            healthy,
        ),
        grew(
            &before,
            &after,
            "sig_gate_requests_total",
            ("outcome", "upstream_error"),
            1,
        ),
        answer("after the upstream is back", &back, "200"),
        reached(field, recovered.path(), 1, Some(field.new.key_id())),
    ])
}

pub(super) async fn upstream_slow(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let slow_ms = (UPSTREAM_TIMEOUT_SECS * 1000) * 3;
    let call = Call::signed_post(format!("/slow?ms={slow_ms}"), &field.new.signer());
    let started = Instant::now();
    let (before, reply, after) = exchange(field, &field.main, &call).await?;
    let took = started.elapsed();
    let limit = Duration::from_secs(UPSTREAM_TIMEOUT_SECS) + Duration::from_millis(1500);
    let after_timeout = field
        .http
        .call(
            field.main.proxy_addr(),
            &Call::signed_post("/game/after-timeout", &field.new.signer()),
        )
        .await?;
    Ok(vec![
        answer("answer", &reply, "504 upstream timeout"),
        Check::new(
            "answered within the timeout",
            format!("answered in < {} ms", limit.as_millis()),
            format!("answered in {} ms", took.as_millis()),
            took < limit,
        ),
        grew(
            &before,
            &after,
            "sig_gate_requests_total",
            ("outcome", "upstream_error"),
            1,
        ),
        answer("next request", &after_timeout, "200"),
    ])
}

pub(super) async fn report_only(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let gate = &field.report_only;
    let unsigned = Call::new(Method::POST, "/game/report-only-unsigned").body("{}");
    let forged = Call::signed_post("/game/report-only-forged", &field.stranger.signer());
    let valid = Call::signed_post("/game/report-only-valid", &field.new.signer());
    let before = gate.scrape().await?;
    let mut replies = Vec::new();
    for call in [&unsigned, &forged, &valid] {
        replies.push(field.http.call(gate.proxy_addr(), call).await?);
    }
    let verified = reached(field, valid.path(), 1, Some(field.new.key_id()));
    replies.push(field.http.call(gate.proxy_addr(), &valid).await?);
    let after = gate.scrape().await?;
    let mode = after
        .labels("sig_gate_config_info")
        .and_then(|labels| labels.get("require_signature"))
        .cloned()
        .unwrap_or_else(|| "(absent)".to_owned());
    Ok(vec![
        answer("unsigned", &replies[0], "200"),
        answer("signed with an unknown secret", &replies[1], "200"),
        answer("valid", &replies[2], "200"),
        answer("valid, replayed", &replies[3], "200"),
        reached(field, unsigned.path(), 1, None),
        reached(field, forged.path(), 1, None),
        verified,
        // The replay did not verify, so it goes on without `X-Gate-Verified-Key-Id`.
        reached(field, valid.path(), 2, None),
        invalid(&before, &after, Reason::MissingSignature, 1),
        invalid(&before, &after, Reason::BadSignature, 1),
        invalid(&before, &after, Reason::ReplayedNonce, 1),
        grew(
            &before,
            &after,
            "sig_gate_requests_total",
            ("outcome", "rejected"),
            0,
        ),
        Check::equal(
            "/metrics sig_gate_config_info",
            "config_info require_signature=\"false\"".to_owned(),
            format!("config_info require_signature={mode:?}"),
        ),
    ])
}

pub(super) async fn spike(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let gate = &field.main;
    let metric = "sig_gate_invalid_request_signature_total";
    let quiet = gate.scrape().await?;
    tokio::time::sleep(field.pause(Duration::from_secs(1))).await;
    let before = gate.scrape().await?;
    let mut workers = JoinSet::new();
    for worker in 0..10 {
        let (http, addr, signer) = (
            field.http.clone(),
            gate.proxy_addr(),
            field.stranger.signer(),
        );
        workers.spawn(async move {
            let mut unexpected = Vec::new();
            for n in 0..SPIKE / 10 {
                let call = Call::signed_post(format!("/game/spike/{worker}-{n}"), &signer);
                match http.call(addr, &call).await {
                    Ok(reply) if reply.summary() == "401 bad_signature" => {}
                    Ok(reply) => unexpected.push(reply.summary()),
                    Err(err) => unexpected.push(err.to_string()),
                }
            }
            unexpected
        });
    }
    let mut unexpected = Vec::new();
    while let Some(result) = workers.join_next().await {
        unexpected.extend(result.map_err(|e| HarnessError::new("spike worker", e))?);
    }
    let after = gate.scrape().await?;
    let rate = |from: &Scrape, to: &Scrape| {
        let seconds = (to.at - from.at).as_secs_f64().max(1e-3);
        (to.sum(metric) - from.sum(metric)) / seconds
    };
    let (quiet_rate, spike_rate) = (rate(&quiet, &before), rate(&before, &after));
    let seconds = (after.at - before.at).as_secs_f64();
    Ok(vec![
        Check::new(
            "answers",
            format!("{SPIKE} forged requests answered 401 bad_signature"),
            if unexpected.is_empty() {
                format!("{SPIKE} forged requests answered 401 bad_signature")
            } else {
                format!("{} unexpected: {}", unexpected.len(), unexpected.join(", "))
            },
            unexpected.is_empty(),
        ),
        Check::new(
            "rate before the spike",
            "invalid-signature rate 0/s before",
            format!("invalid-signature rate {quiet_rate:.0}/s before"),
            quiet_rate == 0.0,
        ),
        invalid(&before, &after, Reason::BadSignature, SPIKE as i64),
        Check::new(
            "rate during the spike",
            format!("rate >= {SPIKE_RATE:.0}/s during"),
            format!("rate {spike_rate:.0}/s during ({seconds:.2} s between scrapes)"),
            spike_rate >= SPIKE_RATE,
        ),
    ])
}
