//! The JSON byte cursor: whitespace, strings, numbers and literals, and skipping whole subtrees
//! without recursion. Shared by [`super::find`] and the configuration reader (`crate::config::de`).

use std::borrow::Cow;
use std::fmt;

use super::unescape::Unescape;

/// The maximum container nesting depth of a document; one level deeper is [`JsonError::TooDeep`].
pub const MAX_DEPTH: usize = 128;

/// The JSON type of a [`Value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string; [`Value::raw`] is the text between the quotes, still escaped.
    String,
    /// A number, e.g. `-0`, `19.99`, `1.5e3`.
    Number,
    /// The literal `true`.
    True,
    /// The literal `false`.
    False,
    /// The literal `null`.
    Null,
    /// An object; [`Value::raw`] is its source text from `{` to `}`.
    Object,
    /// An array; [`Value::raw`] is its source text from `[` to `]`.
    Array,
}

/// A value found in the body: its kind and its raw bytes (for strings: between the quotes, still escaped; for others: the exact source text, e.g. `19.99`, `true`, `{"a":1}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value<'a> {
    /// The JSON type of the value.
    pub kind: Kind,
    /// The value's source bytes (see [`Value`]).
    pub raw: &'a [u8],
}

impl<'a> Value<'a> {
    /// The value's text for comparisons and decimal parsing: strings unescaped (\" \\ \/ \b \f \n \r \t \uXXXX incl. surrogate pairs → UTF-8; an invalid escape → None), others their raw text. Borrowed when there is no escape (Cow).
    ///
    /// A lone or mismatched surrogate (`\ud83d` alone, `\ude00` first) is an invalid escape.
    /// Bytes that are not escapes are passed through unchanged, even when not UTF-8.
    #[must_use]
    pub fn text(&self) -> Option<Cow<'a, [u8]>> {
        if self.kind != Kind::String || !self.raw.contains(&b'\\') {
            return Some(Cow::Borrowed(self.raw));
        }
        let mut out = Vec::with_capacity(self.raw.len());
        for piece in Unescape::new(self.raw) {
            out.extend_from_slice(piece.ok()?.as_bytes());
        }
        Some(Cow::Owned(out))
    }
}

/// Why [`find`] could not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// The document is not JSON before (or at) the target.
    Syntax,
    /// Containers are nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The document ends before the target (or before the path is known not to exist).
    Truncated,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syntax => "malformed JSON",
            Self::TooDeep => "JSON nested too deeply",
            Self::Truncated => "truncated JSON",
        })
    }
}

impl std::error::Error for JsonError {}

/// JSON insignificant whitespace.
#[inline(always)]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Bytes that may legally follow a number or a literal.
#[inline(always)]
fn is_delimiter(b: u8) -> bool {
    is_ws(b) || matches!(b, b',' | b']' | b'}')
}

/// `b` in each of the 8 bytes of a word.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The high bit of each byte of `word` (8 string bytes, little-endian) that ends a run of plain
/// string bytes: `"`, `\`, or a control character (< 0x20). Borrows only move upwards, so the
/// lowest bit set is exact (bits above it may be false alarms).
#[inline(always)]
fn string_stops(word: u64) -> u64 {
    let quote = word ^ splat(b'"');
    let backslash = word ^ splat(b'\\');
    let zero_byte = |x: u64| x.wrapping_sub(splat(1)) & !x;
    (zero_byte(quote) | zero_byte(backslash) | (word.wrapping_sub(splat(0x20)) & !word))
        & splat(0x80)
}

/// The offset of the first `"`, `\` or control character in `doc` at or after `at` (`doc.len()`
/// if none): 8 bytes per step (SWAR), then byte by byte. Plain loops: under opt-level "z" an
/// iterator adaptor here is a call per step.
#[inline(always)]
fn plain_run(doc: &[u8], mut at: usize) -> usize {
    while let Some(word) = doc.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let stops = string_stops(u64::from_le_bytes(*word));
        if stops != 0 {
            return at.saturating_add(stops.trailing_zeros() as usize / 8);
        }
        at = at.saturating_add(8);
    }
    while let Some(&b) = doc.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        at = at.saturating_add(1);
    }
    at
}

/// Whether a raw (escaped) member name equals an unescaped pointer token.
pub(crate) fn name_matches(raw: &[u8], token: &[u8]) -> bool {
    if !raw.contains(&b'\\') {
        return raw == token;
    }
    let mut rest = token;
    for piece in Unescape::new(raw) {
        let Ok(piece) = piece else {
            // A name with a lone surrogate cannot be spelled by a (UTF-8) pointer.
            return false;
        };
        match rest.strip_prefix(piece.as_bytes()) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// A cursor over the document. Also the tokenizer of the configuration reader (`crate::config::de`), so
/// that both accept the same strings, numbers and literals.
pub(crate) struct Scanner<'a> {
    /// The whole document.
    pub(crate) doc: &'a [u8],
    /// The next byte to read.
    pub(crate) pos: usize,
    /// Containers currently open (on the path and in skipped subtrees).
    pub(crate) depth: usize,
}

impl<'a> Scanner<'a> {
    /// The next byte, if any.
    #[inline(always)]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.doc.get(self.pos).copied()
    }

    /// Consumes one byte.
    #[inline(always)]
    pub(crate) fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    /// Consumes whitespace.
    #[inline(always)]
    pub(crate) fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.bump();
        }
    }

    /// Consumes `{` or `[` and enters the container.
    pub(crate) fn open(&mut self) -> Result<(), JsonError> {
        self.bump();
        self.depth = self.depth.saturating_add(1);
        if self.depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        Ok(())
    }

    /// Consumes `}` or `]` and leaves the container.
    pub(crate) fn close(&mut self) {
        self.bump();
        self.depth = self.depth.saturating_sub(1);
    }

    /// Consumes `expected` (after whitespace) or fails.
    fn expect(&mut self, expected: u8) -> Result<(), JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(b) if b == expected => {
                self.bump();
                Ok(())
            }
            Some(_) => Err(JsonError::Syntax),
            None => Err(JsonError::Truncated),
        }
    }

    /// Scans `"name"` `:` (with whitespace around) and returns the raw name.
    pub(super) fn member_name(&mut self) -> Result<&'a [u8], JsonError> {
        self.expect(b'"')?;
        let (from, to) = self.string_body()?;
        self.expect(b':')?;
        self.doc.get(from..to).ok_or(JsonError::Syntax)
    }

    /// Just inside an object: finds the member called `token`, leaving the cursor at its value.
    pub(super) fn seek_member(&mut self, token: &[u8]) -> Result<bool, JsonError> {
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.close();
            return Ok(false);
        }
        loop {
            if name_matches(self.member_name()?, token) {
                return Ok(true);
            }
            self.skip_value()?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b'}') => {
                    self.close();
                    return Ok(false);
                }
                Some(_) => return Err(JsonError::Syntax),
                None => return Err(JsonError::Truncated),
            }
        }
    }

    /// After the last member or element: `,` (bumped, `Ok(true)`) or the `close` byte (the
    /// container closed, `Ok(false)`).
    pub(super) fn next_or_close(&mut self, close: u8) -> Result<bool, JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.bump();
                Ok(true)
            }
            Some(b) if b == close => {
                self.close();
                Ok(false)
            }
            Some(_) => Err(JsonError::Syntax),
            None => Err(JsonError::Truncated),
        }
    }

    /// Just before a container: each child's raw member name (empty for array elements) and
    /// the offset of its value.
    pub(crate) fn children(&mut self) -> Result<Vec<(&'a [u8], usize)>, JsonError> {
        self.skip_ws();
        let close = match self.peek() {
            Some(b'{') => b'}',
            Some(b'[') => b']',
            _ => return Err(JsonError::Syntax),
        };
        self.open()?;
        let mut out = Vec::new();
        self.skip_ws();
        if self.peek() == Some(close) {
            self.close();
            return Ok(out);
        }
        loop {
            let mut name: &'a [u8] = &[];
            if close == b'}' {
                self.expect(b'"')?;
                let (from, to) = self.string_body()?;
                self.expect(b':')?;
                name = self.doc.get(from..to).ok_or(JsonError::Syntax)?;
            }
            self.skip_ws();
            out.push((name, self.pos));
            self.skip_value()?;
            if !self.next_or_close(close)? {
                return Ok(out);
            }
        }
    }

    /// Just inside an array: finds element `index`, leaving the cursor at it.
    pub(super) fn seek_element(&mut self, index: usize) -> Result<bool, JsonError> {
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.close();
            return Ok(false);
        }
        let mut i = 0usize;
        loop {
            if i == index {
                return Ok(true);
            }
            self.skip_value()?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.bump();
                    i = i.saturating_add(1);
                }
                Some(b']') => {
                    self.close();
                    return Ok(false);
                }
                Some(_) => return Err(JsonError::Syntax),
                None => return Err(JsonError::Truncated),
            }
        }
    }

    /// Skips one value (after whitespace) and returns its kind. Iterative: bit `i` of `stack`
    /// says whether the `i`-th innermost open container of this value is an object.
    pub(crate) fn skip_value(&mut self) -> Result<Kind, JsonError> {
        self.skip_ws();
        let kind = match self.peek() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't') => Kind::True,
            Some(b'f') => Kind::False,
            Some(b'n') => Kind::Null,
            Some(b'-' | b'0'..=b'9') => Kind::Number,
            Some(_) => return Err(JsonError::Syntax),
            None => return Err(JsonError::Truncated),
        };
        let mut stack: u128 = 0;
        let mut open: usize = 0;
        loop {
            // At the start of a value.
            self.skip_ws();
            let complete = match self.peek() {
                Some(b'{') => {
                    self.open()?;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.close();
                        true
                    } else {
                        stack = (stack << 1) | 1;
                        open = open.saturating_add(1);
                        self.member_name()?;
                        false
                    }
                }
                Some(b'[') => {
                    self.open()?;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.close();
                        true
                    } else {
                        stack <<= 1;
                        open = open.saturating_add(1);
                        false
                    }
                }
                Some(b'"') => {
                    self.bump();
                    self.string_body()?;
                    true
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return Err(JsonError::Syntax),
                None => return Err(JsonError::Truncated),
            };
            if !complete {
                continue;
            }
            // After a complete value: close containers until one expects another value.
            loop {
                if open == 0 {
                    return Ok(kind);
                }
                self.skip_ws();
                let in_object = stack & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.bump();
                        if in_object {
                            self.member_name()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    Some(_) => return Err(JsonError::Syntax),
                    None => return Err(JsonError::Truncated),
                }
                self.close();
                stack >>= 1;
                open = open.saturating_sub(1);
            }
        }
    }

    /// Just after an opening quote: scans to the closing quote (consumed) and returns the range
    /// of the body. Checks escapes syntactically (`\uXXXX` needs four hex digits).
    pub(crate) fn string_body(&mut self) -> Result<(usize, usize), JsonError> {
        let from = self.pos;
        loop {
            let end = plain_run(self.doc, self.pos);
            self.pos = end;
            match self.doc.get(end) {
                Some(b'"') => {
                    let to = self.pos;
                    self.bump();
                    return Ok((from, to));
                }
                Some(b'\\') => {
                    self.bump();
                    self.escape()?;
                }
                None => return Err(JsonError::Truncated),
                _ => return Err(JsonError::Syntax),
            }
        }
    }

    /// Just after a backslash in a string: consumes one escape.
    fn escape(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.bump();
                Ok(())
            }
            Some(b'u') => {
                self.bump();
                for _ in 0..4 {
                    match self.peek() {
                        Some(b) if b.is_ascii_hexdigit() => self.bump(),
                        Some(_) => return Err(JsonError::Syntax),
                        None => return Err(JsonError::Truncated),
                    }
                }
                Ok(())
            }
            Some(_) => Err(JsonError::Syntax),
            None => Err(JsonError::Truncated),
        }
    }

    /// Consumes the literal `word` (`true`, `false`, `null`). Always a complete value.
    pub(crate) fn literal(&mut self, word: &[u8]) -> Result<bool, JsonError> {
        for &expected in word {
            match self.peek() {
                Some(b) if b == expected => self.bump(),
                Some(_) => return Err(JsonError::Syntax),
                None => return Err(JsonError::Truncated),
            }
        }
        self.delimited()?;
        Ok(true)
    }

    /// Consumes a number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`. Always a complete value.
    pub(crate) fn number(&mut self) -> Result<bool, JsonError> {
        if self.peek() == Some(b'-') {
            self.bump();
        }
        match self.peek() {
            Some(b'0') => self.bump(),
            Some(b'1'..=b'9') => self.digits(),
            Some(_) => return Err(JsonError::Syntax),
            None => return Err(JsonError::Truncated),
        }
        if self.peek() == Some(b'.') {
            self.bump();
            self.required_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.bump();
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.bump();
            }
            self.required_digits()?;
        }
        if self.peek().is_none() && self.depth > 0 {
            // Inside a container, the input may have been cut in the middle of the number.
            return Err(JsonError::Truncated);
        }
        self.delimited()?;
        Ok(true)
    }

    /// Consumes `[0-9]*`.
    #[inline(always)]
    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.bump();
        }
    }

    /// Consumes `[0-9]+`.
    fn required_digits(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            Some(b) if b.is_ascii_digit() => {
                self.digits();
                Ok(())
            }
            Some(_) => Err(JsonError::Syntax),
            None => Err(JsonError::Truncated),
        }
    }

    /// After a number or literal: the next byte (if any) must be a delimiter (`12x`, `truex`).
    fn delimited(&self) -> Result<(), JsonError> {
        match self.peek() {
            Some(b) if !is_delimiter(b) => Err(JsonError::Syntax),
            _ => Ok(()),
        }
    }
}
