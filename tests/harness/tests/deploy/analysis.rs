//! The analysis queries: the PromQL of the Flagger MetricTemplates and Argo AnalysisTemplates
//! parses (promtool), reads only metrics the filter (or Envoy/Istio) publishes, and judges known
//! traffic like the `sticky-canary gate` rule (promtool unit tests): the expected values are the
//! core's own answers (`sticky_canary::stats::sequential`, the code the gate and the filter's
//! guard run) on the same counts.

use super::agreement::gateway_plan;
use super::manifests::{find, manifests, of_kind};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use sticky_canary::metrics::{Catalogue, MetricKind};
use sticky_canary::plan::Plan;
use sticky_canary::stats::sequential::{Harm, Test, TAU_PERCENT, TAU_POINTS};
use sticky_canary_cli::gate::{Check, Policy};
use sticky_canary_harness::envoy::workspace_root;
use sticky_canary_harness::find_tool;

/// One PromQL query of a Flagger MetricTemplate or an Argo AnalysisTemplate, with the template
/// variables replaced by the values its Canary / Rollout gives them.
#[derive(Clone, Debug)]
struct Query {
    origin: String,
    /// The gate it implements: the metric's name (`approval-ratio-delta`, …).
    gate: String,
    rendered: String,
    /// Pass range from Flagger's thresholdRange, or Argo's conditions.
    pass: (Option<f64>, Option<f64>),
}

/// The Argo analyses of a Rollout: each step's, and the background one
/// (`strategy.canary.analysis`), which runs for the whole rollout.
fn rollout_analyses(rollout: &Value) -> Vec<&Value> {
    let canary = &rollout["spec"]["strategy"]["canary"];
    canary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|step| step.get("analysis"))
        .chain(canary.get("analysis"))
        .collect()
}

fn render(
    template: &str,
    re: &regex::Regex,
    vars: &BTreeMap<String, String>,
    origin: &str,
) -> String {
    re.replace_all(template, |c: &regex::Captures| {
        vars.get(&c[1])
            .cloned()
            .unwrap_or_else(|| panic!("{origin}: no value for template variable {}", &c[0]))
    })
    .into_owned()
}

fn analysis_queries() -> Vec<Query> {
    let all = manifests();
    let mut out = Vec::new();
    // Flagger: {{ name }}, {{ namespace }}, {{ target }}, {{ service }}, {{ ingress }},
    // {{ interval }} from the Canary metric that references the template.
    let flagger_var = regex::Regex::new(r"\{\{\s*([a-z]+)\s*\}\}").unwrap();
    for c in of_kind(&all, "Canary") {
        let spec = &c.doc["spec"];
        for metric in spec["analysis"]["metrics"].as_array().unwrap() {
            let name = metric["templateRef"]["name"].as_str().unwrap();
            let t = find(&all, "MetricTemplate", name);
            let vars: BTreeMap<String, String> = [
                ("name", c.name().to_string()),
                ("namespace", c.namespace().to_string()),
                (
                    "target",
                    spec["targetRef"]["name"].as_str().unwrap().to_string(),
                ),
                (
                    "service",
                    spec["targetRef"]["name"].as_str().unwrap().to_string(),
                ),
                ("interval", metric["interval"].as_str().unwrap().to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let origin = format!("{} via {}", t.at(), c.at());
            out.push(Query {
                rendered: render(
                    t.doc["spec"]["query"].as_str().unwrap(),
                    &flagger_var,
                    &vars,
                    &origin,
                ),
                origin,
                gate: metric["name"].as_str().unwrap().to_string(),
                pass: (
                    metric["thresholdRange"]["min"].as_f64(),
                    metric["thresholdRange"]["max"].as_f64(),
                ),
            });
        }
    }
    // Argo: {{args.x}} from the template's defaults, overridden by the Rollout's analysis args.
    let argo_var = regex::Regex::new(r"\{\{\s*(args\.[a-z-]+)\s*\}\}").unwrap();
    let bound = regex::Regex::new(r"result\[0\] (>=|<=|==) (-?[0-9.]+)").unwrap();
    for r in of_kind(&all, "Rollout") {
        for analysis in rollout_analyses(&r.doc) {
            for t in analysis["templates"].as_array().unwrap() {
                let t = find(
                    &all,
                    "AnalysisTemplate",
                    t["templateName"].as_str().unwrap(),
                );
                let mut vars = BTreeMap::new();
                for a in t.doc["spec"]["args"].as_array().unwrap() {
                    if let Some(v) = a["value"].as_str() {
                        vars.insert(
                            format!("args.{}", a["name"].as_str().unwrap()),
                            v.to_string(),
                        );
                    }
                }
                for a in analysis["args"].as_array().into_iter().flatten() {
                    vars.insert(
                        format!("args.{}", a["name"].as_str().unwrap()),
                        a["value"].as_str().unwrap().to_string(),
                    );
                }
                for m in t.doc["spec"]["metrics"].as_array().unwrap() {
                    let origin = format!("{} metric {} via {}", t.at(), m["name"], r.at());
                    let success = m["successCondition"].as_str().unwrap();
                    let mut pass = (None, None);
                    for c in bound.captures_iter(success) {
                        let v: f64 = c[2].parse().unwrap();
                        match &c[1] {
                            ">=" => pass.0 = Some(v),
                            "<=" => pass.1 = Some(v),
                            _ => pass = (Some(v), Some(v)),
                        }
                    }
                    let query = m["provider"]["prometheus"]["query"].as_str().unwrap();
                    match m["failureCondition"].as_str() {
                        // A judged metric: NaN (too few samples, no evidence yet) is neither.
                        Some(failure) => assert!(
                            success.starts_with("!isNaN(result[0]) && ")
                                && failure.starts_with("!isNaN(result[0]) && "),
                            "{origin}: NaN must be inconclusive"
                        ),
                        // Pass or fail only (the guard): whatever is not a success fails, so
                        // the query must never be NaN or empty.
                        None => assert!(
                            query.trim_end().ends_with("or on() vector(0)"),
                            "{origin}: without failureCondition a NaN would fail"
                        ),
                    }
                    out.push(Query {
                        rendered: render(query, &argo_var, &vars, &origin),
                        origin,
                        gate: m["name"].as_str().unwrap().to_string(),
                        pass,
                    });
                }
            }
        }
    }
    assert!(out.len() >= 8, "Flagger and Argo queries: {out:#?}");
    out
}

/// `PROMTOOL_BIN`, else `.venv/prometheus/usr/bin/promtool`, else `promtool` on PATH.
pub(crate) fn promtool() -> PathBuf {
    find_tool("PROMTOOL_BIN", "prometheus/usr/bin/promtool", "promtool").unwrap_or_else(|| {
        panic!(
            "promtool not found (PROMTOOL_BIN, {}, PATH) — run `make prometheus`",
            workspace_root()
                .join(".venv/prometheus/usr/bin/promtool")
                .display()
        )
    })
}

pub(crate) fn run_promtool(args: &[&str], file: &Path) -> (bool, String) {
    let out = Command::new(promtool())
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("run promtool: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn analysis_queries_parse_with_promtool() {
    let queries = analysis_queries();
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({"record": format!("sticky_canary:analysis_query_{i}"), "expr": q.rendered}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queries.yaml");
    let file = json!({"groups": [{"name": "analysis-queries", "rules": rules}]});
    fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    let (ok, out) = run_promtool(&["check", "rules"], &path);
    let index: Vec<String> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| format!("  analysis_query_{i}: {}", q.origin))
        .collect();
    assert!(
        ok && out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "promtool check rules:\n{out}\nqueries:\n{}",
        index.join("\n")
    );
}

/// The metric names a PromQL expression reads (not functions, keywords, labels or durations).
fn metric_names(q: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "on",
        "ignoring",
        "by",
        "without",
        "group_left",
        "group_right",
        "nan",
        "inf",
        "atan2",
        "start",
        "end",
        // aggregation operators, which may be followed by `by (…)` rather than `(`
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = q.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |i: &mut usize, close: char| {
        while *i < chars.len() && chars[*i] != close {
            if chars[*i] == '"' || chars[*i] == '\'' || chars[*i] == '`' {
                let quote = chars[*i];
                *i += 1;
                while *i < chars.len() && chars[*i] != quote {
                    if chars[*i] == '\\' {
                        *i += 1;
                    }
                    *i += 1;
                }
            }
            *i += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let ch = chars[i];
        if ch == '{' {
            skip_to(&mut i, '}');
        } else if ch == '[' {
            skip_to(&mut i, ']');
        } else if ch == '"' || ch == '\'' || ch == '`' {
            i += 1;
            skip_to(&mut i, ch);
        } else if ch == '#' {
            skip_to(&mut i, '\n');
        } else if ch.is_ascii_digit()
            || (ch == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = chars.get(j) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "on" | "ignoring" | "by" | "without" | "group_left" | "group_right"
            ) {
                if call {
                    i = j + 1;
                    skip_to(&mut i, ')');
                }
            } else if !call && !KEYWORDS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Metric names the filter publishes for a plan (histograms as _bucket/_sum/_count).
fn filter_metric_names(plan: &Plan) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in Catalogue::for_plan(plan).iter() {
        let base = m.name.rsplit(";.;").next().unwrap().to_string();
        if m.kind == MetricKind::Histogram {
            for s in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{base}{s}"));
            }
        } else {
            out.insert(base);
        }
    }
    out
}

/// Istio's standard metrics.
const ISTIO_STANDARD: &[&str] = &[
    "istio_requests_total",
    "istio_request_duration_milliseconds_bucket",
    "istio_request_duration_milliseconds_sum",
    "istio_request_duration_milliseconds_count",
    "istio_request_bytes_bucket",
    "istio_request_bytes_sum",
    "istio_request_bytes_count",
    "istio_response_bytes_bucket",
    "istio_response_bytes_sum",
    "istio_response_bytes_count",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
];

fn unknown_metrics(q: &str, known: &BTreeSet<String>) -> Vec<String> {
    metric_names(q)
        .into_iter()
        .filter(|n| {
            !known.contains(n) && !ISTIO_STANDARD.contains(&n.as_str()) && !n.starts_with("envoy_")
        })
        .collect()
}

#[test]
fn metric_name_extraction_finds_names_and_flags_unknown_ones() {
    let q = r#"sum by (le) (rate(foo_bucket{a="b", c=~"x{1}"}[5m])) / on(x) group_left(y) bar offset 5m
               and ignoring (z) baz > bool 1.5e3 or on() vector(NaN) + envoy_x - istio_requests_total"#;
    assert_eq!(
        metric_names(q).into_iter().collect::<Vec<_>>(),
        [
            "bar",
            "baz",
            "envoy_x",
            "foo_bucket",
            "istio_requests_total"
        ]
    );
    let known: BTreeSet<String> = ["foo_bucket", "bar"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(unknown_metrics(q, &known), ["baz"]);
    // A typo of a real name is caught.
    let plan = gateway_plan();
    let known = filter_metric_names(&plan);
    assert_eq!(
        unknown_metrics("sum(increase(canary_business_order_total[5m]))", &known),
        ["canary_business_order_total"]
    );
    assert!(unknown_metrics("sum(increase(canary_business_orders_total[5m]))", &known).is_empty());
}

#[test]
fn analysis_queries_read_only_metrics_the_filter_publishes() {
    let plan = gateway_plan();
    let known = filter_metric_names(&plan);
    for required in [
        "canary_requests_total",
        "canary_responses_total",
        "canary_version_weight",
        "canary_business_orders_total",
        "canary_business_order_value_total",
        "canary_business_order_value_squares_total",
        "canary_business_auth_approved_total",
        "canary_business_invalid_total",
        "canary_business_skipped_total",
        "canary_business_tax_bucket",
    ] {
        assert!(known.contains(required), "{required} not in {known:?}");
    }
    let service = regex::Regex::new(r#"service="([^"]*)""#).unwrap();
    let version = regex::Regex::new(r#"version="([^"]*)""#).unwrap();
    let versions: BTreeSet<String> = plan.versions.iter().map(|v| v.name.clone()).collect();
    let mut used = BTreeSet::new();
    for q in analysis_queries() {
        let unknown = unknown_metrics(&q.rendered, &known);
        assert!(
            unknown.is_empty(),
            "{}: unknown metrics {unknown:?}",
            q.origin
        );
        for c in service.captures_iter(&q.rendered) {
            assert_eq!(&c[1], plan.service, "{}: service label", q.origin);
        }
        for c in version.captures_iter(&q.rendered) {
            assert!(
                versions.contains(&c[1]),
                "{}: version label {}",
                q.origin,
                &c[1]
            );
        }
        used.extend(metric_names(&q.rendered));
    }
    eprintln!("metrics read by the analysis queries: {used:?}");
}

/// Per-version totals over the analysis window, for a promtool unit test.
#[derive(Clone, Copy, Debug)]
struct Cohort {
    orders: f64,
    approved: f64,
    /// Mean and standard deviation of the order value, in cents.
    mean: f64,
    sd: f64,
    responses: f64,
    errors: f64,
    /// The guard's canary_guard_tripped gauge of the cohort on each of the two proxies (0/1), or
    /// no series.
    tripped: [Option<f64>; 2],
}

impl Cohort {
    fn value(&self) -> f64 {
        self.orders * self.mean
    }
    /// Σx² = n (sd² + mean²).
    fn squares(&self) -> f64 {
        self.orders * (self.sd * self.sd + self.mean * self.mean)
    }
}

/// What a gate should conclude.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Pass,
    Fail,
    /// NaN: too few samples, or beyond the limit without always-valid evidence.
    Inconclusive,
}

/// (name, canary cohort, stable cohort, [(gate, what it must conclude)]).
type Scenario<'a> = (&'a str, Cohort, Cohort, Vec<(&'a str, Verdict)>);

/// The change rounded to 1e-9 as the queries do (PromQL `round(v, 1e-9)`: floor(v·1e9 + ½)/1e9),
/// the core's own tolerance at the limit.
fn round_9(v: f64) -> f64 {
    (v * 1e9 + 0.5).floor() / 1e9
}

/// The value a query must return, or None for NaN: the `sticky-canary gate` rule as the core
/// computes it (`sticky_canary::stats::sequential::Test`, the code the gate and the filter's
/// guard run), with the gate's default policy (min samples, alpha, limits) and the default mixing
/// widths. The change when judgeable (not beyond the limit, or beyond it with evidence); NaN when
/// a side is below the minimum samples or the change is beyond the limit without evidence.
fn expected_value(gate: &str, c: &Cohort, s: &Cohort) -> Option<f64> {
    let policy = Policy::default_for("stable");
    let limit = |want: &str| {
        policy
            .checks
            .iter()
            .find_map(|check| match check {
                Check::ErrorRatio { max_points } if want == "error_ratio" => Some(*max_points),
                Check::Ratio {
                    label,
                    max_drop_points,
                    ..
                } if label == want => Some(*max_drop_points),
                Check::Mean {
                    label,
                    max_drift_percent,
                    ..
                } if label == want => Some(*max_drift_percent),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {want} check in the gate's default policy"))
    };
    let test = |limit: f64, tau: f64, harm: Harm| Test {
        alpha: policy.alpha,
        limit,
        tau,
        harm,
    };
    let (judgement, nc, ns) = match gate {
        "approval-ratio-delta" => (
            test(limit("approval"), TAU_POINTS, Harm::Lower)
                .proportions(c.approved, c.orders, s.approved, s.orders),
            c.orders,
            s.orders,
        ),
        "error-ratio-delta" => (
            test(limit("error_ratio"), TAU_POINTS, Harm::Higher).proportions(
                c.errors,
                c.responses,
                s.errors,
                s.responses,
            ),
            c.responses,
            s.responses,
        ),
        "order-value-drift" => (
            test(limit("aov"), TAU_PERCENT, Harm::Either).means(
                (c.value(), c.squares(), c.orders),
                (s.value(), s.squares(), s.orders),
            ),
            c.orders,
            s.orders,
        ),
        // Any proxy tripped: 1; none (0 or no series): 0.
        "guard-tripped" => return Some(c.tripped.iter().flatten().fold(0.0, |a, &b| a.max(b))),
        other => panic!("no scenario covers the gate {other:?}: add one"),
    };
    let min = policy.min_samples as f64;
    let j = judgement?;
    (nc >= min && ns >= min && (!j.beyond() || j.harmful())).then(|| round_9(j.change))
}

fn series(metric: &str, version: &str, extra: &str, total: f64) -> Vec<Value> {
    // Two proxies per version (the query sums them), linear counters over 15 one-minute steps.
    ["gateway-a", "gateway-b"]
        .iter()
        .map(|pod| {
            json!({
                "series": format!("{metric}{{service=\"checkout\",version=\"{version}\"{extra},pod=\"{pod}\"}}"),
                "values": format!("0+{}x15", total / 2.0 / 15.0),
            })
        })
        .collect()
}

fn input_series(c: &Cohort, s: &Cohort) -> Vec<Value> {
    let mut out = Vec::new();
    for (v, k) in [("canary", c), ("stable", s)] {
        for (pod, tripped) in ["gateway-a", "gateway-b"].iter().zip(k.tripped) {
            if let Some(t) = tripped {
                out.push(json!({
                    "series": format!("canary_guard_tripped{{service=\"checkout\",version=\"{v}\",pod=\"{pod}\"}}"),
                    "values": format!("{t}x15"),
                }));
            }
        }
        out.extend(series("canary_business_orders_total", v, "", k.orders));
        out.extend(series(
            "canary_business_auth_approved_total",
            v,
            "",
            k.approved,
        ));
        out.extend(series(
            "canary_business_order_value_total",
            v,
            "",
            k.value(),
        ));
        out.extend(series(
            "canary_business_order_value_squares_total",
            v,
            "",
            k.squares(),
        ));
        out.extend(series(
            "canary_responses_total",
            v,
            ",code_class=\"5xx\"",
            k.errors,
        ));
        out.extend(series(
            "canary_responses_total",
            v,
            ",code_class=\"2xx\"",
            k.responses - k.errors,
        ));
    }
    out
}

#[test]
fn analysis_queries_judge_known_traffic_like_the_gate() {
    // 1 500 orders and responses per cohort in the 15 min window: 95 % approved, 1 % 5xx,
    // order value 20.00 ± 5.00.
    let base = Cohort {
        orders: 1500.0,
        approved: 1425.0,
        mean: 2000.0,
        sd: 500.0,
        responses: 1500.0,
        errors: 15.0,
        tripped: [None, None],
    };
    let few = Cohort {
        orders: 15.0,
        approved: 12.0,
        responses: 15.0,
        errors: 3.0,
        ..base
    };
    let small = Cohort {
        orders: 300.0,
        approved: 285.0,
        responses: 300.0,
        errors: 3.0,
        ..base
    };
    // 2 000 per cohort: 0.3 and 1 point, and 1 % of 20.00, are whole counts.
    let even = Cohort {
        orders: 2000.0,
        approved: 1900.0,
        responses: 2000.0,
        errors: 20.0,
        ..base
    };
    use Verdict::*;
    let business = |approval, error, value| {
        vec![
            ("approval-ratio-delta", approval),
            ("error-ratio-delta", error),
            ("order-value-drift", value),
        ]
    };
    // The figures in the names are the core's (ln Λ against ln 20 = 3.00 one-sided, ln 40 = 3.69
    // two-sided, at alpha 0.05), the ratios' with the continuity correction: the excess less one
    // transaction per side, 100 (1/nc + 1/nb) points.
    let scenarios: Vec<Scenario> = vec![
        (
            "identical cohorts (A/A)",
            base,
            base,
            business(Pass, Pass, Pass),
        ),
        (
            "approvals drop 10 points (ln Λ 59.1)",
            Cohort {
                approved: 1275.0,
                ..base
            },
            base,
            vec![("approval-ratio-delta", Fail)],
        ),
        (
            "the payment fall-through: 91.2 % of 250 canary orders against 99.4 % of 5 000 (ln Λ 67.4)",
            Cohort {
                orders: 250.0,
                approved: 228.0,
                ..base
            },
            Cohort {
                orders: 5000.0,
                approved: 4970.0,
                ..base
            },
            vec![("approval-ratio-delta", Fail)],
        ),
        (
            "approvals 2.8 points lower on 1 500: evidence only without the continuity \
             correction (ln Λ 2.69; 3.12 on the whole excess): no evidence yet",
            Cohort {
                approved: 1383.0,
                ..base
            },
            base,
            vec![("approval-ratio-delta", Inconclusive)],
        ),
        (
            "approvals 0.2 point lower: within the limit",
            Cohort {
                approved: 1422.0,
                ..base
            },
            base,
            vec![("approval-ratio-delta", Pass)],
        ),
        (
            "approvals higher: favourable",
            Cohort {
                approved: 1485.0,
                ..base
            },
            base,
            vec![("approval-ratio-delta", Pass)],
        ),
        (
            "approvals 1 point lower on 300 orders: beyond the limit, no evidence (ln Λ -0.39)",
            Cohort {
                approved: 282.0,
                ..small
            },
            small,
            vec![("approval-ratio-delta", Inconclusive)],
        ),
        (
            "approvals 0.35 point lower on 2 000: beyond the limit by less than one order per \
             side (0.1 point), no evidence at all (ln Λ −∞; -1.10 without the correction)",
            Cohort {
                approved: 1893.0,
                ..even
            },
            even,
            vec![("approval-ratio-delta", Inconclusive)],
        ),
        (
            "15 orders per cohort: too few to judge",
            few,
            Cohort {
                approved: 15.0,
                errors: 0.0,
                ..few
            },
            business(Inconclusive, Inconclusive, Inconclusive),
        ),
        (
            "15 canary orders against 1 500: too few on one side",
            few,
            base,
            business(Inconclusive, Inconclusive, Inconclusive),
        ),
        (
            "order value +5 % (the tax-rounding drift, ln Λ 7.57)",
            Cohort {
                mean: 2100.0,
                ..base
            },
            base,
            vec![("order-value-drift", Fail)],
        ),
        (
            "order value -5 % (ln Λ 7.57)",
            Cohort {
                mean: 1900.0,
                ..base
            },
            base,
            vec![("order-value-drift", Fail)],
        ),
        (
            "order value +0.5 %: within the limit",
            Cohort {
                mean: 2010.0,
                ..base
            },
            base,
            vec![("order-value-drift", Pass)],
        ),
        (
            "order value +2 % on 300 orders: beyond the limit, no evidence (ln Λ -0.87)",
            Cohort {
                mean: 2040.0,
                ..small
            },
            small,
            vec![("order-value-drift", Inconclusive)],
        ),
        (
            "5xx +3 points (ln Λ 6.74)",
            Cohort {
                errors: 60.0,
                ..base
            },
            base,
            vec![("error-ratio-delta", Fail)],
        ),
        (
            "5xx +2 points on 1 500: beyond the limit, no evidence yet (ln Λ 0.26; the fixed z \
             test failed it)",
            Cohort {
                errors: 45.0,
                ..base
            },
            base,
            vec![("error-ratio-delta", Inconclusive)],
        ),
        (
            "5xx +2.4 points on 1 500: evidence only without the continuity correction (ln Λ \
             2.28; 3.12 on the whole excess): no evidence yet",
            Cohort {
                errors: 51.0,
                ..base
            },
            base,
            vec![("error-ratio-delta", Inconclusive)],
        ),
        (
            "5xx lower: favourable",
            Cohort {
                errors: 0.0,
                ..base
            },
            base,
            vec![("error-ratio-delta", Pass)],
        ),
        (
            "every change exactly at its limit (-0.3 point, +1 point, +1 %): within it",
            Cohort {
                approved: 1894.0,
                errors: 40.0,
                mean: 2020.0,
                ..even
            },
            even,
            business(Pass, Pass, Pass),
        ),
        (
            "no guard series: not tripped",
            base,
            base,
            vec![("guard-tripped", Pass)],
        ),
        (
            "the guard reports 0 on both proxies",
            Cohort {
                tripped: [Some(0.0), Some(0.0)],
                ..base
            },
            base,
            vec![("guard-tripped", Pass)],
        ),
        (
            "one proxy of two tripped the canary: fail, whatever the business figures",
            Cohort {
                tripped: [Some(0.0), Some(1.0)],
                ..base
            },
            base,
            business(Pass, Pass, Pass)
                .into_iter()
                .chain([("guard-tripped", Fail)])
                .collect(),
        ),
        (
            "only the other proxy reports, tripped",
            Cohort {
                tripped: [None, Some(1.0)],
                ..base
            },
            base,
            vec![("guard-tripped", Fail)],
        ),
        (
            "a stable series tripped is not the canary's",
            base,
            Cohort {
                tripped: [Some(1.0), Some(1.0)],
                ..base
            },
            vec![("guard-tripped", Pass)],
        ),
    ];
    let queries = analysis_queries();
    let gates: BTreeSet<&str> = queries.iter().map(|q| q.gate.as_str()).collect();
    let covered: BTreeSet<&str> = scenarios
        .iter()
        .flat_map(|s| s.3.iter().map(|(g, _)| *g))
        .collect();
    assert_eq!(gates, covered, "every gate has scenarios");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.yaml");
    // One promtool unit test per (scenario, query): the query's value at the end of a 15 min
    // window of known counters, from two proxies per cohort.
    let evaluate = |c: &Cohort, s: &Cohort, expr: &str, want: f64| {
        let file = json!({"tests": [{
            "interval": "1m",
            "input_series": input_series(c, s),
            "promql_expr_test": [{"expr": expr, "eval_time": "15m",
                                  "exp_samples": [{"labels": "{}", "value": want}]}],
        }]});
        fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
        run_promtool(&["test", "rules"], &path)
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, c, s, verdicts) in &scenarios {
        for (gate, verdict) in verdicts {
            let expected = expected_value(gate, c, s);
            for q in queries.iter().filter(|q| q.gate == *gate) {
                // The scenario means what it says, under this manifest's pass range.
                let got = match expected {
                    None => Inconclusive,
                    Some(v)
                        if q.pass.0.is_none_or(|lo| v >= lo)
                            && q.pass.1.is_none_or(|hi| v <= hi) =>
                    {
                        Pass
                    }
                    Some(_) => Fail,
                };
                assert_eq!(
                    got, *verdict,
                    "{name}: {gate} under {}: expected value {expected:?}",
                    q.origin
                );
                // NaN is the only value that differs from itself.
                let expr = match expected {
                    None => format!("({0}) != bool ({0})", q.rendered),
                    Some(v) => format!("abs(({}) - ({v})) < bool 0.000001", q.rendered),
                };
                checked += 1;
                let (ok, out) = evaluate(c, s, &expr, 1.0);
                if !ok {
                    // Ask promtool for the value itself, for the message.
                    let (_, raw) = evaluate(c, s, &q.rendered, -12345.0);
                    let value = raw
                        .lines()
                        .find(|l| l.trim_start().starts_with("got:"))
                        .map_or_else(|| out.clone(), |l| l.trim().to_string());
                    failures.push(format!(
                        "{name}: {gate} ({}): expected {}, {value}",
                        q.origin,
                        expected.map_or("NaN".to_string(), |v| v.to_string())
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!(
        "{checked} query evaluations over {} scenarios agree with the gate rule",
        scenarios.len()
    );
}
