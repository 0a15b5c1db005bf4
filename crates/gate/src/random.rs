//! Randomness from the operating system's CSPRNG: nonces, request-id prefixes and new secrets.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// Fill `out` from the operating system's CSPRNG.
pub fn fill(out: &mut [u8]) {
    // The OS generator failing is unrecoverable for a security tool: better to stop than to
    // sign with a predictable nonce or hand out a weak secret.
    SystemRandom::new()
        .fill(out)
        .expect("the operating system's random generator failed");
}

/// A new secret of `bytes` random bytes, as URL-safe base64 text without padding (the form
/// `sig-gate keygen` prints and `INTERSERVICE_HMAC_SECRET` takes).
pub fn secret_text(bytes: usize) -> String {
    let mut raw = zeroize::Zeroizing::new(vec![0u8; bytes]);
    fill(&mut raw);
    URL_SAFE_NO_PAD.encode(&*raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_url_safe_text_of_the_asked_entropy() {
        let a = secret_text(32);
        let b = secret_text(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes as unpadded base64");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
