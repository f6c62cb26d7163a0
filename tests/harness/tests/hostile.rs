//! Hostile traffic under a real Envoy: nothing a client or an upstream sends may make the filter
//! cause an error, and the counters must stay consistent.

use serde_json::json;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{Envoy, EnvoyConfig};
use sticky_canary_harness::http::{Client, Request, Response, Upstream};
use sticky_canary_harness::prom::{Scrape, ScrapeExt};
use sticky_canary_harness::shop::{order_body, shop};

fn plugin() -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&EnvoyConfig::reference().plugin_config()).unwrap();
    v["versions"] = json!([{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}]);
    v.to_string()
}

fn responses(s: &Scrape) -> f64 {
    s.with_prefix("canary_responses_total")
        .map(|x| x.value)
        .sum()
}

fn requests(s: &Scrape) -> f64 {
    s.with_prefix("canary_requests_total")
        .map(|x| x.value)
        .sum()
}

/// HTTP/2 (prior knowledge) and HTTP/1.1 requests get the same decision, tag and counting.
#[test]
fn http2_and_http1_decide_alike() {
    let curl_ok = Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"))
        .unwrap_or(false);
    assert!(
        curl_ok,
        "this test drives HTTP/2 with curl; install curl with HTTP/2 support"
    );
    let plan = Plan::from_json(plugin().as_bytes()).unwrap();
    let ups: Vec<Upstream> = ["canary", "stable"]
        .iter()
        .map(|v| Upstream::start(v).unwrap())
        .collect();
    let pairs: Vec<_> = ups.iter().map(|u| (u.name(), u.addr())).collect();
    let envoy = Envoy::start(&EnvoyConfig::for_test(&plugin(), &pairs, "stable"))
        .unwrap_or_else(|f| panic!("{}", f.log));
    let mut c = Client::connect(envoy.listener()).unwrap();
    for i in 0..20 {
        let key = format!("h2-user-{i}");
        let want = plan.version_name(plan.bucket(key.as_bytes()));
        let url = format!("http://{}/", envoy.listener());
        // Two Cookie headers over HTTP/2: Envoy joins them; the key is in the second.
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "--http2-prior-knowledge",
                "-w",
                "%{http_version} %header{x-canary-version}",
            ])
            .args([
                "-H",
                "cookie: a=1",
                "-H",
                &format!("cookie: session_id={key}"),
                &url,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(text, format!("2 {want}"), "HTTP/2, {key}");
        let r = c
            .send(
                &Request::get("/")
                    .header("cookie", "a=1")
                    .header("cookie", &format!("session_id={key}")),
            )
            .unwrap();
        assert_eq!(
            r.header_str("x-canary-version"),
            Some(want),
            "HTTP/1.1, {key}"
        );
    }
    assert_eq!(requests(&envoy.scrape()), 40.0);
}

/// Header values up to 64 KiB (with Envoy's header limit raised), non-UTF-8 bytes in the session
/// header, and a 304 with no body: every request answered, and sane.
#[test]
fn huge_and_binary_headers_and_bodiless_responses() {
    let plugin = plugin();
    let plan = Plan::from_json(plugin.as_bytes()).unwrap();
    let ups: Vec<Upstream> = ["canary", "stable"]
        .iter()
        .map(|v| {
            let name = v.to_string();
            Upstream::start_with(
                v,
                None,
                Arc::new(move |req: &Request| {
                    if req.path == "/not-modified" {
                        Response::new(304).header("x-upstream", &name)
                    } else {
                        Response::new(200)
                            .header("x-upstream", &name)
                            .header("content-type", "application/json")
                            .body(order_body(Some("1.00"), Some("approved"), 0))
                    }
                }),
            )
            .unwrap()
        })
        .collect();
    let pairs: Vec<_> = ups.iter().map(|u| (u.name(), u.addr())).collect();
    let mut cfg = EnvoyConfig::for_test(&plugin, &pairs, "stable");
    // Envoy's default header limit is 60 KiB; allow 96 KiB so the filter sees 64 KiB values.
    cfg.set_hcm_field("max_request_headers_kb", serde_yaml::Value::from(96));
    let envoy = Envoy::start(&cfg).unwrap_or_else(|f| panic!("{}", f.log));
    let mut c = Client::connect(envoy.listener()).unwrap();
    let big = "v".repeat(64 * 1024);
    // Not UTF-8, but legal on the wire (obs-text); control bytes are refused by Envoy's codec.
    let binary_key: &[u8] = b"\xff\xfe\x80user\xc3\x28";
    let cases: Vec<(&str, Request, Option<String>)> = vec![
        (
            "64 KiB session header",
            Request::get("/").header("x-user-id", &big),
            Some(plan.version_name(plan.bucket(big.as_bytes())).to_string()),
        ),
        (
            "64 KiB cookie among others",
            Request::get("/").header("cookie", &format!("a=1; session_id={big}; b=2")),
            Some(plan.version_name(plan.bucket(big.as_bytes())).to_string()),
        ),
        (
            "64 KiB unrelated header",
            Request::get("/").header("x-junk", &big),
            Some("stable".to_string()),
        ),
        (
            "non-UTF-8 session header",
            Request::get("/").header_bytes("x-user-id", binary_key),
            Some(plan.version_name(plan.bucket(binary_key)).to_string()),
        ),
        (
            "304 without a body",
            Request::get("/not-modified").header("x-user-id", "u304"),
            None,
        ),
    ];
    for (what, req, want) in cases {
        let r = c.send(&req).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(r.status == 200 || r.status == 304, "{what}: {}", r.status);
        let tag = r.header_str("x-canary-version").map(str::to_string);
        assert_eq!(
            tag.as_deref(),
            r.header_str("x-upstream"),
            "{what}: tag names who served"
        );
        if let Some(w) = want {
            assert_eq!(tag.as_deref(), Some(w.as_str()), "{what}");
        }
    }
    let s = envoy.scrape();
    assert_eq!(requests(&s), 5.0);
    assert_eq!(responses(&s), 5.0);
}

/// An upstream that resets mid-body, and a client that aborts mid-request: no crash, later
/// requests fine, counters consistent (the broken body is counted as incomplete, never read).
#[test]
fn upstream_reset_mid_body_and_client_abort() {
    // An upstream that announces 10 000 bytes of JSON, sends 100, and closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let broken = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10000\r\nx-upstream: stable\r\n\r\n{\"order\":{\"tax\":\"1.00\"},\"pad\":\"");
            let _ = conn.write_all(&[b'x'; 60]);
            std::thread::sleep(Duration::from_millis(50));
            let _ = conn.shutdown(Shutdown::Both);
        }
    });
    let canary = Upstream::start_with("canary", None, shop("canary")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&plugin()).unwrap();
    v["versions"] = json!([{"name": "canary", "weight": 0}, {"name": "stable", "weight": 100}]);
    let plugin = v.to_string();
    let envoy = Envoy::start(&EnvoyConfig::for_test(
        &plugin,
        &[("canary", canary.addr()), ("stable", broken)],
        "stable",
    ))
    .unwrap_or_else(|f| panic!("{}", f.log));

    // Upstream reset mid-body: the client gets a truncated response or an error, never a hang.
    let mut raw = TcpStream::connect(envoy.listener()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"GET /pay HTTP/1.1\r\nhost: x\r\nx-user-id: u1\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    assert!(got.len() < 10_000, "truncated");

    // Client abort mid-request: headers and half a body, then gone.
    let mut abort = TcpStream::connect(envoy.listener()).unwrap();
    abort.write_all(b"POST /pay HTTP/1.1\r\nhost: x\r\nx-user-id: u2\r\ncontent-length: 1000\r\n\r\n{\"half\":").unwrap();
    drop(abort);
    std::thread::sleep(Duration::from_millis(300));

    // Envoy and the filter are fine afterwards.
    let mut envoy = envoy;
    assert!(envoy.is_ready());
    let s = envoy.scrape_until(|s| {
        s.value(
            "canary_business_skipped_total",
            &[
                ("service", "checkout"),
                ("version", "stable"),
                ("reason", "incomplete"),
            ],
        ) == Some(1.0)
    });
    let l = [("service", "checkout"), ("version", "stable")];
    assert_eq!(
        s.get(
            "canary_business_skipped_total",
            &[l[0], l[1], ("reason", "incomplete")]
        ),
        1.0,
        "the cut body was never read"
    );
    assert_eq!(s.get("canary_business_tax_count", &l), 0.0);
    assert_eq!(requests(&s), 2.0, "both requests were decided");
    assert!(
        responses(&s) <= 1.0,
        "at most the reset response was counted"
    );
    assert!(!envoy.log().contains("panicked"), "no panic in the VM");
}
