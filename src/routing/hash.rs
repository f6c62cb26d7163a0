//! The published algorithm's hash (the manual, "The decision"): MurmurHash3 x86_32 of salt ‖ session
//! key without concatenating them, the position it gives for a total weight (step 3), and the
//! session's cohort bucket (the position for a total weight of 10 000) with its four digits.

/// MurmurHash3 x86_32 of `a` followed by `b`, without concatenating them (no allocation).
///
/// Written out rather than taken from a crate: the `murmur3` crate reads through `std::io::Read`,
/// which in the size-optimised module costs a call per block and pulls in `std::io`. The unit
/// tests check it against the reference vectors, SMHasher's verification value and, on random
/// inputs, the `murmur3` crate.
pub fn murmur3_32_concat(a: &[u8], b: &[u8], seed: u32) -> u32 {
    let mut m = Murmur3 {
        h: seed,
        block: 0,
        filled: 0,
    };
    for &byte in a {
        m.push(byte);
    }
    for &byte in b {
        m.push(byte);
    }
    if m.filled > 0 {
        m.h ^= murmur3_mix(m.block);
    }
    // The algorithm mixes in the length modulo 2^32.
    let mut h = m.h ^ (a.len().wrapping_add(b.len()) as u32);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The running state of [`murmur3_32_concat`]: the hash and the current little-endian block.
struct Murmur3 {
    h: u32,
    block: u32,
    filled: u32,
}

impl Murmur3 {
    #[inline(always)]
    fn push(&mut self, byte: u8) {
        self.block |= u32::from(byte) << (8 * self.filled);
        self.filled += 1;
        if self.filled == 4 {
            self.h ^= murmur3_mix(self.block);
            self.h = self
                .h
                .rotate_left(13)
                .wrapping_mul(5)
                .wrapping_add(0xe654_6b64);
            self.block = 0;
            self.filled = 0;
        }
    }
}

#[inline(always)]
fn murmur3_mix(k: u32) -> u32 {
    k.wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593)
}

/// Step 3: scales a 32-bit hash onto `0..total_weight`.
pub fn position(hash: u32, total_weight: u64) -> u64 {
    (u64::from(hash) * total_weight) >> 32
}

/// How many cohort buckets there are: a session's bucket is flagd's `fractional` position for a
/// total weight of 10 000, so "bucket < 100·p" selects exactly the sessions that weights
/// `canary p / stable 100−p` (canary listed first) send to the canary.
pub const BUCKETS: u64 = 10_000;

/// A session's cohort bucket, `0..BUCKETS`: `(h × 10 000) >> 32` with `h` the MurmurHash3 of
/// salt ‖ key (steps 1–3 with a total weight of 10 000).
pub fn bucket(salt: &[u8], session_key: &[u8]) -> u16 {
    // Below 10 000 by construction: (h × 10 000) >> 32 < 10 000.
    position(murmur3_32_concat(salt, session_key, 0), BUCKETS) as u16
}

/// A bucket as the four zero-padded ASCII digits a header carries (`0000`–`9999`); buckets
/// above 9999 (never produced by [`bucket`]) are clamped.
pub fn bucket_digits(bucket: u16) -> [u8; 4] {
    let b = bucket.min(9999);
    [
        b'0' + (b / 1000) as u8,
        b'0' + (b / 100 % 10) as u8,
        b'0' + (b / 10 % 10) as u8,
        b'0' + (b % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_four_digits_and_cover_the_range() {
        assert_eq!(&bucket_digits(0), b"0000");
        assert_eq!(&bucket_digits(42), b"0042");
        assert_eq!(&bucket_digits(9999), b"9999");
        assert_eq!(&bucket_digits(12345), b"9999");
        let mut seen = [false; BUCKETS as usize];
        for i in 0..200_000u32 {
            let b = bucket(b"checkout", format!("k{i}").as_bytes());
            seen[usize::from(b)] = true;
        }
        assert!(seen.iter().all(|s| *s), "every bucket is reachable");
    }

    fn murmur(data: &[u8], seed: u32) -> u32 {
        murmur3_32_concat(data, b"", seed)
    }

    /// Reference vectors for MurmurHash3 x86_32.
    #[test]
    fn murmur3_reference_vectors() {
        assert_eq!(murmur(b"", 0), 0);
        assert_eq!(murmur(b"", 1), 0x514E_28B7);
        assert_eq!(murmur(b"abc", 0), 0xB3DD_93FA);
        assert_eq!(murmur(b"Hello, world!", 0x9747_B28C), 0x2488_4CBA);
        // Splitting the input anywhere gives the same hash (the salt/key concatenation).
        let s = b"Hello, world!";
        for i in 0..=s.len() {
            assert_eq!(
                murmur3_32_concat(&s[..i], &s[i..], 0x9747_B28C),
                0x2488_4CBA
            );
        }
    }

    proptest::proptest! {
        /// The same hash as the `murmur3` crate (an independent implementation), for any split.
        #[test]
        fn murmur3_matches_the_murmur3_crate(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            split in 0usize..64,
            seed in proptest::prelude::any::<u32>(),
        ) {
            let split = split.min(data.len());
            let reference = murmur3::murmur3_32(&mut std::io::Cursor::new(&data), seed).unwrap();
            proptest::prop_assert_eq!(
                murmur3_32_concat(&data[..split], &data[split..], seed),
                reference
            );
        }
    }

    /// SMHasher's verification value for MurmurHash3_x86_32: hash keys {}, {0}, {0,1}, … {0..254}
    /// with seed 256 - len, concatenate the 256 hashes (little-endian), hash that with seed 0.
    #[test]
    fn murmur3_smhasher_verification() {
        let mut key = [0u8; 256];
        let mut hashes = Vec::with_capacity(256 * 4);
        for i in 0..256 {
            key[i] = i as u8;
            hashes.extend_from_slice(&murmur(&key[..i], (256 - i) as u32).to_le_bytes());
        }
        assert_eq!(murmur(&hashes, 0), 0xB0F5_7EE3);
    }

    #[test]
    fn position_bounds() {
        assert_eq!(position(0, 100), 0);
        assert_eq!(position(u32::MAX, 100), 99);
        assert_eq!(
            position(u32::MAX, u64::from(u32::MAX)),
            u64::from(u32::MAX) - 1
        );
        assert_eq!(position(1 << 31, 2), 1);
        assert_eq!(position((1 << 31) - 1, 2), 0);
    }
}
