//! sticky-canary: sticky per-session canary routing for Envoy, as a proxy-wasm filter.
//!
//! A pure core plus a thin host shell. Every module but `host` builds and is tested on the host
//! with `cargo test`; none but `host` touches the proxy-wasm ABI. The import graph is a DAG (a unit test
//! below fails on a cycle); each line names what a module may import from the crate:
//!
//! - `check` (private): [`config::ConfigError`] and the name/token checks every section shares — a leaf;
//! - [`cookie`], [`decimal`], [`headers`], [`json`]: byte-level readers (Cookie header, exact
//!   decimals, the proxy-wasm header-map wire format, JSON Pointer and the JSON scanner) — leaves;
//! - [`stats`]: the statistical tests the gate (and later the filter) runs — a leaf;
//! - [`pinset`]: the pinned header values as one byte arena and hash table — a leaf;
//! - [`flow`] (check): the signed flow cookie (`session.hold.flows`), `guard.flows`, the draining flows;
//! - [`assign`] (check, flow): the cookies the filter sets (anonymous session, idle hold); [`stage`] (check, pinset): override and pins;
//!   [`business`] (check, decimal, json): business rules and body gating;
//! - [`matcher`] (check): a service's `match` (hosts, path prefixes) and the per-request lookup of
//!   the service among many;
//! - `de` (check, json): the configuration's serde deserializer, which keeps the field path;
//! - [`grpc`] (check): the `grpc` block, gRPC content types and `grpc-status` labels — a leaf;
//! - [`pool`] (check, de, json): the brake's `guard.pool`, compiled, its Prometheus query, the one
//!   reader of Prometheus answers, the pooled figures and the lease kept in shared data;
//! - [`guard`] (business, check, flow, grpc, pool, stats): the brake's `guard` block, compiled, its judgement and
//!   its shared-data record;
//! - [`config`] (assign, business, check, de, grpc, guard, matcher, stage): the JSON schema users write, parsed;
//! - [`decision`] (assign, flow): MurmurHash3 bucketing, `Reason`, `Decision`, `RequestView`;
//! - [`plan`] (assign, business, check, config, cookie, decision, flow, grpc, guard, matcher, stage): the compiled [`plan::Plan`]
//!   and its routing decision;
//! - [`services`] (check, config, de, json, matcher, plan): the plugin's document, one service or
//!   `{"services": [...]}`, compiled into plans and their [`matcher::Matcher`];
//! - [`metrics`] (business, decision, flow, grpc, plan, pool): metric names and the per-version catalogue;
//! - [`filter`] (assign, business, decision, flow, grpc, guard, headers, matcher, metrics, plan, pool, services): the request/response logic,
//!   against the [`filter::Host`] trait (a fake host in its unit tests);
//! - `host` (filter, metrics; wasm32 only): the one adapter to the proxy-wasm ABI.


pub mod assign;
pub mod business;
mod check;
pub mod config;
pub mod cookie;
mod de;
pub mod decimal;
pub mod decision;
pub mod flow;
pub mod grpc;
pub mod guard;
pub mod headers;
pub mod json;
pub mod matcher;
pub mod metrics;
pub mod pinset;
pub mod plan;
pub mod pool;
pub mod services;
pub mod stage;
pub mod stats;

pub mod filter;
#[cfg(target_arch = "wasm32")]
mod host;

/// The crate version, logged when the VM starts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The import graph of `src/` must stay a DAG: a module names another through `crate::…`, and no
/// chain of such names leads back to where it started. Same rules as a reader would apply: `lib.rs`
/// is the root, comments and the `#[cfg(test)] mod … { … }` block at the end of a file do not count.
#[cfg(test)]
mod module_graph {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    type Graph = BTreeMap<String, BTreeSet<String>>;

    fn ident(s: &str) -> Option<&str> {
        let end = s
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(s.len());
        let id = &s[..end];
        id.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            .then_some(id)
    }

    /// The modules a file's code names through `crate::`.
    fn imports(text: &str) -> BTreeSet<String> {
        // `#[cfg(test)] mod tests {`, not `#[cfg(test)] mod fake;` (a file, checked on its own).
        let inline_tests = text.match_indices("#[cfg(test)]\nmod ").find(|(i, m)| {
            let rest = &text[i + m.len()..];
            ident(rest).is_some_and(|id| rest[id.len()..].starts_with(" {"))
        });
        let code = match inline_tests {
            Some((i, _)) => &text[..i],
            None => text,
        };
        let mut out = BTreeSet::new();
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or("");
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    out.extend(
                        group
                            .split(',')
                            .filter_map(|item| ident(item.trim()))
                            .map(str::to_string),
                    );
                } else if let Some(id) = ident(rest) {
                    out.insert(id.to_string());
                }
            }
        }
        out
    }

    /// (top-level module, file text) for every `.rs` file under `dir`, `lib.rs` left out.
    fn sources(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            let module = top.map_or(stem.clone(), str::to_string);
            if path.is_dir() {
                sources(&path, Some(&module), out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !(top.is_none() && stem == "lib")
            {
                out.push((module, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    fn graph(files: &[(String, String)]) -> Graph {
        let mut g: Graph = files
            .iter()
            .map(|(m, _)| (m.clone(), BTreeSet::new()))
            .collect();
        for (m, text) in files {
            let deps: Vec<String> = imports(text)
                .into_iter()
                .filter(|d| d != m && g.contains_key(d))
                .collect();
            g.entry(m.clone()).or_default().extend(deps);
        }
        g
    }

    /// The first cycle found, as a path `a -> b -> a`.
    fn cycle(g: &Graph) -> Option<Vec<String>> {
        fn visit(
            g: &Graph,
            m: &str,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == m) {
                let mut c = path[i..].to_vec();
                c.push(m.to_string());
                return Some(c);
            }
            if done.contains(m) {
                return None;
            }
            path.push(m.to_string());
            for d in g.get(m).into_iter().flatten() {
                if let Some(c) = visit(g, d, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(m.to_string());
            None
        }
        let mut done = BTreeSet::new();
        g.keys()
            .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
    }

    fn show(g: &Graph) -> String {
        g.iter()
            .map(|(m, d)| {
                format!(
                    "{m} -> {}\n",
                    d.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect()
    }

    #[test]
    fn src_imports_form_a_dag() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            None,
            &mut files,
        );
        let g = graph(&files);
        assert!(g.len() > 10, "found the modules:\n{}", show(&g));
        if let Some(c) = cycle(&g) {
            panic!(
                "import cycle in src/: {}\n\nthe graph:\n{}",
                c.join(" -> "),
                show(&g)
            );
        }
    }

    #[test]
    fn the_check_finds_cycles_and_reads_imports_like_a_reader() {
        let files = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(m, t)| (m.to_string(), t.to_string()))
                .collect()
        };
        let g = graph(&files(&[
            ("a", "use crate::{b::X, c};\n"),
            ("b", "#[cfg(test)]\nmod fake;\nfn f() { crate::c::g() }\n"),
            (
                "c",
                "// crate::a in a comment\n#[cfg(test)]\nmod tests {\n use crate::a;\n}\n",
            ),
        ]));
        assert_eq!(show(&g), "a -> b, c\nb -> c\nc -> \n");
        assert_eq!(cycle(&g), None);
        let g = graph(&files(&[
            ("a", "use crate::b::X;\n"),
            ("b", "use crate::c::Y;\n"),
            ("c", "pub use crate::a::Z;\n"),
        ]));
        assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    }
}
