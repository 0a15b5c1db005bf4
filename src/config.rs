//! Configuration: figment layers (defaults < TOML file < environment) into a raw struct close to
//! the environment names, then `TryFrom` into a typed [`Config`] that nothing downstream
//! re-checks.

/// Why the configuration was refused. Every message names the offending variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value that does not parse or is out of range.
    #[error("{var}: {problem}")]
    Invalid {
        /// The environment variable (or flag) at fault.
        var: &'static str,
        /// What is wrong with it, never including a secret.
        problem: String,
    },
}

/// Parse the boolean spellings of contract section 3: `true/false/1/0/yes/no`, any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: [&str; 3] = ["true", "1", "yes"];
    const FALSE: [&str; 3] = ["false", "0", "no"];
    if TRUE.iter().any(|t| value.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| value.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}
