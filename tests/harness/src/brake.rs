//! The brake's fixtures the e2e suites (`guard.rs`, `pool.rs`) and the demo share: the approval
//! guard, the shipped plugin config with a guard, and the tripped gauge of a scrape.

use crate::envoy::EnvoyConfig;
use crate::prom::Scrape;
use serde_json::{json, Value};

/// The service of the shipped plugin config (`envoy/envoy.yaml`).
pub const SERVICE: &str = "checkout";

/// The payment fall-through's check: approvals (`auth_approved` / `orders`) at most 0.3 points
/// below stable's, alpha 0.01; `min_samples` as given, else the default.
pub fn approval_guard(min_samples: Option<u64>) -> Value {
    let mut g = json!({"baseline": "stable", "alpha": 0.01,
        "checks": [{"ratio": {"label": "approval", "numerator": "auth_approved",
                              "denominator": "orders", "max_drop_points": 0.3}}]});
    if let Some(n) = min_samples {
        g["min_samples"] = n.into();
    }
    g
}

/// The shipped plugin config with the canary at `canary_percent` (stable the rest), a reason
/// header, counters flushed every `flush_ms`, and `guard`.
pub fn guarded_plugin(canary_percent: u32, flush_ms: u64, guard: Value) -> Value {
    let mut reference = EnvoyConfig::reference();
    let mut p: Value = serde_json::from_str(&reference.plugin_config())
        .expect("envoy/envoy.yaml's plugin config is JSON");
    let canary = canary_percent.min(100);
    p["versions"] = json!([
        {"name": "canary", "weight": canary},
        {"name": "stable", "weight": 100 - canary}
    ]);
    p["reason_header"] = "x-canary-reason".into();
    p["metrics_flush_ms"] = flush_ms.into();
    p["guard"] = guard;
    p
}

/// `canary_guard_tripped` of `version` in a scrape: 1 tripped, 0 not (or no series).
pub fn tripped(s: &Scrape, version: &str) -> f64 {
    s.value(
        "canary_guard_tripped",
        &[("service", SERVICE), ("version", version)],
    )
    .unwrap_or(0.0)
}
