//! The flags of `sticky-canary gate` (clap derive) and the gate's [`Config`] built from them.
//!
//! Every flag's help comes from its doc comment (first paragraph for `-h`, all of it for
//! `--help`). clap refuses unknown flags (with a suggestion) and a single-value flag given twice;
//! [`GateArgs::into_config`] then checks what clap cannot (one source kind, `--window` only with
//! Prometheus, …) and builds the gate's [`Config`]. The checks' specs (`--ratio`, `--mean`:
//! `LABEL=NAME/NAME:LIMIT`) are read here too ([`parse_ratio`], [`parse_mean`]).

use crate::gate::http::{HttpUrl, Timeouts, MAX_ANSWER_BYTES, MAX_SCRAPE_BYTES, MIN_ANSWER_BYTES};
use crate::gate::policy::{default_business_checks, Check, Mode, Policy};
use crate::gate::sources::{check_window, parse_duration};
use crate::gate::{Config, Source};
use clap::{ArgAction, ArgMatches, Args};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use sticky_canary::stats::sequential::{TAU_PERCENT, TAU_POINTS};

/// The long description of `sticky-canary gate --help`.
pub(crate) const ABOUT: &str = "\
PROMOTE, ROLLBACK or WAIT for a sticky-canary rollout, from the per-version counters the filter
publishes. Every canary version is compared with the baseline version: a check judges only when
both sides reach --min-samples, and rolls back only when the change is harmful, beyond its limit
and the evidence reaches --alpha. The test is sequential (mSPRT, always valid): however often the
gate runs on the same growing counts, an unharmful canary is rolled back with probability at
most alpha. --fixed judges with the one-shot z-tests instead, valid for a single look.";

/// The usage lines of `sticky-canary gate`: one per source kind.
pub(crate) const USAGE: &str = "\
sticky-canary gate --service NAME --envoy URL [--envoy URL]... [OPTIONS]
       sticky-canary gate --service NAME --prometheus URL [--window DURATION] [OPTIONS]";

/// What `sticky-canary gate --help` prints after the flags.
pub(crate) const AFTER_HELP: &str = "\
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

/// `--connect-timeout`, `--timeout`: a positive duration (`500ms`, `10s`, `1m`).
fn timeout_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| "expected a duration such as 500ms, 10s or 1m".into())
}

/// `--max-answer-bytes`: from [`MIN_ANSWER_BYTES`] to [`MAX_SCRAPE_BYTES`].
fn answer_bytes_arg(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|n| (MIN_ANSWER_BYTES..=MAX_SCRAPE_BYTES).contains(n))
        .ok_or_else(|| {
            format!("expected a number of bytes from {MIN_ANSWER_BYTES} to {MAX_SCRAPE_BYTES}")
        })
}

/// `--error-ratio`, `--retry-ratio`, `--grpc-error-ratio`: a finite non-negative number of points.
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

/// `--grpc-error-codes`: comma-separated, each 0–16, none twice.
fn grpc_codes_arg(s: &str) -> Result<GrpcCodes, String> {
    let mut codes: Vec<u8> = Vec::new();
    for part in s.split(',') {
        let code = part
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|c| *c <= sticky_canary::counting::grpc::MAX_CODE)
            .ok_or_else(|| format!("{part:?} is not a gRPC status code (0-16)"))?;
        if codes.contains(&code) {
            return Err(format!("{code} is listed twice"));
        }
        codes.push(code);
    }
    Ok(GrpcCodes(codes))
}

/// `--tau-points`, `--tau-percent`: a finite positive number.
fn tau_arg(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| "expected a positive number".into())
}

/// `--min-samples`: a whole number.
fn whole_arg(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| "expected a whole number".into())
}

/// `--alpha`: strictly between 0 and 1.
fn alpha_arg(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|a| *a > 0.0 && *a < 1.0)
        .ok_or_else(|| "expected a number in (0, 1)".into())
}

/// `--wait-exit`: an exit code, 0 to 255.
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

    /// The `--ratio` and `--mean` checks, taken out of `self`, in the order the command line
    /// (`matches`: the gate subcommand's) gives them: the order the report lists them.
    pub fn business_in_order(&mut self, matches: &ArgMatches) -> Vec<Check> {
        let mut business: Vec<(usize, Check)> = Vec::new();
        for (id, checks) in [("ratio", &mut self.ratio), ("mean", &mut self.mean)] {
            let at = matches.indices_of(id).into_iter().flatten();
            business.extend(at.zip(checks.drain(..)));
        }
        business.sort_by_key(|(at, _)| *at);
        business.into_iter().map(|(_, c)| c).collect()
    }
}

/// A check's limit: a finite non-negative number.
fn threshold(spec: &str, s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{spec:?}: limit {s:?} is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!(
            "{spec:?}: limit {s:?} must be a non-negative number"
        ));
    }
    Ok(v)
}

/// A business rule name, as the plugin config's rules are named.
fn rule_name(spec: &str, s: &str) -> Result<String, String> {
    let ok = s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{spec:?}: {s:?} is not a business rule name ([a-z][a-z0-9_]*, at most 64)"
        ))
    }
}

/// Parses `LABEL=A/B:LIMIT` into (label, a, b, limit).
fn parse_spec(flag: &str, spec: &str) -> Result<(String, String, String, f64), String> {
    let shape = || format!("{flag} {spec:?}: expected LABEL=NAME/NAME:LIMIT");
    let (label, rest) = spec.split_once('=').ok_or_else(shape)?;
    let (names, limit) = rest.rsplit_once(':').ok_or_else(shape)?;
    let (a, b) = names.split_once('/').ok_or_else(shape)?;
    let label_ok = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !label_ok {
        return Err(format!(
            "{flag} {spec:?}: label {label:?} must be letters, digits, _ . - (at most 64)"
        ));
    }
    Ok((
        label.to_string(),
        rule_name(spec, a)?,
        rule_name(spec, b)?,
        threshold(spec, limit)?,
    ))
}

/// Parses `--ratio LABEL=NUM/DEN:MAX_DROP_POINTS`.
pub fn parse_ratio(spec: &str) -> Result<Check, String> {
    let (label, num, den, max_drop_points) = parse_spec("--ratio", spec)?;
    Ok(Check::Ratio {
        label,
        num,
        den,
        max_drop_points,
    })
}

/// Parses `--mean LABEL=SUM/COUNT:MAX_DRIFT_PERCENT`.
pub fn parse_mean(spec: &str) -> Result<Check, String> {
    let (label, sum, count, max_drift_percent) = parse_spec("--mean", spec)?;
    Ok(Check::Mean {
        label,
        sum,
        count,
        max_drift_percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse, parse_gate, Cli};
    use crate::gate::sources::responses_5xx;
    use clap::error::ErrorKind;
    use clap::CommandFactory;
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
    fn check_specs() {
        assert_eq!(
            parse_ratio("approval=auth_approved/payments:0.3").unwrap(),
            Check::Ratio {
                label: "approval".into(),
                num: "auth_approved".into(),
                den: "payments".into(),
                max_drop_points: 0.3
            }
        );
        assert_eq!(
            parse_mean("tax_per_order=tax/orders:1").unwrap(),
            Check::Mean {
                label: "tax_per_order".into(),
                sum: "tax".into(),
                count: "orders".into(),
                max_drift_percent: 1.0
            }
        );
        for bad in [
            "",
            "approval",
            "approval=auth_approved/payments",
            "approval=auth_approved:0.3",
            "=auth_approved/payments:0.3",
            "approval=Auth/payments:0.3",
            "approval=auth_approved/9p:0.3",
            "approval=auth_approved/:0.3",
            "approval=auth_approved/payments:-1",
            "approval=auth_approved/payments:NaN",
            "approval=auth_approved/payments:inf",
            "approval=auth_approved/payments:x",
            "appr oval=auth_approved/payments:0.3",
        ] {
            assert!(parse_ratio(bad).is_err(), "{bad:?}");
            assert!(parse_mean(bad).is_err(), "{bad:?}");
        }
    }
}
