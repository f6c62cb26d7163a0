//! One measurement: a wrk run against one Envoy with Envoy's CPU and request counters around it;
//! spreads of samples; module sizes; Envoy's own start-up time.

use super::procs::{children_ticks, core_ticks, cpu_ticks, run_wrk, EnvoyProbe, Tools, WrkRun};
use crate::display_path;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use sticky_canary_harness::envoy::Envoy;

/// One wrk run against one Envoy, with Envoy's CPU and request counters around it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Sample {
    /// Requests Envoy counted (`downstream_rq_total` delta).
    pub requests: u64,
    /// Of which 2xx.
    pub ok: u64,
    pub cpu_ticks: u64,
    /// Envoy CPU time per request, µs.
    pub cpu_us_per_request: f64,
    pub wall_s: f64,
    /// Requests per second (Envoy's count over wrk's duration).
    pub rps: f64,
    /// Envoy's CPU time over wall time: 1.0 means its core was saturated.
    pub envoy_cpu_share: f64,
    /// CPU time other processes took on Envoy's core over wall time (noise indicator).
    pub others_on_envoy_core: f64,
    /// Busy share of the load generator's core (wrk + nginx + others).
    pub load_core_busy: f64,
    /// Steal time on Envoy's core over wall time (the hypervisor's other guests).
    pub steal_on_envoy_core: f64,
    /// wrk's CPU time over wall time (from this process's reaped-children times).
    pub wrk_cpu_share: f64,
    /// nginx's CPU time over wall time (proxy mode).
    pub upstream_cpu_share: f64,
    pub wrk: WrkRun,
}

pub fn measure(
    tools: &Tools,
    envoy: &Envoy,
    script: &Path,
    connections: u32,
    seconds: f64,
    ticks_per_s: f64,
    upstream: Option<u32>,
) -> Result<Sample, String> {
    let url = format!("http://{}/", envoy.listener());
    let (rq0, ok0) = envoy.request_counters()?;
    let t0 = envoy.cpu_ticks()?;
    let w0 = children_ticks();
    let u0 = upstream.and_then(|p| cpu_ticks(p).ok()).unwrap_or(0);
    let (e0, s0) = core_ticks(&tools.envoy_cpu).unwrap_or_default();
    let (l0, _) = core_ticks(&tools.load_cpu).unwrap_or_default();
    let start = Instant::now();
    let w = run_wrk(tools, script, &url, connections, seconds)?;
    // Let Envoy finish the connections wrk closed before reading its side.
    std::thread::sleep(Duration::from_millis(50));
    let t1 = envoy.cpu_ticks()?;
    let w1 = children_ticks();
    let u1 = upstream.and_then(|p| cpu_ticks(p).ok()).unwrap_or(0);
    let (e1, s1) = core_ticks(&tools.envoy_cpu).unwrap_or_default();
    let (l1, _) = core_ticks(&tools.load_cpu).unwrap_or_default();
    let wall = start.elapsed().as_secs_f64();
    let (rq1, ok1) = envoy.request_counters()?;
    let requests = rq1.saturating_sub(rq0);
    let ticks = t1.saturating_sub(t0);
    let cpu_s = ticks as f64 / ticks_per_s;
    let dur_s = (w.duration_us as f64 / 1e6).max(1e-3);
    Ok(Sample {
        requests,
        ok: ok1.saturating_sub(ok0),
        cpu_ticks: ticks,
        cpu_us_per_request: if requests > 0 {
            cpu_s * 1e6 / requests as f64
        } else {
            f64::NAN
        },
        wall_s: wall,
        rps: requests as f64 / dur_s,
        envoy_cpu_share: cpu_s / wall,
        others_on_envoy_core: ((e1.saturating_sub(e0)) as f64 / ticks_per_s - cpu_s).max(0.0)
            / wall,
        load_core_busy: l1.saturating_sub(l0) as f64 / ticks_per_s / wall,
        steal_on_envoy_core: s1.saturating_sub(s0) as f64 / ticks_per_s / wall,
        wrk_cpu_share: w1.saturating_sub(w0) as f64 / ticks_per_s / wall,
        upstream_cpu_share: u1.saturating_sub(u0) as f64 / ticks_per_s / wall,
        wrk: w,
    })
}

/// Median, min and max.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// Size of a module, raw and gzip -9.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModuleSize {
    pub name: String,
    pub path: String,
    pub bytes: u64,
    pub gzip_bytes: Option<u64>,
}

pub fn module_size(name: &str, path: &Path) -> Option<ModuleSize> {
    let bytes = fs::metadata(path).ok()?.len();
    let gzip_bytes = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| o.stdout.len() as u64);
    Some(ModuleSize {
        name: name.to_string(),
        path: display_path(path),
        bytes,
        gzip_bytes,
    })
}

/// Milliseconds since midnight of an Envoy log line (`[2026-11-22 02:38:24.492]...`).
pub(crate) fn log_ms(line: &str) -> Option<f64> {
    let ts = line.get(12..24)?; // HH:MM:SS.mmm
    let (h, rest) = ts.split_once(':')?;
    let (m, s) = rest.split_once(':')?;
    Some(
        (h.parse::<f64>().ok()? * 3600.0
            + m.parse::<f64>().ok()? * 60.0
            + s.parse::<f64>().ok()?)
            * 1000.0,
    )
}

/// From Envoy's log: "initializing epoch 0" → "starting main dispatch loop", in ms (the whole
/// server start-up, module compilation and every VM start included).
pub fn startup_from_log(log: &str) -> Option<f64> {
    let first = log
        .lines()
        .find(|l| l.contains("initializing epoch"))
        .and_then(log_ms)?;
    let last = log
        .lines()
        .find(|l| l.contains("starting main dispatch loop"))
        .and_then(log_ms)?;
    let d = last - first;
    Some(if d < 0.0 { d + 86_400_000.0 } else { d })
}
