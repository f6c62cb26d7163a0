//! The proxy-wasm header-map wire format, read without trusting it.
//!
//! `proxy_get_header_map_pairs` returns: a u32 count N, then N pairs of u32 sizes (name, value),
//! then the names and values, each followed by a NUL byte; integers little-endian. The SDK's
//! decoder slices with unchecked indexes and unwraps UTF-8 names; this one bounds-checks every
//! read and yields raw bytes, so a malformed buffer ends the iteration instead of the VM.

/// Iterates over the (name, value) pairs of a serialized header map. Stops at the first
/// inconsistency.
pub fn pairs(buf: &[u8]) -> Pairs<'_> {
    let count = read_u32(buf, 0).unwrap_or(0);
    Pairs {
        buf,
        count,
        index: 0,
        data: 4usize.saturating_add((count as usize).saturating_mul(8)),
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub struct Pairs<'a> {
    buf: &'a [u8],
    count: u32,
    index: u32,
    data: usize,
}

impl<'a> Pairs<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.data.checked_add(len)?;
        let s = self.buf.get(self.data..end)?;
        self.data = end.checked_add(1)?; // the NUL terminator
        Some(s)
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let sizes = 4usize.checked_add((self.index as usize).checked_mul(8)?)?;
        let name_len = read_u32(self.buf, sizes)? as usize;
        let value_len = read_u32(self.buf, sizes.checked_add(4)?)? as usize;
        let item = (self.take(name_len), self.take(value_len));
        self.index += 1;
        match item {
            (Some(n), Some(v)) => Some((n, v)),
            _ => {
                self.index = self.count;
                None
            }
        }
    }
}

/// Serializes like the host does: the headers of an HTTP call (`crate::filter`'s pool query),
/// the fake host of the filter's tests, and the decoder's own round trips.
pub fn serialize(map: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (map.len() as u32).to_le_bytes().to_vec();
    for (n, v) in map {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in map {
        out.extend_from_slice(n);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let map: &[(&[u8], &[u8])] = &[
            (b":method", b"GET"),
            (b"cookie", b"a=1"),
            (b"cookie", b"session_id=\xff\xfe"),
            (b"x-empty", b""),
        ];
        let buf = serialize(map);
        assert_eq!(pairs(&buf).collect::<Vec<_>>(), map.to_vec());
        assert_eq!(pairs(&serialize(&[])).count(), 0);
        assert_eq!(pairs(&[]).count(), 0);
    }

    #[test]
    fn malformed_buffers_end_the_iteration() {
        let buf = serialize(&[(b"a", b"1"), (b"b", b"2")]);
        for cut in 0..buf.len() {
            let _ = pairs(&buf[..cut]).count(); // never panics
        }
        let mut lying = buf.clone();
        lying[0] = 0xff; // claims 255 pairs
        assert!(pairs(&lying).count() <= 2);
        let mut huge = buf;
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes()); // a name longer than the buffer
        assert_eq!(pairs(&huge).count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = pairs(&buf).count();
        }
    }
}
