//! Black-box tests of `sig-gate drill` and `sig-gate scorecard` as an operator (and outside
//! tests) run them: exit codes, and `--json` printing exactly one JSON object with the
//! documented fields (README, "Commands"). The quick runs start real gate processes on loopback
//! (and the drill a redis-server, which `make test-rust` installs with scripts/install-redis.sh).

use std::process::{Command, Output};
use std::sync::Mutex;

/// The two quick runs each drive a steady stream of requests; running them one at a time keeps
/// their rate and latency checks meaningful on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn sig_gate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sig-gate"))
        .args(args)
        .output()
        .expect("run sig-gate")
}

/// Stdout must be one JSON object and nothing else.
fn one_json_object(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout");
    assert_eq!(stdout.trim_end().lines().count(), 1, "one line: {stdout}");
    let value: serde_json::Value = serde_json::from_str(&stdout).expect("JSON stdout");
    assert!(value.is_object(), "{value}");
    value
}

fn show(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn usage_errors_exit_2_naming_the_flag() {
    let output = sig_gate(&["drill", "--rate", "50"]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--rate"));

    let output = sig_gate(&["drill", "--phase-secs", "0"]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--phase-secs"));

    let output = sig_gate(&["scorecard", "--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));

    for command in ["drill", "scorecard"] {
        let output = sig_gate(&[command, "--help"]);
        assert_eq!(output.status.code(), Some(0), "{}", show(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("--json"));
    }
}

#[test]
fn quick_drill_passes_with_the_documented_json() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let output = sig_gate(&["drill", "--quick", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report = one_json_object(&output);
    assert_eq!(report["passed"], true);
    assert_eq!(report["failed_requests"], 0);
    assert!(report["stream_requests"].as_u64().expect("count") > 1000);
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "1 current state",
            "2 overlap",
            "3 overlap, strict key ids",
            "4 retirement",
            "5 rollback rehearsal",
            "6 keys in a mounted Secret",
            "7 overlap by Secret update",
            "8 strict key ids by SIGHUP",
            "9 retirement by Secret update",
            "10 rollback rehearsal by Secret updates",
            "11 two replicas sharing Redis",
            "12 migration: shared secret, registry on the gate",
            "13 migration: Ed25519 key observed",
            "14 migration: observe shows only valid",
            "15 migration: Ed25519 key enforced",
            "16 migration: shared secret retired",
        ]
    );
    // Phases 7, 8, 9, 10 (twice), 13 and 15 are Secret updates; 2-5 (5 twice), 6, 11, 12
    // and 16 replace the serving generation.
    assert_eq!(report["reloads"], 7, "{report}");
    assert_eq!(report["redeploys"], 9, "{report}");
    for phase in phases {
        assert_eq!(phase["passed"], true, "{phase}");
        assert!(phase["rate"].as_f64().expect("rate") >= 200.0, "{phase}");
        assert!(!phase["checks"].as_array().expect("checks").is_empty());
    }
}

#[test]
fn quick_scorecard_passes_with_the_documented_json() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let output = sig_gate(&["scorecard", "--quick", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report = one_json_object(&output);
    assert_eq!(report["passed"], true);
    // Every scenario docs/operations.md lists ("Game day: the scorecard") was played.
    assert_eq!(report["total"].as_u64(), Some(SCENARIOS), "{report}");
    assert_eq!(report["score"].as_u64(), Some(SCENARIOS));
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len() as u64, SCENARIOS);
    for scenario in scenarios {
        assert!(scenario["name"].is_string());
        assert_eq!(scenario["passed"], true, "{scenario}");
        assert!(scenario["expected"].is_string() && scenario["observed"].is_string());
    }
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    for family in [
        // Signature version 2 and the key registry (scorecard/identity.rs).
        "version 2 request replayed to a gate of another audience",
        "caller key used after a reload removed it",
        "spoofed X-Gate-Verified-Caller in any spelling",
        "algorithm confusion: HMAC keyed with an Ed25519 public key",
        "observe key never grants access",
        "one caller's key claiming another caller's key id",
        // The shared replay store on a real redis-server (scorecard/store.rs).
        "replay to another replica sharing the store",
        "replay after a gate restart",
        "replay store down, then back",
    ] {
        assert!(names.contains(&family), "{family} was played: {names:?}");
    }
}

/// Scenarios of the whole scorecard: the rows of docs/operations.md's table, with the clock
/// skew, tampering and key id rows counted once per case they name.
const SCENARIOS: u64 = 43;
