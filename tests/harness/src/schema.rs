//! A validator for Kubernetes CustomResourceDefinition schemas (`openAPIV3Schema`), so that the
//! manifests under `istio/` are checked against the very CRDs Istio, Flagger and Argo Rollouts
//! publish, without a cluster.
//!
//! It implements the part of OpenAPI v3 / JSON Schema that CRDs use:
//!
//! - `type` (`object`, `array`, `string`, `integer`, `number`, `boolean`) and `nullable`;
//! - `properties`, `required`, `additionalProperties` (a boolean or a schema),
//!   `minProperties` / `maxProperties`, `items`, `minItems` / `maxItems`;
//! - `enum`, `minimum` / `maximum` (with the boolean `exclusiveMinimum` / `exclusiveMaximum`),
//!   `minLength` / `maxLength` (in characters), `pattern` (the `regex` crate: RE2 syntax, as the
//!   API server's Go regexps), `format: int32` / `int64` bounds (other formats are ignored);
//! - `oneOf`, `anyOf`, `allOf` and `not`, which Istio uses for mutual exclusion
//!   (`oneOf: [{not: {anyOf: [{required: [a]}, {required: [b]}]}}, {required: [a]}, …]`).
//!
//! Of the `x-kubernetes-*` extensions it honours `x-kubernetes-preserve-unknown-fields: true`
//! (unknown fields allowed at that level) and `x-kubernetes-int-or-string: true` (an integer or a
//! string); the others (CEL `x-kubernetes-validations`, list types) are ignored.
//!
//! **Unknown fields are errors**, as a structural schema prunes them: a typo such as `failStratgy`
//! would otherwise be dropped silently by the API server and the default applied. As in the API
//! server, the schemas under `oneOf`/`anyOf`/`allOf`/`not` only validate values; unknown fields are
//! judged by the enclosing schema's `properties`.
//!
//! Every error carries the JSON path of the offending value (`spec.vmConfig.env[0].valueFrom`).

use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One violation: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// JSON path of the value, e.g. `spec.match[0].mode`; empty for the document itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "<document>"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// Validates `value` against `schema`; every error found, in document order.
pub fn validate(schema: &Value, value: &Value) -> Vec<Error> {
    let mut v = Validator {
        errors: Vec::new(),
        prune_check: true,
    };
    v.check(schema, value, "");
    v.errors
}

/// Validates a whole custom resource: like [`validate`], but as the API server does for every
/// object, `metadata` is checked as the `ObjectMeta` a client may write (whatever the CRD says
/// about it), and `apiVersion` and `kind` are accepted as strings unless the schema declares them.
pub fn validate_resource(schema: &Value, doc: &Value) -> Vec<Error> {
    let mut errors = Vec::new();
    let Some(obj) = doc.as_object() else {
        return vec![err("", "a resource must be an object")];
    };
    let declared = schema.get("properties").and_then(Value::as_object);
    let mut rest = obj.clone();
    // The API server validates `metadata` as ObjectMeta whatever the CRD says (a CRD may only
    // restrict name and generateName, and most declare a bare `type: object`).
    if let Some(v) = rest.remove("metadata") {
        errors.extend(
            validate(&object_meta_schema(), &v)
                .into_iter()
                .map(|e| Error {
                    path: join("metadata", &e.path),
                    ..e
                }),
        );
    }
    for implicit in ["apiVersion", "kind"] {
        if declared.is_some_and(|p| p.contains_key(implicit)) {
            continue;
        }
        if let Some(v) = rest.remove(implicit) {
            if !v.is_string() {
                errors.push(err(implicit, "must be a string"));
            }
        }
    }
    for implicit in ["apiVersion", "kind"] {
        if !obj.contains_key(implicit) {
            errors.push(err(implicit, "missing"));
        }
    }
    errors.extend(validate(schema, &Value::Object(rest)));
    errors
}

/// The writable part of `ObjectMeta`.
fn object_meta_schema() -> Value {
    let string_map =
        serde_json::json!({"type": "object", "additionalProperties": {"type": "string"}});
    serde_json::json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253,
                     "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
            "generateName": {"type": "string"},
            "namespace": {"type": "string", "maxLength": 63,
                          "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "labels": string_map,
            "annotations": string_map,
            "finalizers": {"type": "array", "items": {"type": "string"}}
        }
    })
}

fn err(path: &str, message: impl Into<String>) -> Error {
    Error {
        path: path.to_string(),
        message: message.into(),
    }
}

fn join(base: &str, field: &str) -> String {
    match (base.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (_, true) => base.to_string(),
        _ if field.starts_with('[') => format!("{base}{field}"),
        _ => format!("{base}.{field}"),
    }
}

fn key_path(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        join(base, key)
    } else {
        format!("{base}[{}]", Value::String(key.to_string()))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(n: &Number) -> bool {
    n.is_i64() || n.is_u64()
}

fn flag(schema: &Map<String, Value>, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

struct Validator {
    errors: Vec<Error>,
    /// False inside `oneOf`/`anyOf`/`allOf`/`not`: those only validate values.
    prune_check: bool,
}

impl Validator {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(err(path, message));
    }

    /// Errors of `value` against a sub-schema in value-only mode (for the logical junctors).
    fn branch(&self, schema: &Value, value: &Value, path: &str) -> Vec<Error> {
        let mut v = Validator {
            errors: Vec::new(),
            prune_check: false,
        };
        v.check(schema, value, path);
        v.errors
    }

    fn check(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(s) = schema.as_object() else {
            if schema != &Value::Bool(true) {
                self.push(path, format!("invalid schema {}", show(schema)));
            }
            return;
        };
        if value.is_null() && flag(s, "nullable") {
            return;
        }
        if !self.check_type(s, value, path) {
            return; // further keywords would only repeat the type error
        }
        if let Some(options) = s.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                let list: Vec<String> = options.iter().map(show).collect();
                self.push(
                    path,
                    format!("{} is not one of [{}]", show(value), list.join(", ")),
                );
            }
        }
        match value {
            Value::Object(obj) => self.check_object(s, obj, path),
            Value::Array(items) => self.check_array(s, items, path),
            Value::String(text) => self.check_string(s, text, path),
            Value::Number(n) => self.check_number(s, n, path),
            _ => {}
        }
        self.check_junctors(s, value, path);
    }

    /// `type` (and int-or-string); false if the value has the wrong type.
    fn check_type(&mut self, s: &Map<String, Value>, value: &Value, path: &str) -> bool {
        if flag(s, "x-kubernetes-int-or-string") {
            let ok = value.is_string() || value.as_number().is_some_and(is_integer);
            if !ok {
                self.push(
                    path,
                    format!("expected an integer or a string, got {}", type_name(value)),
                );
            }
            return ok;
        }
        let Some(want) = s.get("type").and_then(Value::as_str) else {
            return true;
        };
        let ok = match want {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.as_number().is_some_and(is_integer),
            "number" => value.is_number(),
            other => {
                self.push(path, format!("schema has an unknown type {other:?}"));
                return false;
            }
        };
        if !ok {
            self.push(
                path,
                format!("expected {want}, got {} {}", type_name(value), show(value)),
            );
        }
        ok
    }

    fn check_object(&mut self, s: &Map<String, Value>, obj: &Map<String, Value>, path: &str) {
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(name) {
                self.push(&key_path(path, name), "required field is missing");
            }
        }
        let count = obj.len() as u64;
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
            if count < min {
                self.push(path, format!("has {count} fields, fewer than {min}"));
            }
        }
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
            if count > max {
                self.push(path, format!("has {count} fields, more than {max}"));
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");
        let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
        for (k, v) in obj {
            let p = key_path(path, k);
            if let Some(sub) = properties.and_then(|props| props.get(k)) {
                self.check(sub, v, &p);
                continue;
            }
            match additional {
                Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    self.push(&p, "unknown field (additionalProperties: false)")
                }
                Some(sub @ Value::Object(_)) => self.check(sub, v, &p),
                Some(other) => self.push(
                    path,
                    format!("invalid additionalProperties {}", show(other)),
                ),
                None if preserve || !self.prune_check => {}
                None => {
                    let known: Vec<&str> = properties
                        .map(|props| props.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let hint = if known.is_empty() {
                        "this object takes no fields".to_string()
                    } else {
                        format!("known fields: {}", known.join(", "))
                    };
                    self.push(&p, format!("unknown field ({hint})"));
                }
            }
        }
    }

    fn check_array(&mut self, s: &Map<String, Value>, items: &[Value], path: &str) {
        let len = items.len() as u64;
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if len < min {
                self.push(path, format!("has {len} items, fewer than {min}"));
            }
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if len > max {
                self.push(path, format!("has {len} items, more than {max}"));
            }
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{i}]"));
            }
        }
    }

    fn check_string(&mut self, s: &Map<String, Value>, text: &str, path: &str) {
        let len = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if len < min {
                self.push(
                    path,
                    format!("is {len} characters long, shorter than {min}"),
                );
            }
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                self.push(path, format!("is {len} characters long, longer than {max}"));
            }
        }
        if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
            match regex::Regex::new(pattern) {
                Ok(re) if re.is_match(text) => {}
                Ok(_) => self.push(
                    path,
                    format!(
                        "{} does not match the pattern {pattern}",
                        show(&Value::String(text.into()))
                    ),
                ),
                Err(e) => self.push(
                    path,
                    format!("schema pattern {pattern:?} does not compile: {e}"),
                ),
            }
        }
    }

    fn check_number(&mut self, s: &Map<String, Value>, n: &Number, path: &str) {
        let out_of_range = match s.get("format").and_then(Value::as_str) {
            Some("int32") => n
                .as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .is_none()
                .then_some("int32"),
            Some("int64") => (is_integer(n) && n.as_i64().is_none()).then_some("int64"),
            _ => None,
        };
        if let Some(format) = out_of_range {
            self.push(path, format!("{n} is out of the {format} range"));
        }
        let x = n.as_f64().unwrap_or(f64::NAN);
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let exclusive = flag(s, "exclusiveMinimum");
            if x < min || (exclusive && x == min) {
                let op = if exclusive { ">" } else { ">=" };
                self.push(path, format!("{n} must be {op} {min}"));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let exclusive = flag(s, "exclusiveMaximum");
            if x > max || (exclusive && x == max) {
                let op = if exclusive { "<" } else { "<=" };
                self.push(path, format!("{n} must be {op} {max}"));
            }
        }
    }

    fn check_junctors(&mut self, s: &Map<String, Value>, value: &Value, path: &str) {
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                let errors = self.branch(sub, value, path);
                self.errors.extend(errors);
            }
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
            let results: Vec<Vec<Error>> = any
                .iter()
                .map(|sub| self.branch(sub, value, path))
                .collect();
            if !results.iter().any(Vec::is_empty) {
                self.push(
                    path,
                    format!("matches none of anyOf: {}", describe_branches(&results)),
                );
            }
        }
        if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
            let results: Vec<Vec<Error>> = one
                .iter()
                .map(|sub| self.branch(sub, value, path))
                .collect();
            let matching: Vec<usize> = results
                .iter()
                .enumerate()
                .filter(|(_, e)| e.is_empty())
                .map(|(i, _)| i)
                .collect();
            match matching.len() {
                1 => {}
                0 => self.push(
                    path,
                    format!("matches none of oneOf: {}", describe_branches(&results)),
                ),
                _ => self.push(
                    path,
                    format!(
                        "matches more than one of oneOf (branches {matching:?}): {}",
                        describe_one_of(one, &matching)
                    ),
                ),
            }
        }
        if let Some(not) = s.get("not") {
            if self.branch(not, value, path).is_empty() {
                self.push(path, format!("must not match {}", show(not)));
            }
        }
    }
}

fn describe_branches(results: &[Vec<Error>]) -> String {
    results
        .iter()
        .enumerate()
        .map(|(i, errors)| {
            let first = errors.first().map(ToString::to_string).unwrap_or_default();
            format!("[{i}] {first}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// For a oneOf matched several times, the `required` lists of the matched branches, which is
/// what Istio's mutual-exclusion schemas say ("set only one of …").
fn describe_one_of(branches: &[Value], matching: &[usize]) -> String {
    let names: Vec<String> = matching
        .iter()
        .filter_map(|i| branches.get(*i))
        .map(|b| match b.get("required") {
            Some(r) => format!("required {r}"),
            None => show(b),
        })
        .collect();
    format!("set only one of: {}", names.join(", "))
}

/// The served schemas of a folder of CRDs, by (group, version, kind).
#[derive(Clone, Debug, Default)]
pub struct Crds {
    schemas: BTreeMap<(String, String, String), Value>,
    /// Where each CRD came from, for messages.
    sources: BTreeMap<(String, String, String), PathBuf>,
}

impl Crds {
    /// Every `*.yaml` / `*.yml` file of `dir` (multi-document), every CRD in them, every served
    /// version with a schema.
    pub fn load_dir(dir: &Path) -> Result<Crds, String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("read {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut crds = Crds::default();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("read {}: {e}", file.display()))?;
            for doc in parse_documents(&text).map_err(|e| format!("{}: {e}", file.display()))? {
                crds.add(&doc, &file);
            }
        }
        Ok(crds)
    }

    fn add(&mut self, doc: &Value, file: &Path) {
        if doc.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            return;
        }
        let spec = &doc["spec"];
        let (Some(group), Some(kind)) = (spec["group"].as_str(), spec["names"]["kind"].as_str())
        else {
            return;
        };
        for v in spec["versions"].as_array().into_iter().flatten() {
            let (Some(name), Some(schema)) = (
                v["name"].as_str(),
                v.get("schema").and_then(|s| s.get("openAPIV3Schema")),
            ) else {
                continue;
            };
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let k = (group.to_string(), name.to_string(), kind.to_string());
            self.sources.insert(k.clone(), file.to_path_buf());
            self.schemas.insert(k, schema.clone());
        }
    }

    /// The schema for an `apiVersion` (`group/version`) and `kind`.
    pub fn schema(&self, api_version: &str, kind: &str) -> Option<&Value> {
        let (group, version) = api_version.split_once('/')?;
        self.schemas
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
    }

    /// The file a CRD came from.
    pub fn source(&self, api_version: &str, kind: &str) -> Option<&Path> {
        let (group, version) = api_version.split_once('/')?;
        self.sources
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .map(PathBuf::as_path)
    }

    /// Every (group, version, kind) known.
    pub fn kinds(&self) -> impl Iterator<Item = String> + '_ {
        self.schemas.keys().map(|(g, v, k)| format!("{g}/{v} {k}"))
    }

    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty()
    }
}

/// The documents of a multi-document YAML text, as JSON values (empty documents dropped).
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(de).map_err(|e| format!("document {i}: {e}"))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(errors: &[Error]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
                "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
                "ratio": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": true},
                "mode": {"type": "string", "enum": ["A", "B"]},
                "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "closed": {"type": "object", "additionalProperties": false,
                           "properties": {"a": {"type": "boolean"}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                         "properties": {"known": {"type": "integer"}}},
                "count": {"anyOf": [{"type": "integer"}, {"type": "string"}],
                          "x-kubernetes-int-or-string": true},
                "opt": {"type": "string", "nullable": true},
                "big": {"type": "integer", "format": "int64"}
            }
        })
    }

    #[test]
    fn accepts_a_valid_document() {
        let doc = json!({
            "name": "abc", "port": 8080, "ratio": 0.5, "mode": "A", "tags": ["x"],
            "labels": {"a": "b"}, "closed": {"a": true}, "free": {"known": 1, "other": {"x": 1}},
            "count": "25%", "opt": null, "big": 9_007_199_254_740_993_i64
        });
        assert_eq!(validate(&schema(), &doc), vec![]);
        assert_eq!(
            validate(&schema(), &json!({"name": "a", "count": 3})),
            vec![]
        );
    }

    #[test]
    fn reports_each_violation_with_its_path() {
        let doc = json!({
            "port": 70000, "ratio": 1.0, "mode": "C", "tags": [], "labels": {"a": 1},
            "closed": {"b": true}, "free": {"known": "x"}, "count": 1.5, "nme": "typo",
            "opt": 3, "big": u64::MAX
        });
        let errors = validate(&schema(), &doc);
        let mut got = paths(&errors);
        got.sort();
        assert_eq!(
            got,
            vec![
                "big",
                "closed.b",
                "count",
                "free.known",
                "labels.a",
                "mode",
                "name",
                "nme",
                "opt",
                "port",
                "ratio",
                "tags"
            ],
            "{errors:#?}"
        );
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|e| e.starts_with("nme: unknown field")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("70000 must be <= 65535")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("out of the int64 range")),
            "{text:?}"
        );
    }

    #[test]
    fn int32_bounds_strings_and_patterns() {
        let s = json!({"type": "object", "properties": {
            "p": {"type": "integer", "format": "int32"},
            "s": {"type": "string", "minLength": 2, "pattern": "^[a-f0-9]{4}$"}}});
        assert_eq!(
            paths(&validate(&s, &json!({"p": 2_147_483_648_i64}))),
            ["p"]
        );
        assert_eq!(validate(&s, &json!({"p": -2_147_483_648_i64})), vec![]);
        assert_eq!(paths(&validate(&s, &json!({"s": "abcg"}))), ["s"]);
        assert_eq!(paths(&validate(&s, &json!({"s": "é"}))), ["s", "s"]);
        assert_eq!(validate(&s, &json!({"s": "ab12"})), vec![]);
    }

    /// Istio's mutual exclusion: none or exactly one of `a` and `b`.
    fn one_of_schema() -> Value {
        json!({"type": "object",
               "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
               "oneOf": [{"not": {"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}},
                         {"required": ["a"]}, {"required": ["b"]}]})
    }

    #[test]
    fn one_of_with_required_is_mutual_exclusion() {
        let s = one_of_schema();
        assert_eq!(validate(&s, &json!({})), vec![]);
        assert_eq!(validate(&s, &json!({"a": "x"})), vec![]);
        assert_eq!(validate(&s, &json!({"b": "x"})), vec![]);
        let both = validate(&s, &json!({"a": "x", "b": "y"}));
        assert_eq!(paths(&both), [""]);
        assert!(
            both[0].message.contains("more than one of oneOf"),
            "{both:?}"
        );
    }

    #[test]
    fn junctor_branches_do_not_flag_unknown_fields() {
        // A branch without `properties` must not call `a` unknown: only the enclosing schema's
        // properties decide that (and here `c` is unknown there).
        let errors = validate(&one_of_schema(), &json!({"a": "x", "c": 1}));
        assert_eq!(paths(&errors), ["c"], "{errors:?}");
    }

    #[test]
    fn any_of_all_of_not() {
        let s = json!({"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 3}]});
        assert_eq!(validate(&s, &json!(1)), vec![]);
        assert_eq!(validate(&s, &json!("abc")), vec![]);
        assert_eq!(validate(&s, &json!("ab")).len(), 1);
        let s = json!({"allOf": [{"minimum": 1}, {"maximum": 3}]});
        assert_eq!(validate(&s, &json!(2)), vec![]);
        assert_eq!(validate(&s, &json!(4)).len(), 1);
        let s = json!({"not": {"type": "string"}});
        assert_eq!(validate(&s, &json!(1)), vec![]);
        assert_eq!(validate(&s, &json!("x")).len(), 1);
    }

    #[test]
    fn an_object_without_properties_takes_no_fields_unless_preserved() {
        let s = json!({"type": "object"});
        assert_eq!(paths(&validate(&s, &json!({"x": 1}))), ["x"]);
        let s = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        assert_eq!(validate(&s, &json!({"x": {"deep": [1]}})), vec![]);
    }

    #[test]
    fn resource_metadata_is_implicit_but_checked() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object"}}});
        let ok = json!({"apiVersion": "g/v1", "kind": "K",
                        "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"}}, "spec": {}});
        assert_eq!(validate_resource(&s, &ok), vec![]);
        let bad = json!({"apiVersion": "g/v1", "kind": "K",
                         "metadata": {"name": "A_b", "labels": {"x": 1}, "lables": {}}, "spec": {}});
        let mut got = paths(&validate_resource(&s, &bad))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        got.sort();
        assert_eq!(
            got,
            ["metadata.labels.x", "metadata.lables", "metadata.name"]
        );
        assert_eq!(
            paths(&validate_resource(&s, &json!({"metadata": {"name": "a"}}))),
            ["apiVersion", "kind"]
        );
    }

    #[test]
    fn keys_that_are_not_identifiers_are_quoted_in_paths() {
        let s = json!({"type": "object", "additionalProperties": {"type": "string"}});
        let errors = validate(&s, &json!({"sidecar.istio.io/x": 1}));
        assert_eq!(paths(&errors), ["[\"sidecar.istio.io/x\"]"]);
    }
}
