//! `sig-gate man`: the manual page (roff), generated from the clap definition the binary parses
//! with: `sig-gate.1` on stdout, or one page per command written into a directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory};

use crate::cli::{Cli, CliError};

/// Flags of `sig-gate man`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sig-gate man | man -l -\n  \
    sig-gate man --out-dir /usr/local/share/man/man1")]
pub struct ManArgs {
    /// Write `sig-gate.1` and one `sig-gate-COMMAND.1` per subcommand into this existing
    /// directory instead of printing `sig-gate.1`.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Print the page, or write every page.
pub fn run(args: ManArgs) -> Result<ExitCode, CliError> {
    let command = Cli::command();
    match args.out_dir {
        None => {
            let mut out = std::io::stdout().lock();
            match clap_mangen::Man::new(command).render(&mut out) {
                // `sig-gate man | head`: the reader had enough.
                Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(CliError::Failed(format!("cannot write the page: {err}")));
                }
                Ok(()) | Err(_) => {}
            }
        }
        Some(dir) => {
            if !dir.is_dir() {
                return Err(CliError::Usage(format!(
                    "--out-dir: {} is not a directory",
                    dir.display()
                )));
            }
            clap_mangen::generate_to(command, &dir).map_err(|err| {
                CliError::Failed(format!("cannot write pages into {}: {err}", dir.display()))
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
