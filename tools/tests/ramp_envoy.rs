//! End-to-end: the ramp in plain Envoy by route changes only (`envoy/ramp/`), under a real Envoy
//! with the built module.
//!
//! - every shipped file passes `envoy --mode validate` (each step's routes inlined into the
//!   bootstrap, since validation does not read an RDS file), the live file is step 0, and every
//!   step file is the rendering of `sticky-canary cohort`'s regex, which selects exactly the
//!   buckets below the step's threshold;
//! - 2 000 returning sessions go 5 → 20 → 50 → 100 %, each step a route file moved over the
//!   watched one while two background clients keep sending: at each step the canary set is
//!   exactly the keys whose bucket (computed offline, published algorithm) is below the threshold,
//!   no request fails or is retried, no session moves canary → stable while ramping up, and the
//!   roll back (step 0 moved in) sends everyone to stable on the next request.
//!
//! This suite sits with the tools because it drives the same [`ramp::Ramp`] as `make demo` (one
//! copy of the RDS plumbing; the harness crate cannot depend on the tools).
#![cfg(test)]

use serde_yaml::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use sticky_canary::routing::hash::{bucket, bucket_digits};
use sticky_canary_harness::envoy::{self, get, key, HCM};
use sticky_canary_harness::http::{Client, Request, Response, Upstream};
use sticky_canary_harness::{Keys, Rng};
use sticky_canary_tools::ramp::{self, Ramp, SHIPPED_STEPS};

const SESSIONS: usize = 2000;
const BUCKET_HEADER: &str = "x-canary-bucket";

/// The shipped plugin configuration's salt.
fn salt() -> String {
    let cfg: serde_json::Value = serde_json::from_str(&ramp::config().plugin_config()).unwrap();
    assert_eq!(
        cfg["bucket_header"], BUCKET_HEADER,
        "the ramp config sends the bucket"
    );
    assert_eq!(
        cfg["versions"],
        serde_json::json!([{"name": "canary", "weight": 0}, {"name": "stable", "weight": 100}]),
        "the plugin's weights stay canary 0 / stable 100 during the ramp"
    );
    cfg["salt"].as_str().unwrap().to_string()
}

/// The regex of a step file's bucket route, if it has one.
fn bucket_regex(doc: &Value) -> Option<String> {
    doc["resources"][0]["virtual_hosts"][0]["routes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["match"]["headers"][0]["name"].as_str() == Some(BUCKET_HEADER))
        .map(|r| {
            r["match"]["headers"][0]["string_match"]["safe_regex"]["regex"]
                .as_str()
                .unwrap()
                .to_string()
        })
}

#[test]
fn shipped_ramp_files_validate_and_size_the_cohort_exactly() {
    envoy::check_prerequisites();
    let root = envoy::workspace_root();
    let (ok, out) = envoy::validate(&ramp::bootstrap_path(), &root);
    assert!(ok && out.contains("OK"), "envoy/ramp/envoy.yaml:\n{out}");
    salt();
    let step0 = ramp::load_yaml(&ramp::step_path(0)).unwrap();
    assert_eq!(
        ramp::load_yaml(&ramp::live_routes_path()).unwrap(),
        step0,
        "routes.yaml ships at step 0"
    );
    let dir = tempfile::tempdir().unwrap();
    for &p in SHIPPED_STEPS {
        let doc = ramp::load_yaml(&ramp::step_path(p)).unwrap();
        assert_eq!(doc, ramp::routes(p * 100).unwrap(), "steps/{p:02}.yaml");
        // The regex, matched whole as safe_regex does, accepts exactly the buckets below 100·p.
        let accepted = match bucket_regex(&doc) {
            Some(r) => {
                let re = regex::Regex::new(&format!("^(?:{r})$")).unwrap();
                (0..10_000u16)
                    .filter(|b| re.is_match(std::str::from_utf8(&bucket_digits(*b)).unwrap()))
                    .collect::<Vec<_>>()
            }
            None => Vec::new(),
        };
        assert_eq!(
            accepted,
            (0..(p * 100) as u16).collect::<Vec<_>>(),
            "steps/{p:02}.yaml"
        );
        // envoy --mode validate does not read RDS files: validate the routes inlined.
        let mut boot = ramp::load_yaml(&ramp::bootstrap_path()).unwrap();
        let mut rc = doc["resources"][0].clone();
        rc.as_mapping_mut().unwrap().remove("@type");
        let hcm = get(&mut boot, HCM).as_mapping_mut().unwrap();
        hcm.remove("rds");
        hcm.insert(key("route_config"), rc);
        let path = dir.path().join(format!("step-{p}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&boot).unwrap()).unwrap();
        let (ok, out) = envoy::validate(&path, &root);
        assert!(
            ok && out.contains("OK"),
            "steps/{p:02}.yaml inlined:\n{out}"
        );
    }
}

/// What one request showed: the upstream that served it and the bucket header it received.
fn observe(r: &Response) -> (String, Vec<String>) {
    let served = r.header_str("x-upstream").unwrap_or("none").to_string();
    assert_eq!(
        r.header_str("x-canary-version"),
        Some(served.as_str()),
        "the response is tagged with the version that served it"
    );
    let buckets = r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str() == Some(BUCKET_HEADER))
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect();
    (served, buckets)
}

fn request(key: &str) -> Request {
    Request::get("/cart").header("cookie", &format!("session_id={key}"))
}

/// Background load: sends the sessions' requests in a random order until stopped; counts
/// requests, failures (an error or a status other than 200) and retries, and, while ramping up,
/// the sessions this client saw on the canary and then on stable.
struct Load {
    stop: Arc<AtomicBool>,
    ramping_up: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<(u64, u64, u64)>>,
}

impl Load {
    fn start(listener: std::net::SocketAddr, keys: &[String], clients: u64) -> Load {
        let (stop, ramping_up, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicU64::new(0)),
        );
        let threads = (0..clients)
            .map(|seed| {
                let (stop, ramping_up, sent, keys) = (
                    stop.clone(),
                    ramping_up.clone(),
                    sent.clone(),
                    keys.to_vec(),
                );
                std::thread::spawn(move || {
                    let mut c = Client::connect(listener).unwrap();
                    let mut rng = Rng::new(seed + 1);
                    let mut on_canary: HashMap<usize, bool> = HashMap::new();
                    let (mut failed, mut moved_back) = (0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        let i = (rng.next_u64() % keys.len() as u64) as usize;
                        let canary = match c.send(&request(&keys[i])) {
                            Ok(r) if r.status == 200 => {
                                r.header_str("x-upstream") == Some("canary")
                            }
                            _ => {
                                failed += 1;
                                continue;
                            }
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        let before = on_canary.insert(i, canary);
                        if ramping_up.load(Ordering::Relaxed) && before == Some(true) && !canary {
                            moved_back += 1;
                        }
                    }
                    (failed, c.retries(), moved_back)
                })
            })
            .collect();
        Load {
            stop,
            ramping_up,
            sent,
            threads,
        }
    }

    /// Stops the clients: (failed requests, retried requests, canary → stable moves seen).
    fn finish(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    }
}

#[test]
fn ramp_by_route_swaps_under_load_moves_exactly_the_cohort() {
    envoy::check_prerequisites();
    let salt = salt();
    let upstreams: Vec<Upstream> = ["canary", "stable"]
        .iter()
        .map(|n| Upstream::start(n).unwrap())
        .collect();
    let addrs: Vec<(&str, std::net::SocketAddr)> =
        upstreams.iter().map(|u| (u.name(), u.addr())).collect();
    let ramp = Ramp::start(ramp::config(), &addrs, &ramp::routes_yaml(0).unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<String> = Keys::new(2026).take(SESSIONS).collect();
    let buckets: Vec<u16> = keys
        .iter()
        .map(|k| bucket(salt.as_bytes(), k.as_bytes()))
        .collect();
    let load = Load::start(ramp.envoy().listener(), &keys, 2);
    let mut c = Client::connect(ramp.envoy().listener()).unwrap();
    let mut previous: Vec<bool> = vec![false; SESSIONS];
    let mut shares = Vec::new();
    for &p in SHIPPED_STEPS.iter().skip(1).chain(&[0]) {
        if p == 0 {
            load.ramping_up.store(false, Ordering::Relaxed);
        }
        let sent_before = load.sent.load(Ordering::Relaxed);
        ramp.set_routes(&ramp::routes_yaml(p).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
        let during = load.sent.load(Ordering::Relaxed) - sent_before;
        assert!(during > 0, "step {p} %: no request while Envoy reloaded");
        let mut now = Vec::with_capacity(SESSIONS);
        for (k, b) in keys.iter().zip(&buckets) {
            // A client-sent bucket is removed first: it never puts anyone in the cohort.
            let r = c.send(&request(k).header(BUCKET_HEADER, "0000")).unwrap();
            assert_eq!(r.status, 200, "step {p} %, key {k}");
            let (served, seen) = observe(&r);
            assert_eq!(
                seen,
                [String::from_utf8_lossy(&bucket_digits(*b)).into_owned()],
                "step {p} %, key {k}: the bucket the upstream received"
            );
            let want = u32::from(*b) < p * 100;
            assert_eq!(
                served == "canary",
                want,
                "step {p} %, key {k}, bucket {b}: served by {served}"
            );
            now.push(want);
        }
        if p > 0 {
            let back = previous
                .iter()
                .zip(&now)
                .filter(|(a, b)| **a && !**b)
                .count();
            assert_eq!(back, 0, "step {p} %: sessions moved canary → stable");
        }
        // A request without a session key carries no bucket and stays on stable.
        let r = c.send(&Request::get("/cart")).unwrap();
        assert_eq!(observe(&r), ("stable".to_string(), Vec::new()), "no key");
        let n = now.iter().filter(|x| **x).count();
        shares.push(format!(
            "{p:>3} %: {n} of {SESSIONS} sessions on the canary ({:.2} %), {during} background requests during the reload",
            100.0 * n as f64 / SESSIONS as f64
        ));
        previous = now;
    }
    assert!(
        previous.iter().all(|x| !x),
        "the roll back: everyone on stable"
    );
    let (failed, retried, moved_back) = load.finish();
    eprintln!(
        "measured cohort shares per step:\n  {}",
        shares.join("\n  ")
    );
    eprintln!("background: {failed} failed, {retried} retried, {moved_back} canary → stable moves while ramping up");
    assert_eq!(failed, 0, "failed requests during the reloads");
    assert_eq!(retried, 0, "a route swap closes no connection");
    assert_eq!(
        moved_back, 0,
        "no session moved canary → stable while ramping up"
    );
    assert_eq!(c.retries(), 0);
    ramp.stop();
}
