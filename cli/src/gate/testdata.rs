//! Test data of the gate's unit tests: the counters of a payment service and of an order
//! service, the gate's policies and checks over them, and the rows they evaluate to.

use crate::gate::args::{parse_mean, parse_ratio};
use crate::gate::policy::{evaluate, Check, Mode, Policy};
use crate::gate::report::Row;
use crate::gate::sources::{responses_5xx, Totals};
use sticky_canary::metrics::names::{self, business_squares, business_total};

/// Whether `a` and `b` are within `tol` of each other.
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// Counters of a payment service: responses (with 5xx), payments, approvals.
pub fn payments(version: &str, n: f64, approved: f64) -> Vec<(String, String, f64)> {
    vec![
        (names::RESPONSES.into(), version.into(), n),
        (responses_5xx(), version.into(), 0.0),
        (business_total("payments"), version.into(), n),
        (business_total("auth_approved"), version.into(), approved),
    ]
}

/// Sum and sum of squares of n values with this mean and sample standard deviation.
pub fn sums(n: f64, mean: f64, sd: f64) -> (f64, f64) {
    let s = n * mean;
    (s, (n - 1.0) * sd * sd + s * s / n)
}

/// Counters of an order service: orders, order_value and its squares.
pub fn orders(version: &str, n: f64, mean: f64, sd: f64) -> Vec<(String, String, f64)> {
    let (s, q) = sums(n, mean, sd);
    vec![
        (names::RESPONSES.into(), version.into(), n),
        (responses_5xx(), version.into(), 0.0),
        (business_total("orders"), version.into(), n),
        (business_total("order_value"), version.into(), s),
        (business_squares("order_value"), version.into(), q),
    ]
}

/// The totals of service `checkout` from these counters (each part a version's).
pub fn totals(parts: &[Vec<(String, String, f64)>]) -> Totals {
    let series: Vec<(&str, &str, f64)> = parts
        .iter()
        .flatten()
        .map(|(k, v, x)| (k.as_str(), v.as_str(), *x))
        .collect();
    Totals::from_series("checkout", &series)
}

/// The gate's defaults with these checks: the sequential test.
pub fn sequential(checks: Vec<Check>) -> Policy {
    Policy {
        checks,
        ..Policy::default_for("stable")
    }
}

/// The same with `--fixed`: the one-shot z-tests.
pub fn fixed(checks: Vec<Check>) -> Policy {
    Policy {
        mode: Mode::Fixed,
        ..sequential(checks)
    }
}

/// The default approval check: approvals / payments may drop by at most 0.3 points.
pub fn approval() -> Check {
    parse_ratio("approval=auth_approved/payments:0.3").unwrap()
}

/// An average-order-value check: order value / orders may drift by at most 1 %.
pub fn aov() -> Check {
    parse_mean("aov=order_value/orders:1").unwrap()
}

/// The single row of a one-check, one-canary evaluation under `policy`.
pub fn one_row_of(policy: &Policy, t: &Totals) -> Row {
    let r = evaluate(t, policy).unwrap();
    assert_eq!(r.rows.len(), 1, "{r:?}");
    r.rows[0].clone()
}

/// The single row of a one-check, one-canary evaluation with `--fixed`.
pub fn one_row_fixed(t: &Totals, check: Check) -> Row {
    one_row_of(&fixed(vec![check]), t)
}

/// The single row of a one-check, one-canary evaluation with the sequential test.
pub fn one_row_seq(t: &Totals, check: Check) -> Row {
    one_row_of(&sequential(vec![check]), t)
}
