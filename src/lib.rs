//! sticky-canary: sticky per-session canary routing for Envoy, as a proxy-wasm filter.
//!
//! A pure core plus a thin host shell. Every module but `abi` builds and is tested on the host
//! with `cargo test`; none but `abi` touches the proxy-wasm ABI. Each folder depends only on the
//! ones listed above it here, and the import graph is a DAG (`module_graph` below fails on a
//! cycle and prints the graph).

/// The one adapter to the proxy-wasm ABI (wasm32; on the host only for its unit tests, against a
/// fake of Envoy's host functions): exports Envoy calls, imports the filter calls.
#[cfg(any(target_arch = "wasm32", test))]
mod abi;
/// The brake: the `guard` block, its judgement, the trip record, and the pool of the mesh.
pub mod brake;
/// The refusal of a configuration ([`check::ConfigError`]: a field path and the reason) and the
/// name, token and label checks every section shares.
pub mod check;
/// The configuration as written: the root document's types, its reader (field paths kept),
/// `parse`.
pub mod config;
/// What a response counts as: business rules (headers, JSON bodies) and gRPC status.
pub mod counting;
/// The filter's request and response logic against the [`filter::Host`] port (a fake host in
/// its unit tests).
pub mod filter;
/// Byte-level readers: the `Cookie` header, exact decimals, the proxy-wasm header map, JSON
/// (scanner and pointer).
pub mod formats;
/// Metric names, the per-version catalogue a plan publishes, and the tally that batches counts.
pub mod metrics;
/// The compiled plan of a service, its routing decision, and the plugin's document (one
/// service or several).
pub mod plan;
/// Who goes where: the published hash and bucket, the decision and its reasons, stage zero and
/// pins, the cookies the filter sets (session, hold, flow), which service a request is.
pub mod routing;
/// The statistical tests the gate and the brake run (the always-valid test, the fixed tests).
pub mod stats;

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
        // The module map, from the code: `cargo test -p sticky-canary module_graph -- --nocapture`.
        eprintln!("{}", show(&g));
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
