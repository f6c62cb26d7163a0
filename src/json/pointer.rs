//! JSON Pointer (RFC 6901): compiled pointers and [`find`], extraction from a response body
//! without building a DOM.
//!
//! [`find`] walks the bytes once: it descends along the pointer's path, skips every subtree that
//! is not on it, and stops as soon as the target value has been scanned. It never allocates and
//! never recurses (skipped subtrees are tracked with a 128-bit stack), so hostile input costs at
//! most one linear pass:
//! - nesting deeper than [`MAX_DEPTH`](super::MAX_DEPTH) containers is refused with [`JsonError::TooDeep`];
//! - strings of any size are scanned, and bytes ≥ 0x80 inside them are just bytes (no UTF-8
//!   validation); raw control characters (< 0x20) and invalid escapes are syntax errors;
//! - input that ends early is [`JsonError::Truncated`]. A number that runs into the end of the
//!   input inside a container is also `Truncated`, since more digits may have been cut off.
//!
//! The document is validated only as far as needed: the text before the target (and the target
//! itself) must be well-formed; what follows the target is not examined. When the path turns out
//! not to exist, [`find`] returns `Ok(None)` as soon as that is certain.

use super::scanner::{JsonError, Kind, Scanner, Value};
use std::fmt;

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
/// [`MAX_DEPTH`](super::MAX_DEPTH), [`JsonError::Truncated`] when the input ends too early — in each case only
/// when met before the answer is known.
pub fn find<'a>(doc: &'a [u8], pointer: &Pointer) -> Result<Option<Value<'a>>, JsonError> {
    Ok(locate(doc, pointer)?.map(|(value, _)| value))
}

/// [`find`] on a prefix of a document still arriving: the value only when at least one byte of
/// `prefix` follows its source text, so that it is certainly complete (`12` at the very end may be
/// `123`) and [`find`] on the whole document returns it too. `None`: not found, or not yet known
/// (an error or an absence on a prefix is decided on the whole document).
#[must_use]
pub fn find_complete<'a>(prefix: &'a [u8], pointer: &Pointer) -> Option<Value<'a>> {
    match locate(prefix, pointer) {
        Ok(Some((value, end))) if end < prefix.len() => Some(value),
        _ => None,
    }
}

/// [`find`], and the offset just past the value's source text.
pub(crate) fn locate<'a>(
    doc: &'a [u8],
    pointer: &Pointer,
) -> Result<Option<(Value<'a>, usize)>, JsonError> {
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
    Ok(Some((Value { kind, raw }, s.pos)))
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
