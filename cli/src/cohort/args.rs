//! The flags of `sticky-canary cohort` (clap derive) and what they take: a percentage in
//! hundredths ([`parse_percent`]), a header name and an Argo route name.

use super::{Cohort, Format, ALL, DEFAULT_HEADER, DEFAULT_ROUTE};
use clap::Args;

/// The long description of `sticky-canary cohort --help`.
pub(crate) const ABOUT: &str = "\
The bucket regex of a cohort size, and the Argo Rollouts steps (or a Flagger match, or an Envoy
route match) that send that cohort to the canary. With bucket_header set, the filter sends each
session's bucket upstream as four digits 0000-9999; the sessions whose bucket is below 100 x P
are exactly the P % the plugin's weights canary P / stable 100-P would pick.";

/// What `sticky-canary cohort --help` prints after the flags.
pub(crate) const AFTER_HELP: &str = "\
The regex has no anchors: Istio's header `regex` (an Envoy safe_regex) and Envoy's safe_regex are
RE2 and must match the whole value. 0 % matches nothing ([^\\x00-\\x{10FFFF}], an empty class; the
Argo output removes the managed route instead); 100 % is [0-9]{4}.

Exit status: 0, or 1 for a usage error (a percentage outside 0-100 or finer than 0.01 %).";

/// The flags of `sticky-canary cohort`.
#[derive(Debug, Args)]
pub struct CohortArgs {
    /// The cohort size: 5, 12.5%, 0.01% (hundredths of a percent, 0 to 100)
    #[arg(value_name = "PERCENT", value_parser = parse_percent,
          required_unless_present = "table")]
    pub percent: Option<u32>,

    /// The bucket header (the plugin's bucket_header)
    #[arg(long, value_name = "NAME", default_value = DEFAULT_HEADER,
          value_parser = parse_header)]
    pub header: String,

    /// The Argo managed route (also listed in trafficRouting.managedRoutes)
    #[arg(long, value_name = "ROUTE", default_value = DEFAULT_ROUTE,
          value_parser = parse_route)]
    pub name: String,

    /// What to print
    #[arg(long, value_enum, default_value = "argo")]
    pub format: Format,

    /// The markdown table of the common cohort sizes (1 % to 100 %) instead
    #[arg(long, conflicts_with_all = ["percent", "format", "header", "name"])]
    pub table: bool,
}

impl CohortArgs {
    /// The cohort to print and its format, or `None` for `--table`.
    pub fn into_cohort(self) -> Option<(Cohort, Format)> {
        match self.percent {
            Some(hundredths) if !self.table => Some((
                Cohort {
                    hundredths,
                    header: self.header,
                    route: self.name,
                },
                self.format,
            )),
            _ => None,
        }
    }
}

/// A percentage in hundredths of a percent (0..=10 000): `12.5%`, `5`, `0.01%`, `100`. At most two
/// decimals (trailing zeros aside): the bucket is a hundredth of a percent.
pub fn parse_percent(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let number = t.strip_suffix('%').unwrap_or(t).trim_end();
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !is_digits(whole) || !is_digits(fraction) {
        return Err(format!(
            "{text:?} is not a percentage: a number from 0 to 100 with at most two decimals, \
             like 5, 12.5% or 0.01%"
        ));
    }
    let (kept, rest) = fraction.split_at(fraction.len().min(2));
    if rest.bytes().any(|b| b != b'0') {
        return Err(format!(
            "{text:?} is finer than the buckets: a bucket is 0.01 %, use at most two decimals"
        ));
    }
    // Leading zeros are fine; more than 3 significant whole digits is above 100 anyway.
    let whole = whole.trim_start_matches('0');
    if whole.len() > 3 {
        return Err(format!("{text:?} is above 100 %"));
    }
    let w: u32 = whole.parse().unwrap_or(0);
    let f: u32 = format!("{kept:0<2}").parse().unwrap_or(0);
    let hundredths = w * 100 + f;
    if hundredths > ALL {
        return Err(format!("{text:?} is above 100 %"));
    }
    Ok(hundredths)
}

/// A name printed unquoted in YAML: ASCII letters, digits, `-`, `_` and `.`.
fn plain_name(text: &str, what: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if text.is_empty() || !text.chars().all(ok) {
        return Err(format!(
            "{text:?} is not a {what} (letters, digits, '-', '_' and '.')"
        ));
    }
    Ok(text.to_string())
}

/// A header name, lowercased as the filter sets it and Istio matches it.
pub fn parse_header(text: &str) -> Result<String, String> {
    plain_name(text, "header name").map(|h| h.to_ascii_lowercase())
}

/// An Argo managed route name.
pub fn parse_route(text: &str) -> Result<String, String> {
    plain_name(text, "route name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::format_percent;

    #[test]
    fn percentages() {
        for (text, want) in [
            ("12.5%", 1250),
            ("5", 500),
            ("0.01%", 1),
            ("100", 10_000),
            ("100.00%", 10_000),
            ("0", 0),
            ("0%", 0),
            (".5", 50),
            ("5.", 500),
            ("33.33", 3333),
            (" 7 % ", 700),
            ("007.50", 750),
            ("12.500", 1250),
        ] {
            assert_eq!(parse_percent(text), Ok(want), "{text}");
        }
        for (text, says) in [
            ("", "not a percentage"),
            ("%", "not a percentage"),
            (".", "not a percentage"),
            ("-5", "not a percentage"),
            ("+5", "not a percentage"),
            ("1e2", "not a percentage"),
            ("five", "not a percentage"),
            ("5%%", "not a percentage"),
            ("0.001", "finer than the buckets"),
            ("12.345%", "finer than the buckets"),
            ("100.01", "above 100"),
            ("101", "above 100"),
            ("99999999999999999999", "above 100"),
        ] {
            let e = parse_percent(text).expect_err(text);
            assert!(e.contains(says), "{text:?} → {e}");
        }
    }

    #[test]
    fn percent_text_round_trips() {
        for h in 0..=ALL {
            assert_eq!(parse_percent(&format_percent(h)), Ok(h), "{h}");
        }
        assert_eq!(format_percent(1250), "12.5%");
        assert_eq!(format_percent(3333), "33.33%");
        assert_eq!(format_percent(1), "0.01%");
    }
}
