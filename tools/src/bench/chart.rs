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
    let (left, right, top, row_h, bar_h) = (250.0, 170.0, 62.0, 46.0, 15.0);
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
    for (i, (vkey, vlabel)) in variants.iter().enumerate() {
        let y0 = top + row_h * i as f64;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 8.0,
            y0 + row_h / 2.0 + 4.0,
            xml(vlabel)
        );
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

fn nice_step(max: f64) -> f64 {
    let raw = max / 6.0;
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

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
