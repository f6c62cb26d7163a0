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
//! - `judge`: a configuration compiled on the main thread (the refusal, every metric defined) and
//!   its root there, which judges the brake on a ticker.
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
