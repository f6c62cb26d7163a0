//! [`Native`]: the filter's [`Host`] over Envoy's dynamic-module callbacks, one callback per
//! method; process memory where proxy-wasm has host services (shared data, metric reads).
#![allow(unsafe_code)]

use crate::abi::{
    self, header_type, log_level, EnvoyBuffer, EnvoyHttpHeader, ModuleBuffer, ModuleHttpHeader,
};
use crate::process;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use sticky_canary::filter::{Host, HostError, Level, Map};
use sticky_canary::metrics::MetricKind;
use sticky_canary::routing::cookies::ID_BYTES;

/// Statuses of a failed call (the filter logs them; their numbers follow proxy-wasm's).
const NOT_FOUND: HostError = HostError(1);
const BAD_ARGUMENT: HostError = HostError(2);
const UNIMPLEMENTED: HostError = HostError(12);

/// A metric Envoy defined for this configuration.
#[derive(Clone)]
pub struct Metric {
    pub kind: MetricKind,
    /// Envoy's id for it, valid with the configuration that defined it.
    pub envoy_id: usize,
    /// Its value in this process (every worker, every configuration), for [`Host::metric`].
    pub total: Arc<AtomicU64>,
}

/// The metrics of one configuration, by the filter's id (their index), and by name.
#[derive(Clone, Default)]
pub struct Catalogue {
    pub metrics: Vec<Metric>,
    pub by_name: HashMap<String, u32>,
}

thread_local! {
    /// The Envoy filter of the hook running on this thread (null outside a stream's hooks).
    static CURRENT: Cell<abi::FilterEnvoyPtr> = const { Cell::new(std::ptr::null_mut()) };
    /// A request header was written since the request hook began (the route must be re-picked).
    static REQUEST_WRITTEN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as the hook of the Envoy filter `filter` (the one the header calls reach).
pub fn within<R>(filter: abi::FilterEnvoyPtr, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|c| c.replace(filter));
    let r = f();
    CURRENT.with(|c| c.set(previous));
    r
}

/// Whether a request header was written since the last call (and resets it).
pub fn take_request_written() -> bool {
    REQUEST_WRITTEN.with(|w| w.replace(false))
}

fn current() -> Result<abi::FilterEnvoyPtr, HostError> {
    let filter = CURRENT.with(Cell::get);
    if filter.is_null() {
        Err(BAD_ARGUMENT)
    } else {
        Ok(filter)
    }
}

fn header_type_of(map: Map) -> Result<u32, HostError> {
    match map {
        Map::Request => Ok(header_type::REQUEST_HEADER),
        Map::Response => Ok(header_type::RESPONSE_HEADER),
        Map::ResponseTrailers => Ok(header_type::RESPONSE_TRAILER),
        // Not a stream's: the answer `judge.rs` holds while it is delivered.
        Map::HttpCallResponse => Err(BAD_ARGUMENT),
    }
}

/// The answer to the pool's query, while the root reads it.
pub struct CallAnswer {
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// The ABI's header writes: `set_header` replaces every value (a null value removes the
/// header), `add_header` appends one.
type HeaderWrite =
    unsafe extern "C" fn(abi::FilterEnvoyPtr, u32, ModuleBuffer, ModuleBuffer) -> bool;

/// Writes `name` into the running stream's `map` with `callback` (Envoy's answer: whether it
/// could) and marks the map written.
fn write_header(
    callback: HeaderWrite,
    map: Map,
    name: &str,
    value: ModuleBuffer,
) -> Result<bool, HostError> {
    let filter = current()?;
    let ty = header_type_of(map)?;
    // SAFETY: the running hook's filter; the name's and the value's buffers outlive the call.
    let ok = unsafe { callback(filter, ty, ModuleBuffer::of(name.as_bytes()), value) };
    written(map);
    Ok(ok)
}

fn written(map: Map) {
    if map == Map::Request {
        REQUEST_WRITTEN.with(|w| w.set(true));
    }
}

/// The tick the root asked for; the worker runs it from its next hook once it is due (no
/// worker timer exists in the ABI: see `worker.rs`).
#[derive(Default)]
pub struct Tick {
    pub period_ms: Cell<u32>,
    pub next_ms: Cell<u64>,
}

/// The filter's host in one thread: Envoy's configuration pointer (metrics, callouts), the
/// metric catalogue, and whose root it serves: the main thread's (it defines the metrics in
/// `on_http_filter_config_new` and sends the pool's query) or a worker's (it looks them up).
#[derive(Clone)]
pub struct Native(pub Rc<State>);

pub struct State {
    /// Envoy's configuration (a worker whose configuration Envoy destroyed is moved to the live
    /// one before it retires: see `worker.rs`).
    pub config: Cell<abi::ConfigEnvoyPtr>,
    pub json: Arc<[u8]>,
    pub catalogue: std::cell::RefCell<Catalogue>,
    /// The main thread's root (see `judge.rs`), not a worker's.
    pub main: bool,
    pub tick: Tick,
    /// The pool's answer being delivered (main thread only).
    pub answer: std::cell::RefCell<Option<CallAnswer>>,
}

impl Native {
    /// Moves this host to another configuration's metrics (same names, Envoy's ids of that
    /// configuration; a name it does not have can no longer be written).
    pub fn rebind(&self, config: abi::ConfigEnvoyPtr, to: &Catalogue) {
        self.0.config.set(config);
        let mut catalogue = self.0.catalogue.borrow_mut();
        let Catalogue { metrics, by_name } = &mut *catalogue;
        for (name, &id) in by_name.iter() {
            if let Some(m) = metrics.get_mut(id as usize) {
                m.envoy_id = to
                    .by_name
                    .get(name)
                    .and_then(|&i| to.metrics.get(i as usize))
                    .map_or(usize::MAX, |n| n.envoy_id);
            }
        }
    }

    fn metric_op(&self, id: u32) -> Result<Metric, HostError> {
        let catalogue = self.0.catalogue.borrow();
        catalogue.metrics.get(id as usize).cloned().ok_or(NOT_FOUND)
    }

    fn call(&self, op: abi::ConfigMetricOp, envoy_id: usize, value: u64) -> Result<(), HostError> {
        // SAFETY: the configuration pointer is alive while any of its filters is (Envoy keeps
        // the configuration for each of them); no labels.
        let r = unsafe {
            op(
                self.0.config.get(),
                envoy_id,
                std::ptr::null_mut(),
                0,
                value,
            )
        };
        if r == abi::METRICS_SUCCESS {
            Ok(())
        } else {
            Err(HostError(r))
        }
    }
}

impl Host for Native {
    fn header(&self, map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        if map == Map::HttpCallResponse {
            let answer = self.0.answer.borrow();
            let a = answer.as_ref().ok_or(NOT_FOUND)?;
            return Ok(a
                .headers
                .iter()
                .find(|(k, _)| k.as_slice() == name.as_bytes())
                .map(|(_, v)| v.clone()));
        }
        let filter = current()?;
        let mut value = EnvoyBuffer::NULL;
        let mut count = 0usize;
        // SAFETY: the filter pointer is the running hook's; the out-pointers are valid locals.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                filter,
                header_type_of(map)?,
                ModuleBuffer::of(name.as_bytes()),
                &mut value,
                0,
                &mut count,
            )
        };
        if !ok || count == 0 || value.ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: Envoy's buffer is valid until the end of the hook or the next header write.
        Ok(Some(unsafe { value.to_vec() }))
    }

    fn header_map(&self, map: Map) -> Result<Vec<u8>, HostError> {
        if map == Map::HttpCallResponse {
            let answer = self.0.answer.borrow();
            let a = answer.as_ref().ok_or(NOT_FOUND)?;
            let pairs: Vec<(&[u8], &[u8])> = a
                .headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            return Ok(sticky_canary::formats::headers::serialize(&pairs));
        }
        let filter = current()?;
        let ty = header_type_of(map)?;
        // SAFETY: as in `header`; the array has the room Envoy was asked about.
        let size = unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(filter, ty) };
        let mut headers = vec![EnvoyHttpHeader::NULL; size];
        if size > 0
            && !unsafe {
                abi::envoy_dynamic_module_callback_http_get_headers(
                    filter,
                    ty,
                    headers.as_mut_ptr(),
                )
            }
        {
            return Err(NOT_FOUND);
        }
        let bytes = |ptr: *const u8, len: usize| -> &[u8] {
            if ptr.is_null() || len == 0 {
                &[]
            } else {
                // SAFETY: Envoy's header bytes, valid until the end of the hook.
                unsafe { std::slice::from_raw_parts(ptr, len) }
            }
        };
        let pairs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|h| {
                (
                    bytes(h.key_ptr, h.key_length),
                    bytes(h.value_ptr, h.value_length),
                )
            })
            .collect();
        Ok(sticky_canary::formats::headers::serialize(&pairs))
    }

    fn set_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        write_header(
            abi::envoy_dynamic_module_callback_http_set_header,
            map,
            name,
            ModuleBuffer::of(value),
        )?
        .then_some(())
        .ok_or(NOT_FOUND)
    }

    fn add_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        write_header(
            abi::envoy_dynamic_module_callback_http_add_header,
            map,
            name,
            ModuleBuffer::of(value),
        )?
        .then_some(())
        .ok_or(NOT_FOUND)
    }

    fn remove_header(&self, map: Map, name: &str) -> Result<(), HostError> {
        // A null value removes the header; absent is not an error (the callback answers false
        // for it).
        write_header(
            abi::envoy_dynamic_module_callback_http_set_header,
            map,
            name,
            ModuleBuffer::NULL,
        )
        .map(|_| ())
    }

    fn cluster_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        let filter = current()?;
        let mut name = EnvoyBuffer::NULL;
        // SAFETY: the running hook's filter and a valid out-pointer.
        let ok =
            unsafe { abi::envoy_dynamic_module_callback_http_get_cluster_name(filter, &mut name) };
        // SAFETY: Envoy's buffer, valid during the hook.
        Ok(ok.then(|| unsafe { name.to_vec() }))
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        let filter = current()?;
        // The key the wasm build's values have (proxy-wasm stores them under `wasm.`), so that
        // one access-log format (`%FILTER_STATE(wasm.sticky_canary:PLAIN)%`) serves both builds.
        let key = format!("wasm.{key}");
        // SAFETY: the running hook's filter; the buffers outlive the call.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                filter,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value),
            )
        };
        ok.then_some(()).ok_or(NOT_FOUND)
    }

    fn response_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        let filter = current()?;
        let ty = abi::RECEIVED_RESPONSE_BODY;
        // SAFETY: the running (response body) hook's filter; the array has the room asked for.
        let count =
            unsafe { abi::envoy_dynamic_module_callback_http_get_body_chunks_size(filter, ty) };
        let mut chunks = vec![EnvoyBuffer::NULL; count];
        if count > 0
            && !unsafe {
                abi::envoy_dynamic_module_callback_http_get_body_chunks(
                    filter,
                    ty,
                    chunks.as_mut_ptr(),
                )
            }
        {
            return Err(NOT_FOUND);
        }
        let mut out = Vec::with_capacity(size);
        for c in chunks {
            let room = size.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            if c.ptr.is_null() {
                continue;
            }
            // SAFETY: Envoy's chunk, valid during the hook.
            let bytes = unsafe { std::slice::from_raw_parts(c.ptr, c.length) };
            out.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        Ok(out)
    }

    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError> {
        Ok(self.0.json.to_vec())
    }

    /// The Envoy process's environment (the wasm build reads the VM's, which Istio and the
    /// shipped configs fill from the process's).
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn random_id(&self) -> Option<[u8; ID_BYTES]> {
        let mut id = [0u8; ID_BYTES];
        getrandom::fill(&mut id).ok().map(|()| id)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        if let Some(&id) = self.0.catalogue.borrow().by_name.get(name) {
            return Ok(id);
        }
        if !self.0.main {
            // A worker's configuration is the one the main thread compiled: same names.
            return Err(NOT_FOUND);
        }
        let define: abi::ConfigDefine = match kind {
            MetricKind::Counter => {
                abi::envoy_dynamic_module_callback_http_filter_config_define_counter
            }
            MetricKind::Gauge => abi::envoy_dynamic_module_callback_http_filter_config_define_gauge,
            MetricKind::Histogram => {
                abi::envoy_dynamic_module_callback_http_filter_config_define_histogram
            }
        };
        let mut envoy_id = 0usize;
        // SAFETY: called from `on_http_filter_config_new` (main thread) with its configuration
        // pointer; no labels; a valid out-pointer.
        let r = unsafe {
            define(
                self.0.config.get(),
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut envoy_id,
            )
        };
        if r != abi::METRICS_SUCCESS {
            return Err(HostError(r));
        }
        let mut catalogue = self.0.catalogue.borrow_mut();
        let id = u32::try_from(catalogue.metrics.len()).map_err(|_| BAD_ARGUMENT)?;
        catalogue.metrics.push(Metric {
            kind,
            envoy_id,
            total: process::total(name),
        });
        catalogue.by_name.insert(name.to_owned(), id);
        Ok(id)
    }

    fn increment_metric(&self, id: u32, offset: i64) -> Result<(), HostError> {
        let m = self.metric_op(id)?;
        let by = offset.unsigned_abs();
        match (m.kind, offset >= 0) {
            (MetricKind::Counter, true) => {
                m.total.fetch_add(by, Ordering::Relaxed);
                self.call(
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_counter,
                    m.envoy_id,
                    by,
                )
            }
            (MetricKind::Gauge, true) => {
                m.total.fetch_add(by, Ordering::Relaxed);
                self.call(
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_gauge,
                    m.envoy_id,
                    by,
                )
            }
            (MetricKind::Gauge, false) => {
                m.total.fetch_sub(by, Ordering::Relaxed);
                self.call(
                    abi::envoy_dynamic_module_callback_http_filter_config_decrement_gauge,
                    m.envoy_id,
                    by,
                )
            }
            _ => Err(BAD_ARGUMENT),
        }
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        let m = self.metric_op(id)?;
        match m.kind {
            MetricKind::Gauge => {
                m.total.store(value, Ordering::Relaxed);
                self.call(
                    abi::envoy_dynamic_module_callback_http_filter_config_set_gauge,
                    m.envoy_id,
                    value,
                )
            }
            MetricKind::Histogram => self.call(
                abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value,
                m.envoy_id,
                value,
            ),
            MetricKind::Counter => Err(BAD_ARGUMENT),
        }
    }

    fn metric(&self, id: u32) -> Result<u64, HostError> {
        Ok(self.metric_op(id)?.total.load(Ordering::Relaxed))
    }

    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        Ok(process::shared_data(key))
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        if process::set_shared_data(key, value, cas) {
            Ok(())
        } else {
            Err(sticky_canary::filter::CAS_MISMATCH)
        }
    }

    fn set_tick_period(&self, period_ms: u32) -> Result<(), HostError> {
        self.0.tick.period_ms.set(period_ms);
        self.0
            .tick
            .next_ms
            .set(self.now_ms().saturating_add(u64::from(period_ms)));
        Ok(())
    }

    fn batches(&self) -> bool {
        false
    }

    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// A configuration-level callout (main thread only: the pool's query); the answer comes to
    /// `on_http_filter_config_http_callout_done`. Envoy's callout wants `host` where proxy-wasm
    /// takes `:authority` (the same header in Envoy's map: sending both would join them).
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        if !self.0.main {
            return Err(UNIMPLEMENTED);
        }
        let mut out: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::of(if *k == ":authority" { "host" } else { k }, v))
            .collect();
        let mut id = 0u64;
        // SAFETY: the main thread, the configuration's pointer; the buffers outlive the call.
        let r = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.0.config.get(),
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                out.as_mut_ptr(),
                out.len(),
                ModuleBuffer::of(&[]),
                u64::from(timeout_ms),
            )
        };
        if r != abi::CALLOUT_SUCCESS {
            return Err(HostError(r));
        }
        u32::try_from(id).map_err(|_| BAD_ARGUMENT)
    }

    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        let answer = self.0.answer.borrow();
        let a = answer.as_ref().ok_or(NOT_FOUND)?;
        Ok(a.body
            .get(..size.min(a.body.len()))
            .unwrap_or_default()
            .to_vec())
    }

    fn log(&self, level: Level, message: &str) {
        log(level, message);
    }
}

/// One line in Envoy's log (`[dynamic_modules]`).
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Info => log_level::INFO,
        Level::Warn => log_level::WARN,
        Level::Error => log_level::ERROR,
    };
    // SAFETY: the message outlives the call.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) };
}
