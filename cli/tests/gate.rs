//! `sticky-canary gate` against fake sources: in-process runs ([`run`]) and the built binary
//! (exit codes, usage errors, credentials, timeouts, proxies). The fakes are the harness's
//! in-process upstream (`sticky_canary_harness::http::Upstream`).
#![cfg(test)]

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sticky_canary::metrics::names;
use sticky_canary_cli::args::parse_gate;
use sticky_canary_cli::gate::{run, Outcome, Verdict};
use sticky_canary_harness::http::{Handler, Request, Response, Upstream};

mod common;
use common::{approval_answers, gate, percent_decode, sticky_canary, TempFile};

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// What a fake saw of one request: the decoded query (Prometheus) or path, and the
/// `Authorization` header.
#[derive(Clone, Debug)]
struct Seen {
    query: String,
    authorization: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone() // not held: the fake logs every request
}

/// A fake Prometheus under `/prom`: answers the query containing a selector with that
/// selector's vector elements (none for an unknown selector), and records every query.
fn fake_prometheus(answers: Vec<(String, String)>) -> (Upstream, Log) {
    let log: Log = Arc::default();
    let record = log.clone();
    let handler: Handler = Arc::new(move |req: &Request| {
        let Some(q) = req.path.strip_prefix("/prom/api/v1/query?query=") else {
            return Response::new(404).body("no such path");
        };
        let q = percent_decode(q);
        record.lock().unwrap().push(Seen {
            query: q.clone(),
            authorization: req.header_str("authorization").map(str::to_string),
        });
        let series = answers
            .iter()
            .find(|(selector, _)| q.contains(selector.as_str()))
            .map_or("", |(_, r)| r.as_str());
        Response::new(200).body(format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}"#
        ))
    });
    (
        Upstream::start_with("prometheus", None, handler).unwrap(),
        log,
    )
}

/// A fake Envoy admin answering `/stats/prometheus` with `text`, recording every request.
fn fake_admin(text: String) -> (Upstream, Log) {
    let log: Log = Arc::default();
    let record = log.clone();
    let handler: Handler = Arc::new(move |req: &Request| {
        record.lock().unwrap().push(Seen {
            query: format!("{} {}", req.method, req.path),
            authorization: req.header_str("authorization").map(str::to_string),
        });
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/stats/prometheus") => Response::new(200).body(text.clone()),
            _ => Response::new(404),
        }
    });
    (Upstream::start_with("admin", None, handler).unwrap(), log)
}

/// One proxy's scrape: `checkout` responses (3 ‰ errors) and payments, approvals per version.
fn scrape(versions: &[(&str, f64, f64)]) -> String {
    let mut out = String::from("# TYPE canary_responses_total counter\n");
    for (v, payments, approved) in versions {
        let l = format!("service=\"checkout\",version=\"{v}\"");
        let ok = (payments * 0.997).round();
        out.push_str(&format!(
            "{r}{{{l},code_class=\"2xx\"}} {ok}\n{r}{{{l},code_class=\"5xx\"}} {}\n\
             {p}{{{l}}} {payments}\n{a}{{{l}}} {approved}\n",
            payments - ok,
            r = names::RESPONSES,
            p = names::business_total("payments"),
            a = names::business_total("auth_approved"),
        ));
    }
    out.push_str("envoy_server_live 1\n");
    out
}

const APPROVAL: &str = "--ratio approval=auth_approved/payments:0.3";

/// Nothing listens on a port just released.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- in-process runs ----------------------------------------------------------------------

#[test]
fn run_against_fake_prometheus() {
    let (prom, seen_queries) = fake_prometheus(approval_answers(1939.0));
    let cli = format!(
        "--service checkout --prometheus http://{}/prom --window 30m {APPROVAL}",
        prom.addr()
    );
    let config = parse_gate(args(&cli)).unwrap();
    let r = run(&config).unwrap();
    assert_eq!(r.verdict, Verdict::Promote, "{}", r.table());
    assert_eq!(r.window.as_deref(), Some("30m"));
    assert_eq!(
        r.sources,
        [format!("prometheus http://{}/prom", prom.addr())]
    );
    let seen: Vec<String> = seen(&seen_queries).into_iter().map(|s| s.query).collect();
    // The four keys of the checks, and the rollback guard's optional canary_writes_total.
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen
        .iter()
        .all(|q| q.contains("increase(") && q.ends_with("[30m]))")));
    assert!(seen.contains(
        &"sum by (version) (increase(canary_business_payments_total{service=\"checkout\"}[30m]))"
            .to_string()
    ));
    assert!(seen.contains(
        &"sum by (version) (increase(canary_writes_total{service=\"checkout\"}[30m]))".to_string()
    ));
    // A metric Prometheus does not know: exit-1 error naming it.
    let cli = format!(
        "--service checkout --prometheus http://{}/prom --mean aov=order_value/orders:1",
        prom.addr()
    );
    let e = run(&parse_gate(args(&cli)).unwrap()).unwrap_err();
    assert!(e.contains("canary_business_order_value_total"), "{e}");
    // A wrong path prefix: the HTTP status is reported, with the URL.
    let cli = format!(
        "--service checkout --prometheus http://{}/nope",
        prom.addr()
    );
    let e = run(&parse_gate(args(&cli)).unwrap()).unwrap_err();
    assert!(e.contains("HTTP 404"), "{e}");
    assert!(
        e.contains(&format!("http://{}/nope/api/v1/query?query=", prom.addr())),
        "{e}"
    );
}

#[test]
fn run_against_fake_envoys_and_unreachable_source() {
    const PROXY_A: &str = include_str!("data/proxy-a.prom");
    const PROXY_B: &str = include_str!("data/proxy-b.prom");
    let (a, _) = fake_admin(PROXY_A.into());
    let (b, _) = fake_admin(PROXY_B.into());
    let cli = format!(
        "--service checkout --envoy http://{} --envoy http://{} --min-samples 50 \
         --ratio r=orders/orders:1",
        a.addr(),
        b.addr()
    );
    // --fixed: 1 % vs 5.7 %, 106 responses: significant and beyond one point.
    let r = run(&parse_gate(args(&format!("{cli} --fixed"))).unwrap()).unwrap();
    let err = &r.rows[0];
    assert_eq!(err.check, "error_ratio");
    assert_eq!((err.baseline.n, err.candidate.n), (1010.0, 106.0));
    assert_eq!((err.baseline.x, err.candidate.x), (10.0, 6.0));
    assert_eq!(err.outcome, Outcome::Rollback, "{}", r.table());
    assert_eq!(r.exit_code(), 2);
    assert_eq!(r.sources.len(), 2);
    // The sequential test (the default) on the same counts: 3.7 points beyond the limit, but
    // on 106 responses, less one response per side, Λ is 1.8, short of 1/α = 20 (ln Λ 0.61 by
    // Python): wait for more.
    let r = run(&parse_gate(args(&cli)).unwrap()).unwrap();
    let err = &r.rows[0];
    assert_eq!((err.baseline.n, err.candidate.n), (1010.0, 106.0));
    assert_eq!(err.outcome, Outcome::Inconclusive, "{}", r.table());
    assert!((err.log_lr.unwrap() - 0.610_284_554_143_241_6).abs() < 1e-6);
    assert_eq!((r.verdict, r.exit_code()), (Verdict::Wait, 3));

    let port = closed_port();
    let cli = format!("--service checkout --envoy http://127.0.0.1:{port}");
    let e = run(&parse_gate(args(&cli)).unwrap()).unwrap_err();
    assert!(
        e.contains(&format!("http://127.0.0.1:{port}/stats/prometheus")),
        "{e}"
    );
    assert!(e.contains("unreachable"), "{e}");
}

// ---- the binary ---------------------------------------------------------------------------

#[test]
fn binary_exit_codes_promote_rollback_wait() {
    let promote = fake_admin(scrape(&[
        ("stable", 2000.0, 1940.0),
        ("canary", 2000.0, 1939.0),
    ]));
    let rollback = fake_admin(scrape(&[
        ("stable", 2000.0, 1940.0),
        ("canary", 2000.0, 1880.0),
    ]));
    let wait = fake_admin(scrape(&[
        ("stable", 2000.0, 1940.0),
        ("canary", 20.0, 19.0),
    ]));
    let line = |u: &Upstream| format!("--service checkout --envoy http://{} {APPROVAL}", u.addr());

    let r = gate(&line(&promote.0));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("verdict: PROMOTE (exit 0)"), "{r:?}");
    assert!(r
        .stdout
        .contains(&format!("from envoy http://{}", promote.0.addr())));
    assert_eq!(r.stderr, "");

    let r = gate(&line(&rollback.0));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.contains("verdict: ROLLBACK (exit 2)"), "{r:?}");
    assert!(r.stdout.contains("canary approval: -3.00 points"), "{r:?}");

    let r = gate(&line(&wait.0));
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r
        .stdout
        .contains("verdict: WAIT (exit 3), not enough data yet"));
    let r = gate(&format!("{} --wait-exit 0", line(&wait.0)));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("verdict: WAIT (exit 0)"), "{r:?}");

    // --json: one document, the same exit code.
    let r = gate(&format!("{} --json", line(&rollback.0)));
    assert_eq!(r.code, 2, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (j["verdict"].as_str(), j["exit_code"].as_i64()),
        (Some("ROLLBACK"), Some(2))
    );
    assert_eq!(j["checks"][1]["outcome"], "rollback");

    // Both proxies summed: each side's counts double.
    let r = gate(&format!(
        "{} --envoy http://{} --json",
        line(&promote.0),
        promote.0.addr()
    ));
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["checks"][1]["baseline"]["n"], 4000, "{}", r.stdout);
}

#[test]
fn binary_fixed_keeps_the_one_shot_test_and_its_exit_codes() {
    // The same three sources as above, judged both ways: the same verdicts on these counts,
    // each report naming its test.
    let source =
        |c: (f64, f64)| fake_admin(scrape(&[("stable", 2000.0, 1940.0), ("canary", c.0, c.1)]));
    for (canary, code) in [
        ((2000.0, 1939.0), 0),
        ((2000.0, 1880.0), 2),
        ((20.0, 19.0), 3),
    ] {
        let (admin, _) = source(canary);
        let line = format!(
            "--service checkout --envoy http://{} {APPROVAL}",
            admin.addr()
        );
        let r = gate(&format!("{line} --fixed --json"));
        assert_eq!(r.code, code, "{r:?}");
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(j["mode"], "fixed");
        assert_eq!(j["exit_code"], code);
        if code != 3 {
            assert_eq!(j["checks"][1]["test"], "one-sided (lower is worse)");
            assert!(j["checks"][1]["z"].is_f64(), "{}", r.stdout);
        }
        let r = gate(&format!("{line} --json"));
        assert_eq!(r.code, code, "{r:?}");
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(j["mode"], "sequential");
        if code != 3 {
            assert_eq!(j["checks"][1]["test"], "mSPRT one-sided (lower is worse)");
            assert!(j["checks"][1]["log_bound"].is_f64(), "{}", r.stdout);
        }
    }
    let (admin, _) = source((2000.0, 1880.0));
    let line = format!(
        "--service checkout --envoy http://{} {APPROVAL}",
        admin.addr()
    );
    let r = gate(&format!("{line} --fixed"));
    assert!(
        r.stdout.contains(
            "canary approval: -3.00 points, beyond the limit -0.3 points, significant (p"
        ),
        "{r:?}"
    );
    assert!(
        !r.stdout.contains("mSPRT") && !r.stdout.contains("Λ"),
        "{r:?}"
    );
    let r = gate(&line);
    assert!(r.stdout.contains("test: mSPRT"), "{r:?}");
    assert!(
        r.stdout.contains("always-valid evidence (Λ 7301 ≥ 1/α 20)"),
        "{r:?}"
    );
    // τ refused when not a positive number, or with --fixed: exit 1.
    for bad in [
        "--tau-points 0",
        "--tau-percent -1",
        "--tau-points inf",
        "--fixed --tau-points 3",
    ] {
        let r = gate(&format!("{line} {bad}"));
        assert_eq!(r.code, 1, "{bad}: {r:?}");
        assert!(r.stderr.contains("--tau-"), "{bad}: {r:?}");
        assert_eq!(r.stdout, "");
    }
    let r = gate(&format!("{line} --tau-points 8 --tau-percent 20"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.contains("tau 8 points, 20 %"), "{r:?}");
}

/// `scrape` with `canary_writes_total` series: (version, method, value).
fn scrape_with_writes(versions: &[(&str, f64, f64)], writes: &[(&str, &str, f64)]) -> String {
    let mut out = scrape(versions);
    for (v, method, n) in writes {
        out.push_str(&format!(
            "canary_writes_total{{service=\"checkout\",version=\"{v}\",method=\"{method}\"}} {n}\n"
        ));
    }
    out
}

#[test]
fn binary_rollback_guard_from_envoy_scrapes() {
    let versions = [("stable", 2000.0, 1940.0), ("canary", 2000.0, 1880.0)];
    // The canary wrote: a gradual rollback, exit 2 as any rollback.
    let (admin, _) = fake_admin(scrape_with_writes(
        &versions,
        &[
            ("stable", "POST", 900.0),
            ("canary", "POST", 40.0),
            ("canary", "PATCH", 2.0),
        ],
    ));
    let line = format!(
        "--service checkout --envoy http://{} {APPROVAL}",
        admin.addr()
    );
    let r = gate(&line);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.contains("rollback guard (canary_writes_total):"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains(
            "  canary: gradual rollback: the canary served 42 writes since the counters started"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("42 requests (PATCH 2, POST 40)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.lines().all(|l| l.chars().count() <= 100),
        "{}",
        r.stdout
    );
    let r = gate(&format!("{line} --json"));
    assert_eq!(r.code, 2, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["rollback"]["kind"], "gradual");
    assert_eq!(j["rollback"]["writes"], 42);
    assert_eq!(j["rollback"]["steps"].as_array().unwrap().len(), 4);
    // The same under --fixed: the guard does not depend on the test.
    let r = gate(&format!("{line} --fixed --json"));
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (r.code, j["rollback"]["kind"].as_str()),
        (2, Some("gradual"))
    );

    // No writes: zero-kill.
    let (admin, _) = fake_admin(scrape_with_writes(
        &versions,
        &[("stable", "POST", 900.0), ("canary", "POST", 0.0)],
    ));
    let r = gate(&format!(
        "--service checkout --envoy http://{} {APPROVAL}",
        admin.addr()
    ));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.contains(
            "canary: zero-kill rollback: route every session to stable now (the canary changed no"
        ),
        "{}",
        r.stdout
    );

    // A filter without canary_writes_total: not an error, "unknown", still exit 2.
    let (admin, _) = fake_admin(scrape(&versions));
    let r = gate(&format!(
        "--service checkout --envoy http://{} {APPROVAL} --json",
        admin.addr()
    ));
    assert_eq!((r.code, r.stderr.as_str()), (2, ""), "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["rollback"]["kind"], "unknown");
    assert_eq!(j["rollback"]["writes"], serde_json::Value::Null);
    // Not a rollback: no guard at all.
    let (admin, _) = fake_admin(scrape_with_writes(
        &[("stable", 2000.0, 1940.0), ("canary", 2000.0, 1939.0)],
        &[("canary", "POST", 7.0)],
    ));
    let r = gate(&format!(
        "--service checkout --envoy http://{} {APPROVAL} --json",
        admin.addr()
    ));
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((r.code, &j["rollback"]), (0, &serde_json::Value::Null));
}

#[test]
fn rollback_guard_from_prometheus() {
    let writes = |canary: &str| {
        let mut answers = approval_answers(1880.0);
        answers.push((
            "canary_writes_total{service=\"checkout\"}".into(),
            format!(
                r#"{{"metric":{{"version":"stable"}},"value":[1,"300"]}},
                   {{"metric":{{"version":"canary"}},"value":[1,"{canary}"]}}"#
            ),
        ));
        answers
    };
    let judge = |answers: Vec<(String, String)>| {
        let (prom, _) = fake_prometheus(answers);
        let cli = format!(
            "--service checkout --prometheus http://{}/prom --window 30m {APPROVAL}",
            prom.addr()
        );
        run(&parse_gate(args(&cli)).unwrap()).unwrap()
    };
    let r = judge(writes("12.4"));
    assert_eq!(r.verdict, Verdict::Rollback, "{}", r.table());
    assert_eq!(r.rollbacks[0].writes, Some(12.4));
    let text = r.table();
    assert!(
        text.contains("gradual rollback: the canary served 12.4 writes in the last 30m"),
        "{text}"
    );
    let r = judge(writes("0"));
    assert_eq!(r.rollbacks[0].writes, Some(0.0));
    let j = r.to_json();
    assert_eq!(j["rollback"]["kind"], "zero-kill");
    // With a window, writes before it are not counted: the first step says so.
    assert!(
        j["rollback"]["steps"][0]
            .as_str()
            .unwrap()
            .contains("served only within the last 30m"),
        "{j}"
    );
    // Prometheus has no canary_writes_total (a filter that counts no writes): an empty
    // answer, not an error.
    let r = judge(approval_answers(1880.0));
    assert_eq!(r.verdict, Verdict::Rollback);
    assert_eq!(r.rollbacks[0].writes, None);
    assert!(r.table().contains(
        "canary: unknown: the filter publishes no canary_writes_total (a filter that counts no writes)"
    ));
}

#[test]
fn binary_errors_exit_1_never_2() {
    let (admin, _) = fake_admin(scrape(&[
        ("stable", 2000.0, 1940.0),
        ("canary", 2000.0, 1939.0),
    ]));
    let env = format!("--service checkout --envoy http://{}", admin.addr());
    for (line, says) in [
        // Usage errors: clap's own (which would exit 2) and the gate's checks.
        ("--service checkout".to_string(), "a source is required"),
        (
            format!("{env} --service other"),
            "cannot be used multiple times",
        ),
        (
            format!("{env} --alpha 0.1 --alpha 0.2"),
            "cannot be used multiple times",
        ),
        (
            format!("{env} --servce x"),
            "a similar argument exists: '--service'",
        ),
        (format!("{env} --canary"), "a value is required"),
        (format!("{env} --alpha 2"), "--alpha"),
        (format!("{env} --window 5m"), "--window needs --prometheus"),
        ("--envoy http://127.0.0.1:1".to_string(), "--service"),
        // A metric missing from the data.
        (
            format!("{env} --mean aov=order_value/orders:1"),
            "canary_business_order_value_total",
        ),
        // An unreachable source.
        (
            format!(
                "--service checkout --envoy http://127.0.0.1:{}",
                closed_port()
            ),
            "unreachable",
        ),
    ] {
        let r = gate(&line);
        assert_eq!(r.code, 1, "{line}: {r:?}");
        assert!(
            r.stderr.contains(says),
            "{line}: expected {says:?} in {}",
            r.stderr
        );
        assert_eq!(r.stdout, "", "{line}");
    }
    // Repeatable flags stay repeatable.
    let r = gate(&format!(
        "{env} --envoy http://{} --canary canary --ratio a=auth_approved/payments:1 \
         --ratio b=auth_approved/payments:2 --mean m=payments/payments:5",
        admin.addr()
    ));
    // (payments has no squares: an exit-1 error about the mean, not a usage error)
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("`sum` rule"), "{r:?}");

    // An unknown subcommand, no subcommand: usage errors too.
    for argv in [&["gat"][..], &[]] {
        let r = sticky_canary(argv, &[]);
        assert_eq!(r.code, 1, "{argv:?}: {r:?}");
    }
    // Help and version exit 0 on stdout.
    for argv in [
        &["gate", "--help"][..],
        &["gate", "-h"],
        &["--version"],
        &["help", "gate"],
    ] {
        let r = sticky_canary(argv, &[]);
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{argv:?}");
        assert!(!r.stdout.is_empty(), "{argv:?}");
    }
    let r = sticky_canary(&["gate", "--help"], &[]);
    assert!(r.stdout.contains("Exit status:") && r.stdout.contains("--prometheus-token-file"));
}

#[test]
fn bearer_token_from_file_is_sent_and_never_printed() {
    let token = "s3cr3t.t0ken-value";
    let file = TempFile::new("token", format!("\n  {token}\n"));
    let (prom, log) = fake_prometheus(approval_answers(1939.0));
    let r = gate(&format!(
        "--service checkout --prometheus http://{}/prom --prometheus-token-file {} {APPROVAL} \
         --json",
        prom.addr(),
        file.0.display()
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let seen = seen(&log);
    assert_eq!(seen.len(), 5, "the checks' 4 keys and canary_writes_total");
    for s in &seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some(&*format!("Bearer {token}"))
        );
    }
    assert!(!r.stdout.contains(token) && !r.stderr.contains(token));

    // A Prometheus that refuses: exit 1, naming the URL, not the token.
    let handler: Handler = Arc::new(|_: &Request| {
        Response::new(401).body(r#"{"status":"error","error":"unauthorized"}"#)
    });
    let refusing = Upstream::start_with("prometheus", None, handler).unwrap();
    let r = gate(&format!(
        "--service checkout --prometheus http://{}/p --prometheus-token-file {}",
        refusing.addr(),
        file.0.display()
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("http://{}/p/api/v1/query?query=", refusing.addr())),
        "{r:?}"
    );
    assert!(r.stderr.contains("HTTP 401") && r.stderr.contains("unauthorized"));
    assert!(!r.stderr.contains(token));

    // Prometheus' own `status: error` with a 200: exit 1, naming the URL.
    let handler: Handler = Arc::new(|_: &Request| {
        Response::new(200).body(r#"{"status":"error","errorType":"bad_data","error":"no"}"#)
    });
    let erring = Upstream::start_with("prometheus", None, handler).unwrap();
    let r = gate(&format!(
        "--service checkout --prometheus http://{}",
        erring.addr()
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r
        .stderr
        .contains(&format!("Prometheus http://{}", erring.addr())));
    assert!(r.stderr.contains("status \"error\": bad_data: no"), "{r:?}");

    // A missing or empty token file is an error before any request.
    let empty = TempFile::new("empty", " \n");
    let r = gate(&format!(
        "--service checkout --prometheus http://{}/prom --prometheus-token-file {}",
        prom.addr(),
        empty.0.display()
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is empty"), "{r:?}");
    assert_eq!(self::seen(&log).len(), 5, "no request without a token");
}

#[test]
fn basic_auth_from_the_url_is_sent_and_never_printed() {
    let (prom, log) = fake_prometheus(approval_answers(1939.0));
    let r = gate(&format!(
        "--service checkout --prometheus http://gate:p%40ss@{}/prom {APPROVAL}",
        prom.addr()
    ));
    assert_eq!(r.code, 0, "{r:?}");
    // base64("gate:p@ss")
    for s in seen(&log) {
        assert_eq!(s.authorization.as_deref(), Some("Basic Z2F0ZTpwQHNz"));
    }
    assert!(
        r.stdout
            .contains(&format!("from prometheus http://{}/prom", prom.addr())),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("p%40ss") && !r.stdout.contains("p@ss"));
    // Envoy admin endpoints behind an authenticating proxy take credentials too.
    let (admin, log) = fake_admin(scrape(&[
        ("stable", 2000.0, 1940.0),
        ("canary", 2000.0, 1939.0),
    ]));
    let r = gate(&format!(
        "--service checkout --envoy http://ops:pw@{} {APPROVAL}",
        admin.addr()
    ));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        seen(&log)[0].authorization.as_deref(),
        Some("Basic b3BzOnB3")
    );
}

#[test]
fn a_source_that_never_answers_times_out() {
    // Connections complete in the kernel's backlog; nothing ever reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let r = gate(&format!(
        "--service checkout --envoy http://{addr} --timeout 300ms"
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("http://{addr}/stats/prometheus: timed out: no complete answer within 300ms (--timeout)")),
        "{r:?}"
    );
    assert!(r.took < Duration::from_secs(5), "took {:?}", r.took);
    let r = gate(&format!(
        "--service checkout --prometheus http://{addr} --timeout 200ms"
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("timed out"), "{r:?}");
    drop(silent);
}

#[test]
fn a_source_that_never_accepts_hits_the_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so connecting
    // hangs (loopback only, bounded: at most 1 000 connections of 100 ms each).
    let full = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = full.local_addr().unwrap();
    let mut queued = Vec::new();
    while let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
        queued.push(c);
        assert!(queued.len() < 1000, "the accept queue never filled");
    }
    let r = gate(&format!(
        "--service checkout --envoy http://{addr} --connect-timeout 300ms --timeout 5s"
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("timed out: no connection within 300ms (--connect-timeout)"),
        "{r:?}"
    );
    assert!(r.took < Duration::from_secs(4), "took {:?}", r.took);
}

#[test]
fn https_urls_are_spoken_to_in_tls() {
    // A plain-HTTP server behind an https:// URL: the TLS handshake fails, exit 1, URL named.
    let (admin, _) = fake_admin(String::new());
    let r = gate(&format!(
        "--service checkout --envoy https://{} --timeout 2s",
        admin.addr()
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("https://{}/stats/prometheus:", admin.addr())),
        "{r:?}"
    );
}

#[test]
fn proxy_variables_are_honoured() {
    // The fake proxy accepts CONNECT and then answers the tunnelled request itself, as the
    // Envoy admin of a host only it can reach.
    let scrape_text = scrape(&[("stable", 2000.0, 1940.0), ("canary", 2000.0, 1939.0)]);
    let log: Log = Arc::default();
    let via_proxy: Handler = {
        let log = log.clone();
        Arc::new(move |req: &Request| {
            log.lock().unwrap().push(Seen {
                query: format!(
                    "{} {} host={}",
                    req.method,
                    req.path,
                    req.header_str("host").unwrap_or("")
                ),
                authorization: None,
            });
            match req.method.as_str() {
                "CONNECT" => Response::new(200),
                _ if req.path == "/stats/prometheus" => {
                    Response::new(200).body(scrape_text.clone())
                }
                _ => Response::new(404),
            }
        })
    };
    let proxy = Upstream::start_with("proxy", None, via_proxy).unwrap();
    let proxy_url = format!("http://{}", proxy.addr());
    for var in ["HTTP_PROXY", "https_proxy", "ALL_PROXY"] {
        log.lock().unwrap().clear();
        let r = sticky_canary(
            &[
                "gate",
                "--service",
                "checkout",
                "--envoy",
                "http://envoy.invalid:9901",
                "--ratio",
                "approval=auth_approved/payments:0.3",
            ],
            &[(var, &proxy_url)],
        );
        assert_eq!(r.code, 0, "{var}: {r:?}");
        let seen: Vec<String> = seen(&log).into_iter().map(|s| s.query).collect();
        assert_eq!(
            seen,
            [
                "CONNECT envoy.invalid:9901 host=envoy.invalid:9901",
                "GET /stats/prometheus host=envoy.invalid:9901"
            ],
            "{var}"
        );
    }
    // NO_PROXY: straight to the source, the proxy sees nothing.
    log.lock().unwrap().clear();
    let (admin, admin_log) = fake_admin(scrape(&[
        ("stable", 2000.0, 1940.0),
        ("canary", 2000.0, 1939.0),
    ]));
    let envoy = format!("http://{}", admin.addr());
    let r = sticky_canary(
        &[
            "gate",
            "--service",
            "checkout",
            "--envoy",
            &envoy,
            "--ratio",
            "a=auth_approved/payments:1",
        ],
        &[
            ("HTTP_PROXY", &proxy_url),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(seen(&log).is_empty());
    assert_eq!(seen(&admin_log).len(), 1);
}
