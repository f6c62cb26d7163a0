//! Metric naming and the metric catalogue.
//!
//! Proxy-wasm metrics have no labels: Envoy derives them from the metric name with `stats_tags`
//! regexes. Names are encoded as Istio's own `extraStatTags` convention expects,
//!
//! ```text
//! service=.=checkout;.;version=.=canary;.;reason=.=hash;.;canary_requests_total
//! ```
//!
//! and for each tag `T`, the regex `(T=\.=(.*?);\.;)` (exactly what Istio's bootstrap renders for
//! an extra stat tag) removes `T=.=value;.;` from the name and makes it the label `T="value"`.
//! What is left, `wasmcustom.canary_requests_total`, is printed by `/stats/prometheus` as
//! `canary_requests_total{service="checkout",version="canary",reason="hash"}`.
//!
//! The [`Catalogue`] lists every series for every version, so that all of them exist (at zero)
//! from configure time on; the wasm shell defines each once and keeps the ids in the same layout.

use crate::counting::business::{RuleKind, SkipReason};
use crate::plan::Plan;
use crate::routing::decision::Reason;
use std::cell::Cell;

/// The base names of every metric the filter publishes: the one catalogue that the
/// [`Catalogue`] below and the `sticky-canary` command line read.
pub mod names {
    /// The prefix of every metric of the filter.
    pub const PREFIX: &str = "canary_";
    /// The prefix of every business metric.
    pub const BUSINESS_PREFIX: &str = "canary_business_";
    /// Requests per version and reason (`reason`).
    pub const REQUESTS: &str = "canary_requests_total";
    /// Requests that matched no service of a plugin with `match` (no labels; per Envoy).
    pub const UNMATCHED: &str = "canary_unmatched_total";
    /// Responses per version and code class (`code_class`).
    pub const RESPONSES: &str = "canary_responses_total";
    /// A version's configured weight (gauge).
    pub const VERSION_WEIGHT: &str = "canary_version_weight";
    /// Values a decimal rule could not read (`metric`: the rule).
    pub const BUSINESS_INVALID: &str = "canary_business_invalid_total";
    /// Bodies the JSON rules skipped (`reason`).
    pub const BUSINESS_SKIPPED: &str = "canary_business_skipped_total";
    /// Upstream retries Envoy made for responses a version served (`x-envoy-attempt-count` − 1).
    pub const UPSTREAM_RETRIES: &str = "canary_upstream_retries_total";
    /// Responses a version served after at least one retry (`x-envoy-attempt-count` > 1).
    pub const RETRIED_RESPONSES: &str = "canary_retried_responses_total";
    /// Responses whose `x-envoy-attempt-count` was not a positive integer up to
    /// [`crate::metrics::MAX_ATTEMPTS`].
    pub const ATTEMPT_COUNT_INVALID: &str = "canary_attempt_count_invalid_total";
    /// Requests whose method changes state (`write_methods`), per served version.
    pub const WRITES: &str = "canary_writes_total";
    /// 1 while the guard has tripped a version in this Envoy, else 0 (gauge).
    pub const GUARD_TRIPPED: &str = crate::brake::pool::TRIPPED;
    /// This Envoy's evidence since it joined the guard's generation, per version and series
    /// (`metric`), for the pool (gauge).
    pub const GUARD_EVIDENCE: &str = crate::brake::pool::EVIDENCE;
    /// The generation this Envoy's guard judges, low 32 bits (gauge; with a pool).
    pub const GUARD_GENERATION: &str = crate::brake::pool::GENERATION;
    /// Pool queries by `outcome` (counter; with a pool).
    pub const GUARD_POOL_QUERIES: &str = crate::brake::pool::QUERIES;
    /// Flow cookies requests carried, by `outcome` (`valid`, `invalid`, `expired`; with
    /// `session.hold.flows`).
    pub const FLOW_COOKIES: &str = "canary_flow_cookies_total";
    /// Flows this Envoy saw start or continue on a version whose cookies have not expired
    /// (gauge; with `session.hold.flows`).
    pub const FLOWS_DRAINING: &str = "canary_flows_draining";
    /// Trips of a version recorded by this Envoy (counter).
    pub const GUARD_TRIPS: &str = "canary_guard_trips_total";
    /// gRPC responses per served version and `grpc_status` (`0`–`16`, `invalid`, `missing`),
    /// with a `grpc` block.
    pub const GRPC_RESPONSES: &str = "canary_grpc_responses_total";

    /// `canary_business_<rule>`: a histogram rule's base name.
    pub fn business(rule: &str) -> String {
        format!("{BUSINESS_PREFIX}{rule}")
    }

    /// `canary_business_<rule>_total`: a counter's count, or a sum rule's sum of scaled values.
    pub fn business_total(rule: &str) -> String {
        format!("{BUSINESS_PREFIX}{rule}_total")
    }

    /// `canary_business_<rule>_squares_total`: a sum rule's sum of squared scaled values.
    pub fn business_squares(rule: &str) -> String {
        format!("{BUSINESS_PREFIX}{rule}_squares_total")
    }
}

/// Tag names, in the order Envoy must list them (it prints labels in `stats_tags` order).
pub const TAGS: [&str; 7] = [
    "service",
    "version",
    "reason",
    "code_class",
    "metric",
    "grpc_status",
    "outcome",
];

/// Response code classes, index 0 = `1xx`.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The kind of an Envoy metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric to define: kind and encoded name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricName {
    pub kind: MetricKind,
    pub name: String,
}

/// Encodes a base name and its tags: `k1=.=v1;.;k2=.=v2;.;base`.
pub fn encode(base: &str, tags: &[(&str, &str)]) -> String {
    let mut s = String::with_capacity(
        base.len()
            + tags
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>(),
    );
    for (k, v) in tags {
        s.push_str(k);
        s.push_str("=.=");
        s.push_str(v);
        s.push_str(";.;");
    }
    s.push_str(base);
    s
}

/// The largest `x-envoy-attempt-count` taken as a count; larger values are counted as invalid
/// (Envoy's retry policies stay far below it).
pub const MAX_ATTEMPTS: u32 = 1000;

/// Envoy's `x-envoy-attempt-count` response header: `Some(n)` for a positive integer
/// `1..=MAX_ATTEMPTS` (ASCII digits only), `None` for anything else.
pub fn attempt_count(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 4 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u32 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (1..=MAX_ATTEMPTS).contains(&n).then_some(n)
}

/// The index of a response code's class in [`CODE_CLASSES`]; codes outside 100–599 count as 5xx.
pub fn code_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Every series, per version, in one layout; `T` is a name at configure time, an id afterwards.
/// The outer index of each table is the version; per-rule tables hold `None` where a rule has
/// no such series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalogue<T> {
    /// `canary_requests_total{service,version,reason}`, indexed by [`Reason::ALL`] order.
    pub requests: Vec<Vec<T>>,
    /// `canary_responses_total{service,version,code_class}`, indexed by [`code_class`].
    pub responses: Vec<Vec<T>>,
    /// `canary_version_weight{service,version}` (gauge).
    pub weight: Vec<T>,
    /// Per rule: `canary_business_<name>_total` (counter, sum) or `canary_business_<name>`
    /// (histogram).
    pub business: Vec<Vec<Option<T>>>,
    /// Per rule: `canary_business_<name>_squares_total`, the sum of squared scaled values, for
    /// `sum` rules (so a gate can compute the variance from counters).
    pub squares: Vec<Vec<Option<T>>>,
    /// Per rule: `canary_business_invalid_total{service,version,metric}`, for rules that parse
    /// decimals (sum, histogram).
    pub invalid: Vec<Vec<Option<T>>>,
    /// `canary_business_skipped_total{service,version,reason}`, indexed by
    /// [`SkipReason::index`]; empty when no rule reads the body.
    pub skipped: Vec<Vec<T>>,
    /// `canary_upstream_retries_total{service,version}`.
    pub retries: Vec<T>,
    /// `canary_retried_responses_total{service,version}`.
    pub retried: Vec<T>,
    /// `canary_attempt_count_invalid_total{service,version}`.
    pub attempts_invalid: Vec<T>,
    /// `canary_writes_total{service,version}`; empty when `write_methods` is `[]`.
    pub writes: Vec<T>,
    /// `canary_guard_tripped{service,version}` (gauge); empty without a guard.
    pub guard_tripped: Vec<T>,
    /// `canary_guard_trips_total{service,version}`; empty without a guard.
    pub guard_trips: Vec<T>,
    /// `canary_grpc_responses_total{service,version,grpc_status}`, indexed as
    /// [`crate::counting::grpc::LABELS`]; rows empty without a `grpc` block.
    pub grpc: Vec<Vec<T>>,
    /// `canary_guard_evidence{service,version,metric}` (gauge), per version, one per guard
    /// series; empty without `guard.pool`.
    pub guard_evidence: Vec<Vec<T>>,
    /// `canary_guard_generation{service}` (gauge); empty without `guard.pool`.
    pub guard_generation: Vec<T>,
    /// `canary_guard_pool_queries_total{service,outcome}`, indexed by
    /// [`crate::brake::pool::Outcome::index`]; empty without `guard.pool`.
    pub pool_queries: Vec<T>,
    /// `canary_flow_cookies_total{service,outcome}`, indexed by [`crate::routing::flow::Outcome::index`];
    /// empty without `session.hold.flows`.
    pub flow_cookies: Vec<T>,
    /// `canary_flows_draining{service,version}` (gauge); empty without `session.hold.flows`.
    pub flows_draining: Vec<T>,
}

fn map_dense<T, U, E>(
    t: Vec<Vec<T>>,
    f: &mut impl FnMut(T) -> Result<U, E>,
) -> Result<Vec<Vec<U>>, E> {
    t.into_iter()
        .map(|row| row.into_iter().map(&mut *f).collect())
        .collect()
}

fn map_row<T, U, E>(t: Vec<T>, f: &mut impl FnMut(T) -> Result<U, E>) -> Result<Vec<U>, E> {
    t.into_iter().map(f).collect()
}

fn map_sparse<T, U, E>(
    t: Vec<Vec<Option<T>>>,
    f: &mut impl FnMut(T) -> Result<U, E>,
) -> Result<Vec<Vec<Option<U>>>, E> {
    t.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|o| o.map(&mut *f).transpose())
                .collect()
        })
        .collect()
}

fn cell<T>(t: &[Vec<Option<T>>], version: usize, rule: usize) -> Option<&T> {
    t.get(version)?.get(rule)?.as_ref()
}

impl<T> Catalogue<T> {
    pub fn request(&self, version: usize, reason: Reason) -> Option<&T> {
        self.requests.get(version)?.get(reason.index())
    }

    pub fn response(&self, version: usize, status: u16) -> Option<&T> {
        self.responses.get(version)?.get(code_class(status))
    }

    pub fn business(&self, version: usize, rule: usize) -> Option<&T> {
        cell(&self.business, version, rule)
    }

    pub fn squares(&self, version: usize, rule: usize) -> Option<&T> {
        cell(&self.squares, version, rule)
    }

    pub fn invalid(&self, version: usize, rule: usize) -> Option<&T> {
        cell(&self.invalid, version, rule)
    }

    pub fn skipped(&self, version: usize, reason: SkipReason) -> Option<&T> {
        self.skipped.get(version)?.get(reason.index())
    }

    /// A `canary_grpc_responses_total` series by [`crate::counting::grpc::LABELS`] index.
    pub fn grpc(&self, version: usize, status: usize) -> Option<&T> {
        self.grpc.get(version)?.get(status)
    }

    /// Every entry, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.requests
            .iter()
            .flatten()
            .chain(self.responses.iter().flatten())
            .chain(self.weight.iter())
            .chain(self.business.iter().flatten().flatten())
            .chain(self.squares.iter().flatten().flatten())
            .chain(self.invalid.iter().flatten().flatten())
            .chain(self.skipped.iter().flatten())
            .chain(self.retries.iter())
            .chain(self.retried.iter())
            .chain(self.attempts_invalid.iter())
            .chain(self.writes.iter())
            .chain(self.guard_tripped.iter())
            .chain(self.guard_trips.iter())
            .chain(self.grpc.iter().flatten())
            .chain(self.guard_evidence.iter().flatten())
            .chain(self.guard_generation.iter())
            .chain(self.pool_queries.iter())
            .chain(self.flow_cookies.iter())
            .chain(self.flows_draining.iter())
    }

    /// The same layout with every entry mapped (e.g. name → defined metric id).
    pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<Catalogue<U>, E> {
        Ok(Catalogue {
            requests: map_dense(self.requests, &mut f)?,
            responses: map_dense(self.responses, &mut f)?,
            weight: map_row(self.weight, &mut f)?,
            business: map_sparse(self.business, &mut f)?,
            squares: map_sparse(self.squares, &mut f)?,
            invalid: map_sparse(self.invalid, &mut f)?,
            skipped: map_dense(self.skipped, &mut f)?,
            retries: map_row(self.retries, &mut f)?,
            retried: map_row(self.retried, &mut f)?,
            attempts_invalid: map_row(self.attempts_invalid, &mut f)?,
            writes: map_row(self.writes, &mut f)?,
            guard_tripped: map_row(self.guard_tripped, &mut f)?,
            guard_trips: map_row(self.guard_trips, &mut f)?,
            grpc: map_dense(self.grpc, &mut f)?,
            guard_evidence: map_dense(self.guard_evidence, &mut f)?,
            guard_generation: map_row(self.guard_generation, &mut f)?,
            pool_queries: map_row(self.pool_queries, &mut f)?,
            flow_cookies: map_row(self.flow_cookies, &mut f)?,
            flows_draining: map_row(self.flows_draining, &mut f)?,
        })
    }
}

impl Catalogue<MetricName> {
    /// Every metric a plan publishes.
    pub fn for_plan(plan: &Plan) -> Catalogue<MetricName> {
        let svc = plan.service.as_str();
        let counter = |name: String| MetricName {
            kind: MetricKind::Counter,
            name,
        };
        let versions: Vec<&str> = plan.versions.iter().map(|v| v.name.as_str()).collect();
        // One row per version, one entry per label value.
        let dense = |base: &str, tag: &str, values: &[&str]| -> Vec<Vec<MetricName>> {
            versions
                .iter()
                .map(|v| {
                    values
                        .iter()
                        .map(|x| {
                            counter(encode(base, &[("service", svc), ("version", v), (tag, x)]))
                        })
                        .collect()
                })
                .collect()
        };
        // One row per version, one entry per rule (None where the rule has no such series).
        let rules = &plan.business.rules;
        let per_rule =
            |f: &dyn Fn(&str, &crate::counting::business::Rule) -> Option<MetricName>| {
                versions
                    .iter()
                    .map(|v| rules.iter().map(|r| f(v, r)).collect())
                    .collect()
            };
        // One counter per version.
        let per_version = |base: &str| -> Vec<MetricName> {
            versions
                .iter()
                .map(|v| counter(encode(base, &[("service", svc), ("version", v)])))
                .collect()
        };
        // A gauge: `service` first, then the given tags (stats_tags order).
        let gauge = |base: &str, tags: &[(&str, &str)]| {
            let mut all = vec![("service", svc)];
            all.extend_from_slice(tags);
            MetricName {
                kind: MetricKind::Gauge,
                name: encode(base, &all),
            }
        };
        let pooled = plan.guard.as_ref().filter(|g| g.pool.is_some());
        let reasons: Vec<&str> = Reason::decided(plan.flows.is_some())
            .iter()
            .map(|r| r.as_str())
            .collect();
        let skip_reasons: Vec<&str> = if plan.business.has_json_rules() {
            SkipReason::ALL.iter().map(|r| r.as_str()).collect()
        } else {
            Vec::new()
        };
        Catalogue {
            requests: dense(names::REQUESTS, "reason", &reasons),
            responses: dense(names::RESPONSES, "code_class", &CODE_CLASSES),
            weight: versions
                .iter()
                .map(|v| gauge(names::VERSION_WEIGHT, &[("version", v)]))
                .collect(),
            business: per_rule(&|v, r| {
                let tags = [("service", svc), ("version", v)];
                Some(match r.kind {
                    RuleKind::Histogram => MetricName {
                        kind: MetricKind::Histogram,
                        name: encode(&names::business(&r.name), &tags),
                    },
                    RuleKind::Counter | RuleKind::Sum => {
                        counter(encode(&names::business_total(&r.name), &tags))
                    }
                })
            }),
            squares: per_rule(&|v, r| {
                (r.kind == RuleKind::Sum).then(|| {
                    counter(encode(
                        &names::business_squares(&r.name),
                        &[("service", svc), ("version", v)],
                    ))
                })
            }),
            invalid: per_rule(&|v, r| {
                r.takes_decimals().then(|| {
                    counter(encode(
                        names::BUSINESS_INVALID,
                        &[("service", svc), ("version", v), ("metric", &r.name)],
                    ))
                })
            }),
            skipped: dense(names::BUSINESS_SKIPPED, "reason", &skip_reasons),
            retries: per_version(names::UPSTREAM_RETRIES),
            retried: per_version(names::RETRIED_RESPONSES),
            attempts_invalid: per_version(names::ATTEMPT_COUNT_INVALID),
            writes: if plan.write_methods.is_empty() {
                Vec::new()
            } else {
                per_version(names::WRITES)
            },
            guard_tripped: if plan.guard.is_some() {
                versions
                    .iter()
                    .map(|v| gauge(names::GUARD_TRIPPED, &[("version", v)]))
                    .collect()
            } else {
                Vec::new()
            },
            guard_trips: if plan.guard.is_some() {
                per_version(names::GUARD_TRIPS)
            } else {
                Vec::new()
            },
            grpc: dense(
                names::GRPC_RESPONSES,
                "grpc_status",
                if plan.grpc.is_some() {
                    &crate::counting::grpc::LABELS
                } else {
                    &[]
                },
            ),
            guard_evidence: match pooled {
                Some(g) => versions
                    .iter()
                    .map(|v| {
                        g.labels
                            .iter()
                            .map(|m| gauge(names::GUARD_EVIDENCE, &[("version", v), ("metric", m)]))
                            .collect()
                    })
                    .collect(),
                None => Vec::new(),
            },
            guard_generation: pooled
                .map(|_| gauge(names::GUARD_GENERATION, &[]))
                .into_iter()
                .collect(),
            pool_queries: match pooled {
                Some(_) => crate::brake::pool::Outcome::ALL
                    .iter()
                    .map(|o| {
                        counter(encode(
                            names::GUARD_POOL_QUERIES,
                            &[("service", svc), ("outcome", o.as_str())],
                        ))
                    })
                    .collect(),
                None => Vec::new(),
            },
            flow_cookies: match &plan.flows {
                Some(_) => crate::routing::flow::Outcome::ALL
                    .iter()
                    .map(|o| {
                        counter(encode(
                            names::FLOW_COOKIES,
                            &[("service", svc), ("outcome", o.as_str())],
                        ))
                    })
                    .collect(),
                None => Vec::new(),
            },
            flows_draining: match &plan.flows {
                Some(_) => versions
                    .iter()
                    .map(|v| gauge(names::FLOWS_DRAINING, &[("version", v)]))
                    .collect(),
                None => Vec::new(),
            },
        }
    }
}

/// Counter increments kept in the VM between flushes to the host.
///
/// Every host call crosses the VM boundary, which costs more than the rest of a request's work, so
/// the shell adds each request's increments here and hands the totals to Envoy once per flush
/// interval (`metrics_flush_ms`). Slots are the dense indexes handed out at configure time.
#[derive(Debug, Default)]
pub struct Tally {
    pending: Vec<Cell<u64>>,
}

impl Tally {
    pub fn new(slots: usize) -> Tally {
        Tally {
            pending: (0..slots).map(|_| Cell::new(0)).collect(),
        }
    }

    /// Adds to a slot; false when the slot does not exist. Saturates at `u64::MAX` (more than a
    /// counter can take in one flush interval).
    pub fn add(&self, slot: usize, by: u64) -> bool {
        match self.pending.get(slot) {
            Some(c) => {
                c.set(c.get().saturating_add(by));
                true
            }
            None => false,
        }
    }

    /// Takes every non-zero amount, in slot order, leaving zero behind.
    pub fn drain(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.pending
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.replace(0))).filter(|(_, n)| *n > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_accumulates_drains_and_saturates() {
        let t = Tally::new(3);
        assert!(t.add(0, 2) && t.add(2, 5) && t.add(0, 1));
        assert!(!t.add(3, 1), "unknown slot");
        assert_eq!(t.drain().collect::<Vec<_>>(), [(0, 3), (2, 5)]);
        assert_eq!(t.drain().count(), 0, "drained slots are zero");
        t.add(1, u64::MAX - 1);
        t.add(1, 7);
        assert_eq!(t.drain().collect::<Vec<_>>(), [(1, u64::MAX)]);
        assert_eq!(Tally::new(0).drain().count(), 0);
    }

    #[test]
    fn encoding() {
        assert_eq!(
            encode(
                "canary_requests_total",
                &[
                    ("service", "checkout"),
                    ("version", "v1.2.3"),
                    ("reason", "hash")
                ]
            ),
            "service=.=checkout;.;version=.=v1.2.3;.;reason=.=hash;.;canary_requests_total"
        );
        assert_eq!(encode("x", &[]), "x");
    }

    #[test]
    fn attempt_counts() {
        for (v, want) in [
            (&b"1"[..], Some(1)),
            (b"2", Some(2)),
            (b"3", Some(3)),
            (b"1000", Some(1000)),
            (b"0001", Some(1)),
            (b"", None),
            (b"x", None),
            (b"-1", None),
            (b"+1", None),
            (b"0", None),
            (b" 2", None),
            (b"2.0", None),
            (b"1001", None),
            (b"99999999999999999999999", None),
            (b"\xff", None),
        ] {
            assert_eq!(attempt_count(v), want, "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn code_classes() {
        for (status, class) in [
            (100, "1xx"),
            (200, "2xx"),
            (204, "2xx"),
            (304, "3xx"),
            (404, "4xx"),
            (503, "5xx"),
            (0, "5xx"),
            (999, "5xx"),
        ] {
            assert_eq!(CODE_CLASSES[code_class(status)], class, "{status}");
        }
    }

    fn plan(extra: serde_json::Value) -> Plan {
        let mut v = serde_json::json!({
            "service": "checkout",
            "versions": [{"name": "canary", "weight": 5}, {"name": "stable", "weight": 95}],
            "session": {"sources": [{"header": "x-user-id"}]}
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Plan::from_json(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn catalogue_lists_every_series_for_every_version() {
        let p = plan(serde_json::json!({"business_metrics": [
            {"name": "orders", "kind": "counter", "header": "x-order-id"},
            {"name": "order_value", "kind": "sum", "header": "x-order-total", "scale": 2},
            {"name": "tax", "kind": "histogram", "json": "/order/tax", "scale": 2}
        ]}));
        let c = Catalogue::for_plan(&p);
        // 2 versions × (7 reasons + 5 classes + 1 weight + 3 rules + 1 squares + 2 invalid
        // + 5 skipped + 3 retry series + 1 writes)
        assert_eq!(c.iter().count(), 2 * (7 + 5 + 1 + 3 + 1 + 2 + 5 + 3 + 1));
        assert_eq!(
            c.writes[0].name,
            "service=.=checkout;.;version=.=canary;.;canary_writes_total"
        );
        assert_eq!(
            c.retries[0].name,
            "service=.=checkout;.;version=.=canary;.;canary_upstream_retries_total"
        );
        assert_eq!(
            c.retried[1].name,
            "service=.=checkout;.;version=.=stable;.;canary_retried_responses_total"
        );
        assert_eq!(
            c.attempts_invalid[1].name,
            "service=.=checkout;.;version=.=stable;.;canary_attempt_count_invalid_total"
        );
        assert_eq!(
            c.squares(1, 1).unwrap().name,
            "service=.=checkout;.;version=.=stable;.;canary_business_order_value_squares_total"
        );
        assert!(
            c.squares(0, 0).is_none() && c.squares(0, 2).is_none(),
            "only sum rules"
        );
        // No writes counted, no series; a guard adds its gauge and trip counter per version.
        let p2 = plan(serde_json::json!({"write_methods": [],
            "guard": {"checks": [{"error_ratio": {"max_points": 1}}]}}));
        let g = Catalogue::for_plan(&p2);
        assert!(g.writes.is_empty());
        assert_eq!(g.iter().count(), 2 * (7 + 5 + 1 + 3 + 2));
        assert_eq!(
            (g.guard_tripped[0].kind, g.guard_tripped[0].name.as_str()),
            (
                MetricKind::Gauge,
                "service=.=checkout;.;version=.=canary;.;canary_guard_tripped"
            )
        );
        assert_eq!(
            g.guard_trips[1].name,
            "service=.=checkout;.;version=.=stable;.;canary_guard_trips_total"
        );
        let names: std::collections::HashSet<_> = c.iter().map(|m| m.name.clone()).collect();
        assert_eq!(names.len(), c.iter().count(), "names are unique");
        assert_eq!(
            c.request(0, Reason::Pin).unwrap().name,
            "service=.=checkout;.;version=.=canary;.;reason=.=pin;.;canary_requests_total"
        );
        assert_eq!(
            c.response(1, 503).unwrap().name,
            "service=.=checkout;.;version=.=stable;.;code_class=.=5xx;.;canary_responses_total"
        );
        assert_eq!(c.weight[1].kind, MetricKind::Gauge);
        assert_eq!(
            c.business(0, 0).unwrap().name,
            "service=.=checkout;.;version=.=canary;.;canary_business_orders_total"
        );
        assert_eq!(c.business(0, 2).unwrap().kind, MetricKind::Histogram);
        assert_eq!(
            c.business(0, 2).unwrap().name,
            "service=.=checkout;.;version=.=canary;.;canary_business_tax"
        );
        assert!(c.invalid(0, 0).is_none(), "counters are never invalid");
        assert_eq!(
            c.invalid(1, 1).unwrap().name,
            "service=.=checkout;.;version=.=stable;.;metric=.=order_value;.;canary_business_invalid_total"
        );
        assert_eq!(
            c.skipped(0, SkipReason::Compressed).unwrap().name,
            "service=.=checkout;.;version=.=canary;.;reason=.=compressed;.;canary_business_skipped_total"
        );
        // try_map keeps the layout.
        let mut next = 0u32;
        let ids = c
            .clone()
            .try_map(|_| -> Result<u32, ()> {
                next += 1;
                Ok(next)
            })
            .unwrap();
        assert_eq!(
            ids.iter().copied().collect::<Vec<_>>(),
            (1..=next).collect::<Vec<_>>()
        );
        assert_eq!(ids.request(0, Reason::Override), Some(&1));
    }

    #[test]
    fn grpc_adds_19_series_per_version() {
        let off = Catalogue::for_plan(&plan(serde_json::json!({})));
        assert!(off.grpc.iter().all(Vec::is_empty));
        let p = plan(serde_json::json!({"grpc": {}}));
        let c = Catalogue::for_plan(&p);
        assert_eq!(c.iter().count(), off.iter().count() + 2 * 19);
        assert_eq!(
            c.grpc(0, 13).unwrap().name,
            "service=.=checkout;.;version=.=canary;.;grpc_status=.=13;.;canary_grpc_responses_total"
        );
        assert_eq!(
            c.grpc(1, crate::counting::grpc::MISSING).unwrap().name,
            "service=.=checkout;.;version=.=stable;.;grpc_status=.=missing;.;canary_grpc_responses_total"
        );
    }

    #[test]
    fn header_only_configs_have_no_skip_series() {
        let p = plan(
            serde_json::json!({"business_metrics": [{"name": "orders", "kind": "counter", "header": "x-order-id"}]}),
        );
        let c = Catalogue::for_plan(&p);
        assert!(c.skipped.iter().all(Vec::is_empty));
        assert!(c.skipped(0, SkipReason::TooLarge).is_none());
    }
}
