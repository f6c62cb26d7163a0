//! The evaluation: every canary judged against the baseline with every check of a [`Policy`],
//! the verdict over the rows, and, with a ROLLBACK verdict, the rollback guard's reading of what
//! each rolled-back canary wrote.

use super::rows::judge;
use super::{Check, Policy};
use crate::gate::report::{Outcome, Report, Row, Verdict, Writes};
use crate::gate::sources::Totals;
use std::collections::BTreeSet;
use sticky_canary::metrics::names::{self, business_squares, business_total};

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
        let others: Vec<&str> = totals.other_services().collect();
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
    let rollbacks = if verdict == Verdict::Rollback {
        rollback_guard(totals, &canaries, &rows)
    } else {
        Vec::new()
    };
    Ok(Report {
        service: service.to_string(),
        baseline: policy.baseline.clone(),
        canaries,
        min_samples: policy.min_samples,
        alpha: policy.alpha,
        mode: policy.mode,
        tau_points: policy.tau_points,
        tau_percent: policy.tau_percent,
        rows,
        verdict,
        reasons,
        rollbacks,
        sources: Vec::new(),
        window: None,
        wait_exit_code: 3,
    })
}

/// The rollback guard: what each rolled-back canary wrote. No `canary_writes_total` in the data
/// at all is not an error: the writes are unknown.
fn rollback_guard(totals: &Totals, canaries: &[String], rows: &[Row]) -> Vec<Writes> {
    let known = totals.has_metric(names::WRITES);
    canaries
        .iter()
        .filter(|c| {
            rows.iter()
                .any(|r| r.canary == **c && r.outcome == Outcome::Rollback)
        })
        .map(|c| Writes {
            version: c.clone(),
            writes: known.then(|| totals.get(c, names::WRITES)),
            methods: if known {
                totals.labelled(c, names::WRITES, "method")
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// The error of a metric `check` reads missing from the data, with the likely cause.
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
    if metric == names::GRPC_RESPONSES {
        msg.push_str(" (does the plugin config have a `grpc` block?)");
        return msg;
    }
    if metric.starts_with(names::BUSINESS_PREFIX) {
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
