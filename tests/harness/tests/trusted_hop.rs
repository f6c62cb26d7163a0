//! End-to-end: `envoy/stage-zero.yaml`, the shipped stage-zero config, where the pin header can
//! only come from a verified JWT claim (header_mutation strips it, jwt_authn writes it).

use hmac::{KeyInit, Mac};
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{echo_handler, Client, Request};
use sticky_canary_harness::Observed;
use sticky_canary_harness::{addresses, upstreams_for};

/// The demo HS256 secret of envoy/stage-zero.yaml (base64url-decoded `k`).
const DEMO_KEY: &[u8] = b"sticky-canary-demo-hs256-key-not-for-production!!";
const QA_TOKEN: &str = "qa-token-from-the-envoy-environment";

fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn jwt(claims: &serde_json::Value, key: &[u8]) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT","kid":"demo"}"#);
    let payload = b64url(claims.to_string().as_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let sig = b64url(&mac.finalize().into_bytes());
    format!("{header}.{payload}.{sig}")
}

fn merchant_token(merchant: &str) -> String {
    jwt(
        &serde_json::json!({"iss": "https://auth.example.com", "sub": "u-1",
                            "merchant_id": merchant, "exp": 4_102_444_800u64}),
        DEMO_KEY,
    )
}

#[test]
fn stage_zero_config_passes_envoy_validate() {
    envoy::check_prerequisites();
    let path = envoy::workspace_root().join("envoy/stage-zero.yaml");
    let (ok, out) = envoy::validate(&path, &envoy::workspace_root());
    assert!(ok, "envoy --mode validate failed:\n{out}");
}

#[test]
fn only_a_verified_claim_can_pin_a_merchant() {
    let path = envoy::workspace_root().join("envoy/stage-zero.yaml");
    let mut cfg = EnvoyConfig::load(&path);
    let plan = Plan::from_json(cfg.plugin_config().as_bytes()).unwrap();
    let upstreams = upstreams_for(&plan, echo_handler);
    let pairs = addresses(&upstreams);
    cfg = cfg.for_upstreams(&pairs, "stable");
    cfg.set_process_env("CANARY_OVERRIDE_TOKENS", QA_TOKEN);
    let envoy = Envoy::start(&cfg).unwrap_or_else(|f| panic!("{}", f.log));
    let mut c = Client::connect(envoy.listener()).unwrap();
    let session = "session_id=some-user";

    let cases: Vec<(&str, Request, u16, Option<&str>)> = vec![
        ("client-set pin header is stripped",
         Request::get("/").header("cookie", session).header("x-merchant-id", "m_test_1"), 200, Some("stable")),
        ("verified claim pins",
         Request::get("/").header("cookie", session)
             .header("authorization", &format!("Bearer {}", merchant_token("m_test_1"))), 200, Some("canary")),
        ("verified claim for a live merchant",
         Request::get("/").header("cookie", session)
             .header("authorization", &format!("Bearer {}", merchant_token("m_live_7"))), 200, Some("stable")),
        ("a client header cannot add to a verified claim",
         Request::get("/").header("cookie", session).header("x-merchant-id", "m_test_2")
             .header("authorization", &format!("Bearer {}", merchant_token("m_live_7"))), 200, Some("stable")),
        ("a forged token is refused by jwt_authn",
         Request::get("/").header("cookie", session).header("authorization", &format!(
             "Bearer {}", jwt(&serde_json::json!({"iss": "https://auth.example.com", "merchant_id": "m_test_1"}),
                              b"not-the-key-not-the-key-not-the-key!!")
         )), 401, None),
        ("QA override with the token from Envoy's environment",
         Request::get("/").header("cookie", session)
             .header("x-canary-override", "canary").header("x-canary-token", QA_TOKEN), 200, Some("canary")),
    ];
    for (what, req, status, served) in cases {
        let r = c.send(&req).unwrap();
        assert_eq!(r.status, status, "{what}: {}", r.text());
        if let Some(v) = served {
            let o = Observed::from_response(&plan, &r);
            assert!(o.is_served_by(v), "{what}: {o:?}");
        }
    }
}
