//! End-to-end: the pooled brake (`guard.pool`) under real Envoys and a real Prometheus (the
//! Debian package the project installs), loopback only, every process stopped.
//!
//! - `three_envoys_trip_together_on_the_pooled_evidence`: three Envoys (`--concurrency 2`)
//!   behind an uneven balancer (80/15/5 % of the orders), Prometheus scraping them every second,
//!   a canary that declines 8.8 % of its authorizations (99.4 % → 91.2 %). With the local test
//!   off (the default with a pool), each Envoy can only trip on the pooled evidence or by
//!   adopting another's trip: all three trip within scrape + interval + flush (+ a tick) of the
//!   first, then no canary session reaches the canary through any of them (reason `guard`), and
//!   Prometheus's own `prometheus_http_requests_total` shows at most one query per Envoy per
//!   interval.
//! - `an_aa_fleet_never_trips_through_a_prometheus_outage`: identical versions on three Envoys;
//!   Prometheus is stopped mid-run and started again: no trip, every request routed by its hash
//!   throughout, the outage counted (`unreachable` / `timeout`), pooled judging resumes (`ok`).
//! - `a_bad_pool_trips_nothing`: an Envoy with four workers whose pool is a fake answering each
//!   bad way in turn (5xx, not JSON, NaN, negative, 100 000 nested arrays, 2 MiB, too slow),
//!   under a harmful canary: nothing trips, routing is unchanged, every outcome is counted, and
//!   the fake sees at most one query per interval although four VMs tick; an Envoy whose pool
//!   cluster does not exist counts `unreachable`.

use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sticky_canary::brake::pool::Outcome;
use sticky_canary::plan::Plan;
use sticky_canary_harness::brake::{self, approval_guard, guarded_plugin};
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig, Launch};
use sticky_canary_harness::http::{send_once, Handler, Request, Response, Upstream};
use sticky_canary_harness::prom::Scrape;
use sticky_canary_harness::prometheus::Prometheus;
use sticky_canary_harness::shop::payments;
use sticky_canary_harness::{addresses, keys_for, upstreams_for, Keys, Rng};

const FLUSH_MS: u64 = 500;
const INTERVAL_MS: u64 = 1000;
const SCRAPE_MS: u64 = 1000;

/// The shipped plugin config at 50/50 with a reason header and a pooled approval guard.
fn plugin(cluster: &str, timeout_ms: u64) -> String {
    let mut guard = approval_guard(Some(20));
    guard["pool"] =
        json!({"cluster": cluster, "interval_ms": INTERVAL_MS, "timeout_ms": timeout_ms});
    guarded_plugin(50, FLUSH_MS, guard).to_string()
}

struct Fleet {
    plan: Plan,
    _upstreams: Vec<Upstream>,
    envoys: Vec<Envoy>,
}

/// `n` Envoys with `workers` each, in front of the same upstreams, their pool's cluster
/// `prometheus` pointing at `pool`.
fn fleet(
    n: usize,
    workers: u32,
    plugin: &str,
    pool: SocketAddr,
    handler: impl Fn(&str) -> Handler,
) -> Fleet {
    envoy::check_prerequisites();
    let plan = Plan::from_json(plugin.as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, handler);
    let envoys = (0..n)
        .map(|_| {
            let mut cfg = EnvoyConfig::for_test(plugin, &addresses(&upstreams), "stable");
            cfg.add_module_cluster("prometheus", pool);
            let launch = Launch {
                concurrency: workers,
                ..Launch::default()
            };
            Envoy::start_yaml(&cfg.to_yaml(), &launch)
                .unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log))
        })
        .collect();
    Fleet {
        plan,
        _upstreams: upstreams,
        envoys,
    }
}

impl Fleet {
    fn keys(&self, version: &str, n: usize, seed: u64) -> Vec<String> {
        keys_for(&self.plan, version, n, seed)
    }

    fn admins(&self) -> Vec<SocketAddr> {
        self.envoys.iter().map(Envoy::admin).collect()
    }

    fn logs(&self) -> String {
        self.envoys
            .iter()
            .enumerate()
            .map(|(i, e)| format!("----- Envoy {i} -----\n{}", e.log()))
            .collect()
    }
}

/// One order through `envoy` on a fresh connection (requests spread over its workers).
fn order(envoy: &Envoy, key: &str, i: usize) -> Response {
    let req = Request::new("POST", &format!("/checkout/{i}"))
        .header("cookie", &format!("session_id={key}"));
    send_once(envoy.listener(), &req).expect("request through Envoy")
}

fn tripped(s: &Scrape) -> bool {
    brake::tripped(s, "canary") == 1.0
}

fn outcome(s: &Scrape, o: Outcome) -> f64 {
    s.value(
        "canary_guard_pool_queries_total",
        &[("service", "checkout"), ("outcome", o.as_str())],
    )
    .unwrap_or(-1.0)
}

/// Prometheus's own count of instant queries answered (any code).
fn queries_answered(prom: &Prometheus) -> f64 {
    prom.own_metrics()
        .samples
        .iter()
        .filter(|s| {
            s.name == "prometheus_http_requests_total"
                && s.labels.get("handler").map(String::as_str) == Some("/api/v1/query")
        })
        .map(|s| s.value)
        .sum()
}

#[test]
fn three_envoys_trip_together_on_the_pooled_evidence() {
    let deadline = Instant::now() + Duration::from_secs(60);
    let prom = Prometheus::start(&[], None, deadline);
    let f = fleet(3, 2, &plugin("prometheus", 500), prom.addr(), |v| {
        payments(v, if v == "canary" { 88 } else { 6 }, 0)
    });
    prom.set_targets(&f.admins());
    let queries_before = queries_answered(&prom);
    let started = Instant::now();
    let shares = [80u64, 15, 5];
    let keys: Vec<String> = Keys::new(11).take(600).collect();
    let mut rng = Rng::new(3);
    let mut tripped_at: [Option<Duration>; 3] = [None; 3];
    let mut i = 0;
    while tripped_at.iter().any(Option::is_none) && started.elapsed() < Duration::from_secs(45) {
        for _ in 0..25 {
            let roll = rng.next_u64() % 100;
            let e = if roll < shares[0] {
                0
            } else if roll < shares[0] + shares[1] {
                1
            } else {
                2
            };
            order(&f.envoys[e], &keys[i % keys.len()], i);
            i += 1;
        }
        for (e, envoy) in f.envoys.iter().enumerate() {
            if tripped_at[e].is_none() && tripped(&envoy.scrape_now()) {
                tripped_at[e] = Some(started.elapsed());
            }
        }
    }
    let elapsed = started.elapsed();
    let times: Vec<Duration> = tripped_at
        .iter()
        .map(|t| {
            t.unwrap_or_else(|| {
                panic!(
                    "not every Envoy tripped in 45 s: {tripped_at:?}\n{}",
                    f.logs()
                )
            })
        })
        .collect();
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    let bound = Duration::from_millis(SCRAPE_MS + INTERVAL_MS + FLUSH_MS + FLUSH_MS + 500);
    eprintln!(
        "pooled trips at {times:?} after {i} orders (shares 80/15/5): spread {:?} (bound {bound:?})",
        last - first
    );
    assert!(
        last - first <= bound,
        "spread {:?} > {bound:?}\n{}",
        last - first,
        f.logs()
    );
    // Every Envoy says why, and the trip reached each on the pool (judged or adopted).
    for (e, envoy) in f.envoys.iter().enumerate() {
        let log = envoy.log();
        assert!(
            log.contains("guard tripped canary on the pooled evidence of every Envoy")
                || log.contains("guard tripped canary: adopted from the pool"),
            "Envoy {e}:\n{log}"
        );
        assert!(
            !log.contains("guard tripped canary: check"),
            "a local trip in Envoy {e}"
        );
    }
    // No canary session reaches the canary through any of them afterwards: the other workers
    // of an Envoy learn its trip from shared data on their next tick (one flush interval).
    std::thread::sleep(Duration::from_millis(2 * FLUSH_MS));
    for (e, envoy) in f.envoys.iter().enumerate() {
        for (j, key) in f.keys("canary", 20, 5 + e as u64).iter().enumerate() {
            let r = order(envoy, key, 100_000 + j);
            assert_eq!(
                (
                    r.header_str("x-canary-version"),
                    r.header_str("x-canary-reason")
                ),
                (Some("stable"), Some("guard")),
                "Envoy {e}, canary session {key}"
            );
        }
    }
    // At most one query per Envoy per interval (+ one each for the edges), at least one each.
    let queries = queries_answered(&prom) - queries_before;
    let per_envoy = elapsed.as_millis() as f64 / INTERVAL_MS as f64 + 1.0;
    eprintln!("Prometheus answered {queries} queries in {elapsed:?} from 3 Envoys of 2 workers");
    assert!(
        queries >= 3.0 && queries <= 3.0 * per_envoy,
        "{queries} queries in {elapsed:?}"
    );
}

#[test]
fn an_aa_fleet_never_trips_through_a_prometheus_outage() {
    let deadline = Instant::now() + Duration::from_secs(80);
    let mut prom = Prometheus::start(&[], None, deadline);
    let f = fleet(3, 2, &plugin("prometheus", 500), prom.addr(), |v| {
        payments(v, 6, 0)
    });
    prom.set_targets(&f.admins());
    let keys: Vec<(String, &str)> = ["canary", "stable"]
        .iter()
        .flat_map(|v| f.keys(v, 150, 21).into_iter().map(move |k| (k, *v)))
        .collect();
    let started = Instant::now();
    let mut i = 0;
    let mut phase = 0;
    let mut ok_before_restart = [0.0; 3];
    while started.elapsed() < Duration::from_secs(24) {
        let (key, version) = &keys[i % keys.len()];
        let r = order(&f.envoys[i % 3], key, i);
        assert_eq!(
            (
                r.header_str("x-canary-version"),
                r.header_str("x-canary-reason")
            ),
            (Some(*version), Some("hash")),
            "request {i} at {:?}\n{}",
            started.elapsed(),
            f.logs()
        );
        i += 1;
        let t = started.elapsed();
        if phase == 0 && t > Duration::from_secs(8) {
            prom.stop();
            phase = 1;
        } else if phase == 1 && t > Duration::from_secs(13) {
            for (e, envoy) in f.envoys.iter().enumerate() {
                ok_before_restart[e] = outcome(&envoy.scrape_now(), Outcome::Ok);
            }
            prom.restart(deadline);
            phase = 2;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (e, envoy) in f.envoys.iter().enumerate() {
        let s = envoy.scrape_now();
        assert!(
            !tripped(&s),
            "Envoy {e} tripped on an A/A pair\n{}",
            envoy.log()
        );
        let down = outcome(&s, Outcome::Unreachable) + outcome(&s, Outcome::Timeout);
        assert!(
            down >= 1.0,
            "Envoy {e}: the outage was not counted\n{}",
            envoy.log()
        );
        assert!(
            outcome(&s, Outcome::Ok) > ok_before_restart[e],
            "Envoy {e}: pooled judging did not resume\n{}",
            envoy.log()
        );
        assert!(
            envoy
                .log()
                .contains("answers again; pooled judging resumes"),
            "Envoy {e}"
        );
    }
    eprintln!("A/A: {i} orders over 3 Envoys, Prometheus down for ~5 s, no trip");
}

/// A fake Prometheus answering each bad way in turn; counts the queries it gets.
fn bad_pool(queries: Arc<AtomicUsize>) -> Handler {
    Arc::new(move |_req: &Request| {
        let n = queries.fetch_add(1, Ordering::SeqCst);
        let vector = |value: &str| {
            json!({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"__name__": "canary_guard_evidence", "version": "canary",
                            "metric": "business_orders"}, "value": [1, value]}]}})
            .to_string()
        };
        let json = |r: Response| r.header("content-type", "application/json");
        match n % 7 {
            0 => Response::new(500).body("internal error"),
            1 => json(Response::new(200)).body("<html>not json</html>"),
            2 => json(Response::new(200)).body(vector("NaN")),
            3 => json(Response::new(200)).body(vector("-12")),
            4 => json(Response::new(200)).body(format!(
                "{}{}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )),
            5 => json(Response::new(200)).body(format!(
                "{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[]}},\
                 \"pad\":\"{}\"}}",
                "x".repeat(2 << 20)
            )),
            _ => {
                std::thread::sleep(Duration::from_millis(700));
                json(Response::new(200)).body(vector("1"))
            }
        }
    })
}

#[test]
fn a_bad_pool_trips_nothing() {
    let queries = Arc::new(AtomicUsize::new(0));
    let fake = Upstream::start_with("fake-prometheus", None, bad_pool(queries.clone())).unwrap();
    // Four workers: four VMs tick, one holds the lease.
    let f = fleet(1, 4, &plugin("prometheus", 300), fake.addr(), |v| {
        payments(v, if v == "canary" { 500 } else { 6 }, 0)
    });
    let missing = fleet(1, 1, &plugin("no-such-cluster", 300), fake.addr(), |v| {
        payments(v, 6, 0)
    });
    let envoy = &f.envoys[0];
    let keys: Vec<(String, &str)> = ["canary", "stable"]
        .iter()
        .flat_map(|v| f.keys(v, 100, 31).into_iter().map(move |k| (k, *v)))
        .collect();
    let started = Instant::now();
    let mut i = 0;
    // At least 10 s, and until the fake has seen an eighth query: the seventh is the one left to
    // time out, and the eighth goes only once it has (a loaded machine takes longer to get there).
    while started.elapsed() < Duration::from_secs(10)
        || (queries.load(Ordering::SeqCst) < 8 && started.elapsed() < Duration::from_secs(40))
    {
        let (key, version) = &keys[i % keys.len()];
        let r = order(envoy, key, i);
        assert_eq!(
            r.header_str("x-canary-version"),
            Some(*version),
            "request {i}"
        );
        assert_eq!(r.header_str("x-canary-reason"), Some("hash"), "request {i}");
        i += 1;
        std::thread::sleep(Duration::from_millis(4));
    }
    let elapsed = started.elapsed();
    let s = envoy.scrape();
    assert!(!tripped(&s), "a bad pool tripped\n{}", envoy.log());
    let counted: Vec<(Outcome, f64)> = Outcome::ALL.iter().map(|o| (*o, outcome(&s, *o))).collect();
    eprintln!(
        "bad pool: {i} requests, {} queries in {elapsed:?}: {counted:?}",
        queries.load(Ordering::SeqCst)
    );
    assert_eq!(outcome(&s, Outcome::Ok), 0.0);
    for o in [Outcome::HttpError, Outcome::BadAnswer, Outcome::Timeout] {
        assert!(
            outcome(&s, o) >= 1.0,
            "{o:?} never counted: {counted:?}\n{}",
            envoy.log()
        );
    }
    // Four workers, one query per interval at most (+1 for the edges).
    let sent = queries.load(Ordering::SeqCst) as f64;
    let most = elapsed.as_millis() as f64 / INTERVAL_MS as f64 + 1.0;
    assert!(sent >= 5.0 && sent <= most, "{sent} queries in {elapsed:?}");
    let m = missing.envoys[0].scrape();
    assert!(
        outcome(&m, Outcome::Unreachable) >= 1.0,
        "{}",
        missing.envoys[0].log()
    );
    assert!(!tripped(&m));
}
