//! `sig-gate drill` (`make hmac-rotation-drill`): the rotation procedure of the HMAC rotation
//! runbook, rehearsed with real `sig-gate serve` processes and a real upstream on loopback,
//! under a continuous stream of signed requests from a client that follows its own rollout.
//!
//! The drill binds the proxy socket once and hands it to every gate generation as fd 3
//! (`LISTEN_FDS=1`), as systemd socket activation would. A redeploy starts the new generation,
//! waits for its `/readyz`, switches the client to its next signing mode while both
//! generations serve (so either order of signer and gate redeploys is exercised), then
//! SIGTERMs the old generation, which drains and must exit 0. Each phase then sends probes
//! (requests signed the ways the runbook says must be accepted or rejected), lets the stream
//! run, and compares the gate's own `/metrics` over the phase's window with what the phase
//! expects: verified requests per secret slot, every invalid-signature reason, the configuration
//! it reports. Any non-2xx answer or connection error on the stream fails the drill.
//!
//! Phases: 1 current state (old secret), 2 overlap (new + previous, strict key ids off),
//! 3 overlap with strict key ids, 4 retirement (new only), 5 rollback rehearsal (back into the
//! overlap, then back to the old secret alone).
//!
//! This file runs the drill and renders its report; `drill/plan.rs` holds the five phases (the
//! deployments, signing modes and probes), `drill/score.rs` turns a phase's probes, `/metrics`
//! and stream samples into its checks and summary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::ToolError;
use crate::client::{Call, Credential, Http, Reply};
use crate::exposition::Scrape;
use crate::load::Load;
use crate::process::{GateProcess, Launcher, Workdir};
use crate::report::{self, Entry, Totals};
use crate::upstream::RecordingUpstream;
use crate::{Check, HarnessError};

mod plan;
mod score;

use plan::{Expect, Names, Step, plan};
use score::{describe_probe, exit_check, expected_probe, metric_checks, summarise};

/// The stream's floor, from the runbook: at least 200 signed requests a second.
pub const MIN_RATE: u32 = 200;

/// Seconds each phase runs under load in full mode (five phases and six redeploys fit well
/// inside the 90 s budget).
const FULL_PHASE_SECS: u64 = 9;
/// Seconds each phase runs with `--quick`.
const QUICK_PHASE_SECS: u64 = 2;

/// How long the old and the new generation both serve before the old one is told to drain.
const BOTH_SERVING: Duration = Duration::from_millis(250);

/// Drain limit given to every generation (`GATE_SHUTDOWN_GRACE_SECS`).
const GRACE_SECS: u64 = 10;

/// Flags of `sig-gate drill`.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Print one JSON object on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Shorter phases (same phases, probes and checks): what `make test` runs.
    #[arg(long)]
    pub quick: bool,
    /// Signed requests per second of the continuous stream (at least 200).
    #[arg(long, default_value_t = 250)]
    pub rate: u32,
    /// Seconds each phase runs under load [default: 9, or 2 with --quick].
    #[arg(long)]
    pub phase_secs: Option<u64>,
    /// The sig-gate binary to drill [default: this one].
    #[arg(long)]
    pub gate_bin: Option<PathBuf>,
}

/// Run the drill; exit 0 when every phase passed, 1 otherwise.
pub fn run(args: DrillArgs) -> Result<ExitCode, ToolError> {
    if args.rate < MIN_RATE {
        return Err(ToolError::Usage(format!(
            "--rate: {} is below the drill's floor of {MIN_RATE} requests a second",
            args.rate
        )));
    }
    let phase_secs = args.phase_secs.unwrap_or(if args.quick {
        QUICK_PHASE_SECS
    } else {
        FULL_PHASE_SECS
    });
    if !(1..=600).contains(&phase_secs) {
        return Err(ToolError::Usage(format!(
            "--phase-secs: {phase_secs} is outside 1..=600"
        )));
    }
    let program = crate::gate_program(args.gate_bin)?;
    let settings = Settings {
        program,
        rate: args.rate,
        phase: Duration::from_secs(phase_secs),
        progress: true,
    };
    let report = crate::runtime()?.block_on(async {
        tokio::select! {
            report = drill(&settings) => report,
            () = gate::server::shutdown_signal() => Report::aborted(Stream::none(&settings), "interrupted"),
        }
    });
    Ok(crate::print_verdict(
        args.json,
        &report,
        Report::render,
        report.passed,
    ))
}

/// What the drill runs against and how hard.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `sig-gate` binary started for every generation.
    pub program: PathBuf,
    /// Requests per second of the stream.
    pub rate: u32,
    /// Time under load per phase.
    pub phase: Duration,
    /// Print progress lines on stderr.
    pub progress: bool,
}

/// The drill's verdict: what `--json` prints (`passed`, the [`Stream`] totals,
/// `duration_secs`, `error` when the drill stopped early, `phases`). It passes when every
/// phase passed and no legitimate request failed.
pub type Report = report::Report<Stream, PhaseDetail>;

/// One phase's results.
pub type PhaseReport = Entry<PhaseDetail>;

/// The drill's totals over the continuous stream.
#[derive(Debug, Serialize)]
pub struct Stream {
    /// Requests of the continuous stream that failed (non-2xx or connection error).
    pub failed_requests: usize,
    /// Requests the continuous stream sent.
    pub stream_requests: usize,
    /// Target rate of the stream, requests per second.
    pub rate_target: u32,
    /// Gate generations replaced under load.
    pub redeploys: usize,
}

impl Totals for Stream {
    const ENTRIES: &'static str = "phases";
}

/// What a phase's entry tells beyond its name (for example `2 overlap`), verdict and checks.
#[derive(Debug, Serialize)]
pub struct PhaseDetail {
    /// The gate configuration(s) deployed in this phase.
    pub gate: String,
    /// How the client signs in this phase.
    pub client: String,
    /// Requests sent in the phase: the stream plus the probes.
    pub requests: usize,
    /// Of those, answered 2xx.
    pub accepted: usize,
    /// Probes answered 401, by reason.
    pub rejected: BTreeMap<String, usize>,
    /// Stream requests that failed.
    pub failed: usize,
    /// Achieved stream rate, requests per second.
    pub rate: f64,
    /// Stream latency, median, milliseconds.
    pub p50_ms: f64,
    /// Stream latency, 99th percentile, milliseconds.
    pub p99_ms: f64,
}

impl Stream {
    /// The totals of a drill that sent nothing.
    fn none(settings: &Settings) -> Stream {
        Stream {
            failed_requests: 0,
            stream_requests: 0,
            rate_target: settings.rate,
            redeploys: 0,
        }
    }
}

impl Report {
    /// The tables an operator reads.
    pub fn render(&self) -> String {
        let mut out = format!(
            "HMAC rotation drill: real gates on one inherited socket, a signed stream of {} \
             req/s, redeployed between phases\n\n",
            self.totals.rate_target
        );
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|p| {
                let rejected = if p.detail.rejected.is_empty() {
                    "-".to_owned()
                } else {
                    p.detail
                        .rejected
                        .iter()
                        .map(|(reason, n)| format!("{reason}={n}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                vec![
                    p.name.clone(),
                    p.detail.requests.to_string(),
                    format!("{:.0}", p.detail.rate),
                    p.detail.accepted.to_string(),
                    rejected,
                    format!("{:.1}", p.detail.p50_ms),
                    format!("{:.1}", p.detail.p99_ms),
                    p.detail.failed.to_string(),
                    crate::verdict(p.passed).to_owned(),
                ]
            })
            .collect();
        out.push_str(&crate::table(
            &[
                "phase",
                "requests",
                "req/s",
                "accepted",
                "rejected by reason",
                "p50 ms",
                "p99 ms",
                "failed",
                "result",
            ],
            &rows,
        ));
        out.push_str(
            "\nrequests: the stream plus the phase's probes; rejected: probes the runbook says \
             must be rejected; failed: stream requests answered non-2xx or lost to a connection \
             error.\n/metrics checks compare two scrapes of the phase's own gate: after the \
             previous generation exited, and at the end of the phase.\n",
        );
        for phase in &self.entries {
            out.push_str(&format!(
                "\n{}  [{}]\n  gate: {}\n  client: {}\n",
                phase.name,
                crate::verdict(phase.passed),
                phase.detail.gate,
                phase.detail.client
            ));
            for check in &phase.checks {
                out.push_str(&format!(
                    "  {:<4}  {}: expected {}; observed {}\n",
                    if check.passed { "ok" } else { "FAIL" },
                    check.name,
                    check.expected,
                    check.observed
                ));
            }
        }
        if let Some(error) = &self.error {
            out.push_str(&format!("\ndrill stopped early: {error}\n"));
        }
        out.push_str(&format!(
            "\n{}: {}/{} phases passed; {} of {} stream requests failed across {} redeploys \
             ({:.1} s)\n",
            if self.passed {
                "DRILL PASSED"
            } else {
                "DRILL FAILED"
            },
            self.score(),
            self.entries.len(),
            self.totals.failed_requests,
            self.totals.stream_requests,
            self.totals.redeploys,
            self.duration_secs
        ));
        out
    }
}

/// Everything the phases share.
struct Rig {
    launcher: Launcher,
    /// The proxy socket every generation inherits; the drill never accepts on it.
    listener: std::net::TcpListener,
    proxy: SocketAddr,
    upstream: RecordingUpstream,
    http: Http,
    settings: Settings,
    _workdir: Workdir,
}

impl Rig {
    async fn new(settings: &Settings) -> Result<Rig, HarnessError> {
        let workdir = Workdir::create("drill").map_err(|e| HarnessError::new("work dir", e))?;
        let listener = gate::server::bind_reuseport("127.0.0.1:0".parse().expect("literal"))
            .map_err(|e| HarnessError::new("binding the shared proxy socket", e))?;
        let proxy = listener
            .local_addr()
            .map_err(|e| HarnessError::new("shared proxy socket", e))?;
        let upstream = RecordingUpstream::start()
            .await
            .map_err(|e| HarnessError::new("starting the upstream", e))?;
        Ok(Rig {
            launcher: Launcher::new(settings.program.clone(), &workdir),
            listener,
            proxy,
            upstream,
            http: Http::new(Duration::from_secs(2)),
            settings: settings.clone(),
            _workdir: workdir,
        })
    }

    fn progress(&self, line: &str) {
        if self.settings.progress {
            eprintln!("sig-gate drill: {line}");
        }
    }
}

/// What happened in one phase, before it is summarised.
#[derive(Default)]
struct PhaseRun {
    checks: Vec<Check>,
    replies: Vec<Reply>,
    started: Option<Instant>,
}

/// Run the whole drill. Never fails: a harness error ends the drill early and fails it.
pub async fn drill(settings: &Settings) -> Report {
    let started = Instant::now();
    let names = Names {
        old: Credential::generate("k1"),
        new: Credential::generate("k2"),
        stranger: Credential::generate("k2"),
    };
    let phases = plan(&names);
    let mut runs: Vec<PhaseRun> = phases.iter().map(|_| PhaseRun::default()).collect();
    let mut redeploys = 0;
    let mut error = None;
    let mut samples = Vec::new();

    match Rig::new(settings).await {
        Err(err) => error = Some(err.to_string()),
        Ok(rig) => {
            let mut live: Option<GateProcess> = None;
            let mut load: Option<Load> = None;
            'phases: for (index, (phase, run)) in phases.iter().zip(&mut runs).enumerate() {
                rig.progress(&format!("phase {}", phase.name));
                run.started = Some(Instant::now());
                if let Some(load) = &load {
                    load.set_phase(index);
                }
                let dwell_total = settings.phase;
                for (number, step) in phase.steps.iter().enumerate() {
                    let dwell = dwell_total * step.share / 100;
                    let at = (index, number);
                    let outcome =
                        run_step(&rig, step, at, dwell, live.take(), &mut load, run).await;
                    match outcome {
                        Ok((gate, replaced)) => {
                            live = Some(gate);
                            redeploys += usize::from(replaced);
                        }
                        Err((still_live, err)) => {
                            live = still_live;
                            error = Some(format!("{}: {err}", phase.name));
                            run.checks
                                .push(Check::broken(step.label, "the step runs", &err));
                            break 'phases;
                        }
                    }
                }
            }
            if let Some(load) = load {
                samples = load.stop().await;
            }
            if let Some(mut gate) = live {
                let exit = gate.stop(Duration::from_secs(GRACE_SECS + 5)).await;
                if let Some(run) = runs.iter_mut().rev().find(|r| r.started.is_some()) {
                    run.checks.push(exit_check(&gate, exit));
                }
            }
            rig.progress("done");
        }
    }

    let reports: Vec<PhaseReport> = phases
        .iter()
        .zip(runs)
        .enumerate()
        .map(|(index, (phase, run))| summarise(&names, index, phase, run, &samples, settings))
        .collect();
    let failed_requests = samples.iter().filter(|s| s.failure.is_some()).count();
    Report {
        passed: error.is_none() && failed_requests == 0 && reports.iter().all(|p| p.passed),
        totals: Stream {
            failed_requests,
            stream_requests: samples.len(),
            rate_target: settings.rate,
            redeploys,
        },
        duration_secs: report::tenths(started.elapsed()),
        error,
        entries: reports,
    }
}

/// Deploy one generation: start it on the shared socket, wait until ready, switch the client,
/// SIGTERM the previous generation and check it drained, then probe, dwell under load, and
/// compare the generation's `/metrics` over the window with what the step expects. Returns the
/// new live generation and whether it replaced one; on a harness error, the generation that
/// still serves (if any) and the error.
async fn run_step(
    rig: &Rig,
    step: &Step,
    (phase, number): (usize, usize),
    dwell: Duration,
    previous: Option<GateProcess>,
    load: &mut Option<Load>,
    run: &mut PhaseRun,
) -> Result<(GateProcess, bool), (Option<GateProcess>, HarnessError)> {
    let env = step.deployment.env(&rig.upstream.url());
    let multi = number > 0 || step.share < 100;
    let name = if multi {
        format!(
            "phase {}{} gate",
            phase + 1,
            char::from(b'a' + number as u8)
        )
    } else {
        format!("phase {} gate", phase + 1)
    };
    let named = |what: &str| {
        if multi {
            format!("{}: {what}", step.label)
        } else {
            what.to_owned()
        }
    };
    let gate = match rig
        .launcher
        .start_running(&name, &env, Some(&rig.listener))
        .await
    {
        Ok(gate) => gate,
        Err(err) => return Err((previous, err)),
    };
    if let Err(err) = gate.wait_ready(Duration::from_secs(10)).await {
        return Err((previous, err));
    }
    run.checks.push(Check::new(
        named(&format!("{name} ready")),
        "/readyz 200",
        "/readyz 200",
        true,
    ));
    match load {
        Some(load) => load.set_signer(step.client.clone()),
        None => {
            let stream = Load::start(rig.proxy, rig.settings.rate, step.client.clone(), "drill");
            stream.set_phase(phase);
            *load = Some(stream);
        }
    }
    let replaced = previous.is_some();
    if let Some(mut old) = previous {
        tokio::time::sleep(BOTH_SERVING).await;
        let exit = old.stop(Duration::from_secs(GRACE_SECS + 5)).await;
        run.checks.push(exit_check(&old, exit));
    }

    let first = match timed_scrape(&gate).await {
        Ok(scrape) => scrape,
        Err(err) => return Err((Some(gate), err)),
    };
    let mut expected_accepted = [0i64; 2];
    let mut expected_rejected: BTreeMap<&'static str, i64> = BTreeMap::new();
    for (n, probe) in step.probes.iter().enumerate() {
        let path = format!("/drill/phase{}/step{number}/probe{n}", phase + 1);
        let call = Call::signed_post(path.clone(), &probe.signer);
        let (expected, observed) = match rig.http.call(rig.proxy, &call).await {
            Ok(reply) => {
                let seen = rig.upstream.seen(&path);
                let observed = describe_probe(&reply, seen.count, seen.verified_key_id.as_deref());
                run.replies.push(reply);
                (expected_probe(&probe.expect), observed)
            }
            Err(err) => (expected_probe(&probe.expect), format!("error: {err}")),
        };
        match &probe.expect {
            Expect::Accepted { slot, .. } => expected_accepted[*slot as usize] += 1,
            Expect::Rejected(reason) => *expected_rejected.entry(reason.as_str()).or_default() += 1,
        }
        run.checks.push(Check::equal(
            named(&format!("probe {}", probe.name)),
            expected,
            observed,
        ));
    }

    let elapsed = first.0.at.elapsed();
    if elapsed < dwell {
        tokio::time::sleep(dwell - elapsed).await;
    }
    let second = match timed_scrape(&gate).await {
        Ok(scrape) => scrape,
        Err(err) => return Err((Some(gate), err)),
    };
    let bounds = load
        .as_ref()
        .map_or((0, 0), |load| load.counted_between(first.1, second.1));
    run.checks.extend(metric_checks(
        step,
        &named,
        &first.0,
        &second.0,
        bounds,
        expected_accepted,
        &expected_rejected,
    ));
    Ok((gate, replaced))
}

/// A scrape with the instants its request was sent and its answer arrived.
async fn timed_scrape(gate: &GateProcess) -> Result<(Scrape, (Instant, Instant)), HarnessError> {
    let sent = Instant::now();
    let scrape = gate.scrape().await?;
    Ok((scrape, (sent, Instant::now())))
}
