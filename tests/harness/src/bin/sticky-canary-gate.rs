//! `sticky-canary-gate`: PROMOTE (exit 0), ROLLBACK (2) or WAIT (3) for a sticky-canary rollout,
//! from Envoy admin endpoints or Prometheus. Usage errors, unreachable sources and missing
//! metrics exit 1. The logic lives in `sticky_canary_harness::gate`; see `--help`.

use sticky_canary_harness::gate::{parse_args, run, wants_help, HELP};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if wants_help(&args) {
        print!("{HELP}");
        return;
    }
    let config = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sticky-canary-gate: {e}\n(see sticky-canary-gate --help)");
            std::process::exit(1);
        }
    };
    let report = match run(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sticky-canary-gate: {e}");
            std::process::exit(1);
        }
    };
    if config.json {
        match serde_json::to_string_pretty(&report.to_json()) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("sticky-canary-gate: cannot write JSON: {e}");
                std::process::exit(1);
            }
        }
    } else {
        print!("{}", report.table());
    }
    std::process::exit(report.exit_code());
}
