//! The cohort of a percentage: the regex that selects the sessions whose bucket header
//! (`0000`–`9999`, `sticky_canary::routing::hash::bucket_digits`) is below `100·p`.
//!
//! [`regex`] writes the set `0000` … `hundredths-1` as an alternation of digit ranges over the
//! four zero-padded digits, e.g. 500 (5 %) → `0[0-4][0-9]{2}`, 2500 → `[01][0-9]{3}|2[0-4][0-9]{2}`.
//! The pattern has no anchors: Envoy's `safe_regex` (RE2) and Istio's header `regex` (rendered as a
//! `safe_regex`) match the whole value. It uses only literals, digit classes and `{n}`, on which
//! RE2, Go's `regexp` and Rust's `regex` agree.
//!
//! - here: [`regex`], what `sticky-canary cohort` prints ([`Cohort::render`], [`table`]);
//! - [`args`]: its flags, and the percentage, header and route names they take;
//! - `exhaustive` (tests): every printable regex holds exactly its buckets.

pub mod args;

/// Hundredths of a percent in 100 %: the number of buckets (`sticky_canary::routing::hash::BUCKETS`).
pub const ALL: u32 = 10_000;

/// The pattern of 0 %: an empty character class, which no value matches (RE2, Go and Rust accept it).
pub const NOTHING: &str = r"[^\x00-\x{10FFFF}]";

/// The regex matching exactly the four-digit buckets `0000` … `hundredths-1` (`hundredths` is
/// clamped to 10 000): 0 → [`NOTHING`], 10 000 → `[0-9]{4}`.
pub fn regex(hundredths: u32) -> String {
    let n = hundredths.min(ALL);
    if n == 0 {
        return NOTHING.to_string();
    }
    if n == ALL {
        return "[0-9]{4}".to_string();
    }
    // The digits of n, zero-padded to 4: a bucket b < n iff, at the first position where they
    // differ, b's digit is lower. One branch per position whose digit is above 0.
    let digits = [n / 1000, n / 100 % 10, n / 10 % 10, n % 10];
    let mut branches = Vec::new();
    for (i, &d) in digits.iter().enumerate() {
        if d == 0 {
            continue;
        }
        let mut branch: String = digits[..i].iter().map(|p| digit_char(*p)).collect();
        branch.push_str(&class(0, d - 1));
        branch.push_str(&any_digits(3 - i));
        branches.push(branch);
    }
    branches.join("|")
}

/// The character of a decimal digit `d` (0–9).
fn digit_char(d: u32) -> char {
    char::from_digit(d, 10).unwrap_or('0')
}

/// The digits `lo..=hi`: `4`, `[01]`, `[0-4]`.
fn class(lo: u32, hi: u32) -> String {
    match hi - lo {
        0 => digit_char(lo).to_string(),
        1 => format!("[{}{}]", digit_char(lo), digit_char(hi)),
        _ => format!("[{}-{}]", digit_char(lo), digit_char(hi)),
    }
}

/// `count` digits of any value: ``, `[0-9]`, `[0-9]{2}`.
fn any_digits(count: usize) -> String {
    match count {
        0 => String::new(),
        1 => "[0-9]".to_string(),
        n => format!("[0-9]{{{n}}}"),
    }
}

/// Hundredths of a percent as text: 500 → `5%`, 1250 → `12.5%`, 3333 → `33.33%`.
pub fn format_percent(hundredths: u32) -> String {
    let (w, f) = (hundredths / 100, hundredths % 100);
    match f {
        0 => format!("{w}%"),
        f if f % 10 == 0 => format!("{w}.{}%", f / 10),
        f => format!("{w}.{f:02}%"),
    }
}

/// What `sticky-canary cohort` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The bare regex
    Regex,
    /// Argo Rollouts canary steps: setCanaryScale, then setHeaderRoute (Istio)
    Argo,
    /// A Flagger Canary's `analysis.match` (A/B testing, Istio)
    Flagger,
    /// An Envoy route's `match.headers` entry (`safe_regex`)
    Envoy,
}

/// A cohort to print: its size, the bucket header and the managed route's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cohort {
    /// Hundredths of a percent, 0..=10 000.
    pub hundredths: u32,
    /// Lowercase header name.
    pub header: String,
    /// The Argo managed route (`trafficRouting.managedRoutes[].name`).
    pub route: String,
}

/// The recommended bucket header (`bucket_header` in the plugin config).
pub const DEFAULT_HEADER: &str = "x-canary-bucket";
/// The default name of the Argo managed route.
pub const DEFAULT_ROUTE: &str = "cohort";

/// The percentages the the manual's table lists.
pub const COMMON: [u32; 10] = [100, 200, 500, 1000, 2000, 2500, 3333, 5000, 7500, 10_000];

/// `buckets 0000–1249 (1250 of 10000)`, or `no bucket` for 0.
fn buckets_text(hundredths: u32) -> String {
    match hundredths.min(ALL) {
        0 => "no bucket".to_string(),
        n => format!("buckets 0000-{:04} ({n} of {ALL})", n - 1),
    }
}

impl Cohort {
    /// The text `sticky-canary cohort` prints in `format`, ending with a newline.
    pub fn render(&self, format: Format) -> String {
        let re = regex(self.hundredths);
        let percent = format_percent(self.hundredths);
        let head = format!(
            "# {percent} of sessions: {} of {} (RE2, whole value)\n",
            buckets_text(self.hundredths),
            self.header
        );
        match format {
            Format::Regex => format!("{re}\n"),
            Format::Argo if self.hundredths == 0 => format!(
                "# 0% of sessions: a setHeaderRoute without match removes the managed route\n\
                 # (list it in spec.strategy.canary.trafficRouting.managedRoutes)\n\
                 - setHeaderRoute:\n    name: {}\n",
                self.route
            ),
            Format::Argo => format!(
                "{head}\
                 # (list the route in spec.strategy.canary.trafficRouting.managedRoutes; setCanaryScale\n\
                 # sizes the canary pods for the cohort, the traffic weight stays 0)\n\
                 - setCanaryScale:\n    weight: {}\n\
                 - setHeaderRoute:\n    name: {}\n    match:\n      - headerName: {}\n        \
                 headerValue:\n          regex: '{re}'\n",
                self.hundredths.div_ceil(100),
                self.route,
                self.header
            ),
            Format::Flagger => format!(
                "{head}# Canary spec.analysis (A/B testing: iterations, no stepWeight)\n\
                 match:\n  - headers:\n      {}:\n        regex: '{re}'\n",
                self.header
            ),
            Format::Envoy => format!(
                "{head}# an entry of a route's match.headers (RouteConfiguration)\n\
                 - name: {}\n  string_match:\n    safe_regex:\n      regex: '{re}'\n",
                self.header
            ),
        }
    }
}

/// The markdown table of the [`COMMON`] percentages: percentage, buckets, regex (each `|` of a
/// regex written `\|`, as GitHub tables need even in code).
pub fn table() -> String {
    let mut out = String::from("| Cohort | Buckets | Regex (RE2, whole value) |\n|---:|---|---|\n");
    for h in COMMON {
        let buckets = format!("`0000`-`{:04}`", h - 1);
        out.push_str(&format!(
            "| {} | {buckets} | `{}` |\n",
            format_percent(h),
            // GitHub tables split cells at `|`, even in code; `\|` shows a `|`.
            regex(h).replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(regex(0), NOTHING);
        assert_eq!(regex(1), "0000");
        assert_eq!(regex(100), "00[0-9]{2}");
        assert_eq!(regex(500), "0[0-4][0-9]{2}");
        assert_eq!(regex(1250), "0[0-9]{3}|1[01][0-9]{2}|12[0-4][0-9]");
        assert_eq!(regex(2500), "[01][0-9]{3}|2[0-4][0-9]{2}");
        assert_eq!(
            regex(3333),
            "[0-2][0-9]{3}|3[0-2][0-9]{2}|33[0-2][0-9]|333[0-2]"
        );
        assert_eq!(regex(5000), "[0-4][0-9]{3}");
        assert_eq!(
            regex(9999),
            "[0-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8]"
        );
        assert_eq!(regex(ALL), "[0-9]{4}");
        assert_eq!(regex(ALL + 1), "[0-9]{4}");
    }
}

#[cfg(test)]
mod exhaustive;
