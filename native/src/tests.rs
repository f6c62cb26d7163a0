//! The hooks against the fake Envoy (`fake.rs`): configure, a request's decision and tag, the
//! counters, the refusals; what `hooks.rs` adds to the core (the route cache, the filter-state
//! key, no batching).
#![allow(unsafe_code)]

use crate::abi::EnvoyBuffer;
use crate::fake::{self, Fake};
use crate::hooks::*;
use std::ffi::c_void;

const CONFIG: &str = r#"{
  "service": "checkout",
  "versions": [{"name": "canary", "weight": 0}, {"name": "stable", "weight": 100}],
  "default_version": "stable",
  "session": {"sources": [{"cookie": "session_id"}]},
  "business_metrics": [
    {"name": "orders", "kind": "counter", "header": "x-order-id"},
    {"name": "auth_approved", "kind": "counter", "json": "/authorization/status",
     "equals": "approved"}
  ],
  "max_body_bytes": 256
}"#;

fn buffer(b: &[u8]) -> EnvoyBuffer {
    EnvoyBuffer {
        ptr: b.as_ptr(),
        length: b.len(),
    }
}

fn reset() {
    fake::with(|f| *f = Fake::default());
}

fn configure(name: &str, json: &str) -> *const c_void {
    // SAFETY: buffers valid during the call; a made-up Envoy pointer the fake never reads.
    unsafe {
        envoy_dynamic_module_on_http_filter_config_new(
            8 as *mut c_void,
            buffer(name.as_bytes()),
            buffer(json.as_bytes()),
        )
    }
}

fn headers(ty: usize, pairs: &[(&str, &str)]) {
    fake::with(|f| {
        f.maps[ty] = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    });
}

/// One request through every hook a proxied request gets; `body` is the response body.
fn request(config: *const c_void, served_by: &str, body: &[u8]) {
    let envoy = 16 as *mut c_void;
    // SAFETY: a configuration from `configure`; the filter freed once, at the end.
    unsafe {
        let f = envoy_dynamic_module_on_http_filter_new(config, envoy);
        assert!(!f.is_null());
        assert_eq!(
            envoy_dynamic_module_on_http_filter_request_headers(envoy, f, true),
            0
        );
        fake::with(|fk| fk.cluster = Some(served_by.as_bytes().to_vec()));
        headers(
            2,
            &[
                (":status", "200"),
                ("content-type", "application/json"),
                ("x-order-id", "A-1"),
            ],
        );
        assert_eq!(
            envoy_dynamic_module_on_http_filter_response_headers(envoy, f, false),
            0
        );
        fake::with(|fk| fk.body = vec![body.to_vec()]);
        assert_eq!(
            envoy_dynamic_module_on_http_filter_response_body(envoy, f, true),
            0
        );
        envoy_dynamic_module_on_http_filter_stream_complete(envoy, f);
        envoy_dynamic_module_on_http_filter_destroy(f);
    }
}

#[test]
fn a_request_is_decided_tagged_and_counted() {
    reset();
    let config = configure("sticky_canary", CONFIG);
    assert!(!config.is_null(), "{:?}", fake::with(|f| f.logs.clone()));
    let defined = fake::with(|f| f.defined.len());
    assert!(
        defined > 10,
        "every metric defined at configure time: {defined}"
    );
    headers(
        0,
        &[
            (":method", "POST"),
            (":path", "/"),
            ("cookie", "session_id=s-1"),
        ],
    );
    request(
        config,
        "stable",
        br#"{"authorization": {"status": "approved"}}"#,
    );
    fake::with(|f| {
        assert_eq!(f.header(0, "x-canary-version"), Some(&b"stable"[..]));
        assert_eq!(
            f.route_cache_cleared, 1,
            "the route is picked again after the write"
        );
        let requests = sticky_canary::metrics::encode(
            "canary_requests_total",
            &[
                ("service", "checkout"),
                ("version", "stable"),
                ("reason", "hash"),
            ],
        );
        assert_eq!(f.value(&requests), Some(1), "counted at once: no batching");
        let orders = sticky_canary::metrics::encode(
            "canary_business_orders_total",
            &[("service", "checkout"), ("version", "stable")],
        );
        assert_eq!(f.value(&orders), Some(1));
        let approved = sticky_canary::metrics::encode(
            "canary_business_auth_approved_total",
            &[("service", "checkout"), ("version", "stable")],
        );
        assert_eq!(
            f.value(&approved),
            Some(1),
            "the JSON rule read the body chunks"
        );
        assert!(
            f.filter_state
                .iter()
                .any(|(k, _)| k == b"wasm.sticky_canary"),
            "the wasm build's key, for one access-log format"
        );
    });
    // SAFETY: from `configure`, freed once.
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(config) };
}

#[test]
fn refusals_name_the_field_path() {
    reset();
    let bad = CONFIG.replace(
        r#""default_version": "stable""#,
        r#""default_version": "blue""#,
    );
    assert!(configure("sticky_canary", &bad).is_null());
    let logs = fake::with(|f| f.logs.clone());
    assert!(
        logs.iter()
            .any(|(l, m)| *l == 4 && m.contains("default_version")),
        "{logs:?}"
    );
    reset();
    assert!(configure("other", CONFIG).is_null());
}

#[test]
fn the_main_thread_root_judges_on_its_ticker_and_stops_with_its_configuration() {
    reset();
    let guarded = CONFIG.replace(
        r#""max_body_bytes": 256"#,
        r#""max_body_bytes": 256, "metrics_flush_ms": 20, "guard": {"baseline": "stable",
            "checks": [{"error_ratio": {"max_points": 1.0}}],
            "pool": {"cluster": "prometheus", "authority": "prometheus:9090",
                     "interval_ms": 1000, "timeout_ms": 500}}"#,
    );
    let config = configure("sticky_canary", &guarded);
    assert!(!config.is_null(), "{:?}", fake::with(|f| f.logs.clone()));
    let before = fake::COMMITS.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let ticks = fake::COMMITS.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        ticks >= 3,
        "the ticker posts ticks to the main thread: {ticks}"
    );
    // The fake runs the posted ticks as Envoy would, on this (the main) thread, until the pool's
    // first query is due (within an interval and its jitter).
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    while fake::with(|f| f.callouts.is_empty()) && std::time::Instant::now() < deadline {
        envoy_dynamic_module_on_http_filter_config_scheduled(std::ptr::null_mut(), config, 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let callouts = fake::with(|f| f.callouts.clone());
    let (cluster, headers) = callouts
        .first()
        .expect("the pool's query, as a config callout");
    assert_eq!(cluster, "prometheus");
    let has = |k: &str, v: &str| headers.iter().any(|(a, b)| a == k && b == v);
    assert!(has("host", "prometheus:9090"), "{headers:?}");
    assert!(
        !headers.iter().any(|(k, _)| k == ":authority"),
        "one authority (Envoy would join :authority and host): {headers:?}"
    );
    assert!(has(":method", "GET"), "{headers:?}");
    // SAFETY: from `configure`, freed once.
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(config) };
    assert_eq!(fake::with(|f| f.schedulers_deleted), 1);
    let after = fake::COMMITS.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(
        fake::COMMITS.load(std::sync::atomic::Ordering::Relaxed),
        after,
        "no tick after the configuration is destroyed"
    );
}

#[test]
fn a_stream_without_a_configuration_passes_through_and_null_pointers_are_survived() {
    // SAFETY: null pointers are what the hooks must survive.
    unsafe {
        // No configuration: a filter that passes the stream through (null would close it).
        let f = envoy_dynamic_module_on_http_filter_new(std::ptr::null(), std::ptr::null_mut());
        assert!(!f.is_null());
        assert_eq!(
            envoy_dynamic_module_on_http_filter_request_headers(std::ptr::null_mut(), f, true),
            0
        );
        assert_eq!(
            envoy_dynamic_module_on_http_filter_response_headers(std::ptr::null_mut(), f, true),
            0
        );
        envoy_dynamic_module_on_http_filter_stream_complete(std::ptr::null_mut(), f);
        envoy_dynamic_module_on_http_filter_destroy(f);
        assert_eq!(
            envoy_dynamic_module_on_http_filter_request_headers(
                std::ptr::null_mut(),
                std::ptr::null(),
                true
            ),
            0
        );
        envoy_dynamic_module_on_http_filter_destroy(std::ptr::null());
        envoy_dynamic_module_on_http_filter_config_destroy(std::ptr::null());
    }
}
