//! The canary gate: reads the per-version counters sticky-canary publishes and decides
//! PROMOTE, ROLLBACK or WAIT, for a CI step, a Flagger webhook or an Argo Job.
//!
//! - statistics: [`normal_cdf`], [`two_proportion_z`], [`welch_z`], [`mean_and_variance`];
//! - sources: [`Totals`] from Envoy scrapes ([`Totals::from_scrapes`]), from Prometheus
//!   ([`Totals::from_prometheus`]) or from literal numbers ([`Totals::from_series`]);
//! - the decision: a [`Policy`] of [`Check`]s, [`evaluate`] into a [`Report`] (table, JSON, exit
//!   code);
//! - the command line of `sticky-canary-gate`: [`HELP`], [`parse_args`], [`run`].
//!
//! Every check compares one canary version with the baseline version. A check only judges when
//! both sides' denominators reach `min_samples`; it rolls back only when the change is harmful,
//! beyond its limit AND statistically significant at `alpha`.

use crate::http::{send_once, Request};
use crate::prom::Scrape;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// The complementary error function, erfc(x) = 1 − erf(x).
///
/// Chebyshev fit of Numerical Recipes (`erfcc`, 2nd ed. §6.2): fractional error below 1.2e-7
/// everywhere, so tail probabilities keep their relative accuracy.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal cumulative distribution function Φ(z).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Two-proportion z statistic with the pooled standard error: (p1 − p2) / SE, where
/// p = (x1 + x2) / (n1 + n2) and SE = sqrt(p (1 − p) (1/n1 + 1/n2)).
///
/// Positive when sample 1 has the higher proportion. When SE is 0 (both proportions 0, or both
/// 1) the statistic is 0. Needs n1, n2 > 0.
pub fn two_proportion_z(x1: f64, n1: f64, x2: f64, n2: f64) -> f64 {
    let d = x1 / n1 - x2 / n2;
    let p = (x1 + x2) / (n1 + n2);
    let se = (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    signed_ratio(d, se)
}

/// d / se, with 0/0 = 0 and d/0 = ±∞.
fn signed_ratio(d: f64, se: f64) -> f64 {
    if se > 0.0 {
        d / se
    } else if d == 0.0 {
        0.0
    } else {
        d.signum() * f64::INFINITY
    }
}

/// Mean and sample variance of n values known only by their sum S and sum of squares Q:
/// mean = S / n, var = (Q − S²/n) / (n − 1), clamped at 0 against rounding. `None` for n < 2.
pub fn mean_and_variance(sum: f64, squares: f64, n: f64) -> Option<(f64, f64)> {
    if n < 2.0 || n.is_nan() {
        return None;
    }
    let mean = sum / n;
    let var = ((squares - sum * sum / n) / (n - 1.0)).max(0.0);
    Some((mean, var))
}

/// Welch's statistic (m1 − m2) / sqrt(v1/n1 + v2/n2) for two means with their sample variances.
/// With a standard error of 0 it is 0 for equal means and ±∞ otherwise.
pub fn welch_z(m1: f64, v1: f64, n1: f64, m2: f64, v2: f64, n2: f64) -> f64 {
    signed_ratio(m1 - m2, (v1 / n1 + v2 / n2).sqrt())
}

/// Welch–Satterthwaite degrees of freedom of [`welch_z`] (reported; the gate itself uses the
/// normal approximation, which `min_samples` keeps valid).
pub fn welch_df(v1: f64, n1: f64, v2: f64, n2: f64) -> f64 {
    let (a, b) = (v1 / n1, v2 / n2);
    (a + b).powi(2) / (a * a / (n1 - 1.0) + b * b / (n2 - 1.0))
}

// ---------------------------------------------------------------------------------------------
// Metric keys
// ---------------------------------------------------------------------------------------------

/// All responses of a version (every `code_class` summed).
pub const RESPONSES: &str = "canary_responses_total";
/// The 5xx responses of a version.
pub const RESPONSES_5XX: &str = "canary_responses_total{code_class=\"5xx\"}";

/// `canary_business_<rule>_total`: a counter's count, or a sum rule's sum of scaled values.
pub fn business_total(rule: &str) -> String {
    format!("canary_business_{rule}_total")
}

/// `canary_business_<rule>_squares_total`: a sum rule's sum of squared scaled values.
pub fn business_squares(rule: &str) -> String {
    format!("canary_business_{rule}_squares_total")
}

/// The metric name of a key (`name` or `name{label="value"}`).
fn metric_of(key: &str) -> &str {
    key.split('{').next().unwrap_or(key)
}

// ---------------------------------------------------------------------------------------------
// Totals
// ---------------------------------------------------------------------------------------------

/// Per-version totals of one service's `canary_*` series.
///
/// Keys are metric names, each summed over every label other than `service` and `version`
/// (`canary_responses_total` counts every code class), plus `name{label="value"}` for one extra
/// label (`canary_responses_total{code_class="5xx"}`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    service: String,
    values: BTreeMap<String, BTreeMap<String, f64>>,
    /// Metric names present for the service (in any version).
    metrics: BTreeSet<String>,
    /// Other services seen in the data, for error messages.
    other_services: BTreeSet<String>,
}

impl Totals {
    /// Empty totals for `service`.
    pub fn new(service: &str) -> Totals {
        Totals {
            service: service.to_string(),
            ..Totals::default()
        }
    }

    /// Adds `value` to `key` of `version`.
    pub fn add(&mut self, version: &str, key: &str, value: f64) {
        self.metrics.insert(metric_of(key).to_string());
        *self
            .values
            .entry(version.to_string())
            .or_default()
            .entry(key.to_string())
            .or_insert(0.0) += value;
    }

    /// Totals from literal numbers: `(key, version, value)`, keys as in [`Totals::get`]
    /// (e.g. `("canary_business_orders_total", "canary", 250.0)`, or [`RESPONSES_5XX`]).
    pub fn from_series(service: &str, series: &[(&str, &str, f64)]) -> Totals {
        let mut t = Totals::new(service);
        for (key, version, value) in series {
            t.add(version, key, *value);
        }
        t
    }

    /// Sums every `canary_*` series of `service` across the scrapes (one per proxy).
    pub fn from_scrapes(service: &str, scrapes: &[Scrape]) -> Totals {
        let mut t = Totals::new(service);
        for sample in scrapes.iter().flat_map(|s| &s.samples) {
            if !sample.name.starts_with("canary_") || !sample.value.is_finite() {
                continue;
            }
            let Some(svc) = sample.labels.get("service") else {
                continue;
            };
            if svc != service {
                t.other_services.insert(svc.clone());
                continue;
            }
            let Some(version) = sample.labels.get("version") else {
                continue;
            };
            t.add(version, &sample.name, sample.value);
            for (label, value) in &sample.labels {
                if label != "service" && label != "version" {
                    let key = format!("{}{{{label}=\"{}\"}}", sample.name, escape(value));
                    t.add(version, &key, sample.value);
                }
            }
        }
        t
    }

    /// Instant queries against Prometheus at `base_url`, one per key in `metrics`:
    /// `sum by (version) (KEY{service="S"})`, or with a window
    /// `sum by (version) (increase(KEY{service="S"}[WINDOW]))`.
    pub fn from_prometheus(
        base_url: &str,
        service: &str,
        window: Option<&str>,
        metrics: &[&str],
    ) -> Result<Totals, String> {
        let url = HttpUrl::parse(base_url)?;
        if let Some(w) = window {
            check_duration(w)?;
        }
        let mut t = Totals::new(service);
        for key in metrics {
            let query = prometheus_query(service, key, window);
            let path = format!("/api/v1/query?query={}", percent_encode(&query));
            let body = url.get(&path)?;
            t.add_prometheus_result(key, &body)
                .map_err(|e| format!("Prometheus {base_url}, query {query}: {e}"))?;
        }
        Ok(t)
    }

    /// Adds the vector result of a Prometheus `/api/v1/query` answer (`body`, JSON) to `key`,
    /// one element per version.
    pub fn add_prometheus_result(&mut self, key: &str, body: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
        if v["status"] != "success" {
            return Err(format!(
                "status {}: {}",
                v["status"],
                v["error"].as_str().unwrap_or("(no error message)")
            ));
        }
        if v["data"]["resultType"] != "vector" {
            return Err(format!(
                "expected a vector result, got {}",
                v["data"]["resultType"]
            ));
        }
        let results = v["data"]["result"]
            .as_array()
            .ok_or("no data.result array")?;
        for r in results {
            let Some(version) = r["metric"]["version"].as_str() else {
                continue;
            };
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| format!("unreadable sample value {}", r["value"]))?;
            if value.is_finite() {
                self.add(version, key, value);
            }
        }
        Ok(())
    }

    /// The service these totals are for.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Every version seen in the data, sorted.
    pub fn versions(&self) -> Vec<String> {
        self.values.keys().cloned().collect()
    }

    /// The value of `key` for `version`; 0 when absent.
    pub fn get(&self, version: &str, key: &str) -> f64 {
        self.values
            .get(version)
            .and_then(|m| m.get(key))
            .copied()
            .unwrap_or(0.0)
    }

    /// Whether any version has a series of metric `name`.
    pub fn has_metric(&self, name: &str) -> bool {
        self.metrics.contains(name)
    }

    /// Whether `version` has a non-zero value in any series.
    fn has_data(&self, version: &str) -> bool {
        self.values
            .get(version)
            .is_some_and(|m| m.values().any(|v| *v != 0.0))
    }
}

/// Escapes a label value for a key or a PromQL string literal.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The PromQL query for `key` of `service`.
pub fn prometheus_query(service: &str, key: &str, window: Option<&str>) -> String {
    let (name, extra) = match key.split_once('{') {
        Some((n, rest)) => (n, rest.trim_end_matches('}')),
        None => (key, ""),
    };
    let mut matchers = format!("service=\"{}\"", escape(service));
    if !extra.is_empty() {
        matchers.push(',');
        matchers.push_str(extra);
    }
    let selector = format!("{name}{{{matchers}}}");
    match window {
        Some(w) => format!("sum by (version) (increase({selector}[{w}]))"),
        None => format!("sum by (version) ({selector})"),
    }
}

/// A Prometheus duration: one or more `<digits><unit>`, units ms s m h d w y.
fn check_duration(w: &str) -> Result<(), String> {
    let bad = || format!("--window {w:?}: expected a duration such as 30m, 2h or 1h30m");
    let mut rest = w;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(bad());
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u))
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
    }
    Ok(())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP sources
// ---------------------------------------------------------------------------------------------

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// `http://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Empty, or starting with `/` and without a trailing `/`.
    pub prefix: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let bad = |why: &str| format!("URL {url:?}: {why} (expected http://host:port[/prefix])");
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only plain http:// is supported"))?;
        if rest.contains(['?', '#', '@']) || rest.contains(char::is_whitespace) {
            return Err(bad("no query, fragment, credentials or spaces"));
        }
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
        };
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// GET `prefix + path`; the body of a 200 answer. Connect timeout 3 s, read timeout 10 s.
    pub fn get(&self, path: &str) -> Result<String, String> {
        let url = format!("http://{}{}{}", self.authority(), self.prefix, path);
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {}: {e}", self.host))?;
        let mut last = None;
        let mut reachable = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(_) => {
                    reachable = Some(addr);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let addr = reachable.ok_or_else(|| match last {
            Some(e) => format!("{url}: unreachable: {e}"),
            None => format!("{url}: {} resolves to no address", self.host),
        })?;
        let req = Request::get(&format!("{}{}", self.prefix, path))
            .header("host", &self.authority())
            .header("accept", "application/json, text/plain");
        let r = send_once(addr, &req).map_err(|e| format!("{url}: {e}"))?;
        let body = r.text();
        if r.status != 200 {
            let head: String = body.chars().take(300).collect();
            return Err(format!("{url}: HTTP {}: {}", r.status, head.trim()));
        }
        Ok(body)
    }
}

/// Scrapes `/stats/prometheus` of one Envoy admin endpoint.
pub fn scrape_envoy(base_url: &str) -> Result<Scrape, String> {
    let url = HttpUrl::parse(base_url)?;
    Ok(Scrape::parse(&url.get("/stats/prometheus")?))
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// One comparison of a canary with the baseline.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// 5xx / responses; rollback when the canary's is more than `max_points` percentage points
    /// higher (one-sided pooled two-proportion z-test).
    ErrorRatio { max_points: f64 },
    /// NUM / DEN of two business counters, higher is better; rollback when the canary's drops by
    /// more than `max_drop_points` percentage points (one-sided pooled two-proportion z-test).
    Ratio {
        label: String,
        num: String,
        den: String,
        max_drop_points: f64,
    },
    /// SUM / COUNT (a `sum` rule per counted item); rollback when the canary's mean differs by
    /// more than `max_drift_percent` percent, either way (two-sided Welch test, normal approx.).
    Mean {
        label: String,
        sum: String,
        count: String,
        max_drift_percent: f64,
    },
}

impl Check {
    /// The name of the check in reports.
    pub fn label(&self) -> &str {
        match self {
            Check::ErrorRatio { .. } => "error_ratio",
            Check::Ratio { label, .. } | Check::Mean { label, .. } => label,
        }
    }

    /// The metric names this check reads.
    pub fn metrics(&self) -> Vec<String> {
        match self {
            Check::ErrorRatio { .. } => vec![RESPONSES.to_string()],
            Check::Ratio { num, den, .. } => vec![business_total(num), business_total(den)],
            Check::Mean { sum, count, .. } => vec![
                business_total(sum),
                business_squares(sum),
                business_total(count),
            ],
        }
    }

    /// The keys this check reads (what [`Totals::from_prometheus`] must query).
    pub fn keys(&self) -> Vec<String> {
        match self {
            Check::ErrorRatio { .. } => vec![RESPONSES.to_string(), RESPONSES_5XX.to_string()],
            _ => self.metrics(),
        }
    }
}

/// What the gate checks, for which versions.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub baseline: String,
    /// Empty: every other version with a non-zero series in the data.
    pub canaries: Vec<String>,
    pub min_samples: u64,
    pub alpha: f64,
    pub checks: Vec<Check>,
}

impl Policy {
    /// min 200 samples, alpha 0.05, error ratio +1 point, approval −0.3 point, AOV ±1 %.
    pub fn default_for(baseline: &str) -> Policy {
        let mut checks = vec![Check::ErrorRatio { max_points: 1.0 }];
        checks.extend(default_business_checks());
        Policy {
            baseline: baseline.to_string(),
            canaries: Vec::new(),
            min_samples: 200,
            alpha: 0.05,
            checks,
        }
    }

    /// Every key the checks read, deduplicated, in order.
    pub fn keys(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.checks
            .iter()
            .flat_map(Check::keys)
            .filter(|k| seen.insert(k.clone()))
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("alpha {} must be between 0 and 1", self.alpha));
        }
        if self.checks.is_empty() {
            return Err("no checks".into());
        }
        let mut labels = BTreeSet::new();
        for c in &self.checks {
            if !labels.insert(c.label()) {
                return Err(format!("two checks are named {:?}", c.label()));
            }
        }
        if self.canaries.contains(&self.baseline) {
            return Err(format!(
                "version {:?} is both the baseline and a canary",
                self.baseline
            ));
        }
        Ok(())
    }
}

fn default_business_checks() -> Vec<Check> {
    vec![
        Check::Ratio {
            label: "approval".into(),
            num: "auth_approved".into(),
            den: "payments".into(),
            max_drop_points: 0.3,
        },
        Check::Mean {
            label: "aov".into(),
            sum: "order_value".into(),
            count: "orders".into(),
            max_drift_percent: 1.0,
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// The outcome of one check for one canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Enough data, and no significant harmful change beyond the limit.
    Pass,
    /// A harmful change beyond the limit, significant at alpha.
    Rollback,
    /// A denominator below `min_samples`.
    Insufficient,
    /// A harmful change beyond the limit, not significant (yet).
    Inconclusive,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Rollback => "rollback",
            Outcome::Insufficient => "insufficient",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// The decision over every check and canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Promote,
    Rollback,
    Wait,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Promote => "PROMOTE",
            Verdict::Rollback => "ROLLBACK",
            Verdict::Wait => "WAIT",
        }
    }
}

/// What a row's values and delta are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Values are proportions (0..1); the delta is in percentage points.
    Proportion,
    /// Values are means (in the sum rule's scaled unit); the delta is in percent.
    Mean,
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Side {
    /// The denominator: responses, DEN or COUNT.
    pub n: f64,
    /// 5xx responses, NUM, or SUM.
    pub x: f64,
    /// The proportion or mean; `None` without data.
    pub value: Option<f64>,
    /// The sample standard deviation (means only).
    pub sd: Option<f64>,
}

/// One check for one canary.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub canary: String,
    pub check: String,
    /// `error_ratio`, `ratio` or `mean`.
    pub kind_name: &'static str,
    pub kind: Kind,
    /// The keys read: numerator (or sum), denominator (or count).
    pub numerator: String,
    pub denominator: String,
    pub baseline: Side,
    pub candidate: Side,
    /// Canary minus baseline: percentage points (proportions) or percent of the baseline mean.
    pub delta: Option<f64>,
    /// Canary minus baseline over its standard error.
    pub z: Option<f64>,
    /// The p-value of the test (see `test`).
    pub p: Option<f64>,
    /// `one-sided (higher is worse)`, `one-sided (lower is worse)` or `two-sided`.
    pub test: &'static str,
    /// The limit: points (error ratio, ratios) or percent (means), as configured (non-negative).
    pub threshold: f64,
    pub outcome: Outcome,
    /// Why, in words.
    pub note: String,
}

/// The gate's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub service: String,
    pub baseline: String,
    /// The canaries judged.
    pub canaries: Vec<String>,
    pub min_samples: u64,
    pub alpha: f64,
    pub rows: Vec<Row>,
    pub verdict: Verdict,
    /// One line per reason (the rows that decided the verdict).
    pub reasons: Vec<String>,
    /// Where the numbers came from (set by [`run`]; empty from [`evaluate`]).
    pub sources: Vec<String>,
    pub window: Option<String>,
    /// The exit code for WAIT (3 unless `--wait-exit`).
    pub wait_exit_code: i32,
}

/// Judges every canary against the baseline with every check of `policy`.
///
/// Errors (exit 1): an invalid policy, no data for the service, a missing baseline or named
/// canary, a metric a check reads missing from the data, or a "ratio" whose numerator exceeds
/// its denominator.
pub fn evaluate(totals: &Totals, policy: &Policy) -> Result<Report, String> {
    policy.validate()?;
    let service = totals.service();
    let versions = totals.versions();
    if versions.is_empty() {
        let others: Vec<&str> = totals.other_services.iter().map(String::as_str).collect();
        return Err(if others.is_empty() {
            format!("no sticky-canary series for service {service:?}")
        } else {
            format!(
                "no sticky-canary series for service {service:?} (services in the data: {})",
                others.join(", ")
            )
        });
    }
    for check in &policy.checks {
        for metric in check.metrics() {
            if !totals.has_metric(&metric) {
                return Err(missing_metric(totals, check, &metric));
            }
        }
    }
    if !versions.contains(&policy.baseline) {
        return Err(format!(
            "baseline version {:?} not in the data for service {service:?} (versions: {})",
            policy.baseline,
            versions.join(", ")
        ));
    }
    let canaries: Vec<String> = if policy.canaries.is_empty() {
        versions
            .iter()
            .filter(|v| **v != policy.baseline && totals.has_data(v))
            .cloned()
            .collect()
    } else {
        for c in &policy.canaries {
            if !versions.contains(c) {
                return Err(format!(
                    "canary version {c:?} not in the data for service {service:?} (versions: {})",
                    versions.join(", ")
                ));
            }
        }
        policy.canaries.clone()
    };
    let mut rows = Vec::new();
    for canary in &canaries {
        for check in &policy.checks {
            rows.push(judge(totals, policy, canary, check)?);
        }
    }
    let (verdict, reasons) = if canaries.is_empty() {
        (
            Verdict::Wait,
            vec![format!(
                "no version other than the baseline {:?} has data yet",
                policy.baseline
            )],
        )
    } else {
        verdict_of(&rows)
    };
    Ok(Report {
        service: service.to_string(),
        baseline: policy.baseline.clone(),
        canaries,
        min_samples: policy.min_samples,
        alpha: policy.alpha,
        rows,
        verdict,
        reasons,
        sources: Vec::new(),
        window: None,
        wait_exit_code: 3,
    })
}

fn missing_metric(totals: &Totals, check: &Check, metric: &str) -> String {
    let mut msg = format!(
        "check {:?}: metric {metric} not found for service {:?}",
        check.label(),
        totals.service()
    );
    if let Check::Mean { sum, .. } = check {
        if *metric == business_squares(sum) && totals.has_metric(&business_total(sum)) {
            msg.push_str(&format!(
                " ({sum:?} must be a `sum` rule: only sum rules publish squares)"
            ));
            return msg;
        }
    }
    if metric.starts_with("canary_business_") {
        msg.push_str(" (is there a business rule of that name in the plugin config?)");
    }
    msg
}

/// The verdict over rows: any rollback → ROLLBACK; else any insufficient or inconclusive →
/// WAIT; else PROMOTE. The reasons name the deciding rows.
pub fn verdict_of(rows: &[Row]) -> (Verdict, Vec<String>) {
    let pick = |o: Outcome| -> Vec<String> {
        rows.iter()
            .filter(|r| r.outcome == o)
            .map(|r| format!("{} {}: {}", r.canary, r.check, r.note))
            .collect()
    };
    let rollback = pick(Outcome::Rollback);
    if !rollback.is_empty() {
        return (Verdict::Rollback, rollback);
    }
    let mut wait = pick(Outcome::Insufficient);
    wait.extend(pick(Outcome::Inconclusive));
    if !wait.is_empty() {
        return (Verdict::Wait, wait);
    }
    let canaries: BTreeSet<&str> = rows.iter().map(|r| r.canary.as_str()).collect();
    (
        Verdict::Promote,
        vec![format!(
            "all {} checks passed for {}",
            rows.len(),
            canaries.into_iter().collect::<Vec<_>>().join(", ")
        )],
    )
}

fn judge(totals: &Totals, policy: &Policy, canary: &str, check: &Check) -> Result<Row, String> {
    let b = policy.baseline.as_str();
    match check {
        Check::ErrorRatio { max_points } => {
            let (num, den) = (RESPONSES_5XX, RESPONSES);
            Ok(proportion_row(
                policy,
                canary,
                check,
                (num, den),
                (totals.get(b, num), totals.get(b, den)),
                (totals.get(canary, num), totals.get(canary, den)),
                *max_points,
                false,
            ))
        }
        Check::Ratio {
            num,
            den,
            max_drop_points,
            ..
        } => {
            let (num, den) = (business_total(num), business_total(den));
            let mut sides = [(b, 0.0, 0.0), (canary, 0.0, 0.0)];
            for (version, x, n) in &mut sides {
                (*x, *n) = (totals.get(version, &num), totals.get(version, &den));
                // Prometheus' increase() extrapolates each series on its own: allow 1 % + 1.
                if *x > *n * 1.01 + 1.0 {
                    return Err(format!(
                        "check {:?}: {num} ({x}) exceeds {den} ({n}) for version {version:?}; \
                         the numerator must count a subset of the denominator",
                        check.label()
                    ));
                }
                *x = x.min(*n);
            }
            Ok(proportion_row(
                policy,
                canary,
                check,
                (&num, &den),
                (sides[0].1, sides[0].2),
                (sides[1].1, sides[1].2),
                *max_drop_points,
                true,
            ))
        }
        Check::Mean {
            sum,
            count,
            max_drift_percent,
            ..
        } => Ok(mean_row(
            totals,
            policy,
            canary,
            check,
            sum,
            count,
            *max_drift_percent,
        )),
    }
}

fn fmt_n(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

fn insufficient_note(policy: &Policy, what: &str, nb: f64, nc: f64) -> String {
    format!(
        "needs {} {what} per side, has {} (baseline) and {} (canary)",
        policy.min_samples,
        fmt_n(nb),
        fmt_n(nc)
    )
}

/// A change exactly at the limit is within it: floating point must not turn 94 % − 97 % into a
/// drop of 3.000000000000003 points beyond a 3-point limit.
const LIMIT_EPSILON: f64 = 1e-9;

/// The outcome rule shared by every check.
fn decide(beyond: bool, p: f64, alpha: f64) -> Outcome {
    match (beyond, p < alpha) {
        (true, true) => Outcome::Rollback,
        (true, false) => Outcome::Inconclusive,
        (false, _) => Outcome::Pass,
    }
}

#[allow(clippy::too_many_arguments)]
fn proportion_row(
    policy: &Policy,
    canary: &str,
    check: &Check,
    (num, den): (&str, &str),
    (xb, nb): (f64, f64),
    (xc, nc): (f64, f64),
    max_points: f64,
    higher_is_better: bool,
) -> Row {
    let ratio = |x: f64, n: f64| (n > 0.0).then(|| x / n);
    let (vb, vc) = (ratio(xb, nb), ratio(xc, nc));
    let delta = vb.zip(vc).map(|(b, c)| (c - b) * 100.0);
    let test = if higher_is_better {
        "one-sided (lower is worse)"
    } else {
        "one-sided (higher is worse)"
    };
    let mut row = Row {
        canary: canary.to_string(),
        check: check.label().to_string(),
        kind_name: if higher_is_better {
            "ratio"
        } else {
            "error_ratio"
        },
        kind: Kind::Proportion,
        numerator: num.to_string(),
        denominator: den.to_string(),
        baseline: Side {
            n: nb,
            x: xb,
            value: vb,
            sd: None,
        },
        candidate: Side {
            n: nc,
            x: xc,
            value: vc,
            sd: None,
        },
        delta,
        z: None,
        p: None,
        test,
        threshold: max_points,
        outcome: Outcome::Insufficient,
        note: String::new(),
    };
    let min = (policy.min_samples as f64).max(1.0);
    let (Some(d), true) = (delta, nb >= min && nc >= min) else {
        let what = match check {
            Check::Ratio { den, .. } => den.as_str(),
            _ => "responses",
        };
        row.note = insufficient_note(policy, what, nb, nc);
        return row;
    };
    let z = two_proportion_z(xc, nc, xb, nb);
    let p = if higher_is_better {
        normal_cdf(z)
    } else {
        normal_cdf(-z)
    };
    let beyond = if higher_is_better {
        d < -(max_points + LIMIT_EPSILON)
    } else {
        d > max_points + LIMIT_EPSILON
    };
    let outcome = decide(beyond, p, policy.alpha);
    let limit = if higher_is_better {
        format!("-{max_points}")
    } else {
        format!("+{max_points}")
    };
    let favourable = if higher_is_better { d > 0.0 } else { d < 0.0 };
    let change = format!("{d:+.2} points");
    row.note = note(outcome, &change, &limit, "points", favourable, p, policy);
    (row.z, row.p, row.outcome) = (Some(z), Some(p), outcome);
    row
}

fn note(
    outcome: Outcome,
    change: &str,
    limit: &str,
    unit: &str,
    favourable: bool,
    p: f64,
    policy: &Policy,
) -> String {
    let p = fmt_p(p);
    match outcome {
        Outcome::Rollback => {
            format!("{change}, beyond the limit {limit} {unit}, significant (p {p})")
        }
        Outcome::Inconclusive => format!(
            "{change}, beyond the limit {limit} {unit} but not significant (p {p}, alpha {})",
            policy.alpha
        ),
        _ if favourable => format!("{change}, favourable (p {p})"),
        _ => format!("{change}, within the limit {limit} {unit} (p {p})"),
    }
}

fn mean_row(
    totals: &Totals,
    policy: &Policy,
    canary: &str,
    check: &Check,
    sum: &str,
    count: &str,
    max_drift_percent: f64,
) -> Row {
    let (sum_key, sq_key, count_key) = (
        business_total(sum),
        business_squares(sum),
        business_total(count),
    );
    let side = |v: &str| {
        let (s, q, n) = (
            totals.get(v, &sum_key),
            totals.get(v, &sq_key),
            totals.get(v, &count_key),
        );
        let mv = mean_and_variance(s, q, n);
        let side = Side {
            n,
            x: s,
            value: if n > 0.0 { Some(s / n) } else { None },
            sd: mv.map(|(_, var)| var.sqrt()),
        };
        (side, mv)
    };
    let (bs, bmv) = side(&policy.baseline);
    let (cs, cmv) = side(canary);
    let delta = bs.value.zip(cs.value).map(|(b, c)| drift_percent(b, c));
    let mut row = Row {
        canary: canary.to_string(),
        check: check.label().to_string(),
        kind_name: "mean",
        kind: Kind::Mean,
        numerator: sum_key,
        denominator: count_key,
        baseline: bs,
        candidate: cs,
        delta,
        z: None,
        p: None,
        test: "two-sided",
        threshold: max_drift_percent,
        outcome: Outcome::Insufficient,
        note: String::new(),
    };
    let min = (policy.min_samples as f64).max(2.0);
    let (nb, nc) = (row.baseline.n, row.candidate.n);
    let (Some(d), Some((mb, vb)), Some((mc, vc)), true) = (delta, bmv, cmv, nb >= min && nc >= min)
    else {
        row.note = insufficient_note(policy, count, nb, nc);
        return row;
    };
    let z = welch_z(mc, vc, nc, mb, vb, nb);
    let p = 2.0 * normal_cdf(-z.abs());
    let outcome = decide(d.abs() > max_drift_percent + LIMIT_EPSILON, p, policy.alpha);
    let limit = format!("±{max_drift_percent}");
    row.note = note(
        outcome,
        &format!("{d:+.2} %"),
        &limit,
        "%",
        false,
        p,
        policy,
    );
    (row.z, row.p, row.outcome) = (Some(z), Some(p), outcome);
    row
}

/// (c − b) / b × 100; 0 when both are 0, ±∞ when only b is.
fn drift_percent(b: f64, c: f64) -> f64 {
    if b != 0.0 {
        (c - b) / b * 100.0
    } else {
        signed_ratio(c - b, 0.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Report rendering
// ---------------------------------------------------------------------------------------------

fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        "<1e-4".into()
    } else {
        format!("{p:.4}")
    }
}

fn fmt_signed(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+inf" } else { "-inf" }.into()
    } else {
        format!("{v:+.2}")
    }
}

fn fmt_value(kind: Kind, v: Option<f64>) -> String {
    match (kind, v) {
        (_, None) => "-".into(),
        (Kind::Proportion, Some(v)) => format!("{:.2}%", v * 100.0),
        (Kind::Mean, Some(v)) => format!("{v:.2}"),
    }
}

/// A finite number as JSON: an integer when whole, null when not finite.
fn num(v: f64) -> Value {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, num)
}

impl Row {
    fn threshold_text(&self) -> String {
        match self.kind_name {
            "error_ratio" => format!("+{:.2}pt", self.threshold),
            "ratio" => format!("-{:.2}pt", self.threshold),
            _ => format!("±{:.2}%", self.threshold),
        }
    }

    fn delta_text(&self) -> String {
        match (self.delta, self.kind) {
            (None, _) => "-".into(),
            (Some(d), Kind::Proportion) => format!("{}pt", fmt_signed(d)),
            (Some(d), Kind::Mean) => format!("{}%", fmt_signed(d)),
        }
    }

    fn to_json(&self) -> Value {
        let side = |s: &Side| {
            let mut v = json!({"n": num(s.n), "x": num(s.x), "value": opt(s.value)});
            if self.kind == Kind::Mean {
                v["sd"] = opt(s.sd);
            }
            v
        };
        json!({
            "version": self.canary,
            "check": self.check,
            "kind": self.kind_name,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "baseline": side(&self.baseline),
            "canary": side(&self.candidate),
            "delta": opt(self.delta),
            "delta_unit": match self.kind { Kind::Proportion => "points", Kind::Mean => "percent" },
            "z": opt(self.z),
            "p": opt(self.p),
            "test": self.test,
            "threshold": self.threshold,
            "outcome": self.outcome.as_str(),
            "note": self.note,
        })
    }
}

impl Report {
    /// 0 PROMOTE, 2 ROLLBACK, 3 WAIT (or `wait_exit_code`).
    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::Promote => 0,
            Verdict::Rollback => 2,
            Verdict::Wait => self.wait_exit_code,
        }
    }

    /// A human-readable table (one row per check per canary), sample sizes and the verdict.
    pub fn table(&self) -> String {
        let mut out = format!(
            "sticky-canary gate: service {}, baseline {}, alpha {}, min samples {}\n",
            self.service, self.baseline, self.alpha, self.min_samples
        );
        if !self.sources.is_empty() {
            let window = self
                .window
                .as_ref()
                .map_or(String::new(), |w| format!(" (last {w})"));
            out.push_str(&format!("from {}{window}\n", self.sources.join(", ")));
        }
        if !self.rows.is_empty() {
            let header = [
                "check", "n base", "n canary", "baseline", "canary", "delta", "z", "p", "limit",
                "outcome",
            ];
            let head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
            let cells: Vec<Vec<String>> = self
                .rows
                .iter()
                .map(|r| {
                    vec![
                        r.check.clone(),
                        fmt_n(r.baseline.n),
                        fmt_n(r.candidate.n),
                        fmt_value(r.kind, r.baseline.value),
                        fmt_value(r.kind, r.candidate.value),
                        r.delta_text(),
                        r.z.map_or("-".into(), fmt_signed),
                        r.p.map_or("-".into(), fmt_p),
                        r.threshold_text(),
                        match r.outcome {
                            Outcome::Rollback => "ROLLBACK".into(),
                            o => o.as_str().into(),
                        },
                    ]
                })
                .collect();
            // One width per column across every canary's block, so the blocks line up.
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    cells
                        .iter()
                        .chain([&head])
                        .map(|c| c[i].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            // Indent 2, two spaces between columns; one when that would not fit 100 columns.
            let two = 2 + widths.iter().sum::<usize>() + 2 * (widths.len() - 1) <= 100;
            let sep = if two { "  " } else { " " };
            let line = |row: &[String]| {
                let mut line = String::from("  ");
                for (i, cell) in row.iter().enumerate() {
                    let pad = " ".repeat(widths[i] - cell.chars().count());
                    if i > 0 {
                        line.push_str(sep);
                    }
                    // Text columns left-aligned, numbers right-aligned.
                    if i == 0 || i == header.len() - 1 {
                        line.push_str(cell);
                        line.push_str(&pad);
                    } else {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
                format!("{}\n", line.trim_end())
            };
            for canary in &self.canaries {
                out.push_str(&format!("\n{canary} vs {}\n", self.baseline));
                out.push_str(&line(&head));
                for (r, c) in self.rows.iter().zip(&cells) {
                    if r.canary == *canary {
                        out.push_str(&line(c));
                    }
                }
            }
            out.push_str(
                "\nn: responses (error_ratio), the denominator (ratios) or the count (means); \
                 means are in\nthe sum rule's scaled unit (cents for a scale-2 money rule)\n",
            );
        }
        out.push_str(&format!(
            "\nverdict: {} (exit {})",
            self.verdict.as_str(),
            self.exit_code()
        ));
        if self.verdict == Verdict::Wait {
            out.push_str(", not enough data yet");
        }
        out.push('\n');
        for r in &self.reasons {
            out.push_str(&format!("  {r}\n"));
        }
        out
    }

    /// The inputs, every check (numbers as numbers), the verdict and the exit code.
    pub fn to_json(&self) -> Value {
        json!({
            "service": self.service,
            "baseline": self.baseline,
            "canaries": self.canaries,
            "min_samples": self.min_samples,
            "alpha": self.alpha,
            "sources": self.sources,
            "window": self.window,
            "checks": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "verdict": self.verdict.as_str(),
            "reasons": self.reasons,
            "exit_code": self.exit_code(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// `sticky-canary-gate --help`.
pub const HELP: &str = "\
sticky-canary-gate: PROMOTE, ROLLBACK or WAIT for a sticky-canary rollout, from the per-version
counters the filter publishes. Every canary version is compared with the baseline version.

USAGE
  sticky-canary-gate --service NAME --envoy URL [--envoy URL]... [OPTIONS]
  sticky-canary-gate --service NAME --prometheus URL [--window DURATION] [OPTIONS]

SOURCE (one kind; URLs are http://host:port[/prefix], connect timeout 3 s)
  --envoy URL          Envoy admin endpoint; repeatable. Reads URL/stats/prometheus of each and
                       sums every series across proxies (counts since each proxy started).
  --prometheus URL     Prometheus; instant queries sum by (version) (...{service=\"NAME\"}).
  --window DURATION    with --prometheus: only the last DURATION, via increase(...[DURATION])
                       (e.g. 30m, 2h). Without it: the counters' current totals.

VERSIONS
  --service NAME       the `service` label (required)
  --baseline VERSION   the version to compare with (default: stable)
  --canary VERSION     repeatable (default: every other version with a non-zero series)

CHECKS (NUM, DEN, SUM, COUNT are business rule names: canary_business_<name>_total)
  --error-ratio MAX_POINTS           5xx / responses may rise by at most MAX_POINTS percentage
                                     points (default 1.0). One-sided pooled two-proportion z-test.
  --ratio LABEL=NUM/DEN:MAX_DROP     NUM / DEN, higher is better, may drop by at most MAX_DROP
                                     points. One-sided pooled two-proportion z-test. Repeatable.
  --mean LABEL=SUM/COUNT:MAX_DRIFT   SUM / COUNT (SUM a `sum` rule; variance from its
                                     _squares_total) may drift by at most MAX_DRIFT percent, either
                                     way. Two-sided Welch test, normal approximation. Repeatable.
  Without any --ratio or --mean:     --ratio approval=auth_approved/payments:0.3
                                     --mean aov=order_value/orders:1
  --min-samples N      each side's denominator (responses, DEN, COUNT) must reach N before a
                       check judges (default 200)
  --alpha A            significance level of every test (default 0.05)

OUTCOMES
  rollback      a harmful change beyond the limit, significant at alpha
  inconclusive  a harmful change beyond the limit, not significant yet
  insufficient  a denominator below --min-samples
  pass          otherwise (a significant change within the limit passes)

OUTPUT
  --json               one JSON document (inputs, every check, verdict, exit code)
  --wait-exit CODE     exit code for WAIT (default 3), for runners that only know pass/fail
  -h, --help           this text

EXIT STATUS
  0 PROMOTE   every check passed for every canary
  2 ROLLBACK  some check is `rollback`
  3 WAIT      not enough data yet: some check is `insufficient` or `inconclusive`
  1           usage error, unreachable source, or a metric missing from the data
";

/// Where the numbers come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Envoy admin base URLs, summed.
    Envoy(Vec<String>),
    Prometheus {
        url: String,
        window: Option<String>,
    },
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub service: String,
    pub source: Source,
    pub policy: Policy,
    pub json: bool,
    pub wait_exit_code: i32,
}

/// Whether the arguments ask for `--help`.
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "-h" || a == "--help")
}

fn threshold(spec: &str, s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{spec:?}: limit {s:?} is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!(
            "{spec:?}: limit {s:?} must be a non-negative number"
        ));
    }
    Ok(v)
}

fn rule_name(spec: &str, s: &str) -> Result<String, String> {
    let ok = s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{spec:?}: {s:?} is not a business rule name ([a-z][a-z0-9_]*, at most 64)"
        ))
    }
}

/// Parses `LABEL=A/B:LIMIT` into (label, a, b, limit).
fn parse_spec(flag: &str, spec: &str) -> Result<(String, String, String, f64), String> {
    let shape = || format!("{flag} {spec:?}: expected LABEL=NAME/NAME:LIMIT");
    let (label, rest) = spec.split_once('=').ok_or_else(shape)?;
    let (names, limit) = rest.rsplit_once(':').ok_or_else(shape)?;
    let (a, b) = names.split_once('/').ok_or_else(shape)?;
    let label_ok = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !label_ok {
        return Err(format!(
            "{flag} {spec:?}: label {label:?} must be letters, digits, _ . - (at most 64)"
        ));
    }
    Ok((
        label.to_string(),
        rule_name(spec, a)?,
        rule_name(spec, b)?,
        threshold(spec, limit)?,
    ))
}

/// Parses `--ratio LABEL=NUM/DEN:MAX_DROP_POINTS`.
pub fn parse_ratio(spec: &str) -> Result<Check, String> {
    let (label, num, den, max_drop_points) = parse_spec("--ratio", spec)?;
    Ok(Check::Ratio {
        label,
        num,
        den,
        max_drop_points,
    })
}

/// Parses `--mean LABEL=SUM/COUNT:MAX_DRIFT_PERCENT`.
pub fn parse_mean(spec: &str) -> Result<Check, String> {
    let (label, sum, count, max_drift_percent) = parse_spec("--mean", spec)?;
    Ok(Check::Mean {
        label,
        sum,
        count,
        max_drift_percent,
    })
}

/// Every flag that takes a value (`--json` and `--help` take none).
pub const VALUE_FLAGS: [&str; 12] = [
    "--service",
    "--envoy",
    "--prometheus",
    "--window",
    "--baseline",
    "--canary",
    "--min-samples",
    "--alpha",
    "--error-ratio",
    "--ratio",
    "--mean",
    "--wait-exit",
];

/// Parses the command line (without the program name). `--help` is not handled here (see
/// [`wants_help`]). Every error is a usage error.
pub fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut service = None;
    let mut envoys = Vec::new();
    let mut prometheus: Option<String> = None;
    let mut window = None;
    let mut policy = Policy::default_for("stable");
    policy.checks = Vec::new();
    let mut error_ratio = 1.0;
    let mut business = Vec::new();
    let mut json = false;
    let mut wait_exit_code = 3;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if flag == "--json" {
            if inline.is_some() {
                return Err("--json takes no value".into());
            }
            json = true;
            continue;
        }

        if !VALUE_FLAGS.contains(&flag) {
            return Err(format!("unknown argument {arg:?} (see --help)"));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))?,
        };
        let once = |slot: &Option<String>| match slot {
            Some(_) => Err(format!("{flag} given twice")),
            None => Ok(Some(value.clone())),
        };
        match flag {
            "--service" => service = once(&service)?,
            "--envoy" => envoys.push(value),
            "--prometheus" => prometheus = once(&prometheus)?,
            "--window" => window = once(&window)?,
            "--baseline" => policy.baseline = value,
            "--canary" => policy.canaries.push(value),
            "--min-samples" => {
                policy.min_samples = value
                    .parse()
                    .map_err(|_| format!("--min-samples {value:?}: expected a whole number"))?
            }
            "--alpha" => {
                policy.alpha = value
                    .parse()
                    .ok()
                    .filter(|a: &f64| *a > 0.0 && *a < 1.0)
                    .ok_or_else(|| format!("--alpha {value:?}: expected a number in (0, 1)"))?
            }
            "--error-ratio" => error_ratio = threshold("--error-ratio", &value)?,
            "--ratio" => business.push(parse_ratio(&value)?),
            "--mean" => business.push(parse_mean(&value)?),
            _ => {
                wait_exit_code = value
                    .parse()
                    .ok()
                    .filter(|c| (0..=255).contains(c))
                    .ok_or_else(|| format!("--wait-exit {value:?}: expected 0..255"))?
            }
        }
    }
    let service = service
        .filter(|s| !s.is_empty())
        .ok_or("--service NAME is required")?;
    let source = match (envoys.is_empty(), prometheus) {
        (false, Some(_)) => return Err("give --envoy or --prometheus, not both".into()),
        (true, None) => return Err("a source is required: --envoy URL or --prometheus URL".into()),
        (false, None) => {
            if window.is_some() {
                return Err("--window needs --prometheus (Envoy counters have no history)".into());
            }
            for u in &envoys {
                HttpUrl::parse(u)?;
            }
            Source::Envoy(envoys)
        }
        (true, Some(url)) => {
            HttpUrl::parse(&url)?;
            if let Some(w) = &window {
                check_duration(w)?;
            }
            Source::Prometheus { url, window }
        }
    };
    if policy.baseline.is_empty() || policy.canaries.iter().any(String::is_empty) {
        return Err("version names cannot be empty".into());
    }
    let mut seen = BTreeSet::new();
    if let Some(c) = policy.canaries.iter().find(|c| !seen.insert(*c)) {
        return Err(format!("--canary {c:?} given twice"));
    }
    if business.is_empty() {
        business = default_business_checks();
    }
    policy.checks.push(Check::ErrorRatio {
        max_points: error_ratio,
    });
    policy.checks.extend(business);
    policy.validate()?;
    Ok(Config {
        service,
        source,
        policy,
        json,
        wait_exit_code,
    })
}

/// Reads the source, evaluates the policy. Errors are exit-1 errors.
pub fn run(config: &Config) -> Result<Report, String> {
    let (totals, sources, window) = match &config.source {
        Source::Envoy(urls) => {
            let scrapes = urls
                .iter()
                .map(|u| scrape_envoy(u))
                .collect::<Result<Vec<_>, _>>()?;
            let sources = urls.iter().map(|u| format!("envoy {u}")).collect();
            (
                Totals::from_scrapes(&config.service, &scrapes),
                sources,
                None,
            )
        }
        Source::Prometheus { url, window } => {
            let keys = config.policy.keys();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let totals = Totals::from_prometheus(url, &config.service, window.as_deref(), &keys)?;
            (totals, vec![format!("prometheus {url}")], window.clone())
        }
    };
    let mut report = evaluate(&totals, &config.policy)?;
    report.sources = sources;
    report.window = window;
    report.wait_exit_code = config.wait_exit_code;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Handler, Response, Upstream};
    use std::sync::{Arc, Mutex};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    /// Counters of a payment service: responses (with 5xx), payments, approvals.
    fn payments(version: &str, n: f64, approved: f64) -> Vec<(String, String, f64)> {
        vec![
            (RESPONSES.into(), version.into(), n),
            (RESPONSES_5XX.into(), version.into(), 0.0),
            (business_total("payments"), version.into(), n),
            (business_total("auth_approved"), version.into(), approved),
        ]
    }

    /// Sum and sum of squares of n values with this mean and sample standard deviation.
    fn sums(n: f64, mean: f64, sd: f64) -> (f64, f64) {
        let s = n * mean;
        (s, (n - 1.0) * sd * sd + s * s / n)
    }

    /// Counters of an order service: orders, order_value and its squares.
    fn orders(version: &str, n: f64, mean: f64, sd: f64) -> Vec<(String, String, f64)> {
        let (s, q) = sums(n, mean, sd);
        vec![
            (RESPONSES.into(), version.into(), n),
            (RESPONSES_5XX.into(), version.into(), 0.0),
            (business_total("orders"), version.into(), n),
            (business_total("order_value"), version.into(), s),
            (business_squares("order_value"), version.into(), q),
        ]
    }

    fn totals(parts: &[Vec<(String, String, f64)>]) -> Totals {
        let series: Vec<(&str, &str, f64)> = parts
            .iter()
            .flatten()
            .map(|(k, v, x)| (k.as_str(), v.as_str(), *x))
            .collect();
        Totals::from_series("checkout", &series)
    }

    fn policy(checks: Vec<Check>) -> Policy {
        Policy {
            checks,
            ..Policy::default_for("stable")
        }
    }

    fn approval() -> Check {
        parse_ratio("approval=auth_approved/payments:0.3").unwrap()
    }

    fn aov() -> Check {
        parse_mean("aov=order_value/orders:1").unwrap()
    }

    /// The single row of a one-check, one-canary evaluation.
    fn one_row(t: &Totals, check: Check) -> Row {
        let r = evaluate(t, &policy(vec![check])).unwrap();
        assert_eq!(r.rows.len(), 1, "{r:?}");
        r.rows[0].clone()
    }

    // ---- statistics ---------------------------------------------------------------------------

    #[test]
    fn normal_cdf_known_values() {
        // Reference values: 0.5 * erfc(-z / sqrt 2) in double precision (Python math.erfc).
        let cases = [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (1.96, 0.975_002_104_851_779_5),
            (-3.0, 0.001_349_898_031_630_095_7),
            (-1.644_853_627, 0.05),
            (2.575_829_3, 0.995),
            (5.0, 0.999_999_713_348_428_1),
        ];
        for (z, want) in cases {
            let got = normal_cdf(z);
            assert!(close(got, want, 1e-7), "Φ({z}) = {got}, want {want}");
        }
        // Tails keep their relative accuracy (these are p-values).
        for (z, want) in [
            (-6.0, 9.865_876_450_377_012e-10),
            (-8.0, 6.220_960_574_271_819e-16),
        ] {
            let got = normal_cdf(z);
            assert!(((got - want) / want).abs() < 2e-7, "Φ({z}) = {got:e}");
        }
        for z in [-4.0, -2.2, -0.3, 0.7, 1.5, 3.3] {
            assert!(
                close(normal_cdf(z) + normal_cdf(-z), 1.0, 1e-12),
                "symmetry at {z}"
            );
        }
        assert_eq!(normal_cdf(-40.0), 0.0);
        assert_eq!(normal_cdf(40.0), 1.0);
        assert!(normal_cdf(f64::NAN).is_nan());
    }

    #[test]
    fn two_proportion_z_textbook() {
        // 520/1000 vs 480/1000: pooled p = 0.5, SE = sqrt(0.25 · 0.002) = 0.0223607, z = 1.78885.
        assert!(close(
            two_proportion_z(520.0, 1000.0, 480.0, 1000.0),
            1.788_854_4,
            1e-6
        ));
        assert!(close(
            two_proportion_z(480.0, 1000.0, 520.0, 1000.0),
            -1.788_854_4,
            1e-6
        ));
        // z² equals Pearson's chi-square (no continuity correction) of the 2×2 table.
        for (x1, n1, x2, n2) in [
            (15.0f64, 80.0, 30.0, 95.0),
            (1880.0, 2000.0, 1940.0, 2000.0),
        ] {
            let (a, b, c, d) = (x1, n1 - x1, x2, n2 - x2);
            let n = a + b + c + d;
            let chi2 = n * (a * d - b * c).powi(2) / ((a + b) * (c + d) * (a + c) * (b + d));
            let z = two_proportion_z(x1, n1, x2, n2);
            assert!(close(z * z, chi2, 1e-9 * chi2), "z² {} vs χ² {chi2}", z * z);
        }
        // 94 % vs 97 % at n = 2000 each.
        assert!(close(
            two_proportion_z(1880.0, 2000.0, 1940.0, 2000.0),
            -4.576_287_6,
            1e-6
        ));
        // No variance at all: 0, not NaN.
        assert_eq!(two_proportion_z(0.0, 500.0, 0.0, 300.0), 0.0);
        assert_eq!(two_proportion_z(500.0, 500.0, 300.0, 300.0), 0.0);
    }

    #[test]
    fn welch_known_example() {
        // Wikipedia "Welch's t-test", example 1: t = -2.46, ν ≈ 25.0.
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        // As the filter publishes them: sum and sum of squares.
        let sq = |xs: &[f64]| xs.iter().map(|x| x * x).sum::<f64>();
        let (ma, va) = mean_and_variance(a.iter().sum(), sq(&a), 15.0).unwrap();
        let (mb, vb) = mean_and_variance(b.iter().sum(), sq(&b), 15.0).unwrap();
        assert!(close(ma, 20.82, 1e-9) && close(mb, 22.986_666_666_7, 1e-9));
        assert!(close(va, 7.867_428_571_4, 1e-8), "{va}");
        assert!(close(vb, 3.812_666_666_7, 1e-8), "{vb}");
        let t = welch_z(ma, va, 15.0, mb, vb, 15.0);
        assert!(close(t, -2.455_356_398, 1e-8), "{t}");
        assert!(close(welch_df(va, 15.0, vb, 15.0), 24.988_529_29, 1e-6));
        assert_eq!(mean_and_variance(10.0, 100.0, 1.0), None);
        // Rounding never makes a variance negative.
        let (_, v) = mean_and_variance(3.0e9, 9.0e15 - 1.0, 1000.0).unwrap();
        assert!(v >= 0.0);
        assert_eq!(welch_z(5.0, 0.0, 10.0, 5.0, 0.0, 10.0), 0.0);
        assert_eq!(welch_z(6.0, 0.0, 10.0, 5.0, 0.0, 10.0), f64::INFINITY);
    }

    // ---- checks -------------------------------------------------------------------------------

    #[test]
    fn approval_drop_significance_grows_with_samples() {
        // The same 3-point drop (97 % → 94 %) at growing sample sizes.
        let at = |n: f64| {
            let t = totals(&[
                payments("stable", n, 0.97 * n),
                payments("canary", n, 0.94 * n),
            ]);
            one_row(&t, approval())
        };
        let r = at(50.0);
        assert_eq!(r.outcome, Outcome::Insufficient);
        assert_eq!((r.z, r.p), (None, None), "no test below min samples");
        assert!(
            close(r.delta.unwrap(), -3.0, 1e-9),
            "the delta is still shown"
        );
        // n = 200: z = -1.447, p = 0.074: beyond the limit, not significant.
        let r = at(200.0);
        assert_eq!(r.outcome, Outcome::Inconclusive, "{}", r.note);
        assert!(close(r.p.unwrap(), 0.073_927_57, 1e-6), "{:?}", r.p);
        // n = 300: z = -1.772, p = 0.038.
        let r = at(300.0);
        assert_eq!(r.outcome, Outcome::Rollback, "{}", r.note);
        assert!(close(r.z.unwrap(), -1.772_388_57, 1e-6));
        // n = 2000: z = -4.58, p = 2.4e-6.
        let r = at(2000.0);
        assert_eq!(r.outcome, Outcome::Rollback);
        assert!(close(r.p.unwrap(), 2.366_5e-6, 1e-9), "{:?}", r.p);
        assert_eq!(r.test, "one-sided (lower is worse)");
    }

    #[test]
    fn small_drop_at_300_is_inconclusive() {
        // 97 % → 96 %, n = 300 each: 1 point > 0.3, but p = 0.253.
        let t = totals(&[
            payments("stable", 300.0, 291.0),
            payments("canary", 300.0, 288.0),
        ]);
        let r = one_row(&t, approval());
        assert_eq!(r.outcome, Outcome::Inconclusive);
        assert!(close(r.p.unwrap(), 0.252_571_4, 1e-6));
    }

    #[test]
    fn fifteen_transactions_are_insufficient_two_hundred_are_judged() {
        // 15 of 15 approved vs 10 of 15: a 33-point drop, but 15 transactions judge nothing.
        let t = totals(&[
            payments("stable", 15.0, 15.0),
            payments("canary", 15.0, 10.0),
        ]);
        let r = evaluate(&t, &policy(vec![approval()])).unwrap();
        assert_eq!(r.rows[0].outcome, Outcome::Insufficient);
        assert_eq!(r.verdict, Verdict::Wait);
        assert!(
            r.rows[0].note.contains("needs 200 payments"),
            "{}",
            r.rows[0].note
        );
        // One side short is enough to wait.
        let t = totals(&[
            payments("stable", 5000.0, 4850.0),
            payments("canary", 199.0, 100.0),
        ]);
        assert_eq!(one_row(&t, approval()).outcome, Outcome::Insufficient);
        // At exactly 200 each the same collapse is judged.
        let t = totals(&[
            payments("stable", 200.0, 200.0),
            payments("canary", 200.0, 133.0),
        ]);
        assert_eq!(one_row(&t, approval()).outcome, Outcome::Rollback);
    }

    #[test]
    fn a_change_exactly_at_the_limit_is_within_it() {
        // 94 % − 97 % is -3.000000000000003 in floating point; the limit is 3 points.
        let t = totals(&[
            payments("stable", 3000.0, 2910.0),
            payments("canary", 3000.0, 2820.0),
        ]);
        let r = one_row(
            &t,
            parse_ratio("approval=auth_approved/payments:3").unwrap(),
        );
        assert!(r.p.unwrap() < 1e-6);
        assert_eq!(r.outcome, Outcome::Pass, "{}", r.note);
        let r = one_row(
            &t,
            parse_ratio("approval=auth_approved/payments:2.99").unwrap(),
        );
        assert_eq!(r.outcome, Outcome::Rollback);
    }

    #[test]
    fn favourable_ratio_change_passes() {
        let t = totals(&[
            payments("stable", 2000.0, 1880.0),
            payments("canary", 2000.0, 1980.0),
        ]);
        let r = one_row(&t, approval());
        assert_eq!(r.outcome, Outcome::Pass);
        assert!(r.delta.unwrap() > 4.9 && r.p.unwrap() > 0.99);
        assert!(r.note.ends_with("favourable (p 1.0000)"), "{}", r.note);
    }

    #[test]
    fn significant_ratio_drop_within_limit_passes() {
        // 0.2-point drop with a million payments each: significant, but within 0.3.
        let n = 1.0e6;
        let t = totals(&[
            payments("stable", n, 0.970 * n),
            payments("canary", n, 0.968 * n),
        ]);
        let r = one_row(&t, approval());
        assert!(r.p.unwrap() < 1e-6);
        assert_eq!(r.outcome, Outcome::Pass);
        assert_eq!(
            r.note,
            "-0.20 points, within the limit -0.3 points (p <1e-4)"
        );
    }

    #[test]
    fn error_ratio_rise_rolls_back_fall_passes() {
        let t = |b5: f64, c5: f64| {
            Totals::from_series(
                "checkout",
                &[
                    (RESPONSES, "stable", 2000.0),
                    (RESPONSES_5XX, "stable", b5),
                    (RESPONSES, "canary", 2000.0),
                    (RESPONSES_5XX, "canary", c5),
                ],
            )
        };
        let check = Check::ErrorRatio { max_points: 1.0 };
        let r = one_row(&t(10.0, 60.0), check.clone()); // 0.5 % → 3 %
        assert_eq!(r.outcome, Outcome::Rollback);
        assert!(close(r.delta.unwrap(), 2.5, 1e-9));
        assert_eq!(r.test, "one-sided (higher is worse)");
        assert_eq!(
            one_row(&t(60.0, 10.0), check.clone()).outcome,
            Outcome::Pass
        );
        // 0.5 % → 1.2 %: significant-ish but within one point.
        assert_eq!(
            one_row(&t(10.0, 24.0), check.clone()).outcome,
            Outcome::Pass
        );
        // No errors anywhere.
        let r = one_row(&t(0.0, 0.0), check);
        assert_eq!((r.outcome, r.z), (Outcome::Pass, Some(0.0)));
    }

    #[test]
    fn order_value_drift() {
        let at = |n: f64, mean_c: f64, sd: f64| {
            let t = totals(&[
                orders("stable", n, 2000.0, sd),
                orders("canary", n, mean_c, sd),
            ]);
            one_row(&t, aov())
        };
        // 3 % down, sd 100 cents, 1000 orders each: z ≈ -13.4.
        let r = at(1000.0, 1940.0, 100.0);
        assert_eq!(r.outcome, Outcome::Rollback);
        assert!(close(r.delta.unwrap(), -3.0, 1e-9));
        assert!(close(r.z.unwrap(), -60.0 / 20f64.sqrt(), 1e-6), "{:?}", r.z);
        assert!(close(r.baseline.sd.unwrap(), 100.0, 1e-6));
        // 3 % UP is a bug too: money drift is two-sided.
        let r = at(1000.0, 2060.0, 100.0);
        assert_eq!(r.outcome, Outcome::Rollback);
        assert_eq!(r.test, "two-sided");
        // 0.2 %: within the limit, z ≈ 0.894, p ≈ 0.371.
        let r = at(1000.0, 2004.0, 100.0);
        assert_eq!(r.outcome, Outcome::Pass);
        assert!(close(r.p.unwrap(), 0.371_093, 1e-5), "{:?}", r.p);
        // 0.5 % with 100 000 orders: significant, within the limit.
        let r = at(1.0e5, 2010.0, 100.0);
        assert!(r.p.unwrap() < 1e-9);
        assert_eq!(r.outcome, Outcome::Pass);
        // 3 % with a wide spread (sd 20 €) at 200 orders: z = 0.3, not significant.
        let r = at(200.0, 2060.0, 2000.0);
        assert_eq!(r.outcome, Outcome::Inconclusive);
        // Below min samples.
        assert_eq!(at(150.0, 2600.0, 1.0).outcome, Outcome::Insufficient);
    }

    #[test]
    fn missing_values_count_as_zero_in_the_mean() {
        // 1000 orders, 990 of them worth 2000 cents, 10 with no valid value (0 added): the
        // mean is S / orders = 1980, and the variance sees the ten zeros.
        let s = 990.0 * 2000.0;
        let q = 990.0 * 2000.0 * 2000.0;
        let (m, v) = mean_and_variance(s, q, 1000.0).unwrap();
        let direct_var = (990.0 * 20.0f64.powi(2) + 10.0 * 1980.0f64.powi(2)) / 999.0;
        assert!(
            close(m, 1980.0, 1e-9) && close(v, direct_var, 1e-6),
            "{m} {v}"
        );
    }

    // ---- verdict, report ----------------------------------------------------------------------

    #[test]
    fn verdict_aggregation_and_exit_codes() {
        let n = 2000.0;
        let good = || payments("good", n, 0.97 * n);
        let bad = || payments("bad", n, 0.90 * n);
        let young = || payments("young", 20.0, 19.0);
        let base = || payments("stable", n, 0.97 * n);
        let p = policy(vec![Check::ErrorRatio { max_points: 1.0 }, approval()]);

        let r = evaluate(&totals(&[base(), good()]), &p).unwrap();
        assert_eq!((r.verdict, r.exit_code()), (Verdict::Promote, 0));
        assert_eq!(r.canaries, ["good"]);
        assert_eq!(r.rows.len(), 2);

        let r = evaluate(&totals(&[base(), good(), young()]), &p).unwrap();
        assert_eq!((r.verdict, r.exit_code()), (Verdict::Wait, 3));
        assert!(
            r.reasons.iter().all(|x| x.starts_with("young ")),
            "{:?}",
            r.reasons
        );

        let r = evaluate(&totals(&[base(), good(), young(), bad()]), &p).unwrap();
        assert_eq!((r.verdict, r.exit_code()), (Verdict::Rollback, 2));
        assert_eq!(r.reasons.len(), 1);
        assert!(
            r.reasons[0].starts_with("bad approval: -7.00 points"),
            "{:?}",
            r.reasons
        );
        assert_eq!(r.canaries, ["bad", "good", "young"]);
        assert_eq!(r.rows.len(), 6);

        // Explicit canaries restrict the judgement.
        let mut only_good = p.clone();
        only_good.canaries = vec!["good".into()];
        let r = evaluate(&totals(&[base(), good(), bad()]), &only_good).unwrap();
        assert_eq!(r.verdict, Verdict::Promote);

        // --wait-exit.
        let mut r = evaluate(&totals(&[base(), young()]), &p).unwrap();
        r.wait_exit_code = 0;
        assert_eq!((r.verdict, r.exit_code()), (Verdict::Wait, 0));
    }

    #[test]
    fn default_canaries_skip_versions_without_data() {
        // "retired" has every series at 0: not a canary by default.
        let t = totals(&[
            payments("stable", 2000.0, 1940.0),
            payments("canary", 2000.0, 1940.0),
            payments("retired", 0.0, 0.0),
        ]);
        assert_eq!(t.versions(), ["canary", "retired", "stable"]);
        let r = evaluate(&t, &policy(vec![approval()])).unwrap();
        assert_eq!(r.canaries, ["canary"]);
        // Only the baseline has data: WAIT, not an error.
        let t = totals(&[
            payments("stable", 2000.0, 1940.0),
            payments("canary", 0.0, 0.0),
        ]);
        let r = evaluate(&t, &policy(vec![approval()])).unwrap();
        assert_eq!((r.verdict, r.rows.len()), (Verdict::Wait, 0));
        assert!(r.reasons[0].contains("no version other than the baseline"));
    }

    #[test]
    fn evaluation_errors_name_what_is_wrong() {
        let t = totals(&[
            payments("stable", 2000.0, 1940.0),
            payments("canary", 2000.0, 1900.0),
        ]);
        let err = |p: &Policy| evaluate(&t, p).unwrap_err();
        let e = err(&policy(vec![parse_ratio("x=refunds/payments:1").unwrap()]));
        assert!(e.contains("canary_business_refunds_total"), "{e}");
        let e = err(&policy(vec![aov()]));
        assert!(e.contains("canary_business_order_value_total"), "{e}");
        let mut p = policy(vec![approval()]);
        p.baseline = "stabel".into();
        let e = err(&p);
        assert!(
            e.contains("\"stabel\"") && e.contains("canary, stable"),
            "{e}"
        );
        let mut p = policy(vec![approval()]);
        p.canaries = vec!["v3".into()];
        assert!(err(&p).contains("\"v3\""));
        // A counter used as the SUM of a mean: no squares.
        let e = err(&policy(vec![
            parse_mean("m=auth_approved/payments:1").unwrap()
        ]));
        assert!(e.contains("squares") && e.contains("`sum` rule"), "{e}");
        // A numerator that is not a subset of the denominator.
        let e = err(&policy(vec![
            parse_ratio("r=payments/auth_approved:1").unwrap()
        ]));
        assert!(e.contains("exceeds"), "{e}");
        // The wrong service.
        let e = evaluate(&Totals::new("nope"), &policy(vec![approval()])).unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
        // Duplicate labels.
        assert!(err(&policy(vec![approval(), approval()])).contains("two checks"));
    }

    fn sample_report() -> Report {
        let mut parts = vec![
            payments("stable", 2000.0, 1940.0),
            payments("canary", 2000.0, 1880.0),
        ];
        parts.push(orders("stable", 1000.0, 2000.0, 100.0)[2..].to_vec());
        parts.push(orders("canary", 1000.0, 2060.0, 100.0)[2..].to_vec());
        let mut r = evaluate(&totals(&parts), &Policy::default_for("stable")).unwrap();
        r.sources = vec!["envoy http://127.0.0.1:9901".into()];
        r
    }

    #[test]
    fn json_shape() {
        let r = sample_report();
        let j = r.to_json();
        assert_eq!(j["verdict"], "ROLLBACK");
        assert_eq!(j["exit_code"], 2);
        assert_eq!(j["service"], "checkout");
        assert_eq!(j["baseline"], "stable");
        assert_eq!(j["canaries"], json!(["canary"]));
        assert_eq!(j["min_samples"], 200);
        assert_eq!(j["alpha"], 0.05);
        assert_eq!(j["sources"][0], "envoy http://127.0.0.1:9901");
        assert_eq!(j["window"], Value::Null);
        let checks = j["checks"].as_array().unwrap();
        let names: Vec<&str> = checks
            .iter()
            .map(|c| c["check"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["error_ratio", "approval", "aov"]);
        let a = &checks[1];
        assert_eq!(a["kind"], "ratio");
        assert_eq!(a["outcome"], "rollback");
        assert_eq!(a["numerator"], "canary_business_auth_approved_total");
        assert_eq!(a["baseline"]["n"], 2000);
        assert_eq!(a["version"], "canary");
        assert_eq!(a["canary"]["x"], 1880);
        assert!(close(a["canary"]["value"].as_f64().unwrap(), 0.94, 1e-12));
        assert!(close(a["delta"].as_f64().unwrap(), -3.0, 1e-9));
        assert_eq!(a["delta_unit"], "points");
        assert!(a["z"].is_f64() && a["p"].is_f64());
        assert_eq!(a["threshold"], 0.3);
        let m = &checks[2];
        assert_eq!(
            (m["kind"].as_str(), m["delta_unit"].as_str()),
            (Some("mean"), Some("percent"))
        );
        assert!(close(m["baseline"]["sd"].as_f64().unwrap(), 100.0, 1e-6));
        assert_eq!(m["outcome"], "rollback");
        assert_eq!(j["reasons"].as_array().unwrap().len(), 2);
        // Insufficient rows have null statistics, not strings.
        let t = totals(&[payments("stable", 10.0, 9.0), payments("canary", 10.0, 9.0)]);
        let j = evaluate(&t, &policy(vec![approval()])).unwrap().to_json();
        assert_eq!(j["checks"][0]["z"], Value::Null);
        assert_eq!(j["checks"][0]["outcome"], "insufficient");
        assert_eq!(
            (j["verdict"].as_str(), j["exit_code"].as_i64()),
            (Some("WAIT"), Some(3))
        );
    }

    #[test]
    fn table_is_aligned_and_fits_100_columns() {
        let r = sample_report();
        let text = r.table();
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "too wide: {line:?}");
        }
        let lines: Vec<&str> = text.lines().collect();
        let head = lines.iter().position(|l| *l == "canary vs stable").unwrap();
        let rows = &lines[head + 1..head + 5];
        assert!(rows[0].starts_with("  check"), "{text}");
        assert!(rows[1].starts_with("  error_ratio"), "{text}");
        // Right-aligned numeric columns: "outcome" starts at the same column in every row.
        let col = rows[0].find("outcome").unwrap(); // ASCII header: bytes are columns
        for row in &rows[1..] {
            let chars: Vec<char> = row.chars().collect();
            assert!(
                chars.len() > col && chars[col - 2..col] == [' ', ' '],
                "{row:?}"
            );
            assert_ne!(chars[col], ' ', "{row:?}");
        }
        assert!(
            rows[2].contains("97.00%") && rows[2].contains("94.00%"),
            "{}",
            rows[2]
        );
        assert!(rows[2].contains("-3.00pt") && rows[2].contains("-0.30pt"));
        assert!(rows[2].trim_end().ends_with("ROLLBACK"));
        assert!(rows[3].contains("+3.00%") && rows[3].contains("±1.00%"));
        assert!(text.contains("verdict: ROLLBACK (exit 2)"), "{text}");
        assert!(text.contains("  canary approval: -3.00 points, beyond the limit -0.3 points"));
        assert!(text.contains("from envoy http://127.0.0.1:9901"));
        // WAIT says why.
        let t = totals(&[payments("stable", 10.0, 9.0), payments("canary", 10.0, 9.0)]);
        let text = evaluate(&t, &policy(vec![approval()])).unwrap().table();
        assert!(
            text.contains("verdict: WAIT (exit 3), not enough data yet"),
            "{text}"
        );
        assert!(text.contains("needs 200 payments per side, has 10 (baseline) and 10 (canary)"));
        // Several canaries: one block each, same column positions.
        let t = totals(&[
            payments("stable", 2000.0, 1940.0),
            payments("canary", 2000.0, 1940.0),
            payments("a-much-longer-version-name", 300.0, 291.0),
        ]);
        let text = evaluate(&t, &policy(vec![approval()])).unwrap().table();
        let lines: Vec<&str> = text.lines().collect();
        let at = |l: &str| lines.iter().position(|x| *x == l).unwrap();
        let (a, c) = (
            at("a-much-longer-version-name vs stable"),
            at("canary vs stable"),
        );
        assert_eq!(lines[a + 1], lines[c + 1], "same header");
        assert_eq!(lines[a + 2].len(), lines[c + 2].len(), "{text}");
    }

    // ---- sources ------------------------------------------------------------------------------

    const PROXY_A: &str = "\
# TYPE canary_responses_total counter
canary_responses_total{service=\"checkout\",version=\"stable\",code_class=\"2xx\"} 900
canary_responses_total{service=\"checkout\",version=\"stable\",code_class=\"5xx\"} 10
canary_responses_total{service=\"checkout\",version=\"canary\",code_class=\"2xx\"} 90
canary_responses_total{service=\"checkout\",version=\"canary\",code_class=\"5xx\"} 5
canary_business_orders_total{service=\"checkout\",version=\"stable\"} 400
canary_business_orders_total{service=\"search\",version=\"stable\"} 7777
envoy_cluster_upstream_rq_total{envoy_cluster_name=\"stable\"} 123
";
    const PROXY_B: &str = "\
canary_responses_total{service=\"checkout\",version=\"stable\",code_class=\"2xx\"} 100
canary_responses_total{service=\"checkout\",version=\"stable\",code_class=\"5xx\"} 0
canary_responses_total{service=\"checkout\",version=\"canary\",code_class=\"2xx\"} 10
canary_responses_total{service=\"checkout\",version=\"canary\",code_class=\"5xx\"} 1
canary_business_orders_total{service=\"checkout\",version=\"stable\"} 100
canary_business_orders_total{service=\"checkout\",version=\"canary\"} 60
";

    #[test]
    fn from_scrapes_sums_proxies() {
        let t = Totals::from_scrapes(
            "checkout",
            &[Scrape::parse(PROXY_A), Scrape::parse(PROXY_B)],
        );
        assert_eq!(t.versions(), ["canary", "stable"]);
        assert_eq!(t.get("stable", RESPONSES), 1010.0);
        assert_eq!(t.get("stable", RESPONSES_5XX), 10.0);
        assert_eq!(t.get("canary", RESPONSES), 106.0);
        assert_eq!(t.get("canary", RESPONSES_5XX), 6.0);
        assert_eq!(t.get("stable", &business_total("orders")), 500.0);
        assert_eq!(t.get("canary", &business_total("orders")), 60.0);
        assert!(t.has_metric("canary_business_orders_total"));
        assert!(!t.has_metric("envoy_cluster_upstream_rq_total"));
        // The other service is not mixed in, but is named when ours is absent.
        let e = evaluate(
            &Totals::from_scrapes("chekout", &[Scrape::parse(PROXY_A)]),
            &policy(vec![Check::ErrorRatio { max_points: 1.0 }]),
        )
        .unwrap_err();
        assert!(e.contains("checkout, search"), "{e}");
    }

    #[test]
    fn prometheus_queries_and_results() {
        assert_eq!(
            prometheus_query("checkout", RESPONSES_5XX, Some("30m")),
            "sum by (version) (increase(canary_responses_total{service=\"checkout\",\
             code_class=\"5xx\"}[30m]))"
        );
        assert_eq!(
            prometheus_query("checkout", "canary_business_orders_total", None),
            "sum by (version) (canary_business_orders_total{service=\"checkout\"})"
        );
        let mut t = Totals::new("checkout");
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"version":"canary"},"value":[1700000000.1,"250.5"]},
            {"metric":{"version":"stable"},"value":[1700000000.1,"4000"]},
            {"metric":{},"value":[1700000000.1,"9"]},
            {"metric":{"version":"odd"},"value":[1700000000.1,"NaN"]}]}}"#;
        t.add_prometheus_result("canary_business_orders_total", body)
            .unwrap();
        assert_eq!(t.get("canary", "canary_business_orders_total"), 250.5);
        assert_eq!(t.get("stable", "canary_business_orders_total"), 4000.0);
        assert_eq!(t.versions(), ["canary", "stable"]);
        let err = t
            .add_prometheus_result(
                "x",
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#,
            )
            .unwrap_err();
        assert!(err.contains("parse error at char 4"), "{err}");
        assert!(t.add_prometheus_result("x", "<html>").is_err());
        assert!(t
            .add_prometheus_result(
                "x",
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#
            )
            .is_err());
        assert_eq!(
            percent_encode("sum by (v) (a{s=\"x\"}[5m])"),
            "sum%20by%20%28v%29%20%28a%7Bs%3D%22x%22%7D%5B5m%5D%29"
        );
    }

    #[test]
    fn urls_and_durations() {
        let u = HttpUrl::parse("http://127.0.0.1:9901").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 9901, "")
        );
        let u = HttpUrl::parse("http://prom.example:9090/prometheus/").unwrap();
        assert_eq!((u.port, u.prefix.as_str()), (9090, "/prometheus"));
        let u = HttpUrl::parse("http://[::1]:9901").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority()),
            ("::1", "[::1]:9901".to_string())
        );
        assert_eq!(HttpUrl::parse("http://envoy").unwrap().port, 80);
        for bad in [
            "https://x:1",
            "127.0.0.1:9901",
            "http://:9901",
            "http://x:port",
            "http://x:70000",
            "http://u:p@x:1",
            "http://x:1/?q=1",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        for ok in ["30m", "2h", "1h30m", "500ms", "7d", "1w"] {
            assert!(check_duration(ok).is_ok(), "{ok}");
        }
        for bad in ["", "30", "m", "30 m", "30min", "-5m", "1.5h"] {
            assert!(check_duration(bad).is_err(), "{bad:?}");
        }
    }

    /// A fake Prometheus under `/prom`: answers the query containing a selector with that
    /// selector's vector elements (none for an unknown selector), and records every query.
    fn fake_prometheus(answers: Vec<(String, String)>) -> (Upstream, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler: Handler = Arc::new(move |req: &Request| {
            let Some(q) = req.path.strip_prefix("/prom/api/v1/query?query=") else {
                return Response::new(404).body("no such path");
            };
            let q = percent_decode(q);
            log.lock().unwrap().push(q.clone());
            let series = answers
                .iter()
                .find(|(selector, _)| q.contains(selector.as_str()))
                .map_or("", |(_, r)| r.as_str());
            Response::new(200).body(format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}"#
            ))
        });
        (
            Upstream::start_with("prometheus", None, handler).unwrap(),
            seen,
        )
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn run_against_fake_prometheus() {
        let v = |s: f64, c: f64| -> String {
            format!(
                r#"{{"metric":{{"version":"stable"}},"value":[1,"{s}"]}},
                   {{"metric":{{"version":"canary"}},"value":[1,"{c}"]}}"#
            )
        };
        let sel = |name: &str, extra: &str| format!("{name}{{service=\"checkout\"{extra}}}");
        let answers = vec![
            (sel(RESPONSES, ""), v(3000.0, 3000.0)),
            (sel(RESPONSES, ",code_class=\"5xx\""), v(3.0, 4.0)),
            (sel("canary_business_payments_total", ""), v(2000.0, 2000.0)),
            (
                sel("canary_business_auth_approved_total", ""),
                v(1940.0, 1939.0),
            ),
        ];
        let (prom, seen) = fake_prometheus(answers);
        let cli = format!(
            "--service checkout --prometheus http://{}/prom --window 30m \
             --ratio approval=auth_approved/payments:0.3",
            prom.addr()
        );
        let config = parse_args(&args(&cli)).unwrap();
        let r = run(&config).unwrap();
        assert_eq!(r.verdict, Verdict::Promote, "{}", r.table());
        assert_eq!(r.window.as_deref(), Some("30m"));
        let seen = seen.lock().unwrap().clone(); // not held: the fake logs every query
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen
            .iter()
            .all(|q| q.contains("increase(") && q.ends_with("[30m]))")));
        assert!(seen.contains(
            &"sum by (version) (increase(canary_business_payments_total{service=\"checkout\"}[30m]))"
                .to_string()
        ));
        // A metric Prometheus does not know: exit-1 error naming it.
        let cli = format!(
            "--service checkout --prometheus http://{}/prom --mean aov=order_value/orders:1",
            prom.addr()
        );
        let e = run(&parse_args(&args(&cli)).unwrap()).unwrap_err();
        assert!(e.contains("canary_business_order_value_total"), "{e}");
        // A wrong path prefix: the HTTP status is reported.
        let cli = format!(
            "--service checkout --prometheus http://{}/nope",
            prom.addr()
        );
        let e = run(&parse_args(&args(&cli)).unwrap()).unwrap_err();
        assert!(e.contains("HTTP 404"), "{e}");
    }

    #[test]
    fn run_against_fake_envoys_and_unreachable_source() {
        let admin = |text: &'static str| -> Upstream {
            let handler: Handler = Arc::new(move |req: &Request| {
                if req.path == "/stats/prometheus" {
                    Response::new(200).body(text)
                } else {
                    Response::new(404)
                }
            });
            Upstream::start_with("admin", None, handler).unwrap()
        };
        let (a, b) = (admin(PROXY_A), admin(PROXY_B));
        let cli = format!(
            "--service checkout --envoy http://{} --envoy http://{} --min-samples 50 \
             --ratio r=orders/orders:1",
            a.addr(),
            b.addr()
        );
        let r = run(&parse_args(&args(&cli)).unwrap()).unwrap();
        let err = &r.rows[0];
        assert_eq!(err.check, "error_ratio");
        assert_eq!((err.baseline.n, err.candidate.n), (1010.0, 106.0));
        assert_eq!((err.baseline.x, err.candidate.x), (10.0, 6.0));
        // 1 % vs 5.7 %, 106 responses: significant and beyond one point.
        assert_eq!(err.outcome, Outcome::Rollback, "{}", r.table());
        assert_eq!(r.exit_code(), 2);
        assert_eq!(r.sources.len(), 2);

        // Nothing listens on a port we just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cli = format!("--service checkout --envoy http://127.0.0.1:{port}");
        let e = run(&parse_args(&args(&cli)).unwrap()).unwrap_err();
        assert!(
            e.contains(&format!("http://127.0.0.1:{port}/stats/prometheus")),
            "{e}"
        );
        assert!(e.contains("unreachable"), "{e}");
    }

    // ---- command line -------------------------------------------------------------------------

    #[test]
    fn check_specs() {
        assert_eq!(
            parse_ratio("approval=auth_approved/payments:0.3").unwrap(),
            Check::Ratio {
                label: "approval".into(),
                num: "auth_approved".into(),
                den: "payments".into(),
                max_drop_points: 0.3
            }
        );
        assert_eq!(
            parse_mean("tax_per_order=tax/orders:1").unwrap(),
            Check::Mean {
                label: "tax_per_order".into(),
                sum: "tax".into(),
                count: "orders".into(),
                max_drift_percent: 1.0
            }
        );
        for bad in [
            "",
            "approval",
            "approval=auth_approved/payments",
            "approval=auth_approved:0.3",
            "=auth_approved/payments:0.3",
            "approval=Auth/payments:0.3",
            "approval=auth_approved/9p:0.3",
            "approval=auth_approved/:0.3",
            "approval=auth_approved/payments:-1",
            "approval=auth_approved/payments:NaN",
            "approval=auth_approved/payments:inf",
            "approval=auth_approved/payments:x",
            "appr oval=auth_approved/payments:0.3",
        ] {
            assert!(parse_ratio(bad).is_err(), "{bad:?}");
            assert!(parse_mean(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_args_defaults_and_options() {
        let c = parse_args(&args("--service checkout --envoy http://127.0.0.1:9901")).unwrap();
        assert_eq!(c.service, "checkout");
        assert_eq!(
            c.source,
            Source::Envoy(vec!["http://127.0.0.1:9901".into()])
        );
        assert_eq!(c.policy, Policy::default_for("stable"));
        assert!(!c.json);
        assert_eq!(c.wait_exit_code, 3);

        let c = parse_args(&args(
            "--service=checkout --prometheus http://prom:9090 --window 1h --baseline v1 \
             --canary v2 --canary=v3 --min-samples 500 --alpha 0.01 --error-ratio 0.5 \
             --mean aov=order_value/orders:2 --mean tax_per_order=tax/orders:1 --json \
             --wait-exit 0",
        ))
        .unwrap();
        assert_eq!(
            c.source,
            Source::Prometheus {
                url: "http://prom:9090".into(),
                window: Some("1h".into())
            }
        );
        assert_eq!(c.policy.baseline, "v1");
        assert_eq!(c.policy.canaries, ["v2", "v3"]);
        assert_eq!((c.policy.min_samples, c.policy.alpha), (500, 0.01));
        let labels: Vec<&str> = c.policy.checks.iter().map(Check::label).collect();
        // Only --mean given: no default approval ratio.
        assert_eq!(labels, ["error_ratio", "aov", "tax_per_order"]);
        assert_eq!(c.policy.checks[0], Check::ErrorRatio { max_points: 0.5 });
        assert!(c.json);
        assert_eq!(c.wait_exit_code, 0);
        assert_eq!(
            c.policy.keys(),
            [
                RESPONSES,
                RESPONSES_5XX,
                "canary_business_order_value_total",
                "canary_business_order_value_squares_total",
                "canary_business_orders_total",
                "canary_business_tax_total",
                "canary_business_tax_squares_total",
            ]
        );
    }

    #[test]
    fn parse_args_usage_errors() {
        let env = "--service s --envoy http://127.0.0.1:9901";
        for (bad, says) in [
            ("--envoy http://127.0.0.1:9901", "--service"),
            ("--service s", "source is required"),
            (
                "--service s --envoy http://a:1 --prometheus http://b:2",
                "not both",
            ),
            (
                "--service s --envoy http://a:1 --window 5m",
                "--window needs --prometheus",
            ),
            ("--service s --prometheus http://b:2 --window 5", "--window"),
            ("--service s --prometheus https://b:2", "http://"),
            ("--service s --service t --envoy http://a:1", "twice"),
            (&format!("{env} --min-samples -3"), "--min-samples"),
            (&format!("{env} --alpha 1"), "--alpha"),
            (&format!("{env} --alpha 0"), "--alpha"),
            (&format!("{env} --error-ratio -1"), "--error-ratio"),
            (&format!("{env} --ratio approval"), "LABEL=NAME/NAME:LIMIT"),
            (
                &format!("{env} --mean aov=order_value/orders"),
                "LABEL=NAME/NAME:LIMIT",
            ),
            (
                &format!("{env} --ratio a=x/y:1 --mean a=x/y:1"),
                "two checks",
            ),
            (
                &format!("{env} --canary stable"),
                "both the baseline and a canary",
            ),
            (&format!("{env} --canary v2 --canary v2"), "twice"),
            (&format!("{env} --bogus"), "unknown argument"),
            (&format!("{env} --canary"), "needs a value"),
            (&format!("{env} --json=yes"), "no value"),
            (&format!("{env} --wait-exit 300"), "--wait-exit"),
        ] {
            let e = parse_args(&args(bad)).expect_err(bad);
            assert!(e.contains(says), "{bad:?} → {e:?}, expected {says:?}");
        }
    }

    #[test]
    fn help_documents_every_flag() {
        for flag in VALUE_FLAGS.iter().chain(&["--json", "--help"]) {
            assert!(HELP.contains(flag), "{flag} undocumented");
        }
        assert!(HELP.lines().all(|l| l.chars().count() <= 100));
        assert!(wants_help(&args("--service x -h")));
        assert!(!wants_help(&args("--service x")));
    }
}
