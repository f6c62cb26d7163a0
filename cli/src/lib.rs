//! The sticky-canary command line: one binary, `sticky-canary`, with one module per subcommand,
//! each holding its flags, its logic and its output.
//!
//! - [`args`]: the command line (clap derive): which subcommand, with the flags each defines;
//! - [`gate`]: `sticky-canary gate`: PROMOTE, ROLLBACK or WAIT from the per-version counters
//!   (its flags, sources, HTTP client, policy and report);
//! - [`cohort`]: `sticky-canary cohort`: the bucket regex of a percentage;
//! - [`assign`]: `sticky-canary assign`: version, bucket and reason of session keys under a
//!   config;
//! - [`prom`]: the Prometheus text-format parser (the gate's Envoy scrapes; the end-to-end tests
//!   read Envoy's output with it too).
//!
//! Metric names come from the core's catalogue (`sticky_canary::metrics::names`) and the
//! statistics from the core's `sticky_canary::stats`.

pub mod args;
pub mod assign;
pub mod cohort;
pub mod gate;
pub mod prom;

use std::ffi::OsString;
use std::io::Write;

/// Exit status of a usage error, an unreachable source or a missing metric. clap's own usage
/// errors would exit 2, which reads as ROLLBACK: they exit 1 too.
pub const EXIT_ERROR: u8 = 1;

/// Writes `text` to stdout: 0, or 1 if it cannot be written.
fn print(text: &str) -> u8 {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => EXIT_ERROR,
    }
}

/// Runs the command line `args` (program name first) and gives the process's exit status:
/// help and version 0, usage errors 1, then the subcommand's (the gate: 0 PROMOTE, 2 ROLLBACK,
/// 3 or `--wait-exit` WAIT, 1 for errors; `cohort` and `assign`: 0, or 1 for errors).
pub fn main_with<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let parsed = match args::parse(args) {
        Ok(p) => p,
        Err(e) => {
            // Help and version go to stdout, errors to stderr; nothing to do if that fails.
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => EXIT_ERROR,
            };
        }
    };
    match parsed {
        args::Parsed::Gate(config) => match gate::execute(&config, &mut std::io::stdout().lock()) {
            Ok(code) => u8::try_from(code).unwrap_or(EXIT_ERROR),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "sticky-canary gate: {e}");
                EXIT_ERROR
            }
        },
        args::Parsed::Cohort(c, format) => print(&c.render(format)),
        args::Parsed::CohortTable => print(&cohort::table()),
        args::Parsed::Assign(config) => {
            let mut stdin = std::io::stdin().lock();
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            match assign::execute(&config, &mut stdin, &mut out, &mut err) {
                Ok(true) => 0,
                Ok(false) => EXIT_ERROR,
                Err(e) => {
                    let _ = writeln!(err, "sticky-canary assign: {e}");
                    EXIT_ERROR
                }
            }
        }
    }
}
