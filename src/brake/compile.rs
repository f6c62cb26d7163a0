//! Compiling the `guard` block: each check against the plan's business rules and gRPC block,
//! refusals naming the field path.

use super::describe::plain;
use super::pool::Pool;
use super::{
    record, Check, Context, Guard, Kind, RawGuard, Series, DEFAULT_ALPHA, DEFAULT_MIN_SAMPLES,
};
use crate::check::{cat, check_label, ConfigError};
use crate::counting::business::{Rule, RuleKind};
use crate::counting::grpc::Grpc;
use crate::stats::sequential::{Harm, Test, TAU_PERCENT, TAU_POINTS};

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
}
