//! `sig-gate completions SHELL`: a shell completion script on stdout, generated from the same
//! clap definition the binary parses with.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::{Cli, CliError};

/// Flags of `sig-gate completions`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sig-gate completions bash > /etc/bash_completion.d/sig-gate\n  \
    sig-gate completions zsh > \"${fpath[1]}/_sig-gate\"\n  \
    sig-gate completions fish > ~/.config/fish/completions/sig-gate.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Print the script.
pub fn run(args: CompletionsArgs) -> Result<ExitCode, CliError> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "sig-gate", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
