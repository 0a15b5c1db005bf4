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

/// Lets one log line through per interval: for events an attacker can repeat at will (a
/// connection over the cap, a body over the budget), which a metric counts one by one.
#[derive(Debug)]
pub struct Throttle {
    start: std::time::Instant,
    interval_ms: u64,
    /// Milliseconds since `start` before which no line passes.
    next_ms: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// At most one line per `interval`.
    pub fn new(interval: std::time::Duration) -> Throttle {
        Throttle {
            start: std::time::Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now; at most one caller per interval gets `true`.
    pub fn allow(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_through_per_interval() {
        let throttle = Throttle::new(std::time::Duration::from_secs(3600));
        assert!(throttle.allow());
        assert!(!throttle.allow());
        let open = Throttle::new(std::time::Duration::ZERO);
        assert!(open.allow() && open.allow());
    }
}
