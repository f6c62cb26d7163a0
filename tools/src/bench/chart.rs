//! The chart of `make bench`: CPU time per request per variant, proxy and direct, as SVG.

use super::report::Report;
use super::Mode;
use std::fmt::Write as _;

/// The chart: CPU time per request per variant (median, min–max whiskers), proxy and direct.
pub fn chart_svg(r: &Report) -> String {
    let sums = r.summaries();
    let modes: Vec<Mode> = r.options.modes.clone();
    // One row per variant (and candidate), in the order of the report.
    let mut variants: Vec<(String, String)> = Vec::new();
    for e in &r.entries {
        if !variants.iter().any(|(k, _)| *k == e.key()) {
            variants.push((e.key(), e.label()));
        }
    }
    let max = sums
        .iter()
        .map(|s| s.cpu_us_per_request.max)
        .filter(|x| x.is_finite())
        .fold(1.0f64, f64::max)
        * 1.12;
    // Labels wrap at word boundaries; the left margin fits the longest line (13 px sans-serif:
    // about 7.2 px a character), so no label is clipped at the edge.
    let labels: Vec<Vec<String>> = variants
        .iter()
        .map(|(_, l)| label_lines(l, LABEL_CHARS))
        .collect();
    let longest = labels
        .iter()
        .flatten()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let left = (longest as f64 * CHAR_PX + 24.0).max(250.0).ceil();
    let (right, top, row_h, bar_h) = (170.0, 62.0, 46.0, 15.0);
    let plot_w = 560.0;
    let w = left + plot_w + right;
    let h = top + row_h * variants.len() as f64 + 58.0;
    let x = |v: f64| left + v / max * plot_w;
    let colors = ["#3b6ea8", "#9cc0e6"];
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="22" font-size="15" font-weight="bold">Envoy CPU time per request (µs), median of {} rounds, min–max whiskers</text>
<text x="{left}" y="42" fill="#555">{} connections, Envoy pinned to one core; ratios: median of per-round ratios to the V8 floor</text>
"##,
        r.options.rounds, r.options.connections
    );
    // Grid.
    let step = nice_step(max);
    let mut g = 0.0;
    while g <= max {
        let gx = x(g);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            top + row_h * variants.len() as f64,
            top + row_h * variants.len() as f64 + 16.0,
            fmt_tick(g)
        );
        g += step;
    }
    for (i, ((vkey, _), lines)) in variants.iter().zip(&labels).enumerate() {
        let y0 = top + row_h * i as f64;
        // The lines centred on the row, 15 px apart.
        let first = y0 + row_h / 2.0 + 4.0 - 7.5 * (lines.len() as f64 - 1.0);
        for (k, line) in lines.iter().enumerate() {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                left - 8.0,
                first + 15.0 * k as f64,
                xml(line)
            );
        }
        for (j, m) in modes.iter().enumerate() {
            let Some(sum) = sums
                .iter()
                .find(|x| x.variant == *vkey && x.mode == m.as_str())
            else {
                continue;
            };
            let c = sum.cpu_us_per_request;
            if !c.median.is_finite() {
                continue;
            }
            let by = y0 + 6.0 + j as f64 * (bar_h + 2.0);
            let _ = writeln!(
                s,
                r##"<rect x="{left}" y="{by:.1}" width="{:.1}" height="{bar_h}" fill="{}"/>"##,
                x(c.median) - left,
                colors[j % 2]
            );
            let wy = by + bar_h / 2.0;
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" y1="{wy:.1}" x2="{:.1}" y2="{wy:.1}" stroke="#222"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#222"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#222"/>"##,
                x(c.min),
                x(c.max),
                x(c.min),
                wy - 4.0,
                x(c.min),
                wy + 4.0,
                x(c.max),
                wy - 4.0,
                x(c.max),
                wy + 4.0
            );
            let ratio = if sum.vs_floor.median.is_finite() && vkey != "floor" {
                format!("  ×{:.2} floor", sum.vs_floor.median)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#222">{:.1}{ratio}</text>"##,
                x(c.max) + 6.0,
                wy + 4.0,
                c.median
            );
        }
    }
    let ly = top + row_h * variants.len() as f64 + 36.0;
    for (j, m) in modes.iter().enumerate() {
        let lx = left + j as f64 * 230.0;
        let label = match m {
            Mode::Proxy => "proxy to nginx (1 KiB JSON)",
            Mode::Direct => "direct_response (no upstream)",
        };
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="{:.1}" width="14" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{label}</text>"##,
            ly - 10.0,
            colors[j % 2],
            lx + 20.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A variant label's width in characters before it wraps.
const LABEL_CHARS: usize = 44;
/// The average width of a character of the labels (13 px sans-serif), in px.
const CHAR_PX: f64 = 7.2;

/// `label` in lines of at most `max` characters, broken at spaces (a longer word has a line of its
/// own); at most three lines, the last ending in "…" when the label is longer.
fn label_lines(label: &str, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in label.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= max => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    if lines.len() > 3 {
        lines.truncate(3);
        if let Some(last) = lines.last_mut() {
            last.push('…');
        }
    }
    lines
}

/// A round grid step for an axis spanning `max` (about six steps: 1, 2, 2.5 or 5 × a power of
/// ten). The charts of the bench, the cost curves and the demo share it.
pub(crate) fn nice_step(max: f64) -> f64 {
    let raw = (max / 6.0).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_tick(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Text escaped for SVG.
pub(crate) fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::label_lines;

    #[test]
    fn labels_wrap_at_words_within_the_width() {
        let long =
            "sticky-canary: + 3 header rules + the pooled brake (guard.pool, a query a second)";
        let lines = label_lines(long, 44);
        assert!(lines.len() == 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 44), "{lines:?}");
        assert_eq!(lines.join(" "), long);
        assert_eq!(
            label_lines("bare Envoy (router only)", 44),
            ["bare Envoy (router only)"]
        );
        let many = "a ".repeat(100);
        let lines = label_lines(&many, 10);
        assert_eq!(lines.len(), 3);
        assert!(lines[2].ends_with('…'));
    }
}
