//! What the pool keeps in Envoy's shared data (shared by the worker VMs of one `vm_id`): the
//! lease that elects the one worker that queries Prometheus, and the counters at the moment this
//! Envoy joined the generation (the zero of its evidence).
//!
//! Records are bytes: a tag, then little-endian u64 words; anything else reads as absent, never
//! as a panic.

/// The shared-data key of a service's lease.
pub fn lease_key(service: &str) -> String {
    format!("sticky_canary.pool.{service}")
}

/// The shared-data key of a service's evidence zero.
pub fn start_key(service: &str) -> String {
    format!("sticky_canary.pool_start.{service}")
}

/// Who queries Prometheus for a service in this Envoy, until when, and when the last query
/// went out (so that a new holder keeps the interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// A random id of the holder (one per plugin instance per worker VM).
    pub holder: u64,
    /// The holder must renew before this (ms since the epoch).
    pub expires_ms: u64,
    /// When the last query was sent (ms since the epoch), by any holder; 0 for never.
    pub last_query_ms: u64,
}

/// Record tags: the first byte of each record (and a format version).
const LEASE: u8 = 0x51;
const START: u8 = 0x52;

/// `n` little-endian u64 words after a tag byte.
fn words(bytes: &[u8], tag: u8) -> Option<impl Iterator<Item = u64> + '_> {
    let (&first, rest) = bytes.split_first()?;
    (first == tag && rest.len() % 8 == 0).then(|| {
        rest.chunks_exact(8).map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        })
    })
}

fn record(tag: u8, words: impl Iterator<Item = u64>) -> Vec<u8> {
    let mut out = vec![tag];
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

impl Lease {
    /// The record: a tag byte, then holder, expiry and last query as little-endian u64s.
    pub fn encode(&self) -> Vec<u8> {
        record(
            LEASE,
            [self.holder, self.expires_ms, self.last_query_ms].into_iter(),
        )
    }

    /// The lease in a record; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let mut w = words(bytes, LEASE)?;
        let lease = Lease {
            holder: w.next()?,
            expires_ms: w.next()?,
            last_query_ms: w.next()?,
        };
        w.next().is_none().then_some(lease)
    }

    /// Whether `me` may hold the lease at `now`: it holds it already, it has expired, or the
    /// record is absent or unreadable. (The write that takes it is a compare-and-swap, so of
    /// two VMs that both may, one gets it.)
    pub fn may_take(current: Option<&Lease>, me: u64, now_ms: u64) -> bool {
        !matches!(current, Some(l) if l.holder != me && now_ms < l.expires_ms)
    }
}

/// The counters of every (version, series) when this Envoy joined `generation`, in the
/// guard's order (`version * series + s`): a tag byte, the generation, the counters.
pub fn encode_start(generation: u64, counts: &[u64]) -> Vec<u8> {
    record(
        START,
        std::iter::once(generation).chain(counts.iter().copied()),
    )
}

/// The counters recorded for `generation` (exactly `len` of them); `None` for another
/// generation or anything unreadable.
pub fn decode_start(bytes: &[u8], generation: u64, len: usize) -> Option<Vec<u64>> {
    let mut w = words(bytes, START)?;
    if w.next()? != generation {
        return None;
    }
    let counts: Vec<u64> = w.collect();
    (counts.len() == len).then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_round_trips_and_decides() {
        let l = Lease {
            holder: 0xabc,
            expires_ms: 1_000,
            last_query_ms: 400,
        };
        let bytes = l.encode();
        assert_eq!(Lease::decode(&bytes), Some(l));
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 8]);
        let start = encode_start(1, &[2, 3]);
        let bad: [&[u8]; 7] = [
            b"",
            b"x",
            &bytes[..bytes.len() - 1],
            &bytes[..17],
            &longer,
            &start,
            &[0xff, 0xfe],
        ];
        for b in bad {
            assert_eq!(Lease::decode(b), None, "{b:?}");
        }
        assert!(Lease::may_take(None, 7, 0), "absent");
        assert!(Lease::may_take(Some(&l), 0xabc, 999), "mine");
        assert!(!Lease::may_take(Some(&l), 7, 999), "another's, live");
        assert!(Lease::may_take(Some(&l), 7, 1_000), "another's, expired");
    }

    #[test]
    fn start_round_trips_per_generation() {
        let r = encode_start(42, &[0, 5, u64::MAX]);
        assert_eq!(decode_start(&r, 42, 3), Some(vec![0, 5, u64::MAX]));
        assert_eq!(decode_start(&r, 43, 3), None, "another generation");
        assert_eq!(decode_start(&r, 42, 2), None, "another layout");
        assert_eq!(decode_start(&r[..r.len() - 3], 42, 3), None, "cut");
        assert_eq!(decode_start(&[0x52, 1], 42, 1), None);
        assert_eq!(decode_start(&encode_start(1, &[]), 1, 0), Some(vec![]));
    }
}
