//! Which service a request belongs to: a service's `match` (hosts, path prefixes), compiled, and
//! the [`Matcher`] over every service of a plugin instance.
//!
//! A leaf but for `check`. The rules are Envoy's virtual-host rules, so that the filter and the
//! route table agree on what a host is:
//!
//! - hosts are exact names or `*.suffix` wildcards (a leading `*.` only; `*.example.com` matches
//!   `a.example.com` and `a.b.example.com`, not `example.com`); the port is ignored on both sides;
//!   names compare case-insensitively (stored lowercase; an IPv6 literal keeps its brackets);
//! - the exact host wins over every wildcard, a longer wildcard suffix over a shorter one;
//! - within the chosen host the longest matching path prefix wins; a service without
//!   `path_prefixes` holds the prefix `/`, the lowest. Prefixes are plain string prefixes of the
//!   path without its query string, case-sensitive, as Envoy's route `prefix` (and Istio's
//!   `uri.prefix`): `/api` also matches `/api2`, write `/api/` for a segment;
//! - no fallback to a less specific host: a host whose prefixes all miss leaves the request
//!   unmatched.
//!
//! The lookup is one probe of a hash table for the exact host, then one probe per dot of the host
//! for the wildcards (longest suffix first): O(labels), whatever the number of services. It
//! lowercases the `:authority` value in place and allocates nothing.

use crate::check::ConfigError;
use serde::Deserialize;

/// Most hosts one service may list.
pub const MAX_HOSTS: usize = 256;
/// Most path prefixes one service may list.
pub const MAX_PREFIXES: usize = 256;
/// Longest host name or path prefix accepted.
const MAX_LEN: usize = 1024;

/// A service's `match` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub path_prefixes: Option<Vec<String>>,
}

/// A host pattern, lowercase, without its port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `shop.example.com`.
    Exact(String),
    /// `*.example.com`, stored as the suffix `example.com`.
    Wildcard(String),
}

/// A service's `match`, compiled: hosts, and the path prefixes (`["/"]` when none are given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub hosts: Vec<HostPattern>,
    pub path_prefixes: Vec<String>,
    /// `path_prefixes` was written (the `:path` is then read).
    pub reads_path: bool,
}

/// The host part of an authority (or a configured host), without the port: `[::1]:8080` →
/// `[::1]`, `shop.example.com:443` → `shop.example.com`.
pub fn strip_port(authority: &[u8]) -> &[u8] {
    let end = if authority.first() == Some(&b'[') {
        authority
            .iter()
            .position(|&c| c == b']')
            .map_or(authority.len(), |i| i + 1)
    } else {
        authority
            .iter()
            .position(|&c| c == b':')
            .unwrap_or(authority.len())
    };
    authority.get(..end).unwrap_or(authority)
}

fn valid_name(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
    }
    !host.is_empty()
        && host.len() <= MAX_LEN
        && !host.starts_with('.')
        && !host.ends_with('.')
        && !host.contains("..")
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
}

impl Match {
    /// Compiles a written `match`; refusals name `match.hosts[i]` / `match.path_prefixes[i]`.
    pub fn compile(raw: RawMatch) -> Result<Match, ConfigError> {
        if raw.hosts.is_empty() || raw.hosts.len() > MAX_HOSTS {
            return Err(ConfigError::new(
                "match.hosts",
                "1 to 256 hosts: at least one host is required",
            ));
        }
        let mut hosts: Vec<HostPattern> = Vec::with_capacity(raw.hosts.len());
        for (i, mut name) in raw.hosts.into_iter().enumerate() {
            name.make_ascii_lowercase();
            let end = strip_port(name.as_bytes()).len();
            name.truncate(end);
            let pattern = match name.strip_prefix("*.") {
                Some(suffix) if valid_name(suffix) && !suffix.starts_with('[') => {
                    HostPattern::Wildcard(suffix.to_string())
                }
                None if valid_name(&name) => HostPattern::Exact(name),
                _ => {
                    return Err(ConfigError::new(
                        format!("match.hosts[{i}]"),
                        "not a host: an exact name (letters, digits, '-', '.', '_'; an IPv6 \
                         literal in brackets) or a wildcard *.suffix (a leading \"*.\" only)",
                    ))
                }
            };
            if hosts.contains(&pattern) {
                return Err(ConfigError::new(
                    format!("match.hosts[{i}]"),
                    "listed twice",
                ));
            }
            hosts.push(pattern);
        }
        let reads_path = raw.path_prefixes.is_some();
        let written = raw.path_prefixes.unwrap_or_else(|| vec!["/".to_string()]);
        if written.is_empty() || written.len() > MAX_PREFIXES {
            return Err(ConfigError::new(
                "match.path_prefixes",
                "1 to 256 prefixes, or leave the field out (every path)",
            ));
        }
        for (i, p) in written.iter().enumerate() {
            let problem = if !p.starts_with('/')
                || p.len() > MAX_LEN
                || p.bytes()
                    .any(|c| c <= b' ' || c == b'?' || c == b'#' || c == 0x7f)
            {
                "not a path prefix: it starts with '/', has no query ('?'), fragment ('#'), \
                 space or control character"
            } else if written.iter().take(i).any(|o| o == p) {
                "listed twice"
            } else {
                continue;
            };
            return Err(ConfigError::new(
                format!("match.path_prefixes[{i}]"),
                problem,
            ));
        }
        Ok(Match {
            hosts,
            path_prefixes: written,
            reads_path,
        })
    }
}

/// FNV-1a: small and fixed (no random seed to draw in the VM). The keys are the operator's; a
/// client only picks which probe sequence it walks, bounded by the table's load (≤ 1/2).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The prefixes of one host, longest first: (prefix, service index).
type Routes = Vec<(Box<[u8]>, u32)>;

/// An open-addressing hash table from a host (or wildcard suffix) to its routes.
#[derive(Debug, Default)]
struct Table {
    /// Power-of-two sized, at least twice the keys; 0 = empty, else 1 + an index into `entries`.
    slots: Vec<u32>,
    entries: Vec<(Box<[u8]>, Routes)>,
}

impl Table {
    /// A table for at most `keys` keys.
    fn with_capacity(keys: usize) -> Table {
        Table {
            slots: vec![0; (keys * 2).max(1).next_power_of_two()],
            entries: Vec::new(),
        }
    }

    /// The slot where `key` is or would go, and its entry when present. At most half the slots
    /// are taken: an empty one ends every probe sequence.
    fn probe(&self, key: &[u8]) -> (usize, Option<usize>) {
        let mask = self.slots.len().saturating_sub(1);
        let mut i = fnv(key) as usize & mask;
        loop {
            let n = match self.slots.get(i) {
                Some(&n) if n > 0 => n as usize - 1,
                _ => return (i, None),
            };
            if self.entries.get(n).is_some_and(|(k, _)| **k == *key) {
                return (i, Some(n));
            }
            i = (i + 1) & mask;
        }
    }

    /// The routes of `key`, added empty if new.
    fn entry(&mut self, key: &[u8]) -> Option<&mut Routes> {
        let n = match self.probe(key) {
            (_, Some(n)) => n,
            (i, None) => {
                *self.slots.get_mut(i)? = self.entries.len() as u32 + 1;
                self.entries.push((key.into(), Vec::new()));
                self.entries.len() - 1
            }
        };
        self.entries.get_mut(n).map(|(_, r)| r)
    }

    fn get(&self, key: &[u8]) -> Option<&Routes> {
        let n = self.probe(key).1?;
        self.entries.get(n).map(|(_, r)| r)
    }
}

/// Which service a request belongs to, for every service of a plugin instance.
#[derive(Debug, Default)]
pub struct Matcher {
    /// The one service without `match` (a single-service document): every request is its own.
    everything: Option<usize>,
    exact: Table,
    wildcard: Table,
    reads_path: bool,
}

impl Matcher {
    /// Every request belongs to service 0 (a single-service document without `match`).
    pub fn everything() -> Matcher {
        Matcher {
            everything: Some(0),
            ..Matcher::default()
        }
    }

    /// The matcher over `services` (name, match), in order. `path(i)` is the field path prefix of
    /// service `i` (`services[i].`, or empty for a single service). Refuses two
    /// services claiming the same host with the same prefix.
    pub fn build(
        services: &[(&str, &Match)],
        path: &dyn Fn(usize) -> String,
    ) -> Result<Matcher, ConfigError> {
        let count = |wild: bool| {
            services
                .iter()
                .flat_map(|(_, m)| &m.hosts)
                .filter(|h| matches!(h, HostPattern::Wildcard(_)) == wild)
                .count()
        };
        let mut exact = Table::with_capacity(count(false));
        let mut wildcard = Table::with_capacity(count(true));
        for (s, (_, m)) in services.iter().enumerate() {
            for (h, pattern) in m.hosts.iter().enumerate() {
                let (key, shown, table) = match pattern {
                    HostPattern::Exact(k) => (k, "", &mut exact),
                    HostPattern::Wildcard(k) => (k, "*.", &mut wildcard),
                };
                let Some(routes) = table.entry(key.as_bytes()) else {
                    continue;
                };
                for prefix in &m.path_prefixes {
                    let p = prefix.as_bytes();
                    if let Some((_, other)) = routes.iter().find(|(q, _)| **q == *p) {
                        let o = *other as usize;
                        let name = services.get(o).map_or("", |(n, _)| n);
                        let mut why = String::new();
                        for part in [
                            shown,
                            key,
                            " with path prefix ",
                            prefix,
                            " is already claimed by ",
                            path(o).trim_end_matches('.'),
                            " (",
                            name,
                            "); two services cannot share a host and prefix",
                        ] {
                            why.push_str(part);
                        }
                        return Err(ConfigError::new(
                            format!("{}match.hosts[{h}]", path(s)),
                            why,
                        ));
                    }
                    // Longest first.
                    let at = routes
                        .iter()
                        .position(|(q, _)| q.len() < p.len())
                        .unwrap_or(routes.len());
                    routes.insert(at, (p.into(), s as u32));
                }
            }
        }
        Ok(Matcher {
            everything: None,
            exact,
            wildcard,
            reads_path: services.iter().any(|(_, m)| m.reads_path),
        })
    }

    /// Every request belongs to one service: nothing to read.
    pub fn matches_everything(&self) -> Option<usize> {
        self.everything
    }

    /// Some service has path prefixes: the `:path` is read.
    pub fn reads_path(&self) -> bool {
        self.reads_path
    }

    /// The service of a request: `authority` is the `:authority` value (lowercased here, in
    /// place), `path` the `:path` (only looked at when [`Matcher::reads_path`]).
    pub fn find(&self, authority: &mut [u8], path: Option<&[u8]>) -> Option<usize> {
        if let Some(s) = self.everything {
            return Some(s);
        }
        authority.make_ascii_lowercase();
        let host = strip_port(authority);
        let routes = self.exact.get(host).or_else(|| {
            // Longest suffix first: the leftmost dot (never the first byte: `*.` needs a label).
            host.iter()
                .enumerate()
                .skip(1)
                .filter(|(_, &c)| c == b'.')
                .find_map(|(i, _)| self.wildcard.get(host.get(i + 1..)?))
        })?;
        let path = path.unwrap_or(b"/");
        let end = path
            .iter()
            .position(|&c| c == b'?' || c == b'#')
            .unwrap_or(path.len());
        let path = path.get(..end).unwrap_or(path);
        routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, s)| *s as usize)
    }
}

#[cfg(test)]
mod tests;
