//! The OCI layout of `make image` holds exactly `plugin.wasm`, byte-identical to the build, and
//! the manifests pin it.

use super::manifests::manifests;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::Path;
use sticky_canary_harness::envoy::{self, workspace_root};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A content-addressed blob of the layout, checked against its digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let bytes = fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        sha256_hex(&bytes),
        hex,
        "blob {digest} does not match its digest"
    );
    bytes
}

#[test]
fn oci_image_holds_exactly_the_built_module() {
    let root = workspace_root();
    let containerfile = fs::read_to_string(root.join("istio/Containerfile")).unwrap();
    let instructions: Vec<&str> = containerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(instructions, ["FROM scratch", "COPY plugin.wasm ./"]);

    let layout = root.join("target/image/oci");
    let index_path = layout.join("index.json");
    assert!(
        index_path.is_file(),
        "no OCI image layout at {} — run `make image`",
        layout.display()
    );
    let index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let manifest_digest = manifests[0]["digest"].as_str().unwrap().to_string();
    let manifest: Value = serde_json::from_slice(&blob(&layout, &manifest_digest)).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    // Istio's fetcher takes the last layer and needs this media type (or Docker's) to gunzip it.
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let compressed = blob(&layout, layers[0]["digest"].as_str().unwrap());
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let config: Value = serde_json::from_slice(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&tar_bytes)),
        "the config's diff_id is the uncompressed layer"
    );
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut entries = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let kind = e.header().entry_type();
        let mut content = Vec::new();
        e.read_to_end(&mut content).unwrap();
        entries.push((path, kind, content));
    }
    let listing: Vec<(&str, tar::EntryType)> =
        entries.iter().map(|(p, k, _)| (p.as_str(), *k)).collect();
    assert_eq!(
        listing,
        [("plugin.wasm", tar::EntryType::Regular)],
        "exactly plugin.wasm"
    );
    let module = fs::read(envoy::wasm_path()).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} — run `make build`",
            envoy::wasm_path().display()
        )
    });
    assert!(
        entries[0].2 == module,
        "plugin.wasm in the image differs from {} — run `make image` after `make build`",
        envoy::wasm_path().display()
    );

    let manifest_hex = manifest_digest.trim_start_matches("sha256:");
    let module_hex = sha256_hex(&module);
    eprintln!("OCI manifest digest:  {manifest_digest}  (WasmPlugin / TrafficExtension sha256)");
    eprintln!("plugin.wasm sha256:   {module_hex}  (EnvoyFilter vm_config.code.remote.sha256)");
    // The pins in the manifests name a released image; report whether they are this build.
    for m in manifests_with_pins() {
        let (what, pinned, want) = m;
        let state = if pinned == want {
            "pins this build"
        } else {
            "pins another build (update it when you release this one)"
        };
        let want_kind = if want == manifest_hex {
            "manifest"
        } else {
            "module"
        };
        eprintln!("  {what}: {pinned} — {state} ({want_kind} digest)");
    }
}

/// (where, pinned sha256, this build's value for that kind of pin).
fn manifests_with_pins() -> Vec<(String, String, String)> {
    let root = workspace_root();
    let layout = root.join("target/image/oci");
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let module_hex = sha256_hex(&fs::read(envoy::wasm_path()).unwrap());
    let all = manifests();
    let mut out = Vec::new();
    for m in &all {
        let (pin, want) = match m.kind() {
            "WasmPlugin" => (&m.doc["spec"]["sha256"], &manifest_hex),
            "TrafficExtension" => (&m.doc["spec"]["wasm"]["sha256"], &manifest_hex),
            "EnvoyFilter" => (
                &m.doc["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
                    ["vm_config"]["code"]["remote"]["sha256"],
                &module_hex,
            ),
            _ => continue,
        };
        if let Some(p) = pin.as_str() {
            assert!(
                p.len() == 64 && p.chars().all(|c| c.is_ascii_hexdigit()),
                "{}: sha256 {p}",
                m.at()
            );
            out.push((m.at(), p.to_string(), want.clone()));
        }
    }
    assert_eq!(out.len(), 5, "every module reference is pinned: {out:?}");
    out
}
