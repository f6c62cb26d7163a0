//! A fake of the Envoy callbacks `abi.rs` declares, for the unit tests: the same symbols, with
//! the header's semantics, over one in-memory stream per thread (the test's).
#![allow(unsafe_code)]

use crate::abi::{
    ConfigEnvoyPtr, ConfigSchedulerPtr, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoyPtr, ModuleBuffer,
    ModuleHttpHeader,
};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
pub struct Fake {
    /// Header maps by header type (0 request, 2 response, 3 response trailers).
    pub maps: [Vec<(Vec<u8>, Vec<u8>)>; 4],
    /// The received response body chunks.
    pub body: Vec<Vec<u8>>,
    pub cluster: Option<Vec<u8>>,
    pub filter_state: Vec<(Vec<u8>, Vec<u8>)>,
    /// Defined metrics: (kind, name), Envoy's id is the index.
    pub defined: Vec<(&'static str, String)>,
    pub values: Vec<u64>,
    pub logs: Vec<(u32, String)>,
    pub route_cache_cleared: usize,
    /// Schedulers deleted (commits come from the ticker's thread: [`COMMITS`]).
    pub schedulers_deleted: usize,
    /// Callouts sent: (cluster, headers).
    pub callouts: Vec<(String, Vec<(String, String)>)>,
}

thread_local! {
    pub static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

pub fn with<R>(f: impl FnOnce(&mut Fake) -> R) -> R {
    FAKE.with(|fake| f(&mut fake.borrow_mut()))
}

impl Fake {
    pub fn value(&self, name: &str) -> Option<u64> {
        let i = self.defined.iter().position(|(_, n)| n == name)?;
        self.values.get(i).copied()
    }

    pub fn header(&self, ty: usize, name: &str) -> Option<&[u8]> {
        self.maps[ty]
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

unsafe fn bytes(b: ModuleBuffer) -> Vec<u8> {
    if b.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the module's buffer, valid during the call.
    unsafe { std::slice::from_raw_parts(b.ptr, b.length) }.to_vec()
}

fn envoy(b: &[u8]) -> EnvoyBuffer {
    EnvoyBuffer {
        ptr: b.as_ptr(),
        length: b.len(),
    }
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer) {
    let m = String::from_utf8_lossy(&unsafe { bytes(message) }).into_owned();
    with(|f| f.logs.push((level, m)));
}

unsafe fn define(kind: &'static str, name: ModuleBuffer, id: *mut usize) -> u32 {
    let name = String::from_utf8_lossy(&unsafe { bytes(name) }).into_owned();
    with(|f| {
        let i = match f.defined.iter().position(|(_, n)| *n == name) {
            Some(i) => i,
            None => {
                f.defined.push((kind, name));
                f.values.push(0);
                f.defined.len() - 1
            }
        };
        unsafe { *id = i };
    });
    0
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    _: ConfigEnvoyPtr,
    name: ModuleBuffer,
    _: *mut ModuleBuffer,
    _: usize,
    id: *mut usize,
) -> u32 {
    unsafe { define("counter", name, id) }
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
    _: ConfigEnvoyPtr,
    name: ModuleBuffer,
    _: *mut ModuleBuffer,
    _: usize,
    id: *mut usize,
) -> u32 {
    unsafe { define("gauge", name, id) }
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
    _: ConfigEnvoyPtr,
    name: ModuleBuffer,
    _: *mut ModuleBuffer,
    _: usize,
    id: *mut usize,
) -> u32 {
    unsafe { define("histogram", name, id) }
}

fn update(id: usize, f: impl FnOnce(u64) -> u64) -> u32 {
    with(|fake| match fake.values.get_mut(id) {
        Some(v) => {
            *v = f(*v);
            0
        }
        None => 1,
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
    _: ConfigEnvoyPtr,
    id: usize,
    _: *mut ModuleBuffer,
    _: usize,
    value: u64,
) -> u32 {
    update(id, |v| v + value)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
    _: ConfigEnvoyPtr,
    id: usize,
    _: *mut ModuleBuffer,
    _: usize,
    value: u64,
) -> u32 {
    update(id, |v| v + value)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
    _: ConfigEnvoyPtr,
    id: usize,
    _: *mut ModuleBuffer,
    _: usize,
    value: u64,
) -> u32 {
    update(id, |v| v.saturating_sub(value))
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
    _: ConfigEnvoyPtr,
    id: usize,
    _: *mut ModuleBuffer,
    _: usize,
    value: u64,
) -> u32 {
    update(id, |_| value)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
    _: ConfigEnvoyPtr,
    id: usize,
    _: *mut ModuleBuffer,
    _: usize,
    _: u64,
) -> u32 {
    update(id, |v| v + 1)
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_header(
    _: FilterEnvoyPtr,
    header_type: u32,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
    index: usize,
    optional_size: *mut usize,
) -> bool {
    let key = unsafe { bytes(key) };
    with(|f| {
        let values: Vec<&Vec<u8>> = f.maps[header_type as usize]
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect();
        if !optional_size.is_null() {
            unsafe { *optional_size = values.len() };
        }
        // The fake's maps outlive the hook (the tests do not write between read and use).
        unsafe { *result = values.get(index).map_or(EnvoyBuffer::NULL, |v| envoy(v)) };
        true
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
    _: FilterEnvoyPtr,
    header_type: u32,
) -> usize {
    with(|f| f.maps[header_type as usize].len())
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    _: FilterEnvoyPtr,
    header_type: u32,
    result: *mut EnvoyHttpHeader,
) -> bool {
    with(|f| {
        for (i, (k, v)) in f.maps[header_type as usize].iter().enumerate() {
            unsafe {
                *result.add(i) = EnvoyHttpHeader {
                    key_ptr: k.as_ptr(),
                    key_length: k.len(),
                    value_ptr: v.as_ptr(),
                    value_length: v.len(),
                }
            };
        }
        true
    })
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_add_header(
    _: FilterEnvoyPtr,
    header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let (k, v) = unsafe { (bytes(key), bytes(value)) };
    with(|f| f.maps[header_type as usize].push((k, v)));
    true
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_set_header(
    _: FilterEnvoyPtr,
    header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let (k, null, v) = unsafe { (bytes(key), value.ptr.is_null(), bytes(value)) };
    with(|f| {
        let map = &mut f.maps[header_type as usize];
        let had = map.iter().any(|(key, _)| *key == k);
        map.retain(|(key, _)| *key != k);
        if !null {
            map.push((k, v));
        }
        !null || had
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_clear_route_cache(_: FilterEnvoyPtr) {
    with(|f| f.route_cache_cleared += 1);
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_body_size(_: FilterEnvoyPtr, _: u32) -> usize {
    with(|f| f.body.iter().map(Vec::len).sum())
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks_size(
    _: FilterEnvoyPtr,
    _: u32,
) -> usize {
    with(|f| f.body.len())
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks(
    _: FilterEnvoyPtr,
    _: u32,
    result: *mut EnvoyBuffer,
) -> bool {
    with(|f| {
        for (i, c) in f.body.iter().enumerate() {
            unsafe { *result.add(i) = envoy(c) };
        }
        true
    })
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
    _: FilterEnvoyPtr,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let (k, v) = unsafe { (bytes(key), bytes(value)) };
    with(|f| f.filter_state.push((k, v)));
    true
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_cluster_name(
    _: FilterEnvoyPtr,
    result: *mut EnvoyBuffer,
) -> bool {
    with(|f| match &f.cluster {
        Some(c) => {
            unsafe { *result = envoy(c) };
            true
        }
        None => false,
    })
}

/// Commits come from the ticker's thread: counted process-wide.
pub static COMMITS: AtomicUsize = AtomicUsize::new(0);

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
    _: ConfigEnvoyPtr,
) -> ConfigSchedulerPtr {
    Box::into_raw(Box::new(0u8)).cast()
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
    _: ConfigSchedulerPtr,
    _: u64,
) {
    COMMITS.fetch_add(1, Ordering::Relaxed);
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
    scheduler: ConfigSchedulerPtr,
) {
    drop(unsafe { Box::from_raw(scheduler.cast::<u8>()) });
    with(|f| f.schedulers_deleted += 1);
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
    _: ConfigEnvoyPtr,
    callout_id_out: *mut u64,
    cluster_name: ModuleBuffer,
    headers: *mut ModuleHttpHeader,
    headers_size: usize,
    _: ModuleBuffer,
    _: u64,
) -> u32 {
    let cluster = String::from_utf8_lossy(&unsafe { bytes(cluster_name) }).into_owned();
    let text = |p: *const u8, n: usize| {
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p, n) }).into_owned()
    };
    let hs: Vec<(String, String)> = unsafe { std::slice::from_raw_parts(headers, headers_size) }
        .iter()
        .map(|h| {
            (
                text(h.key_ptr, h.key_length),
                text(h.value_ptr, h.value_length),
            )
        })
        .collect();
    with(|f| {
        f.callouts.push((cluster, hs));
        unsafe { *callout_id_out = f.callouts.len() as u64 };
    });
    0
}
