//! The one adapter to the proxy-wasm ABI: Envoy's callbacks forwarded to [`crate::filter`], and
//! [`Envoy`], the filter's [`Host`] made of panic-free bindings to the few host calls it makes.
//!
//! The SDK's `hostcalls` functions return `Result` yet `panic!` on any status they did not
//! expect, and its header-pairs decoder unwraps. With `panic = "abort"` a panic traps the VM and
//! Envoy then fails every later request on it, so the request path goes through these instead:
//! every status is an `Err`, every buffer is decoded with bounds checks ([`crate::headers`]).
//! Buffers returned by the host were allocated through the SDK's `proxy_on_memory_allocate`
//! (a boxed `[u8]` of exactly the returned size), which is why `Vec::from_raw_parts(p, n, n)`
//! takes ownership of them soundly.
#![allow(unsafe_code)]

use crate::assign::ID_BYTES;
use crate::filter::{Host, HostError, Level, Map, Root, Stream};
use crate::metrics::MetricKind;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(RootContextOf(Root::new(Envoy)))
    });
}}

/// Envoy's root context callbacks, forwarded.
struct RootContextOf(Root<Envoy>);

impl Context for RootContextOf {
    fn on_done(&mut self) -> bool {
        self.0.on_done()
    }
}

impl RootContext for RootContextOf {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        self.0.on_vm_start()
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.0.on_configure()
    }

    fn on_tick(&mut self) {
        self.0.on_tick();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK panics on None.
        Some(Box::new(HttpContextOf(self.0.stream())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Envoy's HTTP stream callbacks, forwarded. The filter never pauses a stream.
struct HttpContextOf(Stream<Envoy>);

impl Context for HttpContextOf {}

impl HttpContext for HttpContextOf {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.0.on_request_headers();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.0.on_response_headers(end_of_stream);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0.on_response_body(body_size, end_of_stream);
        // Always stream on: the client gets the body exactly as the upstream sent it.
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.0.on_response_trailers();
        Action::Continue
    }

    fn on_log(&mut self) {
        self.0.on_log();
    }
}

/// Envoy's `xds.cluster_name` attribute (the routed cluster), in the property ABI's encoding.
const CLUSTER_NAME: &[u8] = b"xds\0cluster_name\0";

/// The filter's host: the ABI calls below.
#[derive(Clone, Copy)]
pub struct Envoy;

fn map_type(map: Map) -> MapType {
    match map {
        Map::Request => MapType::HttpRequestHeaders,
        Map::Response => MapType::HttpResponseHeaders,
        Map::ResponseTrailers => MapType::HttpResponseTrailers,
    }
}

impl Host for Envoy {
    fn header(&self, map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        header(map_type(map), name)
    }
    fn header_map(&self, map: Map) -> Result<Vec<u8>, HostError> {
        header_map(map_type(map))
    }
    fn set_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        set_header(map_type(map), name, value)
    }
    fn add_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        add_header(map_type(map), name, value)
    }
    fn remove_header(&self, map: Map, name: &str) -> Result<(), HostError> {
        remove_header(map_type(map), name)
    }
    fn cluster_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        property(CLUSTER_NAME)
    }
    fn set_filter_state(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        set_property(key.as_bytes(), value)
    }
    fn response_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        buffer_range(BufferType::HttpResponseBody, 0, size)
    }
    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError> {
        buffer_range(BufferType::PluginConfiguration, 0, usize::MAX)
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn random_id(&self) -> Option<[u8; ID_BYTES]> {
        random_id()
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, offset: i64) -> Result<(), HostError> {
        increment_metric(id, offset)
    }
    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        record_metric(id, value)
    }
    fn metric(&self, id: u32) -> Result<u64, HostError> {
        get_metric(id)
    }
    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        shared_data(key)
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        set_shared_data(key, value, cas)
    }
    fn set_tick_period(&self, period_ms: u32) -> Result<(), HostError> {
        set_tick_period(period_ms)
    }
    fn log(&self, level: Level, message: &str) {
        match level {
            Level::Info => log::info!("{message}"),
            Level::Warn => log::warn!("{message}"),
            Level::Error => log::error!("{message}"),
        }
    }
}

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
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: MetricType,
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
fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
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
fn set_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Adds one more value to a header.
fn add_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Removes every value of a header.
fn remove_header(map: MapType, name: &str) -> Result<(), HostError> {
    // SAFETY: the slice outlives the call.
    match unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) } {
        OK | NOT_FOUND => Ok(()),
        status => Err(HostError(status)),
    }
}

/// The whole header map in the proxy-wasm wire format (decoded by the filter with `crate::headers::pairs`).
fn header_map(map: MapType) -> Result<Vec<u8>, HostError> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    // SAFETY: as in `header`.
    match unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) } {
        OK => Ok(unsafe { owned(data, size) }),
        status => Err(HostError(status)),
    }
}

/// Up to `max` bytes of a host buffer from `start` (e.g. the current response body chunk).
fn buffer_range(buffer: BufferType, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
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
fn random_id() -> Option<[u8; ID_BYTES]> {
    let mut buf = [0u8; ID_BYTES];
    getrandom::fill(&mut buf).ok()?;
    Some(buf)
}

/// A host property, `Ok(None)` when absent. `path` is already in the ABI's encoding: each
/// segment followed by a NUL byte (e.g. `b"xds\0cluster_name\0"`), so callers keep it constant.
fn property(path: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
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
fn set_property(path: &[u8], value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Defines (or finds) a metric; returns its id.
fn define_metric(kind: MetricKind, name: &str) -> Result<u32, HostError> {
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
fn increment_metric(id: u32, offset: i64) -> Result<(), HostError> {
    // SAFETY: plain values.
    match unsafe { proxy_increment_metric(id, offset) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Sets a gauge or records a histogram value.
fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: plain values.
    match unsafe { proxy_record_metric(id, value) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// A metric's current value (a counter's Envoy-wide total).
fn get_metric(id: u32) -> Result<u64, HostError> {
    let mut value = 0u64;
    // SAFETY: `value` is a live local.
    match unsafe { proxy_get_metric(id, &mut value) } {
        OK => Ok(value),
        status => Err(HostError(status)),
    }
}

/// A shared-data entry and its CAS token, `Ok(None)` when absent.
fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
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
fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
    // SAFETY: the slices outlive the call.
    match unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}

/// Calls the root context's `on_tick` every `period_ms` (0 stops the ticks).
fn set_tick_period(period_ms: u32) -> Result<(), HostError> {
    // SAFETY: a plain value.
    match unsafe { proxy_set_tick_period_milliseconds(period_ms) } {
        OK => Ok(()),
        status => Err(HostError(status)),
    }
}
