//! Business rules: what to count on each response, compiled once, evaluated per response.
//!
//! A rule reads one place — a response header or a JSON Pointer into the response body — and
//! either counts (+1 when present, optionally only when equal to a string), sums an exact scaled
//! decimal, or records it into a histogram. Values that are not plain non-negative decimals (or
//! carry more fraction digits than the rule's scale, or overflow) are never added: they are
//! reported as [`Outcome::Invalid`], because silent rounding is the very bug class this exists to
//! catch.

use crate::check::{check_header_name, ConfigError};
use crate::formats::decimal::{self, MAX_SCALE};
use crate::formats::json::{self, Kind as JsonKind, Pointer};
use serde::Deserialize;

/// Default and upper bound of `max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most rules a config may carry (each adds series for every version).
pub const MAX_RULES: usize = 64;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Counter,
    Sum,
    Histogram,
}

/// `status` as written: a class such as `"2xx"`, or a list of codes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStatus {
    Class(String),
    Codes(Vec<u16>),
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub kind: RuleKind,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub json: Option<String>,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub scale: Option<u8>,
    #[serde(default)]
    pub status: Option<RawStatus>,
}

/// Where a rule reads its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A response header, lowercase.
    Header(String),
    /// A value in the JSON response body.
    Json(Pointer),
}

/// Which response codes a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    Any,
    /// 1..=5 for `1xx`..`5xx`.
    Class(u16),
    Codes(Vec<u16>),
}

impl StatusFilter {
    pub fn matches(&self, status: u16) -> bool {
        match self {
            StatusFilter::Any => true,
            StatusFilter::Class(c) => status / 100 == *c,
            StatusFilter::Codes(codes) => codes.contains(&status),
        }
    }
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub place: Place,
    pub equals: Option<Vec<u8>>,
    pub scale: u8,
    pub status: StatusFilter,
}

/// What a rule does with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to count (absent, or not equal).
    Nothing,
    /// Counter +1.
    Count,
    /// Sum += scaled value.
    Add(u64),
    /// Histogram records scaled value.
    Record(u64),
    /// A value that must not be added: `canary_business_invalid_total` +1.
    Invalid,
}

impl Rule {
    /// True when this rule can ever be invalid (it parses decimals).
    pub fn takes_decimals(&self) -> bool {
        self.kind != RuleKind::Counter
    }

    /// Evaluates the rule on a present value's text (`None`: absent).
    pub fn evaluate(&self, value: Option<&[u8]>) -> Outcome {
        let Some(v) = value else {
            return Outcome::Nothing;
        };
        match self.kind {
            RuleKind::Counter => match &self.equals {
                Some(want) if want.as_slice() != v => Outcome::Nothing,
                _ => Outcome::Count,
            },
            RuleKind::Sum | RuleKind::Histogram => match decimal::parse_scaled(v, self.scale) {
                Err(_) => Outcome::Invalid,
                Ok(n) if self.kind == RuleKind::Sum => Outcome::Add(n),
                Ok(n) => Outcome::Record(n),
            },
        }
    }

    /// Evaluates a JSON-body rule on a complete body. JSON `null` counts as absent; strings are
    /// compared and parsed unescaped, other values by their text.
    pub fn evaluate_json(&self, body: &[u8]) -> Result<Outcome, json::JsonError> {
        let Place::Json(pointer) = &self.place else {
            return Ok(Outcome::Nothing);
        };
        Ok(self.evaluate_value(json::find(body, pointer)?))
    }

    /// [`Rule::evaluate_json`] from its pointer's answer in the copy of a body of `len` bytes
    /// ([`json::locate_all`]): on the `complete` body (`None`: malformed), or on a prefix still
    /// arriving, once the value is certainly complete in it ([`json::Found::complete_in`];
    /// `None`: not known yet, an absence included).
    pub fn evaluate_found(
        &self,
        found: json::Found<'_>,
        len: usize,
        complete: bool,
    ) -> Option<Outcome> {
        let value = match (found, complete) {
            (json::Found::Value(value, _), true) => Some(value),
            (json::Found::Absent, true) => None,
            (found, false) => Some(found.complete_in(len)?),
            (json::Found::Pending(_), true) => return None,
        };
        Some(self.evaluate_value(value))
    }

    /// The outcome of a JSON value found (`None`: absent).
    fn evaluate_value(&self, found: Option<json::Value<'_>>) -> Outcome {
        match found {
            None => Outcome::Nothing,
            Some(v) if v.kind == JsonKind::Null => Outcome::Nothing,
            Some(v) => match v.text() {
                Some(text) => self.evaluate(Some(&text)),
                // A string with an invalid escape: present, but not a usable value.
                None if self.takes_decimals() => Outcome::Invalid,
                None => self.evaluate(Some(v.raw)),
            },
        }
    }
}

/// The compiled business configuration.
#[derive(Clone, Debug, Default)]
pub struct Business {
    pub rules: Vec<Rule>,
    pub max_body_bytes: usize,
}

impl Business {
    /// True when responses need headers beyond `:status`: every rule reads some (a header rule
    /// its header, a JSON rule the body gate's content type, encoding and length).
    pub fn reads_headers(&self) -> bool {
        !self.rules.is_empty()
    }

    pub fn has_json_rules(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.place, Place::Json(_)))
    }

    /// Evaluates the JSON rules that apply to a response with `status` on the copy of its body,
    /// all in one walk of it ([`json::locate_all`]), and hands each rule's index and outcome to
    /// `apply`, once (`None`: the body is malformed before the rule's value is known). On the
    /// `complete` body, always; on a prefix still arriving, only when every rule has its value
    /// there ([`Rule::evaluate_found`]), else nothing is handed over and the answer is `false`.
    pub fn evaluate_json_rules(
        &self,
        status: u16,
        body: &[u8],
        complete: bool,
        mut apply: impl FnMut(usize, Option<Outcome>),
    ) -> bool {
        // At most MAX_RULES rules (`compile` refuses more): fixed arrays, no allocation.
        let mut pointers: [&Pointer; MAX_RULES] = [&WHOLE_DOCUMENT; MAX_RULES];
        let mut which = [0usize; MAX_RULES];
        let mut n = 0usize;
        for (i, rule) in self.rules.iter().enumerate() {
            let Place::Json(pointer) = &rule.place else {
                continue;
            };
            if let (true, Some(p), Some(w)) = (
                rule.status.matches(status),
                pointers.get_mut(n),
                which.get_mut(n),
            ) {
                *p = pointer;
                *w = i;
                n = n.saturating_add(1);
            }
        }
        let mut found = [json::Found::Absent; MAX_RULES];
        // An error leaves the pointers it stopped `Pending`: their rules' outcome is `None`.
        let _ = json::locate_all(
            body,
            pointers.get(..n).unwrap_or_default(),
            found.get_mut(..n).unwrap_or_default(),
        );
        let mut outcomes = [None; MAX_RULES];
        for ((outcome, &i), &f) in outcomes.iter_mut().zip(&which).zip(&found).take(n) {
            *outcome = self
                .rules
                .get(i)
                .and_then(|rule| rule.evaluate_found(f, body.len(), complete));
            if outcome.is_none() && !complete {
                return false;
            }
        }
        for (&outcome, &i) in outcomes.iter().zip(&which).take(n) {
            apply(i, outcome);
        }
        true
    }

    /// True when a JSON-body rule applies to a response with this status.
    pub fn wants_body(&self, status: u16) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.place, Place::Json(_)) && r.status.matches(status))
    }
}

/// The filler of [`Business::evaluate_json_rules`]'s pointers.
static WHOLE_DOCUMENT: Pointer = Pointer::WHOLE_DOCUMENT;

/// Why a response body was not examined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NotJson,
    Compressed,
    TooLarge,
    Malformed,
    Incomplete,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::NotJson,
        SkipReason::Compressed,
        SkipReason::TooLarge,
        SkipReason::Malformed,
        SkipReason::Incomplete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotJson => "not_json",
            SkipReason::Compressed => "compressed",
            SkipReason::TooLarge => "too_large",
            SkipReason::Malformed => "malformed",
            SkipReason::Incomplete => "incomplete",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// `application/json` or any `application/*+json`, with or without parameters, any case.
pub fn is_json_content_type(value: &[u8]) -> bool {
    // Compared case-insensitively in place: no lowercase copy per response.
    let media = value.split(|&c| c == b';').next().unwrap_or_default();
    let media = media.trim_ascii();
    let (prefix, suffix) = (b"application/".as_slice(), b"+json".as_slice());
    media.eq_ignore_ascii_case(b"application/json")
        || (media.len() >= prefix.len() + suffix.len()
            && media
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
            && media
                .get(media.len() - suffix.len()..)
                .is_some_and(|s| s.eq_ignore_ascii_case(suffix)))
}

/// Decides from the response headers whether a body can be examined.
pub fn body_gate(
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
    content_length: Option<&[u8]>,
    max_body_bytes: usize,
) -> Result<(), SkipReason> {
    if !content_type.is_some_and(is_json_content_type) {
        return Err(SkipReason::NotJson);
    }
    if content_encoding.is_some_and(|e| !e.trim_ascii().eq_ignore_ascii_case(b"identity")) {
        return Err(SkipReason::Compressed);
    }
    let declared = content_length
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse::<u64>().ok());
    if declared.is_some_and(|l| l > max_body_bytes as u64) {
        return Err(SkipReason::TooLarge);
    }
    Ok(())
}

/// True when `canary_business_<name>` would end like `_rq_200` or `_rq_2xx`, which Envoy's default
/// `response_code` / `response_code_class` tag extractors (also in Istio's bootstrap) would eat.
fn ends_like_response_code_stat(name: &str) -> bool {
    let full = format!("_{name}");
    full.rfind("_rq_").is_some_and(|i| {
        let tail = full.get(i + 4..).unwrap_or_default().as_bytes();
        matches!(tail, [d, rest @ ..] if d.is_ascii_digit()
            && rest.len() == 2
            && (rest.iter().all(u8::is_ascii_digit) || rest == b"xx"))
    })
}

/// Rule names: `[a-z][a-z0-9_]*`, at most 64 characters, and not ending like one of Envoy's
/// response-code stats (`_rq_200`, `_rq_2xx`), which Envoy's default tag extractors would eat.
fn check_rule_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let b = name.as_bytes();
    let shaped = b.first().is_some_and(u8::is_ascii_lowercase)
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    if !shaped {
        return Err(ConfigError::new(
            path,
            format!(
                "{name:?} is not a valid rule name: use [a-z][a-z0-9_]*, at most 64 characters"
            ),
        ));
    }
    if ends_like_response_code_stat(name) {
        return Err(ConfigError::new(
            path,
            format!(
                "{name:?} ends like an Envoy response-code stat (_rq_NNN / _rq_Nxx); rename it"
            ),
        ));
    }
    Ok(())
}

fn compile_status(path: &str, raw: Option<RawStatus>) -> Result<StatusFilter, ConfigError> {
    match raw {
        None => Ok(StatusFilter::Any),
        Some(RawStatus::Class(c)) => match c.as_bytes() {
            [d @ b'1'..=b'5', b'x', b'x'] => Ok(StatusFilter::Class(u16::from(d - b'0'))),
            _ => Err(ConfigError::new(
                path,
                format!("{c:?} is not a status class; use \"1xx\"…\"5xx\" or a list of codes"),
            )),
        },
        Some(RawStatus::Codes(codes)) => {
            if codes.is_empty() {
                return Err(ConfigError::new(
                    path,
                    "an empty list of codes matches nothing",
                ));
            }
            if let Some(i) = codes.iter().position(|c| !(100..=599).contains(c)) {
                return Err(ConfigError::new(
                    format!("{path}[{i}]"),
                    "status codes are 100-599",
                ));
            }
            Ok(StatusFilter::Codes(codes))
        }
    }
}

/// Compiles `business_metrics` and `max_body_bytes`.
pub fn compile(raw: Vec<RawRule>, max_body_bytes: Option<usize>) -> Result<Business, ConfigError> {
    if raw.len() > MAX_RULES {
        return Err(ConfigError::new(
            "business_metrics",
            format!("{} rules; at most {MAX_RULES} are allowed", raw.len()),
        ));
    }
    let max_body_bytes = max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 || max_body_bytes > MAX_MAX_BODY_BYTES {
        return Err(ConfigError::new(
            "max_body_bytes",
            format!("must be between 1 and {MAX_MAX_BODY_BYTES}"),
        ));
    }
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let p = format!("business_metrics[{i}]");
        check_rule_name(&format!("{p}.name"), &r.name)?;
        if let Some(j) = rules.iter().position(|seen| seen.name == r.name) {
            return Err(ConfigError::new(
                format!("{p}.name"),
                format!(
                    "duplicate rule name {:?} (also business_metrics[{j}])",
                    r.name
                ),
            ));
        }
        let place = match (r.header, r.json) {
            (Some(h), None) => Place::Header(check_header_name(&format!("{p}.header"), &h)?),
            (None, Some(ptr)) => Place::Json(
                Pointer::parse(&ptr)
                    .map_err(|e| ConfigError::new(format!("{p}.json"), format!("{ptr:?}: {e}")))?,
            ),
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    p,
                    "has both `header` and `json`; a rule reads exactly one place",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    p,
                    "has neither `header` nor `json`; a rule reads exactly one place",
                ))
            }
        };
        let scale = match (r.kind, r.scale) {
            (RuleKind::Counter, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{p}.scale"),
                    "only `sum` and `histogram` rules have a scale",
                ))
            }
            (_, Some(s)) if s > MAX_SCALE => {
                return Err(ConfigError::new(
                    format!("{p}.scale"),
                    format!("at most {MAX_SCALE}"),
                ))
            }
            (_, s) => s.unwrap_or(0),
        };
        if r.equals.is_some() && r.kind != RuleKind::Counter {
            return Err(ConfigError::new(
                format!("{p}.equals"),
                "only `counter` rules compare with `equals`",
            ));
        }
        let status = compile_status(&format!("{p}.status"), r.status)?;
        rules.push(Rule {
            name: r.name,
            kind: r.kind,
            place,
            equals: r.equals.map(String::into_bytes),
            scale,
            status,
        });
    }
    Ok(Business {
        rules,
        max_body_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Result<Business, ConfigError> {
        let raw: Vec<RawRule> = serde_json::from_str(json).unwrap();
        compile(raw, None)
    }

    const PUBLISHED: &str = r#"[
        {"name": "orders",        "kind": "counter", "header": "x-order-id"},
        {"name": "order_value",   "kind": "sum",     "header": "x-order-total", "scale": 2},
        {"name": "auth_approved", "kind": "counter", "json": "/authorization/status", "equals": "approved"},
        {"name": "tax",           "kind": "histogram", "json": "/order/tax", "scale": 2}
    ]"#;

    #[test]
    fn compiles_the_published_rules() {
        let b = rules(PUBLISHED).unwrap();
        assert_eq!(b.rules.len(), 4);
        assert_eq!(b.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(b.rules[0].place, Place::Header("x-order-id".into()));
        assert_eq!(b.rules[1].scale, 2);
        assert!(b.has_json_rules());
        assert!(b.wants_body(200));
    }

    #[test]
    fn evaluation_table() {
        let b = rules(PUBLISHED).unwrap();
        let (orders, value, approved, tax) = (&b.rules[0], &b.rules[1], &b.rules[2], &b.rules[3]);
        assert_eq!(orders.evaluate(Some(b"o-1")), Outcome::Count);
        assert_eq!(orders.evaluate(None), Outcome::Nothing);
        assert_eq!(value.evaluate(Some(b"19.99")), Outcome::Add(1999));
        assert_eq!(value.evaluate(Some(b"5.5")), Outcome::Add(550));
        assert_eq!(
            value.evaluate(Some(b"1.234")),
            Outcome::Invalid,
            "no silent rounding"
        );
        assert_eq!(value.evaluate(Some(b"-5")), Outcome::Invalid);
        assert_eq!(value.evaluate(Some(b"1e3")), Outcome::Invalid);
        assert_eq!(value.evaluate(Some(b"")), Outcome::Invalid);
        assert_eq!(
            value.evaluate(Some(b"184467440737095516.16")),
            Outcome::Invalid,
            "overflow"
        );
        let body = br#"{"order":{"tax":"1.99","id":7},"authorization":{"status":"approved"}}"#;
        assert_eq!(approved.evaluate_json(body), Ok(Outcome::Count));
        assert_eq!(tax.evaluate_json(body), Ok(Outcome::Record(199)));
        let declined = br#"{"authorization":{"status":"declined"},"order":{"tax":0.5}}"#;
        assert_eq!(approved.evaluate_json(declined), Ok(Outcome::Nothing));
        assert_eq!(tax.evaluate_json(declined), Ok(Outcome::Record(50)));
        assert_eq!(
            tax.evaluate_json(br#"{"order":{"tax":1.999}}"#),
            Ok(Outcome::Invalid)
        );
        assert_eq!(
            tax.evaluate_json(br#"{"order":{"tax":null}}"#),
            Ok(Outcome::Nothing)
        );
        assert_eq!(
            tax.evaluate_json(br#"{"order":{"tax":{"v":1}}}"#),
            Ok(Outcome::Invalid)
        );
        assert_eq!(
            approved.evaluate_json(br#"{"authorization":{"status":"appr\u006fved"}}"#),
            Ok(Outcome::Count)
        );
        assert!(tax.evaluate_json(br#"{"order":{"tax":"#).is_err());
        // On the copy: a prefix answers only with a value that something follows.
        let cases: &[(&[u8], bool, Option<Outcome>)] = &[
            (br#"{"order":{"tax":1.99"#, false, None),
            (
                br#"{"order":{"tax":1.99}"#,
                false,
                Some(Outcome::Record(199)),
            ),
            (br#"{"order":{"tax":"1.99""#, false, None),
            (
                br#"{"order":{"tax":"1.99","#,
                false,
                Some(Outcome::Record(199)),
            ),
            (br#"{"order":{"tax":null,"#, false, Some(Outcome::Nothing)),
            (br#"{"order":{}}"#, false, None),
            (br#"{"order":{}}"#, true, Some(Outcome::Nothing)),
            (br#"{"order":{"tax":"#, false, None),
            (br#"{"order":{"tax":"#, true, None),
            (
                br#"{"order":{"tax":1.99}"#,
                true,
                Some(Outcome::Record(199)),
            ),
            (
                br#"{"order":{"tax":1.99}}"#,
                true,
                Some(Outcome::Record(199)),
            ),
        ];
        for &(body, complete, want) in cases {
            let Place::Json(pointer) = &tax.place else {
                unreachable!()
            };
            let mut found = [json::Found::Absent];
            let _ = json::locate_all(body, &[pointer], &mut found);
            let got = tax.evaluate_found(found[0], body.len(), complete);
            assert_eq!(got, want, "{} {complete}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn json_rules_in_one_walk() {
        let b = rules(
            r#"[{"name":"h","kind":"counter","header":"x"},
                {"name":"tax","kind":"sum","json":"/order/tax","scale":2},
                {"name":"taxed","kind":"counter","json":"/order/tax"},
                {"name":"tax_again","kind":"histogram","json":"/order/tax","scale":2},
                {"name":"ok","kind":"counter","json":"/status","equals":"ok"},
                {"name":"first","kind":"counter","json":"/items/0","status":[200]},
                {"name":"refund","kind":"sum","json":"/refund","status":"5xx"}]"#,
        )
        .unwrap();
        let run = |status: u16, body: &[u8], complete: bool| {
            let mut got = Vec::new();
            let settled = b.evaluate_json_rules(status, body, complete, |i, o| got.push((i, o)));
            settled.then_some(got)
        };
        let body = br#"{"items": [1], "order": {"tax": "1.99"}, "status": "ok", "refund": 3}"#;
        let all = [
            (1, Some(Outcome::Add(199))),
            (2, Some(Outcome::Count)),
            (3, Some(Outcome::Record(199))),
            (4, Some(Outcome::Count)),
            (5, Some(Outcome::Count)),
        ];
        assert_eq!(run(200, body, true), Some(all.to_vec()));
        // On a prefix: all or nothing; a value counts once something follows it.
        let cut = body.iter().position(|&c| c == b'k').unwrap() + 3;
        assert_eq!(run(200, &body[..cut], false), Some(all.to_vec()));
        assert_eq!(run(200, &body[..cut - 2], false), None);
        assert_eq!(run(200, &body[..cut - 2], true).unwrap()[3], (4, None));
        // The 5xx rule, alone on a 503 with the others but the status-filtered one.
        let got = run(503, body, true).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], (6, Some(Outcome::Add(3))));
        // Absent on a prefix is not known yet; on the whole body it counts nothing.
        assert_eq!(run(200, br#"{"items": [], "#, false), None);
        let got = run(200, br#"{"items": []}"#, true).unwrap();
        assert!(got.iter().all(|&(_, o)| o == Some(Outcome::Nothing)));
        // Malformed after every value: the values count.
        let tail = br#"{"status": "ok", "items": [1], "order": {"tax": 2}, oops"#;
        assert_eq!(
            run(200, tail, true).unwrap()[0],
            (1, Some(Outcome::Add(200)))
        );
        // Malformed before: every rule not yet answered is `None`.
        let got = run(200, br#"{"status": "ok", oops"#, true).unwrap();
        assert_eq!(got[3], (4, Some(Outcome::Count)));
        assert!(got
            .iter()
            .filter(|&&(i, _)| i != 4)
            .all(|&(_, o)| o.is_none()));
    }

    #[test]
    fn status_filters() {
        let b = rules(
            r#"[{"name":"a","kind":"counter","header":"x","status":"2xx"},
                          {"name":"b","kind":"counter","header":"x","status":[200,201]},
                          {"name":"c","kind":"counter","json":"/x","status":"5xx"}]"#,
        )
        .unwrap();
        assert!(b.rules[0].status.matches(204) && !b.rules[0].status.matches(302));
        assert!(b.rules[1].status.matches(201) && !b.rules[1].status.matches(202));
        assert!(b.wants_body(503) && !b.wants_body(200));
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                r#"[{"name":"Orders","kind":"counter","header":"x"}]"#,
                "business_metrics[0].name",
            ),
            (
                r#"[{"name":"9a","kind":"counter","header":"x"}]"#,
                "business_metrics[0].name",
            ),
            (
                r#"[{"name":"a-b","kind":"counter","header":"x"}]"#,
                "business_metrics[0].name",
            ),
            (
                r#"[{"name":"calls_rq_200","kind":"counter","header":"x"}]"#,
                "business_metrics[0].name",
            ),
            (
                r#"[{"name":"calls_rq_5xx","kind":"counter","header":"x"}]"#,
                "business_metrics[0].name",
            ),
            (
                r#"[{"name":"a","kind":"counter","header":"x"},{"name":"a","kind":"sum","header":"y"}]"#,
                "business_metrics[1].name",
            ),
            (r#"[{"name":"a","kind":"counter"}]"#, "business_metrics[0]"),
            (
                r#"[{"name":"a","kind":"counter","header":"x","json":"/x"}]"#,
                "business_metrics[0]",
            ),
            (
                r#"[{"name":"a","kind":"counter","json":"x"}]"#,
                "business_metrics[0].json",
            ),
            (
                r#"[{"name":"a","kind":"counter","json":"/a~2"}]"#,
                "business_metrics[0].json",
            ),
            (
                r#"[{"name":"a","kind":"counter","header":"bad header"}]"#,
                "business_metrics[0].header",
            ),
            (
                r#"[{"name":"a","kind":"counter","header":"x","scale":2}]"#,
                "business_metrics[0].scale",
            ),
            (
                r#"[{"name":"a","kind":"sum","header":"x","scale":19}]"#,
                "business_metrics[0].scale",
            ),
            (
                r#"[{"name":"a","kind":"sum","header":"x","equals":"1"}]"#,
                "business_metrics[0].equals",
            ),
            (
                r#"[{"name":"a","kind":"counter","header":"x","status":"2XX"}]"#,
                "business_metrics[0].status",
            ),
            (
                r#"[{"name":"a","kind":"counter","header":"x","status":[200,700]}]"#,
                "business_metrics[0].status[1]",
            ),
            (
                r#"[{"name":"a","kind":"counter","header":"x","status":[]}]"#,
                "business_metrics[0].status",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(rules(json).unwrap_err().path, path, "{json}");
        }
        assert_eq!(compile(vec![], Some(0)).unwrap_err().path, "max_body_bytes");
        assert!(rules(r#"[{"name":"orders_rq","kind":"counter","header":"x"}]"#).is_ok());
        assert!(rules(r#"[{"name":"rq_200","kind":"counter","header":"x"}]"#).is_err());
        assert!(rules(r#"[{"name":"rq_2000","kind":"counter","header":"x"}]"#).is_ok());
        assert!(rules(r#"[{"name":"orq_200","kind":"counter","header":"x"}]"#).is_ok());
    }

    #[test]
    fn body_gate_table() {
        let max = 100;
        let json = Some(&b"application/json; charset=utf-8"[..]);
        assert_eq!(body_gate(json, None, Some(b"100"), max), Ok(()));
        assert_eq!(
            body_gate(Some(b"Application/Problem+JSON"), None, None, max),
            Ok(())
        );
        assert_eq!(body_gate(json, Some(b"identity"), None, max), Ok(()));
        assert_eq!(
            body_gate(json, Some(b"gzip"), None, max),
            Err(SkipReason::Compressed)
        );
        assert_eq!(
            body_gate(json, None, Some(b"101"), max),
            Err(SkipReason::TooLarge)
        );
        assert_eq!(
            body_gate(Some(b"text/html"), None, None, max),
            Err(SkipReason::NotJson)
        );
        assert_eq!(
            body_gate(Some(b"application/jsonp"), None, None, max),
            Err(SkipReason::NotJson)
        );
        assert_eq!(body_gate(None, None, None, max), Err(SkipReason::NotJson));
    }

    #[test]
    fn json_content_types() {
        let yes: &[&[u8]] = &[
            b"application/json",
            b"APPLICATION/JSON",
            b"  application/json ; charset=utf-8",
            b"application/vnd.api+json",
            b"Application/Problem+Json;q=1",
            b"application/+json",
        ];
        let no: &[&[u8]] = &[
            b"",
            b"json",
            b"text/json",
            b"application/jsonx",
            b"application/json+x",
            b"application/xml",
            b"application+json",
            b"text/x+json",
            b"application/",
            b"+json",
            b"\xff\xfe",
        ];
        for v in yes {
            assert!(is_json_content_type(v), "{}", String::from_utf8_lossy(v));
        }
        for v in no {
            assert!(!is_json_content_type(v), "{}", String::from_utf8_lossy(v));
        }
    }
}
