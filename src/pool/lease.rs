//! What the pool keeps in Envoy's shared data (shared by the worker VMs of one `vm_id`): the
//! lease that elects the one worker that queries Prometheus, and the counters at the moment this
//! Envoy joined the generation (the zero of its evidence).
//!
//! Records are text, `sticky-canary-…/1` then fields separated by spaces; anything else reads as
//! absent, never as a panic.

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

const LEASE: &str = "sticky-canary-pool/1";
const START: &str = "sticky-canary-pool-start/1";

impl Lease {
    pub fn encode(&self) -> String {
        format!(
            "{LEASE} {:016x} {} {}",
            self.holder, self.expires_ms, self.last_query_ms
        )
    }

    /// The lease in a record; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut w = text.split(' ');
        if w.next()? != LEASE {
            return None;
        }
        let holder = u64::from_str_radix(w.next()?, 16).ok()?;
        let expires_ms = w.next()?.parse().ok()?;
        let last_query_ms = w.next()?.parse().ok()?;
        w.next().is_none().then_some(Lease {
            holder,
            expires_ms,
            last_query_ms,
        })
    }

    /// Whether `me` may hold the lease at `now`: it holds it already, it has expired, or the
    /// record is absent or unreadable. (The write that takes it is a compare-and-swap, so of
    /// two VMs that both may, one gets it.)
    pub fn may_take(current: Option<&Lease>, me: u64, now_ms: u64) -> bool {
        !matches!(current, Some(l) if l.holder != me && now_ms < l.expires_ms)
    }
}

/// The counters of every (version, series) when this Envoy joined `generation`, in the
/// guard's order (`version * series + s`).
pub fn encode_start(generation: u64, counts: &[u64]) -> String {
    let mut s = format!("{START} {generation:016x}");
    for c in counts {
        s.push(' ');
        s.push_str(&c.to_string());
    }
    s
}

/// The counters recorded for `generation` (exactly `len` of them); `None` for another
/// generation or anything unreadable.
pub fn decode_start(bytes: &[u8], generation: u64, len: usize) -> Option<Vec<u64>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut w = text.split(' ');
    if w.next()? != START || u64::from_str_radix(w.next()?, 16).ok()? != generation {
        return None;
    }
    let counts: Vec<u64> = w.map(|x| x.parse().ok()).collect::<Option<_>>()?;
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
        assert_eq!(Lease::decode(l.encode().as_bytes()), Some(l));
        for bad in [
            &b""[..],
            b"x",
            b"sticky-canary-pool/1 zz 1 2",
            b"sticky-canary-pool/1 1 2",
            b"sticky-canary-pool/1 1 2 3 4",
            &[0xff, 0xfe],
        ] {
            assert_eq!(Lease::decode(bad), None, "{bad:?}");
        }
        assert!(Lease::may_take(None, 7, 0), "absent");
        assert!(Lease::may_take(Some(&l), 0xabc, 999), "mine");
        assert!(!Lease::may_take(Some(&l), 7, 999), "another's, live");
        assert!(Lease::may_take(Some(&l), 7, 1_000), "another's, expired");
    }

    #[test]
    fn start_round_trips_per_generation() {
        let r = encode_start(42, &[0, 5, u64::MAX]);
        assert_eq!(
            decode_start(r.as_bytes(), 42, 3),
            Some(vec![0, 5, u64::MAX])
        );
        assert_eq!(
            decode_start(r.as_bytes(), 43, 3),
            None,
            "another generation"
        );
        assert_eq!(decode_start(r.as_bytes(), 42, 2), None, "another layout");
        assert_eq!(
            decode_start(b"sticky-canary-pool-start/1 2a x", 42, 1),
            None
        );
        assert_eq!(
            decode_start(encode_start(1, &[]).as_bytes(), 1, 0),
            Some(vec![])
        );
    }
}
