//! `sig-gate scorecard` (`make game-day-scorecard`): attack and fault scenarios played against
//! real `sig-gate serve` processes in front of a real upstream on loopback, each scored by
//! comparing what the runbook expects with what the client, the upstream and the gate's own
//! `/metrics` observed.
//!
//! The field: a gate after retirement (new secret only, strict key ids off, a 16 KiB body
//! limit, a 1 s upstream timeout, the default 300 s clock-skew window), a gate in the overlap
//! with strict key ids, a report-only gate, and for the shutdown scenario a gate of its own;
//! the attacks on the request path (`scorecard/attacks.rs`) start two more.
//! Scenarios run one after another, so each one's counter deltas are its own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http::Method;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::CliError;
use crate::config::vars;
use crate::proxy::unix_now;
use crate::runbook::client::{Call, Connection, Credential, Http, Reply};
use crate::runbook::exposition::Scrape;
use crate::runbook::gate::{GateEnv, GateProcess, Launcher, Start, Workdir};
use crate::runbook::load::{Load, Stats};
use crate::runbook::upstream::Upstream;
use crate::runbook::{self, Check, HarnessError};
use crate::sign::Signer;
use crate::verify::Reason;

mod attacks;

/// Body limit of the main gate (`GATE_MAX_BODY_BYTES`).
const MAX_BODY: usize = 16 * 1024;
/// Clock-skew window of the main gate (`GATE_CLOCK_SKEW_SECS`, the default).
const SKEW_SECS: u64 = 300;
/// Upstream timeout of the main gate (`GATE_UPSTREAM_TIMEOUT_SECS`).
const UPSTREAM_TIMEOUT_SECS: u64 = 1;
/// Requests of the rejection spike.
const SPIKE: usize = 100;
/// Lowest rejection rate, per second, that counts as a visible spike.
const SPIKE_RATE: f64 = 20.0;
/// Requests per second of the stream in the shutdown and bad-redeploy scenarios.
const LOAD_RATE: u32 = 250;
/// Connections of the shutdown scenario's stream (each paced at `LOAD_RATE / CONNECTIONS`).
const CONNECTIONS: u32 = 8;
/// Requests held in the upstream when SIGTERM arrives.
const HELD: usize = 4;

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
pub fn run(args: ScorecardArgs) -> Result<ExitCode, CliError> {
    let program = super::gate_program(args.gate_bin)?;
    let report = super::runtime()?.block_on(async {
        tokio::select! {
            report = scorecard(program, args.quick) => report,
            () = crate::server::shutdown_signal() => Report::aborted("interrupted"),
        }
    });
    Ok(super::print_verdict(
        args.json,
        &report,
        Report::render,
        report.passed,
    ))
}

/// The scorecard: what `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Every scenario passed.
    pub passed: bool,
    /// Scenarios passed.
    pub score: usize,
    /// Scenarios played.
    pub total: usize,
    /// Wall time, seconds.
    pub duration_secs: f64,
    /// Why the game stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One entry per scenario, in order.
    pub scenarios: Vec<Scenario>,
}

/// One scenario's verdict.
#[derive(Debug, Serialize)]
pub struct Scenario {
    /// What is attacked or broken.
    pub name: String,
    /// Every check passed.
    pub passed: bool,
    /// The expected outcome (the checks' expectations).
    pub expected: String,
    /// The observed outcome (the checks' observations).
    pub observed: String,
    /// The individual comparisons.
    pub checks: Vec<Check>,
}

impl Scenario {
    fn new(name: &str, result: Result<Vec<Check>, HarnessError>) -> Scenario {
        let checks =
            result.unwrap_or_else(|err| vec![Check::broken(name, "the scenario runs", &err)]);
        let join =
            |side: fn(&Check) -> &str| checks.iter().map(side).collect::<Vec<_>>().join("; ");
        Scenario {
            name: name.to_owned(),
            passed: !checks.is_empty() && checks.iter().all(|c| c.passed),
            expected: join(|c| &c.expected),
            observed: join(|c| &c.observed),
            checks,
        }
    }
}

impl Report {
    fn aborted(why: &str) -> Report {
        Report {
            passed: false,
            score: 0,
            total: 0,
            duration_secs: 0.0,
            error: Some(why.to_owned()),
            scenarios: Vec::new(),
        }
    }

    /// The scorecard an operator reads: one block per scenario, expected over observed.
    pub fn render(&self) -> String {
        let mut out = String::from("Game-day scorecard\n\n");
        let width = self
            .scenarios
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        for (number, scenario) in self.scenarios.iter().enumerate() {
            out.push_str(&format!(
                "{:>2}  {:<width$}  {}\n      expected  {}\n      observed  {}\n",
                number + 1,
                scenario.name,
                runbook::verdict(scenario.passed),
                scenario.expected,
                scenario.observed,
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
            self.score,
            self.total,
            if self.passed { "PASSED" } else { "FAILED" },
            self.duration_secs
        ));
        out
    }
}

/// The gates, the upstream and the credentials every scenario uses.
struct Field {
    launcher: Launcher,
    upstream: Upstream,
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
        let upstream = Upstream::start()
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
        score,
        total: scenarios.len(),
        duration_secs: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        error,
        scenarios,
    }
}

async fn play(field: &mut Field) -> Vec<Scenario> {
    let mut played = Vec::new();
    let mut scenario = |name: &str, result| {
        let scenario = Scenario::new(name, result);
        eprintln!(
            "sig-gate scorecard: {} {name}",
            runbook::verdict(scenario.passed)
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

// ---------------------------------------------------------------------------------------------
// Scenarios.

async fn skew(field: &Field, offset: i64, stale: bool) -> Result<Vec<Check>, HarnessError> {
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

async fn replay(field: &Field) -> Result<Vec<Check>, HarnessError> {
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
enum Tamper {
    Body,
    Path,
    Query,
    Method,
}

impl Tamper {
    const ALL: [Tamper; 4] = [Tamper::Body, Tamper::Path, Tamper::Query, Tamper::Method];

    fn name(self) -> &'static str {
        match self {
            Tamper::Body => "body",
            Tamper::Path => "path",
            Tamper::Query => "query",
            Tamper::Method => "method",
        }
    }
}

async fn tampered(field: &Field, tamper: Tamper) -> Result<Vec<Check>, HarnessError> {
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

async fn retired(field: &Field) -> Result<Vec<Check>, HarnessError> {
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

async fn mislabelled(field: &Field) -> Result<Vec<Check>, HarnessError> {
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

async fn unknown_key_id(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let call = Call::signed_post("/game/unknown-key-id", &field.new.relabelled("k9").signer());
    rejection(field, &field.strict, &call, Reason::UnknownKeyId).await
}

async fn missing_key_id(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let call =
        Call::signed_post("/game/missing-key-id", &field.new.signer()).without("x-gate-key-id");
    rejection(field, &field.strict, &call, Reason::MissingKeyId).await
}

async fn missing_signature(field: &Field) -> Result<Vec<Check>, HarnessError> {
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

async fn oversized(field: &Field) -> Result<Vec<Check>, HarnessError> {
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

/// Ways to break a signed request's headers, each of which the contract calls malformed.
fn malformed_variants(signed: &Call) -> Vec<(&'static str, Call)> {
    let signature = signed
        .header_value("x-gate-signature")
        .unwrap_or_default()
        .to_owned();
    let timestamp = signed
        .header_value("x-gate-timestamp")
        .unwrap_or_default()
        .to_owned();
    let entry = |key_id: &str| format!(r#"{{"key_id":"{key_id}","signature":"{signature}"}}"#);
    let five = vec![entry("k2"); 5].join(",");
    let base = || signed.clone();
    vec![
        (
            "uppercase hex signature",
            base().replace("x-gate-signature", &signature.to_uppercase()),
        ),
        (
            "63-char signature",
            base().replace("x-gate-signature", &signature[..63]),
        ),
        (
            "non-hex signature",
            base().replace("x-gate-signature", &"g".repeat(64)),
        ),
        (
            "timestamp with a letter",
            base().replace(
                "x-gate-timestamp",
                &format!("{}x", &timestamp[..timestamp.len() - 1]),
            ),
        ),
        (
            "13-digit timestamp",
            base().replace("x-gate-timestamp", "1000000000000"),
        ),
        (
            "signed timestamp",
            base().replace("x-gate-timestamp", &format!("+{timestamp}")),
        ),
        (
            "15-char nonce",
            base().replace("x-gate-nonce", "abcdefghijklmno"),
        ),
        (
            "nonce with a bad character",
            base().replace("x-gate-nonce", "nonce!nonce!nonce!"),
        ),
        (
            "key id with a bad character",
            base().replace("x-gate-key-id", "k2/admin"),
        ),
        (
            "65-char key id",
            base().replace("x-gate-key-id", &"k".repeat(65)),
        ),
        (
            "signatures not JSON",
            base().replace("x-gate-signatures", "[not json"),
        ),
        (
            "signatures with 5 entries",
            base().replace("x-gate-signatures", &format!("[{five}]")),
        ),
        (
            "signatures empty array",
            base().replace("x-gate-signatures", "[]"),
        ),
        (
            "signatures entry with an extra field",
            base().replace(
                "x-gate-signatures",
                &format!(r#"[{{"key_id":"k2","signature":"{signature}","alg":"none"}}]"#),
            ),
        ),
        (
            "two X-Gate-Signature headers",
            base().header("x-gate-signature", &signature),
        ),
        (
            "two X-Gate-Timestamp headers",
            base().header("x-gate-timestamp", &timestamp),
        ),
        (
            "signature without a timestamp",
            base().without("x-gate-timestamp"),
        ),
        ("signature without a nonce", base().without("x-gate-nonce")),
    ]
}

async fn malformed(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let path = "/game/malformed";
    let before = field.main.scrape().await?;
    let mut wrong = Vec::new();
    let variants = malformed_variants(&Call::signed_post(path, &field.new.signer()));
    let total = variants.len();
    for (name, call) in &variants {
        let reply = field.http.call(field.main.proxy_addr(), call).await?;
        if reply.summary() != "401 malformed_signature" {
            wrong.push(format!("{name}: {}", reply.summary()));
        }
    }
    let after = field.main.scrape().await?;
    let observed = if wrong.is_empty() {
        format!("{total}/{total} answered 401 malformed_signature")
    } else {
        format!(
            "{}/{total} answered 401 malformed_signature; {}",
            total - wrong.len(),
            wrong.join(", ")
        )
    };
    Ok(vec![
        Check::new(
            "answers",
            format!("{total}/{total} answered 401 malformed_signature"),
            observed,
            wrong.is_empty(),
        ),
        invalid(&before, &after, Reason::MalformedSignature, total as i64),
        reached(field, path, 0, None),
    ])
}

async fn upstream_down(field: &mut Field) -> Result<Vec<Check>, HarnessError> {
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

async fn upstream_slow(field: &Field) -> Result<Vec<Check>, HarnessError> {
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

async fn report_only(field: &Field) -> Result<Vec<Check>, HarnessError> {
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

async fn spike(field: &Field) -> Result<Vec<Check>, HarnessError> {
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

/// What one connection of the shutdown scenario saw.
#[derive(Debug, Default)]
struct Lane {
    sent: usize,
    failures: Vec<String>,
    /// Requests sent before the SIGTERM and answered after it.
    in_flight_at_sigterm: usize,
    /// Requests sent after the SIGTERM.
    sent_after_sigterm: usize,
    /// How the connection ended.
    end: LaneEnd,
    started: Vec<Instant>,
}

/// How a connection of the shutdown scenario ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum LaneEnd {
    /// Still open when the scenario stopped it (the gate never drained it).
    #[default]
    Stopped,
    /// An answer carried `Connection: close`: the drain let the client leave on a response.
    CloseAnswer,
    /// The gate closed the connection while it was idle: a client sending at that moment
    /// would have lost its request (the keep-alive race a drain must avoid).
    ClosedWhileIdle,
    /// A request failed.
    Failed,
}

/// A paced request loop on one connection, until the gate closes it or `stop`. Even lanes'
/// requests wait 20 ms in the upstream, so they are in flight when SIGTERM comes. Odd lanes'
/// answer at once; once `hush` is set they park until SIGTERM and send their next request
/// 50 ms into the drain, so their connections are certainly idle at the signal and then used
/// during the drain (the moment a drain that closes idle connections outright loses them).
async fn lane(
    addr: std::net::SocketAddr,
    signer: Signer,
    pace: Duration,
    sigterm: watch::Receiver<Option<Instant>>,
    hush: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    index: u32,
) -> Lane {
    let parks = index % 2 == 1;
    let mut lane = Lane::default();
    let mut connection = match Connection::open(addr).await {
        Ok(connection) => connection,
        Err(err) => {
            lane.failures.push(err);
            return lane;
        }
    };
    let mut ticks = tokio::time::interval(pace);
    for n in 0.. {
        ticks.tick().await;
        if *stop.borrow() {
            break;
        }
        if parks && *hush.borrow() && sigterm.borrow().is_none() {
            let _ = sigterm.clone().wait_for(Option::is_some).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !connection.usable().await {
            lane.end = LaneEnd::ClosedWhileIdle;
            break;
        }
        let target = if parks {
            format!("/game/lane{index}?n={n}")
        } else {
            format!("/slow/lane{index}?ms=20&n={n}")
        };
        let call = Call::signed_post(target, &signer);
        let started = Instant::now();
        lane.sent += 1;
        lane.started.push(started);
        let result = connection.send(&call, Duration::from_secs(5)).await;
        let term = *sigterm.borrow();
        if term.is_some_and(|t| started <= t) && term.is_some_and(|t| Instant::now() > t) {
            lane.in_flight_at_sigterm += 1;
        }
        if term.is_some_and(|t| started > t) {
            lane.sent_after_sigterm += 1;
        }
        match result {
            Ok(reply) if reply.status.is_success() => {
                if reply.closes() {
                    lane.end = LaneEnd::CloseAnswer;
                    break;
                }
            }
            Ok(reply) => lane.failures.push(format!("status {}", reply.summary())),
            Err(err) => {
                lane.failures.push(format!("connection error: {err}"));
                lane.end = LaneEnd::Failed;
                break;
            }
        }
    }
    lane
}

async fn sigterm(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let env = GateEnv::new(&field.upstream.url())
        .current(&field.new)
        .set(vars::SHUTDOWN_GRACE_SECS, "10");
    let mut gate = field
        .launcher
        .start_running("shutdown gate", &env, None)
        .await?;
    gate.wait_ready(Duration::from_secs(10)).await?;
    let addr = gate.proxy_addr();
    let (sigterm_tx, sigterm_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (hush_tx, hush_rx) = watch::channel(false);
    let pace = Duration::from_secs(1) / (LOAD_RATE / CONNECTIONS);
    let mut lanes = JoinSet::new();
    for index in 0..CONNECTIONS {
        lanes.spawn(lane(
            addr,
            field.new.signer(),
            pace,
            sigterm_rx.clone(),
            hush_rx.clone(),
            stop_rx.clone(),
            index,
        ));
    }
    let load_start = Instant::now();
    tokio::time::sleep(field.pause(Duration::from_secs(2))).await;

    // Requests held in the upstream when the signal arrives, each on its own connection.
    let held_path = "/slow/held";
    let mut held = JoinSet::new();
    for _ in 0..HELD {
        let signer = field.new.signer();
        held.spawn(async move {
            let call = Call::signed_post(format!("{held_path}?ms=1500"), &signer);
            let mut connection = Connection::open(addr).await?;
            connection.send(&call, Duration::from_secs(10)).await
        });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while field.upstream.seen(held_path).count < HELD && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let holding = field.upstream.seen(held_path).count;

    // Park the idle lanes; their last quick request is long done after 100 ms.
    let _ = hush_tx.send(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    let _ = sigterm_tx.send(Some(signalled));
    gate.terminate()?;
    let mut readyz = None;
    let ready_deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < ready_deadline {
        match gate.probe("/readyz").await {
            Ok(503) => {
                readyz = Some(503);
                break;
            }
            Ok(status) => readyz = Some(status),
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut held_answers = Vec::new();
    while let Some(result) = held.join_next().await {
        held_answers.push(match result {
            Ok(Ok(reply)) => reply.summary(),
            Ok(Err(err)) => format!("error: {err}"),
            Err(err) => format!("error: {err}"),
        });
    }
    let exit = gate.wait_exit(Duration::from_secs(15)).await;
    let drained_in = signalled.elapsed();
    let _ = stop_tx.send(true);
    let mut results = Vec::new();
    while let Some(result) = lanes.join_next().await {
        results.push(result.map_err(|e| HarnessError::new("load lane", e))?);
    }

    let sent: usize = results.iter().map(|l| l.sent).sum();
    let failures: Vec<&String> = results.iter().flat_map(|l| &l.failures).collect();
    let in_flight: usize = results.iter().map(|l| l.in_flight_at_sigterm).sum();
    let before_term = results
        .iter()
        .flat_map(|l| &l.started)
        .filter(|t| **t <= signalled)
        .count();
    let rate = before_term as f64 / (signalled - load_start).as_secs_f64();
    let ends = |end: LaneEnd| results.iter().filter(|l| l.end == end).count();
    let told_to_close = ends(LaneEnd::CloseAnswer);
    let closed_idle = ends(LaneEnd::ClosedWhileIdle);
    let sent_after: usize = results.iter().map(|l| l.sent_after_sigterm).sum();
    let held_ok = held_answers.iter().filter(|a| *a == "200").count();
    let exit_text = match exit {
        Ok(Some(code)) => format!("exit {code}"),
        Ok(None) => "killed by a signal".to_owned(),
        Err(err) => format!("harness error: {err}"),
    };
    Ok(vec![
        Check::new(
            "load before SIGTERM",
            format!(
                ">= {} req/s on {CONNECTIONS} keep-alive connections",
                LOAD_RATE * 4 / 5
            ),
            format!("{rate:.0} req/s on {CONNECTIONS} keep-alive connections"),
            rate >= f64::from(LOAD_RATE * 4 / 5),
        ),
        Check::new(
            "requests held in the upstream at SIGTERM",
            format!("{HELD} held, {HELD} answered 200"),
            format!(
                "{holding} held, {held_ok} answered 200 ({})",
                held_answers.join(", ")
            ),
            holding == HELD && held_ok == HELD,
        ),
        Check::new(
            "every request sent",
            "0 failed",
            if failures.is_empty() {
                format!("0 failed of {sent}, {in_flight} of them in flight at SIGTERM")
            } else {
                format!(
                    "{} failed of {sent}: {}",
                    failures.len(),
                    failures
                        .iter()
                        .take(5)
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            },
            failures.is_empty(),
        ),
        Check::new(
            "keep-alive connections during the drain",
            format!("{CONNECTIONS} of {CONNECTIONS} ended by a Connection: close answer"),
            format!(
                "{told_to_close} of {CONNECTIONS} ended by a Connection: close answer, \
                 {closed_idle} closed under the client while idle \
                 ({sent_after} requests sent after SIGTERM)"
            ),
            told_to_close == CONNECTIONS as usize,
        ),
        Check::equal(
            "/readyz while draining",
            "/readyz 503 while draining".to_owned(),
            format!(
                "/readyz {} while draining",
                readyz.map_or("unreachable".to_owned(), |s| s.to_string())
            ),
        ),
        Check::new(
            "exit after the drain",
            "exit 0 within the grace period",
            format!("{exit_text} after {} ms", drained_in.as_millis()),
            exit_text == "exit 0",
        ),
    ])
}

async fn bad_redeploy(field: &Field) -> Result<Vec<Check>, HarnessError> {
    let gate = &field.main;
    let running = GateEnv::new(&field.upstream.url())
        .current(&field.new)
        .set(vars::LISTEN, gate.proxy_addr().to_string());
    let weak = "too-short-secret-20b";
    let attempts = [
        (
            "previous secret equal to the current one",
            running
                .clone()
                .previous(&field.new.relabelled(field.old.key_id())),
            vars::SECRET_PREV,
        ),
        (
            "secret shorter than 32 bytes",
            running.clone().set(vars::SECRET, weak),
            vars::SECRET,
        ),
        (
            "unparsable clock skew",
            running.clone().set(vars::CLOCK_SKEW_SECS, "five"),
            vars::CLOCK_SKEW_SECS,
        ),
        (
            "misspelled boolean",
            running.clone().set(vars::STRICT_KEY_ID, "ture"),
            vars::STRICT_KEY_ID,
        ),
    ];
    let stream = Load::start(
        gate.proxy_addr(),
        LOAD_RATE,
        field.new.signer(),
        "game/redeploy",
    );
    let started = Instant::now();
    let mut checks = Vec::new();
    for (what, env, var) in &attempts {
        let observed = match field.launcher.start(what, env, None).await {
            Ok(Start::Refused { code, stderr }) => {
                let leaked = stderr.contains(field.new.secret()) || stderr.contains(weak);
                let names = stderr.contains(var);
                format!(
                    "exit {}{}{}",
                    code.map_or("by signal".to_owned(), |c| c.to_string()),
                    if names {
                        format!(", names {var}")
                    } else {
                        format!(", does not name {var}: {stderr}")
                    },
                    if leaked {
                        ", SECRET IN THE MESSAGE"
                    } else {
                        ""
                    },
                )
            }
            Ok(Start::Running(mut started)) => {
                let _ = started.stop(Duration::from_secs(5)).await;
                "started serving".to_owned()
            }
            Err(err) => format!("harness error: {err}"),
        };
        checks.push(Check::equal(
            format!("redeploy with {what}"),
            format!("exit 2, names {var}"),
            observed,
        ));
    }
    let minimum = field.pause(Duration::from_secs(2));
    if let Some(rest) = minimum.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let samples = stream.stop().await;
    let stats = Stats::of(&samples);
    let readyz = gate.probe("/readyz").await?;
    checks.push(Check::new(
        "running gate keeps serving",
        "stream 0 failed, /readyz 200",
        format!(
            "stream {} failed of {}{}, /readyz {readyz}",
            stats.failed,
            stats.requests,
            if stats.failed > 0 {
                format!(" ({})", stats.first_failures.join("; "))
            } else {
                String::new()
            }
        ),
        stats.failed == 0 && stats.requests > 0 && readyz == 200,
    ));
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_variants_differ_from_the_signed_request() {
        let credential = Credential::generate("k2");
        let signed = Call::signed_post("/x", &credential.dual_signer(&Credential::generate("k1")));
        let variants = malformed_variants(&signed);
        assert!(variants.len() >= 15);
        let base = format!(
            "{:?}",
            signed
                .request("127.0.0.1:9".parse().expect("addr"))
                .headers()
        );
        for (name, call) in variants {
            let headers = format!(
                "{:?}",
                call.request("127.0.0.1:9".parse().expect("addr")).headers()
            );
            assert_ne!(headers, base, "{name} changes nothing");
        }
    }

    #[test]
    fn scenario_summaries_join_checks() {
        let scenario = Scenario::new(
            "s",
            Ok(vec![Check::equal("a", 1, 1), Check::equal("b", "x", "y")]),
        );
        assert!(!scenario.passed);
        assert_eq!(scenario.expected, "1; x");
        assert_eq!(scenario.observed, "1; y");
        let broken = Scenario::new("s", Err(HarnessError("boom".into())));
        assert!(!broken.passed);
        assert!(broken.observed.contains("boom"));
    }
}
