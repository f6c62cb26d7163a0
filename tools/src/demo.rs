//! `make demo`: the whole story in one run.
//!
//! Envoy runs the plain-Envoy ramp config `envoy/ramp/envoy.yaml` in front of two shops: `stable`,
//! and a `canary` that silently overcharges tax by rounding per unit. The plugin's weights stay
//! canary 0 / stable 100 and the filter sends each session's cohort bucket upstream; the ramp
//! 5 % → 20 % → 50 % is made of route changes only: each step moves the bucket-regex route file of
//! that size over the watched one (file-based RDS, see [`crate::ramp`]). Simulated sessions
//! (cart → checkout → pay, with a session cookie; some test merchants pinned to the canary, a few
//! QA requests with the override token) go through the ramp. The plugin's brake (`guard`, the
//! gate's own always-valid test inside Envoy) trips the canary when its tax per order is evidence
//! enough; from then on no new session reaches it. Then the per-version figures, the brake's
//! figures, the gate's verdict, the stickiness check and a chart.
//!
//! Flows finish where they started (`session.hold.flows`, `guard.flows: finish`): a write served by
//! the canary (checkout, pay) gives the session a signed flow cookie for [`FLOW_DRAIN_SECONDS`],
//! which the demo's clients keep and send back as a browser would (they keep no other cookie:
//! returning the idle hold's cookie would keep the ramp's returning sessions on stable, which is
//! not what this demo is about). After the trip, the canary's cohort comes back to read its cart
//! once a second until no client holds a flow cookie: the sessions whose flow was in progress
//! finish it on the canary (reason `flow`) until their cookie expires, the others are on stable at
//! once, side by side.

use crate::bench::chart::nice_step;
use crate::checkout::{self, Build};
use crate::display_path;
use crate::ramp::{self, Ramp};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sticky_canary_cli::gate::{self, Check, Policy};
use sticky_canary_cli::prom::Scrape;
use sticky_canary_harness::envoy::Envoy;
use sticky_canary_harness::http::{Client, Request, Response, Upstream};

/// The QA token the demo gives Envoy's VM (never a real secret).
const QA_TOKEN: &str = "demo-qa-token-0123456789abcdef";
const SERVICE: &str = "checkout";
/// The flow cookie's MAC key the demo gives Envoy's VM (`CANARY_FLOW_KEY`; never a real secret,
/// at least 32 bytes as the filter requires).
const FLOW_KEY: &str = "demo-flow-key-0123456789abcdef-0123456789";
const FLOW_COOKIE: &str = "sc_flow";
/// `session.hold.flows.drain_seconds`: short, so that the flows in progress at the trip are seen
/// to finish within the demo.
pub const FLOW_DRAIN_SECONDS: u64 = 8;
/// The response header naming the decision's reason (`reason_header`): how the demo's clients
/// tell a flow (`flow`) from the rest.
const REASON_HEADER: &str = "x-canary-reason";

#[derive(Clone, Debug)]
pub struct Options {
    /// Sessions per ramp step (the same returning sessions in every step).
    pub sessions: usize,
    /// Cohort sizes, in percent, one ramp step (one route change) each.
    pub steps: Vec<u32>,
    /// Client threads.
    pub workers: usize,
    /// Where to write the SVG chart.
    pub chart: Option<PathBuf>,
    /// Progress bar on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sessions: 2000,
            steps: vec![5, 20, 50],
            workers: 4,
            chart: None,
            progress: true,
        }
    }
}

/// Per-version figures from Envoy's Prometheus output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub requests: f64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
    pub orders: f64,
    pub avg_order_value: f64,
    pub tax_per_order: f64,
    pub approval_ratio: f64,
}

/// What the brake did, as the demo saw it from Envoy's stats and its own sessions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Brake {
    /// Canary orders from the first to the trip (Envoy's counters when the trip showed).
    pub canary_orders: f64,
    /// Seconds from the first canary order to the trip (100 ms resolution).
    pub seconds: f64,
    /// Sessions that started after the trip (and one flush interval for every worker to learn
    /// it), QA override sessions aside.
    pub sessions_after: usize,
    /// Of those, how many reached the canary other than to finish a flow (must be 0).
    pub sessions_after_on_canary: usize,
    /// Of those, how many finished a flow on the canary (a valid flow cookie from before the trip).
    pub sessions_after_finishing_flows: usize,
    /// Sessions the brake sent to stable at least once instead of the canary (reason `hash`
    /// without a bucket header for the routes' cohort, `guard` for a pin), QA override sessions
    /// aside.
    pub sessions_kept_off: usize,
    /// The brake's own log line.
    pub line: Option<String>,
}

/// After the trip, side by side: the flows in progress that finished on the canary, and the
/// sessions of the canary's cohort the trip moved to stable at once (QA override sessions aside).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowsAfterTrip {
    /// `session.hold.flows.drain_seconds`.
    pub drain_seconds: u64,
    /// Sessions whose client held an unexpired flow cookie when the trip showed.
    pub in_progress: usize,
    /// Sessions served by the canary with reason `flow` after the trip.
    pub finished: usize,
    /// Their requests.
    pub finished_requests: usize,
    /// Seconds from the trip to the last of them.
    pub last_flow_s: Option<f64>,
    /// Sessions of the canary's cohort (at the last step) without a flow at the trip that came
    /// back after it.
    pub moved: usize,
    /// Their requests.
    pub moved_requests: usize,
    /// Of those requests, how many the canary served (must be 0).
    pub moved_on_canary: usize,
    /// The decision reasons of the moved sessions' requests, most frequent first.
    pub moved_reasons: Vec<(String, usize)>,
    /// `canary_flows_draining{version="canary"}` when the trip showed.
    pub draining_at_trip: f64,
    /// Seconds from the trip to the gauge's 0, if seen.
    pub drained_s: Option<f64>,
    /// `canary_flow_cookies_total` at the end: valid, invalid, expired.
    pub cookies: [f64; 3],
    /// Requests of the return visits after the ramp.
    pub return_requests: usize,
}

#[derive(Debug)]
pub struct Outcome {
    pub figures: Vec<(String, Figures)>,
    /// `None` when the brake never tripped.
    pub brake: Option<Brake>,
    /// `None` when the brake never tripped.
    pub flows: Option<FlowsAfterTrip>,
    pub gate: gate::Report,
    /// Sessions whose requests within one step reached two versions (must be 0).
    pub flapped_within_step: usize,
    /// Returning sessions that moved between steps, by direction.
    pub moved_stable_to_canary: usize,
    pub moved_canary_to_stable: usize,
    pub requests: usize,
    pub failed_requests: usize,
    pub chart: Option<PathBuf>,
    pub elapsed: Duration,
}

/// The demo's plugin configuration: the ramp config's (canary 0 / stable 100, the bucket header on,
/// never changed during the run), with the demo's rules and stage zero.
pub fn plugin_config() -> Result<String, String> {
    let mut v: serde_json::Value = serde_json::from_str(&ramp::config().plugin_config())
        .map_err(|e| format!("envoy/ramp/envoy.yaml: the plugin configuration: {e}"))?;
    v["override"] = json!({"tokens_env": "CANARY_OVERRIDE_TOKENS"});
    // Flows finish where they started: a canary's write signs a flow cookie (key in the VM's
    // environment, `CANARY_FLOW_KEY`); flows require the idle hold they belong to.
    v["session"]["hold"] = json!({
        "cookie": "sc_hold", "idle_seconds": 900,
        "flows": {"cookie": FLOW_COOKIE, "drain_seconds": FLOW_DRAIN_SECONDS,
                  "key_env": "CANARY_FLOW_KEY"}
    });
    v["reason_header"] = json!(REASON_HEADER);
    // Counts reach Envoy four times a second (the default is once): a ramp step of the demo lasts
    // about a second, and the chart follows each step, the first one too.
    v["metrics_flush_ms"] = json!(250);
    v["pins"] = json!([{"header": "x-merchant-id", "values": ["m_test_1", "m_test_2"], "version": "canary"}]);
    v["business_metrics"] = json!([
        {"name": "orders", "kind": "counter", "header": "x-order-id"},
        {"name": "order_value", "kind": "sum", "header": "x-order-total", "scale": 2},
        {"name": "tax", "kind": "sum", "header": "x-order-tax", "scale": 2},
        {"name": "payments", "kind": "counter", "json": "/authorization/status"},
        {"name": "auth_approved", "kind": "counter", "json": "/authorization/status", "equals": "approved"}
    ]);
    // The brake runs the gate's checks (and alpha) on this Envoy's counters every second.
    v["guard"] = json!({
        "baseline": "stable", "alpha": 0.05, "min_samples": 100,
        "checks": [
            {"error_ratio": {"max_points": 1.0}},
            {"ratio": {"label": "approval", "numerator": "auth_approved",
                       "denominator": "payments", "max_drop_points": 0.3}},
            {"mean": {"label": "aov", "sum": "order_value", "count": "orders",
                      "max_drift_percent": 1.0}},
            {"mean": {"label": "tax_per_order", "sum": "tax", "count": "orders",
                      "max_drift_percent": 1.0}}
        ],
        // A trip lets the flows in progress on the canary finish there (the default, spelt out).
        "flows": "finish"
    });
    Ok(v.to_string())
}

/// The gate policy the demo judges with: the gate's defaults (5xx, approval ratio, average order
/// value) plus tax per order.
pub fn policy() -> Policy {
    let mut p = Policy::default_for("stable");
    p.canaries = vec!["canary".into()];
    p.checks.push(Check::Mean {
        label: "tax_per_order".into(),
        sum: "tax".into(),
        count: "orders".into(),
        max_drift_percent: 1.0,
    });
    p
}

/// What one session did in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    One(bool), // true = canary
    Both,
}

/// One session in one step: the versions it saw, and whether it started once every worker knew
/// of the trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    visit: Visit,
    after_trip: bool,
}

/// Whether the step's routes (bucket below the cohort), a pin or the QA override send session
/// `i` to the canary: the published algorithm, computed here.
fn cohort_is_canary(salt: &[u8], i: usize, weight: u32) -> bool {
    let bucket = sticky_canary::routing::hash::bucket(salt, format!("user-{i}").as_bytes());
    is_pinned(i) || is_qa(i) || u32::from(bucket) < weight * 100
}

/// A test merchant pinned to the canary.
fn is_pinned(i: usize) -> bool {
    i % 50 == 7
}

/// The moment the brake's trip showed in Envoy's stats.
type TripClock = Arc<Mutex<Option<Instant>>>;

/// Started after every worker learned of the trip: within one flush interval (1 s) of it.
fn after_trip(trip: &TripClock, start: Instant) -> bool {
    trip.lock()
        .ok()
        .and_then(|t| *t)
        .is_some_and(|t| start > t + Duration::from_millis(1200))
}

/// A QA session: it sends the override token (the brake lets it through to the canary).
fn is_qa(i: usize) -> bool {
    i % 250 == 3
}

/// A client's flow cookie as its jar keeps it: `sc_flow=<value>` until its `Max-Age` runs out.
#[derive(Clone, Debug)]
struct FlowCookie {
    pair: String,
    expires: Instant,
}

/// Every session's flow cookie (by session index), kept across the steps and the return visits.
type Jar = Arc<Mutex<Vec<Option<FlowCookie>>>>;

/// One response after the trip, as the demo's client saw it.
#[derive(Clone, Debug)]
struct Answered {
    session: usize,
    at: Instant,
    canary: bool,
    reason: String,
}

/// What the clients saw after the trip.
type AfterTrip = Arc<Mutex<Vec<Answered>>>;

/// What the workers share: the session's flow cookies, the trip's moment, the responses after it
/// and the failures.
#[derive(Clone)]
struct Shared {
    jar: Jar,
    trip: TripClock,
    after: AfterTrip,
    failed: Arc<AtomicUsize>,
}

impl Shared {
    /// Sends one request of session `i` with its cookies (its session id, and its flow cookie
    /// while it lasts), keeps the flow cookie the response sets or clears, and notes the
    /// response when it comes after the trip.
    fn send(&self, c: &mut Client, i: usize, req: Request) -> Option<Response> {
        let mut cookie = format!("session_id=user-{i}");
        let now = Instant::now();
        if let Ok(jar) = self.jar.lock() {
            if let Some(f) = jar
                .get(i)
                .and_then(Option::as_ref)
                .filter(|f| f.expires > now)
            {
                cookie.push_str("; ");
                cookie.push_str(&f.pair);
            }
        }
        let Ok(r) = c.send(&req.header("cookie", &cookie)) else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let at = Instant::now();
        for v in r.header_values("set-cookie") {
            let v = String::from_utf8_lossy(v);
            if let Some(kept) = flow_cookie(&v, at) {
                if let Ok(mut jar) = self.jar.lock() {
                    if let Some(slot) = jar.get_mut(i) {
                        *slot = kept;
                    }
                }
            }
        }
        let tripped = self.trip.lock().ok().and_then(|t| *t);
        if tripped.is_some_and(|t| at > t) {
            if let Ok(mut after) = self.after.lock() {
                after.push(Answered {
                    session: i,
                    at,
                    canary: r.header_str("x-canary-version") == Some("canary"),
                    reason: r.header_str(REASON_HEADER).unwrap_or("").to_string(),
                });
            }
        }
        Some(r)
    }
}

/// What a `Set-Cookie` value does to the flow cookie: `Some(Some(_))` sets it for its `Max-Age`,
/// `Some(None)` clears it (empty, or `Max-Age=0`), `None` is another cookie.
fn flow_cookie(set_cookie: &str, now: Instant) -> Option<Option<FlowCookie>> {
    let mut parts = set_cookie.split(';').map(str::trim);
    let pair = parts.next()?;
    let value = pair.strip_prefix(FLOW_COOKIE)?.strip_prefix('=')?;
    let max_age = parts
        .filter_map(|a| a.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("max-age"))
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0);
    Some((!value.is_empty() && max_age > 0).then(|| FlowCookie {
        pair: pair.to_string(),
        expires: now + Duration::from_secs(max_age),
    }))
}

/// One session's visit in a step: the versions it saw, and whether the canary served it other
/// than to finish a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Visit {
    seen: Seen,
    canary_not_flow: bool,
    flow_on_canary: bool,
}

fn run_session(c: &mut Client, i: usize, shared: &Shared) -> Option<Visit> {
    let id = format!("user-{i}");
    let mut visit: Option<Visit> = None;
    for (method, path) in [("GET", "/cart"), ("POST", "/checkout"), ("POST", "/pay")] {
        let mut req = Request::new(method, path);
        if is_pinned(i) {
            req = req.header("x-merchant-id", "m_test_1"); // a pinned test merchant
        }
        if is_qa(i) {
            req = req
                .header("x-canary-override", "canary")
                .header("x-canary-token", QA_TOKEN);
        }
        let Some(r) = shared.send(c, i, req) else {
            continue;
        };
        let on_canary = r.header_str("x-canary-version") == Some("canary");
        let flow = r.header_str(REASON_HEADER) == Some("flow");
        if r.status >= 500 && checkout::payment_of(&id).0 != r.status {
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut v = visit.unwrap_or(Visit {
            seen: Seen::One(on_canary),
            canary_not_flow: false,
            flow_on_canary: false,
        });
        v.seen = match v.seen {
            Seen::One(was) if was == on_canary => Seen::One(was),
            _ => Seen::Both,
        };
        v.canary_not_flow |= on_canary && !flow;
        v.flow_on_canary |= on_canary && flow;
        visit = Some(v);
    }
    visit
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn sum_where(s: &Scrape, name: &str, version: &str) -> f64 {
    s.samples
        .iter()
        .filter(|x| {
            x.name == name
                && x.labels.get("version").map(String::as_str) == Some(version)
                && x.labels.get("service").map(String::as_str) == Some(SERVICE)
        })
        .map(|x| x.value)
        .sum()
}

/// p99 from Envoy's per-cluster upstream request time histogram (milliseconds).
fn p99_ms(s: &Scrape, cluster: &str) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = s
        .samples
        .iter()
        .filter(|x| {
            x.name == "envoy_cluster_upstream_rq_time_bucket"
                && x.labels.get("envoy_cluster_name").map(String::as_str) == Some(cluster)
        })
        .filter_map(|x| {
            let le = x.labels.get("le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, x.value))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let target = 0.99 * total;
    let mut prev = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= target {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let frac = ratio(target - prev.1, count - prev.1);
            return Some(prev.0 + frac * (le - prev.0));
        }
        prev = (le, count);
    }
    None
}

pub fn figures(s: &Scrape, version: &str) -> Figures {
    let responses = sum_where(s, "canary_responses_total", version);
    let errors = s
        .samples
        .iter()
        .filter(|x| {
            x.name == "canary_responses_total"
                && x.labels.get("version").map(String::as_str) == Some(version)
                && x.labels.get("code_class").map(String::as_str) == Some("5xx")
        })
        .map(|x| x.value)
        .sum::<f64>();
    let orders = sum_where(s, "canary_business_orders_total", version);
    Figures {
        // Served, not decided: during the ramp the filter tags everyone `stable` and the routes
        // send the cohort to the canary; the response counter follows the serving cluster.
        requests: sum_where(s, "canary_responses_total", version),
        error_rate: ratio(errors, responses),
        p99_ms: p99_ms(s, version),
        orders,
        avg_order_value: ratio(
            sum_where(s, "canary_business_order_value_total", version),
            orders,
        ) / 100.0,
        tax_per_order: ratio(sum_where(s, "canary_business_tax_total", version), orders) / 100.0,
        approval_ratio: ratio(
            sum_where(s, "canary_business_auth_approved_total", version),
            sum_where(s, "canary_business_payments_total", version),
        ),
    }
}

/// The side-by-side table.
pub fn table(figures: &[(String, Figures)]) -> String {
    let get = |v: &str| {
        figures
            .iter()
            .find(|(n, _)| n == v)
            .map(|(_, f)| f.clone())
            .unwrap_or_default()
    };
    let (s, c) = (get("stable"), get("canary"));
    let p99 = |f: &Figures| f.p99_ms.map_or("n/a".to_string(), |p| format!("{p:.1} ms"));
    let delta_pct = |a: f64, b: f64| {
        if b != 0.0 {
            format!("{:+.2} %", 100.0 * (a - b) / b)
        } else {
            "n/a".into()
        }
    };
    let rows: Vec<(&str, String, String, String)> = vec![
        (
            "requests",
            format!("{:.0}", s.requests),
            format!("{:.0}", c.requests),
            String::new(),
        ),
        (
            "5xx rate",
            format!("{:.2} %", 100.0 * s.error_rate),
            format!("{:.2} %", 100.0 * c.error_rate),
            format!("{:+.2} pts", 100.0 * (c.error_rate - s.error_rate)),
        ),
        (
            "p99 latency (Envoy)",
            p99(&s),
            p99(&c),
            match (c.p99_ms, s.p99_ms) {
                (Some(a), Some(b)) => format!("{:+.1} ms", a - b),
                _ => "n/a".into(),
            },
        ),
        (
            "orders",
            format!("{:.0}", s.orders),
            format!("{:.0}", c.orders),
            String::new(),
        ),
        (
            "avg order value",
            format!("${:.4}", s.avg_order_value),
            format!("${:.4}", c.avg_order_value),
            delta_pct(c.avg_order_value, s.avg_order_value),
        ),
        (
            "tax per order",
            format!("${:.4}", s.tax_per_order),
            format!("${:.4}", c.tax_per_order),
            delta_pct(c.tax_per_order, s.tax_per_order),
        ),
        (
            "approval ratio",
            format!("{:.2} %", 100.0 * s.approval_ratio),
            format!("{:.2} %", 100.0 * c.approval_ratio),
            format!("{:+.2} pts", 100.0 * (c.approval_ratio - s.approval_ratio)),
        ),
    ];
    let mut out = format!(
        "{:<22}{:>14}{:>14}{:>18}\n",
        "", "stable", "canary", "canary − stable"
    );
    for (name, a, b, d) in rows {
        out.push_str(&format!("{name:<22}{a:>14}{b:>14}{d:>18}\n"));
    }
    out
}

/// One point of the chart: requests so far, and each version's cumulative tax per order.
#[derive(Clone, Copy, Debug)]
struct Point {
    requests: f64,
    stable: Option<f64>,
    canary: Option<f64>,
}

fn sample(s: &Scrape, requests: usize) -> Point {
    // From a version's fifth order: at 5 % the canary has that many within the first flush of the
    // first step, so both lines run through every step.
    let per = |v: &str| {
        let orders = sum_where(s, "canary_business_orders_total", v);
        (orders >= 5.0).then(|| sum_where(s, "canary_business_tax_total", v) / orders / 100.0)
    };
    Point {
        requests: requests as f64,
        stable: per("stable"),
        canary: per("canary"),
    }
}

/// An SVG line chart of tax per order over the run, canary over stable, with the ramp steps.
fn chart_svg(points: &[Point], steps: &[(f64, u32)], trip: Option<f64>) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 460.0, 80.0, 30.0, 70.0, 60.0);
    // Round ticks: the x axis ends on a multiple of its step, the y axis spans whole steps.
    let xmax = points.iter().map(|p| p.requests).fold(1.0, f64::max);
    let xstep = nice_step(xmax);
    let xs = (xmax / xstep).ceil() * xstep;
    let ys: Vec<f64> = points
        .iter()
        .flat_map(|p| [p.stable, p.canary])
        .flatten()
        .collect();
    let (mut y0, mut y1) = (
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.15).max(0.01);
    let ystep = nice_step(y1 - y0 + 2.0 * pad);
    let (y0, y1) = (
        ((y0 - pad) / ystep).floor() * ystep,
        ((y1 + pad) / ystep).ceil() * ystep,
    );
    // Enough decimals for the step (0.05 → 2, 0.025 → 3).
    let decimals = (0..6)
        .find(|d| {
            let scaled = ystep * 10f64.powi(*d);
            (scaled - scaled.round()).abs() < 1e-6
        })
        .unwrap_or(3) as usize;
    let px = |x: f64| left + (w - left - right) * x / xs;
    let py = |y: f64| top + (h - top - bottom) * (1.0 - (y - y0) / (y1 - y0));
    let line = |f: &dyn Fn(&Point) -> Option<f64>| -> String {
        points
            .iter()
            .filter_map(|p| f(p).map(|y| format!("{:.1},{:.1}", px(p.requests), py(y))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="28" font-size="16" font-weight="bold">Tax per order (cumulative): canary vs stable, through the ramp</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>
<text x="{}" y="{}" text-anchor="middle">requests through Envoy</text>
"##,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom,
        (left + w - right) / 2.0,
        h - 12.0
    );
    let yticks = ((y1 - y0) / ystep).round() as u32;
    for i in 0..=yticks {
        let y = y0 + ystep * f64::from(i);
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#eee\"/><text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">${y:.decimals$}</text>\n",
            py(y), w - right, left - 6.0, py(y) + 4.0
        ));
    }
    for (x, weight) in steps {
        svg.push_str(&format!(
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#999\" stroke-dasharray=\"4 4\"/><text x=\"{2:.1}\" y=\"{3}\" fill=\"#555\">canary {weight} %</text>\n",
            px(*x), h - bottom, px(*x) + 4.0, top + 14.0
        ));
    }
    if let Some(x) = trip {
        svg.push_str(&format!(
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#d62728\" stroke-width=\"1.5\"/><text x=\"{2:.1}\" y=\"{3}\" fill=\"#d62728\">brake trips</text>\n",
            px(x), h - bottom, px(x) + 4.0, top + 30.0
        ));
    }
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2.5\" points=\"{}\"/>\n",
        line(&|p| p.stable)
    ));
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2.5\" points=\"{}\"/>\n",
        line(&|p| p.canary)
    ));
    // Legend in the header, x-axis ticks.
    svg.push_str(&format!(
        "<rect x=\"{left}\" y=\"40\" width=\"12\" height=\"12\" fill=\"#1f77b4\"/><text x=\"{0}\" y=\"51\">stable: tax once per order</text>\n\
         <rect x=\"{1}\" y=\"40\" width=\"12\" height=\"12\" fill=\"#d62728\"/><text x=\"{2}\" y=\"51\">canary: tax rounded up per unit (HTTP 200, same latency)</text>\n",
        left + 18.0, left + 230.0, left + 248.0
    ));
    let xticks = (xs / xstep).round() as u32;
    for i in 0..=xticks {
        let x = xstep * f64::from(i);
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.0}</text>\n",
            px(x),
            h - bottom + 18.0,
            x
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// A progress bar redrawn in place on a terminal; elsewhere (CI logs) one line per step.
fn progress_bar(step: usize, steps: usize, weight: u32, done: usize, total: usize) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        if done == total {
            eprintln!(
                "  step {}/{steps} canary {weight:>2} %: {total} sessions done",
                step + 1
            );
        }
        return;
    }
    let width = 30;
    let filled = width * done / total.max(1);
    eprint!(
        "\r  step {}/{} canary {:>2} %  [{}{}] {:>5}/{} sessions",
        step + 1,
        steps,
        weight,
        "#".repeat(filled),
        ".".repeat(width - filled),
        done,
        total
    );
    let _ = std::io::stderr().flush();
}

/// Runs the demo. Envoy and the shops stop when this returns.
pub fn run(opts: &Options) -> Result<Outcome, String> {
    let started = Instant::now();
    let stable = Upstream::start_with("stable", None, checkout::handler("stable", Build::Correct))
        .map_err(|e| format!("start stable shop: {e}"))?;
    let canary = Upstream::start_with(
        "canary",
        None,
        checkout::handler("canary", Build::TaxPerUnitRoundedUp),
    )
    .map_err(|e| format!("start canary shop: {e}"))?;
    let upstreams = [("canary", canary.addr()), ("stable", stable.addr())];
    let mut cfg = ramp::config();
    cfg.set_plugin_config(&plugin_config()?);
    cfg.set_vm_env("CANARY_OVERRIDE_TOKENS", QA_TOKEN);
    cfg.set_vm_env("CANARY_FLOW_KEY", FLOW_KEY);
    cfg.set_top_level(
        "stats_flush_interval",
        serde_yaml::Value::String("1s".into()),
    );
    let first = *opts.steps.first().ok_or("no ramp steps")?;
    let ramp = Ramp::start(cfg, &upstreams, &ramp::routes_yaml(first)?)
        .map_err(|e| format!("Envoy did not start:\n{e}"))?;
    let envoy = ramp.envoy();

    let salt = serde_json::from_str::<serde_json::Value>(&plugin_config()?)
        .ok()
        .and_then(|v| v["salt"].as_str().map(|s| s.as_bytes().to_vec()))
        .ok_or("the demo's plugin configuration has no salt")?;
    let failed = Arc::new(AtomicUsize::new(0));
    let trip: TripClock = Arc::new(Mutex::new(None));
    let shared = Shared {
        jar: Arc::new(Mutex::new(vec![None; opts.sessions])),
        trip: trip.clone(),
        after: Arc::new(Mutex::new(Vec::new())),
        failed: failed.clone(),
    };
    // Who held a flow cookie, and Envoy's draining gauge, when the trip showed.
    let mut at_trip: Option<(Vec<bool>, f64)> = None;
    let mut first_canary_order: Option<Instant> = None;
    let mut brake: Option<Brake> = None;
    let mut trip_at_requests: Option<f64> = None;
    let (mut sessions_after, mut after_on_canary, mut kept_off) = (0, 0, 0);
    let mut after_finishing_flows = 0;
    let mut previous: Option<Vec<Option<Seen>>> = None;
    let (mut flapped, mut to_canary, mut to_stable) = (0, 0, 0);
    let mut points = Vec::new();
    let mut step_marks = Vec::new();
    let mut requests_done = 0usize;
    for (k, &weight) in opts.steps.iter().enumerate() {
        if k > 0 {
            // The step: the bucket-regex routes of this size, moved over the watched file.
            ramp.set_routes(&ramp::routes_yaml(weight)?)?;
        }
        step_marks.push((requests_done as f64, weight));
        let seen: Arc<Mutex<Vec<Option<Session>>>> =
            Arc::new(Mutex::new(vec![None; opts.sessions]));
        let done = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..opts.workers.max(1))
            .map(|_| {
                let (seen, done, next, shared) =
                    (seen.clone(), done.clone(), next.clone(), shared.clone());
                let (listener, n) = (envoy.listener(), opts.sessions);
                std::thread::spawn(move || {
                    let Ok(mut c) = Client::connect(listener) else {
                        return;
                    };
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let after = after_trip(&shared.trip, Instant::now());
                        let s = run_session(&mut c, i, &shared);
                        if let Ok(mut v) = seen.lock() {
                            v[i] = s.map(|visit| Session {
                                visit,
                                after_trip: after,
                            });
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut last_sample = Instant::now();
        let mut scrape;
        while done.load(Ordering::Relaxed) < opts.sessions
            && workers.iter().any(|w| !w.is_finished())
        {
            if opts.progress {
                progress_bar(
                    k,
                    opts.steps.len(),
                    weight,
                    done.load(Ordering::Relaxed),
                    opts.sessions,
                );
            }
            scrape = envoy.scrape_now();
            let tripped_before = brake.is_some();
            watch_brake(&scrape, &trip, &mut first_canary_order, &mut brake);
            if brake.is_some() && !tripped_before {
                trip_at_requests = Some((requests_done + 3 * done.load(Ordering::Relaxed)) as f64);
                at_trip = Some(flows_at_trip(&shared, &scrape));
            }
            if last_sample.elapsed() > Duration::from_millis(100) {
                points.push(sample(
                    &scrape,
                    requests_done + 3 * done.load(Ordering::Relaxed),
                ));
                last_sample = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for w in workers {
            let _ = w.join();
        }
        if opts.progress {
            progress_bar(k, opts.steps.len(), weight, opts.sessions, opts.sessions);
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!();
            }
        }
        requests_done += 3 * opts.sessions;
        scrape = envoy.scrape();
        points.push(sample(&scrape, requests_done));
        let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
        // A session of the canary's cohort that saw stable was kept off the canary by the brake
        // (without a trip the cohort always reaches it; `make test` holds that).
        let mut braked = vec![false; seen.len()];
        for (i, s) in seen.iter().enumerate() {
            let Some(s) = s.filter(|_| !is_qa(i)) else {
                continue;
            };
            if s.after_trip {
                sessions_after += 1;
                // A flow from before the trip finishes on the canary; nothing else may reach it.
                after_on_canary += usize::from(s.visit.canary_not_flow);
                after_finishing_flows +=
                    usize::from(s.visit.flow_on_canary && !s.visit.canary_not_flow);
            }
            if brake.is_some()
                && cohort_is_canary(&salt, i, weight)
                && s.visit.seen != Seen::One(true)
            {
                braked[i] = true;
                kept_off += 1;
            }
        }
        // Stickiness is the ramp's: sessions the brake redirected are counted apart.
        let seen: Vec<Option<Seen>> = seen
            .iter()
            .zip(&braked)
            .map(|(s, b)| s.filter(|_| !b).map(|s| s.visit.seen))
            .collect();
        flapped += seen.iter().filter(|s| **s == Some(Seen::Both)).count();
        if let Some(prev) = &previous {
            for (a, b) in prev.iter().zip(&seen) {
                match (a, b) {
                    (Some(Seen::One(false)), Some(Seen::One(true))) => to_canary += 1,
                    (Some(Seen::One(true)), Some(Seen::One(false))) => to_stable += 1,
                    _ => {}
                }
            }
        }
        previous = Some(seen);
    }

    // The brake's last looks: it judges what the last sessions counted once they are flushed
    // (every second); histograms (p99) reach the admin output on a stats flush (1 s too). Once
    // it has tripped, one stats flush is enough (the flows in progress are draining meanwhile).
    let last_looks = Instant::now();
    let looks = Duration::from_millis(if brake.is_some() { 1200 } else { 2500 });
    while last_looks.elapsed() < looks {
        let scrape = envoy.scrape_now();
        watch_brake(&scrape, &trip, &mut first_canary_order, &mut brake);
        if trip_at_requests.is_none() && brake.is_some() {
            trip_at_requests = Some(requests_done as f64);
            at_trip = Some(flows_at_trip(&shared, &scrape));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let scrape = envoy.scrape();
    if let Some(b) = &mut brake {
        b.sessions_after = sessions_after;
        b.sessions_after_on_canary = after_on_canary;
        b.sessions_after_finishing_flows = after_finishing_flows;
        b.sessions_kept_off = kept_off;
        b.line = envoy.log().lines().find_map(|l| {
            l.split_once("sticky-canary: guard tripped")
                .map(|(_, r)| r.trim().to_string())
        });
    }
    let figures: Vec<(String, Figures)> = ["stable", "canary"]
        .iter()
        .map(|v| (v.to_string(), figures(&scrape, v)))
        .collect();
    let totals = gate::Totals::from_scrapes(SERVICE, &[scrape]);
    let report = gate::evaluate(&totals, &policy())?;
    // After the figures (which stay the ramp's): the canary's cohort comes back until the flows
    // in progress at the trip are over.
    let trip_instant = trip.lock().ok().and_then(|t| *t);
    let flows = match (trip_instant, at_trip) {
        (Some(t), Some((holders, draining))) => {
            let last = *opts.steps.last().unwrap_or(&first);
            let cohort: Vec<usize> = (0..opts.sessions)
                .filter(|&i| !is_qa(i) && cohort_is_canary(&salt, i, last))
                .collect();
            let limit = Duration::from_secs(3 * FLOW_DRAIN_SECONDS + 5);
            if opts.progress {
                eprintln!(
                    "  after the trip: the canary's cohort ({} sessions) comes back once a second until no flow cookie is left",
                    cohort.len()
                );
            }
            let (return_requests, drained) =
                return_visits(envoy, &cohort, opts.workers.max(1), &shared, limit);
            let answers = shared.after.lock().map(|a| a.clone()).unwrap_or_default();
            Some(flows_after_trip(
                t,
                &holders,
                &cohort,
                &answers,
                draining,
                drained,
                &envoy.scrape_now(),
                return_requests,
            ))
        }
        _ => None,
    };
    let chart = match &opts.chart {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::write(path, chart_svg(&points, &step_marks, trip_at_requests))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Some(path.clone())
        }
        None => None,
    };
    ramp.stop();
    Ok(Outcome {
        figures,
        brake,
        flows,
        gate: report,
        flapped_within_step: flapped,
        moved_stable_to_canary: to_canary,
        moved_canary_to_stable: to_stable,
        requests: requests_done,
        failed_requests: failed.load(Ordering::Relaxed),
        chart,
        elapsed: started.elapsed(),
    })
}

/// When the trip shows: which sessions' clients hold an unexpired flow cookie, and Envoy's
/// `canary_flows_draining` for the canary.
fn flows_at_trip(shared: &Shared, s: &Scrape) -> (Vec<bool>, f64) {
    let now = Instant::now();
    let holders = shared
        .jar
        .lock()
        .map(|jar| {
            jar.iter()
                .map(|f| f.as_ref().is_some_and(|f| f.expires > now))
                .collect()
        })
        .unwrap_or_default();
    (holders, sum_where(s, "canary_flows_draining", "canary"))
}

/// `canary_flows_draining{version="canary"}` now.
fn draining(envoy: &Envoy) -> f64 {
    sum_where(&envoy.scrape_now(), "canary_flows_draining", "canary")
}

/// The return visits after the trip: `sessions` come back once a second, each reading its cart
/// (a read: it starts and refreshes no flow) with whatever flow cookie its client holds, until
/// none of them holds one, and once more after (at most `limit`). Returns the requests sent and
/// when Envoy's draining gauge for the canary showed 0 (it is updated every second).
fn return_visits(
    envoy: &Envoy,
    sessions: &[usize],
    workers: usize,
    shared: &Shared,
    limit: Duration,
) -> (usize, Option<Instant>) {
    let start = Instant::now();
    let sessions: Arc<Vec<usize>> = Arc::new(sessions.to_vec());
    let (mut requests, mut drained, mut last_round) = (0, None, false);
    loop {
        let round = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                let (next, sessions, shared) = (next.clone(), sessions.clone(), shared.clone());
                let listener = envoy.listener();
                std::thread::spawn(move || {
                    let Ok(mut c) = Client::connect(listener) else {
                        return;
                    };
                    while let Some(&i) = sessions.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let mut req = Request::get("/cart");
                        if is_pinned(i) {
                            req = req.header("x-merchant-id", "m_test_1");
                        }
                        shared.send(&mut c, i, req);
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        requests += sessions.len();
        if last_round || start.elapsed() > limit {
            break;
        }
        let now = Instant::now();
        let holding = shared.jar.lock().is_ok_and(|jar| {
            sessions.iter().any(|&i| {
                jar.get(i)
                    .and_then(Option::as_ref)
                    .is_some_and(|f| f.expires > now)
            })
        });
        last_round = !holding;
        while round.elapsed() < Duration::from_secs(1) {
            if drained.is_none() && draining(envoy) == 0.0 {
                drained = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The gauge follows at the next tick.
    let wait = Instant::now();
    while drained.is_none() && wait.elapsed() < Duration::from_secs(3) {
        if draining(envoy) == 0.0 {
            drained = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (requests, drained)
}

/// The flows after the trip at `t`, from what the clients saw (`answers`: every response after
/// it) and Envoy's figures. `holders`: who held a flow cookie at the trip; `cohort`: the canary's
/// cohort at the last step (QA aside).
#[allow(clippy::too_many_arguments)]
fn flows_after_trip(
    t: Instant,
    holders: &[bool],
    cohort: &[usize],
    answers: &[Answered],
    draining_at_trip: f64,
    drained: Option<Instant>,
    end: &Scrape,
    return_requests: usize,
) -> FlowsAfterTrip {
    let held = |i: usize| holders.get(i).copied().unwrap_or(false);
    let flows: Vec<&Answered> = answers
        .iter()
        .filter(|a| !is_qa(a.session) && a.canary && a.reason == "flow")
        .collect();
    let mut finished: Vec<usize> = flows.iter().map(|a| a.session).collect();
    finished.sort_unstable();
    finished.dedup();
    let without: std::collections::HashSet<usize> =
        cohort.iter().copied().filter(|&i| !held(i)).collect();
    let moved: Vec<&Answered> = answers
        .iter()
        .filter(|a| without.contains(&a.session))
        .collect();
    let mut moved_sessions: Vec<usize> = moved.iter().map(|a| a.session).collect();
    moved_sessions.sort_unstable();
    moved_sessions.dedup();
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for a in &moved {
        match reasons.iter_mut().find(|(r, _)| *r == a.reason) {
            Some((_, n)) => *n += 1,
            None => reasons.push((a.reason.clone(), 1)),
        }
    }
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let cookies = ["valid", "invalid", "expired"].map(|o| {
        end.samples
            .iter()
            .filter(|x| {
                x.name == "canary_flow_cookies_total"
                    && x.labels.get("service").map(String::as_str) == Some(SERVICE)
                    && x.labels.get("outcome").map(String::as_str) == Some(o)
            })
            .map(|x| x.value)
            .sum()
    });
    FlowsAfterTrip {
        drain_seconds: FLOW_DRAIN_SECONDS,
        in_progress: (0..holders.len()).filter(|&i| held(i) && !is_qa(i)).count(),
        finished: finished.len(),
        finished_requests: flows.len(),
        last_flow_s: flows
            .iter()
            .map(|a| (a.at - t).as_secs_f64())
            .reduce(f64::max),
        moved: moved_sessions.len(),
        moved_requests: moved.len(),
        moved_on_canary: moved.iter().filter(|a| a.canary).count(),
        moved_reasons: reasons,
        draining_at_trip,
        drained_s: drained.map(|d| d.saturating_duration_since(t).as_secs_f64()),
        cookies,
        return_requests,
    }
}

/// Watches Envoy's counters for the first canary order and the brake's trip.
fn watch_brake(
    s: &Scrape,
    trip: &TripClock,
    first_canary_order: &mut Option<Instant>,
    brake: &mut Option<Brake>,
) {
    if brake.is_some() {
        return;
    }
    let orders = sum_where(s, "canary_business_orders_total", "canary");
    if first_canary_order.is_none() && orders > 0.0 {
        *first_canary_order = Some(Instant::now());
    }
    if sum_where(s, "canary_guard_tripped", "canary") >= 1.0 {
        let now = Instant::now();
        if let Ok(mut t) = trip.lock() {
            *t = Some(now);
        }
        *brake = Some(Brake {
            canary_orders: orders,
            seconds: first_canary_order.map_or(0.0, |f| (now - f).as_secs_f64()),
            ..Brake::default()
        });
    }
}

/// The default chart location.
pub fn default_chart_path() -> PathBuf {
    sticky_canary_harness::envoy::workspace_root().join("target/demo/tax-per-order.svg")
}

/// Prints the outcome as `make demo` shows it.
pub fn print(o: &Outcome, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "\nPer version, from Envoy's /stats/prometheus:\n")?;
    write!(out, "{}", table(&o.figures))?;
    writeln!(out, "\nStickiness:")?;
    writeln!(
        out,
        "  sessions that saw two versions within a step: {}",
        o.flapped_within_step
    )?;
    writeln!(
        out,
        "  returning sessions moved between steps: stable → canary {}, canary → stable {}",
        o.moved_stable_to_canary, o.moved_canary_to_stable
    )?;
    writeln!(
        out,
        "  requests: {} ({} failed outside the shop's own 503s)",
        o.requests, o.failed_requests
    )?;
    writeln!(out, "\nBrake (the plugin's guard, in Envoy, every second):")?;
    match &o.brake {
        Some(b) => {
            writeln!(
                out,
                "  tripped {:.1} s and {} canary orders after the first canary order",
                b.seconds, b.canary_orders
            )?;
            if let Some(line) = &b.line {
                writeln!(out, "  Envoy's log: guard tripped {line}")?;
            }
            writeln!(
                out,
                "  sessions started after the trip: {}, of which reached the canary: {} (QA override sessions aside), finished a flow there: {}",
                b.sessions_after, b.sessions_after_on_canary, b.sessions_after_finishing_flows
            )?;
            writeln!(
                out,
                "  sessions the brake sent to stable instead of the canary (reason hash, no bucket header; pins: reason guard): {}",
                b.sessions_kept_off
            )?;
        }
        None => writeln!(out, "  did not trip")?,
    }
    if let Some(f) = &o.flows {
        write!(out, "{}", flows_table(f))?;
    }
    writeln!(out, "\nGate (sticky-canary gate, baseline stable):\n")?;
    write!(out, "{}", o.gate.table())?;
    if let Some(c) = &o.chart {
        writeln!(out, "\nChart: {}", display_path(c))?;
    }
    writeln!(
        out,
        "Finished in {:.1} s; Envoy and both shops stopped.",
        o.elapsed.as_secs_f64()
    )
}

/// The flows after the trip, side by side with the sessions moved at once.
pub fn flows_table(f: &FlowsAfterTrip) -> String {
    let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("+{s:.1} s"));
    let reasons = f
        .moved_reasons
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = format!(
        "\nFlows after the trip (session.hold.flows, drain_seconds {}; guard.flows finish):\n",
        f.drain_seconds
    );
    out.push_str(&format!(
        "  {:<34}{:>9}{:>10}  {:<8}{}\n",
        "", "sessions", "requests", "served", "reason (requests)"
    ));
    out.push_str(&format!(
        "  {:<34}{:>9}{:>10}  {:<8}flow {}, the last at {}\n",
        "flows finished on the canary",
        f.finished,
        f.finished_requests,
        "canary",
        f.finished_requests,
        secs(f.last_flow_s)
    ));
    out.push_str(&format!(
        "  {:<34}{:>9}{:>10}  {:<8}{}\n",
        "moved to stable at once (no flow)",
        f.moved,
        f.moved_requests,
        if f.moved_on_canary == 0 {
            "stable".to_string()
        } else {
            format!("canary {}!", f.moved_on_canary)
        },
        reasons
    ));
    out.push_str(&format!(
        "  flows in progress at the trip: {} (the clients' flow cookies; Envoy's gauge {:.0}); {} ended before their session came back\n",
        f.in_progress,
        f.draining_at_trip,
        f.in_progress.saturating_sub(f.finished)
    ));
    out.push_str(&format!(
        "  canary_flows_draining{{version=\"canary\"}} at 0 from {}; canary_flow_cookies_total valid {:.0}, expired {:.0}, invalid {:.0}; {} return-visit requests\n",
        secs(f.drained_s),
        f.cookies[0],
        f.cookies[2],
        f.cookies[1],
        f.return_requests
    ));
    out
}

/// For tests: a short, quiet run.
pub fn quick_options() -> Options {
    Options {
        // The full demo's sessions: ~1 500 canary orders over the ramp, three times what the
        // brake's tax check needs at alpha 0.05 (median ~470, 90th percentile ~1 000:
        // `make simulate`).
        sessions: 2000,
        steps: vec![5, 20, 50],
        workers: 4,
        chart: None,
        progress: false,
    }
}
