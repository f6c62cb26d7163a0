//! The event hooks Envoy calls (`envoy_dynamic_module_on_*`), each a thin forward to the
//! filter's [`Root`] and [`Stream`] — the same calls the wasm build's exports make. Every hook
//! catches a panic (none is reachable: the crate denies unwrap/expect/panic) and answers what a
//! request gets when the filter fails: `Continue`, untouched.
//!
//! Every HTTP-filter hook of the ABI is exported, those the filter has no use for as no-ops, so
//! that Envoy finds each symbol it looks up.
#![allow(unsafe_code)]

use crate::abi::{self, ConfigEnvoyPtr, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoyPtr, CONTINUE};
use crate::host::{self, Native};
use crate::judge::{self, Judge, Ticker};
use crate::worker::{self, Compiled, Worker};
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use sticky_canary::filter::{Level, Stream};

/// A stream's filter: its stream and the worker whose configuration it runs; `None` for a stream
/// that passes through untouched (no configuration on this thread: cannot happen after the main
/// thread accepted it, and a null answer would make Envoy close the stream).
struct Filter(Option<Active>);

struct Active {
    stream: Stream<Native>,
    worker: Rc<Worker>,
}

fn guarded<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The filter behind a module pointer handed out by `on_http_filter_new`.
///
/// # Safety
/// `ptr` is null or a pointer `on_http_filter_new` returned and `on_http_filter_destroy` has
/// not freed; Envoy calls a filter's hooks on its worker thread, one at a time.
unsafe fn filter<'a>(ptr: *const c_void) -> Option<&'a mut Active> {
    // SAFETY: the caller's contract.
    unsafe { (ptr as *mut Filter).as_mut() }?.0.as_mut()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr().cast()
}

/// Compiles the configuration on the main thread and defines every metric; null (Envoy refuses
/// the filter) with one log line naming the field path and the reason. The main thread's root
/// stays, to judge the brake on its ticker (`judge.rs`).
///
/// # Safety
/// Envoy's buffers are valid during the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy_ptr: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        // SAFETY: Envoy's buffers, valid during this call.
        let (name, json) = unsafe { (name.to_vec(), config.to_vec()) };
        let Some((compiled, host, root)) = judge::configure(config_envoy_ptr, &name, json) else {
            return std::ptr::null();
        };
        let period = host.0.tick.period_ms.get();
        let ptr: *const c_void = Box::into_raw(Box::new(Arc::new(compiled)))
            .cast_const()
            .cast();
        let ticker = (period > 0)
            .then(|| Ticker::start(config_envoy_ptr, period))
            .flatten();
        if period > 0 && ticker.is_none() {
            host::log(
                Level::Warn,
                "sticky-canary: no main-thread scheduler; the brake is not judged and the draining flows are published on requests only",
            );
        }
        judge::register(ptr as usize, Judge { host, root, ticker });
        ptr
    })
}

/// # Safety
/// `ptr` is what `on_http_filter_config_new` returned, freed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(ptr: *const c_void) {
    guarded((), || {
        if !ptr.is_null() {
            judge::unregister(ptr as usize);
            // SAFETY: the pointer came from `Box::into_raw` in `on_http_filter_config_new`.
            drop(unsafe { Box::from_raw(ptr as *mut Arc<Compiled>) });
        }
    })
}

/// A new stream on this worker's copy of the configuration; a stream that cannot have one
/// passes through (a filter that does nothing: Envoy closes a stream whose filter is null).
///
/// # Safety
/// `config_ptr` is a live configuration of `on_http_filter_config_new`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config_ptr: *const c_void,
    _filter_envoy_ptr: FilterEnvoyPtr,
) -> *const c_void {
    let active = catch_unwind(|| {
        // SAFETY: a live configuration (Envoy keeps it for each of its filters).
        let compiled = unsafe { (config_ptr as *const Arc<Compiled>).as_ref() };
        compiled.and_then(worker::worker).map(|worker| Active {
            stream: worker.root.stream(),
            worker,
        })
    });
    Box::into_raw(Box::new(Filter(active.ok().flatten())))
        .cast_const()
        .cast()
}

/// # Safety
/// See [`filter`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded(CONTINUE, || {
        // SAFETY: the caller's contract.
        let Some(f) = (unsafe { filter(filter_module_ptr) }) else {
            return CONTINUE;
        };
        host::within(filter_envoy_ptr, || {
            host::take_request_written();
            f.worker.learn_if_written();
            f.worker.tick_if_due();
            f.stream.on_request_headers();
            if host::take_request_written() {
                // The router matches the routes against the headers as they are now (proxy-wasm
                // clears the route cache on a header write; this ABI leaves it to the module).
                // SAFETY: the running hook's filter.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_clear_route_cache(filter_envoy_ptr)
                };
            }
        });
        CONTINUE
    })
}

/// # Safety
/// See [`filter`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guarded(CONTINUE, || {
        // SAFETY: the caller's contract.
        if let Some(f) = unsafe { filter(filter_module_ptr) } {
            host::within(filter_envoy_ptr, || {
                f.stream.on_response_headers(end_of_stream)
            });
        }
        CONTINUE
    })
}

/// Always streams on: the client gets the body exactly as the upstream sent it.
///
/// # Safety
/// See [`filter`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guarded(CONTINUE, || {
        // SAFETY: the caller's contract.
        if let Some(f) = unsafe { filter(filter_module_ptr) } {
            // SAFETY: the running hook's filter.
            let size = unsafe {
                abi::envoy_dynamic_module_callback_http_get_body_size(
                    filter_envoy_ptr,
                    abi::RECEIVED_RESPONSE_BODY,
                )
            };
            host::within(filter_envoy_ptr, || {
                f.stream.on_response_body(size, end_of_stream)
            });
        }
        CONTINUE
    })
}

/// # Safety
/// See [`filter`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: *const c_void,
) -> u32 {
    guarded(CONTINUE, || {
        // SAFETY: the caller's contract.
        if let Some(f) = unsafe { filter(filter_module_ptr) } {
            host::within(filter_envoy_ptr, || f.stream.on_response_trailers());
        }
        CONTINUE
    })
}

/// # Safety
/// See [`filter`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: *const c_void,
) {
    guarded((), || {
        // SAFETY: the caller's contract.
        if let Some(f) = unsafe { filter(filter_module_ptr) } {
            host::within(filter_envoy_ptr, || {
                f.stream.on_log();
                // What this stream changed (a flow set or seen) reaches the gauge once due.
                f.worker.tick_if_due();
            });
        }
    })
}

/// # Safety
/// `filter_module_ptr` is what `on_http_filter_new` returned, freed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(
    filter_module_ptr: *const c_void,
) {
    guarded((), || {
        if !filter_module_ptr.is_null() {
            // SAFETY: the pointer came from `Box::into_raw` in `on_http_filter_new`.
            drop(unsafe { Box::from_raw(filter_module_ptr as *mut Filter) });
        }
    })
}

/// The configuration's ticker posted a tick: the main thread's root judges the brake.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _: ConfigEnvoyPtr,
    config_ptr: *const c_void,
    _: u64,
) {
    guarded((), || judge::tick(config_ptr as usize))
}

/// The answer to the pool's query.
///
/// # Safety
/// Envoy's headers and chunks are valid for their sizes during the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _: ConfigEnvoyPtr,
    config_ptr: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    guarded((), || {
        // SAFETY: the caller's contract.
        unsafe {
            judge::answer(
                config_ptr as usize,
                callout_id,
                result == abi::CALLOUT_SUCCESS,
                headers,
                headers_size,
                body_chunks,
                body_chunks_size,
            )
        }
    })
}

// The hooks the filter has no use for: the request body and trailers stream on, per-route
// configuration is refused (the filter has none), and streams start no callout or schedule.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _: FilterEnvoyPtr,
    _: *const c_void,
    _: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _: FilterEnvoyPtr,
    _: *const c_void,
) -> u32 {
    CONTINUE
}

/// Per-route configuration: none exists (null refuses it, with a log line).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _: EnvoyBuffer,
    _: EnvoyBuffer,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        host::log(
            Level::Error,
            "sticky-canary: per-route configuration is not supported (configure the filter on the listener)",
        );
        std::ptr::null()
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _: FilterEnvoyPtr,
    _: *const c_void,
    _: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: FilterEnvoyPtr,
    _: *const c_void,
    _: u64,
    _: u32,
    _: *mut EnvoyHttpHeader,
    _: usize,
    _: *mut EnvoyBuffer,
    _: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: FilterEnvoyPtr,
    _: *const c_void,
    _: u64,
    _: *mut EnvoyHttpHeader,
    _: usize,
    _: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: FilterEnvoyPtr,
    _: *const c_void,
    _: u64,
    _: *const EnvoyBuffer,
    _: usize,
    _: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: FilterEnvoyPtr,
    _: *const c_void,
    _: u64,
    _: *mut EnvoyHttpHeader,
    _: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: FilterEnvoyPtr,
    _: *const c_void,
    _: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: FilterEnvoyPtr,
    _: *const c_void,
    _: u64,
    _: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _: ConfigEnvoyPtr,
    _: *const c_void,
    _: u64,
    _: *mut EnvoyHttpHeader,
    _: usize,
    _: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _: ConfigEnvoyPtr,
    _: *const c_void,
    _: u64,
    _: *const EnvoyBuffer,
    _: usize,
    _: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _: ConfigEnvoyPtr,
    _: *const c_void,
    _: u64,
    _: *mut EnvoyHttpHeader,
    _: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _: ConfigEnvoyPtr,
    _: *const c_void,
    _: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _: ConfigEnvoyPtr,
    _: *const c_void,
    _: u64,
    _: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: FilterEnvoyPtr,
    _: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: FilterEnvoyPtr,
    _: *const c_void,
) {
}

/// A local reply goes out as Envoy made it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _: FilterEnvoyPtr,
    _: *const c_void,
    _: u32,
    _: EnvoyBuffer,
    _: bool,
) -> u32 {
    CONTINUE
}
