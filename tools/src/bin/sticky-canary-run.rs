//! `make run`: Envoy with the sticky-canary filter, exactly as `envoy/envoy.yaml` says, in front of
//! two sample upstreams started where that file expects them. Prints curl commands that show
//! stickiness, then waits; Ctrl-C (or SIGTERM) stops Envoy and the upstreams.

use std::sync::mpsc;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig};
use sticky_canary_harness::http::{send_once, Request, Upstream};

fn main() {
    let path = envoy::reference_config_path();
    let mut cfg = EnvoyConfig::reference();
    let plan = match Plan::from_json(cfg.plugin_config().as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("envoy/envoy.yaml: the plugin configuration is invalid: {e}");
            std::process::exit(1);
        }
    };
    let upstreams: Vec<Upstream> = cfg
        .cluster_addresses()
        .into_iter()
        .map(|(name, addr)| {
            Upstream::start_on(&name, addr).unwrap_or_else(|e| {
                eprintln!("cannot start sample upstream {name} on {addr}: {e} (is something else using it?)");
                std::process::exit(1);
            })
        })
        .collect();
    let envoy = match Envoy::start_file(&path) {
        Ok(e) => e,
        Err(f) => {
            eprintln!(
                "Envoy did not start (exit {:?}). Its log:\n{}",
                f.exit_code, f.log
            );
            std::process::exit(1);
        }
    };
    let listen = envoy.listener();
    let url = format!("http://{listen}/");

    // Sample sessions, and what the published algorithm says about them.
    let sample: Vec<String> = (1..=400).map(|i| format!("user-{i}")).collect();
    let on = |v: &str| {
        sample
            .iter()
            .find(|k| plan.version_name(plan.bucket(k.as_bytes())) == v)
    };
    let stable_key = on("stable").cloned().unwrap_or_else(|| "alice".into());
    let canary_key = on("canary").cloned().unwrap_or_else(|| "bob".into());
    // Prove it once before telling the user.
    for key in [&stable_key, &canary_key] {
        let r = send_once(
            listen,
            &Request::get("/").header("cookie", &format!("session_id={key}")),
        );
        match r {
            Ok(r) if r.status == 200 => {}
            other => {
                eprintln!(
                    "self-check failed for {key}: {other:?}\nEnvoy log: {}",
                    envoy.log_path().display()
                );
                std::process::exit(1);
            }
        }
    }

    let weights: Vec<String> = plan
        .versions
        .iter()
        .map(|v| format!("{} {}", v.name, v.weight))
        .collect();
    println!(
        "sticky-canary is running: Envoy {url} (admin http://{}), weights {}",
        envoy.admin(),
        weights.join(" / ")
    );
    for u in &upstreams {
        println!("  upstream {:<7} http://{}", u.name(), u.addr());
    }
    println!("  Envoy log: {}", envoy.log_path().display());
    println!();
    println!("# The same session always gets the same version (5 requests, one answer):");
    println!("for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%header{{x-canary-version}}\\n' -b session_id={stable_key} {url}; done");
    println!("# A session the algorithm puts on the canary:");
    println!(
        "curl -s -o /dev/null -w '%header{{x-canary-version}}\\n' -b session_id={canary_key} {url}"
    );
    println!("# No cookie: the x-user-id header is the next source:");
    println!("curl -s -o /dev/null -w '%header{{x-canary-version}}\\n' -H 'x-user-id: {canary_key}' {url}");
    println!("# A client cannot pick its version: the route header is overwritten:");
    println!("curl -s -o /dev/null -w '%header{{x-canary-version}}\\n' -H 'x-canary-version: canary' -b session_id={stable_key} {url}");
    println!("# What the upstream saw (the echo body lists the headers it received):");
    println!("curl -s -b session_id={canary_key} {url}");
    println!();
    println!("Expected: {stable_key} -> stable, {canary_key} -> canary. Ctrl-C stops everything.");

    let (tx, rx) = mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        eprintln!("cannot install the Ctrl-C handler: {e}");
    }
    let _ = rx.recv();
    println!("\nstopping Envoy (pid {}) and the upstreams", envoy.pid());
    envoy.stop();
    drop(upstreams);
}
