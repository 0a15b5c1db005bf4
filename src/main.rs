use std::process::ExitCode;

use clap::Parser;
use sig_gate::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sig-gate: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
