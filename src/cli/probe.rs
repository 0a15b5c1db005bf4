//! `sig-gate probe URL`: the container health check. Exits 0 on a 2xx answer and 1 otherwise,
//! so an image needs neither curl nor a shell.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cli::CliError;

/// Flags of `sig-gate probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// `http://` URL to GET, for example http://127.0.0.1:9090/readyz.
    pub url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

/// GET the URL once; success is a 2xx status.
pub fn run(args: ProbeArgs) -> Result<ExitCode, CliError> {
    let uri: Uri = args
        .url
        .parse()
        .ok()
        .filter(|u: &Uri| u.scheme_str() == Some("http") && u.authority().is_some())
        .ok_or_else(|| CliError::Usage(format!("URL: {:?} is not an http:// URL", args.url)))?;
    if args.timeout_secs == 0 {
        return Err(CliError::Usage("--timeout-secs: must be at least 1".into()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Failed(format!("cannot start the runtime: {err}")))?;
    let status = runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let request = Request::get(uri.clone())
            .body(Empty::new())
            .map_err(|err| err.to_string())?;
        match tokio::time::timeout(
            Duration::from_secs(args.timeout_secs),
            client.request(request),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response.status()),
            Ok(Err(err)) => Err(format!("{uri}: {err}")),
            Err(_) => Err(format!("{uri}: no answer within {}s", args.timeout_secs)),
        }
    });
    match status {
        Ok(status) if status.is_success() => Ok(ExitCode::SUCCESS),
        Ok(status) => {
            eprintln!("sig-gate probe: {uri}: {status}");
            Ok(ExitCode::FAILURE)
        }
        Err(problem) => Err(CliError::Failed(problem)),
    }
}
