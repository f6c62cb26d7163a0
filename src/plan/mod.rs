//! The compiled plan: everything the request path needs, computed once at configure time from a
//! [`RawConfig`], and the routing decision it makes for a request ([`Plan::decide`]).
//!
//! Precedence, first match wins: override (valid token) → pin → flow (a valid flow cookie: the
//! version its flow started on) → hold (the idle-hold cookie: default version) → session key hash → assigned (a freshly minted anonymous id, hashed the same
//! way) → default version. The hashing itself is [`crate::routing::decision`]'s; one hash of salt ‖ key
//! gives both the version and the cohort bucket.

pub mod services;
#[cfg(test)]
mod tests;

use crate::brake::Guard;
use crate::check::{check_header_name, check_label, check_token, ConfigError};
use crate::config::{
    parse, Attribution, RawConfig, DEFAULT_HEADER, DEFAULT_METRICS_FLUSH_MS, MAX_METRICS_FLUSH_MS,
    MAX_VERSIONS,
};
use crate::counting::business::{self, Business};
use crate::counting::grpc::Grpc;
use crate::formats::cookie;
use crate::routing::cookies::{id_hex, AssignCookie, Hold, ID_LEN};
use crate::routing::decision::{Decision, FlowSeen, Reason, RequestView};
use crate::routing::flow::{Flows, Secrets};
use crate::routing::hash::{murmur3_32_concat, position, BUCKETS};
use crate::routing::matcher::Match;
use crate::routing::stage::{compile_override, compile_pins, Override, Pin};

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

impl Plan {
    /// Compiles a parsed configuration for a VM; `env` reads its environment variables
    /// (`session.hold.flows.key_env` must name a key there).
    pub fn compile(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Plan, ConfigError> {
        Plan::compile_with(raw, env, false)
    }

    /// Compiles a parsed configuration; `offline`: the flow key is not read.
    fn compile_with(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        offline: bool,
    ) -> Result<Plan, ConfigError> {
        check_label("service", &raw.service)?;
        let match_ = raw.match_.map(Match::compile).transpose()?;

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

        let (hold, flows) = match raw.session.hold {
            None => (None, None),
            Some(mut h) => {
                let hold = Hold::compile(&h)?;
                let flows = h.flows.take().map(|f| {
                    let secrets = match offline {
                        true => Secrets::Offline,
                        false => Secrets::Env(env),
                    };
                    Flows::compile(f, &|age| h.attributes(age), &raw.service, &secrets)
                });
                (Some(hold), flows.transpose()?)
            }
        };
        if let (Some(h), Some(f)) = (&hold, &flows) {
            if h.cookie == f.cookie {
                return Err(ConfigError::new(
                    "session.hold.flows.cookie",
                    format!(
                        "{:?} is also session.hold.cookie; the flow needs a cookie of its own",
                        f.cookie
                    ),
                ));
            }
        }
        let cookies_of_the_hold = [
            hold.as_ref().map(|h| ("session.hold.cookie", &h.cookie)),
            flows
                .as_ref()
                .map(|f| ("session.hold.flows.cookie", &f.cookie)),
        ];
        for (path, name) in cookies_of_the_hold.into_iter().flatten() {
            if sources
                .iter()
                .any(|s| matches!(s, Source::Cookie(n) if n == name))
            {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "{name:?} is also a session cookie (session.sources or \
                         session.assign_cookie); it needs a cookie of its own"
                    ),
                ));
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
        let bucket_header = raw
            .bucket_header
            .as_deref()
            .map(|h| check_header_name("bucket_header", h))
            .transpose()?;
        if let Some(b) = &bucket_header {
            check_bucket_header(b, &route_header, &override_, &sources, &pins)?;
        }
        let business = business::compile(raw.business_metrics, raw.max_body_bytes)?;
        let metrics_flush_ms = raw.metrics_flush_ms.unwrap_or(DEFAULT_METRICS_FLUSH_MS);
        if metrics_flush_ms > MAX_METRICS_FLUSH_MS {
            return Err(ConfigError::new(
                "metrics_flush_ms",
                format!("{metrics_flush_ms} is above {MAX_METRICS_FLUSH_MS} (one minute)"),
            ));
        }

        let grpc = raw.grpc.map(Grpc::compile).transpose()?;
        let names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
        let salt = raw.salt.unwrap_or_else(|| raw.service.clone()).into_bytes();
        if flows.is_none() && raw.guard.as_ref().is_some_and(|g| g.flows.is_some()) {
            return Err(ConfigError::new(
                "guard.flows",
                "needs session.hold.flows: without a flow cookie a trip moves every session",
            ));
        }
        let guard = raw
            .guard
            .map(|g| {
                let context = crate::brake::Context {
                    service: &raw.service,
                    salt: &salt,
                    env,
                    warnings: &mut warnings,
                };
                Guard::compile(
                    g,
                    &names,
                    default_version,
                    &business.rules,
                    grpc.as_ref(),
                    context,
                )
            })
            .transpose()?;
        let write_methods = match raw.write_methods {
            None => DEFAULT_WRITE_METHODS
                .iter()
                .map(|m| m.to_string())
                .collect(),
            Some(methods) => {
                for (i, m) in methods.iter().enumerate() {
                    check_token(&format!("write_methods[{i}]"), m)?;
                    if let Some(j) = methods.iter().take(i).position(|o| o == m) {
                        return Err(ConfigError::new(
                            format!("write_methods[{i}]"),
                            format!("{m:?} is listed twice (also write_methods[{j}])"),
                        ));
                    }
                }
                methods
            }
        };

        Ok(Plan {
            guard,
            write_methods,
            grpc,
            match_,
            service: raw.service,
            salt,
            versions,
            cumulative,
            total_weight: total,
            default_version,
            sources,
            route_header,
            response_header,
            attribution: raw.attribution.unwrap_or_default(),
            override_,
            pins,
            assign,
            bucket_header,
            hold,
            flows,
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
        let find = |name: &[u8]| self.version_named(name);
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
        let mut cookies = Cookies {
            first: None,
            all: None,
        };
        // The flow cookie, copied when present (keyed plans only) to be checked against the
        // session key. Looked for like the hold: no host call of its own.
        let flows = self.flows.as_ref().filter(|f| f.keyed());
        let flow_cookie = flows.and_then(|f| {
            cookies
                .find(request, &f.cookie, false)
                .filter(|v| !v.is_empty())
                .map(<[u8]>::to_vec)
        });
        let want_key = flows.is_some() && (flow_cookie.is_some() || request.write());
        let (hash, key) = match self.session_hash(request, &mut cookies, want_key) {
            Some((h, k)) => (Some(h), k),
            None => (None, None),
        };
        let mut flow = None;
        if let (Some(f), Some(value)) = (flows, &flow_cookie) {
            // A cookie without a session key binds nothing: invalid. No clock: not checked.
            let seen = match (&key, request.now_s()) {
                (Some(digest), Some(now)) => {
                    Some(f.check(value, digest, now, |n| self.version_named(n)))
                }
                (None, _) => Some((crate::routing::flow::Outcome::Invalid, None)),
                (Some(_), None) => None,
            };
            flow = seen.map(|(outcome, valid)| FlowSeen {
                outcome,
                version: valid.map(|(v, _)| v),
                expiry: valid.map_or(0, |(_, e)| e),
                draining: false,
            });
        }
        let by_key = self.decide_by_key(request, &mut cookies, hash);
        let decision = match flow.as_mut().filter(|f| f.version.is_some()) {
            Some(f) => {
                let version = f.version.unwrap_or(by_key.version);
                // Draining: without the cookie the session would be elsewhere.
                f.draining = by_key.version != version;
                Decision {
                    session: true,
                    ..Decision::new(version, Reason::Flow)
                }
            }
            None => by_key,
        };
        Decision {
            flow,
            key,
            ..decision
        }
    }

    /// Hold → hash → assigned → default, for a request whose session key hashed to `hash`.
    fn decide_by_key<R: RequestView>(
        &self,
        request: &mut R,
        cookies: &mut Cookies<R::Value>,
        hash: Option<u32>,
    ) -> Decision {
        if let Some(hold) = &self.hold {
            // Looked for without reading the other `Cookie` headers unless the session lookup
            // already did (browsers send one; HTTP/2 joins them): no host call for the hold alone.
            if cookies
                .find(request, &hold.cookie, false)
                .is_some_and(|v| !v.is_empty())
            {
                // A held visitor without a key still gets one (the application sees a session
                // id as usual); the hold, not its hash, decides.
                let minted = hash.is_none().then(|| self.mint(request)).flatten();
                return Decision {
                    session: hash.is_some() || minted.is_some(),
                    minted,
                    ..Decision::new(self.default_version, Reason::Hold)
                };
            }
        }
        if let Some(h) = hash {
            return self.hashed(h, Reason::Hash, None);
        }
        if let Some(id) = self.mint(request) {
            let h = murmur3_32_concat(&self.salt, &id, 0);
            return self.hashed(h, Reason::Assigned, Some(id));
        }
        Decision::new(self.default_version, Reason::Default)
    }

    /// A new anonymous session id, when `assign_cookie` is on and the host has randomness.
    fn mint<R: RequestView>(&self, request: &mut R) -> Option<[u8; ID_LEN]> {
        self.assign.as_ref()?;
        request.random_id().map(|random| id_hex(&random))
    }

    /// Steps 3–4 for the hash `h` of salt ‖ key, and the key's cohort bucket from the same hash
    /// (equal to [`crate::routing::hash::bucket`]).
    fn hashed(&self, h: u32, reason: Reason, minted: Option<[u8; ID_LEN]>) -> Decision {
        Decision {
            version: self.pick(position(h, self.total_weight)),
            reason,
            minted,
            // Below 10 000 by construction.
            bucket: Some(position(h, BUCKETS) as u16),
            session: true,
            flow: None,
            key: None,
        }
    }

    /// The version a stage-zero override asks for, if its token is accepted and the version is
    /// listed. Anything else (no token, wrong token, unknown version) is ignored silently.
    fn override_version<R: RequestView>(&self, request: &mut R) -> Option<usize> {
        let o = self.override_.as_ref().filter(|o| o.enabled())?;
        let wanted = request.get(&o.header)?;
        let version = self.version_named(wanted.as_ref())?;
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

    /// Sources are tried in config order; the first with a non-empty value gives the session
    /// key, and this returns its hash (salt ‖ key, step 2) and, when `digest`, its SHA-256.
    fn session_hash<R: RequestView>(
        &self,
        lookup: &mut R,
        cookies: &mut Cookies<R::Value>,
        digest: bool,
    ) -> Option<(u32, Option<[u8; 32]>)> {
        let hash = |k: &[u8]| {
            (
                murmur3_32_concat(&self.salt, k, 0),
                digest.then(|| crate::routing::flow::key_digest(k)),
            )
        };
        self.sources.iter().find_map(|source| match source {
            Source::Cookie(name) => cookies
                .find(lookup, name, true)
                .filter(|k| !k.is_empty())
                .map(hash),
            Source::Header(name) => lookup
                .get(name)
                .and_then(|v| trimmed_non_empty(v.as_ref()).map(hash)),
        })
    }
}

/// A request's `Cookie` headers, read on demand and at most once each way: the first `Cookie`
/// header is read once, whatever the number of cookies looked up. Only when a `Cookie` header
/// exists but lacks a wanted cookie are the other `Cookie` headers read (HTTP/1.1 clients may
/// send several; Envoy joins them only for HTTP/2).
struct Cookies<V> {
    first: Option<Option<V>>,
    all: Option<Vec<V>>,
}

impl<V: AsRef<[u8]>> Cookies<V> {
    /// The value of the first cookie called `name`. The other `Cookie` headers are read when
    /// the first lacks it and `read_all` is set; otherwise only if they were already read.
    fn find<R: RequestView<Value = V>>(
        &mut self,
        lookup: &mut R,
        name: &str,
        read_all: bool,
    ) -> Option<&[u8]> {
        let first = self.first.get_or_insert_with(|| lookup.get("cookie"));
        let header = first.as_ref()?;
        match cookie::find(header.as_ref(), name.as_bytes()) {
            Some(v) => Some(v),
            None => {
                if read_all && self.all.is_none() {
                    self.all = Some(lookup.get_all("cookie"));
                }
                let all = self.all.as_deref().unwrap_or_default();
                cookie::find_in(all.iter().skip(1).map(AsRef::as_ref), name.as_bytes())
            }
        }
    }
}

/// `bucket_header` must not be a header the decision reads: the filter rewrites it on every
/// request, so it would erase the route header's, an override's or a session's input.
fn check_bucket_header(
    bucket: &str,
    route_header: &str,
    override_: &Option<Override>,
    sources: &[Source],
    pins: &[Pin],
) -> Result<(), ConfigError> {
    let clash = if bucket == route_header {
        Some("route_header".to_string())
    } else if bucket == "cookie" {
        Some("the header session cookies travel in".to_string())
    } else if override_.as_ref().is_some_and(|o| o.header == bucket) {
        Some("override.header".to_string())
    } else if override_.as_ref().is_some_and(|o| o.token_header == bucket) {
        Some("override.token_header".to_string())
    } else if let Some(i) = sources
        .iter()
        .position(|s| matches!(s, Source::Header(n) if n == bucket))
    {
        Some(format!("session.sources[{i}].header"))
    } else {
        pins.iter()
            .position(|p| p.header == bucket)
            .map(|i| format!("pins[{i}].header"))
    };
    match clash {
        None => Ok(()),
        Some(other) => Err(ConfigError::new(
            "bucket_header",
            format!(
                "{bucket:?} is also {other}; the bucket header must be a header of its own \
                 (the filter overwrites it on every request)"
            ),
        )),
    }
}

fn trimmed_non_empty(v: &[u8]) -> Option<&[u8]> {
    let start = v.iter().position(|c| !matches!(c, b' ' | b'\t'))?;
    let end = v.iter().rposition(|c| !matches!(c, b' ' | b'\t'))?;
    v.get(start..=end)
}
