//! The one adapter to the proxy-wasm ABI: Envoy's callbacks (the `proxy_on_*` exports) forwarded
//! to [`crate::filter`], and [`Envoy`], the filter's [`Host`] made of panic-free bindings to the
//! few host calls it makes.
//!
//! No SDK: the proxy-wasm Rust SDK's dispatcher (its context maps, trait objects with every
//! default method, thread-locals, logger) was a sixth of the module's code, which V8 compiles
//! before Envoy is ready, it panics on an unknown context id, and it exports every callback, so
//! Envoy crossed into the VM for request bodies and trailers the filter ignores. Here every
//! status is an `Err`, every buffer is decoded with bounds checks ([`crate::formats::headers`]), and an
//! unknown context is ignored. Buffers the host returns were allocated through
//! `proxy_on_memory_allocate` (a boxed `[u8]` of exactly the returned size), which is why
//! `Vec::from_raw_parts(p, n, n)` takes ownership of them soundly.
#![allow(unsafe_code)]

use crate::filter::{Host, HostError, Level, Map, Root, Stream};
use crate::metrics::MetricKind;
use crate::routing::cookies::ID_BYTES;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

// The exports Envoy calls (proxy-wasm ABI 0.2.1). Only what the filter uses is exported: a
// callback the module does not export is never called (no VM crossing for request bodies,
// request trailers or queue events). HTTP-call answers reach only the root that sent the call
// (the guard pool's query). Unknown context ids are ignored, never a trap.

/// The ABI version marker Envoy looks for.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

extern "C" {
    /// wasi-libc's static constructors (a reactor module runs them from `_initialize`).
    fn __wasm_call_ctors();
}

/// Called once by Envoy after instantiation.
#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: called once, before any other export, as a WASI reactor's `_initialize` must.
    unsafe { __wasm_call_ctors() }
}

/// Buffers the host hands to the VM (header values, bodies, configuration) are allocated here:
/// a boxed `[u8]` of exactly `size` bytes, which [`owned`] takes back.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: `MaybeUninit` needs no initialisation, and the capacity is `size`.
    unsafe { v.set_len(size) };
    Box::into_raw(v.into_boxed_slice()).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    with(|c| {
        if root_context_id == 0 {
            c.roots.push((context_id, Root::new(Envoy)));
        } else if let Some(stream) = c.root(root_context_id).map(Root::stream) {
            c.streams.insert(context_id, stream);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> bool {
    with(|c| c.root(context_id).is_some_and(Root::on_vm_start))
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> bool {
    with(|c| c.root_mut(context_id).is_some_and(Root::on_configure))
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    with(|c| c.root(context_id).map(Root::on_tick));
}

/// The answer to the guard pool's query (or its failure: no headers).
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    with(|c| {
        c.root(context_id)
            .map(|r| r.on_http_call_response(token, num_headers, body_size))
    });
}

/// A stream is done at once; a root flushes its counters first (and says so).
#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> bool {
    with(|c| c.root(context_id).map_or(true, Root::on_done))
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    with(|c| c.streams.get_mut(&context_id).map(Stream::on_log));
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with(|c| {
        if c.streams.remove(&context_id).is_none() {
            c.roots.retain(|(id, _)| *id != context_id);
        }
    });
}

/// `Continue`: the filter never pauses a stream.
const CONTINUE: u32 = 0;

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, _eos: bool) -> u32 {
    with(|c| {
        c.streams
            .get_mut(&context_id)
            .map(Stream::on_request_headers)
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, eos: bool) -> u32 {
    with(|c| {
        c.streams
            .get_mut(&context_id)
            .map(|s| s.on_response_headers(eos))
    });
    CONTINUE
}

/// Always streams on: the client gets the body exactly as the upstream sent it.
#[no_mangle]
pub extern "C" fn proxy_on_response_body(context_id: u32, size: usize, eos: bool) -> u32 {
    with(|c| {
        c.streams
            .get_mut(&context_id)
            .map(|s| s.on_response_body(size, eos))
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, _trailers: usize) -> u32 {
    with(|c| {
        c.streams
            .get_mut(&context_id)
            .map(Stream::on_response_trailers)
    });
    CONTINUE
}

/// The VM's contexts: a few roots (one per plugin instance sharing the VM, two while a new
/// configuration replaces an old one), and the live streams by context id.
struct Contexts {
    roots: Vec<(u32, Root<Envoy>)>,
    streams: HashMap<u32, Stream<Envoy>, BuildHasherDefault<IdHasher>>,
}

impl Contexts {
    fn root(&self, id: u32) -> Option<&Root<Envoy>> {
        self.roots.iter().find(|(i, _)| *i == id).map(|(_, r)| r)
    }

    fn root_mut(&mut self, id: u32) -> Option<&mut Root<Envoy>> {
        self.roots
            .iter_mut()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| r)
    }
}

/// Context ids are small sequential integers: one multiply spreads them over the table.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The contexts of this VM. A proxy-wasm VM runs one thread (wasm32-wasip1 has none), so
/// sharing a `RefCell` is sound here; a re-entrant callback (none exists in the ABI) would find
/// it borrowed and do nothing rather than trap.
struct Global(RefCell<Option<Contexts>>);

// SAFETY: the module is single-threaded (see above); nothing is ever shared across threads.
unsafe impl Sync for Global {}

static CONTEXTS: Global = Global(RefCell::new(None));

fn with<R: Default>(f: impl FnOnce(&mut Contexts) -> R) -> R {
    let Ok(mut contexts) = CONTEXTS.0.try_borrow_mut() else {
        return R::default();
    };
    f(contexts.get_or_insert_with(|| Contexts {
        roots: Vec::new(),
        streams: HashMap::default(),
    }))
}

/// Envoy's `xds.cluster_name` attribute (the routed cluster), in the property ABI's encoding.
const CLUSTER_NAME: &[u8] = b"xds\0cluster_name\0";

/// The filter's host: the ABI calls below.
#[derive(Clone, Copy)]
pub struct Envoy;

/// The ABI's header map types.
type MapType = u32;

fn map_type(map: Map) -> MapType {
    match map {
        Map::Request => 0,
        Map::Response => 2,
        Map::ResponseTrailers => 3,
        Map::HttpCallResponse => 6,
    }
}

/// The ABI's buffer types.
type BufferType = u32;
const HTTP_RESPONSE_BODY: BufferType = 1;
const HTTP_CALL_RESPONSE_BODY: BufferType = 4;
const PLUGIN_CONFIGURATION: BufferType = 7;

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
        buffer_range(HTTP_RESPONSE_BODY, 0, size)
    }
    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError> {
        buffer_range(PLUGIN_CONFIGURATION, 0, usize::MAX)
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
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        http_call(cluster, headers, timeout_ms)
    }
    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        buffer_range(HTTP_CALL_RESPONSE_BODY, 0, size)
    }
    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Info => 2,
            Level::Warn => 3,
            Level::Error => 4,
        };
        // SAFETY: the message outlives the call. A failed log has nowhere to be reported.
        unsafe { proxy_log(level, message.as_ptr(), message.len()) };
    }
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
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

/// The whole header map in the proxy-wasm wire format (decoded by the filter with `crate::formats::headers::pairs`).
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

/// The host's wall clock in milliseconds since the Unix epoch (0 if it cannot be read).
fn now_ms() -> u64 {
    let mut ns = 0u64;
    // SAFETY: `ns` is a live local.
    match unsafe { proxy_get_current_time_nanoseconds(&mut ns) } {
        OK => ns / 1_000_000,
        _ => 0,
    }
}

/// Sends an HTTP request without a body to `cluster`; returns the call's token.
fn http_call(cluster: &str, headers: &[(&str, &str)], timeout_ms: u32) -> Result<u32, HostError> {
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
