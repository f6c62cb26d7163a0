//! `make bench-scale`, part 1: **the cost curves**. CPU time per request as the
//! filter's work grows: pins, header rules, JSON pointers, JSON body size, versions, cookies.
//!
//! Method: the one of `make bench` (see [`super`]), in direct-response mode (no upstream hop, so
//! the filter's share of Envoy's CPU is as large as it gets):
//! - every size of every curve runs in **its own Envoy** (`--concurrency 1`, pinned to
//!   `BENCH_ENVOY_CPU`), all started at once; wrk runs on the load core;
//! - the figure of merit is Envoy's CPU time (utime + stime) over the requests Envoy counted;
//! - every round runs every point once in a freshly shuffled (seeded) order, the V8 floor among
//!   them, so that a slow moment of the shared machine spreads over every curve; a point's ratio
//!   to the floor is taken within its round;
//! - a curve is **linear** when the least-squares slope fitted within each round has the same
//!   sign in at least 85 % of the rounds (a sign test: 8 of 9 is p < 0.05), reported with the
//!   median per-round slope; else **flat within noise**.
//!
//! The configs are generated from `envoy/bench/filter-route.yaml` (and `floor.yaml`) by the
//! functions below ([`curve_configs`]), never checked in; `tools/tests/bench_configs.rs` runs
//! `envoy --mode validate` on a few of them and compiles every plugin config with the filter's own
//! code. Knobs: `SCALE_ROUNDS` (9), `SCALE_SECONDS` (1), `SCALE_WARMUP_SECONDS` (1),
//! `SCALE_CONNECTIONS` (32), `SCALE_CURVES` (pins,rules,pointers,body,versions,cookies),
//! `SCALE_SEED` (2026), `SCALE_SESSIONS` (500 distinct requests per wrk script).

use super::chart::{nice_step, xml};
use super::measure::{measure, Sample, Spread};
use super::procs::{clock_ticks_per_second, start_envoy, EnvoyProbe, Tools};
use super::requests::{cookie_header, session_keys, REQUEST_HEADERS, REQUEST_PATH};
use super::variants::{prepare, Mode, Variant, UPSTREAM_HEADERS};
use super::{check_interrupt, env_num};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use serde_yaml::{Mapping, Value};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use sticky_canary_harness::envoy::{get, key, Envoy, HCM};
use sticky_canary_harness::Rng;

/// Every curve, in the order of the report.
pub const CURVES: &[&str] = &["pins", "rules", "pointers", "body", "versions", "cookies"];

/// The request header the pins curve pins on.
pub const PIN_HEADER: &str = "x-merchant-id";

/// Knobs of the curves (environment variables, see the module doc).
#[derive(Clone, Debug)]
pub struct CurveOptions {
    pub rounds: usize,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub connections: u32,
    pub curves: Vec<String>,
    pub seed: u64,
    pub sessions: usize,
}

impl CurveOptions {
    pub fn from_env() -> Result<CurveOptions, String> {
        let curves: Vec<String> = match std::env::var("SCALE_CURVES") {
            Ok(c) if !c.trim().is_empty() => c.split(',').map(|s| s.trim().to_string()).collect(),
            _ => CURVES.iter().map(|c| c.to_string()).collect(),
        };
        if let Some(bad) = curves.iter().find(|c| !CURVES.contains(&c.as_str())) {
            return Err(format!(
                "SCALE_CURVES: unknown curve {bad:?} ({})",
                CURVES.join(", ")
            ));
        }
        Ok(CurveOptions {
            rounds: env_num("SCALE_ROUNDS", 9usize).max(1),
            seconds: env_num("SCALE_SECONDS", 1.0f64).round().max(1.0),
            warmup_seconds: env_num("SCALE_WARMUP_SECONDS", 1.0f64).round().max(0.0),
            connections: env_num("SCALE_CONNECTIONS", 32u32).max(1),
            curves,
            seed: env_num("SCALE_SEED", 2026u64),
            sessions: env_num("SCALE_SESSIONS", 500usize).max(1),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Configs.

/// A checked-in bench config, parsed (`envoy/bench/<key>.yaml`).
pub fn base(key_: &str) -> Result<Value, String> {
    Variant::by_key(key_)
        .ok_or_else(|| format!("no bench variant {key_}"))?
        .load()
}

fn filter_node(doc: &mut Value) -> Result<&mut Value, String> {
    let path = [HCM, &["http_filters", "0"]].concat();
    let mut cur = doc;
    for p in &path {
        cur = match p.parse::<usize>() {
            Ok(i) => cur.get_mut(i),
            Err(_) => cur.get_mut(*p),
        }
        .ok_or_else(|| format!("bench config: no {path:?}"))?;
    }
    Ok(cur)
}

/// The plugin configuration of a config's (first) wasm filter, as JSON.
pub fn plugin_json(doc: &Value) -> Result<Json, String> {
    let text = super::plugin_config(doc).ok_or("bench config has no plugin configuration")?;
    serde_json::from_str(&text).map_err(|e| format!("plugin configuration: {e}"))
}

/// Replaces the plugin configuration of a config's first http filter (a wasm filter).
pub fn set_plugin_json(doc: &mut Value, plugin: &Json) -> Result<(), String> {
    let f = filter_node(doc)?;
    let config = f
        .get_mut("typed_config")
        .and_then(|t| t.get_mut("config"))
        .ok_or("bench config: the first http filter is not a wasm filter")?;
    let mut c = Mapping::new();
    c.insert(
        key("@type"),
        key("type.googleapis.com/google.protobuf.StringValue"),
    );
    c.insert(key("value"), key(&plugin.to_string()));
    config["configuration"] = Value::Mapping(c);
    Ok(())
}

fn with_plugin(edit: impl FnOnce(&mut Json)) -> Result<Value, String> {
    let mut doc = base("filter-route")?;
    let mut p = plugin_json(&doc)?;
    edit(&mut p);
    set_plugin_json(&mut doc, &p)?;
    Ok(doc)
}

/// The pinned values of the pins curve: `m000000` …
pub fn pin_value(i: usize) -> String {
    format!("m{i:06}")
}

/// filter-route with `n` values pinned to canary on [`PIN_HEADER`] (one pin entry; `n == 0`: no
/// pins at all).
pub fn pins_config(n: usize) -> Result<Value, String> {
    with_plugin(|p| {
        if n > 0 {
            let values: Vec<String> = (0..n).map(pin_value).collect();
            p["pins"] = json!([{ "header": PIN_HEADER, "values": values, "version": "canary" }]);
        }
    })
}

/// filter-route with `n` header rules, cycling through the three of filter-headers (a counter,
/// a sum, a counter with `equals`) on the three headers every response carries.
pub fn rules_config(n: usize) -> Result<Value, String> {
    with_plugin(|p| {
        let rules: Vec<Json> = (0..n)
            .map(|i| match i % 3 {
                0 => json!({"name": format!("h{i}_orders"), "kind": "counter", "header": "x-order-id"}),
                1 => json!({"name": format!("h{i}_value"), "kind": "sum", "header": "x-order-total", "scale": 2}),
                _ => json!({"name": format!("h{i}_approved"), "kind": "counter", "header": "x-payment-status", "equals": "approved"}),
            })
            .collect();
        p["business_metrics"] = Json::Array(rules);
    })
}

/// Numeric members of `envoy/bench/order.json`, for the JSON pointer curve.
pub const POINTERS: &[&str] = &[
    "/order/tax",
    "/order/subtotal",
    "/order/total",
    "/order/items/0/unit_price",
    "/order/items/1/unit_price",
    "/order/items/2/unit_price",
    "/order/items/3/unit_price",
    "/order/items/4/unit_price",
    "/order/items/5/unit_price",
    "/order/items/0/qty",
    "/order/items/1/qty",
    "/order/items/2/qty",
    "/order/items/3/qty",
    "/order/items/4/qty",
    "/order/items/5/qty",
    "/shipping/eta_days",
];

/// filter-route with `n` JSON sum rules on the one 1 KiB body.
pub fn pointers_config(n: usize) -> Result<Value, String> {
    with_plugin(|p| {
        let rules: Vec<Json> = POINTERS
            .iter()
            .cycle()
            .take(n)
            .enumerate()
            .map(
                |(i, ptr)| json!({"name": format!("j{i}"), "kind": "sum", "json": ptr, "scale": 2}),
            )
            .collect();
        p["business_metrics"] = Json::Array(rules);
    })
}

/// filter-route with `n` versions (`stable`, `canary`, `v2` …, equal weights) and one route per
/// version, as `envoy/envoy.yaml` lays them out.
pub fn versions_config(n: usize) -> Result<Value, String> {
    let names: Vec<String> = (0..n)
        .map(|i| match i {
            0 => "stable".to_string(),
            1 => "canary".to_string(),
            _ => format!("v{i}"),
        })
        .collect();
    let mut doc = with_plugin(|p| {
        p["versions"] = Json::Array(
            names
                .iter()
                .map(|n| json!({"name": n, "weight": 10}))
                .collect(),
        );
    })?;
    let routes = get(
        &mut doc,
        &[HCM, &["route_config", "virtual_hosts", "0", "routes"]].concat(),
    );
    let default = routes
        .as_sequence()
        .and_then(|r| r.last().cloned())
        .ok_or("filter-route has no routes")?;
    let template = routes
        .as_sequence()
        .and_then(|r| r.first().cloned())
        .ok_or("filter-route has no routes")?;
    let mut list: Vec<Value> = names
        .iter()
        .map(|n| {
            let mut r = template.clone();
            r["match"]["headers"][0]["string_match"]["exact"] = key(n);
            r["route"]["cluster"] = key("stable");
            r
        })
        .collect();
    list.push(default);
    *routes = Value::Sequence(list);
    Ok(doc)
}

/// A JSON order body of about `size` bytes with `"tax":"3.38"` near its start or near its end
/// (the pointer is `/order/tax` either way).
pub fn sized_body(size: usize, tax_first: bool) -> String {
    let mut items = String::new();
    let mut i = 0usize;
    // Each item is ~70 bytes; stop when the body would pass `size`.
    while 60 + items.len() + 80 < size {
        if i > 0 {
            items.push(',');
        }
        let _ = write!(
            items,
            r#"{{"sku":"SKU-{i:05}-BLK-M","name":"Item {i}","qty":1,"unit_price":"12.99"}}"#
        );
        i += 1;
    }
    let mut body = if tax_first {
        format!(r#"{{"order":{{"tax":"3.38","id":"ord_7f3a9c2e41b8","items":[{items}]}}}}"#)
    } else {
        format!(r#"{{"order":{{"id":"ord_7f3a9c2e41b8","items":[{items}],"tax":"3.38"}}}}"#)
    };
    // Pad with a string member to the exact size (inside the object, before the last brace).
    if body.len() < size {
        let pad = size - body.len();
        if pad > 9 {
            body.pop();
            let _ = write!(body, r#","n":"{}"}}"#, "x".repeat(pad - 7));
        }
    }
    body
}

/// The body-size curve's paths: the tax member near the start, near the end.
pub const BODY_PATHS: &[(&str, bool)] = &[("/start", true), ("/end", false)];

/// filter-route with one JSON rule (`/order/tax`) and `max_body_bytes` above `size`, answering
/// `/start` and `/end` from the route (`direct_response`) with a `size`-byte body each. Already in
/// direct-response form: [`runnable`] leaves its routes alone.
pub fn body_config(size: usize) -> Result<Value, String> {
    let doc = with_plugin(|p| {
        p["business_metrics"] =
            json!([{"name": "tax", "kind": "sum", "json": "/order/tax", "scale": 2}]);
        p["max_body_bytes"] = json!(size + 1024);
    })?;
    with_bodies(doc, size)
}

/// The V8 floor answering the body curve's routes: what Envoy itself spends on the bytes.
pub fn floor_body_config(size: usize) -> Result<Value, String> {
    with_bodies(base("floor")?, size)
}

fn with_bodies(mut doc: Value, size: usize) -> Result<Value, String> {
    let rc = get(&mut doc, &[HCM, &["route_config"]].concat());
    rc["max_direct_response_body_size_bytes"] = Value::from((size + 1024) as u64);
    let mut routes = Vec::new();
    for (path, first) in BODY_PATHS {
        let mut r = Mapping::new();
        let mut m = Mapping::new();
        m.insert(key("prefix"), key(path));
        r.insert(key("match"), Value::Mapping(m));
        let mut body = Mapping::new();
        body.insert(key("inline_string"), key(&sized_body(size, *first)));
        let mut d = Mapping::new();
        d.insert(key("status"), Value::from(200));
        d.insert(key("body"), Value::Mapping(body));
        r.insert(key("direct_response"), Value::Mapping(d));
        let mut add = vec![super::variants::header_option(
            "content-type",
            "application/json",
        )];
        add.extend(
            UPSTREAM_HEADERS
                .iter()
                .map(|(n, v)| super::variants::header_option(n, v)),
        );
        r.insert(key("response_headers_to_add"), Value::Sequence(add));
        routes.push(Value::Mapping(r));
    }
    *get(&mut rc["virtual_hosts"], &["0", "routes"]) = Value::Sequence(routes);
    Ok(doc)
}

/// A generated config made runnable: free ports, absolute module paths, direct responses.
pub fn runnable(mut doc: Value) -> Result<String, String> {
    // `prepare` answers every route with the 1 KiB order; routes that already answer directly
    // (the body curve's) keep their own body.
    let path = [HCM, &["route_config", "virtual_hosts", "0", "routes"]].concat();
    let own: Vec<Value> = get(&mut doc, &path)
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    prepare(&mut doc, Mode::Direct, None)?;
    if let Some(routes) = get(&mut doc, &path).as_sequence_mut() {
        for (r, o) in routes.iter_mut().zip(own) {
            if o.get("direct_response").is_some() {
                *r = o;
            }
        }
    }
    serde_yaml::to_string(&doc).map_err(|e| format!("serialize a scale config: {e}"))
}

/// The sizes of each curve.
pub fn sizes(curve: &str) -> &'static [usize] {
    match curve {
        "pins" => &[0, 10, 1_000, 100_000],
        "rules" => &[1, 4, 16, 32],
        "pointers" => &[1, 4, 16],
        "body" => &[1 << 10, 64 << 10, 1 << 20, 4 << 20],
        "versions" => &[2, 4, 16],
        "cookies" => &[1, 10, 50],
        _ => &[],
    }
}

/// The config of one size of a curve (`cookies` varies the request only: filter-route).
pub fn curve_config(curve: &str, size: usize) -> Result<Value, String> {
    match curve {
        "pins" => pins_config(size),
        "rules" => rules_config(size),
        "pointers" => pointers_config(size),
        "body" => body_config(size),
        "versions" => versions_config(size),
        "cookies" => base("filter-route"),
        other => Err(format!("unknown curve {other}")),
    }
}

/// Every config of the given curves, named `<curve>-<size>`.
pub fn curve_configs(curves: &[String]) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    for c in curves {
        if c == "cookies" {
            out.push(("cookies".to_string(), curve_config(c, 0)?));
            continue;
        }
        for &s in sizes(c) {
            out.push((format!("{c}-{s}"), curve_config(c, s)?));
            if c == "body" {
                out.push((format!("floor-body-{s}"), floor_body_config(s)?));
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// `n` cookies, about 30 bytes each, with the session cookie first or last.
pub fn cookies(n: usize, session: &str, session_first: bool) -> String {
    let mut parts: Vec<String> = (1..n.max(1))
        .map(|i| {
            format!(
                "pref_{i:02}=v{:016x}",
                (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
        })
        .collect();
    let s = format!("session_id={session}");
    if session_first {
        parts.insert(0, s);
    } else {
        parts.push(s);
    }
    parts.join("; ")
}

/// One raw HTTP/1.1 request (for the wrk script: escaped CRLFs).
fn raw_request(path: &str, cookie: &str, extra: &[(String, String)]) -> String {
    let mut raw = format!("GET {path} HTTP/1.1\\r\\n");
    for (name, v) in REQUEST_HEADERS {
        let _ = write!(raw, "{name}: {v}\\r\\n");
    }
    for (name, v) in extra {
        let _ = write!(raw, "{name}: {v}\\r\\n");
    }
    let _ = write!(raw, "cookie: {cookie}\\r\\n\\r\\n");
    raw
}

/// The request shapes of the curves, each a wrk script: name → requests.
pub fn request_shapes(curves: &[String], sessions: usize) -> Vec<(String, Vec<String>)> {
    let keys = session_keys(sessions);
    let miss = |i: usize| vec![(PIN_HEADER.to_string(), format!("z{i:06}"))];
    // The default request of `make bench`, plus a pin header no pin lists.
    let mut out = vec![(
        "default".to_string(),
        keys.iter()
            .enumerate()
            .map(|(i, k)| raw_request(REQUEST_PATH, &cookie_header(k), &miss(i)))
            .collect(),
    )];
    if curves.iter().any(|c| c == "pins") {
        for &n in sizes("pins").iter().filter(|&&n| n > 0) {
            out.push((
                format!("pin-hit-{n}"),
                keys.iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let v = pin_value(i.wrapping_mul(7919) % n);
                        raw_request(REQUEST_PATH, &cookie_header(k), &[(PIN_HEADER.into(), v)])
                    })
                    .collect(),
            ));
        }
    }
    if curves.iter().any(|c| c == "body") {
        for (path, _) in BODY_PATHS {
            out.push((
                format!("body{path}"),
                keys.iter()
                    .enumerate()
                    .map(|(i, k)| raw_request(path, &cookie_header(k), &miss(i)))
                    .collect(),
            ));
        }
    }
    if curves.iter().any(|c| c == "cookies") {
        for &n in sizes("cookies") {
            for first in [true, false] {
                out.push((
                    format!("cookies-{n}-{}", if first { "first" } else { "last" }),
                    keys.iter()
                        .enumerate()
                        .map(|(i, k)| raw_request(REQUEST_PATH, &cookies(n, k, first), &miss(i)))
                        .collect(),
                ));
            }
        }
    }
    out
}

/// The wrk script sending `requests` in turn, with the `done` hook of `make bench`'s script.
pub fn wrk_pool_script(requests: &[String]) -> String {
    let mut s = String::from(
        "-- Generated by sticky-canary-bench scale (tools/src/bench/scale.rs).\nlocal pool = {\n",
    );
    for r in requests {
        let _ = writeln!(s, "  \"{r}\",");
    }
    s.push_str(super::requests::WRK_POOL_NEXT);
    s.push_str(super::requests::WRK_DONE);
    s
}

// ---------------------------------------------------------------------------------------------
// The run.

/// One measured point of a curve: a config (its Envoy) and a request shape (its wrk script).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub curve: String,
    /// The size (pins, rules, pointers, bytes, versions, cookies).
    pub x: usize,
    /// The series within the curve (`miss`/`hit`, `start`/`end`, `first`/`last`, or `-`).
    pub series: String,
    pub config: String,
    pub script: String,
    pub cpu_us: Vec<f64>,
    pub vs_floor: Vec<f64>,
    pub rps: Vec<f64>,
    pub others_on_envoy_core: Vec<f64>,
    pub non_2xx: u64,
    pub requests: u64,
    #[serde(skip)]
    #[allow(dead_code)]
    samples: Vec<Sample>,
}

fn point(curve: &str, x: usize, series: &str, config: &str, script: &str) -> Point {
    Point {
        curve: curve.to_string(),
        x,
        series: series.to_string(),
        config: config.to_string(),
        script: script.to_string(),
        cpu_us: Vec::new(),
        vs_floor: Vec::new(),
        rps: Vec::new(),
        others_on_envoy_core: Vec::new(),
        non_2xx: 0,
        requests: 0,
        samples: Vec::new(),
    }
}

/// The points of the curves (the floor first: the per-round reference).
pub fn points(curves: &[String]) -> Vec<Point> {
    let mut out = vec![point("floor", 0, "-", "floor", "default")];
    for c in curves {
        for &s in sizes(c) {
            let cfg = format!("{c}-{s}");
            match c.as_str() {
                "pins" => {
                    out.push(point(c, s, "miss", &cfg, "default"));
                    if s > 0 {
                        out.push(point(c, s, "hit", &cfg, &format!("pin-hit-{s}")));
                    }
                }
                "body" => {
                    out.push(point(
                        c,
                        s,
                        "floor (no filter)",
                        &format!("floor-body-{s}"),
                        "body/end",
                    ));
                    for (path, _) in BODY_PATHS {
                        out.push(point(
                            c,
                            s,
                            path.trim_start_matches('/'),
                            &cfg,
                            &format!("body{path}"),
                        ));
                    }
                }
                "cookies" => {
                    for series in ["first", "last"] {
                        out.push(point(
                            c,
                            s,
                            series,
                            "cookies",
                            &format!("cookies-{s}-{series}"),
                        ));
                    }
                }
                _ => out.push(point(c, s, "-", &cfg, "default")),
            }
        }
    }
    out
}

/// What a curve's series says: flat within noise, or linear with a slope.
#[derive(Clone, Debug, Serialize)]
pub struct Fit {
    pub curve: String,
    pub series: String,
    /// Per x: the median CPU µs/req and the min–max.
    pub xs: Vec<usize>,
    pub cpu: Vec<Spread>,
    pub vs_floor: Vec<Spread>,
    /// Least-squares slope of the medians, µs per unit of x (per KiB for bodies).
    pub slope_us_per_unit: f64,
    /// The fitted change over the whole range, µs.
    pub change_us: f64,
    /// The noise: the median over the points of their samples' min–max spread, µs.
    pub noise_us: f64,
    pub verdict: String,
}

/// The unit of x in the report (bodies in KiB).
pub fn unit(curve: &str) -> (&'static str, f64) {
    match curve {
        "pins" => ("pinned value", 1.0),
        "rules" => ("header rule", 1.0),
        "pointers" => ("JSON pointer", 1.0),
        "body" => ("KiB", 1024.0),
        "versions" => ("version", 1.0),
        "cookies" => ("cookie", 1.0),
        _ => ("", 1.0),
    }
}

/// The least-squares slope of `ys` over `xs` (0 when the xs do not vary).
fn least_squares(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

pub fn fits(points: &[Point]) -> Vec<Fit> {
    let mut out: Vec<Fit> = Vec::new();
    for p in points.iter().filter(|p| p.curve != "floor") {
        if out
            .iter()
            .any(|f| f.curve == p.curve && f.series == p.series)
        {
            continue;
        }
        let mut pts: Vec<&Point> = points
            .iter()
            .filter(|q| q.curve == p.curve && q.series == p.series)
            .collect();
        // The pins curve's 0 has only misses: it starts the hit series too.
        if p.curve == "pins" && p.series == "hit" {
            if let Some(z) = points
                .iter()
                .find(|q| q.curve == "pins" && q.x == 0 && q.series == "miss")
            {
                pts.insert(0, z);
            }
        }
        let (_, per) = unit(&p.curve);
        let xs: Vec<f64> = pts.iter().map(|q| q.x as f64 / per).collect();
        let cpu: Vec<Spread> = pts.iter().map(|q| Spread::of(&q.cpu_us)).collect();
        let ys: Vec<f64> = cpu.iter().map(|s| s.median).collect();
        let slope = least_squares(&xs, &ys);
        let range = xs.iter().copied().fold(f64::MIN, f64::max)
            - xs.iter().copied().fold(f64::MAX, f64::min);
        let change = slope * range;
        let noise = Spread::of(&cpu.iter().map(|s| s.max - s.min).collect::<Vec<_>>()).median;
        // The same fit within each round (the points' r-th samples were taken in round r): a
        // slope whose sign holds in nearly every round is real, whatever the spread of a point.
        let rounds = pts.iter().map(|q| q.cpu_us.len()).min().unwrap_or(0);
        let round_slopes: Vec<f64> = (0..rounds)
            .map(|r| {
                let ys: Vec<f64> = pts.iter().map(|q| q.cpu_us[r]).collect();
                least_squares(&xs, &ys)
            })
            .collect();
        let up = round_slopes.iter().filter(|s| **s > 0.0).count();
        let same_sign = up.max(rounds - up);
        let (u, _) = unit(&p.curve);
        let sp = Spread::of(&round_slopes);
        // A sign test: 8 of 9 rounds (or 5 of 5) in one direction is p < 0.05 two-sided.
        let consistent = rounds >= 5 && same_sign as f64 >= 0.85 * rounds as f64;
        let verdict = if consistent {
            format!(
                "linear: {:+.4} µs per {u} (per-round slopes {:+.4} to {:+.4}, {same_sign} of {rounds} rounds one way; fitted change {change:+.1} µs over the range)",
                sp.median, sp.min, sp.max
            )
        } else {
            format!(
                "flat within noise: fitted change {change:+.1} µs over the range, per-round slopes of both signs ({up} of {rounds} rounds up); a point's samples spread {noise:.1} µs"
            )
        };
        out.push(Fit {
            curve: p.curve.clone(),
            series: p.series.clone(),
            xs: pts.iter().map(|q| q.x).collect(),
            cpu,
            vs_floor: pts.iter().map(|q| Spread::of(&q.vs_floor)).collect(),
            slope_us_per_unit: slope,
            change_us: change,
            noise_us: noise,
            verdict,
        });
    }
    out
}

/// Runs the curves: starts every Envoy, warms each point, then the interleaved rounds.
pub fn run_curves(
    tools: &Tools,
    opts: &CurveOptions,
    out_dir: &Path,
    stop: &AtomicBool,
) -> Result<Vec<Point>, String> {
    let ticks_per_s = clock_ticks_per_second();
    let scripts_dir = out_dir.join("scripts");
    fs::create_dir_all(&scripts_dir).map_err(|e| format!("{}: {e}", scripts_dir.display()))?;
    let mut scripts: Vec<(String, PathBuf)> = Vec::new();
    for (name, reqs) in request_shapes(&opts.curves, opts.sessions) {
        let p = scripts_dir.join(format!("{}.lua", name.replace('/', "-")));
        fs::write(&p, wrk_pool_script(&reqs)).map_err(|e| format!("{}: {e}", p.display()))?;
        scripts.push((name, p));
    }
    let mut configs = vec![("floor".to_string(), base("floor")?)];
    configs.extend(curve_configs(&opts.curves)?);
    let mut envoys: Vec<(String, Envoy)> = Vec::new();
    print!("starting {} Envoys:", configs.len());
    for (name, doc) in configs {
        check_interrupt(stop)?;
        let e = start_envoy(tools, &runnable(doc)?).map_err(|e| format!("{name}: {e}"))?;
        print!(" {name}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        envoys.push((name, e));
    }
    println!();
    let mut pts = points(&opts.curves);
    let envoy_of = |name: &str| envoys.iter().position(|(n, _)| n == name);
    let script_of = |name: &str| scripts.iter().find(|(n, _)| n == name).map(|(_, p)| p);
    for p in &pts {
        if envoy_of(&p.config).is_none() || script_of(&p.script).is_none() {
            return Err(format!("point {}/{}: no Envoy or script", p.curve, p.x));
        }
    }
    if opts.warmup_seconds > 0.0 {
        print!("warm-up ({} s per point)…", opts.warmup_seconds);
        let _ = std::io::Write::flush(&mut std::io::stdout());
        for p in &pts {
            check_interrupt(stop)?;
            let (Some(e), Some(s)) = (envoy_of(&p.config), script_of(&p.script)) else {
                continue;
            };
            let w = measure(
                tools,
                &envoys[e].1,
                s,
                opts.connections,
                opts.warmup_seconds,
                ticks_per_s,
                None,
            )?;
            if w.ok < w.requests {
                println!(
                    "\nWARNING {}-{} {}: {} of {} responses not 2xx (log: {})",
                    p.curve,
                    p.x,
                    p.series,
                    w.requests - w.ok,
                    w.requests,
                    envoys[e].1.log_path().display()
                );
            }
        }
        println!(" done");
    }
    let mut rng = Rng::new(opts.seed);
    let n = pts.len();
    for round in 0..opts.rounds {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut floor_us = f64::NAN;
        let mut round_cpu = vec![f64::NAN; n];
        for (k, &i) in order.iter().enumerate() {
            check_interrupt(stop)?;
            let (Some(e), Some(s)) = (envoy_of(&pts[i].config), script_of(&pts[i].script)) else {
                continue;
            };
            let smp = measure(
                tools,
                &envoys[e].1,
                s,
                opts.connections,
                opts.seconds,
                ticks_per_s,
                None,
            )?;
            println!(
                "[round {}/{} {:>2}/{n}] {:<9} {:>8} {:<5} {:>8.1} µs/req {:>7.0} req/s  Envoy {:>3.0}% (others {:>2.0}%)",
                round + 1,
                opts.rounds,
                k + 1,
                pts[i].curve,
                pts[i].x,
                pts[i].series,
                smp.cpu_us_per_request,
                smp.rps,
                smp.envoy_cpu_share * 100.0,
                smp.others_on_envoy_core * 100.0
            );
            if pts[i].curve == "floor" {
                floor_us = smp.cpu_us_per_request;
            }
            round_cpu[i] = smp.cpu_us_per_request;
            let p = &mut pts[i];
            p.cpu_us.push(smp.cpu_us_per_request);
            p.rps.push(smp.rps);
            p.others_on_envoy_core.push(smp.others_on_envoy_core);
            p.non_2xx += smp.requests.saturating_sub(smp.ok);
            p.requests += smp.requests;
            p.samples.push(smp);
        }
        for (i, p) in pts.iter_mut().enumerate() {
            if round_cpu[i].is_finite() && floor_us.is_finite() && floor_us > 0.0 {
                p.vs_floor.push(round_cpu[i] / floor_us);
            }
        }
    }
    // What the filter counted must match what it answered (no figure from a broken config).
    for (name, e) in &envoys {
        if name == "floor" {
            continue;
        }
        let invalid = e.sum_of("canary_business_invalid_total");
        let skipped = e.sum_of("canary_business_skipped_total");
        if invalid > 0 || skipped > 0 {
            println!("WARNING {name}: canary_business_invalid_total {invalid}, canary_business_skipped_total {skipped}");
        }
    }
    drop(envoys);
    Ok(pts)
}

// ---------------------------------------------------------------------------------------------
// Charts.

/// How a size is printed (bodies in KiB/MiB, counts with thin spaces).
pub fn fmt_x(curve: &str, x: usize) -> String {
    if curve == "body" {
        if x >= 1 << 20 {
            format!("{} MiB", x >> 20)
        } else {
            format!("{} KiB", x >> 10)
        }
    } else if x >= 1000 {
        let s = x.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(' ');
            }
            out.push(c);
        }
        out
    } else {
        x.to_string()
    }
}

/// One curve as SVG: CPU µs/req (median, min–max whiskers) per size, one line per series,
/// sizes evenly spaced (they span orders of magnitude), the V8 floor as a dashed line.
pub fn curve_svg(curve: &str, title: &str, fits: &[Fit], floor: Option<Spread>) -> String {
    let series: Vec<&Fit> = fits.iter().filter(|f| f.curve == curve).collect();
    let mut xs: Vec<usize> = series.iter().flat_map(|f| f.xs.clone()).collect();
    xs.sort_unstable();
    xs.dedup();
    let max = series
        .iter()
        .flat_map(|f| f.cpu.iter().map(|s| s.max))
        .chain(floor.map(|f| f.median))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.1;
    let (left, top, pw, ph) = (70.0, 60.0, 560.0, 280.0);
    let (w, h) = (left + pw + 150.0, top + ph + 60.0);
    let xpos = |x: usize| {
        let i = xs.iter().position(|&v| v == x).unwrap_or(0) as f64;
        left + (i + 0.5) / xs.len().max(1) as f64 * pw
    };
    let ypos = |v: f64| top + ph - v / max * ph;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="22" font-size="15" font-weight="bold">{}</text>
<text x="{left}" y="42" fill="#555">Envoy CPU µs per request (direct response, 1 worker pinned): median, min–max of the rounds</text>
"##,
        xml(title)
    );
    let step = nice_step(max);
    let mut g = 0.0;
    while g <= max {
        let y = ypos(g);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{g:.0}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0
        );
        g += step;
    }
    for &x in &xs {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            xpos(x),
            top + ph + 18.0,
            xml(&fmt_x(curve, x))
        );
    }
    if let Some(f) = floor.filter(|f| f.median.is_finite()) {
        let y = ypos(f.median);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#999" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}" fill="#777">V8 floor {:.1}</text>"##,
            left + pw,
            left + pw + 6.0,
            y + 4.0,
            f.median
        );
    }
    let colors = ["#3b6ea8", "#d0743c", "#4a9a5b", "#8e5ea2"];
    for (j, f) in series.iter().enumerate() {
        let c = colors[j % colors.len()];
        let pts: Vec<(f64, &Spread)> = f.xs.iter().map(|&x| xpos(x)).zip(&f.cpu).collect();
        let path: Vec<String> = pts
            .iter()
            .filter(|(_, sp)| sp.median.is_finite())
            .map(|(x, sp)| format!("{x:.1},{:.1}", ypos(sp.median)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"##,
            path.join(" ")
        );
        for (x, sp) in &pts {
            if !sp.median.is_finite() {
                continue;
            }
            let dx = (j as f64 - (series.len() as f64 - 1.0) / 2.0) * 4.0;
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}"/><circle cx="{x:.1}" cy="{:.1}" r="3.5" fill="{c}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="{c}">{:.1}</text>"##,
                x + dx,
                ypos(sp.min),
                x + dx,
                ypos(sp.max),
                ypos(sp.median),
                x + 6.0,
                ypos(sp.median) - 6.0 - j as f64 * 12.0,
                sp.median
            );
        }
        if f.series != "-" {
            let ly = top + 14.0 + j as f64 * 16.0;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="12" height="10" fill="{c}"/><text x="{:.1}" y="{ly:.1}">{}</text>"##,
                left + pw + 8.0,
                ly - 9.0,
                left + pw + 24.0,
                xml(&f.series)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A curve's title.
pub fn title(curve: &str) -> &'static str {
    match curve {
        "pins" => "Pinned values (one pin header; hits and misses)",
        "rules" => "Header business rules",
        "pointers" => "JSON pointers on one 1 KiB body",
        "body" => {
            "JSON body size (one pointer near the start / end; the V8 floor on the same bytes)"
        }
        "versions" => "Versions (one route per version)",
        "cookies" => "Cookies in the request (session cookie first / last)",
        _ => "",
    }
}

/// The Markdown table of one curve.
pub fn curve_table(curve: &str, fits: &[Fit]) -> String {
    let series: Vec<&Fit> = fits.iter().filter(|f| f.curve == curve).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| {curve} | series | CPU µs/req (min–max) | × V8 floor |"
    );
    s.push_str("|---|---|---|---|\n");
    for f in &series {
        for ((x, c), r) in f.xs.iter().zip(&f.cpu).zip(&f.vs_floor) {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} ({:.1}–{:.1}) | {:.2} |",
                fmt_x(curve, *x),
                f.series,
                c.median,
                c.min,
                c.max,
                r.median
            );
        }
    }
    for f in &series {
        let _ = writeln!(s, "\n- **{}**: {}", f.series, f.verdict);
    }
    s
}
