//! A real Envoy under test: config derived from the shipped `envoy/envoy.yaml`, process lifecycle,
//! readiness, logs.
//!
//! - [`EnvoyConfig`] loads the reference config users run and rewrites only what a test must:
//!   ports (0, so Envoy picks free ones — no bind races between parallel tests), the wasm path,
//!   the plugin configuration, and one cluster + one route per upstream.
//! - [`Envoy`] starts the binary (`ENVOY_BIN`, else `.venv/bin/envoy`) with
//!   `--disable-hot-restart --concurrency 1`, waits for the admin `/ready`, finds the listener's
//!   port through the admin API, and on drop kills the process and waits for it. If the test is
//!   panicking, the drop prints Envoy's log.
//! - [`Launch`]: how it is started. Tests take the default; the bench (`tools/`) pins Envoy to a
//!   core through a wrapper command, may ask for more workers, and polls readiness finely enough
//!   to time the start-up ([`Envoy::ready_after`]).

use crate::http::{send_once, Request, Response};
use crate::native::{self, Build};
use crate::wrapped;
use serde_yaml::{Mapping, Value};
use std::cell::Cell;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sticky_canary::config::DEFAULT_METRICS_FLUSH_MS;
use sticky_canary::plan::services::Services;

/// How long Envoy may take to become ready (or to exit, for refused configs).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// `ENVOY_BIN`, else the Makefile-installed `.venv/bin/envoy`.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"))
}

/// `STICKY_CANARY_WASM`, else the release build of the filter.
pub fn wasm_path() -> PathBuf {
    std::env::var_os("STICKY_CANARY_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/wasm32-wasip1/release/sticky_canary.wasm"))
}

/// Fails loudly (never skips) when a prerequisite is missing: a skipped e2e suite proves nothing.
pub fn check_prerequisites() {
    let bin = envoy_bin();
    assert!(
        bin.exists(),
        "Envoy not found at {} — run `make envoy` (or set ENVOY_BIN)",
        bin.display()
    );
    let wasm = wasm_path();
    assert!(
        wasm.exists(),
        "filter not built at {} — run `make build` (or set STICKY_CANARY_WASM)",
        wasm.display()
    );
}

/// Fails loudly when the native build is missing.
fn check_native_built() {
    let so = native::native_dir().join("libsticky_canary.so");
    assert!(
        so.exists(),
        "native filter not built at {} — run `make build-native`",
        so.display()
    );
}

/// The shipped reference config.
pub fn reference_config_path() -> PathBuf {
    workspace_root().join("envoy/envoy.yaml")
}

/// Runs `envoy --mode validate` on a config file, from `cwd`. Returns (success, output).
pub fn validate(config: &Path, cwd: &Path) -> (bool, String) {
    let out = Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-c",
        ])
        .arg(config)
        .current_dir(cwd)
        // Where a native build of the filter is found (as for every Envoy the harness starts).
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", native::native_dir())
        .output()
        .expect("run envoy --mode validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `envoy --mode validate` on many configs, on two threads (validation is CPU-bound; the
/// machine has two cores), from `cwd`: the `name:\n<output>` of every config that failed.
pub fn validate_all(jobs: &[(String, PathBuf)], cwd: &Path) -> Vec<String> {
    if jobs.is_empty() {
        return Vec::new();
    }
    jobs.chunks(jobs.len().div_ceil(2))
        .map(|chunk| {
            let (cwd, chunk) = (cwd.to_path_buf(), chunk.to_vec());
            std::thread::spawn(move || {
                chunk
                    .into_iter()
                    .filter_map(|(name, path)| {
                        let (ok, out) = validate(&path, &cwd);
                        (!ok || !out.contains("OK")).then(|| format!("{name}:\n{out}"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|t| t.join().expect("a validation thread panicked"))
        .collect()
}

/// A YAML string value.
pub fn key(k: &str) -> Value {
    Value::String(k.to_string())
}

/// A `response_headers_to_add` entry that sets `name: value`, overwriting any value already there.
pub fn header_option(name: &str, value: &str) -> Value {
    let mut h = Mapping::new();
    h.insert(key("key"), key(name));
    h.insert(key("value"), key(value));
    let mut o = Mapping::new();
    o.insert(key("header"), Value::Mapping(h));
    o.insert(key("append_action"), key("OVERWRITE_IF_EXISTS_OR_ADD"));
    Value::Mapping(o)
}

/// The node at `path` (mapping keys, or list indexes as numbers); panics naming the path.
pub fn get<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut Value {
    let mut cur = v;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => cur.get_mut(i),
            Err(_) => cur.get_mut(*p),
        }
        .unwrap_or_else(|| panic!("envoy.yaml: missing {p} in {path:?}"));
    }
    cur
}

/// A copy of `template` (a STATIC cluster) named `name`, with one endpoint at `addr`.
fn cluster_like(template: &Value, name: &str, addr: SocketAddr) -> Value {
    let mut c = template.clone();
    *get(&mut c, &["name"]) = key(name);
    *get(&mut c, &["load_assignment", "cluster_name"]) = key(name);
    let sa = get(&mut c, ENDPOINT_ADDRESS);
    *get(sa, &["address"]) = key(&addr.ip().to_string());
    *get(sa, &["port_value"]) = Value::from(addr.port());
    c
}

/// The plugin configuration (JSON) of a bootstrap's wasm filter, if it has one.
pub fn wasm_plugin_config(doc: &Value) -> Option<String> {
    let filters = [HCM, &["http_filters"]]
        .concat()
        .into_iter()
        .try_fold(doc, |v, p| match p.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(p),
        })?;
    filters.as_sequence()?.iter().find_map(|f| {
        f.get("typed_config")?
            .get("config")?
            .get("configuration")?
            .get("value")?
            .as_str()
            .map(str::to_string)
    })
}

/// How long the filter of a bootstrap may keep counter increments before Envoy has them: its
/// plugin config's `metrics_flush_ms` (the filter's default when absent or unreadable); zero
/// without a sticky-canary filter.
pub fn metrics_flush_of(doc: &Value) -> Duration {
    wasm_plugin_config(doc).map_or(Duration::ZERO, |json| {
        // One service or several (`services`): batched counters reach Envoy on the plugin's
        // tick, the smallest non-zero interval; 0 when every service counts at once.
        let ms = Services::from_json_with_env(json.as_bytes(), &|_| None).map_or(
            DEFAULT_METRICS_FLUSH_MS,
            |s| {
                s.plans
                    .iter()
                    .map(|p| p.metrics_flush_ms)
                    .filter(|&ms| ms > 0)
                    .min()
                    .unwrap_or(0)
            },
        );
        Duration::from_millis(u64::from(ms))
    })
}

/// Admin and listener on port 0 (Envoy picks; the harness asks the admin API).
pub fn set_free_ports_of(doc: &mut Value) {
    *get(doc, &["admin", "address", "socket_address", "port_value"]) = Value::from(0);
    *get(
        doc,
        &[
            "static_resources",
            "listeners",
            "0",
            "address",
            "socket_address",
            "port_value",
        ],
    ) = Value::from(0);
}

/// An Envoy configuration for one test, derived from `envoy/envoy.yaml`.
#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    doc: Value,
    /// Environment variables for the Envoy process (e.g. for `host_env_keys`).
    process_env: Vec<(String, String)>,
}

/// Where a cluster's first endpoint address sits.
pub const ENDPOINT_ADDRESS: &[&str] = &[
    "load_assignment",
    "endpoints",
    "0",
    "lb_endpoints",
    "0",
    "endpoint",
    "address",
    "socket_address",
];

/// Where the HTTP connection manager's config sits in the reference layout.
pub const HCM: &[&str] = &[
    "static_resources",
    "listeners",
    "0",
    "filter_chains",
    "0",
    "filters",
    "0",
    "typed_config",
];

impl EnvoyConfig {
    /// The reference config, unchanged.
    pub fn reference() -> EnvoyConfig {
        EnvoyConfig::load(&reference_config_path())
    }

    /// A shipped config file, unchanged.
    pub fn load(path: &Path) -> EnvoyConfig {
        let text =
            fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        EnvoyConfig {
            doc: serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("parse {}: {e}", path.display())),
            process_env: Vec::new(),
        }
    }

    /// The reference config with `plugin_config` and these upstreams (name → address), the last
    /// route going to `default`; ports left for Envoy to choose; the built wasm.
    pub fn for_test(
        plugin_config: &str,
        upstreams: &[(&str, SocketAddr)],
        default: &str,
    ) -> EnvoyConfig {
        let mut c = EnvoyConfig::reference();
        c.set_plugin_config(plugin_config);
        c.for_upstreams(upstreams, default)
    }

    /// This config with these upstreams (one cluster and one route each, then a last route to
    /// `default`), ports left for Envoy to choose, and the built wasm. Its plugin config is kept.
    pub fn for_upstreams(mut self, upstreams: &[(&str, SocketAddr)], default: &str) -> EnvoyConfig {
        self.set_upstreams(upstreams, default);
        self.set_free_ports();
        self.set_wasm(&wasm_path());
        self
    }

    /// Loads the module from `uri` through `cluster`, pinned by `sha256`
    /// (`vm_config.code.remote`), instead of a local file.
    pub fn set_remote_wasm(&mut self, uri: &str, cluster: &str, sha256: &str) {
        let remote: Value = serde_yaml::from_str(&format!(
            "remote:\n  http_uri: {{ uri: \"{uri}\", cluster: {cluster}, timeout: 5s }}\n  sha256: \"{sha256}\"\n  retry_policy: {{ num_retries: 0 }}\n"
        ))
        .expect("remote code yaml");
        let f = self.wasm_filter();
        *get(f, &["typed_config", "config", "vm_config", "code"]) = remote;
    }

    /// Adds a STATIC cluster (e.g. to serve modules), modelled on the first cluster.
    pub fn add_module_cluster(&mut self, name: &str, addr: SocketAddr) {
        let template = get(&mut self.doc, &["static_resources", "clusters", "0"]).clone();
        let c = cluster_like(&template, name, addr);
        get(&mut self.doc, &["static_resources", "clusters"])
            .as_sequence_mut()
            .expect("clusters is a list")
            .push(c);
    }

    fn routes(&mut self) -> &mut Vec<Value> {
        let path = [HCM, &["route_config", "virtual_hosts", "0", "routes"]].concat();
        get(&mut self.doc, &path)
            .as_sequence_mut()
            .expect("routes is a list")
    }

    /// Points every route to `from` at `to` instead (what a rollout controller does when it
    /// drops the canary match: the canary cohort goes to stable).
    pub fn reroute(&mut self, from: &str, to: &str) {
        for r in self.routes().iter_mut() {
            if r["route"]["cluster"].as_str() == Some(from) {
                r["route"]["cluster"] = key(to);
            }
        }
    }

    /// Replaces every route to `from` by a weighted split, as Istio renders a route with several
    /// destinations (and a rollout controller moves their weights): `(cluster, weight, tag)`,
    /// where `tag`, when given, is what that destination sets in the response header `header`
    /// (Istio `headers.response.set` per destination; Envoy `response_headers_to_add` of the
    /// weighted cluster, overwriting any value the upstream sent).
    pub fn split(&mut self, from: &str, destinations: &[(&str, u32, Option<&str>)], header: &str) {
        let clusters: Vec<Value> = destinations
            .iter()
            .map(|(cluster, weight, tag)| {
                let mut c = Mapping::new();
                c.insert(key("name"), key(cluster));
                c.insert(key("weight"), Value::from(*weight));
                if let Some(tag) = tag {
                    c.insert(
                        key("response_headers_to_add"),
                        Value::Sequence(vec![header_option(header, tag)]),
                    );
                }
                Value::Mapping(c)
            })
            .collect();
        for r in self.routes().iter_mut() {
            if r["route"]["cluster"].as_str() == Some(from) {
                let route = r["route"].as_mapping_mut().expect("route is a map");
                route.remove("cluster");
                let mut split = Mapping::new();
                split.insert(key("clusters"), Value::Sequence(clusters.clone()));
                route.insert(key("weighted_clusters"), Value::Mapping(split));
            }
        }
    }

    /// Renames a cluster and every route to it (e.g. to Istio's `outbound|80|canary|host`).
    pub fn rename_cluster(&mut self, from: &str, to: &str) {
        self.reroute(from, to);
        let clusters = get(&mut self.doc, &["static_resources", "clusters"]);
        for c in clusters.as_sequence_mut().expect("clusters is a list") {
            if c["name"].as_str() == Some(from) {
                c["name"] = key(to);
                c["load_assignment"]["cluster_name"] = key(to);
            }
        }
    }

    /// Sets an environment variable of the Envoy process.
    pub fn set_process_env(&mut self, name: &str, value: &str) {
        self.process_env.push((name.to_string(), value.to_string()));
    }

    fn wasm_filter(&mut self) -> &mut Value {
        let filters = get(&mut self.doc, &[HCM, &["http_filters"]].concat());
        let seq = filters.as_sequence_mut().expect("http_filters is a list");
        seq.iter_mut()
            .find(|f| f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm"))
            .expect("envoy.yaml has the wasm filter")
    }

    /// Points cluster `name`'s first endpoint at `addr`.
    pub fn set_cluster_address(&mut self, name: &str, addr: SocketAddr) {
        let clusters = get(&mut self.doc, &["static_resources", "clusters"]);
        let cluster = clusters
            .as_sequence_mut()
            .and_then(|cs| cs.iter_mut().find(|c| c["name"].as_str() == Some(name)))
            .unwrap_or_else(|| panic!("no cluster {name}"));
        let sa = get(cluster, ENDPOINT_ADDRESS);
        *get(sa, &["address"]) = key(&addr.ip().to_string());
        *get(sa, &["port_value"]) = Value::from(addr.port());
    }

    /// The same config without the wasm filter: what Envoy does with none of this.
    pub fn without_wasm_filter(&mut self) {
        let filters = get(&mut self.doc, &[HCM, &["http_filters"]].concat());
        if let Some(fs) = filters.as_sequence_mut() {
            fs.retain(|f| f["name"].as_str() != Some("envoy.filters.http.wasm"));
        }
    }

    /// The plugin configuration (the JSON string) currently in the config.
    pub fn plugin_config(&mut self) -> String {
        let f = self.wasm_filter();
        get(f, &["typed_config", "config", "configuration", "value"])
            .as_str()
            .expect("configuration value is a string")
            .to_string()
    }

    /// How long the filter may keep counter increments before Envoy has them (see
    /// [`metrics_flush_of`]).
    pub fn metrics_flush(&self) -> Duration {
        metrics_flush_of(&self.doc)
    }

    pub fn set_plugin_config(&mut self, json: &str) {
        let f = self.wasm_filter();
        *get(f, &["typed_config", "config", "configuration", "value"]) =
            Value::String(json.to_string());
    }

    pub fn set_wasm(&mut self, path: &Path) {
        let f = self.wasm_filter();
        *get(
            f,
            &[
                "typed_config",
                "config",
                "vm_config",
                "code",
                "local",
                "filename",
            ],
        ) = Value::String(path.to_string_lossy().into_owned());
    }

    /// Sets an environment variable of the wasm VM (`vm_config.environment_variables.key_values`),
    /// as Istio's `vmConfig.env` does.
    pub fn set_vm_env(&mut self, key_name: &str, value: &str) {
        let f = self.wasm_filter();
        let vm = get(f, &["typed_config", "config", "vm_config"])
            .as_mapping_mut()
            .expect("vm_config is a mapping");
        let env = vm
            .entry(key("environment_variables"))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        let kv = env
            .as_mapping_mut()
            .expect("environment_variables is a mapping")
            .entry(key("key_values"))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        kv.as_mapping_mut()
            .expect("key_values is a mapping")
            .insert(key(key_name), key(value));
    }

    /// Sets a field of the HTTP connection manager (e.g. `max_request_headers_kb`).
    pub fn set_hcm_field(&mut self, field: &str, value: Value) {
        get(&mut self.doc, HCM)
            .as_mapping_mut()
            .expect("the HCM config is a mapping")
            .insert(key(field), value);
    }

    /// Sets a top-level bootstrap field (e.g. `stats_flush_interval`, `stats_config`).
    pub fn set_top_level(&mut self, field: &str, value: Value) {
        self.doc
            .as_mapping_mut()
            .expect("the bootstrap is a mapping")
            .insert(key(field), value);
    }

    /// A top-level bootstrap field.
    pub fn top_level(&self, field: &str) -> Option<&Value> {
        self.doc.get(field)
    }

    /// Sets a field of the wasm `PluginConfig` (e.g. `failure_policy`).
    pub fn set_plugin_field(&mut self, field: &str, value: Value) {
        let f = self.wasm_filter();
        get(f, &["typed_config", "config"])
            .as_mapping_mut()
            .expect("config is a mapping")
            .insert(key(field), value);
    }

    /// Admin and listener on port 0 (Envoy picks; the harness asks the admin API).
    pub fn set_free_ports(&mut self) {
        set_free_ports_of(&mut self.doc);
    }

    /// Replaces the clusters with one per upstream and the routes with one per upstream matching
    /// the route header the plugin config names (default `x-canary-version`), then a last route
    /// to `default` — the layout of the reference config, for any set of versions.
    pub fn set_upstreams(&mut self, upstreams: &[(&str, SocketAddr)], default: &str) {
        let route_header = serde_json::from_str::<serde_json::Value>(&self.plugin_config())
            .ok()
            .and_then(|v| {
                v.get("route_header")
                    .and_then(|h| h.as_str())
                    .map(str::to_ascii_lowercase)
            })
            .unwrap_or_else(|| "x-canary-version".to_string());
        let template_cluster = get(&mut self.doc, &["static_resources", "clusters", "0"]).clone();
        let clusters: Vec<Value> = upstreams
            .iter()
            .map(|(name, addr)| cluster_like(&template_cluster, name, *addr))
            .collect();
        *get(&mut self.doc, &["static_resources", "clusters"]) = Value::Sequence(clusters);

        let routes_path = [HCM, &["route_config", "virtual_hosts", "0", "routes"]].concat();
        let routes = get(&mut self.doc, &routes_path);
        let template_route = get(routes, &["0"]).clone();
        let mut new_routes: Vec<Value> = upstreams
            .iter()
            .map(|(name, _)| {
                let mut r = template_route.clone();
                let m = get(&mut r, &["match", "headers", "0"]);
                *get(m, &["name"]) = key(&route_header);
                *get(m, &["string_match", "exact"]) = key(name);
                *get(&mut r, &["route", "cluster"]) = key(name);
                r
            })
            .collect();
        let mut last = Mapping::new();
        let mut m = Mapping::new();
        m.insert(key("prefix"), key("/"));
        last.insert(key("match"), Value::Mapping(m));
        let mut r = Mapping::new();
        r.insert(key("cluster"), key(default));
        last.insert(key("route"), Value::Mapping(r));
        new_routes.push(Value::Mapping(last));
        *routes = Value::Sequence(new_routes);
    }

    /// Every cluster speaks HTTP/2 to its upstream (cleartext, prior knowledge), as a gRPC
    /// upstream needs: `typed_extension_protocol_options` with `explicit_http_config`
    /// `http2_protocol_options`.
    pub fn set_http2_upstreams(&mut self) {
        let options: Value = serde_yaml::from_str(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n  \
             \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n  \
             explicit_http_config: { http2_protocol_options: {} }\n",
        )
        .expect("protocol options yaml");
        let clusters = get(&mut self.doc, &["static_resources", "clusters"]);
        for c in clusters.as_sequence_mut().expect("clusters is a list") {
            c.as_mapping_mut()
                .expect("a cluster is a mapping")
                .insert(key("typed_extension_protocol_options"), options.clone());
        }
    }

    /// The clusters' first endpoints (name → address), e.g. to start upstreams where the
    /// reference config expects them.
    pub fn cluster_addresses(&mut self) -> Vec<(String, SocketAddr)> {
        let clusters = get(&mut self.doc, &["static_resources", "clusters"]).clone();
        let mut out = Vec::new();
        for mut c in clusters.as_sequence().cloned().unwrap_or_default() {
            let name = get(&mut c, &["name"])
                .as_str()
                .unwrap_or_default()
                .to_string();
            let sa = get(&mut c, ENDPOINT_ADDRESS).clone();
            let ip = sa
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or("127.0.0.1");
            let port = sa.get("port_value").and_then(Value::as_u64).unwrap_or(0);
            out.push((
                name,
                format!("{ip}:{port}").parse().expect("cluster address"),
            ));
        }
        out
    }

    /// The listener as an LDS resource file, optionally with a fixed port.
    pub fn lds_resources(&self, port: Option<u16>) -> String {
        let mut listener = self.doc["static_resources"]["listeners"][0].clone();
        if native::build() == Build::Native {
            native::to_native_filters(&mut listener);
        }
        if let Some(p) = port {
            *get(&mut listener, &["address", "socket_address", "port_value"]) = Value::from(p);
        }
        listener
            .as_mapping_mut()
            .expect("listener is a mapping")
            .insert(
                key("@type"),
                key("type.googleapis.com/envoy.config.listener.v3.Listener"),
            );
        let mut file = Mapping::new();
        file.insert(key("resources"), Value::Sequence(vec![listener]));
        serde_yaml::to_string(&Value::Mapping(file)).expect("serialize listener")
    }

    /// The bootstrap without static listeners, taking them from a watched LDS file instead.
    fn dynamic_bootstrap(&self, lds_file: &Path, lds_dir: &Path) -> String {
        let mut doc = self.doc.clone();

        get(&mut doc, &["static_resources"])
            .as_mapping_mut()
            .expect("static_resources is a mapping")
            .remove("listeners");
        let yaml = format!(
            "node: {{ id: sticky-canary-test, cluster: sticky-canary-test }}\n\
             dynamic_resources:\n  lds_config:\n    resource_api_version: V3\n    \
             path_config_source:\n      path: {}\n      watched_directory: {{ path: {} }}\n",
            lds_file.display(),
            lds_dir.display()
        );
        let extra: Value = serde_yaml::from_str(&yaml).expect("dynamic resources yaml");
        if let (Some(d), Some(e)) = (doc.as_mapping_mut(), extra.as_mapping()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
        serde_yaml::to_string(&doc).expect("serialize bootstrap")
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.doc).expect("serialize config")
    }

    /// The Envoy process's environment: the config's, and for the native build the wasm VM's
    /// variables (a dynamic module reads the process's).
    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.process_env.clone();
        if native::build() == Build::Native {
            env.extend(native::to_native_filters(&mut self.doc.clone()));
        }
        env
    }
}

/// A running Envoy. Dropping it kills the process (and prints the log if the test panicked).
pub struct Envoy {
    child: Option<Child>,
    dir: tempfile::TempDir,
    admin: SocketAddr,
    listener: SocketAddr,
    /// The watched LDS file, when the listener is delivered by file-based xDS.
    lds_file: Option<PathBuf>,
    /// The plugin's counter flush interval (see [`Envoy::scrape`]).
    metrics_flush: Cell<Duration>,
    /// From spawn to the admin `/ready` answering 200.
    ready_after: Duration,
}

/// Envoy did not become ready: why, and its log.
#[derive(Debug)]
pub struct StartFailure {
    pub exit_code: Option<i32>,
    pub log: String,
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Envoy did not start (exit {:?}); log:\n{}",
            self.exit_code, self.log
        )
    }
}

/// How Envoy is started. [`Launch::default`] is what every test gets: Envoy itself,
/// `--concurrency 1`, readiness polled every 50 ms for at most [`START_TIMEOUT`].
#[derive(Clone, Debug)]
pub struct Launch {
    /// A command Envoy runs under, e.g. `taskset -c 1` to pin it to a core (see [`wrapped`]). It
    /// must exec Envoy, so that the child's pid ([`Envoy::pid`]) is Envoy's.
    pub wrapper: Vec<OsString>,
    /// `--concurrency`: worker threads.
    pub concurrency: u32,
    /// How often the admin `/ready` is asked (the resolution of [`Envoy::ready_after`]).
    pub poll: Duration,
    /// How long Envoy may take to become ready.
    pub timeout: Duration,
    /// The build of the filter a wasm-filter bootstrap is run with ([`native::build`] unless a
    /// test picks one): for [`Build::Native`] the bootstrap is rewritten as a user would
    /// ([`native::to_native`]); one already written for the native build is run as it is.
    pub build: Build,
}

impl Default for Launch {
    fn default() -> Launch {
        Launch {
            wrapper: Vec::new(),
            concurrency: 1,
            poll: Duration::from_millis(50),
            timeout: START_TIMEOUT,
            build: native::build(),
        }
    }
}

fn spawn(cfg_path: &Path, dir: &Path, env: &[(String, String)], launch: &Launch) -> Child {
    let log = fs::File::create(dir.join("envoy.log")).expect("create log");
    let log2 = log.try_clone().expect("clone log handle");
    wrapped(&launch.wrapper, &envoy_bin())
        .arg("-c")
        .arg(cfg_path)
        .arg("--disable-hot-restart")
        .arg("--concurrency")
        .arg(launch.concurrency.to_string())
        .args(["-l", "info"])
        // Listener updates drain the old filter chain in 1 s rather than 10 min.
        .args(["--drain-time-s", "1"])
        .arg("--admin-address-path")
        .arg(dir.join("admin.addr"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Where a native build of the filter is found (unused by the wasm one).
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", native::native_dir())
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", envoy_bin().display()))
}

fn read_log(dir: &Path) -> String {
    crate::read_text(&dir.join("envoy.log"))
}

fn admin_get(admin: SocketAddr, path: &str) -> std::io::Result<Response> {
    send_once(admin, &Request::get(path))
}

impl Envoy {
    /// Starts Envoy on a config and waits until it is ready to serve.
    pub fn start(cfg: &EnvoyConfig) -> Result<Envoy, StartFailure> {
        Envoy::start_with(cfg, &Launch::default())
    }

    /// Starts Envoy on a config as `launch` says (e.g. a given build, more workers).
    pub fn start_with(cfg: &EnvoyConfig, launch: &Launch) -> Result<Envoy, StartFailure> {
        let dir = tempdir();
        let cfg_path = dir.path().join("envoy.yaml");
        fs::write(&cfg_path, cfg.to_yaml()).expect("write config");
        Envoy::start_in(
            &cfg_path,
            dir,
            &cfg.process_env,
            cfg.metrics_flush(),
            launch,
        )
    }

    /// Starts Envoy on a bootstrap given as YAML text (e.g. a bench config), from the repository
    /// root, as `launch` says, and waits until it is ready to serve.
    pub fn start_yaml(yaml: &str, launch: &Launch) -> Result<Envoy, StartFailure> {
        let dir = tempdir();
        let cfg_path = dir.path().join("envoy.yaml");
        fs::write(&cfg_path, yaml).expect("write config");
        let flush = serde_yaml::from_str::<Value>(yaml)
            .map_or(Duration::ZERO, |doc| metrics_flush_of(&doc));
        Envoy::start_in(&cfg_path, dir, &[], flush, launch)
    }

    /// Starts Envoy on a config file as it is (e.g. `envoy/envoy.yaml` for `make run`), from the
    /// repository root, and waits until it is ready to serve.
    pub fn start_file(cfg_path: &Path) -> Result<Envoy, StartFailure> {
        let flush = fs::read_to_string(cfg_path)
            .ok()
            .and_then(|t| serde_yaml::from_str::<Value>(&t).ok())
            .map_or(Duration::ZERO, |doc| metrics_flush_of(&doc));
        Envoy::start_in(cfg_path, tempdir(), &[], flush, &Launch::default())
    }

    /// Starts Envoy with the config's listener delivered by file-based LDS (a watched
    /// directory), so that [`Envoy::reload`] can change it — and the plugin configuration in it —
    /// while Envoy runs. Everything else stays in the bootstrap.
    pub fn start_dynamic(cfg: &EnvoyConfig) -> Result<Envoy, StartFailure> {
        let dir = tempdir();
        let lds_dir = dir.path().join("lds");
        fs::create_dir_all(&lds_dir).expect("lds dir");
        let lds_file = lds_dir.join("listeners.yaml");
        write_atomically(&lds_file, &cfg.lds_resources(None));
        let cfg_path = dir.path().join("envoy.yaml");
        fs::write(&cfg_path, cfg.dynamic_bootstrap(&lds_file, &lds_dir)).expect("write config");
        let launch = Launch::default();
        let mut envoy = Envoy::start_in(&cfg_path, dir, &cfg.env(), cfg.metrics_flush(), &launch)?;
        envoy.lds_file = Some(lds_file);
        Ok(envoy)
    }

    /// Delivers `cfg`'s listener (same port) through LDS and waits until Envoy has accepted it.
    /// Only for an Envoy started with [`Envoy::start_dynamic`].
    pub fn reload(&self, cfg: &EnvoyConfig) -> Result<(), String> {
        let file = self
            .lds_file
            .as_ref()
            .ok_or("Envoy was not started with start_dynamic")?;
        let counter = |name: &str| -> u64 {
            let text = self
                .admin_get(&format!(
                    "/stats?filter=^listener_manager\\.(lds\\.)?{name}$"
                ))
                .text();
            text.lines()
                .find_map(|l| l.split_once(": ").and_then(|(_, v)| v.trim().parse().ok()))
                .unwrap_or(0)
        };
        let (ok_before, rejected_before) = (counter("update_success"), counter("update_rejected"));
        write_atomically(file, &cfg.lds_resources(Some(self.listener.port())));
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if counter("update_rejected") > rejected_before {
                return Err(format!(
                    "Envoy rejected the listener update; log:\n{}",
                    self.log()
                ));
            }
            if counter("update_success") > ok_before {
                // Accepted; wait until the previous listener/filter chain has drained, so that
                // only the new configuration serves from here on (--drain-time-s 1).
                while Instant::now() < deadline {
                    let draining = ["total_listeners_draining", "total_filter_chains_draining"];
                    if draining.iter().all(|g| counter(g) == 0) {
                        self.metrics_flush.set(cfg.metrics_flush());
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "Envoy did not apply the listener update in 15 s; log:\n{}",
            self.log()
        ))
    }

    /// Where Envoy writes its log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    fn start_in(
        cfg_path: &Path,
        dir: tempfile::TempDir,
        env: &[(String, String)],
        metrics_flush: Duration,
        launch: &Launch,
    ) -> Result<Envoy, StartFailure> {
        check_prerequisites();
        let mut env = env.to_vec();
        let native_cfg = dir.path().join("envoy.native.yaml");
        let cfg_path = if launch.build == Build::Native {
            check_native_built();
            env.extend(native::rewrite_bootstrap(cfg_path, &native_cfg));
            native_cfg.as_path()
        } else {
            cfg_path
        };
        let started = Instant::now();
        let mut child = spawn(cfg_path, dir.path(), &env, launch);
        let deadline = started + launch.timeout;
        let fail = |child: &mut Child, dir: &Path| {
            let _ = child.kill();
            let status = child.wait().ok();
            StartFailure {
                exit_code: status.and_then(|s| s.code()),
                log: read_log(dir),
            }
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartFailure {
                    exit_code: status.code(),
                    log: read_log(dir.path()),
                });
            }
            if Instant::now() > deadline {
                return Err(fail(&mut child, dir.path()));
            }
            if let Some(admin) = fs::read_to_string(dir.path().join("admin.addr"))
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            {
                if admin_get(admin, "/ready")
                    .map(|r| r.status == 200)
                    .unwrap_or(false)
                {
                    let ready_after = started.elapsed();
                    if let Some(listener) = listener_address(admin) {
                        return Ok(Envoy {
                            child: Some(child),
                            dir,
                            admin,
                            listener,
                            lds_file: None,
                            metrics_flush: Cell::new(metrics_flush),
                            ready_after,
                        });
                    }
                }
            }
            std::thread::sleep(launch.poll);
        }
    }

    /// Starts Envoy with a config it must refuse; returns its log once it has exited.
    /// Panics (with the log) if it becomes ready instead.
    pub fn start_expecting_refusal(cfg: &EnvoyConfig) -> StartFailure {
        match Envoy::start(cfg) {
            Ok(envoy) => panic!(
                "Envoy started although the config must be refused; log:\n{}",
                envoy.log()
            ),
            Err(f) => f,
        }
    }

    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// From spawn to the admin `/ready` answering 200 (to within [`Launch::poll`]).
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// True while the process runs and the admin `/ready` answers 200.
    pub fn is_ready(&mut self) -> bool {
        let running = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        running
            && admin_get(self.admin, "/ready")
                .map(|r| r.status == 200)
                .unwrap_or(false)
    }

    /// A GET on the admin API (e.g. `/stats?format=json`).
    pub fn admin_get(&self, path: &str) -> Response {
        self.try_admin_get(path).expect("admin request")
    }

    /// A GET on the admin API, or why it failed.
    pub fn try_admin_get(&self, path: &str) -> std::io::Result<Response> {
        admin_get(self.admin, path)
    }

    /// `/stats/prometheus`, parsed, once the counters of every request answered so far have
    /// reached Envoy: the filter hands them over every `metrics_flush_ms`, so this waits one
    /// flush interval (plus a margin) first.
    pub fn scrape(&self) -> crate::prom::Scrape {
        self.await_metrics_flush();
        self.scrape_now()
    }

    /// `/stats/prometheus`, parsed, without waiting for the filter's next flush.
    pub fn scrape_now(&self) -> crate::prom::Scrape {
        crate::prom::Scrape::parse(&self.admin_get("/stats/prometheus").text())
    }

    /// Sleeps until the filter has flushed what it counted so far.
    pub fn await_metrics_flush(&self) {
        let flush = self.metrics_flush.get();
        if !flush.is_zero() {
            std::thread::sleep(flush + Duration::from_millis(100));
        }
    }

    /// Scrapes, once the filter has flushed, until `ready` holds (histograms appear only after
    /// Envoy's stats flush), at most 15 s.
    pub fn scrape_until(
        &self,
        ready: impl Fn(&crate::prom::Scrape) -> bool,
    ) -> crate::prom::Scrape {
        self.await_metrics_flush();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.scrape_now();
            if ready(&s) || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills Envoy and waits for it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- Envoy log ({}) -----\n{}\n----- end of Envoy log -----",
                self.dir.path().display(),
                self.log()
            );
        }
        self.kill();
    }
}

/// Writes a file by rename, so a watcher never sees it half-written.
fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, content).expect("write temp file");
    fs::rename(&tmp, path).expect("rename into place");
}

fn tempdir() -> tempfile::TempDir {
    crate::tempdir("sticky-canary-envoy-")
}

/// The first listener's bound address, from the admin API.
pub fn listener_address(admin: SocketAddr) -> Option<SocketAddr> {
    let body = admin_get(admin, "/listeners?format=json").ok()?.json();
    let sa = body
        .get("listener_statuses")?
        .get(0)?
        .get("local_address")?
        .get("socket_address")?;
    let ip = sa.get("address")?.as_str()?;
    let port = sa.get("port_value")?.as_u64()?;
    format!("{ip}:{port}").parse().ok()
}
