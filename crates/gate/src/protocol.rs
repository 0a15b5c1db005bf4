//! The wire format of signature versions 1 and 2 (docs/protocol.md): header names, the syntax
//! of each header value, the signed strings, and lowercase hex. Shared by the signer
//! ([`crate::sign`]) and the verifier ([`crate::verify`]) so the two cannot drift apart.

use http::HeaderName;
use sha2::{Digest, Sha256};

/// Key id of the signature in [`SIGNATURE`].
pub const KEY_ID: HeaderName = HeaderName::from_static("x-gate-key-id");
/// Unix time in whole seconds.
pub const TIMESTAMP: HeaderName = HeaderName::from_static("x-gate-timestamp");
/// Unique per request; the replay cache remembers it.
pub const NONCE: HeaderName = HeaderName::from_static("x-gate-nonce");
/// Lowercase hex HMAC-SHA256 of the signed string.
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-gate-signature");
/// Dual-sign: JSON array of `{"key_id", "signature"}` objects.
pub const SIGNATURES: HeaderName = HeaderName::from_static("x-gate-signatures");
/// Signature version: absent for version 1, `2` for version 2.
pub const VERSION: HeaderName = HeaderName::from_static("x-gate-version");
/// Set by the gate on forwarded requests; any copy sent by a client is removed.
pub const VERIFIED_KEY_ID: HeaderName = HeaderName::from_static("x-gate-verified-key-id");
/// Set by the gate on forwarded requests: the caller that holds the key that verified
/// (`shared` for the environment's secrets); any copy sent by a client is removed.
pub const VERIFIED_CALLER: HeaderName = HeaderName::from_static("x-gate-verified-caller");
/// Every `X-Gate-*` header shares this prefix (header names are lowercase in `http`).
pub const HEADER_PREFIX: &str = "x-gate-";

/// First line of every version 1 signed string: names the algorithm and the version.
pub const ALGORITHM: &str = "GATE-HMAC-SHA256";
/// First line of every version 2 signed string; the algorithm is its second line.
pub const SCHEME_V2: &str = "GATE-SIG-V2";
/// The `X-Gate-Version` value of version 2.
pub const VERSION_2: &str = "2";
/// Length of a SHA-256 / HMAC-SHA256 output in bytes.
pub const DIGEST_LEN: usize = 32;
/// Length of an Ed25519 signature in bytes.
pub const ED25519_SIGNATURE_LEN: usize = 64;
/// Most entries `X-Gate-Signatures` may hold.
pub const MAX_SIGNATURES: usize = 4;

/// True when `id` is a well-formed key id: 1-64 chars of `A-Z a-z 0-9 . _ : -`. Takes bytes
/// too, so a header value is checked without a separate ASCII pass first.
pub fn is_key_id(id: impl AsRef<[u8]>) -> bool {
    let id = id.as_ref();
    (1..=64).contains(&id.len()) && all_of(id, KEY_ID_CHAR)
}

/// True when `nonce` is well-formed: 16-128 chars of `A-Z a-z 0-9 _ -`.
pub fn is_nonce(nonce: impl AsRef<[u8]>) -> bool {
    let nonce = nonce.as_ref();
    (16..=128).contains(&nonce.len()) && all_of(nonce, NONCE_CHAR)
}

/// Class bit of the characters a key id may hold.
const KEY_ID_CHAR: u8 = 1;
/// Class bit of the characters a nonce may hold.
const NONCE_CHAR: u8 = 2;

/// The classes each byte value belongs to.
const CHAR_CLASSES: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
            table[b] = KEY_ID_CHAR | NONCE_CHAR;
        } else if c == b'.' || c == b':' {
            table[b] = KEY_ID_CHAR;
        }
        b += 1;
    }
    table
};

/// True when every byte of `bytes` is of `class`: a table lookup per byte and no branch, since
/// the values checked are short and almost always valid.
fn all_of(bytes: &[u8], class: u8) -> bool {
    bytes
        .iter()
        .fold(class, |all, &b| all & CHAR_CLASSES[usize::from(b)])
        == class
}

/// Parse a timestamp: 1-12 decimal digits, nothing else (no sign, no spaces).
pub fn parse_timestamp(text: impl AsRef<[u8]>) -> Option<u64> {
    let digits = text.as_ref();
    if !(1..=12).contains(&digits.len()) {
        return None;
    }
    // 12 digits stay far below u64::MAX, so this cannot overflow.
    digits.iter().try_fold(0u64, |value, &digit| {
        digit
            .is_ascii_digit()
            .then(|| value * 10 + u64::from(digit - b'0'))
    })
}

/// Value of each byte as a lowercase hex digit, or [`NOT_HEX`].
const HEX_VALUES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
const NOT_HEX: u8 = 0xff;

/// Decode exactly 64 lowercase hex digits; uppercase and any other length are malformed.
pub fn decode_hex32(text: impl AsRef<[u8]>) -> Option<[u8; DIGEST_LEN]> {
    let mut out = [0u8; DIGEST_LEN];
    decode_hex_into(text.as_ref(), &mut out).then_some(out)
}

/// Decode lowercase hex of exactly `2 * out.len()` digits into `out`; false (with `out` in
/// an unspecified state) for uppercase, any other character or any other length.
pub fn decode_hex_into(text: &[u8], out: &mut [u8]) -> bool {
    if text.len() != 2 * out.len() {
        return false;
    }
    let mut invalid = 0u8;
    for (slot, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (
            HEX_VALUES[usize::from(pair[0])],
            HEX_VALUES[usize::from(pair[1])],
        );
        // NOT_HEX has its top bit set, no digit does: collect errors, branch once at the end.
        invalid |= high | low;
        *slot = high << 4 | (low & 0x0f);
    }
    invalid & 0x80 == 0
}

/// Lowercase hex of any bytes as a `String` (for the signer and the CLI).
pub fn hex_string(bytes: &[u8]) -> String {
    let mut out = vec![0u8; 2 * bytes.len()];
    hex_into(&mut out, bytes);
    // hex_into writes ASCII digits only.
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Write `bytes` as lowercase hex into `out`, two digits a byte (as far as `out` reaches).
pub fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Lowercase hex of a 32-byte digest, without allocating.
pub fn hex32(digest: &[u8; DIGEST_LEN]) -> [u8; 2 * DIGEST_LEN] {
    let mut out = [0u8; 2 * DIGEST_LEN];
    hex_into(&mut out, digest);
    out
}

/// Lowercase hex of a 32-byte digest as a `String` (for the signer and the CLI).
pub fn hex32_string(digest: &[u8; DIGEST_LEN]) -> String {
    // hex32 yields ASCII digits only.
    String::from_utf8(hex32(digest).to_vec()).expect("hex digits are ASCII")
}

/// SHA-256 of the request body: the last line of the signed string.
pub fn body_digest(body: &[u8]) -> [u8; DIGEST_LEN] {
    Sha256::digest(body).into()
}

/// The request as the signature sees it: everything of the signed string except the key id.
///
/// Borrowed from the request; building one allocates nothing. The key id is supplied per
/// signature, because each dual-sign entry is computed with its own key id.
#[derive(Debug, Clone, Copy)]
pub struct SignedString<'a> {
    /// `X-Gate-Timestamp` exactly as sent.
    pub timestamp: &'a str,
    /// `X-Gate-Nonce` exactly as sent.
    pub nonce: &'a str,
    /// The HTTP method as sent.
    pub method: &'a str,
    /// Raw path of the request target, percent-encoding kept, no query.
    pub path: &'a str,
    /// Raw query without `?`; empty when there is none.
    pub query: &'a str,
    /// SHA-256 of the body bytes.
    pub body_digest: &'a [u8; DIGEST_LEN],
}

impl<'a> SignedString<'a> {
    /// Split a request target (`/path?query`) into the path and query lines.
    pub fn split_target(target: &str) -> (&str, &str) {
        target.split_once('?').unwrap_or((target, ""))
    }

    /// Feed the eight lines of version 1 for `key_id` into `sink`. The lines are gathered in a
    /// stack buffer, so a MAC sees one update instead of fifteen small ones; nothing is
    /// allocated. A string too long for the buffer (long paths or queries) is fed a piece at a
    /// time.
    pub fn write(&self, key_id: &str, sink: impl FnMut(&[u8])) {
        let lines: [&[u8]; 7] = [
            ALGORITHM.as_bytes(),
            key_id.as_bytes(),
            self.timestamp.as_bytes(),
            self.nonce.as_bytes(),
            self.method.as_bytes(),
            self.path.as_bytes(),
            self.query.as_bytes(),
        ];
        write_lines(&lines, self.body_digest, sink);
    }

    /// Feed the ten lines of version 2 into `sink`: the scheme, the key's algorithm, its id,
    /// the gate's audience, then the request as in version 1. Gathered as [`Self::write`]
    /// gathers version 1.
    pub fn write_v2(&self, v2: V2Line<'_>, sink: impl FnMut(&[u8])) {
        let lines: [&[u8]; 9] = [
            SCHEME_V2.as_bytes(),
            v2.algorithm.as_bytes(),
            v2.key_id.as_bytes(),
            v2.audience.as_bytes(),
            self.timestamp.as_bytes(),
            self.nonce.as_bytes(),
            self.method.as_bytes(),
            self.path.as_bytes(),
            self.query.as_bytes(),
        ];
        write_lines(&lines, self.body_digest, sink);
    }

    /// Call `f` with the whole version 2 signed string as one slice, as a signature scheme
    /// that takes the message whole (Ed25519) needs it: from a stack buffer when it fits,
    /// else from one allocation.
    pub fn with_v2<R>(&self, v2: V2Line<'_>, f: impl FnOnce(&[u8]) -> R) -> R {
        let mut stack = [0u8; 1024];
        let mut at = 0;
        let mut heap: Option<Vec<u8>> = None;
        self.write_v2(v2, |piece| match &mut heap {
            Some(heap) => heap.extend_from_slice(piece),
            None if at + piece.len() <= stack.len() => {
                stack[at..at + piece.len()].copy_from_slice(piece);
                at += piece.len();
            }
            None => {
                let mut grown = Vec::with_capacity(2 * (at + piece.len()));
                grown.extend_from_slice(&stack[..at]);
                grown.extend_from_slice(piece);
                heap = Some(grown);
            }
        });
        match &heap {
            Some(heap) => f(heap),
            None => f(&stack[..at]),
        }
    }

    /// The version 1 signed string for `key_id` as text, for the CLI, test vectors and
    /// debugging.
    pub fn render(&self, key_id: &str) -> String {
        let mut out = Vec::with_capacity(256);
        self.write(key_id, |piece| out.extend_from_slice(piece));
        // Every line is valid UTF-8 (str slices and hex digits), so the join is too.
        String::from_utf8(out).expect("signed string pieces are UTF-8")
    }

    /// The version 2 signed string as text.
    pub fn render_v2(&self, v2: V2Line<'_>) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_v2(v2, |piece| out.extend_from_slice(piece));
        // Every line is valid UTF-8 (str slices and hex digits), so the join is too.
        String::from_utf8(out).expect("signed string pieces are UTF-8")
    }
}

/// The lines version 2 adds in front of the request's: the algorithm of the key (never taken
/// from the request), its id, and the audience of the gate the request is meant for.
#[derive(Debug, Clone, Copy)]
pub struct V2Line<'a> {
    /// `hmac-sha256` or `ed25519`.
    pub algorithm: &'a str,
    /// The key's id.
    pub key_id: &'a str,
    /// The gate's `GATE_AUDIENCE`.
    pub audience: &'a str,
}

/// Feed `lines`, each followed by `\n`, then the body digest in hex, into `sink`: in one piece
/// from a stack buffer when it fits, else a piece at a time.
fn write_lines(lines: &[&[u8]], body_digest: &[u8; DIGEST_LEN], mut sink: impl FnMut(&[u8])) {
    let len = lines.iter().map(|line| line.len() + 1).sum::<usize>() + 2 * DIGEST_LEN;
    let mut buffer = [0u8; 384];
    if len > buffer.len() {
        for line in lines {
            sink(line);
            sink(b"\n");
        }
        sink(&hex32(body_digest));
        return;
    }
    let mut at = 0;
    for line in lines {
        buffer[at..at + line.len()].copy_from_slice(line);
        buffer[at + line.len()] = b'\n';
        at += line.len() + 1;
    }
    hex_into(&mut buffer[at..len], body_digest);
    sink(&buffer[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_syntax() {
        assert!(is_key_id("current"));
        assert!(is_key_id("k-2025.11:a_b"));
        assert!(is_key_id("a".repeat(64)));
        assert!(!is_key_id(""));
        assert!(!is_key_id("a".repeat(65)));
        assert!(!is_key_id("has space"));
        assert!(!is_key_id("slash/"));
        assert!(!is_key_id("ünicode"));
    }

    #[test]
    fn nonce_syntax() {
        assert!(is_nonce("abcdefghijklmnop"));
        assert!(is_nonce("A-_9".repeat(32)));
        assert!(!is_nonce("abcdefghijklmno"));
        assert!(!is_nonce("a".repeat(129)));
        assert!(!is_nonce("abcdefghijklmnop.")); // '.' is allowed in key ids, not nonces
        assert!(!is_nonce("abcdefghijklmnop="));
    }

    #[test]
    fn character_classes_match_the_syntax_for_every_byte() {
        for b in 0..=u8::MAX {
            let in_both = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
            let key_id_only = b == b'.' || b == b':';
            assert_eq!(
                is_key_id([b]),
                in_both || key_id_only,
                "key id byte {b:#04x}"
            );
            assert_eq!(is_nonce([b; 16]), in_both, "nonce byte {b:#04x}");
            // One bad byte anywhere fails the whole value.
            let mut nonce = *b"0123456789abcdef";
            nonce[7] = b;
            assert_eq!(is_nonce(nonce), in_both, "nonce with byte {b:#04x} inside");
        }
    }

    #[test]
    fn hex_decoding_checks_every_byte_value_at_every_position() {
        let digits = b"0123456789abcdef";
        for position in 0..2 * DIGEST_LEN {
            for b in 0..=u8::MAX {
                // A varied valid text, with `b` at `position`.
                let mut text: Vec<u8> = (0..2 * DIGEST_LEN).map(|i| digits[i * 7 % 16]).collect();
                text[position] = b;
                let expected = text
                    .chunks(2)
                    .map(|pair| {
                        let value = |c: u8| digits.iter().position(|&d| d == c).map(|v| v as u8);
                        Some(value(pair[0])? << 4 | value(pair[1])?)
                    })
                    .collect::<Option<Vec<u8>>>();
                assert_eq!(
                    decode_hex32(&text).map(|out| out.to_vec()),
                    expected,
                    "byte {b:#04x} at {position}"
                );
            }
        }
    }

    #[test]
    fn hex_encoding_of_every_byte_value_and_partial_lengths() {
        let bytes: Vec<u8> = (0..=u8::MAX).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut out = vec![0u8; 2 * bytes.len()];
        hex_into(&mut out, &bytes);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        // Any output length: whole bytes as far as it reaches, the rest untouched.
        for len in 0..=20 {
            let mut out = vec![b'.'; len];
            hex_into(&mut out, &bytes[200..207]);
            let digits = (len / 2).min(7) * 2;
            assert_eq!(
                &out[..digits],
                &expected.as_bytes()[400..400 + digits],
                "{len}"
            );
            assert!(out[digits..].iter().all(|&b| b == b'.'), "{len}");
        }
    }

    #[test]
    fn timestamp_syntax() {
        assert_eq!(parse_timestamp("0"), Some(0));
        assert_eq!(parse_timestamp("1764000000"), Some(1_764_000_000));
        assert_eq!(parse_timestamp("999999999999"), Some(999_999_999_999));
        for bad in [
            "",
            "1234567890123",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "0x10",
            "１",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hex_round_trip_and_strictness() {
        let digest = body_digest(b"abc");
        let text = hex32_string(&digest);
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(decode_hex32(&text), Some(digest));
        assert_eq!(decode_hex32(text.to_uppercase()), None);
        assert_eq!(decode_hex32(&text[1..]), None);
        assert_eq!(decode_hex32(format!("{text}0")), None);
        assert_eq!(decode_hex32(text.replace('a', "g")), None);
    }

    #[test]
    fn signed_string_has_eight_lines_without_trailing_newline() {
        let digest = body_digest(b"");
        let s = SignedString {
            timestamp: "1764000000",
            nonce: "nonce-0123456789",
            method: "GET",
            path: "/a%2Fb",
            query: "x=1+2",
            body_digest: &digest,
        };
        assert_eq!(
            s.render(""),
            "GATE-HMAC-SHA256\n\n1764000000\nnonce-0123456789\nGET\n/a%2Fb\nx=1+2\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn version_2_signed_string_has_ten_lines_and_comes_whole_for_ed25519() {
        let digest = body_digest(b"{}");
        let s = SignedString {
            timestamp: "1764000000",
            nonce: "nonce-0123456789",
            method: "POST",
            path: "/tools/call",
            query: "x=1",
            body_digest: &digest,
        };
        let line = V2Line {
            algorithm: "ed25519",
            key_id: "lg-2026-12",
            audience: "tool-gate",
        };
        let expected = "GATE-SIG-V2\ned25519\nlg-2026-12\ntool-gate\n1764000000\nnonce-0123456789\n\
                        POST\n/tools/call\nx=1\n\
                        44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(s.render_v2(line), expected);
        assert_eq!(s.with_v2(line, |whole| whole.to_vec()), expected.as_bytes());
        // Past the stack buffer, the whole string still comes as one slice.
        let path = format!("/{}", "p".repeat(2000));
        let long = SignedString { path: &path, ..s };
        assert_eq!(
            long.with_v2(line, |whole| whole.to_vec()),
            long.render_v2(line).as_bytes()
        );
        assert!(long.render_v2(line).contains(&path));
    }

    #[test]
    fn long_lines_are_written_whole() {
        let digest = body_digest(b"");
        let path = format!("/{}", "p".repeat(1000));
        let query = "q".repeat(700);
        let s = SignedString {
            timestamp: "1",
            nonce: "nonce-0123456789",
            method: "GET",
            path: &path,
            query: &query,
            body_digest: &digest,
        };
        let expected = format!(
            "GATE-HMAC-SHA256\nk\n1\nnonce-0123456789\nGET\n{path}\n{query}\n{}",
            hex32_string(&digest)
        );
        assert_eq!(s.render("k"), expected);
    }

    #[test]
    fn split_target_keeps_raw_bytes() {
        assert_eq!(SignedString::split_target("/p"), ("/p", ""));
        assert_eq!(SignedString::split_target("/p?"), ("/p", ""));
        assert_eq!(SignedString::split_target("/p?a=1?b"), ("/p", "a=1?b"));
    }
}
