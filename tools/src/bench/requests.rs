//! The benchmark's requests: a browser-like API call with ~300 bytes of cookies and a distinct
//! session each, and the wrk script that sends them in turn. A variant with
//! [`Variant::flow_cookie`] gets a script of its own whose requests also carry a valid flow cookie
//! ([`FlowCookies`]), minted just before each run.

use super::variants::{plan, Variant};
use super::{env_num, now_unix};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use sticky_canary::plan::Plan;
use sticky_canary::routing::flow::key_digest;
use sticky_canary_harness::http::Request;

/// The Cookie header of the benchmark's requests: a few cookies, about 300 bytes, the session
/// cookie in the middle.
pub fn cookie_header(session: &str) -> String {
    format!(
        "_ga=GA1.2.1784419062.1763770000; _gid=GA1.2.402211867.1763770000; \
         consent=analytics%3Dtrue%2Cmarketing%3Dfalse%2Cv%3D2; session_id={session}; \
         cart=c_8f2a91d0e4b7e5a1; theme=dark; _fbp=fb.1.1763770000123.1987654321; locale=en-US; \
         ab_home=variant_b; recently_viewed=SKU-10442%2CSKU-20931%2CSKU-33019"
    )
}

/// The other request headers, as a browser-backed API call would carry them.
pub const REQUEST_PATH: &str = "/api/cart";

pub const REQUEST_HEADERS: &[(&str, &str)] = &[
    ("host", "shop.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    ),
    ("accept", "application/json"),
    ("accept-language", "en-US,en;q=0.9"),
];

/// One benchmark request for a session, for the harness client.
pub fn request(session: &str) -> Request {
    request_with_cookies(&cookie_header(session))
}

/// The benchmark request with this `Cookie` header.
fn request_with_cookies(cookies: &str) -> Request {
    let mut r = Request::get(REQUEST_PATH);
    for (n, v) in REQUEST_HEADERS {
        r = r.header(n, v);
    }
    r.header("cookie", cookies)
}

/// Valid flow cookies for the benchmark's sessions, signed with the key a variant's config gives
/// its VM (`session.hold.flows.key_env` in `vm_config.environment_variables`), as the filter
/// would have set them on a write.
pub struct FlowCookies {
    plan: Plan,
}

impl FlowCookies {
    /// The flows of `v`'s plugin config, compiled with the key of its VM environment.
    pub fn for_variant(v: &Variant) -> Result<FlowCookies, String> {
        let plan = plan(v)?;
        match &plan.flows {
            Some(f) if f.keyed() => Ok(FlowCookies { plan }),
            Some(_) => Err(format!("{}: session.hold.flows has no key", v.key)),
            None => Err(format!("{}: no session.hold.flows", v.key)),
        }
    }

    /// `name=value` of the flow cookie of `session`, issued at `now_s` (valid `drain_seconds`
    /// from then). It names the version the session's key hashes to, so that a request carrying
    /// it is routed, tagged and held as without it: what is added is the check (and a flow
    /// decision carries no bucket: the bucket header is removed instead of set, one host call
    /// either way).
    pub fn cookie(&self, session: &str, now_s: u64) -> Result<String, String> {
        let version = self.plan.version_name(self.plan.bucket(session.as_bytes()));
        let set = self
            .plan
            .flows
            .as_ref()
            .and_then(|f| f.set_cookie(&key_digest(session.as_bytes()), version, now_s))
            .ok_or("the flow cookie cannot be signed")?;
        // `Set-Cookie: name=value; Max-Age=…`: what the client sends back is `name=value`.
        Ok(set.split(';').next().unwrap_or_default().to_string())
    }

    /// The benchmark's `Cookie` header for `session` with its flow cookie last (where a browser
    /// puts the newest cookie).
    pub fn cookie_header(&self, session: &str, now_s: u64) -> Result<String, String> {
        Ok(format!(
            "{}; {}",
            cookie_header(session),
            self.cookie(session, now_s)?
        ))
    }
}

/// The benchmark request of `v` for a session: with its flow cookie (issued now) when the
/// variant's requests carry one.
pub fn request_for(v: &Variant, session: &str) -> Result<Request, String> {
    if !v.flow_cookie {
        return Ok(request(session));
    }
    let cookies = FlowCookies::for_variant(v)?.cookie_header(session, now_unix())?;
    Ok(request_with_cookies(&cookies))
}

/// The session keys of the benchmark's requests (deterministic).
pub fn session_keys(n: usize) -> Vec<String> {
    sticky_canary_harness::Keys::new(0x5eed_be4c)
        .take(n)
        .collect()
}

/// The end of a wrk script's `pool = { ... }` table and the `request` that cycles through it.
pub const WRK_POOL_NEXT: &str =
    "}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  if i > #pool then i = 1 end\n  return pool[i]\nend\n";

/// wrk's `done` hook: the run's counts and latencies as one `BENCH_JSON {...}` line.
pub const WRK_DONE: &str = r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"#;

/// The wrk script: `n` pre-built requests with distinct session cookies, sent in turn, and a
/// `done` hook printing wrk's own figures as one JSON line. With `n == 1` the one request is set
/// through `wrk.headers` and there is no per-request Lua `request()` call at all (wrk's fast path).
pub fn wrk_script(n: usize) -> String {
    let headers: Vec<String> = session_keys(n.max(1))
        .iter()
        .map(|k| cookie_header(k))
        .collect();
    wrk_script_of(&headers)
}

/// The wrk script of a variant whose requests carry flow cookies: [`wrk_script`]'s requests, each
/// with its session's valid flow cookie issued at `now_s`.
pub fn wrk_script_with_flows(n: usize, flows: &FlowCookies, now_s: u64) -> Result<String, String> {
    let headers = session_keys(n.max(1))
        .iter()
        .map(|k| flows.cookie_header(k, now_s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(wrk_script_of(&headers))
}

/// The wrk script sending one request per `Cookie` header, in turn.
fn wrk_script_of(cookie_headers: &[String]) -> String {
    let mut s = String::from(
        "-- Generated by sticky-canary-bench (tools/src/bench/requests.rs): the benchmark's requests\n\
         -- (distinct session cookies, sent in turn); done() prints wrk's figures as one JSON line.\n",
    );
    if let [only] = cookie_headers {
        let _ = writeln!(s, "wrk.method = \"GET\"\nwrk.path = \"{REQUEST_PATH}\"");
        for (name, v) in REQUEST_HEADERS {
            let _ = writeln!(s, "wrk.headers[\"{name}\"] = \"{v}\"");
        }
        let _ = writeln!(s, "wrk.headers[\"cookie\"] = \"{only}\"");
    } else {
        s.push_str("local pool = {\n");
        for k in cookie_headers {
            let mut raw = format!("GET {REQUEST_PATH} HTTP/1.1\\r\\n");
            for (name, v) in REQUEST_HEADERS {
                let _ = write!(raw, "{name}: {v}\\r\\n");
            }
            let _ = write!(raw, "cookie: {k}\\r\\n\\r\\n");
            let _ = writeln!(s, "  \"{raw}\",");
        }
        s.push_str(WRK_POOL_NEXT);
    }
    s.push_str(WRK_DONE);
    s
}

/// `BENCH_SESSIONS`: distinct session cookies in the wrk script (default 1000).
pub fn sessions() -> usize {
    env_num("BENCH_SESSIONS", 1000usize).max(1)
}

/// Writes the wrk script for `make bench`/`make soak` into `dir`.
pub(crate) fn write_script(dir: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let p = dir.join("wrk-requests.lua");
    fs::write(&p, wrk_script(sessions())).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

/// The wrk script a run of `v` sends: `shared` (from [`write_script`]), or for a variant whose
/// requests carry flow cookies its own `wrk-requests-<key>.lua` in the same directory, written
/// again with cookies issued now, so that they are valid whatever the length of the bench (they
/// expire `drain_seconds` after issue).
pub(crate) fn script_for(v: &Variant, shared: &Path) -> Result<PathBuf, String> {
    if !v.flow_cookie {
        return Ok(shared.to_path_buf());
    }
    let p = shared.with_file_name(format!("wrk-requests-{}.lua", v.key));
    let script = wrk_script_with_flows(sessions(), &FlowCookies::for_variant(v)?, now_unix())?;
    fs::write(&p, script).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}
