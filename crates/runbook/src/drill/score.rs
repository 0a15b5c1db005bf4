//! How the drill scores a phase: probe answers and the drained generation's exit, the gate's
//! counters over the phase's window against what the phase expects, and the phase's summary
//! for the report.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::plan::{Deployment, Expect, KeyInForce, Names, Phase, Step};
use super::{MIN_RATE, PhaseDetail, PhaseReport, PhaseRun, REPLICA_NAMES, Settings};
use crate::client::Reply;
use crate::exposition::Scrape;
use crate::load::{Sample, Stats};
use crate::process::GateProcess;
use crate::{Check, HarnessError};
use gate::keyring::Slot;
use gate::verify::Reason;

/// What one gate must have counted for a step's probes sent to it.
#[derive(Debug, Clone, Default)]
pub(super) struct Expected {
    /// Probes it admits, by key id.
    pub(super) accepted: BTreeMap<String, i64>,
    /// Probes it refuses, by reason.
    pub(super) rejected: BTreeMap<&'static str, i64>,
    /// Observe-key signatures of probes counted `valid`, and `invalid`.
    pub(super) observed_valid: i64,
    pub(super) observed_invalid: i64,
}

/// A probe's required answer; an accepted one names the key id and the caller the upstream
/// must receive (`X-Gate-Verified-Key-Id`, `X-Gate-Verified-Caller`).
pub(super) fn expected_probe(expect: &Expect, deployment: &Deployment) -> String {
    match expect {
        Expect::Accepted { key_id } => format!(
            "200, forwarded as verified {key_id} (caller {})",
            deployment.caller_of(key_id)
        ),
        Expect::Rejected(reason) => format!("401 {reason}, not forwarded"),
    }
}

/// The probe's answer in the words of [`expected_probe`].
pub(super) fn describe_probe(
    reply: &Reply,
    forwarded: usize,
    verified_key_id: Option<&str>,
    verified_caller: Option<&str>,
) -> String {
    match (forwarded, verified_key_id) {
        (0, _) => format!("{}, not forwarded", reply.summary()),
        (1, Some(key_id)) => format!(
            "{}, forwarded as verified {key_id} (caller {})",
            reply.summary(),
            verified_caller.unwrap_or("absent")
        ),
        (1, None) => format!("{}, forwarded without a verified key id", reply.summary()),
        (n, _) => format!("{}, forwarded {n} times", reply.summary()),
    }
}

pub(super) fn exit_check(gate: &GateProcess, exit: Result<Option<i32>, HarnessError>) -> Check {
    let observed = match exit {
        Ok(Some(code)) => format!("exit {code}"),
        Ok(None) => "killed by a signal".to_owned(),
        Err(err) => format!("harness error: {err}"),
    };
    let passed = observed == "exit 0";
    let observed = if passed {
        observed
    } else {
        format!(
            "{observed}; last log lines: {}",
            gate.log_tail().join(" | ")
        )
    };
    Check::new(
        format!("{} drained after SIGTERM", gate.name()),
        "exit 0",
        observed,
        passed,
    )
}

/// Compare one gate's counters over the window with the step's expectations for the probes
/// sent to that gate, plus the stream's requests within `lower..=upper`.
pub(super) fn metric_checks(
    step: &Step,
    named: &dyn Fn(&str) -> String,
    first: &Scrape,
    second: &Scrape,
    (lower, upper): (usize, usize),
    expected: &Expected,
) -> Vec<Check> {
    let (accepted, rejected) = (&expected.accepted, &expected.rejected);
    let (lower, upper) = (lower as i64, upper as i64);
    let mut checks = Vec::new();
    let within = |name: String, probes: i64, observed: i64| {
        let passed = observed >= lower + probes && observed <= upper + probes;
        Check::new(
            name,
            format!(
                "{}..={} (stream {lower}..={upper} + {probes} probes)",
                lower + probes,
                upper + probes
            ),
            observed.to_string(),
            passed,
        )
    };
    let deployment = &step.deployment;
    let keys = deployment.keys_in_force();
    // Every key in force is counted per key (the environment's secrets too, as caller
    // `shared`); the slot counter is the environment secrets' alone.
    for key in &keys {
        let key_id = key.key_id.as_str();
        let name = named(&format!(
            "/metrics sig_gate_verified_key_total{{caller=\"{}\",key_id=\"{key_id}\"}}",
            key.caller
        ));
        let observed = second.count_delta(
            first,
            "sig_gate_verified_key_total",
            &[("caller", key.caller), ("key_id", key_id)],
        );
        let probes = accepted.get(key_id).copied().unwrap_or(0);
        checks.push(if key_id == step.client_key {
            within(name, probes, observed)
        } else {
            Check::equal(name, probes, observed)
        });
        if key.observe {
            // The operator's go/no-go before enforcing: `valid` grows with the caller's
            // traffic, `invalid` only by the signatures meant to be wrong.
            let observed = |result: &str| {
                second.count_delta(
                    first,
                    "sig_gate_identity_observed_total",
                    &[
                        ("caller", key.caller),
                        ("key_id", key_id),
                        ("result", result),
                    ],
                )
            };
            let name = |result: &str| {
                named(&format!(
                    "/metrics sig_gate_identity_observed_total{{caller=\"{}\",key_id=\"{key_id}\",result=\"{result}\"}}",
                    key.caller
                ))
            };
            checks.push(if step.client_observed {
                within(name("valid"), expected.observed_valid, observed("valid"))
            } else {
                Check::equal(name("valid"), expected.observed_valid, observed("valid"))
            });
            checks.push(Check::equal(
                name("invalid"),
                expected.observed_invalid,
                observed("invalid"),
            ));
        }
    }
    if !keys.is_empty() {
        checks.push(Check::equal(
            named("/metrics sig_gate_identity_observed_total of keys that are not observe"),
            0,
            keys.iter()
                .filter(|key| !key.observe)
                .map(|key| {
                    second.count_delta(
                        first,
                        "sig_gate_identity_observed_total",
                        &[("key_id", key.key_id.as_str())],
                    )
                })
                .sum::<i64>(),
        ));
    }
    if !deployment.has_env_secret() {
        checks.push(Check::equal(
            named("/metrics sig_gate_verified_total (both slots: no environment secret)"),
            0,
            (second.sum("sig_gate_verified_total") - first.sum("sig_gate_verified_total")).round()
                as i64,
        ));
    } else {
        let client_slot = deployment.slot_of(&step.client_key);
        for slot in Slot::ALL {
            let name = named(&format!(
                "/metrics sig_gate_verified_total{{slot=\"{}\"}}",
                slot.as_str()
            ));
            let observed =
                second.count_delta(first, "sig_gate_verified_total", &[("slot", slot.as_str())]);
            let probes: i64 = accepted
                .iter()
                .filter(|(key_id, _)| deployment.slot_of(key_id) == Some(slot))
                .map(|(_, n)| n)
                .sum();
            checks.push(if client_slot == Some(slot) {
                within(name, probes, observed)
            } else {
                Check::equal(name, probes, observed)
            });
        }
    }
    let forwarded = second.count_delta(
        first,
        "sig_gate_requests_total",
        &[("outcome", "forwarded")],
    );
    checks.push(within(
        named("/metrics sig_gate_requests_total{outcome=\"forwarded\"}"),
        accepted.values().sum(),
        forwarded,
    ));

    let observed: BTreeMap<&'static str, i64> = Reason::ALL
        .iter()
        .map(|reason| {
            let delta = second.count_delta(
                first,
                "sig_gate_invalid_request_signature_total",
                &[("reason", reason.as_str())],
            );
            (reason.as_str(), delta)
        })
        .filter(|(_, delta)| *delta != 0)
        .collect();
    checks.push(Check::equal(
        named("/metrics sig_gate_invalid_request_signature_total by reason"),
        counts_text(rejected),
        counts_text(&observed),
    ));
    let rejected_total: i64 = rejected.values().sum();
    for (outcome, expected) in [("rejected", rejected_total), ("upstream_error", 0)] {
        checks.push(Check::equal(
            named(&format!(
                "/metrics sig_gate_requests_total{{outcome=\"{outcome}\"}}"
            )),
            expected,
            second.count_delta(first, "sig_gate_requests_total", &[("outcome", outcome)]),
        ));
    }
    checks.push(Check::equal(
        named("/metrics sig_gate_rejected_other_total"),
        0,
        (second.sum("sig_gate_rejected_other_total") - first.sum("sig_gate_rejected_other_total"))
            .round() as i64,
    ));

    let expected_info = deployment.info();
    let observed_info: BTreeMap<String, String> = second
        .labels("sig_gate_config_info")
        .map(|labels| {
            labels
                .iter()
                .filter(|(k, _)| expected_info.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    checks.push(Check::equal(
        named("/metrics sig_gate_config_info"),
        labels_text(&expected_info),
        labels_text(&observed_info),
    ));
    if deployment.mounted() {
        checks.push(Check::equal(
            named("/metrics sig_gate_key_info (the keys in force)"),
            keys_text(&keys),
            key_map_text(&key_info(second)),
        ));
    }
    if let Deployment::Mounted { redis: true, .. } = deployment {
        checks.push(Check::equal(
            named("/metrics sig_gate_replay_store_up"),
            1,
            second
                .value_or_zero("sig_gate_replay_store_up", &[])
                .round() as i64,
        ));
    }
    checks
}

/// `sig_gate_key_info`'s series at 1: every label of each key in force, by key id.
fn key_info(scrape: &Scrape) -> BTreeMap<String, String> {
    scrape
        .samples
        .iter()
        .filter(|s| s.name == "sig_gate_key_info" && s.value == 1.0)
        .map(|s| {
            let label = |name: &str| s.labels.get(name).cloned().unwrap_or_default();
            let text = key_text(
                &label("caller"),
                &label("alg"),
                &label("observe"),
                &label("fingerprint"),
            );
            (label("key_id"), text)
        })
        .collect()
}

fn key_text(caller: &str, alg: &str, observe: &str, fingerprint: &str) -> String {
    format!("{caller}/{alg}/observe={observe}/{fingerprint}")
}

/// The keys a deployment must report, in the form of [`key_info`].
fn keys_text(keys: &[KeyInForce]) -> String {
    let keys: BTreeMap<String, String> = keys
        .iter()
        .map(|key| {
            let observe = key.observe.to_string();
            let text = key_text(key.caller, key.alg, &observe, &key.fingerprint);
            (key.key_id.clone(), text)
        })
        .collect();
    key_map_text(&keys)
}

fn key_map_text(keys: &BTreeMap<String, String>) -> String {
    if keys.is_empty() {
        return "(no keys)".to_owned();
    }
    keys.iter()
        .map(|(id, text)| format!("{id} ({text})"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn counts_text<K: std::fmt::Display>(counts: &BTreeMap<K, i64>) -> String {
    if counts.is_empty() {
        return "all 0".to_owned();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "(no series)".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turn a phase's checks, probe answers and stream samples into its report.
pub(super) fn summarise(
    names: &Names,
    index: usize,
    phase: &Phase,
    run: PhaseRun,
    samples: &[Sample],
    settings: &Settings,
) -> PhaseReport {
    let gate = phase
        .steps
        .iter()
        .map(|s| s.deployment.describe(names))
        .collect::<Vec<_>>()
        .join(", then ");
    let stream: Vec<&Sample> = samples.iter().filter(|s| s.phase == index).collect();
    let stats = Stats::of(stream.iter().copied());
    let rate = rate_of(&stream);
    let mut rejected = BTreeMap::new();
    let mut probes_ok = 0;
    for reply in &run.replies {
        if reply.status.is_success() {
            probes_ok += 1;
        } else {
            let key = reply.reason().unwrap_or_else(|| reply.summary());
            *rejected.entry(key).or_default() += 1;
        }
    }
    let mut checks = run.checks;
    let ran = run.started.is_some();
    if ran {
        checks.push(Check::new(
            "stream: no failed requests (any non-2xx or connection error)",
            "0 failed",
            if stats.failed == 0 {
                "0 failed".to_owned()
            } else {
                format!(
                    "{} failed of {}, first: {}",
                    stats.failed,
                    stats.requests,
                    stats.first_failures.join("; ")
                )
            },
            stats.failed == 0,
        ));
        checks.push(Check::new(
            "stream: rate held",
            format!(">= {MIN_RATE} req/s (target {})", settings.rate),
            format!("{rate:.0} req/s"),
            rate >= f64::from(MIN_RATE),
        ));
        if !run.replicas.is_empty() {
            checks.push(round_robin(&run.replicas, &stream));
        }
    } else {
        checks.push(Check::new(
            "phase ran",
            "ran",
            "not run: the drill stopped earlier",
            false,
        ));
    }
    PhaseReport {
        name: phase.name.to_owned(),
        passed: ran && checks.iter().all(|c| c.passed),
        detail: PhaseDetail {
            gate,
            client: phase.client.clone(),
            requests: stats.requests + run.replies.len(),
            accepted: stats.ok + probes_ok,
            rejected,
            failed: stats.failed,
            rate: hundredths(rate),
            p50_ms: hundredths(stats.p50_ms),
            p99_ms: hundredths(stats.p99_ms),
        },
        checks,
    }
}

/// Whether the stream alternated between the replicas: request N goes to replica N mod 2, so
/// their counts differ by at most one, and each got some.
fn round_robin(replicas: &[SocketAddr], stream: &[&Sample]) -> Check {
    let counts: Vec<usize> = replicas
        .iter()
        .map(|addr| stream.iter().filter(|s| s.target == *addr).count())
        .collect();
    let (least, most) = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );
    Check::new(
        "stream: round-robin over the replicas",
        "each replica gets every other request (counts differ by at most 1)",
        counts
            .iter()
            .zip(REPLICA_NAMES)
            .map(|(n, name)| format!("replica {name} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        least > 0 && most - least <= 1,
    )
}

/// Requests per second over the span of the phase's stream: from its first request's start to
/// its last's (a stall in between lowers it, as it should).
fn rate_of(stream: &[&Sample]) -> f64 {
    let (Some(first), Some(last)) = (
        stream.iter().map(|s| s.started).min(),
        stream.iter().map(|s| s.started).max(),
    ) else {
        return 0.0;
    };
    let span = (last - first).as_secs_f64();
    if span <= 0.0 {
        return 0.0;
    }
    (stream.len() - 1) as f64 / span
}

/// Round to two decimals for the report (microsecond noise helps no one).
fn hundredths(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
