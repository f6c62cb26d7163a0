//! `make demo`: a canary that answers 200 with normal latency but overcharges tax, caught by
//! per-version business counters, while every session stays on one version.

use sticky_canary_tools::demo;

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
}
