//! The proxy-wasm shell: the only module that talks to the host. It compiles the configuration
//! once in `on_configure`, and per request asks the pure core for a decision, then writes headers.
//!
//! Host calls go through [`crate::host`], which turns every host status into a `Result` (the SDK's
//! own calls panic on unexpected statuses, and a panic traps the VM). Failure policy on the
//! request path: a header that cannot be read counts as absent (the request falls through to the
//! next source, then to the default version); a header that cannot be written is logged and the
//! request continues.

use crate::assign::{UpstreamCookie, ID_BYTES};
use crate::config::Plan;
use crate::decision::{Decision, RequestView};
use crate::host;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { plan: None }) });
}}

struct Root {
    plan: Option<Rc<Plan>>,
}

impl Context for Root {}

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
        match Plan::from_json_with_env(&bytes, &|name| std::env::var(name).ok()) {
            Ok(plan) => {
                log::info!("sticky-canary {}: {}", crate::VERSION, plan.summary());
                for w in &plan.warnings {
                    log::warn!("sticky-canary: {w}");
                }
                self.plan = Some(Rc::new(plan));
                true
            }
            Err(e) => {
                // One line naming the field path and the reason; Envoy then refuses the filter.
                log::error!("sticky-canary: invalid configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK panics on None. Without a plan (cannot happen after a successful
        // configure) the stream passes through untouched.
        Some(Box::new(Stream {
            plan: self.plan.clone(),
            decision: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    plan: Option<Rc<Plan>>,
    /// The decision for this request, for the response headers.
    decision: Option<Decision>,
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

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plan) = &self.plan else {
            return Action::Continue;
        };
        let decision = plan.decide(&mut HostRequest);
        self.decision = Some(decision);
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

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(plan), Some(decision)) = (&self.plan, &self.decision) else {
            return Action::Continue;
        };
        let response = MapType::HttpResponseHeaders;
        let version = plan.version_name(decision.version);
        set_header(response, &plan.response_header, version.as_bytes());
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
}
