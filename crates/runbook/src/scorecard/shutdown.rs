//! The scorecard's lifecycle scenarios: SIGTERM under a stream of signed requests (held
//! requests finish, the gate drains and exits 0) and a redeploy with a bad configuration (the
//! new generation refuses to start, the old one keeps serving).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Field;
use crate::client::{Call, Connection};
use crate::load::{Load, Stats};
use crate::process::{GateEnv, Start};
use crate::{Check, HarnessError};
use gate::config::vars;
use gate::sign::Signer;

/// Requests per second of the stream in the shutdown and bad-redeploy scenarios.
const LOAD_RATE: u32 = 250;
/// Connections of the shutdown scenario's stream (each paced at `LOAD_RATE / CONNECTIONS`).
const CONNECTIONS: u32 = 8;
/// Requests held in the upstream when SIGTERM arrives.
const HELD: usize = 4;

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

pub(super) async fn sigterm(field: &Field) -> Result<Vec<Check>, HarnessError> {
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

pub(super) async fn bad_redeploy(field: &Field) -> Result<Vec<Check>, HarnessError> {
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
