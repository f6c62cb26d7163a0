//! The one reader of Prometheus answers: an `/api/v1/query` answer whose result is an instant
//! vector, read into samples, with bounds. The pool (in every Envoy) and `sticky-canary gate
//! --prometheus` both read Prometheus through it.
//!
//! Bounds: an answer longer than the caller's limit is refused before a byte of it is read
//! ([`read`] takes the limit), nesting deeper than [`MAX_DEPTH`](crate::formats::json::MAX_DEPTH) is
//! refused by the scanner (no recursion: 100 000 nested arrays cost one pass), and a sample value
//! that cannot be a count — `NaN`, `±Inf`, negative, not a number — makes the whole answer
//! [`AnswerError::Value`]: a counter Prometheus reports as such is broken, and nothing is judged
//! on it.

use crate::formats::json::{name_matches, JsonError, Kind, Scanner, Value};

/// One element of the vector: its labels (`__name__` included when Prometheus keeps it) and
/// its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why an answer was not read.
#[derive(Clone, Debug, PartialEq)]
pub enum AnswerError {
    /// Longer than the limit (bytes, limit).
    TooLarge(usize, usize),
    /// Not JSON, or JSON nested too deeply.
    Json(JsonError),
    /// JSON, but not a Prometheus query answer of the expected shape (what is wrong).
    Shape(&'static str),
    /// `"status": "error"`, with Prometheus's `errorType: error`.
    Status(String),
    /// A sample value that cannot be a count (the value's text).
    Value(String),
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(n, max) => write!(f, "answer of {n} bytes, above the limit of {max}"),
            Self::Json(e) => write!(f, "not a JSON answer: {e}"),
            Self::Shape(what) => write!(f, "not an instant-vector answer: {what}"),
            Self::Status(e) => write!(f, "Prometheus answered with an error: {e}"),
            Self::Value(v) => write!(f, "sample value {v:?} cannot be a count"),
        }
    }
}

impl From<JsonError> for AnswerError {
    fn from(e: JsonError) -> Self {
        AnswerError::Json(e)
    }
}

/// The value at `pos` of `doc`, after whitespace, and where it ends.
fn value_at(doc: &[u8], pos: usize) -> Result<Value<'_>, JsonError> {
    let mut s = Scanner { doc, pos, depth: 0 };
    s.skip_ws();
    let from = s.pos;
    let kind = s.skip_value()?;
    let raw = match kind {
        // Between the quotes.
        Kind::String => doc.get(from + 1..s.pos.saturating_sub(1)),
        _ => doc.get(from..s.pos),
    };
    Ok(Value {
        kind,
        raw: raw.ok_or(JsonError::Syntax)?,
    })
}

/// The members (or elements) of the container at `pos`.
fn children(doc: &[u8], pos: usize) -> Result<Vec<(&[u8], usize)>, JsonError> {
    Scanner { doc, pos, depth: 0 }.children()
}

/// The text of a string value, unescaped; `None` for anything but a string.
fn text(doc: &[u8], pos: usize) -> Result<Option<String>, JsonError> {
    let v = value_at(doc, pos)?;
    if v.kind != Kind::String {
        return Ok(None);
    }
    let t = v.text().ok_or(JsonError::Syntax)?;
    String::from_utf8(t.into_owned())
        .map(Some)
        .map_err(|_| JsonError::Syntax)
}

fn member(members: &[(&[u8], usize)], name: &str) -> Option<usize> {
    members
        .iter()
        .find(|(n, _)| name_matches(n, name.as_bytes()))
        .map(|(_, at)| *at)
}

/// Whether the string value at `pos` is `want` (escapes allowed, as JSON allows them).
fn is(doc: &[u8], pos: Option<usize>, want: &str) -> Result<bool, JsonError> {
    let Some(pos) = pos else { return Ok(false) };
    let v = value_at(doc, pos)?;
    Ok(v.kind == Kind::String && name_matches(v.raw, want.as_bytes()))
}

/// A label of a sample as it is in the answer: name and value, still escaped. Compare with
/// [`Label::is`]; [`Label::text`] unescapes.
#[derive(Clone, Copy, Debug)]
pub struct Label<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl Label<'_> {
    /// Whether this is label `name` with value `value`.
    pub fn is(&self, name: &str, value: &str) -> bool {
        name_matches(self.name, name.as_bytes()) && name_matches(self.value, value.as_bytes())
    }

    /// Whether this is label `name`.
    pub fn named(&self, name: &str) -> bool {
        name_matches(self.name, name.as_bytes())
    }

    /// Name and value unescaped, if both are UTF-8.
    pub fn text(&self) -> Option<(String, String)> {
        let owned = |raw: &[u8]| {
            let t = Value {
                kind: Kind::String,
                raw,
            }
            .text()?;
            String::from_utf8(t.into_owned()).ok()
        };
        Some((owned(self.name)?, owned(self.value)?))
    }
}

/// Reads a Prometheus `/api/v1/query` answer whose result is a vector and calls `each` with
/// every sample's labels and value, in order; `limit` bounds its size in bytes. The whole
/// document is checked to be JSON first (one pass, iterative), so `each` is called only for an
/// answer that is read whole; unknown members (`warnings`, `infos`, `stats`) are skipped. No
/// label is copied: the filter compares them where they are.
#[inline(never)]
pub fn read_each<'a>(
    body: &'a [u8],
    limit: usize,
    each: &mut dyn FnMut(&[Label<'a>], f64),
) -> Result<(), AnswerError> {
    if body.len() > limit {
        return Err(AnswerError::TooLarge(body.len(), limit));
    }
    // The document must be one JSON value and nothing after it.
    let mut whole = Scanner {
        doc: body,
        pos: 0,
        depth: 0,
    };
    whole.skip_ws();
    let first = whole.peek();
    whole.skip_value()?;
    whole.skip_ws();
    if whole.peek().is_some() {
        return Err(AnswerError::Json(JsonError::Syntax));
    }
    if first != Some(b'{') {
        return Err(AnswerError::Shape("not a JSON object"));
    }
    let root = children(body, 0)?;
    if !is(body, member(&root, "status"), "success")? {
        if is(body, member(&root, "status"), "error")? {
            let text_of = |name: &str| -> Result<String, JsonError> {
                Ok(member(&root, name)
                    .map(|at| text(body, at))
                    .transpose()?
                    .flatten()
                    .unwrap_or_default())
            };
            let (t, e) = (text_of("errorType")?, text_of("error")?);
            return Err(AnswerError::Status(if t.is_empty() {
                e
            } else {
                format!("{t}: {e}")
            }));
        }
        return Err(AnswerError::Shape("no \"status\": \"success\""));
    }
    let data = member(&root, "data").ok_or(AnswerError::Shape("no data"))?;
    if value_at(body, data)?.kind != Kind::Object {
        return Err(AnswerError::Shape("data is not an object"));
    }
    let data = children(body, data)?;
    if !is(body, member(&data, "resultType"), "vector")? {
        return Err(AnswerError::Shape("data.resultType is not \"vector\""));
    }
    let result = member(&data, "result").ok_or(AnswerError::Shape("no data.result"))?;
    if value_at(body, result)?.kind != Kind::Array {
        return Err(AnswerError::Shape("data.result is not an array"));
    }
    let elements = children(body, result)?;
    let mut samples: Vec<(Vec<Label<'a>>, f64)> = Vec::with_capacity(elements.len());
    for (_, at) in elements {
        if value_at(body, at)?.kind != Kind::Object {
            return Err(AnswerError::Shape("an element is not an object"));
        }
        let element = children(body, at)?;
        let mut labels = Vec::new();
        if let Some(m) = member(&element, "metric") {
            if value_at(body, m)?.kind != Kind::Object {
                return Err(AnswerError::Shape("a metric is not an object"));
            }
            for (name, v) in children(body, m)? {
                let v = value_at(body, v)?;
                if v.kind != Kind::String || v.text().is_none() {
                    return Err(AnswerError::Shape("a label is not a string"));
                }
                labels.push(Label { name, value: v.raw });
            }
        }
        let bad = AnswerError::Shape("a sample's value is not [time, \"value\"]");
        let pair = member(&element, "value").ok_or(bad.clone())?;
        let pair = match value_at(body, pair)?.kind {
            Kind::Array => children(body, pair)?,
            _ => return Err(bad),
        };
        let (Some(&(_, v)), 2) = (pair.get(1), pair.len()) else {
            return Err(bad);
        };
        let v = text(body, v)?.ok_or(bad)?;
        let value = count(&v).ok_or(AnswerError::Value(v))?;
        samples.push((labels, value));
    }
    for (labels, value) in &samples {
        each(labels, *value);
    }
    Ok(())
}

/// [`read_each`], into owned samples (labels unescaped).
pub fn read(body: &[u8], limit: usize) -> Result<Vec<Sample>, AnswerError> {
    let mut samples = Vec::new();
    let mut unreadable = false;
    read_each(body, limit, &mut |labels, value| {
        let labels: Option<Vec<(String, String)>> = labels.iter().map(Label::text).collect();
        match labels {
            Some(labels) => samples.push(Sample { labels, value }),
            None => unreadable = true,
        }
    })?;
    if unreadable {
        return Err(AnswerError::Json(JsonError::Syntax));
    }
    Ok(samples)
}

/// A sample value as Prometheus writes it (`"1234"`, `"0.5"`, `"1e+21"`), when it can be a count:
/// a JSON-style number, finite and not negative (`-0` is 0).
pub fn count(text: &str) -> Option<f64> {
    // Strictly `-?digits(.digits)?([eE][+-]?digits)?`: the float parser below reads digits and
    // points leniently.
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    let mut valid = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        valid &= digits(&mut i);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        valid &= digits(&mut i);
    }
    if !valid || i != b.len() {
        return None;
    }
    let v = crate::formats::json::decimal_f64(text)?;
    if v == 0.0 {
        return Some(0.0);
    }
    (v > 0.0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OK: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"__name__":"canary_guard_evidence","metric":"responses","version":"canary"},"value":[1733600000.123,"1234"]},
        {"metric":{"version":"st\u0061ble"},"value":[1733600000,"0.5"]},
        {"metric":{},"value":[1733600000,"1e+21"]}]},
        "warnings":["x"],"infos":[{"deep":[[[1]]]}]}"#;

    #[test]
    fn reads_a_vector_answer() {
        let s = read(OK.as_bytes(), 1 << 20).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].label("__name__"), Some("canary_guard_evidence"));
        assert_eq!(s[0].label("metric"), Some("responses"));
        assert_eq!(s[0].value, 1234.0);
        assert_eq!(s[1].label("version"), Some("stable"), "escapes are read");
        assert_eq!(s[1].value, 0.5);
        assert_eq!(s[2].value, 1e21);
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(read(empty.as_bytes(), 100).unwrap(), vec![]);
    }

    #[test]
    fn refuses_every_bad_answer() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_in_answer = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[]}},"x":{deep}}}"#
        );
        let value = |v: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,{v}]}}]}}}}"#
            )
        };
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "json"),
            ("<html>502 Bad Gateway</html>".into(), "json"),
            ("[1,2]".into(), "shape"),
            (deep.clone(), "json"),
            (deep_in_answer, "json"),
            (r#"{"status":"success"}"#.into(), "shape"),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
                "shape",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#.into(),
                "shape",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[1]}}"#.into(),
                "shape",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]}} x"#.into(),
                "json",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":["#.into(),
                "json",
            ),
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#.into(),
                "status",
            ),
            (value(r#""NaN""#), "value"),
            (value(r#""+Inf""#), "value"),
            (value(r#""-Inf""#), "value"),
            (value(r#""-1""#), "value"),
            (value(r#""12abc""#), "value"),
            (value(r#""""#), "value"),
            (value("12"), "shape"),
            (value(r#""1", "2""#), "shape"),
        ];
        for (body, want) in cases {
            let got = read(body.as_bytes(), 1 << 20).expect_err(&body[..body.len().min(80)]);
            let kind = match got {
                AnswerError::TooLarge(..) => "large",
                AnswerError::Json(_) => "json",
                AnswerError::Shape(_) => "shape",
                AnswerError::Status(_) => "status",
                AnswerError::Value(_) => "value",
            };
            assert_eq!(kind, want, "{}: {got}", &body[..body.len().min(80)]);
        }
        assert_eq!(
            read(OK.as_bytes(), 100),
            Err(AnswerError::TooLarge(OK.len(), 100))
        );
        let e = read(
            br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
            1000,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Prometheus answered with an error: bad_data: parse error"
        );
    }

    #[test]
    fn counts() {
        for (t, want) in [
            ("0", Some(0.0)),
            ("-0", Some(0.0)),
            ("17", Some(17.0)),
            ("+17", None),
            ("1..2", None),
            ("06666666........20.......67", None),
            ("1.", None),
            (".5", None),
            ("1e", None),
            ("1e+6", Some(1e6)),
            ("1-2", None),
            ("2.5", Some(2.5)),
            ("9007199254740993", Some(9_007_199_254_740_992.0)),
            ("1e3", Some(1000.0)),
            ("NaN", None),
            ("Inf", None),
            ("+Inf", None),
            ("-3", None),
            ("1e400", None),
            ("0x10", None),
            (" 1", None),
            ("", None),
        ] {
            assert_eq!(count(t), want, "{t:?}");
        }
    }

    proptest! {
        /// Any bytes: an answer or an error, never a panic; a sample's value is always a count.
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(samples) = read(&body, 1 << 20) {
                prop_assert!(samples.iter().all(|s| s.value.is_finite() && s.value >= 0.0));
            }
        }

        /// Damaged copies of a good answer: never a panic, and never a non-count.
        #[test]
        fn damaged_answers(cut in 0usize..400, at in 0usize..400, byte in any::<u8>()) {
            let mut body = OK.as_bytes().to_vec();
            if let Some(b) = body.get_mut(at) { *b = byte; }
            body.truncate(cut.max(1));
            if let Ok(samples) = read(&body, 1 << 20) {
                prop_assert!(samples.iter().all(|s| s.value.is_finite() && s.value >= 0.0));
            }
        }

        /// Written values come back exactly.
        #[test]
        fn round_trip(values in proptest::collection::vec(0u64..(1 << 53), 0..20)) {
            let result: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, v)| format!(r#"{{"metric":{{"version":"v{i}"}},"value":[1.5,"{v}"]}}"#))
                .collect();
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                result.join(",")
            );
            let samples = read(body.as_bytes(), 1 << 20).unwrap();
            prop_assert_eq!(samples.len(), values.len());
            for (i, (s, v)) in samples.iter().zip(&values).enumerate() {
                prop_assert_eq!(s.value, *v as f64);
                let name = format!("v{i}");
                prop_assert_eq!(s.label("version"), Some(name.as_str()));
            }
        }
    }
}
