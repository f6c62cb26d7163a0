//! The command line, defined once with clap's derive: `sticky-canary <COMMAND>`: `gate`,
//! `cohort` and `assign`.
//!
//! Every flag's help comes from its doc comment (first paragraph for `-h`, all of it for
//! `--help`). clap refuses unknown flags (with a suggestion) and a single-value flag given twice;
//! [`GateArgs::into_config`] then checks what clap cannot (one source kind, `--window` only with
//! Prometheus, …) and builds the gate's [`Config`].

use crate::gate::{Config, Source};
use crate::http::{HttpUrl, Timeouts, MAX_ANSWER_BYTES, MAX_SCRAPE_BYTES, MIN_ANSWER_BYTES};
use crate::policy::{default_business_checks, parse_mean, parse_ratio, Check, Mode, Policy};
use crate::sources::{check_window, parse_duration};
use crate::{assign, cohort};
use clap::error::ErrorKind;
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use sticky_canary::stats::sequential::{TAU_PERCENT, TAU_POINTS};

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
        long_about = GATE_ABOUT,
        override_usage = GATE_USAGE,
        after_long_help = GATE_AFTER_HELP,
        disable_help_flag = true
    )]
    Gate(GateArgs),

    /// The bucket regex of a cohort size, as Argo Rollouts steps, a Flagger or an Envoy match
    #[command(long_about = COHORT_ABOUT, after_long_help = COHORT_AFTER_HELP)]
    Cohort(CohortArgs),

    /// The version, bucket and reason of session keys under a plugin config, computed offline
    #[command(long_about = ASSIGN_ABOUT, after_long_help = ASSIGN_AFTER_HELP)]
    Assign(AssignArgs),
}

const COHORT_ABOUT: &str = "\
The bucket regex of a cohort size, and the Argo Rollouts steps (or a Flagger match, or an Envoy
route match) that send that cohort to the canary. With bucket_header set, the filter sends each
session's bucket upstream as four digits 0000-9999; the sessions whose bucket is below 100 x P
are exactly the P % the plugin's weights canary P / stable 100-P would pick.";

const COHORT_AFTER_HELP: &str = "\
The regex has no anchors: Istio's header `regex` (an Envoy safe_regex) and Envoy's safe_regex are
RE2 and must match the whole value. 0 % matches nothing ([^\\x00-\\x{10FFFF}], an empty class; the
Argo output removes the managed route instead); 100 % is [0-9]{4}.

Exit status: 0, or 1 for a usage error (a percentage outside 0-100 or finer than 0.01 %).";

const ASSIGN_ABOUT: &str = "\
The version, bucket (0000-9999) and reason the filter gives each session key under a plugin
config, computed offline with the filter's own code: the key is sent the way the config's first
session source reads it (cookie or header), without override token or pin header.";

const ASSIGN_AFTER_HELP: &str = "\
Output: one line per key, KEY<TAB>VERSION<TAB>BUCKET<TAB>REASON, or with --json one JSON object
per line ({\"key\", \"version\", \"bucket\", \"reason\"}). BUCKET is the four digits the filter sends
upstream with bucket_header set, or - when it sends none (a held request).

Exit status: 0; 1 for a usage error, an unreadable file, an invalid config (the message names
the field) or a key the session source cannot carry (reported on stderr, the others printed).";

/// The flags of `sticky-canary cohort`.
#[derive(Debug, Args)]
pub struct CohortArgs {
    /// The cohort size: 5, 12.5%, 0.01% (hundredths of a percent, 0 to 100)
    #[arg(value_name = "PERCENT", value_parser = cohort::parse_percent,
          required_unless_present = "table")]
    pub percent: Option<u32>,

    /// The bucket header (the plugin's bucket_header)
    #[arg(long, value_name = "NAME", default_value = cohort::DEFAULT_HEADER,
          value_parser = cohort::parse_header)]
    pub header: String,

    /// The Argo managed route (also listed in trafficRouting.managedRoutes)
    #[arg(long, value_name = "ROUTE", default_value = cohort::DEFAULT_ROUTE,
          value_parser = cohort::parse_route)]
    pub name: String,

    /// What to print
    #[arg(long, value_enum, default_value = "argo")]
    pub format: cohort::Format,

    /// The markdown table of the common cohort sizes (1 % to 100 %) instead
    #[arg(long, conflicts_with_all = ["percent", "format", "header", "name"])]
    pub table: bool,
}

/// The flags of `sticky-canary assign`.
#[derive(Debug, Args)]
pub struct AssignArgs {
    /// The plugin config: the JSON the plugin takes
    #[arg(long, value_name = "PLUGIN_CONFIG.json")]
    pub config: PathBuf,

    /// Session keys
    #[arg(value_name = "KEY")]
    pub keys: Vec<String>,

    /// More keys, one a line (blank lines skipped, CRLF accepted); - reads stdin
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,

    /// Every request also carries the config's hold cookie (session.hold)
    #[arg(long)]
    pub held: bool,

    /// One JSON object per line
    #[arg(long, overrides_with = "json")]
    pub json: bool,
}

const GATE_ABOUT: &str = "\
PROMOTE, ROLLBACK or WAIT for a sticky-canary rollout, from the per-version counters the filter
publishes. Every canary version is compared with the baseline version: a check judges only when
both sides reach --min-samples, and rolls back only when the change is harmful, beyond its limit
and the evidence reaches --alpha. The test is sequential (mSPRT, always valid): however often the
gate runs on the same growing counts, an unharmful canary is rolled back with probability at
most alpha. --fixed judges with the one-shot z-tests instead, valid for a single look.";

const GATE_USAGE: &str = "\
sticky-canary gate --service NAME --envoy URL [--envoy URL]... [OPTIONS]
       sticky-canary gate --service NAME --prometheus URL [--window DURATION] [OPTIONS]";

const GATE_AFTER_HELP: &str = "\
NUM, DEN, SUM and COUNT are business rule names (canary_business_<name>_total). Without any
--ratio or --mean, the checks are --ratio approval=auth_approved/payments:0.3 and
--mean aov=order_value/orders:1.

Outcomes, per check and canary:
  rollback      a harmful change beyond the limit, with evidence at alpha: the likelihood ratio
                of `beyond the limit` against `at the limit` reaches 1/alpha (2/alpha for a
                two-sided --mean), or with --fixed, significant at alpha
  inconclusive  a harmful change beyond the limit, without that evidence yet
  insufficient  a denominator below --min-samples
  pass          otherwise (a significant change within the limit passes)

Rollback guard: with a ROLLBACK verdict the report says, per rolled-back canary, whether it
wrote (canary_writes_total: requests with a state-changing method): zero writes, a zero-kill
rollback; writes, a gradual one, with its steps (flows that wrote finish on the canary for
session.hold.flows.drain_seconds); no such metric, unknown.

HTTP: URLs are http[s]://host[:port][/prefix] (https: rustls with Mozilla's root certificates,
or with --ca-file only the CA certificates in that file). Each request, from connecting to the
last byte of the answer, is bounded by --timeout, and each Prometheus answer by
--max-answer-bytes. Credentials in a URL (https://USER:PASSWORD@host) are sent as basic auth;
--prometheus-token-file sends a bearer token instead. Neither is ever printed; prefer https://
for both. The first of ALL_PROXY, HTTPS_PROXY and HTTP_PROXY that is set (upper or lower case)
proxies every request, except to the hosts in NO_PROXY. Redirects are not followed: an answer
other than 2xx is an error.

Exit status:
  0 PROMOTE   every check passed for every canary
  2 ROLLBACK  some check is `rollback`
  3 WAIT      not enough data yet: some check is `insufficient` or `inconclusive` (--wait-exit)
  1           usage error, unreachable source, HTTP or TLS error or timeout, a bad answer from
              Prometheus (too large, not JSON, a value that cannot be a count), or a metric
              missing from the data";

/// The flags of `sticky-canary gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// Envoy admin endpoint; repeatable
    ///
    /// Reads URL/stats/prometheus of each and sums every series across proxies (counts since
    /// each proxy started).
    #[arg(long, value_name = "URL", action = ArgAction::Append, help_heading = "Source")]
    pub envoy: Vec<String>,

    /// Prometheus; instant queries sum by (version) (...{service="NAME"})
    #[arg(long, value_name = "URL", help_heading = "Source")]
    pub prometheus: Option<String>,

    /// With --prometheus: only the last DURATION (30m, 2h, 1h30m)
    ///
    /// Queries increase(...[DURATION]). Without it: the counters' current totals.
    #[arg(long, value_name = "DURATION", help_heading = "Source")]
    pub window: Option<String>,

    /// Bearer token for Prometheus, read once from FILE (trimmed, never printed)
    #[arg(long, value_name = "FILE", help_heading = "Source")]
    pub prometheus_token_file: Option<PathBuf>,

    /// CA certificates (PEM) trusted for https:// sources, instead of Mozilla's roots
    ///
    /// Every CERTIFICATE in FILE is trusted, and nothing else (as curl --cacert): for a
    /// Prometheus or Envoy behind a private CA, the usual case inside a cluster. Read once; an
    /// unreadable file, or one without a certificate, is an error naming it.
    #[arg(long, value_name = "FILE", help_heading = "Source")]
    pub ca_file: Option<PathBuf>,

    /// With --prometheus: the largest answer read, in bytes [default: 4194304, 4 MiB]
    ///
    /// A longer answer is refused as a bad answer on its Content-Length, or as soon as the byte
    /// past the limit arrives: the rest is never read. The gate's queries answer one element per
    /// version, a few hundred bytes. From 1024 to 536870912 (512 MiB, the limit of an Envoy
    /// scrape, which this flag does not change).
    #[arg(long, value_name = "BYTES", value_parser = answer_bytes_arg, help_heading = "Source")]
    pub max_answer_bytes: Option<u64>,

    /// Time limit for connecting to a source (TCP, proxy and TLS handshakes)
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = timeout_arg,
          help_heading = "Source")]
    pub connect_timeout: Duration,

    /// Time limit of each HTTP request, from connecting to the last byte of the answer
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = timeout_arg,
          help_heading = "Source")]
    pub timeout: Duration,

    /// The `service` label (required)
    #[arg(long, value_name = "NAME", help_heading = "Versions")]
    pub service: String,

    /// The version to compare with
    #[arg(
        long,
        value_name = "VERSION",
        default_value = "stable",
        help_heading = "Versions"
    )]
    pub baseline: String,

    /// A version to judge; repeatable (default: every other version with a non-zero series)
    #[arg(long, value_name = "VERSION", action = ArgAction::Append, help_heading = "Versions")]
    pub canary: Vec<String>,

    /// 5xx / responses may rise by at most MAX_POINTS percentage points
    ///
    /// One-sided mSPRT (--fixed: one-sided pooled two-proportion z-test).
    #[arg(long, value_name = "MAX_POINTS", default_value = "1.0", value_parser = limit_arg,
          allow_negative_numbers = true, help_heading = "Checks")]
    pub error_ratio: f64,

    /// Retried responses / responses may rise by at most MAX_POINTS percentage points (off
    /// unless given)
    ///
    /// From `canary_retried_responses_total` (the filter counts it from Envoy's
    /// `x-envoy-attempt-count`). The same test as --error-ratio.
    #[arg(long, value_name = "MAX_POINTS", value_parser = limit_arg,
          allow_negative_numbers = true, help_heading = "Checks")]
    pub retry_ratio: Option<f64>,

    /// gRPC responses with an error status / gRPC responses may rise by at most MAX_POINTS
    /// percentage points (off unless given)
    ///
    /// From `canary_grpc_responses_total` (the filter counts it with a `grpc` block); the error
    /// statuses are --grpc-error-codes. The same test as --error-ratio.
    #[arg(long, value_name = "MAX_POINTS", value_parser = limit_arg,
          allow_negative_numbers = true, help_heading = "Checks")]
    pub grpc_error_ratio: Option<f64>,

    /// The gRPC status codes --grpc-error-ratio counts as errors, comma-separated
    ///
    /// Default: the server-fault codes UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
    /// UNAVAILABLE, DATA_LOSS (the filter's default `grpc.error_codes`).
    #[arg(long, value_name = "CODES", default_value = "2,4,12,13,14,15",
          value_parser = grpc_codes_arg, requires = "grpc_error_ratio", help_heading = "Checks")]
    pub grpc_error_codes: GrpcCodes,

    /// NUM / DEN, higher is better, may drop by at most MAX_DROP points; repeatable
    ///
    /// One-sided mSPRT (--fixed: one-sided pooled two-proportion z-test).
    #[arg(long, value_name = "LABEL=NUM/DEN:MAX_DROP", value_parser = parse_ratio,
          action = ArgAction::Append, help_heading = "Checks")]
    pub ratio: Vec<Check>,

    /// SUM / COUNT may drift by at most MAX_DRIFT percent, either way; repeatable
    ///
    /// SUM is a `sum` rule (the variance comes from its _squares_total). Two-sided mSPRT with
    /// Welch's variance, each side at alpha/2 (--fixed: two-sided Welch test, normal
    /// approximation).
    #[arg(long, value_name = "LABEL=SUM/COUNT:MAX_DRIFT", value_parser = parse_mean,
          action = ArgAction::Append, help_heading = "Checks")]
    pub mean: Vec<Check>,

    /// Each side's denominator (responses, DEN, COUNT) must reach N before a check judges
    #[arg(long, value_name = "N", default_value = "200", value_parser = whole_arg,
          allow_negative_numbers = true, help_heading = "Checks")]
    pub min_samples: u64,

    /// Significance level of every test (sequential: bounds false rollbacks over all runs)
    #[arg(long, value_name = "A", default_value = "0.05", value_parser = alpha_arg,
          allow_negative_numbers = true, help_heading = "Checks")]
    pub alpha: f64,

    /// Judge with one-shot fixed-alpha z-tests instead of the sequential test
    ///
    /// Valid for ONE look at the data: a gate run again and again on cumulative counts rolls
    /// back unharmful canaries far more often than alpha.
    #[arg(long, help_heading = "Checks")]
    pub fixed: bool,

    /// Mixing sd of the sequential test for --error-ratio, --retry-ratio and --ratio, in points
    ///
    /// The size of harm beyond the limit (percentage points) the test detects fastest.
    #[arg(long, value_name = "POINTS", default_value_t = TAU_POINTS, value_parser = tau_arg,
          conflicts_with = "fixed", allow_negative_numbers = true, help_heading = "Checks")]
    pub tau_points: f64,

    /// Mixing sd of the sequential test for --mean, in percent of the baseline's mean
    ///
    /// The size of drift beyond the limit the test detects fastest.
    #[arg(long, value_name = "PERCENT", default_value_t = TAU_PERCENT, value_parser = tau_arg,
          conflicts_with = "fixed", allow_negative_numbers = true, help_heading = "Checks")]
    pub tau_percent: f64,

    /// One JSON document: the inputs, every check, the verdict and the exit code
    #[arg(long, overrides_with = "json", help_heading = "Output")]
    pub json: bool,

    /// Exit code for WAIT, for runners that only know pass and fail
    #[arg(long, value_name = "CODE", default_value = "3", value_parser = wait_exit_arg,
          allow_negative_numbers = true, help_heading = "Output")]
    pub wait_exit: i32,

    /// Print help (-h: a summary, --help: all of it)
    #[arg(short = 'h', long, action = ArgAction::Help, help_heading = "Output")]
    pub help: Option<bool>,
}

fn timeout_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| "expected a duration such as 500ms, 10s or 1m".into())
}

fn answer_bytes_arg(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|n| (MIN_ANSWER_BYTES..=MAX_SCRAPE_BYTES).contains(n))
        .ok_or_else(|| {
            format!("expected a number of bytes from {MIN_ANSWER_BYTES} to {MAX_SCRAPE_BYTES}")
        })
}

fn limit_arg(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| "expected a non-negative number".into())
}

/// `--grpc-error-codes`: distinct gRPC status codes 0–16.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpcCodes(pub Vec<u8>);

fn grpc_codes_arg(s: &str) -> Result<GrpcCodes, String> {
    let mut codes: Vec<u8> = Vec::new();
    for part in s.split(',') {
        let code = part
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|c| *c <= sticky_canary::grpc::MAX_CODE)
            .ok_or_else(|| format!("{part:?} is not a gRPC status code (0-16)"))?;
        if codes.contains(&code) {
            return Err(format!("{code} is listed twice"));
        }
        codes.push(code);
    }
    Ok(GrpcCodes(codes))
}

fn tau_arg(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| "expected a positive number".into())
}

fn whole_arg(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| "expected a whole number".into())
}

fn alpha_arg(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|a| *a > 0.0 && *a < 1.0)
        .ok_or_else(|| "expected a number in (0, 1)".into())
}

fn wait_exit_arg(s: &str) -> Result<i32, String> {
    s.parse::<i32>()
        .ok()
        .filter(|c| (0..=255).contains(c))
        .ok_or_else(|| "expected 0..255".into())
}

impl GateArgs {
    /// Checks what clap cannot and builds the gate's configuration. `business` holds the
    /// `--ratio` and `--mean` checks in command-line order.
    pub fn into_config(self, business: Vec<Check>) -> Result<Config, String> {
        if self.service.is_empty() {
            return Err("--service NAME is required".into());
        }
        let source = match (self.envoy.is_empty(), self.prometheus) {
            (false, Some(_)) => return Err("give --envoy or --prometheus, not both".into()),
            (true, None) => {
                return Err("a source is required: --envoy URL or --prometheus URL".into())
            }
            (false, None) => {
                if self.window.is_some() {
                    return Err(
                        "--window needs --prometheus (Envoy counters have no history)".into(),
                    );
                }
                if self.prometheus_token_file.is_some() {
                    return Err("--prometheus-token-file needs --prometheus".into());
                }
                if self.max_answer_bytes.is_some() {
                    return Err("--max-answer-bytes needs --prometheus (an Envoy scrape's \
                                limit is 512 MiB)"
                        .into());
                }
                let urls = self
                    .envoy
                    .iter()
                    .map(|u| HttpUrl::parse(u))
                    .collect::<Result<Vec<_>, _>>()?;
                Source::Envoy(urls)
            }
            (true, Some(url)) => {
                let url = HttpUrl::parse(&url)?;
                if let Some(w) = &self.window {
                    check_window(w)?;
                }
                if self.prometheus_token_file.is_some() && url.user.is_some() {
                    return Err("give credentials in the --prometheus URL or \
                                --prometheus-token-file, not both"
                        .into());
                }
                Source::Prometheus {
                    url,
                    window: self.window,
                    token_file: self.prometheus_token_file,
                    max_answer_bytes: self.max_answer_bytes.unwrap_or(MAX_ANSWER_BYTES),
                }
            }
        };
        if self.baseline.is_empty() || self.canary.iter().any(String::is_empty) {
            return Err("version names cannot be empty".into());
        }
        let mut seen = BTreeSet::new();
        if let Some(c) = self.canary.iter().find(|c| !seen.insert(*c)) {
            return Err(format!("--canary {c:?} given twice"));
        }
        let business = if business.is_empty() {
            default_business_checks()
        } else {
            business
        };
        let mut checks = vec![Check::ErrorRatio {
            max_points: self.error_ratio,
        }];
        if let Some(max_points) = self.retry_ratio {
            checks.push(Check::RetryRatio { max_points });
        }
        if let Some(max_points) = self.grpc_error_ratio {
            checks.push(Check::GrpcErrorRatio {
                max_points,
                codes: self.grpc_error_codes.0,
            });
        }
        checks.extend(business);
        let policy = Policy {
            baseline: self.baseline,
            canaries: self.canary,
            min_samples: self.min_samples,
            alpha: self.alpha,
            checks,
            mode: if self.fixed {
                Mode::Fixed
            } else {
                Mode::Sequential
            },
            tau_points: self.tau_points,
            tau_percent: self.tau_percent,
        };
        policy.validate()?;
        Ok(Config {
            service: self.service,
            source,
            policy,
            json: self.json,
            wait_exit_code: self.wait_exit,
            timeouts: Timeouts {
                connect: self.connect_timeout,
                request: self.timeout,
            },
            ca_file: self.ca_file,
        })
    }
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
        Command::Cohort(c) => Ok(match c.percent {
            Some(hundredths) if !c.table => Parsed::Cohort(
                cohort::Cohort {
                    hundredths,
                    header: c.header,
                    route: c.name,
                },
                c.format,
            ),
            _ => Parsed::CohortTable,
        }),
        Command::Assign(a) => Ok(Parsed::Assign(assign::Config {
            config: a.config,
            keys: a.keys,
            keys_file: a.keys_file.map(|f| {
                if f.as_os_str() == "-" {
                    assign::KeysFile::Stdin
                } else {
                    assign::KeysFile::Path(f)
                }
            }),
            held: a.held,
            json: a.json,
        })),
        Command::Gate(mut gate) => {
            // --ratio and --mean in the order given, as the report lists them.
            let mut business: Vec<(usize, Check)> = Vec::new();
            if let Some(m) = matches.subcommand_matches("gate") {
                for (id, checks) in [("ratio", &mut gate.ratio), ("mean", &mut gate.mean)] {
                    let at = m.indices_of(id).into_iter().flatten();
                    business.extend(at.zip(checks.drain(..)));
                }
            }
            business.sort_by_key(|(at, _)| *at);
            let business = business.into_iter().map(|(_, c)| c).collect();
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
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::sources::responses_5xx;
    use sticky_canary::metrics::names;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn parse_args(s: &str) -> Result<Config, String> {
        parse_gate(args(s)).map_err(|e| e.to_string())
    }

    fn url(s: &str) -> HttpUrl {
        HttpUrl::parse(s).unwrap()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parse_args_defaults_and_options() {
        let c = parse_args("--service checkout --envoy http://127.0.0.1:9901").unwrap();
        assert_eq!(c.service, "checkout");
        assert_eq!(c.source, Source::Envoy(vec![url("http://127.0.0.1:9901")]));
        assert_eq!(c.policy, Policy::default_for("stable"));
        assert!(!c.json);
        assert_eq!(c.wait_exit_code, 3);
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(
            (c.timeouts.connect, c.timeouts.request),
            (Duration::from_secs(3), Duration::from_secs(10))
        );

        let c = parse_args(
            "--service=checkout --prometheus http://prom:9090 --window 1h --baseline v1 \
             --canary v2 --canary=v3 --min-samples 500 --alpha 0.01 --error-ratio 0.5 \
             --mean aov=order_value/orders:2 --mean tax_per_order=tax/orders:1 --json \
             --wait-exit 0 --connect-timeout 500ms --timeout 1m",
        )
        .unwrap();
        assert_eq!(
            c.source,
            Source::Prometheus {
                url: url("http://prom:9090"),
                window: Some("1h".into()),
                token_file: None,
                max_answer_bytes: 4 << 20,
            }
        );
        assert_eq!(c.policy.baseline, "v1");
        assert_eq!(c.policy.canaries, ["v2", "v3"]);
        assert_eq!((c.policy.min_samples, c.policy.alpha), (500, 0.01));
        let labels: Vec<&str> = c.policy.checks.iter().map(Check::label).collect();
        // Only --mean given: no default approval ratio.
        assert_eq!(labels, ["error_ratio", "aov", "tax_per_order"]);
        assert_eq!(c.policy.checks[0], Check::ErrorRatio { max_points: 0.5 });
        assert!(c.json);
        assert_eq!(c.wait_exit_code, 0);
        assert_eq!(
            (c.timeouts.connect, c.timeouts.request),
            (Duration::from_millis(500), Duration::from_secs(60))
        );
        assert_eq!(
            c.policy.keys(),
            [
                names::RESPONSES.to_string(),
                responses_5xx(),
                "canary_business_order_value_total".into(),
                "canary_business_order_value_squares_total".into(),
                "canary_business_orders_total".into(),
                "canary_business_tax_total".into(),
                "canary_business_tax_squares_total".into(),
            ]
        );
    }

    #[test]
    fn sequential_by_default_fixed_and_tau_options() {
        let env = "--service s --envoy http://a:1";
        let c = parse_args(env).unwrap();
        assert_eq!(
            (c.policy.mode, c.policy.tau_points, c.policy.tau_percent),
            (Mode::Sequential, 2.0, 5.0)
        );
        let c = parse_args(&format!("{env} --fixed")).unwrap();
        assert_eq!(c.policy.mode, Mode::Fixed);
        assert_eq!(
            c.policy,
            Policy {
                mode: Mode::Fixed,
                ..Policy::default_for("stable")
            }
        );
        let c = parse_args(&format!("{env} --tau-points 0.5 --tau-percent=12.5")).unwrap();
        assert_eq!(
            (c.policy.mode, c.policy.tau_points, c.policy.tau_percent),
            (Mode::Sequential, 0.5, 12.5)
        );
    }

    #[test]
    fn retry_ratio_is_off_unless_given() {
        let c = parse_args("--service s --envoy http://a:1").unwrap();
        assert!(!c
            .policy
            .checks
            .iter()
            .any(|c| matches!(c, Check::RetryRatio { .. })));
        let c =
            parse_args("--service s --envoy http://a:1 --retry-ratio 2 --mean m=v/n:1").unwrap();
        let labels: Vec<&str> = c.policy.checks.iter().map(Check::label).collect();
        assert_eq!(labels, ["error_ratio", "retry_ratio", "m"]);
        assert_eq!(c.policy.checks[1], Check::RetryRatio { max_points: 2.0 });
        assert!(c
            .policy
            .keys()
            .contains(&names::RETRIED_RESPONSES.to_string()));
    }

    #[test]
    fn grpc_error_ratio_is_off_unless_given() {
        let c = parse_args("--service s --envoy http://a:1").unwrap();
        assert!(!c
            .policy
            .checks
            .iter()
            .any(|c| matches!(c, Check::GrpcErrorRatio { .. })));
        let c = parse_args("--service s --envoy http://a:1 --grpc-error-ratio 0.5").unwrap();
        let labels: Vec<&str> = c.policy.checks.iter().map(Check::label).collect();
        assert_eq!(
            labels,
            ["error_ratio", "grpc_error_ratio", "approval", "aov"]
        );
        assert_eq!(
            c.policy.checks[1],
            Check::GrpcErrorRatio {
                max_points: 0.5,
                codes: vec![2, 4, 12, 13, 14, 15]
            }
        );
        let c = parse_args(
            "--service s --envoy http://a:1 --grpc-error-ratio 1 --grpc-error-codes 14,13,8",
        )
        .unwrap();
        assert_eq!(
            c.policy.checks[1],
            Check::GrpcErrorRatio {
                max_points: 1.0,
                codes: vec![14, 13, 8]
            }
        );
        assert!(c
            .policy
            .keys()
            .contains(&"canary_grpc_responses_total{grpc_status=\"8\"}".to_string()));
    }

    #[test]
    fn ratio_and_mean_keep_their_order() {
        let c = parse_args(
            "--service s --envoy http://a:1 --mean m1=v/n:1 --ratio r1=a/b:1 --mean m2=v/n:1 \
             --ratio r2=a/b:1",
        )
        .unwrap();
        let labels: Vec<&str> = c.policy.checks.iter().map(Check::label).collect();
        assert_eq!(labels, ["error_ratio", "m1", "r1", "m2", "r2"]);
    }

    #[test]
    fn https_credentials_and_tokens() {
        let c = parse_args("--service s --prometheus https://gate:pw@prom.example/p --json --json")
            .unwrap();
        let Source::Prometheus { url, .. } = &c.source else {
            panic!("{:?}", c.source)
        };
        assert!(url.https && url.user.is_some());
        let c = parse_args("--service s --prometheus https://prom:9090 --prometheus-token-file /t")
            .unwrap();
        assert!(matches!(
            c.source,
            Source::Prometheus { token_file: Some(ref f), .. } if f == std::path::Path::new("/t")
        ));
        assert_eq!(c.ca_file, None);
    }

    #[test]
    fn ca_file_and_answer_bound() {
        let c = parse_args("--service s --prometheus https://prom:9090 --ca-file /ca.pem").unwrap();
        assert_eq!(c.ca_file.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert!(matches!(
            c.source,
            Source::Prometheus {
                max_answer_bytes: 4_194_304,
                ..
            }
        ));
        // --ca-file serves https:// Envoy admin endpoints too.
        let c = parse_args("--service s --envoy https://envoy:9901 --ca-file /ca.pem").unwrap();
        assert!(c.ca_file.is_some());
        let c = parse_args("--service s --prometheus http://p:1 --max-answer-bytes 1024").unwrap();
        assert!(matches!(
            c.source,
            Source::Prometheus {
                max_answer_bytes: 1024,
                ..
            }
        ));
        let c =
            parse_args("--service s --prometheus http://p:1 --max-answer-bytes 536870912").unwrap();
        assert!(matches!(
            c.source,
            Source::Prometheus {
                max_answer_bytes: 536_870_912,
                ..
            }
        ));
        for bad in ["1023", "536870913", "4MiB", "0", "1e6"] {
            let e = parse_args(&format!(
                "--service s --prometheus http://p:1 --max-answer-bytes {bad}"
            ))
            .unwrap_err();
            assert!(e.contains("from 1024 to 536870912"), "{bad}: {e}");
        }
        let e = parse_args("--service s --envoy http://a:1 --max-answer-bytes 4096").unwrap_err();
        assert!(e.contains("--max-answer-bytes needs --prometheus"), "{e}");
    }

    #[test]
    fn parse_args_usage_errors() {
        let env = "--service s --envoy http://127.0.0.1:9901";
        for (bad, says) in [
            ("--envoy http://127.0.0.1:9901", "--service"),
            (
                "--service= --envoy http://127.0.0.1:9901",
                "--service NAME is required",
            ),
            ("--service s", "source is required"),
            (
                "--service s --envoy http://a:1 --prometheus http://b:2",
                "not both",
            ),
            (
                "--service s --envoy http://a:1 --window 5m",
                "--window needs --prometheus",
            ),
            ("--service s --prometheus http://b:2 --window 5", "--window"),
            ("--service s --prometheus ftp://b:2", "http://"),
            ("--service s --envoy b:2", "http://"),
            (
                "--service s --envoy http://a:1 --prometheus-token-file /t",
                "--prometheus-token-file needs --prometheus",
            ),
            (
                "--service s --prometheus https://u:p@b --prometheus-token-file /t",
                "not both",
            ),
            // Single-value flags given twice are refused (clap); repeatable ones are not.
            (
                "--service s --service t --envoy http://a:1",
                "cannot be used multiple times",
            ),
            (
                &format!("{env} --alpha 0.1 --alpha 0.2"),
                "cannot be used multiple times",
            ),
            (
                "--service s --prometheus http://a:1 --prometheus http://b:1",
                "cannot be used multiple times",
            ),
            (&format!("{env} --min-samples -3"), "--min-samples"),
            (&format!("{env} --min-samples 1.5"), "--min-samples"),
            (&format!("{env} --alpha 1"), "--alpha"),
            (&format!("{env} --alpha 0"), "--alpha"),
            (&format!("{env} --error-ratio -1"), "--error-ratio"),
            (&format!("{env} --error-ratio inf"), "--error-ratio"),
            (&format!("{env} --retry-ratio -1"), "--retry-ratio"),
            (&format!("{env} --retry-ratio x"), "--retry-ratio"),
            (
                &format!("{env} --grpc-error-ratio -1"),
                "--grpc-error-ratio",
            ),
            (
                &format!("{env} --grpc-error-ratio 1 --grpc-error-codes 2,17"),
                "not a gRPC status code",
            ),
            (
                &format!("{env} --grpc-error-ratio 1 --grpc-error-codes 13,13"),
                "listed twice",
            ),
            (
                &format!("{env} --grpc-error-ratio 1 --grpc-error-codes ''"),
                "--grpc-error-codes",
            ),
            (
                &format!("{env} --grpc-error-codes 13"),
                "--grpc-error-ratio",
            ),
            (&format!("{env} --ratio approval"), "LABEL=NAME/NAME:LIMIT"),
            (
                &format!("{env} --mean aov=order_value/orders"),
                "LABEL=NAME/NAME:LIMIT",
            ),
            (
                &format!("{env} --ratio a=x/y:1 --mean a=x/y:1"),
                "two checks",
            ),
            (
                &format!("{env} --canary stable"),
                "both the baseline and a canary",
            ),
            (
                &format!("{env} --baseline="),
                "version names cannot be empty",
            ),
            (&format!("{env} --canary v2 --canary v2"), "twice"),
            (&format!("{env} --bogus"), "unexpected argument '--bogus'"),
            (
                &format!("{env} --canary"),
                "a value is required for '--canary",
            ),
            (
                &format!("{env} --json=yes"),
                "unexpected value 'yes' for '--json'",
            ),
            (&format!("{env} --wait-exit 300"), "--wait-exit"),
            (&format!("{env} --wait-exit -1"), "--wait-exit"),
            (&format!("{env} --timeout 0s"), "--timeout"),
            (&format!("{env} --connect-timeout 3"), "--connect-timeout"),
            (&format!("{env} --tau-points 0"), "--tau-points"),
            (&format!("{env} --tau-points -1"), "--tau-points"),
            (&format!("{env} --tau-points inf"), "--tau-points"),
            (&format!("{env} --tau-points NaN"), "--tau-points"),
            (&format!("{env} --tau-points x"), "--tau-points"),
            (&format!("{env} --tau-percent 0"), "--tau-percent"),
            (&format!("{env} --tau-percent -5"), "--tau-percent"),
            (&format!("{env} --tau-percent 1e999"), "--tau-percent"),
            (
                &format!("{env} --tau-points 1 --tau-points 2"),
                "cannot be used multiple times",
            ),
            // τ belongs to the sequential test: meaningless with --fixed.
            (
                &format!("{env} --fixed --tau-points 1"),
                "'--fixed' cannot be used with '--tau-points",
            ),
            (
                &format!("{env} --tau-percent 3 --fixed"),
                "cannot be used with",
            ),
        ] {
            let e = parse_args(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?} → {e:?}, expected {says:?}");
        }
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
    fn validation_errors_read_like_clap_errors() {
        let e = parse_gate(args("--service s")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        let text = e.to_string();
        assert!(text.starts_with("error: a source is required"), "{text}");
        assert!(
            text.contains("Usage: sticky-canary gate --service NAME"),
            "{text}"
        );
    }

    #[test]
    fn help_documents_every_flag() {
        let mut cmd = Cli::command();
        let gate = cmd.find_subcommand_mut("gate").unwrap();
        let long = gate.render_long_help().to_string();
        let short = gate.render_help().to_string();
        for arg in gate.get_arguments() {
            let flag = format!("--{}", arg.get_long().unwrap());
            assert!(long.contains(&flag), "{flag} undocumented");
            assert!(short.contains(&flag), "{flag} not in -h");
            assert!(arg.get_help().is_some(), "{flag} has no help");
        }
        for text in [
            "Exit status:",
            "3 WAIT",
            "2 ROLLBACK",
            "inconclusive",
            "NO_PROXY",
        ] {
            assert!(long.contains(text), "{text:?} missing from --help");
        }
        for line in long.lines().chain(short.lines()) {
            assert!(line.chars().count() <= 100, "too wide: {line:?}");
        }
        // -h and --help are answered (exit 0), whatever else is on the line.
        for h in ["-h", "--help"] {
            let e = parse_gate(args(&format!("--service x {h}"))).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        }
        let e = parse(["sticky-canary", "--version"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayVersion);
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
