//! `sig-gate keygen`: a new random secret for `INTERSERVICE_HMAC_SECRET` (or a registry key's
//! `secret_file`), or with `--ed25519 --out FILE` a new Ed25519 private key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::CliError;
use gate::config::MIN_SECRET_BYTES;

/// Flags of `sig-gate keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Random bytes of entropy (at least 32); printed as URL-safe base64 without padding.
    #[arg(long, default_value_t = MIN_SECRET_BYTES, conflicts_with = "ed25519")]
    pub bytes: usize,
    /// Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) to `--out` and print its public
    /// key as the key registry's `public_key` (base64url, no padding).
    #[arg(long, requires = "out")]
    pub ed25519: bool,
    /// Where `--ed25519` writes the private key; an existing file is never overwritten.
    #[arg(long, requires = "ed25519")]
    pub out: Option<PathBuf>,
}

/// Print one secret on its own line, or write a private key and print its public key.
pub fn run(args: KeygenArgs) -> Result<ExitCode, CliError> {
    if let (true, Some(out)) = (args.ed25519, &args.out) {
        let (pem, public) = gate::sign::generate_ed25519()
            .map_err(|err| CliError::Failed(format!("cannot generate a key: {err}")))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .map_err(|err| CliError::Usage(format!("--out {}: {err}", out.display())))?;
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|err| CliError::Failed(format!("--out {}: {err}", out.display())))?;
        println!("{}", public.to_base64url());
        return Ok(ExitCode::SUCCESS);
    }
    if !(MIN_SECRET_BYTES..=1024).contains(&args.bytes) {
        return Err(CliError::Usage(format!(
            "--bytes: {} is outside {MIN_SECRET_BYTES}..=1024",
            args.bytes
        )));
    }
    println!("{}", gate::random::secret_text(args.bytes));
    Ok(ExitCode::SUCCESS)
}
