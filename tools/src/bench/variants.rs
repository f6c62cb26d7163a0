//! The variants (one checked-in config under `envoy/bench/` each) and how a config is made
//! runnable anywhere: ports, module paths, upstream, and the direct-response mode.
//!
//! The filter comes in two builds: the wasm module (`filter-*`) and the same core as an Envoy
//! dynamic module (`native-*`). A native variant's config is its wasm counterpart rewritten as the
//! harness rewrites a config for the native build (`sticky_canary_harness::native::to_native`, a
//! test holds them equal): the same plugin configuration, so the same requests, checks and
//! counters, and the wasm VM is the only difference.

use serde_yaml::{Mapping, Value};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub(crate) use sticky_canary_harness::envoy::header_option;
use sticky_canary_harness::envoy::{get, key, set_free_ports_of, wasm_path, workspace_root};
use sticky_canary_harness::envoy::{metrics_flush_of, wasm_plugin_config, ENDPOINT_ADDRESS, HCM};
use sticky_canary_harness::native;

/// Which filter a variant puts before the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    None,
    /// `tests/fixtures/floor-filter`: adds one response header.
    Floor,
    /// sticky-canary's wasm module.
    StickyCanary,
    /// sticky-canary's native build (an Envoy dynamic module), in the config of the wasm variant
    /// `of` rewritten for it.
    Native {
        of: &'static str,
    },
    Lua,
}

impl Filter {
    /// sticky-canary, either build.
    pub fn is_sticky_canary(self) -> bool {
        matches!(self, Filter::StickyCanary | Filter::Native { .. })
    }

    /// sticky-canary's native build.
    pub fn is_native(self) -> bool {
        matches!(self, Filter::Native { .. })
    }
}

/// One benchmark variant: a config file under `envoy/bench/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// File stem under `envoy/bench/`, and the variant's name in the output.
    pub key: &'static str,
    pub label: &'static str,
    pub filter: Filter,
    /// Every request also carries a valid flow cookie for its session (`session.hold.flows`),
    /// minted from the key the config gives the VM just before each run
    /// ([`super::requests::FlowCookies`]): the filter checks a MAC on every request.
    pub flow_cookie: bool,
}

/// Every variant, in the order of the report.
pub const VARIANTS: &[Variant] = &[
    Variant {
        key: "bare",
        label: "bare Envoy (router only)",
        filter: Filter::None,
        flow_cookie: false,
    },
    Variant {
        key: "floor",
        label: "V8 floor (wasm, adds 1 header)",
        filter: Filter::Floor,
        flow_cookie: false,
    },
    Variant {
        key: "filter-route",
        label: "sticky-canary: routing + tag",
        filter: Filter::StickyCanary,
        flow_cookie: false,
    },
    Variant {
        key: "filter-bucket",
        label: "sticky-canary: + bucket header, hold, bucket route",
        filter: Filter::StickyCanary,
        flow_cookie: false,
    },
    Variant {
        key: "filter-flows",
        label: "sticky-canary: + bucket header, hold, a valid flow cookie",
        filter: Filter::StickyCanary,
        flow_cookie: true,
    },
    Variant {
        key: "filter-headers",
        label: "sticky-canary: + 3 header rules",
        filter: Filter::StickyCanary,
        flow_cookie: false,
    },
    Variant {
        key: "filter-headers-routed",
        label: "sticky-canary: + 3 header rules, attribution by the route's header",
        filter: Filter::StickyCanary,
        flow_cookie: false,
    },
    Variant {
        key: "filter-guard",
        label: "sticky-canary: + 3 header rules + the brake (guard, 3 checks)",
        filter: Filter::StickyCanary,
        flow_cookie: false,
    },
    Variant {
        key: "filter-guard-pool",
        label: "sticky-canary: + 3 header rules + the pooled brake (guard.pool, a query a second)",
        filter: Filter::StickyCanary,
        flow_cookie: false,
    },
    Variant {
        key: "filter-json",
        label: "sticky-canary: + 1 JSON rule",
        filter: Filter::StickyCanary,
        flow_cookie: false,
    },
    Variant {
        key: "native-route",
        label: "native: routing + tag",
        filter: Filter::Native { of: "filter-route" },
        flow_cookie: false,
    },
    Variant {
        key: "native-headers",
        label: "native: + 3 header rules",
        filter: Filter::Native {
            of: "filter-headers",
        },
        flow_cookie: false,
    },
    Variant {
        key: "native-guard",
        label: "native: + 3 header rules + the brake (guard, 3 checks)",
        filter: Filter::Native { of: "filter-guard" },
        flow_cookie: false,
    },
    Variant {
        key: "native-json",
        label: "native: + 1 JSON rule",
        filter: Filter::Native { of: "filter-json" },
        flow_cookie: false,
    },
    Variant {
        key: "lua",
        label: "Lua filter: same routing",
        filter: Filter::Lua,
        flow_cookie: false,
    },
];

impl Variant {
    pub fn by_key(key: &str) -> Option<&'static Variant> {
        VARIANTS.iter().find(|v| v.key == key)
    }

    /// The key of the wasm variant whose configuration this one runs: the native build's
    /// counterpart, else the variant itself. What a variant must answer and count follows it.
    pub fn wasm_key(&self) -> &'static str {
        match self.filter {
            Filter::Native { of } => of,
            _ => self.key,
        }
    }

    /// The checked-in config, `envoy/bench/<key>.yaml`.
    pub fn config_path(&self) -> PathBuf {
        bench_dir().join(format!("{}.yaml", self.key))
    }

    /// The checked-in config, parsed.
    pub fn load(&self) -> Result<Value, String> {
        let path = self.config_path();
        let text =
            fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))
    }
}

/// Proxying to the upstream, or answering from the route (`direct_response`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Proxy,
    Direct,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Proxy => "proxy",
            Mode::Direct => "direct",
        }
    }
}

/// `envoy/bench`.
pub fn bench_dir() -> PathBuf {
    workspace_root().join("envoy/bench")
}

/// `FLOOR_WASM`, else the release build of `tests/fixtures/floor-filter`.
pub fn floor_wasm_path() -> PathBuf {
    std::env::var_os("FLOOR_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root()
                .join("tests/fixtures/floor-filter/target/wasm32-wasip1/release/floor_filter.wasm")
        })
}

/// The command that builds the floor module.
pub const FLOOR_BUILD: &str = "cargo build --release --target wasm32-wasip1 --manifest-path tests/fixtures/floor-filter/Cargo.toml";

/// The native build of the filter (`make build-native`), where Envoy looks for it: the harness
/// starts every Envoy with `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` at [`native::native_dir`].
pub fn native_module_path() -> PathBuf {
    native::native_dir().join(format!("lib{}.so", native::MODULE))
}

/// Fails loudly when the native build, which the native variants load, is missing.
pub fn check_native_module() -> Result<(), String> {
    let so = native_module_path();
    if so.exists() {
        Ok(())
    } else {
        Err(format!(
            "native filter not built at {} — run `make build-native`",
            so.display()
        ))
    }
}

/// Fails loudly when a wasm module the bench configs load is missing.
pub fn check_modules() -> Result<(), String> {
    let sc = wasm_path();
    if !sc.exists() {
        return Err(format!(
            "filter not built at {} — run `make build`",
            sc.display()
        ));
    }
    let floor = floor_wasm_path();
    if !floor.exists() {
        return Err(format!(
            "V8-floor fixture not built at {} — run `make fixtures` ({FLOOR_BUILD})",
            floor.display()
        ));
    }
    Ok(())
}

/// The upstream's response body: 1 KiB of JSON (`envoy/bench/order.json`).
pub fn order_body() -> Result<String, String> {
    let path = bench_dir().join("order.json");
    fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))
}

/// The headers the upstream adds to every response (nginx.conf `add_header`, and the
/// direct-response routes): the three the header business rules read.
pub const UPSTREAM_HEADERS: &[(&str, &str)] = &[
    ("x-order-id", "ord_7f3a9c2e41b8"),
    ("x-order-total", "41.41"),
    ("x-payment-status", "approved"),
];

/// The list at `path` of a bench config.
fn seq<'a>(doc: &'a mut Value, path: &[&str]) -> Result<&'a mut Vec<Value>, String> {
    get(doc, path)
        .as_sequence_mut()
        .ok_or_else(|| format!("bench config: {path:?} is not a list"))
}

fn http_filters(doc: &mut Value) -> Result<&mut Vec<Value>, String> {
    seq(doc, &[HCM, &["http_filters"]].concat())
}

/// The HTTP filters of a bench config, read-only (none when it has no such list).
fn filters_of(doc: &Value) -> &[Value] {
    HCM.iter()
        .chain(&["http_filters"])
        .try_fold(doc, |v, p| match p.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(*p),
        })
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

fn routes(doc: &mut Value) -> Result<&mut Vec<Value>, String> {
    seq(
        doc,
        &[HCM, &["route_config", "virtual_hosts", "0", "routes"]].concat(),
    )
}

fn clusters(doc: &mut Value) -> Result<&mut Vec<Value>, String> {
    seq(doc, &["static_resources", "clusters"])
}

/// Where a wasm filter loads its module from a file (`vm_config.code.local`), if it does.
fn local_code(filter: &mut Value) -> Option<&mut Value> {
    filter
        .get_mut("typed_config")?
        .get_mut("config")?
        .get_mut("vm_config")?
        .get_mut("code")?
        .get_mut("local")
}

/// The plugin configuration (JSON) of the config's filter, if it has one: a wasm filter's, else
/// the native build's (`filter_config` of the dynamic-module filter).
pub fn plugin_config(doc: &Value) -> Option<String> {
    wasm_plugin_config(doc).or_else(|| {
        filters_of(doc)
            .iter()
            .filter(|f| f.get("name").and_then(Value::as_str) == Some(native::FILTER))
            .find_map(|f| f["typed_config"]["filter_config"]["value"].as_str())
            .map(str::to_string)
    })
}

/// How long the variant's filter may keep counter increments before Envoy has them (its plugin
/// config's `metrics_flush_ms`; zero without sticky-canary). A native variant's is its wasm
/// counterpart's: the same plugin config, and the harness reads it from a wasm filter only.
pub fn metrics_flush(v: &Variant) -> Result<Duration, String> {
    if !v.filter.is_sticky_canary() {
        return Ok(Duration::ZERO);
    }
    let wasm = Variant::by_key(v.wasm_key())
        .ok_or_else(|| format!("{}: no variant {}", v.key, v.wasm_key()))?;
    Ok(metrics_flush_of(&wasm.load()?))
}

/// The environment variables a config gives its wasm VMs
/// (`vm_config.environment_variables.key_values` of its first wasm filter that has any). A native
/// filter reads the process's environment instead, and the bench starts Envoy with none of its
/// own: a native config has none.
pub fn vm_env(doc: &Value) -> Vec<(String, String)> {
    filters_of(doc)
        .iter()
        .find_map(|f| {
            let kv = [
                "typed_config",
                "config",
                "vm_config",
                "environment_variables",
            ]
            .iter()
            .try_fold(f, |v, p| v.get(*p))?
            .get("key_values")?
            .as_mapping()?;
            Some(
                kv.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// The variant's plugin configuration compiled as its VM compiles it: with the environment the
/// config gives the VM (so `session.hold.flows` has its key and can sign).
pub fn plan(v: &Variant) -> Result<sticky_canary::plan::Plan, String> {
    let doc = v.load()?;
    let cfg = plugin_config(&doc).ok_or_else(|| format!("{} has no plugin config", v.key))?;
    let env = vm_env(&doc);
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, value)| value.clone())
    };
    sticky_canary::plan::Plan::from_json_with_env(cfg.as_bytes(), &lookup)
        .map_err(|e| format!("{}'s plugin config: {e}", v.key))
}

/// Makes a checked-in config runnable anywhere: admin and listener on port 0 (Envoy picks free
/// ones), module and script paths absolute (honouring `STICKY_CANARY_WASM` and `FLOOR_WASM`; a
/// native filter names its module, found through the harness's
/// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`), every cluster endpoint at `upstream` when given, and in
/// [`Mode::Direct`] every route answered by a `direct_response` with the upstream's headers and
/// body.
pub fn prepare(doc: &mut Value, mode: Mode, upstream: Option<SocketAddr>) -> Result<(), String> {
    set_free_ports_of(doc);
    let root = workspace_root();
    for f in http_filters(doc)?.iter_mut() {
        if let Some(local) = local_code(f) {
            let file = local["filename"].as_str().unwrap_or_default().to_string();
            let path = if file.ends_with("sticky_canary.wasm") {
                wasm_path()
            } else if file.ends_with("floor_filter.wasm") {
                floor_wasm_path()
            } else {
                root.join(&file)
            };
            local["filename"] = key(&path.to_string_lossy());
        }
        if let Some(src) = f
            .get_mut("typed_config")
            .and_then(|t| t.get_mut("default_source_code"))
        {
            if let Some(file) = src.get("filename").and_then(Value::as_str) {
                let abs = root.join(file);
                src["filename"] = key(&abs.to_string_lossy());
            }
        }
    }
    if let Some(addr) = upstream {
        for c in clusters(doc)?.iter_mut() {
            set_endpoint(c, addr);
        }
    }
    if mode == Mode::Direct {
        let mut body = Mapping::new();
        body.insert(key("inline_string"), key(&order_body()?));
        let mut direct = Mapping::new();
        direct.insert(key("status"), Value::from(200));
        direct.insert(key("body"), Value::Mapping(body));
        for r in routes(doc)?.iter_mut() {
            let m = r
                .as_mapping_mut()
                .ok_or("bench config: a route is not a mapping")?;
            m.remove("route");
            m.insert(key("direct_response"), Value::Mapping(direct.clone()));
            // The route's own headers (a version tag, "filter-headers-routed") are kept.
            let mut add = match m.remove("response_headers_to_add") {
                Some(Value::Sequence(own)) => own,
                _ => Vec::new(),
            };
            add.push(header_option("content-type", "application/json"));
            add.extend(UPSTREAM_HEADERS.iter().map(|(n, v)| header_option(n, v)));
            m.insert(key("response_headers_to_add"), Value::Sequence(add));
        }
    }
    Ok(())
}

fn set_endpoint(cluster: &mut Value, addr: SocketAddr) {
    let sa = get(cluster, ENDPOINT_ADDRESS);
    sa["address"] = key(&addr.ip().to_string());
    sa["port_value"] = Value::from(addr.port());
}

/// Points the cluster called `name` at `addr` (e.g. one echo upstream per version in tests).
pub fn set_cluster(doc: &mut Value, name: &str, addr: SocketAddr) -> Result<(), String> {
    let c = clusters(doc)?
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| format!("bench config has no cluster {name}"))?;
    set_endpoint(c, addr);
    Ok(())
}

/// A variant's config, ready to run (see [`prepare`]), as YAML.
pub fn config_yaml(
    v: &Variant,
    mode: Mode,
    upstream: Option<SocketAddr>,
) -> Result<String, String> {
    config_yaml_with(v, mode, upstream, None)
}

/// Like [`config_yaml`], loading another sticky-canary module (`BENCH_CANDIDATE_WASM`).
pub fn config_yaml_with(
    v: &Variant,
    mode: Mode,
    upstream: Option<SocketAddr>,
    module: Option<&Path>,
) -> Result<String, String> {
    let mut doc = v.load()?;
    prepare(&mut doc, mode, upstream)?;
    if let Some(m) = module {
        for f in http_filters(&mut doc)?.iter_mut() {
            if let Some(local) = local_code(f) {
                if local["filename"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(".wasm") && !f.ends_with("floor_filter.wasm"))
                {
                    local["filename"] = key(&m.to_string_lossy());
                }
            }
        }
    }
    serde_yaml::to_string(&doc).map_err(|e| format!("serialize the {} config: {e}", v.key))
}
