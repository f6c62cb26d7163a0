//! `make bench` (no argument), `make soak` (`soak`), `make bench-services` (`services`) and `make bench-scale` (`scale`): what sticky-canary costs per request in a
//! real Envoy, next to bare Envoy, the V8 floor and a Lua filter. See `tools/src/bench/mod.rs` for
//! the method and the knobs (BENCH_ROUNDS, BENCH_SECONDS, …); `config VARIANT MODE` prints the
//! exact Envoy config a variant runs with. A benchmark: it never fails on speed; it exits 1 only
//! when it cannot run.

use sticky_canary_tools::bench;

fn main() {
    let stop = bench::interrupt_flag();
    let arg = std::env::args().nth(1);
    let result = match arg.as_deref() {
        None | Some("bench") => bench::Options::from_env()
            .and_then(|opts| bench::run(opts, &stop))
            .and_then(bench::finish)
            .map(|_| ()),
        Some("soak") => bench::soak(&stop).map(|_| ()),
        Some("services") => bench::services::services(&stop).map(|_| ()),
        // `make bench-scale`: the cost curves, start-up, reconfiguration and memory.
        Some("scale") => bench::scale_run::run_scale(&stop).map(|_| ()),
        // summary.md and the charts again from a run's scale.json: `scale-report [DIR]`.
        Some("scale-report") => {
            bench::scale_run::rerender(std::env::args().nth(2).map(Into::into)).map(|_| ())
        }
        // The exact config a variant runs with: `config <variant> <proxy|direct> [upstream]`.
        Some("config") => print_config(std::env::args().skip(2).collect()),
        // The exact config a point of a bench-scale curve runs with: `scale-config <curve> <size>`.
        Some("scale-config") => print_scale_config(std::env::args().skip(2).collect()),
        Some(other) => Err(format!(
            "unknown argument {other:?}; usage: sticky-canary-bench [bench|soak|services|scale|config VARIANT MODE [UPSTREAM]|scale-report [DIR]|scale-config CURVE SIZE]"
        )),
    };
    if let Err(e) = result {
        eprintln!("sticky-canary-bench: {e}");
        std::process::exit(1);
    }
}

fn print_config(args: Vec<String>) -> Result<(), String> {
    let usage = "usage: sticky-canary-bench config VARIANT proxy|direct [UPSTREAM_ADDR]";
    let v = args
        .first()
        .and_then(|k| bench::Variant::by_key(k))
        .ok_or(usage)?;
    let mode = match args.get(1).map(String::as_str) {
        Some("proxy") => bench::Mode::Proxy,
        Some("direct") => bench::Mode::Direct,
        _ => return Err(usage.into()),
    };
    let upstream = match args.get(2) {
        Some(a) => Some(a.parse().map_err(|e| format!("{a}: {e}"))?),
        None => None,
    };
    print!("{}", bench::config_yaml(v, mode, upstream)?);
    Ok(())
}

fn print_scale_config(args: Vec<String>) -> Result<(), String> {
    let usage = format!(
        "usage: sticky-canary-bench scale-config CURVE SIZE (curves: {})",
        bench::scale::CURVES.join(", ")
    );
    let (Some(curve), Some(size)) = (args.first(), args.get(1).and_then(|s| s.parse().ok())) else {
        return Err(usage);
    };
    let doc = bench::scale::curve_config(curve, size)?;
    print!("{}", bench::scale::runnable(doc)?);
    Ok(())
}
