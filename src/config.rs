//! Configuration: the JSON users write (serde types), compiled once into a [`Plan`].
//!
//! Parsing and compiling are separate steps. [`RawConfig`] mirrors the JSON exactly
//! (`deny_unknown_fields` everywhere, so a typo such as `versoins` is refused); [`Plan`] is what the
//! request path uses, with everything precomputed: cumulative weights, lowercase header names, the
//! salt as bytes, the default version's index. Nothing here is re-parsed per request.
//!
//! Every refusal is a [`ConfigError`] naming the field path (`versions[1].weight`) and the reason.

use crate::assign::{AssignCookie, RawAssignCookie};
use crate::business::{self, Business, RawRule};
use crate::stage::{compile_override, compile_pins, Override, Pin, RawOverride, RawPin};
use serde::Deserialize;
use std::fmt;

/// Most versions a plan may list. Sixteen covers blue/green + several canaries with room to spare
/// and keeps the linear scan in [`Plan::pick`] trivially cheap.
pub const MAX_VERSIONS: usize = 16;
/// Header used when `route_header` / `response_header` are not given.
pub const DEFAULT_HEADER: &str = "x-canary-version";

/// Default of `metrics_flush_ms`: counters reach Envoy within a second, well inside any scrape
/// interval, for one host call per counter per second instead of per request.
pub const DEFAULT_METRICS_FLUSH_MS: u32 = 1000;
/// Upper bound of `metrics_flush_ms`.
pub const MAX_METRICS_FLUSH_MS: u32 = 60_000;

/// The configuration exactly as written (snake_case JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub service: String,
    #[serde(default)]
    pub salt: Option<String>,
    pub versions: Vec<RawVersion>,
    #[serde(default)]
    pub default_version: Option<String>,
    pub session: RawSession,
    #[serde(default)]
    pub route_header: Option<String>,
    #[serde(default)]
    pub response_header: Option<String>,
    /// Stage zero: token-guarded override.
    #[serde(default, rename = "override")]
    pub override_: Option<RawOverride>,
    /// Stage zero: allowlisted header values pinned to a version.
    #[serde(default)]
    pub pins: Vec<RawPin>,
    /// Response header carrying the decision reason; off when absent.
    #[serde(default)]
    pub reason_header: Option<String>,
    /// Business counters read from responses.
    #[serde(default)]
    pub business_metrics: Vec<RawRule>,
    /// Largest response body examined by JSON rules (default 65536).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// How often counter increments are handed to Envoy, in ms (default 1000; 0 = on every
    /// request).
    #[serde(default)]
    pub metrics_flush_ms: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    pub name: String,
    pub weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub sources: Vec<RawSource>,
    /// Mint a session cookie for requests without any session key.
    #[serde(default)]
    pub assign_cookie: Option<RawAssignCookie>,
}

/// One session-key source as written: exactly one of the two fields must be set. Kept as two
/// options (rather than a serde enum) so that "both" and "neither" get a plain-language refusal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
}

/// Where a session key comes from, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A cookie, by its exact (case-sensitive) name.
    Cookie(String),
    /// A request header, by its lowercase name.
    Header(String),
}

/// One version of the service, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    pub weight: u32,
}

/// The runtime plan: everything the request path needs, computed once at configure time.
#[derive(Clone, Debug)]
pub struct Plan {
    pub service: String,
    /// Salt bytes hashed before the session key.
    pub salt: Vec<u8>,
    pub versions: Vec<Version>,
    /// `cumulative[i]` = sum of the weights of versions `0..=i`.
    pub cumulative: Vec<u64>,
    /// Sum of all weights (> 0).
    pub total_weight: u64,
    /// Index into `versions` of the version that gets requests without a session key.
    pub default_version: usize,
    pub sources: Vec<Source>,
    /// Lowercase.
    pub route_header: String,
    /// Lowercase.
    pub response_header: String,
    /// Stage-zero override (headers to strip, tokens to accept), when configured.
    pub override_: Option<Override>,
    /// Pins, in config order (the first match wins).
    pub pins: Vec<Pin>,
    /// Anonymous-session cookie, when configured. Its name is also the last session source.
    pub assign: Option<AssignCookie>,
    /// Lowercase; the response carries the decision reason when set.
    pub reason_header: Option<String>,
    /// Business rules and the body bound.
    pub business: Business,
    /// Counter flush interval in ms; 0 = every increment goes to Envoy at once.
    pub metrics_flush_ms: u32,
    /// Configure-time warnings (e.g. overrides disabled for want of a token), for the log.
    pub warnings: Vec<String>,
}

/// A refused configuration: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path such as `versions[1].weight`; `(root)` when the document itself is unusable.
    pub path: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Plan {
    /// Parses and compiles a JSON configuration (no environment: `tokens_env` finds nothing).
    pub fn from_json(bytes: &[u8]) -> Result<Plan, ConfigError> {
        Plan::try_from(parse(bytes)?)
    }

    /// Parses and compiles a JSON configuration; `env` reads the VM's environment variables
    /// (for `override.tokens_env`).
    pub fn from_json_with_env(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Plan, ConfigError> {
        Plan::compile(parse(bytes)?, env)
    }

    /// One line describing the compiled plan, for the configure-time log.
    pub fn summary(&self) -> String {
        // Appended piece by piece: `format!` and `join` here cost the module ~2 KB.
        let mut line = String::new();
        let mut put = |parts: &[&str]| parts.iter().for_each(|p| line.push_str(p));
        put(&["service=", &self.service, " versions="]);
        for (i, v) in self.versions.iter().enumerate() {
            let weight = v.weight.to_string();
            put(&[if i == 0 { "" } else { "," }, &v.name, ":", &weight]);
        }
        put(&[
            " default=",
            self.version_name(self.default_version),
            " sources=",
        ]);
        for (i, s) in self.sources.iter().enumerate() {
            let (kind, name) = match s {
                Source::Cookie(n) => ("cookie:", n),
                Source::Header(n) => ("header:", n),
            };
            put(&[if i == 0 { "" } else { "," }, kind, name]);
        }
        put(&[
            " route_header=",
            &self.route_header,
            " response_header=",
            &self.response_header,
        ]);
        if let Some(o) = &self.override_ {
            put(&[
                " override=",
                if o.enabled() { "enabled" } else { "disabled" },
            ]);
        }
        for p in &self.pins {
            let count = p.values.len().to_string();
            let version = self.version_name(p.version);
            put(&[" pin=", &p.header, ":", &count, "values->", version]);
        }
        if let Some(a) = &self.assign {
            put(&[" assign_cookie=", &a.name]);
        }
        if let Some(h) = &self.reason_header {
            put(&[" reason_header=", h]);
        }
        if !self.business.rules.is_empty() {
            put(&[" business_metrics=", &self.business.rules.len().to_string()]);
        }
        put(&[" metrics_flush_ms=", &self.metrics_flush_ms.to_string()]);
        line
    }

    /// The version name at `index` (an index produced by this plan).
    pub fn version_name(&self, index: usize) -> &str {
        self.versions.get(index).map_or("", |v| v.name.as_str())
    }

    /// The first version, in config order, whose cumulative weight is greater than `position`.
    /// `position` must be below `total_weight`; anything else falls back to the default version.
    pub fn pick(&self, position: u64) -> usize {
        self.cumulative
            .iter()
            .position(|&c| c > position)
            .unwrap_or(self.default_version)
    }
}

/// Parses JSON into [`RawConfig`], naming the field path of the first error. The reader is the
/// crate's own (`crate::de`: serde over the JSON bytes, without serde_json, which the module
/// cannot afford); its refusals read like serde_json's, e.g. `versions[1].weight` /
/// ``invalid value: integer `-5`, expected u32 at line 6 column 36``.
pub fn parse(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    match bytes.iter().find(|c| !c.is_ascii_whitespace()) {
        None => {
            return Err(ConfigError::new(
                "(root)",
                "configuration is empty; expected a JSON object",
            ))
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(ConfigError::new(
                "(root)",
                "configuration is not a JSON object (it must start with '{')",
            ))
        }
    }
    crate::de::from_slice(bytes)
}

impl TryFrom<RawConfig> for Plan {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Plan, ConfigError> {
        Plan::compile(raw, &|_| None)
    }
}

impl Plan {
    /// Compiles a parsed configuration; `env` reads the VM's environment variables.
    pub fn compile(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Plan, ConfigError> {
        check_label("service", &raw.service)?;

        if raw.versions.is_empty() {
            return Err(ConfigError::new(
                "versions",
                "at least one version is required",
            ));
        }
        if raw.versions.len() > MAX_VERSIONS {
            return Err(ConfigError::new(
                "versions",
                format!(
                    "{} versions listed; at most {MAX_VERSIONS} are allowed",
                    raw.versions.len()
                ),
            ));
        }
        let mut versions: Vec<Version> = Vec::with_capacity(raw.versions.len());
        let mut cumulative = Vec::with_capacity(raw.versions.len());
        let mut total: u64 = 0;
        for (i, v) in raw.versions.into_iter().enumerate() {
            let path = format!("versions[{i}].name");
            check_label(&path, &v.name)?;
            if let Some(first) = versions.iter().position(|seen| seen.name == v.name) {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "duplicate version name {:?} (also versions[{first}])",
                        v.name
                    ),
                ));
            }
            total += u64::from(v.weight);
            cumulative.push(total);
            versions.push(Version {
                name: v.name,
                weight: v.weight,
            });
        }
        if total == 0 {
            return Err(ConfigError::new(
                "versions",
                "all weights are 0; at least one version needs a weight above 0",
            ));
        }
        if total > u64::from(u32::MAX) {
            return Err(ConfigError::new(
                "versions",
                format!(
                    "weights sum to {total}; the sum must not exceed {}",
                    u32::MAX
                ),
            ));
        }

        let default_version = match &raw.default_version {
            None => versions.len() - 1,
            Some(name) => versions
                .iter()
                .position(|v| &v.name == name)
                .ok_or_else(|| {
                    ConfigError::new(
                        "default_version",
                        format!("{name:?} is not one of the listed versions"),
                    )
                })?,
        };

        if raw.session.sources.is_empty() {
            return Err(ConfigError::new(
                "session.sources",
                "at least one source ({\"cookie\": NAME} or {\"header\": NAME}) is required",
            ));
        }
        let mut sources = Vec::with_capacity(raw.session.sources.len());
        for (i, s) in raw.session.sources.into_iter().enumerate() {
            let path = format!("session.sources[{i}]");
            let source = match (s.cookie, s.header) {
                (Some(name), None) => {
                    check_token(&format!("{path}.cookie"), &name)?;
                    Source::Cookie(name)
                }
                (None, Some(name)) => {
                    Source::Header(check_header_name(&format!("{path}.header"), &name)?)
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        path,
                        "has both `cookie` and `header`; a source is exactly one of them",
                    ))
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        path,
                        "has neither `cookie` nor `header`; a source is exactly one of them",
                    ))
                }
            };
            sources.push(source);
        }
        let assign = raw
            .session
            .assign_cookie
            .map(AssignCookie::compile)
            .transpose()?;
        if let Some(a) = &assign {
            // The assigned cookie is read as the last source, unless already listed.
            if !sources
                .iter()
                .any(|s| matches!(s, Source::Cookie(n) if n == &a.name))
            {
                sources.push(Source::Cookie(a.name.clone()));
            }
        }

        let route_header = check_header_name(
            "route_header",
            raw.route_header.as_deref().unwrap_or(DEFAULT_HEADER),
        )?;
        let response_header = check_header_name(
            "response_header",
            raw.response_header.as_deref().unwrap_or(DEFAULT_HEADER),
        )?;

        let reason_header = raw
            .reason_header
            .as_deref()
            .map(|h| check_header_name("reason_header", h))
            .transpose()?;
        let mut warnings = Vec::new();
        let override_ = raw
            .override_
            .map(|o| compile_override(o, env, &mut warnings))
            .transpose()?;
        let version_index = |name: &str| versions.iter().position(|v| v.name == name);
        let pins = compile_pins(raw.pins, &version_index)?;
        let business = business::compile(raw.business_metrics, raw.max_body_bytes)?;
        let metrics_flush_ms = raw.metrics_flush_ms.unwrap_or(DEFAULT_METRICS_FLUSH_MS);
        if metrics_flush_ms > MAX_METRICS_FLUSH_MS {
            return Err(ConfigError::new(
                "metrics_flush_ms",
                format!("{metrics_flush_ms} is above {MAX_METRICS_FLUSH_MS} (one minute)"),
            ));
        }

        let salt = raw.salt.unwrap_or_else(|| raw.service.clone()).into_bytes();
        Ok(Plan {
            service: raw.service,
            salt,
            versions,
            cumulative,
            total_weight: total,
            default_version,
            sources,
            route_header,
            response_header,
            override_,
            pins,
            assign,
            reason_header,
            business,
            metrics_flush_ms,
            warnings,
        })
    }
}

/// Version and service names: a Kubernetes label value (they become subset labels, header values
/// and metric labels): 1–63 characters, ASCII letters, digits, `-`, `_`, `.`, starting and ending
/// with a letter or digit.
fn check_label(path: &str, value: &str) -> Result<(), ConfigError> {
    let b = value.as_bytes();
    let ok_inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    let valid = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(ok_inner)
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if let Some(problem) = crate::metrics::label_value_problem(value).filter(|_| valid) {
        return Err(ConfigError::new(
            path,
            format!("{value:?} {problem}; it becomes a metric label"),
        ));
    }
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!(
                "{value:?} is not a valid name: use 1-63 ASCII letters, digits, '-', '_' or '.', \
                 starting and ending with a letter or digit"
            ),
        ))
    }
}

/// RFC 9110 `tchar`: the characters allowed in header names and cookie names.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

pub(crate) fn check_token(path: &str, value: &str) -> Result<(), ConfigError> {
    if !value.is_empty() && value.bytes().all(is_tchar) {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{value:?} is not a valid name (RFC 9110 token characters, non-empty)"),
        ))
    }
}

/// Validates a header name and returns it lowercase (Envoy stores header names lowercase).
pub(crate) fn check_header_name(path: &str, value: &str) -> Result<String, ConfigError> {
    check_token(path, value)?;
    Ok(value.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{
        "service": "checkout",
        "salt": "checkout-2026-11",
        "versions": [ {"name": "canary", "weight": 5}, {"name": "stable", "weight": 95} ],
        "default_version": "stable",
        "session": { "sources": [ {"cookie": "session_id"}, {"header": "x-user-id"} ] },
        "route_header": "x-canary-version",
        "response_header": "x-canary-version"
    }"#;

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn compiles_the_published_example() {
        let plan = Plan::from_json(BASE.as_bytes()).unwrap();
        assert_eq!(plan.service, "checkout");
        assert_eq!(plan.salt, b"checkout-2026-11");
        assert_eq!(plan.cumulative, vec![5, 100]);
        assert_eq!(plan.total_weight, 100);
        assert_eq!(plan.default_version, 1);
        assert_eq!(
            plan.sources,
            vec![
                Source::Cookie("session_id".into()),
                Source::Header("x-user-id".into())
            ]
        );
        assert_eq!(plan.route_header, "x-canary-version");
        assert_eq!(plan.response_header, "x-canary-version");
    }

    #[test]
    fn defaults() {
        let json = r#"{"service":"cart","versions":[{"name":"a","weight":1},{"name":"b","weight":0}],
                       "session":{"sources":[{"header":"X-User-Id"}]}}"#;
        let plan = Plan::from_json(json.as_bytes()).unwrap();
        assert_eq!(plan.salt, b"cart", "salt defaults to the service");
        assert_eq!(
            plan.default_version, 1,
            "default is the last listed version"
        );
        assert_eq!(plan.route_header, DEFAULT_HEADER);
        assert_eq!(plan.response_header, DEFAULT_HEADER);
        assert_eq!(
            plan.sources,
            vec![Source::Header("x-user-id".into())],
            "lowercased"
        );
        assert_eq!(plan.metrics_flush_ms, DEFAULT_METRICS_FLUSH_MS);
        let immediate = with(|v| v["metrics_flush_ms"] = 0.into());
        assert_eq!(
            Plan::from_json(immediate.as_bytes())
                .unwrap()
                .metrics_flush_ms,
            0
        );
    }

    #[test]
    fn empty_salt_is_allowed() {
        let plan = Plan::from_json(with(|v| v["salt"] = "".into()).as_bytes()).unwrap();
        assert!(plan.salt.is_empty());
    }

    #[test]
    fn header_names_are_lowercased() {
        let json = with(|v| {
            v["route_header"] = "X-Route".into();
            v["response_header"] = "X-Served-By".into();
        });
        let plan = Plan::from_json(json.as_bytes()).unwrap();
        assert_eq!(plan.route_header, "x-route");
        assert_eq!(plan.response_header, "x-served-by");
    }

    /// Every refusal of the contract, with the field path it must name.
    #[test]
    fn refusals_name_the_field() {
        use serde_json::json;
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "typo at top level",
                with(|v| {
                    let versions = v["versions"].take();
                    v.as_object_mut().unwrap().remove("versions");
                    v["versoins"] = versions;
                }),
                "versoins",
            ),
            (
                "unknown field in a version",
                with(|v| v["versions"][0]["wieght"] = 3.into()),
                "versions[0].wieght",
            ),
            (
                "unknown field in session",
                with(|v| v["session"]["source"] = json!([])),
                "session.source",
            ),
            (
                "missing service",
                with(|v| {
                    v.as_object_mut().unwrap().remove("service");
                }),
                "service",
            ),
            (
                "missing versions",
                with(|v| {
                    v.as_object_mut().unwrap().remove("versions");
                }),
                "versions",
            ),
            (
                "missing session",
                with(|v| {
                    v.as_object_mut().unwrap().remove("session");
                }),
                "session",
            ),
            (
                "missing weight",
                with(|v| {
                    v["versions"][1].as_object_mut().unwrap().remove("weight");
                }),
                "versions[1].weight",
            ),
            (
                "service wrong type",
                with(|v| v["service"] = 3.into()),
                "service",
            ),
            (
                "versions wrong type",
                with(|v| v["versions"] = "canary".into()),
                "versions",
            ),
            (
                "weight wrong type",
                with(|v| v["versions"][1]["weight"] = "95".into()),
                "versions[1].weight",
            ),
            (
                "fractional weight",
                with(|v| v["versions"][1]["weight"] = json!(9.5)),
                "versions[1].weight",
            ),
            (
                "negative weight",
                with(|v| v["versions"][1]["weight"] = json!(-5)),
                "versions[1].weight",
            ),
            (
                "empty versions",
                with(|v| v["versions"] = json!([])),
                "versions",
            ),
            (
                "duplicate names",
                with(|v| v["versions"][1]["name"] = "canary".into()),
                "versions[1].name",
            ),
            (
                "all-zero weights",
                with(|v| {
                    v["versions"][0]["weight"] = 0.into();
                    v["versions"][1]["weight"] = 0.into();
                }),
                "versions",
            ),
            (
                "flush interval above a minute",
                with(|v| v["metrics_flush_ms"] = 60_001.into()),
                "metrics_flush_ms",
            ),
            (
                "negative flush interval",
                with(|v| v["metrics_flush_ms"] = json!(-1)),
                "metrics_flush_ms",
            ),
            (
                "unknown default_version",
                with(|v| v["default_version"] = "blue".into()),
                "default_version",
            ),
            (
                "empty sources",
                with(|v| v["session"]["sources"] = json!([])),
                "session.sources",
            ),
            (
                "source with both",
                with(|v| v["session"]["sources"][1] = json!({"cookie": "a", "header": "b"})),
                "session.sources[1]",
            ),
            (
                "source with neither",
                with(|v| v["session"]["sources"][0] = json!({})),
                "session.sources[0]",
            ),
            (
                "source with unknown kind",
                with(|v| v["session"]["sources"][0] = json!({"query": "sid"})),
                "session.sources[0].query",
            ),
            (
                "empty cookie name",
                with(|v| v["session"]["sources"][0] = json!({"cookie": ""})),
                "session.sources[0].cookie",
            ),
            (
                "bad header name",
                with(|v| v["session"]["sources"][1] = json!({"header": "x user"})),
                "session.sources[1].header",
            ),
            (
                "bad route header",
                with(|v| v["route_header"] = ":authority".into()),
                "route_header",
            ),
            (
                "empty response header",
                with(|v| v["response_header"] = "".into()),
                "response_header",
            ),
            (
                "empty service",
                with(|v| v["service"] = "".into()),
                "service",
            ),
            (
                "bad version name",
                with(|v| v["versions"][0]["name"] = "can ary".into()),
                "versions[0].name",
            ),
            (
                "too many versions",
                with(|v| {
                    v["versions"] = (0..17)
                        .map(|i| json!({"name": format!("v{i}"), "weight": 1}))
                        .collect();
                    v["default_version"] = "v0".into();
                }),
                "versions",
            ),
            (
                "weights overflow",
                with(|v| {
                    v["versions"][0]["weight"] = u32::MAX.into();
                    v["versions"][1]["weight"] = 1.into();
                }),
                "versions",
            ),
            ("not JSON", "service: checkout".to_string(), "(root)"),
            ("empty document", "  ".to_string(), "(root)"),
            ("JSON but not an object", "[1,2]".to_string(), "(root)"),
            ("trailing garbage", format!("{BASE} x"), "(root)"),
        ];
        for (what, json, path) in cases {
            let err = Plan::from_json(json.as_bytes()).expect_err(what);
            assert_eq!(err.path, path, "{what}: {err}");
            assert!(!err.reason.is_empty(), "{what}");
        }
    }

    /// Found by fuzzing: members named "" or "." must still be named by the path.
    #[test]
    fn awkward_member_names_are_named() {
        let cases = [
            (r#"{"":1}"#.to_string(), r#""""#),
            (r#"{"""#.to_string(), r#""""#),
            (with(|v| v["session"][""] = 1.into()), r#"session."""#),
            (r#"{".":1}"#.to_string(), "."),
        ];
        for (json, path) in cases {
            let err = Plan::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(err.path, path, "{json}: {err}");
        }
    }

    /// The configure-time log line, in full.
    #[test]
    fn summary_line() {
        let plan = Plan::from_json(BASE.as_bytes()).unwrap();
        assert_eq!(
            plan.summary(),
            "service=checkout versions=canary:5,stable:95 default=stable \
             sources=cookie:session_id,header:x-user-id route_header=x-canary-version \
             response_header=x-canary-version metrics_flush_ms=1000"
        );
        let json = with(|v| {
            v["override"] = serde_json::json!({"tokens": ["0123456789abcdef"]});
            v["pins"] = serde_json::json!([
                {"header": "X-Tenant", "values": ["a", "b"], "version": "canary"},
                {"header": "x-m", "values": ["c"], "version": "stable"}
            ]);
            v["session"]["assign_cookie"] = serde_json::json!({"name": "sc"});
            v["reason_header"] = "X-Reason".into();
            v["business_metrics"] = serde_json::json!([
                {"name": "orders", "kind": "counter", "header": "x-order-id"}
            ]);
            v["metrics_flush_ms"] = 0.into();
        });
        let plan = Plan::from_json(json.as_bytes()).unwrap();
        assert_eq!(
            plan.summary(),
            "service=checkout versions=canary:5,stable:95 default=stable \
             sources=cookie:session_id,header:x-user-id,cookie:sc route_header=x-canary-version \
             response_header=x-canary-version override=enabled pin=x-tenant:2values->canary \
             pin=x-m:1values->stable assign_cookie=sc reason_header=x-reason \
             business_metrics=1 metrics_flush_ms=0"
        );
        let json = with(|v| v["override"] = serde_json::json!({}));
        let plan = Plan::from_json(json.as_bytes()).unwrap();
        assert!(plan
            .summary()
            .ends_with(" override=disabled metrics_flush_ms=1000"));
    }

    #[test]
    fn sixteen_versions_are_allowed() {
        use serde_json::json;
        let json = with(|v| {
            v["versions"] = (0..16)
                .map(|i| json!({"name": format!("v{i}"), "weight": 1}))
                .collect();
            v["default_version"] = "v15".into();
        });
        let plan = Plan::from_json(json.as_bytes()).unwrap();
        assert_eq!(plan.versions.len(), 16);
        assert_eq!(plan.total_weight, 16);
    }

    #[test]
    fn refusal_messages_read_well() {
        let err = Plan::from_json(with(|v| v["versions"][1]["weight"] = (-5).into()).as_bytes())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("versions[1].weight: invalid value: integer `-5`"),
            "{err}"
        );
        let err =
            Plan::from_json(with(|v| v["default_version"] = "blue".into()).as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "default_version: \"blue\" is not one of the listed versions"
        );
    }
}
