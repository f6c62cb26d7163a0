//! End-to-end: a shortened `make demo` run. The canary answers 200 with normal latency but
//! overcharges tax; the gate must roll it back for the money metric, with errors and latency
//! healthy, and no session may flap between versions. After the brake's trip, the flows in
//! progress finish on the canary (reason `flow`) until their cookies expire, while the rest of the
//! canary's cohort is on stable at once.

use sticky_canary_cli::gate::{Outcome, Verdict};
use sticky_canary_tools::demo;

#[test]
fn shortened_demo_rolls_back_on_money_while_errors_and_latency_stay_healthy() {
    let o = demo::run(&demo::quick_options()).unwrap_or_else(|e| panic!("{e}"));
    let mut text = Vec::new();
    demo::print(&o, &mut text).unwrap();
    let text = String::from_utf8_lossy(&text);
    eprintln!("{text}");

    // Stickiness: nobody saw two versions within a step; between steps only stable → canary.
    assert_eq!(o.flapped_within_step, 0);
    assert_eq!(o.moved_canary_to_stable, 0);
    assert!(
        o.moved_stable_to_canary > 0,
        "the ramp moved sessions to the canary"
    );
    assert_eq!(o.failed_requests, 0);

    // The brake tripped in Envoy on tax per order, and no session that started once every
    // worker knew of it reached the canary.
    let brake = o.brake.as_ref().expect("the brake tripped");
    assert!(
        brake
            .line
            .as_deref()
            .is_some_and(|l| l.contains("check tax_per_order")),
        "{brake:?}"
    );
    assert!(
        brake.canary_orders >= 100.0 && brake.seconds > 0.0,
        "{brake:?}"
    );
    assert_eq!(brake.sessions_after_on_canary, 0, "{brake:?}");
    assert!(text.contains("Brake (the plugin's guard"), "{text}");

    // Flows (session.hold.flows, guard.flows finish): the trip's line counts the flows draining;
    // flows in progress finished on the canary, and none after Envoy's draining gauge fell to 0
    // (their cookies had expired); the cohort's sessions without a flow were on stable at once
    // (reason hash with no bucket header; pinned merchants reason guard); no cookie was refused as
    // not ours.
    assert!(
        brake.line.as_deref().is_some_and(|l| l
            .contains("flow(s) draining on canary in this Envoy finish there (guard.flows finish")),
        "{brake:?}"
    );
    let f = o.flows.as_ref().expect("the flows after the trip");
    assert!(f.in_progress > 0 && f.draining_at_trip > 0.0, "{f:?}");
    assert!(
        f.finished > 0 && f.finished_requests >= f.finished && f.finished <= f.in_progress,
        "{f:?}"
    );
    let (last, drained) = (f.last_flow_s.unwrap(), f.drained_s.expect("drained"));
    assert!(last < drained + 0.5, "{f:?}");
    assert!(f.moved > 0 && f.moved_on_canary == 0, "{f:?}");
    assert!(
        f.moved_reasons
            .iter()
            .all(|(r, _)| r == "hash" || r == "guard"),
        "{f:?}"
    );
    assert_eq!(f.cookies[1], 0.0, "no invalid flow cookie: {f:?}");
    assert!(text.contains("flows finished on the canary"), "{text}");

    // The verdict is a rollback, and it is the money that triggers it.
    assert_eq!(o.gate.verdict, Verdict::Rollback);
    let row = |check: &str| {
        o.gate
            .rows
            .iter()
            .find(|r| r.check == check)
            .unwrap_or_else(|| panic!("no {check} row"))
    };
    assert_eq!(row("tax_per_order").outcome, Outcome::Rollback);
    assert!(
        row("tax_per_order").delta.unwrap() > 3.0,
        "the canary overcharges tax by a few percent"
    );
    assert_eq!(
        row("error_ratio").outcome,
        Outcome::Pass,
        "5xx stay healthy"
    );
    assert_ne!(row("approval").outcome, Outcome::Rollback);
    assert_ne!(
        row("aov").outcome,
        Outcome::Rollback,
        "the order value barely moves"
    );

    // Latency stays healthy: both p99 within a few milliseconds of each other.
    let p99 = |v: &str| {
        o.figures
            .iter()
            .find(|(n, _)| n == v)
            .and_then(|(_, f)| f.p99_ms)
            .unwrap()
    };
    assert!(
        (p99("canary") - p99("stable")).abs() < 25.0,
        "p99 canary {} vs stable {}",
        p99("canary"),
        p99("stable")
    );
    assert!(text.contains("verdict: ROLLBACK"), "{text}");

    // The manual shows what the demo prints: every line of the demo chapter's output block has
    // the label of a line this run printed (what comes before its first figure), so a changed report fails here.
    let chapter = std::fs::read_to_string(
        sticky_canary_harness::envoy::workspace_root().join("docs/src/getting-started/demo.md"),
    )
    .unwrap();
    let shown = chapter
        .split("\n```\nPer version, from Envoy's /stats/prometheus:")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the demo chapter shows the demo's output");
    let printed: std::collections::BTreeSet<String> = text.lines().map(shape).collect();
    let stale: Vec<&str> = shown
        .lines()
        // The chart's path is printed by the binary once it has written the chart.
        .filter(|l| !l.starts_with("Chart: ") && !printed.contains(&shape(l)))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/src/getting-started/demo.md shows lines the demo no longer prints:\n{}",
        stale.join("\n")
    );
}

/// What a line says before its first figure (whitespace collapsed): the label, which a changed
/// report changes, and not the run's numbers or outcomes.
fn shape(line: &str) -> String {
    let label = line
        .split(|c: char| c.is_ascii_digit())
        .next()
        .unwrap_or("");
    label.split_whitespace().collect::<Vec<_>>().join(" ")
}
