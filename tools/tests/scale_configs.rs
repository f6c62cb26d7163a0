//! Cheap correctness checks of `make bench-scale`'s generated configs (`tools/src/bench/scale.rs`,
//! `startup.rs`). Nothing here times anything.
//!
//! - every plugin config of every curve size (100 000 pins included) compiles with the filter's
//!   own code, and says what the curve says (pins, rules, versions, body limit);
//! - a few sizes of every curve, and the start-up configs, pass `envoy --mode validate` as the
//!   bench runs them (direct responses, free ports);
//! - the body curve's bodies are JSON of the size asked, with `/order/tax` where the series says;
//! - the request shapes carry the cookies and pin values the curves say.

use std::path::PathBuf;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy;
use sticky_canary_tools::bench::scale::{self, CURVES};
use sticky_canary_tools::bench::{self, startup};

#[test]
fn every_curve_config_compiles_in_the_filter() {
    for c in CURVES {
        for &n in scale::sizes(c) {
            let doc = scale::curve_config(c, n).unwrap();
            let text = bench::plugin_config(&doc).unwrap();
            if let Err(e) = Plan::from_json(text.as_bytes()) {
                panic!("{c} {n}: {e}");
            }
            let p = scale::plugin_json(&doc).unwrap();
            let count = |k: &str| p[k].as_array().map_or(0, Vec::len);
            match *c {
                "pins" if n > 0 => assert_eq!(p["pins"][0]["values"].as_array().unwrap().len(), n),
                "rules" | "pointers" => assert_eq!(count("business_metrics"), n, "{c} {n}"),
                "versions" => assert_eq!(count("versions"), n),
                "body" => assert!(p["max_body_bytes"].as_u64().unwrap() > n as u64),
                _ => {}
            }
        }
    }
}

#[test]
fn bodies_are_json_of_the_asked_size() {
    for &n in scale::sizes("body") {
        for (_, first) in scale::BODY_PATHS {
            let b = scale::sized_body(n, *first);
            assert!(b.len().abs_diff(n) <= 16, "{n}: {} bytes", b.len());
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            assert_eq!(v.pointer("/order/tax").unwrap(), "3.38");
            let at = b.find("\"tax\"").unwrap();
            if *first {
                assert!(at < 64, "{n}: tax at {at}");
            } else {
                assert!(at > b.len() - 64, "{n}: tax at {at}");
            }
        }
    }
}

#[test]
fn the_body_curve_keeps_its_bodies_in_direct_mode() {
    let yaml = scale::runnable(scale::body_config(64 << 10).unwrap()).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let routes = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
    for (i, (_, first)) in scale::BODY_PATHS.iter().enumerate() {
        let body = routes[i]["direct_response"]["body"]["inline_string"]
            .as_str()
            .unwrap();
        assert_eq!(body, scale::sized_body(64 << 10, *first));
    }
}

#[test]
fn request_shapes_carry_what_the_curves_say() {
    let curves: Vec<String> = CURVES.iter().map(|c| c.to_string()).collect();
    let shapes = scale::request_shapes(&curves, 20);
    let find = |n: &str| shapes.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert!(find("pin-hit-10")[0].contains("x-merchant-id: m0000"));
    let last = &find("cookies-50-last")[0];
    assert_eq!(last.matches("pref_").count(), 49);
    let cookie = last.split("cookie: ").nth(1).unwrap();
    assert!(cookie
        .trim_end_matches("\\r\\n")
        .rsplit("; ")
        .next()
        .unwrap()
        .starts_with("session_id="));
    for p in scale::points(&curves) {
        assert!(shapes.iter().any(|(k, _)| *k == p.script), "{}", p.script);
    }
}

#[test]
fn a_few_scale_configs_pass_envoy_validate() {
    envoy::check_prerequisites();
    bench::check_modules().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut docs: Vec<(String, serde_yaml::Value)> = Vec::new();
    for c in CURVES {
        let s = scale::sizes(c);
        // Smallest and largest; bodies at 64 KiB (the 4 MiB config is the same YAML, bigger).
        let pick: Vec<usize> = match *c {
            "body" => vec![64 << 10],
            "pins" => vec![10, 1_000],
            "cookies" => vec![0],
            _ => vec![s[0], s[s.len() - 1]],
        };
        for n in pick {
            docs.push((format!("{c}-{n}"), scale::curve_config(c, n).unwrap()));
        }
    }
    for (name, doc) in startup::startup_configs(&[]).unwrap() {
        if !name.contains("pins") && name != "filter-16-versions" {
            docs.push((format!("start {name}"), doc));
        }
    }
    let jobs: Vec<(String, PathBuf)> = docs
        .into_iter()
        .map(|(name, doc)| {
            let p = dir
                .path()
                .join(format!("{}.yaml", name.replace([' ', ':'], "-")));
            std::fs::write(&p, scale::runnable(doc).unwrap()).unwrap();
            (name, p)
        })
        .collect();
    let failures = envoy::validate_all(&jobs, &envoy::workspace_root());
    assert!(
        failures.is_empty(),
        "envoy --mode validate failed:\n{}",
        failures.join("\n")
    );
}
