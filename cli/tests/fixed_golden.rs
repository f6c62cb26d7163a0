//! `--fixed` against a golden file: the tables and JSON of five evaluations (PROMOTE; ROLLBACK on
//! 5xx, approvals and order value; a 3-point drop on 300 payments, which the one-shot test rolls
//! back; WAIT with inconclusive checks and a young canary; changes exactly at and just beyond a
//! limit), compared with `data/fixed-golden.txt`. The golden file holds what the one-shot z-tests
//! alone write; what the rollback guard and the sequential test add is removed before comparing:
//! the rollback guard's block of the table, and the JSON fields `mode`, `tau_points`,
//! `tau_percent`, `rollback` and, per check, `log_lr`, `log_bound`, `excess`, `tau` (all null
//! with `--fixed`, except `mode` and `rollback`).
#![cfg(test)]
use serde_json::Value;
use sticky_canary::metrics::names::{self, business_squares, business_total};
use sticky_canary_cli::gate::{
    evaluate, parse_mean, parse_ratio, responses_5xx, Check, Mode, Policy, Totals, Verdict,
};

fn series(
    v: &str,
    n: f64,
    appr: f64,
    e5: f64,
    orders: f64,
    mean: f64,
    sd: f64,
) -> Vec<(String, String, f64)> {
    let s = orders * mean;
    let q = (orders - 1.0) * sd * sd + s * s / orders;
    vec![
        (names::RESPONSES.into(), v.into(), n),
        (responses_5xx(), v.into(), e5),
        (business_total("payments"), v.into(), n),
        (business_total("auth_approved"), v.into(), appr),
        (business_total("orders"), v.into(), orders),
        (business_total("order_value"), v.into(), s),
        (business_squares("order_value"), v.into(), q),
    ]
}

type Case = (Vec<Vec<(String, String, f64)>>, Vec<Check>);

/// The counts and checks of the five evaluations (no checks: the gate's defaults).
fn cases() -> Vec<Case> {
    vec![
        (
            vec![
                series("stable", 2000.0, 1940.0, 4.0, 1000.0, 2000.0, 100.0),
                series("canary", 2000.0, 1939.0, 5.0, 1000.0, 2003.0, 100.0),
            ],
            vec![],
        ),
        (
            vec![
                series("stable", 2000.0, 1940.0, 4.0, 1000.0, 2000.0, 100.0),
                series("canary", 2000.0, 1880.0, 30.0, 1000.0, 2060.0, 100.0),
            ],
            vec![],
        ),
        (
            vec![
                series("stable", 300.0, 291.0, 1.0, 200.0, 2000.0, 2000.0),
                series("canary", 300.0, 282.0, 2.0, 200.0, 2060.0, 2000.0),
                series("young-version", 20.0, 19.0, 0.0, 10.0, 2000.0, 10.0),
            ],
            vec![],
        ),
        (
            vec![
                series("stable", 300.0, 291.0, 1.0, 200.0, 2000.0, 2000.0),
                series("canary", 300.0, 288.0, 2.0, 200.0, 2060.0, 2000.0),
                series("young-version", 20.0, 19.0, 0.0, 10.0, 2000.0, 10.0),
            ],
            vec![],
        ),
        (
            vec![
                series("stable", 3000.0, 2910.0, 0.0, 500.0, 2000.0, 100.0),
                series("canary", 3000.0, 2820.0, 0.0, 500.0, 2000.0, 100.0),
            ],
            vec![
                parse_ratio("approval=auth_approved/payments:3").unwrap(),
                parse_ratio("a2=auth_approved/payments:2.99").unwrap(),
                parse_mean("m=order_value/orders:0.5").unwrap(),
            ],
        ),
    ]
}

fn policy(t: &[Vec<(String, String, f64)>], extra: Vec<Check>, mode: Mode) -> (Totals, Policy) {
    let series: Vec<(&str, &str, f64)> = t
        .iter()
        .flatten()
        .map(|(k, v, x)| (k.as_str(), v.as_str(), *x))
        .collect();
    let mut p = Policy::default_for("stable");
    if !extra.is_empty() {
        p.checks = extra;
    }
    p.mode = mode;
    (Totals::from_series("checkout", &series), p)
}

#[test]
fn the_sequential_test_on_the_same_counts() {
    // The one-shot test rolls back cases 2 and 4; the sequential test waits for more evidence:
    // a 3-point drop on 300 payments (Λ 1.1 < 20), and a drop 0.01 points beyond a 2.99 limit
    // (it tests against the limit, not against zero; and 0.01 points is less than one payment
    // per side, so no evidence at all).
    let want = [
        (Verdict::Promote, Verdict::Promote),
        (Verdict::Rollback, Verdict::Rollback),
        (Verdict::Rollback, Verdict::Wait),
        (Verdict::Wait, Verdict::Wait),
        (Verdict::Rollback, Verdict::Wait),
    ];
    for (i, ((parts, extra), (fixed, sequential))) in cases().into_iter().zip(want).enumerate() {
        let (t, p) = policy(&parts, extra.clone(), Mode::Fixed);
        assert_eq!(evaluate(&t, &p).unwrap().verdict, fixed, "case {i}");
        let (t, p) = policy(&parts, extra, Mode::Sequential);
        let r = evaluate(&t, &p).unwrap();
        assert_eq!(r.verdict, sequential, "case {i}: {}", r.table());
    }
}

#[test]
fn fixed_matches_the_golden_file() {
    let mut out = String::new();
    for (parts, extra) in cases() {
        let (t, p) = policy(&parts, extra, Mode::Fixed);
        let r = evaluate(&t, &p).unwrap();
        out.push_str(&r.table());
        out.push_str("\n=====JSON\n");
        out.push_str(&serde_json::to_string_pretty(&r.to_json()).unwrap());
        out.push_str("\n=====END\n");
    }
    let golden = include_str!("data/fixed-golden.txt");
    let split = |text: &str| -> Vec<(String, Value)> {
        text.split("=====END\n")
            .filter(|c| !c.is_empty())
            .map(|c| {
                let (table, json) = c.split_once("\n=====JSON\n").unwrap();
                (table.to_string(), serde_json::from_str(json).unwrap())
            })
            .collect()
    };
    let (golden, now) = (split(golden), split(&out));
    assert_eq!(golden.len(), 5);
    assert_eq!(now.len(), 5);
    for (i, ((table_golden, json_golden), (table_now, mut json_now))) in
        golden.into_iter().zip(now).enumerate()
    {
        // The table: the same, but for the rollback guard's block after the verdict.
        let table_now = match table_now.find("\nrollback guard (canary_writes_total):\n") {
            Some(at) => {
                assert!(json_now["verdict"] == "ROLLBACK", "{i}");
                table_now[..at].to_string()
            }
            None => table_now,
        };
        assert_eq!(table_now, table_golden, "case {i}");
        // The JSON: the same, but for the fields of the rollback guard and the sequential test.
        assert_eq!(json_now["mode"], "fixed");
        let top = json_now.as_object_mut().unwrap();
        for key in ["mode", "tau_points", "tau_percent", "rollback"] {
            assert!(top.remove(key).is_some(), "{i}: {key}");
        }
        for check in json_now["checks"].as_array_mut().unwrap() {
            let check = check.as_object_mut().unwrap();
            for key in ["log_lr", "log_bound", "excess", "tau"] {
                assert_eq!(check.remove(key), Some(Value::Null), "{i}: {key}");
            }
        }
        assert_eq!(json_now, json_golden, "case {i}");
    }
}
