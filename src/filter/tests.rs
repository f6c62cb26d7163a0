//! The filter's logic against the in-memory host: what only an e2e run under Envoy could show
//! before (flushes, retirement, streams outliving their root, body bounds, write failures).

use super::fake::FakeHost;
use super::{Level, Map, Root, Stream};
use crate::counting::business::SkipReason;
use crate::metrics::{Catalogue, MetricName};
use crate::plan::Plan;
use crate::routing::decision::Reason;
use serde_json::{json, Value};

/// A 50/50 plan with a cookie source, an override, a reason header, an assigned cookie and
/// business rules (header counter, header sum, JSON counter).
pub(super) fn config(edit: impl FnOnce(&mut Value)) -> String {
    let mut c = json!({
        "service": "checkout",
        "versions": [{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}],
        "default_version": "stable",
        "session": {"sources": [{"cookie": "session_id"}]},
        "reason_header": "x-canary-reason",
        "override": {"tokens": ["0123456789abcdef-qa"]},
        "business_metrics": [
            {"name": "orders", "kind": "counter", "header": "x-order-id"},
            {"name": "order_value", "kind": "sum", "header": "x-order-total", "scale": 2},
            {"name": "auth_approved", "kind": "counter", "json": "/authorization/status",
             "equals": "approved"}
        ],
        "max_body_bytes": 64
    });
    edit(&mut c);
    c.to_string()
}

pub(super) struct Setup {
    pub(super) host: FakeHost,
    pub(super) root: Root<FakeHost>,
    pub(super) plan: Plan,
    pub(super) names: Catalogue<MetricName>,
}

impl Setup {
    pub(super) fn new(config: &str) -> Setup {
        Setup::new_on(FakeHost::with_config(config), config)
    }

    /// [`Setup::new`] on a host prepared by the test (clock, environment, randomness).
    pub(super) fn new_on(host: FakeHost, config: &str) -> Setup {
        let mut root = Root::new(host.clone());
        assert!(root.on_vm_start());
        assert!(root.on_configure(), "{:?}", host.logs(Level::Error));
        let plan = Plan::from_json(config.as_bytes()).unwrap();
        let names = Catalogue::for_plan(&plan);
        Setup {
            host,
            root,
            plan,
            names,
        }
    }

    pub(super) fn version(&self, name: &str) -> usize {
        self.plan
            .versions
            .iter()
            .position(|v| v.name == name)
            .unwrap()
    }

    /// A session key the plan sends to `version`.
    pub(super) fn key_for(&self, version: &str) -> String {
        let v = self.version(version);
        (0..)
            .map(|i| format!("session-{i}"))
            .find(|k| self.plan.bucket(k.as_bytes()) == v)
            .unwrap()
    }

    pub(super) fn value(&self, name: &MetricName) -> i64 {
        self.host
            .metric(&name.name)
            .unwrap_or_else(|| panic!("{} is not defined", name.name))
            .value
    }

    pub(super) fn requests(&self, version: &str, reason: Reason) -> i64 {
        self.value(self.names.request(self.version(version), reason).unwrap())
    }

    pub(super) fn responses(&self, version: &str, status: u16) -> i64 {
        self.value(self.names.response(self.version(version), status).unwrap())
    }

    pub(super) fn business(&self, version: &str, rule: usize) -> i64 {
        self.value(self.names.business(self.version(version), rule).unwrap())
    }

    pub(super) fn squares(&self, version: &str, rule: usize) -> i64 {
        self.value(self.names.squares(self.version(version), rule).unwrap())
    }

    pub(super) fn skipped(&self, version: &str, reason: SkipReason) -> i64 {
        self.value(self.names.skipped(self.version(version), reason).unwrap())
    }

    /// The first warn line containing `needle`.
    pub(super) fn warn_line(&self, needle: &str) -> String {
        let warns = self.host.logs(Level::Warn);
        warns
            .into_iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no warn line with {needle:?}"))
    }

    /// Request headers in, a stream that has decided.
    pub(super) fn request(&self, headers: &[(&str, &str)]) -> Stream<FakeHost> {
        self.host.begin(headers);
        let mut s = self.root.stream();
        s.on_request_headers();
        s
    }

    /// A whole exchange without a body: request, response headers from `cluster`, end.
    pub(super) fn exchange(
        &self,
        request: &[(&str, &str)],
        cluster: Option<&str>,
        response: &[(&str, &str)],
    ) -> Stream<FakeHost> {
        let mut s = self.request(request);
        self.host.respond(cluster, response);
        s.on_response_headers(true);
        s.on_log();
        s
    }

    pub(super) fn body(&self, s: &mut Stream<FakeHost>, chunk: &[u8], end: bool) {
        self.host.state().chunk = chunk.to_vec();
        s.on_response_body(chunk.len(), end);
    }
}

pub(super) fn cookie(key: &str) -> String {
    format!("session_id={key}")
}

#[test]
fn decision_goes_upstream_and_onto_the_response() {
    let t = Setup::new(&config(|_| {}));
    let key = t.key_for("canary");
    let c = cookie(&key);
    let mut s = t.request(&[
        ("cookie", &c),
        ("x-canary-version", "stable"),
        ("x-canary-override", "stable"),
        ("x-canary-token", "wrong-token-0123456789"),
    ]);
    // The client's route header is replaced, the override headers never reach the upstream.
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["canary"]);
    assert!(t.host.values(Map::Request, "x-canary-override").is_empty());
    assert!(t.host.values(Map::Request, "x-canary-token").is_empty());
    t.host.respond(Some("canary"), &[(":status", "200")]);
    s.on_response_headers(true);
    assert_eq!(t.host.values(Map::Response, "x-canary-version"), ["canary"]);
    assert_eq!(t.host.values(Map::Response, "x-canary-reason"), ["hash"]);
    assert!(t.host.values(Map::Response, "set-cookie").is_empty());
}

#[test]
fn a_valid_override_wins_and_is_stripped() {
    let t = Setup::new(&config(|_| {}));
    let c = cookie(&t.key_for("stable"));
    t.exchange(
        &[
            ("cookie", &c),
            ("x-canary-override", "canary"),
            ("x-canary-token", "0123456789abcdef-qa"),
        ],
        Some("canary"),
        &[(":status", "200")],
    );
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["canary"]);
    assert!(t.host.values(Map::Request, "x-canary-token").is_empty());
    assert_eq!(
        t.host.values(Map::Response, "x-canary-reason"),
        ["override"]
    );
    t.root.on_tick();
    assert_eq!(t.requests("canary", Reason::Override), 1);
}

#[test]
fn a_minted_session_reaches_the_upstream_and_the_client() {
    let t = Setup::new(&config(|c| {
        c["session"]["assign_cookie"] = json!({"name": "sc_session"});
    }));
    t.host.state().random = Some([0xab; 16]);
    let id = "ab".repeat(16);
    let want = t
        .plan
        .version_name(t.plan.bucket(id.as_bytes()))
        .to_string();
    let mut s = t.request(&[("cookie", "theme=dark")]);
    // The application sees the id as if the client had sent it, next to the client's cookies.
    let upstream = t.host.values(Map::Request, "cookie").join("; ");
    assert!(upstream.contains(&format!("sc_session={id}")), "{upstream}");
    assert!(upstream.contains("theme=dark"), "{upstream}");
    assert_eq!(
        t.host.values(Map::Request, "x-canary-version"),
        [want.as_str()]
    );
    t.host.respond(Some(want.as_str()), &[(":status", "200")]);
    s.on_response_headers(true);
    let set_cookie = t.host.values(Map::Response, "set-cookie");
    assert_eq!(set_cookie.len(), 1);
    assert!(
        set_cookie[0].starts_with(&format!("sc_session={id}")),
        "{set_cookie:?}"
    );
    assert_eq!(
        t.host.values(Map::Response, "x-canary-reason"),
        ["assigned"]
    );
}

#[test]
fn no_randomness_means_the_default_version_and_a_warning() {
    let t = Setup::new(&config(|c| {
        c["session"]["assign_cookie"] = json!({"name": "sc_session"});
    }));
    t.host.fail("random_id");
    t.exchange(&[], Some("stable"), &[(":status", "200")]);
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
    assert_eq!(t.host.values(Map::Response, "x-canary-reason"), ["default"]);
    assert!(t.host.values(Map::Response, "set-cookie").is_empty());
    let warnings = t.host.logs(Level::Warn);
    assert!(
        warnings.iter().any(|w| w.contains("no randomness")),
        "{warnings:?}"
    );
}

#[test]
fn responses_are_attributed_to_the_cluster_that_served_them() {
    let t = Setup::new(&config(|_| {}));
    let c = cookie(&t.key_for("canary"));
    let canary_cohort = [("cookie", c.as_str())];
    // A controller routed the canary cohort to stable: stable served it.
    t.exchange(&canary_cohort, Some("stable"), &[(":status", "503")]);
    assert_eq!(t.host.values(Map::Response, "x-canary-version"), ["stable"]);
    // Istio subset clusters name the version too.
    t.exchange(
        &canary_cohort,
        Some("outbound|8080|canary|checkout.shop.svc.cluster.local"),
        &[(":status", "200")],
    );
    assert_eq!(t.host.values(Map::Response, "x-canary-version"), ["canary"]);
    // An unknown cluster, no cluster (local reply) or a failed read: the decision's version.
    t.exchange(&canary_cohort, Some("payments"), &[(":status", "200")]);
    t.exchange(&canary_cohort, None, &[(":status", "404")]);
    t.host.fail("cluster_name");
    t.exchange(&canary_cohort, Some("stable"), &[(":status", "200")]);
    assert_eq!(t.host.values(Map::Response, "x-canary-version"), ["canary"]);
    t.root.on_tick();
    assert_eq!(t.requests("canary", Reason::Hash), 5);
    assert_eq!(t.responses("stable", 503), 1);
    assert_eq!(t.responses("canary", 200), 3);
    assert_eq!(t.responses("canary", 404), 1);
    assert_eq!(t.responses("stable", 200), 0);
}

#[test]
fn attribution_by_the_routes_response_header_reads_it_and_writes_nothing() {
    // Routing only (single header reads) and with header rules (one map read).
    for rules in [
        json!([]),
        json!([{"name": "orders", "kind": "counter", "header": "x-order-id"}]),
    ] {
        let t = Setup::new(&config(|c| {
            c["attribution"] = json!("response_header");
            c["business_metrics"] = rules.clone();
            c.as_object_mut().unwrap().remove("override");
            c.as_object_mut().unwrap().remove("reason_header");
        }));
        let c = cookie(&t.key_for("canary"));
        let canary_cohort = [("cookie", c.as_str())];
        let count = |cluster: Option<&str>, response: &[(&str, &str)]| {
            let before = t.host.call_count();
            let (clusters, writes) = (
                t.host.calls_of("cluster_name"),
                t.host.calls_of("set_header"),
            );
            t.exchange(&canary_cohort, cluster, response);
            (
                t.host.call_count() - before,
                t.host.calls_of("cluster_name") - clusters,
                t.host.calls_of("set_header") - writes,
            )
        };
        // The route to stable named stable (a controller sent the canary cohort there): the
        // header is believed, the cluster is not read, the tag is not rewritten.
        let (calls, clusters, writes) = count(
            Some("canary"),
            &[(":status", "200"), ("x-canary-version", "stable")],
        );
        assert_eq!(
            (clusters, writes),
            (0, 1),
            "only the route header write: {rules}"
        );
        assert_eq!(t.host.values(Map::Response, "x-canary-version"), ["stable"]);
        // cookie, :method, route header; (tag + :status + attempt count) or one map read,
        // filter state: two fewer than attribution by cluster.
        assert_eq!(
            calls,
            if rules.as_array().unwrap().is_empty() {
                7
            } else {
                5
            },
            "{rules}"
        );
        // No header, or a value that names no version (the upstream's own): the cluster decides
        // and the tag is written over it.
        for response in [
            vec![(":status", "200")],
            vec![(":status", "200"), ("x-canary-version", "v9")],
        ] {
            let (_, clusters, writes) = count(Some("canary"), &response);
            assert_eq!((clusters, writes), (1, 2), "{response:?}");
            assert_eq!(t.host.values(Map::Response, "x-canary-version"), ["canary"]);
        }
        t.root.on_tick();
        assert_eq!(t.responses("stable", 200), 1);
        assert_eq!(t.responses("canary", 200), 2);
    }
}

#[test]
fn counters_are_batched_until_the_tick() {
    let t = Setup::new(&config(|_| {}));
    assert_eq!(t.host.state().tick_ms, Some(1000));
    let c = cookie(&t.key_for("canary"));
    let before = t.host.calls_of("increment_metric");
    for i in 0..10 {
        let id = format!("order-{i}");
        t.exchange(
            &[("cookie", &c)],
            Some("canary"),
            &[
                (":status", "200"),
                ("x-order-id", &id),
                ("x-order-total", "19.99"),
            ],
        );
    }
    assert_eq!(
        t.host.calls_of("increment_metric"),
        before,
        "nothing reaches the host yet"
    );
    assert_eq!(t.requests("canary", Reason::Hash), 0);
    t.root.on_tick();
    assert_eq!(t.requests("canary", Reason::Hash), 10);
    assert_eq!(t.responses("canary", 200), 10);
    assert_eq!(t.business("canary", 0), 10);
    assert_eq!(t.business("canary", 1), 19990);
    assert_eq!(t.squares("canary", 1), 10 * 1999 * 1999);
    // One host call per series that moved (requests, responses, orders, sum, squares).
    assert_eq!(t.host.calls_of("increment_metric") - before, 5);
    // A tick with nothing pending makes no call.
    t.root.on_tick();
    assert_eq!(t.host.calls_of("increment_metric") - before, 5);
}

#[test]
fn flush_interval_zero_counts_every_request_at_once() {
    let t = Setup::new(&config(|c| c["metrics_flush_ms"] = json!(0)));
    assert_eq!(t.host.state().tick_ms, Some(0));
    t.exchange(&[], Some("stable"), &[(":status", "200")]);
    assert_eq!(t.requests("stable", Reason::Default), 1);
    assert_eq!(t.responses("stable", 200), 1);
}

#[test]
fn without_a_timer_counters_go_straight_to_the_host() {
    let host = FakeHost::with_config(&config(|_| {}));
    host.fail("set_tick_period");
    let mut root = Root::new(host.clone());
    assert!(root.on_configure());
    assert!(host
        .logs(Level::Warn)
        .iter()
        .any(|w| w.contains("no timer")));
    let t = Setup {
        names: Catalogue::for_plan(&Plan::from_json(config(|_| {}).as_bytes()).unwrap()),
        plan: Plan::from_json(config(|_| {}).as_bytes()).unwrap(),
        host,
        root,
    };
    t.exchange(&[], Some("stable"), &[(":status", "200")]);
    assert_eq!(t.requests("stable", Reason::Default), 1);
}

#[test]
fn on_done_flushes_and_streams_outliving_the_root_count_directly() {
    let t = Setup::new(&config(|_| {}));
    // In flight when the root goes: decided, no response yet.
    let mut late = t.request(&[]);
    t.exchange(&[], Some("stable"), &[(":status", "200")]);
    assert_eq!(t.requests("stable", Reason::Default), 0, "batched");
    assert!(t.root.on_done());
    assert_eq!(t.requests("stable", Reason::Default), 2, "flushed on done");
    assert_eq!(t.responses("stable", 200), 1);
    // No tick comes any more: the draining stream counts on its own.
    t.host
        .respond(Some("stable"), &[(":status", "200"), ("x-order-id", "o-1")]);
    late.on_response_headers(true);
    late.on_log();
    assert_eq!(t.responses("stable", 200), 2);
    assert_eq!(t.business("stable", 0), 1);
}

#[test]
fn a_new_configuration_retires_the_previous_plan() {
    let mut t = Setup::new(&config(|_| {}));
    let mut old_stream = t.request(&[]);
    t.exchange(&[], Some("stable"), &[(":status", "200")]);
    // Weights change; the same metric names are found again.
    t.host.state().config = config(|c| {
        c["versions"] = json!([{"name": "canary", "weight": 20}, {"name": "stable", "weight": 80}]);
    })
    .into_bytes();
    assert!(t.root.on_configure());
    assert_eq!(
        t.requests("stable", Reason::Default),
        2,
        "the old plan's tally was handed over"
    );
    assert_eq!(t.value(&t.names.weight[t.version("canary")]), 20);
    // A stream of the old plan finishes after the switch: counted at once, not lost.
    t.host.respond(Some("stable"), &[(":status", "500")]);
    old_stream.on_response_headers(true);
    assert_eq!(t.responses("stable", 500), 1);
    // The new plan batches again.
    t.exchange(&[], Some("stable"), &[(":status", "500")]);
    assert_eq!(t.responses("stable", 500), 1);
    t.root.on_tick();
    assert_eq!(t.responses("stable", 500), 2);
    t.plan = Plan::from_json(&t.host.state().config.clone()).unwrap();
}

#[test]
fn json_bodies_are_copied_across_chunks_and_read_at_the_end() {
    let t = Setup::new(&config(|c| c["metrics_flush_ms"] = json!(0)));
    let mut s = t.request(&[]);
    t.host.respond(
        Some("stable"),
        &[(":status", "200"), ("content-type", "application/json")],
    );
    s.on_response_headers(false);
    t.body(&mut s, br#"{"authorization": {"sta"#, false);
    assert_eq!(
        t.business("stable", 2),
        0,
        "not before the body is complete"
    );
    t.body(&mut s, br#"tus": "approved"}}"#, true);
    s.on_log();
    assert_eq!(t.business("stable", 2), 1);
    // Trailers end the body too.
    let mut s = t.request(&[]);
    t.host.respond(
        Some("stable"),
        &[(":status", "200"), ("content-type", "application/json")],
    );
    s.on_response_headers(false);
    t.body(
        &mut s,
        br#"{"authorization": {"status": "approved"}}"#,
        false,
    );
    s.on_response_trailers();
    assert_eq!(t.business("stable", 2), 2);
    // Malformed JSON is counted as such.
    let mut s = t.request(&[]);
    t.host.respond(
        Some("stable"),
        &[(":status", "200"), ("content-type", "application/json")],
    );
    s.on_response_headers(false);
    t.body(&mut s, br#"{"authorization": {"status": appr"#, true);
    assert_eq!(t.skipped("stable", SkipReason::Malformed), 1);
}

#[test]
fn the_copy_stops_once_every_json_rule_has_its_value() {
    let t = Setup::new(&config(|c| {
        c["metrics_flush_ms"] = json!(0);
        c["max_body_bytes"] = json!(1024);
        let rules = c["business_metrics"].as_array_mut().unwrap();
        rules.push(json!({"name": "tax", "kind": "sum", "json": "/tax", "scale": 0}));
        // Not for a 200: never waited for.
        rules.push(json!({"name": "refunds", "kind": "counter", "json": "/r", "status": [201]}));
    }));
    let json = [(":status", "200"), ("content-type", "application/json")];
    let start = || {
        let mut s = t.request(&[]);
        t.host.respond(Some("stable"), &json);
        s.on_response_headers(false);
        s
    };
    // Both values in the first chunk: applied at once, and nothing after it is copied, not even
    // a malformed tail or one past `max_body_bytes`.
    let mut s = start();
    t.body(
        &mut s,
        br#"{"tax": 5, "authorization": {"status": "approved"}"#,
        false,
    );
    assert_eq!((t.business("stable", 2), t.business("stable", 3)), (1, 5));
    let reads = t.host.calls_of("response_body");
    t.body(&mut s, b", oops", false);
    t.body(&mut s, &[b' '; 1024], true);
    s.on_log();
    assert_eq!(
        t.host.calls_of("response_body"),
        reads,
        "no copy after the values"
    );
    assert_eq!((t.business("stable", 2), t.business("stable", 3)), (1, 5));
    for reason in [
        SkipReason::Malformed,
        SkipReason::TooLarge,
        SkipReason::Incomplete,
    ] {
        assert_eq!(t.skipped("stable", reason), 0, "{reason:?}");
    }
    // A number at the end of a chunk may go on in the next one: `12` | `3,` is 123.
    let mut s = start();
    t.body(&mut s, br#"{"tax": 12"#, false);
    t.body(&mut s, br#"3, "authorization": {"status": "x"}, "#, false);
    assert_eq!(
        t.business("stable", 3),
        5,
        "not tried again before 80 bytes"
    );
    t.body(&mut s, &[b' '; 40], false);
    assert_eq!(t.business("stable", 3), 5 + 123);
    assert_eq!(t.business("stable", 2), 1, "declined: nothing to count");
    let reads = t.host.calls_of("response_body");
    t.body(&mut s, b"}", true);
    assert_eq!(t.host.calls_of("response_body"), reads);
    // Rules are tried again only when the copy has grown eightfold (at 30, 240 bytes here), and
    // no rule is applied until all have their values.
    let mut s = start();
    t.body(&mut s, format!("{:<30}", r#"{"tax": 1,"#).as_bytes(), false);
    t.body(&mut s, &[b' '; 30], false);
    t.body(&mut s, br#""authorization": {"status": "approved"}"#, false);
    t.body(&mut s, &[b' '; 140], false);
    assert_eq!(
        (t.business("stable", 2), t.business("stable", 3)),
        (1, 128),
        "complete at 99 bytes, not tried at 239"
    );
    t.body(&mut s, b",", false);
    assert_eq!((t.business("stable", 2), t.business("stable", 3)), (2, 129));
    let reads = t.host.calls_of("response_body");
    t.body(&mut s, b"}", true);
    assert_eq!(t.host.calls_of("response_body"), reads);
    // One value found, the other never: decided at the end exactly as before (here: the
    // body outgrows the bound, so no rule counts).
    let mut s = start();
    t.body(&mut s, br#"{"tax": 7, "pad": ""#, false);
    t.body(&mut s, &[b'x'; 1024], false);
    assert_eq!(t.skipped("stable", SkipReason::TooLarge), 1);
    s.on_log();
    assert_eq!((t.business("stable", 2), t.business("stable", 3)), (2, 129));
    // The body's last chunk: read once, at its end, as before.
    let mut s = start();
    t.body(&mut s, br#"{"tax": 2}"#, false);
    t.body(&mut s, b"", true);
    assert_eq!((t.business("stable", 2), t.business("stable", 3)), (2, 131));
}

#[test]
fn a_body_over_max_body_bytes_is_skipped_not_held() {
    let t = Setup::new(&config(|c| c["metrics_flush_ms"] = json!(0)));
    let json = [(":status", "200"), ("content-type", "application/json")];
    // Streamed without a length: the chunk that crosses the bound (64 bytes) ends the copy.
    let mut s = t.request(&[]);
    t.host.respond(Some("stable"), &json);
    s.on_response_headers(false);
    t.body(&mut s, &[b' '; 40], false);
    t.body(&mut s, &[b' '; 40], false);
    assert_eq!(t.skipped("stable", SkipReason::TooLarge), 1);
    let reads = t.host.calls_of("response_body");
    t.body(
        &mut s,
        br#"{"authorization": {"status": "approved"}}"#,
        true,
    );
    s.on_log();
    assert_eq!(
        t.host.calls_of("response_body"),
        reads,
        "no copy after the bound"
    );
    assert_eq!(t.business("stable", 2), 0);
    assert_eq!(t.skipped("stable", SkipReason::TooLarge), 1);
    assert_eq!(t.skipped("stable", SkipReason::Incomplete), 0);
    // A declared length over the bound is refused at the headers: the body is never read.
    let mut s = t.request(&[]);
    t.host.respond(
        Some("stable"),
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", "65"),
        ],
    );
    s.on_response_headers(false);
    t.body(&mut s, &[b' '; 65], true);
    assert_eq!(t.skipped("stable", SkipReason::TooLarge), 2);
    assert_eq!(t.host.calls_of("response_body"), reads);
    // Exactly at the bound is read.
    let body = format!("{:<64}", r#"{"authorization": {"status": "approved"}}"#);
    let mut s = t.request(&[]);
    t.host.respond(Some("stable"), &json);
    s.on_response_headers(false);
    t.body(&mut s, body.as_bytes(), true);
    assert_eq!(t.business("stable", 2), 1);
}

#[test]
fn bodies_that_cannot_be_read_are_counted() {
    let t = Setup::new(&config(|c| c["metrics_flush_ms"] = json!(0)));
    let respond = |headers: &[(&str, &str)]| {
        let mut s = t.request(&[]);
        t.host.respond(Some("canary"), headers);
        s.on_response_headers(false);
        s
    };
    respond(&[(":status", "200"), ("content-type", "text/html")]);
    respond(&[
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ]);
    assert_eq!(t.skipped("canary", SkipReason::NotJson), 1);
    assert_eq!(t.skipped("canary", SkipReason::Compressed), 1);
    // Reset mid-body: on_log without the end of the body.
    let json = [(":status", "200"), ("content-type", "application/json")];
    let mut s = respond(&json);
    t.body(&mut s, b"{\"authorization\":", false);
    s.on_log();
    assert_eq!(t.skipped("canary", SkipReason::Incomplete), 1);
    // The host cannot hand over a chunk.
    t.host.fail("response_body");
    let mut s = respond(&json);
    t.body(&mut s, b"{}", true);
    s.on_log();
    assert_eq!(t.skipped("canary", SkipReason::Incomplete), 2);
    // Header-only configs never look at bodies.
    let h = Setup::new(&config(|c| {
        c["business_metrics"] =
            json!([{"name": "orders", "kind": "counter", "header": "x-order-id"}]);
    }));
    let mut s = h.request(&[]);
    h.host.respond(Some("stable"), &json);
    s.on_response_headers(false);
    h.body(&mut s, b"{}", true);
    assert_eq!(h.host.calls_of("response_body"), 0);
}

#[test]
fn a_header_that_cannot_be_written_is_logged_and_the_request_goes_on() {
    let t = Setup::new(&config(|c| c["metrics_flush_ms"] = json!(0)));
    t.host.fail("set_header:x-canary-version");
    t.host.fail("remove_header:x-canary-token");
    t.exchange(
        &[("x-canary-token", "x")],
        Some("stable"),
        &[(":status", "200"), ("x-order-id", "o-9")],
    );
    let warnings = t.host.logs(Level::Warn);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("could not set x-canary-version")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("could not remove x-canary-token")),
        "{warnings:?}"
    );
    // Everything else happened.
    assert_eq!(t.host.values(Map::Response, "x-canary-reason"), ["default"]);
    assert_eq!(t.requests("stable", Reason::Default), 1);
    assert_eq!(t.responses("stable", 200), 1);
    assert_eq!(t.business("stable", 0), 1);
}

#[test]
fn unreadable_headers_count_as_absent() {
    let t = Setup::new(&config(|c| c["metrics_flush_ms"] = json!(0)));
    let c = cookie(&t.key_for("canary"));
    t.host.fail("header:cookie");
    t.exchange(&[("cookie", &c)], Some("stable"), &[(":status", "200")]);
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
    assert_eq!(t.requests("stable", Reason::Default), 1);
    // The whole response map cannot be read: each header is read on its own instead.
    t.host.fail("header_map");
    t.exchange(
        &[],
        Some("stable"),
        &[(":status", "201"), ("x-order-id", "o-1")],
    );
    assert_eq!(t.responses("stable", 201), 2, "both 2xx");
    assert_eq!(t.business("stable", 0), 1);
}

#[test]
fn refused_configurations_name_the_field() {
    let refuse = |host: FakeHost| {
        let mut root = Root::new(host.clone());
        assert!(!root.on_configure());
        host.logs(Level::Error)
    };
    let bad = config(|c| c["versions"][1]["weight"] = json!(-5));
    let errors = refuse(FakeHost::with_config(&bad));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("sticky-canary: invalid configuration: versions[1].weight:"),
        "{errors:?}"
    );
    let good = config(|_| {});
    let host = FakeHost::with_config(&good);
    host.fail("define_metric");
    let errors = refuse(host);
    assert!(errors[0].contains("cannot define"), "{errors:?}");
    let host = FakeHost::with_config(&good);
    host.fail("plugin_configuration");
    let errors = refuse(host);
    assert!(
        errors[0].contains("cannot read the plugin configuration"),
        "{errors:?}"
    );
    // A stream of a root that never configured passes through untouched.
    let host = FakeHost::with_config(&bad);
    let root = Root::new(host.clone());
    host.begin(&[("x-canary-version", "canary")]);
    let mut s = root.stream();
    s.on_request_headers();
    host.respond(Some("stable"), &[(":status", "200")]);
    s.on_response_headers(true);
    assert_eq!(host.values(Map::Request, "x-canary-version"), ["canary"]);
    assert!(host.values(Map::Response, "x-canary-version").is_empty());
}

#[test]
fn tokens_come_from_the_vm_environment() {
    let config = config(|c| {
        c["override"] = json!({"tokens_env": "QA_TOKENS"});
    });
    let host = FakeHost::with_config(&config);
    host.state()
        .env
        .insert("QA_TOKENS".into(), "fedcba9876543210-env".into());
    let mut root = Root::new(host.clone());
    assert!(root.on_configure());
    host.begin(&[
        ("x-canary-override", "canary"),
        ("x-canary-token", "fedcba9876543210-env"),
    ]);
    root.stream().on_request_headers();
    assert_eq!(host.values(Map::Request, "x-canary-version"), ["canary"]);
}

#[test]
fn sums_beyond_i64_reach_the_host_in_steps() {
    let t = Setup::new(&config(|c| {
        c["business_metrics"] =
            json!([{"name": "order_value", "kind": "sum", "header": "x-order-total"}]);
    }));
    let huge = (u64::MAX - 1).to_string();
    t.exchange(
        &[],
        Some("stable"),
        &[(":status", "200"), ("x-order-total", &huge)],
    );
    let before = t.host.calls_of("increment_metric");
    t.root.on_tick();
    // The fake saturates at i64::MAX; what matters is that nothing wrapped negative and the
    // squares (saturated at u64::MAX) also arrived in steps.
    assert_eq!(t.business("stable", 0), i64::MAX);
    assert_eq!(t.squares("stable", 0), i64::MAX);
    assert!(t.host.calls_of("increment_metric") - before >= 4);
}

/// The base config with the bucket header, the hold, a pin and a minted cookie.
fn ramp_config() -> String {
    config(|c| {
        c["bucket_header"] = json!("x-canary-bucket");
        c["session"]["hold"] = json!({"cookie": "sc_hold", "idle_seconds": 900});
        c["session"]["assign_cookie"] = json!({"name": "sc_session"});
        c["pins"] = json!([{"header": "x-merchant", "values": ["m1"], "version": "canary"}]);
    })
}

const HOLD_SET_COOKIE: &str = "sc_hold=1; Max-Age=900; Path=/; Secure; HttpOnly; SameSite=Lax";

fn digits(t: &Setup, key: &str) -> String {
    let b = crate::routing::hash::bucket(&t.plan.salt, key.as_bytes());
    String::from_utf8(crate::routing::hash::bucket_digits(b).to_vec()).unwrap()
}

#[test]
fn the_bucket_header_carries_the_sessions_bucket_and_nothing_a_client_sent() {
    let t = Setup::new(&ramp_config());
    for version in ["canary", "stable"] {
        let key = t.key_for(version);
        let c = cookie(&key);
        // Forged, malformed and repeated client values: replaced by the one computed value.
        for forged in [
            &[][..],
            &[("x-canary-bucket", "0000")][..],
            &[("X-Canary-Bucket", "99999"), ("x-canary-bucket", "abc")][..],
            &[("x-canary-bucket", ""), ("x-canary-bucket", " 0001 ")][..],
        ] {
            let mut headers = vec![("cookie", c.as_str())];
            headers.extend_from_slice(forged);
            t.request(&headers);
            assert_eq!(
                t.host.values(Map::Request, "x-canary-bucket"),
                [digits(&t, &key)],
                "{version} {forged:?}"
            );
        }
    }
    // A minted session carries the minted id's bucket.
    t.host.state().random = Some([0x5a; 16]);
    t.request(&[("x-canary-bucket", "0000")]);
    assert_eq!(
        t.host.values(Map::Request, "x-canary-bucket"),
        [digits(&t, &"5a".repeat(16))]
    );
    // No session key (no randomness to mint one), an override, a pin, a hold: no bucket, and
    // the client's value is removed.
    t.host.state().random = None;
    t.host.fail("random_id");
    let c = cookie(&t.key_for("stable"));
    let no_bucket: [&[(&str, &str)]; 4] = [
        &[("x-canary-bucket", "0000")],
        &[
            ("cookie", &c),
            ("x-canary-override", "canary"),
            ("x-canary-token", "0123456789abcdef-qa"),
            ("x-canary-bucket", "0000"),
        ],
        &[
            ("cookie", &c),
            ("x-merchant", "m1"),
            ("x-canary-bucket", "0000"),
        ],
        &[
            ("cookie", "sc_hold=1"),
            ("cookie", &c),
            ("x-canary-bucket", "0000"),
            ("x-canary-bucket", "0001"),
        ],
    ];
    for headers in no_bucket {
        t.request(headers);
        assert!(
            t.host.values(Map::Request, "x-canary-bucket").is_empty(),
            "{headers:?}"
        );
    }
    // Off (the default): the filter leaves the header alone.
    let t = Setup::new(&config(|_| {}));
    t.request(&[("cookie", &c), ("x-canary-bucket", "0000")]);
    assert_eq!(t.host.values(Map::Request, "x-canary-bucket"), ["0000"]);
}

#[test]
fn the_hold_keeps_a_session_on_the_default_version_and_never_on_a_canary() {
    let t = Setup::new(&ramp_config());
    let canary = cookie(&t.key_for("canary"));
    let stable = cookie(&t.key_for("stable"));
    let set_cookies = || t.host.values(Map::Response, "set-cookie");
    let reason = || t.host.values(Map::Response, "x-canary-reason");

    // A canary session holding the hold cookie: stable, reason hold, and the hold refreshed.
    let held = format!("{canary}; sc_hold=1");
    t.exchange(&[("cookie", &held)], Some("stable"), &[(":status", "200")]);
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
    assert_eq!(reason(), ["hold"]);
    assert_eq!(set_cookies(), [HOLD_SET_COOKIE]);
    // A forged hold cookie only keeps the client on stable.
    let forged = format!("sc_hold=anything; {canary}");
    t.exchange(
        &[("cookie", &forged)],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
    // A pin and an override still win over the hold; served by the canary, no hold cookie.
    t.exchange(
        &[("cookie", &held), ("x-merchant", "m1")],
        Some("canary"),
        &[(":status", "200")],
    );
    assert_eq!((reason(), set_cookies()), (vec!["pin".to_string()], vec![]));
    t.exchange(
        &[
            ("cookie", &held),
            ("x-canary-override", "canary"),
            ("x-canary-token", "0123456789abcdef-qa"),
        ],
        Some("canary"),
        &[(":status", "200")],
    );
    assert_eq!(
        (reason(), set_cookies()),
        (vec!["override".to_string()], vec![])
    );
    // Without the hold: the hash. A canary session served by the canary gets no hold cookie…
    t.exchange(
        &[("cookie", &canary)],
        Some("canary"),
        &[(":status", "200")],
    );
    assert_eq!(
        (reason(), set_cookies()),
        (vec!["hash".to_string()], vec![])
    );
    // …a session served by stable gets one, whichever version the decision named (a controller
    // may have sent the cohort to stable).
    t.exchange(
        &[("cookie", &stable)],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(set_cookies(), [HOLD_SET_COOKIE]);
    t.exchange(
        &[("cookie", &canary)],
        Some("stable"),
        &[(":status", "503")],
    );
    assert_eq!(set_cookies(), [HOLD_SET_COOKIE]);
    // A stable session the route table sent to the canary (a controller's bucket route): the
    // canary served it, so no hold.
    t.exchange(
        &[("cookie", &stable)],
        Some("canary"),
        &[(":status", "200")],
    );
    assert_eq!(
        (reason(), set_cookies()),
        (vec!["hash".to_string()], vec![])
    );
    // A minted session served by stable gets both cookies.
    t.host.state().random = Some([0x01; 16]);
    let id = "01".repeat(16);
    t.exchange(&[], Some("stable"), &[(":status", "200")]);
    assert_eq!(
        set_cookies(),
        [
            format!("sc_session={id}; Path=/; Secure; HttpOnly; SameSite=Lax"),
            HOLD_SET_COOKIE.into()
        ]
    );
    // Held without a key: an id is minted as usual (the application sees it), the hold decides
    // (no bucket), and the hold is refreshed.
    t.host.state().random = Some([0x02; 16]);
    let id = "02".repeat(16);
    t.exchange(
        &[("cookie", "sc_hold=1")],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(reason(), ["hold"]);
    assert!(t.host.values(Map::Request, "x-canary-bucket").is_empty());
    assert_eq!(
        t.host.values(Map::Request, "cookie"),
        [format!("sc_hold=1; sc_session={id}")]
    );
    assert_eq!(
        set_cookies(),
        [
            format!("sc_session={id}; Path=/; Secure; HttpOnly; SameSite=Lax"),
            HOLD_SET_COOKIE.into()
        ]
    );
    // No session key at all (no randomness): nothing to hold, held or not.
    t.host.state().random = None;
    t.host.fail("random_id");
    t.exchange(&[], Some("stable"), &[(":status", "200")]);
    assert_eq!(
        (reason(), set_cookies()),
        (vec!["default".to_string()], vec![])
    );
    t.exchange(
        &[("cookie", "sc_hold=1")],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(
        (reason(), set_cookies()),
        (vec!["hold".to_string()], vec![])
    );
    t.root.on_tick();
    assert_eq!(t.requests("stable", Reason::Hold), 4);
    assert_eq!(t.requests("canary", Reason::Hold), 0);
}

#[test]
fn the_request_path_makes_few_host_calls() {
    // Routing and tagging only (no rules, no reason header, no override).
    let t = Setup::new(
        &json!({
            "service": "checkout",
            "versions": [{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}],
            "session": {"sources": [{"cookie": "session_id"}]}
        })
        .to_string(),
    );
    let c = cookie(&t.key_for("canary"));
    let before = t.host.call_count();
    t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "200")]);
    // cookie read, :method read (writes), route header write; cluster read, :status read,
    // attempt-count read, tag write, filter state.
    assert_eq!(
        t.host.call_count() - before,
        8,
        "{:?}",
        t.host.state().calls
    );
    // With a `grpc` block: +1 per response (the content-type read), +1 for a gRPC response's
    // status (its trailers, or the headers of a trailers-only response); see
    // grpc_tests::grpc_host_calls.
    let g = Setup::new(
        &json!({
            "service": "checkout",
            "versions": [{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}],
            "session": {"sources": [{"cookie": "session_id"}]},
            "grpc": {}
        })
        .to_string(),
    );
    let before = g.host.call_count();
    g.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "200")]);
    assert_eq!(g.host.call_count() - before, 9);
    // With the bucket header and the hold: one more write (the bucket), and on responses
    // served by the default version one more (the hold cookie). The hold lookup shares the
    // cookie read.
    let t = Setup::new(
        &json!({
            "service": "checkout",
            "versions": [{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}],
            "session": {"sources": [{"cookie": "session_id"}],
                        "hold": {"cookie": "sc_hold", "idle_seconds": 900}},
            "bucket_header": "x-canary-bucket"
        })
        .to_string(),
    );
    let canary = cookie(&t.key_for("canary"));
    let stable = cookie(&t.key_for("stable"));
    for (c, cluster, calls) in [
        (&canary, "canary", 9),
        (&stable, "stable", 10),
        (&format!("{canary}; sc_hold=1"), "stable", 10),
    ] {
        let before = t.host.call_count();
        t.exchange(&[("cookie", c)], Some(cluster), &[(":status", "200")]);
        assert_eq!(
            t.host.call_count() - before,
            calls,
            "{c}: {:?}",
            t.host.state().calls
        );
    }
    assert_eq!(t.host.calls_of("header_map"), 0);
    // Header rules: the response map is read once, whatever the number of rules; the
    // attempt count is taken from it (no extra read).
    let t = Setup::new(&config(|c| {
        c["business_metrics"] = json!([
            {"name": "orders", "kind": "counter", "header": "x-order-id"},
            {"name": "order_value", "kind": "sum", "header": "x-order-total", "scale": 2},
            {"name": "coupons", "kind": "counter", "header": "x-coupon"}
        ]);
        c.as_object_mut().unwrap().remove("override");
        c.as_object_mut().unwrap().remove("reason_header");
    }));
    let before = t.host.call_count();
    t.exchange(
        &[("cookie", &c)],
        Some("canary"),
        &[
            (":status", "200"),
            ("x-order-id", "o"),
            ("x-order-total", "1.00"),
            ("x-envoy-attempt-count", "2"),
        ],
    );
    assert_eq!(t.host.calls_of("header_map"), 1);
    assert_eq!(
        t.host.call_count() - before,
        7,
        "{:?}",
        t.host.state().calls
    );
    t.root.on_tick();
    let v = t.version("canary");
    assert_eq!(
        (t.value(&t.names.retries[v]), t.value(&t.names.retried[v])),
        (1, 1),
        "the attempt count is read from the map"
    );
}

#[test]
fn the_served_version_and_reason_go_to_filter_state_once_per_response() {
    let t = Setup::new(&config(|_| {}));
    let state = || {
        t.host
            .state()
            .filter_state
            .get(super::FILTER_STATE_KEY)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let canary = cookie(&t.key_for("canary"));
    let stable = cookie(&t.key_for("stable"));
    // Nothing before the response: the served version is known only then.
    let mut s = t.request(&[("cookie", &canary)]);
    assert_eq!(state(), None);
    t.host.respond(Some("canary"), &[(":status", "200")]);
    s.on_response_headers(true);
    assert_eq!(state().as_deref(), Some("canary hash"));
    t.exchange(
        &[("cookie", &stable)],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(state().as_deref(), Some("stable hash"));
    // The route table sent the canary cohort to stable: the served version, not the decision.
    t.exchange(
        &[("cookie", &canary)],
        Some("stable"),
        &[(":status", "503")],
    );
    assert_eq!(state().as_deref(), Some("stable hash"));
    // A request without a session key: the default version, reason default.
    t.exchange(&[], None, &[(":status", "200")]);
    assert_eq!(state().as_deref(), Some("stable default"));
    assert_eq!(t.host.calls_of("set_filter_state"), 4);
}

#[test]
fn a_filter_state_that_cannot_be_written_is_logged_and_the_response_goes_on() {
    let t = Setup::new(&config(|_| {}));
    t.host.fail("set_filter_state");
    let c = cookie(&t.key_for("canary"));
    t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "200")]);
    assert_eq!(t.host.values(Map::Response, "x-canary-version"), ["canary"]);
    assert_eq!(t.host.values(Map::Response, "x-canary-reason"), ["hash"]);
    t.root.on_tick();
    assert_eq!(t.responses("canary", 200), 1);
    let warns = t.host.logs(Level::Warn);
    assert!(
        warns
            .iter()
            .any(|w| w.contains("could not set filter state sticky_canary")),
        "{warns:?}"
    );
}

#[test]
fn upstream_retries_are_counted_per_served_version_from_the_attempt_count() {
    let t = Setup::new(&config(|_| {}));
    let canary = cookie(&t.key_for("canary"));
    let stable = cookie(&t.key_for("stable"));
    let counts = |version: &str| {
        let v = t.version(version);
        (
            t.value(&t.names.retries[v]),
            t.value(&t.names.retried[v]),
            t.value(&t.names.attempts_invalid[v]),
        )
    };
    // 1, 2, 3 attempts and absent, on the canary: 0 + 1 + 2 retries, 2 retried responses.
    for attempts in [Some("1"), Some("2"), Some("3"), None] {
        let mut resp = vec![(":status", "200")];
        resp.extend(attempts.map(|a| ("x-envoy-attempt-count", a)));
        t.exchange(&[("cookie", &canary)], Some("canary"), &resp);
    }
    // Served by stable though decided canary (route table): counted for stable.
    t.exchange(
        &[("cookie", &canary)],
        Some("stable"),
        &[(":status", "503"), ("x-envoy-attempt-count", "3")],
    );
    // Every invalid form: counted as invalid, never as retries.
    for bad in [
        "",
        "x",
        "-1",
        "0",
        "+2",
        "2.5",
        "1001",
        "99999999999999999999999",
    ] {
        t.exchange(
            &[("cookie", &stable)],
            Some("stable"),
            &[(":status", "200"), ("x-envoy-attempt-count", bad)],
        );
    }
    t.root.on_tick();
    assert_eq!(counts("canary"), (3, 2, 0));
    assert_eq!(counts("stable"), (2, 1, 8));
    assert_eq!(t.responses("canary", 200), 4);
    assert_eq!(t.responses("stable", 200), 8);
}

#[test]
fn a_client_sent_attempt_count_request_header_counts_nothing() {
    let t = Setup::new(&config(|_| {}));
    let canary = cookie(&t.key_for("canary"));
    t.exchange(
        &[("cookie", &canary), ("x-envoy-attempt-count", "5")],
        Some("canary"),
        &[(":status", "200")],
    );
    t.root.on_tick();
    let v = t.version("canary");
    assert_eq!(t.value(&t.names.retries[v]), 0);
    assert_eq!(t.value(&t.names.retried[v]), 0);
    assert_eq!(t.value(&t.names.attempts_invalid[v]), 0);
}
