//! The manual (`docs/`, an mdBook) as `make docs` built it into `target/book`: every internal
//! link and anchor of the built pages resolves, every `{{#include}}` of the sources names a file
//! (and an anchor) that exists, every chapter is in `SUMMARY.md`, and the README's own links reach
//! files and headings of the repository. `make test` builds the book first.

// A test file: its helpers fail the test they serve, as the tests themselves do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use sticky_canary_harness::envoy::workspace_root as root;
use sticky_canary_harness::files;

/// `base/../x` without touching the file system (the target may not exist).
fn join(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

/// The ids of a built page, and its links.
struct Page {
    ids: BTreeSet<String>,
    hrefs: Vec<String>,
}

fn pages(book: &Path) -> BTreeMap<PathBuf, Page> {
    let id = Regex::new(r#"\bid="([^"]+)""#).unwrap();
    let href = Regex::new(r#"\bhref="([^"]+)""#).unwrap();
    files(book, &["html"])
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            let page = Page {
                ids: id.captures_iter(&text).map(|c| unescape(&c[1])).collect(),
                hrefs: href.captures_iter(&text).map(|c| unescape(&c[1])).collect(),
            };
            (p, page)
        })
        .collect()
}

#[test]
fn the_built_book_has_no_broken_internal_link_or_anchor() {
    let book = root().join("target/book");
    assert!(
        book.join("index.html").is_file(),
        "no built book at {}: run `make docs` (make test does)",
        book.display()
    );
    let pages = pages(&book);
    let mut broken = Vec::new();
    let mut checked = 0;
    for (path, page) in &pages {
        let name = path.file_name().unwrap().to_string_lossy();
        // The print page and the sidebar's table of contents repeat the chapters' links,
        // rewritten by mdBook itself.
        if name == "print.html" || name == "toc.html" || name == "404.html" {
            continue;
        }
        for href in &page.hrefs {
            if href.contains("://") || href.starts_with("mailto:") || href.starts_with("data:") {
                continue;
            }
            let (file, anchor) = href.split_once('#').unwrap_or((href.as_str(), ""));
            let file = file.split('?').next().unwrap_or("");
            let target = if file.is_empty() {
                path.clone()
            } else {
                join(path.parent().unwrap(), file)
            };
            checked += 1;
            let where_ = format!("{} → {href}", path.strip_prefix(&book).unwrap().display());
            if file.ends_with(".md") {
                broken.push(format!(
                    "{where_}: a link to a Markdown file mdBook did not turn into a chapter"
                ));
            } else if !target.exists() {
                broken.push(format!("{where_}: no such page or file"));
            } else if !anchor.is_empty() {
                match pages.get(&target) {
                    Some(t) if t.ids.contains(anchor) => {}
                    Some(_) => broken.push(format!("{where_}: no such anchor")),
                    None => broken.push(format!(
                        "{where_}: an anchor into a file that is not a page"
                    )),
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links in the book:\n{}",
        broken.join("\n")
    );
    assert!(
        checked > 200,
        "only {checked} links checked: is the book built?"
    );
}

#[test]
fn every_include_resolves_and_every_chapter_is_listed() {
    let src = root().join("docs/src");
    // `\{{#include …}}` is mdBook's escape: text, not an include.
    let include =
        Regex::new(r"(?:^|[^\\])\{\{#(?:include|rustdoc_include)\s+([^\s}]+)\s*\}\}").unwrap();
    let summary = fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<PathBuf> = Regex::new(r"\]\(([^)]+\.md)\)")
        .unwrap()
        .captures_iter(&summary)
        .map(|c| src.join(&c[1]))
        .collect();
    let md = files(&src, &["md"]);
    let mut problems = Vec::new();
    let mut includes = 0;
    for path in &md {
        if path.ends_with("SUMMARY.md") {
            continue;
        }
        if !listed.contains(path) {
            problems.push(format!("{}: not in SUMMARY.md", path.display()));
        }
        let text = fs::read_to_string(path).unwrap();
        for c in include.captures_iter(&text) {
            includes += 1;
            let spec = &c[1];
            let (file, rest) = spec.split_once(':').unwrap_or((spec, ""));
            let target = join(path.parent().unwrap(), file);
            let Ok(body) = fs::read_to_string(&target) else {
                problems.push(format!(
                    "{}: {{{{#include {spec}}}}}: no such file",
                    path.display()
                ));
                continue;
            };
            // `file:anchor` (not line numbers) must name an anchor of the file.
            if !rest.is_empty()
                && !rest.chars().all(|ch| ch.is_ascii_digit() || ch == ':')
                && !body.contains(&format!("ANCHOR: {rest}"))
            {
                problems.push(format!(
                    "{}: {{{{#include {spec}}}}}: no such anchor",
                    path.display()
                ));
            }
        }
    }
    for path in &listed {
        if !path.is_file() {
            problems.push(format!(
                "SUMMARY.md lists {}, which does not exist",
                path.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        includes >= 5,
        "only {includes} includes: the book should show the shipped files"
    );
}

/// The ids of a Markdown file's headings (GitHub gives the ones mdBook gives).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            !fenced && l.starts_with('#')
        })
        .map(|l| sticky_canary_docgen::anchor(l.trim_start_matches('#').trim()))
        .collect()
}

#[test]
fn the_readme_links_reach_files_and_headings() {
    let root = root();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let link = Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut broken = Vec::new();
    let mut checked = 0;
    for c in link.captures_iter(&readme) {
        let href = &c[1];
        if href.contains("://") || href.starts_with("mailto:") {
            continue;
        }
        checked += 1;
        let (file, anchor) = href.split_once('#').unwrap_or((href, ""));
        let target = if file.is_empty() {
            root.join("README.md")
        } else {
            root.join(file)
        };
        if !target.exists() {
            broken.push(format!("{href}: no such file"));
        } else if !anchor.is_empty() {
            let text = fs::read_to_string(&target).unwrap_or_default();
            if !anchors(&text).contains(anchor) {
                broken.push(format!("{href}: no such heading"));
            }
        }
    }
    assert!(broken.is_empty(), "README.md:\n{}", broken.join("\n"));
    assert!(checked >= 10, "only {checked} links in the README");
}

/// The README's two configs are abridged from the shipped files, never pasted: every line of
/// each block is a line of its file, in the file's order.
#[test]
fn the_readme_configs_are_abridged_from_the_shipped_files() {
    let root = root();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    let sources = ["envoy/envoy.yaml", "istio/wasmplugin.yaml"];
    assert_eq!(
        blocks.len(),
        sources.len(),
        "README.md: expected one yaml block per shipped file {sources:?}"
    );
    for (block, source) in blocks.iter().zip(sources) {
        let file = fs::read_to_string(root.join(source)).unwrap();
        let mut lines = file.lines();
        for line in block.lines() {
            assert!(
                lines.any(|l| l == line),
                "README.md's block from {source}: `{line}` is not a line of {source} (or is out of order)"
            );
        }
    }
}

/// The configuration reference's whole document compiles, and names every field of the
/// configuration's types (every `pub` field of a `Raw…` struct in `src/`, `match_` and
/// `override_` as their JSON names): a field added to the code and not to the reference fails here.
#[test]
fn the_whole_document_compiles_and_names_every_field() {
    let root = root();
    let page = fs::read_to_string(root.join("docs/src/reference/configuration.md")).unwrap();
    let document = page
        .split("## The whole document")
        .nth(1)
        .and_then(|s| s.split("```json\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("docs/src/reference/configuration.md: a json block under \"The whole document\"");
    let env = |name: &str| match name {
        "CANARY_OVERRIDE_TOKENS" => Some("qa-token-0123456789abcdef".to_string()),
        "CANARY_FLOW_KEY" => Some("k".repeat(48)),
        "PROMETHEUS_TOKEN" => Some("prometheus-token".to_string()),
        _ => None,
    };
    if let Err(e) = sticky_canary::plan::Plan::from_json_with_env(document.as_bytes(), &env) {
        panic!("the whole document is refused: {e}");
    }

    let mut keys = BTreeSet::new();
    fn walk(v: &serde_json::Value, keys: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    keys.insert(k.clone());
                    walk(v, keys);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, keys)),
            _ => {}
        }
    }
    walk(&serde_json::from_str(document).unwrap(), &mut keys);

    let strukt = Regex::new(r"(?s)pub struct (Raw\w+) \{(.*?)\n\}").unwrap();
    let field = Regex::new(r"(?m)^\s*pub (\w+):").unwrap();
    let sources = files(&root.join("src"), &["rs"]);
    let mut missing = Vec::new();
    let mut fields = 0;
    for path in sources {
        let text = fs::read_to_string(&path).unwrap();
        for s in strukt.captures_iter(&text) {
            for f in field.captures_iter(&s[2]) {
                let name = f[1].trim_end_matches('_');
                fields += 1;
                if !keys.contains(name) {
                    missing.push(format!("{}.{name} ({})", &s[1], path.display()));
                }
            }
        }
    }
    assert!(
        fields > 60,
        "only {fields} fields found in the Raw… structs"
    );
    assert!(
        missing.is_empty(),
        "docs/src/reference/configuration.md's whole document lacks:\n{}",
        missing.join("\n")
    );
}
