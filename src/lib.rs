//! sticky-canary: sticky per-session canary routing for Envoy, as a proxy-wasm filter.
//!
//! The crate is a pure core plus a thin host shell:
//! - [`config`]: JSON configuration → compiled [`config::Plan`] (refusals name the field path),
//!   read by `de`, a small serde deserializer that tracks that path;
//! - [`decision`]: session key → version (MurmurHash3 bucketing, flagd `fractional`-compatible);
//! - [`cookie`]: lenient `Cookie` header parsing;
//! - [`headers`]: bounds-checked decoding of the proxy-wasm header-map wire format;
//! - `filter` and `host` (wasm32 only): adapt the core to the proxy-wasm host ABI.
//!
//! Everything but `filter` builds and is tested on the host with `cargo test`.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod assign;
pub mod business;
pub mod config;
pub mod cookie;
mod de;
pub mod decimal;
pub mod decision;
pub mod headers;
pub mod json;
pub mod metrics;
pub mod stage;
pub mod stats;

#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(target_arch = "wasm32")]
mod host;

/// The crate version, logged when the VM starts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
