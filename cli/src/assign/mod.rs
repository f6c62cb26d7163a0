//! `sticky-canary assign`: the version, bucket and reason the filter gives a session key under a
//! plugin config, computed offline with the filter's own code.
//!
//! The config is compiled by `sticky_canary::plan::Plan::from_json` (refusals name the field
//! path); each key is carried the way the plan's first session source reads it (`Cookie:
//! NAME=KEY` or `NAME: KEY`), with `--held` also the hold cookie, and decided by
//! `Plan::decide`, whose bucket is checked against `sticky_canary::routing::hash::bucket` of the
//! plan's salt and the key. No override token or pin header is sent, so the reason is `hash`
//! (or `hold` with `--held`).
//!
//! Its flags are [`args`].

pub mod args;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use sticky_canary::plan::{Plan, Source};
use sticky_canary::routing::decision::Reason;
use sticky_canary::routing::hash::{bucket, bucket_digits};

/// Where the keys come from, besides the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeysFile {
    Path(PathBuf),
    Stdin,
}

/// A parsed `sticky-canary assign` command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `--config`: the plugin config, the JSON the plugin takes.
    pub plugin_config: PathBuf,
    pub keys: Vec<String>,
    pub keys_file: Option<KeysFile>,
    /// Every request also carries the config's hold cookie.
    pub held: bool,
    pub json: bool,
}

/// What the filter does with one session key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub key: String,
    pub version: String,
    /// Four digits, `0000`–`9999`: the bucket the filter sends upstream (with `bucket_header`);
    /// `-` when it sends none (a held request).
    pub bucket: String,
    pub reason: Reason,
}

impl Assignment {
    /// `key<TAB>version<TAB>bucket<TAB>reason`.
    pub fn line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}",
            self.key,
            self.version,
            self.bucket,
            self.reason.as_str()
        )
    }

    /// `{"key":…,"version":…,"bucket":…,"reason":…}`, in that order.
    pub fn json(&self) -> String {
        let q = |s: &str| serde_json::Value::from(s).to_string();
        format!(
            "{{\"key\":{},\"version\":{},\"bucket\":{},\"reason\":{}}}",
            q(&self.key),
            q(&self.version),
            q(&self.bucket),
            q(self.reason.as_str())
        )
    }
}

/// Compiles a plugin config (the JSON the plugin takes); the error names the field path.
pub fn load_plan(bytes: &[u8]) -> Result<Plan, String> {
    let plan = Plan::from_json(bytes).map_err(|e| format!("invalid config: {e}"))?;
    if plan.sources.is_empty() {
        return Err("invalid config: the plan has no session source".into());
    }
    Ok(plan)
}

/// Why the plan's first session source cannot carry `key` unchanged, if it cannot: a cookie
/// value is RFC 6265 cookie-octets (no whitespace, `"`, `,`, `;`, `\` or control characters), a
/// header value has no control characters (nor tabs, for the tab-separated output) and no
/// surrounding whitespace (Envoy trims it).
fn unusable(source: &Source, key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("an empty key is no session key".into());
    }
    match source {
        Source::Cookie(name) => key
            .bytes()
            .any(|b| b <= b' ' || b >= 0x7f || b"\",;\\".contains(&b))
            .then(|| {
                format!(
                    "cookie {name} cannot carry it: whitespace, '\"', ',', ';', '\\' or a \
                     non-ASCII or control character"
                )
            }),
        Source::Header(name) => {
            // A tab is a valid header character, but not in a tab-separated line.
            let bad = key.bytes().any(|b| b < b' ' || b == 0x7f) || key.trim() != key;
            bad.then(|| {
                format!(
                    "header {name} cannot carry it here: a tab, a control character or \
                     surrounding whitespace"
                )
            })
        }
    }
}

/// The filter's decision for one session key, carried by the plan's first session source; with
/// `held`, the request also carries the plan's hold cookie (`session.hold`).
pub fn assign(plan: &Plan, key: &str, held: bool) -> Result<Assignment, String> {
    let source = plan
        .sources
        .first()
        .ok_or_else(|| "the plan has no session source".to_string())?;
    if let Some(why) = unusable(source, key) {
        return Err(format!("key {key:?}: {why}"));
    }
    let hold = match (held, &plan.hold) {
        (false, _) => None,
        (true, Some(h)) => Some(format!("{}=1", h.cookie)),
        (true, None) => return Err("--held: the config has no session.hold".into()),
    };
    // One `Cookie` header, as a browser sends: the session cookie and the hold cookie together.
    let (name, value, cookie) = match source {
        Source::Cookie(name) => {
            let value = match &hold {
                None => format!("{name}={key}"),
                Some(h) => format!("{name}={key}; {h}"),
            };
            ("cookie", value, None)
        }
        Source::Header(name) => (name.as_str(), key.to_string(), hold),
    };
    let mut headers: Vec<(&str, &[u8])> = vec![(name, value.as_bytes())];
    if let Some(c) = &cookie {
        headers.push(("cookie", c.as_bytes()));
    }
    let mut view: &[(&str, &[u8])] = &headers;
    let decision = plan.decide(&mut view);
    // The filter's bucket is the published one of the key: anything else means the source did
    // not carry the key unchanged.
    if let Some(b) = decision.bucket {
        if b != bucket(&plan.salt, key.as_bytes()) {
            return Err(format!(
                "key {key:?}: the session source does not carry it unchanged"
            ));
        }
    }
    Ok(Assignment {
        key: key.to_string(),
        version: plan.version_name(decision.version).to_string(),
        bucket: decision.bucket.map_or_else(
            || "-".to_string(),
            |b| String::from_utf8_lossy(&bucket_digits(b)).into_owned(),
        ),
        reason: decision.reason,
    })
}

/// The keys of a keys file: one a line, `\r\n` or `\n`, surrounding whitespace trimmed, blank
/// lines skipped.
pub fn read_keys(reader: impl BufRead) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(|e| format!("cannot read the keys: {e}"))?;
        let key = line.trim();
        if !key.is_empty() {
            keys.push(key.to_string());
        }
    }
    Ok(keys)
}

/// Runs `sticky-canary assign`: one line (or JSON line) per key on `out`, a message per
/// unusable key on `err`. `Ok(true)` when every key was assigned; errors are exit-1 errors.
pub fn execute(
    config: &Config,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<bool, String> {
    let bytes = std::fs::read(&config.plugin_config)
        .map_err(|e| format!("cannot read {}: {e}", config.plugin_config.display()))?;
    let plan = load_plan(&bytes)?;
    let mut keys = config.keys.clone();
    match &config.keys_file {
        None => {}
        Some(KeysFile::Stdin) => keys.extend(read_keys(stdin)?),
        Some(KeysFile::Path(p)) => {
            let file =
                std::fs::File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            keys.extend(read_keys(std::io::BufReader::new(file))?);
        }
    }
    if keys.is_empty() {
        return Err("no keys: give KEY arguments or --keys-file".into());
    }
    let mut all = true;
    for key in &keys {
        let text = match assign(&plan, key, config.held) {
            Ok(a) if config.json => a.json(),
            Ok(a) => a.line(),
            Err(e) => {
                all = false;
                writeln!(err, "sticky-canary assign: {e}")
                    .map_err(|e| format!("cannot write: {e}"))?;
                continue;
            }
        };
        writeln!(out, "{text}").map_err(|e| format!("cannot write: {e}"))?;
    }
    out.flush().map_err(|e| format!("cannot write: {e}"))?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &str = r#"{"service":"checkout","salt":"s1",
        "versions":[{"name":"canary","weight":30},{"name":"stable","weight":70}],
        "session":{"sources":[{"cookie":"sid"},{"header":"x-user"}]}}"#;
    const HEADER: &str = r#"{"service":"checkout","salt":"s1",
        "versions":[{"name":"canary","weight":30},{"name":"stable","weight":70}],
        "session":{"sources":[{"header":"x-user"},{"cookie":"sid"}]}}"#;

    /// The version is the plan's bucketing of the key, the bucket the core's, whichever the
    /// source; so a key's bucket < 100·p says canary for weights canary p / stable 100−p.
    #[test]
    fn matches_the_core_for_many_keys() {
        for config in [COOKIE, HEADER] {
            let plan = load_plan(config.as_bytes()).unwrap();
            let mut canary = 0;
            for i in 0..5000 {
                let key = format!("user-{i}");
                let a = assign(&plan, &key, false).unwrap();
                assert_eq!(a.version, plan.version_name(plan.bucket(key.as_bytes())));
                let b = bucket(&plan.salt, key.as_bytes());
                assert_eq!(a.bucket, format!("{b:04}"));
                assert_eq!(a.reason, Reason::Hash);
                assert_eq!(a.version == "canary", b < 3000, "{key}");
                canary += usize::from(a.version == "canary");
            }
            assert!((1300..1700).contains(&canary), "{canary}");
        }
    }

    #[test]
    fn keys_a_source_cannot_carry() {
        let cookie = load_plan(COOKIE.as_bytes()).unwrap();
        let header = load_plan(HEADER.as_bytes()).unwrap();
        for key in ["", "a b", "a;b", "a,b", "\"ab\"", "é", "a\\b"] {
            let e = assign(&cookie, key, false).unwrap_err();
            assert!(e.contains("key"), "{key:?}: {e}");
        }
        for key in ["", " ab", "ab ", "a\u{1}b", "a\tb"] {
            assert!(assign(&header, key, false).is_err(), "{key:?}");
        }
        // A header carries what a cookie cannot.
        assert_eq!(
            assign(&header, "a b;c", false).unwrap().reason,
            Reason::Hash
        );
    }

    #[test]
    fn json_lines() {
        let plan = load_plan(HEADER.as_bytes()).unwrap();
        let a = assign(&plan, "say \"hi\"", false).unwrap();
        let line = a.json();
        assert!(
            line.starts_with(r#"{"key":"say \"hi\"","version":""#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["bucket"], a.bucket.as_str());
        assert_eq!(v["reason"], "hash");
        assert_eq!(v["version"], a.version.as_str());
    }

    /// With the hold cookie the filter's decision is `hold` on the default version, without a
    /// bucket, whichever the source; a config without a hold refuses `--held`.
    #[test]
    fn held_sessions() {
        let hold = r#","hold":{"cookie":"sc_hold","idle_seconds":900}}}"#;
        for config in [COOKIE, HEADER] {
            let plan = load_plan(config.replace("}]}}", &format!("}}]{hold}")).as_bytes());
            let plan = plan.unwrap();
            for i in 0..200 {
                let a = assign(&plan, &format!("k{i}"), true).unwrap();
                assert_eq!((a.version.as_str(), a.bucket.as_str()), ("stable", "-"));
                assert_eq!(a.reason, Reason::Hold);
                assert_eq!(
                    assign(&plan, &format!("k{i}"), false).unwrap().reason,
                    Reason::Hash
                );
            }
            let plain = load_plan(config.as_bytes()).unwrap();
            let e = assign(&plain, "k", true).unwrap_err();
            assert!(e.contains("no session.hold"), "{e}");
        }
    }

    #[test]
    fn keys_files() {
        let keys = read_keys("a\r\n\r\n  b  \n\n\t\nc\r\nd".as_bytes()).unwrap();
        assert_eq!(keys, ["a", "b", "c", "d"]);
        assert!(read_keys("".as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = COOKIE.replace("\"weight\":30", "\"weight\":-1");
        let e = load_plan(bad.as_bytes()).unwrap_err();
        assert!(e.contains("versions[0].weight"), "{e}");
        let e = load_plan(b"{").unwrap_err();
        assert!(e.starts_with("invalid config: "), "{e}");
    }
}
