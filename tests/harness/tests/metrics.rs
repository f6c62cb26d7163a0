//! End-to-end: per-version business counters under a real Envoy, read from `/stats/prometheus`
//! exactly as Prometheus would, with the shipped `stats_config` and with the one an Istio
//! bootstrap generates.

use serde_json::json;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{Client, Request, Upstream};
use sticky_canary_harness::prom::{Scrape, ScrapeExt};
use sticky_canary_harness::shop::{order_body, query, shop};
use sticky_canary_harness::{addresses, upstreams_for};

/// The shipped plugin config (its business rules), with these weights and a header session key.
fn shop_config(canary: u32, stable: u32, max_body_bytes: usize) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&EnvoyConfig::reference().plugin_config()).unwrap();
    v["versions"] =
        json!([{"name": "canary", "weight": canary}, {"name": "stable", "weight": stable}]);
    v["session"] = json!({"sources": [{"header": "x-user-id"}]});
    v["max_body_bytes"] = json!(max_body_bytes);
    v.to_string()
}

struct Shop {
    plan: Plan,
    _upstreams: Vec<Upstream>,
    envoy: Envoy,
}

impl Shop {
    fn start(plugin_config: &str) -> Shop {
        Shop::start_with(plugin_config, |_| {})
    }

    fn start_with(plugin_config: &str, edit: impl FnOnce(&mut EnvoyConfig)) -> Shop {
        let plan = Plan::from_json(plugin_config.as_bytes()).unwrap();
        let upstreams = upstreams_for(&plan, shop);
        let pairs = addresses(&upstreams);
        let mut cfg = EnvoyConfig::for_test(
            plugin_config,
            &pairs,
            plan.version_name(plan.default_version),
        );
        // Histograms reach the admin output on a stats flush; flush every second in tests.
        cfg.set_top_level(
            "stats_flush_interval",
            serde_yaml::Value::String("1s".into()),
        );
        edit(&mut cfg);
        let envoy =
            Envoy::start(&cfg).unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
        Shop {
            plan,
            _upstreams: upstreams,
            envoy,
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.envoy.listener()).unwrap()
    }
}

/// Expected per-version figures, computed independently of the filter.
#[derive(Default, Debug, Clone, PartialEq)]
struct Expect {
    requests: u64,
    classes: [u64; 5],
    orders: u64,
    order_value_cents: u64,
    order_value_squares: u64,
    order_value_invalid: u64,
    approved: u64,
    tax_count: u64,
    tax_invalid: u64,
    not_json: u64,
    malformed: u64,
}

fn lbl(v: &str) -> [(&str, &str); 2] {
    [("service", "checkout"), ("version", v)]
}

fn check_version(s: &Scrape, v: &str, e: &Expect) {
    let l = lbl(v);
    let with = |extra: (&'static str, &'static str)| [l[0], l[1], extra];
    assert_eq!(
        s.get("canary_requests_total", &with(("reason", "hash"))) as u64,
        e.requests,
        "{v} requests"
    );
    for (i, c) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().enumerate() {
        let got = s.get("canary_responses_total", &[l[0], l[1], ("code_class", c)]) as u64;
        assert_eq!(got, e.classes[i], "{v} responses {c}");
    }
    assert_eq!(
        s.get("canary_business_orders_total", &l) as u64,
        e.orders,
        "{v} orders"
    );
    assert_eq!(
        s.get("canary_business_order_value_total", &l) as u64,
        e.order_value_cents,
        "{v} order value"
    );
    // Exact as an f64 below 2^53; the test's sums stay far below.
    assert_eq!(
        s.get("canary_business_order_value_squares_total", &l) as u64,
        e.order_value_squares,
        "{v} squares"
    );
    assert_eq!(
        s.get(
            "canary_business_invalid_total",
            &with(("metric", "order_value"))
        ) as u64,
        e.order_value_invalid,
        "{v} invalid totals"
    );
    assert_eq!(
        s.get("canary_business_auth_approved_total", &l) as u64,
        e.approved,
        "{v} approvals"
    );
    assert_eq!(
        s.get("canary_business_tax_count", &l) as u64,
        e.tax_count,
        "{v} tax count"
    );
    assert_eq!(
        s.get("canary_business_invalid_total", &with(("metric", "tax"))) as u64,
        e.tax_invalid,
        "{v} invalid taxes"
    );
    assert_eq!(
        s.get(
            "canary_business_skipped_total",
            &with(("reason", "not_json"))
        ) as u64,
        e.not_json,
        "{v} not json"
    );
    assert_eq!(
        s.get(
            "canary_business_skipped_total",
            &with(("reason", "malformed"))
        ) as u64,
        e.malformed,
        "{v} malformed"
    );
    for reason in ["compressed", "too_large", "incomplete"] {
        let got = s.get(
            "canary_business_skipped_total",
            &[l[0], l[1], ("reason", reason)],
        );
        assert_eq!(got, 0.0, "{v} skipped {reason}");
    }
    assert_eq!(s.get("canary_version_weight", &l), 50.0, "{v} weight gauge");
}

#[test]
fn counters_are_exact_per_version_after_known_traffic() {
    let shop = Shop::start(&shop_config(50, 50, 65536));
    // Every series exists at zero before any traffic (Flagger's "no values found").
    let s0 = shop.envoy.scrape();
    for v in ["canary", "stable"] {
        assert_eq!(s0.get("canary_business_orders_total", &lbl(v)), 0.0);
        assert_eq!(
            s0.get(
                "canary_responses_total",
                &[lbl(v)[0], lbl(v)[1], ("code_class", "5xx")]
            ),
            0.0
        );
    }

    let mut c = shop.client();
    let mut expect: HashMap<String, Expect> = HashMap::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..480u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let cents = rng % 100_000;
        let total = format!("{}.{:02}", cents / 100, cents % 100);
        let tax_cents = rng % 5_000;
        let tax = format!("{}.{:02}", tax_cents / 100, tax_cents % 100);
        let key = format!("user-{i}");
        let version = shop
            .plan
            .version_name(shop.plan.bucket(key.as_bytes()))
            .to_string();
        let e = expect.entry(version.clone()).or_default();
        e.requests += 1;
        let path = match i % 8 {
            0 => {
                e.classes[1] += 1;
                e.orders += 1;
                e.order_value_cents += cents;
                e.order_value_squares += cents * cents;
                e.approved += 1;
                e.tax_count += 1;
                format!("/pay?order=o{i}&total={total}&tax={tax}&auth=approved")
            }
            1 => {
                e.classes[1] += 1;
                e.orders += 1;
                e.order_value_cents += cents;
                e.order_value_squares += cents * cents;
                format!("/pay?order=o{i}&total={total}&auth=declined")
            }
            2 => {
                e.classes[4] += 1;
                "/pay?status=500".to_string()
            }
            3 => {
                e.classes[3] += 1;
                e.not_json += 1;
                "/missing?status=404&ct=text/html".to_string()
            }
            4 => {
                // More fraction digits than the scale: counted as invalid, never added.
                e.classes[1] += 1;
                e.orders += 1;
                e.order_value_invalid += 1;
                e.tax_invalid += 1;
                format!("/pay?order=o{i}&total=1.234&tax=0.001")
            }
            5 => {
                e.classes[1] += 1;
                e.orders += 1;
                e.order_value_invalid += 1;
                format!("/pay?order=o{i}&total=-5")
            }
            6 => {
                e.classes[1] += 1;
                e.orders += 1;
                e.order_value_cents += 1_234_567;
                e.order_value_squares += 1_234_567 * 1_234_567;
                e.approved += 1;
                e.tax_count += 1;
                format!("/pay?status=201&order=o{i}&total=12345.67&tax={tax}&auth=approved")
            }
            _ => {
                e.classes[1] += 1;
                e.orders += 1;
                e.order_value_cents += 1;
                e.order_value_squares += 1;
                e.malformed += 1;
                format!("/pay?order=o{i}&total=0.01&body=malformed")
            }
        };
        let r = c
            .send(&Request::get(&path).header("x-user-id", &key))
            .unwrap();
        assert_eq!(
            r.header_str("x-canary-version"),
            Some(version.as_str()),
            "{path}"
        );
    }
    let want_tax: u64 = expect.values().map(|e| e.tax_count).sum();
    let s = shop.envoy.scrape_until(|s| {
        ["canary", "stable"]
            .iter()
            .map(|v| s.value("canary_business_tax_count", &lbl(v)).unwrap_or(0.0) as u64)
            .sum::<u64>()
            == want_tax
    });
    for v in ["canary", "stable"] {
        let e = expect.get(v).cloned().unwrap_or_default();
        eprintln!("{v}: {e:?}");
        check_version(&s, v, &e);
    }
}

/// A raw HTTP/1.1 upstream that answers every request with a chunked JSON body of `size` bytes
/// (from the query) in several chunks.
fn chunked_upstream() -> (
    SocketAddr,
    std::thread::JoinHandle<()>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let h = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let size = query(&path)
                        .get("size")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(1024);
                    let body = order_body(Some("2.50"), Some("approved"), size);
                    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nx-upstream: stable\r\n\r\n".to_vec();
                    for chunk in body.chunks(body.len() / 3 + 1) {
                        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        out.extend_from_slice(chunk);
                        out.extend_from_slice(b"\r\n");
                        if conn.write_all(&out).is_err() {
                            return;
                        }
                        out.clear();
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    if conn.write_all(b"0\r\n\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, h, stop)
}

#[test]
fn bodies_reach_the_client_byte_identical_and_only_bounded_bodies_are_read() {
    // All traffic to stable (canary weight 0); max_body_bytes 64 KiB.
    let max = 65536;
    let shop = Shop::start(&shop_config(0, 100, max));
    let mut c = shop.client();
    let sizes = [1024usize, max, max + 1, 1 << 20, 4 << 20];
    let mut counted = 0;
    let mut too_large = 0;
    for size in sizes {
        let r = c
            .send(
                &Request::get(&format!("/pay?tax=1.00&auth=approved&size={size}"))
                    .header("x-user-id", "u"),
            )
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            order_body(Some("1.00"), Some("approved"), size),
            "{size} bytes: body altered"
        );
        if size <= max {
            counted += 1;
        } else {
            too_large += 1;
        }
    }
    let s = shop.envoy.scrape_until(|s| {
        s.value("canary_business_tax_count", &lbl("stable")) == Some(counted as f64)
    });
    let l = lbl("stable");
    assert_eq!(
        s.get("canary_business_auth_approved_total", &l),
        counted as f64
    );
    assert_eq!(s.get("canary_business_tax_count", &l), counted as f64);
    assert_eq!(
        s.get(
            "canary_business_skipped_total",
            &[l[0], l[1], ("reason", "too_large")]
        ),
        too_large as f64
    );
}

#[test]
fn chunked_responses_are_read_and_bounded() {
    let (addr, _h, _stop) = chunked_upstream();
    let canary = Upstream::start("canary").unwrap();
    let plugin = shop_config(0, 100, 65536);
    let mut cfg = EnvoyConfig::for_test(
        &plugin,
        &[("canary", canary.addr()), ("stable", addr)],
        "stable",
    );
    cfg.set_top_level(
        "stats_flush_interval",
        serde_yaml::Value::String("1s".into()),
    );
    let envoy = Envoy::start(&cfg).unwrap_or_else(|f| panic!("{}", f.log));
    let mut c = Client::connect(envoy.listener()).unwrap();
    for (size, _) in [(3000usize, true), (50_000, true), (200_000, false)] {
        let r = c
            .send(&Request::get(&format!("/?size={size}")).header("x-user-id", "u"))
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            order_body(Some("2.50"), Some("approved"), size),
            "{size}: body altered"
        );
    }
    let l = lbl("stable");
    let s = envoy.scrape_until(|s| s.value("canary_business_tax_count", &l) == Some(2.0));
    assert_eq!(s.get("canary_business_auth_approved_total", &l), 2.0);
    assert_eq!(s.get("canary_business_tax_count", &l), 2.0);
    assert_eq!(
        s.get(
            "canary_business_skipped_total",
            &[l[0], l[1], ("reason", "too_large")]
        ),
        1.0
    );
}

#[test]
fn head_204_gzip_and_non_json_are_passed_through_untouched() {
    let shop = Shop::start(&shop_config(0, 100, 65536));
    let mut c = shop.client();
    let l = lbl("stable");
    // HEAD: headers only (the order header still counts), nothing read from a body.
    let r = c
        .send(
            &Request::new("HEAD", "/pay?order=o1&tax=1.00&auth=approved").header("x-user-id", "u"),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // 204: no body.
    let r = c
        .send(&Request::get("/pay?status=204&auth=approved").header("x-user-id", "u"))
        .unwrap();
    assert_eq!(r.status, 204);
    // gzip-encoded JSON: skipped as compressed, delivered byte-identical.
    let r = c
        .send(&Request::get("/pay?enc=gzip&tax=1.00&auth=approved").header("x-user-id", "u"))
        .unwrap();
    assert_eq!(r.body, order_body(Some("1.00"), Some("approved"), 0));
    assert_eq!(r.header_str("content-encoding"), Some("gzip"));
    // Not JSON.
    let r = c
        .send(&Request::get("/page?ct=text/html&auth=approved").header("x-user-id", "u"))
        .unwrap();
    assert_eq!(r.body, order_body(None, Some("approved"), 0));

    let s = shop.envoy.scrape();
    assert_eq!(
        s.get("canary_business_orders_total", &l),
        1.0,
        "the HEAD's order header"
    );
    assert_eq!(
        s.get("canary_business_auth_approved_total", &l),
        0.0,
        "no body was read"
    );
    assert_eq!(
        s.get(
            "canary_responses_total",
            &[l[0], l[1], ("code_class", "2xx")]
        ),
        4.0
    );
    let skipped = |reason| {
        s.get(
            "canary_business_skipped_total",
            &[l[0], l[1], ("reason", reason)],
        )
    };
    assert_eq!(skipped("compressed"), 1.0);
    assert_eq!(skipped("not_json"), 1.0);
    assert_eq!(
        skipped("too_large") + skipped("malformed") + skipped("incomplete"),
        0.0
    );
}

#[test]
fn header_only_configs_publish_no_body_series() {
    let mut v: serde_json::Value = serde_json::from_str(&shop_config(50, 50, 65536)).unwrap();
    v["business_metrics"] =
        json!([{"name": "orders", "kind": "counter", "header": "x-order-id", "status": "2xx"}]);
    let shop = Shop::start(&v.to_string());
    let mut c = shop.client();
    c.send(&Request::get("/pay?order=1").header("x-user-id", "a"))
        .unwrap();
    c.send(&Request::get("/pay?order=2&status=500").header("x-user-id", "a"))
        .unwrap();
    let s = shop.envoy.scrape();
    assert_eq!(s.with_prefix("canary_business_skipped").count(), 0);
    let version = shop.plan.version_name(shop.plan.bucket(b"a"));
    assert_eq!(
        s.get("canary_business_orders_total", &lbl(version)),
        1.0,
        "status filter 2xx"
    );
}

/// The labels come out identically with the stats config an Istio bootstrap renders for
/// `extraStatTags: [service, version, reason, code_class, metric, grpc_status]` and
/// `proxyStatsMatcher.inclusionPrefixes: ["wasmcustom."]`.
#[test]
fn istio_bootstrap_stats_config_yields_the_same_series() {
    let fixture = envoy::workspace_root().join("tests/harness/fixtures/istio-stats-config.yaml");
    let istio: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let shop = Shop::start_with(&shop_config(50, 50, 65536), |cfg| {
        cfg.set_top_level("stats_config", istio["stats_config"].clone());
    });
    let plain = Shop::start(&shop_config(50, 50, 65536));
    for s in [&shop, &plain] {
        let mut c = s.client();
        for i in 0..40 {
            let path = format!("/pay?order=o{i}&total=10.00&tax=1.00&auth=approved");
            c.send(&Request::get(&path).header("x-user-id", &format!("u{i}")))
                .unwrap();
        }
    }
    let ready = |s: &Scrape| {
        ["canary", "stable"]
            .iter()
            .map(|v| s.value("canary_business_tax_count", &lbl(v)).unwrap_or(0.0))
            .sum::<f64>()
            == 40.0
    };
    let (a, b) = (
        shop.envoy.scrape_until(ready),
        plain.envoy.scrape_until(ready),
    );
    type Series = (String, Vec<(String, String)>, f64);
    let ours = |s: &Scrape| -> Vec<Series> {
        let mut v: Vec<_> = s
            .with_prefix("canary_")
            .filter(|x| !x.name.ends_with("_sum") && !x.name.ends_with("_bucket"))
            .map(|x| {
                (
                    x.name.clone(),
                    x.labels.clone().into_iter().collect(),
                    x.value,
                )
            })
            .collect();
        v.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        v
    };
    assert_eq!(
        ours(&a),
        ours(&b),
        "Istio and plain Envoy print the same canary series"
    );
    // Per version: 7 reasons + 5 code classes + 1 weight + 3 counters/sums + the sum's squares +
    // the tax histogram's _count + 2 invalid + 5 skipped + 3 retry series (upstream retries,
    // retried responses, invalid attempt counts) + writes.
    assert_eq!(
        ours(&a).len(),
        2 * (7 + 5 + 1 + 3 + 1 + 1 + 2 + 5 + 3 + 1),
        "{}",
        a.text
    );
    for x in a.with_prefix("canary_") {
        let keys: Vec<&str> = x.labels.keys().map(String::as_str).collect();
        assert!(
            keys.contains(&"service") && keys.contains(&"version"),
            "{x:?}"
        );
        assert!(
            keys.iter()
                .all(|k| *k == "le" || sticky_canary::metrics::TAGS.contains(k)),
            "stray label: {x:?}"
        );
    }
    assert_eq!(
        a.get("canary_business_order_value_total", &lbl("canary"))
            + a.get("canary_business_order_value_total", &lbl("stable")),
        40_000.0
    );
    // The Istio stats matcher (inclusion list) was in force: Envoy's own HTTP stats are gone
    // there, ours are kept.
    assert_eq!(a.with_prefix("envoy_http_downstream_rq_total").count(), 0);
    assert!(b.with_prefix("envoy_http_downstream_rq_total").count() > 0);
}

/// Responses are attributed to the version whose cluster served them: when the route table sends
/// the canary cohort to stable (a controller rolling back), the tag and the response-side counters
/// say stable, while the request counter still records the decision. Istio's subset cluster
/// names (`outbound|port|subset|host`) are understood.
#[test]
fn responses_are_attributed_to_the_cluster_that_served_them() {
    for istio_names in [false, true] {
        let plugin = shop_config(50, 50, 65536);
        let plan = Plan::from_json(plugin.as_bytes()).unwrap();
        let ups: Vec<Upstream> = ["canary", "stable"]
            .iter()
            .map(|v| Upstream::start_with(v, None, shop(v)).unwrap())
            .collect();
        let pairs: Vec<_> = ups.iter().map(|u| (u.name(), u.addr())).collect();
        let mut cfg = EnvoyConfig::for_test(&plugin, &pairs, "stable");
        let (canary_cluster, stable_cluster) = if istio_names {
            let c = "outbound|80|canary|checkout.shop.svc.cluster.local";
            let s = "outbound|80|stable|checkout.shop.svc.cluster.local";
            cfg.rename_cluster("canary", c);
            cfg.rename_cluster("stable", s);
            (c, s)
        } else {
            ("canary", "stable")
        };
        // First half of the run: normal routing. Then the canary cohort is sent to stable.
        let envoy = Envoy::start_dynamic(&cfg).unwrap_or_else(|f| panic!("{}", f.log));
        let canary_keys: Vec<String> = (0..400)
            .map(|i| format!("u{i}"))
            .filter(|k| plan.version_name(plan.bucket(k.as_bytes())) == "canary")
            .take(40)
            .collect();
        let mut c = Client::connect(envoy.listener()).unwrap();
        let send = |c: &mut Client, k: &str| {
            c.send(&Request::get("/pay?order=o1&total=1.00").header("x-user-id", k))
                .unwrap()
        };
        for k in &canary_keys[..20] {
            let r = send(&mut c, k);
            assert_eq!(r.header_str("x-upstream"), Some("canary"));
            assert_eq!(
                r.header_str("x-canary-version"),
                Some("canary"),
                "istio names: {istio_names}"
            );
        }
        let mut rolled_back = cfg.clone();
        rolled_back.reroute(canary_cluster, stable_cluster);
        envoy.reload(&rolled_back).unwrap();
        let mut c = Client::connect(envoy.listener()).unwrap();
        for k in &canary_keys[20..] {
            let r = send(&mut c, k);
            assert_eq!(
                r.header_str("x-upstream"),
                Some("stable"),
                "the cohort is now served by stable"
            );
            assert_eq!(
                r.header_str("x-canary-version"),
                Some("stable"),
                "the tag names who served it"
            );
        }
        let s = envoy.scrape();
        let with = |v: &'static str, k: &'static str, x: &'static str| {
            [("service", "checkout"), ("version", v), (k, x)]
        };
        assert_eq!(
            s.get("canary_requests_total", &with("canary", "reason", "hash")),
            40.0,
            "decisions"
        );
        assert_eq!(
            s.get(
                "canary_responses_total",
                &with("canary", "code_class", "2xx")
            ),
            20.0
        );
        assert_eq!(
            s.get(
                "canary_responses_total",
                &with("stable", "code_class", "2xx")
            ),
            20.0
        );
        assert_eq!(s.get("canary_business_orders_total", &lbl("canary")), 20.0);
        assert_eq!(s.get("canary_business_orders_total", &lbl("stable")), 20.0);
    }
}

/// `attribution: response_header`: the destination the route picked names the serving version
/// in the response header (what Istio renders for `headers.response.set` per destination), and
/// the filter believes it instead of reading the cluster. Shown by a destination labelled with a
/// version other than its cluster's; a destination without the header falls back to the cluster;
/// an upstream's own value never counts (the route overwrites it, or it names no version).
#[test]
fn attribution_by_the_destinations_response_header() {
    let mut v: serde_json::Value = serde_json::from_str(&shop_config(50, 50, 65536)).unwrap();
    v["attribution"] = json!("response_header");
    let plugin = v.to_string();
    let plan = Plan::from_json(plugin.as_bytes()).unwrap();
    // Each upstream sends a tag of its own: stable pretends to be canary, canary sends "v9".
    let spoofing = |name: &'static str, tag: &'static str| {
        let inner = shop(name);
        let h: sticky_canary_harness::http::Handler =
            Arc::new(move |r: &Request| inner(r).header("x-canary-version", tag));
        Upstream::start_with(name, None, h).unwrap()
    };
    let ups = [spoofing("canary", "v9"), spoofing("stable", "canary")];
    let pairs: Vec<_> = ups.iter().map(|u| (u.name(), u.addr())).collect();
    let base = EnvoyConfig::for_test(&plugin, &pairs, "stable");
    let header = "x-canary-version";
    let routed = |canary: &[(&str, u32, Option<&str>)]| {
        let mut cfg = base.clone();
        cfg.split("stable", &[("stable", 100, Some("stable"))], header);
        cfg.split("canary", canary, header);
        cfg
    };
    let envoy = Envoy::start_dynamic(&routed(&[
        ("canary", 100, Some("canary")),
        ("stable", 0, Some("stable")),
    ]))
    .unwrap_or_else(|f| panic!("{}", f.log));
    let canary_keys: Vec<String> = (0..400)
        .map(|i| format!("u{i}"))
        .filter(|k| plan.version_name(plan.bucket(k.as_bytes())) == "canary")
        .take(40)
        .collect();
    let mut phases = canary_keys.chunks(10);
    let mut phase = |upstream: &str, tag: &str, what: &str| {
        let mut c = Client::connect(envoy.listener()).unwrap();
        for k in phases.next().unwrap() {
            let r = c
                .send(&Request::get("/pay?order=o1&total=1.00").header("x-user-id", k))
                .unwrap();
            assert_eq!(r.header_str("x-upstream"), Some(upstream), "{what}");
            assert_eq!(r.header_str(header), Some(tag), "{what}");
            assert_eq!(r.header_values(header).len(), 1, "{what}");
        }
    };
    phase("canary", "canary", "the canary destination says canary");
    // A controller moves the canary route's weight to its stable destination (Argo Rollouts'
    // abort with Istio): the stable destination's header names stable, over the upstream's own.
    envoy
        .reload(&routed(&[
            ("canary", 0, Some("canary")),
            ("stable", 100, Some("stable")),
        ]))
        .unwrap();
    phase("stable", "stable", "moved to stable");
    // A destination labelled stable although its cluster is canary: the label is believed.
    envoy
        .reload(&routed(&[("canary", 100, Some("stable"))]))
        .unwrap();
    phase("canary", "stable", "the label is what counts");
    // No label on the destination: the cluster decides, and the upstream's "v9" is replaced.
    envoy.reload(&routed(&[("canary", 100, None)])).unwrap();
    phase("canary", "canary", "fallback to the cluster");

    let s = envoy.scrape();
    let with = |v: &'static str, k: &'static str, x: &'static str| {
        [("service", "checkout"), ("version", v), (k, x)]
    };
    assert_eq!(
        s.get("canary_requests_total", &with("canary", "reason", "hash")),
        40.0
    );
    for version in ["canary", "stable"] {
        assert_eq!(
            s.get(
                "canary_responses_total",
                &with(version, "code_class", "2xx")
            ),
            20.0,
            "{version}"
        );
        assert_eq!(s.get("canary_business_orders_total", &lbl(version)), 20.0);
    }
}

/// Counters are kept in the VM and handed to Envoy every `metrics_flush_ms`; nothing is lost when
/// a new configuration replaces the plugin instance (the old one flushes when Envoy is done with
/// it), and `metrics_flush_ms: 0` updates Envoy on every request.
#[test]
fn counters_reach_envoy_on_flush_and_when_the_plugin_is_replaced() {
    let with_flush = |ms: u64| {
        let mut v: serde_json::Value = serde_json::from_str(&shop_config(50, 50, 65536)).unwrap();
        v["metrics_flush_ms"] = json!(ms);
        v.to_string()
    };
    let plan = Plan::from_json(with_flush(0).as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, shop);
    let pairs = addresses(&upstreams);
    let cfg = |ms: u64| EnvoyConfig::for_test(&with_flush(ms), &pairs, "stable");
    let envoy = Envoy::start_dynamic(&cfg(60_000)).unwrap_or_else(|f| panic!("{}", f.log));
    let requests = |s: &Scrape| -> f64 {
        s.with_prefix("canary_requests_total")
            .filter(|x| x.labels.get("service").map(String::as_str) == Some("checkout"))
            .map(|x| x.value)
            .sum()
    };
    let send = |n: usize, from: usize| {
        let mut c = Client::connect(envoy.listener()).unwrap();
        for i in from..from + n {
            let r = c
                .send(&Request::get("/").header("x-user-id", &format!("user-{i}")))
                .unwrap();
            assert_eq!(r.status, 200);
        }
    };

    // A one-minute interval: nothing has reached Envoy yet, the VM holds all 30.
    send(30, 0);
    assert_eq!(
        requests(&envoy.scrape_now()),
        0.0,
        "counted before any flush"
    );
    // Replacing the plugin instance (a listener update) flushes what the old one held.
    envoy.reload(&cfg(0)).unwrap();
    let after_reload = envoy.scrape_until(|s| requests(s) >= 30.0);
    assert_eq!(requests(&after_reload), 30.0, "lost or doubled on reload");
    // Interval 0: every request is in Envoy's counters as soon as it is answered.
    send(10, 30);
    assert_eq!(requests(&envoy.scrape_now()), 40.0);
    // A short interval: counters arrive by themselves, exactly.
    envoy.reload(&cfg(100)).unwrap();
    send(10, 40);
    let s = envoy.scrape_until(|s| requests(s) >= 50.0);
    assert_eq!(requests(&s), 50.0);
    assert!(
        envoy.log().contains("metrics_flush_ms=100"),
        "the configure log line names the interval"
    );
}
