//! The cohort of a percentage: the regex that selects the sessions whose bucket header
//! (`0000`–`9999`, `sticky_canary::decision::bucket_digits`) is below `100·p`.
//!
//! [`regex`] writes the set `0000` … `hundredths-1` as an alternation of digit ranges over the
//! four zero-padded digits, e.g. 500 (5 %) → `0[0-4][0-9]{2}`, 2500 → `[01][0-9]{3}|2[0-4][0-9]{2}`.
//! The pattern has no anchors: Envoy's `safe_regex` (RE2) and Istio's header `regex` (rendered as a
//! `safe_regex`) match the whole value. It uses only literals, digit classes and `{n}`, on which
//! RE2, Go's `regexp` and Rust's `regex` agree.

/// Hundredths of a percent in 100 %: the number of buckets (`sticky_canary::decision::BUCKETS`).
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

/// The percentages the README's table lists.
pub const COMMON: [u32; 10] = [100, 200, 500, 1000, 2000, 2500, 3333, 5000, 7500, 10_000];

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
#[allow(clippy::expect_used)]
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod exhaustive {
    use super::*;
    use regex::bytes::Regex;
    use regex_syntax::hir::{Class, Hir, HirKind};

    /// A set of characters: the ASCII ones as a mask, and whether it holds any other.
    #[derive(Clone, Copy)]
    struct Chars {
        ascii: u128,
        other: bool,
    }

    /// The language of a pattern without anchors or unbounded repetition, as a union of
    /// sequences of character sets (each sequence matches its cartesian product).
    fn language(hir: &Hir) -> Vec<Vec<Chars>> {
        let add = |c: &mut Chars, lo: u32, hi: u32| {
            for x in lo..=hi.min(127) {
                c.ascii |= 1u128 << x;
            }
            c.other |= hi > 127;
        };
        match hir.kind() {
            HirKind::Empty => vec![vec![]],
            HirKind::Literal(lit) => vec![lit
                .0
                .iter()
                .map(|&b| {
                    let mut c = Chars {
                        ascii: 0,
                        other: false,
                    };
                    add(&mut c, u32::from(b), u32::from(b));
                    c
                })
                .collect()],
            HirKind::Class(class) => {
                let mut c = Chars {
                    ascii: 0,
                    other: false,
                };
                match class {
                    Class::Unicode(u) => u
                        .ranges()
                        .iter()
                        .for_each(|r| add(&mut c, r.start() as u32, r.end() as u32)),
                    Class::Bytes(b) => b
                        .ranges()
                        .iter()
                        .for_each(|r| add(&mut c, u32::from(r.start()), u32::from(r.end()))),
                }
                vec![vec![c]]
            }
            HirKind::Look(look) => panic!("the pattern has an anchor: {look:?}"),
            HirKind::Repetition(rep) => {
                let max = rep.max.expect("an unbounded repetition");
                let sub = language(&rep.sub);
                let mut out = Vec::new();
                let mut power = vec![vec![]];
                for k in 0..=max {
                    if k >= rep.min {
                        out.extend(power.iter().cloned());
                    }
                    power = concat(&power, &sub);
                }
                out
            }
            HirKind::Capture(cap) => language(&cap.sub),
            HirKind::Concat(parts) => parts
                .iter()
                .fold(vec![vec![]], |acc, p| concat(&acc, &language(p))),
            HirKind::Alternation(alts) => alts.iter().flat_map(language).collect(),
        }
    }

    fn concat(a: &[Vec<Chars>], b: &[Vec<Chars>]) -> Vec<Vec<Chars>> {
        a.iter()
            .flat_map(|x| b.iter().map(move |y| [x.clone(), y.clone()].concat()))
            .collect()
    }

    /// The buckets (as numbers) a pattern's language holds, or an error if it holds any string
    /// that is not four ASCII digits.
    fn buckets(pattern: &str) -> Result<Vec<bool>, String> {
        let hir = regex_syntax::parse(pattern).map_err(|e| e.to_string())?;
        const DIGITS: u128 = 0x3ff << b'0';
        let mut seen = vec![false; ALL as usize];
        for seq in language(&hir) {
            if seq.iter().any(|c| c.ascii == 0 && !c.other) {
                continue; // an empty set: the sequence matches nothing
            }
            if seq.len() != 4 || seq.iter().any(|c| c.other || c.ascii & !DIGITS != 0) {
                return Err(format!("{pattern} matches a value other than four digits"));
            }
            let ds: Vec<Vec<usize>> = seq
                .iter()
                .map(|c| {
                    (0..10)
                        .filter(|d| c.ascii & (1u128 << (b'0' + d)) != 0)
                        .map(usize::from)
                        .collect()
                })
                .collect();
            for a in &ds[0] {
                for b in &ds[1] {
                    for c in &ds[2] {
                        for d in &ds[3] {
                            seen[a * 1000 + b * 100 + c * 10 + d] = true;
                        }
                    }
                }
            }
        }
        Ok(seen)
    }

    /// Every regex `cohort` can print (0 ..= 10 000 hundredths) holds exactly the buckets
    /// `0000` … `n-1` and no other string (no other length, no non-digit). The pattern is read
    /// by `regex-syntax` (the parser of Rust's `regex`; RE2 reads this subset — literals, classes,
    /// `{n}`, `|` — the same way) and its finite language computed from the syntax tree.
    #[test]
    fn every_regex_holds_exactly_its_buckets() {
        for n in 0..=ALL {
            let seen = buckets(&regex(n)).unwrap();
            for (b, hit) in seen.iter().enumerate() {
                assert_eq!(*hit, (b as u32) < n, "{n}: bucket {b}");
            }
        }
    }

    /// The language computation itself is checked: it refuses what is not four digits, and a
    /// real regex engine, anchored the way RE2's full match is, agrees with it on a few hundred
    /// percentages against all 10 000 buckets (the full check with the engine takes 70 s in a
    /// debug build).
    #[test]
    fn a_regex_engine_agrees_on_a_sample() {
        for bad in [
            "[0-9]{3}",
            "[0-9]{4,5}",
            "0[0-9a][0-9]{2}",
            "0[^x][0-9]{2}",
            "[0-9]{3}|[0-9]{4}",
        ] {
            assert!(buckets(bad).is_err(), "{bad}");
        }
        assert_eq!(
            buckets("00[0-9]{2}|0000")
                .unwrap()
                .iter()
                .filter(|b| **b)
                .count(),
            100
        );
        let digits: Vec<[u8; 4]> = (0..ALL as u16)
            .map(sticky_canary::decision::bucket_digits)
            .collect();
        let others: [&[u8]; 6] = [b"", b"000", b"999", b"00000", b"99999", b"0000 "];
        let edges = [
            0, 1, 2, 9, 10, 11, 99, 101, 999, 1001, 1111, 3333, 6667, 9990, 9998, 9999,
        ];
        // Every multiple of 50, the edges, and a stride through the rest.
        let sample = (0..=ALL)
            .step_by(50)
            .chain(edges)
            .chain((7..ALL).step_by(97));
        for n in sample {
            let re = Regex::new(&format!("^(?:{})$", regex(n))).unwrap();
            for (b, d) in digits.iter().enumerate() {
                assert_eq!(re.is_match(d), (b as u32) < n, "{n}: bucket {b}");
            }
            for other in others {
                assert!(!re.is_match(other), "{n} matches {other:?}");
            }
        }
    }
}
