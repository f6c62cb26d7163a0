//! Compiling a service's configuration into its [`Plan`]: every section checked and
//! precomputed once, refusals naming the field path.

use super::{Plan, Source, Version, DEFAULT_WRITE_METHODS};
use crate::brake::Guard;
use crate::check::{check_header_name, check_label, check_token, ConfigError};
use crate::config::{
    RawConfig, DEFAULT_HEADER, DEFAULT_METRICS_FLUSH_MS, MAX_METRICS_FLUSH_MS, MAX_VERSIONS,
};
use crate::counting::business;
use crate::counting::grpc::Grpc;
use crate::routing::cookies::{AssignCookie, Hold};
use crate::routing::flow::{Flows, Secrets};
use crate::routing::matcher::Match;
use crate::routing::stage::{compile_override, compile_pins, Override, Pin};

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
    pub(super) fn compile_with(
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
