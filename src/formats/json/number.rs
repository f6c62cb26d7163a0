//! JSON numbers as `f64` without the standard library's float parser: shared by the config
//! reader (`crate::config::de`) and the reader of Prometheus answers (`crate::brake::pool::answer`).

/// A JSON number the scanner accepted (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) as
/// `f64`, without the standard library's float parser (which would cost the module ~10 KB):
/// the first 18 significant digits and the exponent, then one multiplication or division by a
/// power of ten. Exact (correctly rounded) for the values a configuration holds (≤ 15
/// significant digits, exponents within ±22); `None` when the result is not finite.
pub fn decimal_f64(text: &str) -> Option<f64> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (rest.get(..i)?, rest.get(i + 1..)?.parse::<i32>().ok()?),
        None => (rest, 0),
    };
    let mut digits: u64 = 0;
    let mut scale: i32 = exponent;
    let mut significant = 0;
    let mut after_point = false;
    for c in mantissa.bytes() {
        match c {
            b'.' => after_point = true,
            b'0'..=b'9' => {
                if significant < 18 {
                    digits = digits * 10 + u64::from(c - b'0');
                    if digits > 0 {
                        significant += 1;
                    }
                    if after_point {
                        scale -= 1;
                    }
                } else if !after_point {
                    scale += 1;
                }
            }
            _ => return None,
        }
    }
    let m = digits as f64;
    let value = if scale >= 0 {
        m * 10f64.powi(scale)
    } else {
        m / 10f64.powi(-scale)
    };
    let value = if negative { -value } else { value };
    value.is_finite().then_some(value)
}
