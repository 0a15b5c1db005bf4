//! `sig-gate check-config`: validate the configuration and print it, secrets shown only as
//! fingerprints and a store URL's password as `***`; with a Redis replay store, say whether it
//! answers. Exit 0 when valid, 2 (with the offending variable named) when not: a store that
//! does not answer is reported, not an error, as the gate itself starts without it.

use std::process::ExitCode;

use clap::Args;

use crate::cli::CliError;
use gate::config::{Config, LogFormat, vars};
use gate::replay::StoreLocation;

/// Flags of `sig-gate check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {}

/// Load, validate and print.
pub fn run(_args: CheckConfigArgs) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    print!("{}", render(&config));
    if let StoreLocation::Redis(url) = &config.replay_store {
        let budget = config.replay_store_timeout;
        match super::runtime()?.block_on(gate::replay::probe(url, budget)) {
            Ok(took) => println!(
                "replay store answers: PING in {:.1} ms (budget {} ms)",
                took.as_secs_f64() * 1000.0,
                budget.as_millis()
            ),
            Err(why) => println!(
                "replay store does NOT answer within {} ms: {why} (the gate starts anyway and \
                 answers signed requests 503 until it does)",
                budget.as_millis()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The configuration as an aligned `VARIABLE  value` table.
pub fn render(config: &Config) -> String {
    let keyring = &config.keyring;
    let secret = |key: &gate::keyring::Key| {
        format!("fingerprint {} (key id {:?})", key.fingerprint(), key.id())
    };
    let rows: Vec<(&str, String)> = vec![
        (
            vars::SECRET,
            keyring
                .current()
                .map_or_else(|| "unset (keys from the registry only)".into(), secret),
        ),
        (
            vars::SECRET_PREV,
            keyring
                .previous()
                .map_or_else(|| "unset (single-secret mode)".into(), secret),
        ),
        (vars::STRICT_KEY_ID, keyring.strict_key_id().to_string()),
        (
            vars::KEYS_FILE,
            config.key_source.keys_file().map_or_else(
                || "unset (no key registry)".into(),
                |path| {
                    format!(
                        "{} ({} keys, listed below)",
                        path.display(),
                        keyring.registry_keys().len()
                    )
                },
            ),
        ),
        (
            vars::AUDIENCE,
            keyring.audience().map_or_else(
                || "unset (version 2 signatures are refused)".into(),
                str::to_owned,
            ),
        ),
        (
            vars::REQUIRE_SIGNATURE,
            if config.require_signature {
                "true".into()
            } else {
                "false (report-only: nothing is rejected for a signature reason)".into()
            },
        ),
        (vars::DUAL_SIGN, config.dual_sign.to_string()),
        (vars::LISTEN, config.listen.to_string()),
        (vars::UPSTREAM, config.upstream.to_string()),
        (vars::ADMIN_LISTEN, config.admin_listen.to_string()),
        (vars::MAX_BODY_BYTES, config.max_body_bytes.to_string()),
        (vars::CLOCK_SKEW_SECS, config.clock_skew_secs.to_string()),
        (
            vars::NONCE_CACHE_CAPACITY,
            config.nonce_cache_capacity.to_string(),
        ),
        (vars::REPLAY_STORE, config.replay_store.to_string()),
        (
            vars::REPLAY_STORE_TIMEOUT_MS,
            config.replay_store_timeout.as_millis().to_string(),
        ),
        (
            vars::REPLAY_STORE_PREFIX,
            config.replay_store_prefix.clone(),
        ),
        (vars::UNSIGNED_PATHS, config.unsigned_paths.join(",")),
        (
            vars::UPSTREAM_TIMEOUT_SECS,
            config.upstream_timeout.as_secs().to_string(),
        ),
        (
            vars::SHUTDOWN_GRACE_SECS,
            config.shutdown_grace.as_secs().to_string(),
        ),
        (
            vars::HEADER_READ_TIMEOUT_SECS,
            config.header_read_timeout.as_secs().to_string(),
        ),
        (
            vars::BODY_READ_TIMEOUT_SECS,
            config.body_read_timeout.as_secs().to_string(),
        ),
        (vars::MAX_HEADER_BYTES, config.max_header_bytes.to_string()),
        (vars::MAX_CONNECTIONS, config.max_connections.to_string()),
        (
            vars::IDLE_TIMEOUT_SECS,
            config.idle_timeout.as_secs().to_string(),
        ),
        (
            vars::HTTP2_MAX_CONCURRENT_STREAMS,
            config.http2_max_concurrent_streams.to_string(),
        ),
        (
            vars::HTTP2_KEEPALIVE_SECS,
            config.http2_keepalive.as_secs().to_string(),
        ),
        (
            vars::MAX_BUFFERED_BODY_BYTES,
            config.max_buffered_body_bytes.to_string(),
        ),
        (vars::WORKERS, config.workers.to_string()),
        (
            vars::LOG_FORMAT,
            match config.log_format {
                LogFormat::Json => "json".into(),
                LogFormat::Text => "text".into(),
            },
        ),
        (vars::ACCESS_LOG, config.access_log.to_string()),
    ];
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut out = format!("configuration OK: {} mode\n", keyring.mode());
    for (name, value) in rows {
        out.push_str(&format!("  {name:<width$}  {value}\n"));
    }
    if !keyring.registry_keys().is_empty() {
        out.push_str("registry keys (version 2 only; secrets and public keys as fingerprints):\n");
        let table: Vec<[String; 5]> = std::iter::once(
            ["caller", "key id", "alg", "observe", "fingerprint"].map(str::to_owned),
        )
        .chain(keyring.registry_keys().iter().map(|key| {
            [
                key.caller().to_owned(),
                key.id().to_owned(),
                key.algorithm().to_string(),
                key.observe().to_string(),
                key.fingerprint().to_string(),
            ]
        }))
        .collect();
        let widths: Vec<usize> = (0..5)
            .map(|column| table.iter().map(|row| row[column].len()).max().unwrap_or(0))
            .collect();
        for row in &table {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
        }
    }
    out
}
