//! gRPC status per served version: the optional `grpc` block, what counts as a gRPC response,
//! and how a `grpc-status` value is labelled (the manual, "gRPC status per version").
//!
//! A gRPC server answers HTTP 200 and puts its outcome in the `grpc-status` trailer, or in the
//! headers of a trailers-only response; the filter counts each gRPC response once in
//! `canary_grpc_responses_total{service,version,grpc_status}`, `grpc_status` being the code
//! `0`–`16`, `invalid` or `missing` ([`LABELS`]: 19 series per version).

use crate::check::ConfigError;
use serde::Deserialize;

/// The server-fault codes counted as errors by default: UNKNOWN (2), DEADLINE_EXCEEDED (4),
/// UNIMPLEMENTED (12), INTERNAL (13), UNAVAILABLE (14), DATA_LOSS (15). The others say the
/// caller's request was refused (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, …), was
/// cancelled by the caller (CANCELLED) or lost a race (ABORTED); RESOURCE_EXHAUSTED (8) is
/// mostly a quota or rate limit on the caller, so it is not in the default set either.
pub const DEFAULT_ERROR_CODES: [u8; 6] = [2, 4, 12, 13, 14, 15];

/// The highest gRPC status code (UNAUTHENTICATED).
pub const MAX_CODE: u8 = 16;

/// The `grpc_status` label values: index `0..=16` the code, then `invalid` and `missing`.
pub const LABELS: [&str; 19] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "invalid", "missing",
];
/// The index of `invalid` in [`LABELS`]: a `grpc-status` that is not a decimal 0–16.
pub const INVALID: usize = 17;
/// The index of `missing` in [`LABELS`]: no `grpc-status` by the end of the stream.
pub const MISSING: usize = 18;

/// `grpc` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpc {
    #[serde(default)]
    pub error_codes: Option<Vec<u64>>,
}

/// The compiled `grpc` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grpc {
    /// The codes counted as errors: bit `c` set for code `c`.
    pub error_mask: u32,
}

/// The bit mask of a set of codes (each at most [`MAX_CODE`]).
fn mask(codes: &[u8]) -> u32 {
    codes.iter().fold(0, |m, c| m | 1 << c)
}

impl Grpc {
    /// The codes counted as errors, ascending.
    pub fn error_codes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=MAX_CODE).filter(|c| self.error_mask & 1 << c != 0)
    }
}

impl Grpc {
    pub fn compile(raw: RawGrpc) -> Result<Grpc, ConfigError> {
        let Some(codes) = raw.error_codes else {
            return Ok(Grpc {
                error_mask: mask(&DEFAULT_ERROR_CODES),
            });
        };
        if codes.is_empty() {
            return Err(ConfigError::new(
                "grpc.error_codes",
                "must list at least one gRPC status code (omit it for the default 2, 4, 12, 13, 14, 15)",
            ));
        }
        let mut error_mask = 0u32;
        for (i, &c) in codes.iter().enumerate() {
            let at = || format!("grpc.error_codes[{i}]");
            let code = u8::try_from(c).ok().filter(|c| *c <= MAX_CODE);
            let Some(code) = code else {
                return Err(ConfigError::new(
                    at(),
                    format!("{c} is not a gRPC status code (0–16)"),
                ));
            };
            if let Some(j) = codes.iter().take(i).position(|o| *o == c) {
                return Err(ConfigError::new(
                    at(),
                    format!("{c} is listed twice (also grpc.error_codes[{j}])"),
                ));
            }
            error_mask |= mask(&[code]);
        }
        Ok(Grpc { error_mask })
    }
}

/// Whether a `content-type` is gRPC's: `application/grpc`, alone or followed by `+` (a codec,
/// `application/grpc+proto`) or `;` (parameters), ASCII case-insensitive. gRPC-Web
/// (`application/grpc-web…`) is not: its status travels in the body, not in HTTP trailers.
pub fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type.len() >= GRPC.len()
        && content_type[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(
            content_type.get(GRPC.len()),
            None | Some(b'+' | b';' | b' ' | b'\t')
        )
}

/// 1 for a gRPC `content-type` ([`is_grpc`]), 0 otherwise (absent included). Shaped like
/// [`status_of`] so that the filter reads both through one instance of its header reader.
pub fn content_type_index(value: Option<&[u8]>) -> usize {
    usize::from(value.is_some_and(is_grpc))
}

/// The [`LABELS`] index of a `grpc-status` header or trailer: [`MISSING`] when absent, else
/// [`status_index`].
pub fn status_of(value: Option<&[u8]>) -> usize {
    value.map_or(MISSING, status_index)
}

/// The [`LABELS`] index of a `grpc-status` value: the code for a decimal `0`–`16` (one or two
/// ASCII digits), else [`INVALID`].
pub fn status_index(value: &[u8]) -> usize {
    match value {
        [d @ b'0'..=b'9'] => usize::from(d - b'0'),
        [a @ b'0'..=b'9', b @ b'0'..=b'9'] => {
            let n = usize::from(a - b'0') * 10 + usize::from(b - b'0');
            if n <= usize::from(MAX_CODE) {
                n
            } else {
                INVALID
            }
        }
        _ => INVALID,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(yes.as_bytes()), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web-text+proto",
            "application/grpcx",
            "application/json",
            "application/grp",
            "",
        ] {
            assert!(!is_grpc(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn status_values() {
        for (v, want) in [
            ("0", 0),
            ("2", 2),
            ("13", 13),
            ("16", 16),
            ("09", 9),
            ("17", INVALID),
            ("99", INVALID),
            ("abc", INVALID),
            ("", INVALID),
            (" 1", INVALID),
            ("-1", INVALID),
            ("013", INVALID),
            ("1.0", INVALID),
            ("99999999999999999999999", INVALID),
        ] {
            assert_eq!(status_index(v.as_bytes()), want, "{v:?}");
        }
        assert_eq!(LABELS[INVALID], "invalid");
        assert_eq!(LABELS[MISSING], "missing");
        assert_eq!(LABELS[16], "16");
    }

    #[test]
    fn error_codes() {
        let c = |codes: Option<Vec<u64>>| Grpc::compile(RawGrpc { error_codes: codes });
        let codes = |g: Grpc| g.error_codes().collect::<Vec<_>>();
        assert_eq!(codes(c(None).unwrap()), DEFAULT_ERROR_CODES);
        assert_eq!(
            codes(c(Some(vec![14, 0, 16])).unwrap()),
            [0, 14, 16],
            "ascending"
        );
        for (codes, path) in [
            (vec![], "grpc.error_codes"),
            (vec![2, 17], "grpc.error_codes[1]"),
            (vec![2, 4, 2], "grpc.error_codes[2]"),
            (vec![u64::MAX], "grpc.error_codes[0]"),
        ] {
            let e = c(Some(codes.clone())).expect_err("refused");
            assert_eq!(e.path, path, "{codes:?}: {e}");
        }
    }
}
