//! The filter configuration every manifest carries (WasmPlugin, TrafficExtension, the Wasm and
//! the native build's EnvoyFilters): each compiles, and all decide alike.

use super::manifests::{manifests, of_kind, Manifest};
use serde_json::Value;
use std::cell::RefCell;
use sticky_canary::plan::services::Services;
use sticky_canary::plan::Plan;
use sticky_canary::routing::matcher::HostPattern;
use sticky_canary_harness::native;

/// How an entry of the VM environment gets its value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum VmEnv {
    /// Envoy's own environment (`host_env_keys`; Istio `valueFrom: HOST`), the only one the
    /// native build has: it reads the Envoy process's.
    Host(String),
    /// A literal (`key_values`; Istio `INLINE`).
    Inline(String, String),
}

/// One shipped carrier of the filter configuration.
#[derive(Clone, Debug)]
pub(crate) struct Carrier {
    pub(crate) what: String,
    pub(crate) json: String,
    pub(crate) env: Vec<VmEnv>,
    /// Envoy's `failure_policy` the carrier asks for; `None` for the native build's
    /// dynamic-module filter, which has none.
    pub(crate) failure_policy: Option<String>,
    /// For an EnvoyFilter: the HTTP filter entry as shipped.
    pub(crate) envoy_filter: Option<Value>,
}

impl Carrier {
    /// Whether the carrier loads the native build (Envoy's dynamic-module filter).
    pub(crate) fn is_native(&self) -> bool {
        self.envoy_filter
            .as_ref()
            .is_some_and(|f| f["typed_config"]["@type"] == native::FILTER_TYPE)
    }
}

fn istio_env(vm_config: &Value) -> Vec<VmEnv> {
    vm_config["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            match e["valueFrom"].as_str() {
                Some("HOST") => VmEnv::Host(name),
                _ => VmEnv::Inline(name, e["value"].as_str().unwrap_or("").to_string()),
            }
        })
        .collect()
}

/// Istio's FailStrategy → Envoy's FailurePolicy (pilot's mapping; unset is FAIL_CLOSE).
fn failure_policy(fail_strategy: &Value) -> String {
    match fail_strategy.as_str() {
        Some("FAIL_OPEN") => "FAIL_OPEN",
        Some("FAIL_RELOAD") => "FAIL_RELOAD",
        _ => "FAIL_CLOSED",
    }
    .to_string()
}

/// The environment variables a configuration reads (`override.tokens_env`, the flow key): the
/// names the filter asks for while compiling it. The native build reads them from the Envoy
/// process's environment, where no manifest lists them.
fn env_read_by(json: &str) -> Vec<VmEnv> {
    let asked = RefCell::new(Vec::<String>::new());
    let _ = Services::from_json_with_env(json.as_bytes(), &|name: &str| {
        asked.borrow_mut().push(name.to_string());
        None
    });
    let mut names = asked.into_inner();
    names.sort();
    names.dedup();
    names.into_iter().map(VmEnv::Host).collect()
}

pub(crate) fn carriers(all: &[Manifest]) -> Vec<Carrier> {
    let mut out = Vec::new();
    // The module fields sit in `spec` of a WasmPlugin, in `spec.wasm` of a TrafficExtension.
    for (kind, under) in [("WasmPlugin", None), ("TrafficExtension", Some("wasm"))] {
        for m in of_kind(all, kind) {
            let spec = &m.doc["spec"];
            let module = under.map_or(spec, |k| &spec[k]);
            out.push(Carrier {
                what: m.at(),
                json: module["pluginConfig"].to_string(),
                env: istio_env(&module["vmConfig"]),
                failure_policy: Some(failure_policy(&module["failStrategy"])),
                envoy_filter: None,
            });
        }
    }
    for m in of_kind(all, "EnvoyFilter") {
        for (i, p) in m.doc["spec"]["configPatches"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let value = &p["patch"]["value"];
            let what = format!("{} configPatches[{i}]", m.at());
            if value["typed_config"]["@type"] == native::FILTER_TYPE {
                let json = value["typed_config"]["filter_config"]["value"]
                    .as_str()
                    .expect("filter_config.value is the JSON string")
                    .to_string();
                out.push(Carrier {
                    what,
                    env: env_read_by(&json),
                    json,
                    failure_policy: None,
                    envoy_filter: Some(value.clone()),
                });
                continue;
            }
            if value["typed_config"]["@type"]
                != "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
            {
                continue;
            }
            let config = &value["typed_config"]["config"];
            let vm_env = &config["vm_config"]["environment_variables"];
            let mut env: Vec<VmEnv> = vm_env["host_env_keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| VmEnv::Host(k.as_str().unwrap().to_string()))
                .collect();
            for (k, v) in vm_env["key_values"].as_object().into_iter().flatten() {
                env.push(VmEnv::Inline(k.clone(), v.as_str().unwrap().to_string()));
            }
            out.push(Carrier {
                what,
                json: config["configuration"]["value"]
                    .as_str()
                    .expect("configuration.value is the JSON string")
                    .to_string(),
                env,
                failure_policy: Some(
                    config["failure_policy"]
                        .as_str()
                        .unwrap_or("FAIL_CLOSED")
                        .to_string(),
                ),
                envoy_filter: Some(value.clone()),
            });
        }
    }
    out
}

pub(crate) fn carrier(what_contains: &str) -> Carrier {
    let all = manifests();
    let found: Vec<Carrier> = carriers(&all)
        .into_iter()
        .filter(|c| c.what.contains(what_contains))
        .collect();
    assert_eq!(found.len(), 1, "one carrier matching {what_contains:?}");
    found[0].clone()
}

/// A carrier of a multi-service document (`{"services": [...]}`).
fn is_shared(c: &Carrier) -> bool {
    serde_json::from_str::<Value>(&c.json).is_ok_and(|v| v.get("services").is_some())
}

pub(crate) fn plan(c: &Carrier) -> Plan {
    Plan::from_json(c.json.as_bytes())
        .unwrap_or_else(|e| panic!("{}: the filter refuses its configuration: {e}", c.what))
}

#[test]
fn every_plugin_configuration_compiles_and_decides_alike() {
    let all = manifests();
    // The single-service carriers of `checkout` (the shared gateway's: the test below).
    let cs: Vec<Carrier> = carriers(&all)
        .into_iter()
        .filter(|c| !is_shared(c))
        .collect();
    let names: Vec<&str> = cs.iter().map(|c| c.what.as_str()).collect();
    assert_eq!(
        cs.len(),
        6,
        "WasmPlugin ×2, TrafficExtension, EnvoyFilter, native EnvoyFilter ×2: {names:?}"
    );
    // What decides the version of a request: equal everywhere, so a session gets the same
    // version through the gateway and through a caller's sidecar, whichever API carries it.
    let decision = |p: &Plan| {
        format!(
            "service={} salt={:?} versions={:?} default={} sources={:?} route={} response={} \
             bucket={:?} hold={:?} override={:?} pins={:?}",
            p.service,
            String::from_utf8_lossy(&p.salt),
            p.versions,
            p.version_name(p.default_version),
            p.sources,
            p.route_header,
            p.response_header,
            p.bucket_header,
            p.hold,
            p.override_.is_some(),
            p.pins
                .iter()
                .map(|pin| (
                    pin.header.clone(),
                    pin.values.len(),
                    p.version_name(pin.version)
                ))
                .collect::<Vec<_>>(),
        )
    };
    let reference = decision(&plan(&cs[0]));
    for c in &cs {
        assert_eq!(
            decision(&plan(c)),
            reference,
            "{} decides differently",
            c.what
        );
        // The Wasm carriers fail open (wasmplugin.yaml says why); the dynamic-module filter has
        // no such setting.
        let policy = (!c.is_native()).then(|| "FAIL_OPEN".to_string());
        assert_eq!(c.failure_policy, policy, "{}", c.what);
        assert!(
            c.env
                .contains(&VmEnv::Host("CANARY_OVERRIDE_TOKENS".into())),
            "{}: the override tokens come from the proxy's environment",
            c.what
        );
    }
    // The north-south carriers are alternatives for the same gateway: identical configuration.
    let gateway: Vec<Value> = cs
        .iter()
        .filter(|c| !c.what.contains("east-west"))
        .map(|c| serde_json::from_str(&c.json).unwrap())
        .collect();
    assert_eq!(gateway.len(), 4);
    assert!(gateway.windows(2).all(|w| w[0] == w[1]), "{gateway:#?}");
}

/// The shared gateway (istio/shared-gateway/): one WasmPlugin carrying shop, payments and search.
/// Every service compiles (tokens from the proxy's environment), each host it claims is a host
/// of the Gateway and of exactly one VirtualService, which routes on the header its service sets
/// to subsets its DestinationRule defines; the unmanaged host's VirtualService does not route on
/// the version header (the filter leaves a client's value there). The plain-Envoy equivalent
/// (envoy/shared-gateway.yaml) carries the same services on the same hosts.
#[test]
fn the_shared_gateway_carries_three_services_each_with_its_virtual_service() {
    let all = manifests();
    let shared: Vec<Carrier> = carriers(&all).into_iter().filter(is_shared).collect();
    assert_eq!(shared.len(), 1, "one multi-service carrier");
    let c = &shared[0];
    assert!(c.what.contains("sticky-canary-shared"), "{}", c.what);
    assert_eq!(c.failure_policy.as_deref(), Some("FAIL_OPEN"));
    assert!(c
        .env
        .contains(&VmEnv::Host("CANARY_OVERRIDE_TOKENS".into())));
    let env = |n: &str| (n == "CANARY_OVERRIDE_TOKENS").then(|| "0123456789abcdef-qa".to_string());
    let compiled = Services::from_json_with_env(c.json.as_bytes(), &env)
        .unwrap_or_else(|e| panic!("{}: refused: {e}", c.what));
    let names: Vec<&str> = compiled.plans.iter().map(|p| p.service.as_str()).collect();
    assert_eq!(names, ["shop", "payments", "search"]);

    let in_dir = |kind: &str| -> Vec<&Manifest> {
        all.iter()
            .filter(|m| m.kind() == kind && m.file.starts_with("istio/shared-gateway/"))
            .collect()
    };
    let gateway = in_dir("Gateway");
    assert_eq!(gateway.len(), 1);
    let gateway_hosts: Vec<String> = gateway[0].doc["spec"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["hosts"].as_array().unwrap().iter())
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    let host_text = |h: &HostPattern| match h {
        HostPattern::Exact(n) => n.clone(),
        HostPattern::Wildcard(s) => format!("*.{s}"),
    };
    let vss = in_dir("VirtualService");
    let drs = in_dir("DestinationRule");
    let mut claimed = Vec::new();
    for p in &compiled.plans {
        let m = p.match_.as_ref().expect("every service has a match");
        for h in &m.hosts {
            let h = host_text(h);
            assert!(gateway_hosts.contains(&h), "{h} is not a Gateway host");
            let routing: Vec<&&Manifest> = vss
                .iter()
                .filter(|v| {
                    v.doc["spec"]["hosts"]
                        .as_array()
                        .unwrap()
                        .contains(&h.clone().into())
                })
                .collect();
            assert_eq!(routing.len(), 1, "{h}: one VirtualService");
            let http = routing[0].doc["spec"]["http"].as_array().unwrap();
            for v in &p.versions {
                let route = http
                    .iter()
                    .find(|r| r["match"][0]["headers"][&p.route_header]["exact"] == v.name.as_str())
                    .unwrap_or_else(|| panic!("{h}: no route on {} = {}", p.route_header, v.name));
                let dest = &route["route"][0]["destination"];
                let dr = drs
                    .iter()
                    .find(|d| d.doc["spec"]["host"] == dest["host"])
                    .unwrap_or_else(|| panic!("{h}: no DestinationRule for {}", dest["host"]));
                assert!(dr.doc["spec"]["subsets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["name"] == dest["subset"]));
            }
            let last = http.last().unwrap();
            assert!(
                last.get("match").is_none(),
                "{h}: a last route without a match"
            );
            claimed.push(h);
        }
    }
    // Hosts of the Gateway no service claims: their VirtualServices never match the header.
    for h in gateway_hosts.iter().filter(|h| !claimed.contains(h)) {
        for v in vss.iter().filter(|v| {
            v.doc["spec"]["hosts"]
                .as_array()
                .unwrap()
                .contains(&h.clone().into())
        }) {
            assert!(
                !v.doc["spec"].to_string().contains("x-canary-version"),
                "{}: an unmanaged host must not route on the version header",
                v.at()
            );
        }
    }

    // The plain-Envoy equivalent: the same services on the same hosts.
    let root = sticky_canary_harness::envoy::workspace_root();
    let text = std::fs::read_to_string(root.join("envoy/shared-gateway.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let json = sticky_canary_harness::envoy::wasm_plugin_config(&doc).unwrap();
    let envoy = Services::from_json_with_env(json.as_bytes(), &|_| None).unwrap();
    let hosts = |s: &Services| -> Vec<(String, Vec<String>)> {
        s.plans
            .iter()
            .map(|p| {
                let m = p.match_.as_ref().unwrap();
                (p.service.clone(), m.hosts.iter().map(host_text).collect())
            })
            .collect()
    };
    let mut istio_hosts = hosts(&compiled);
    istio_hosts.sort();
    let mut envoy_hosts = hosts(&envoy);
    envoy_hosts.sort();
    assert_eq!(istio_hosts, envoy_hosts);
}
