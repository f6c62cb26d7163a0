//! What the gate checks and how it judges: a [`Policy`] of [`Check`]s, [`evaluate`]d over
//! [`Totals`](crate::gate::Totals) into a [`Report`](crate::gate::Report).
//!
//! Every check compares one canary version with the baseline version. A check only judges when
//! both sides' denominators reach `min_samples`; it rolls back only when the change is harmful,
//! beyond its limit AND the evidence reaches `alpha`: by default with the always-valid
//! sequential test (`sticky_canary::stats::sequential`: the false-alarm rate stays at most alpha
//! however often the gate runs), with `--fixed` ([`Mode::Fixed`]) with the one-shot z-tests.
//! The statistics are the core's (`sticky_canary::stats`).
//!
//! - here: the [`Policy`] (which versions, which checks, `min_samples`, `alpha`, the [`Mode`]);
//! - [`checks`]: each [`Check`], what it reads, and the default business checks;
//! - [`evaluate()`]: every canary judged with every check, the verdict and the rollback guard;
//! - `rows`: one check for one canary judged into a report row (the statistics).
//!
//! The command-line spelling of a check (`--ratio`, `--mean`) is read by [`crate::gate::args`].

pub mod checks;
mod evaluate;
mod rows;

pub use checks::{default_business_checks, Check};
pub use evaluate::{evaluate, verdict_of};

use std::collections::BTreeSet;
use sticky_canary::metrics::names;
use sticky_canary::stats::sequential::{TAU_PERCENT, TAU_POINTS};

/// How the checks judge significance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The always-valid mixture sequential probability ratio test (the default): its
    /// false-alarm rate stays at most alpha however often the gate runs on cumulative counts.
    Sequential,
    /// `--fixed`: one-shot fixed-alpha z-tests, valid for a single look at the data.
    Fixed,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Fixed => "fixed",
        }
    }
}

/// What the gate checks, for which versions.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub baseline: String,
    /// Empty: every other version with a non-zero series in the data.
    pub canaries: Vec<String>,
    pub min_samples: u64,
    pub alpha: f64,
    pub checks: Vec<Check>,
    /// Sequential (the default) or `--fixed`.
    pub mode: Mode,
    /// The sequential test's mixing standard deviation τ for the error, retry and ratio checks,
    /// in percentage points beyond the limit (`--tau-points`, default [`TAU_POINTS`]).
    pub tau_points: f64,
    /// τ for the mean checks, in percent of the baseline's mean beyond the limit
    /// (`--tau-percent`, default [`TAU_PERCENT`]).
    pub tau_percent: f64,
}

impl Policy {
    /// min 200 samples, alpha 0.05, error ratio +1 point, approval −0.3 point, AOV ±1 %, the
    /// sequential test with τ 2 points and 5 %.
    pub fn default_for(baseline: &str) -> Policy {
        let mut checks = vec![Check::ErrorRatio { max_points: 1.0 }];
        checks.extend(default_business_checks());
        Policy {
            baseline: baseline.to_string(),
            canaries: Vec::new(),
            min_samples: 200,
            alpha: 0.05,
            checks,
            mode: Mode::Sequential,
            tau_points: TAU_POINTS,
            tau_percent: TAU_PERCENT,
        }
    }

    /// Keys read when present and never required: the rollback guard's `canary_writes_total`
    /// (a filter that counts no writes does not publish it; the guard then says "unknown").
    pub fn optional_keys(&self) -> Vec<String> {
        vec![names::WRITES.to_string()]
    }

    /// Every key the checks read, deduplicated, in order.
    pub fn keys(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.checks
            .iter()
            .flat_map(Check::keys)
            .filter(|k| seen.insert(k.clone()))
            .collect()
    }

    /// Refuses a policy the gate cannot judge with.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("alpha {} must be between 0 and 1", self.alpha));
        }
        for (name, tau) in [
            ("tau_points", self.tau_points),
            ("tau_percent", self.tau_percent),
        ] {
            if !(tau.is_finite() && tau > 0.0) {
                return Err(format!("{name} {tau} must be a positive number"));
            }
        }
        if self.checks.is_empty() {
            return Err("no checks".into());
        }
        let mut labels = BTreeSet::new();
        for c in &self.checks {
            if !labels.insert(c.label()) {
                return Err(format!("two checks are named {:?}", c.label()));
            }
        }
        if self.canaries.contains(&self.baseline) {
            return Err(format!(
                "version {:?} is both the baseline and a canary",
                self.baseline
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
