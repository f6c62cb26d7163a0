//! `pool::answer::read`, the one reader of Prometheus answers (the filter's pool and
//! `sticky-canary gate --prometheus`), cross-checked with serde_json.
//!
//! Input: the answer's bytes.
//!
//! Checks:
//! - `read` never panics, on any bytes and at any limit;
//! - every sample it returns has a value that can be a count (finite, ≥ 0);
//! - a body over the limit is refused as `TooLarge` before anything else;
//! - when it accepts an answer that serde_json also reads without duplicate member names (the
//!   two resolve those differently), serde_json sees `status`
//!   `success`, `data.resultType` `vector`, and as many elements in `data.result` as samples,
//!   each sample's labels equal to the element's `metric` (strings, in order) and its value to
//!   the element's `value[1]` read as a number.
#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "nodup.rs"]
mod nodup;
use nodup::NoDup;
use serde_json::Value;
use sticky_canary::brake::pool::answer::{read, AnswerError};

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
    // serde_json (without duplicate member names, which it and the reader resolve differently)
    // must see the same answer. It refuses a few documents the scanner takes (a timestamp of
    // 1e400 the reader never reads): those prove nothing either way.
    let Ok(NoDup(v)) = serde_json::from_slice::<NoDup>(data) else {
        return;
    };
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let result = v["data"]["result"].as_array().expect("an array");
    assert_eq!(result.len(), samples.len());
    for (s, e) in samples.iter().zip(result) {
        if let Some(m) = e["metric"].as_object() {
            assert_eq!(m.len(), s.labels.len());
            for (name, value) in &s.labels {
                assert_eq!(m.get(name).and_then(Value::as_str), Some(value.as_str()));
            }
        }
        let want: f64 = e["value"][1].as_str().expect("a string").parse().expect("a number");
        // The reader's float is exact to a few ulps for what counts are; it may flush values
        // below 1e-280 (never a count: its power of ten overflows) to 0.
        let close = (want - s.value).abs() <= want.abs() * 1e-12 || want.abs() < 1e-280;
        assert!(close, "{want} vs {}", s.value);
    }
});
