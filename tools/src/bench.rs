//! `make bench` and `make soak`: what sticky-canary costs per request in a real Envoy, side by side
//! with bare Envoy, the cheapest proxy-wasm filter (the *V8 floor*) and the same routing decision in
//! Envoy's Lua filter. A benchmark, never a timed test: nothing here fails on speed.
//!
//! Method (printed with the results, and in README "Performance"):
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
//!   start-up time, and module sizes complete the picture;
//! - direct-response mode (every route a `direct_response` carrying the same headers and body as
//!   the upstream) isolates the filter from the upstream hop.
//!
//! Configs: `envoy/bench/<variant>.yaml` (runnable by hand with fixed ports); this module rewrites
//! only the ports and paths, and derives the direct-response mode from them. The cheap correctness
//! checks of these configs run in `make test` (`tests/bench_configs.rs`).
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
//! [`Options`], [`Tools`] and [`soak`].

use serde_json::{json, Value as Json};
use serde_yaml::{Mapping, Value};
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use sticky_canary_harness::envoy::{envoy_bin, wasm_path, workspace_root};
use sticky_canary_harness::envoy::{
    get, key, listener_address, set_free_ports_of, ENDPOINT_ADDRESS, HCM,
};
use sticky_canary_harness::http::{send_once, Client, Request, Response};

// ---------------------------------------------------------------------------------------------
// Variants and their configs
// ---------------------------------------------------------------------------------------------

/// Which filter a variant puts before the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    None,
    /// `tests/fixtures/floor-filter`: adds one response header.
    Floor,
    StickyCanary,
    Lua,
}

/// One benchmark variant: a config file under `envoy/bench/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// File stem under `envoy/bench/`, and the variant's name in the output.
    pub key: &'static str,
    pub label: &'static str,
    pub filter: Filter,
}

/// Every variant, in the order of the report.
pub const VARIANTS: &[Variant] = &[
    Variant {
        key: "bare",
        label: "bare Envoy (router only)",
        filter: Filter::None,
    },
    Variant {
        key: "floor",
        label: "V8 floor (wasm, adds 1 header)",
        filter: Filter::Floor,
    },
    Variant {
        key: "filter-route",
        label: "sticky-canary: routing + tag",
        filter: Filter::StickyCanary,
    },
    Variant {
        key: "filter-headers",
        label: "sticky-canary: + 3 header rules",
        filter: Filter::StickyCanary,
    },
    Variant {
        key: "filter-json",
        label: "sticky-canary: + 1 JSON rule",
        filter: Filter::StickyCanary,
    },
    Variant {
        key: "lua",
        label: "Lua filter: same routing",
        filter: Filter::Lua,
    },
];

impl Variant {
    pub fn by_key(key: &str) -> Option<&'static Variant> {
        VARIANTS.iter().find(|v| v.key == key)
    }

    /// The checked-in config, `envoy/bench/<key>.yaml`.
    pub fn config_path(&self) -> PathBuf {
        bench_dir().join(format!("{}.yaml", self.key))
    }

    /// The checked-in config, parsed.
    pub fn load(&self) -> Value {
        let path = self.config_path();
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
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

/// Fails loudly when a module the bench configs load is missing.
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
            "V8-floor fixture not built at {} — run `make bench-fixtures` ({FLOOR_BUILD})",
            floor.display()
        ));
    }
    Ok(())
}

/// The upstream's response body: 1 KiB of JSON (`envoy/bench/order.json`).
pub fn order_body() -> String {
    let path = bench_dir().join("order.json");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The headers the upstream adds to every response (nginx.conf `add_header`, and the
/// direct-response routes): the three the header business rules read.
pub const UPSTREAM_HEADERS: &[(&str, &str)] = &[
    ("x-order-id", "ord_7f3a9c2e41b8"),
    ("x-order-total", "41.41"),
    ("x-payment-status", "approved"),
];

fn seq(v: &mut Value) -> &mut Vec<Value> {
    v.as_sequence_mut().expect("a YAML list")
}

fn http_filters(doc: &mut Value) -> &mut Vec<Value> {
    seq(get(doc, &[HCM, &["http_filters"]].concat()))
}

fn routes(doc: &mut Value) -> &mut Vec<Value> {
    seq(get(
        doc,
        &[HCM, &["route_config", "virtual_hosts", "0", "routes"]].concat(),
    ))
}

/// The plugin configuration (JSON) of the config's wasm filter, if it has one.
pub use sticky_canary_harness::envoy::wasm_plugin_config as plugin_config;

/// Makes a checked-in config runnable anywhere: admin and listener on port 0 (Envoy picks free
/// ones), module and script paths absolute (honouring `STICKY_CANARY_WASM` and `FLOOR_WASM`),
/// every cluster endpoint at `upstream` when given, and in [`Mode::Direct`] every route answered
/// by a `direct_response` with the upstream's headers and body.
pub fn prepare(doc: &mut Value, mode: Mode, upstream: Option<SocketAddr>) {
    set_free_ports_of(doc);
    let root = workspace_root();
    for f in http_filters(doc).iter_mut() {
        if let Some(local) = f
            .get_mut("typed_config")
            .and_then(|t| t.get_mut("config"))
            .and_then(|c| c.get_mut("vm_config"))
            .and_then(|v| v.get_mut("code"))
            .and_then(|c| c.get_mut("local"))
        {
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
        let clusters = seq(get(doc, &["static_resources", "clusters"]));
        for c in clusters.iter_mut() {
            set_endpoint(c, addr);
        }
    }
    if mode == Mode::Direct {
        let body = order_body();
        for r in routes(doc).iter_mut() {
            let m = r.as_mapping_mut().expect("route is a mapping");
            m.remove("route");
            let direct: Value = serde_yaml::from_str(&format!(
                "{{ status: 200, body: {{ inline_string: {} }} }}",
                serde_json::to_string(&body).expect("body as a YAML string")
            ))
            .expect("direct_response yaml");
            m.insert(key("direct_response"), direct);
            let mut add = vec![header_option("content-type", "application/json")];
            add.extend(UPSTREAM_HEADERS.iter().map(|(n, v)| header_option(n, v)));
            m.insert(key("response_headers_to_add"), Value::Sequence(add));
        }
    }
}

fn header_option(name: &str, value: &str) -> Value {
    let mut h = Mapping::new();
    h.insert(key("key"), key(name));
    h.insert(key("value"), key(value));
    let mut o = Mapping::new();
    o.insert(key("header"), Value::Mapping(h));
    o.insert(key("append_action"), key("OVERWRITE_IF_EXISTS_OR_ADD"));
    Value::Mapping(o)
}

fn set_endpoint(cluster: &mut Value, addr: SocketAddr) {
    let sa = get(cluster, ENDPOINT_ADDRESS);
    sa["address"] = key(&addr.ip().to_string());
    sa["port_value"] = Value::from(addr.port());
}

/// Points the cluster called `name` at `addr` (e.g. one echo upstream per version in tests).
pub fn set_cluster(doc: &mut Value, name: &str, addr: SocketAddr) {
    let clusters = seq(get(doc, &["static_resources", "clusters"]));
    let c = clusters
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("bench config has no cluster {name}"));
    set_endpoint(c, addr);
}

/// A variant's config, ready to run (see [`prepare`]), as YAML.
pub fn config_yaml(v: &Variant, mode: Mode, upstream: Option<SocketAddr>) -> String {
    config_yaml_with(v, mode, upstream, None)
}

/// Like [`config_yaml`], loading another sticky-canary module (`BENCH_CANDIDATE_WASM`).
pub fn config_yaml_with(
    v: &Variant,
    mode: Mode,
    upstream: Option<SocketAddr>,
    module: Option<&Path>,
) -> String {
    let mut doc = v.load();
    prepare(&mut doc, mode, upstream);
    if let Some(m) = module {
        for f in http_filters(&mut doc).iter_mut() {
            if let Some(local) = f
                .get_mut("typed_config")
                .and_then(|t| t.get_mut("config"))
                .and_then(|c| c.get_mut("vm_config"))
                .and_then(|v| v.get_mut("code"))
                .and_then(|c| c.get_mut("local"))
            {
                if local["filename"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(".wasm") && !f.ends_with("floor_filter.wasm"))
                {
                    local["filename"] = key(&m.to_string_lossy());
                }
            }
        }
    }
    serde_yaml::to_string(&doc).expect("serialize config")
}

/// The Cookie header of the benchmark's requests: a few cookies, about 300 bytes, the session
/// cookie in the middle.
pub fn cookie_header(session: &str) -> String {
    format!(
        "_ga=GA1.2.1784419062.1763770000; _gid=GA1.2.402211867.1763770000; \
         consent=analytics%3Dtrue%2Cmarketing%3Dfalse%2Cv%3D2; session_id={session}; \
         cart=c_8f2a91d0e4b7e5a1; theme=dark; _fbp=fb.1.1763770000123.1987654321; locale=en-US; \
         ab_home=variant_b; recently_viewed=SKU-10442%2CSKU-20931%2CSKU-33019"
    )
}

/// The other request headers, as a browser-backed API call would carry them.
pub const REQUEST_PATH: &str = "/api/cart";
pub const REQUEST_HEADERS: &[(&str, &str)] = &[
    ("host", "shop.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    ),
    ("accept", "application/json"),
    ("accept-language", "en-US,en;q=0.9"),
];

/// One benchmark request for a session, for the harness client.
pub fn request(session: &str) -> Request {
    let mut r = Request::get(REQUEST_PATH);
    for (n, v) in REQUEST_HEADERS {
        r = r.header(n, v);
    }
    r.header("cookie", &cookie_header(session))
}

/// The session keys of the benchmark's requests (deterministic).
pub fn session_keys(n: usize) -> Vec<String> {
    sticky_canary_harness::Keys::new(0x5eed_be4c)
        .take(n)
        .collect()
}

/// The wrk script: `n` pre-built requests with distinct session cookies, sent in turn, and a
/// `done` hook printing wrk's own figures as one JSON line. With `n == 1` the one request is set
/// through `wrk.headers` and there is no per-request Lua `request()` call at all (wrk's fast path).
pub fn wrk_script(n: usize) -> String {
    let mut s = String::from(
        "-- Generated by sticky-canary-bench (tests/harness/src/bench.rs): the benchmark's requests\n\
         -- (distinct session cookies, sent in turn); done() prints wrk's figures as one JSON line.\n",
    );
    let keys = session_keys(n.max(1));
    if keys.len() == 1 {
        let _ = writeln!(s, "wrk.method = \"GET\"\nwrk.path = \"{REQUEST_PATH}\"");
        for (name, v) in REQUEST_HEADERS {
            let _ = writeln!(s, "wrk.headers[\"{name}\"] = \"{v}\"");
        }
        let _ = writeln!(
            s,
            "wrk.headers[\"cookie\"] = \"{}\"",
            cookie_header(&keys[0])
        );
    } else {
        s.push_str("local pool = {\n");
        for k in &keys {
            let mut raw = format!("GET {REQUEST_PATH} HTTP/1.1\\r\\n");
            for (name, v) in REQUEST_HEADERS {
                let _ = write!(raw, "{name}: {v}\\r\\n");
            }
            let _ = write!(raw, "cookie: {}\\r\\n\\r\\n", cookie_header(k));
            let _ = writeln!(s, "  \"{raw}\",");
        }
        s.push_str(
            "}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  if i > #pool then i = 1 end\n  return pool[i]\nend\n",
        );
    }
    s.push_str(
        r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"#,
    );
    s
}

// ---------------------------------------------------------------------------------------------
// Tools and processes
// ---------------------------------------------------------------------------------------------

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// `env`, else `.venv/bench/<rel>` (envoy/bench/install-tools.sh), else `name` on PATH.
fn find_tool(env: &str, rel: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let local = workspace_root().join(".venv/bench").join(rel);
    if local.is_file() {
        return Some(local);
    }
    on_path(name)
}

/// The programs the benchmark runs: Envoy (`ENVOY_BIN`, else `.venv/bin/envoy`), wrk
/// (`WRK_BIN`) and nginx (`NGINX_BIN`), else from `.venv/bench`, else on PATH.
#[derive(Clone, Debug)]
pub struct Tools {
    pub envoy: PathBuf,
    pub wrk: PathBuf,
    pub nginx: PathBuf,
    /// `LD_LIBRARY_PATH` for a wrk unpacked into .venv/bench (its LuaJIT).
    pub lib_dir: Option<PathBuf>,
    /// Whether `taskset` is available to pin processes.
    pub taskset: bool,
    /// `BENCH_ENVOY_CPU` (default 1): Envoy's core.
    pub envoy_cpu: String,
    /// `BENCH_LOAD_CPU` (default 0): the core of wrk and the upstream.
    pub load_cpu: String,
    /// `BENCH_LOAD_NICE`: niceness of wrk and nginx (unset: inherited).
    pub load_nice: Option<String>,
}

impl Tools {
    pub fn find() -> Result<Tools, String> {
        let envoy = envoy_bin();
        if !envoy.exists() {
            return Err(format!(
                "Envoy not found at {} — run `make envoy` (or set ENVOY_BIN)",
                envoy.display()
            ));
        }
        let hint = "run `make bench-tools` (bash envoy/bench/install-tools.sh)";
        let wrk = find_tool("WRK_BIN", "usr/bin/wrk", "wrk")
            .ok_or_else(|| format!("wrk not found — {hint}, or set WRK_BIN"))?;
        let nginx = find_tool("NGINX_BIN", "usr/sbin/nginx", "nginx")
            .ok_or_else(|| format!("nginx not found — {hint}, or set NGINX_BIN"))?;
        let lib_dir = fs::read_dir(workspace_root().join(".venv/bench/usr/lib"))
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.to_string_lossy().ends_with("-linux-gnu"))
            });
        for (name, p) in [("wrk", &wrk), ("nginx", &nginx)] {
            if !p.is_file() {
                return Err(format!("{name} not found at {} — {hint}", p.display()));
            }
        }
        let taskset = on_path("taskset").is_some();
        Ok(Tools {
            envoy,
            wrk,
            nginx,
            lib_dir,
            taskset,
            envoy_cpu: std::env::var("BENCH_ENVOY_CPU").unwrap_or_else(|_| "1".into()),
            load_cpu: std::env::var("BENCH_LOAD_CPU").unwrap_or_else(|_| "0".into()),
            load_nice: std::env::var("BENCH_LOAD_NICE")
                .ok()
                .filter(|n| n.trim().parse::<i32>().is_ok()),
        })
    }

    /// A command for `program`, pinned to `cpu` with taskset when available. taskset execs the
    /// program, so the child's pid is the program's.
    fn pinned(&self, cpu: &str, program: &Path) -> Command {
        if self.taskset {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// Like [`Tools::pinned`] for the load generator and the upstream, under `nice -n
    /// <load_nice>` when `BENCH_LOAD_NICE` is set (a negative value needs root): on a shared
    /// machine it keeps other work on the load core from starving wrk, which would leave Envoy
    /// idle part of the time. nice execs, so the child's pid is the program's.
    fn load(&self, program: &Path) -> Command {
        match &self.load_nice {
            Some(n) => {
                let mut c = Command::new("nice");
                c.arg("-n").arg(n);
                if self.taskset {
                    c.arg("taskset").arg("-c").arg(&self.load_cpu);
                }
                c.arg(program);
                c
            }
            None => self.pinned(&self.load_cpu, program),
        }
    }

    pub fn versions(&self) -> Json {
        let run = |c: &mut Command| -> String {
            c.output()
                .map(|o| {
                    let t = String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr);
                    t.lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default()
        };
        let mut wrk = Command::new(&self.wrk);
        wrk.arg("--version");
        if let Some(l) = &self.lib_dir {
            wrk.env("LD_LIBRARY_PATH", l);
        }
        json!({
            "envoy": run(Command::new(&self.envoy).arg("--version")),
            "wrk": run(&mut wrk),
            "nginx": run(Command::new(&self.nginx).arg("-v")),
        })
    }
}

/// A child process killed (and waited for) on drop.
struct Owned(Option<Child>);

impl Owned {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

fn admin_get(admin: SocketAddr, path: &str) -> Result<Response, String> {
    send_once(admin, &Request::get(path)).map_err(|e| format!("admin {path}: {e}"))
}

/// An Envoy started for the benchmark (pinned, `--concurrency 1`), killed on drop.
pub struct BenchEnvoy {
    child: Owned,
    dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub listener: SocketAddr,
    /// From spawn to the admin `/ready` answering 200 (polled every 5 ms).
    pub ready_after: Duration,
}

impl BenchEnvoy {
    /// Starts Envoy on `yaml` from the repository root, pinned to `cpu` (if given), and waits
    /// until it is ready.
    pub fn start(tools: &Tools, yaml: &str, cpu: Option<&str>) -> Result<BenchEnvoy, String> {
        let dir = tempdir("sticky-canary-bench-envoy-");
        let cfg = dir.path().join("envoy.yaml");
        fs::write(&cfg, yaml).map_err(|e| format!("write {}: {e}", cfg.display()))?;
        let log = fs::File::create(dir.path().join("envoy.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match cpu {
            Some(cpu) => tools.pinned(cpu, &tools.envoy),
            None => Command::new(&tools.envoy),
        };
        cmd.arg("-c")
            .arg(&cfg)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .arg("--admin-address-path")
            .arg(dir.path().join("admin.addr"))
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let started = Instant::now();
        let mut child =
            Owned(Some(cmd.spawn().map_err(|e| {
                format!("spawn {}: {e}", tools.envoy.display())
            })?));
        let deadline = started + Duration::from_secs(60);
        let log_of = |dir: &Path| {
            fs::read(dir.join("envoy.log"))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        loop {
            if !child.running() {
                return Err(format!(
                    "Envoy exited during start-up; log:\n{}",
                    log_of(dir.path())
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy not ready in 60 s; log:\n{}",
                    log_of(dir.path())
                ));
            }
            if let Some(admin) = fs::read_to_string(dir.path().join("admin.addr"))
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            {
                if admin_get(admin, "/ready").is_ok_and(|r| r.status == 200) {
                    let ready_after = started.elapsed();
                    let listener = listener_address(admin)
                        .ok_or_else(|| "no listener address in the admin API".to_string())?;
                    return Ok(BenchEnvoy {
                        child,
                        dir,
                        admin,
                        listener,
                        ready_after,
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn log(&self) -> String {
        fs::read(self.dir.path().join("envoy.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// utime + stime of the whole process, in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64, String> {
        cpu_ticks(self.pid())
    }

    pub fn rss_kb(&self) -> Option<u64> {
        rss_kb(self.pid())
    }

    pub fn wasm_memories(&self) -> Vec<LinearMemory> {
        wasm_memories(self.pid())
    }

    /// Counters and gauges whose names match the admin `filter` regex.
    pub fn stats(&self, filter: &str) -> Result<Vec<(String, u64)>, String> {
        let r = admin_get(self.admin, &format!("/stats?format=json&filter={filter}"))?;
        let j = r.json();
        Ok(j.get("stats")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        Some((
                            s.get("name")?.as_str()?.to_string(),
                            s.get("value")?.as_u64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `http.ingress.downstream_rq_total` and `http.ingress.downstream_rq_2xx`.
    pub fn request_counters(&self) -> Result<(u64, u64), String> {
        let s = self.stats("^http\\.ingress\\.downstream_rq_(total|2xx)$")?;
        let get = |n: &str| s.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        Ok((
            get("http.ingress.downstream_rq_total").ok_or("no downstream_rq_total counter")?,
            get("http.ingress.downstream_rq_2xx").unwrap_or(0),
        ))
    }

    /// The sum of every stat whose name contains `part` (e.g. a filter metric across versions).
    pub fn sum_of(&self, part: &str) -> u64 {
        self.stats(part)
            .map(|s| s.iter().map(|(_, v)| v).sum())
            .unwrap_or(0)
    }
}

/// utime + stime (clock ticks) of a process, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("stat: {e}"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = s.rsplit_once(')').map(|(_, r)| r).ok_or("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).ok_or("no utime")?;
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).ok_or("no stime")?;
    Ok(utime + stime)
}

/// Busy and steal clock ticks of one core, from `/proc/stat` (everything but idle and iowait).
pub fn core_ticks(cpu: &str) -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("cpu{cpu}")))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy = f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?;
    Some((busy, *f.get(7)?))
}

/// CPU time (ticks) of this process's waited-for children: cutime + cstime of `/proc/self/stat`.
/// Around one wrk run it is wrk's own CPU time.
pub fn children_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            Some(f.get(13)? + f.get(14)?)
        })
        .unwrap_or(0)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One wasm linear memory as V8 maps it: a read-write region (the memory's current size) right
/// before the inaccessible rest of its reservation (8 GiB in all for a 32-bit memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearMemory {
    /// The memory's size (its read-write part), KiB.
    pub size_kb: u64,
    /// Resident pages of it, KiB.
    pub rss_kb: u64,
}

/// Every wasm linear memory of a process (one per VM: with `--concurrency 1`, Envoy keeps a base
/// VM, one on the main thread and one on the worker), from `/proc/<pid>/smaps`.
pub fn wasm_memories(pid: u32) -> Vec<LinearMemory> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    struct Vma {
        start: u64,
        end: u64,
        perms: String,
        rss_kb: u64,
    }
    let mut vmas: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                vmas.push(Vma {
                    start,
                    end,
                    perms: parts.next().unwrap_or("").to_string(),
                    rss_kb: 0,
                });
                continue;
            }
        }
        if let (Some(v), Some("Rss:")) = (vmas.last_mut(), Some(first)) {
            v.rss_kb = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    const GIB: u64 = 1 << 30;
    vmas.windows(2)
        .filter(|w| {
            let (rw, guard) = (&w[0], &w[1]);
            rw.perms.starts_with("rw")
                && guard.perms.starts_with("---")
                && rw.end == guard.start
                && guard.end - rw.start >= 4 * GIB
                && (guard.end - rw.start) % GIB == 0
        })
        .map(|w| LinearMemory {
            size_kb: (w[0].end - w[0].start) / 1024,
            rss_kb: w[0].rss_kb,
        })
        .collect()
}

/// The upstream: one nginx worker (`envoy/bench/nginx.conf`), killed on drop.
pub struct Nginx {
    child: Owned,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Nginx {
    pub fn start(tools: &Tools) -> Result<Nginx, String> {
        let dir = tempdir("sticky-canary-bench-nginx-");
        let template = fs::read_to_string(bench_dir().join("nginx.conf"))
            .map_err(|e| format!("envoy/bench/nginx.conf: {e}"))?;
        let body = order_body();
        for attempt in 0..5 {
            let port = free_port()?;
            let conf = template
                .replace("@PORT@", &port.to_string())
                .replace("@DIR@", &dir.path().to_string_lossy())
                .replace("@BODY@", &body);
            let path = dir.path().join("nginx.conf");
            fs::write(&path, conf).map_err(|e| e.to_string())?;
            let mut child = Owned(Some(
                tools
                    .load(&tools.nginx)
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(&path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("spawn {}: {e}", tools.nginx.display()))?,
            ));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && child.running() {
                if TcpStream::connect(addr).is_ok() {
                    return Ok(Nginx {
                        child,
                        _dir: dir,
                        addr,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            child.kill();
            if attempt == 4 {
                let log = fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                return Err(format!("nginx did not start; error.log:\n{log}"));
            }
        }
        Err("nginx did not start".into())
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// wrk's own figures for one run (from the script's `done` hook).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WrkRun {
    pub requests: u64,
    pub duration_us: u64,
    pub errors: u64,
    pub status_errors: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// Runs wrk (one thread, pinned to the load core) against `url` with the generated script.
pub fn run_wrk(
    tools: &Tools,
    script: &Path,
    url: &str,
    connections: u32,
    seconds: f64,
) -> Result<WrkRun, String> {
    let mut cmd = tools.load(&tools.wrk);
    if let Some(l) = &tools.lib_dir {
        cmd.env("LD_LIBRARY_PATH", l);
    }
    // wrk takes whole seconds.
    let secs = seconds.round().max(1.0) as u64;
    let child = cmd
        .args(["-t", "1", "-c", &connections.to_string()])
        .arg("-d")
        .arg(format!("{secs}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", tools.wrk.display()))?;
    let mut owned = Owned(Some(child));
    let out = owned
        .0
        .take()
        .expect("child")
        .wait_with_output()
        .map_err(|e| format!("wrk: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_JSON "))
        .ok_or_else(|| {
            format!(
                "wrk printed no result (exit {:?}):\n{stdout}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let j: Json = serde_json::from_str(line).map_err(|e| format!("wrk result {line}: {e}"))?;
    let n = |k: &str| j.get(k).and_then(Json::as_u64).unwrap_or(0);
    Ok(WrkRun {
        requests: n("requests"),
        duration_us: n("duration_us"),
        errors: n("connect_errors") + n("read_errors") + n("write_errors") + n("timeouts"),
        status_errors: n("status_errors"),
        p50_us: n("p50_us"),
        p90_us: n("p90_us"),
        p99_us: n("p99_us"),
        max_us: n("max_us"),
        mean_us: j.get("mean_us").and_then(Json::as_f64).unwrap_or(0.0),
    })
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

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
    envoy: &BenchEnvoy,
    script: &Path,
    connections: u32,
    seconds: f64,
    ticks_per_s: f64,
    upstream: Option<u32>,
) -> Result<Sample, String> {
    let url = format!("http://{}/", envoy.listener);
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

/// A small seeded PRNG (xorshift64*), for the shuffled order of each round.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
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

/// A path relative to the repository root when it is inside it.
pub fn display_path(p: &Path) -> String {
    let root = workspace_root();
    p.strip_prefix(&root)
        .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
}

/// Milliseconds since midnight of an Envoy log line (`[2026-11-22 02:38:24.492]...`).
fn log_ms(line: &str) -> Option<f64> {
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

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What else was running: load average and the busiest processes (`ps`), for the noise notes.
pub fn machine_state() -> Json {
    let loadavg = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    let busiest: Vec<String> = Command::new("ps")
        .args(["-eo", "pid,ni,pcpu,psr,comm", "--sort=-pcpu"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .skip(1)
                .take(6)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default();
    json!({ "loadavg": loadavg, "busiest_processes": busiest })
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// make bench
// ---------------------------------------------------------------------------------------------

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
    /// `<variant>+<file stem>` entries of every sticky-canary variant in the same rounds (an A/B
    /// of a change).
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
                    if !out.iter().any(|v| v.key == r) {
                        out.insert(0, Variant::by_key(r).expect("reference variant"));
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
    pub envoy: BenchEnvoy,
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

/// The version the published algorithm gives `key` under the filter-route plugin config.
pub fn expected_version(key: &str) -> String {
    let doc = Variant::by_key("filter-route")
        .expect("filter-route")
        .load();
    let cfg = plugin_config(&doc).expect("filter-route has a plugin config");
    let plan = sticky_canary::config::Plan::from_json(cfg.as_bytes()).expect("valid plugin config");
    plan.version_name(plan.bucket(key.as_bytes())).to_string()
}

/// One request through a freshly started bench Envoy: the response every variant must give.
/// Returns the problems found (empty: fine).
pub fn preflight(variant: &Variant, listener: SocketAddr, session: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let r = match Client::connect(listener).and_then(|mut c| c.send(&request(session))) {
        Ok(r) => r,
        Err(e) => return vec![format!("request failed: {e}")],
    };
    if r.status != 200 {
        problems.push(format!("status {} (want 200)", r.status));
    }
    if r.body.len() != 1024 {
        problems.push(format!("body of {} bytes (want 1024)", r.body.len()));
    }
    let ct: Vec<&[u8]> = r.header_values("content-type");
    if ct != [b"application/json".as_slice()] {
        problems.push(format!(
            "content-type {:?} (want one application/json)",
            ct.iter()
                .map(|v| String::from_utf8_lossy(v))
                .collect::<Vec<_>>()
        ));
    }
    for (n, v) in UPSTREAM_HEADERS {
        if r.header_str(n) != Some(v) {
            problems.push(format!("{n}: {:?} (want {v})", r.header_str(n)));
        }
    }
    let tag = r.header_str("x-canary-version").map(str::to_string);
    let floor = r.header_str("x-floor").map(str::to_string);
    match variant.filter {
        Filter::None => {
            if tag.is_some() || floor.is_some() {
                problems.push("bare Envoy added a header".into());
            }
        }
        Filter::Floor => {
            if floor.as_deref() != Some("1") {
                problems.push(format!("x-floor: {floor:?} (want 1)"));
            }
        }
        Filter::StickyCanary | Filter::Lua => {
            let want = expected_version(session);
            if tag.as_deref() != Some(want.as_str()) {
                problems.push(format!("x-canary-version: {tag:?} (want {want})"));
            }
        }
    }
    problems
}

/// After the runs: the filter's own counters must have seen what the variant says.
fn counter_check(e: &Entry) -> Vec<String> {
    let mut out = Vec::new();
    if e.variant.filter != Filter::StickyCanary {
        return out;
    }
    let ok = e.envoy.request_counters().map(|(_, ok)| ok).unwrap_or(0);
    let routed = e.envoy.sum_of("canary_requests_total");
    let tolerance = |n: u64| n as f64 >= 0.99 * ok as f64;
    if !tolerance(routed) {
        out.push(format!(
            "canary_requests_total {routed} for {ok} 2xx responses"
        ));
    }
    match e.variant.key {
        "filter-headers" => {
            for m in [
                "canary_business_orders_total",
                "canary_business_payment_approved_total",
            ] {
                let n = e.envoy.sum_of(m);
                if !tolerance(n) {
                    out.push(format!("{m} {n} for {ok} 2xx responses"));
                }
            }
        }
        "filter-json" => {
            let cents = e.envoy.sum_of("canary_business_tax_total");
            if !tolerance(cents / 338) {
                out.push(format!(
                    "canary_business_tax_total {cents} cents for {ok} 2xx responses (338 each)"
                ));
            }
        }
        _ => {}
    }
    let skipped = e.envoy.sum_of("canary_business_skipped_total");
    if skipped as f64 > 0.01 * ok as f64 {
        out.push(format!("canary_business_skipped_total {skipped}"));
    }
    let invalid = e.envoy.sum_of("canary_business_invalid_total");
    if invalid > 0 {
        out.push(format!("canary_business_invalid_total {invalid}"));
    }
    out
}

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

    /// The issue's targets, where this run stands.
    pub fn targets(&self, sums: &[Summary]) -> Vec<Json> {
        let get = |k: &str, m: &str| sums.iter().find(|s| s.variant == k && s.mode == m);
        let mut t = Vec::new();
        for mode in ["proxy", "direct"] {
            if let Some(h) = get("filter-headers", mode) {
                t.push(json!({
                    "target": format!("filter-headers ≤ 1.10 × V8 floor ({mode})"),
                    "value": h.vs_floor.median, "limit": 1.10,
                    "met": h.vs_floor.median <= 1.10,
                }));
                if let Some(l) = get("lua", mode) {
                    t.push(json!({
                        "target": format!("filter-headers cheaper than Lua ({mode})"),
                        "value": h.cpu_us_per_request.median, "limit": l.cpu_us_per_request.median,
                        "met": h.cpu_us_per_request.median < l.cpu_us_per_request.median,
                    }));
                }
            }
            if let Some(j) = get("filter-json", mode) {
                t.push(json!({
                    "target": format!("filter-json ≤ 1.30 × V8 floor ({mode})"),
                    "value": j.vs_floor.median, "limit": 1.30,
                    "met": j.vs_floor.median <= 1.30,
                }));
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
                "response": { "body_bytes": order_body().len(), "headers": UPSTREAM_HEADERS.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>() },
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

fn fmt_kib(kb: u64) -> String {
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
/// as the README shows it, module sizes and where the run stands against the targets.
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
            "  {:<14} {:>7.1} KiB raw, {:>6} KiB gzip -9   ({})",
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

/// The chart: CPU time per request per variant (median, min–max whiskers), proxy and direct.
pub fn chart_svg(r: &Report) -> String {
    let sums = r.summaries();
    let modes: Vec<Mode> = r.options.modes.clone();
    // One row per variant (and candidate), in the order of the report.
    let mut variants: Vec<(String, String)> = Vec::new();
    for e in &r.entries {
        if !variants.iter().any(|(k, _)| *k == e.key()) {
            variants.push((e.key(), e.label()));
        }
    }
    let max = sums
        .iter()
        .map(|s| s.cpu_us_per_request.max)
        .filter(|x| x.is_finite())
        .fold(1.0f64, f64::max)
        * 1.12;
    let (left, right, top, row_h, bar_h) = (250.0, 170.0, 62.0, 46.0, 15.0);
    let plot_w = 560.0;
    let w = left + plot_w + right;
    let h = top + row_h * variants.len() as f64 + 58.0;
    let x = |v: f64| left + v / max * plot_w;
    let colors = ["#3b6ea8", "#9cc0e6"];
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="22" font-size="15" font-weight="bold">Envoy CPU time per request (µs), median of {} rounds, min–max whiskers</text>
<text x="{left}" y="42" fill="#555">{} connections, Envoy pinned to one core; ratios: median of per-round ratios to the V8 floor</text>
"##,
        r.options.rounds, r.options.connections
    );
    // Grid.
    let step = nice_step(max);
    let mut g = 0.0;
    while g <= max {
        let gx = x(g);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            top + row_h * variants.len() as f64,
            top + row_h * variants.len() as f64 + 16.0,
            fmt_tick(g)
        );
        g += step;
    }
    for (i, (vkey, vlabel)) in variants.iter().enumerate() {
        let y0 = top + row_h * i as f64;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 8.0,
            y0 + row_h / 2.0 + 4.0,
            xml(vlabel)
        );
        for (j, m) in modes.iter().enumerate() {
            let Some(sum) = sums
                .iter()
                .find(|x| x.variant == *vkey && x.mode == m.as_str())
            else {
                continue;
            };
            let c = sum.cpu_us_per_request;
            if !c.median.is_finite() {
                continue;
            }
            let by = y0 + 6.0 + j as f64 * (bar_h + 2.0);
            let _ = writeln!(
                s,
                r##"<rect x="{left}" y="{by:.1}" width="{:.1}" height="{bar_h}" fill="{}"/>"##,
                x(c.median) - left,
                colors[j % 2]
            );
            let wy = by + bar_h / 2.0;
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" y1="{wy:.1}" x2="{:.1}" y2="{wy:.1}" stroke="#222"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#222"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#222"/>"##,
                x(c.min),
                x(c.max),
                x(c.min),
                wy - 4.0,
                x(c.min),
                wy + 4.0,
                x(c.max),
                wy - 4.0,
                x(c.max),
                wy + 4.0
            );
            let ratio = if sum.vs_floor.median.is_finite() && vkey != "floor" {
                format!("  ×{:.2} floor", sum.vs_floor.median)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#222">{:.1}{ratio}</text>"##,
                x(c.max) + 6.0,
                wy + 4.0,
                c.median
            );
        }
    }
    let ly = top + row_h * variants.len() as f64 + 36.0;
    for (j, m) in modes.iter().enumerate() {
        let lx = left + j as f64 * 230.0;
        let label = match m {
            Mode::Proxy => "proxy to nginx (1 KiB JSON)",
            Mode::Direct => "direct_response (no upstream)",
        };
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="{:.1}" width="14" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{label}</text>"##,
            ly - 10.0,
            colors[j % 2],
            lx + 20.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn nice_step(max: f64) -> f64 {
    let raw = max / 6.0;
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_tick(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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

fn check_interrupt(flag: &AtomicBool) -> Result<(), String> {
    if flag.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// `BENCH_SESSIONS`: distinct session cookies in the wrk script (default 1000).
pub fn sessions() -> usize {
    env_num("BENCH_SESSIONS", 1000usize).max(1)
}

/// Writes the wrk script for `make bench`/`make soak` into `dir`.
fn write_script(dir: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let p = dir.join("wrk-requests.lua");
    fs::write(&p, wrk_script(sessions())).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

/// Runs `make bench`. Progress goes to stdout as it happens.
pub fn run(opts: Options, stop: &AtomicBool) -> Result<Report, String> {
    check_modules()?;
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
        // One unmeasured start first: the binary and the modules into the page cache.
        let warm = config_yaml(&VARIANTS[1], Mode::Proxy, Some(nginx.addr));
        drop(BenchEnvoy::start(&tools, &warm, Some(&tools.envoy_cpu))?);
        print!("start-up:");
        for v in &opts.variants {
            let mut st = Startup {
                variant: v.key.to_string(),
                ..Startup::default()
            };
            let yaml = config_yaml(v, Mode::Proxy, Some(nginx.addr));
            for _ in 0..opts.starts {
                check_interrupt(stop)?;
                let e = BenchEnvoy::start(&tools, &yaml, Some(&tools.envoy_cpu))?;
                st.ready_ms.push(e.ready_after.as_secs_f64() * 1000.0);
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
                let envoy = BenchEnvoy::start(
                    &tools,
                    &config_yaml_with(v, *m, upstream, module),
                    Some(&tools.envoy_cpu),
                )?;
                let check = preflight(v, envoy.listener, &probe);
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
                &script,
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
        rng.shuffle(&mut order);
        for (k, &i) in order.iter().enumerate() {
            check_interrupt(stop)?;
            let e = &entries[i];
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

/// Prints the report, writes `bench.json` and `cpu-per-request.svg`; returns their paths.
pub fn finish(r: Report) -> Result<(PathBuf, PathBuf), String> {
    let json_path = r.options.out_dir.join("bench.json");
    let svg_path = r.options.out_dir.join("cpu-per-request.svg");
    fs::create_dir_all(&r.options.out_dir).map_err(|e| e.to_string())?;
    let j = r.to_json();
    fs::write(
        &json_path,
        serde_json::to_string_pretty(&j).expect("json") + "\n",
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

// ---------------------------------------------------------------------------------------------
// make soak
// ---------------------------------------------------------------------------------------------

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

fn soak_point(e: &BenchEnvoy, requests: u64) -> SoakPoint {
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
        let yaml = config_yaml(v, mode, nginx.as_ref().map(|n| n.addr));
        let envoy = BenchEnvoy::start(&tools, &yaml, Some(&tools.envoy_cpu))?;
        let mut problems = preflight(v, envoy.listener, &session_keys(1)[0]);
        // Warm-up: the allocator and V8 reach their steady state.
        let (mut warm, mut rate) = (0, 5_000.0f64);
        while warm < 20_000 {
            check_interrupt(stop)?;
            let s = measure(&tools, &envoy, &script, conns, 1.0, ticks, None)?;
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
            let s = measure(&tools, &envoy, &script, conns, secs, ticks, None)?;
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
        let last = points.last().expect("points");
        let wasm_growth_kb = first
            .wasm_memory_kb
            .iter()
            .zip(&last.wasm_memory_kb)
            .map(|(a, b)| *b as i64 - *a as i64)
            .max()
            .unwrap_or(0);
        if first.wasm_memory_kb.is_empty() && v.filter != Filter::Lua && v.filter != Filter::None {
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
        serde_json::to_string_pretty(&j).expect("json") + "\n",
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("Raw numbers: {}", display_path(&path));
    Ok(soaks)
}
