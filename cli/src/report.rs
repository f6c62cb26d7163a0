//! The gate's result: one [`Row`] per check per canary, the [`Verdict`] and its exit code, and
//! their two renderings, a table for people ([`Report::table`]) and JSON ([`Report::to_json`]).

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
    /// Canary minus baseline over its standard error.
    pub z: Option<f64>,
    /// The p-value of the test (see `test`).
    pub p: Option<f64>,
    /// `one-sided (higher is worse)`, `one-sided (lower is worse)` or `two-sided`.
    pub test: &'static str,
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
    pub rows: Vec<Row>,
    pub verdict: Verdict,
    /// One line per reason (the rows that decided the verdict).
    pub reasons: Vec<String>,
    /// Where the numbers came from (set by `gate::run`; empty from `evaluate`).
    pub sources: Vec<String>,
    pub window: Option<String>,
    /// The exit code for WAIT (3 unless `--wait-exit`).
    pub wait_exit_code: i32,
}

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

fn fmt_signed(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+inf" } else { "-inf" }.into()
    } else {
        format!("{v:+.2}")
    }
}

fn fmt_value(kind: Kind, v: Option<f64>) -> String {
    match (kind, v) {
        (_, None) => "-".into(),
        (Kind::Proportion, Some(v)) => format!("{:.2}%", v * 100.0),
        (Kind::Mean, Some(v)) => format!("{v:.2}"),
    }
}

/// A finite number as JSON: an integer when whole, null when not finite.
fn num(v: f64) -> Value {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, num)
}

impl Row {
    fn threshold_text(&self) -> String {
        match self.kind_name {
            "error_ratio" => format!("+{:.2}pt", self.threshold),
            "ratio" => format!("-{:.2}pt", self.threshold),
            _ => format!("±{:.2}%", self.threshold),
        }
    }

    fn delta_text(&self) -> String {
        match (self.delta, self.kind) {
            (None, _) => "-".into(),
            (Some(d), Kind::Proportion) => format!("{}pt", fmt_signed(d)),
            (Some(d), Kind::Mean) => format!("{}%", fmt_signed(d)),
        }
    }

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

    /// A human-readable table (one row per check per canary), sample sizes and the verdict.
    pub fn table(&self) -> String {
        let mut out = format!(
            "sticky-canary gate: service {}, baseline {}, alpha {}, min samples {}\n",
            self.service, self.baseline, self.alpha, self.min_samples
        );
        if !self.sources.is_empty() {
            let window = self
                .window
                .as_ref()
                .map_or(String::new(), |w| format!(" (last {w})"));
            out.push_str(&format!("from {}{window}\n", self.sources.join(", ")));
        }
        if !self.rows.is_empty() {
            let header = [
                "check", "n base", "n canary", "baseline", "canary", "delta", "z", "p", "limit",
                "outcome",
            ];
            let head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
            let cells: Vec<Vec<String>> = self
                .rows
                .iter()
                .map(|r| {
                    vec![
                        r.check.clone(),
                        fmt_n(r.baseline.n),
                        fmt_n(r.candidate.n),
                        fmt_value(r.kind, r.baseline.value),
                        fmt_value(r.kind, r.candidate.value),
                        r.delta_text(),
                        r.z.map_or("-".into(), fmt_signed),
                        r.p.map_or("-".into(), fmt_p),
                        r.threshold_text(),
                        match r.outcome {
                            Outcome::Rollback => "ROLLBACK".into(),
                            o => o.as_str().into(),
                        },
                    ]
                })
                .collect();
            // One width per column across every canary's block, so the blocks line up.
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    cells
                        .iter()
                        .chain([&head])
                        .map(|c| c[i].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            // Indent 2, two spaces between columns; one when that would not fit 100 columns.
            let two = 2 + widths.iter().sum::<usize>() + 2 * (widths.len() - 1) <= 100;
            let sep = if two { "  " } else { " " };
            let line = |row: &[String]| {
                let mut line = String::from("  ");
                for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                    let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
                    if i > 0 {
                        line.push_str(sep);
                    }
                    // Text columns left-aligned, numbers right-aligned.
                    if i == 0 || i == header.len() - 1 {
                        line.push_str(cell);
                        line.push_str(&pad);
                    } else {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
                format!("{}\n", line.trim_end())
            };
            for canary in &self.canaries {
                out.push_str(&format!("\n{canary} vs {}\n", self.baseline));
                out.push_str(&line(&head));
                for (r, c) in self.rows.iter().zip(&cells) {
                    if r.canary == *canary {
                        out.push_str(&line(c));
                    }
                }
            }
            out.push_str(
                "\nn: responses (error_ratio), the denominator (ratios) or the count (means); \
                 means are in\nthe sum rule's scaled unit (cents for a scale-2 money rule)\n",
            );
        }
        out.push_str(&format!(
            "\nverdict: {} (exit {})",
            self.verdict.as_str(),
            self.exit_code()
        ));
        if self.verdict == Verdict::Wait {
            out.push_str(", not enough data yet");
        }
        out.push('\n');
        for r in &self.reasons {
            out.push_str(&format!("  {r}\n"));
        }
        out
    }

    /// The inputs, every check (numbers as numbers), the verdict and the exit code.
    pub fn to_json(&self) -> Value {
        json!({
            "service": self.service,
            "baseline": self.baseline,
            "canaries": self.canaries,
            "min_samples": self.min_samples,
            "alpha": self.alpha,
            "sources": self.sources,
            "window": self.window,
            "checks": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "verdict": self.verdict.as_str(),
            "reasons": self.reasons,
            "exit_code": self.exit_code(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::policy::{evaluate, Policy};
    use crate::testdata::*;
    use serde_json::{json, Value};

    fn sample_report() -> super::Report {
        let mut parts = vec![
            payments("stable", 2000.0, 1940.0),
            payments("canary", 2000.0, 1880.0),
        ];
        parts.push(orders("stable", 1000.0, 2000.0, 100.0)[2..].to_vec());
        parts.push(orders("canary", 1000.0, 2060.0, 100.0)[2..].to_vec());
        let mut r = evaluate(&totals(&parts), &Policy::default_for("stable")).unwrap();
        r.sources = vec!["envoy http://127.0.0.1:9901".into()];
        r
    }

    #[test]
    fn json_shape() {
        let r = sample_report();
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
        let j = evaluate(&t, &policy(vec![approval()])).unwrap().to_json();
        assert_eq!(j["checks"][0]["z"], Value::Null);
        assert_eq!(j["checks"][0]["outcome"], "insufficient");
        assert_eq!(
            (j["verdict"].as_str(), j["exit_code"].as_i64()),
            (Some("WAIT"), Some(3))
        );
    }

    #[test]
    fn table_is_aligned_and_fits_100_columns() {
        let r = sample_report();
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
        let text = evaluate(&t, &policy(vec![approval()])).unwrap().table();
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
        let text = evaluate(&t, &policy(vec![approval()])).unwrap().table();
        let lines: Vec<&str> = text.lines().collect();
        let at = |l: &str| lines.iter().position(|x| *x == l).unwrap();
        let (a, c) = (
            at("a-much-longer-version-name vs stable"),
            at("canary vs stable"),
        );
        assert_eq!(lines[a + 1], lines[c + 1], "same header");
        assert_eq!(lines[a + 2].len(), lines[c + 2].len(), "{text}");
    }
}
