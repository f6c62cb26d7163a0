//! Several services in one plugin instance, against the in-memory host: each request goes to its
//! host's service, and a request of no service is left exactly as it came.

use super::fake::FakeHost;
use super::{Level, Map, Root};
use crate::metrics::{names, Catalogue};
use crate::plan::Plan;
use crate::routing::decision::Reason;
use serde_json::{json, Value};

fn service(name: &str, match_: Value) -> Value {
    json!({
        "service": name,
        "salt": format!("{name}-salt"),
        "versions": [{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}],
        "default_version": "stable",
        "session": {"sources": [{"cookie": "session_id"}],
                    "assign_cookie": {"name": "sc_id"},
                    "hold": {"cookie": "sc_hold", "idle_seconds": 600}},
        "override": {"tokens": ["0123456789abcdef-qa"]},
        "bucket_header": "x-canary-bucket",
        "reason_header": "x-canary-reason",
        "match": match_
    })
}

fn three() -> Value {
    json!({"services": [
        service("shop", json!({"hosts": ["shop.example.com"]})),
        service("payments", json!({"hosts": ["pay.example.com", "*.pay.example.com"]})),
        service("search", json!({"hosts": ["shop.example.com"], "path_prefixes": ["/search/"]})),
    ]})
}

fn setup(doc: &Value) -> (FakeHost, Root<FakeHost>) {
    let host = FakeHost::with_config(&doc.to_string());
    host.state().random = Some([7; crate::routing::cookies::ID_BYTES]);
    let mut root = Root::new(host.clone());
    assert!(root.on_configure(), "{:?}", host.logs(Level::Error));
    (host, root)
}

fn plan(doc: &Value, i: usize) -> Plan {
    let mut single = doc["services"][i].clone();
    single.as_object_mut().unwrap().remove("match");
    Plan::from_json(single.to_string().as_bytes()).unwrap()
}

fn value(host: &FakeHost, name: &str) -> i64 {
    host.metric(name)
        .unwrap_or_else(|| panic!("{name} undefined"))
        .value
}

const WRITES: [&str; 4] = [
    "set_header",
    "add_header",
    "remove_header",
    "set_filter_state",
];

#[test]
fn an_unmatched_request_is_left_exactly_as_it_came() {
    for flush in [1000, 0] {
        let mut doc = three();
        for s in doc["services"].as_array_mut().unwrap() {
            s["metrics_flush_ms"] = json!(flush);
        }
        let (host, root) = setup(&doc);
        let request = [
            (":authority", "other.example.org"),
            (":path", "/search/x"),
            ("x-canary-version", "canary"),
            ("x-canary-override", "canary"),
            ("x-canary-token", "0123456789abcdef-qa"),
            ("x-canary-bucket", "0001"),
            ("cookie", "session_id=abc"),
        ];
        let response = [(":status", "200"), ("x-canary-version", "from-upstream")];
        host.begin(&request);
        let before = host.state().calls.clone();
        let increments = host.calls_of("increment_metric");
        let mut s = root.stream();
        s.on_request_headers();
        let sent_upstream = host.state().request.clone();
        host.respond(Some("canary"), &response);
        s.on_response_headers(false);
        host.state().chunk = b"{}".to_vec();
        s.on_response_body(2, true);
        s.on_log();
        root.on_tick();
        let after = host.state().calls.clone();
        let made: Vec<_> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0)))
            .collect();
        // Two reads (authority, path: some service has prefixes) and one increment.
        assert_eq!(
            made,
            [("header", 2), ("increment_metric", 1)],
            "flush {flush}"
        );
        assert_eq!(host.calls_of("increment_metric") - increments, 1);
        for w in WRITES {
            assert_eq!(after.get(w), before.get(w), "{w}");
        }
        let lowered: Vec<(String, Vec<u8>)> = request
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(sent_upstream, lowered);
        assert_eq!(
            host.values(Map::Response, "x-canary-version"),
            ["from-upstream"]
        );
        assert!(host.values(Map::Response, "set-cookie").is_empty());
        assert!(host.state().filter_state.is_empty());
        assert_eq!(value(&host, names::UNMATCHED), 1);
        // Nothing else moved: every other counter is still 0.
        let moved: Vec<String> = host
            .state()
            .metrics
            .iter()
            .filter(|m| m.value != 0 && m.name.ends_with("_total"))
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(moved, [names::UNMATCHED]);
    }
}

#[test]
fn each_request_goes_to_its_hosts_service_with_its_own_salt() {
    let doc = three();
    let (host, root) = setup(&doc);
    let plans: Vec<Plan> = (0..3).map(|i| plan(&doc, i)).collect();
    for (authority, path, service) in [
        ("shop.example.com", "/cart", 0),
        ("SHOP.example.com:443", "/search/q?x", 2),
        ("shop.example.com", "/search", 0),
        ("pay.example.com", "/", 1),
        ("eu.pay.example.com:8443", "/charge", 1),
    ] {
        for key in ["alice", "bob", "carol", "dave"] {
            let c = format!("session_id={key}");
            host.begin(&[(":authority", authority), (":path", path), ("cookie", &c)]);
            let mut s = root.stream();
            s.on_request_headers();
            let want = plans[service].version_name(plans[service].bucket(key.as_bytes()));
            assert_eq!(
                host.values(Map::Request, "x-canary-version"),
                [want],
                "{authority}{path} {key}"
            );
            host.respond(Some(want), &[(":status", "200")]);
            s.on_response_headers(true);
            assert_eq!(host.values(Map::Response, "x-canary-version"), [want]);
            s.on_log();
        }
    }
    root.on_tick();
    // Per-service counters: the `service` label is each plan's.
    let total = |i: usize| -> i64 {
        let names = Catalogue::for_plan(&plans[i]);
        (0..2)
            .map(|v| value(&host, &names.request(v, Reason::Hash).unwrap().name))
            .sum()
    };
    assert_eq!([total(0), total(1), total(2)], [8, 8, 4]);
    assert_eq!(value(&host, names::UNMATCHED), 0);
    // The salts differ: some key lands differently in shop and payments.
    assert!((0..100).any(|i| {
        let k = format!("k{i}");
        plans[0].bucket(k.as_bytes()) != plans[1].bucket(k.as_bytes())
    }));
}

#[test]
fn matching_costs_one_authority_read_and_a_path_read_only_with_prefixes() {
    let single = |m: Option<Value>| {
        let mut s = service("shop", json!({}));
        match m {
            Some(m) => s["match"] = m,
            None => {
                s.as_object_mut().unwrap().remove("match");
            }
        }
        s
    };
    let count = |doc: &Value| -> (usize, usize) {
        let (host, root) = setup(doc);
        host.begin(&[
            (":authority", "shop.example.com"),
            (":path", "/search/a"),
            ("cookie", "session_id=alice"),
        ]);
        let before = host.call_count();
        let headers = host.calls_of("header");
        let mut s = root.stream();
        s.on_request_headers();
        host.respond(Some("canary"), &[(":status", "200")]);
        s.on_response_headers(true);
        s.on_log();
        (
            host.call_count() - before,
            host.calls_of("header") - headers,
        )
    };
    let (base, base_reads) = count(&single(None));
    let hosts_only = count(&json!({"services": [
        single(Some(json!({"hosts": ["shop.example.com"]}))),
        service("payments", json!({"hosts": ["pay.example.com"]})),
    ]}));
    assert_eq!(
        hosts_only,
        (base + 1, base_reads + 1),
        "one :authority read"
    );
    let with_prefix = count(&json!({"services": [
        single(Some(json!({"hosts": ["shop.example.com"]}))),
        service("search", json!({"hosts": ["shop.example.com"], "path_prefixes": ["/search/"]})),
    ]}));
    assert_eq!(
        with_prefix,
        (base + 2, base_reads + 2),
        "and one :path read"
    );
    // A single service with a match reads the authority too.
    assert_eq!(
        count(&single(Some(json!({"hosts": ["shop.example.com"]})))),
        (base + 1, base_reads + 1)
    );
}

#[test]
fn every_service_defines_its_catalogue_and_shares_one_tick() {
    let mut doc = three();
    doc["services"][1]["metrics_flush_ms"] = json!(250);
    let (host, root) = setup(&doc);
    assert_eq!(host.state().tick_ms, Some(250));
    for i in 0..3 {
        for m in Catalogue::for_plan(&plan(&doc, i)).iter() {
            assert!(host.metric(&m.name).is_some(), "{}", m.name);
        }
    }
    assert!(host.metric(names::UNMATCHED).is_some());
    // One summary line per service.
    let infos = host.logs(Level::Info);
    for name in ["shop", "payments", "search"] {
        let line = format!("service={name} ");
        assert!(infos.iter().any(|l| l.contains(&line)), "{infos:?}");
    }
    drop(root);
}

#[test]
fn a_new_configuration_retires_every_service_and_the_unmatched_count() {
    let doc = three();
    let (host, mut root) = setup(&doc);
    let shop = Catalogue::for_plan(&plan(&doc, 0));
    host.begin(&[(":authority", "nobody.org"), (":path", "/")]);
    root.stream().on_request_headers();
    host.begin(&[(":authority", "shop.example.com"), (":path", "/")]);
    root.stream().on_request_headers();
    assert_eq!(value(&host, names::UNMATCHED), 0, "batched");
    assert!(root.on_configure());
    assert_eq!(value(&host, names::UNMATCHED), 1);
    let shop_requests: i64 = (0..2)
        .flat_map(|v| Reason::ALL.iter().map(move |r| (v, *r)))
        // `flow` has no series without `session.hold.flows`.
        .filter_map(|(v, r)| shop.request(v, r))
        .map(|m| value(&host, &m.name))
        .sum();
    assert_eq!(shop_requests, 1);
    assert!(root.on_done());
}

#[test]
fn a_plugin_without_match_never_defines_the_unmatched_counter() {
    let mut single = service("shop", json!({}));
    single.as_object_mut().unwrap().remove("match");
    let (host, _root) = setup(&single);
    assert!(host.metric(names::UNMATCHED).is_none());
}
