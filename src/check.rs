//! Configuration refusals and the name checks every section of the configuration shares.
//!
//! A leaf module: it imports nothing from the crate, so every section (`config`, `plan`,
//! `assign`, `business`, `stage`, `de`) can use it without an import cycle.

use std::fmt;

/// A refused configuration: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path such as `versions[1].weight`; `(root)` when the document itself is unusable.
    pub path: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Version and service names: a Kubernetes label value (they become subset labels, header values
/// and metric labels): 1–63 characters, ASCII letters, digits, `-`, `_`, `.`, starting and ending
/// with a letter or digit.
pub(crate) fn check_label(path: &str, value: &str) -> Result<(), ConfigError> {
    let b = value.as_bytes();
    let ok_inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    let valid = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(ok_inner)
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if let Some(problem) = label_value_problem(value).filter(|_| valid) {
        return Err(ConfigError::new(
            path,
            format!("{value:?} {problem}; it becomes a metric label"),
        ));
    }
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!(
                "{value:?} is not a valid name: use 1-63 ASCII letters, digits, '-', '_' or '.', \
                 starting and ending with a letter or digit"
            ),
        ))
    }
}

/// RFC 9110 `tchar`: the characters allowed in header names and cookie names.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

pub(crate) fn check_token(path: &str, value: &str) -> Result<(), ConfigError> {
    if !value.is_empty() && value.bytes().all(is_tchar) {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{value:?} is not a valid name (RFC 9110 token characters, non-empty)"),
        ))
    }
}

/// Validates a header name and returns it lowercase (Envoy stores header names lowercase).
pub(crate) fn check_header_name(path: &str, value: &str) -> Result<String, ConfigError> {
    check_token(path, value)?;
    Ok(value.to_ascii_lowercase())
}

/// Characters and substrings a label value must not contain so that Envoy's and Istio's tag
/// extraction yields exactly our labels: `;` and `=` would break the delimiters, and Istio's
/// bootstrap adds unanchored tags (`cache.`, `component.`, `tag.`, `wasm_filter.`, `rbac.allowed`,
/// …) that would pull stray labels out of a value containing them.
pub fn label_value_problem(value: &str) -> Option<&'static str> {
    const ISTIO_TAG_PATTERNS: [&str; 10] = [
        "cache.",
        "component.",
        "tag.",
        "wasm_filter.",
        "rbac.allowed",
        "rbac.denied",
        ".shadow_allowed",
        ".shadow_denied",
        ".istio_dry_run_allow_",
        ".istio_dry_run_deny_",
    ];
    if value.contains("..") {
        Some("contains \"..\"")
    } else if ISTIO_TAG_PATTERNS.iter().any(|p| value.contains(p)) {
        Some("contains a pattern Istio's stats tags extract (cache., component., tag., wasm_filter., rbac.…)")
    } else {
        None
    }
}

/// The parts joined, as `[..].concat()` would, without its generic join (~1 KB of module).
pub(crate) fn cat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_that_would_confuse_tag_extraction() {
        for bad in ["v1..2", "tag.1", "cache.x", "a.rbac.allowed", "component.y"] {
            assert!(label_value_problem(bad).is_some(), "{bad}");
        }
        for good in ["v1.2.3", "canary", "checkout-api", "stable_2"] {
            assert!(label_value_problem(good).is_none(), "{good}");
        }
    }
}
