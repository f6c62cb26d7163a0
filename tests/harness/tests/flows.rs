//! End-to-end: flows finish where they started (`session.hold.flows`), under a real Envoy with
//! the built module and the key in the VM's environment (`vm_config.environment_variables`).
//!
//! - `a_write_keeps_its_flow_on_the_canary_after_the_weights_go_to_zero` (one worker): a POST of
//!   a canary session served by the canary sets the signed flow cookie (exact shape and
//!   attributes; the MAC checked offline with the same key); a read, a 5xx write or a write
//!   served by stable sets none. The weights go to canary 0 by a listener update (how the harness
//!   changes a plugin config live): the session with its cookie stays on the canary (reason
//!   `flow`) until the cookie's expiry, to within each request's own send/answer window, then
//!   goes to stable; a canary session that never wrote moves at once. Each request with the
//!   cookie is counted once (`valid`, then `expired`); the gauge is 0 once the cookie expired.
//! - `the_draining_gauge_counts_flows_across_a_configuration_change`: the flow above is still
//!   draining after the listener update (a new plugin instance), which learns it from the flow's
//!   next request, so `canary_flows_draining` still counts it.
//! - `a_flow_outlives_its_bucket_route` (the shipped ramp, `envoy/ramp/`): the cohort's bucket
//!   route taken away (`steps/00.yaml` moved in), the flow reaches the canary through the
//!   `x-canary-version` route, with no bucket header, until its expiry; a write-less cohort
//!   session moves at once.
//! - `a_trip_lets_flows_finish_{one,four}_worker(s)`: the brake trips the canary; flows with a
//!   valid cookie keep reaching it (reason `flow`, no bucket), new and flow-less sessions go to
//!   stable (reason `guard`), a flow's write does not extend its cookie while it drains, the
//!   trip's log line counts the draining flows, the gauge is the
//!   number of flows started (summed over the workers' VMs), and once the cookies expire the
//!   flows go to stable too and the gauge is 0.
//! - `a_trip_moves_flows_at_once_with_guard_flows_move`: with `guard.flows: move` each flow goes
//!   to stable at the trip, its cookie is cleared, the log line says so, and the gauge is 0.
//! - `forged_expired_and_retired_cookies_gain_nothing`: flipped bytes (version, expiry, MAC),
//!   another session's cookie, made-up and malformed ones, one without a session key, an expired
//!   one and one expiring too far ahead (both signed offline with the key), and one naming a
//!   version since removed are each decided as if absent, set or clear nothing, and are counted
//!   `invalid` or `expired` in `canary_flow_cookies_total`; the genuine cookie keeps working; a
//!   pin and the override win over a valid cookie without it being counted.

use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sticky_canary::plan::Plan;
use sticky_canary::routing::hash::{bucket, bucket_digits};
use sticky_canary_harness::brake::{self, guarded_plugin};
use sticky_canary_harness::envoy::{Envoy, Launch};
use sticky_canary_harness::flows::{
    add_flows, clear_cookie, draining, echo_with_status, envoy_config, keyed_plan, outcomes,
    ramp_plugin, ramp_step, requests, session_request, shipped_plugin, sign, start_ramp, unix_now,
    FlowCookie, Seen, ATTRIBUTES, FLOW,
};
use sticky_canary_harness::http::{echo_handler, Handler, Request, Response, Upstream};
use sticky_canary_harness::{addresses, keys_for, upstreams_for, Keys};

/// Counters reach Envoy, and the draining gauge is published, every this many ms.
const FLUSH_MS: u64 = 250;
/// A request that must be served by a flow (or not) is judged against the cookie's expiry with
/// this margin on the request's send/answer window (Envoy's and the test's clocks are the same
/// system clock; this only absorbs scheduling).
const CLOCK_MARGIN: f64 = 0.05;

/// The write that starts a flow.
fn write(session: &str) -> Request {
    session_request("POST", "/checkout", session, None)
}

/// A read of `session`, with its flow cookie if given.
fn read(session: &str, flow: Option<&FlowCookie>) -> Request {
    session_request(
        "GET",
        "/cart",
        session,
        flow.map(FlowCookie::value).as_deref(),
    )
}

/// Checks the flow cookie a write's response set: the documented shape and attributes, an
/// expiry `drain` seconds after the moment it was answered (whole seconds), and the MAC the key
/// gives for this session (signed offline with the plan's own code).
fn check_started(plan: &Plan, session: &str, version: &str, drain: u64, s: &Seen) -> FlowCookie {
    let c = s
        .flow_cookie()
        .unwrap_or_else(|| panic!("{session}: no flow cookie set: {s:?}"));
    assert_eq!(c.version, version, "{s:?}");
    let (from, to) = (
        s.sent.floor() as u64 + drain,
        s.answered.floor() as u64 + drain,
    );
    assert!(
        (from..=to).contains(&c.expiry),
        "expiry {} not {drain} s after the write ({from}..={to})",
        c.expiry
    );
    assert_eq!(
        c.set_cookie,
        format!("{FLOW}={}; Max-Age={drain}; {ATTRIBUTES}", c.value())
    );
    assert_eq!(
        c.set_cookie,
        sign(plan, session, version, c.expiry - drain),
        "the MAC is HMAC-SHA256 under the configured key, bound to this session"
    );
    c
}

/// What following a flow until its cookie expired showed.
#[derive(Debug)]
struct Drained {
    /// Requests served by the flow's version (reason `flow`).
    on_flow: usize,
    /// Requests after the expiry (decided as without the cookie).
    after: usize,
    /// The last flow-served request's answer, and the first later request's send (Unix
    /// seconds).
    last_flow: f64,
    first_after: f64,
}

impl Drained {
    /// How it went, relative to the write that set the cookie (answered at `write`) and to the
    /// cookie's expiry.
    fn describe(&self, write: f64, cookie: &FlowCookie) -> String {
        let e = cookie.expiry as f64;
        format!(
            "{} requests on the flow, the last answered {:.2} s after the write ({:+.2} s from \
             the expiry), the first decided without it sent {:.2} s after the write ({:+.2} s \
             from the expiry), {} after",
            self.on_flow,
            self.last_flow - write,
            self.last_flow - e,
            self.first_after - write,
            self.first_after - e,
            self.after
        )
    }
}

/// Reads `session` with `cookie` every 100 ms until three requests were decided without it
/// (at most 3 s past the expiry). Each request answered before the expiry must be served by the
/// cookie's version with reason `flow` (and pass `flow_check`); each sent after it must be
/// decided as `after` says (`(version, reason)`); nothing goes back to the flow.
fn follow_until_drained(
    listener: SocketAddr,
    session: &str,
    cookie: &FlowCookie,
    after: (&str, &str),
    flow_check: impl Fn(&Seen),
) -> Drained {
    let expiry = cookie.expiry as f64;
    let mut d = Drained {
        on_flow: 0,
        after: 0,
        last_flow: f64::NAN,
        first_after: f64::NAN,
    };
    while d.after < 3 {
        assert!(
            unix_now() < expiry + 3.0,
            "{session}: still on the flow 3 s past its expiry: {d:?}"
        );
        let s = Seen::send(listener, &read(session, Some(cookie)));
        if s.reason == "flow" {
            assert_eq!(
                d.after, 0,
                "{session}: back on the flow after leaving it: {s:?}"
            );
            assert!(s.served_by(&cookie.version), "{s:?}");
            assert!(
                s.sent < expiry + CLOCK_MARGIN,
                "{session}: served by the flow {:.3} s after its expiry",
                s.sent - expiry
            );
            assert!(
                s.flow_set_cookies().is_empty(),
                "a read refreshes nothing: {s:?}"
            );
            flow_check(&s);
            d.on_flow += 1;
            d.last_flow = s.answered;
        } else {
            assert_eq!(s.decided(), after, "{session}: {s:?}");
            assert!(s.served_by(after.0), "{s:?}");
            assert!(
                s.answered > expiry - CLOCK_MARGIN,
                "{session}: left the flow {:.3} s before its expiry: {s:?}",
                expiry - s.answered
            );
            assert!(
                s.flow_set_cookies().is_empty(),
                "an expired cookie is not cleared: {s:?}"
            );
            if d.after == 0 {
                d.first_after = s.sent;
            }
            d.after += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

/// Waits until Unix time `t` (plus one flush interval and a margin, so that the next tick has
/// run when `tick` is set).
fn sleep_until(t: f64, tick: bool) {
    let extra = if tick {
        FLUSH_MS as f64 / 1000.0 + 0.2
    } else {
        0.0
    };
    let left = t + extra - unix_now();
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Weights to zero.

/// The drain of scenario 1: long enough for a listener update on a busy two-core machine.
const DRAIN_WEIGHTS: u64 = 6;

/// A write starts a flow on the canary; the weights go to canary 0 (a listener update, the
/// harness's live plugin config change); the flow keeps reaching the canary with reason `flow`
/// until its cookie expires, then goes to stable; a canary session that never wrote moves at
/// once. Also: a read, a write answered 5xx, a write served by stable start nothing; the gauge
/// counts the one flow until it expires; each request with the cookie is counted once.
#[test]
fn a_write_keeps_its_flow_on_the_canary_after_the_weights_go_to_zero() {
    let plugin = |canary: u32| {
        shipped_plugin(
            &[("canary", canary), ("stable", 100 - canary)],
            DRAIN_WEIGHTS,
            FLUSH_MS,
        )
        .to_string()
    };
    let at_half = plugin(50);
    let plan = keyed_plan(&at_half);
    let upstreams = upstreams_for(&plan, echo_with_status);
    let pairs = addresses(&upstreams);
    let envoy = Envoy::start_dynamic(&envoy_config(&at_half, &pairs, "stable"))
        .unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    let l = envoy.listener();
    let canary = keys_for(&plan, "canary", 3, 101);
    let (flow, quiet, failing) = (&canary[0], &canary[1], &canary[2]);
    let steady = &keys_for(&plan, "stable", 1, 102)[0];

    // A read starts nothing.
    let s = Seen::send(l, &read(flow, None));
    assert!(s.served_by("canary") && s.reason == "hash", "{s:?}");
    assert!(s.flow_set_cookies().is_empty(), "{s:?}");
    // A write served by the canary starts the flow.
    let s = Seen::send(l, &write(flow));
    assert!(s.served_by("canary") && s.reason == "hash", "{s:?}");
    let cookie = check_started(&plan, flow, "canary", DRAIN_WEIGHTS, &s);
    let write_at = s.answered;
    // A write answered 5xx starts nothing; one served by the default version starts nothing
    // (the hold is set instead).
    let s = Seen::send(
        l,
        &session_request("POST", "/checkout?status=503", failing, None),
    );
    assert_eq!((s.status, s.upstream.as_str()), (503, "canary"), "{s:?}");
    assert!(s.flow_set_cookies().is_empty(), "a 5xx write: {s:?}");
    let s = Seen::send(l, &write(steady));
    assert!(s.served_by("stable"), "{s:?}");
    assert!(s.flow_set_cookies().is_empty(), "a write on stable: {s:?}");
    assert!(
        s.set_cookies.iter().any(|c| c.starts_with("sc_hold=1;")),
        "{s:?}"
    );
    assert!(Seen::send(l, &read(quiet, None)).served_by("canary"));
    let sc = envoy.scrape();
    assert_eq!(draining(&sc, "canary"), Some(1.0), "one flow draining");
    assert_eq!(draining(&sc, "stable"), Some(0.0));

    // The weights go to canary 0.
    let t = Instant::now();
    envoy
        .reload(&envoy_config(&plugin(0), &pairs, "stable"))
        .unwrap_or_else(|e| panic!("{e}"));
    let reload = t.elapsed();
    let updated_at = unix_now() - write_at;
    eprintln!(
        "weights 50 → 0: the listener update took {reload:?}, done {updated_at:.2} s after the \
         write (cookie expiry in {:.2} s)",
        cookie.expiry as f64 - unix_now()
    );
    assert!(
        unix_now() + 0.5 < cookie.expiry as f64,
        "the listener update took {reload:?}: the flow expired before it could be seen"
    );
    // The session that never wrote moves at once; so does the flow's session without its
    // cookie (the cookie, not the session, keeps it).
    let s = Seen::send(l, &read(quiet, None));
    assert!(s.served_by("stable") && s.reason == "hash", "{s:?}");
    let s = Seen::send(l, &read(flow, None));
    assert!(s.served_by("stable") && s.reason == "hash", "{s:?}");
    // What the gauge says after the configuration change (asserted in
    // `the_draining_gauge_counts_flows_across_a_configuration_change`).
    let gauge_after_update = draining(&envoy.scrape(), "canary");

    // With its cookie, the flow finishes on the canary until the cookie expires.
    let d = follow_until_drained(l, flow, &cookie, ("stable", "hash"), |_| {});
    eprintln!(
        "weights 50 → 0 (drain_seconds {DRAIN_WEIGHTS}): gauge after the update \
         {gauge_after_update:?}; {}",
        d.describe(write_at, &cookie)
    );
    assert!(d.on_flow >= 3, "{d:?}");

    // Expired: the gauge drops to 0 at the next tick; every request with the cookie counted
    // once, valid while it was, expired after.
    sleep_until(cookie.expiry as f64, true);
    let sc = envoy.scrape();
    assert_eq!(draining(&sc, "canary"), Some(0.0));
    assert_eq!(
        outcomes(&sc),
        [d.on_flow as f64, 0.0, d.after as f64],
        "[valid, invalid, expired]"
    );
    assert_eq!(requests(&sc, "canary", "flow"), d.on_flow as f64);
}

/// `canary_flows_draining` counts the flow cookies this Envoy set that have not expired: a
/// configuration change (here the weights going to canary 0 by a listener update, as in the
/// scenario above) does not end a flow, so the gauge still counts it after the change, and the
/// trip's log line (which reads the gauge) can still name it.
#[test]
fn the_draining_gauge_counts_flows_across_a_configuration_change() {
    let plugin = |canary: u32| {
        shipped_plugin(
            &[("canary", canary), ("stable", 100 - canary)],
            60,
            FLUSH_MS,
        )
        .to_string()
    };
    let at_half = plugin(50);
    let plan = keyed_plan(&at_half);
    let upstreams = upstreams_for(&plan, echo_handler);
    let pairs = addresses(&upstreams);
    let envoy = Envoy::start_dynamic(&envoy_config(&at_half, &pairs, "stable"))
        .unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    let l = envoy.listener();
    let flow = keys_for(&plan, "canary", 1, 111).remove(0);
    let s = Seen::send(l, &write(&flow));
    let cookie = check_started(&plan, &flow, "canary", 60, &s);
    assert_eq!(
        draining(&envoy.scrape(), "canary"),
        Some(1.0),
        "before the change"
    );
    envoy
        .reload(&envoy_config(&plugin(0), &pairs, "stable"))
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Seen::send(l, &read(&flow, Some(&cookie)));
    assert_eq!(s.decided(), ("canary", "flow"), "the flow goes on: {s:?}");
    let configured = envoy
        .log()
        .lines()
        .filter(|l| l.contains("versions=canary:0,stable:100"))
        .count();
    // The new plugin instance learned the flow from that request; its next tick publishes it.
    let deadline = Instant::now() + Duration::from_millis(20 * FLUSH_MS);
    let mut gauge = draining(&envoy.scrape(), "canary");
    while gauge != Some(1.0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(FLUSH_MS / 2));
        gauge = draining(&envoy.scrape(), "canary");
    }
    eprintln!(
        "after the listener update ({configured} configure line(s) for the new weights): \
         gauge {gauge:?} for 1 flow still valid for {:.1} s",
        cookie.expiry as f64 - unix_now()
    );
    assert_eq!(gauge, Some(1.0), "the flow still drains after the change");
}

// ---------------------------------------------------------------------------------------------
// 2. The ramp by routes: the bucket route taken away.

/// The drain of scenario 2 (a route swap is quick).
const DRAIN_RAMP: u64 = 3;

/// The shipped ramp (`envoy/ramp/`: plugin weights canary 0 / stable 100, the cohort sized by a
/// bucket route in a watched RDS file) at step 20 %: a cohort session's write, served by the
/// canary through the bucket route, starts a flow. `steps/00.yaml` moved in (the bucket route
/// gone): the flow still reaches the canary through the `x-canary-version` route, with no
/// bucket header, until its cookie expires; a cohort session that never wrote moves at once.
#[test]
fn a_flow_outlives_its_bucket_route() {
    let mut p = ramp_plugin();
    add_flows(&mut p, DRAIN_RAMP, FLUSH_MS);
    let salt = p["salt"].as_str().unwrap().to_string();
    let plugin = p.to_string();
    let plan = keyed_plan(&plugin);
    let upstreams = upstreams_for(&plan, echo_handler);
    let ramp = start_ramp(&plugin, &addresses(&upstreams), &ramp_step(20));
    let l = ramp.envoy().listener();
    let b = |k: &str| bucket(salt.as_bytes(), k.as_bytes());
    let digits = |k: &str| String::from_utf8(bucket_digits(b(k)).to_vec()).unwrap();
    let cohort: Vec<String> = Keys::new(201).filter(|k| b(k) < 2000).take(2).collect();
    let (flow, quiet) = (&cohort[0], &cohort[1]);
    let outside = Keys::new(202).find(|k| b(k) >= 2000).unwrap();

    // Step 20 %: the cohort on the canary through the bucket route (the filter's own decision
    // is stable: plugin weights canary 0).
    let s = Seen::send(l, &write(flow));
    assert_eq!(
        (s.upstream.as_str(), s.version.as_str(), s.reason.as_str()),
        ("canary", "canary", "hash"),
        "{s:?}"
    );
    assert_eq!(s.bucket_seen, [digits(flow)]);
    assert_eq!(
        s.route_seen,
        ["stable"],
        "the bucket route, not the tag, sent it"
    );
    let cookie = check_started(&plan, flow, "canary", DRAIN_RAMP, &s);
    let write_at = s.answered;
    let s = Seen::send(l, &read(quiet, None));
    assert_eq!(s.upstream, "canary", "{s:?}");
    assert!(s.flow_set_cookies().is_empty());
    assert_eq!(Seen::send(l, &read(&outside, None)).upstream, "stable");

    // Step 0: the bucket route is gone.
    let t = Instant::now();
    ramp.set_routes(&ramp_step(0)).unwrap();
    let swap = t.elapsed();
    assert!(
        unix_now() + 0.5 < cookie.expiry as f64,
        "the route swap took {swap:?}: the flow expired before it could be seen"
    );
    let s = Seen::send(l, &read(quiet, None));
    assert!(s.served_by("stable") && s.reason == "hash", "{s:?}");
    assert_eq!(s.bucket_seen, [digits(quiet)]);
    let s = Seen::send(l, &read(flow, None));
    assert!(s.served_by("stable"), "without its cookie: {s:?}");
    let d = follow_until_drained(l, flow, &cookie, ("stable", "hash"), |s| {
        assert!(s.bucket_seen.is_empty(), "a flow carries no bucket: {s:?}");
    });
    eprintln!(
        "bucket route removed (drain_seconds {DRAIN_RAMP}): route swap took {swap:?}; {}",
        d.describe(write_at, &cookie)
    );
    assert!(d.on_flow >= 3, "{d:?}");
    let sc = ramp.envoy().scrape();
    assert_eq!(outcomes(&sc), [d.on_flow as f64, 0.0, d.after as f64]);
}

// ---------------------------------------------------------------------------------------------
// 3. The brake.

/// The drain of the brake scenarios: it covers starting the flows and tripping the brake.
const DRAIN_BRAKE: u64 = 10;

/// The guarded shipped config at 50/50 with a bucket header and flows, on `workers` workers;
/// the canary answers 503 on `/boom…` (the error check trips on it) and echoes otherwise.
struct Braked {
    plan: Plan,
    _upstreams: Vec<Upstream>,
    envoy: Envoy,
}

fn start_braked(workers: u32, on_trip: Option<&str>) -> Braked {
    let mut guard = json!({"baseline": "stable", "min_samples": 20,
                           "checks": [{"error_ratio": {"max_points": 1.0}}]});
    if let Some(f) = on_trip {
        guard["flows"] = f.into();
    }
    let mut p = guarded_plugin(50, FLUSH_MS, guard);
    p["bucket_header"] = "x-canary-bucket".into();
    add_flows(&mut p, DRAIN_BRAKE, FLUSH_MS);
    let plugin = p.to_string();
    let plan = keyed_plan(&plugin);
    let upstreams = upstreams_for(&plan, |v| -> Handler {
        let echo = echo_handler(v);
        if v == "canary" {
            Arc::new(move |r: &Request| {
                if r.path.starts_with("/boom") {
                    Response::new(503).header("x-upstream", "canary")
                } else {
                    echo(r)
                }
            })
        } else {
            echo
        }
    });
    let cfg = envoy_config(&plugin, &addresses(&upstreams), "stable");
    let launch = Launch {
        concurrency: workers,
        ..Launch::default()
    };
    let envoy = Envoy::start_yaml(&cfg.to_yaml(), &launch)
        .unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    Braked {
        plan,
        _upstreams: upstreams,
        envoy,
    }
}

/// Connections each worker has accepted so far (Envoy's per-worker listener stats).
fn connections_per_worker(envoy: &Envoy) -> Vec<u64> {
    let text = envoy
        .admin_get("/stats?filter=^listener\\..*\\.worker_[0-9]+\\.downstream_cx_total$")
        .text();
    let mut per: Vec<(String, u64)> = text
        .lines()
        .filter(|l| !l.starts_with("listener.admin"))
        .filter_map(|l| {
            let (name, v) = l.split_once(": ")?;
            let worker = name.split('.').find(|p| p.starts_with("worker_"))?;
            Some((worker.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    per.sort();
    per.into_iter().map(|(_, v)| v).collect()
}

impl Braked {
    /// Starts `n` flows: one write each, on a fresh connection, of distinct canary sessions.
    fn start_flows(&self, n: usize) -> Vec<(String, FlowCookie)> {
        keys_for(&self.plan, "canary", n, 301)
            .into_iter()
            .map(|k| {
                let s = Seen::send(self.envoy.listener(), &write(&k));
                assert!(s.served_by("canary"), "{s:?}");
                let c = check_started(&self.plan, &k, "canary", DRAIN_BRAKE, &s);
                (k, c)
            })
            .collect()
    }

    /// Trips the canary: 40 reads per version, the canary's all answered 503; waits until the
    /// gauge says tripped, then one more flush so that every worker has seen it.
    fn trip(&self) -> Duration {
        let t = Instant::now();
        let l = self.envoy.listener();
        for (i, k) in keys_for(&self.plan, "stable", 40, 302).iter().enumerate() {
            Seen::send(l, &session_request("GET", &format!("/s/{i}"), k, None));
        }
        for (i, k) in keys_for(&self.plan, "canary", 40, 303).iter().enumerate() {
            Seen::send(l, &session_request("GET", &format!("/boom/{i}"), k, None));
        }
        let s = self
            .envoy
            .scrape_until(|s| brake::tripped(s, "canary") == 1.0);
        assert_eq!(brake::tripped(&s, "canary"), 1.0, "no trip");
        let took = t.elapsed();
        std::thread::sleep(Duration::from_millis(FLUSH_MS + 200));
        took
    }

    /// The trip's log lines.
    fn trip_lines(&self) -> Vec<String> {
        self.envoy
            .log()
            .lines()
            .filter(|l| l.contains("guard tripped canary"))
            .map(str::to_string)
            .collect()
    }
}

/// The brake trips the canary while `n` flows drain on it (`guard.flows` finish, the default):
/// each flow keeps reaching the canary with reason `flow` and no bucket; new sessions of the
/// canary, and a flow's session without its cookie, go to stable with reason `guard`; the trip's
/// log line counts the `n` flows; the gauge is `n` (the sum over the workers' VMs); once the
/// cookies expire the flows go to stable (reason `guard`) and the gauge drops to 0.
fn a_trip_lets_flows_finish(workers: u32, n: usize) {
    let t = start_braked(workers, None);
    let l = t.envoy.listener();
    let cx_before = connections_per_worker(&t.envoy);
    let flows = t.start_flows(n);
    let cx = connections_per_worker(&t.envoy);
    let spread: Vec<u64> = cx
        .iter()
        .zip(cx_before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a - b)
        .collect();
    let sc = t.envoy.scrape();
    let gauge = draining(&sc, "canary");
    assert_eq!(
        gauge,
        Some(n as f64),
        "{n} flows started (writes per worker {spread:?}): the gauge sums the workers' VMs"
    );
    let took = t.trip();
    let last_expiry = flows.iter().map(|(_, c)| c.expiry).max().unwrap() as f64;
    assert!(
        unix_now() + 1.0 < flows.iter().map(|(_, c)| c.expiry).min().unwrap() as f64,
        "the trip took {took:?}: the flows expired before they could be seen"
    );

    // Tripped: the flows finish on the canary (several requests each, over the workers) …
    let mut on_flow = 0;
    for round in 0..3 {
        for (k, c) in &flows {
            let s = Seen::send(l, &read(k, Some(c)));
            assert!(s.served_by("canary"), "round {round}, {k}: {s:?}");
            assert_eq!(s.reason, "flow", "{s:?}");
            assert!(s.bucket_seen.is_empty(), "{s:?}");
            assert!(s.flow_set_cookies().is_empty(), "{s:?}");
            on_flow += 1;
        }
    }
    // … while new sessions of the canary and a flow's session without its cookie go to stable.
    let fresh = keys_for(&t.plan, "canary", 20, 304);
    for k in fresh.iter().chain(flows.iter().map(|(k, _)| k)) {
        let s = Seen::send(l, &read(k, None));
        assert!(s.served_by("stable"), "{k}: {s:?}");
        assert_eq!(s.reason, "guard", "{s:?}");
        assert!(s.bucket_seen.is_empty(), "{s:?}");
    }
    // A write of a finishing flow on the tripped canary drains: it does not extend the cookie,
    // so `drain_seconds` bounds how long the tripped canary keeps serving it.
    let (k, c) = &flows[0];
    let s = Seen::send(
        l,
        &session_request("POST", "/checkout", k, Some(&c.value())),
    );
    assert!(s.served_by("canary") && s.reason == "flow", "{s:?}");
    assert!(
        s.flow_cookie().is_none(),
        "a draining flow's write set a cookie: {s:?}"
    );
    on_flow += 1;

    let lines = t.trip_lines();
    let want = format!(
        "; {n} flow(s) draining on canary in this Envoy finish there (guard.flows finish: \
         their cookies expire within {DRAIN_BRAKE} s)"
    );
    assert!(!lines.is_empty(), "no trip line:\n{}", t.envoy.log());
    for line in &lines {
        assert!(line.ends_with(&want), "{line}\nwant the end: {want}");
    }
    eprintln!(
        "{workers} worker(s): {n} flows started (writes per worker {spread:?}), gauge {gauge:?}; \
         tripped {took:?} after the trip traffic began; {on_flow} flow requests on the canary \
         while tripped, {} new/flow-less sessions on stable; {} trip line(s): {}",
        fresh.len() + n,
        lines.len(),
        lines[0]
    );

    // The cookies expire: the flows go to stable (reason guard), the gauge drops to 0.
    sleep_until(last_expiry, true);
    for (k, c) in &flows {
        let s = Seen::send(l, &read(k, Some(c)));
        assert!(
            s.served_by("stable") && s.reason == "guard",
            "{k} after expiry: {s:?}"
        );
    }
    let sc = t.envoy.scrape();
    assert_eq!(draining(&sc, "canary"), Some(0.0));
    assert_eq!(outcomes(&sc), [on_flow as f64, 0.0, n as f64]);
    assert_eq!(requests(&sc, "canary", "flow"), on_flow as f64);
}

#[test]
fn a_trip_lets_flows_finish_one_worker() {
    a_trip_lets_flows_finish(1, 3);
}

/// The same with four workers (one VM each, each with its own tracker of draining flows).
#[test]
fn a_trip_lets_flows_finish_four_workers() {
    a_trip_lets_flows_finish(4, 8);
}

/// `guard.flows: move`: at the trip every request of the canary goes to stable, flows included;
/// each flow's next request is served by stable (reason `guard`) and its cookie is cleared; the
/// trip's log line says so; the gauge drops to 0 at the next tick.
#[test]
fn a_trip_moves_flows_at_once_with_guard_flows_move() {
    let n = 3;
    let t = start_braked(1, Some("move"));
    let l = t.envoy.listener();
    let flows = t.start_flows(n);
    assert_eq!(draining(&t.envoy.scrape(), "canary"), Some(n as f64));
    let took = t.trip();
    assert!(
        unix_now() + 1.0 < flows[0].1.expiry as f64,
        "tripped too late: {took:?}"
    );
    for (k, c) in &flows {
        let s = Seen::send(l, &read(k, Some(c)));
        assert!(s.served_by("stable"), "{k}: {s:?}");
        assert_eq!(s.reason, "guard", "{s:?}");
        assert_eq!(s.flow_set_cookies(), [clear_cookie().as_str()], "{s:?}");
        // The client dropped the cookie: stable, nothing more to clear.
        let s = Seen::send(l, &read(k, None));
        assert!(s.served_by("stable") && s.reason == "guard", "{s:?}");
        assert!(s.flow_set_cookies().is_empty(), "{s:?}");
    }
    let lines = t.trip_lines();
    let want = format!(
        "; {n} flow(s) draining on canary in this Envoy move to stable at once (guard.flows move)"
    );
    assert!(!lines.is_empty(), "no trip line:\n{}", t.envoy.log());
    for line in &lines {
        assert!(line.ends_with(&want), "{line}\nwant the end: {want}");
    }
    let sc = t.envoy.scrape();
    assert_eq!(
        draining(&sc, "canary"),
        Some(0.0),
        "the cleared flows no longer drain"
    );
    assert_eq!(outcomes(&sc), [n as f64, 0.0, 0.0]);
    assert_eq!(requests(&sc, "canary", "flow"), 0.0);
    eprintln!("guard.flows move: tripped {took:?} after the trip traffic began; {n} flows moved and cleared; {}", lines[0]);
}

// ---------------------------------------------------------------------------------------------
// 4. Forged, expired and retired cookies.

/// Long enough that no genuine cookie of this scenario expires during it.
const DRAIN_FORGED: u64 = 120;
/// The QA override's token.
const QA_TOKEN: &str = "qa-0123456789abcdef-flows";

/// `value` with the byte at `i` replaced by `by`.
fn with_byte(value: &str, i: usize, by: u8) -> String {
    let mut b = value.as_bytes().to_vec();
    assert_ne!(b[i], by);
    b[i] = by;
    String::from_utf8(b).unwrap()
}

/// Canary, canary2 and stable; flows started on canary and canary2; then every weight on stable,
/// so that a cookie's version and the session's own decision differ. Each forged, foreign,
/// malformed, key-less, expired or retired cookie is decided as if absent (stable, reason `hash`,
/// or `default` without a key), sets or clears nothing, and is counted with the right outcome;
/// the genuine cookie still works, and a pin and the override still win over it (the cookie is
/// then not read, so not counted).
#[test]
fn forged_expired_and_retired_cookies_gain_nothing() {
    let plugin = |versions: &[(&str, u32)]| {
        let mut p = shipped_plugin(versions, DRAIN_FORGED, FLUSH_MS);
        p["pins"] =
            json!([{"header": "x-merchant-id", "values": ["m_pinned"], "version": "stable"}]);
        p["override"] = json!({"tokens": [QA_TOKEN]});
        p.to_string()
    };
    let three = plugin(&[("canary", 30), ("canary2", 30), ("stable", 40)]);
    let plan = keyed_plan(&three);
    let upstreams = upstreams_for(&plan, echo_handler);
    let pairs = addresses(&upstreams);
    let envoy = Envoy::start_dynamic(&envoy_config(&three, &pairs, "stable"))
        .unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    let l = envoy.listener();
    let a = keys_for(&plan, "canary", 1, 401).remove(0);
    let b = keys_for(&plan, "canary2", 1, 402).remove(0);
    let other = keys_for(&plan, "stable", 1, 403).remove(0);
    let s = Seen::send(l, &write(&a));
    let ca = check_started(&plan, &a, "canary", DRAIN_FORGED, &s);
    let s = Seen::send(l, &write(&b));
    let cb = check_started(&plan, &b, "canary2", DRAIN_FORGED, &s);

    // Every weight on stable, every version still listed.
    let all_stable = plugin(&[("canary", 0), ("canary2", 0), ("stable", 100)]);
    envoy
        .reload(&envoy_config(&all_stable, &pairs, "stable"))
        .unwrap_or_else(|e| panic!("{e}"));
    let before = envoy.scrape();

    // The genuine cookies work.
    for (k, c) in [(&a, &ca), (&b, &cb)] {
        let s = Seen::send(l, &read(k, Some(c)));
        assert!(s.served_by(&c.version) && s.reason == "flow", "{k}: {s:?}");
    }
    let mut valid = 2;
    // A pin and the override win over a valid cookie; the cookie is not even read (not
    // counted), and nothing is cleared: the flow goes on afterwards.
    let explicit = [
        (
            read(&a, Some(&ca)).header("x-merchant-id", "m_pinned"),
            "pin",
        ),
        (
            read(&a, Some(&ca))
                .header("x-canary-override", "stable")
                .header("x-canary-token", QA_TOKEN),
            "override",
        ),
    ];
    for (req, why) in explicit {
        let s = Seen::send(l, &req);
        assert!(s.served_by("stable") && s.reason == why, "{why}: {s:?}");
        assert!(s.flow_set_cookies().is_empty(), "{why}: {s:?}");
    }
    let explicit_counted: Vec<f64> = outcomes(&envoy.scrape())
        .iter()
        .zip(outcomes(&before))
        .map(|(x, y)| x - y)
        .collect();
    assert_eq!(
        explicit_counted,
        [f64::from(valid), 0.0, 0.0],
        "a pin or override decides before the cookie is read"
    );

    let v = ca.value();
    let (version_at, expiry_at, mac_at) = (0, "canary.".len() + 2, v.len() - 7);
    let flip_hex = |c: u8| if c == b'0' { b'1' } else { b'0' };
    let now = unix_now() as u64;
    // (session, cookie value, outcome, what it is)
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            &a,
            with_byte(&v, version_at, b'd'),
            "invalid",
            "a flipped byte in the version",
        ),
        (
            &a,
            with_byte(
                &v,
                expiry_at,
                if v.as_bytes()[expiry_at] == b'9' {
                    b'8'
                } else {
                    b'9'
                },
            ),
            "invalid",
            "a flipped digit in the expiry",
        ),
        (
            &a,
            with_byte(&v, mac_at, flip_hex(v.as_bytes()[mac_at])),
            "invalid",
            "a flipped digit in the MAC",
        ),
        (
            &a,
            with_byte(&v, v.len() - 1, b'G'),
            "invalid",
            "a non-hex MAC",
        ),
        (
            &a,
            v.replacen("canary", "canary2", 1),
            "invalid",
            "another version with canary's MAC",
        ),
        (&other, v.clone(), "invalid", "another session's cookie"),
        (
            &a,
            cb.value(),
            "invalid",
            "another session's cookie (for canary2)",
        ),
        (
            &a,
            "canary.9999999999.".to_string() + &"0".repeat(64),
            "invalid",
            "a made-up MAC",
        ),
        (&a, "garbage".to_string(), "invalid", "malformed"),
        (
            &a,
            FlowCookie::parse(&sign(&plan, &a, "canary", now - DRAIN_FORGED - 5))
                .unwrap()
                .value(),
            "expired",
            "an expired cookie (signed with the key, expiry 5 s ago)",
        ),
        (
            &a,
            FlowCookie::parse(&sign(&plan, &a, "canary", now + 60))
                .unwrap()
                .value(),
            "expired",
            "a cookie signed with the key expiring beyond drain_seconds + 30 s of clock skew",
        ),
    ];
    let mut want = [0.0f64; 3];
    for (k, value, outcome, what) in &cases {
        let req = session_request("GET", "/cart", k, Some(value));
        let s = Seen::send(l, &req);
        assert!(s.served_by("stable") && s.reason == "hash", "{what}: {s:?}");
        assert!(s.flow_set_cookies().is_empty(), "{what}: {s:?}");
        want[if *outcome == "invalid" { 1 } else { 2 }] += 1.0;
    }
    // A flow cookie without a session key binds nothing: default, counted invalid.
    let s = Seen::send(
        l,
        &Request::get("/cart").header("cookie", &format!("{FLOW}={v}")),
    );
    assert!(
        s.served_by("stable") && s.reason == "default",
        "no key: {s:?}"
    );
    want[1] += 1.0;
    // The genuine cookie of `a` is still good after all that.
    assert_eq!(
        Seen::send(l, &read(&a, Some(&ca))).decided(),
        ("canary", "flow")
    );
    valid += 1;

    // canary2 removed from the config: its flow is over (counted expired), decided as without.
    let two = plugin(&[("canary", 0), ("stable", 100)]);
    envoy
        .reload(&envoy_config(&two, &pairs, "stable"))
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Seen::send(l, &read(&b, Some(&cb)));
    assert!(
        s.served_by("stable") && s.reason == "hash",
        "retired canary2: {s:?}"
    );
    assert!(s.flow_set_cookies().is_empty(), "{s:?}");
    want[2] += 1.0;
    assert_eq!(
        Seen::send(l, &read(&a, Some(&ca))).decided(),
        ("canary", "flow")
    );
    valid += 1;

    let after = envoy.scrape();
    let delta: Vec<f64> = outcomes(&after)
        .iter()
        .zip(outcomes(&before))
        .map(|(x, y)| x - y)
        .collect();
    eprintln!(
        "forged: {} cases + 1 without a key + 1 retired version, {valid} genuine; counted \
         [valid, invalid, expired] {delta:?}; a pin and an override with a valid cookie counted \
         nothing",
        cases.len()
    );
    assert_eq!(
        delta,
        [f64::from(valid), want[1], want[2]],
        "[valid, invalid, expired]"
    );
}
