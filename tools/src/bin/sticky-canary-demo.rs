//! `make demo`: a canary that answers 200 with normal latency but overcharges tax, caught by
//! per-version business counters, while every session stays on one version; then the brake
//! across two gateway replicas, local only and pooled through Prometheus (`guard.pool`).

use sticky_canary_tools::{demo, demo_mesh};

fn main() {
    let opts = demo::Options {
        chart: Some(demo::default_chart_path()),
        ..demo::Options::default()
    };
    println!(
        "sticky-canary demo: Envoy (envoy/ramp/envoy.yaml) in front of two shops.\n\
         - stable computes sales tax once per order;\n\
         - canary rounds tax up per unit: HTTP 200, same latency, a few cents more per cart.\n\
         {} returning sessions (cart -> checkout -> pay, cookie session_id) per ramp step {:?} %;\n\
         each step is a route change (a bucket-regex route file moved in, file-based RDS),\n\
         the plugin config stays canary 0 / stable 100 with the bucket header on;\n\
         test merchants pinned to the canary, a few QA requests with the override token.\n",
        opts.sessions, opts.steps
    );
    match demo::run(&opts) {
        Ok(outcome) => {
            let mut out = std::io::stdout();
            if let Err(e) = demo::print(&outcome, &mut out) {
                eprintln!("cannot print: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            std::process::exit(1);
        }
    }

    let mesh = demo_mesh::Options::default();
    println!(
        "\n\nOne brake for the whole mesh (guard.pool)\n\
         =========================================\n\
         Two gateway replicas (envoy/envoy.yaml, one worker each) in front of two payment shops;\n\
         the balancer sends {} % of the orders to replica A, {} % to B. The canary ({} % of\n\
         sessions) declines more payment authorizations, with HTTP 200 all the same.\n\
         The same traffic ({:.0} orders/s) runs twice, at most {:.0} s each: the brake on each\n\
         replica's own counters, then pooled through a Prometheus scraping both every second.",
        mesh.share_a,
        100 - mesh.share_a.min(100),
        mesh.canary_percent,
        mesh.orders_per_second,
        mesh.cap.as_secs_f64()
    );
    match demo_mesh::run(&mesh) {
        Ok(outcome) => {
            if let Err(e) = demo_mesh::print(&outcome, &mut std::io::stdout()) {
                eprintln!("cannot print: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("demo (two replicas) failed: {e}");
            std::process::exit(1);
        }
    }
}
