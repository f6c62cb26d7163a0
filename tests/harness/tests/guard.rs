//! End-to-end: the brake (`guard`) under a real Envoy with four workers (one VM each).
//!
//! - `a_harmful_canary_is_braked_in_every_worker`: the payment fall-through (the canary
//!   declines half its authorizations) trips the canary within one flush interval of the moment
//!   the always-valid test, computed here by the core on Envoy's own counters, crosses its bound;
//!   then no canary session reaches the canary on any worker (fresh connections spread over the
//!   four), nothing carries a bucket, the override still reaches the canary, and the trip is
//!   published and logged.
//! - `an_aa_pair_never_trips`: identical upstreams for `STICKY_CANARY_AA_SECONDS` (default 20;
//!   `make guard-aa` runs 600), looked at every 200 ms: no trip.

use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sticky_canary::brake::Series;
use sticky_canary::plan::Plan;
use sticky_canary_harness::brake::{self, guarded_plugin};
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig, Launch};
use sticky_canary_harness::http::{send_once, Handler, Request, Response, Upstream};
use sticky_canary_harness::prom::{Scrape, ScrapeExt};
use sticky_canary_harness::shop::payments as shop;
use sticky_canary_harness::{addresses, keys_for, upstreams_for, Keys};

const WORKERS: u32 = 4;
const FLUSH_MS: u64 = 500;

struct Setup {
    plan: Plan,
    _upstreams: Vec<Upstream>,
    envoy: Envoy,
}

/// The shipped plugin config at 50/50 with an override, a bucket header, a reason header and
/// `guard`; four workers.
fn start(guard: serde_json::Value, handler: impl Fn(&str) -> Handler) -> Setup {
    envoy::check_prerequisites();
    let mut plugin = guarded_plugin(50, FLUSH_MS, guard);
    plugin["override"] = json!({"tokens": ["0123456789abcdef-qa"]});
    plugin["bucket_header"] = "x-canary-bucket".into();
    let plugin = plugin.to_string();
    let plan = Plan::from_json(plugin.as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, handler);
    let cfg = EnvoyConfig::for_test(&plugin, &addresses(&upstreams), "stable");
    let launch = Launch {
        concurrency: WORKERS,
        ..Launch::default()
    };
    let envoy = Envoy::start_yaml(&cfg.to_yaml(), &launch)
        .unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    Setup {
        plan,
        _upstreams: upstreams,
        envoy,
    }
}

fn approval_guard() -> serde_json::Value {
    brake::approval_guard(Some(20))
}

impl Setup {
    /// `n` session keys the plan sends to `version`.
    fn keys(&self, version: &str, n: usize, seed: u64) -> Vec<String> {
        keys_for(&self.plan, version, n, seed)
    }

    /// One POST on a fresh connection (so that requests spread over the workers).
    fn order(&self, key: &str, path: &str, extra: &[(&str, &str)]) -> Response {
        let mut req = Request::new("POST", path).header("cookie", &format!("session_id={key}"));
        for (n, v) in extra {
            req = req.header(n, v);
        }
        send_once(self.envoy.listener(), &req).expect("request through Envoy")
    }

    fn tripped(&self, s: &Scrape) -> f64 {
        brake::tripped(s, "canary")
    }

    fn envoy_log_on_failure(&self) -> String {
        self.envoy.log()
    }
}

/// What the core concludes from a scrape: the guard's own judgement on Envoy's counters.
fn judged(plan: &Plan, s: &Scrape) -> bool {
    let guard = plan.guard.as_ref().unwrap();
    let versions: Vec<String> = plan.versions.iter().map(|v| v.name.clone()).collect();
    let read = |v: usize, series: Series| -> f64 {
        let l = [("service", "checkout"), ("version", versions[v].as_str())];
        let rule = |r: usize| plan.business.rules[r].name.clone();
        match series {
            Series::Business(r) => s
                .value(&format!("canary_business_{}_total", rule(r)), &l)
                .unwrap_or(0.0),
            Series::Squares(r) => s
                .value(&format!("canary_business_{}_squares_total", rule(r)), &l)
                .unwrap_or(0.0),
            other => panic!("not used here: {other:?}"),
        }
    };
    guard.judge(0, &read).is_some()
}

#[test]
fn a_harmful_canary_is_braked_in_every_worker() {
    // Canary: 8.8 % of its authorizations declined (the payment-code fall-through: 99.4 % →
    // 91.2 % approvals); stable 0.6 %. A low min_samples (20), so that the moment the test
    // crosses its bound comes after it and can be seen.
    let t = start(approval_guard(), |v| {
        shop(v, if v == "canary" { 88 } else { 6 }, 0)
    });
    // Traffic in the background, ~60 orders a second over both versions, while this thread
    // watches Envoy's counters every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let listener = t.envoy.listener();
    let keys = Keys::new(7).take(400).collect::<Vec<_>>();
    let traffic = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 3000 {
                let key = &keys[i % keys.len()];
                let req = Request::new("POST", &format!("/checkout/{i}"))
                    .header("cookie", &format!("session_id={key}"));
                let _ = send_once(listener, &req);
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
                std::thread::sleep(Duration::from_millis(16));
            }
        })
    };
    let started = Instant::now();
    let (mut crossed, mut tripped) = (None, None);
    while started.elapsed() < Duration::from_secs(30) {
        let s = t.envoy.scrape_now();
        if crossed.is_none() && judged(&t.plan, &s) {
            crossed = Some(started.elapsed());
        }
        if t.tripped(&s) == 1.0 {
            tripped = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    let (Some(crossed), Some(tripped)) = (crossed, tripped) else {
        panic!(
            "no trip in 30 s (crossed {crossed:?}, tripped {tripped:?}, {} requests); log:\n{}",
            sent.load(Ordering::Relaxed),
            t.envoy_log_on_failure()
        );
    };
    // The counters a scrape shows are what every worker reads on its tick: the brake must act
    // within one flush interval of the test crossing (plus the scrape's own resolution).
    let lag = tripped.saturating_sub(crossed);
    eprintln!(
        "crossed at {crossed:?}, tripped at {tripped:?} (lag {lag:?}, flush {FLUSH_MS} ms), \
         {} requests sent",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        lag <= Duration::from_millis(FLUSH_MS + 300),
        "tripped {lag:?} after the bound was crossed"
    );

    // Every worker learns the trip within one flush interval.
    std::thread::sleep(Duration::from_millis(FLUSH_MS + 200));
    for (i, key) in t.keys("canary", 200, 11).iter().enumerate() {
        let r = t.order(key, &format!("/after/{i}"), &[("x-canary-bucket", "0000")]);
        assert_eq!(r.header_str("x-upstream"), Some("stable"), "request {i}");
        assert_eq!(r.header_str("x-canary-version"), Some("stable"));
        assert_eq!(r.header_str("x-canary-reason"), Some("guard"));
    }
    // No bucket reaches any upstream, whatever the session.
    let echo_keys = t.keys("stable", 20, 12);
    for key in &echo_keys {
        let r = t.order(key, "/after/stable", &[("x-canary-bucket", "0001")]);
        assert_eq!(r.header_str("x-canary-reason"), Some("hash"));
    }
    // The override still reaches the canary.
    let r = t.order(
        &t.keys("stable", 1, 13)[0],
        "/qa",
        &[
            ("x-canary-override", "canary"),
            ("x-canary-token", "0123456789abcdef-qa"),
        ],
    );
    assert_eq!(r.header_str("x-upstream"), Some("canary"));
    assert_eq!(r.header_str("x-canary-reason"), Some("override"));

    let s = t.envoy.scrape();
    let l = [("service", "checkout"), ("version", "canary")];
    assert_eq!(t.tripped(&s), 1.0);
    let trips = s.get("canary_guard_trips_total", &l);
    assert!((1.0..=f64::from(WORKERS)).contains(&trips), "{trips} trips");
    assert!(
        s.get(
            "canary_requests_total",
            &[
                ("service", "checkout"),
                ("version", "stable"),
                ("reason", "guard")
            ]
        ) >= 200.0
    );
    let log = t.envoy.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("guard tripped canary"))
        .collect();
    assert!(
        !lines.is_empty() && lines[0].contains("check approval (ratio auth_approved/orders)"),
        "{log}"
    );
    eprintln!("{} trip line(s): {}", lines.len(), lines[0]);
}

#[test]
fn no_bucket_reaches_an_upstream_after_a_trip() {
    // The echo upstream shows what the upstream received.
    let guard = json!({"baseline": "stable", "min_samples": 20,
                       "checks": [{"error_ratio": {"max_points": 1.0}}]});
    let t = start(guard, |v| {
        if v == "canary" {
            Arc::new(|_: &Request| Response::new(503).header("x-upstream", "canary"))
        } else {
            sticky_canary_harness::http::echo_handler(v)
        }
    });
    let bucket_seen = |r: &Response| -> bool {
        r.json()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0].as_str() == Some("x-canary-bucket"))
    };
    let stable = t.keys("stable", 1, 3).remove(0);
    assert!(bucket_seen(&t.order(&stable, "/before", &[])));
    for (i, k) in t.keys("stable", 40, 4).iter().enumerate() {
        t.order(k, &format!("/s/{i}"), &[]);
    }
    for (i, k) in t.keys("canary", 40, 5).iter().enumerate() {
        t.order(k, &format!("/c/{i}"), &[]);
    }
    let s = t.envoy.scrape_until(|s| t.tripped(s) == 1.0);
    assert_eq!(t.tripped(&s), 1.0, "{}", t.envoy.log());
    std::thread::sleep(Duration::from_millis(FLUSH_MS + 200));
    for i in 0..20 {
        let r = t.order(
            &stable,
            &format!("/after/{i}"),
            &[("x-canary-bucket", "0042")],
        );
        assert_eq!(r.status, 200);
        assert!(!bucket_seen(&r), "request {i} carried a bucket upstream");
    }
}

#[test]
fn an_aa_pair_never_trips() {
    let seconds: u64 = std::env::var("STICKY_CANARY_AA_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let guard = json!({"baseline": "stable", "alpha": 0.01,
        "checks": [{"error_ratio": {"max_points": 1.0}},
                   {"ratio": {"label": "approval", "numerator": "auth_approved",
                              "denominator": "orders", "max_drop_points": 0.3}},
                   {"mean": {"label": "aov", "sum": "order_value", "count": "orders",
                             "max_drift_percent": 1.0}}]});
    // Both versions: 0.6 % declines, 0.5 % 5xx, order totals 10–40 dollars.
    let mut t = start(guard, |v| shop(v, 6, 5));
    let keys = Keys::new(21).take(2000).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut i, mut last) = (0usize, Instant::now());
    while Instant::now() < deadline {
        let key = &keys[i % keys.len()];
        t.order(key, &format!("/aa/{i}"), &[]);
        i += 1;
        if last.elapsed() > Duration::from_secs(30) {
            eprintln!("A/A: {i} requests, {:?} left", deadline - Instant::now());
            last = Instant::now();
        }
        if i % 200 == 0 {
            let s = t.envoy.scrape_now();
            assert_eq!(
                t.tripped(&s),
                0.0,
                "false trip after {i} requests:\n{}",
                t.envoy.log()
            );
            assert!(t.envoy.is_ready());
        }
    }
    let s = t.envoy.scrape();
    let l = |v| [("service", "checkout"), ("version", v)];
    let orders = |v| s.get("canary_business_orders_total", &l(v));
    eprintln!(
        "A/A: {i} requests in {seconds} s, orders canary {} stable {}, looks every {FLUSH_MS} ms \
         per worker ({WORKERS} workers): no trip",
        orders("canary"),
        orders("stable")
    );
    assert_eq!(t.tripped(&s), 0.0, "{}", t.envoy.log());
    assert!(
        orders("canary") >= 100.0 && orders("stable") >= 100.0,
        "the checks judged"
    );
    assert_eq!(s.get("canary_guard_trips_total", &l("canary")), 0.0);
}
