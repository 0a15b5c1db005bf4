//! The configuration file: TOML text through the same path `sig-gate serve` takes
//! (`Config::load`: figment, `GATE_CONFIG`, `Raw`, every check of `Config`). Never a panic,
//! and never a secret value in the error, its `Debug`, or the loaded configuration's `Debug`.
//!
//! Input: the file's text, in which every `$S` stands for a secret value (the seed corpus puts
//! it where secrets go, and in broken TOML around them), so that a leak can be recognised. The
//! leak check applies when every line holding the value assigns a secret key; other inputs
//! are checked for panics only.
//! The environment variables of the configuration are removed at start-up, so the file is the
//! only layer besides the defaults.
#![no_main]
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use gate::config::{vars, Config};
use libfuzzer_sys::fuzz_target;

/// The secret value: long enough to be accepted, and with a part no other text contains.
const SECRET: &str = "fuzz-secret-Zq7Xw9Kp-0123456789abcdefghij";
/// What marks a leak: the distinctive part, so that a truncated echo is caught too.
const MARK: &str = "Zq7Xw9Kp";

/// The file `GATE_CONFIG` names, set up once.
fn config_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("sig-gate-fuzz-config-{}.toml", std::process::id()));
        // libFuzzer runs the target on one thread; nothing else reads the environment.
        for name in vars::ALL {
            std::env::remove_var(name);
            std::env::remove_var(format!("{name}_FILE"));
        }
        std::env::set_var(vars::CONFIG_FILE, &path);
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data)
        .replace(MARK, "-")
        .replace("$S", SECRET);
    std::fs::write(config_file(), &text).expect("the temporary directory is writable");
    let loaded = Config::load();
    // The value is a secret only where a secret goes: when a line assigns it to another key,
    // that key's value may be shown (an upstream URL, a path), and no leak can be told apart.
    let only_as_secret = text.lines().filter(|line| line.contains(MARK)).all(|line| {
        line.split_once('=').is_some_and(|(key, _)| {
            matches!(
                key.trim(),
                "interservice_hmac_secret" | "interservice_hmac_secret_prev"
            )
        })
    });
    if !only_as_secret {
        return;
    }
    match loaded {
        Ok(config) => {
            let shown = format!("{config:?}");
            assert!(!shown.contains(MARK), "secret in Config's Debug: {shown}");
        }
        Err(err) => {
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(
                    !shown.contains(MARK),
                    "secret in a configuration error: {shown}"
                );
            }
        }
    }
});
