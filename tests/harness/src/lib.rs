//! Host-side test harness: drives the sticky-canary wasm filter under a real Envoy. Test code
//! only: nothing shipped depends on it; the developer tools (`tools/`: demo, run, bench) use it.
//!
//! - [`envoy`]: configs derived from the shipped `envoy/envoy.yaml`, Envoy's lifecycle (one
//!   launcher: [`envoy::Launch`] says how, e.g. pinned to a core for the bench);
//! - [`http`]: in-process HTTP/1.1 upstreams (one per version, echoing what they saw) and a raw
//!   HTTP/1.1 client able to send hostile requests;
//! - [`schema`]: validation of manifests against Kubernetes CRD schemas;
//! - [`shop`]: an upstream answering known business traffic (order headers, JSON bodies);
//! - [`brake`]: the brake's fixtures (the approval guard, a guarded plugin config, the tripped
//!   gauge);
//! - [`prometheus`]: a real Prometheus on loopback (scraping Envoys, its HTTP API);
//! - [`prom`]: reading Envoy's Prometheus output — the product CLI's parser
//!   (`sticky_canary_cli::prom`), re-exported, and the tests' lookup of a series
//!   ([`prom::ScrapeExt::get`]: a missing series fails the test);
//! - here: [`Fixture`] (one upstream per version of a plugin config, plus an Envoy in front of
//!   them), [`Observed`] (what one request showed), [`Keys`] and [`Rng`] (reproducible
//!   pseudo-random draws), and the small helpers tests and tools share ([`tempdir`],
//!   [`read_text`], [`files`], [`find_tool`], [`wrapped`]).

pub mod brake;
pub mod envoy;
pub mod flows;
pub mod http;
pub mod native;
pub mod prom;
pub mod prometheus;
pub mod ramp;
pub mod schema;
pub mod shop;

use envoy::{Envoy, EnvoyConfig, StartFailure};
use http::{Client, Request, Response, Upstream};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use sticky_canary::plan::Plan;

/// Upstreams for every version of a plugin config, and an Envoy routing to them.
pub struct Fixture {
    pub plan: Plan,
    pub upstreams: Vec<Upstream>,
    pub config: EnvoyConfig,
    pub envoy: Envoy,
}

impl Fixture {
    /// Starts one echo upstream per version in `plugin_config` and Envoy in front of them.
    pub fn start(plugin_config: &str) -> Fixture {
        Fixture::try_start(plugin_config).unwrap_or_else(|f| {
            panic!(
                "Envoy did not start (exit {:?}); log:\n{}",
                f.exit_code, f.log
            )
        })
    }

    pub fn try_start(plugin_config: &str) -> Result<Fixture, StartFailure> {
        let plan = Plan::from_json(plugin_config.as_bytes())
            .unwrap_or_else(|e| panic!("test plugin config is invalid: {e}"));
        let upstreams = upstreams_for(&plan, http::echo_handler);
        let config = fixture_config(&plan, plugin_config, &upstreams);
        let envoy = Envoy::start(&config)?;
        Ok(Fixture {
            plan,
            upstreams,
            config,
            envoy,
        })
    }

    /// Stops Envoy and starts a fresh one on the same upstreams with `plugin_config`.
    pub fn restart_with(self, plugin_config: &str) -> Fixture {
        let Fixture {
            upstreams, envoy, ..
        } = self;
        envoy.stop();
        let plan = Plan::from_json(plugin_config.as_bytes()).expect("valid plugin config");
        let config = fixture_config(&plan, plugin_config, &upstreams);
        let envoy = Envoy::start(&config)
            .unwrap_or_else(|f| panic!("Envoy did not restart; log:\n{}", f.log));
        Fixture {
            plan,
            upstreams,
            config,
            envoy,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.envoy.listener()).expect("connect to Envoy")
    }

    /// The version the published algorithm assigns to this session key.
    pub fn expected(&self, session_key: &str) -> &str {
        self.plan
            .version_name(self.plan.bucket(session_key.as_bytes()))
    }

    pub fn default_version(&self) -> &str {
        self.plan.version_name(self.plan.default_version)
    }
}

fn fixture_config(plan: &Plan, plugin_config: &str, upstreams: &[Upstream]) -> EnvoyConfig {
    EnvoyConfig::for_test(
        plugin_config,
        &addresses(upstreams),
        plan.version_name(plan.default_version),
    )
}

/// One upstream per version of `plan`, each answering with `handler(version name)`.
pub fn upstreams_for(plan: &Plan, handler: impl Fn(&str) -> http::Handler) -> Vec<Upstream> {
    plan.versions
        .iter()
        .map(|v| Upstream::start_with(&v.name, None, handler(&v.name)).expect("start upstream"))
        .collect()
}

/// The (name, address) of each upstream, as `EnvoyConfig::for_test` takes them.
pub fn addresses(upstreams: &[Upstream]) -> Vec<(&str, std::net::SocketAddr)> {
    upstreams.iter().map(|u| (u.name(), u.addr())).collect()
}

/// What one request through Envoy showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub status: u16,
    /// The upstream that answered (`x-upstream`), if any.
    pub served_by: Option<String>,
    /// Every value of the response tag header the client received.
    pub tags: Vec<String>,
    /// Every value of the route header the upstream received.
    pub route_seen: Vec<String>,
}

impl Observed {
    /// Reads a response from an echo upstream, for a plan's header names.
    pub fn from_response(plan: &Plan, r: &Response) -> Observed {
        let body = r.json();
        let route_seen = body
            .get("headers")
            .and_then(|h| h.as_array())
            .map(|hs| {
                hs.iter()
                    .filter_map(|pair| {
                        let name = pair.get(0)?.as_str()?;
                        (name.eq_ignore_ascii_case(&plan.route_header))
                            .then(|| pair.get(1)?.as_str().map(str::to_string))?
                    })
                    .collect()
            })
            .unwrap_or_default();
        Observed {
            status: r.status,
            served_by: r.header_str("x-upstream").map(str::to_string),
            tags: r
                .header_values(&plan.response_header)
                .into_iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
            route_seen,
        }
    }

    /// A request served by `version` in every respect: that upstream answered, it saw exactly
    /// one route header naming it, and the client got exactly one tag naming it.
    pub fn is_served_by(&self, version: &str) -> bool {
        self.status == 200
            && self.served_by.as_deref() == Some(version)
            && self.tags == [version]
            && self.route_seen == [version]
    }
}

impl Fixture {
    /// Sends `req` on `client` and reads what happened.
    pub fn observe(&self, client: &mut Client, req: &Request) -> Observed {
        let r = client.send(req).expect("request through Envoy");
        Observed::from_response(&self.plan, &r)
    }
}

/// A small seeded pseudo-random generator (xorshift64*), so that what tests and the bench draw
/// reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Deterministic pseudo-random session keys (16 hex digits from [`Rng`]), so failures reproduce.
pub struct Keys(Rng);

impl Keys {
    pub fn new(seed: u64) -> Keys {
        Keys(Rng::new(seed))
    }
}

impl Iterator for Keys {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        Some(format!("{:016x}", self.0.next_u64()))
    }
}

/// `n` session keys (drawn from `Keys::new(seed)`) that the published algorithm sends to
/// `version`.
pub fn keys_for(plan: &Plan, version: &str, n: usize, seed: u64) -> Vec<String> {
    Keys::new(seed)
        .filter(|k| plan.version_name(plan.bucket(k.as_bytes())) == version)
        .take(n)
        .collect()
}

/// The files below `dir` (recursively) whose extension is one of `extensions`, sorted.
pub fn files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
                .path()
        })
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for p in entries {
        if p.is_dir() {
            out.extend(files(&p, extensions));
        } else if p
            .extension()
            .is_some_and(|x| extensions.iter().any(|e| x == *e))
        {
            out.push(p);
        }
    }
    out
}

/// A fresh temporary directory named `<prefix>…`, removed on drop.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

/// A file's text (lossy UTF-8, e.g. a process's log), empty when it cannot be read.
pub fn read_text(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A command running `program` under `wrapper` (e.g. `taskset -c 1`, `nice -n 5`), or `program`
/// itself when `wrapper` is empty.
pub fn wrapped(wrapper: &[OsString], program: &Path) -> Command {
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A program on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// A tool the Makefile installs: `$env` when set, else `.venv/<venv_path>` when it is there, else
/// `name` on `PATH`.
pub fn find_tool(env: &str, venv_path: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let local = envoy::workspace_root().join(".venv").join(venv_path);
    if local.is_file() {
        return Some(local);
    }
    on_path(name)
}
