//! The flow cookie's fixtures (`session.hold.flows`), for `tests/flows.rs`: the key and its VM
//! variable, the plugin block, reading what one request showed (served version, reason, the flow
//! `Set-Cookie`), signing a cookie offline with the same key (to forge an expired one), the two
//! metrics, and Envoy on the shipped ramp bootstrap (`envoy/ramp/`) with its routes in a watched
//! file of its own (the harness cannot use the tools' copy of that plumbing).

use crate::envoy::EnvoyConfig;
use crate::http::{echo_handler, Handler, Request, Response};
use crate::prom::Scrape;
use crate::ramp::Ramp;
use serde_json::{json, Value};
use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use sticky_canary::plan::Plan;
use sticky_canary::routing::flow::key_digest;

/// The VM environment variable holding the MAC key.
pub const KEY_ENV: &str = "CANARY_FLOW_KEY";
/// The MAC key the tests configure (at least 32 bytes).
pub const KEY: &str = "flows-e2e-key-0123456789abcdef-0123456789abcdef";
/// The flow cookie's name.
pub const FLOW: &str = "sc_flow";
/// The hold cookie's name.
pub const HOLD: &str = "sc_hold";
/// The reason header the tests configure.
pub const REASON: &str = "x-canary-reason";
/// The shipped configs' service.
pub const SERVICE: &str = "checkout";
/// The hold's attributes (its defaults), which the flow cookie takes.
pub const ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Lax";

/// The `Set-Cookie` that ends a flow.
pub fn clear_cookie() -> String {
    format!("{FLOW}=; Max-Age=0; {ATTRIBUTES}")
}

/// `session` of a plugin config: the shipped sources (cookie `session_id`, header `x-user-id`),
/// the idle hold, and flows draining for `drain_seconds`, keyed by [`KEY_ENV`].
pub fn session_with_flows(drain_seconds: u64) -> Value {
    json!({
        "sources": [{"cookie": "session_id"}, {"header": "x-user-id"}],
        "hold": {"cookie": HOLD, "idle_seconds": 900,
                 "flows": {"cookie": FLOW, "drain_seconds": drain_seconds, "key_env": KEY_ENV}}
    })
}

/// Adds flows (and the hold, the reason header and a counter flush of `flush_ms`) to a plugin
/// config.
pub fn add_flows(plugin: &mut Value, drain_seconds: u64, flush_ms: u64) {
    plugin["session"] = session_with_flows(drain_seconds);
    plugin["reason_header"] = REASON.into();
    plugin["metrics_flush_ms"] = flush_ms.into();
}

/// The plugin config of the shipped `envoy/envoy.yaml` with these versions (`(name, weight)`,
/// the last one the default), and flows.
pub fn shipped_plugin(
    versions: &[(&str, u32)],
    drain_seconds: u64,
    flush_ms: u64,
) -> serde_json::Value {
    let mut p: Value = serde_json::from_str(&EnvoyConfig::reference().plugin_config())
        .expect("envoy/envoy.yaml's plugin config is JSON");
    p["versions"] = versions
        .iter()
        .map(|(n, w)| json!({"name": n, "weight": w}))
        .collect();
    p["default_version"] = versions.last().expect("a version").0.into();
    add_flows(&mut p, drain_seconds, flush_ms);
    p
}

/// The plan as a VM compiles it, with [`KEY`] in [`KEY_ENV`]: it signs and checks cookies.
pub fn keyed_plan(plugin: &str) -> Plan {
    Plan::from_json_with_env(plugin.as_bytes(), &|n| {
        (n == KEY_ENV).then(|| KEY.to_string())
    })
    .unwrap_or_else(|e| panic!("plugin config refused with the key: {e}"))
}

/// The `Set-Cookie` value the filter sets for `session`'s flow on `version` at `now_s`, signed
/// offline with the same key (e.g. to make an expired cookie, or to check Envoy's).
pub fn sign(plan: &Plan, session: &str, version: &str, now_s: u64) -> String {
    plan.flows
        .as_ref()
        .expect("the plan has flows")
        .set_cookie(&key_digest(session.as_bytes()), version, now_s)
        .expect("a keyed plan signs")
}

/// The test config for `plugin`: its upstreams, the built module, free ports, and the key in the
/// VM's environment.
pub fn envoy_config(plugin: &str, upstreams: &[(&str, SocketAddr)], default: &str) -> EnvoyConfig {
    let mut cfg = EnvoyConfig::for_test(plugin, upstreams, default);
    cfg.set_vm_env(KEY_ENV, KEY);
    cfg
}

/// An echo upstream ([`echo_handler`]) answering with the status the query asks for
/// (`?status=503`), 200 otherwise.
pub fn echo_with_status(name: &str) -> Handler {
    let echo = echo_handler(name);
    Arc::new(move |req: &Request| {
        let mut r = echo(req);
        if let Some(s) = crate::shop::query(&req.path)
            .get("status")
            .and_then(|s| s.parse().ok())
        {
            r.status = s;
        }
        r
    })
}

/// Seconds since the Unix epoch, with the fraction.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// A request of session `session` (cookie `session_id`), carrying flow cookie `flow` if given.
pub fn session_request(method: &str, path: &str, session: &str, flow: Option<&str>) -> Request {
    let cookie = match flow {
        Some(f) => format!("session_id={session}; {FLOW}={f}"),
        None => format!("session_id={session}"),
    };
    Request::new(method, path).header("cookie", &cookie)
}

/// A flow cookie as set: `<version>.<expiry>.<mac>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowCookie {
    pub version: String,
    pub expiry: u64,
    pub mac: String,
    /// The whole `Set-Cookie` value.
    pub set_cookie: String,
}

impl FlowCookie {
    /// Parses a `Set-Cookie` value setting the flow cookie (`None` for another cookie, a clear,
    /// or a value not of the documented shape).
    pub fn parse(set_cookie: &str) -> Option<FlowCookie> {
        let first = set_cookie.split(';').next()?;
        let value = first.strip_prefix(FLOW)?.strip_prefix('=')?;
        let mut parts = value.rsplitn(3, '.');
        let (mac, expiry, version) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = mac.len() == 64
            && mac
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        (hex && !version.is_empty()).then_some(())?;
        Some(FlowCookie {
            version: version.to_string(),
            expiry: expiry.parse().ok()?,
            mac: mac.to_string(),
            set_cookie: set_cookie.to_string(),
        })
    }

    /// The cookie's value, as a client sends it back.
    pub fn value(&self) -> String {
        format!("{}.{}.{}", self.version, self.expiry, self.mac)
    }
}

/// What one request through Envoy showed.
#[derive(Clone, Debug)]
pub struct Seen {
    pub status: u16,
    /// The upstream that answered (`x-upstream`).
    pub upstream: String,
    /// The version the client was told (`x-canary-version` on the response).
    pub version: String,
    /// The reason header.
    pub reason: String,
    /// The route header (`x-canary-version`) the upstream received (echo upstreams).
    pub route_seen: Vec<String>,
    /// The bucket header (`x-canary-bucket`) the upstream received (echo upstreams).
    pub bucket_seen: Vec<String>,
    /// Every `Set-Cookie` of the response.
    pub set_cookies: Vec<String>,
    /// When the request was sent and when its answer was read (Unix seconds).
    pub sent: f64,
    pub answered: f64,
}

/// Every value of a request header an echo upstream received.
pub fn echoed(r: &Response, name: &str) -> Vec<String> {
    let body = r.json();
    body["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                .filter_map(|h| h[1].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Seen {
    pub fn of(r: &Response, sent: f64) -> Seen {
        let s = |name: &str| r.header_str(name).unwrap_or_default().to_string();
        Seen {
            status: r.status,
            upstream: s("x-upstream"),
            version: s("x-canary-version"),
            reason: s(REASON),
            route_seen: echoed(r, "x-canary-version"),
            bucket_seen: echoed(r, "x-canary-bucket"),
            set_cookies: r
                .header_values("set-cookie")
                .into_iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
            sent,
            answered: unix_now(),
        }
    }

    /// Sends `req` to `listener` on a fresh connection (so that, with several workers, requests
    /// spread over them).
    pub fn send(listener: SocketAddr, req: &Request) -> Seen {
        let sent = unix_now();
        let r = crate::http::send_once(listener, req).expect("request through Envoy");
        Seen::of(&r, sent)
    }

    /// Served by `version` in every respect: that upstream answered, the client was told so,
    /// and the upstream saw exactly one route header naming it.
    pub fn served_by(&self, version: &str) -> bool {
        self.status < 500
            && self.upstream == version
            && self.version == version
            && self.route_seen == [version]
    }

    /// The `Set-Cookie` values naming the flow cookie (set or cleared).
    pub fn flow_set_cookies(&self) -> Vec<&str> {
        self.set_cookies
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with(&format!("{FLOW}=")))
            .collect()
    }

    /// The flow cookie this response set, if exactly one was set.
    pub fn flow_cookie(&self) -> Option<FlowCookie> {
        match self.flow_set_cookies()[..] {
            [one] => FlowCookie::parse(one),
            _ => None,
        }
    }

    /// `(version, reason)`, for compact assertions.
    pub fn decided(&self) -> (&str, &str) {
        (&self.upstream, &self.reason)
    }
}

/// `canary_flow_cookies_total{service, outcome}` (0 without the series).
pub fn flow_cookies(s: &Scrape, outcome: &str) -> f64 {
    s.value(
        "canary_flow_cookies_total",
        &[("service", SERVICE), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// The three outcomes' counts: `[valid, invalid, expired]`.
pub fn outcomes(s: &Scrape) -> [f64; 3] {
    ["valid", "invalid", "expired"].map(|o| flow_cookies(s, o))
}

/// `canary_flows_draining{service, version}` (`None` without the series).
pub fn draining(s: &Scrape, version: &str) -> Option<f64> {
    s.value(
        "canary_flows_draining",
        &[("service", SERVICE), ("version", version)],
    )
}

/// `canary_requests_total{service, version, reason}` (0 without the series).
pub fn requests(s: &Scrape, version: &str, reason: &str) -> f64 {
    s.value(
        "canary_requests_total",
        &[
            ("service", SERVICE),
            ("version", version),
            ("reason", reason),
        ],
    )
    .unwrap_or(0.0)
}

/// A shipped ramp step's route file (`envoy/ramp/steps/20.yaml` for 20), as it is.
pub fn ramp_step(percent: u32) -> String {
    let path = crate::ramp::step_path(percent);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The shipped ramp bootstrap's plugin config (`envoy/ramp/envoy.yaml`).
pub fn ramp_plugin() -> Value {
    serde_json::from_str(&crate::ramp::config().plugin_config())
        .expect("the ramp plugin config is JSON")
}

/// The shipped ramp ([`crate::ramp::Ramp`]) with this plugin config and the key in the VM's
/// environment.
pub fn start_ramp(plugin: &str, upstreams: &[(&str, SocketAddr)], routes: &str) -> Ramp {
    let mut cfg = crate::ramp::config();
    cfg.set_plugin_config(plugin);
    cfg.set_vm_env(KEY_ENV, KEY);
    Ramp::start(cfg, upstreams, routes)
        .unwrap_or_else(|e| panic!("Envoy did not start on the ramp bootstrap:\n{e}"))
}
