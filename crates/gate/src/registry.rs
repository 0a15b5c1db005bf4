//! The key registry (`GATE_KEYS_FILE`, docs/operations.md "Caller keys"): a TOML file of
//! `[[key]]` entries, each one caller's key of either algorithm.
//!
//! ```toml
//! [[key]]
//! id = "langgraph-2026-12"          # key id syntax; unique across the registry and the env key ids
//! caller = "langgraph"              # key id syntax; the service that holds the key
//! alg = "hmac-sha256"               # or "ed25519"
//! secret_file = "secrets/langgraph" # hmac-sha256 only; relative to this file's directory
//! # public_key = "..."              # ed25519 only: base64url, no padding, of 32 bytes
//! observe = false                   # optional: true = checked and counted, never admitted
//! ```
//!
//! [`load`] reads and checks the whole file and every secret file it names, strictly: an
//! unknown field, a duplicate id, missing or extra key material, a short secret or a bad public
//! key refuses the whole registry, and every refusal ([`RegistryError`]) names the file and the
//! entry. The registry itself holds no secret, so its errors may quote it; a secret file's
//! content never appears in one.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::{check_length, secret_text};
use crate::keyring::{Algorithm, Key, PublicKey, SHARED_CALLER};
use crate::protocol;

/// A registry refused: the file, the entry (when the problem is one entry's) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{problem}", file.display(), entry.as_ref().map(|e| format!("{e}: ")).unwrap_or_default())]
pub struct RegistryError {
    /// The registry file.
    pub file: PathBuf,
    /// The entry at fault, when one is.
    pub entry: Option<Entry>,
    /// What is wrong, never including a secret.
    pub problem: String,
}

/// Which entry of the registry a problem is in: by its id, or by its position when it has no
/// usable id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The entry's `id`.
    Id(String),
    /// The n-th `[[key]]` (from 1), which has no well-formed `id`.
    Position(usize),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Id(id) => write!(f, "key {id:?}"),
            Entry::Position(n) => write!(f, "[[key]] number {n} (no valid id)"),
        }
    }
}

impl RegistryError {
    /// A problem with the whole file.
    pub fn whole(file: &Path, problem: impl Into<String>) -> RegistryError {
        RegistryError {
            file: file.to_owned(),
            entry: None,
            problem: problem.into(),
        }
    }

    fn entry(file: &Path, entry: &Entry, problem: impl Into<String>) -> RegistryError {
        RegistryError {
            file: file.to_owned(),
            entry: Some(entry.clone()),
            problem: problem.into(),
        }
    }
}

/// One `[[key]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: String,
    caller: String,
    alg: String,
    secret_file: Option<String>,
    public_key: Option<String>,
    #[serde(default)]
    observe: bool,
}

/// Reads one file whole for [`load`]; the error in words.
pub type ReadFile<'a> = dyn FnMut(&Path) -> Result<Zeroizing<Vec<u8>>, String> + 'a;

/// Read the registry at `path` and build its keys, in file order. `reserved` are the key ids
/// already taken (the environment secrets', with the variable that sets each); `read` reads
/// a file whole (the reload watcher records what it read).
pub fn load(
    path: &Path,
    allow_weak: bool,
    reserved: &[(&str, &'static str)],
    read: &mut ReadFile<'_>,
) -> Result<Vec<Key>, RegistryError> {
    let bytes =
        read(path).map_err(|err| RegistryError::whole(path, format!("cannot read: {err}")))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| RegistryError::whole(path, "not UTF-8 text"))?;
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
        // Reported by line and column, not quoted: the same rule as the configuration file.
        let at = err.span().map_or(String::new(), |span| {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!(" at line {line}, column {column}")
        });
        RegistryError::whole(path, format!("TOML syntax error{at}: {}", err.message()))
    })?;
    if let Some(other) = table.keys().find(|name| *name != "key") {
        return Err(RegistryError::whole(
            path,
            format!("unknown field `{other}`: a registry holds only [[key]] entries"),
        ));
    }
    let entries = match table.get("key") {
        None => &Vec::new(),
        Some(toml::Value::Array(entries)) => entries,
        Some(_) => {
            return Err(RegistryError::whole(
                path,
                "`key` must be an array of tables: write each key as [[key]]",
            ));
        }
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut keys: Vec<Key> = Vec::with_capacity(entries.len());
    for (n, value) in entries.iter().enumerate() {
        let entry = match value.get("id").and_then(toml::Value::as_str) {
            Some(id) if protocol::is_key_id(id) => Entry::Id(id.to_owned()),
            _ => Entry::Position(n + 1),
        };
        let fail = |problem: String| RegistryError::entry(path, &entry, problem);
        if !value.is_table() {
            return Err(fail("not a table: write each key as [[key]]".into()));
        }
        let raw: RawEntry = value
            .clone()
            .try_into()
            .map_err(|err: toml::de::Error| fail(err.message().trim().to_owned()))?;
        if !protocol::is_key_id(&raw.id) {
            return Err(fail(format!(
                "id {:?} is not a key id (1-64 chars of A-Z a-z 0-9 . _ : -)",
                raw.id
            )));
        }
        if !protocol::is_key_id(&raw.caller) {
            return Err(fail(format!(
                "caller {:?} is not a name of 1-64 chars of A-Z a-z 0-9 . _ : -",
                raw.caller
            )));
        }
        if raw.caller == SHARED_CALLER {
            return Err(fail(format!(
                "caller {SHARED_CALLER:?} is reserved for the environment's shared secrets"
            )));
        }
        if let Some((_, var)) = reserved.iter().find(|(id, _)| *id == raw.id) {
            return Err(fail(format!("duplicate id: it is also {var}")));
        }
        if keys.iter().any(|key| key.id() == raw.id) {
            return Err(fail("duplicate id: an earlier [[key]] has it".into()));
        }
        let alg = Algorithm::parse(&raw.alg)
            .ok_or_else(|| fail(format!("alg {:?} is not hmac-sha256 or ed25519", raw.alg)))?;
        let key = match (alg, raw.secret_file, raw.public_key) {
            (Algorithm::HmacSha256, Some(file), None) => {
                let file = dir.join(file);
                let bytes = read(&file)
                    .map_err(|err| fail(format!("secret_file {}: {err}", file.display())))?;
                let secret = secret_text(bytes).ok_or_else(|| {
                    fail(format!("secret_file {}: not UTF-8 text", file.display()))
                })?;
                check_length(&secret, allow_weak).map_err(|problem| {
                    fail(format!("secret_file {}: {problem}", file.display()))
                })?;
                Key::hmac(raw.id, raw.caller, &secret, raw.observe)
            }
            (Algorithm::Ed25519, None, Some(public_key)) => {
                let public = PublicKey::parse(&public_key).ok_or_else(|| {
                    fail("public_key is not base64url (no padding) of 32 bytes".into())
                })?;
                Key::ed25519(raw.id, raw.caller, public, raw.observe)
            }
            (Algorithm::HmacSha256, None, _) => {
                return Err(fail("alg hmac-sha256 needs secret_file".into()));
            }
            (Algorithm::HmacSha256, Some(_), Some(_)) => {
                return Err(fail(
                    "alg hmac-sha256 takes secret_file, not public_key".into(),
                ));
            }
            (Algorithm::Ed25519, _, None) => {
                return Err(fail("alg ed25519 needs public_key".into()));
            }
            (Algorithm::Ed25519, Some(_), Some(_)) => {
                return Err(fail("alg ed25519 takes public_key, not secret_file".into()));
            }
        };
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
