//! End-to-end: stage zero (token-guarded override, pins), anonymous sessions and the reason
//! header, under a real Envoy.

use serde_json::json;
use std::collections::HashSet;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{Envoy, EnvoyConfig};
use sticky_canary_harness::http::{echo_handler, Client, Request, Response, Upstream};
use sticky_canary_harness::Observed;
use sticky_canary_harness::{addresses, upstreams_for};

const TOKEN: &str = "qa-0123456789abcdef-inline";
const ENV_TOKEN: &str = "qa-fedcba9876543210-from-env";

/// Payments at stage zero: canary at weight 0, reachable by QA override and by test merchants.
fn stage_zero_config() -> serde_json::Value {
    json!({
        "service": "payments",
        "salt": "payments-2026-11",
        "versions": [{"name": "canary", "weight": 0}, {"name": "stable", "weight": 100}],
        "default_version": "stable",
        "session": {
            "sources": [{"cookie": "session_id"}, {"header": "x-user-id"}],
            "assign_cookie": {"name": "sc_session", "max_age_seconds": 2592000, "secure": true,
                              "http_only": true, "same_site": "Lax", "path": "/", "domain": null}
        },
        "override": {"header": "x-canary-override", "token_header": "x-canary-token",
                     "tokens": [TOKEN], "tokens_env": "CANARY_OVERRIDE_TOKENS"},
        "pins": [{"header": "x-merchant-id", "values": ["m_test_1", "m_test_2"], "version": "canary"}],
        "reason_header": "x-canary-reason"
    })
}

struct Stack {
    plan: Plan,
    _upstreams: Vec<Upstream>,
    envoy: Envoy,
}

impl Stack {
    fn start(config: &serde_json::Value) -> Stack {
        let text = config.to_string();
        let plan = Plan::from_json(text.as_bytes()).unwrap();
        let upstreams = upstreams_for(&plan, echo_handler);
        let pairs = addresses(&upstreams);
        let mut cfg = EnvoyConfig::for_test(&text, &pairs, plan.version_name(plan.default_version));
        cfg.set_vm_env("CANARY_OVERRIDE_TOKENS", &format!("too-short,{ENV_TOKEN}"));
        let envoy =
            Envoy::start(&cfg).unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
        Stack {
            plan,
            _upstreams: upstreams,
            envoy,
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.envoy.listener()).unwrap()
    }
}

/// The request headers the upstream saw, from the echo body.
fn upstream_saw(r: &Response, name: &str) -> Vec<String> {
    r.json()["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter(|p| p[0].as_str() == Some(name))
                .filter_map(|p| p[1].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn reason(r: &Response) -> String {
    r.header_str("x-canary-reason").unwrap_or("").to_string()
}

#[test]
fn override_needs_an_exact_token_and_its_headers_never_reach_the_upstream() {
    let s = Stack::start(&stage_zero_config());
    assert!(
        s.envoy
            .log()
            .contains("override.tokens_env: entry 0 of CANARY_OVERRIDE_TOKENS ignored"),
        "a short env token is reported (never echoed)"
    );
    assert!(
        !s.envoy.log().contains("too-short"),
        "tokens never reach the log"
    );
    let mut c = s.client();
    let one_short = &TOKEN[..TOKEN.len() - 1];
    let upper = TOKEN.to_uppercase();
    let suffixed = format!("{TOKEN}x");
    let session = "session_id=user-on-stable";
    // (what, override header, token header, served by, reason)
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        // (what, override header, token header, served by, reason)
        (
            "valid inline token",
            Some("canary"),
            Some(TOKEN),
            "canary",
            "override",
        ),
        (
            "valid token from the VM environment",
            Some("canary"),
            Some(ENV_TOKEN),
            "canary",
            "override",
        ),
        (
            "valid token, asking for stable",
            Some("stable"),
            Some(TOKEN),
            "stable",
            "override",
        ),
        (
            "wrong token",
            Some("canary"),
            Some("qa-0000000000000000-inline"),
            "stable",
            "hash",
        ),
        (
            "token one character short",
            Some("canary"),
            Some(one_short),
            "stable",
            "hash",
        ),
        (
            "token upper-cased",
            Some("canary"),
            Some(&upper),
            "stable",
            "hash",
        ),
        (
            "token with a suffix",
            Some("canary"),
            Some(&suffixed),
            "stable",
            "hash",
        ),
        (
            "the too-short env entry is not accepted",
            Some("canary"),
            Some("too-short"),
            "stable",
            "hash",
        ),
        ("missing token", Some("canary"), None, "stable", "hash"),
        ("empty token", Some("canary"), Some(""), "stable", "hash"),
        (
            "token without an override header",
            None,
            Some(TOKEN),
            "stable",
            "hash",
        ),
        (
            "unknown override version",
            Some("v9"),
            Some(TOKEN),
            "stable",
            "hash",
        ),
    ];
    for (what, ovr, tok, served, why) in cases {
        let mut req = Request::get("/pay").header("cookie", session);
        if let Some(v) = ovr {
            req = req.header("x-canary-override", v);
        }
        if let Some(t) = tok {
            req = req.header("x-canary-token", t);
        }
        let r = c.send(&req).unwrap();
        let o = Observed::from_response(&s.plan, &r);
        assert!(o.is_served_by(served), "{what}: {o:?}");
        assert_eq!(reason(&r), why, "{what}");
        assert!(
            upstream_saw(&r, "x-canary-override").is_empty(),
            "{what}: override header leaked"
        );
        assert!(
            upstream_saw(&r, "x-canary-token").is_empty(),
            "{what}: token leaked"
        );
        assert_eq!(
            r.status, 200,
            "{what}: a probe learns nothing from the status"
        );
    }
}

#[test]
fn override_headers_are_stripped_even_when_overrides_are_disabled() {
    let mut cfg = stage_zero_config();
    cfg["override"] = json!({"tokens_env": "UNSET_VARIABLE"});
    let s = Stack::start(&cfg);
    assert!(
        s.envoy.log().contains("overrides are disabled"),
        "warned at configure time"
    );
    let r = s
        .client()
        .send(
            &Request::get("/")
                .header("x-canary-override", "canary")
                .header("x-canary-token", ENV_TOKEN),
        )
        .unwrap();
    assert_ne!(r.header_str("x-upstream"), Some("canary"));
    assert!(upstream_saw(&r, "x-canary-override").is_empty());
    assert!(upstream_saw(&r, "x-canary-token").is_empty());
}

#[test]
fn pins_route_test_merchants_to_a_weight_zero_canary() {
    let s = Stack::start(&stage_zero_config());
    let mut c = s.client();
    let cases = [
        ("m_test_1", "canary", "pin"),
        ("m_test_2", "canary", "pin"),
        ("m_test_3", "stable", "hash"),
        ("M_TEST_1", "stable", "hash"),
        ("m_test_1 ", "canary", "pin"), // Envoy trims header whitespace
        ("", "stable", "hash"),
    ];
    for (merchant, served, why) in cases {
        let req = Request::get("/")
            .header("x-merchant-id", merchant)
            .header("x-user-id", "u-1");
        let r = c.send(&req).unwrap();
        let o = Observed::from_response(&s.plan, &r);
        assert!(o.is_served_by(served), "{merchant:?}: {o:?}");
        assert_eq!(reason(&r), why, "{merchant:?}");
    }
    // Weight 0: nobody else reaches the canary.
    for i in 0..300 {
        let r = c
            .send(&Request::get("/").header("x-user-id", &format!("user-{i}")))
            .unwrap();
        assert_eq!(r.header_str("x-upstream"), Some("stable"));
    }
}

fn minted_id(r: &Response) -> String {
    let set_cookie = r.header_str("set-cookie").expect("a Set-Cookie");
    let id = set_cookie
        .strip_prefix("sc_session=")
        .and_then(|rest| rest.split(';').next())
        .expect("sc_session=<id>");
    assert_eq!(id.len(), 32, "{set_cookie}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{set_cookie}"
    );
    id.to_string()
}

#[test]
fn anonymous_visitors_get_a_sticky_minted_session() {
    let mut cfg = stage_zero_config();
    cfg["versions"] = json!([{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}]);
    let s = Stack::start(&cfg);
    let mut c = s.client();

    // The cookie carries exactly the configured attributes.
    let r = c.send(&Request::get("/cart")).unwrap();
    assert_eq!(reason(&r), "assigned");
    let id = minted_id(&r);
    assert_eq!(
        r.header_str("set-cookie").unwrap(),
        format!("sc_session={id}; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Lax")
    );
    assert_eq!(r.header_values("set-cookie").len(), 1);
    // Routed by hashing the id, and the upstream saw it as a cookie.
    let want = s.plan.version_name(s.plan.bucket(id.as_bytes()));
    assert!(Observed::from_response(&s.plan, &r).is_served_by(want));
    assert_eq!(upstream_saw(&r, "cookie"), vec![format!("sc_session={id}")]);

    // Later requests stick, and nothing new is minted while the cookie is present.
    for _ in 0..5 {
        let r = c
            .send(
                &Request::get("/checkout")
                    .header("cookie", &format!("theme=dark; sc_session={id}")),
            )
            .unwrap();
        assert!(Observed::from_response(&s.plan, &r).is_served_by(want));
        assert_eq!(reason(&r), "hash");
        assert!(
            r.header_values("set-cookie").is_empty(),
            "no new cookie while one is present"
        );
    }

    // A visitor with other cookies only: the minted one is appended to their Cookie header.
    let r = c
        .send(&Request::get("/").header("cookie", "theme=dark"))
        .unwrap();
    let id2 = minted_id(&r);
    assert_eq!(
        upstream_saw(&r, "cookie"),
        vec![format!("theme=dark; sc_session={id2}")]
    );

    // A logged-in user (session source present) is not given a cookie.
    let r = c
        .send(&Request::get("/").header("x-user-id", "u-42"))
        .unwrap();
    assert_eq!(reason(&r), "hash");
    assert!(r.header_values("set-cookie").is_empty());
}

#[test]
fn a_thousand_anonymous_requests_get_a_thousand_ids() {
    let mut cfg = stage_zero_config();
    cfg["versions"] = json!([{"name": "canary", "weight": 20}, {"name": "stable", "weight": 80}]);
    let s = Stack::start(&cfg);
    let mut c = s.client();
    let mut ids = HashSet::new();
    let mut canary = 0;
    for _ in 0..1000 {
        let r = c.send(&Request::get("/")).unwrap();
        let id = minted_id(&r);
        let o = Observed::from_response(&s.plan, &r);
        assert!(
            o.is_served_by(s.plan.version_name(s.plan.bucket(id.as_bytes()))),
            "{o:?}"
        );
        if o.served_by.as_deref() == Some("canary") {
            canary += 1;
        }
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1000, "every anonymous request got a distinct id");
    // 20 % ± 4 sd (sd = sqrt(1000·0.2·0.8) ≈ 12.6)
    assert!(
        (150..=250).contains(&canary),
        "assigned sessions follow the weights: {canary}"
    );
}

#[test]
fn reason_header_reports_each_reason_and_is_off_by_default() {
    let s = Stack::start(&stage_zero_config());
    let mut c = s.client();
    let cases: Vec<(Request, &str)> = vec![
        (
            Request::get("/")
                .header("x-canary-override", "canary")
                .header("x-canary-token", TOKEN),
            "override",
        ),
        (Request::get("/").header("x-merchant-id", "m_test_1"), "pin"),
        (Request::get("/").header("cookie", "session_id=abc"), "hash"),
        (Request::get("/"), "assigned"),
    ];
    for (req, want) in cases {
        let r = c.send(&req).unwrap();
        assert_eq!(
            r.header_values("x-canary-reason"),
            vec![want.as_bytes()],
            "{want}"
        );
    }
    // Without assign_cookie, no key → default.
    let mut cfg = stage_zero_config();
    cfg["session"]
        .as_object_mut()
        .unwrap()
        .remove("assign_cookie");
    let s2 = Stack::start(&cfg);
    let r = s2.client().send(&Request::get("/")).unwrap();
    assert_eq!(reason(&r), "default");
    assert!(r.header_values("set-cookie").is_empty());
    // Off by default.
    cfg.as_object_mut().unwrap().remove("reason_header");
    let s3 = Stack::start(&cfg);
    let r = s3.client().send(&Request::get("/")).unwrap();
    assert!(r.header_values("x-canary-reason").is_empty());
}
