//! The runbook's tools, `sig-gate drill`, `sig-gate scorecard` and `sig-gate advise`, and the
//! harness the first two share: real `sig-gate serve` processes, a real upstream and real
//! clients, all on loopback, and the bookkeeping that turns what they observed into a verdict
//! an operator can trust. Nothing here is simulated: a gate is the binary an operator deploys,
//! started with the environment a deployment would give it, and every verdict compares what a
//! step expects with what the clients, the upstream and the gate's own `/metrics` saw.
//!
//! This crate uses the gate only through the `gate` crate's public API (the signer, the header
//! names, the variable names, the rejection reasons, the clock and the random source); the
//! request path's internals are out of its reach.
//!
//! | module | owns |
//! | --- | --- |
//! | [`drill`] | `sig-gate drill`: the rotation rehearsed under load, by redeploys, by Secret updates one gate reloads (strict key ids and rollback included), and on two replicas sharing Redis; then the migration from the shared secret to a caller's own Ed25519 key, observed, then enforced (`drill/plan.rs` the phases, `drill/score.rs` their checks, `drill/mount.rs` a mounted Secret) |
//! | [`scorecard`] | `sig-gate scorecard`: attack and fault scenarios, one file per family (`scorecard/`) |
//! | [`advise`] | `sig-gate advise`: the runbook's decision checkpoint |
//! | [`process`] | spawning `sig-gate serve` generations (inherited listener or their own socket), readiness, SIGTERM, exit codes, their stderr; one-shot subcommands |
//! | [`redis`] | real `redis-server` processes (and a three-node Redis Cluster) on free loopback ports, for the drill's replicas, the scorecard's replay store scenarios and the integration tests; a missing program is an error that says how to install it |
//! | [`upstream`] | [`upstream::RecordingUpstream`], the one upstream of `sig-gate demo`, the drill, the scorecard and the integration tests: echoes each request as JSON (`upstream/echo.rs`), records it per path and in a bounded ring of full requests (`upstream/record.rs`), holds `/hold` until released, sleeps on `/slow`, streams `/events` (`upstream/events.rs`, also [`upstream::EventStream`]), routes in `upstream/respond.rs`; stops and restarts; or answers with broken framing (`upstream/malformed.rs`) |
//! | [`client`] | credentials, signing a request with a chosen key and label, sending it, reading the answer; raw HTTP/1.1 bytes and connection closes |
//! | [`load`] | the continuous signed stream at a fixed rate, to one gate or round-robin to replicas, with per-phase failures and latencies |
//! | [`exposition`] | parsing the gate's `/metrics` text and diffing two scrapes |
//! | [`report`] | the one report of the drill and the scorecard: verdict, totals, one entry per phase or scenario, and its `--json` shape |
//! | this module | [`Check`] (one expected-versus-observed comparison), [`HarnessError`], [`ToolError`] and table printing |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

pub mod advise;
pub mod client;
pub mod drill;
pub mod exposition;
pub mod load;
pub mod process;
pub mod redis;
pub mod report;
pub mod scorecard;
pub mod upstream;

/// One comparison of what a runbook step expects with what it observed. A step passes when all
/// of its checks pass; both sides are kept as text so the report can show them side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is compared, for example `old-signed request`.
    pub name: String,
    /// What the runbook says should happen.
    pub expected: String,
    /// What happened.
    pub observed: String,
    /// Whether the two agree.
    pub passed: bool,
}

impl Check {
    /// A check whose verdict the caller decided.
    pub fn new(
        name: impl Into<String>,
        expected: impl Into<String>,
        observed: impl Into<String>,
        passed: bool,
    ) -> Check {
        Check {
            name: name.into(),
            expected: expected.into(),
            observed: observed.into(),
            passed,
        }
    }

    /// A check that passes when `observed` equals `expected`.
    pub fn equal<T: PartialEq + fmt::Display>(
        name: impl Into<String>,
        expected: T,
        observed: T,
    ) -> Check {
        let passed = expected == observed;
        Check::new(name, expected.to_string(), observed.to_string(), passed)
    }

    /// A failed check recording that a step could not even be carried out (a process that did
    /// not start, a scrape that did not answer).
    pub fn broken(
        name: impl Into<String>,
        expected: impl Into<String>,
        err: &HarnessError,
    ) -> Check {
        Check::new(name, expected, format!("harness error: {err}"), false)
    }
}

/// The harness itself failed (a socket would not bind, a process would not start, an endpoint
/// did not answer). It fails the step it happened in; the message says what and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HarnessError(pub String);

impl HarnessError {
    /// `what: cause`.
    pub fn new(what: impl fmt::Display, cause: impl fmt::Display) -> HarnessError {
        HarnessError(format!("{what}: {cause}"))
    }
}

/// Why a runbook tool could not do its work. The command line maps it to an exit code: 2 for
/// [`ToolError::Usage`], 1 for [`ToolError::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A flag or input value was refused; the message names it.
    #[error("{0}")]
    Usage(String),
    /// Anything else that went wrong.
    #[error("{0}")]
    Failed(String),
}

/// The runtime the drill and the scorecard run their clients, upstreams and gate processes on.
fn runtime() -> Result<tokio::runtime::Runtime, ToolError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| ToolError::Failed(format!("cannot start the runtime: {err}")))
}

/// The gate binary the drill and the scorecard start: `--gate-bin`, else the running one.
fn gate_program(given: Option<PathBuf>) -> Result<PathBuf, ToolError> {
    match given {
        Some(path) => Ok(path),
        None => std::env::current_exe()
            .map_err(|err| ToolError::Failed(format!("cannot find this binary: {err}"))),
    }
}

/// Print a tool's report, as JSON or as its text, and exit 1 unless it passed.
fn print_verdict<R: Serialize>(
    json: bool,
    report: &R,
    render: impl FnOnce(&R) -> String,
    passed: bool,
) -> ExitCode {
    if json {
        // Plain data (strings, numbers, booleans, maps): serialisation cannot fail.
        println!(
            "{}",
            serde_json::to_string(report).expect("report serialises")
        );
    } else {
        print!("{}", render(report));
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Render rows as a plain-text table: left-aligned columns separated by two spaces, a dashed
/// rule under the header, no trailing spaces. Cells are single-line text.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            out.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(cell.chars().count()),
            ));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&mut header.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&mut rule.iter().map(String::as_str)));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// `pass` or `FAIL`, the verdict column of both reports.
pub fn verdict(passed: bool) -> &'static str {
    if passed { "pass" } else { "FAIL" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_line_ends() {
        let rendered = table(
            &["name", "n"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer".into(), "22".into()],
            ],
        );
        assert_eq!(rendered, "name    n\n------  --\na       1\nlonger  22\n");
    }

    #[test]
    fn equal_checks_compare_and_keep_both_sides() {
        let check = Check::equal("status", 200, 401);
        assert!(!check.passed);
        assert_eq!(
            (check.expected.as_str(), check.observed.as_str()),
            ("200", "401")
        );
        assert!(Check::equal("status", "a", "a").passed);
    }
}
