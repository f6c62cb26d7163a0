//! `pool::answer::read`, the one reader of Prometheus answers (the filter's pool and
//! `sticky-canary gate --prometheus`), cross-checked with serde_json.
//!
//! Input: the answer's bytes.
//!
//! Checks:
//! - `read` never panics, on any bytes and at any limit;
//! - every sample it returns has a value that can be a count (finite, ≥ 0);
//! - a body over the limit is refused as `TooLarge` before anything else;
//! - when it accepts an answer that serde_json also reads, serde_json sees `status`
//!   `success`, `data.resultType` `vector`, and as many elements in `data.result` as samples,
//!   each sample's labels equal to the element's `metric` (strings, in order) and its value to
//!   the element's `value[1]` read as a number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sticky_canary::pool::answer::{read, AnswerError};

fuzz_target!(|data: &[u8]| {
    let limit = 1 << 16;
    let got = read(data, limit);
    if data.len() > limit {
        assert!(matches!(got, Err(AnswerError::TooLarge(..))));
        return;
    }
    let Ok(samples) = got else { return };
    for s in &samples {
        assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
    }
    // Accepted: serde_json must agree on the shape (it keeps the last of duplicate members,
    // the reader the first: skip documents where that could differ).
    // (serde_json refuses a few documents the scanner takes, e.g. a timestamp of 1e400 that
    // the reader never reads: those prove nothing either way.)
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    // Each of these member names once per place it belongs, or duplicates may be in play.
    let once = |name: &str, n: usize| text.matches(name).count() == n;
    if !(once("\"result\"", 1) && once("\"status\"", 1) && once("\"value\"", samples.len()))
    {
        return;
    }
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let result = v["data"]["result"].as_array().expect("an array");
    assert_eq!(result.len(), samples.len());
    for (s, e) in samples.iter().zip(result) {
        if let Some(m) = e["metric"].as_object() {
            if m.len() == s.labels.len() && once("\"metric\"", samples.len()) {
                for (name, value) in &s.labels {
                    assert_eq!(m.get(name).and_then(Value::as_str), Some(value.as_str()));
                }
            }
        }
        let want: f64 = e["value"][1].as_str().expect("a string").parse().expect("a number");
        assert!((want - s.value).abs() <= want.abs() * 1e-12, "{want} vs {}", s.value);
    }
});
