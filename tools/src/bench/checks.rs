//! What every variant must answer (before the runs) and count (after them): a figure from a
//! config that does not route, tag or count is a warning in the report, not a result.

use super::procs::EnvoyProbe;
use super::requests::request_for;
use super::variants::{plugin_config, Filter, Variant, UPSTREAM_HEADERS};
use super::Entry;
use std::net::SocketAddr;
use sticky_canary_harness::http::Client;

/// The version the published algorithm gives `key` under the filter-route plugin config.
pub fn expected_version(key: &str) -> Result<String, String> {
    let doc = Variant::by_key("filter-route")
        .ok_or("no filter-route variant")?
        .load()?;
    let cfg = plugin_config(&doc).ok_or("filter-route has no plugin config")?;
    let plan = sticky_canary::plan::Plan::from_json(cfg.as_bytes())
        .map_err(|e| format!("filter-route's plugin config: {e}"))?;
    Ok(plan.version_name(plan.bucket(key.as_bytes())).to_string())
}

/// One request through a freshly started bench Envoy: the response every variant must give (with
/// its flow cookie for a variant whose requests carry one: the same version and tag, decided by
/// the cookie). Returns the problems found (empty: fine).
pub fn preflight(variant: &Variant, listener: SocketAddr, session: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let req = match request_for(variant, session) {
        Ok(r) => r,
        Err(e) => return vec![format!("request: {e}")],
    };
    let r = match Client::connect(listener).and_then(|mut c| c.send(&req)) {
        Ok(r) => r,
        Err(e) => return vec![format!("request failed: {e}")],
    };
    if r.status != 200 {
        problems.push(format!("status {} (want 200)", r.status));
    }
    if r.body.len() != 1024 {
        problems.push(format!("body of {} bytes (want 1024)", r.body.len()));
    }
    let ct: Vec<&[u8]> = r.header_values("content-type");
    if ct != [b"application/json".as_slice()] {
        problems.push(format!(
            "content-type {:?} (want one application/json)",
            ct.iter()
                .map(|v| String::from_utf8_lossy(v))
                .collect::<Vec<_>>()
        ));
    }
    for (n, v) in UPSTREAM_HEADERS {
        if r.header_str(n) != Some(v) {
            problems.push(format!("{n}: {:?} (want {v})", r.header_str(n)));
        }
    }
    let tag = r.header_str("x-canary-version").map(str::to_string);
    let floor = r.header_str("x-floor").map(str::to_string);
    match variant.filter {
        Filter::None => {
            if tag.is_some() || floor.is_some() {
                problems.push("bare Envoy added a header".into());
            }
        }
        Filter::Floor => {
            if floor.as_deref() != Some("1") {
                problems.push(format!("x-floor: {floor:?} (want 1)"));
            }
        }
        Filter::StickyCanary | Filter::Native { .. } | Filter::Lua => {
            match expected_version(session) {
                Ok(want) if tag.as_deref() != Some(want.as_str()) => {
                    problems.push(format!("x-canary-version: {tag:?} (want {want})"));
                }
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
    }
    problems
}

/// After the runs: the filter's own counters must have seen what the variant says (the native
/// build names its series as the wasm build does, and counts by the same plugin config).
pub(crate) fn counter_check(e: &Entry) -> Vec<String> {
    let mut out = Vec::new();
    if !e.variant.filter.is_sticky_canary() {
        return out;
    }
    let ok = e.envoy.request_counters().map(|(_, ok)| ok).unwrap_or(0);
    let routed = e.envoy.sum_of("canary_requests_total");
    let tolerance = |n: u64| n as f64 >= 0.99 * ok as f64;
    if !tolerance(routed) {
        out.push(format!(
            "canary_requests_total {routed} for {ok} 2xx responses"
        ));
    }
    match e.variant.wasm_key() {
        "filter-headers" | "filter-headers-routed" | "filter-guard" | "filter-guard-pool" => {
            for m in [
                "canary_business_orders_total",
                "canary_business_payment_approved_total",
            ] {
                let n = e.envoy.sum_of(m);
                if !tolerance(n) {
                    out.push(format!("{m} {n} for {ok} 2xx responses"));
                }
            }
        }
        "filter-json" => {
            let cents = e.envoy.sum_of("canary_business_tax_total");
            if !tolerance(cents / 338) {
                out.push(format!(
                    "canary_business_tax_total {cents} cents for {ok} 2xx responses (338 each)"
                ));
            }
        }
        _ => {}
    }
    // Every request carried a valid flow cookie: each was checked, found valid, and decided by it
    // (a figure from cookies the filter refused would measure a cheaper path).
    if e.variant.flow_cookie {
        let valid = e
            .envoy
            .sum_of("outcome=.=valid;.;canary_flow_cookies_total");
        let by_flow = e.envoy.sum_of("reason=.=flow;.;canary_requests_total");
        for (what, n) in [
            ("canary_flow_cookies_total{outcome=\"valid\"}", valid),
            ("canary_requests_total{reason=\"flow\"}", by_flow),
        ] {
            if !tolerance(n) {
                out.push(format!("{what} {n} for {ok} 2xx responses"));
            }
        }
        let refused = e
            .envoy
            .sum_of("outcome=.=(invalid|expired);.;canary_flow_cookies_total");
        if refused > 0 {
            out.push(format!(
                "canary_flow_cookies_total{{outcome=~\"invalid|expired\"}} {refused}"
            ));
        }
    }
    // Every version is served by the same upstream: the brake must never trip.
    let tripped = e.envoy.sum_of("canary_guard_tripped");
    if tripped != 0 {
        out.push(format!("canary_guard_tripped {tripped}: a false trip"));
    }
    let skipped = e.envoy.sum_of("canary_business_skipped_total");
    if skipped as f64 > 0.01 * ok as f64 {
        out.push(format!("canary_business_skipped_total {skipped}"));
    }
    let invalid = e.envoy.sum_of("canary_business_invalid_total");
    if invalid > 0 {
        out.push(format!("canary_business_invalid_total {invalid}"));
    }
    out
}
