//! Where the keys come from ([`KeySource`]): the environment's secrets (given directly or as
//! `_FILE`), their key ids, the strict switch, the key registry (`GATE_KEYS_FILE`) and the
//! audience (`GATE_AUDIENCE`). Start-up and every reload build the [`Keyring`] the same way,
//! [`KeySource::load`], so a reload passes exactly the checks start-up does.
//!
//! Every file a load reads is recorded in [`Watched`] with a keyed hash of the bytes read,
//! so the reload watcher can tell when any of them changed (whatever the way: rewritten in
//! place, renamed over, or a Kubernetes `..data` symlink swapped) by reading them again.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{ConfigError, MIN_SECRET_BYTES, Raw, Text, boolean, invalid, key_id, text, vars};
use crate::keyring::{Algorithm, Key, Keyring, Secret, Slot};
use crate::protocol;
use crate::registry::{self, RegistryError};
use crate::sign::{Signer, SigningKey};

/// Largest file a key is read from (a secret, a registry, a private key): far above any real
/// one, and a bound on what a reload holds in memory.
pub const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;

/// An environment secret as configured: unset, given directly, or a file to read (again on
/// every reload).
#[derive(Debug, Clone)]
enum EnvSecret {
    Unset,
    Direct(Secret),
    File(PathBuf),
}

/// Everything the keys are built from; see the module documentation.
#[derive(Debug, Clone)]
pub struct KeySource {
    current: EnvSecret,
    previous: EnvSecret,
    current_id: String,
    previous_id: String,
    strict_key_id: bool,
    allow_weak: bool,
    keys_file: Option<PathBuf>,
    audience: Option<String>,
    /// Keyed (randomly, per process) hashes of file contents: what [`Watched`] compares, so
    /// the process keeps nothing an attacker could test a guessed secret against.
    hasher: RandomState,
}

impl KeySource {
    /// Check every variable that says where the keys are; the files themselves are read by
    /// [`KeySource::load`].
    pub fn from_raw(raw: &Raw) -> Result<KeySource, ConfigError> {
        let keys_file = text(&raw.gate_keys_file).map(PathBuf::from);
        let audience = match text(&raw.gate_audience) {
            Some(audience) if protocol::is_key_id(audience) => Some(audience.to_owned()),
            Some(audience) => {
                return Err(invalid(
                    vars::AUDIENCE,
                    format!("{audience:?} is not a name of 1-64 chars of A-Z a-z 0-9 . _ : -"),
                ));
            }
            None if keys_file.is_some() => {
                return Err(invalid(
                    vars::AUDIENCE,
                    format!(
                        "required with {}: the name version 2 signatures for this gate carry",
                        vars::KEYS_FILE
                    ),
                ));
            }
            None => None,
        };
        Ok(KeySource {
            current: env_secret(
                &raw.interservice_hmac_secret,
                &raw.interservice_hmac_secret_file,
                (vars::SECRET, vars::SECRET_FILE),
            )?,
            previous: env_secret(
                &raw.interservice_hmac_secret_prev,
                &raw.interservice_hmac_secret_prev_file,
                (vars::SECRET_PREV, vars::SECRET_PREV_FILE),
            )?,
            current_id: key_id(&raw.interservice_hmac_key_id, vars::KEY_ID, "current")?,
            previous_id: key_id(
                &raw.interservice_hmac_key_id_prev,
                vars::KEY_ID_PREV,
                "previous",
            )?,
            strict_key_id: boolean(
                &raw.interservice_hmac_strict_key_id,
                vars::STRICT_KEY_ID,
                false,
            )?,
            allow_weak: boolean(&raw.gate_allow_weak_secret, vars::ALLOW_WEAK_SECRET, false)?,
            keys_file,
            audience,
            hasher: RandomState::new(),
        })
    }

    /// The key registry's path, when one is configured.
    pub fn keys_file(&self) -> Option<&Path> {
        self.keys_file.as_deref()
    }

    /// Whether anything can change without a restart: a registry or a secret given as a file.
    pub fn reloadable(&self) -> bool {
        self.keys_file.is_some()
            || matches!(self.current, EnvSecret::File(_))
            || matches!(self.previous, EnvSecret::File(_))
    }

    /// Read every key file and build the keyring, with every start-up check.
    pub fn load(&self) -> Result<Keyring, ConfigError> {
        self.load_watched().0
    }

    /// [`KeySource::load`], and the files it read (those it read before a refusal included),
    /// for the reload watcher.
    pub fn load_watched(&self) -> (Result<Keyring, ConfigError>, Watched) {
        let mut watched = Watched {
            files: Vec::new(),
            hasher: self.hasher.clone(),
        };
        let keyring = self.build(&mut watched);
        (keyring, watched)
    }

    fn build(&self, watched: &mut Watched) -> Result<Keyring, ConfigError> {
        let current = self.env_secret(&self.current, (vars::SECRET, vars::SECRET_FILE), watched)?;
        let previous = self.env_secret(
            &self.previous,
            (vars::SECRET_PREV, vars::SECRET_PREV_FILE),
            watched,
        )?;
        if current.is_none() && self.keys_file.is_none() {
            return Err(invalid(
                vars::SECRET,
                format!(
                    "required (set it, or {} to a file holding it, or {} to a key registry)",
                    vars::SECRET_FILE,
                    vars::KEYS_FILE
                ),
            ));
        }
        if let Some(previous) = &previous {
            let Some(current) = &current else {
                return Err(invalid(
                    vars::SECRET_PREV,
                    format!(
                        "needs {}: a previous secret overlaps a current one",
                        vars::SECRET
                    ),
                ));
            };
            if previous == current {
                return Err(invalid(
                    vars::SECRET_PREV,
                    format!("equals {}: a rotation needs a new secret", vars::SECRET),
                ));
            }
            if self.current_id == self.previous_id {
                return Err(invalid(
                    vars::KEY_ID_PREV,
                    format!(
                        "equals {} ({:?}): each secret needs its own key id",
                        vars::KEY_ID,
                        self.current_id
                    ),
                ));
            }
        }
        let current = current.map(|s| Key::new(Slot::Current, self.current_id.clone(), &s));
        let previous = previous.map(|s| Key::new(Slot::Previous, self.previous_id.clone(), &s));
        let registry = match &self.keys_file {
            None => Vec::new(),
            Some(path) => {
                let reserved: Vec<(&str, &'static str)> = [
                    current.as_ref().map(|k| (k.id(), vars::KEY_ID)),
                    previous.as_ref().map(|k| (k.id(), vars::KEY_ID_PREV)),
                ]
                .into_iter()
                .flatten()
                .collect();
                let keys = registry::load(path, self.allow_weak, &reserved, &mut |file| {
                    watched.read(file)
                })?;
                if current.is_none() && keys.iter().all(Key::observe) {
                    return Err(RegistryError::whole(
                        path,
                        format!(
                            "no key grants access: every key is `observe = true` and {} is unset",
                            vars::SECRET
                        ),
                    )
                    .into());
                }
                keys
            }
        };
        Ok(Keyring::assemble(
            current,
            previous,
            registry,
            self.strict_key_id,
            self.audience.clone(),
        ))
    }

    /// Read and check one environment secret.
    fn env_secret(
        &self,
        secret: &EnvSecret,
        (var, file_var): (&'static str, &'static str),
        watched: &mut Watched,
    ) -> Result<Option<Secret>, ConfigError> {
        let secret = match secret {
            EnvSecret::Unset => return Ok(None),
            EnvSecret::Direct(secret) => secret.clone(),
            EnvSecret::File(path) => {
                let bytes = watched.read(path).map_err(|problem| {
                    invalid(
                        file_var,
                        format!("cannot read {}: {problem}", path.display()),
                    )
                })?;
                secret_text(bytes).ok_or_else(|| {
                    invalid(file_var, format!("{} is not UTF-8 text", path.display()))
                })?
            }
        };
        check_length(&secret, self.allow_weak).map_err(|problem| invalid(var, problem))?;
        Ok(Some(secret))
    }
}

/// A secret variable given directly or as `<VAR>_FILE` (never both).
fn env_secret(
    direct: &Option<Text>,
    file: &Option<Text>,
    (var, file_var): (&'static str, &'static str),
) -> Result<EnvSecret, ConfigError> {
    match (text(direct), text(file)) {
        (Some(_), Some(_)) => Err(invalid(
            var,
            format!("given both directly and as {file_var}: keep one"),
        )),
        (Some(value), None) => Ok(EnvSecret::Direct(Secret::new(value))),
        (None, Some(path)) => Ok(EnvSecret::File(PathBuf::from(path))),
        // An empty current secret is refused, not taken as unset: it is always a mistake.
        (None, None) if var == vars::SECRET && direct.is_some() => Err(invalid(var, "is empty")),
        (None, None) => Ok(EnvSecret::Unset),
    }
}

/// A secret file's bytes as a secret: one trailing `\n` or `\r\n` stripped, UTF-8 text;
/// `None` when not UTF-8.
pub(crate) fn secret_text(mut bytes: Zeroizing<Vec<u8>>) -> Option<Secret> {
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    std::str::from_utf8(&bytes).ok()?;
    Some(Secret::new(bytes.as_slice()))
}

/// Refuse an empty secret, and one shorter than [`MIN_SECRET_BYTES`] unless weak secrets are
/// allowed; the problem in words, without the secret.
pub(crate) fn check_length(secret: &Secret, allow_weak: bool) -> Result<(), String> {
    if secret.is_empty() {
        return Err("is empty".into());
    }
    if secret.len() < MIN_SECRET_BYTES && !allow_weak {
        return Err(format!(
            "is {} bytes, shorter than {MIN_SECRET_BYTES} (generate one with `sig-gate keygen`, \
             or set {}=true to accept it)",
            secret.len(),
            vars::ALLOW_WEAK_SECRET
        ));
    }
    Ok(())
}

/// Read a key file whole, at most [`MAX_KEY_FILE_BYTES`]; the error in words.
pub(crate) fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let file = std::fs::File::open(path).map_err(|err| err.to_string())?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!("larger than {MAX_KEY_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}

/// The files one load read, each with a keyed hash of what it held then (`None`: it could not
/// be read).
#[derive(Debug, Clone)]
pub struct Watched {
    files: Vec<(PathBuf, Option<u64>)>,
    hasher: RandomState,
}

impl Watched {
    /// Read `path` for a load, and remember what it held.
    fn read(&mut self, path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
        let read = read_key_file(path);
        let hash = read
            .as_ref()
            .ok()
            .map(|bytes| self.hasher.hash_one(bytes.as_slice()));
        self.files.push((path.to_owned(), hash));
        read
    }

    /// The files, in the order the load read them.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(path, _)| path.as_path())
    }

    /// A keyed hash of what each file holds now (`None`: unreadable), in [`Watched::paths`]
    /// order: two equal results mean nothing changed in between.
    pub fn contents(&self) -> Vec<Option<u64>> {
        self.files
            .iter()
            .map(|(path, _)| {
                read_key_file(path)
                    .ok()
                    .map(|bytes| self.hasher.hash_one(bytes.as_slice()))
            })
            .collect()
    }

    /// Whether any file now holds something else than when it was read (or can now be read,
    /// or no longer): each is read again, following symlinks, so a file rewritten in place, a
    /// file renamed over it and a swapped symlink all count.
    pub fn changed(&self) -> bool {
        self.contents()
            .into_iter()
            .zip(&self.files)
            .any(|(now, (_, then))| now != *then)
    }
}

/// The version 1 or version 2 signer the signer variables describe (see
/// [`super::signer`]).
pub(super) fn signer(raw: &Raw) -> Result<Signer, ConfigError> {
    let allow_weak = boolean(&raw.gate_allow_weak_secret, vars::ALLOW_WEAK_SECRET, false)?;
    let id = text(&raw.gate_signing_key_id);
    let file = text(&raw.gate_signing_key_file);
    if id.is_none() && file.is_none() {
        return signer_v1(raw);
    }
    let id = signing_id(id, vars::SIGNING_KEY_ID, vars::SIGNING_KEY_FILE)?;
    let file = file.ok_or_else(|| {
        invalid(
            vars::SIGNING_KEY_FILE,
            format!(
                "required with {}: the file holding the key",
                vars::SIGNING_KEY_ID
            ),
        )
    })?;
    let audience = match text(&raw.gate_audience) {
        Some(audience) if protocol::is_key_id(audience) => audience,
        Some(audience) => {
            return Err(invalid(
                vars::AUDIENCE,
                format!("{audience:?} is not a name of 1-64 chars of A-Z a-z 0-9 . _ : -"),
            ));
        }
        None => {
            return Err(invalid(
                vars::AUDIENCE,
                format!(
                    "required with {}: the audience of the gate the requests are for",
                    vars::SIGNING_KEY_ID
                ),
            ));
        }
    };
    let alg = match text(&raw.gate_signing_alg) {
        None => Algorithm::HmacSha256,
        Some(alg) => Algorithm::parse(alg).ok_or_else(|| {
            invalid(
                vars::SIGNING_ALG,
                format!("{alg:?} is not hmac-sha256 or ed25519"),
            )
        })?,
    };
    let key = signing_key(id, Path::new(file), alg, vars::SIGNING_KEY_FILE, allow_weak)?;
    let mut signer = Signer::v2(key, audience);
    let observe_id = text(&raw.gate_observe_key_id);
    let observe_file = text(&raw.gate_observe_key_file);
    if observe_id.is_some() || observe_file.is_some() {
        let observe_id = signing_id(observe_id, vars::OBSERVE_KEY_ID, vars::OBSERVE_KEY_FILE)?;
        let observe_file = observe_file.ok_or_else(|| {
            invalid(
                vars::OBSERVE_KEY_FILE,
                format!("required with {}", vars::OBSERVE_KEY_ID),
            )
        })?;
        if observe_id == id {
            return Err(invalid(
                vars::OBSERVE_KEY_ID,
                format!(
                    "equals {}: the second signature needs its own key",
                    vars::SIGNING_KEY_ID
                ),
            ));
        }
        let observed = signing_key(
            observe_id,
            Path::new(observe_file),
            Algorithm::Ed25519,
            vars::OBSERVE_KEY_FILE,
            allow_weak,
        )?;
        signer = signer.also_signing_with(observed);
    }
    Ok(signer)
}

/// A signing key id, present and well-formed.
fn signing_id<'a>(
    id: Option<&'a str>,
    var: &'static str,
    file_var: &'static str,
) -> Result<&'a str, ConfigError> {
    match id {
        Some(id) if protocol::is_key_id(id) => Ok(id),
        Some(id) => Err(invalid(
            var,
            format!("{id:?} is not a key id (1-64 chars of A-Z a-z 0-9 . _ : -)"),
        )),
        None => Err(invalid(var, format!("required with {file_var}"))),
    }
}

/// Read a version 2 signing key of `alg` from `path`.
fn signing_key(
    id: &str,
    path: &Path,
    alg: Algorithm,
    var: &'static str,
    allow_weak: bool,
) -> Result<SigningKey, ConfigError> {
    let bytes = read_key_file(path)
        .map_err(|problem| invalid(var, format!("cannot read {}: {problem}", path.display())))?;
    match alg {
        Algorithm::HmacSha256 => {
            let secret = secret_text(bytes)
                .ok_or_else(|| invalid(var, format!("{} is not UTF-8 text", path.display())))?;
            check_length(&secret, allow_weak)
                .map_err(|problem| invalid(var, format!("{}: {problem}", path.display())))?;
            Ok(SigningKey::hmac(id, &secret))
        }
        Algorithm::Ed25519 => {
            let pem = std::str::from_utf8(&bytes)
                .map_err(|_| invalid(var, format!("{}: not a PEM text file", path.display())))?;
            SigningKey::ed25519_pem(id, pem)
                .map_err(|err| invalid(var, format!("{}: {err}", path.display())))
        }
    }
}

/// The version 1 signer: the current secret, and the previous one when dual-signing.
fn signer_v1(raw: &Raw) -> Result<Signer, ConfigError> {
    let mut source = KeySource::from_raw(raw)?;
    // A signer signs with the environment's secrets; a registry and an audience are the gate's.
    source.keys_file = None;
    source.audience = None;
    if matches!(source.current, EnvSecret::Unset) {
        return Err(invalid(
            vars::SECRET,
            format!(
                "required (set it, or {} to a file holding it; or {} and {} to sign version 2)",
                vars::SECRET_FILE,
                vars::SIGNING_KEY_ID,
                vars::SIGNING_KEY_FILE
            ),
        ));
    }
    let keyring = source.load()?;
    let current = keyring
        .current()
        .cloned()
        .ok_or_else(|| invalid(vars::SECRET, "required"))?;
    let dual = boolean(&raw.tool_gate_dual_sign, vars::DUAL_SIGN, false)?;
    let dual_with = match (dual, keyring.previous()) {
        (true, Some(previous)) => Some(previous.clone()),
        (true, None) => {
            return Err(invalid(
                vars::DUAL_SIGN,
                format!("true needs a previous secret: set {}", vars::SECRET_PREV),
            ));
        }
        (false, _) => None,
    };
    Ok(Signer::new(current, dual_with))
}
