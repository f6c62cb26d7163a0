//! Deployment artifacts: the Istio / Flagger / Argo Rollouts manifests under `istio/`, the OCI
//! image `make image` builds, and `envoy/docker-compose.yaml`.
//!
//! - every manifest validates against its CRD's OpenAPI schema (`schema.rs`), from
//!   `${CRD_DIR:-../shared/crds}`; without that folder this test (only this one) says it skipped;
//! - the filter configuration every manifest carries (WasmPlugin, TrafficExtension, EnvoyFilter)
//!   starts in a real Envoy with the built module and routes sessions, overrides and pins; the
//!   EnvoyFilter patch passes `envoy --mode validate` as shipped and with the local module;
//! - the PromQL of the Flagger MetricTemplates and Argo AnalysisTemplates parses (promtool),
//!   reads only metrics the filter (or Envoy/Istio) publishes, and judges known traffic like the
//!   `sticky-canary-gate` rule (promtool unit tests);
//! - routing, rollout and mesh manifests agree with the plugin configuration;
//! - `docker-compose config` accepts the compose file, which runs the tested envoy.yaml unchanged
//!   in the tested Envoy version;
//! - the OCI layout of `make image` holds exactly `plugin.wasm`, byte-identical to the build.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use sticky_canary::config::Plan;
use sticky_canary::metrics::{Catalogue, MetricKind, TAGS};
use sticky_canary_harness::envoy::{self, key, workspace_root, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{echo_handler, Client, Request, Response};
use sticky_canary_harness::schema::{self, Crds};
use sticky_canary_harness::{addresses, find_tool, upstreams_for};
use sticky_canary_harness::{Keys, Observed};

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// One YAML document of a file under `istio/`.
#[derive(Clone, Debug)]
struct Manifest {
    /// Relative to the repository root.
    file: String,
    index: usize,
    doc: Value,
}

impl Manifest {
    fn api_version(&self) -> &str {
        self.doc["apiVersion"].as_str().unwrap_or("")
    }
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or("")
    }
    fn namespace(&self) -> &str {
        self.doc["metadata"]["namespace"].as_str().unwrap_or("")
    }
    fn at(&self) -> String {
        format!(
            "{} (document {}, {} {})",
            self.file,
            self.index,
            self.kind(),
            self.name()
        )
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn manifests() -> Vec<Manifest> {
    let root = workspace_root();
    let mut files = Vec::new();
    yaml_files(&root.join("istio"), &mut files);
    assert!(!files.is_empty(), "no manifests under istio/");
    let mut out = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        let docs = schema::parse_documents(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for (index, doc) in docs.into_iter().enumerate() {
            out.push(Manifest {
                file: rel.clone(),
                index,
                doc,
            });
        }
    }
    out
}

fn find(all: &[Manifest], kind: &str, name: &str) -> Manifest {
    let found: Vec<&Manifest> = all
        .iter()
        .filter(|m| m.kind() == kind && m.name() == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} {name}");
    found[0].clone()
}

fn of_kind<'a>(all: &'a [Manifest], kind: &'a str) -> impl Iterator<Item = &'a Manifest> + 'a {
    all.iter().filter(move |m| m.kind() == kind)
}

// ---------------------------------------------------------------------------------------------
// CRD schemas
// ---------------------------------------------------------------------------------------------

/// `$CRD_DIR` (relative to the repository root unless absolute), default `../shared/crds`.
fn crd_dir() -> PathBuf {
    let dir = std::env::var_os("CRD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/crds"));
    if dir.is_absolute() {
        dir
    } else {
        workspace_root().join(dir)
    }
}

/// The CRDs, or `None` (and a printed reason) when the folder is absent: the one allowed skip.
fn crds() -> Option<Crds> {
    let dir = crd_dir();
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED: CRD schema validation — no CRD folder at {} (set CRD_DIR to a folder of \
             CustomResourceDefinition YAML: Istio, Flagger, Argo Rollouts)",
            dir.display()
        );
        return None;
    }
    let crds = Crds::load_dir(&dir).unwrap_or_else(|e| panic!("load CRDs: {e}"));
    assert!(!crds.is_empty(), "no CRDs found in {}", dir.display());
    Some(crds)
}

/// The rules Istio's CRDs state in CEL (`x-kubernetes-validations`), which the OpenAPI validator
/// does not evaluate, for the kinds shipped here.
fn cel_rules(m: &Manifest) -> Vec<String> {
    let spec = &m.doc["spec"];
    let has = |v: &Value, k: &str| v.get(k).is_some();
    let mut errors = Vec::new();
    let exclusive = |errors: &mut Vec<String>, v: &Value, keys: &[&str]| {
        if keys.iter().filter(|k| has(v, k)).count() > 1 {
            errors.push(format!("spec: only one of {keys:?} can be set"));
        }
    };
    let env_rule = |errors: &mut Vec<String>, vm: &Value, at: &str| {
        for (i, e) in vm["env"].as_array().into_iter().flatten().enumerate() {
            if e["valueFrom"] == "HOST" && has(e, "value") {
                errors.push(format!(
                    "{at}.env[{i}]: value may only be set when valueFrom is INLINE"
                ));
            }
        }
    };
    match (m.api_version(), m.kind()) {
        ("extensions.istio.io/v1alpha1", "WasmPlugin") => {
            exclusive(&mut errors, spec, &["selector", "targetRef", "targetRefs"]);
            env_rule(&mut errors, &spec["vmConfig"], "spec.vmConfig");
        }
        ("extensions.istio.io/v1alpha1", "TrafficExtension") => {
            exclusive(&mut errors, spec, &["selector", "targetRefs"]);
            if has(spec, "wasm") == has(spec, "lua") {
                errors.push("spec: exactly one of wasm or lua must be set".into());
            }
            env_rule(&mut errors, &spec["wasm"]["vmConfig"], "spec.wasm.vmConfig");
        }
        ("networking.istio.io/v1alpha3", "EnvoyFilter") => {
            exclusive(&mut errors, spec, &["workloadSelector", "targetRefs"]);
        }
        _ => {}
    }
    errors
}

/// Kinds that are not custom resources, with how they are checked instead.
fn builtin_kind(m: &Manifest, crds: &Crds) -> Result<Vec<String>, String> {
    match (m.api_version(), m.kind()) {
        // A Deployment's pod template is a PodTemplateSpec: the Rollout CRD embeds that very
        // schema (spec.template), so typos in containers, env and annotations are caught.
        ("apps/v1", "Deployment") => {
            let rollout = crds
                .schema("argoproj.io/v1alpha1", "Rollout")
                .ok_or("no Rollout CRD to borrow the PodTemplateSpec schema from")?;
            let template_schema = &rollout["properties"]["spec"]["properties"]["template"];
            let spec = &m.doc["spec"];
            let mut errors: Vec<String> = schema::validate(template_schema, &spec["template"])
                .into_iter()
                .map(|e| format!("spec.template.{e}"))
                .collect();
            let known = [
                "replicas",
                "selector",
                "template",
                "strategy",
                "minReadySeconds",
                "revisionHistoryLimit",
                "progressDeadlineSeconds",
                "paused",
            ];
            for k in spec.as_object().into_iter().flatten().map(|(k, _)| k) {
                if !known.contains(&k.as_str()) {
                    errors.push(format!("spec.{k}: unknown field"));
                }
            }
            let selector = &spec["selector"]["matchLabels"];
            let labels = &spec["template"]["metadata"]["labels"];
            for (k, v) in selector.as_object().into_iter().flatten() {
                if &labels[k] != v {
                    errors.push(format!(
                        "spec.selector.matchLabels.{k}: the pod template lacks the label"
                    ));
                }
            }
            Ok(errors)
        }
        ("v1", "Service") => {
            let spec = &m.doc["spec"];
            let mut errors = Vec::new();
            for (i, p) in spec["ports"].as_array().into_iter().flatten().enumerate() {
                if !p["port"].as_u64().is_some_and(|n| (1..=65535).contains(&n)) {
                    errors.push(format!("spec.ports[{i}].port: not a port number"));
                }
            }
            if spec["selector"].as_object().is_none_or(|s| s.is_empty()) {
                errors.push("spec.selector: missing".into());
            }
            Ok(errors)
        }
        // istioctl's input, not a cluster resource (no CRD since the in-cluster operator went);
        // `mesh_config_and_workloads_carry_the_metric_labels_and_tokens` checks its content.
        ("install.istio.io/v1alpha1", "IstioOperator") => Ok(Vec::new()),
        _ => Err(format!(
            "no CRD for {} {} in {} and not a known built-in kind",
            m.api_version(),
            m.kind(),
            crd_dir().display()
        )),
    }
}

/// Every violation of one manifest: schema errors (with their JSON paths) and CEL rules.
fn violations(m: &Manifest, crds: &Crds) -> Vec<String> {
    let mut out: Vec<String> = match crds.schema(m.api_version(), m.kind()) {
        Some(s) => schema::validate_resource(s, &m.doc)
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
        None => builtin_kind(m, crds).unwrap_or_else(|e| vec![e]),
    };
    out.extend(cel_rules(m));
    out
}

#[test]
fn every_manifest_validates_against_its_crd_schema() {
    let Some(crds) = crds() else { return };
    let all = manifests();
    let mut failures = Vec::new();
    let mut checked = BTreeMap::<String, usize>::new();
    for m in &all {
        let how = if crds.schema(m.api_version(), m.kind()).is_some() {
            "CRD"
        } else {
            "built-in"
        };
        *checked
            .entry(format!("{} {} ({how})", m.api_version(), m.kind()))
            .or_default() += 1;
        for v in violations(m, &crds) {
            failures.push(format!("{}: {v}", m.at()));
        }
    }
    eprintln!("validated {} documents:", all.len());
    for (k, n) in &checked {
        eprintln!("  {n} × {k}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Applies `edit` to a copy of a shipped manifest and returns the violations.
fn mutated(crds: &Crds, m: &Manifest, edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut m = m.clone();
    edit(&mut m.doc);
    violations(&m, crds)
}

fn assert_rejected(errors: &[String], path: &str, what: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(what)),
        "expected an error at {path} containing {what:?}, got:\n{}",
        errors.join("\n")
    );
}

#[test]
fn schema_validation_rejects_typos_and_wrong_types_in_real_manifests() {
    let Some(crds) = crds() else { return };
    let all = manifests();
    let wp = find(&all, "WasmPlugin", "sticky-canary");
    assert_eq!(violations(&wp, &crds), Vec::<String>::new());

    let e = mutated(&crds, &wp, |d| {
        let spec = d["spec"].as_object_mut().unwrap();
        let v = spec.remove("failStrategy").unwrap();
        spec.insert("failStratgy".into(), v);
    });
    assert_rejected(&e, "spec.failStratgy", "unknown field");
    let e = mutated(&crds, &wp, |d| d["spec"]["priority"] = json!("high"));
    assert_rejected(&e, "spec.priority", "expected integer");
    let e = mutated(&crds, &wp, |d| {
        d["spec"]["priority"] = json!(3_000_000_000u64)
    });
    assert_rejected(&e, "spec.priority", "int32");
    let e = mutated(&crds, &wp, |d| {
        d["spec"]["match"][0]["mode"] = json!("OUTBOUND")
    });
    assert_rejected(&e, "spec.match[0].mode", "is not one of");
    let e = mutated(&crds, &wp, |d| d["spec"]["sha256"] = json!("sha256:abc"));
    assert_rejected(&e, "spec.sha256", "does not match the pattern");
    let e = mutated(&crds, &wp, |d| {
        d["spec"]["vmConfig"]["env"][0]["valuefrom"] = json!("HOST")
    });
    assert_rejected(&e, "spec.vmConfig.env[0].valuefrom", "unknown field");
    let e = mutated(&crds, &wp, |d| {
        d["spec"]["vmConfig"]["env"][0]["value"] = json!("tokens-in-the-manifest")
    });
    assert_rejected(
        &e,
        "spec.vmConfig.env[0]",
        "only be set when valueFrom is INLINE",
    );
    let e = mutated(&crds, &wp, |d| {
        d["spec"]["targetRefs"] = json!([{"kind": "Gateway", "name": "shop-gateway"}])
    });
    assert_rejected(&e, "spec", "only one of");
    // pluginConfig preserves unknown fields: the filter, not the CRD, refuses typos there.
    let e = mutated(&crds, &wp, |d| {
        d["spec"]["pluginConfig"]["versoins"] = json!([])
    });
    assert_eq!(e, Vec::<String>::new());
    let e = mutated(&crds, &wp, |d| d["metadata"]["lables"] = json!({}));
    assert_rejected(&e, "metadata.lables", "unknown field");

    // Istio's oneOf mutual exclusion: a patch matches a listener OR a cluster.
    let ef = find(&all, "EnvoyFilter", "sticky-canary");
    assert_eq!(violations(&ef, &crds), Vec::<String>::new());
    let e = mutated(&crds, &ef, |d| {
        d["spec"]["configPatches"][0]["match"]["cluster"] = json!({"name": "x"})
    });
    assert_rejected(&e, "spec.configPatches[0].match", "more than one of oneOf");
    let e = mutated(&crds, &ef, |d| {
        d["spec"]["configPatches"][0]["patch"]["operation"] = json!("INSERT_BEFOR")
    });
    assert_rejected(&e, "spec.configPatches[0].patch.operation", "is not one of");

    let vs = all
        .iter()
        .find(|m| m.kind() == "VirtualService" && m.file.contains("routing"))
        .unwrap();
    let e = mutated(&crds, vs, |d| {
        d["spec"]["http"][0]["match"][0]["headers"]["x-canary-version"] =
            json!({"exact": "canary", "prefix": "c"})
    });
    assert_rejected(
        &e,
        "spec.http[0].match[0].headers.x-canary-version",
        "more than one of oneOf",
    );

    let canary = find(&all, "Canary", "checkout");
    let e = mutated(&crds, &canary, |d| {
        d["spec"]["analysis"]
            .as_object_mut()
            .unwrap()
            .remove("iterations");
    });
    assert_rejected(&e, "spec.analysis", "oneOf");
    let e = mutated(&crds, &canary, |d| {
        d["spec"]["analysis"]["metrics"][1]["thresholdRange"]["min"] = json!("-0.3")
    });
    assert_rejected(
        &e,
        "spec.analysis.metrics[1].thresholdRange.min",
        "expected number",
    );

    let rollout = find(&all, "Rollout", "checkout");
    let e = mutated(&crds, &rollout, |d| {
        let port = d["spec"]["template"]["spec"]["containers"][0]["ports"][0]
            .as_object_mut()
            .unwrap();
        let v = port.remove("containerPort").unwrap();
        port.insert("containerport".into(), v);
    });
    assert_rejected(
        &e,
        "spec.template.spec.containers[0].ports[0].containerport",
        "unknown field",
    );
    assert_rejected(
        &e,
        "spec.template.spec.containers[0].ports[0].containerPort",
        "required field is missing",
    );
    let at = find(&all, "AnalysisTemplate", "sticky-canary-business");
    let e = mutated(&crds, &at, |d| {
        d["spec"]["metrics"][0]["count"] = json!(2.5)
    });
    assert_rejected(&e, "spec.metrics[0].count", "integer or a string");

    // A Deployment's pod template, checked with the PodTemplateSpec schema.
    let gw = find(&all, "Deployment", "shop-gateway");
    assert_eq!(violations(&gw, &crds), Vec::<String>::new());
    let e = mutated(&crds, &gw, |d| {
        d["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
            ["optional"] = json!("yes")
    });
    assert_rejected(
        &e,
        "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.optional",
        "expected boolean",
    );
}

// ---------------------------------------------------------------------------------------------
// The filter configuration each manifest carries
// ---------------------------------------------------------------------------------------------

/// How an entry of the VM environment gets its value.
#[derive(Clone, Debug, PartialEq)]
enum VmEnv {
    /// Envoy's own environment (`host_env_keys`; Istio `valueFrom: HOST`).
    Host(String),
    /// A literal (`key_values`; Istio `INLINE`).
    Inline(String, String),
}

/// One shipped carrier of the filter configuration.
#[derive(Clone, Debug)]
struct Carrier {
    what: String,
    json: String,
    env: Vec<VmEnv>,
    /// Envoy's `failure_policy` the carrier asks for.
    failure_policy: String,
    /// For the EnvoyFilter: the HTTP filter entry as shipped.
    envoy_filter: Option<Value>,
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

fn carriers(all: &[Manifest]) -> Vec<Carrier> {
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
                failure_policy: failure_policy(&module["failStrategy"]),
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
                what: format!("{} configPatches[{i}]", m.at()),
                json: config["configuration"]["value"]
                    .as_str()
                    .expect("configuration.value is the JSON string")
                    .to_string(),
                env,
                failure_policy: config["failure_policy"]
                    .as_str()
                    .unwrap_or("FAIL_CLOSED")
                    .to_string(),
                envoy_filter: Some(value.clone()),
            });
        }
    }
    out
}

fn carrier(what_contains: &str) -> Carrier {
    let all = manifests();
    let found: Vec<Carrier> = carriers(&all)
        .into_iter()
        .filter(|c| c.what.contains(what_contains))
        .collect();
    assert_eq!(found.len(), 1, "one carrier matching {what_contains:?}");
    found[0].clone()
}

fn plan(c: &Carrier) -> Plan {
    Plan::from_json(c.json.as_bytes())
        .unwrap_or_else(|e| panic!("{}: the filter refuses its configuration: {e}", c.what))
}

#[test]
fn every_plugin_configuration_compiles_and_decides_alike() {
    let all = manifests();
    let cs = carriers(&all);
    let names: Vec<&str> = cs.iter().map(|c| c.what.as_str()).collect();
    assert_eq!(
        cs.len(),
        4,
        "WasmPlugin ×2, TrafficExtension, EnvoyFilter: {names:?}"
    );
    // What decides the version of a request: equal everywhere, so a session gets the same
    // version through the gateway and through a caller's sidecar, whichever API carries it.
    let decision = |p: &Plan| {
        format!(
            "service={} salt={:?} versions={:?} default={} sources={:?} route={} response={} \
             override={:?} pins={:?}",
            p.service,
            String::from_utf8_lossy(&p.salt),
            p.versions,
            p.version_name(p.default_version),
            p.sources,
            p.route_header,
            p.response_header,
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
        assert_eq!(c.failure_policy, "FAIL_OPEN", "{}", c.what);
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
    assert_eq!(gateway.len(), 3);
    assert!(gateway.windows(2).all(|w| w[0] == w[1]), "{gateway:#?}");
}

// ---------------------------------------------------------------------------------------------
// The configurations in a real Envoy
// ---------------------------------------------------------------------------------------------

const QA_TOKEN: &str = "qa-token-for-the-deploy-tests-0123";

/// A `serde_json::Value` as YAML.
fn to_yaml(v: &Value) -> serde_yaml::Value {
    serde_yaml::to_value(v).unwrap()
}

/// The reference envoy.yaml with its wasm filter entry replaced by `filter` (named
/// `envoy.filters.http.wasm` so that the harness finds it; Envoy picks the extension by the
/// typed_config's type), optionally with more HTTP filters first and more clusters.
fn reference_with(filter: &Value, first: Option<&Value>, clusters: &[Value]) -> serde_yaml::Value {
    let text = fs::read_to_string(envoy::reference_config_path()).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
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
/// module instead of the agent-fetched one), or the EnvoyFilter's, with the local module.
fn filter_entry(c: &Carrier) -> Value {
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
            config["failure_policy"] = json!(c.failure_policy);
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

fn observe(plan: &Plan, c: &mut Client, req: &Request) -> (Observed, Response) {
    let r = c.send(req).expect("request through Envoy");
    (Observed::from_response(plan, &r), r)
}

/// Starts Envoy with a carrier's configuration and checks sessions, the override token from
/// the proxy's environment, a pin and a request without a session key.
fn routes_in_envoy(what: &str) {
    let c = carrier(what);
    let plan = plan(&c);
    let upstreams = upstreams_for(&plan, echo_handler);
    let pairs = addresses(&upstreams);
    let default = plan.version_name(plan.default_version).to_string();
    let mut cfg =
        load(&reference_with(&filter_entry(&c), None, &[])).for_upstreams(&pairs, &default);
    for e in &c.env {
        if let VmEnv::Host(n) = e {
            cfg.set_process_env(n, QA_TOKEN);
        }
    }
    let envoy = Envoy::start(&cfg)
        .unwrap_or_else(|f| panic!("{}: Envoy did not start:\n{}", c.what, f.log));
    let mut client = Client::connect(envoy.listener()).unwrap();
    let expected = |k: &str| plan.version_name(plan.bucket(k.as_bytes())).to_string();

    let mut served = BTreeMap::<String, u32>::new();
    for k in Keys::new(11).take(300) {
        let req = Request::get("/cart").header("cookie", &format!("session_id={k}"));
        let (o, _) = observe(&plan, &mut client, &req);
        assert!(o.is_served_by(&expected(&k)), "{}: {k}: {o:?}", c.what);
        *served.entry(o.served_by.unwrap()).or_default() += 1;
    }
    assert_eq!(served.len(), plan.versions.len(), "{}: {served:?}", c.what);

    // The QA override, with the token from the proxy's environment (Istio valueFrom: HOST).
    let stable_key = Keys::new(12).find(|k| expected(k) != "canary").unwrap();
    let with_session = Request::get("/").header("cookie", &format!("session_id={stable_key}"));
    let (o, _) = observe(
        &plan,
        &mut client,
        &with_session
            .clone()
            .header("x-canary-override", "canary")
            .header("x-canary-token", QA_TOKEN),
    );
    assert!(o.is_served_by("canary"), "{}: override: {o:?}", c.what);
    let (o, _) = observe(
        &plan,
        &mut client,
        &with_session
            .clone()
            .header("x-canary-override", "canary")
            .header("x-canary-token", &QA_TOKEN[1..]),
    );
    assert!(
        o.is_served_by(&expected(&stable_key)),
        "{}: near-miss token: {o:?}",
        c.what
    );

    // A pinned merchant.
    let (o, _) = observe(
        &plan,
        &mut client,
        &with_session.clone().header("x-merchant-id", "m_test_1"),
    );
    assert!(o.is_served_by("canary"), "{}: pin: {o:?}", c.what);

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
    let sc = Keys::new(13).find(|k| expected(k) == "canary").unwrap();
    let (o, _) = observe(
        &plan,
        &mut client,
        &Request::get("/").header("cookie", &format!("sc_session={sc}")),
    );
    assert!(
        o.is_served_by("canary"),
        "{}: sc_session {sc}: {o:?}",
        c.what
    );
    eprintln!(
        "{}: {served:?}, override, pin and anonymous session OK",
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

// ---------------------------------------------------------------------------------------------
// Routing and rollout manifests agree with the plugin
// ---------------------------------------------------------------------------------------------

fn gateway_plan() -> Plan {
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

    // Flagger: the A/B match is the canary cohort's tag; the target is the plugin's service.
    let fc = find(&all, "Canary", "checkout");
    let spec = &fc.doc["spec"];
    assert_eq!(spec["provider"], "istio");
    assert_eq!(spec["targetRef"]["name"], plan.service.as_str());
    assert_eq!(
        header_match(&spec["analysis"]["match"][0]),
        Some((plan.route_header.clone(), canary.clone()))
    );
    assert!(
        spec["analysis"].get("stepWeight").is_none()
            && spec["analysis"].get("iterations").is_some(),
        "A/B mode: the cohort size is the plugin's weight"
    );

    // Argo Rollouts: the managed header route is the canary cohort's tag; the primary route of
    // its VirtualService goes to stable; subsets are the rollout's.
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
    assert_eq!(managed, [&header_step["name"]]);
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
    let args = steps.iter().find_map(|s| s.get("analysis")).unwrap()["args"]
        .as_array()
        .unwrap();
    assert!(args
        .iter()
        .any(|a| a["name"] == "service" && a["value"] == plan.service.as_str()));

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
            assert_eq!(a["sidecar.istio.io/statsInclusionPrefixes"], "wasmcustom.");
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

// ---------------------------------------------------------------------------------------------
// The analysis queries
// ---------------------------------------------------------------------------------------------

/// One PromQL query of a Flagger MetricTemplate or an Argo AnalysisTemplate, with the template
/// variables replaced by the values its Canary / Rollout gives them.
#[derive(Clone, Debug)]
struct Query {
    origin: String,
    /// The gate it implements: the metric's name (`approval-ratio-delta`, …).
    gate: String,
    rendered: String,
    /// Pass range from Flagger's thresholdRange, or Argo's conditions.
    pass: (Option<f64>, Option<f64>),
}

fn render(
    template: &str,
    re: &regex::Regex,
    vars: &BTreeMap<String, String>,
    origin: &str,
) -> String {
    re.replace_all(template, |c: &regex::Captures| {
        vars.get(&c[1])
            .cloned()
            .unwrap_or_else(|| panic!("{origin}: no value for template variable {}", &c[0]))
    })
    .into_owned()
}

fn analysis_queries() -> Vec<Query> {
    let all = manifests();
    let mut out = Vec::new();
    // Flagger: {{ name }}, {{ namespace }}, {{ target }}, {{ service }}, {{ ingress }},
    // {{ interval }} from the Canary metric that references the template.
    let flagger_var = regex::Regex::new(r"\{\{\s*([a-z]+)\s*\}\}").unwrap();
    for c in of_kind(&all, "Canary") {
        let spec = &c.doc["spec"];
        for metric in spec["analysis"]["metrics"].as_array().unwrap() {
            let name = metric["templateRef"]["name"].as_str().unwrap();
            let t = find(&all, "MetricTemplate", name);
            let vars: BTreeMap<String, String> = [
                ("name", c.name().to_string()),
                ("namespace", c.namespace().to_string()),
                (
                    "target",
                    spec["targetRef"]["name"].as_str().unwrap().to_string(),
                ),
                (
                    "service",
                    spec["targetRef"]["name"].as_str().unwrap().to_string(),
                ),
                ("interval", metric["interval"].as_str().unwrap().to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let origin = format!("{} via {}", t.at(), c.at());
            out.push(Query {
                rendered: render(
                    t.doc["spec"]["query"].as_str().unwrap(),
                    &flagger_var,
                    &vars,
                    &origin,
                ),
                origin,
                gate: metric["name"].as_str().unwrap().to_string(),
                pass: (
                    metric["thresholdRange"]["min"].as_f64(),
                    metric["thresholdRange"]["max"].as_f64(),
                ),
            });
        }
    }
    // Argo: {{args.x}} from the template's defaults, overridden by the Rollout's analysis args.
    let argo_var = regex::Regex::new(r"\{\{\s*(args\.[a-z-]+)\s*\}\}").unwrap();
    let bound = regex::Regex::new(r"result\[0\] (>=|<=) (-?[0-9.]+)").unwrap();
    for r in of_kind(&all, "Rollout") {
        for step in r.doc["spec"]["strategy"]["canary"]["steps"]
            .as_array()
            .unwrap()
        {
            let Some(analysis) = step.get("analysis") else {
                continue;
            };
            for t in analysis["templates"].as_array().unwrap() {
                let t = find(
                    &all,
                    "AnalysisTemplate",
                    t["templateName"].as_str().unwrap(),
                );
                let mut vars = BTreeMap::new();
                for a in t.doc["spec"]["args"].as_array().unwrap() {
                    if let Some(v) = a["value"].as_str() {
                        vars.insert(
                            format!("args.{}", a["name"].as_str().unwrap()),
                            v.to_string(),
                        );
                    }
                }
                for a in analysis["args"].as_array().into_iter().flatten() {
                    vars.insert(
                        format!("args.{}", a["name"].as_str().unwrap()),
                        a["value"].as_str().unwrap().to_string(),
                    );
                }
                for m in t.doc["spec"]["metrics"].as_array().unwrap() {
                    let origin = format!("{} metric {} via {}", t.at(), m["name"], r.at());
                    let success = m["successCondition"].as_str().unwrap();
                    let mut pass = (None, None);
                    for c in bound.captures_iter(success) {
                        let v: f64 = c[2].parse().unwrap();
                        if &c[1] == ">=" {
                            pass.0 = Some(v);
                        } else {
                            pass.1 = Some(v);
                        }
                    }
                    assert!(
                        success.starts_with("!isNaN(result[0]) && ")
                            && m["failureCondition"]
                                .as_str()
                                .unwrap()
                                .starts_with("!isNaN(result[0]) && "),
                        "{origin}: NaN must be inconclusive"
                    );
                    out.push(Query {
                        rendered: render(
                            m["provider"]["prometheus"]["query"].as_str().unwrap(),
                            &argo_var,
                            &vars,
                            &origin,
                        ),
                        origin,
                        gate: m["name"].as_str().unwrap().to_string(),
                        pass,
                    });
                }
            }
        }
    }
    assert!(out.len() >= 6, "Flagger and Argo queries: {out:#?}");
    out
}

/// `PROMTOOL_BIN`, else `.venv/prometheus/usr/bin/promtool`, else `promtool` on PATH.
fn promtool() -> PathBuf {
    find_tool("PROMTOOL_BIN", "prometheus/usr/bin/promtool", "promtool").unwrap_or_else(|| {
        panic!(
            "promtool not found (PROMTOOL_BIN, {}, PATH) — run `make prometheus`",
            workspace_root()
                .join(".venv/prometheus/usr/bin/promtool")
                .display()
        )
    })
}

fn run_promtool(args: &[&str], file: &Path) -> (bool, String) {
    let out = Command::new(promtool())
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("run promtool: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn analysis_queries_parse_with_promtool() {
    let queries = analysis_queries();
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({"record": format!("sticky_canary:analysis_query_{i}"), "expr": q.rendered}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queries.yaml");
    let file = json!({"groups": [{"name": "analysis-queries", "rules": rules}]});
    fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    let (ok, out) = run_promtool(&["check", "rules"], &path);
    let index: Vec<String> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| format!("  analysis_query_{i}: {}", q.origin))
        .collect();
    assert!(
        ok && out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "promtool check rules:\n{out}\nqueries:\n{}",
        index.join("\n")
    );
}

/// The metric names a PromQL expression reads (not functions, keywords, labels or durations).
fn metric_names(q: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "on",
        "ignoring",
        "by",
        "without",
        "group_left",
        "group_right",
        "nan",
        "inf",
        "atan2",
        "start",
        "end",
        // aggregation operators, which may be followed by `by (…)` rather than `(`
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = q.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |i: &mut usize, close: char| {
        while *i < chars.len() && chars[*i] != close {
            if chars[*i] == '"' || chars[*i] == '\'' || chars[*i] == '`' {
                let quote = chars[*i];
                *i += 1;
                while *i < chars.len() && chars[*i] != quote {
                    if chars[*i] == '\\' {
                        *i += 1;
                    }
                    *i += 1;
                }
            }
            *i += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let ch = chars[i];
        if ch == '{' {
            skip_to(&mut i, '}');
        } else if ch == '[' {
            skip_to(&mut i, ']');
        } else if ch == '"' || ch == '\'' || ch == '`' {
            i += 1;
            skip_to(&mut i, ch);
        } else if ch == '#' {
            skip_to(&mut i, '\n');
        } else if ch.is_ascii_digit()
            || (ch == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = chars.get(j) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "on" | "ignoring" | "by" | "without" | "group_left" | "group_right"
            ) {
                if call {
                    i = j + 1;
                    skip_to(&mut i, ')');
                }
            } else if !call && !KEYWORDS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Metric names the filter publishes for a plan (histograms as _bucket/_sum/_count).
fn filter_metric_names(plan: &Plan) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in Catalogue::for_plan(plan).iter() {
        let base = m.name.rsplit(";.;").next().unwrap().to_string();
        if m.kind == MetricKind::Histogram {
            for s in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{base}{s}"));
            }
        } else {
            out.insert(base);
        }
    }
    out
}

/// Istio's standard metrics.
const ISTIO_STANDARD: &[&str] = &[
    "istio_requests_total",
    "istio_request_duration_milliseconds_bucket",
    "istio_request_duration_milliseconds_sum",
    "istio_request_duration_milliseconds_count",
    "istio_request_bytes_bucket",
    "istio_request_bytes_sum",
    "istio_request_bytes_count",
    "istio_response_bytes_bucket",
    "istio_response_bytes_sum",
    "istio_response_bytes_count",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
];

fn unknown_metrics(q: &str, known: &BTreeSet<String>) -> Vec<String> {
    metric_names(q)
        .into_iter()
        .filter(|n| {
            !known.contains(n) && !ISTIO_STANDARD.contains(&n.as_str()) && !n.starts_with("envoy_")
        })
        .collect()
}

#[test]
fn metric_name_extraction_finds_names_and_flags_unknown_ones() {
    let q = r#"sum by (le) (rate(foo_bucket{a="b", c=~"x{1}"}[5m])) / on(x) group_left(y) bar offset 5m
               and ignoring (z) baz > bool 1.5e3 or on() vector(NaN) + envoy_x - istio_requests_total"#;
    assert_eq!(
        metric_names(q).into_iter().collect::<Vec<_>>(),
        [
            "bar",
            "baz",
            "envoy_x",
            "foo_bucket",
            "istio_requests_total"
        ]
    );
    let known: BTreeSet<String> = ["foo_bucket", "bar"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(unknown_metrics(q, &known), ["baz"]);
    // A typo of a real name is caught.
    let plan = gateway_plan();
    let known = filter_metric_names(&plan);
    assert_eq!(
        unknown_metrics("sum(increase(canary_business_order_total[5m]))", &known),
        ["canary_business_order_total"]
    );
    assert!(unknown_metrics("sum(increase(canary_business_orders_total[5m]))", &known).is_empty());
}

#[test]
fn analysis_queries_read_only_metrics_the_filter_publishes() {
    let plan = gateway_plan();
    let known = filter_metric_names(&plan);
    for required in [
        "canary_requests_total",
        "canary_responses_total",
        "canary_version_weight",
        "canary_business_orders_total",
        "canary_business_order_value_total",
        "canary_business_order_value_squares_total",
        "canary_business_auth_approved_total",
        "canary_business_invalid_total",
        "canary_business_skipped_total",
        "canary_business_tax_bucket",
    ] {
        assert!(known.contains(required), "{required} not in {known:?}");
    }
    let service = regex::Regex::new(r#"service="([^"]*)""#).unwrap();
    let version = regex::Regex::new(r#"version="([^"]*)""#).unwrap();
    let versions: BTreeSet<String> = plan.versions.iter().map(|v| v.name.clone()).collect();
    let mut used = BTreeSet::new();
    for q in analysis_queries() {
        let unknown = unknown_metrics(&q.rendered, &known);
        assert!(
            unknown.is_empty(),
            "{}: unknown metrics {unknown:?}",
            q.origin
        );
        for c in service.captures_iter(&q.rendered) {
            assert_eq!(&c[1], plan.service, "{}: service label", q.origin);
        }
        for c in version.captures_iter(&q.rendered) {
            assert!(
                versions.contains(&c[1]),
                "{}: version label {}",
                q.origin,
                &c[1]
            );
        }
        used.extend(metric_names(&q.rendered));
    }
    eprintln!("metrics read by the analysis queries: {used:?}");
}

/// Per-version totals over the analysis window, for a promtool unit test.
#[derive(Clone, Copy, Debug)]
struct Cohort {
    orders: f64,
    approved: f64,
    /// Mean and standard deviation of the order value, in cents.
    mean: f64,
    sd: f64,
    responses: f64,
    errors: f64,
}

impl Cohort {
    fn value(&self) -> f64 {
        self.orders * self.mean
    }
    /// Σx² = n (sd² + mean²).
    fn squares(&self) -> f64 {
        self.orders * (self.sd * self.sd + self.mean * self.mean)
    }
}

/// What a gate should conclude.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Pass,
    Fail,
    /// NaN: too few samples, or beyond the limit but not significant.
    Inconclusive,
}

/// (name, canary cohort, stable cohort, [(gate, what it must conclude)]).
type Scenario<'a> = (&'a str, Cohort, Cohort, Vec<(&'a str, Verdict)>);

/// The sticky-canary-gate rule, computed here independently of the PromQL: the value the query
/// must return, or None for NaN.
fn expected_value(gate: &str, c: &Cohort, s: &Cohort) -> Option<f64> {
    let min = 200.0;
    let proportion = |xc: f64, nc: f64, xs: f64, ns: f64| {
        let d = xc / nc - xs / ns;
        let p = (xc + xs) / (nc + ns);
        let z = d / (p * (1.0 - p) * (1.0 / nc + 1.0 / ns)).sqrt();
        (100.0 * d, z, nc >= min && ns >= min)
    };
    match gate {
        "approval-ratio-delta" => {
            let (d, z, enough) = proportion(c.approved, c.orders, s.approved, s.orders);
            (enough && (d >= -0.3 || z < -1.6449)).then_some(d)
        }
        "error-ratio-delta" => {
            let (d, z, enough) = proportion(c.errors, c.responses, s.errors, s.responses);
            (enough && (d <= 1.0 || z > 1.6449)).then_some(d)
        }
        "order-value-drift" => {
            let var = |k: &Cohort| (k.squares() - k.value().powi(2) / k.orders) / (k.orders - 1.0);
            let (mc, ms) = (c.value() / c.orders, s.value() / s.orders);
            let d = 100.0 * (mc / ms - 1.0);
            let z = (mc - ms) / (var(c) / c.orders + var(s) / s.orders).sqrt();
            let enough = c.orders >= min && s.orders >= min;
            (enough && (d.abs() <= 1.0 || z.abs() > 1.96)).then_some(d)
        }
        other => panic!("no scenario covers the gate {other:?}: add one"),
    }
}

fn series(metric: &str, version: &str, extra: &str, total: f64) -> Vec<Value> {
    // Two proxies per version (the query sums them), linear counters over 15 one-minute steps.
    ["gateway-a", "gateway-b"]
        .iter()
        .map(|pod| {
            json!({
                "series": format!("{metric}{{service=\"checkout\",version=\"{version}\"{extra},pod=\"{pod}\"}}"),
                "values": format!("0+{}x15", total / 2.0 / 15.0),
            })
        })
        .collect()
}

fn input_series(c: &Cohort, s: &Cohort) -> Vec<Value> {
    let mut out = Vec::new();
    for (v, k) in [("canary", c), ("stable", s)] {
        out.extend(series("canary_business_orders_total", v, "", k.orders));
        out.extend(series(
            "canary_business_auth_approved_total",
            v,
            "",
            k.approved,
        ));
        out.extend(series(
            "canary_business_order_value_total",
            v,
            "",
            k.value(),
        ));
        out.extend(series(
            "canary_business_order_value_squares_total",
            v,
            "",
            k.squares(),
        ));
        out.extend(series(
            "canary_responses_total",
            v,
            ",code_class=\"5xx\"",
            k.errors,
        ));
        out.extend(series(
            "canary_responses_total",
            v,
            ",code_class=\"2xx\"",
            k.responses - k.errors,
        ));
    }
    out
}

#[test]
fn analysis_queries_judge_known_traffic_like_the_gate() {
    let base = Cohort {
        orders: 1500.0,
        approved: 1425.0,
        mean: 2000.0,
        sd: 500.0,
        responses: 1500.0,
        errors: 15.0,
    };
    let few = Cohort {
        orders: 15.0,
        approved: 12.0,
        responses: 15.0,
        errors: 3.0,
        ..base
    };
    let small = Cohort {
        orders: 300.0,
        approved: 285.0,
        responses: 300.0,
        errors: 3.0,
        ..base
    };
    use Verdict::*;
    let scenarios: Vec<Scenario> = vec![
        (
            "identical cohorts (A/A)",
            base,
            base,
            vec![
                ("approval-ratio-delta", Pass),
                ("error-ratio-delta", Pass),
                ("order-value-drift", Pass),
            ],
        ),
        (
            "approvals drop 10 points (the payment-code fall-through)",
            Cohort {
                approved: 1275.0,
                ..base
            },
            base,
            vec![("approval-ratio-delta", Fail)],
        ),
        (
            "approvals 0.2 point lower: within the limit",
            Cohort {
                approved: 1422.0,
                ..base
            },
            base,
            vec![("approval-ratio-delta", Pass)],
        ),
        (
            "approvals higher: favourable",
            Cohort {
                approved: 1485.0,
                ..base
            },
            base,
            vec![("approval-ratio-delta", Pass)],
        ),
        (
            "approvals 1 point lower on 300 orders: beyond the limit, not significant",
            Cohort {
                approved: 282.0,
                ..small
            },
            small,
            vec![("approval-ratio-delta", Inconclusive)],
        ),
        (
            "15 orders per cohort: too few to judge",
            few,
            Cohort {
                approved: 15.0,
                errors: 0.0,
                ..few
            },
            vec![
                ("approval-ratio-delta", Inconclusive),
                ("error-ratio-delta", Inconclusive),
                ("order-value-drift", Inconclusive),
            ],
        ),
        (
            "order value +5 % (the tax-rounding drift)",
            Cohort {
                mean: 2100.0,
                ..base
            },
            base,
            vec![("order-value-drift", Fail)],
        ),
        (
            "order value -5 %",
            Cohort {
                mean: 1900.0,
                ..base
            },
            base,
            vec![("order-value-drift", Fail)],
        ),
        (
            "order value +0.5 %: within the limit",
            Cohort {
                mean: 2010.0,
                ..base
            },
            base,
            vec![("order-value-drift", Pass)],
        ),
        (
            "order value +2 % on 300 orders: beyond the limit, not significant",
            Cohort {
                mean: 2040.0,
                ..small
            },
            small,
            vec![("order-value-drift", Inconclusive)],
        ),
        (
            "5xx +2 points",
            Cohort {
                errors: 45.0,
                ..base
            },
            base,
            vec![("error-ratio-delta", Fail)],
        ),
        (
            "5xx lower: favourable",
            Cohort {
                errors: 0.0,
                ..base
            },
            base,
            vec![("error-ratio-delta", Pass)],
        ),
    ];
    let queries = analysis_queries();
    let gates: BTreeSet<&str> = queries.iter().map(|q| q.gate.as_str()).collect();
    let covered: BTreeSet<&str> = scenarios
        .iter()
        .flat_map(|s| s.3.iter().map(|(g, _)| *g))
        .collect();
    assert_eq!(gates, covered, "every gate has scenarios");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.yaml");
    // One promtool unit test per (scenario, query): the query's value at the end of a 15 min
    // window of known counters, from two proxies per cohort.
    let evaluate = |c: &Cohort, s: &Cohort, expr: &str, want: f64| {
        let file = json!({"tests": [{
            "interval": "1m",
            "input_series": input_series(c, s),
            "promql_expr_test": [{"expr": expr, "eval_time": "15m",
                                  "exp_samples": [{"labels": "{}", "value": want}]}],
        }]});
        fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
        run_promtool(&["test", "rules"], &path)
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, c, s, verdicts) in &scenarios {
        for (gate, verdict) in verdicts {
            let expected = expected_value(gate, c, s);
            for q in queries.iter().filter(|q| q.gate == *gate) {
                // The scenario means what it says, under this manifest's pass range.
                let got = match expected {
                    None => Inconclusive,
                    Some(v)
                        if q.pass.0.is_none_or(|lo| v >= lo)
                            && q.pass.1.is_none_or(|hi| v <= hi) =>
                    {
                        Pass
                    }
                    Some(_) => Fail,
                };
                assert_eq!(
                    got, *verdict,
                    "{name}: {gate} under {}: expected value {expected:?}",
                    q.origin
                );
                // NaN is the only value that differs from itself.
                let expr = match expected {
                    None => format!("({0}) != bool ({0})", q.rendered),
                    Some(v) => format!("abs(({}) - ({v})) < bool 0.000001", q.rendered),
                };
                checked += 1;
                let (ok, out) = evaluate(c, s, &expr, 1.0);
                if !ok {
                    // Ask promtool for the value itself, for the message.
                    let (_, raw) = evaluate(c, s, &q.rendered, -12345.0);
                    let value = raw
                        .lines()
                        .find(|l| l.trim_start().starts_with("got:"))
                        .map_or_else(|| out.clone(), |l| l.trim().to_string());
                    failures.push(format!(
                        "{name}: {gate} ({}): expected {}, {value}",
                        q.origin,
                        expected.map_or("NaN".to_string(), |v| v.to_string())
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!(
        "{checked} query evaluations over {} scenarios agree with the gate rule",
        scenarios.len()
    );
}

// ---------------------------------------------------------------------------------------------
// docker-compose
// ---------------------------------------------------------------------------------------------

/// The Envoy version the tests run, from `envoy --version` (e.g. "1.40.0").
/// The Envoy version `make test` pins (`ENVOY_VERSION` in the Makefile): the one the compose
/// stack must run. A matrix run against another Envoy (`make test-matrix`) keeps this pin.
fn tested_envoy_version() -> String {
    let makefile = std::fs::read_to_string(workspace_root().join("Makefile")).unwrap();
    let re = regex::Regex::new(r"(?m)^ENVOY_VERSION\s*\?=\s*(\d+\.\d+\.\d+)\s*$").unwrap();
    re.captures(&makefile)
        .unwrap_or_else(|| panic!("no ENVOY_VERSION in the Makefile"))[1]
        .to_string()
}

#[test]
fn docker_compose_runs_the_tested_config_in_the_tested_envoy() {
    let root = workspace_root();
    let bin = std::env::var_os("COMPOSE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/docker-compose"));
    assert!(
        bin.is_file(),
        "docker-compose not found at {} — run `make compose-tool` (or set COMPOSE_BIN)",
        bin.display()
    );
    let file = root.join("envoy/docker-compose.yaml");
    let out = Command::new(&bin)
        .arg("-f")
        .arg(&file)
        .arg("config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "docker-compose config failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value = serde_yaml::from_str(&text).unwrap();
    let services = &config["services"];
    let envoy_svc = &services["envoy"];

    assert_eq!(
        envoy_svc["image"],
        format!("envoyproxy/envoy:v{}", tested_envoy_version()),
        "the official image of the Envoy version the tests run"
    );
    // The very envoy/envoy.yaml, unchanged, where the command reads it.
    let wd = envoy_svc["working_dir"].as_str().unwrap();
    let mounts: BTreeMap<String, String> = envoy_svc["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.as_str().unwrap().split(':').collect();
            (parts[1].to_string(), parts[0].to_string())
        })
        .collect();
    let cfg_target = format!("{wd}/envoy/envoy.yaml");
    assert_eq!(
        Path::new(&mounts[&cfg_target]),
        root.join("envoy/envoy.yaml"),
        "{mounts:?}"
    );
    let command: Vec<&str> = envoy_svc["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let c = command.iter().position(|a| *a == "-c").expect("-c");
    assert_eq!(format!("{wd}/{}", command[c + 1]), cfg_target);
    // The module at the path envoy.yaml names relative to the working directory.
    let mut reference = EnvoyConfig::reference();
    let text = fs::read_to_string(envoy::reference_config_path()).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let http_filters = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    let wasm_file = http_filters
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .unwrap()["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .unwrap();
    assert_eq!(
        Path::new(&mounts[&format!("{wd}/{wasm_file}")]),
        root.join(wasm_file)
    );
    // envoy.yaml binds and routes to 127.0.0.1: every service shares the host's network.
    for (name, s) in services.as_object().unwrap() {
        assert_eq!(s["network_mode"], "host", "{name}");
    }
    // The demo upstreams listen where the clusters point.
    for (cluster, addr) in reference.cluster_addresses() {
        let cmd = services[&cluster]["command"].to_string();
        assert!(
            cmd.contains(&format!("listen {addr};")),
            "service {cluster} must listen on {addr}: {cmd}"
        );
    }
    // Prometheus scrapes the admin endpoint of envoy.yaml.
    let admin = &doc["admin"]["address"]["socket_address"];
    let prom_cfg_src = services["prometheus"]["volumes"][0]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let prom: Value = serde_yaml::from_str(&fs::read_to_string(prom_cfg_src).unwrap()).unwrap();
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/stats/prometheus");
    assert_eq!(
        job["static_configs"][0]["targets"][0],
        format!(
            "{}:{}",
            admin["address"].as_str().unwrap(),
            admin["port_value"]
        )
    );
}

// ---------------------------------------------------------------------------------------------
// The OCI image
// ---------------------------------------------------------------------------------------------

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A content-addressed blob of the layout, checked against its digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let bytes = fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        sha256_hex(&bytes),
        hex,
        "blob {digest} does not match its digest"
    );
    bytes
}

#[test]
fn oci_image_holds_exactly_the_built_module() {
    let root = workspace_root();
    let containerfile = fs::read_to_string(root.join("istio/Containerfile")).unwrap();
    let instructions: Vec<&str> = containerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(instructions, ["FROM scratch", "COPY plugin.wasm ./"]);

    let layout = root.join("target/image/oci");
    let index_path = layout.join("index.json");
    assert!(
        index_path.is_file(),
        "no OCI image layout at {} — run `make image`",
        layout.display()
    );
    let index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let manifest_digest = manifests[0]["digest"].as_str().unwrap().to_string();
    let manifest: Value = serde_json::from_slice(&blob(&layout, &manifest_digest)).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    // Istio's fetcher takes the last layer and needs this media type (or Docker's) to gunzip it.
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let compressed = blob(&layout, layers[0]["digest"].as_str().unwrap());
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let config: Value = serde_json::from_slice(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&tar_bytes)),
        "the config's diff_id is the uncompressed layer"
    );
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut entries = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let kind = e.header().entry_type();
        let mut content = Vec::new();
        e.read_to_end(&mut content).unwrap();
        entries.push((path, kind, content));
    }
    let listing: Vec<(&str, tar::EntryType)> =
        entries.iter().map(|(p, k, _)| (p.as_str(), *k)).collect();
    assert_eq!(
        listing,
        [("plugin.wasm", tar::EntryType::Regular)],
        "exactly plugin.wasm"
    );
    let module = fs::read(envoy::wasm_path()).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} — run `make build`",
            envoy::wasm_path().display()
        )
    });
    assert!(
        entries[0].2 == module,
        "plugin.wasm in the image differs from {} — run `make image` after `make build`",
        envoy::wasm_path().display()
    );

    let manifest_hex = manifest_digest.trim_start_matches("sha256:");
    let module_hex = sha256_hex(&module);
    eprintln!("OCI manifest digest:  {manifest_digest}  (WasmPlugin / TrafficExtension sha256)");
    eprintln!("plugin.wasm sha256:   {module_hex}  (EnvoyFilter vm_config.code.remote.sha256)");
    // The pins in the manifests name a released image; report whether they are this build.
    for m in manifests_with_pins() {
        let (what, pinned, want) = m;
        let state = if pinned == want {
            "pins this build"
        } else {
            "pins another build (update it when you release this one)"
        };
        let want_kind = if want == manifest_hex {
            "manifest"
        } else {
            "module"
        };
        eprintln!("  {what}: {pinned} — {state} ({want_kind} digest)");
    }
}

/// (where, pinned sha256, this build's value for that kind of pin).
fn manifests_with_pins() -> Vec<(String, String, String)> {
    let root = workspace_root();
    let layout = root.join("target/image/oci");
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let module_hex = sha256_hex(&fs::read(envoy::wasm_path()).unwrap());
    let all = manifests();
    let mut out = Vec::new();
    for m in &all {
        let (pin, want) = match m.kind() {
            "WasmPlugin" => (&m.doc["spec"]["sha256"], &manifest_hex),
            "TrafficExtension" => (&m.doc["spec"]["wasm"]["sha256"], &manifest_hex),
            "EnvoyFilter" => (
                &m.doc["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
                    ["vm_config"]["code"]["remote"]["sha256"],
                &module_hex,
            ),
            _ => continue,
        };
        if let Some(p) = pin.as_str() {
            assert!(
                p.len() == 64 && p.chars().all(|c| c.is_ascii_hexdigit()),
                "{}: sha256 {p}",
                m.at()
            );
            out.push((m.at(), p.to_string(), want.clone()));
        }
    }
    assert_eq!(out.len(), 4, "every module reference is pinned: {out:?}");
    out
}
