//! Several services in one plugin instance, under a real Envoy: the shipped
//! `envoy/shared-gateway.yaml` (one listener, a virtual host per service, one plugin carrying
//! shop, payments and search; a `reviews` host the plugin does not manage yet; an unmanaged
//! `status` host). Upstreams are in-process echo servers on loopback, one per cluster, named
//! `<version>@<backend>`; every Envoy is stopped when its test ends (dropping it kills it).
//!
//! Expected versions come from the published algorithm: `Plan::bucket` of the plan of the
//! request's own service (its salt, its weights).

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sticky_canary::plan::services::Services;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig, Launch};
use sticky_canary_harness::http::{echo_handler, Client, Request, Response, Upstream};
use sticky_canary_harness::prom::{Scrape, ScrapeExt};
use sticky_canary_harness::Keys;

/// (service, backend host of its clusters).
const BACKENDS: [(&str, &str); 4] = [
    ("shop", "storefront.shop.svc.cluster.local"),
    ("payments", "payments.payments.svc.cluster.local"),
    ("search", "search.search.svc.cluster.local"),
    ("reviews", "reviews.reviews.svc.cluster.local"),
];

struct Gateway {
    cfg: EnvoyConfig,
    plans: Vec<Plan>,
    _upstreams: Vec<Upstream>,
}

fn config_path() -> std::path::PathBuf {
    envoy::workspace_root().join("envoy/shared-gateway.yaml")
}

/// The shipped config with an echo upstream behind every cluster, free ports, the built module.
fn gateway() -> Gateway {
    let mut cfg = EnvoyConfig::load(&config_path());
    let mut upstreams = Vec::new();
    for (cluster, _) in cfg.cluster_addresses() {
        // outbound|8080|<version>|<backend> → "<version>@<backend>"; "status" stays.
        let parts: Vec<&str> = cluster.split('|').collect();
        let name = match parts.as_slice() {
            [_, _, version, backend] => format!("{version}@{backend}"),
            _ => cluster.clone(),
        };
        let u = Upstream::start_with(&name, None, echo_handler(&name)).expect("upstream");
        cfg.set_cluster_address(&cluster, u.addr());
        upstreams.push(u);
    }
    cfg.set_free_ports();
    cfg.set_wasm(&envoy::wasm_path());
    let plans = compile(&cfg.plugin_config());
    Gateway {
        cfg,
        plans,
        _upstreams: upstreams,
    }
}

fn compile(json: &str) -> Vec<Plan> {
    Services::from_json_with_env(json.as_bytes(), &|_| None)
        .expect("the plugin config compiles")
        .plans
}

fn plan<'a>(plans: &'a [Plan], service: &str) -> &'a Plan {
    plans.iter().find(|p| p.service == service).unwrap()
}

fn backend(service: &str) -> &'static str {
    BACKENDS.iter().find(|(s, _)| *s == service).unwrap().1
}

/// A request to `host` carrying `key` where `service` reads its session key.
fn request(host: &str, service: &str, key: Option<&str>) -> Request {
    let r = Request::get("/item?id=7").header("host", host);
    match (service, key) {
        ("payments", Some(k)) => r.header("x-merchant-id", k),
        (_, Some(k)) => r.header("cookie", &format!("session_id={k}")),
        (_, None) => r,
    }
}

/// (version, backend) of the upstream that answered.
fn served(r: &Response) -> (String, String) {
    let up = r.header_str("x-upstream").unwrap_or("").to_string();
    let (v, b) = up.split_once('@').unwrap_or(("", ""));
    (v.to_string(), b.to_string())
}

/// The request headers the upstream saw, as (name, value) in order.
fn seen_upstream(r: &Response) -> Vec<(String, String)> {
    r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Sum of `name` per version for one service.
/// Every service's request and response counters are exactly what was sent to it, per version
/// (`sent`: (service, version) → requests).
fn assert_counts_per_service(s: &Scrape, sent: &BTreeMap<(String, String), u64>) {
    for service in ["shop", "payments", "search"] {
        let want: BTreeMap<String, u64> = sent
            .iter()
            .filter(|((s, _), _)| s == service)
            .map(|((_, v), n)| (v.clone(), *n))
            .collect();
        assert_eq!(
            per_version(s, "canary_requests_total", service),
            want,
            "{service}: requests"
        );
        assert_eq!(
            per_version(s, "canary_responses_total", service),
            want,
            "{service}: responses"
        );
    }
}

fn per_version(s: &Scrape, name: &str, service: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for sample in s.with_prefix(name).filter(|x| x.name == name) {
        if sample.labels.get("service").map(String::as_str) == Some(service) {
            let v = sample.labels.get("version").cloned().unwrap_or_default();
            *out.entry(v).or_default() += sample.value as u64;
        }
    }
    out.retain(|_, n| *n > 0);
    out
}

/// Checks that `r` was served by `service`'s decision for `key` in every respect.
fn assert_decided(plans: &[Plan], service: &str, key: &str, r: &Response, what: &str) -> String {
    let p = plan(plans, service);
    let want = p.version_name(p.bucket(key.as_bytes())).to_string();
    assert_eq!(r.status, 200, "{what}");
    assert_eq!(
        served(r),
        (want.clone(), backend(service).to_string()),
        "{what}: {service} {key}"
    );
    assert_eq!(
        r.header_values("x-canary-version"),
        [want.as_bytes()],
        "{what}: the tag"
    );
    let route: Vec<_> = seen_upstream(r)
        .into_iter()
        .filter(|(n, _)| n == "x-canary-version")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        route,
        std::slice::from_ref(&want),
        "{what}: the route header upstream"
    );
    want
}

#[test]
fn shared_gateway_config_passes_envoy_validate() {
    envoy::check_prerequisites();
    let (ok, out) = envoy::validate(&config_path(), &envoy::workspace_root());
    assert!(ok, "envoy --mode validate failed:\n{out}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn three_services_on_one_listener_each_with_its_own_sessions_and_counters() {
    let g = gateway();
    let envoy = Envoy::start(&g.cfg).unwrap_or_else(|f| panic!("{f}"));
    let mut c = Client::connect(envoy.listener()).unwrap();
    let mut sent: BTreeMap<(String, String), u64> = BTreeMap::new();
    let hosts = [
        ("shop", "shop.example.com"),
        ("shop", "WWW.Shop.example.com:8443"),
        ("payments", "pay.example.com"),
        ("payments", "eu.pay.example.com"),
        ("search", "search.example.com"),
    ];
    let keys: Vec<String> = Keys::new(15).take(120).collect();
    for (service, host) in hosts {
        for k in &keys {
            let r = c.send(&request(host, service, Some(k))).unwrap();
            let v = assert_decided(&g.plans, service, k, &r, host);
            assert!(r.header_values("set-cookie").is_empty(), "{host}: {k}");
            *sent.entry((service.to_string(), v)).or_default() += 1;
        }
    }
    // Each service's own salt and weights: the same keys split differently per service, and
    // roughly as weighted (shop 20 %, payments 50 %, search 10 % canary; exactness is per key).
    let canary = |s: &str| sent.get(&(s.to_string(), "canary".into())).copied();
    let share = |s: &str, n: u64| canary(s).unwrap_or(0) as f64 / n as f64;
    assert!((0.08..0.35).contains(&share("shop", 240)), "{sent:?}");
    assert!((0.35..0.65).contains(&share("payments", 240)), "{sent:?}");
    assert!((0.02..0.22).contains(&share("search", 120)), "{sent:?}");
    let moved = keys.iter().any(|k| {
        let p = |s| plan(&g.plans, s).bucket(k.as_bytes());
        p("shop") != p("search")
    });
    assert!(
        moved,
        "some session is canary in one service, stable in another"
    );

    // A cookie is minted only where a service asks for it (shop's assign_cookie), never on
    // another service's host or an unmanaged one.
    let r = c.send(&request("shop.example.com", "shop", None)).unwrap();
    let minted = r.header_str("set-cookie").unwrap_or("").to_string();
    assert!(minted.starts_with("sc_session="), "{minted}");
    let minted_version = served(&r).0;
    *sent
        .entry(("shop".to_string(), minted_version))
        .or_default() += 1;
    for (service, host) in [
        ("payments", "pay.example.com"),
        ("search", "search.example.com"),
        ("none", "status.example.com"),
    ] {
        let r = c.send(&request(host, service, None)).unwrap();
        assert_eq!(r.status, 200, "{host}");
        assert!(r.header_values("set-cookie").is_empty(), "{host}");
        if service != "none" {
            *sent
                .entry((service.to_string(), "stable".into()))
                .or_default() += 1;
        }
    }

    // Per-service counters, exact; the unmanaged request counted once, nowhere else.
    let s = envoy.scrape();
    assert_counts_per_service(&s, &sent);
    assert_eq!(s.get("canary_unmatched_total", &[]), 1.0);
}

#[test]
fn an_unmanaged_host_is_served_exactly_as_without_the_filter() {
    let g = gateway();
    let with = Envoy::start(&g.cfg).unwrap_or_else(|f| panic!("{f}"));
    let mut bare_cfg = g.cfg.clone();
    bare_cfg.without_wasm_filter();
    let without = Envoy::start(&bare_cfg).unwrap_or_else(|f| panic!("{f}"));
    // Everything the filter would read, strip, replace or mint on a managed host.
    let hostile = Request::get("/health?full=1")
        .header("host", "status.example.com")
        .header("x-canary-version", "canary")
        .header("x-canary-override", "canary")
        .header("x-canary-token", "0123456789abcdef-qa")
        .header("x-canary-bucket", "0001")
        .header("x-merchant-id", "m_1")
        .header("x-envoy-attempt-count", "3")
        .header("cookie", "session_id=abc; sc_session=def; sc_hold=1");
    // Per request, not per filter: Envoy's request id, the date, the upstream time.
    let per_request = ["x-request-id", "date", "x-envoy-upstream-service-time"];
    let strip = |h: Vec<(String, String)>| -> Vec<(String, String)> {
        h.into_iter()
            .filter(|(n, _)| !per_request.contains(&n.as_str()))
            .collect()
    };
    let response_headers = |r: &Response| -> Vec<(String, String)> {
        strip(
            r.headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), String::from_utf8_lossy(v).into()))
                .collect(),
        )
    };
    let mut both = Vec::new();
    for envoy in [&with, &without] {
        let r = send_once(envoy, &hostile);
        assert_eq!(r.status, 200);
        both.push((strip(seen_upstream(&r)), response_headers(&r), r));
    }
    let (up_with, resp_with, r_with) = &both[0];
    let (up_without, resp_without, _) = &both[1];
    assert_eq!(up_with, up_without, "the request headers the upstream saw");
    assert_eq!(
        resp_with, resp_without,
        "the response headers the client got"
    );
    // Spelled out: the client's version header reached the unmanaged upstream untouched (its
    // routes must not match on it), the override and bucket headers too, no cookie was added.
    for (name, value) in [
        ("x-canary-version", "canary"),
        ("x-canary-override", "canary"),
        ("x-canary-bucket", "0001"),
    ] {
        assert!(
            up_with.contains(&(name.to_string(), value.to_string())),
            "{name}: {up_with:?}"
        );
    }
    assert_eq!(r_with.header_str("x-upstream"), Some("status"));
    assert!(r_with.header_values("set-cookie").is_empty());
    // The upstream's own x-canary-version (the echo sets its name) is not replaced.
    assert_eq!(r_with.header_str("x-canary-version"), Some("status"));
    let s = with.scrape();
    assert_eq!(s.get("canary_unmatched_total", &[]), 1.0);
    assert!(
        s.with_prefix("canary_requests_total")
            .all(|x| x.value == 0.0),
        "no service counted it"
    );
}

fn send_once(envoy: &Envoy, req: &Request) -> Response {
    Client::connect(envoy.listener())
        .unwrap()
        .send(req)
        .expect("request through Envoy")
}

/// What the load thread saw: (service, key, phase at send, version, tagged).
type Seen = Vec<(String, String, u8, String, bool)>;

#[test]
fn a_reload_adding_a_fourth_service_under_load_loses_nothing_and_moves_no_session() {
    let g = gateway();
    let envoy = Envoy::start_dynamic(&g.cfg).unwrap_or_else(|f| panic!("{f}"));
    let listener = envoy.listener();
    let keys: Vec<String> = Keys::new(16).take(25).collect();
    let targets: Vec<(&str, &str)> = vec![
        ("shop", "shop.example.com"),
        ("payments", "pay.example.com"),
        ("search", "search.example.com"),
        ("reviews", "reviews.example.com"),
    ];
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let load = {
        let (phase, stop, seen, failures) =
            (phase.clone(), stop.clone(), seen.clone(), failures.clone());
        let (keys, targets): (Vec<String>, Vec<(String, String)>) = (
            keys.clone(),
            targets
                .iter()
                .map(|(s, h)| (s.to_string(), h.to_string()))
                .collect(),
        );
        std::thread::spawn(move || {
            let mut c = Client::connect(listener).unwrap();
            let mut i = 0usize;
            // Bounded: at most 60 s of load whatever happens in the main thread.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                let (service, host) = &targets[i % targets.len()];
                let key = &keys[(i / targets.len()) % keys.len()];
                i += 1;
                let at = phase.load(Ordering::SeqCst);
                match c.send(&request(host, service, Some(key))) {
                    Ok(r) if r.status == 200 => {
                        let tagged = r.header_values("x-canary-version").len() == 1
                            && !r.header_str("x-canary-version").unwrap_or("").contains('@');
                        seen.lock().unwrap().push((
                            service.clone(),
                            key.clone(),
                            at,
                            served(&r).0,
                            tagged,
                        ));
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{host}: status {}", r.status)),
                    Err(e) => failures.lock().unwrap().push(format!("{host}: {e}")),
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    // The push: the same listener, the plugin now also carrying reviews (50/50, its own salt).
    let mut doc: Value = serde_json::from_str(&g.cfg.clone().plugin_config()).unwrap();
    doc["services"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "service": "reviews",
            "salt": "reviews-2026-12",
            "match": {"hosts": ["reviews.example.com"]},
            "versions": [{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}],
            "default_version": "stable",
            "session": {"sources": [{"cookie": "session_id"}]}
        }));
    let mut next = g.cfg.clone();
    next.set_plugin_config(&doc.to_string());
    let plans = compile(&next.clone().plugin_config());
    phase.store(1, Ordering::SeqCst);
    envoy.reload(&next).unwrap();
    phase.store(2, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();

    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "lost requests: {failures:?}");
    let seen = seen.lock().unwrap();
    let count = |p: u8| seen.iter().filter(|s| s.2 == p).count();
    assert!(
        count(0) > 40 && count(2) > 40,
        "load before and after: {} / {}",
        count(0),
        count(2)
    );
    let mut reviews_canary_after = 0;
    for (service, key, at, version, tagged) in seen.iter() {
        let p = plan(&plans, service);
        let decided = p.version_name(p.bucket(key.as_bytes()));
        if service != "reviews" {
            // Before, during and after the push: the same version for the same session.
            assert_eq!(version, decided, "{service} {key} moved (phase {at})");
            assert!(tagged, "{service} {key}");
        } else if *at == 0 {
            // Not a service yet: untouched, untagged, the last route (stable).
            assert_eq!(version, "stable", "reviews before the push");
            assert!(!tagged, "reviews before the push is left as it came");
        } else if *at == 2 {
            assert_eq!(version, decided, "reviews {key} after the push");
            assert!(tagged);
            reviews_canary_after += usize::from(version == "canary");
        }
    }
    assert!(reviews_canary_after > 0, "the new service's canary serves");
}

#[test]
fn per_service_counters_are_exact_with_four_workers() {
    let g = gateway();
    let launch = Launch {
        concurrency: 4,
        ..Launch::default()
    };
    let envoy = Envoy::start_yaml(&g.cfg.to_yaml(), &launch).unwrap_or_else(|f| panic!("{f}"));
    let listener = envoy.listener();
    let plans = Arc::new(g.plans.clone());
    let hosts = [
        ("shop", "shop.example.com"),
        ("payments", "pay.example.com"),
        ("search", "search.example.com"),
        ("none", "status.example.com"),
    ];
    // Eight connections in parallel: Envoy spreads them over its workers.
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let plans = plans.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(listener).unwrap();
                let mut sent: BTreeMap<(String, String), u64> = BTreeMap::new();
                for (i, k) in Keys::new(100 + t).take(60).enumerate() {
                    let (service, host) = hosts[i % hosts.len()];
                    let r = c.send(&request(host, service, Some(&k))).unwrap();
                    assert_eq!(r.status, 200);
                    let v = if service == "none" {
                        "none".to_string()
                    } else {
                        assert_decided(&plans, service, &k, &r, host)
                    };
                    *sent.entry((service.to_string(), v)).or_default() += 1;
                }
                sent
            })
        })
        .collect();
    let mut sent: BTreeMap<(String, String), u64> = BTreeMap::new();
    for t in threads {
        for (k, n) in t.join().unwrap() {
            *sent.entry(k).or_default() += n;
        }
    }
    let s = envoy.scrape();
    assert_counts_per_service(&s, &sent);
    let unmatched = sent
        .get(&("none".into(), "none".into()))
        .copied()
        .unwrap_or(0);
    assert_eq!(unmatched, 120);
    assert_eq!(s.get("canary_unmatched_total", &[]), unmatched as f64);
}
