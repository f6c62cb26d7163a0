//! The proxy-wasm shell: the only module that talks to the host. It compiles the configuration
//! once in `on_configure`, and per request asks the pure core for a decision, then writes headers.
//!
//! Host calls go through [`crate::host`], which turns every host status into a `Result` (the SDK's
//! own calls panic on unexpected statuses, and a panic traps the VM). Failure policy on the
//! request path: a header that cannot be read counts as absent (the request falls through to the
//! next source, then to the default version); a header that cannot be written is logged and the
//! request continues.

use crate::config::Plan;
use crate::decision::HeaderLookup;
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
        match Plan::from_json(&bytes) {
            Ok(plan) => {
                log::info!("sticky-canary {}: {}", crate::VERSION, plan.summary());
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
            version: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    plan: Option<Rc<Plan>>,
    /// The version chosen for this request, for the response tag.
    version: Option<usize>,
}

impl Context for Stream {}

/// Request headers through the host, read on demand. A failed read counts as an absent header.
struct HostRequestHeaders;

impl HeaderLookup for HostRequestHeaders {
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
}

fn set_header(map: MapType, name: &str, value: &str) {
    if let Err(e) = host::set_header(map, name, value.as_bytes()) {
        log::warn!("sticky-canary: could not set {name}: {e:?}");
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plan) = &self.plan else {
            return Action::Continue;
        };
        let decision = plan.decide(&mut HostRequestHeaders);
        self.version = Some(decision.version);
        // Replaces every value the client sent; Envoy clears the route cache on this write, so
        // the router matches the routes against the chosen version.
        set_header(
            MapType::HttpRequestHeaders,
            &plan.route_header,
            plan.version_name(decision.version),
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let (Some(plan), Some(version)) = (&self.plan, self.version) {
            set_header(
                MapType::HttpResponseHeaders,
                &plan.response_header,
                plan.version_name(version),
            );
        }
        Action::Continue
    }
}
