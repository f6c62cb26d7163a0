//! Statistics of the canary gate: the normal distribution, the two-proportion z-test and
//! Welch's test on means known by their sums and sums of squares.
//!
//! Pure arithmetic on `f64` (no allocation, no host): the `sticky-canary gate` command judges
//! with these, and the filter can run the same tests on its own counters. [`sequential`] is
//! the always-valid test both run by default.

pub mod sequential;

/// The complementary error function, erfc(x) = 1 − erf(x).
///
/// Chebyshev fit of Numerical Recipes (`erfcc`, 2nd ed. §6.2): fractional error below 1.2e-7
/// everywhere, so tail probabilities keep their relative accuracy.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal cumulative distribution function Φ(z).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Two-proportion z statistic with the pooled standard error: (p1 − p2) / SE, where
/// p = (x1 + x2) / (n1 + n2) and SE = sqrt(p (1 − p) (1/n1 + 1/n2)).
///
/// Positive when sample 1 has the higher proportion. When SE is 0 (both proportions 0, or both
/// 1) the statistic is 0. Needs n1, n2 > 0.
pub fn two_proportion_z(x1: f64, n1: f64, x2: f64, n2: f64) -> f64 {
    let d = x1 / n1 - x2 / n2;
    let p = (x1 + x2) / (n1 + n2);
    let se = (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    signed_ratio(d, se)
}

/// d / se, with 0/0 = 0 and d/0 = ±∞.
pub fn signed_ratio(d: f64, se: f64) -> f64 {
    if se > 0.0 {
        d / se
    } else if d == 0.0 {
        0.0
    } else {
        d.signum() * f64::INFINITY
    }
}

/// Mean and sample variance of n values known only by their sum S and sum of squares Q:
/// mean = S / n, var = (Q − S²/n) / (n − 1), clamped at 0 against rounding. `None` for n < 2.
pub fn mean_and_variance(sum: f64, squares: f64, n: f64) -> Option<(f64, f64)> {
    if n < 2.0 || n.is_nan() {
        return None;
    }
    let mean = sum / n;
    let var = ((squares - sum * sum / n) / (n - 1.0)).max(0.0);
    Some((mean, var))
}

/// Welch's statistic (m1 − m2) / sqrt(v1/n1 + v2/n2) for two means with their sample variances.
/// With a standard error of 0 it is 0 for equal means and ±∞ otherwise.
pub fn welch_z(m1: f64, v1: f64, n1: f64, m2: f64, v2: f64, n2: f64) -> f64 {
    signed_ratio(m1 - m2, (v1 / n1 + v2 / n2).sqrt())
}

/// Welch–Satterthwaite degrees of freedom of [`welch_z`] (reported; the gate itself uses the
/// normal approximation, which its minimum sample size keeps valid).
pub fn welch_df(v1: f64, n1: f64, v2: f64, n2: f64) -> f64 {
    let (a, b) = (v1 / n1, v2 / n2);
    (a + b).powi(2) / (a * a / (n1 - 1.0) + b * b / (n2 - 1.0))
}

/// The relative change from `b` to `c`, in percent: (c − b) / b × 100; 0 when both are 0, ±∞
/// when only `b` is.
pub fn drift_percent(b: f64, c: f64) -> f64 {
    if b != 0.0 {
        (c - b) / b * 100.0
    } else {
        signed_ratio(c - b, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn normal_cdf_known_values() {
        // Reference values: 0.5 * erfc(-z / sqrt 2) in double precision (Python math.erfc).
        let cases = [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (1.96, 0.975_002_104_851_779_5),
            (-3.0, 0.001_349_898_031_630_095_7),
            (-1.644_853_627, 0.05),
            (2.575_829_3, 0.995),
            (5.0, 0.999_999_713_348_428_1),
        ];
        for (z, want) in cases {
            let got = normal_cdf(z);
            assert!(close(got, want, 1e-7), "Φ({z}) = {got}, want {want}");
        }
        // Tails keep their relative accuracy (these are p-values).
        for (z, want) in [
            (-6.0, 9.865_876_450_377_012e-10),
            (-8.0, 6.220_960_574_271_819e-16),
        ] {
            let got = normal_cdf(z);
            assert!(((got - want) / want).abs() < 2e-7, "Φ({z}) = {got:e}");
        }
        for z in [-4.0, -2.2, -0.3, 0.7, 1.5, 3.3] {
            assert!(
                close(normal_cdf(z) + normal_cdf(-z), 1.0, 1e-12),
                "symmetry at {z}"
            );
        }
        assert_eq!(normal_cdf(-40.0), 0.0);
        assert_eq!(normal_cdf(40.0), 1.0);
        assert!(normal_cdf(f64::NAN).is_nan());
    }

    #[test]
    fn two_proportion_z_textbook() {
        // 520/1000 vs 480/1000: pooled p = 0.5, SE = sqrt(0.25 · 0.002) = 0.0223607, z = 1.78885.
        assert!(close(
            two_proportion_z(520.0, 1000.0, 480.0, 1000.0),
            1.788_854_4,
            1e-6
        ));
        assert!(close(
            two_proportion_z(480.0, 1000.0, 520.0, 1000.0),
            -1.788_854_4,
            1e-6
        ));
        // z² equals Pearson's chi-square (no continuity correction) of the 2×2 table.
        for (x1, n1, x2, n2) in [
            (15.0f64, 80.0, 30.0, 95.0),
            (1880.0, 2000.0, 1940.0, 2000.0),
        ] {
            let (a, b, c, d) = (x1, n1 - x1, x2, n2 - x2);
            let n = a + b + c + d;
            let chi2 = n * (a * d - b * c).powi(2) / ((a + b) * (c + d) * (a + c) * (b + d));
            let z = two_proportion_z(x1, n1, x2, n2);
            assert!(close(z * z, chi2, 1e-9 * chi2), "z² {} vs χ² {chi2}", z * z);
        }
        // 94 % vs 97 % at n = 2000 each.
        assert!(close(
            two_proportion_z(1880.0, 2000.0, 1940.0, 2000.0),
            -4.576_287_6,
            1e-6
        ));
        // No variance at all: 0, not NaN.
        assert_eq!(two_proportion_z(0.0, 500.0, 0.0, 300.0), 0.0);
        assert_eq!(two_proportion_z(500.0, 500.0, 300.0, 300.0), 0.0);
    }

    #[test]
    fn welch_known_example() {
        // Wikipedia "Welch's t-test", example 1: t = -2.46, ν ≈ 25.0.
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        // As the filter publishes them: sum and sum of squares.
        let sq = |xs: &[f64]| xs.iter().map(|x| x * x).sum::<f64>();
        let (ma, va) = mean_and_variance(a.iter().sum(), sq(&a), 15.0).unwrap();
        let (mb, vb) = mean_and_variance(b.iter().sum(), sq(&b), 15.0).unwrap();
        assert!(close(ma, 20.82, 1e-9) && close(mb, 22.986_666_666_7, 1e-9));
        assert!(close(va, 7.867_428_571_4, 1e-8), "{va}");
        assert!(close(vb, 3.812_666_666_7, 1e-8), "{vb}");
        let t = welch_z(ma, va, 15.0, mb, vb, 15.0);
        assert!(close(t, -2.455_356_398, 1e-8), "{t}");
        assert!(close(welch_df(va, 15.0, vb, 15.0), 24.988_529_29, 1e-6));
        assert_eq!(mean_and_variance(10.0, 100.0, 1.0), None);
        // Rounding never makes a variance negative.
        let (_, v) = mean_and_variance(3.0e9, 9.0e15 - 1.0, 1000.0).unwrap();
        assert!(v >= 0.0);
        assert_eq!(welch_z(5.0, 0.0, 10.0, 5.0, 0.0, 10.0), 0.0);
        assert_eq!(welch_z(6.0, 0.0, 10.0, 5.0, 0.0, 10.0), f64::INFINITY);
    }

    #[test]
    fn missing_values_count_as_zero_in_the_mean() {
        // 1000 orders, 990 of them worth 2000 cents, 10 with no valid value (0 added): the
        // mean is S / orders = 1980, and the variance sees the ten zeros.
        let s = 990.0 * 2000.0;
        let q = 990.0 * 2000.0 * 2000.0;
        let (m, v) = mean_and_variance(s, q, 1000.0).unwrap();
        let direct_var = (990.0 * 20.0f64.powi(2) + 10.0 * 1980.0f64.powi(2)) / 999.0;
        assert!(
            close(m, 1980.0, 1e-9) && close(v, direct_var, 1e-6),
            "{m} {v}"
        );
    }

    #[test]
    fn ratios_and_drift_at_zero() {
        assert_eq!(signed_ratio(3.0, 1.5), 2.0);
        assert_eq!(signed_ratio(0.0, 0.0), 0.0);
        assert_eq!(signed_ratio(-1.0, 0.0), f64::NEG_INFINITY);
        assert!(close(drift_percent(2000.0, 1940.0), -3.0, 1e-12));
        assert_eq!(drift_percent(0.0, 0.0), 0.0);
        assert_eq!(drift_percent(0.0, 5.0), f64::INFINITY);
    }
}
