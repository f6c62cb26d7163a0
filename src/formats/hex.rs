//! Lowercase hexadecimal, both ways, without allocating: the minted session id and the flow
//! cookie's MAC.

/// The digits, `0`–`9` then `a`–`f`.
const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes the lowercase hex of `bytes` into `out`, two digits a byte, for as many bytes as `out`
/// has room for.
pub fn encode(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        if let [hi, lo] = pair {
            *hi = DIGITS[usize::from(b >> 4)];
            *lo = DIGITS[usize::from(b & 0x0f)];
        }
    }
}

/// Reads exactly `N` bytes from `2·N` lowercase hex digits; `None` for any other length or digit.
pub fn decode<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| DIGITS.iter().position(|&d| d == c);
    let mut out = [0u8; N];
    for (b, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (hi, lo) = (digit(*pair.first()?)?, digit(*pair.get(1)?)?);
        *b = (hi << 4 | lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_lowercase_hex() {
        let bytes = [0x00, 0x01, 0x7f, 0x80, 0xab, 0xff];
        let mut text = [0u8; 12];
        encode(&bytes, &mut text);
        assert_eq!(&text, b"00017f80abff");
        assert_eq!(decode::<6>(&text), Some(bytes));
        assert_eq!(decode::<6>(b"00017F80ABFF"), None);
        assert_eq!(decode::<6>(b"00017f80abf"), None);
        assert_eq!(decode::<6>(b"00017f80abfg"), None);
    }
}
