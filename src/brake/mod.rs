//! The brake: the `guard` block, compiled, and what it concludes from a version's counters.
//!
//! Every tick the filter reads the Envoy-wide counters the checks need (see `crate::filter`) and
//! asks [`Guard::judge`] whether a canary is harmful: the same always-valid test as
//! `sticky-canary gate` ([`crate::stats::sequential`]). A harmful canary is *tripped* in that
//! Envoy: the trip is kept in the VM's shared data as a [`record`], which every worker VM reads
//! on its tick, and which outlives reconfiguration until the salt or `guard.epoch` changes.
//!
//! Pure: no host, no allocation on the per-tick path beyond the log line of a trip.

mod compile;
mod describe;
mod judge;
pub mod pool;
pub mod record;

use crate::brake::pool::{Pool, RawPool};
use crate::check::cat;
use crate::counting::business::Rule;
use crate::stats::sequential::{Judgement, Test};
use serde::Deserialize;

/// Default `guard.alpha`: one false trip in a hundred canaries that are exactly at their limits,
/// however long they run (Ville's bound; canaries inside their limits trip far less often).
pub const DEFAULT_ALPHA: f64 = 0.01;
/// Default `guard.min_samples`, per side and check (the denominator: responses, orders…).
/// Lower than the gate's 200: the sequential test bounds false trips itself; the minimum only
/// keeps the normal approximation of the plug-in variance honest (see the manual, "The brake").
pub const DEFAULT_MIN_SAMPLES: u64 = 100;
/// The shared-data key prefix; the service name follows.
pub const SHARED_KEY_PREFIX: &str = "sticky_canary.guard.";

/// `guard` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    /// The version every canary is compared with (default: `default_version`).
    #[serde(default)]
    pub baseline: Option<String>,
    #[serde(default)]
    pub alpha: Option<f64>,
    #[serde(default)]
    pub min_samples: Option<u64>,
    pub checks: Vec<RawCheck>,
    /// Changing it clears every trip (as does a new `salt`).
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Judge the evidence of every Envoy, pooled by Prometheus.
    #[serde(default)]
    pub pool: Option<RawPool>,
    /// What a trip does to flows with a valid flow cookie (`session.hold.flows`): `finish`
    /// (the default) or `move`.
    #[serde(default)]
    pub flows: Option<crate::routing::flow::OnTrip>,
}

/// One check as written: exactly one of the fields. Kept as options (rather than a serde enum)
/// so that "none" and "two" get a plain-language refusal with the path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    #[serde(default)]
    pub error_ratio: Option<RawRatioOfResponses>,
    #[serde(default)]
    pub retry_ratio: Option<RawRatioOfResponses>,
    #[serde(default)]
    pub grpc_error_ratio: Option<RawRatioOfResponses>,
    #[serde(default)]
    pub ratio: Option<RawRatio>,
    #[serde(default)]
    pub mean: Option<RawMean>,
}

/// `error_ratio` (5xx / responses), `retry_ratio` (retried / responses) or `grpc_error_ratio`
/// (gRPC responses with an error code / gRPC responses): higher is worse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRatioOfResponses {
    pub max_points: f64,
    #[serde(default)]
    pub tau_points: Option<f64>,
}

/// `ratio`: two business counters, lower is worse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRatio {
    pub label: String,
    pub numerator: String,
    pub denominator: String,
    pub max_drop_points: f64,
    #[serde(default)]
    pub tau_points: Option<f64>,
}

/// `mean`: a `sum` rule per counted item, either direction is harmful.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMean {
    pub label: String,
    pub sum: String,
    pub count: String,
    pub max_drift_percent: f64,
    #[serde(default)]
    pub tau_percent: Option<f64>,
}

/// A per-version counter a check reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// `canary_responses_total{code_class="5xx"}`.
    Errors,
    /// `canary_responses_total`, every code class.
    Responses,
    /// `canary_retried_responses_total`.
    Retried,
    /// `canary_grpc_responses_total` of the `grpc.error_codes`, summed.
    GrpcErrors,
    /// `canary_grpc_responses_total`, every `grpc_status`.
    GrpcResponses,
    /// `canary_business_<rule>_total`, by rule index.
    Business(usize),
    /// `canary_business_<rule>_squares_total`, by rule index.
    Squares(usize),
}

/// What a check compares.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// `num / den`.
    Proportion { num: Series, den: Series },
    /// `sum / count` with the variance from `squares`.
    Mean {
        sum: Series,
        squares: Series,
        count: Series,
    },
}

/// One compiled check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub label: String,
    /// What it is, for the log: `error_ratio`, `ratio auth_approved/orders`, …
    pub what: String,
    pub kind: Kind,
    pub test: Test,
}

/// The compiled `guard` block.
#[derive(Clone, Debug, PartialEq)]
pub struct Guard {
    /// Index of the baseline version.
    pub baseline: usize,
    pub alpha: f64,
    pub min_samples: u64,
    pub epoch: u64,
    pub checks: Vec<Check>,
    /// Every series the checks read, each once, in the order first read: read once per
    /// version per tick.
    pub series: Vec<Series>,
    /// Each series' `metric` label in the pool's evidence gauges ([`Series::label`]).
    pub labels: Vec<String>,
    /// The trips' generation: the salt and `epoch` ([`record::generation`]).
    pub generation: u64,
    /// The pooled evidence of every Envoy (`guard.pool`).
    pub pool: Option<Pool>,
    /// What a trip does to flows with a valid flow cookie (`finish` when not given).
    pub flows: crate::routing::flow::OnTrip,
}

impl Series {
    /// The series' `metric` label in `canary_guard_evidence`: `errors`, `responses`, `retried`,
    /// `grpc_errors`, `grpc_responses`, `business_<rule>`, `squares_<rule>`.
    pub fn label(self, rules: &[Rule]) -> String {
        let rule = |i: usize| rules.get(i).map_or("", |r| r.name.as_str());
        match self {
            Series::Errors => "errors".into(),
            Series::Responses => "responses".into(),
            Series::Retried => "retried".into(),
            Series::GrpcErrors => "grpc_errors".into(),
            Series::GrpcResponses => "grpc_responses".into(),
            Series::Business(i) => cat(&["business_", rule(i)]),
            Series::Squares(i) => cat(&["squares_", rule(i)]),
        }
    }
}

/// Where the guard is compiled: the service, its salt, the VM environment and the plan's
/// warnings (for `guard.pool`).
pub struct Context<'a> {
    pub service: &'a str,
    pub salt: &'a [u8],
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub warnings: &'a mut Vec<String>,
}

/// A harmful canary: which check, on which counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Trip {
    pub check: usize,
    pub judgement: Judgement,
    /// (numerator or sum, denominator or count) of the canary and of the baseline.
    pub canary: (f64, f64),
    pub baseline: (f64, f64),
}

#[cfg(test)]
mod tests {
    //! The brake's block compiled and refused, its judgement on counts, its log line's numbers,
    //! and the trip record.

    use super::describe::{fixed, plain, sci};
    use super::*;
    use crate::check::ConfigError;
    use crate::plan::Plan;
    use crate::stats::sequential::{Harm, TAU_PERCENT};
    use serde_json::json;

    fn plan(guard: serde_json::Value) -> Result<Plan, ConfigError> {
        let config = json!({
            "service": "checkout",
            "versions": [{"name": "canary", "weight": 5}, {"name": "stable", "weight": 95}],
            "session": {"sources": [{"cookie": "sid"}]},
            "business_metrics": [
                {"name": "orders", "kind": "counter", "header": "x-order-id"},
                {"name": "auth_approved", "kind": "counter", "header": "x-auth", "equals": "approved"},
                {"name": "order_value", "kind": "sum", "header": "x-order-total", "scale": 2},
                {"name": "latency", "kind": "histogram", "header": "x-ms"}
            ],
            "guard": guard
        });
        Plan::from_json(config.to_string().as_bytes())
    }

    fn published_example() -> serde_json::Value {
        json!({ "baseline": "stable", "alpha": 0.01, "min_samples": 200,
                "checks": [ {"error_ratio": {"max_points": 1.0}},
                            {"ratio": {"label": "approval", "numerator": "auth_approved",
                                       "denominator": "orders", "max_drop_points": 0.3}},
                            {"mean":  {"label": "aov", "sum": "order_value", "count": "orders",
                                       "max_drift_percent": 1.0}} ] })
    }

    #[test]
    fn compiles_the_published_example() {
        let g = plan(published_example()).unwrap().guard.unwrap();
        assert_eq!(
            (g.baseline, g.alpha, g.min_samples, g.epoch),
            (1, 0.01, 200, 0)
        );
        assert_eq!(g.checks.len(), 3);
        assert_eq!(
            g.checks[1].kind,
            Kind::Proportion {
                num: Series::Business(1),
                den: Series::Business(0)
            }
        );
        assert_eq!(g.checks[1].test.harm, Harm::Lower);
        assert_eq!(g.checks[2].test.harm, Harm::Either);
        assert_eq!(g.checks[2].test.tau, TAU_PERCENT);
        assert_eq!(
            g.series,
            [
                Series::Errors,
                Series::Responses,
                Series::Business(1),
                Series::Business(0),
                Series::Business(2),
                Series::Squares(2)
            ]
        );
        // Defaults: baseline = default version, alpha 0.01, min_samples DEFAULT_MIN_SAMPLES.
        let g = plan(json!({"checks": [{"error_ratio": {"max_points": 0.5, "tau_points": 3}}]}))
            .unwrap()
            .guard
            .unwrap();
        assert_eq!(
            (g.baseline, g.alpha, g.min_samples),
            (1, DEFAULT_ALPHA, DEFAULT_MIN_SAMPLES)
        );
        assert_eq!((g.checks[0].test.limit, g.checks[0].test.tau), (0.5, 3.0));
    }

    #[test]
    fn refusals_name_the_field() {
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut g = published_example();
            edit(&mut g);
            g
        };
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            (
                "baseline not a version",
                with(&|g| g["baseline"] = "blue".into()),
                "guard.baseline",
            ),
            ("alpha 0", with(&|g| g["alpha"] = json!(0)), "guard.alpha"),
            (
                "alpha 0.5",
                with(&|g| g["alpha"] = json!(0.5)),
                "guard.alpha",
            ),
            (
                "alpha negative",
                with(&|g| g["alpha"] = json!(-0.01)),
                "guard.alpha",
            ),
            (
                "alpha a string",
                with(&|g| g["alpha"] = "0.01".into()),
                "guard.alpha",
            ),
            (
                "min_samples 0",
                with(&|g| g["min_samples"] = json!(0)),
                "guard.min_samples",
            ),
            (
                "no checks",
                with(&|g| g["checks"] = json!([])),
                "guard.checks",
            ),
            ("typo", with(&|g| g["epoc"] = json!(1)), "guard.epoc"),
            (
                "empty check",
                with(&|g| g["checks"][0] = json!({})),
                "guard.checks[0]",
            ),
            (
                "two kinds in one check",
                with(&|g| {
                    g["checks"][0]["retry_ratio"] = json!({"max_points": 1});
                }),
                "guard.checks[0]",
            ),
            (
                "unknown kind",
                with(&|g| g["checks"][0] = json!({"p99": {"max_ms": 5}})),
                "guard.checks[0].p99",
            ),
            (
                "ratio numerator unknown",
                with(&|g| g["checks"][1]["ratio"]["numerator"] = "approvals".into()),
                "guard.checks[1].ratio.numerator",
            ),
            (
                "ratio of a sum rule",
                with(&|g| g["checks"][1]["ratio"]["denominator"] = "order_value".into()),
                "guard.checks[1].ratio.denominator",
            ),
            (
                "ratio of itself",
                with(&|g| g["checks"][1]["ratio"]["numerator"] = "orders".into()),
                "guard.checks[1].ratio.denominator",
            ),
            (
                "mean of a counter",
                with(&|g| g["checks"][2]["mean"]["sum"] = "orders".into()),
                "guard.checks[2].mean.sum",
            ),
            (
                "mean counted by a histogram",
                with(&|g| g["checks"][2]["mean"]["count"] = "latency".into()),
                "guard.checks[2].mean.count",
            ),
            (
                "negative limit",
                with(&|g| g["checks"][0]["error_ratio"]["max_points"] = json!(-1)),
                "guard.checks[0].error_ratio.max_points",
            ),
            (
                "tau 0",
                with(&|g| g["checks"][2]["mean"]["tau_percent"] = json!(0)),
                "guard.checks[2].mean.tau_percent",
            ),
            (
                "duplicate labels",
                with(&|g| g["checks"][2]["mean"]["label"] = "approval".into()),
                "guard.checks[2]",
            ),
            (
                "bad label",
                with(&|g| g["checks"][1]["ratio"]["label"] = "app roval".into()),
                "guard.checks[1].ratio.label",
            ),
            (
                "missing limit",
                with(&|g| {
                    g["checks"][1]["ratio"]
                        .as_object_mut()
                        .unwrap()
                        .remove("max_drop_points");
                }),
                "guard.checks[1].ratio.max_drop_points",
            ),
        ];
        for (what, guard, path) in cases {
            let err = plan(guard).expect_err(what);
            assert_eq!(err.path, path, "{what}: {err}");
        }
    }

    #[test]
    fn grpc_error_ratio_needs_the_grpc_block() {
        let check = json!({"checks": [{"grpc_error_ratio": {"max_points": 2, "tau_points": 3}}]});
        let err = plan(check.clone()).expect_err("no grpc block");
        assert_eq!(err.path, "guard.checks[0].grpc_error_ratio");
        let mut config: serde_json::Value = json!({
            "service": "checkout",
            "versions": [{"name": "canary", "weight": 5}, {"name": "stable", "weight": 95}],
            "session": {"sources": [{"cookie": "sid"}]},
            "grpc": {"error_codes": [13]},
            "guard": check
        });
        let g = Plan::from_json(config.to_string().as_bytes())
            .unwrap()
            .guard
            .unwrap();
        assert_eq!(g.checks[0].label, "grpc_error_ratio");
        assert_eq!(g.checks[0].test.harm, Harm::Higher);
        assert_eq!((g.checks[0].test.limit, g.checks[0].test.tau), (2.0, 3.0));
        assert_eq!(g.series, [Series::GrpcErrors, Series::GrpcResponses]);
        // Judged like error_ratio: 13 % against 1 % of gRPC responses.
        let t = [
            (0, Series::GrpcErrors, 130.0),
            (0, Series::GrpcResponses, 1000.0),
            (1, Series::GrpcErrors, 10.0),
            (1, Series::GrpcResponses, 1000.0),
        ];
        assert_eq!(g.judge(0, &counts(&t)).map(|t| t.check), Some(0));
        let aa = [
            (0, Series::GrpcErrors, 11.0),
            (0, Series::GrpcResponses, 1000.0),
            (1, Series::GrpcErrors, 10.0),
            (1, Series::GrpcResponses, 1000.0),
        ];
        assert_eq!(g.judge(0, &counts(&aa)), None);
        config["guard"]["checks"][0]["grpc_error_ratio"]["max_points"] = json!(-1);
        let err = Plan::from_json(config.to_string().as_bytes()).expect_err("negative");
        assert_eq!(err.path, "guard.checks[0].grpc_error_ratio.max_points");
    }

    /// Counters by (version, series) for `judge`.
    fn counts(table: &[(usize, Series, f64)]) -> impl Fn(usize, Series) -> f64 + '_ {
        move |v, s| {
            table
                .iter()
                .find(|(tv, ts, _)| *tv == v && *ts == s)
                .map_or(0.0, |t| t.2)
        }
    }

    #[test]
    fn judges_the_payment_fall_through_and_not_an_aa_pair() {
        let g = plan(published_example()).unwrap().guard.unwrap();
        let (orders, approved) = (Series::Business(0), Series::Business(1));
        let bad = [
            (0, orders, 200.0),
            (0, approved, 182.0),
            (1, orders, 4000.0),
            (1, approved, 3976.0),
        ];
        let trip = g.judge(0, &counts(&bad)).expect("harmful");
        // Every canary at once, by series index; a skipped one is not judged.
        let by_index = |v: usize, i: usize| counts(&bad)(v, g.series[i]);
        let mut all = Vec::new();
        g.judge_canaries(2, g.alpha, &|_| false, &by_index, &mut |c, t| {
            all.push((c, t.check))
        });
        assert_eq!(all, [(0, 1)]);
        let mut none = 0;
        g.judge_canaries(2, g.alpha, &|c| c == 0, &by_index, &mut |_, _| none += 1);
        assert_eq!(none, 0);
        assert_eq!(trip.check, 1);
        assert_eq!(
            (trip.canary, trip.baseline),
            ((182.0, 200.0), (3976.0, 4000.0))
        );
        let line = g.describe(&trip, "canary", "stable");
        assert!(
            line.starts_with(
                "guard tripped canary: check approval (ratio auth_approved/orders) changed \
                 -8.40 points against stable, beyond the limit -0.3 points (canary 182/200, \
                 stable 3976/4000); ln Λ 53.85 ≥ 4.61"
            ),
            "{line}"
        );
        let aa = [
            (0, orders, 200.0),
            (0, approved, 199.0),
            (1, orders, 4000.0),
            (1, approved, 3976.0),
        ];
        assert_eq!(g.judge(0, &counts(&aa)), None);
        // Below min_samples (200) on the canary side: not judged.
        let few = [
            (0, orders, 199.0),
            (0, approved, 150.0),
            (1, orders, 4000.0),
            (1, approved, 3976.0),
        ];
        assert_eq!(g.judge(0, &counts(&few)), None);
    }

    #[test]
    fn broken_counters_never_trip() {
        let g = plan(published_example()).unwrap().guard.unwrap();
        let (orders, approved) = (Series::Business(0), Series::Business(1));
        // A numerator above its denominator (read while another worker flushed) is capped.
        let over = [
            (0, orders, 300.0),
            (0, approved, 310.0),
            (1, orders, 4000.0),
            (1, approved, 3976.0),
        ];
        assert_eq!(g.judge(0, &counts(&over)), None);
        // Non-finite and huge values: no trip, no panic.
        for v in [f64::NAN, f64::INFINITY, u64::MAX as f64] {
            let odd = [
                (0, orders, v),
                (0, approved, v),
                (1, orders, v),
                (1, approved, v),
            ];
            let _ = g.judge(0, &counts(&odd));
            let zero = [(0, orders, v), (1, orders, 4000.0), (1, approved, 3976.0)];
            let t = g.judge(0, &counts(&zero));
            assert!(t.is_none() || v.is_finite(), "{v}: {t:?}");
        }
    }

    #[test]
    fn numbers_in_log_lines() {
        assert_eq!(fixed(-8.4, 2), "-8.40");
        assert_eq!(fixed(61.739, 2), "61.74");
        assert_eq!(fixed(-0.001, 2), "0.00");
        assert_eq!(fixed(0.5, 0), "1");
        assert_eq!(fixed(f64::NAN, 2), "NaN");
        assert_eq!(fixed(-f64::INFINITY, 2), "-inf");
        assert_eq!(fixed(3e20, 2), ">1e18");
        assert_eq!(plain(0.01), "0.01");
        assert_eq!(plain(1.0), "1");
        assert_eq!(plain(200.0), "200");
        assert_eq!(plain(0.3), "0.3");
        assert_eq!(sci(4.59e-250), "4.6e-250");
        assert_eq!(sci(0.0099), "9.9e-3");
        assert_eq!(sci(0.00999), "1.0e-2");
        assert_eq!(sci(0.0), "0");
        assert_eq!(sci(1.0), "1");
    }

    #[test]
    fn the_record_round_trips_per_generation() {
        let g1 = record::generation(b"checkout", 0);
        assert_ne!(g1, record::generation(b"checkout", 1), "epoch clears");
        assert_ne!(g1, record::generation(b"checkout-2", 0), "salt clears");
        let r = record::encode(g1, ["canary", "v2"].into_iter());
        assert_eq!(record::decode(r.as_bytes(), g1), ["canary", "v2"]);
        assert!(record::decode(r.as_bytes(), g1 ^ 1).is_empty());
        assert_eq!(
            record::read(r.as_bytes(), g1 ^ 1),
            None,
            "another generation"
        );
        let empty = record::encode(g1, std::iter::empty());
        assert_eq!(
            record::read(empty.as_bytes(), g1),
            Some(vec![]),
            "this one, no trips"
        );
        assert!(record::decode(b"garbage", g1).is_empty());
        assert!(record::decode(&[0xff, 0xfe], g1).is_empty());
        assert!(record::decode(record::encode(g1, std::iter::empty()).as_bytes(), g1).is_empty());
    }
}
