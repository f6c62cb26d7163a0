//! `headers::pairs(buf)`: the proxy-wasm header-map wire format, read without trusting it.
//!
//! The input is used twice:
//! 1. as a raw (hostile) buffer: `pairs` never panics, yields at most the announced count, every
//!    name and value is a sub-slice of the buffer, and the pairs equal those of an independent
//!    decoder written from the format description;
//! 2. through `arbitrary` as a header map: serializing it like the host does and decoding gives
//!    the map back exactly, and any truncation of the buffer yields a prefix of the map.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sticky_canary::formats::headers::pairs;

type Pair<'a> = (&'a [u8], &'a [u8]);

/// Serializes like the host: u32 count, count × (u32 name len, u32 value len), then each name
/// and value followed by a NUL; little-endian.
fn serialize(map: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
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

/// Reference decoder: all sizes first (u128 arithmetic, no overflow possible), then the data.
/// Stops at the first pair that does not fit; a final NUL may be missing.
fn reference(buf: &[u8]) -> Vec<Pair<'_>> {
    let u32_at = |at: u128| -> Option<u128> {
        let at = usize::try_from(at).ok()?;
        let b = buf.get(at..at.checked_add(4)?)?;
        Some(u128::from(u32::from_le_bytes(b.try_into().ok()?)))
    };
    let mut out = Vec::new();
    let Some(count) = u32_at(0) else {
        return out;
    };
    let mut data: u128 = 4 + 8 * count;
    let len = buf.len() as u128;
    for i in 0..count {
        let (Some(n), Some(v)) = (u32_at(4 + 8 * i), u32_at(8 + 8 * i)) else {
            break;
        };
        let name = (data, data + n);
        let value = (name.1 + 1, name.1 + 1 + v);
        if name.1 > len || value.1 > len {
            break;
        }
        out.push((
            &buf[name.0 as usize..name.1 as usize],
            &buf[value.0 as usize..value.1 as usize],
        ));
        data = value.1 + 1;
    }
    out
}

fn within(buf: &[u8], s: &[u8]) -> bool {
    let base = buf.as_ptr() as usize;
    let p = s.as_ptr() as usize;
    s.is_empty() || (p >= base && p + s.len() <= base + buf.len())
}

#[derive(Arbitrary, Debug)]
struct Map {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    cut: u16,
}

fuzz_target!(|data: &[u8]| {
    // 1. The raw bytes as a hostile buffer.
    let got: Vec<Pair<'_>> = pairs(data).collect();
    let announced = data
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    assert!(got.len() as u64 <= u64::from(announced));
    for (n, v) in &got {
        assert!(within(data, n) && within(data, v));
    }
    assert_eq!(got, reference(data), "raw buffer decoded differently");
    // The iterator stays finished once it has ended.
    let mut it = pairs(data);
    while it.next().is_some() {}
    assert!(it.next().is_none());

    // 2. A well-formed map built from the same bytes round-trips.
    let Ok(map) = Map::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let buf = serialize(&map.pairs);
    let want: Vec<Pair<'_>> = map
        .pairs
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    assert_eq!(pairs(&buf).collect::<Vec<_>>(), want, "round trip");
    // Truncated anywhere, the buffer yields a prefix of the map (never garbage).
    let cut = usize::from(map.cut) % (buf.len() + 1);
    let prefix: Vec<Pair<'_>> = pairs(&buf[..cut]).collect();
    assert!(prefix.len() <= want.len());
    assert_eq!(prefix[..], want[..prefix.len()], "truncated at {cut}");
});
