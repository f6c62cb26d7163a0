//! How the report writes numbers: counts, p-values, likelihood ratios and the bounds they must
//! reach (in the table, in the rows' notes and in the rollback guard's steps).

/// A count: whole numbers without decimals, others with one.
pub fn fmt_n(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

/// A p-value: four decimals, or `<1e-4`.
pub fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        "<1e-4".into()
    } else {
        format!("{p:.4}")
    }
}

/// A likelihood ratio from its logarithm: `4.9e26`, `3.51`, `inf`, or `-` for ln Λ = −∞ (the
/// estimate is not beyond the limit, or, for a proportion, beyond it by less than one transaction
/// per side: no evidence to weigh).
pub fn fmt_lr(log_lr: f64) -> String {
    if log_lr == f64::NEG_INFINITY || log_lr.is_nan() {
        return "-".into();
    }
    if log_lr == f64::INFINITY {
        return "inf".into();
    }
    let l10 = log_lr / std::f64::consts::LN_10;
    if l10 < 4.0 {
        let v = log_lr.exp();
        return if v < 10.0 {
            format!("{v:.2}")
        } else if v < 100.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        };
    }
    let mut e = l10.floor();
    let mut m = 10f64.powf(l10 - e);
    if m >= 9.95 {
        m /= 10.0;
        e += 1.0;
    }
    format!("{m:.1}e{e:.0}")
}

/// The bound Λ must reach, from its logarithm: `20` (1/α at 0.05), `200` (2/α at 0.01).
pub fn fmt_bound(log_bound: f64) -> String {
    let v = log_bound.exp();
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `1/α` or `2/α`, for the bound of a one- or two-sided check.
pub fn bound_name(two_sided: bool) -> &'static str {
    if two_sided {
        "2/α"
    } else {
        "1/α"
    }
}
