//! The brake against the in-memory host: a trip, what routing does after it, every worker VM
//! stopping through shared data, what survives a reconfiguration, and the writes counter.
//! Two `Root`s on one `FakeHost` are two worker VMs of one Envoy: they share its metrics (Envoy
//! stats are process-wide) and its shared data.

use super::fake::FakeHost;
use super::tests::{config, cookie, Setup};
use super::{Level, Map, Root};
use crate::brake::record;
use crate::routing::decision::Reason;
use serde_json::{json, Value};

fn guarded(edit: impl FnOnce(&mut Value)) -> String {
    config(|c| {
        c["guard"] = json!({"baseline": "stable", "min_samples": 20,
                            "checks": [{"error_ratio": {"max_points": 1.0}}]});
        c["bucket_header"] = "x-canary-bucket".into();
        edit(c);
    })
}

const KEY: &str = "sticky_canary.guard.checkout";

/// `n` requests of sessions hashed to `version`, answered with `status` by its cluster.
fn traffic(t: &Setup, version: &str, n: usize, status: &str) {
    let c = cookie(&t.key_for(version));
    for _ in 0..n {
        t.exchange(&[("cookie", &c)], Some(version), &[(":status", status)]);
    }
}

fn tripped_gauge(t: &Setup, version: &str) -> i64 {
    t.value(&t.names.guard_tripped[t.version(version)])
}

#[test]
fn a_harmful_canary_is_tripped_and_gets_no_new_request() {
    let t = Setup::new(&guarded(|_| {}));
    assert_eq!(t.host.state().tick_ms, Some(1000));
    traffic(&t, "stable", 100, "200");
    traffic(&t, "canary", 10, "503");
    t.root.on_tick();
    // Ten canary responses: below min_samples (20), not judged.
    assert_eq!(tripped_gauge(&t, "canary"), 0);
    traffic(&t, "canary", 30, "503");
    t.root.on_tick();
    assert_eq!(tripped_gauge(&t, "canary"), 1);
    assert_eq!(t.value(&t.names.guard_trips[t.version("canary")]), 1);
    assert_eq!(tripped_gauge(&t, "stable"), 0);
    let line = t.warn_line("guard tripped canary");
    assert!(
        line.contains("check error_ratio (error_ratio 5xx/responses) changed +100.00 points")
            && line.contains("canary 40/40, stable 0/100"),
        "{line}"
    );
    let shared = t.host.state().shared.get(KEY).cloned().unwrap();
    let generation = record::generation(b"checkout", 0);
    assert_eq!(record::decode(&shared.0, generation), ["canary"]);

    // A canary session now goes to the baseline: reason guard, no bucket header even though
    // the client sent one, tagged with the version that served it.
    let c = cookie(&t.key_for("canary"));
    t.exchange(
        &[("cookie", &c), ("x-canary-bucket", "0001")],
        Some("stable"),
        &[(":status", "200")],
    );
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
    assert!(t.host.values(Map::Request, "x-canary-bucket").is_empty());
    assert_eq!(t.host.values(Map::Response, "x-canary-reason"), ["guard"]);
    assert_eq!(t.host.values(Map::Response, "x-canary-version"), ["stable"]);
    // Stable sessions lose their bucket too while a version is tripped (a controller's bucket
    // route must not reach the canary), and keep their reason.
    let s = cookie(&t.key_for("stable"));
    t.exchange(&[("cookie", &s)], Some("stable"), &[(":status", "200")]);
    assert!(t.host.values(Map::Request, "x-canary-bucket").is_empty());
    assert_eq!(t.host.values(Map::Response, "x-canary-reason"), ["hash"]);
    // The token-guarded override still reaches the canary: QA can reproduce.
    t.exchange(
        &[
            ("cookie", &c),
            ("x-canary-override", "canary"),
            ("x-canary-token", "0123456789abcdef-qa"),
        ],
        Some("canary"),
        &[(":status", "503")],
    );
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["canary"]);
    assert_eq!(
        t.host.values(Map::Response, "x-canary-reason"),
        ["override"]
    );
    t.root.on_tick();
    assert_eq!(t.requests("stable", Reason::Guard), 1);
    assert_eq!(t.requests("canary", Reason::Override), 1);
    // Later ticks neither count nor log the trip again.
    t.root.on_tick();
    assert_eq!(t.value(&t.names.guard_trips[t.version("canary")]), 1);
    let trips = t.host.logs(Level::Warn);
    assert_eq!(
        trips.iter().filter(|l| l.contains("guard tripped")).count(),
        1
    );
}

#[test]
fn every_worker_stops_through_shared_data() {
    let t = Setup::new(&guarded(|_| {}));
    // A second worker VM of the same Envoy: same host metrics, same shared data.
    let mut other = Root::new(t.host.clone());
    assert!(other.on_configure());
    traffic(&t, "stable", 100, "200");
    traffic(&t, "canary", 40, "503");
    t.root.on_tick();
    assert_eq!(tripped_gauge(&t, "canary"), 1);
    // Before its next tick the other worker still routes by hash …
    let c = cookie(&t.key_for("canary"));
    t.host.begin(&[("cookie", &c)]);
    let mut s = other.stream();
    s.on_request_headers();
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["canary"]);
    // … and on it, learns the trip from the record without judging or counting again.
    let reads = t.host.calls_of("metric");
    other.on_tick();
    assert_eq!(
        t.host.calls_of("metric"),
        reads + 6,
        "only the baseline's counters"
    );
    t.host.begin(&[("cookie", &c)]);
    let mut s = other.stream();
    s.on_request_headers();
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
    assert_eq!(t.value(&t.names.guard_trips[t.version("canary")]), 1);
}

#[test]
fn a_lost_record_race_is_retried() {
    let t = Setup::new(&guarded(|_| {}));
    traffic(&t, "stable", 100, "200");
    traffic(&t, "canary", 40, "503");
    // Another VM wrote the record between this VM's read and its write: the write is retried
    // with the new CAS and keeps what the other VM wrote.
    let generation = record::generation(b"checkout", 0);
    t.host.state().shared.insert(
        KEY.into(),
        (
            record::encode(generation, std::iter::empty()).into_bytes(),
            7,
        ),
    );
    t.host.fail_once_cas(KEY);
    t.root.on_tick();
    let shared = t.host.state().shared.get(KEY).cloned().unwrap();
    assert_eq!(record::decode(&shared.0, generation), ["canary"]);
    assert!(t.host.calls_of("set_shared_data") >= 2);
}

#[test]
fn an_aa_pair_and_broken_counters_never_trip() {
    let t = Setup::new(&guarded(|_| {}));
    for _ in 0..5 {
        traffic(&t, "stable", 50, "200");
        traffic(&t, "stable", 1, "503");
        traffic(&t, "canary", 50, "200");
        traffic(&t, "canary", 1, "503");
        t.root.on_tick();
    }
    assert_eq!(tripped_gauge(&t, "canary"), 0);
    // Counters that go down (a reload), or cannot be read: no trip, no panic.
    for m in t.host.state().metrics.iter_mut() {
        if m.name.contains("canary_responses_total") {
            m.value = if m.name.contains("5xx") { 1_000 } else { 0 };
        }
    }
    t.root.on_tick();
    t.host.fail("metric");
    t.root.on_tick();
    assert_eq!(tripped_gauge(&t, "canary"), 0);
    assert!(t.host.logs(Level::Error).is_empty());
}

#[test]
fn a_trip_survives_reconfiguration_until_the_salt_or_epoch_changes() {
    let t = Setup::new(&guarded(|_| {}));
    traffic(&t, "stable", 100, "200");
    traffic(&t, "canary", 40, "503");
    t.root.on_tick();
    assert_eq!(tripped_gauge(&t, "canary"), 1);
    let reconfigure = |root: &mut Root<FakeHost>, config: String| {
        t.host.state().config = config.into_bytes();
        assert!(root.on_configure(), "{:?}", t.host.logs(Level::Error));
    };
    let mut root = Root::new(t.host.clone());
    // A weight change and a pin: still tripped (and said so in the log).
    reconfigure(
        &mut root,
        guarded(|c| {
            c["versions"][0]["weight"] = 20.into();
            c["pins"] = json!([{"header": "x-merchant", "values": ["m1"], "version": "canary"}]);
        }),
    );
    assert!(t
        .host
        .logs(Level::Warn)
        .iter()
        .any(|l| l.contains("guard: canary still tripped")));
    t.host.begin(&[("x-merchant", "m1")]);
    let mut s = root.stream();
    s.on_request_headers();
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
    assert_eq!(tripped_gauge(&t, "canary"), 1);
    // A new epoch clears it: the gauge goes back to 0, the pin reaches the canary.
    reconfigure(&mut root, guarded(|c| c["guard"]["epoch"] = 1.into()));
    assert_eq!(tripped_gauge(&t, "canary"), 0);
    t.host.begin(&[("cookie", &cookie(&t.key_for("canary")))]);
    let mut s = root.stream();
    s.on_request_headers();
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["canary"]);
    // A new salt clears it too (the same counters trip it again on the next tick).
    reconfigure(&mut root, guarded(|_| {}));
    reconfigure(&mut root, guarded(|c| c["salt"] = "checkout-2".into()));
    assert_eq!(tripped_gauge(&t, "canary"), 0);
    root.on_tick();
    assert_eq!(tripped_gauge(&t, "canary"), 1);
}

#[test]
fn a_flush_interval_of_zero_still_ticks_for_the_guard() {
    let t = Setup::new(&guarded(|c| c["metrics_flush_ms"] = 0.into()));
    assert_eq!(t.host.state().tick_ms, Some(1000));
    let t = Setup::new(&guarded(|c| c["metrics_flush_ms"] = 250.into()));
    assert_eq!(t.host.state().tick_ms, Some(250));
}

#[test]
fn writes_are_counted_per_served_version() {
    let t = Setup::new(&config(|_| {}));
    let c = cookie(&t.key_for("canary"));
    for (method, cluster) in [
        ("POST", "canary"),
        ("GET", "canary"),
        ("DELETE", "stable"),
        ("post", "canary"),
        ("PATCH", "canary"),
    ] {
        t.exchange(
            &[("cookie", &c), (":method", method)],
            Some(cluster),
            &[(":status", "200")],
        );
    }
    t.root.on_tick();
    let writes = |v: &str| t.value(&t.names.writes[t.version(v)]);
    // Methods are case-sensitive: "post" is not POST.
    assert_eq!((writes("canary"), writes("stable")), (2, 1));
    // Configurable: only POST here; and [] reads no :method at all.
    let t = Setup::new(&config(|c| c["write_methods"] = json!(["POST"])));
    for method in ["POST", "PUT"] {
        t.exchange(
            &[("cookie", &c), (":method", method)],
            Some("canary"),
            &[(":status", "200")],
        );
    }
    t.root.on_tick();
    assert_eq!(t.value(&t.names.writes[t.version("canary")]), 1);
    let header_reads = |t: &Setup| {
        let before = t.host.calls_of("header");
        t.exchange(
            &[("cookie", &c), (":method", "POST")],
            Some("canary"),
            &[(":status", "200")],
        );
        t.host.calls_of("header") - before
    };
    let off = Setup::new(&config(|c| c["write_methods"] = json!([])));
    assert!(off.names.writes.is_empty());
    assert_eq!(
        header_reads(&off) + 1,
        header_reads(&t),
        "one :method read, or none"
    );
}

#[test]
fn a_guard_adds_no_host_call_to_the_request_path() {
    let calls = |config: &str| {
        let t = Setup::new(config);
        let c = cookie(&t.key_for("canary"));
        let before = t.host.call_count();
        t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "200")]);
        t.host.call_count() - before
    };
    let with = calls(&guarded(|_| {}));
    let without = calls(&config(|c| c["bucket_header"] = "x-canary-bucket".into()));
    assert_eq!(with, without);
}

#[test]
fn configure_writes_the_record_only_for_a_new_generation() {
    let t = Setup::new(&guarded(|_| {}));
    let generation = record::generation(b"checkout", 0);
    t.host.state().shared.insert(
        KEY.into(),
        (
            record::encode(generation, std::iter::empty()).into_bytes(),
            3,
        ),
    );
    let writes = t.host.calls_of("set_shared_data");
    let mut root = Root::new(t.host.clone());
    assert!(root.on_configure());
    assert_eq!(
        t.host.calls_of("set_shared_data"),
        writes,
        "same generation"
    );
    t.host.state().config = guarded(|c| c["guard"]["epoch"] = 2.into()).into_bytes();
    assert!(root.on_configure());
    assert_eq!(
        t.host.calls_of("set_shared_data"),
        writes + 1,
        "a new epoch"
    );
    let shared = t.host.state().shared.get(KEY).cloned().unwrap();
    assert_eq!(
        record::read(&shared.0, record::generation(b"checkout", 2)),
        Some(vec![])
    );
}
