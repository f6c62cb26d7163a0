//! Exact scaled decimals: money is never rounded.
//!
//! [`parse_scaled`] turns a plain non-negative decimal such as `19.99` into an integer count of
//! `10^-scale` units (`1999` at scale 2), with checked arithmetic throughout. Anything that is
//! not exactly representable at the requested scale is refused rather than rounded or trimmed:
//! more fraction digits than `scale` (even trailing zeros, `1.230` at scale 2) is an error.
//! Works on raw bytes, never allocates and never panics, whatever the input or scale.

use std::fmt;

/// The largest sensible scale: at scale 18 every amount below 10 is representable
/// (`10^19 - 1 < u64::MAX ≈ 1.8 × 10^19`), at scale 19 only amounts up to `1.8446744073709551615`.
///
/// [`parse_scaled`] itself accepts any scale and refuses only values that actually overflow
/// (zero fits at any scale; `1` fits up to scale 19).
pub const MAX_SCALE: u8 = 18;

/// Why a text is not an exact scaled decimal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecimalError {
    /// The text is empty.
    Empty,
    /// The text is not `^[0-9]+(\.[0-9]+)?$` (sign, exponent, whitespace, separators, non-ASCII…).
    Syntax,
    /// The text has more fraction digits than the scale (no silent rounding or trimming).
    TooManyFractionDigits,
    /// The scaled value does not fit in a `u64`.
    Overflow,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty decimal",
            Self::Syntax => {
                "not a plain non-negative decimal (expected digits, optionally `.` and digits)"
            }
            Self::TooManyFractionDigits => "more fraction digits than the scale allows",
            Self::Overflow => "decimal too large for the scale",
        })
    }
}

impl std::error::Error for DecimalError {}

/// Parses a plain non-negative decimal `^[0-9]+(\.[0-9]+)?$` and returns value × 10^scale exactly.
///
/// Errors are reported in this order: [`DecimalError::Empty`], then [`DecimalError::Syntax`] (the
/// whole text is checked first), then [`DecimalError::TooManyFractionDigits`], then
/// [`DecimalError::Overflow`]. Leading zeros are allowed (`007` is 7). Any `scale` (0..=255) is
/// accepted; powers of ten are computed with checked arithmetic.
///
/// # Errors
///
/// See [`DecimalError`]; on error nothing is returned, never a rounded or truncated value.
pub fn parse_scaled(text: &[u8], scale: u8) -> Result<u64, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    let (int_part, frac_part) = split(text)?;
    if frac_part.len() > usize::from(scale) {
        return Err(DecimalError::TooManyFractionDigits);
    }
    // Accumulate all digits as one integer, then pad with the missing fraction zeros. Every
    // intermediate value is ≤ the final one, so an intermediate overflow is a real overflow.
    let mut acc: u64 = 0;
    for &digit in int_part.iter().chain(frac_part) {
        let digit = char::from(digit).to_digit(10).ok_or(DecimalError::Syntax)?;
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(u64::from(digit)))
            .ok_or(DecimalError::Overflow)?;
    }
    if acc == 0 {
        return Ok(0);
    }
    let padding = usize::from(scale).saturating_sub(frac_part.len());
    for _ in 0..padding {
        acc = acc.checked_mul(10).ok_or(DecimalError::Overflow)?;
    }
    Ok(acc)
}

/// Checks the syntax and splits `int[.frac]`; both parts are non-empty ASCII digit runs.
fn split(text: &[u8]) -> Result<(&[u8], &[u8]), DecimalError> {
    let mut parts = text.splitn(2, |&b| b == b'.');
    let int_part = parts.next().unwrap_or_default();
    let frac_part = parts.next();
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    match frac_part {
        None if digits(int_part) => Ok((int_part, &[])),
        Some(frac) if digits(int_part) && digits(frac) => Ok((int_part, frac)),
        _ => Err(DecimalError::Syntax),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepted() {
        let cases: &[(&str, u8, u64)] = &[
            ("19.99", 2, 1999),
            ("0.01", 2, 1),
            ("100", 2, 10000),
            ("5.5", 2, 550),
            ("007", 0, 7),
            ("0", 0, 0),
            ("18446744073709551615", 0, u64::MAX),
            ("1844674407370955161.5", 1, u64::MAX),
            ("184467440737095516.15", 2, u64::MAX),
            ("1", 18, 1_000_000_000_000_000_000),
            ("18.446744073709551615", 18, u64::MAX),
            ("0.000000000000000001", 18, 1),
            ("0", 255, 0),
            ("1", 19, 10_000_000_000_000_000_000),
            ("0.000", 255, 0),
            ("000000000000000000000000000000000000001", 0, 1),
            ("1.5", 3, 1500),
            ("12.340", 3, 12340),
            ("0.0", 1, 0),
        ];
        for &(text, scale, want) in cases {
            assert_eq!(
                parse_scaled(text.as_bytes(), scale),
                Ok(want),
                "{text:?} @ {scale}"
            );
        }
    }

    #[test]
    fn refused() {
        use DecimalError::*;
        let cases: &[(&[u8], u8, DecimalError)] = &[
            (b"", 2, Empty),
            (b"", 0, Empty),
            (b"1.234", 2, TooManyFractionDigits),
            (b"1.230", 2, TooManyFractionDigits),
            (b"1.0", 0, TooManyFractionDigits),
            (b"99999999999999999999999.123", 2, TooManyFractionDigits),
            (b"-5", 2, Syntax),
            (b"+5", 2, Syntax),
            (b"1e3", 2, Syntax),
            (b"1E3", 2, Syntax),
            (b"0x10", 2, Syntax),
            (b" 1", 2, Syntax),
            (b"1 ", 2, Syntax),
            (b"\t1", 2, Syntax),
            (b"1\n", 2, Syntax),
            (b".5", 2, Syntax),
            (b"5.", 2, Syntax),
            (b".", 2, Syntax),
            (b"1.2.3", 2, Syntax),
            (b"1,5", 2, Syntax),
            (b"1_000", 2, Syntax),
            ("∞".as_bytes(), 2, Syntax),
            ("１".as_bytes(), 2, Syntax), // fullwidth digit
            (b"\xff", 2, Syntax),
            (b"1\x00", 2, Syntax),
            (b"NaN", 2, Syntax),
            (b"99999999999999999999999x", 0, Syntax),
            (b"18446744073709551616", 0, Overflow),
            (b"184467440737095516.16", 2, Overflow),
            (b"99999999999999999999999999999999999999999", 0, Overflow),
            (b"19", 18, Overflow),
            (b"2", 19, Overflow),
            (b"1", 20, Overflow),
            (b"1", 255, Overflow),
            (b"0.1", 255, Overflow),
        ];
        for &(text, scale, want) in cases {
            assert_eq!(
                parse_scaled(text, scale),
                Err(want),
                "{:?} @ {scale}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn error_display() {
        for e in [
            DecimalError::Empty,
            DecimalError::Syntax,
            DecimalError::TooManyFractionDigits,
            DecimalError::Overflow,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    /// Formats `v` (in units of 10^-scale) with exactly `scale` fraction digits.
    fn format_scaled(v: u64, scale: u8) -> String {
        if scale == 0 {
            return v.to_string();
        }
        let p = 10u64.pow(u32::from(scale));
        format!("{}.{:0width$}", v / p, v % p, width = usize::from(scale))
    }

    /// Reference model in u128: `None` stands for overflow.
    fn reference(int: &str, frac: &str, scale: u8) -> Result<u64, DecimalError> {
        if frac.len() > usize::from(scale) {
            return Err(DecimalError::TooManyFractionDigits);
        }
        let mut acc: Option<u128> = Some(0);
        for c in int.chars().chain(frac.chars()) {
            acc = acc
                .and_then(|a| a.checked_mul(10))
                .and_then(|a| a.checked_add(u128::from(c.to_digit(10).unwrap())));
        }
        for _ in frac.len()..usize::from(scale) {
            if acc == Some(0) {
                break;
            }
            acc = acc.and_then(|a| a.checked_mul(10));
        }
        acc.and_then(|a| u64::try_from(a).ok())
            .ok_or(DecimalError::Overflow)
    }

    proptest! {
        #[test]
        fn format_round_trips(v in any::<u64>(), scale in 0u8..=6) {
            let text = format_scaled(v, scale);
            prop_assert_eq!(parse_scaled(text.as_bytes(), scale), Ok(v), "{}", text);
        }

        #[test]
        fn sums_are_exact(cents in proptest::collection::vec(0u64..10_000_000_000, 0..50)) {
            let mut parsed_sum: u64 = 0;
            for &c in &cents {
                let text = format!("{}.{:02}", c / 100, c % 100);
                parsed_sum = parsed_sum.checked_add(parse_scaled(text.as_bytes(), 2).unwrap()).unwrap();
            }
            prop_assert_eq!(parsed_sum, cents.iter().sum::<u64>());
        }

        #[test]
        fn matches_reference(int in "[0-9]{1,25}", frac in proptest::option::of("[0-9]{1,20}"), scale in 0u8..=40) {
            let text = match &frac {
                Some(f) => format!("{int}.{f}"),
                None => int.clone(),
            };
            let want = reference(&int, frac.as_deref().unwrap_or(""), scale);
            prop_assert_eq!(parse_scaled(text.as_bytes(), scale), want, "{}", text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), scale in any::<u8>()) {
            let _ = parse_scaled(&bytes, scale);
        }

        #[test]
        fn decimal_alphabet_never_panics(text in "[0-9.+eE -]{0,30}", scale in any::<u8>()) {
            if let Ok(v) = parse_scaled(text.as_bytes(), scale) {
                // Anything accepted is plain digits with at most one dot.
                prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                prop_assert!(text.bytes().filter(|&b| b == b'.').count() <= 1);
                let _ = v;
            }
        }
    }
}
