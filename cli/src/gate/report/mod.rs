//! The gate's result: one [`Row`] per check per canary, the [`Verdict`] and its exit code, and
//! their two renderings, a table for people ([`Report::table`]) and JSON ([`Report::to_json`]).
//!
//! - here: the result's types and its JSON;
//! - `guard`: the rollback guard ([`Writes`], [`RollbackKind`]): what a rolled-back canary wrote,
//!   and the steps of its rollback;
//! - `table`: the table ([`Report::table`]), wrapped to 100 columns;
//! - `numbers`: how counts, p-values and likelihood ratios are written (the table, the notes, the
//!   guard's steps).

mod guard;
mod numbers;
mod table;

pub use guard::{RollbackKind, Writes};
pub use numbers::{bound_name, fmt_bound, fmt_lr, fmt_n, fmt_p};

use crate::gate::policy::Mode;
use serde_json::{json, Value};

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
    /// Canary minus baseline over its standard error (`--fixed` only).
    pub z: Option<f64>,
    /// The p-value of the test (see `test`): with the sequential test, the always-valid p-value
    /// of this look (the smallest alpha at which it would roll back).
    pub p: Option<f64>,
    /// `one-sided (higher is worse)`, `one-sided (lower is worse)` or `two-sided` (`--fixed`),
    /// or the same prefixed with `mSPRT ` (the sequential test).
    pub test: &'static str,
    /// Sequential test only: ln Λ of the harmful side (−∞ when the estimate is not beyond the
    /// limit), and the ln of the bound it must reach, ln(1/α) or ln(2/α) (two-sided).
    pub log_lr: Option<f64>,
    pub log_bound: Option<f64>,
    /// Sequential test only: the harmful excess beyond the limit in the limit's unit (≤ 0 when
    /// within it), and the mixing standard deviation τ in the same unit.
    pub excess: Option<f64>,
    pub tau: Option<f64>,
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
    pub mode: Mode,
    /// The mixing standard deviations of the sequential test: points (error, retry and ratio
    /// checks) and percent of the baseline mean (mean checks).
    pub tau_points: f64,
    pub tau_percent: f64,
    pub rows: Vec<Row>,
    pub verdict: Verdict,
    /// One line per reason (the rows that decided the verdict).
    pub reasons: Vec<String>,
    /// With a ROLLBACK verdict: the writes of each rolled-back canary (the rollback guard).
    pub rollbacks: Vec<Writes>,
    /// Where the numbers came from (set by `gate::run`; empty from `evaluate`).
    pub sources: Vec<String>,
    pub window: Option<String>,
    /// The exit code for WAIT (3 unless `--wait-exit`).
    pub wait_exit_code: i32,
}

/// A finite number as JSON: an integer when whole, null when not finite.
fn num(v: f64) -> Value {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// An optional number as JSON: null when absent.
fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, num)
}

impl Row {
    /// The row as JSON: the figures as numbers (null when absent), the outcome and the note.
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
            "log_lr": opt(self.log_lr),
            "log_bound": opt(self.log_bound),
            "excess": opt(self.excess),
            "tau": opt(self.tau),
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

    /// The inputs, every check (numbers as numbers), the verdict and the exit code.
    pub fn to_json(&self) -> Value {
        json!({
            "service": self.service,
            "baseline": self.baseline,
            "canaries": self.canaries,
            "min_samples": self.min_samples,
            "alpha": self.alpha,
            "mode": self.mode.as_str(),
            "tau_points": if self.mode == Mode::Sequential { num(self.tau_points) } else { Value::Null },
            "tau_percent": if self.mode == Mode::Sequential { num(self.tau_percent) } else { Value::Null },
            "sources": self.sources,
            "window": self.window,
            "checks": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "verdict": self.verdict.as_str(),
            "reasons": self.reasons,
            "exit_code": self.exit_code(),
            "rollback": self.rollback_json(),
        })
    }
}

#[cfg(test)]
mod tests;
