//! The report as a table for people: the inputs, one block per canary (one line per check,
//! columns aligned across blocks, at most 100 columns), the verdict and its reasons, and the
//! rollback guard's block.

use super::numbers::{fmt_bound, fmt_lr, fmt_n, fmt_p};
use super::{Kind, Outcome, Report, Row, Verdict};
use crate::gate::policy::Mode;
use sticky_canary::metrics::names;

/// A signed figure with two decimals (`+0.33`, `-3.00`), or `+inf` / `-inf`.
fn fmt_signed(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+inf" } else { "-inf" }.into()
    } else {
        format!("{v:+.2}")
    }
}

/// A side's value: a proportion in percent (`97.00%`), a mean (`2000.00`), or `-` without data.
fn fmt_value(kind: Kind, v: Option<f64>) -> String {
    match (kind, v) {
        (_, None) => "-".into(),
        (Kind::Proportion, Some(v)) => format!("{:.2}%", v * 100.0),
        (Kind::Mean, Some(v)) => format!("{v:.2}"),
    }
}

impl Row {
    /// The limit with its sign and unit: `+1.00pt`, `-0.30pt`, `±1.00%`.
    fn threshold_text(&self) -> String {
        match self.kind_name {
            "error_ratio" => format!("+{:.2}pt", self.threshold),
            "ratio" => format!("-{:.2}pt", self.threshold),
            _ => format!("±{:.2}%", self.threshold),
        }
    }

    /// The change with its unit: `-3.00pt`, `+0.15%`, or `-` without data.
    fn delta_text(&self) -> String {
        match (self.delta, self.kind) {
            (None, _) => "-".into(),
            (Some(d), Kind::Proportion) => format!("{}pt", fmt_signed(d)),
            (Some(d), Kind::Mean) => format!("{}%", fmt_signed(d)),
        }
    }
}

impl Report {
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
            out.push_str(&format!("\nrollback guard ({}):\n", names::WRITES));
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
