//! The ramp in plain Envoy (`envoy/ramp/`): the filter assigns every session a cohort bucket
//! (`bucket_header`, plugin weights canary 0 / stable 100), and the routes size the cohort. A
//! first route matches the bucket header with a `safe_regex` (`sticky-canary cohort`) and sends
//! those sessions to the canary; the routes come from a watched file (file-based RDS), so a ramp
//! step is a file moved over it, applied without a listener change or a dropped request.
//!
//! - [`routes`] renders the route file of any cohort size from the shipped `steps/00.yaml` (no
//!   cohort) and the cohort regex; the shipped `steps/<p>.yaml` are that rendering, checked by
//!   `tools/tests/ramp_envoy.rs`.
//! - [`Ramp`] runs the shipped bootstrap in front of local upstreams, with the routes in a
//!   temporary watched directory, and moves a step in ([`Ramp::set_routes`]).

use crate::bench::set_cluster;
use serde_yaml::Value;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sticky_canary_harness::envoy::{
    get, key, wasm_path, workspace_root, Envoy, EnvoyConfig, Launch, HCM,
};

/// The name of the route configuration the bootstrap asks RDS for.
pub const ROUTE_CONFIG: &str = "ramp";

/// The steps shipped as `envoy/ramp/steps/<p>.yaml`, in percent (0: no cohort, the rollback).
pub const SHIPPED_STEPS: &[u32] = &[0, 5, 20, 50, 100];

/// `envoy/ramp`.
pub fn ramp_dir() -> PathBuf {
    workspace_root().join("envoy/ramp")
}

/// The shipped bootstrap, `envoy/ramp/envoy.yaml`.
pub fn bootstrap_path() -> PathBuf {
    ramp_dir().join("envoy.yaml")
}

/// The shipped live routes file the bootstrap watches (step 0 as shipped).
pub fn live_routes_path() -> PathBuf {
    ramp_dir().join("routes.yaml")
}

/// The shipped route file of a step, `envoy/ramp/steps/05.yaml` for 5 %.
pub fn step_path(percent: u32) -> PathBuf {
    ramp_dir().join(format!("steps/{percent:02}.yaml"))
}

/// The shipped bootstrap, for [`Ramp::start`] (edit its plugin config, VM env… first).
pub fn config() -> EnvoyConfig {
    EnvoyConfig::load(&bootstrap_path())
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

/// Envoy on the shipped ramp bootstrap, its routes in a watched file of its own.
pub struct Ramp {
    envoy: Envoy,
    /// The watched routes file.
    live: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ramp {
    /// Starts Envoy on `cfg` (from [`config`]): ports left for Envoy to choose, the built module,
    /// each cluster at the upstream of its name, the routes read from a watched file in a
    /// temporary directory that starts as `routes` (a route file's YAML).
    pub fn start(
        mut cfg: EnvoyConfig,
        upstreams: &[(&str, SocketAddr)],
        routes: &str,
    ) -> Result<Ramp, String> {
        cfg.set_free_ports();
        cfg.set_wasm(&wasm_path());
        let mut doc: Value =
            serde_yaml::from_str(&cfg.to_yaml()).map_err(|e| format!("the ramp bootstrap: {e}"))?;
        for (name, addr) in upstreams {
            set_cluster(&mut doc, name, *addr)?;
        }
        let dir = sticky_canary_harness::tempdir("sticky-canary-ramp-");
        let live = dir.path().join("routes.yaml");
        fs::write(&live, routes).map_err(|e| format!("{}: {e}", live.display()))?;
        let source = get(
            &mut doc,
            &[HCM, &["rds", "config_source", "path_config_source"]].concat(),
        );
        source["path"] = key(&live.to_string_lossy());
        source["watched_directory"]["path"] = key(&dir.path().to_string_lossy());
        let yaml = serde_yaml::to_string(&doc).map_err(|e| format!("the ramp bootstrap: {e}"))?;
        let envoy = Envoy::start_yaml(&yaml, &Launch::default()).map_err(|f| f.to_string())?;
        Ok(Ramp {
            envoy,
            live,
            _dir: dir,
        })
    }

    pub fn envoy(&self) -> &Envoy {
        &self.envoy
    }

    /// An RDS counter of the route configuration (`update_success`, `update_rejected`).
    fn rds_counter(&self, name: &str) -> u64 {
        let path = format!("/stats?filter=^http\\.ingress\\.rds\\.{ROUTE_CONFIG}\\.{name}$");
        self.envoy.try_admin_get(&path).map_or(0, |r| {
            r.text()
                .lines()
                .find_map(|l| l.split_once(": ").and_then(|(_, v)| v.trim().parse().ok()))
                .unwrap_or(0)
        })
    }

    /// A ramp step: moves a route file (`routes`, YAML) over the watched one, as an operator's
    /// `mv` does, and waits until Envoy has applied it (RDS `update_success`), or says why not.
    pub fn set_routes(&self, routes: &str) -> Result<(), String> {
        let (ok_before, rejected_before) = (
            self.rds_counter("update_success"),
            self.rds_counter("update_rejected"),
        );
        let next = self.live.with_extension("next");
        fs::write(&next, routes).map_err(|e| format!("{}: {e}", next.display()))?;
        fs::rename(&next, &self.live).map_err(|e| format!("{}: {e}", self.live.display()))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.rds_counter("update_rejected") > rejected_before {
                return Err(format!(
                    "Envoy rejected the routes; log:\n{}",
                    self.envoy.log()
                ));
            }
            if self.rds_counter("update_success") > ok_before {
                // The main thread has the new routes; its worker gets them by a posted task.
                std::thread::sleep(Duration::from_millis(100));
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "Envoy did not apply the routes in 15 s; log:\n{}",
            self.envoy.log()
        ))
    }

    /// Stops Envoy.
    pub fn stop(self) {
        self.envoy.stop();
    }
}
