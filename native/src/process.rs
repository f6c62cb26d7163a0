//! What proxy-wasm keeps in the host and a native module keeps in process memory: the shared
//! data the brake's trip record lives in (one table per Envoy process, with proxy-wasm's CAS
//! semantics), and each metric's value in this process (what [`Host::metric`] reads).
//!
//! [`Host::metric`]: sticky_canary::filter::Host::metric

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// A shared-data entry: its bytes and CAS token (never 0: 0 means "whatever it is").
type Entry = (Vec<u8>, u32);

fn table() -> MutexGuard<'static, HashMap<String, Entry>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    let m = TABLE.get_or_init(|| Mutex::new(HashMap::new()));
    // A panic while holding the lock (none is reachable) leaves the map usable as it was.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The entry and its CAS token; `None` when absent.
pub fn shared_data(key: &str) -> Option<(Vec<u8>, u32)> {
    table().get(key).cloned()
}

/// Writes the entry if its token is still `cas` (0: unconditionally); `false` when another
/// writer came in between.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> bool {
    let mut t = table();
    let token = match t.get(key) {
        Some((_, current)) if cas != 0 && *current != cas => return false,
        Some((_, current)) => current.wrapping_add(1).max(1),
        None if cas != 0 => return false,
        None => 1,
    };
    t.insert(key.to_owned(), (value.to_vec(), token));
    WRITES.fetch_add(1, Ordering::Release);
    true
}

/// Shared-data writes so far: a worker that sees it move learns what was recorded (a trip)
/// before its next decision — one atomic load per request.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// How many shared-data writes this process has seen.
pub fn writes() -> u64 {
    WRITES.load(Ordering::Acquire)
}

/// The process-wide value of the metric `name` (Envoy keeps one stat per name, whichever
/// configuration defined it; so does this).
pub fn total(name: &str) -> Arc<AtomicU64> {
    static TOTALS: OnceLock<Mutex<HashMap<String, Arc<AtomicU64>>>> = OnceLock::new();
    let m = TOTALS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut t = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    t.entry(name.to_owned()).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_is_proxy_wasms() {
        assert_eq!(shared_data("t.a"), None);
        assert!(!set_shared_data("t.a", b"x", 7), "absent with a token");
        let before = writes();
        assert!(set_shared_data("t.a", b"x", 0));
        assert!(writes() > before, "a write is seen");
        let (v, cas) = shared_data("t.a").unwrap();
        assert_eq!(v, b"x");
        assert!(set_shared_data("t.a", b"y", cas));
        assert!(!set_shared_data("t.a", b"z", cas), "stale token");
        let (v, cas2) = shared_data("t.a").unwrap();
        assert_eq!((v.as_slice(), cas2 != cas), (&b"y"[..], true));
        assert!(set_shared_data("t.a", b"w", 0));
    }

    #[test]
    fn totals_are_per_name() {
        total("t.c").fetch_add(3, Ordering::Relaxed);
        assert_eq!(total("t.c").load(Ordering::Relaxed), 3);
        assert_eq!(total("t.d").load(Ordering::Relaxed), 0);
    }
}
