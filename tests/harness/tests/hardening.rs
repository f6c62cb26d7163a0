//! Hardening under a real Envoy: live reconfiguration under load, and remote modules pinned by
//! sha256.

use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{Client, Request, Response, Upstream};
use sticky_canary_harness::prom::ScrapeExt;

/// Ten configurations in a row: weights ramp, a pin comes and goes, the salt changes once.
fn generations() -> Vec<String> {
    let base = |w: u32, salt: &str, pinned: &[&str]| {
        json!({
            "service": "checkout", "salt": salt,
            "versions": [{"name": "canary", "weight": w}, {"name": "stable", "weight": 100 - w}],
            "session": {"sources": [{"header": "x-user-id"}]},
            "pins": if pinned.is_empty() { json!([]) } else {
                json!([{"header": "x-merchant-id", "values": pinned, "version": "canary"}])
            },
            "business_metrics": [{"name": "orders", "kind": "counter", "header": "x-order-id"}]
        })
        .to_string()
    };
    vec![
        base(1, "s1", &[]),
        base(5, "s1", &[]),
        base(10, "s1", &["m_7"]),
        base(20, "s1", &["m_7"]),
        base(20, "s1", &[]),
        base(35, "s1", &["m_3"]),
        base(50, "s1", &["m_3"]),
        base(50, "s2", &["m_3"]), // new salt: a new rollout reshuffles the cohorts
        base(80, "s2", &[]),
        base(100, "s2", &[]),
    ]
}

fn request_for(session: usize) -> Request {
    Request::get("/order")
        .header("x-user-id", &format!("user-{session}"))
        .header("x-merchant-id", &format!("m_{}", session % 10))
}

/// The version a plan assigns to a session's requests.
fn expected(plan: &Plan, session: usize) -> String {
    let user = format!("user-{session}");
    let merchant = format!("m_{}", session % 10);
    let mut headers: &[(&str, &[u8])] = &[
        ("x-user-id", user.as_bytes()),
        ("x-merchant-id", merchant.as_bytes()),
    ];
    plan.version_name(plan.decide(&mut headers).version)
        .to_string()
}

#[test]
fn ten_reconfigurations_under_load_lose_no_request_and_move_no_unchanged_session() {
    let gens = generations();
    let plans: Vec<Plan> = gens
        .iter()
        .map(|g| Plan::from_json(g.as_bytes()).unwrap())
        .collect();
    let order = Arc::new(|_: &Request| Response::new(200).header("x-order-id", "o").body("{}"));
    let stable = Upstream::start_with("stable", None, order.clone()).unwrap();
    let canary = Upstream::start_with("canary", None, order).unwrap();
    let upstreams = [("canary", canary.addr()), ("stable", stable.addr())];
    let cfg = |g: &str| EnvoyConfig::for_test(g, &upstreams, "stable");
    let envoy = Envoy::start_dynamic(&cfg(&gens[0])).unwrap_or_else(|f| panic!("{}", f.log));

    // Load: 4 clients loop over 400 sessions until told to stop. Each response records the
    // generation window it was sent in: [generation applied before sending, generation applied
    // after the answer].
    let sessions = 400;
    let applied = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // (session, generation applied when sent, generation applied when answered, version)
    type Answer = (usize, usize, usize, String);
    let observed: Arc<Mutex<Vec<Answer>>> = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let retries = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (applied, stop, observed, failures, retries) = (
                applied.clone(),
                stop.clone(),
                observed.clone(),
                failures.clone(),
                retries.clone(),
            );
            let listener = envoy.listener();
            std::thread::spawn(move || {
                let mut c = Client::connect(listener).unwrap();
                let mut s = w;
                while !stop.load(Ordering::SeqCst) {
                    let before = applied.load(Ordering::SeqCst);
                    match c.send(&request_for(s)) {
                        Ok(r) if r.status == 200 => {
                            let after = applied.load(Ordering::SeqCst);
                            let v = r.header_str("x-canary-version").unwrap_or("").to_string();
                            observed.lock().unwrap().push((s, before, after, v));
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status)),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                    s = (s + 4) % sessions;
                }
                retries.fetch_add(c.retries() as usize, Ordering::SeqCst);
            })
        })
        .collect();

    let started = Instant::now();
    for (g, text) in gens.iter().enumerate().skip(1) {
        std::thread::sleep(Duration::from_millis(400));
        envoy.reload(&cfg(text)).unwrap();
        // Old connections keep the previous filter chain until drained (--drain-time-s 1).
        std::thread::sleep(Duration::from_millis(1200));
        applied.store(g, Ordering::SeqCst);
    }
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let observed = observed.lock().unwrap();
    let failures = failures.lock().unwrap();
    let retries = retries.load(Ordering::SeqCst);
    eprintln!(
        "{} requests in {:.1} s across {} reconfigurations, {} failed, {retries} resent after a \
         draining connection closed",
        observed.len(),
        started.elapsed().as_secs_f64(),
        gens.len() - 1,
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(observed.len() > 2000, "load ran: {}", observed.len());

    // Every answer is the assignment of a generation live while the request was in flight; a
    // session whose assignment did not change across that window never changed version.
    let mut unexplained = Vec::new();
    let mut moved_unchanged = 0;
    for (s, before, after, v) in observed.iter() {
        // `before` was applied (and drained) when sent; the live one may be up to `after + 1`.
        let window: Vec<String> = (*before..=(*after + 1).min(gens.len() - 1))
            .map(|g| expected(&plans[g], *s))
            .collect();
        if !window.contains(v) {
            unexplained.push((s, before, after, v.clone()));
        }
        if window.iter().all(|x| x == &window[0]) && v != &window[0] {
            moved_unchanged += 1;
        }
    }
    assert_eq!(
        moved_unchanged, 0,
        "sessions changed version although their assignment did not"
    );
    assert!(
        unexplained.is_empty(),
        "answers no live config explains: {:?}",
        &unexplained[..unexplained.len().min(5)]
    );

    // Counters were never reset or lost: every answered request is counted, across all reloads.
    // A request resent because a draining connection closed under it may have been counted once
    // more (its first attempt reached the filter), never less.
    let scrape = envoy.scrape();
    let total = |prefix: &str| scrape.with_prefix(prefix).map(|x| x.value).sum::<f64>() as usize;
    for (what, n) in [
        ("requests", total("canary_requests_total")),
        ("orders", total("canary_business_orders_total")),
    ] {
        assert!(
            (observed.len()..=observed.len() + retries).contains(&n),
            "{what} counted across reloads: {n}, answered {}, resent {retries}",
            observed.len()
        );
    }
    assert_eq!(
        scrape.get(
            "canary_version_weight",
            &[("service", "checkout"), ("version", "canary")]
        ),
        100.0
    );
}

/// `vm_config.code.remote` with a sha256: the right hash loads and routes; a wrong one is
/// refused — the guarantee the WasmPlugin `sha256` pin gives in Istio.
#[test]
fn remote_module_loads_only_with_the_right_sha256() {
    envoy::check_prerequisites();
    let wasm = Arc::new(std::fs::read(envoy::wasm_path()).unwrap());
    let sha = {
        use std::process::Command;
        let out = Command::new("sha256sum")
            .arg(envoy::wasm_path())
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let served = wasm.clone();
    let modules = Upstream::start_with(
        "modules",
        None,
        Arc::new(move |_: &Request| {
            Response::new(200)
                .header("content-type", "application/wasm")
                .body(served.as_ref().clone())
        }),
    )
    .unwrap();
    let stable = Upstream::start("stable").unwrap();
    let canary = Upstream::start("canary").unwrap();
    let plugin = EnvoyConfig::reference().plugin_config();
    let start = |sha256: &str| {
        let mut cfg = EnvoyConfig::for_test(
            &plugin,
            &[("canary", canary.addr()), ("stable", stable.addr())],
            "stable",
        );
        cfg.add_module_cluster("modules", modules.addr());
        cfg.set_remote_wasm("http://modules/sticky_canary.wasm", "modules", sha256);
        Envoy::start(&cfg)
    };
    let ok = start(&sha).unwrap_or_else(|f| panic!("right sha256 refused:\n{}", f.log));
    let r = sticky_canary_harness::http::send_once(
        ok.listener(),
        &Request::get("/").header("cookie", "session_id=a"),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header_str("x-canary-version").is_some(),
        "the remote module runs"
    );
    drop(ok);
    // A wrong hash: the fetched bytes are refused, the plugin never loads, and the filter fails
    // closed (503) — the module never runs.
    let wrong = "0".repeat(64);
    let refused = start(&wrong).unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    let r = sticky_canary_harness::http::send_once(
        refused.listener(),
        &Request::get("/").header("cookie", "session_id=a"),
    )
    .unwrap();
    assert_eq!(r.status, 503, "fail closed");
    assert!(
        r.header_str("x-canary-version").is_none(),
        "the module never ran"
    );
    assert_eq!(
        stable.served() + canary.served(),
        1,
        "only the request with the right module reached an upstream"
    );
    let log = refused.log();
    assert!(
        log.contains("Plugin sticky-canary failed to load") && log.contains("fail closed"),
        "{log}"
    );
}

/// A refused configuration delivered by xDS (here: file-based LDS) is rejected, and the previous
/// configuration keeps serving, unchanged.
#[test]
fn a_refused_config_update_leaves_the_previous_one_serving() {
    let gens = generations();
    let stable = Upstream::start("stable").unwrap();
    let canary = Upstream::start("canary").unwrap();
    let upstreams = [("canary", canary.addr()), ("stable", stable.addr())];
    let cfg = |g: &str| EnvoyConfig::for_test(g, &upstreams, "stable");
    let envoy = Envoy::start_dynamic(&cfg(&gens[6])).unwrap_or_else(|f| panic!("{}", f.log));
    let plan = Plan::from_json(gens[6].as_bytes()).unwrap();
    let mut bad: serde_json::Value = serde_json::from_str(&gens[6]).unwrap();
    bad["versions"][0]["weight"] = json!(-1);
    let err = envoy.reload(&cfg(&bad.to_string())).unwrap_err();
    assert!(err.contains("rejected"), "{err}");
    assert!(
        envoy
            .log()
            .contains("invalid configuration: versions[0].weight"),
        "the refusal names the field"
    );
    let mut c = Client::connect(envoy.listener()).unwrap();
    for s in 0..200 {
        let r = c.send(&request_for(s)).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header_str("x-canary-version").unwrap(),
            expected(&plan, s),
            "session {s}"
        );
    }
}

/// What each failure policy gives requests when the VM traps at runtime (a fixture module that
/// traps on every request). Fail closed: every request gets 503. Fail open: the request during
/// which the VM trapped gets 503; from then on the filter is bypassed, requests carry no route
/// header and take the last route (stable), and nothing overwrites the upstream's own headers.
#[test]
fn a_vm_trap_at_runtime_fails_closed_or_open_as_configured() {
    let trap = envoy::workspace_root()
        .join("tests/fixtures/trap-filter/target/wasm32-wasip1/release/trap_filter.wasm");
    assert!(
        trap.exists(),
        "fixture not built at {} — run `make test` (it builds tests/fixtures/trap-filter)",
        trap.display()
    );
    let stable = Upstream::start("stable").unwrap();
    let canary = Upstream::start("canary").unwrap();
    let plugin = EnvoyConfig::reference().plugin_config();
    let expectations: [(&str, [u16; 5]); 2] = [
        ("FAIL_CLOSED", [503, 503, 503, 503, 503]),
        ("FAIL_OPEN", [503, 200, 200, 200, 200]),
    ];
    for (policy, want) in expectations {
        let mut cfg = EnvoyConfig::for_test(
            &plugin,
            &[("canary", canary.addr()), ("stable", stable.addr())],
            "stable",
        );
        cfg.set_wasm(&trap);
        cfg.set_plugin_field("failure_policy", serde_yaml::Value::String(policy.into()));
        let envoy = Envoy::start(&cfg).unwrap_or_else(|f| panic!("{policy}: {}", f.log));
        let got: Vec<Response> = (0..5)
            .map(|i| {
                let req = Request::get("/").header("cookie", &format!("session_id=u{i}"));
                sticky_canary_harness::http::send_once(envoy.listener(), &req).unwrap()
            })
            .collect();
        let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
        assert_eq!(statuses, want, "{policy}");
        for r in got.iter().filter(|r| r.status == 200) {
            assert_eq!(
                r.header_str("x-upstream"),
                Some("stable"),
                "{policy}: the last route"
            );
        }
        assert!(
            envoy.log().contains("unreachable") || envoy.log().contains("Function"),
            "{policy}: the trap is logged"
        );
    }
    assert_eq!(
        canary.served(),
        0,
        "nothing reached the canary under either policy"
    );
}
