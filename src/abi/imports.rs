//! The host functions Envoy provides, and the bindings that turn each status into a `Result`
//! and take ownership of the buffers the host returns.

use crate::filter::HostError;
use crate::metrics::MetricKind;
use crate::routing::cookies::ID_BYTES;

/// The ABI's header map types.
pub(super) type MapType = u32;
/// The ABI's buffer types.
pub(super) type BufferType = u32;

pub(super) const OK: u32 = 0;
pub(super) const NOT_FOUND: u32 = 1;

// On the host (unit tests) the same symbols come from `tests.rs`'s fake.
#[cfg_attr(target_arch = "wasm32", link(wasm_import_module = "env"))]
extern "C" {
    pub(super) fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
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
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_milliseconds: u32,
        return_token: *mut u32,
    ) -> u32;
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
pub(super) unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// The first value of a header, `Ok(None)` when absent.
pub(super) fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
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
pub(super) fn set_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Adds one more value to a header.
pub(super) fn add_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Removes every value of a header.
pub(super) fn remove_header(map: MapType, name: &str) -> Result<(), HostError> {
    // SAFETY: the slice outlives the call.
    match unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) } {
        OK | NOT_FOUND => Ok(()),
        status => Err(HostError(status)),
    }
}

/// The whole header map in the proxy-wasm wire format (decoded by the filter with `crate::formats::headers::pairs`).
pub(super) fn header_map(map: MapType) -> Result<Vec<u8>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: as in `header`.
    match unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) } {
        OK => Ok(unsafe { owned(data, size) }),
        status => Err(HostError(status)),
    }
}

/// Up to `max` bytes of a host buffer from `start` (e.g. the current response body chunk).
pub(super) fn buffer_range(
    buffer: BufferType,
    start: usize,
    max: usize,
) -> Result<Vec<u8>, HostError> {
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
pub(super) fn random_id() -> Option<[u8; ID_BYTES]> {
    let mut buf = [0u8; ID_BYTES];
    getrandom::fill(&mut buf).ok()?;
    Some(buf)
}

/// A host property, `Ok(None)` when absent. `path` is already in the ABI's encoding: each
/// segment followed by a NUL byte (e.g. `b"xds\0cluster_name\0"`), so callers keep it constant.
pub(super) fn property(path: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: as in `header`.
    match unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) } {
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        status => Err(HostError(status)),
    }
}

/// Writes a property. Envoy stores a one-segment path `key` (no NUL) as the stream's filter
/// state `wasm.<key>` (a mutable `CelState` of type bytes, living as long as the filter chain).
pub(super) fn set_property(path: &[u8], value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Defines (or finds) a metric; returns its id.
pub(super) fn define_metric(kind: MetricKind, name: &str) -> Result<u32, HostError> {
    let t: u32 = match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    };
    let mut id = 0u32;
    // SAFETY: the name outlives the call; `id` is a live local.
    match unsafe { proxy_define_metric(t, name.as_ptr(), name.len(), &mut id) } {
        OK => Ok(id),
        status => Err(HostError(status)),
    }
}

/// Adds to a counter.
pub(super) fn increment_metric(id: u32, offset: i64) -> Result<(), HostError> {
    // SAFETY: plain values.
    match unsafe { proxy_increment_metric(id, offset) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Sets a gauge or records a histogram value.
pub(super) fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: plain values.
    match unsafe { proxy_record_metric(id, value) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// A metric's current value (a counter's Envoy-wide total).
pub(super) fn get_metric(id: u32) -> Result<u64, HostError> {
    let mut value = 0u64;
    // SAFETY: `value` is a live local.
    match unsafe { proxy_get_metric(id, &mut value) } {
        OK => Ok(value),
        status => Err(HostError(status)),
    }
}

/// A shared-data entry and its CAS token, `Ok(None)` when absent.
pub(super) fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    let mut cas = 0u32;
    // SAFETY: as in `header`; `cas` is a live local.
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) }
    {
        OK => Ok(Some((unsafe { owned(data, size) }, cas))),
        NOT_FOUND => Ok(None),
        status => Err(HostError(status)),
    }
}

/// Writes a shared-data entry if its CAS token is still `cas` (0: unconditionally).
pub(super) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Calls the root context's `on_tick` every `period_ms` (0 stops the ticks).
pub(super) fn set_tick_period(period_ms: u32) -> Result<(), HostError> {
    // SAFETY: a plain value.
    match unsafe { proxy_set_tick_period_milliseconds(period_ms) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// The host's wall clock in milliseconds since the Unix epoch (0 if it cannot be read).
pub(super) fn now_ms() -> u64 {
    let mut ns = 0u64;
    // SAFETY: `ns` is a live local.
    match unsafe { proxy_get_current_time_nanoseconds(&mut ns) } {
        OK => ns / 1_000_000,
        _ => 0,
    }
}

/// Sends an HTTP request without a body to `cluster`; returns the call's token.
pub(super) fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    timeout_ms: u32,
) -> Result<u32, HostError> {
    let pairs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let map = crate::formats::headers::serialize(&pairs);
    let mut token = 0u32;
    // SAFETY: the slices outlive the call; `token` is a live local; empty body and trailers.
    match unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            map.as_ptr(),
            map.len(),
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            timeout_ms,
            &mut token,
        )
    } {
        OK => Ok(token),
        status => Err(HostError(status)),
    }
}
