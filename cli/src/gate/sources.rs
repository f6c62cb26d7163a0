//! Where the gate's numbers come from: per-version [`Totals`] from Envoy scrapes
//! ([`Totals::from_scrapes`]), from Prometheus instant queries ([`Totals::from_prometheus`]) or
//! from literal numbers ([`Totals::from_series`]).
//!
//! Keys are metric names from the core's catalogue (`sticky_canary::metrics::names`), or
//! `name{label="value"}` for one extra label ([`responses_5xx`]).

use crate::gate::http::{Client, HttpUrl};
use crate::prom::Scrape;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use sticky_canary::brake::pool::answer::{self, AnswerError};
use sticky_canary::brake::pool::{escape_string, percent_encode};
use sticky_canary::metrics::names;

/// The key of a version's 5xx responses: `canary_responses_total{code_class="5xx"}`.
pub fn responses_5xx() -> String {
    format!("{}{{code_class=\"5xx\"}}", names::RESPONSES)
}

/// The key of a version's gRPC responses with status `code`:
/// `canary_grpc_responses_total{grpc_status="13"}`.
pub fn grpc_status(code: u8) -> String {
    format!("{}{{grpc_status=\"{code}\"}}", names::GRPC_RESPONSES)
}

/// The metric name of a key (`name` or `name{label="value"}`).
fn metric_of(key: &str) -> &str {
    key.split('{').next().unwrap_or(key)
}

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
    /// (e.g. `("canary_business_orders_total", "canary", 250.0)`, or [`responses_5xx`]).
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
            if !sample.name.starts_with(names::PREFIX) || !sample.value.is_finite() {
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
                    let key = format!("{}{{{label}=\"{}\"}}", sample.name, escape_string(value));
                    t.add(version, &key, sample.value);
                }
            }
        }
        t
    }

    /// Instant queries against Prometheus at `url`, one per key in `keys`:
    /// `sum by (version) (KEY{service="S"})`, or with a window
    /// `sum by (version) (increase(KEY{service="S"}[WINDOW]))`. Each answer is read up to
    /// `max_answer_bytes` (`--max-answer-bytes`) and no further, then by the core's one reader
    /// of Prometheus answers ([`answer::read`]).
    ///
    /// A key Prometheus has no series of is simply absent ([`Totals::has_metric`] false): the
    /// gate decides what that means, an error for a key a check reads, "unknown" for an
    /// optional one such as the rollback guard's `canary_writes_total`
    /// ([`crate::gate::Policy::optional_keys`]).
    ///
    /// An answer that is too large, not JSON, of the wrong shape or with a value that cannot be
    /// a count is an error starting with "bad answer from Prometheus"; Prometheus's own
    /// `status: error` is reported as what Prometheus said.
    pub fn from_prometheus(
        client: &Client,
        url: &HttpUrl,
        service: &str,
        window: Option<&str>,
        keys: &[&str],
        max_answer_bytes: u64,
    ) -> Result<Totals, String> {
        if let Some(w) = window {
            check_window(w)?;
        }
        let limit = usize::try_from(max_answer_bytes).unwrap_or(usize::MAX);
        let mut t = Totals::new(service);
        for key in keys {
            let query = prometheus_query(service, key, window);
            let path = format!("/api/v1/query?query={}", percent_encode(&query));
            let body = client
                .get_bounded(url, &path, max_answer_bytes)?
                .map_err(|too_large| {
                    format!(
                        "bad answer from Prometheus {}: {too_large} (--max-answer-bytes); \
                         query {query}",
                        url.display()
                    )
                })?;
            t.add_prometheus_result(key, &body, limit)
                .map_err(|e| match e {
                    AnswerError::Status(said) => format!(
                        "Prometheus {}, query {query}: status \"error\": {said}",
                        url.display()
                    ),
                    e => format!(
                        "bad answer from Prometheus {}: {e}; query {query}",
                        url.display()
                    ),
                })?;
        }
        Ok(t)
    }

    /// Adds the vector result of a Prometheus `/api/v1/query` answer (`body`, at most `limit`
    /// bytes) to `key`, one element per version; elements without a `version` label are
    /// skipped. Nothing is added unless the whole answer reads ([`answer::read`]: JSON, a
    /// vector, every value a count).
    pub fn add_prometheus_result(
        &mut self,
        key: &str,
        body: &[u8],
        limit: usize,
    ) -> Result<(), AnswerError> {
        for sample in answer::read(body, limit)? {
            if let Some(version) = sample.label("version") {
                self.add(version, key, sample.value);
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

    /// The values of `metric` for `version` per value of one extra `label` (keys
    /// `metric{label="value"}`, from scrapes), sorted by value; empty without such series.
    pub fn labelled(&self, version: &str, metric: &str, label: &str) -> Vec<(String, f64)> {
        let prefix = format!("{metric}{{{label}=\"");
        self.values
            .get(version)
            .into_iter()
            .flatten()
            .filter_map(|(key, v)| {
                let value = key.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                Some((value.replace("\\\"", "\"").replace("\\\\", "\\"), *v))
            })
            .collect()
    }

    /// Whether any version has a series of metric `name`.
    pub fn has_metric(&self, name: &str) -> bool {
        self.metrics.contains(name)
    }

    /// Whether `version` has a non-zero value in any series.
    pub fn has_data(&self, version: &str) -> bool {
        self.values
            .get(version)
            .is_some_and(|m| m.values().any(|v| *v != 0.0))
    }

    /// Services other than ours seen in the data (scrapes only), for error messages.
    pub fn other_services(&self) -> impl Iterator<Item = &str> {
        self.other_services.iter().map(String::as_str)
    }
}

/// Scrapes `/stats/prometheus` of one Envoy admin endpoint.
pub fn scrape_envoy(client: &Client, url: &HttpUrl) -> Result<Scrape, String> {
    Ok(Scrape::parse(&client.get(url, "/stats/prometheus")?))
}

/// The PromQL query for `key` of `service`.
pub fn prometheus_query(service: &str, key: &str, window: Option<&str>) -> String {
    let (name, extra) = match key.split_once('{') {
        Some((n, rest)) => (n, rest.trim_end_matches('}')),
        None => (key, ""),
    };
    let mut matchers = format!("service=\"{}\"", escape_string(service));
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

/// The terms of a Prometheus duration: one or more `<digits><unit>`, units ms s m h d w y.
fn duration_terms(w: &str) -> Option<Vec<(&str, &'static str)>> {
    let mut terms = Vec::new();
    let mut rest = w;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let (number, after) = rest.split_at(digits);
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| after.starts_with(u))?;
        terms.push((number, unit));
        rest = &after[unit.len()..];
    }
    Some(terms)
}

/// Checks a `--window`: a Prometheus duration (`30m`, `2h`, `1h30m`), passed to PromQL as is.
pub fn check_window(w: &str) -> Result<(), String> {
    match duration_terms(w) {
        Some(_) => Ok(()),
        None => Err(format!(
            "--window {w:?}: expected a duration such as 30m, 2h or 1h30m"
        )),
    }
}

/// A duration in the Prometheus syntax (`500ms`, `10s`, `1m30s`); `None` when malformed, zero
/// or too long to represent.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut millis: u64 = 0;
    for (number, unit) in duration_terms(s)? {
        let n: u64 = number.parse().ok()?;
        let scale: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => 31_536_000_000, // y: 365 days, as in Prometheus
        };
        millis = millis.checked_add(n.checked_mul(scale)?)?;
    }
    (millis > 0).then(|| Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY_A: &str = include_str!("../../tests/data/proxy-a.prom");
    const PROXY_B: &str = include_str!("../../tests/data/proxy-b.prom");

    #[test]
    fn from_scrapes_sums_proxies() {
        let t = Totals::from_scrapes(
            "checkout",
            &[Scrape::parse(PROXY_A), Scrape::parse(PROXY_B)],
        );
        assert_eq!(t.versions(), ["canary", "stable"]);
        assert_eq!(t.get("stable", names::RESPONSES), 1010.0);
        assert_eq!(t.get("stable", &responses_5xx()), 10.0);
        assert_eq!(t.get("canary", names::RESPONSES), 106.0);
        assert_eq!(t.get("canary", &responses_5xx()), 6.0);
        assert_eq!(t.get("stable", &names::business_total("orders")), 500.0);
        assert_eq!(t.get("canary", &names::business_total("orders")), 60.0);
        assert!(t.has_metric("canary_business_orders_total"));
        assert!(!t.has_metric("envoy_cluster_upstream_rq_total"));
        // The other service is not mixed in, but is recorded for error messages.
        let t = Totals::from_scrapes("chekout", &[Scrape::parse(PROXY_A)]);
        assert_eq!(
            t.other_services().collect::<Vec<_>>(),
            ["checkout", "search"]
        );
        assert!(t.versions().is_empty());
    }

    #[test]
    fn prometheus_queries_and_results() {
        assert_eq!(
            prometheus_query("checkout", &responses_5xx(), Some("30m")),
            "sum by (version) (increase(canary_responses_total{service=\"checkout\",\
             code_class=\"5xx\"}[30m]))"
        );
        assert_eq!(
            prometheus_query("checkout", "canary_business_orders_total", None),
            "sum by (version) (canary_business_orders_total{service=\"checkout\"})"
        );
        let mut t = Totals::new("checkout");
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"version":"canary"},"value":[1700000000.1,"250.5"]},
            {"metric":{"version":"stable"},"value":[1700000000.1,"4000"]},
            {"metric":{},"value":[1700000000.1,"9"]}]}}"#;
        t.add_prometheus_result("canary_business_orders_total", body, 1 << 20)
            .unwrap();
        assert_eq!(t.get("canary", "canary_business_orders_total"), 250.5);
        assert_eq!(t.get("stable", "canary_business_orders_total"), 4000.0);
        assert_eq!(t.versions(), ["canary", "stable"]);
        let err = t
            .add_prometheus_result(
                "x",
                br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#,
                1 << 20,
            )
            .unwrap_err();
        assert_eq!(
            err,
            AnswerError::Status("bad_data: parse error at char 4".into())
        );
        assert!(matches!(
            t.add_prometheus_result("x", b"<html>", 1 << 20),
            Err(AnswerError::Json(_))
        ));
        assert!(matches!(
            t.add_prometheus_result(
                "x",
                br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                1 << 20
            ),
            Err(AnswerError::Shape(_))
        ));
        assert!(matches!(
            t.add_prometheus_result("x", body, 100),
            Err(AnswerError::TooLarge(_, 100))
        ));
        // A value that cannot be a count spoils the whole answer: nothing of it is added.
        for bad in ["NaN", "+Inf", "-Inf", "-1", "12abc"] {
            let mut t = Totals::new("checkout");
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[
                {{"metric":{{"version":"stable"}},"value":[1,"4000"]}},
                {{"metric":{{"version":"canary"}},"value":[1,"{bad}"]}}]}}}}"#
            );
            assert_eq!(
                t.add_prometheus_result("x", body.as_bytes(), 1 << 20),
                Err(AnswerError::Value(bad.into())),
                "{bad}"
            );
            assert!(t.versions().is_empty(), "{bad}");
        }
        assert_eq!(
            percent_encode("sum by (v) (a{s=\"x\"}[5m])"),
            "sum%20by%20%28v%29%20%28a%7Bs%3D%22x%22%7D%5B5m%5D%29"
        );
    }

    #[test]
    fn durations() {
        for ok in ["30m", "2h", "1h30m", "500ms", "7d", "1w"] {
            assert!(check_window(ok).is_ok(), "{ok}");
        }
        for bad in ["", "30", "m", "30 m", "30min", "-5m", "1.5h"] {
            assert!(check_window(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        for bad in [
            "0s",
            "",
            "10",
            "1.5s",
            "99999999999999999999y",
            "600000000000y",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
