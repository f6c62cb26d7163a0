//! End-to-end: which version served a request, read from Envoy's access log and from its spans.
//!
//! Every test starts its own Envoy from the shipped `envoy/envoy.yaml` (its stdout access log
//! and its tracing custom tags unchanged), adds a Zipkin tracer (HTTP/JSON v2) pointed at a
//! collector the test runs (an in-process upstream recording every POSTed span list), and
//! compares, request by request, what the client was told (`x-canary-version`,
//! `x-canary-reason`) with the access log line and the span of that request.

use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{self, Client, Request, Response, Upstream};
use sticky_canary_harness::{addresses, keys_for, upstreams_for};

/// The reference plugin config, 50/50, with the reason on the response (to compare with).
fn plugin_config() -> String {
    let mut v: Json = serde_json::from_str(&EnvoyConfig::reference().plugin_config()).unwrap();
    v["versions"] = json!([{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}]);
    v["reason_header"] = json!("x-canary-reason");
    v.to_string()
}

/// A Zipkin collector: records the body of every POST, answers 202.
fn collector() -> (Upstream, Arc<Mutex<Vec<Vec<u8>>>>) {
    let posts: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let seen = posts.clone();
    let handler: http::Handler = Arc::new(move |req: &Request| {
        if req.method == "POST" {
            seen.lock().unwrap().push(req.body.clone());
        }
        Response::new(202)
    });
    (
        Upstream::start_with("zipkin", None, handler).unwrap(),
        posts,
    )
}

/// What one test runs: the upstreams, the collector, Envoy.
struct Setup {
    plan: Plan,
    _upstreams: Vec<Upstream>,
    _collector: Upstream,
    spans: Arc<Mutex<Vec<Vec<u8>>>>,
    envoy: Envoy,
}

/// Starts everything; `edit` changes the Envoy config before the start (e.g. a reroute).
fn start(edit: impl FnOnce(&mut EnvoyConfig)) -> Setup {
    envoy::check_prerequisites();
    let plugin = plugin_config();
    let plan = Plan::from_json(plugin.as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, http::echo_handler);
    let (collector, spans) = collector();
    let mut cfg = EnvoyConfig::for_test(&plugin, &addresses(&upstreams), "stable");
    cfg.add_module_cluster("zipkin", collector.addr());
    // The shipped tracing block (its custom tags), plus a Zipkin provider.
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&cfg.to_yaml()).unwrap();
    let mut tracing = envoy::get(&mut doc, &[envoy::HCM, &["tracing"]].concat()).clone();
    let provider: serde_yaml::Value = serde_yaml::from_str(
        r#"
name: envoy.tracers.zipkin
typed_config:
  "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
  collector_cluster: zipkin
  collector_endpoint: /api/v2/spans
  collector_endpoint_version: HTTP_JSON
"#,
    )
    .unwrap();
    tracing
        .as_mapping_mut()
        .unwrap()
        .insert(envoy::key("provider"), provider);
    cfg.set_hcm_field("tracing", tracing);
    edit(&mut cfg);
    let envoy = Envoy::start(&cfg).unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    Setup {
        plan,
        _upstreams: upstreams,
        _collector: collector,
        spans,
        envoy,
    }
}

/// What the client was told about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Told {
    version: String,
    reason: String,
    /// The route header the upstream saw (the decision).
    route: String,
}

fn send(client: &mut Client, path: &str, key: Option<&str>) -> Told {
    let mut req = Request::get(path);
    if let Some(k) = key {
        req = req.header("cookie", &format!("session_id={k}"));
    }
    let r = client.send(&req).unwrap();
    assert_eq!(r.status, 200, "{path}");
    let route = r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0].as_str() == Some("x-canary-version"))
        .and_then(|p| p[1].as_str())
        .unwrap_or_default()
        .to_string();
    Told {
        version: r.header_str("x-canary-version").unwrap().to_string(),
        reason: r.header_str("x-canary-reason").unwrap().to_string(),
        route,
    }
}

/// The access log's fields of the request for `path`, once Envoy has written its line.
fn log_fields(line: &str) -> Option<(String, HashMap<String, String>)> {
    // [time] "GET /path HTTP/1.1" 200 - 1ms upstream=canary sticky_canary="canary hash" route_version=canary request_id=…
    let path = line.split('"').nth(1)?.split(' ').nth(1)?.to_string();
    let mut fields = HashMap::new();
    let (_, rest) = line.split_once(" upstream=")?;
    let rest = format!("upstream={rest}");
    let mut it = rest.as_str();
    while let Some((name, after)) = it.split_once('=') {
        let (value, next) = match after.strip_prefix('"') {
            Some(q) => q.split_once('"').unwrap_or((q, "")),
            None => after.split_once(' ').unwrap_or((after, "")),
        };
        fields.insert(name.trim().to_string(), value.trim().to_string());
        it = next.trim_start();
    }
    Some((path, fields))
}

/// Waits (bounded) until the access log has a line for every path; returns them by path.
fn access_lines(envoy: &Envoy, paths: &[String]) -> HashMap<String, HashMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let by_path: HashMap<_, _> = envoy
            .log()
            .lines()
            .filter(|l| l.contains(" sticky_canary="))
            .filter_map(log_fields)
            .collect();
        if paths.iter().all(|p| by_path.contains_key(p)) {
            return by_path;
        }
        assert!(
            Instant::now() < deadline,
            "access log lines missing after 15 s; log:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until the collector has a span for every path; returns their tags by path.
fn spans_by_path(setup: &Setup, paths: &[String]) -> HashMap<String, Json> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut by_path = HashMap::new();
        for body in setup.spans.lock().unwrap().iter() {
            let list: Json = serde_json::from_slice(body).unwrap_or_else(|e| {
                panic!(
                    "collector got non-JSON ({e}): {}",
                    String::from_utf8_lossy(body)
                )
            });
            for span in list.as_array().into_iter().flatten() {
                let tags = span["tags"].clone();
                let Some(url) = tags["http.url"].as_str() else {
                    continue;
                };
                let path = url
                    .split_once("://")
                    .map_or(url, |(_, r)| r.find('/').map_or("", |i| &r[i..]));
                by_path.insert(path.to_string(), tags);
            }
        }
        if paths.iter().all(|p| by_path.contains_key(p)) {
            return by_path;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing after 20 s ({} posts, {} paths with a span); log:\n{}",
            setup.spans.lock().unwrap().len(),
            by_path.len(),
            setup.envoy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_access_log_line_and_span_names_the_served_version_and_reason() {
    let s = start(|_| {});
    let mut client = Client::connect(s.envoy.listener()).unwrap();
    let mut told = Vec::new();
    let sessions = [
        keys_for(&s.plan, "canary", 6, 16),
        keys_for(&s.plan, "stable", 6, 16),
    ]
    .concat();
    for (i, key) in sessions.iter().enumerate() {
        // Each session twice: sticky, and two lines to match.
        for round in 0..2 {
            let path = format!("/obs/{i}/{round}");
            told.push((path.clone(), send(&mut client, &path, Some(key))));
        }
    }
    for i in 0..3 {
        let path = format!("/obs/anonymous/{i}");
        told.push((path.clone(), send(&mut client, &path, None)));
    }
    let versions: Vec<&str> = told.iter().map(|(_, t)| t.version.as_str()).collect();
    assert!(versions.contains(&"canary") && versions.contains(&"stable"));
    assert!(told.iter().any(|(_, t)| t.reason == "hash"));
    assert!(told.iter().any(|(_, t)| t.reason == "default"));

    let paths: Vec<String> = told.iter().map(|(p, _)| p.clone()).collect();
    let lines = access_lines(&s.envoy, &paths);
    let spans = spans_by_path(&s, &paths);
    for (path, t) in &told {
        let f = &lines[path];
        let expected = format!("{} {}", t.version, t.reason);
        assert_eq!(f["sticky_canary"], expected, "{path}: {f:?}");
        assert_eq!(f["route_version"], t.route, "{path}: {f:?}");
        assert_eq!(f["upstream"], t.version, "{path}: {f:?}");
        let tags = &spans[path];
        assert_eq!(tags["sticky_canary"], expected.as_str(), "{path}: {tags}");
        assert_eq!(
            tags["canary.route_version"],
            t.route.as_str(),
            "{path}: {tags}"
        );
    }
    s.envoy.stop();
}

#[test]
fn a_rerouted_cohort_is_logged_and_traced_as_the_version_that_served_it() {
    // A rollout controller dropped the canary route: the canary cohort reaches stable.
    let s = start(|cfg| cfg.reroute("canary", "stable"));
    let mut client = Client::connect(s.envoy.listener()).unwrap();
    let mut told = Vec::new();
    for (i, key) in keys_for(&s.plan, "canary", 4, 16).iter().enumerate() {
        let path = format!("/rerouted/{i}");
        let t = send(&mut client, &path, Some(key));
        // The decision said canary, stable served it.
        assert_eq!((t.route.as_str(), t.version.as_str()), ("canary", "stable"));
        told.push((path, t));
    }
    let paths: Vec<String> = told.iter().map(|(p, _)| p.clone()).collect();
    let lines = access_lines(&s.envoy, &paths);
    let spans = spans_by_path(&s, &paths);
    for path in &paths {
        assert_eq!(lines[path]["sticky_canary"], "stable hash", "{path}");
        assert_eq!(lines[path]["route_version"], "canary", "{path}");
        assert_eq!(spans[path]["sticky_canary"], "stable hash", "{path}");
        assert_eq!(spans[path]["canary.route_version"], "canary", "{path}");
    }
    s.envoy.stop();
}
