//! Configuration: the JSON users write (serde types), compiled once into a [`crate::plan::Plan`].
//!
//! Parsing and compiling are separate steps. [`RawConfig`] mirrors the JSON exactly
//! (`deny_unknown_fields` everywhere, so a typo such as `versoins` is refused); `Plan` is what the
//! request path uses, with everything precomputed: cumulative weights, lowercase header names, the
//! salt as bytes, the default version's index. Nothing here is re-parsed per request.
//!
//! Every refusal is a [`ConfigError`] naming the field path (`versions[1].weight`) and the reason.

use crate::brake::RawGuard;
use crate::counting::business::RawRule;
use crate::counting::grpc::RawGrpc;
use crate::routing::cookies::{RawAssignCookie, RawHold};
use crate::routing::matcher::RawMatch;
use crate::routing::stage::{RawOverride, RawPin};
use serde::Deserialize;

pub use crate::check::ConfigError;

pub(crate) mod de;

/// Most versions a plan may list. Sixteen covers blue/green + several canaries with room to spare
/// and keeps the linear scan in `Plan::pick` trivially cheap.
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
    /// The requests that are this service's (hosts, path prefixes); every request when absent
    /// (a single-service document only).
    #[serde(default, rename = "match")]
    pub match_: Option<RawMatch>,
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
    /// How the filter learns which version served a response (default `cluster`).
    #[serde(default)]
    pub attribution: Option<Attribution>,
    /// Stage zero: token-guarded override.
    #[serde(default, rename = "override")]
    pub override_: Option<RawOverride>,
    /// Stage zero: allowlisted header values pinned to a version.
    #[serde(default)]
    pub pins: Vec<RawPin>,
    /// Request header carrying the session's cohort bucket upstream (`0000`–`9999`); off when
    /// absent (the recommended name is `x-canary-bucket`).
    #[serde(default)]
    pub bucket_header: Option<String>,
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
    /// The brake: judge the canary in this Envoy and stop routing to it when harmful.
    #[serde(default)]
    pub guard: Option<RawGuard>,
    /// Request methods counted as writes per served version (`canary_writes_total`); default
    /// POST, PUT, PATCH, DELETE; `[]` counts nothing (and reads no `:method`).
    #[serde(default)]
    pub write_methods: Option<Vec<String>>,
    /// gRPC status per served version (`canary_grpc_responses_total`); off when absent.
    #[serde(default)]
    pub grpc: Option<RawGrpc>,
}

/// Where the served version comes from (the manual, "Attribution").
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// Envoy's `xds.cluster_name` (a property read), and the filter writes `response_header`.
    #[default]
    Cluster,
    /// The route already set `response_header` to the serving version's name (Envoy
    /// `response_headers_to_add` per route or weighted cluster, Istio `headers.response.set` per
    /// destination): one header read, no property read, no header write. A response without it
    /// (or with a value that is no version) falls back to `cluster`.
    ResponseHeader,
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
    /// The idle hold: keeps a recently active session on the default version.
    #[serde(default)]
    pub hold: Option<RawHold>,
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

/// Parses JSON into [`RawConfig`], naming the field path of the first error. The reader is the
/// crate's own (`crate::config::de`: serde over the JSON bytes, without serde_json, which the module
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
    crate::config::de::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, Source};

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
            (
                "bucket header is the route header",
                with(|v| v["bucket_header"] = "X-Canary-Version".into()),
                "bucket_header",
            ),
            (
                "bucket header is the default route header",
                with(|v| {
                    v.as_object_mut().unwrap().remove("route_header");
                    v["bucket_header"] = DEFAULT_HEADER.into();
                }),
                "bucket_header",
            ),
            (
                "bucket header is the override header",
                with(|v| {
                    v["override"] = json!({"tokens": ["0123456789abcdef"]});
                    v["bucket_header"] = "x-canary-override".into();
                }),
                "bucket_header",
            ),
            (
                "bucket header is the override token header",
                with(|v| {
                    v["override"] = json!({"token_header": "x-qa"});
                    v["bucket_header"] = "X-QA".into();
                }),
                "bucket_header",
            ),
            (
                "bucket header is a session source",
                with(|v| v["bucket_header"] = "x-user-id".into()),
                "bucket_header",
            ),
            (
                "bucket header is a pin header",
                with(|v| {
                    v["pins"] =
                        json!([{"header": "x-merchant", "values": ["m1"], "version": "canary"}]);
                    v["bucket_header"] = "X-Merchant".into();
                }),
                "bucket_header",
            ),
            (
                "bucket header is the cookie header",
                with(|v| v["bucket_header"] = "Cookie".into()),
                "bucket_header",
            ),
            (
                "bad bucket header",
                with(|v| v["bucket_header"] = "x bucket".into()),
                "bucket_header",
            ),
            (
                "hold idle 0",
                with(|v| v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": 0})),
                "session.hold.idle_seconds",
            ),
            (
                "hold idle above a day",
                with(|v| v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": 86_401})),
                "session.hold.idle_seconds",
            ),
            (
                "hold idle negative",
                with(|v| v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": -1})),
                "session.hold.idle_seconds",
            ),
            (
                "hold without idle_seconds",
                with(|v| v["session"]["hold"] = json!({"cookie": "h"})),
                "session.hold.idle_seconds",
            ),
            (
                "hold typo",
                with(|v| {
                    v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": 60, "max_age": 1})
                }),
                "session.hold.max_age",
            ),
            (
                "hold cookie is the session cookie",
                with(|v| {
                    v["session"]["hold"] = json!({"cookie": "session_id", "idle_seconds": 60})
                }),
                "session.hold.cookie",
            ),
            (
                "hold cookie is the minted cookie",
                with(|v| {
                    v["session"]["assign_cookie"] = json!({"name": "sc"});
                    v["session"]["hold"] = json!({"cookie": "sc", "idle_seconds": 60});
                }),
                "session.hold.cookie",
            ),
            (
                "flow cookie is the hold cookie",
                with(|v| {
                    v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": 60,
                        "flows": {"cookie": "h", "drain_seconds": 60, "key_env": "K"}});
                }),
                "session.hold.flows.cookie",
            ),
            (
                "flow cookie is the session cookie",
                with(|v| {
                    v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": 60,
                        "flows": {"cookie": "session_id", "drain_seconds": 60, "key_env": "K"}});
                }),
                "session.hold.flows.cookie",
            ),
            (
                "flows drain above an hour",
                with(|v| {
                    v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": 60,
                        "flows": {"cookie": "f", "drain_seconds": 3601, "key_env": "K"}});
                }),
                "session.hold.flows.drain_seconds",
            ),
            (
                "flows without key_env",
                with(|v| {
                    v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": 60,
                        "flows": {"cookie": "f", "drain_seconds": 60}});
                }),
                "session.hold.flows.key_env",
            ),
            (
                "flows typo",
                with(|v| {
                    v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": 60,
                        "flows": {"cookie": "f", "drain_seconds": 60, "key_env": "K",
                                  "drain": 1}});
                }),
                "session.hold.flows.drain",
            ),
            (
                "guard.flows without session flows",
                with(|v| {
                    v["guard"] = json!({"checks": [{"error_ratio": {"max_points": 1.0}}],
                                        "flows": "move"});
                }),
                "guard.flows",
            ),
            (
                "guard.flows neither finish nor move",
                with(|v| {
                    v["session"]["hold"] = json!({"cookie": "h", "idle_seconds": 60,
                        "flows": {"cookie": "f", "drain_seconds": 60, "key_env": "K"}});
                    v["guard"] = json!({"checks": [{"error_ratio": {"max_points": 1.0}}],
                                        "flows": "drain"});
                }),
                "guard.flows",
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
            v["session"]["hold"] = serde_json::json!({"cookie": "sc_hold", "idle_seconds": 900});
            v["bucket_header"] = "X-Canary-Bucket".into();
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
             pin=x-m:1values->stable assign_cookie=sc hold=sc_hold:900s \
             bucket_header=x-canary-bucket reason_header=x-reason \
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
