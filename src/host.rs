//! Panic-free bindings to the few proxy-wasm host calls the filter makes, and its randomness.
//!
//! The SDK's `hostcalls` functions return `Result` yet `panic!` on any status they did not
//! expect, and its header-pairs decoder unwraps. With `panic = "abort"` a panic traps the VM and
//! Envoy then fails every later request on it, so the request path goes through these instead:
//! every status is an `Err`, every buffer is decoded with bounds checks ([`crate::headers`]).
//! Buffers returned by the host were allocated through the SDK's `proxy_on_memory_allocate`
//! (a boxed `[u8]` of exactly the returned size), which is why `Vec::from_raw_parts(p, n, n)`
//! takes ownership of them soundly.
#![allow(unsafe_code)]

use crate::metrics::MetricKind;
use proxy_wasm::types::{BufferType, MapType, MetricType};

/// A host call did not succeed; the raw proxy-wasm status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: MetricType,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
}

/// Takes ownership of a host-returned buffer.
///
/// # Safety
/// `data`/`size` must come from a successful host call that allocated through
/// `proxy_on_memory_allocate(size)`, and must not be used again.
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// The first value of a header, `Ok(None)` when absent.
pub fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: pointers to live locals; the host writes a buffer it allocated through us.
    match unsafe {
        proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size)
    } {
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        status => Err(HostError(status)),
    }
}

/// Replaces every value of a header with one value.
pub fn set_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Adds one more value to a header.
pub fn add_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Removes every value of a header.
pub fn remove_header(map: MapType, name: &str) -> Result<(), HostError> {
    // SAFETY: the slice outlives the call.
    match unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) } {
        OK | NOT_FOUND => Ok(()),
        status => Err(HostError(status)),
    }
}

/// The whole header map in the proxy-wasm wire format (decode with [`crate::headers::pairs`]).
pub fn header_map(map: MapType) -> Result<Vec<u8>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: as in `header`.
    match unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) } {
        OK => Ok(unsafe { owned(data, size) }),
        status => Err(HostError(status)),
    }
}

/// A whole host buffer (e.g. the plugin configuration); empty when absent.
pub fn buffer(buffer: BufferType) -> Result<Vec<u8>, HostError> {
    buffer_range(buffer, 0, usize::MAX)
}

/// Up to `max` bytes of a host buffer from `start` (e.g. the current response body chunk).
pub fn buffer_range(buffer: BufferType, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: as in `header`.
    match unsafe { proxy_get_buffer_bytes(buffer, start, max, &mut data, &mut size) } {
        OK => Ok(unsafe { owned(data, size) }),
        NOT_FOUND => Ok(Vec::new()),
        status => Err(HostError(status)),
    }
}

/// 128 bits from WASI `random_get`, which Envoy (proxy-wasm-cpp-host) serves from BoringSSL's
/// `RAND_bytes`, a CSPRNG.
pub fn random_id() -> Option<[u8; crate::assign::ID_BYTES]> {
    let mut buf = [0u8; crate::assign::ID_BYTES];
    getrandom::fill(&mut buf).ok()?;
    Some(buf)
}

/// A host property, `Ok(None)` when absent. `path` is already in the ABI's encoding: each
/// segment followed by a NUL byte (e.g. `b"xds\0cluster_name\0"`), so callers keep it constant.
pub fn property(path: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: as in `header`.
    match unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) } {
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        status => Err(HostError(status)),
    }
}

/// Defines (or finds) a metric; returns its id.
pub fn define_metric(kind: MetricKind, name: &str) -> Result<u32, HostError> {
    let t = match kind {
        MetricKind::Counter => MetricType::Counter,
        MetricKind::Gauge => MetricType::Gauge,
        MetricKind::Histogram => MetricType::Histogram,
    };
    let mut id = 0u32;
    // SAFETY: the name outlives the call; `id` is a live local.
    match unsafe { proxy_define_metric(t, name.as_ptr(), name.len(), &mut id) } {
        OK => Ok(id),
        status => Err(HostError(status)),
    }
}

/// Adds to a counter.
pub fn increment_metric(id: u32, offset: i64) -> Result<(), HostError> {
    // SAFETY: plain values.
    match unsafe { proxy_increment_metric(id, offset) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Sets a gauge or records a histogram value.
pub fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: plain values.
    match unsafe { proxy_record_metric(id, value) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Calls the root context's `on_tick` every `period_ms` (0 stops the ticks).
pub fn set_tick_period(period_ms: u32) -> Result<(), HostError> {
    // SAFETY: a plain value.
    match unsafe { proxy_set_tick_period_milliseconds(period_ms) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}
