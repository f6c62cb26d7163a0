//! The adapter's unsafe code on the host, against a fake of the host functions Envoy provides:
//! buffers the host returns are allocated through `proxy_on_memory_allocate` exactly as
//! proxy-wasm-cpp-host does and taken back by `owned`; every status maps to its `Result`; the
//! exports drive the filter (configure, decide, tag) and ignore unknown context ids.
//!
//! The fake `proxy_*` functions below are the symbols `imports.rs` declares (on wasm32 they come
//! from Envoy's `env` module). The VM's context table is one static, as in a VM: every test
//! takes `LOCK` so that only one drives it at a time.

use super::envoy::Envoy;
use super::exports::*;
use super::imports::{self, NOT_FOUND, OK};
use crate::filter::{Host, HostError, Map};
use crate::metrics::MetricKind;
use std::cell::RefCell;
use std::sync::Mutex;

static LOCK: Mutex<()> = Mutex::new(());

/// One header map: (name, value) in order.
type Headers = Vec<(String, Vec<u8>)>;

/// What the fake host holds: header maps by ABI map type, buffers by ABI buffer type, metrics,
/// shared data, properties, and a status to return instead of the real answer.
#[derive(Default)]
struct Env {
    maps: Vec<(u32, Headers)>,
    buffers: Vec<(u32, Vec<u8>)>,
    metrics: Vec<(String, u32, i64)>,
    shared: Vec<(String, Vec<u8>, u32)>,
    properties: Vec<(Vec<u8>, Vec<u8>)>,
    logs: Vec<(u32, String)>,
    /// Every call answers this status (when set) instead of doing its work.
    fail: Option<u32>,
}

thread_local! {
    static ENV: RefCell<Env> = RefCell::new(Env::default());
}

fn env<R>(f: impl FnOnce(&mut Env) -> R) -> R {
    ENV.with(|e| f(&mut e.borrow_mut()))
}

/// A copy of host memory into a buffer the VM allocated, as the host hands buffers over.
unsafe fn hand_over(bytes: &[u8], data: *mut *mut u8, size: *mut usize) {
    let p = proxy_on_memory_allocate(bytes.len());
    std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
    *data = p;
    *size = bytes.len();
}

unsafe fn text(data: *const u8, size: usize) -> String {
    String::from_utf8_lossy(std::slice::from_raw_parts(data, size)).into_owned()
}

unsafe fn bytes(data: *const u8, size: usize) -> Vec<u8> {
    if size == 0 {
        Vec::new()
    } else {
        std::slice::from_raw_parts(data, size).to_vec()
    }
}

fn map(e: &mut Env, t: u32) -> &mut Headers {
    if let Some(i) = e.maps.iter().position(|(m, _)| *m == t) {
        return &mut e.maps[i].1;
    }
    e.maps.push((t, Vec::new()));
    &mut e.maps.last_mut().unwrap().1
}

macro_rules! failing {
    () => {
        if let Some(status) = env(|e| e.fail) {
            return status;
        }
    };
}

#[no_mangle]
extern "C" fn proxy_log(level: u32, data: *const u8, size: usize) -> u32 {
    let line = unsafe { text(data, size) };
    env(|e| e.logs.push((level, line)));
    OK
}

#[no_mangle]
extern "C" fn proxy_get_header_map_value(
    t: u32,
    key: *const u8,
    key_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
) -> u32 {
    failing!();
    let key = unsafe { text(key, key_size) };
    let found = env(|e| {
        map(e, t)
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    });
    match found {
        Some(v) => {
            unsafe { hand_over(&v, data, size) };
            OK
        }
        None => NOT_FOUND,
    }
}

#[no_mangle]
extern "C" fn proxy_replace_header_map_value(
    t: u32,
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
) -> u32 {
    failing!();
    let (key, value) = unsafe { (text(key, key_size), bytes(value, value_size)) };
    env(|e| {
        let m = map(e, t);
        m.retain(|(k, _)| *k != key);
        m.push((key, value));
    });
    OK
}

#[no_mangle]
extern "C" fn proxy_add_header_map_value(
    t: u32,
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
) -> u32 {
    failing!();
    let (key, value) = unsafe { (text(key, key_size), bytes(value, value_size)) };
    env(|e| map(e, t).push((key, value)));
    OK
}

#[no_mangle]
extern "C" fn proxy_remove_header_map_value(t: u32, key: *const u8, key_size: usize) -> u32 {
    failing!();
    let key = unsafe { text(key, key_size) };
    env(|e| {
        let m = map(e, t);
        let before = m.len();
        m.retain(|(k, _)| *k != key);
        if m.len() == before {
            NOT_FOUND
        } else {
            OK
        }
    })
}

#[no_mangle]
extern "C" fn proxy_get_header_map_pairs(t: u32, data: *mut *mut u8, size: *mut usize) -> u32 {
    failing!();
    let pairs = env(|e| map(e, t).clone());
    let refs: Vec<(&[u8], &[u8])> = pairs
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_slice()))
        .collect();
    let wire = crate::formats::headers::serialize(&refs);
    unsafe { hand_over(&wire, data, size) };
    OK
}

#[no_mangle]
extern "C" fn proxy_get_property(
    path: *const u8,
    path_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
) -> u32 {
    failing!();
    let path = unsafe { bytes(path, path_size) };
    match env(|e| {
        e.properties
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, v)| v.clone())
    }) {
        Some(v) => {
            unsafe { hand_over(&v, data, size) };
            OK
        }
        None => NOT_FOUND,
    }
}

#[no_mangle]
extern "C" fn proxy_set_property(
    path: *const u8,
    path_size: usize,
    value: *const u8,
    value_size: usize,
) -> u32 {
    failing!();
    let (path, value) = unsafe { (bytes(path, path_size), bytes(value, value_size)) };
    env(|e| {
        e.properties.retain(|(p, _)| *p != path);
        e.properties.push((path, value));
    });
    OK
}

#[no_mangle]
extern "C" fn proxy_define_metric(kind: u32, name: *const u8, size: usize, id: *mut u32) -> u32 {
    failing!();
    let name = unsafe { text(name, size) };
    let found = env(|e| {
        if let Some(i) = e.metrics.iter().position(|(n, _, _)| *n == name) {
            return i;
        }
        e.metrics.push((name, kind, 0));
        e.metrics.len() - 1
    });
    unsafe { *id = found as u32 };
    OK
}

#[no_mangle]
extern "C" fn proxy_increment_metric(id: u32, offset: i64) -> u32 {
    failing!();
    env(|e| match e.metrics.get_mut(id as usize) {
        Some(m) => {
            m.2 += offset;
            OK
        }
        None => NOT_FOUND,
    })
}

#[no_mangle]
extern "C" fn proxy_record_metric(id: u32, value: u64) -> u32 {
    failing!();
    env(|e| match e.metrics.get_mut(id as usize) {
        Some(m) => {
            m.2 = value as i64;
            OK
        }
        None => NOT_FOUND,
    })
}

#[no_mangle]
extern "C" fn proxy_get_metric(id: u32, value: *mut u64) -> u32 {
    failing!();
    match env(|e| e.metrics.get(id as usize).map(|m| m.2)) {
        Some(v) => {
            unsafe { *value = v as u64 };
            OK
        }
        None => NOT_FOUND,
    }
}

#[no_mangle]
extern "C" fn proxy_get_shared_data(
    key: *const u8,
    key_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
    cas: *mut u32,
) -> u32 {
    failing!();
    let key = unsafe { text(key, key_size) };
    match env(|e| e.shared.iter().find(|(k, _, _)| *k == key).cloned()) {
        Some((_, v, c)) => {
            unsafe {
                hand_over(&v, data, size);
                *cas = c;
            }
            OK
        }
        None => NOT_FOUND,
    }
}

#[no_mangle]
extern "C" fn proxy_set_shared_data(
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
    cas: u32,
) -> u32 {
    failing!();
    let (key, value) = unsafe { (text(key, key_size), bytes(value, value_size)) };
    env(|e| match e.shared.iter_mut().find(|(k, _, _)| *k == key) {
        Some(entry) if cas != 0 && cas != entry.2 => 8, // CasMismatch
        Some(entry) => {
            entry.1 = value;
            entry.2 += 1;
            OK
        }
        None => {
            e.shared.push((key, value, 1));
            OK
        }
    })
}

#[no_mangle]
extern "C" fn proxy_set_tick_period_milliseconds(_period: u32) -> u32 {
    failing!();
    OK
}

#[no_mangle]
extern "C" fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32 {
    failing!();
    unsafe { *time = 1_800_000_000_123_456_789 };
    OK
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
extern "C" fn proxy_http_call(
    _upstream: *const u8,
    _upstream_size: usize,
    _headers: *const u8,
    _headers_size: usize,
    _body: *const u8,
    _body_size: usize,
    _trailers: *const u8,
    _trailers_size: usize,
    _timeout: u32,
    token: *mut u32,
) -> u32 {
    failing!();
    unsafe { *token = 42 };
    OK
}

#[no_mangle]
extern "C" fn proxy_get_buffer_bytes(
    t: u32,
    start: usize,
    max: usize,
    data: *mut *mut u8,
    size: *mut usize,
) -> u32 {
    failing!();
    match env(|e| {
        e.buffers
            .iter()
            .find(|(b, _)| *b == t)
            .map(|(_, v)| v.clone())
    }) {
        Some(v) => {
            let end = v.len().min(start.saturating_add(max));
            unsafe { hand_over(v.get(start..end).unwrap_or_default(), data, size) };
            OK
        }
        None => NOT_FOUND,
    }
}

fn reset() {
    env(|e| *e = Env::default());
}

#[test]
fn bindings_take_the_hosts_buffers_and_map_every_status() {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    reset();
    let host = Envoy;
    // A value the host allocated through the VM comes back owned, byte for byte; absent is
    // `Ok(None)`; any other status is `Err` with it.
    host.set_header(Map::Request, "x-a", b"one").unwrap();
    host.add_header(Map::Request, "x-b", &[0, 255, 7]).unwrap();
    assert_eq!(host.header(Map::Request, "x-a"), Ok(Some(b"one".to_vec())));
    assert_eq!(host.header(Map::Request, "x-b"), Ok(Some(vec![0, 255, 7])));
    assert_eq!(host.header(Map::Request, "x-none"), Ok(None));
    assert_eq!(host.header(Map::Response, "x-a"), Ok(None));
    // An empty value is a zero-length buffer, not an absent header.
    host.set_header(Map::Request, "x-empty", b"").unwrap();
    assert_eq!(host.header(Map::Request, "x-empty"), Ok(Some(Vec::new())));
    // The whole map, in the wire format the filter decodes with bounds checks.
    let wire = host.header_map(Map::Request).unwrap();
    let pairs: Vec<(&[u8], &[u8])> = crate::formats::headers::pairs(&wire).collect();
    assert_eq!(
        pairs,
        [
            (&b"x-a"[..], &b"one"[..]),
            (b"x-b", &[0, 255, 7]),
            (b"x-empty", b"")
        ]
    );
    // Removing what is absent is not an error.
    assert_eq!(host.remove_header(Map::Request, "x-none"), Ok(()));
    assert_eq!(host.remove_header(Map::Request, "x-a"), Ok(()));
    assert_eq!(host.header(Map::Request, "x-a"), Ok(None));
    // A body chunk: a range of the host's buffer; no buffer is an empty chunk.
    env(|e| e.buffers.push((1, b"0123456789".to_vec())));
    assert_eq!(host.response_body(4), Ok(b"0123".to_vec()));
    env(|e| e.buffers.clear());
    assert_eq!(host.response_body(4), Ok(Vec::new()));
    // Metrics: the kinds the ABI numbers 0, 1, 2; a counter's total; a gauge set.
    let c = host.define_metric(MetricKind::Counter, "c").unwrap();
    let g = host.define_metric(MetricKind::Gauge, "g").unwrap();
    let h = host.define_metric(MetricKind::Histogram, "h").unwrap();
    assert_eq!(
        env(|e| e.metrics.iter().map(|m| m.1).collect::<Vec<_>>()),
        [0, 1, 2]
    );
    host.increment_metric(c, 5).unwrap();
    host.increment_metric(c, 2).unwrap();
    host.record_metric(g, 9).unwrap();
    host.record_metric(h, 3).unwrap();
    assert_eq!((host.metric(c), host.metric(g)), (Ok(7), Ok(9)));
    assert_eq!(host.metric(99), Err(HostError(NOT_FOUND)));
    // Shared data with its CAS token; a stale token is the host's CasMismatch.
    assert_eq!(host.shared_data("k"), Ok(None));
    host.set_shared_data("k", b"v1", 0).unwrap();
    assert_eq!(host.shared_data("k"), Ok(Some((b"v1".to_vec(), 1))));
    assert_eq!(
        host.set_shared_data("k", b"v2", 7),
        Err(crate::filter::CAS_MISMATCH)
    );
    host.set_shared_data("k", b"v2", 1).unwrap();
    assert_eq!(host.shared_data("k"), Ok(Some((b"v2".to_vec(), 2))));
    // The cluster is a property read; the filter state a property write.
    assert_eq!(host.cluster_name(), Ok(None));
    env(|e| {
        e.properties
            .push((b"xds\0cluster_name\0".to_vec(), b"canary".to_vec()))
    });
    assert_eq!(host.cluster_name(), Ok(Some(b"canary".to_vec())));
    host.set_filter_state("k", b"v").unwrap();
    // The clock in ms; an HTTP call's token.
    assert_eq!(host.now_ms(), 1_800_000_000_123);
    assert_eq!(host.http_call("prom", &[(":path", "/q")], 1000), Ok(42));
    // Every binding turns a failing status into `Err` with that status, and the clock into 0.
    env(|e| e.fail = Some(3));
    assert_eq!(host.header(Map::Request, "x-b"), Err(HostError(3)));
    assert_eq!(host.header_map(Map::Request), Err(HostError(3)));
    assert_eq!(host.set_header(Map::Request, "x", b"y"), Err(HostError(3)));
    assert_eq!(host.add_header(Map::Request, "x", b"y"), Err(HostError(3)));
    assert_eq!(host.remove_header(Map::Request, "x"), Err(HostError(3)));
    assert_eq!(host.response_body(1), Err(HostError(3)));
    assert_eq!(host.cluster_name(), Err(HostError(3)));
    assert_eq!(
        host.define_metric(MetricKind::Counter, "d"),
        Err(HostError(3))
    );
    assert_eq!(host.increment_metric(c, 1), Err(HostError(3)));
    assert_eq!(host.shared_data("k"), Err(HostError(3)));
    assert_eq!(host.set_tick_period(1000), Err(HostError(3)));
    assert_eq!(host.now_ms(), 0);
    reset();
}

#[test]
fn a_null_buffer_is_empty_and_an_allocation_is_exactly_its_size() {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: a null pointer is what a host returns for an empty buffer.
    assert!(unsafe { imports::owned(std::ptr::null_mut(), 0) }.is_empty());
    for size in [0, 1, 17, 4096] {
        let p = proxy_on_memory_allocate(size);
        // SAFETY: `p` is the VM's own allocation of `size` bytes, taken back once.
        let v = unsafe {
            std::ptr::write_bytes(p, 0xab, size);
            imports::owned(p, size)
        };
        assert_eq!((v.len(), v.capacity()), (size, size));
        assert!(v.iter().all(|&b| b == 0xab));
    }
}

#[test]
fn the_exports_drive_the_filter_and_ignore_unknown_contexts() {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    reset();
    let config = br#"{"service":"checkout","versions":[{"name":"canary","weight":0},
        {"name":"stable","weight":100}],"session":{"sources":[{"cookie":"session_id"}]},
        "metrics_flush_ms":0}"#;
    env(|e| e.buffers.push((7, config.to_vec())));
    // Unknown ids before anything exists: no trap, nothing done.
    assert!(!proxy_on_vm_start(9, 0));
    assert_eq!(proxy_on_request_headers(10, 0, false), 0);
    proxy_on_context_create(1, 0);
    assert!(proxy_on_vm_start(1, 0));
    assert!(proxy_on_configure(1, config.len()));
    assert!(env(|e| e
        .logs
        .iter()
        .any(|(_, l)| l.contains("service=checkout"))));
    // A stream of root 1: decided, the route header written through the ABI.
    proxy_on_context_create(2, 1);
    env(|e| {
        e.maps.push((
            0,
            vec![
                ("cookie".into(), b"session_id=alice".to_vec()),
                ("x-canary-version".into(), b"canary".to_vec()),
            ],
        ))
    });
    assert_eq!(proxy_on_request_headers(2, 2, true), 0);
    let routed = env(|e| {
        map(e, 0)
            .iter()
            .filter(|(k, _)| k == "x-canary-version")
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(routed, [b"stable".to_vec()]);
    // The response is tagged with the version whose cluster served it.
    env(|e| {
        e.maps.push((2, vec![(":status".into(), b"200".to_vec())]));
        e.properties
            .push((b"xds\0cluster_name\0".to_vec(), b"stable".to_vec()));
    });
    assert_eq!(proxy_on_response_headers(2, 1, true), 0);
    assert_eq!(
        env(|e| map(e, 2)
            .iter()
            .find(|(k, _)| k == "x-canary-version")
            .map(|(_, v)| v.clone())),
        Some(b"stable".to_vec())
    );
    let served = env(|e| {
        e.metrics
            .iter()
            .find(|(n, _, _)| {
                n.contains("version=.=stable;.;")
                    && n.ends_with("canary_responses_total")
                    && n.contains("code_class=.=2xx")
            })
            .map(|m| m.2)
    });
    assert_eq!(served, Some(1));
    // A stream of an unknown root is never created; its callbacks do nothing.
    proxy_on_context_create(3, 77);
    assert_eq!(proxy_on_request_headers(3, 0, false), 0);
    // The stream ends; the root is done and deleted; later callbacks find nothing.
    proxy_on_log(2);
    proxy_on_delete(2);
    assert!(proxy_on_done(1));
    proxy_on_delete(1);
    assert!(!proxy_on_configure(1, config.len()));
    reset();
}
