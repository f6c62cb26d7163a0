//! What `make bench` prints and writes: per-entry summaries against bare Envoy and the V8 floor,
//! the targets, the results table, `summary.md` and `bench.json`.

use super::chart::chart_svg;
use super::measure::{ModuleSize, Sample, Spread};
use super::procs::{cpu_model, EnvoyProbe, WrkRun};
use super::requests::{cookie_header, session_keys, sessions, REQUEST_PATH};
use super::variants::{order_body, UPSTREAM_HEADERS};
use super::{Entry, Mode, Options, Tools};
use crate::display_path;
use serde_json::{json, Value as Json};
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// Start-up of one variant: time to ready and the log's own start-up span, per start.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Startup {
    pub variant: String,
    pub ready_ms: Vec<f64>,
    pub log_startup_ms: Vec<f64>,
    pub idle_rss_kb: Vec<u64>,
}

/// Everything `make bench` measured.
pub struct Report {
    pub options: Options,
    pub entries: Vec<Entry>,
    pub startups: Vec<Startup>,
    pub modules: Vec<ModuleSize>,
    pub tools: Tools,
    pub before: Json,
    pub after: Json,
    pub started_unix: u64,
    pub elapsed: Duration,
    pub ticks_per_s: f64,
}

/// Per-entry summary, with the per-round ratios to bare Envoy and the V8 floor (same mode).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub variant: String,
    pub label: String,
    pub mode: String,
    pub cpu_us_per_request: Spread,
    pub vs_bare: Spread,
    pub vs_floor: Spread,
    pub rps: Spread,
    pub envoy_cpu_share: Spread,
    pub others_on_envoy_core: Spread,
    pub load_core_busy: Spread,
    pub p50_ms: Option<Spread>,
    pub p99_ms: Option<Spread>,
    pub rss_kb: Option<u64>,
    pub wasm_memory_kb: Vec<u64>,
    pub requests: u64,
    pub non_2xx: u64,
    pub wrk_errors: u64,
    pub problems: Vec<String>,
}

/// Pairs of variants that differ by one feature, whose difference is that feature's cost per
/// request: (variant, the same without the feature, the feature).
pub const DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "filter-flows",
        "filter-bucket",
        "a valid flow cookie checked on every request (a clock read, SHA-256 of the key, HMAC-SHA256)",
    ),
    (
        "filter-route",
        "native-route",
        "the wasm VM instead of the native build (routing + tag)",
    ),
    (
        "filter-headers",
        "native-headers",
        "the wasm VM instead of the native build (+ 3 header rules)",
    ),
];

/// One feature's cost per request in one mode: the per-round differences of CPU µs per request
/// (same round), median and min–max.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Difference {
    pub variant: String,
    pub base: String,
    pub feature: String,
    pub mode: String,
    pub cpu_us_per_request: Spread,
}

impl Report {
    fn reference(&self, key: &str, mode: Mode) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.variant.key == key && e.mode == mode && e.candidate.is_none())
    }

    pub fn summaries(&self) -> Vec<Summary> {
        self.entries
            .iter()
            .map(|e| {
                let cpu: Vec<f64> = e.samples.iter().map(|s| s.cpu_us_per_request).collect();
                let ratio = |r: Option<&Entry>| {
                    let Some(r) = r else {
                        return Spread::of(&[]);
                    };
                    let v: Vec<f64> = e
                        .samples
                        .iter()
                        .zip(&r.samples)
                        .map(|(a, b)| a.cpu_us_per_request / b.cpu_us_per_request)
                        .collect();
                    Spread::of(&v)
                };
                let lat = |f: fn(&WrkRun) -> u64| {
                    (!e.latency.is_empty()).then(|| {
                        Spread::of(
                            &e.latency
                                .iter()
                                .map(|s| f(&s.wrk) as f64 / 1000.0)
                                .collect::<Vec<_>>(),
                        )
                    })
                };
                Summary {
                    variant: e.key(),
                    label: e.label(),
                    mode: e.mode.as_str().to_string(),
                    cpu_us_per_request: Spread::of(&cpu),
                    vs_bare: ratio(self.reference("bare", e.mode)),
                    vs_floor: ratio(self.reference("floor", e.mode)),
                    rps: Spread::of(&e.samples.iter().map(|s| s.rps).collect::<Vec<_>>()),
                    envoy_cpu_share: Spread::of(
                        &e.samples
                            .iter()
                            .map(|s| s.envoy_cpu_share)
                            .collect::<Vec<_>>(),
                    ),
                    others_on_envoy_core: Spread::of(
                        &e.samples
                            .iter()
                            .map(|s| s.others_on_envoy_core)
                            .collect::<Vec<_>>(),
                    ),
                    load_core_busy: Spread::of(
                        &e.samples
                            .iter()
                            .map(|s| s.load_core_busy)
                            .collect::<Vec<_>>(),
                    ),
                    p50_ms: lat(|w| w.p50_us),
                    p99_ms: lat(|w| w.p99_us),
                    rss_kb: e.envoy.rss_kb(),
                    wasm_memory_kb: e.envoy.wasm_memories().iter().map(|m| m.size_kb).collect(),
                    requests: e.samples.iter().map(|s| s.requests).sum(),
                    non_2xx: e
                        .samples
                        .iter()
                        .map(|s| s.requests.saturating_sub(s.ok))
                        .sum(),
                    wrk_errors: e
                        .samples
                        .iter()
                        .chain(&e.latency)
                        .map(|s| s.wrk.errors + s.wrk.status_errors)
                        .sum(),
                    problems: e.check.clone(),
                }
            })
            .collect()
    }

    /// The [`DIFFERENCES`] this run measured (both variants of a pair, in each mode).
    pub fn differences(&self) -> Vec<Difference> {
        let mut out = Vec::new();
        for m in &self.options.modes {
            for (variant, base, feature) in DIFFERENCES {
                let (Some(a), Some(b)) = (self.reference(variant, *m), self.reference(base, *m))
                else {
                    continue;
                };
                let per_round: Vec<f64> = a
                    .samples
                    .iter()
                    .zip(&b.samples)
                    .map(|(x, y)| x.cpu_us_per_request - y.cpu_us_per_request)
                    .collect();
                out.push(Difference {
                    variant: variant.to_string(),
                    base: base.to_string(),
                    feature: feature.to_string(),
                    mode: m.as_str().to_string(),
                    cpu_us_per_request: Spread::of(&per_round),
                });
            }
        }
        out
    }

    /// The targets, where this run stands.
    pub fn targets(&self, sums: &[Summary]) -> Vec<Json> {
        let get = |k: &str, m: &str| sums.iter().find(|s| s.variant == k && s.mode == m);
        let mut t = Vec::new();
        for mode in ["proxy", "direct"] {
            let cheaper_than_lua = |key: &str, s: &Summary| {
                get("lua", mode).map(|l| {
                    json!({
                        "target": format!("{key} cheaper than Lua ({mode})"),
                        "value": s.cpu_us_per_request.median, "limit": l.cpu_us_per_request.median,
                        "met": s.cpu_us_per_request.median < l.cpu_us_per_request.median,
                    })
                })
            };
            // Attribution by cluster (the default) and by the route's response header.
            for key in ["filter-headers", "filter-headers-routed"] {
                let Some(h) = get(key, mode) else { continue };
                t.push(json!({
                    "target": format!("{key} ≤ 1.10 × V8 floor ({mode})"),
                    "value": h.vs_floor.median, "limit": 1.10,
                    "met": h.vs_floor.median <= 1.10,
                }));
                t.extend(cheaper_than_lua(key, h));
            }
            if let (Some(g), Some(h)) = (get("filter-guard", mode), get("filter-headers", mode)) {
                let extra = g.cpu_us_per_request.median - h.cpu_us_per_request.median;
                t.push(json!({
                    "target": format!("the brake adds ≤ 1 µs per request: filter-guard − filter-headers ({mode})"),
                    "value": extra, "limit": 1.0,
                    "met": extra <= 1.0,
                }));
            }
            if let (Some(p), Some(g)) = (get("filter-guard-pool", mode), get("filter-guard", mode))
            {
                let extra = p.cpu_us_per_request.median - g.cpu_us_per_request.median;
                t.push(json!({
                    "target": format!("the pool adds nothing measurable per request: filter-guard-pool − filter-guard ({mode})"),
                    "value": extra, "limit": 1.0,
                    "met": extra <= 1.0,
                }));
            }
            if let Some(j) = get("filter-json", mode) {
                t.push(json!({
                    "target": format!("filter-json ≤ 1.30 × V8 floor ({mode})"),
                    "value": j.vs_floor.median, "limit": 1.30,
                    "met": j.vs_floor.median <= 1.30,
                }));
            }
            // The native build against bare Envoy itself. Direct mode has no upstream hop: the
            // same filter cost is a larger share of a cheaper request, hence the wider limit.
            if let Some(n) = get("native-headers", mode) {
                let limit = if mode == "proxy" { 1.10 } else { 1.20 };
                t.push(json!({
                    "target": format!("native-headers ≤ {limit:.2} × bare Envoy ({mode})"),
                    "value": n.vs_bare.median, "limit": limit,
                    "met": n.vs_bare.median <= limit,
                }));
                t.extend(cheaper_than_lua("native-headers", n));
            }
        }
        if let Some(m) = self.modules.iter().find(|m| m.name == "sticky-canary") {
            t.push(json!({
                "target": "module ≤ 200 KiB raw", "value": m.bytes, "limit": 200 * 1024,
                "met": m.bytes <= 200 * 1024,
            }));
            if let Some(g) = m.gzip_bytes {
                t.push(json!({
                    "target": "module ≤ 80 KiB gzip", "value": g, "limit": 80 * 1024,
                    "met": g <= 80 * 1024,
                }));
            }
        }
        t
    }

    pub fn to_json(&self) -> Json {
        let sums = self.summaries();
        let o = &self.options;
        json!({
            "about": "make bench: Envoy CPU time per request (utime+stime from /proc/<pid>/stat over http.ingress.downstream_rq_total), medians of per-round ratios (same round, same mode), min–max. A benchmark, not a test.",
            "started_unix": self.started_unix,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "settings": {
                "rounds": o.rounds, "seconds": o.seconds, "latency_seconds": o.latency_seconds,
                "connections": o.connections, "warmup_seconds": o.warmup_seconds,
                "starts": o.starts, "seed": o.seed,
                "modes": o.modes.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "envoy_cpu": self.tools.envoy_cpu, "load_cpu": self.tools.load_cpu,
                "load_nice": self.tools.load_nice,
                "pinned": self.tools.taskset,
                "clock_ticks_per_s": self.ticks_per_s,
                "request": {
                    "path": REQUEST_PATH,
                    "cookie_bytes": cookie_header(&session_keys(1)[0]).len(),
                    "distinct_sessions": sessions(),
                },
                "response": { "body_bytes": order_body().map_or(0, |b| b.len()), "headers": UPSTREAM_HEADERS.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>() },
            },
            "machine": {
                "cpu": cpu_model(),
                "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "before": self.before, "after": self.after,
            },
            "tools": self.tools.versions(),
            "modules": self.modules,
            "startup": self.startups,
            "summary": sums,
            "targets": self.targets(&sums),
            "differences": self.differences(),
            "rounds": self.entries.iter().map(|e| json!({
                "variant": e.key(), "mode": e.mode.as_str(),
                "throughput": e.samples, "latency_1_connection": e.latency,
            })).collect::<Vec<_>>(),
        })
    }
}

fn fmt_ratio(s: &Spread) -> String {
    if s.median.is_finite() {
        format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)
    } else {
        "-".into()
    }
}

/// A difference in µs, signed, with its min–max.
fn fmt_difference(s: &Spread) -> String {
    if s.median.is_finite() {
        format!("{:+.2} ({:+.2} to {:+.2})", s.median, s.min, s.max)
    } else {
        "-".into()
    }
}

pub(crate) fn fmt_kib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// The results table.
pub fn table(r: &Report) -> String {
    let sums = r.summaries();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<34} {:<6} {:>8} {:>19} {:>19} {:>8} {:>6} {:>7} {:>7} {:>7}",
        "variant",
        "mode",
        "CPU µs",
        "× bare (min–max)",
        "× floor (min–max)",
        "req/s",
        "core%",
        "p50 ms",
        "p99 ms",
        "RSS MiB"
    );
    for m in &r.options.modes {
        for x in sums.iter().filter(|x| x.mode == m.as_str()) {
            let lat =
                |o: &Option<Spread>| o.map_or("-".to_string(), |l| format!("{:.2}", l.median));
            let _ = writeln!(
                s,
                "{:<34} {:<6} {:>8.1} {:>19} {:>19} {:>8.0} {:>5.0}% {:>7} {:>7} {:>7}",
                x.label,
                x.mode,
                x.cpu_us_per_request.median,
                fmt_ratio(&x.vs_bare),
                fmt_ratio(&x.vs_floor),
                x.rps.median,
                x.envoy_cpu_share.median * 100.0,
                lat(&x.p50_ms),
                lat(&x.p99_ms),
                x.rss_kb.map_or("-".into(), fmt_kib),
            );
        }
    }
    s
}

/// The Markdown summary (`target/bench/summary.md`): the machine, the command, the results table
/// as the manual shows it, module sizes and where the run stands against the targets.
pub fn markdown(r: &Report) -> String {
    let sums = r.summaries();
    let o = &r.options;
    let mut s = String::new();
    let versions = r.tools.versions();
    let envoy = versions["envoy"].as_str().unwrap_or("");
    let envoy = envoy.split_once("version: ").map_or(envoy, |(_, v)| v);
    let _ = writeln!(s, "# make bench\n");
    let _ = writeln!(
        s,
        "{}, {} cores, kernel {}; Envoy: `{envoy}`.  ",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    );
    let _ = writeln!(
        s,
        "`BENCH_ROUNDS={} BENCH_SECONDS={} make bench`: {} rounds × {} s, {} connections, \
         Envoy on core {}, wrk + nginx on core {}; finished in {:.0} s. Medians of per-round \
         ratios (same round, same mode), with min–max.\n",
        o.rounds,
        o.seconds,
        o.rounds,
        o.seconds,
        o.connections,
        r.tools.envoy_cpu,
        r.tools.load_cpu,
        r.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| variant | mode | CPU µs/req | × bare | × V8 floor | req/s | p50 / p99 (1 conn) | RSS |"
    );
    let _ = writeln!(s, "|---|---|---:|---|---|---:|---|---:|");
    for m in &o.modes {
        for x in sums.iter().filter(|x| x.mode == m.as_str()) {
            let ratio = |v: &Spread, is_ref: bool| {
                if is_ref {
                    "1.00".to_string()
                } else {
                    fmt_ratio(v)
                }
            };
            let latency = match (&x.p50_ms, &x.p99_ms) {
                (Some(a), Some(b)) => format!("{:.2} / {:.2} ms", a.median, b.median),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} | {} | {:.0} | {} | {} |",
                x.label,
                x.mode,
                x.cpu_us_per_request.median,
                ratio(&x.vs_bare, x.variant == "bare"),
                ratio(&x.vs_floor, x.variant == "floor"),
                x.rps.median,
                latency,
                x.rss_kb
                    .map_or(String::new(), |k| format!("{} MiB", fmt_kib(k))),
            );
        }
    }
    let _ = writeln!(s, "\n| module | raw | gzip -9 |\n|---|---:|---:|");
    for m in &r.modules {
        let _ = writeln!(
            s,
            "| {} | {:.1} KiB | {} |",
            m.name,
            m.bytes as f64 / 1024.0,
            m.gzip_bytes
                .map_or("-".into(), |g| format!("{:.1} KiB", g as f64 / 1024.0)),
        );
    }
    let diffs = r.differences();
    if !diffs.is_empty() {
        let _ = writeln!(
            s,
            "\n| cost of | difference | mode | CPU µs/req (min–max) |\n|---|---|---|---:|"
        );
        for d in &diffs {
            let _ = writeln!(
                s,
                "| {} | {} − {} | {} | {} |",
                d.feature,
                d.variant,
                d.base,
                d.mode,
                fmt_difference(&d.cpu_us_per_request)
            );
        }
    }
    let _ = writeln!(s, "\n| target | this run | met |\n|---|---:|---|");
    for t in r.targets(&sums) {
        let value = t["value"].as_f64().unwrap_or(f64::NAN);
        let limit = t["limit"].as_f64().unwrap_or(f64::NAN);
        let shown = if value.fract() == 0.0 {
            format!("{value:.0} B (limit {limit:.0})")
        } else if limit > 2.0 {
            format!("{value:.1} µs (Lua {limit:.1} µs)")
        } else {
            format!("{value:.2} (limit {limit:.2})")
        };
        let _ = writeln!(
            s,
            "| {} | {shown} | {} |",
            t["target"].as_str().unwrap_or(""),
            if t["met"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        );
    }
    s
}

fn print_extras(r: &Report, out: &mut String) {
    let _ = writeln!(out, "\nModules:");
    for m in &r.modules {
        let _ = writeln!(
            out,
            "  {:<20} {:>7.1} KiB raw, {:>6} KiB gzip -9   ({})",
            m.name,
            m.bytes as f64 / 1024.0,
            m.gzip_bytes
                .map_or("-".into(), |g| format!("{:.1}", g as f64 / 1024.0)),
            m.path
        );
    }
    if !r.startups.is_empty() {
        let _ = writeln!(
            out,
            "\nStart-up (median of {} starts; spawn → /ready, and Envoy's log from \"initializing epoch\" to \"starting main dispatch loop\"):",
            r.options.starts
        );
        let bare = r
            .startups
            .iter()
            .find(|s| s.variant == "bare")
            .map(|s| Spread::of(&s.log_startup_ms).median);
        for s in &r.startups {
            let ready = Spread::of(&s.ready_ms).median;
            let log = Spread::of(&s.log_startup_ms).median;
            let extra = bare.map_or(String::new(), |b| {
                format!("  (+{:.0} ms over bare)", log - b)
            });
            let _ = writeln!(
                out,
                "  {:<16} ready {:>6.0} ms   log {:>6.0} ms{extra}   idle RSS {} MiB",
                s.variant,
                ready,
                log,
                s.idle_rss_kb.first().map_or("-".into(), |k| fmt_kib(*k))
            );
        }
    }
    let sums = r.summaries();
    let mem: Vec<String> = sums
        .iter()
        .filter(|s| !s.wasm_memory_kb.is_empty())
        .map(|s| {
            format!(
                "{}/{} {} KiB",
                s.variant,
                s.mode,
                s.wasm_memory_kb
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("+")
            )
        })
        .collect();
    if !mem.is_empty() {
        let _ = writeln!(
            out,
            "\nwasm linear memory after the runs (base VM + main-thread VM + worker VM): {}",
            mem.join(", ")
        );
    }
    let all: Vec<&Sample> = r.entries.iter().flat_map(|e| &e.samples).collect();
    let others = Spread::of(
        &all.iter()
            .map(|s| s.others_on_envoy_core)
            .collect::<Vec<_>>(),
    );
    let steal = Spread::of(
        &all.iter()
            .map(|s| s.steal_on_envoy_core)
            .collect::<Vec<_>>(),
    );
    let share = Spread::of(&all.iter().map(|s| s.envoy_cpu_share).collect::<Vec<_>>());
    let _ = writeln!(
        out,
        "\nNoise: other processes took {:.0} % of Envoy's core during the runs (median; {:.0}–{:.0} %), \
         steal {:.1} %; Envoy itself used {:.0} % of it (median; {:.0}–{:.0} %; below ~95 % it was \
         not saturated and CPU per request includes more idle wake-ups).",
        others.median * 100.0,
        others.min * 100.0,
        others.max * 100.0,
        steal.median * 100.0,
        share.median * 100.0,
        share.min * 100.0,
        share.max * 100.0
    );
    let diffs = r.differences();
    if !diffs.is_empty() {
        let _ = writeln!(
            out,
            "\nCosts (CPU µs per request: median of per-round differences, same round and mode, min–max):"
        );
        for d in &diffs {
            let _ = writeln!(
                out,
                "  {:<34} {:<6} {}: {}",
                format!("{} − {}", d.variant, d.base),
                d.mode,
                fmt_difference(&d.cpu_us_per_request),
                d.feature
            );
        }
    }
    let _ = writeln!(out, "\nTargets:");
    for t in r.targets(&sums) {
        let met = t["met"].as_bool().unwrap_or(false);
        let v = &t["value"];
        let shown = match v.as_f64() {
            Some(x) if x.fract() != 0.0 => format!("{x:.2}"),
            _ => v.to_string(),
        };
        let limit = match t["limit"].as_f64() {
            Some(x) if x.fract() != 0.0 => format!("{x:.2}"),
            _ => t["limit"].to_string(),
        };
        let _ = writeln!(
            out,
            "  [{}] {}: {shown} (limit {limit})",
            if met { "met " } else { "MISS" },
            t["target"].as_str().unwrap_or("")
        );
    }
    let problems: Vec<String> = sums
        .iter()
        .filter(|s| !s.problems.is_empty() || s.wrk_errors > 0 || s.non_2xx > s.requests / 100)
        .map(|s| {
            format!(
                "  {}/{}: {} (wrk errors {}, non-2xx {})",
                s.variant,
                s.mode,
                s.problems.join("; "),
                s.wrk_errors,
                s.non_2xx
            )
        })
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(
            out,
            "\nWARNING, checks that failed (numbers above are suspect):"
        );
        for p in problems {
            let _ = writeln!(out, "{p}");
        }
    }
}

/// Prints the report, writes `bench.json` and `cpu-per-request.svg`; returns their paths.
pub fn finish(r: Report) -> Result<(PathBuf, PathBuf), String> {
    let json_path = r.options.out_dir.join("bench.json");
    let svg_path = r.options.out_dir.join("cpu-per-request.svg");
    fs::create_dir_all(&r.options.out_dir).map_err(|e| e.to_string())?;
    let j = r.to_json();
    fs::write(
        &json_path,
        serde_json::to_string_pretty(&j).map_err(|e| format!("bench.json: {e}"))? + "\n",
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    fs::write(&svg_path, chart_svg(&r)).map_err(|e| format!("{}: {e}", svg_path.display()))?;
    let md_path = r.options.out_dir.join("summary.md");
    fs::write(&md_path, markdown(&r)).map_err(|e| format!("{}: {e}", md_path.display()))?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nEnvoy CPU time per request, median of {} rounds; ratios are medians of per-round ratios (min–max), same mode:\n",
        r.options.rounds
    );
    out.push_str(&table(&r));
    print_extras(&r, &mut out);
    let _ = writeln!(
        out,
        "\nload average before {} / after {}; finished in {:.0} s; every Envoy, wrk and nginx stopped.",
        r.before["loadavg"].as_str().unwrap_or(""),
        r.after["loadavg"].as_str().unwrap_or(""),
        r.elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "Raw numbers: {}", display_path(&json_path));
    let _ = writeln!(out, "Chart:       {}", display_path(&svg_path));
    let _ = writeln!(out, "Summary:     {}", display_path(&md_path));
    print!("{out}");
    Ok((json_path, svg_path))
}
