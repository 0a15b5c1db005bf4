//! Header-field grammar shared by the request encoder and the response parsers: the
//! hop-by-hop names, the options of a `Connection` header, and the character classes of
//! RFC 9110 (tokens, field values, quoted strings).

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers of RFC 9110 section 7.6.1, besides those `Connection` names.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` (lower-case, as a `HeaderName` holds it, or any case from the wire) is one
/// of [`HOP_BY_HOP`].
pub(super) fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|hop| hop.as_str().as_bytes().eq_ignore_ascii_case(name))
}

/// The options of a message's `Connection` header: `close`, and the names it lists as
/// hop-by-hop. Names that are hop-by-hop anyway (`keep-alive`, the usual one) are not kept, so
/// the common `Connection: keep-alive` allocates nothing.
#[derive(Debug, Default)]
pub(super) struct ConnectionOptions<'a> {
    pub(super) close: bool,
    listed: Vec<&'a [u8]>,
}

impl<'a> ConnectionOptions<'a> {
    pub(super) fn of(headers: &'a HeaderMap) -> ConnectionOptions<'a> {
        let mut options = ConnectionOptions::default();
        for value in headers.get_all(header::CONNECTION) {
            options.add(value.as_bytes());
        }
        options
    }

    pub(super) fn add(&mut self, value: &'a [u8]) {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if !token.is_empty() && !is_hop_by_hop(token) {
                self.listed.push(token);
            }
        }
    }

    /// Whether `name` is one the header listed.
    pub(super) fn lists(&self, name: impl AsRef<[u8]>) -> bool {
        let name = name.as_ref();
        self.listed.iter().any(|l| l.eq_ignore_ascii_case(name))
    }
}

/// A `tchar` of RFC 9110 section 5.6.2: what a token (a field name, a chunk extension's
/// name or unquoted value, a transfer coding) is made of.
pub(super) fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Visible ASCII and obs-text: a field value's bytes besides whitespace (RFC 9110 section 5.5).
pub(super) fn is_field_vchar(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte) || byte >= 0x80
}

/// What a quoted string holds unescaped: whitespace, visible ASCII but `"` and `\`, obs-text.
pub(super) fn is_qdtext(byte: u8) -> bool {
    byte == b'\t' || byte == b' ' || (is_field_vchar(byte) && byte != b'"' && byte != b'\\')
}
