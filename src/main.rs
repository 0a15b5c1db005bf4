use std::process::ExitCode;

use clap::Parser;
mod cli;

use cli::Cli;

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
