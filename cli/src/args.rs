//! The command line, defined once with clap's derive: `sticky-canary <COMMAND>`, with `gate`,
//! `cohort` and `assign`, each one's flags and help defined in its own module
//! ([`crate::gate::args`], [`crate::cohort::args`], [`crate::assign::args`]); [`parse`] gives the
//! [`Parsed`] command line, or clap's error ready to print.

use crate::assign::args::{self as assign_args, AssignArgs};
use crate::cohort::args::{self as cohort_args, CohortArgs};
use crate::gate::args::{self as gate_args, GateArgs};
use crate::gate::Config;
use crate::{assign, cohort};
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;

/// `sticky-canary`: the command line of the sticky-canary filter.
#[derive(Debug, Parser)]
#[command(
    name = "sticky-canary",
    version,
    about = "The command line of sticky-canary, the sticky per-session canary filter for Envoy",
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process (as `Parsed` below): boxing the gate's flags buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// PROMOTE, ROLLBACK or WAIT for a rollout, from the filter's per-version counters
    #[command(
        long_about = gate_args::ABOUT,
        override_usage = gate_args::USAGE,
        after_long_help = gate_args::AFTER_HELP,
        disable_help_flag = true
    )]
    Gate(GateArgs),

    /// The bucket regex of a cohort size, as Argo Rollouts steps, a Flagger or an Envoy match
    #[command(long_about = cohort_args::ABOUT, after_long_help = cohort_args::AFTER_HELP)]
    Cohort(CohortArgs),

    /// The version, bucket and reason of session keys under a plugin config, computed offline
    #[command(long_about = assign_args::ABOUT, after_long_help = assign_args::AFTER_HELP)]
    Assign(AssignArgs),
}

/// A parsed command line.
// Built once per process: the gate's configuration is large, and boxing it buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    Gate(Config),
    /// `sticky-canary cohort PERCENT`.
    Cohort(cohort::Cohort, cohort::Format),
    /// `sticky-canary cohort --table`.
    CohortTable,
    Assign(assign::Config),
}

/// Parses a whole command line (program name first). Errors are clap's, ready to print: usage
/// errors, and `--help` / `--version` (kinds `DisplayHelp`, `DisplayVersion`).
pub fn parse<I, T>(args: I) -> Result<Parsed, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Command::Cohort(c) => Ok(match c.into_cohort() {
            Some((cohort, format)) => Parsed::Cohort(cohort, format),
            None => Parsed::CohortTable,
        }),
        Command::Assign(a) => Ok(Parsed::Assign(a.into_config())),
        Command::Gate(mut gate) => {
            let business = matches
                .subcommand_matches("gate")
                .map(|m| gate.business_in_order(m))
                .unwrap_or_default();
            gate.into_config(business).map(Parsed::Gate).map_err(|e| {
                let sub = cmd.find_subcommand_mut("gate");
                match sub {
                    Some(sub) => sub.error(ErrorKind::ValueValidation, e),
                    None => cmd.error(ErrorKind::ValueValidation, e),
                }
            })
        }
    }
}

/// Parses the flags of `sticky-canary gate` (without the program and subcommand names).
pub fn parse_gate<I, T>(args: I) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv = ["sticky-canary", "gate"]
        .into_iter()
        .map(OsString::from)
        .chain(args.into_iter().map(Into::into));
    match parse(argv)? {
        Parsed::Gate(config) => Ok(config),
        _ => Err(Cli::command().error(ErrorKind::InvalidSubcommand, "not the gate")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_flags_get_a_suggestion() {
        let e = parse_gate(args("--servce checkout --envoy http://a:1")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        let text = e.to_string();
        assert!(
            text.contains("a similar argument exists: '--service'"),
            "{text}"
        );
        let e = parse(["sticky-canary", "gat"]).unwrap_err();
        assert!(e.to_string().contains("gate"), "{e}");
    }

    #[test]
    fn cohort_and_assign_help_documents_every_flag() {
        let mut cmd = Cli::command();
        for (name, texts) in [
            ("cohort", &["Exit status:", "RE2", "[0-9]{4}"][..]),
            (
                "assign",
                &["Exit status:", "KEY<TAB>VERSION<TAB>BUCKET<TAB>REASON"],
            ),
        ] {
            let sub = cmd.find_subcommand_mut(name).unwrap();
            let long = sub.render_long_help().to_string();
            let short = sub.render_help().to_string();
            for arg in sub.get_arguments() {
                let shown = match arg.get_long() {
                    Some(l) => format!("--{l}"),
                    None => arg.get_value_names().unwrap()[0].to_string(),
                };
                assert!(long.contains(&shown), "{name} {shown} undocumented");
                assert!(short.contains(&shown), "{name} {shown} not in -h");
                assert!(arg.get_help().is_some(), "{name} {shown} has no help");
            }
            for text in texts {
                assert!(long.contains(text), "{text:?} missing from {name} --help");
            }
            for line in long.lines().chain(short.lines()) {
                assert!(line.chars().count() <= 100, "too wide: {line:?}");
            }
        }
    }

    #[test]
    fn cohort_and_assign_parse() {
        let p = parse([
            "sticky-canary",
            "cohort",
            "12.5%",
            "--header",
            "X-B",
            "--format",
            "envoy",
        ]);
        let Ok(Parsed::Cohort(c, f)) = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            (c.hundredths, c.header.as_str(), c.route.as_str()),
            (1250, "x-b", "cohort")
        );
        assert_eq!(f, cohort::Format::Envoy);
        assert!(matches!(
            parse(["sticky-canary", "cohort", "--table"]),
            Ok(Parsed::CohortTable)
        ));
        let p = parse([
            "sticky-canary",
            "assign",
            "--config",
            "c.json",
            "a",
            "b",
            "--keys-file",
            "-",
        ]);
        let Ok(Parsed::Assign(a)) = p else {
            panic!("{p:?}")
        };
        assert_eq!(a.keys, ["a", "b"]);
        assert_eq!(a.keys_file, Some(assign::KeysFile::Stdin));
        assert!(!a.json);
        let e = parse(["sticky-canary", "assign", "--config", "c", "--json=no"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooManyValues);
        let e = parse(["sticky-canary", "cohort", "100.01"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
    }
}
