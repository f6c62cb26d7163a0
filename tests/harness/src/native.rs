//! Which build of the filter a suite runs against: the wasm module (the default) or the native
//! dynamic module (`STICKY_CANARY_BUILD=native`, `make test` runs the suites that apply to it a
//! second time so). One test list, the same assertions: what differs is only how Envoy loads the
//! filter, rewritten here from the wasm filter the shipped configs have.
//!
//! The rewrite is what a user does (`envoy/native.yaml` is `envoy/envoy.yaml` so rewritten, and a
//! test holds them equal): the `envoy.filters.http.wasm` filter of sticky-canary becomes
//! `envoy.filters.http.dynamic_modules` with the same JSON document, the wasm VM's environment
//! variables become the process's, and one runtime flag makes the series' names the wasm
//! build's (`canary_requests_total`, not `envoy_dynamicmodulescustom_canary_requests_total`).

use serde_yaml::{Mapping, Value};
use std::path::PathBuf;

/// The HTTP filter that loads a dynamic module.
pub const FILTER: &str = "envoy.filters.http.dynamic_modules";
/// Its typed config.
pub const FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
/// The module's name (Envoy loads `lib<name>.so` from `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`) and
/// the filter's.
pub const MODULE: &str = "sticky_canary";
/// Strips the dynamic modules' stat prefix (`dynamicmodulescustom.`) as Envoy strips
/// `wasmcustom.`: the same series names from both builds.
pub const STRIP_PREFIX_FLAG: &str =
    "envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix";

/// The build under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    Wasm,
    Native,
}

/// `STICKY_CANARY_BUILD=native` selects the native build; anything else the wasm module.
pub fn build() -> Build {
    match std::env::var("STICKY_CANARY_BUILD").as_deref() {
        Ok("native") => Build::Native,
        _ => Build::Wasm,
    }
}

/// What Envoy logs when it refuses the filter because the filter refused its configuration, for
/// the build under test.
pub fn envoy_refusal() -> &'static str {
    match build() {
        Build::Wasm => "Unable to create Wasm plugin",
        Build::Native => "Failed to initialize dynamic module",
    }
}

/// Where `make build-native` writes `libsticky_canary.so` (`STICKY_CANARY_NATIVE_DIR` to
/// override): Envoy's `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
pub fn native_dir() -> PathBuf {
    std::env::var_os("STICKY_CANARY_NATIVE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::envoy::workspace_root().join("target/native"))
}

fn key(s: &str) -> Value {
    Value::String(s.to_string())
}

/// Whether `f` is sticky-canary's wasm filter (a local module named `sticky_canary.wasm`; the
/// test-only fixtures and remote modules are left as they are).
fn is_sticky_canary_wasm(f: &Value) -> bool {
    f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm")
        && f["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
            .as_str()
            .is_some_and(|p| p.ends_with("sticky_canary.wasm"))
}

/// The dynamic-module filter for a wasm filter: the same JSON document, and the wasm VM's
/// environment variables (for the process).
fn native_filter(wasm: &Value) -> (Value, Vec<(String, String)>) {
    let config = &wasm["typed_config"]["config"];
    let json = config["configuration"]["value"].as_str().unwrap_or("{}");
    let mut env = Vec::new();
    if let Some(kv) = config["vm_config"]["environment_variables"]["key_values"].as_mapping() {
        for (k, v) in kv {
            if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                env.push((k.to_string(), v.to_string()));
            }
        }
    }
    let mut module = Mapping::new();
    module.insert(key("name"), key(MODULE));
    let mut string_value = Mapping::new();
    string_value.insert(
        key("@type"),
        key("type.googleapis.com/google.protobuf.StringValue"),
    );
    string_value.insert(key("value"), key(json));
    let mut typed = Mapping::new();
    typed.insert(key("@type"), key(FILTER_TYPE));
    typed.insert(key("dynamic_module_config"), Value::Mapping(module));
    typed.insert(key("filter_name"), key(MODULE));
    typed.insert(key("filter_config"), Value::Mapping(string_value));
    let mut filter = Mapping::new();
    filter.insert(key("name"), key(FILTER));
    filter.insert(key("typed_config"), Value::Mapping(typed));
    (Value::Mapping(filter), env)
}

/// Rewrites every sticky-canary wasm filter in `doc` (a bootstrap, a listener, an LDS file)
/// into the dynamic-module filter; the wasm VMs' environment variables, for the process.
pub fn to_native_filters(doc: &mut Value) -> Vec<(String, String)> {
    let mut env = Vec::new();
    walk(doc, &mut env);
    env
}

fn walk(v: &mut Value, env: &mut Vec<(String, String)>) {
    match v {
        Value::Sequence(items) => {
            for item in items {
                if is_sticky_canary_wasm(item) {
                    let (filter, vars) = native_filter(item);
                    *item = filter;
                    env.extend(vars);
                } else {
                    walk(item, env);
                }
            }
        }
        Value::Mapping(m) => {
            for (_, item) in m.iter_mut() {
                walk(item, env);
            }
        }
        _ => {}
    }
}

/// Adds the stat-prefix flag to a bootstrap's runtime (a static layer first, so that a test's
/// own layers still override).
pub fn add_runtime_flag(doc: &mut Value) {
    let Some(root) = doc.as_mapping_mut() else {
        return;
    };
    let runtime = root
        .entry(key("layered_runtime"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let Some(runtime) = runtime.as_mapping_mut() else {
        return;
    };
    let layers = runtime
        .entry(key("layers"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    let mut flag = Mapping::new();
    flag.insert(key(STRIP_PREFIX_FLAG), Value::Bool(true));
    let mut layer = Mapping::new();
    layer.insert(key("name"), key("sticky-canary-native"));
    layer.insert(key("static_layer"), Value::Mapping(flag));
    if let Some(layers) = layers.as_sequence_mut() {
        layers.insert(0, Value::Mapping(layer));
    }
}

/// A whole bootstrap for the native build: filters rewritten and the runtime flag added.
pub fn to_native(doc: &mut Value) -> Vec<(String, String)> {
    let env = to_native_filters(doc);
    add_runtime_flag(doc);
    env
}

/// Writes `to`: the bootstrap `from` for the native build (see [`to_native`]); returns the wasm
/// VMs' environment variables, for the process. A file that is not YAML is copied as it is.
pub fn rewrite_bootstrap(from: &std::path::Path, to: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(from).unwrap_or_default();
    let Ok(mut doc) = serde_yaml::from_str::<Value>(&text) else {
        std::fs::write(to, text).expect("write the bootstrap");
        return Vec::new();
    };
    let env = to_native(&mut doc);
    std::fs::write(
        to,
        serde_yaml::to_string(&doc).expect("serialize the bootstrap"),
    )
    .expect("write the bootstrap");
    env
}
