//! The policy's tests: each check's outcome on known counts (the one-shot z-tests against
//! figures computed by hand, the sequential test against ln Λ computed in Python), the notes in
//! words, the rollback guard, the verdict over rows and the evaluation's errors.

use super::*;
use crate::gate::report::{Outcome, Report, RollbackKind, Verdict};
use crate::gate::sources::{responses_5xx, Totals};
use crate::gate::testdata::*;
use crate::gate::{parse_mean, parse_ratio};
use crate::prom::Scrape;
use sticky_canary::metrics::names::{self, business_squares, business_total};
use sticky_canary::stats::sequential::{Harm, Test, TAU_PERCENT, TAU_POINTS};

// ---- checks -------------------------------------------------------------------------------

#[test]
fn approval_drop_significance_grows_with_samples() {
    // The same 3-point drop (97 % → 94 %) at growing sample sizes.
    let at = |n: f64| {
        let t = totals(&[
            payments("stable", n, 0.97 * n),
            payments("canary", n, 0.94 * n),
        ]);
        one_row_fixed(&t, approval())
    };
    let r = at(50.0);
    assert_eq!(r.outcome, Outcome::Insufficient);
    assert_eq!((r.z, r.p), (None, None), "no test below min samples");
    assert!(
        close(r.delta.unwrap(), -3.0, 1e-9),
        "the delta is still shown"
    );
    // n = 200: z = -1.447, p = 0.074: beyond the limit, not significant.
    let r = at(200.0);
    assert_eq!(r.outcome, Outcome::Inconclusive, "{}", r.note);
    assert!(close(r.p.unwrap(), 0.073_927_57, 1e-6), "{:?}", r.p);
    // n = 300: z = -1.772, p = 0.038.
    let r = at(300.0);
    assert_eq!(r.outcome, Outcome::Rollback, "{}", r.note);
    assert!(close(r.z.unwrap(), -1.772_388_57, 1e-6));
    // n = 2000: z = -4.58, p = 2.4e-6.
    let r = at(2000.0);
    assert_eq!(r.outcome, Outcome::Rollback);
    assert!(close(r.p.unwrap(), 2.366_5e-6, 1e-9), "{:?}", r.p);
    assert_eq!(r.test, "one-sided (lower is worse)");
}

#[test]
fn small_drop_at_300_is_inconclusive() {
    // 97 % → 96 %, n = 300 each: 1 point > 0.3, but p = 0.253.
    let t = totals(&[
        payments("stable", 300.0, 291.0),
        payments("canary", 300.0, 288.0),
    ]);
    let r = one_row_fixed(&t, approval());
    assert_eq!(r.outcome, Outcome::Inconclusive);
    assert!(close(r.p.unwrap(), 0.252_571_4, 1e-6));
}

#[test]
fn fifteen_transactions_are_insufficient_two_hundred_are_judged() {
    // 15 of 15 approved vs 10 of 15: a 33-point drop, but 15 transactions judge nothing.
    let t = totals(&[
        payments("stable", 15.0, 15.0),
        payments("canary", 15.0, 10.0),
    ]);
    let r = evaluate(&t, &fixed(vec![approval()])).unwrap();
    assert_eq!(r.rows[0].outcome, Outcome::Insufficient);
    assert_eq!(r.verdict, Verdict::Wait);
    assert!(
        r.rows[0].note.contains("needs 200 payments"),
        "{}",
        r.rows[0].note
    );
    // One side short is enough to wait.
    let t = totals(&[
        payments("stable", 5000.0, 4850.0),
        payments("canary", 199.0, 100.0),
    ]);
    assert_eq!(one_row_fixed(&t, approval()).outcome, Outcome::Insufficient);
    // At exactly 200 each the same collapse is judged.
    let t = totals(&[
        payments("stable", 200.0, 200.0),
        payments("canary", 200.0, 133.0),
    ]);
    assert_eq!(one_row_fixed(&t, approval()).outcome, Outcome::Rollback);
}

#[test]
fn a_change_exactly_at_the_limit_is_within_it() {
    // 94 % − 97 % is -3.000000000000003 in floating point; the limit is 3 points.
    let t = totals(&[
        payments("stable", 3000.0, 2910.0),
        payments("canary", 3000.0, 2820.0),
    ]);
    let r = one_row_fixed(
        &t,
        parse_ratio("approval=auth_approved/payments:3").unwrap(),
    );
    assert!(r.p.unwrap() < 1e-6);
    assert_eq!(r.outcome, Outcome::Pass, "{}", r.note);
    let r = one_row_fixed(
        &t,
        parse_ratio("approval=auth_approved/payments:2.99").unwrap(),
    );
    assert_eq!(r.outcome, Outcome::Rollback);
}

#[test]
fn favourable_ratio_change_passes() {
    let t = totals(&[
        payments("stable", 2000.0, 1880.0),
        payments("canary", 2000.0, 1980.0),
    ]);
    let r = one_row_fixed(&t, approval());
    assert_eq!(r.outcome, Outcome::Pass);
    assert!(r.delta.unwrap() > 4.9 && r.p.unwrap() > 0.99);
    assert!(r.note.ends_with("favourable (p 1.0000)"), "{}", r.note);
}

#[test]
fn significant_ratio_drop_within_limit_passes() {
    // 0.2-point drop with a million payments each: significant, but within 0.3.
    let n = 1.0e6;
    let t = totals(&[
        payments("stable", n, 0.970 * n),
        payments("canary", n, 0.968 * n),
    ]);
    let r = one_row_fixed(&t, approval());
    assert!(r.p.unwrap() < 1e-6);
    assert_eq!(r.outcome, Outcome::Pass);
    assert_eq!(
        r.note,
        "-0.20 points, within the limit -0.3 points (p <1e-4)"
    );
}

/// A higher-is-worse proportion check over `num` / responses: a rise beyond the limit rolls
/// back, a fall or a rise within it passes.
fn higher_is_worse_check(num: &str, check: Check) {
    let t = |b: f64, c: f64| {
        Totals::from_series(
            "checkout",
            &[
                (names::RESPONSES, "stable", 2000.0),
                (num, "stable", b),
                (names::RESPONSES, "canary", 2000.0),
                (num, "canary", c),
            ],
        )
    };
    let r = one_row_fixed(&t(10.0, 60.0), check.clone()); // 0.5 % → 3 %
    assert_eq!(r.outcome, Outcome::Rollback);
    assert!(close(r.delta.unwrap(), 2.5, 1e-9));
    assert_eq!(r.test, "one-sided (higher is worse)");
    assert_eq!(r.numerator, num);
    assert_eq!(
        one_row_fixed(&t(60.0, 10.0), check.clone()).outcome,
        Outcome::Pass
    );
    // 0.5 % → 1.2 %: significant-ish but within one point.
    assert_eq!(
        one_row_fixed(&t(10.0, 24.0), check.clone()).outcome,
        Outcome::Pass
    );
    // None anywhere.
    let r = one_row_fixed(&t(0.0, 0.0), check);
    assert_eq!((r.outcome, r.z), (Outcome::Pass, Some(0.0)));
}

#[test]
fn error_ratio_rise_rolls_back_fall_passes() {
    higher_is_worse_check(&responses_5xx(), Check::ErrorRatio { max_points: 1.0 });
}

#[test]
fn retry_ratio_rise_rolls_back_fall_passes() {
    let check = Check::RetryRatio { max_points: 1.0 };
    assert_eq!(check.label(), "retry_ratio");
    higher_is_worse_check(names::RETRIED_RESPONSES, check);
}

/// Known per-code counts from an Envoy scrape: 13 and 14 are errors, 5 (NOT_FOUND) is not,
/// `missing` and `invalid` count in the denominator only.
fn grpc_scrape(canary: &[(&str, u32)]) -> Totals {
    let mut text = String::new();
    let stable: &[(&str, u32)] = &[("0", 1980), ("13", 10), ("5", 10)];
    for (v, counts) in [("stable", stable), ("canary", canary)] {
        for status in sticky_canary::counting::grpc::LABELS {
            let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |c| c.1);
            text.push_str(&format!(
                "canary_grpc_responses_total{{service=\"checkout\",version=\"{v}\",\
                 grpc_status=\"{status}\"}} {n}\n\
                 canary_responses_total{{service=\"checkout\",version=\"{v}\",\
                 code_class=\"2xx\"}} {n}\n"
            ));
        }
    }
    Totals::from_scrapes("checkout", &[Scrape::parse(&text)])
}

#[test]
fn grpc_error_ratio_counts_the_configured_codes() {
    let check = Check::GrpcErrorRatio {
        max_points: 1.0,
        codes: vec![2, 4, 12, 13, 14, 15],
    };
    assert_eq!(check.label(), "grpc_error_ratio");
    assert_eq!(check.metrics(), [names::GRPC_RESPONSES]);
    assert_eq!(
        check.keys()[..2],
        [
            names::GRPC_RESPONSES.to_string(),
            "canary_grpc_responses_total{grpc_status=\"2\"}".to_string()
        ]
    );
    // 0.5 % → 3 % errors (14 and 13), NOT_FOUND and missing never errors.
    let bad = grpc_scrape(&[
        ("0", 1900),
        ("14", 40),
        ("13", 20),
        ("5", 30),
        ("missing", 10),
    ]);
    let r = one_row_seq(&bad, check.clone());
    assert_eq!(r.outcome, Outcome::Rollback);
    assert_eq!((r.baseline.x, r.baseline.n), (10.0, 2000.0));
    assert_eq!((r.candidate.x, r.candidate.n), (60.0, 2000.0));
    assert!(close(r.delta.unwrap(), 2.5, 1e-9));
    assert_eq!(
        r.numerator,
        "canary_grpc_responses_total{grpc_status=~\"2|4|12|13|14|15\"}"
    );
    assert_eq!(r.denominator, names::GRPC_RESPONSES);
    assert_eq!(
        one_row_fixed(&bad, check.clone()).outcome,
        Outcome::Rollback
    );
    // The same canary with NOT_FOUND counted as an error by a code list without 13/14.
    let not_found = Check::GrpcErrorRatio {
        max_points: 1.0,
        codes: vec![5],
    };
    let r = one_row_seq(&bad, not_found);
    assert_eq!((r.candidate.x, r.baseline.x), (30.0, 10.0));
    assert_eq!(
        r.outcome,
        Outcome::Pass,
        "+1 point exactly: within the limit"
    );
    // Many caller errors, few server errors: passes.
    let ok = grpc_scrape(&[("0", 1700), ("5", 290), ("13", 10)]);
    assert_eq!(one_row_seq(&ok, check.clone()).outcome, Outcome::Pass);
    // Few gRPC responses: insufficient.
    let few = grpc_scrape(&[("0", 90), ("13", 60)]);
    assert_eq!(
        one_row_seq(&few, check.clone()).outcome,
        Outcome::Insufficient
    );
    // No gRPC series at all: a clear error.
    let t = Totals::from_series(
        "checkout",
        &[
            (names::RESPONSES, "stable", 10.0),
            (names::RESPONSES, "canary", 10.0),
        ],
    );
    let e = evaluate(&t, &sequential(vec![check])).unwrap_err();
    assert!(
        e.contains("canary_grpc_responses_total not found") && e.contains("grpc"),
        "{e}"
    );
}

#[test]
fn order_value_drift() {
    let at = |n: f64, mean_c: f64, sd: f64| {
        let t = totals(&[
            orders("stable", n, 2000.0, sd),
            orders("canary", n, mean_c, sd),
        ]);
        one_row_fixed(&t, aov())
    };
    // 3 % down, sd 100 cents, 1000 orders each: z ≈ -13.4.
    let r = at(1000.0, 1940.0, 100.0);
    assert_eq!(r.outcome, Outcome::Rollback);
    assert!(close(r.delta.unwrap(), -3.0, 1e-9));
    assert!(close(r.z.unwrap(), -60.0 / 20f64.sqrt(), 1e-6), "{:?}", r.z);
    assert!(close(r.baseline.sd.unwrap(), 100.0, 1e-6));
    // 3 % UP is a bug too: money drift is two-sided.
    let r = at(1000.0, 2060.0, 100.0);
    assert_eq!(r.outcome, Outcome::Rollback);
    assert_eq!(r.test, "two-sided");
    // 0.2 %: within the limit, z ≈ 0.894, p ≈ 0.371.
    let r = at(1000.0, 2004.0, 100.0);
    assert_eq!(r.outcome, Outcome::Pass);
    assert!(close(r.p.unwrap(), 0.371_093, 1e-5), "{:?}", r.p);
    // 0.5 % with 100 000 orders: significant, within the limit.
    let r = at(1.0e5, 2010.0, 100.0);
    assert!(r.p.unwrap() < 1e-9);
    assert_eq!(r.outcome, Outcome::Pass);
    // 3 % with a wide spread (sd 20 €) at 200 orders: z = 0.3, not significant.
    let r = at(200.0, 2060.0, 2000.0);
    assert_eq!(r.outcome, Outcome::Inconclusive);
    // Below min samples.
    assert_eq!(at(150.0, 2600.0, 1.0).outcome, Outcome::Insufficient);
}

// ---- the sequential test (the default) against --fixed -------------------------------------

/// Payments: canary (n, approved) against stable (n, approved).
fn pay(c: (f64, f64), b: (f64, f64)) -> Totals {
    totals(&[payments("stable", b.0, b.1), payments("canary", c.0, c.1)])
}

/// Errors: canary (responses, 5xx) against stable (responses, 5xx).
fn errors(c: (f64, f64), b: (f64, f64)) -> Totals {
    let r5 = responses_5xx();
    Totals::from_series(
        "checkout",
        &[
            (names::RESPONSES, "stable", b.0),
            (r5.as_str(), "stable", b.1),
            (names::RESPONSES, "canary", c.0),
            (r5.as_str(), "canary", c.1),
        ],
    )
}

/// Orders: canary (n, mean, sd) against stable (n, mean, sd).
fn order_values(c: (f64, f64, f64), b: (f64, f64, f64)) -> Totals {
    totals(&[
        orders("stable", b.0, b.1, b.2),
        orders("canary", c.0, c.1, c.2),
    ])
}

/// (what, counts, check, sequential outcome, its ln Λ (None: −∞), `--fixed` outcome).
type Case = (&'static str, Totals, Check, Outcome, Option<f64>, Outcome);

#[test]
fn sequential_and_fixed_outcomes_on_the_same_counts() {
    use Outcome::*;
    let limit3 = || parse_ratio("approval=auth_approved/payments:3").unwrap();
    let limit299 = || parse_ratio("approval=auth_approved/payments:2.99").unwrap();
    let limit29 = || parse_ratio("approval=auth_approved/payments:2.9").unwrap();
    let err = || Check::ErrorRatio { max_points: 1.0 };
    // ln Λ by Python with the formulas of sticky_canary::stats::sequential (alpha 0.05,
    // τ 2 points / 5 %): 0.5·ln(V/(V+τ²)) + τ²x²/(2V(V+τ²)), for proportions with x less
    // one transaction per side, x − (1/nc + 1/nb) (−∞ when that leaves nothing).
    let cases: Vec<Case> = vec![
        (
            "the payment fall-through, 99.4 % -> 91.2 % on 250 canary payments",
            pay((250.0, 228.0), (5000.0, 4970.0)),
            approval(),
            Rollback,
            Some(67.419_540_845_772_94),
            Rollback,
        ),
        (
            "A/A at 2000 each",
            pay((2000.0, 1940.0), (2000.0, 1940.0)),
            approval(),
            Pass,
            None,
            Pass,
        ),
        (
            "97 % -> 94 % on 200 each: beyond the limit, few samples",
            pay((200.0, 188.0), (200.0, 194.0)),
            approval(),
            Inconclusive,
            Some(-0.156_327_913_821_404_24),
            Inconclusive,
        ),
        (
            "the same on 300 each: the one-shot test already rolls back, the sequential \
             one (valid at every look) waits",
            pay((300.0, 282.0), (300.0, 291.0)),
            approval(),
            Inconclusive,
            Some(0.104_493_827_581_575_44),
            Rollback,
        ),
        (
            "the same on 2000 each",
            pay((2000.0, 1880.0), (2000.0, 1940.0)),
            approval(),
            Rollback,
            Some(8.895_712_937_301_756),
            Rollback,
        ),
        (
            "exactly at the 3-point limit, 3000 each",
            pay((3000.0, 2820.0), (3000.0, 2910.0)),
            limit3(),
            Pass,
            None,
            Pass,
        ),
        (
            "0.01 points beyond a 2.99 limit: --fixed tests the change against 0, the \
             sequential test against the limit; 0.01 points is less than one payment per \
             side (2/3000 = 0.067 points), so no evidence at all (ln Λ −∞; −1.35 without the \
             continuity correction)",
            pay((3000.0, 2820.0), (3000.0, 2910.0)),
            limit299(),
            Inconclusive,
            None,
            Rollback,
        ),
        (
            "0.1 points beyond a 2.9 limit: beyond the correction, weighed, not evidence; \
             --fixed rolls back",
            pay((3000.0, 2820.0), (3000.0, 2910.0)),
            limit29(),
            Inconclusive,
            Some(-1.356_624_093_272_467_8),
            Rollback,
        ),
        (
            "0.2-point drop on a million each: within the limit",
            pay((1.0e6, 0.968e6), (1.0e6, 0.970e6)),
            approval(),
            Pass,
            None,
            Pass,
        ),
        (
            "approvals up 5 points: favourable",
            pay((2000.0, 1980.0), (2000.0, 1880.0)),
            approval(),
            Pass,
            None,
            Pass,
        ),
        (
            "too few payments",
            pay((15.0, 10.0), (15.0, 15.0)),
            approval(),
            Insufficient,
            None,
            Insufficient,
        ),
        (
            "5xx 0.5 % -> 3 %",
            errors((2000.0, 60.0), (2000.0, 10.0)),
            err(),
            Rollback,
            Some(7.596_263_144_219_339),
            Rollback,
        ),
        (
            "5xx 0.5 % -> 1.2 %: within one point",
            errors((2000.0, 24.0), (2000.0, 10.0)),
            err(),
            Pass,
            None,
            Pass,
        ),
        (
            "5xx 1 % -> 5.7 % on 106 responses (min samples 200: insufficient)",
            errors((106.0, 6.0), (1010.0, 10.0)),
            err(),
            Insufficient,
            None,
            Insufficient,
        ),
        (
            "order value 3 % down, sd 100, 1000 orders each",
            order_values((1000.0, 1940.0, 100.0), (1000.0, 2000.0, 100.0)),
            aov(),
            Rollback,
            Some(36.811_856_630_096_294),
            Rollback,
        ),
        (
            "order value 3 % up: either way is harm",
            order_values((1000.0, 2060.0, 100.0), (1000.0, 2000.0, 100.0)),
            aov(),
            Rollback,
            Some(36.811_856_630_096_294),
            Rollback,
        ),
        (
            "order value 3 % up with sd 20 € on 200 orders",
            order_values((200.0, 2060.0, 2000.0), (200.0, 2000.0, 2000.0)),
            aov(),
            Inconclusive,
            Some(-0.107_571_775_657_104_85),
            Inconclusive,
        ),
        (
            "order value +0.2 %: within the limit",
            order_values((1000.0, 2004.0, 100.0), (1000.0, 2000.0, 100.0)),
            aov(),
            Pass,
            None,
            Pass,
        ),
    ];
    for (what, t, check, seq, log_lr, fixed) in cases {
        let r = one_row_seq(&t, check.clone());
        assert_eq!(r.outcome, seq, "{what}: {}", r.note);
        assert_eq!(one_row_fixed(&t, check.clone()).outcome, fixed, "{what}");
        if seq == Insufficient {
            assert_eq!((r.log_lr, r.p, r.z), (None, None, None), "{what}");
            continue;
        }
        assert_eq!(r.z, None, "{what}: no z in the sequential test");
        let l = r.log_lr.unwrap();
        match log_lr {
            Some(want) => assert!(close(l, want, 1e-6), "{what}: ln Λ {l}, want {want}"),
            None => assert_eq!(l, f64::NEG_INFINITY, "{what}"),
        }
        let two_sided = matches!(check, Check::Mean { .. });
        let bound = if two_sided { 40f64 } else { 20f64 };
        assert!(close(r.log_bound.unwrap(), bound.ln(), 1e-12), "{what}");
        assert_eq!(
            r.test,
            match (&check, two_sided) {
                (_, true) => "mSPRT two-sided",
                (Check::Ratio { .. }, _) => "mSPRT one-sided (lower is worse)",
                _ => "mSPRT one-sided (higher is worse)",
            },
            "{what}"
        );
        // The always-valid p turns exactly where the outcome does.
        let p = r.p.unwrap();
        assert_eq!(p <= 0.05, seq == Rollback, "{what}: p {p}");
        assert_eq!(
            r.tau,
            Some(if two_sided { TAU_PERCENT } else { TAU_POINTS })
        );
        // The note says what decided, in words.
        let says = match seq {
            Rollback => "always-valid evidence (Λ ",
            Inconclusive if l == f64::NEG_INFINITY => {
                "no always-valid evidence yet (less than one transaction per side beyond it"
            }
            Inconclusive => "no always-valid evidence yet (Λ ",
            _ if r.delta.unwrap() > 0.0 && matches!(check, Check::Ratio { .. }) => "favourable",
            _ => "within the limit",
        };
        assert!(r.note.contains(says), "{what}: {}", r.note);
    }
}

#[test]
fn sequential_notes_name_the_evidence() {
    let t = pay((200.0, 182.0), (4000.0, 3976.0));
    let r = one_row_seq(&t, approval());
    // ln Λ 53.85 (the core's vector, with the continuity correction), Λ = 2.4e23.
    assert_eq!(
        r.note,
        "-8.40 points, beyond the limit -0.3 points, always-valid evidence \
         (Λ 2.4e23 ≥ 1/α 20)"
    );
    // ln Λ −0.156 by Python: Λ 0.86, p = min(1, (1/α)/Λ · α) = 1.
    let r = one_row_seq(&pay((200.0, 188.0), (200.0, 194.0)), approval());
    assert_eq!(
        r.note,
        "-3.00 points, beyond the limit -0.3 points, no always-valid evidence yet \
         (Λ 0.86 < 1/α 20, p 1.0000)"
    );
    // The same on 300 each: ln Λ 0.1045, Λ 1.11, p 0.05·20/1.11 = 0.9008.
    let r = one_row_seq(&pay((300.0, 282.0), (300.0, 291.0)), approval());
    assert_eq!(
        r.note,
        "-3.00 points, beyond the limit -0.3 points, no always-valid evidence yet \
         (Λ 1.11 < 1/α 20, p 0.9008)"
    );
    // Beyond the limit by less than one payment per side: no ratio to weigh.
    let r = one_row_seq(
        &pay((3000.0, 2820.0), (3000.0, 2910.0)),
        parse_ratio("approval=auth_approved/payments:2.99").unwrap(),
    );
    assert_eq!(
        r.note,
        "-3.00 points, beyond the limit -2.99 points, no always-valid evidence yet \
         (less than one transaction per side beyond it, p 1.0000)"
    );
    assert_eq!((r.outcome, r.p), (Outcome::Inconclusive, Some(1.0)));
    let r = one_row_seq(
        &order_values((1000.0, 1940.0, 100.0), (1000.0, 2000.0, 100.0)),
        aov(),
    );
    assert_eq!(
        r.note,
        "-3.00 %, beyond the limit ±1 %, always-valid evidence (Λ 9.7e15 ≥ 2/α 40)"
    );
    let r = one_row_seq(&pay((2000.0, 1980.0), (2000.0, 1880.0)), approval());
    assert_eq!(r.note, "+5.00 points, favourable");
    assert_eq!(r.p, Some(1.0));
    let r = one_row_seq(&pay((1.0e6, 0.968e6), (1.0e6, 0.970e6)), approval());
    assert_eq!(r.note, "-0.20 points, within the limit -0.3 points");
}

#[test]
fn sequential_rows_are_the_cores_judgement() {
    // The gate adds no statistics of its own: its figures are Test::proportions' and
    // Test::means', with the policy's alpha, limit and τ.
    let mut p = sequential(vec![approval(), aov()]);
    (p.alpha, p.tau_points, p.tau_percent) = (0.01, 0.5, 20.0);
    let mut parts = vec![
        payments("stable", 4000.0, 3900.0),
        payments("canary", 900.0, 860.0),
    ];
    parts.push(orders("stable", 3000.0, 2000.0, 900.0)[2..].to_vec());
    parts.push(orders("canary", 700.0, 2150.0, 950.0)[2..].to_vec());
    let t = totals(&parts);
    let r = evaluate(&t, &p).unwrap();
    let core = Test {
        alpha: 0.01,
        limit: 0.3,
        tau: 0.5,
        harm: Harm::Lower,
    }
    .proportions(860.0, 900.0, 3900.0, 4000.0)
    .unwrap();
    let row = &r.rows[0];
    assert_eq!(
        (row.log_lr, row.log_bound, row.p, row.excess, row.tau),
        (
            Some(core.log_lr),
            Some(core.log_bound),
            Some(core.p),
            Some(core.excess),
            Some(0.5)
        )
    );
    let sums = |v: &str| {
        (
            t.get(v, &business_total("order_value")),
            t.get(v, &business_squares("order_value")),
            t.get(v, &business_total("orders")),
        )
    };
    let core = Test {
        alpha: 0.01,
        limit: 1.0,
        tau: 20.0,
        harm: Harm::Either,
    }
    .means(sums("canary"), sums("stable"))
    .unwrap();
    let row = &r.rows[1];
    assert_eq!((row.log_lr, row.p), (Some(core.log_lr), Some(core.p)));
    assert!(close(row.delta.unwrap(), core.change, 1e-9));
    // A larger τ for the same counts changes the evidence, not the outcome rule.
    assert_ne!(
        one_row_of(&sequential(vec![approval()]), &t).log_lr,
        r.rows[0].log_lr
    );
}

#[test]
fn tau_must_be_positive_and_finite() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut p = sequential(vec![approval()]);
        p.tau_points = bad;
        assert!(p.validate().unwrap_err().contains("tau_points"), "{bad}");
        let mut p = sequential(vec![approval()]);
        p.tau_percent = bad;
        assert!(p.validate().unwrap_err().contains("tau_percent"), "{bad}");
    }
}

// ---- the rollback guard ---------------------------------------------------------------------

/// A rolled-back canary (approvals 97 % -> 90 %) and a healthy one, with these writes
/// series (`(version, method, value)`; method "" for no method label); no series at all
/// when `writes` is None.
fn guarded(writes: Option<&[(&str, &str, f64)]>) -> Report {
    let mut text = String::new();
    for (v, n, a) in [
        ("stable", 2000, 1940),
        ("bad", 2000, 1800),
        ("good", 2000, 1940),
    ] {
        let l = format!("service=\"checkout\",version=\"{v}\"");
        text.push_str(&format!(
            "canary_responses_total{{{l},code_class=\"2xx\"}} {n}\n\
             canary_business_payments_total{{{l}}} {n}\n\
             canary_business_auth_approved_total{{{l}}} {a}\n"
        ));
    }
    for (v, method, n) in writes.unwrap_or(&[]) {
        let m = if method.is_empty() {
            String::new()
        } else {
            format!(",method=\"{method}\"")
        };
        text.push_str(&format!(
            "{}{{service=\"checkout\",version=\"{v}\"{m}}} {n}\n",
            names::WRITES
        ));
    }
    let t = Totals::from_scrapes("checkout", &[Scrape::parse(&text)]);
    evaluate(&t, &sequential(vec![approval()])).unwrap()
}

#[test]
fn rollback_guard_zero_kill_gradual_unknown() {
    // Zero writes: a zero-kill rollback, for the rolled-back canary only.
    let r = guarded(Some(&[
        ("stable", "", 500.0),
        ("bad", "", 0.0),
        ("good", "", 9.0),
    ]));
    assert_eq!((r.verdict, r.exit_code()), (Verdict::Rollback, 2));
    assert_eq!(r.rollbacks.len(), 1);
    let w = &r.rollbacks[0];
    assert_eq!((w.version.as_str(), w.writes), ("bad", Some(0.0)));
    assert_eq!(w.kind(), RollbackKind::ZeroKill);
    assert_eq!(
        w.summary("stable", None),
        "zero-kill rollback: route every session to stable now (the canary changed no \
         state since the counters started)"
    );
    // A version without a series while others have one: no writes.
    let r = guarded(Some(&[("stable", "", 500.0)]));
    assert_eq!(r.rollbacks[0].kind(), RollbackKind::ZeroKill);

    // Writes: a gradual rollback with the steps, the methods counted when labelled.
    let r = guarded(Some(&[
        ("stable", "POST", 400.0),
        ("bad", "POST", 30.0),
        ("bad", "PUT", 12.0),
    ]));
    let w = &r.rollbacks[0];
    assert_eq!((w.kind(), w.writes), (RollbackKind::Gradual, Some(42.0)));
    assert_eq!(
        w.summary("stable", Some("30m")),
        "gradual rollback: the canary served 42 writes in the last 30m"
    );
    let steps = w.steps("stable", None);
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(steps[0].starts_with("stop new sessions reaching bad (weight 0 / cohort 0 %)"));
    assert!(steps[0].contains("flows that wrote on bad finish there"));
    assert!(
        steps[1].contains("42 requests (POST 30, PUT 12)"),
        "{}",
        steps[1]
    );
    assert!(steps[2].contains("canary_flows_draining{version=\"bad\"} at 0"));
    assert_eq!(steps[3], "scale bad down");
    let text = r.table();
    assert!(
        text.contains("rollback guard (canary_writes_total):"),
        "{text}"
    );
    assert!(text.contains("  bad: gradual rollback: the canary served 42 writes"));
    assert!(
        text.contains("    1. stop new sessions reaching bad"),
        "{text}"
    );
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    // Without a method label: the default methods are named.
    let r = guarded(Some(&[("bad", "", 7.0)]));
    assert!(r.rollbacks[0].steps("stable", None)[1].contains("POST, PUT, PATCH, DELETE"));

    // No canary_writes_total at all (a filter that counts no writes): not an error,
    // "unknown".
    let r = guarded(None);
    assert_eq!(r.verdict, Verdict::Rollback);
    let w = &r.rollbacks[0];
    assert_eq!((w.kind(), w.writes), (RollbackKind::Unknown, None));
    assert!(w.summary("stable", None).starts_with(
        "unknown: the filter publishes no canary_writes_total (a filter that counts no writes)"
    ));
    assert_eq!(w.steps("stable", None).len(), 4);

    // Not a rollback: no guard.
    let t = pay((2000.0, 1940.0), (2000.0, 1940.0));
    let r = evaluate(&t, &sequential(vec![approval()])).unwrap();
    assert!(r.rollbacks.is_empty());
    assert!(!r.table().contains("rollback guard"));
}

#[test]
fn rollback_guard_in_json() {
    let j = guarded(Some(&[("bad", "", 0.0)])).to_json();
    assert_eq!(j["rollback"]["kind"], "zero-kill");
    assert_eq!(j["rollback"]["writes"], 0);
    assert_eq!(j["rollback"]["versions"][0]["version"], "bad");
    let steps = j["rollback"]["steps"].as_array().unwrap();
    assert!(steps[0]
        .as_str()
        .unwrap()
        .starts_with("route every session to stable now"));
    let j = guarded(Some(&[("bad", "DELETE", 3.0), ("bad", "POST", 5.0)])).to_json();
    assert_eq!(
        (
            j["rollback"]["kind"].as_str(),
            j["rollback"]["writes"].as_i64()
        ),
        (Some("gradual"), Some(8))
    );
    assert_eq!(j["rollback"]["steps"].as_array().unwrap().len(), 4);
    assert_eq!(
        j["rollback"]["versions"][0]["methods"],
        serde_json::json!({"DELETE": 3, "POST": 5})
    );
    let j = guarded(None).to_json();
    assert_eq!(j["rollback"]["kind"], "unknown");
    assert_eq!(j["rollback"]["writes"], serde_json::Value::Null);
    // Two rolled-back canaries: the most cautious kind, the writes summed, each one's steps.
    let t = totals(&[
        payments("stable", 2000.0, 1940.0),
        payments("a", 2000.0, 1800.0),
        payments("b", 2000.0, 1800.0),
        vec![
            (names::WRITES.into(), "a".into(), 0.0),
            (names::WRITES.into(), "b".into(), 4.0),
        ],
    ]);
    let r = evaluate(&t, &sequential(vec![approval()])).unwrap();
    let j = r.to_json();
    assert_eq!(
        (
            j["rollback"]["kind"].as_str(),
            j["rollback"]["writes"].as_i64()
        ),
        (Some("gradual"), Some(4))
    );
    let steps: Vec<&str> = j["rollback"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(steps[0].starts_with("a: route every session") && steps[2].starts_with("b: stop"));
    // Not a rollback: null.
    let t = pay((2000.0, 1940.0), (2000.0, 1940.0));
    let j = evaluate(&t, &sequential(vec![approval()]))
        .unwrap()
        .to_json();
    assert_eq!(j["rollback"], serde_json::Value::Null);
}

// ---- verdict ------------------------------------------------------------------------------

#[test]
fn verdict_aggregation_and_exit_codes() {
    let n = 2000.0;
    let good = || payments("good", n, 0.97 * n);
    let bad = || payments("bad", n, 0.90 * n);
    let young = || payments("young", 20.0, 19.0);
    let base = || payments("stable", n, 0.97 * n);
    let p = fixed(vec![Check::ErrorRatio { max_points: 1.0 }, approval()]);

    let r = evaluate(&totals(&[base(), good()]), &p).unwrap();
    assert_eq!((r.verdict, r.exit_code()), (Verdict::Promote, 0));
    assert_eq!(r.canaries, ["good"]);
    assert_eq!(r.rows.len(), 2);

    let r = evaluate(&totals(&[base(), good(), young()]), &p).unwrap();
    assert_eq!((r.verdict, r.exit_code()), (Verdict::Wait, 3));
    assert!(
        r.reasons.iter().all(|x| x.starts_with("young ")),
        "{:?}",
        r.reasons
    );

    let r = evaluate(&totals(&[base(), good(), young(), bad()]), &p).unwrap();
    assert_eq!((r.verdict, r.exit_code()), (Verdict::Rollback, 2));
    assert_eq!(r.reasons.len(), 1);
    assert!(
        r.reasons[0].starts_with("bad approval: -7.00 points"),
        "{:?}",
        r.reasons
    );
    assert_eq!(r.canaries, ["bad", "good", "young"]);
    assert_eq!(r.rows.len(), 6);

    // Explicit canaries restrict the judgement.
    let mut only_good = p.clone();
    only_good.canaries = vec!["good".into()];
    let r = evaluate(&totals(&[base(), good(), bad()]), &only_good).unwrap();
    assert_eq!(r.verdict, Verdict::Promote);

    // --wait-exit.
    let mut r = evaluate(&totals(&[base(), young()]), &p).unwrap();
    r.wait_exit_code = 0;
    assert_eq!((r.verdict, r.exit_code()), (Verdict::Wait, 0));
}

#[test]
fn default_canaries_skip_versions_without_data() {
    // "retired" has every series at 0: not a canary by default.
    let t = totals(&[
        payments("stable", 2000.0, 1940.0),
        payments("canary", 2000.0, 1940.0),
        payments("retired", 0.0, 0.0),
    ]);
    assert_eq!(t.versions(), ["canary", "retired", "stable"]);
    let r = evaluate(&t, &fixed(vec![approval()])).unwrap();
    assert_eq!(r.canaries, ["canary"]);
    // Only the baseline has data: WAIT, not an error.
    let t = totals(&[
        payments("stable", 2000.0, 1940.0),
        payments("canary", 0.0, 0.0),
    ]);
    let r = evaluate(&t, &fixed(vec![approval()])).unwrap();
    assert_eq!((r.verdict, r.rows.len()), (Verdict::Wait, 0));
    assert!(r.reasons[0].contains("no version other than the baseline"));
}

#[test]
fn evaluation_errors_name_what_is_wrong() {
    let t = totals(&[
        payments("stable", 2000.0, 1940.0),
        payments("canary", 2000.0, 1900.0),
    ]);
    let err = |p: &Policy| evaluate(&t, p).unwrap_err();
    let e = err(&fixed(vec![parse_ratio("x=refunds/payments:1").unwrap()]));
    assert!(e.contains("canary_business_refunds_total"), "{e}");
    let e = err(&fixed(vec![aov()]));
    assert!(e.contains("canary_business_order_value_total"), "{e}");
    let mut p = fixed(vec![approval()]);
    p.baseline = "stabel".into();
    let e = err(&p);
    assert!(
        e.contains("\"stabel\"") && e.contains("canary, stable"),
        "{e}"
    );
    let mut p = fixed(vec![approval()]);
    p.canaries = vec!["v3".into()];
    assert!(err(&p).contains("\"v3\""));
    // A counter used as the SUM of a mean: no squares.
    let e = err(&fixed(vec![
        parse_mean("m=auth_approved/payments:1").unwrap()
    ]));
    assert!(e.contains("squares") && e.contains("`sum` rule"), "{e}");
    // A numerator that is not a subset of the denominator.
    let e = err(&fixed(vec![
        parse_ratio("r=payments/auth_approved:1").unwrap()
    ]));
    assert!(e.contains("exceeds"), "{e}");
    // The wrong service.
    let e = evaluate(&Totals::new("nope"), &fixed(vec![approval()])).unwrap_err();
    assert!(e.contains("\"nope\""), "{e}");
    // Duplicate labels.
    assert!(err(&fixed(vec![approval(), approval()])).contains("two checks"));
}

#[test]
fn the_wrong_service_names_the_services_in_the_data() {
    let scrape = Scrape::parse(
        "canary_responses_total{service=\"checkout\",version=\"stable\",code_class=\"2xx\"} 9\n\
         canary_business_orders_total{service=\"search\",version=\"stable\"} 7777\n",
    );
    let e = evaluate(
        &Totals::from_scrapes("chekout", &[scrape]),
        &fixed(vec![Check::ErrorRatio { max_points: 1.0 }]),
    )
    .unwrap_err();
    assert!(e.contains("checkout, search"), "{e}");
}
