//! `sig-gate advise` (`make hmac-migration-advice`): the runbook's decision checkpoint. Reads
//! the runbook's seven migration triggers (README, "Commands") from the environment (each may be
//! overridden by a flag), counts how many hold, and advises migrating from the shared HMAC
//! secret to per-service identities when at least [`MIGRATION_THRESHOLD`] do.
//!
//! The work is split so that tests need no environment: [`TRIGGERS`] describes the triggers,
//! [`assess`] turns a lookup function plus flag overrides into an [`Assessment`], and
//! [`render_table`] / [`render_json`] turn that into text. Only [`run`] touches the process
//! environment and stdout.
//!
//! Value rules, the same for a flag and its environment variable:
//! - unset, empty or only whitespace: the trigger does not hold and is shown as unset
//!   (`"value": null` in JSON); an empty flag (`--auth-teams ''`) thus clears the variable;
//! - surrounding whitespace is ignored;
//! - counts are whole numbers written as ASCII digits only (`8`; not `8.0`, `+8`, `1e1`), so
//!   a value that was computed as a fraction is caught instead of silently rounded;
//! - `AUDITABILITY_SCORE` is a finite decimal number within [0, 1] (`0.85`, `1`, `.9`);
//! - `ZERO_TRUST_TARGET` takes the boolean spellings of the gate's configuration;
//! - anything else is a usage error (exit 2) naming the flag, or the variable when no flag
//!   was given. A flag wins over its variable, which is then not read at all.
//!
//! Both verdicts exit 0: advice is not a failure.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::ToolError;
use gate::config::parse_bool;

/// Migration is advised when at least this many of the triggers hold (runbook: "any 3 of
/// these 7").
pub const MIGRATION_THRESHOLD: usize = 3;

/// The decision checkpoint's triggers, in the order of the runbook, the table and the JSON
/// `triggers` array. [`AdviseArgs::overrides`] returns its flags in this same order.
pub const TRIGGERS: [Trigger; 7] = [
    Trigger {
        name: "AUTH_SERVICES",
        flag: "--auth-services",
        threshold: Threshold::AtLeast(8),
    },
    Trigger {
        name: "AUTH_TEAMS",
        flag: "--auth-teams",
        threshold: Threshold::AtLeast(3),
    },
    Trigger {
        name: "HMAC_ROTATIONS_PER_QUARTER",
        flag: "--hmac-rotations-per-quarter",
        threshold: Threshold::AtLeast(4),
    },
    Trigger {
        name: "HMAC_INCIDENTS_90D",
        flag: "--hmac-incidents-90d",
        threshold: Threshold::AtLeast(1),
    },
    Trigger {
        name: "EXTERNAL_VERIFIER_DEPENDENCIES",
        flag: "--external-verifier-dependencies",
        threshold: Threshold::AtLeast(1),
    },
    Trigger {
        name: "ZERO_TRUST_TARGET",
        flag: "--zero-trust-target",
        threshold: Threshold::IsTrue,
    },
    Trigger {
        name: "AUDITABILITY_SCORE",
        flag: "--auditability-score",
        threshold: Threshold::ScoreAtLeast(0.80),
    },
];

/// The phased rollout printed when migration is advised (runbook: "dual-sign verify first,
/// then enforce per-service asymmetric identity"), as this product does it: each caller gets an
/// Ed25519 key in the gate's registry, first as an `observe` key (verified and counted, never
/// granting access), then enforced, then the shared secret is retired. docs/operations.md,
/// "Migrating to per-service Ed25519 identity", walks through the same steps.
pub const MIGRATION_PLAN: [&str; 6] = [
    "Give every gate an audience and a key registry: GATE_AUDIENCE=<this service's name> and \
     GATE_KEYS_FILE=/etc/sig-gate/keys.toml (the shared secret keeps working: it is caller \
     `shared` in every version). Reloads need no restart: SIGHUP, or just update the files.",
    "For each calling service: `sig-gate keygen --ed25519 --out <caller>.pem` (PKCS#8, mode \
     0600; prints the public key), store the PEM as that caller's Secret, and add to the \
     registry: [[key]] id = \"<caller>-ed25519-1\", caller = \"<caller>\", alg = \"ed25519\", \
     public_key = \"<printed key>\", observe = true.",
    "Dual-sign: each caller signs version 2 with the shared secret and adds the observe \
     signature: GATE_SIGNING_KEY_ID=<the shared secret's key id, e.g. current>, \
     GATE_SIGNING_KEY_FILE=<file holding the shared secret>, GATE_AUDIENCE=<the gate's \
     audience>, GATE_OBSERVE_KEY_ID=<caller>-ed25519-1, GATE_OBSERVE_KEY_FILE=<caller>.pem \
     (sig-gate sign, the Python or TypeScript client).",
    "Verify before enforcing: sig_gate_identity_observed_total{caller,key_id,result} must show \
     only result=\"valid\" for every caller, under real traffic, for at least a day; any \
     `invalid` names the caller to fix first.",
    "Enforce, one caller at a time: in the registry set observe = false for its key, and switch \
     the caller to GATE_SIGNING_KEY_ID=<caller>-ed25519-1, GATE_SIGNING_KEY_FILE=<caller>.pem, \
     GATE_SIGNING_ALG=ed25519 (version 2); sig_gate_verified_key_total{caller,key_id,alg} shows \
     the key admitting its requests, and X-Gate-Verified-Caller now names the service.",
    "Retire the shared secret once sig_gate_verified_key_total{caller=\"shared\"} stays flat: \
     unset INTERSERVICE_HMAC_SECRET and INTERSERVICE_HMAC_SECRET_PREV on every gate (a rollout: \
     variables are read at start-up; the registry then holds every caller's key) and remove \
     them from every signer; a shared-secret request is then refused (401).",
];

/// What to keep doing when migration is not advised (runbook: "Keep HMAC for the current
/// phase" and its prepare-now controls).
pub const KEEP_HMAC_PLAN: [&str; 3] = [
    "Rotate INTERSERVICE_HMAC_SECRET with the overlap procedure (new current + \
     INTERSERVICE_HMAC_SECRET_PREV, then retire) and run make hmac-rotation-drill and \
     make game-day-scorecard around each rotation.",
    "Use the prepare-now controls: TOOL_GATE_DUAL_SIGN=true during overlap windows and \
     INTERSERVICE_HMAC_STRICT_KEY_ID=true once every service sends correct key ids, so a \
     later migration starts from bound key ids.",
    "Watch sig_gate_invalid_request_signature_total for spikes, and re-run this advisor when a \
     trigger changes (each quarter, after an auth incident, when services or teams are added).",
];

/// Flags of `sig-gate advise`. Each trigger flag overrides the environment variable of the
/// same name and is validated the same way; an empty value counts as unset.
#[derive(Debug, Args)]
#[command(after_help = "\
Each trigger is read from the environment variable in capitals (AUTH_SERVICES, AUTH_TEAMS, \
HMAC_ROTATIONS_PER_QUARTER, HMAC_INCIDENTS_90D, EXTERNAL_VERIFIER_DEPENDENCIES, \
ZERO_TRUST_TARGET, AUDITABILITY_SCORE) unless its flag is given. Unset or empty: not met. \
Migration is advised when at least 3 of the 7 hold. Exit 0 with either verdict; exit 2 when \
a value is malformed (the message names the flag or variable).")]
pub struct AdviseArgs {
    /// Services that sign or verify inter-service requests [env AUTH_SERVICES; met at >= 8].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub auth_services: Option<String>,
    /// Teams owning those services [env AUTH_TEAMS; met at >= 3].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub auth_teams: Option<String>,
    /// Secret rotations per quarter [env HMAC_ROTATIONS_PER_QUARTER; met at >= 4].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub hmac_rotations_per_quarter: Option<String>,
    /// Auth incidents in the last 90 days [env HMAC_INCIDENTS_90D; met at >= 1].
    #[arg(
        long = "hmac-incidents-90d",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub hmac_incidents_90d: Option<String>,
    /// External verifiers that need non-shared secrets [env EXTERNAL_VERIFIER_DEPENDENCIES;
    /// met at >= 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub external_verifier_dependencies: Option<String>,
    /// Zero-trust mandate, true/false/1/0/yes/no [env ZERO_TRUST_TARGET; met when true].
    #[arg(long, value_name = "BOOL", allow_negative_numbers = true)]
    pub zero_trust_target: Option<String>,
    /// Auditability pressure, a number in [0, 1] [env AUDITABILITY_SCORE; met at >= 0.80].
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub auditability_score: Option<String>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl AdviseArgs {
    /// The trigger flags as given, in the order of [`TRIGGERS`]; `None` where a flag is absent.
    pub fn overrides(&self) -> [Option<&str>; TRIGGERS.len()] {
        [
            self.auth_services.as_deref(),
            self.auth_teams.as_deref(),
            self.hmac_rotations_per_quarter.as_deref(),
            self.hmac_incidents_90d.as_deref(),
            self.external_verifier_dependencies.as_deref(),
            self.zero_trust_target.as_deref(),
            self.auditability_score.as_deref(),
        ]
    }
}

/// Read the triggers from the process environment and the flags, print the advice.
pub fn run(args: AdviseArgs) -> Result<ExitCode, ToolError> {
    let assessment = assess(env_var, args.overrides())?;
    let text = if args.json {
        render_json(&assessment)
    } else {
        render_table(&assessment)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|err| ToolError::Failed(format!("cannot write to stdout: {err}")))?;
    Ok(ExitCode::SUCCESS)
}

/// One environment variable; a non-UTF-8 value is kept (lossily) so that it is refused by
/// name rather than mistaken for unset.
fn env_var(name: &str) -> Option<String> {
    std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
}

/// One row of the decision checkpoint: which variable and flag carry it, and when it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trigger {
    /// The environment variable, also the trigger's name in the table and the JSON.
    pub name: &'static str,
    /// The flag that overrides the variable, with its leading dashes.
    pub flag: &'static str,
    /// When the trigger holds; also decides how its value is parsed.
    pub threshold: Threshold,
}

/// When a trigger holds. The variant also fixes the value's type: a count, a boolean or a
/// score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// A count (a non-negative whole number) of at least this much.
    AtLeast(u64),
    /// A boolean that is `true`.
    IsTrue,
    /// A score in [0, 1] of at least this much.
    ScoreAtLeast(f64),
}

impl Threshold {
    /// Parse a trimmed, non-empty value for this kind of trigger; the value and whether it
    /// meets the threshold, or what is wrong with the text (without the name, which the caller
    /// adds).
    fn evaluate(self, text: &str) -> Result<(Value, bool), String> {
        match self {
            Threshold::AtLeast(min) => {
                let count = parse_count(text)?;
                Ok((Value::Count(count), count >= min))
            }
            Threshold::IsTrue => {
                let flag = parse_bool(text).ok_or_else(|| {
                    format!("{text:?} is not a boolean (true/false/1/0/yes/no, any case)")
                })?;
                Ok((Value::Bool(flag), flag))
            }
            Threshold::ScoreAtLeast(min) => {
                let score = parse_score(text)?;
                Ok((Value::Score(score), score >= min))
            }
        }
    }

    /// The threshold as a value of the trigger's type, for the JSON `threshold` field.
    fn as_value(self) -> Value {
        match self {
            Threshold::AtLeast(min) => Value::Count(min),
            Threshold::IsTrue => Value::Bool(true),
            Threshold::ScoreAtLeast(min) => Value::Score(min),
        }
    }
}

impl fmt::Display for Threshold {
    /// `>= 8`, `= true`, `>= 0.80`: the runbook's spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::AtLeast(min) => write!(f, ">= {min}"),
            Threshold::IsTrue => f.write_str("= true"),
            Threshold::ScoreAtLeast(min) => write!(f, ">= {min:.2}"),
        }
    }
}

/// A count: ASCII digits only, after trimming. Negative and fractional spellings get their own
/// message because they are the likely mistakes.
fn parse_count(text: &str) -> Result<u64, String> {
    if let Some(rest) = text.strip_prefix('-')
        && rest.parse::<f64>().is_ok()
    {
        return Err(format!("{text:?} is negative (a count is 0 or more)"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a whole number (a count is written as digits only, like 8)"
        ));
    }
    text.parse()
        .map_err(|_| format!("{text:?} is out of range (too large for a count)"))
}

/// A score: a finite number within [0, 1].
fn parse_score(text: &str) -> Result<f64, String> {
    let score: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number (a score in [0, 1], like 0.85)"))?;
    if !score.is_finite() {
        return Err(format!(
            "{text:?} is not a finite number (a score in [0, 1])"
        ));
    }
    if !(0.0..=1.0).contains(&score) {
        return Err(format!("{text:?} is outside [0, 1]"));
    }
    // Within [0, 1] already, so `abs` only turns "-0" into 0 for display and JSON.
    Ok(score.abs())
}

/// A trigger's parsed value. Serialised untagged: a JSON number for counts and the score, a
/// JSON bool for `ZERO_TRUST_TARGET`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A count trigger's value.
    Count(u64),
    /// `ZERO_TRUST_TARGET`'s value.
    Bool(bool),
    /// `AUDITABILITY_SCORE`'s value, finite and within [0, 1].
    Score(f64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Count(count) => write!(f, "{count}"),
            Value::Bool(flag) => write!(f, "{flag}"),
            Value::Score(score) => write!(f, "{score}"),
        }
    }
}

/// Where a trigger's text came from, so an operator can tell a stray shell variable from a
/// flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The environment variable named like the trigger.
    Env,
    /// The trigger's flag, which overrides the variable.
    Flag,
}

impl Source {
    /// `env` or `flag`, for the table and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Env => "env",
            Source::Flag => "flag",
        }
    }
}

/// One trigger as read: its value (`None` when unset or empty) and whether it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The trigger this reading is for.
    pub trigger: Trigger,
    /// Where the text came from; `None` when neither the flag nor the variable was present.
    pub source: Option<Source>,
    /// The parsed value; `None` when unset, empty or only whitespace.
    pub value: Option<Value>,
    /// Whether the trigger holds; always `false` when unset.
    pub met: bool,
}

/// Every trigger read and validated, in the order of [`TRIGGERS`]; the verdict follows from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    readings: Vec<Reading>,
}

impl Assessment {
    /// The readings, one per trigger, in the order of [`TRIGGERS`].
    pub fn readings(&self) -> &[Reading] {
        &self.readings
    }

    /// How many triggers hold.
    pub fn triggers_met(&self) -> usize {
        self.readings.iter().filter(|r| r.met).count()
    }

    /// How many triggers are unset (counted as not met).
    pub fn unset(&self) -> usize {
        self.readings.iter().filter(|r| r.value.is_none()).count()
    }

    /// Whether migration is advised: at least [`MIGRATION_THRESHOLD`] triggers hold.
    pub fn migrate(&self) -> bool {
        self.triggers_met() >= MIGRATION_THRESHOLD
    }

    /// The steps that go with the verdict: [`MIGRATION_PLAN`] or [`KEEP_HMAC_PLAN`].
    pub fn plan(&self) -> &'static [&'static str] {
        if self.migrate() {
            &MIGRATION_PLAN
        } else {
            &KEEP_HMAC_PLAN
        }
    }
}

/// Read every trigger: the flag override when given (`overrides`, in the order of
/// [`TRIGGERS`]), else `env(name)`. Every malformed value is reported, each named by the flag
/// or variable it came from, in one [`ToolError::Usage`] (exit 2).
pub fn assess(
    env: impl Fn(&str) -> Option<String>,
    overrides: [Option<&str>; TRIGGERS.len()],
) -> Result<Assessment, ToolError> {
    let mut readings = Vec::with_capacity(TRIGGERS.len());
    let mut problems = Vec::new();
    for (trigger, flag) in TRIGGERS.into_iter().zip(overrides) {
        let (source, text, named) = match flag {
            Some(text) => (Some(Source::Flag), Some(text.to_owned()), trigger.flag),
            None => match env(trigger.name) {
                Some(text) => (Some(Source::Env), Some(text), trigger.name),
                None => (None, None, trigger.name),
            },
        };
        let text = text.as_deref().map(str::trim).filter(|t| !t.is_empty());
        match text.map(|t| trigger.threshold.evaluate(t)).transpose() {
            Ok(parsed) => readings.push(Reading {
                trigger,
                source,
                value: parsed.map(|(value, _)| value),
                met: parsed.is_some_and(|(_, met)| met),
            }),
            Err(problem) => problems.push(format!("{named}: {problem}")),
        }
    }
    if problems.is_empty() {
        Ok(Assessment { readings })
    } else {
        Err(ToolError::Usage(problems.join("; ")))
    }
}

/// The human report: the trigger table, the count against the threshold, the verdict and its
/// steps.
pub fn render_table(assessment: &Assessment) -> String {
    const UNSET: &str = "unset";
    let header = ["TRIGGER", "VALUE", "THRESHOLD", "MET", "SOURCE"].map(String::from);
    let rows: Vec<[String; 5]> = std::iter::once(header)
        .chain(assessment.readings().iter().map(|r| {
            [
                r.trigger.name.to_owned(),
                r.value.map_or_else(|| UNSET.to_owned(), |v| v.to_string()),
                r.trigger.threshold.to_string(),
                match (r.value, r.met) {
                    (None, _) => UNSET.to_owned(),
                    (Some(_), true) => "yes".to_owned(),
                    (Some(_), false) => "no".to_owned(),
                },
                r.source.map_or("-", Source::as_str).to_owned(),
            ]
        }))
        .collect();
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }

    let mut lines = vec![
        format!(
            "HMAC migration advice (runbook \"Decision checkpoint\": migrate when at least \
             {MIGRATION_THRESHOLD} of {} triggers hold)",
            TRIGGERS.len()
        ),
        String::new(),
    ];
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        lines.push(cells.join("  ").trim_end().to_owned());
    }
    lines.push(String::new());

    let met = assessment.triggers_met();
    let short = MIGRATION_THRESHOLD.saturating_sub(met);
    lines.push(if short == 0 {
        format!(
            "Triggers met: {met} of {} (threshold {MIGRATION_THRESHOLD}).",
            TRIGGERS.len()
        )
    } else {
        format!(
            "Triggers met: {met} of {} (threshold {MIGRATION_THRESHOLD}; {short} more would \
             advise migration).",
            TRIGGERS.len()
        )
    });
    if assessment.migrate() {
        lines.push(
            "Verdict: MIGRATE from the shared HMAC secret to per-service identities, in phases:"
                .to_owned(),
        );
    } else {
        lines.push("Verdict: KEEP HMAC for this phase. Keep doing:".to_owned());
    }
    for (step, text) in assessment.plan().iter().enumerate() {
        lines.push(format!("  {}. {text}", step + 1));
    }
    let unset = assessment.unset();
    if !assessment.migrate() && unset > 0 {
        lines.push(String::new());
        lines.push(format!(
            "Note: {unset} trigger(s) unset and counted as not met; set them (or pass their \
             flags) for a complete assessment."
        ));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The `--json` report documented in the README, on one line. Fields beyond the documented
/// (`verdict`, `plan`, each trigger's `source`) are additions, never changes.
pub fn render_json(assessment: &Assessment) -> String {
    #[derive(Serialize)]
    struct Report {
        migrate: bool,
        triggers_met: usize,
        threshold: usize,
        verdict: &'static str,
        triggers: Vec<TriggerReport>,
        plan: &'static [&'static str],
    }
    #[derive(Serialize)]
    struct TriggerReport {
        name: &'static str,
        value: Option<Value>,
        threshold: Value,
        met: bool,
        source: Option<&'static str>,
    }

    let report = Report {
        migrate: assessment.migrate(),
        triggers_met: assessment.triggers_met(),
        threshold: MIGRATION_THRESHOLD,
        verdict: if assessment.migrate() {
            "migrate"
        } else {
            "keep_hmac"
        },
        triggers: assessment
            .readings()
            .iter()
            .map(|r| TriggerReport {
                name: r.trigger.name,
                value: r.value,
                threshold: r.trigger.threshold.as_value(),
                met: r.met,
                source: r.source.map(Source::as_str),
            })
            .collect(),
        plan: assessment.plan(),
    };
    let mut text = serde_json::to_string(&report)
        .expect("plain structs of strings, numbers and bools always serialise");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{CommandFactory, Parser};

    use super::*;

    const NO_FLAGS: [Option<&str>; TRIGGERS.len()] = [None; TRIGGERS.len()];

    /// A lookup over fixed pairs, standing in for the process environment.
    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// Flag overrides by trigger name.
    fn flags<'a>(pairs: &[(&str, &'a str)]) -> [Option<&'a str>; TRIGGERS.len()] {
        let mut out = NO_FLAGS;
        for (name, value) in pairs {
            let index = TRIGGERS
                .iter()
                .position(|t| t.name == *name)
                .expect("test names a trigger");
            out[index] = Some(value);
        }
        out
    }

    fn reading<'a>(assessment: &'a Assessment, name: &str) -> &'a Reading {
        assessment
            .readings()
            .iter()
            .find(|r| r.trigger.name == name)
            .expect("every trigger has a reading")
    }

    /// The one trigger `name` set to `value` through the environment.
    fn single(name: &str, value: &str) -> Result<Reading, ToolError> {
        assess(env(&[(name, value)]), NO_FLAGS).map(|a| reading(&a, name).clone())
    }

    fn usage_message(result: Result<impl fmt::Debug, ToolError>) -> String {
        match result {
            Err(err @ ToolError::Usage(_)) => err.to_string(),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    /// Parses `AdviseArgs` the way `sig-gate advise` does, without the rest of the CLI.
    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        args: AdviseArgs,
    }

    #[test]
    fn triggers_match_the_contract() {
        let names: Vec<&str> = TRIGGERS.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "AUTH_SERVICES",
                "AUTH_TEAMS",
                "HMAC_ROTATIONS_PER_QUARTER",
                "HMAC_INCIDENTS_90D",
                "EXTERNAL_VERIFIER_DEPENDENCIES",
                "ZERO_TRUST_TARGET",
                "AUDITABILITY_SCORE",
            ]
        );
        let shown: Vec<String> = TRIGGERS.iter().map(|t| t.threshold.to_string()).collect();
        assert_eq!(
            shown,
            [">= 8", ">= 3", ">= 4", ">= 1", ">= 1", "= true", ">= 0.80"]
        );
        assert_eq!(MIGRATION_THRESHOLD, 3);
    }

    #[test]
    fn count_thresholds_at_below_and_above() {
        for trigger in TRIGGERS {
            let Threshold::AtLeast(min) = trigger.threshold else {
                continue;
            };
            for (value, met) in [(min - 1, false), (min, true), (min + 1, true)] {
                let r = single(trigger.name, &value.to_string()).expect("valid count");
                assert_eq!(r.value, Some(Value::Count(value)), "{}", trigger.name);
                assert_eq!(r.met, met, "{} = {value}", trigger.name);
                assert_eq!(r.source, Some(Source::Env));
            }
        }
    }

    #[test]
    fn score_threshold_at_below_and_above() {
        for (text, met) in [
            ("0.80", true),
            ("0.8", true),
            (".8", true),
            ("0.7999999", false),
            ("0.79", false),
            ("0.81", true),
            ("1", true),
            ("0", false),
            ("-0", false),
        ] {
            let r = single("AUDITABILITY_SCORE", text).expect("valid score");
            assert_eq!(r.met, met, "{text}");
        }
        let r = single("AUDITABILITY_SCORE", "-0").expect("valid score");
        assert_eq!(r.value.map(|v| v.to_string()), Some("0".to_owned()));
    }

    #[test]
    fn zero_trust_takes_every_boolean_spelling() {
        for (text, met) in [
            ("true", true),
            ("TRUE", true),
            ("Yes", true),
            ("1", true),
            ("false", false),
            ("no", false),
            ("0", false),
        ] {
            let r = single("ZERO_TRUST_TARGET", text).expect("valid boolean");
            assert_eq!(r.value, Some(Value::Bool(met)), "{text}");
            assert_eq!(r.met, met, "{text}");
        }
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let r = single("AUTH_SERVICES", " 8\n").expect("valid count");
        assert_eq!((r.value, r.met), (Some(Value::Count(8)), true));
        let r = single("ZERO_TRUST_TARGET", "\tyes ").expect("valid boolean");
        assert!(r.met);
    }

    #[test]
    fn unset_empty_and_blank_are_unset_and_not_met() {
        let assessment = assess(env(&[]), NO_FLAGS).expect("nothing to refuse");
        assert_eq!(assessment.readings().len(), TRIGGERS.len());
        assert_eq!(assessment.unset(), TRIGGERS.len());
        assert!(
            assessment
                .readings()
                .iter()
                .all(|r| !r.met && r.source.is_none())
        );
        assert!(!assessment.migrate());
        for trigger in TRIGGERS {
            for text in ["", "   "] {
                let r = single(trigger.name, text).expect("empty is unset");
                assert_eq!(
                    (r.value, r.met),
                    (None, false),
                    "{} = {text:?}",
                    trigger.name
                );
                assert_eq!(r.source, Some(Source::Env));
            }
        }
    }

    #[test]
    fn malformed_values_exit_2_naming_the_variable() {
        let cases = [
            ("AUTH_SERVICES", "eight", "not a whole number"),
            ("AUTH_SERVICES", "-1", "negative"),
            ("AUTH_TEAMS", "-0", "negative"),
            ("AUTH_TEAMS", "8.0", "not a whole number"),
            ("HMAC_ROTATIONS_PER_QUARTER", "+4", "not a whole number"),
            ("HMAC_ROTATIONS_PER_QUARTER", "1e1", "not a whole number"),
            ("HMAC_INCIDENTS_90D", "0x1", "not a whole number"),
            (
                "EXTERNAL_VERIFIER_DEPENDENCIES",
                "99999999999999999999999",
                "out of range",
            ),
            ("ZERO_TRUST_TARGET", "on", "not a boolean"),
            ("ZERO_TRUST_TARGET", "-1", "not a boolean"),
            ("AUDITABILITY_SCORE", "high", "not a number"),
            ("AUDITABILITY_SCORE", "1.01", "outside [0, 1]"),
            ("AUDITABILITY_SCORE", "80", "outside [0, 1]"),
            ("AUDITABILITY_SCORE", "-0.1", "outside [0, 1]"),
            ("AUDITABILITY_SCORE", "NaN", "not a finite number"),
            ("AUDITABILITY_SCORE", "inf", "not a finite number"),
            ("AUDITABILITY_SCORE", "-infinity", "not a finite number"),
            ("AUDITABILITY_SCORE", "1e400", "not a finite number"),
        ];
        for (name, text, problem) in cases {
            let message = usage_message(single(name, text));
            assert!(
                message.starts_with(&format!("{name}: ")),
                "{name}={text}: {message}"
            );
            assert!(message.contains(problem), "{name}={text}: {message}");
            assert!(message.contains(&format!("{:?}", text.trim())), "{message}");
        }
    }

    #[test]
    fn every_malformed_value_is_reported_at_once() {
        let message = usage_message(assess(
            env(&[("AUTH_TEAMS", "x"), ("AUDITABILITY_SCORE", "2")]),
            flags(&[("AUTH_SERVICES", "-3")]),
        ));
        assert!(message.starts_with("--auth-services: "), "{message}");
        assert!(message.contains("; AUTH_TEAMS: "), "{message}");
        assert!(message.contains("; AUDITABILITY_SCORE: "), "{message}");
    }

    #[test]
    fn flags_override_the_environment() {
        let assessment = assess(
            env(&[("AUTH_SERVICES", "2"), ("ZERO_TRUST_TARGET", "true")]),
            flags(&[("AUTH_SERVICES", "9"), ("ZERO_TRUST_TARGET", "no")]),
        )
        .expect("valid");
        let services = reading(&assessment, "AUTH_SERVICES");
        assert_eq!(services.value, Some(Value::Count(9)));
        assert!(services.met);
        assert_eq!(services.source, Some(Source::Flag));
        assert!(!reading(&assessment, "ZERO_TRUST_TARGET").met);

        // An empty flag clears the variable; a malformed variable under a flag is not read.
        let assessment = assess(
            env(&[("AUTH_TEAMS", "5"), ("HMAC_INCIDENTS_90D", "lots")]),
            flags(&[("AUTH_TEAMS", ""), ("HMAC_INCIDENTS_90D", "1")]),
        )
        .expect("flags win");
        let teams = reading(&assessment, "AUTH_TEAMS");
        assert_eq!((teams.value, teams.met), (None, false));
        assert!(reading(&assessment, "HMAC_INCIDENTS_90D").met);
    }

    #[test]
    fn malformed_flags_name_the_flag_not_the_variable() {
        for trigger in TRIGGERS {
            let message = usage_message(assess(
                env(&[(trigger.name, "1")]),
                flags(&[(trigger.name, "bogus")]),
            ));
            assert!(
                message.starts_with(&format!("{}: ", trigger.flag)),
                "{message}"
            );
            assert!(!message.contains(trigger.name), "{message}");
        }
    }

    #[test]
    fn two_triggers_keep_hmac_three_migrate() {
        let two = [("AUTH_SERVICES", "8"), ("ZERO_TRUST_TARGET", "yes")];
        let assessment = assess(env(&two), NO_FLAGS).expect("valid");
        assert_eq!(assessment.triggers_met(), 2);
        assert!(!assessment.migrate());
        assert_eq!(assessment.plan(), &KEEP_HMAC_PLAN);

        let mut three = two.to_vec();
        three.push(("AUDITABILITY_SCORE", "0.80"));
        let assessment = assess(env(&three), NO_FLAGS).expect("valid");
        assert_eq!(assessment.triggers_met(), 3);
        assert!(assessment.migrate());
        assert_eq!(assessment.plan(), &MIGRATION_PLAN);

        // Values below their thresholds do not count, however many are set.
        let below = [
            ("AUTH_SERVICES", "7"),
            ("AUTH_TEAMS", "2"),
            ("HMAC_ROTATIONS_PER_QUARTER", "3"),
            ("HMAC_INCIDENTS_90D", "0"),
            ("EXTERNAL_VERIFIER_DEPENDENCIES", "0"),
            ("ZERO_TRUST_TARGET", "false"),
            ("AUDITABILITY_SCORE", "0.79"),
        ];
        let assessment = assess(env(&below), NO_FLAGS).expect("valid");
        assert_eq!((assessment.triggers_met(), assessment.unset()), (0, 0));
    }

    fn all_met() -> Assessment {
        assess(
            env(&[
                ("AUTH_SERVICES", "9"),
                ("AUTH_TEAMS", "3"),
                ("HMAC_ROTATIONS_PER_QUARTER", "4"),
                ("HMAC_INCIDENTS_90D", "2"),
                ("EXTERNAL_VERIFIER_DEPENDENCIES", "1"),
                ("ZERO_TRUST_TARGET", "true"),
                ("AUDITABILITY_SCORE", "0.85"),
            ]),
            NO_FLAGS,
        )
        .expect("valid")
    }

    #[test]
    fn json_has_the_contract_shape() {
        let assessment = assess(
            env(&[
                ("AUTH_SERVICES", "9"),
                ("ZERO_TRUST_TARGET", "true"),
                ("AUDITABILITY_SCORE", "0.85"),
            ]),
            NO_FLAGS,
        )
        .expect("valid");
        let text = render_json(&assessment);
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(json["migrate"], serde_json::json!(true));
        assert_eq!(json["triggers_met"], serde_json::json!(3));
        assert_eq!(json["threshold"], serde_json::json!(3));
        assert!(json["plan"].is_array());
        let triggers = json["triggers"].as_array().expect("triggers array");
        let names: Vec<&str> = triggers
            .iter()
            .map(|t| t["name"].as_str().expect("name is a string"))
            .collect();
        let expected: Vec<&str> = TRIGGERS.iter().map(|t| t.name).collect();
        assert_eq!(names, expected);
        for t in triggers {
            for key in ["name", "value", "threshold", "met"] {
                assert!(t.get(key).is_some(), "{key} missing in {t}");
            }
            assert!(t["met"].is_boolean());
        }
        let thresholds: Vec<&serde_json::Value> =
            triggers.iter().map(|t| &t["threshold"]).collect();
        assert_eq!(
            thresholds,
            [
                &serde_json::json!(8),
                &serde_json::json!(3),
                &serde_json::json!(4),
                &serde_json::json!(1),
                &serde_json::json!(1),
                &serde_json::json!(true),
                &serde_json::json!(0.8),
            ]
        );
        assert!(triggers[0]["value"].is_u64());
        assert_eq!(triggers[0]["value"], serde_json::json!(9));
        assert!(triggers[1]["value"].is_null());
        assert_eq!(triggers[1]["met"], serde_json::json!(false));
        assert!(triggers[5]["value"].is_boolean());
        assert!(triggers[6]["value"].is_f64());
        assert_eq!(triggers[6]["value"], serde_json::json!(0.85));

        let none = assess(env(&[]), NO_FLAGS).expect("valid");
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&none)).expect("valid JSON");
        assert_eq!(json["migrate"], serde_json::json!(false));
        assert_eq!(json["triggers_met"], serde_json::json!(0));
        let all: serde_json::Value =
            serde_json::from_str(&render_json(&all_met())).expect("valid JSON");
        assert_eq!(all["triggers_met"], serde_json::json!(7));
    }

    #[test]
    fn table_shows_every_trigger_the_count_and_the_plan() {
        let assessment = assess(
            env(&[("AUTH_SERVICES", "9"), ("AUTH_TEAMS", "1")]),
            flags(&[("AUDITABILITY_SCORE", "0.9")]),
        )
        .expect("valid");
        let table = render_table(&assessment);
        let row = |name: &str| -> Vec<String> {
            table
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("row for {name} in\n{table}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            row("AUTH_SERVICES"),
            ["AUTH_SERVICES", "9", ">=", "8", "yes", "env"]
        );
        assert_eq!(
            row("AUTH_TEAMS"),
            ["AUTH_TEAMS", "1", ">=", "3", "no", "env"]
        );
        assert_eq!(
            row("ZERO_TRUST_TARGET"),
            ["ZERO_TRUST_TARGET", "unset", "=", "true", "unset", "-"]
        );
        assert_eq!(
            row("AUDITABILITY_SCORE"),
            ["AUDITABILITY_SCORE", "0.9", ">=", "0.80", "yes", "flag"]
        );
        assert!(
            table.contains("Triggers met: 2 of 7 (threshold 3; 1 more"),
            "{table}"
        );
        assert!(table.contains("Verdict: KEEP HMAC"), "{table}");
        assert!(table.contains("4 trigger(s) unset"), "{table}");
        assert!(table.contains("1. Rotate"), "{table}");

        let table = render_table(&all_met());
        assert!(
            table.contains("Triggers met: 7 of 7 (threshold 3)."),
            "{table}"
        );
        assert!(table.contains("Verdict: MIGRATE"), "{table}");
        // The product's own migration: the commands, registry lines, signer variables and the
        // metric to read before enforcing, in the runbook's order.
        for (step, text) in [
            (1, "GATE_KEYS_FILE"),
            (2, "sig-gate keygen --ed25519 --out"),
            (3, "Dual-sign"),
            (4, "Verify before enforcing"),
            (5, "Enforce"),
            (6, "Retire the shared secret"),
        ] {
            let line = table
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{step}. ")))
                .unwrap_or_else(|| panic!("step {step}: {table}"));
            assert!(line.contains(text), "step {step}: {line}");
        }
        assert!(table.contains("observe = true") && table.contains("GATE_OBSERVE_KEY_FILE"));
        assert!(table.contains(r#"sig_gate_identity_observed_total{caller,key_id,result}"#));
        assert!(table.contains("GATE_SIGNING_ALG=ed25519"), "{table}");
        // Nothing is unset: no row says so and no note asks for more values.
        let rows_and_note = table
            .split("Verdict:")
            .next()
            .expect("split yields one part");
        assert!(!rows_and_note.contains("unset"), "{table}");
        assert!(!table.contains("Note:"), "{table}");
    }

    #[test]
    fn each_flag_lands_on_its_own_trigger() {
        TestCli::command().debug_assert();
        for (index, trigger) in TRIGGERS.iter().enumerate() {
            // "-1" must reach our validation (and its message), not clap's.
            let cli = TestCli::try_parse_from(["advise", trigger.flag, "-1"])
                .unwrap_or_else(|err| panic!("{}: {err}", trigger.flag));
            let overrides = cli.args.overrides();
            for (other, value) in overrides.iter().enumerate() {
                let expected = (other == index).then_some("-1");
                assert_eq!(*value, expected, "{} set slot {other}", trigger.flag);
            }
            assert!(!cli.args.json);
        }
        let cli = TestCli::try_parse_from(["advise", "--json"]).expect("--json parses");
        assert!(cli.args.json);
        assert_eq!(cli.args.overrides(), NO_FLAGS);
    }
}
