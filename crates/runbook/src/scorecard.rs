//! `sig-gate scorecard` (`make game-day-scorecard`): attack and fault scenarios played against
//! real `sig-gate serve` processes in front of a real upstream on loopback, each scored by
//! comparing what the runbook expects with what the client, the upstream and the gate's own
//! `/metrics` observed.
//!
//! The field: a gate after retirement (new secret only, strict key ids off, a 16 KiB body
//! limit, a 1 s upstream timeout, the default 300 s clock-skew window), a gate in the overlap
//! with strict key ids, a report-only gate, and for the shutdown scenario a gate of its own;
//! the attacks on the request path (`scorecard/attacks.rs`) start two more, the identity
//! scenarios three with a key registry, and the replay store scenarios two replicas sharing a
//! `redis-server` they start.
//! Scenarios run one after another, so each one's counter deltas are its own.
//!
//! This file is the engine: the field, the order of play, the checks scenarios share and the
//! report. The scenarios live by kind: `scorecard/signatures.rs` (skew, replay, tampering, key
//! ids, body limit, malformed headers), `scorecard/attacks.rs` (the request path itself),
//! `scorecard/identity.rs` (signature version 2 and the key registry: audiences, reload, the
//! caller header, algorithm confusion, observe keys, claimed key ids), `scorecard/store.rs`
//! (the shared replay store on Redis: replicas, restarts, an outage), `scorecard/faults.rs`
//! (upstream down or slow, report-only mode, a rejection spike) and `scorecard/shutdown.rs`
//! (SIGTERM under load, a bad redeploy).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::ToolError;
use crate::client::{Call, Credential, Http, Reply};
use crate::exposition::Scrape;
use crate::process::{GateEnv, GateProcess, Launcher, Workdir};
use crate::report::{self, Entry, Totals};
use crate::upstream::RecordingUpstream;
use crate::{Check, HarnessError};
use gate::config::vars;
use gate::verify::Reason;

mod attacks;
mod faults;
mod identity;
mod shutdown;
mod signatures;
mod store;

use faults::{report_only, spike, upstream_down, upstream_slow};
use shutdown::{bad_redeploy, sigterm};
use signatures::{
    Tamper, malformed, mislabelled, missing_key_id, missing_signature, oversized, replay, retired,
    skew, tampered, unknown_key_id,
};

/// Body limit of the main gate (`GATE_MAX_BODY_BYTES`).
const MAX_BODY: usize = 16 * 1024;
/// Clock-skew window of the main gate (`GATE_CLOCK_SKEW_SECS`, the default).
const SKEW_SECS: u64 = 300;
/// Upstream timeout of the main gate (`GATE_UPSTREAM_TIMEOUT_SECS`).
const UPSTREAM_TIMEOUT_SECS: u64 = 1;

/// Flags of `sig-gate scorecard`.
#[derive(Debug, Args)]
pub struct ScorecardArgs {
    /// Print one JSON object on stdout instead of the scorecard.
    #[arg(long)]
    pub json: bool,
    /// Shorter waits under load (same scenarios and checks): what `make test` runs.
    #[arg(long)]
    pub quick: bool,
    /// The sig-gate binary to play against [default: this one].
    #[arg(long)]
    pub gate_bin: Option<PathBuf>,
}

/// Play every scenario; exit 0 when all passed, 1 otherwise.
pub fn run(args: ScorecardArgs) -> Result<ExitCode, ToolError> {
    let program = crate::gate_program(args.gate_bin)?;
    let report = crate::runtime()?.block_on(async {
        tokio::select! {
            report = scorecard(program, args.quick) => report,
            () = gate::server::shutdown_signal() => {
                Report::aborted(Score { score: 0, total: 0 }, "interrupted")
            }
        }
    });
    Ok(crate::print_verdict(
        args.json,
        &report,
        Report::render,
        report.passed,
    ))
}

/// The scorecard: what `--json` prints (`passed`, `score`, `total`, `duration_secs`, `error`
/// when the game stopped early, `scenarios`).
pub type Report = report::Report<Score, Detail>;

/// One scenario's verdict.
pub type Scenario = Entry<Detail>;

/// The scorecard's totals.
#[derive(Debug, Serialize)]
pub struct Score {
    /// Scenarios passed.
    pub score: usize,
    /// Scenarios played.
    pub total: usize,
}

impl Totals for Score {
    const ENTRIES: &'static str = "scenarios";
}

/// What a scenario's entry tells beyond its verdict and checks.
#[derive(Debug, Serialize)]
pub struct Detail {
    /// The expected outcome (the checks' expectations).
    pub expected: String,
    /// The observed outcome (the checks' observations).
    pub observed: String,
}

/// A scenario's entry from what it returned: its checks, or one broken check saying why it
/// could not run. It passes when it has checks and all of them passed.
fn entry(name: &str, result: Result<Vec<Check>, HarnessError>) -> Scenario {
    let checks = result.unwrap_or_else(|err| vec![Check::broken(name, "the scenario runs", &err)]);
    let join = |side: fn(&Check) -> &str| checks.iter().map(side).collect::<Vec<_>>().join("; ");
    Entry {
        name: name.to_owned(),
        passed: !checks.is_empty() && checks.iter().all(|c| c.passed),
        detail: Detail {
            expected: join(|c| &c.expected),
            observed: join(|c| &c.observed),
        },
        checks,
    }
}

impl Report {
    /// The scorecard an operator reads: one block per scenario, expected over observed.
    pub fn render(&self) -> String {
        let mut out = String::from("Game-day scorecard\n\n");
        let width = self
            .entries
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        for (number, scenario) in self.entries.iter().enumerate() {
            out.push_str(&format!(
                "{:>2}  {:<width$}  {}\n      expected  {}\n      observed  {}\n",
                number + 1,
                scenario.name,
                crate::verdict(scenario.passed),
                scenario.detail.expected,
                scenario.detail.observed,
            ));
            for check in scenario.checks.iter().filter(|c| !c.passed) {
                out.push_str(&format!(
                    "      FAIL      {}: expected {}; observed {}\n",
                    check.name, check.expected, check.observed
                ));
            }
        }
        if let Some(error) = &self.error {
            out.push_str(&format!("\nscorecard stopped early: {error}\n"));
        }
        out.push_str(&format!(
            "\nscore: {}/{}  {}  ({:.1} s)\n",
            self.totals.score,
            self.totals.total,
            if self.passed { "PASSED" } else { "FAILED" },
            self.duration_secs
        ));
        out
    }
}

/// The gates, the upstream and the credentials every scenario uses.
struct Field {
    launcher: Launcher,
    upstream: RecordingUpstream,
    http: Http,
    /// After retirement: new secret only, strict key ids off.
    main: GateProcess,
    /// Overlap (new + old) with strict key ids.
    strict: GateProcess,
    /// `REQUIRE_SIGNATURE=false`.
    report_only: GateProcess,
    old: Credential,
    new: Credential,
    stranger: Credential,
    quick: bool,
    _workdir: Workdir,
}

impl Field {
    async fn new(program: PathBuf, quick: bool) -> Result<Field, HarnessError> {
        let workdir = Workdir::create("scorecard").map_err(|e| HarnessError::new("work dir", e))?;
        let launcher = Launcher::new(program, &workdir);
        let upstream = RecordingUpstream::start()
            .await
            .map_err(|e| HarnessError::new("starting the upstream", e))?;
        let old = Credential::generate("k1");
        let new = Credential::generate("k2");
        let base = GateEnv::new(&upstream.url()).current(&new);
        let main_env = base
            .clone()
            .set(vars::MAX_BODY_BYTES, MAX_BODY.to_string())
            .set(vars::CLOCK_SKEW_SECS, SKEW_SECS.to_string())
            .set(
                vars::UPSTREAM_TIMEOUT_SECS,
                UPSTREAM_TIMEOUT_SECS.to_string(),
            );
        let strict_env = base.clone().previous(&old).set(vars::STRICT_KEY_ID, "true");
        let report_only_env = base.set(vars::REQUIRE_SIGNATURE, "false");
        let (main, strict, report_only) = tokio::join!(
            launcher.start_running("main gate", &main_env, None),
            launcher.start_running("strict overlap gate", &strict_env, None),
            launcher.start_running("report-only gate", &report_only_env, None),
        );
        let (main, strict, report_only) = (main?, strict?, report_only?);
        for gate in [&main, &strict, &report_only] {
            gate.wait_ready(Duration::from_secs(10)).await?;
        }
        Ok(Field {
            launcher,
            upstream,
            http: Http::new(Duration::from_secs(2)),
            main,
            strict,
            report_only,
            old,
            new,
            stranger: Credential::generate("k2"),
            quick,
            _workdir: workdir,
        })
    }

    fn pause(&self, full: Duration) -> Duration {
        if self.quick { full / 2 } else { full }
    }
}

/// Play the whole scorecard. Never fails: a harness error fails the scenario it happened in.
pub async fn scorecard(program: PathBuf, quick: bool) -> Report {
    let started = Instant::now();
    let mut error = None;
    let mut scenarios = Vec::new();
    match Field::new(program, quick).await {
        Ok(mut field) => scenarios = play(&mut field).await,
        Err(err) => error = Some(format!("setting up the field: {err}")),
    }
    let score = scenarios.iter().filter(|s| s.passed).count();
    Report {
        passed: error.is_none() && !scenarios.is_empty() && score == scenarios.len(),
        totals: Score {
            score,
            total: scenarios.len(),
        },
        duration_secs: report::tenths(started.elapsed()),
        error,
        entries: scenarios,
    }
}

async fn play(field: &mut Field) -> Vec<Scenario> {
    let mut played = Vec::new();
    let mut scenario = |name: &str, result| {
        let scenario = entry(name, result);
        eprintln!(
            "sig-gate scorecard: {} {name}",
            crate::verdict(scenario.passed)
        );
        played.push(scenario);
    };
    let beyond = SKEW_SECS + 100;
    let within = SKEW_SECS - 100;
    scenario(
        &format!("clock skew beyond the window, past (-{beyond} s)"),
        skew(field, -(beyond as i64), true).await,
    );
    scenario(
        &format!("clock skew beyond the window, future (+{beyond} s)"),
        skew(field, beyond as i64, true).await,
    );
    scenario(
        &format!("clock skew within the window, past (-{within} s)"),
        skew(field, -(within as i64), false).await,
    );
    scenario(
        &format!("clock skew within the window, future (+{within} s)"),
        skew(field, within as i64, false).await,
    );
    scenario("replayed request", replay(field).await);
    for tamper in Tamper::ALL {
        scenario(
            &format!("tampered {}", tamper.name()),
            tampered(field, tamper).await,
        );
    }
    scenario("retired secret after retirement", retired(field).await);
    scenario(
        "mislabelled key id under strict mode",
        mislabelled(field).await,
    );
    scenario(
        "unknown key id under strict mode",
        unknown_key_id(field).await,
    );
    scenario(
        "signature without a key id under strict mode",
        missing_key_id(field).await,
    );
    scenario("missing signature", missing_signature(field).await);
    scenario("oversized body", oversized(field).await);
    scenario(
        "batch of malformed signature headers",
        malformed(field).await,
    );
    attacks::play(field, &mut scenario).await;
    identity::play(field, &mut scenario).await;
    store::play(field, &mut scenario).await;
    scenario("upstream down, then recovering", upstream_down(field).await);
    scenario("upstream too slow", upstream_slow(field).await);
    scenario("report-only mode", report_only(field).await);
    scenario(
        "rejection spike visible as a rate on /metrics",
        spike(field).await,
    );
    scenario("SIGTERM under load", sigterm(field).await);
    scenario(
        "redeploy with a bad configuration",
        bad_redeploy(field).await,
    );
    played
}

// ---------------------------------------------------------------------------------------------
// Shared checks.

/// The answer, in [`Reply::summary`] words, prefixed with `what` unless it is the only one.
fn answer(what: &str, reply: &Reply, expected: &str) -> Check {
    let text = |answer: &str| {
        if what == "answer" {
            answer.to_owned()
        } else {
            format!("{what}: {answer}")
        }
    };
    Check::equal(what, text(expected), text(&reply.summary()))
}

/// How often the upstream saw `path`, and with which verified key id.
fn reached(field: &Field, path: &str, times: usize, key_id: Option<&str>) -> Check {
    let describe = |count: usize, key_id: Option<&str>| match (count, key_id) {
        (0, _) => format!("{path} never reached the upstream"),
        (n, Some(id)) => format!("{path} reached the upstream {n}x, verified as {id}"),
        (n, None) => format!("{path} reached the upstream {n}x, no verified key id"),
    };
    let seen = field.upstream.seen(path);
    let expected = describe(times, key_id);
    let observed = describe(seen.count, seen.verified_key_id.as_deref());
    Check::equal(format!("upstream on {path}"), expected, observed)
}

/// A counter's growth between two scrapes, as `name{label} +n`.
fn grew(before: &Scrape, after: &Scrape, metric: &str, label: (&str, &str), by: i64) -> Check {
    let short = metric.trim_start_matches("sig_gate_");
    let text = |n: i64| format!("{short}{{{}=\"{}\"}} +{n}", label.0, label.1);
    let observed = after.count_delta(before, metric, &[label]);
    Check::equal(format!("/metrics {metric}"), text(by), text(observed))
}

fn invalid(before: &Scrape, after: &Scrape, reason: Reason, by: i64) -> Check {
    grew(
        before,
        after,
        "sig_gate_invalid_request_signature_total",
        ("reason", reason.as_str()),
        by,
    )
}

/// Send one call to `gate` between two scrapes.
async fn exchange(
    field: &Field,
    gate: &GateProcess,
    call: &Call,
) -> Result<(Scrape, Reply, Scrape), HarnessError> {
    let before = gate.scrape().await?;
    let reply = field.http.call(gate.proxy_addr(), call).await?;
    let after = gate.scrape().await?;
    Ok((before, reply, after))
}

/// A call the gate must reject with 401 `reason`, count, and never forward.
async fn rejection(
    field: &Field,
    gate: &GateProcess,
    call: &Call,
    reason: Reason,
) -> Result<Vec<Check>, HarnessError> {
    let (before, reply, after) = exchange(field, gate, call).await?;
    Ok(vec![
        answer("answer", &reply, &format!("401 {reason}")),
        invalid(&before, &after, reason, 1),
        reached(field, call.path(), 0, None),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_summaries_join_checks() {
        let scenario = entry(
            "s",
            Ok(vec![Check::equal("a", 1, 1), Check::equal("b", "x", "y")]),
        );
        assert!(!scenario.passed);
        assert_eq!(scenario.detail.expected, "1; x");
        assert_eq!(scenario.detail.observed, "1; y");
        let broken = entry("s", Err(HarnessError("boom".into())));
        assert!(!broken.passed);
        assert!(broken.detail.observed.contains("boom"));
    }
}
