//! End-to-end: the sticky-canary filter under a real Envoy, routing to real upstreams.
//!
//! Every test starts its own Envoy (ports chosen by Envoy, so tests run in parallel) from the
//! shipped `envoy/envoy.yaml`, and stops it when done. Expected versions come from the published
//! algorithm (`Plan::bucket`), which the unit tests pin to MurmurHash3 and flagd vectors.

use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{send_once, Request, Response, Upstream};
use sticky_canary_harness::native;
use sticky_canary_harness::{Fixture, Keys, Observed};

/// The plugin config of the reference envoy.yaml, with other weights.
fn config(canary: u32, stable: u32) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&EnvoyConfig::reference().plugin_config()).unwrap();
    v["versions"] =
        json!([{"name": "canary", "weight": canary}, {"name": "stable", "weight": stable}]);
    v.to_string()
}

fn with_session(key: &str) -> Request {
    Request::get("/cart").header("cookie", &format!("session_id={key}"))
}

#[test]
fn reference_config_passes_envoy_validate() {
    envoy::check_prerequisites();
    let (ok, out) = envoy::validate(&envoy::reference_config_path(), &envoy::workspace_root());
    assert!(ok, "envoy --mode validate failed:\n{out}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn reference_config_as_shipped_routes_by_session() {
    // The shipped plugin config (5 % canary), unchanged.
    let f = Fixture::start(&EnvoyConfig::reference().plugin_config());
    assert!(
        f.envoy.log().contains(&format!(
            "sticky-canary {} VM started",
            sticky_canary::VERSION
        )),
        "the VM start line names the crate version"
    );
    let mut c = f.client();
    let mut seen = HashMap::<String, u32>::new();
    for key in Keys::new(1).take(400) {
        let o = f.observe(&mut c, &with_session(&key));
        assert!(o.is_served_by(f.expected(&key)), "{key}: {o:?}");
        *seen.entry(o.served_by.unwrap()).or_default() += 1;
    }
    assert!(
        seen.contains_key("canary") && seen.contains_key("stable"),
        "{seen:?}"
    );
}

#[test]
fn route_follows_the_decision_for_every_version() {
    // Four versions: the router must pick the cluster the filter chose, for each of them
    // (proves the route cache is cleared after the filter sets the header).
    let cfg = json!({
        "service": "checkout", "salt": "e2e",
        "versions": [{"name": "v1", "weight": 1}, {"name": "v2", "weight": 1},
                     {"name": "v3", "weight": 1}, {"name": "v4", "weight": 1}],
        "session": {"sources": [{"header": "x-user-id"}]}
    });
    let f = Fixture::start(&cfg.to_string());
    let mut c = f.client();
    let mut served = HashSet::new();
    for key in Keys::new(2).take(200) {
        let o = f.observe(&mut c, &Request::get("/").header("x-user-id", &key));
        assert!(o.is_served_by(f.expected(&key)), "{key}: {o:?}");
        served.insert(o.served_by.unwrap());
    }
    assert_eq!(
        served.len(),
        4,
        "every version served some sessions: {served:?}"
    );
    let counts: Vec<u64> = f.upstreams.iter().map(Upstream::served).collect();
    assert_eq!(counts.iter().sum::<u64>(), 200, "{counts:?}");
}

#[test]
fn split_of_10000_random_keys_is_within_4_sd() {
    let f = Fixture::start(&config(20, 80));
    let mut c = f.client();
    let n = 10_000u32;
    let mut canary = 0u32;
    for key in Keys::new(3).take(n as usize) {
        let o = f.observe(&mut c, &with_session(&key));
        assert!(o.is_served_by(f.expected(&key)), "{key}: {o:?}");
        if o.served_by.as_deref() == Some("canary") {
            canary += 1;
        }
    }
    let (p, nf) = (0.2, f64::from(n));
    let sd = (nf * p * (1.0 - p)).sqrt();
    let dev = (f64::from(canary) - nf * p).abs() / sd;
    eprintln!(
        "split: canary {canary}/{n} ({:.2} %), {dev:.2} sd from 20 %",
        100.0 * f64::from(canary) / nf
    );
    assert!(
        dev < 4.0,
        "canary got {canary} of {n}: {dev:.2} standard deviations from 20 %"
    );
    assert_eq!(f.upstreams[0].served(), u64::from(canary));
}

#[test]
fn ramp_0_5_20_50_never_moves_a_session_off_canary() {
    let keys: Vec<String> = Keys::new(4).take(1_000).collect();
    let mut f = Fixture::start(&config(0, 100));
    let mut previous: HashSet<String> = HashSet::new();
    for (step, w) in [0u32, 5, 20, 50].into_iter().enumerate() {
        if step > 0 {
            f = f.restart_with(&config(w, 100 - w));
        }
        let mut c = f.client();
        let mut on_canary = HashSet::new();
        for key in &keys {
            let o = f.observe(&mut c, &with_session(key));
            assert!(o.is_served_by(f.expected(key)), "{key}: {o:?}");
            if o.served_by.as_deref() == Some("canary") {
                on_canary.insert(key.clone());
            }
        }
        if w == 0 {
            assert!(on_canary.is_empty(), "weight 0 got sessions");
        }
        let moved_off: Vec<_> = previous.difference(&on_canary).collect();
        assert!(
            moved_off.is_empty(),
            "weight {w}: sessions moved off canary: {moved_off:?}"
        );
        eprintln!(
            "ramp: canary weight {w:>2}: {} of {} sessions",
            on_canary.len(),
            keys.len()
        );
        previous = on_canary;
    }
    assert!(
        previous.len() > 400 && previous.len() < 600,
        "50 %: {}",
        previous.len()
    );
}

#[test]
fn sessions_stick_across_requests_envoys_and_restarts() {
    let cfg = config(50, 50);
    let keys: Vec<String> = Keys::new(5).take(300).collect();
    let first = Fixture::start(&cfg);
    // A second, independent Envoy (another "proxy in the mesh") with the same config.
    let second = Fixture::start(&cfg);
    let mut assigned = HashMap::new();
    let (mut c1, mut c2) = (first.client(), second.client());
    for key in &keys {
        let mut versions = HashSet::new();
        for _ in 0..3 {
            versions.insert(
                first
                    .observe(&mut c1, &with_session(key))
                    .served_by
                    .unwrap(),
            );
            versions.insert(
                second
                    .observe(&mut c2, &with_session(key))
                    .served_by
                    .unwrap(),
            );
        }
        assert_eq!(versions.len(), 1, "{key} flapped: {versions:?}");
        assigned.insert(key.clone(), versions.into_iter().next().unwrap());
    }
    drop(second);
    let restarted = first.restart_with(&cfg);
    let mut c = restarted.client();
    for key in &keys {
        let o = restarted.observe(&mut c, &with_session(key));
        assert_eq!(
            o.served_by.as_ref(),
            Some(&assigned[key]),
            "{key} moved after restart"
        );
    }
}

#[test]
fn session_sources_cookie_first_then_header_then_default() {
    let f = Fixture::start(&config(50, 50));
    let mut c = f.client();
    // Pick keys on different versions so a wrong source choice is visible.
    let mut keys = Keys::new(6);
    let cookie_key = keys.next().unwrap();
    let header_key = keys
        .find(|k| f.expected(k) != f.expected(&cookie_key))
        .unwrap();
    let cases: Vec<(&str, Request, &str)> = vec![
        (
            "cookie wins over header",
            Request::get("/")
                .header("x-user-id", &header_key)
                .header("cookie", &format!("session_id={cookie_key}")),
            f.expected(&cookie_key),
        ),
        (
            "header when no cookie",
            Request::get("/").header("x-user-id", &header_key),
            f.expected(&header_key),
        ),
        (
            "empty cookie falls through to header",
            Request::get("/")
                .header("cookie", "session_id=")
                .header("x-user-id", &header_key),
            f.expected(&header_key),
        ),
        (
            "quoted empty cookie falls through",
            Request::get("/")
                .header("cookie", "session_id=\"\"; a=b")
                .header("x-user-id", &header_key),
            f.expected(&header_key),
        ),
        (
            "other cookies only: header",
            Request::get("/")
                .header("cookie", &format!("sid={cookie_key}"))
                .header("x-user-id", &header_key),
            f.expected(&header_key),
        ),
        (
            "no key at all: default",
            Request::get("/"),
            f.default_version(),
        ),
        (
            "empty header and no cookie: default",
            Request::get("/").header("x-user-id", ""),
            f.default_version(),
        ),
        (
            "quoted cookie value is unquoted",
            Request::get("/").header("cookie", &format!("session_id=\"{cookie_key}\"")),
            f.expected(&cookie_key),
        ),
    ];
    for (what, req, want) in cases {
        let o = f.observe(&mut c, &req);
        assert!(o.is_served_by(want), "{what}: want {want}, got {o:?}");
    }
}

#[test]
fn client_cannot_choose_its_version_with_the_route_header() {
    let f = Fixture::start(&config(50, 50));
    let mut c = f.client();
    let stable_key = Keys::new(7).find(|k| f.expected(k) == "stable").unwrap();
    let cases = vec![
        (
            "spoofed with a session",
            with_session(&stable_key).header("x-canary-version", "canary"),
        ),
        (
            "spoofed twice",
            with_session(&stable_key)
                .header("x-canary-version", "canary")
                .header("X-Canary-Version", "canary"),
        ),
        (
            "spoofed without a session",
            Request::get("/").header("x-canary-version", "canary"),
        ),
        (
            "spoofed with an unknown version",
            Request::get("/").header("x-canary-version", "v9"),
        ),
    ];
    for (what, req) in cases {
        let o = f.observe(&mut c, &req);
        assert!(o.is_served_by("stable"), "{what}: {o:?}");
    }
}

#[test]
fn upstream_version_tag_is_replaced() {
    // An upstream that claims another version, twice.
    let liar: sticky_canary_harness::http::Handler = Arc::new(|_req: &Request| {
        Response::new(200)
            .header("x-canary-version", "liar")
            .header("x-canary-version", "also-liar")
            .body("{}")
    });
    let stable = Upstream::start_with("stable", None, liar.clone()).unwrap();
    let canary = Upstream::start_with("canary", None, liar).unwrap();
    let cfg = EnvoyConfig::for_test(
        &config(50, 50),
        &[("canary", canary.addr()), ("stable", stable.addr())],
        "stable",
    );
    let envoy = Envoy::start(&cfg).unwrap_or_else(|f| panic!("{}", f.log));
    let plan = sticky_canary::plan::Plan::from_json(config(50, 50).as_bytes()).unwrap();
    for key in Keys::new(8).take(50) {
        let r = send_once(envoy.listener(), &with_session(&key)).unwrap();
        let want = plan.version_name(plan.bucket(key.as_bytes()));
        let tags: Vec<&[u8]> = r.header_values("x-canary-version");
        assert_eq!(tags, vec![want.as_bytes()], "{key}");
    }
    assert_eq!(stable.served() + canary.served(), 50);
}

#[test]
fn custom_header_names_are_honoured() {
    let cfg = json!({
        "service": "checkout",
        "versions": [{"name": "canary", "weight": 1}, {"name": "stable", "weight": 1}],
        "session": {"sources": [{"header": "X-Session"}]},
        "route_header": "X-Route-To", "response_header": "X-Served-By"
    });
    let f = Fixture::start(&cfg.to_string());
    let mut c = f.client();
    for key in Keys::new(9).take(50) {
        let r = c
            .send(&Request::get("/").header("x-session", &key))
            .unwrap();
        let o = Observed::from_response(&f.plan, &r);
        assert!(o.is_served_by(f.expected(&key)), "{key}: {o:?}");
        assert_eq!(
            r.header_values("x-canary-version").len(),
            1,
            "the upstream's own tag is left alone"
        );
    }
}

/// Each refusal of the contract, under Envoy: the listener does not load, Envoy exits, and its
/// log names the field path.
#[test]
fn invalid_configs_are_refused_with_the_field_named() {
    let base: serde_json::Value = serde_json::from_str(&config(5, 95)).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown field",
            edit(&|v| {
                let vs = v["versions"].take();
                v.as_object_mut().unwrap().remove("versions");
                v["versoins"] = vs;
            }),
            "versoins",
        ),
        (
            "wrong type",
            edit(&|v| v["versions"][0]["weight"] = json!("5")),
            "versions[0].weight",
        ),
        (
            "empty versions",
            edit(&|v| v["versions"] = json!([])),
            "versions",
        ),
        (
            "duplicate names",
            edit(&|v| v["versions"][1]["name"] = json!("canary")),
            "versions[1].name",
        ),
        (
            "negative weight",
            edit(&|v| v["versions"][1]["weight"] = json!(-95)),
            "versions[1].weight",
        ),
        (
            "all-zero weights",
            edit(&|v| {
                v["versions"] = json!([{"name": "a", "weight": 0}, {"name": "b", "weight": 0}])
            }),
            "versions",
        ),
        (
            "unknown default_version",
            edit(&|v| v["default_version"] = json!("blue")),
            "default_version",
        ),
        (
            "empty sources",
            edit(&|v| v["session"]["sources"] = json!([])),
            "session.sources",
        ),
        (
            "source with both",
            edit(&|v| v["session"]["sources"][0] = json!({"cookie": "a", "header": "b"})),
            "session.sources[0]",
        ),
        (
            "source with neither",
            edit(&|v| v["session"]["sources"][1] = json!({})),
            "session.sources[1]",
        ),
        ("not JSON", "service = checkout".to_string(), "(root)"),
    ];
    std::thread::scope(|s| {
        // Two at a time: each is a short-lived Envoy.
        for pair in cases.chunks(2) {
            let handles: Vec<_> = pair
                .iter()
                .map(|(what, json, path)| {
                    s.spawn(move || {
                        let mut cfg = EnvoyConfig::reference();
                        cfg.set_free_ports();
                        cfg.set_wasm(&envoy::wasm_path());
                        cfg.set_plugin_config(json);
                        let failure = Envoy::start_expecting_refusal(&cfg);
                        assert_ne!(failure.exit_code, Some(0), "{what}");
                        let line = failure
                            .log
                            .lines()
                            .find(|l| l.contains("sticky-canary: invalid configuration:"))
                            .unwrap_or_else(|| {
                                panic!("{what}: no refusal line in log:\n{}", failure.log)
                            });
                        assert!(
                            line.contains(&format!("invalid configuration: {path}: ")),
                            "{what}: the line must name {path}: {line}"
                        );
                        assert!(
                            failure.log.contains(native::envoy_refusal()),
                            "{what}: Envoy refuses the filter:\n{}",
                            failure.log
                        );
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        }
    });
}

/// Hostile Cookie headers never crash Envoy or fail the request; the decision stays sane.
#[test]
fn hostile_cookie_headers_are_survived() {
    let f = Fixture::start(&config(50, 50));
    let mut c = f.client();
    let key = "k-hostile-1";
    let want = f.expected(key).to_string();
    let many: String = (0..1000)
        .map(|i| format!("c{i}=v{i}; "))
        .collect::<String>()
        + &format!("session_id={key}");
    let huge_value = "x".repeat(40 * 1024);
    let cases: Vec<(&str, Request, Option<&str>)> = vec![
        (
            "1000 cookies, key last",
            Request::get("/").header("cookie", &many),
            Some(&want),
        ),
        (
            "several Cookie headers, key in the second",
            Request::get("/")
                .header("cookie", "a=1; b=2")
                .header("cookie", &format!("session_id={key}")),
            Some(&want),
        ),
        (
            "several Cookie headers, key in both: first wins",
            Request::get("/")
                .header("cookie", &format!("session_id={key}"))
                .header("cookie", "session_id=other"),
            Some(&want),
        ),
        (
            "no spaces, tabs, junk pairs",
            Request::get("/").header("cookie", &format!("junk;;=;\tsession_id\t=\t{key}\t;x")),
            Some(&want),
        ),
        (
            "non-UTF-8 bytes around the key",
            Request::get("/").header_bytes(
                "cookie",
                &[
                    b"\xff\xfe=\x80; session_id=".as_slice(),
                    key.as_bytes(),
                    b"; z=\xc3\x28",
                ]
                .concat(),
            ),
            Some(&want),
        ),
        (
            "non-UTF-8 session key",
            Request::get("/").header_bytes("cookie", b"session_id=\xff\xfe\xfd"),
            None,
        ),
        (
            "only separators",
            Request::get("/").header("cookie", ";;;; ; ;"),
            Some(f.default_version()),
        ),
        (
            "pairs without =",
            Request::get("/").header("cookie", "session_id; session_id"),
            Some(f.default_version()),
        ),
        (
            "40 KiB cookie value",
            Request::get("/").header("cookie", &format!("session_id={huge_value}")),
            None,
        ),
        (
            "empty Cookie header",
            Request::get("/").header("cookie", ""),
            Some(f.default_version()),
        ),
        (
            "lone quote",
            Request::get("/").header("cookie", "session_id=\""),
            None,
        ),
    ];
    for (what, req, want) in cases {
        let o = f.observe(&mut c, &req);
        assert_eq!(o.status, 200, "{what}: {o:?}");
        let served = o.served_by.clone().unwrap();
        assert!(
            o.is_served_by(&served),
            "{what}: consistent tag/route: {o:?}"
        );
        if let Some(want) = want {
            assert_eq!(served, want, "{what}");
        }
    }
    let mut envoy = f.envoy;
    assert!(envoy.is_ready(), "Envoy survived");
}
