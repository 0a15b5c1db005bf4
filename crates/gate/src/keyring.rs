//! Secrets and the keys built from them. A [`Secret`] never shows its bytes: `Debug` and
//! `Display` print its fingerprint. A [`Key`] holds one pre-keyed HMAC state built at start-up
//! and cloned per signature, so no request pays for the key schedule.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::protocol::{self, DIGEST_LEN, SignedString};

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
        let full: [u8; DIGEST_LEN] = mac.finalize().into_bytes().into();
        let hex = protocol::hex32(&full);
        let mut short = [0u8; 8];
        short.copy_from_slice(&hex[..8]);
        Fingerprint(short)
    }

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

/// First 8 lowercase hex chars of a secret's fingerprint MAC.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
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

/// One secret with its key id, ready to sign: the HMAC state is keyed once, at start-up.
#[derive(Clone)]
pub struct Key {
    id: String,
    slot: Slot,
    keyed: HmacSha256,
    fingerprint: Fingerprint,
}

impl Key {
    /// Build the key for `slot` from a secret and its (already validated) key id.
    pub fn new(slot: Slot, id: String, secret: &Secret) -> Self {
        Key {
            id,
            slot,
            keyed: secret.mac(),
            fingerprint: secret.fingerprint(),
        }
    }

    /// The configured key id label.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Current or previous.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The secret's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// HMAC of the signed string computed with `key_id` on line 2.
    pub fn mac(&self, signed: &SignedString<'_>, key_id: &str) -> [u8; DIGEST_LEN] {
        self.keyed_for(signed, key_id)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Constant-time check of `tag` against the HMAC of the signed string for `key_id`.
    pub fn verifies(
        &self,
        signed: &SignedString<'_>,
        key_id: &str,
        tag: &[u8; DIGEST_LEN],
    ) -> bool {
        // `verify_slice` is length-checked and compares in constant time (subtle).
        self.keyed_for(signed, key_id).verify_slice(tag).is_ok()
    }

    fn keyed_for(&self, signed: &SignedString<'_>, key_id: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        signed.write(key_id, |piece| mac.update(piece));
        mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("slot", &self.slot)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// The keys a gate verifies with, and whether key ids are bound to them.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: Key,
    previous: Option<Key>,
    strict_key_id: bool,
}

impl Keyring {
    /// Assemble a keyring; the configuration has already checked that the two secrets and the
    /// two key ids differ.
    pub fn new(current: Key, previous: Option<Key>, strict_key_id: bool) -> Self {
        Keyring {
            current,
            previous,
            strict_key_id,
        }
    }

    /// The current key.
    pub fn current(&self) -> &Key {
        &self.current
    }

    /// The previous key, in dual-secret mode.
    pub fn previous(&self) -> Option<&Key> {
        self.previous.as_ref()
    }

    /// Keys in verification order: current first.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }

    /// The key in `slot`, if configured.
    pub fn key(&self, slot: Slot) -> Option<&Key> {
        match slot {
            Slot::Current => Some(&self.current),
            Slot::Previous => self.previous.as_ref(),
        }
    }

    /// Whether a signature's key id must name the secret it is checked with.
    pub fn strict_key_id(&self) -> bool {
        self.strict_key_id
    }

    /// `single` or `dual`, for `sig_gate_config_info`.
    pub fn mode(&self) -> &'static str {
        if self.previous.is_some() {
            "dual"
        } else {
            "single"
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
