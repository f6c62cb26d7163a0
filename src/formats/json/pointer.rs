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
//!
//! [`locate_all`] answers several pointers in one such walk (the filter's JSON rules on one
//! body): each as [`locate`] would, going into a subtree only for the pointers that name it.

use super::scanner::{name_matches, JsonError, Kind, Scanner, Value, MAX_DEPTH};
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
    /// `""`: the whole document.
    pub const WHOLE_DOCUMENT: Pointer = Pointer { tokens: Vec::new() };

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

/// [`find`], and the offset just past the value's source text.
///
/// # Errors
///
/// As [`find`].
pub fn locate<'a>(
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
    Ok(Some((value_at(doc, kind, start, s.pos)?, s.pos)))
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

/// One pointer's answer from [`locate_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// Not resolved: the walk stopped on the error it returned before this pointer's answer was
    /// known. (During the walk: how many of its tokens the path to the cursor has matched.)
    Pending(usize),
    /// Certainly not in the document: [`locate`]'s `Ok(None)`.
    Absent,
    /// The value and the offset just past its source text: [`locate`]'s `Ok(Some(..))`.
    Value(Value<'a>, usize),
}

impl<'a> Found<'a> {
    /// The value when it is certainly complete in a document still arriving, of which `len`
    /// bytes are here: at least one byte follows its source text (`12` at the very end may be
    /// `123`), so the whole document has it too. `None`: absent, not resolved, or not yet known
    /// (an absence or an error on a prefix is decided on the whole document).
    #[must_use]
    pub fn complete_in(self, len: usize) -> Option<Value<'a>> {
        match self {
            Found::Value(value, end) if end < len => Some(value),
            _ => None,
        }
    }
}

/// A container on the path of the walk of [`locate_all`].
#[derive(Clone, Copy, Default)]
struct Frame {
    /// The offset of its `{` or `[`.
    start: usize,
    /// For an array, the index of the current element.
    index: usize,
    /// How many pending pointers still want a member or element of it.
    wanting: usize,
    /// `{` (else `[`).
    object: bool,
}

/// Where the walk of [`locate_all`] stands.
#[derive(Clone, Copy)]
enum Step {
    /// At a value on the path (the pointers `Pending(depth)` are there).
    Value,
    /// At a member (its name first) or an element of the container `frames[depth]`.
    Child,
    /// Just after a child of the container `frames[depth]`.
    After,
    /// The container `frames[depth]` has just closed.
    Closed,
    /// The value at `depth` is complete and its pointers settled.
    Done,
}

/// [`locate`] for several pointers in one walk of the document: `out[i]` is the answer for
/// `pointers[i]` (extra slots on either side are left alone). Containers are walked once, going
/// into a member or element only for the pointers that name it and skipping every other subtree,
/// and the walk stops as soon as every pointer has its answer, so what follows the last answer is
/// never examined. Pointers may share prefixes or be equal. Never recurses: the containers on the
/// path are at most [`MAX_DEPTH`] (a fixed array).
///
/// Each slot is what [`locate`] returns for its pointer (value and end offset, or absent) whenever
/// [`locate`] answers; a pointer that [`locate`] answers with an error is left
/// [`Found::Pending`], and the walk returns that error (the same for all such pointers).
///
/// # Errors
///
/// The error that stopped the walk before every pointer was resolved (see [`find`]).
pub fn locate_all<'a>(
    doc: &'a [u8],
    pointers: &[&Pointer],
    out: &mut [Found<'a>],
) -> Result<(), JsonError> {
    let mut pending = 0usize;
    for slot in out.iter_mut().take(pointers.len()) {
        *slot = Found::Pending(0);
        pending = pending.saturating_add(1);
    }
    let mut s = Scanner {
        doc,
        pos: 0,
        depth: 0,
    };
    let mut frames = [Frame::default(); MAX_DEPTH];
    // The containers entered on the path: the value at `depth` is inside `frames[..depth]`.
    let mut depth = 0usize;
    let mut step = Step::Value;
    while pending > 0 {
        step = match step {
            Step::Value => {
                s.skip_ws();
                let start = s.pos;
                let array = s.peek() == Some(b'[');
                let mut wanting = 0usize;
                for (p, slot) in pointers.iter().zip(out.iter_mut()) {
                    if *slot != Found::Pending(depth) {
                        continue;
                    }
                    match p.tokens.get(depth) {
                        None => {}
                        // Not an index: absent before the array is scanned, as in `locate`.
                        Some(token) if array && parse_index(token).is_none() => {
                            *slot = Found::Absent;
                            pending = pending.saturating_sub(1);
                        }
                        Some(_) => wanting = wanting.saturating_add(1),
                    }
                }
                match s.peek() {
                    _ if pending == 0 => Step::Done,
                    Some(open @ (b'{' | b'[')) if wanting > 0 => {
                        s.open()?;
                        let frame = frames.get_mut(depth).ok_or(JsonError::TooDeep)?;
                        *frame = Frame {
                            start,
                            index: 0,
                            wanting,
                            object: open == b'{',
                        };
                        s.skip_ws();
                        if s.peek() == Some(open.saturating_add(2)) {
                            // `{}` or `[]` (`}` and `]` are two past their opening bytes).
                            s.close();
                            Step::Closed
                        } else {
                            Step::Child
                        }
                    }
                    _ => {
                        // A scalar, or a container no pointer goes into: scanned whole, then
                        // what ends here is found and what goes deeper is absent.
                        let kind = s.skip_value()?;
                        let value = value_at(doc, kind, start, s.pos)?;
                        settle(pointers, out, depth, value, s.pos, &mut pending);
                        Step::Done
                    }
                }
            }
            Step::Child => {
                let frame = frames.get_mut(depth).ok_or(JsonError::TooDeep)?;
                let name = if frame.object {
                    Some(s.member_name()?)
                } else {
                    None
                };
                let mut entering = 0usize;
                if frame.wanting > 0 {
                    for (p, slot) in pointers.iter().zip(out.iter_mut()) {
                        if *slot != Found::Pending(depth) {
                            continue;
                        }
                        let Some(token) = p.tokens.get(depth) else {
                            continue;
                        };
                        let here = match name {
                            Some(name) => name_matches(name, token),
                            None => parse_index(token) == Some(frame.index),
                        };
                        if here {
                            *slot = Found::Pending(depth.saturating_add(1));
                            entering = entering.saturating_add(1);
                        }
                    }
                }
                if entering > 0 {
                    // The first member of that name (or the element) is the pointers' only one.
                    frame.wanting = frame.wanting.saturating_sub(entering);
                    depth = depth.saturating_add(1);
                    Step::Value
                } else {
                    s.skip_value()?;
                    Step::After
                }
            }
            Step::After => {
                let frame = frames.get_mut(depth).ok_or(JsonError::TooDeep)?;
                if s.next_or_close(if frame.object { b'}' } else { b']' })? {
                    frame.index = frame.index.saturating_add(1);
                    Step::Child
                } else {
                    Step::Closed
                }
            }
            Step::Closed => {
                let frame = frames.get(depth).ok_or(JsonError::TooDeep)?;
                let kind = if frame.object {
                    Kind::Object
                } else {
                    Kind::Array
                };
                let value = value_at(doc, kind, frame.start, s.pos)?;
                settle(pointers, out, depth, value, s.pos, &mut pending);
                Step::Done
            }
            Step::Done => {
                // Back in the container around the value (the pointers that went into the value
                // all have their answer).
                let Some(up) = depth.checked_sub(1) else {
                    break;
                };
                depth = up;
                Step::After
            }
        };
    }
    Ok(())
}

/// The value whose source text is `doc[start..end]`.
fn value_at(doc: &[u8], kind: Kind, start: usize, end: usize) -> Result<Value<'_>, JsonError> {
    let (from, to) = if kind == Kind::String {
        // The closing quote is the last byte scanned; the opening quote is the first.
        (start.saturating_add(1), end.saturating_sub(1))
    } else {
        (start, end)
    };
    let raw = doc.get(from..to).ok_or(JsonError::Syntax)?;
    Ok(Value { kind, raw })
}

/// The value at `depth` is complete (its text ends at `end`): the pointers there that end there
/// have it, the others (which went no deeper) are absent.
fn settle<'a>(
    pointers: &[&Pointer],
    out: &mut [Found<'a>],
    depth: usize,
    value: Value<'a>,
    end: usize,
    pending: &mut usize,
) {
    for (p, slot) in pointers.iter().zip(out.iter_mut()) {
        if *slot == Found::Pending(depth) {
            *slot = if p.tokens.len() == depth {
                Found::Value(value, end)
            } else {
                Found::Absent
            };
            *pending = pending.saturating_sub(1);
        }
    }
}
