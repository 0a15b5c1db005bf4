//! The chunked transfer coding's decoder: a byte-level state machine that accepts nothing but
//! the grammar of RFC 9112 section 7.1, with limits on chunk extensions and trailers.

use bytes::{Buf, BytesMut};

use super::UpstreamError;
use super::body::Step;
use super::fields::{is_field_vchar, is_qdtext, is_tchar};
use super::head::MAX_HEADERS;

/// Longest chunk-size line past its digits (whitespace and extensions).
pub(super) const MAX_CHUNK_EXTENSION: u16 = 4 * 1024;
/// All chunk-size lines of one body together, past their digits: as hyper's client allows.
pub(super) const MAX_CHUNK_EXTENSIONS: u32 = 16 * 1024;
/// All trailer lines of one body together.
const MAX_TRAILER_BYTES: u32 = 16 * 1024;

/// The chunked transfer coding (RFC 9112 section 7.1), one byte at a time outside chunk data:
/// where the decoder is in the grammar, and what it has counted against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chunked {
    state: ChunkedState,
    /// The chunk size read so far, then the data bytes left of the chunk.
    size: u64,
    /// Hex digits of the chunk size read so far.
    digits: u8,
    /// Bytes of the current size line past its digits (whitespace and extensions).
    line: u16,
    /// Such bytes over the whole body.
    extensions: u32,
    /// Bytes of the trailer section so far.
    trailer_bytes: u32,
    /// Trailer field lines so far.
    trailer_lines: u16,
}

/// Where a [`Chunked`] decoder is. In a chunk-size line, after the hex digits:
/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, names and
/// unquoted values tokens, quoted values `quoted-string` (RFC 9110 section 5.6), whitespace
/// allowed before the CR as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Hex digits of a chunk size.
    Size,
    /// Whitespace after the size.
    SizeSpace,
    /// After a `;`: whitespace, then an extension name.
    ExtStart,
    /// In an extension name.
    ExtName,
    /// Whitespace after an extension name.
    ExtNameSpace,
    /// After `=`: whitespace, then a token or a quoted string.
    ExtValueStart,
    /// In an unquoted extension value.
    ExtToken,
    /// In a quoted extension value.
    ExtQuoted,
    /// After a backslash in a quoted value.
    ExtEscape,
    /// Whitespace after an extension value.
    ExtEnd,
    /// CR seen at the end of the size line.
    SizeLf,
    /// Inside chunk data (`size` bytes left).
    Data,
    /// After chunk data: CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line: a field name, or CR for the empty last line.
    TrailerStart,
    /// In a trailer field's name (a token, then `:` with no whitespace before it).
    TrailerName,
    /// In a trailer field's value, up to CR.
    TrailerValue,
    /// CR seen at the end of a trailer field line.
    TrailerLf,
    /// CR seen on the empty line ending the trailer section.
    EndLf,
    /// The last chunk and its trailers are read.
    End,
}

impl Chunked {
    pub(super) const START: Chunked = Chunked {
        state: ChunkedState::Size,
        size: 0,
        digits: 0,
        line: 0,
        extensions: 0,
        trailer_bytes: 0,
        trailer_lines: 0,
    };

    pub(super) fn is_done(&self) -> bool {
        self.state == ChunkedState::End
    }

    pub(super) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, UpstreamError> {
        loop {
            match self.state {
                ChunkedState::End => return Ok(Step::End),
                ChunkedState::Data if self.size == 0 => self.state = ChunkedState::DataCr,
                ChunkedState::Data => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = self.size.min(buf.len() as u64);
                    self.size -= n;
                    // `n` is at most `buf.len()`, a usize.
                    return Ok(Step::Data(buf.split_to(n as usize).freeze()));
                }
                _ => {
                    let Some(&byte) = buf.first() else {
                        return Ok(Step::NeedMore);
                    };
                    buf.advance(1);
                    self.next(byte)
                        .ok_or(UpstreamError::Malformed("chunked body"))?;
                }
            }
        }
    }

    /// Take `byte` outside chunk data; `None` if the grammar or a limit does not allow it.
    fn next(&mut self, byte: u8) -> Option<()> {
        use ChunkedState::*;
        let space = byte == b' ' || byte == b'\t';
        let token = is_tchar(byte);
        let state = self.state;
        // Bytes of the size line past its digits, its CR excepted, count against the limits.
        let in_line = matches!(
            state,
            SizeSpace
                | ExtStart
                | ExtName
                | ExtNameSpace
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtEscape
                | ExtEnd
        ) || (state == Size && !byte.is_ascii_hexdigit());
        if in_line && byte != b'\r' {
            self.line += 1;
            self.extensions += 1;
            if self.line > MAX_CHUNK_EXTENSION || self.extensions > MAX_CHUNK_EXTENSIONS {
                return None;
            }
        }
        if matches!(
            state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf
        ) {
            self.trailer_bytes += 1;
            if self.trailer_bytes > MAX_TRAILER_BYTES {
                return None;
            }
        }
        self.state = match (state, byte) {
            (Size, _) if byte.is_ascii_hexdigit() => {
                if self.digits == 16 {
                    return None;
                }
                // A hex digit is below 16.
                let digit = (byte as char).to_digit(16)? as u64;
                self.size = self.size << 4 | digit;
                self.digits += 1;
                Size
            }
            (Size, _) if self.digits == 0 => return None,
            (Size | SizeSpace, _) if space => SizeSpace,
            (Size | SizeSpace | ExtName | ExtNameSpace | ExtToken | ExtEnd, b';') => ExtStart,
            (Size | SizeSpace | ExtName | ExtNameSpace | ExtToken | ExtEnd, b'\r') => SizeLf,
            (ExtStart, _) if space => ExtStart,
            (ExtStart | ExtName, _) if token => ExtName,
            (ExtName | ExtNameSpace, _) if space => ExtNameSpace,
            (ExtName | ExtNameSpace, b'=') => ExtValueStart,
            (ExtValueStart, _) if space => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart | ExtToken, _) if token => ExtToken,
            (ExtToken | ExtEnd, _) if space => ExtEnd,
            (ExtQuoted, b'"') => ExtEnd,
            (ExtQuoted, b'\\') => ExtEscape,
            (ExtQuoted, _) if is_qdtext(byte) => ExtQuoted,
            (ExtEscape, _) if space || is_field_vchar(byte) => ExtQuoted,
            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => {
                self.digits = 0;
                self.line = 0;
                Data
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, _) if token => {
                self.trailer_lines += 1;
                if usize::from(self.trailer_lines) > MAX_HEADERS {
                    return None;
                }
                TrailerName
            }
            (TrailerName, _) if token => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, _) if space || is_field_vchar(byte) => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => End,
            _ => return None,
        };
        Some(())
    }
}
