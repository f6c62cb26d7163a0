//! The ramp in plain Envoy (`envoy/ramp/`): the filter assigns every session a cohort bucket
//! (`bucket_header`, plugin weights canary 0 / stable 100), and the routes size the cohort. A
//! first route matches the bucket header with a `safe_regex` (`sticky-canary cohort`) and sends
//! those sessions to the canary; the routes come from a watched file (file-based RDS), so a ramp
//! step is a file moved over it, applied without a listener change or a dropped request.
//!
//! - [`routes`] renders the route file of any cohort size from the shipped `steps/00.yaml` (no
//!   cohort) and the cohort regex; the shipped `steps/<p>.yaml` are that rendering, checked by
//!   `tools/tests/ramp_envoy.rs`.
//! - [`Ramp`] (the harness's, `sticky_canary_harness::ramp`) runs the shipped bootstrap in front
//!   of local upstreams, with the routes in a temporary watched directory, and moves a step in
//!   ([`Ramp::set_routes`]).

use serde_yaml::Value;
use std::fs;
use std::path::{Path, PathBuf};
use sticky_canary_harness::envoy::get;
pub use sticky_canary_harness::ramp::{
    bootstrap_path, config, ramp_dir, step_path, Ramp, ROUTE_CONFIG,
};

/// The steps shipped as `envoy/ramp/steps/<p>.yaml`, in percent (0: no cohort, the rollback).
pub const SHIPPED_STEPS: &[u32] = &[0, 5, 20, 50, 100];

/// The shipped live routes file the bootstrap watches (step 0 as shipped).
pub fn live_routes_path() -> PathBuf {
    ramp_dir().join("routes.yaml")
}

/// A YAML file, parsed.
pub fn load_yaml(path: &Path) -> Result<Value, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// Where the routes list sits in a route file.
const ROUTES: &[&str] = &["resources", "0", "virtual_hosts", "0", "routes"];

/// The route that sends the cohort to the canary: the bucket header matching `regex`.
pub fn bucket_route(bucket_header: &str, regex: &str) -> Result<Value, String> {
    let yaml = format!(
        "match:\n  prefix: \"/\"\n  headers:\n  - name: {bucket_header}\n    \
         string_match: {{ safe_regex: {{ regex: {} }} }}\nroute: {{ cluster: canary }}\n",
        serde_json::Value::String(regex.to_string())
    );
    serde_yaml::from_str(&yaml).map_err(|e| format!("the bucket route: {e}"))
}

/// The route file (parsed) for a cohort of `hundredths` of a percent of the sessions: the shipped
/// `steps/00.yaml` with, first, the bucket route for `sticky-canary cohort`'s regex (none for 0).
pub fn routes(hundredths: u32) -> Result<Value, String> {
    let mut doc = load_yaml(&step_path(0))?;
    if hundredths > 0 {
        let route = bucket_route(
            "x-canary-bucket",
            &sticky_canary_cli::cohort::regex(hundredths),
        )?;
        get(&mut doc, ROUTES)
            .as_sequence_mut()
            .ok_or("steps/00.yaml: the routes are not a list")?
            .insert(0, route);
    }
    Ok(doc)
}

/// The route file for `percent`: the shipped step file when there is one, else [`routes`].
pub fn routes_yaml(percent: u32) -> Result<String, String> {
    if SHIPPED_STEPS.contains(&percent) {
        let path = step_path(percent);
        return fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()));
    }
    let hundredths = percent.checked_mul(100).filter(|h| *h <= 10_000);
    let doc = routes(hundredths.ok_or(format!("a cohort of {percent} %"))?)?;
    serde_yaml::to_string(&doc).map_err(|e| format!("serialize the routes: {e}"))
}
