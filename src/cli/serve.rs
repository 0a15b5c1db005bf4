//! `sig-gate serve`: run the proxy until SIGTERM or SIGINT, then drain.

use std::process::ExitCode;

use clap::Args;

use crate::cli::CliError;
use gate::config::Config;
use gate::server::{self, Drain, Listeners};

/// Flags of `sig-gate serve` (all configuration comes from the environment and the TOML file).
#[derive(Debug, Args)]
pub struct ServeArgs {}

/// Load the configuration, take or bind the listeners, serve, and exit 0 after a complete
/// drain or 1 when the grace period ran out.
pub fn run(_args: ServeArgs) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    gate::logging::init(config.log_format);
    // Which build runs, for whoever reads the log after a rollout.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("SIG_GATE_BUILD_COMMIT"),
        "starting"
    );
    let listeners = Listeners::open(&config).map_err(|err| CliError::Failed(err.to_string()))?;
    let drain = super::runtime()?
        .block_on(server::run(config, listeners, server::shutdown_signal()))
        .map_err(|err| CliError::Failed(format!("serving failed: {err}")))?;
    Ok(match drain {
        Drain::Complete => ExitCode::SUCCESS,
        Drain::Expired => ExitCode::FAILURE,
    })
}
