//! `sig-gate sign`: print the signature headers for one request, from the same environment
//! variables a calling service uses.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::CliError;
use gate::config;
use gate::protocol;
use gate::sign::{self, Request};

/// Flags of `sig-gate sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// HTTP method, exactly as it will be sent (for example GET or POST).
    #[arg(long)]
    pub method: String,
    /// Request target exactly as it will be sent: raw path plus optional `?query`.
    #[arg(long)]
    pub path: String,
    /// File holding the exact body bytes (`-` reads standard input); no body when omitted.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Unix timestamp to sign with (default: now). For test vectors and reproducible output.
    #[arg(long)]
    pub timestamp: Option<String>,
    /// Nonce to sign with (default: 16 random bytes, URL-safe base64). Never reuse one.
    #[arg(long)]
    pub nonce: Option<String>,
}

/// Print one `Name: value` line per header to send.
pub fn run(args: SignArgs) -> Result<ExitCode, CliError> {
    let signer = config::signer()?;
    if args.method.is_empty() || !args.method.bytes().all(is_token_byte) {
        return Err(CliError::Usage(format!(
            "--method: {:?} is not an HTTP method token",
            args.method
        )));
    }
    if !(args.path.starts_with('/') || args.path == "*")
        || args
            .path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(CliError::Usage(format!(
            "--path: {:?} is not a request target (raw path starting with '/', optional ?query)",
            args.path
        )));
    }
    let timestamp = match &args.timestamp {
        Some(t) => protocol::parse_timestamp(t)
            .ok_or_else(|| CliError::Usage(format!("--timestamp: {t:?} is not 1-12 digits")))?,
        None => gate::clock::unix_now(),
    };
    let nonce = match args.nonce {
        Some(n) if protocol::is_nonce(&n) => n,
        Some(n) => {
            return Err(CliError::Usage(format!(
                "--nonce: {n:?} is not 16-128 chars of A-Z a-z 0-9 _ -"
            )));
        }
        None => sign::new_nonce(),
    };
    let body = match &args.body_file {
        None => Vec::new(),
        Some(path) if path.as_os_str() == "-" => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|err| CliError::Failed(format!("--body-file -: {err}")))?;
            body
        }
        Some(path) => std::fs::read(path)
            .map_err(|err| CliError::Usage(format!("--body-file {}: {err}", path.display())))?,
    };
    let headers = signer.sign(&Request {
        method: &args.method,
        target: &args.path,
        body: &body,
        timestamp,
        nonce: &nonce,
    });
    for (name, value) in headers {
        println!("{name}: {value}");
    }
    Ok(ExitCode::SUCCESS)
}

/// RFC 9110 `tchar`: the characters of a method token.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
