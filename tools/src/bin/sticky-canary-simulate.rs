//! `make simulate`: false alarms and time to evidence of the canary's rules, in pure simulation
//! (no Envoy): the peeking scenario, the A/A target (1 000 runs × 1 000 looks) at the
//! A/A pair and at the null's boundary, the brake's `min_samples`, and the evidence in the seed
//! scenarios. See `tools/src/simulate.rs`. Then the mesh (`tools/src/mesh.rs`): a brake that
//! judges the pooled counters of a fleet of Envoys against the local-only one, false trips
//! and time to every Envoy tripped (`--min-samples` sets its minimum too; 100 unless given).
//!
//! Usage: `sticky-canary-simulate [--quick] [--seed N] [--min-samples N] [--json PATH]`.
//! Progress goes to stderr, the tables to stdout. Same seed, same numbers.

use serde::Serialize;
use sticky_canary_tools::{mesh, simulate};

const USAGE: &str =
    "usage: sticky-canary-simulate [--quick] [--seed N] [--min-samples N] [--json PATH]";

/// What `--json` writes: the report of `simulate`, and the mesh's under `mesh`.
#[derive(Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    report: &'a simulate::Report,
    mesh: &'a mesh::Report,
}

struct Args {
    quick: bool,
    seed: u64,
    min_samples: Option<u32>,
    json: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        seed: 14,
        min_samples: None,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value; {USAGE}"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--seed" => {
                args.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?;
            }
            "--min-samples" => {
                args.min_samples = Some(
                    value("--min-samples")?
                        .parse()
                        .map_err(|e| format!("--min-samples: {e}"))?,
                );
            }
            "--json" => args.json = Some(value("--json")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sticky-canary-simulate: {e}");
            std::process::exit(2);
        }
    };
    let (sizes, mesh_sizes) = if args.quick {
        (simulate::Sizes::QUICK, mesh::Sizes::QUICK)
    } else {
        (simulate::Sizes::FULL, mesh::Sizes::FULL)
    };
    let started = std::time::Instant::now();
    let mut progress = |what: &str, done: usize, all: usize| {
        eprintln!(
            "[{:6.1} s] {what}: {done}/{all} runs",
            started.elapsed().as_secs_f64()
        );
    };
    let report = simulate::run(args.seed, sizes, args.min_samples, &mut progress);
    print!("{}", simulate::format_report(&report));
    let mesh = mesh::run(args.seed, mesh_sizes, args.min_samples, &mut progress);
    print!("{}", mesh::format_report(&mesh));
    if let Some(path) = args.json {
        let json = Json {
            report: &report,
            mesh: &mesh,
        };
        let written = serde_json::to_string_pretty(&json)
            .map_err(|e| e.to_string())
            .and_then(|s| std::fs::write(&path, s + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("sticky-canary-simulate: cannot write {path}: {e}");
            std::process::exit(1);
        }
        eprintln!("wrote {path}");
    }
}
