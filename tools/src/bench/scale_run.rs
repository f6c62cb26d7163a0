//! `make bench-scale`: the cost curves ([`super::scale`]), start-up, reconfiguration and memory
//! ([`super::startup`]) in one run, then `target/bench-scale/scale.json`, `summary.md` and one
//! SVG per curve. A benchmark: nothing fails on speed. `SCALE_PARTS` (curves,startup,reload)
//! picks the parts, `SCALE_OUT` the output directory. Every part records the load average before and after it: the machine is
//! shared, and a busy moment says so in the summary.

use super::measure::{module_size, Spread};
use super::now_unix;
use super::procs::{cpu_model, machine_state, Tools};
use super::scale::{
    curve_svg, curve_table, fits, run_curves, title, CurveOptions, Fit, Point, CURVES,
};
use super::startup::{run_reloads, run_startups, ReloadRun, StartOptions, StartRun};
use super::variants::{check_modules, floor_wasm_path};
use serde_json::{json, Value as Json};
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use sticky_canary_harness::envoy::{wasm_path, workspace_root};

fn loadavg() -> String {
    machine_state()["loadavg"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// What one part of the run saw of the machine.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PartLoad {
    pub part: String,
    pub load_before: String,
    pub load_after: String,
    pub seconds: f64,
}

/// Runs `make bench-scale`.
pub fn run_scale(stop: &AtomicBool) -> Result<PathBuf, String> {
    check_modules()?;
    let tools = Tools::find()?;
    // `SCALE_OUT`: another output directory (e.g. for an experiment beside the main run).
    let out_dir = std::env::var_os("SCALE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/bench-scale"));
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let parts: Vec<String> = std::env::var("SCALE_PARTS")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "curves,startup,reload".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let copts = CurveOptions::from_env()?;
    let sopts = StartOptions::from_env();
    let started = Instant::now();
    let started_unix = now_unix();
    println!(
        "bench-scale: parts {}; Envoy on core {}, wrk on core {}; load average {}",
        parts.join(","),
        tools.envoy_cpu,
        tools.load_cpu,
        loadavg()
    );
    let mut loads: Vec<PartLoad> = Vec::new();
    let part = |name: &str| {
        let before = loadavg();
        println!("== {name} (load average {before})");
        (name.to_string(), before, Instant::now())
    };
    let end = |(name, before, t): (String, String, Instant), loads: &mut Vec<PartLoad>| {
        let after = loadavg();
        println!(
            "== {name} done in {:.0} s (load average {after})",
            t.elapsed().as_secs_f64()
        );
        loads.push(PartLoad {
            part: name,
            load_before: before,
            load_after: after,
            seconds: t.elapsed().as_secs_f64(),
        });
    };
    let mut points: Vec<Point> = Vec::new();
    if parts.iter().any(|p| p == "curves") {
        let p = part("curves");
        println!(
            "{} rounds × {} s at {} connections, direct responses; curves {}",
            copts.rounds,
            copts.seconds,
            copts.connections,
            copts.curves.join(",")
        );
        points = run_curves(&tools, &copts, &out_dir, stop)?;
        end(p, &mut loads);
    }
    let mut starts: Vec<StartRun> = Vec::new();
    if parts.iter().any(|p| p == "startup") {
        let p = part("startup");
        starts = run_startups(&tools, &sopts, stop)?;
        end(p, &mut loads);
    }
    let mut reloads: Vec<ReloadRun> = Vec::new();
    if parts.iter().any(|p| p == "reload") {
        let p = part("reload");
        reloads = run_reloads(&tools, &sopts, stop)?;
        end(p, &mut loads);
    }
    let modules: Vec<Json> = [
        ("sticky-canary", wasm_path()),
        ("V8 floor", floor_wasm_path()),
    ]
    .iter()
    .filter_map(|(n, p)| module_size(n, p))
    .map(|m| json!(m))
    .collect();
    let doc = json!({
        "started_unix": started_unix,
        "elapsed_s": started.elapsed().as_secs_f64(),
        "machine": { "cpu": cpu_model(), "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "tools": tools.versions(),
        "modules": modules,
        "loads": loads,
        "curve_options": { "rounds": copts.rounds, "seconds": copts.seconds, "connections": copts.connections, "sessions": copts.sessions, "seed": copts.seed },
        "start_options": { "starts": sopts.starts, "concurrency": sopts.concurrency, "reloads": sopts.reloads },
        "points": points,
        "startups": starts,
        "reloads": reloads,
    });
    write_outputs(&out_dir, doc)?;
    Ok(out_dir)
}

/// Re-renders `summary.md` and the charts of a run from its `scale.json` (`scale-report [DIR]`),
/// e.g. after a change to the analysis.
pub fn rerender(dir: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = dir.unwrap_or_else(|| workspace_root().join("target/bench-scale"));
    let path = dir.join("scale.json");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Json = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    write_outputs(&dir, doc)?;
    Ok(dir)
}

fn field<T: serde::de::DeserializeOwned>(doc: &Json, name: &str) -> Result<T, String> {
    serde_json::from_value(doc.get(name).cloned().unwrap_or(Json::Array(Vec::new())))
        .map_err(|e| format!("scale.json {name}: {e}"))
}

/// Fits the curves and writes `scale.json` (with the fits), `summary.md` and the charts.
fn write_outputs(out_dir: &std::path::Path, mut doc: Json) -> Result<(), String> {
    let points: Vec<Point> = field(&doc, "points")?;
    let starts: Vec<StartRun> = field(&doc, "startups")?;
    let reloads: Vec<ReloadRun> = field(&doc, "reloads")?;
    let loads: Vec<PartLoad> = field(&doc, "loads")?;
    let fitted = fits(&points);
    let floor = points
        .iter()
        .find(|p| p.curve == "floor")
        .map(|p| Spread::of(&p.cpu_us));
    let mut charts = Vec::new();
    for c in CURVES {
        if fitted.iter().any(|f| f.curve == *c) {
            let path = out_dir.join(format!("{c}.svg"));
            fs::write(&path, curve_svg(c, title(c), &fitted, floor))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            charts.push(path);
        }
    }
    doc["fits"] = json!(fitted);
    let json_path = out_dir.join("scale.json");
    fs::write(
        &json_path,
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    for f in &fitted {
        println!("{} {}: {}", f.curve, f.series, f.verdict);
    }
    let md = summary_md(&doc, &fitted, floor, &starts, &reloads, &loads, &charts);
    let md_path = out_dir.join("summary.md");
    fs::write(&md_path, &md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    println!("\n{md}");
    println!(
        "wrote {}, {} and {} chart(s) under {}",
        json_path.display(),
        md_path.display(),
        charts.len(),
        out_dir.display()
    );
    Ok(())
}

fn med(v: &[f64]) -> f64 {
    Spread::of(v).median
}

fn opt_med(v: impl Iterator<Item = Option<f64>>) -> f64 {
    med(&v.flatten().collect::<Vec<_>>())
}

fn fmt_ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "–".into()
    }
}

fn summary_md(
    doc: &Json,
    fitted: &[Fit],
    floor: Option<Spread>,
    starts: &[StartRun],
    reloads: &[ReloadRun],
    loads: &[PartLoad],
    charts: &[PathBuf],
) -> String {
    let mut s = String::from("# make bench-scale\n\n");
    let _ = writeln!(
        s,
        "Machine: {} ({} cores), {}. Modules: {}.\n",
        doc["machine"]["cpu"].as_str().unwrap_or(""),
        doc["machine"]["cores"],
        doc["tools"]["envoy"].as_str().unwrap_or(""),
        doc["modules"]
            .as_array()
            .map(|m| m
                .iter()
                .map(|m| format!("{} {} B", m["name"].as_str().unwrap_or(""), m["bytes"]))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    s.push_str("| part | load average before | after | seconds |\n|---|---|---|---:|\n");
    for l in loads {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} |",
            l.part, l.load_before, l.load_after, l.seconds
        );
    }
    if !fitted.is_empty() {
        let _ = writeln!(
            s,
            "\n## Cost curves\n\n{} rounds × {} s, {} connections, direct responses, one Envoy per size (1 worker, pinned). V8 floor: {:.1} µs/req (min–max {:.1}–{:.1}).\n",
            doc["curve_options"]["rounds"],
            doc["curve_options"]["seconds"],
            doc["curve_options"]["connections"],
            floor.map_or(f64::NAN, |f| f.median),
            floor.map_or(f64::NAN, |f| f.min),
            floor.map_or(f64::NAN, |f| f.max)
        );
        for c in CURVES {
            if !fitted.iter().any(|f| f.curve == *c) {
                continue;
            }
            let chart = charts
                .iter()
                .find(|p| p.file_stem().is_some_and(|s| s == *c))
                .map(|p| crate::display_path(p))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "### {}\n\n{}\n[chart]({chart})\n",
                title(c),
                curve_table(c, fitted)
            );
        }
    }
    if !starts.is_empty() {
        s.push_str("\n## Start-up and memory\n\nMedians of the starts. Spawn → `/ready`; from Envoy's log (ms after \"initializing epoch\"): first VM started (module read + V8 compile + instantiate), first VM configured, listeners built (base + main VMs), workers (starting workers → main loop). RSS and wasm linear memories right after ready.\n\n");
        s.push_str("| config | concurrency | ready ms | log: listener load | first VM started | first VM configured | listeners built | workers phase | VMs configured | RSS MiB | wasm memories (KiB each) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for r in starts {
            let ph = &r.phases;
            let rss = med(&r.rss_kb.iter().map(|&k| k as f64).collect::<Vec<_>>()) / 1024.0;
            let mems: Vec<String> = r
                .wasm_memories
                .iter()
                .map(|m| format!("{}", m.size_kb))
                .collect();
            let mem = if mems.is_empty() {
                "–".to_string()
            } else {
                format!(
                    "{} × {} (resident {} KiB in all)",
                    mems.len(),
                    mems.first().cloned().unwrap_or_default(),
                    r.wasm_memories.iter().map(|m| m.rss_kb).sum::<u64>()
                )
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
                r.config,
                r.concurrency,
                fmt_ms(med(&r.ready_ms)),
                fmt_ms(opt_med(ph.iter().map(|p| p.listeners_from))),
                fmt_ms(opt_med(ph.iter().map(|p| p.first_vm_started))),
                fmt_ms(opt_med(ph.iter().map(|p| p.first_vm_configured))),
                fmt_ms(opt_med(ph.iter().map(|p| p.listeners_done))),
                fmt_ms(opt_med(ph.iter().map(|p| {
                    match (p.workers_from, p.main_loop) {
                        (Some(a), Some(b)) => Some(b - a),
                        _ => None,
                    }
                }))),
                ph.last().map_or(0, |p| p.vms_configured),
                rss,
                mem
            );
        }
    }
    if !reloads.is_empty() {
        s.push_str("\n## Plugin-config-only listener update (file-based LDS)\n\nMedians (min–max) over the updates, ms from writing the file.\n\n| config | concurrency | → update_success | → new config serving | → drained (drain time 1 s) | in-place updates |\n|---|---:|---|---|---|---:|\n");
        for r in reloads {
            let sp = |v: &[f64]| {
                let x = Spread::of(v);
                if x.median.is_finite() {
                    format!("{:.1} ({:.1}–{:.1})", x.median, x.min, x.max)
                } else {
                    "–".into()
                }
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                r.config,
                r.concurrency,
                sp(&r.accepted_ms),
                sp(&r.serving_ms),
                sp(&r.drained_ms),
                r.in_place_updates
            );
        }
    }
    s
}
