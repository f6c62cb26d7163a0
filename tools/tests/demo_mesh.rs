//! End-to-end: `make demo`'s second part, quick. Two gateway replicas (90 % / 10 % of the
//! orders) in front of a canary that declines more payments: local only, the quiet replica
//! trips later or not at all; pooled through a real Prometheus, both trip within a few seconds
//! of each other. The printed table says what the figures say.

use sticky_canary_tools::demo_mesh::{self, How};

#[test]
fn pooled_brake_trips_both_replicas_together_while_local_only_leaves_the_quiet_one_serving() {
    let o = demo_mesh::run(&demo_mesh::quick_options()).unwrap_or_else(|e| panic!("{e}"));
    let mut text = Vec::new();
    demo_mesh::print(&o, &mut text).unwrap();
    let text = String::from_utf8_lossy(&text);
    eprintln!("{text}\n{o:#?}");

    assert_eq!(o.local.failed + o.pooled.failed, 0);
    let (la, lb) = (&o.local.replicas[0], &o.local.replicas[1]);
    let (pa, pb) = (&o.pooled.replicas[0], &o.pooled.replicas[1]);
    assert_eq!((la.share, lb.share), (90, 10));

    // Local only: A trips on its own counters; B later, or not at all.
    let a = la
        .tripped_after
        .expect("replica A trips on its own counters");
    assert_eq!(la.how, Some(How::Local), "{la:?}");
    if let Some(b) = lb.tripped_after {
        assert!(b > a, "local only: B at {b} s, A at {a} s");
    }
    assert!(la.canary_orders >= 100, "min_samples: {la:?}");

    // Pooled: both trip, within about a scrape + an interval (+ flushes and the poll) of each
    // other, never on their own counters (the local test is off with a pool).
    let spread = o.pooled.spread().expect("both replicas trip when pooled");
    assert!(spread <= 3.0, "spread {spread} s: {pa:?} {pb:?}");
    for r in [pa, pb] {
        assert!(
            matches!(r.how, Some(How::Pooled | How::Adopted)),
            "replica {}: {:?}",
            r.name,
            r.line
        );
    }
    for r in [la, pa, pb] {
        // Its other VM learns the trip on its next tick: no canary after one flush interval.
        let (trip, last) = (r.tripped_after.unwrap(), r.last_canary.unwrap_or(0.0));
        assert!(
            last <= trip + demo_mesh::FLUSH_MS as f64 / 1000.0 + 0.3,
            "replica {}: canary served at {last} s, trip showed at {trip} s",
            r.name
        );
    }
    assert!(
        pb.canary_orders < lb.canary_orders,
        "the pool spares B's canary orders: pooled {} vs local {}",
        pb.canary_orders,
        lb.canary_orders
    );

    // The table says what the figures say.
    for (label, run) in [("local only", &o.local), ("pooled", &o.pooled)] {
        let row = text
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row:\n{text}"));
        for r in &run.replicas {
            let cell = demo_mesh::cell(r, run.cap);
            assert!(row.contains(&cell), "{label}: {cell:?} not in {row:?}");
        }
    }
    let local_a = format!("tripped at {a:.1} s, {} canary orders", la.canary_orders);
    assert!(text.contains(&local_a), "{text}");
    if lb.tripped_after.is_none() {
        let b_cell = format!(
            "not tripped in {:.0} s: {} canary orders and counting",
            o.local.cap, lb.canary_orders
        );
        assert!(text.contains(&b_cell), "{text}");
        assert!(text.contains("never gathers enough evidence"), "{text}");
    }
    assert!(
        text.contains(&format!("both stop within {spread:.1} s of each other")),
        "{text}"
    );
}
