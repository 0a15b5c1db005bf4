//! The signer: the headers a calling service sends (docs/protocol.md). It shares
//! [`SignedString`] and [`Key`] with the verifier, so what one signs the other accepts.
//!
//! Version 1 signs with the environment's secrets ([`Signer::new`]); version 2 with one key of
//! the caller's own, HMAC-SHA256 or Ed25519, for one audience ([`Signer::v2`]).

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::keyring::{Algorithm, Key, PublicKey, Secret};
use crate::protocol::{self, SignedString, V2Line};

/// Header names as a signer prints them, in the order it prints them.
pub mod names {
    /// `X-Gate-Version`.
    pub const VERSION: &str = "X-Gate-Version";
    /// `X-Gate-Key-Id`.
    pub const KEY_ID: &str = "X-Gate-Key-Id";
    /// `X-Gate-Timestamp`.
    pub const TIMESTAMP: &str = "X-Gate-Timestamp";
    /// `X-Gate-Nonce`.
    pub const NONCE: &str = "X-Gate-Nonce";
    /// `X-Gate-Signature`.
    pub const SIGNATURE: &str = "X-Gate-Signature";
    /// `X-Gate-Signatures`.
    pub const SIGNATURES: &str = "X-Gate-Signatures";
}

/// Signs requests: version 1 with the current secret (and the previous one too when
/// dual-signing), or version 2 with a key of the caller's own.
#[derive(Debug, Clone)]
pub struct Signer {
    scheme: Scheme,
}

// A client builds one signer and keeps it; the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Scheme {
    V1 {
        current: Key,
        /// Present only when dual-signing: the configuration refuses dual-sign without a
        /// previous secret, so this is the single source of truth for "send
        /// `X-Gate-Signatures`".
        dual_with: Option<Key>,
    },
    V2 {
        key: SigningKey,
        /// A second key whose signature goes beside the first in `X-Gate-Signatures` (the
        /// observe stage of a migration).
        observed: Option<SigningKey>,
        audience: String,
    },
}

/// A caller's key for version 2: an HMAC secret or an Ed25519 private key, with its key id.
/// `Debug` shows the id, the algorithm and the fingerprint only.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    material: Material,
}

#[derive(Clone)]
enum Material {
    /// The verifying key serves: HMAC signs and verifies with the same secret. Boxed, so a
    /// signing key is small whatever its algorithm.
    Hmac(Box<Key>),
    /// `ring`'s key pair is not `Clone`; it is shared.
    Ed25519(Arc<Ed25519KeyPair>),
}

/// Why a private key file could not be used. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// Not PEM with one `PRIVATE KEY` block of base64.
    #[error(
        "not a PEM \"PRIVATE KEY\" block (PKCS#8, as `openssl genpkey -algorithm ed25519` writes it)"
    )]
    NotPem,
    /// PEM, but not a PKCS#8 Ed25519 private key.
    #[error("not an Ed25519 private key in PKCS#8")]
    NotEd25519,
}

impl SigningKey {
    /// An HMAC-SHA256 key: `id` (already validated) and its secret.
    pub fn hmac(id: &str, secret: &Secret) -> SigningKey {
        SigningKey {
            id: id.to_owned(),
            material: Material::Hmac(Box::new(Key::hmac(
                id.to_owned(),
                String::new(),
                secret,
                false,
            ))),
        }
    }

    /// An Ed25519 key from a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn ed25519_pem(id: &str, pem: &str) -> Result<SigningKey, KeyFileError> {
        let der = zeroize::Zeroizing::new(pem_private_key(pem).ok_or(KeyFileError::NotPem)?);
        // `maybe_unchecked`: OpenSSL writes PKCS#8 version 1, without the public key that
        // ring's checked constructor requires; the public key is then derived from the seed.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| KeyFileError::NotEd25519)?;
        Ok(SigningKey {
            id: id.to_owned(),
            material: Material::Ed25519(Arc::new(pair)),
        })
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            Material::Hmac(_) => Algorithm::HmacSha256,
            Material::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// The public key a gate's registry lists for an Ed25519 key; `None` for HMAC.
    pub fn public_key(&self) -> Option<PublicKey> {
        match &self.material {
            Material::Hmac(_) => None,
            Material::Ed25519(pair) => {
                let bytes: [u8; 32] = pair.public_key().as_ref().try_into().ok()?;
                Some(PublicKey::from_bytes(bytes))
            }
        }
    }

    /// Lowercase hex of the version 2 signature over `signed` for `audience`.
    fn sign_v2(&self, signed: &SignedString<'_>, audience: &str) -> String {
        match &self.material {
            Material::Hmac(key) => {
                // A key built by `Key::hmac` always has a MAC.
                let tag = key.mac_v2(signed, audience).expect("an HMAC key");
                protocol::hex32_string(&tag)
            }
            Material::Ed25519(pair) => {
                let line = V2Line {
                    algorithm: Algorithm::Ed25519.as_str(),
                    key_id: &self.id,
                    audience,
                };
                signed.with_v2(line, |message| {
                    protocol::hex_string(pair.sign(message).as_ref())
                })
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("SigningKey");
        debug.field("id", &self.id).field("alg", &self.algorithm());
        match &self.material {
            Material::Hmac(key) => debug.field("fingerprint", &key.fingerprint()),
            Material::Ed25519(_) => debug.field("public_key", &self.public_key()),
        };
        debug.finish()
    }
}

/// The DER bytes of the `PRIVATE KEY` block of a PEM text.
fn pem_private_key(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let end = start + pem[start..].find(END)?;
    let base64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(base64).ok()
}

/// The DER of an Ed25519 `PrivateKeyInfo` (RFC 8410, section 7), version 1, up to the 32-byte
/// seed that follows: what `openssl genpkey -algorithm ed25519` writes.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new Ed25519 private key as PKCS#8 PEM, and its public key. The key is written in the
/// version 1 form OpenSSL writes (the seed alone), which every PKCS#8 reader accepts; ring's
/// own `generate_pkcs8` writes version 2 (with the public key), which OpenSSL and the Python
/// `cryptography` package refuse.
pub fn generate_ed25519() -> Result<(zeroize::Zeroizing<String>, PublicKey), KeyFileError> {
    let mut der = zeroize::Zeroizing::new(ED25519_PKCS8_V1_PREFIX.to_vec());
    der.resize(ED25519_PKCS8_V1_PREFIX.len() + 32, 0);
    crate::random::fill(&mut der[ED25519_PKCS8_V1_PREFIX.len()..]);
    let body = zeroize::Zeroizing::new(STANDARD.encode(der.as_slice()));
    let mut pem = zeroize::Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let key = SigningKey::ed25519_pem("new", &pem)?;
    let public = key.public_key().ok_or(KeyFileError::NotEd25519)?;
    Ok((pem, public))
}

/// One request to sign: target is path plus optional `?query`, exactly as it will be sent.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method as sent.
    pub method: &'a str,
    /// Request target as sent (raw path, optional `?query`).
    pub target: &'a str,
    /// Body bytes as sent.
    pub body: &'a [u8],
    /// Unix seconds.
    pub timestamp: u64,
    /// Unique per request; see [`new_nonce`].
    pub nonce: &'a str,
}

/// The headers to send, in order, as `(name, value)`.
pub type Headers = Vec<(&'static str, String)>;

impl Signer {
    /// A version 1 signer with the current key; `dual_with` is the previous key when
    /// dual-signing.
    pub fn new(current: Key, dual_with: Option<Key>) -> Self {
        Signer {
            scheme: Scheme::V1 { current, dual_with },
        }
    }

    /// A version 2 signer with `key`, for the gate whose `GATE_AUDIENCE` is `audience`.
    pub fn v2(key: SigningKey, audience: &str) -> Self {
        Signer {
            scheme: Scheme::V2 {
                key,
                observed: None,
                audience: audience.to_owned(),
            },
        }
    }

    /// A version 2 signer that also signs with `observed`: both signatures go in
    /// `X-Gate-Signatures`, the first key's also in the header pair. No effect on version 1.
    pub fn also_signing_with(mut self, observed: SigningKey) -> Self {
        if let Scheme::V2 { observed: slot, .. } = &mut self.scheme {
            *slot = Some(observed);
        }
        self
    }

    /// The signature headers for `request`.
    pub fn sign(&self, request: &Request<'_>) -> Headers {
        let digest = protocol::body_digest(request.body);
        let timestamp = request.timestamp.to_string();
        let (path, query) = SignedString::split_target(request.target);
        let signed = SignedString {
            timestamp: &timestamp,
            nonce: request.nonce,
            method: request.method,
            path,
            query,
            body_digest: &digest,
        };
        match &self.scheme {
            Scheme::V1 { current, dual_with } => {
                let tag = |key: &Key| protocol::hex32_string(&key.mac(&signed, key.id()));
                let current_tag = tag(current);
                let mut headers = vec![
                    (names::KEY_ID, current.id().to_owned()),
                    (names::TIMESTAMP, timestamp.clone()),
                    (names::NONCE, request.nonce.to_owned()),
                    (names::SIGNATURE, current_tag.clone()),
                ];
                if let Some(previous) = dual_with {
                    headers.push((
                        names::SIGNATURES,
                        signatures_json(&[
                            (current.id(), &current_tag),
                            (previous.id(), &tag(previous)),
                        ]),
                    ));
                }
                headers
            }
            Scheme::V2 {
                key,
                observed,
                audience,
            } => {
                let first = key.sign_v2(&signed, audience);
                let mut headers = vec![
                    (names::VERSION, protocol::VERSION_2.to_owned()),
                    (names::KEY_ID, key.id().to_owned()),
                    (names::TIMESTAMP, timestamp.clone()),
                    (names::NONCE, request.nonce.to_owned()),
                    (names::SIGNATURE, first.clone()),
                ];
                if let Some(second) = observed {
                    headers.push((
                        names::SIGNATURES,
                        signatures_json(&[
                            (key.id(), &first),
                            (second.id(), &second.sign_v2(&signed, audience)),
                        ]),
                    ));
                }
                headers
            }
        }
    }
}

/// Canonical compact JSON of `X-Gate-Signatures`, in the given order: key ids and hex never
/// need escaping.
fn signatures_json(entries: &[(&str, &str)]) -> String {
    let objects: Vec<String> = entries
        .iter()
        .map(|(key_id, signature)| format!(r#"{{"key_id":"{key_id}","signature":"{signature}"}}"#))
        .collect();
    format!("[{}]", objects.join(","))
}

/// The headers as an [`http::HeaderMap`], for clients built on `http` types.
pub fn header_map(headers: &Headers) -> http::HeaderMap {
    headers
        .iter()
        .map(|(name, value)| {
            (
                header_name(name),
                // Key ids, digits, nonces, hex and the canonical JSON are all visible ASCII.
                http::HeaderValue::from_str(value).expect("signature headers are header-safe"),
            )
        })
        .collect()
}

/// The `http` header name of one of the [`names`].
fn header_name(name: &str) -> http::HeaderName {
    match name {
        names::VERSION => protocol::VERSION,
        names::KEY_ID => protocol::KEY_ID,
        names::TIMESTAMP => protocol::TIMESTAMP,
        names::NONCE => protocol::NONCE,
        names::SIGNATURE => protocol::SIGNATURE,
        names::SIGNATURES => protocol::SIGNATURES,
        other => unreachable!("the signer only emits its own header names, not {other}"),
    }
}

/// A fresh nonce: 16 random bytes as URL-safe base64 (22 chars).
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    crate::random::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ed25519_keys_are_pkcs8_version_1_as_openssl_writes_them() {
        let (pem, public) = generate_ed25519().expect("a key");
        let der = pem_private_key(&pem).expect("a PRIVATE KEY block");
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], ED25519_PKCS8_V1_PREFIX);
        let again = SigningKey::ed25519_pem("again", &pem).expect("reads back");
        assert_eq!(again.public_key(), Some(public));
        let (other, _) = generate_ed25519().expect("a key");
        assert_ne!(*pem, *other, "every key is new");
    }
    use crate::keyring::{Secret, Slot};

    fn key(slot: Slot, id: &str, secret: &str) -> Key {
        Key::new(slot, id.into(), &Secret::new(secret))
    }

    #[test]
    fn nonces_are_well_formed_and_distinct() {
        let a = new_nonce();
        let b = new_nonce();
        assert_eq!(a.len(), 22);
        assert!(protocol::is_nonce(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn dual_sign_adds_canonical_signatures_header() {
        let signer = Signer::new(
            key(Slot::Current, "k2", "new-secret-0123456789abcdefghijklmnop"),
            Some(key(
                Slot::Previous,
                "k1",
                "old-secret-0123456789abcdefghijklmnop",
            )),
        );
        let request = Request {
            method: "POST",
            target: "/t?x=1",
            body: b"{}",
            timestamp: 1_764_000_000,
            nonce: "nonce-0123456789ab",
        };
        let headers = signer.sign(&request);
        let names: Vec<_> = headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                names::KEY_ID,
                names::TIMESTAMP,
                names::NONCE,
                names::SIGNATURE,
                names::SIGNATURES
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&headers[4].1).expect("valid JSON");
        assert_eq!(json[0]["key_id"], "k2");
        assert_eq!(json[0]["signature"], headers[3].1.as_str());
        assert_eq!(json[1]["key_id"], "k1");
        assert_ne!(json[1]["signature"], headers[3].1.as_str());
        assert!(!headers[4].1.contains(' '));
    }
}
