//! The configuration each manifest carries starts in a real Envoy with the built module, routes
//! sessions and overrides and writes each session's cohort bucket; the EnvoyFilter patches pass
//! `envoy --mode validate` as shipped and with the local module. (The native build's carriers:
//! `native.rs`, with the helpers here.)

use super::carriers::{carrier, plan, Carrier, VmEnv};
use super::manifests::{find, manifests};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use sticky_canary::plan::Plan;
use sticky_canary::routing::hash::{bucket, bucket_digits};
use sticky_canary_harness::envoy::{self, key, workspace_root, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{echo_handler, Client, Request, Response, Upstream};
use sticky_canary_harness::{addresses, upstreams_for};
use sticky_canary_harness::{Keys, Observed};

pub(crate) const QA_TOKEN: &str = "qa-token-for-the-deploy-tests-0123";

/// A `serde_json::Value` as YAML.
fn to_yaml(v: &Value) -> serde_yaml::Value {
    serde_yaml::to_value(v).unwrap()
}

/// The reference envoy.yaml with its wasm filter entry replaced by `filter` (named
/// `envoy.filters.http.wasm` so that the harness finds it; Envoy picks the extension by the
/// typed_config's type), optionally with more HTTP filters first and more clusters.
pub(crate) fn reference_with(
    filter: &Value,
    first: Option<&Value>,
    clusters: &[Value],
) -> serde_yaml::Value {
    let text = fs::read_to_string(envoy::reference_config_path()).unwrap();
    with_filter(
        serde_yaml::from_str(&text).unwrap(),
        filter,
        first,
        clusters,
    )
}

/// `doc`, a bootstrap in the reference layout, with its wasm filter entry replaced by `filter`,
/// optionally with more HTTP filters first and more clusters.
fn with_filter(
    mut doc: serde_yaml::Value,
    filter: &Value,
    first: Option<&Value>,
    clusters: &[Value],
) -> serde_yaml::Value {
    let filters = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_sequence_mut()
        .unwrap();
    let i = filters
        .iter()
        .position(|f| f["name"] == key("envoy.filters.http.wasm"))
        .expect("envoy.yaml has the wasm filter");
    filters[i] = to_yaml(filter);
    if let Some(f) = first {
        filters.insert(0, to_yaml(f));
    }
    let cs = doc["static_resources"]["clusters"]
        .as_sequence_mut()
        .unwrap();
    cs.extend(clusters.iter().map(to_yaml));
    doc
}

fn load(doc: &serde_yaml::Value) -> EnvoyConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    fs::write(&path, serde_yaml::to_string(doc).unwrap()).unwrap();
    EnvoyConfig::load(&path)
}

/// The filter entry Istio would render for a WasmPlugin / TrafficExtension carrier (local
/// module instead of the agent-fetched one), or the Wasm EnvoyFilter's, with the local module.
pub(crate) fn filter_entry(c: &Carrier) -> Value {
    assert!(!c.is_native(), "{}: not a wasm filter", c.what);
    let mut f = match &c.envoy_filter {
        Some(v) => v.clone(),
        None => {
            let text = fs::read_to_string(envoy::reference_config_path()).unwrap();
            let doc: Value = serde_yaml::from_str(&text).unwrap();
            let f = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                ["typed_config"]["http_filters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == "envoy.filters.http.wasm")
                .unwrap()
                .clone();
            let mut f = f;
            let config = &mut f["typed_config"]["config"];
            config["configuration"]["value"] = json!(c.json);
            config["failure_policy"] = json!(c.failure_policy.as_deref().unwrap());
            let mut hosts = Vec::new();
            let mut kv = serde_json::Map::new();
            for e in &c.env {
                match e {
                    VmEnv::Host(n) => hosts.push(json!(n)),
                    VmEnv::Inline(n, v) => {
                        kv.insert(n.clone(), json!(v));
                    }
                }
            }
            let mut env = serde_json::Map::new();
            if !hosts.is_empty() {
                env.insert("host_env_keys".into(), Value::Array(hosts));
            }
            if !kv.is_empty() {
                env.insert("key_values".into(), Value::Object(kv));
            }
            config["vm_config"]["environment_variables"] = Value::Object(env);
            f
        }
    };
    f["name"] = json!("envoy.filters.http.wasm");
    f["typed_config"]["config"]["vm_config"]["code"] =
        json!({"local": {"filename": envoy::wasm_path().display().to_string()}});
    f
}

/// Every value of request header `name` the echo upstream received.
pub(crate) fn seen_upstream(r: &Response, name: &str) -> Vec<String> {
    r.json()["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter_map(|pair| pair[1].as_str().map(str::to_string))
        .collect()
}

/// The bucket header value the published algorithm gives this key.
pub(crate) fn bucket_text(plan: &Plan, key: &str) -> String {
    let b = bucket(&plan.salt, key.as_bytes());
    String::from_utf8(bucket_digits(b).to_vec()).unwrap()
}

fn observe(plan: &Plan, c: &mut Client, req: &Request) -> (Observed, Response) {
    let r = c.send(req).expect("request through Envoy");
    (Observed::from_response(plan, &r), r)
}

/// The reference config with a carrier's filter entry (local wasm module; the native build's
/// dynamic-module filter as shipped, which Envoy finds through ENVOY_DYNAMIC_MODULES_SEARCH_PATH),
/// one echo upstream per version of its plan, and the QA token in the proxy's environment where
/// the carrier reads it.
pub(crate) fn carrier_in_envoy(c: &Carrier) -> (Plan, Vec<Upstream>, EnvoyConfig) {
    let plan = plan(c);
    let upstreams = upstreams_for(&plan, echo_handler);
    let default = plan.version_name(plan.default_version).to_string();
    let mut cfg = match &c.envoy_filter {
        // The harness sets upstreams and ports up through the wasm filter it finds in the
        // reference config: the dynamic-module filter replaces it once they are set.
        Some(native) if c.is_native() => {
            let wasm = EnvoyConfig::for_test(&c.json, &addresses(&upstreams), &default);
            let doc = serde_yaml::from_str(&wasm.to_yaml()).unwrap();
            load(&with_filter(doc, native, None, &[]))
        }
        _ => load(&reference_with(&filter_entry(c), None, &[]))
            .for_upstreams(&addresses(&upstreams), &default),
    };
    for e in &c.env {
        if let VmEnv::Host(n) = e {
            cfg.set_process_env(n, QA_TOKEN);
        }
    }
    (plan, upstreams, cfg)
}

/// Starts Envoy with a carrier's configuration and checks sessions (and the bucket each one
/// carries upstream), the override token from the proxy's environment, the absence of pins and a
/// request without a session key.
pub(crate) fn routes_in_envoy(what: &str) {
    let c = carrier(what);
    let (plan, _upstreams, cfg) = carrier_in_envoy(&c);
    let default = plan.version_name(plan.default_version).to_string();
    let envoy = Envoy::start(&cfg)
        .unwrap_or_else(|f| panic!("{}: Envoy did not start:\n{}", c.what, f.log));
    let mut client = Client::connect(envoy.listener()).unwrap();
    let expected = |k: &str| plan.version_name(plan.bucket(k.as_bytes())).to_string();
    // Canary 0 / stable 100: the controller sizes the cohort on the bucket header, the filter
    // tags every session stable (the manual, "Progressive delivery").
    let bucket_header = plan.bucket_header.clone().expect("bucket_header is set");
    assert_eq!(plan.versions[0].weight, 0, "{}", c.what);

    let mut served = BTreeMap::<String, u32>::new();
    for k in Keys::new(11).take(300) {
        let req = Request::get("/cart")
            .header("cookie", &format!("session_id={k}"))
            .header(&bucket_header, "0000");
        let (o, r) = observe(&plan, &mut client, &req);
        assert!(o.is_served_by(&expected(&k)), "{}: {k}: {o:?}", c.what);
        // The client's forged bucket is replaced by the session's own.
        assert_eq!(
            seen_upstream(&r, &bucket_header),
            [bucket_text(&plan, &k)],
            "{}: {k}",
            c.what
        );
        *served.entry(o.served_by.unwrap()).or_default() += 1;
    }
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        [&default],
        "{}: {served:?}",
        c.what
    );

    // The QA override, with the token from the proxy's environment (Istio valueFrom: HOST).
    let stable_key = Keys::new(12).find(|k| expected(k) != "canary").unwrap();
    let with_session = Request::get("/").header("cookie", &format!("session_id={stable_key}"));
    let overriding = |token: &str| {
        with_session
            .clone()
            .header("x-canary-override", "canary")
            .header("x-canary-token", token)
    };
    let (o, _) = observe(&plan, &mut client, &overriding(QA_TOKEN));
    assert!(o.is_served_by("canary"), "{}: override: {o:?}", c.what);
    let (o, _) = observe(&plan, &mut client, &overriding(&QA_TOKEN[1..]));
    assert!(
        o.is_served_by(&expected(&stable_key)),
        "{}: near-miss token: {o:?}",
        c.what
    );

    // No pins: the test merchants are the controller's stage (a managed route on x-merchant-id),
    // not the filter's; the filter routes them by their session like anyone else.
    assert!(plan.pins.is_empty(), "{}", c.what);
    let (o, _) = observe(
        &plan,
        &mut client,
        &with_session.clone().header("x-merchant-id", "m_test_1"),
    );
    assert!(
        o.is_served_by(&expected(&stable_key)),
        "{}: merchant: {o:?}",
        c.what
    );

    // No session key: a fresh sticky id at the edge; the assigned cookie honoured everywhere.
    let (o, r) = observe(&plan, &mut client, &Request::get("/"));
    match &plan.assign {
        Some(a) => {
            let set = r
                .header_str("set-cookie")
                .unwrap_or_else(|| panic!("{}: no Set-Cookie", c.what));
            let id = set
                .strip_prefix(&format!("{}=", a.name))
                .and_then(|s| s.split(';').next())
                .unwrap_or_else(|| panic!("{}: {set}", c.what));
            assert_eq!(id.len(), 32, "{set}");
            assert!(
                o.is_served_by(&expected(id)),
                "{}: assigned {id}: {o:?}",
                c.what
            );
        }
        None => {
            assert!(o.is_served_by(&default), "{}: no key: {o:?}", c.what);
            assert!(r.header_str("set-cookie").is_none(), "{}", c.what);
        }
    }
    let sc = Keys::new(13).next().unwrap();
    let (o, r) = observe(
        &plan,
        &mut client,
        &Request::get("/").header("cookie", &format!("sc_session={sc}")),
    );
    assert!(
        o.is_served_by(&expected(&sc)),
        "{}: sc_session {sc}: {o:?}",
        c.what
    );
    assert_eq!(
        seen_upstream(&r, &bucket_header),
        [bucket_text(&plan, &sc)],
        "{}: sc_session {sc}",
        c.what
    );
    eprintln!(
        "{}: {served:?}, buckets, override, merchant and anonymous session OK",
        c.what
    );
}

#[test]
fn wasmplugin_north_south_configuration_routes_in_envoy() {
    routes_in_envoy("WasmPlugin sticky-canary)");
}

#[test]
fn wasmplugin_east_west_configuration_routes_in_envoy() {
    routes_in_envoy("WasmPlugin sticky-canary-east-west");
}

#[test]
fn trafficextension_configuration_routes_in_envoy() {
    routes_in_envoy("TrafficExtension sticky-canary");
}

#[test]
fn envoyfilter_patch_routes_in_envoy() {
    routes_in_envoy("EnvoyFilter sticky-canary)");
}

/// A STATIC cluster, for names the patches reference (`outbound|…` in a mesh).
fn stub_cluster(name: &str) -> Value {
    json!({
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}
    })
}

#[test]
fn envoyfilter_patches_pass_envoy_validate() {
    envoy::check_prerequisites();
    let all = manifests();
    let ef = find(&all, "EnvoyFilter", "sticky-canary");
    let patch = &ef.doc["spec"]["configPatches"][0];
    assert_eq!(patch["applyTo"], "HTTP_FILTER");
    assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router",
        "the filter must run before the router"
    );
    let value = &patch["patch"]["value"];
    let strip = find(&all, "EnvoyFilter", "strip-pin-header");
    let strip_patch = &strip.doc["spec"]["configPatches"][0];
    assert_eq!(strip_patch["patch"]["operation"], "INSERT_FIRST");
    let strip_value = &strip_patch["patch"]["value"];

    // 1. As shipped (remote module, sha256, retries), beside the trusted hop's header_mutation:
    //    the remote fetch needs its cluster, a stub here (in the mesh, Istio's outbound cluster).
    let remote = &value["typed_config"]["config"]["vm_config"]["code"]["remote"];
    let cluster = remote["http_uri"]["cluster"]
        .as_str()
        .expect("remote cluster");
    assert!(
        remote["sha256"].as_str().is_some_and(|s| s.len() == 64),
        "the remote module is pinned"
    );
    let dir = tempfile::tempdir().unwrap();
    let shipped = dir.path().join("shipped.yaml");
    let doc = reference_with(value, Some(strip_value), &[stub_cluster(cluster)]);
    fs::write(&shipped, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let (ok, out) = envoy::validate(&shipped, &workspace_root());
    assert!(
        ok,
        "envoy --mode validate (patch as shipped) failed:\n{out}"
    );

    // 2. With the local build instead of the download, so that validate also runs the
    //    plugin's on_configure on the shipped configuration.
    let mut local = value.clone();
    local["typed_config"]["config"]["vm_config"]["code"] =
        json!({"local": {"filename": envoy::wasm_path().display().to_string()}});
    let path = dir.path().join("local.yaml");
    let doc = reference_with(&local, Some(strip_value), &[]);
    fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let (ok, out) = envoy::validate(&path, &workspace_root());
    assert!(ok, "envoy --mode validate (local module) failed:\n{out}");
    assert!(out.contains("OK"), "{out}");

    // ...and a broken plugin configuration in the same patch is refused there.
    let mut broken = local.clone();
    let json = broken["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap()
        .replace("\"versions\"", "\"versoins\"");
    broken["typed_config"]["config"]["configuration"]["value"] = json!(json);
    let doc = reference_with(&broken, Some(strip_value), &[]);
    fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let (ok, out) = envoy::validate(&path, &workspace_root());
    assert!(
        !ok && out.contains("versoins"),
        "a typo must be refused:\n{out}"
    );
}

#[test]
fn virtual_host_patches_pass_envoy_validate() {
    // Every VIRTUAL_HOST MERGE patch (the attempt count for the retry series), merged into the
    // virtual hosts of the reference envoy.yaml with its own copy of the setting removed first,
    // so that only the patch carries it: a typo in a field name fails `envoy --mode validate`.
    envoy::check_prerequisites();
    let all = manifests();
    let ef = find(&all, "EnvoyFilter", "sticky-canary-attempt-count");
    let patches: Vec<&Value> = ef.doc["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["applyTo"] == "VIRTUAL_HOST")
        .collect();
    assert_eq!(patches.len(), 1);
    let patch = patches[0];
    assert_eq!(patch["patch"]["operation"], "MERGE");
    assert_eq!(patch["match"]["context"], "GATEWAY");
    let value = patch["patch"]["value"].as_object().expect("a map to merge");
    assert_eq!(value["include_attempt_count_in_response"], true);
    let text = fs::read_to_string(envoy::reference_config_path()).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let vhosts = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"]
        .as_sequence_mut()
        .expect("envoy.yaml has virtual hosts");
    assert!(!vhosts.is_empty());
    for vh in vhosts.iter_mut() {
        let m = vh.as_mapping_mut().unwrap();
        assert!(
            m.remove("include_attempt_count_in_response").is_some(),
            "envoy.yaml ships the setting too"
        );
        for (k, v) in value {
            m.insert(key(k), to_yaml(v));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vhost.yaml");
    fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let (ok, out) = envoy::validate(&path, &workspace_root());
    assert!(
        ok,
        "envoy --mode validate (VIRTUAL_HOST patch) failed:\n{out}"
    );
    // ...and a misspelt field in the same place is refused (the check can fail).
    let vh = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0];
    vh.as_mapping_mut()
        .unwrap()
        .insert(key("include_attempt_count_in_respons"), key("true"));
    fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let (ok, out) = envoy::validate(&path, &workspace_root());
    assert!(
        !ok && out.contains("include_attempt_count_in_respons"),
        "a typo must be refused:\n{out}"
    );
}
