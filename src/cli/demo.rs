//! `sig-gate demo`: the gate in front of the built-in echo upstream on loopback (the runbook's
//! recording upstream with its echo routes only: every request echoed as JSON, `GET /events`
//! streamed), with a freshly generated secret, printing a ready-to-paste signed curl command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::CliError;
use gate::config::{Config, Raw};
use gate::server::{self, Drain, Listeners};
use gate::sign::{self, Request};
use runbook::upstream::{RecordingUpstream, Routes};

/// Flags of `sig-gate demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Proxy listener; falls back to a free port when this one is taken.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`); falls back to a free port when this one is taken.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
}

/// Run the demo until Ctrl-C.
pub fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    let fail = |what: &str, err: &dyn std::fmt::Display| CliError::Failed(format!("{what}: {err}"));
    let secret_file = write_secret().map_err(|err| fail("cannot write the demo secret", &err))?;
    let runtime = super::runtime()?;
    // Kept until the demo ends: dropping it stops the upstream.
    let upstream = runtime
        .block_on(RecordingUpstream::start_with(Routes::Echo))
        .map_err(|err| fail("cannot start the echo upstream", &err))?;

    let listen = free_or_any(args.listen);
    let admin_listen = free_or_any(args.admin_listen);
    let raw = Raw {
        interservice_hmac_secret_file: Some(secret_file.display().to_string().into()),
        gate_upstream: Some(upstream.url().into()),
        gate_listen: Some(listen.to_string().into()),
        gate_admin_listen: Some(admin_listen.to_string().into()),
        gate_log_format: Some("text".into()),
        ..Raw::default()
    };
    let config = Config::try_from(raw)?;
    gate::logging::init(config.log_format);
    let listeners = Listeners::open(&config).map_err(|err| CliError::Failed(err.to_string()))?;
    let proxy_addr = listeners
        .proxy
        .local_addr()
        .map_err(|err| fail("proxy listener", &err))?;
    let admin_addr = listeners
        .admin
        .local_addr()
        .map_err(|err| fail("admin listener", &err))?;
    let signer = gate::config::signer_from_raw(&Raw {
        interservice_hmac_secret_file: Some(secret_file.display().to_string().into()),
        ..Raw::default()
    })?;
    println!("{}", banner(&signer, proxy_addr, admin_addr, &secret_file));

    let drain = runtime
        .block_on(server::run(config, listeners, server::shutdown_signal()))
        .map_err(|err| fail("serving failed", &err))?;
    let _ = std::fs::remove_dir_all(secret_file.parent().unwrap_or(&secret_file));
    Ok(match drain {
        Drain::Complete => ExitCode::SUCCESS,
        Drain::Expired => ExitCode::FAILURE,
    })
}

/// The address itself when it can be bound now, else the same IP with a free port.
fn free_or_any(addr: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(_) => SocketAddr::new(addr.ip(), 0),
    }
}

/// Write a fresh secret to a private temporary file: the demo never prints the secret itself,
/// it points `INTERSERVICE_HMAC_SECRET_FILE` at this file.
fn write_secret() -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = std::env::temp_dir().join(format!("sig-gate-demo-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)?;
    let path = dir.join("secret");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(file, "{}", gate::random::secret_text(32))?;
    Ok(path)
}

fn banner(
    signer: &sign::Signer,
    proxy: SocketAddr,
    admin: SocketAddr,
    secret_file: &std::path::Path,
) -> String {
    let body = r#"{"tool":"search","query":"sig-gate"}"#;
    let target = "/tools/echo?source=demo";
    let nonce = sign::new_nonce();
    let headers = signer.sign(&Request {
        method: "POST",
        target,
        body: body.as_bytes(),
        timestamp: gate::clock::unix_now(),
        nonce: &nonce,
    });
    let header_flags: String = headers
        .iter()
        .map(|(name, value)| format!(" \\\n  -H '{name}: {value}'"))
        .collect();
    format!(
        "sig-gate demo: the gate on http://{proxy} in front of a built-in echo upstream.\n\
         \n\
         A signed request (valid for 5 minutes, and once: a second send is a replay):\n\
         \n\
         curl -sS -X POST 'http://{proxy}{target}' \\\n  -H 'Content-Type: application/json'{header_flags} \\\n  --data-binary '{body}'\n\
         \n\
         An unsigned one, rejected with 401:\n\
         \n\
         curl -sS -i http://{proxy}/tools/echo\n\
         \n\
         Sign your own requests with the demo secret:\n\
         \n\
         INTERSERVICE_HMAC_SECRET_FILE={secret} sig-gate sign --method GET --path /hello\n\
         \n\
         Server-sent events stream through: curl -N <signed GET of /events>\n\
         Metrics: http://{admin}/metrics   Health: http://{admin}/healthz   Ready: http://{admin}/readyz\n\
         Stop with Ctrl-C.\n",
        secret = secret_file.display(),
    )
}
