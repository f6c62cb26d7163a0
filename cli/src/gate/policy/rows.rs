//! One check for one canary judged into a report [`Row`]: the proportion checks (error, retry,
//! gRPC error and business ratios) and the mean checks, with the sequential test or, with
//! `--fixed`, the one-shot z-tests; the row's outcome and its note in words. The statistics are
//! the core's (`sticky_canary::stats`).

use super::{Check, Mode, Policy};
use crate::gate::report::{bound_name, fmt_bound, fmt_lr, fmt_n, fmt_p, Kind, Outcome, Row, Side};
use crate::gate::sources::{grpc_status, responses_5xx, Totals};
use sticky_canary::metrics::names::{self, business_squares, business_total};
use sticky_canary::stats::sequential::{Harm, Judgement, Test};
use sticky_canary::stats::{
    drift_percent, mean_and_variance, normal_cdf, two_proportion_z, welch_z,
};

/// The row of `check` for `canary` against the policy's baseline. Errors (exit 1): a "ratio"
/// whose numerator exceeds its denominator.
pub(super) fn judge(
    totals: &Totals,
    policy: &Policy,
    canary: &str,
    check: &Check,
) -> Result<Row, String> {
    let b = policy.baseline.as_str();
    match check {
        Check::ErrorRatio { max_points } | Check::RetryRatio { max_points } => {
            let num = match check {
                Check::RetryRatio { .. } => names::RETRIED_RESPONSES.to_string(),
                _ => responses_5xx(),
            };
            let den = names::RESPONSES;
            Ok(proportion_row(
                policy,
                canary,
                check,
                (&num, den),
                (totals.get(b, &num), totals.get(b, den)),
                (totals.get(canary, &num), totals.get(canary, den)),
                *max_points,
                false,
            ))
        }
        Check::GrpcErrorRatio { max_points, codes } => {
            // The error codes' series summed, over every grpc_status series of the version.
            let errors = |v: &str| codes.iter().map(|c| totals.get(v, &grpc_status(*c))).sum();
            let den = names::GRPC_RESPONSES;
            let list: Vec<String> = codes.iter().map(u8::to_string).collect();
            let num = format!("{den}{{grpc_status=~\"{}\"}}", list.join("|"));
            Ok(proportion_row(
                policy,
                canary,
                check,
                (&num, den),
                (errors(b), totals.get(b, den)),
                (errors(canary), totals.get(canary, den)),
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
            let [(_, xb, nb), (_, xc, nc)] = sides;
            Ok(proportion_row(
                policy,
                canary,
                check,
                (&num, &den),
                (xb, nb),
                (xc, nc),
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

/// The note of an insufficient row: what each side has against `min_samples` of `what`.
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

/// The row of a proportion check: `num` / `den` of the baseline (`xb` of `nb`) against the
/// canary (`xc` of `nc`), beyond `max_points` points the harmful way (down when
/// `higher_is_better`, else up).
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
    let test = match (policy.mode, higher_is_better) {
        (Mode::Fixed, true) => "one-sided (lower is worse)",
        (Mode::Fixed, false) => "one-sided (higher is worse)",
        (Mode::Sequential, true) => "mSPRT one-sided (lower is worse)",
        (Mode::Sequential, false) => "mSPRT one-sided (higher is worse)",
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
        log_lr: None,
        log_bound: None,
        excess: None,
        tau: None,
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
    let favourable = if higher_is_better { d > 0.0 } else { d < 0.0 };
    let change = format!("{d:+.2} points");
    let limit = if higher_is_better {
        format!("-{max_points}")
    } else {
        format!("+{max_points}")
    };
    if policy.mode == Mode::Sequential {
        let test = Test {
            alpha: policy.alpha,
            limit: max_points,
            tau: policy.tau_points,
            harm: if higher_is_better {
                Harm::Lower
            } else {
                Harm::Higher
            },
        };
        // Both sides have at least one trial here: a judgement always comes.
        if let Some(j) = test.proportions(xc, nc, xb, nb) {
            let wording = Wording {
                change: &change,
                limit: &limit,
                unit: "points",
                favourable,
            };
            apply(&mut row, &j, policy.tau_points, &wording, false);
        }
        return row;
    }
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
    row.note = note(outcome, &change, &limit, "points", favourable, p, policy);
    (row.z, row.p, row.outcome) = (Some(z), Some(p), outcome);
    row
}

/// The words of a row's note: the change (`-3.00 points`), the limit (`-0.3`), their unit, and
/// whether the change goes the good way.
struct Wording<'a> {
    change: &'a str,
    limit: &'a str,
    unit: &'a str,
    favourable: bool,
}

/// A sequential judgement into `row`: its outcome, figures and note.
fn apply(row: &mut Row, j: &Judgement, tau: f64, wording: &Wording, two_sided: bool) {
    let outcome = if j.harmful() {
        Outcome::Rollback
    } else if j.beyond() {
        Outcome::Inconclusive
    } else {
        Outcome::Pass
    };
    let Wording {
        change,
        limit,
        unit,
        favourable,
    } = wording;
    let (lr, bound, over) = (
        fmt_lr(j.log_lr),
        fmt_bound(j.log_bound),
        bound_name(two_sided),
    );
    row.note = match outcome {
        Outcome::Rollback => format!(
            "{change}, beyond the limit {limit} {unit}, always-valid evidence \
             (Λ {lr} ≥ {over} {bound})"
        ),
        // Beyond the limit by less than the continuity correction (one transaction per side):
        // ln Λ is −∞, there is no ratio to show.
        Outcome::Inconclusive if j.log_lr == f64::NEG_INFINITY => format!(
            "{change}, beyond the limit {limit} {unit}, no always-valid evidence yet \
             (less than one transaction per side beyond it, p {})",
            fmt_p(j.p)
        ),
        Outcome::Inconclusive => format!(
            "{change}, beyond the limit {limit} {unit}, no always-valid evidence yet \
             (Λ {lr} < {over} {bound}, p {})",
            fmt_p(j.p)
        ),
        _ if *favourable => format!("{change}, favourable"),
        _ => format!("{change}, within the limit {limit} {unit}"),
    };
    row.p = Some(j.p);
    row.log_lr = Some(j.log_lr);
    row.log_bound = Some(j.log_bound);
    row.excess = Some(j.excess);
    row.tau = Some(tau);
    row.outcome = outcome;
}

/// The note of a `--fixed` row: the change, the limit and the p-value, in words.
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

/// The row of a mean check: `sum` / `count` of the canary against the baseline, either way
/// beyond `max_drift_percent` percent of the baseline's mean.
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
        test: match policy.mode {
            Mode::Fixed => "two-sided",
            Mode::Sequential => "mSPRT two-sided",
        },
        log_lr: None,
        log_bound: None,
        excess: None,
        tau: None,
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
    let limit = format!("±{max_drift_percent}");
    let change = format!("{d:+.2} %");
    if policy.mode == Mode::Sequential {
        let test = Test {
            alpha: policy.alpha,
            limit: max_drift_percent,
            tau: policy.tau_percent,
            harm: Harm::Either,
        };
        let sums = |v: &str| {
            (
                totals.get(v, &business_total(sum)),
                totals.get(v, &business_squares(sum)),
                totals.get(v, &business_total(count)),
            )
        };
        match test.means(sums(canary), sums(&policy.baseline)) {
            Some(j) => {
                let wording = Wording {
                    change: &change,
                    limit: &limit,
                    unit: "%",
                    favourable: false,
                };
                apply(&mut row, &j, policy.tau_percent, &wording, true);
            }
            None => {
                row.note =
                    format!("the baseline's mean {sum}/{count} is 0: no percent of it to judge by");
            }
        }
        return row;
    }
    let z = welch_z(mc, vc, nc, mb, vb, nb);
    let p = 2.0 * normal_cdf(-z.abs());
    let outcome = decide(d.abs() > max_drift_percent + LIMIT_EPSILON, p, policy.alpha);
    row.note = note(outcome, &change, &limit, "%", false, p, policy);
    (row.z, row.p, row.outcome) = (Some(z), Some(p), outcome);
    row
}
