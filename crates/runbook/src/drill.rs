//! `sig-gate drill` (`make hmac-rotation-drill`): the rotation procedure of the HMAC rotation
//! runbook, rehearsed with real `sig-gate serve` processes and a real upstream on loopback,
//! under a continuous stream of signed requests from a client that follows its own rollout.
//!
//! The drill binds the proxy socket once and hands it to every redeployed gate generation as
//! fd 3 (`LISTEN_FDS=1`), as systemd socket activation would. A redeploy starts the new
//! generation, waits for its `/readyz`, switches the client to its next signing mode while both
//! generations serve (so either order of signer and gate redeploys is exercised), then SIGTERMs
//! the old generation, which drains and must exit 0. A Secret update publishes a new version of
//! a mounted Secret the way the kubelet does (a `..data` symlink swapped to a new directory);
//! the one running gate must reload it (on the file change, or on SIGHUP), stay the same
//! process, and count the reload before the client switches. Each step then sends probes
//! (requests signed the ways the runbook says must be accepted or rejected), lets the stream
//! run, and compares each serving gate's own `/metrics` over the step's window with what the
//! step expects: verified requests per secret slot or per key, every invalid-signature reason,
//! the configuration and keys it reports (every switch of the client first waits until the
//! requests it sent the old way have answered, so a window holds the new mode only). Any
//! non-2xx answer or connection error on the stream fails the drill.
//!
//! Phases: 1 current state (old secret), 2 overlap (new + previous, strict key ids off),
//! 3 overlap with strict key ids, 4 retirement (new only), 5 rollback rehearsal (back into the
//! overlap, then back to the old secret alone), all by redeploys; then the rotation again
//! without restarts: 6 the handover to keys in a mounted Secret (a key registry, version 2
//! signatures), 7 overlap by a Secret update (file watch), 8 strict key ids by SIGHUP
//! (no key changes: registry keys are bound to their ids), 9 retirement by a Secret update,
//! 10 rollback rehearsal by Secret updates; 11 two replicas sharing one Redis replay store,
//! the stream round-robin between them, a request accepted by one replayed to the other; and
//! the migration from the shared secret to the caller's own Ed25519 key: 12 a registry beside
//! the shared secret (redeploy), 13 the key observed (Secret update), 14 the observe window
//! (no change: only `valid` may grow), 15 the key enforced (Secret update and SIGHUP), 16 the
//! shared secret retired (redeploy).
//!
//! This file runs the drill and renders its report; `drill/plan.rs` holds the phases (the
//! deployments, how each is put in place, signing modes and probes), `drill/score.rs` turns a
//! phase's probes, `/metrics` and stream samples into its checks and summary, and
//! `drill/mount.rs` is a mounted Secret. Phase 11's Redis is the harness's
//! ([`crate::redis::RedisServer`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::ToolError;
use crate::client::{Call, Http, Reply};
use crate::exposition::Scrape;
use crate::load::Load;
use crate::process::{GateProcess, Launcher, Workdir};
use crate::redis::RedisServer;
use crate::report::{self, Entry, Totals};
use crate::upstream::RecordingUpstream;
use crate::{Check, HarnessError};

mod mount;
mod plan;
mod score;

use mount::MountedSecret;
use plan::{Change, Expect, Names, Observed, REGISTRY, Step, plan};
use score::{Expected, describe_probe, exit_check, expected_probe, metric_checks, summarise};

/// The stream's floor, from the runbook: at least 200 signed requests a second.
pub const MIN_RATE: u32 = 200;

/// Seconds each phase runs under load in full mode (sixteen phases, the redeploys and the
/// reloads fit in about three minutes).
const FULL_PHASE_SECS: u64 = 9;
/// Seconds each phase runs with `--quick`.
const QUICK_PHASE_SECS: u64 = 2;

/// How long the old and the new generation both serve before the old one is told to drain.
const BOTH_SERVING: Duration = Duration::from_millis(250);

/// Drain limit given to every generation (`GATE_SHUTDOWN_GRACE_SECS`).
const GRACE_SECS: u64 = 10;

/// How long a new generation may take to answer `/readyz` 200 (and a replica to see Redis).
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How long a Secret update may take to be reloaded: the documented 10 seconds, with room for
/// a debug build on a busy machine. The check shows the time it took.
const RELOAD_WITHIN: Duration = Duration::from_secs(30);

/// How long a switch of the client waits for the requests it sent the old way: past the
/// stream's own request timeout, after which they have failed anyway.
const SETTLE_WITHIN: Duration = Duration::from_secs(6);

/// The replicas' names in the report, in round-robin order.
const REPLICA_NAMES: [&str; 2] = ["A", "B"];

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
    /// Gate generations replaced under load (redeploys, and the switch to the replicas).
    pub redeploys: usize,
    /// Secret updates made under load, each one the running gate must reload without a
    /// restart.
    pub reloads: usize,
}

impl Totals for Stream {
    const ENTRIES: &'static str = "phases";
}

/// What a phase's entry tells beyond its name (for example `2 overlap`), verdict and checks.
#[derive(Debug, Serialize)]
pub struct PhaseDetail {
    /// The gate configuration(s) in force in this phase.
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
            reloads: 0,
        }
    }
}

impl Report {
    /// The tables an operator reads.
    pub fn render(&self) -> String {
        let mut out = format!(
            "HMAC rotation drill: real gates under a signed stream of {} req/s; phases 1-5 \
             redeploy on one inherited socket, 6-10 update a mounted Secret that one gate \
             reloads, 11 runs two replicas sharing Redis, 12-16 migrate the caller from the \
             shared secret to its own Ed25519 key\n\n",
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
             error.\n/metrics checks compare two scrapes of each gate serving the step: once \
             the step is in force (the previous generation exited, or the reload counted), and \
             at the end of the step.\n",
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
             and {} reloads ({:.1} s)\n",
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
            self.totals.reloads,
            self.duration_secs
        ));
        out
    }
}

/// Everything the phases share.
struct Rig {
    launcher: Launcher,
    /// The proxy socket every redeployed generation inherits; the drill never accepts on it.
    listener: std::net::TcpListener,
    proxy: SocketAddr,
    upstream: RecordingUpstream,
    http: Http,
    settings: Settings,
    workdir: Workdir,
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
            workdir,
        })
    }

    fn progress(&self, line: &str) {
        if self.settings.progress {
            eprintln!("sig-gate drill: {line}");
        }
    }
}

/// What runs between steps: the serving gates, the stream, the mounted Secrets, the Redis.
#[derive(Default)]
struct Live {
    /// One generation on the shared socket, or the replicas.
    gates: Vec<GateProcess>,
    load: Option<Load>,
    /// The mounted Secrets published so far, by name ([`plan::Deployment::secret`]).
    mounts: BTreeMap<&'static str, MountedSecret>,
    redis: Option<RedisServer>,
    /// The gate that reads the mounted Secret, while it serves.
    reloading: Option<Reloading>,
}

/// The one gate of the reload phases: its pid at the handover, and the reloads it has counted
/// (its `sig_gate_reload_total{result="ok"}`, which a restarted process would count from 0).
struct Reloading {
    pid: Option<u32>,
    reloads: i64,
}

/// What happened in one phase, before it is summarised.
#[derive(Default)]
struct PhaseRun {
    checks: Vec<Check>,
    replies: Vec<Reply>,
    started: Option<Instant>,
    /// The replicas' proxy addresses, when the phase runs replicas.
    replicas: Vec<SocketAddr>,
}

/// What the steps changed, for the totals.
#[derive(Default)]
struct Counts {
    redeploys: usize,
    reloads: usize,
}

/// Run the whole drill. Never fails: a harness error ends the drill early and fails it.
pub async fn drill(settings: &Settings) -> Report {
    let started = Instant::now();
    let names = Names::generate();
    let phases = plan(&names);
    let mut runs: Vec<PhaseRun> = phases.iter().map(|_| PhaseRun::default()).collect();
    let mut counts = Counts::default();
    let mut error = None;
    let mut samples = Vec::new();

    match Rig::new(settings).await {
        Err(err) => error = Some(err.to_string()),
        Ok(rig) => {
            let mut live = Live::default();
            'phases: for (index, (phase, run)) in phases.iter().zip(&mut runs).enumerate() {
                rig.progress(&format!("phase {}", phase.name));
                run.started = Some(Instant::now());
                if let Some(load) = &live.load {
                    load.set_phase(index);
                }
                for (number, step) in phase.steps.iter().enumerate() {
                    let dwell = settings.phase * step.share / 100;
                    let at = (index, number);
                    if let Err(err) =
                        run_step(&rig, step, at, dwell, &mut live, run, &mut counts).await
                    {
                        error = Some(format!("{}: {err}", phase.name));
                        run.checks
                            .push(Check::broken(step.label, "the step runs", &err));
                        break 'phases;
                    }
                }
            }
            if let Some(load) = live.load.take() {
                samples = load.stop().await;
            }
            let last = runs.iter_mut().rev().find(|r| r.started.is_some());
            let mut exits = Vec::new();
            for mut gate in std::mem::take(&mut live.gates) {
                let exit = gate.stop(Duration::from_secs(GRACE_SECS + 5)).await;
                exits.push(exit_check(&gate, exit));
            }
            if let Some(run) = last {
                run.checks.extend(exits);
            }
            if let Some(redis) = live.redis.take() {
                // Dropping kills it and waits for the exit: a blocking wait, off the runtime.
                let _ = tokio::task::spawn_blocking(move || drop(redis)).await;
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
            redeploys: counts.redeploys,
            reloads: counts.reloads,
        },
        duration_secs: report::tenths(started.elapsed()),
        error,
        entries: reports,
    }
}

/// Put one step in force (see [`Change`]), then probe, dwell under load, and compare each
/// serving gate's `/metrics` over the window with what the step expects. A harness error ends
/// the step; `live` keeps whatever still serves.
async fn run_step(
    rig: &Rig,
    step: &Step,
    (phase, number): (usize, usize),
    dwell: Duration,
    live: &mut Live,
    run: &mut PhaseRun,
    counts: &mut Counts,
) -> Result<(), HarnessError> {
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
    match step.change {
        Change::Redeploy { client_first } => {
            if redeploy(rig, step, &name, client_first, live, run, &named).await? {
                counts.redeploys += 1;
            }
        }
        Change::SecretUpdate { hangup } => {
            secret_update(step, hangup, live, run, &named).await?;
            counts.reloads += 1;
        }
        Change::Replicas => {
            replicas(rig, step, phase, live, run, &named).await?;
            counts.redeploys += 1;
        }
        Change::Hold => {}
    }
    let load = live
        .load
        .as_ref()
        .ok_or_else(|| HarnessError::new(step.label, "the stream is not running"))?;
    let replicated = step.change == Change::Replicas;
    let targets: Vec<SocketAddr> = if replicated {
        live.gates.iter().map(GateProcess::proxy_addr).collect()
    } else {
        vec![rig.proxy]
    };

    let mut firsts = Vec::new();
    for gate in &live.gates {
        firsts.push(timed_scrape(gate).await?);
    }
    let gates = live.gates.len().max(1);
    let mut expected = vec![Expected::default(); gates];
    let mut calls: Vec<Call> = Vec::new();
    for (n, probe) in step.probes.iter().enumerate() {
        let call = match probe.replays.and_then(|i| calls.get(i)) {
            Some(original) => original.clone(),
            None => Call::signed_post(
                format!("/drill/phase{}/step{number}/probe{n}", phase + 1),
                &probe.signer,
            ),
        };
        let replica = probe.replica.min(targets.len() - 1);
        let path = call.path().to_owned();
        let before = rig.upstream.seen(&path).count;
        let observed = match rig.http.call(targets[replica], &call).await {
            Ok(reply) => {
                let seen = rig.upstream.seen(&path);
                let caller = seen
                    .headers
                    .get(gate::protocol::VERIFIED_CALLER)
                    .and_then(|value| value.to_str().ok());
                let observed = describe_probe(
                    &reply,
                    seen.count.saturating_sub(before),
                    seen.verified_key_id.as_deref(),
                    caller,
                );
                run.replies.push(reply);
                observed
            }
            Err(err) => format!("error: {err}"),
        };
        let expected = &mut expected[replica.min(gates - 1)];
        match &probe.expect {
            Expect::Accepted { key_id } => {
                *expected.accepted.entry(key_id.clone()).or_default() += 1;
            }
            Expect::Rejected(reason) => {
                *expected.rejected.entry(reason.as_str()).or_default() += 1;
            }
        }
        match probe.observed {
            Some(Observed::Valid) => expected.observed_valid += 1,
            Some(Observed::Invalid) => expected.observed_invalid += 1,
            None => {}
        }
        run.checks.push(Check::equal(
            named(&format!("probe {}", probe.name)),
            expected_probe(&probe.expect, &step.deployment),
            observed,
        ));
        calls.push(call);
    }

    if let Some((first, _)) = firsts.first() {
        let elapsed = first.at.elapsed();
        if elapsed < dwell {
            tokio::time::sleep(dwell - elapsed).await;
        }
    }
    for (index, (gate, first)) in live.gates.iter().zip(&firsts).enumerate() {
        let second = timed_scrape(gate).await?;
        let bounds = if replicated {
            load.counted_between_at(gate.proxy_addr(), first.1, second.1)
        } else {
            load.counted_between(first.1, second.1)
        };
        let prefix = if replicated {
            format!(
                "replica {}: ",
                REPLICA_NAMES[index.min(REPLICA_NAMES.len() - 1)]
            )
        } else {
            String::new()
        };
        let named_here = |what: &str| named(&format!("{prefix}{what}"));
        run.checks.extend(metric_checks(
            step,
            &named_here,
            &first.0,
            &second.0,
            bounds,
            &expected[index.min(gates - 1)],
        ));
    }
    Ok(())
}

/// Start a generation on the shared socket, wait until ready, switch the client, SIGTERM the
/// generations before it and check each drained. A deployment on the mounted Secret gets its
/// files published first. Whether it replaced a generation.
async fn redeploy(
    rig: &Rig,
    step: &Step,
    name: &str,
    client_first: bool,
    live: &mut Live,
    run: &mut PhaseRun,
    named: &dyn Fn(&str) -> String,
) -> Result<bool, HarnessError> {
    let registry = publish(rig, step, live)?;
    if client_first && let Some(load) = &live.load {
        load.set_signer(step.client.clone());
        load.settle(SETTLE_WITHIN).await;
    }
    let env = step
        .deployment
        .env(&rig.upstream.url(), &registry.to_string_lossy(), None);
    let gate = rig
        .launcher
        .start_running(name, &env, Some(&rig.listener))
        .await?;
    gate.wait_ready(READY_WITHIN).await?;
    run.checks.push(Check::new(
        named(&format!("{name} ready")),
        "/readyz 200",
        "/readyz 200",
        true,
    ));
    match &live.load {
        Some(load) => {
            // One switch: a move from the replicas may change the keys as well as the gate.
            load.switch(step.client.clone(), vec![rig.proxy]);
            load.settle(SETTLE_WITHIN).await;
        }
        None => {
            let stream = Load::start(rig.proxy, rig.settings.rate, step.client.clone(), "drill");
            stream.set_phase(0);
            live.load = Some(stream);
        }
    }
    live.reloading = step.deployment.mounted().then(|| Reloading {
        pid: gate.pid(),
        reloads: 0,
    });
    let previous = std::mem::replace(&mut live.gates, vec![gate]);
    let replaced = !previous.is_empty();
    drain(previous, run).await;
    Ok(replaced)
}

/// SIGTERM each of `gates` after both old and new have served a moment; check each exits 0.
async fn drain(gates: Vec<GateProcess>, run: &mut PhaseRun) {
    if gates.is_empty() {
        return;
    }
    tokio::time::sleep(BOTH_SERVING).await;
    for mut old in gates {
        let exit = old.stop(Duration::from_secs(GRACE_SECS + 5)).await;
        run.checks.push(exit_check(&old, exit));
    }
}

/// Write the step's version of its mounted Secret unless it is the one in force; the
/// registry's path (empty for a deployment without a mounted Secret).
fn publish(rig: &Rig, step: &Step, live: &mut Live) -> Result<std::path::PathBuf, HarnessError> {
    let Some(secret) = step.deployment.secret() else {
        return Ok(std::path::PathBuf::new());
    };
    let files = step.deployment.files();
    let fail = |e: std::io::Error| HarnessError::new("updating the mounted Secret", e);
    if !live.mounts.contains_key(secret) {
        let mount = MountedSecret::create(rig.workdir.path().join(secret)).map_err(fail)?;
        live.mounts.insert(secret, mount);
    }
    let mount = live.mounts.get_mut(secret).expect("inserted above");
    if !mount.holds(&files) {
        mount.update(files).map_err(fail)?;
    }
    Ok(mount.path(REGISTRY))
}

/// Publish the step's Secret version to the running gate, SIGHUP it when the step says so,
/// wait until it reloaded, and check it is the same process as at the handover.
async fn secret_update(
    step: &Step,
    hangup: bool,
    live: &mut Live,
    run: &mut PhaseRun,
    named: &dyn Fn(&str) -> String,
) -> Result<(), HarnessError> {
    let (Some(gate), 1) = (live.gates.first(), live.gates.len()) else {
        return Err(HarnessError::new(
            step.label,
            "needs exactly one serving gate",
        ));
    };
    let Some(reloading) = live.reloading.as_mut() else {
        return Err(HarnessError::new(
            step.label,
            "the serving gate does not read the mounted Secret",
        ));
    };
    let before = gate.scrape().await?;
    let reloads = |scrape: &Scrape, result: &str| {
        scrape
            .value_or_zero("sig_gate_reload_total", &[("result", result)])
            .round() as i64
    };
    let (ok_before, errors_before) = (reloads(&before, "ok"), reloads(&before, "error"));
    // The drill never restarts it; these show the gate did not restart either (a wrapper
    // given as --gate-bin could): one `listening` line, and counters that never reset.
    let started = log_lines(gate, "listening", None);
    run.checks.push(Check::equal(
        named(&format!(
            "the gate of the handover (pid {}) still serving: `listening` log lines",
            pid_text(reloading.pid)
        )),
        1,
        started,
    ));
    run.checks.push(Check::equal(
        named(concat!(
            "/metrics sig_gate_reload_total{result=\"ok\"} before the update ",
            "(every update since the handover; a restart would reset it)"
        )),
        reloading.reloads,
        ok_before,
    ));

    let mount = step
        .deployment
        .secret()
        .and_then(|secret| live.mounts.get_mut(secret))
        .ok_or_else(|| HarnessError::new(step.label, "no mounted Secret"))?;
    let triggered = reload_lines(gate, hangup);
    let updated = Instant::now();
    mount
        .update(step.deployment.files())
        .map_err(|e| HarnessError::new("updating the mounted Secret", e))?;
    if hangup {
        gate.hang_up()?;
    }
    let trigger = if hangup { "SIGHUP" } else { "key file changed" };
    let after = loop {
        let now = gate.scrape().await?;
        if reloads(&now, "ok") > ok_before && reload_lines(gate, hangup) > triggered {
            break now;
        }
        if reloads(&now, "error") > errors_before {
            break now;
        }
        if updated.elapsed() > RELOAD_WITHIN {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = updated.elapsed();
    let ok_after = reloads(&after, "ok");
    reloading.reloads = ok_after;
    run.checks.push(Check::new(
        named("/metrics sig_gate_reload_total{result=\"ok\"}: the update reloaded"),
        format!(
            "{} or more (documented: in force within 10 s)",
            ok_before + 1
        ),
        format!("{ok_after} after {:.1} s", took.as_secs_f64()),
        ok_after > ok_before,
    ));
    run.checks.push(Check::equal(
        named("/metrics sig_gate_reload_total{result=\"error\"}"),
        errors_before,
        reloads(&after, "error"),
    ));
    let logged = reload_lines(gate, hangup) > triggered;
    run.checks.push(Check::new(
        named("the gate's log: keys reloaded"),
        format!("trigger {trigger}"),
        if logged {
            format!("trigger {trigger}")
        } else {
            format!(
                "no `keys reloaded` line by {trigger}; last lines: {}",
                gate.log_tail().join(" | ")
            )
        },
        logged,
    ));
    if let Some(load) = &live.load {
        load.set_signer(step.client.clone());
        load.settle(SETTLE_WITHIN).await;
    }
    Ok(())
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "(exited)".to_owned(), |pid| pid.to_string())
}

/// How many `keys reloaded` lines the gate's log holds with the trigger a SIGHUP (`hangup`)
/// or a changed file gives.
fn reload_lines(gate: &GateProcess, hangup: bool) -> usize {
    let trigger = if hangup { "SIGHUP" } else { "key file changed" };
    log_lines(gate, "keys reloaded", Some(trigger))
}

/// How many lines of the gate's log (its latest lines, JSON) have this message and, when
/// given, this `trigger` field.
fn log_lines(gate: &GateProcess, message: &str, trigger: Option<&str>) -> usize {
    gate.log_tail()
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| {
            event.get("message").and_then(|m| m.as_str()) == Some(message)
                && trigger.is_none_or(|t| event.get("trigger").and_then(|v| v.as_str()) == Some(t))
        })
        .count()
}

/// Start a Redis and two replicas sharing it, each on its own port with the mounted Secret;
/// once both are ready and see the store, send the stream round-robin to them and drain the
/// generation on the shared socket.
async fn replicas(
    rig: &Rig,
    step: &Step,
    phase: usize,
    live: &mut Live,
    run: &mut PhaseRun,
    named: &dyn Fn(&str) -> String,
) -> Result<(), HarnessError> {
    let registry = publish(rig, step, live)?;
    // A server that cannot start is an error (naming scripts/install-redis.sh when the program
    // is missing): the step fails, once.
    let redis = tokio::task::spawn_blocking(|| RedisServer::start(&[]))
        .await
        .map_err(|e| HarnessError::new("starting redis-server", e))??;
    run.checks.push(Check::new(
        named("redis-server on a free loopback port"),
        "answers PING",
        format!("{} answers PING", redis.url()),
        true,
    ));
    let env = step.deployment.env(
        &rig.upstream.url(),
        &registry.to_string_lossy(),
        Some(&redis.url()),
    );
    live.redis = Some(redis);
    let start = |replica: &str| {
        let name = format!("phase {} replica {replica}", phase + 1);
        let env = &env;
        async move {
            let gate = rig.launcher.start_running(&name, env, None).await?;
            gate.wait_ready(READY_WITHIN).await?;
            wait_store_up(&gate).await?;
            Ok::<_, HarnessError>(gate)
        }
    };
    let [a, b] = REPLICA_NAMES;
    let (a, b) = tokio::try_join!(start(a), start(b))?;
    let started = vec![a, b];
    for gate in &started {
        run.checks.push(Check::new(
            named(&format!("{} ready", gate.name())),
            "/readyz 200, sig_gate_replay_store_up 1",
            "/readyz 200, sig_gate_replay_store_up 1",
            true,
        ));
    }
    let targets: Vec<SocketAddr> = started.iter().map(GateProcess::proxy_addr).collect();
    let load = live
        .load
        .as_ref()
        .ok_or_else(|| HarnessError::new(step.label, "the stream is not running"))?;
    load.set_signer(step.client.clone());
    load.set_targets(targets.clone());
    load.settle(SETTLE_WITHIN).await;
    run.replicas = targets;
    live.reloading = None;
    let previous = std::mem::replace(&mut live.gates, started);
    drain(previous, run).await;
    Ok(())
}

/// Wait until the gate reports its replay store up (it connects at start-up).
async fn wait_store_up(gate: &GateProcess) -> Result<(), HarnessError> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let up = gate.scrape().await?.value("sig_gate_replay_store_up", &[]);
        if up == Some(1.0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(HarnessError::new(
                format!("{}: sig_gate_replay_store_up", gate.name()),
                format!("{up:?}, not 1 within {} s", READY_WITHIN.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scrape with the instants its request was sent and its answer arrived.
async fn timed_scrape(gate: &GateProcess) -> Result<(Scrape, (Instant, Instant)), HarnessError> {
    let sent = Instant::now();
    let scrape = gate.scrape().await?;
    Ok((scrape, (sent, Instant::now())))
}
