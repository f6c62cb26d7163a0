//! `Plan::decide` and the plan's published arithmetic: source order, cookie reads, precedence
//! (override → pin → flow → hold → hash → assigned → default), buckets, stage zero, the split of
//! random keys, the ramp, and flagd's published vectors.

use super::{Plan, Source};
use crate::routing::cookies::ID_BYTES;
use crate::routing::decision::{Decision, Reason, RequestView};
use crate::routing::hash::{bucket, murmur3_32_concat, position, BUCKETS};

proptest::proptest! {
    /// "bucket < 100·p" selects exactly the sessions that weights canary p / stable 100−p
    /// (canary first) send to the canary, for every whole and hundredth percentage.
    #[test]
    fn bucket_threshold_equals_weighted_split(
        salt in proptest::collection::vec(proptest::num::u8::ANY, 0..24),
        key in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        hundredths in 0u64..=10_000,
    ) {
        let h = murmur3_32_concat(&salt, &key, 0);
        let canary_by_weights = position(h, BUCKETS) < hundredths;
        let canary_by_bucket = u64::from(bucket(&salt, &key)) < hundredths;
        proptest::prop_assert_eq!(canary_by_weights, canary_by_bucket);
        // Whole percentages through the plan's own weights (total 100).
        if hundredths % 100 == 0 {
            let p = hundredths / 100;
            let by_plan = position(h, 100) < p;
            proptest::prop_assert_eq!(by_plan, canary_by_bucket);
        }
    }

    /// Through `Plan::decide`: a hashed decision carries the published bucket and goes to
    /// the canary exactly when bucket < hundredths; a held one goes to the default version
    /// with no bucket, whatever the key and the weights.
    #[test]
    fn decisions_carry_the_bucket_and_the_hold_only_ever_holds_on_default(
        key in "[!-~]{1,40}",
        hundredths in 0u32..=10_000,
        held in proptest::bool::ANY,
    ) {
        let json = serde_json::json!({
            "service": "s", "salt": "ramp",
            "versions": [{"name": "canary", "weight": hundredths},
                         {"name": "stable", "weight": 10_000 - hundredths}],
            "session": {"sources": [{"header": "x-key"}],
                        "hold": {"cookie": "hold", "idle_seconds": 60}}
        });
        let p = Plan::from_json(json.to_string().as_bytes()).unwrap();
        let cookie: &[u8] = if held { b"hold=1" } else { b"other=1" };
        let d = p.decide(&mut &[("x-key", key.as_bytes()), ("cookie", cookie)][..]);
        let b = bucket(b"ramp", key.as_bytes());
        if held {
            proptest::prop_assert_eq!((d.version, d.reason, d.bucket), (1, Reason::Hold, None));
        } else {
            proptest::prop_assert_eq!((d.reason, d.bucket), (Reason::Hash, Some(b)));
            proptest::prop_assert_eq!(d.version == 0, u32::from(b) < hundredths);
        }
        proptest::prop_assert!(d.session);
    }
}

fn plan(salt: &str, versions: &[(&str, u32)]) -> Plan {
    let versions: Vec<_> = versions
        .iter()
        .map(|(n, w)| serde_json::json!({"name": n, "weight": w}))
        .collect();
    let json = serde_json::json!({
        "service": "svc", "salt": salt, "versions": versions,
        "session": {"sources": [{"header": "x-key"}]}
    });
    Plan::from_json(json.to_string().as_bytes()).unwrap()
}

/// OpenFeature flagd's published `fractional` vectors (open-feature/flagd-testbed,
/// evaluator/gherkin/fractional.feature, `@fractional-v2`, with the flags of
/// evaluator/flags/testkit-flags.json). flagd hashes `flagKey + targetingKey` unless the rule
/// names its own bucketing expression; here salt = that prefix, session key = the rest.
#[test]
fn flagd_fractional_v2_vectors() {
    let suits = [
        ("clubs", 25),
        ("diamonds", 25),
        ("hearts", 25),
        ("spades", 25),
    ];
    // "fractional-flag": {"cat": [$flagd.flagKey, user.name]}
    let p = plan("fractional-flag", &suits);
    for (name, want) in [
        ("jack", "hearts"),
        ("queen", "spades"),
        ("ten", "clubs"),
        ("nine", "diamonds"),
        ("3", "clubs"),
    ] {
        assert_eq!(p.version_name(p.bucket(name.as_bytes())), want, "{name}");
    }
    // "fractional-flag-shorthand": default bucketing key flagKey + targetingKey, weights 1/1.
    let p = plan("fractional-flag-shorthand", &[("heads", 1), ("tails", 1)]);
    for (key, want) in [("jon@company.com", "heads"), ("jane@company.com", "tails")] {
        assert_eq!(p.version_name(p.bucket(key.as_bytes())), want, "{key}");
    }
    // "fractional-flag-A-shared-seed": {"cat": ["shared-seed", user.name]}
    let p = plan("shared-seed", &suits);
    for (name, want) in [
        ("seven", "hearts"),
        ("eight", "diamonds"),
        ("nine", "clubs"),
        ("two", "spades"),
    ] {
        assert_eq!(p.version_name(p.bucket(name.as_bytes())), want, "{name}");
    }
    // "fractional-hash-edge-flag": {"var": "targetingKey"} alone, i.e. an empty salt; keys
    // chosen by flagd so their hash sits on the bucket boundaries.
    let p = plan("", &[("lower", 50), ("upper", 50)]);
    for (key, want) in [
        ("ejOoVL", "lower"),
        ("bY9fO-", "lower"),
        ("SI7p-", "lower"),
        ("6LvT0", "upper"),
        ("ceQdGm", "upper"),
    ] {
        assert_eq!(p.version_name(p.bucket(key.as_bytes())), want, "{key}");
    }
}

#[test]
fn version_of_cluster() {
    let p = plan("s", &[("canary", 1), ("stable", 1)]);
    let cases: &[(&[u8], Option<usize>)] = &[
        (b"canary", Some(0)),
        (b"stable", Some(1)),
        (
            b"outbound|80|canary|checkout.shop.svc.cluster.local",
            Some(0),
        ),
        (
            b"outbound|8080|stable|checkout.shop.svc.cluster.local",
            Some(1),
        ),
        (b"outbound|80||checkout.shop.svc.cluster.local", None),
        (b"outbound|80|blue|checkout.shop.svc.cluster.local", None),
        (b"inbound|80|canary|checkout", None),
        (b"outbound|80|canary", None),
        (b"Canary", None),
        (b"", None),
    ];
    for (cluster, want) in cases {
        assert_eq!(
            p.version_of_cluster(cluster),
            *want,
            "{}",
            String::from_utf8_lossy(cluster)
        );
    }
}

#[test]
fn pick_follows_cumulative_weights() {
    let p = plan("s", &[("a", 0), ("b", 5), ("c", 0), ("d", 95)]);
    assert_eq!(p.cumulative, vec![0, 5, 5, 100]);
    assert_eq!(p.pick(0), 1);
    assert_eq!(p.pick(4), 1);
    assert_eq!(p.pick(5), 3);
    assert_eq!(p.pick(99), 3);
}

type Headers = &'static [(&'static str, &'static [u8])];

fn decide(p: &Plan, headers: &[(&str, &[u8])]) -> Decision {
    let mut h = headers;
    p.decide(&mut h)
}

/// The decision for session key `k`, written out with the published functions.
fn hashed(p: &Plan, k: &str) -> Decision {
    Decision {
        version: p.bucket(k.as_bytes()),
        reason: Reason::Hash,
        minted: None,
        bucket: Some(bucket(&p.salt, k.as_bytes())),
        session: true,
        flow: None,
        key: None,
    }
}

fn cookie_then_header() -> Plan {
    Plan::from_json(
        br#"{"service":"checkout","versions":[{"name":"canary","weight":50},{"name":"stable","weight":50}],
             "session":{"sources":[{"cookie":"session_id"},{"header":"x-user-id"}]}}"#,
    )
    .unwrap()
}

#[test]
fn source_order_and_fall_through() {
    let p = cookie_then_header();
    let by_key = |k: &str| hashed(&p, k);
    let default = Decision::new(1, Reason::Default);
    let cases: &[(Headers, Decision)] = &[
        (
            &[("cookie", b"session_id=s1"), ("x-user-id", b"u1")],
            by_key("s1"),
        ),
        (
            &[("x-user-id", b"u1"), ("cookie", b"session_id=s1")],
            by_key("s1"),
        ),
        (
            &[("cookie", b"session_id="), ("x-user-id", b"u1")],
            by_key("u1"),
        ),
        (
            &[("cookie", b"session_id=\"\""), ("x-user-id", b"u1")],
            by_key("u1"),
        ),
        (
            &[("cookie", b"other=s1"), ("x-user-id", b"u1")],
            by_key("u1"),
        ),
        (&[("cookie", b"session_id=s1")], by_key("s1")),
        (&[("x-user-id", b"u1")], by_key("u1")),
        (&[("X-User-Id", b"u1")], by_key("u1")),
        (&[("x-user-id", b"  u1 ")], by_key("u1")),
        (&[("x-user-id", b"")], default),
        (&[("x-user-id", b"   ")], default),
        (&[("cookie", b"session_id=")], default),
        (&[], default),
    ];
    for (headers, want) in cases {
        assert_eq!(decide(&p, headers), *want, "{headers:?}");
    }
}

#[test]
fn several_cookie_headers() {
    let p = cookie_then_header();
    let key = |k: &str| hashed(&p, k);
    let cases: &[(Headers, Decision)] = &[
        (
            &[("cookie", b"a=1"), ("cookie", b"session_id=two")],
            key("two"),
        ),
        (
            &[("cookie", b"session_id=one"), ("cookie", b"session_id=two")],
            key("one"),
        ),
        (
            &[
                ("cookie", b"a=1"),
                ("x-user-id", b"u"),
                ("cookie", b"b=2; session_id=three"),
            ],
            key("three"),
        ),
        // The first occurrence is empty: no key from the cookie, fall through to the header.
        (
            &[
                ("cookie", b"session_id="),
                ("cookie", b"session_id=two"),
                ("x-user-id", b"u"),
            ],
            key("u"),
        ),
    ];
    for (headers, want) in cases {
        assert_eq!(decide(&p, headers), *want, "{headers:?}");
    }
}

/// One `Cookie` header (or none), counting the reads of the first and of all of them.
struct Counting {
    cookie: Option<&'static [u8]>,
    first: u32,
    all: u32,
}

impl RequestView for Counting {
    type Value = Vec<u8>;
    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        if name == "cookie" {
            self.first += 1;
            return self.cookie.map(<[u8]>::to_vec);
        }
        None
    }
    fn get_all(&mut self, name: &str) -> Vec<Vec<u8>> {
        if name == "cookie" {
            self.all += 1;
        }
        self.cookie.map(<[u8]>::to_vec).into_iter().collect()
    }
}

/// The first `Cookie` header is fetched once; all of them only when it lacks a wanted cookie.
#[test]
fn cookie_header_reads_are_bounded() {
    let p = Plan::from_json(
        br#"{"service":"s","versions":[{"name":"a","weight":1}],
             "session":{"sources":[{"cookie":"a"},{"header":"h"},{"cookie":"b"},{"cookie":"c"}]}}"#,
    )
    .unwrap();
    // No Cookie header: one read, no scan.
    let mut c = Counting {
        cookie: None,
        first: 0,
        all: 0,
    };
    assert_eq!(p.decide(&mut c).reason, Reason::Default);
    assert_eq!((c.first, c.all), (1, 0));
    // A Cookie header with the first wanted cookie: one read, no scan.
    let mut c = Counting {
        cookie: Some(b"a=1"),
        first: 0,
        all: 0,
    };
    assert_eq!(p.decide(&mut c).reason, Reason::Hash);
    assert_eq!((c.first, c.all), (1, 0));
    // A Cookie header without any wanted cookie: one read, one scan.
    let mut c = Counting {
        cookie: Some(b"z=1"),
        first: 0,
        all: 0,
    };
    assert_eq!(p.decide(&mut c).reason, Reason::Default);
    assert_eq!((c.first, c.all), (1, 1));
}

#[test]
fn cookie_header_is_read_once() {
    struct Counting(u32);
    impl RequestView for Counting {
        type Value = Vec<u8>;
        fn get(&mut self, name: &str) -> Option<Vec<u8>> {
            if name == "cookie" {
                self.0 += 1;
            }
            None
        }
        fn get_all(&mut self, _name: &str) -> Vec<Vec<u8>> {
            Vec::new()
        }
    }
    let p = Plan::from_json(
        br#"{"service":"s","versions":[{"name":"a","weight":1}],
             "session":{"sources":[{"cookie":"a"},{"header":"h"},{"cookie":"b"},{"cookie":"c"}]}}"#,
    )
    .unwrap();
    let mut c = Counting(0);
    assert_eq!(p.decide(&mut c).reason, Reason::Default);
    assert_eq!(c.0, 1);
}

/// A plan with the hold, a pin, an override and both kinds of session source.
fn held() -> Plan {
    Plan::from_json(
        br#"{"service":"checkout","versions":[{"name":"canary","weight":50},{"name":"stable","weight":50}],
             "session":{"sources":[{"cookie":"session_id"},{"header":"x-user-id"}],
                        "hold":{"cookie":"sc_hold","idle_seconds":900}},
             "override":{"tokens":["0123456789abcdef"]},
             "pins":[{"header":"x-merchant","values":["m1"],"version":"canary"}],
             "bucket_header":"x-canary-bucket"}"#,
    )
    .unwrap()
}

/// Override → pin → hold → hash → default, and only hash (and assigned) decisions carry a
/// bucket.
#[test]
fn hold_precedence_and_buckets() {
    let p = held();
    let canary_key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| p.bucket(k.as_bytes()) == 0)
        .unwrap();
    let held_cookie = format!("session_id={canary_key}; sc_hold=1");
    let session_cookie = format!("session_id={canary_key}");
    let keyed_hold = Decision {
        session: true,
        ..Decision::new(1, Reason::Hold)
    };
    type Case<'a> = (Vec<(&'a str, &'a [u8])>, Decision);
    let cases: Vec<Case> = vec![
        (vec![("cookie", held_cookie.as_bytes())], keyed_hold),
        // The hold cookie with any value but an empty one; in a header source session too.
        (
            vec![
                ("cookie", b"sc_hold=forged"),
                ("x-user-id", canary_key.as_bytes()),
            ],
            keyed_hold,
        ),
        (
            vec![("cookie", b"sc_hold=")],
            Decision::new(1, Reason::Default),
        ),
        // Held without a session key: the default version, nothing to refresh.
        (
            vec![("cookie", b"sc_hold=1")],
            Decision::new(1, Reason::Hold),
        ),
        // A pin and an override still win over the hold.
        (
            vec![("cookie", held_cookie.as_bytes()), ("x-merchant", b"m1")],
            Decision::new(0, Reason::Pin),
        ),
        (
            vec![
                ("cookie", held_cookie.as_bytes()),
                ("x-canary-override", b"canary"),
                ("x-canary-token", b"0123456789abcdef"),
            ],
            Decision::new(0, Reason::Override),
        ),
        // The hold beats the hash.
        (
            vec![("cookie", session_cookie.as_bytes())],
            hashed(&p, &canary_key),
        ),
    ];
    for (headers, want) in cases {
        assert_eq!(decide(&p, &headers), want, "{headers:?}");
    }
    assert_eq!(hashed(&p, &canary_key).version, 0, "a canary session");
}

/// The bucket comes from the same hash as the version: it equals [`bucket`], and with
/// weights canary p / stable 100−p the version is the canary exactly when bucket < 100·p.
#[test]
fn the_decision_carries_the_published_bucket() {
    for p_canary in [0u32, 1, 5, 25, 50, 99, 100] {
        let p = plan(
            "checkout-2026-11",
            &[("canary", p_canary), ("stable", 100 - p_canary)],
        );
        for i in 0..2000 {
            let key = format!("user-{i}");
            let d = decide(&p, &[("x-key", key.as_bytes())]);
            let b = bucket(b"checkout-2026-11", key.as_bytes());
            assert_eq!(d.bucket, Some(b), "{key}");
            assert_eq!(
                d.version == 0,
                u32::from(b) < 100 * p_canary,
                "{key} {p_canary}"
            );
        }
    }
}

/// The hold lookup costs no host call of its own when the session key is a cookie: it shares
/// the first `Cookie` header read and never scans the others for itself.
#[test]
fn the_hold_reads_no_more_cookie_headers() {
    let mut c = Counting {
        cookie: Some(b"session_id=s1"),
        first: 0,
        all: 0,
    };
    assert_eq!(held().decide(&mut c).reason, Reason::Hash);
    assert_eq!((c.first, c.all), (1, 0));
    // A hold cookie in a later Cookie header counts when those were read for the session.
    let mut several: &[(&str, &[u8])] = &[
        ("cookie", b"theme=dark"),
        ("cookie", b"session_id=s1"),
        ("cookie", b"sc_hold=1"),
    ];
    assert_eq!(held().decide(&mut several).reason, Reason::Hold);
    // …and is not looked for there otherwise (browsers send one header; HTTP/2 joins them).
    let mut several: &[(&str, &[u8])] = &[("cookie", b"session_id=s1"), ("cookie", b"sc_hold=1")];
    assert_eq!(held().decide(&mut several).reason, Reason::Hash);
}

/// Weight 0 gets nobody; the split of 10 000 random keys is within 4 standard deviations.
#[test]
fn split_of_random_keys() {
    let p = plan(
        "checkout-2026-11",
        &[("zero", 0), ("canary", 20), ("stable", 80)],
    );
    let n = 10_000u32;
    let mut counts = [0u32; 3];
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..n {
        // xorshift64: deterministic "random" keys
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        counts[p.bucket(format!("{rng:016x}").as_bytes())] += 1;
    }
    assert_eq!(counts[0], 0);
    let expected = f64::from(n) * 0.2;
    let sd = (f64::from(n) * 0.2 * 0.8).sqrt();
    assert!(
        (f64::from(counts[1]) - expected).abs() < 4.0 * sd,
        "{counts:?}"
    );
}

/// Ramping the canary (listed first) 0 → 5 → 20 → 50 never moves a session off it.
#[test]
fn monotonic_ramp_first_listed() {
    let keys: Vec<String> = (0..5_000).map(|i| format!("session-{i}")).collect();
    let mut on_canary = std::collections::HashSet::new();
    for w in [0, 5, 20, 50, 100] {
        let p = plan("ramp", &[("canary", w), ("stable", 100 - w)]);
        let now: std::collections::HashSet<_> = keys
            .iter()
            .filter(|k| p.bucket(k.as_bytes()) == 0)
            .collect();
        assert!(
            on_canary.is_subset(&now),
            "weight {w} moved a session off canary"
        );
        on_canary = now;
    }
    assert_eq!(on_canary.len(), keys.len());
}

const TOKEN: &str = "qa-token-0123456789abcdef";

/// Stage zero: canary at weight 0, an override, a pin, anonymous sessions.
fn stage_zero() -> Plan {
    let json = serde_json::json!({
        "service": "payments",
        "versions": [{"name": "canary", "weight": 0}, {"name": "stable", "weight": 100}],
        "session": {"sources": [{"cookie": "session_id"}, {"header": "x-user-id"}],
                    "assign_cookie": {"name": "sc_session", "max_age_seconds": 60}},
        "override": {"tokens": [TOKEN]},
        "pins": [{"header": "x-merchant-id", "values": ["m_test_1", "m_test_2"], "version": "canary"},
                 {"header": "x-tenant", "values": ["t1"], "version": "stable"}]
    });
    Plan::from_json(json.to_string().as_bytes()).unwrap()
}

/// A request view over a header list that mints a fixed id.
struct Minting<'a>(&'a [(&'a str, &'a [u8])], Option<[u8; ID_BYTES]>);

impl<'a> RequestView for Minting<'a> {
    type Value = &'a [u8];
    fn get(&mut self, name: &str) -> Option<&'a [u8]> {
        RequestView::get(&mut self.0, name)
    }
    fn get_all(&mut self, name: &str) -> Vec<&'a [u8]> {
        RequestView::get_all(&mut self.0, name)
    }
    fn random_id(&mut self) -> Option<[u8; ID_BYTES]> {
        self.1
    }
}

#[test]
fn precedence_override_pin_hash_assigned_default() {
    let p = stage_zero();
    let random = Some([7u8; ID_BYTES]);
    let decide = |headers: Headers, random| p.decide(&mut Minting(headers, random));
    let (canary, stable) = (0, 1);
    let ovr: (&str, &[u8]) = ("x-canary-override", b"canary");
    let tok: (&str, &[u8]) = ("x-canary-token", TOKEN.as_bytes());
    let pin: (&str, &[u8]) = ("x-merchant-id", b"m_test_2");
    let sess: (&str, &[u8]) = ("cookie", b"session_id=abc");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, usize, Reason);
    let cases: Vec<Case> = vec![
        (
            "override beats everything",
            vec![ovr, tok, pin, sess],
            canary,
            Reason::Override,
        ),
        (
            "override to stable beats a canary pin",
            vec![("x-canary-override", b"stable"), tok, pin],
            stable,
            Reason::Override,
        ),
        (
            "pin beats the session",
            vec![pin, sess],
            canary,
            Reason::Pin,
        ),
        ("second pin", vec![("x-tenant", b"t1")], stable, Reason::Pin),
        (
            "pin value not listed",
            vec![("x-merchant-id", b"m_live_9"), sess],
            stable,
            Reason::Hash,
        ),
        (
            "pin values are exact",
            vec![("x-merchant-id", b"M_TEST_2")],
            stable,
            Reason::Assigned,
        ),
        ("session key", vec![sess], stable, Reason::Hash),
        ("no key: minted", vec![], stable, Reason::Assigned),
        (
            "wrong token: ignored",
            vec![ovr, ("x-canary-token", b"qa-token-0123456789abcdeX"), sess],
            stable,
            Reason::Hash,
        ),
        (
            "token one short",
            vec![
                ovr,
                ("x-canary-token", &TOKEN.as_bytes()[..TOKEN.len() - 1]),
            ],
            stable,
            Reason::Assigned,
        ),
        (
            "token upper-cased",
            vec![ovr, ("x-canary-token", b"QA-TOKEN-0123456789ABCDEF")],
            stable,
            Reason::Assigned,
        ),
        (
            "token with a suffix",
            vec![ovr, ("x-canary-token", b"qa-token-0123456789abcdef0")],
            stable,
            Reason::Assigned,
        ),
        ("missing token", vec![ovr, sess], stable, Reason::Hash),
        (
            "unknown version",
            vec![("x-canary-override", b"v9"), tok, sess],
            stable,
            Reason::Hash,
        ),
        (
            "token without override header",
            vec![tok, sess],
            stable,
            Reason::Hash,
        ),
    ];
    for (what, headers, version, reason) in cases {
        let headers: &'static [(&'static str, &'static [u8])] =
            Box::leak(headers.into_boxed_slice());
        let d = decide(headers, random);
        assert_eq!((d.version, d.reason), (version, reason), "{what}");
        assert_eq!(d.minted.is_some(), reason == Reason::Assigned, "{what}");
    }
    // No randomness available: the default version, nothing minted.
    let d = decide(&[], None);
    assert_eq!(
        (d.version, d.reason, d.minted),
        (stable, Reason::Default, None)
    );
}

#[test]
fn minted_id_is_hashed_like_a_key_and_then_read_back() {
    let p = Plan::from_json(
        br#"{"service":"s","versions":[{"name":"a","weight":1},{"name":"b","weight":1}],
             "session":{"sources":[{"header":"x-user-id"}],"assign_cookie":{"name":"sc"}}}"#,
    )
    .unwrap();
    assert_eq!(
        p.sources.last(),
        Some(&Source::Cookie("sc".into())),
        "the assigned cookie is the last source"
    );
    for seed in 0..50u8 {
        let d = p.decide(&mut Minting(&[], Some([seed; ID_BYTES])));
        let id = d.minted.unwrap();
        assert_eq!(d.version, p.bucket(&id), "routed by hashing the id");
        // The next request carries the cookie: same version, by hash, nothing minted.
        let cookie = [b"sc=".as_slice(), &id].concat();
        let headers: &'static [(&'static str, &'static [u8])] =
            Box::leak(vec![("cookie", &*Box::leak(cookie.into_boxed_slice()))].into_boxed_slice());
        let again = p.decide(&mut Minting(headers, Some([0xee; ID_BYTES])));
        assert_eq!(
            (again.version, again.reason, again.minted),
            (d.version, Reason::Hash, None)
        );
    }
}

#[test]
fn pins_are_o1_with_thousands_of_values() {
    let values: Vec<String> = (0..5_000).map(|i| format!("m_{i}")).collect();
    let json = serde_json::json!({
        "service": "s", "versions": [{"name": "canary", "weight": 0}, {"name": "stable", "weight": 1}],
        "session": {"sources": [{"header": "x-user-id"}]},
        "pins": [{"header": "X-Merchant-Id", "values": values, "version": "canary"}]
    });
    let p = Plan::from_json(json.to_string().as_bytes()).unwrap();
    assert_eq!(p.pins[0].header, "x-merchant-id");
    assert_eq!(p.pins[0].values.len(), 5_000);
    let mut h: Headers = &[("x-merchant-id", b"m_4999")];
    assert_eq!(p.decide(&mut h).reason, Reason::Pin);
}

#[test]
fn stage_zero_refusals_name_the_field() {
    let base = serde_json::json!({
        "service": "s", "versions": [{"name": "canary", "weight": 0}, {"name": "stable", "weight": 1}],
        "session": {"sources": [{"header": "x-user-id"}]}
    });
    let cases = [
        (
            serde_json::json!({"pins": [{"header": "x-m", "values": ["a"], "version": "blue"}]}),
            "pins[0].version",
        ),
        (
            serde_json::json!({"pins": [{"header": "x-m", "values": [], "version": "canary"}]}),
            "pins[0].values",
        ),
        (
            serde_json::json!({"pins": [{"header": "x-m", "values": ["a", ""], "version": "canary"}]}),
            "pins[0].values[1]",
        ),
        (
            serde_json::json!({"pins": [{"header": "x m", "values": ["a"], "version": "canary"}]}),
            "pins[0].header",
        ),
        (
            serde_json::json!({"pins": [{"header": "x-m", "value": ["a"], "version": "canary"}]}),
            "pins[0].value",
        ),
        (
            serde_json::json!({"override": {"tokens": ["short"]}}),
            "override.tokens[0]",
        ),
        (
            serde_json::json!({"override": {"header": "x-a", "token_header": "X-A"}}),
            "override.token_header",
        ),
        (
            serde_json::json!({"override": {"tokens_env": ""}}),
            "override.tokens_env",
        ),
        (
            serde_json::json!({"override": {"token": "x"}}),
            "override.token",
        ),
        (serde_json::json!({"reason_header": ""}), "reason_header"),
    ];
    for (extra, path) in cases {
        let mut v = base.clone();
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        let err = Plan::from_json(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.path, path, "{extra}: {err}");
    }
    let mut v = base.clone();
    v["session"]["assign_cookie"] = serde_json::json!({"name": "sc", "same_site": "none"});
    assert_eq!(
        Plan::from_json(v.to_string().as_bytes()).unwrap_err().path,
        "session.assign_cookie.same_site"
    );
}

#[test]
fn tokens_from_the_environment() {
    let json =
        br#"{"service":"s","versions":[{"name":"canary","weight":0},{"name":"stable","weight":1}],
                    "session":{"sources":[{"header":"x-user-id"}]},
                    "override":{"tokens_env":"CANARY_OVERRIDE_TOKENS"}}"#;
    let env = |name: &str| (name == "CANARY_OVERRIDE_TOKENS").then(|| format!("ignored, {TOKEN}"));
    let p = Plan::from_json_with_env(json, &env).unwrap();
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    let mut h: &[(&str, &[u8])] = &[
        ("x-canary-override", b"canary"),
        ("x-canary-token", TOKEN.as_bytes()),
    ];
    assert_eq!(p.decide(&mut h).reason, Reason::Override);
    // Without the variable: disabled, with a warning.
    let p = Plan::from_json(json).unwrap();
    assert!(p
        .warnings
        .iter()
        .any(|w| w.contains("overrides are disabled")));
    let mut h: &[(&str, &[u8])] = &[
        ("x-canary-override", b"canary"),
        ("x-canary-token", TOKEN.as_bytes()),
    ];
    assert_eq!(p.decide(&mut h).reason, Reason::Default);
}

proptest::proptest! {
    #[test]
    fn same_input_same_version(salt in ".{0,16}", key in proptest::collection::vec(proptest::num::u8::ANY, 1..64),
                               a in 0u32..1000, b in 0u32..1000) {
        proptest::prop_assume!(a + b > 0);
        let p1 = plan(&salt, &[("a", a), ("b", b)]);
        let p2 = plan(&salt, &[("a", a), ("b", b)]);
        proptest::prop_assert_eq!(p1.bucket(&key), p2.bucket(&key));
    }

    /// Raising the first or the last listed version's weight never moves a session off it.
    #[test]
    fn raising_first_or_last_keeps_its_sessions(key in "[ -~]{1,40}", w in proptest::collection::vec(0u32..100, 3),
                                                extra in 1u32..1000) {
        let names = ["first", "middle", "last"];
        proptest::prop_assume!(w.iter().sum::<u32>() > 0);
        let before = plan("s", &[(names[0], w[0]), (names[1], w[1]), (names[2], w[2])]);
        let v = before.bucket(key.as_bytes());
        let raised_first = plan("s", &[(names[0], w[0] + extra), (names[1], w[1]), (names[2], w[2])]);
        let raised_last = plan("s", &[(names[0], w[0]), (names[1], w[1]), (names[2], w[2] + extra)]);
        if v == 0 { proptest::prop_assert_eq!(raised_first.bucket(key.as_bytes()), 0); }
        if v == 2 { proptest::prop_assert_eq!(raised_last.bucket(key.as_bytes()), 2); }
    }

    #[test]
    fn zero_weight_never_chosen(key in proptest::collection::vec(proptest::num::u8::ANY, 0..64), w in 1u32..1000) {
        let p = plan("s", &[("zero", 0), ("one", w), ("zero2", 0)]);
        proptest::prop_assert_eq!(p.bucket(&key), 1);
    }
}
