//! Decoding an escaped JSON string body piece by piece, without allocating.

/// One decoded piece of an escaped string body.
pub(super) enum Piece<'a> {
    /// A run of bytes without escapes.
    Bytes(&'a [u8]),
    /// One escape, decoded to UTF-8 (`len` bytes of `buf`).
    Char {
        /// The UTF-8 encoding, padded.
        buf: [u8; 4],
        /// How many bytes of `buf` are used.
        len: usize,
    },
}

impl Piece<'_> {
    /// The decoded bytes.
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            Piece::Bytes(b) => b,
            Piece::Char { buf, len } => buf.get(..*len).unwrap_or_default(),
        }
    }
}

/// An invalid escape (unknown letter, bad `\u`, lone surrogate).
pub(super) struct BadEscape;

/// Decodes an escaped string body piece by piece, without allocating.
pub(super) struct Unescape<'a> {
    /// What remains to decode.
    rest: &'a [u8],
}

impl<'a> Unescape<'a> {
    /// Decodes `raw`, the body of a string literal.
    pub(super) fn new(raw: &'a [u8]) -> Self {
        Unescape { rest: raw }
    }

    /// Decodes the escape at the start of `rest` (which starts with a backslash); returns the
    /// character and the number of bytes consumed.
    fn escape(&self) -> Option<(char, usize)> {
        let c = match self.rest.get(1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = hex4(self.rest.get(2..6)?)?;
                return match first {
                    0xD800..=0xDBFF => {
                        if self.rest.get(6..8)? != b"\\u" {
                            return None;
                        }
                        let second = hex4(self.rest.get(8..12)?)?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return None;
                        }
                        let code =
                            (((first & 0x3FF) << 10) | (second & 0x3FF)).checked_add(0x10000)?;
                        Some((char::from_u32(code)?, 12))
                    }
                    _ => Some((char::from_u32(first)?, 6)),
                };
            }
            _ => return None,
        };
        Some((c, 2))
    }
}

impl<'a> Iterator for Unescape<'a> {
    type Item = Result<Piece<'a>, BadEscape>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match self.rest.iter().position(|&b| b == b'\\') {
            Some(0) => {
                let Some((c, consumed)) = self.escape() else {
                    self.rest = &[];
                    return Some(Err(BadEscape));
                };
                self.rest = self.rest.get(consumed..).unwrap_or_default();
                let mut buf = [0u8; 4];
                let len = c.encode_utf8(&mut buf).len();
                Some(Ok(Piece::Char { buf, len }))
            }
            Some(n) => {
                let (run, rest) = self.rest.split_at(n);
                self.rest = rest;
                Some(Ok(Piece::Bytes(run)))
            }
            None => {
                let run = self.rest;
                self.rest = &[];
                Some(Ok(Piece::Bytes(run)))
            }
        }
    }
}

/// Four hex digits (either case) as a number.
fn hex4(digits: &[u8]) -> Option<u32> {
    if digits.len() != 4 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &b| {
        Some((acc << 4) | char::from(b).to_digit(16)?)
    })
}
