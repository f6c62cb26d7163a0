//! Every manifest validates against its CRD's OpenAPI schema (`schema.rs`), from
//! `${CRD_DIR:-../shared/crds}` (without that folder this test, only this one, says it skipped),
//! and the validation catches typos and wrong types in the real manifests.

use super::manifests::{find, manifests, Manifest};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use sticky_canary_harness::envoy::workspace_root;
use sticky_canary_harness::schema::{self, Crds};

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
pub(crate) fn crds() -> Option<Crds> {
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
pub(crate) fn violations(m: &Manifest, crds: &Crds) -> Vec<String> {
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

    // A Deployment's pod template, checked with the PodTemplateSpec schema (gateway.yaml's; the
    // native build's istio/native/gateway.yaml is the same Deployment, set up for it).
    let gw = all
        .iter()
        .find(|m| {
            m.kind() == "Deployment" && m.name() == "shop-gateway" && m.file == "istio/gateway.yaml"
        })
        .unwrap()
        .clone();
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
