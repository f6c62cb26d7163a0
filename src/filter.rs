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
use crate::config::Plan;
use crate::decision::{Decision, RequestView};
use crate::host;
use crate::metrics::Catalogue;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { active: None }) });
}}

/// Envoy's `xds.cluster_name` attribute (the routed cluster), in the property ABI's encoding.
const CLUSTER_NAME: &[u8] = b"xds\0cluster_name\0";

/// A compiled plan and the ids of its metrics.
struct Active {
    plan: Plan,
    metrics: Catalogue<u32>,
}

struct Root {
    active: Option<Rc<Active>>,
}

impl Context for Root {}

/// Defines every metric of the plan (created at zero) and sets the weight gauges.
fn define_metrics(plan: &Plan) -> Result<Catalogue<u32>, String> {
    let ids = Catalogue::for_plan(plan).try_map(|m| {
        host::define_metric(m.kind, &m.name).map_err(|e| format!("cannot define {}: {e:?}", m.name))
    })?;
    for (id, v) in ids.weight.iter().zip(&plan.versions) {
        host::record_metric(*id, u64::from(v.weight))
            .map_err(|e| format!("cannot set the weight of {}: {e:?}", v.name))?;
    }
    Ok(ids)
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
        let metrics = match define_metrics(&plan) {
            Ok(m) => m,
            Err(e) => {
                log::error!("sticky-canary: {e}");
                return false;
            }
        };
        log::info!("sticky-canary {}: {}", crate::VERSION, plan.summary());
        for w in &plan.warnings {
            log::warn!("sticky-canary: {w}");
        }
        self.active = Some(Rc::new(Active { plan, metrics }));
        true
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

fn response_header(name: &str) -> Option<Vec<u8>> {
    host::header(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

fn increment(id: Option<&u32>, by: u64) {
    let Some(&id) = id else { return };
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

impl Active {
    /// Applies a rule's outcome to the version's metrics.
    fn apply(&self, version: usize, rule: usize, outcome: Outcome) {
        let m = &self.metrics;
        match outcome {
            Outcome::Nothing => {}
            Outcome::Count => increment(m.business(version, rule), 1),
            Outcome::Add(n) => {
                increment(m.business(version, rule), n);
                // Saturating: a wrapped sum of squares would be a wrong variance.
                let square = u64::try_from(u128::from(n) * u128::from(n)).unwrap_or(u64::MAX);
                increment(m.squares(version, rule), square);
            }
            Outcome::Record(n) => {
                if let Some(&id) = m.business(version, rule) {
                    warn_on_error("record", "histogram", host::record_metric(id, n));
                }
            }
            Outcome::Invalid => increment(m.invalid(version, rule), 1),
        }
    }

    fn skipped(&self, version: usize, reason: SkipReason) {
        increment(self.metrics.skipped(version, reason), 1);
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
        increment(active.metrics.request(decision.version, decision.reason), 1);
        let version = plan.version_name(decision.version);
        log::debug!(
            "sticky-canary: {} -> {version} ({})",
            plan.service,
            decision.reason.as_str()
        );
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
        self.status = response_header(":status")
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok())
            .unwrap_or(0);
        increment(active.metrics.response(v, self.status), 1);

        // Header rules: one host read per applicable rule.
        for (i, rule) in plan.business.rules.iter().enumerate() {
            if let Place::Header(name) = &rule.place {
                if rule.status.matches(self.status) {
                    active.apply(v, i, rule.evaluate(response_header(name).as_deref()));
                }
            }
        }
        // Body rules: copy the body only when one applies, it is JSON, uncompressed, bounded.
        if !end_of_stream && plan.business.wants_body(self.status) {
            let max = plan.business.max_body_bytes;
            let gate = body_gate(
                response_header("content-type").as_deref(),
                response_header("content-encoding").as_deref(),
                response_header("content-length").as_deref(),
                max,
            );
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
