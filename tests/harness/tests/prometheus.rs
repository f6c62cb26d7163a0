//! End-to-end: the shipped Prometheus rules (`prometheus/rules.yaml`).
//!
//! - promtool checks them and runs their unit tests (`prometheus/rules_test.yaml`);
//! - a real Prometheus scrapes a real Envoy running the filter with the shipped business rules,
//!   evaluates the shipped rules, and its HTTP API must return the exact average order value and
//!   approval ratio per version computed independently from the traffic the test sent.
//!
//! - every query of the Grafana dashboard (`grafana/sticky-canary.json`), its variables
//!   substituted, returns one series per version from that same Prometheus.
//!
//! Prometheus and promtool come from `PROMETHEUS_BIN` / `PROMTOOL_BIN`, else from
//! `.venv/prometheus/usr/bin` (installed by `make prometheus`, i.e. `prometheus/install.sh`). A
//! missing binary fails the test: a skipped test proves nothing.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use sticky_canary::brake::pool::percent_encode;
use sticky_canary::counting::business::SkipReason;
use sticky_canary::plan::Plan;
use sticky_canary::routing::decision::Reason;
use sticky_canary_harness::envoy::{workspace_root, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{Client, Request};
use sticky_canary_harness::prometheus::{poll, prometheus_bin, promtool, Prometheus};
use sticky_canary_harness::shop::shop;
use sticky_canary_harness::{addresses, read_text, upstreams_for};

/// The whole e2e test must finish well within a minute.
const TEST_BUDGET: Duration = Duration::from_secs(50);

fn rules_path() -> PathBuf {
    workspace_root().join("prometheus/rules.yaml")
}

fn run_promtool(args: &[&str], file: &Path) {
    let out = Command::new(promtool())
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", promtool().display()));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("SUCCESS"),
        "promtool {} {} failed ({}):\n{text}",
        args.join(" "),
        file.display(),
        out.status
    );
}

#[test]
fn promtool_checks_and_tests_the_shipped_rules() {
    run_promtool(&["check", "rules"], &rules_path());
    run_promtool(
        &["test", "rules"],
        &workspace_root().join("prometheus/rules_test.yaml"),
    );
}

// ---- the Grafana dashboard (grafana/sticky-canary.json) ---------------------------------------

fn dashboard() -> Value {
    let path = workspace_root().join("grafana/sticky-canary.json");
    serde_json::from_str(&read_text(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel of the dashboard, the panels nested in (collapsed) rows included.
fn dashboard_panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().cloned().unwrap_or_default() {
        out.extend(p["panels"].as_array().cloned().unwrap_or_default());
        out.push(p);
    }
    out
}

/// (panel title, expr, legendFormat) of every target of every query panel.
fn dashboard_targets(d: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in dashboard_panels(d) {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            out.push((
                p["title"].as_str().unwrap_or("").to_string(),
                t["expr"].as_str().unwrap_or("").to_string(),
                t["legendFormat"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out
}

/// The labels a legend names: `{{version}} {{reason}}` → {reason, version}.
fn legend_labels(legend: &str) -> BTreeSet<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}"))
        .map(|(label, _)| label.trim().to_string())
        .collect()
}

/// Grafana's variables as Grafana would send them: `$version` with several values selected
/// becomes a regex alternation; the rate window is a fixed 1m.
fn substitute(expr: &str, service: &str, versions: &[&str]) -> String {
    let alternation = format!("({})", versions.join("|"));
    expr.replace("${__rate_interval}", "1m")
        .replace("$__rate_interval", "1m")
        .replace("$__range", "1m")
        .replace("$__interval", "15s")
        .replace("${service}", service)
        .replace("$service", service)
        .replace("${version}", &alternation)
        .replace("$version", &alternation)
}

/// A `$` left after substitution that is not label_replace's `$1`: an unknown variable.
fn leftover_variable(expr: &str) -> Option<String> {
    expr.match_indices('$')
        .map(|(i, _)| &expr[i..])
        .find(|rest| !rest[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(|rest| rest.chars().take(20).collect())
}

/// The `reason` values the filter publishes for the test's plugin (the core's own lists), by the
/// counter a panel reads.
fn reasons_of(expr: &str) -> Result<Vec<&'static str>, String> {
    if expr.contains("canary_business_skipped_total") {
        Ok(SkipReason::ALL.iter().map(|r| r.as_str()).collect())
    } else if expr.contains("canary_requests_total") {
        // This plugin has no `session.hold.flows`.
        Ok(Reason::decided(false).iter().map(|r| r.as_str()).collect())
    } else {
        Err(format!("a panel by reason over an unknown counter: {expr}"))
    }
}

#[test]
fn grafana_dashboard_is_importable_and_well_formed() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        d["schemaVersion"]
    );
    let inputs = d["__inputs"].as_array().cloned().unwrap_or_default();
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS datasource input: {inputs:?}"
    );
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (name, query) in [
        ("service", "label_values(canary_requests_total, service)"),
        (
            "version",
            "label_values(canary_requests_total{service=\"$service\"}, version)",
        ),
    ] {
        let v = vars
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("template variable {name}: {vars:?}"));
        assert_eq!(v["query"]["query"], query, "variable {name}");
        assert_eq!(
            v["datasource"]["uid"], "${DS_PROMETHEUS}",
            "variable {name}"
        );
    }
    let panels = dashboard_panels(&d);
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without title: {p}");
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: id {id} is not unique");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: datasource"
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                !expr.trim().is_empty(),
                "{title}: a target without expr: {t}"
            );
            assert!(t["refId"].is_string(), "{title}: a target without refId");
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{title}: target datasource"
            );
            let legend = legend_labels(t["legendFormat"].as_str().unwrap_or(""));
            assert!(
                legend.contains("version"),
                "{title}: legend without {{{{version}}}}"
            );
            assert!(
                expr.contains("service=\"$service\"") || expr.contains("envoy_cluster_"),
                "{title}: not filtered by $service: {expr}"
            );
            assert!(
                expr.contains("$version"),
                "{title}: not filtered by $version"
            );
            let sent = substitute(expr, "checkout", &["canary", "stable"]);
            assert_eq!(leftover_variable(&sent), None, "{title}: {sent}");
            queries += 1;
        }
    }
    // What the issue asks the dashboard to show, each by the series that carries it.
    let all: String = dashboard_targets(&d)
        .into_iter()
        .map(|(_, e, _)| e)
        .collect();
    for series in [
        "canary_requests_total",
        "code_class=\"5xx\"",
        "envoy_cluster_upstream_rq_time_bucket",
        "canary_business_auth_approved_total",
        "canary_business_order_value_total",
        "canary_business_tax_sum",
        "canary_version_weight",
        "by (version, reason) (rate(canary_requests_total",
        "canary_business_skipped_total",
        "canary_grpc_responses_total{service=\"$service\",version=~\"$version\",grpc_status=~",
    ] {
        assert!(all.contains(series), "no panel reads {series}");
    }
    eprintln!("{} panels, {queries} queries", panels.len());
}

/// A panel's title and its values by version.
type PanelAnswer = (String, BTreeMap<String, f64>);

/// Runs every dashboard query against `prom` with the variables substituted. Each must return
/// exactly the labels its legend names, one finite series per version (per version and reason for
/// the panels by reason), and the values in `want` (by panel title) within `rel`. Each query's
/// title and values by version (the last reason's, for the panels by reason).
fn dashboard_queries_answer(
    prom: &Prometheus,
    service: &str,
    want: &BTreeMap<&str, (BTreeMap<&str, f64>, f64)>,
) -> Result<Vec<PanelAnswer>, String> {
    let mut answers = Vec::new();
    let versions = ["canary", "stable"];
    let d = dashboard();
    let targets = dashboard_targets(&d);
    for (title, expr, legend) in &targets {
        let sent = substitute(expr, service, &versions);
        let data = prom.api(&format!("/api/v1/query?query={}", percent_encode(&sent)))?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        let labels = legend_labels(legend);
        let mut seen = BTreeSet::new();
        let mut values: BTreeMap<String, f64> = BTreeMap::new();
        for s in &result {
            let metric = s["metric"].as_object().cloned().unwrap_or_default();
            let keys: BTreeSet<String> = metric.keys().cloned().collect();
            if keys != labels {
                return Err(format!(
                    "{title}: labels {keys:?}, legend names {labels:?}: {sent}"
                ));
            }
            let value = parse_value(s["value"][1].as_str().unwrap_or(""))?;
            if !value.is_finite() {
                return Err(format!("{title}: {metric:?} = {value}: {sent}"));
            }
            let tuple: Vec<String> = labels
                .iter()
                .map(|l| metric[l].as_str().unwrap_or("").to_string())
                .collect();
            seen.insert(tuple);
            let version = metric["version"].as_str().unwrap_or("").to_string();
            values.insert(version, value);
        }
        let mut expected: BTreeSet<Vec<String>> = BTreeSet::new();
        for v in versions {
            if labels.contains("reason") {
                for r in reasons_of(expr)? {
                    // BTreeSet order: reason before version.
                    expected.insert(vec![r.to_string(), v.to_string()]);
                }
            } else {
                expected.insert(vec![v.to_string()]);
            }
        }
        if seen != expected || result.len() != expected.len() {
            return Err(format!(
                "{title}: {} series {seen:?}, want {expected:?}: {sent}",
                result.len()
            ));
        }
        if let Some((w, rel)) = want.get(title.as_str()) {
            for (v, w) in w {
                let g = values.get(*v).copied().unwrap_or(f64::NAN);
                if (g - w).abs() > rel * w.abs().max(1e-12) {
                    return Err(format!(
                        "{title}: {v} = {g}, want {w} (±{rel} relative): {sent}"
                    ));
                }
            }
        }
        answers.push((title.clone(), values));
    }
    for title in want.keys() {
        if !targets.iter().any(|(t, _, _)| t == title) {
            return Err(format!("no panel titled {title:?}"));
        }
    }
    Ok(answers)
}

// ---- the traffic -----------------------------------------------------------------------------

/// Per-version figures, counted from what the test sent and who answered (`x-upstream`).
#[derive(Default, Debug, Clone, Copy)]
struct Expect {
    responses: u64,
    responses_5xx: u64,
    orders: u64,
    order_value_cents: u64,
    approved: u64,
    /// gRPC responses, and those with an error status (the default `grpc.error_codes`).
    grpc: u64,
    grpc_errors: u64,
}

/// The shipped plugin config (its business rules), weights 50/50, session key from `x-user-id`.
fn plugin_config() -> String {
    let mut v: Value = serde_json::from_str(&EnvoyConfig::reference().plugin_config()).unwrap();
    v["versions"] = json!([{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}]);
    v["session"] = json!({"sources": [{"header": "x-user-id"}]});
    v["grpc"] = json!({});
    v.to_string()
}

fn parse_value(v: &str) -> Result<f64, String> {
    v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))
}

/// The two versions' values of `promql` equal `want` exactly (float formatting aside).
fn exactly(
    prom: &Prometheus,
    promql: &str,
    want: &BTreeMap<&str, f64>,
) -> Result<BTreeMap<String, String>, String> {
    let got = prom.by_version(promql)?;
    for (version, w) in want {
        let g = got.get(*version).map(|v| parse_value(v)).transpose()?;
        if g != Some(*w) {
            return Err(format!("{promql}: want {want:?}, got {got:?}"));
        }
    }
    Ok(got)
}

/// The two versions' values of `promql` are within `rel` (relative) of `want`.
fn close(
    prom: &Prometheus,
    promql: &str,
    want: &BTreeMap<&str, f64>,
    rel: f64,
) -> Result<BTreeMap<String, String>, String> {
    let got = prom.by_version(promql)?;
    for (version, w) in want {
        let Some(g) = got.get(*version) else {
            return Err(format!("{promql}: no series for {version}; got {got:?}"));
        };
        let g = parse_value(g)?;
        if (g - w).abs() > rel * w.abs().max(1e-12) {
            return Err(format!("{promql}: want {want:?}, got {got:?}"));
        }
    }
    Ok(got)
}

#[test]
fn real_prometheus_computes_exact_average_order_value_per_version() {
    let deadline = Instant::now() + TEST_BUDGET;
    prometheus_bin(); // fails now, with the fix, if it is missing

    // Shop upstreams and Envoy, as tests/metrics.rs starts them.
    let plugin = plugin_config();
    let plan = Plan::from_json(plugin.as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, shop);
    let pairs = addresses(&upstreams);
    let mut cfg = EnvoyConfig::for_test(&plugin, &pairs, plan.version_name(plan.default_version));
    cfg.set_top_level(
        "stats_flush_interval",
        serde_yaml::Value::String("1s".into()),
    );
    let envoy = Envoy::start(&cfg).unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));

    let prom = Prometheus::start(&[envoy.admin()], Some(&rules_path()), deadline);

    // Prometheus has scraped the zeros before any traffic: the 5 m windows start at 0.
    let zero: BTreeMap<&str, f64> = [("canary", 0.0), ("stable", 0.0)].into();
    poll("the first scrape of Envoy", deadline, || {
        exactly(
            &prom,
            "sum by (version) (canary_business_orders_total)",
            &zero,
        )
    });

    // Known traffic: 200 sessions, 1–3 orders each with known totals, some declined, and every
    // tenth session one failing request.
    let mut expect: BTreeMap<String, Expect> = BTreeMap::new();
    let mut client = Client::connect(envoy.listener()).unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut send = |key: &str, path: &str| -> String {
        let r = client
            .send(&Request::get(path).header("x-user-id", key))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let served = r.header_str("x-upstream").unwrap_or("").to_string();
        assert_eq!(
            r.header_str("x-canary-version"),
            Some(served.as_str()),
            "{path}"
        );
        assert_eq!(
            served,
            plan.version_name(plan.bucket(key.as_bytes())),
            "sticky decision for {key}"
        );
        served
    };
    let mut traffic = |sessions: std::ops::Range<u64>, expect: &mut BTreeMap<String, Expect>| {
        for i in sessions {
            let key = format!("session-{i}");
            for j in 0..1 + i % 3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let cents = 1 + rng % 99_999;
                let approved = (i + j) % 4 != 0;
                let path = format!(
                    "/pay?order=o{i}-{j}&total={}.{:02}&auth={}&tax=1.00",
                    cents / 100,
                    cents % 100,
                    if approved { "approved" } else { "declined" }
                );
                let served = send(&key, &path);
                let e = expect.entry(served).or_default();
                e.responses += 1;
                e.orders += 1;
                e.order_value_cents += cents;
                e.approved += u64::from(approved);
            }
            if i % 10 == 0 {
                let served = send(&key, "/pay?status=500");
                let e = expect.entry(served).or_default();
                e.responses += 1;
                e.responses_5xx += 1;
            }
            // gRPC answers (trailers-only over HTTP/1.1): OK, INTERNAL (an error), NOT_FOUND
            // (the caller's, not an error).
            if i % 4 == 1 {
                let code = ["0", "13", "5"][(i / 4 % 3) as usize];
                let served = send(&key, &format!("/pay?grpc={code}"));
                let e = expect.entry(served).or_default();
                e.responses += 1;
                e.grpc += 1;
                e.grpc_errors += u64::from(code == "13");
            }
        }
    };
    traffic(0..200, &mut expect);
    let (canary, stable) = (expect["canary"], expect["stable"]);
    eprintln!("sent: canary {canary:?}, stable {stable:?}");
    assert!(
        canary.orders >= 50 && stable.orders >= 50,
        "both versions get traffic"
    );

    // Raw counters, summed per version: exact integers.
    let orders: BTreeMap<&str, f64> = [
        ("canary", canary.orders as f64),
        ("stable", stable.orders as f64),
    ]
    .into();
    let cents: BTreeMap<&str, f64> = [
        ("canary", canary.order_value_cents as f64),
        ("stable", stable.order_value_cents as f64),
    ]
    .into();
    poll("the orders and their value in Prometheus", deadline, || {
        exactly(
            &prom,
            "sum by (version) (canary_business_orders_total)",
            &orders,
        )?;
        exactly(
            &prom,
            "sum by (version) (canary_business_order_value_total)",
            &cents,
        )
    });

    // Average order value per version: cents / orders. Both are integers below 2^53, so Prometheus's
    // division and ours are the same correctly rounded quotient: compare exactly.
    let aov = |e: &Expect| e.order_value_cents as f64 / e.orders as f64;
    let want_aov: BTreeMap<&str, f64> = [("canary", aov(&canary)), ("stable", aov(&stable))].into();
    let got_aov = exactly(
        &prom,
        "sum by (version) (canary_business_order_value_total) / sum by (version) (canary_business_orders_total)",
        &want_aov,
    )
    .unwrap_or_else(|e| panic!("average order value: {e}"));
    for (v, e) in [("canary", &canary), ("stable", &stable)] {
        eprintln!(
            "average order value {v}: {} cents = {}/{} (Prometheus printed {})",
            aov(e),
            e.order_value_cents,
            e.orders,
            got_aov[v]
        );
    }

    // Approval ratio per version: approvals / orders, exactly.
    let ratio = |e: &Expect| e.approved as f64 / e.orders as f64;
    let want_ratio: BTreeMap<&str, f64> =
        [("canary", ratio(&canary)), ("stable", ratio(&stable))].into();
    poll("the approval ratio", deadline, || {
        exactly(
            &prom,
            "sum by (version) (canary_business_auth_approved_total) / sum by (version) (canary_business_orders_total)",
            &want_ratio,
        )
    });

    // The shipped recording rules produce a series per version. Their windows start at the
    // zeros scraped before the traffic, so increase() extrapolates numerator and denominator by
    // the same factor and the ratios equal the exact ones up to float rounding.
    let five = |e: &Expect| e.responses_5xx as f64 / e.responses as f64;
    let want_5xx: BTreeMap<&str, f64> =
        [("canary", five(&canary)), ("stable", five(&stable))].into();
    let rel_delta = (aov(&canary) - aov(&stable)) / aov(&stable);
    poll("the recording rules", deadline, || {
        close(
            &prom,
            "service_version:canary_business_order_value_cents:mean5m",
            &want_aov,
            1e-9,
        )?;
        close(
            &prom,
            "service_version:canary_business_auth_approved_per_orders:ratio_rate5m",
            &want_ratio,
            1e-9,
        )?;
        close(
            &prom,
            "service_version:canary_responses_5xx_per_responses:ratio_rate5m",
            &want_5xx,
            1e-9,
        )?;
        let delta = prom.by_version(
            "service_version:canary_business_order_value_cents:mean5m_relative_delta",
        )?;
        let got = delta.get("canary").map(|v| parse_value(v)).transpose()?;
        match got {
            Some(g) if delta.len() == 1 && (g - rel_delta).abs() <= 1e-9 => Ok(()),
            _ => Err(format!(
                "relative AOV delta: want only canary = {rel_delta}, got {delta:?}"
            )),
        }
    });
    // The filter's 5xx count agrees with Envoy's own per-cluster stats (one cluster per version).
    let want_5xx_count: BTreeMap<&str, f64> = [
        ("canary", canary.responses_5xx as f64),
        ("stable", stable.responses_5xx as f64),
    ]
    .into();
    poll("Envoy's 5xx per cluster", deadline, || {
        exactly(
            &prom,
            "sum by (version) (canary_responses_total{code_class=\"5xx\"})",
            &want_5xx_count,
        )?;
        exactly(
            &prom,
            "sum by (version) (label_replace(envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"5\"}, \"version\", \"$1\", \"envoy_cluster_name\", \"(.*)\"))",
            &want_5xx_count,
        )
    });
    for rule in [
        "service_version:canary_requests:rate5m",
        "service_version:canary_business_orders:rate5m",
        "service_version:canary_business_orders:increase5m",
    ] {
        let got = prom.by_version(rule).unwrap();
        assert!(
            got.contains_key("canary") && got.contains_key("stable"),
            "{rule}: {got:?}"
        );
    }

    // Every rule of the group evaluated without error.
    let rules = prom.api("/api/v1/rules").unwrap();
    let group = rules["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "sticky-canary"))
        .unwrap_or_else(|| panic!("group sticky-canary not loaded: {rules}"));
    for r in group["rules"].as_array().unwrap() {
        assert_eq!(r["health"], "ok", "rule failed: {r}");
    }

    // What Envoy published, for the manual: the canary version's series, and Envoy's own
    // per-cluster request stats for its cluster.
    let text = envoy.admin_get("/stats/prometheus").text();
    let envoy_stats = [
        "envoy_cluster_upstream_rq{",
        "envoy_cluster_upstream_rq_xx{",
        "envoy_cluster_upstream_rq_total{",
        "envoy_cluster_upstream_rq_time_count{",
    ];
    let excerpt: Vec<&str> = text
        .lines()
        .filter(|l| {
            (l.starts_with("canary_") && l.contains("version=\"canary\"") && !l.contains("_bucket"))
                || (envoy_stats.iter().any(|p| l.starts_with(p))
                    && l.contains("envoy_cluster_name=\"canary\""))
        })
        .collect();
    eprintln!("/stats/prometheus excerpt:\n{}", excerpt.join("\n"));

    // The Grafana dashboard: its variables' values, then every panel's query, as Grafana would
    // send it with this service and both versions selected, over a 1m rate window.
    let services = prom
        .api("/api/v1/label/service/values?match[]=canary_requests_total")
        .unwrap();
    assert!(
        services
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == plan.service.as_str())),
        "$service values: {services}"
    );
    let versions = prom
        .api(&format!(
            "/api/v1/label/version/values?match[]={}",
            percent_encode(&format!(
                "canary_requests_total{{service=\"{}\"}}",
                plan.service
            ))
        ))
        .unwrap();
    assert_eq!(versions, json!(["canary", "stable"]), "$version values");
    // Envoy publishes a cluster's latency histogram only once it has an observation, so the first
    // scrape of it already counts all the traffic above and its rate would be 0 (p99 NaN) for
    // ever: once Prometheus has it for both clusters, send a second round of known traffic.
    let both: BTreeMap<&str, f64> = [("canary", 0.0), ("stable", 0.0)].into();
    poll("Envoy's latency histograms in Prometheus", deadline, || {
        let got = prom.by_version(
            "sum by (version) (label_replace(envoy_cluster_upstream_rq_time_count, \"version\", \"$1\", \"envoy_cluster_name\", \"(.*)\"))",
        )?;
        match both.keys().all(|v| got.contains_key(*v)) {
            true => Ok(()),
            false => Err(format!("{got:?}")),
        }
    });
    traffic(200..240, &mut expect);
    let (canary, stable) = (expect["canary"], expect["stable"]);
    eprintln!("sent in all: canary {canary:?}, stable {stable:?}");
    let per_version = |f: &dyn Fn(&Expect) -> f64| -> BTreeMap<&str, f64> {
        [("canary", f(&canary)), ("stable", f(&stable))].into()
    };
    // Rate over rate in one window: the same ratios as the counters', up to float rounding.
    // The tax histogram's _sum is approximate (every order's tax is 1.00).
    let want_panels: BTreeMap<&str, (BTreeMap<&str, f64>, f64)> = [
        ("5xx ratio", (per_version(&five), 1e-9)),
        ("Approval ratio", (per_version(&ratio), 1e-9)),
        (
            "Average order value",
            (per_version(&|e| aov(e) / 100.0), 1e-9),
        ),
        ("Tax per order", (per_version(&|_| 1.0), 0.1)),
        ("Configured weights", (per_version(&|_| 50.0), 0.0)),
        (
            "gRPC error ratio",
            (per_version(&|e| e.grpc_errors as f64 / e.grpc as f64), 1e-9),
        ),
    ]
    .into();
    let answers = poll("every dashboard query", deadline, || {
        dashboard_queries_answer(&prom, &plan.service, &want_panels)
    });
    for (title, values) in &answers {
        eprintln!("dashboard panel {title}: {values:?}");
    }
}
