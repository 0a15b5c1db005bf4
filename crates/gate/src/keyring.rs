//! Secrets, public keys and the keys built from them, and the [`Keyring`]: every key a gate
//! verifies with at one moment.
//!
//! A [`Secret`] never shows its bytes: `Debug` and `Display` print its fingerprint. A [`Key`]
//! is one verifying key of either algorithm ([`Algorithm`]): an HMAC-SHA256 key holds one
//! pre-keyed HMAC state built when the key is loaded and cloned per signature, so no request
//! pays for the key schedule; an Ed25519 key holds its 32-byte public key. Each key knows its
//! caller, its origin (an environment secret's slot, or the key registry) and whether it only
//! observes, and carries the header values the gate sends upstream for it, built once.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::protocol::{self, DIGEST_LEN, ED25519_SIGNATURE_LEN, SignedString, V2Line};

/// HMAC-SHA256, the only MAC of signature version 1.
pub type HmacSha256 = Hmac<Sha256>;

/// Message whose MAC identifies a secret to operators without revealing it.
const FINGERPRINT_MESSAGE: &[u8] = b"sig-gate fingerprint";

/// A shared secret: its UTF-8 bytes are the HMAC key. The bytes are overwritten with zeros
/// when the secret is dropped (and so are the pre-keyed HMAC states built from it: `hmac` and
/// `sha2` are built with their `zeroize` features), so a secret retired by a reload or a
/// finished start-up check does not linger in freed memory.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wrap secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(Zeroizing::new(bytes.into()))
    }

    /// Length in bytes (start-up refuses secrets shorter than 32 bytes by default).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for a zero-length secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first 8 hex chars of HMAC-SHA256(key = secret, "sig-gate fingerprint"): enough to
    /// tell which secret a pod runs, nothing to attack.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut mac = self.mac();
        mac.update(FINGERPRINT_MESSAGE);
        Fingerprint::of_digest(&mac.finalize().into_bytes().into())
    }

    /// The HMAC state keyed with this secret.
    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this constructor cannot fail.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

/// Compared in constant time: start-up compares the previous secret with the current one, and
/// no comparison of secret bytes should leak where they first differ.
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(fingerprint={})", self.fingerprint())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fingerprint {}", self.fingerprint())
    }
}

/// First 8 lowercase hex chars of a secret's fingerprint MAC, or of the SHA-256 of an Ed25519
/// public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
    fn of_digest(full: &[u8; DIGEST_LEN]) -> Fingerprint {
        let hex = protocol::hex32(full);
        let mut short = [0u8; 8];
        short.copy_from_slice(&hex[..8]);
        Fingerprint(short)
    }

    /// The 8 hex chars.
    pub fn as_str(&self) -> &str {
        // Built from hex digits only.
        std::str::from_utf8(&self.0).expect("fingerprint is hex")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Ed25519 public key: the 32 bytes of RFC 8032, written in the registry as base64url
/// without padding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// Parse the registry's form: base64url without padding of exactly 32 bytes.
    pub fn parse(text: &str) -> Option<PublicKey> {
        // 32 bytes are 43 base64 characters without padding; checking the length first keeps
        // a long value from being decoded at all.
        if text.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        bytes.try_into().ok().map(PublicKey)
    }

    /// The registry's form: base64url without padding.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex chars of SHA-256 of the 32 bytes.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_digest(&Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64url())
    }
}

/// Which configured secret a signature verified under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `INTERSERVICE_HMAC_SECRET`.
    Current,
    /// `INTERSERVICE_HMAC_SECRET_PREV`.
    Previous,
}

impl Slot {
    /// Both slots, current first (verification order and metric registration order).
    pub const ALL: [Slot; 2] = [Slot::Current, Slot::Previous];

    /// The `slot` label of `sig_gate_verified_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Current => "current",
            Slot::Previous => "previous",
        }
    }
}

/// The signature algorithm of a key. A version 2 signature is checked with its key's
/// algorithm, never one the request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret.
    HmacSha256,
    /// Ed25519 (RFC 8032): the caller holds the private key, the gate the public key.
    Ed25519,
}

impl Algorithm {
    /// The registry's `alg` value, the `alg` metric label and line 2 of the version 2 signed
    /// string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// Parse an `alg` value.
    pub fn parse(text: &str) -> Option<Algorithm> {
        match text {
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }

    /// Length of its signatures in bytes (twice that in hex).
    pub const fn signature_len(self) -> usize {
        match self {
            Algorithm::HmacSha256 => DIGEST_LEN,
            Algorithm::Ed25519 => ED25519_SIGNATURE_LEN,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of the environment's secrets (`INTERSERVICE_HMAC_SECRET` and `_PREV`): every
/// service that holds them, so the gate cannot tell which one called.
pub const SHARED_CALLER: &str = "shared";

/// Where a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An environment secret, in its slot: verifies versions 1 and 2.
    Env(Slot),
    /// The key registry (`GATE_KEYS_FILE`): verifies version 2 only.
    Registry,
}

/// What a key checks signatures with.
#[derive(Clone)]
enum Verifier {
    Hmac(HmacSha256),
    Ed25519(PublicKey),
}

/// One verifying key with its id, caller and origin, ready to check signatures: an HMAC key's
/// state is keyed once, when the key is loaded.
#[derive(Clone)]
pub struct Key {
    id: String,
    caller: String,
    origin: Origin,
    observe: bool,
    verifier: Verifier,
    fingerprint: Fingerprint,
    /// `X-Gate-Verified-Key-Id` and `X-Gate-Verified-Caller` for requests this key admits.
    headers: VerifiedHeaders,
}

/// The values of the headers the gate adds for a key, built with the key.
#[derive(Clone)]
struct VerifiedHeaders {
    key_id: HeaderValue,
    caller: HeaderValue,
}

impl VerifiedHeaders {
    fn new(id: &str, caller: &str) -> VerifiedHeaders {
        // Key ids and callers are validated to `A-Z a-z 0-9 . _ : -` before a key is built:
        // always valid header values.
        let value = |text: &str| HeaderValue::from_str(text).expect("key ids are header-safe");
        VerifiedHeaders {
            key_id: value(id),
            caller: value(caller),
        }
    }
}

impl Key {
    /// The key of an environment secret in `slot`, with its (already validated) key id; its
    /// caller is [`SHARED_CALLER`].
    pub fn new(slot: Slot, id: String, secret: &Secret) -> Self {
        Key::build(
            id,
            SHARED_CALLER.to_owned(),
            Origin::Env(slot),
            false,
            Verifier::Hmac(secret.mac()),
            secret.fingerprint(),
        )
    }

    /// A registry key of algorithm HMAC-SHA256 held by `caller`; id and caller already
    /// validated (key id syntax).
    pub fn hmac(id: String, caller: String, secret: &Secret, observe: bool) -> Self {
        Key::build(
            id,
            caller,
            Origin::Registry,
            observe,
            Verifier::Hmac(secret.mac()),
            secret.fingerprint(),
        )
    }

    /// A registry key of algorithm Ed25519 held by `caller`; id and caller already validated.
    pub fn ed25519(id: String, caller: String, public: PublicKey, observe: bool) -> Self {
        let fingerprint = public.fingerprint();
        Key::build(
            id,
            caller,
            Origin::Registry,
            observe,
            Verifier::Ed25519(public),
            fingerprint,
        )
    }

    fn build(
        id: String,
        caller: String,
        origin: Origin,
        observe: bool,
        verifier: Verifier,
        fingerprint: Fingerprint,
    ) -> Key {
        let headers = VerifiedHeaders::new(&id, &caller);
        Key {
            id,
            caller,
            origin,
            observe,
            verifier,
            fingerprint,
            headers,
        }
    }

    /// The configured key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The service that holds the key ([`SHARED_CALLER`] for the environment's secrets).
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// Where the key comes from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The slot of an environment secret; `None` for a registry key.
    pub fn slot(&self) -> Option<Slot> {
        match self.origin {
            Origin::Env(slot) => Some(slot),
            Origin::Registry => None,
        }
    }

    /// True for an observe key: its signatures are checked and counted, never admitted.
    pub fn observe(&self) -> bool {
        self.observe
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.verifier {
            Verifier::Hmac(_) => Algorithm::HmacSha256,
            Verifier::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// The secret's fingerprint, or the public key's.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The Ed25519 public key; `None` for an HMAC key.
    pub fn public_key(&self) -> Option<&PublicKey> {
        match &self.verifier {
            Verifier::Hmac(_) => None,
            Verifier::Ed25519(public) => Some(public),
        }
    }

    /// `X-Gate-Verified-Key-Id` for a request this key admits.
    pub fn verified_key_id(&self) -> &HeaderValue {
        &self.headers.key_id
    }

    /// `X-Gate-Verified-Caller` for a request this key admits.
    pub fn verified_caller(&self) -> &HeaderValue {
        &self.headers.caller
    }

    /// Version 1 HMAC of the signed string computed with `key_id` on line 2.
    ///
    /// # Panics
    ///
    /// On an Ed25519 key, which has no MAC: only keys built by [`Key::new`] and [`Key::hmac`]
    /// sign version 1.
    pub fn mac(&self, signed: &SignedString<'_>, key_id: &str) -> [u8; DIGEST_LEN] {
        let Verifier::Hmac(keyed) = &self.verifier else {
            panic!("key {:?} is an Ed25519 key: it has no MAC", self.id);
        };
        let mut mac = keyed.clone();
        signed.write(key_id, |piece| mac.update(piece));
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of a version 1 `tag` against the HMAC of the signed string for
    /// `key_id`; always false for an Ed25519 key (version 1 is HMAC only).
    pub fn verifies(
        &self,
        signed: &SignedString<'_>,
        key_id: &str,
        tag: &[u8; DIGEST_LEN],
    ) -> bool {
        let Verifier::Hmac(keyed) = &self.verifier else {
            return false;
        };
        let mut mac = keyed.clone();
        signed.write(key_id, |piece| mac.update(piece));
        // `verify_slice` is length-checked and compares in constant time (subtle).
        mac.verify_slice(tag).is_ok()
    }

    /// Check a version 2 `signature` over the signed string with this key's own algorithm, id
    /// and `audience`. A signature of the other algorithm's length never verifies. HMAC tags
    /// are compared in constant time; Ed25519 is checked by `ring`.
    pub fn verifies_v2(&self, signed: &SignedString<'_>, audience: &str, signature: &[u8]) -> bool {
        let line = V2Line {
            algorithm: self.algorithm().as_str(),
            key_id: &self.id,
            audience,
        };
        match &self.verifier {
            Verifier::Hmac(keyed) => {
                let mut mac = keyed.clone();
                signed.write_v2(line, |piece| mac.update(piece));
                // Length-checked (a 64-byte signature fails) and constant time.
                mac.verify_slice(signature).is_ok()
            }
            Verifier::Ed25519(public) => {
                if signature.len() != ED25519_SIGNATURE_LEN {
                    return false;
                }
                let key = ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ED25519,
                    public.as_bytes(),
                );
                signed.with_v2(line, |message| key.verify(message, signature).is_ok())
            }
        }
    }

    /// The version 2 HMAC of the signed string for this key and `audience` (the signer's side
    /// of [`Key::verifies_v2`]); `None` for an Ed25519 key, whose private half the gate never
    /// holds.
    pub fn mac_v2(&self, signed: &SignedString<'_>, audience: &str) -> Option<[u8; DIGEST_LEN]> {
        let Verifier::Hmac(keyed) = &self.verifier else {
            return None;
        };
        let line = V2Line {
            algorithm: Algorithm::HmacSha256.as_str(),
            key_id: &self.id,
            audience,
        };
        let mut mac = keyed.clone();
        signed.write_v2(line, |piece| mac.update(piece));
        Some(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("caller", &self.caller)
            .field("origin", &self.origin)
            .field("alg", &self.algorithm())
            .field("observe", &self.observe)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Where a key sits in its [`Keyring`], and its slot: what the proof of a verified request
/// records, so that the gate finds the key (its headers, its counters) in the very keyring
/// that verified the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyIndex {
    index: usize,
    slot: Option<Slot>,
}

impl KeyIndex {
    /// The key's position in [`Keyring::keys`].
    pub fn index(self) -> usize {
        self.index
    }

    /// The environment secret's slot; `None` for a registry key.
    pub fn slot(self) -> Option<Slot> {
        self.slot
    }
}

/// Every key a gate verifies with at one moment, and how: the environment's secrets (current,
/// then previous) first, then the registry's keys in file order; whether version 1 key ids are
/// bound to their secrets; and the audience version 2 signatures must name.
///
/// A keyring is never changed: a reload builds a new one and swaps it in whole, so a request is
/// verified with the keys of one moment.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Environment keys first (`env` of them), then registry keys.
    keys: Vec<Key>,
    env: usize,
    strict_key_id: bool,
    audience: Option<String>,
}

impl Keyring {
    /// A keyring of the environment's secrets only, without an audience (so version 2 is
    /// refused); the configuration has already checked that the two secrets and the two key
    /// ids differ.
    pub fn new(current: Key, previous: Option<Key>, strict_key_id: bool) -> Self {
        Keyring::assemble(Some(current), previous, Vec::new(), strict_key_id, None)
    }

    /// A keyring of optional environment secrets, registry keys (in file order) and an
    /// optional audience. The caller has checked every key id is unique and the audience is a
    /// well-formed key id.
    pub fn assemble(
        current: Option<Key>,
        previous: Option<Key>,
        registry: Vec<Key>,
        strict_key_id: bool,
        audience: Option<String>,
    ) -> Self {
        let mut keys: Vec<Key> = current.into_iter().chain(previous).collect();
        let env = keys.len();
        keys.extend(registry);
        Keyring {
            keys,
            env,
            strict_key_id,
            audience,
        }
    }

    /// The current environment secret's key, when set.
    pub fn current(&self) -> Option<&Key> {
        self.env_key(Slot::Current)
    }

    /// The previous environment secret's key, in dual-secret mode.
    pub fn previous(&self) -> Option<&Key> {
        self.env_key(Slot::Previous)
    }

    /// Every key, in order: environment secrets (current first), then the registry's.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The environment secrets' keys, current first: the only keys of version 1.
    pub fn env_keys(&self) -> &[Key] {
        &self.keys[..self.env]
    }

    /// The registry's keys, in file order.
    pub fn registry_keys(&self) -> &[Key] {
        &self.keys[self.env..]
    }

    /// The key in `slot`, if configured.
    pub fn key(&self, slot: Slot) -> Option<&Key> {
        self.env_key(slot)
    }

    fn env_key(&self, slot: Slot) -> Option<&Key> {
        self.env_keys().iter().find(|key| key.slot() == Some(slot))
    }

    /// The key with id `id` and where it sits. Key ids are unique in a keyring; a linear scan
    /// over a registry's handful of keys costs less than hashing the id.
    pub fn find(&self, id: &str) -> Option<(KeyIndex, &Key)> {
        self.keys
            .iter()
            .enumerate()
            .find(|(_, key)| key.id == id)
            .map(|(index, key)| (self.index_of(index, key), key))
    }

    /// The [`KeyIndex`] of the key at `index`.
    pub(crate) fn index_of(&self, index: usize, key: &Key) -> KeyIndex {
        KeyIndex {
            index,
            slot: key.slot(),
        }
    }

    /// The key a [`KeyIndex`] of this keyring names.
    pub fn at(&self, index: KeyIndex) -> Option<&Key> {
        self.keys.get(index.index)
    }

    /// Whether a version 1 signature's key id must name the secret it is checked with.
    pub fn strict_key_id(&self) -> bool {
        self.strict_key_id
    }

    /// This gate's audience (`GATE_AUDIENCE`); without one, version 2 is refused.
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// `none` (no environment secret), `single` or `dual`, for `sig_gate_config_info`.
    pub fn mode(&self) -> &'static str {
        match self.env {
            0 => "none",
            1 => "single",
            _ => "dual",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_show_only_the_fingerprint() {
        let secret = Secret::new("a-very-secret-value-that-must-not-leak!!");
        let fp = secret.fingerprint().to_string();
        assert_eq!(fp.len(), 8);
        assert!(
            fp.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        for shown in [format!("{secret:?}"), format!("{secret}")] {
            assert!(!shown.contains("secret-value"), "{shown}");
            assert!(shown.contains(&fp));
        }
        let key = Key::new(Slot::Current, "current".into(), &secret);
        assert!(!format!("{key:?}").contains("secret-value"));
        let key = Key::hmac("lg-1".into(), "langgraph".into(), &secret, false);
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("secret-value") && shown.contains(&fp),
            "{shown}"
        );
    }

    #[test]
    fn secret_material_is_wiped_when_dropped() {
        // Compiles only while every holder of key material overwrites it on drop: the secret's
        // bytes, and the pre-keyed HMAC state, which is two SHA-256 cores (the states after
        // the inner and the outer padded key) that `sha2`'s `zeroize` feature wipes.
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Zeroizing<Vec<u8>>>();
        wiped_on_drop::<<Sha256 as hmac::digest::block_api::CoreProxy>::Core>();
        let _: fn(&Secret) -> &Zeroizing<Vec<u8>> = |secret| &secret.0;
    }

    #[test]
    fn secrets_compare_by_value() {
        let a = Secret::new("a-very-secret-value-that-must-not-leak!!");
        assert_eq!(a, a.clone());
        assert_ne!(a, Secret::new("a-very-secret-value-that-must-not-leak!?"));
        assert_ne!(a, Secret::new("a-very-secret-value"));
    }

    #[test]
    fn fingerprint_is_hmac_of_fixed_message() {
        // HMAC-SHA256(key="key", "sig-gate fingerprint"), first 8 hex chars, computed
        // independently with Python's hmac module.
        assert_eq!(Secret::new("key").fingerprint().as_str(), "1dbb1f59");
    }
}
