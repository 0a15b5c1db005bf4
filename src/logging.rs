//! Log setup: one JSON object per line on stderr (or plain text for a terminal), filtered by
//! `GATE_LOG` (tracing's directive syntax, default `info`). Log lines never carry secrets or
//! signatures: the only request fields logged are those the rejection event names.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Variable holding the log filter (for example `info` or `sig_gate=debug`).
pub const FILTER_VAR: &str = "GATE_LOG";

/// Install the global subscriber; a second call (tests, `demo`) keeps the first.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _already_set = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
