//! Cheap correctness checks of `make bench`'s fixtures (`envoy/bench/`, the V8-floor crate). They
//! never time anything: the benchmark itself (`make bench`) never runs in `make test`.
//!
//! - every bench config passes `envoy --mode validate`, as checked in and in the direct-response
//!   mode the bench derives from it;
//! - every native variant's config is its wasm counterpart's rewritten for the native build
//!   (`sticky_canary_harness::native::to_native`), needing no process environment;
//! - the Lua peer and the native build route exactly like the filter (same upstream, same tag) on
//!   a set of keys and cookie shapes, and Lua's MurmurHash3 agrees with the published algorithm on
//!   many buckets, weights near 2^32 included;
//! - in direct-response mode every variant answers what the upstream would (status, headers, the
//!   1 KiB JSON body), and the business rules count it (a native variant as its wasm counterpart);
//! - nginx.conf and the direct-response routes serve the same response;
//! - filter-bucket routes every session like filter-route, through its 5 % bucket route, sends
//!   each one's bucket upstream and sets the hold cookie on exactly the stable responses;
//! - filter-flows: every request of its wrk script carries one flow cookie, valid for its session
//!   and naming the version the session hashes to; through Envoy each is found valid and decides
//!   (reason `flow`), with filter-bucket's routing, tag and hold, and no new flow cookie is set.
//!
//! The tests that start or validate a native variant need an Envoy that loads the native build
//! (1.39 or later): they are the `native_build_*` ones, for a run on an older Envoy to skip.
#![cfg(test)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, Envoy, Launch};
use sticky_canary_harness::http::{Client, Request, Upstream};
use sticky_canary_harness::native::{self, Build};
use sticky_canary_harness::{Keys, Observed};
use sticky_canary_tools::bench::{self, Filter, Mode, Variant, VARIANTS};

fn prerequisites() {
    envoy::check_prerequisites();
    if let Err(e) = bench::check_modules() {
        panic!("{e}");
    }
}

/// The native variants also need the native build.
fn native_prerequisites() {
    prerequisites();
    if let Err(e) = bench::check_native_module() {
        panic!("{e}");
    }
}

/// The variants of one build: the native build's, or every other one.
fn variants(native: bool) -> impl Iterator<Item = &'static Variant> {
    VARIANTS
        .iter()
        .filter(move |v| v.filter.is_native() == native)
}

/// Starts Envoy on a prepared bench config, as it is (each is written for its build).
fn start(doc: &serde_yaml::Value, name: &str) -> Envoy {
    let yaml = serde_yaml::to_string(doc).unwrap();
    let launch = Launch {
        build: Build::Wasm,
        ..Launch::default()
    };
    Envoy::start_yaml(&yaml, &launch).unwrap_or_else(|f| panic!("{name}: {f}"))
}

/// One echo upstream per version, named after it.
fn version_upstreams() -> Vec<Upstream> {
    ["canary", "stable"]
        .iter()
        .map(|n| Upstream::start(n).unwrap())
        .collect()
}

/// `doc` in proxy mode, each cluster at the upstream of its name, started.
fn start_proxied(mut doc: serde_yaml::Value, upstreams: &[Upstream], name: &str) -> Envoy {
    bench::prepare(&mut doc, Mode::Proxy, None).unwrap();
    for u in upstreams {
        bench::set_cluster(&mut doc, u.name(), u.addr()).unwrap();
    }
    start(&doc, name)
}

fn filter_plan() -> Plan {
    let doc = Variant::by_key("filter-route").unwrap().load().unwrap();
    Plan::from_json(bench::plugin_config(&doc).unwrap().as_bytes()).unwrap()
}

/// `envoy --mode validate` jobs for every variant of one build: as checked in (proxy mode, fixed
/// ports; the bench changes only ports and paths), and the direct-response mode the bench derives
/// from it (written into `dir`).
fn validate_jobs(native: bool, dir: &std::path::Path) -> Vec<(String, PathBuf)> {
    let mut jobs = Vec::new();
    for v in variants(native) {
        jobs.push((format!("{} (as checked in)", v.key), v.config_path()));
        let path = dir.join(format!("{}-direct.yaml", v.key));
        std::fs::write(&path, bench::config_yaml(v, Mode::Direct, None).unwrap()).unwrap();
        jobs.push((format!("{} (direct response)", v.key), path));
    }
    jobs
}

fn assert_validated(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "envoy --mode validate failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_bench_config_passes_envoy_validate() {
    prerequisites();
    let dir = tempfile::tempdir().unwrap();
    let mut jobs = validate_jobs(false, dir.path());
    // make bench-services: the filter-route service repeated 10 and 1 000 times.
    for n in [10, 1000] {
        let path = dir.path().join(format!("services-{n}.yaml"));
        std::fs::write(&path, bench::services::services_yaml(Some(n)).unwrap()).unwrap();
        jobs.push((format!("{n} services (direct response)"), path));
    }
    // Two at a time: a wasm config takes about a second to validate (V8 compiles the module).
    assert_validated(envoy::validate_all(&jobs, &envoy::workspace_root()));
}

#[test]
fn native_build_bench_configs_pass_envoy_validate() {
    native_prerequisites();
    let dir = tempfile::tempdir().unwrap();
    let jobs = validate_jobs(true, dir.path());
    // Validation loads the library. The validating Envoy gets no
    // ENVOY_DYNAMIC_MODULES_SEARCH_PATH, and Envoy then looks in its working directory: the
    // native configs (no relative paths) are validated from the library's directory.
    assert_validated(envoy::validate_all(&jobs, &native::native_dir()));
}

/// Requests the Lua peer and the filter must route identically, with the session key each one
/// carries (`None`: the default version).
fn routing_cases(plan: &Plan) -> Vec<(String, Request, Option<String>)> {
    let mut cases = Vec::new();
    let cookie = |v: &str| Request::get("/cart").header("cookie", v);
    // Keys of every length 1..=40 (the hash's 0–3-byte tails after the 16-byte salt), and enough
    // keys to land on the 5 % canary several times.
    let mut canary = 0;
    for (i, k) in Keys::new(7).take(200).enumerate() {
        let key: String = k.repeat(3).chars().take(1 + i % 40).collect();
        let on_canary = plan.version_name(plan.bucket(key.as_bytes())) == "canary";
        if i < 40 || (on_canary && canary < 8) {
            canary += usize::from(on_canary);
            cases.push((
                format!("key {key:?}"),
                bench::request(&key),
                Some(key.clone()),
            ));
        }
    }
    assert!(canary >= 5, "too few canary keys among the samples");
    let shapes: &[(&str, &str)] = &[
        ("session_id=\"quoted-key\"", "quoted-key"),
        ("  session_id  =  spaced-key  ;x=1", "spaced-key"),
        ("xsession_id=wrong; session_id=right-one", "right-one"),
        ("session_idx=wrong; session_id=right-two; a=b", "right-two"),
        ("junk; session_id; session_id=after-junk", "after-junk"),
        ("session_id=first; session_id=second", "first"),
        ("session_id=a=b=c", "a=b=c"),
        ("session_id=\u{fc}ber-caf\u{e9}", "\u{fc}ber-caf\u{e9}"),
    ];
    for (header, key) in shapes {
        cases.push((
            format!("cookie {header:?}"),
            cookie(header),
            Some((*key).to_string()),
        ));
    }
    cases.push((
        "empty cookie value falls through to x-user-id".into(),
        cookie("session_id=; a=1").header("x-user-id", "  header-user  "),
        Some("header-user".into()),
    ));
    cases.push((
        "no cookie: x-user-id".into(),
        Request::get("/").header("x-user-id", "user-42"),
        Some("user-42".into()),
    ));
    cases.push((
        "no key at all: default version".into(),
        Request::get("/").header("cookie", "a=1; b=2"),
        None,
    ));
    cases.push((
        "empty quoted value and blank header: default".into(),
        cookie("session_id=\"\"").header("x-user-id", " \t "),
        None,
    ));
    // A client cannot choose: the route header it sends is overwritten.
    let stable_key = Keys::new(3)
        .find(|k| plan.version_name(plan.bucket(k.as_bytes())) == "stable")
        .unwrap();
    cases.push((
        "spoofed route header".into(),
        cookie(&format!("session_id={stable_key}")).header("x-canary-version", "canary"),
        Some(stable_key),
    ));
    cases
}

/// Every native variant's config is its wasm counterpart's as the harness rewrites a config for
/// the native build (parsed and compared: comments and layout aside), its filter in the same
/// place with the same JSON document, and the rewrite leaves no environment variable for the
/// process (the bench starts Envoy with none of its own).
#[test]
fn native_configs_are_their_wasm_configs_rewritten() {
    let natives: Vec<&Variant> = variants(true).collect();
    let keys: Vec<&str> = natives.iter().map(|v| v.key).collect();
    for k in [
        "native-route",
        "native-headers",
        "native-guard",
        "native-json",
    ] {
        assert!(keys.contains(&k), "{k} is a variant: {keys:?}");
    }
    for v in natives {
        let wasm = Variant::by_key(v.wasm_key())
            .unwrap_or_else(|| panic!("{}: no variant {}", v.key, v.wasm_key()));
        assert_eq!(wasm.filter, Filter::StickyCanary, "{}", v.key);
        assert_eq!(v.flow_cookie, wasm.flow_cookie, "{}", v.key);
        let mut want = wasm.load().unwrap();
        let env = native::to_native(&mut want);
        assert!(env.is_empty(), "{}: needs process env {env:?}", v.key);
        let got = v.load().unwrap();
        assert!(
            got == want,
            "{} is not {} rewritten for the native build; want:\n{}",
            v.key,
            wasm.key,
            serde_yaml::to_string(&want).unwrap()
        );
        assert_eq!(
            bench::plugin_config(&got),
            bench::plugin_config(&wasm.load().unwrap()),
            "{}",
            v.key
        );
        assert_eq!(
            bench::metrics_flush(v).unwrap(),
            bench::metrics_flush(wasm).unwrap()
        );
    }
}

/// `peer` (a variant key) routes every one of [`routing_cases`] exactly as filter-route does,
/// and filter-route as the published algorithm says.
fn routes_like_the_filter(peer: &str) {
    let plan = filter_plan();
    let upstreams = version_upstreams();
    let envoys: Vec<Envoy> = ["filter-route", peer]
        .iter()
        .map(|k| start_proxied(Variant::by_key(k).unwrap().load().unwrap(), &upstreams, k))
        .collect();
    let mut clients: Vec<Client> = envoys
        .iter()
        .map(|e| Client::connect(e.listener()).unwrap())
        .collect();
    let mut seen = HashSet::new();
    for (what, req, key) in routing_cases(&plan) {
        let want = match &key {
            Some(k) => plan.version_name(plan.bucket(k.as_bytes())),
            None => plan.version_name(plan.default_version),
        };
        let [filter, other]: [Observed; 2] = [0, 1].map(|i| {
            let r = clients[i].send(&req).unwrap();
            Observed::from_response(&plan, &r)
        });
        assert!(
            filter.is_served_by(want),
            "filter, {what}: {filter:?}, want {want}"
        );
        assert_eq!(other, filter, "{peer} and the filter differ on {what}");
        seen.insert(want.to_string());
    }
    assert_eq!(seen.len(), 2, "both versions exercised: {seen:?}");
}

#[test]
fn lua_routes_like_the_filter() {
    prerequisites();
    routes_like_the_filter("lua");
}

#[test]
fn native_build_routes_like_the_filter() {
    native_prerequisites();
    routes_like_the_filter("native-route");
}

#[test]
fn lua_murmur3_matches_the_published_algorithm_on_many_buckets() {
    prerequisites();
    // The bench script with 16 versions whose weights add up to 4 294 967 280: every key's
    // bucket then shows 4 bits of its hash, and position = h × total needs the full 64 bits.
    let script = std::fs::read_to_string(bench::bench_dir().join("sticky_canary.lua")).unwrap();
    let line =
        "  versions = { { name = \"canary\", weight = 5 }, { name = \"stable\", weight = 95 } },";
    assert_eq!(script.matches(line).count(), 1, "the CONFIG versions line");
    let weight = 268_435_455u64;
    let lua_versions: Vec<String> = (0..16)
        .map(|i| format!("{{ name = \"v{i}\", weight = {weight} }}"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("sticky_canary_16.lua");
    std::fs::write(
        &script_path,
        script.replace(
            line,
            &format!("  versions = {{ {} }},", lua_versions.join(", ")),
        ),
    )
    .unwrap();
    let json_versions: Vec<String> = (0..16)
        .map(|i| format!("{{\"name\": \"v{i}\", \"weight\": {weight}}}"))
        .collect();
    let plan = Plan::from_json(
        format!(
            "{{\"service\": \"checkout\", \"salt\": \"checkout-2026-11\", \"versions\": [{}], \
             \"default_version\": \"v15\", \"session\": {{\"sources\": [{{\"cookie\": \"session_id\"}}, \
             {{\"header\": \"x-user-id\"}}]}}}}",
            json_versions.join(", ")
        )
        .as_bytes(),
    )
    .unwrap();

    let mut doc = Variant::by_key("lua").unwrap().load().unwrap();
    bench::prepare(&mut doc, Mode::Direct, None).unwrap();
    let yaml = serde_yaml::to_string(&doc).unwrap().replace(
        &bench::bench_dir()
            .join("sticky_canary.lua")
            .to_string_lossy()
            .into_owned(),
        &script_path.to_string_lossy(),
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let e = start(&doc, "lua-16");
    let mut c = Client::connect(e.listener()).unwrap();
    let mut buckets = HashSet::new();
    for (i, k) in Keys::new(11).take(400).enumerate() {
        let key: String = k.repeat(3).chars().take(1 + i % 41).collect();
        let want = plan.version_name(plan.bucket(key.as_bytes()));
        let r = c.send(&bench::request(&key)).unwrap();
        assert_eq!(r.header_str("x-canary-version"), Some(want), "key {key:?}");
        buckets.insert(want.to_string());
    }
    assert_eq!(buckets.len(), 16, "every bucket reached: {buckets:?}");
}

#[test]
fn direct_response_mode_answers_like_the_upstream_and_rules_count_it() {
    prerequisites();
    answers_like_the_upstream_and_counts(false);
}

#[test]
fn native_build_direct_response_mode_answers_like_the_upstream_and_rules_count_it() {
    native_prerequisites();
    answers_like_the_upstream_and_counts(true);
}

/// In direct-response mode, every variant of one build answers as [`bench::preflight`] wants, and
/// its business rules count that one response (a native variant's as its wasm counterpart's).
fn answers_like_the_upstream_and_counts(native: bool) {
    let key = bench::session_keys(1)[0].clone();
    for v in variants(native) {
        let mut doc = v.load().unwrap();
        bench::prepare(&mut doc, Mode::Direct, None).unwrap();
        let e = start(&doc, v.key);
        let problems = bench::preflight(v, e.listener(), &key);
        assert!(problems.is_empty(), "{}: {problems:?}", v.key);
        // The filter hands its counters to Envoy every metrics_flush_ms (zero without it); from
        // the variant, as the harness reads it from a wasm filter only.
        std::thread::sleep(bench::metrics_flush(v).unwrap() + Duration::from_millis(100));
        let stats = e.admin_get("/stats").text();
        let sum = |metric: &str| -> u64 {
            stats
                .lines()
                .filter(|l| l.contains(metric))
                .filter_map(|l| {
                    l.rsplit_once(": ")
                        .and_then(|(_, n)| n.trim().parse::<u64>().ok())
                })
                .sum()
        };
        match v.wasm_key() {
            "filter-headers" | "filter-headers-routed" | "filter-guard" | "filter-guard-pool" => {
                assert_eq!(sum("canary_business_orders_total"), 1, "{stats}");
                assert_eq!(sum("canary_business_order_value_total"), 4141, "{stats}");
                assert_eq!(sum("canary_business_payment_approved_total"), 1, "{stats}");
            }
            "filter-json" => {
                assert_eq!(sum("canary_business_tax_total"), 338, "{stats}");
                assert_eq!(sum("canary_business_skipped_total"), 0, "{stats}");
            }
            "filter-flows" => {
                assert!(v.flow_cookie);
                assert_eq!(
                    sum("outcome=.=valid;.;canary_flow_cookies_total"),
                    1,
                    "{stats}"
                );
                assert_eq!(sum("reason=.=flow;.;canary_requests_total"), 1, "{stats}");
            }
            _ => assert!(!v.flow_cookie, "{}", v.key),
        }
    }
}

#[test]
fn nginx_and_direct_response_serve_the_same_response() {
    let conf = std::fs::read_to_string(bench::bench_dir().join("nginx.conf")).unwrap();
    for (n, v) in bench::UPSTREAM_HEADERS {
        assert!(
            conf.contains(&format!("add_header {n} \"{v}\";")),
            "nginx.conf adds {n}: {v}"
        );
    }
    assert!(conf.contains("default_type application/json;"));
    assert!(conf.contains("return 200 '@BODY@';"));
    let body = bench::order_body().unwrap();
    assert_eq!(body.len(), 1024, "order.json is 1 KiB");
    assert!(
        !body.contains('\'') && !body.contains('$'),
        "safe inside nginx's quotes"
    );
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        j.pointer("/order/tax").and_then(|v| v.as_str()),
        Some("3.38")
    );
    // The requests carry a few realistic cookies, about 300 bytes.
    let cookie = bench::cookie_header(&bench::session_keys(1)[0]);
    assert!(
        (250..=350).contains(&cookie.len()),
        "{} bytes",
        cookie.len()
    );
}

#[test]
fn filter_bucket_routes_like_filter_route_and_carries_the_bucket_and_the_hold() {
    prerequisites();
    let route_plan = filter_plan();
    let doc = Variant::by_key("filter-bucket").unwrap().load().unwrap();
    let plan = Plan::from_json(bench::plugin_config(&doc).unwrap().as_bytes()).unwrap();
    let bucket_header = plan.bucket_header.clone().unwrap();
    assert!(plan.hold.is_some(), "the hold is on");
    // The first route is the 5 % cohort as `sticky-canary cohort 5%` prints it.
    let first = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0];
    assert_eq!(
        first["match"]["headers"][0]["name"].as_str(),
        Some(bucket_header.as_str())
    );
    assert_eq!(
        first["match"]["headers"][0]["string_match"]["safe_regex"]["regex"].as_str(),
        Some(sticky_canary_cli::cohort::regex(500).as_str())
    );
    let upstreams = version_upstreams();
    let e = start_proxied(doc, &upstreams, "filter-bucket");
    let mut c = Client::connect(e.listener()).unwrap();
    let mut seen = HashSet::new();
    for k in Keys::new(5).take(300) {
        let want = route_plan.version_name(route_plan.bucket(k.as_bytes()));
        let r = c.send(&bench::request(&k)).unwrap();
        assert!(
            Observed::from_response(&plan, &r).is_served_by(want),
            "key {k}: want {want}"
        );
        let digits = sticky_canary::routing::hash::bucket_digits(
            sticky_canary::routing::hash::bucket(&plan.salt, k.as_bytes()),
        );
        let sent: Vec<String> = r.json()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0].as_str() == Some(bucket_header.as_str()))
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect();
        assert_eq!(sent, [String::from_utf8_lossy(&digits)], "key {k}");
        let holds = r
            .header_values("set-cookie")
            .iter()
            .filter(|v| v.starts_with(b"canary_hold="))
            .count();
        assert_eq!(
            holds,
            usize::from(want == "stable"),
            "key {k}: the hold cookie"
        );
        seen.insert(want);
    }
    assert_eq!(seen.len(), 2, "both versions exercised");
}

/// `make bench-services`: with 10 services, the wrk script's requests reach every service (each
/// tagged by its own plan), none unmatched.
#[test]
fn the_services_bench_spreads_requests_over_every_service() {
    prerequisites();
    let yaml = bench::services::services_yaml(Some(10)).unwrap();
    let envoy = Envoy::start_yaml(&yaml, &Launch::default()).unwrap_or_else(|f| panic!("{f}"));
    let mut c = Client::connect(envoy.listener()).unwrap();
    let script = bench::services::wrk_script_hosts(10);
    let hosts: Vec<&str> = script
        .split("host: ")
        .skip(1)
        .map(|s| s.split('\\').next().unwrap())
        .take(20)
        .collect();
    assert_eq!(hosts.len(), 20);
    for (j, h) in hosts.iter().enumerate() {
        assert_eq!(*h, format!("s{}.bench.example", j % 10));
        let mut req = bench::request(&format!("k{j}"));
        req.headers.retain(|(n, _)| n != "host");
        let r = c.send(&req.header("host", h)).unwrap();
        assert_eq!(r.status, 200, "{h}");
        assert_eq!(r.header_values("x-canary-version").len(), 1, "{h}: tagged");
    }
    // The bench configs extract no tags: read the encoded names (`service=.=s0;.;…`).
    envoy.await_metrics_flush();
    let text = envoy
        .admin_get("/stats?filter=canary_(requests|unmatched)_total")
        .text();
    let sum = |part: &str| -> u64 {
        text.lines()
            .filter(|l| l.contains(part))
            .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
            .sum()
    };
    for i in 0..10 {
        let svc = format!("service=.=s{i};.;");
        assert_eq!(sum(&svc), 2, "{svc}\n{text}");
    }
    assert_eq!(sum("canary_unmatched_total"), 0, "{text}");
}

/// filter-flows' wrk script: each request carries exactly one flow cookie, last in its `Cookie`
/// header, valid for its own session now (MAC, expiry) and naming the version the session hashes
/// to, so that only the check differs from filter-bucket. No Envoy needed.
#[test]
fn filter_flows_script_carries_a_valid_flow_cookie_per_session() {
    let v = Variant::by_key("filter-flows").unwrap();
    assert!(v.flow_cookie);
    let plan = bench::plan(v).unwrap();
    let flows = plan.flows.as_ref().unwrap();
    assert!(
        flows.keyed(),
        "the key comes from the config's VM environment"
    );
    assert_eq!(flows.drain_seconds, 3600, "valid through any bench run");
    // Everything but the flows is filter-bucket's.
    let bucket = bench::plan(Variant::by_key("filter-bucket").unwrap()).unwrap();
    assert_eq!(plan.bucket_header, bucket.bucket_header);
    assert_eq!(plan.hold.is_some(), bucket.hold.is_some());
    let now = 1_800_000_000;
    let cookies = bench::FlowCookies::for_variant(v).unwrap();
    let keys = bench::session_keys(200);
    let script = bench::wrk_script_with_flows(keys.len(), &cookies, now).unwrap();
    let lines: Vec<&str> = script.lines().filter(|l| l.contains("cookie: ")).collect();
    assert_eq!(lines.len(), keys.len());
    let mut versions = HashSet::new();
    for (line, key) in lines.iter().zip(&keys) {
        let header = line
            .split("cookie: ")
            .nth(1)
            .unwrap()
            .split("\\r")
            .next()
            .unwrap();
        assert!(header.starts_with(&bench::cookie_header(key)), "{header}");
        let flow: Vec<&str> = header
            .split("; ")
            .filter(|c| c.starts_with("sc_flow="))
            .collect();
        assert_eq!(flow.len(), 1, "{header}");
        assert!(
            header.ends_with(flow[0]),
            "the flow cookie is last: {header}"
        );
        let value = flow[0].strip_prefix("sc_flow=").unwrap();
        let digest = sticky_canary::routing::flow::key_digest(key.as_bytes());
        let (outcome, version) = flows.check(value.as_bytes(), &digest, now + 1, |n| {
            plan.version_named(n)
        });
        assert_eq!(
            outcome,
            sticky_canary::routing::flow::Outcome::Valid,
            "{key}"
        );
        // (version, expiry): the session's own version, `drain_seconds` after issue.
        assert_eq!(
            version,
            Some((plan.bucket(key.as_bytes()), now + flows.drain_seconds)),
            "{key}"
        );
        // Not another session's.
        let other = sticky_canary::routing::flow::key_digest(b"another session");
        let (outcome, _) =
            flows.check(value.as_bytes(), &other, now + 1, |n| plan.version_named(n));
        assert_eq!(outcome, sticky_canary::routing::flow::Outcome::Invalid);
        versions.insert(plan.version_name(version.unwrap().0).to_string());
    }
    assert_eq!(versions.len(), 2, "both versions' flows: {versions:?}");
    // One session: wrk's fast path, the cookie set through wrk.headers.
    let one = bench::wrk_script_with_flows(1, &cookies, now).unwrap();
    assert!(
        one.contains("wrk.headers[\"cookie\"]") && one.contains("; sc_flow="),
        "{one}"
    );
}

/// filter-flows through Envoy: each session's request with its flow cookie is routed and tagged
/// like filter-route's, held like filter-bucket's (the hold cookie on exactly the stable
/// responses), decided by the cookie (reason `flow`, counted valid), and sets no flow cookie (a
/// read never does); the same request without it is decided by its hash.
#[test]
fn filter_flows_decides_every_request_by_its_valid_flow_cookie() {
    prerequisites();
    let route_plan = filter_plan();
    let v = Variant::by_key("filter-flows").unwrap();
    let doc = v.load().unwrap();
    let plan = Plan::from_json(bench::plugin_config(&doc).unwrap().as_bytes()).unwrap();
    let upstreams = version_upstreams();
    let e = start_proxied(doc, &upstreams, "filter-flows");
    let mut c = Client::connect(e.listener()).unwrap();
    let keys: Vec<String> = Keys::new(5).take(200).collect();
    let mut seen = HashSet::new();
    for k in &keys {
        let want = route_plan.version_name(route_plan.bucket(k.as_bytes()));
        let r = c.send(&bench::request_for(v, k).unwrap()).unwrap();
        assert!(
            Observed::from_response(&plan, &r).is_served_by(want),
            "key {k}: want {want}"
        );
        let set: Vec<String> = r
            .header_values("set-cookie")
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let holds = set.iter().filter(|v| v.starts_with("canary_hold=")).count();
        assert_eq!(holds, usize::from(want == "stable"), "key {k}: {set:?}");
        assert!(
            !set.iter().any(|v| v.starts_with("sc_flow=")),
            "key {k}: {set:?}"
        );
        seen.insert(want);
    }
    assert_eq!(seen.len(), 2, "both versions exercised");
    // Without its flow cookie, a session is decided by its hash as in filter-bucket.
    let r = c.send(&bench::request(&keys[0])).unwrap();
    assert_eq!(r.status, 200);
    e.await_metrics_flush();
    let stats = e
        .admin_get("/stats?filter=canary_(requests|flow_cookies)_total")
        .text();
    let sum = |part: &str| -> u64 {
        stats
            .lines()
            .filter(|l| l.contains(part))
            .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
            .sum()
    };
    let n = keys.len() as u64;
    assert_eq!(
        sum("outcome=.=valid;.;canary_flow_cookies_total"),
        n,
        "{stats}"
    );
    assert_eq!(
        sum("outcome=.=invalid;.;canary_flow_cookies_total"),
        0,
        "{stats}"
    );
    assert_eq!(
        sum("outcome=.=expired;.;canary_flow_cookies_total"),
        0,
        "{stats}"
    );
    assert_eq!(sum("reason=.=flow;.;canary_requests_total"), n, "{stats}");
    assert_eq!(sum("reason=.=hash;.;canary_requests_total"), 1, "{stats}");
}
