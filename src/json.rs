//! Lean JSON Pointer (RFC 6901) extraction from a response body, without building a DOM.
//!
//! [`find`] walks the bytes once: it descends along the pointer's path, skips every subtree that
//! is not on it, and stops as soon as the target value has been scanned. It never allocates and
//! never recurses (skipped subtrees are tracked with a 128-bit stack), so hostile input costs at
//! most one linear pass:
//! - nesting deeper than [`MAX_DEPTH`] containers is refused with [`JsonError::TooDeep`];
//! - strings of any size are scanned, and bytes ≥ 0x80 inside them are just bytes (no UTF-8
//!   validation); raw control characters (< 0x20) and invalid escapes are syntax errors;
//! - input that ends early is [`JsonError::Truncated`]. A number that runs into the end of the
//!   input inside a container is also `Truncated`, since more digits may have been cut off.
//!
//! The document is validated only as far as needed: the text before the target (and the target
//! itself) must be well-formed; what follows the target is not examined. When the path turns out
//! not to exist, [`find`] returns `Ok(None)` as soon as that is certain.

use std::borrow::Cow;
use std::fmt;

/// The maximum container nesting depth of a document; one level deeper is [`JsonError::TooDeep`].
pub const MAX_DEPTH: usize = 128;

/// A compiled RFC 6901 pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    /// Unescaped reference tokens (`~1` → `/`, `~0` → `~`).
    tokens: Vec<Vec<u8>>,
}

/// Why a text is not an RFC 6901 pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointerError {
    /// A non-empty pointer must start with `/` (`a/b` is refused; `""` is the whole document).
    MustStartWithSlash,
    /// `~` must be followed by `0` or `1` (`~2` and a trailing `~` are refused).
    BadEscape,
}

impl fmt::Display for PointerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MustStartWithSlash => "a JSON pointer must be empty or start with `/`",
            Self::BadEscape => "in a JSON pointer, `~` must be followed by `0` or `1`",
        })
    }
}

impl std::error::Error for PointerError {}

impl Pointer {
    /// Parses an RFC 6901 pointer: `""` is the whole document (zero tokens), otherwise `/`
    /// followed by `/`-separated tokens in which `~1` stands for `/` and `~0` for `~` (decoded
    /// left to right, so `~01` is the token `~1`).
    ///
    /// # Errors
    ///
    /// [`PointerError::MustStartWithSlash`] for a non-empty text without a leading `/`;
    /// [`PointerError::BadEscape`] for `~` not followed by `0` or `1`.
    pub fn parse(text: &str) -> Result<Pointer, PointerError> {
        let Some(rest) = text.strip_prefix('/') else {
            return if text.is_empty() {
                Ok(Pointer { tokens: Vec::new() })
            } else {
                Err(PointerError::MustStartWithSlash)
            };
        };
        let tokens = rest
            .split('/')
            .map(|token| unescape_token(token.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pointer { tokens })
    }

    /// The unescaped reference tokens, outermost first (none for the whole document).
    pub fn tokens(&self) -> impl Iterator<Item = &[u8]> {
        self.tokens.iter().map(Vec::as_slice)
    }
}

/// Decodes `~1` and `~0` in one reference token.
fn unescape_token(token: &[u8]) -> Result<Vec<u8>, PointerError> {
    let mut out = Vec::with_capacity(token.len());
    let mut bytes = token.iter();
    while let Some(&b) = bytes.next() {
        if b == b'~' {
            match bytes.next() {
                Some(b'0') => out.push(b'~'),
                Some(b'1') => out.push(b'/'),
                _ => return Err(PointerError::BadEscape),
            }
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

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

/// Ok(None) when the document is valid up to the point needed and the path does not exist. Err when the document is malformed before the target is found (after the target is found, the rest of the document need not be validated).
///
/// Member names are compared after unescaping (`"a\/b"` matches the token `a/b`); with duplicate
/// names the first member wins. An array token must be a decimal index without leading zeros
/// (`0`, `12`); any other token (`01`, `-`, `x`) on an array is `Ok(None)`, as is any token
/// applied to a scalar (which is still scanned, so a malformed scalar is an error). Whitespace
/// around the document is allowed.
///
/// # Errors
///
/// [`JsonError::Syntax`] for malformed JSON, [`JsonError::TooDeep`] for nesting beyond
/// [`MAX_DEPTH`], [`JsonError::Truncated`] when the input ends too early — in each case only
/// when met before the answer is known.
pub fn find<'a>(doc: &'a [u8], pointer: &Pointer) -> Result<Option<Value<'a>>, JsonError> {
    let mut s = Scanner {
        doc,
        pos: 0,
        depth: 0,
    };
    for token in pointer.tokens() {
        s.skip_ws();
        let found = match s.peek() {
            Some(b'{') => {
                s.open()?;
                s.seek_member(token)?
            }
            Some(b'[') => {
                let Some(index) = parse_index(token) else {
                    return Ok(None);
                };
                s.open()?;
                s.seek_element(index)?
            }
            Some(_) => {
                s.skip_value()?;
                false
            }
            None => return Err(JsonError::Truncated),
        };
        if !found {
            return Ok(None);
        }
    }
    s.skip_ws();
    let start = s.pos;
    let kind = s.skip_value()?;
    let (from, to) = if kind == Kind::String {
        // The closing quote is the last byte scanned; the opening quote is the first.
        (start.saturating_add(1), s.pos.saturating_sub(1))
    } else {
        (start, s.pos)
    };
    let raw = doc.get(from..to).ok_or(JsonError::Syntax)?;
    Ok(Some(Value { kind, raw }))
}

/// An array index token: `0` or `[1-9][0-9]*` that fits in `usize`.
fn parse_index(token: &[u8]) -> Option<usize> {
    match token {
        [b'0'] => Some(0),
        [b'1'..=b'9', ..] => token.iter().try_fold(0usize, |acc, &b| {
            let digit = char::from(b).to_digit(10)?;
            acc.checked_mul(10)?
                .checked_add(usize::try_from(digit).ok()?)
        }),
        _ => None,
    }
}

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

/// Whether a raw (escaped) member name equals an unescaped pointer token.
fn name_matches(raw: &[u8], token: &[u8]) -> bool {
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

/// A cursor over the document. Also the tokenizer of the configuration reader (`crate::de`), so
/// that both accept the same strings, numbers and literals.
pub(crate) struct Scanner<'a> {
    /// The whole document.
    pub(crate) doc: &'a [u8],
    /// The next byte to read.
    pub(crate) pos: usize,
    /// Containers currently open (on the path and in skipped subtrees).
    pub(crate) depth: usize,
}

impl Scanner<'_> {
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
    fn member_name(&mut self) -> Result<&'_ [u8], JsonError> {
        self.expect(b'"')?;
        let (from, to) = self.string_body()?;
        self.expect(b':')?;
        self.doc.get(from..to).ok_or(JsonError::Syntax)
    }

    /// Just inside an object: finds the member called `token`, leaving the cursor at its value.
    fn seek_member(&mut self, token: &[u8]) -> Result<bool, JsonError> {
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

    /// Just inside an array: finds element `index`, leaving the cursor at it.
    fn seek_element(&mut self, index: usize) -> Result<bool, JsonError> {
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
    fn skip_value(&mut self) -> Result<Kind, JsonError> {
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
            // A plain loop: under opt-level "z" an iterator adaptor here is a call per byte.
            let mut end = self.pos;
            while let Some(&b) = self.doc.get(end) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                end += 1;
            }
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

/// One decoded piece of an escaped string body.
enum Piece<'a> {
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
    fn as_bytes(&self) -> &[u8] {
        match self {
            Piece::Bytes(b) => b,
            Piece::Char { buf, len } => buf.get(..*len).unwrap_or_default(),
        }
    }
}

/// An invalid escape (unknown letter, bad `\u`, lone surrogate).
struct BadEscape;

/// Decodes an escaped string body piece by piece, without allocating.
struct Unescape<'a> {
    /// What remains to decode.
    rest: &'a [u8],
}

impl<'a> Unescape<'a> {
    /// Decodes `raw`, the body of a string literal.
    fn new(raw: &'a [u8]) -> Self {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    fn ptr(text: &str) -> Pointer {
        Pointer::parse(text).unwrap()
    }

    /// What [`get`] reports: the kind and raw text of the value found.
    type Found<'a> = Result<Option<(Kind, &'a str)>, JsonError>;

    fn get<'a>(doc: &'a str, pointer: &str) -> Found<'a> {
        find(doc.as_bytes(), &ptr(pointer))
            .map(|found| found.map(|v| (v.kind, std::str::from_utf8(v.raw).unwrap())))
    }

    #[test]
    fn pointer_parse() {
        let ok: &[(&str, &[&[u8]])] = &[
            ("", &[]),
            ("/", &[b""]),
            ("//", &[b"", b""]),
            ("/foo", &[b"foo"]),
            ("/foo/0", &[b"foo", b"0"]),
            ("/a~1b", &[b"a/b"]),
            ("/m~0n", &[b"m~n"]),
            ("/~01", &[b"~1"]),
            ("/~10", &[b"/0"]),
            ("/~0~1", &[b"~/"]),
            ("/foo/", &[b"foo", b""]),
            ("/ ", &[b" "]),
            ("/é", &["é".as_bytes()]),
        ];
        for &(text, want) in ok {
            let p = ptr(text);
            assert_eq!(p.tokens().collect::<Vec<_>>(), want.to_vec(), "{text:?}");
        }
        let bad: &[(&str, PointerError)] = &[
            ("a/b", PointerError::MustStartWithSlash),
            ("a", PointerError::MustStartWithSlash),
            (" /a", PointerError::MustStartWithSlash),
            ("#/a", PointerError::MustStartWithSlash),
            ("/~2", PointerError::BadEscape),
            ("/a~", PointerError::BadEscape),
            ("/~", PointerError::BadEscape),
            ("/~/", PointerError::BadEscape),
            ("/ok/~a", PointerError::BadEscape),
        ];
        for (text, want) in bad {
            assert_eq!(Pointer::parse(text).as_ref(), Err(want), "{text:?}");
            assert!(!want.to_string().is_empty());
        }
    }

    const RFC6901: &str = r#"
   {
      "foo": ["bar", "baz"],
      "": 0,
      "a/b": 1,
      "c%d": 2,
      "e^f": 3,
      "g|h": 4,
      "i\\j": 5,
      "k\"l": 6,
      " ": 7,
      "m~n": 8
   }
"#;

    #[test]
    fn rfc6901_example() {
        use Kind::*;
        let whole = RFC6901.trim();
        let cases: &[(&str, Kind, &str)] = &[
            ("", Object, whole),
            ("/foo", Array, r#"["bar", "baz"]"#),
            ("/foo/0", String, "bar"),
            ("/foo/1", String, "baz"),
            ("/", Number, "0"),
            ("/a~1b", Number, "1"),
            ("/c%d", Number, "2"),
            ("/e^f", Number, "3"),
            ("/g|h", Number, "4"),
            ("/i\\j", Number, "5"),
            ("/k\"l", Number, "6"),
            ("/ ", Number, "7"),
            ("/m~0n", Number, "8"),
        ];
        for &(pointer, kind, raw) in cases {
            assert_eq!(get(RFC6901, pointer), Ok(Some((kind, raw))), "{pointer:?}");
        }
        for missing in [
            "/foo/2", "/foo/-", "/foo/01", "/foo/x", "/bar", "/a~1b/c", "/foo/0/0", "/i~1j",
            "/m~0n~0",
        ] {
            assert_eq!(get(RFC6901, missing), Ok(None), "{missing:?}");
        }
    }

    const ORDER: &str = r#"{
        "order": {"id": "A-1", "currency": "EUR", "tax": 3.99, "total": "23.98"},
        "items": [
            {"sku": "x", "price": 1.00, "tags": ["a", {"deep": [1, 2, {"x": null}]}]},
            {"sku": "y", "price": 2},
            {"sku": "z", "price": 19.99, "qty": 1}
        ],
        "authorization": {"status": "APPROVED", "reasons": [], "meta": {}},
        "flags": [true, false, null, -0, 1.5e3, -2.5E-3, 0.0, 1e+2],
        "escaped\/name": "slash",
        "\u0041\u00e9": "unicode name",
        "dup": 1,
        "dup": 2,
        "text": "a\"b\\c\/d\b\f\n\r\tE\u00e9\ud83d\ude00"
    }"#;

    #[test]
    fn nested_paths() {
        use Kind::*;
        let cases: &[(&str, Option<(Kind, &str)>)] = &[
            ("/order/tax", Some((Number, "3.99"))),
            ("/order/total", Some((String, "23.98"))),
            ("/order/id", Some((String, "A-1"))),
            ("/items/2/price", Some((Number, "19.99"))),
            ("/items/0/price", Some((Number, "1.00"))),
            ("/items/1/price", Some((Number, "2"))),
            ("/items/0/tags/1/deep/2/x", Some((Null, "null"))),
            ("/items/0/tags/1/deep/2", Some((Object, r#"{"x": null}"#))),
            ("/authorization/status", Some((String, "APPROVED"))),
            ("/authorization/reasons", Some((Array, "[]"))),
            ("/authorization/meta", Some((Object, "{}"))),
            ("/flags/0", Some((True, "true"))),
            ("/flags/1", Some((False, "false"))),
            ("/flags/2", Some((Null, "null"))),
            ("/flags/3", Some((Number, "-0"))),
            ("/flags/4", Some((Number, "1.5e3"))),
            ("/flags/5", Some((Number, "-2.5E-3"))),
            ("/flags/6", Some((Number, "0.0"))),
            ("/flags/7", Some((Number, "1e+2"))),
            ("/escaped~1name", Some((String, "slash"))),
            ("/Aé", Some((String, "unicode name"))),
            ("/dup", Some((Number, "1"))),
            // Missing paths.
            ("/items/3/price", None),
            ("/items/2/cost", None),
            ("/order/tax/amount", None),
            ("/order/id/0", None),
            ("/authorization/reasons/0", None),
            ("/authorization/meta/x", None),
            ("/flags/8", None),
            ("/flags/-", None),
            ("/flags/00", None),
            ("/flags/+1", None),
            ("/flags/18446744073709551616000", None),
            ("/nope", None),
            ("/escaped\\/name", None),
        ];
        for &(pointer, want) in cases {
            assert_eq!(get(ORDER, pointer), Ok(want), "{pointer:?}");
        }
    }

    #[test]
    fn value_text() {
        let v = find(ORDER.as_bytes(), &ptr("/text")).unwrap().unwrap();
        assert_eq!(v.kind, Kind::String);
        assert_eq!(v.raw, br#"a\"b\\c\/d\b\f\n\r\tE\u00e9\ud83d\ude00"#);
        assert_eq!(
            v.text().unwrap().as_ref(),
            "a\"b\\c/d\u{8}\u{c}\n\r\tEé😀".as_bytes()
        );

        let borrowed = find(ORDER.as_bytes(), &ptr("/order/total"))
            .unwrap()
            .unwrap();
        assert!(matches!(borrowed.text(), Some(Cow::Borrowed(b"23.98"))));
        let number = find(ORDER.as_bytes(), &ptr("/order/tax")).unwrap().unwrap();
        assert!(matches!(number.text(), Some(Cow::Borrowed(b"3.99"))));

        let s = |raw: &'static [u8]| Value {
            kind: Kind::String,
            raw,
        };
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"", Some(b"")),
            (b"plain", Some(b"plain")),
            (b"\xff\xfe", Some(b"\xff\xfe")),
            (br"\ud83d\ude00", Some("😀".as_bytes())),
            (br"\uD83D\uDE00", Some("😀".as_bytes())),
            (br"x\u0000y", Some(b"x\0y")),
            (br"\u20ac", Some("€".as_bytes())),
            (br"\uFFFF", Some("\u{ffff}".as_bytes())),
            (br"\ud83d", None),
            (br"\ud83dx", None),
            (br"\ud83d\u0041", None),
            (br"\ud83d\n", None),
            (br"\ude00", None),
            (br"\ude00\ud83d", None),
            (br"\u12", None),
            (br"\u12G4", None),
            (br"\x", None),
            (br"\", None),
            (br"ok\", None),
            (br"\'", None),
        ];
        for &(raw, want) in cases {
            assert_eq!(
                s(raw).text().as_deref(),
                want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // Non-strings are returned as they are, even if they contain backslashes.
        let odd = Value {
            kind: Kind::Object,
            raw: br#"{"a":"\n"}"#,
        };
        assert_eq!(odd.text().as_deref(), Some(&br#"{"a":"\n"}"#[..]));
    }

    #[test]
    fn escaped_member_names() {
        let doc = r#"{"a\/b": 1, "\u007e": 2, "t\u00e9": 3, "\"q\"": 4, "bad\ud800": 5, "bad": 6, "x\ty": 7}"#;
        let cases: &[(&str, Option<(Kind, &str)>)] = &[
            ("/a~1b", Some((Kind::Number, "1"))),
            ("/~0", Some((Kind::Number, "2"))),
            ("/té", Some((Kind::Number, "3"))),
            ("/\"q\"", Some((Kind::Number, "4"))),
            ("/bad", Some((Kind::Number, "6"))),
            ("/x\ty", Some((Kind::Number, "7"))),
            ("/a\\/b", None),
            ("/t", None),
        ];
        for &(pointer, want) in cases {
            assert_eq!(get(doc, pointer), Ok(want), "{pointer:?}");
        }
    }

    #[test]
    fn whole_document_and_whitespace() {
        let cases: &[(&str, Option<(Kind, &str)>)] = &[
            ("  \r\n\t{\"a\":1}\n ", Some((Kind::Object, "{\"a\":1}"))),
            ("123", Some((Kind::Number, "123"))),
            (" -0 ", Some((Kind::Number, "-0"))),
            ("\"s\"", Some((Kind::String, "s"))),
            ("true", Some((Kind::True, "true"))),
            ("null\n", Some((Kind::Null, "null"))),
            ("[ ]", Some((Kind::Array, "[ ]"))),
        ];
        for &(doc, want) in cases {
            assert_eq!(get(doc, ""), Ok(want), "{doc:?}");
        }
        assert_eq!(
            get(" { \"a\" : [ 1 , { \"b\" : 2 } ] } ", "/a/1/b"),
            Ok(Some((Kind::Number, "2")))
        );
    }

    #[test]
    fn malformed_documents() {
        use JsonError::*;
        let cases: &[(&str, &str, Found)] = &[
            ("", "", Err(Truncated)),
            ("   ", "/a", Err(Truncated)),
            ("{\"a\":", "/a", Err(Truncated)),
            ("{\"a\":", "/b", Err(Truncated)),
            ("{\"a\" 1}", "/a", Err(Syntax)),
            ("{\"a\" 1}", "/b", Err(Syntax)),
            ("[1,]", "/1", Err(Syntax)),
            ("[1,]", "/5", Err(Syntax)),
            ("[1,]", "", Err(Syntax)),
            ("[1 2]", "/1", Err(Syntax)),
            ("{\"a\":1,}", "/b", Err(Syntax)),
            ("{,}", "/a", Err(Syntax)),
            ("{\"a\":1 \"b\":2}", "/b", Err(Syntax)),
            ("{\"a\":\"unterminated", "/a", Err(Truncated)),
            ("{\"a\":\"unterminated", "/b", Err(Truncated)),
            ("\"abc", "", Err(Truncated)),
            ("\"ab\\", "", Err(Truncated)),
            ("\"ab\\u12", "", Err(Truncated)),
            ("\"ab\\u12x4\"", "", Err(Syntax)),
            ("\"ab\\q\"", "", Err(Syntax)),
            ("\"a\nb\"", "", Err(Syntax)),
            ("{'a':1}", "/a", Err(Syntax)),
            ("{a:1}", "/a", Err(Syntax)),
            ("[01]", "/0", Err(Syntax)),
            ("[1.]", "/0", Err(Syntax)),
            ("[.5]", "/0", Err(Syntax)),
            ("[+1]", "/0", Err(Syntax)),
            ("[1e]", "/0", Err(Syntax)),
            ("[--1]", "/0", Err(Syntax)),
            ("[1x]", "/0", Err(Syntax)),
            ("[truex]", "/0", Err(Syntax)),
            ("[tru]", "/0", Err(Syntax)),
            ("[NaN]", "/0", Err(Syntax)),
            ("[12", "/0", Err(Truncated)),
            ("[1.", "/0", Err(Truncated)),
            ("[1e+", "/0", Err(Truncated)),
            ("[-", "/0", Err(Truncated)),
            ("[tr", "/0", Err(Truncated)),
            ("[true", "/0", Ok(Some((Kind::True, "true")))),
            ("[12,", "/0", Ok(Some((Kind::Number, "12")))),
            ("[", "/0", Err(Truncated)),
            ("{", "/a", Err(Truncated)),
            ("{\"a\"", "/a", Err(Truncated)),
            ("]", "", Err(Syntax)),
            ("}", "/a", Err(Syntax)),
            ("{\"a\":[}", "/b", Err(Syntax)),
            ("{\"a\":{]}", "/b", Err(Syntax)),
            ("[{\"a\":1]]", "/1", Err(Syntax)),
            ("{\"x\":{\"a\" 1}}", "/y", Err(Syntax)),
            ("{\"x\":{\"a\":1,}}", "/y", Err(Syntax)),
            ("{\"x\":[1,,2]}", "/y", Err(Syntax)),
            ("{\"x\":[\"a\" \"b\"]}", "/y", Err(Syntax)),
            ("{\"a\":tx}", "/a/b", Err(Syntax)),
            ("{\"a\":5}", "/a/b", Ok(None)),
            ("{\"a\":\"s\"}", "/a/0", Ok(None)),
            // The target is found before the damage: the rest is not examined.
            ("{\"a\":1, garbage", "/a", Ok(Some((Kind::Number, "1")))),
            ("[\"x\"]]]", "/0", Ok(Some((Kind::String, "x")))),
            (
                "{\"a\":1} trailing",
                "",
                Ok(Some((Kind::Object, "{\"a\":1}"))),
            ),
            // A non-index token on an array is known absent at once.
            ("[1, oops", "/x", Ok(None)),
        ];
        for &(doc, pointer, ref want) in cases {
            assert_eq!(&get(doc, pointer), want, "{doc:?} {pointer:?}");
        }
    }

    fn nested(depth: usize, open: &str, close: &str, inner: &str) -> String {
        format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn depth_limit() {
        let deep = nested(200, "[", "]", "1");
        assert_eq!(find(deep.as_bytes(), &ptr("")), Err(JsonError::TooDeep));
        assert_eq!(
            find(deep.as_bytes(), &ptr(&"/0".repeat(200))),
            Err(JsonError::TooDeep)
        );
        assert_eq!(
            find(deep.as_bytes(), &ptr(&"/0".repeat(150))),
            Err(JsonError::TooDeep)
        );
        assert_eq!(find(deep.as_bytes(), &ptr("/1")), Err(JsonError::TooDeep));

        let deep_objects = nested(200, "{\"k\":", "}", "1");
        assert_eq!(
            find(deep_objects.as_bytes(), &ptr("")),
            Err(JsonError::TooDeep)
        );
        assert_eq!(
            find(deep_objects.as_bytes(), &ptr(&"/k".repeat(200))),
            Err(JsonError::TooDeep)
        );

        // Skipped siblings count too.
        let sibling = format!("{{\"skip\":{},\"x\":1}}", nested(200, "[", "]", ""));
        assert_eq!(
            find(sibling.as_bytes(), &ptr("/x")),
            Err(JsonError::TooDeep)
        );
        let sibling_ok = format!("{{\"skip\":{},\"x\":1}}", nested(127, "[", "]", ""));
        assert_eq!(get(&sibling_ok, "/x"), Ok(Some((Kind::Number, "1"))));

        // Exactly MAX_DEPTH levels is fine; one more is not.
        let max = nested(MAX_DEPTH, "[", "]", "7");
        assert_eq!(
            get(&max, &"/0".repeat(MAX_DEPTH)),
            Ok(Some((Kind::Number, "7")))
        );
        assert_eq!(
            find(max.as_bytes(), &ptr("")).unwrap().unwrap().raw,
            max.as_bytes()
        );
        let over = nested(MAX_DEPTH + 1, "[", "]", "7");
        assert_eq!(find(over.as_bytes(), &ptr("")), Err(JsonError::TooDeep));
        let mixed = nested(MAX_DEPTH / 2, "{\"a\":[", "]}", "true");
        assert_eq!(get(&mixed, ""), Ok(Some((Kind::Object, mixed.as_str()))));
        let mixed_over = format!("[{mixed}]");
        assert_eq!(get(&mixed_over, ""), Err(JsonError::TooDeep));
        // A hostile, unterminated deep prefix is refused without recursion.
        let hostile = "[".repeat(1_000_000);
        assert_eq!(find(hostile.as_bytes(), &ptr("/x")), Ok(None));
        assert_eq!(find(hostile.as_bytes(), &ptr("")), Err(JsonError::TooDeep));
    }

    #[test]
    fn large_strings() {
        let big = "x".repeat(1 << 20);
        let doc = format!("{{\"skip\":\"{big}\\\"{big}\",\"v\":\"{big}\"}}");
        let v = find(doc.as_bytes(), &ptr("/v")).unwrap().unwrap();
        assert_eq!(v.raw.len(), 1 << 20);
        let raw_bytes = b"{\"k\":\"\xff\xfe\x80\",\"v\":2}";
        assert_eq!(find(raw_bytes, &ptr("/v")).unwrap().unwrap().raw, b"2");
        assert_eq!(
            find(raw_bytes, &ptr("/k")).unwrap().unwrap().raw,
            b"\xff\xfe\x80"
        );
    }

    #[test]
    fn error_display() {
        for e in [JsonError::Syntax, JsonError::TooDeep, JsonError::Truncated] {
            assert!(!e.to_string().is_empty());
        }
    }

    /// JSON-escapes a member name; `slash` also escapes `/` as `\/`, `unicode` writes non-ASCII as `\u`.
    fn json_escape(name: &str, slash: bool, unicode: bool) -> String {
        let mut out = String::new();
        for c in name.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if slash => out.push_str("\\/"),
                '\n' => out.push_str("\\n"),
                c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c if unicode && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    fn pointer_escape(name: &str) -> String {
        name.replace('~', "~0").replace('/', "~1")
    }

    fn ws() -> impl Strategy<Value = String> {
        "[ \t\r\n]{0,2}"
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(doc in proptest::collection::vec(any::<u8>(), 0..200)) {
            for p in ["", "/a", "/0", "/a/0/b", "/"] {
                let _ = find(&doc, &ptr(p));
            }
        }

        #[test]
        fn jsonish_bytes_never_panic(doc in r#"[{}\[\]":,0-9a\\u.eE+\- tfrnl]{0,80}"#) {
            for p in ["", "/a", "/0", "/a/0", "/0/a", "/u"] {
                if let Ok(Some(v)) = find(doc.as_bytes(), &ptr(p)) {
                    let _ = v.text();
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Value { kind: Kind::String, raw: &raw }.text();
        }

        #[test]
        fn arbitrary_pointers_never_panic(p in "[/~01a]{0,12}") {
            if let Ok(p) = Pointer::parse(&p) {
                let _ = find(br#"{"a":[0,{"~":1,"/":2}],"0":{"1":[]}}"#, &p);
            }
        }

        #[test]
        fn finds_generated_members(
            members in proptest::collection::vec(("[a-z/~\"\\\\é😀\n]{0,6}", any::<i64>(), any::<bool>(), any::<bool>(), ws(), ws()), 1..12),
            pick in any::<prop::sample::Index>(),
        ) {
            let mut doc = String::from("{");
            for (i, (name, value, slash, unicode, w1, w2)) in members.iter().enumerate() {
                if i > 0 {
                    doc.push(',');
                }
                doc.push_str(&format!("{w1}\"{}\"{w2}:{w1}{value}{w2}", json_escape(name, *slash, *unicode)));
            }
            doc.push('}');
            let (name, ..) = &members[pick.index(members.len())];
            let first = members.iter().find(|m| &m.0 == name).unwrap().1;
            let pointer = ptr(&format!("/{}", pointer_escape(name)));
            let found = find(doc.as_bytes(), &pointer).unwrap().unwrap();
            prop_assert_eq!(found.kind, Kind::Number);
            let want = first.to_string();
            prop_assert_eq!(found.raw, want.as_bytes());
            // Absent names are reported absent after scanning the whole object.
            prop_assert_eq!(find(doc.as_bytes(), &ptr("/absent key")), Ok(None));
        }

        #[test]
        fn finds_generated_array_elements(
            values in proptest::collection::vec(any::<u32>(), 1..20),
            pick in any::<prop::sample::Index>(),
            depth in 0usize..20,
        ) {
            let list = values.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
            let doc = format!("{}{{\"list\": [{list}]}}{}", "[".repeat(depth), "]".repeat(depth));
            let i = pick.index(values.len());
            let pointer = ptr(&format!("{}/list/{i}", "/0".repeat(depth)));
            let found = find(doc.as_bytes(), &pointer).unwrap().unwrap();
            let want = values[i].to_string();
            prop_assert_eq!(found.raw, want.as_bytes());
            let past = ptr(&format!("{}/list/{}", "/0".repeat(depth), values.len()));
            prop_assert_eq!(find(doc.as_bytes(), &past), Ok(None));
        }

        #[test]
        fn prefixes_never_lie(
            members in proptest::collection::vec(("[a-c]{1,2}", any::<i32>(), "[a-z\\\\\"]{0,4}"), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut doc = String::from("{\"nest\": [");
            for (i, (name, number, text)) in members.iter().enumerate() {
                if i > 0 {
                    doc.push_str(", ");
                }
                doc.push_str(&format!("{{\"{name}\": {number}, \"s\": \"{}\"}}", json_escape(text, false, false)));
            }
            doc.push_str("], \"end\": 12345}");
            let bytes = doc.as_bytes();
            let prefix = &bytes[..cut.index(bytes.len() + 1)];
            for p in ["/end", "/nest/0/a", "/nest/1/s", "/nest/2/b", "/missing", ""] {
                let full = find(bytes, &ptr(p)).unwrap();
                let partial = find(prefix, &ptr(p));
                prop_assert!(partial.is_err() || partial == Ok(full), "{:?} {} {:?} vs {:?}", String::from_utf8_lossy(prefix), p, partial, full);
            }
        }
    }
}
