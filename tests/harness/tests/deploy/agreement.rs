//! Routing, rollout and mesh manifests agree with the plugin configuration.

use super::carriers::{carrier, plan};
use super::manifests::{find, manifests, of_kind, Manifest};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use sticky_canary::metrics::TAGS;
use sticky_canary::plan::Plan;

pub(crate) fn gateway_plan() -> Plan {
    plan(&carrier("WasmPlugin sticky-canary)"))
}

fn header_match(m: &Value) -> Option<(String, String)> {
    let (name, v) = m["headers"].as_object()?.iter().next()?;
    Some((name.clone(), v["exact"].as_str()?.to_string()))
}

#[test]
fn routing_and_rollout_manifests_agree_with_the_plugin() {
    let all = manifests();
    let plan = gateway_plan();
    let canary = plan.versions[0].name.clone();
    assert_eq!(
        canary, "canary",
        "the canary is listed first (monotonic ramp)"
    );
    let default = plan.version_name(plan.default_version).to_string();
    let fqdn = "checkout.shop.svc.cluster.local";

    // Plain routing: one route per version on the route header, then the last route to the
    // default version; subsets named after the versions.
    let vs = all
        .iter()
        .find(|m| m.kind() == "VirtualService" && m.file.contains("routing"))
        .expect("istio/routing has the VirtualService");
    let http = vs.doc["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), plan.versions.len() + 1);
    for (route, version) in http.iter().zip(&plan.versions) {
        let m = header_match(&route["match"][0]).expect("a header match");
        assert_eq!(m, (plan.route_header.clone(), version.name.clone()));
        assert_eq!(
            route["route"][0]["destination"]["subset"],
            version.name.as_str()
        );
        assert_eq!(route["route"][0]["destination"]["host"], fqdn);
    }
    let last = http.last().unwrap();
    assert!(
        last.get("match").is_none(),
        "the last route matches everything"
    );
    assert_eq!(last["route"][0]["destination"]["subset"], default.as_str());
    let gateways: Vec<&str> = vs.doc["spec"]["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(gateways, ["istio-ingress/shop-gateway", "mesh"]);
    let dr = all
        .iter()
        .find(|m| m.kind() == "DestinationRule" && m.file.contains("routing"))
        .unwrap();
    let subsets: BTreeSet<&str> = dr.doc["spec"]["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["labels"]["version"], s["name"], "subset {s}");
            s["name"].as_str().unwrap()
        })
        .collect();
    let versions: BTreeSet<&str> = plan.versions.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(subsets, versions);
    for d in of_kind(&all, "Deployment").filter(|d| d.file.contains("routing")) {
        if let Some(v) = d.doc["spec"]["template"]["metadata"]["labels"]["version"].as_str() {
            assert!(versions.contains(v), "{}: version label {v}", d.at());
        }
    }

    // Flagger: A/B mode; the match is QA's tag, the test merchants and the cohort's bucket
    // regex, the same as the Rollout's stages (pipeline.rs checks the regexes); the target is
    // the plugin's service.
    let fc = find(&all, "Canary", "checkout");
    let spec = &fc.doc["spec"];
    assert_eq!(spec["provider"], "istio");
    assert_eq!(spec["targetRef"]["name"], plan.service.as_str());
    assert_eq!(
        header_match(&spec["analysis"]["match"][0]),
        Some((plan.route_header.clone(), canary.clone()))
    );
    let bucket_header = plan.bucket_header.clone().expect("bucket_header is set");
    let flagger_headers: Vec<&str> = spec["analysis"]["match"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let h = m["headers"].as_object().unwrap();
            assert_eq!(h.len(), 1, "one header per match entry (OR): {m}");
            h.keys().next().unwrap().as_str()
        })
        .collect();
    assert_eq!(
        flagger_headers,
        [plan.route_header.as_str(), "x-merchant-id", &bucket_header]
    );
    assert!(
        spec["analysis"].get("stepWeight").is_none()
            && spec["analysis"].get("stepWeights").is_none()
            && spec["analysis"].get("iterations").is_some(),
        "A/B mode: the cohort size is the match's bucket regex"
    );

    // Argo Rollouts: the first managed header route is QA's tag (exact), the managed routes are
    // exactly the setHeaderRoute names, no random weights; its primary route goes to stable.
    let ro = find(&all, "Rollout", "checkout");
    let canary_strategy = &ro.doc["spec"]["strategy"]["canary"];
    let steps = canary_strategy["steps"].as_array().unwrap();
    let header_step = steps
        .iter()
        .find_map(|s| s.get("setHeaderRoute"))
        .expect("a setHeaderRoute step");
    assert_eq!(
        header_step["match"][0]["headerName"],
        plan.route_header.as_str()
    );
    assert_eq!(
        header_step["match"][0]["headerValue"]["exact"],
        canary.as_str()
    );
    let managed: Vec<&Value> = canary_strategy["trafficRouting"]["managedRoutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["name"])
        .collect();
    let mut step_names: Vec<&Value> = Vec::new();
    for s in steps.iter().filter_map(|s| s.get("setHeaderRoute")) {
        if !step_names.contains(&&s["name"]) {
            step_names.push(&s["name"]);
        }
    }
    assert_eq!(managed, step_names);
    assert!(
        steps.iter().all(|s| s.get("setWeight").is_none()),
        "no random weights: the cohort reaches the canary"
    );
    let istio = &canary_strategy["trafficRouting"]["istio"];
    let argo_vs = all
        .iter()
        .find(|m| m.kind() == "VirtualService" && m.file.contains("argo-rollouts"))
        .unwrap();
    assert_eq!(argo_vs.name(), istio["virtualService"]["name"]);
    let primary = &argo_vs.doc["spec"]["http"][0];
    assert_eq!(primary["name"], istio["virtualService"]["routes"][0]);
    assert_eq!(
        primary["route"][0]["destination"]["subset"],
        istio["destinationRule"]["stableSubsetName"]
    );
    assert_eq!(primary["route"][0]["weight"], 100);
    assert_eq!(
        istio["destinationRule"]["stableSubsetName"],
        default.as_str()
    );
    assert_eq!(
        istio["destinationRule"]["canarySubsetName"],
        canary.as_str()
    );
    // Every analysis gates this plugin's service.
    for a in steps.iter().filter_map(|s| s.get("analysis")) {
        assert!(a["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "service" && a["value"] == plan.service.as_str()));
    }

    // Workloads and listeners selected by the plugins exist.
    let gw = find(&all, "Gateway", "shop-gateway");
    let wp = find(&all, "WasmPlugin", "sticky-canary");
    assert_eq!(
        gw.doc["spec"]["selector"],
        wp.doc["spec"]["selector"]["matchLabels"]
    );
    for m in all.iter().filter(|m| {
        matches!(m.kind(), "WasmPlugin" | "TrafficExtension") || m.kind() == "EnvoyFilter"
    }) {
        let spec = &m.doc["spec"];
        assert!(
            spec["phase"].as_str().is_none_or(|p| p == "STATS"),
            "{}: after authn/authz, before the router",
            m.at()
        );
        let modes: Vec<&Value> = spec["match"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| &x["mode"])
            .collect();
        assert!(
            modes.iter().all(|x| *x == "CLIENT"),
            "{}: the Envoy that picks the upstream (gateway / outbound)",
            m.at()
        );
    }
}

#[test]
fn mesh_config_and_workloads_carry_the_metric_labels_and_tokens() {
    let all = manifests();
    let io = find(&all, "IstioOperator", "sticky-canary-mesh");
    let dc = &io.doc["spec"]["meshConfig"]["defaultConfig"];
    assert_eq!(
        dc["extraStatTags"],
        json!(TAGS),
        "the filter's tags, in its order"
    );
    assert_eq!(
        dc["proxyStatsMatcher"]["inclusionPrefixes"],
        json!(["wasmcustom."])
    );

    // Every workload a plugin selects: the same tags as annotations, and the tokens in the
    // proxy's environment (valueFrom: HOST reads them there) from a Secret.
    let selecting: Vec<&Manifest> = all
        .iter()
        .filter(|m| matches!(m.kind(), "WasmPlugin" | "TrafficExtension"))
        .collect();
    for p in selecting {
        let labels = &p.doc["spec"]["selector"]["matchLabels"];
        let pods: Vec<&Manifest> = of_kind(&all, "Deployment")
            .filter(|d| d.namespace() == p.namespace())
            .filter(|d| {
                labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &d.doc["spec"]["template"]["metadata"]["labels"][k] == v)
            })
            .collect();
        assert!(
            !pods.is_empty(),
            "{}: no shipped workload matches {labels}",
            p.at()
        );
        for d in pods {
            let a = &d.doc["spec"]["template"]["metadata"]["annotations"];
            assert_eq!(
                a["sidecar.istio.io/extraStatTags"],
                json!(TAGS.join(",")),
                "{}",
                d.at()
            );
            // wasmcustom.* let through (a workload set up for the native build lets its
            // dynamicmodulescustom.* through as well: native.rs).
            let prefixes = a["sidecar.istio.io/statsInclusionPrefixes"]
                .as_str()
                .unwrap_or("");
            assert!(
                prefixes.split(',').any(|p| p.trim() == "wasmcustom."),
                "{}: {prefixes}",
                d.at()
            );
            let buckets: Value = serde_json::from_str(
                a["sidecar.istio.io/statsHistogramBuckets"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            assert!(buckets["wasmcustom"]
                .as_array()
                .is_some_and(|b| b.len() > 3));
            let proxy = d.doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "istio-proxy")
                .unwrap_or_else(|| panic!("{}: no istio-proxy container override", d.at()));
            assert_eq!(proxy["image"], "auto");
            let env = proxy["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "CANARY_OVERRIDE_TOKENS")
                .unwrap_or_else(|| panic!("{}: no CANARY_OVERRIDE_TOKENS", d.at()));
            assert!(
                env["valueFrom"]["secretKeyRef"]["name"].is_string(),
                "{}",
                d.at()
            );
        }
    }
}
