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

/// The rollback guard's reading of one rolled-back canary: what it wrote, from
/// `canary_writes_total` (requests whose method changes state, per served version).
#[derive(Clone, Debug, PartialEq)]
pub struct Writes {
    pub version: String,
    /// `None`: the data has no `canary_writes_total` at all (a filter older than issue 14?).
    /// A version without a series while others have one counts 0.
    pub writes: Option<f64>,
    /// Per method, when the series carry a `method` label (Envoy scrapes only).
    pub methods: Vec<(String, f64)>,
}

/// How to roll a canary back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RollbackKind {
    /// It wrote nothing: every session may move to the baseline at once.
    ZeroKill,
    /// Whether it wrote is unknown: roll back as if it had.
    Unknown,
    /// It wrote: stop new sessions, reconcile, then move the rest.
    Gradual,
}

impl RollbackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackKind::ZeroKill => "zero-kill",
            RollbackKind::Gradual => "gradual",
            RollbackKind::Unknown => "unknown",
        }
    }
}

impl Writes {
    pub fn kind(&self) -> RollbackKind {
        match self.writes {
            None => RollbackKind::Unknown,
            Some(w) if w > 0.0 => RollbackKind::Gradual,
            Some(_) => RollbackKind::ZeroKill,
        }
    }

    /// One line: the kind of rollback and why. `window` as in [`Report::window`].
    pub fn summary(&self, baseline: &str, window: Option<&str>) -> String {
        let when = window_words(window);
        match (self.kind(), self.writes) {
            (RollbackKind::Gradual, Some(n)) => format!(
                "gradual rollback: the canary served {} writes {when}",
                fmt_n(n)
            ),
            (RollbackKind::ZeroKill, _) => format!(
                "zero-kill rollback: route every session to {baseline} now (the canary changed no \
                 state {when})"
            ),
            _ => format!(
                "unknown: the filter publishes no {WRITES_METRIC} (older than issue 14?); roll \
                 back gradually, as if the canary had written"
            ),
        }
    }

    /// The steps of the rollback, in order.
    pub fn steps(&self, baseline: &str, window: Option<&str>) -> Vec<String> {
        let v = &self.version;
        let when = window_words(window);
        match (self.kind(), self.writes) {
            (RollbackKind::ZeroKill, _) => {
                let mut steps = Vec::new();
                if let Some(w) = window {
                    steps.push(format!(
                        "make sure {v} served only within the last {w}: writes before it are not \
                         counted (the gate without --window counts them all)"
                    ));
                }
                steps.push(format!(
                    "route every session to {baseline} now (weight 0 / cohort 0 %, pins \
                     dropped): {v} served no state-changing request {when}, so no flow cookie \
                     keeps anyone on it"
                ));
                steps.push(format!("scale {v} down"));
                steps
            }
            (kind, writes) => {
                let reconcile = match (kind, writes) {
                    (RollbackKind::Gradual, Some(n)) => format!(
                        "reconcile what {v} wrote: {} requests ({}) {when}, before {baseline} \
                         reads that state",
                        fmt_n(n),
                        self.methods_text()
                    ),
                    _ => format!(
                        "find out what {v} wrote (the filter counts no writes: look for POST, PUT, \
                         PATCH and DELETE requests it served) and reconcile it"
                    ),
                };
                vec![
                    format!(
                        "stop new sessions reaching {v} (weight 0 / cohort 0 %): sessions without \
                         a write move to {baseline} at once; with session.hold.flows, flows that \
                         wrote on {v} finish there until their flow cookies expire \
                         (drain_seconds), so none is split between the versions"
                    ),
                    reconcile,
                    format!(
                        "once no flow drains on {v} (canary_flows_draining{{version=\"{v}\"}} at \
                         0 in every Envoy, or drain_seconds after step 1), drop the pins and \
                         overrides to {v}: it serves no session"
                    ),
                    format!("scale {v} down"),
                ]
            }
        }
    }

    fn methods_text(&self) -> String {
        if self.methods.is_empty() {
            "state-changing methods: POST, PUT, PATCH, DELETE unless the plugin config names \
             others"
                .into()
        } else {
            self.methods
                .iter()
                .map(|(m, n)| format!("{m} {}", fmt_n(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// The metric of the rollback guard (the core's `names::WRITES` once it lands).
pub const WRITES_METRIC: &str = "canary_writes_total";

fn window_words(window: Option<&str>) -> String {
    match window {
        Some(w) => format!("in the last {w}"),
        None => "since the counters started".into(),
    }
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

    /// A human-readable table (one row per check per canary), sample sizes and the verdict.
    pub fn table(&self) -> String {
        let mut out = format!(
            "sticky-canary gate: service {}, baseline {}, alpha {}, min samples {}\n",
            self.service, self.baseline, self.alpha, self.min_samples
        );
        let sequential = self.mode == Mode::Sequential;
        if sequential {
            out.push_str(&format!(
                "test: mSPRT, always valid however often the gate runs (tau {} points, {} %)\n",
                self.tau_points, self.tau_percent
            ));
        }
        if !self.sources.is_empty() {
            let window = self
                .window
                .as_ref()
                .map_or(String::new(), |w| format!(" (last {w})"));
            out.push_str(&format!("from {}{window}\n", self.sources.join(", ")));
        }
        if !self.rows.is_empty() {
            let header: &[&str] = if sequential {
                &[
                    "check", "n base", "n canary", "baseline", "canary", "delta", "Λ/bound", "p",
                    "limit", "outcome",
                ]
            } else {
                &[
                    "check", "n base", "n canary", "baseline", "canary", "delta", "z", "p",
                    "limit", "outcome",
                ]
            };
            let head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
            let cells: Vec<Vec<String>> = self
                .rows
                .iter()
                .map(|r| {
                    let mut cells = vec![
                        r.check.clone(),
                        fmt_n(r.baseline.n),
                        fmt_n(r.candidate.n),
                        fmt_value(r.kind, r.baseline.value),
                        fmt_value(r.kind, r.candidate.value),
                        r.delta_text(),
                    ];
                    if sequential {
                        // Λ against the bound it must reach (1/α, or 2/α two-sided).
                        cells.push(match (r.log_lr, r.log_bound) {
                            (Some(l), Some(b)) => format!("{}/{}", fmt_lr(l), fmt_bound(b)),
                            _ => "-".into(),
                        });
                    } else {
                        cells.push(r.z.map_or("-".into(), fmt_signed));
                    }
                    cells.push(r.p.map_or("-".into(), fmt_p));
                    cells.push(r.threshold_text());
                    cells.push(match r.outcome {
                        Outcome::Rollback => "ROLLBACK".into(),
                        o => o.as_str().into(),
                    });
                    cells
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
            if sequential {
                // The sequential notes are longer: wrapped to 100 columns.
                out.push_str(&wrap_clauses(r, "  ", "    "));
            } else {
                out.push_str(&format!("  {r}\n"));
            }
        }
        if !self.rollbacks.is_empty() {
            out.push_str(&format!("\nrollback guard ({WRITES_METRIC}):\n"));
            let window = self.window.as_deref();
            for w in &self.rollbacks {
                let summary = format!("{}: {}", w.version, w.summary(&self.baseline, window));
                out.push_str(&wrap(&summary, "  ", "    "));
                for (i, step) in w.steps(&self.baseline, window).iter().enumerate() {
                    out.push_str(&wrap(&format!("{}. {step}", i + 1), "    ", "       "));
                }
            }
        }
        out
    }

    /// The rollback guard as JSON: null unless ROLLBACK; else the kind, writes and steps (of the
    /// one rolled-back canary; with several, the most cautious kind, the writes summed and each
    /// one's steps prefixed with its version), and `versions`, one entry per canary.
    fn rollback_json(&self) -> Value {
        if self.rollbacks.is_empty() {
            return Value::Null;
        }
        let window = self.window.as_deref();
        let b = self.baseline.as_str();
        let versions: Vec<Value> = self
            .rollbacks
            .iter()
            .map(|w| {
                let methods: serde_json::Map<String, Value> = w
                    .methods
                    .iter()
                    .map(|(m, n)| (m.clone(), num(*n)))
                    .collect();
                json!({
                    "version": w.version,
                    "kind": w.kind().as_str(),
                    "writes": opt(w.writes),
                    "methods": methods,
                    "summary": w.summary(b, window),
                    "steps": w.steps(b, window),
                })
            })
            .collect();
        let kind = self
            .rollbacks
            .iter()
            .map(Writes::kind)
            .max()
            .unwrap_or(RollbackKind::Unknown);
        let writes: Option<f64> = self.rollbacks.iter().map(|w| w.writes).sum();
        let steps: Vec<String> = match self.rollbacks.as_slice() {
            [one] => one.steps(b, window),
            all => all
                .iter()
                .flat_map(|w| {
                    w.steps(b, window)
                        .into_iter()
                        .map(move |s| format!("{}: {s}", w.version))
                })
                .collect(),
        };
        json!({
            "kind": kind.as_str(),
            "writes": opt(writes),
            "steps": steps,
            "versions": versions,
        })
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

/// `text` word-wrapped to 100 columns: the first line after `first`, the others after `rest`.
fn wrap(text: &str, first: &str, rest: &str) -> String {
    wrap_tokens(text.split_inclusive(' '), first, rest)
}

/// `text` wrapped to 100 columns at its clauses (after ", "), so that a figure such as
/// "(Λ 7301 ≥ 1/α 20)" stays on one line.
fn wrap_clauses(text: &str, first: &str, rest: &str) -> String {
    wrap_tokens(text.split_inclusive(", "), first, rest)
}

/// Tokens (each with its trailing separator) joined into lines of at most 100 columns where
/// the tokens allow it.
fn wrap_tokens<'a>(tokens: impl Iterator<Item = &'a str>, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for token in tokens {
        let width = line.chars().count() + token.trim_end().chars().count();
        if !empty && width > 100 {
            out.push_str(line.trim_end());
            out.push('\n');
            line = rest.to_string();
        }
        line.push_str(token);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::policy::{evaluate, Mode, Policy};
    use crate::testdata::*;
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
            text.contains(
                "test: mSPRT, always valid however often the gate runs (tau 2 points, 5 %)"
            ),
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
        use super::{fmt_bound, fmt_lr};
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
}
