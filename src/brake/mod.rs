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
#[cfg(test)]
mod tests;

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
/// keeps the normal approximation of the plug-in variance honest (see README "The brake").
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
