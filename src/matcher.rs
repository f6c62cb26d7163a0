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
        if raw.hosts.is_empty() {
            return Err(ConfigError::new(
                "match.hosts",
                "at least one host is required (an exact name or a *.suffix wildcard)",
            ));
        }
        if raw.hosts.len() > MAX_HOSTS {
            return Err(ConfigError::new(
                "match.hosts",
                format!("at most {MAX_HOSTS} hosts per service"),
            ));
        }
        let mut hosts: Vec<HostPattern> = Vec::with_capacity(raw.hosts.len());
        for (i, written) in raw.hosts.iter().enumerate() {
            let path = format!("match.hosts[{i}]");
            let lower = written.to_ascii_lowercase();
            let name = std::str::from_utf8(strip_port(lower.as_bytes())).unwrap_or("");
            let pattern = match name.strip_prefix("*.") {
                Some(suffix) if valid_name(suffix) && !suffix.starts_with('[') => {
                    HostPattern::Wildcard(suffix.to_string())
                }
                None if valid_name(name) => HostPattern::Exact(name.to_string()),
                _ => {
                    return Err(ConfigError::new(
                        path,
                        format!(
                            "{written:?} is not a host: use an exact name (letters, digits, '-', \
                             '.', '_'; an IPv6 literal in brackets) or a wildcard *.suffix \
                             (a leading \"*.\" only)"
                        ),
                    ))
                }
            };
            if name.len() > MAX_LEN {
                return Err(ConfigError::new(path, "longer than 1024 bytes"));
            }
            if let Some(j) = hosts.iter().position(|h| *h == pattern) {
                return Err(ConfigError::new(
                    path,
                    format!("{written:?} is listed twice (also match.hosts[{j}])"),
                ));
            }
            hosts.push(pattern);
        }
        let reads_path = raw.path_prefixes.is_some();
        let written = raw.path_prefixes.unwrap_or_else(|| vec!["/".to_string()]);
        if written.is_empty() || written.len() > MAX_PREFIXES {
            return Err(ConfigError::new(
                "match.path_prefixes",
                format!("1 to {MAX_PREFIXES} prefixes, or leave the field out (every path)"),
            ));
        }
        for (i, p) in written.iter().enumerate() {
            let path = format!("match.path_prefixes[{i}]");
            if !p.starts_with('/')
                || p.len() > MAX_LEN
                || p.bytes()
                    .any(|c| c <= b' ' || c == b'?' || c == b'#' || c == 0x7f)
            {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "{p:?} is not a path prefix: it starts with '/', has no query ('?'), \
                         fragment ('#'), space or control character"
                    ),
                ));
            }
            if let Some(j) = written.iter().take(i).position(|o| o == p) {
                return Err(ConfigError::new(
                    path,
                    format!("{p:?} is listed twice (also match.path_prefixes[{j}])"),
                ));
            }
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
    /// Power-of-two sized; 0 = empty, else 1 + an index into `entries`.
    slots: Vec<u32>,
    entries: Vec<(Box<[u8]>, Routes)>,
}

impl Table {
    fn build(entries: Vec<(Box<[u8]>, Routes)>) -> Table {
        let size = (entries.len() * 2).max(1).next_power_of_two();
        let mut slots = vec![0u32; size];
        let mask = size - 1;
        for (n, (key, _)) in entries.iter().enumerate() {
            let mut i = fnv(key) as usize & mask;
            while let Some(slot) = slots.get_mut(i) {
                if *slot == 0 {
                    *slot = n as u32 + 1;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        Table { slots, entries }
    }

    fn get(&self, key: &[u8]) -> Option<&Routes> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = fnv(key) as usize & mask;
        // At most half the slots are taken: an empty one ends every probe sequence.
        loop {
            let n = (*self.slots.get(i)? as usize).checked_sub(1)?;
            let (k, routes) = self.entries.get(n)?;
            if **k == *key {
                return Some(routes);
            }
            i = (i + 1) & mask;
        }
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

    /// The matcher over `services` (name, match), in order. `path(i)` is the field path of
    /// service `i`'s `match` (`services[i].match`, or `match` for a single service). Refuses two
    /// services claiming the same host with the same prefix.
    pub fn build(
        services: &[(&str, &Match)],
        path: &dyn Fn(usize) -> String,
    ) -> Result<Matcher, ConfigError> {
        // (host key, is wildcard) -> routes, with the first claim of each (host, prefix) kept.
        let mut exact: Vec<(Box<[u8]>, Routes)> = Vec::new();
        let mut wildcard: Vec<(Box<[u8]>, Routes)> = Vec::new();
        let mut index: std::collections::BTreeMap<(&[u8], bool), usize> = Default::default();
        for (s, (_, m)) in services.iter().enumerate() {
            for (h, pattern) in m.hosts.iter().enumerate() {
                let (key, wild, list) = match pattern {
                    HostPattern::Exact(k) => (k.as_bytes(), false, &mut exact),
                    HostPattern::Wildcard(k) => (k.as_bytes(), true, &mut wildcard),
                };
                let at = *index.entry((key, wild)).or_insert_with(|| {
                    list.push((key.into(), Vec::new()));
                    list.len() - 1
                });
                let Some((_, routes)) = list.get_mut(at) else {
                    continue;
                };
                for prefix in &m.path_prefixes {
                    if let Some((_, other)) = routes.iter().find(|(p, _)| **p == *prefix.as_bytes())
                    {
                        let o = *other as usize;
                        let name = services.get(o).map_or("", |(n, _)| n);
                        let shown = if wild { "*." } else { "" };
                        return Err(ConfigError::new(
                            format!("{}.hosts[{h}]", path(s)),
                            format!(
                                "{shown}{} with path prefix {prefix:?} is already claimed by \
                                 {} ({name:?}); two services cannot share a host and prefix",
                                String::from_utf8_lossy(key),
                                path(o).trim_end_matches(".match")
                            ),
                        ));
                    }
                    routes.push((prefix.as_bytes().into(), s as u32));
                }
            }
        }
        for (_, routes) in exact.iter_mut().chain(wildcard.iter_mut()) {
            routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        }
        Ok(Matcher {
            everything: None,
            exact: Table::build(exact),
            wildcard: Table::build(wildcard),
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
