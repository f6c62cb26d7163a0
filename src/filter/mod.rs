//! The filter's request and response logic, against the [`Host`] trait.
//!
//! `crate::abi` implements [`Host`] with the proxy-wasm ABI and forwards Envoy's callbacks to
//! [`Root`] and [`Stream`]; the unit tests (`fake.rs`, `tests.rs`) run the same code against an
//! in-memory host. Nothing here touches the proxy-wasm ABI.
//!
//! [`Root::on_configure`] compiles the configuration and defines every metric once; per request,
//! [`Stream`] asks the plan for a decision, writes headers and counts. A plugin carrying several
//! services (`{"services": [...]}`, or one service with `match`) keeps one `Service` per service
//! and the [`crate::routing::matcher::Matcher`]; a stream picks its service at `on_request_headers` (one
//! `:authority` read, one `:path` read only when some service has path prefixes), and a request
//! no service claims goes on exactly as it came, counted once in `canary_unmatched_total`. Failure policy on the
//! request path: a header that cannot be read counts as absent (the request falls through to the
//! next source, then to the default version); a header or metric that cannot be written is logged
//! and the request continues.
//!
//! Counter increments are batched in the VM ([`Tally`](crate::metrics::Tally)) and handed to
//! the host every `metrics_flush_ms` (the root's tick), when the root is done, and when a new
//! configuration replaces the plan; a stream that outlives its root then counts straight into
//! the host.
//!
//! Response bodies are observed, never held: each chunk is copied (up to `max_body_bytes`) while
//! Envoy streams it on unchanged, and JSON rules run on the copy once the body is complete, or
//! as soon as every rule's value is in the copy (tried on the first chunk, then each time the copy
//! has grown eightfold; the copy stops).

use crate::metrics::MetricKind;
use crate::routing::cookies::ID_BYTES;

mod brake;
mod instance;
mod pool;
mod root;
mod service;
mod stream;

pub use root::Root;
pub use service::{observed_value, FILTER_STATE_KEY};
pub use stream::{Stream, ATTEMPT_COUNT_HEADER};

#[cfg(test)]
mod fake;
#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod services_tests;
#[cfg(test)]
mod tests;

/// A host call did not succeed; the raw proxy-wasm status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub u32);

/// proxy-wasm `CasMismatch`: a shared-data write lost the race.
pub const CAS_MISMATCH: HostError = HostError(8);

/// Which header map a call reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Map {
    Request,
    Response,
    /// The response trailers (read for gRPC's `grpc-status`).
    ResponseTrailers,
    /// The headers of the answer to an HTTP call (the pool's query), while it is delivered.
    HttpCallResponse,
}

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// What the filter needs from its host: every call it makes, one method each. Envoy's
/// implementation is `crate::abi::Envoy` (one ABI call per method); the unit tests use an
/// in-memory fake. Methods take `&self`: host state lives outside the VM.
pub trait Host {
    /// The first value of a header, `Ok(None)` when absent.
    fn header(&self, map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// The whole header map in the proxy-wasm wire format (decode with [`crate::formats::headers::pairs`]).
    fn header_map(&self, map: Map) -> Result<Vec<u8>, HostError>;
    /// Replaces every value of a header with one value.
    fn set_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Adds one more value to a header.
    fn add_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Removes every value of a header (absent is not an error).
    fn remove_header(&self, map: Map, name: &str) -> Result<(), HostError>;
    /// The cluster the router sent the request to (Envoy's `xds.cluster_name`), `Ok(None)` when
    /// there is none (e.g. a local reply).
    fn cluster_name(&self) -> Result<Option<Vec<u8>>, HostError>;
    /// Writes this stream's filter state `key` (Envoy stores it as `wasm.<key>`, readable by
    /// access logs and tracing custom tags as `%FILTER_STATE(wasm.<key>:PLAIN)%`).
    fn set_filter_state(&self, key: &str, value: &[u8]) -> Result<(), HostError>;
    /// The first `size` bytes of the response body chunk being delivered.
    fn response_body(&self, size: usize) -> Result<Vec<u8>, HostError>;
    /// The plugin configuration, whole.
    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError>;
    /// A VM environment variable (for `override.tokens_env`).
    fn env(&self, name: &str) -> Option<String>;
    /// 128 unpredictable bits, `None` when the host has no randomness.
    fn random_id(&self) -> Option<[u8; ID_BYTES]>;
    /// Defines (or finds) a metric; returns its id.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    /// Adds to a counter.
    fn increment_metric(&self, id: u32, offset: i64) -> Result<(), HostError>;
    /// Sets a gauge or records a histogram value.
    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError>;
    /// A metric's current value: for a counter, its total over every worker VM of this Envoy
    /// (what they have flushed).
    fn metric(&self, id: u32) -> Result<u64, HostError>;
    /// A shared-data entry (shared by the worker VMs of this Envoy with the same `vm_id`) and its
    /// CAS token; `Ok(None)` when absent.
    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError>;
    /// Writes a shared-data entry if its CAS token is still `cas` (0: whatever it is);
    /// `Err(CAS_MISMATCH)` when another VM wrote it in between.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError>;
    /// Calls the root's `on_tick` every `period_ms` (0 stops the ticks).
    fn set_tick_period(&self, period_ms: u32) -> Result<(), HostError>;
    /// Whether counts are batched in the filter and handed over on ticks (`metrics_flush_ms`):
    /// worth it where a host call is a VM crossing (proxy-wasm). A host whose calls are plain
    /// function calls (the native build) counts straight into the host.
    fn batches(&self) -> bool {
        true
    }
    /// The host's clock: milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Sends an HTTP request (no body) to `cluster`, answered within `timeout_ms`; the answer
    /// reaches the root's [`Root::on_http_call_response`] with the returned token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError>;
    /// Up to `size` bytes of the body of the HTTP call's answer being delivered.
    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError>;
    /// Writes one log line.
    fn log(&self, level: Level, message: &str);
}
