//! The brake: the `guard` block, compiled, and what it concludes from a version's counters.
//!
//! Every tick the filter reads the Envoy-wide counters the checks need (see `crate::filter`) and
//! asks [`Guard::judge`] whether a canary is harmful: the same always-valid test as
//! `sticky-canary gate` ([`crate::stats::sequential`]). A harmful canary is *tripped* in that
//! Envoy: the trip is kept in the VM's shared data as a [`record`], which every worker VM reads
//! on its tick, and which outlives reconfiguration until the salt or `guard.epoch` changes.
//!
//! Pure: no host, no allocation on the per-tick path beyond the log line of a trip.

pub mod pool;

use crate::brake::pool::{Pool, RawPool};
use crate::check::{cat, check_label, ConfigError};
use crate::counting::business::{Rule, RuleKind};
use crate::counting::grpc::Grpc;
use crate::stats::sequential::{Harm, Judgement, Test, TAU_PERCENT, TAU_POINTS};
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

/// `base.field`, built only when a refusal names it.
fn path(base: &str, field: &str) -> String {
    cat(&[base, ".", field])
}

fn limit(base: &str, field: &str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ConfigError::new(
            path(base, field),
            cat(&[&plain(value), " must be a finite number ≥ 0"]),
        ))
    }
}

fn tau(base: &str, field: &str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match value {
        None => Ok(default),
        Some(t) if t.is_finite() && t > 0.0 => Ok(t),
        Some(t) => Err(ConfigError::new(
            path(base, field),
            cat(&[&plain(t), " must be a finite number > 0"]),
        )),
    }
}

/// The business rule named `name` (the check's `base.field`), which must be of `kind`: a ratio
/// reads two counters; a mean a sum rule (only sum rules publish the squares its variance
/// needs) per counter rule.
fn rule(
    base: &str,
    field: &str,
    rules: &[Rule],
    name: &str,
    kind: RuleKind,
) -> Result<usize, ConfigError> {
    let found = rules.iter().enumerate().find(|(_, r)| r.name == name);
    match found.map(|(i, r)| (i, r.kind)) {
        Some((i, k)) if k == kind => Ok(i),
        Some((_, k)) => Err(ConfigError::new(
            path(base, field),
            format!(
                "business rule {name:?} is a {k:?} rule; a ratio reads two counter rules, a \
                 mean a sum rule (its squares give the variance) per counter rule"
            ),
        )),
        None => {
            let mut known = String::new();
            for r in rules {
                known.push_str(if known.is_empty() { "" } else { ", " });
                known.push_str(&r.name);
            }
            if known.is_empty() {
                known.push_str("none");
            }
            Err(ConfigError::new(
                path(base, field),
                format!("no business rule named {name:?} (business_metrics: {known})"),
            ))
        }
    }
}

impl Guard {
    /// Compiles `guard` against the plan's versions, default version and business rules.
    pub fn compile(
        raw: RawGuard,
        versions: &[&str],
        default_version: usize,
        rules: &[Rule],
        grpc: Option<&Grpc>,
        context: Context<'_>,
    ) -> Result<Guard, ConfigError> {
        let baseline = match &raw.baseline {
            None => default_version,
            Some(name) => versions.iter().position(|v| v == name).ok_or_else(|| {
                ConfigError::new(
                    "guard.baseline",
                    format!("{name:?} is not one of the listed versions"),
                )
            })?,
        };
        let alpha = raw.alpha.unwrap_or(DEFAULT_ALPHA);
        if !(alpha > 0.0 && alpha < 0.5) {
            return Err(ConfigError::new(
                "guard.alpha",
                format!("{} must be above 0 and below 0.5", plain(alpha)),
            ));
        }
        let min_samples = raw.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES);
        if min_samples == 0 {
            return Err(ConfigError::new(
                "guard.min_samples",
                "must be at least 1 (each side's denominator must reach it before a check judges)",
            ));
        }
        if raw.checks.is_empty() {
            return Err(ConfigError::new(
                "guard.checks",
                "at least one check is required",
            ));
        }
        let mut checks: Vec<Check> = Vec::with_capacity(raw.checks.len());
        for (i, c) in raw.checks.into_iter().enumerate() {
            let at = cat(&["guard.checks[", &i.to_string(), "]"]);
            let count = usize::from(c.error_ratio.is_some())
                + usize::from(c.retry_ratio.is_some())
                + usize::from(c.grpc_error_ratio.is_some())
                + usize::from(c.ratio.is_some())
                + usize::from(c.mean.is_some());
            if count != 1 {
                return Err(ConfigError::new(
                    at,
                    "a check is exactly one of error_ratio, retry_ratio, grpc_error_ratio, ratio, mean",
                ));
            }
            // The three ratios of responses, higher is worse, share one arm.
            let of_responses = [
                (
                    c.error_ratio,
                    "error_ratio",
                    "5xx/responses",
                    Series::Errors,
                    Series::Responses,
                ),
                (
                    c.retry_ratio,
                    "retry_ratio",
                    "retried/responses",
                    Series::Retried,
                    Series::Responses,
                ),
                (
                    c.grpc_error_ratio,
                    "grpc_error_ratio",
                    "errors/grpc responses",
                    Series::GrpcErrors,
                    Series::GrpcResponses,
                ),
            ]
            .into_iter()
            .find_map(|(r, label, what, num, den)| r.map(|r| (r, label, what, num, den)));
            let check = if let Some((r, label, what, num, den)) = of_responses {
                let p = path(&at, label);
                if num == Series::GrpcErrors && grpc.is_none() {
                    return Err(ConfigError::new(
                        p,
                        "needs the top-level grpc block (which counts gRPC responses by status)",
                    ));
                }
                Check {
                    label: label.into(),
                    what: cat(&[label, " ", what]),
                    kind: Kind::Proportion { num, den },
                    test: Test {
                        alpha,
                        limit: limit(&p, "max_points", r.max_points)?,
                        tau: tau(&p, "tau_points", r.tau_points, TAU_POINTS)?,
                        harm: Harm::Higher,
                    },
                }
            } else {
                // A ratio of two counter rules (lower is worse) or the mean of a sum rule per
                // counted item (either way): one arm, two shapes.
                let (kind, label, (a_field, a), (b_field, b), (limit_field, max), (tau_field, t)) =
                    match (c.ratio, c.mean) {
                        (Some(r), _) => (
                            "ratio",
                            r.label,
                            ("numerator", r.numerator),
                            ("denominator", r.denominator),
                            ("max_drop_points", r.max_drop_points),
                            ("tau_points", r.tau_points),
                        ),
                        (None, Some(m)) => (
                            "mean",
                            m.label,
                            ("sum", m.sum),
                            ("count", m.count),
                            ("max_drift_percent", m.max_drift_percent),
                            ("tau_percent", m.tau_percent),
                        ),
                        (None, None) => continue,
                    };
                let p = path(&at, kind);
                check_label(&path(&p, "label"), &label)?;
                let is_mean = kind == "mean";
                let first = rule(
                    &p,
                    a_field,
                    rules,
                    &a,
                    if is_mean {
                        RuleKind::Sum
                    } else {
                        RuleKind::Counter
                    },
                )?;
                let second = rule(&p, b_field, rules, &b, RuleKind::Counter)?;
                if first == second {
                    return Err(ConfigError::new(
                        path(&p, b_field),
                        "the two rules of a check must differ",
                    ));
                }
                let (kind_of, harm, default_tau) = if is_mean {
                    (
                        Kind::Mean {
                            sum: Series::Business(first),
                            squares: Series::Squares(first),
                            count: Series::Business(second),
                        },
                        Harm::Either,
                        TAU_PERCENT,
                    )
                } else {
                    (
                        Kind::Proportion {
                            num: Series::Business(first),
                            den: Series::Business(second),
                        },
                        Harm::Lower,
                        TAU_POINTS,
                    )
                };
                Check {
                    what: cat(&[kind, " ", &a, "/", &b]),
                    label,
                    kind: kind_of,
                    test: Test {
                        alpha,
                        limit: limit(&p, limit_field, max)?,
                        tau: tau(&p, tau_field, t, default_tau)?,
                        harm,
                    },
                }
            };
            if let Some(j) = checks.iter().position(|k| k.label == check.label) {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "two checks are labelled {:?} (also guard.checks[{j}])",
                        check.label
                    ),
                ));
            }
            checks.push(check);
        }
        let mut series: Vec<Series> = Vec::new();
        for c in &checks {
            let read: &[Series] = match &c.kind {
                Kind::Proportion { num, den } => &[*num, *den],
                Kind::Mean {
                    sum,
                    squares,
                    count,
                } => &[*sum, *squares, *count],
            };
            for s in read {
                if !series.contains(s) {
                    series.push(*s);
                }
            }
        }
        let epoch = raw.epoch.unwrap_or(0);
        let generation = record::generation(context.salt, epoch);
        let pool = raw
            .pool
            .map(|p| {
                Pool::compile(
                    p,
                    context.service,
                    generation,
                    alpha,
                    context.env,
                    context.warnings,
                )
            })
            .transpose()?;
        Ok(Guard {
            baseline,
            alpha,
            min_samples,
            epoch,
            checks,
            labels: series.iter().map(|s| s.label(rules)).collect(),
            series,
            generation,
            pool,
            flows: raw.flows.unwrap_or_default(),
        })
    }

    /// Judges one canary against the baseline: the first harmful check, if any. `read(version,
    /// series)` returns the counter's current value; counts are taken as they are (a counter that
    /// went down after a reload is simply a smaller count), a numerator above its denominator is
    /// capped at it (the two are read a moment apart while other workers flush), and any
    /// non-finite figure judges nothing.
    pub fn judge(&self, canary: usize, read: &dyn Fn(usize, Series) -> f64) -> Option<Trip> {
        self.judge_at(canary, read, self.alpha)
    }

    /// [`Guard::judge`] at another alpha (the local test beside a pool: `pool.local_alpha`).
    pub fn judge_at(
        &self,
        canary: usize,
        read: &dyn Fn(usize, Series) -> f64,
        alpha: f64,
    ) -> Option<Trip> {
        let min = self.min_samples as f64;
        let (b, c) = (self.baseline, canary);
        for (i, check) in self.checks.iter().enumerate() {
            let (j, cv, bv) = match check.kind {
                Kind::Proportion { num, den } => {
                    let (nc, nb) = (read(c, den), read(b, den));
                    let (xc, xb) = (read(c, num).min(nc), read(b, num).min(nb));
                    if !(nc >= min && nb >= min && nc.is_finite() && nb.is_finite()) {
                        continue;
                    }
                    let test = Test {
                        alpha,
                        ..check.test
                    };
                    (test.proportions(xc, nc, xb, nb), (xc, nc), (xb, nb))
                }
                Kind::Mean {
                    sum,
                    squares,
                    count,
                } => {
                    let side = |v: usize| (read(v, sum), read(v, squares), read(v, count));
                    let (sc, sb) = (side(c), side(b));
                    let finite = [sc.0, sc.1, sc.2, sb.0, sb.1, sb.2]
                        .iter()
                        .all(|x| x.is_finite());
                    if !(sc.2 >= min && sb.2 >= min && finite) {
                        continue;
                    }
                    let test = Test {
                        alpha,
                        ..check.test
                    };
                    (test.means(sc, sb), (sc.0, sc.2), (sb.0, sb.2))
                }
            };
            if let Some(j) = j.filter(Judgement::harmful) {
                return Some(Trip {
                    check: i,
                    judgement: j,
                    canary: cv,
                    baseline: bv,
                });
            }
        }
        None
    }

    /// Judges every canary (every version but the baseline) that `skip` leaves, at `alpha`, and
    /// hands each harmful one and its trip to `found`. `read(version, i)` is the value of
    /// `self.series[i]`.
    pub fn judge_canaries(
        &self,
        versions: usize,
        alpha: f64,
        skip: &dyn Fn(usize) -> bool,
        read: &dyn Fn(usize, usize) -> f64,
        found: &mut dyn FnMut(usize, Trip),
    ) {
        let by_series = |v: usize, s: Series| match self.series.iter().position(|x| *x == s) {
            Some(i) => read(v, i),
            None => f64::NAN,
        };
        for c in 0..versions {
            if c == self.baseline || skip(c) {
                continue;
            }
            if let Some(trip) = self.judge_at(c, &by_series, alpha) {
                found(c, trip);
            }
        }
    }

    /// The warn line of a trip: the check, its figures, the test and what happens next.
    pub fn describe(&self, trip: &Trip, canary: &str, baseline: &str) -> String {
        self.describe_at(trip, canary, baseline, self.alpha, "")
    }

    /// [`Guard::describe`] of a test at `alpha`, with `scope` after the version's name (e.g.
    /// " on the pooled evidence of every Envoy").
    pub fn describe_at(
        &self,
        trip: &Trip,
        canary: &str,
        baseline: &str,
        alpha: f64,
        scope: &str,
    ) -> String {
        let Some(check) = self.checks.get(trip.check) else {
            return format!("guard tripped {canary}");
        };
        let j = &trip.judgement;
        let (unit, limit) = match check.test.harm {
            Harm::Higher => ("points", "+"),
            Harm::Lower => ("points", "-"),
            Harm::Either => ("%", "±"),
        };
        let limit = format!("{limit}{}", plain(check.test.limit));
        let figures = |(x, n): (f64, f64)| match check.kind {
            Kind::Proportion { .. } => format!("{}/{}", plain(x), plain(n)),
            Kind::Mean { .. } => {
                let mean = if n > 0.0 { x / n } else { 0.0 };
                format!("mean {} of {}", fixed(mean, 2), plain(n))
            }
        };
        let sign = if j.change >= 0.0 { "+" } else { "" };
        format!(
            "guard tripped {canary}{scope}: check {} ({}) changed {sign}{} {unit} against {baseline}, \
             beyond the limit {limit} {unit} ({canary} {}, {baseline} {}); ln Λ {} ≥ {} \
             (alpha {}, always-valid p {}); no new request is routed to {canary} \
             (override excepted) until the salt or guard.epoch changes",
            check.label,
            check.what,
            fixed(j.change, 2),
            figures(trip.canary),
            figures(trip.baseline),
            fixed(j.log_lr, 2),
            fixed(j.log_bound, 2),
            plain(alpha),
            sci(j.p),
        )
    }
}

/// `x` with `decimals` (≤ 6) digits after the point. Written by hand: the standard library's
/// float formatting would add ~25 KB to the module for a log line.
fn fixed(x: f64, decimals: u32) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let scale = 10u64.pow(decimals.min(6));
    let scaled = (x.abs() * scale as f64).round();
    if scaled >= 1e18 {
        return if x > 0.0 { ">1e18" } else { "<-1e18" }.into();
    }
    let v = scaled as u64;
    let mut s = String::new();
    if x < 0.0 && v != 0 {
        s.push('-');
    }
    s.push_str(&(v / scale).to_string());
    if decimals > 0 {
        let frac = (v % scale).to_string();
        s.push('.');
        for _ in frac.len()..decimals.min(6) as usize {
            s.push('0');
        }
        s.push_str(&frac);
    }
    s
}

/// `x` as a configuration would write it: up to 6 decimals, no trailing zeros.
fn plain(x: f64) -> String {
    let s = fixed(x, 6);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A small probability in scientific notation, `4.6e-250` (`0` and `1` as they are).
fn sci(p: f64) -> String {
    if !(p > 0.0 && p < 1.0) {
        return plain(p);
    }
    let mut e = p.log10().floor();
    let mut m = p / 10f64.powi(e as i32);
    if m >= 9.95 {
        m /= 10.0;
        e += 1.0;
    }
    format!("{}e{}", fixed(m, 1), e as i32)
}

/// The trip record kept in Envoy's shared data: who is tripped, for which generation.
pub mod record {
    /// The generation of a plan's trips: changes with the salt or `guard.epoch`, so that either
    /// clears every trip (FNV-1a 64 over the salt, then the epoch's bytes).
    pub fn generation(salt: &[u8], epoch: u64) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in salt.iter().chain(epoch.to_le_bytes().iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    /// `sticky-canary-guard/1 <generation hex> <version> <version>…`.
    pub fn encode<'a>(generation: u64, tripped: impl Iterator<Item = &'a str>) -> String {
        let mut s = format!("sticky-canary-guard/1 {generation:016x}");
        for v in tripped {
            s.push(' ');
            s.push_str(v);
        }
        s
    }

    /// The tripped versions of `generation`; `None` when the record is of another generation,
    /// another format, or not text.
    pub fn read(bytes: &[u8], generation: u64) -> Option<Vec<&str>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.split(' ');
        let gen = format!("{generation:016x}");
        match (words.next(), words.next()) {
            (Some("sticky-canary-guard/1"), Some(g)) if g == gen => {
                Some(words.filter(|w| !w.is_empty()).collect())
            }
            _ => None,
        }
    }

    /// The tripped versions of `generation`; none when the record is not of it ([`read`]).
    pub fn decode(bytes: &[u8], generation: u64) -> Vec<&str> {
        read(bytes, generation).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
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

    fn issue_example() -> serde_json::Value {
        json!({ "baseline": "stable", "alpha": 0.01, "min_samples": 200,
                "checks": [ {"error_ratio": {"max_points": 1.0}},
                            {"ratio": {"label": "approval", "numerator": "auth_approved",
                                       "denominator": "orders", "max_drop_points": 0.3}},
                            {"mean":  {"label": "aov", "sum": "order_value", "count": "orders",
                                       "max_drift_percent": 1.0}} ] })
    }

    #[test]
    fn compiles_the_issue_example() {
        let g = plan(issue_example()).unwrap().guard.unwrap();
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
            let mut g = issue_example();
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
        let g = plan(issue_example()).unwrap().guard.unwrap();
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
        let g = plan(issue_example()).unwrap().guard.unwrap();
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
