//! `make bench-scale`, parts 2 and 3: **start-up, reconfiguration and memory**.
//!
//! - **Start-up**: Envoy spawned (pinned to `BENCH_ENVOY_CPU`) → admin `/ready`, at `--concurrency`
//!   1, 4 and 16, for bare Envoy, the V8 floor, the filter and the filter with 16 versions or
//!   10 / 1 000 / 100 000 pins; and the phases from Envoy's own log (ms timestamps):
//!   initializing → "loading N listener(s)" → the first VM's "VM started" line (module read, V8
//!   compilation, base VM instantiation) → its configure summary line (`on_configure`: config
//!   compile + one `define_metric` per series) → "loading stats configuration" (the main-thread
//!   VM too) → "starting workers" → the last worker's summary line → "starting main dispatch
//!   loop".
//! - **Memory**: RSS and every wasm linear memory (`/proc/<pid>/smaps`) right after `/ready`.
//! - **Reconfiguration**: the listener delivered by file-based LDS (a watched directory); an
//!   update changing only the plugin configuration is timed from writing the file (by rename) to
//!   `listener_manager.lds.update_success`, to the first new connection answered by the new
//!   configuration (the filter: a renamed response header), and to the old filter chain drained
//!   (`--drain-time-s 1` sets most of that).
//!
//! Knobs: `SCALE_STARTS` (3 per config and concurrency), `SCALE_CONCURRENCY` (1,4,16),
//! `SCALE_RELOADS` (5 per config and concurrency), `SCALE_MODULES` (other sticky-canary modules,
//! comma-separated, started on the filter-route config as `module:<file stem>`: an experiment).

use super::procs::{EnvoyProbe, LinearMemory, Tools};
use super::scale::{base, pins_config, plugin_json, runnable, set_plugin_json, versions_config};
use super::{check_interrupt, env_num};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_yaml::{Mapping, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use sticky_canary_harness::envoy::{get, key, Envoy, Launch, HCM};
use sticky_canary_harness::http::{free_port, Client, Request};
use sticky_canary_harness::native::Build;

/// Knobs of parts 2 and 3.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub starts: usize,
    pub concurrency: Vec<u32>,
    pub reloads: usize,
    pub modules: Vec<PathBuf>,
}

impl StartOptions {
    pub fn from_env() -> StartOptions {
        let concurrency: Vec<u32> = std::env::var("SCALE_CONCURRENCY")
            .ok()
            .map(|c| {
                c.split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .filter(|&n: &u32| n > 0)
                    .collect()
            })
            .filter(|v: &Vec<u32>| !v.is_empty())
            .unwrap_or_else(|| vec![1, 4, 16]);
        StartOptions {
            starts: env_num("SCALE_STARTS", 3usize),
            concurrency,
            reloads: env_num("SCALE_RELOADS", 5usize),
            modules: std::env::var("SCALE_MODULES")
                .unwrap_or_default()
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| PathBuf::from(p.trim()))
                .collect(),
        }
    }
}

/// The configs started for parts 2 and 3 (name, config, module override).
pub fn startup_configs(modules: &[PathBuf]) -> Result<Vec<(String, Value)>, String> {
    let mut out = vec![
        ("bare".to_string(), base("bare")?),
        ("floor".to_string(), base("floor")?),
        ("filter".to_string(), base("filter-route")?),
        ("filter-16-versions".to_string(), versions_config(16)?),
        ("filter-10-pins".to_string(), pins_config(10)?),
        ("filter-1000-pins".to_string(), pins_config(1_000)?),
        ("filter-100000-pins".to_string(), pins_config(100_000)?),
        // Envoy's own cost of a 100 000-pin-sized plugin configuration: the floor ignores it.
        ("floor-padded".to_string(), padded_floor()?),
    ];
    for m in modules {
        let mut doc = base("filter-route")?;
        set_module(&mut doc, m)?;
        let stem = m
            .file_stem()
            .map_or("candidate".into(), |s| s.to_string_lossy().into_owned());
        out.push((format!("module:{stem}"), doc));
    }
    Ok(out)
}

/// The V8 floor with a plugin configuration as long as the 100 000-pin one (which it ignores):
/// what Envoy itself spends on carrying a configuration that big.
pub fn padded_floor() -> Result<Value, String> {
    let pins = pins_config(100_000)?;
    let len = super::plugin_config(&pins).map_or(0, |c| c.len());
    let mut doc = base("floor")?;
    set_plugin_json(&mut doc, &json!({ "update": 0, "pad": "x".repeat(len) }))?;
    Ok(doc)
}

fn set_module(doc: &mut Value, module: &Path) -> Result<(), String> {
    let filters = get(doc, &[HCM, &["http_filters"]].concat());
    let f = filters
        .get_mut(0)
        .and_then(|f| f.get_mut("typed_config"))
        .and_then(|t| t.get_mut("config"))
        .and_then(|c| c.get_mut("vm_config"))
        .and_then(|v| v.get_mut("code"))
        .and_then(|c| c.get_mut("local"))
        .ok_or("filter-route has no local wasm module")?;
    let abs = fs::canonicalize(module).map_err(|e| format!("{}: {e}", module.display()))?;
    // Not ending in sticky_canary.wasm: `prepare` keeps it.
    f["filename"] = key(&abs.to_string_lossy());
    Ok(())
}

fn launch(tools: &Tools, concurrency: u32) -> Launch {
    Launch {
        wrapper: tools.pin(&tools.envoy_cpu),
        concurrency,
        poll: Duration::from_millis(5),
        timeout: Duration::from_secs(120),
        // Each variant's config is written for its build: run as it is.
        build: Build::Wasm,
    }
}

/// The phases of one start, from Envoy's log, in ms since "initializing epoch".
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Phases {
    /// "loading N listener(s)".
    pub listeners_from: Option<f64>,
    /// The first VM's "VM started" (sticky-canary only).
    pub first_vm_started: Option<f64>,
    /// The first VM's configure summary line (sticky-canary only).
    pub first_vm_configured: Option<f64>,
    /// "loading stats configuration": the listener (base and main-thread VMs) is built.
    pub listeners_done: Option<f64>,
    /// "starting workers".
    pub workers_from: Option<f64>,
    /// The last configure summary line (the last worker VM; sticky-canary only).
    pub last_vm_configured: Option<f64>,
    /// "starting main dispatch loop".
    pub main_loop: Option<f64>,
    /// Summary lines (one per configured VM).
    pub vms_configured: usize,
}

pub fn phases(log: &str) -> Phases {
    let mut p = Phases::default();
    let Some(t0) = log
        .lines()
        .find(|l| l.contains("initializing epoch"))
        .and_then(super::measure::log_ms)
    else {
        return p;
    };
    let at = |l: &str| {
        super::measure::log_ms(l).map(|t| {
            let d = t - t0;
            if d < 0.0 {
                d + 86_400_000.0
            } else {
                d
            }
        })
    };
    for l in log.lines() {
        if l.contains("] loading ") && l.contains(" listener(s)") && p.listeners_from.is_none() {
            p.listeners_from = at(l);
        } else if l.contains("VM started") && p.first_vm_started.is_none() {
            p.first_vm_started = at(l);
        } else if l.contains(": service=") && l.contains("wasm log") {
            if p.first_vm_configured.is_none() {
                p.first_vm_configured = at(l);
            }
            p.last_vm_configured = at(l);
            p.vms_configured += 1;
        } else if l.contains("loading stats configuration") && p.listeners_done.is_none() {
            p.listeners_done = at(l);
        } else if l.contains("starting workers") && p.workers_from.is_none() {
            p.workers_from = at(l);
        } else if l.contains("starting main dispatch loop") && p.main_loop.is_none() {
            p.main_loop = at(l);
        }
    }
    p
}

/// One wasm linear memory: its size and its resident part, KiB.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Memory {
    pub size_kb: u64,
    pub rss_kb: u64,
}

impl From<LinearMemory> for Memory {
    fn from(m: LinearMemory) -> Memory {
        Memory {
            size_kb: m.size_kb,
            rss_kb: m.rss_kb,
        }
    }
}

/// The starts of one config at one concurrency.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartRun {
    pub config: String,
    pub concurrency: u32,
    pub ready_ms: Vec<f64>,
    pub phases: Vec<Phases>,
    pub rss_kb: Vec<u64>,
    /// The wasm linear memories of the last start.
    pub wasm_memories: Vec<Memory>,
}

/// Part 2 (start-up) and 3 (memory): every config at every concurrency, `starts` times each,
/// interleaved (config order rotates per repetition).
pub fn run_startups(
    tools: &Tools,
    opts: &StartOptions,
    stop: &AtomicBool,
) -> Result<Vec<StartRun>, String> {
    let configs = startup_configs(&opts.modules)?;
    let yamls: Vec<(String, String)> = configs
        .into_iter()
        .map(|(n, d)| runnable(d).map(|y| (n, y)))
        .collect::<Result<_, _>>()?;
    let mut runs: Vec<StartRun> = Vec::new();
    for &c in &opts.concurrency {
        for (n, _) in &yamls {
            runs.push(StartRun {
                config: n.clone(),
                concurrency: c,
                ready_ms: Vec::new(),
                phases: Vec::new(),
                rss_kb: Vec::new(),
                wasm_memories: Vec::new(),
            });
        }
    }
    // One unmeasured start: the binary and the modules into the page cache.
    if let Some((_, y)) = yamls.get(2) {
        drop(Envoy::start_yaml(y, &launch(tools, 1)).map_err(|f| f.to_string())?);
    }
    for rep in 0..opts.starts {
        for &c in &opts.concurrency {
            print!(
                "start-up, concurrency {c}, start {}/{}:",
                rep + 1,
                opts.starts
            );
            for (name, yaml) in &yamls {
                check_interrupt(stop)?;
                let e = Envoy::start_yaml(yaml, &launch(tools, c))
                    .map_err(|f| format!("{name} (concurrency {c}): {f}"))?;
                // Let the workers finish their VMs before reading memory.
                std::thread::sleep(Duration::from_millis(300));
                let ms = e.ready_after().as_secs_f64() * 1000.0;
                print!(" {name} {ms:.0} ms");
                let _ = std::io::Write::flush(&mut std::io::stdout());
                if let Some(r) = runs
                    .iter_mut()
                    .find(|r| r.config == *name && r.concurrency == c)
                {
                    r.ready_ms.push(ms);
                    r.phases.push(phases(&e.log()));
                    if let Some(k) = e.rss_kb() {
                        r.rss_kb.push(k);
                    }
                    r.wasm_memories = e.wasm_memories().into_iter().map(Memory::from).collect();
                }
            }
            println!();
        }
    }
    Ok(runs)
}

// ---------------------------------------------------------------------------------------------
// Reconfiguration.

/// One config's listener updates at one concurrency.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReloadRun {
    pub config: String,
    pub concurrency: u32,
    /// Write → `lds.update_success`, ms.
    pub accepted_ms: Vec<f64>,
    /// Write → a new connection answered by the new configuration, ms (filter only).
    pub serving_ms: Vec<f64>,
    /// Write → no listener or filter chain draining, ms (`--drain-time-s 1`).
    pub drained_ms: Vec<f64>,
    /// `listener_manager.listener_in_place_updated` at the end.
    pub in_place_updates: u64,
    pub rejected: u64,
}

fn write_atomically(path: &Path, content: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, content).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A runnable bootstrap split into a bootstrap taking its listener from a watched LDS file and
/// that listener (on a fixed free port, so that updates keep the address: in-place updates).
fn split_dynamic(yaml: &str, dir: &Path) -> Result<(String, Value, PathBuf), String> {
    let mut doc: Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    let listeners = doc["static_resources"]
        .as_mapping_mut()
        .and_then(|m| m.remove("listeners"))
        .ok_or("config has no static listeners")?;
    let mut listener = listeners
        .as_sequence()
        .and_then(|l| l.first().cloned())
        .ok_or("config has no listener")?;
    let port = free_port().map_err(|e| format!("free port: {e}"))?;
    listener["address"]["socket_address"]["port_value"] = Value::from(port);
    if let Some(m) = listener.as_mapping_mut() {
        m.insert(
            key("@type"),
            key("type.googleapis.com/envoy.config.listener.v3.Listener"),
        );
    }
    let lds_dir = dir.join("lds");
    fs::create_dir_all(&lds_dir).map_err(|e| e.to_string())?;
    let lds_file = lds_dir.join("listeners.yaml");
    let extra: Value = serde_yaml::from_str(&format!(
        "node: {{ id: scale, cluster: scale }}\ndynamic_resources:\n  lds_config:\n    resource_api_version: V3\n    path_config_source:\n      path: {}\n      watched_directory: {{ path: {} }}\n",
        lds_file.display(),
        lds_dir.display()
    ))
    .map_err(|e| e.to_string())?;
    if let (Some(d), Some(e)) = (doc.as_mapping_mut(), extra.as_mapping()) {
        for (k, v) in e {
            d.insert(k.clone(), v.clone());
        }
    }
    let boot = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    Ok((boot, listener, lds_file))
}

fn lds_text(listener: &Value) -> Result<String, String> {
    let mut file = Mapping::new();
    file.insert(key("resources"), Value::Sequence(vec![listener.clone()]));
    serde_yaml::to_string(&Value::Mapping(file)).map_err(|e| e.to_string())
}

/// The listener's plugin configuration, changed for update `k`: the filter's response header
/// renamed (so that the new configuration shows in a response), the floor's (ignored) string.
fn reconfigure(listener: &mut Value, filter: bool, k: usize) -> Result<Option<String>, String> {
    // `set_plugin_json` works on a bootstrap; wrap the listener in one.
    let mut boot = Value::Mapping(Mapping::new());
    boot["static_resources"] = Value::Mapping(Mapping::new());
    boot["static_resources"]["listeners"] = Value::Sequence(vec![listener.clone()]);
    let header = if filter {
        let mut p = plugin_json(&boot)?;
        let h = format!("x-canary-tag-{k}");
        p["response_header"] = json!(h);
        set_plugin_json(&mut boot, &p)?;
        Some(h)
    } else {
        // Keep the floor's configuration (and its size): only `update` changes.
        let mut p = plugin_json(&boot).unwrap_or_else(|_| json!({}));
        p["update"] = json!(k + 1);
        set_plugin_json(&mut boot, &p)?;
        None
    };
    *listener = boot["static_resources"]["listeners"][0].clone();
    Ok(header)
}

fn counter(e: &Envoy, name: &str) -> u64 {
    e.stats(&format!("^listener_manager\\.{name}$"))
        .ok()
        .and_then(|s| s.first().map(|(_, v)| *v))
        .unwrap_or(0)
}

/// Part 2, reconfiguration: for the floor, the filter and the filter with 100 000 pins, at every
/// concurrency, `reloads` plugin-config-only listener updates.
pub fn run_reloads(
    tools: &Tools,
    opts: &StartOptions,
    stop: &AtomicBool,
) -> Result<Vec<ReloadRun>, String> {
    let mut configs: Vec<(String, Value, bool)> = vec![
        ("floor".into(), base("floor")?, false),
        ("filter".into(), base("filter-route")?, true),
        ("filter-100000-pins".into(), pins_config(100_000)?, true),
        ("floor-padded".into(), padded_floor()?, false),
    ];
    for (name, doc) in startup_configs(&opts.modules)? {
        if name.starts_with("module:") {
            configs.push((name, doc, true));
        }
    }
    let mut out = Vec::new();
    for &c in &opts.concurrency {
        for (name, doc, filter) in &configs {
            check_interrupt(stop)?;
            let dir = sticky_canary_harness::tempdir("sticky-canary-scale-lds-");
            let (boot, mut listener, lds_file) =
                split_dynamic(&runnable(doc.clone())?, dir.path())?;
            write_atomically(&lds_file, &lds_text(&listener)?)?;
            let e = Envoy::start_yaml(&boot, &launch(tools, c))
                .map_err(|f| format!("{name} (LDS, concurrency {c}): {f}"))?;
            let addr = e.listener();
            let mut run = ReloadRun {
                config: name.to_string(),
                concurrency: c,
                accepted_ms: Vec::new(),
                serving_ms: Vec::new(),
                drained_ms: Vec::new(),
                in_place_updates: 0,
                rejected: 0,
            };
            print!("reload {name} concurrency {c}:");
            for k in 0..opts.reloads {
                check_interrupt(stop)?;
                let header = reconfigure(&mut listener, *filter, k)?;
                let text = lds_text(&listener)?;
                let before = counter(&e, "lds\\.update_success");
                let rejected = counter(&e, "lds\\.update_rejected");
                let t0 = Instant::now();
                write_atomically(&lds_file, &text)?;
                let deadline = t0 + Duration::from_secs(20);
                let mut accepted = None;
                while Instant::now() < deadline {
                    if counter(&e, "lds\\.update_success") > before {
                        accepted = Some(t0.elapsed());
                        break;
                    }
                    if counter(&e, "lds\\.update_rejected") > rejected {
                        return Err(format!(
                            "{name}: update rejected; log: {}",
                            e.log_path().display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let Some(accepted) = accepted else {
                    return Err(format!("{name}: update not applied in 20 s"));
                };
                let mut serving = None;
                if let Some(h) = &header {
                    while Instant::now() < deadline {
                        let ok = Client::connect(addr)
                            .and_then(|mut cl| {
                                cl.send(
                                    &Request::get("/api/cart").header("cookie", "session_id=probe"),
                                )
                            })
                            .map(|r| r.header_str(h).is_some())
                            .unwrap_or(false);
                        if ok {
                            serving = Some(t0.elapsed());
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                let mut drained = None;
                while Instant::now() < deadline {
                    if counter(&e, "total_filter_chains_draining") == 0
                        && counter(&e, "total_listeners_draining") == 0
                    {
                        drained = Some(t0.elapsed());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                run.accepted_ms.push(ms(accepted));
                if let Some(s) = serving {
                    run.serving_ms.push(ms(s));
                }
                if let Some(d) = drained {
                    run.drained_ms.push(ms(d));
                }
                print!(
                    " {:.1}/{}",
                    ms(accepted),
                    serving.map_or("-".into(), |s| format!("{:.1}", ms(s)))
                );
                let _ = std::io::Write::flush(&mut std::io::stdout());
                std::thread::sleep(Duration::from_millis(100));
            }
            println!(" ms (accepted/serving)");
            run.in_place_updates = counter(&e, "listener_in_place_updated");
            run.rejected = counter(&e, "lds\\.update_rejected");
            out.push(run);
            drop(e);
        }
    }
    Ok(out)
}
