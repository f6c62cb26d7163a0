//! `docker-compose config` accepts `envoy/docker-compose.yaml`, which runs the tested envoy.yaml
//! (and, in its `native` profile, the tested native.yaml) unchanged in the tested Envoy version.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use sticky_canary_harness::envoy::{self, workspace_root, EnvoyConfig};
use sticky_canary_harness::native;

/// A version the Makefile pins (`NAME ?= x.y.z`).
pub(crate) fn makefile_version(name: &str) -> String {
    let makefile = std::fs::read_to_string(workspace_root().join("Makefile")).unwrap();
    let re = regex::Regex::new(&format!(
        r"(?m)^{}\s*\?=\s*(\d+\.\d+\.\d+)\s*$",
        regex::escape(name)
    ))
    .unwrap();
    re.captures(&makefile)
        .unwrap_or_else(|| panic!("no {name} in the Makefile"))[1]
        .to_string()
}

/// The Envoy version `make test` pins (`ENVOY_VERSION` in the Makefile): the one the compose
/// stack must run. A matrix run against another Envoy (`make test-matrix`) keeps this pin.
pub(crate) fn tested_envoy_version() -> String {
    makefile_version("ENVOY_VERSION")
}

/// A compose service's volumes: container path → host path.
fn mounts_of(svc: &Value) -> BTreeMap<String, String> {
    svc["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.as_str().unwrap().split(':').collect();
            (parts[1].to_string(), parts[0].to_string())
        })
        .collect()
}

#[test]
fn docker_compose_runs_the_tested_config_in_the_tested_envoy() {
    let root = workspace_root();
    let bin = std::env::var_os("COMPOSE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/docker-compose"));
    assert!(
        bin.is_file(),
        "docker-compose not found at {} — run `make compose-tool` (or set COMPOSE_BIN)",
        bin.display()
    );
    let file = root.join("envoy/docker-compose.yaml");
    let out = Command::new(&bin)
        .arg("-f")
        .arg(&file)
        .arg("config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "docker-compose config failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value = serde_yaml::from_str(&text).unwrap();
    let services = &config["services"];
    let envoy_svc = &services["envoy"];

    assert_eq!(
        envoy_svc["image"],
        format!("envoyproxy/envoy:v{}", tested_envoy_version()),
        "the official image of the Envoy version the tests run"
    );
    // The very envoy/envoy.yaml, unchanged, where the command reads it.
    let wd = envoy_svc["working_dir"].as_str().unwrap();
    let mounts = mounts_of(envoy_svc);
    let cfg_target = format!("{wd}/envoy/envoy.yaml");
    assert_eq!(
        Path::new(&mounts[&cfg_target]),
        root.join("envoy/envoy.yaml"),
        "{mounts:?}"
    );
    let command: Vec<&str> = envoy_svc["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let c = command.iter().position(|a| *a == "-c").expect("-c");
    assert_eq!(format!("{wd}/{}", command[c + 1]), cfg_target);
    // The module at the path envoy.yaml names relative to the working directory.
    let mut reference = EnvoyConfig::reference();
    let text = fs::read_to_string(envoy::reference_config_path()).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let http_filters = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    let wasm_file = http_filters
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .unwrap()["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .unwrap();
    assert_eq!(
        Path::new(&mounts[&format!("{wd}/{wasm_file}")]),
        root.join(wasm_file)
    );
    // envoy.yaml binds and routes to 127.0.0.1: every service shares the host's network.
    for (name, s) in services.as_object().unwrap() {
        assert_eq!(s["network_mode"], "host", "{name}");
    }
    // The demo upstreams listen where the clusters point.
    for (cluster, addr) in reference.cluster_addresses() {
        let cmd = services[&cluster]["command"].to_string();
        assert!(
            cmd.contains(&format!("listen {addr};")),
            "service {cluster} must listen on {addr}: {cmd}"
        );
    }
    // Prometheus scrapes the admin endpoint of envoy.yaml.
    let admin = &doc["admin"]["address"]["socket_address"];
    let prom_cfg_src = services["prometheus"]["volumes"][0]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let prom: Value = serde_yaml::from_str(&fs::read_to_string(prom_cfg_src).unwrap()).unwrap();
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/stats/prometheus");
    assert_eq!(
        job["static_configs"][0]["targets"][0],
        format!(
            "{}:{}",
            admin["address"].as_str().unwrap(),
            admin["port_value"]
        )
    );

    // The optional native Envoy (`--profile native`): envoy/native.yaml unchanged, in the same
    // image, with the module's directory (`make build-native`'s) mounted where
    // ENVOY_DYNAMIC_MODULES_SEARCH_PATH points.
    let native_svc = &services["envoy-native"];
    assert_eq!(native_svc["image"], envoy_svc["image"]);
    assert_eq!(native_svc["network_mode"], "host");
    assert_eq!(native_svc["profiles"], serde_json::json!(["native"]));
    let native_wd = native_svc["working_dir"].as_str().unwrap();
    let native_mounts = mounts_of(native_svc);
    let native_target = format!("{native_wd}/envoy/native.yaml");
    assert_eq!(
        Path::new(&native_mounts[&native_target]),
        root.join("envoy/native.yaml"),
        "{native_mounts:?}"
    );
    let native_command: Vec<&str> = native_svc["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let c = native_command.iter().position(|a| *a == "-c").expect("-c");
    assert_eq!(
        format!("{native_wd}/{}", native_command[c + 1]),
        native_target
    );
    let search = native_svc["environment"]["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"]
        .as_str()
        .expect("ENVOY_DYNAMIC_MODULES_SEARCH_PATH in the service's environment");
    let search = if search.starts_with('/') {
        search.to_string()
    } else {
        format!("{native_wd}/{search}")
    };
    assert_eq!(
        Path::new(native_mounts.get(&search).unwrap_or_else(|| panic!(
            "nothing mounted at the search path {search}: {native_mounts:?}"
        ))),
        root.join("target/native"),
        "the directory `make build-native` writes"
    );
    // The module native.yaml names is the one `make build-native` writes there.
    let native_doc: Value =
        serde_yaml::from_str(&fs::read_to_string(root.join("envoy/native.yaml")).unwrap()).unwrap();
    let module = native_doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["typed_config"]["@type"] == native::FILTER_TYPE)
        .expect("native.yaml has the dynamic-module filter")["typed_config"]
        ["dynamic_module_config"]["name"]
        .as_str()
        .unwrap();
    assert_eq!(
        module,
        native::MODULE,
        "make build-native writes lib{}.so",
        native::MODULE
    );
    assert_eq!(native_svc["depends_on"], envoy_svc["depends_on"]);
    // The same admin address as envoy.yaml's, which the Prometheus above scrapes.
    assert_eq!(native_doc["admin"], doc["admin"]);

    // The optional pooled Envoy (`--profile pool`): envoy/pool.yaml unchanged, in the same image
    // with the same module, scraped by the same Prometheus it queries (brake.rs checks that its
    // `prometheus` cluster is where this Prometheus listens).
    let pool_svc = &services["envoy-pool"];
    assert_eq!(pool_svc["image"], envoy_svc["image"]);
    assert_eq!(pool_svc["network_mode"], "host");
    assert_eq!(pool_svc["profiles"], serde_json::json!(["pool"]));
    let pool_wd = pool_svc["working_dir"].as_str().unwrap();
    let pool_mounts = mounts_of(pool_svc);
    let pool_target = format!("{pool_wd}/envoy/pool.yaml");
    assert_eq!(
        Path::new(&pool_mounts[&pool_target]),
        root.join("envoy/pool.yaml"),
        "{pool_mounts:?}"
    );
    assert_eq!(
        Path::new(&pool_mounts[&format!("{pool_wd}/{wasm_file}")]),
        root.join(wasm_file)
    );
    let pool_command: Vec<&str> = pool_svc["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let c = pool_command.iter().position(|a| *a == "-c").expect("-c");
    assert_eq!(format!("{pool_wd}/{}", pool_command[c + 1]), pool_target);
    let pool_doc: Value =
        serde_yaml::from_str(&fs::read_to_string(root.join("envoy/pool.yaml")).unwrap()).unwrap();
    let pool_admin = &pool_doc["admin"]["address"]["socket_address"];
    let pool_admin = format!(
        "{}:{}",
        pool_admin["address"].as_str().unwrap(),
        pool_admin["port_value"]
    );
    assert!(
        job["static_configs"][0]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == pool_admin.as_str()),
        "Prometheus scrapes envoy/pool.yaml's admin {pool_admin}"
    );
}
