//! End-to-end: the session bucket header and the idle hold under a real Envoy. The upstream sees
//! exactly one bucket header, equal to the published bucket computed offline, for every request
//! with a session key (cookie, header or minted) and none otherwise; nothing a client sends in it
//! ever gets through; a held session is served by stable with reason `hold` and no bucket, and
//! only responses from the default version refresh the hold.

use serde_json::json;
use sticky_canary::plan::Plan;
use sticky_canary::routing::hash::{bucket, bucket_digits};
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig, Launch};
use sticky_canary_harness::http::{echo_handler, Client, Request, Response};
use sticky_canary_harness::native;
use sticky_canary_harness::{addresses, upstreams_for, Fixture, Keys, Observed};

const SALT: &str = "checkout-2026-12";
const BUCKET: &str = "x-canary-bucket";
const TOKEN: &str = "qa-0123456789abcdef-ramp";
/// The hold cookie `ramp_config(true, _)` sets, exactly.
const HOLD: &str = "sc_hold=1; Max-Age=900; Path=/; Secure; HttpOnly; SameSite=Lax";

/// Checkout at 50/50 (canary listed first, so bucket < 5000 ⇔ canary), with the bucket header,
/// a pin, an override, and optionally the hold and the minted cookie.
fn ramp_config(hold: bool, assign: bool) -> String {
    let mut c = json!({
        "service": "checkout",
        "salt": SALT,
        "versions": [{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}],
        "default_version": "stable",
        "session": {"sources": [{"cookie": "session_id"}, {"header": "x-api-key"}]},
        "override": {"tokens": [TOKEN]},
        "pins": [{"header": "x-merchant-id", "values": ["m_test_1"], "version": "canary"}],
        "reason_header": "x-canary-reason",
        "bucket_header": "X-Canary-Bucket"
    });
    if hold {
        c["session"]["hold"] = json!({"cookie": "sc_hold", "idle_seconds": 900});
    }
    if assign {
        c["session"]["assign_cookie"] = json!({"name": "sc_session"});
    }
    c.to_string()
}

/// The bucket header a session key must carry, computed offline with the published function.
fn digits(key: &str) -> String {
    let b = bucket(SALT.as_bytes(), key.as_bytes());
    String::from_utf8(bucket_digits(b).to_vec()).unwrap()
}

/// Every value of a request header the echo upstream received.
fn seen(r: &Response, name: &str) -> Vec<String> {
    let body = r.json();
    let pairs = body["headers"].as_array().cloned().unwrap_or_default();
    pairs
        .iter()
        .filter(|p| p[0].as_str() == Some(name))
        .map(|p| p[1].as_str().unwrap_or_default().to_string())
        .collect()
}

fn reason(r: &Response) -> &str {
    r.header_str("x-canary-reason").unwrap_or_default()
}

fn set_cookies(r: &Response) -> Vec<String> {
    r.header_values("set-cookie")
        .into_iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Client-sent bucket headers: none, a plausible forgery, repeated, malformed.
const FORGED: [&[&str]; 5] = [
    &[],
    &["0000"],
    &["9999", "0000"],
    &["", "12345", "-1", "abcd"],
    &[" 0042 ", "0042; 0000"],
];

/// A request for session `key` (by cookie or by header), carrying forgery `i` of [`FORGED`].
fn session_request(key: &str, by_cookie: bool, i: usize) -> Request {
    let mut req = if by_cookie {
        Request::get("/").header("cookie", &format!("session_id={key}"))
    } else {
        Request::get("/").header("x-api-key", key)
    };
    for v in FORGED[i % FORGED.len()] {
        req = req.header(BUCKET, v);
    }
    req
}

/// Sends `n` sessions (cookie and header alternately, each with a forgery) and checks that the
/// upstream saw exactly the offline bucket and served the offline version; returns how many
/// went to the canary.
fn check_sessions(plan: &Plan, c: &mut Client, keys: impl Iterator<Item = String>) -> usize {
    let mut canary = 0;
    for (i, key) in keys.enumerate() {
        let r = c.send(&session_request(&key, i % 2 == 0, i)).unwrap();
        let want = digits(&key);
        assert_eq!(seen(&r, BUCKET), [want.as_str()], "{key} (forgery {i})");
        let version = plan.version_name(plan.bucket(key.as_bytes()));
        assert!(
            Observed::from_response(plan, &r).is_served_by(version),
            "{key}: {r:?}"
        );
        assert_eq!(reason(&r), "hash");
        // Canary p / stable 100−p with canary first: canary exactly when bucket < 100·p.
        assert_eq!(version == "canary", want.as_str() < "5000", "{key}");
        canary += usize::from(version == "canary");
    }
    canary
}

#[test]
fn the_upstream_sees_exactly_the_sessions_bucket_and_never_a_clients() {
    let f = Fixture::start(&ramp_config(false, true));
    let mut c = f.client();
    let canary = check_sessions(&f.plan, &mut c, Keys::new(13).take(200));
    assert!((60..140).contains(&canary), "both versions seen: {canary}");

    // Minted sessions carry the minted id's bucket.
    for i in 0..20 {
        let r = c
            .send(&Request::get("/").header(BUCKET, FORGED[1 + i % 4][0]))
            .unwrap();
        let minted = set_cookies(&r);
        let id = minted[0]
            .strip_prefix("sc_session=")
            .and_then(|s| s.split(';').next())
            .unwrap();
        assert_eq!(seen(&r, BUCKET), [digits(id)], "{minted:?}");
        assert_eq!(reason(&r), "assigned");
        assert!(Observed::from_response(&f.plan, &r).is_served_by(f.expected(id)));
    }

    // An override or a pin is an explicit choice: no bucket, and the client's is removed.
    let key = Keys::new(14).next().unwrap();
    let explicit = [
        (
            session_request(&key, true, 3)
                .header("x-canary-override", "canary")
                .header("x-canary-token", TOKEN),
            "override",
        ),
        (
            session_request(&key, false, 2).header("x-merchant-id", "m_test_1"),
            "pin",
        ),
    ];
    for (req, why) in explicit {
        let r = c.send(&req).unwrap();
        assert_eq!(reason(&r), why);
        assert!(seen(&r, BUCKET).is_empty(), "{why}: {r:?}");
        assert!(Observed::from_response(&f.plan, &r).is_served_by("canary"));
    }

    // No session key (nothing minted): no bucket.
    let f = f.restart_with(&ramp_config(false, false));
    let mut c = f.client();
    for forged in FORGED {
        let mut req = Request::get("/").header("cookie", "theme=dark");
        for v in forged {
            req = req.header(BUCKET, v);
        }
        let r = c.send(&req).unwrap();
        assert_eq!(reason(&r), "default");
        assert!(seen(&r, BUCKET).is_empty(), "{forged:?}: {r:?}");
    }
}

#[test]
fn the_hold_keeps_a_session_on_stable_and_never_on_a_canary() {
    let f = Fixture::start(&ramp_config(true, true));
    let mut c = f.client();
    let mut keys = Keys::new(21);
    let canary_key = keys.find(|k| f.expected(k) == "canary").unwrap();
    let stable_key = keys.find(|k| f.expected(k) == "stable").unwrap();
    let send = |c: &mut Client, req: Request| c.send(&req).unwrap();

    // Not held: the hash. Served by the canary, no hold cookie; by stable, the hold is set.
    let r = send(&mut c, session_request(&canary_key, true, 1));
    assert!(Observed::from_response(&f.plan, &r).is_served_by("canary"));
    assert_eq!(seen(&r, BUCKET), [digits(&canary_key)]);
    assert!(set_cookies(&r).is_empty(), "{r:?}");
    let r = send(&mut c, session_request(&stable_key, false, 2));
    assert!(Observed::from_response(&f.plan, &r).is_served_by("stable"));
    assert_eq!(set_cookies(&r), [HOLD]);

    // Held (a cookie session, and an API-key session whose client keeps the cookie): stable,
    // reason hold, no bucket whatever the client sent, and the hold refreshed.
    let held = [
        Request::get("/").header("cookie", &format!("session_id={canary_key}; sc_hold=1")),
        Request::get("/")
            .header("x-api-key", &canary_key)
            .header("cookie", "sc_hold=forged"),
    ];
    for (i, req) in held.into_iter().enumerate() {
        let r = send(&mut c, req.header(BUCKET, "0000").header(BUCKET, "0001"));
        assert!(Observed::from_response(&f.plan, &r).is_served_by("stable"));
        assert_eq!(reason(&r), "hold", "{i}");
        assert!(seen(&r, BUCKET).is_empty(), "{i}: {r:?}");
        assert_eq!(set_cookies(&r), [HOLD], "{i}");
    }

    // A pin still wins over the hold, and a canary response never sets it.
    let r = send(
        &mut c,
        Request::get("/")
            .header("cookie", &format!("session_id={stable_key}; sc_hold=1"))
            .header("x-merchant-id", "m_test_1"),
    );
    assert!(Observed::from_response(&f.plan, &r).is_served_by("canary"));
    assert_eq!(reason(&r), "pin");
    assert!(set_cookies(&r).is_empty(), "{r:?}");

    // Held without a session key: stable with no bucket; an id is minted as usual (the upstream
    // sees it) and the hold refreshed.
    let r = send(&mut c, Request::get("/").header("cookie", "sc_hold=1"));
    assert!(Observed::from_response(&f.plan, &r).is_served_by("stable"));
    assert_eq!(reason(&r), "hold");
    assert!(seen(&r, BUCKET).is_empty());
    let cookies = set_cookies(&r);
    let id = cookies[0].strip_prefix("sc_session=").unwrap();
    let id = id.split(';').next().unwrap();
    assert_eq!(seen(&r, "cookie"), [format!("sc_hold=1; sc_session={id}")]);
    assert_eq!(cookies[1..], [HOLD], "{cookies:?}");
}

/// The same under four worker threads (one VM each), over several connections at once.
#[test]
fn four_workers_write_the_same_buckets() {
    let text = ramp_config(true, true);
    let plan = Plan::from_json(text.as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, echo_handler);
    let cfg = EnvoyConfig::for_test(&text, &addresses(&upstreams), "stable");
    let launch = Launch {
        concurrency: 4,
        ..Launch::default()
    };
    let envoy = Envoy::start_yaml(&cfg.to_yaml(), &launch)
        .unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    let info = envoy.admin_get("/server_info").json();
    assert_eq!(info["command_line_options"]["concurrency"], 4, "{info}");
    let canary: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|seed| {
                let plan = &plan;
                let addr = envoy.listener();
                s.spawn(move || {
                    let mut c = Client::connect(addr).unwrap();
                    check_sessions(plan, &mut c, Keys::new(100 + seed).take(50))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(
        (120..280).contains(&canary),
        "{canary} of 400 on the canary"
    );
}

/// Each refusal of the configuration under Envoy: the filter is refused and the log names the field.
#[test]
fn ramp_refusals_name_the_field_in_envoys_log() {
    let base: serde_json::Value = serde_json::from_str(&ramp_config(true, true)).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        f(&mut v);
        v.to_string()
    };
    let cases = [
        (
            edit(&|v| v["bucket_header"] = json!("X-Canary-Version")),
            "bucket_header",
        ),
        (
            edit(&|v| v["bucket_header"] = json!("x-canary-override")),
            "bucket_header",
        ),
        (
            edit(&|v| v["bucket_header"] = json!("x-canary-token")),
            "bucket_header",
        ),
        (
            edit(&|v| v["bucket_header"] = json!("x-api-key")),
            "bucket_header",
        ),
        (
            edit(&|v| v["bucket_header"] = json!("x-merchant-id")),
            "bucket_header",
        ),
        (
            edit(&|v| v["session"]["hold"]["idle_seconds"] = json!(0)),
            "session.hold.idle_seconds",
        ),
        (
            edit(&|v| v["session"]["hold"]["idle_seconds"] = json!(86_401)),
            "session.hold.idle_seconds",
        ),
        (
            edit(&|v| v["session"]["hold"]["cookie"] = json!("session_id")),
            "session.hold.cookie",
        ),
        (
            edit(&|v| v["session"]["hold"]["cookie"] = json!("sc_session")),
            "session.hold.cookie",
        ),
    ];
    for (json, path) in cases {
        let mut cfg = EnvoyConfig::reference();
        cfg.set_free_ports();
        cfg.set_wasm(&envoy::wasm_path());
        cfg.set_plugin_config(&json);
        let failure = Envoy::start_expecting_refusal(&cfg);
        let want = format!("sticky-canary: invalid configuration: {path}: ");
        assert!(
            failure.log.contains(&want) && failure.log.contains(native::envoy_refusal()),
            "{path}: {json}\n{}",
            failure.log
        );
    }
}

/// `cfg` with, when `regex` is given, a first route sending the bucket header's matches to the
/// canary: the managed route a rollout controller puts ahead of the version routes.
fn with_bucket_route(cfg: &EnvoyConfig, regex: Option<&str>) -> EnvoyConfig {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&cfg.to_yaml()).unwrap();
    let mut routes = envoy::get(&mut doc, &[envoy::HCM, &["route_config"]].concat()).clone();
    if let Some(regex) = regex {
        let route = json!({
            "match": {"prefix": "/", "headers": [
                {"name": BUCKET, "string_match": {"safe_regex": {"regex": regex}}}
            ]},
            "route": {"cluster": "canary"}
        });
        envoy::get(&mut routes, &["virtual_hosts", "0", "routes"])
            .as_sequence_mut()
            .unwrap()
            .insert(0, serde_yaml::to_value(route).unwrap());
    }
    let mut out = cfg.clone();
    out.set_hcm_field("route_config", routes);
    out
}

/// The controller's model: the plugin at canary 0 / stable 100, a bucket route sizing the cohort
/// (5 %, then 25 %), then abort. Per key, the canary serves exactly the sessions whose bucket is
/// below the step; a session returning mid-flow with its hold cookie finishes on stable when the
/// step lands, and one that was idle moves; abort sends everyone to stable.
#[test]
fn a_bucket_route_sizes_the_cohort_and_the_hold_keeps_flows_whole() {
    let mut config: serde_json::Value = serde_json::from_str(&ramp_config(true, false)).unwrap();
    config["versions"] =
        json!([{"name": "canary", "weight": 0}, {"name": "stable", "weight": 100}]);
    let text = config.to_string();
    let plan = Plan::from_json(text.as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, echo_handler);
    let base = EnvoyConfig::for_test(&text, &addresses(&upstreams), "stable");
    // Buckets 0000–0499 and 0000–2499.
    let (five, twenty_five) = ("0[0-4][0-9]{2}", "[01][0-9]{3}|2[0-4][0-9]{2}");
    let envoy = Envoy::start_dynamic(&with_bucket_route(&base, Some(five)))
        .unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
    let keys: Vec<String> = Keys::new(31).take(300).collect();
    let b = |k: &str| bucket(SALT.as_bytes(), k.as_bytes());
    let send = |cookie: String| {
        let mut c = Client::connect(envoy.listener()).unwrap();
        let r = c
            .send(&Request::get("/").header("cookie", &cookie))
            .unwrap();
        let served = r.header_str("x-upstream").unwrap_or_default().to_string();
        (served, r)
    };

    // 5 %: the cohort on the canary (never held), everyone else on stable, and held.
    for k in &keys {
        let (served, r) = send(format!("session_id={k}"));
        let cohort = b(k) < 500;
        assert_eq!(served, if cohort { "canary" } else { "stable" }, "{k}");
        assert_eq!(set_cookies(&r).is_empty(), cohort, "{k}: {r:?}");
    }

    // 25 %: mid-flow sessions (with their hold cookie) finish on stable; idle ones move.
    envoy
        .reload(&with_bucket_route(&base, Some(twenty_five)))
        .unwrap();
    let (mut kept, mut moved) = (0, 0);
    for k in keys.iter().filter(|k| b(k) >= 500) {
        let (served, r) = send(format!("session_id={k}; sc_hold=1"));
        assert_eq!((served.as_str(), reason(&r)), ("stable", "hold"), "{k}");
        kept += usize::from(b(k) < 2500);
        let (served, _) = send(format!("session_id={k}"));
        assert_eq!(served == "canary", b(k) < 2500, "{k}");
        moved += usize::from(served == "canary");
    }
    assert_eq!(kept, moved);
    assert!(moved > 20, "the step moved {moved} idle sessions");
    let cohort = keys.iter().filter(|k| b(k) < 500).count();
    eprintln!(
        "5 %: {cohort}/{} sessions on the canary; 25 %: {moved} idle sessions moved, \
         {kept} mid-flow sessions finished on stable",
        keys.len()
    );
    for k in keys.iter().filter(|k| b(k) < 500) {
        assert_eq!(send(format!("session_id={k}")).0, "canary", "{k}");
    }

    // Abort: no bucket route, everyone on stable at the next request, held or not.
    envoy.reload(&with_bucket_route(&base, None)).unwrap();
    for k in &keys {
        assert_eq!(send(format!("session_id={k}")).0, "stable", "{k}");
    }
}
