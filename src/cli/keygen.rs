//! `sig-gate keygen`: a new random secret for `INTERSERVICE_HMAC_SECRET`.

use std::process::ExitCode;

use clap::Args;

use crate::cli::CliError;
use gate::config::MIN_SECRET_BYTES;

/// Flags of `sig-gate keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Random bytes of entropy (at least 32); printed as URL-safe base64 without padding.
    #[arg(long, default_value_t = MIN_SECRET_BYTES)]
    pub bytes: usize,
}

/// Print one secret on its own line.
pub fn run(args: KeygenArgs) -> Result<ExitCode, CliError> {
    if !(MIN_SECRET_BYTES..=1024).contains(&args.bytes) {
        return Err(CliError::Usage(format!(
            "--bytes: {} is outside {MIN_SECRET_BYTES}..=1024",
            args.bytes
        )));
    }
    println!("{}", gate::random::secret_text(args.bytes));
    Ok(ExitCode::SUCCESS)
}
