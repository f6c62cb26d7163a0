//! The native build under Istio (`istio/native/`): Envoy's dynamic-module filter, inserted by an
//! EnvoyFilter (Istio has no API for dynamic modules) into the proxies the WasmPlugins select.
//!
//! - each native EnvoyFilter carries its WasmPlugin's JSON document for the same workloads and
//!   listeners, in the very filter the harness's rewrite (`envoy/native.yaml`'s form) makes of
//!   the WasmPlugin's, and validates against the EnvoyFilter CRD;
//! - its patch, as shipped, passes `envoy --mode validate` with the built module (which refuses a
//!   broken document there), and routes sessions, overrides and buckets in a real Envoy
//!   (`in_envoy`'s checks);
//! - the workloads it selects mount the module image where `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`
//!   points, set the stat-prefix runtime flag, let `dynamicmodulescustom.` through and hold the
//!   override tokens, and are otherwise the Wasm build's workloads; the mesh-wide settings are the
//!   Wasm build's plus the same two;
//! - configured as Istio renders those settings (runtime layer, stats matcher), Envoy publishes
//!   the Wasm build's series names, and none of the filter's with the Wasm build's matcher.

use super::carriers::{carrier, Carrier, VmEnv};
use super::compose::{makefile_version, tested_envoy_version};
use super::crds::{crds, violations};
use super::in_envoy::{carrier_in_envoy, filter_entry, reference_with, routes_in_envoy};
use super::manifests::{find, manifests, of_kind, Manifest};
use serde_json::{json, Value};
use std::fs;
use std::time::Duration;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, key, workspace_root, Envoy, Launch};
use sticky_canary_harness::http::{Client, Request, Upstream};
use sticky_canary_harness::native::{self, Build};
use sticky_canary_harness::prom::Scrape;
use sticky_canary_harness::Keys;

/// (native EnvoyFilter, the WasmPlugin it stands for).
const PAIRS: &[(&str, &str)] = &[
    ("sticky-canary-native", "sticky-canary"),
    ("sticky-canary-native-east-west", "sticky-canary-east-west"),
];
/// The prefix of the native build's stats inside Envoy, and of the Wasm build's.
const NATIVE_PREFIX: &str = "dynamicmodulescustom.";
const WASM_PREFIX: &str = "wasmcustom.";
/// Where Envoy looks for `lib<name>.so`.
const SEARCH_PATH: &str = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH";
/// Pod annotations Istio reads.
const PROXY_CONFIG: &str = "proxy.istio.io/config";
const USER_VOLUME: &str = "sidecar.istio.io/userVolume";
const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";
const STATS_PREFIXES: &str = "sidecar.istio.io/statsInclusionPrefixes";
const STATS_BUCKETS: &str = "sidecar.istio.io/statsHistogramBuckets";

fn in_native(m: &Manifest) -> bool {
    m.file.starts_with("istio/native/")
}

fn native_carrier(envoy_filter: &str) -> Carrier {
    carrier(&format!("EnvoyFilter {envoy_filter})"))
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The patch of a native EnvoyFilter (it has one).
fn patch(ef: &Manifest) -> &Value {
    let patches = ef.doc["spec"]["configPatches"].as_array().unwrap();
    assert_eq!(patches.len(), 1, "{}", ef.at());
    &patches[0]
}

/// A dynamic-module filter entry's typed_config with its JSON document parsed, to compare
/// documents rather than their layout.
fn typed_config(filter: &Value) -> Value {
    let mut t = filter["typed_config"].clone();
    let doc = parse_json(t["filter_config"]["value"].as_str().unwrap());
    t["filter_config"]["value"] = doc;
    t
}

#[test]
fn each_native_envoyfilter_carries_its_wasmplugins_document_in_the_native_filter() {
    let all = manifests();
    for (ef_name, wp_name) in PAIRS {
        let ef = find(&all, "EnvoyFilter", ef_name);
        let wp = find(&all, "WasmPlugin", wp_name);
        let at = ef.at();
        assert!(in_native(&ef), "{at}");
        // The same workloads.
        assert_eq!(ef.namespace(), wp.namespace(), "{at}");
        assert_eq!(
            ef.doc["spec"]["workloadSelector"]["labels"], wp.doc["spec"]["selector"]["matchLabels"],
            "{at}"
        );
        // Before the router of the listeners the WasmPlugin's CLIENT mode selects: the
        // gateway's, or the sidecar's outbound listener of the ports it matches.
        let p = patch(&ef);
        assert_eq!(p["applyTo"], "HTTP_FILTER", "{at}");
        assert_eq!(p["patch"]["operation"], "INSERT_BEFORE", "{at}");
        let listener = &p["match"]["listener"];
        assert_eq!(
            listener["filterChain"]["filter"]["name"],
            "envoy.filters.network.http_connection_manager",
            "{at}"
        );
        assert_eq!(
            listener["filterChain"]["filter"]["subFilter"]["name"], "envoy.filters.http.router",
            "{at}: the filter must run before the router"
        );
        let wp_match = wp.doc["spec"]["match"].as_array().unwrap();
        assert_eq!(wp_match.len(), 1);
        assert_eq!(wp_match[0]["mode"], "CLIENT");
        match wp_match[0]["ports"].as_array() {
            None => {
                assert_eq!(p["match"]["context"], "GATEWAY", "{at}");
                assert!(listener.get("portNumber").is_none(), "{at}");
            }
            Some(ports) => {
                assert_eq!(p["match"]["context"], "SIDECAR_OUTBOUND", "{at}");
                assert_eq!(ports.len(), 1, "{}", wp.at());
                assert_eq!(listener["portNumber"], ports[0]["number"], "{at}");
            }
        }

        // The same document.
        let native = native_carrier(ef_name);
        let wasm = carrier(&format!("WasmPlugin {wp_name})"));
        assert_eq!(
            parse_json(&native.json),
            parse_json(&wasm.json),
            "{at}: not {}'s document",
            wp.at()
        );
        // In the filter a user's rewrite of the Wasm filter gives (harness `native`, whose form
        // envoy/native.yaml has): the rewrite of the entry Istio renders for the WasmPlugin. It
        // recognises sticky-canary's wasm filter by the module's file name.
        let mut entry = filter_entry(&wasm);
        entry["typed_config"]["config"]["vm_config"]["code"] =
            json!({"local": {"filename": "sticky_canary.wasm"}});
        let mut filters = serde_yaml::to_value(vec![entry]).unwrap();
        let inline_env = native::to_native_filters(&mut filters);
        assert!(inline_env.is_empty(), "{}: {inline_env:?}", wp.at());
        let rewritten: Value = serde_json::to_value(&filters[0]).unwrap();
        assert_eq!(
            rewritten["typed_config"]["@type"],
            native::FILTER_TYPE,
            "the rewrite recognised the filter"
        );
        assert_eq!(
            typed_config(&p["patch"]["value"]),
            typed_config(&rewritten),
            "{at}"
        );
    }
}

#[test]
fn native_manifests_validate_against_their_crds() {
    // crds.rs validates every document under istio/, these included; here, that they are there
    // and that the schema reaches into them.
    let Some(crds) = crds() else { return };
    let all = manifests();
    let native: Vec<&Manifest> = all.iter().filter(|m| in_native(m)).collect();
    let kinds: Vec<String> = native
        .iter()
        .map(|m| format!("{} {}", m.kind(), m.name()))
        .collect();
    assert_eq!(
        kinds,
        [
            "EnvoyFilter sticky-canary-native-east-west",
            "EnvoyFilter sticky-canary-native",
            "Deployment shop-gateway",
            "IstioOperator sticky-canary-mesh-native",
            "Deployment frontend",
        ],
        "the documents under istio/native/, in file order"
    );
    for m in &native {
        assert_eq!(violations(m, &crds), Vec::<String>::new(), "{}", m.at());
    }
    let mut ef = find(&all, "EnvoyFilter", "sticky-canary-native-east-west");
    ef.doc["spec"]["configPatches"][0]["match"]["context"] = json!("SIDECAR_OUTBOUN");
    let errors = violations(&ef, &crds);
    assert!(
        errors.iter().any(|e| {
            e.starts_with("spec.configPatches[0].match.context: ") && e.contains("is not one of")
        }),
        "{errors:?}"
    );
}

#[test]
fn native_envoyfilter_patches_pass_envoy_validate() {
    envoy::check_prerequisites();
    let all = manifests();
    let strip = find(&all, "EnvoyFilter", "strip-pin-header");
    let strip_value = &strip.doc["spec"]["configPatches"][0]["patch"]["value"];
    let dir = tempfile::tempdir().unwrap();
    // Envoy looks for lib<name>.so in ENVOY_DYNAMIC_MODULES_SEARCH_PATH, else in its working
    // directory: validation runs from the directory `make build-native` writes.
    let modules = native::native_dir();
    let validate = |value: &Value, first: Option<&Value>, file: &str| {
        let path = dir.path().join(file);
        let doc = reference_with(value, first, &[]);
        fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
        envoy::validate(&path, &modules)
    };
    for (ef_name, _) in PAIRS {
        let ef = find(&all, "EnvoyFilter", ef_name);
        let at = ef.at();
        let p = patch(&ef);
        let value = &p["patch"]["value"];
        // At the gateway, after the trusted hop's header_mutation, as in the mesh.
        let first = (p["match"]["context"] == "GATEWAY").then_some(strip_value);

        // 1. As shipped: nothing in it is a local path, Envoy finds the module by name.
        let (ok, out) = validate(value, first, "shipped.yaml");
        assert!(
            ok && out.contains("OK"),
            "{at}: envoy --mode validate failed:\n{out}"
        );

        // 2. The module's configuration hook ran on the shipped document: a broken one in the
        //    same patch is refused there, naming the field.
        let mut broken = value.clone();
        let doc = broken["typed_config"]["filter_config"]["value"]
            .as_str()
            .unwrap()
            .replace("\"versions\"", "\"versoins\"");
        broken["typed_config"]["filter_config"]["value"] = json!(doc);
        let (ok, out) = validate(&broken, first, "broken.yaml");
        assert!(
            !ok && out.contains("versoins"),
            "{at}: a typo must be refused:\n{out}"
        );

        // 3. ...and a module Envoy cannot find is refused: validation loads the module.
        let mut missing = value.clone();
        missing["typed_config"]["dynamic_module_config"]["name"] = json!("sticky_canary_absent");
        let (ok, out) = validate(&missing, first, "missing.yaml");
        assert!(
            !ok && out.contains("libsticky_canary_absent.so"),
            "{at}: a missing module must be refused:\n{out}"
        );
    }
}

#[test]
fn native_envoyfilter_routes_in_envoy() {
    routes_in_envoy("EnvoyFilter sticky-canary-native)");
}

#[test]
fn native_east_west_envoyfilter_routes_in_envoy() {
    routes_in_envoy("EnvoyFilter sticky-canary-native-east-west)");
}

/// The one workload under istio/native/ a native EnvoyFilter selects.
fn workload_of<'a>(all: &'a [Manifest], envoy_filter: &str) -> &'a Manifest {
    let ef = find(all, "EnvoyFilter", envoy_filter);
    let selector = ef.doc["spec"]["workloadSelector"]["labels"]
        .as_object()
        .unwrap();
    let pods: Vec<&Manifest> = of_kind(all, "Deployment")
        .filter(|d| in_native(d) && d.namespace() == ef.namespace())
        .filter(|d| {
            selector
                .iter()
                .all(|(k, v)| &d.doc["spec"]["template"]["metadata"]["labels"][k] == v)
        })
        .collect();
    assert_eq!(
        pods.len(),
        1,
        "{}: one workload under istio/native/ for {selector:?}",
        ef.at()
    );
    pods[0]
}

fn annotations(d: &Manifest) -> &serde_json::Map<String, Value> {
    d.doc["spec"]["template"]["metadata"]["annotations"]
        .as_object()
        .unwrap_or_else(|| panic!("{}: no pod annotations", d.at()))
}

fn annotation<'a>(d: &'a Manifest, name: &str) -> &'a str {
    annotations(d)[name]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no annotation {name}", d.at()))
}

/// The pod's ProxyConfig (`proxy.istio.io/config`, YAML).
fn proxy_config(d: &Manifest) -> Value {
    serde_yaml::from_str(annotation(d, PROXY_CONFIG))
        .unwrap_or_else(|e| panic!("{}: {PROXY_CONFIG}: {e}", d.at()))
}

fn stats_prefixes(d: &Manifest) -> Vec<String> {
    annotation(d, STATS_PREFIXES)
        .split(',')
        .map(|p| p.trim().to_string())
        .collect()
}

fn proxy_container(doc: &mut Value) -> &mut serde_json::Map<String, Value> {
    doc["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "istio-proxy")
        .and_then(Value::as_object_mut)
        .expect("an istio-proxy container")
}

/// The pod's volumes and the proxy's mounts: the sidecar injector's annotations, or (a gateway
/// injected with the `gateway` template, which reads no such annotation) the pod spec's.
fn volumes_and_mounts(d: &Manifest) -> (Vec<Value>, Vec<Value>) {
    let a = annotations(d);
    if a.get("inject.istio.io/templates").and_then(Value::as_str) == Some("gateway") {
        assert!(
            !a.contains_key(USER_VOLUME) && !a.contains_key(USER_VOLUME_MOUNT),
            "{}: Istio's gateway template ignores {USER_VOLUME}",
            d.at()
        );
        let mut doc = d.doc.clone();
        let mounts = proxy_container(&mut doc)
            .get("volumeMounts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let volumes = doc["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        return (volumes, mounts);
    }
    let list = |name: &str| -> Vec<Value> {
        serde_json::from_str(annotation(d, name))
            .unwrap_or_else(|e| panic!("{}: {name} is a JSON list: {e}", d.at()))
    };
    (list(USER_VOLUME), list(USER_VOLUME_MOUNT))
}

/// The module's volume and its mount into the proxy: the volume mounted at the search path.
fn module_volume(d: &Manifest) -> (Value, Value) {
    let dir = proxy_config(d)["proxyMetadata"][SEARCH_PATH]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no proxyMetadata {SEARCH_PATH}", d.at()))
        .to_string();
    let (volumes, mounts) = volumes_and_mounts(d);
    let mount = mounts
        .into_iter()
        .find(|m| m["mountPath"] == dir.as_str())
        .unwrap_or_else(|| panic!("{}: nothing mounted into the proxy at {dir}", d.at()));
    let volume = volumes
        .into_iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{}: no volume {}", d.at(), mount["name"]));
    (volume, mount)
}

/// The histogram buckets annotation parsed, to compare settings rather than their spelling.
fn with_parsed_buckets(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let a = &mut doc["spec"]["template"]["metadata"]["annotations"];
    let buckets = parse_json(a[STATS_BUCKETS].as_str().expect("histogram buckets"));
    a[STATS_BUCKETS] = buckets;
    doc
}

/// A native workload without what it adds for the native build: its ProxyConfig and volume
/// annotations, the native prefix and buckets, the module's volume and mount.
fn without_native(d: &Manifest, volume: &Value, mount: &Value) -> Value {
    fn remove_item(obj: &mut serde_json::Map<String, Value>, key: &str, item: &Value) {
        if let Some(Value::Array(items)) = obj.get_mut(key) {
            items.retain(|i| i != item);
            if items.is_empty() {
                obj.remove(key);
            }
        }
    }
    let mut doc = with_parsed_buckets(&d.doc);
    let a = doc["spec"]["template"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap();
    for k in [PROXY_CONFIG, USER_VOLUME, USER_VOLUME_MOUNT] {
        a.remove(k);
    }
    let prefixes: Vec<String> = stats_prefixes(d)
        .into_iter()
        .filter(|p| p != NATIVE_PREFIX)
        .collect();
    a.insert(STATS_PREFIXES.into(), json!(prefixes.join(",")));
    a[STATS_BUCKETS]
        .as_object_mut()
        .unwrap()
        .remove(NATIVE_PREFIX.trim_end_matches('.'));
    remove_item(
        doc["spec"]["template"]["spec"].as_object_mut().unwrap(),
        "volumes",
        volume,
    );
    remove_item(proxy_container(&mut doc), "volumeMounts", mount);
    doc
}

/// `x.y` of a version `x.y.z`, as numbers.
fn minor_of(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn native_workloads_load_the_module_from_the_image_they_mount() {
    let all = manifests();
    let mut images = Vec::new();
    for (ef_name, _) in PAIRS {
        let d = workload_of(&all, ef_name);
        let at = d.at();
        let pc = proxy_config(d);

        // The module image, read-only, at the directory Envoy searches.
        let (volume, mount) = module_volume(d);
        assert_eq!(mount["readOnly"], true, "{at}");
        let sources: Vec<&String> = volume
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .collect();
        assert_eq!(sources, ["image"], "{at}: an image volume");
        assert_eq!(volume["image"]["pullPolicy"], "IfNotPresent", "{at}");
        images.push(volume["image"]["reference"].as_str().unwrap().to_string());

        // The runtime flag, a string: ProxyConfig.runtimeValues is a map<string, string>.
        assert_eq!(
            pc["runtimeValues"],
            json!({native::STRIP_PREFIX_FLAG: "true"}),
            "{at}"
        );
        // Both builds' stats let through, the native build's with the same buckets.
        let prefixes = stats_prefixes(d);
        for p in [WASM_PREFIX, NATIVE_PREFIX] {
            assert!(prefixes.iter().any(|x| x == p), "{at}: {prefixes:?}");
        }
        let buckets = parse_json(annotation(d, STATS_BUCKETS));
        let native_buckets = &buckets[NATIVE_PREFIX.trim_end_matches('.')];
        assert!(native_buckets.is_array(), "{at}: {buckets}");
        assert_eq!(
            native_buckets,
            &buckets[WASM_PREFIX.trim_end_matches('.')],
            "{at}"
        );
        // Every variable the filter reads, in the proxy's environment from a Secret.
        let c = native_carrier(ef_name);
        assert!(!c.env.is_empty(), "{}", c.what);
        let mut doc = d.doc.clone();
        let env = proxy_container(&mut doc)["env"].as_array().unwrap().clone();
        for VmEnv::Host(name) | VmEnv::Inline(name, _) in &c.env {
            let e = env
                .iter()
                .find(|e| e["name"] == name.as_str())
                .unwrap_or_else(|| panic!("{at}: no {name} in istio-proxy's environment"));
            assert!(
                e["valueFrom"]["secretKeyRef"]["name"].is_string(),
                "{at}: {e}"
            );
        }

        // Otherwise the Wasm build's workload of the same name, which it replaces.
        let twin = all
            .iter()
            .find(|m| {
                m.kind() == "Deployment"
                    && m.name() == d.name()
                    && m.namespace() == d.namespace()
                    && !in_native(m)
            })
            .unwrap_or_else(|| panic!("{at}: no Wasm build's Deployment {}", d.name()));
        assert_eq!(
            without_native(d, &volume, &mount),
            with_parsed_buckets(&twin.doc),
            "{at} differs from {} beyond the native build's additions",
            twin.at()
        );
    }

    // One module image, built for the ABI of the oldest Envoy the native build loads, which the
    // tested Envoy still loads (Envoy keeps one minor version of forward compatibility).
    images.dedup();
    assert_eq!(images.len(), 1, "{images:?}");
    let tag = images[0].rsplit_once(':').unwrap().1;
    let (major, minor) = minor_of(&makefile_version("ENVOY_NATIVE_OLDEST"));
    assert!(
        tag.ends_with(&format!("-envoy{major}.{minor}")),
        "the tag {tag} names the Envoy whose ABI the module is built for ({major}.{minor})"
    );
    let (tested_major, tested_minor) = minor_of(&tested_envoy_version());
    assert!(
        tested_major == major && (minor..=minor + 1).contains(&tested_minor),
        "the tested Envoy {tested_major}.{tested_minor} is out of the module's ABI window"
    );
    // The image holds lib<name>.so at its root: Envoy finds it at <mount path>/lib<name>.so.
    let containerfile =
        fs::read_to_string(workspace_root().join("istio/native/Containerfile")).unwrap();
    let instructions: Vec<&str> = containerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let copy = format!("COPY lib{}.so ./", native::MODULE);
    assert_eq!(instructions, ["FROM scratch", copy.as_str()]);
    for (ef_name, _) in PAIRS {
        let ef = find(&all, "EnvoyFilter", ef_name);
        assert_eq!(
            patch(&ef)["patch"]["value"]["typed_config"]["dynamic_module_config"]["name"],
            native::MODULE,
            "{}",
            ef.at()
        );
    }
}

#[test]
fn native_mesh_config_is_the_wasm_builds_plus_the_prefix_and_the_flag() {
    let all = manifests();
    let wasm = find(&all, "IstioOperator", "sticky-canary-mesh");
    let native = find(&all, "IstioOperator", "sticky-canary-mesh-native");
    assert!(in_native(&native));
    let mut expected = wasm.doc.clone();
    expected["metadata"]["name"] = json!(native.name());
    let dc = &mut expected["spec"]["meshConfig"]["defaultConfig"];
    dc["proxyStatsMatcher"]["inclusionPrefixes"]
        .as_array_mut()
        .unwrap()
        .push(json!(NATIVE_PREFIX));
    dc["runtimeValues"] = json!({native::STRIP_PREFIX_FLAG: "true"});
    assert_eq!(native.doc, expected);
}

/// Envoy's runtime as istio-agent writes it into the bootstrap (pkg/bootstrap/config.go,
/// `extractRuntimeFlags`): a static layer "global config" holding the ProxyConfig's runtimeValues,
/// "true" and "false" turned into booleans (Envoy reads a feature flag given as the string "true"
/// as unset), "" dropped, other values as strings; then an admin layer. (Istio's own defaults in
/// that layer are left out: none concerns the filter.)
fn istio_runtime(proxy_config: &Value) -> Value {
    let mut flags = serde_json::Map::new();
    for (k, v) in proxy_config["runtimeValues"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let v = v.as_str().expect("runtimeValues are strings");
        match v {
            "" => continue,
            "true" => flags.insert(k.clone(), json!(true)),
            "false" => flags.insert(k.clone(), json!(false)),
            _ => flags.insert(k.clone(), json!(v)),
        };
    }
    json!({"layers": [
        {"name": "global config", "static_layer": flags},
        {"name": "admin", "admin_layer": {}},
    ]})
}

/// The prefixes istio-agent adds to every proxy's stats inclusion list (pkg/bootstrap/config.go,
/// `requiredEnvoyStatsMatcherInclusionPrefixes`).
const ISTIO_REQUIRED_PREFIXES: &[&str] = &[
    "cluster_manager",
    "listener_manager",
    "server",
    "cluster.xds-grpc",
    "wasm",
];

/// The native gateway's filter (the EnvoyFilter's patch) with the gateway's runtime and the stats
/// matcher Istio renders for these inclusion prefixes (one `prefix` pattern each, its required
/// ones added), started as written: the harness adds no runtime flag of its own.
fn native_gateway_in_envoy(prefixes: &[String]) -> (Plan, Vec<Upstream>, Envoy) {
    envoy::check_prerequisites();
    let all = manifests();
    let gateway = workload_of(&all, "sticky-canary-native");
    let (plan, upstreams, mut cfg) = carrier_in_envoy(&native_carrier("sticky-canary-native"));
    let runtime = istio_runtime(&proxy_config(gateway));
    cfg.set_top_level("layered_runtime", serde_yaml::to_value(runtime).unwrap());
    let patterns: Vec<Value> = prefixes
        .iter()
        .map(String::as_str)
        .chain(ISTIO_REQUIRED_PREFIXES.iter().copied())
        .map(|p| json!({"prefix": p}))
        .collect();
    let matcher = json!({"inclusion_list": {"patterns": patterns}});
    let mut stats = cfg.top_level("stats_config").cloned().unwrap();
    stats
        .as_mapping_mut()
        .unwrap()
        .insert(key("stats_matcher"), serde_yaml::to_value(matcher).unwrap());
    cfg.set_top_level("stats_config", stats);
    let launch = Launch {
        build: Build::Wasm,
        ..Launch::default()
    };
    let envoy = Envoy::start_with(&cfg, &launch)
        .unwrap_or_else(|f| panic!("the native gateway did not start:\n{}", f.log));
    (plan, upstreams, envoy)
}

const SESSIONS: usize = 20;

/// One request for each of [`SESSIONS`] sessions, each answered by an upstream.
fn send_sessions(envoy: &Envoy) {
    let mut client = Client::connect(envoy.listener()).unwrap();
    for k in Keys::new(21).take(SESSIONS) {
        let r = client
            .send(&Request::get("/cart").header("cookie", &format!("session_id={k}")))
            .expect("request through Envoy");
        assert_eq!(r.status, 200, "{k}");
    }
}

fn requests_counted(s: &Scrape) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.name == "canary_requests_total")
        .filter(|x| x.labels.get("service").map(String::as_str) == Some("checkout"))
        .map(|x| x.value)
        .sum()
}

#[test]
fn the_native_gateway_as_istio_renders_it_publishes_the_wasm_builds_series() {
    let all = manifests();
    let gateway = workload_of(&all, "sticky-canary-native");

    // The gateway's own settings: the series come out under the Wasm build's names and labels.
    let (_plan, _upstreams, envoy) = native_gateway_in_envoy(&stats_prefixes(gateway));
    send_sessions(&envoy);
    let s = envoy.scrape_until(|s| requests_counted(s) >= SESSIONS as f64);
    assert_eq!(
        requests_counted(&s),
        SESSIONS as f64,
        "canary_requests_total{{service=\"checkout\"}}:\n{}",
        s.text
    );
    let prefixed: Vec<&str> = s
        .samples
        .iter()
        .filter(|x| x.name.contains("dynamicmodulescustom"))
        .map(|x| x.name.as_str())
        .collect();
    assert!(prefixed.is_empty(), "{prefixed:?}");
    envoy.stop();

    // The Wasm build's matcher: the native build's stats are never created (Istio's own
    // `wasm` prefix does not cover them either).
    let (plan, _upstreams, envoy) = native_gateway_in_envoy(&[WASM_PREFIX.to_string()]);
    send_sessions(&envoy);
    std::thread::sleep(Duration::from_millis(
        2 * u64::from(plan.metrics_flush_ms) + 500,
    ));
    let s = envoy.scrape_now();
    let filters: Vec<&str> = s
        .samples
        .iter()
        .filter(|x| x.name.starts_with("canary_") || x.name.contains("dynamicmodulescustom"))
        .map(|x| x.name.as_str())
        .collect();
    assert!(filters.is_empty(), "{filters:?}");
}
