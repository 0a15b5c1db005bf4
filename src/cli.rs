//! The command line: one clap-derived enum of subcommands, one file per gate subcommand under
//! `src/cli/` (the runbook's tools, `drill`, `scorecard` and `advise`, come from the `runbook`
//! crate). `main.rs` parses and calls [`run`]; every error is mapped to an exit code once,
//! here, by [`CliError::exit_code`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gate::config::ConfigError;
use runbook::{ToolError, advise, drill, scorecard};

pub mod check_config;
pub mod completions;
pub mod demo;
pub mod keygen;
pub mod man;
pub mod probe;
pub mod serve;
pub mod sign;

/// What `sig-gate --version` prints after the name: the package version and the commit the
/// binary was built from (`build.rs` explains where the commit comes from).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SIG_GATE_BUILD_COMMIT"),
    ")"
);

/// sig-gate: a verifying reverse proxy for HMAC-signed internal requests.
#[derive(Debug, Parser)]
#[command(name = "sig-gate", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands (README, "Commands").
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the verifying proxy (the container's entrypoint).
    Serve(serve::ServeArgs),
    /// Print the signature headers for one request, from the signer's environment variables.
    Sign(sign::SignArgs),
    /// Validate the configuration and print it, secrets shown only as fingerprints.
    CheckConfig(check_config::CheckConfigArgs),
    /// Print a new random secret (URL-safe text).
    Keygen(keygen::KeygenArgs),
    /// Run the gate in front of a built-in echo upstream and print a signed curl command.
    Demo(demo::DemoArgs),
    /// GET an http:// URL and exit 0 on a 2xx answer (container health check).
    Probe(probe::ProbeArgs),
    /// Decide whether to migrate from shared HMAC secrets to per-service identities.
    Advise(advise::AdviseArgs),
    /// Rehearse the HMAC rotation with real gates under signed load; exit 1 if a phase fails.
    Drill(drill::DrillArgs),
    /// Run attack and fault scenarios against real gates and score them; exit 1 if one fails.
    Scorecard(scorecard::ScorecardArgs),
    /// Print a shell completion script (bash, elvish, fish, powershell, zsh).
    Completions(completions::CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    Man(man::ManArgs),
}

/// Why a subcommand could not do its work; [`CliError::exit_code`] maps it to the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration was refused (exit 2); the message names the variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A flag or input value was refused (exit 2); the message names it.
    #[error("{0}")]
    Usage(String),
    /// Anything else that went wrong (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl From<ToolError> for CliError {
    fn from(err: ToolError) -> CliError {
        match err {
            ToolError::Usage(message) => CliError::Usage(message),
            ToolError::Failed(message) => CliError::Failed(message),
        }
    }
}

impl CliError {
    /// The process exit code for this error: 2 for usage and configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

/// Run one parsed command line. `Ok` carries the exit code of a command that ran to the end
/// (a drill or scorecard with a failed scenario returns `Ok(ExitCode::FAILURE)`).
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Sign(args) => sign::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Advise(args) => Ok(advise::run(args)?),
        Command::Drill(args) => Ok(drill::run(args)?),
        Command::Scorecard(args) => Ok(scorecard::run(args)?),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}

/// The runtime the long-running subcommands run on: one thread, the current-thread scheduler.
/// For `serve` and `demo` it carries the signal handler, the admin listener and the drain;
/// requests are served by the gate's workers (`GATE_WORKERS`), each on a runtime of its own
/// (`gate::server`).
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Failed(format!("cannot start the runtime: {err}")))
}
