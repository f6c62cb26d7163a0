//! gRPC status per served version against the in-memory host: trailers, trailers-only,
//! invalid and missing statuses, what is not gRPC, the host calls it costs, and the brake's
//! `grpc_error_ratio` check.

use super::fake::FakeHost;
use super::tests::{config, cookie, Setup};
use super::{Level, Map, Root, Stream};
use crate::counting::grpc::LABELS;
use serde_json::{json, Value};

const GRPC: (&str, &str) = ("content-type", "application/grpc");

fn with_grpc(edit: impl FnOnce(&mut Value)) -> String {
    config(|c| {
        c["grpc"] = json!({});
        edit(c);
    })
}

/// Every `canary_grpc_responses_total` of `version`, by label, non-zero only.
fn counts(t: &Setup, version: &str) -> Vec<(&'static str, i64)> {
    let v = t.version(version);
    LABELS
        .iter()
        .enumerate()
        .map(|(i, l)| (*l, t.value(t.names.grpc(v, i).unwrap())))
        .filter(|(_, n)| *n != 0)
        .collect()
}

/// A gRPC call on `version`'s session, served by `cluster`: response headers (not ending the
/// stream), a body chunk, then `trailers` (None: the stream ends without, e.g. a reset).
fn call(
    t: &Setup,
    version: &str,
    cluster: &str,
    headers: &[(&str, &str)],
    trailers: Option<&[(&str, &str)]>,
) -> Stream<FakeHost> {
    let c = cookie(&t.key_for(version));
    let mut s = t.request(&[("cookie", &c), GRPC]);
    t.host.respond(Some(cluster), headers);
    s.on_response_headers(false);
    t.body(&mut s, b"\0\0\0\0\x02hi", false);
    if let Some(tr) = trailers {
        t.host.trailers(tr);
        s.on_response_trailers();
    }
    s.on_log();
    s
}

#[test]
fn grpc_statuses_are_counted_once_per_response_and_served_version() {
    let t = Setup::new(&with_grpc(|_| {}));
    let ok = [(":status", "200"), GRPC];
    call(&t, "canary", "canary", &ok, Some(&[("grpc-status", "0")]));
    call(&t, "canary", "canary", &ok, Some(&[("grpc-status", "13")]));
    call(
        &t,
        "canary",
        "canary",
        &[
            (":status", "200"),
            ("content-type", "application/grpc+proto"),
        ],
        Some(&[("grpc-status", "13"), ("grpc-message", "boom")]),
    );
    // Not a status: invalid; trailers without one, or no trailers at all: missing.
    call(&t, "canary", "canary", &ok, Some(&[("grpc-status", "abc")]));
    call(&t, "canary", "canary", &ok, Some(&[("grpc-status", "17")]));
    call(&t, "canary", "canary", &ok, Some(&[("grpc-message", "x")]));
    call(&t, "canary", "canary", &ok, None);
    // Trailers-only: the status is in the headers that end the stream, counted there once.
    let c = cookie(&t.key_for("stable"));
    for status in ["14", "5", "x"] {
        let mut s = t.request(&[("cookie", &c), GRPC]);
        t.host.respond(
            Some("stable"),
            &[
                (":status", "200"),
                ("content-type", "Application/GRPC"),
                ("grpc-status", status),
            ],
        );
        s.on_response_headers(true);
        s.on_log();
    }
    // Trailers-only without a status.
    t.exchange(
        &[("cookie", &c)],
        Some("stable"),
        &[(":status", "200"), GRPC],
    );
    // Decided canary, served by stable (route table): counted for stable.
    call(&t, "canary", "stable", &ok, Some(&[("grpc-status", "0")]));
    t.root.on_tick();
    assert_eq!(
        counts(&t, "canary"),
        [("0", 1), ("13", 2), ("invalid", 2), ("missing", 2)]
    );
    assert_eq!(
        counts(&t, "stable"),
        [
            ("0", 1),
            ("5", 1),
            ("14", 1),
            ("invalid", 1),
            ("missing", 1)
        ]
    );
    assert_eq!(t.responses("canary", 200), 7);
}

#[test]
fn what_is_not_grpc_is_not_counted() {
    let t = Setup::new(&with_grpc(|_| {}));
    for ct in [
        None,
        Some("application/json"),
        Some("application/grpc-web+proto"),
        Some("application/grpcx"),
    ] {
        let mut h = vec![(":status", "200")];
        h.extend(ct.map(|c| ("content-type", c)));
        call(&t, "canary", "canary", &h, Some(&[("grpc-status", "13")]));
        call(&t, "canary", "canary", &h, None);
    }
    t.root.on_tick();
    assert_eq!(counts(&t, "canary"), []);
}

#[test]
fn without_the_grpc_block_nothing_changes() {
    let off = config(|_| {});
    let t = Setup::new(&off);
    assert!(t.names.grpc.iter().all(Vec::is_empty));
    assert!(t
        .host
        .state()
        .metrics
        .iter()
        .all(|m| !m.name.contains("grpc")));
    // The same gRPC call costs the same host calls as without gRPC handling, and no trailer read.
    let cost = |s: &Setup| {
        let before = s.host.call_count();
        call(
            s,
            "canary",
            "canary",
            &[(":status", "200"), GRPC],
            Some(&[("grpc-status", "13")]),
        );
        s.host.call_count() - before
    };
    let calls = cost(&t);
    // The test config reads the whole response map for its header rules: content-type comes
    // from it; the one extra call is the trailer read.
    assert_eq!(cost(&Setup::new(&with_grpc(|_| {}))), calls + 1);
}

#[test]
fn grpc_host_calls() {
    // Routing and tagging only (no rules): 8 calls per exchange without gRPC (see
    // the_request_path_makes_few_host_calls).
    let plain = |grpc: bool| {
        let mut c = json!({
            "service": "checkout",
            "versions": [{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}],
            "session": {"sources": [{"cookie": "session_id"}]}
        });
        if grpc {
            c["grpc"] = json!({"error_codes": [13]});
        }
        Setup::new(&c.to_string())
    };
    // A gRPC exchange whose status comes in the trailers; the host calls it made.
    let with_trailers = |t: &Setup, c: &str| {
        let before = t.host.call_count();
        let mut s = t.request(&[("cookie", c), GRPC]);
        t.host.respond(Some("canary"), &[(":status", "200"), GRPC]);
        s.on_response_headers(false);
        t.host.trailers(&[("grpc-status", "0")]);
        s.on_response_trailers();
        s.on_log();
        t.host.call_count() - before
    };
    let t = plain(true);
    let c = cookie(&t.key_for("canary"));
    let measure = |f: &dyn Fn()| {
        let before = t.host.call_count();
        f();
        t.host.call_count() - before
    };
    // Not gRPC: +1 (the content-type read).
    let n = measure(&|| {
        t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "200")]);
    });
    assert_eq!(n, 9, "{:?}", t.host.state().calls);
    // gRPC with trailers: +1 content-type, +1 trailer read.
    assert_eq!(with_trailers(&t, &c), 10);
    // Trailers-only: +1 content-type, +1 grpc-status read from the headers.
    let n = measure(&|| {
        t.exchange(
            &[("cookie", &c)],
            Some("canary"),
            &[(":status", "200"), GRPC, ("grpc-status", "14")],
        );
    });
    assert_eq!(n, 10);
    // Reset before trailers: +1 content-type only.
    let n = measure(&|| {
        let mut s = t.request(&[("cookie", &c), GRPC]);
        t.host.respond(Some("canary"), &[(":status", "200"), GRPC]);
        s.on_response_headers(false);
        s.on_log();
    });
    assert_eq!(n, 9);
    assert_eq!(t.host.calls_of("header_map"), 0);
    t.root.on_tick();
    assert_eq!(counts(&t, "canary"), [("0", 1), ("14", 1), ("missing", 1)]);
    // Without the block: 8, as before.
    let t = plain(false);
    let c = cookie(&t.key_for("canary"));
    assert_eq!(with_trailers(&t, &c), 8);
}

#[test]
fn an_unreadable_trailer_map_counts_missing() {
    let t = Setup::new(&with_grpc(|_| {}));
    t.host.fail("header:grpc-status");
    call(
        &t,
        "canary",
        "canary",
        &[(":status", "200"), GRPC],
        Some(&[("grpc-status", "0")]),
    );
    t.root.on_tick();
    assert_eq!(counts(&t, "canary"), [("missing", 1)]);
    assert_eq!(t.host.values(Map::ResponseTrailers, "grpc-status"), ["0"]);
}

#[test]
fn the_guard_trips_on_the_grpc_error_ratio() {
    let cfg = with_grpc(|c| {
        c["grpc"] = json!({"error_codes": [13, 14]});
        c["guard"] = json!({"baseline": "stable", "min_samples": 20,
                            "checks": [{"grpc_error_ratio": {"max_points": 1.0}}]});
    });
    let t = Setup::new(&cfg);
    let ok = [(":status", "200"), GRPC];
    for _ in 0..50 {
        call(&t, "stable", "stable", &ok, Some(&[("grpc-status", "0")]));
    }
    // NOT_FOUND is the caller's: not an error, however many.
    for _ in 0..30 {
        call(&t, "canary", "canary", &ok, Some(&[("grpc-status", "5")]));
    }
    t.root.on_tick();
    assert_eq!(t.value(&t.names.guard_tripped[t.version("canary")]), 0);
    for status in ["13", "14"] {
        for _ in 0..15 {
            call(
                &t,
                "canary",
                "canary",
                &ok,
                Some(&[("grpc-status", status)]),
            );
        }
    }
    t.root.on_tick();
    assert_eq!(t.value(&t.names.guard_tripped[t.version("canary")]), 1);
    let line = t.warn_line("guard tripped canary");
    assert!(
        line.contains("check grpc_error_ratio (grpc_error_ratio errors/grpc responses)")
            && line.contains("canary 30/60, stable 0/50"),
        "{line}"
    );
    // Without the grpc block the check is refused, with its path.
    let refused = config(|c| {
        c["guard"] = json!({"checks": [{"error_ratio": {"max_points": 1}},
                                       {"grpc_error_ratio": {"max_points": 1}}]});
    });
    let host = FakeHost::with_config(&refused);
    let mut root = Root::new(host.clone());
    assert!(!root.on_configure());
    let errors = host.logs(Level::Error);
    assert!(
        errors[0].contains("guard.checks[1].grpc_error_ratio: needs the top-level grpc block"),
        "{errors:?}"
    );
}

#[test]
fn grpc_refusals_name_the_field() {
    for (grpc, path) in [
        (json!({"error_codes": []}), "grpc.error_codes"),
        (json!({"error_codes": [2, 17]}), "grpc.error_codes[1]"),
        (json!({"error_codes": [2, -1]}), "grpc.error_codes[1]"),
        (json!({"error_codes": [2, 1.5]}), "grpc.error_codes[1]"),
        (json!({"error_codes": [13, 13]}), "grpc.error_codes[1]"),
        (json!({"error_codes": "13"}), "grpc.error_codes"),
        (json!({"codes": [13]}), "grpc.codes"),
        (json!([13]), "grpc"),
    ] {
        let cfg = config(|c| c["grpc"] = grpc.clone());
        let host = FakeHost::with_config(&cfg);
        let mut root = Root::new(host.clone());
        assert!(!root.on_configure(), "{grpc}");
        let errors = host.logs(Level::Error);
        assert!(
            errors[0].contains(&format!("invalid configuration: {path}: ")),
            "{grpc}: {errors:?}"
        );
    }
}
