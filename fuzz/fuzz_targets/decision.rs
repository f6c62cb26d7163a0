//! `Plan::decide` on small valid plans and arbitrary header lists.
//!
//! The plan is written as JSON from a fixed template (weights, salt, default version, session
//! sources, assign cookie, override tokens and pins chosen by the fuzzer, names from small pools
//! so that requests can hit them) and must compile. The request is a header list
//! (`&[(&str, &[u8])]` implements `RequestView`; it never mints ids).
//!
//! Checks: `decide` never panics; the version index is in range; the same request decided twice
//! gives the same `Decision`; `Reason::Hash` never picks a version of weight 0; `Reason::Default`
//! is the default version; no id is minted; and the decision equals an independent model of the
//! the manual's precedence (override → pin → session key → default) and bucketing (MurmurHash3 x86_32
//! of salt ‖ key over a concatenated buffer, position in u128, linear cumulative scan).
//! `version_of_cluster` (which version served a response) agrees with its documented rule.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sticky_canary::plan::Plan;
use sticky_canary::formats::cookie;
use sticky_canary::routing::decision::Reason;

const COOKIES: [&str; 4] = ["session_id", "sid", "SID", "a"];
const SOURCE_HEADERS: [&str; 3] = ["x-user-id", "X-Tenant", "x-session"];
const REQUEST_HEADERS: [&str; 10] = [
    "cookie",
    "Cookie",
    "x-user-id",
    "X-USER-ID",
    "x-tenant",
    "x-session",
    "x-canary-override",
    "x-canary-token",
    "X-Canary-Token",
    "x-other",
];
const TOKENS: [&str; 3] = [
    "0123456789abcdef",
    "qa-token-qa-token-1",
    "ZZZZZZZZZZZZZZZZZ",
];
const PIN_VALUES: [&str; 3] = ["tenant-a", "merchant 42", "é"];
const OVERRIDE_HEADER: &str = "x-canary-override";
const TOKEN_HEADER: &str = "x-canary-token";

#[derive(Arbitrary, Debug)]
enum SourceSpec {
    Cookie(u8),
    Header(u8),
}

#[derive(Arbitrary, Debug)]
struct PinSpec<'a> {
    header: u8,
    values: Vec<Text<'a>>,
    version: u8,
}

#[derive(Arbitrary, Debug)]
enum Text<'a> {
    Pool(u8),
    Raw(&'a str),
}

/// A header value: raw bytes, or something likely to matter.
#[derive(Arbitrary, Debug)]
enum ValueSpec<'a> {
    Raw(&'a [u8]),
    VersionName(u8),
    Token(u8),
    PinValue(u8),
    Cookie(u8, &'a [u8]),
    Padded(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    salt: Option<&'a str>,
    weights: Vec<u32>,
    default: Option<u8>,
    sources: Vec<SourceSpec>,
    assign: Option<u8>,
    override_tokens: Option<Vec<u8>>,
    pins: Vec<PinSpec<'a>>,
    headers: Vec<(u8, ValueSpec<'a>)>,
    cluster: ClusterSpec<'a>,
}

/// The upstream cluster that served the response (`Plan::version_of_cluster`).
#[derive(Arbitrary, Debug)]
enum ClusterSpec<'a> {
    Raw(&'a [u8]),
    Version(u8),
    /// `outbound|<port>|<subset>|<host>` with a version name (or not) as the subset.
    Istio(u16, ValueSpec<'a>, &'a [u8]),
}

fn pick<'t>(pool: &[&'t str], i: u8) -> &'t str {
    pool[usize::from(i) % pool.len()]
}

fn version_name(i: usize) -> String {
    format!("v{i}")
}

/// The resolved configuration, as the model sees it.
struct Spec {
    salt: Vec<u8>,
    weights: Vec<u32>,
    default: usize,
    /// (is_cookie, name as configured)
    sources: Vec<(bool, String)>,
    tokens: Vec<String>,
    /// (lowercase header, values, version index)
    pins: Vec<(String, Vec<String>, usize)>,
}

fn build(input: &Input<'_>) -> (serde_json::Value, Spec) {
    let cap = u32::MAX / 16;
    let mut weights: Vec<u32> = input
        .weights
        .iter()
        .take(16)
        .map(|w| w % (cap + 1))
        .collect();
    if weights.is_empty() {
        weights.push(1);
    }
    if weights.iter().all(|&w| w == 0) {
        *weights.last_mut().unwrap() = 1;
    }
    let n = weights.len();
    let versions: Vec<_> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"name": version_name(i), "weight": w}))
        .collect();
    let mut sources: Vec<(bool, String)> = input
        .sources
        .iter()
        .take(4)
        .map(|s| match *s {
            SourceSpec::Cookie(i) => (true, pick(&COOKIES, i).to_string()),
            SourceSpec::Header(i) => (false, pick(&SOURCE_HEADERS, i).to_string()),
        })
        .collect();
    if sources.is_empty() {
        sources.push((false, SOURCE_HEADERS[0].to_string()));
    }
    let mut config = json!({
        "service": "svc",
        "versions": versions,
        "session": {
            "sources": sources.iter().map(|(c, name)| if *c { json!({"cookie": name}) } else { json!({"header": name}) }).collect::<Vec<_>>(),
        },
    });
    let salt = match input.salt {
        Some(s) => {
            config["salt"] = json!(s);
            s.as_bytes().to_vec()
        }
        None => b"svc".to_vec(),
    };
    let default = match input.default {
        Some(d) => {
            let d = usize::from(d) % n;
            config["default_version"] = json!(version_name(d));
            d
        }
        None => n - 1,
    };
    if let Some(i) = input.assign {
        let name = pick(&COOKIES, i);
        config["session"]["assign_cookie"] = json!({"name": name});
        if !sources.iter().any(|(c, s)| *c && s == name) {
            sources.push((true, name.to_string()));
        }
    }
    let mut tokens = Vec::new();
    if let Some(t) = &input.override_tokens {
        tokens = t
            .iter()
            .take(3)
            .map(|&i| pick(&TOKENS, i).to_string())
            .collect();
        config["override"] = json!({"tokens": tokens});
    }
    let pins: Vec<(String, Vec<String>, usize)> = input
        .pins
        .iter()
        .take(3)
        .map(|p| {
            let mut values: Vec<String> = p
                .values
                .iter()
                .take(4)
                .map(|v| match *v {
                    Text::Pool(i) => pick(&PIN_VALUES, i).to_string(),
                    Text::Raw(s) => s.to_string(),
                })
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                values.push(PIN_VALUES[0].to_string());
            }
            let header = pick(&SOURCE_HEADERS, p.header).to_string();
            (header, values, usize::from(p.version) % n)
        })
        .collect();
    if !pins.is_empty() {
        config["pins"] = pins
            .iter()
            .map(|(h, values, v)| json!({"header": h, "values": values, "version": version_name(*v)}))
            .collect();
    }
    let pins = pins
        .into_iter()
        .map(|(h, values, v)| (h.to_ascii_lowercase(), values, v))
        .collect();
    let spec = Spec {
        salt,
        weights,
        default,
        sources,
        tokens,
        pins,
    };
    (config, spec)
}

fn value_bytes(v: &ValueSpec<'_>, n: usize) -> Vec<u8> {
    match *v {
        ValueSpec::Raw(b) => b.to_vec(),
        ValueSpec::VersionName(i) => version_name(usize::from(i) % (n + 1)).into_bytes(),
        ValueSpec::Token(i) => pick(&TOKENS, i).as_bytes().to_vec(),
        ValueSpec::PinValue(i) => pick(&PIN_VALUES, i).as_bytes().to_vec(),
        ValueSpec::Cookie(i, b) => [pick(&COOKIES, i).as_bytes(), b"=", b].concat(),
        ValueSpec::Padded(b) => [b" \t", b, b"\t "].concat(),
    }
}

/// First value of a header, names compared case-insensitively.
fn get<'h>(headers: &[(&str, &'h [u8])], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn bucket(spec: &Spec, key: &[u8]) -> usize {
    let input = [spec.salt.as_slice(), key].concat();
    let h = murmur3::murmur3_32(&mut std::io::Cursor::new(input), 0).unwrap();
    let total: u128 = spec.weights.iter().map(|&w| u128::from(w)).sum();
    let position = (u128::from(h) * total) >> 32;
    let mut cumulative = 0u128;
    for (i, &w) in spec.weights.iter().enumerate() {
        cumulative += u128::from(w);
        if cumulative > position {
            return i;
        }
    }
    unreachable!("position {position} ≥ total {total}")
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

fn model(spec: &Spec, headers: &[(&str, &[u8])]) -> (usize, Reason) {
    let names: Vec<String> = (0..spec.weights.len()).map(version_name).collect();
    if !spec.tokens.is_empty() {
        if let (Some(wanted), Some(token)) =
            (get(headers, OVERRIDE_HEADER), get(headers, TOKEN_HEADER))
        {
            if let Some(v) = names.iter().position(|n| n.as_bytes() == wanted) {
                if spec.tokens.iter().any(|t| t.as_bytes() == token) {
                    return (v, Reason::Override);
                }
            }
        }
    }
    for (header, values, version) in &spec.pins {
        if let Some(v) = get(headers, header) {
            if values.iter().any(|x| x.as_bytes() == v) {
                return (*version, Reason::Pin);
            }
        }
    }
    let cookies: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .map(|(_, v)| *v)
        .collect();
    for (is_cookie, name) in &spec.sources {
        let key = if *is_cookie {
            cookies
                .iter()
                .find_map(|h| cookie::find(h, name.as_bytes()))
        } else {
            get(headers, name).map(trim)
        };
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            return (bucket(spec, key), Reason::Hash);
        }
    }
    (spec.default, Reason::Default)
}

/// `version_of_cluster`, from its documentation: a cluster named like a version, or exactly
/// `outbound|<port>|<subset>|<host>` whose subset is a version.
fn cluster_model(names: &[String], cluster: &[u8]) -> Option<usize> {
    let find = |n: &[u8]| names.iter().position(|v| v.as_bytes() == n);
    if let Some(i) = find(cluster) {
        return Some(i);
    }
    let parts: Vec<&[u8]> = cluster.split(|&c| c == b'|').collect();
    match parts.as_slice() {
        [b"outbound", _, subset, _] => find(subset),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let (config, spec) = build(&input);
    let text = config.to_string();
    let plan = match Plan::from_json(text.as_bytes()) {
        Ok(plan) => plan,
        Err(e) => panic!("template config refused: {e}\n{text}"),
    };
    assert_eq!(plan.versions.len(), spec.weights.len());
    assert_eq!(plan.default_version, spec.default);

    let n = spec.weights.len();
    let values: Vec<(&str, Vec<u8>)> = input
        .headers
        .iter()
        .take(12)
        .map(|(i, v)| (pick(&REQUEST_HEADERS, *i), value_bytes(v, n)))
        .collect();
    let headers: Vec<(&str, &[u8])> = values.iter().map(|(n, v)| (*n, v.as_slice())).collect();

    let mut view: &[(&str, &[u8])] = &headers;
    let d = plan.decide(&mut view);
    let mut view: &[(&str, &[u8])] = &headers;
    let again = plan.decide(&mut view);
    assert_eq!(d, again, "decide is not deterministic");
    assert!(d.version < n, "version {} out of range ({n})", d.version);
    assert_eq!(d.minted, None);
    assert_ne!(d.reason, Reason::Assigned, "a header list never mints ids");
    match d.reason {
        Reason::Hash => assert!(
            spec.weights[d.version] > 0,
            "hash picked weight-0 version {}",
            d.version
        ),
        Reason::Default => assert_eq!(d.version, plan.default_version),
        _ => {}
    }
    let want = model(&spec, &headers);
    let names: Vec<String> = (0..n).map(version_name).collect();
    let cluster = match &input.cluster {
        ClusterSpec::Raw(b) => b.to_vec(),
        ClusterSpec::Version(i) => version_name(usize::from(*i) % (n + 1)).into_bytes(),
        ClusterSpec::Istio(port, subset, host) => [
            format!("outbound|{port}|").as_bytes(),
            &value_bytes(subset, n),
            b"|",
            host,
        ]
        .concat(),
    };
    let served = plan.version_of_cluster(&cluster);
    assert!(served.is_none_or(|v| v < n));
    assert_eq!(
        served,
        cluster_model(&names, &cluster),
        "version_of_cluster({:?})",
        String::from_utf8_lossy(&cluster)
    );
    assert_eq!(
        (d.version, d.reason),
        want,
        "decision differs from the model\n{text}\n{headers:?}"
    );
});
