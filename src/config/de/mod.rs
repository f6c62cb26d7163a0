//! The configuration reader: a serde [`Deserializer`] over the JSON bytes that tracks the field
//! path itself, so that a refusal names `versions[1].weight` and says why.
//!
//! It replaces `serde_json` + `serde_path_to_error` in the module (together they were most of its
//! code). Tokens are scanned by [`crate::formats::json`]'s scanner, so strings, numbers and literals follow
//! exactly the grammar the business rules accept; nesting deeper than
//! [`MAX_DEPTH`](crate::formats::json::MAX_DEPTH) is refused.
//!
//! Only what the configuration needs: objects, arrays, strings (every escape, surrogate pairs),
//! integers, `true`, `false`, `null`. No field of the configuration is fractional, so a number
//! with a fraction or an exponent is refused (`invalid type: floating point `9.5`, expected u32`),
//! as are integers outside `i64`/`u64` — `serde_json` refused them for the same fields (it read
//! them as floats). Messages follow `serde_json`'s wording, with `at line L column C`.
//!
//! Two spellings serde_json also took are refused, being no part of the documented format and
//! costing the module code: a struct written as an array of its fields in order (`["canary", 5]`
//! for a version; it names no field) and a unit variant written as a one-member object
//! (`{"Lax": null}` for `"Lax"`).

use crate::check::ConfigError;
use crate::formats::json::{JsonError, Kind, Scanner, Value};
use serde::de::{self, Expected, Unexpected, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

mod access;

use access::{Map, Seq};

/// Parses one JSON value into `T`; anything but whitespace after it is refused at `(root)`.
///
/// # Errors
///
/// A [`ConfigError`] naming the field path (`(root)` for the document) and the reason.
pub(crate) fn from_slice<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ConfigError> {
    let (value, mut p) = read(bytes, 0, Vec::new())?;
    p.s.skip_ws();
    if p.s.peek().is_some() {
        p.path.clear();
        return Err(p.refusal(Error::msg("after the JSON object: trailing characters")));
    }
    Ok(value)
}

/// Parses the value at byte `start` of `bytes`, element `index` of the top-level array `member`
/// (a service of a multi-service document): refusals name `member[index].field` and the line
/// and column in the whole document.
pub(crate) fn from_element<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    start: usize,
    member: &str,
    index: usize,
) -> Result<T, ConfigError> {
    let path = vec![Segment::Key(member.to_string()), Segment::Index(index)];
    read(bytes, start, path).map(|(value, _)| value)
}

fn read<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    start: usize,
    path: Vec<Segment>,
) -> Result<(T, Parser<'de>), ConfigError> {
    let mut p = Parser {
        s: Scanner {
            doc: bytes,
            pos: start,
            depth: 0,
        },
        path,
    };
    let value = T::deserialize(&mut p).map_err(|e| p.refusal(e))?;
    Ok((value, p))
}

/// The deserializer's error: a reason, and the field when serde reports it missing (serde
/// reports a missing field at its parent; the path then names the field itself). Boxed: one
/// pointer is cheaper to pass up through every generic serde frame.
#[derive(Debug)]
pub(crate) struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    reason: String,
    missing: Option<&'static str>,
    /// The error is about the next byte (not yet consumed): the position names that byte, as
    /// serde_json's did. Otherwise it names the last byte of the value just read.
    at_next: bool,
}

impl Error {
    fn new(reason: String, missing: Option<&'static str>, at_next: bool) -> Self {
        Error(Box::new(Inner {
            reason,
            missing,
            at_next,
        }))
    }

    /// A syntax error at the next byte.
    fn msg(reason: &str) -> Self {
        Error::new(reason.to_string(), None, true)
    }

    /// An error about the token just read.
    fn after(reason: &str) -> Self {
        Error::new(reason.to_string(), None, false)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.reason)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(msg.to_string(), None, false)
    }

    // The two below spell serde's own messages without its `Unexpected` formatter, which would
    // bring float formatting into the module for a case that cannot occur here.
    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Error::custom(format_args!(
            "invalid type: {}, expected {exp}",
            Shown(unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Error::custom(format_args!(
            "invalid value: {}, expected {exp}",
            Shown(unexp)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        // Found at the closing `}`.
        Error::new(format!("missing field `{field}`"), Some(field), true)
    }
}

/// serde's wording for an unexpected value; floats (never produced by this reader) unquoted.
struct Shown<'a>(Unexpected<'a>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Unexpected::Bool(b) => write!(f, "boolean `{b}`"),
            Unexpected::Unsigned(i) => write!(f, "integer `{i}`"),
            Unexpected::Signed(i) => write!(f, "integer `{i}`"),
            Unexpected::Float(_) => f.write_str("floating point"),
            Unexpected::Char(c) => write!(f, "character `{c}`"),
            Unexpected::Str(s) => write!(f, "string {s:?}"),
            Unexpected::Bytes(_) => f.write_str("byte array"),
            Unexpected::Unit => f.write_str("null"),
            Unexpected::Option => f.write_str("Option value"),
            Unexpected::NewtypeStruct => f.write_str("newtype struct"),
            Unexpected::Seq => f.write_str("sequence"),
            Unexpected::Map => f.write_str("map"),
            Unexpected::Enum => f.write_str("enum"),
            Unexpected::UnitVariant => f.write_str("unit variant"),
            Unexpected::NewtypeVariant => f.write_str("newtype variant"),
            Unexpected::TupleVariant => f.write_str("tuple variant"),
            Unexpected::StructVariant => f.write_str("struct variant"),
            Unexpected::Other(other) => f.write_str(other),
        }
    }
}

/// One step of the field path.
enum Segment {
    /// An object member, by its (unescaped) name.
    Key(String),
    /// An array element.
    Index(usize),
}

/// A scalar, or the start of a container (the scanner is then just inside it).
enum Token<'de> {
    Null,
    Bool(bool),
    Str(Cow<'de, str>),
    Unsigned(u64),
    Signed(i64),
    /// A number with a fraction or an exponent, or `-0`: its text.
    Float(&'de str),
    /// An integer outside `i64`/`u64`: its text.
    Big(&'de str),
    Array,
    Object,
}

struct Parser<'de> {
    s: Scanner<'de>,
    /// The path of the value being read. Left as it is when an error is returned, so that the
    /// path of the failure is still here when the error reaches [`from_slice`].
    path: Vec<Segment>,
}

impl<'de> Parser<'de> {
    /// The path and position of the error, spelled for the log.
    fn refusal(&self, e: Error) -> ConfigError {
        let mut path = String::new();
        for segment in &self.path {
            match segment {
                Segment::Key(key) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    // A member named "" is spelled the way the document does.
                    path.push_str(if key.is_empty() { "\"\"" } else { key });
                }
                Segment::Index(i) => {
                    path.push('[');
                    path.push_str(&i.to_string());
                    path.push(']');
                }
            }
        }
        if let Some(field) = e.0.missing {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(field);
        }
        if path.is_empty() {
            path.push_str("(root)");
        }
        let doc = self.s.doc;
        let pos = if e.0.at_next {
            self.s.pos.saturating_add(1).min(doc.len())
        } else {
            self.s.pos
        };
        let before = doc.get(..pos).unwrap_or(doc);
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.len() - line_start;
        ConfigError::new(
            path,
            format!("{} at line {line} column {column}", e.0.reason),
        )
    }

    /// The next byte after whitespace (not consumed).
    fn peek(&mut self) -> Result<u8, Error> {
        self.peek_in("EOF while parsing a value")
    }

    /// The next byte after whitespace; `eof` when the input ends.
    fn peek_in(&mut self, eof: &str) -> Result<u8, Error> {
        self.s.skip_ws();
        self.s.peek().ok_or_else(|| Error::msg(eof))
    }

    /// Consumes `byte` after whitespace (inside an object), or fails with `what`.
    fn expect(&mut self, byte: u8, what: &str) -> Result<(), Error> {
        if self.peek_in("EOF while parsing an object")? == byte {
            self.s.bump();
            Ok(())
        } else {
            Err(Error::msg(what))
        }
    }

    /// Reads the next scalar, or enters the next container.
    fn token(&mut self) -> Result<Token<'de>, Error> {
        let token = match self.peek()? {
            b'n' => self.s.literal(b"null").map(|_| Token::Null),
            b't' => self.s.literal(b"true").map(|_| Token::Bool(true)),
            b'f' => self.s.literal(b"false").map(|_| Token::Bool(false)),
            b'"' => return self.string().map(Token::Str),
            b'-' | b'0'..=b'9' => return self.number(),
            b'[' => self.s.open().map(|()| Token::Array),
            b'{' => self.s.open().map(|()| Token::Object),
            _ => return Err(Error::msg("expected value")),
        };
        token.map_err(|e| scan_error(e, "expected value"))
    }

    /// Reads a string (the scanner is at its opening quote).
    fn string(&mut self) -> Result<Cow<'de, str>, Error> {
        self.s.bump();
        let (from, to) = self.s.string_body().map_err(|e| match e {
            JsonError::Truncated => Error::msg("EOF while parsing a string"),
            _ => Error::msg("invalid string: bad escape or control character"),
        })?;
        let raw = self.s.doc.get(from..to).unwrap_or_default();
        let text = Value {
            kind: Kind::String,
            raw,
        }
        .text()
        .ok_or_else(|| Error::after("invalid string: lone surrogate in a \\u escape"))?;
        let utf8 = || Error::after("invalid string: not UTF-8");
        Ok(match text {
            Cow::Borrowed(b) => Cow::Borrowed(std::str::from_utf8(b).map_err(|_| utf8())?),
            Cow::Owned(b) => Cow::Owned(String::from_utf8(b).map_err(|_| utf8())?),
        })
    }

    /// Reads a number. Integers only; see the module documentation.
    fn number(&mut self) -> Result<Token<'de>, Error> {
        let from = self.s.pos;
        self.s
            .number()
            .map_err(|e| scan_error(e, "invalid number"))?;
        let raw = self.s.doc.get(from..self.s.pos).unwrap_or_default();
        // The scanner accepted `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: ASCII.
        let text = std::str::from_utf8(raw).unwrap_or_default();
        let (negative, digits) = match raw.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, raw),
        };
        if !digits.iter().all(u8::is_ascii_digit) {
            return Ok(Token::Float(text));
        }
        let value = digits.iter().try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        Ok(match (negative, value) {
            (false, Some(v)) => Token::Unsigned(v),
            // serde_json read `-0` as the float -0.0.
            (true, Some(0)) => Token::Float(text),
            (true, Some(v)) => 0i64
                .checked_sub_unsigned(v)
                .map_or(Token::Big(text), Token::Signed),
            (_, None) => Token::Big(text),
        })
    }

    /// In an array or object: true when another element follows (consuming the `,` before it),
    /// false at the closing `close` (not consumed).
    fn more(&mut self, close: u8, first: bool) -> Result<bool, Error> {
        let list = close == b']';
        let next = self.peek_in(if list {
            "EOF while parsing a list"
        } else {
            "EOF while parsing an object"
        })?;
        if next == close {
            return Ok(false);
        }
        if first {
            return Ok(true);
        }
        if next == b',' {
            self.s.bump();
            return Ok(true);
        }
        Err(Error::msg(if list {
            "expected `,` or `]`"
        } else {
            "expected `,` or `}`"
        }))
    }

    /// Leaves a container at its closing byte.
    fn close(&mut self, close: u8) -> Result<(), Error> {
        if self.peek()? != close {
            return Err(Error::msg("trailing characters"));
        }
        self.s.bump();
        self.s.depth = self.s.depth.saturating_sub(1);
        Ok(())
    }

    /// Consumes a `null` if one comes next.
    fn null(&mut self) -> Result<bool, Error> {
        if self.peek()? != b'n' {
            return Ok(false);
        }
        self.token()?;
        Ok(true)
    }

    /// Enters array element `index` in the path.
    #[inline(never)]
    fn enter(&mut self, index: usize) {
        self.path.push(Segment::Index(index));
    }

    /// Takes the last step off the path (its value has been read).
    #[inline(never)]
    fn leave(&mut self) {
        self.path.pop();
    }

    /// Reads a member name and enters it in the path; returns it (from the path).
    fn key(&mut self) -> Result<&str, Error> {
        if self.peek()? != b'"' {
            return Err(Error::msg("key must be a string"));
        }
        let key = self.string()?.into_owned();
        self.path.push(Segment::Key(key));
        match self.path.last() {
            Some(Segment::Key(key)) => Ok(key),
            _ => Ok(""),
        }
    }
}

// The typed reads: the next token if it is of the kind the visitor `exp` takes, otherwise the
// refusal in the visitor's words. Not generic, so each visitor adds only its own calls.
impl<'de> Parser<'de> {
    fn bool_for(&mut self, exp: &dyn Expected) -> Result<bool, Error> {
        match self.token()? {
            Token::Bool(b) => Ok(b),
            token => Err(refuse(&token, exp)),
        }
    }

    /// `Ok(u64)`, or `Err(i64)` for a negative integer.
    fn integer_for(&mut self, exp: &dyn Expected) -> Result<Result<u64, i64>, Error> {
        match self.token()? {
            Token::Unsigned(n) => Ok(Ok(n)),
            Token::Signed(n) => Ok(Err(n)),
            token => Err(refuse(&token, exp)),
        }
    }

    fn string_for(&mut self, exp: &dyn Expected) -> Result<Cow<'de, str>, Error> {
        match self.token()? {
            Token::Str(s) => Ok(s),
            token => Err(refuse(&token, exp)),
        }
    }

    fn null_for(&mut self, exp: &dyn Expected) -> Result<(), Error> {
        match self.token()? {
            Token::Null => Ok(()),
            token => Err(refuse(&token, exp)),
        }
    }

    /// Enters the array (`open` = `[`) or object (`{`) that must come next.
    fn open_for(&mut self, open: u8, exp: &dyn Expected) -> Result<(), Error> {
        match self.token()? {
            Token::Array if open == b'[' => Ok(()),
            Token::Object if open == b'{' => Ok(()),
            token => Err(refuse(&token, exp)),
        }
    }

    /// Just inside an array: its elements, then the closing `]`.
    fn seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        let value = visitor.visit_seq(Seq {
            p: &mut *self,
            index: 0,
        })?;
        self.close(b']')?;
        Ok(value)
    }

    /// Just inside an object: its members, then the closing `}`.
    fn map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        let value = visitor.visit_map(Map {
            p: &mut *self,
            first: true,
        })?;
        self.close(b'}')?;
        Ok(value)
    }
}

/// The scanner's error as a reason: `EOF` when the document ends too early.
fn scan_error(e: JsonError, syntax: &str) -> Error {
    match e {
        JsonError::Truncated => Error::msg("EOF while parsing a value"),
        // MAX_DEPTH (checked by a test).
        JsonError::TooDeep => {
            Error::msg("recursion limit exceeded (more than 128 nested arrays and objects)")
        }
        JsonError::Syntax => Error::msg(syntax),
    }
}

/// Refuses `token` where `exp` was expected (also: numbers that are not integers of a supported
/// size).
fn refuse(token: &Token<'_>, exp: &dyn Expected) -> Error {
    let other;
    let unexp = match token {
        Token::Null => Unexpected::Unit,
        Token::Bool(b) => Unexpected::Bool(*b),
        Token::Str(s) => Unexpected::Str(s),
        Token::Unsigned(n) => Unexpected::Unsigned(*n),
        Token::Signed(n) => Unexpected::Signed(*n),
        Token::Float(text) => {
            other = format!("floating point `{text}`");
            Unexpected::Other(&other)
        }
        Token::Big(text) => {
            other = format!("integer `{text}`");
            return de::Error::invalid_value(Unexpected::Other(&other), exp);
        }
        Token::Array => Unexpected::Seq,
        Token::Object => Unexpected::Map,
    };
    de::Error::invalid_type(unexp, exp)
}

#[cfg(test)]
mod tests {
    //! serde_json (with serde_path_to_error's paths) is the independent model of this reader:
    //! the same documents are accepted, into the same values, and refusals read the same.

    use crate::config::{parse, ConfigError, RawConfig};
    use crate::formats::json::MAX_DEPTH;
    use proptest::prelude::*;

    /// A valid document using every part of the configuration.
    const FULL: &str = r#"{
        "service": "checkout",
        "salt": "s\u00e9l\n",
        "versions": [ {"name": "canary", "weight": 5}, {"name": "stable", "weight": 95} ],
        "default_version": "stable",
        "session": {
            "sources": [ {"cookie": "sid"}, {"header": "x-user-id"} ],
            "assign_cookie": {"name": "sc", "max_age_seconds": 86400, "secure": true,
                              "http_only": false, "same_site": "Strict", "path": "/shop",
                              "domain": null},
            "hold": {"cookie": "sc_hold", "idle_seconds": 900, "secure": true,
                     "http_only": true, "same_site": "None", "path": "/", "domain": "example.com"}
        },
        "route_header": "x-canary-version",
        "bucket_header": "x-canary-bucket",
        "response_header": "x-served-by",
        "override": {"header": "x-o", "token_header": "x-t", "tokens": ["0123456789abcdef"],
                     "tokens_env": "QA_TOKENS"},
        "pins": [ {"header": "x-tenant", "values": ["acme", "\ud83d\ude00"], "version": "canary"} ],
        "reason_header": "x-reason",
        "business_metrics": [
            {"name": "orders", "kind": "counter", "header": "x-order-id", "status": "2xx"},
            {"name": "revenue", "kind": "sum", "json": "/total", "scale": 2, "status": [200, 201]},
            {"name": "basket", "kind": "histogram", "json": "/items/0", "equals": null}
        ],
        "max_body_bytes": 4096
    }"#;

    /// serde_json's reading of a document, with the old path rules (enough for these tests:
    /// acceptance and the value).
    fn model(doc: &[u8]) -> Result<RawConfig, String> {
        if doc.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
            return Err("not an object".into());
        }
        serde_json::from_slice(doc).map_err(|e| e.to_string())
    }

    fn ours(doc: &str) -> Result<RawConfig, ConfigError> {
        parse(doc.as_bytes())
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let got = ours(FULL).unwrap();
        let want = model(FULL.as_bytes()).unwrap();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        assert_eq!(got.salt.as_deref(), Some("s\u{e9}l\n"));
        assert_eq!(got.pins[0].values.list.get(1), Some("\u{1f600}".as_bytes()));
    }

    /// Refusals: the path, and the reason exactly as serde_json worded and placed it.
    #[test]
    fn refusals_read_like_serde_json() {
        let cases: &[(&str, &str)] = &[
            (r#"{"service": 3}"#, "service"),
            (r#"{"service": null}"#, "service"),
            (r#"{"service": "a", "versoins": 1}"#, "versoins"),
            (
                r#"{"service": "a", "versions": [{"name": "x"}]}"#,
                "versions[0].weight",
            ),
            (
                "{\n  \"service\": \"a\",\n  \"versions\": [\n    {\"name\": \"x\", \"weight\": -95}\n  ]\n}",
                "versions[0].weight",
            ),
            (
                r#"{"service": "a", "versions": [{"name": "x", "weight": 1.5}]}"#,
                "versions[0].weight",
            ),
            (
                r#"{"service": "a", "versions": [], "session": {"sources": [], "assign_cookie": {"name": "s", "same_site": "lax"}}}"#,
                "session.assign_cookie.same_site",
            ),
            (
                r#"{"business_metrics": [{"name": "x", "kind": "gauge"}]}"#,
                "business_metrics[0].kind",
            ),
            (
                r#"{"service": "a", "max_body_bytes": true}"#,
                "max_body_bytes",
            ),
            (
                r#"{"pins": [{"header": "h", "values": "v"}]}"#,
                "pins[0].values",
            ),
            (
                r#"{"pins": [{"header": "h", "values": ["a", 1]}]}"#,
                "pins[0].values[1]",
            ),
            (
                r#"{"pins": [{"header": "h", "values": ["a", "", null]}]}"#,
                "pins[0].values[2]",
            ),
            (r#"{"service": "a" "versions": []}"#, "(root)"),
            (r#"{"service": "a", "versions": [}"#, "versions[0]"),
            (r#"{"service": "a""#, "(root)"),
        ];
        for &(doc, path) in cases {
            let err = ours(doc).unwrap_err();
            let want = model(doc.as_bytes()).unwrap_err();
            assert_eq!(err.path, path, "{doc}: {err}");
            assert_eq!(err.reason, want, "{doc}");
        }
        // The `:` after a name is read with the name, so a duplicate is reported just after it.
        let err = ours(r#"{"service": "a", "service": "b"}"#).unwrap_err();
        assert_eq!(err.path, "service");
        assert_eq!(err.reason, "duplicate field `service` at line 1 column 27");
        // Worded differently, placed the same.
        let cases: &[(&str, &str)] = &[
            (r#"{"max_body_bytes": 12x}"#, "max_body_bytes"),
            (r#"{"service": tru}"#, "service"),
            (r#"{"versions": [{"name": "a", "weight": 1}}"#, "versions"),
        ];
        for &(doc, path) in cases {
            let err = ours(doc).unwrap_err();
            let want = model(doc.as_bytes()).unwrap_err();
            assert_eq!(err.path, path, "{doc}: {err}");
            let at = |r: &str| r.rfind(" at line").map(|i| r[i..].to_string());
            assert_eq!(at(&err.reason), at(&want), "{doc}: {err} / {want}");
        }
    }

    /// Numbers read as `f64` (the guard's alpha and limits) agree with the standard parser.
    #[test]
    fn floats() {
        for text in [
            "0",
            "1",
            "0.01",
            "0.3",
            "1.0",
            "2.5e-3",
            "1E2",
            "-0.75",
            "123456.789",
            "1e-10",
            "0.1",
            "0.2",
            "0.05",
            "99999999999999999999",
            "12345678901234567890123.5",
            "3.14159265358979",
            "5e+1",
        ] {
            let want: f64 = text.parse().unwrap();
            let got = crate::formats::json::decimal_f64(text).unwrap();
            assert!(
                got == want || ((got - want) / want).abs() < 1e-15,
                "{text}: {got} vs {want}"
            );
        }
        for exact in ["0.01", "0.3", "0.05", "1.0", "0.001", "2.5"] {
            assert_eq!(
                crate::formats::json::decimal_f64(exact),
                exact.parse().ok(),
                "{exact}"
            );
        }
        assert_eq!(crate::formats::json::decimal_f64("1e400"), None);
        assert_eq!(crate::formats::json::decimal_f64("1e99999999999"), None);
        assert_eq!(crate::formats::json::decimal_f64("1e-400"), Some(0.0));
    }

    /// Where the wording differs from serde_json's, the meaning does not.
    #[test]
    fn numbers_that_are_not_integers() {
        let cases = [
            ("1e3", "invalid type: floating point `1e3`, expected u32"),
            ("-0", "invalid type: floating point `-0`, expected u32"),
            ("0.0", "invalid type: floating point `0.0`, expected u32"),
            (
                "99999999999999999999",
                "invalid value: integer `99999999999999999999`, expected u32",
            ),
            ("-5", "invalid value: integer `-5`, expected u32"),
            (
                "-9223372036854775809",
                "invalid value: integer `-9223372036854775809`, expected u32",
            ),
        ];
        for (number, reason) in cases {
            let doc = format!(r#"{{"versions": [{{"name": "x", "weight": {number}}}]}}"#);
            let err = ours(&doc).unwrap_err();
            assert_eq!(err.path, "versions[0].weight", "{doc}");
            assert!(err.reason.starts_with(reason), "{doc}: {err}");
            assert!(model(doc.as_bytes()).is_err(), "{doc}");
        }
        // The extremes that are integers.
        let doc = r#"{"session": {"sources": [], "assign_cookie": {"name": "s", "max_age_seconds": 18446744073709551615}}}"#;
        let err = ours(doc).unwrap_err();
        assert_eq!(err.path, "service", "{err}");
    }

    #[test]
    fn strings() {
        for (text, why) in [
            (r#""\ud800""#, "lone surrogate"),
            (r#""\ude00\ud83d""#, "lone surrogate"),
            (r#""\x""#, "bad escape"),
            ("\"a\u{1}\"", "control character"),
            (r#""\u12""#, "bad escape"),
        ] {
            let doc = format!(r#"{{"service": {text}}}"#);
            let err = ours(&doc).unwrap_err();
            assert_eq!(err.path, "service", "{doc}");
            assert!(err.reason.contains(why), "{doc}: {err}");
            assert!(model(doc.as_bytes()).is_err(), "{doc}");
        }
        let mut doc = br#"{"service": "a"#.to_vec();
        doc.extend_from_slice(&[0xff, b'"', b'}']);
        let err = parse(&doc).unwrap_err();
        assert_eq!(err.path, "service");
        assert!(err.reason.contains("not UTF-8"), "{err}");
        // Escaped member names are read unescaped.
        let doc = r#"{"serv\u0069ce": 1}"#;
        assert_eq!(ours(doc).unwrap_err().path, "service");
    }

    /// Deliberate difference: serde_json also read a struct from an array of its fields in
    /// order (`["canary", 5]`), which names no field. Refused, saying what is expected.
    #[test]
    fn a_struct_is_an_object() {
        let doc = r#"{"service": "a", "versions": [["x", 1]], "session": {"sources": [{"cookie": "s"}]}}"#;
        assert!(model(doc.as_bytes()).is_ok());
        let err = ours(doc).unwrap_err();
        assert_eq!(err.path, "versions[0]");
        assert!(
            err.reason
                .starts_with("invalid type: sequence, expected struct RawVersion"),
            "{err}"
        );
    }

    /// Deliberate difference: serde_json also took a unit variant written as a one-member
    /// object, `{"Lax": null}`. Enums are their names.
    #[test]
    fn variants_are_names() {
        let doc = |same_site: &str| {
            format!(
                r#"{{"service": "a", "versions": [], "session": {{"sources": [],
                    "assign_cookie": {{"name": "s", "same_site": {same_site}}}}}}}"#
            )
        };
        let raw = ours(&doc(r#""Lax""#)).unwrap();
        let cookie = raw.session.assign_cookie.unwrap();
        assert_eq!(cookie.same_site, crate::routing::cookies::SameSite::Lax);
        let d = doc(r#"{"Lax": null}"#);
        assert!(model(d.as_bytes()).is_ok());
        let err = ours(&d).unwrap_err();
        assert_eq!(err.path, "session.assign_cookie.same_site");
        assert!(
            err.reason
                .starts_with("invalid type: map, expected enum SameSite"),
            "{err}"
        );
        for bad in [r#""lax""#, "1", "null", "[]"] {
            let d = doc(bad);
            let err = ours(&d).unwrap_err();
            assert!(model(d.as_bytes()).is_err(), "{bad}");
            assert_eq!(err.path, "session.assign_cookie.same_site", "{bad}: {err}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        for depth in [127, 128, 129, 100_000] {
            let doc = format!(
                r#"{{"business_metrics": [{{"name": "x", "kind": "counter", "status": {}{}}}]}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            let err = ours(&doc).unwrap_err();
            assert_eq!(
                err.path.split('[').next(),
                Some("business_metrics"),
                "{depth}"
            );
            if depth > MAX_DEPTH {
                let limit = format!("recursion limit exceeded (more than {MAX_DEPTH} nested");
                assert!(err.reason.starts_with(&limit), "{err}");
            }
        }
    }

    /// Any document: accepted exactly when serde_json accepts it (structs written as arrays and
    /// enums written as objects aside), into the same value.
    fn agrees(doc: &[u8]) -> Result<(), TestCaseError> {
        match (parse(doc), model(doc)) {
            (Ok(got), Ok(want)) => prop_assert_eq!(format!("{got:?}"), format!("{want:?}")),
            (Err(e), Ok(_)) => prop_assert!(
                e.reason
                    .starts_with("invalid type: sequence, expected struct")
                    || e.reason.starts_with("invalid type: map, expected enum"),
                "refused what serde_json accepts: {}",
                e
            ),
            (Ok(_), Err(e)) => prop_assert!(false, "accepted what serde_json refuses: {}", e),
            (Err(e), Err(_)) => {
                prop_assert!(!e.path.is_empty() && !e.reason.is_empty());
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The full document with a few bytes replaced, inserted or removed.
        #[test]
        fn mutated_documents_agree(
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                    b"{}[]\",:0123456789-.eE+tfnrulsa\\/ \n\x01\xff".to_vec())),
                1..4)
        ) {
            let mut doc = FULL.as_bytes().to_vec();
            for (at, op, byte) in edits {
                let i = at.index(doc.len() + 1);
                match op {
                    0 if i < doc.len() => doc[i] = byte,
                    1 => doc.insert(i, byte),
                    _ if i < doc.len() => { doc.remove(i); }
                    _ => {}
                }
            }
            agrees(&doc)?;
        }

        /// Arbitrary JSON values in place of a member.
        #[test]
        fn arbitrary_values_agree(
            member in prop::sample::select(vec![
                "service", "salt", "versions", "session", "pins", "override",
                "business_metrics", "max_body_bytes", "reason_header", "other",
            ]),
            value in json_value(),
        ) {
            let mut v: serde_json::Value = serde_json::from_str(FULL).unwrap();
            v[member] = value;
            agrees(v.to_string().as_bytes())?;
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::{json, Value};
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e3f64..1e3).prop_map(|f| json!(f)),
            "[a-z\u{e9}\u{1f600} -]{0,6}".prop_map(Value::from),
            prop::sample::select(vec!["canary", "stable", "x-h", "2xx", "counter", "Lax"])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            "name", "weight", "cookie", "header", "sources", "values", "version",
                            "kind", "json", "status", "tokens", "x", "",
                        ]),
                        inner
                    ),
                    0..4
                )
                .prop_map(|members| Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                )),
            ]
        })
    }
}
