//! The warn line of a trip, with numbers written by hand (the standard library's float
//! formatting would add ~25 KB to the module for a log line).

use super::{Guard, Kind, Trip};
use crate::stats::sequential::Harm;

impl Guard {
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
pub(super) fn fixed(x: f64, decimals: u32) -> String {
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
pub(super) fn plain(x: f64) -> String {
    let s = fixed(x, 6);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A small probability in scientific notation, `4.6e-250` (`0` and `1` as they are).
pub(super) fn sci(p: f64) -> String {
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
