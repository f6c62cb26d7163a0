//! `make bench` and `make soak`: what sticky-canary costs per request in a real Envoy, side by side
//! with bare Envoy, the cheapest proxy-wasm filter (the *V8 floor*) and the same routing decision in
//! Envoy's Lua filter. The filter runs in both builds, in the same rounds: the wasm module
//! (`filter-*`) and the same core as an Envoy dynamic module (`native-*`, the same configs with
//! the filter rewritten for it). A benchmark, never a timed test: nothing here fails on speed.
//!
//! Method (printed with the results, and in the manual, "Performance"):
//! - one Envoy per variant, all running at once, each pinned to one core (`taskset -c 1`,
//!   `--concurrency 1`); wrk and the upstream (one nginx worker) share the other core
//!   (`taskset -c 0`);
//! - **figure of merit**: Envoy's CPU time per request = utime + stime from `/proc/<pid>/stat`
//!   divided by the exact request count from Envoy's admin counter
//!   `http.ingress.downstream_rq_total`, both read before and after one wrk run at 32
//!   connections;
//! - every round runs every variant once, in a freshly shuffled order (seeded, so reproducible);
//!   a variant's per-round CPU is divided by bare Envoy's and the V8 floor's *of the same round and
//!   mode*, and the medians of those per-round ratios are reported with their min–max;
//! - throughput at 32 connections, p50/p99 latency at 1 connection, RSS, wasm linear memory,
//!   start-up time, and module sizes (the wasm module and the native build's `.so`) complete the
//!   picture;
//! - direct-response mode (every route a `direct_response` carrying the same headers and body as
//!   the upstream) isolates the filter from the upstream hop.
//!
//! Configs: `envoy/bench/<variant>.yaml` (runnable by hand with fixed ports); this module rewrites
//! only the ports and paths, and derives the direct-response mode from them. The cheap correctness
//! checks of these configs run in `make test` (`tools/tests/bench_configs.rs`).
//!
//! Tools (`envoy/bench/install-tools.sh` unpacks the Debian packages into `.venv/bench`):
//! - **wrk** (Debian 4.1): C, event-driven, one thread drives 32 keep-alive connections for a
//!   fraction of Envoy's CPU per request; its LuaJIT hook rotates 1000 pre-built requests with
//!   distinct ~300-byte cookies and prints exact latency percentiles. It is closed-loop (no
//!   coordinated-omission correction; wrk2 is not packaged), which is fine for CPU per request and
//!   for 1-connection latency.
//! - **nginx** (Debian 1.22), one worker answering from memory (`return 200`, 1 KiB JSON and the
//!   rule headers): a real HTTP/1.1 upstream whose cost per request is a fraction of Envoy's. An
//!   Envoy direct response as the upstream would be a second Envoy, as expensive as the proxy under
//!   test, on the load generator's core; direct-response mode covers "no upstream" anyway.
//!
//! Every sample also records what else ran (other processes' and steal time on Envoy's core, wrk's
//! and nginx's CPU), so a noisy run says so. Knobs are environment variables, listed on
//! [`Options`], [`Tools`] and [`soak()`].
//!
//! - [`variants`]: the variants, their checked-in configs and how they are made runnable;
//! - [`requests`]: the benchmark's requests (cookies, headers) and the wrk script that sends them
//!   (for `filter-flows`, a script of its own whose requests also carry a valid flow cookie, issued
//!   afresh before every run);
//! - [`procs`]: the programs (wrk, nginx, a pinned Envoy) and what `/proc` says about them (CPU
//!   ticks, RSS, wasm linear memories, the machine);
//! - [`measure`](mod@measure): one measured wrk run, spreads, module sizes, start-up times;
//! - [`checks`]: what every variant must answer and count, so that no figure comes from a broken
//!   config;
//! - [`report`]: the summaries, the table, `summary.md` and `bench.json`; [`chart`]: the SVG;
//! - [`soak`](mod@soak): `make soak`; [`services`](mod@services): `make bench-services` (1 to 1 000
//!   services in one plugin instance);
//! - here: the knobs ([`Options`]) and the run itself ([`run`]).

pub mod chart;
pub mod checks;
pub mod measure;
pub mod procs;
pub mod report;
pub mod requests;
pub mod scale;
pub mod scale_run;
pub mod services;
pub mod soak;
pub mod startup;
pub mod variants;

pub use checks::{expected_version, preflight};
pub use procs::Tools;
pub use report::{finish, Report};
pub use requests::{
    cookie_header, request, request_for, session_keys, wrk_script, wrk_script_with_flows,
    FlowCookies, REQUEST_HEADERS, REQUEST_PATH,
};
pub use soak::soak;
pub use variants::{
    bench_dir, check_modules, check_native_module, config_yaml, config_yaml_with, floor_wasm_path,
    metrics_flush, native_module_path, order_body, plan, plugin_config, prepare, set_cluster,
    vm_env, Filter, Mode, Variant, UPSTREAM_HEADERS, VARIANTS,
};

use checks::counter_check;
use measure::{measure, module_size, startup_from_log, ModuleSize, Sample, Spread};
use procs::{clock_ticks_per_second, machine_state, start_envoy, EnvoyProbe, Nginx};
use report::Startup;
use requests::{script_for, write_script};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use sticky_canary_harness::envoy::{wasm_path, workspace_root, Envoy};
use sticky_canary_harness::Rng;

pub(crate) fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Knobs of `make bench` (environment variables).
#[derive(Clone, Debug)]
pub struct Options {
    /// `BENCH_ROUNDS` (default 10).
    pub rounds: usize,
    /// `BENCH_SECONDS`: each 32-connection run, whole seconds (default 2).
    pub seconds: f64,
    /// `BENCH_LATENCY_SECONDS`: each 1-connection latency run, proxy mode, whole seconds
    /// (default 1; 0 = off).
    pub latency_seconds: f64,
    /// `BENCH_CONNECTIONS` (default 32).
    pub connections: u32,
    /// `BENCH_WARMUP_SECONDS` per Envoy before the first round (default 1).
    pub warmup_seconds: f64,
    /// `BENCH_STARTS`: start-up time measurements per variant (default 3).
    pub starts: usize,
    /// `BENCH_SEED` for the shuffled order (default 2026).
    pub seed: u64,
    /// `BENCH_MODES`: `proxy,direct` (default both).
    pub modes: Vec<Mode>,
    /// `BENCH_VARIANTS`: comma-separated keys (default all).
    pub variants: Vec<&'static Variant>,
    /// Where the JSON and SVG go (`target/bench`).
    pub out_dir: PathBuf,
    /// `BENCH_CANDIDATE_WASM`: other sticky-canary modules (comma-separated), each run as extra
    /// `<variant>+<file stem>` entries of every wasm sticky-canary variant in the same rounds (an
    /// A/B of a change).
    pub candidates: Vec<PathBuf>,
}

impl Options {
    pub fn from_env() -> Result<Options, String> {
        let modes = match std::env::var("BENCH_MODES") {
            Ok(m) if !m.trim().is_empty() => m
                .split(',')
                .map(|s| match s.trim() {
                    "proxy" => Ok(Mode::Proxy),
                    "direct" => Ok(Mode::Direct),
                    other => Err(format!(
                        "BENCH_MODES: unknown mode {other:?} (proxy, direct)"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => vec![Mode::Proxy, Mode::Direct],
        };
        let variants = match std::env::var("BENCH_VARIANTS") {
            Ok(v) if !v.trim().is_empty() => {
                let mut out = Vec::new();
                for k in v.split(',').map(str::trim) {
                    out.push(Variant::by_key(k).ok_or_else(|| {
                        format!(
                            "BENCH_VARIANTS: unknown variant {k:?} ({})",
                            VARIANTS
                                .iter()
                                .map(|v| v.key)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?);
                }
                // Ratios need their references.
                for r in ["bare", "floor"] {
                    if let Some(v) = Variant::by_key(r).filter(|_| !out.iter().any(|v| v.key == r))
                    {
                        out.insert(0, v);
                    }
                }
                out.sort_by_key(|v| VARIANTS.iter().position(|x| x.key == v.key));
                out
            }
            _ => VARIANTS.iter().collect(),
        };
        Ok(Options {
            rounds: env_num("BENCH_ROUNDS", 10usize).max(1),
            seconds: env_num("BENCH_SECONDS", 2.0f64).round().max(1.0),
            latency_seconds: env_num("BENCH_LATENCY_SECONDS", 1.0f64).round().max(0.0),
            connections: env_num("BENCH_CONNECTIONS", 32u32).max(1),
            warmup_seconds: env_num("BENCH_WARMUP_SECONDS", 1.0f64).round().max(0.0),
            starts: env_num("BENCH_STARTS", 3usize),
            seed: env_num("BENCH_SEED", 2026u64),
            modes,
            variants,
            out_dir: workspace_root().join("target/bench"),
            candidates: std::env::var("BENCH_CANDIDATE_WASM")
                .unwrap_or_default()
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| PathBuf::from(p.trim()))
                .collect(),
        })
    }

    /// A rough duration of the measured part, for the banner.
    pub fn estimate(&self) -> Duration {
        let candidates = self.candidates.len()
            * self
                .variants
                .iter()
                .filter(|v| v.filter == Filter::StickyCanary)
                .count();
        let entries = ((self.variants.len() + candidates) * self.modes.len()) as f64;
        let proxy = if self.modes.contains(&Mode::Proxy) {
            self.variants.len() as f64
        } else {
            0.0
        };
        let per_round = entries * (self.seconds + 0.15) + proxy * (self.latency_seconds + 0.15);
        let startup = self.starts as f64 * self.variants.len() as f64 * 0.8
            + entries * (1.0 + self.warmup_seconds);
        Duration::from_secs_f64(per_round * self.rounds as f64 + startup)
    }
}

/// One variant in one mode, with its running Envoy and its samples.
pub struct Entry {
    pub variant: &'static Variant,
    pub mode: Mode,
    /// Runs this `BENCH_CANDIDATE_WASM` module instead of the built one.
    pub candidate: Option<PathBuf>,
    pub envoy: Envoy,
    pub samples: Vec<Sample>,
    pub latency: Vec<Sample>,
    pub check: Vec<String>,
}

impl Entry {
    /// The variant's key, `+<module file stem>` for a candidate module.
    pub fn key(&self) -> String {
        match self.candidate_name() {
            Some(c) => format!("{}+{c}", self.variant.key),
            None => self.variant.key.to_string(),
        }
    }

    pub fn label(&self) -> String {
        match self.candidate_name() {
            Some(c) => format!("{} [{c}]", self.variant.label),
            None => self.variant.label.to_string(),
        }
    }

    fn candidate_name(&self) -> Option<String> {
        self.candidate.as_ref().map(|p| {
            p.file_stem()
                .map_or("candidate".into(), |s| s.to_string_lossy().into_owned())
        })
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.key(), self.mode.as_str())
    }
}

/// A flag set by Ctrl-C / SIGTERM: the bench stops between runs and kills what it started.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        f.store(true, Ordering::SeqCst);
    });
    flag
}

pub(crate) fn check_interrupt(flag: &AtomicBool) -> Result<(), String> {
    if flag.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Shuffles `v` in place (Fisher–Yates), for the order of each round.
fn shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Runs `make bench`. Progress goes to stdout as it happens.
pub fn run(opts: Options, stop: &AtomicBool) -> Result<Report, String> {
    check_modules()?;
    if opts.variants.iter().any(|v| v.filter.is_native()) {
        check_native_module()?;
    }
    let tools = Tools::find()?;
    let ticks_per_s = clock_ticks_per_second();
    let started = Instant::now();
    let started_unix = now_unix();
    let before = machine_state();
    let script = write_script(&opts.out_dir)?;
    if !tools.taskset {
        println!("note: taskset not found; processes are not pinned to cores");
    }
    println!(
        "Envoy on core {}, wrk + nginx on core {}; {} rounds × {} variants × {} mode(s), {} s at {} connections{}; about {:.0} min.",
        tools.envoy_cpu,
        tools.load_cpu,
        opts.rounds,
        opts.variants.len(),
        opts.modes.len(),
        opts.seconds,
        opts.connections,
        if opts.latency_seconds > 0.0 {
            format!(", then {} s at 1 connection (proxy mode)", opts.latency_seconds)
        } else {
            String::new()
        },
        opts.estimate().as_secs_f64() / 60.0
    );
    println!(
        "load average before: {}",
        before["loadavg"].as_str().unwrap_or("")
    );

    let modules: Vec<ModuleSize> = [
        ("sticky-canary", wasm_path()),
        ("sticky-canary native", native_module_path()),
        ("V8 floor", floor_wasm_path()),
    ]
    .iter()
    .filter_map(|(n, p)| module_size(n, p))
    .chain(opts.candidates.iter().filter_map(|p| {
        module_size(
            &p.file_stem()
                .map_or("candidate".into(), |s| s.to_string_lossy()),
            p,
        )
    }))
    .collect();

    let nginx = Nginx::start(&tools)?;
    println!("upstream: nginx (pid {}) on {}", nginx.pid(), nginx.addr);

    // Start-up: each variant started and stopped a few times, one at a time.
    let mut startups = Vec::new();
    if opts.starts > 0 {
        // Unmeasured starts first: the binary and the modules into the page cache (the V8 floor,
        // and a native variant's for the native build's library).
        let native = opts.variants.iter().copied().find(|v| v.filter.is_native());
        for v in std::iter::once(&VARIANTS[1]).chain(native) {
            let warm = config_yaml(v, Mode::Proxy, Some(nginx.addr))?;
            drop(start_envoy(&tools, &warm)?);
        }
        print!("start-up:");
        for v in &opts.variants {
            let mut st = Startup {
                variant: v.key.to_string(),
                ..Startup::default()
            };
            let yaml = config_yaml(v, Mode::Proxy, Some(nginx.addr))?;
            for _ in 0..opts.starts {
                check_interrupt(stop)?;
                let e = start_envoy(&tools, &yaml)?;
                st.ready_ms.push(e.ready_after().as_secs_f64() * 1000.0);
                if let Some(ms) = startup_from_log(&e.log()) {
                    st.log_startup_ms.push(ms);
                }
                if let Some(k) = e.rss_kb() {
                    st.idle_rss_kb.push(k);
                }
            }
            print!(" {} {:.0} ms", v.key, Spread::of(&st.ready_ms).median);
            let _ = std::io::Write::flush(&mut std::io::stdout());
            startups.push(st);
        }
        println!();
    }

    // One long-lived Envoy per variant and mode (and per candidate sticky-canary variant).
    let mut entries: Vec<Entry> = Vec::new();
    let probe = session_keys(1)[0].clone();
    for m in &opts.modes {
        for v in &opts.variants {
            let mut runs: Vec<Option<PathBuf>> = vec![None];
            if v.filter == Filter::StickyCanary {
                runs.extend(opts.candidates.iter().cloned().map(Some));
            }
            for candidate in runs {
                check_interrupt(stop)?;
                let upstream = (*m == Mode::Proxy).then_some(nginx.addr);
                let module = candidate.as_deref();
                let envoy = start_envoy(&tools, &config_yaml_with(v, *m, upstream, module)?)?;
                let check = preflight(v, envoy.listener(), &probe);
                let entry = Entry {
                    variant: v,
                    mode: *m,
                    candidate,
                    envoy,
                    samples: Vec::new(),
                    latency: Vec::new(),
                    check,
                };
                if !entry.check.is_empty() {
                    println!(
                        "WARNING {}: {} (log: {})",
                        entry.name(),
                        entry.check.join("; "),
                        entry.envoy.log_path().display()
                    );
                }
                entries.push(entry);
            }
        }
    }
    println!(
        "started {} Envoys (pids {})",
        entries.len(),
        entries
            .iter()
            .map(|e| e.envoy.pid().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    if opts.warmup_seconds > 0.0 {
        print!("warm-up ({} s each)…", opts.warmup_seconds);
        let _ = std::io::Write::flush(&mut std::io::stdout());
        for e in &entries {
            check_interrupt(stop)?;
            measure(
                &tools,
                &e.envoy,
                &script_for(e.variant, &script)?,
                opts.connections,
                opts.warmup_seconds,
                ticks_per_s,
                None,
            )?;
        }
        println!(" done");
    }

    let nginx_pid = nginx.pid();
    let upstream_pid = |e: &Entry| (e.mode == Mode::Proxy).then_some(nginx_pid);
    let mut rng = Rng::new(opts.seed);
    let n = entries.len();
    for round in 0..opts.rounds {
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut rng, &mut order);
        for (k, &i) in order.iter().enumerate() {
            check_interrupt(stop)?;
            let e = &entries[i];
            // Flow cookies are issued afresh for every run (see `script_for`).
            let script = script_for(e.variant, &script)?;
            let s = measure(
                &tools,
                &e.envoy,
                &script,
                opts.connections,
                opts.seconds,
                ticks_per_s,
                upstream_pid(e),
            )?;
            let lat = if e.mode == Mode::Proxy && opts.latency_seconds > 0.0 {
                Some(measure(
                    &tools,
                    &e.envoy,
                    &script,
                    1,
                    opts.latency_seconds,
                    ticks_per_s,
                    upstream_pid(e),
                )?)
            } else {
                None
            };
            println!(
                "[round {:>2}/{}  {:>2}/{}] {:<22} {:>7.1} µs/req {:>8.0} req/s  Envoy {:>3.0}% of its core (others {:>2.0}%); load core: wrk {:>2.0}% nginx {:>2.0}% all {:>3.0}%{}",
                round + 1,
                opts.rounds,
                k + 1,
                n,
                e.name(),
                s.cpu_us_per_request,
                s.rps,
                s.envoy_cpu_share * 100.0,
                s.others_on_envoy_core * 100.0,
                s.wrk_cpu_share * 100.0,
                s.upstream_cpu_share * 100.0,
                s.load_core_busy * 100.0,
                lat.as_ref().map_or(String::new(), |l| format!(
                    "  1 conn p50 {:.2} ms p99 {:.2} ms",
                    l.wrk.p50_us as f64 / 1000.0,
                    l.wrk.p99_us as f64 / 1000.0
                ))
            );
            let e = &mut entries[i];
            e.samples.push(s);
            if let Some(l) = lat {
                e.latency.push(l);
            }
        }
    }
    // The filter hands its counters to Envoy every `metrics_flush_ms` (1 s by default): the last
    // runs' counts must reach Envoy before they are compared with its own request counts (else
    // the entry measured last comes up short).
    let flush = opts
        .variants
        .iter()
        .filter_map(|v| metrics_flush(v).ok())
        .max()
        .unwrap_or_default();
    if !flush.is_zero() {
        std::thread::sleep(flush + Duration::from_millis(100));
    }
    for e in entries.iter_mut() {
        let more = counter_check(e);
        e.check.extend(more);
    }
    let after = machine_state();
    drop(nginx);
    Ok(Report {
        options: opts,
        entries,
        startups,
        modules,
        tools,
        before,
        after,
        started_unix,
        elapsed: started.elapsed(),
        ticks_per_s,
    })
}
