//! Envoy on the shipped ramp bootstrap (`envoy/ramp/envoy.yaml`) in front of local upstreams, its
//! routes read from a watched file in a temporary directory, and a ramp step moved over it as an
//! operator's `mv` does ([`Ramp::set_routes`]). The demo, the ramp suite and the flow suite run
//! it; the rendering of a step's routes is the tools' (`sticky_canary_tools::ramp`).

use crate::envoy::{get, key, wasm_path, workspace_root, Envoy, EnvoyConfig, Launch, HCM};
use serde_yaml::Value;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The name of the route configuration the bootstrap asks RDS for.
pub const ROUTE_CONFIG: &str = "ramp";

/// `envoy/ramp`.
pub fn ramp_dir() -> PathBuf {
    workspace_root().join("envoy/ramp")
}

/// The shipped bootstrap, `envoy/ramp/envoy.yaml`.
pub fn bootstrap_path() -> PathBuf {
    ramp_dir().join("envoy.yaml")
}

/// The shipped route file of a step, `envoy/ramp/steps/05.yaml` for 5 %.
pub fn step_path(percent: u32) -> PathBuf {
    ramp_dir().join(format!("steps/{percent:02}.yaml"))
}

/// The shipped bootstrap, for [`Ramp::start`] (edit its plugin config, VM env… first).
pub fn config() -> EnvoyConfig {
    EnvoyConfig::load(&bootstrap_path())
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
        for (name, addr) in upstreams {
            cfg.set_cluster_address(name, *addr);
        }
        let mut doc: Value =
            serde_yaml::from_str(&cfg.to_yaml()).map_err(|e| format!("the ramp bootstrap: {e}"))?;
        let dir = crate::tempdir("sticky-canary-ramp-");
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
