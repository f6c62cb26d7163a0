//! The proxy-wasm shell: the only module that talks to the host. It compiles the configuration and
//! defines every metric once in `on_configure`; per request it asks the pure core for a decision,
//! writes headers and counts.
//!
//! Host calls go through [`crate::host`], which turns every host status into a `Result` (the SDK's
//! own calls panic on unexpected statuses, and a panic traps the VM). Failure policy on the
//! request path: a header that cannot be read counts as absent (the request falls through to the
//! next source, then to the default version); a header or metric that cannot be written is logged
//! and the request continues.
//!
//! Response bodies are observed, never held: each chunk is copied (up to `max_body_bytes`) while
//! Envoy streams it on unchanged, and JSON rules run on the copy once the body is complete.

use crate::assign::{UpstreamCookie, ID_BYTES};
use crate::business::{body_gate, Outcome, Place, SkipReason};
use crate::decision::{Decision, RequestView};
use crate::host;
use crate::metrics::{Catalogue, Tally};
use crate::plan::Plan;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::cell::Cell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { active: None }) });
}}

/// Envoy's `xds.cluster_name` attribute (the routed cluster), in the property ABI's encoding.
const CLUSTER_NAME: &[u8] = b"xds\0cluster_name\0";

/// A compiled plan and its metrics.
struct Active {
    plan: Plan,
    /// Every series of the plan as a slot: an index into `ids` and `tally`.
    metrics: Catalogue<usize>,
    /// Envoy's metric id of each slot.
    ids: Vec<u32>,
    /// Counter increments not yet handed to Envoy.
    tally: Tally,
    /// True while the root context flushes `tally` on its ticks; false when
    /// `metrics_flush_ms` is 0 and once the root context is done (a stream that outlives its
    /// root context then increments Envoy's counters itself).
    batching: Cell<bool>,
}

struct Root {
    active: Option<Rc<Active>>,
}

impl Context for Root {
    /// Envoy is done with this plugin instance (a new configuration replaced it, or the VM stops):
    /// nothing pending may be lost, and streams still draining count on their own.
    fn on_done(&mut self) -> bool {
        if let Some(a) = &self.active {
            a.retire();
        }
        true
    }
}

impl Active {
    /// Defines every metric of the plan (created at zero) and sets the weight gauges.
    fn new(plan: Plan) -> Result<Active, String> {
        let mut ids = Vec::new();
        let metrics = Catalogue::for_plan(&plan).try_map(|m| {
            let id = host::define_metric(m.kind, &m.name)
                .map_err(|e| format!("cannot define {}: {e:?}", m.name))?;
            ids.push(id);
            Ok::<usize, String>(ids.len() - 1)
        })?;
        for (slot, v) in metrics.weight.iter().zip(&plan.versions) {
            let id = ids.get(*slot).copied().unwrap_or_default();
            host::record_metric(id, u64::from(v.weight))
                .map_err(|e| format!("cannot set the weight of {}: {e:?}", v.name))?;
        }
        Ok(Active {
            batching: Cell::new(plan.metrics_flush_ms > 0),
            tally: Tally::new(ids.len()),
            plan,
            metrics,
            ids,
        })
    }

    /// Hands every pending increment to Envoy.
    fn flush(&self) {
        for (slot, n) in self.tally.drain() {
            if let Some(&id) = self.ids.get(slot) {
                increment_now(id, n);
            }
        }
    }

    /// Flushes, and sends every later increment straight to Envoy.
    fn retire(&self) {
        self.batching.set(false);
        self.flush();
    }

    /// Adds to a counter: in the tally while batching, else at once.
    fn increment(&self, slot: Option<&usize>, by: u64) {
        let Some(&slot) = slot else { return };
        if by == 0 || (self.batching.get() && self.tally.add(slot, by)) {
            return;
        }
        if let Some(&id) = self.ids.get(slot) {
            increment_now(id, by);
        }
    }

    /// Applies a rule's outcome to the version's metrics.
    fn apply(&self, version: usize, rule: usize, outcome: Outcome) {
        let m = &self.metrics;
        match outcome {
            Outcome::Nothing => {}
            Outcome::Count => self.increment(m.business(version, rule), 1),
            Outcome::Add(n) => {
                self.increment(m.business(version, rule), n);
                // Saturating: a wrapped sum of squares would be a wrong variance.
                let square = u64::try_from(u128::from(n) * u128::from(n)).unwrap_or(u64::MAX);
                self.increment(m.squares(version, rule), square);
            }
            Outcome::Record(n) => {
                if let Some(&id) = m.business(version, rule).and_then(|s| self.ids.get(*s)) {
                    warn_on_error("record", "histogram", host::record_metric(id, n));
                }
            }
            Outcome::Invalid => self.increment(m.invalid(version, rule), 1),
        }
    }

    fn skipped(&self, version: usize, reason: SkipReason) {
        self.increment(self.metrics.skipped(version, reason), 1);
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log::info!("sticky-canary {} VM started", crate::VERSION);
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match host::buffer(BufferType::PluginConfiguration) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::error!("sticky-canary: cannot read the plugin configuration: {e:?}");
                return false;
            }
        };
        let plan = match Plan::from_json_with_env(&bytes, &|name| std::env::var(name).ok()) {
            Ok(plan) => plan,
            Err(e) => {
                // One line naming the field path and the reason; Envoy then refuses the filter.
                log::error!("sticky-canary: invalid configuration: {e}");
                return false;
            }
        };
        let active = match Active::new(plan) {
            Ok(a) => a,
            Err(e) => {
                log::error!("sticky-canary: {e}");
                return false;
            }
        };
        if let Err(e) = host::set_tick_period(active.plan.metrics_flush_ms) {
            // Without ticks nothing would flush: count straight into Envoy instead.
            log::warn!("sticky-canary: no timer ({e:?}); counters are updated per request");
            active.batching.set(false);
        }
        log::info!(
            "sticky-canary {}: {}",
            crate::VERSION,
            active.plan.summary()
        );
        for w in &active.plan.warnings {
            log::warn!("sticky-canary: {w}");
        }
        // A reconfigured root context hands over what the previous plan counted.
        if let Some(previous) = self.active.replace(Rc::new(active)) {
            previous.retire();
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(a) = &self.active {
            a.flush();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK panics on None. Without a plan (cannot happen after a successful
        // configure) the stream passes through untouched.
        Some(Box::new(Stream {
            active: self.active.clone(),
            decision: None,
            served: 0,
            status: 0,
            body: Body::Off,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// What happens to the response body of this stream.
enum Body {
    /// Not examined.
    Off,
    /// Copying chunks for JSON rules.
    Capturing(Vec<u8>),
    /// Examined or skipped; nothing more to do.
    Done,
}

struct Stream {
    active: Option<Rc<Active>>,
    /// The decision for this request, for the response headers and metrics.
    decision: Option<Decision>,
    /// The version whose cluster served the response (see `on_http_response_headers`).
    served: usize,
    /// The response status.
    status: u16,
    body: Body,
}

impl Context for Stream {}

/// Request headers through the host, read on demand. A failed read counts as an absent header.
struct HostRequest;

impl RequestView for HostRequest {
    type Value = Vec<u8>;

    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        host::header(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn get_all(&mut self, name: &str) -> Vec<Vec<u8>> {
        let map = host::header_map(MapType::HttpRequestHeaders).unwrap_or_default();
        crate::headers::pairs(&map)
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.to_vec())
            .collect()
    }

    fn random_id(&mut self) -> Option<[u8; ID_BYTES]> {
        let id = host::random_id();
        if id.is_none() {
            log::warn!(
                "sticky-canary: no randomness for a new session id; using the default version"
            );
        }
        id
    }
}

fn warn_on_error(what: &str, name: &str, result: Result<(), host::HostError>) {
    if let Err(e) = result {
        log::warn!("sticky-canary: could not {what} {name}: {e:?}");
    }
}

fn set_header(map: MapType, name: &str, value: &[u8]) {
    warn_on_error("set", name, host::set_header(map, name, value));
}

/// The response headers the filter reads. When rules need more than `:status`, the whole map is
/// read with one host call (a host call costs more than scanning a dozen headers in the VM);
/// otherwise, or if that read fails, each header is read on its own.
struct ResponseHeaders(Option<Vec<u8>>);

impl ResponseHeaders {
    fn read(whole_map: bool) -> Self {
        Self(
            whole_map
                .then(|| host::header_map(MapType::HttpResponseHeaders).ok())
                .flatten(),
        )
    }

    /// Calls `f` with the first value of `name` (lowercase), as Envoy's single-header read does.
    fn with<R>(&self, name: &str, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        match &self.0 {
            Some(map) => f(crate::headers::pairs(map)
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v)),
            None => f(host::header(MapType::HttpResponseHeaders, name)
                .ok()
                .flatten()
                .as_deref()),
        }
    }
}

fn increment_now(id: u32, by: u64) {
    // Envoy takes an i64 offset; a u64 sum above i64::MAX is added in two steps.
    let mut left = by;
    while left > 0 {
        let step = left.min(i64::MAX as u64);
        if let Err(e) = host::increment_metric(id, step as i64) {
            log::warn!("sticky-canary: could not increment metric {id}: {e:?}");
            return;
        }
        left -= step;
    }
}

impl Stream {
    /// Runs the JSON rules on a complete body copy.
    fn finish_body(&mut self) {
        let Body::Capturing(body) = std::mem::replace(&mut self.body, Body::Done) else {
            return;
        };
        let Some(active) = &self.active else {
            return;
        };
        let v = self.served;
        let mut malformed = false;
        for (i, rule) in active.plan.business.rules.iter().enumerate() {
            if !matches!(rule.place, Place::Json(_)) || !rule.status.matches(self.status) {
                continue;
            }
            match rule.evaluate_json(&body) {
                Ok(outcome) => active.apply(v, i, outcome),
                Err(_) => malformed = true,
            }
        }
        if malformed {
            active.skipped(v, SkipReason::Malformed);
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(active) = &self.active else {
            return Action::Continue;
        };
        let plan = &active.plan;
        let decision = plan.decide(&mut HostRequest);
        self.decision = Some(decision);
        active.increment(active.metrics.request(decision.version, decision.reason), 1);
        let version = plan.version_name(decision.version);
        let request = MapType::HttpRequestHeaders;
        // The QA override headers never reach the upstream, whatever the outcome.
        if let Some(o) = &plan.override_ {
            warn_on_error("remove", &o.header, host::remove_header(request, &o.header));
            warn_on_error(
                "remove",
                &o.token_header,
                host::remove_header(request, &o.token_header),
            );
        }
        // The application sees the minted session id as if the client had sent it.
        if let (Some(assign), Some(id)) = (&plan.assign, &decision.minted) {
            let existing = HostRequest.get_all("cookie");
            match assign.upstream_cookie(&existing, id) {
                UpstreamCookie::Set(v) => set_header(request, "cookie", &v),
                UpstreamCookie::Add(v) => {
                    warn_on_error("add", "cookie", host::add_header(request, "cookie", &v));
                }
            }
        }
        // Replaces every value the client sent; Envoy clears the route cache on this write, so
        // the router matches the routes against the chosen version.
        set_header(request, &plan.route_header, version.as_bytes());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        let Some(decision) = self.decision else {
            return Action::Continue;
        };
        let plan = &active.plan;
        // Attribute the response to the version whose cluster served it. It is the decision's
        // version unless the route table sent the cohort elsewhere (e.g. a rollout controller
        // dropping the canary header match sends it to stable).
        let v = host::property(CLUSTER_NAME)
            .ok()
            .flatten()
            .and_then(|c| plan.version_of_cluster(&c))
            .unwrap_or(decision.version);
        self.served = v;
        let headers = ResponseHeaders::read(plan.business.reads_headers());
        self.status = headers
            .with(":status", |s| std::str::from_utf8(s?).ok()?.parse().ok())
            .unwrap_or(0);
        active.increment(active.metrics.response(v, self.status), 1);

        for (i, rule) in plan.business.rules.iter().enumerate() {
            if let Place::Header(name) = &rule.place {
                if rule.status.matches(self.status) {
                    active.apply(v, i, headers.with(name, |h| rule.evaluate(h)));
                }
            }
        }
        // Body rules: copy the body only when one applies, it is JSON, uncompressed, bounded.
        if !end_of_stream && plan.business.wants_body(self.status) {
            let max = plan.business.max_body_bytes;
            let gate = headers.with("content-type", |t| {
                headers.with("content-encoding", |e| {
                    headers.with("content-length", |l| body_gate(t, e, l, max))
                })
            });
            self.body = match gate {
                Ok(()) => Body::Capturing(Vec::new()),
                Err(reason) => {
                    active.skipped(v, reason);
                    Body::Done
                }
            };
        }

        let response = MapType::HttpResponseHeaders;
        set_header(
            response,
            &plan.response_header,
            plan.version_name(v).as_bytes(),
        );
        if let Some(h) = &plan.reason_header {
            set_header(response, h, decision.reason.as_str().as_bytes());
        }
        if let (Some(assign), Some(id)) = (&plan.assign, &decision.minted) {
            let cookie = assign.set_cookie(id);
            warn_on_error(
                "add",
                "set-cookie",
                host::add_header(response, "set-cookie", cookie.as_bytes()),
            );
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let v = self.served;
        if let (Body::Capturing(buf), Some(active)) = (&mut self.body, &self.active) {
            if buf.len().saturating_add(body_size) > active.plan.business.max_body_bytes {
                active.skipped(v, SkipReason::TooLarge);
                self.body = Body::Done;
            } else if body_size > 0 {
                match host::buffer_range(BufferType::HttpResponseBody, 0, body_size) {
                    // The first chunk (often the whole body) is kept as the host handed it.
                    Ok(chunk) if buf.is_empty() => *buf = chunk,
                    Ok(chunk) => buf.extend_from_slice(&chunk),
                    Err(_) => {
                        active.skipped(v, SkipReason::Incomplete);
                        self.body = Body::Done;
                    }
                }
            }
        }
        if end_of_stream {
            self.finish_body();
        }
        // Always stream on: the client gets the body exactly as the upstream sent it.
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.finish_body();
        Action::Continue
    }

    fn on_log(&mut self) {
        // A body still being copied never completed (reset, client abort).
        if let (Body::Capturing(_), Some(active)) = (&self.body, &self.active) {
            active.skipped(self.served, SkipReason::Incomplete);
            self.body = Body::Done;
        }
    }
}
