//! End-to-end: upstream retries per served version, from Envoy's `x-envoy-attempt-count`.
//!
//! The shipped `envoy/envoy.yaml` sets `include_attempt_count_in_response` on its virtual host;
//! this test adds a retry policy to that virtual host (`retry_on: 5xx`, `num_retries: 2`; the
//! shipped config has none) and runs upstreams that answer 503 to the first `fails` attempts of
//! a request, then 200. For known traffic (0, 1, 2 retries and one request that exhausts them,
//! on canary and stable sessions) the per-version counters are exact, and a client-sent
//! `x-envoy-attempt-count` request header changes nothing.

use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, key, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{Handler, Request, Response, Upstream};
use sticky_canary_harness::prom::{Scrape, ScrapeExt};
use sticky_canary_harness::{addresses, upstreams_for, Keys};

/// Answers 503 to the first `fails` attempts of `/r/<id>/<fails>`, then 200.
fn flaky(name: &str) -> Handler {
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let name = name.to_string();
    Arc::new(move |req: &Request| {
        let fails: u32 = req
            .path
            .rsplit('/')
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(req.path.clone()).or_insert(0);
        *n += 1;
        let status = if *n <= fails { 503 } else { 200 };
        Response::new(status).header("x-upstream", &name)
    })
}

struct Setup {
    plan: Plan,
    _upstreams: Vec<Upstream>,
    envoy: Envoy,
}

/// The reference config, 50/50, with a 5xx retry policy on the virtual host; `attempt_count`
/// false removes the shipped `include_attempt_count_in_response`.
fn start(attempt_count: bool) -> Setup {
    envoy::check_prerequisites();
    let mut reference = EnvoyConfig::reference();
    let mut plugin: serde_json::Value = serde_json::from_str(&reference.plugin_config()).unwrap();
    plugin["versions"] =
        json!([{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}]);
    let plugin = plugin.to_string();
    let plan = Plan::from_json(plugin.as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, flaky);
    let mut cfg = EnvoyConfig::for_test(&plugin, &addresses(&upstreams), "stable");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&cfg.to_yaml()).unwrap();
    let mut route_config = envoy::get(&mut doc, &[envoy::HCM, &["route_config"]].concat()).clone();
    let vhost = envoy::get(&mut route_config, &["virtual_hosts", "0"])
        .as_mapping_mut()
        .unwrap();
    assert_eq!(
        vhost.get("include_attempt_count_in_response"),
        Some(&serde_yaml::Value::Bool(true)),
        "envoy/envoy.yaml ships the setting"
    );
    if !attempt_count {
        vhost.remove("include_attempt_count_in_response");
    }
    let policy: serde_yaml::Value = serde_yaml::from_str(
        "{retry_on: 5xx, num_retries: 2, retry_back_off: {base_interval: 0.001s, max_interval: 0.002s}}",
    )
    .unwrap();
    vhost.insert(key("retry_policy"), policy);
    cfg.set_hcm_field("route_config", route_config);
    let envoy = Envoy::start(&cfg).unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    Setup {
        plan,
        _upstreams: upstreams,
        envoy,
    }
}

/// What one version is expected to count.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    responses: u64,
    retries: u64,
    retried: u64,
    invalid: u64,
}

impl Setup {
    /// A session key the plan sends to each version.
    fn keys(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for k in Keys::new(16) {
            let v = &self.plan.versions[self.plan.bucket(k.as_bytes())].name;
            out.entry(v.clone()).or_insert(k);
            if out.len() == self.plan.versions.len() {
                return out;
            }
        }
        unreachable!()
    }

    /// Sends `/r/<id>/<fails>` on `version`'s session, optionally with a client-sent attempt
    /// count; returns the status and the attempt count the client was told.
    fn send(
        &self,
        keys: &HashMap<String, String>,
        version: &str,
        id: usize,
        fails: u32,
        client_attempts: Option<&str>,
    ) -> (u16, Option<String>) {
        let mut req = Request::get(&format!("/r/{version}-{id}/{fails}"))
            .header("cookie", &format!("session_id={}", keys[version]));
        if let Some(a) = client_attempts {
            req = req.header("x-envoy-attempt-count", a);
        }
        let r = sticky_canary_harness::http::send_once(self.envoy.listener(), &req).unwrap();
        assert_eq!(r.header_str("x-canary-version"), Some(version), "{req:?}");
        (
            r.status,
            r.header_str("x-envoy-attempt-count").map(str::to_string),
        )
    }

    /// Sends [`TRAFFIC`], checks each status (503 only when the retries ran out) and returns the
    /// attempt count the client was told for each request.
    fn send_traffic(&self) -> Vec<Option<String>> {
        let keys = self.keys();
        TRAFFIC
            .iter()
            .enumerate()
            .map(|(id, (version, fails, client))| {
                let (status, attempts) = self.send(&keys, version, id, *fails, *client);
                assert_eq!(status, if *fails > 2 { 503 } else { 200 }, "{id}");
                attempts
            })
            .collect()
    }

    fn counts(&self, s: &Scrape, version: &str) -> Counts {
        let l = [("service", "checkout"), ("version", version)];
        let responses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .map(|c| s.get("canary_responses_total", &[l[0], l[1], ("code_class", c)]) as u64)
            .sum();
        Counts {
            responses,
            retries: s.get("canary_upstream_retries_total", &l) as u64,
            retried: s.get("canary_retried_responses_total", &l) as u64,
            invalid: s.get("canary_attempt_count_invalid_total", &l) as u64,
        }
    }
}

/// (version, fails, client-sent attempt count) for every request sent.
const TRAFFIC: &[(&str, u32, Option<&str>)] = &[
    ("canary", 0, None),
    ("canary", 0, None),
    ("canary", 0, Some("7")),
    ("canary", 1, None),
    ("canary", 1, Some("x")),
    ("canary", 2, None),
    // Exhausts num_retries 2: three attempts, the 503 reaches the client.
    ("canary", 3, None),
    ("stable", 0, None),
    ("stable", 0, Some("3")),
    ("stable", 1, None),
    ("stable", 2, None),
    ("stable", 2, Some("1")),
];

#[test]
fn retries_are_counted_per_served_version() {
    let t = start(true);
    for ((id, attempts), (_, fails, _)) in t.send_traffic().into_iter().enumerate().zip(TRAFFIC) {
        let made = (fails + 1).min(3).to_string();
        assert_eq!(
            attempts.as_deref(),
            Some(made.as_str()),
            "request {id}: Envoy's own count, whatever the client sent"
        );
    }
    let s = t.envoy.scrape();
    // canary: 7 responses; retries 0+0+0+1+1+2+2 = 6; retried 4 (1, 1, 2, 3 fails).
    assert_eq!(
        t.counts(&s, "canary"),
        Counts {
            responses: 7,
            retries: 6,
            retried: 4,
            invalid: 0
        }
    );
    // stable: 5 responses; retries 0+0+1+2+2 = 5; retried 3.
    assert_eq!(
        t.counts(&s, "stable"),
        Counts {
            responses: 5,
            retries: 5,
            retried: 3,
            invalid: 0
        }
    );
}

#[test]
fn without_the_virtual_host_setting_retries_happen_but_are_not_counted() {
    let t = start(false);
    assert!(t.send_traffic().iter().all(Option::is_none));
    let s = t.envoy.scrape();
    for (v, responses) in [("canary", 7), ("stable", 5)] {
        assert_eq!(
            t.counts(&s, v),
            Counts {
                responses,
                ..Counts::default()
            },
            "{v}"
        );
    }
}
