//! The pooled brake (`guard.pool`) as shipped: every guard of the Istio carriers asks Istio's
//! Prometheus through the outbound cluster Istio renders for it, an EnvoyFilter keeps that cluster
//! on the gateways that run it, the rendered filter queries it from a real Envoy, the plain-Envoy
//! example (`envoy/pool.yaml`) is `envoy/envoy.yaml` plus a pooled guard and does the same, every
//! shipped Envoy config passes `envoy --mode validate`, and Flagger's rollback webhook acts on one
//! trip or one firing comparison alert (promtool).

use super::analysis::run_promtool;
use super::carriers::{carrier, carriers, Carrier};
use super::in_envoy::carrier_in_envoy;
use super::manifests::{find, manifests, of_kind, Manifest};
use serde_json::{json, Value};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sticky_canary::brake::pool::Pool;
use sticky_canary::plan::services::Services;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, key, workspace_root, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{Handler, Request, Response, Upstream};

/// Istio's Prometheus addon (Service `prometheus`, namespace `istio-system`, port 9090).
const PROM_HOST: &str = "prometheus.istio-system.svc.cluster.local";
const PROM_PORT: u16 = 9090;
/// `envoyfilter.istio.io/referenced-services` (pilot/pkg/model/envoyfilter.go).
const REFERENCED: &str = "envoyfilter.istio.io/referenced-services";

/// The cluster name istiod gives a Service port without subset, on gateways and sidecars alike:
/// `model.BuildSubsetKey(TrafficDirectionOutbound, "", hostname, port)`
/// (pilot/pkg/model/service.go), i.e. `outbound|<port>|<subset>|<hostname>`.
fn istio_outbound_cluster(host: &str, port: u16) -> String {
    ["outbound", &port.to_string(), "", host].join("|")
}

/// The `guard.pool` blocks of a carrier's configuration, per service.
fn pools(c: &Carrier) -> Vec<(String, Option<Value>)> {
    let v: Value = serde_json::from_str(&c.json).unwrap();
    let services: Vec<Value> = match v.get("services") {
        Some(s) => s.as_array().unwrap().clone(),
        None => vec![v],
    };
    services
        .iter()
        .filter(|s| s.get("guard").is_some())
        .map(|s| {
            (
                s["service"].as_str().unwrap().to_string(),
                s["guard"].get("pool").cloned(),
            )
        })
        .collect()
}

/// The labels of the pods a carrier's manifest selects.
fn selected_labels(m: &Manifest) -> &serde_json::Map<String, Value> {
    let spec = &m.doc["spec"];
    let labels = match m.kind() {
        "EnvoyFilter" => &spec["workloadSelector"]["labels"],
        _ => &spec["selector"]["matchLabels"],
    };
    labels
        .as_object()
        .unwrap_or_else(|| panic!("{}: selects no pods by label", m.at()))
}

/// The manifest a carrier came from.
fn manifest_of<'a>(all: &'a [Manifest], c: &Carrier) -> &'a Manifest {
    all.iter()
        .find(|m| c.what.starts_with(&m.at()))
        .unwrap_or_else(|| panic!("no manifest for {}", c.what))
}

#[test]
fn every_pooled_guard_reaches_istios_prometheus_where_it_runs() {
    let all = manifests();
    let cluster = istio_outbound_cluster(PROM_HOST, PROM_PORT);
    assert_eq!(
        cluster,
        "outbound|9090||prometheus.istio-system.svc.cluster.local"
    );
    let (name, rest) = PROM_HOST.split_once('.').unwrap();
    let namespace = rest.split('.').next().unwrap();
    let authority = format!("{name}.{namespace}:{PROM_PORT}");
    let opt_in = format!("{namespace}/{PROM_HOST}");

    let mut pooled = Vec::new();
    for c in carriers(&all) {
        for (service, pool) in pools(&c) {
            let at = format!("{} service {service}", c.what);
            let pool = pool.unwrap_or_else(|| panic!("{at}: a guard without a pool"));
            let p = pool.as_object().unwrap();
            assert_eq!(p["cluster"], cluster.as_str(), "{at}");
            assert_eq!(p["authority"], authority.as_str(), "{at}");
            assert_eq!(
                (&p["interval_ms"], &p["timeout_ms"]),
                (&json!(5000), &json!(1000)),
                "{at}"
            );
            assert!(
                p.get("path").is_none_or(|x| x == "/api/v1/query"),
                "{at}: Prometheus's instant-query endpoint"
            );
            let keys: Vec<&str> = p.keys().map(String::as_str).collect();
            assert!(
                keys.iter().all(
                    |k| ["cluster", "authority", "path", "interval_ms", "timeout_ms"].contains(k)
                ),
                "{at}: no selector, token or local test in the shipped pool: {keys:?}"
            );
            pooled.push((c.clone(), service));
        }
    }
    let names: Vec<String> = pooled
        .iter()
        .map(|(c, s)| format!("{} {s}", c.what))
        .collect();
    // The gateway's WasmPlugin, its TrafficExtension and EnvoyFilter alternatives, the native
    // build's EnvoyFilter, and the shared gateway's shop and payments.
    assert_eq!(pooled.len(), 6, "{names:#?}");

    // The filter compiles each pool (query, path) from the shipped configuration.
    for c in carriers(&all).iter().filter(|c| !pools(c).is_empty()) {
        let compiled: Vec<Pool> = if c.json.contains("\"services\"") {
            let env = |_: &str| Some("0123456789abcdef-qa".to_string());
            Services::from_json_with_env(c.json.as_bytes(), &env)
                .unwrap_or_else(|e| panic!("{}: {e}", c.what))
                .plans
                .into_iter()
                .filter_map(|p| p.guard.and_then(|g| g.pool))
                .collect()
        } else {
            let plan = Plan::from_json(c.json.as_bytes()).unwrap();
            vec![plan.guard.unwrap().pool.unwrap()]
        };
        for p in &compiled {
            assert_eq!(
                (p.cluster.as_str(), p.authority.as_str()),
                (cluster.as_str(), authority.as_str())
            );
            assert!(p.path.starts_with("/api/v1/query?query="), "{}", p.path);
        }
    }

    // The cluster exists where the plugin runs, also with PILOT_FILTER_GATEWAY_CLUSTER_CONFIG:
    // an EnvoyFilter in the plugin's namespace, selecting (a superset of) its pods, names the
    // Service in envoyfilter.istio.io/referenced-services.
    for (c, service) in &pooled {
        let m = manifest_of(&all, c);
        let pods = selected_labels(m);
        let opted_in = of_kind(&all, "EnvoyFilter").any(|ef| {
            ef.namespace() == m.namespace()
                && ef.doc["spec"]["workloadSelector"]["labels"]
                    .as_object()
                    .is_some_and(|l| l.iter().all(|(k, v)| pods.get(k) == Some(v)))
                && ef.doc["metadata"]["annotations"][REFERENCED]
                    .as_str()
                    .is_some_and(|r| r.split(',').any(|s| s.trim() == opt_in))
        });
        assert!(
            opted_in,
            "{} ({service}): no EnvoyFilter for {pods:?} in {} names {opt_in} in {REFERENCED}",
            c.what,
            m.namespace()
        );
    }
    // The opt-in EnvoyFilters patch nothing: they only name the Service.
    for name in [
        "sticky-canary-pool-cluster",
        "sticky-canary-shared-pool-cluster",
    ] {
        let ef = find(&all, "EnvoyFilter", name);
        assert_eq!(ef.doc["spec"]["configPatches"], json!([]), "{}", ef.at());
        assert_eq!(
            ef.doc["metadata"]["annotations"][REFERENCED],
            opt_in.as_str()
        );
    }
    // istiod ignores Sidecars for gateways (PushContext.doGetSidecarScope): none is shipped as
    // if it helped.
    assert_eq!(of_kind(&all, "Sidecar").count(), 0);
}

/// What a fake Prometheus saw of one query.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    authority: Option<String>,
    at: Instant,
}

/// A fake Prometheus: answers every query with an empty vector, records each.
fn fake_prometheus() -> (Upstream, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler: Handler = Arc::new(move |req: &Request| {
        log.lock().unwrap().push(Seen {
            method: req.method.clone(),
            path: req.path.clone(),
            authority: req.header_str("host").map(str::to_string),
            at: Instant::now(),
        });
        Response::new(200)
            .header("content-type", "application/json")
            .body(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
    });
    let up = Upstream::start_with("fake-prometheus", None, handler).unwrap();
    (up, seen)
}

/// Starts `cfg` and checks that the filter sends `pool`'s query to the fake within a few
/// seconds, with its `:authority`, counts it `ok`, and publishes the generation it asks for.
fn queries_its_pool(what: &str, cfg: &EnvoyConfig, pool: &Pool, seen: &Mutex<Vec<Seen>>) {
    let started = Instant::now();
    let envoy =
        Envoy::start(cfg).unwrap_or_else(|f| panic!("{what}: Envoy did not start:\n{}", f.log));
    let deadline = Instant::now() + Duration::from_secs(8);
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = seen.lock().unwrap().first().cloned().unwrap_or_else(|| {
        panic!(
            "{what}: no query reached the pool's cluster {} in 8 s\n{}",
            pool.cluster,
            envoy.log()
        )
    });
    assert_eq!(first.method, "GET", "{what}");
    assert_eq!(first.path, pool.path, "{what}");
    assert!(
        first.path.starts_with("/api/v1/query?query="),
        "{what}: {}",
        first.path
    );
    assert_eq!(
        first.authority.as_deref(),
        Some(pool.authority.as_str()),
        "{what}"
    );
    let s = envoy.scrape_until(|s| {
        s.value(
            "canary_guard_pool_queries_total",
            &[("service", "checkout"), ("outcome", "ok")],
        )
        .is_some_and(|v| v >= 1.0)
    });
    let ok = s.value(
        "canary_guard_pool_queries_total",
        &[("service", "checkout"), ("outcome", "ok")],
    );
    assert!(
        ok.is_some_and(|v| v >= 1.0),
        "{what}: ok = {ok:?}\n{}",
        envoy.log()
    );
    assert_eq!(
        s.value("canary_guard_generation", &[("service", "checkout")]),
        Some(f64::from(pool.generation)),
        "{what}"
    );
    eprintln!(
        "{what}: first query {:?} after start, GET {} (:authority {}), {} answered ok",
        first.at - started,
        pool.query,
        pool.authority,
        ok.unwrap()
    );
}

/// The plugin configuration with the pool's interval shortened (1 s, the least the filter
/// allows) so that the test does not wait 5 s for the first query.
fn with_short_interval(json: &str) -> String {
    let mut v: Value = serde_json::from_str(json).unwrap();
    let pool = &mut v["guard"]["pool"];
    assert!(pool.is_object(), "no guard.pool in {json}");
    pool["interval_ms"] = json!(1000);
    pool["timeout_ms"] = json!(500);
    v.to_string()
}

/// What Istio renders for the gateway: the WasmPlugin's filter (its pluginConfig, loaded from
/// the shipped file) plus an outbound cluster named as istiod names Prometheus's, pointing at a
/// fake Prometheus on loopback. The filter asks it, with the shipped authority.
#[test]
fn the_wasmplugin_pool_queries_prometheus_through_istios_cluster_in_envoy() {
    envoy::check_prerequisites();
    let mut c = carrier("WasmPlugin sticky-canary)");
    c.json = with_short_interval(&c.json);
    let (plan, _upstreams, mut cfg) = carrier_in_envoy(&c);
    let pool = plan.guard.as_ref().unwrap().pool.clone().unwrap();
    assert_eq!(pool.cluster, istio_outbound_cluster(PROM_HOST, PROM_PORT));
    let (fake, seen) = fake_prometheus();
    cfg.add_module_cluster(&pool.cluster, fake.addr());
    queries_its_pool("WasmPlugin sticky-canary", &cfg, &pool, &seen);
}

fn envoy_dir() -> PathBuf {
    workspace_root().join("envoy")
}

fn plugin_json(doc: &serde_yaml::Value) -> Value {
    serde_json::from_str(&envoy::wasm_plugin_config(doc).expect("a wasm filter")).unwrap()
}

/// `envoy/pool.yaml` is `envoy/envoy.yaml` with other ports, a guard with a pool, and the
/// `prometheus` cluster that pool names; its guard is the Istio gateway's (checks, alpha,
/// minimum); it starts in a real Envoy and queries its pool.
#[test]
fn plain_envoy_pool_yaml_is_the_reference_plus_a_pooled_guard() {
    let load = |f: &str| -> serde_yaml::Value {
        serde_yaml::from_str(&fs::read_to_string(envoy_dir().join(f)).unwrap()).unwrap()
    };
    let reference = load("envoy.yaml");
    let mut pooled = load("pool.yaml");

    // The plugin configuration: envoy.yaml's plus `guard`, whose checks are the gateway's.
    let mut json = plugin_json(&pooled);
    let guard = json
        .as_object_mut()
        .unwrap()
        .remove("guard")
        .expect("a guard");
    assert_eq!(
        json,
        plugin_json(&reference),
        "pool.yaml's plugin config, guard aside"
    );
    let istio: Value = serde_json::from_str(&carrier("WasmPlugin sticky-canary)").json).unwrap();
    let mut istio_guard = istio["guard"].clone();
    istio_guard.as_object_mut().unwrap().remove("pool");
    let mut own = guard.clone();
    let pool = own.as_object_mut().unwrap().remove("pool").expect("a pool");
    assert_eq!(own, istio_guard, "the same guard as the Istio gateway's");

    // The pool's cluster: one more STATIC cluster, where the compose stack's Prometheus listens.
    let clusters = pooled["static_resources"]["clusters"]
        .as_sequence_mut()
        .unwrap();
    let at = clusters
        .iter()
        .position(|c| c["name"].as_str() == pool["cluster"].as_str())
        .unwrap_or_else(|| panic!("no cluster {}", pool["cluster"]));
    let cluster = clusters.remove(at);
    let sa = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    let prom_addr = format!(
        "{}:{}",
        sa["address"].as_str().unwrap(),
        sa["port_value"].as_u64().unwrap()
    );
    assert_eq!(pool["authority"].as_str(), Some(prom_addr.as_str()));
    let compose: serde_yaml::Value = load("docker-compose.yaml");
    let listen = compose["services"]["prometheus"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("--web.listen-address="))
        .next()
        .expect("Prometheus's listen address");
    assert_eq!(
        listen, prom_addr,
        "the pool asks the compose stack's Prometheus"
    );

    // Everything else is envoy.yaml's, ports aside (pool.yaml runs beside it).
    let port = |d: &serde_yaml::Value, path: &[&str]| -> u64 {
        path.iter()
            .fold(d, |v, p| match p.parse::<usize>() {
                Ok(i) => &v[i],
                Err(_) => &v[*p],
            })
            .as_u64()
            .unwrap()
    };
    let admin = ["admin", "address", "socket_address", "port_value"];
    let listener = [
        "static_resources",
        "listeners",
        "0",
        "address",
        "socket_address",
        "port_value",
    ];
    assert_ne!(port(&pooled, &admin), port(&reference, &admin));
    assert_ne!(port(&pooled, &listener), port(&reference, &listener));
    let mut normalized = pooled.clone();
    normalized["admin"]["address"]["socket_address"]["port_value"] =
        reference["admin"]["address"]["socket_address"]["port_value"].clone();
    normalized["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] =
        reference["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
            .clone();
    let f = normalized["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"]["config"]["configuration"]
        .as_mapping_mut()
        .unwrap();
    f.insert(
        key("value"),
        reference["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
            .clone(),
    );
    assert_eq!(
        normalized, reference,
        "pool.yaml differs from envoy.yaml beyond the pool"
    );

    // In a real Envoy: the `prometheus` cluster pointed at a fake, the interval shortened.
    envoy::check_prerequisites();
    let mut cfg = EnvoyConfig::load(&envoy_dir().join("pool.yaml"));
    let short = with_short_interval(&cfg.plugin_config());
    cfg.set_plugin_config(&short);
    let plan = Plan::from_json(short.as_bytes()).unwrap();
    let compiled = plan.guard.as_ref().unwrap().pool.clone().unwrap();
    let (fake, seen) = fake_prometheus();
    cfg.set_cluster_address(&compiled.cluster, fake.addr());
    cfg.set_free_ports();
    cfg.set_wasm(&envoy::wasm_path());
    queries_its_pool("envoy/pool.yaml", &cfg, &compiled, &seen);
}

/// Every Envoy bootstrap under `envoy/` (the reference, the pooled example, the shared gateway,
/// stage zero, the ramp, the bench variants, the native build's) passes `envoy --mode validate`.
#[test]
fn every_shipped_envoy_config_passes_envoy_validate() {
    envoy::check_prerequisites();
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&envoy_dir(), &mut files);
    let root = workspace_root();
    let jobs: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter(|p| {
            let doc: serde_yaml::Value =
                serde_yaml::from_str(&fs::read_to_string(p).unwrap()).unwrap_or_default();
            doc.get("static_resources").is_some()
        })
        .map(|p| (p.strip_prefix(&root).unwrap().display().to_string(), p))
        .collect();
    let names: Vec<&str> = jobs.iter().map(|(n, _)| n.as_str()).collect();
    for must in [
        "envoy/envoy.yaml",
        "envoy/native.yaml",
        "envoy/pool.yaml",
        "envoy/shared-gateway.yaml",
    ] {
        assert!(names.contains(&must), "{must} not found: {names:?}");
    }
    // From the repository root (the wasm filters name their module relative to it); the native
    // build's module is found through ENVOY_DYNAMIC_MODULES_SEARCH_PATH, which validate sets.
    let failed = envoy::validate_all(&jobs, &root);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    eprintln!(
        "envoy --mode validate: {} configs OK: {names:?}",
        jobs.len()
    );
}

/// Flagger's rollback webhook: its bash command asks the MetricTemplates' Prometheus one instant
/// query and succeeds only when the answer has a series. The query returns one for a single
/// proxy's trip of the canary, or one FIRING comparison alert of prometheus/rules.yaml for the
/// canary; nothing for a trip of stable, another service, a pending alert, or no series.
#[test]
fn flagger_rollback_webhook_acts_on_one_trip_or_one_firing_alert() {
    let all = manifests();
    let canary = find(&all, "Canary", "checkout");
    let hooks = canary.doc["spec"]["analysis"]["webhooks"]
        .as_array()
        .unwrap();
    let hook = hooks
        .iter()
        .find(|h| h["type"] == "rollback")
        .expect("a rollback webhook");
    assert_eq!(hook["metadata"]["type"], "bash", "a blocking command");
    let cmd = hook["metadata"]["cmd"].as_str().unwrap();
    let template = find(&all, "MetricTemplate", "sticky-canary-guard-tripped");
    let address = template.doc["spec"]["provider"]["address"]
        .as_str()
        .unwrap();
    assert!(
        cmd.starts_with(&format!("curl -sfG {address}/api/v1/query ")),
        "the MetricTemplates' Prometheus: {cmd}"
    );
    assert!(
        cmd.ends_with("| jq -e '.data.result | length > 0'"),
        "succeeds only on a non-empty answer: {cmd}"
    );
    let query = cmd
        .split_once("--data-urlencode 'query=")
        .and_then(|(_, q)| q.split_once('\''))
        .map(|(q, _)| q)
        .expect("the query");
    assert!(!query.contains('\''), "{query}");

    let series = |name: &str, labels: &str, values: &str| {
        let series = format!("{name}{{{labels}}}");
        json!({"series": series, "values": values})
    };
    let alert = |name: &str, state: &str, service: &str, version: &str| {
        let labels = format!(
            "alertname=\"{name}\",alertstate=\"{state}\",service=\"{service}\",\
             version=\"{version}\",severity=\"critical\""
        );
        series("ALERTS", &labels, "1x10")
    };
    let tripped = |instance: &str, version: &str, values: &str| {
        series(
            "canary_guard_tripped",
            &format!("service=\"checkout\",version=\"{version}\",instance=\"{instance}\""),
            values,
        )
    };
    let fires = json!([{"labels": "{}", "value": 1}]);
    let quiet = json!([]);
    let cases = [
        (
            "no series at all",
            vec![series("up", "job=\"x\"", "1x10")],
            &quiet,
        ),
        (
            "0 on both proxies; stable tripped; firing elsewhere; pending",
            vec![
                tripped("gw-1", "canary", "0x10"),
                tripped("gw-2", "canary", "0x10"),
                tripped("gw-1", "stable", "1x10"),
                alert("CanaryApprovalRatioDrop", "firing", "search", "canary"),
                alert("CanaryErrorRatioHigh", "pending", "checkout", "canary"),
                alert("CanaryOrderValueDrift", "firing", "checkout", "stable"),
            ],
            &quiet,
        ),
        (
            "one proxy of two tripped",
            vec![
                tripped("gw-1", "canary", "1x10"),
                tripped("gw-2", "canary", "0x10"),
            ],
            &fires,
        ),
        (
            "one firing comparison alert, no trip",
            vec![
                tripped("gw-1", "canary", "0x10"),
                alert("CanaryApprovalRatioDrop", "firing", "checkout", "canary"),
            ],
            &fires,
        ),
    ];
    let tests: Vec<Value> = cases
        .iter()
        .map(|(name, input, expected)| {
            let at_5m = json!([{"expr": query, "eval_time": "5m", "exp_samples": expected}]);
            json!({"name": name, "interval": "1m", "input_series": input,
                   "promql_expr_test": at_5m})
        })
        .collect();
    let file = json!({"rule_files": [], "evaluation_interval": "1m", "tests": tests});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhook_test.yaml");
    fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    let (ok, out) = run_promtool(&["test", "rules"], &path);
    assert!(
        ok,
        "promtool test rules (the Flagger rollback webhook's query):\n{out}\n{query}"
    );
    eprintln!("Flagger rollback webhook query: {} cases OK", cases.len());
}
