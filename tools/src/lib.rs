//! Developer tools, never shipped: what `make demo`, `make run`, `make bench` and `make soak` run.
//! They drive a real Envoy through the test harness (`sticky-canary-harness`: Envoy's lifecycle,
//! upstreams, the HTTP client) and read the filter's own configuration with the core crate.
//!
//! - [`demo`]: `make demo`, the whole story in one run, with [`checkout`], its two shops;
//! - [`ramp`]: the ramp in plain Envoy by route changes (`envoy/ramp/`), which the demo runs;
//! - [`bench`](mod@bench): `make bench` and `make soak`;
//! - [`simulate`] and [`mesh`]: `make simulate` (pure simulation of the statistics, no Envoy).
//!
//! The binaries (`src/bin/`): `sticky-canary-demo`, `sticky-canary-run`, `sticky-canary-bench`.

pub mod bench;
pub mod checkout;
pub mod demo;
pub mod demo_mesh;
pub mod mesh;
pub mod ramp;
pub mod simulate;

use std::path::Path;

/// A path relative to the repository root when it is inside it (for what the tools print).
pub fn display_path(p: &Path) -> String {
    let root = sticky_canary_harness::envoy::workspace_root();
    p.strip_prefix(&root)
        .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
}
