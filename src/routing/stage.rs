//! Stage zero: the token-guarded override (QA reaches any version, weight 0 included) and pins
//! (allowlisted merchants/tenants go to a fixed version). Raw serde types, their compiled forms,
//! and constant-time token comparison.

use crate::check::{check_header_name, ConfigError};
use crate::routing::pinset::{PinList, PinSet};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// Default header naming the version a QA request asks for.
pub const DEFAULT_OVERRIDE_HEADER: &str = "x-canary-override";
/// Default header carrying the QA token.
pub const DEFAULT_TOKEN_HEADER: &str = "x-canary-token";
/// Shortest accepted token: 16 characters, so a token cannot be guessed by probing.
pub const MIN_TOKEN_LEN: usize = 16;

/// `override` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub token_header: Option<String>,
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub tokens_env: Option<String>,
}

/// One pin as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPin {
    pub header: String,
    pub values: PinValues,
    pub version: String,
}

/// `pins[].values` as written: each string appended straight into one byte arena as it is read
/// (no `String` per value). Empty strings are not kept, only where the first was.
#[derive(Debug, Default)]
pub struct PinValues {
    /// The non-empty values, duplicates included.
    pub list: PinList,
    /// How many strings the array held.
    pub count: usize,
    /// The index of the first empty string.
    pub first_empty: Option<usize>,
}

impl<'de> Deserialize<'de> for PinValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ValuesVisitor)
    }
}

/// The array of [`PinValues`].
struct ValuesVisitor;

impl<'de> Visitor<'de> for ValuesVisitor {
    type Value = PinValues;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PinValues, A::Error> {
        let mut values = PinValues::default();
        while seq.next_element_seed(Element(&mut values))?.is_some() {}
        Ok(values)
    }
}

/// One string of [`PinValues`], appended where it is read (borrowed from the document when it
/// has no escapes).
struct Element<'a>(&'a mut PinValues);

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Element<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let values = self.0;
        if v.is_empty() {
            values.first_empty = values.first_empty.or(Some(values.count));
        } else if !values.list.push(v.as_bytes()) {
            return Err(E::custom("the pinned values pass 4 GiB in all"));
        }
        values.count += 1;
        Ok(())
    }
}

/// The compiled override.
#[derive(Clone, Debug)]
pub struct Override {
    /// Lowercase.
    pub header: String,
    /// Lowercase.
    pub token_header: String,
    /// Accepted tokens (inline, then from the environment). Empty: overrides disabled, but both
    /// headers are still removed before the request goes upstream.
    tokens: Vec<Vec<u8>>,
}

impl Override {
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// True when `presented` equals one of the accepted tokens. Every token is compared in full,
    /// in time that depends only on the lengths, so timing reveals neither which token nor how
    /// many leading bytes matched.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        self.tokens
            .iter()
            .fold(false, |any, t| any | constant_time_eq(t, presented))
    }
}

/// Constant-time equality: the loop runs over the longer input whatever the contents.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// A compiled pin: header value in `values` → `version`.
#[derive(Clone, Debug)]
pub struct Pin {
    /// Lowercase.
    pub header: String,
    /// The distinct values.
    pub values: PinSet,
    /// Index into the plan's versions.
    pub version: usize,
}

/// A token is usable when it is long enough and made of visible ASCII other than `,`.
fn token_problem(t: &str) -> Option<&'static str> {
    if t.len() < MIN_TOKEN_LEN {
        Some("shorter than 16 characters")
    } else if !t.bytes().all(|c| c.is_ascii_graphic() && c != b',') {
        Some("contains characters other than visible ASCII (no spaces, no commas)")
    } else {
        None
    }
}

/// Compiles `override`. Tokens are never echoed into errors or warnings.
pub fn compile_override(
    raw: RawOverride,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Override, ConfigError> {
    let header = check_header_name(
        "override.header",
        raw.header.as_deref().unwrap_or(DEFAULT_OVERRIDE_HEADER),
    )?;
    let token_header = check_header_name(
        "override.token_header",
        raw.token_header.as_deref().unwrap_or(DEFAULT_TOKEN_HEADER),
    )?;
    if header == token_header {
        return Err(ConfigError::new(
            "override.token_header",
            "must differ from override.header",
        ));
    }
    let mut tokens = Vec::new();
    for (i, t) in raw.tokens.iter().enumerate() {
        if let Some(problem) = token_problem(t) {
            return Err(ConfigError::new(
                format!("override.tokens[{i}]"),
                format!("unusable token: {problem}"),
            ));
        }
        tokens.push(t.as_bytes().to_vec());
    }
    if let Some(var) = raw.tokens_env.as_deref() {
        if var.is_empty() {
            return Err(ConfigError::new(
                "override.tokens_env",
                "must name an environment variable",
            ));
        }
        match env(var) {
            None => warnings.push(format!(
                "override.tokens_env: environment variable {var} is not set in the filter's \
                 environment (wasm: Envoy vm_config.environment_variables, Istio vmConfig.env; \
                 native: the Envoy process's)"
            )),
            Some(list) => {
                for (i, t) in list.split(',').map(str::trim).enumerate() {
                    if t.is_empty() {
                        continue;
                    }
                    match token_problem(t) {
                        Some(problem) => warnings.push(format!(
                            "override.tokens_env: entry {i} of {var} ignored: {problem}"
                        )),
                        None => tokens.push(t.as_bytes().to_vec()),
                    }
                }
            }
        }
    }
    if tokens.is_empty() {
        warnings.push(
            "override: no usable token configured; overrides are disabled (the override headers \
             are still removed from requests)"
                .to_string(),
        );
    }
    Ok(Override {
        header,
        token_header,
        tokens,
    })
}

/// Compiles `pins`; `version_index` resolves a version name.
pub fn compile_pins(
    raw: Vec<RawPin>,
    version_index: &dyn Fn(&str) -> Option<usize>,
) -> Result<Vec<Pin>, ConfigError> {
    let mut pins = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let header = check_header_name(&format!("pins[{i}].header"), &p.header)?;
        if p.values.count == 0 {
            return Err(ConfigError::new(
                format!("pins[{i}].values"),
                "at least one value is required",
            ));
        }
        if let Some(j) = p.values.first_empty {
            return Err(ConfigError::new(
                format!("pins[{i}].values[{j}]"),
                "empty value (an empty header never matches)",
            ));
        }
        let Some(version) = version_index(&p.version) else {
            return Err(ConfigError::new(
                format!("pins[{i}].version"),
                format!("{:?} is not one of the listed versions", p.version),
            ));
        };
        pins.push(Pin {
            header,
            values: p.values.list.into_set(),
            version,
        });
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values go straight from the document into the arena: escaped or not, duplicates
    /// once, empty strings remembered by their index only.
    #[test]
    fn pin_values_read_into_the_arena() {
        let doc = br#"{"header": "X-M", "values": ["a", "b\u0041", "a", "", "\u00e9", ""], "version": "v"}"#;
        let raw: RawPin = crate::config::de::from_slice(doc).unwrap();
        assert_eq!((raw.values.count, raw.values.first_empty), (6, Some(3)));
        assert_eq!(raw.values.list.len(), 4);
        let same: RawPin = serde_json::from_slice(doc).unwrap();
        assert_eq!(format!("{raw:?}"), format!("{same:?}"));
        let err = compile_pins(vec![raw], &|_| Some(0)).unwrap_err();
        assert_eq!(err.path, "pins[0].values[3]");

        let doc =
            br#"{"header": "X-M", "values": ["a", "b\u0041", "a", "\u00e9"], "version": "v"}"#;
        let raw: RawPin = crate::config::de::from_slice(doc).unwrap();
        let pins = compile_pins(vec![raw], &|v| (v == "v").then_some(1)).unwrap();
        let p = &pins[0];
        assert_eq!(
            (p.header.as_str(), p.version, p.values.len()),
            ("x-m", 1, 3)
        );
        for (value, pinned) in [
            (&b"a"[..], true),
            (b"bA", true),
            ("\u{e9}".as_bytes(), true),
            (b"b\\u0041", false),
            (b"", false),
        ] {
            assert_eq!(p.values.contains(value), pinned, "{value:?}");
        }

        let raw: RawPin =
            crate::config::de::from_slice(br#"{"header": "x", "values": [], "version": "v"}"#)
                .unwrap();
        let err = compile_pins(vec![raw], &|_| Some(0)).unwrap_err();
        assert_eq!(
            (err.path.as_str(), err.reason.as_str()),
            ("pins[0].values", "at least one value is required")
        );
    }

    #[test]
    fn constant_time_eq_table() {
        let t = b"0123456789abcdef";
        assert!(constant_time_eq(t, b"0123456789abcdef"));
        assert!(
            !constant_time_eq(t, b"0123456789abcde"),
            "one character short"
        );
        assert!(!constant_time_eq(t, b"0123456789ABCDEF"), "upper-cased");
        assert!(!constant_time_eq(t, b"0123456789abcdefX"), "with a suffix");
        assert!(!constant_time_eq(t, b""));
        assert!(constant_time_eq(b"", b""));
    }

    fn env_with(var: &'static str, value: &'static str) -> impl Fn(&str) -> Option<String> {
        move |name| (name == var).then(|| value.to_string())
    }

    #[test]
    fn tokens_inline_and_from_env() {
        let raw = RawOverride {
            header: None,
            token_header: None,
            tokens: vec!["inline-token-0123456789".into()],
            tokens_env: Some("TOKENS".into()),
        };
        let mut warnings = Vec::new();
        let env = env_with(
            "TOKENS",
            " env-token-aaaaaaaaaaaa , ,short, env-token-bbbbbbbbbbbb,",
        );
        let o = compile_override(raw, &env, &mut warnings).unwrap();
        assert_eq!(o.header, DEFAULT_OVERRIDE_HEADER);
        assert_eq!(o.token_header, DEFAULT_TOKEN_HEADER);
        assert!(o.accepts(b"inline-token-0123456789"));
        assert!(o.accepts(b"env-token-aaaaaaaaaaaa"));
        assert!(o.accepts(b"env-token-bbbbbbbbbbbb"));
        assert!(!o.accepts(b"short"));
        assert!(!o.accepts(b" env-token-aaaaaaaaaaaa"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("entry 2") && !warnings[0].contains("short,"),
            "{warnings:?}"
        );
    }

    #[test]
    fn no_usable_token_disables_with_a_warning() {
        for (tokens_env, env_value) in [(None, None), (Some("T"), None), (Some("T"), Some(" , "))] {
            let raw = RawOverride {
                header: Some("X-QA".into()),
                token_header: Some("X-QA-Token".into()),
                tokens: vec![],
                tokens_env: tokens_env.map(String::from),
            };
            let mut warnings = Vec::new();
            let env = move |_: &str| env_value.map(String::from);
            let o = compile_override(raw, &env, &mut warnings).unwrap();
            assert!(!o.enabled());
            assert!(!o.accepts(b""));
            assert_eq!(
                (o.header.as_str(), o.token_header.as_str()),
                ("x-qa", "x-qa-token")
            );
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains("overrides are disabled")),
                "{warnings:?}"
            );
        }
    }

    #[test]
    fn bad_inline_tokens_are_refused_without_echoing_them() {
        for bad in [
            "too-short",
            "has a space in it!!",
            "comma,in,the,token,here",
        ] {
            let raw = RawOverride {
                header: None,
                token_header: None,
                tokens: vec!["good-token-0123456789".into(), bad.into()],
                tokens_env: None,
            };
            let err = compile_override(raw, &|_| None, &mut Vec::new()).unwrap_err();
            assert_eq!(err.path, "override.tokens[1]");
            assert!(!err.reason.contains(bad), "{err}");
        }
    }
}
