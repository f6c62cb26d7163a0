//! A real Prometheus on loopback for the end-to-end tests: the Debian package's binary (installed
//! by `make prometheus` into `.venv/prometheus`, or `PROMETHEUS_BIN`), scraping Envoys' admin
//! `/stats/prometheus` every second. Targets live in a `file_sd` file, so that a test can start
//! Prometheus first (its address goes into the Envoys' configs) and name the Envoys once they run.
//! Dropping a [`Prometheus`] stops the process (and prints its log if the test is panicking).

use crate::envoy::workspace_root;
use crate::http::{free_port, send_once, Request};
use crate::{read_text, tempdir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sticky_canary::brake::pool::percent_encode;

/// `env`, else `.venv/prometheus/usr/bin/<name>`; a missing binary is a test failure (a skipped
/// test proves nothing).
pub fn tool(env: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/prometheus/usr/bin").join(name));
    assert!(
        path.is_file(),
        "{name} not found at {} — run `make prometheus` (or `bash prometheus/install.sh`, or set {env})",
        path.display()
    );
    path
}

pub fn promtool() -> PathBuf {
    tool("PROMTOOL_BIN", "promtool")
}

pub fn prometheus_bin() -> PathBuf {
    tool("PROMETHEUS_BIN", "prometheus")
}

/// A Prometheus process on loopback.
pub struct Prometheus {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

fn yaml_str(s: &str) -> String {
    // A JSON string is a YAML scalar.
    serde_json::to_string(s).expect("quote")
}

impl Prometheus {
    /// Starts Prometheus scraping `targets`' `/stats/prometheus` every second (and evaluating
    /// `rules` every second, if given); waits for `/-/ready`. Retries on another port if the
    /// chosen one was taken in the meantime.
    pub fn start(targets: &[SocketAddr], rules: Option<&Path>, deadline: Instant) -> Prometheus {
        for _attempt in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port().expect("bind 127.0.0.1:0"))
                .parse()
                .unwrap();
            let dir = tempdir("sticky-canary-prometheus-");
            let mut p = Prometheus {
                child: None,
                dir,
                addr,
            };
            p.write_config(rules);
            p.set_targets(targets);
            p.spawn();
            match p.wait_ready(deadline) {
                Ok(()) => return p,
                // The port was taken between our probe and Prometheus's bind: try another.
                Err(log) if log.contains("address already in use") => continue,
                Err(log) => {
                    p.stop();
                    panic!("Prometheus did not become ready; log:\n{log}")
                }
            }
        }
        panic!("Prometheus could not bind a free loopback port in 5 attempts");
    }

    fn write_config(&self, rules: Option<&Path>) {
        let rule_files = rules
            .map(|r| format!("rule_files:\n  - {}\n", yaml_str(&r.to_string_lossy())))
            .unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             {rule_files}\
             scrape_configs:\n  - job_name: envoy\n    metrics_path: /stats/prometheus\n    \
             file_sd_configs:\n      - files: [{}]\n        refresh_interval: 1s\n",
            yaml_str(&self.dir.path().join("targets.json").to_string_lossy()),
        );
        fs::write(self.dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
    }

    /// Scrape exactly these Envoys' admin addresses from now on (Prometheus re-reads the file
    /// within a second).
    pub fn set_targets(&self, targets: &[SocketAddr]) {
        let list: Vec<String> = targets.iter().map(SocketAddr::to_string).collect();
        let doc = serde_json::json!([{"targets": list}]).to_string();
        let tmp = self.dir.path().join("targets.json.tmp");
        fs::write(&tmp, doc).expect("write targets");
        fs::rename(&tmp, self.dir.path().join("targets.json")).expect("move targets");
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("prometheus.log"))
            .expect("open log");
        let child = Command::new(prometheus_bin())
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", prometheus_bin().display()));
        self.child = Some(child);
    }

    /// Starts the stopped process again on the same address and data; waits for `/-/ready`.
    pub fn restart(&mut self, deadline: Instant) {
        self.stop();
        self.spawn();
        if let Err(log) = self.wait_ready(deadline) {
            panic!("Prometheus did not come back; log:\n{log}");
        }
    }

    /// Waits for `/-/ready`; the log if the process exited or the deadline passed.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("(exited: {status})\n{}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("(not ready in time)\n{}", self.log()));
            }
            if send_once(self.addr, &Request::get("/-/ready")).is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log(&self) -> String {
        read_text(&self.dir.path().join("prometheus.log"))
    }

    /// Stops the process (by its pid); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A GET on the HTTP API; the parsed `data`, or a description of the failure.
    pub fn api(&self, path: &str) -> Result<Value, String> {
        let r =
            send_once(self.addr, &Request::get(path)).map_err(|e| format!("GET {path}: {e}"))?;
        let body = r.json();
        if r.status != 200 || body["status"] != "success" {
            return Err(format!("GET {path}: {} {}", r.status, r.text()));
        }
        Ok(body["data"].clone())
    }

    /// An instant query whose result is keyed by `version`: version → the value as Prometheus
    /// printed it.
    pub fn by_version(&self, promql: &str) -> Result<BTreeMap<String, String>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)))?;
        let mut out = BTreeMap::new();
        for s in data["result"].as_array().cloned().unwrap_or_default() {
            let version = s["metric"]["version"].as_str().unwrap_or("").to_string();
            let value = s["value"][1].as_str().unwrap_or("").to_string();
            out.insert(version, value);
        }
        Ok(out)
    }

    /// Prometheus's own `/metrics`, parsed.
    pub fn own_metrics(&self) -> crate::prom::Scrape {
        let r = send_once(self.addr, &Request::get("/metrics")).expect("GET /metrics");
        crate::prom::Scrape::parse(&r.text())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- Prometheus log ({}) -----\n{}\n----- end of Prometheus log -----",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// Calls `check` every 200 ms until it returns `Ok`, or panics with its last error at `deadline`.
pub fn poll<T>(what: &str, deadline: Instant, mut check: impl FnMut() -> Result<T, String>) -> T {
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
