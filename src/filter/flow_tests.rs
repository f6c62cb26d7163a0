//! Flows finish where they started, against the in-memory host: the flow cookie a canary's
//! write sets, what a valid one decides through weights, holds and trips, what an invalid one
//! gains (nothing), the counters and the draining gauge, and what it costs in host calls.

use super::fake::FakeHost;
use super::tests::{config, cookie, Setup};
use super::{Level, Map, Root};
use crate::routing::decision::Reason;
use crate::routing::flow::Outcome;
use serde_json::{json, Value};

const KEY: &str = "a flow key of at least thirty-two bytes, for tests";
const NOW_MS: u64 = 1_800_000_000_000;

/// 50/50 with the hold, the flow cookie (60 s), a bucket header and a reason header; counters
/// go to the host at once (the draining gauge still moves on ticks).
fn flows(edit: impl FnOnce(&mut Value)) -> String {
    config(|c| {
        c["metrics_flush_ms"] = json!(0);
        c["bucket_header"] = json!("x-canary-bucket");
        c["session"]["hold"] = json!({"cookie": "sc_hold", "idle_seconds": 900,
            "flows": {"cookie": "sc_flow", "drain_seconds": 60, "key_env": "FLOW_KEY"}});
        edit(c);
    })
}

fn host(config: &str) -> FakeHost {
    let host = FakeHost::with_config(config);
    host.state().env.insert("FLOW_KEY".into(), KEY.into());
    host.state().now_ms = NOW_MS;
    host
}

fn setup(config: &str) -> Setup {
    Setup::new_on(host(config), config)
}

/// The `sc_flow` cookies the last response set.
fn flow_cookies(t: &Setup) -> Vec<String> {
    t.host
        .values(Map::Response, "set-cookie")
        .into_iter()
        .filter(|c| c.starts_with("sc_flow="))
        .collect()
}

/// `name=value` of a `Set-Cookie` line.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

fn reason(t: &Setup) -> Vec<String> {
    t.host.values(Map::Response, "x-canary-reason")
}

fn outcomes(t: &Setup) -> [i64; 3] {
    Outcome::ALL.map(|o| t.value(&t.names.flow_cookies[o.index()]))
}

/// A POST of `key`'s session served by `cluster`, with `status`; the flow cookie it set.
fn write(t: &Setup, key: &str, cluster: &str, status: &str) -> Vec<String> {
    let c = cookie(key);
    t.exchange(
        &[("cookie", &c), (":method", "POST")],
        Some(cluster),
        &[(":status", status)],
    );
    flow_cookies(t)
}

#[test]
fn a_write_served_by_a_canary_sets_the_cookie_and_nothing_else_does() {
    let t = setup(&flows(|_| {}));
    let key = t.key_for("canary");
    let set = write(&t, &key, "canary", "201");
    assert_eq!(set.len(), 1, "{set:?}");
    let expiry = NOW_MS / 1000 + 60;
    assert!(
        set[0].starts_with(&format!("sc_flow=canary.{expiry}.")),
        "{set:?}"
    );
    assert!(
        set[0].ends_with("; Max-Age=60; Path=/; Secure; HttpOnly; SameSite=Lax"),
        "{set:?}"
    );
    // A 4xx write continues a flow too; a 5xx, a read, a default-served write, a write without
    // a session key, and pins/overrides (they read no session key) start none.
    assert_eq!(write(&t, &key, "canary", "409").len(), 1);
    assert!(write(&t, &key, "canary", "503").is_empty());
    assert!(write(&t, &t.key_for("stable"), "stable", "201").is_empty());
    let c = cookie(&key);
    t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "200")]);
    assert!(flow_cookies(&t).is_empty());
    t.exchange(
        &[(":method", "POST")],
        Some("canary"),
        &[(":status", "200")],
    );
    assert!(flow_cookies(&t).is_empty());
    t.exchange(
        &[
            ("cookie", &c),
            (":method", "POST"),
            ("x-canary-override", "canary"),
            ("x-canary-token", "0123456789abcdef-qa"),
        ],
        Some("canary"),
        &[(":status", "200")],
    );
    assert!(flow_cookies(&t).is_empty());
    // Without `flows`: no flow cookie, no `flow` series, no flow counters.
    let plain = Setup::new(&config(|c| {
        c["session"]["hold"] = json!({"cookie": "sc_hold", "idle_seconds": 900});
    }));
    assert!(write(&plain, &plain.key_for("canary"), "canary", "201").is_empty());
    assert!(plain.names.flow_cookies.is_empty() && plain.names.flows_draining.is_empty());
    assert!(plain
        .names
        .request(0, Reason::Flow)
        .is_none_or(|_| unreachable!()));
}

#[test]
fn a_valid_cookie_keeps_its_flow_on_the_canary_whatever_the_weights_and_the_hold() {
    let t = setup(&flows(|_| {}));
    let key = t.key_for("canary");
    let flow = pair(&write(&t, &key, "canary", "201")[0]);
    let c = format!("{}; {flow}; sc_hold=1", cookie(&key));
    // Held and still on the canary: the flow wins over the hold, carries no bucket, and a read
    // does not refresh the cookie.
    t.host.begin(&[]);
    t.exchange(
        &[("cookie", &c), ("x-canary-bucket", "0001")],
        Some("canary"),
        &[(":status", "200")],
    );
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["canary"]);
    assert!(t.host.values(Map::Request, "x-canary-bucket").is_empty());
    assert_eq!(reason(&t), ["flow"]);
    assert!(flow_cookies(&t).is_empty());
    assert_eq!(t.requests("canary", Reason::Flow), 1);
    assert_eq!(outcomes(&t), [1, 0, 0]);

    // While its session is on the canary anyway (50/50 here, not held), a write refreshes the
    // cookie (60 s from now); held (the hold would send it to stable), it drains instead.
    t.host.state().now_ms = NOW_MS + 30_000;
    t.exchange(
        &[("cookie", &c), (":method", "PUT")],
        Some("canary"),
        &[(":status", "200")],
    );
    assert!(flow_cookies(&t).is_empty());
    let c = format!("{}; {flow}", cookie(&key));
    t.exchange(
        &[("cookie", &c), (":method", "PUT")],
        Some("canary"),
        &[(":status", "200")],
    );
    let refreshed = flow_cookies(&t);
    assert!(
        refreshed[0].starts_with(&format!("sc_flow=canary.{}.", NOW_MS / 1000 + 90)),
        "{refreshed:?}"
    );
    let refreshed = pair(&refreshed[0]);

    // The weights go to canary 0: the flow still reaches the canary until its cookie expires,
    // and it drains: a write no longer extends it, so `drain_seconds` bounds it.
    let zero = flows(|c| c["versions"][0]["weight"] = json!(0));
    let t = setup(&zero);
    t.host.state().now_ms = NOW_MS + 30_000;
    let c = format!("{}; {flow}", cookie(&key));
    t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "200")]);
    assert_eq!(reason(&t), ["flow"]);
    t.exchange(
        &[("cookie", &c), (":method", "PUT")],
        Some("canary"),
        &[(":status", "200")],
    );
    assert_eq!(reason(&t), ["flow"]);
    assert!(flow_cookies(&t).is_empty());
    // Past the first cookie's expiry: stable, counted expired; the refreshed one still holds.
    t.host.state().now_ms = NOW_MS + 60_000;
    t.exchange(&[("cookie", &c)], Some("stable"), &[(":status", "200")]);
    assert_eq!(reason(&t), ["hash"]);
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
    let c2 = format!("{}; {refreshed}", cookie(&key));
    t.exchange(&[("cookie", &c2)], Some("canary"), &[(":status", "200")]);
    assert_eq!(reason(&t), ["flow"]);
    assert_eq!(outcomes(&t), [3, 0, 1]);
    // A session without a flow cookie moves at once.
    t.exchange(
        &[("cookie", &cookie(&key))],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(reason(&t), ["hash"]);
    // Override and pins still win over a flow.
    t.exchange(
        &[
            ("cookie", &c2),
            ("x-canary-override", "stable"),
            ("x-canary-token", "0123456789abcdef-qa"),
        ],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(reason(&t), ["override"]);
}

#[test]
fn a_cookie_that_is_not_valid_gains_nothing_and_is_counted() {
    let t = setup(&flows(|c| {
        c["versions"] = json!([{"name": "canary", "weight": 0}, {"name": "canary2", "weight": 0},
                               {"name": "stable", "weight": 100}]);
    }));
    let key = t.key_for("stable");
    let other = "another-session";
    let flow = pair(&write(&t, &key, "canary", "201")[0]);
    let retired = pair(&write(&t, &key, "canary2", "201")[0]);
    let others = pair(&write(&t, other, "canary", "201")[0]);
    let value = flow.strip_prefix("sc_flow=").unwrap();
    let mut flipped = value.as_bytes().to_vec();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = format!("sc_flow={}", String::from_utf8(flipped).unwrap());
    let without = Setup::new_on(
        host(&flows(|c| {
            c["versions"] = json!([{"name": "canary", "weight": 0},
                                   {"name": "stable", "weight": 100}]);
        })),
        &flows(|_| {}),
    );
    let t = without;
    let cases = [
        (flipped, [0, 1, 0]),
        (others, [0, 2, 0]),
        ("sc_flow=canary.1.00".to_string(), [0, 3, 0]),
        ("sc_flow=".to_string(), [0, 3, 0]),
        (retired, [0, 3, 1]),
    ];
    for (flow_cookie, counted) in cases {
        t.exchange(
            &[("cookie", &format!("{}; {flow_cookie}", cookie(&key)))],
            Some("stable"),
            &[(":status", "200")],
        );
        assert_eq!(reason(&t), ["hash"], "{flow_cookie}");
        assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
        assert_eq!(outcomes(&t), counted, "{flow_cookie}");
    }
    // Expired.
    t.host.state().now_ms = NOW_MS + 61_000;
    t.exchange(
        &[("cookie", &format!("{}; {flow}", cookie(&key)))],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(reason(&t), ["hash"]);
    assert_eq!(outcomes(&t), [0, 3, 2]);
    // A flow cookie without a session key binds nothing.
    t.host.state().now_ms = NOW_MS;
    t.exchange(&[("cookie", &flow)], Some("stable"), &[(":status", "200")]);
    assert_eq!(reason(&t), ["default"]);
    assert_eq!(outcomes(&t), [0, 4, 2]);
}

/// Trips `canary`: 40 canary 5xx against 100 stable 2xx, one tick.
fn trip(t: &Setup) {
    for (version, n, status) in [("stable", 100, "200"), ("canary", 40, "503")] {
        let c = cookie(&t.key_for(version));
        for _ in 0..n {
            t.exchange(&[("cookie", &c)], Some(version), &[(":status", status)]);
        }
    }
    t.root.on_tick();
    assert_eq!(t.value(&t.names.guard_tripped[t.version("canary")]), 1);
}

fn guarded(on_trip: Option<&str>) -> String {
    flows(|c| {
        c["guard"] = json!({"baseline": "stable", "min_samples": 20,
                            "checks": [{"error_ratio": {"max_points": 1.0}}]});
        if let Some(f) = on_trip {
            c["guard"]["flows"] = json!(f);
        }
    })
}

#[test]
fn a_trip_lets_flows_finish_or_moves_them_as_guard_flows_says() {
    let t = setup(&guarded(None));
    let key = t.key_for("canary");
    let flow = pair(&write(&t, &key, "canary", "201")[0]);
    write(&t, "another-canary-flow", "canary", "201");
    t.root.on_tick();
    assert_eq!(t.value(&t.names.flows_draining[t.version("canary")]), 2);
    trip(&t);
    let line = t.warn_line("guard tripped canary");
    assert!(
        line.contains("2 flow(s) draining on canary in this Envoy finish there"),
        "{line}"
    );
    // The flow finishes on the canary; the same session without the cookie goes to stable.
    let c = format!("{}; {flow}", cookie(&key));
    t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "200")]);
    assert_eq!(
        (reason(&t), t.host.values(Map::Request, "x-canary-version")),
        (vec!["flow".to_string()], vec!["canary".to_string()])
    );
    t.exchange(
        &[("cookie", &cookie(&key))],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(reason(&t), ["guard"]);
    // A draining flow's write does not extend it: the trip bounds it by `drain_seconds`.
    t.exchange(
        &[("cookie", &c), (":method", "POST")],
        Some("canary"),
        &[(":status", "201")],
    );
    assert_eq!(reason(&t), ["flow"]);
    assert!(flow_cookies(&t).is_empty());
    // Until the cookies expire: the gauge falls to 0 on the tick after.
    t.host.state().now_ms = NOW_MS + 60_000;
    t.exchange(&[("cookie", &c)], Some("stable"), &[(":status", "200")]);
    assert_eq!(reason(&t), ["guard"]);
    t.root.on_tick();
    assert_eq!(t.value(&t.names.flows_draining[t.version("canary")]), 0);

    // `move`: zero-kill; the moved flow's cookie is cleared.
    let t = setup(&guarded(Some("move")));
    let flow = pair(&write(&t, &key, "canary", "201")[0]);
    t.root.on_tick();
    trip(&t);
    let line = t.warn_line("guard tripped canary");
    assert!(
        line.contains("1 flow(s) draining on canary in this Envoy move to stable at once"),
        "{line}"
    );
    let c = format!("{}; {flow}", cookie(&key));
    t.exchange(&[("cookie", &c)], Some("stable"), &[(":status", "200")]);
    assert_eq!(reason(&t), ["guard"]);
    assert_eq!(
        flow_cookies(&t),
        ["sc_flow=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"]
    );
    assert_eq!(outcomes(&t), [1, 0, 0]);
    t.root.on_tick();
    assert_eq!(t.value(&t.names.flows_draining[t.version("canary")]), 0);
}

#[test]
fn two_workers_add_up_in_the_draining_gauge_and_a_reconfiguration_keeps_it() {
    let config = flows(|_| {});
    let t = setup(&config);
    let mut second = Root::new(t.host.clone());
    assert!(second.on_configure());
    write(&t, &t.key_for("canary"), "canary", "201");
    t.root.on_tick();
    // The other worker's flow.
    t.host
        .begin(&[("cookie", "session_id=w2"), (":method", "POST")]);
    let mut s = second.stream();
    s.on_request_headers();
    t.host.respond(Some("canary"), &[(":status", "201")]);
    s.on_response_headers(true);
    second.on_tick();
    let gauge = t.names.flows_draining[t.version("canary")].name.clone();
    let host = t.host.clone();
    let draining = || host.metric(&gauge).unwrap().value;
    assert_eq!(draining(), 2);
    // A new configuration of the first worker keeps its flow; the second's retirement takes its
    // own away.
    let mut first = t.root;
    assert!(first.on_configure());
    assert_eq!(draining(), 1, "the old plan's share is handed back");
    first.on_tick();
    assert_eq!(draining(), 2);
    assert!(second.on_done());
    assert_eq!(draining(), 1);
    // A new plugin instance (a new root, as Envoy makes for a changed listener) starts with
    // nothing tracked, and learns a flow from its next request with a valid cookie.
    let writer = Setup::new_on(host.clone(), &config);
    let flow = pair(&write(&writer, "w3", "canary", "201")[0]);
    let mut third = Root::new(host.clone());
    assert!(third.on_configure());
    third.on_tick();
    assert_eq!(draining(), 1);
    host.begin(&[("cookie", &format!("session_id=w3; {flow}"))]);
    let mut s = third.stream();
    s.on_request_headers();
    host.respond(Some("canary"), &[(":status", "200")]);
    s.on_response_headers(true);
    third.on_tick();
    assert_eq!(draining(), 2);
}

#[test]
fn the_key_is_required_and_never_logged() {
    let config = flows(|_| {});
    for key in [None, Some("too short: 31 bytes of key.....")] {
        let host = FakeHost::with_config(&config);
        if let Some(k) = key {
            host.state().env.insert("FLOW_KEY".into(), k.into());
        }
        let mut root = Root::new(host.clone());
        assert!(!root.on_configure());
        let errors = host.logs(Level::Error);
        assert!(
            errors.len() == 1 && errors[0].contains("session.hold.flows.key_env"),
            "{errors:?}"
        );
        if let Some(k) = key {
            assert!(!errors[0].contains(k), "{errors:?}");
        }
    }
    let t = setup(&config);
    let logs = t.host.state().logs.clone();
    assert!(logs.iter().all(|(_, l)| !l.contains(KEY)), "{logs:?}");
    assert!(
        t.host
            .logs(Level::Info)
            .iter()
            .any(|l| l.contains(" flows=sc_flow:60s")),
        "{logs:?}"
    );
}

#[test]
fn flows_add_no_host_call_to_a_request_without_the_cookie() {
    let with = setup(&flows(|_| {}));
    let without = Setup::new(&config(|c| {
        c["metrics_flush_ms"] = json!(0);
        c["bucket_header"] = json!("x-canary-bucket");
        c["session"]["hold"] = json!({"cookie": "sc_hold", "idle_seconds": 900});
    }));
    let calls = |t: &Setup| {
        let c = cookie(&t.key_for("stable"));
        let before = t.host.call_count();
        for method in ["GET", "POST"] {
            t.exchange(
                &[("cookie", &c), (":method", method)],
                Some("stable"),
                &[(":status", "200")],
            );
        }
        t.host.call_count() - before
    };
    assert_eq!(calls(&with), calls(&without));
    // The clock is read only for a cookie to check or to sign.
    assert_eq!(with.host.calls_of("now_ms"), 0);
    write(&with, &with.key_for("canary"), "canary", "201");
    assert_eq!(with.host.calls_of("now_ms"), 1);
}
