//! `make soak`: a million requests through the filter while Envoy's RSS and every wasm linear
//! memory are sampled; both must stay flat.

use super::checks::preflight;
use super::measure::measure;
use super::procs::{clock_ticks_per_second, machine_state, start_envoy, EnvoyProbe, Nginx, Tools};
use super::report::fmt_kib;
use super::requests::{script_for, session_keys, write_script};
use super::variants::{check_modules, check_native_module, config_yaml, Filter, Mode, Variant};
use super::{check_interrupt, env_num, now_unix};
use crate::display_path;
use serde_json::json;
use std::fs;
use std::sync::atomic::AtomicBool;
use sticky_canary_harness::envoy::{workspace_root, Envoy};

/// One soak measurement point.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SoakPoint {
    /// Requests since the baseline.
    pub requests: u64,
    pub rss_kb: u64,
    /// Size of each wasm linear memory, KiB.
    pub wasm_memory_kb: Vec<u64>,
    pub wasm_rss_kb: Vec<u64>,
}

/// The soak of one variant.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Soak {
    pub variant: String,
    pub mode: String,
    pub warmup_requests: u64,
    pub points: Vec<SoakPoint>,
    pub non_2xx: u64,
    /// Largest growth of any wasm linear memory from the baseline to the end, KiB.
    pub wasm_growth_kb: i64,
    pub rss_growth_kb: i64,
    pub problems: Vec<String>,
}

fn soak_point(e: &Envoy, requests: u64) -> SoakPoint {
    let mem = e.wasm_memories();
    SoakPoint {
        requests,
        rss_kb: e.rss_kb().unwrap_or(0),
        wasm_memory_kb: mem.iter().map(|m| m.size_kb).collect(),
        wasm_rss_kb: mem.iter().map(|m| m.rss_kb).collect(),
    }
}

/// Runs `make soak`: `SOAK_REQUESTS` (default 1 000 000) requests through each of `SOAK_VARIANTS`
/// (default filter-headers,filter-json; direct-response mode unless `SOAK_MODE=proxy`), sampling
/// Envoy's RSS and every wasm linear memory about every 100 000 requests.
pub fn soak(stop: &AtomicBool) -> Result<Vec<Soak>, String> {
    check_modules()?;
    let tools = Tools::find()?;
    let ticks = clock_ticks_per_second();
    let total: u64 = env_num("SOAK_REQUESTS", 1_000_000u64);
    let every: u64 = env_num("SOAK_SAMPLE_EVERY", 100_000u64).max(1000);
    let mode = match std::env::var("SOAK_MODE").as_deref() {
        Ok("proxy") => Mode::Proxy,
        _ => Mode::Direct,
    };
    let variants: Vec<&Variant> = std::env::var("SOAK_VARIANTS")
        .unwrap_or_else(|_| "filter-headers,filter-json".into())
        .split(',')
        .map(|k| Variant::by_key(k.trim()).ok_or(format!("SOAK_VARIANTS: unknown {k:?}")))
        .collect::<Result<_, _>>()?;
    if variants.iter().any(|v| v.filter.is_native()) {
        check_native_module()?;
    }
    let out_dir = workspace_root().join("target/bench");
    let script = write_script(&out_dir)?;
    let nginx = match mode {
        Mode::Proxy => Some(Nginx::start(&tools)?),
        Mode::Direct => None,
    };
    let conns = env_num("BENCH_CONNECTIONS", 32u32);
    println!(
        "soak: {total} requests per variant at {conns} connections, {} mode, Envoy on core {}; RSS and wasm linear memory every ~{every} requests",
        mode.as_str(),
        tools.envoy_cpu
    );
    let mut soaks = Vec::new();
    for v in variants {
        let yaml = config_yaml(v, mode, nginx.as_ref().map(|n| n.addr))?;
        let envoy = start_envoy(&tools, &yaml)?;
        let mut problems = preflight(v, envoy.listener(), &session_keys(1)[0]);
        // Warm-up: the allocator and V8 reach their steady state.
        let (mut warm, mut rate) = (0, 5_000.0f64);
        while warm < 20_000 {
            check_interrupt(stop)?;
            let s = measure(
                &tools,
                &envoy,
                &script_for(v, &script)?,
                conns,
                1.0,
                ticks,
                None,
            )?;
            warm += s.requests;
            rate = s.rps.max(100.0);
        }
        let (base_total, base_ok) = envoy.request_counters()?;
        let mut points = vec![soak_point(&envoy, 0)];
        println!(
            "{}/{}: baseline after {warm} warm-up requests: RSS {} MiB, wasm memories {:?} KiB",
            v.key,
            mode.as_str(),
            fmt_kib(points[0].rss_kb),
            points[0].wasm_memory_kb
        );
        let mut done = 0u64;
        while done < total {
            check_interrupt(stop)?;
            // The last stretch joins the previous chunk rather than making a tiny one.
            let left = total - done;
            let want = if left < every * 3 / 2 { left } else { every };
            let secs = (want as f64 / rate).clamp(1.0, 30.0);
            let s = measure(
                &tools,
                &envoy,
                &script_for(v, &script)?,
                conns,
                secs,
                ticks,
                None,
            )?;
            rate = s.rps.max(100.0);
            done = envoy.request_counters()?.0 - base_total;
            let p = soak_point(&envoy, done);
            println!(
                "  {:>9} requests  RSS {:>7} MiB  wasm memories {:?} KiB (resident {:?})  {:.0} req/s",
                p.requests,
                fmt_kib(p.rss_kb),
                p.wasm_memory_kb,
                p.wasm_rss_kb,
                s.rps
            );
            points.push(p);
        }
        let (end_total, end_ok) = envoy.request_counters()?;
        let non_2xx = (end_total - base_total).saturating_sub(end_ok - base_ok);
        if non_2xx > 0 {
            problems.push(format!("{non_2xx} non-2xx responses"));
        }
        let first = &points[0];
        let last = points.last().unwrap_or(first);
        let wasm_growth_kb = first
            .wasm_memory_kb
            .iter()
            .zip(&last.wasm_memory_kb)
            .map(|(a, b)| *b as i64 - *a as i64)
            .max()
            .unwrap_or(0);
        // Only a wasm filter has linear memories (the native build's memory is Envoy's RSS).
        let wasm = matches!(v.filter, Filter::StickyCanary | Filter::Floor);
        if first.wasm_memory_kb.is_empty() && wasm {
            problems.push("no wasm linear memory found in /proc/<pid>/smaps".into());
        }
        let rss_growth_kb = last.rss_kb as i64 - first.rss_kb as i64;
        println!(
            "{}/{}: wasm linear memory growth {} KiB over {} requests ({}); RSS {:+} KiB ({:+.3} bytes/request)",
            v.key,
            mode.as_str(),
            wasm_growth_kb,
            last.requests,
            if wasm_growth_kb == 0 { "flat" } else { "GREW" },
            rss_growth_kb,
            rss_growth_kb as f64 * 1024.0 / last.requests.max(1) as f64
        );
        soaks.push(Soak {
            variant: v.key.to_string(),
            mode: mode.as_str().to_string(),
            warmup_requests: warm,
            points,
            non_2xx,
            wasm_growth_kb,
            rss_growth_kb,
            problems,
        });
    }
    drop(nginx);
    let path = out_dir.join("soak.json");
    let j = json!({
        "about": "make soak: Envoy RSS and every wasm linear memory (size of the read-write part of V8's reservation, from /proc/<pid>/smaps) sampled while requests run; growth is end minus the baseline taken after warm-up.",
        "started_unix": now_unix(),
        "machine": machine_state(),
        "soaks": soaks,
    });
    fs::write(
        &path,
        serde_json::to_string_pretty(&j).map_err(|e| format!("soak.json: {e}"))? + "\n",
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("Raw numbers: {}", display_path(&path));
    Ok(soaks)
}
