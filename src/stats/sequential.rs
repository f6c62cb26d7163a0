//! The always-valid test of the canary: a mixture sequential probability ratio test (mSPRT) with
//! a normal mixing distribution (Johari, Pekelis, Walsh, "Peeking at A/B Tests", KDD 2017;
//! Robbins 1970), on the difference of two proportions or of two means.
//!
//! One statistic, whatever the check. Each check turns its counts into the **excess** `x`: the
//! observed change in its harmful direction *beyond its practical limit* (positive = harmful
//! beyond the limit), and `V`, the variance of that estimate. With `τ` the mixing standard
//! deviation (in the same unit as `x`), the mixture likelihood ratio of "the change is `L + θ`,
//! θ ~ N(0, τ²)" against "the change is exactly at the limit `L`" is
//!
//! ```text
//!   Λ = sqrt(V / (V + τ²)) · exp( τ² x² / (2 V (V + τ²)) )
//! ```
//!
//! (for proportions `x` first loses one transaction per side, a continuity correction: see
//! [`Test::proportions`])
//! and the check rolls back when `x > 0` and `Λ ≥ 1/α` (`2/α` for a two-sided check, one test
//! per side at α/2). Under the null "the change is at most the limit", `Λ` is a non-negative
//! (super)martingale and Ville's inequality bounds the chance that it EVER reaches `1/α` by α,
//! however often it is looked at: the gate may run every 10 s, the brake every second, with
//! the same false-alarm bound. Acting only on the harmful side keeps the bound (the event is a
//! subset) and makes the region `x ≥ c(V)`, monotone in the true change, so changes inside the
//! limit trip even less often. `V` is plugged in from the data (normal approximation), which is
//! why a minimum sample size remains; the simulations in the tests measure the real rate.
//!
//! `ln Λ` is what is computed (and what the PromQL templates compute): no overflow, no special
//! functions, only `ln`, `sqrt` and arithmetic, so a Prometheus rule gives the same answer.

/// Which change of a metric is harmful.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Harm {
    /// Higher is worse (error ratio, retry ratio).
    Higher,
    /// Lower is worse (approval ratio).
    Lower,
    /// Either way (order value, tax per order): two one-sided tests at α/2 each.
    Either,
}

/// The parameters of one sequential check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Test {
    /// The false-alarm bound over any number of looks, 0 < alpha < 1.
    pub alpha: f64,
    /// The practical limit, ≥ 0: percentage points for a proportion, percent of the baseline's
    /// mean for a mean. A change up to the limit is the null hypothesis.
    pub limit: f64,
    /// The mixing standard deviation τ, > 0, in the limit's unit: the size of harm *beyond the
    /// limit* the test detects fastest.
    pub tau: f64,
    pub harm: Harm,
}

/// Default τ of a proportion check: 2 percentage points beyond its limit.
pub const TAU_POINTS: f64 = 2.0;
/// Default τ of a mean check: 5 % of the baseline's mean beyond its limit.
pub const TAU_PERCENT: f64 = 5.0;

/// What one look at the counts concludes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    /// The observed change (canary − baseline): percentage points, or percent of the baseline's
    /// mean.
    pub change: f64,
    /// The harmful excess beyond the limit in the check's unit (points or percent); > 0 means
    /// the estimate is beyond the limit in a harmful direction.
    pub excess: f64,
    /// ln Λ of the harmful side (−∞ … +∞).
    pub log_lr: f64,
    /// ln of the bound Λ must reach: ln(1/α), or ln(2/α) for [`Harm::Either`].
    pub log_bound: f64,
    /// The always-valid p-value of this look: min(1, bound-scaled 1/Λ), i.e. the smallest alpha
    /// at which this look would roll back (1 when the estimate is not beyond the limit).
    pub p: f64,
}

impl Judgement {
    /// Beyond the limit in the harmful direction (the point estimate).
    pub fn beyond(&self) -> bool {
        self.excess > 0.0
    }

    /// Beyond the limit with always-valid evidence: roll back.
    pub fn harmful(&self) -> bool {
        self.beyond() && self.log_lr >= self.log_bound
    }
}

/// ln Λ of the normal-mixture SPRT for an excess `x` with variance `v` and mixing sd `tau`
/// (all in one unit). `v = 0` with `x ≠ 0` is certainty (+∞); `x = 0` gives ln sqrt(V/(V+τ²)).
pub fn log_mixture_lr(x: f64, v: f64, tau: f64) -> f64 {
    let t2 = tau * tau;
    if v.is_nan() || v <= 0.0 {
        return if x != 0.0 { f64::INFINITY } else { 0.0 };
    }
    0.5 * (v / (v + t2)).ln() + t2 * x * x / (2.0 * v * (v + t2))
}

impl Test {
    fn log_bound(&self) -> f64 {
        let sides = if self.harm == Harm::Either { 2.0 } else { 1.0 };
        (sides / self.alpha).ln()
    }

    /// One side: `excess` and `v`, `tau` in one unit; `to_unit` converts the excess to the
    /// check's unit for the report. Within 1e-9 (check's unit) of the limit counts as at it:
    /// floating point must not turn 94 % − 97 % into 3.000000000000003 points beyond 3.
    /// `correction` is taken off the excess before it counts as evidence (never off the
    /// change that is reported or compared with the limit).
    fn judge(
        &self,
        change: f64,
        excess: f64,
        correction: f64,
        v: f64,
        tau: f64,
        to_unit: f64,
    ) -> Judgement {
        let log_bound = self.log_bound();
        let shown = excess * to_unit;
        let beyond = shown > 1e-9;
        let evidence = excess - correction;
        let log_lr = if beyond && evidence > 0.0 {
            log_mixture_lr(evidence, v, tau)
        } else {
            f64::NEG_INFINITY
        };
        // Λ ≥ sides/α ⇔ α ≥ sides/Λ: the smallest alpha at which this look rolls back.
        let p = if beyond {
            (self.alpha * (log_bound - log_lr).exp()).min(1.0)
        } else {
            1.0
        };
        Judgement {
            change,
            excess: if beyond { shown } else { shown.min(0.0) },
            log_lr,
            log_bound,
            p,
        }
    }

    /// Proportions: `xc` of `nc` (canary) against `xb` of `nb` (baseline), with `limit` and
    /// `tau` in percentage points; `harm` [`Harm::Higher`] or [`Harm::Lower`] ([`Harm::Either`]
    /// tests both sides). `None` when a side has no trials.
    ///
    /// V is the variance of the difference *at the null's boundary*, where the test's error
    /// bound must hold: the canary's rate there is the baseline's moved by the limit,
    /// p0 = clamp(p̃b ± L, 0, 1), and V = p0(1 − p0)/nc + p̃b(1 − p̃b)/nb, with the baseline's
    /// rate smoothed by half a success and half a failure, p̃b = (xb + ½)/(nb + 1), so V > 0
    /// even at 0 % or 100 %. (The canary's own observed rate would inflate V exactly when the
    /// canary is bad: 91 % approvals have 15× the variance of 99.4 %.)
    ///
    /// Continuity correction: the excess counts as evidence only after one whole transaction
    /// per side is taken off it, x − (1/nc + 1/nb). Near the limit a rate such as 0.9 % failures
    /// gives a few events per hundred transactions; their count is skewed to the right, and the
    /// normal approximation alone let the false-trip rate at the limit reach 1.7× alpha at 200
    /// transactions (`make simulate`). With the correction it stays ≤ alpha from 100 on.
    pub fn proportions(&self, xc: f64, nc: f64, xb: f64, nb: f64) -> Option<Judgement> {
        if !(nc > 0.0 && nb > 0.0) {
            return None;
        }
        let d = xc / nc - xb / nb;
        let (limit, tau) = (self.limit / 100.0, self.tau / 100.0);
        let pb = (xb + 0.5) / (nb + 1.0);
        let correction = 1.0 / nc + 1.0 / nb;
        let side = |sign: f64| {
            let p0 = (pb + sign * limit).clamp(0.0, 1.0);
            let v = p0 * (1.0 - p0) / nc + pb * (1.0 - pb) / nb;
            self.judge(d * 100.0, sign * d - limit, correction, v, tau, 100.0)
        };
        Some(self.sides(side))
    }

    /// Means known by their sums `s`, sums of squares `q` and counts `n` (`(s, q, n)`, canary
    /// first), with `limit` and `tau` in percent of the baseline's mean. `None` when a side has
    /// fewer than 2 values or the baseline's mean is 0 (no percent of it).
    ///
    /// V = s²c/nc + s²b/nb with the sample variances (Welch's); the limit and τ become absolute
    /// by multiplying with |baseline mean| / 100 (plug-ins, like V).
    pub fn means(&self, c: (f64, f64, f64), b: (f64, f64, f64)) -> Option<Judgement> {
        let (mc, vc) = super::mean_and_variance(c.0, c.1, c.2)?;
        let (mb, vb) = super::mean_and_variance(b.0, b.1, b.2)?;
        if mb == 0.0 || !mb.is_finite() || !mc.is_finite() {
            return None;
        }
        let scale = mb.abs() / 100.0;
        let v = vc / c.2 + vb / b.2;
        let (d, limit, tau) = (mc - mb, self.limit * scale, self.tau * scale);
        Some(self.sides(|sign| self.judge(d / scale, sign * d - limit, 0.0, v, tau, 1.0 / scale)))
    }

    /// The judgement of the harmful side, or of the worse of the two for [`Harm::Either`];
    /// `side(+1)` judges "higher is worse", `side(−1)` "lower is worse".
    fn sides(&self, side: impl Fn(f64) -> Judgement) -> Judgement {
        match self.harm {
            Harm::Higher => side(1.0),
            Harm::Lower => side(-1.0),
            Harm::Either => {
                let (up, down) = (side(1.0), side(-1.0));
                if up.excess >= down.excess {
                    up
                } else {
                    down
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    const APPROVAL: Test = Test {
        alpha: 0.01,
        limit: 0.3,
        tau: TAU_POINTS,
        harm: Harm::Lower,
    };

    #[test]
    fn mixture_ratio_known_values() {
        // Reference: Python, 0.5·ln(V/(V+τ²)) + τ²x²/(2V(V+τ²)).
        assert!(close(
            log_mixture_lr(0.05, 0.0004, 0.02),
            1.215_926_409_720_027_5,
            1e-12
        ));
        // No excess: the mixture only pays for its spread.
        assert!(close(
            log_mixture_lr(0.0, 1.0, 1.0),
            0.5 * 0.5f64.ln(),
            1e-15
        ));
        assert_eq!(log_mixture_lr(0.1, 0.0, 0.02), f64::INFINITY);
        assert_eq!(log_mixture_lr(0.0, 0.0, 0.02), 0.0);
        // Increasing in |x|, symmetric.
        let mut last = f64::NEG_INFINITY;
        for i in 0..50 {
            let x = f64::from(i) * 0.01;
            let l = log_mixture_lr(x, 0.001, 0.02);
            assert!(l > last && close(l, log_mixture_lr(-x, 0.001, 0.02), 1e-12));
            last = l;
        }
    }

    /// (canary x of n, baseline x of n, test, change, excess, ln Λ or None for −∞, harmful).
    type Vector = ((f64, f64), (f64, f64), Test, f64, f64, Option<f64>, bool);

    #[test]
    fn proportion_vectors() {
        let errors = Test {
            alpha: 0.01,
            limit: 1.0,
            tau: TAU_POINTS,
            harm: Harm::Higher,
        };
        // Expected figures: Python, with the formulas of the doc comments.
        let cases: [Vector; 5] = [
            // The payment fall-through at 200 canary orders: 91 % against 99.4 %.
            (
                (182.0, 200.0),
                (3976.0, 4000.0),
                APPROVAL,
                -8.4,
                8.1,
                Some(53.854_322_173_523_634),
                true,
            ),
            // The same drop on 50 orders: beyond the limit, not yet evidence at alpha 0.01
            // (ln 100 = 4.61), once one order per side is taken off.
            (
                (46.0, 50.0),
                (994.0, 1000.0),
                APPROVAL,
                -7.4,
                7.1,
                Some(3.764_957_761_171_023),
                false,
            ),
            // 5xx 3 % against 0.1 %.
            (
                (30.0, 1000.0),
                (5.0, 5000.0),
                errors,
                2.9,
                1.9,
                Some(11.962_320_771_267_107),
                true,
            ),
            // A/A: no change, not beyond.
            (
                (994.0, 1000.0),
                (9940.0, 10000.0),
                APPROVAL,
                0.0,
                -0.3,
                None,
                false,
            ),
            // Exactly at the limit (94 % against 97 %, limit 3 points): within it.
            (
                (940.0, 1000.0),
                (970.0, 1000.0),
                Test {
                    limit: 3.0,
                    ..APPROVAL
                },
                -3.0,
                0.0,
                None,
                false,
            ),
        ];
        for (i, ((xc, nc), (xb, nb), test, change, excess, llr, harmful)) in
            cases.into_iter().enumerate()
        {
            let j = test.proportions(xc, nc, xb, nb).unwrap();
            assert!(close(j.change, change, 1e-9), "{i}: change {}", j.change);
            assert!(close(j.excess, excess, 1e-9), "{i}: excess {}", j.excess);
            match llr {
                Some(l) => assert!(close(j.log_lr, l, 1e-9), "{i}: ln Λ {}", j.log_lr),
                None => assert_eq!(j.log_lr, f64::NEG_INFINITY, "{i}"),
            }
            assert_eq!(j.harmful(), harmful, "{i}: {j:?}");
            assert!(close(j.log_bound, 100f64.ln(), 1e-12));
            // The p-value is the alpha at which this look turns: harmful ⇔ p ≤ alpha.
            assert_eq!(j.p <= test.alpha, harmful, "{i}: p {}", j.p);
        }
        assert_eq!(APPROVAL.proportions(1.0, 0.0, 5.0, 10.0), None);
        assert_eq!(APPROVAL.proportions(1.0, 1.0, 0.0, 0.0), None);
    }

    #[test]
    fn favourable_changes_never_roll_back() {
        // Approvals up 5 points, errors down: however many samples, nothing to roll back.
        let j = APPROVAL
            .proportions(99_000.0, 100_000.0, 94_000.0, 100_000.0)
            .unwrap();
        assert!(!j.beyond() && !j.harmful() && j.p == 1.0);
        let errors = Test {
            harm: Harm::Higher,
            limit: 0.0,
            ..APPROVAL
        };
        assert!(!errors.proportions(0.0, 1e6, 500.0, 1e6).unwrap().harmful());
    }

    #[test]
    fn evidence_grows_with_samples() {
        // A fixed 2-point drop beyond a 0.3 limit: ln Λ grows with n, turns harmful at some n
        // and stays so.
        let mut turned = None;
        let mut last = f64::NEG_INFINITY;
        for k in 1..=100 {
            let n = f64::from(k) * 20.0;
            let j = APPROVAL
                .proportions(n * 0.974, n, n * 19.0 * 0.994, n * 19.0)
                .unwrap();
            assert!(j.log_lr >= last - 1e-9, "n {n}: {} < {last}", j.log_lr);
            last = j.log_lr;
            if j.harmful() && turned.is_none() {
                turned = Some(n);
            }
            if turned.is_some() {
                assert!(j.harmful(), "n {n}");
            }
        }
        assert!(
            turned.is_some_and(|n| n > 100.0 && n < 2000.0),
            "{turned:?}"
        );
    }

    #[test]
    fn mean_vectors_two_sided() {
        // Canary 100 orders, mean 2100, sd² 250 000 (population form in Σx²); baseline 2000
        // orders, mean 2000: +5 %, excess 4 % beyond the 1 % limit; ln Λ by Python.
        let test = Test {
            alpha: 0.01,
            limit: 1.0,
            tau: TAU_PERCENT,
            harm: Harm::Either,
        };
        let c = (210_000.0, 100.0 * (250_000.0 + 2100.0 * 2100.0), 100.0);
        let b = (4_000_000.0, 2000.0 * (250_000.0 + 2000.0 * 2000.0), 2000.0);
        let j = test.means(c, b).unwrap();
        assert!(
            close(j.change, 5.0, 1e-9) && close(j.excess, 4.0, 1e-9),
            "{j:?}"
        );
        assert!(close(j.log_lr, 0.172_943_696_540_880_27, 1e-9), "{j:?}");
        assert!(close(j.log_bound, 200f64.ln(), 1e-12));
        assert!(!j.harmful());
        // Ten times the orders on both sides: the same drift is evidence.
        let x10 = |(s, q, n): (f64, f64, f64)| (s * 10.0, q * 10.0, n * 10.0);
        assert!(test.means(x10(c), x10(b)).unwrap().harmful());
        // The mirror image (−5 %) is judged the same, on the other side.
        let low = (190_000.0, 100.0 * (250_000.0 + 1900.0 * 1900.0), 100.0);
        let jl = test.means(low, b).unwrap();
        assert!(close(jl.change, -5.0, 1e-9) && close(jl.excess, 4.0, 1e-9));
        // Too few values, or a zero baseline mean: no judgement.
        assert_eq!(test.means((5.0, 25.0, 1.0), b), None);
        assert_eq!(test.means(c, (0.0, 0.0, 100.0)), None);
        // No spread at all and a drift beyond the limit: certain.
        let flat = |m: f64, n: f64| (m * n, m * m * n, n);
        let j = test.means(flat(105.0, 50.0), flat(100.0, 50.0)).unwrap();
        assert!(j.harmful() && j.log_lr == f64::INFINITY && j.p == 0.0);
    }
}
