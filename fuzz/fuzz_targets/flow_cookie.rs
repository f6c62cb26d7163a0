//! The flow cookie (`sticky_canary::routing::flow`): `split` and `Flows::check` on arbitrary values, and
//! cookies the plan signed, altered.
//!
//! Checks: never panics; `split` accepts only `version.digits.<64 lowercase hex>` with a
//! non-empty version and 1–20 digits; an arbitrary value is never valid (it would need the MAC);
//! a signed cookie is valid for its session, version and time, and any change of one byte, another
//! session's key or a time at or past its expiry makes it invalid or expired, never valid.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sticky_canary::routing::flow::{key_digest, split, Outcome};
use sticky_canary::plan::Plan;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    value: &'a [u8],
    session: &'a [u8],
    other: &'a [u8],
    now: u32,
    later: u16,
    flip_at: usize,
    flip: u8,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let json = br#"{"service":"checkout","versions":[{"name":"canary","weight":1},
            {"name":"stable","weight":1}],"default_version":"stable",
            "session":{"sources":[{"cookie":"session_id"}],
            "hold":{"cookie":"sc_hold","idle_seconds":60,
                    "flows":{"cookie":"sc_flow","drain_seconds":120,"key_env":"K"}}}}"#;
        let env = |n: &str| (n == "K").then(|| "k".repeat(32));
        Plan::from_json_with_env(json, &env).expect("the fuzz plan compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let plan = plan();
    let flows = plan.flows.as_ref().expect("flows");
    let versions = |n: &[u8]| plan.version_named(n);
    let now = u64::from(input.now);
    let digest = key_digest(input.session);

    if let Some((version, expiry, _)) = split(input.value) {
        assert!(!version.is_empty());
        assert!((1..=20).contains(&expiry.len()));
        assert!(expiry.iter().all(u8::is_ascii_digit));
    }
    assert_ne!(
        flows.check(input.value, &digest, now, versions).0,
        Outcome::Valid,
        "an arbitrary value checked valid"
    );

    let set = flows.set_cookie(&digest, "canary", now).expect("keyed");
    let value = set
        .split(';')
        .next()
        .and_then(|p| p.strip_prefix("sc_flow="))
        .expect("name=value")
        .as_bytes()
        .to_vec();
    let later = now + u64::from(input.later);
    let expected = if later < now + 120 {
        (Outcome::Valid, Some((0, now + 120)))
    } else {
        (Outcome::Expired, None)
    };
    assert_eq!(flows.check(&value, &digest, later, versions), expected);
    if input.other != input.session {
        let (outcome, _) = flows.check(&value, &key_digest(input.other), now, versions);
        assert_eq!(outcome, Outcome::Invalid, "another session's cookie");
    }
    if input.flip != 0 {
        let mut bad = value.clone();
        let i = input.flip_at % bad.len();
        bad[i] ^= input.flip;
        let (outcome, _) = flows.check(&bad, &digest, now, versions);
        assert_eq!(outcome, Outcome::Invalid, "a changed byte at {i}");
    }
});
