//! `sticky-canary gate`: reads the per-version counters sticky-canary publishes and decides
//! PROMOTE, ROLLBACK or WAIT, for a CI step, a Flagger webhook or an Argo Job.
//!
//! The gate's API in one place: [`Config`] (from [`args`]), [`run`] (sources → [`evaluate`] →
//! [`Report`]) and [`execute`] (the report printed, the exit code). The parts:
//!
//! - [`args`]: its flags, checked and turned into a [`Config`];
//! - [`sources`]: per-version [`Totals`] from Envoy scrapes or Prometheus queries;
//! - [`http`]: the HTTP client (timeouts, https, basic/bearer auth, proxies from the environment);
//! - [`policy`]: the checks and their evaluation into a report (the statistics are the core's
//!   `sticky_canary::stats`);
//! - [`report`]: the report, its table and its JSON.

pub mod args;
pub mod http;
pub mod policy;
pub mod report;
pub mod sources;
#[cfg(test)]
mod testdata;

pub use args::{parse_mean, parse_ratio};
pub use policy::{evaluate, verdict_of, Check, Mode, Policy};
pub use report::{Kind, Outcome, Report, RollbackKind, Row, Side, Verdict, Writes};
pub use sources::{prometheus_query, responses_5xx, scrape_envoy, Totals};

use http::{CaFile, Client, HttpUrl, Timeouts, Token};
use std::io::Write;
use std::path::PathBuf;

/// Where the numbers come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Envoy admin endpoints, summed.
    Envoy(Vec<HttpUrl>),
    /// A Prometheus: one instant query per key, over the counters' totals or a window.
    Prometheus {
        url: HttpUrl,
        window: Option<String>,
        /// `--prometheus-token-file`: read once, when the gate runs.
        token_file: Option<PathBuf>,
        /// `--max-answer-bytes`: the bound of each answer, in bytes.
        max_answer_bytes: u64,
    },
}

/// A parsed `sticky-canary gate` command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub service: String,
    pub source: Source,
    pub policy: Policy,
    pub json: bool,
    pub wait_exit_code: i32,
    pub timeouts: Timeouts,
    /// `--ca-file`: CA certificates (PEM) trusted for `https://` sources instead of Mozilla's
    /// roots; read once, when the gate runs.
    pub ca_file: Option<PathBuf>,
}

/// Reads the source, evaluates the policy. Errors are exit-1 errors.
pub fn run(config: &Config) -> Result<Report, String> {
    let roots = config
        .ca_file
        .as_deref()
        .map(CaFile::from_file)
        .transpose()?;
    let (totals, sources, window) = match &config.source {
        Source::Envoy(urls) => {
            let client = Client::new(config.timeouts, None, roots.as_ref());
            let scrapes = urls
                .iter()
                .map(|u| scrape_envoy(&client, u))
                .collect::<Result<Vec<_>, _>>()?;
            let sources = urls
                .iter()
                .map(|u| format!("envoy {}", u.shown()))
                .collect();
            (
                Totals::from_scrapes(&config.service, &scrapes),
                sources,
                None,
            )
        }
        Source::Prometheus {
            url,
            window,
            token_file,
            max_answer_bytes,
        } => {
            let token = token_file.as_deref().map(Token::from_file).transpose()?;
            let client = Client::new(config.timeouts, token, roots.as_ref());
            let mut keys = config.policy.keys();
            keys.extend(config.policy.optional_keys());
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let totals = Totals::from_prometheus(
                &client,
                url,
                &config.service,
                window.as_deref(),
                &keys,
                *max_answer_bytes,
            )?;
            (
                totals,
                vec![format!("prometheus {}", url.shown())],
                window.clone(),
            )
        }
    };
    let mut report = evaluate(&totals, &config.policy)?;
    report.sources = sources;
    report.window = window;
    report.wait_exit_code = config.wait_exit_code;
    Ok(report)
}

/// Runs the gate and writes its report to `out` (the table, or JSON with `--json`); the exit
/// code of the verdict. Errors are exit-1 errors.
pub fn execute(config: &Config, out: &mut dyn Write) -> Result<i32, String> {
    let report = run(config)?;
    let text = if config.json {
        let json = serde_json::to_string_pretty(&report.to_json())
            .map_err(|e| format!("cannot write JSON: {e}"))?;
        format!("{json}\n")
    } else {
        report.table()
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the report: {e}"))?;
    Ok(report.exit_code())
}
