//! Stage zero: the token-guarded override (QA reaches any version, weight 0 included) and pins
//! (allowlisted merchants/tenants go to a fixed version). Raw serde types, their compiled forms,
//! and constant-time token comparison.

use crate::check::{check_header_name, ConfigError};
use serde::Deserialize;
use std::collections::HashSet;

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
    pub values: Vec<String>,
    pub version: String,
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
    pub values: HashSet<Vec<u8>>,
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
                "override.tokens_env: environment variable {var} is not set in the VM \
                 (Envoy vm_config.environment_variables, Istio vmConfig.env)"
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
    raw.into_iter()
        .enumerate()
        .map(|(i, p)| {
            let header = check_header_name(&format!("pins[{i}].header"), &p.header)?;
            if p.values.is_empty() {
                return Err(ConfigError::new(
                    format!("pins[{i}].values"),
                    "at least one value is required",
                ));
            }
            if let Some(j) = p.values.iter().position(String::is_empty) {
                return Err(ConfigError::new(
                    format!("pins[{i}].values[{j}]"),
                    "empty value (an empty header never matches)",
                ));
            }
            let version = version_index(&p.version).ok_or_else(|| {
                ConfigError::new(
                    format!("pins[{i}].version"),
                    format!("{:?} is not one of the listed versions", p.version),
                )
            })?;
            Ok(Pin {
                header,
                values: p.values.into_iter().map(String::into_bytes).collect(),
                version,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
