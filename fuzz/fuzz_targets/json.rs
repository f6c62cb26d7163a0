//! `json::Pointer::parse` and `json::find`, cross-checked with serde_json.
//!
//! Input: a pointer (UTF-8, lossily), a NUL byte, then the document. Without a NUL the whole
//! input is the document and the pointer is `""` (the whole document).
//!
//! Checks:
//! - `Pointer::parse` never panics; an accepted pointer re-escapes (`~` → `~0`, `/` → `~1`) to
//!   exactly its text; a refusal is the right one (`MustStartWithSlash` / `BadEscape`);
//! - `find` never panics; a found value's `raw` is a sub-slice of the document whose shape
//!   matches its kind (strings: between two quotes; literals spelled out; containers bracketed),
//!   `text()` never panics, and the value's own source text, read as a document, is found again
//!   identically;
//! - when serde_json accepts the whole document (and it has no duplicate member names: serde_json
//!   keeps the last, `find` the first), `find` never errs and agrees with
//!   `serde_json::Value::pointer` on presence and content (strings compared unescaped, other values
//!   re-parsed by serde_json), for the fuzzer's pointer and for every path of the document (up to
//!   64); and any prefix of the document either answers the same or is `Truncated` (never a
//!   wrong answer, never `Syntax`), and a value `Found::complete_in` takes from it is the same;
//! - `locate_all` (one walk for several pointers) answers each pointer exactly as `locate` does,
//!   and stops with `locate`'s error for the pointers it leaves pending: on any document, for a
//!   few fixed pointers and the fuzzer's (twice), and on a document serde_json accepts for every
//!   path of it too, on the whole document and on prefixes.
#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "nodup.rs"]
mod nodup;
use nodup::NoDup;
use serde_json::Value as JsonValue;
use sticky_canary::formats::json::{
    find, locate, locate_all, Found, JsonError, Kind, Pointer, PointerError, Value,
};

fn escape_token(t: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len());
    for &b in t {
        match b {
            b'~' => out.extend_from_slice(b"~0"),
            b'/' => out.extend_from_slice(b"~1"),
            _ => out.push(b),
        }
    }
    out
}

fn check_pointer(text: &str) -> Option<Pointer> {
    match Pointer::parse(text) {
        Ok(p) => {
            let mut again = Vec::new();
            for t in p.tokens() {
                again.push(b'/');
                again.extend_from_slice(&escape_token(t));
            }
            assert_eq!(
                again,
                text.as_bytes(),
                "pointer does not re-escape to its text"
            );
            Some(p)
        }
        Err(e) => {
            let want = if !text.is_empty() && !text.starts_with('/') {
                PointerError::MustStartWithSlash
            } else {
                let b = text.as_bytes();
                let bad = b
                    .iter()
                    .enumerate()
                    .any(|(i, &c)| c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')));
                assert!(bad, "{text:?} refused ({e}) without a bad escape");
                PointerError::BadEscape
            };
            assert_eq!(e, want, "{text:?}");
            None
        }
    }
}

fn offset(doc: &[u8], s: &[u8]) -> usize {
    let base = doc.as_ptr() as usize;
    let p = s.as_ptr() as usize;
    assert!(
        p >= base && p + s.len() <= base + doc.len(),
        "raw is not a sub-slice of the document"
    );
    p - base
}

/// The value's shape matches its kind; returns the source span (strings with their quotes).
fn check_value<'a>(doc: &'a [u8], v: &Value<'a>) -> &'a [u8] {
    let start = offset(doc, v.raw);
    let end = start + v.raw.len();
    let _ = v.text();
    match v.kind {
        Kind::String => {
            assert!(start >= 1 && doc[start - 1] == b'"' && doc.get(end) == Some(&b'"'));
            &doc[start - 1..end + 1]
        }
        Kind::Number => {
            assert!(matches!(v.raw.first(), Some(b'-' | b'0'..=b'9')));
            assert!(v.raw.iter().all(|b| b"0123456789+-.eE".contains(b)));
            v.raw
        }
        Kind::True => {
            assert_eq!(v.raw, b"true");
            v.raw
        }
        Kind::False => {
            assert_eq!(v.raw, b"false");
            v.raw
        }
        Kind::Null => {
            assert_eq!(v.raw, b"null");
            v.raw
        }
        Kind::Object => {
            assert!(v.raw.first() == Some(&b'{') && v.raw.last() == Some(&b'}'));
            v.raw
        }
        Kind::Array => {
            assert!(v.raw.first() == Some(&b'[') && v.raw.last() == Some(&b']'));
            v.raw
        }
    }
}

/// Our answer agrees with serde_json's.
fn agree(ptr: &str, ours: Result<Option<Value<'_>>, JsonError>, theirs: Option<&JsonValue>) {
    let ours = match ours {
        Ok(o) => o,
        Err(e) => panic!("find({ptr:?}) failed with {e:?} on a document serde_json accepts"),
    };
    match (ours, theirs) {
        (None, None) => {}
        (Some(v), Some(t)) => {
            let kind_ok = matches!(
                (v.kind, t),
                (Kind::String, JsonValue::String(_))
                    | (Kind::Number, JsonValue::Number(_))
                    | (Kind::True, JsonValue::Bool(true))
                    | (Kind::False, JsonValue::Bool(false))
                    | (Kind::Null, JsonValue::Null)
                    | (Kind::Object, JsonValue::Object(_))
                    | (Kind::Array, JsonValue::Array(_))
            );
            assert!(kind_ok, "{ptr:?}: kind {:?} vs {t}", v.kind);
            if let JsonValue::String(s) = t {
                let text = v.text().expect("serde_json decoded this string");
                assert_eq!(&*text, s.as_bytes(), "{ptr:?}: string text");
            } else {
                let parsed: JsonValue = serde_json::from_slice(v.raw).expect("raw re-parses");
                assert_eq!(&parsed, t, "{ptr:?}: value");
            }
        }
        (o, t) => panic!("{ptr:?}: presence differs: ours {o:?}, serde_json {t:?}"),
    }
}

/// Pointers to every node of `v` (pre-order), at most `limit`.
fn paths(v: &JsonValue, prefix: String, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit {
        return;
    }
    out.push(prefix.clone());
    match v {
        JsonValue::Object(m) => {
            for (k, child) in m {
                let t =
                    String::from_utf8(escape_token(k.as_bytes())).expect("escaping keeps UTF-8");
                paths(child, format!("{prefix}/{t}"), out, limit);
            }
        }
        JsonValue::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                paths(child, format!("{prefix}/{i}"), out, limit);
            }
        }
        _ => {}
    }
}

/// A prefix of a valid document answers like the whole one, or says it is truncated.
fn prefix_agrees(doc: &[u8], cut: usize, pointer: &Pointer, whole: Option<Value<'_>>, root: bool) {
    let prefix = &doc[..cut];
    // What the filter takes from a body still arriving is the whole document's answer.
    let mut found = [Found::Absent];
    let _ = locate_all(prefix, &[pointer], &mut found);
    if let Some(early) = found[0].complete_in(prefix.len()) {
        let same = whole.is_some_and(|b| b.kind == early.kind && b.raw == early.raw);
        assert!(same, "prefix of {cut} bytes completes {early:?}, the whole document {whole:?}");
    }
    match find(prefix, pointer) {
        Err(JsonError::Truncated) => {}
        Err(e) => panic!("prefix of {cut} bytes of a valid document: {e:?}"),
        Ok(got) => match (got, whole) {
            (None, None) => {}
            (Some(a), Some(b)) if a.kind == b.kind && a.raw == b.raw => {}
            // A number at the top level cannot know it was cut.
            (Some(a), Some(b)) if root && a.kind == Kind::Number && b.raw.starts_with(a.raw) => {}
            (a, b) => panic!("prefix of {cut} bytes answers {a:?}, the whole document {b:?}"),
        },
    }
}

/// `locate_all` agrees with `locate` for each pointer.
fn all_agree(doc: &[u8], pointers: &[&Pointer]) {
    let mut out = vec![Found::Absent; pointers.len()];
    let walk = locate_all(doc, pointers, &mut out);
    let mut pending = false;
    for (p, slot) in pointers.iter().zip(&out) {
        match (locate(doc, p), slot) {
            (Ok(Some((v, end))), Found::Value(w, e)) => {
                assert!(v == *w && end == *e, "{p:?}: {v:?} {end} vs {w:?} {e}")
            }
            (Ok(None), Found::Absent) => {}
            (Err(err), Found::Pending(_)) => {
                pending = true;
                assert_eq!(walk, Err(err), "{p:?}");
            }
            (one, all) => panic!("{p:?}: locate {one:?}, locate_all {all:?}"),
        }
    }
    if !pending {
        assert_eq!(walk, Ok(()));
    }
}

fuzz_target!(|data: &[u8]| {
    let (ptr_text, doc) = match data.iter().position(|&b| b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    };
    let pointer = check_pointer(&ptr_text);
    let ours = pointer.as_ref().map(|p| find(doc, p));
    if let Some(Ok(Some(v))) = &ours {
        let span = check_value(doc, v);
        // The value's own text, read as a document, is the same value.
        let again = find(span, &Pointer::parse("").unwrap());
        match again {
            Ok(Some(w)) => assert!(w.kind == v.kind && w.raw == v.raw, "{w:?} vs {v:?}"),
            other => panic!(
                "re-reading {:?} gave {other:?}",
                String::from_utf8_lossy(span)
            ),
        }
    }

    let fixed: Vec<Pointer> = ["", "/a", "/0", "/a/0", "/0/a", "/a/b", "/1"]
        .iter()
        .map(|p| Pointer::parse(p).unwrap())
        .collect();
    let mut some: Vec<&Pointer> = fixed.iter().chain(pointer.as_ref()).collect();
    some.extend(pointer.as_ref());
    all_agree(doc, &some);

    let Ok(NoDup(value)) = serde_json::from_slice::<NoDup>(doc) else {
        return;
    };
    if let (Some(p), Some(ours)) = (&pointer, ours) {
        agree(&ptr_text, ours, value.pointer(&ptr_text));
        let whole = ours.unwrap_or(None);
        for cut in [doc.len() / 3, doc.len() / 2, doc.len().saturating_sub(1)] {
            prefix_agrees(doc, cut, p, whole, p.tokens().next().is_none());
        }
    }
    let mut all = Vec::new();
    paths(&value, String::new(), &mut all, 64);
    let mut every = Vec::new();
    for path in &all {
        let p = check_pointer(path).expect("generated pointers parse");
        agree(path, find(doc, &p), value.pointer(path));
        every.push(p);
    }
    let mut every: Vec<&Pointer> = every.iter().chain(&fixed).collect();
    every.extend(pointer.as_ref());
    all_agree(doc, &every);
    for cut in [doc.len() / 3, doc.len() / 2, doc.len().saturating_sub(1)] {
        all_agree(&doc[..cut], &every);
    }
});
