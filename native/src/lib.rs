//! sticky-canary as an Envoy dynamic module: the same core as the wasm module (config, decision,
//! counting, the brake), behind a second thin adapter, for Envoy's dynamic-module ABI.
//!
//! `make build-native` writes `target/native/libsticky_canary.so`; Envoy loads it with
//! `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` and the HTTP filter `envoy.filters.http.dynamic_modules`
//! (`dynamic_module_config: {name: sticky_canary}`, `filter_name: sticky_canary`,
//! `filter_config`: a `google.protobuf.StringValue` holding the plugin's JSON document).
//!
//! - `abi`: the ABI's types and the callbacks the filter calls, written from Envoy's header.
//! - `host`: [`Host`](sticky_canary::filter::Host) over those callbacks.
//! - `process`: shared data and metric totals, in process memory.
//! - `worker`: a configuration and its copy in each worker thread.
//! - `judge`: the main thread's root of a configuration, which judges the brake on a ticker.
//! - `hooks`: the event hooks Envoy calls.

mod abi;
mod hooks;
mod host;
mod judge;
mod process;
mod worker;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use host::{Catalogue, Native, State, Tick};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use sticky_canary::filter::{Level, Root};

/// What the main thread does with a new configuration: the filter name checked, then the
/// configuration compiled by a root as every worker will, every metric defined. The root stays
/// (the brake's judge); `None` refuses the configuration (logged).
fn configure(
    config: abi::ConfigEnvoyPtr,
    name: &[u8],
    json: Vec<u8>,
) -> Option<(worker::Compiled, Native, Root<Native>)> {
    if name != hooks::FILTER_NAME {
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
    let compiled = worker::Compiled {
        config: config as usize,
        json,
        catalogue,
    };
    Some((compiled, host, root))
}
