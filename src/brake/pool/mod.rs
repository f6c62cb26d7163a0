//! The pool: the brake judging the evidence of every Envoy, pooled by the Prometheus that
//! scrapes them (`guard.pool`).
//!
//! Every Envoy publishes its evidence since it joined the guard's generation (salt + epoch) as
//! gauges, `canary_guard_evidence{service,version,metric}`, with the generation itself in
//! `canary_guard_generation{service}`. Prometheus sums them; one worker VM per Envoy (the lease
//! holder, [`lease`]) asks it every `interval_ms` with one instant query ([`Pool::query`]), reads
//! the answer ([`answer`]) into [`Pooled`] figures, and judges them with the guard's own test.
//! Every Envoy of a generation judges the same pooled process, which starts at zero when the
//! generation starts: N Envoys looking at it are one always-valid test, not N.
//!
//! Pure: config, query text, answer reading, the records kept in shared data. The host calls
//! are the filter's (`crate::filter`).

pub mod answer;
pub mod lease;

use crate::check::{cat, ConfigError};
use answer::AnswerError;
use serde::Deserialize;

/// Default `guard.pool.path`: Prometheus's instant-query endpoint.
pub const DEFAULT_PATH: &str = "/api/v1/query";
/// Default `guard.pool.interval_ms`.
pub const DEFAULT_INTERVAL_MS: u32 = 5000;
/// Bounds of `guard.pool.interval_ms`.
pub const MIN_INTERVAL_MS: u64 = 1000;
pub const MAX_INTERVAL_MS: u64 = 600_000;
/// Default `guard.pool.timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
/// The largest answer the pool reads (bytes); a longer one is a `bad_answer`. The pool's query
/// returns (versions × series + versions) samples: a few KiB.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The gauge of an Envoy's evidence since it joined the generation, per version and series
/// (`metric` label: [`crate::brake::Series`]'s label).
pub const EVIDENCE: &str = "canary_guard_evidence";
/// The gauge holding the generation an Envoy judges (its low 32 bits, exact in a float).
pub const GENERATION: &str = "canary_guard_generation";
/// The gauge of a version tripped in an Envoy (1) or not (0): read by the pool to adopt trips.
pub const TRIPPED: &str = "canary_guard_tripped";
/// Pool queries by outcome (counter).
pub const QUERIES: &str = "canary_guard_pool_queries_total";

/// How a pool query ended: the `outcome` label of [`QUERIES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer was read and judged.
    Ok,
    /// Prometheus answered with a status other than 200 (or a query error).
    HttpError,
    /// No answer within `timeout_ms`.
    Timeout,
    /// No connection: the cluster is missing, has no healthy host, or the connection failed.
    Unreachable,
    /// A 200 whose body is not a usable answer (not JSON, wrong shape, too large, values that
    /// cannot be counts).
    BadAnswer,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::HttpError,
        Outcome::Timeout,
        Outcome::Unreachable,
        Outcome::BadAnswer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::HttpError => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::BadAnswer => "bad_answer",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// `guard.pool` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// The Envoy cluster that reaches Prometheus's HTTP API.
    pub cluster: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Extra label matchers for every series selector, e.g. `mesh="prod"`.
    #[serde(default)]
    pub selector: Option<String>,
    /// A VM environment variable holding a bearer token for Prometheus.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Also judge this Envoy's own counters, at this alpha (off by default with a pool).
    #[serde(default)]
    pub local_alpha: Option<f64>,
}

/// The compiled `guard.pool`: everything a query needs, precomputed.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub cluster: String,
    pub authority: String,
    /// `:path`: the endpoint with the url-encoded query.
    pub path: String,
    /// The PromQL query, as sent (for logs and tests).
    pub query: String,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    /// `authorization` header value (`Bearer …`) from `token_env`; never logged.
    pub token: Option<String>,
    /// The local test's alpha, when the local test stays on beside the pool.
    pub local_alpha: Option<f64>,
    /// The generation as the gauge publishes it ([`generation_label`]).
    pub generation: u32,
}

/// The generation as `canary_guard_generation` publishes it: its low 32 bits (a gauge is a
/// float in Prometheus; 32 bits are exact, and two generations of one service colliding is a
/// one-in-four-billion event).
pub fn generation_label(generation: u64) -> u32 {
    (generation & 0xffff_ffff) as u32
}

fn field(name: &str) -> String {
    cat(&["guard.pool.", name])
}

impl Pool {
    /// Compiles `guard.pool` for `service` and the guard's `generation`; `env` reads the VM's
    /// environment (for `token_env`); a missing token variable is a warning, as for
    /// `override.tokens_env`.
    pub fn compile(
        raw: RawPool,
        service: &str,
        generation: u64,
        alpha: f64,
        env: &dyn Fn(&str) -> Option<String>,
        warnings: &mut Vec<String>,
    ) -> Result<Pool, ConfigError> {
        if raw.cluster.is_empty() {
            return Err(ConfigError::new(
                field("cluster"),
                "must name the Envoy cluster that reaches Prometheus",
            ));
        }
        let authority = raw.authority.unwrap_or_else(|| raw.cluster.clone());
        if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                field("authority"),
                "must be a host[:port] (visible ASCII, no spaces)",
            ));
        }
        let endpoint = raw.path.unwrap_or_else(|| DEFAULT_PATH.to_string());
        if !endpoint.starts_with('/')
            || !endpoint.bytes().all(|b| b.is_ascii_graphic())
            || endpoint.contains('#')
        {
            return Err(ConfigError::new(
                field("path"),
                "must be an absolute path starting with '/' (visible ASCII, no '#')",
            ));
        }
        let interval = raw.interval_ms.unwrap_or(u64::from(DEFAULT_INTERVAL_MS));
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval) {
            return Err(ConfigError::new(
                field("interval_ms"),
                format!("{interval} is outside 1000–600000 (1 s to 10 minutes)"),
            ));
        }
        let timeout = raw.timeout_ms.unwrap_or(u64::from(DEFAULT_TIMEOUT_MS));
        if timeout == 0 || timeout >= interval {
            return Err(ConfigError::new(
                field("timeout_ms"),
                format!("{timeout} must be at least 1 and below interval_ms ({interval})"),
            ));
        }
        let selector = raw.selector.unwrap_or_default();
        if let Err(why) = check_selector(&selector) {
            return Err(ConfigError::new(field("selector"), why));
        }
        let token = match raw.token_env.as_deref() {
            None => None,
            Some("") => {
                return Err(ConfigError::new(
                    field("token_env"),
                    "must name an environment variable",
                ))
            }
            Some(var) => match env(var).map(|t| t.trim().to_string()) {
                Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => {
                    Some(cat(&["Bearer ", &t]))
                }
                Some(_) => {
                    warnings.push(format!(
                        "guard.pool.token_env: {var} is empty or not a token; queries go without"
                    ));
                    None
                }
                None => {
                    warnings.push(format!(
                        "guard.pool.token_env: environment variable {var} is not set in the filter's \
                         environment; queries go without a token"
                    ));
                    None
                }
            },
        };
        if let Some(a) = raw.local_alpha {
            if !(a > 0.0 && a < alpha) {
                return Err(ConfigError::new(
                    field("local_alpha"),
                    "must be above 0 and below guard.alpha",
                ));
            }
        }
        let generation = generation_label(generation);
        let query = query(service, &selector, generation);
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let path = format!("{endpoint}{sep}query={}", percent_encode(&query));
        Ok(Pool {
            cluster: raw.cluster,
            authority,
            path,
            query,
            interval_ms: interval as u32,
            timeout_ms: timeout as u32,
            token,
            local_alpha: raw.local_alpha,
            generation,
        })
    }
}

/// The one instant query of a service: every Envoy's evidence and trip gauges, of Envoys that
/// publish this generation, summed by name, version and series:
///
/// ```text
/// sum by (__name__, version, metric) (
///   {__name__=~"canary_guard_evidence|canary_guard_tripped", service="checkout", mesh="prod"}
///   and ignoring (version, metric)
///   (canary_guard_generation{service="checkout", mesh="prod"} == 3735928559))
/// ```
pub fn query(service: &str, selector: &str, generation: u32) -> String {
    let mut matchers = format!("service=\"{}\"", escape_string(service));
    if !selector.trim().is_empty() {
        matchers.push(',');
        matchers.push_str(selector.trim());
    }
    format!(
        "sum by (__name__, version, metric) ({{__name__=~\"{EVIDENCE}|{TRIPPED}\",{matchers}}} \
         and ignoring (version, metric) ({GENERATION}{{{matchers}}} == {generation}))"
    )
}

/// A PromQL string literal's contents (also the gate's label values and keys).
pub fn escape_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Percent-encodes a query parameter: RFC 3986 unreserved characters stay, every other byte is
/// `%XX` (the pool's query, the gate's, and the e2e suites' own).
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// `selector`: label matchers `name op "value"` separated by commas (`op` one of `=`, `!=`,
/// `=~`, `!~`), so that nothing but matchers can be added to the query.
pub fn check_selector(selector: &str) -> Result<(), String> {
    let b = selector.trim().as_bytes();
    let mut i = 0;
    let bad = |what: &str| Err(cat(&[what, ": expected label matchers like mesh=\"prod\""]));
    let skip_ws = |i: &mut usize| {
        while b.get(*i).is_some_and(|c| *c == b' ') {
            *i += 1;
        }
    };
    while i < b.len() {
        skip_ws(&mut i);
        let start = i;
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            i += 1;
        }
        if i == start || b.get(start).is_some_and(u8::is_ascii_digit) {
            return bad("a label name");
        }
        if &b[start..i] == b"__name__" || &b[start..i] == b"service" {
            return bad("service and __name__ are the filter's");
        }
        skip_ws(&mut i);
        match (b.get(i), b.get(i + 1)) {
            (Some(b'='), Some(b'~')) | (Some(b'!'), Some(b'=' | b'~')) => i += 2,
            (Some(b'='), _) => i += 1,
            _ => return bad("an operator"),
        }
        skip_ws(&mut i);
        if b.get(i) != Some(&b'"') {
            return bad("a quoted value");
        }
        i += 1;
        loop {
            match b.get(i) {
                None => return bad("an unterminated value"),
                Some(b'"') => break,
                Some(b'\\') => i += 2,
                Some(c) if *c < 0x20 => return bad("a control character"),
                Some(_) => i += 1,
            }
        }
        i += 1;
        skip_ws(&mut i);
        match b.get(i) {
            None => break,
            Some(b',') if i + 1 < b.len() => i += 1,
            _ => return bad("a comma between matchers"),
        }
    }
    Ok(())
}

/// What one answer says, for one service: the pooled evidence of every version and series
/// (`NaN` where Prometheus has no such series) and how many Envoys report each version tripped.
#[derive(Clone, Debug, PartialEq)]
pub struct Pooled {
    /// `values[version * series + s]`.
    pub values: Vec<f64>,
    pub series: usize,
    /// Envoys (of this generation) whose `canary_guard_tripped` is 1, per version.
    pub tripped: Vec<f64>,
}

impl Pooled {
    /// Reads an answer (at most [`MAX_ANSWER_BYTES`]): `versions` and the guard's `series`
    /// labels name what is wanted; anything else is ignored (another version, another series).
    /// Labels are compared where they are in the answer, never copied.
    pub fn read(body: &[u8], versions: &[&str], series: &[String]) -> Result<Pooled, AnswerError> {
        let mut p = Pooled {
            values: vec![f64::NAN; versions.len() * series.len()],
            series: series.len(),
            tripped: vec![0.0; versions.len()],
        };
        answer::read_each(body, MAX_ANSWER_BYTES, &mut |labels, value| {
            let has = |name: &str, value: &str| labels.iter().any(|l| l.is(name, value));
            let Some(v) = versions.iter().position(|x| has("version", x)) else {
                return;
            };
            if has("__name__", EVIDENCE) {
                let at = series.iter().position(|m| has("metric", m));
                if let Some(slot) = at.and_then(|i| p.values.get_mut(v * series.len() + i)) {
                    *slot = value;
                }
            } else if has("__name__", TRIPPED) {
                if let Some(t) = p.tripped.get_mut(v) {
                    *t = value;
                }
            }
        })?;
        Ok(p)
    }

    /// The pooled value of `version`'s series `s` (`NaN` when absent).
    pub fn get(&self, version: usize, s: usize) -> f64 {
        self.values
            .get(version * self.series + s)
            .copied()
            .unwrap_or(f64::NAN)
    }

    /// Whether any figure is lower than in `before` (an Envoy left the pool or restarted,
    /// another Prometheus replica answered): such a look judges nothing.
    pub fn went_down_from(&self, before: &Pooled) -> bool {
        self.values
            .iter()
            .zip(&before.values)
            .any(|(now, then)| now < then || (now.is_nan() && !then.is_nan()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawPool {
        crate::config::de::from_slice(json.as_bytes()).unwrap()
    }

    fn compile(json: &str) -> Result<Pool, ConfigError> {
        Pool::compile(
            raw(json),
            "checkout",
            0x1234_5678_dead_beef,
            0.01,
            &|v| (v == "PROM_TOKEN").then(|| "s3cret".to_string()),
            &mut Vec::new(),
        )
    }

    #[test]
    fn defaults_and_the_query() {
        let p = compile(r#"{"cluster": "prometheus"}"#).unwrap();
        assert_eq!(
            (
                p.authority.as_str(),
                p.interval_ms,
                p.timeout_ms,
                p.local_alpha
            ),
            ("prometheus", 5000, 1000, None)
        );
        assert_eq!(p.generation, 0xdead_beef);
        assert_eq!(
            p.query,
            "sum by (__name__, version, metric) ({__name__=~\"canary_guard_evidence|\
             canary_guard_tripped\",service=\"checkout\"} and ignoring (version, metric) \
             (canary_guard_generation{service=\"checkout\"} == 3735928559))"
        );
        assert!(p
            .path
            .starts_with("/api/v1/query?query=sum%20by%20%28__name__%2C"));
        assert!(p.token.is_none());
        let p = compile(
            r#"{"cluster": "prometheus", "authority": "prometheus.istio-system:9090",
                "path": "/prom/api/v1/query?dedup=true", "interval_ms": 15000, "timeout_ms": 2000,
                "selector": "mesh=\"prod\", cluster=~\"eu-.*\"", "token_env": "PROM_TOKEN",
                "local_alpha": 0.001}"#,
        )
        .unwrap();
        assert_eq!(p.authority, "prometheus.istio-system:9090");
        assert!(p.path.starts_with("/prom/api/v1/query?dedup=true&query="));
        assert!(p
            .query
            .contains("service=\"checkout\",mesh=\"prod\", cluster=~\"eu-.*\"}"));
        assert_eq!(p.token.as_deref(), Some("Bearer s3cret"));
        assert_eq!(
            (p.interval_ms, p.timeout_ms, p.local_alpha),
            (15000, 2000, Some(0.001))
        );
    }

    #[test]
    fn refusals_name_the_field() {
        for (json, path) in [
            (r#"{"cluster": ""}"#, "guard.pool.cluster"),
            (
                r#"{"cluster": "p", "interval_ms": 999}"#,
                "guard.pool.interval_ms",
            ),
            (
                r#"{"cluster": "p", "interval_ms": 600001}"#,
                "guard.pool.interval_ms",
            ),
            (
                r#"{"cluster": "p", "timeout_ms": 5000}"#,
                "guard.pool.timeout_ms",
            ),
            (
                r#"{"cluster": "p", "timeout_ms": 0}"#,
                "guard.pool.timeout_ms",
            ),
            (
                r#"{"cluster": "p", "interval_ms": 1000, "timeout_ms": 1000}"#,
                "guard.pool.timeout_ms",
            ),
            (r#"{"cluster": "p", "path": "api"}"#, "guard.pool.path"),
            (
                r#"{"cluster": "p", "authority": "a b"}"#,
                "guard.pool.authority",
            ),
            (
                r#"{"cluster": "p", "selector": "mesh=prod"}"#,
                "guard.pool.selector",
            ),
            (
                r#"{"cluster": "p", "selector": "} or vector(1) or {a=\"b\""}"#,
                "guard.pool.selector",
            ),
            (
                r#"{"cluster": "p", "selector": "service=\"other\""}"#,
                "guard.pool.selector",
            ),
            (
                r#"{"cluster": "p", "token_env": ""}"#,
                "guard.pool.token_env",
            ),
            (
                r#"{"cluster": "p", "local_alpha": 0.01}"#,
                "guard.pool.local_alpha",
            ),
            (
                r#"{"cluster": "p", "local_alpha": 0}"#,
                "guard.pool.local_alpha",
            ),
        ] {
            assert_eq!(compile(json).unwrap_err().path, path, "{json}");
        }
        let mut warnings = Vec::new();
        let p = Pool::compile(
            raw(r#"{"cluster": "p", "token_env": "ABSENT"}"#),
            "s",
            1,
            0.01,
            &|_| None,
            &mut warnings,
        )
        .unwrap();
        assert!(p.token.is_none());
        assert!(warnings[0].contains("ABSENT is not set"), "{warnings:?}");
    }

    #[test]
    fn selectors() {
        for ok in ["", "a=\"b\"", "a!=\"b\",c=~\"x.*\" , d!~\"\\\"q\\\"\""] {
            assert!(check_selector(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "a=b",
            "a=\"b",
            "a=\"b\",",
            "=\"b\"",
            "1a=\"b\"",
            "a==\"b\"",
            "a=\"b\" c=\"d\"",
        ] {
            assert!(check_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pooled_figures_from_an_answer() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"canary_guard_evidence","metric":"responses","version":"canary"},"value":[1,"120"]},
            {"metric":{"__name__":"canary_guard_evidence","metric":"errors","version":"stable"},"value":[1,"3"]},
            {"metric":{"__name__":"canary_guard_evidence","metric":"other","version":"stable"},"value":[1,"9"]},
            {"metric":{"__name__":"canary_guard_evidence","metric":"errors","version":"blue"},"value":[1,"9"]},
            {"metric":{"__name__":"canary_guard_tripped","version":"canary"},"value":[1,"2"]}]}}"#;
        let series = ["errors".to_string(), "responses".to_string()];
        let p = Pooled::read(body.as_bytes(), &["canary", "stable"], &series).unwrap();
        assert_eq!(p.get(0, 1), 120.0);
        assert_eq!(p.get(1, 0), 3.0);
        assert!(p.get(0, 0).is_nan() && p.get(1, 1).is_nan() && p.get(5, 5).is_nan());
        assert_eq!(p.tripped, [2.0, 0.0]);
        let mut later = p.clone();
        later.values[1] = 130.0;
        assert!(!later.went_down_from(&p));
        later.values[1] = 110.0;
        assert!(later.went_down_from(&p), "a figure went down");
        let mut gone = p.clone();
        gone.values[1] = f64::NAN;
        assert!(gone.went_down_from(&p), "a figure disappeared");
    }
}
