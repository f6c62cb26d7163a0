//! The pooled brake (`guard.pool`) against the in-memory host: the lease that elects one worker
//! VM, the one query per interval, the evidence gauges, what an answer trips (and adopts), and
//! every failure counted and harmless. Two `Root`s on one `FakeHost` are two worker VMs of one
//! Envoy (shared metrics, shared data).

use super::fake::FakeHost;
use super::tests::{config, cookie, Setup};
use super::{Level, Map, Root};
use crate::brake::pool::{lease, Outcome};
use crate::metrics::encode;
use serde_json::{json, Value};

const T0: u64 = 1_733_600_000_000;

fn pooled(edit: impl FnOnce(&mut Value)) -> String {
    config(|c| {
        c["guard"] = json!({"baseline": "stable", "min_samples": 20,
                            "checks": [{"error_ratio": {"max_points": 1.0}}],
                            "pool": {"cluster": "prometheus",
                                     "authority": "prometheus.istio-system:9090",
                                     "token_env": "PROM_TOKEN"}});
        c["bucket_header"] = "x-canary-bucket".into();
        edit(c);
    })
}

/// A worker VM of the Envoy behind `host`, configured with `config`.
fn vm(host: &FakeHost) -> Root<FakeHost> {
    let mut root = Root::new(host.clone());
    assert!(root.on_configure(), "{:?}", host.logs(Level::Error));
    root
}

fn setup(config: &str) -> Setup {
    let host = FakeHost::with_config(config);
    host.state().now_ms = T0;
    host.state().random = Some([7; 16]);
    host.state()
        .env
        .insert("PROM_TOKEN".into(), "s3cret-token".into());
    Setup::new_on(host, config)
}

fn advance(t: &Setup, ms: u64) {
    t.host.state().now_ms += ms;
}

fn calls(t: &Setup) -> usize {
    t.host.state().http_calls.len()
}

fn last_token(t: &Setup) -> u32 {
    t.host
        .state()
        .http_calls
        .last()
        .expect("a query was sent")
        .0
}

/// Ticks once a second until the first query goes out; returns its token.
fn first_query(t: &Setup, roots: &[&Root<FakeHost>]) -> u32 {
    for _ in 0..10 {
        for r in roots {
            r.on_tick();
        }
        if calls(t) > 0 {
            return last_token(t);
        }
        advance(t, 1000);
    }
    panic!("no query within 10 s");
}

/// The root's next query (its first, too), answered 200 with `body`.
fn look(t: &Setup, body: &str) {
    let token = next_query(t, &t.root);
    deliver(t, &t.root, token, 200, body.as_bytes());
}

/// Ticks `root` once a second until its next query goes out; returns its token.
fn next_query(t: &Setup, root: &Root<FakeHost>) -> u32 {
    let before = calls(t);
    for _ in 0..15 {
        advance(t, 1000);
        root.on_tick();
        if calls(t) > before {
            return last_token(t);
        }
    }
    panic!("no query within 15 s");
}

/// A 200 answer with these samples: (metric name, version, series label, value).
fn answer(samples: &[(&str, &str, &str, &str)]) -> String {
    let result: Vec<Value> = samples
        .iter()
        .map(|(name, version, metric, value)| {
            let mut m = json!({"__name__": name, "version": version});
            if !metric.is_empty() {
                m["metric"] = (*metric).into();
            }
            json!({"metric": m, "value": [1733600000.5, value]})
        })
        .collect();
    json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string()
}

/// Delivers an answer to the root that sent `token`.
fn deliver(t: &Setup, root: &Root<FakeHost>, token: u32, status: u16, body: &[u8]) {
    {
        let mut s = t.host.state();
        s.call_response = vec![
            (":status".into(), status.to_string().into_bytes()),
            ("content-type".into(), b"application/json".to_vec()),
        ];
        s.call_body = body.to_vec();
    }
    root.on_http_call_response(token, 2, body.len());
}

fn evidence(errors: (&str, &str), responses: (&str, &str)) -> String {
    answer(&[
        ("canary_guard_evidence", "canary", "errors", errors.0),
        ("canary_guard_evidence", "canary", "responses", responses.0),
        ("canary_guard_evidence", "stable", "errors", errors.1),
        ("canary_guard_evidence", "stable", "responses", responses.1),
        ("canary_guard_tripped", "canary", "", "0"),
        ("canary_guard_tripped", "stable", "", "0"),
    ])
}

fn outcome(t: &Setup, o: Outcome) -> i64 {
    let name = encode(
        crate::brake::pool::QUERIES,
        &[("service", "checkout"), ("outcome", o.as_str())],
    );
    t.host.metric(&name).map_or(-1, |m| m.value)
}

fn gauge(t: &Setup, name: &str, tags: &[(&str, &str)]) -> i64 {
    let mut all = vec![("service", "checkout")];
    all.extend_from_slice(tags);
    t.host.metric(&encode(name, &all)).map_or(-1, |m| m.value)
}

fn tripped(t: &Setup) -> i64 {
    t.value(&t.names.guard_tripped[t.version("canary")])
}

fn canary_session_goes_to(t: &Setup) -> (String, String) {
    let c = cookie(&t.key_for("canary"));
    t.exchange(&[("cookie", &c)], Some("stable"), &[(":status", "200")]);
    (
        t.host.values(Map::Request, "x-canary-version").join(","),
        t.host.values(Map::Response, "x-canary-reason").join(","),
    )
}

#[test]
fn one_query_per_interval_from_one_worker_with_the_configured_request() {
    let t = setup(&pooled(|_| {}));
    let second = vm(&t.host);
    let third = vm(&t.host);
    let roots = [&t.root, &second, &third];
    // 60 s of ticks, once a second on each of three workers, every answer on time.
    for _ in 0..60 {
        for r in roots {
            let before = calls(&t);
            r.on_tick();
            if calls(&t) > before {
                let token = last_token(&t);
                deliver(
                    &t,
                    r,
                    token,
                    200,
                    evidence(("0", "0"), ("0", "0")).as_bytes(),
                );
            }
        }
        advance(&t, 1000);
    }
    let sent = t.host.state().http_calls.clone();
    // One query per 5 s interval (+ up to a tenth of jitter), never two within an interval.
    assert!(
        (10..=12).contains(&sent.len()),
        "{} queries in 60 s",
        sent.len()
    );
    let (_, cluster, headers, timeout) = &sent[0];
    assert_eq!((cluster.as_str(), *timeout), ("prometheus", 1000));
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(h(":method"), "GET");
    assert_eq!(h(":authority"), "prometheus.istio-system:9090");
    assert_eq!(h("authorization"), "Bearer s3cret-token");
    assert!(
        h(":path").starts_with("/api/v1/query?query=sum%20by%20"),
        "{}",
        h(":path")
    );
    assert_eq!(outcome(&t, Outcome::Ok), sent.len() as i64);
    // The token is never logged.
    let logs = t.host.state().logs.clone();
    assert!(logs.iter().all(|(_, l)| !l.contains("s3cret")), "{logs:?}");
}

#[test]
fn the_lease_moves_when_its_holder_stops_or_is_done() {
    let t = setup(&pooled(|_| {}));
    let second = vm(&t.host);
    let token = first_query(&t, &[&t.root, &second]);
    let holder_is_first = {
        // Whoever sent it holds the lease; the other sends nothing while it renews.
        let before = calls(&t);
        deliver(
            &t,
            &t.root,
            token,
            200,
            evidence(("0", "0"), ("0", "0")).as_bytes(),
        );
        deliver(
            &t,
            &second,
            token,
            200,
            evidence(("0", "0"), ("0", "0")).as_bytes(),
        );
        before == calls(&t)
    };
    assert!(holder_is_first);
    let key = lease::lease_key("checkout");
    let l = lease::Lease::decode(&t.host.state().shared[&key].0).unwrap();
    // Only the other worker ticks from now on: after the lease's time (three ticks), it takes
    // over and keeps the interval since the last query.
    let before = calls(&t);
    for _ in 0..10 {
        advance(&t, 1000);
        second.on_tick();
    }
    assert!(calls(&t) > before, "the other worker took over");
    let now = lease::Lease::decode(&t.host.state().shared[&key].0).unwrap();
    assert_ne!(now.holder, l.holder);
    // A plugin instance that is done releases the lease at once.
    let third = vm(&t.host);
    assert!(second.on_done());
    third.on_tick();
    let released = lease::Lease::decode(&t.host.state().shared[&key].0).unwrap();
    assert_ne!(released.holder, now.holder, "taken over on the next tick");
}

#[test]
fn evidence_counts_from_the_generation_start_and_restarts_with_a_new_epoch() {
    let t = setup(&pooled(|_| {}));
    let c = cookie(&t.key_for("canary"));
    for _ in 0..7 {
        t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "503")]);
    }
    first_query(&t, &[&t.root]);
    let ev = |t: &Setup, m: &str| {
        gauge(
            t,
            crate::brake::pool::EVIDENCE,
            &[("version", "canary"), ("metric", m)],
        )
    };
    assert_eq!((ev(&t, "errors"), ev(&t, "responses")), (7, 7));
    let generation = crate::brake::record::generation(b"checkout", 0);
    assert_eq!(
        gauge(&t, crate::brake::pool::GENERATION, &[]),
        i64::from(crate::brake::pool::generation_label(generation))
    );
    // A reconfiguration with the same generation keeps the zero; a new epoch restarts it.
    let mut again = Root::new(t.host.clone());
    assert!(again.on_configure());
    again.on_tick();
    advance(&t, 10_000);
    again.on_tick();
    assert_eq!(ev(&t, "errors"), 7);
    let next = pooled(|c| c["guard"]["epoch"] = 1.into());
    t.host.state().config = next.into_bytes();
    let mut epoch1 = Root::new(t.host.clone());
    assert!(epoch1.on_configure());
    advance(&t, 10_000);
    epoch1.on_tick();
    assert_eq!((ev(&t, "errors"), ev(&t, "responses")), (0, 0));
    let g1 = crate::brake::record::generation(b"checkout", 1);
    assert_eq!(
        gauge(&t, crate::brake::pool::GENERATION, &[]),
        i64::from(crate::brake::pool::generation_label(g1))
    );
}

#[test]
fn a_harmful_pooled_answer_trips_every_worker_and_an_aa_answer_does_not() {
    let t = setup(&pooled(|_| {}));
    let second = vm(&t.host);
    look(&t, &evidence(("1", "2"), ("300", "300")));
    assert_eq!(tripped(&t), 0, "an A/A answer trips nothing");
    look(&t, &evidence(("40", "2"), ("400", "400")));
    assert_eq!(tripped(&t), 1);
    let line = t.warn_line("guard tripped canary on the pooled evidence of every Envoy");
    assert!(line.contains("canary 40/400, stable 2/400"), "{line}");
    assert_eq!(
        canary_session_goes_to(&t),
        ("stable".into(), "guard".into())
    );
    // The other worker learns it from shared data on its tick.
    second.on_tick();
    let c = cookie(&t.key_for("canary"));
    t.host.begin(&[("cookie", &c)]);
    let mut s = second.stream();
    s.on_request_headers();
    assert_eq!(t.host.values(Map::Request, "x-canary-version"), ["stable"]);
}

#[test]
fn a_trip_reported_by_another_envoy_of_the_generation_is_adopted() {
    let t = setup(&pooled(|_| {}));
    look(
        &t,
        &answer(&[
            ("canary_guard_evidence", "canary", "errors", "0"),
            ("canary_guard_evidence", "canary", "responses", "10"),
            ("canary_guard_tripped", "canary", "", "1"),
        ]),
    );
    assert_eq!(tripped(&t), 1);
    assert!(t
        .warn_line("guard tripped canary: adopted from the pool")
        .contains("1 Envoy"));
    // Nothing in an answer ever untrips: a later answer without the trip changes nothing.
    look(&t, &evidence(("0", "0"), ("0", "0")));
    assert_eq!(tripped(&t), 1);
}

#[test]
fn a_figure_that_went_down_judges_nothing() {
    let t = setup(&pooled(|_| {}));
    look(&t, &evidence(("1", "2"), ("300", "300")));
    // Harmful, but stable's responses went down (an Envoy left): not judged.
    look(&t, &evidence(("60", "2"), ("400", "250")));
    assert_eq!(tripped(&t), 0);
    let infos = t.host.logs(Level::Info);
    assert_eq!(infos.iter().filter(|l| l.contains("went down")).count(), 1);
    // The next look, from there on up, judges again.
    look(&t, &evidence(("70", "2"), ("450", "260")));
    assert_eq!(tripped(&t), 1);
}

#[test]
fn every_failure_is_counted_once_warned_and_harmless() {
    let t = setup(&pooled(|_| {}));
    // Harmful local counters: with a pool, the local test is off by default.
    let c = cookie(&t.key_for("canary"));
    for _ in 0..40 {
        t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "503")]);
    }
    let s = cookie(&t.key_for("stable"));
    for _ in 0..40 {
        t.exchange(&[("cookie", &s)], Some("stable"), &[(":status", "200")]);
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let big = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[]}},"pad":"{}"}}"#,
        "x".repeat(crate::brake::pool::MAX_ANSWER_BYTES)
    );
    let nan = answer(&[("canary_guard_evidence", "canary", "errors", "NaN")]);
    let negative = answer(&[("canary_guard_evidence", "canary", "errors", "-5")]);
    let cases: Vec<(u16, Vec<u8>, usize, bool, Outcome)> = vec![
        // (status, body, header count, late, outcome)
        (0, vec![], 0, false, Outcome::Unreachable),
        (0, vec![], 0, true, Outcome::Timeout),
        (
            503,
            b"upstream connect error or disconnect/reset before headers".to_vec(),
            2,
            false,
            Outcome::Unreachable,
        ),
        (
            503,
            b"no healthy upstream".to_vec(),
            2,
            false,
            Outcome::Unreachable,
        ),
        (
            504,
            b"upstream request timeout".to_vec(),
            2,
            true,
            Outcome::Timeout,
        ),
        (500, b"oops".to_vec(), 2, false, Outcome::HttpError),
        (401, b"".to_vec(), 2, false, Outcome::HttpError),
        (
            400,
            br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#.to_vec(),
            2,
            false,
            Outcome::HttpError,
        ),
        (200, b"<html>".to_vec(), 2, false, Outcome::BadAnswer),
        (
            200,
            br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.to_vec(),
            2,
            false,
            Outcome::BadAnswer,
        ),
        (200, deep.into_bytes(), 2, false, Outcome::BadAnswer),
        (200, big.into_bytes(), 2, false, Outcome::BadAnswer),
        (200, nan.into_bytes(), 2, false, Outcome::BadAnswer),
        (200, negative.into_bytes(), 2, false, Outcome::BadAnswer),
    ];
    let mut expected = [0i64; 5];
    for (status, body, headers, late, want) in cases {
        let token = next_query(&t, &t.root);
        if late {
            advance(&t, 1500);
        }
        {
            let mut s = t.host.state();
            s.call_response = if headers == 0 {
                vec![]
            } else {
                vec![(":status".into(), status.to_string().into_bytes())]
            };
            s.call_body = body.clone();
        }
        t.root.on_http_call_response(token, headers, body.len());
        expected[want.index()] += 1;
        for o in Outcome::ALL {
            assert_eq!(
                outcome(&t, o),
                expected[o.index()],
                "{want:?} after status {status}"
            );
        }
        assert_eq!(tripped(&t), 0, "{want:?}");
        assert_eq!(
            canary_session_goes_to(&t).1,
            "hash",
            "{want:?}: routing unchanged"
        );
    }
    // A missing cluster: the call is refused at once.
    t.host.fail("http_call");
    let before = t.host.calls_of("http_call");
    while t.host.calls_of("http_call") == before {
        advance(&t, 1000);
        t.root.on_tick();
    }
    expected[Outcome::Unreachable.index()] += 1;
    assert_eq!(
        outcome(&t, Outcome::Unreachable),
        expected[Outcome::Unreachable.index()]
    );
    // One warn line per change of outcome, never one per query; an unknown token is ignored.
    let warns = t.host.logs(Level::Warn);
    let pool_warns = warns
        .iter()
        .filter(|l| l.contains("guard pool of checkout"))
        .count();
    assert_eq!(pool_warns, 7, "one per change of outcome: {warns:#?}");
    t.root.on_http_call_response(999, 2, 0);
    t.host.state().failing.clear();
    for _ in 0..3 {
        let token = next_query(&t, &t.root);
        deliver(
            &t,
            &t.root,
            token,
            200,
            evidence(("0", "0"), ("100", "100")).as_bytes(),
        );
    }
    let infos = t.host.logs(Level::Info);
    assert_eq!(
        infos.iter().filter(|l| l.contains("answers again")).count(),
        1
    );
    assert_eq!(tripped(&t), 0);
}

#[test]
fn the_local_test_beside_a_pool_runs_at_local_alpha() {
    let t = setup(&pooled(|c| {
        c["guard"]["pool"]["local_alpha"] = json!(0.001)
    }));
    let c = cookie(&t.key_for("canary"));
    for _ in 0..40 {
        t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "503")]);
    }
    let s = cookie(&t.key_for("stable"));
    for _ in 0..100 {
        t.exchange(&[("cookie", &s)], Some("stable"), &[(":status", "200")]);
    }
    t.root.on_tick();
    assert_eq!(tripped(&t), 1);
    assert!(t
        .warn_line("guard tripped canary: check")
        .contains("alpha 0.001"));
}

#[test]
fn the_pool_adds_no_host_call_to_the_request_path() {
    let count = |config: &str| {
        let t = setup(config);
        for _ in 0..10 {
            t.root.on_tick();
            advance(&t, 1000);
        }
        let c = cookie(&t.key_for("canary"));
        let before = t.host.call_count();
        t.exchange(&[("cookie", &c)], Some("canary"), &[(":status", "200")]);
        t.host.call_count() - before
    };
    let without = config(|c| {
        c["guard"] = json!({"baseline": "stable", "min_samples": 20,
                            "checks": [{"error_ratio": {"max_points": 1.0}}]});
        c["bucket_header"] = "x-canary-bucket".into();
    });
    assert_eq!(count(&pooled(|_| {})), count(&without));
}
