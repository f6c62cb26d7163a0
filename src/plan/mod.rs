//! The compiled plan: everything the request path needs, computed once at configure time from a
//! [`RawConfig`] (`compile`), and the routing decision it makes for a request (`decide`,
//! [`Plan::decide`]); `services`: the plugin's document, one service or several.

mod compile;
mod decide;
pub mod services;
#[cfg(test)]
mod tests;

use crate::brake::Guard;
use crate::check::ConfigError;
use crate::config::{parse, Attribution, RawConfig};
use crate::counting::business::Business;
use crate::counting::grpc::Grpc;
use crate::routing::cookies::{AssignCookie, Hold};
use crate::routing::flow::Flows;
use crate::routing::matcher::Match;
use crate::routing::stage::{Override, Pin};

/// Where a session key comes from, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A cookie, by its exact (case-sensitive) name.
    Cookie(String),
    /// A request header, by its lowercase name.
    Header(String),
}

/// One version of the service, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    pub weight: u32,
}

/// The runtime plan: everything the request path needs, computed once at configure time.
#[derive(Clone, Debug)]
pub struct Plan {
    pub service: String,
    /// The requests that are this service's; `None`: every request.
    pub match_: Option<Match>,
    /// Salt bytes hashed before the session key.
    pub salt: Vec<u8>,
    pub versions: Vec<Version>,
    /// `cumulative[i]` = sum of the weights of versions `0..=i`.
    pub cumulative: Vec<u64>,
    /// Sum of all weights (> 0).
    pub total_weight: u64,
    /// Index into `versions` of the version that gets requests without a session key.
    pub default_version: usize,
    pub sources: Vec<Source>,
    /// Lowercase.
    pub route_header: String,
    /// Lowercase.
    pub response_header: String,
    /// Where the served version comes from.
    pub attribution: Attribution,
    /// Stage-zero override (headers to strip, tokens to accept), when configured.
    pub override_: Option<Override>,
    /// Pins, in config order (the first match wins).
    pub pins: Vec<Pin>,
    /// Anonymous-session cookie, when configured. Its name is also the last session source.
    pub assign: Option<AssignCookie>,
    /// Lowercase; the request carries the session's cohort bucket upstream when set.
    pub bucket_header: Option<String>,
    /// The idle hold, when configured.
    pub hold: Option<Hold>,
    /// The signed flow cookie (`session.hold.flows`), when configured.
    pub flows: Option<Flows>,
    /// Lowercase; the response carries the decision reason when set.
    pub reason_header: Option<String>,
    /// Business rules and the body bound.
    pub business: Business,
    /// Counter flush interval in ms; 0 = every increment goes to Envoy at once.
    pub metrics_flush_ms: u32,
    /// Configure-time warnings (e.g. overrides disabled for want of a token), for the log.
    pub warnings: Vec<String>,
    /// The brake, when configured.
    pub guard: Option<Guard>,
    /// Request methods counted as writes (`canary_writes_total`), as written (methods are
    /// case-sensitive); empty: none, and `:method` is not read.
    pub write_methods: Vec<String>,
    /// gRPC status counting, when configured (`grpc`).
    pub grpc: Option<Grpc>,
}

/// Methods counted as writes when `write_methods` is not given.
pub const DEFAULT_WRITE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

impl Plan {
    /// How often this plan needs the root's tick, in ms: its counter flush interval; with a
    /// guard or flows it needs one even when it flushes at once (0); a guard's pool queries on ticks, so
    /// its `interval_ms` bounds it too; 0 when it needs none.
    pub fn tick_ms(&self) -> u32 {
        // The brake and the draining flows' gauge need ticks even when counters are not batched.
        let flush = match self.metrics_flush_ms {
            0 if self.guard.is_some() || self.flows.is_some() => {
                crate::config::DEFAULT_METRICS_FLUSH_MS
            }
            ms => ms,
        };
        match self.guard.as_ref().and_then(|g| g.pool.as_ref()) {
            Some(pool) if flush == 0 || pool.interval_ms < flush => pool.interval_ms,
            _ => flush,
        }
    }

    /// Parses and compiles a JSON configuration offline (no environment: `tokens_env` finds
    /// nothing, and `session.hold.flows` has no key: it neither signs nor accepts).
    pub fn from_json(bytes: &[u8]) -> Result<Plan, ConfigError> {
        Plan::try_from(parse(bytes)?)
    }

    /// Parses and compiles a JSON configuration; `env` reads the VM's environment variables
    /// (for `override.tokens_env`).
    pub fn from_json_with_env(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Plan, ConfigError> {
        Plan::compile(parse(bytes)?, env)
    }

    /// One line describing the compiled plan, for the configure-time log.
    pub fn summary(&self) -> String {
        // Appended piece by piece: `format!` and `join` here cost the module ~2 KB.
        let mut line = String::new();
        let mut put = |parts: &[&str]| parts.iter().for_each(|p| line.push_str(p));
        put(&["service=", &self.service, " versions="]);
        for (i, v) in self.versions.iter().enumerate() {
            let weight = v.weight.to_string();
            put(&[if i == 0 { "" } else { "," }, &v.name, ":", &weight]);
        }
        put(&[
            " default=",
            self.version_name(self.default_version),
            " sources=",
        ]);
        for (i, s) in self.sources.iter().enumerate() {
            let (kind, name) = match s {
                Source::Cookie(n) => ("cookie:", n),
                Source::Header(n) => ("header:", n),
            };
            put(&[if i == 0 { "" } else { "," }, kind, name]);
        }
        put(&[
            " route_header=",
            &self.route_header,
            " response_header=",
            &self.response_header,
        ]);
        if self.attribution == Attribution::ResponseHeader {
            put(&[" attribution=response_header"]);
        }
        if let Some(o) = &self.override_ {
            put(&[
                " override=",
                if o.enabled() { "enabled" } else { "disabled" },
            ]);
        }
        for p in &self.pins {
            let count = p.values.len().to_string();
            let version = self.version_name(p.version);
            put(&[" pin=", &p.header, ":", &count, "values->", version]);
        }
        if let Some(a) = &self.assign {
            put(&[" assign_cookie=", &a.name]);
        }
        if let Some(h) = &self.hold {
            put(&[" hold=", &h.cookie, ":", &h.idle_seconds.to_string(), "s"]);
        }
        if let Some(f) = &self.flows {
            put(&[" flows=", &f.cookie, ":", &f.drain_seconds.to_string(), "s"]);
        }
        if let Some(h) = &self.bucket_header {
            put(&[" bucket_header=", h]);
        }
        if let Some(h) = &self.reason_header {
            put(&[" reason_header=", h]);
        }
        if !self.business.rules.is_empty() {
            put(&[" business_metrics=", &self.business.rules.len().to_string()]);
        }
        put(&[" metrics_flush_ms=", &self.metrics_flush_ms.to_string()]);
        line
    }

    /// The index of the version called `name`.
    pub fn version_named(&self, name: &[u8]) -> Option<usize> {
        self.versions.iter().position(|v| v.name.as_bytes() == name)
    }

    /// The version name at `index` (an index produced by this plan).
    pub fn version_name(&self, index: usize) -> &str {
        self.versions.get(index).map_or("", |v| v.name.as_str())
    }

    /// The first version, in config order, whose cumulative weight is greater than `position`.
    /// `position` must be below `total_weight`; anything else falls back to the default version.
    pub fn pick(&self, position: u64) -> usize {
        self.cumulative
            .iter()
            .position(|&c| c > position)
            .unwrap_or(self.default_version)
    }
}

impl TryFrom<RawConfig> for Plan {
    type Error = ConfigError;

    /// Offline (tools, tests): no environment; `session.hold.flows` compiles without its key and
    /// neither signs nor accepts a flow cookie.
    fn try_from(raw: RawConfig) -> Result<Plan, ConfigError> {
        Plan::compile_with(raw, &|_| None, true)
    }
}
