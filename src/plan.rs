//! The compiled plan: everything the request path needs, computed once at configure time from a
//! [`RawConfig`], and the routing decision it makes for a request ([`Plan::decide`]).
//!
//! Precedence, first match wins: override (valid token) → pin → session key hash → assigned (a
//! freshly minted anonymous id, hashed the same way) → default version. The hashing itself is
//! [`crate::decision`]'s.

use crate::assign::{id_hex, AssignCookie};
use crate::business::{self, Business};
use crate::check::{check_header_name, check_label, check_token, ConfigError};
use crate::config::{
    parse, RawConfig, DEFAULT_HEADER, DEFAULT_METRICS_FLUSH_MS, MAX_METRICS_FLUSH_MS, MAX_VERSIONS,
};
use crate::cookie;
use crate::decision::{murmur3_32_concat, position, Decision, Reason, RequestView};
use crate::stage::{compile_override, compile_pins, Override, Pin};

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
    /// Stage-zero override (headers to strip, tokens to accept), when configured.
    pub override_: Option<Override>,
    /// Pins, in config order (the first match wins).
    pub pins: Vec<Pin>,
    /// Anonymous-session cookie, when configured. Its name is also the last session source.
    pub assign: Option<AssignCookie>,
    /// Lowercase; the response carries the decision reason when set.
    pub reason_header: Option<String>,
    /// Business rules and the body bound.
    pub business: Business,
    /// Counter flush interval in ms; 0 = every increment goes to Envoy at once.
    pub metrics_flush_ms: u32,
    /// Configure-time warnings (e.g. overrides disabled for want of a token), for the log.
    pub warnings: Vec<String>,
}

impl Plan {
    /// Parses and compiles a JSON configuration (no environment: `tokens_env` finds nothing).
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
        if let Some(h) = &self.reason_header {
            put(&[" reason_header=", h]);
        }
        if !self.business.rules.is_empty() {
            put(&[" business_metrics=", &self.business.rules.len().to_string()]);
        }
        put(&[" metrics_flush_ms=", &self.metrics_flush_ms.to_string()]);
        line
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

    fn try_from(raw: RawConfig) -> Result<Plan, ConfigError> {
        Plan::compile(raw, &|_| None)
    }
}

impl Plan {
    /// Compiles a parsed configuration; `env` reads the VM's environment variables.
    pub fn compile(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Plan, ConfigError> {
        check_label("service", &raw.service)?;

        if raw.versions.is_empty() {
            return Err(ConfigError::new(
                "versions",
                "at least one version is required",
            ));
        }
        if raw.versions.len() > MAX_VERSIONS {
            return Err(ConfigError::new(
                "versions",
                format!(
                    "{} versions listed; at most {MAX_VERSIONS} are allowed",
                    raw.versions.len()
                ),
            ));
        }
        let mut versions: Vec<Version> = Vec::with_capacity(raw.versions.len());
        let mut cumulative = Vec::with_capacity(raw.versions.len());
        let mut total: u64 = 0;
        for (i, v) in raw.versions.into_iter().enumerate() {
            let path = format!("versions[{i}].name");
            check_label(&path, &v.name)?;
            if let Some(first) = versions.iter().position(|seen| seen.name == v.name) {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "duplicate version name {:?} (also versions[{first}])",
                        v.name
                    ),
                ));
            }
            total += u64::from(v.weight);
            cumulative.push(total);
            versions.push(Version {
                name: v.name,
                weight: v.weight,
            });
        }
        if total == 0 {
            return Err(ConfigError::new(
                "versions",
                "all weights are 0; at least one version needs a weight above 0",
            ));
        }
        if total > u64::from(u32::MAX) {
            return Err(ConfigError::new(
                "versions",
                format!(
                    "weights sum to {total}; the sum must not exceed {}",
                    u32::MAX
                ),
            ));
        }

        let default_version = match &raw.default_version {
            None => versions.len() - 1,
            Some(name) => versions
                .iter()
                .position(|v| &v.name == name)
                .ok_or_else(|| {
                    ConfigError::new(
                        "default_version",
                        format!("{name:?} is not one of the listed versions"),
                    )
                })?,
        };

        if raw.session.sources.is_empty() {
            return Err(ConfigError::new(
                "session.sources",
                "at least one source ({\"cookie\": NAME} or {\"header\": NAME}) is required",
            ));
        }
        let mut sources = Vec::with_capacity(raw.session.sources.len());
        for (i, s) in raw.session.sources.into_iter().enumerate() {
            let path = format!("session.sources[{i}]");
            let source = match (s.cookie, s.header) {
                (Some(name), None) => {
                    check_token(&format!("{path}.cookie"), &name)?;
                    Source::Cookie(name)
                }
                (None, Some(name)) => {
                    Source::Header(check_header_name(&format!("{path}.header"), &name)?)
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        path,
                        "has both `cookie` and `header`; a source is exactly one of them",
                    ))
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        path,
                        "has neither `cookie` nor `header`; a source is exactly one of them",
                    ))
                }
            };
            sources.push(source);
        }
        let assign = raw
            .session
            .assign_cookie
            .map(AssignCookie::compile)
            .transpose()?;
        if let Some(a) = &assign {
            // The assigned cookie is read as the last source, unless already listed.
            if !sources
                .iter()
                .any(|s| matches!(s, Source::Cookie(n) if n == &a.name))
            {
                sources.push(Source::Cookie(a.name.clone()));
            }
        }

        let route_header = check_header_name(
            "route_header",
            raw.route_header.as_deref().unwrap_or(DEFAULT_HEADER),
        )?;
        let response_header = check_header_name(
            "response_header",
            raw.response_header.as_deref().unwrap_or(DEFAULT_HEADER),
        )?;

        let reason_header = raw
            .reason_header
            .as_deref()
            .map(|h| check_header_name("reason_header", h))
            .transpose()?;
        let mut warnings = Vec::new();
        let override_ = raw
            .override_
            .map(|o| compile_override(o, env, &mut warnings))
            .transpose()?;
        let version_index = |name: &str| versions.iter().position(|v| v.name == name);
        let pins = compile_pins(raw.pins, &version_index)?;
        let business = business::compile(raw.business_metrics, raw.max_body_bytes)?;
        let metrics_flush_ms = raw.metrics_flush_ms.unwrap_or(DEFAULT_METRICS_FLUSH_MS);
        if metrics_flush_ms > MAX_METRICS_FLUSH_MS {
            return Err(ConfigError::new(
                "metrics_flush_ms",
                format!("{metrics_flush_ms} is above {MAX_METRICS_FLUSH_MS} (one minute)"),
            ));
        }

        let salt = raw.salt.unwrap_or_else(|| raw.service.clone()).into_bytes();
        Ok(Plan {
            service: raw.service,
            salt,
            versions,
            cumulative,
            total_weight: total,
            default_version,
            sources,
            route_header,
            response_header,
            override_,
            pins,
            assign,
            reason_header,
            business,
            metrics_flush_ms,
            warnings,
        })
    }
}

impl Plan {
    /// Steps 1–4 for one session key.
    pub fn bucket(&self, session_key: &[u8]) -> usize {
        let h = murmur3_32_concat(&self.salt, session_key, 0);
        self.pick(position(h, self.total_weight))
    }

    /// The version a cluster serves: a cluster named like a version (plain Envoy, one cluster per
    /// version), or an Istio subset cluster `outbound|<port>|<subset>|<host>` whose subset is a
    /// version. `None` for anything else (e.g. no cluster on a local reply).
    pub fn version_of_cluster(&self, cluster: &[u8]) -> Option<usize> {
        let find = |name: &[u8]| self.versions.iter().position(|v| v.name.as_bytes() == name);
        find(cluster).or_else(|| {
            let mut parts = cluster.split(|&c| c == b'|');
            match (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) {
                (Some(b"outbound"), Some(_port), Some(subset), Some(_host), None) => find(subset),
                _ => None,
            }
        })
    }

    /// Decides the version for a request.
    pub fn decide<R: RequestView>(&self, request: &mut R) -> Decision {
        if let Some(version) = self.override_version(request) {
            return Decision::new(version, Reason::Override);
        }
        if let Some(version) = self.pinned_version(request) {
            return Decision::new(version, Reason::Pin);
        }
        if let Some(version) = self.session_version(request) {
            return Decision::new(version, Reason::Hash);
        }
        if self.assign.is_some() {
            if let Some(random) = request.random_id() {
                let id = id_hex(&random);
                return Decision {
                    version: self.bucket(&id),
                    reason: Reason::Assigned,
                    minted: Some(id),
                };
            }
        }
        Decision::new(self.default_version, Reason::Default)
    }

    /// The version a stage-zero override asks for, if its token is accepted and the version is
    /// listed. Anything else (no token, wrong token, unknown version) is ignored silently.
    fn override_version<R: RequestView>(&self, request: &mut R) -> Option<usize> {
        let o = self.override_.as_ref().filter(|o| o.enabled())?;
        let wanted = request.get(&o.header)?;
        let version = self
            .versions
            .iter()
            .position(|v| v.name.as_bytes() == wanted.as_ref())?;
        let token = request.get(&o.token_header)?;
        o.accepts(token.as_ref()).then_some(version)
    }

    /// The version of the first pin whose header value is allowlisted.
    fn pinned_version<R: RequestView>(&self, request: &mut R) -> Option<usize> {
        self.pins.iter().find_map(|pin| {
            let value = request.get(&pin.header)?;
            pin.values.contains(value.as_ref()).then_some(pin.version)
        })
    }

    /// Sources are tried in config order; the first with a non-empty value gives the session key.
    /// The first `Cookie` header is read at most once, whatever the number of cookie sources.
    /// Only when a `Cookie` header exists but lacks a wanted cookie are the other `Cookie` headers
    /// read (HTTP/1.1 clients may send several; Envoy joins them only for HTTP/2).
    fn session_version<R: RequestView>(&self, lookup: &mut R) -> Option<usize> {
        let mut first_cookie: Option<Option<R::Value>> = None;
        let mut all_cookies: Option<Vec<R::Value>> = None;
        for source in &self.sources {
            let key = match source {
                Source::Cookie(name) => {
                    let first = first_cookie.get_or_insert_with(|| lookup.get("cookie"));
                    match first.as_ref() {
                        None => None,
                        Some(h) => match cookie::find(h.as_ref(), name.as_bytes()) {
                            Some(v) => Some(v),
                            None => {
                                let all =
                                    all_cookies.get_or_insert_with(|| lookup.get_all("cookie"));
                                cookie::find_in(
                                    all.iter().skip(1).map(AsRef::as_ref),
                                    name.as_bytes(),
                                )
                            }
                        },
                    }
                    .filter(|k| !k.is_empty())
                    .map(|k| self.bucket(k))
                }
                Source::Header(name) => lookup
                    .get(name)
                    .and_then(|v| trimmed_non_empty(v.as_ref()).map(|k| self.bucket(k))),
            };
            if key.is_some() {
                return key;
            }
        }
        None
    }
}

fn trimmed_non_empty(v: &[u8]) -> Option<&[u8]> {
    let start = v.iter().position(|c| !matches!(c, b' ' | b'\t'))?;
    let end = v.iter().rposition(|c| !matches!(c, b' ' | b'\t'))?;
    v.get(start..=end)
}
