//! The manifests under `istio/`: every YAML document of every file, found by kind and name.

use serde_json::Value;
use std::fs;
use sticky_canary_harness::envoy::workspace_root;
use sticky_canary_harness::schema;

/// One YAML document of a file under `istio/`.
#[derive(Clone, Debug)]
pub(crate) struct Manifest {
    /// Relative to the repository root.
    pub(crate) file: String,
    index: usize,
    pub(crate) doc: Value,
}

impl Manifest {
    pub(crate) fn api_version(&self) -> &str {
        self.doc["apiVersion"].as_str().unwrap_or("")
    }
    pub(crate) fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("")
    }
    pub(crate) fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or("")
    }
    pub(crate) fn namespace(&self) -> &str {
        self.doc["metadata"]["namespace"].as_str().unwrap_or("")
    }
    pub(crate) fn at(&self) -> String {
        format!(
            "{} (document {}, {} {})",
            self.file,
            self.index,
            self.kind(),
            self.name()
        )
    }
}

pub(crate) fn manifests() -> Vec<Manifest> {
    let root = workspace_root();
    let files = sticky_canary_harness::files(&root.join("istio"), &["yaml", "yml"]);
    assert!(!files.is_empty(), "no manifests under istio/");
    let mut out = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        let docs = schema::parse_documents(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for (index, doc) in docs.into_iter().enumerate() {
            out.push(Manifest {
                file: rel.clone(),
                index,
                doc,
            });
        }
    }
    out
}

pub(crate) fn find(all: &[Manifest], kind: &str, name: &str) -> Manifest {
    let found: Vec<&Manifest> = all
        .iter()
        .filter(|m| m.kind() == kind && m.name() == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} {name}");
    found[0].clone()
}

pub(crate) fn of_kind<'a>(
    all: &'a [Manifest],
    kind: &'a str,
) -> impl Iterator<Item = &'a Manifest> + 'a {
    all.iter().filter(move |m| m.kind() == kind)
}
