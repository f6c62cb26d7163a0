//! The report's tests: its JSON, and its table aligned and within 100 columns, under both
//! tests; how likelihood ratios and bounds are written.

use crate::gate::policy::{evaluate, Mode, Policy};
use crate::gate::testdata::*;
use serde_json::{json, Value};

fn sample_report(mode: Mode) -> super::Report {
    let mut parts = vec![
        payments("stable", 2000.0, 1940.0),
        payments("canary", 2000.0, 1880.0),
    ];
    parts.push(orders("stable", 1000.0, 2000.0, 100.0)[2..].to_vec());
    parts.push(orders("canary", 1000.0, 2060.0, 100.0)[2..].to_vec());
    let policy = Policy {
        mode,
        ..Policy::default_for("stable")
    };
    let mut r = evaluate(&totals(&parts), &policy).unwrap();
    r.sources = vec!["envoy http://127.0.0.1:9901".into()];
    r
}

#[test]
fn json_shape() {
    let r = sample_report(Mode::Fixed);
    let j = r.to_json();
    assert_eq!(j["verdict"], "ROLLBACK");
    assert_eq!(j["exit_code"], 2);
    assert_eq!(j["service"], "checkout");
    assert_eq!(j["baseline"], "stable");
    assert_eq!(j["canaries"], json!(["canary"]));
    assert_eq!(j["min_samples"], 200);
    assert_eq!(j["alpha"], 0.05);
    assert_eq!(j["sources"][0], "envoy http://127.0.0.1:9901");
    assert_eq!(j["window"], Value::Null);
    assert_eq!(j["mode"], "fixed");
    assert_eq!(
        (&j["tau_points"], &j["tau_percent"]),
        (&Value::Null, &Value::Null)
    );
    let checks = j["checks"].as_array().unwrap();
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["error_ratio", "approval", "aov"]);
    let a = &checks[1];
    assert_eq!(a["kind"], "ratio");
    assert_eq!(a["outcome"], "rollback");
    assert_eq!(a["numerator"], "canary_business_auth_approved_total");
    assert_eq!(a["baseline"]["n"], 2000);
    assert_eq!(a["version"], "canary");
    assert_eq!(a["canary"]["x"], 1880);
    assert!(close(a["canary"]["value"].as_f64().unwrap(), 0.94, 1e-12));
    assert!(close(a["delta"].as_f64().unwrap(), -3.0, 1e-9));
    assert_eq!(a["delta_unit"], "points");
    assert!(a["z"].is_f64() && a["p"].is_f64());
    assert_eq!(a["threshold"], 0.3);
    assert_eq!(a["test"], "one-sided (lower is worse)");
    assert_eq!(
        (&a["log_lr"], &a["log_bound"]),
        (&Value::Null, &Value::Null)
    );
    let m = &checks[2];
    assert_eq!(
        (m["kind"].as_str(), m["delta_unit"].as_str()),
        (Some("mean"), Some("percent"))
    );
    assert!(close(m["baseline"]["sd"].as_f64().unwrap(), 100.0, 1e-6));
    assert_eq!(m["outcome"], "rollback");
    assert_eq!(j["reasons"].as_array().unwrap().len(), 2);
    // Insufficient rows have null statistics, not strings.
    let t = totals(&[payments("stable", 10.0, 9.0), payments("canary", 10.0, 9.0)]);
    let j = evaluate(&t, &fixed(vec![approval()])).unwrap().to_json();
    assert_eq!(j["checks"][0]["z"], Value::Null);
    assert_eq!(j["checks"][0]["outcome"], "insufficient");
    assert_eq!(
        (j["verdict"].as_str(), j["exit_code"].as_i64()),
        (Some("WAIT"), Some(3))
    );
}

#[test]
fn table_is_aligned_and_fits_100_columns() {
    let r = sample_report(Mode::Fixed);
    let text = r.table();
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line:?}");
    }
    let lines: Vec<&str> = text.lines().collect();
    let head = lines.iter().position(|l| *l == "canary vs stable").unwrap();
    let rows = &lines[head + 1..head + 5];
    assert!(rows[0].starts_with("  check"), "{text}");
    assert!(rows[1].starts_with("  error_ratio"), "{text}");
    // Right-aligned numeric columns: "outcome" starts at the same column in every row.
    let col = rows[0].find("outcome").unwrap(); // ASCII header: bytes are columns
    for row in &rows[1..] {
        let chars: Vec<char> = row.chars().collect();
        assert!(
            chars.len() > col && chars[col - 2..col] == [' ', ' '],
            "{row:?}"
        );
        assert_ne!(chars[col], ' ', "{row:?}");
    }
    assert!(
        rows[2].contains("97.00%") && rows[2].contains("94.00%"),
        "{}",
        rows[2]
    );
    assert!(rows[2].contains("-3.00pt") && rows[2].contains("-0.30pt"));
    assert!(rows[2].trim_end().ends_with("ROLLBACK"));
    assert!(rows[3].contains("+3.00%") && rows[3].contains("±1.00%"));
    assert!(text.contains("verdict: ROLLBACK (exit 2)"), "{text}");
    assert!(text.contains("  canary approval: -3.00 points, beyond the limit -0.3 points"));
    assert!(text.contains("from envoy http://127.0.0.1:9901"));
    // WAIT says why.
    let t = totals(&[payments("stable", 10.0, 9.0), payments("canary", 10.0, 9.0)]);
    let text = evaluate(&t, &fixed(vec![approval()])).unwrap().table();
    assert!(
        text.contains("verdict: WAIT (exit 3), not enough data yet"),
        "{text}"
    );
    assert!(text.contains("needs 200 payments per side, has 10 (baseline) and 10 (canary)"));
    // Several canaries: one block each, same column positions.
    let t = totals(&[
        payments("stable", 2000.0, 1940.0),
        payments("canary", 2000.0, 1940.0),
        payments("a-much-longer-version-name", 300.0, 291.0),
    ]);
    let text = evaluate(&t, &fixed(vec![approval()])).unwrap().table();
    let lines: Vec<&str> = text.lines().collect();
    let at = |l: &str| lines.iter().position(|x| *x == l).unwrap();
    let (a, c) = (
        at("a-much-longer-version-name vs stable"),
        at("canary vs stable"),
    );
    assert_eq!(lines[a + 1], lines[c + 1], "same header");
    assert_eq!(lines[a + 2].len(), lines[c + 2].len(), "{text}");
}

#[test]
fn sequential_json_shape() {
    let j = sample_report(Mode::Sequential).to_json();
    assert_eq!(
        (j["verdict"].as_str(), j["exit_code"].as_i64()),
        (Some("ROLLBACK"), Some(2))
    );
    assert_eq!(j["mode"], "sequential");
    assert_eq!(
        (j["tau_points"].as_f64(), j["tau_percent"].as_f64()),
        (Some(2.0), Some(5.0))
    );
    let checks = j["checks"].as_array().unwrap();
    // The fields of --fixed keep their names and meaning; z is the fixed test's only.
    let a = &checks[1];
    assert_eq!(a["outcome"], "rollback");
    assert_eq!(a["test"], "mSPRT one-sided (lower is worse)");
    assert!(close(a["delta"].as_f64().unwrap(), -3.0, 1e-9));
    assert_eq!(a["delta_unit"], "points");
    assert_eq!(a["threshold"], 0.3);
    assert_eq!(a["z"], Value::Null);
    // ln Λ by Python: 2000 payments each, 97 % → 94 %, x = 2.7 points less one payment
    // per side (0.1 point).
    assert!(close(
        a["log_lr"].as_f64().unwrap(),
        8.895_712_937_301_756,
        1e-6
    ));
    assert!(close(a["log_bound"].as_f64().unwrap(), 20f64.ln(), 1e-12));
    assert!(close(a["excess"].as_f64().unwrap(), 2.7, 1e-9));
    assert_eq!(a["tau"], 2);
    assert!(a["p"].as_f64().unwrap() < 0.05);
    let m = &checks[2];
    assert_eq!(
        (m["test"].as_str(), m["tau"].as_i64()),
        (Some("mSPRT two-sided"), Some(5))
    );
    assert!(close(m["log_bound"].as_f64().unwrap(), 40f64.ln(), 1e-12));
    // Not beyond the limit: ln Λ is −∞, null in JSON; p is 1.
    let e = &checks[0];
    assert_eq!(
        (e["outcome"].as_str(), &e["log_lr"]),
        (Some("pass"), &Value::Null)
    );
    assert_eq!(e["p"], 1);
    // No canary_writes_total in the sample: the guard says unknown.
    assert_eq!(j["rollback"]["kind"], "unknown");
}

#[test]
fn sequential_table_is_aligned_and_fits_100_columns() {
    let text = sample_report(Mode::Sequential).table();
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line:?}");
    }
    assert!(
        text.contains("test: mSPRT, always valid however often the gate runs (tau 2 points, 5 %)"),
        "{text}"
    );
    let lines: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
    let head = lines
        .iter()
        .position(|l| l.iter().collect::<String>() == "canary vs stable")
        .unwrap();
    let header: String = lines[head + 1].iter().collect();
    assert!(
        header.contains("  Λ/bound  ") && header.ends_with("limit  outcome"),
        "{header}"
    );
    let col = lines[head + 1]
        .windows(7)
        .position(|w| w.iter().collect::<String>() == "outcome")
        .unwrap();
    for row in &lines[head + 2..head + 5] {
        assert!(
            row.len() > col && row[col - 2..col] == [' ', ' '],
            "{row:?}"
        );
        assert_ne!(row[col], ' ', "{row:?}");
    }
    let approval: String = lines[head + 3].iter().collect();
    // ln Λ 8.90: Λ 7301 against the bound 1/α = 20.
    assert!(approval.contains("  7301/20  "), "{approval}");
    assert!(approval.trim_end().ends_with("ROLLBACK"));
    let aov: String = lines[head + 4].iter().collect();
    assert!(aov.contains("/40  "), "two-sided: 2/α: {aov}");
    // Not beyond the limit: no ratio to weigh, the bound still shown.
    let errors: String = lines[head + 2].iter().collect();
    assert!(errors.contains("  -/20  1.0000  "), "{errors}");
    assert!(
        text.contains(
            "  canary approval: -3.00 points, beyond the limit -0.3 points,\n    \
             always-valid evidence (Λ 7301 ≥ 1/α 20)\n"
        ),
        "{text}"
    );
}

#[test]
fn likelihood_ratios_and_bounds_read_well() {
    use super::numbers::{fmt_bound, fmt_lr};
    for (log_lr, shown) in [
        (f64::NEG_INFINITY, "-"),
        (f64::INFINITY, "inf"),
        (0.0, "1.00"),
        (-1.353_955_795_677_802_3, "0.26"),
        (3.0f64.ln() + 10f64.ln(), "30.0"),
        (500f64.ln(), "500"),
        (8.895_712_937_301_756, "7301"),
        (53.854_322_173_523_634, "2.4e23"),
        (10.0 * std::f64::consts::LN_10 - 1e-9, "1.0e10"),
        (2000.0, "3.9e868"),
    ] {
        assert_eq!(fmt_lr(log_lr), shown, "{log_lr}");
    }
    assert_eq!(fmt_bound(20f64.ln()), "20");
    assert_eq!(fmt_bound((2.0 / 0.01f64).ln()), "200");
    assert_eq!(fmt_bound((1.0 / 0.001f64).ln()), "1000");
}
