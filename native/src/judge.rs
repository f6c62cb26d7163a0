//! The main thread's root of each configuration: the one that judges the brake (local and
//! pooled) for every worker of this Envoy, on a real timer.
//!
//! The dynamic-module ABI has no timer for an HTTP filter on a worker thread (its schedulers
//! post to a live stream, or to the main thread without a delay). So each configuration keeps
//! one root on the main thread, ticked by a [`Ticker`] (a module thread that sleeps the tick
//! period and posts to the configuration's main-thread scheduler): it judges on the counters of
//! every worker (process memory: `process.rs`), records trips in the shared table, and sends
//! the pool's query as a configuration-level HTTP callout. Worker roots follow (`worker.rs`):
//! they learn a recorded trip before their next decision.
#![allow(unsafe_code)]

use crate::abi::{self, ConfigEnvoyPtr, EnvoyBuffer, EnvoyHttpHeader};
use crate::host::{self, CallAnswer, Catalogue, Native, State, Tick};
use crate::worker::Compiled;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use sticky_canary::filter::{Level, Root};

/// The `filter_name` this module answers to.
pub const FILTER_NAME: &[u8] = b"sticky_canary";

/// A module thread that posts a tick to a configuration's main-thread scheduler every period.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    scheduler: usize,
}

impl Ticker {
    /// Starts ticking `config` every `period_ms`; `None` when Envoy gives no scheduler.
    pub fn start(config: ConfigEnvoyPtr, period_ms: u32) -> Option<Ticker> {
        // SAFETY: called on the main thread in `on_http_filter_config_new` with its pointer.
        let scheduler =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        if scheduler.is_null() {
            return None;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (flag, address) = (stop.clone(), scheduler as usize);
        let period = Duration::from_millis(u64::from(period_ms.max(1)));
        let thread = std::thread::Builder::new()
            .name("sticky-canary-tick".into())
            .spawn(move || loop {
                let (lock, wake) = &*flag;
                let stopped = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (stopped, _) = wake
                    .wait_timeout_while(stopped, period, |s| !*s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if *stopped {
                    return;
                }
                drop(stopped);
                // SAFETY: the scheduler lives until this thread is joined (`Drop`); a commit is
                // allowed from any thread.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                        address as abi::ConfigSchedulerPtr,
                        0,
                    )
                };
            })
            .ok();
        if thread.is_none() {
            // SAFETY: created above, never committed to.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler)
            };
            return None;
        }
        Some(Ticker {
            stop,
            thread,
            scheduler: address,
        })
    }
}

impl Drop for Ticker {
    /// Stops the thread at once (it waits on the condition variable) and joins it before the
    /// scheduler goes: no tick is posted after the configuration is destroyed.
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: the only committer has been joined.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                self.scheduler as abi::ConfigSchedulerPtr,
            )
        };
    }
}

/// A configuration's main-thread root and its ticker.
pub struct Judge {
    pub host: Native,
    pub root: Root<Native>,
    /// Dropped before the root (field order): no tick after the root is done.
    pub ticker: Option<Ticker>,
}

thread_local! {
    /// The main thread's judges, by the module pointer of their configuration.
    static JUDGES: RefCell<Vec<(usize, Judge)>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `judge` for the configuration `module_ptr`.
pub fn register(module_ptr: usize, judge: Judge) {
    JUDGES.with(|j| {
        if let Ok(mut j) = j.try_borrow_mut() {
            j.push((module_ptr, judge));
        }
    });
}

/// Drops the judge of a destroyed configuration: its ticker stops, its root is done.
pub fn unregister(module_ptr: usize) {
    let judge = JUDGES.with(|j| {
        let mut j = j.try_borrow_mut().ok()?;
        let i = j.iter().position(|(p, _)| *p == module_ptr)?;
        Some(j.remove(i).1)
    });
    if let Some(mut judge) = judge {
        drop(judge.ticker.take());
        judge.root.on_done();
    }
}

fn with<R>(module_ptr: usize, f: impl FnOnce(&Judge) -> R) -> Option<R> {
    JUDGES.with(|j| {
        let j = j.try_borrow().ok()?;
        j.iter()
            .find(|(p, _)| *p == module_ptr)
            .map(|(_, judge)| f(judge))
    })
}

/// A tick posted by the configuration's ticker.
pub fn tick(module_ptr: usize) {
    with(module_ptr, |judge| judge.root.on_tick());
}

/// The answer to the pool's query (a configuration-level callout): handed to the root as the
/// wasm build's `on_http_call_response` is.
///
/// # Safety
/// `headers` and `chunks` are null or valid for their sizes during the call (Envoy's promise).
pub unsafe fn answer(
    module_ptr: usize,
    callout_id: u64,
    ok: bool,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) {
    let mut pairs = Vec::new();
    let mut body = Vec::new();
    if ok {
        if !headers.is_null() {
            // SAFETY: the caller's contract.
            for h in unsafe { std::slice::from_raw_parts(headers, headers_size) } {
                // SAFETY: Envoy's header bytes, valid during the call.
                let (k, v) = unsafe {
                    (
                        EnvoyBuffer {
                            ptr: h.key_ptr,
                            length: h.key_length,
                        }
                        .to_vec(),
                        EnvoyBuffer {
                            ptr: h.value_ptr,
                            length: h.value_length,
                        }
                        .to_vec(),
                    )
                };
                pairs.push((k, v));
            }
        }
        if !chunks.is_null() {
            // SAFETY: the caller's contract.
            for c in unsafe { std::slice::from_raw_parts(chunks, chunks_size) } {
                // SAFETY: Envoy's chunk, valid during the call.
                body.extend_from_slice(&unsafe { c.to_vec() });
            }
        }
    }
    let Ok(token) = u32::try_from(callout_id) else {
        return;
    };
    with(module_ptr, |judge| {
        let (n, size) = (pairs.len(), body.len());
        *judge.host.0.answer.borrow_mut() = Some(CallAnswer {
            headers: pairs,
            body,
        });
        judge.root.on_http_call_response(token, n, size);
        *judge.host.0.answer.borrow_mut() = None;
    });
}

/// What the main thread does with a new configuration: the filter name checked, then the
/// configuration compiled by a root as every worker will, every metric defined. The root stays
/// (the brake's judge); `None` refuses the configuration (logged).
pub fn configure(
    config: abi::ConfigEnvoyPtr,
    name: &[u8],
    json: Vec<u8>,
) -> Option<(Compiled, Native, Root<Native>)> {
    if name != FILTER_NAME {
        host::log(
            Level::Error,
            &format!(
                "sticky-canary: filter_name {:?} is not one this module has (it has \"sticky_canary\")",
                String::from_utf8_lossy(name)
            ),
        );
        return None;
    }
    let json: Arc<[u8]> = json.into();
    let host = Native(Rc::new(State {
        config: std::cell::Cell::new(config),
        json: json.clone(),
        catalogue: RefCell::new(Catalogue::default()),
        main: true,
        tick: Tick::default(),
        answer: RefCell::new(None),
    }));
    let mut root = Root::new(host.clone());
    if !(root.on_vm_start() && root.on_configure()) {
        return None;
    }
    let catalogue = host.0.catalogue.borrow().clone();
    let compiled = Compiled {
        config: config as usize,
        json,
        catalogue,
    };
    Some((compiled, host, root))
}
