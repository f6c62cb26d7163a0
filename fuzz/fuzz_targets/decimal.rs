//! `decimal::parse_scaled(text, scale)` against an independent u128 model.
//!
//! Input: first byte = scale (0..=255), the rest = text.
//! Checks: never panics; the result (value or error kind, in the documented order Empty → Syntax
//! → TooManyFractionDigits → Overflow) equals the model's; an accepted text is
//! `^[0-9]+(\.[0-9]+)?$` with at most `scale` fraction digits; an accepted value formats back
//! (canonically) to a text that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sticky_canary::formats::decimal::{parse_scaled, DecimalError};

/// Reference: value × 10^scale in u128 with checked arithmetic, written from the contract only.
fn model(text: &[u8], scale: u8) -> Result<u64, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    let dots: Vec<usize> = text
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'.')
        .map(|(i, _)| i)
        .collect();
    let (int, frac): (&[u8], &[u8]) = match dots.as_slice() {
        [] => (text, &[]),
        [d] => (&text[..*d], &text[d + 1..]),
        _ => return Err(DecimalError::Syntax),
    };
    let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if int.is_empty()
        || !all_digits(int)
        || (!dots.is_empty() && frac.is_empty())
        || !all_digits(frac)
    {
        return Err(DecimalError::Syntax);
    }
    if frac.len() > usize::from(scale) {
        return Err(DecimalError::TooManyFractionDigits);
    }
    // N = the digits of int and frac read as one integer; value = N × 10^(scale - |frac|).
    let mut n: u128 = 0;
    for &b in int.iter().chain(frac) {
        n = match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(b - b'0')))
        {
            Some(n) => n,
            None => return Err(DecimalError::Overflow),
        };
    }
    if n == 0 {
        return Ok(0);
    }
    let exp = u32::from(scale) - frac.len() as u32;
    let v = 10u128
        .checked_pow(exp)
        .and_then(|p| n.checked_mul(p))
        .ok_or(DecimalError::Overflow)?;
    u64::try_from(v).map_err(|_| DecimalError::Overflow)
}

/// `v` units of 10^-scale, written with exactly `scale` fraction digits (scale ≤ 19 here).
fn format_scaled(v: u64, scale: u8) -> String {
    if scale == 0 {
        return v.to_string();
    }
    let p = 10u128.pow(u32::from(scale));
    let v = u128::from(v);
    format!("{}.{:0width$}", v / p, v % p, width = usize::from(scale))
}

fuzz_target!(|data: &[u8]| {
    let Some((&scale, text)) = data.split_first() else {
        return;
    };
    let got = parse_scaled(text, scale);
    let want = model(text, scale);
    assert_eq!(
        got,
        want,
        "parse_scaled({:?}, {scale}) disagrees with the u128 model",
        String::from_utf8_lossy(text)
    );
    if let Ok(v) = got {
        // Shape of accepted text: digits, at most one dot with digits on both sides.
        assert!(text.iter().all(|b| b.is_ascii_digit() || *b == b'.'));
        let frac_len = match text.iter().position(|&b| b == b'.') {
            Some(d) => {
                assert!(d > 0 && d + 1 < text.len());
                assert!(!text[d + 1..].contains(&b'.'));
                text.len() - d - 1
            }
            None => 0,
        };
        assert!(frac_len <= usize::from(scale));
        // Round trip through the canonical spelling (only where 10^scale fits comfortably).
        if scale <= 19 {
            let canonical = format_scaled(v, scale);
            assert_eq!(
                parse_scaled(canonical.as_bytes(), scale),
                Ok(v),
                "{canonical}"
            );
        }
    }
});
